//! VirtualService rules -> Plan routes for one gateway and port: match blocks filtered by
//! `match.port` and `match.gateways`, emission stopped after the first catch-all, destinations
//! turned into clusters, and Istio's defaults (retries, timeout, fault and mirror percentages,
//! redirect code) made explicit.

use crate::api::virtual_service::{
    HeaderOperations, HttpMatchRequest, HttpRetry, HttpRoute, RouteDestination, VirtualService,
};
use crate::api::{Destination, Kind, Resource, Spec, StringMatch};
use crate::diag::{Code, Diagnostic, Severity};
use crate::host;

use super::build::Ctx;
use super::{
    cluster_name, FaultAbortPlan, FaultDelayPlan, FaultPlan, HeaderMatch, L4Route, Mirror, QueryMatch, RedirectPlan,
    RedirectPort, RetryPolicy, RewritePlan, Route, RouteAction, RouteMatch, WeightedCluster,
};

/// Resolves a gateway reference of a VirtualService in `vs_ns` to `namespace/name` (or `mesh`).
pub fn resolve_gateway_ref(r: &str, vs_ns: &str) -> String {
    if r == "mesh" {
        return r.to_string();
    }
    if let Some((ns, name)) = r.split_once('/') {
        let ns = if ns == "." { vs_ns } else { ns };
        return format!("{ns}/{name}");
    }
    let parts: Vec<&str> = r.split('.').collect();
    match parts.as_slice() {
        [name, ns, "svc", ..] => format!("{ns}/{name}"),
        _ => format!("{vs_ns}/{r}"),
    }
}

/// The top-level gateways a VirtualService binds to; none means `mesh`.
pub fn bound_gateways(vs: &VirtualService, vs_ns: &str) -> Vec<String> {
    if vs.gateways.is_empty() {
        return vec!["mesh".into()];
    }
    vs.gateways.iter().map(|g| resolve_gateway_ref(g, vs_ns)).collect()
}

/// Whether a match block applies to this gateway and listener port.
fn applies(ctx: &Ctx, m_port: Option<u32>, m_gateways: &[String], vs_ns: &str) -> bool {
    m_port.is_none_or(|p| p == ctx.port)
        && (m_gateways.is_empty() || m_gateways.iter().any(|g| resolve_gateway_ref(g, vs_ns) == ctx.gateway))
}

/// Istio's catch-all test on a compiled match: everything, or uri prefix `/` / regex `.*` alone.
pub fn is_catch_all(m: &RouteMatch) -> bool {
    let uri_all = match &m.uri {
        None => true,
        Some(u) => u.prefix.as_deref() == Some("/") || matches!(u.regex.as_deref(), Some(".*" | "*")),
    };
    uri_all
        && m.scheme.is_none()
        && m.method.is_none()
        && m.authority.is_none()
        && m.headers.is_empty()
        && m.query_params.is_empty()
}

/// The HTTP routes of one VirtualService for the context's gateway and port.
pub fn http_routes(ctx: &mut Ctx, res: &Resource, vs: &VirtualService) -> Vec<Route> {
    let mut out = Vec::new();
    for (ri, rule) in vs.http.iter().enumerate() {
        if let Some(d) = &rule.delegate {
            if delegate_routes(ctx, res, rule, ri, &d.name, d.namespace.as_deref(), &mut out) {
                break;
            }
            continue;
        }
        if rule_routes(ctx, res, rule, ri, &[], &mut out) {
            break;
        }
    }
    out
}

