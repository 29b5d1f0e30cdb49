//! TCP routing and TLS passthrough on the wire, with real clients: TCP sockets and openssl
//! s_client. Weighted TCP routes, TLS terminated then routed as TCP, passthrough by SNI (and
//! AUTO_PASSTHROUGH), connection limits.

#![allow(clippy::expect_used, clippy::unwrap_used)] // Test code: a failure should panic.

mod support;

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use support::tls::*;
use support::*;

#[test]
fn passthrough_routes_by_sni_and_the_backend_certificate_reaches_the_client() {
    let dir = temp_dir("pass");
    let ca = Ca::new(&dir, "backends");
    let (c1, k1) = ca.issue("b1", &["b1.example.com"]);
    let (c2, k2) = ca.issue("b2", &["b2.example.com"]);
    let (a1, a2) = (tls_backend(&c1, &k1, "one"), tls_backend(&c2, &k2, "two"));
    let yaml = format!(
        "{}apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: b, namespace: default}}\nspec:\n  \
         hosts: [b1.example.com, b2.example.com]\n  resolution: STATIC\n  ports: [{{number: 443, name: tls, protocol: TLS}}]\n---\n\
         apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: b1, namespace: default}}\nspec:\n  \
         hosts: [b1.internal]\n  resolution: STATIC\n  ports: [{{number: 443, name: tls, protocol: TLS}}]\n  endpoints: [{{address: 127.0.0.1, ports: {{tls: {}}}}}]\n---\n\
         apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: b2, namespace: default}}\nspec:\n  \
         hosts: [b2.internal]\n  resolution: STATIC\n  ports: [{{number: 443, name: tls, protocol: TLS}}]\n  endpoints: [{{address: 127.0.0.1, ports: {{tls: {}}}}}]\n---\n\
         apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: pass, namespace: default}}\nspec:\n  \
         hosts: [b1.example.com, b2.example.com]\n  gateways: [istio-system/gw]\n  tls:\n  \
         - match: [{{sniHosts: [b1.example.com]}}]\n    route: [{{destination: {{host: b1.internal, port: {{number: 443}}}}}}]\n  \
         - match: [{{sniHosts: [b2.example.com]}}]\n    route: [{{destination: {{host: b2.internal, port: {{number: 443}}}}}}]\n---\n",
        gateway("  - port: {number: 443, name: tls, protocol: TLS}\n    hosts: [b1.example.com, b2.example.com]\n    tls: {mode: PASSTHROUGH}\n"),
        a1.port(),
        a2.port()
    );
    let g = gate(&yaml, &[443]);
    let ca_file = ca.ca_file("backends");
    for (sni, body) in [("b1.example.com", "backend=one"), ("b2.example.com", "backend=two")] {
        let out = s_client(
            g.port(443),
            &[
                "-servername",
                sni,
                "-CAfile",
                &ca_file,
                "-verify_return_error",
                "-ign_eof",
            ],
        );
        // (The backend closes after its line, so -ign_eof ends.)
        assert_eq!(subject_cn(&out).as_deref(), Some(sni), "{out}");
        assert!(out.contains("Verify return code: 0 (ok)"), "{out}");
        assert!(out.contains(body), "{out}");
    }
    g.wait_log("outbound|443||b2.internal");
}

