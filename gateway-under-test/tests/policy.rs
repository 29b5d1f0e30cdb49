//! DestinationRule traffic policy on the wire: circuit breakers (connectionPool), outlier
//! detection, cookie-based consistent hashing; and WebSocket upgrades passing through.

#![allow(clippy::expect_used, clippy::unwrap_used)] // Test code: a failure should panic.

mod support;

use std::io::{Read, Write};
use std::time::Duration;

use support::*;

fn yaml(endpoints: &str, traffic_policy: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: istio-system}}\nspec:\n  \
         servers:\n  - port: {{number: 80, name: http, protocol: HTTP}}\n    hosts: ['*']\n---\n\
         apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: web, namespace: default}}\nspec:\n  \
         hosts: [web.example.com]\n  resolution: STATIC\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  endpoints:\n{endpoints}---\n\
         apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: web, namespace: default}}\nspec:\n  \
         host: web.example.com\n  trafficPolicy:\n{traffic_policy}---\n\
         apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: web, namespace: default}}\nspec:\n  \
         hosts: ['*']\n  gateways: [istio-system/gw]\n  http:\n  - route: [{{destination: {{host: web.example.com}}}}]\n    retries: {{attempts: 0}}\n---\n"
    )
}

fn ep(port: u16) -> String {
    format!("  - {{address: 127.0.0.1, ports: {{http: {port}}}}}\n")
}

#[test]
fn circuit_breaker_overflow_is_503_uo() {
    let e = echo("web", "v1");
    // Istio's circuit-breaking task: one connection, one pending request.
    let policy = "    connectionPool:\n      tcp: {maxConnections: 1}\n      http: {http1MaxPendingRequests: 1}\n";
    let g = gate(&yaml(&ep(e.http[0].port()), policy), &[80]);
    let addr = g.port(80);
    // Six requests at once, each held 2s by the echo: one runs, one waits, four overflow.
    let calls: Vec<_> = (0..6)
        .map(|_| std::thread::spawn(move || get(addr, "/?delay=2s", &[])))
        .collect();
    let results: Vec<Resp> = calls.into_iter().map(|c| c.join().unwrap()).collect();
    let ok = results.iter().filter(|r| r.status == 200).count();
    let overflow: Vec<_> = results.iter().filter(|r| r.status == 503).collect();
    assert_eq!(
        (ok, overflow.len()),
        (2, 4),
        "{:?}",
        results.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    for r in overflow {
        assert_eq!(r.header("x-envoy-overloaded"), Some("true"));
        assert!(r.body.ends_with("reset reason: overflow"), "{}", r.body);
    }
    assert_eq!(g.access_log().matches(" 503 UO ").count(), 4, "{}", g.access_log());
}

#[test]
fn max_requests_overflows_at_once() {
    let e = echo("web", "v1");
    let g = gate(
        &yaml(
            &ep(e.http[0].port()),
            "    connectionPool:\n      http: {http2MaxRequests: 2}\n",
        ),
        &[80],
    );
    let addr = g.port(80);
    let calls: Vec<_> = (0..5)
        .map(|_| std::thread::spawn(move || get(addr, "/?delay=2s", &[]).status))
        .collect();
    let mut codes: Vec<u16> = calls.into_iter().map(|c| c.join().unwrap()).collect();
    codes.sort();
    assert_eq!(codes, [200, 200, 503, 503, 503]);
}

#[test]
fn outlier_detection_ejects_a_failing_endpoint() {
    let good = echo("web", "v1");
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let policy = "    loadBalancer: {simple: ROUND_ROBIN}\n    \
                  outlierDetection: {consecutive5xxErrors: 2, interval: 1s, baseEjectionTime: 1m, maxEjectionPercent: 100}\n";
    let g = gate(
        &yaml(&format!("{}{}", ep(good.http[0].port()), ep(dead)), policy),
        &[80],
    );
    let codes: Vec<u16> = (0..20).map(|_| get(g.port(80), "/", &[]).status).collect();
    // Round robin: the dead endpoint fails twice (requests 2 and 4), is ejected, and every later
    // request reaches the good one.
    assert_eq!(codes.iter().filter(|c| **c == 503).count(), 2, "{codes:?}");
    assert!(codes[4..].iter().all(|c| *c == 200), "{codes:?}");
    let clusters = g.admin_get("/clusters");
    assert!(
        clusters.contains(&format!("127.0.0.1:{dead}::health_flags::/failed_outlier_check")),
        "{clusters}"
    );
    assert!(
        clusters.contains(&format!("127.0.0.1:{dead}::outlier_ejections::1")),
        "{clusters}"
    );
    // Envoy's outlier detection stats: one ejection, for consecutive 5xx, still in force.
    let stats = g.admin_get("/stats/prometheus");
    let cl = "{cluster_name=\"outbound|80||web.example.com\"}";
    for line in [
        format!("envoy_cluster_outlier_detection_ejections_enforced_total{cl} 1\n"),
        format!("envoy_cluster_outlier_detection_ejections_active{cl} 1\n"),
        format!("envoy_cluster_outlier_detection_ejections_enforced_consecutive_5xx{cl} 1\n"),
        format!("envoy_cluster_outlier_detection_ejections_enforced_consecutive_gateway_failure{cl} 0\n"),
        format!("envoy_cluster_outlier_detection_ejections_overflow{cl} 0\n"),
    ] {
        assert!(stats.contains(&line), "{line} in {stats}");
    }
}

#[test]
fn an_ejection_ends_after_its_time_and_max_ejection_percent_holds_the_rest() {
    let dead: Vec<u16> = (0..2)
        .map(|_| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        })
        .collect();
    // Two dead endpoints, at most half of them ejected; gateway errors (connect failures) eject.
    let policy = "    loadBalancer: {simple: ROUND_ROBIN}\n    \
                  outlierDetection: {consecutive5xxErrors: 0, consecutiveGatewayErrors: 1, interval: 1s, baseEjectionTime: 1s, maxEjectionPercent: 50}\n";
    let g = gate(&yaml(&format!("{}{}", ep(dead[0]), ep(dead[1])), policy), &[80]);
    for _ in 0..4 {
        assert_eq!(get(g.port(80), "/", &[]).status, 503);
    }
    let cl = "{cluster_name=\"outbound|80||web.example.com\"}";
    let stats = g.admin_get("/stats/prometheus");
    for line in [
        format!("envoy_cluster_outlier_detection_ejections_enforced_total{cl} 1\n"),
        format!("envoy_cluster_outlier_detection_ejections_enforced_consecutive_gateway_failure{cl} 1\n"),
        format!("envoy_cluster_outlier_detection_ejections_active{cl} 1\n"),
    ] {
        assert!(stats.contains(&line), "{line} in {stats}");
    }
    assert!(
        !stats.contains(&format!("envoy_cluster_outlier_detection_ejections_overflow{cl} 0\n")),
        "the second endpoint's ejection was refused: {stats}"
    );
    // baseEjectionTime x 1 later, the scrape itself sees the ejection over.
    std::thread::sleep(std::time::Duration::from_millis(1300));
    let stats = g.admin_get("/stats/prometheus");
    assert!(
        stats.contains(&format!("envoy_cluster_outlier_detection_ejections_active{cl} 0\n")),
        "{stats}"
    );
}

