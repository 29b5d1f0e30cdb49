//! One HTTP rule of a VirtualService (`validateHTTPRoute` and the helpers it calls): matches,
//! destinations and weights, headers, redirect, rewrite, direct response, fault, retries, CORS, mirrors.

use super::common;
use super::Sink;
use crate::api::virtual_service::GRPC_STATUS_NAMES;
use crate::api::virtual_service::{
    CorsPolicy, HeaderOperations, Headers, HttpDirectResponse, HttpFaultInjection, HttpMatchRequest, HttpRedirect,
    HttpRetry, HttpRewrite, HttpRoute,
};
use crate::api::Destination;
use crate::diag::Code;
use crate::host;

pub fn validate_rule(s: &mut Sink, path: &str, rule: &HttpRoute, applies_to_mesh: bool) {
    let has_route = !rule.route.is_empty();
    let action_count = [
        has_route,
        rule.redirect.is_some(),
        rule.direct_response.is_some(),
        rule.delegate.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if action_count == 0 {
        s.error(
            Code::VsRule,
            path,
            "the rule has no action",
            "add `route`, `redirect` or `directResponse`",
        );
    }
    if rule.redirect.is_some() {
        exclusive(s, path, "redirect", has_route, "route");
        exclusive(s, path, "redirect", rule.fault.is_some(), "fault");
        exclusive(s, path, "redirect", rule.rewrite.is_some(), "rewrite");
        exclusive(s, path, "redirect", rule.direct_response.is_some(), "directResponse");
    }
    if rule.direct_response.is_some() {
        exclusive(s, path, "directResponse", has_route, "route");
        exclusive(s, path, "directResponse", rule.fault.is_some(), "fault");
        exclusive(s, path, "directResponse", rule.rewrite.is_some(), "rewrite");
    }
    if rule.delegate.is_some() && has_route {
        exclusive(s, path, "delegate", true, "route");
    }
    if rule.mirror.is_some() && !rule.mirrors.is_empty() {
        exclusive(s, path, "mirror", true, "mirrors");
    }
    for (i, m) in rule.matches.iter().enumerate() {
        match_request(s, &format!("{path}.match[{i}]"), m, applies_to_mesh);
    }
    let weights: Vec<i32> = rule.route.iter().map(|r| r.weight).collect();
    check_weights(s, &format!("{path}.route"), &weights);
    let route_authority = authority_set_count(rule.headers.as_ref())
        + rule.rewrite.as_ref().map_or(0, |r| usize::from(r.authority.is_some()));
    if route_authority > 1 {
        s.error(
            Code::InvalidHeader,
            path,
            "the authority (Host) is set more than once in this rule",
            "set it once: in `rewrite.authority` or in `headers.request.set`",
        );
    }
    for (i, r) in rule.route.iter().enumerate() {
        let rp = format!("{path}.route[{i}]");
        destination(s, &format!("{rp}.destination"), r.destination.as_ref());
        headers(s, &format!("{rp}.headers"), r.headers.as_ref());
        if authority_set_count(r.headers.as_ref()) > 1 {
            s.error(
                Code::InvalidHeader,
                &format!("{rp}.headers"),
                "the authority (Host) is set more than once for this destination",
                "set `:authority` or `Host` once",
            );
        }
    }
    headers(s, &format!("{path}.headers"), rule.headers.as_ref());
    if let Some(r) = &rule.redirect {
        redirect(s, &format!("{path}.redirect"), r, &rule.matches);
    }
    if let Some(r) = &rule.rewrite {
        rewrite(s, &format!("{path}.rewrite"), r);
    }
    if let Some(d) = &rule.direct_response {
        direct_response(s, &format!("{path}.directResponse"), d);
    }
    if let Some(t) = rule.timeout {
        common::duration(s, &format!("{path}.timeout"), t);
    }
    if let Some(r) = &rule.retries {
        retries(s, &format!("{path}.retries"), r);
    }
    if let Some(f) = &rule.fault {
        fault(s, &format!("{path}.fault"), f);
    }
    if let Some(c) = &rule.cors_policy {
        cors(s, &format!("{path}.corsPolicy"), c);
    }
    mirrors(s, path, rule);
}

fn exclusive(s: &mut Sink, path: &str, a: &str, b_set: bool, b: &str) {
    if b_set {
        s.error(
            Code::VsRule,
            &format!("{path}.{b}"),
            format!("`{a}` and `{b}` cannot be used in one rule"),
            &format!("keep `{a}` or `{b}`, or split them into two rules"),
        );
    }
}

fn match_request(s: &mut Sink, path: &str, m: &HttpMatchRequest, applies_to_mesh: bool) {
    let fields = [
        ("uri", &m.uri, true),
        ("scheme", &m.scheme, false),
        ("method", &m.method, false),
        ("authority", &m.authority, false),
    ];
    for (name, sm, allow_empty) in fields {
        if let Some(sm) = sm {
            common::string_match(s, &format!("{path}.{name}"), sm, allow_empty);
        }
    }
    for (field, map) in [("headers", &m.headers), ("withoutHeaders", &m.without_headers)] {
        for (k, sm) in map {
            let p = format!("{path}.{field}.{k}");
            if k.starts_with("@request.auth.claims") {
                if applies_to_mesh {
                    s.error(
                        Code::InvalidHeader,
                        &p,
                        "JWT claim matches (`@request.auth.claims.*`) work only on gateways",
                        "bind the VirtualService to a gateway, not `mesh`",
                    );
                }
            } else if !is_match_header_name(k) {
                s.error(
                    Code::InvalidHeader,
                    &p,
                    format!("`{k}` is not a valid header name"),
                    "use letters, digits and `-`; pseudo-headers are `:method`, `:authority`, `:scheme`, `:path`",
                );
            }
            common::string_match(s, &p, sm, false);
        }
    }
    for (k, sm) in &m.query_params {
        common::string_match(s, &format!("{path}.queryParams.{k}"), sm, false);
    }
    if let Some(p) = m.port {
        common::port(s, &format!("{path}.port"), p);
    }
    common::labels(s, &format!("{path}.sourceLabels"), &m.source_labels);
    for (i, g) in m.gateways.iter().enumerate() {
        super::virtual_service::check_gateway_ref(s, &format!("{path}.gateways[{i}]"), g);
    }
}

fn is_match_header_name(k: &str) -> bool {
    matches!(k, ":method" | ":authority" | ":scheme" | ":path") || common::is_header_name(k)
}

/// Weights: none negative; with two or more destinations the total must not be 0.
pub fn check_weights(s: &mut Sink, path: &str, weights: &[i32]) {
    for (i, w) in weights.iter().enumerate() {
        if *w < 0 {
            s.error(
                Code::InvalidWeight,
                &format!("{path}[{i}].weight"),
                format!("weight {w} is negative"),
                "use a weight of 0 or more; weights are relative",
            );
        }
    }
    if weights.len() > 1 && weights.iter().all(|w| *w == 0) {
        s.error(
            Code::InvalidWeight,
            path,
            "the weights of these destinations add up to 0",
            "give at least one destination a positive weight",
        );
    }
}

pub fn destination(s: &mut Sink, path: &str, d: Option<&Destination>) {
    let Some(d) = d else {
        s.error(
            Code::Required,
            path,
            "`destination` is required",
            "add `destination: {host: …}`",
        );
        return;
    };
    if d.host.is_empty() {
        s.error(
            Code::Required,
            &format!("{path}.host"),
            "destination host is required",
            "name a service, e.g. `reviews` or `api.example.com`",
        );
    } else if d.host == "*" {
        s.error(
            Code::InvalidHost,
            &format!("{path}.host"),
            "a destination host cannot be `*`",
            "name the service to send traffic to",
        );
    } else if d.host.parse::<std::net::IpAddr>().is_err() {
        if let Err(why) = host::check_wildcard_domain(&d.host) {
            s.error(
                Code::InvalidHost,
                &format!("{path}.host"),
                format!("invalid destination host: {why}"),
                "use a service name or FQDN",
            );
        }
    }
    if let Some(sub) = &d.subset {
        common::dns_label(s, &format!("{path}.subset"), sub, "subset name");
    }
    if let Some(p) = d.port {
        common::port(s, &format!("{path}.port.number"), p.number);
    }
}

fn authority_set_count(h: Option<&Headers>) -> usize {
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

fn redirect(s: &mut Sink, path: &str, r: &HttpRedirect, matches: &[HttpMatchRequest]) {
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

fn rewrite(s: &mut Sink, path: &str, r: &HttpRewrite) {
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

fn direct_response(s: &mut Sink, path: &str, d: &HttpDirectResponse) {
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

fn fault(s: &mut Sink, path: &str, f: &HttpFaultInjection) {
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

fn retries(s: &mut Sink, path: &str, r: &HttpRetry) {
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

fn cors(s: &mut Sink, path: &str, c: &CorsPolicy) {
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

fn mirrors(s: &mut Sink, path: &str, rule: &HttpRoute) {
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
