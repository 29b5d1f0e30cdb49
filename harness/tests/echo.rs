//! `meshbench echo` as a container runs it: its admin port counts what it answered, and
//! `--tls-cert` serves HTTPS from a suite's certificate folder. Checked with curl.

#![allow(clippy::expect_used, clippy::unwrap_used)] // Test code: a failure should panic.

mod support;

use support::text;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// Starts `meshbench echo ARGS`; the child and its `<kind> <address>` lines up to `ready`.
fn echo(args: &[&str]) -> (Child, Vec<(String, String)>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_meshbench"))
        .arg("echo")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut said = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line == "ready" {
            break;
        }
        let (kind, addr) = line.split_once(' ').unwrap();
        said.push((kind.to_string(), addr.to_string()));
    }
    // Keep reading so the child never writes to a closed pipe.
    std::thread::spawn(move || lines.for_each(drop));
    (child, said)
}

fn address(said: &[(String, String)], kind: &str) -> String {
    said.iter().find(|(k, _)| k == kind).map(|(_, a)| a.clone()).unwrap()
}

fn curl(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "5"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "curl {args:?}: {}", text(&out.stderr));
    text(&out.stdout)
}

#[test]
fn the_admin_port_counts_the_requests_answered() {
    let (mut child, said) = echo(&[
        "--service",
        "reviews",
        "--http",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
    ]);
    let (http, admin) = (address(&said, "http"), address(&said, "admin"));
    assert_eq!(curl(&[&format!("http://{admin}/requests")]), "0\n");
    let body = curl(&[&format!("http://{http}/x")]);
    assert!(body.contains("Service=reviews"), "{body}");
    curl(&[&format!("http://{http}/y")]);
    assert_eq!(
        curl(&[&format!("http://{admin}/requests")]),
        "2\n",
        "the admin's own requests not counted"
    );
    let other = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("http://{admin}/stats"),
    ]);
    assert_eq!(other, "404");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn tls_cert_serves_https_from_a_certificate_folder() {
    let dir = std::env::temp_dir().join(format!("meshbench-echo-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ])
        .args(["-days", "1", "-subj", "/CN=secure.example.com", "-addext"])
        .arg("subjectAltName=DNS:secure.example.com")
        .arg("-keyout")
        .arg(dir.join("secure.key"))
        .arg("-out")
        .arg(dir.join("secure.crt"))
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", text(&made.stderr));
    let cert = dir.join("secure");
    let (mut child, said) = echo(&[
        "--service",
        "secure",
        "--http",
        "127.0.0.1:0",
        "--tls-cert",
        cert.to_str().unwrap(),
    ]);
    let addr = address(&said, "http");
    let port = addr.rsplit(':').next().unwrap();
    let body = curl(&[
        "--cacert",
        dir.join("secure.crt").to_str().unwrap(),
        "--resolve",
        &format!("secure.example.com:{port}:127.0.0.1"),
        &format!("https://secure.example.com:{port}/"),
    ]);
    assert!(body.contains("Service=secure"), "{body}");
    child.kill().unwrap();
    child.wait().unwrap();
    // A certificate that is not there: a usage error naming it.
    let out = Command::new(env!("CARGO_BIN_EXE_meshbench"))
        .args(["echo", "--http", "127.0.0.1:0", "--tls-cert"])
        .arg(dir.join("absent"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("absent.crt"), "{}", text(&out.stderr));
}
