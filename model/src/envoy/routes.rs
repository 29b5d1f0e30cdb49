//! Route tables -> Envoy RouteConfigurations, as istiod builds them (`route/route.go`
//! `translateRoute`, `gateway.go` `buildGatewayHTTPRouteConfig`): matches, weighted clusters,
//! redirects, rewrites, header operations, direct responses, faults, timeouts, retries,
//! mirrors and CORS.

use serde_json::{json, Map, Value};

use crate::api::virtual_service::{CorsPolicy, HeaderOperations, UnmatchedPreflights};
use crate::api::{Duration, StringMatch};
use crate::plan::{
    FaultPlan, HeaderMatch, Plan, RedirectPlan, RedirectPort, RetryPolicy, Route, RouteAction, RouteMatch, RouteTable,
    VirtualHost, WeightedCluster,
};

use super::{fraction, type_url};

pub const FAULT_FILTER: &str = "envoy.filters.http.fault";
pub const CORS_FILTER: &str = "envoy.filters.http.cors";

/// Istio's `DefaultMaxDirectResponseBodySizeBytes`.
const MAX_DIRECT_RESPONSE_BODY: u64 = 1024 * 1024;

/// Where a route table is served: the listener port routes are built for, whether it is TLS,
/// and whether the port in Host is ignored (gateways) or part of the domain (the sidecar).
#[derive(Debug, Clone, Copy)]
pub struct TableContext {
    pub port: u32,
    pub tls: bool,
    pub gateway: bool,
}

pub fn route_config(plan: &Plan, table: &RouteTable, cx: TableContext) -> Value {
    let vhosts: Vec<Value> = table.virtual_hosts.iter().map(|v| virtual_host(plan, v, cx)).collect();
    route_config_of(&table.name, vhosts, cx.gateway)
}

pub fn route_config_of(name: &str, virtual_hosts: Vec<Value>, gateway: bool) -> Value {
    json!({
        "name": name,
        "virtual_hosts": virtual_hosts,
        "validate_clusters": false,
        "ignore_port_in_host_matching": gateway,
        "max_direct_response_body_size_bytes": MAX_DIRECT_RESPONSE_BODY,
    })
}

pub fn virtual_host(plan: &Plan, vh: &VirtualHost, cx: TableContext) -> Value {
    let mut v = json!({
        "name": vh.name,
        "domains": vh.domains,
        "routes": vh.routes.iter().map(|r| route(plan, r, cx)).collect::<Vec<_>>(),
        "include_request_attempt_count": true,
    });
    if vh.require_tls {
        v["require_tls"] = json!("ALL");
    }
    v
}

pub fn string_match(sm: &StringMatch) -> Value {
    if let Some(e) = &sm.exact {
        json!({"exact": e})
    } else if let Some(p) = sm.prefix.as_deref().filter(|p| !p.is_empty()) {
        json!({"prefix": p})
    } else if let Some(r) = &sm.regex {
        json!({"safe_regex": {"regex": r}})
    } else {
        json!({"prefix": ""})
    }
}

/// Whether a match only asks for presence (Envoy rejects an empty prefix).
fn presence(sm: &StringMatch) -> bool {
    sm.set_count() == 0 || sm.prefix.as_deref() == Some("")
}

fn header_matcher(name: &str, value: Option<&StringMatch>, invert: bool, missing_as_empty: bool) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), json!(name));
    match value.filter(|v| !presence(v)) {
        Some(v) => {
            m.insert("string_match".into(), string_match(v));
        }
        None => {
            m.insert("present_match".into(), json!(true));
        }
    }
    if invert {
        m.insert("invert_match".into(), json!(true));
    }
    if missing_as_empty {
        m.insert("treat_missing_header_as_empty".into(), json!(true));
    }
    Value::Object(m)
}

