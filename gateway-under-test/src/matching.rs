//! Route matching: does a compiled match take a request (uri, scheme, method, authority,
//! headers with pseudo-headers and inverted forms, query parameters)? And the request's host.

use std::borrow::Cow;

use http::Request;

use crate::compile::{HeaderMatcher, Matcher, StrMatch};
use crate::context::Downstream;

/// The authority as the client sent it (with its port, if any): the URI's (h2, absolute form),
/// else the Host header; empty when neither is there.
pub fn authority<B>(req: &Request<B>) -> &str {
    req.uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| req.headers().get(http::header::HOST).and_then(|h| h.to_str().ok()))
        .unwrap_or_default()
}

/// Lowercase host without the port: gateways ignore the port in host matching.
pub fn request_host<B>(req: &Request<B>) -> Cow<'_, str> {
    let a = authority(req);
    let host = match a.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        // A byte search: `rsplit_once` goes through the generic char searcher, which cost more
        // than the rest of the host's handling.
        None => match a.bytes().rposition(|c| c == b':') {
            Some(i) if a.as_bytes()[i + 1..].iter().all(u8::is_ascii_digit) => &a[..i],
            _ => a,
        },
    };
    // Most clients send it lowercase already: no copy then.
    if host.bytes().any(|c| c.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

/// A request's header values as one table's routes compare them: each header is looked up, and its
/// repeated values joined, once per request however many routes match on it. Istio's shape of a
/// table, routes told apart by a header (40 routes on `x-route`), hashed the same name once per
/// route: a sixth of the request's instructions. The first `SEEN` names are kept (a table names
/// a few); past them a value is looked up each time it is asked for, so a table naming thousands
/// costs a bounded search per lookup, not one growing with the table.
#[derive(Debug, Default)]
pub struct Seen<'a> {
    values: Vec<(&'a http::HeaderName, Option<Cow<'a, str>>)>,
    /// The last value looked up past the first `SEEN` names.
    spilled: Option<Cow<'a, str>>,
}

const SEEN: usize = 8;

impl<'a> Seen<'a> {
    /// Every value of header `key` joined by `,` (as Envoy joins repeated headers); none when the
    /// request does not carry it.
    pub(crate) fn value<B>(&mut self, req: &'a Request<B>, key: &'a http::HeaderName) -> Option<&str> {
        if let Some(i) = self.values.iter().position(|(k, _)| *k == key) {
            return self.values[i].1.as_deref();
        }
        let value = joined(req, key);
        if self.values.len() < SEEN {
            self.values.push((key, value));
            return self.values[self.values.len() - 1].1.as_deref();
        }
        self.spilled = value;
        self.spilled.as_deref()
    }
}

fn joined<'a, B>(req: &'a Request<B>, key: &http::HeaderName) -> Option<Cow<'a, str>> {
    let mut values = req.headers().get_all(key).iter().filter_map(|v| v.to_str().ok());
    let first = values.next()?;
    let Some(second) = values.next() else {
        return Some(Cow::Borrowed(first));
    };
    let mut joined = format!("{first},{second}");
    for v in values {
        joined.push(',');
        joined.push_str(v);
    }
    Some(Cow::Owned(joined))
}

/// What a header match compares: a pseudo-header, or the header's values (`Seen::value`).
fn header_value<'s, 'a: 's, B>(
    req: &'a Request<B>,
    down: &Downstream,
    h: &'a HeaderMatcher,
    seen: &'s mut Seen<'a>,
) -> Option<&'s str> {
    // A header first: its name is the route table's usual one, and a pseudo-header's has no key.
    if let Some(key) = &h.key {
        return seen.value(req, key);
    }
    match h.name.as_str() {
        ":method" => Some(req.method().as_str()),
        ":authority" => Some(authority(req)),
        ":scheme" => Some(down.scheme),
        ":path" => req.uri().path_and_query().map(|p| p.as_str()),
        _ => None,
    }
}

