//! Downstream HTTP/1.1 served in the connection's own task, as HAProxy and nginx serve it: a
//! request head parsed from the read buffer, the request run by `server::one_request`, the
//! response written from the same task, head and body in one write when they fit. The client
//! is watched for going away while its request runs (the request is dropped then, as hyper
//! drops it), and pipelined requests are read from the same buffer.
//!
//! This path takes what a load test sends and most clients do: a request whose body, if any,
//! has a `Content-Length` and has arrived whole with its head. Anything else is handed to hyper
//! with the bytes read so far, and hyper serves the rest of the connection: h2 (its preface),
//! upgrades, CONNECT, HEAD, `Expect`, chunked or still-arriving bodies, HTTP/1.0, and heads it
//! refuses, which it answers as it always has.

pub mod codec;
pub mod date;
#[cfg(test)]
mod tests;

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use bytes::BytesMut;
use http::Response;
use hyper::body::Body as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::conns::Registered;
use crate::context::Downstream;
use crate::headwatch::{HeadWatch, Protocol};
use crate::logging::Logged;
use crate::state::State;
use codec::{BodyLength, Framing, Parsed};

/// Each read asks for at least this much room, once less than `LOW_WATER` is left.
const MIN_READ: usize = 8192;
const LOW_WATER: usize = 1024;
/// Response bytes are gathered up to this much before they are written.
const GATHER: usize = 65536;
/// A body frame this large is written as it is, not copied behind what is gathered; a write
/// buffer this large is let go when the response is done.
const LARGE: usize = 16384;

/// Serves a downstream connection's HTTP/1.1 requests until it closes, or hands it to hyper.
pub async fn serve<IO>(mut io: HeadWatch<IO>, down: Downstream, state: Arc<State>, mut registered: Registered)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let down = Arc::new(down);
    let conn = registered.handle();
    let max_head = state.limits.head_buffer_bytes();
    let mut buf = BytesMut::with_capacity(MIN_READ);
    let mut out = Vec::new();
    loop {
        let layout = loop {
            if !buf.is_empty() {
                let parsed = match crate::headwatch::sniff(0, &buf) {
                    Protocol::Http1 => codec::parse(&buf),
                    // Too few bytes yet to tell an h2 preface from a request.
                    Protocol::Undecided(_) => Parsed::Partial,
                    Protocol::Http2 => Parsed::Handoff,
                };
                match parsed {
                    Parsed::Whole(layout) => break layout,
                    Parsed::Partial if buf.len() < max_head => {}
                    Parsed::Partial | Parsed::Handoff => {
                        return handoff(io, buf.to_vec(), down, state, registered).await;
                    }
                }
            }
            make_room(&mut buf);
            let read = tokio::select! {
                biased;
                _ = registered.closing(), if buf.is_empty() => return shut(&mut io).await,
                read = io.read_buf(&mut buf) => read,
            };
            if !matches!(read, Ok(n) if n > 0) {
                return;
            }
        };
        let head = buf.split_to(layout.head_len).freeze();
        let body = buf.split_to(layout.body_len).freeze();
        let close = layout.close;
        let Some(req) = codec::request(&head, body.clone(), layout) else {
            let prefix = [&head[..], &body[..], &buf[..]].concat();
            return handoff(io, prefix, down, state, registered).await;
        };
        drop(head);
        // Pinned where it is made: the request's future is kilobytes, not moved again.
        let request = std::pin::pin!(crate::server::one_request(&state, down.clone(), &conn, req));
        let Some(resp) = watching(&mut io, &mut buf, max_head, request).await else {
            return;
        };
        let kept = respond(&mut io, &mut buf, max_head, &mut out, resp).await;
        trim(&mut out);
        if !kept || close {
            return shut(&mut io).await;
        }
    }
}

/// hyper serves the rest of the connection, from the bytes read so far (counted:
/// `meshgate_downstream_cx_hyper`).
async fn handoff<IO>(
    io: HeadWatch<IO>,
    prefix: Vec<u8>,
    down: Arc<Downstream>,
    state: Arc<State>,
    registered: Registered,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    state
        .conns
        .handed_to_hyper
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    crate::server::serve_hyper(io, prefix, down, state, registered).await;
}

/// Room for the next read: `MIN_READ` once less than `LOW_WATER` is left.
fn make_room(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < LOW_WATER {
        buf.reserve(MIN_READ);
    }
}

