use std::sync::atomic::AtomicUsize;

use http_body_util::StreamBody;
use tokio::net::TcpListener;
use tokio_stream::wrappers::ReceiverStream;

use super::*;
use crate::replay::RequestBody;

/// An h2 upstream on loopback (the h2 crate's server), which counts the connections it
/// accepts and the streams reset to it, and keeps every request's headers. Paths:
/// `/echo` answers with the whole request body and its trailers; `/stream` echoes each data
/// frame as it arrives; `/hold` sends one frame and waits for a reset; `/refuse` refuses the
/// stream; `/goaway` answers and closes the connection gracefully; `/window` answers with the
/// most send capacity the client's windows granted it; `/headers/N` with an N-byte header.
#[derive(Clone)]
struct Upstream {
    address: String,
    accepted: Arc<AtomicUsize>,
    resets: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<http::HeaderMap>>>,
    /// `/window` answers once three streams have their capacity, so none gives its back first.
    windows: Arc<tokio::sync::Barrier>,
}

impl Default for Upstream {
    fn default() -> Upstream {
        Upstream {
            address: String::new(),
            accepted: Arc::default(),
            resets: Arc::default(),
            seen: Arc::default(),
            windows: Arc::new(tokio::sync::Barrier::new(3)),
        }
    }
}

async fn upstream() -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = Upstream {
        address: listener.local_addr().unwrap().to_string(),
        ..Upstream::default()
    };
    let state = up.clone();
    tokio::spawn(async move {
        loop {
            let (io, _) = listener.accept().await.unwrap();
            state.accepted.fetch_add(1, Ordering::SeqCst);
            let state = state.clone();
            tokio::spawn(async move {
                // A send buffer larger than any window, so `/window` sees the client's windows.
                let handshake = h2::server::Builder::new().max_send_buffer_size(16 << 20).handshake(io);
                let Ok(mut conn) = handshake.await else {
                    return;
                };
                while let Some(Ok((req, respond))) = conn.accept().await {
                    let goaway = req.uri().path() == "/goaway";
                    tokio::spawn(answer(req, respond, state.clone()));
                    if goaway {
                        conn.graceful_shutdown();
                    }
                }
            });
        }
    });
    up
}

async fn answer(req: http::Request<RecvStream>, mut respond: h2::server::SendResponse<Bytes>, state: Upstream) {
    let (parts, mut recv) = req.into_parts();
    lock(&state.seen).push(parts.headers);
    let ok = || http::Response::new(());
    match parts.uri.path() {
        "/echo" => {
            let mut body = Vec::new();
            while let Some(Ok(data)) = recv.data().await {
                let _ = recv.flow_control().release_capacity(data.len());
                body.extend_from_slice(&data);
            }
            let trailers = recv.trailers().await.ok().flatten();
            let mut send = respond.send_response(ok(), false).unwrap();
            send.send_data(body.into(), trailers.is_none()).unwrap();
            if let Some(t) = trailers {
                send.send_trailers(t).unwrap();
            }
        }
        "/stream" => {
            let mut send = respond.send_response(ok(), false).unwrap();
            while let Some(Ok(data)) = recv.data().await {
                let _ = recv.flow_control().release_capacity(data.len());
                send.send_data(data, false).unwrap();
            }
            let trailers = recv.trailers().await.ok().flatten().unwrap_or_default();
            send.send_trailers(trailers).unwrap();
        }
        "/hold" => {
            let mut send = respond.send_response(ok(), false).unwrap();
            send.send_data(Bytes::from_static(b"held"), false).unwrap();
            if poll_fn(|cx| send.poll_reset(cx)).await.is_ok() {
                state.resets.fetch_add(1, Ordering::SeqCst);
            }
        }
        "/refuse" => respond.send_reset(h2::Reason::REFUSED_STREAM),
        "/window" => {
            let mut send = respond.send_response(ok(), false).unwrap();
            send.reserve_capacity(8 << 20);
            let mut granted = 0;
            let more = Duration::from_millis(300);
            while let Ok(Some(Ok(n))) = tokio::time::timeout(more, poll_fn(|cx| send.poll_capacity(cx))).await {
                granted = granted.max(n);
            }
            state.windows.wait().await;
            send.send_data(granted.to_string().into(), true).unwrap();
        }
        path if path.starts_with("/headers/") => {
            let n: usize = path["/headers/".len()..].parse().unwrap();
            let mut resp = ok();
            resp.headers_mut()
                .insert("x-big", http::HeaderValue::from_str(&"b".repeat(n)).unwrap());
            let _ = respond.send_response(resp, true);
        }
        _ => {
            let mut send = respond.send_response(ok(), false).unwrap();
            send.send_data(Bytes::from_static(b"bye"), true).unwrap();
        }
    }
}

