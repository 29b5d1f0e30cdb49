//! Plan listeners -> Envoy listeners (`gateway.go` `buildGatewayListeners`): a filter chain per
//! Plan chain, matched by SNI (`tls_inspector`), terminating TLS or passing it through, each
//! running an HTTP connection manager with its route config or a TCP proxy.

use serde_json::{json, Map, Value};

use crate::api::service_entry::Location;
use crate::plan::{ChainAction, FilterChain, L4Route, Listener, Plan, Transport};

use super::clusters::BLACKHOLE;
use super::routes::{self, TableContext, CORS_FILTER, FAULT_FILTER};
use super::{access_logs, address, tls, typed, EnvoyOptions};

pub fn listener(plan: &Plan, l: &Listener, opts: &EnvoyOptions) -> Option<Value> {
    let (host, port) = opts
        .bind
        .get(&l.port)
        .map_or((l.bind.clone(), l.port), |(h, p)| (h.clone(), u32::from(*p)));
    let stat_prefix = format!("outbound_{}", l.name);
    let chains: Vec<Value> = l
        .filter_chains
        .iter()
        .flat_map(|c| filter_chains(plan, l, c, &stat_prefix, opts))
        .collect();
    if chains.is_empty() {
        // istiod drops a listener without chains ("must have more than 0 chains").
        return None;
    }
    let mut m = Map::new();
    m.insert("name".into(), json!(l.name));
    m.insert("address".into(), address(&host, port));
    m.insert("traffic_direction".into(), json!("OUTBOUND"));
    if l.filter_chains.iter().any(|c| c.transport != Transport::Plaintext) {
        m.insert(
            "listener_filters".into(),
            json!([typed(
                "envoy.filters.listener.tls_inspector",
                "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector",
                json!({})
            )]),
        );
    }
    m.insert("filter_chains".into(), json!(chains));
    Some(Value::Object(m))
}

fn chain(name: &str, server_names: &[String], transport_socket: Option<Value>, filter: Value) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), json!(name));
    if !server_names.is_empty() {
        m.insert("filter_chain_match".into(), json!({"server_names": server_names}));
    }
    if let Some(ts) = transport_socket {
        m.insert("transport_socket".into(), ts);
    }
    m.insert("filters".into(), json!([filter]));
    Value::Object(m)
}

fn filter_chains(plan: &Plan, l: &Listener, c: &FilterChain, stat_prefix: &str, opts: &EnvoyOptions) -> Vec<Value> {
    let terminate = |http: bool| {
        c.tls
            .as_ref()
            .filter(|_| c.transport == Transport::TerminateTls)
            .map(|t| tls::downstream(t, http, opts))
    };
    match &c.action {
        ChainAction::Http { route_table } => {
            let Some(table) = plan.route_table(route_table) else {
                return Vec::new();
            };
            let cx = TableContext {
                port: l.port,
                tls: c.transport == Transport::TerminateTls,
                gateway: true,
            };
            let prefix = if cx.tls {
                c.name.clone()
            } else {
                stat_prefix.to_string()
            };
            let rc = routes::route_config(plan, table, cx);
            vec![chain(
                &c.name,
                &c.server_names,
                terminate(true),
                hcm(&prefix, rc, true, opts),
            )]
        }
        ChainAction::Tcp { route } => {
            let proxy = tcp_proxy(plan, route.as_ref(), opts);
            vec![chain(&c.name, &c.server_names, terminate(false), proxy)]
        }
        ChainAction::TlsPassthrough { routes } => routes
            .iter()
            .map(|r| chain(&c.name, &r.sni_hosts, None, tcp_proxy(plan, Some(&r.route), opts)))
            .collect(),
        ChainAction::AutoPassthrough => auto_passthrough(plan, c, opts),
    }
}

/// AUTO_PASSTHROUGH (`builtAutoPassthroughFilterChains`): a chain per internal cluster the
/// server's hosts cover, matched by the SNI `outbound_.<port>_.<subset>_.<host>`.
fn auto_passthrough(plan: &Plan, c: &FilterChain, opts: &EnvoyOptions) -> Vec<Value> {
    plan.clusters
        .iter()
        .filter(|cl| cl.location == Location::MeshInternal)
        .filter(|cl| c.server_names.is_empty() || c.server_names.iter().any(|h| crate::host::subset_of(&cl.service, h)))
        .map(|cl| {
            let sni = format!(
                "outbound_.{}_.{}_.{}",
                cl.port,
                cl.subset.as_deref().unwrap_or(""),
                cl.service
            );
            let route = L4Route::to(&cl.name);
            chain(&c.name, &[sni], None, tcp_proxy(plan, Some(&route), opts))
        })
        .collect()
}

