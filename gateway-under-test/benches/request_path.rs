//! Criterion micro-benchmarks of the request path's pure parts, on the config `ci/bench/gateway.py`
//! calls Istio-shaped (10 VirtualServices, 50 regex + header routes, the benchmarked request taken
//! by the last route of its host): virtual host and route choice, the weighted pick, header
//! operations, the downstream header phase, TLS filter chain choice by SNI (ClientHello parse
//! included), and the access log line.
//!
//! `cargo bench -p meshgate --bench request_path`; what each costs per call on this machine is in
//! the README's performance section.

#![allow(clippy::expect_used, clippy::unwrap_used)] // Benchmark set-up: a failure should panic.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, Request};
use mesh_model::api::virtual_service::HeaderOperations;
use mesh_model::plan::{PlanOptions, WeightedCluster};
use meshgate::compile::{compile, Compiled};
use meshgate::context::Downstream;
use meshgate::telemetry::{Identity, Telemetry};

const ROUTE: &str = "{match: [{uri: {regex: 'URI'}, headers: {HEADER: {exact: 'VALUE'}}}], \
                     route: [{destination: {host: backend.example.com}}]}";

fn route(uri: &str, header: &str, value: &str) -> String {
    ROUTE
        .replace("URI", uri)
        .replace("HEADER", header)
        .replace("VALUE", value)
}

/// The Istio-shaped config, with ten HTTPS servers (one certificate each) beside the HTTP one.
fn config(dir: &Path) -> String {
    let mut servers = String::from("  - {port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}\n");
    for i in 0..10 {
        let name = format!("svc{i}.example.com");
        let cert = rcgen::generate_simple_self_signed(vec![name.clone()]).unwrap();
        let (crt, key) = (dir.join(format!("{i}.crt")), dir.join(format!("{i}.key")));
        std::fs::write(&crt, cert.cert.pem()).unwrap();
        std::fs::write(&key, cert.signing_key.serialize_pem()).unwrap();
        servers.push_str(&format!(
            "  - {{port: {{number: 443, name: https-{i}, protocol: HTTPS}}, hosts: ['{name}'], \
             tls: {{mode: SIMPLE, serverCertificate: {}, privateKey: {}}}}}\n",
            crt.display(),
            key.display()
        ));
    }
    let mut docs = vec![format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: istio-system}}\n\
         spec:\n  selector: {{app: bench}}\n  servers:\n{servers}"
    )];
    docs.push(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: backend, namespace: default}\n\
         spec:\n  hosts: [backend.example.com]\n  resolution: STATIC\n  \
         ports: [{number: 80, name: http, protocol: HTTP}]\n  endpoints: [{address: 127.0.0.1, ports: {http: 9}}]\n"
            .into(),
    );
    for i in 0..9 {
        docs.push(format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: svc{i}, namespace: default}}\n\
             spec:\n  hosts: [svc{i}.example.com]\n  gateways: [istio-system/gw]\n  http: [{}]\n",
            route(&format!("/svc{i}/[a-z]+/[0-9]+"), "x-tenant", &format!("t{i}"))
        ));
    }
    let mut routes: Vec<String> = (0..40)
        .map(|j| route(&format!("/bench/r{j}/[a-z]+"), "x-route", &format!("r{j}")))
        .collect();
    routes.push(route("/bench/[a-z]+", "x-bench", "1"));
    docs.push(format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: bench, namespace: default}}\n\
         spec:\n  hosts: [bench.example.com]\n  gateways: [istio-system/gw]\n  http:\n{}",
        routes.iter().map(|r| format!("  - {r}\n")).collect::<String>()
    ));
    docs.join("---\n")
}

fn compiled(dir: &Path) -> Compiled {
    std::fs::write(dir.join("config.yaml"), config(dir)).unwrap();
    let opts = PlanOptions {
        labels: Some([("app".to_string(), "bench".to_string())].into()),
        namespace: None,
        sidecar: false,
    };
    let (plan, _) = mesh_model::plan::load(&[dir.join("config.yaml")], None, &opts).unwrap();
    let telemetry = Telemetry::new(Identity::from_labels(&Default::default(), None));
    compile(plan, 1, None, &telemetry).unwrap()
}

fn downstream(table: &str) -> Downstream {
    use clap::Parser;
    let defaults = meshgate::Args::try_parse_from(["meshgate", "-c", "."]).unwrap();
    Downstream {
        peer: "10.0.0.7:51234".parse().unwrap(),
        local: "10.0.0.1:80".parse().unwrap(),
        port: 80,
        scheme: "http",
        table: Some(table.to_string()),
        sni: None,
        outbound: false,
        original_dst: None,
        body: meshgate::limits::BodyLimits::new(&defaults.limits),
        telemetry: Arc::new(Telemetry::new(Identity::from_labels(&Default::default(), None))),
    }
}

