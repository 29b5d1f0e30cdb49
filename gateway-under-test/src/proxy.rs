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
//! 10. logging: access log line and stats (in `server.rs`)

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use mesh_model::api::virtual_service::{CorsPolicy, HeaderOperations};
use mesh_model::plan::{RedirectPlan, RedirectPort, RetryPolicy, Route, RouteAction, WeightedCluster};

use crate::compile::{hash_key, Compiled, CompiledRoute, Matcher, UpstreamCluster};
use crate::errors::{reply, Failure};

pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, hyper::Error>;

pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed_unsync()
}

/// Requests larger than this are refused (bodies are buffered so that retries can resend them).
const MAX_BODY: usize = 16 * 1024 * 1024;

/// Where a request came in.
#[derive(Debug, Clone)]
pub struct Downstream {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    /// The Plan's listener port.
    pub port: u32,
    pub scheme: &'static str,
}

/// What the access log and stats need to know about one request.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    pub flags: String,
    pub details: &'static str,
    pub route: String,
    pub cluster: String,
    pub upstream_host: String,
    pub upstream_ms: Option<u128>,
}

/// The whole request path after phase 1. Never fails: every failure becomes a response.
pub async fn handle(
    compiled: Arc<Compiled>,
    down: &Downstream,
    req: Request<hyper::body::Incoming>,
) -> (Response<Body>, Outcome) {
    let mut out = Outcome {
        details: "via_upstream",
        ..Default::default()
    };
    let grpc = is_grpc(req.headers());
    let host = request_host(&req);
    let table = compiled
        .listeners
        .get(&down.port)
        .and_then(|l| l.http_table.as_ref())
        .and_then(|t| compiled.tables.get(t));
    let Some(vhost) = table.and_then(|t| t.vhost(&host)) else {
        return (fail(Failure::NoRoute, grpc, &mut out), out);
    };
    if vhost.require_tls && down.scheme == "http" {
        out.details = "direct_response";
        return (redirect_response(&https_redirect(&req)), out);
    }
    let Some(route) = vhost.routes.iter().find(|r| matches(&r.matcher, &req, down)) else {
        return (fail(Failure::NoRoute, grpc, &mut out), out);
    };
    out.route = route.route.name.clone();
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
        out.details = "cors_response";
        return (preflight(c, origin.as_deref().unwrap_or_default()), out);
    }
    let mut resp = match local_actions(route, &req, down, grpc, &mut out).await {
        Some(resp) => resp,
        None => forward(&compiled, route, req, down, grpc, &mut out).await,
    };
    if let (Some(c), Some(o)) = (cors, origin.as_deref()) {
        cors_headers(c, o, resp.headers_mut());
    }
    resp.headers_mut()
        .insert("server", HeaderValue::from_static("istio-envoy"));
    (resp, out)
}

/// A local reply for `f`, noted in the outcome.
fn fail(f: Failure, grpc: bool, out: &mut Outcome) -> Response<Body> {
    out.flags = f.flag().to_string();
    out.details = f.details();
    reply(&f, grpc)
}

fn is_grpc(h: &HeaderMap) -> bool {
    h.get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/grpc"))
}

/// Phase 1: what an Istio gateway does to headers from outside.
pub fn prepare_downstream_headers(h: &mut HeaderMap, down: &Downstream) {
    let envoy: Vec<HeaderName> = h
        .keys()
        .filter(|k| k.as_str().starts_with("x-envoy-"))
        .cloned()
        .collect();
    for k in envoy {
        h.remove(&k);
    }
    let peer = down.peer.ip().to_string();
    let xff = match h.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prev) if !prev.is_empty() => format!("{prev}, {peer}"),
        _ => peer,
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        h.insert("x-forwarded-for", v);
    }
    h.insert("x-forwarded-proto", HeaderValue::from_static(down.scheme));
    if !h.contains_key("x-request-id") {
        if let Ok(v) = HeaderValue::from_str(&request_id()) {
            h.insert("x-request-id", v);
        }
    }
}

