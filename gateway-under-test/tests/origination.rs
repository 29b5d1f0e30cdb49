//! Egress gateway with TLS origination (DestinationRule `tls`): plain HTTP in, TLS to an
//! "external" HTTPS service on loopback with its own CA; SIMPLE and MUTUAL succeed; a wrong CA, a
//! wrong SAN and an expired certificate fail with 503 UF; DISABLE against a TLS port fails.

#![allow(clippy::expect_used, clippy::unwrap_used)] // Test code: a failure should panic.

mod support;

use std::convert::Infallible;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use support::*;

/// An "external" HTTPS service; answers `external sni=<sni> host=<host>`. `client_ca`: require
/// client certificates from that CA.
fn external(crt: &str, key: &str, client_ca: Option<&str>) -> std::net::SocketAddr {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = vec![rustls::pki_types::CertificateDer::from_pem_file(crt).unwrap()];
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(key).unwrap();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(rustls::pki_types::CertificateDer::from_pem_file(ca).unwrap())
                .unwrap();
            builder.with_client_cert_verifier(
                rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .unwrap(),
            )
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key).unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(l.local_addr().unwrap()).unwrap();
            loop {
                let (s, _) = l.accept().await.unwrap();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(s).await else { return };
                    let sni = tls.get_ref().1.server_name().unwrap_or("-").to_string();
                    let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let host = req
                            .headers()
                            .get("host")
                            .and_then(|h| h.to_str().ok())
                            .unwrap_or("-")
                            .to_string();
                        let body = format!("external sni={sni} host={host}\n");
                        async move {
                            Ok::<_, Infallible>(hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(
                                body,
                            ))))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
    });
    rx.recv().unwrap()
}

/// The egress gateway of Istio's "egress gateway with TLS origination" task: plain HTTP for
/// api.example.com on port 80, routed to port 443 of the ServiceEntry, TLS originated there.
fn egress(port: u16, tls: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: egress, namespace: istio-system}}\nspec:\n  \
         selector: {{istio: egressgateway}}\n  servers:\n  - port: {{number: 80, name: http, protocol: HTTP}}\n    hosts: [api.example.com]\n---\n\
         apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: api, namespace: istio-system}}\nspec:\n  \
         hosts: [api.example.com]\n  location: MESH_EXTERNAL\n  resolution: STATIC\n  ports: [{{number: 443, name: https, protocol: HTTPS}}]\n  \
         endpoints: [{{address: 127.0.0.1, ports: {{https: {port}}}}}]\n---\n\
         apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: api, namespace: istio-system}}\nspec:\n  \
         hosts: [api.example.com]\n  gateways: [egress]\n  http:\n  - route: [{{destination: {{host: api.example.com, port: {{number: 443}}}}}}]\n---\n\
         apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: api, namespace: istio-system}}\nspec:\n  \
         host: api.example.com\n  trafficPolicy:\n    portLevelSettings:\n    - port: {{number: 443}}\n      tls: {tls}\n---\n"
    )
}

fn call(g: &Gate) -> Resp {
    get(g.port(80), "/", &[("Host", "api.example.com")])
}

fn egress_gate(yaml: &str) -> Gate {
    gate_with(yaml, &[80], &["--labels", "istio=egressgateway"])
}

#[test]
fn simple_origination_verifies_the_external_service() {
    let dir = temp_dir("orig");
    let pki = Ca::new(&dir, "ext");
    let (crt, key) = pki.issue("api", &["api.example.com"]);
    let port = external(&crt, &key, None).port();
    let g = egress_gate(&egress(
        port,
        &format!("{{mode: SIMPLE, caCertificates: {}}}", pki.ca_file("ext")),
    ));
    let r = call(&g);
    assert_eq!(r.status, 200, "{}", g.stderr());
    assert_eq!(r.body, "external sni=api.example.com host=api.example.com\n");
    // An explicit sni and the SAN the certificate carries.
    let g = egress_gate(&egress(
        port,
        &format!(
            "{{mode: SIMPLE, caCertificates: {}, sni: api.example.com, subjectAltNames: [api.example.com]}}",
            pki.ca_file("ext")
        ),
    ));
    assert_eq!(call(&g).status, 200);
}

