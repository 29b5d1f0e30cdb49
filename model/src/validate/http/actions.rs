//! The answers a rule gives without a destination, and its rewrite: redirect, rewrite, direct
//! response.

use super::super::common;
use super::super::Sink;
use crate::api::virtual_service::{HttpDirectResponse, HttpMatchRequest, HttpRedirect, HttpRewrite};
use crate::diag::Code;

pub(super) fn redirect(s: &mut Sink, path: &str, r: &HttpRedirect, matches: &[HttpMatchRequest]) {
    if r.uri.is_some() && r.prefix_rewrite.is_some() {
        s.error(
            Code::InvalidRedirect,
            path,
            "`uri` and `prefixRewrite` cannot both be set",
            "keep one of them",
        );
    }
    // A match without `uri` matches every path, as `prefix: /` does.
    if r.prefix_rewrite.is_some()
        && !matches
            .iter()
            .all(|m| m.uri.as_ref().is_none_or(|u| u.prefix.is_some()))
    {
        s.error(
            Code::InvalidRedirect,
            &format!("{path}.prefixRewrite"),
            "prefixRewrite needs every `uri` match of the rule to be a `uri.prefix` match",
            "use `uri: {prefix: …}` in the matches that have a uri, or `redirect.uri`",
        );
    }
    if r.uri.is_none()
        && r.authority.is_none()
        && r.scheme.is_none()
        && r.port.is_none()
        && r.derive_port.is_none()
        && r.prefix_rewrite.is_none()
    {
        s.error(
            Code::InvalidRedirect,
            path,
            "the redirect changes nothing",
            "set at least one of uri, authority, scheme, port, derivePort or prefixRewrite",
        );
    }
    if let Some(code) = r.redirect_code {
        if !(300..=399).contains(&code) {
            s.error(
                Code::InvalidRedirect,
                &format!("{path}.redirectCode"),
                format!("redirect code {code} is not a 3xx code"),
                "use 301, 302, 303, 307 or 308",
            );
        } else if !matches!(code, 301 | 302 | 303 | 307 | 308) {
            let msg = format!("redirect code {code} is not one the gateway can send; the route is dropped");
            s.warn(
                Code::InvalidRedirect,
                &format!("{path}.redirectCode"),
                msg,
                "use 301, 302, 303, 307 or 308",
            );
        }
    }
    if let Some(scheme) = &r.scheme {
        if scheme != "http" && scheme != "https" {
            s.error(
                Code::InvalidRedirect,
                &format!("{path}.scheme"),
                format!("scheme `{scheme}` is not `http` or `https`"),
                "use `http` or `https`",
            );
        }
    }
    if let Some(p) = r.port {
        common::port(s, &format!("{path}.port"), p);
        if r.derive_port.is_some() {
            s.error(
                Code::InvalidRedirect,
                &format!("{path}.derivePort"),
                "`port` and `derivePort` cannot both be set",
                "keep one of them",
            );
        }
    }
}

pub(super) fn rewrite(s: &mut Sink, path: &str, r: &HttpRewrite) {
    if r.uri.is_some() && r.uri_regex_rewrite.is_some() {
        s.error(
            Code::InvalidRewrite,
            path,
            "`uri` and `uriRegexRewrite` cannot both be set",
            "keep one of them",
        );
    }
    if r.uri.is_none() && r.authority.is_none() && r.uri_regex_rewrite.is_none() {
        s.error(
            Code::InvalidRewrite,
            path,
            "the rewrite changes nothing",
            "set uri, authority or uriRegexRewrite",
        );
    }
    if let Some(rr) = &r.uri_regex_rewrite {
        if rr.pattern.is_empty() || rr.rewrite.is_empty() {
            s.error(
                Code::InvalidRewrite,
                &format!("{path}.uriRegexRewrite"),
                "uriRegexRewrite needs both `match` and `rewrite`",
                "set both, e.g. `{match: '^/v1/(.*)', rewrite: '/\\1'}`",
            );
        } else {
            common::regex(s, &format!("{path}.uriRegexRewrite.match"), &rr.pattern);
        }
    }
}

pub(super) fn direct_response(s: &mut Sink, path: &str, d: &HttpDirectResponse) {
    if !(200..=599).contains(&d.status) {
        s.error(
            Code::InvalidDirectResponse,
            &format!("{path}.status"),
            format!("status {} is not in 200..599", d.status),
            "use an HTTP status between 200 and 599",
        );
    }
    let Some(body) = &d.body else { return };
    if body.string.is_some() && body.bytes.is_some() {
        s.error(
            Code::InvalidDirectResponse,
            &format!("{path}.body"),
            "body sets both `string` and `bytes`",
            "keep one of them",
        );
    }
    let len = body.string.as_ref().map_or(0, String::len) + body.bytes.as_ref().map_or(0, |b| b.len() * 3 / 4);
    if len > 1024 * 1024 {
        s.error(
            Code::InvalidDirectResponse,
            &format!("{path}.body"),
            format!("body is {len} bytes; the limit is 1 MB"),
            "serve large bodies from a backend",
        );
    } else if len > 100 * 1024 {
        s.warn(
            Code::InvalidDirectResponse,
            &format!("{path}.body"),
            format!("body is {len} bytes; bodies over 100 KB are discouraged"),
            "serve large bodies from a backend",
        );
    }
}
