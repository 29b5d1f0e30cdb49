//! Access log formats as Envoy and Istio write them: a format string of `%OPERATOR%`s (Envoy's
//! command operators; Istio's `accessLogFormat`), TEXT or JSON (Istio's `accessLogEncoding`).
//! With no format, TEXT is Istio's default line and JSON Istio's default JSON object.
//!
//! The format is compiled once; a request's line is written from an [`Entry`], which holds
//! only the headers the format names.

use std::net::SocketAddr;
use std::time::SystemTime;

/// Istio's default JSON access log (`accessLogEncoding: JSON` with no format).
const ISTIO_JSON_FIELDS: [(&str, &str); 23] = [
    ("start_time", "%START_TIME%"),
    ("method", "%REQ(:METHOD)%"),
    ("path", "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%"),
    ("protocol", "%PROTOCOL%"),
    ("response_code", "%RESPONSE_CODE%"),
    ("response_flags", "%RESPONSE_FLAGS%"),
    ("response_code_details", "%RESPONSE_CODE_DETAILS%"),
    ("connection_termination_details", "%CONNECTION_TERMINATION_DETAILS%"),
    (
        "upstream_transport_failure_reason",
        "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
    ),
    ("bytes_received", "%BYTES_RECEIVED%"),
    ("bytes_sent", "%BYTES_SENT%"),
    ("duration", "%DURATION%"),
    ("upstream_service_time", "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%"),
    ("x_forwarded_for", "%REQ(X-FORWARDED-FOR)%"),
    ("user_agent", "%REQ(USER-AGENT)%"),
    ("request_id", "%REQ(X-REQUEST-ID)%"),
    ("authority", "%REQ(:AUTHORITY)%"),
    ("upstream_host", "%UPSTREAM_HOST%"),
    ("upstream_cluster", "%UPSTREAM_CLUSTER_RAW%"),
    ("upstream_local_address", "%UPSTREAM_LOCAL_ADDRESS%"),
    ("downstream_local_address", "%DOWNSTREAM_LOCAL_ADDRESS%"),
    ("downstream_remote_address", "%DOWNSTREAM_REMOTE_ADDRESS%"),
    ("requested_server_name", "%REQUESTED_SERVER_NAME%"),
];

/// A header operator: `%REQ(X?Y):N%` reads X, else Y, at most N characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderOp {
    name: String,
    alt: Option<String>,
    max: Option<usize>,
}

/// Envoy's command operators that meshgate knows.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    StartTime,
    Req(HeaderOp),
    Resp(HeaderOp),
    Protocol,
    ResponseCode,
    ResponseFlags,
    ResponseCodeDetails,
    ConnectionTerminationDetails,
    UpstreamTransportFailureReason,
    BytesReceived,
    BytesSent,
    Duration,
    UpstreamHost,
    UpstreamCluster,
    UpstreamLocalAddress,
    DownstreamLocalAddress,
    DownstreamRemoteAddress,
    DownstreamRemoteAddressWithoutPort,
    RequestedServerName,
    RouteName,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Op(Op),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Layout {
    Text(Vec<Piece>),
    /// Keys in order, each with its value's pieces.
    Json(Vec<(String, Vec<Piece>)>),
}

/// A compiled access log format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    layout: Layout,
    /// Request and response headers the format reads, lowercase.
    pub request_headers: Vec<String>,
    pub response_headers: Vec<String>,
}

/// What one request's line is written from.
#[derive(Debug)]
pub struct Entry<'a> {
    pub start: SystemTime,
    pub method: &'a str,
    pub path: &'a str,
    pub authority: &'a str,
    pub scheme: &'a str,
    pub protocol: &'a str,
    /// Values of `Format::request_headers`, in order (None: absent).
    pub request_headers: &'a [Option<String>],
    pub response_headers: &'a [Option<String>],
    pub code: u16,
    pub flags: &'a str,
    pub details: &'a str,
    pub transport_failure: &'a str,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub duration_ms: u128,
    pub upstream_host: &'a str,
    pub cluster: &'a str,
    pub local: SocketAddr,
    pub peer: SocketAddr,
    pub sni: Option<&'a str>,
    pub route: &'a str,
}