#[test]
fn wrong_ca_wrong_san_and_expired_certificates_fail_with_uf() {
    let dir = temp_dir("origbad");
    let pki = Ca::new(&dir, "ext");
    let other = Ca::new(&dir, "other");
    let (crt, key) = pki.issue("api", &["api.example.com"]);
    let (old_crt, old_key) = pki.issue_expired("old", &["api.example.com"]);
    let good = external(&crt, &key, None).port();
    let expired = external(&old_crt, &old_key, None).port();
    let cases = [
        (
            good,
            format!("{{mode: SIMPLE, caCertificates: {}}}", other.ca_file("other")),
            "wrong CA",
        ),
        (
            good,
            format!(
                "{{mode: SIMPLE, caCertificates: {}, subjectAltNames: [spiffe-other.example.com]}}",
                pki.ca_file("ext")
            ),
            "wrong SAN",
        ),
        (
            expired,
            format!("{{mode: SIMPLE, caCertificates: {}}}", pki.ca_file("ext")),
            "expired",
        ),
    ];
    for (port, tls, what) in cases {
        let g = egress_gate(&egress(port, &tls));
        let r = call(&g);
        assert_eq!(r.status, 503, "{what}: {}", r.body);
        // As Envoy 1.40: the reason is in the access log, not in the body.
        assert!(
            r.body
                .starts_with("upstream connect error or disconnect/reset before headers.")
                && r.body.ends_with("reset reason: remote connection failure"),
            "{what}: {}",
            r.body
        );
        assert!(
            g.access_log().contains(" 503 URX,UF ") || g.access_log().contains(" 503 UF "),
            "{what}: {}",
            g.access_log()
        );
        assert!(
            g.access_log().contains("TLS error"),
            "{what}: the transport failure reason is logged: {}",
            g.access_log()
        );
    }
}

#[test]
fn mutual_origination_and_disable_against_a_tls_port() {
    let dir = temp_dir("origm");
    let pki = Ca::new(&dir, "ext");
    let (crt, key) = pki.issue("api", &["api.example.com"]);
    let (c_crt, c_key) = pki.issue("client", &["egress.example.com"]);
    let port = external(&crt, &key, Some(&pki.ca_file("ext"))).port();
    let ca = pki.ca_file("ext");
    let g = egress_gate(&egress(
        port,
        &format!("{{mode: MUTUAL, caCertificates: {ca}, clientCertificate: {c_crt}, privateKey: {c_key}}}"),
    ));
    assert_eq!(call(&g).status, 200, "{}", g.stderr());
    let g = egress_gate(&egress(port, &format!("{{mode: SIMPLE, caCertificates: {ca}}}")));
    assert_eq!(
        call(&g).status,
        503,
        "the external service requires a client certificate"
    );
    let g = egress_gate(&egress(port, "{mode: DISABLE}"));
    let r = call(&g);
    assert_ne!(r.status, 200, "plain HTTP to a TLS port cannot succeed: {}", r.body);
}

#[test]
fn two_hops_app_sidecar_egress_gateway_tls_to_the_external_service() {
    two_hops(false);
}

#[test]
fn two_hops_with_mutual_tls_between_sidecar_and_egress_gateway() {
    two_hops(true);
}

