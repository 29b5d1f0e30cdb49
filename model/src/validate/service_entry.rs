//! ServiceEntry and WorkloadEntry rules (`ValidateServiceEntry`, `ValidateWorkloadEntry`).

use std::collections::HashSet;

use super::common;
use super::Sink;
use crate::api::service_entry::{Location, Resolution, ServiceEntry, WorkloadEntry};
use crate::api::Protocol;
use crate::diag::Code;
use crate::host;

pub fn validate_service_entry(s: &mut Sink, se: &ServiceEntry) {
    let resolution = se.effective_resolution();
    if se.hosts.is_empty() {
        s.error(
            Code::Required,
            "spec.hosts",
            "a ServiceEntry needs at least one host",
            "add the service's host names",
        );
    }
    for (i, h) in se.hosts.iter().enumerate() {
        let p = format!("spec.hosts[{i}]");
        if h == "*" {
            s.error(
                Code::InvalidHost,
                &p,
                "`*` is not allowed as a ServiceEntry host",
                "name the hosts, or use `*.example.com`",
            );
        } else if let Err(why) = host::check_wildcard_domain(h) {
            let partial = h.contains('*') && !h.starts_with("*.");
            if partial && resolution != Resolution::DynamicDns {
                s.warn(
                    Code::InvalidHost,
                    &p,
                    format!("host `{h}` has a partial wildcard"),
                    "use `*.example.com`",
                );
            } else {
                s.error(
                    Code::InvalidHost,
                    &p,
                    format!("invalid host: {why}"),
                    "use a DNS name or `*.example.com`",
                );
            }
        }
    }
    for (i, a) in se.addresses.iter().enumerate() {
        let p = format!("spec.addresses[{i}]");
        if !common::is_ip_or_cidr(a) {
            s.error(
                Code::InvalidValue,
                &p,
                format!("address `{a}` is not an IP or CIDR"),
                "write an IP such as `240.0.0.1` or a CIDR",
            );
        } else if a.contains('/') && !matches!(resolution, Resolution::None | Resolution::Static) {
            s.error(
                Code::ServiceEntryResolution,
                &p,
                "CIDR addresses are allowed only with resolution NONE or STATIC",
                "use single IPs, or change the resolution",
            );
        }
    }
    check_ports(s, se);
    if !se.endpoints.is_empty() && se.workload_selector.is_some() {
        s.error(
            Code::Conflict,
            "spec.workloadSelector",
            "`endpoints` and `workloadSelector` cannot both be set",
            "keep one of them",
        );
    }
    if let Some(sel) = &se.workload_selector {
        if se.effective_location() != Location::MeshInternal {
            s.warn(
                Code::Conflict,
                "spec.workloadSelector",
                "workloadSelector selects mesh workloads; this ServiceEntry is MESH_EXTERNAL",
                "set `location: MESH_INTERNAL`",
            );
        }
        common::labels(s, "spec.workloadSelector.labels", &sel.labels);
    }
    check_resolution(s, se, resolution);
    for (i, ep) in se.endpoints.iter().enumerate() {
        validate_workload_entry(s, ep, &format!("spec.endpoints[{i}]"));
        let names: HashSet<&str> = se.ports.iter().map(|p| p.name.as_str()).collect();
        for name in ep.ports.keys() {
            if !names.contains(name.as_str()) {
                let msg = format!("endpoint port `{name}` is not a port name of this ServiceEntry");
                s.error(
                    Code::InvalidValue,
                    &format!("spec.endpoints[{i}].ports.{name}"),
                    msg,
                    "use one of the names under spec.ports",
                );
            }
        }
    }
    common::export_to(s, "spec.exportTo", &se.export_to, true);
}