impl Format {
    /// `encoding`: `TEXT` or `JSON` (any case); `format`: Envoy's format string (TEXT) or a
    /// JSON object of keys to format strings (JSON); empty: Istio's default.
    pub fn new(encoding: &str, format: &str) -> Result<Format, String> {
        let json = match encoding.to_ascii_uppercase().as_str() {
            "TEXT" => false,
            "JSON" => true,
            other => return Err(format!("access log encoding `{other}`: expected TEXT or JSON")),
        };
        let layout = match (json, format.trim().is_empty()) {
            (false, true) => Layout::Text(pieces(mesh_model::envoy::ISTIO_TEXT_LOG_FORMAT.trim_end_matches('\n'))?),
            (false, false) => Layout::Text(pieces(format.trim_end_matches('\n'))?),
            (true, true) => Layout::Json(
                ISTIO_JSON_FIELDS
                    .iter()
                    .map(|(k, v)| Ok(((*k).to_string(), pieces(v)?)))
                    .collect::<Result<_, String>>()?,
            ),
            (true, false) => {
                let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(format)
                    .map_err(|e| format!("access log format: a JSON object of strings is expected ({e})"))?;
                Layout::Json(
                    map.into_iter()
                        .map(|(k, v)| match v {
                            serde_json::Value::String(s) => Ok((k, pieces(&s)?)),
                            other => Err(format!("access log format: `{k}` is {other}, expected a string")),
                        })
                        .collect::<Result<_, String>>()?,
                )
            }
        };
        let all: Vec<&Piece> = match &layout {
            Layout::Text(p) => p.iter().collect(),
            Layout::Json(fields) => fields.iter().flat_map(|(_, p)| p).collect(),
        };
        let ops: Vec<&Op> = all
            .into_iter()
            .filter_map(|p| match p {
                Piece::Op(op) => Some(op),
                Piece::Text(_) => None,
            })
            .collect();
        let mut request_headers = Vec::new();
        let mut response_headers = Vec::new();
        for op in ops {
            let (list, h) = match op {
                Op::Req(h) => (&mut request_headers, h),
                Op::Resp(h) => (&mut response_headers, h),
                _ => continue,
            };
            for name in std::iter::once(&h.name).chain(&h.alt) {
                if !name.starts_with(':') && !list.contains(name) {
                    list.push(name.clone());
                }
            }
        }
        Ok(Format {
            layout,
            request_headers,
            response_headers,
        })
    }

    /// The line for `e`, without its newline.
    pub fn render(&self, e: &Entry<'_>) -> String {
        let mut o = String::with_capacity(256);
        match &self.layout {
            Layout::Text(pieces) => {
                for p in pieces {
                    match p {
                        Piece::Text(t) => o.push_str(t),
                        Piece::Op(op) => o.push_str(self.value(op, e).as_deref().unwrap_or("-")),
                    }
                }
            }
            Layout::Json(fields) => {
                let mut map = serde_json::Map::new();
                for (key, pieces) in fields {
                    map.insert(key.clone(), self.json_value(pieces, e));
                }
                o = serde_json::Value::Object(map).to_string();
            }
        }
        o
    }

    /// A JSON field: a lone numeric operator is a number, a lone missing value null (as Envoy
    /// writes them), anything else a string.
    fn json_value(&self, pieces: &[Piece], e: &Entry<'_>) -> serde_json::Value {
        if let [Piece::Op(op)] = pieces {
            let number = match op {
                Op::ResponseCode => Some(u64::from(e.code)),
                Op::BytesReceived => Some(e.bytes_received),
                Op::BytesSent => Some(e.bytes_sent),
                Op::Duration => Some(u64::try_from(e.duration_ms).unwrap_or(u64::MAX)),
                _ => None,
            };
            if let Some(n) = number {
                return n.into();
            }
            return self
                .value(op, e)
                .map_or(serde_json::Value::Null, serde_json::Value::String);
        }
        let mut s = String::new();
        for p in pieces {
            match p {
                Piece::Text(t) => s.push_str(t),
                Piece::Op(op) => s.push_str(self.value(op, e).as_deref().unwrap_or("-")),
            }
        }
        serde_json::Value::String(s)
    }

