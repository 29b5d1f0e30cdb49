//! The sidecar role as an explicit proxy: one listener (istiod's `virtualOutbound` port, 15001)
//! whose route config holds every outbound route table, domains written with their port (a bare
//! host means port 80), CONNECT routes for the TCP services, and the catch-all that
//! `outboundTrafficPolicy` decides: `allow_any` to PassthroughCluster or `block_all` (502).

use serde_json::{json, Value};

use crate::api::mesh::OutboundTrafficMode;
use crate::plan::{L4Route, Outbound, Plan};

use super::clusters::PASSTHROUGH;
use super::listeners::hcm;
use super::routes::{self, TableContext};
use super::{address, EnvoyOptions};

pub const OUTBOUND_PORT: u32 = 15001;
const ROUTE_CONFIG: &str = "outbound-proxy";

/// A CONNECT route to `target`: `{"cluster": …}` or `{"weighted_clusters": …}`.
fn connect_route(name: &str, target: Value) -> Value {
    let mut action = json!({"timeout": "0s", "upgrade_configs": [{"upgrade_type": "CONNECT", "connect_config": {}}]});
    if let (Some(a), Value::Object(t)) = (action.as_object_mut(), target) {
        a.extend(t);
    }
    json!({"name": name, "match": {"connect_matcher": {}}, "route": action})
}

/// CONNECT along an L4 route: its one cluster, or its weighted clusters.
fn connect_l4(name: &str, route: &L4Route) -> Value {
    match route.clusters.as_slice() {
        [one] => connect_route(name, json!({"cluster": one.cluster})),
        many => {
            let clusters: Vec<Value> = many
                .iter()
                .map(|c| json!({"name": c.cluster, "weight": c.weight}))
                .collect();
            connect_route(name, json!({"weighted_clusters": {"clusters": clusters}}))
        }
    }
}

/// The last virtual host: where requests for hosts outside the registry go.
fn catch_all(plan: &Plan) -> Value {
    let routes = match plan.mesh.outbound_traffic_policy {
        OutboundTrafficMode::RegistryOnly => json!([
            {"name": "block_all", "match": {"connect_matcher": {}}, "direct_response": {"status": 502}},
            {"name": "block_all", "match": {"prefix": "/"}, "direct_response": {"status": 502}},
        ]),
        OutboundTrafficMode::AllowAny | OutboundTrafficMode::AllowAnyDynamicDns => json!([
            connect_route("allow_any", json!({"cluster": PASSTHROUGH})),
            {"name": "allow_any", "match": {"prefix": "/"}, "route": {"cluster": PASSTHROUGH, "timeout": "0s"}},
        ]),
    };
    let name = match plan.mesh.outbound_traffic_policy {
        OutboundTrafficMode::RegistryOnly => "block_all",
        _ => "allow_any",
    };
    json!({"name": name, "domains": ["*"], "routes": routes})
}

/// Virtual hosts of every outbound table; a host's bare name only stands for port 80.
fn virtual_hosts(plan: &Plan, out: &Outbound) -> Vec<Value> {
    let mut vhosts = Vec::new();
    for (port, name) in &out.route_tables {
        let Some(table) = plan.route_table(name) else { continue };
        let cx = TableContext {
            port: *port,
            tls: false,
            gateway: false,
        };
        for vh in &table.virtual_hosts {
            let mut vh = vh.clone();
            vh.domains.retain(|d| d.contains(':') || *port == 80);
            vhosts.push(routes::virtual_host(plan, &vh, cx));
        }
    }
    for (host_port, route) in &out.tcp {
        vhosts.push(json!({
            "name": host_port,
            "domains": [host_port],
            "routes": [connect_l4(host_port, route)],
        }));
    }
    vhosts.push(catch_all(plan));
    vhosts
}

/// Where `virtualOutbound` listens.
fn outbound_address(opts: &EnvoyOptions) -> Value {
    let (host, port) = opts.bind.get(&OUTBOUND_PORT).unwrap_or(&opts.outbound);
    address(host, u32::from(*port))
}

pub fn listener(plan: &Plan, out: &Outbound, opts: &EnvoyOptions) -> Value {
    let rc = routes::route_config_of(ROUTE_CONFIG, virtual_hosts(plan, out), false);
    json!({
        "name": "virtualOutbound",
        "address": outbound_address(opts),
        "traffic_direction": "OUTBOUND",
        "filter_chains": [{"name": "virtualOutbound-http", "filters": [hcm("outbound_0.0.0.0_15001", rc, false, opts)]}],
    })
}

/// The captured sidecar (istiod's shape): `virtualOutbound` on 15001 hands each redirected
/// connection to the listener of its original destination port (`use_original_dst`), or, with
/// none, passes it through or drops it. Each `0.0.0.0_<port>` listener (not bound) chooses a
/// chain by destination address (services with `addresses`), TLS server name, and sniffed HTTP;
/// the rest goes to the port's one TCP service, else through or nowhere.
pub fn captured(plan: &Plan, out: &Outbound, opts: &EnvoyOptions) -> Vec<Value> {
    let mut listeners = vec![json!({
        "name": "virtualOutbound",
        "address": outbound_address(opts),
        "use_original_dst": true,
        "traffic_direction": "OUTBOUND",
        "filter_chains": [{"name": "virtualOutbound-catchall-tcp", "filters": [outside(plan, opts)]}],
    })];
    let mut ports: std::collections::BTreeSet<u32> = out.route_tables.keys().copied().collect();
    ports.extend(out.tcp.keys().filter_map(|k| k.rsplit_once(':')?.1.parse::<u32>().ok()));
    ports.extend(out.addresses.iter().map(|a| a.port));
    listeners.extend(ports.into_iter().map(|p| port_listener(plan, out, p, opts)));
    listeners
}

