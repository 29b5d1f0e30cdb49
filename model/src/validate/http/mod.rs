//! One HTTP rule of a VirtualService (`validateHTTPRoute` and the helpers it calls). Here: the
//! rule's shape, its matches, destinations and weights; `headers`: header operations; `actions`:
//! redirect, rewrite, direct response; `policy`: fault, retries, CORS, mirrors.

use super::common;
use super::Sink;
use crate::api::virtual_service::{HttpMatchRequest, HttpRoute};
use crate::api::Destination;
use crate::diag::Code;
use crate::host;

mod actions;
mod headers;
mod policy;

use actions::{direct_response, redirect, rewrite};
use headers::{authority_set_count, headers};
use policy::{cors, fault, mirrors, retries};

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