/// Istio's HTTP filters at a gateway: fault, CORS, router.
pub fn http_filters() -> Value {
    json!([
        typed(
            FAULT_FILTER,
            "envoy.extensions.filters.http.fault.v3.HTTPFault",
            json!({})
        ),
        typed(CORS_FILTER, "envoy.extensions.filters.http.cors.v3.Cors", json!({})),
        typed(
            "envoy.filters.http.router",
            "envoy.extensions.filters.http.router.v3.Router",
            json!({})
        ),
    ])
}

/// The HTTP connection manager as `buildGatewayConnectionManager` sets it for a gateway
/// (`gateway`: the remote address is trusted, client certificates sanitised) or a sidecar.
pub fn hcm(stat_prefix: &str, route_config: Value, gateway: bool, opts: &EnvoyOptions) -> Value {
    let mut m = Map::new();
    m.insert("stat_prefix".into(), json!(stat_prefix));
    m.insert("codec_type".into(), json!("AUTO"));
    m.insert("route_config".into(), route_config);
    m.insert("http_filters".into(), http_filters());
    m.insert("use_remote_address".into(), json!(gateway));
    m.insert("server_name".into(), json!("istio-envoy"));
    m.insert("normalize_path".into(), json!(true));
    m.insert("path_with_escaped_slashes_action".into(), json!("KEEP_UNCHANGED"));
    m.insert("stream_idle_timeout".into(), json!("0s"));
    m.insert("access_log".into(), access_logs(opts));
    if gateway {
        m.insert("xff_num_trusted_hops".into(), json!(0));
        m.insert("forward_client_cert_details".into(), json!("SANITIZE_SET"));
        m.insert(
            "set_current_client_cert_details".into(),
            json!({"subject": true, "cert": true, "dns": true, "uri": true}),
        );
        m.insert("upgrade_configs".into(), json!([{"upgrade_type": "websocket"}]));
    } else {
        m.insert(
            "upgrade_configs".into(),
            json!([{"upgrade_type": "websocket"}, {"upgrade_type": "CONNECT"}]),
        );
        m.insert("http2_protocol_options".into(), json!({"allow_connect": true}));
    }
    typed(
        "envoy.filters.network.http_connection_manager",
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        Value::Object(m),
    )
}

/// A TCP proxy to the route's clusters (weighted), or to BlackHoleCluster when no rule applies.
pub(super) fn tcp_proxy(plan: &Plan, route: Option<&L4Route>, opts: &EnvoyOptions) -> Value {
    let mut m = Map::new();
    let clusters = route.map(|r| r.clusters.as_slice()).unwrap_or_default();
    match clusters {
        [] => {
            m.insert("stat_prefix".into(), json!(BLACKHOLE));
            m.insert("cluster".into(), json!(BLACKHOLE));
        }
        [one] => {
            m.insert("stat_prefix".into(), json!(one.cluster));
            m.insert("cluster".into(), json!(one.cluster));
        }
        many => {
            let w: Vec<Value> = many
                .iter()
                .map(|c| json!({"name": c.cluster, "weight": c.weight}))
                .collect();
            m.insert("stat_prefix".into(), json!(many[0].cluster));
            m.insert("weighted_clusters".into(), json!({"clusters": w}));
        }
    }
    let idle = clusters
        .first()
        .and_then(|c| plan.cluster(&c.cluster))
        .and_then(|c| c.policy.connection_pool.as_ref())
        .and_then(|cp| cp.tcp.as_ref())
        .and_then(|t| t.idle_timeout)
        .map_or("3600s".into(), |d| d.to_string());
    m.insert("idle_timeout".into(), json!(idle));
    m.insert("access_log".into(), access_logs(opts));
    typed(
        "envoy.filters.network.tcp_proxy",
        "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
        Value::Object(m),
    )
}
