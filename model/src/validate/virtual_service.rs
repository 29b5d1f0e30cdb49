//! VirtualService rules (`ValidateVirtualService`, `validateTLSRoute`, `validateTCPRoute`,
//! `validateGatewayNames`); the unreachable-rule warnings IST0130/IST0131 are in `unreachable`.

use std::collections::HashMap;

use super::common;
use super::http;
use super::Sink;
use crate::api::virtual_service::{RouteDestination, VirtualService};
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
    let sni = vs.tls.iter().any(|r| r.matches.iter().any(|m| !m.sni_hosts.is_empty()));
    check_hosts(s, &vs.hosts, applies_to_mesh, sni);
    for (i, g) in vs.gateways.iter().enumerate() {
        check_gateway_ref(s, &format!("spec.gateways[{i}]"), g);
    }
    common::export_to(s, "spec.exportTo", &vs.export_to, false);
    for (i, rule) in vs.http.iter().enumerate() {
        http::validate_rule(s, &format!("spec.http[{i}]"), rule, applies_to_mesh);
    }
    super::unreachable::check(s, vs);
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
                check_sni_host(s, &format!("{mp}.sniHosts[{k}]"), sni, &vs.hosts, applies_to_mesh);
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

fn check_hosts(s: &mut Sink, hosts: &[String], applies_to_mesh: bool, sni: bool) {
    // Overlaps: an exact host meets an equal one or a wildcard; a wildcard may meet anything.
    // Exact hosts are found by name, so the check is linear unless there are many wildcards.
    let mut exact: HashMap<String, Vec<usize>> = HashMap::new();
    let mut wildcards: Vec<usize> = Vec::new();
    for (i, h) in hosts.iter().enumerate() {
        let lower = h.to_ascii_lowercase();
        let mut earlier: Vec<usize> = match host::is_wildcard(h) {
            true => (0..i).filter(|&j| host::matches(h, &hosts[j])).collect(),
            false => {
                let mut e = exact.get(&lower).cloned().unwrap_or_default();
                e.extend(wildcards.iter().copied().filter(|&j| host::matches(h, &hosts[j])));
                e.sort_unstable();
                e
            }
        };
        match host::is_wildcard(h) {
            true => wildcards.push(i),
            false => exact.entry(lower).or_default().push(i),
        }
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
        let syntax = match applies_to_mesh {
            true => host::check_wildcard_domain(h),
            false => host::check_gateway_bound_domain(sni, h),
        };
        if let Err(why) = syntax {
            s.error(
                Code::InvalidHost,
                &path,
                format!("invalid host: {why}"),
                "use a DNS name, `*.example.com`, or a short service name",
            );
        }
        for j in earlier.drain(..) {
            let msg = format!("host `{h}` overlaps host `{}` (spec.hosts[{j}])", hosts[j]);
            s.error(
                Code::Duplicate,
                &path,
                msg,
                "list each host once; a wildcard already covers the names under it",
            );
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

fn check_sni_host(s: &mut Sink, path: &str, sni: &str, vs_hosts: &[String], applies_to_mesh: bool) {
    if sni.parse::<std::net::IpAddr>().is_ok() {
        s.warn(
            Code::SniNotInHosts,
            path,
            format!("SNI host `{sni}` is an IP address; clients do not send IPs in SNI"),
            "use a DNS name",
        );
        return;
    }
    let syntax = match applies_to_mesh {
        true => host::check_wildcard_domain(sni),
        false => host::check_gateway_bound_domain(true, sni),
    };
    if let Err(why) = syntax {
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
