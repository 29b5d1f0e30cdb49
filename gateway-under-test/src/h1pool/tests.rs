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
                let (req, body) = req.into_parts();
                // Read whole first, so the connection can carry the next request.
                let _ = body.collect().await;
                let host = req.headers.get("host").cloned();
                let mut resp = match req.uri.path() {
                    "/big" => http::Response::new(Full::new(Bytes::from(vec![b'x'; 1 << 20])).boxed()),
                    "/empty" => http::Response::new(Full::new(Bytes::new()).boxed()),
                    "/chunked" => http::Response::new(Chunks(vec!["c".into(), "ab".into()]).boxed()),
                    _ => http::Response::new(Full::new(Bytes::from(req.uri.to_string())).boxed()),
                };
                if req.uri.path() == "/close" {
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

/// A GET with no body: it goes by `wire`.
fn get(path: &str) -> http::Request<AttemptBody> {
    request(path, RequestBody::empty())
}

/// A POST whose body is read as it arrives: it goes through hyper's client.
fn streamed(path: &str) -> http::Request<AttemptBody> {
    let body = Full::new(Bytes::from_static(b"sent"));
    let mut req = request(path, RequestBody::streaming(body, &body_limits()));
    *req.method_mut() = http::Method::POST;
    req
}

/// Each way a request goes: `wire`, then hyper's client.
const BOTH: [fn(&str) -> http::Request<AttemptBody>; 2] = [get, streamed];

fn request(path: &str, body: RequestBody) -> http::Request<AttemptBody> {
    let mut req = http::Request::new(body.attempt());
    *req.uri_mut() = path.parse().unwrap();
    req.headers_mut()
        .insert("host", http::HeaderValue::from_static("svc.example"));
    req
}

fn body_limits() -> Arc<crate::limits::BodyLimits> {
    let limits = <crate::Args as clap::Parser>::try_parse_from(["meshgate", "-c", "."])
        .unwrap()
        .limits;
    crate::limits::BodyLimits::new(&limits)
}

async fn read(resp: http::Response<Returning>) -> String {
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

#[tokio::test]
async fn a_connection_read_to_the_end_carries_the_next_request() {
    for req in BOTH {
        let (address, accepted) = upstream().await;
        let (pool, _) = pool(None, true);
        for path in ["/a", "/b?x=1", "/big", "/c"] {
            let resp = pool.send(address.clone(), req(path)).await.unwrap();
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
}

#[tokio::test]
async fn a_chunked_body_gives_its_connection_back_at_its_last_chunk() {
    for req in BOTH {
        let (address, accepted) = upstream().await;
        let (pool, _) = pool(None, true);
        for _ in 0..2 {
            let resp = pool.send(address.clone(), req("/chunked")).await.unwrap();
            assert_eq!(resp.body().size_hint().exact(), None);
            assert_eq!(read(resp).await, "abc");
            assert_eq!(pool.idle(&address), 1);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }
}

#[tokio::test]
async fn a_body_goes_back_with_its_last_frame_not_before() {
    for req in BOTH {
        let (address, _) = upstream().await;
        let (pool, _) = pool(None, true);
        let resp = pool.send(address.clone(), req("/big")).await.unwrap();
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
        let resp = pool.send(address.clone(), req("/empty")).await.unwrap();
        assert!(resp.body().is_end_stream(), "an empty body has ended at the head");
        assert_eq!(resp.body().size_hint().exact(), Some(0));
    }
}

#[tokio::test]
async fn a_connection_that_cannot_take_a_request_is_passed_over() {
    let (address, accepted) = upstream().await;
    let (pool, connections) = pool(None, true);
    read(pool.send(address.clone(), streamed("/a")).await.unwrap()).await;
    // On top of the good idle connection, one whose connection task is gone.
    let stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let (dead, conn) = Builder::new()
        .handshake::<_, AttemptBody>(TokioIo::new(stream))
        .await
        .unwrap();
    drop(conn);
    pool.shared.parked().hyper.get_mut(&address).unwrap().push(Idle {
        conn: dead,
        since: Instant::now(),
    });
    assert_eq!(
        read(pool.send(address.clone(), streamed("/a")).await.unwrap()).await,
        "/a"
    );
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "the good one was taken, none dialled"
    );
    assert_eq!(connections.total(), 1);
}

#[tokio::test]
async fn a_body_dropped_before_its_end_closes_its_connection() {
    for req in BOTH {
        let (address, accepted) = upstream().await;
        let (pool, _) = pool(None, true);
        let resp = pool.send(address.clone(), req("/big")).await.unwrap();
        drop(resp);
        assert_eq!(pool.idle(&address), 0);
        read(pool.send(address.clone(), req("/a")).await.unwrap()).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }
}

#[tokio::test]
async fn without_keep_alive_every_request_has_its_own_connection() {
    for req in BOTH {
        let (address, accepted) = upstream().await;
        let (pool, connections) = pool(None, false);
        for _ in 0..3 {
            read(pool.send(address.clone(), req("/a")).await.unwrap()).await;
            assert_eq!(pool.idle(&address), 0);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
        assert_eq!(connections.total(), 3, "each connection made is counted");
    }
}

#[tokio::test]
async fn a_connection_the_upstream_closes_is_not_used_again() {
    for req in BOTH {
        let (address, accepted) = upstream().await;
        let (pool, connections) = pool(None, true);
        read(pool.send(address.clone(), req("/close")).await.unwrap()).await;
        assert_eq!(read(pool.send(address.clone(), req("/a")).await.unwrap()).await, "/a");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(connections.active(), 1, "the closed one is no longer active");
    }
}

#[tokio::test]
async fn a_connection_idle_past_the_timeout_is_closed() {
    for req in BOTH {
        let (address, accepted) = upstream().await;
        let (pool, connections) = pool(Some(Duration::from_millis(100)), true);
        read(pool.send(address.clone(), req("/a")).await.unwrap()).await;
        assert_eq!(pool.idle(&address), 1);
        // Within the timeout: reused.
        read(pool.send(address.clone(), req("/a")).await.unwrap()).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert_eq!(pool.idle(&address), 0, "the reaper closed it");
        assert_eq!(connections.active(), 0);
        read(pool.send(address.clone(), req("/a")).await.unwrap()).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }
}

#[tokio::test]
async fn the_reaper_keeps_an_open_connection_used_within_the_timeout() {
    for req in BOTH {
        let (address, accepted) = upstream().await;
        let (pool, connections) = pool(Some(Duration::from_secs(1)), true);
        // The reaper starts with the first connection given back and looks every second.
        read(pool.send(address.clone(), req("/a")).await.unwrap()).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        read(pool.send(address.clone(), req("/a")).await.unwrap()).await;
        // At its first look (1 s) the connection had been idle for 0.5 s: it stays.
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert_eq!(pool.idle(&address), 1, "kept: used within the timeout");
        assert_eq!(connections.active(), 1);
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }
}

#[tokio::test]
async fn an_idle_connection_the_upstream_closes_is_let_go_within_a_second() {
    // An upstream that closes each connection 100 ms after it was accepted.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let service = hyper::service::service_fn(|req: http::Request<Incoming>| async move {
                let _ = req.into_body().collect().await;
                Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from_static(b"ok"))))
            });
            let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            tokio::spawn(tokio::time::timeout(Duration::from_millis(100), conn));
        }
    });
    for req in BOTH {
        // No idle timeout: only the close lets the connection go.
        let (pool, connections) = pool(None, true);
        assert_eq!(read(pool.send(address.clone(), req("/a")).await.unwrap()).await, "ok");
        assert_eq!(pool.idle(&address), 1);
        tokio::time::sleep(Duration::from_millis(2300)).await;
        assert_eq!(pool.idle(&address), 0, "swept once seen closed");
        assert_eq!(connections.active(), 0);
    }
}

