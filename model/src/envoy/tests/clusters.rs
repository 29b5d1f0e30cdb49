//! Clusters as Envoy config: endpoints, load balancing, breakers and outliers, h2 for gRPC,
//! DNS and pipes, TLS origination.

use serde_json::json;

use super::routes::*;
use super::*;

#[test]
fn clusters_endpoints_lb_breakers_and_outliers() {
    let dr = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: ratings, namespace: default}\nspec:\n  \
              host: ratings\n  trafficPolicy:\n    loadBalancer: {simple: ROUND_ROBIN}\n    \
              connectionPool: {tcp: {maxConnections: 1, connectTimeout: 2s}, http: {http1MaxPendingRequests: 1, http2MaxRequests: 9, maxRetries: 4, idleTimeout: 30s, maxRequestsPerConnection: 7}}\n    \
              outlierDetection: {consecutive5xxErrors: 3, interval: 5s, baseEjectionTime: 1m, maxEjectionPercent: 50}\n---\n";
    let b = export(&format!("{GATEWAY_80}{}{dr}", service("ratings", 9080, "HTTP")));
    let c = cluster(&b, "outbound|9080||ratings.default.svc.cluster.local");
    assert_eq!(c["type"], "STATIC");
    assert_eq!(c["lb_policy"], "ROUND_ROBIN");
    assert_eq!(c["connect_timeout"], "2s");
    assert_eq!(
        c["load_assignment"]["endpoints"][0]["lb_endpoints"],
        json!([
            {"endpoint": {"address": {"socket_address": {"address": "10.0.0.1", "port_value": 9080}}}, "load_balancing_weight": 1},
            {"endpoint": {"address": {"socket_address": {"address": "10.0.0.2", "port_value": 9080}}}, "load_balancing_weight": 3},
        ])
    );
    assert_eq!(
        c["circuit_breakers"]["thresholds"][0],
        json!({"max_connections": 1, "max_pending_requests": 1, "max_requests": 9, "max_retries": 4, "track_remaining": true})
    );
    assert_eq!(
        c["outlier_detection"],
        json!({"enforcing_success_rate": 0, "consecutive_5xx": 3, "enforcing_consecutive_5xx": 100,
               "interval": "5s", "base_ejection_time": "60s", "max_ejection_percent": 50})
    );
    assert_eq!(c["common_lb_config"]["healthy_panic_threshold"]["value"], 0);
    let opts = &c["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
    assert_eq!(opts["explicit_http_config"], json!({"http_protocol_options": {}}));
    assert_eq!(
        opts["common_http_protocol_options"],
        json!({"idle_timeout": "30s", "max_requests_per_connection": 7})
    );
    // Istio's defaults: no limits, LEAST_REQUEST.
    let b = export(&format!("{GATEWAY_80}{}", service("plain", 80, "HTTP")));
    let c = cluster(&b, "outbound|80||plain.default.svc.cluster.local");
    assert_eq!(c["lb_policy"], "LEAST_REQUEST");
    assert_eq!(c["connect_timeout"], "10s");
    assert_eq!(
        c["circuit_breakers"]["thresholds"][0]["max_connections"],
        4_294_967_295u64
    );
    assert!(c.get("outlier_detection").is_none());
    assert!(cluster(&b, "BlackHoleCluster")["load_assignment"]["endpoints"] == json!([]));
    assert_eq!(cluster(&b, "PassthroughCluster")["type"], "ORIGINAL_DST");
}

#[test]
fn grpc_ports_speak_h2_and_consistent_hashes_ring() {
    let dr = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: echo, namespace: default}\nspec:\n  \
              host: echo\n  trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x-user, ringHash: {minimumRingSize: 2048}}}}\n---\n";
    let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: vs, namespace: default}\nspec:\n  \
              hosts: ['*']\n  gateways: [istio-system/gw]\n  http:\n  - route: [{destination: {host: echo, port: {number: 7070}}}]\n";
    let b = export(&format!("{GATEWAY_80}{}{dr}{vs}", service("echo", 7070, "GRPC")));
    let c = cluster(&b, "outbound|7070||echo.default.svc.cluster.local");
    assert_eq!(c["lb_policy"], "RING_HASH");
    assert_eq!(c["ring_hash_lb_config"], json!({"minimum_ring_size": 2048}));
    assert_eq!(
        c["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
            ["explicit_http_config"],
        json!({"http2_protocol_options": {}})
    );
    let r = only_route(&b);
    assert_eq!(
        r["route"]["hash_policy"],
        json!([{"header": {"header_name": "x-user"}}])
    );
    // Consistent hashing and "other hosts first" do not mix (istiod drops the predicate).
    assert!(r["route"]["retry_policy"].get("retry_host_predicate").is_none());
}