/// Phase 4: does this route's match take the request? Every condition must hold, so the cheap
/// ones go first: a URI regex is tried only once the headers and the rest have agreed (in a
/// table of routes told apart by a header, most are turned down by one header lookup). `seen`
/// carries the request's header values from one route of the table to the next.
pub fn matches<'a, B>(m: &'a Matcher, req: &'a Request<B>, down: &Downstream, seen: &mut Seen<'a>) -> bool {
    let regex_uri = matches!(m.uri, Some(StrMatch::Regex(_)));
    if !regex_uri && !uri_matches(m, req) {
        return false;
    }
    if m.scheme.as_ref().is_some_and(|s| !s.matches(down.scheme))
        || m.method.as_ref().is_some_and(|s| !s.matches(req.method().as_str()))
    {
        return false;
    }
    if m.authority.as_ref().is_some_and(|s| !s.matches(authority(req))) {
        return false;
    }
    for h in &m.headers {
        let value = header_value(req, down, h, seen);
        let value = if h.treat_missing_as_empty {
            Some(value.unwrap_or_default())
        } else {
            value
        };
        let hit = match (&h.value, value) {
            (None, v) => v.is_some(),
            (Some(_), None) => false,
            (Some(sm), Some(v)) => sm.matches(v),
        };
        if hit == h.invert {
            return false;
        }
    }
    if regex_uri && !uri_matches(m, req) {
        return false;
    }
    if !m.query.is_empty() {
        let q = req.uri().query().unwrap_or("");
        for (name, sm) in &m.query {
            let value = q
                .split('&')
                .map(|kv| kv.split_once('=').unwrap_or((kv, "")))
                .find(|(k, _)| k == name)
                .map(|(_, v)| v);
            let hit = match (sm, value) {
                (_, None) => false,
                (None, Some(_)) => true,
                (Some(sm), Some(v)) => sm.matches(v),
            };
            if !hit {
                return false;
            }
        }
    }
    true
}

