//! HTTP/1.1 exchanges run in the request's own task, as HAProxy and nginx run them: the request
//! head and its whole body are written on a pooled connection, the response head is parsed with
//! `httparse`, and the response body is read from the socket by whoever polls it. No connection
//! task and no channel between tasks, so a request costs no task wake-ups of its own.
//!
//! Framing follows hyper's client (RFC 9112 §6.3), so both paths of the pool read the same bytes
//! the same way: 1xx skipped, HEAD/204/304 bodiless, `Transfer-Encoding` ending in `chunked`
//! before `Content-Length` (all of whose values must agree), otherwise read to the close.

use std::io::{self, Write};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};
use hyper::body::{Frame, SizeHint};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::names::digits;
use crate::replay::AttemptBody;
use crate::telemetry::Open;

/// The most header lines a response head (or its trailers) may carry: hyper's default.
const MAX_HEADERS: usize = 100;
/// The most bytes a response head (or its trailers) may take: hyper's read buffer limit.
const MAX_HEAD: usize = 8192 + 4096 * 100;
/// Each read asks for at least this much room, and a body's read at most `MAX_READ`.
const MIN_READ: usize = 8 * 1024;
const MAX_READ: usize = 64 * 1024;
/// A body up to this size is copied behind its head, so both go in one write.
const COALESCE: usize = 8 * 1024;
/// The largest body this path sends. The request is written whole before the response is read,
/// so an upstream that answers early and reads no more must still take it all: this much fits
/// in the sockets' buffers. A larger body goes by hyper, which reads while it writes.
const MAX_BODY: usize = 64 * 1024;

const CLOSED_EARLY: &str = "connection closed before message completed";
const TOO_LARGE: &str = "response head too large";

/// One upstream connection and the bytes read on it that no message has taken yet.
#[derive(Debug)]
pub struct Conn {
    io: TcpStream,
    buf: BytesMut,
    _open: Open,
}

/// Why an exchange failed.
#[derive(Debug)]
pub enum Failed {
    /// Not one byte of the request was written: it may go on another connection.
    Unsent(io::Error),
    /// The request may have reached the upstream; no whole response head came back.
    Broken(String),
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failed::Unsent(e) => write!(f, "connection error: {e}"),
            Failed::Broken(why) => f.write_str(why),
        }
    }
}

/// A request as it goes on the wire: its head, and its body when it has one.
#[derive(Debug)]
pub struct Outgoing {
    head: Vec<u8>,
    body: Option<Bytes>,
    method: Method,
}

impl Outgoing {
    /// The request in HTTP/1.1 framing, when this path can send it: its body whole (not still
    /// arriving) and at most `MAX_BODY`, no upgrade (`Connection`) and no `Transfer-Encoding`
    /// (hop-by-hop: the proxy has removed both from what it forwards), not CONNECT, and any
    /// `Content-Length` it carries true to its body. Other requests go through hyper's client.
    pub fn whole(req: &http::Request<AttemptBody>) -> Option<Outgoing> {
        let h = req.headers();
        if h.contains_key(http::header::CONNECTION) || h.contains_key(http::header::TRANSFER_ENCODING) {
            return None;
        }
        let uri = req.uri();
        let target = match (uri.scheme(), uri.path_and_query()) {
            (None, Some(pq)) => pq.as_str(),
            _ => return None,
        };
        Outgoing::framed(req.method(), target, None, h, &[], req.body())
    }

    /// A request as the proxy forwards it, written from the routed request's own parts (no
    /// header map copied per attempt): `host` is `authority`, first, and the hop-by-hop headers
    /// of `headers` are left out. None when this path cannot send it (as `whole`), or when
    /// `path` or `authority` need the checks of hyper's path (`origin_form`, `field_value`).
    pub fn forwarded(
        method: &Method,
        path: &str,
        authority: &str,
        headers: &HeaderMap,
        body: &AttemptBody,
    ) -> Option<Outgoing> {
        if !origin_form(path) || !field_value(authority) {
            return None;
        }
        Outgoing::framed(method, path, Some(authority), headers, &crate::names::HOP_BY_HOP, body)
    }

