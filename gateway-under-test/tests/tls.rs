//! TLS termination and SNI on the wire, with real clients: openssl s_client, curl over HTTPS (h2)
//! and a gRPC client. Certificates are made here with rcgen. TCP routing and passthrough are in
//! tcp.rs.

#![allow(clippy::expect_used, clippy::unwrap_used)] // Test code: a failure should panic.

mod support;

use std::process::Command;

use support::tls::*;
use support::*;

fn echo_registry(e: &EchoThread) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: web, namespace: default}}\nspec:\n  \
         hosts: [web.example.com]\n  resolution: STATIC\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  \
         endpoints: [{{address: 127.0.0.1, ports: {{http: {}}}}}]\n---\n\
         apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: web, namespace: default}}\nspec:\n  \
         hosts: ['*']\n  gateways: [istio-system/gw]\n  http:\n  - route: [{{destination: {{host: web.example.com}}}}]\n---\n",
        e.http[0].port()
    )
}

fn curl(args: &[&str]) -> (i32, String) {
    let out = Command::new("curl")
        .args(["-s", "-i", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn sni_selects_among_exact_wildcard_and_default_certificates() {
    let dir = temp_dir("sni");
    let ca = Ca::new(&dir, "main");
    let (a_crt, a_key) = ca.issue("a", &["a.example.com"]);
    let (w_crt, w_key) = ca.issue("wild", &["*.wild.example.com"]);
    let (d_crt, d_key) = ca.issue("default", &["default.example.com"]);
    let e = echo("web", "v1");
    let servers = format!(
        "  - port: {{number: 443, name: https-a, protocol: HTTPS}}\n    hosts: [a.example.com]\n    \
         tls: {{mode: SIMPLE, serverCertificate: {a_crt}, privateKey: {a_key}}}\n  \
         - port: {{number: 443, name: https-wild, protocol: HTTPS}}\n    hosts: ['*.wild.example.com']\n    \
         tls: {{mode: SIMPLE, serverCertificate: {w_crt}, privateKey: {w_key}}}\n  \
         - port: {{number: 443, name: https-any, protocol: HTTPS}}\n    hosts: ['*']\n    \
         tls: {{mode: SIMPLE, serverCertificate: {d_crt}, privateKey: {d_key}}}\n"
    );
    let g = gate(&format!("{}{}", gateway(&servers), echo_registry(&e)), &[443]);
    let addr = g.port(443);
    let cn = |args: &[&str]| subject_cn(&s_client(addr, args));
    assert_eq!(cn(&["-servername", "a.example.com"]).as_deref(), Some("a.example.com"));
    assert_eq!(
        cn(&["-servername", "x.wild.example.com"]).as_deref(),
        Some("*.wild.example.com")
    );
    assert_eq!(
        cn(&["-servername", "wild.example.com"]).as_deref(),
        Some("default.example.com"),
        "a wildcard does not cover the apex"
    );
    assert_eq!(
        cn(&["-servername", "other.test"]).as_deref(),
        Some("default.example.com")
    );
    assert_eq!(
        cn(&["-noservername"]).as_deref(),
        Some("default.example.com"),
        "no SNI: the `*` server"
    );
    // HTTPS with h2 over ALPN, verified against the CA, through to the echo.
    let (code, out) = curl(&[
        "--http2",
        "--cacert",
        &ca.ca_file("main"),
        "--resolve",
        &format!("a.example.com:{}:127.0.0.1", addr.port()),
        &format!("https://a.example.com:{}/secure", addr.port()),
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("HTTP/2 200"), "{out}");
    assert!(out.contains("RequestHeader=X-Forwarded-Proto:https"), "{out}");
    assert!(s_client(addr, &["-servername", "a.example.com", "-alpn", "h2"]).contains("ALPN protocol: h2"));
}

#[test]
fn mutual_and_optional_mutual_client_certificates() {
    let dir = temp_dir("mtls");
    let ca = Ca::new(&dir, "main");
    let rogue = Ca::new(&dir, "rogue");
    let (s_crt, s_key) = ca.issue("server", &["secure.example.com"]);
    let (c_crt, c_key) = ca.issue("client", &["client.example.com"]);
    let (r_crt, r_key) = rogue.issue("rogue-client", &["client.example.com"]);
    let e = echo("web", "v1");
    let main_ca = ca.ca_file("main");
    let servers = format!(
        "  - port: {{number: 443, name: mutual, protocol: HTTPS}}\n    hosts: ['*']\n    \
         tls: {{mode: MUTUAL, serverCertificate: {s_crt}, privateKey: {s_key}, caCertificates: {main_ca}}}\n  \
         - port: {{number: 8443, name: optional, protocol: HTTPS}}\n    hosts: ['*']\n    \
         tls: {{mode: OPTIONAL_MUTUAL, serverCertificate: {s_crt}, privateKey: {s_key}, caCertificates: {main_ca}}}\n"
    );
    let g = gate(&format!("{}{}", gateway(&servers), echo_registry(&e)), &[443, 8443]);
    let url = |port: u16| format!("https://secure.example.com:{port}/");
    let resolve = |port: u16| format!("secure.example.com:{port}:127.0.0.1");
    let call = |port: u16, cert: Option<(&str, &str)>| {
        let mut args = vec![
            "--cacert".to_string(),
            main_ca.clone(),
            "--resolve".into(),
            resolve(port),
            url(port),
        ];
        if let Some((c, k)) = cert {
            args.extend(["--cert".into(), c.into(), "--key".into(), k.into()]);
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        curl(&refs)
    };
    let (m, o) = (g.port(443).port(), g.port(8443).port());
    assert_ne!(call(m, None).0, 0, "MUTUAL refuses a client without a certificate");
    assert_ne!(
        call(m, Some((&r_crt, &r_key))).0,
        0,
        "MUTUAL refuses a certificate from an unknown CA"
    );
    let (code, out) = call(m, Some((&c_crt, &c_key)));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with("HTTP/1.1 200") || out.starts_with("HTTP/2 200"),
        "{out}"
    );
    assert_eq!(
        call(o, None).0,
        0,
        "OPTIONAL_MUTUAL accepts a client without a certificate"
    );
    assert_eq!(call(o, Some((&c_crt, &c_key))).0, 0);
    assert!(
        g.stderr().contains("TLS handshake with"),
        "handshake failures are logged: {}",
        g.stderr()
    );
}

#[test]
fn tls13_only_server_refuses_a_tls12_client() {
    let dir = temp_dir("ver");
    let ca = Ca::new(&dir, "main");
    let (crt, key) = ca.issue("s", &["v.example.com"]);
    let e = echo("web", "v1");
    let servers = format!(
        "  - port: {{number: 443, name: https, protocol: HTTPS}}\n    hosts: ['*']\n    \
         tls: {{mode: SIMPLE, serverCertificate: {crt}, privateKey: {key}, minProtocolVersion: TLSV1_3}}\n"
    );
    let g = gate(&format!("{}{}", gateway(&servers), echo_registry(&e)), &[443]);
    assert!(
        s_client(g.port(443), &["-tls1_3"]).contains("Protocol  : TLSv1.3")
            || s_client(g.port(443), &["-tls1_3"]).contains("TLSv1.3")
    );
    let out = s_client(g.port(443), &["-tls1_2"]);
    assert!(subject_cn(&out).is_none(), "a TLS 1.2 client got a certificate: {out}");
}

#[test]
fn https_redirect_on_the_http_server() {
    let e = echo("web", "v1");
    let servers = "  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [shop.example.com]\n    tls: {httpsRedirect: true}\n";
    let g = gate(&format!("{}{}", gateway(servers), echo_registry(&e)), &[80]);
    let r = get(g.port(80), "/cart?x=1", &[("Host", "shop.example.com")]);
    assert_eq!(
        (r.status, r.header("location")),
        (301, Some("https://shop.example.com/cart?x=1"))
    );
}

#[test]
fn certificate_rotation_without_restart() {
    let dir = temp_dir("rot");
    let ca = Ca::new(&dir, "main");
    let (crt, key) = ca.issue("live", &["old.example.com"]);
    let e = echo("web", "v1");
    let servers = format!(
        "  - port: {{number: 443, name: https, protocol: HTTPS}}\n    hosts: ['*']\n    tls: {{mode: SIMPLE, serverCertificate: {crt}, privateKey: {key}}}\n"
    );
    let g = gate(&format!("{}{}", gateway(&servers), echo_registry(&e)), &[443]);
    assert_eq!(
        subject_cn(&s_client(g.port(443), &[])).as_deref(),
        Some("old.example.com")
    );
    ca.issue("live", &["new.example.com"]);
    g.wait_version(2);
    assert_eq!(
        subject_cn(&s_client(g.port(443), &[])).as_deref(),
        Some("new.example.com")
    );
}

#[test]
fn credential_names_and_client_certificate_pins() {
    let dir = temp_dir("creds");
    let ca = Ca::new(&dir, "main");
    let (s_crt, s_key) = ca.issue("server", &["pin.example.com"]);
    let (good_crt, good_key) = ca.issue("good", &["client.example.com"]);
    let (other_crt, other_key) = ca.issue("other", &["other.example.com"]);
    // Istio's secret layout: one folder per credential name.
    let creds = dir.join("creds");
    std::fs::create_dir_all(creds.join("gw-cred")).unwrap();
    std::fs::copy(&s_crt, creds.join("gw-cred/tls.crt")).unwrap();
    std::fs::copy(&s_key, creds.join("gw-cred/tls.key")).unwrap();
    std::fs::copy(ca.ca_file("main"), creds.join("gw-cred/ca.crt")).unwrap();
    use rustls::pki_types::pem::PemObject;
    let other_der = rustls::pki_types::CertificateDer::from_pem_file(&other_crt).unwrap();
    let other_hash: String = ring::digest::digest(&ring::digest::SHA256, other_der.as_ref())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":");
    let e = echo("web", "v1");
    let servers = format!(
        "  - port: {{number: 443, name: san, protocol: HTTPS}}\n    hosts: ['*']\n    \
         tls: {{mode: MUTUAL, credentialName: gw-cred, subjectAltNames: [client.example.com]}}\n  \
         - port: {{number: 8443, name: hash, protocol: HTTPS}}\n    hosts: ['*']\n    \
         tls: {{mode: MUTUAL, credentialName: gw-cred, verifyCertificateHash: ['{other_hash}']}}\n"
    );
    let g = gate_with(
        &format!("{}{}", gateway(&servers), echo_registry(&e)),
        &[443, 8443],
        &["--credentials", creds.to_str().unwrap()],
    );
    let call = |port: u16, crt: &str, key: &str| {
        curl(&[
            "--cacert",
            &ca.ca_file("main"),
            "--resolve",
            &format!("pin.example.com:{port}:127.0.0.1"),
            "--cert",
            crt,
            "--key",
            key,
            &format!("https://pin.example.com:{port}/"),
        ])
        .0
    };
    let (san, hash) = (g.port(443).port(), g.port(8443).port());
    assert_eq!(call(san, &good_crt, &good_key), 0, "the SAN matches: {}", g.stderr());
    assert_ne!(call(san, &other_crt, &other_key), 0, "the SAN does not match");
    assert_eq!(
        call(hash, &other_crt, &other_key),
        0,
        "the pinned hash matches: {}",
        g.stderr()
    );
    assert_ne!(call(hash, &good_crt, &good_key), 0, "not the pinned certificate");
}

#[test]
fn an_rsa_and_an_ecdsa_certificate_on_one_server() {
    let dir = temp_dir("dual");
    let ca = Ca::new(&dir, "main");
    let (ec_crt, ec_key) = ca.issue("ecdsa", &["dual.example.com"]);
    let (rsa_crt, rsa_key) = (dir.join("rsa.crt"), dir.join("rsa.key"));
    let ok = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=dual-rsa",
        ])
        .args(["-keyout", rsa_key.to_str().unwrap(), "-out", rsa_crt.to_str().unwrap()])
        .output()
        .unwrap()
        .status
        .success();
    assert!(ok, "openssl could not make an RSA certificate");
    let e = echo("web", "v1");
    let servers = format!(
        "  - port: {{number: 443, name: https, protocol: HTTPS}}\n    hosts: ['*']\n    tls:\n      mode: SIMPLE\n      tlsCertificates:\n      \
         - {{serverCertificate: {}, privateKey: {}}}\n      - {{serverCertificate: {ec_crt}, privateKey: {ec_key}}}\n",
        rsa_crt.display(),
        rsa_key.display()
    );
    let g = gate(&format!("{}{}", gateway(&servers), echo_registry(&e)), &[443]);
    let rsa = s_client(g.port(443), &["-sigalgs", "rsa_pss_rsae_sha256:RSA+SHA256"]);
    assert_eq!(subject_cn(&rsa).as_deref(), Some("dual-rsa"), "{rsa}");
    let ec = s_client(g.port(443), &["-sigalgs", "ECDSA+SHA256"]);
    assert_eq!(subject_cn(&ec).as_deref(), Some("dual.example.com"), "{ec}");
}

#[test]
fn istio_mutual_is_refused_and_a_fake_cipher_suite_is_dropped() {
    let dir = temp_dir("refuse");
    let ca = Ca::new(&dir, "main");
    let (crt, key) = ca.issue("s", &["ok.example.com"]);
    let e = echo("web", "v1");
    let servers = format!(
        "  - port: {{number: 443, name: https, protocol: HTTPS}}\n    hosts: [ok.example.com]\n    \
         tls: {{mode: SIMPLE, serverCertificate: {crt}, privateKey: {key}, cipherSuites: [ECDHE-ECDSA-AES128-GCM-SHA256, fake-suite]}}\n  \
         - port: {{number: 443, name: mesh, protocol: HTTPS}}\n    hosts: [mesh.example.com]\n    tls: {{mode: ISTIO_MUTUAL}}\n"
    );
    let g = gate(&format!("{}{}", gateway(&servers), echo_registry(&e)), &[443]);
    assert!(
        g.stderr().contains("ISTIO_MUTUAL needs the mesh's workload identity"),
        "{}",
        g.stderr()
    );
    let (code, out) = curl(&[
        "--cacert",
        &ca.ca_file("main"),
        "--tls-max",
        "1.2",
        "--resolve",
        &format!("ok.example.com:{}:127.0.0.1", g.port(443).port()),
        &format!("https://ok.example.com:{}/", g.port(443).port()),
    ]);
    assert_eq!(code, 0, "TLS 1.2 with the one valid suite: {out}");
}

#[test]
fn grpc_over_tls_with_a_real_grpc_client() {
    use grpc_client::{EchoRequest, EchoResponse};
    let dir = temp_dir("grpctls");
    let ca = Ca::new(&dir, "main");
    let (crt, key) = ca.issue("g", &["grpc.example.com"]);
    let e = grpc_echo("echo", "v1");
    let yaml = format!(
        "{}apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: echo, namespace: default}}\nspec:\n  \
         hosts: [echo.example.com]\n  resolution: STATIC\n  ports: [{{number: 7070, name: grpc, protocol: GRPC}}]\n  \
         endpoints: [{{address: 127.0.0.1, ports: {{grpc: {}}}}}]\n---\n\
         apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: echo, namespace: default}}\nspec:\n  \
         hosts: [grpc.example.com]\n  gateways: [istio-system/gw]\n  http:\n  - route: [{{destination: {{host: echo.example.com}}}}]\n---\n",
        gateway(&format!(
            "  - port: {{number: 443, name: https, protocol: HTTPS}}\n    hosts: [grpc.example.com]\n    tls: {{mode: SIMPLE, serverCertificate: {crt}, privateKey: {key}}}\n"
        )),
        e.grpc[0].port()
    );
    let g = gate(&yaml, &[443]);
    let ca_pem = std::fs::read_to_string(ca.ca_file("main")).unwrap();
    let port = g.port(443).port();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let text = rt.block_on(async move {
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(ca_pem))
            .domain_name("grpc.example.com");
        let channel = tonic::transport::Endpoint::from_shared(format!("https://127.0.0.1:{port}"))
            .unwrap()
            .origin("https://grpc.example.com".parse().unwrap())
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.unwrap();
        let codec = tonic_prost::ProstCodec::<EchoRequest, EchoResponse>::default();
        let path = http::uri::PathAndQuery::from_static("/proto.EchoTestService/Echo");
        grpc.unary(
            tonic::Request::new(EchoRequest {
                message: "over tls".into(),
            }),
            path,
            codec,
        )
        .await
        .map(|r| r.into_inner().message)
    });
    let text = text.expect("gRPC call");
    assert!(
        text.contains("Echo=over tls") && text.contains("Host=grpc.example.com"),
        "{text}"
    );
    assert!(g.access_log().contains("HTTP/2"), "{}", g.access_log());
}

#[test]
fn an_https_response_that_ends_its_connection_ends_with_close_notify() {
    use rustls::pki_types::pem::PemObject;
    use std::io::{Read, Write};
    let dir = temp_dir("close-notify");
    let ca = Ca::new(&dir, "main");
    let (crt, key) = ca.issue("a", &["a.example.com"]);
    let e = echo("web", "v1");
    let servers = format!(
        "  - port: {{number: 443, name: https, protocol: HTTPS}}\n    hosts: ['*']\n    \
         tls: {{mode: SIMPLE, serverCertificate: {crt}, privateKey: {key}}}\n"
    );
    let g = gate(&format!("{}{}", gateway(&servers), echo_registry(&e)), &[443]);
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_file(ca.ca_file("main")).unwrap())
        .unwrap();
    let config =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("a.example.com").unwrap();
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    let tcp = std::net::TcpStream::connect(g.port(443)).unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(b"GET / HTTP/1.1\r\nHost: a.example.com\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    // rustls reads a close without TLS's close_notify as UnexpectedEof.
    tls.read_to_end(&mut got).unwrap();
    assert!(
        got.starts_with(b"HTTP/1.1 200 OK\r\n"),
        "{}",
        String::from_utf8_lossy(&got)
    );
}
