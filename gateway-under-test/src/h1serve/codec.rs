//! The bytes of the downstream HTTP/1.1 path: a request head read with `httparse` into an
//! `http::Request` whose header values share the read buffer, and a response head written as
//! hyper's server writes it (its framing rules, its `date`), so a client cannot tell the two
//! paths apart. A request this path does not take is `Handoff`: hyper serves it.

use std::ops::Range;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri, Version};
use http_body_util::Full;

use crate::names::{digits, has_token, last_token_is, list_has};

/// The most header lines a request head may carry on this path; more go to hyper, whose limit
/// (`max_headers_count`) answers them.
pub const MAX_HEADERS: usize = 100;

/// Headers the gateway may add to a request before it goes upstream, room kept for them.
const ADDED: usize = 6;

/// What the bytes read so far hold.
#[derive(Debug)]
pub enum Parsed {
    /// Not yet a whole head.
    Partial,
    /// A request this path serves; its head and body are whole in the buffer.
    Whole(Layout),
    /// Anything else: a body still arriving or chunked, an upgrade, `Expect`, HEAD, CONNECT,
    /// HTTP/1.0, `TE`, too many headers, a head hyper would refuse. hyper serves it, with its
    /// own answers to what it refuses.
    Handoff,
}

/// Where a whole request's parts lie in the buffer.
#[derive(Debug)]
pub struct Layout {
    pub head_len: usize,
    pub body_len: usize,
    /// The client asked for the connection to close after this response.
    pub close: bool,
    method: Method,
    target: Range<usize>,
    headers: Vec<(HeaderName, Range<usize>)>,
}

/// Reads one request head from the start of `buf`.
pub fn parse(buf: &[u8]) -> Parsed {
    let mut lines = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut lines);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Handoff,
    };
    let (Some(method), Some(target), Some(1)) = (req.method, req.path, req.version) else {
        return Parsed::Handoff;
    };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Parsed::Handoff;
    };
    if method == Method::HEAD || method == Method::CONNECT {
        return Parsed::Handoff;
    }
    let span = |part: &[u8]| {
        let start = part.as_ptr() as usize - buf.as_ptr() as usize;
        start..start + part.len()
    };
    let mut layout = Layout {
        head_len,
        body_len: 0,
        close: false,
        method,
        target: span(target.as_bytes()),
        headers: Vec::with_capacity(req.headers.len()),
    };
    let mut length = None;
    for line in req.headers.iter() {
        let Ok(name) = HeaderName::from_bytes(line.name.as_bytes()) else {
            return Parsed::Handoff;
        };
        match name {
            http::header::CONTENT_LENGTH => match (length, digits(line.value)) {
                (None, Some(n)) => length = Some(n),
                _ => return Parsed::Handoff,
            },
            http::header::CONNECTION => {
                if list_has(line.value, "upgrade") {
                    return Parsed::Handoff;
                }
                layout.close |= list_has(line.value, "close");
            }
            http::header::TRANSFER_ENCODING | http::header::EXPECT | http::header::UPGRADE | http::header::TE => {
                return Parsed::Handoff;
            }
            _ => {}
        }
        layout.headers.push((name, span(line.value)));
    }
    let body_len = length.unwrap_or(0);
    match usize::try_from(body_len) {
        Ok(n) if n <= buf.len() - head_len => layout.body_len = n,
        _ => return Parsed::Handoff,
    }
    Parsed::Whole(layout)
}

/// The request `layout` describes, its header values sharing `head`'s bytes. None: a part
/// `http` refuses (hyper serves it instead).
pub fn request(head: &Bytes, body: Bytes, layout: Layout) -> Option<Request<Full<Bytes>>> {
    let uri = Uri::from_maybe_shared(head.slice(layout.target)).ok()?;
    // Room for what the gateway adds (`x-forwarded-for`, `x-forwarded-proto`, `x-request-id`,
    // a route's own): the map is not regrown on the way.
    let mut headers = HeaderMap::with_capacity(layout.headers.len() + ADDED);
    for (name, value) in layout.headers {
        headers.append(name, HeaderValue::from_maybe_shared(head.slice(value)).ok()?);
    }
    let mut req = Request::new(Full::new(body));
    *req.method_mut() = layout.method;
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = headers;
    Some(req)
}

/// How much body a response has, as hyper's dispatcher tells its encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLength {
    /// The body has ended already.
    Empty,
    Known(u64),
    Unknown,
}

/// How a response's body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body bytes at all (204, 304, or an empty body).
    Nothing,
    /// Exactly this many bytes.
    Length(u64),
    Chunked,
}

