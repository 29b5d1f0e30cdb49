//! The request path, in the order it runs:
//!
//! 1. downstream headers: strip `x-envoy-*`, append `x-forwarded-for`, set `x-forwarded-proto`,
//!    generate `x-request-id` (in `server.rs`, before the access log reads them)
//! 2. virtual host: by Host (port ignored); none: 404 NR
//! 3. https redirect: `httpsRedirect` vhosts answer 301 to https
//! 4. route: first match wins; none: 404 NR
//! 5. CORS preflight: answered here when the origin matches
//! 6. local actions: redirect, direct response, fault delay and abort
//! 7. cluster: weighted pick; missing: 503 NC; no endpoints: 503 UH
//! 8. upstream request: rewrite, header operations, mirrors, then attempts with retries and
//!    per-try and route timeouts (504 UT)
//! 9. response: header operations, CORS headers, `x-envoy-upstream-service-time`
//! 10. logging: access log line and metrics at the response's end (`logging.rs`)

use std::io::Write as _;
use std::sync::Arc;

use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Request, Response};
use mesh_model::plan::RouteAction;

use crate::compile::Compiled;
use crate::context::{Body, Downstream, Outcome};
use crate::errors::{fail, Failure};
use crate::forward::{forward, pick_weighted};
use crate::local::{
    cors_headers, https_redirect, is_preflight, local_actions, origin_allowed, preflight, redirect_response,
};
use crate::matching::{matches, request_host};

/// The whole request path after phase 1. Never fails: every failure becomes a response.
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

pub async fn handle(
    compiled: Arc<Compiled>,
    down: &Downstream,
    req: Request<hyper::body::Incoming>,
) -> (Response<Body>, Outcome) {
    test_spin();
    let mut out = Outcome::new();
    let grpc = is_grpc(req.headers());
    let host = request_host(&req);
    let table = down.table.as_ref().and_then(|t| compiled.tables.get(t));
    let Some(vhost) = table.and_then(|t| t.vhost(&host)) else {
        return (fail(Failure::NoRoute, grpc, &mut out), out);
    };
    if vhost.require_tls && down.scheme == "http" {
        out.details = "direct_response".into();
        return (redirect_response(&https_redirect(&req)), out);
    }
    let Some(route) = vhost.routes.iter().find(|r| matches(&r.matcher, &req, down)) else {
        return (fail(Failure::NoRoute, grpc, &mut out), out);
    };
    out.route = route.route.name.clone();
    // The weighted cluster is chosen with the route (as Envoy's route entry does), so a local
    // reply on the route (a fault abort) still names its destination in the metrics.
    let picked = match &route.route.action {
        RouteAction::Route { clusters, .. } => pick_weighted(clusters),
        _ => None,
    };
    if let Some(wc) = picked {
        out.cluster.clone_from(&wc.cluster);
    }
    let origin = req
        .headers()
        .get("origin")
        .and_then(|o| o.to_str().ok())
        .map(str::to_string);
    let cors = route
        .route
        .cors
        .as_ref()
        .filter(|c| origin.as_deref().is_some_and(|o| origin_allowed(c, o)));
    if let (Some(c), true) = (cors, is_preflight(&req)) {
        out.details = "cors_response".into();
        return (preflight(c, origin.as_deref().unwrap_or_default()), out);
    }
    let mut resp = match local_actions(route, &req, down, grpc, &mut out).await {
        Some(resp) => resp,
        None => forward(&compiled, route, picked, req, down, grpc, &mut out).await,
    };
    if let (Some(c), Some(o)) = (cors, origin.as_deref()) {
        cors_headers(c, o, resp.headers_mut());
    }
    resp.headers_mut()
        .insert("server", HeaderValue::from_static("istio-envoy"));
    (resp, out)
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
    let peer = down.peer.ip();
    let xff = match h.get("x-forwarded-for").map(HeaderValue::as_bytes) {
        _ if down.outbound => None,
        Some(prev) if !prev.is_empty() => {
            let mut v = Vec::with_capacity(prev.len() + 41);
            v.extend_from_slice(prev);
            let _ = write!(v, ", {peer}");
            HeaderValue::from_bytes(&v).ok()
        }
        _ => HeaderValue::from_str(&peer.to_string()).ok(),
    };
    if let Some(v) = xff {
        h.insert("x-forwarded-for", v);
    }
    h.insert("x-forwarded-proto", HeaderValue::from_static(down.scheme));
    if !h.contains_key("x-request-id") {
        if let Ok(v) = HeaderValue::from_bytes(&request_id_bytes()) {
            h.insert("x-request-id", v);
        }
    }
}