fn tcp_config(v1: &EchoThread, v2: &EchoThread, server: &str) -> String {
    format!(
        "{}apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: tcp-echo, namespace: default}}\nspec:\n  \
         hosts: [tcp-echo.default.svc.cluster.local]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  addresses: [240.0.0.10]\n  \
         ports: [{{number: 9000, name: tcp, protocol: TCP}}]\n  endpoints:\n  \
         - {{address: 127.0.0.1, ports: {{tcp: {}}}, labels: {{version: v1}}}}\n  \
         - {{address: 127.0.0.1, ports: {{tcp: {}}}, labels: {{version: v2}}}}\n---\n\
         apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: tcp-echo, namespace: default}}\nspec:\n  \
         host: tcp-echo\n  subsets: [{{name: v1, labels: {{version: v1}}}}, {{name: v2, labels: {{version: v2}}}}]\n---\n\
         apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: tcp-echo, namespace: default}}\nspec:\n  \
         hosts: ['*']\n  gateways: [istio-system/gw]\n  tcp:\n  - match: [{{port: 31400}}]\n    route:\n    \
         - {{destination: {{host: tcp-echo, port: {{number: 9000}}, subset: v1}}, weight: 80}}\n    \
         - {{destination: {{host: tcp-echo, port: {{number: 9000}}, subset: v2}}, weight: 20}}\n---\n",
        gateway(server),
        v1.tcp[0].port(),
        v2.tcp[0].port()
    )
}

fn tcp_echoes() -> (EchoThread, EchoThread) {
    let v1 = Echo::builder("tcp-echo")
        .version("v1")
        .tcp_loopback()
        .start_in_thread()
        .unwrap();
    let v2 = Echo::builder("tcp-echo")
        .version("v2")
        .tcp_loopback()
        .start_in_thread()
        .unwrap();
    (v1, v2)
}

/// Sends `msg`, half-closes, and reads everything back.
fn tcp_exchange(addr: std::net::SocketAddr, msg: &[u8]) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(msg).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn tcp_weighted_80_20_over_500_connections_with_half_close() {
    let (v1, v2) = tcp_echoes();
    let g = gate(
        &tcp_config(
            &v1,
            &v2,
            "  - port: {number: 31400, name: tcp, protocol: TCP}\n    hosts: ['*']\n",
        ),
        &[31400],
    );
    let addr = g.port(31400);
    let out = tcp_exchange(addr, b"hello over tcp\n");
    assert!(
        out.ends_with("hello over tcp\n"),
        "half-close passed on and the echo came back: {out}"
    );
    let n = 500;
    let v2_count = (0..n)
        .filter(|_| tcp_exchange(addr, b"x").contains("ServiceVersion=v2"))
        .count();
    // Binomial(500, 0.2): mean 100, sd ~8.9; ±45 is 5 sd.
    assert!((55..=145).contains(&v2_count), "v2 got {v2_count} of {n}");
    g.wait_log("\"- - -\" 0 - - - \"-\" 1 ");
}