/// Emits the routes of one rule (its match blocks, each ANDed with `outer` when delegated).
/// Returns true when a catch-all was emitted: nothing after it can match.
fn rule_routes(
    ctx: &mut Ctx,
    res: &Resource,
    rule: &HttpRoute,
    ri: usize,
    outer: &[HttpMatchRequest],
    out: &mut Vec<Route>,
) -> bool {
    let ns = res.namespace();
    let mut blocks: Vec<(Option<usize>, HttpMatchRequest)> = Vec::new();
    match (rule.matches.is_empty(), outer.is_empty()) {
        (true, true) => blocks.push((None, HttpMatchRequest::default())),
        (true, false) => blocks.extend(outer.iter().cloned().map(|m| (None, m))),
        (false, true) => blocks.extend(rule.matches.iter().cloned().enumerate().map(|(i, m)| (Some(i), m))),
        (false, false) => {
            for o in outer {
                blocks.extend(
                    rule.matches
                        .iter()
                        .enumerate()
                        .map(|(i, m)| (Some(i), merge_match(o, m))),
                );
            }
        }
    }
    for (mi, m) in blocks {
        if !applies(ctx, m.port, &m.gateways, ns) {
            continue;
        }
        let matcher = compile_match(&m);
        let catch_all = is_catch_all(&matcher);
        if let Some(route) = build_route(ctx, res, rule, ri, mi, matcher) {
            out.push(route);
        }
        if catch_all {
            return true;
        }
    }
    false
}

fn delegate_routes(
    ctx: &mut Ctx,
    res: &Resource,
    rule: &HttpRoute,
    ri: usize,
    name: &str,
    namespace: Option<&str>,
    out: &mut Vec<Route>,
) -> bool {
    let ns = namespace.unwrap_or(res.namespace());
    let Some(delegate) = ctx.config.find(Kind::VirtualService, ns, name) else {
        let msg = format!(
            "delegate VirtualService {ns}/{name} does not exist; rule {ri} of {} is skipped",
            res.key()
        );
        ctx.diag(
            Diagnostic::new(Severity::Warning, Code::ReferencedResourceNotFound, msg).at(
                &res.source.file,
                res.source.line_of(&format!("spec.http[{ri}].delegate")),
            ),
        );
        return false;
    };
    let Spec::VirtualService(dvs) = &delegate.spec else {
        return false;
    };
    for (di, drule) in dvs.http.iter().enumerate() {
        if drule.delegate.is_some() {
            continue; // One level only.
        }
        if rule_routes(ctx, delegate, drule, di, &rule.matches, out) {
            return true;
        }
    }
    false
}

/// A delegate's match block ANDed with its root's: the delegate's fields win where both are set.
fn merge_match(root: &HttpMatchRequest, d: &HttpMatchRequest) -> HttpMatchRequest {
    let mut m = d.clone();
    m.uri = d.uri.clone().or_else(|| root.uri.clone());
    m.scheme = d.scheme.clone().or_else(|| root.scheme.clone());
    m.method = d.method.clone().or_else(|| root.method.clone());
    m.authority = d.authority.clone().or_else(|| root.authority.clone());
    m.port = d.port.or(root.port);
    m.ignore_uri_case = d.ignore_uri_case || root.ignore_uri_case;
    for (k, v) in &root.headers {
        m.headers.entry(k.clone()).or_insert_with(|| v.clone());
    }
    for (k, v) in &root.query_params {
        m.query_params.entry(k.clone()).or_insert_with(|| v.clone());
    }
    for (k, v) in &root.without_headers {
        m.without_headers.entry(k.clone()).or_insert_with(|| v.clone());
    }
    if m.gateways.is_empty() {
        m.gateways = root.gateways.clone();
    }
    m
}

fn is_presence(sm: &StringMatch) -> bool {
    sm.set_count() == 0 || sm.regex.as_deref() == Some("*")
}

/// A match block as the data plane evaluates it.
pub fn compile_match(m: &HttpMatchRequest) -> RouteMatch {
    let mut headers = Vec::new();
    for (k, sm) in &m.headers {
        let value = (!is_presence(sm)).then(|| sm.clone());
        headers.push(HeaderMatch {
            name: k.to_ascii_lowercase(),
            value,
            invert: false,
            treat_missing_as_empty: false,
        });
    }
    for (k, sm) in &m.without_headers {
        let presence = is_presence(sm);
        let value = (!presence).then(|| sm.clone());
        headers.push(HeaderMatch {
            name: k.to_ascii_lowercase(),
            value,
            invert: true,
            treat_missing_as_empty: !presence,
        });
    }
    let query_params = m
        .query_params
        .iter()
        .map(|(k, sm)| {
            let empty_exact = sm.exact.as_deref() == Some("");
            QueryMatch {
                name: k.clone(),
                value: (!(is_presence(sm) || empty_exact)).then(|| sm.clone()),
            }
        })
        .collect();
    RouteMatch {
        uri: m.uri.clone(),
        scheme: m.scheme.clone(),
        method: m.method.clone(),
        authority: m.authority.clone(),
        headers,
        query_params,
        ignore_uri_case: m.ignore_uri_case,
    }
}

