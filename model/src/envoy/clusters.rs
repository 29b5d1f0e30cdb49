//! Plan clusters -> Envoy clusters (`cluster_builder.go`, `cluster_traffic_policy.go`): endpoints
//! (STATIC, or STRICT_DNS/LOGICAL_DNS for DNS resolution), load balancer, circuit breakers with
//! Istio's "no limit" defaults, outlier detection, upstream protocol and TLS origination; and
//! istiod's `BlackHoleCluster` and `PassthroughCluster`.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::api::destination_rule::{ConnectionPoolSettings, OutlierDetection, SimpleLb};
use crate::api::service_entry::Resolution;
use crate::api::Protocol;
use crate::plan::{Cluster, Endpoint, Plan};

use super::{address, tls, EnvoyOptions};

pub const BLACKHOLE: &str = "BlackHoleCluster";
pub const PASSTHROUGH: &str = "PassthroughCluster";

const HTTP_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

pub fn clusters(plan: &Plan, opts: &EnvoyOptions) -> Vec<Value> {
    let mut out: Vec<Value> = plan.clusters.iter().map(|c| cluster(c, plan, opts)).collect();
    out.push(blackhole());
    out.push(passthrough(opts));
    out
}

/// How an original-destination cluster learns the destination: captured, from the connection
/// (`SO_ORIGINAL_DST`, Envoy's default); as an explicit proxy, from the request's authority.
fn original_dst_config(opts: &EnvoyOptions) -> Option<Value> {
    (!opts.capture).then(|| json!({"use_http_header": true, "http_header_name": ":authority"}))
}

fn blackhole() -> Value {
    json!({
        "name": BLACKHOLE,
        "type": "STATIC",
        "connect_timeout": "10s",
        "load_assignment": {"cluster_name": BLACKHOLE, "endpoints": []},
    })
}

/// The original destination of a request: without transparent capture the proxy learns it from
/// the request's authority (an explicit proxy's absolute URI or CONNECT target).
fn passthrough(opts: &EnvoyOptions) -> Value {
    let mut c = json!({
        "name": PASSTHROUGH,
        "type": "ORIGINAL_DST",
        "connect_timeout": "10s",
        "lb_policy": "CLUSTER_PROVIDED",
        "circuit_breakers": {"thresholds": [thresholds(None)]},
    });
    if let Some(cfg) = original_dst_config(opts) {
        c["original_dst_lb_config"] = cfg;
    }
    c
}

/// Whether every endpoint is an IP (or a pipe), so the cluster can be STATIC.
fn all_ips(eps: &[Endpoint]) -> bool {
    eps.iter()
        .all(|e| e.address.starts_with("unix://") || e.address.parse::<std::net::IpAddr>().is_ok())
}

