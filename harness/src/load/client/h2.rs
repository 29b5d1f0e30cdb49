//! HTTP/2 (h2c with prior knowledge, or h2 over TLS) and gRPC unary calls, with several
//! concurrent streams per connection. Bodies are drained with flow control released, never stored.

use bytes::{BufMut, Bytes, BytesMut};
use h2::client::SendRequest;
use http::{HeaderName, HeaderValue, Method, Request};

use crate::load::spec::RequestTemplate;
use crate::load::stats::ErrorClass;

/// Everything needed to build each request quickly.
#[derive(Debug, Clone)]
pub struct Prepared {
    method: Method,
    uri: http::Uri,
    headers: http::HeaderMap,
    body: Bytes,
    grpc: bool,
}

/// What a stream gave back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub status: u16,
    /// gRPC status from the trailers (or a trailers-only response), for gRPC calls.
    pub grpc_status: Option<u8>,
}

impl Prepared {
    /// `grpc`: the body is wrapped as an `EchoRequest{message}` in a gRPC length-prefixed frame.
    pub fn new(req: &RequestTemplate, tls: bool, grpc: bool) -> Result<Prepared, String> {
        let scheme = if tls { "https" } else { "http" };
        let uri: http::Uri = format!("{scheme}://{}{}", req.authority, req.path)
            .parse()
            .map_err(|e| format!("cannot build the request URI: {e}"))?;
        let method = if grpc {
            Method::POST
        } else {
            Method::from_bytes(req.method.as_bytes()).map_err(|e| e.to_string())?
        };
        let mut headers = http::HeaderMap::new();
        for (k, v) in &req.headers {
            let name =
                HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()).map_err(|e| format!("header `{k}`: {e}"))?;
            let value = HeaderValue::from_str(v).map_err(|e| format!("header `{k}`: {e}"))?;
            headers.append(name, value);
        }
        let body = if grpc {
            headers.insert("content-type", HeaderValue::from_static("application/grpc"));
            headers.insert("te", HeaderValue::from_static("trailers"));
            grpc_frame(&echo_request(&req.body))
        } else {
            req.body.clone()
        };
        Ok(Prepared {
            method,
            uri,
            headers,
            body,
            grpc,
        })
    }

    fn request(&self) -> Request<()> {
        let mut r = Request::new(());
        *r.method_mut() = self.method.clone();
        *r.uri_mut() = self.uri.clone();
        *r.headers_mut() = self.headers.clone();
        r
    }
}

/// Protobuf `EchoRequest{string message = 1}` (Istio's echo.proto).
pub fn echo_request(message: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(message.len() + 6);
    b.put_u8(0x0a);
    let mut n = message.len() as u64;
    while n >= 0x80 {
        b.put_u8((n as u8) | 0x80);
        n >>= 7;
    }
    b.put_u8(n as u8);
    b.put_slice(message);
    b.freeze()
}

/// A gRPC length-prefixed message: flag 0 (uncompressed), u32 length, payload.
pub fn grpc_frame(payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(payload.len() + 5);
    b.put_u8(0);
    b.put_u32(payload.len() as u32);
    b.put_slice(payload);
    b.freeze()
}

fn h2_class(e: &h2::Error) -> ErrorClass {
    if e.is_io() || e.is_go_away() || e.is_reset() {
        ErrorClass::Reset
    } else {
        ErrorClass::Protocol
    }
}

fn grpc_status(headers: &http::HeaderMap) -> Option<u8> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// One request on one stream: send, read the response, drain the body, read trailers.
pub async fn round_trip(send: &mut SendRequest<Bytes>, p: &Prepared) -> Result<Outcome, ErrorClass> {
    // Polled in place: `ready()` would take a clone of the handle, and h2 counts each clone
    // under the connection's lock.
    std::future::poll_fn(|cx| send.poll_ready(cx))
        .await
        .map_err(|e| h2_class(&e))?;
    let end = p.body.is_empty();
    let (response, mut stream) = send.send_request(p.request(), end).map_err(|e| h2_class(&e))?;
    if !end {
        stream.send_data(p.body.clone(), true).map_err(|e| h2_class(&e))?;
    }
    let response = response.await.map_err(|e| h2_class(&e))?;
    let status = response.status().as_u16();
    let mut grpc = if p.grpc { grpc_status(response.headers()) } else { None };
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|e| h2_class(&e))?;
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    if p.grpc && grpc.is_none() {
        let trailers = body.trailers().await.map_err(|e| h2_class(&e))?;
        grpc = trailers.as_ref().and_then(grpc_status);
    }
    Ok(Outcome {
        status,
        grpc_status: grpc,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_request_is_protobuf_field_one() {
        assert_eq!(&echo_request(b"hi")[..], &[0x0a, 2, b'h', b'i']);
        let long = vec![b'x'; 300];
        let enc = echo_request(&long);
        assert_eq!(&enc[..3], &[0x0a, 0xac, 0x02]); // 300 as a varint
        assert_eq!(enc.len(), 303);
    }

    #[test]
    fn grpc_frames_are_length_prefixed() {
        assert_eq!(&grpc_frame(b"abc")[..], &[0, 0, 0, 0, 3, b'a', b'b', b'c']);
    }
}
