//! The gRPC echo: `proto.EchoTestService/Echo` (Istio's echo.proto: `EchoRequest{string message = 1}`
//! -> `EchoResponse{string message = 1}`) and `grpc.health.v1.Health/Check` (SERVING), over h2c.
//! Request metadata `delay` and `codes` (gRPC status codes, cycled) work as the HTTP query controls.

use std::convert::Infallible;
use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::BodyExt;
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::{parse_delay, pick_code, Identity};

pub async fn serve(listener: TcpListener, id: Arc<Identity>, counter: Arc<AtomicU64>) {
    let port = listener.local_addr().map_or(0, |a| a.port());
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (id, counter) = (id.clone(), counter.clone());
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| respond(req, id.clone(), counter.clone(), peer, port));
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// A body of at most one message then trailers.
pub struct GrpcBody {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl hyper::body::Body for GrpcBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let frame = match self.data.take() {
            Some(d) => Some(Ok(Frame::data(d))),
            None => self.trailers.take().map(|t| Ok(Frame::trailers(t))),
        };
        std::task::Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }
}

/// Reads field 1 (a length-delimited string) of a protobuf message; other fields are skipped.
pub fn decode_string_field1(mut b: &[u8]) -> Option<String> {
    fn varint(b: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = b.split_first()?;
            *b = rest;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    let mut out = None;
    while !b.is_empty() {
        let key = varint(&mut b)?;
        match key & 7 {
            0 => {
                varint(&mut b)?;
            }
            1 => b = b.get(8..)?,
            5 => b = b.get(4..)?,
            2 => {
                let len = varint(&mut b)? as usize;
                let (field, rest) = (b.get(..len)?, b.get(len..)?);
                if key >> 3 == 1 {
                    out = Some(String::from_utf8_lossy(field).into_owned());
                }
                b = rest;
            }
            _ => return None,
        }
    }
    Some(out.unwrap_or_default())
}

/// Protobuf field 1 as a string, in a gRPC length-prefixed frame.
pub fn encode_string_field1_frame(s: &str) -> Bytes {
    let mut msg = BytesMut::new();
    msg.put_u8(0x0a);
    let mut n = s.len() as u64;
    while n >= 0x80 {
        msg.put_u8((n as u8) | 0x80);
        n >>= 7;
    }
    msg.put_u8(n as u8);
    msg.put_slice(s.as_bytes());
    frame(&msg)
}

fn frame(msg: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(msg.len() + 5);
    b.put_u8(0);
    b.put_u32(msg.len() as u32);
    b.put_slice(msg);
    b.freeze()
}

fn grpc_response(data: Option<Bytes>, status: u16, message: &str) -> Response<GrpcBody> {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from(status));
    if !message.is_empty() {
        if let Ok(v) = HeaderValue::from_str(message) {
            trailers.insert("grpc-message", v);
        }
    }
    let mut resp = Response::new(GrpcBody {
        data,
        trailers: Some(trailers),
    });
    resp.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/grpc"));
    resp
}

async fn respond(
    req: Request<hyper::body::Incoming>,
    id: Arc<Identity>,
    counter: Arc<AtomicU64>,
    peer: SocketAddr,
    port: u16,
) -> Result<Response<GrpcBody>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let meta = |k: &str| parts.headers.get(k).and_then(|v| v.to_str().ok()).map(str::to_string);
    match parts.uri.path() {
        "/grpc.health.v1.Health/Check" => return Ok(grpc_response(Some(frame(&[0x08, 0x01])), 0, "")),
        "/proto.EchoTestService/Echo" => {}
        other => return Ok(grpc_response(None, 12, &format!("unknown method {other}"))),
    }
    if let Some(d) = meta("delay").as_deref().and_then(parse_delay) {
        tokio::time::sleep(d).await;
    }
    let n = counter.fetch_add(1, Ordering::Relaxed);
    if let Some(code) = meta("codes").and_then(|c| pick_code(&c, n)).filter(|c| *c != 0) {
        return Ok(grpc_response(None, code, "requested by the codes control"));
    }
    let message = body.get(5..).and_then(decode_string_field1).unwrap_or_default();
    let mut b = String::new();
    let _ = writeln!(b, "Echo={message}");
    let _ = writeln!(b, "ServiceVersion={}", id.version);
    let _ = writeln!(b, "ServicePort={port}");
    let _ = writeln!(
        b,
        "Host={}",
        parts.uri.authority().map(|a| a.to_string()).unwrap_or_default()
    );
    let _ = writeln!(b, "URL={}", parts.uri.path());
    let _ = writeln!(b, "Method=POST");
    let _ = writeln!(b, "Proto=GRPC");
    let _ = writeln!(b, "IP={}", peer.ip());
    crate::write_headers_and_identity(&mut b, &parts.headers, None, &id);
    Ok(grpc_response(Some(encode_string_field1_frame(&b)), 0, ""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protobuf_field_one_round_trips() {
        let framed = encode_string_field1_frame("hello");
        assert_eq!(&framed[..5], &[0, 0, 0, 0, 7]);
        assert_eq!(decode_string_field1(&framed[5..]).as_deref(), Some("hello"));
        // Unknown fields are skipped: field 2 varint 150, then field 1.
        assert_eq!(
            decode_string_field1(&[0x10, 0x96, 0x01, 0x0a, 1, b'z']).as_deref(),
            Some("z")
        );
        assert_eq!(decode_string_field1(&[]).as_deref(), Some(""));
        assert_eq!(decode_string_field1(&[0x0a, 5, b'a']), None);
    }
}
