//! Unit tests of the telemetry: labels, series and the scrape's text.

use super::*;
use crate::telemetry::labels::escape;

fn telemetry() -> Telemetry {
    let labels = BTreeMap::from([
        ("app".to_string(), "istio-ingressgateway".to_string()),
        ("service.istio.io/canonical-revision".to_string(), "rev-7".to_string()),
    ]);
    Telemetry::new(Identity::from_labels(&labels, Some("istio-system")))
}

fn scrape(t: Telemetry) -> String {
    scrape_shared(&std::sync::Arc::new(t))
}

pub(crate) fn scrape_shared(t: &std::sync::Arc<Telemetry>) -> String {
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(t.clone()));
    let mut o = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut o, &registry).unwrap_or_else(|e| panic!("{e}"));
    t.envoy_counters(&mut o);
    o
}

fn request(cluster: &str, code: u16) -> Request<'_> {
    Request {
        cluster,
        code,
        flags: "",
        grpc: false,
        grpc_status: None,
        duration_ms: 2.0,
        request_bytes: 3,
        response_bytes: 700,
        listener: 80,
    }
}

#[test]
fn a_clusters_name_gives_istios_destination_labels() {
    let d = destination("outbound|9080|v1|reviews.default.svc.cluster.local");
    assert_eq!(
        d,
        Destination {
            service: "reviews.default.svc.cluster.local",
            name: "reviews",
            namespace: "default",
            version: "v1"
        }
    );
    let d = destination("outbound|443||www.example.com");
    assert_eq!(
        (d.service, d.name, d.namespace, d.version),
        ("www.example.com", "www.example.com", "unknown", "unknown")
    );
    // A name with .svc. but no namespace before it is not a Kubernetes service.
    let d = destination("outbound|80||reviews.svc.example.com");
    assert_eq!((d.name, d.namespace), ("reviews.svc.example.com", "unknown"));
    assert_eq!(destination("BlackHoleCluster").service, "BlackHoleCluster");
    assert_eq!(destination("BlackHoleCluster").name, "BlackHoleCluster");
    assert_eq!(destination("").service, "unknown");
    assert_eq!(destination("a|b|c").service, "a|b|c");
}

#[test]
fn the_gateways_identity_comes_from_its_workload_labels() {
    let id = Identity::from_labels(&BTreeMap::new(), None);
    assert_eq!(
        (
            id.workload.as_str(),
            id.namespace.as_str(),
            id.app.as_str(),
            id.version.as_str()
        ),
        ("meshgate", "unknown", "unknown", "unknown")
    );
    assert_eq!(
        (id.canonical_service.as_str(), id.canonical_revision.as_str()),
        ("meshgate", "latest")
    );
    let labels = BTreeMap::from([
        ("app".to_string(), "gw".to_string()),
        ("version".to_string(), "v3".to_string()),
        ("service.istio.io/canonical-name".to_string(), "gateway".to_string()),
    ]);
    let id = Identity::from_labels(&labels, Some("edge"));
    assert_eq!(
        (
            id.workload.as_str(),
            id.namespace.as_str(),
            id.app.as_str(),
            id.version.as_str()
        ),
        ("gw", "edge", "gw", "v3")
    );
    assert_eq!(
        (id.canonical_service.as_str(), id.canonical_revision.as_str()),
        ("gateway", "v3")
    );
}

