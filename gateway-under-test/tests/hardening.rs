//! meshgate under abuse, on the wire: slow and stalled clients are closed at their timeouts,
//! oversized headers and bodies are refused with Envoy's statuses, the buffer budget and the
//! connection limit hold, and SIGTERM drains with no request refused or reset.

#![allow(clippy::expect_used, clippy::unwrap_used)] // Test code: a failure should panic.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use support::*;

fn config(e: &EchoThread) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: istio-system}}\nspec:\n  \
         servers:\n  - port: {{number: 80, name: http, protocol: HTTP}}\n    hosts: ['*']\n---\n\
         apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: web, namespace: default}}\nspec:\n  \
         hosts: [web.example.com]\n  resolution: STATIC\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  \
         endpoints: [{{address: 127.0.0.1, ports: {{http: {}}}}}]\n---\n\
         apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: web, namespace: default}}\nspec:\n  \
         hosts: ['*']\n  gateways: [istio-system/gw]\n  http:\n  - route: [{{destination: {{host: web.example.com}}}}]\n",
        e.http[0].port()
    )
}

/// Connects, sends `sent`, and asserts the gateway closes the connection, no sooner than `at_least`.
fn assert_closed_after(addr: SocketAddr, sent: &[u8], at_least: Duration) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(sent).unwrap();
    let start = Instant::now();
    read_until_closed(&mut s, Duration::from_secs(3)).expect("closed");
    assert!(start.elapsed() >= at_least, "closed after {:?}", start.elapsed());
}

/// SIGTERM to the gateway.
fn terminate(g: &Gate) {
    let pid = g.child.id().to_string();
    let status = std::process::Command::new("kill").args(["-TERM", &pid]).status();
    assert!(status.unwrap().success(), "kill -TERM {pid}");
}

#[test]
fn a_slowloris_client_is_closed_at_the_headers_timeout_while_others_are_served() {
    let e = echo("web", "v1");
    let g = gate_with(&config(&e), &[80], &["--request-headers-timeout", "1s"]);
    let addr = g.port(80);
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHo").unwrap();
    let start = Instant::now();
    // One more header byte every 200 ms: never a whole header block.
    let writer = {
        let mut s = slow.try_clone().unwrap();
        std::thread::spawn(move || {
            for _ in 0..25 {
                std::thread::sleep(Duration::from_millis(200));
                if s.write_all(b"x").is_err() {
                    return;
                }
            }
        })
    };
    // Half a head and then nothing: the sweep wakes its reader to answer.
    let mut stalled = TcpStream::connect(addr).unwrap();
    stalled.write_all(b"GET / HTTP/1.1\r\nHo").unwrap();
    assert_eq!(get(addr, "/", &[]).status, 200, "others are served meanwhile");
    let got = read_until_closed(&mut stalled, Duration::from_secs(4)).expect("closed");
    assert_eq!(status_of(&got), Some(408), "{got:?}");
    let got = read_until_closed(&mut slow, Duration::from_secs(4)).expect("closed");
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(900), "closed too early: {waited:?}");
    // Envoy's local reply, then the close.
    assert_eq!(status_of(&got), Some(408), "{got:?}");
    assert!(got.ends_with("request header timeout"), "{got:?}");
    assert!(waited < Duration::from_millis(2500), "closed too late: {waited:?}");
    writer.join().unwrap();
}

#[test]
fn a_keep_alive_connection_waiting_for_its_next_request_outlives_the_headers_timeout() {
    // Envoy's request_headers_timeout runs from a head's first byte; the wait between requests
    // is the idle timeout's (1 h by default).
    let e = echo("web", "v1");
    let g = gate_with(&config(&e), &[80], &["--request-headers-timeout", "500ms"]);
    let mut s = TcpStream::connect(g.port(80)).unwrap();
    // A connection that has sent nothing yet is not timed either.
    std::thread::sleep(Duration::from_millis(1200));
    for _ in 0..2 {
        s.write_all(b"GET / HTTP/1.1\r\nHost: web.example.com\r\n\r\n").unwrap();
        let got = read_response(&mut s);
        assert_eq!(status_of(&got), Some(200), "{got:?}");
        std::thread::sleep(Duration::from_millis(1200));
    }
}