    fn header(&self, h: &HeaderOp, names: &[String], values: &[Option<String>], e: &Entry<'_>) -> Option<String> {
        let read = |name: &str| -> Option<String> {
            match name {
                ":method" => Some(e.method.to_string()),
                ":path" => Some(e.path.to_string()),
                ":authority" => Some(e.authority.to_string()),
                ":scheme" => Some(e.scheme.to_string()),
                _ => names
                    .iter()
                    .position(|n| n == name)
                    .and_then(|i| values.get(i).cloned().flatten()),
            }
        };
        let v = read(&h.name).or_else(|| h.alt.as_deref().and_then(read))?;
        Some(match h.max {
            Some(max) => v.chars().take(max).collect(),
            None => v,
        })
    }

    /// An operator's value (None: Envoy's `-`).
    fn value(&self, op: &Op, e: &Entry<'_>) -> Option<String> {
        let text = |s: &str| (!s.is_empty()).then(|| s.to_string());
        match op {
            Op::StartTime => Some(mesh_model::time::rfc3339(e.start, true)),
            Op::Req(h) => self.header(h, &self.request_headers, e.request_headers, e),
            Op::Resp(h) => self.header(h, &self.response_headers, e.response_headers, e),
            Op::Protocol => Some(e.protocol.to_string()),
            Op::ResponseCode => Some(e.code.to_string()),
            Op::ResponseFlags => text(e.flags),
            Op::ResponseCodeDetails => text(e.details),
            Op::ConnectionTerminationDetails | Op::UpstreamLocalAddress => None,
            Op::UpstreamTransportFailureReason => text(e.transport_failure),
            Op::BytesReceived => Some(e.bytes_received.to_string()),
            Op::BytesSent => Some(e.bytes_sent.to_string()),
            Op::Duration => Some(e.duration_ms.to_string()),
            Op::UpstreamHost => text(e.upstream_host),
            Op::UpstreamCluster => text(e.cluster),
            Op::DownstreamLocalAddress => Some(e.local.to_string()),
            Op::DownstreamRemoteAddress => Some(e.peer.to_string()),
            Op::DownstreamRemoteAddressWithoutPort => Some(e.peer.ip().to_string()),
            Op::RequestedServerName => e.sni.and_then(text),
            Op::RouteName => text(e.route),
        }
    }
}

/// A format string's pieces; an unknown operator is an error that names it.
fn pieces(format: &str) -> Result<Vec<Piece>, String> {
    let mut out = Vec::new();
    let mut text = String::new();
    let mut rest = format;
    while let Some(i) = rest.find('%') {
        text.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let Some(end) = after.find('%') else {
            return Err(format!("access log format: `%` at `{}` is not closed", &rest[i..]));
        };
        let token = &after[..end];
        rest = &after[end + 1..];
        if token.is_empty() {
            // `%%` is a literal percent sign.
            text.push('%');
            continue;
        }
        if !text.is_empty() {
            out.push(Piece::Text(std::mem::take(&mut text)));
        }
        out.push(Piece::Op(operator(token)?));
    }
    text.push_str(rest);
    if !text.is_empty() {
        out.push(Piece::Text(text));
    }
    Ok(out)
}