/// Outside the registry: PassthroughCluster (ALLOW_ANY) or BlackHoleCluster (REGISTRY_ONLY).
fn outside(plan: &Plan, opts: &EnvoyOptions) -> Value {
    let route = match plan.mesh.outbound_traffic_policy {
        OutboundTrafficMode::RegistryOnly => None,
        _ => Some(L4Route::to(PASSTHROUGH)),
    };
    super::listeners::tcp_proxy(plan, route.as_ref(), opts)
}

const HTTP_PROTOCOLS: [&str; 3] = ["http/1.0", "http/1.1", "h2c"];

fn port_listener(plan: &Plan, out: &Outbound, port: u32, opts: &EnvoyOptions) -> Value {
    let name = format!("0.0.0.0_{port}");
    let http = out.route_tables.get(&port).map(|table| {
        let mut vhosts = Vec::new();
        if let Some(t) = plan.route_table(table) {
            let cx = TableContext {
                port,
                tls: false,
                gateway: false,
            };
            vhosts.extend(t.virtual_hosts.iter().map(|vh| routes::virtual_host(plan, vh, cx)));
        }
        vhosts.push(catch_all(plan));
        hcm(
            &format!("outbound_0.0.0.0_{port}"),
            routes::route_config_of(&port.to_string(), vhosts, false),
            false,
            opts,
        )
    });
    let mut chains = Vec::new();
    let mut by_name = false;
    for a in out.addresses.iter().filter(|a| a.port == port) {
        let (ip, len) = a.address.split_once('/').unwrap_or((&a.address, ""));
        let len: u32 = len.parse().unwrap_or(if ip.contains(':') { 128 } else { 32 });
        let range = json!([{"address_prefix": ip, "prefix_len": len}]);
        let host_port = format!("{}:{port}", a.host);
        match (&http, a.http) {
            (Some(hcm), true) => chains.push(json!({
                "name": format!("{}_{port}", a.address),
                "filter_chain_match": {"prefix_ranges": range},
                "filters": [hcm],
            })),
            _ => chains.push(json!({
                "name": format!("{}_{port}", a.address),
                "filter_chain_match": {"prefix_ranges": range},
                "filters": [super::listeners::tcp_proxy(plan, out.tcp.get(&host_port), opts)],
            })),
        }
    }
    for (host_port, route) in &out.tcp {
        let Some((host, p)) = host_port.rsplit_once(':') else {
            continue;
        };
        // A service with addresses (on all its ports) is matched by them, the port's TCP
        // service by the port (the default chain); any other by the server name it is.
        let addressed = out.addresses.iter().any(|a| a.host == host);
        let by_port = out.tcp_ports.get(&port) == Some(host_port);
        if p == port.to_string() && !addressed && !by_port {
            by_name = true;
            chains.push(json!({
                "name": host_port,
                "filter_chain_match": {"server_names": [host], "transport_protocol": "tls"},
                "filters": [super::listeners::tcp_proxy(plan, Some(route), opts)],
            }));
        }
    }
    if let Some(hcm) = &http {
        chains.push(json!({
            "name": format!("{name}-http"),
            "filter_chain_match": {"application_protocols": HTTP_PROTOCOLS},
            "filters": [hcm],
        }));
    }
    let default = match out.tcp_ports.get(&port) {
        Some(host_port) => super::listeners::tcp_proxy(plan, out.tcp.get(host_port), opts),
        None => outside(plan, opts),
    };
    // Inspectors only where a chain needs them, as istiod adds them: a connection to a plain TCP
    // port is proxied at once (an inspector closes a connection whose client half-closes first).
    let mut inspectors = Vec::new();
    if by_name {
        inspectors.push(super::typed(
            "envoy.filters.listener.tls_inspector",
            "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector",
            json!({}),
        ));
    }
    if http.is_some() {
        inspectors.push(super::typed(
            "envoy.filters.listener.http_inspector",
            "envoy.extensions.filters.listener.http_inspector.v3.HttpInspector",
            json!({}),
        ));
    }
    let mut l = json!({
        "name": name,
        "address": address("0.0.0.0", port),
        "bind_to_port": false,
        "traffic_direction": "OUTBOUND",
        "filter_chains": chains,
        "default_filter_chain": {"name": format!("{name}-default"), "filters": [default]},
    });
    if !inspectors.is_empty() {
        l["listener_filters"] = json!(inspectors);
        // MeshConfig's protocolDetectionTimeout, as istiod sets it ("0s", the default: none).
        l["listener_filters_timeout"] = json!(plan.mesh.protocol_detection_timeout.to_string());
        l["continue_on_listener_filters_timeout"] = json!(true);
    }
    l
}
