//! The sidecar role as an explicit proxy: one listener (istiod's `virtualOutbound` port, 15001)
//! whose route config holds every outbound route table, domains written with their port (a bare
//! host means port 80), CONNECT routes for the TCP services, and the catch-all that
//! `outboundTrafficPolicy` decides: `allow_any` to PassthroughCluster or `block_all` (502).

use serde_json::{json, Value};

use crate::api::mesh::OutboundTrafficMode;
use crate::plan::{Outbound, Plan};

use super::clusters::PASSTHROUGH;
use super::listeners::hcm;
use super::routes::{self, TableContext};
use super::{address, EnvoyOptions};

pub const OUTBOUND_PORT: u32 = 15001;
const ROUTE_CONFIG: &str = "outbound-proxy";

fn connect_route(name: &str, cluster: &str) -> Value {
    json!({
        "name": name,
        "match": {"connect_matcher": {}},
        "route": {"cluster": cluster, "timeout": "0s", "upgrade_configs": [{"upgrade_type": "CONNECT", "connect_config": {}}]},
    })
}

/// The last virtual host: where requests for hosts outside the registry go.
fn catch_all(plan: &Plan) -> Value {
    let routes = match plan.mesh.outbound_traffic_policy {
        OutboundTrafficMode::RegistryOnly => json!([
            {"name": "block_all", "match": {"connect_matcher": {}}, "direct_response": {"status": 502}},
            {"name": "block_all", "match": {"prefix": "/"}, "direct_response": {"status": 502}},
        ]),
        OutboundTrafficMode::AllowAny | OutboundTrafficMode::AllowAnyDynamicDns => json!([
            connect_route("allow_any", PASSTHROUGH),
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
    for (host_port, cluster) in &out.tcp {
        vhosts.push(json!({
            "name": host_port,
            "domains": [host_port],
            "routes": [connect_route(host_port, cluster)],
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