fn check_ports(s: &mut Sink, se: &ServiceEntry) {
    let mut names = HashSet::new();
    let mut numbers = HashSet::new();
    let mut non_http_tcp = false;
    for (i, port) in se.ports.iter().enumerate() {
        let p = format!("spec.ports[{i}]");
        common::port(s, &format!("{p}.number"), port.number);
        if let Some(t) = port.target_port {
            common::port(s, &format!("{p}.targetPort"), t);
        }
        if port.name.is_empty() {
            s.error(
                Code::Required,
                &format!("{p}.name"),
                "a service port needs a name",
                "add `name: http` (or any unique name)",
            );
        } else if !names.insert(port.name.as_str()) {
            s.error(
                Code::Duplicate,
                &format!("{p}.name"),
                format!("port name `{}` is used twice", port.name),
                "give every port a unique name",
            );
        }
        if !numbers.insert(port.number) {
            s.error(
                Code::Duplicate,
                &format!("{p}.number"),
                format!("port {} is listed twice", port.number),
                "list each port number once",
            );
        }
        let proto = port.protocol.as_deref().unwrap_or("");
        match Protocol::parse(proto) {
            None => {
                let hint = match crate::diag::did_you_mean(proto, Protocol::NAMES.iter().copied()) {
                    Some(b) => format!("did you mean `{b}`?"),
                    None => format!("use one of {}", Protocol::NAMES.join(", ")),
                };
                s.error(
                    Code::UnknownProtocol,
                    &format!("{p}.protocol"),
                    format!("protocol `{proto}` is not a known protocol"),
                    &hint,
                );
            }
            Some(pr) => {
                if !(pr.is_http() || pr.is_tls()) {
                    non_http_tcp = true;
                }
                if matches!(pr, Protocol::Tcp | Protocol::Unsupported)
                    && se.addresses.is_empty()
                    && se.effective_resolution() != Resolution::None
                {
                    let msg = format!(
                        "port {} is {} without `addresses`: it is identified by port number alone",
                        port.number,
                        if proto.is_empty() { "of unset protocol" } else { "TCP" }
                    );
                    s.warn(
                        Code::ServiceEntryResolution,
                        &p,
                        msg,
                        "add `addresses`, or give the port an HTTP or TLS protocol",
                    );
                }
            }
        }
    }
    if non_http_tcp && se.hosts.len() > 1 && se.effective_resolution() != Resolution::None {
        s.error(
            Code::ServiceEntryResolution,
            "spec.hosts",
            "more than one host with a non-HTTP, non-TLS port needs resolution NONE",
            "split the ServiceEntry per host, or use HTTP/TLS ports",
        );
    }
}

