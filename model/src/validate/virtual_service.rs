//! VirtualService rules (`ValidateVirtualService`, `validateTLSRoute`, `validateTCPRoute`,
//! `validateGatewayNames`) and the unreachable-rule warnings IST0130/IST0131.

use std::collections::HashMap;

use super::common;
use super::http;
use super::Sink;
use crate::api::virtual_service::{HttpMatchRequest, HttpRoute, RouteDestination, VirtualService};
use crate::diag::Code;
use crate::host;

pub fn validate(s: &mut Sink, vs: &VirtualService) {
    let delegate = vs.hosts.is_empty();
    let applies_to_mesh = vs.gateways.is_empty() || vs.gateways.iter().any(|g| g == "mesh");
    if vs.http.is_empty() && vs.tcp.is_empty() && vs.tls.is_empty() {
        s.error(
            Code::Required,
            "spec",
            "a VirtualService needs at least one of `http`, `tcp` or `tls`",
            "add routing rules",
        );
    }
    if delegate {
        if !vs.gateways.is_empty() {
            s.error(
                Code::Conflict,
                "spec.gateways",
                "a delegate VirtualService (no hosts) cannot have gateways",
                "bind the root VirtualService to the gateway instead",
            );
        }
        if !vs.tcp.is_empty() || !vs.tls.is_empty() {
            s.error(
                Code::Conflict,
                "spec",
                "a delegate VirtualService (no hosts) can only have `http` rules",
                "move tcp/tls rules to the root VirtualService, or add hosts",
            );
        }
    }
    check_hosts(s, &vs.hosts, applies_to_mesh);
    for (i, g) in vs.gateways.iter().enumerate() {
        check_gateway_ref(s, &format!("spec.gateways[{i}]"), g);
    }
    common::export_to(s, "spec.exportTo", &vs.export_to, false);
    for (i, rule) in vs.http.iter().enumerate() {
        http::validate_rule(s, &format!("spec.http[{i}]"), rule, applies_to_mesh);
    }
    unreachable_http_rules(s, &vs.http);
    for (i, rule) in vs.tls.iter().enumerate() {
        let path = format!("spec.tls[{i}]");
        if rule.matches.is_empty() {
            s.error(
                Code::Required,
                &format!("{path}.match"),
                "a TLS route needs at least one match",
                "add `match: [{sniHosts: [host]}]`",
            );
        }
        for (j, m) in rule.matches.iter().enumerate() {
            let mp = format!("{path}.match[{j}]");
            if m.sni_hosts.is_empty() {
                s.error(
                    Code::Required,
                    &format!("{mp}.sniHosts"),
                    "a TLS match needs at least one SNI host",
                    "add the SNI names this rule takes",
                );
            }
            for (k, sni) in m.sni_hosts.iter().enumerate() {
                check_sni_host(s, &format!("{mp}.sniHosts[{k}]"), sni, &vs.hosts);
            }
            l4_match(s, &mp, &m.destination_subnets, m.port, &m.gateways);
        }
        route_destinations(s, &format!("{path}.route"), &rule.route);
    }
    for (i, rule) in vs.tcp.iter().enumerate() {
        let path = format!("spec.tcp[{i}]");
        for (j, m) in rule.matches.iter().enumerate() {
            let mp = format!("{path}.match[{j}]");
            l4_match(s, &mp, &m.destination_subnets, m.port, &m.gateways);
            if let Some(sub) = &m.source_subnet {
                if !common::is_ip_or_cidr(sub) {
                    s.error(
                        Code::InvalidValue,
                        &format!("{mp}.sourceSubnet"),
                        format!("`{sub}` is not an IP or CIDR"),
                        "write e.g. `10.0.0.0/8`",
                    );
                }
            }
        }
        route_destinations(s, &format!("{path}.route"), &rule.route);
    }
}

fn check_hosts(s: &mut Sink, hosts: &[String], applies_to_mesh: bool) {
    for (i, h) in hosts.iter().enumerate() {
        let path = format!("spec.hosts[{i}]");
        if h == "*" && applies_to_mesh {
            s.error(
                Code::InvalidHost,
                &path,
                "`*` is not allowed as a host of a VirtualService that applies to `mesh`",
                "bind the VirtualService to a gateway with `gateways:`, or name the hosts",
            );
            continue;
        }
        if h.parse::<std::net::IpAddr>().is_ok() {
            continue;
        }
        if let Err(why) = host::check_wildcard_domain(h) {
            s.error(
                Code::InvalidHost,
                &path,
                format!("invalid host: {why}"),
                "use a DNS name, `*.example.com`, or a short service name",
            );
        }
        for (j, other) in hosts.iter().enumerate().take(i) {
            if host::matches(h, other) {
                let msg = format!("host `{h}` overlaps host `{other}` (spec.hosts[{j}])");
                s.error(
                    Code::Duplicate,
                    &path,
                    msg,
                    "list each host once; a wildcard already covers the names under it",
                );
            }
        }
    }
}

/// `mesh`, `name`, `ns/name` (both DNS labels), or the legacy `name.ns.svc.cluster.local` (a warning).
pub fn check_gateway_ref(s: &mut Sink, path: &str, g: &str) {
    if g == "mesh" {
        return;
    }
    match g.split_once('/') {
        Some((ns, name)) => {
            if !host::is_dns_label(ns) || !host::is_dns_label(name) {
                let msg = format!("gateway reference `{g}` is not `namespace/name` with DNS-label parts");
                s.error(
                    Code::InvalidGatewayRef,
                    path,
                    msg,
                    "write `namespace/name`, e.g. `istio-system/ingress-gateway` (`./name` is not accepted)",
                );
            }
        }
        None if host::is_dns_label(g) => {}
        None if host::is_dns_subdomain(g) && g.split('.').count() > 2 => {
            let msg = format!("gateway reference `{g}` uses the legacy FQDN form");
            s.warn(Code::InvalidGatewayRef, path, msg, "write it as `namespace/name`");
        }
        None => {
            s.error(
                Code::InvalidGatewayRef,
                path,
                format!("gateway reference `{g}` is not a valid name"),
                "write `name`, `namespace/name` or `mesh`",
            );
        }
    }
}

