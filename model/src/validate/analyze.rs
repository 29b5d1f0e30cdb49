//! Cross-resource checks in the manner of `istioctl analyze`: missing gateways and subsets
//! (IST0101), VirtualService hosts a Gateway does not expose (IST0132), conflicting Gateways (IST0145).

use crate::api::gateway::Gateway;
use crate::api::virtual_service::VirtualService;
use crate::api::{Destination, Kind, Resource, Spec};
use crate::config::Config;
use crate::diag::{Code, Diagnostic};
use crate::host;
use crate::plan::policy::find_rule;
use crate::plan::registry::Registry;

use super::Sink;

pub fn analyze(config: &Config) -> Vec<Diagnostic> {
    let registry = Registry::build(config);
    let mut out = Vec::new();
    for res in config.of_kind(Kind::VirtualService) {
        let Spec::VirtualService(vs) = &res.spec else { continue };
        let mut s = Sink::new(res);
        gateway_refs(&mut s, config, vs);
        for (path, d) in destinations(vs) {
            destination(&mut s, config, &registry, &path, d);
        }
        out.extend(s.out);
    }
    out.extend(conflicting_gateways(config));
    out
}

fn gateway_refs(s: &mut Sink, config: &Config, vs: &VirtualService) {
    let ns = s.res.namespace().to_string();
    let refs = vs
        .gateways
        .iter()
        .enumerate()
        .map(|(i, g)| (format!("spec.gateways[{i}]"), g));
    let match_refs = vs.http.iter().enumerate().flat_map(|(i, r)| {
        r.matches.iter().enumerate().flat_map(move |(j, m)| {
            m.gateways
                .iter()
                .enumerate()
                .map(move |(k, g)| (format!("spec.http[{i}].match[{j}].gateways[{k}]"), g))
        })
    });
    for (path, g) in refs.chain(match_refs) {
        if g == "mesh" {
            continue;
        }
        let key = crate::plan::resolve_gateway_ref(g, &ns);
        let (gns, gname) = key.split_once('/').unwrap_or(("", &key));
        match config.find(Kind::Gateway, gns, gname) {
            None => {
                let hint = match config.of_kind(Kind::Gateway).find(|r| r.name() == gname) {
                    Some(other) => format!("a Gateway `{gname}` exists in namespace `{}`: write `{}/{gname}`", other.namespace(), other.namespace()),
                    None => "define the Gateway, or fix the reference (`name` means the VirtualService's namespace; use `namespace/name` for others)".to_string(),
                };
                s.error(
                    Code::ReferencedResourceNotFound,
                    &path,
                    format!("gateway `{key}` does not exist"),
                    &hint,
                );
            }
            Some(gw) if path.starts_with("spec.gateways") => {
                if let Spec::Gateway(g) = &gw.spec {
                    hosts_in_gateway(s, config, vs, gw, g);
                }
            }
            Some(_) => {}
        }
    }
}

/// IST0132: every VirtualService host should be exposed by some server of each bound Gateway.
fn hosts_in_gateway(s: &mut Sink, config: &Config, vs: &VirtualService, gw: &Resource, g: &Gateway) {
    let ns = s.res.namespace().to_string();
    for (i, h) in vs.hosts.iter().enumerate() {
        let fqdn = host::resolve_short_name(h, &ns, config.domain_suffix());
        let exposed = g.servers.iter().flat_map(|sv| sv.hosts.iter()).any(|sh| {
            let (hns, name) = sh.split_once('/').unwrap_or(("*", sh));
            let ns_ok = hns == "*" || hns == ns || (hns == "." && ns == gw.namespace());
            ns_ok && host::matches(&fqdn, name)
        });
        if !exposed {
            let msg = format!("host `{h}` is not exposed by gateway {}", gw.key());
            s.warn(
                Code::VirtualServiceHostNotInGateway,
                &format!("spec.hosts[{i}]"),
                msg,
                "add the host to a server of the Gateway, or remove it from this VirtualService",
            );
        }
    }
}

fn destinations(vs: &VirtualService) -> Vec<(String, &Destination)> {
    let mut out = Vec::new();
    for (i, r) in vs.http.iter().enumerate() {
        for (j, d) in r.route.iter().enumerate() {
            if let Some(d) = &d.destination {
                out.push((format!("spec.http[{i}].route[{j}].destination"), d));
            }
        }
        if let Some(m) = &r.mirror {
            out.push((format!("spec.http[{i}].mirror"), m));
        }
        for (j, m) in r.mirrors.iter().enumerate() {
            if let Some(d) = &m.destination {
                out.push((format!("spec.http[{i}].mirrors[{j}].destination"), d));
            }
        }
    }
    for (kind, routes) in [
        ("tls", vs.tls.iter().map(|r| &r.route).collect::<Vec<_>>()),
        ("tcp", vs.tcp.iter().map(|r| &r.route).collect()),
    ] {
        for (i, route) in routes.into_iter().enumerate() {
            for (j, d) in route.iter().enumerate() {
                if let Some(d) = &d.destination {
                    out.push((format!("spec.{kind}[{i}].route[{j}].destination"), d));
                }
            }
        }
    }
    out
}