#[test]
fn all_endpoints_ejected_means_no_healthy_upstream() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let policy = "    outlierDetection: {consecutive5xxErrors: 1, baseEjectionTime: 1m, maxEjectionPercent: 100}\n";
    let g = gate(&yaml(&ep(dead), policy), &[80]);
    assert_eq!(get(g.port(80), "/", &[]).status, 503);
    let r = get(g.port(80), "/", &[]);
    assert_eq!((r.status, r.body.as_str()), (503, "no healthy upstream"));
}

#[test]
fn hash_cookie_with_ttl_is_generated_and_sticks() {
    let echoes: Vec<EchoThread> = (0..3)
        .map(|i| {
            Echo::builder("web")
                .hostname(&format!("web-{i}"))
                .http_loopback()
                .start_in_thread()
                .unwrap()
        })
        .collect();
    let eps: String = echoes.iter().map(|e| ep(e.http[0].port())).collect();
    let policy = "    loadBalancer:\n      consistentHash:\n        httpCookie: {name: user, path: /, ttl: 60s}\n";
    let g = gate(&yaml(&eps, policy), &[80]);
    let first = get(g.port(80), "/", &[]);
    let set = first.header("set-cookie").expect("a generated cookie").to_string();
    assert!(
        set.starts_with("user=") && set.contains("; Path=/") && set.contains("; Max-Age=60"),
        "{set}"
    );
    let cookie = set.split(';').next().unwrap().to_string();
    let host = first.field("Hostname");
    for _ in 0..10 {
        let r = get(g.port(80), "/", &[("Cookie", &cookie)]);
        assert_eq!(r.field("Hostname"), host);
        assert_eq!(r.header("set-cookie"), None);
    }
}

#[test]
fn websocket_upgrades_pass_through() {
    let e = echo("web", "v1");
    // The upgraded connection's bytes are frames, not request heads: no headers timeout for them.
    let g = gate_with(
        &yaml(&ep(e.http[0].port()), "    loadBalancer: {simple: ROUND_ROBIN}\n"),
        &[80],
        &["--request-headers-timeout", "300ms"],
    );
    let mut s = std::net::TcpStream::connect(g.port(80)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: web\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    // A masked text frame "hi"; the echo sends the same bytes back through the gateway.
    let frame = [0x81, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2];
    // Half a frame, then the rest well past the headers timeout.
    s.write_all(&frame[..3]).unwrap();
    std::thread::sleep(Duration::from_millis(800));
    s.write_all(&frame[3..]).unwrap();
    let mut back = [0u8; 8];
    s.read_exact(&mut back).unwrap();
    assert_eq!(back, frame);
}
