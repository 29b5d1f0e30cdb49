//! Listeners as Envoy config: TLS termination by SNI, TCP and passthrough, the black hole,
//! bound addresses and the admin, the sidecar's explicit proxy, and the config dump.

use serde_json::json;

use super::routes::*;
use super::*;

#[test]
fn tls_termination_chains_by_sni() {
    let gw = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: istio-system}\nspec:\n  \
              selector: {istio: ingressgateway}\n  servers:\n  \
              - port: {number: 443, name: https-a, protocol: HTTPS}\n    hosts: [a.example.com]\n    \
                tls: {mode: SIMPLE, serverCertificate: /a.crt, privateKey: /a.key, minProtocolVersion: TLSV1_3, cipherSuites: [ECDHE-RSA-AES256-GCM-SHA384]}\n  \
              - port: {number: 443, name: https-m, protocol: HTTPS}\n    hosts: ['*.m.example.com']\n    \
                tls: {mode: MUTUAL, serverCertificate: /m.crt, privateKey: /m.key, caCertificates: /ca.pem, subjectAltNames: [client.example.com]}\n  \
              - port: {number: 443, name: https-o, protocol: HTTPS}\n    hosts: ['*']\n    \
                tls: {mode: OPTIONAL_MUTUAL, credentialName: cred}\n---\n";
    let opts = EnvoyOptions {
        credentials: Some("/creds".into()),
        ..Default::default()
    };
    let b = export_with(
        &format!(
            "{gw}{}",
            virtual_service(TO_V1.replacen("    route", "  - route", 1).as_str())
        ),
        false,
        &opts,
    );
    let l = listener(&b, "0.0.0.0_443");
    assert_eq!(l["listener_filters"][0]["name"], "envoy.filters.listener.tls_inspector");
    let chains = l["filter_chains"].as_array().unwrap();
    assert_eq!(chains.len(), 3);
    let a = &chains[0];
    assert_eq!(a["name"], "https.443.https-a.gw.istio-system");
    assert_eq!(a["filter_chain_match"], json!({"server_names": ["a.example.com"]}));
    let ctx = &a["transport_socket"]["typed_config"];
    assert_eq!(ctx["require_client_certificate"], false);
    assert_eq!(
        ctx["common_tls_context"]["tls_params"],
        json!({"tls_minimum_protocol_version": "TLSv1_3", "tls_maximum_protocol_version": "TLSv1_3", "cipher_suites": ["ECDHE-RSA-AES256-GCM-SHA384"]})
    );
    assert_eq!(ctx["common_tls_context"]["alpn_protocols"], json!(["h2", "http/1.1"]));
    assert_eq!(
        a["filters"][0]["typed_config"]["route_config"]["name"],
        "https.443.https-a.gw.istio-system"
    );
    assert_eq!(
        a["filters"][0]["typed_config"]["stat_prefix"],
        "https.443.https-a.gw.istio-system"
    );
    let m = &chains[1]["transport_socket"]["typed_config"];
    assert_eq!(m["require_client_certificate"], true);
    assert_eq!(
        m["common_tls_context"]["validation_context"],
        json!({"trusted_ca": {"filename": "/ca.pem"}, "match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": "client.example.com"}}]})
    );
    let o = &chains[2];
    assert!(o.get("filter_chain_match").is_none(), "`*` takes any SNI and none");
    let octx = &o["transport_socket"]["typed_config"];
    assert_eq!(octx["require_client_certificate"], false);
    assert_eq!(
        octx["common_tls_context"]["tls_certificates"],
        json!([{"certificate_chain": {"filename": "/creds/cred/tls.crt"}, "private_key": {"filename": "/creds/cred/tls.key"}}])
    );
    assert_eq!(
        octx["common_tls_context"]["validation_context"]["trusted_ca"],
        json!({"filename": "/creds/cred/ca.crt"})
    );
}