fn build_route(
    ctx: &mut Ctx,
    res: &Resource,
    rule: &HttpRoute,
    ri: usize,
    mi: Option<usize>,
    matcher: RouteMatch,
) -> Option<Route> {
    let ns = res.namespace();
    let (request_headers, route_host) = split_host(rule.headers.as_ref().and_then(|h| h.request.clone()));
    let action = if let Some(r) = &rule.redirect {
        let code = match r.redirect_code.unwrap_or(0) {
            0 => 301,
            c @ (301 | 302 | 303 | 307 | 308) => c as u16,
            _ => return None, // Istio drops the route.
        };
        let port = match (r.port, r.derive_port) {
            (Some(p), _) => RedirectPort::Fixed(p),
            (None, Some(crate::api::virtual_service::RedirectPortSelection::FromRequestPort)) => {
                RedirectPort::FromRequestPort
            }
            (None, Some(crate::api::virtual_service::RedirectPortSelection::FromProtocolDefault)) => {
                RedirectPort::FromProtocolDefault
            }
            (None, None) => RedirectPort::Keep,
        };
        RouteAction::Redirect(RedirectPlan {
            code,
            scheme: r.scheme.clone(),
            host: r.authority.clone(),
            port,
            path: r.uri.clone(),
            prefix_rewrite: r.prefix_rewrite.clone(),
        })
    } else if let Some(d) = &rule.direct_response {
        let body = d.body.as_ref().and_then(|b| b.string.clone());
        let body_base64 = d.body.as_ref().and_then(|b| b.bytes.clone());
        RouteAction::DirectResponse {
            status: d.status.min(u16::MAX as u32) as u16,
            body,
            body_base64,
        }
    } else {
        let clusters = weighted_clusters(ctx, ns, &http_destinations(rule));
        let rewrite = rewrite_plan(rule, &matcher, route_host);
        RouteAction::Route { clusters, rewrite }
    };
    let name = match &rule.name {
        Some(n) => n.clone(),
        None => format!("{}/{ri}", res.key()),
    };
    Some(Route {
        name,
        virtual_service: res.key(),
        rule: ri,
        match_index: mi,
        matcher,
        action,
        request_headers,
        response_headers: rule.headers.as_ref().and_then(|h| h.response.clone()),
        timeout: rule.timeout,
        retry: retry_policy(rule.retries.as_ref(), &ctx.default_retry),
        fault: fault_plan(rule),
        mirrors: mirrors(ctx, ns, rule),
        cors: rule.cors_policy.clone().map(|mut c| {
            c.allow_origins
                .extend(c.allow_origin.drain(..).map(|o| StringMatch::exact(&o)));
            c
        }),
    })
}

fn http_destinations(
    rule: &HttpRoute,
) -> Vec<(Option<&Destination>, i32, Option<&crate::api::virtual_service::Headers>)> {
    rule.route
        .iter()
        .map(|r| (r.destination.as_ref(), r.weight, r.headers.as_ref()))
        .collect()
}

/// Moves `:authority`/`Host` out of request header operations: it is a host rewrite.
fn split_host(ops: Option<HeaderOperations>) -> (Option<HeaderOperations>, Option<String>) {
    let Some(mut ops) = ops else { return (None, None) };
    let mut host = None;
    for map in [&mut ops.set, &mut ops.add] {
        let keys: Vec<String> = map
            .keys()
            .filter(|k| k.eq_ignore_ascii_case(":authority") || k.eq_ignore_ascii_case("host"))
            .cloned()
            .collect();
        for k in keys {
            host = map.remove(&k).or(host);
        }
    }
    let empty = ops.set.is_empty() && ops.add.is_empty() && ops.remove.is_empty();
    ((!empty).then_some(ops), host)
}

