//! Request bodies stream through meshgate: bidirectional and client-streaming gRPC with a
//! tonic client (each message answered before the next is sent, which a gateway that read the
//! whole body first could never do), and a chunked upload larger than the retry buffer.

#![allow(clippy::expect_used, clippy::unwrap_used)] // Test code: a failure should panic.

mod support;

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use hyper::body::{Body, Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::grpc_client::EchoRequest;
use support::*;

/// A response body that sends back each request frame as it arrives, then `grpc-status: 0`.
/// (A gRPC message echoed byte for byte decodes as the same message: both types are
/// `string message = 1`.)
struct Echoed {
    request: Incoming,
    done: bool,
}

impl Body for Echoed {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if self.done {
            return Poll::Ready(None);
        }
        loop {
            match Pin::new(&mut self.request).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                Poll::Ready(None) => {
                    self.done = true;
                    let mut t = HeaderMap::new();
                    t.insert("grpc-status", "0".parse().unwrap());
                    return Poll::Ready(Some(Ok(Frame::trailers(t))));
                }
            }
        }
    }
}

/// An h2c server that streams every request body back (a bidirectional gRPC echo).
async fn streaming_echo() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    let mut resp = Response::new(Echoed {
                        request: req.into_body(),
                        done: false,
                    });
                    resp.headers_mut()
                        .insert("content-type", "application/grpc".parse().unwrap());
                    Ok::<_, Infallible>(resp)
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

fn config(port: u16) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: istio-system}}\nspec:\n  \
         selector: {{istio: ingressgateway}}\n  servers:\n  - port: {{number: 8080, name: grpc, protocol: GRPC}}\n    hosts: ['*']\n---\n\
         apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: stream, namespace: default}}\nspec:\n  \
         hosts: [stream.default.svc.cluster.local]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  \
         ports: [{{number: 7070, name: grpc, protocol: GRPC}}]\n  endpoints: [{{address: 127.0.0.1, ports: {{grpc: {port}}}}}]\n---\n\
         apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: stream, namespace: default}}\nspec:\n  \
         hosts: ['*']\n  gateways: [istio-system/gw]\n  http:\n  \
         - route: [{{destination: {{host: stream, port: {{number: 7070}}}}}}]\n    retries: {{attempts: 2, retryOn: unavailable}}\n"
    )
}

#[test]
fn bidirectional_grpc_answers_each_message_before_the_next_is_sent() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let upstream = rt.block_on(streaming_echo());
    let g = gate(&config(upstream.port()), &[8080]);
    rt.block_on(async {
        let mut grpc = grpc_client::channel(g.port(8080)).await;
        let (tx, rx) = tokio::sync::mpsc::channel::<EchoRequest>(1);
        tx.send(EchoRequest { message: "one".into() }).await.unwrap();
        let codec = grpc_client::echo_codec();
        let path = http::uri::PathAndQuery::from_static("/proto.EchoTestService/Chat");
        let request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        let mut replies = tokio::time::timeout(Duration::from_secs(10), grpc.streaming(request, path, codec))
            .await
            .expect("the response started while the request was still open")
            .unwrap()
            .into_inner();
        // Each reply is the message just sent; the next is sent only once it has come back.
        for (sent, next) in [("one", Some("two")), ("two", Some("three")), ("three", None)] {
            let reply = tokio::time::timeout(Duration::from_secs(10), replies.message())
                .await
                .expect("each message comes back before the client sends another")
                .unwrap()
                .unwrap();
            assert_eq!(reply.message, sent);
            if let Some(next) = next {
                tx.send(EchoRequest { message: next.into() }).await.unwrap();
            }
        }
        drop(tx);
        // The client half-closes; the upstream's trailers end the call with OK.
        assert_eq!(replies.message().await.unwrap(), None);
    });
    let log = g.wait_log("/proto.EchoTestService/Chat");
    assert!(
        log.contains("\"POST /proto.EchoTestService/Chat HTTP/2\" 200 - via_upstream"),
        "{log}"
    );
}

#[test]
fn client_streaming_grpc_sends_every_message_upstream() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let upstream = rt.block_on(streaming_echo());
    let g = gate(&config(upstream.port()), &[8080]);
    let words = ["alpha", "beta", "gamma", "delta"];
    let got: Vec<String> = rt.block_on(async {
        let mut grpc = grpc_client::channel(g.port(8080)).await;
        let codec = grpc_client::echo_codec();
        let path = http::uri::PathAndQuery::from_static("/proto.EchoTestService/Upload");
        let messages = words.map(|w| EchoRequest { message: w.into() });
        let request = tonic::Request::new(tokio_stream::iter(messages));
        let mut replies = grpc.streaming(request, path, codec).await.unwrap().into_inner();
        let mut got = Vec::new();
        while let Some(r) = replies.message().await.unwrap() {
            got.push(r.message);
        }
        got
    });
    assert_eq!(got, words);
}

