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

pub fn listener(plan: &Plan, out: &Outbound, opts: &EnvoyOptions) -> Value {
    let (host, port) = opts.bind.get(&OUTBOUND_PORT).unwrap_or(&opts.outbound).clone();
    let rc = routes::route_config_of(ROUTE_CONFIG, virtual_hosts(plan, out), false);
    json!({
        "name": "virtualOutbound",
        "address": address(&host, u32::from(port)),
        "traffic_direction": "OUTBOUND",
        "filter_chains": [{"name": "virtualOutbound-http", "filters": [hcm("outbound_0.0.0.0_15001", rc, false, opts)]}],
    })
}
