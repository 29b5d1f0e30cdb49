use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body_util::BodyExt;

use super::codec::{self, BodyLength, Framing, Head, Parsed};

fn whole(bytes: &[u8]) -> codec::Layout {
    match codec::parse(bytes) {
        Parsed::Whole(layout) => layout,
        other => panic!("{other:?}"),
    }
}

fn handed_off(bytes: &[u8]) -> bool {
    matches!(codec::parse(bytes), Parsed::Handoff)
}

#[tokio::test]
async fn a_head_becomes_a_request_whose_values_share_the_buffer() {
    let bytes = b"POST /p?q=1 HTTP/1.1\r\nHost: svc\r\nX-A: 1\r\nx-a: 2\r\nContent-Length: 3\r\n\r\nabcGET";
    let layout = whole(bytes);
    assert_eq!(
        (layout.head_len, layout.body_len, layout.close),
        (bytes.len() - 6, 3, false)
    );
    let head = Bytes::copy_from_slice(&bytes[..layout.head_len]);
    let body = Bytes::copy_from_slice(&bytes[layout.head_len..layout.head_len + 3]);
    let req = codec::request(&head, body, layout).unwrap();
    assert_eq!(req.method(), http::Method::POST);
    assert_eq!(req.uri(), "/p?q=1");
    assert_eq!(req.version(), http::Version::HTTP_11);
    assert_eq!(req.headers()["host"], "svc");
    let values: Vec<_> = req.headers().get_all("x-a").iter().collect();
    assert_eq!(values, ["1", "2"]);
    assert_eq!(req.headers()["content-length"], "3");
    assert_eq!(req.headers().len(), 4);
    assert_eq!(req.into_body().collect().await.unwrap().to_bytes(), "abc");
}

#[test]
fn an_absolute_form_target_keeps_its_authority() {
    let bytes = b"GET http://svc:8080/x HTTP/1.1\r\n\r\n";
    let layout = whole(bytes);
    let req = codec::request(&Bytes::copy_from_slice(bytes), Bytes::new(), layout).unwrap();
    assert_eq!(req.uri().authority().unwrap(), "svc:8080");
    assert_eq!(req.uri().path(), "/x");
}

#[test]
fn a_head_not_yet_whole_is_partial() {
    assert!(matches!(
        codec::parse(b"GET / HTTP/1.1\r\nHost: a\r\n"),
        Parsed::Partial
    ));
    assert!(matches!(codec::parse(b"GET / HT"), Parsed::Partial));
}