fn operator(token: &str) -> Result<Op, String> {
    if let Some(h) = header_op(token, "REQ(")? {
        return Ok(Op::Req(h));
    }
    if let Some(h) = header_op(token, "RESP(")? {
        return Ok(Op::Resp(h));
    }
    Ok(match token {
        "START_TIME" => Op::StartTime,
        "PROTOCOL" => Op::Protocol,
        "RESPONSE_CODE" => Op::ResponseCode,
        "RESPONSE_FLAGS" => Op::ResponseFlags,
        "RESPONSE_CODE_DETAILS" => Op::ResponseCodeDetails,
        "CONNECTION_TERMINATION_DETAILS" => Op::ConnectionTerminationDetails,
        "UPSTREAM_TRANSPORT_FAILURE_REASON" => Op::UpstreamTransportFailureReason,
        "BYTES_RECEIVED" => Op::BytesReceived,
        "BYTES_SENT" => Op::BytesSent,
        "DURATION" => Op::Duration,
        "UPSTREAM_HOST" => Op::UpstreamHost,
        "UPSTREAM_CLUSTER" | "UPSTREAM_CLUSTER_RAW" => Op::UpstreamCluster,
        "UPSTREAM_LOCAL_ADDRESS" => Op::UpstreamLocalAddress,
        "DOWNSTREAM_LOCAL_ADDRESS" => Op::DownstreamLocalAddress,
        "DOWNSTREAM_REMOTE_ADDRESS" | "DOWNSTREAM_PEER_ADDRESS" => Op::DownstreamRemoteAddress,
        "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT" => Op::DownstreamRemoteAddressWithoutPort,
        "REQUESTED_SERVER_NAME" => Op::RequestedServerName,
        "ROUTE_NAME" => Op::RouteName,
        other => {
            return Err(format!(
                "access log format: unknown operator %{other}% (known: START_TIME, REQ(..), RESP(..), PROTOCOL, \
                 RESPONSE_CODE, RESPONSE_FLAGS, RESPONSE_CODE_DETAILS, BYTES_RECEIVED, BYTES_SENT, DURATION, \
                 UPSTREAM_HOST, UPSTREAM_CLUSTER, DOWNSTREAM_LOCAL_ADDRESS, DOWNSTREAM_REMOTE_ADDRESS, \
                 REQUESTED_SERVER_NAME, ROUTE_NAME, …)"
            ))
        }
    })
}

