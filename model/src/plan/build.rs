//! Builds the Plan: selects the Gateways of one gateway workload, orders the VirtualServices bound
//! to each, and assembles listeners, route tables and clusters.

use std::collections::HashMap;

use crate::api::{Kind, Labels, Resource, Spec};
use crate::config::Config;
use crate::diag::Diagnostic;
use crate::host;

use super::registry::{labels_match, Registry};
use super::{listeners, policy, routes, Cluster, Endpoint, MeshSettings, Plan, RetryPolicy, PLAN_SCHEMA_VERSION};

/// What the Plan is for.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// The gateway workload's labels; Gateways whose selector they satisfy apply. None: every Gateway.
    pub labels: Option<Labels>,
    /// The gateway's config namespace; default: the namespace of the first selected Gateway, or
    /// MeshConfig's root namespace.
    pub namespace: Option<String>,
    /// Plan the sidecar role (outbound routing of VirtualServices bound to `mesh`) instead of
    /// Gateway listeners.
    pub sidecar: bool,
}

/// State shared while building: the config, registry and the current gateway and port.
pub(super) struct Ctx<'a> {
    pub config: &'a Config,
    pub registry: &'a Registry,
    pub proxy_ns: String,
    pub gateway: String,
    pub port: u32,
    pub default_retry: RetryPolicy,
    pub diags: Vec<Diagnostic>,
}

impl<'a> Ctx<'a> {
    pub fn diag(&mut self, d: Diagnostic) {
        if !self.diags.contains(&d) {
            self.diags.push(d);
        }
    }

    pub fn destination_cluster(&mut self, ns: &str, d: &crate::api::Destination) -> String {
        routes::destination_cluster_name(self, ns, d)
    }

    pub fn service_single_port(&self, fqdn: &str) -> Option<u32> {
        let defaults = &self.config.mesh.default_service_export_to;
        self.registry
            .lookup(fqdn, &self.proxy_ns, defaults)
            .and_then(|s| s.single_port())
    }

    /// Whether the service is registered and has no port `port`.
    pub fn service_lacks_port(&self, fqdn: &str, port: u32) -> bool {
        let defaults = &self.config.mesh.default_service_export_to;
        self.registry
            .lookup(fqdn, &self.proxy_ns, defaults)
            .is_some_and(|s| s.port(port).is_none())
    }

    /// VirtualServices bound to the current gateway and visible to the proxy's namespace, in
    /// Istio's order (`VirtualServicesForGateway`): those exported only to the proxy's own
    /// namespace first, then those exported to it by name, then those exported to all; each
    /// group by creation time, name, namespace. `exportTo` defaults to the mesh's
    /// `defaultVirtualServiceExportTo`; `~` hides a VirtualService from everyone.
    pub fn virtual_services_for_gateway(&self) -> Vec<&'a Resource> {
        let ns = self.proxy_ns.as_str();
        let defaults = &self.config.mesh.default_virtual_service_export_to;
        let config: &'a Config = self.config;
        let mut list: Vec<(u8, &'a Resource)> = config
            .of_kind(Kind::VirtualService)
            .filter_map(|r| {
                let Spec::VirtualService(vs) = &r.spec else { return None };
                if vs.hosts.is_empty() || !routes::bound_gateways(vs, r.namespace()).contains(&self.gateway) {
                    return None;
                }
                let export = if vs.export_to.is_empty() {
                    defaults
                } else {
                    &vs.export_to
                };
                let own = r.namespace();
                let names = |e: &String| e == ns || (e == "." && own == ns);
                let class = if export.iter().any(|e| e == "*") {
                    2
                } else if export.iter().any(|e| e == "~") || !export.iter().any(names) {
                    return None;
                } else if own == ns {
                    0
                } else {
                    1
                };
                Some((class, r))
            })
            .collect();
        list.sort_by(|(ca, a), (cb, b)| {
            let key = |c: u8, r: &Resource| {
                (
                    c,
                    r.meta.creation_timestamp.clone(),
                    r.name().to_string(),
                    r.namespace().to_string(),
                )
            };
            key(*ca, a).cmp(&key(*cb, b))
        });
        list.into_iter().map(|(_, r)| r).collect()
    }
}

