//! The load generator end to end, per protocol, against servers on loopback: counts and status
//! codes are asserted exactly. (Timing decides nothing here.)

#![allow(clippy::expect_used, clippy::unwrap_used)] // Test code: a failure should panic.

mod support;

use clap::Parser;
use meshbench::cli::{Cli, Command};
use meshbench_report::{LoadMode, LoadResult};
use support::*;

/// Runs `meshbench load …` in-process and returns its result.
fn load(args: &[&str]) -> LoadResult {
    let argv = ["meshbench", "load", "--quiet"].iter().chain(args).copied();
    let Command::Load(a) = Cli::try_parse_from(argv).expect("args").command else {
        panic!("not load")
    };
    let mut specs = meshbench::cli::load::specs(&a).expect("spec");
    meshbench::load::run(specs.remove(0)).expect("run")
}

fn code(r: &LoadResult, k: &str) -> u64 {
    r.status_codes.get(k).copied().unwrap_or(0)
}

#[test]
fn h1_closed_loop_counts_every_request() {
    let addr = http_server();
    let r = load(&[&format!("http://{addr}/"), "-n", "500", "-c", "4", "-t", "2"]);
    assert_eq!(r.settings.mode, LoadMode::Closed);
    assert_eq!((r.requests, r.errors, code(&r, "200")), (500, 0, 500));
    assert!(r.latency_uncorrected_us.is_none());
    assert_eq!(r.ladder_us.last().map(|p| p.count), Some(500));
}

#[test]
fn h1_status_codes_and_5xx_errors() {
    let addr = http_server();
    let r = load(&[&format!("http://{addr}/status/503"), "-n", "40", "-c", "2", "-t", "1"]);
    assert_eq!((r.requests, r.errors, code(&r, "503")), (40, 40, 40));
    assert_eq!(r.error_classes.get("http-5xx"), Some(&40));
    let r = load(&[
        &format!("http://{addr}/status/404"),
        "-n",
        "40",
        "-c",
        "2",
        "-t",
        "1",
        "-m",
        "POST",
        "-b",
        "payload",
    ]);
    assert_eq!((r.requests, r.errors, code(&r, "404")), (40, 0, 40));
}

#[test]
fn h2c_with_streams_counts_every_request() {
    let addr = http_server();
    let r = load(&[
        &format!("http://{addr}/"),
        "-p",
        "h2",
        "-n",
        "300",
        "-c",
        "2",
        "--streams",
        "4",
        "-t",
        "1",
    ]);
    assert_eq!(r.settings.protocol, "h2c");
    assert_eq!((r.requests, r.errors, code(&r, "200")), (300, 0, 300));
}

#[test]
fn h2_over_tls_with_alpn_and_a_ca() {
    let t = tls(&[b"h2", b"http/1.1"]);
    let addr = https_server(t.config.clone());
    let url = format!("https://localhost:{}/", addr.port());
    let ca = t.dir.join("ca.pem");
    let r = load(&[
        &url,
        "-p",
        "h2",
        "--cacert",
        ca.to_str().unwrap(),
        "-n",
        "100",
        "-c",
        "2",
        "--streams",
        "2",
        "-t",
        "1",
    ]);
    assert_eq!(
        (r.settings.protocol.as_str(), r.requests, code(&r, "200"), r.errors),
        ("h2", 100, 100, 0)
    );
    let r = load(&[&url, "--cacert", ca.to_str().unwrap(), "-n", "50", "-c", "2", "-t", "1"]);
    assert_eq!(
        (r.settings.protocol.as_str(), r.requests, code(&r, "200")),
        ("h1+tls", 50, 50)
    );
    let r = load(&[
        &url,
        "-p",
        "tls-handshake",
        "--cacert",
        ca.to_str().unwrap(),
        "-n",
        "20",
        "-c",
        "2",
        "-t",
        "1",
    ]);
    assert_eq!((r.requests, code(&r, "200"), r.errors), (20, 20, 0));
    // Without the CA the handshake fails: every request is a TLS error, and the run still ends.
    let r = load(&[&url, "-n", "6", "-c", "1", "-t", "1"]);
    assert_eq!(
        (r.requests, r.errors, r.error_classes.get("tls").copied()),
        (6, 6, Some(6))
    );
    let r = load(&[&url, "-k", "-n", "6", "-c", "1", "-t", "1"]);
    assert_eq!((r.requests, r.errors), (6, 0));
}