/// A response head as written.
#[derive(Debug, PartialEq, Eq)]
pub struct Head {
    pub framing: Framing,
    /// The response says `Connection: close`: the connection ends after it.
    pub close: bool,
}

/// A response head the encoder refuses, as hyper does: the client gets a bare 500 and the
/// connection ends.
pub const REFUSED: &[u8] = b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

/// Writes the head of a response to a GET-like request (never HEAD or CONNECT) onto `out` with
/// hyper's server rules: the `Content-Length` of the headers or else the body's known length,
/// chunked when the length is unknown, none for 204 and 304, `date` when the response has none.
/// None: a 1xx status, `Content-Length` values that disagree or are not numbers, or
/// `Transfer-Encoding` after `Content-Length`.
pub fn encode_head(status: StatusCode, headers: &HeaderMap, body: BodyLength, out: &mut Vec<u8>) -> Option<Head> {
    if status.is_informational() {
        return None;
    }
    let bodiless = status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
    if status == StatusCode::OK {
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    } else {
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(status.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let mut head = Head {
        framing: Framing::Nothing,
        close: false,
    };
    let mut length_written = false;
    let mut date = false;
    let mut chunked_last = true;
    let mut joined: Option<&HeaderName> = None;
    for (name, value) in headers {
        // Connection, Transfer-Encoding and Trailer values go on one line, comma-joined.
        let join = *name == http::header::CONNECTION
            || *name == http::header::TRANSFER_ENCODING
            || *name == http::header::TRAILER;
        if joined.is_some_and(|j| j != name) {
            end_joined(out, joined.take(), chunked_last);
        }
        match *name {
            http::header::CONTENT_LENGTH => {
                match body {
                    // The header is written once; its length is the body's.
                    BodyLength::Known(n) if !length_written => head.framing = Framing::Length(n),
                    BodyLength::Known(_) => continue,
                    BodyLength::Unknown => {
                        let n = digits(value.as_bytes())?;
                        match head.framing {
                            Framing::Length(m) if m == n && length_written => continue,
                            _ if length_written => return None,
                            _ => head.framing = Framing::Length(n),
                        }
                    }
                    // An empty body gets `content-length: 0`, below.
                    BodyLength::Empty => continue,
                }
                length_written = true;
            }
            http::header::TRANSFER_ENCODING => {
                if bodiless {
                    continue;
                }
                if length_written && joined.is_none() {
                    return None;
                }
                length_written = true;
                head.framing = Framing::Chunked;
                chunked_last = last_token_is(value, "chunked");
            }
            http::header::TRAILER if bodiless => continue,
            http::header::CONNECTION => head.close |= has_token(value, "close"),
            http::header::DATE => date = true,
            _ => {}
        }
        if join && joined.is_some() {
            out.extend_from_slice(b", ");
        } else {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
        }
        out.extend_from_slice(value.as_bytes());
        if join {
            joined = Some(name);
        } else {
            out.extend_from_slice(b"\r\n");
        }
    }
    end_joined(out, joined, chunked_last);
    if !length_written {
        match body {
            BodyLength::Unknown if !bodiless => {
                out.extend_from_slice(b"transfer-encoding: chunked\r\n");
                head.framing = Framing::Chunked;
            }
            BodyLength::Empty | BodyLength::Known(0) if !bodiless => out.extend_from_slice(b"content-length: 0\r\n"),
            BodyLength::Known(n) if !bodiless => {
                use std::io::Write;
                let _ = write!(out, "content-length: {n}\r\n");
                head.framing = Framing::Length(n);
            }
            _ => {}
        }
    }
    if bodiless || body == BodyLength::Empty && head.framing != Framing::Chunked {
        head.framing = Framing::Nothing;
    }
    if !date {
        out.extend_from_slice(b"date: ");
        crate::h1serve::date::extend(out);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Some(head)
}

/// Ends a comma-joined header line; a `Transfer-Encoding` whose last coding is not chunked gets
/// `, chunked` (the body is sent chunked).
fn end_joined(out: &mut Vec<u8>, joined: Option<&HeaderName>, chunked_last: bool) {
    match joined {
        Some(name) if *name == http::header::TRANSFER_ENCODING && !chunked_last => {
            out.extend_from_slice(b", chunked\r\n");
        }
        Some(_) => out.extend_from_slice(b"\r\n"),
        None => {}
    }
}

/// A chunk's size line, for a chunk of `len` bytes.
pub fn chunk_size(out: &mut Vec<u8>, len: usize) {
    use std::io::Write;
    let _ = write!(out, "{len:X}\r\n");
}
