use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::replay::RequestBody;

/// A connection to a loopback peer that, for the request it reads, writes `answer` in the given
/// pieces (a pause between each, so each is its own read), then keeps the connection open, or
/// closes it when `close`. Returns the connection and what the peer read.
async fn answered(answer: &[&[u8]], close: bool) -> (Conn, tokio::task::JoinHandle<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let pieces: Vec<Vec<u8>> = answer.iter().map(|p| p.to_vec()).collect();
    let peer = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut got = vec![0u8; 64 * 1024];
        let n = stream.read(&mut got).await.unwrap();
        got.truncate(n);
        for piece in pieces {
            stream.write_all(&piece).await.unwrap();
            stream.flush().await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if !close {
            // Held open until the test ends.
            std::mem::forget(stream);
        }
        got
    });
    let io = TcpStream::connect(address).await.unwrap();
    (Conn::new(io, crate::telemetry::Connections::default().opened()), peer)
}

fn outgoing(method: Method, body: Option<&'static str>) -> Outgoing {
    let body = body.map_or_else(RequestBody::empty, |b| {
        RequestBody::whole(
            Bytes::from_static(b.as_bytes()),
            crate::limits::BufferBudget::new(1 << 20).reserve(),
        )
    });
    let mut req = http::Request::new(body.attempt());
    *req.method_mut() = method;
    *req.uri_mut() = "/p?q=1".parse().unwrap();
    req.headers_mut().insert("host", HeaderValue::from_static("svc"));
    Outgoing::whole(&req).unwrap()
}

/// The response to a GET, and its body read whole (or the error reading it).
async fn get(answer: &[&[u8]]) -> (Head, Result<Bytes, String>, Conn) {
    let (mut conn, _) = answered(answer, false).await;
    let mut head = conn.exchange(&outgoing(Method::GET, None)).await.unwrap();
    let body = read_body(&mut head.reader, &mut conn).await;
    (head, body, conn)
}

async fn read_body(reader: &mut Reader, conn: &mut Conn) -> Result<Bytes, String> {
    let mut body = Vec::new();
    while let Some(frame) = std::future::poll_fn(|cx| reader.poll_frame(conn, cx)).await {
        match frame.map_err(|e| e.to_string())?.into_data() {
            Ok(data) => body.extend_from_slice(&data),
            Err(_) => return Err("trailers".into()),
        }
    }
    Ok(body.into())
}

#[tokio::test]
async fn a_head_and_body_in_pieces_are_read_whole_and_the_connection_stays_usable() {
    let (head, body, conn) = get(&[
        b"HTTP/1.1 201 Created\r\nx-a: 1\r\nx-a: 2\r\nconte",
        b"nt-length: 5\r\n\r\nhe",
        b"llo",
    ])
    .await;
    assert_eq!(head.response.status(), 201);
    assert_eq!(head.response.version(), Version::HTTP_11);
    let all: Vec<_> = head.response.headers().get_all("x-a").iter().collect();
    assert_eq!(all, ["1", "2"], "repeated headers are kept in order");
    assert_eq!(body.unwrap(), "hello");
    assert!(head.keep_alive && head.reader.ended() && conn.drained() && conn.usable());
}

#[tokio::test]
async fn informational_heads_are_skipped() {
    let (head, body, _) = get(&[
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
    ])
    .await;
    assert_eq!(head.response.status(), 200);
    assert!(!head.response.headers().contains_key("link"));
    assert_eq!(body.unwrap(), "ok");
}

#[tokio::test]
async fn a_chunked_body_is_decoded_with_its_extensions_and_trailers() {
    let (mut conn, _) = answered(
        &[
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n3;ext=1\r\nabc\r\n",
            b"a\r\n0123456789\r",
            b"\n0\r\ngrpc-sta",
            b"tus: 0\r\n\r\n",
        ],
        false,
    )
    .await;
    let mut head = conn.exchange(&outgoing(Method::GET, None)).await.unwrap();
    assert_eq!(head.reader.size_hint().exact(), None);
    let mut data = Vec::new();
    let mut trailers = None;
    while let Some(frame) = std::future::poll_fn(|cx| head.reader.poll_frame(&mut conn, cx)).await {
        match frame.unwrap().into_data() {
            Ok(d) => data.extend_from_slice(&d),
            Err(f) => trailers = f.into_trailers().ok(),
        }
    }
    assert_eq!(data, b"abc0123456789");
    assert_eq!(trailers.unwrap()["grpc-status"], "0");
    assert!(head.reader.ended() && conn.drained() && head.keep_alive);
}