fn pool(up: &Upstream, idle_timeout: Option<Duration>, max_requests: Option<u32>) -> (H2Pool, Connections) {
    let resolver = crate::dns::Resolver::new(crate::dns::Cache::new(Duration::from_secs(1)), crate::dns::Take::Every);
    let connections = Connections::default();
    let to = Dial::new(up.address.clone(), Duration::from_secs(1), &resolver);
    (H2Pool::new(to, idle_timeout, max_requests, &connections), connections)
}

fn request(path: &str, body: AttemptBody) -> http::Request<AttemptBody> {
    let mut req = http::Request::new(body);
    *req.uri_mut() = format!("http://svc.example{path}").parse().unwrap();
    *req.method_mut() = http::Method::POST;
    req
}

fn whole(path: &str, body: &'static str) -> http::Request<AttemptBody> {
    let reservation = crate::limits::BufferBudget::new(1 << 20).reserve();
    request(
        path,
        RequestBody::whole(Bytes::from_static(body.as_bytes()), reservation).attempt(),
    )
}

type Frames = tokio::sync::mpsc::Sender<Result<Frame<Bytes>, std::convert::Infallible>>;

/// A request whose body streams: frames go in through the sender, the body ends when it drops.
fn streaming(path: &str) -> (http::Request<AttemptBody>, Frames, RequestBody) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let limits = crate::limits::BodyLimits {
        max: 1 << 20,
        timeout: Duration::from_secs(10),
        budget: crate::limits::BufferBudget::new(1 << 20),
    };
    let body = RequestBody::streaming(StreamBody::new(ReceiverStream::new(rx)), &limits);
    (request(path, body.attempt()), tx, body)
}

async fn text(resp: http::Response<H2Body>) -> String {
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

/// Waits up to 5 s for `done`.
async fn eventually(done: impl Fn() -> bool) -> bool {
    for _ in 0..500 {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    done()
}

#[tokio::test]
async fn concurrent_requests_are_streams_on_one_connection() {
    let up = upstream().await;
    let (pool, connections) = pool(&up, None, None);
    let mut sends = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let pool = pool.clone();
        sends.spawn(async move { text(pool.send(whole("/echo", "hello")).await.unwrap()).await });
    }
    let bodies = sends.join_all().await;
    assert!(bodies.iter().all(|b| b == "hello"), "{bodies:?}");
    assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
    assert_eq!(connections.total(), 1);
    assert_eq!(connections.active(), 1);
    assert!(pool.has_live());
}

#[tokio::test]
async fn a_streaming_body_and_its_response_go_frame_by_frame_with_their_trailers() {
    let up = upstream().await;
    let (pool, _) = pool(&up, None, None);
    let (req, tx, _body) = streaming("/stream");
    let mut resp = pool.send(req).await.unwrap();
    let body = resp.body_mut();
    assert!(!body.is_end_stream());
    // Each frame comes back before the next is sent: neither side waits for the whole body.
    for chunk in ["one", "two"] {
        tx.send(Ok(Frame::data(Bytes::from(chunk)))).await.unwrap();
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), chunk);
    }
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    tx.send(Ok(Frame::trailers(trailers.clone()))).await.unwrap();
    drop(tx);
    let frame = body.frame().await.unwrap().unwrap();
    assert_eq!(frame.into_trailers().unwrap(), trailers);
    assert!(body.frame().await.is_none());
    assert!(body.is_end_stream());
}

#[tokio::test]
async fn a_body_larger_than_the_window_waits_for_it_to_open() {
    let up = upstream().await;
    let (pool, _) = pool(&up, None, None);
    // The upstream's windows are h2's default 64 KiB: 1 MiB goes in many grants.
    let big = Bytes::from(vec![b'x'; 1 << 20]);
    let (req, tx, _body) = streaming("/echo");
    let sent = tokio::spawn(async move {
        tx.send(Ok(Frame::data(big))).await.unwrap();
        tx.send(Ok(Frame::data(Bytes::from_static(b"end")))).await.unwrap();
    });
    let resp = pool.send(req).await.unwrap();
    let body = text(resp).await;
    sent.await.unwrap();
    assert_eq!(body.len(), (1 << 20) + 3);
    assert!(body.ends_with("xend"));
}

#[tokio::test]
async fn an_empty_streaming_body_ends_the_stream() {
    let up = upstream().await;
    let (pool, _) = pool(&up, None, None);
    let (req, tx, _body) = streaming("/echo");
    drop(tx);
    assert_eq!(text(pool.send(req).await.unwrap()).await, "");
    let (req, tx, _body) = streaming("/echo");
    tx.send(Ok(Frame::data(Bytes::new()))).await.unwrap();
    drop(tx);
    assert_eq!(text(pool.send(req).await.unwrap()).await, "");
}