fn uri_matches<B>(m: &Matcher, req: &Request<B>) -> bool {
    let Some(u) = &m.uri else {
        return true;
    };
    let path = req.uri().path();
    if m.ignore_uri_case {
        u.matches(&path.to_ascii_lowercase())
    } else {
        u.matches(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_of(host: &str) -> String {
        let req = Request::get("/")
            .header("host", host)
            .body(())
            .unwrap_or_else(|e| panic!("{e}"));
        request_host(&req).into_owned()
    }

    fn on_headers(headers: Vec<HeaderMatcher>) -> Matcher {
        Matcher {
            uri: None,
            ignore_uri_case: false,
            scheme: None,
            method: None,
            authority: None,
            headers,
            query: Vec::new(),
        }
    }

    fn header(name: &str, value: Option<StrMatch>, invert: bool) -> HeaderMatcher {
        HeaderMatcher {
            name: name.into(),
            key: http::HeaderName::from_bytes(name.as_bytes()).ok(),
            value,
            invert,
            treat_missing_as_empty: false,
        }
    }

    #[test]
    fn header_matches_read_every_value_joined_and_the_pseudo_headers_as_envoy_does() {
        let down = crate::proxy::tests::downstream();
        let req = Request::post("http://api.example:8080/p?q=1")
            .header("end-user", "jason")
            .header("x-tag", "a")
            .header("x-tag", "b")
            .body(())
            .unwrap_or_else(|e| panic!("{e}"));
        let exact = |v: &str| Some(StrMatch::Exact(v.into()));
        let takes = |h: HeaderMatcher| matches(&on_headers(vec![h]), &req, &down, &mut Seen::default());
        assert!(takes(header("end-user", exact("jason"), false)));
        assert!(!takes(header("end-user", exact("jasonx"), false)));
        // Presence, and its inversion (`withoutHeaders`).
        assert!(takes(header("end-user", None, false)));
        assert!(!takes(header("end-user", None, true)));
        assert!(takes(header("x-absent", None, true)));
        assert!(!takes(header("x-absent", None, false)));
        // A repeated header is every value joined by `,`.
        assert!(takes(header("x-tag", exact("a,b"), false)));
        assert!(!takes(header("x-tag", exact("a"), false)));
        // Pseudo-headers.
        assert!(takes(header(":method", exact("POST"), false)));
        assert!(takes(header(":authority", exact("api.example:8080"), false)));
        assert!(takes(header(":scheme", exact("https"), false)));
        assert!(takes(header(":path", exact("/p?q=1"), false)));
        // A missing header compared as empty, when asked to.
        let mut empty = header("x-absent", exact(""), false);
        assert!(!takes(header("x-absent", exact(""), false)));
        empty.treat_missing_as_empty = true;
        assert!(takes(empty));
    }

    #[test]
    fn one_seen_carries_each_header_from_route_to_route_without_mixing_them_up() {
        let down = crate::proxy::tests::downstream();
        let req = Request::get("/")
            .header("x-route", "r7")
            .header("x-tag", "a")
            .header("x-tag", "b")
            .body(())
            .unwrap_or_else(|e| panic!("{e}"));
        let exact = |v: &str| Some(StrMatch::Exact(v.into()));
        let table = [
            on_headers(vec![header("x-route", exact("r1"), false)]),
            on_headers(vec![header("x-absent", None, false)]),
            on_headers(vec![header("x-tag", exact("a,b"), false)]),
            on_headers(vec![header("x-route", exact("r7"), false)]),
            on_headers(vec![header("x-absent", None, true)]),
            on_headers(vec![header("x-tag", exact("r7"), false)]),
            on_headers(vec![header("x-route", exact("a,b"), false)]),
        ];
        let mut seen = Seen::default();
        let taken: Vec<bool> = table.iter().map(|m| matches(m, &req, &down, &mut seen)).collect();
        assert_eq!(taken, [false, false, true, true, true, false, false]);
        // Three names, each looked up once.
        assert_eq!(seen.values.len(), 3);
    }

    #[test]
    fn past_the_first_names_a_seen_keeps_none_and_still_answers_each() {
        let names: Vec<String> = (0..SEEN + 4).map(|i| format!("x-h{i}")).collect();
        let mut req = Request::get("/");
        for (i, name) in names.iter().enumerate() {
            req = req.header(name.as_str(), format!("v{i}"));
        }
        let req = req.body(()).unwrap_or_else(|e| panic!("{e}"));
        let keys: Vec<http::HeaderName> = names
            .iter()
            .map(|n| http::HeaderName::from_bytes(n.as_bytes()).expect("a name"))
            .collect();
        let absent = http::HeaderName::from_static("x-absent");
        let mut seen = Seen::default();
        for round in 0..2 {
            for (i, key) in keys.iter().enumerate() {
                assert_eq!(
                    seen.value(&req, key),
                    Some(format!("v{i}").as_str()),
                    "round {round}, {key}"
                );
            }
            assert_eq!(seen.value(&req, &absent), None);
        }
        assert_eq!(seen.values.len(), SEEN);
    }

    #[test]
    fn every_condition_of_a_match_must_hold_uri_scheme_method_authority_and_query() {
        let down = crate::proxy::tests::downstream();
        let req = Request::post("http://api.example:8080/v1/items?q=1&flag&x=2")
            .body(())
            .unwrap_or_else(|e| panic!("{e}"));
        let exact = |v: &str| Some(StrMatch::Exact(v.into()));
        let regex = |r: &str| Some(StrMatch::Regex(crate::compile::full_regex(r, false).expect("a regex")));
        let takes = |m: Matcher| matches(&m, &req, &down, &mut Seen::default());
        let any = || on_headers(Vec::new());
        assert!(takes(any()));
        for (uri, hit) in [
            (Some(StrMatch::Prefix("/v1".into())), true),
            (Some(StrMatch::Prefix("/v2".into())), false),
            (regex("/v[0-9]+/items"), true),
            (regex("/v[0-9]+"), false),
        ] {
            let text = format!("{uri:?}");
            assert_eq!(takes(Matcher { uri, ..any() }), hit, "{text}");
        }
        for (v, hit) in [("https", true), ("http", false)] {
            assert_eq!(
                takes(Matcher {
                    scheme: exact(v),
                    ..any()
                }),
                hit,
                "scheme {v}"
            );
        }
        for (v, hit) in [("POST", true), ("GET", false)] {
            assert_eq!(
                takes(Matcher {
                    method: exact(v),
                    ..any()
                }),
                hit,
                "method {v}"
            );
        }
        for (v, hit) in [("api.example:8080", true), ("api.example", false)] {
            assert_eq!(
                takes(Matcher {
                    authority: exact(v),
                    ..any()
                }),
                hit,
                "authority {v}"
            );
        }
        // Query parameters: each by name, a value matched, or present with any value.
        let query = |q: Vec<(&str, Option<StrMatch>)>| Matcher {
            query: q.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            ..any()
        };
        assert!(takes(query(vec![("q", exact("1")), ("x", exact("2"))])));
        assert!(takes(query(vec![("flag", None)])));
        assert!(takes(query(vec![("flag", exact(""))])));
        assert!(!takes(query(vec![("q", exact("2"))])));
        assert!(!takes(query(vec![("q", exact("1")), ("x", exact("3"))])));
        assert!(!takes(query(vec![("missing", None)])));
        // A regex uri is tried last, and still decides.
        let m = Matcher {
            uri: regex("/v[0-9]+/items"),
            method: exact("POST"),
            ..any()
        };
        assert!(takes(m));
        let m = Matcher {
            uri: regex("/nope"),
            method: exact("POST"),
            ..any()
        };
        assert!(!takes(m));
    }

    #[test]
    fn the_request_host_is_lowercase_without_a_numeric_port() {
        assert_eq!(host_of("Example.COM:8080"), "example.com");
        assert_eq!(host_of("example.com"), "example.com");
        assert_eq!(host_of("WEB.Example"), "web.example");
        assert_eq!(host_of("[::1]:80"), "::1");
        // As Envoy strips it: only a number after the last colon is a port.
        assert_eq!(host_of("example.com:http"), "example.com:http");
        // An absolute-form URI's authority wins over Host.
        let req = Request::get("http://Other.example:81/x")
            .header("host", "example.com")
            .body(())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(request_host(&req), "other.example");
        assert_eq!(authority(&req), "Other.example:81");
    }
}