fn check_resolution(s: &mut Sink, se: &ServiceEntry, resolution: Resolution) {
    match resolution {
        Resolution::None => {
            if !se.endpoints.is_empty() {
                s.error(
                    Code::ServiceEntryResolution,
                    "spec.endpoints",
                    "resolution NONE cannot have endpoints",
                    "set `resolution: STATIC` or `DNS`, or remove the endpoints",
                );
            }
        }
        Resolution::Static => {
            for (i, ep) in se.endpoints.iter().enumerate() {
                let addr = ep.address.as_deref().unwrap_or("");
                let uds = addr.starts_with("unix://");
                if !uds && addr.parse::<std::net::IpAddr>().is_err() && ep.network.is_none() {
                    let msg = format!("endpoint address `{addr}` is not an IP; STATIC resolution needs IPs");
                    s.error(
                        Code::ServiceEntryResolution,
                        &format!("spec.endpoints[{i}].address"),
                        msg,
                        "use an IP, or `resolution: DNS` for host names",
                    );
                }
                if uds && se.ports.len() != 1 {
                    s.error(
                        Code::ServiceEntryResolution,
                        &format!("spec.endpoints[{i}].address"),
                        "a unix socket endpoint needs exactly one service port",
                        "keep one port",
                    );
                }
            }
        }
        Resolution::Dns | Resolution::DnsRoundRobin => {
            if se.endpoints.is_empty() {
                for (i, h) in se.hosts.iter().enumerate() {
                    if host::is_wildcard(h) {
                        s.error(
                            Code::ServiceEntryResolution,
                            &format!("spec.hosts[{i}]"),
                            format!(
                                "host `{h}` is a wildcard, but DNS resolution without endpoints resolves the hosts"
                            ),
                            "add endpoints, or use `resolution: NONE` or DYNAMIC_DNS",
                        );
                    }
                }
            }
            for (i, ep) in se.endpoints.iter().enumerate() {
                let addr = ep.address.as_deref().unwrap_or("");
                // An IP or a host name to resolve; not a wildcard, not a unix socket.
                let fqdn = host::check_wildcard_domain(addr).is_ok() && !host::is_wildcard(addr);
                if addr.parse::<std::net::IpAddr>().is_err() && !fqdn {
                    s.error(
                        Code::ServiceEntryResolution,
                        &format!("spec.endpoints[{i}].address"),
                        format!("endpoint address `{addr}` is not an IP or host name"),
                        "use an IP or a DNS name",
                    );
                }
            }
            if resolution == Resolution::DnsRoundRobin && se.endpoints.len() > 1 {
                s.error(
                    Code::ServiceEntryResolution,
                    "spec.endpoints",
                    "DNS_ROUND_ROBIN allows at most one endpoint",
                    "use `resolution: DNS` for several endpoints",
                );
            }
        }
        Resolution::DynamicDns => {
            if let Some(i) = se.hosts.iter().position(|h| !host::is_wildcard(h)) {
                s.error(
                    Code::ServiceEntryResolution,
                    &format!("spec.hosts[{i}]"),
                    "DYNAMIC_DNS needs every host to be a wildcard",
                    "use `*.example.com` hosts, or `resolution: DNS`",
                );
            }
            if !se.addresses.is_empty() || !se.endpoints.is_empty() {
                s.error(
                    Code::ServiceEntryResolution,
                    "spec",
                    "DYNAMIC_DNS cannot have addresses or endpoints",
                    "remove them",
                );
            }
            let waypoint = s.res.meta.labels.get("istio.io/use-waypoint");
            if se.effective_location() == Location::MeshInternal
                && waypoint.is_some_and(|w| !w.is_empty() && !w.eq_ignore_ascii_case("none"))
            {
                s.error(
                    Code::ServiceEntryResolution,
                    "spec.location",
                    "MESH_INTERNAL with DYNAMIC_DNS is not supported when the ServiceEntry uses a waypoint (label istio.io/use-waypoint)",
                    "use `location: MESH_EXTERNAL`, or remove the waypoint label",
                );
            }
            for (i, port) in se.ports.iter().enumerate() {
                let pr = Protocol::parse(port.protocol.as_deref().unwrap_or(""));
                if !matches!(
                    pr,
                    Some(Protocol::Http | Protocol::Https | Protocol::Tls | Protocol::Grpc | Protocol::Http2)
                ) {
                    s.error(
                        Code::ServiceEntryResolution,
                        &format!("spec.ports[{i}].protocol"),
                        "DYNAMIC_DNS supports only HTTP, HTTPS, TLS, GRPC and HTTP2 ports",
                        "change the port protocol",
                    );
                }
            }
        }
    }
}

/// A WorkloadEntry, standalone (`path` = `spec`) or inline in a ServiceEntry.
pub fn validate_workload_entry(s: &mut Sink, we: &WorkloadEntry, path: &str) {
    match we.address.as_deref() {
        None | Some("") if we.network.is_none() => {
            s.error(
                Code::Required,
                &format!("{path}.address"),
                "a workload entry needs an address (unless `network` is set)",
                "set the workload's IP or host name",
            );
        }
        Some(addr) if addr.starts_with("unix://") => {
            let p = &addr["unix://".len()..];
            if !(p.starts_with('/') || p.starts_with('@')) || p.ends_with('/') {
                s.error(
                    Code::InvalidValue,
                    &format!("{path}.address"),
                    format!("`{addr}` is not an absolute socket path"),
                    "write `unix:///path/to/socket` or `unix://@abstract`",
                );
            }
            if !we.ports.is_empty() {
                s.error(
                    Code::Conflict,
                    &format!("{path}.ports"),
                    "a unix socket address cannot have ports",
                    "remove `ports`",
                );
            }
        }
        Some(addr) if addr.parse::<std::net::IpAddr>().is_err() && host::check_wildcard_domain(addr).is_err() => {
            s.error(
                Code::InvalidValue,
                &format!("{path}.address"),
                format!("`{addr}` is not an IP or host name"),
                "use an IP or a DNS name",
            );
        }
        Some(_) | None => {}
    }
    for (name, port) in &we.ports {
        let p = format!("{path}.ports.{name}");
        if !host::is_dns_label(name) {
            s.error(
                Code::InvalidName,
                &p,
                format!("port name `{name}` is not a DNS label"),
                "use lowercase letters, digits and `-`",
            );
        }
        common::port(s, &p, *port);
    }
    common::labels(s, &format!("{path}.labels"), &we.labels);
}