#[test]
fn connection_close_is_kept_and_upgrade_handed_off() {
    assert!(whole(b"GET / HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n").close);
    assert!(!whole(b"GET / HTTP/1.1\r\nConnection: keep-alive\r\n\r\n").close);
    assert!(handed_off(
        b"GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    ));
    assert!(handed_off(b"GET / HTTP/1.1\r\nConnection: upgrade\r\n\r\n"));
}

#[test]
fn what_hyper_serves_is_handed_off() {
    for head in [
        &b"HEAD / HTTP/1.1\r\n\r\n"[..],
        b"CONNECT svc:443 HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.0\r\n\r\n",
        b"GET / HTTP/1.1\r\nUpgrade: h2c\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx",
        b"GET / HTTP/1.1\r\nTE: trailers\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
        b"POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\nx",
        b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\nx",
        b"GE@T / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nbad name: x\r\n\r\n",
    ] {
        assert!(handed_off(head), "{}", String::from_utf8_lossy(head));
    }
}

#[test]
fn a_body_not_yet_arrived_is_handed_off_and_one_that_has_is_taken() {
    assert!(handed_off(b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\nabc"));
    assert_eq!(whole(b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\nabcd").body_len, 4);
    assert_eq!(whole(b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n").body_len, 0);
}

#[test]
fn more_headers_than_this_path_takes_are_handed_off() {
    let mut head = b"GET / HTTP/1.1\r\n".to_vec();
    for i in 0..codec::MAX_HEADERS {
        head.extend_from_slice(format!("x-{i}: v\r\n").as_bytes());
    }
    head.extend_from_slice(b"\r\n");
    let req = codec::request(&Bytes::copy_from_slice(&head), Bytes::new(), whole(&head)).unwrap();
    assert_eq!(req.headers().len(), codec::MAX_HEADERS);
    head.splice(16..16, b"x-one-more: v\r\n".iter().copied());
    assert!(handed_off(&head));
}

/// The head `encode_head` writes, without its `date` line, and what it decided.
fn encoded(status: u16, headers: &[(&str, &str)], body: BodyLength) -> (String, Option<Head>) {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    let mut out = Vec::new();
    let head = codec::encode_head(StatusCode::from_u16(status).unwrap(), &map, body, &mut out);
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = text.split("\r\n").filter(|l| !l.starts_with("date: ")).collect();
    (lines.join("\r\n"), head)
}

fn head(framing: Framing, close: bool) -> Option<Head> {
    Some(Head { framing, close })
}

#[test]
fn a_known_length_is_written_when_the_headers_have_none() {
    let (text, h) = encoded(200, &[("x-a", "1"), ("x-a", "2")], BodyLength::Known(5));
    assert_eq!(text, "HTTP/1.1 200 OK\r\nx-a: 1\r\nx-a: 2\r\ncontent-length: 5\r\n\r\n");
    assert_eq!(h, head(Framing::Length(5), false));
}

#[test]
fn the_headers_content_length_is_written_once() {
    let (text, h) = encoded(
        404,
        &[("content-length", "5"), ("content-length", "5")],
        BodyLength::Known(5),
    );
    assert_eq!(text, "HTTP/1.1 404 Not Found\r\ncontent-length: 5\r\n\r\n");
    assert_eq!(h, head(Framing::Length(5), false));
    let (text, h) = encoded(
        200,
        &[("content-length", "7"), ("content-length", "7")],
        BodyLength::Unknown,
    );
    assert_eq!(text, "HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\n");
    assert_eq!(h, head(Framing::Length(7), false));
}

#[test]
fn content_lengths_that_disagree_or_are_not_numbers_are_refused() {
    let (_, h) = encoded(
        200,
        &[("content-length", "7"), ("content-length", "8")],
        BodyLength::Unknown,
    );
    assert_eq!(h, None);
    let (_, h) = encoded(200, &[("content-length", "x")], BodyLength::Unknown);
    assert_eq!(h, None);
    let (_, h) = encoded(
        200,
        &[("content-length", "1"), ("transfer-encoding", "chunked")],
        BodyLength::Unknown,
    );
    assert_eq!(h, None);
    let (_, h) = encoded(100, &[], BodyLength::Empty);
    assert_eq!(h, None);
}

#[test]
fn an_unknown_length_is_chunked() {
    let (text, h) = encoded(200, &[], BodyLength::Unknown);
    assert_eq!(text, "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n");
    assert_eq!(h, head(Framing::Chunked, false));
    let (text, h) = encoded(200, &[("transfer-encoding", "gzip")], BodyLength::Unknown);
    assert_eq!(text, "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n");
    assert_eq!(h, head(Framing::Chunked, false));
    let (text, _) = encoded(200, &[("transfer-encoding", "gzip, chunked")], BodyLength::Unknown);
    assert_eq!(text, "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n");
}

#[test]
fn an_empty_body_says_content_length_zero() {
    let (text, h) = encoded(200, &[("content-length", "9"), ("x-a", "1")], BodyLength::Empty);
    assert_eq!(text, "HTTP/1.1 200 OK\r\nx-a: 1\r\ncontent-length: 0\r\n\r\n");
    assert_eq!(h, head(Framing::Nothing, false));
    let (text, _) = encoded(503, &[], BodyLength::Known(0));
    assert_eq!(text, "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n");
    let (text, h) = encoded(200, &[("transfer-encoding", "chunked")], BodyLength::Empty);
    assert_eq!(text, "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n");
    assert_eq!(h, head(Framing::Chunked, false));
}

#[test]
fn no_content_and_not_modified_have_no_body_framing() {
    let (text, h) = encoded(
        204,
        &[("transfer-encoding", "chunked"), ("trailer", "x")],
        BodyLength::Unknown,
    );
    assert_eq!(text, "HTTP/1.1 204 No Content\r\n\r\n");
    assert_eq!(h, head(Framing::Nothing, false));
    let (text, h) = encoded(304, &[("content-length", "10")], BodyLength::Known(10));
    assert_eq!(text, "HTTP/1.1 304 Not Modified\r\ncontent-length: 10\r\n\r\n");
    assert_eq!(h, head(Framing::Nothing, false));
    let (text, _) = encoded(304, &[], BodyLength::Known(10));
    assert_eq!(text, "HTTP/1.1 304 Not Modified\r\n\r\n");
    let (text, h) = encoded(204, &[], BodyLength::Empty);
    assert_eq!(text, "HTTP/1.1 204 No Content\r\n\r\n");
    assert_eq!(h, head(Framing::Nothing, false));
}

#[test]
fn connection_values_are_joined_and_close_ends_the_connection() {
    let (text, h) = encoded(
        200,
        &[("connection", "keep-alive"), ("connection", "Close"), ("x-b", "2")],
        BodyLength::Known(1),
    );
    assert_eq!(
        text,
        "HTTP/1.1 200 OK\r\nconnection: keep-alive, Close\r\nx-b: 2\r\ncontent-length: 1\r\n\r\n"
    );
    assert_eq!(h, head(Framing::Length(1), true));
    let (text, _) = encoded(200, &[("trailer", "a"), ("trailer", "b")], BodyLength::Known(1));
    assert_eq!(text, "HTTP/1.1 200 OK\r\ntrailer: a, b\r\ncontent-length: 1\r\n\r\n");
}

#[test]
fn a_date_is_added_unless_the_response_has_one() {
    let mut out = Vec::new();
    codec::encode_head(StatusCode::OK, &HeaderMap::new(), BodyLength::Empty, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    let date = text.split("\r\n").find_map(|l| l.strip_prefix("date: ")).unwrap();
    let parsed = httpdate::parse_http_date(date).unwrap();
    let off = parsed.duration_since(std::time::SystemTime::now() - std::time::Duration::from_secs(5));
    assert!(off.is_ok_and(|d| d < std::time::Duration::from_secs(10)), "{date}");
    let mut dated = HeaderMap::new();
    dated.insert("date", HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"));
    let mut out = Vec::new();
    codec::encode_head(StatusCode::OK, &dated, BodyLength::Empty, &mut out).unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "HTTP/1.1 200 OK\r\ndate: Sun, 06 Nov 1994 08:49:37 GMT\r\ncontent-length: 0\r\n\r\n"
    );
}

#[test]
fn unknown_statuses_keep_their_code() {
    let (text, _) = encoded(599, &[], BodyLength::Empty);
    assert!(text.starts_with("HTTP/1.1 599 <none>\r\n"), "{text}");
}

#[test]
fn chunk_sizes_are_hex() {
    let mut out = Vec::new();
    codec::chunk_size(&mut out, 255);
    codec::chunk_size(&mut out, 16);
    assert_eq!(out, b"FF\r\n10\r\n");
}

#[test]
fn a_connection_keeps_a_small_write_buffer_only() {
    let mut out = Vec::with_capacity(super::LARGE);
    super::trim(&mut out);
    assert_eq!(out.capacity(), super::LARGE);
    out.reserve(super::LARGE + 1);
    super::trim(&mut out);
    assert_eq!(out.capacity(), 0);
}

#[test]
fn a_read_gets_room_only_when_little_is_left() {
    let mut buf = bytes::BytesMut::with_capacity(super::MIN_READ);
    buf.resize(super::MIN_READ - super::LOW_WATER, 0);
    super::make_room(&mut buf);
    assert_eq!(buf.capacity(), super::MIN_READ);
    buf.resize(super::MIN_READ - super::LOW_WATER + 1, 0);
    super::make_room(&mut buf);
    assert!(buf.capacity() - buf.len() >= super::MIN_READ);
}

#[test]
fn a_target_httparse_takes_and_http_refuses_makes_no_request() {
    let bytes = b"GET http://[::1/x HTTP/1.1\r\nHost: x\r\n\r\n";
    let layout = whole(bytes);
    assert!(codec::request(&Bytes::copy_from_slice(bytes), Bytes::new(), layout).is_none());
}