#[test]
fn an_upstream_closing_its_connection_leaves_the_clients_open() {
    // `Connection: close` and `Keep-Alive` describe the upstream's connection: Envoy drops them
    // from the response, and the client's connection stays open.
    let e = echo("web", "v1");
    let g = gate(&config(&e), &[80]);
    let mut s = TcpStream::connect(g.port(80)).unwrap();
    for _ in 0..3 {
        s.write_all(b"GET /?headers=connection:close,keep-alive:timeout=5 HTTP/1.1\r\nHost: web.example.com\r\n\r\n")
            .unwrap();
        let got = read_response(&mut s).to_ascii_lowercase();
        assert_eq!(status_of(&got), Some(200), "{got:?}");
        let head = got.split("\r\n\r\n").next().unwrap_or_default();
        assert!(
            !head.contains("connection:") && !head.contains("keep-alive:"),
            "{head:?}"
        );
    }
}

#[test]
fn an_idle_connection_is_closed_at_the_idle_timeout() {
    let e = echo("web", "v1");
    let g = gate_with(&config(&e), &[80], &["--idle-timeout", "300ms"]);
    assert_closed_after(g.port(80), b"", Duration::from_millis(250));
}

#[test]
fn a_stalled_tls_handshake_is_closed_at_the_handshake_timeout() {
    let e = echo("web", "v1");
    let dir = temp_dir("stall");
    let ca = Ca::new(&dir, "main");
    let (crt, key) = ca.issue("a", &["a.example.com"]);
    let yaml = config(&e).replace(
        "  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: ['*']\n",
        &format!(
            "  - port: {{number: 443, name: https, protocol: HTTPS}}\n    hosts: ['*']\n    \
             tls: {{mode: SIMPLE, serverCertificate: {crt}, privateKey: {key}}}\n"
        ),
    );
    let g = gate_with(&yaml, &[443], &["--tls-handshake-timeout", "500ms"]);
    // Nothing at all, and half a ClientHello record: both are closed.
    for sent in [&b""[..], &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01][..]] {
        assert_closed_after(g.port(443), sent, Duration::from_millis(400));
    }
}

#[test]
fn headers_past_envoys_limits_get_431() {
    let e = echo("web", "v1");
    let g = gate(&config(&e), &[80]);
    let addr = g.port(80);
    let big = "x".repeat(61 * 1024);
    assert_eq!(get(addr, "/", &[("x-big", &big)]).status, 431, "61 KiB > Envoy's 60");
    let fine = "x".repeat(50 * 1024);
    assert_eq!(get(addr, "/", &[("x-big", &fine)]).status, 200);
    let names: Vec<String> = (0..100).map(|i| format!("x-h{i}")).collect();
    let many: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "1")).collect();
    assert_eq!(
        get(addr, "/", &many).status,
        431,
        "100 + Host + Content-Length + Connection > 100"
    );
    assert_eq!(get(addr, "/", &many[..90]).status, 200);
}

/// Sends a request head with `Expect: 100-continue` and reads the first response line.
fn expect_continue(addr: SocketAddr, content_length: usize) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    let head =
        format!("POST / HTTP/1.1\r\nHost: web\r\nContent-Length: {content_length}\r\nExpect: 100-continue\r\n\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    line
}

#[test]
fn a_body_past_the_retry_buffer_streams_and_a_slow_whole_body_gets_408() {
    let e = echo("web", "v1");
    let g = gate_with(
        &config(&e),
        &[80],
        &["--max-request-body-kb", "64", "--request-timeout", "1s"],
    );
    let addr = g.port(80);
    // Within the limit a body is read whole first; past it, it streams: either way the client
    // is asked for it (100 Continue), never refused for its size (Envoy has no such limit).
    assert!(expect_continue(addr, 65 * 1024).starts_with("HTTP/1.1 100"));
    assert!(expect_continue(addr, 1024).starts_with("HTTP/1.1 100"));
    // Chunked, past the limit: streamed to the upstream.
    let chunk = "y".repeat(40 * 1024);
    let mut s = TcpStream::connect(addr).unwrap();
    let body = format!(
        "{:x}\r\n{chunk}\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        chunk.len(),
        chunk.len()
    );
    s.write_all(
        format!("POST / HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{body}")
            .as_bytes(),
    )
    .unwrap();
    let got = read_until_closed(&mut s, Duration::from_secs(5)).expect("closed after the response");
    assert_eq!(status_of(&got), Some(200), "{got:?}");
    // A body that trickles in: 408 at the request timeout.
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"POST / HTTP/1.1\r\nHost: web\r\nContent-Length: 1000\r\n\r\nab")
        .unwrap();
    let start = Instant::now();
    let got = read_until_closed(&mut s, Duration::from_secs(5)).expect("closed after the 408");
    assert_eq!(status_of(&got), Some(408), "{got:?}");
    assert!(start.elapsed() >= Duration::from_millis(900));
    assert!(g
        .wait_log("request_overall_timeout")
        .contains("\" 408 - request_overall_timeout"));
}