/// `REQ(X?Y):N` (with `prefix` `REQ(`), or None when `token` is another operator.
fn header_op(token: &str, prefix: &str) -> Result<Option<HeaderOp>, String> {
    let Some(inner) = token.strip_prefix(prefix) else {
        return Ok(None);
    };
    let Some((names, after)) = inner.split_once(')') else {
        return Err(format!("access log format: %{token}% has no `)`"));
    };
    let max = match after.strip_prefix(':') {
        Some(n) => Some(
            n.parse::<usize>()
                .map_err(|_| format!("access log format: %{token}%: `{n}` is not a length"))?,
        ),
        None if after.is_empty() => None,
        None => return Err(format!("access log format: %{token}%: unexpected `{after}`")),
    };
    let (name, alt) = match names.split_once('?') {
        Some((a, b)) => (a, Some(b.to_ascii_lowercase())),
        None => (names, None),
    };
    if name.is_empty() {
        return Err(format!("access log format: %{token}% names no header"));
    }
    Ok(Some(HeaderOp {
        name: name.to_ascii_lowercase(),
        alt,
        max,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry<'a>(request: &'a [Option<String>], response: &'a [Option<String>]) -> Entry<'a> {
        Entry {
            start: SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123),
            method: "GET",
            path: "/a?b=1",
            authority: "shop.example.com",
            scheme: "https",
            protocol: "HTTP/1.1",
            request_headers: request,
            response_headers: response,
            code: 200,
            flags: "",
            details: "via_upstream",
            transport_failure: "",
            bytes_received: 11,
            bytes_sent: 30,
            duration_ms: 4,
            upstream_host: "127.0.0.1:8080",
            cluster: "outbound|80||shop.example.com",
            local: "10.0.0.1:443".parse().unwrap_or_else(|e| panic!("{e}")),
            peer: "10.0.0.7:5000".parse().unwrap_or_else(|e| panic!("{e}")),
            sni: Some("shop.example.com"),
            route: "",
        }
    }

    fn format(encoding: &str, f: &str) -> Format {
        Format::new(encoding, f).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn the_default_text_line_is_istios() {
        let f = format("text", "");
        assert_eq!(
            f.request_headers,
            ["x-envoy-original-path", "x-forwarded-for", "user-agent", "x-request-id"]
        );
        assert_eq!(f.response_headers, ["x-envoy-upstream-service-time"]);
        let req = [
            None,
            Some("1.2.3.4".to_string()),
            Some("curl/8".to_string()),
            Some("id-1".to_string()),
        ];
        let line = f.render(&entry(&req, &[Some("3".to_string())]));
        assert_eq!(
            line,
            "[2023-11-14T22:13:20.123Z] \"GET /a?b=1 HTTP/1.1\" 200 - via_upstream - \"-\" 11 30 4 3 \"1.2.3.4\" \
             \"curl/8\" \"id-1\" \"shop.example.com\" \"127.0.0.1:8080\" outbound|80||shop.example.com - 10.0.0.1:443 \
             10.0.0.7:5000 shop.example.com -"
        );
    }

    #[test]
    fn the_default_json_object_is_istios_with_numbers_and_nulls() {
        let f = format("JSON", "");
        let req = [None, None, Some("curl/8".to_string()), None];
        let line = f.render(&entry(&req, &[None]));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(v.as_object().map(|o| o.len()), Some(ISTIO_JSON_FIELDS.len()));
        assert_eq!(v["start_time"], "2023-11-14T22:13:20.123Z");
        assert_eq!(v["method"], "GET");
        assert_eq!(v["path"], "/a?b=1", "X-ENVOY-ORIGINAL-PATH, else :path");
        assert_eq!(v["response_code"], 200);
        assert_eq!(v["bytes_received"], 11);
        assert_eq!(v["bytes_sent"], 30);
        assert_eq!(v["duration"], 4);
        assert_eq!(v["response_flags"], serde_json::Value::Null);
        assert_eq!(v["upstream_service_time"], serde_json::Value::Null);
        assert_eq!(v["user_agent"], "curl/8");
        assert_eq!(v["authority"], "shop.example.com");
        assert_eq!(v["upstream_cluster"], "outbound|80||shop.example.com");
        assert_eq!(v["downstream_remote_address"], "10.0.0.7:5000");
        assert_eq!(v["requested_server_name"], "shop.example.com");
    }

    #[test]
    fn a_users_format_reads_headers_with_fallbacks_and_lengths() {
        let f = format(
            "TEXT",
            "%REQ(X-USER?USER-AGENT):4% %RESP(X-CACHE)% %REQ(:SCHEME)% %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% 100%% %REQ(X-USER)%\n",
        );
        assert_eq!(f.request_headers, ["x-user", "user-agent"]);
        assert_eq!(f.response_headers, ["x-cache"]);
        let line = f.render(&entry(&[None, Some("curl/8".to_string())], &[Some("HIT".to_string())]));
        assert_eq!(line, "curl HIT https 10.0.0.7 100% -");
        let line = f.render(&entry(&[Some("alice-long".to_string()), None], &[None]));
        assert_eq!(line, "alic - https 10.0.0.7 100% alice-long");
        let json = format(
            "json",
            r#"{"who": "%REQ(X-USER)%", "at": "code %RESPONSE_CODE%", "n": "%BYTES_SENT%"}"#,
        );
        let line = json.render(&entry(&[None], &[]));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(v, serde_json::json!({"who": null, "at": "code 200", "n": 30}));
    }

    #[test]
    fn a_bad_format_is_an_error_that_names_the_problem() {
        let err = |e: &str, f: &str| Format::new(e, f).err().unwrap_or_default();
        assert!(err("TEXT", "%NOPE%").contains("unknown operator %NOPE%"));
        assert!(err("TEXT", "a %DURATION").contains("is not closed"));
        assert!(err("TEXT", "%REQ(X-A%").contains("has no `)`"));
        assert!(err("TEXT", "%REQ(X-A):n%").contains("`n` is not a length"));
        assert!(err("TEXT", "%REQ(X-A)x%").contains("unexpected `x`"));
        assert!(err("TEXT", "%REQ()%").contains("names no header"));
        assert!(err("XML", "").contains("expected TEXT or JSON"));
        assert!(err("JSON", "[1]").contains("a JSON object of strings"));
        assert!(err("JSON", r#"{"a": 1}"#).contains("`a` is 1, expected a string"));
    }
}
