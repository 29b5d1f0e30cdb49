//! Istio's standard metrics and Envoy's stats at `/stats/prometheus`, read back through a
//! Prometheus text-format parser after real traffic: curl with chunked bodies, a tonic gRPC
//! client, a TCP session; and the access log's bytes and duration for chunked bodies.

#![allow(clippy::expect_used, clippy::unwrap_used)] // Test code: a failure should panic.

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::Command;

use support::*;

/// One sample as Prometheus's reference parser (the Python client's) reads it.
#[derive(Debug, serde::Deserialize)]
struct Sample {
    name: String,
    labels: HashMap<String, String>,
    value: f64,
}

#[derive(Debug, serde::Deserialize)]
struct Family {
    #[serde(rename = "type")]
    kind: String,
    help: String,
    samples: Vec<Sample>,
}

const PARSE: &str = "import json, sys\n\
from prometheus_client.parser import text_string_to_metric_families as parse\n\
print(json.dumps([{'type': f.type, 'help': f.documentation,\n\
  'samples': [{'name': s.name, 'labels': s.labels, 'value': s.value} for s in f.samples]}\n\
  for f in parse(sys.stdin.read())]))\n";

/// `/stats/prometheus`, parsed by Prometheus's Python client (it fails on malformed text).
fn scrape(g: &Gate) -> (Vec<Family>, String) {
    let text = g.admin_get("/stats/prometheus");
    let mut child = Command::new("python3")
        .args(["-c", PARSE])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}\n{text}", String::from_utf8_lossy(&out.stderr));
    (serde_json::from_slice(&out.stdout).unwrap(), text)
}

/// The value of the one sample named `name` whose labels include all of `want`.
fn value(families: &[Family], name: &str, want: &[(&str, &str)]) -> f64 {
    one(families, name, want, false)
}

/// The value of the one sample named `name` whose labels are exactly `want`. (The Python
/// client names the samples of a counter family `…_total`, so Envoy's `envoy_cluster_upstream_rq`
/// by code and its `envoy_cluster_upstream_rq_total` are told apart by their labels.)
fn exact(families: &[Family], name: &str, want: &[(&str, &str)]) -> f64 {
    one(families, name, want, true)
}

fn one(families: &[Family], name: &str, want: &[(&str, &str)], exact: bool) -> f64 {
    let found: Vec<f64> = families
        .iter()
        .flat_map(|f| &f.samples)
        .filter(|s| {
            s.name == name
                && want
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .filter(|s| !exact || s.labels.len() == want.len())
        .map(|s| s.value)
        .collect();
    match found.as_slice() {
        [v] => *v,
        other => panic!("{name} {want:?}: {other:?}"),
    }
}

/// (count, sum) of the one histogram series matching `want`.
fn histogram(families: &[Family], name: &str, want: &[(&str, &str)]) -> (f64, f64) {
    let count = value(families, &format!("{name}_count"), want);
    let sum = value(families, &format!("{name}_sum"), want);
    let mut inf = want.to_vec();
    inf.push(("le", "+Inf"));
    assert_eq!(value(families, &format!("{name}_bucket"), &inf), count);
    (count, sum)
}

/// An HTTP/1.1 server that reads a Content-Length request and answers with a chunked body
/// of 3 chunks, 30 bytes in all, then closes.
fn chunked_server() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(s) = s else { continue };
            std::thread::spawn(move || {
                let mut r = BufReader::new(s);
                let mut length = 0usize;
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap();
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0u8; length];
                r.read_exact(&mut body).unwrap();
                let mut s = r.into_inner();
                let chunk = |n: usize| format!("{n:x}\r\n{}\r\n", "x".repeat(n));
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n{}{}{}0\r\n\r\n",
                    chunk(10),
                    chunk(15),
                    chunk(5)
                );
                let _ = s.write_all(reply.as_bytes());
            });
        }
    });
    addr
}

fn gateway(server: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: istio-system}}\nspec:\n  \
         selector: {{istio: ingressgateway}}\n  servers:\n{server}"
    )
}

