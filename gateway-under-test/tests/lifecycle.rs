//! meshgate over time: reloads (valid, invalid, under load), SIGTERM drain, mirrors and
//! consistent hashing.

#![allow(clippy::expect_used, clippy::unwrap_used)] // Test code: a failure should panic.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::*;

fn config(v1: &EchoThread, v2: &EchoThread, subset: &str, extra_rule: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: istio-system}}\nspec:\n  \
         servers:\n  - port: {{number: 80, name: http, protocol: HTTP}}\n    hosts: ['*']\n---\n\
         apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: reviews, namespace: default}}\nspec:\n  \
         hosts: [reviews.default.svc.cluster.local]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  \
         ports: [{{number: 9080, name: http, protocol: HTTP}}]\n  endpoints:\n{}{}---\n\
         apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: reviews, namespace: default}}\nspec:\n  \
         host: reviews\n  subsets: [{{name: v1, labels: {{version: v1}}}}, {{name: v2, labels: {{version: v2}}}}]\n---\n\
         apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: reviews, namespace: default}}\nspec:\n  \
         hosts: ['*']\n  gateways: [istio-system/gw]\n  http:\n{extra_rule}  \
         - route: [{{destination: {{host: reviews, subset: {subset}, port: {{number: 9080}}}}}}]\n---\n",
        endpoint(v1, "v1"),
        endpoint(v2, "v2")
    )
}

fn version_of(g: &Gate) -> Option<String> {
    get(g.port(80), "/", &[]).field("ServiceVersion")
}

