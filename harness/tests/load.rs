//! The load generator end to end, per protocol, against servers on loopback: counts and status
//! codes are asserted exactly. (Timing decides nothing here.)

#![allow(clippy::expect_used, clippy::unwrap_used)] // Test code: a failure should panic.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::body::Frame;
use hyper::{Request, Response};
use meshbench::cli::{Cli, Command};
use meshbench_report::{LoadMode, LoadResult};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

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

/// A server runtime on its own thread, for the life of the test process.
fn serve<F, Fut>(f: F) -> SocketAddr
where
    F: FnOnce(TcpListener) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, async move {
            let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            tx.send(l.local_addr().expect("addr")).expect("send");
            f(l).await;
        });
    });
    rx.recv().expect("server address")
}

/// HTTP/1.1 and h2c (auto-detected): `/status/N` answers N; everything else 200 with a chunked
/// body for odd request numbers and a sized one for even.
fn http_server() -> SocketAddr {
    let n = Arc::new(AtomicU64::new(0));
    serve(move |l| async move {
        loop {
            let (s, _) = l.accept().await.expect("accept");
            let n = n.clone();
            tokio::task::spawn_local(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let i = n.fetch_add(1, Ordering::Relaxed);
                    async move {
                        let path = req.uri().path().to_string();
                        let _ = req.into_body().collect().await;
                        let status: u16 = path
                            .strip_prefix("/status/")
                            .and_then(|c| c.parse().ok())
                            .unwrap_or(200);
                        let body = if i % 2 == 1 {
                            "chunked body".repeat(100)
                        } else {
                            "hello".into()
                        };
                        let mut resp = Response::new(Frames::new(vec![Frame::data(Bytes::from(body))]));
                        *resp.status_mut() = hyper::StatusCode::from_u16(status).expect("status");
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    })
}

/// A body made of frames, sent without a length (chunked on HTTP/1.1).
struct Frames(std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>);

impl Frames {
    fn new(frames: Vec<Frame<Bytes>>) -> Self {
        Frames(frames.into_iter().map(Ok).collect::<Vec<_>>().into_iter())
    }
}

impl hyper::body::Body for Frames {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        std::task::Poll::Ready(self.0.next())
    }
}

/// gRPC over h2c: every third call fails with UNAVAILABLE (14), the rest return OK in trailers.
fn grpc_server() -> SocketAddr {
    let n = Arc::new(AtomicU64::new(0));
    serve(move |l| async move {
        loop {
            let (s, _) = l.accept().await.expect("accept");
            let n = n.clone();
            tokio::task::spawn_local(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let i = n.fetch_add(1, Ordering::Relaxed);
                    async move {
                        assert_eq!(req.headers()["content-type"], "application/grpc");
                        let body = req.into_body().collect().await.expect("body").to_bytes();
                        assert_eq!(&body[..5], &[0, 0, 0, 0, 4]);
                        assert_eq!(&body[5..], &[0x0a, 2, b'h', b'i']);
                        let mut trailers = hyper::HeaderMap::new();
                        trailers.insert(
                            "grpc-status",
                            if i % 3 == 2 { "14" } else { "0" }.parse().expect("value"),
                        );
                        let frames = vec![
                            Frame::data(Bytes::from_static(&[0, 0, 0, 0, 0])),
                            Frame::trailers(trailers),
                        ];
                        let mut resp = Response::new(Frames::new(frames));
                        resp.headers_mut()
                            .insert("content-type", "application/grpc".parse().expect("value"));
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    })
}

struct Tls {
    dir: std::path::PathBuf,
    config: Arc<rustls::ServerConfig>,
}

/// A CA and a server certificate for `localhost`, written to a temp dir as PEM.
fn tls(alpn: &[&[u8]]) -> Tls {
    let dir = std::env::temp_dir().join(format!("meshbench-load-{}-{}", std::process::id(), alpn.len()));
    std::fs::create_dir_all(&dir).expect("dir");
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).expect("ca");
    let key = rcgen::KeyPair::generate().expect("key");
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
        .expect("params")
        .signed_by(&key, &issuer)
        .expect("cert");
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).expect("write");
    let chain = vec![cert.der().clone()];
    let key_der = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).expect("key der");
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .expect("config");
    config.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    Tls {
        dir,
        config: Arc::new(config),
    }
}

/// HTTPS (h2 and http/1.1 by ALPN) in front of the same handler as `http_server`.
fn https_server(config: Arc<rustls::ServerConfig>) -> SocketAddr {
    serve(move |l| async move {
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        loop {
            let (s, _) = l.accept().await.expect("accept");
            let acceptor = acceptor.clone();
            tokio::task::spawn_local(async move {
                let Ok(tls) = acceptor.accept(s).await else { return };
                let svc = hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let _ = req.into_body().collect().await;
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"secure"))))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
        }
    })
}

fn tcp_echo_server() -> SocketAddr {
    serve(|l| async move {
        loop {
            let (mut s, _) = l.accept().await.expect("accept");
            tokio::task::spawn_local(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    })
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