/// A random UUID (version 4) for `x-request-id`.
pub fn request_id() -> String {
    let a = fastrand::u64(..);
    let b = fastrand::u64(..);
    let b = (b & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
    let a = (a & 0xffff_ffff_ffff_0fff) | 0x4000;
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

/// The authority as the client sent it (with its port, if any).
fn authority(req: &Request<hyper::body::Incoming>) -> String {
    req.uri()
        .authority()
        .map(|a| a.to_string())
        .or_else(|| {
            req.headers()
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_default()
}

/// Lowercase host without the port: gateways ignore the port in host matching.
fn request_host(req: &Request<hyper::body::Incoming>) -> String {
    let a = authority(req).to_ascii_lowercase();
    if let Some(rest) = a.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("").to_string();
    }
    a.rsplit_once(':')
        .filter(|(_, p)| p.chars().all(|c| c.is_ascii_digit()))
        .map_or(a.clone(), |(h, _)| h.to_string())
}

/// Phase 4: does this route's match take the request?
fn matches(m: &Matcher, req: &Request<hyper::body::Incoming>, down: &Downstream) -> bool {
    let path = req.uri().path();
    if let Some(u) = &m.uri {
        let p = if m.ignore_uri_case {
            path.to_ascii_lowercase()
        } else {
            path.to_string()
        };
        if !u.matches(&p) {
            return false;
        }
    }
    if m.scheme.as_ref().is_some_and(|s| !s.matches(down.scheme))
        || m.method.as_ref().is_some_and(|s| !s.matches(req.method().as_str()))
    {
        return false;
    }
    if m.authority.as_ref().is_some_and(|s| !s.matches(&authority(req))) {
        return false;
    }
    for h in &m.headers {
        let value: Option<String> = match h.name.as_str() {
            ":method" => Some(req.method().to_string()),
            ":authority" => Some(authority(req)),
            ":scheme" => Some(down.scheme.to_string()),
            ":path" => req.uri().path_and_query().map(|p| p.to_string()),
            name => {
                let all: Vec<&str> = req
                    .headers()
                    .get_all(name)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .collect();
                (!all.is_empty()).then(|| all.join(","))
            }
        };
        let value = if h.treat_missing_as_empty {
            Some(value.unwrap_or_default())
        } else {
            value
        };
        let hit = match (&h.value, value) {
            (None, v) => v.is_some(),
            (Some(_), None) => false,
            (Some(sm), Some(v)) => sm.matches(&v),
        };
        if hit == h.invert {
            return false;
        }
    }
    if !m.query.is_empty() {
        let q = req.uri().query().unwrap_or("");
        for (name, sm) in &m.query {
            let value = q
                .split('&')
                .map(|kv| kv.split_once('=').unwrap_or((kv, "")))
                .find(|(k, _)| k == name)
                .map(|(_, v)| v);
            let hit = match (sm, value) {
                (_, None) => false,
                (None, Some(_)) => true,
                (Some(sm), Some(v)) => sm.matches(v),
            };
            if !hit {
                return false;
            }
        }
    }
    true
}

fn https_redirect(req: &Request<hyper::body::Incoming>) -> String {
    let host = request_host(req);
    let pq = req.uri().path_and_query().map_or("/".to_string(), |p| p.to_string());
    format!("https://{host}{pq}")
}

fn redirect_response(location: &str) -> Response<Body> {
    let mut r = Response::new(full(Bytes::new()));
    *r.status_mut() = StatusCode::MOVED_PERMANENTLY;
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert("location", v);
    }
    r
}

/// Phase 6: redirect, direct response, fault injection. None: go upstream.
async fn local_actions(
    r: &CompiledRoute,
    req: &Request<hyper::body::Incoming>,
    down: &Downstream,
    grpc: bool,
    out: &mut Outcome,
) -> Option<Response<Body>> {
    match &r.route.action {
        RouteAction::Redirect(rd) => {
            out.details = "direct_response";
            let mut resp = redirect_response(&redirect_location(rd, req, down, &r.route));
            *resp.status_mut() = StatusCode::from_u16(rd.code).unwrap_or(StatusCode::MOVED_PERMANENTLY);
            return Some(resp);
        }
        RouteAction::DirectResponse {
            status,
            body,
            body_base64,
        } => {
            out.details = "direct_response";
            let bytes = match (body, body_base64) {
                (Some(s), _) => Bytes::from(s.clone()),
                (None, Some(b)) => {
                    use base64::Engine;
                    Bytes::from(base64::engine::general_purpose::STANDARD.decode(b).unwrap_or_default())
                }
                (None, None) => Bytes::new(),
            };
            let mut resp = Response::new(full(bytes));
            *resp.status_mut() = StatusCode::from_u16(*status).unwrap_or(StatusCode::OK);
            return Some(resp);
        }
        RouteAction::Route { .. } => {}
    }
    let fault = r.route.fault.as_ref()?;
    if let Some(d) = fault.delay.as_ref().filter(|d| chance(d.percentage)) {
        tokio::time::sleep(d.delay.as_std()).await;
        out.flags = "DI".into();
    }
    if let Some(a) = fault.abort.as_ref().filter(|a| chance(a.percentage)) {
        let f = Failure::FaultAbort {
            http: a.http_status,
            grpc: a.grpc_status.as_deref().map(grpc_code),
        };
        out.flags = if out.flags.is_empty() {
            "FI".into()
        } else {
            format!("{},FI", out.flags)
        };
        out.details = f.details();
        let grpc_reply = grpc || a.grpc_status.is_some();
        return Some(reply(&f, grpc_reply));
    }
    None
}

fn chance(percentage: f64) -> bool {
    percentage >= 100.0 || fastrand::f64() * 100.0 < percentage
}

fn grpc_code(name: &str) -> u16 {
    let names = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    names.iter().position(|n| *n == name).map_or(2, |p| p as u16)
}

/// Istio's redirect: scheme, host, port rules, path or prefix rewrite, query kept.
fn redirect_location(
    rd: &RedirectPlan,
    req: &Request<hyper::body::Incoming>,
    down: &Downstream,
    route: &Route,
) -> String {
    let scheme = rd.scheme.clone().unwrap_or_else(|| down.scheme.to_string());
    let sent = authority(req);
    let sent_port = sent.rsplit_once(':').and_then(|(_, p)| p.parse::<u32>().ok());
    let host = rd.host.clone().unwrap_or_else(|| request_host(req));
    let default_port = if scheme == "https" { 443 } else { 80 };
    let port = match rd.port {
        RedirectPort::Keep => {
            if rd.host.is_some() {
                None
            } else {
                sent_port
            }
        }
        RedirectPort::Fixed(p) => (p != default_port).then_some(p),
        RedirectPort::FromRequestPort => (down.port != default_port || sent_port.is_some()).then_some(down.port),
        RedirectPort::FromProtocolDefault => None,
    };
    let path = req.uri().path();
    let new_path = match (&rd.path, &rd.prefix_rewrite) {
        (Some(p), _) => p.clone(),
        (None, Some(prefix)) => {
            let matched = route
                .matcher
                .uri
                .as_ref()
                .and_then(|u| u.prefix.as_deref())
                .unwrap_or("/");
            format!("{prefix}{}", path.strip_prefix(matched).unwrap_or(path))
        }
        (None, None) => path.to_string(),
    };
    let query = match (req.uri().query(), new_path.contains('?')) {
        (Some(q), false) => format!("?{q}"),
        _ => String::new(),
    };
    let port = port.map(|p| format!(":{p}")).unwrap_or_default();
    format!("{scheme}://{host}{port}{new_path}{query}")
}

fn origin_allowed(c: &CorsPolicy, origin: &str) -> bool {
    c.allow_origins.iter().any(|m| match (&m.exact, &m.prefix, &m.regex) {
        (Some(e), _, _) => e == origin || e == "*",
        (_, Some(p), _) => origin.starts_with(p.as_str()),
        (_, _, Some(r)) => regex::Regex::new(&format!("^(?:{r})$")).is_ok_and(|re| re.is_match(origin)),
        _ => false,
    })
}

fn is_preflight<B>(req: &Request<B>) -> bool {
    req.method() == Method::OPTIONS && req.headers().contains_key("access-control-request-method")
}

fn set(h: &mut HeaderMap, k: &'static str, v: &str) {
    if let Ok(v) = HeaderValue::from_str(v) {
        h.insert(k, v);
    }
}

fn preflight(c: &CorsPolicy, origin: &str) -> Response<Body> {
    let mut r = Response::new(full(Bytes::new()));
    let h = r.headers_mut();
    set(h, "access-control-allow-origin", origin);
    if !c.allow_methods.is_empty() {
        set(h, "access-control-allow-methods", &c.allow_methods.join(","));
    }
    if !c.allow_headers.is_empty() {
        set(h, "access-control-allow-headers", &c.allow_headers.join(","));
    }
    if let Some(age) = c.max_age {
        set(h, "access-control-max-age", &age.as_std().as_secs().to_string());
    }
    if c.allow_credentials == Some(true) {
        set(h, "access-control-allow-credentials", "true");
    }
    r
}

fn cors_headers(c: &CorsPolicy, origin: &str, h: &mut HeaderMap) {
    set(h, "access-control-allow-origin", origin);
    if !c.expose_headers.is_empty() {
        set(h, "access-control-expose-headers", &c.expose_headers.join(","));
    }
    if c.allow_credentials == Some(true) {
        set(h, "access-control-allow-credentials", "true");
    }
}

fn apply_ops(h: &mut HeaderMap, ops: Option<&HeaderOperations>) {
    let Some(ops) = ops else { return };
    for k in &ops.remove {
        if let Ok(k) = HeaderName::from_bytes(k.as_bytes()) {
            h.remove(k);
        }
    }
    for (k, v) in &ops.set {
        if let (Ok(k), Ok(v)) = (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(&expand(v))) {
            h.insert(k, v);
        }
    }
    for (k, v) in &ops.add {
        if let (Ok(k), Ok(v)) = (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(&expand(v))) {
            h.append(k, v);
        }
    }
}

/// Envoy header-value syntax: `%%` is a literal `%` (variables are not expanded here).
fn expand(v: &str) -> String {
    v.replace("%%", "%")
}

fn pick_weighted(clusters: &[WeightedCluster]) -> Option<&WeightedCluster> {
    let total: u64 = clusters.iter().map(|c| u64::from(c.weight)).sum();
    if total == 0 {
        return clusters.first();
    }
    let mut r = fastrand::u64(0..total);
    clusters.iter().find(|c| {
        let w = u64::from(c.weight);
        if r < w {
            true
        } else {
            r -= w;
            false
        }
    })
}

/// The path after the route's rewrite (query kept).
fn rewritten_path(r: &CompiledRoute, uri: &Uri) -> String {
    let path = uri.path();
    let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    let RouteAction::Route { rewrite: Some(rw), .. } = &r.route.action else {
        return format!("{path}{query}");
    };
    let new = if let Some((re, rep)) = &r.regex_rewrite {
        re.replace_all(path, rep.as_str()).into_owned()
    } else if let (Some(prefix), Some(matched)) = (&rw.prefix, &rw.matched_prefix) {
        let hit = if r.matcher.ignore_uri_case {
            path.to_ascii_lowercase().starts_with(&matched.to_ascii_lowercase())
        } else {
            path.starts_with(matched.as_str())
        };
        if hit {
            format!("{prefix}{}", &path[matched.len()..])
        } else {
            path.to_string()
        }
    } else {
        path.to_string()
    };
    format!("{new}{query}")
}

/// Phases 7-9.
async fn forward(
    compiled: &Compiled,
    r: &CompiledRoute,
    req: Request<hyper::body::Incoming>,
    down: &Downstream,
    grpc: bool,
    out: &mut Outcome,
) -> Response<Body> {
    let RouteAction::Route { clusters, rewrite } = &r.route.action else {
        return reply(&Failure::NoRoute, grpc);
    };
    let Some(wc) = pick_weighted(clusters) else {
        return fail(Failure::NoCluster, grpc, out);
    };
    out.cluster = wc.cluster.clone();
    let Some(cluster) = compiled.clusters.get(&wc.cluster) else {
        return fail(Failure::NoCluster, grpc, out);
    };
    if cluster.endpoints.is_empty() {
        return fail(Failure::NoHealthyUpstream, grpc, out);
    }
    let (mut parts, body) = req.into_parts();
    let body = match http_body_util::Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return fail(Failure::BadRequest(format!("request body: {e}")), grpc, out),
    };
    let path = rewritten_path(r, &parts.uri);
    let original = parts.uri.path_and_query().map_or(String::new(), |p| p.to_string());
    if path != original {
        if let Ok(v) = HeaderValue::from_str(&original) {
            parts.headers.insert("x-envoy-original-path", v);
        }
    }
    // Destination-level operations first, so that the route level wins where both set a header.
    apply_ops(&mut parts.headers, wc.request_headers.as_ref());
    apply_ops(&mut parts.headers, r.route.request_headers.as_ref());
    let host = rewrite
        .as_ref()
        .and_then(|rw| rw.host.clone())
        .or_else(|| wc.host_rewrite.clone());
    let authority = host.unwrap_or_else(|| {
        parts
            .uri
            .authority()
            .map(|a| a.to_string())
            .or_else(|| {
                parts
                    .headers
                    .get("host")
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_string)
            })
            .unwrap_or_default()
    });
    let hash = consistent_hash(cluster, &parts.headers, &parts.uri, down);
    for m in &r.route.mirrors {
        if chance(m.percentage) {
            if let Some(mc) = compiled.clusters.get(&m.cluster) {
                spawn_mirror(
                    mc.clone(),
                    parts.method.clone(),
                    path.clone(),
                    authority.clone(),
                    parts.headers.clone(),
                    body.clone(),
                );
            }
        }
    }
    let started = Instant::now();
    let attempt = Attempt {
        cluster,
        method: &parts.method,
        path: &path,
        authority: &authority,
        headers: &parts.headers,
        body: &body,
        hash,
    };
    let result = match r.route.timeout.filter(|t| !t.as_std().is_zero()) {
        Some(t) => match tokio::time::timeout(t.as_std(), attempts(&attempt, &r.route.retry, out)).await {
            Ok(res) => res,
            Err(_) => Err((Failure::Timeout, false)),
        },
        None => attempts(&attempt, &r.route.retry, out).await,
    };
    let mut resp = match result {
        Ok(resp) => resp,
        Err((f, retried)) => {
            out.flags = f.retried_flag(retried);
            out.details = f.details();
            return reply(&f, grpc);
        }
    };
    let ms = started.elapsed().as_millis();
    out.upstream_ms = Some(ms);
    apply_ops(resp.headers_mut(), wc.response_headers.as_ref());
    apply_ops(resp.headers_mut(), r.route.response_headers.as_ref());
    set(resp.headers_mut(), "x-envoy-upstream-service-time", &ms.to_string());
    resp
}