/// Compiles a config into the Plan for one gateway workload. Returns the problems found while
/// planning (protocol conflicts, skipped servers, unresolvable ports); validation's are separate.
pub fn build(config: &Config, opts: &PlanOptions) -> (Plan, Vec<Diagnostic>) {
    let registry = Registry::build(config);
    let mut gateways: Vec<&Resource> = config
        .of_kind(Kind::Gateway)
        .filter(|r| match (&r.spec, &opts.labels) {
            (Spec::Gateway(g), Some(labels)) => labels_match(&g.selector, labels),
            (Spec::Gateway(_), None) => true,
            _ => false,
        })
        .collect();
    gateways.sort_by_key(|r| {
        (
            r.meta.creation_timestamp.clone(),
            r.name().to_string(),
            r.namespace().to_string(),
        )
    });
    let proxy_ns = opts
        .namespace
        .clone()
        .or_else(|| gateways.first().map(|g| g.namespace().to_string()))
        .unwrap_or_else(|| config.mesh.root_namespace.clone());
    let default_retry = match &config.mesh.default_http_retry_policy {
        Some(r) => routes::retry_policy(Some(r), &routes::istio_default_retry()),
        None => routes::istio_default_retry(),
    };
    let mut ctx = Ctx {
        config,
        registry: &registry,
        proxy_ns: proxy_ns.clone(),
        gateway: String::new(),
        port: 0,
        default_retry: default_retry.clone(),
        diags: Vec::new(),
    };
    let (listeners, mut route_tables, outbound) = if opts.sidecar {
        let (tables, outbound) = super::outbound::build(&mut ctx);
        (Vec::new(), tables, Some(outbound))
    } else {
        let (l, t) = listeners::build(&mut ctx, &gateways);
        (l, t, None)
    };
    route_tables.sort_by(|a, b| a.name.cmp(&b.name));
    let clusters = clusters(config, &registry, &proxy_ns, opts.labels.as_ref());
    let plan = Plan {
        schema_version: PLAN_SCHEMA_VERSION,
        labels: opts.labels.clone().unwrap_or_default(),
        namespace: proxy_ns,
        mesh: MeshSettings {
            outbound_traffic_policy: config.mesh.outbound_traffic_policy.mode,
            default_retry,
            connect_timeout: config.mesh.connect_timeout,
            domain_suffix: config.mesh.domain_suffix.clone(),
            dns_refresh_rate: config.mesh.dns_refresh_rate,
            protocol_detection_timeout: config.mesh.protocol_detection_timeout,
        },
        listeners,
        outbound,
        route_tables,
        clusters,
    };
    (plan, ctx.diags)
}

/// One cluster per visible service port, and one more per DestinationRule subset.
fn clusters(config: &Config, registry: &Registry, proxy_ns: &str, proxy_labels: Option<&Labels>) -> Vec<Cluster> {
    let mut out = Vec::new();
    let mut seen: HashMap<String, ()> = HashMap::new();
    let rules = policy::RuleIndex::new(config);
    for svc in registry.visible(proxy_ns, &config.mesh.default_service_export_to) {
        let rule = rules.find(&svc.host, proxy_ns, proxy_labels, &svc.namespace);
        for port in &svc.ports {
            let protocol = crate::api::Protocol::parse(port.protocol.as_deref().unwrap_or(""))
                .unwrap_or(crate::api::Protocol::Unsupported);
            let subsets = std::iter::once(None).chain(rule.iter().flat_map(|r| r.subsets.iter().map(Some)));
            for subset in subsets {
                let name = super::cluster_name(port.number, subset.map(|s| s.name.as_str()), &svc.host);
                if seen.insert(name.clone(), ()).is_some() {
                    continue;
                }
                let selector = subset.map(|s| s.labels.clone()).unwrap_or_default();
                out.push(Cluster {
                    name,
                    service: svc.host.clone(),
                    port: port.number,
                    subset: subset.map(|s| s.name.clone()),
                    protocol,
                    resolution: svc.resolution,
                    location: svc.location,
                    endpoints: endpoints(svc, port, &selector),
                    policy: policy::cluster_policy(
                        rule.as_ref(),
                        port.number,
                        subset.map(|s| s.name.as_str()),
                        config.mesh.connect_timeout,
                    ),
                    subject_alt_names: svc.subject_alt_names.clone(),
                });
            }
        }
    }
    out
}

/// Endpoints of one service port whose labels carry the subset's. A DNS service without
/// endpoints resolves its own host.
fn endpoints(
    svc: &super::registry::Service,
    port: &crate::api::service_entry::ServicePort,
    selector: &Labels,
) -> Vec<Endpoint> {
    use crate::api::service_entry::Resolution;
    let default_port = port.target_port.unwrap_or(port.number);
    if svc.endpoints.is_empty() {
        let dns = matches!(svc.resolution, Resolution::Dns | Resolution::DnsRoundRobin);
        if dns && selector.is_empty() && !host::is_wildcard(&svc.host) {
            return vec![Endpoint {
                address: svc.host.clone(),
                port: default_port,
                labels: Labels::new(),
                weight: 1,
                locality: None,
            }];
        }
        return Vec::new();
    }
    svc.endpoints
        .iter()
        .filter(|ep| labels_match(selector, &ep.labels))
        .filter_map(|ep| {
            Some(Endpoint {
                address: ep.address.clone()?,
                port: ep.ports.get(&port.name).copied().unwrap_or(default_port),
                labels: ep.labels.clone(),
                weight: ep.weight.unwrap_or(1).max(1),
                locality: ep.locality.clone(),
            })
        })
        .collect()
}