    /// `method target`, `host` when given, the headers not named in `skip`, and the body.
    fn framed(
        method: &Method,
        target: &str,
        host: Option<&str>,
        h: &HeaderMap,
        skip: &[HeaderName],
        body: &AttemptBody,
    ) -> Option<Outgoing> {
        let AttemptBody::Whole(body) = body else {
            return None;
        };
        if body.as_ref().is_some_and(|b| b.len() > MAX_BODY) || method == Method::CONNECT {
            return None;
        }
        // hyper's rule: a body sent whole carries its length unless the request already does.
        let length = match (body, content_length(h)) {
            (_, Length::Invalid) => return None,
            (Some(b), Length::Is(n)) if n != b.len() as u64 => return None,
            (None, Length::Is(n)) if n != 0 => return None,
            (Some(b), Length::None) => Some(b.len()),
            _ => None,
        };
        let coalesce = body.as_ref().filter(|b| b.len() <= COALESCE).map_or(0, Bytes::len);
        let mut head = Vec::with_capacity(64 + target.len() + h.len() * 32 + coalesce);
        head.extend_from_slice(method.as_str().as_bytes());
        head.push(b' ');
        head.extend_from_slice(target.as_bytes());
        head.extend_from_slice(b" HTTP/1.1\r\n");
        if let Some(host) = host {
            head.extend_from_slice(b"host: ");
            head.extend_from_slice(host.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        for (name, value) in h {
            if skip.contains(name) {
                continue;
            }
            head.extend_from_slice(name.as_str().as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(value.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        if let Some(n) = length {
            // Written straight into the head: no string made for the number.
            let _ = write!(head, "content-length: {n}\r\n");
        }
        head.extend_from_slice(b"\r\n");
        let body = match body {
            Some(b) if coalesce > 0 => {
                head.extend_from_slice(b);
                None
            }
            b => b.clone().filter(|b| !b.is_empty()),
        };
        Some(Outgoing {
            head,
            body,
            method: method.clone(),
        })
    }
}

/// Whether `path` goes on the request line as it is: it starts with `/` and holds only the
/// printable ASCII that `http`'s URI parser keeps unchanged in a path and its query (no `#`,
/// which would start a fragment, no `<`, `>` or `` ` ``). Anything else takes hyper's path,
/// which parses it (and refuses it with 400 when it is no URI).
fn origin_form(path: &str) -> bool {
    path.starts_with('/')
        && path.len() < usize::from(u16::MAX)
        && path
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && !matches!(b, b'#' | b'<' | b'>' | b'`'))
}

/// Whether `s` is a header value as `HeaderValue::from_str` takes one: no control bytes but tab.
fn field_value(s: &str) -> bool {
    s.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// A response head read off the wire, with how its body is framed.
#[derive(Debug)]
pub struct Head {
    pub response: http::Response<()>,
    pub reader: Reader,
    /// Whether the connection may carry another request once the body is read.
    pub keep_alive: bool,
}

impl Conn {
    pub fn new(io: TcpStream, open: Open) -> Conn {
        Conn {
            io,
            buf: BytesMut::new(),
            _open: open,
        }
    }

    /// Whether an idle connection can carry a request: nothing has arrived on it since its last
    /// response (no close, no stray bytes). No system call unless the socket turned readable.
    pub fn usable(&self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match self.io.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                let mut b = [0u8; 1];
                matches!(self.io.try_read(&mut b), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }

    /// Closes the writing half, as a connection whose writes fail.
    #[cfg(test)]
    pub async fn close_write(&mut self) {
        let _ = self.io.shutdown().await;
    }

    /// Lets go of the read buffer of a connection going idle: it is given back empty, so an
    /// idle connection holds no memory of its own (the next exchange starts a new buffer).
    pub fn park(&mut self) {
        self.buf = BytesMut::new();
    }

    /// Whether the connection holds no bytes past the last message: one that does is not reused.
    pub fn drained(&self) -> bool {
        self.buf.is_empty()
    }

    /// Writes the request and reads the response head (skipping 1xx).
    pub async fn exchange(&mut self, req: &Outgoing) -> Result<Head, Failed> {
        let wrote = self.write(req).await;
        if let Err(Failed::Unsent(e)) = wrote {
            return Err(Failed::Unsent(e));
        }
        match self.read_head(&req.method).await {
            Ok(head) => Ok(head),
            // The upstream may answer, then close, before taking the whole request: what it
            // answered stands. When it did not, the write's error says more than the read's.
            Err(e) => Err(wrote.err().unwrap_or(e)),
        }
    }

    async fn write(&mut self, req: &Outgoing) -> Result<(), Failed> {
        let n = self.io.write(&req.head).await.map_err(Failed::Unsent)?;
        if n == 0 {
            return Err(Failed::Unsent(io::ErrorKind::WriteZero.into()));
        }
        let broken = |e: io::Error| Failed::Broken(format!("connection error: {e}"));
        self.io.write_all(&req.head[n..]).await.map_err(broken)?;
        if let Some(body) = &req.body {
            self.io.write_all(body).await.map_err(broken)?;
        }
        Ok(())
    }

    async fn read_head(&mut self, method: &Method) -> Result<Head, Failed> {
        loop {
            if let Some(head) = parse_head(&mut self.buf, method).map_err(Failed::Broken)? {
                return Ok(head);
            }
            if self.buf.len() >= MAX_HEAD {
                return Err(Failed::Broken(TOO_LARGE.into()));
            }
            self.buf.reserve(MIN_READ);
            match self.io.read_buf(&mut self.buf).await {
                Ok(0) => return Err(Failed::Broken(CLOSED_EARLY.into())),
                Ok(_) => {}
                Err(e) => return Err(Failed::Broken(format!("connection error: {e}"))),
            }
        }
    }

    /// Reads more into the buffer, room for up to `want` bytes; the end of the stream is an
    /// error unless `eof_ends`, when it is `Ok(0)`.
    fn poll_fill(&mut self, cx: &mut Context<'_>, want: u64, eof_ends: bool) -> Poll<io::Result<usize>> {
        let room = usize::try_from(want).unwrap_or(MAX_READ).clamp(MIN_READ, MAX_READ);
        self.buf.reserve(room);
        match tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf) {
            Poll::Ready(Ok(0)) if !eof_ends => {
                Poll::Ready(Err(io::Error::new(io::ErrorKind::UnexpectedEof, CLOSED_EARLY)))
            }
            other => other,
        }
    }
}

/// Parses a response head at the start of `buf`, skipping (and consuming) 1xx heads: None until
/// a whole head has arrived.
fn parse_head(buf: &mut BytesMut, method: &Method) -> Result<Option<Head>, String> {
    loop {
        // Left uninitialised, as hyper leaves them: zeroing 100 slots costs more than the parse.
        let mut headers = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut res = httparse::Response::new(&mut []);
        let len =
            match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut res, buf, &mut headers) {
                Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD => len,
                Ok(httparse::Status::Complete(_)) => return Err(TOO_LARGE.into()),
                Ok(httparse::Status::Partial) => return Ok(None),
                Err(e) => return Err(format!("invalid HTTP response: {e}")),
            };
        let code = res.code.unwrap_or_default();
        let status = StatusCode::from_u16(code).map_err(|e| format!("invalid HTTP response: {e}"))?;
        let version = if res.version == Some(1) {
            Version::HTTP_11
        } else {
            Version::HTTP_10
        };
        if (100..200).contains(&code) && code != 101 {
            buf.advance(len);
            continue;
        }
        // Each header's name, and where its value lies in the head, so the values can share it.
        let base = buf.as_ptr() as usize;
        let mut fields = Vec::with_capacity(res.headers.len());
        for h in res.headers.iter() {
            let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|e| format!("invalid HTTP response: {e}"))?;
            let value = h.value.as_ptr() as usize - base;
            fields.push((name, value, value + h.value.len()));
        }
        let head = buf.split_to(len).freeze();
        // Room for what the gateway adds (`server`, `x-envoy-upstream-service-time`, a route's
        // own): the map is not regrown on the way.
        let mut map = HeaderMap::with_capacity(fields.len() + 4);
        let mut keep_alive = version == Version::HTTP_11;
        let mut saw_close = false;
        for (name, vs, ve) in fields {
            let value = HeaderValue::from_maybe_shared(head.slice(vs..ve))
                .map_err(|e| format!("invalid HTTP response: {e}"))?;
            if name == http::header::CONNECTION {
                // Once one `Connection` line asks to close, a later `keep-alive` does not undo it.
                if saw_close || crate::names::has_token(&value, "close") {
                    saw_close = true;
                    keep_alive = false;
                } else if !keep_alive {
                    keep_alive = crate::names::has_token(&value, "keep-alive");
                }
            }
            map.append(name, value);
        }
        let framing = framing(status, version, method, &map)?;
        let keep_alive = keep_alive && code != 101 && !matches!(framing, Framing::Eof);
        let mut response = http::Response::new(());
        *response.status_mut() = status;
        *response.version_mut() = version;
        *response.headers_mut() = map;
        return Ok(Some(Head {
            response,
            reader: Reader { framing },
            keep_alive,
        }));
    }
}

enum Length {
    None,
    Is(u64),
    Invalid,
}

/// Every `Content-Length` value (each may be a list): one length, the same in all of them.
fn content_length(h: &HeaderMap) -> Length {
    let mut length = Length::None;
    for value in h.get_all(http::header::CONTENT_LENGTH) {
        let Ok(v) = value.to_str() else {
            return Length::Invalid;
        };
        for item in v.as_bytes().split(|&b| b == b',') {
            let Some(n) = digits(item.trim_ascii()) else {
                return Length::Invalid;
            };
            match length {
                Length::Is(m) if m != n => return Length::Invalid,
                _ => length = Length::Is(n),
            }
        }
    }
    length
}

/// How the body of a response to `method` is framed (RFC 9112 §6.3, as hyper's client reads it).
fn framing(status: StatusCode, version: Version, method: &Method, h: &HeaderMap) -> Result<Framing, String> {
    if status == StatusCode::SWITCHING_PROTOCOLS
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
        || method == Method::HEAD
    {
        return Ok(Framing::Length(0));
    }
    let te = h.get_all(http::header::TRANSFER_ENCODING);
    if let Some(last) = te.iter().next_back() {
        if version == Version::HTTP_10 {
            return Err("invalid HTTP response: HTTP/1.0 with Transfer-Encoding".into());
        }
        let chunked = crate::names::last_token_is(last, "chunked");
        return Ok(if chunked {
            Framing::Chunked(Chunk::Size)
        } else {
            Framing::Eof
        });
    }
    match content_length(h) {
        Length::Is(n) => Ok(Framing::Length(n)),
        Length::Invalid => Err("invalid HTTP response: bad Content-Length".into()),
        Length::None => Ok(Framing::Eof),
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Framing {
    /// This many bytes are left.
    Length(u64),
    Chunked(Chunk),
    /// Everything until the upstream closes.
    Eof,
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Chunk {
    /// A chunk's size line is next.
    Size,
    /// This many bytes of the chunk are left.
    Data(u64),
    /// The CRLF after a chunk's data is next.
    DataEnd,
    /// The trailer section after the last chunk is next.
    Trailers,
}

/// Reads one response body off its connection, frame by frame.
#[derive(Debug)]
pub struct Reader {
    framing: Framing,
}

impl Reader {
    /// Whether the whole body has been read.
    pub fn ended(&self) -> bool {
        matches!(self.framing, Framing::Done | Framing::Length(0))
    }

    pub fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(n) => SizeHint::with_exact(n),
            Framing::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }

    /// The next frame of the body: data as it arrives (sharing the read buffer), then trailers
    /// if a chunked body has them.
    pub fn poll_frame(&mut self, conn: &mut Conn, cx: &mut Context<'_>) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        let invalid = |what: &str| Poll::Ready(Some(Err(io::Error::new(io::ErrorKind::InvalidData, what.to_string()))));
        loop {
            let buffered = conn.buf.len() as u64;
            match &mut self.framing {
                Framing::Done | Framing::Length(0) => return Poll::Ready(None),
                Framing::Length(rest) | Framing::Chunked(Chunk::Data(rest)) if buffered > 0 => {
                    let n = buffered.min(*rest);
                    *rest -= n;
                    if let Framing::Chunked(c @ Chunk::Data(0)) = &mut self.framing {
                        *c = Chunk::DataEnd;
                    }
                    return Poll::Ready(Some(Ok(Frame::data(conn.buf.split_to(n as usize).freeze()))));
                }
                Framing::Length(rest) | Framing::Chunked(Chunk::Data(rest)) => {
                    let want = *rest;
                    if let Err(e) = std::task::ready!(conn.poll_fill(cx, want, false)) {
                        return Poll::Ready(Some(Err(e)));
                    }
                }
                Framing::Eof if buffered > 0 => {
                    return Poll::Ready(Some(Ok(Frame::data(conn.buf.split().freeze()))));
                }
                Framing::Eof => match std::task::ready!(conn.poll_fill(cx, MAX_READ as u64, true)) {
                    Ok(0) => self.framing = Framing::Done,
                    Ok(_) => {}
                    Err(e) => return Poll::Ready(Some(Err(e))),
                },
                Framing::Chunked(Chunk::Size) => match httparse::parse_chunk_size(&conn.buf) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        conn.buf.advance(used);
                        self.framing = Framing::Chunked(if size == 0 { Chunk::Trailers } else { Chunk::Data(size) });
                    }
                    Ok(httparse::Status::Partial) if conn.buf.len() < MAX_HEAD => {
                        if let Err(e) = std::task::ready!(conn.poll_fill(cx, 0, false)) {
                            return Poll::Ready(Some(Err(e)));
                        }
                    }
                    _ => return invalid("invalid chunk size line"),
                },
                Framing::Chunked(Chunk::DataEnd) if buffered >= 2 => {
                    if &conn.buf[..2] != b"\r\n" {
                        return invalid("invalid chunk: no CRLF after its data");
                    }
                    conn.buf.advance(2);
                    self.framing = Framing::Chunked(Chunk::Size);
                }
                Framing::Chunked(Chunk::DataEnd) => {
                    if let Err(e) = std::task::ready!(conn.poll_fill(cx, 0, false)) {
                        return Poll::Ready(Some(Err(e)));
                    }
                }
                Framing::Chunked(Chunk::Trailers) if conn.buf.starts_with(b"\r\n") => {
                    // No trailer fields: the common end of a chunked body.
                    conn.buf.advance(2);
                    self.framing = Framing::Done;
                }
                Framing::Chunked(Chunk::Trailers) => {
                    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                    match httparse::parse_headers(&conn.buf, &mut headers) {
                        Ok(httparse::Status::Complete((used, fields))) => {
                            let mut trailers = HeaderMap::with_capacity(fields.len());
                            for f in fields {
                                let (Ok(name), Ok(value)) = (
                                    HeaderName::from_bytes(f.name.as_bytes()),
                                    HeaderValue::from_bytes(f.value),
                                ) else {
                                    return invalid("invalid trailer field");
                                };
                                trailers.append(name, value);
                            }
                            conn.buf.advance(used);
                            self.framing = Framing::Done;
                            if !trailers.is_empty() {
                                return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                            }
                        }
                        Ok(httparse::Status::Partial) if conn.buf.len() < MAX_HEAD => {
                            if let Err(e) = std::task::ready!(conn.poll_fill(cx, 0, false)) {
                                return Poll::Ready(Some(Err(e)));
                            }
                        }
                        _ => return invalid("invalid trailer section"),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
