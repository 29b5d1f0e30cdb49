//! Header names the gateway sets or looks up, made once at compile time. A `&str` key is parsed
//! and checked byte by byte on every lookup (several hundred instructions each), so the request
//! path names its headers with these.

use http::HeaderName;

pub use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_METHOD,
    CONNECTION, CONTENT_TYPE, COOKIE, HOST, LOCATION, ORIGIN, SERVER, SET_COOKIE, TRANSFER_ENCODING, UPGRADE,
};

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const X_ENVOY_ORIGINAL_PATH: HeaderName = HeaderName::from_static("x-envoy-original-path");
pub const X_ENVOY_UPSTREAM_SERVICE_TIME: HeaderName = HeaderName::from_static("x-envoy-upstream-service-time");
pub const X_ENVOY_OVERLOADED: HeaderName = HeaderName::from_static("x-envoy-overloaded");
pub const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
pub const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
pub const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
pub const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Whether a header value's comma-separated list (`Connection: keep-alive, Upgrade`) holds
/// `token`, in any case.
pub fn has_token(value: &http::HeaderValue, token: &str) -> bool {
    list_has(value.as_bytes(), token)
}

/// `has_token` on a value's bytes (a head not yet made into a `HeaderValue`): false for a value
/// that is not visible ASCII, as `HeaderValue::to_str` refuses it.
pub fn list_has(value: &[u8], token: &str) -> bool {
    // On bytes: `str::split` and `trim` cost more than the whole rest of a response's head.
    visible(value) && (value.split(|&b| b == b',')).any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Whether the last item of a header value's comma-separated list is `token`, in any case
/// (`Transfer-Encoding: gzip, chunked` ends in `chunked`).
pub fn last_token_is(value: &http::HeaderValue, token: &str) -> bool {
    let v = value.as_bytes();
    let last = v.rsplit(|&b| b == b',').next().unwrap_or_default();
    visible(v) && last.trim_ascii().eq_ignore_ascii_case(token.as_bytes())
}

/// What `HeaderValue::to_str` takes: tab and visible ASCII.
fn visible(v: &[u8]) -> bool {
    v.iter().all(|&b| b == b'\t' || (32..127).contains(&b))
}

/// A decimal number of at least one digit and nothing else, that fits in a `u64`: a
/// `Content-Length` value.
pub fn digits(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit()
            .then(|| n.checked_mul(10)?.checked_add(u64::from(b - b'0')))
            .flatten()
    })
}

/// Hop-by-hop headers (RFC 9110 7.6.1), and Host, which goes upstream as the authority: none
/// of them is copied onto the upstream request.
pub static HOP_BY_HOP: [HeaderName; 6] = [
    CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    TRANSFER_ENCODING,
    UPGRADE,
    HOST,
];

/// The hop-by-hop headers of an upstream's response (RFC 9110 7.6.1): they describe the
/// upstream connection, so none reaches the client (Envoy removes them; an upstream's
/// `Connection: close` does not close the client's connection).
pub static RESPONSE_HOP_BY_HOP: [HeaderName; 5] =
    [CONNECTION, KEEP_ALIVE, PROXY_CONNECTION, TRANSFER_ENCODING, UPGRADE];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_found_in_any_item_of_the_list_in_any_case() {
        let has = |v: &'static str, token| has_token(&http::HeaderValue::from_static(v), token);
        assert!(has("close", "close"));
        assert!(has("Keep-Alive, CLOSE", "close"));
        assert!(has(" keep-alive ,\tUpgrade\t", "upgrade"));
        assert!(!has("closed", "close"));
        assert!(!has("keep-alive", "close"));
        assert!(!has("", "close"));
        assert!(!has("clo se", "close"));
        let not_text = http::HeaderValue::from_bytes(b"close, \xff").unwrap_or_else(|e| panic!("{e}"));
        assert!(
            !has_token(&not_text, "close"),
            "a value that is not text holds no token"
        );
    }

    #[test]
    fn a_list_on_bytes_takes_tab_and_visible_ascii_only() {
        assert!(list_has(b"keep-alive,\tclose", "close"));
        assert!(!list_has(b"a b, closed ~", "close"));
        assert!(list_has(b"x ~, close", "close"));
        for bad in [&b"close, \x7f"[..], b"close, \x1f", b"close, \x80"] {
            assert!(!list_has(bad, "close"), "{bad:?}");
        }
    }

    #[test]
    fn the_last_item_of_a_list_is_read_alone() {
        let last = |v: &'static str| last_token_is(&http::HeaderValue::from_static(v), "chunked");
        assert!(last("chunked"));
        assert!(last("gzip, Chunked "));
        assert!(last("gzip,chunked"));
        assert!(!last("chunked, gzip"));
        assert!(!last("chunkedx"));
        assert!(!last(""));
        let not_text = http::HeaderValue::from_bytes(b"\xff, chunked").unwrap_or_else(|e| panic!("{e}"));
        assert!(!last_token_is(&not_text, "chunked"));
    }

    #[test]
    fn the_names_are_the_ones_on_the_wire() {
        // A const made by from_static is the same name a parsed header carries.
        for (name, text) in [
            (&X_FORWARDED_FOR, "X-Forwarded-For"),
            (&X_ENVOY_UPSTREAM_SERVICE_TIME, "x-envoy-upstream-service-time"),
            (&GRPC_STATUS, "grpc-status"),
            (&PROXY_CONNECTION, "Proxy-Connection"),
        ] {
            assert_eq!(*name, HeaderName::from_bytes(text.as_bytes()).unwrap());
        }
        let names: Vec<&str> = HOP_BY_HOP.iter().map(HeaderName::as_str).collect();
        assert_eq!(
            names,
            [
                "connection",
                "keep-alive",
                "proxy-connection",
                "transfer-encoding",
                "upgrade",
                "host"
            ]
        );
    }
}
