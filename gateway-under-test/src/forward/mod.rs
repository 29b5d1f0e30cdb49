//! Going upstream: the weighted cluster pick, rewrites and header operations, mirrors, and the
//! attempts loop with Istio's retry policy and per-try and route timeouts.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, Uri};
use http_body_util::BodyExt;
use mesh_model::api::virtual_service::HeaderOperations;
use mesh_model::plan::{RetryPolicy, RouteAction, WeightedCluster};

use crate::compile::{hash_key, Compiled, CompiledRoute, UpstreamCluster};
use crate::context::{Body, Downstream, Inbound, Outcome};
use crate::errors::{fail, rescue, Failure};
use crate::local::chance;
use crate::names;
use crate::replay::RequestBody;
use crate::telemetry::{Telemetry, Upstream};
use crate::upstream::{Outbound, SendError};

/// Envoy's header operations on a request or response: remove, then set, then add.
pub fn apply_ops(h: &mut HeaderMap, ops: Option<&HeaderOperations>) {
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

/// A destination by weight (Istio's `weight`); all zero: the first.
pub fn pick_weighted(clusters: &[WeightedCluster]) -> Option<&WeightedCluster> {
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
pub fn rewritten_path(r: &CompiledRoute, uri: &Uri) -> String {
    let path = uri.path();
    let RouteAction::Route { rewrite: Some(rw), .. } = &r.route.action else {
        // Unchanged: the path and query as they came (what `{path}?{query}` would rebuild).
        return uri.path_and_query().map_or(path, |pq| pq.as_str()).to_string();
    };
    let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
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

/// The order header operations apply in, the later winning where both set a header, as Envoy
/// runs istiod's config: a single destination's operations are appended to the route's
/// (`processDestination`), so the destination wins; a weighted destination's are the cluster's
/// own, which Envoy applies before the route's, so the route wins.
pub fn header_order<'a>(
    destinations: usize,
    destination: Option<&'a HeaderOperations>,
    route: Option<&'a HeaderOperations>,
) -> [Option<&'a HeaderOperations>; 2] {
    if destinations == 1 {
        [route, destination]
    } else {
        [destination, route]
    }
}

/// Phases 4 and 5. `picked`: the weighted cluster chosen when the route was (None: the route has
/// none).
pub(crate) async fn forward<B: Inbound>(
    compiled: &Compiled,
    r: &CompiledRoute,
    picked: Option<&WeightedCluster>,
    req: Request<B>,
    down: &Downstream,
    grpc: bool,
    out: &mut Outcome,
) -> Response<Body> {
    let peer = match upstream_peer(compiled, r, picked) {
        Ok(peer) => peer,
        Err(f) => return fail(f, grpc, out),
    };
    if crate::upgrade::is_upgrade(req.headers()) && !peer.cluster.client.get().is_h2() {
        // Boxed: rare, and as large as the rest of the request path's future.
        return Box::pin(crate::upgrade::upgrade(peer.cluster, r, req, out)).await;
    }
    upstream_request(compiled, r, &peer, req, down, grpc, out).await
}

/// Where a routed request goes upstream.
pub(crate) struct Peer<'a> {
    /// How many destinations the route has: it decides the order of header operations.
    destinations: usize,
    weighted: &'a WeightedCluster,
    cluster: &'a Arc<UpstreamCluster>,
}

/// Phase 4: the route's cluster, if it exists (503 NC) and has endpoints (503 UH).
pub(crate) fn upstream_peer<'a>(
    compiled: &'a Compiled,
    r: &CompiledRoute,
    picked: Option<&'a WeightedCluster>,
) -> Result<Peer<'a>, Failure> {
    let RouteAction::Route { clusters, .. } = &r.route.action else {
        return Err(Failure::NoRoute);
    };
    let weighted = picked.ok_or(Failure::NoCluster)?;
    let cluster = compiled.clusters.get(&weighted.cluster).ok_or(Failure::NoCluster)?;
    if cluster.endpoints.is_empty() {
        return Err(Failure::NoHealthyUpstream);
    }
    Ok(Peer {
        destinations: clusters.len(),
        weighted,
        cluster,
    })
}

/// Where the request goes upstream: its path after the rewrite, and its authority.
pub(crate) struct Outgoing {
    pub(crate) path: String,
    pub(crate) authority: String,
}

