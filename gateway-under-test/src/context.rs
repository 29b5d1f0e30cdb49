//! What every phase of the request path shares: where a request came in (`Downstream`), what
//! happened to it for the access log and metrics (`Outcome`), and the body type responses carry.
//! The phases (`proxy`, `local`, `forward`, `sidecar`, `errors`, `logging`) import these from
//! here, not from each other.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

use crate::limits::BodyLimits;

pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// A request body as the gateway receives it: hyper's from the wire, or any body a test builds,
/// so every phase runs in-process without a socket.
pub trait Inbound: hyper::body::Body<Data = Bytes, Error: Into<BoxError>> + Send + Unpin + 'static {}

impl<B> Inbound for B where B: hyper::body::Body<Data = Bytes, Error: Into<BoxError>> + Send + Unpin + 'static {}

/// A client body once it streams upstream: boxed, so what holds it is one type.
pub type Streamed = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed_unsync()
}

/// Where a request came in.
#[derive(Debug, Clone)]
pub struct Downstream {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    /// The Plan's listener port.
    pub port: u32,
    pub scheme: &'static str,
    /// The route table of the filter chain the connection came through.
    pub table: Option<String>,
    /// The SNI the client sent (TLS).
    pub sni: Option<String>,
    /// The sidecar role's outbound listener (an explicit proxy).
    pub outbound: bool,
    /// The destination a client asked for (CONNECT host:port), for original-destination clusters.
    pub original_dst: Option<String>,
    /// How large a request body may be buffered, and the gateway's buffer budget.
    pub body: Arc<BodyLimits>,
    /// Where upstream attempts are counted.
    pub telemetry: Arc<crate::telemetry::Telemetry>,
}

/// What the access log and stats need to know about one request.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    pub flags: String,
    pub details: std::borrow::Cow<'static, str>,
    pub route: String,
    pub cluster: String,
    pub upstream_host: String,
    pub upstream_ms: Option<u128>,
    /// Why the upstream connection failed (TLS errors among them), for the access log.
    pub transport_failure: String,
    /// The request body on its way upstream, which counts what it has read (None: not read).
    pub request_body: Option<crate::replay::RequestBody>,
}

impl Outcome {
    /// The outcome of a request that is still on its way upstream.
    pub fn new() -> Outcome {
        Outcome {
            details: "via_upstream".into(),
            ..Default::default()
        }
    }
}