/// A gateway on port 80 for every host, `host` a ServiceEntry at 127.0.0.1:`port`, and one
/// VirtualService with `routes` (empty: everything to `host`).
fn http_to(host: &str, port: u16, routes: &str) -> String {
    let all = format!("  - route: [{{destination: {{host: {host}}}}}]\n");
    let routes = if routes.is_empty() { all.as_str() } else { routes };
    format!(
        "{}---\n\
         apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: upstream, namespace: default}}\nspec:\n  \
         hosts: [{host}]\n  location: MESH_EXTERNAL\n  resolution: STATIC\n  \
         ports: [{{number: 80, name: http, protocol: HTTP}}]\n  endpoints: [{{address: 127.0.0.1, ports: {{http: {port}}}}}]\n---\n\
         apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: upstream, namespace: default}}\nspec:\n  \
         hosts: ['*']\n  gateways: [istio-system/gw]\n  http:\n{routes}",
        gateway("  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: ['*']\n"),
    )
}

#[test]
fn http_requests_carry_istios_labels_and_the_real_bytes_of_chunked_bodies() {
    let upstream = chunked_server();
    let routes = "  - match: [{uri: {prefix: /chunky}}]\n    route: [{destination: {host: chunky.example.com}}]\n  \
                  - match: [{uri: {exact: /teapot}}]\n    directResponse: {status: 418, body: {string: teapot}}\n";
    let yaml = http_to("chunky.example.com", upstream.port(), routes);
    let labels = "app=istio-ingressgateway,istio=ingressgateway,version=1.0";
    let g = gate_with(&yaml, &[80], &["--labels", labels, "--namespace", "istio-system"]);
    let url = format!("http://{}/chunky", g.port(80));
    for _ in 0..2 {
        // A chunked request body of 11 bytes.
        let out = Command::new("curl")
            .args([
                "-s",
                "-H",
                "Transfer-Encoding: chunked",
                "--data-binary",
                "hello world",
                &url,
            ])
            .output()
            .expect("curl");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "x".repeat(30));
    }
    assert_eq!(get(g.port(80), "/elsewhere", &[]).status, 404);
    // A local reply's length goes out as Content-Length, not chunked.
    let teapot = get(g.port(80), "/teapot", &[]);
    assert_eq!((teapot.status, teapot.header("content-length")), (418, Some("6")));
    assert_eq!(teapot.header("transfer-encoding"), None);
    let log = g.wait_log("/elsewhere");
    // Istio's TEXT format: ... %BYTES_RECEIVED% %BYTES_SENT% %DURATION% ...
    assert!(
        log.contains("\"POST /chunky HTTP/1.1\" 200 - via_upstream - \"-\" 11 30 "),
        "{log}"
    );

    let (e, text) = scrape(&g);
    let ok = [
        ("reporter", "source"),
        ("source_workload", "istio-ingressgateway"),
        ("source_workload_namespace", "istio-system"),
        ("source_app", "istio-ingressgateway"),
        ("source_version", "1.0"),
        ("source_canonical_service", "istio-ingressgateway"),
        ("source_canonical_revision", "1.0"),
        ("destination_service", "chunky.example.com"),
        ("destination_service_name", "chunky.example.com"),
        ("destination_service_namespace", "unknown"),
        ("request_protocol", "http"),
        ("response_code", "200"),
        ("response_flags", "-"),
        ("grpc_response_status", ""),
        ("connection_security_policy", "unknown"),
    ];
    assert_eq!(value(&e, "istio_requests_total", &ok), 2.0, "{text}");
    let (n, ms) = histogram(&e, "istio_request_duration_milliseconds", &ok);
    assert!(n == 2.0 && ms > 0.0, "{n} {ms}");
    assert_eq!(histogram(&e, "istio_request_bytes", &ok), (2.0, 22.0));
    assert_eq!(histogram(&e, "istio_response_bytes", &ok), (2.0, 60.0));
    let no_route = [
        ("response_code", "404"),
        ("response_flags", "NR"),
        ("destination_service", "unknown"),
    ];
    assert_eq!(value(&e, "istio_requests_total", &no_route), 1.0, "{text}");

    // Envoy's stats, with the tags Istio's bootstrap extracts.
    let cluster = [("cluster_name", "outbound|80||chunky.example.com")];
    assert_eq!(exact(&e, "envoy_cluster_upstream_rq_total", &cluster), 2.0, "{text}");
    assert_eq!(histogram(&e, "envoy_cluster_upstream_rq_time", &cluster).0, 2.0);
    let by_code = [cluster[0], ("response_code", "200")];
    assert_eq!(exact(&e, "envoy_cluster_upstream_rq_total", &by_code), 2.0, "{text}");
    let by_class = [cluster[0], ("response_code_class", "2xx")];
    assert_eq!(exact(&e, "envoy_cluster_upstream_rq_total", &by_class), 2.0, "{text}");
    // The upstream closes after each response: two connections made, none left open.
    assert_eq!(exact(&e, "envoy_cluster_upstream_cx_total", &cluster), 2.0, "{text}");
    assert_eq!(exact(&e, "envoy_cluster_upstream_cx_active", &cluster), 0.0, "{text}");
    let listener = ("http_conn_manager_prefix", "outbound_0.0.0.0_80");
    assert_eq!(exact(&e, "envoy_http_downstream_rq_total", &[listener]), 4.0);
    assert_eq!(
        exact(
            &e,
            "envoy_http_downstream_rq_total",
            &[listener, ("response_code_class", "4xx")]
        ),
        2.0,
        "the 404 and the 418"
    );
    assert_eq!(
        exact(
            &e,
            "envoy_http_downstream_rq_total",
            &[listener, ("response_code_class", "5xx")]
        ),
        0.0
    );
    assert!(
        text.contains("# TYPE envoy_server_live gauge\nenvoy_server_live 1\n"),
        "{text}"
    );
    // Every family has its HELP and TYPE.
    for f in &e {
        assert!(!f.help.is_empty() && f.kind != "unknown", "{f:?}");
    }
}

