//! TLS termination, SNI, passthrough and TCP routing on the wire, with real clients: openssl
//! s_client, curl over HTTPS (h2), and TCP sockets. Certificates are made here with rcgen.

#![allow(clippy::expect_used, clippy::unwrap_used)] // Test code: a failure should panic.

mod support;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

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

fn gateway(servers: &str) -> String {
    format!("apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: istio-system}}\nspec:\n  servers:\n{servers}---\n")
}

/// `openssl s_client` against `addr`; returns its output (stdout and stderr).
fn s_client(addr: std::net::SocketAddr, args: &[&str]) -> String {
    let mut child = Command::new("openssl")
        .args(["s_client", "-connect", &addr.to_string()])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl");
    // Closing stdin ends the session after the handshake.
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("openssl output");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn subject_cn(out: &str) -> Option<String> {
    out.lines().find_map(|l| l.strip_prefix("subject=")).map(|s| {
        s.trim()
            .trim_start_matches("CN = ")
            .trim_start_matches("CN=")
            .to_string()
    })
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

/// A TLS server (a backend with its own certificate) that answers every connection with `name`.
fn tls_backend(crt: &str, key: &str, name: &'static str) -> std::net::SocketAddr {
    use rustls::pki_types::pem::PemObject;
    let chain = vec![rustls::pki_types::CertificateDer::from_pem_file(crt).unwrap()];
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let config = Arc::new(config);
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { continue };
            let config = config.clone();
            std::thread::spawn(move || {
                let mut conn = rustls::ServerConnection::new(config).unwrap();
                let mut tls = rustls::Stream::new(&mut conn, &mut s);
                let _ = tls.write_all(format!("backend={name}\n").as_bytes());
                let _ = tls.flush();
            });
        }
    });
    addr
}

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
