//! DestinationRule lookup and merging, as Istio does it: lookup by namespace (the proxy's, the
//! service's, the root) with exportTo and workloadSelector, most specific host first; several
//! rules for one host merged (subsets appended, the first traffic policy wins); port-level
//! settings replace the whole policy; subset policies override field by field.

use std::collections::{BTreeSet, HashMap};

use crate::api::destination_rule::{
    ClientTls, ClientTlsMode, DestinationRule, LoadBalancerSettings, PortTrafficPolicy, SimpleLb, Subset, TrafficPolicy,
};
use crate::api::{Kind, Labels, Spec};
use crate::config::Config;
use crate::host;

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

/// One DestinationRule as istiod indexes it: its host resolved in its namespace and the
/// namespaces it is exported to (a rule with a workloadSelector is private to its namespace).
#[derive(Debug)]
struct Indexed<'a> {
    key: String,
    ns: &'a str,
    host: String,
    export: BTreeSet<String>,
    rule: &'a DestinationRule,
}

impl Indexed<'_> {
    /// In `namespaceLocal`: the rule applies to proxies of its own namespace.
    fn local(&self) -> bool {
        self.export.is_empty() || ["*", "."].iter().any(|e| self.export.contains(*e)) || self.export.contains(self.ns)
    }

    /// Only its own namespace sees it.
    fn private_only(&self, defaults: &[String]) -> bool {
        (self.export.is_empty() && defaults.iter().any(|d| d == "."))
            || (self.export.len() == 1 && (self.export.contains(".") || self.export.contains(self.ns)))
    }

    /// Exported from its namespace to a proxy in `client_ns`.
    fn exported_to(&self, client_ns: &str) -> bool {
        self.export.is_empty() || self.export.contains("*") || self.export.contains(client_ns)
    }
}

/// Every DestinationRule of a config, indexed once (namespace and host) for the lookups of a
/// Plan or an analysis.
#[derive(Debug)]
pub struct RuleIndex<'a> {
    root: &'a str,
    defaults: &'a [String],
    /// In istiod's order: with a workloadSelector first, then by creation time, name, namespace.
    rules: Vec<Indexed<'a>>,
    /// (namespace, host) -> rules, for exact hosts.
    exact: HashMap<(&'a str, String), Vec<usize>>,
    /// namespace -> rules with a wildcard host.
    wildcard: HashMap<&'a str, Vec<usize>>,
}

