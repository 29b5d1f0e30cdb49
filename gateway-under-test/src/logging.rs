//! Phase 10, logging: when a response's last byte has gone (or the client has gone), its access
//! log line and its metrics, with the bytes really sent and received and the duration to the
//! last byte, as Envoy's `%BYTES_SENT%`, `%BYTES_RECEIVED%` and `%DURATION%` are, for
//! chunked and streamed bodies too.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, Request};
use hyper::body::{Body as _, Frame, SizeHint};

use crate::context::{Body, Downstream, Outcome};
use crate::logformat::{Entry, Format};
use crate::replay::RequestBody;
use crate::state::State;
use crate::telemetry;

/// What is known about a request when its response starts; completed by the response body.
#[derive(Debug)]
pub struct Finish {
    pub state: Arc<State>,
    pub down: Arc<Downstream>,
    /// The access log's request fields (None: the access log is off).
    pub line: Option<RequestLine>,
    pub out: Outcome,
    pub started_at: SystemTime,
    pub start: Instant,
    pub status: u16,
    pub grpc: bool,
    /// The values of the access log format's response headers (taken when the response starts).
    pub response_headers: Vec<Option<String>>,
}

impl Finish {
    /// Writes the access log line and records the metrics.
    fn done(mut self, bytes_sent: u64, grpc_status: Option<u16>, client_gone: bool) {
        if client_gone && self.out.flags.is_empty() {
            // Envoy's DC: the downstream connection ended before the response did.
            self.out.flags = "DC".into();
        }
        let elapsed = self.start.elapsed();
        let bytes_received = self.out.request_body.as_ref().map_or(0, RequestBody::received);
        self.state.telemetry.request(&telemetry::Request {
            cluster: &self.out.cluster,
            code: self.status,
            flags: &self.out.flags,
            grpc: self.grpc,
            grpc_status,
            duration_ms: elapsed.as_secs_f64() * 1000.0,
            request_bytes: bytes_received,
            response_bytes: bytes_sent,
            listener: self.down.port,
        });
        if let Some(line) = &self.line {
            let sizes = (bytes_received, bytes_sent);
            let text = line.render(
                &self.state.log_format,
                self.started_at,
                elapsed.as_millis(),
                self.status,
                sizes,
                &self.response_headers,
                &self.out,
                &self.down,
            );
            self.state.access_log.write(&text);
        }
    }
}

/// A response body that counts what it sends, reads `grpc-status` from trailers, and finishes
/// the request's logging when dropped.
#[derive(Debug)]
pub struct Logged {
    inner: Body,
    bytes: u64,
    grpc_status: Option<u16>,
    ended: bool,
    /// Boxed: the body moves through hyper's response machinery, and a pointer moves cheaply.
    finish: Option<Box<Finish>>,
}

use crate::names::GRPC_STATUS;

fn grpc_status(h: &HeaderMap) -> Option<u16> {
    h.get(GRPC_STATUS)?.to_str().ok()?.trim().parse().ok()
}

impl Logged {
    /// `headers`: the response's, for a trailers-only gRPC reply's `grpc-status` and the access
    /// log's response headers.
    pub fn new(inner: Body, headers: &HeaderMap, mut finish: Finish) -> Logged {
        if finish.line.is_some() {
            finish.response_headers = (finish.state.log_format.response_headers.iter())
                .map(|h| headers.get(h).and_then(|v| v.to_str().ok()).map(str::to_string))
                .collect();
        }
        Logged {
            grpc_status: grpc_status(headers),
            inner,
            bytes: 0,
            ended: false,
            finish: Some(Box::new(finish)),
        }
    }
}

impl hyper::body::Body for Logged {
    type Data = Bytes;
    type Error = crate::context::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, crate::context::BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes += data.len() as u64;
                } else if let Some(t) = frame.trailers_ref() {
                    this.grpc_status = grpc_status(t).or(this.grpc_status);
                }
            }
            Poll::Ready(None) => this.ended = true,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// hyper drops a response body as soon as its last frame is sent (or the client is gone): the
/// request's logging happens then.
impl Drop for Logged {
    fn drop(&mut self) {
        if let Some(f) = self.finish.take() {
            let gone = !self.ended && !self.inner.is_end_stream();
            f.done(self.bytes, self.grpc_status, gone);
        }
    }
}

/// The request's part of the access log, taken before the request moves on: what the
/// format reads of it.
#[derive(Debug)]
pub struct RequestLine {
    method: String,
    path: String,
    protocol: &'static str,
    authority: String,
    /// Values of the format's request headers, in its order.
    headers: Vec<Option<String>>,
}

impl RequestLine {
    pub fn of<B>(req: &Request<B>, format: &Format) -> RequestLine {
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        RequestLine {
            method: req.method().to_string(),
            path: req.uri().path_and_query().map_or("/".into(), |p| p.to_string()),
            protocol: match req.version() {
                http::Version::HTTP_2 => "HTTP/2",
                http::Version::HTTP_10 => "HTTP/1.0",
                _ => "HTTP/1.1",
            },
            authority: req
                .uri()
                .authority()
                .map(|a| a.to_string())
                .or_else(|| header("host"))
                .unwrap_or_default(),
            headers: format.request_headers.iter().map(|h| header(h)).collect(),
        }
    }

    /// The access log line in `format`. `sizes`: body bytes received and sent; `response`:
    /// the values of the format's response headers.
    #[allow(clippy::too_many_arguments)]
    pub fn render(
        &self,
        format: &Format,
        start: SystemTime,
        duration_ms: u128,
        code: u16,
        (bytes_received, bytes_sent): (u64, u64),
        response: &[Option<String>],
        out: &Outcome,
        down: &Downstream,
    ) -> String {
        format.render(&Entry {
            start,
            method: &self.method,
            path: &self.path,
            authority: &self.authority,
            scheme: down.scheme,
            protocol: self.protocol,
            request_headers: &self.headers,
            response_headers: response,
            code,
            flags: &out.flags,
            details: &out.details,
            transport_failure: &out.transport_failure,
            bytes_received,
            bytes_sent,
            duration_ms,
            upstream_host: &out.upstream_host,
            cluster: &out.cluster,
            local: down.local,
            peer: down.peer,
            sni: down.sni.as_deref(),
            route: &out.route,
        })
    }
}
