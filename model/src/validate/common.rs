//! Checks shared by every resource: ports, durations, percentages, regexes, string matches,
//! labels, exportTo, names (`pkg/config/validation/agent/validation.go` and friends).

use super::Sink;
use crate::api::{Duration, Labels, Percent, StringMatch};
use crate::diag::Code;
use crate::host;

pub fn port(s: &mut Sink, path: &str, n: u32) {
    if !(1..=65535).contains(&n) {
        s.error(
            Code::InvalidPort,
            path,
            format!("port number {n} is not in 1..65535"),
            "use a port between 1 and 65535",
        );
    }
}

/// Istio's `ValidateDuration`: at least 1ms and a whole number of milliseconds.
pub fn duration(s: &mut Sink, path: &str, d: Duration) {
    let d = d.as_std();
    if d < std::time::Duration::from_millis(1) {
        s.error(
            Code::InvalidDuration,
            path,
            format!("duration {d:?} is shorter than 1ms"),
            "use at least `1ms`",
        );
    } else if !d.subsec_nanos().is_multiple_of(1_000_000) {
        let msg = format!("duration {d:?} is not a whole number of milliseconds");
        s.error(
            Code::InvalidDuration,
            path,
            msg,
            "round it to milliseconds, e.g. `1.5s` or `250ms`",
        );
    }
}

/// `Percent`: 0, or within [0.0001, 100].
pub fn percent(s: &mut Sink, path: &str, p: Percent) {
    let v = p.value;
    if v != 0.0 && !(0.0001..=100.0).contains(&v) {
        let msg = format!("percentage {v} is not 0 and not within [0.0001, 100]");
        s.error(
            Code::InvalidPercent,
            path,
            msg,
            "use a value between 0.0001 and 100, or 0 for none",
        );
    }
}

pub fn int_percent(s: &mut Sink, path: &str, v: i32) {
    if !(0..=100).contains(&v) {
        s.error(
            Code::InvalidPercent,
            path,
            format!("percentage {v} is not in 0..100"),
            "use a value between 0 and 100",
        );
    }
}

/// RE2 syntax (the `regex` crate accepts the same language), at most 1024 characters.
pub fn regex(s: &mut Sink, path: &str, re: &str) {
    if re.len() > 1024 {
        let msg = format!("regex is {} characters long; Istio allows 1024", re.len());
        s.error(Code::InvalidRegex, path, msg, "shorten the expression");
    } else if let Err(e) = regex::Regex::new(re) {
        let first = e.to_string().lines().last().unwrap_or("").trim().to_string();
        let msg = format!("`{re}` is not a valid RE2 regular expression: {first}");
        s.error(
            Code::InvalidRegex,
            path,
            msg,
            "fix the expression; RE2 has no backreferences or lookaround",
        );
    }
}

/// A StringMatch: one of exact/prefix/regex; an empty prefix is allowed only for `uri`.
pub fn string_match(s: &mut Sink, path: &str, m: &StringMatch, allow_empty_prefix: bool) {
    if m.set_count() > 1 {
        let msg = "a string match sets more than one of `exact`, `prefix` and `regex`";
        s.error(Code::InvalidStringMatch, path, msg, "keep exactly one of them");
    }
    if m.prefix.as_deref() == Some("") && !allow_empty_prefix {
        s.error(
            Code::InvalidStringMatch,
            &format!("{path}.prefix"),
            "`prefix` is empty",
            "remove the match, or use `{}` for a presence match",
        );
    }
    match m.regex.as_deref() {
        Some("") => s.error(
            Code::InvalidStringMatch,
            &format!("{path}.regex"),
            "`regex` is empty",
            "write a regex, e.g. `.*`",
        ),
        Some("*") => {} // Istio's presence form.
        Some(re) => regex(s, &format!("{path}.regex"), re),
        None => {}
    }
}