/// Rewrites the request's path and authority and applies the request header operations.
pub(crate) fn outgoing(r: &CompiledRoute, peer: &Peer<'_>, parts: &mut http::request::Parts) -> Outgoing {
    let path = rewritten_path(r, &parts.uri);
    let original = parts.uri.path_and_query().map_or("", |p| p.as_str());
    if path != original {
        if let Ok(v) = HeaderValue::from_str(original) {
            parts.headers.insert(names::X_ENVOY_ORIGINAL_PATH, v);
        }
    }
    for ops in header_order(
        peer.destinations,
        peer.weighted.request_headers.as_ref(),
        r.route.request_headers.as_ref(),
    ) {
        apply_ops(&mut parts.headers, ops);
    }
    let rewrite = match &r.route.action {
        RouteAction::Route { rewrite, .. } => rewrite.as_ref(),
        _ => None,
    };
    let host = rewrite
        .and_then(|rw| rw.host.clone())
        .or_else(|| peer.weighted.host_rewrite.clone());
    let authority = host.unwrap_or_else(|| {
        parts
            .uri
            .authority()
            .map(|a| a.to_string())
            .or_else(|| {
                parts
                    .headers
                    .get(names::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_string)
            })
            .unwrap_or_default()
    });
    Outgoing { path, authority }
}

/// Phase 5: the body, the rewritten request and its mirrors, then the attempts, raced against
/// the request timeout, and the upstream response's own header operations.
async fn upstream_request<B: Inbound>(
    compiled: &Compiled,
    r: &CompiledRoute,
    peer: &Peer<'_>,
    req: Request<B>,
    down: &Downstream,
    grpc: bool,
    out: &mut Outcome,
) -> Response<Body> {
    let cluster = peer.cluster;
    let (mut parts, body) = req.into_parts();
    let body = match RequestBody::read(&down.body, &parts.headers, body).await {
        Ok(b) => b,
        Err(f) => return fail(f, grpc, out),
    };
    out.request_body = Some(body.clone());
    let Outgoing { path, authority } = outgoing(r, peer, &mut parts);
    let (hash, set_cookie) = consistent_hash(cluster, &parts.headers, &parts.uri, down);
    let mirror = |bytes: Bytes| {
        for m in &r.route.mirrors {
            if chance(m.percentage) {
                if let Some(mc) = compiled.clusters.get(&m.cluster) {
                    let request = (
                        parts.method.clone(),
                        path.clone(),
                        authority.clone(),
                        parts.headers.clone(),
                    );
                    spawn_mirror(down, mc.clone(), request, bytes.clone());
                }
            }
        }
    };
    // Mirrors get a whole body: at once when it has arrived, else once it has (if it was kept).
    let whole = body.complete();
    if let Some(bytes) = &whole {
        mirror(bytes.clone());
    }
    let started = Instant::now();
    let attempt = Attempt {
        cluster,
        method: &parts.method,
        path: &path,
        authority: &authority,
        destination: down.original_dst.as_deref().unwrap_or(&authority),
        headers: &parts.headers,
        body: &body,
        hash,
        telemetry: &down.telemetry,
    };
    let upstream = async {
        match r.route.timeout.filter(|t| !t.as_std().is_zero()) {
            Some(t) => match tokio::time::timeout(t.as_std(), attempts(&attempt, &r.route.retry, out)).await {
                Ok(res) => res,
                Err(_) => {
                    down.telemetry.upstream(&cluster.cluster.name, Upstream::Timeout);
                    Err((Failure::Timeout, false))
                }
            },
            None => attempts(&attempt, &r.route.retry, out).await,
        }
    };
    // A streamed body that is still arriving when the request timeout ends, with no response
    // begun, gets 408 as a whole body does.
    let result = tokio::select! {
        biased;
        result = upstream => result,
        () = body.timed_out() => Err((Failure::RequestTimeout, false)),
    };
    if let (None, Some(bytes)) = (&whole, body.complete()) {
        mirror(bytes);
    }
    let mut resp = match result {
        Ok(resp) => resp,
        Err((f, retried)) => return rescue(&f, retried, grpc, out),
    };
    let ms = started.elapsed().as_millis();
    out.upstream_ms = Some(ms);
    for ops in header_order(
        peer.destinations,
        peer.weighted.response_headers.as_ref(),
        r.route.response_headers.as_ref(),
    ) {
        apply_ops(resp.headers_mut(), ops);
    }
    resp.headers_mut()
        .insert(names::X_ENVOY_UPSTREAM_SERVICE_TIME, HeaderValue::from(ms as u64));
    if let Some(c) = set_cookie.as_deref().and_then(|c| HeaderValue::from_str(c).ok()) {
        resp.headers_mut().append(names::SET_COOKIE, c);
    }
    resp
}