#[test]
fn grpc_calls_carry_their_grpc_status_from_trailers_or_a_local_reply() {
    let v1 = grpc_echo("echo", "v1");
    let yaml = format!(
        "{}---\n\
         apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: echo, namespace: default}}\nspec:\n  \
         hosts: [echo.default.svc.cluster.local]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  \
         ports: [{{number: 7070, name: grpc, protocol: GRPC}}]\n  \
         endpoints: [{{address: 127.0.0.1, ports: {{grpc: {}}}, labels: {{version: v1}}}}]\n---\n\
         apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: echo, namespace: default}}\nspec:\n  \
         host: echo\n  subsets: [{{name: v1, labels: {{version: v1}}}}]\n---\n\
         apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: echo, namespace: default}}\nspec:\n  \
         hosts: ['*']\n  gateways: [istio-system/gw]\n  http:\n  \
         - match: [{{uri: {{exact: /proto.EchoTestService/Abort}}}}]\n    fault: {{abort: {{grpcStatus: UNAVAILABLE, percentage: {{value: 100}}}}}}\n    \
         route: [{{destination: {{host: echo, subset: v1, port: {{number: 7070}}}}}}]\n  \
         - route: [{{destination: {{host: echo, subset: v1, port: {{number: 7070}}}}}}]\n",
        gateway("  - port: {number: 8080, name: grpc, protocol: GRPC}\n    hosts: ['*']\n"),
        v1.grpc[0].port()
    );
    let g = gate(&yaml, &[8080]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        assert!(grpc_client::echo_call(g.port(8080), "/proto.EchoTestService/Echo", &[])
            .await
            .is_ok());
        let aborted = grpc_client::echo_call(g.port(8080), "/proto.EchoTestService/Abort", &[])
            .await
            .unwrap_err();
        assert_eq!(aborted.code(), tonic::Code::Unavailable);
    });
    let (e, text) = scrape(&g);
    let echo = [
        ("request_protocol", "grpc"),
        ("response_code", "200"),
        ("destination_service", "echo.default.svc.cluster.local"),
        ("destination_service_name", "echo"),
        ("destination_service_namespace", "default"),
        ("destination_version", "v1"),
        ("source_workload", "meshgate"),
    ];
    let status = |s| [echo.as_slice(), &[("grpc_response_status", s)]].concat();
    // The upstream's OK came in the trailers; the fault's UNAVAILABLE in a trailers-only reply.
    assert_eq!(value(&e, "istio_requests_total", &status("0")), 1.0, "{text}");
    let aborted = [status("14").as_slice(), &[("response_flags", "FI")]].concat();
    assert_eq!(value(&e, "istio_requests_total", &aborted), 1.0, "{text}");
}