#[test]
fn requests_fill_istios_series_and_envoys_listener_stats() {
    let t = telemetry();
    let cluster = "outbound|9080|v1|reviews.default.svc.cluster.local";
    t.request(&request(cluster, 200));
    t.request(&request(cluster, 200));
    t.request(&Request {
        grpc: true,
        grpc_status: Some(99),
        flags: "UF",
        ..request(cluster, 503)
    });
    t.request(&request(cluster, 600));
    let o = scrape(t);
    let series = "reporter=\"source\",source_workload=\"istio-ingressgateway\",source_canonical_service=\"istio-ingressgateway\",\
source_canonical_revision=\"rev-7\",source_workload_namespace=\"istio-system\",source_principal=\"unknown\",\
source_app=\"istio-ingressgateway\",source_version=\"unknown\",source_cluster=\"unknown\",destination_workload=\"unknown\",\
destination_workload_namespace=\"default\",destination_principal=\"unknown\",destination_app=\"unknown\",\
destination_version=\"v1\",destination_service=\"reviews.default.svc.cluster.local\",destination_canonical_service=\"reviews\",\
destination_canonical_revision=\"v1\",destination_service_name=\"reviews\",destination_service_namespace=\"default\",\
destination_cluster=\"unknown\"";
    let ok = format!("{series},request_protocol=\"http\",response_code=\"200\",grpc_response_status=\"\",response_flags=\"-\",connection_security_policy=\"unknown\"");
    assert!(o.contains(&format!("istio_requests_total{{{ok}}} 2\n")), "{o}");
    assert!(
        o.contains(&format!("istio_request_duration_milliseconds_sum{{{ok}}} 4.0\n")),
        "{o}"
    );
    assert!(
        o.contains(&format!(
            "istio_request_duration_milliseconds_bucket{{{ok},le=\"1\"}} 0\n"
        )),
        "{o}"
    );
    assert!(
        o.contains(&format!(
            "istio_request_duration_milliseconds_bucket{{{ok},le=\"5\"}} 2\n"
        )),
        "{o}"
    );
    assert!(o.contains(&format!("istio_request_bytes_sum{{{ok}}} 6.0\n")), "{o}");
    assert!(o.contains(&format!("istio_response_bytes_sum{{{ok}}} 1400.0\n")), "{o}");
    // A gRPC status outside 0-16 is UNKNOWN (2).
    let failed = format!("{series},request_protocol=\"grpc\",response_code=\"503\",grpc_response_status=\"2\",response_flags=\"UF\",connection_security_policy=\"unknown\"");
    assert!(o.contains(&format!("istio_requests_total{{{failed}}} 1\n")), "{o}");
    assert!(
        o.contains(
            "# HELP istio_requests_total Requests, by Istio's standard labels\n# TYPE istio_requests_total counter\n"
        ),
        "{o}"
    );
    let listener = "http_conn_manager_prefix=\"outbound_0.0.0.0_80\"";
    assert!(
        o.contains(&format!("envoy_http_downstream_rq_total{{{listener}}} 4\n")),
        "{o}"
    );
    assert!(
        o.contains(&format!("envoy_http_downstream_rq_time_count{{{listener}}} 4\n")),
        "{o}"
    );
    for (class, n) in [(1, 0), (2, 2), (3, 0), (4, 0), (5, 1)] {
        let line = format!("envoy_http_downstream_rq{{response_code_class=\"{class}xx\",{listener}}} {n}\n");
        assert!(o.contains(&line), "{line} in {o}");
    }
    assert!(
        o.contains("# TYPE envoy_server_live gauge\nenvoy_server_live 1\n"),
        "{o}"
    );
}

#[test]
fn upstream_attempts_fill_envoys_cluster_stats() {
    let t = telemetry();
    let c = "outbound|80||a.example.com";
    for event in [
        Upstream::Response(200, 3.0),
        Upstream::Response(200, 30.0),
        Upstream::Response(503, 1.0),
        Upstream::Timeout,
        Upstream::ConnectFail,
        Upstream::ConnectFail,
        Upstream::Overflow,
        Upstream::Retry,
    ] {
        t.upstream(c, event);
    }
    t.upstream("outbound|80||b.example.com", Upstream::Retry);
    let o = scrape(t);
    let cl = "cluster_name=\"outbound|80||a.example.com\"";
    for line in [
        format!("envoy_cluster_upstream_rq_total{{{cl}}} 4\n"),
        format!("envoy_cluster_upstream_rq_time_count{{{cl}}} 3\n"),
        format!("envoy_cluster_upstream_rq_time_sum{{{cl}}} 34.0\n"),
        format!("envoy_cluster_upstream_rq{{response_code=\"200\",{cl}}} 2\n"),
        format!("envoy_cluster_upstream_rq{{response_code=\"503\",{cl}}} 1\n"),
        format!("envoy_cluster_upstream_rq{{response_code_class=\"2xx\",{cl}}} 2\n"),
        format!("envoy_cluster_upstream_rq{{response_code_class=\"5xx\",{cl}}} 1\n"),
        format!("envoy_cluster_upstream_rq_timeout{{{cl}}} 1\n"),
        format!("envoy_cluster_upstream_cx_connect_fail{{{cl}}} 2\n"),
        format!("envoy_cluster_upstream_rq_pending_overflow{{{cl}}} 1\n"),
        format!("envoy_cluster_upstream_rq_retry{{{cl}}} 1\n"),
        "envoy_cluster_upstream_rq_retry{cluster_name=\"outbound|80||b.example.com\"} 1\n".to_string(),
        "# HELP envoy_cluster_upstream_rq_retry Requests retried\n# TYPE envoy_cluster_upstream_rq_retry counter\n"
            .to_string(),
    ] {
        assert!(o.contains(&line), "{line} in {o}");
    }
}

