//! DestinationRule lookup and merging, as Istio does it: lookup by namespace (the proxy's, the
//! service's, the root), most specific host first; several rules for one host merged (subsets
//! appended, the first traffic policy wins); port-level settings replace the whole policy; subset
//! policies override field by field.

use crate::api::destination_rule::{
    ClientTls, ClientTlsMode, DestinationRule, LoadBalancerSettings, PortTrafficPolicy, SimpleLb, Subset, TrafficPolicy,
};
use crate::api::{Kind, Spec};
use crate::config::Config;
use crate::host;

use super::registry::exported_to;
use super::ClusterPolicy;

/// The DestinationRules that apply to one host, merged.
#[derive(Debug, Clone, Default)]
pub struct MergedRule {
    /// `namespace/name` of every rule that contributed, in merge order.
    pub sources: Vec<String>,
    pub traffic_policy: Option<TrafficPolicy>,
    pub subsets: Vec<Subset>,
}

impl MergedRule {
    pub fn subset(&self, name: &str) -> Option<&Subset> {
        self.subsets.iter().find(|s| s.name == name)
    }
}

/// Finds and merges the DestinationRules for `service_host` (an FQDN), as seen by a proxy in
/// `proxy_ns`, for a service in `service_ns`.
pub fn find_rule(config: &Config, service_host: &str, proxy_ns: &str, service_ns: &str) -> Option<MergedRule> {
    let root = config.mesh.root_namespace.as_str();
    let mut namespaces = vec![proxy_ns, service_ns, root];
    namespaces.dedup();
    let defaults = &config.mesh.default_destination_rule_export_to;
    for ns in namespaces {
        let candidates: Vec<(&str, String, &DestinationRule)> = config
            .of_kind(Kind::DestinationRule)
            .filter(|r| r.namespace() == ns)
            .filter_map(|r| match &r.spec {
                Spec::DestinationRule(dr) if dr.workload_selector.is_none() => {
                    let h = host::resolve_short_name(&dr.host, r.namespace(), config.domain_suffix());
                    let visible = ns == proxy_ns || exported_to(&dr.export_to, defaults, ns, proxy_ns);
                    (visible && host::subset_of(service_host, &h)).then(|| (r.name(), h, dr))
                }
                _ => None,
            })
            .collect();
        // Most specific host: an exact name, else the longest wildcard.
        let Some(best) = candidates
            .iter()
            .map(|(_, h, _)| h)
            .max_by_key(|h| (!host::is_wildcard(h), h.len()))
        else {
            continue;
        };
        let best = best.clone();
        let mut merged = MergedRule::default();
        let mut chosen: Vec<_> = candidates.into_iter().filter(|(_, h, _)| *h == best).collect();
        chosen.sort_by(|a, b| a.0.cmp(b.0));
        for (name, _, dr) in chosen {
            merged.sources.push(format!("{ns}/{name}"));
            if merged.traffic_policy.is_none() {
                merged.traffic_policy = dr.traffic_policy.clone();
            }
            for s in &dr.subsets {
                if merged.subset(&s.name).is_none() {
                    merged.subsets.push(s.clone());
                }
            }
        }
        return Some(merged);
    }
    None
}

fn port_level(tp: &TrafficPolicy, port: u32) -> Option<&PortTrafficPolicy> {
    tp.port_level_settings
        .iter()
        .find(|p| p.port.is_some_and(|p| p.number == port))
}

/// The four parts of a policy that port-level settings carry.
#[derive(Debug, Clone, Default)]
struct Parts {
    lb: Option<LoadBalancerSettings>,
    cp: Option<crate::api::destination_rule::ConnectionPoolSettings>,
    od: Option<crate::api::destination_rule::OutlierDetection>,
    tls: Option<ClientTls>,
}

impl Parts {
    fn from_port(p: &PortTrafficPolicy) -> Parts {
        Parts {
            lb: p.load_balancer.clone(),
            cp: p.connection_pool.clone(),
            od: p.outlier_detection.clone(),
            tls: p.tls.clone(),
        }
    }

    /// The top-level policy, or its matching port-level entry, which replaces it whole.
    fn for_port(tp: &TrafficPolicy, port: u32) -> Parts {
        match port_level(tp, port) {
            Some(p) => Parts::from_port(p),
            None => Parts {
                lb: tp.load_balancer.clone(),
                cp: tp.connection_pool.clone(),
                od: tp.outlier_detection.clone(),
                tls: tp.tls.clone(),
            },
        }
    }
}

/// The policy in force for a cluster (port, subset), defaults explicit.
pub fn cluster_policy(
    rule: Option<&MergedRule>,
    port: u32,
    subset: Option<&str>,
    mesh_connect_timeout: crate::api::Duration,
) -> ClusterPolicy {
    let top = rule.and_then(|r| r.traffic_policy.as_ref());
    let mut parts = top.map(|tp| Parts::for_port(tp, port)).unwrap_or_default();
    let mut tunnel = top.and_then(|t| t.tunnel.clone());
    let mut proxy_protocol = top.and_then(|t| t.proxy_protocol.clone());
    let sub_tp = subset
        .and_then(|s| rule.and_then(|r| r.subset(s)))
        .and_then(|s| s.traffic_policy.as_ref());
    if let Some(sp) = sub_tp {
        match port_level(sp, port) {
            // The subset's own port-level entry decides all four parts, even where it is silent.
            Some(p) => parts = Parts::from_port(p),
            None => {
                parts.lb = sp.load_balancer.clone().or(parts.lb);
                parts.cp = sp.connection_pool.clone().or(parts.cp);
                parts.od = sp.outlier_detection.clone().or(parts.od);
                parts.tls = sp.tls.clone().or(parts.tls);
            }
        }
        tunnel = sp.tunnel.clone().or(tunnel);
        proxy_protocol = sp.proxy_protocol.clone().or(proxy_protocol);
    }
    let mut lb = parts.lb.unwrap_or_default();
    if lb.consistent_hash.is_none() {
        lb.simple = Some(match lb.simple {
            None | Some(SimpleLb::Unspecified | SimpleLb::LeastConn) => SimpleLb::LeastRequest,
            Some(other) => other,
        });
    }
    let mut tls = parts.tls.unwrap_or_default();
    tls.mode = Some(tls.effective_mode());
    if tls.mode == Some(ClientTlsMode::Disable) {
        tls = ClientTls {
            mode: Some(ClientTlsMode::Disable),
            ..Default::default()
        };
    }
    let connect_timeout = parts
        .cp
        .as_ref()
        .and_then(|c| c.tcp.as_ref())
        .and_then(|t| t.connect_timeout)
        .unwrap_or(mesh_connect_timeout);
    ClusterPolicy {
        destination_rule: rule.map(|r| r.sources.join(",")),
        load_balancer: lb,
        connect_timeout,
        connection_pool: parts.cp,
        outlier_detection: parts.od,
        tls,
        tunnel,
        proxy_protocol,
    }
}
