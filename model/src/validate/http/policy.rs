//! What a rule does to the traffic it routes: fault injection, retries, CORS, mirrors.

use super::super::common;
use super::super::Sink;
use super::destination;
use crate::api::virtual_service::GRPC_STATUS_NAMES;
use crate::api::virtual_service::{CorsPolicy, HttpFaultInjection, HttpRetry, HttpRoute};
use crate::diag::Code;

pub(super) fn fault(s: &mut Sink, path: &str, f: &HttpFaultInjection) {
    if f.abort.is_none() && f.delay.is_none() {
        s.error(
            Code::InvalidFault,
            path,
            "a fault needs `abort` or `delay`",
            "add `abort: {httpStatus: 503, percentage: {value: 100}}` or a delay",
        );
    }
    if let Some(a) = &f.abort {
        let ap = format!("{path}.abort");
        if a.http2_error.is_some() {
            s.error(
                Code::InvalidFault,
                &format!("{ap}.http2Error"),
                "http2Error aborts are not supported",
                "use httpStatus or grpcStatus",
            );
        }
        match (a.http_status, &a.grpc_status) {
            (Some(_), Some(_)) => s.error(
                Code::InvalidFault,
                &ap,
                "abort sets both httpStatus and grpcStatus",
                "keep one of them",
            ),
            (Some(code), None) if !(200..=599).contains(&code) => s.error(
                Code::InvalidFault,
                &format!("{ap}.httpStatus"),
                format!("abort status {code} is not in 200..599"),
                "use an HTTP status between 200 and 599",
            ),
            (None, Some(g)) if !GRPC_STATUS_NAMES.contains(&g.as_str()) => {
                let hint = match crate::diag::did_you_mean(g, GRPC_STATUS_NAMES.iter().copied()) {
                    Some(b) => format!("did you mean `{b}`?"),
                    None => format!("use one of {}", GRPC_STATUS_NAMES.join(", ")),
                };
                s.error(
                    Code::InvalidFault,
                    &format!("{ap}.grpcStatus"),
                    format!("`{g}` is not a gRPC status name"),
                    &hint,
                );
            }
            (None, None) if a.http2_error.is_none() => s.error(
                Code::InvalidFault,
                &ap,
                "abort needs httpStatus or grpcStatus",
                "add `httpStatus: 503`",
            ),
            _ => {}
        }
        fault_percentage(s, &ap, a.percentage, None);
    }
    if let Some(d) = &f.delay {
        let dp = format!("{path}.delay");
        if d.exponential_delay.is_some() {
            s.error(
                Code::InvalidFault,
                &format!("{dp}.exponentialDelay"),
                "exponentialDelay is not supported",
                "use fixedDelay",
            );
        }
        match d.fixed_delay {
            Some(t) => common::duration(s, &format!("{dp}.fixedDelay"), t),
            // Istio accepts it and drops the delay when it builds Envoy's config.
            None if d.exponential_delay.is_none() => s.warn(
                Code::InvalidFault,
                &dp,
                "a delay without fixedDelay has no effect",
                "add `fixedDelay: 5s`",
            ),
            None => {}
        }
        fault_percentage(s, &dp, d.percentage, d.percent);
    }
}

fn fault_percentage(s: &mut Sink, path: &str, p: Option<crate::api::Percent>, legacy: Option<i32>) {
    if let Some(p) = p {
        common::percent(s, &format!("{path}.percentage"), p);
    }
    if let Some(v) = legacy {
        common::int_percent(s, &format!("{path}.percent"), v);
    }
    if p.is_none() && legacy.is_none() {
        s.warn(
            Code::InvalidFault,
            path,
            "no percentage is set, so this fault is never injected",
            "add `percentage: {value: 100}` to inject it on every request",
        );
    }
}

/// Envoy retry policies Istio accepts in `retryOn`.
pub const RETRY_ON_POLICIES: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