/// A Plan match as Envoy's RouteMatch (`TranslateRouteMatch`): the URI as path specifier,
/// scheme, method and authority as pseudo-header matchers.
pub fn route_match(m: &RouteMatch) -> Value {
    let mut out = Map::new();
    match &m.uri {
        Some(u) if u.exact.is_some() => {
            out.insert("path".into(), json!(u.exact));
        }
        Some(u) if u.prefix.is_some() => {
            out.insert("prefix".into(), json!(u.prefix));
        }
        Some(StringMatch { regex: Some(r), .. }) => {
            out.insert("safe_regex".into(), json!({"regex": r}));
        }
        _ => {
            out.insert("prefix".into(), json!("/"));
        }
    }
    if m.ignore_uri_case {
        out.insert("case_sensitive".into(), json!(false));
    }
    let mut headers: Vec<Value> = Vec::new();
    for (name, sm) in [
        (":scheme", &m.scheme),
        (":method", &m.method),
        (":authority", &m.authority),
    ] {
        if let Some(sm) = sm {
            headers.push(header_matcher(name, Some(sm), false, false));
        }
    }
    headers.extend(
        m.headers
            .iter()
            .map(|h: &HeaderMatch| header_matcher(&h.name, h.value.as_ref(), h.invert, h.treat_missing_as_empty)),
    );
    if !headers.is_empty() {
        out.insert("headers".into(), json!(headers));
    }
    if !m.query_params.is_empty() {
        let qs: Vec<Value> = m
            .query_params
            .iter()
            .map(|q| match q.value.as_ref().filter(|v| !presence(v)) {
                Some(v) => json!({"name": q.name, "string_match": string_match(v)}),
                None => json!({"name": q.name, "present_match": true}),
            })
            .collect();
        out.insert("query_parameters".into(), json!(qs));
    }
    Value::Object(out)
}

/// Header operations (`TranslateHeadersOperations`): `set` overwrites, `add` appends.
#[derive(Debug, Default)]
struct HeaderOps {
    request_add: Vec<Value>,
    request_remove: Vec<String>,
    response_add: Vec<Value>,
    response_remove: Vec<String>,
}

fn to_add(ops: &HeaderOperations) -> Vec<Value> {
    let entry =
        |k: &String, v: &String, action: &str| json!({"header": {"key": k, "value": v}, "append_action": action});
    let mut out: Vec<Value> = ops
        .set
        .iter()
        .map(|(k, v)| entry(k, v, "OVERWRITE_IF_EXISTS_OR_ADD"))
        .collect();
    out.extend(ops.add.iter().map(|(k, v)| entry(k, v, "APPEND_IF_EXISTS_OR_ADD")));
    out
}

impl HeaderOps {
    fn extend(&mut self, request: Option<&HeaderOperations>, response: Option<&HeaderOperations>) {
        if let Some(r) = request {
            self.request_add.extend(to_add(r));
            self.request_remove.extend(r.remove.iter().cloned());
        }
        if let Some(r) = response {
            self.response_add.extend(to_add(r));
            self.response_remove.extend(r.remove.iter().cloned());
        }
    }

    fn write(self, into: &mut Map<String, Value>) {
        let pairs = [
            ("request_headers_to_add", json!(self.request_add)),
            ("request_headers_to_remove", json!(self.request_remove)),
            ("response_headers_to_add", json!(self.response_add)),
            ("response_headers_to_remove", json!(self.response_remove)),
        ];
        for (k, v) in pairs {
            if v.as_array().is_some_and(|a| !a.is_empty()) {
                into.insert(k.into(), v);
            }
        }
    }
}