/// Kubernetes label keys and values.
pub fn labels(s: &mut Sink, path: &str, labels: &Labels) {
    for (k, v) in labels {
        if let Err(why) = check_label_key(k) {
            s.error(
                Code::InvalidLabel,
                &format!("{path}.{k}"),
                format!("label key `{k}` is invalid: {why}"),
                "use `name` or `prefix/name` with letters, digits, `-`, `_` and `.`",
            );
        }
        if !v.is_empty() && !is_label_name(v) {
            let msg = format!("label value `{v}` of `{k}` is invalid");
            s.error(
                Code::InvalidLabel,
                &format!("{path}.{k}"),
                msg,
                "use at most 63 letters, digits, `-`, `_` and `.`, starting and ending alphanumeric",
            );
        }
    }
}

fn is_label_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && s.as_bytes().first().is_some_and(u8::is_ascii_alphanumeric)
        && s.as_bytes().last().is_some_and(u8::is_ascii_alphanumeric)
}

fn check_label_key(k: &str) -> Result<(), &'static str> {
    let (prefix, name) = match k.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    if prefix.is_some_and(|p| !host::is_dns_subdomain(p)) {
        return Err("the prefix is not a DNS subdomain");
    }
    if !is_label_name(name) {
        return Err("the name must be 1..63 letters, digits, `-`, `_` or `.`, starting and ending alphanumeric");
    }
    Ok(())
}

/// exportTo: no duplicates (`.` counts as the own namespace), `*` alone, `~` alone and only for
/// ServiceEntries, other entries DNS labels.
pub fn export_to(s: &mut Sink, path: &str, list: &[String], service_entry: bool) {
    let own = s.res.namespace().to_string();
    let mut seen: Vec<String> = Vec::new();
    for (i, e) in list.iter().enumerate() {
        let p = format!("{path}[{i}]");
        let normal = if e == "." { own.clone() } else { e.clone() };
        if seen.contains(&normal) {
            s.error(
                Code::InvalidExportTo,
                &p,
                format!("`{e}` is listed twice in exportTo"),
                "list each namespace once (`.` is the resource's own namespace)",
            );
        }
        seen.push(normal);
        match e.as_str() {
            "." => {}
            "*" | "~" if list.len() > 1 => {
                s.error(
                    Code::InvalidExportTo,
                    &p,
                    format!("`{e}` must be the only exportTo entry"),
                    "remove the other entries",
                );
            }
            "*" => {}
            "~" if !service_entry => {
                s.error(
                    Code::InvalidExportTo,
                    &p,
                    "`~` is allowed only in a ServiceEntry's exportTo",
                    "use `.` or a namespace name",
                );
            }
            "~" => {}
            ns if !host::is_dns_label(ns) => {
                s.error(
                    Code::InvalidExportTo,
                    &p,
                    format!("`{ns}` is not a namespace name"),
                    "use `.`, `*` or a namespace name (a DNS label)",
                );
            }
            _ => {}
        }
    }
}

pub fn dns_label(s: &mut Sink, path: &str, name: &str, what: &str) {
    if !host::is_dns_label(name) {
        let msg = format!("{what} `{name}` is not a DNS-1123 label");
        s.error(
            Code::InvalidName,
            path,
            msg,
            "use at most 63 lowercase letters, digits and `-`, starting and ending alphanumeric",
        );
    }
}

/// An HTTP header name: RFC 7230 token characters, lowercase or not.
pub fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// An IP or a CIDR (`10.0.0.0/8`, `::1/128`).
pub fn is_ip_or_cidr(s: &str) -> bool {
    match s.split_once('/') {
        None => s.parse::<std::net::IpAddr>().is_ok(),
        Some((ip, bits)) => match (ip.parse::<std::net::IpAddr>(), bits.parse::<u8>()) {
            (Ok(std::net::IpAddr::V4(_)), Ok(b)) => b <= 32,
            (Ok(std::net::IpAddr::V6(_)), Ok(b)) => b <= 128,
            _ => false,
        },
    }
}