/// IST0101 for subsets (an error, as istioctl reports it) and for hosts missing from the registry
/// (a warning here: a Kubernetes Service may define the host outside these files).
fn destination(s: &mut Sink, config: &Config, registry: &Registry, path: &str, d: &Destination) {
    if d.host.is_empty() || d.host == "*" {
        return;
    }
    let ns = s.res.namespace().to_string();
    let fqdn = host::resolve_short_name(&d.host, &ns, config.domain_suffix());
    let svc = registry.lookup(&fqdn, &ns, &config.mesh.default_service_export_to);
    if svc.is_none() {
        let msg =
            format!("destination host `{fqdn}` is not defined by any ServiceEntry; a gateway answers 503 (NC) for it");
        s.warn(
            Code::ReferencedResourceNotFound,
            &format!("{path}.host"),
            msg,
            "add a ServiceEntry (and WorkloadEntries) for the host, or fix the name",
        );
    }
    if let (Some(svc), Some(p)) = (svc, d.port) {
        if svc.port(p.number).is_none() {
            let ports: Vec<String> = svc.ports.iter().map(|p| p.number.to_string()).collect();
            let msg = format!("service `{fqdn}` has no port {}", p.number);
            s.error(
                Code::ReferencedResourceNotFound,
                &format!("{path}.port.number"),
                msg,
                &format!("use one of its ports: {}", ports.join(", ")),
            );
        }
    }
    let Some(subset) = &d.subset else { return };
    let service_ns = svc.map_or(ns.as_str(), |s| s.namespace.as_str());
    let rule = find_rule(config, &fqdn, &ns, service_ns);
    if rule.as_ref().and_then(|r| r.subset(subset)).is_none() {
        let hint = match &rule {
            Some(r) if !r.subsets.is_empty() => {
                let names: Vec<&str> = r.subsets.iter().map(|s| s.name.as_str()).collect();
                match crate::diag::did_you_mean(subset, names.iter().copied()) {
                    Some(b) => format!("did you mean `{b}`? Subsets of `{fqdn}`: {}", names.join(", ")),
                    None => format!("subsets of `{fqdn}` are: {}", names.join(", ")),
                }
            }
            _ => format!("define it in a DestinationRule for `{fqdn}`"),
        };
        let msg = format!("subset `{subset}` of host `{fqdn}` is not defined by any DestinationRule");
        s.error(Code::ReferencedResourceNotFound, &format!("{path}.subset"), msg, &hint);
    }
}

/// IST0145: two Gateways with the same selector claim the same host on the same port.
fn conflicting_gateways(config: &Config) -> Vec<Diagnostic> {
    let gws: Vec<(&Resource, &Gateway)> = config
        .of_kind(Kind::Gateway)
        .filter_map(|r| match &r.spec {
            Spec::Gateway(g) => Some((r, g)),
            _ => None,
        })
        .collect();
    let mut out = Vec::new();
    for (i, (ra, ga)) in gws.iter().enumerate() {
        let mut s = Sink::new(ra);
        for (rb, gb) in gws.iter().take(i) {
            if ga.selector != gb.selector {
                continue;
            }
            for (si, sa) in ga.servers.iter().enumerate() {
                for sb in &gb.servers {
                    let (Some(pa), Some(pb)) = (&sa.port, &sb.port) else {
                        continue;
                    };
                    if pa.number != pb.number || sa.bind != sb.bind {
                        continue;
                    }
                    let strip = |h: &String| h.split_once('/').map_or(h.clone(), |(_, n)| n.to_string());
                    let clash = sa
                        .hosts
                        .iter()
                        .map(strip)
                        .find(|ha| sb.hosts.iter().map(strip).any(|hb| host::matches(ha, &hb)));
                    if let Some(h) = clash {
                        let msg = format!(
                            "host `{h}` on port {} is also claimed by gateway {} with the same selector",
                            pa.number,
                            rb.key()
                        );
                        s.error(
                            Code::ConflictingGateways,
                            &format!("spec.servers[{si}]"),
                            msg,
                            "serve each host on a port from one Gateway, or give the Gateways different selectors",
                        );
                    }
                }
            }
        }
        out.extend(s.out);
    }
    out
}