pub fn route(plan: &Plan, r: &Route, cx: TableContext) -> Value {
    let mut out = Map::new();
    out.insert("name".into(), json!(r.name));
    out.insert("match".into(), route_match(&r.matcher));
    let mut ops = HeaderOps::default();
    ops.extend(r.request_headers.as_ref(), r.response_headers.as_ref());
    match &r.action {
        RouteAction::Route { clusters, rewrite } => {
            let mut action = Map::new();
            let route_host = rewrite.as_ref().and_then(|rw| rw.host.clone());
            match clusters.as_slice() {
                [one] => {
                    action.insert("cluster".into(), json!(one.cluster));
                    // A single destination's headers follow the route's, so its `set` wins, as in
                    // istiod's `processDestination`; its authority only when the route sets none.
                    ops.extend(one.request_headers.as_ref(), one.response_headers.as_ref());
                    if let Some(h) = route_host.clone().or_else(|| one.host_rewrite.clone()) {
                        action.insert("host_rewrite_literal".into(), json!(h));
                    }
                }
                many => {
                    let weighted: Vec<Value> = many.iter().map(weighted_cluster).collect();
                    action.insert("weighted_clusters".into(), json!({"clusters": weighted}));
                    if let Some(h) = &route_host {
                        action.insert("host_rewrite_literal".into(), json!(h));
                    }
                }
            }
            if let Some(rw) = rewrite {
                if let Some((pattern, substitution)) = &rw.regex {
                    action.insert(
                        "regex_rewrite".into(),
                        json!({"pattern": {"regex": pattern}, "substitution": substitution}),
                    );
                } else if let Some(p) = &rw.prefix {
                    action.insert("prefix_rewrite".into(), json!(p));
                }
            }
            timeout(&mut action, r.timeout);
            let hash = hash_policies(plan, clusters);
            if let Some(rp) = retry_policy(&r.retry, !hash.is_empty()) {
                action.insert("retry_policy".into(), rp);
            }
            if !hash.is_empty() {
                action.insert("hash_policy".into(), json!(hash));
            }
            if !r.mirrors.is_empty() {
                let mirrors: Vec<Value> = r
                    .mirrors
                    .iter()
                    // Istio's `DISABLE_SHADOW_HOST_SUFFIX` (true by default): the copy keeps its authority.
                    .map(|m| {
                        json!({
                            "cluster": m.cluster,
                            "runtime_fraction": {"default_value": fraction(m.percentage)},
                            "trace_sampled": false,
                            "disable_shadow_host_suffix_append": true,
                        })
                    })
                    .collect();
                action.insert("request_mirror_policies".into(), json!(mirrors));
            }
            out.insert("route".into(), Value::Object(action));
        }
        RouteAction::Redirect(rd) => {
            out.insert("redirect".into(), redirect(rd, cx));
        }
        RouteAction::DirectResponse {
            status,
            body,
            body_base64,
        } => {
            let mut d = json!({"status": status});
            if let Some(b) = body {
                d["body"] = json!({"inline_string": b});
            } else if let Some(b) = body_base64 {
                d["body"] = json!({"inline_bytes": b});
            }
            out.insert("direct_response".into(), d);
        }
    }
    ops.write(&mut out);
    let mut per_filter = Map::new();
    if let Some(f) = &r.fault {
        per_filter.insert(FAULT_FILTER.into(), fault(f));
    }
    if let Some(c) = &r.cors {
        per_filter.insert(CORS_FILTER.into(), cors(c));
    }
    if !per_filter.is_empty() {
        out.insert("typed_per_filter_config".into(), Value::Object(per_filter));
    }
    Value::Object(out)
}

fn weighted_cluster(c: &WeightedCluster) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), json!(c.cluster));
    m.insert("weight".into(), json!(c.weight));
    let mut ops = HeaderOps::default();
    ops.extend(c.request_headers.as_ref(), c.response_headers.as_ref());
    ops.write(&mut m);
    if let Some(h) = &c.host_rewrite {
        m.insert("host_rewrite_literal".into(), json!(h));
    }
    Value::Object(m)
}

/// Istio's `setTimeout`: no timeout is an explicit 0 (Envoy's own default is 15 s); a gRPC
/// `grpc-timeout` may not exceed the route's (`max_grpc_timeout`, which Istio still uses because
/// `max_stream_duration` changes what a timeout answers).
fn timeout(action: &mut Map<String, Value>, t: Option<Duration>) {
    let t = t.unwrap_or_default().to_string();
    action.insert("timeout".into(), json!(t));
    action.insert("max_grpc_timeout".into(), json!(t));
}

/// Istio's `retry.ConvertPolicy`: none when attempts is 0; previous hosts avoided unless the
/// destination hashes consistently.
pub fn retry_policy(r: &RetryPolicy, consistent_hash: bool) -> Option<Value> {
    if r.attempts == 0 {
        return None;
    }
    let mut p = Map::new();
    p.insert("retry_on".into(), json!(r.retry_on.join(",")));
    p.insert("num_retries".into(), json!(r.attempts));
    if !r.retriable_status_codes.is_empty() {
        p.insert("retriable_status_codes".into(), json!(r.retriable_status_codes));
    }
    if let Some(t) = r.per_try_timeout {
        p.insert("per_try_timeout".into(), json!(t.to_string()));
    }
    if r.retry_previous_hosts && !consistent_hash {
        p.insert(
            "retry_host_predicate".into(),
            json!([{"name": "envoy.retry_host_predicates.previous_hosts", "typed_config": {"@type": type_url("envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate")}}]),
        );
    }
    p.insert("host_selection_retry_max_attempts".into(), json!("5"));
    p.insert("retry_back_off".into(), json!({"base_interval": r.backoff.to_string()}));
    Some(Value::Object(p))
}