#[test]
fn a_clusters_connections_and_ejections_are_counted_through_its_handles() {
    let t = telemetry();
    let c = "outbound|80||a.example.com";
    // A cluster's series exist from when its connectors are made, at zero.
    let (connections, ejections) = t.cluster(c);
    let first = connections.opened();
    let second = t.cluster(c).0.opened();
    drop(first);
    // The outlier detector's handle counts into the cluster's series too.
    ejections.enforced.inc();
    ejections.active.inc();
    ejections.overflow.inc();
    let t = std::sync::Arc::new(t);
    let o = scrape_shared(&t);
    let cl = "cluster_name=\"outbound|80||a.example.com\"";
    assert!(
        o.contains(&format!("envoy_cluster_upstream_cx_total{{{cl}}} 2\n")),
        "{o}"
    );
    assert!(
        o.contains(&format!("envoy_cluster_upstream_cx_active{{{cl}}} 1\n")),
        "{o}"
    );
    assert!(o.contains("# TYPE envoy_cluster_upstream_cx_active gauge\n"), "{o}");
    assert!(
        o.contains(&format!("envoy_cluster_upstream_rq_total{{{cl}}} 0\n")),
        "{o}"
    );
    for line in [
        format!("envoy_cluster_outlier_detection_ejections_enforced_total{{{cl}}} 1\n"),
        format!("envoy_cluster_outlier_detection_ejections_active{{{cl}}} 1\n"),
        format!("envoy_cluster_outlier_detection_ejections_overflow{{{cl}}} 1\n"),
        format!("envoy_cluster_outlier_detection_ejections_enforced_consecutive_5xx{{{cl}}} 0\n"),
    ] {
        assert!(o.contains(&line), "{line} in {o}");
    }
    drop(second);
    assert!(scrape_shared(&t).contains(&format!("envoy_cluster_upstream_cx_active{{{cl}}} 0\n")));
}

#[test]
fn tcp_sessions_are_opened_then_closed_with_their_flags() {
    let t = telemetry();
    let c = "outbound|9000||tcp.default.svc.cluster.local";
    t.tcp_opened(c);
    t.tcp_opened(c);
    t.tcp_closed(c, "-", 10, 20);
    t.tcp_closed(c, "", 1, 2);
    t.tcp_closed(c, "UF", 0, 0);
    let o = scrape(t);
    let series = |flags: &str| {
        format!("destination_cluster=\"unknown\",request_protocol=\"tcp\",response_flags=\"{flags}\",connection_security_policy=\"unknown\"}}")
    };
    for (name, flags, n) in [
        ("istio_tcp_connections_opened_total", "-", 2),
        ("istio_tcp_connections_closed_total", "-", 2),
        ("istio_tcp_sent_bytes_total", "-", 11),
        ("istio_tcp_received_bytes_total", "-", 22),
        ("istio_tcp_connections_opened_total", "UF", 0),
        ("istio_tcp_connections_closed_total", "UF", 1),
    ] {
        let line = format!("{} {n}\n", series(flags));
        assert!(
            o.lines()
                .any(|l| l.starts_with(&format!("{name}{{")) && format!("{l}\n").ends_with(&line)),
            "{name} {flags} {n} in {o}"
        );
    }
}

#[test]
fn label_values_are_escaped() {
    assert_eq!(escape("plain"), "plain");
    assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
}

#[test]
fn the_bytes_the_allocator_holds_are_envoys_memory_allocated_when_the_binary_counts_them() {
    // The test binary's allocator does not count: no gauge until a reader is set. The reader is
    // process-wide, set once; no other test reads this gauge.
    let before = scrape(telemetry());
    assert!(!before.contains("envoy_server_memory_allocated"), "{before}");
    crate::memory::count_with(|| 123_456);
    let o = scrape(telemetry());
    assert!(
        o.contains("# TYPE envoy_server_memory_allocated gauge\nenvoy_server_memory_allocated 123456\n"),
        "{o}"
    );
}
