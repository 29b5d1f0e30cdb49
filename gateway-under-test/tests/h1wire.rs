//! meshgate's own downstream HTTP/1.1 path on the wire: keep-alive and pipelined requests,
//! request bodies, response framing, and the requests it hands to hyper mid-connection.

#![allow(clippy::expect_used, clippy::unwrap_used)] // Test code: a failure should panic.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::*;

/// An upstream that answers each request on a keep-alive connection with its method and body:
/// `content-length` framed, or chunked in two chunks when the path is `/chunked`.
fn body_echo() -> SocketAddr {
    counted_body_echo().0
}

/// `body_echo`, and how many requests it has read.
fn counted_body_echo() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { continue };
            let counter = counter.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match s.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
                    let (body, used) = loop {
                        if let Some(whole) = request_body(&head, &got[end + 4..]) {
                            break whole;
                        }
                        let n = s.read(&mut buf).unwrap();
                        assert!(n > 0);
                        got.extend_from_slice(&buf[..n]);
                    };
                    counter.fetch_add(1, Ordering::SeqCst);
                    let method = head.split(' ').next().unwrap().to_uppercase();
                    let answer = format!("{method} {}", String::from_utf8_lossy(&body));
                    let reply = if head.contains(" /many ") {
                        // Chunks of 1000 bytes: each its own small frame at the gateway.
                        let mut r = String::from("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n");
                        let answer = answer + &"m".repeat(150 * 1000);
                        for piece in answer.as_bytes().chunks(1000) {
                            r.push_str(&format!("{:x}\r\n{}\r\n", piece.len(), String::from_utf8_lossy(piece)));
                        }
                        r + "0\r\n\r\n"
                    } else if head.contains(" /chunked ") || head.contains(" /slow ") {
                        let (a, b) = answer.split_at(answer.len() / 2);
                        format!(
                            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
                            a.len(),
                            b.len()
                        )
                    } else {
                        format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{answer}", answer.len())
                    };
                    // `/slow`: the first chunk, then the rest a moment later.
                    let (first, rest) = match reply.find("\r\n\r\n").map(|h| h + 4) {
                        Some(h) if head.contains(" /slow ") => reply.split_at(reply[h..].find("\r\n").unwrap() + h + 2),
                        _ => (reply.as_str(), ""),
                    };
                    if s.write_all(first.as_bytes()).is_err() {
                        return;
                    }
                    if !rest.is_empty() {
                        std::thread::sleep(Duration::from_millis(300));
                        if s.write_all(rest.as_bytes()).is_err() {
                            return;
                        }
                    }
                    got.drain(..end + 4 + used);
                }
            });
        }
    });
    (addr, count)
}

/// A chunked body once all of it is in `rest`, and the bytes it took (no trailers).
fn chunked(rest: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut at = 0;
    let mut body = Vec::new();
    loop {
        let line = rest[at..].windows(2).position(|w| w == b"\r\n")?;
        let size = usize::from_str_radix(std::str::from_utf8(&rest[at..at + line]).unwrap(), 16).unwrap();
        at += line + 2;
        if rest.len() < at + size + 2 {
            return None;
        }
        body.extend_from_slice(&rest[at..at + size]);
        at += size + 2;
        if size == 0 {
            return Some((body, at));
        }
    }
}

/// A request's body once all of it is in `rest` (what follows its head), and the bytes it took:
/// `content-length` framed or chunked.
fn request_body(head: &str, rest: &[u8]) -> Option<(Vec<u8>, usize)> {
    if head.contains("transfer-encoding: chunked") {
        return chunked(rest);
    }
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    (rest.len() >= length).then(|| (rest[..length].to_vec(), length))
}

fn gateway_to(upstream: SocketAddr) -> Gate {
    gateway_with(upstream, &[])
}