/// Everything one upstream attempt needs.
struct Attempt<'a> {
    cluster: &'a UpstreamCluster,
    method: &'a Method,
    path: &'a str,
    authority: &'a str,
    headers: &'a HeaderMap,
    body: &'a Bytes,
    hash: Option<u64>,
}

fn consistent_hash(c: &UpstreamCluster, h: &HeaderMap, uri: &Uri, down: &Downstream) -> Option<u64> {
    let ch = c.cluster.policy.load_balancer.consistent_hash.as_ref()?;
    let key = if let Some(name) = &ch.http_header_name {
        h.get(name.as_str()).and_then(|v| v.to_str().ok()).map(str::to_string)
    } else if let Some(cookie) = &ch.http_cookie {
        h.get_all("cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|kv| kv.trim().split_once('='))
            .find(|(k, _)| *k == cookie.name)
            .map(|(_, v)| v.to_string())
    } else if ch.use_source_ip == Some(true) {
        Some(down.peer.ip().to_string())
    } else if let Some(q) = &ch.http_query_parameter_name {
        uri.query().and_then(|qs| {
            qs.split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| k == q)
                .map(|(_, v)| v.to_string())
        })
    } else {
        None
    };
    key.map(|k| hash_key(&k))
}

/// Whether a response or failure is retriable under `policy`.
fn retriable(policy: &RetryPolicy, status: Option<u16>, grpc_status: Option<u16>, failure: Option<&Failure>) -> bool {
    policy.retry_on.iter().any(|p| match (p.as_str(), status, failure) {
        ("5xx", Some(s), _) => s >= 500,
        ("5xx" | "reset" | "connect-failure" | "gateway-error", None, Some(Failure::ConnectFailure(_))) => true,
        ("5xx" | "reset", None, Some(Failure::Reset(_))) => true,
        ("gateway-error", Some(s), _) => matches!(s, 502..=504),
        ("retriable-4xx", Some(s), _) => s == 409,
        ("retriable-status-codes", Some(s), _) => policy.retriable_status_codes.contains(&s),
        ("cancelled", _, _) => grpc_status == Some(1),
        ("deadline-exceeded", _, _) => grpc_status == Some(4),
        ("internal", _, _) => grpc_status == Some(13),
        ("resource-exhausted", _, _) => grpc_status == Some(8),
        ("unavailable", _, _) => grpc_status == Some(14),
        _ => false,
    })
}

