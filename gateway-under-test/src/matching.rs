//! Route matching: does a compiled match take a request (uri, scheme, method, authority,
//! headers with pseudo-headers and inverted forms, query parameters)? And the request's host.

use http::Request;

use crate::compile::Matcher;
use crate::proxy::Downstream;

/// The authority as the client sent it (with its port, if any).
pub(crate) fn authority(req: &Request<hyper::body::Incoming>) -> String {
    req.uri()
        .authority()
        .map(|a| a.to_string())
        .or_else(|| {
            req.headers()
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_default()
}

/// Lowercase host without the port: gateways ignore the port in host matching.
pub(crate) fn request_host(req: &Request<hyper::body::Incoming>) -> String {
    let a = authority(req).to_ascii_lowercase();
    if let Some(rest) = a.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("").to_string();
    }
    a.rsplit_once(':')
        .filter(|(_, p)| p.chars().all(|c| c.is_ascii_digit()))
        .map_or(a.clone(), |(h, _)| h.to_string())
}

/// Phase 4: does this route's match take the request?
pub(crate) fn matches(m: &Matcher, req: &Request<hyper::body::Incoming>, down: &Downstream) -> bool {
    let path = req.uri().path();
    if let Some(u) = &m.uri {
        let p = if m.ignore_uri_case {
            path.to_ascii_lowercase()
        } else {
            path.to_string()
        };
        if !u.matches(&p) {
            return false;
        }
    }
    if m.scheme.as_ref().is_some_and(|s| !s.matches(down.scheme))
        || m.method.as_ref().is_some_and(|s| !s.matches(req.method().as_str()))
    {
        return false;
    }
    if m.authority.as_ref().is_some_and(|s| !s.matches(&authority(req))) {
        return false;
    }
    for h in &m.headers {
        let value: Option<String> = match h.name.as_str() {
            ":method" => Some(req.method().to_string()),
            ":authority" => Some(authority(req)),
            ":scheme" => Some(down.scheme.to_string()),
            ":path" => req.uri().path_and_query().map(|p| p.to_string()),
            name => {
                let all: Vec<&str> = req
                    .headers()
                    .get_all(name)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .collect();
                (!all.is_empty()).then(|| all.join(","))
            }
        };
        let value = if h.treat_missing_as_empty {
            Some(value.unwrap_or_default())
        } else {
            value
        };
        let hit = match (&h.value, value) {
            (None, v) => v.is_some(),
            (Some(_), None) => false,
            (Some(sm), Some(v)) => sm.matches(&v),
        };
        if hit == h.invert {
            return false;
        }
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