#[test]
fn tcp_sessions_count_connections_and_bytes_each_way() {
    let tcp = Echo::builder("tcp-echo")
        .tcp_loopback()
        .tcp_greeting(false)
        .start_in_thread()
        .unwrap();
    let yaml = format!(
        "{}---\n\
         apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: tcp-echo, namespace: default}}\nspec:\n  \
         hosts: [tcp-echo.default.svc.cluster.local]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  \
         ports: [{{number: 9000, name: tcp, protocol: TCP}}]\n  endpoints: [{{address: 127.0.0.1, ports: {{tcp: {}}}}}]\n---\n\
         apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: tcp-echo, namespace: default}}\nspec:\n  \
         hosts: ['*']\n  gateways: [istio-system/gw]\n  tcp:\n  - match: [{{port: 31400}}]\n    \
         route: [{{destination: {{host: tcp-echo, port: {{number: 9000}}}}}}]\n",
        gateway("  - port: {number: 31400, name: tcp, protocol: TCP}\n    hosts: ['*']\n"),
        tcp.tcp[0].port()
    );
    let g = gate(&yaml, &[31400]);
    let mut s = std::net::TcpStream::connect(g.port(31400)).unwrap();
    s.write_all(b"hello, tcp\n").unwrap();
    let mut back = [0u8; 11];
    s.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"hello, tcp\n");
    // Envoy's cluster stats count the session's upstream connection, open while it is.
    let cluster = [("cluster_name", "outbound|9000||tcp-echo.default.svc.cluster.local")];
    let (e, text) = scrape(&g);
    assert_eq!(exact(&e, "envoy_cluster_upstream_cx_total", &cluster), 1.0, "{text}");
    assert_eq!(exact(&e, "envoy_cluster_upstream_cx_active", &cluster), 1.0, "{text}");
    drop(s);
    let tcp_labels = [
        ("request_protocol", "tcp"),
        ("destination_service", "tcp-echo.default.svc.cluster.local"),
        ("destination_service_name", "tcp-echo"),
        ("response_flags", "-"),
    ];
    // The session's end is seen by the gateway shortly after the client closes.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let (e, text) = loop {
        let (e, text) = scrape(&g);
        if text.contains("istio_tcp_connections_closed_total{")
            && value(&e, "istio_tcp_connections_closed_total", &tcp_labels) == 1.0
        {
            break (e, text);
        }
        assert!(std::time::Instant::now() < deadline, "{text}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(
        value(&e, "istio_tcp_connections_opened_total", &tcp_labels),
        1.0,
        "{text}"
    );
    assert_eq!(value(&e, "istio_tcp_sent_bytes_total", &tcp_labels), 11.0);
    assert_eq!(value(&e, "istio_tcp_received_bytes_total", &tcp_labels), 11.0);
    assert_eq!(exact(&e, "envoy_cluster_upstream_cx_total", &cluster), 1.0, "{text}");
    assert_eq!(exact(&e, "envoy_cluster_upstream_cx_active", &cluster), 0.0, "{text}");
}