/// Attempts with Istio's retry policy: per-try timeout, retriable conditions, jittered backoff,
/// other hosts first. Err carries the last failure and whether a retry happened.
async fn attempts(a: &Attempt<'_>, policy: &RetryPolicy, out: &mut Outcome) -> Result<Response<Body>, (Failure, bool)> {
    let mut tried: Vec<usize> = Vec::new();
    let mut attempt = 0u32;
    loop {
        let exclude: &[usize] = if policy.retry_previous_hosts { &tried } else { &[] };
        let Some(i) = crate::upstream::pick(a.cluster, a.hash, exclude) else {
            return Err((Failure::NoHealthyUpstream, attempt > 0));
        };
        tried.push(i);
        out.upstream_host = a.cluster.endpoints[i].clone();
        a.cluster.active[i].fetch_add(1, Ordering::Relaxed);
        let call = send(a, i);
        let result = match policy.per_try_timeout {
            Some(t) => tokio::time::timeout(t.as_std(), call)
                .await
                .unwrap_or(Err(Failure::Timeout)),
            None => call.await,
        };
        a.cluster.active[i].fetch_sub(1, Ordering::Relaxed);
        let more = attempt < policy.attempts;
        match result {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let grpc_status = resp
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok());
                if !(more && retriable(policy, Some(status), grpc_status, None)) {
                    return Ok(resp);
                }
            }
            Err(f) => {
                let per_try_timeout = f == Failure::Timeout;
                if !(more && (per_try_timeout || retriable(policy, None, None, Some(&f)))) {
                    return Err((f, attempt > 0));
                }
            }
        }
        attempt += 1;
        let base = policy.backoff.as_std().as_millis().max(1) as u64;
        let cap = base.saturating_mul(1 << attempt.min(10));
        tokio::time::sleep(Duration::from_millis(fastrand::u64(0..=cap))).await;
    }
}

