//! DNS at the gateway, on a host of the test's own whose /etc/hosts is its DNS: a resolution DNS
//! service spreads new connections over every address of its name (Envoy's STRICT_DNS), a
//! DNS_ROUND_ROBIN one takes the first (LOGICAL_DNS), answers are kept for the mesh's
//! `dnsRefreshRate` and then looked up again, and a failed lookup keeps the last good answer.
//!
//! Needs root and iproute2 (network namespaces); without them the test says why and passes.

#![allow(clippy::expect_used, clippy::unwrap_used)] // Test code: a failure should panic.

mod support;

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use mesh_netns::{Host, Net};
use support::*;

const REFRESH_S: u64 = 5;

fn config() -> String {
    let entry = |name: &str, host: &str, resolution: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  \
             hosts: [{host}]\n  location: MESH_EXTERNAL\n  resolution: {resolution}\n  ports: [{{number: 8080, name: http, protocol: HTTP}}]\n---\n\
             apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  \
             hosts: [{host}]\n  gateways: [gw]\n  http:\n  - route: [{{destination: {{host: {host}, port: {{number: 8080}}}}}}]\n---\n\
             # A connection per request: each one resolves and picks an address.\n\
             apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  \
             host: {host}\n  trafficPolicy: {{connectionPool: {{http: {{maxRequestsPerConnection: 1}}}}}}\n---\n"
        )
    };
    format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: default}}\nspec:\n  \
         selector: {{istio: ingressgateway}}\n  servers:\n  - port: {{number: 80, name: http, protocol: HTTP}}\n    hosts: ['*']\n---\n{}{}",
        entry("multi", "multi.example.com", "DNS"),
        entry("first", "first.example.com", "DNS_ROUND_ROBIN"),
    )
}

/// The services that answered `n` requests for `host`.
fn answered(host: &Host, gate: SocketAddr, name: &'static str, n: usize) -> BTreeSet<String> {
    host.within(move || {
        (0..n)
            .map(|_| {
                let r = get(gate, "/", &[("Host", name)]);
                assert_eq!(r.status, 200, "{}", r.body);
                r.field("Service").unwrap_or_default()
            })
            .collect()
    })
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn dns_answers_are_spread_or_taken_first_kept_until_the_refresh_and_kept_when_lookups_fail() {
    if let Some(why) = mesh_netns::unavailable() {
        eprintln!("skipped: no network namespace here: {why}");
        return;
    }
    let mut net = Net::new().unwrap();
    let gw = net.host("gw").unwrap();
    let (a, b) = (Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 3));
    let both = [
        ("multi.example.com", a),
        ("multi.example.com", b),
        ("first.example.com", a),
        ("first.example.com", b),
    ];
    gw.resolve(&both).unwrap();
    let _echoes = gw.within(move || {
        let at = |ip: Ipv4Addr| SocketAddr::from((ip, 8080));
        (
            Echo::builder("a").http(at(a)).start_in_thread().unwrap(),
            Echo::builder("b").http(at(b)).start_in_thread().unwrap(),
        )
    });
    let dir = temp_dir("dns");
    let mesh = dir.join("mesh.yaml");
    std::fs::write(&mesh, format!("dnsRefreshRate: {REFRESH_S}s\n")).unwrap();
    let g = gate_by(
        gw.command(meshgate_bin()),
        &config(),
        &[80],
        &["--mesh", mesh.to_str().unwrap()],
    );
    let port = g.port(80);
    let looked_up = Instant::now();
    // STRICT_DNS: new connections go round both addresses.
    assert_eq!(
        answered(&gw, port, "multi.example.com", 6),
        set(&["a", "b"]),
        "{}",
        g.stderr()
    );
    // LOGICAL_DNS: always the first address.
    assert_eq!(answered(&gw, port, "first.example.com", 6).len(), 1);
    // The name now has one address; the kept answer holds until the refresh.
    gw.resolve(&[("multi.example.com", b), ("first.example.com", b)])
        .unwrap();
    let seen = answered(&gw, port, "multi.example.com", 6);
    if looked_up.elapsed() < Duration::from_secs(REFRESH_S - 1) {
        assert_eq!(
            seen,
            set(&["a", "b"]),
            "the answer was looked up again before the refresh"
        );
    }
    // After it, the new answer.
    let deadline = Instant::now() + Duration::from_secs(REFRESH_S * 4);
    while answered(&gw, port, "multi.example.com", 4) != set(&["b"]) {
        assert!(Instant::now() < deadline, "the new answer never came: {}", g.stderr());
        std::thread::sleep(Duration::from_millis(250));
    }
    // The name is gone: past the refresh, the last good answer is still used.
    gw.resolve(&[]).unwrap();
    std::thread::sleep(Duration::from_secs(REFRESH_S + 1));
    assert_eq!(answered(&gw, port, "multi.example.com", 4), set(&["b"]));
}