/// Istio's "egress gateway with TLS origination" task: app -> sidecar (plain HTTP to
/// api.example.com) -> egress gateway (plain, or mutual TLS) -> TLS to the external service.
fn two_hops(mtls: bool) {
    let dir = temp_dir("twohop");
    let pki = Ca::new(&dir, "ext");
    let (crt, key) = pki.issue("api", &["api.example.com"]);
    let ext = external(&crt, &key, None).port();
    let mesh_ca = Ca::new(&dir, "mesh");
    let (gw_crt, gw_key) = mesh_ca.issue("egressgw", &["api.example.com"]);
    let (sc_crt, sc_key) = mesh_ca.issue("sidecar", &["sidecar.example.com"]);
    let (hop_port, server) = if mtls {
        let tls = format!(
            "{{mode: MUTUAL, serverCertificate: {gw_crt}, privateKey: {gw_key}, caCertificates: {}}}",
            mesh_ca.ca_file("mesh")
        );
        (443, format!("  - port: {{number: 443, name: https, protocol: HTTPS}}\n    hosts: [api.example.com]\n    tls: {tls}\n"))
    } else {
        (
            80,
            "  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [api.example.com]\n".to_string(),
        )
    };
    // One config for both roles: the VirtualService binds to the egress gateway and to `mesh`,
    // and `match.gateways` tells the two hops apart.
    let common = format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: egress, namespace: istio-system}}\nspec:\n  \
         selector: {{istio: egressgateway}}\n  servers:\n{server}---\n\
         apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: api, namespace: istio-system}}\nspec:\n  \
         hosts: [api.example.com]\n  location: MESH_EXTERNAL\n  resolution: STATIC\n  \
         ports: [{{number: 80, name: http, protocol: HTTP}}, {{number: 443, name: https, protocol: HTTPS}}]\n  \
         endpoints: [{{address: 127.0.0.1, ports: {{https: {ext}, http: 9}}}}]\n---\n\
         apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: api, namespace: istio-system}}\nspec:\n  \
         hosts: [api.example.com]\n  gateways: [egress, mesh]\n  http:\n  \
         - match: [{{gateways: [mesh], port: 80}}]\n    route: [{{destination: {{host: egressgw.internal, port: {{number: {hop_port}}}}}}}]\n  \
         - match: [{{gateways: [egress], port: {hop_port}}}]\n    route: [{{destination: {{host: api.example.com, port: {{number: 443}}}}}}]\n---\n\
         apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: api, namespace: istio-system}}\nspec:\n  \
         host: api.example.com\n  trafficPolicy:\n    portLevelSettings:\n    - port: {{number: 443}}\n      \
         tls: {{mode: SIMPLE, caCertificates: {}}}\n---\n",
        pki.ca_file("ext")
    );
    let gw = gate_with(&common, &[hop_port], &["--labels", "istio=egressgateway"]);
    let mut registry = format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: egressgw, namespace: istio-system}}\nspec:\n  \
         hosts: [egressgw.internal]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{{number: {hop_port}, name: http, protocol: HTTP}}]\n  \
         endpoints: [{{address: 127.0.0.1, ports: {{http: {}}}}}]\n---\n",
        gw.port(hop_port).port()
    );
    if mtls {
        registry.push_str(&format!(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: egressgw, namespace: istio-system}}\nspec:\n  \
             host: egressgw.internal\n  trafficPolicy:\n    tls: {{mode: MUTUAL, clientCertificate: {sc_crt}, privateKey: {sc_key}, caCertificates: {}, sni: api.example.com}}\n---\n",
            mesh_ca.ca_file("mesh")
        ));
    }
    let args = [
        "--role",
        "sidecar",
        "--outbound",
        "127.0.0.1:0",
        "--namespace",
        "istio-system",
    ];
    let sidecar = gate_with(&format!("{common}{registry}"), &[], &args);
    let r = proxy_get(sidecar.port(15001), "http://api.example.com/data");
    assert_eq!(r.status, 200, "{} / {}", sidecar.stderr(), gw.stderr());
    assert_eq!(r.body, "external sni=api.example.com host=api.example.com\n");
    assert!(
        sidecar
            .access_log()
            .contains(&format!("outbound|{hop_port}||egressgw.internal")),
        "{}",
        sidecar.access_log()
    );
    let gw_log = gw.access_log();
    assert!(gw_log.contains("outbound|443||api.example.com"), "{gw_log}");
    if mtls {
        // The egress gateway terminated the sidecar's mutual TLS: its log line carries the SNI.
        assert!(gw_log.contains(" api.example.com "), "{gw_log}");
    }
}

#[test]
fn resolution_none_originates_tls_to_each_original_destination() {
    // Names need a hosts file of their own (a DestinationRule's one-label host is a short name):
    // the sidecar runs in a network namespace whose /etc/hosts has `tls.example.com`.
    if let Some(why) = mesh_netns::unavailable() {
        eprintln!("skipped: no network namespace here: {why}");
        return;
    }
    let mut net = mesh_netns::Net::new().unwrap();
    let app = net.host("app").unwrap();
    app.resolve(&[("tls.example.com", std::net::Ipv4Addr::LOCALHOST)])
        .unwrap();
    let dir = temp_dir("orignone");
    let pki = Ca::new(&dir, "ext");
    let (crt, key) = pki.issue("tls", &["tls.example.com"]);
    // Two HTTPS services under one host name with resolution NONE: each request goes to its
    // own destination, TLS originated to it.
    let (a, b) = app.within(move || (external(&crt, &key, None), external(&crt, &key, None)));
    let entry = |port: u16| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: tls-{port}, namespace: default}}\nspec:\n  \
             hosts: [tls.example.com]\n  location: MESH_EXTERNAL\n  resolution: NONE\n  ports: [{{number: {port}, name: http, protocol: HTTP}}]\n---\n"
        )
    };
    let yaml = format!(
        "{}{}apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: tls, namespace: default}}\nspec:\n  \
         host: tls.example.com\n  trafficPolicy:\n    tls: {{mode: SIMPLE, caCertificates: {}}}\n---\n",
        entry(a.port()),
        entry(b.port()),
        pki.ca_file("ext")
    );
    let g = gate_by(
        app.command(meshgate_bin()),
        &yaml,
        &[],
        &["--role", "sidecar", "--outbound", "127.0.0.1:0"],
    );
    for addr in [a, b, a] {
        let proxy = g.port(15001);
        let url = format!("http://tls.example.com:{}/", addr.port());
        let r = app.within(move || proxy_get(proxy, &url));
        assert_eq!(r.status, 200, "{}{}", g.stderr(), g.access_log());
        assert_eq!(
            r.body,
            format!("external sni=tls.example.com host=tls.example.com:{}\n", addr.port())
        );
    }
    let log = g.access_log();
    assert!(
        log.contains(&format!("outbound|{}||tls.example.com", b.port())),
        "{log}"
    );
}
