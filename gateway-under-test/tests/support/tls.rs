//! What the TLS and TCP tests share: a Gateway of given servers, `openssl s_client` and the
//! certificate it saw, and a TLS backend with a certificate of its own.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;

pub fn gateway(servers: &str) -> String {
    format!("apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: istio-system}}\nspec:\n  servers:\n{servers}---\n")
}

/// `openssl s_client` against `addr`; returns its output (stdout and stderr).
pub fn s_client(addr: std::net::SocketAddr, args: &[&str]) -> String {
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

pub fn subject_cn(out: &str) -> Option<String> {
    out.lines().find_map(|l| l.strip_prefix("subject=")).map(|s| {
        s.trim()
            .trim_start_matches("CN = ")
            .trim_start_matches("CN=")
            .to_string()
    })
}

/// A TLS server (a backend with its own certificate) that answers every connection with `name`.
pub fn tls_backend(crt: &str, key: &str, name: &'static str) -> std::net::SocketAddr {
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