#[test]
fn dns_services_resolve_and_unix_endpoints_are_pipes() {
    let se = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: ext, namespace: default}\nspec:\n  \
              hosts: [api.example.com]\n  location: MESH_EXTERNAL\n  resolution: DNS\n  ports: [{number: 443, name: https, protocol: TLS}]\n---\n\
              apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: uds, namespace: default}\nspec:\n  \
              hosts: [uds.example.com]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  \
              endpoints: [{address: 'unix:///var/run/app.sock'}]\n---\n";
    let b = export(&format!("{GATEWAY_80}{se}"));
    let c = cluster(&b, "outbound|443||api.example.com");
    assert_eq!(c["type"], "STRICT_DNS");
    assert_eq!(c["dns_lookup_family"], "V4_ONLY");
    // MeshConfig's default dnsRefreshRate, and the answer's TTL honoured, as istiod sets them.
    assert_eq!(c["dns_refresh_rate"], "60s");
    assert_eq!(c["respect_dns_ttl"], true);
    assert_eq!(
        c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"],
        json!({"socket_address": {"address": "api.example.com", "port_value": 443}})
    );
    assert!(
        c.get("typed_extension_protocol_options").is_none(),
        "TLS port: no HTTP options"
    );
    let c = cluster(&b, "outbound|80||uds.example.com");
    assert!(c.get("dns_refresh_rate").is_none(), "a pipe is not resolved");
    assert_eq!(
        c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"],
        json!({"pipe": {"path": "/var/run/app.sock"}})
    );
}

#[test]
fn tls_origination_simple_mutual_and_insecure() {
    let se = |h: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {h}, namespace: default}}\nspec:\n  \
             hosts: [{h}.example.com]\n  location: MESH_EXTERNAL\n  resolution: DNS\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n---\n"
        )
    };
    let dr = |h: &str, tls: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: {h}, namespace: default}}\nspec:\n  \
             host: {h}.example.com\n  trafficPolicy: {{tls: {tls}}}\n---\n"
        )
    };
    let yaml = format!(
        "{GATEWAY_80}{}{}{}{}{}{}",
        se("s"),
        dr(
            "s",
            "{mode: SIMPLE, caCertificates: /ca.pem, sni: s.example.com, subjectAltNames: [s.example.com]}"
        ),
        se("m"),
        dr(
            "m",
            "{mode: MUTUAL, clientCertificate: /c.crt, privateKey: /c.key, caCertificates: /ca.pem}"
        ),
        se("i"),
        dr("i", "{mode: SIMPLE, insecureSkipVerify: true}")
    );
    let b = export(&yaml);
    let ts = |h: &str| cluster(&b, &format!("outbound|80||{h}.example.com"))["transport_socket"].clone();
    assert_eq!(
        ts("s")["typed_config"],
        json!({
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": "s.example.com",
            "common_tls_context": {"validation_context": {"trusted_ca": {"filename": "/ca.pem"},
                "match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": "s.example.com"}}]}},
        })
    );
    let m = ts("m");
    assert_eq!(
        m["typed_config"]["common_tls_context"]["tls_certificates"],
        json!([{"certificate_chain": {"filename": "/c.crt"}, "private_key": {"filename": "/c.key"}}])
    );
    // No `sni`: Envoy takes it from the request's Host, and checks the SAN against it.
    let opts = &cluster(&b, "outbound|80||m.example.com")["typed_extension_protocol_options"]
        ["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
    assert_eq!(
        opts["upstream_http_protocol_options"],
        json!({"auto_sni": true, "auto_san_validation": true})
    );
    assert!(ts("i")["typed_config"]["common_tls_context"]
        .get("validation_context")
        .is_none());
}