/// A random UUID (version 4) for `x-request-id`, as its 36 bytes, written without formatting
/// machinery (one per request).
fn request_id_bytes() -> [u8; 36] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let a = (fastrand::u64(..) & 0xffff_ffff_ffff_0fff) | 0x4000;
    let b = (fastrand::u64(..) & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
    let bits = (u128::from(a) << 64) | u128::from(b);
    let mut out = [b'-'; 36];
    let mut nibble = 0;
    for (i, slot) in out.iter_mut().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            continue;
        }
        *slot = HEX[((bits >> (124 - 4 * nibble)) & 0xf) as usize];
        nibble += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::BodyLimits;

    fn downstream() -> Downstream {
        let limits = <crate::Args as clap::Parser>::try_parse_from(["meshgate", "-c", "."])
            .map(|a| a.limits)
            .unwrap_or_else(|e| panic!("{e}"));
        Downstream {
            peer: "10.0.0.7:5000".parse().unwrap_or_else(|e| panic!("{e}")),
            local: "10.0.0.1:80".parse().unwrap_or_else(|e| panic!("{e}")),
            port: 80,
            scheme: "https",
            table: None,
            sni: None,
            outbound: false,
            original_dst: None,
            body: BodyLimits::new(&limits),
            telemetry: Arc::new(crate::telemetry::Telemetry::new(
                crate::telemetry::Identity::from_labels(&Default::default(), None),
            )),
        }
    }

    fn prepared(headers: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap_or_else(|e| panic!("{e}")),
                HeaderValue::from_str(v).unwrap_or_else(|e| panic!("{e}")),
            );
        }
        prepare_downstream_headers(&mut h, &downstream());
        h
    }

    fn get<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
        h.get(name).and_then(|v| v.to_str().ok())
    }

    #[test]
    fn the_peer_is_appended_to_x_forwarded_for_or_starts_it() {
        let h = prepared(&[("x-forwarded-for", "1.2.3.4, 5.6.7.8")]);
        assert_eq!(get(&h, "x-forwarded-for"), Some("1.2.3.4, 5.6.7.8, 10.0.0.7"));
        assert_eq!(get(&prepared(&[]), "x-forwarded-for"), Some("10.0.0.7"));
        assert_eq!(
            get(&prepared(&[("x-forwarded-for", "")]), "x-forwarded-for"),
            Some("10.0.0.7")
        );
    }

    #[test]
    fn envoy_headers_from_outside_are_dropped_and_the_scheme_is_set() {
        let h = prepared(&[
            ("x-envoy-retry-on", "5xx"),
            ("x-envoy-upstream-rq-timeout-ms", "1"),
            ("x-env", "kept"),
            ("x-forwarded-proto", "http"),
        ]);
        assert!(h.keys().all(|k| !k.as_str().starts_with("x-envoy-")), "{h:?}");
        assert_eq!(get(&h, "x-env"), Some("kept"));
        assert_eq!(get(&h, "x-forwarded-proto"), Some("https"));
    }

    #[test]
    fn a_request_id_is_kept_or_made_a_version_4_uuid() {
        assert_eq!(get(&prepared(&[("x-request-id", "abc")]), "x-request-id"), Some("abc"));
        let h = prepared(&[]);
        let id = get(&h, "x-request-id").unwrap_or_default().to_string();
        let groups: Vec<&str> = id.split('-').collect();
        assert_eq!(
            groups.iter().map(|g| g.len()).collect::<Vec<_>>(),
            vec![8, 4, 4, 4, 12],
            "{id}"
        );
        assert!(
            id.chars()
                .all(|c| c == '-' || c.is_ascii_digit() || ('a'..='f').contains(&c)),
            "{id}"
        );
        // Version 4; variant 10xx (8, 9, a or b).
        assert!(groups[2].starts_with('4'), "{id}");
        assert!(matches!(groups[3].as_bytes()[0], b'8' | b'9' | b'a' | b'b'), "{id}");
        // Random: 1000 ids, all different, and every hex digit used in the random places.
        let ids: std::collections::HashSet<[u8; 36]> = (0..1000).map(|_| request_id_bytes()).collect();
        assert_eq!(ids.len(), 1000);
        let digits: std::collections::HashSet<u8> = ids.iter().flat_map(|i| i[..8].to_vec()).collect();
        assert_eq!(digits.len(), 16);
        // Version and variant hold for every id, not by chance for one.
        assert!(ids
            .iter()
            .all(|i| i[14] == b'4' && matches!(i[19], b'8' | b'9' | b'a' | b'b')));
    }
}
