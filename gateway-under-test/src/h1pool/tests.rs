use std::sync::atomic::{AtomicUsize, Ordering};

use http_body_util::{BodyExt, Full};
use tokio::net::TcpListener;

use super::*;
use crate::replay::RequestBody;

/// An HTTP/1.1 upstream on loopback that counts the connections it accepts. `/close`
/// answers with `connection: close`; `/big` with a body of many chunks.
async fn upstream() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            let service = hyper::service::service_fn(|req: http::Request<Incoming>| async move {
                let host = req.headers().get("host").cloned();
                let mut resp = match req.uri().path() {
                    "/big" => http::Response::new(Full::new(Bytes::from(vec![b'x'; 1 << 20])).boxed()),
                    "/empty" => http::Response::new(Full::new(Bytes::new()).boxed()),
                    "/chunked" => http::Response::new(Chunks(vec!["c".into(), "ab".into()]).boxed()),
                    _ => http::Response::new(Full::new(Bytes::from(req.uri().to_string())).boxed()),
                };
                if req.uri().path() == "/close" {
                    resp.headers_mut()
                        .insert("connection", http::HeaderValue::from_static("close"));
                }
                if let Some(host) = host {
                    resp.headers_mut().insert("x-host", host);
                }
                Ok::<_, std::convert::Infallible>(resp)
            });
            tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service));
        }
    });
    (address, accepted)
}

/// A body of unknown length (sent chunked), its frames popped from the end.
struct Chunks(Vec<Bytes>);

impl Body for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.0.pop().map(|b| Ok(Frame::data(b))))
    }
}

fn pool(idle_timeout: Option<Duration>, keep_alive: bool) -> (H1Pool, Connections) {
    let resolver = crate::dns::Resolver::new(crate::dns::Cache::new(Duration::from_secs(1)), crate::dns::Take::Every);
    let connections = Connections::default();
    let pool = H1Pool::new(
        idle_timeout,
        keep_alive,
        Duration::from_secs(1),
        &resolver,
        &connections,
    );
    (pool, connections)
}

fn get(path: &str) -> http::Request<AttemptBody> {
    let mut req = http::Request::new(RequestBody::empty().attempt());
    *req.uri_mut() = path.parse().unwrap();
    req.headers_mut()
        .insert("host", http::HeaderValue::from_static("svc.example"));
    req
}