/// Everything one upstream attempt needs.
struct Attempt<'a> {
    cluster: &'a UpstreamCluster,
    method: &'a Method,
    path: &'a str,
    authority: &'a str,
    /// Where an original-destination cluster connects: a captured connection's original
    /// destination, else the authority.
    destination: &'a str,
    headers: &'a HeaderMap,
    body: &'a RequestBody,
    hash: Option<u64>,
    /// Where each attempt is counted (Envoy's cluster stats).
    telemetry: &'a Telemetry,
}

/// The consistent-hash key of a request, and a `Set-Cookie` value when the hash cookie has a ttl
/// and the request had none (Envoy generates it; ttl 0 makes a session cookie).
fn consistent_hash(c: &UpstreamCluster, h: &HeaderMap, uri: &Uri, down: &Downstream) -> (Option<u64>, Option<String>) {
    let key = hash_source(c, h, uri, down);
    let cookie = c
        .cluster
        .policy
        .load_balancer
        .consistent_hash
        .as_ref()
        .and_then(|ch| ch.http_cookie.as_ref());
    match (key, cookie) {
        (Some(k), _) => (Some(hash_key(&k)), None),
        (None, Some(cookie)) if cookie.ttl.is_some() => {
            let value = format!("{:016x}", fastrand::u64(..));
            let mut set = format!("{}={value}", cookie.name);
            if let Some(path) = &cookie.path {
                set.push_str(&format!("; Path={path}"));
            }
            let ttl = cookie.ttl.map_or(0, |t| t.as_std().as_secs());
            if ttl > 0 {
                set.push_str(&format!("; Max-Age={ttl}"));
            }
            set.push_str("; HttpOnly");
            (Some(hash_key(&value)), Some(set))
        }
        (None, _) => (None, None),
    }
}

fn hash_source(c: &UpstreamCluster, h: &HeaderMap, uri: &Uri, down: &Downstream) -> Option<String> {
    let ch = c.cluster.policy.load_balancer.consistent_hash.as_ref()?;
    let key = if let Some(name) = &ch.http_header_name {
        h.get(name.as_str()).and_then(|v| v.to_str().ok()).map(str::to_string)
    } else if let Some(cookie) = &ch.http_cookie {
        h.get_all(names::COOKIE)
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
    key
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
    let mut retrying = false;
    let breakers = &a.cluster.breakers;
    loop {
        let result = one_attempt(a, policy, &mut tried, out).await;
        if retrying {
            breakers.end_retry();
        }
        let more = attempt < policy.attempts;
        let again = match &result {
            Ok(resp) => {
                let grpc_status = resp
                    .headers()
                    .get(names::GRPC_STATUS)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok());
                more && retriable(policy, Some(resp.status().as_u16()), grpc_status, None)
            }
            Err(Failure::Overflow | Failure::NoHealthyUpstream) => false,
            Err(f) => more && (*f == Failure::Timeout || retriable(policy, None, None, Some(f))),
        };
        // A body not kept whole cannot be sent again (Envoy's retry buffer overflow).
        // maxRetries: with that many retries in flight to the cluster, this request is not retried.
        if !again || !a.body.replayable() || !breakers.start_retry() {
            return result.map_err(|f| (f, attempt > 0));
        }
        a.telemetry.upstream(&a.cluster.cluster.name, Upstream::Retry);
        retrying = true;
        attempt += 1;
        let cap = backoff_cap(policy.backoff.as_std(), attempt);
        tokio::time::sleep(Duration::from_micros(fastrand::u64(0..cap.as_micros() as u64))).await;
    }
}

/// Envoy's fully jittered exponential back-off: retry N waits a random time in
/// `[0, (2^N - 1) * base)`, the upper end at most ten times the base (Envoy's default
/// `max_interval`). With Istio's 25 ms base the first retry waits under 25 ms.
fn backoff_cap(base: Duration, retry: u32) -> Duration {
    let base = base.max(Duration::from_millis(1));
    let factor = (1u32 << retry.min(10)) - 1;
    (base * factor.max(1)).min(base * 10)
}