fn check_sni_host(s: &mut Sink, path: &str, sni: &str, vs_hosts: &[String]) {
    if sni.parse::<std::net::IpAddr>().is_ok() {
        s.warn(
            Code::SniNotInHosts,
            path,
            format!("SNI host `{sni}` is an IP address; clients do not send IPs in SNI"),
            "use a DNS name",
        );
        return;
    }
    if let Err(why) = host::check_wildcard_domain(sni) {
        s.error(
            Code::InvalidHost,
            path,
            format!("invalid SNI host: {why}"),
            "use a DNS name or `*.example.com`",
        );
        return;
    }
    if !vs_hosts.iter().any(|h| host::subset_of(sni, h)) {
        let msg = format!(
            "SNI host `{sni}` is not covered by the VirtualService hosts [{}]",
            vs_hosts.join(", ")
        );
        s.error(
            Code::SniNotInHosts,
            path,
            msg,
            "add the name to spec.hosts, or narrow the SNI host",
        );
    }
}

fn l4_match(s: &mut Sink, path: &str, subnets: &[String], port: Option<u32>, gateways: &[String]) {
    for (i, sub) in subnets.iter().enumerate() {
        if !common::is_ip_or_cidr(sub) {
            s.error(
                Code::InvalidValue,
                &format!("{path}.destinationSubnets[{i}]"),
                format!("`{sub}` is not an IP or CIDR"),
                "write e.g. `10.0.0.0/8`",
            );
        }
    }
    if let Some(p) = port {
        common::port(s, &format!("{path}.port"), p);
    }
    for (i, g) in gateways.iter().enumerate() {
        check_gateway_ref(s, &format!("{path}.gateways[{i}]"), g);
    }
}

fn route_destinations(s: &mut Sink, path: &str, route: &[RouteDestination]) {
    if route.is_empty() {
        s.error(
            Code::Required,
            path,
            "the rule needs at least one route destination",
            "add `route: [{destination: {host: …}}]`",
        );
    }
    let weights: Vec<i32> = route.iter().map(|r| r.weight).collect();
    http::check_weights(s, path, &weights);
    for (i, r) in route.iter().enumerate() {
        http::destination(s, &format!("{path}[{i}].destination"), r.destination.as_ref());
    }
}

/// Istio's catch-all match: uri prefix `/` (or regex `.*`/`*`) and nothing else.
pub fn is_catch_all_match(m: &HttpMatchRequest) -> bool {
    let uri_all = match &m.uri {
        None => true,
        Some(u) => u.prefix.as_deref() == Some("/") || matches!(u.regex.as_deref(), Some(".*" | "*")),
    };
    uri_all
        && m.headers.is_empty()
        && m.query_params.is_empty()
        && m.source_labels.is_empty()
        && m.without_headers.is_empty()
        && m.gateways.is_empty()
        && m.method.is_none()
        && m.scheme.is_none()
        && m.port.is_none()
        && m.authority.is_none()
        && m.source_namespace.is_none()
}

/// A rule that matches every request (no match, or a catch-all match block).
pub fn is_catch_all_rule(rule: &HttpRoute) -> bool {
    rule.matches.is_empty() || rule.matches.iter().any(is_catch_all_match)
}

/// IST0130 (a rule no request can reach) and IST0131 (a match an earlier rule already has).
fn unreachable_http_rules(s: &mut Sink, rules: &[HttpRoute]) {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut catch_all: Option<usize> = None;
    for (i, rule) in rules.iter().enumerate() {
        let path = format!("spec.http[{i}]");
        if let Some(c) = catch_all {
            let msg = format!(
                "rule {} can never match: rule {} before it matches every request",
                rule_name(rule, i),
                rule_name(&rules[c], c)
            );
            s.warn(
                Code::UnreachableRule,
                &path,
                msg,
                "move this rule above the catch-all rule, or remove it",
            );
            continue;
        }
        let mut dups = 0;
        for (j, m) in rule.matches.iter().enumerate() {
            let key = serde_json::to_string(m).unwrap_or_default();
            if let Some(prev) = seen.get(&key) {
                dups += 1;
                let msg = format!(
                    "match {j} of rule {} is the same as a match of rule {}, which wins",
                    rule_name(rule, i),
                    rule_name(&rules[*prev], *prev)
                );
                s.warn(
                    Code::IneffectiveMatch,
                    &format!("{path}.match[{j}]"),
                    msg,
                    "remove the duplicate match or change it",
                );
            } else {
                seen.insert(key, i);
            }
        }
        if dups > 0 && dups == rule.matches.len() {
            let msg = format!(
                "rule {} can never match: every one of its matches is used by an earlier rule",
                rule_name(rule, i)
            );
            s.warn(
                Code::UnreachableRule,
                &path,
                msg,
                "remove the rule or change its matches",
            );
        }
        if is_catch_all_rule(rule) {
            catch_all = Some(i);
        }
    }
}

fn rule_name(rule: &HttpRoute, i: usize) -> String {
    match &rule.name {
        Some(n) => format!("`{n}`"),
        None => format!("#{i}"),
    }
}