async fn read(resp: http::Response<Returning>) -> String {
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

#[tokio::test]
async fn a_connection_read_to_the_end_carries_the_next_request() {
    let (address, accepted) = upstream().await;
    let (pool, _) = pool(None, true);
    for path in ["/a", "/b?x=1", "/big", "/c"] {
        let resp = pool.send(address.clone(), get(path)).await.unwrap();
        assert_eq!(resp.headers()["x-host"], "svc.example");
        let body = read(resp).await;
        if path != "/big" {
            assert_eq!(body, path, "the origin-form target reaches the upstream as sent");
        } else {
            assert_eq!(body.len(), 1 << 20);
        }
        assert_eq!(pool.idle(&address), 1, "given back once read");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "one connection for every request");
}

#[tokio::test]
async fn a_chunked_body_gives_its_connection_back_at_its_last_chunk() {
    let (address, accepted) = upstream().await;
    let (pool, _) = pool(None, true);
    for _ in 0..2 {
        let resp = pool.send(address.clone(), get("/chunked")).await.unwrap();
        assert_eq!(resp.body().size_hint().exact(), None);
        assert_eq!(read(resp).await, "abc");
        assert_eq!(pool.idle(&address), 1);
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_body_goes_back_with_its_last_frame_not_before() {
    let (address, _) = upstream().await;
    let (pool, _) = pool(None, true);
    let resp = pool.send(address.clone(), get("/big")).await.unwrap();
    assert_eq!(resp.body().size_hint().exact(), Some(1 << 20));
    assert!(!resp.body().is_end_stream());
    let mut body = resp.into_body();
    let mut read = 0;
    // Read as hyper's server does: it stops once the body says it has ended, without asking
    // for the end.
    while !body.is_end_stream() {
        let frame = body.frame().await.unwrap().unwrap();
        read += frame.data_ref().map_or(0, Bytes::len);
        if !body.is_end_stream() {
            assert_eq!(pool.idle(&address), 0, "not given back in the middle of the body");
        }
    }
    assert_eq!(read, 1 << 20);
    assert_eq!(pool.idle(&address), 1, "given back with the last frame");
    let resp = pool.send(address.clone(), get("/empty")).await.unwrap();
    assert!(resp.body().is_end_stream(), "an empty body has ended at the head");
    assert_eq!(resp.body().size_hint().exact(), Some(0));
}

#[tokio::test]
async fn a_connection_that_cannot_take_a_request_is_passed_over() {
    let (address, accepted) = upstream().await;
    let (pool, connections) = pool(None, true);
    read(pool.send(address.clone(), get("/a")).await.unwrap()).await;
    // On top of the good idle connection, one whose connection task is gone.
    let stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let (dead, conn) = Builder::new()
        .handshake::<_, AttemptBody>(TokioIo::new(stream))
        .await
        .unwrap();
    drop(conn);
    pool.shared.idle.lock().unwrap().get_mut(&address).unwrap().push(Idle {
        sender: dead,
        since: Instant::now(),
    });
    assert_eq!(read(pool.send(address.clone(), get("/a")).await.unwrap()).await, "/a");
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "the good one was taken, none dialled"
    );
    assert_eq!(connections.total(), 1);
}

#[tokio::test]
async fn a_body_dropped_before_its_end_closes_its_connection() {
    let (address, accepted) = upstream().await;
    let (pool, _) = pool(None, true);
    let resp = pool.send(address.clone(), get("/big")).await.unwrap();
    drop(resp);
    assert_eq!(pool.idle(&address), 0);
    read(pool.send(address.clone(), get("/a")).await.unwrap()).await;
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn without_keep_alive_every_request_has_its_own_connection() {
    let (address, accepted) = upstream().await;
    let (pool, connections) = pool(None, false);
    for _ in 0..3 {
        read(pool.send(address.clone(), get("/a")).await.unwrap()).await;
        assert_eq!(pool.idle(&address), 0);
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
    assert_eq!(connections.total(), 3, "each connection made is counted");
}

#[tokio::test]
async fn a_connection_the_upstream_closes_is_not_used_again() {
    let (address, accepted) = upstream().await;
    let (pool, connections) = pool(None, true);
    read(pool.send(address.clone(), get("/close")).await.unwrap()).await;
    assert_eq!(read(pool.send(address.clone(), get("/a")).await.unwrap()).await, "/a");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(connections.active(), 1, "the closed one is no longer active");
}

#[tokio::test]
async fn a_connection_idle_past_the_timeout_is_closed() {
    let (address, accepted) = upstream().await;
    let (pool, connections) = pool(Some(Duration::from_millis(100)), true);
    read(pool.send(address.clone(), get("/a")).await.unwrap()).await;
    assert_eq!(pool.idle(&address), 1);
    // Within the timeout: reused.
    read(pool.send(address.clone(), get("/a")).await.unwrap()).await;
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(pool.idle(&address), 0, "the reaper closed it");
    assert_eq!(connections.active(), 0);
    read(pool.send(address.clone(), get("/a")).await.unwrap()).await;
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn the_reaper_keeps_an_open_connection_used_within_the_timeout() {
    let (address, accepted) = upstream().await;
    let (pool, connections) = pool(Some(Duration::from_secs(1)), true);
    // The reaper starts with the first connection given back and looks every second.
    read(pool.send(address.clone(), get("/a")).await.unwrap()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    read(pool.send(address.clone(), get("/a")).await.unwrap()).await;
    // At its first look (1 s) the connection had been idle for 0.5 s: it stays.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(pool.idle(&address), 1, "kept: used within the timeout");
    assert_eq!(connections.active(), 1);
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_expired_connection_is_not_taken_even_before_the_reaper_runs() {
    let (address, accepted) = upstream().await;
    let (pool, _) = pool(Some(Duration::from_millis(100)), true);
    read(pool.send(address.clone(), get("/a")).await.unwrap()).await;
    // Age the idle connection without waiting for the reaper's tick.
    if let Some(idle) = pool.shared.idle.lock().unwrap().get_mut(&address) {
        idle[0].since -= Duration::from_secs(1);
    }
    read(pool.send(address.clone(), get("/a")).await.unwrap()).await;
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn nothing_listening_is_a_connect_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    drop(listener);
    let (pool, connections) = pool(None, true);
    match pool.send(address, get("/a")).await {
        Err(H1Error::Connect(why)) => assert!(why.contains("refused"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(connections.total(), 0);
}

/// An upstream that answers every request at once, without reading its body, and keeps
/// the connection open.
async fn early_answering_upstream() -> (String, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            let mut head = [0u8; 1024];
            let _ = stream.read(&mut head).await;
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await;
            held.push(stream);
        }
    });
    (address, accepted)
}

#[tokio::test]
async fn a_connection_still_sending_its_last_request_body_is_not_waited_for() {
    let (address, accepted) = early_answering_upstream().await;
    let (pool, _) = pool(None, true);
    // A request body that never ends: the client is still sending it.
    struct Unending;
    impl Body for Unending {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Pending
        }
    }
    let limits = <crate::Args as clap::Parser>::try_parse_from(["meshgate", "-c", "."])
        .unwrap()
        .limits;
    let limits = crate::limits::BodyLimits::new(&limits);
    let mut req = get("/upload");
    *req.body_mut() = RequestBody::streaming(Unending, &limits).attempt();
    assert_eq!(read(pool.send(address.clone(), req).await.unwrap()).await, "ok");
    let next = tokio::time::timeout(Duration::from_secs(5), pool.send(address.clone(), get("/a")));
    let resp = next
        .await
        .expect("the next request does not wait for the unfinished upload");
    assert_eq!(read(resp.unwrap()).await, "ok");
    assert_eq!(accepted.load(Ordering::SeqCst), 2, "it went on a new connection");
}

#[tokio::test]
async fn idle_connections_per_address_are_bounded() {
    let (address, _) = upstream().await;
    let (pool, _) = pool(None, true);
    let mut held = Vec::new();
    for _ in 0..MAX_IDLE_PER_ADDRESS + 2 {
        held.push(pool.send(address.clone(), get("/a")).await.unwrap());
    }
    for resp in held {
        read(resp).await;
    }
    assert_eq!(pool.idle(&address), MAX_IDLE_PER_ADDRESS);
}