#[test]
fn a_streamed_body_that_stalls_gets_408_at_the_request_timeout() {
    let e = echo("web", "v1");
    let g = gate_with(&config(&e), &[80], &["--request-timeout", "1s"]);
    // Chunked, so it streams to the upstream as it arrives; one chunk, then nothing: the
    // upstream waits for the rest, and the gateway answers 408 when the request timeout ends
    // (Envoy's request_timeout covers the whole body, streamed or not) and closes the
    // connection, the rest of the body unread.
    let mut s = TcpStream::connect(g.port(80)).unwrap();
    s.write_all(b"POST / HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        .unwrap();
    let start = Instant::now();
    let got = read_until_closed(&mut s, Duration::from_secs(5)).expect("closed after the 408");
    assert_eq!(status_of(&got), Some(408), "{got:?}");
    assert!(got.contains("request timeout"), "{got:?}");
    assert!(start.elapsed() >= Duration::from_millis(900), "{:?}", start.elapsed());
    assert!(g
        .wait_log("request_overall_timeout")
        .contains("\" 408 - request_overall_timeout"));
}

#[test]
fn the_buffer_budget_answers_503_overloaded_instead_of_growing() {
    let e = echo("web", "v1");
    let g = gate_with(&config(&e), &[80], &["--buffer-budget-mb", "1"]);
    let addr = g.port(80);
    let body = "z".repeat(700 * 1024);
    // One slow request holds 700 KiB of the 1 MiB budget while its upstream waits.
    let held = {
        let body = body.clone();
        std::thread::spawn(move || request(addr, "POST", "/?delay=1500ms", &[], &body))
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !g
        .admin_get("/stats/prometheus")
        .contains("meshgate_request_buffer_bytes 716800")
    {
        assert!(Instant::now() < deadline, "the first body was never buffered");
        std::thread::sleep(Duration::from_millis(10));
    }
    let r = request(addr, "POST", "/", &[], &body);
    assert_eq!(r.status, 503);
    assert_eq!(r.header("x-envoy-overloaded"), Some("true"));
    assert_eq!(held.join().unwrap().status, 200);
    assert!(g
        .admin_get("/stats/prometheus")
        .contains("meshgate_request_buffer_bytes 0"));
    assert_eq!(
        request(addr, "POST", "/", &[], &body).status,
        200,
        "the budget came back"
    );
}

/// Polls the admin stats until `meshgate_downstream_cx_active` is `n`.
fn wait_active(g: &Gate, n: usize) {
    wait_stat(g, &format!("meshgate_downstream_cx_active {n}"));
}

/// Polls the admin stats until a line reads `line`.
fn wait_stat(g: &Gate, line: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !g.admin_get("/stats/prometheus").lines().any(|l| l == line) {
        assert!(Instant::now() < deadline, "never `{line}`");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn at_the_connection_limit_idle_connections_make_room_for_new_requests() {
    let e = echo("web", "v1");
    let g = gate_with(&config(&e), &[80], &["--max-connections", "4"]);
    let addr = g.port(80);
    // Four idle connections fill the limit (the admin's own connection is not counted).
    let mut first: Vec<TcpStream> = (1..=4)
        .map(|n| {
            let s = TcpStream::connect(addr).unwrap();
            wait_active(&g, n);
            s
        })
        .collect();
    // Three more idle ones, as an attacker holding connections would open, all at once: each
    // closes one of the first four, oldest first.
    let _more: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
    wait_stat(&g, "meshgate_downstream_cx_evicted_total 3");
    wait_active(&g, 4);
    // A real request still gets through, closing the last of the first four.
    assert_eq!(get(addr, "/", &[]).status, 200);
    for s in &mut first {
        read_until_closed(s, Duration::from_secs(2)).expect("closed to make room");
    }
    let stats = g.admin_get("/stats/prometheus");
    assert!(stats.contains("meshgate_downstream_cx_evicted_total 4"), "{stats}");
    assert!(stats.contains("meshgate_downstream_cx_limit 4"), "{stats}");
    assert!(stats.contains("meshgate_downstream_cx_overflow_total 0"), "{stats}");
}

/// A keep-alive HTTP/1.1 client: each request on the open connection, a new connection when the
/// last response said `Connection: close`. Counts what failed: refused connects and connections
/// that ended without a response.
struct SteadyClient {
    addr: SocketAddr,
    conn: Option<BufReader<TcpStream>>,
    ok: u64,
    refused: u64,
    reset: u64,
}

impl SteadyClient {
    fn send(&mut self) {
        if self.conn.is_none() {
            match TcpStream::connect(self.addr) {
                Ok(s) => self.conn = Some(BufReader::new(s)),
                Err(_) => {
                    self.refused += 1;
                    return;
                }
            }
        }
        let r = self.conn.as_mut().unwrap();
        let sent = r.get_mut().write_all(b"GET / HTTP/1.1\r\nHost: web\r\n\r\n");
        let mut line = String::new();
        if sent.is_err() || r.read_line(&mut line).map_or(true, |n| n == 0) {
            self.reset += 1;
            self.conn = None;
            return;
        }
        let (mut length, mut close) = (0usize, false);
        loop {
            let mut h = String::new();
            r.read_line(&mut h).unwrap();
            let h = h.trim_end().to_ascii_lowercase();
            if h.is_empty() {
                break;
            }
            if let Some(v) = h.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
            close |= h == "connection: close";
        }
        let mut body = vec![0u8; length];
        r.read_exact(&mut body).unwrap();
        assert!(line.contains(" 200 "), "{line}");
        self.ok += 1;
        if close {
            self.conn = None;
        }
    }
}

#[test]
fn sigterm_drains_a_steady_client_with_nothing_refused_or_reset() {
    let e = echo("web", "v1");
    let mut g = gate_with(&config(&e), &[80], &["--drain-time", "2s"]);
    let addr = g.port(80);
    let mut client = client_at(addr);
    for _ in 0..50 {
        client.send();
    }
    // An idle keep-alive connection of a second client, open across the SIGTERM.
    let mut other = client_at(addr);
    other.send();
    terminate(&g);
    let drain_started = Instant::now();
    // Through the first 1.5 s of the 2 s drain: a request every 5 ms.
    while drain_started.elapsed() < Duration::from_millis(1500) {
        client.send();
        std::thread::sleep(Duration::from_millis(5));
    }
    other.send();
    assert_eq!((client.refused, client.reset), (0, 0), "ok {}", client.ok);
    assert_eq!((other.refused, other.reset, other.ok), (0, 0, 2));
    // 50 before the SIGTERM, then requests kept being served through the drain (how many fit
    // in 1.5 s depends on the machine's load, so only a floor is asserted).
    assert!(client.ok > 70, "{}", client.ok);
    let status = g.child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(
        drain_started.elapsed() >= Duration::from_secs(2),
        "listeners stay open for the drain time"
    );
    assert!(TcpStream::connect(addr).is_err(), "no longer accepting");
}

fn client_at(addr: SocketAddr) -> SteadyClient {
    SteadyClient {
        addr,
        conn: None,
        ok: 0,
        refused: 0,
        reset: 0,
    }
}

#[test]
fn ready_turns_503_at_once_on_sigterm() {
    let e = echo("web", "v1");
    let g = gate_with(&config(&e), &[80], &["--drain-time", "3s"]);
    assert!(g.admin_get("/ready").contains("LIVE"));
    terminate(&g);
    let deadline = Instant::now() + Duration::from_secs(1);
    while !g.admin_get("/ready").contains("DRAINING") {
        assert!(Instant::now() < deadline, "still LIVE");
        std::thread::sleep(Duration::from_millis(10));
    }
    let r = get(g.port(80), "/", &[]);
    assert_eq!(r.status, 200, "still serving while draining");
}

/// One HTTP/2 frame as read off the wire: type, flags, stream, payload.
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

fn read_frame(s: &mut TcpStream) -> std::io::Result<Frame> {
    let mut head = [0u8; 9];
    s.read_exact(&mut head)?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload)?;
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    Ok(Frame {
        kind: head[3],
        flags: head[4],
        stream,
        payload,
    })
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = len.to_be_bytes()[1..].to_vec();
    f.extend([kind, flags]);
    f.extend(stream.to_be_bytes());
    f.extend(payload);
    f
}

/// An h2c connection (prior knowledge): the preface and an empty SETTINGS frame sent, the
/// server's first frames read for 200 ms.
fn h2c(addr: SocketAddr) -> (TcpStream, Vec<Frame>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    s.write_all(&frame(4, 0, 0, &[])).unwrap();
    s.write_all(&frame(4, 1, 0, &[])).unwrap(); // ACK of the server's SETTINGS
    s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut frames = Vec::new();
    while let Ok(f) = read_frame(&mut s) {
        frames.push(f);
    }
    (s, frames)
}

/// GET / for web.example.com on `stream`, as one HEADERS frame (HPACK: static-table entries and
/// one literal).
fn h2_get(stream: u32) -> Vec<u8> {
    let host = b"web.example.com";
    let mut block = vec![0x82, 0x86, 0x84, 0x01, host.len() as u8];
    block.extend(host);
    // END_STREAM | END_HEADERS
    frame(1, 0x5, stream, &block)
}

#[test]
fn http2_announces_the_stream_and_window_limits() {
    let e = echo("web", "v1");
    let g = gate_with(
        &config(&e),
        &[80],
        &["--max-concurrent-streams", "7", "--initial-stream-window-kb", "128"],
    );
    let (_s, frames) = h2c(g.port(80));
    let settings = frames
        .iter()
        .find(|f| f.kind == 4 && f.stream == 0 && !f.payload.is_empty())
        .expect("the server's SETTINGS");
    let values: std::collections::HashMap<u16, u32> = settings
        .payload
        .chunks(6)
        .map(|c| {
            (
                u16::from_be_bytes([c[0], c[1]]),
                u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
            )
        })
        .collect();
    assert_eq!(values.get(&3), Some(&7), "MAX_CONCURRENT_STREAMS: {values:?}");
    assert_eq!(values.get(&4), Some(&(128 * 1024)), "INITIAL_WINDOW_SIZE: {values:?}");
    // The connection window grows from HTTP/2's 65,535 to the default 1 MiB.
    let grown: u32 = frames
        .iter()
        .filter(|f| f.kind == 8 && f.stream == 0)
        .map(|f| u32::from_be_bytes([f.payload[0], f.payload[1], f.payload[2], f.payload[3]]))
        .sum();
    assert_eq!(65_535 + grown, 1 << 20);
}

#[test]
fn a_connection_closes_after_its_last_request() {
    let e = echo("web", "v1");
    let g = gate_with(&config(&e), &[80], &["--max-requests-per-connection", "2"]);
    let addr = g.port(80);
    // HTTP/1.1: the second response says Connection: close, and the connection ends.
    let mut s = TcpStream::connect(addr).unwrap();
    let get = b"GET / HTTP/1.1\r\nHost: web.example.com\r\n\r\n";
    s.write_all(get).unwrap();
    s.write_all(get).unwrap();
    let both = read_until_closed(&mut s, Duration::from_secs(3)).expect("closed after the second");
    let heads: Vec<&str> = both.split("HTTP/1.1 ").skip(1).collect();
    assert_eq!(heads.len(), 2, "{both}");
    assert!(heads.iter().all(|h| h.starts_with("200")), "{both}");
    assert!(!heads[0].to_ascii_lowercase().contains("connection: close"), "{both}");
    assert!(heads[1].to_ascii_lowercase().contains("connection: close"), "{both}");
    // HTTP/2: GOAWAY after the second stream, and both streams answered.
    let (mut s, _) = h2c(addr);
    s.write_all(&h2_get(1)).unwrap();
    s.write_all(&h2_get(3)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let (mut answered, mut goaway) = (Vec::new(), None);
    while let Ok(f) = read_frame(&mut s) {
        match f.kind {
            1 => answered.push(f.stream),
            7 => goaway = Some(f),
            // Graceful GOAWAY waits for the answer to its PING before naming the last stream.
            6 if f.flags & 1 == 0 => s.write_all(&frame(6, 1, 0, &f.payload)).unwrap(),
            _ => {}
        }
    }
    answered.sort_unstable();
    assert_eq!(answered, [1, 3]);
    let goaway = goaway.expect("GOAWAY");
    let last = u32::from_be_bytes([
        goaway.payload[0],
        goaway.payload[1],
        goaway.payload[2],
        goaway.payload[3],
    ]);
    assert_eq!(last & 0x7fff_ffff, 3, "the last stream processed");
    let one = TcpStream::connect(addr).and_then(|mut s| {
        s.write_all(get)?;
        let mut r = BufReader::new(s);
        let mut line = String::new();
        r.read_line(&mut line)?;
        Ok(line)
    });
    assert!(one.unwrap().starts_with("HTTP/1.1 200"), "a new connection is served");
}