#[test]
fn grpc_unary_reads_status_from_trailers() {
    let addr = grpc_server();
    let r = load(&[
        &format!("grpc://{addr}/proto.EchoTestService/Echo"),
        "-b",
        "hi",
        "-n",
        "90",
        "-c",
        "3",
        "-t",
        "1",
    ]);
    assert_eq!(r.settings.protocol, "grpc");
    assert_eq!((r.requests, code(&r, "grpc-0"), code(&r, "grpc-14")), (90, 60, 30));
    assert_eq!((r.errors, r.error_classes.get("grpc-14").copied()), (30, Some(30)));
}

#[test]
fn grpc_unary_reads_a_trailers_only_status_from_the_headers() {
    let addr = grpc_server();
    let r = load(&[
        &format!("grpc://{addr}/proto.EchoTestService/Missing"),
        "-b",
        "hi",
        "-n",
        "20",
        "-c",
        "2",
        "-t",
        "1",
    ]);
    assert_eq!((r.requests, code(&r, "grpc-12")), (20, 20));
    assert_eq!((r.errors, r.error_classes.get("grpc-12").copied()), (20, Some(20)));
}

#[test]
fn tcp_request_response() {
    let addr = tcp_echo_server();
    let r = load(&[
        &format!("tcp://{addr}"),
        "--message-bytes",
        "100",
        "-n",
        "200",
        "-c",
        "4",
        "-t",
        "2",
    ]);
    assert_eq!((r.requests, r.errors, code(&r, "tcp-ok")), (200, 0, 200));
}

#[test]
fn open_loop_sends_exactly_rate_times_duration() {
    let addr = http_server();
    let r = load(&[
        &format!("http://{addr}/"),
        "-R",
        "200",
        "-d",
        "1s",
        "-c",
        "4",
        "-t",
        "2",
    ]);
    assert_eq!(r.settings.mode, LoadMode::Open);
    assert_eq!((r.requests, code(&r, "200")), (200, 200));
    assert!(r.latency_uncorrected_us.is_some());
    assert!(r.histograms.uncorrected.is_some());
}

#[test]
fn refused_connections_are_connect_errors() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let r = load(&[&format!("http://127.0.0.1:{port}/"), "-n", "10", "-c", "2", "-t", "1"]);
    assert_eq!(
        (r.requests, r.errors, r.error_classes.get("connect").copied()),
        (10, 10, Some(10))
    );
}

#[test]
fn a_silent_server_times_out() {
    let addr = serve(|l| async move {
        let mut held = Vec::new();
        loop {
            let (s, _) = l.accept().await.expect("accept");
            held.push(s); // Never answers.
        }
    });
    let r = load(&[
        &format!("http://{addr}/"),
        "-n",
        "4",
        "-c",
        "2",
        "-t",
        "1",
        "--timeout",
        "200ms",
    ]);
    assert_eq!((r.requests, r.error_classes.get("timeout").copied()), (4, Some(4)));
}

#[test]
fn interval_log_and_json_report_are_written() {
    let addr = http_server();
    let dir = std::env::temp_dir().join(format!("meshbench-load-out-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let hlog = dir.join("run.hlog");
    let r = load(&[
        &format!("http://{addr}/"),
        "-R",
        "100",
        "-d",
        "2s",
        "-c",
        "2",
        "-t",
        "1",
        "--hlog",
        hlog.to_str().unwrap(),
    ]);
    let intervals = meshbench::load::hlog::read(&hlog).expect("read hlog");
    let merged = meshbench::load::hlog::merge(&[intervals]);
    assert_eq!(merged[""].len(), r.requests);
    assert_eq!(merged["uncorrected"].len(), r.requests);
    let decoded = meshbench::load::stats::decode(&r.histograms.corrected).expect("decode");
    assert_eq!(decoded, merged[""]);
    assert_eq!(r.time_series.iter().map(|p| p.requests).sum::<u64>(), r.requests);
    let _ = std::fs::remove_dir_all(&dir);
}
