//! The sidecar role (`--role sidecar`): an explicit proxy that applies VirtualServices bound to
//! `mesh`, ServiceEntries and `outboundTrafficPolicy` (REGISTRY_ONLY / ALLOW_ANY), for HTTP
//! (absolute-form) and CONNECT.

#![allow(clippy::expect_used, clippy::unwrap_used)] // Test code: a failure should panic.

mod support;

use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::*;

/// An "unregistered" HTTP server that counts the connections it accepts.
fn counting_server() -> (std::net::SocketAddr, Arc<AtomicU64>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicU64::new(0));
    let c = count.clone();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { continue };
            c.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\nconnection: close\r\n\r\noriginal\n");
            });
        }
    });
    (addr, count)
}

fn config(http_echo: &EchoThread, tcp_echo: &EchoThread) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: registered, namespace: default}}\nspec:\n  \
         hosts: [registered.example.com]\n  location: MESH_EXTERNAL\n  resolution: STATIC\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  \
         endpoints: [{{address: 127.0.0.1, ports: {{http: {}}}}}]\n---\n\
         apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: tcp-svc, namespace: default}}\nspec:\n  \
         hosts: [tcp-svc.example.com]\n  addresses: [240.0.0.20]\n  resolution: STATIC\n  ports: [{{number: 9000, name: tcp, protocol: TCP}}]\n  \
         endpoints: [{{address: 127.0.0.1, ports: {{tcp: {}}}}}]\n---\n\
         apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: registered, namespace: default}}\nspec:\n  \
         hosts: [registered.example.com]\n  http:\n  - match: [{{uri: {{exact: /teapot}}}}]\n    directResponse: {{status: 418}}\n  \
         - route: [{{destination: {{host: registered.example.com}}}}]\n---\n",
        http_echo.http[0].port(),
        tcp_echo.tcp[0].port()
    )
}

fn sidecar(yaml: &str, mode: &str) -> Gate {
    let dir = temp_dir("mesh");
    let mesh = dir.join("mesh.yaml");
    std::fs::write(&mesh, format!("outboundTrafficPolicy: {{mode: {mode}}}\n")).unwrap();
    gate_with(
        yaml,
        &[],
        &[
            "--role",
            "sidecar",
            "--outbound",
            "127.0.0.1:0",
            "--mesh",
            mesh.to_str().unwrap(),
        ],
    )
}

fn via(g: &Gate, url: &str) -> Resp {
    proxy_get(g.port(15001), url)
}

/// CONNECT through the proxy; returns the status and, on 200, what the tunnel gave back for `msg`.
fn tunnel(g: &Gate, authority: &str, msg: &[u8]) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(g.port(15001)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes())
        .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).unwrap_or(0) == 0 {
            break;
        }
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    if code != 200 {
        return (code, head);
    }
    s.write_all(msg).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = String::new();
    let _ = s.read_to_string(&mut rest);
    (code, rest)
}

#[test]
fn registry_only_blocks_unregistered_hosts_without_connecting() {
    let (h, t) = (
        echo("registered", "v1"),
        Echo::builder("tcp-svc").tcp_loopback().start_in_thread().unwrap(),
    );
    let g = sidecar(&config(&h, &t), "REGISTRY_ONLY");
    let r = via(&g, "http://registered.example.com/hello");
    assert_eq!(r.status, 200);
    assert!(
        r.body.contains("Service=registered") && r.body.contains("URL=/hello"),
        "{}",
        r.body
    );
    assert_eq!(
        via(&g, "http://registered.example.com/teapot").status,
        418,
        "the mesh VirtualService applies"
    );
    let (addr, count) = counting_server();
    let r = via(&g, &format!("http://{addr}/"));
    assert_eq!(r.status, 502);
    assert_eq!(
        count.load(Ordering::SeqCst),
        0,
        "no connection reached the unregistered host"
    );
    assert!(g.access_log().contains("BlackHoleCluster"), "{}", g.access_log());
    // CONNECT: a registered TCP service tunnels; an unregistered one is refused.
    let (code, out) = tunnel(&g, "tcp-svc.example.com:9000", b"ping\n");
    assert_eq!(code, 200);
    assert!(out.contains("Service=tcp-svc") && out.ends_with("ping\n"), "{out}");
    let (code, _) = tunnel(&g, &addr.to_string(), b"x");
    assert_eq!(code, 502);
    assert_eq!(count.load(Ordering::SeqCst), 0);
}

