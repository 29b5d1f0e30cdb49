//! The one place that turns failures into responses: status, body, Envoy's response flag and
//! code details, and gRPC-shaped replies (trailers-only, `grpc-status`) for gRPC requests.

use std::borrow::Cow;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};

use crate::context::{full, Body, Outcome};

/// Why the gateway answered itself.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// No virtual host or route (NR).
    NoRoute,
    /// The route's cluster does not exist (NC).
    NoCluster,
    /// The cluster has no endpoint (UH).
    NoHealthyUpstream,
    /// Connecting failed (UF), with the transport's reason.
    ConnectFailure(String),
    /// The upstream reset or closed before a response (UC).
    Reset(String),
    /// The route timeout fired (UT).
    Timeout,
    /// Fault injection abort (FI): an HTTP status or a gRPC status code.
    FaultAbort { http: Option<u16>, grpc: Option<u16> },
    /// A circuit breaker (connectionPool limit) refused the request (UO).
    Overflow,
    /// The downstream request was malformed (DPE).
    BadRequest(String),
    /// The request's headers are larger or more than the limits allow (431, DPE).
    HeadersTooLarge,
    /// The request body did not arrive within the request timeout (408).
    RequestTimeout,
    /// The gateway's buffer budget is spent (503 OM, as Envoy's overload manager answers).
    Overloaded,
}

impl Failure {
    pub fn status(&self) -> u16 {
        match self {
            Failure::NoRoute => 404,
            Failure::NoCluster
            | Failure::NoHealthyUpstream
            | Failure::ConnectFailure(_)
            | Failure::Reset(_)
            | Failure::Overflow
            | Failure::Overloaded => 503,
            Failure::Timeout => 504,
            Failure::FaultAbort { http, .. } => http.unwrap_or(200),
            Failure::BadRequest(_) => 400,
            Failure::HeadersTooLarge => 431,
            Failure::RequestTimeout => 408,
        }
    }

    /// Envoy's response flag.
    pub fn flag(&self) -> &'static str {
        match self {
            Failure::NoRoute => "NR",
            Failure::NoCluster => "NC",
            Failure::NoHealthyUpstream => "UH",
            Failure::ConnectFailure(_) => "UF",
            Failure::Reset(_) => "UC",
            Failure::Timeout => "UT",
            Failure::FaultAbort { .. } => "FI",
            Failure::Overflow => "UO",
            Failure::BadRequest(_) | Failure::HeadersTooLarge => "DPE",
            // Envoy sets no flag for this one.
            Failure::RequestTimeout => "",
            Failure::Overloaded => "OM",
        }
    }

    /// Envoy's `%RESPONSE_CODE_DETAILS%`: a connect failure carries its transport reason,
    /// whitespace made `_` as Envoy does (`upstream_reset_before_response_started{remote_connection_failure|TLS_error:…}`).
    pub fn details(&self) -> Cow<'static, str> {
        match self {
            Failure::NoRoute => "route_not_found".into(),
            Failure::NoCluster => "cluster_not_found".into(),
            Failure::NoHealthyUpstream => "no_healthy_upstream".into(),
            Failure::ConnectFailure(reason) if reason.is_empty() => format!(
                "upstream_reset_before_response_started{{{}}}",
                reset_reason(reason).replace(' ', "_")
            )
            .into(),
            Failure::ConnectFailure(reason) => format!(
                "upstream_reset_before_response_started{{{}|{}}}",
                reset_reason(reason).replace(' ', "_"),
                reason.split_whitespace().collect::<Vec<_>>().join("_")
            )
            .into(),
            Failure::Reset(_) => "upstream_reset_before_response_started{connection_termination}".into(),
            Failure::Timeout => "response_timeout".into(),
            Failure::FaultAbort { .. } => "fault_filter_abort".into(),
            Failure::Overflow => "upstream_reset_before_response_started{overflow}".into(),
            Failure::BadRequest(_) => "downstream_protocol_error".into(),
            Failure::HeadersTooLarge => "http1.headers_too_large".into(),
            Failure::RequestTimeout => "request_overall_timeout".into(),
            Failure::Overloaded => "overload".into(),
        }
    }

    /// Envoy's local reply body. `retried`: the last of several attempts failed. Envoy 1.40 keeps
    /// the transport failure reason out of the body (it is in the access log).
    pub fn body(&self, retried: bool) -> String {
        let reset = |reason: &str| {
            let again = if retried { "retried and the latest " } else { "" };
            format!("upstream connect error or disconnect/reset before headers. {again}reset reason: {reason}")
        };
        match self {
            Failure::NoRoute | Failure::NoCluster => String::new(),
            Failure::NoHealthyUpstream => "no healthy upstream".into(),
            Failure::ConnectFailure(reason) => reset(reset_reason(reason)),
            Failure::Reset(_) => reset("connection termination"),
            Failure::Timeout => "upstream request timeout".into(),
            Failure::FaultAbort { .. } => "fault filter abort".into(),
            Failure::Overflow => reset("overflow"),
            Failure::BadRequest(why) => why.clone(),
            Failure::HeadersTooLarge => "Request Header Fields Too Large".into(),
            Failure::RequestTimeout => "request timeout".into(),
            Failure::Overloaded => "envoy overloaded".into(),
        }
    }

    /// With retries used up, Envoy flags URX next to the last failure.
    pub fn retried_flag(&self, retried: bool) -> String {
        if retried && matches!(self, Failure::ConnectFailure(_) | Failure::Reset(_)) {
            format!("URX,{}", self.flag())
        } else {
            self.flag().to_string()
        }
    }
}