#[test]
fn tcp_weighted_passthrough_and_auto_passthrough() {
    let gw = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: istio-system}\nspec:\n  \
              selector: {istio: ingressgateway}\n  servers:\n  \
              - port: {number: 31400, name: tcp, protocol: TCP}\n    hosts: ['*']\n  \
              - port: {number: 15443, name: tls, protocol: TLS}\n    hosts: [pass.example.com, other.example.com]\n    tls: {mode: PASSTHROUGH}\n  \
              - port: {number: 15444, name: auto, protocol: TLS}\n    hosts: ['*.svc.cluster.local']\n    tls: {mode: AUTO_PASSTHROUGH}\n---\n";
    let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: t, namespace: default}\nspec:\n  \
              hosts: ['*']\n  gateways: [istio-system/gw]\n  tcp:\n  - match: [{port: 31400}]\n    route:\n    \
              - {destination: {host: tcp, port: {number: 9000}}, weight: 80}\n    - {destination: {host: pass, port: {number: 443}}, weight: 20}\n  \
              tls:\n  - match: [{port: 15443, sniHosts: [pass.example.com]}]\n    route: [{destination: {host: pass, port: {number: 443}}}]\n---\n";
    let b = export(&format!(
        "{gw}{vs}{}{}",
        service("tcp", 9000, "TCP"),
        service("pass", 443, "TLS")
    ));
    let tcp = &listener(&b, "0.0.0.0_31400")["filter_chains"][0]["filters"][0];
    assert_eq!(tcp["name"], "envoy.filters.network.tcp_proxy");
    assert_eq!(
        tcp["typed_config"]["weighted_clusters"],
        json!({"clusters": [{"name": "outbound|9000||tcp.default.svc.cluster.local", "weight": 80},
                             {"name": "outbound|443||pass.default.svc.cluster.local", "weight": 20}]})
    );
    assert_eq!(tcp["typed_config"]["idle_timeout"], "3600s");
    let pass = &listener(&b, "0.0.0.0_15443")["filter_chains"];
    assert_eq!(
        pass.as_array().map(Vec::len),
        Some(1),
        "one chain per matching tls rule"
    );
    assert_eq!(
        pass[0]["filter_chain_match"],
        json!({"server_names": ["pass.example.com"]})
    );
    assert!(pass[0].get("transport_socket").is_none());
    assert_eq!(
        pass[0]["filters"][0]["typed_config"]["cluster"],
        "outbound|443||pass.default.svc.cluster.local"
    );
    let auto = listener(&b, "0.0.0.0_15444")["filter_chains"].as_array().unwrap();
    let snis: Vec<&Value> = auto
        .iter()
        .map(|c| &c["filter_chain_match"]["server_names"][0])
        .collect();
    assert!(
        snis.contains(&&json!("outbound_.9000_._.tcp.default.svc.cluster.local")),
        "{snis:?}"
    );
    assert!(
        snis.contains(&&json!("outbound_.443_._.pass.default.svc.cluster.local")),
        "{snis:?}"
    );
}

#[test]
fn a_tcp_server_without_a_rule_goes_to_the_black_hole() {
    let gw = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: istio-system}\nspec:\n  \
              selector: {istio: ingressgateway}\n  servers:\n  - port: {number: 31400, name: tcp, protocol: TCP}\n    hosts: ['*']\n---\n";
    let b = export(gw);
    assert_eq!(
        listener(&b, "0.0.0.0_31400")["filter_chains"][0]["filters"][0]["typed_config"]["cluster"],
        "BlackHoleCluster"
    );
}

#[test]
fn ports_can_be_bound_elsewhere_and_admin_moved() {
    let opts = EnvoyOptions {
        admin: ("127.0.0.1".into(), 0),
        bind: [(80, ("127.0.0.1".to_string(), 0))].into(),
        access_log: None,
        ..Default::default()
    };
    let b = export_with(
        &format!(
            "{GATEWAY_80}{}",
            virtual_service(TO_V1.replacen("    route", "  - route", 1).as_str())
        ),
        false,
        &opts,
    );
    let l = listener(&b, "0.0.0.0_80");
    assert_eq!(
        l["address"]["socket_address"],
        json!({"address": "127.0.0.1", "port_value": 0})
    );
    assert_eq!(b["admin"]["address"]["socket_address"]["port_value"], 0);
    assert_eq!(
        l["filter_chains"][0]["filters"][0]["typed_config"]["access_log"],
        json!([])
    );
    assert!(b["node"]["id"]
        .as_str()
        .unwrap()
        .starts_with("router~127.0.0.1~ingressgateway.istio-system~"));
}