pub(super) fn retries(s: &mut Sink, path: &str, r: &HttpRetry) {
    let attempts = r.attempts.unwrap_or(0);
    if attempts < 0 {
        s.error(
            Code::InvalidRetry,
            &format!("{path}.attempts"),
            format!("attempts {attempts} is negative"),
            "use 0 to disable retries, or a positive count",
        );
    }
    if attempts == 0 && (r.per_try_timeout.is_some() || r.retry_on.is_some() || r.retry_remote_localities.is_some()) {
        s.error(
            Code::InvalidRetry,
            path,
            "with attempts 0 (retries off) perTryTimeout, retryOn and retryRemoteLocalities cannot be set",
            "set attempts above 0, or remove those fields",
        );
    }
    if let Some(t) = r.per_try_timeout {
        common::duration(s, &format!("{path}.perTryTimeout"), t);
    }
    if let Some(b) = r.backoff {
        common::duration(s, &format!("{path}.backoff"), b);
    }
    for token in r.retry_on.iter().flat_map(|s| s.split(',')).map(str::trim) {
        let is_code = token.parse::<u16>().is_ok_and(|c| (100..=599).contains(&c));
        if !is_code && !RETRY_ON_POLICIES.contains(&token) {
            let hint = match crate::diag::did_you_mean(token, RETRY_ON_POLICIES.iter().copied()) {
                Some(b) => format!("did you mean `{b}`?"),
                None => format!("use HTTP status codes or: {}", RETRY_ON_POLICIES.join(", ")),
            };
            s.error(
                Code::InvalidRetry,
                &format!("{path}.retryOn"),
                format!("`{token}` is not a retry policy or HTTP status code"),
                &hint,
            );
        }
    }
}

const HTTP_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

pub(super) fn cors(s: &mut Sink, path: &str, c: &CorsPolicy) {
    for (i, o) in c.allow_origins.iter().enumerate() {
        let p = format!("{path}.allowOrigins[{i}]");
        if o.set_count() == 0 || [&o.exact, &o.prefix, &o.regex].iter().any(|v| v.as_deref() == Some("")) {
            s.error(
                Code::InvalidCors,
                &p,
                "an allowed origin must not be empty",
                "write e.g. `exact: https://example.com`",
            );
        } else {
            common::string_match(s, &p, o, false);
        }
    }
    for (i, m) in c.allow_methods.iter().enumerate() {
        if !HTTP_METHODS.contains(&m.as_str()) {
            s.error(
                Code::InvalidCors,
                &format!("{path}.allowMethods[{i}]"),
                format!("`{m}` is not an HTTP method"),
                &format!("use one of {}", HTTP_METHODS.join(", ")),
            );
        }
    }
    for (field, list) in [("allowHeaders", &c.allow_headers), ("exposeHeaders", &c.expose_headers)] {
        for (i, h) in list.iter().enumerate() {
            if h != "*" && !common::is_header_name(h) {
                s.error(
                    Code::InvalidCors,
                    &format!("{path}.{field}[{i}]"),
                    format!("`{h}` is not a valid header name"),
                    "use letters, digits and `-`, or `*`",
                );
            }
        }
    }
    if let Some(age) = c.max_age {
        if age.as_std().subsec_nanos() != 0 {
            s.error(
                Code::InvalidCors,
                &format!("{path}.maxAge"),
                "maxAge must be a whole number of seconds",
                "round it to seconds, e.g. `24h` or `86400s`",
            );
        }
    }
}

pub(super) fn mirrors(s: &mut Sink, path: &str, rule: &HttpRoute) {
    if let Some(m) = &rule.mirror {
        destination(s, &format!("{path}.mirror"), Some(m));
    }
    if let Some(p) = rule.mirror_percentage {
        common::percent(s, &format!("{path}.mirrorPercentage"), p);
    }
    if let Some(p) = rule.mirror_percent {
        common::int_percent(s, &format!("{path}.mirrorPercent"), p.min(i32::MAX as u32) as i32);
    }
    for (i, m) in rule.mirrors.iter().enumerate() {
        destination(s, &format!("{path}.mirrors[{i}].destination"), m.destination.as_ref());
        if let Some(p) = m.percentage {
            common::percent(s, &format!("{path}.mirrors[{i}].percentage"), p);
        }
    }
}