async fn send(a: &Attempt<'_>, endpoint: usize) -> Result<Response<Body>, Failure> {
    let mut headers = a.headers.clone();
    for hop in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
        "host",
    ] {
        headers.remove(hop);
    }
    let target = match &a.cluster.client {
        // HTTP/2: the authority travels in the URI (:authority); the connector dials the endpoint.
        crate::upstream::Client::H2(_) => format!("http://{}{}", a.authority, a.path),
        crate::upstream::Client::H1(_) => {
            if let Ok(v) = HeaderValue::from_str(a.authority) {
                headers.insert("host", v);
            }
            format!("http://{}{}", a.cluster.endpoints[endpoint], a.path)
        }
    };
    let mut req = Request::new(Full::new(a.body.clone()));
    *req.method_mut() = a.method.clone();
    *req.uri_mut() = target
        .parse()
        .map_err(|e| Failure::BadRequest(format!("bad upstream URI {target}: {e}")))?;
    *req.headers_mut() = headers;
    let result = match &a.cluster.client {
        crate::upstream::Client::H2(clients) => match clients.get(endpoint) {
            Some(c) => c.request(req).await,
            None => return Err(Failure::NoHealthyUpstream),
        },
        crate::upstream::Client::H1(c) => c.request(req).await,
    };
    match result {
        Ok(resp) => Ok(resp.map(|b| b.boxed_unsync())),
        Err(e) if e.is_connect() => Err(Failure::ConnectFailure(error_chain(&e))),
        Err(e) => Err(Failure::Reset(error_chain(&e))),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s = format!("{s}: {inner}");
        src = inner.source();
    }
    s
}

/// Fire and forget: the main response never waits for a mirror.
fn spawn_mirror(
    c: Arc<UpstreamCluster>,
    method: Method,
    path: String,
    authority: String,
    headers: HeaderMap,
    body: Bytes,
) {
    tokio::spawn(async move {
        let attempt = Attempt {
            cluster: &c,
            method: &method,
            path: &path,
            authority: &authority,
            headers: &headers,
            body: &body,
            hash: None,
        };
        if let Some(i) = crate::upstream::pick(&c, None, &[]) {
            if let Ok(resp) = send(&attempt, i).await {
                let _ = resp.into_body().collect().await;
            }
        }
    });
}
