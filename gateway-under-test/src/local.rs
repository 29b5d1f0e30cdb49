//! Answers the gateway gives without an upstream: redirects (Istio's port and scheme rules),
//! https redirects, direct responses, fault injection, and CORS preflights and headers.

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use mesh_model::api::virtual_service::CorsPolicy;
use mesh_model::plan::{RedirectPlan, RedirectPort, Route, RouteAction};

use crate::compile::{CompiledRoute, StrMatch};
use crate::context::{full, Body, Downstream, Outcome};
use crate::errors::{reply, Failure};
use crate::matching::{authority, request_host};
use crate::names;

pub(crate) fn https_redirect<B>(req: &Request<B>) -> String {
    let host = request_host(req);
    let pq = req.uri().path_and_query().map_or("/".to_string(), |p| p.to_string());
    format!("https://{host}{pq}")
}

pub(crate) fn redirect_response(location: &str) -> Response<Body> {
    let mut r = Response::new(full(Bytes::new()));
    *r.status_mut() = StatusCode::MOVED_PERMANENTLY;
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(names::LOCATION, v);
    }
    r
}

/// Phase 6: redirect, direct response, fault injection. None: go upstream.
pub(crate) async fn local_actions<B>(
    r: &CompiledRoute,
    req: &Request<B>,
    down: &Downstream,
    grpc: bool,
    out: &mut Outcome,
) -> Option<Response<Body>> {
    match &r.route.action {
        RouteAction::Redirect(rd) => {
            out.details = "direct_response".into();
            let mut resp = redirect_response(&redirect_location(rd, req, down, &r.route));
            *resp.status_mut() = StatusCode::from_u16(rd.code).unwrap_or(StatusCode::MOVED_PERMANENTLY);
            return Some(resp);
        }
        RouteAction::DirectResponse {
            status,
            body,
            body_base64,
        } => {
            out.details = "direct_response".into();
            let bytes = match (body, body_base64) {
                (Some(s), _) => Bytes::from(s.clone()),
                (None, Some(b)) => {
                    use base64::Engine;
                    Bytes::from(base64::engine::general_purpose::STANDARD.decode(b).unwrap_or_default())
                }
                (None, None) => Bytes::new(),
            };
            let mut resp = Response::new(full(bytes));
            *resp.status_mut() = StatusCode::from_u16(*status).unwrap_or(StatusCode::OK);
            return Some(resp);
        }
        RouteAction::Route { .. } => {}
    }
    let fault = r.route.fault.as_ref()?;
    if let Some(d) = fault.delay.as_ref().filter(|d| chance(d.percentage)) {
        tokio::time::sleep(d.delay.as_std()).await;
        out.flags = "DI".into();
    }
    if let Some(a) = fault.abort.as_ref().filter(|a| chance(a.percentage)) {
        let f = Failure::FaultAbort {
            http: a.http_status,
            grpc: a
                .grpc_status
                .as_deref()
                .map(mesh_model::api::virtual_service::grpc_status_code),
        };
        out.flags = if out.flags.is_empty() {
            "FI".into()
        } else {
            format!("{},FI", out.flags)
        };
        out.details = f.details();
        let grpc_reply = grpc || a.grpc_status.is_some();
        return Some(reply(&f, grpc_reply));
    }
    None
}

pub(crate) fn chance(percentage: f64) -> bool {
    percentage >= 100.0 || fastrand::f64() * 100.0 < percentage
}

