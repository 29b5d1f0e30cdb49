//! HTTP/1.1 on a kept-alive connection, the way wrk does it: the request is serialised once, and
//! each response is parsed in place (httparse) and its body skipped without being stored
//! (content-length, chunked, or until close).

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::load::spec::RequestTemplate;
use crate::load::stats::ErrorClass;

/// The request as bytes on the wire.
pub fn serialize(req: &RequestTemplate, close: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + req.body.len());
    out.extend_from_slice(format!("{} {} HTTP/1.1\r\nHost: {}\r\n", req.method, req.path, req.authority).as_bytes());
    let mut has_ua = false;
    for (k, v) in &req.headers {
        has_ua |= k.eq_ignore_ascii_case("user-agent");
        out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    if !has_ua {
        out.extend_from_slice(concat!("User-Agent: meshbench/", env!("CARGO_PKG_VERSION"), "\r\n").as_bytes());
    }
    if !req.body.is_empty() || matches!(req.method.as_str(), "POST" | "PUT" | "PATCH") {
        out.extend_from_slice(format!("Content-Length: {}\r\n", req.body.len()).as_bytes());
    }
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&req.body);
    out
}

/// One parsed response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// The server will close the connection after this response.
    pub close: bool,
}

enum Body {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

/// A kept-alive HTTP/1.1 connection.
#[derive(Debug)]
pub struct Conn<S> {
    io: S,
    buf: BytesMut,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    pub fn new(io: S) -> Self {
        Conn {
            io,
            buf: BytesMut::with_capacity(16 * 1024),
        }
    }

    /// Sends `request` (already serialised) and reads the whole response.
    pub async fn round_trip(&mut self, request: &[u8], head: bool) -> Result<Response, ErrorClass> {
        self.io.write_all(request).await.map_err(io_class)?;
        let (status, body, close) = self.read_head(head).await?;
        match body {
            Body::None => {}
            Body::Length(n) => self.skip(n).await?,
            Body::Chunked => self.skip_chunked().await?,
            Body::UntilClose => {
                while self.fill().await? > 0 {
                    self.buf.clear();
                }
                return Ok(Response { status, close: true });
            }
        }
        Ok(Response { status, close })
    }

    /// Reads more bytes into the buffer; 0 means end of stream.
    async fn fill(&mut self) -> Result<usize, ErrorClass> {
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(16 * 1024);
        }
        self.io.read_buf(&mut self.buf).await.map_err(io_class)
    }

    async fn read_head(&mut self, head_request: bool) -> Result<(u16, Body, bool), ErrorClass> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(&self.buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let status = resp.code.unwrap_or(0);
                    let mut close = resp.version == Some(0);
                    let mut body = Body::UntilClose;
                    for h in resp.headers.iter() {
                        if h.name.eq_ignore_ascii_case("content-length") {
                            let n = std::str::from_utf8(h.value).ok().and_then(|v| v.trim().parse().ok());
                            body = Body::Length(n.ok_or(ErrorClass::Protocol)?);
                        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                            if h.value.eq_ignore_ascii_case(b"chunked") {
                                body = Body::Chunked;
                            }
                        } else if h.name.eq_ignore_ascii_case("connection") {
                            if h.value.eq_ignore_ascii_case(b"close") {
                                close = true;
                            } else if h.value.eq_ignore_ascii_case(b"keep-alive") {
                                close = false;
                            }
                        }
                    }
                    if head_request || status == 204 || status == 304 || (100..200).contains(&status) {
                        body = Body::None;
                    }
                    self.buf.advance(len);
                    if (100..200).contains(&status) && status != 101 {
                        continue; // 100 Continue and friends: the real response follows.
                    }
                    return Ok((status, body, close));
                }
                Ok(httparse::Status::Partial) => {
                    if self.fill().await? == 0 {
                        return Err(ErrorClass::Reset);
                    }
                }
                Err(_) => return Err(ErrorClass::Protocol),
            }
        }
    }

    async fn skip(&mut self, mut n: u64) -> Result<(), ErrorClass> {
        loop {
            let take = (self.buf.len() as u64).min(n);
            self.buf.advance(take as usize);
            n -= take;
            if n == 0 {
                return Ok(());
            }
            if self.fill().await? == 0 {
                return Err(ErrorClass::Reset);
            }
        }
    }

    async fn skip_chunked(&mut self) -> Result<(), ErrorClass> {
        loop {
            match httparse::parse_chunk_size(&self.buf) {
                Ok(httparse::Status::Complete((consumed, 0))) => {
                    self.buf.advance(consumed);
                    return self.skip_trailers().await;
                }
                Ok(httparse::Status::Complete((consumed, size))) => {
                    self.buf.advance(consumed);
                    self.skip(size + 2).await?;
                }
                Ok(httparse::Status::Partial) => {
                    if self.fill().await? == 0 {
                        return Err(ErrorClass::Reset);
                    }
                }
                Err(_) => return Err(ErrorClass::Protocol),
            }
        }
    }

    /// Trailer lines after the last chunk, up to the empty line.
    async fn skip_trailers(&mut self) -> Result<(), ErrorClass> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                self.buf.advance(i + 2);
                if i == 0 {
                    return Ok(());
                }
                continue;
            }
            if self.fill().await? == 0 {
                return Err(ErrorClass::Reset);
            }
        }
    }
}