#[test]
fn tls_terminated_tcp_follows_tcp_routes() {
    let dir = temp_dir("tlstcp");
    let ca = Ca::new(&dir, "main");
    let (crt, key) = ca.issue("t", &["tcp.example.com"]);
    let (v1, v2) = tcp_echoes();
    let server = format!(
        "  - port: {{number: 31400, name: tls, protocol: TLS}}\n    hosts: [tcp.example.com]\n    tls: {{mode: SIMPLE, serverCertificate: {crt}, privateKey: {key}}}\n"
    );
    let g = gate(&tcp_config(&v1, &v2, &server), &[31400]);
    // A rustls client: handshake with SNI, send a line, close our side, read to the end.
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_file(ca.ca_file("main")).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("tcp.example.com").unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut sock = std::net::TcpStream::connect(g.port(31400)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    tls.write_all(b"ping over tls\n").unwrap();
    let mut got = String::new();
    let mut buf = [0u8; 4096];
    while !got.contains("ping over tls") {
        let n = tls.read(&mut buf).unwrap();
        assert!(n > 0, "closed early: {got}");
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(got.contains("Service=tcp-echo") && got.contains("Proto=TCP"), "{got}");
}

#[test]
fn auto_passthrough_takes_the_cluster_from_the_sni() {
    let dir = temp_dir("auto");
    let ca = Ca::new(&dir, "backends");
    let (c1, k1) = ca.issue("b1", &["b1.internal"]);
    let a1 = tls_backend(&c1, &k1, "auto");
    let yaml = format!(
        "{}apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: b1, namespace: default}}\nspec:\n  \
         hosts: [b1.internal]\n  resolution: STATIC\n  ports: [{{number: 443, name: tls, protocol: TLS}}]\n  \
         endpoints: [{{address: 127.0.0.1, ports: {{tls: {}}}}}]\n---\n",
        gateway("  - port: {number: 15443, name: tls, protocol: TLS}\n    hosts: ['*.internal']\n    tls: {mode: AUTO_PASSTHROUGH}\n"),
        a1.port()
    );
    let g = gate(&yaml, &[15443]);
    let out = s_client(
        g.port(15443),
        &["-servername", "outbound_.443_._.b1.internal", "-ign_eof"],
    );
    assert_eq!(subject_cn(&out).as_deref(), Some("b1.internal"), "{out}");
    assert!(out.contains("backend=auto"), "{out}");
}

#[test]
fn tcp_max_connections_closes_the_overflow() {
    let (v1, v2) = tcp_echoes();
    let yaml = tcp_config(
        &v1,
        &v2,
        "  - port: {number: 31400, name: tcp, protocol: TCP}\n    hosts: ['*']\n",
    )
    .replace(
        "host: tcp-echo\n  subsets:",
        "host: tcp-echo\n  trafficPolicy: {connectionPool: {tcp: {maxConnections: 1}}}\n  subsets:",
    )
    // Circuit breakers are per cluster: send every session to one subset.
    .replace("weight: 80", "weight: 100")
    .replace("weight: 20", "weight: 0");
    let g = gate(&yaml, &[31400]);
    // The first session holds the only connection (it reads the echo's greeting to be sure).
    let mut first = std::net::TcpStream::connect(g.port(31400)).unwrap();
    first.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 64];
    assert!(first.read(&mut buf).unwrap() > 0);
    // A second session is closed at once: EOF with no bytes.
    let mut second = std::net::TcpStream::connect(g.port(31400)).unwrap();
    second.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    let _ = second.read_to_end(&mut got);
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    g.wait_log("\"- - -\" 0 UO ");
    drop(first);
}

#[test]
fn passthrough_egress_for_a_wildcard_service_entry_host() {
    let dir = temp_dir("wild");
    let ca = Ca::new(&dir, "wiki");
    let (crt, key) = ca.issue("wiki", &["*.wiki.example.com"]);
    let backend = tls_backend(&crt, &key, "wiki");
    // Istio's wildcard egress task, on an egress gateway: PASSTHROUGH for *.wiki.example.com.
    let yaml = format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: istio-system}}\nspec:\n  \
         selector: {{istio: egressgateway}}\n  servers:\n  - port: {{number: 443, name: tls, protocol: TLS}}\n    \
         hosts: ['*.wiki.example.com']\n    tls: {{mode: PASSTHROUGH}}\n---\n\
         apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: wiki, namespace: istio-system}}\nspec:\n  \
         hosts: ['*.wiki.example.com']\n  resolution: STATIC\n  ports: [{{number: 443, name: tls, protocol: TLS}}]\n  \
         endpoints: [{{address: 127.0.0.1, ports: {{tls: {}}}}}]\n---\n\
         apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: wiki, namespace: istio-system}}\nspec:\n  \
         hosts: ['*.wiki.example.com']\n  gateways: [gw]\n  tls:\n  - match: [{{sniHosts: ['*.wiki.example.com']}}]\n    \
         route: [{{destination: {{host: '*.wiki.example.com', port: {{number: 443}}}}}}]\n---\n",
        backend.port()
    );
    let g = gate_with(&yaml, &[443], &["--labels", "istio=egressgateway"]);
    for sni in ["en.wiki.example.com", "de.wiki.example.com"] {
        let out = s_client(
            g.port(443),
            &["-servername", sni, "-CAfile", &ca.ca_file("wiki"), "-ign_eof"],
        );
        assert!(out.contains("backend=wiki"), "{sni}: {out}");
    }
    let out = s_client(g.port(443), &["-servername", "wiki.example.com", "-ign_eof"]);
    assert!(
        !out.contains("backend=wiki"),
        "the apex is not covered by the wildcard: {out}"
    );
}