fn cluster(c: &Cluster, plan: &Plan, opts: &EnvoyOptions) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), json!(c.name));
    let kind = match c.resolution {
        Resolution::None => "ORIGINAL_DST",
        Resolution::DnsRoundRobin => "LOGICAL_DNS",
        Resolution::Dns | Resolution::DynamicDns => "STRICT_DNS",
        Resolution::Static if all_ips(&c.endpoints) => "STATIC",
        Resolution::Static => "STRICT_DNS",
    };
    m.insert("type".into(), json!(kind));
    m.insert("connect_timeout".into(), json!(c.policy.connect_timeout.to_string()));
    if kind == "ORIGINAL_DST" {
        m.insert("lb_policy".into(), json!("CLUSTER_PROVIDED"));
        if let Some(cfg) = original_dst_config(opts) {
            m.insert("original_dst_lb_config".into(), cfg);
        }
    } else {
        load_balancer(c, &mut m);
        m.insert("load_assignment".into(), load_assignment(&c.name, &c.endpoints));
        if kind != "STATIC" {
            // istiod's DNS clusters: re-resolved at the mesh's refresh rate, or sooner when the
            // answer's TTL says so.
            m.insert("dns_lookup_family".into(), json!("V4_ONLY"));
            m.insert("dns_refresh_rate".into(), json!(plan.mesh.dns_refresh_rate.to_string()));
            m.insert("respect_dns_ttl".into(), json!(true));
        }
    }
    m.insert(
        "circuit_breakers".into(),
        json!({"thresholds": [thresholds(c.policy.connection_pool.as_ref())]}),
    );
    if let Some(od) = &c.policy.outlier_detection {
        m.insert("outlier_detection".into(), outlier(od));
        let panic = od.min_health_percent.unwrap_or(0).max(0);
        m.insert(
            "common_lb_config".into(),
            json!({"healthy_panic_threshold": {"value": panic}}),
        );
    }
    let http = c.protocol.is_http() || c.protocol == Protocol::Unsupported;
    if let Some(p) = protocol_options(c, http) {
        m.insert("typed_extension_protocol_options".into(), json!({HTTP_OPTIONS: p}));
    }
    if let Some(ts) = tls::upstream(&c.policy.tls, &c.subject_alt_names, &c.service, http, opts) {
        m.insert("transport_socket".into(), ts);
    }
    m.insert(
        "metadata".into(),
        json!({"filter_metadata": {"istio": {"services": [{"host": c.service}], "default_original_port": c.port}}}),
    );
    Value::Object(m)
}

fn load_balancer(c: &Cluster, m: &mut Map<String, Value>) {
    let lb = &c.policy.load_balancer;
    if let Some(ch) = &lb.consistent_hash {
        if let Some(mg) = &ch.maglev {
            m.insert("lb_policy".into(), json!("MAGLEV"));
            if let Some(t) = mg.table_size {
                m.insert("maglev_lb_config".into(), json!({"table_size": t}));
            }
        } else {
            let size = ch
                .ring_hash
                .as_ref()
                .and_then(|r| r.minimum_ring_size)
                .or(ch.minimum_ring_size)
                .unwrap_or(1024);
            m.insert("lb_policy".into(), json!("RING_HASH"));
            m.insert("ring_hash_lb_config".into(), json!({"minimum_ring_size": size}));
        }
        return;
    }
    let policy = match lb.simple {
        Some(SimpleLb::RoundRobin) => "ROUND_ROBIN",
        Some(SimpleLb::Random) => "RANDOM",
        _ => "LEAST_REQUEST",
    };
    m.insert("lb_policy".into(), json!(policy));
}

/// Endpoints grouped by locality, each with its weight.
fn load_assignment(name: &str, eps: &[Endpoint]) -> Value {
    let mut by_locality: BTreeMap<Option<&str>, Vec<Value>> = BTreeMap::new();
    for e in eps {
        by_locality.entry(e.locality.as_deref()).or_default().push(
            json!({"endpoint": {"address": address(&e.address, e.port)}, "load_balancing_weight": e.weight.max(1)}),
        );
    }
    let groups: Vec<Value> = by_locality
        .into_iter()
        .map(|(loc, lb_endpoints)| {
            let mut g = json!({"lb_endpoints": lb_endpoints});
            if let Some(l) = loc {
                let mut parts = l.splitn(3, '/');
                g["locality"] = json!({
                    "region": parts.next().unwrap_or(""),
                    "zone": parts.next().unwrap_or(""),
                    "sub_zone": parts.next().unwrap_or(""),
                });
            }
            g
        })
        .collect();
    json!({"cluster_name": name, "endpoints": groups})
}

/// Istio's circuit breakers (`applyConnectionPool`): every limit is MaxUint32 unless set.
fn thresholds(cp: Option<&ConnectionPoolSettings>) -> Value {
    let max = u64::from(u32::MAX);
    let pick = |v: Option<i32>| v.filter(|n| *n > 0).map_or(max, |n| n as u64);
    let http = cp.and_then(|c| c.http.as_ref());
    let tcp = cp.and_then(|c| c.tcp.as_ref());
    json!({
        "max_connections": pick(tcp.and_then(|t| t.max_connections)),
        "max_pending_requests": pick(http.and_then(|h| h.http1_max_pending_requests)),
        "max_requests": pick(http.and_then(|h| h.http2_max_requests)),
        "max_retries": pick(http.and_then(|h| h.max_retries)),
        "track_remaining": true,
    })
}