/// Runs `fut` while reading what the client sends meanwhile into `buf` (up to `cap` bytes):
/// None if the client closes or fails first, and `fut` is dropped.
async fn watching<IO, F>(io: &mut HeadWatch<IO>, buf: &mut BytesMut, cap: usize, mut fut: F) -> Option<F::Output>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    F: Future + Unpin,
{
    loop {
        make_room(buf);
        tokio::select! {
            biased;
            out = &mut fut => return Some(out),
            read = io.read_buf(buf), if buf.len() < cap => {
                if !matches!(read, Ok(n) if n > 0) {
                    return None;
                }
            }
        }
    }
}

/// Writes the response: its head, then its body frames as they come, gathered into writes of
/// up to `GATHER` bytes. False: the connection cannot carry another request (the response was
/// cut short, or its framing is broken, or the client has gone).
async fn respond<IO>(
    io: &mut HeadWatch<IO>,
    buf: &mut BytesMut,
    cap: usize,
    out: &mut Vec<u8>,
    resp: Response<Logged>,
) -> bool
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let (parts, mut body) = resp.into_parts();
    let length = if body.is_end_stream() {
        BodyLength::Empty
    } else {
        body.size_hint().exact().map_or(BodyLength::Unknown, BodyLength::Known)
    };
    let Some(head) = codec::encode_head(parts.status, &parts.headers, length, out) else {
        out.clear();
        out.extend_from_slice(codec::REFUSED);
        let _ = io.write_all(out).await;
        return false;
    };
    drop(parts);
    let mut left = match head.framing {
        Framing::Length(n) => n,
        _ => 0,
    };
    let whole = loop {
        if head.framing == Framing::Nothing || body.is_end_stream() {
            break true;
        }
        let polled = poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await;
        let frame = match polled {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                // Nothing more yet: what is gathered goes now, and the client is watched while
                // the body waits.
                if !send(io, out).await {
                    return false;
                }
                out.clear();
                match watching(io, buf, cap, poll_fn(|cx| Pin::new(&mut body).poll_frame(cx))).await {
                    Some(frame) => frame,
                    None => return false,
                }
            }
        };
        let data = match frame {
            None => break true,
            Some(Err(_)) => break false,
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                // Trailers: HTTP/1.1 clients get none (hyper sends them only when asked by `TE`,
                // which this path hands to hyper).
                Err(_) => continue,
            },
        };
        if head.framing == Framing::Chunked {
            if data.is_empty() {
                continue;
            }
            codec::chunk_size(out, data.len());
        } else {
            let Some(rest) = left.checked_sub(data.len() as u64) else {
                // More than its length said: the connection cannot be trusted to frame another.
                break false;
            };
            left = rest;
        }
        // A large frame goes as it is, after what is gathered; a small one is gathered.
        if data.len() >= LARGE {
            if !send(io, out).await || !send(io, &data).await {
                return false;
            }
            out.clear();
        } else {
            out.extend_from_slice(&data);
        }
        if head.framing == Framing::Chunked {
            out.extend_from_slice(b"\r\n");
        }
        if out.len() >= GATHER {
            if !send(io, out).await {
                return false;
            }
            out.clear();
        }
    };
    if whole && head.framing == Framing::Chunked {
        out.extend_from_slice(b"0\r\n\r\n");
    }
    // The request is logged before its last bytes go, as hyper logs it: whoever reads the
    // response whole finds its line in the access log.
    drop(body);
    let sent = send(io, out).await;
    out.clear();
    sent && whole && left == 0 && !head.close
}

/// An idle connection keeps a small write buffer, whatever it last sent.
fn trim(out: &mut Vec<u8>) {
    if out.capacity() > LARGE {
        *out = Vec::new();
    }
}

/// Writes `bytes` whole and flushes them (TLS: its records go). False: the client has gone.
async fn send<IO: AsyncWrite + Unpin>(io: &mut IO, bytes: &[u8]) -> bool {
    io.write_all(bytes).await.is_ok() && io.flush().await.is_ok()
}

/// Ends the connection: the write side is shut (TLS: close_notify) before it is dropped.
async fn shut<IO: AsyncWrite + Unpin>(io: &mut IO) {
    let _ = io.shutdown().await;
}