/// `gateway_to`, with more command-line arguments.
fn gateway_with(upstream: SocketAddr, extra: &[&str]) -> Gate {
    let yaml = format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: istio-system}}\nspec:\n  \
         selector: {{istio: ingressgateway}}\n  servers:\n  - port: {{number: 80, name: http, protocol: HTTP}}\n    \
         hosts: ['*']\n---\n\
         apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: upstream, namespace: default}}\nspec:\n  \
         hosts: [up.example.com]\n  location: MESH_EXTERNAL\n  resolution: STATIC\n  \
         ports: [{{number: 80, name: http, protocol: HTTP}}]\n  endpoints: [{{address: 127.0.0.1, ports: {{http: {}}}}}]\n---\n\
         apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: upstream, namespace: default}}\nspec:\n  \
         hosts: ['*']\n  gateways: [istio-system/gw]\n  http:\n  \
         - match: [{{uri: {{exact: /local}}}}]\n    directResponse: {{status: 204}}\n  \
         - match: [{{uri: {{exact: /not-modified}}}}]\n    directResponse: {{status: 304, body: {{string: stale}}}}\n  \
         - match: [{{uri: {{exact: /large}}}}]\n    directResponse: {{status: 200, body: {{string: {large}}}}}\n  \
         - match: [{{uri: {{exact: /delayed}}}}]\n    fault: {{delay: {{fixedDelay: 1s, percentage: {{value: 100}}}}}}\n    \
         route: [{{destination: {{host: up.example.com}}}}]\n  \
         - route: [{{destination: {{host: up.example.com}}}}]\n",
        upstream.port(),
        large = "l".repeat(LARGE_BODY),
    );
    gate_with(&yaml, &[80], extra)
}

/// The local `/large` body: one frame larger than the gateway gathers behind a head.
const LARGE_BODY: usize = 40 * 1024;

/// How many connections the gateway has handed to hyper (`meshgate_downstream_cx_hyper`).
fn handed_to_hyper(g: &Gate) -> u64 {
    let stats = g.admin_get("/stats/prometheus");
    let line = stats
        .lines()
        .find_map(|l| l.strip_prefix("meshgate_downstream_cx_hyper_total "));
    line.expect("the counter").trim().parse().unwrap()
}

/// Reads whole responses from `s` until `n` have come (each framed by content-length or
/// chunked; a response to HEAD has no body) and returns them with their bodies decoded.
fn responses(s: &mut TcpStream, n: usize, heads: &[bool]) -> Vec<(String, String)> {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while out.len() < n {
        if let Some((head, body, used)) = one_response(&got, heads.get(out.len()).copied().unwrap_or(false)) {
            out.push((head, body));
            got.drain(..used);
            continue;
        }
        let k = s.read(&mut buf).unwrap();
        assert!(
            k > 0,
            "closed after {} responses; got {:?}",
            out.len(),
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..k]);
    }
    assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    out
}

fn one_response(got: &[u8], head_only: bool) -> Option<(String, String, usize)> {
    let end = got.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&got[..end]).into_owned();
    let lower = head.to_ascii_lowercase();
    if head_only || head.starts_with("HTTP/1.1 204") {
        return Some((head, String::new(), end));
    }
    if lower.contains("transfer-encoding: chunked") {
        let (body, used) = chunked(&got[end..])?;
        return Some((head, String::from_utf8(body).unwrap(), end + used));
    }
    let length: usize = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse().unwrap())
        .expect("content-length");
    (got.len() >= end + length).then(|| {
        let body = String::from_utf8_lossy(&got[end..end + length]).into_owned();
        (head, body, end + length)
    })
}

#[test]
fn pipelined_requests_with_and_without_bodies_are_answered_in_order() {
    let g = gateway_to(body_echo());
    let mut s = TcpStream::connect(g.port(80)).unwrap();
    s.write_all(
        b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n\
          POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
          GET /local HTTP/1.1\r\nHost: x\r\n\r\n\
          PUT /chunked HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\nabcdef",
    )
    .unwrap();
    let got = responses(&mut s, 4, &[]);
    let bodies: Vec<&str> = got.iter().map(|(_, b)| b.as_str()).collect();
    assert_eq!(bodies, ["GET ", "POST hello", "", "PUT abcdef"]);
    assert_eq!(handed_to_hyper(&g), 0);
    assert!(got[0].0.starts_with("HTTP/1.1 200 OK\r\n"), "{}", got[0].0);
    assert!(got[0].0.to_ascii_lowercase().contains("\r\ndate: "), "{}", got[0].0);
    assert!(got[2].0.starts_with("HTTP/1.1 204 No Content\r\n"), "{}", got[2].0);
    assert!(
        !got[2].0.to_ascii_lowercase().contains("content-length"),
        "{}",
        got[2].0
    );
    assert!(got[3].0.contains("transfer-encoding: chunked"), "{}", got[3].0);
}

