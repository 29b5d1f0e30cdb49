//! The analyzers that start from Gateways: two Gateways of one workload claiming a host on a port
//! (IST0145, Istio's ConflictingGatewayAnalyzer) and sharing a certificate (IST0138, its
//! CertificateAnalyzer).

use std::collections::BTreeMap;

use crate::api::gateway::{Gateway, ServerTls};
use crate::api::{Kind, Labels, Resource, Spec};
use crate::config::Config;
use crate::diag::{Code, Diagnostic};
use crate::plan::registry::labels_match;
use crate::validate::Sink;

pub fn analyze(config: &Config, out: &mut Vec<Diagnostic>) {
    let gateways: Vec<(&Resource, &Gateway)> = config
        .of_kind(Kind::Gateway)
        .filter_map(|r| match &r.spec {
            Spec::Gateway(g) => Some((r, g)),
            _ => None,
        })
        .collect();
    conflicting_gateways(config, &gateways, out);
    duplicate_certificates(&gateways, out);
}

/// A selector as Kubernetes prints it: `k1=v1,k2=v2`, keys sorted.
fn selector_string(selector: &Labels) -> String {
    selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn parse_selector(s: &str) -> Labels {
    s.split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Host to bind address, for one Gateway's servers on one port.
type HostsBind = BTreeMap<String, String>;

/// IST0145, as Istio computes it: Gateways are grouped by (selector, port); two selectors are
/// the same workload when they are equal, or when one's text contains the other's and a Pod in
/// the files carries both. A server conflicts with another Gateway of its group that already
/// has one of its hosts with the same bind address; a server without conflicts adds its hosts
/// to what each Gateway of the group is known to hold (so a third Gateway sees them).
fn conflicting_gateways(config: &Config, gateways: &[(&Resource, &Gateway)], out: &mut Vec<Diagnostic>) {
    let mut groups: BTreeMap<(String, u32), BTreeMap<String, HostsBind>> = BTreeMap::new();
    for (res, gw) in gateways {
        for server in &gw.servers {
            let port = server.port.as_ref().map_or(0, |p| p.number);
            let hosts = server
                .hosts
                .iter()
                .map(|h| (h.clone(), server.bind.clone().unwrap_or_default()))
                .collect();
            groups
                .entry((selector_string(&gw.selector), port))
                .or_default()
                .insert(res.key(), hosts);
        }
    }
    let pods: Vec<&Labels> = config.kube_of_kind("Pod").map(|p| &p.meta.labels).collect();
    for (res, gw) in gateways {
        let own = selector_string(&gw.selector);
        let same_workload = |other: &str| {
            other == own
                || ((other.contains(&own) || own.contains(other)) && {
                    let (a, b) = (&gw.selector, parse_selector(other));
                    pods.iter()
                        .any(|labels| labels_match(a, labels) && labels_match(&b, labels))
                })
        };
        let keys: Vec<(String, u32)> = groups.keys().filter(|(sel, _)| same_workload(sel)).cloned().collect();
        let mut s = Sink::new(res);
        for (i, server) in gw.servers.iter().enumerate() {
            let port = server.port.as_ref().map_or(0, |p| p.number);
            let bind = server.bind.clone().unwrap_or_default();
            let mut conflicts = Vec::new();
            for key in keys.iter().filter(|(_, p)| *p == port) {
                let Some(group) = groups.get_mut(key) else { continue };
                for (name, known) in group.iter_mut() {
                    if *name == res.key() {
                        continue;
                    }
                    let duplicate = server.hosts.iter().any(|h| known.get(h) == Some(&bind));
                    if duplicate {
                        conflicts.push(name.clone());
                    } else {
                        known.extend(server.hosts.iter().map(|h| (h.clone(), bind.clone())));
                    }
                }
            }
            if conflicts.is_empty() {
                continue;
            }
            conflicts.sort();
            let msg = format!(
                "conflicts with gateways {} (workload selector {own}, port {port}, hosts {})",
                conflicts.join(","),
                server.hosts.join(",")
            );
            s.error(
                Code::ConflictingGateways,
                &format!("spec.servers[{i}]"),
                msg,
                "serve each host on a port from one Gateway, or give the Gateways selectors that pick different workloads",
            );
        }
        out.extend(s.out);
    }
}

/// Istio's `selectorSubset`: every label of `x` is in `y` with the same value.
fn selector_subset(x: &Labels, y: &Labels) -> bool {
    x.iter().all(|(k, v)| y.get(k) == Some(v))
}

fn set(v: &Option<String>) -> Option<&str> {
    v.as_deref().filter(|s| !s.is_empty())
}

/// Istio's `haveSameCertificate`: the same credentialName, or (neither having one) the same
/// serverCertificate and privateKey files.
fn same_certificate(a: &ServerTls, b: &ServerTls) -> bool {
    match (set(&a.credential_name), set(&b.credential_name)) {
        (Some(x), Some(y)) => x == y,
        (None, None) => {
            let cert = (set(&a.server_certificate), set(&b.server_certificate));
            let key = (set(&a.private_key), set(&b.private_key));
            matches!(cert, (Some(x), Some(y)) if x == y) && matches!(key, (Some(x), Some(y)) if x == y)
        }
        _ => false,
    }
}

/// IST0138: a Gateway shares a certificate with another Gateway whose selector includes all of
/// its own labels (or any Gateway, when its selector is empty): a client that reuses an HTTP/2
/// connection for the other Gateway's host gets 404s.
fn duplicate_certificates(gateways: &[(&Resource, &Gateway)], out: &mut Vec<Diagnostic>) {
    for (res, gw) in gateways {
        let mut s = Sink::new(res);
        for (other_res, other) in gateways {
            if other_res.key() == res.key() || !selector_subset(&gw.selector, &other.selector) {
                continue;
            }
            let shared = gw.servers.iter().filter_map(|a| a.tls.as_ref()).any(|a| {
                other
                    .servers
                    .iter()
                    .filter_map(|b| b.tls.as_ref())
                    .any(|b| same_certificate(a, b))
            });
            if shared {
                let msg = format!(
                    "gateways {} and {} use the same certificate; clients that reuse an HTTP/2 connection across their hosts get 404s",
                    res.key(),
                    other_res.key()
                );
                s.warn(
                    Code::GatewayDuplicateCertificate,
                    "metadata.name",
                    msg,
                    "serve the hosts from one Gateway, or give each Gateway its own certificate",
                );
            }
        }
        out.extend(s.out);
    }
}