/// Istio's redirect: scheme, host, port rules, path or prefix rewrite, query kept.
pub(crate) fn redirect_location<B>(rd: &RedirectPlan, req: &Request<B>, down: &Downstream, route: &Route) -> String {
    let scheme = rd.scheme.clone().unwrap_or_else(|| down.scheme.to_string());
    let sent = authority(req);
    let sent_port = sent.rsplit_once(':').and_then(|(_, p)| p.parse::<u32>().ok());
    let host = rd.host.clone().unwrap_or_else(|| request_host(req).into_owned());
    let default_port = if scheme == "https" { 443 } else { 80 };
    let port = match rd.port {
        RedirectPort::Keep => {
            if rd.host.is_some() {
                None
            } else {
                sent_port
            }
        }
        RedirectPort::Fixed(p) => (p != default_port).then_some(p),
        RedirectPort::FromRequestPort => (down.port != default_port || sent_port.is_some()).then_some(down.port),
        RedirectPort::FromProtocolDefault => None,
    };
    let path = req.uri().path();
    let new_path = match (&rd.path, &rd.prefix_rewrite) {
        (Some(p), _) => p.clone(),
        (None, Some(prefix)) => {
            let matched = route
                .matcher
                .uri
                .as_ref()
                .and_then(|u| u.prefix.as_deref())
                .unwrap_or("/");
            format!("{prefix}{}", path.strip_prefix(matched).unwrap_or(path))
        }
        (None, None) => path.to_string(),
    };
    let query = match (req.uri().query(), new_path.contains('?')) {
        (Some(q), false) => format!("?{q}"),
        _ => String::new(),
    };
    let port = port.map(|p| format!(":{p}")).unwrap_or_default();
    format!("{scheme}://{host}{port}{new_path}{query}")
}

/// Envoy's CORS filter: an origin is allowed when one of the route's matchers matches it, or
/// matches `*` (so `exact: "*"`, or a regex `.*`, allows every origin).
pub(crate) fn origin_allowed(origins: &[StrMatch], origin: &str) -> bool {
    origins.iter().any(|m| m.matches("*") || m.matches(origin))
}

pub(crate) fn is_preflight<B>(req: &Request<B>) -> bool {
    req.method() == Method::OPTIONS && req.headers().contains_key(names::ACCESS_CONTROL_REQUEST_METHOD)
}

pub(crate) fn set(h: &mut HeaderMap, k: HeaderName, v: &str) {
    if let Ok(v) = HeaderValue::from_str(v) {
        h.insert(k, v);
    }
}

pub(crate) fn preflight(c: &CorsPolicy, origin: &str) -> Response<Body> {
    let mut r = Response::new(full(Bytes::new()));
    let h = r.headers_mut();
    set(h, names::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    if !c.allow_methods.is_empty() {
        set(h, names::ACCESS_CONTROL_ALLOW_METHODS, &c.allow_methods.join(","));
    }
    if !c.allow_headers.is_empty() {
        set(h, names::ACCESS_CONTROL_ALLOW_HEADERS, &c.allow_headers.join(","));
    }
    if let Some(age) = c.max_age {
        set(h, names::ACCESS_CONTROL_MAX_AGE, &age.as_std().as_secs().to_string());
    }
    if c.allow_credentials == Some(true) {
        set(h, names::ACCESS_CONTROL_ALLOW_CREDENTIALS, "true");
    }
    r
}

pub(crate) fn cors_headers(c: &CorsPolicy, origin: &str, h: &mut HeaderMap) {
    set(h, names::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    if !c.expose_headers.is_empty() {
        set(h, names::ACCESS_CONTROL_EXPOSE_HEADERS, &c.expose_headers.join(","));
    }
    if c.allow_credentials == Some(true) {
        set(h, names::ACCESS_CONTROL_ALLOW_CREDENTIALS, "true");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(s: &str) -> StrMatch {
        StrMatch::Exact(s.into())
    }

    #[test]
    fn an_origin_is_allowed_by_a_matcher_of_it_or_of_a_star_as_envoy_allows_it() {
        let regex = |r: &str| StrMatch::Regex(crate::compile::full_regex(r, false).expect("a regex"));
        let some = [
            exact("https://a.example"),
            StrMatch::Prefix("http://p.".into()),
            regex(r"https://[a-z]+\.b\.example"),
        ];
        for allowed in ["https://a.example", "http://p.example", "https://x.b.example"] {
            assert!(origin_allowed(&some, allowed), "{allowed}");
        }
        for refused in [
            "https://a.example.evil",
            "https://p.example",
            "https://x.b.example.evil",
            "*",
        ] {
            assert!(!origin_allowed(&some, refused), "{refused}");
        }
        // A matcher that matches `*` allows every origin, whatever else it matches.
        assert!(origin_allowed(
            &[exact("https://a.example"), exact("*")],
            "https://z.example"
        ));
        assert!(origin_allowed(&[regex(".*")], "https://z.example"));
        assert!(origin_allowed(&[regex(r"\*|https://q\.example")], "https://z.example"));
        assert!(!origin_allowed(&[], "https://a.example"));
    }
}