#[tokio::test]
async fn a_chunked_body_without_trailers_ends_without_a_trailers_frame() {
    let (head, body, conn) = get(&[b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"]).await;
    assert_eq!(body.unwrap(), "ok");
    assert!(head.reader.ended() && conn.drained());
    assert_eq!(head.reader.size_hint().exact(), Some(0), "nothing is left once ended");
}

#[tokio::test]
async fn bytes_past_the_response_keep_its_connection_from_reuse() {
    let (head, body, conn) = get(&[b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokEXTRA"]).await;
    assert_eq!(body.unwrap(), "ok");
    assert!(head.reader.ended() && head.keep_alive);
    assert!(!conn.drained(), "EXTRA is no response to anything sent");
}

#[tokio::test]
async fn a_head_as_large_as_the_limit_is_read() {
    // hyper's limit, written out: the constant itself is what is checked.
    assert_eq!(MAX_HEAD, 417_792);
    let filler = "v".repeat(417_792 - 100);
    let answer = format!("HTTP/1.1 200 OK\r\nx: {filler}\r\ncontent-length: 0\r\n\r\n");
    let (head, body, _) = get(&[answer.as_bytes()]).await;
    assert_eq!(head.response.headers()["x"].len(), filler.len());
    assert_eq!(body.unwrap(), "");
}

#[tokio::test]
async fn bad_chunks_fail_the_body() {
    for bad in [
        &b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n"[..],
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nokXX0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\nbad trailer\r\n\r\n",
    ] {
        let (_, body, _) = get(&[bad]).await;
        assert!(
            body.unwrap_err().contains("invalid"),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[tokio::test]
async fn bodiless_responses_end_at_their_head() {
    for (method, answer) in [
        (Method::HEAD, &b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"[..]),
        (Method::GET, b"HTTP/1.1 204 No Content\r\n\r\n"),
        (Method::GET, b"HTTP/1.1 304 Not Modified\r\ncontent-length: 5\r\n\r\n"),
        (Method::GET, b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"),
    ] {
        let (mut conn, _) = answered(&[answer], false).await;
        let head = conn.exchange(&outgoing(method, None)).await.unwrap();
        assert!(head.reader.ended(), "{}", String::from_utf8_lossy(answer));
        assert_eq!(head.reader.size_hint().exact(), Some(0));
        assert!(head.keep_alive && conn.drained());
    }
}

#[tokio::test]
async fn a_body_without_length_runs_to_the_close_and_ends_the_connection() {
    for answer in [
        &b"HTTP/1.1 200 OK\r\n\r\nuntil the end"[..],
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\nuntil the end",
    ] {
        let (mut conn, _) = answered(&[answer], true).await;
        let mut head = conn.exchange(&outgoing(Method::GET, None)).await.unwrap();
        assert!(!head.keep_alive);
        assert_eq!(read_body(&mut head.reader, &mut conn).await.unwrap(), "until the end");
        assert!(head.reader.ended());
    }
}

#[tokio::test]
async fn a_body_cut_short_is_an_error() {
    let (mut conn, _) = answered(&[b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort"], true).await;
    let mut head = conn.exchange(&outgoing(Method::GET, None)).await.unwrap();
    assert_eq!(head.reader.size_hint().exact(), Some(10));
    let err = read_body(&mut head.reader, &mut conn).await.unwrap_err();
    assert_eq!(err, CLOSED_EARLY);
}

#[tokio::test]
async fn connection_headers_and_versions_decide_keep_alive() {
    for (answer, keep) in [
        (
            &b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"[..],
            false,
        ),
        (
            b"HTTP/1.1 200 OK\r\nconnection: x, Close\r\nconnection: keep-alive\r\ncontent-length: 0\r\n\r\n",
            false,
        ),
        (b"HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n", false),
        (
            b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 0\r\n\r\n",
            true,
        ),
        (b"HTTP/1.1 101 Switching Protocols\r\n\r\n", false),
    ] {
        let (mut conn, _) = answered(&[answer], false).await;
        let head = conn.exchange(&outgoing(Method::GET, None)).await.unwrap();
        assert_eq!(head.keep_alive, keep, "{}", String::from_utf8_lossy(answer));
    }
}

#[tokio::test]
async fn malformed_heads_are_errors() {
    let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: v\r\n")).collect();
    let many = format!("HTTP/1.1 200 OK\r\n{many}\r\n");
    let huge = format!("HTTP/1.1 200 OK\r\nx: {}\r\n\r\n", "v".repeat(MAX_HEAD));
    for (answer, why) in [
        (
            &b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n"[..],
            "bad Content-Length",
        ),
        (b"HTTP/1.1 200 OK\r\ncontent-length: +1\r\n\r\n", "bad Content-Length"),
        (
            b"HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
            "Transfer-Encoding",
        ),
        (b"HTTP/1.1 2000 OK\r\n\r\n", "invalid HTTP response"),
        (b"SMTP ready\r\n\r\n", "invalid HTTP response"),
        (many.as_bytes(), "invalid HTTP response"),
        (huge.as_bytes(), "too large"),
    ] {
        let (mut conn, _) = answered(&[answer], false).await;
        match conn.exchange(&outgoing(Method::GET, None)).await {
            Err(Failed::Broken(e)) => assert!(e.contains(why), "{e}"),
            other => panic!("{why}: {:?}", other.map(|h| h.response.status())),
        }
    }
}

#[tokio::test]
async fn agreeing_content_lengths_are_one_length() {
    let (_, body, _) = get(&[b"HTTP/1.1 200 OK\r\ncontent-length: 2, 2\r\ncontent-length: 2\r\n\r\nok"]).await;
    assert_eq!(body.unwrap(), "ok");
}

#[tokio::test]
async fn a_closed_or_chattering_idle_connection_is_not_usable() {
    let (mut conn, peer) = answered(&[b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"], true).await;
    conn.exchange(&outgoing(Method::GET, None)).await.unwrap();
    peer.await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!conn.usable(), "closed by the peer");
    let (mut conn, _) = answered(&[b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", b"stray"], false).await;
    conn.exchange(&outgoing(Method::GET, None)).await.unwrap();
    assert!(conn.usable(), "nothing arrived yet");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!conn.usable(), "bytes no request asked for");
}

#[tokio::test]
async fn a_request_goes_out_as_hyper_writes_it() {
    let (mut conn, peer) = answered(&[b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"], false).await;
    conn.exchange(&outgoing(Method::POST, Some("abc"))).await.unwrap();
    assert_eq!(
        String::from_utf8(peer.await.unwrap()).unwrap(),
        "POST /p?q=1 HTTP/1.1\r\nhost: svc\r\ncontent-length: 3\r\n\r\nabc"
    );
    let (mut conn, peer) = answered(&[b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"], false).await;
    conn.exchange(&outgoing(Method::GET, None)).await.unwrap();
    assert_eq!(
        String::from_utf8(peer.await.unwrap()).unwrap(),
        "GET /p?q=1 HTTP/1.1\r\nhost: svc\r\n\r\n"
    );
}

#[tokio::test]
async fn a_large_body_follows_its_head() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let peer = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        while !got.ends_with(b"z") {
            let n = stream.read(&mut buf).await.unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .await
            .unwrap();
        std::mem::forget(stream);
        got
    });
    let mut conn = Conn::new(
        TcpStream::connect(address).await.unwrap(),
        crate::telemetry::Connections::default().opened(),
    );
    let small: &'static str = "s".repeat(8000).leak();
    assert!(
        outgoing(Method::PUT, Some(small)).body.is_none(),
        "8,000 bytes go in the head's write"
    );
    let mut big = "y".repeat(9000);
    big.push('z');
    let big: &'static str = big.leak();
    let out = outgoing(Method::PUT, Some(big));
    assert!(out.body.is_some(), "9,001 bytes are not copied behind the head");
    conn.exchange(&out).await.unwrap();
    let got = peer.await.unwrap();
    let head = format!(
        "PUT /p?q=1 HTTP/1.1\r\nhost: svc\r\ncontent-length: {}\r\n\r\n",
        big.len()
    );
    assert_eq!(&got[..head.len()], head.as_bytes());
    assert_eq!(got.len(), head.len() + big.len());
}

#[tokio::test]
async fn a_write_that_sends_nothing_is_unsent() {
    let (mut conn, _) = answered(&[], false).await;
    conn.close_write().await;
    match conn.exchange(&outgoing(Method::GET, None)).await {
        Err(e @ Failed::Unsent(_)) => assert!(e.to_string().starts_with("connection error: "), "{e}"),
        other => panic!("{other:?}"),
    }
    let (mut conn, _) = answered(&[b"HTTP/1.1 200 OK\r\ncontent-length: 1, 2\r\n\r\n"], false).await;
    match conn.exchange(&outgoing(Method::GET, None)).await {
        Err(e @ Failed::Broken(_)) => assert_eq!(e.to_string(), "invalid HTTP response: bad Content-Length"),
        other => panic!("{other:?}"),
    }
}

fn request(method: Method, body: RequestBody, headers: &[(&'static str, &'static str)]) -> Option<Outgoing> {
    let mut req = http::Request::new(body.attempt());
    *req.method_mut() = method;
    *req.uri_mut() = "/".parse().unwrap();
    for (n, v) in headers {
        req.headers_mut().append(*n, HeaderValue::from_static(v));
    }
    Outgoing::whole(&req)
}

fn whole(b: &'static str) -> RequestBody {
    RequestBody::whole(
        Bytes::from_static(b.as_bytes()),
        crate::limits::BufferBudget::new(1 << 20).reserve(),
    )
}

#[test]
fn only_whole_plain_requests_take_this_path() {
    let text = |o: Option<Outgoing>| o.map(|o| String::from_utf8(o.head).unwrap());
    assert_eq!(
        text(request(Method::POST, whole("ab"), &[("content-length", "2")])).as_deref(),
        Some("POST / HTTP/1.1\r\ncontent-length: 2\r\n\r\nab"),
        "a true Content-Length is kept, not doubled"
    );
    assert_eq!(
        text(request(Method::POST, whole(""), &[])).as_deref(),
        Some("POST / HTTP/1.1\r\n\r\n"),
        "an empty body is no body, as hyper sends it"
    );
    assert_eq!(
        text(request(Method::GET, RequestBody::empty(), &[("content-length", "0")])).as_deref(),
        Some("GET / HTTP/1.1\r\ncontent-length: 0\r\n\r\n")
    );
    for (method, body, headers) in [
        (Method::POST, whole("ab"), &[("content-length", "3")][..]),
        (Method::POST, whole("ab"), &[("content-length", "x")]),
        (Method::GET, RequestBody::empty(), &[("content-length", "1")]),
        (Method::GET, RequestBody::empty(), &[("transfer-encoding", "chunked")]),
        (
            Method::GET,
            RequestBody::empty(),
            &[("connection", "upgrade"), ("upgrade", "websocket")],
        ),
        (Method::CONNECT, RequestBody::empty(), &[]),
    ] {
        assert!(request(method, body, headers).is_none(), "{headers:?}");
    }
    let limits = <crate::Args as clap::Parser>::try_parse_from(["meshgate", "-c", "."])
        .unwrap()
        .limits;
    let streaming = RequestBody::streaming(
        http_body_util::Full::new(Bytes::from_static(b"x")),
        &crate::limits::BodyLimits::new(&limits),
    );
    assert!(
        request(Method::POST, streaming, &[]).is_none(),
        "a body still arriving goes by hyper"
    );
    let largest: &'static str = "b".repeat(MAX_BODY).leak();
    assert!(request(Method::POST, whole(largest), &[]).is_some());
    let larger: &'static str = "b".repeat(MAX_BODY + 1).leak();
    assert!(
        request(Method::POST, whole(larger), &[]).is_none(),
        "too large to write before reading"
    );
    let mut absolute = http::Request::new(RequestBody::empty().attempt());
    *absolute.uri_mut() = "http://svc/".parse().unwrap();
    assert!(Outgoing::whole(&absolute).is_none());
}

#[tokio::test]
async fn a_chunk_size_line_or_trailer_section_that_never_ends_stops_at_the_limit() {
    // Exactly the limit of bytes, never completed: the reader gives up at once instead of
    // buffering more (or waiting for more).
    let size_line = format!("1;{}", "e".repeat(MAX_HEAD - 2));
    let trailers = format!("0\r\nx: {}", "t".repeat(MAX_HEAD - 3));
    for (body, why) in [
        (size_line, "invalid chunk size line"),
        (trailers, "invalid trailer section"),
    ] {
        assert_eq!(body.len(), if why.contains("size") { MAX_HEAD } else { MAX_HEAD + 3 });
        let head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
        let (mut conn, _) = answered(&[head, body.as_bytes()], false).await;
        let mut head = conn.exchange(&outgoing(Method::GET, None)).await.unwrap();
        let read = tokio::time::timeout(Duration::from_secs(10), read_body(&mut head.reader, &mut conn));
        assert_eq!(read.await.expect("an answer, not a wait").unwrap_err(), why);
    }
}

#[tokio::test]
async fn a_parked_connection_holds_no_buffer() {
    let (head, body, mut conn) = get(&[b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"]).await;
    assert_eq!(body.unwrap(), "ok");
    assert!(head.keep_alive && conn.drained());
    assert!(conn.buf.capacity() > 0, "the read's room is still there");
    conn.park();
    assert_eq!(conn.buf.capacity(), 0);
}

/// The head `forwarded` writes, as text (None: hyper's path takes the request).
fn forwarded(
    path: &str,
    authority: &str,
    headers: &[(&'static str, &'static str)],
    body: RequestBody,
) -> Option<String> {
    let mut h = HeaderMap::new();
    for (n, v) in headers {
        h.append(*n, HeaderValue::from_static(v));
    }
    Outgoing::forwarded(&Method::POST, path, authority, &h, &body.attempt()).map(|o| String::from_utf8(o.head).unwrap())
}

#[test]
fn a_forwarded_request_carries_its_authority_as_host_first_and_no_hop_by_hop_header() {
    let hop_by_hop = [
        ("connection", "keep-alive"),
        ("keep-alive", "timeout=5"),
        ("proxy-connection", "keep-alive"),
        ("transfer-encoding", "chunked"),
        ("upgrade", "h2c"),
        ("host", "client.example"),
    ];
    let mut headers = vec![("x-a", "1")];
    headers.extend(hop_by_hop);
    headers.push(("x-b", "2"));
    assert_eq!(
        forwarded("/p?q=1", "svc:8080", &headers, whole("ab")).as_deref(),
        Some("POST /p?q=1 HTTP/1.1\r\nhost: svc:8080\r\nx-a: 1\r\nx-b: 2\r\ncontent-length: 2\r\n\r\nab")
    );
    assert_eq!(
        forwarded("/", "svc", &[("content-length", "0")], RequestBody::empty()).as_deref(),
        Some("POST / HTTP/1.1\r\nhost: svc\r\ncontent-length: 0\r\n\r\n"),
        "the Content-Length rules are the ones of `whole`"
    );
    assert_eq!(
        forwarded("/", "svc", &[("content-length", "1")], RequestBody::empty()),
        None
    );
}

#[test]
fn a_path_or_authority_that_needs_parsing_goes_by_hyper() {
    let sent = |path: &str, authority: &str| forwarded(path, authority, &[], RequestBody::empty()).is_some();
    assert!(sent("/!~\"{}|^?a=b", "svc"), "printable ASCII but the four");
    for path in [
        "",
        "*",
        "p",
        "http://svc/",
        "/a b",
        "/a#f",
        "/<",
        "/>",
        "/`",
        "/\x7f",
        "/\u{e9}",
    ] {
        assert!(!sent(path, "svc"), "{path:?}");
    }
    let longest = format!("/{}", "a".repeat(usize::from(u16::MAX) - 2));
    assert!(sent(&longest, "svc"), "http's longest URI");
    assert!(!sent(&format!("{longest}a"), "svc"));
    assert!(sent("/", "a b\tc"), "space and tab are in a field value");
    for authority in ["a\x1fb", "a\x7fb", "a\r\nb"] {
        assert!(!sent("/", authority), "{authority:?}");
    }
}

#[test]
fn a_content_length_is_digits_only_and_every_value_agrees() {
    let length = |values: &[&'static str]| {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(http::header::CONTENT_LENGTH, HeaderValue::from_static(v));
        }
        match content_length(&h) {
            Length::None => None,
            Length::Is(n) => Some(Some(n)),
            Length::Invalid => Some(None),
        }
    };
    assert_eq!(length(&[]), None);
    assert_eq!(length(&["0"]), Some(Some(0)));
    assert_eq!(length(&["907"]), Some(Some(907)));
    assert_eq!(length(&[" 7 , 7", "7\t"]), Some(Some(7)));
    assert_eq!(length(&["18446744073709551615"]), Some(Some(u64::MAX)));
    for bad in [
        &["18446744073709551616"][..],
        &["+5"],
        &["-5"],
        &[""],
        &["5,"],
        &["1a"],
        &["a1"],
        &["5 5"],
        &["2, 3"],
        &["2", "3"],
    ] {
        assert_eq!(length(bad), Some(None), "{bad:?}");
    }
    let mut h = HeaderMap::new();
    h.insert(http::header::CONTENT_LENGTH, HeaderValue::from_bytes(b"5\xff").unwrap());
    assert!(matches!(content_length(&h), Length::Invalid), "not text");
}