#[test]
fn allow_any_passes_unregistered_hosts_to_the_original_destination() {
    let (h, t) = (
        echo("registered", "v1"),
        Echo::builder("tcp-svc").tcp_loopback().start_in_thread().unwrap(),
    );
    let g = sidecar(&config(&h, &t), "ALLOW_ANY");
    let (addr, count) = counting_server();
    let r = via(&g, &format!("http://{addr}/"));
    assert_eq!((r.status, r.body.as_str()), (200, "original\n"));
    assert_eq!(count.load(Ordering::SeqCst), 1);
    assert!(g.access_log().contains("PassthroughCluster"), "{}", g.access_log());
    let (code, out) = tunnel(&g, &t.tcp[0].to_string(), b"direct\n");
    assert_eq!(code, 200);
    assert!(out.ends_with("direct\n"), "{out}");
    assert_eq!(via(&g, "http://registered.example.com/teapot").status, 418);
}

#[test]
fn resolution_none_speaks_h2_to_the_original_destination_of_an_http2_port() {
    let (a, b) = (echo("h2-a", "v1"), echo("h2-b", "v1"));
    let entry = |e: &EchoThread| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: h2-{port}, namespace: default}}\nspec:\n  \
             hosts: [localhost]\n  resolution: NONE\n  ports: [{{number: {port}, name: http2, protocol: HTTP2}}]\n---\n",
            port = e.http[0].port()
        )
    };
    let g = sidecar(&format!("{}{}", entry(&a), entry(&b)), "REGISTRY_ONLY");
    for (e, service) in [(&a, "h2-a"), (&b, "h2-b"), (&a, "h2-a")] {
        let r = via(&g, &format!("http://localhost:{}/h2", e.http[0].port()));
        assert_eq!(r.status, 200, "{}", g.stderr());
        assert_eq!(r.field("Service").as_deref(), Some(service), "{}", r.body);
        assert_eq!(r.field("Proto").as_deref(), Some("HTTP/2.0"), "{}", r.body);
        assert_eq!(r.field("URL").as_deref(), Some("/h2"), "{}", r.body);
    }
}

#[test]
fn resolution_none_goes_to_the_original_destination() {
    let (addr, count) = counting_server();
    // `localhost` is registered with resolution NONE: no endpoints, the request's own host is used.
    let yaml = format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: local, namespace: default}}\nspec:\n  \
         hosts: [localhost]\n  resolution: NONE\n  ports: [{{number: {}, name: http, protocol: HTTP}}]\n---\n",
        addr.port()
    );
    let g = sidecar(&yaml, "REGISTRY_ONLY");
    let r = via(&g, &format!("http://localhost:{}/", addr.port()));
    assert_eq!((r.status, r.body.as_str()), (200, "original\n"), "{}", g.stderr());
    assert_eq!(count.load(Ordering::SeqCst), 1);
    assert!(
        g.access_log().contains(&format!("outbound|{}||localhost", addr.port())),
        "{}",
        g.access_log()
    );
}

#[test]
fn an_absolute_form_target_replaces_the_host_header_on_its_way_through() {
    // RFC 9112 3.2.2: a proxy ignores the Host of an absolute-form request and sends the target's.
    let (h, t) = (
        echo("registered", "v1"),
        Echo::builder("tcp-svc").tcp_loopback().start_in_thread().unwrap(),
    );
    let unregistered = echo("unregistered", "v1");
    let g = sidecar(&config(&h, &t), "ALLOW_ANY");
    let target = unregistered.http[0].to_string();
    let mut s = std::net::TcpStream::connect(g.port(15001)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(
        format!("GET http://{target}/where HTTP/1.1\r\nHost: elsewhere.example.com\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("Service=unregistered"), "{out}");
    assert!(out.contains(&format!("Host={target}")), "{out}");
}

#[test]
fn connect_to_a_resolution_none_service_tunnels_to_where_the_client_asked() {
    let t = Echo::builder("tcp-local").tcp_loopback().start_in_thread().unwrap();
    let port = t.tcp[0].port();
    let yaml = format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: local, namespace: default}}\nspec:\n  \
         hosts: [localhost]\n  resolution: NONE\n  ports: [{{number: {port}, name: tcp, protocol: TCP}}]\n---\n"
    );
    // REGISTRY_ONLY: the tunnel is the registered cluster's, not a passthrough.
    let g = sidecar(&yaml, "REGISTRY_ONLY");
    let (code, out) = tunnel(&g, &format!("localhost:{port}"), b"ping\n");
    assert_eq!(code, 200, "{}", g.stderr());
    assert!(out.contains("Service=tcp-local") && out.ends_with("ping\n"), "{out}");
}