fn rewrite_plan(rule: &HttpRoute, matcher: &RouteMatch, route_host: Option<String>) -> Option<RewritePlan> {
    let rw = rule.rewrite.as_ref();
    let host = rw.and_then(|r| r.authority.clone()).or(route_host);
    let prefix = rw.and_then(|r| r.uri.clone());
    let matched_prefix = prefix.as_ref().and_then(|_| match &matcher.uri {
        Some(u) => u.prefix.clone().or_else(|| u.exact.clone()),
        None => Some("/".into()),
    });
    let regex = rw
        .and_then(|r| r.uri_regex_rewrite.as_ref())
        .map(|r| (r.pattern.clone(), r.rewrite.clone()));
    let plan = RewritePlan {
        prefix,
        matched_prefix,
        regex,
        host,
    };
    (plan != RewritePlan::default()).then_some(plan)
}

/// Destinations -> weighted clusters: one destination gets 100; with several, weight 0 is dropped.
fn weighted_clusters(
    ctx: &mut Ctx,
    ns: &str,
    dests: &[(Option<&Destination>, i32, Option<&crate::api::virtual_service::Headers>)],
) -> Vec<WeightedCluster> {
    let single = dests.len() == 1;
    dests
        .iter()
        .filter(|(_, w, _)| single || *w > 0)
        .filter_map(|(d, w, headers)| {
            let d = (*d)?;
            let (request_headers, host_rewrite) = split_host(headers.and_then(|h| h.request.clone()));
            Some(WeightedCluster {
                cluster: ctx.destination_cluster(ns, d),
                weight: if single { 100 } else { *w as u32 },
                request_headers,
                response_headers: headers.and_then(|h| h.response.clone()),
                host_rewrite,
            })
        })
        .collect()
}

/// L4 (TCP/TLS) route destinations.
pub fn l4_route(ctx: &mut Ctx, res: &Resource, rule: usize, route: &[RouteDestination]) -> L4Route {
    let dests: Vec<_> = route.iter().map(|r| (r.destination.as_ref(), r.weight, None)).collect();
    L4Route {
        virtual_service: res.key(),
        rule,
        clusters: weighted_clusters(ctx, res.namespace(), &dests),
    }
}

/// The destination's cluster name (`GetDestinationCluster`): without a port, the service's only
/// port, else the listener's port.
pub fn destination_cluster_name(ctx: &mut Ctx, ns: &str, d: &Destination) -> String {
    let fqdn = host::resolve_short_name(&d.host, ns, ctx.config.domain_suffix());
    let port = match d.port {
        Some(p) => p.number,
        None => match ctx.service_single_port(&fqdn) {
            Some(p) => p,
            None => {
                let listener = ctx.port;
                if ctx.service_lacks_port(&fqdn, listener) {
                    ctx.diag(Diagnostic::new(Severity::Warning, Code::ReferencedResourceNotFound, format!("destination `{}` has no port and its service has several, none of them {listener} (this listener's port, which Istio uses then); requests to it get 503 (NC)", d.host)).with_hint("set `destination.port.number`"));
                }
                listener
            }
        },
    };
    cluster_name(port, d.subset.as_deref(), &fqdn)
}

/// Istio's retry policy for a route (`pilot/pkg/networking/core/route/retry/retry.go`).
pub fn retry_policy(r: Option<&HttpRetry>, default: &RetryPolicy) -> RetryPolicy {
    let Some(r) = r else { return default.clone() };
    let mut retry_on = Vec::new();
    let mut codes = Vec::new();
    match &r.retry_on {
        Some(list) => {
            for t in list.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                match t.parse::<u16>() {
                    Ok(c) => codes.push(c),
                    Err(_) => retry_on.push(t.to_string()),
                }
            }
        }
        None => retry_on = default.retry_on.clone(),
    }
    if !codes.is_empty() && !retry_on.iter().any(|t| t == "retriable-status-codes") {
        retry_on.push("retriable-status-codes".into());
    }
    RetryPolicy {
        attempts: r.attempts.unwrap_or(0).max(0) as u32,
        per_try_timeout: r.per_try_timeout,
        retry_on,
        retriable_status_codes: codes,
        retry_previous_hosts: r.retry_ignore_previous_hosts.unwrap_or(true),
        backoff: r.backoff.unwrap_or(crate::api::Duration::from_millis(25)),
    }
}

