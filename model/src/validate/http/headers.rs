//! Header operations on a rule and its destinations: names, values (Envoy's `%` syntax), and
//! what Istio forbids touching.

use super::super::common;
use super::super::Sink;
use crate::api::virtual_service::{HeaderOperations, Headers};
use crate::diag::Code;

pub(super) fn authority_set_count(h: Option<&Headers>) -> usize {
    let Some(req) = h.and_then(|h| h.request.as_ref()) else {
        return 0;
    };
    req.set.keys().chain(req.add.keys()).filter(|k| is_authority(k)).count()
}

fn is_authority(k: &str) -> bool {
    k.eq_ignore_ascii_case(":authority") || k.eq_ignore_ascii_case("host")
}

pub fn headers(s: &mut Sink, path: &str, h: Option<&Headers>) {
    let Some(h) = h else { return };
    if let Some(req) = &h.request {
        header_ops(s, &format!("{path}.request"), req, false);
    }
    if let Some(resp) = &h.response {
        header_ops(s, &format!("{path}.response"), resp, true);
    }
}

fn header_ops(s: &mut Sink, path: &str, ops: &HeaderOperations, response: bool) {
    for (op, map) in [("set", &ops.set), ("add", &ops.add)] {
        for (k, v) in map {
            let p = format!("{path}.{op}.{k}");
            if response && (is_authority(k) || k.starts_with(':')) {
                s.error(
                    Code::InvalidHeader,
                    &p,
                    format!("`{k}` cannot be set on a response"),
                    "remove it; Host and pseudo-headers are request-only",
                );
            } else if k.starts_with(':') && !k.eq_ignore_ascii_case(":authority") {
                s.error(
                    Code::InvalidHeader,
                    &p,
                    format!("pseudo-header `{k}` cannot be modified"),
                    "only `:authority` (or Host) may be set",
                );
            } else if !k.starts_with(':') && !common::is_header_name(k) {
                s.error(
                    Code::InvalidHeader,
                    &p,
                    format!("`{k}` is not a valid header name"),
                    "use letters, digits and `-`",
                );
            }
            if let Err(why) = check_header_value(v) {
                s.error(
                    Code::InvalidHeader,
                    &p,
                    format!("header value `{v}` is invalid: {why}"),
                    "write a literal `%` as `%%`",
                );
            }
        }
    }
    for (i, k) in ops.remove.iter().enumerate() {
        let p = format!("{path}.remove[{i}]");
        if is_authority(k) || k.starts_with(':') {
            s.error(
                Code::InvalidHeader,
                &p,
                format!("`{k}` cannot be removed"),
                "Host and pseudo-headers cannot be removed",
            );
        } else if !common::is_header_name(k) {
            s.error(
                Code::InvalidHeader,
                &p,
                format!("`{k}` is not a valid header name"),
                "use letters, digits and `-`",
            );
        }
    }
}

/// Envoy's header value syntax: `%%` is a literal `%`; `%NAME%` or `%NAME(arg)%` is a variable.
fn check_header_value(v: &str) -> Result<(), String> {
    let mut rest = v;
    while let Some(i) = rest.find('%') {
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('%') {
            rest = stripped;
            continue;
        }
        let Some(end) = after.find('%') else {
            return Err("an unescaped `%`".into());
        };
        let var = &after[..end];
        let name = var.split('(').next().unwrap_or("");
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(format!("`%{var}%` is not a variable"));
        }
        rest = &after[end + 1..];
    }
    Ok(())
}
