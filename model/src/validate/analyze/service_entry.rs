//! The analyzers that start from ServiceEntries: TCP ports that need addresses (IST0134, Istio's
//! ProtocolAddressesAnalyzer) and one host and port given different protocols (IST0177, its
//! ConflictingServiceEntryProtocolAnalyzer).

use std::collections::{BTreeMap, BTreeSet};

use super::export_scopes;
use crate::api::{Kind, Resource, ServiceEntry, Spec};
use crate::config::Config;
use crate::diag::{Code, Diagnostic};
use crate::validate::Sink;

pub fn analyze(config: &Config, out: &mut Vec<Diagnostic>) {
    let entries: Vec<(&Resource, &ServiceEntry)> = config
        .of_kind(Kind::ServiceEntry)
        .filter_map(|r| match &r.spec {
            Spec::ServiceEntry(se) => Some((r, se)),
            _ => None,
        })
        .collect();
    let auto_allocated = dns_auto_allocation(config);
    for (res, se) in &entries {
        let mut s = Sink::new(res);
        addresses_required(&mut s, res, se, auto_allocated);
        out.extend(s.out);
    }
    conflicting_protocols(&entries, out);
}

/// Whether the mesh's proxies capture DNS and allocate addresses for ServiceEntries
/// (`ISTIO_META_DNS_CAPTURE` with `ISTIO_META_DNS_AUTO_ALLOCATE` or `PILOT_ENABLE_IP_AUTOALLOCATE`).
fn dns_auto_allocation(config: &Config) -> bool {
    let md = &config.mesh.default_config.proxy_metadata;
    let on = |k: &str| md.get(k).map(String::as_str) == Some("true");
    on("ISTIO_META_DNS_CAPTURE") && (on("ISTIO_META_DNS_AUTO_ALLOCATE") || on("PILOT_ENABLE_IP_AUTOALLOCATE"))
}

/// IST0134: without addresses (its own, allocated ones in its status, or the mesh's automatic
/// allocation), a TCP port of a ServiceEntry cannot be told apart from other TCP traffic.
fn addresses_required(s: &mut Sink, res: &Resource, se: &ServiceEntry, auto_allocated: bool) {
    let allocated = res
        .status
        .get("addresses")
        .and_then(|a| a.as_array())
        .is_some_and(|a| !a.is_empty());
    if !se.addresses.is_empty() || allocated || auto_allocated {
        return;
    }
    for (i, port) in se.ports.iter().enumerate() {
        let protocol = port.protocol.as_deref().unwrap_or("");
        if protocol.is_empty() || protocol.eq_ignore_ascii_case("TCP") {
            let msg = format!(
                "port {} ({}) has no addresses to match: TCP traffic is told apart by destination address",
                port.number,
                if protocol.is_empty() { "no protocol" } else { "TCP" }
            );
            s.warn(
                Code::ServiceEntryAddressesRequired,
                &format!("spec.ports[{i}]"),
                msg,
                "add `addresses`, give the port an HTTP or TLS protocol, or turn on DNS capture with address auto-allocation",
            );
        }
    }
}

/// (scope, host, port) of a ServiceEntry port.
type ScopedPort = (String, String, u32);

/// IST0177: ServiceEntries that share a scope (their exportTo; exported-to-all ones share every
/// scope) give one host and port different protocols. Each ServiceEntry is reported once.
fn conflicting_protocols(entries: &[(&Resource, &ServiceEntry)], out: &mut Vec<Diagnostic>) {
    let mut index: BTreeMap<ScopedPort, Vec<(String, &Resource)>> = BTreeMap::new();
    for (res, se) in entries {
        for scope in export_scopes(&se.export_to, res.namespace()) {
            for h in &se.hosts {
                for p in &se.ports {
                    let protocol = p.protocol.clone().unwrap_or_default().to_ascii_uppercase();
                    index
                        .entry((scope.clone(), h.clone(), p.number))
                        .or_default()
                        .push((protocol, res));
                }
            }
        }
    }
    let mut reported: BTreeSet<String> = BTreeSet::new();
    for ((scope, host, port), own) in &index {
        let mut list = own.clone();
        if scope != "*" {
            if let Some(everywhere) = index.get(&("*".to_string(), host.clone(), *port)) {
                list.extend(everywhere.iter().cloned());
            }
        }
        let protocols: BTreeSet<&str> = list.iter().map(|(p, _)| p.as_str()).collect();
        if protocols.len() < 2 {
            continue;
        }
        let names: BTreeSet<String> = list.iter().map(|(_, r)| r.key()).collect();
        let names: Vec<String> = names.into_iter().collect();
        let protocols: Vec<&str> = protocols
            .into_iter()
            .map(|p| if p.is_empty() { "(none)" } else { p })
            .collect();
        for (_, res) in &list {
            if !reported.insert(res.key()) {
                continue;
            }
            let mut s = Sink::new(res);
            let msg = format!(
                "ServiceEntries {} give host `{host}` port {port} different protocols ({})",
                names.join(", "),
                protocols.join(", ")
            );
            s.warn(
                Code::ConflictingServiceEntryProtocol,
                "metadata.name",
                msg,
                "give the port one protocol in every ServiceEntry, or merge them",
            );
            out.extend(s.out);
        }
    }
}