/// Hash policies of the destinations whose DestinationRule hashes consistently.
fn hash_policies(plan: &Plan, clusters: &[WeightedCluster]) -> Vec<Value> {
    let mut out = Vec::new();
    for wc in clusters {
        let Some(ch) = plan
            .cluster(&wc.cluster)
            .and_then(|c| c.policy.load_balancer.consistent_hash.as_ref())
        else {
            continue;
        };
        let p = if let Some(h) = &ch.http_header_name {
            json!({"header": {"header_name": h}})
        } else if let Some(c) = &ch.http_cookie {
            let mut cookie = json!({"name": c.name});
            if let Some(ttl) = c.ttl {
                cookie["ttl"] = json!(ttl.to_string());
            }
            if let Some(path) = &c.path {
                cookie["path"] = json!(path);
            }
            json!({"cookie": cookie})
        } else if ch.use_source_ip == Some(true) {
            json!({"connection_properties": {"source_ip": true}})
        } else if let Some(q) = &ch.http_query_parameter_name {
            json!({"query_parameter": {"name": q}})
        } else {
            continue;
        };
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

/// Istio's `ApplyRedirect`: FROM_REQUEST_PORT is the listener's port; no explicit `:80` for
/// http or `:443` for https.
fn redirect(rd: &RedirectPlan, cx: TableContext) -> Value {
    let mut m = Map::new();
    if let Some(h) = &rd.host {
        m.insert("host_redirect".into(), json!(h));
    }
    if let Some(p) = &rd.prefix_rewrite {
        m.insert("prefix_rewrite".into(), json!(p));
    } else if let Some(p) = &rd.path {
        m.insert("path_redirect".into(), json!(p));
    }
    if let Some(s) = &rd.scheme {
        m.insert("scheme_redirect".into(), json!(s));
    }
    let port = match rd.port {
        RedirectPort::Keep | RedirectPort::FromProtocolDefault => None,
        RedirectPort::Fixed(p) => Some(p),
        RedirectPort::FromRequestPort => Some(cx.port),
    };
    if let Some(p) = port {
        let scheme = rd.scheme.as_deref().unwrap_or(if cx.tls { "https" } else { "http" });
        if !matches!((p, scheme), (80, "http") | (443, "https")) {
            m.insert("port_redirect".into(), json!(p));
        }
    }
    let code = match rd.code {
        302 => "FOUND",
        303 => "SEE_OTHER",
        307 => "TEMPORARY_REDIRECT",
        308 => "PERMANENT_REDIRECT",
        _ => "MOVED_PERMANENTLY",
    };
    m.insert("response_code".into(), json!(code));
    Value::Object(m)
}

fn fault(f: &FaultPlan) -> Value {
    let mut m = Map::new();
    m.insert(
        "@type".into(),
        json!(type_url("envoy.extensions.filters.http.fault.v3.HTTPFault")),
    );
    if let Some(d) = &f.delay {
        m.insert(
            "delay".into(),
            json!({"fixed_delay": d.delay.to_string(), "percentage": fraction(d.percentage)}),
        );
    }
    if let Some(a) = &f.abort {
        let mut abort = json!({"percentage": fraction(a.percentage)});
        match (&a.grpc_status, a.http_status) {
            (Some(g), _) => abort["grpc_status"] = json!(crate::api::virtual_service::grpc_status_code(g)),
            (None, Some(s)) => abort["http_status"] = json!(s),
            (None, None) => {}
        }
        m.insert("abort".into(), abort);
    }
    Value::Object(m)
}

/// Istio's `TranslateCORSPolicy`.
fn cors(c: &CorsPolicy) -> Value {
    let mut m = Map::new();
    m.insert(
        "@type".into(),
        json!(type_url("envoy.extensions.filters.http.cors.v3.CorsPolicy")),
    );
    let origins: Vec<Value> = c.allow_origins.iter().map(string_match).collect();
    m.insert("allow_origin_string_match".into(), json!(origins));
    let joined = [
        ("allow_methods", &c.allow_methods),
        ("allow_headers", &c.allow_headers),
        ("expose_headers", &c.expose_headers),
    ];
    for (k, v) in joined {
        if !v.is_empty() {
            m.insert(k.into(), json!(v.join(",")));
        }
    }
    if let Some(a) = c.max_age {
        m.insert("max_age".into(), json!(a.as_std().as_secs().to_string()));
    }
    if let Some(a) = c.allow_credentials {
        m.insert("allow_credentials".into(), json!(a));
    }
    let forward = c.unmatched_preflights != Some(UnmatchedPreflights::Ignore);
    m.insert("forward_not_matching_preflights".into(), json!(forward));
    Value::Object(m)
}