impl<'a> RuleIndex<'a> {
    pub fn new(config: &'a Config) -> RuleIndex<'a> {
        let mut rules: Vec<(Option<String>, Indexed<'a>)> = config
            .of_kind(Kind::DestinationRule)
            .filter_map(|r| match &r.spec {
                Spec::DestinationRule(dr) => Some((
                    r.meta.creation_timestamp.clone(),
                    Indexed {
                        key: r.key(),
                        ns: r.namespace(),
                        host: host::resolve_short_name(&dr.host, r.namespace(), config.domain_suffix()),
                        export: match dr.workload_selector {
                            Some(_) => BTreeSet::from([".".to_string()]),
                            None => dr.export_to.iter().cloned().collect(),
                        },
                        rule: dr,
                    },
                )),
                _ => None,
            })
            .collect();
        rules.sort_by(|(ta, a), (tb, b)| order_key(ta, a).cmp(&order_key(tb, b)));
        let rules: Vec<Indexed<'a>> = rules.into_iter().map(|(_, i)| i).collect();
        let mut exact: HashMap<(&'a str, String), Vec<usize>> = HashMap::new();
        let mut wildcard: HashMap<&'a str, Vec<usize>> = HashMap::new();
        for (n, i) in rules.iter().enumerate() {
            exact.entry((i.ns, i.host.clone())).or_default().push(n);
            if host::is_wildcard(&i.host) {
                wildcard.entry(i.ns).or_default().push(n);
            }
        }
        RuleIndex {
            root: config.mesh.root_namespace.as_str(),
            defaults: &config.mesh.default_destination_rule_export_to,
            rules,
            exact,
            wildcard,
        }
    }

    /// Finds and merges the DestinationRules for `service_host` (an FQDN) as istiod does for a
    /// proxy in `proxy_ns` with `proxy_labels`, for a service in `service_ns` (`destinationRule`
    /// and `SidecarScope.DestinationRule`): the rules local to the proxy's namespace (when that
    /// is the root namespace, only the root's private ones), else those the service's namespace
    /// exports to the proxy's, else those the root namespace exports; the most specific host in
    /// the first namespace that has one. Rules for one host with the same exportTo and selector
    /// are merged (subsets appended, the first traffic policy kept), oldest first; a rule whose
    /// workloadSelector matches the proxy's labels wins over one without.
    pub fn find(
        &self,
        service_host: &str,
        proxy_ns: &str,
        proxy_labels: Option<&Labels>,
        service_ns: &str,
    ) -> Option<MergedRule> {
        let (root, defaults) = (self.root, self.defaults);
        // The three places istiod looks, in order, each a namespace and a test.
        let steps: [(&str, u8); 3] = [
            (if proxy_ns == root { root } else { proxy_ns }, 0),
            (service_ns, 1),
            (root, 2),
        ];
        let in_step = |step: u8, i: &Indexed| match step {
            0 if proxy_ns == root => i.private_only(defaults),
            0 => i.local(),
            _ => !i.private_only(defaults) && i.exported_to(proxy_ns),
        };
        let service_host = service_host.to_ascii_lowercase();
        for (ns, step) in steps {
            let exact: Vec<&Indexed> = self
                .exact
                .get(&(ns, service_host.clone()))
                .into_iter()
                .flatten()
                .map(|&n| &self.rules[n])
                .filter(|i| in_step(step, i))
                .collect();
            if !exact.is_empty() {
                return Some(pick_for_proxy(&exact, proxy_ns, proxy_labels));
            }
            let wild: Vec<&Indexed> = self
                .wildcard
                .get(ns)
                .into_iter()
                .flatten()
                .map(|&n| &self.rules[n])
                .filter(|i| in_step(step, i) && host::subset_of(&service_host, &i.host))
                .collect();
            // The most specific wildcard: the longest.
            let Some(best) = wild.iter().map(|i| i.host.len()).max() else {
                continue;
            };
            let chosen: Vec<&Indexed> = wild.into_iter().filter(|i| i.host.len() == best).collect();
            return Some(pick_for_proxy(&chosen, proxy_ns, proxy_labels));
        }
        None
    }
}

/// istiod's order of DestinationRules: with a workloadSelector first, then by creation time,
/// name and namespace (borrowed, so sorting allocates nothing).
fn order_key<'k>(created: &'k Option<String>, i: &'k Indexed) -> (bool, Option<&'k str>, Option<&'k str>, &'k str) {
    (
        i.rule.workload_selector.is_none(),
        created.as_deref(),
        i.key.split_once('/').map(|(_, n)| n),
        i.ns,
    )
}

/// The consolidated rules of one host, then the one this proxy uses: a rule of its own namespace
/// whose selector its labels match, else the one without a selector (without labels: all of them).
fn pick_for_proxy(chosen: &[&Indexed], proxy_ns: &str, proxy_labels: Option<&Labels>) -> MergedRule {
    let mut groups: Vec<(Option<&Labels>, &BTreeSet<String>, MergedRule)> = Vec::new();
    for i in chosen {
        let selector = i.rule.workload_selector.as_ref().map(|w| &w.match_labels);
        let at = match groups.iter().position(|(s, e, _)| *s == selector && **e == i.export) {
            Some(at) => at,
            None => {
                groups.push((selector, &i.export, MergedRule::default()));
                groups.len() - 1
            }
        };
        let merged = &mut groups[at].2;
        merged.sources.push(i.key.clone());
        if merged.traffic_policy.is_none() {
            merged.traffic_policy = i.rule.traffic_policy.clone();
        }
        for s in &i.rule.subsets {
            if merged.subset(&s.name).is_none() {
                merged.subsets.push(s.clone());
            }
        }
    }
    // No labels: any workload, so every rule counts (the analyzers' view).
    if proxy_labels.is_none() {
        let mut all = MergedRule::default();
        for (_, _, m) in &groups {
            all.sources.extend(m.sources.iter().cloned());
            if all.traffic_policy.is_none() {
                all.traffic_policy = m.traffic_policy.clone();
            }
            for s in &m.subsets {
                if all.subset(&s.name).is_none() {
                    all.subsets.push(s.clone());
                }
            }
        }
        return all;
    }
    let selected = groups.iter().find(|(sel, _, m)| {
        let own_ns = m.sources.first().is_some_and(|k| k.split('/').next() == Some(proxy_ns));
        match (sel, proxy_labels) {
            (Some(sel), Some(labels)) => own_ns && sel.iter().all(|(k, v)| labels.get(k) == Some(v)),
            _ => false,
        }
    });
    let catch_all = groups.iter().rev().find(|(sel, _, _)| sel.is_none());
    selected.or(catch_all).map(|(_, _, m)| m.clone()).unwrap_or_default()
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