#[tokio::test]
async fn connection_specific_headers_are_not_sent_and_te_only_as_trailers() {
    let up = upstream().await;
    let (pool, _) = pool(&up, None, None);
    for te in ["trailers", "gzip"] {
        let mut req = whole("/echo", "x");
        let h = req.headers_mut();
        h.insert("te", http::HeaderValue::from_static(te));
        h.insert("connection", http::HeaderValue::from_static("keep-alive"));
        h.insert("keep-alive", http::HeaderValue::from_static("timeout=5"));
        h.insert("upgrade", http::HeaderValue::from_static("websocket"));
        h.insert("x-kept", http::HeaderValue::from_static("yes"));
        assert_eq!(text(pool.send(req).await.unwrap()).await, "x");
    }
    let seen = lock(&up.seen);
    assert_eq!(seen[0].get("te").unwrap(), "trailers");
    assert!(seen[1].get("te").is_none());
    for h in seen.iter() {
        assert_eq!(h.get("x-kept").unwrap(), "yes");
        assert!(h.get("connection").is_none() && h.get("keep-alive").is_none() && h.get("upgrade").is_none());
    }
}

#[tokio::test]
async fn max_requests_per_connection_moves_to_a_new_connection() {
    let up = upstream().await;
    let (pool, connections) = pool(&up, None, Some(2));
    for _ in 0..5 {
        assert_eq!(text(pool.send(whole("/echo", "a")).await.unwrap()).await, "a");
    }
    // 2 + 2 + 1.
    assert_eq!(up.accepted.load(Ordering::SeqCst), 3);
    assert_eq!(connections.total(), 3);
    // Connections let go close once their streams are done.
    assert!(
        eventually(|| connections.active() == 1).await,
        "{}",
        connections.active()
    );

    let (one, connections) = self::pool(&up, None, Some(1));
    for _ in 0..3 {
        assert_eq!(text(one.send(whole("/echo", "b")).await.unwrap()).await, "b");
    }
    assert_eq!(connections.total(), 3);
    assert!(!one.has_live());
    assert!(eventually(|| connections.active() == 0).await);
}

#[tokio::test]
async fn a_connection_the_upstream_closed_is_replaced() {
    let up = upstream().await;
    let (pool, connections) = pool(&up, None, None);
    assert_eq!(text(pool.send(whole("/goaway", "")).await.unwrap()).await, "bye");
    assert!(eventually(|| connections.active() == 0).await);
    assert_eq!(text(pool.send(whole("/echo", "again")).await.unwrap()).await, "again");
    assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
    assert_eq!(connections.total(), 2);
}

