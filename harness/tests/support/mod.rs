//! Test servers on loopback for the load generator and CLI tests: HTTP/1.1 + h2c, HTTPS (h2 and
//! http/1.1 by ALPN), gRPC over h2c, TCP echo. Each runs on its own thread for the test process.

#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)] // Shared by several test crates.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Frame;
use hyper::{Request, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A server runtime on its own thread, for the life of the test process.
pub fn serve<F, Fut>(f: F) -> SocketAddr
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
pub fn http_server() -> SocketAddr {
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
pub fn grpc_server() -> SocketAddr {
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
                        let path = req.uri().path().to_string();
                        let body = req.into_body().collect().await.expect("body").to_bytes();
                        assert_eq!(&body[..5], &[0, 0, 0, 0, 4]);
                        assert_eq!(&body[5..], &[0x0a, 2, b'h', b'i']);
                        if path.ends_with("/Missing") {
                            // Trailers-only, as gRPC answers a method it does not have: the
                            // status in the one HEADERS frame, which ends the stream.
                            let mut resp = Response::new(Frames::new(Vec::new()));
                            resp.headers_mut()
                                .insert("content-type", "application/grpc".parse().expect("value"));
                            resp.headers_mut().insert("grpc-status", "12".parse().expect("value"));
                            return Ok::<_, Infallible>(resp);
                        }
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

pub struct Tls {
    pub dir: std::path::PathBuf,
    pub config: Arc<rustls::ServerConfig>,
}

/// A CA and a server certificate for `localhost`, written to a temp dir as PEM.
pub fn tls(alpn: &[&[u8]]) -> Tls {
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
pub fn https_server(config: Arc<rustls::ServerConfig>) -> SocketAddr {
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

pub fn tcp_echo_server() -> SocketAddr {
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

/// Runs this build's meshbench with `args` and waits for it.
pub fn meshbench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meshbench"))
        .args(args)
        .output()
        .expect("run meshbench")
}

/// Output bytes as text.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