#[test]
fn a_chunked_upload_larger_than_the_retry_buffer_streams_to_the_upstream() {
    let e = echo("web", "v1");
    let yaml = format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: istio-system}}\nspec:\n  \
         selector: {{istio: ingressgateway}}\n  servers:\n  - port: {{number: 80, name: http, protocol: HTTP}}\n    hosts: ['*']\n---\n\
         apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: web, namespace: default}}\nspec:\n  \
         hosts: [web.default.svc.cluster.local]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  \
         ports: [{{number: 80, name: http, protocol: HTTP}}]\n  endpoints: [{{address: 127.0.0.1, ports: {{http: {}}}}}]\n---\n\
         apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: web, namespace: default}}\nspec:\n  \
         hosts: ['*']\n  gateways: [istio-system/gw]\n  http:\n  - route: [{{destination: {{host: web}}}}]\n",
        e.http[0].port()
    );
    let g = gate_with(&yaml, &[80], &["--max-request-body-kb", "64"]);
    // 5 chunks of 40 KiB: 200 KiB, past the 64 KiB kept for a retry.
    let chunk = "y".repeat(40 * 1024);
    let mut s = std::net::TcpStream::connect(g.port(80)).unwrap();
    let mut body = String::new();
    for _ in 0..5 {
        body.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
    }
    body.push_str("0\r\n\r\n");
    s.write_all(
        format!("POST /upload HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{body}")
            .as_bytes(),
    )
    .unwrap();
    let mut reply = String::new();
    std::io::Read::read_to_string(&mut s, &mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    // %BYTES_RECEIVED%: every byte of the body, counted as it streamed.
    let log = g.wait_log("/upload");
    assert!(
        log.contains("\"POST /upload HTTP/1.1\" 200 - via_upstream - \"-\" 204800 "),
        "{log}"
    );
}

/// An HTTP/1.1 server whose first answer is 503 and every later one 200 with the request body;
/// it counts the requests it got.
async fn fails_once() -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    use http_body_util::BodyExt;
    use std::sync::atomic::{AtomicU64, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = std::sync::Arc::new(AtomicU64::new(0));
    let counted = count.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let count = counted.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let n = count.fetch_add(1, Ordering::SeqCst);
                    async move {
                        let body = req
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let mut resp = Response::new(http_body_util::Full::new(body));
                        if n == 0 {
                            *resp.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
                        }
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, count)
}

fn chunked_post(addr: SocketAddr, body: &str) -> (u16, String) {
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "-w",
            "\n%{http_code}",
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            body,
            &format!("http://{addr}/retry"),
        ])
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), body.to_string())
}

#[test]
fn a_streamed_body_is_sent_again_on_retry_only_while_it_is_kept_whole() {
    use std::sync::atomic::Ordering;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (upstream, count) = rt.block_on(fails_once());
    let yaml = |port: u16| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: istio-system}}\nspec:\n  \
             selector: {{istio: ingressgateway}}\n  servers:\n  - port: {{number: 80, name: http, protocol: HTTP}}\n    hosts: ['*']\n---\n\
             apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: flaky, namespace: default}}\nspec:\n  \
             hosts: [flaky.example.com]\n  location: MESH_EXTERNAL\n  resolution: STATIC\n  \
             ports: [{{number: 80, name: http, protocol: HTTP}}]\n  endpoints: [{{address: 127.0.0.1, ports: {{http: {port}}}}}]\n---\n\
             apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: flaky, namespace: default}}\nspec:\n  \
             hosts: ['*']\n  gateways: [istio-system/gw]\n  http:\n  - route: [{{destination: {{host: flaky.example.com}}}}]\n    \
             retries: {{attempts: 2, retryOn: 5xx}}\n"
        )
    };
    let g = gate_with(&yaml(upstream.port()), &[80], &["--max-request-body-kb", "1"]);
    // 20 bytes, kept: the 503 is retried with the same body.
    assert_eq!(
        chunked_post(g.port(80), "hello streamed world"),
        (200, "hello streamed world".into())
    );
    assert_eq!(count.load(Ordering::SeqCst), 2);
    // Past the 1 KiB kept for a retry: the first attempt's answer stands.
    count.store(0, Ordering::SeqCst);
    let big = "z".repeat(4096);
    assert_eq!(chunked_post(g.port(80), &big).0, 503);
    assert_eq!(count.load(Ordering::SeqCst), 1, "not retried");
}