#[tokio::test]
async fn a_connection_idle_past_the_timeout_is_let_go_and_closes() {
    let up = upstream().await;
    let (pool, connections) = pool(&up, Some(Duration::from_millis(100)), None);
    assert_eq!(text(pool.send(whole("/echo", "a")).await.unwrap()).await, "a");
    assert!(pool.has_live());
    // The reaper lets go of it without another request coming, and it closes.
    assert!(eventually(|| !pool.has_live()).await);
    assert!(eventually(|| connections.active() == 0).await);
    assert_eq!(text(pool.send(whole("/echo", "b")).await.unwrap()).await, "b");
    assert_eq!(up.accepted.load(Ordering::SeqCst), 2);

    // Used within the timeout, it stays.
    let (kept, connections) = self::pool(&up, Some(Duration::from_secs(30)), None);
    for _ in 0..3 {
        assert_eq!(text(kept.send(whole("/echo", "c")).await.unwrap()).await, "c");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(connections.total(), 1);
    assert!(kept.has_live());
}

#[tokio::test]
async fn an_expired_connection_is_not_taken_even_before_the_reaper_runs() {
    let up = upstream().await;
    let (pool, connections) = pool(&up, Some(Duration::from_millis(50)), None);
    assert_eq!(text(pool.send(whole("/echo", "a")).await.unwrap()).await, "a");
    // Past the timeout, but the reaper's first tick is a whole period after it started.
    std::thread::sleep(Duration::from_millis(60));
    assert!(pool.shared.take().is_none());
    assert!(!pool.has_live());
    assert_eq!(text(pool.send(whole("/echo", "b")).await.unwrap()).await, "b");
    assert_eq!(connections.total(), 2);
}

#[tokio::test]
async fn dropping_the_response_resets_the_stream_and_stops_the_body() {
    let up = upstream().await;
    let (pool, _) = pool(&up, None, None);
    // A whole body: the dropped response's stream is reset.
    let mut resp = pool.send(whole("/hold", "x")).await.unwrap();
    let first = resp.body_mut().frame().await.unwrap().unwrap();
    assert_eq!(first.into_data().unwrap(), "held");
    drop(resp);
    assert!(eventually(|| up.resets.load(Ordering::SeqCst) == 1).await);

    // A body still streaming: the pump stops sending it, and the stream is reset.
    let (req, tx, body) = streaming("/hold");
    tx.send(Ok(Frame::data(Bytes::from_static(b"part")))).await.unwrap();
    let resp = pool.send(req).await.unwrap();
    drop(resp);
    assert!(eventually(|| up.resets.load(Ordering::SeqCst) == 2).await);
    let RequestBody::Streaming(shared) = &body else {
        panic!("{body:?}")
    };
    // Only this test's handle is left: the pump let go of the attempt's body.
    assert!(
        eventually(|| Arc::strong_count(shared) == 1).await,
        "the pump still holds the client's body"
    );
}

#[tokio::test]
async fn a_failing_request_body_resets_the_stream() {
    let up = upstream().await;
    let (pool, _) = pool(&up, None, None);
    let (req, tx, body) = streaming("/hold");
    let resp = pool.send(req).await.unwrap();
    // A retry's attempt supersedes this one: this attempt's body fails.
    let _retry = body.attempt();
    tx.send(Ok(Frame::data(Bytes::from_static(b"part")))).await.unwrap();
    assert!(eventually(|| up.resets.load(Ordering::SeqCst) == 1).await);
    drop(resp);
}

#[tokio::test]
async fn a_refused_stream_is_a_reset_and_no_upstream_a_connect_failure() {
    let up = upstream().await;
    let (pool, _) = pool(&up, None, None);
    match pool.send(whole("/refuse", "")).await {
        Err(SendError::Reset(why)) => assert!(why.contains("refused"), "{why}"),
        other => panic!("{other:?}"),
    }
    // The connection itself is fine: the next request uses it.
    assert_eq!(text(pool.send(whole("/echo", "ok")).await.unwrap()).await, "ok");
    assert_eq!(up.accepted.load(Ordering::SeqCst), 1);

    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gone = Upstream {
        address: closed.local_addr().unwrap().to_string(),
        ..Upstream::default()
    };
    drop(closed);
    let (pool, connections) = self::pool(&gone, None, None);
    assert!(matches!(
        pool.send(whole("/echo", "")).await,
        Err(SendError::Connect(_))
    ));
    assert_eq!(connections.total(), 0);
}

#[tokio::test]
async fn the_windows_are_hypers_2_mib_per_stream_and_5_mib_per_connection() {
    let up = upstream().await;
    let (pool, _) = pool(&up, None, None);
    let mut windows = tokio::task::JoinSet::new();
    for _ in 0..3 {
        let pool = pool.clone();
        windows.spawn(async move { text(pool.send(whole("/window", "")).await.unwrap()).await });
    }
    let mut granted: Vec<u64> = windows.join_all().await.iter().map(|w| w.parse().unwrap()).collect();
    granted.sort_unstable();
    // Three streams on one connection: two get a whole stream window, the third what is left.
    assert_eq!(granted, [1 << 20, 2 << 20, 2 << 20]);
    assert_eq!(granted.iter().sum::<u64>(), 5 << 20);
    assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn response_headers_past_16_kib_fail_the_request() {
    let up = upstream().await;
    let (pool, _) = pool(&up, None, None);
    let resp = pool.send(whole("/headers/12000", "")).await.unwrap();
    assert_eq!(resp.headers()["x-big"].len(), 12000);
    assert!(matches!(
        pool.send(whole("/headers/20000", "")).await,
        Err(SendError::Reset(_))
    ));
}

#[tokio::test]
async fn a_connection_that_ended_before_the_pool_saw_it_is_replaced() {
    let up = upstream().await;
    let (pool, connections) = pool(&up, None, None);
    assert_eq!(text(pool.send(whole("/goaway", "")).await.unwrap()).await, "bye");
    assert!(eventually(|| connections.active() == 0).await);
    // The race this covers: the connection has ended but its task has not said so yet, so the
    // pool hands it out and only h2 knows it cannot take a stream.
    lock(&pool.shared.live)
        .as_ref()
        .unwrap()
        .closed
        .store(false, Ordering::Relaxed);
    assert_eq!(text(pool.send(whole("/echo", "again")).await.unwrap()).await, "again");
    assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
    assert!(pool.has_live());
}