#[test]
fn the_sidecar_is_an_explicit_proxy_with_a_catch_all() {
    let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r, namespace: default}\nspec:\n  \
              hosts: [reviews.default.svc.cluster.local]\n  http:\n  - route: [{destination: {host: reviews.default.svc.cluster.local}}]\n---\n";
    let mesh_only = format!("{}{}{vs}", service("reviews", 8000, "HTTP"), service("db", 5432, "TCP"));
    let b = export_with(&mesh_only, true, &EnvoyOptions::default());
    let l = listener(&b, "virtualOutbound");
    assert_eq!(l["address"]["socket_address"]["port_value"], 15001);
    let t = &l["filter_chains"][0]["filters"][0]["typed_config"];
    assert_eq!(t["use_remote_address"], false);
    assert!(t["upgrade_configs"]
        .as_array()
        .unwrap()
        .contains(&json!({"upgrade_type": "CONNECT"})));
    let vhosts = t["route_config"]["virtual_hosts"].as_array().unwrap();
    let by = |name: &str| {
        vhosts
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("{name}"))
    };
    // Port 8000: the domain keeps its port; no bare host (that would mean port 80).
    assert_eq!(
        by("reviews.default.svc.cluster.local:8000")["domains"],
        json!(["reviews.default.svc.cluster.local:8000"])
    );
    let db = by("db.default.svc.cluster.local:5432");
    assert_eq!(db["routes"][0]["match"], json!({"connect_matcher": {}}));
    assert_eq!(
        db["routes"][0]["route"]["upgrade_configs"],
        json!([{"upgrade_type": "CONNECT", "connect_config": {}}])
    );
    // ALLOW_ANY (Istio's default): the catch-all goes to the original destination.
    let last = vhosts.last().unwrap();
    assert_eq!((&last["name"], &last["domains"]), (&json!("allow_any"), &json!(["*"])));
    assert_eq!(last["routes"][1]["route"]["cluster"], "PassthroughCluster");
    // REGISTRY_ONLY: 502 for anything outside the registry, CONNECT included.
    let loaded = {
        let mut l = crate::load_str("t.yaml", &mesh_only);
        crate::config::apply_mesh_str(&mut l, "mesh.yaml", "outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n");
        l
    };
    let (plan, _) = build(
        &loaded.config,
        &PlanOptions {
            labels: Some([("app".to_string(), "sleep".to_string())].into()),
            namespace: None,
            sidecar: true,
        },
    );
    let b = bootstrap(&plan, &EnvoyOptions::default());
    let vhosts = listener(&b, "virtualOutbound")["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]
        ["virtual_hosts"]
        .clone();
    let last = vhosts.as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["name"], "block_all");
    assert_eq!(
        last["routes"],
        json!([
            {"name": "block_all", "match": {"connect_matcher": {}}, "direct_response": {"status": 502}},
            {"name": "block_all", "match": {"prefix": "/"}, "direct_response": {"status": 502}},
        ])
    );
}

#[test]
fn config_dump_has_envoys_admin_shape() {
    let loaded = crate::load_str("t.yaml", &format!("{GATEWAY_80}{}", service("plain", 80, "HTTP")));
    let (plan, _) = build(&loaded.config, &PlanOptions::default());
    let d = crate::envoy::config_dump(&plan, &EnvoyOptions::default(), "3", "2026-12-01T00:00:00Z");
    let types: Vec<&str> = d["configs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["@type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump",
            "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
            "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
            "type.googleapis.com/envoy.admin.v3.RoutesConfigDump",
        ]
    );
    assert_eq!(d["configs"][2]["static_listeners"][0]["listener"]["name"], "0.0.0.0_80");
    assert_eq!(
        d["configs"][3]["static_route_configs"][0]["route_config"]["name"],
        "http.80"
    );
    assert_eq!(d["configs"][1]["version_info"], "3");
    let clusters = d["configs"][1]["static_clusters"].as_array().unwrap();
    assert!(clusters
        .iter()
        .any(|c| c["cluster"]["name"] == "outbound|80||plain.default.svc.cluster.local"));
}