/// Istio's default when a route sets no `retries` and MeshConfig has no default.
pub fn istio_default_retry() -> RetryPolicy {
    RetryPolicy {
        attempts: 2,
        per_try_timeout: None,
        retry_on: [
            "connect-failure",
            "refused-stream",
            "unavailable",
            "cancelled",
            "retriable-status-codes",
        ]
        .map(String::from)
        .to_vec(),
        retriable_status_codes: Vec::new(),
        retry_previous_hosts: true,
        backoff: crate::api::Duration::from_millis(25),
    }
}

/// A fault's percentages resolved; no percentage means no injection, so such parts are dropped.
fn fault_plan(rule: &HttpRoute) -> Option<FaultPlan> {
    let f = rule.fault.as_ref()?;
    let pct = |p: Option<crate::api::Percent>, legacy: Option<i32>| {
        p.map(|p| p.value).or(legacy.map(f64::from)).unwrap_or(0.0)
    };
    let delay = f.delay.as_ref().and_then(|d| {
        let percentage = pct(d.percentage, d.percent);
        Some(FaultDelayPlan {
            delay: d.fixed_delay?,
            percentage,
        })
        .filter(|p| p.percentage > 0.0)
    });
    let abort = f.abort.as_ref().and_then(|a| {
        let percentage = pct(a.percentage, None);
        let plan = FaultAbortPlan {
            http_status: a.http_status.map(|s| s.clamp(0, u16::MAX as i32) as u16),
            grpc_status: a.grpc_status.clone(),
            percentage,
        };
        (percentage > 0.0).then_some(plan)
    });
    (delay.is_some() || abort.is_some()).then_some(FaultPlan { delay, abort })
}

/// Mirrors: absent percentage is 100%, an explicit 0 turns the mirror off.
fn mirrors(ctx: &mut Ctx, ns: &str, rule: &HttpRoute) -> Vec<Mirror> {
    let mut out = Vec::new();
    if let Some(d) = &rule.mirror {
        let percentage = rule
            .mirror_percentage
            .map(|p| p.value)
            .or(rule.mirror_percent.map(f64::from))
            .unwrap_or(100.0);
        out.push(Mirror {
            cluster: ctx.destination_cluster(ns, d),
            percentage,
        });
    }
    for m in &rule.mirrors {
        if let Some(d) = &m.destination {
            let percentage = m.percentage.map_or(100.0, |p| p.value);
            out.push(Mirror {
                cluster: ctx.destination_cluster(ns, d),
                percentage,
            });
        }
    }
    out.retain(|m| m.percentage > 0.0);
    out
}

/// The first `tcp` rule of `vs` whose matches take this gateway and port.
pub fn first_tcp_route(ctx: &mut Ctx, res: &Resource, vs: &VirtualService) -> Option<L4Route> {
    for (i, rule) in vs.tcp.iter().enumerate() {
        let matches: Vec<(Option<u32>, &[String])> =
            rule.matches.iter().map(|m| (m.port, m.gateways.as_slice())).collect();
        if l4_applies(ctx, res.namespace(), &matches) {
            return Some(l4_route(ctx, res, i, &rule.route));
        }
    }
    None
}

/// Whether an L4 rule's match list takes this gateway and port (no match: it does).
pub fn l4_applies(ctx: &Ctx, ns: &str, matches: &[(Option<u32>, &[String])]) -> bool {
    matches.is_empty() || matches.iter().any(|(p, g)| applies(ctx, *p, g, ns))
}