#[test]
fn a_valid_change_applies_and_an_invalid_one_keeps_the_last_good_plan() {
    let (v1, v2) = (echo("reviews", "v1"), echo("reviews", "v2"));
    let g = gate(&config(&v1, &v2, "v1", ""), &[80]);
    assert_eq!(version_of(&g).as_deref(), Some("v1"));
    std::fs::write(&g.config, config(&v1, &v2, "v2", "")).unwrap();
    g.wait_version(2);
    assert_eq!(version_of(&g).as_deref(), Some("v2"));
    // Invalid: a negative weight. Rejected, logged, version 2 keeps serving.
    let bad = config(&v1, &v2, "v1", "").replace(
        "subset: v1, port: {number: 9080}}}]",
        "subset: v1, port: {number: 9080}}, weight: -1}]",
    );
    std::fs::write(&g.config, bad).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !g.admin_get("/plan").contains("MB0302") {
        assert!(
            std::time::Instant::now() < deadline,
            "no reload error reported: {}",
            g.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(g.version(), 2);
    assert_eq!(version_of(&g).as_deref(), Some("v2"));
    assert!(
        g.stderr().contains("config rejected, version 2 keeps serving"),
        "{}",
        g.stderr()
    );
    assert!(g
        .admin_get("/stats/prometheus")
        .contains("meshgate_config_reload_failures_total 1"));
}

/// 460 bytes that a naive YAML reader expands to 10^9 nodes.
fn alias_bomb() -> String {
    let mut doc = String::from(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: lol, namespace: default}\n",
    );
    doc.push_str("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..10 {
        let refs = vec![format!("*a{}", i - 1); 9].join(", ");
        doc.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
    }
    doc.push_str("spec: {hosts: [lol.example.com], ports: [{number: 80, name: http, protocol: HTTP}], lol: *a9}\n");
    doc
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn an_alias_bomb_is_refused_with_its_line_and_the_last_good_config_keeps_serving() {
    let (v1, v2) = (echo("reviews", "v1"), echo("reviews", "v2"));
    let good = config(&v1, &v2, "v1", "");
    let g = gate(&good, &[80]);
    std::fs::write(&g.config, format!("{good}{}", alias_bomb())).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !g.stderr().contains("aliases expand to more than") {
        assert!(std::time::Instant::now() < deadline, "no diagnostic: {}", g.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        g.stderr().contains("config rejected, version 1 keeps serving"),
        "{}",
        g.stderr()
    );
    assert_eq!(version_of(&g).as_deref(), Some("v1"));
    assert_eq!(g.version(), 1);
    let rss = rss_kib(g.child.id());
    assert!(rss < 200 * 1024, "RSS {rss} KiB after the bomb");
}

#[test]
fn sighup_reloads() {
    let (v1, v2) = (echo("reviews", "v1"), echo("reviews", "v2"));
    let g = gate_with(&config(&v1, &v2, "v1", ""), &[80], &["--watch-interval", "1h"]);
    std::fs::write(&g.config, config(&v1, &v2, "v2", "")).unwrap();
    send_signal(g.child.id(), "HUP");
    g.wait_version(2);
    assert_eq!(version_of(&g).as_deref(), Some("v2"));
}

fn send_signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

#[test]
fn ten_reloads_under_load_drop_no_request() {
    let (v1, v2) = (echo("reviews", "v1"), echo("reviews", "v2"));
    let mut g = gate(&config(&v1, &v2, "v1", ""), &[80]);
    let addr = g.port(80);
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load: Vec<_> = (0..2)
        .map(|_| {
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if get(addr, "/", &[]).status == 200 {
                        ok.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for i in 0..10u64 {
        let subset = if i % 2 == 0 { "v2" } else { "v1" };
        std::fs::write(&g.config, config(&v1, &v2, subset, "")).unwrap();
        g.wait_version(i + 2);
    }
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().unwrap();
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0, "requests failed across reloads");
    assert!(
        ok.load(Ordering::Relaxed) > 50,
        "too little load: {}",
        ok.load(Ordering::Relaxed)
    );
    assert_eq!(g.version(), 11);
    let _ = &mut g;
}

#[test]
fn sigterm_drains_in_flight_requests_then_exits_0() {
    let (v1, v2) = (echo("reviews", "v1"), echo("reviews", "v2"));
    // No drain period: listeners close at once and in-flight requests still finish.
    let mut g = gate_with(&config(&v1, &v2, "v1", ""), &[80], &["--drain-time", "0s"]);
    let addr = g.port(80);
    let slow = std::thread::spawn(move || get(addr, "/?delay=1s", &[]));
    // Wait until the request is in flight upstream (no guessing with a sleep).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !g.admin_get("/clusters").contains("::rq_active::1") {
        assert!(
            std::time::Instant::now() < deadline,
            "the request never reached the upstream"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    send_signal(g.child.id(), "TERM");
    let r = slow.join().unwrap();
    assert_eq!(r.status, 200, "the in-flight request completes");
    let status = g.child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(std::net::TcpStream::connect(addr).is_err(), "no longer accepting");
}

#[test]
fn mirrors_are_sent_without_delaying_the_response() {
    let (v1, v2) = (echo("reviews", "v1"), echo("reviews", "v2"));
    // A mirror target that counts requests and never answers: a response that waited for it
    // would never come back.
    let seen = Arc::new(AtomicU64::new(0));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mirror_port = listener.local_addr().unwrap().port();
    let seen2 = seen.clone();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { continue };
            let seen = seen2.clone();
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                seen.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_secs(3600));
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
            });
        }
    });
    let mirror_se = format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: shadow, namespace: default}}\nspec:\n  \
         hosts: [shadow.example.com]\n  resolution: STATIC\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  \
         endpoints: [{{address: 127.0.0.1, ports: {{http: {mirror_port}}}}}]\n---\n"
    );
    let rule = "  - match: [{uri: {prefix: /mirrored}}]\n    mirror: {host: shadow.example.com}\n    \
                route: [{destination: {host: reviews, subset: v1, port: {number: 9080}}}]\n  \
                - match: [{uri: {prefix: /off}}]\n    mirror: {host: shadow.example.com}\n    mirrorPercentage: {value: 0}\n    \
                route: [{destination: {host: reviews, subset: v1, port: {number: 9080}}}]\n";
    let g = gate(&format!("{}{mirror_se}", config(&v1, &v2, "v1", rule)), &[80]);
    let t = std::time::Instant::now();
    for _ in 0..5 {
        assert_eq!(
            get(g.port(80), "/mirrored", &[]).field("ServiceVersion").as_deref(),
            Some("v1")
        );
    }
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "the mirror's 500ms did not delay the responses"
    );
    for _ in 0..5 {
        get(g.port(80), "/off", &[]);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while seen.load(Ordering::Relaxed) < 5 {
        assert!(
            std::time::Instant::now() < deadline,
            "mirror saw {}",
            seen.load(Ordering::Relaxed)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(seen.load(Ordering::Relaxed), 5, "mirrorPercentage 0 sends nothing");
}

#[test]
fn consistent_hash_on_a_header_sticks_to_one_endpoint() {
    let echoes: Vec<EchoThread> = (0..4)
        .map(|i| {
            mesh_echo::Echo::builder("web")
                .hostname(&format!("web-{i}"))
                .http_loopback()
                .start_in_thread()
                .unwrap()
        })
        .collect();
    let eps: String = echoes
        .iter()
        .map(|e| format!("  - {{address: 127.0.0.1, ports: {{http: {}}}}}\n", e.http[0].port()))
        .collect();
    let yaml = format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: istio-system}}\nspec:\n  \
         servers:\n  - port: {{number: 80, name: http, protocol: HTTP}}\n    hosts: ['*']\n---\n\
         apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: web, namespace: default}}\nspec:\n  \
         hosts: [web.example.com]\n  resolution: STATIC\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  endpoints:\n{eps}---\n\
         apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: web, namespace: default}}\nspec:\n  \
         host: web.example.com\n  trafficPolicy: {{loadBalancer: {{consistentHash: {{httpHeaderName: x-user}}}}}}\n---\n\
         apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: web, namespace: default}}\nspec:\n  \
         hosts: ['*']\n  gateways: [istio-system/gw]\n  http:\n  - route: [{{destination: {{host: web.example.com}}}}]\n---\n"
    );
    let g = gate(&yaml, &[80]);
    let host_for = |user: &str| get(g.port(80), "/", &[("x-user", user)]).field("Hostname");
    let mut distinct = std::collections::HashSet::new();
    for user in ["alice", "bob", "carol", "dave", "erin", "frank"] {
        let first = host_for(user);
        for _ in 0..9 {
            assert_eq!(host_for(user), first, "{user} moved");
        }
        distinct.insert(first);
    }
    // Without the header, requests spread (10 calls reach more than one endpoint, as Istio's test).
    let spread: std::collections::HashSet<_> = (0..10).map(|_| get(g.port(80), "/", &[]).field("Hostname")).collect();
    assert!(spread.len() > 1);
    assert!(!distinct.is_empty());
}

/// The `meshgate_worker_downstream_cx_total` counts, worker by worker.
fn worker_connections(g: &Gate) -> Vec<u64> {
    g.admin_get("/stats/prometheus")
        .lines()
        .filter(|l| l.starts_with("meshgate_worker_downstream_cx_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect()
}

#[test]
fn connections_spread_over_every_worker_and_each_worker_proxies() {
    let (v1, v2) = (echo("reviews", "v1"), echo("reviews", "v2"));
    let g = gate_with(&config(&v1, &v2, "v1", ""), &[80], &["--workers", "3"]);
    assert_eq!(worker_connections(&g), vec![0, 0, 0]);
    // Each request on a connection of its own (support::get sends `Connection: close`); the
    // kernel spreads new connections over the workers' sockets by their addresses.
    for _ in 0..30 {
        assert_eq!(version_of(&g).as_deref(), Some("v1"));
    }
    let counts = worker_connections(&g);
    assert_eq!(counts.iter().sum::<u64>(), 30, "{counts:?}");
    // All 30 on one or two of three workers: about 3 in 10^5 (2 * (2/3)^30).
    assert!(counts.iter().all(|n| *n > 0), "{counts:?}");
}
