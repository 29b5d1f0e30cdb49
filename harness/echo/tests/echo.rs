//! The echo workloads on the wire: curl for HTTP/1.1 and h2c, a raw TCP client, and gRPC frames.

#![allow(clippy::expect_used, clippy::unwrap_used)] // Test code: a failure should panic.

use std::io::{Read, Write};
use std::process::Command;

use mesh_echo::{parse_fields, Echo};

fn curl(args: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args(["-s", "-D", "-"])
        .args(args)
        .output()
        .expect("curl");
    let all = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = all.split_once("\r\n\r\n").unwrap_or((&all, ""));
    (head.to_string(), body.to_string())
}

fn field<'a>(fields: &'a [(String, String)], key: &str) -> Option<&'a str> {
    fields.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

#[test]
fn http1_and_h2c_answer_in_istios_format() {
    let echo = Echo::builder("reviews")
        .version("v2")
        .namespace("bookinfo")
        .http_loopback()
        .start_in_thread()
        .expect("echo");
    let port = echo.http[0].port();
    let (head, body) = curl(&["-H", "x-user: jason", &format!("http://127.0.0.1:{port}/a/b?c=1")]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let f = parse_fields(&body);
    assert_eq!(field(&f, "ServiceVersion"), Some("v2"));
    assert_eq!(field(&f, "ServicePort"), Some(port.to_string().as_str()));
    assert_eq!(field(&f, "Host"), Some(format!("127.0.0.1:{port}").as_str()));
    assert_eq!(field(&f, "URL"), Some("/a/b?c=1"));
    assert_eq!(field(&f, "Namespace"), Some("bookinfo"));
    assert_eq!(field(&f, "Method"), Some("GET"));
    assert_eq!(field(&f, "Proto"), Some("HTTP/1.1"));
    assert_eq!(field(&f, "IP"), Some("127.0.0.1"));
    assert!(
        f.iter().any(|(k, v)| k == "RequestHeader" && v == "X-User:jason"),
        "{body}"
    );
    assert_eq!(field(&f, "Hostname"), Some("reviews-v2-0"));
    assert_eq!(field(&f, "Service"), Some("reviews"));
    assert_eq!(field(&f, "TLS-SNI"), None, "plain HTTP has no TLS lines: {body}");
    let (head, body) = curl(&["--http2-prior-knowledge", &format!("http://127.0.0.1:{port}/h2")]);
    assert!(head.starts_with("HTTP/2 200"), "{head}");
    assert_eq!(field(&parse_fields(&body), "Proto"), Some("HTTP/2.0"));
}

#[test]
fn query_controls_codes_headers_size_delay() {
    let echo = Echo::builder("ratings")
        .http_loopback()
        .start_in_thread()
        .expect("echo");
    let url = |q: &str| format!("http://127.0.0.1:{}/?{q}", echo.http[0].port());
    let codes: Vec<String> = (0..4)
        .map(|_| {
            curl(&[&url("codes=503:1,200:1")])
                .0
                .lines()
                .next()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert_eq!(codes.iter().filter(|l| l.contains(" 503")).count(), 2, "{codes:?}");
    assert_eq!(codes.iter().filter(|l| l.contains(" 200")).count(), 2, "{codes:?}");
    let (head, _) = curl(&[&url("headers=x-a:1,x-b:two")]);
    assert!(
        head.to_ascii_lowercase().contains("x-a: 1") && head.to_ascii_lowercase().contains("x-b: two"),
        "{head}"
    );
    let (_, body) = curl(&[&url("size=1000")]);
    assert_eq!(body.len(), 1000);
    let t = std::time::Instant::now();
    curl(&[&url("delay=300ms")]);
    assert!(t.elapsed() >= std::time::Duration::from_millis(300));
}

#[test]
fn tcp_writes_identity_then_echoes() {
    let echo = Echo::builder("tcp-echo")
        .version("v1")
        .tcp_loopback()
        .start_in_thread()
        .expect("echo");
    let mut s = std::net::TcpStream::connect(echo.tcp[0]).expect("connect");
    s.write_all(b"ping\n").expect("write");
    s.shutdown(std::net::Shutdown::Write).expect("half-close");
    let mut all = String::new();
    s.read_to_string(&mut all).expect("read");
    assert!(all.starts_with("ServiceVersion=v1\n"), "{all}");
    assert!(all.contains("Proto=TCP\n"), "{all}");
    assert!(all.ends_with("Service=tcp-echo\nping\n"), "{all}");
}

#[test]
fn grpc_echo_and_health_over_h2c() {
    let echo = Echo::builder("grpc-svc")
        .version("v3")
        .grpc_loopback()
        .start_in_thread()
        .expect("echo");
    let port = echo.grpc[0].port();
    // A gRPC call with curl: a framed EchoRequest{message: "hi"}.
    let dir = std::env::temp_dir().join(format!("echo-grpc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let req = dir.join("req.bin");
    std::fs::write(&req, [0, 0, 0, 0, 4, 0x0a, 2, b'h', b'i']).expect("write");
    let call = |path: &str, extra: &[&str]| {
        let out = Command::new("curl")
            .args([
                "-s",
                "--http2-prior-knowledge",
                "-D",
                "-",
                "-H",
                "content-type: application/grpc",
                "-H",
                "te: trailers",
            ])
            .args(extra)
            .args([
                "--data-binary",
                &format!("@{}", req.display()),
                &format!("http://127.0.0.1:{port}{path}"),
            ])
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let out = call("/proto.EchoTestService/Echo", &[]);
    assert!(
        out.contains("Echo=hi\n") && out.contains("ServiceVersion=v3\n") && out.contains("Proto=GRPC\n"),
        "{out}"
    );
    assert!(out.contains("grpc-status: 0"), "{out}");
    let out = call("/proto.EchoTestService/Echo", &["-H", "codes: 14:1"]);
    assert!(out.contains("grpc-status: 14"), "{out}");
    let out = call("/grpc.health.v1.Health/Check", &[]);
    assert!(out.contains("grpc-status: 0"), "{out}");
    let out = call("/no.Such/Method", &[]);
    assert!(out.contains("grpc-status: 12"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn https_reports_the_sni_and_the_client_certificate() {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["echo.test".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let dir = std::env::temp_dir().join(format!("mesh-echo-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, cert.pem()).unwrap();
    let key_der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let mut config =
        rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key_der)
            .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let echo = Echo::builder("secure")
        .tls(std::sync::Arc::new(config))
        .http_loopback()
        .start_in_thread()
        .expect("echo");
    let port = echo.http[0].port();
    let resolve = format!("echo.test:{port}:127.0.0.1");
    let url = format!("https://echo.test:{port}/tls");
    let (head, body) = curl(&["--cacert", ca.to_str().unwrap(), "--resolve", &resolve, &url]);
    assert!(head.starts_with("HTTP/2 200"), "{head}");
    let f = parse_fields(&body);
    assert_eq!(field(&f, "TLS-SNI"), Some("echo.test"), "{body}");
    assert_eq!(field(&f, "TLS-ClientCert"), Some("false"), "{body}");
    assert_eq!(field(&f, "Proto"), Some("HTTP/2.0"));
    // Plain HTTP to the TLS port gets no answer in the echo format.
    let (_, body) = curl(&[&format!("http://127.0.0.1:{port}/")]);
    assert_eq!(field(&parse_fields(&body), "Service"), None, "{body}");
}