/// Envoy's reset reason for a failed connect: a timeout, or the peer refusing (TCP or TLS).
fn reset_reason(transport: &str) -> &'static str {
    let t = transport.to_ascii_lowercase();
    if t.contains("timed out") || t.contains("timeout") {
        "connection timeout"
    } else {
        "remote connection failure"
    }
}

/// Envoy's HTTP -> gRPC status mapping for local replies.
pub fn grpc_status_for(http: u16) -> u16 {
    match http {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502 | 503 | 504 => 14,
        _ => 2,
    }
}

/// The response for a failure; gRPC requests get a trailers-only gRPC reply.
pub fn reply(f: &Failure, grpc: bool) -> Response<Body> {
    reply_after(f, grpc, false)
}

/// The response for a failure after `retried` attempts.
pub fn reply_after(f: &Failure, grpc: bool, retried: bool) -> Response<Body> {
    let mut r = reply_body(f, grpc, retried);
    if matches!(f, Failure::Overflow | Failure::Overloaded) {
        r.headers_mut()
            .insert(crate::names::X_ENVOY_OVERLOADED, HeaderValue::from_static("true"));
    }
    r
}

fn reply_body(f: &Failure, grpc: bool, retried: bool) -> Response<Body> {
    let body = f.body(retried);
    if grpc {
        let code = match f {
            Failure::FaultAbort { grpc: Some(g), .. } => *g,
            _ => grpc_status_for(f.status()),
        };
        let mut r = Response::new(full(Bytes::new()));
        let h = r.headers_mut();
        h.insert(crate::names::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        h.insert(crate::names::GRPC_STATUS, HeaderValue::from(code));
        if let Ok(v) = HeaderValue::from_str(&body) {
            if !body.is_empty() {
                h.insert(crate::names::GRPC_MESSAGE, v);
            }
        }
        return r;
    }
    let mut r = Response::new(full(Bytes::from(body.clone())));
    *r.status_mut() = StatusCode::from_u16(f.status()).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    if !body.is_empty() {
        r.headers_mut()
            .insert(crate::names::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    r
}

/// A local reply for `f`, noted in the outcome.
pub fn fail(f: Failure, grpc: bool, out: &mut Outcome) -> Response<Body> {
    rescue(&f, false, grpc, out)
}

/// The one place a failure becomes what the client gets and what the access log and metrics
/// say: the local reply (gRPC as trailers-only), Envoy's response flags (`URX` added once
/// `retried` attempts have failed), the response code details and, for a connect failure, the
/// upstream transport failure reason. The gateway, the sidecar and their upgrades all come here.
pub fn rescue(f: &Failure, retried: bool, grpc: bool, out: &mut Outcome) -> Response<Body> {
    if let Failure::ConnectFailure(reason) = f {
        out.transport_failure.clone_from(reason);
    }
    out.flags = f.retried_flag(retried);
    out.details = f.details();
    reply_after(f, grpc, retried)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rescue_answers_and_notes_a_failure_as_envoy_does() {
        let mut out = Outcome::new();
        let refused = Failure::ConnectFailure("connection refused".into());
        let resp = rescue(&refused, true, false, &mut out);
        assert_eq!(resp.status(), 503);
        assert_eq!(out.flags, "URX,UF");
        assert_eq!(out.transport_failure, "connection refused");
        assert_eq!(out.details, refused.details());
        // A gRPC call gets a trailers-only reply: HTTP 200, the status in grpc-status.
        let mut out = Outcome::new();
        let resp = rescue(&Failure::NoHealthyUpstream, false, true, &mut out);
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers().get(crate::names::GRPC_STATUS).map(|v| v.as_bytes()),
            Some(&b"14"[..])
        );
        assert_eq!((out.flags.as_str(), out.transport_failure.as_str()), ("UH", ""));
        assert_eq!(out.details, "no_healthy_upstream");
        // A local reply with no attempt behind it.
        let mut out = Outcome::new();
        assert_eq!(fail(Failure::NoRoute, false, &mut out).status(), 404);
        assert_eq!((out.flags.as_str(), out.details.as_ref()), ("NR", "route_not_found"));
    }

    #[test]
    fn a_connect_failure_names_envoys_reset_reason_and_the_transport_reason() {
        let details = |reason: &str| Failure::ConnectFailure(reason.into()).details();
        assert_eq!(
            details(""),
            "upstream_reset_before_response_started{remote_connection_failure}"
        );
        assert_eq!(
            details("connection refused"),
            "upstream_reset_before_response_started{remote_connection_failure|connection_refused}"
        );
        assert_eq!(
            details("connect timed out"),
            "upstream_reset_before_response_started{connection_timeout|connect_timed_out}"
        );
        assert_eq!(
            details("TLS handshake Timeout"),
            "upstream_reset_before_response_started{connection_timeout|TLS_handshake_Timeout}"
        );
    }

    #[test]
    fn local_reply_bodies_are_envoys() {
        let reset = "upstream connect error or disconnect/reset before headers. ";
        let body = |f: Failure, retried: bool| f.body(retried);
        assert_eq!(
            body(Failure::Reset("eof".into()), false),
            format!("{reset}reset reason: connection termination")
        );
        assert_eq!(
            body(Failure::Reset("eof".into()), true),
            format!("{reset}retried and the latest reset reason: connection termination")
        );
        assert_eq!(
            body(Failure::ConnectFailure("connect timed out".into()), false),
            format!("{reset}reset reason: connection timeout")
        );
        assert_eq!(
            body(Failure::ConnectFailure("connection refused".into()), false),
            format!("{reset}reset reason: remote connection failure")
        );
        assert_eq!(body(Failure::Overflow, false), format!("{reset}reset reason: overflow"));
        assert_eq!(body(Failure::NoRoute, false), "");
        assert_eq!(body(Failure::NoHealthyUpstream, false), "no healthy upstream");
        assert_eq!(body(Failure::Timeout, true), "upstream request timeout");
        assert_eq!(body(Failure::BadRequest("bad path".into()), false), "bad path");
    }

    #[test]
    fn urx_marks_only_a_retried_connect_failure_or_reset() {
        assert_eq!(Failure::Reset(String::new()).retried_flag(true), "URX,UC");
        assert_eq!(Failure::ConnectFailure(String::new()).retried_flag(true), "URX,UF");
        assert_eq!(Failure::Reset(String::new()).retried_flag(false), "UC");
        assert_eq!(Failure::Timeout.retried_flag(true), "UT");
        assert_eq!(Failure::RequestTimeout.retried_flag(false), "");
    }

    #[test]
    fn local_replies_map_http_to_grpc_status_as_envoy_does() {
        let pairs = [
            (400, 13),
            (401, 16),
            (403, 7),
            (404, 12),
            (429, 14),
            (502, 14),
            (503, 14),
            (504, 14),
        ];
        for (http, grpc) in pairs {
            assert_eq!(grpc_status_for(http), grpc, "{http}");
        }
        assert_eq!(grpc_status_for(500), 2);
        assert_eq!(grpc_status_for(418), 2);
    }

    #[test]
    fn a_grpc_reply_is_trailers_only_with_the_message_when_there_is_one() {
        let header = |r: &Response<Body>, name: &http::HeaderName| {
            r.headers()
                .get(name)
                .map(|v| v.to_str().unwrap_or_default().to_string())
        };
        // A gRPC fault abort answers with its own code.
        let abort = reply(
            &Failure::FaultAbort {
                http: None,
                grpc: Some(8),
            },
            true,
        );
        assert_eq!(abort.status(), 200);
        assert_eq!(header(&abort, &crate::names::GRPC_STATUS).as_deref(), Some("8"));
        assert_eq!(
            header(&abort, &crate::names::GRPC_MESSAGE).as_deref(),
            Some("fault filter abort")
        );
        assert_eq!(
            header(&abort, &crate::names::CONTENT_TYPE).as_deref(),
            Some("application/grpc")
        );
        // No route: an empty body, so no grpc-message.
        let none = reply(&Failure::NoRoute, true);
        assert_eq!(header(&none, &crate::names::GRPC_STATUS).as_deref(), Some("12"));
        assert_eq!(header(&none, &crate::names::GRPC_MESSAGE), None);
        // Plain HTTP: the status, and a content type only with a body.
        let plain = reply(&Failure::NoHealthyUpstream, false);
        assert_eq!(plain.status(), 503);
        assert_eq!(
            header(&plain, &crate::names::CONTENT_TYPE).as_deref(),
            Some("text/plain")
        );
        let empty = reply(&Failure::NoRoute, false);
        assert_eq!(empty.status(), 404);
        assert_eq!(header(&empty, &crate::names::CONTENT_TYPE), None);
        // Overflow says so.
        let over = reply(&Failure::Overflow, false);
        assert_eq!(
            header(&over, &crate::names::X_ENVOY_OVERLOADED).as_deref(),
            Some("true")
        );
    }
}