/// How an I/O error shows in the results.
pub fn io_class(e: std::io::Error) -> ErrorClass {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused => ErrorClass::Connect,
        TimedOut => ErrorClass::Timeout,
        InvalidData => ErrorClass::Tls,
        _ => ErrorClass::Reset,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parse_all(wire: &'static [u8], n: usize) -> Vec<Result<Response, ErrorClass>> {
        let (client, mut server) = tokio::io::duplex(64);
        let server_task = tokio::spawn(async move {
            // Drip the bytes in small pieces to exercise partial parses.
            for chunk in wire.chunks(7) {
                let _ = server.write_all(chunk).await;
            }
        });
        let mut conn = Conn::new(client);
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(
                async {
                    let (status, body, close) = conn.read_head(false).await?;
                    match body {
                        Body::Length(len) => conn.skip(len).await?,
                        Body::Chunked => conn.skip_chunked().await?,
                        Body::None => {}
                        Body::UntilClose => {
                            while conn.fill().await? > 0 {
                                conn.buf.clear();
                            }
                            return Ok(Response { status, close: true });
                        }
                    }
                    Ok(Response { status, close })
                }
                .await,
            );
        }
        let _ = server_task.await;
        out
    }

    #[tokio::test]
    async fn content_length_chunked_and_close_delimited_bodies() {
        let wire: &'static [u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello\
HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nx-trailer: 1\r\n\r\n\
HTTP/1.1 204 No Content\r\n\r\n\
HTTP/1.0 503 Service Unavailable\r\n\r\nbody until close";
        let got = parse_all(wire, 4).await;
        assert_eq!(
            got,
            vec![
                Ok(Response {
                    status: 200,
                    close: false
                }),
                Ok(Response {
                    status: 201,
                    close: false
                }),
                Ok(Response {
                    status: 204,
                    close: false
                }),
                Ok(Response {
                    status: 503,
                    close: true
                }),
            ]
        );
    }

    #[tokio::test]
    async fn garbage_is_a_protocol_error_and_eof_a_reset() {
        assert_eq!(
            parse_all(b"NOT HTTP AT ALL\r\n\r\n", 1).await,
            vec![Err(ErrorClass::Protocol)]
        );
        assert_eq!(
            parse_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", 1).await,
            vec![Err(ErrorClass::Reset)]
        );
    }

    #[test]
    fn requests_serialise_with_host_length_and_agent() {
        let req = RequestTemplate {
            method: "POST".into(),
            path: "/p?q=1".into(),
            authority: "example.com".into(),
            headers: vec![("x-a".into(), "b".into())],
            body: bytes::Bytes::from_static(b"hi"),
        };
        let wire = String::from_utf8(serialize(&req, false)).expect("utf8");
        assert!(wire.starts_with("POST /p?q=1 HTTP/1.1\r\nHost: example.com\r\nx-a: b\r\nUser-Agent: meshbench/"));
        assert!(wire.ends_with("Content-Length: 2\r\n\r\nhi"));
    }
}