#[test]
fn the_access_log_takes_istios_json_encoding_and_a_users_format() {
    let e = echo("web", "v1");
    let yaml = http_to("web.default.svc.cluster.local", e.http[0].port(), "");
    let g = gate_with(&yaml, &[80], &["--access-log-encoding", "JSON"]);
    // The upstream answers after 150 ms, with a Content-Length the gateway keeps.
    let r = get(g.port(80), "/json?delay=150ms", &[("user-agent", "probe/1")]);
    assert_eq!(r.status, 200);
    assert!(r.header("content-length").is_some() && r.header("transfer-encoding").is_none());
    // An HTTP/1.0 request is logged as one.
    let mut s = std::net::TcpStream::connect(g.port(80)).unwrap();
    s.write_all(b"GET /ten HTTP/1.0\r\nHost: web\r\n\r\n").unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.0 200"), "{reply}");
    let log = g.wait_log("/ten");
    let ten = log.lines().find(|l| l.contains("/ten")).unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(ten).unwrap()["protocol"],
        "HTTP/1.0"
    );
    let log = g.wait_log("/json?delay=150ms");
    let line = log.lines().find(|l| l.contains("/json?delay=150ms")).unwrap();
    let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(v["method"], "GET");
    assert_eq!(v["path"], "/json?delay=150ms");
    let ms = v["duration"].as_u64().unwrap();
    assert!((150..1000).contains(&ms), "{v}");
    // The metric's durations are the same, in milliseconds (the 150 ms request and /ten).
    let (e, _) = scrape(&g);
    let (n, sum) = histogram(&e, "istio_request_duration_milliseconds", &[("response_code", "200")]);
    assert!(n == 2.0 && (150.0..1000.0).contains(&sum), "{n} {sum}");
    assert_eq!(v["response_code"], 200);
    assert_eq!(v["response_code_details"], "via_upstream");
    assert_eq!(v["user_agent"], "probe/1");
    assert_eq!(v["upstream_cluster"], "outbound|80||web.default.svc.cluster.local");
    assert!(v["bytes_sent"].as_u64().unwrap() > 0, "{v}");
    assert!(
        v["upstream_service_time"].as_str().unwrap().parse::<u64>().is_ok(),
        "{v}"
    );
    drop(g);

    let format = "%REQ(:METHOD)% %REQ(X-TENANT?USER-AGENT)% %RESPONSE_CODE% %BYTES_SENT% %UPSTREAM_CLUSTER%";
    let g = gate_with(&yaml, &[80], &["--access-log-format", format]);
    get(g.port(80), "/custom", &[("x-tenant", "blue")]);
    get(g.port(80), "/custom", &[("user-agent", "probe/2")]);
    let log = g.wait_log("probe/2");
    let lines: Vec<&str> = log.lines().filter(|l| l.starts_with("GET ")).collect();
    let cluster = "outbound|80||web.default.svc.cluster.local";
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("GET blue 200 ") && l.ends_with(cluster)),
        "{log}"
    );
    assert!(lines.iter().any(|l| l.starts_with("GET probe/2 200 ")), "{log}");
}

#[test]
fn an_unknown_access_log_operator_stops_meshgate_with_its_name() {
    let dir = temp_dir("badformat");
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        gateway("  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: ['*']\n"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_meshgate"))
        .args([
            "-c",
            config.to_str().unwrap(),
            "--access-log-format",
            "%START_TIME% %BYTES%",
        ])
        .args(["--admin", "127.0.0.1:0", "--port-map", "80=127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--access-log-format") && err.contains("unknown operator %BYTES%"),
        "{err}"
    );
}

/// An HTTP/1.1 server that sends a chunk, waits 2 s, then sends the rest.
fn slow_server() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n");
                std::thread::sleep(std::time::Duration::from_secs(2));
                let _ = s.write_all(b"4\r\nrest\r\n0\r\n\r\n");
            });
        }
    });
    addr
}

#[test]
fn a_response_the_client_abandons_is_logged_with_dc_and_the_bytes_it_got() {
    let upstream = slow_server();
    let yaml = http_to("slow.example.com", upstream.port(), "");
    let g = gate(&yaml, &[80]);
    let mut s = std::net::TcpStream::connect(g.port(80)).unwrap();
    s.write_all(b"GET /slow HTTP/1.1\r\nHost: slow\r\n\r\n").unwrap();
    // Read the head and the first chunk, then go away.
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&got).contains("first") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    drop(s);
    let log = g.wait_log("/slow");
    // %RESPONSE_FLAGS% DC; %BYTES_SENT% the 5 bytes of the first chunk.
    assert!(
        log.contains("\"GET /slow HTTP/1.1\" 200 DC via_upstream - \"-\" 0 5 "),
        "{log}"
    );
}
