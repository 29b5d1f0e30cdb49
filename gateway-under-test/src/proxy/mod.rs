//! The request path, in the order it runs. `handle` is the list of its phases:
//!
//! 1. downstream headers: strip `x-envoy-*`, append `x-forwarded-for`, set `x-forwarded-proto`,
//!    generate `x-request-id` (`prepare_downstream_headers`, run in `server.rs` before the
//!    access log reads them)
//! 2. route (`route`): the virtual host by Host (port ignored; none: 404 NR), `httpsRedirect`
//!    vhosts answer 301 to https, the first route that matches (none: 404 NR), and its weighted
//!    cluster
//! 3. local reply: a CORS preflight from an allowed origin (`Cors::preflight`), then the route's
//!    redirect, direct response, fault delay and abort (`local::local_actions`)
//! 4. upstream peer (`forward::upstream_peer`): the cluster (missing: 503 NC) and its endpoints
//!    (none: 503 UH)
//! 5. upstream request (`forward::upstream_request`): rewrite, header operations, mirrors, then
//!    attempts with retries and per-try and route timeouts (504 UT)
//! 6. response filter (`response_filter`, after `forward`'s own header operations and
//!    `x-envoy-upstream-service-time`): CORS headers, `server`
//! 7. logging: access log line and metrics at the response's end (`logging.rs`)
//!
//! Every phase takes the request whatever its body type (`Inbound`), so the phases run
//! in-process in the tests below as they do on the wire.

use std::io::Write as _;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Request, Response};
use mesh_model::api::virtual_service::CorsPolicy;
use mesh_model::plan::{RouteAction, WeightedCluster};

use crate::compile::{Compiled, CompiledRoute};
use crate::context::{Body, Downstream, Inbound, Outcome};
use crate::errors::{fail, Failure};
use crate::forward::{forward, pick_weighted};
use crate::local::{
    cors_headers, https_redirect, is_preflight, local_actions, origin_allowed, preflight, redirect_response,
};
use crate::matching::request_host;
use crate::names;

/// `--test-spin-us`, in nanoseconds: CPU burnt on every request (0: none).
pub static TEST_SPIN_NS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn test_spin() {
    let ns = TEST_SPIN_NS.load(std::sync::atomic::Ordering::Relaxed);
    if ns > 0 {
        let until = std::time::Instant::now() + std::time::Duration::from_nanos(ns);
        while std::time::Instant::now() < until {
            std::hint::spin_loop();
        }
    }
}

/// The whole request path after phase 1. Never fails: every failure becomes a response.
pub async fn handle<B: Inbound>(
    compiled: Arc<Compiled>,
    down: &Downstream,
    req: Request<B>,
) -> (Response<Body>, Outcome) {
    test_spin();
    let mut out = Outcome::new();
    let grpc = is_grpc(req.headers());
    let routed = match route(&compiled, down, &req, &mut out) {
        Ok(routed) => routed,
        Err(unrouted) => return (response_filter(unrouted.answer(grpc, &mut out), None), out),
    };
    let cors = Cors::of(routed.route, &req);
    if let Some(resp) = cors.as_ref().and_then(|c| c.preflight(&req, &mut out)) {
        return (response_filter(resp, None), out);
    }
    let resp = match local_actions(routed.route, &req, down, grpc, &mut out).await {
        Some(resp) => resp,
        None => forward(&compiled, routed.route, routed.picked, req, down, grpc, &mut out).await,
    };
    (response_filter(resp, cors.as_ref()), out)
}

/// Where a request goes: its route, and the weighted cluster picked with it.
struct Routed<'a> {
    route: &'a CompiledRoute,
    /// None: the route has no destinations (a redirect or a direct response).
    picked: Option<&'a WeightedCluster>,
}

/// Why a request has no route.
enum Unrouted {
    /// No virtual host, or no route in it, matches.
    NoRoute,
    /// An `httpsRedirect` virtual host reached in plaintext: the https URL.
    HttpsRedirect(String),
}

impl Unrouted {
    /// 404 NR, or the 301 to https.
    fn answer(self, grpc: bool, out: &mut Outcome) -> Response<Body> {
        match self {
            Unrouted::NoRoute => fail(Failure::NoRoute, grpc, out),
            Unrouted::HttpsRedirect(location) => {
                out.details = "direct_response".into();
                redirect_response(&location)
            }
        }
    }
}

/// Phase 2.
fn route<'a, B>(
    compiled: &'a Compiled,
    down: &Downstream,
    req: &Request<B>,
    out: &mut Outcome,
) -> Result<Routed<'a>, Unrouted> {
    let table = down.table.as_ref().and_then(|t| compiled.tables.get(t));
    let vhost = table
        .and_then(|t| t.vhost(&request_host(req)))
        .ok_or(Unrouted::NoRoute)?;
    if vhost.require_tls && down.scheme == "http" {
        return Err(Unrouted::HttpsRedirect(https_redirect(req)));
    }
    let route = crate::route_index::pick(vhost, req, down).ok_or(Unrouted::NoRoute)?;
    out.route.clone_from(&route.route.name);
    // The weighted cluster is chosen with the route (as Envoy's route entry does), so a local
    // reply on the route (a fault abort) still names its destination in the metrics.
    let picked = match &route.route.action {
        RouteAction::Route { clusters, .. } => pick_weighted(clusters),
        _ => None,
    };
    if let Some(wc) = picked {
        out.cluster.clone_from(&wc.cluster);
    }
    Ok(Routed { route, picked })
}