/// One attempt: choose an endpoint, pass the circuit breakers, send, report to outlier detection.
async fn one_attempt(
    a: &Attempt<'_>,
    policy: &RetryPolicy,
    tried: &mut Vec<usize>,
    out: &mut Outcome,
) -> Result<Response<Body>, Failure> {
    let exclude: &[usize] = if policy.retry_previous_hosts { tried } else { &[] };
    let i = crate::balance::pick(a.cluster, a.hash, exclude).ok_or(Failure::NoHealthyUpstream)?;
    tried.push(i);
    out.upstream_host = a.cluster.address(i, a.destination);
    // The breakers refuse only with an overflow.
    let admission = a
        .cluster
        .breakers
        .admit()
        .await
        .inspect_err(|_| a.telemetry.upstream(&a.cluster.cluster.name, Upstream::Overflow))?;
    a.cluster.active[i].fetch_add(1, Ordering::Relaxed);
    let sent = Instant::now();
    let call = send(a, i);
    let result = match policy.per_try_timeout {
        Some(t) => tokio::time::timeout(t.as_std(), call)
            .await
            .unwrap_or(Err(Failure::Timeout)),
        None => call.await,
    };
    a.cluster.active[i].fetch_sub(1, Ordering::Relaxed);
    let event = match &result {
        Ok(resp) => Some(Upstream::Response(
            resp.status().as_u16(),
            sent.elapsed().as_secs_f64() * 1000.0,
        )),
        Err(Failure::Timeout) => Some(Upstream::Timeout),
        Err(Failure::ConnectFailure(_)) => Some(Upstream::ConnectFail),
        Err(_) => None,
    };
    if let Some(event) = event {
        a.telemetry.upstream(&a.cluster.cluster.name, event);
    }
    if let Some(o) = &a.cluster.outlier {
        match &result {
            Ok(resp) => o.report(i, Some(resp.status().as_u16()), None),
            Err(f) => o.report(i, None, Some(f)),
        }
    }
    result.map(|resp| resp.map(|body| crate::breaker::Held { inner: body, admission }.boxed_unsync()))
}

async fn send(a: &Attempt<'_>, endpoint: usize) -> Result<Response<Body>, Failure> {
    let out = Outbound {
        method: a.method,
        authority: a.authority,
        path: a.path,
        headers: a.headers,
        body: a.body.attempt(),
    };
    let address = || a.cluster.address(endpoint, a.destination);
    let sent = a.cluster.client.get().send(endpoint, address, out);
    match sent.await {
        Ok(mut resp) => {
            strip_response_hop_by_hop(&mut resp);
            Ok(resp)
        }
        Err(SendError::Broken(reason) | SendError::Connect(reason)) => Err(Failure::ConnectFailure(reason)),
        Err(SendError::NoEndpoint) => Err(Failure::NoHealthyUpstream),
        Err(SendError::Uri(why)) => Err(Failure::BadRequest(why)),
        Err(SendError::Reset(why)) => Err(Failure::Reset(why)),
    }
}

/// Removes the hop-by-hop headers of an upstream's HTTP/1 response (HTTP/2 has none: the h2
/// crate refuses a response that carries them).
pub(crate) fn strip_response_hop_by_hop<B>(resp: &mut Response<B>) {
    if resp.version() == http::Version::HTTP_2 {
        return;
    }
    let h = resp.headers_mut();
    for hop in carried(h, &names::RESPONSE_HOP_BY_HOP) {
        h.remove(hop);
    }
}

/// Which of `names` `h` carries: one pass over its names (most messages carry one of the
/// hop-by-hop headers or none) instead of a hashed lookup for each.
pub(crate) fn carried<'a, const N: usize>(
    h: &HeaderMap,
    names: &'a [HeaderName; N],
) -> impl Iterator<Item = &'a HeaderName> {
    let mut carried = [false; N];
    for name in h.keys() {
        if let Some(i) = names.iter().position(|n| n == name) {
            carried[i] = true;
        }
    }
    names.iter().zip(carried).filter_map(|(n, c)| c.then_some(n))
}

pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
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
    down: &Downstream,
    c: Arc<UpstreamCluster>,
    (method, path, authority, headers): (Method, String, String, HeaderMap),
    bytes: Bytes,
) {
    let telemetry = down.telemetry.clone();
    let body = RequestBody::whole(bytes, down.body.budget.reserve());
    tokio::spawn(async move {
        let attempt = Attempt {
            cluster: &c,
            method: &method,
            path: &path,
            authority: &authority,
            destination: &authority,
            headers: &headers,
            body: &body,
            hash: None,
            telemetry: &telemetry,
        };
        if let Some(i) = crate::balance::pick(&c, None, &[]) {
            if let Ok(resp) = send(&attempt, i).await {
                let _ = resp.into_body().collect().await;
            }
        }
    });
}

#[cfg(test)]
mod tests;