#[test]
fn a_keep_alive_connection_carries_many_requests_and_closes_when_asked() {
    let g = gateway_to(body_echo());
    let mut s = TcpStream::connect(g.port(80)).unwrap();
    for i in 0..50 {
        let body = format!("n{i}");
        let req = format!(
            "POST /n HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).unwrap();
        let got = responses(&mut s, 1, &[]);
        assert_eq!(got[0].1, format!("POST {body}"));
    }
    // A head that comes in pieces is read whole by the gateway's own path.
    s.write_all(b"GET /split HTTP/1.1\r\nHo").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    s.write_all(b"st: x\r\n\r\n").unwrap();
    assert_eq!(responses(&mut s, 1, &[])[0].1, "GET ");
    assert_eq!(handed_to_hyper(&g), 0);
    s.write_all(b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let rest = read_until_closed(&mut s, Duration::from_secs(5)).unwrap();
    assert!(
        rest.starts_with("HTTP/1.1 200 OK\r\n") && rest.ends_with("GET "),
        "{rest}"
    );
}

#[test]
fn a_body_that_arrives_after_its_head_is_served_by_hyper_for_the_rest_of_the_connection() {
    let g = gateway_to(body_echo());
    let mut s = TcpStream::connect(g.port(80)).unwrap();
    s.write_all(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(responses(&mut s, 1, &[])[0].1, "GET ");
    s.write_all(b"POST /late HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nab")
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    s.write_all(b"cd").unwrap();
    assert_eq!(responses(&mut s, 1, &[])[0].1, "POST abcd");
    assert_eq!(handed_to_hyper(&g), 1);
    // HEAD, chunked and Expect go by hyper too, on the same connection.
    s.write_all(
        b"HEAD /h HTTP/1.1\r\nHost: x\r\n\r\n\
          POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nxyz\r\n0\r\n\r\n\
          GET /again HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .unwrap();
    let got = responses(&mut s, 3, &[true, false, false]);
    assert!(got[0].0.starts_with("HTTP/1.1 200 OK\r\n"), "{}", got[0].0);
    assert_eq!((got[1].1.as_str(), got[2].1.as_str()), ("POST xyz", "GET "));
}

#[test]
fn a_body_larger_than_the_read_buffer_is_carried_whole() {
    let g = gateway_to(body_echo());
    let mut s = TcpStream::connect(g.port(80)).unwrap();
    let body = "z".repeat(300 * 1024);
    let req = format!(
        "POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let got = responses(&mut s, 1, &[]);
    assert_eq!(got[0].1.len(), body.len() + 5);
}

#[test]
fn a_head_hyper_refuses_is_answered_by_hyper() {
    let g = gateway_to(body_echo());
    for (req, status) in [
        (
            &b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx"[..],
            400,
        ),
        (b"GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        // httparse takes this target and `http` does not: handed over after the parse.
        (b"GET http://[::1/x HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ] {
        let mut s = TcpStream::connect(g.port(80)).unwrap();
        s.write_all(req).unwrap();
        let got = read_until_closed(&mut s, Duration::from_secs(5)).unwrap();
        assert_eq!(status_of(&got), Some(status), "{got}");
    }
    assert_eq!(handed_to_hyper(&g), 3);
}

#[test]
fn many_headers_over_the_gateways_limit_get_431() {
    let g = gateway_to(body_echo());
    let mut s = TcpStream::connect(g.port(80)).unwrap();
    let mut req = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
    for i in 0..150 {
        req.push_str(&format!("x-h{i}: v\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let got = read_until_closed(&mut s, Duration::from_secs(5)).unwrap();
    assert_eq!(status_of(&got), Some(431), "{got}");
}

#[test]
fn a_head_as_large_as_the_limit_is_refused_with_431_before_it_ends() {
    let g = gateway_to(body_echo());
    let mut s = TcpStream::connect(g.port(80)).unwrap();
    // Envoy's default limit is 60 KiB; this head is that long exactly and never ends.
    let start = "GET / HTTP/1.1\r\nHost: x\r\nx-big: ";
    let head = format!("{start}{}", "a".repeat(60 * 1024 - start.len()));
    let _ = s.write_all(head.as_bytes());
    let got = read_until_closed(&mut s, Duration::from_secs(5)).unwrap();
    assert_eq!(status_of(&got), Some(431), "{got}");
    assert_eq!(handed_to_hyper(&g), 1);
}

#[test]
fn a_request_whose_client_leaves_is_dropped_before_it_goes_upstream() {
    let (upstream, count) = counted_body_echo();
    let g = gateway_to(upstream);
    let mut s = TcpStream::connect(g.port(80)).unwrap();
    s.write_all(b"GET /delayed HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    drop(s);
    // The fault delay ends at 1 s: a request still running would reach the upstream then.
    std::thread::sleep(Duration::from_millis(1800));
    assert_eq!(count.load(Ordering::SeqCst), 0);
    // A client that stays gets its response after the delay.
    let mut s = TcpStream::connect(g.port(80)).unwrap();
    s.write_all(b"GET /delayed HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(responses(&mut s, 1, &[])[0].1, "GET ");
    assert_eq!(count.load(Ordering::SeqCst), 1);
}

#[test]
fn a_bodiless_status_with_a_body_keeps_the_connection_and_a_large_frame_goes_whole() {
    let g = gateway_to(body_echo());
    let mut s = TcpStream::connect(g.port(80)).unwrap();
    s.write_all(
        b"GET /not-modified HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /large HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /after HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .unwrap();
    let got = responses(&mut s, 3, &[true, false, false]);
    assert!(got[0].0.starts_with("HTTP/1.1 304 Not Modified\r\n"), "{}", got[0].0);
    assert!(
        !got[0].0.to_ascii_lowercase().contains("content-length"),
        "{}",
        got[0].0
    );
    assert_eq!(got[1].1, "l".repeat(LARGE_BODY));
    assert_eq!(got[2].1, "GET ");
}

#[test]
fn the_last_request_a_connection_may_carry_closes_it() {
    let g = gateway_with(body_echo(), &["--max-requests-per-connection", "2"]);
    let mut s = TcpStream::connect(g.port(80)).unwrap();
    s.write_all(
        b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /2 HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /3 HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .unwrap();
    let rest = read_until_closed(&mut s, Duration::from_secs(5)).unwrap();
    assert_eq!(rest.matches("HTTP/1.1 200 OK\r\n").count(), 2, "{rest}");
    assert!(rest.contains("\r\nconnection: close\r\n"), "{rest}");
}

#[test]
fn a_body_that_streams_in_pieces_is_written_as_it_comes_on_a_kept_connection() {
    let g = gateway_to(body_echo());
    let mut s = TcpStream::connect(g.port(80)).unwrap();
    s.write_all(b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\n\r\nstreamed")
        .unwrap();
    let got = responses(&mut s, 1, &[]);
    assert!(got[0].0.contains("transfer-encoding: chunked"), "{}", got[0].0);
    assert_eq!(got[0].1, "POST streamed");
    s.write_all(b"GET /again HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(responses(&mut s, 1, &[])[0].1, "GET ");
    // 150 small frames: gathered, and written each time 64 KiB are.
    s.write_all(b"GET /many HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(
        responses(&mut s, 1, &[])[0].1,
        format!("GET {}", "m".repeat(150 * 1000))
    );
    s.write_all(b"GET /last HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(responses(&mut s, 1, &[])[0].1, "GET ");
}