fn request() -> Request<()> {
    Request::get("/bench/items")
        .header("host", "bench.example.com")
        .header("user-agent", "wrk")
        .header("x-bench", "1")
        .body(())
        .unwrap()
}

/// The ClientHello rustls sends for `sni`.
fn client_hello(sni: &str) -> Vec<u8> {
    let roots = rustls::RootCertStore::empty();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), sni.to_string().try_into().unwrap()).unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    hello
}

fn benches(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("meshgate-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let compiled = compiled(&dir);
    let http = &compiled.listeners[&80];
    let table_name = match &http.select(&Default::default()).unwrap().action {
        mesh_model::plan::ChainAction::Http { route_table } => route_table.clone(),
        _ => unreachable!("port 80 serves HTTP"),
    };
    let table = &compiled.tables[&table_name];
    let down = downstream(&table_name);
    let req = request();

    // What is measured is the real choice: the last route of bench.example.com's 41.
    let vhost = table.vhost("bench.example.com").unwrap();
    let last = vhost
        .routes
        .iter()
        .position(|r| meshgate::matching::matches(&r.matcher, &req, &down, &mut Default::default()));
    assert_eq!(last, Some(40), "the request should take the 41st route");
    c.bench_function("route: vhost + last of 41 regex/header routes", |b| {
        b.iter(|| {
            let host = meshgate::matching::request_host(black_box(&req));
            let vhost = table.vhost(&host).unwrap();
            let r = meshgate::route_index::pick(vhost, &req, &down);
            black_box(r.map(|r| r.route.name.len()))
        })
    });

    let split: Vec<WeightedCluster> = (0..3)
        .map(|i| WeightedCluster {
            cluster: format!("outbound|80|v{i}|reviews.default.svc.cluster.local"),
            weight: [80, 15, 5][i],
            request_headers: None,
            response_headers: None,
            host_rewrite: None,
        })
        .collect();
    c.bench_function("weighted pick: 80/15/5", |b| {
        b.iter(|| black_box(meshgate::forward::pick_weighted(black_box(&split)).map(|w| w.weight)))
    });

    let ops = HeaderOperations {
        set: [("x-env".to_string(), "prod".to_string())].into(),
        add: [("x-trace".to_string(), "on".to_string())].into(),
        remove: vec!["x-debug".into()],
    };
    let headers: HeaderMap = req.headers().clone();
    c.bench_function("header operations: set + add + remove", |b| {
        b.iter(|| {
            let mut h = headers.clone();
            meshgate::forward::apply_ops(&mut h, Some(black_box(&ops)));
            black_box(h.len())
        })
    });

    c.bench_function("downstream headers: xff, proto, request id", |b| {
        b.iter(|| {
            let mut h = headers.clone();
            meshgate::proxy::prepare_downstream_headers(&mut h, &down);
            black_box(h.len())
        })
    });

    let https = &compiled.listeners[&443];
    let hello = client_hello("svc7.example.com");
    let chosen = https.select(&meshgate::tls::sniff_hello(&hello).unwrap()).unwrap();
    assert!(
        chosen.server_names.iter().any(|n| n == "svc7.example.com"),
        "{:?}",
        chosen.server_names
    );
    c.bench_function("TLS chain by SNI: parse ClientHello + choose of 10", |b| {
        b.iter(|| {
            let hello = meshgate::tls::sniff_hello(black_box(&hello)).unwrap();
            black_box(https.select(&hello).map(|c| c.name.len()))
        })
    });

    let text = meshgate::logformat::Format::new("TEXT", "").unwrap();
    let json = meshgate::logformat::Format::new("JSON", "").unwrap();
    let line = meshgate::logging::RequestLine::of(&req, &text);
    let out = meshgate::context::Outcome {
        route: "bench.default.0".into(),
        cluster: "outbound|80||backend.example.com".into(),
        upstream_host: "127.0.0.1:9".into(),
        upstream_ms: Some(1),
        ..meshgate::context::Outcome::new()
    };
    let started_at = std::time::SystemTime::now();
    c.bench_function("access log line: Istio's TEXT format", |b| {
        b.iter(|| {
            black_box(
                line.render(&text, started_at, 3, 200, (0, 6), &[None], &out, &down)
                    .len(),
            )
        })
    });
    let line = meshgate::logging::RequestLine::of(&req, &json);
    c.bench_function("access log line: Istio's JSON format", |b| {
        b.iter(|| {
            black_box(
                line.render(&json, started_at, 3, 200, (0, 6), &[None], &out, &down)
                    .len(),
            )
        })
    });
    let request = meshgate::telemetry::Request {
        cluster: &out.cluster,
        code: 200,
        flags: "",
        grpc: false,
        grpc_status: None,
        duration_ms: 1.5,
        request_bytes: 0,
        response_bytes: 6,
        listener: 80,
    };
    c.bench_function("metrics of one request: Istio's and Envoy's series", |b| {
        b.iter(|| down.telemetry.request(black_box(&request)))
    });
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(request_path, benches);
criterion_main!(request_path);