/// The route's CORS policy, when the request's origin is one it allows.
struct Cors<'a> {
    policy: &'a CorsPolicy,
    origin: String,
}

impl<'a> Cors<'a> {
    fn of<B>(route: &'a CompiledRoute, req: &Request<B>) -> Option<Cors<'a>> {
        let policy = route.route.cors.as_ref()?;
        let origin = req.headers().get(names::ORIGIN)?.to_str().ok()?;
        origin_allowed(&route.cors_origins, origin).then(|| Cors {
            policy,
            origin: origin.to_string(),
        })
    }

    /// Phase 3: a preflight from an allowed origin is answered here, as Envoy's CORS filter does.
    fn preflight<B>(&self, req: &Request<B>, out: &mut Outcome) -> Option<Response<Body>> {
        if !is_preflight(req) {
            return None;
        }
        out.details = "cors_response".into();
        Some(preflight(self.policy, &self.origin))
    }
}

/// Phase 6: what every answer gets on its way out: `server` as Istio names it, and the CORS
/// headers on an answer from upstream to an origin the route allows (a preflight has its own).
fn response_filter(mut resp: Response<Body>, cors: Option<&Cors<'_>>) -> Response<Body> {
    if let Some(c) = cors {
        cors_headers(c.policy, &c.origin, resp.headers_mut());
    }
    resp.headers_mut()
        .insert(names::SERVER, HeaderValue::from_static("istio-envoy"));
    resp
}

pub(crate) fn is_grpc(h: &HeaderMap) -> bool {
    h.get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/grpc"))
}

/// Phase 1: what an Istio gateway (or a sidecar's outbound side) does to headers from outside.
pub fn prepare_downstream_headers(h: &mut HeaderMap, down: &Downstream) {
    let envoy: Vec<HeaderName> = h
        .keys()
        .filter(|k| k.as_str().starts_with("x-envoy-"))
        .cloned()
        .collect();
    for k in envoy {
        h.remove(&k);
    }
    // A sidecar's outbound side does not append (Istio: `use_remote_address` is false there).
    if !down.outbound {
        let prev = h
            .get(&names::X_FORWARDED_FOR)
            .map(HeaderValue::as_bytes)
            .filter(|p| !p.is_empty());
        let mut v = Vec::with_capacity(prev.map_or(0, |p| p.len() + 2) + 39);
        if let Some(prev) = prev {
            v.extend_from_slice(prev);
            v.extend_from_slice(b", ");
        }
        push_ip(&mut v, down.peer.ip());
        // The value takes the buffer as it is: no second allocation and copy.
        if let Ok(v) = HeaderValue::from_maybe_shared(Bytes::from(v)) {
            h.insert(names::X_FORWARDED_FOR, v);
        }
    }
    h.insert(names::X_FORWARDED_PROTO, HeaderValue::from_static(down.scheme));
    if !h.contains_key(&names::X_REQUEST_ID) {
        if let Ok(v) = HeaderValue::from_bytes(&request_id_bytes()) {
            h.insert(names::X_REQUEST_ID, v);
        }
    }
}

/// Writes `ip` as text: an IPv4 address digit by digit (`Display` goes through the formatting
/// machinery, a thousand instructions a request), IPv6 as `Display` writes it.
fn push_ip(v: &mut Vec<u8>, ip: std::net::IpAddr) {
    let std::net::IpAddr::V4(ip4) = ip else {
        let _ = write!(v, "{ip}");
        return;
    };
    for (i, octet) in ip4.octets().into_iter().enumerate() {
        if i > 0 {
            v.push(b'.');
        }
        if octet >= 100 {
            v.push(b'0' + octet / 100);
        }
        if octet >= 10 {
            v.push(b'0' + octet / 10 % 10);
        }
        v.push(b'0' + octet % 10);
    }
}

/// A random UUID (version 4) for `x-request-id`, as its 36 bytes, written without formatting
/// machinery (one per request): two hex digits a byte, a dash before the 5th, 7th, 9th and 11th.
fn request_id_bytes() -> [u8; 36] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let a = (fastrand::u64(..) & 0xffff_ffff_ffff_0fff) | 0x4000;
    let b = (fastrand::u64(..) & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
    let bits = (u128::from(a) << 64) | u128::from(b);
    let mut out = [b'-'; 36];
    let mut at = 0;
    for (i, byte) in bits.to_be_bytes().into_iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            at += 1;
        }
        out[at] = HEX[usize::from(byte >> 4)];
        out[at + 1] = HEX[usize::from(byte & 0xf)];
        at += 2;
    }
    out
}

#[cfg(test)]
pub(crate) mod tests;