/// Istio's `applyOutlierDetection`: success-rate ejection off, each consecutive-error kind
/// enforced at 100% when set (0 turns it off).
fn outlier(od: &OutlierDetection) -> Value {
    let mut m = Map::new();
    m.insert("enforcing_success_rate".into(), json!(0));
    let five = od.consecutive_5xx_errors;
    // The deprecated `consecutiveErrors` counts gateway errors (502/503/504).
    let gateway = od
        .consecutive_gateway_errors
        .or(od.consecutive_errors.map(|n| n.max(0) as u32));
    if let Some(n) = five {
        m.insert("consecutive_5xx".into(), json!(n));
        m.insert("enforcing_consecutive_5xx".into(), json!(if n > 0 { 100 } else { 0 }));
    } else if gateway.is_some() {
        m.insert("enforcing_consecutive_5xx".into(), json!(0));
    }
    if let Some(n) = gateway {
        m.insert("consecutive_gateway_failure".into(), json!(n));
        m.insert(
            "enforcing_consecutive_gateway_failure".into(),
            json!(if n > 0 { 100 } else { 0 }),
        );
    }
    if let Some(i) = od.interval {
        m.insert("interval".into(), json!(i.to_string()));
    }
    if let Some(b) = od.base_ejection_time {
        m.insert("base_ejection_time".into(), json!(b.to_string()));
    }
    if let Some(p) = od.max_ejection_percent.filter(|p| *p > 0) {
        m.insert("max_ejection_percent".into(), json!(p));
    }
    if od.split_external_local_origin_errors {
        m.insert("split_external_local_origin_errors".into(), json!(true));
        if let Some(n) = od.consecutive_local_origin_failures {
            m.insert("consecutive_local_origin_failure".into(), json!(n));
            m.insert("enforcing_consecutive_local_origin_failure".into(), json!(100));
        }
    }
    Value::Object(m)
}

/// The upstream HTTP protocol (h2 for HTTP2/GRPC ports, HTTP/1.1 otherwise), idle timeout and
/// requests per connection; `auto_sni` when TLS originates without a fixed SNI.
fn protocol_options(c: &Cluster, http: bool) -> Option<Value> {
    if !http {
        return None;
    }
    let h = c.policy.connection_pool.as_ref().and_then(|cp| cp.http.as_ref());
    let mut common = Map::new();
    common.insert(
        "idle_timeout".into(),
        json!(h.and_then(|h| h.idle_timeout).map_or("3600s".into(), |d| d.to_string())),
    );
    if let Some(n) = h.and_then(|h| h.max_requests_per_connection).filter(|n| *n > 0) {
        common.insert("max_requests_per_connection".into(), json!(n));
    }
    let explicit = if matches!(c.protocol, Protocol::Http2 | Protocol::Grpc | Protocol::GrpcWeb) {
        json!({"http2_protocol_options": {}})
    } else {
        json!({"http_protocol_options": {}})
    };
    let mut p = Map::new();
    p.insert("@type".into(), json!(super::type_url(HTTP_OPTIONS)));
    p.insert("common_http_protocol_options".into(), Value::Object(common));
    p.insert("explicit_http_config".into(), explicit);
    let tls = &c.policy.tls;
    if tls::originates(tls) && tls.sni.is_none() {
        let san = tls.subject_alt_names.is_empty()
            && c.subject_alt_names.is_empty()
            && tls.insecure_skip_verify != Some(true);
        p.insert(
            "upstream_http_protocol_options".into(),
            json!({"auto_sni": true, "auto_san_validation": san}),
        );
    }
    Some(Value::Object(p))
}