#[tokio::test]
async fn an_expired_connection_is_not_taken_even_before_the_reaper_runs() {
    for (i, req) in BOTH.into_iter().enumerate() {
        let (address, accepted) = upstream().await;
        let (pool, _) = pool(Some(Duration::from_millis(100)), true);
        read(pool.send(address.clone(), req("/a")).await.unwrap()).await;
        // Age the idle connection without waiting for the reaper's tick.
        {
            let mut parked = pool.shared.parked();
            let since = match i {
                0 => &mut parked.wire.get_mut(&address).unwrap()[0].since,
                _ => &mut parked.hyper.get_mut(&address).unwrap()[0].since,
            };
            *since -= Duration::from_secs(1);
        }
        read(pool.send(address.clone(), req("/a")).await.unwrap()).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }
}

#[tokio::test]
async fn a_wire_connection_the_upstream_closed_while_idle_is_passed_over() {
    // An upstream that answers one request per connection, with keep-alive, then closes.
    let (address, _) = raw_upstream(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", Then::Close).await;
    let (pool, connections) = pool(None, true);
    for _ in 0..3 {
        assert_eq!(read(pool.send(address.clone(), get("/a")).await.unwrap()).await, "ok");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(connections.total(), 3, "a closed connection is never written to");
}

#[tokio::test]
async fn a_request_that_could_not_be_written_on_an_idle_connection_goes_on_a_new_one() {
    // An upstream that answers every request on a connection and never closes one.
    let (address, served) = raw_upstream(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", Then::Serve).await;
    let (pool, connections) = pool(None, true);
    assert_eq!(read(pool.send(address.clone(), get("/a")).await.unwrap()).await, "ok");
    // The idle connection still looks open, but nothing can be written on it any more.
    let mut conn = take_parked(&pool, &address);
    conn.close_write().await;
    pool.shared.give_back_wire(address.clone(), conn);
    assert_eq!(read(pool.send(address.clone(), get("/b")).await.unwrap()).await, "ok");
    assert_eq!(connections.total(), 2, "a new connection carried it");
    assert_eq!(
        served.load(Ordering::SeqCst),
        2,
        "each request reached the upstream once"
    );
}

fn take_parked(pool: &H1Pool, address: &str) -> wire::Conn {
    pool.shared.parked().wire.get_mut(address).unwrap().pop().unwrap().conn
}

#[tokio::test]
async fn nothing_listening_is_a_connect_error() {
    for req in BOTH {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        drop(listener);
        let (pool, connections) = pool(None, true);
        match pool.send(address, req("/a")).await {
            Err(H1Error::Connect(why)) => assert!(why.contains("refused"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(connections.total(), 0);
    }
}

/// What a raw upstream does on each connection after it accepts it.
#[derive(Clone, Copy, PartialEq)]
enum Then {
    /// Answers the first read, then closes.
    Close,
    /// Answers the first read (however much of the request it holds), then keeps the connection
    /// open without reading more.
    Hold,
    /// Answers every read, and keeps the connection open once the client closes its side.
    Serve,
}

/// A raw HTTP/1.1 upstream on loopback that answers a read of the request with `answer`, as
/// `then` says, and counts its answers.
async fn raw_upstream(answer: &'static [u8], then: Then) -> (String, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let answered = Arc::new(AtomicUsize::new(0));
    let count = answered.clone();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let count = count.clone();
            tokio::spawn(async move {
                let mut head = [0u8; 1024];
                while stream.read(&mut head).await.is_ok_and(|n| n > 0) {
                    count.fetch_add(1, Ordering::SeqCst);
                    let _ = stream.write_all(answer).await;
                    if then != Then::Serve {
                        break;
                    }
                }
                if then != Then::Close {
                    std::future::pending::<()>().await;
                }
            });
        }
    });
    (address, answered)
}

#[tokio::test]
async fn a_connection_still_sending_its_last_request_body_is_not_waited_for() {
    // It answers at once, without reading the body.
    let (address, accepted) = raw_upstream(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", Then::Hold).await;
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
    let mut req = get("/upload");
    *req.body_mut() = RequestBody::streaming(Unending, &body_limits()).attempt();
    assert_eq!(read(pool.send(address.clone(), req).await.unwrap()).await, "ok");
    // The next request goes through hyper's client too, where the unfinished one is parked.
    let next = tokio::time::timeout(Duration::from_secs(5), pool.send(address.clone(), streamed("/a")));
    let resp = next
        .await
        .expect("the next request does not wait for the unfinished upload");
    assert_eq!(read(resp.unwrap()).await, "ok");
    assert_eq!(accepted.load(Ordering::SeqCst), 2, "it went on a new connection");
}

#[tokio::test]
async fn idle_connections_per_address_are_bounded() {
    for req in BOTH {
        let (address, _) = upstream().await;
        let (pool, _) = pool(None, true);
        let mut held = Vec::new();
        for _ in 0..MAX_IDLE_PER_ADDRESS + 2 {
            held.push(pool.send(address.clone(), req("/a")).await.unwrap());
        }
        for resp in held {
            read(resp).await;
        }
        assert_eq!(pool.idle(&address), MAX_IDLE_PER_ADDRESS);
    }
}

#[tokio::test]
async fn a_body_that_fails_closes_its_connection_at_once_and_never_ends_cleanly() {
    // An upstream whose chunked body breaks off with a bad chunk, the connection left open.
    let answer = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\nzz\r\n";
    let (address, _) = raw_upstream(answer, Then::Hold).await;
    let (pool, connections) = pool(None, true);
    let mut body = pool.send(address.clone(), get("/a")).await.unwrap().into_body();
    assert_eq!(body.frame().await.unwrap().unwrap().into_data().unwrap(), "ok");
    assert!(body.frame().await.unwrap().is_err(), "the bad chunk");
    assert_eq!(
        connections.active(),
        0,
        "closed at the error, not when the body is dropped"
    );
    assert!(
        body.frame().await.unwrap().is_err(),
        "asked again, still an error, not an end"
    );
    assert!(!body.is_end_stream());
    assert_eq!(pool.idle(&address), 0);
}
