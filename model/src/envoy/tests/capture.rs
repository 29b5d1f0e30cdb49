//! The captured sidecar's shape: `virtualOutbound` hands connections to per-port listeners by
//! their original destination; each chooses by address, server name and sniffed HTTP.

use serde_json::json;

use super::listener;
use crate::envoy::{bootstrap, EnvoyOptions};
use crate::plan::{build, PlanOptions};

fn entry(name: &str, rest: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}, namespace: default}}\n\
         spec:\n  hosts: [{name}.example.com]\n  location: MESH_EXTERNAL\n{rest}---\n"
    )
}

fn captured(mesh: Option<&str>) -> serde_json::Value {
    let yaml = [
        entry("api", "  resolution: DNS\n  ports: [{number: 80, name: http, protocol: HTTP}, {number: 443, name: tls, protocol: TLS}]\n"),
        entry("db", "  addresses: [10.9.0.0/24]\n  resolution: NONE\n  ports: [{number: 5432, name: pg, protocol: TCP}, {number: 8080, name: web, protocol: HTTP}]\n"),
        entry("cache", "  resolution: DNS\n  ports: [{number: 6379, name: redis, protocol: TCP}]\n"),
    ]
    .concat();
    let mut loaded = crate::load_str("t.yaml", &yaml);
    if let Some(mesh) = mesh {
        crate::config::apply_mesh_str(&mut loaded, "mesh.yaml", mesh);
    }
    let opts = PlanOptions {
        labels: Some([("app".to_string(), "sleep".to_string())].into()),
        namespace: None,
        sidecar: true,
    };
    let (plan, _) = build(&loaded.config, &opts);
    let eopts = EnvoyOptions {
        capture: true,
        ..Default::default()
    };
    bootstrap(&plan, &eopts)
}

fn tcp_cluster(filters: &serde_json::Value) -> String {
    filters[0]["typed_config"]["cluster"].as_str().unwrap_or("").to_string()
}

#[test]
fn virtual_outbound_hands_connections_to_the_listener_of_their_port() {
    let b = captured(None);
    let vo = listener(&b, "virtualOutbound");
    assert_eq!(vo["use_original_dst"], true);
    assert_eq!(tcp_cluster(&vo["filter_chains"][0]["filters"]), "PassthroughCluster");
    let names: Vec<&str> = b["static_resources"]["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["name"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "virtualOutbound",
            "0.0.0.0_80",
            "0.0.0.0_443",
            "0.0.0.0_5432",
            "0.0.0.0_6379",
            "0.0.0.0_8080"
        ]
    );
    for name in &names[1..] {
        assert_eq!(listener(&b, name)["bind_to_port"], false, "{name}");
    }
    // Captured, the original destination is the connection's, not the request's authority.
    let pass = super::cluster(&b, "PassthroughCluster");
    assert_eq!(pass["type"], "ORIGINAL_DST");
    assert!(pass.get("original_dst_lb_config").is_none(), "{pass}");
    assert!(super::cluster(&b, "outbound|5432||db.example.com")
        .get("original_dst_lb_config")
        .is_none());
}

#[test]
fn each_port_chooses_by_address_server_name_and_sniffed_http() {
    let b = captured(None);
    let http = listener(&b, "0.0.0.0_80");
    let chains = http["filter_chains"].as_array().unwrap();
    assert_eq!(chains.len(), 1);
    assert_eq!(
        chains[0]["filter_chain_match"]["application_protocols"],
        json!(["http/1.0", "http/1.1", "h2c"])
    );
    let hcm = &chains[0]["filters"][0]["typed_config"];
    let vhosts = hcm["route_config"]["virtual_hosts"].as_array().unwrap();
    assert_eq!(vhosts.last().unwrap()["name"], "allow_any");
    assert!(vhosts
        .iter()
        .any(|v| v["domains"].as_array().unwrap().contains(&json!("api.example.com"))));
    // Not HTTP: passed through (ALLOW_ANY).
    assert_eq!(
        tcp_cluster(&http["default_filter_chain"]["filters"]),
        "PassthroughCluster"
    );

    let tls = listener(&b, "0.0.0.0_443");
    let chain = &tls["filter_chains"][0];
    assert_eq!(
        chain["filter_chain_match"],
        json!({"server_names": ["api.example.com"], "transport_protocol": "tls"})
    );
    assert_eq!(tcp_cluster(&chain["filters"]), "outbound|443||api.example.com");

    let db = listener(&b, "0.0.0.0_5432");
    let chain = &db["filter_chains"][0];
    assert_eq!(
        chain["filter_chain_match"],
        json!({"prefix_ranges": [{"address_prefix": "10.9.0.0", "prefix_len": 24}]})
    );
    assert_eq!(tcp_cluster(&chain["filters"]), "outbound|5432||db.example.com");
    assert_eq!(
        db["filter_chains"].as_array().unwrap().len(),
        1,
        "no server-name chain for an addressed service"
    );

    // HTTP to an address of a service: its own chain, routed by the port's table.
    let web = listener(&b, "0.0.0.0_8080");
    let chains = web["filter_chains"].as_array().unwrap();
    assert_eq!(chains.len(), 2, "{web}");
    assert_eq!(
        chains[0]["filter_chain_match"]["prefix_ranges"][0]["address_prefix"],
        "10.9.0.0"
    );
    assert_eq!(
        chains[0]["filters"][0]["name"],
        "envoy.filters.network.http_connection_manager"
    );
    assert_eq!(
        chains[1]["filter_chain_match"]["application_protocols"],
        json!(["http/1.0", "http/1.1", "h2c"])
    );
    // Inspectors only where a chain needs them.
    let inspectors = |l: &serde_json::Value| -> Vec<String> {
        l["listener_filters"]
            .as_array()
            .map(|a| a.iter().map(|f| f["name"].as_str().unwrap_or("").to_string()).collect())
            .unwrap_or_default()
    };
    assert_eq!(inspectors(http), ["envoy.filters.listener.http_inspector"]);
    assert_eq!(inspectors(tls), ["envoy.filters.listener.tls_inspector"]);
    assert!(inspectors(db).is_empty());
    assert!(db.get("listener_filters_timeout").is_none());
    // MeshConfig's protocolDetectionTimeout, 0 (no limit) by default, as istiod sets it.
    assert_eq!(http["listener_filters_timeout"], "0s");
    assert_eq!(http["continue_on_listener_filters_timeout"], true);
    // The port's one TCP service without addresses takes what no chain does.
    let cache = listener(&b, "0.0.0.0_6379");
    assert_eq!(
        tcp_cluster(&cache["default_filter_chain"]["filters"]),
        "outbound|6379||cache.example.com"
    );
    assert!(cache["filter_chains"].as_array().unwrap().is_empty(), "{cache}");
    assert!(inspectors(cache).is_empty());
}

#[test]
fn registry_only_sends_the_rest_to_the_black_hole() {
    let b = captured(Some(
        "outboundTrafficPolicy: {mode: REGISTRY_ONLY}\nprotocolDetectionTimeout: 100ms\n",
    ));
    assert_eq!(listener(&b, "0.0.0.0_80")["listener_filters_timeout"], "0.100s");
    let vo = listener(&b, "virtualOutbound");
    assert_eq!(tcp_cluster(&vo["filter_chains"][0]["filters"]), "BlackHoleCluster");
    let http = listener(&b, "0.0.0.0_80");
    assert_eq!(
        tcp_cluster(&http["default_filter_chain"]["filters"]),
        "BlackHoleCluster"
    );
    let vhosts = http["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(vhosts.last().unwrap()["name"], "block_all");
}
