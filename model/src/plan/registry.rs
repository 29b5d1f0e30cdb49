//! The service registry of a file-configured mesh: one service per ServiceEntry host, with its
//! ports and endpoints (inline, or WorkloadEntries chosen by `workloadSelector`), and one per
//! Kubernetes Service (`<name>.<ns>.svc.<domain>`, endpoints from its EndpointSlices, its
//! Endpoints, or the Pods its selector picks, in that order, as Istio's Kubernetes registry reads them).

use std::collections::{BTreeMap, HashMap};

use crate::api::kube::{self, IntOrString, KubeObject, KubeServicePort, KubeSpec, ServiceSpec};
use crate::api::service_entry::{Location, Resolution, ServicePort, WorkloadEntry};
use crate::api::{Kind, Labels, Protocol, Spec};
use crate::config::Config;

/// One host of one ServiceEntry.
#[derive(Debug, Clone)]
pub struct Service {
    pub host: String,
    pub namespace: String,
    /// What defined it: `ServiceEntry namespace/name` or `Service namespace/name`.
    pub source: String,
    pub ports: Vec<ServicePort>,
    pub resolution: Resolution,
    pub location: Location,
    pub endpoints: Vec<WorkloadEntry>,
    pub export_to: Vec<String>,
    pub subject_alt_names: Vec<String>,
    /// The service's own addresses (ServiceEntry `addresses`, a Service's clusterIP): IPs or
    /// CIDRs a captured connection's original destination is matched against.
    pub addresses: Vec<String>,
}

impl Service {
    /// The port a destination without a port number means: the only one, if there is one.
    pub fn single_port(&self) -> Option<u32> {
        match self.ports.as_slice() {
            [p] => Some(p.number),
            _ => None,
        }
    }

    pub fn port(&self, number: u32) -> Option<&ServicePort> {
        self.ports.iter().find(|p| p.number == number)
    }
}

#[derive(Debug, Clone, Default)]
pub struct Registry {
    pub services: Vec<Service>,
    /// host -> positions in `services`, in order.
    by_host: HashMap<String, Vec<usize>>,
    /// Positions of services with a wildcard host.
    wildcards: Vec<usize>,
}

/// Whether a resource with `export_to` (empty: `defaults`) in `own_ns` is visible from `ns`.
pub fn exported_to(export_to: &[String], defaults: &[String], own_ns: &str, ns: &str) -> bool {
    let list = if export_to.is_empty() { defaults } else { export_to };
    list.iter().any(|e| e == "*" || e == ns || (e == "." && own_ns == ns))
}

/// Whether `labels` carries every label of `selector`.
pub fn labels_match(selector: &Labels, labels: &Labels) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

impl Registry {
    pub fn build(config: &Config) -> Registry {
        let mut services = Vec::new();
        let workloads = workload_index(config);
        for res in config.of_kind(Kind::ServiceEntry) {
            let Spec::ServiceEntry(se) = &res.spec else { continue };
            let endpoints = match &se.workload_selector {
                Some(sel) => workloads
                    .select(res.namespace(), &sel.labels)
                    .map(|we| (*we).clone())
                    .collect(),
                None => se.endpoints.clone(),
            };
            for host in &se.hosts {
                services.push(Service {
                    host: host.to_ascii_lowercase(),
                    namespace: res.namespace().to_string(),
                    source: format!("ServiceEntry {}", res.key()),
                    ports: se.ports.clone(),
                    resolution: se.effective_resolution(),
                    location: se.effective_location(),
                    endpoints: endpoints.clone(),
                    export_to: se.export_to.clone(),
                    subject_alt_names: se.subject_alt_names.clone(),
                    addresses: se.addresses.clone(),
                });
            }
        }
        let kube = KubeIndex::new(config);
        for svc in config.kube_of_kind("Service") {
            if let Some(spec) = svc.service() {
                services.push(kube_service(config, &kube, svc, spec));
            }
        }
        let mut by_host: HashMap<String, Vec<usize>> = HashMap::new();
        let mut wildcards = Vec::new();
        for (i, s) in services.iter().enumerate() {
            by_host.entry(s.host.clone()).or_default().push(i);
            if s.host.starts_with('*') {
                wildcards.push(i);
            }
        }
        Registry {
            services,
            by_host,
            wildcards,
        }
    }

    /// Services with exactly this host (lowercase), in definition order.
    pub fn with_host<'a>(&'a self, host: &str) -> impl Iterator<Item = &'a Service> + 'a {
        self.by_host
            .get(host)
            .into_iter()
            .flatten()
            .map(move |&i| &self.services[i])
    }

    /// Services whose host is a wildcard, in definition order.
    pub fn wildcard_services(&self) -> impl Iterator<Item = &Service> {
        self.wildcards.iter().map(move |&i| &self.services[i])
    }

    /// Services visible from namespace `ns` under the mesh's default exportTo.
    pub fn visible<'a>(&'a self, ns: &'a str, defaults: &'a [String]) -> impl Iterator<Item = &'a Service> + 'a {
        self.services
            .iter()
            .filter(move |s| exported_to(&s.export_to, defaults, &s.namespace, ns))
    }

    /// The service for an exact host, as seen from `ns` (the first ServiceEntry wins).
    pub fn lookup<'a>(&'a self, host: &str, ns: &'a str, defaults: &'a [String]) -> Option<&'a Service> {
        let host = host.to_ascii_lowercase();
        self.with_host(&host)
            .find(|s| exported_to(&s.export_to, defaults, &s.namespace, ns))
    }
}

/// Items (WorkloadEntries, Pods) by namespace and by each of their labels, so a selector finds
/// its items without reading all of them.
struct LabelIndex<'a, T> {
    items: Vec<(&'a str, &'a Labels, T)>,
    by_label: HashMap<(&'a str, &'a str, &'a str), Vec<usize>>,
    by_ns: HashMap<&'a str, Vec<usize>>,
}

impl<'a, T> LabelIndex<'a, T> {
    fn new(items: impl Iterator<Item = (&'a str, &'a Labels, T)>) -> Self {
        let items: Vec<_> = items.collect();
        let mut by_label: HashMap<(&str, &str, &str), Vec<usize>> = HashMap::new();
        let mut by_ns: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, (ns, labels, _)) in items.iter().enumerate() {
            by_ns.entry(ns).or_default().push(i);
            for (k, v) in labels.iter() {
                by_label.entry((ns, k.as_str(), v.as_str())).or_default().push(i);
            }
        }
        LabelIndex { items, by_label, by_ns }
    }

    /// The items of `ns` whose labels carry all of `selector`, in their order.
    fn select<'s>(&'s self, ns: &'s str, selector: &'s Labels) -> impl Iterator<Item = &'s T> + 's {
        let candidates: &[usize] = match selector.iter().next() {
            None => self.by_ns.get(ns).map_or(&[], Vec::as_slice),
            Some(_) => selector
                .iter()
                .map(|(k, v)| {
                    self.by_label
                        .get(&(ns, k.as_str(), v.as_str()))
                        .map_or(&[][..], Vec::as_slice)
                })
                .min_by_key(|c| c.len())
                .unwrap_or(&[]),
        };
        candidates
            .iter()
            .map(move |&i| &self.items[i])
            .filter(move |(_, labels, _)| labels_match(selector, labels))
            .map(|(_, _, t)| t)
    }
}

fn workload_index(config: &Config) -> LabelIndex<'_, &WorkloadEntry> {
    LabelIndex::new(config.of_kind(Kind::WorkloadEntry).filter_map(|r| match &r.spec {
        Spec::WorkloadEntry(we) => Some((r.namespace(), &we.labels, we)),
        _ => None,
    }))
}

/// Istio's `kube.ConvertProtocol`: UDP, else `appProtocol`, else the port name's prefix
/// (`http-web` is HTTP); unnamed well-known ports (SMTP, DNS, MySQL, MongoDB) are TCP.
pub fn kube_port_protocol(p: &KubeServicePort) -> Protocol {
    if p.protocol.as_deref() == Some("UDP") {
        return Protocol::Udp;
    }
    let name = match p.app_protocol.as_deref() {
        Some("kubernetes.io/h2c") => return Protocol::Http2,
        Some("kubernetes.io/ws") => return Protocol::Http,
        Some("kubernetes.io/wss") => return Protocol::Https,
        Some(app) => app,
        None => p.name.as_str(),
    };
    if name.len() >= 8 && name[..8].eq_ignore_ascii_case("grpc-web") {
        return Protocol::GrpcWeb;
    }
    let prefix = name.split('-').next().unwrap_or("");
    match Protocol::parse(prefix) {
        Some(p) if p != Protocol::Unsupported => p,
        _ if matches!(p.port, 25 | 53 | 3306 | 27017) => Protocol::Tcp,
        _ => Protocol::Unsupported,
    }
}

/// The Kubernetes objects a Service's endpoints come from, by the names that link them.
struct KubeIndex<'a> {
    slices: HashMap<(&'a str, &'a str), Vec<&'a KubeObject>>,
    endpoints: HashMap<(&'a str, &'a str), &'a KubeObject>,
    pods: HashMap<(&'a str, &'a str), &'a KubeObject>,
    pods_by_label: LabelIndex<'a, &'a KubeObject>,
}

impl<'a> KubeIndex<'a> {
    fn new(config: &'a Config) -> Self {
        let mut slices: HashMap<(&str, &str), Vec<&KubeObject>> = HashMap::new();
        for s in config.kube_of_kind("EndpointSlice") {
            if let Some(svc) = s.meta.labels.get(kube::SERVICE_NAME_LABEL) {
                slices
                    .entry((s.meta.namespace.as_str(), svc.as_str()))
                    .or_default()
                    .push(s);
            }
        }
        let by_name = |kind: &'a str| -> HashMap<(&'a str, &'a str), &'a KubeObject> {
            let mut m = HashMap::new();
            for o in config.kube_of_kind(kind) {
                m.entry((o.meta.namespace.as_str(), o.meta.name.as_str())).or_insert(o);
            }
            m
        };
        KubeIndex {
            slices,
            endpoints: by_name("Endpoints"),
            pods: by_name("Pod"),
            pods_by_label: LabelIndex::new(
                config
                    .kube_of_kind("Pod")
                    .map(|p| (p.meta.namespace.as_str(), &p.meta.labels, p)),
            ),
        }
    }

    /// The Pod an endpoint's `targetRef` names, for its labels.
    fn target_pod(&self, ns: &str, target: Option<&kube::ObjectReference>) -> Option<&'a KubeObject> {
        let t = target.filter(|t| t.kind.as_deref().is_none_or(|k| k == "Pod"))?;
        let ns = t.namespace.as_deref().unwrap_or(ns);
        self.pods.get(&(ns, t.name.as_str())).copied()
    }
}

fn kube_service(config: &Config, kube: &KubeIndex, svc: &KubeObject, spec: &ServiceSpec) -> Service {
    let ns = &svc.meta.namespace;
    let ports = spec
        .ports
        .iter()
        .map(|p| ServicePort {
            number: p.port,
            protocol: Some(kube_port_protocol(p).name().to_string()).filter(|n| !n.is_empty()),
            name: p.name.clone(),
            target_port: match p.target_port {
                Some(IntOrString::Int(n)) => Some(n),
                _ => None,
            },
        })
        .collect();
    // `networking.istio.io/exportTo: ns1,ns2,.` on the Service; absent means the mesh default.
    let export_to = svc
        .meta
        .annotations
        .get("networking.istio.io/exportTo")
        .map(|a| {
            a.split(',')
                .map(|e| e.trim().to_string())
                .filter(|e| !e.is_empty())
                .collect()
        })
        .unwrap_or_default();
    Service {
        host: format!("{}.{ns}.svc.{}", svc.meta.name, config.domain_suffix()).to_ascii_lowercase(),
        namespace: ns.clone(),
        source: format!("Service {}", svc.key()),
        ports,
        resolution: match spec.external_name {
            Some(_) => Resolution::Dns,
            None => Resolution::Static,
        },
        location: Location::MeshInternal,
        endpoints: kube_endpoints(kube, svc, spec),
        export_to,
        subject_alt_names: Vec::new(),
        addresses: spec
            .cluster_ip
            .iter()
            .filter(|ip| ip.parse::<std::net::IpAddr>().is_ok())
            .cloned()
            .collect(),
    }
}

fn kube_endpoints(kube: &KubeIndex, svc: &KubeObject, spec: &ServiceSpec) -> Vec<WorkloadEntry> {
    let ns = svc.meta.namespace.as_str();
    let name = svc.meta.name.as_str();
    if let Some(external) = &spec.external_name {
        return vec![WorkloadEntry {
            address: Some(external.clone()),
            ..Default::default()
        }];
    }
    let entry = |address: &str, ports: BTreeMap<String, u32>, pod: Option<&KubeObject>| WorkloadEntry {
        address: Some(address.to_string()),
        ports,
        labels: pod.map(|p| p.meta.labels.clone()).unwrap_or_default(),
        ..Default::default()
    };
    let named = |ports: &[kube::EndpointPort]| -> BTreeMap<String, u32> {
        ports
            .iter()
            .map(|p| (p.name.clone().unwrap_or_default(), p.port))
            .collect()
    };
    let slices = kube.slices.get(&(ns, name)).cloned().unwrap_or_default();
    if !slices.is_empty() {
        let mut out = Vec::new();
        for slice in slices {
            let KubeSpec::EndpointSlice { endpoints, ports } = &slice.spec else {
                continue;
            };
            for ep in endpoints.iter().filter(|e| e.conditions.ready != Some(false)) {
                let pod = kube.target_pod(ns, ep.target_ref.as_ref());
                out.extend(ep.addresses.iter().map(|a| entry(a, named(ports), pod)));
            }
        }
        return out;
    }
    let endpoints = kube.endpoints.get(&(ns, name)).copied();
    if let Some(KubeObject {
        spec: KubeSpec::Endpoints(subsets),
        ..
    }) = endpoints
    {
        return subsets
            .iter()
            .flat_map(|sub| {
                sub.addresses.iter().map(|a| {
                    let pod = kube.target_pod(ns, a.target_ref.as_ref());
                    entry(&a.ip, named(&sub.ports), pod)
                })
            })
            .collect();
    }
    if spec.selector.is_empty() {
        return Vec::new();
    }
    kube.pods_by_label
        .select(ns, &spec.selector)
        .filter_map(|&pod| {
            let KubeSpec::Pod { spec: pod_spec, status } = &pod.spec else {
                return None;
            };
            let ip = status.pod_ip.as_deref()?;
            let container_ports = kube::named_ports(pod_spec);
            let ports = spec
                .ports
                .iter()
                .map(|p| {
                    let target = match &p.target_port {
                        Some(IntOrString::Int(n)) => *n,
                        Some(IntOrString::Str(s)) => container_ports.get(s.as_str()).copied().unwrap_or(p.port),
                        None => p.port,
                    };
                    (p.name.clone(), target)
                })
                .collect();
            Some(entry(ip, ports, Some(pod)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(name: &str, number: u32, protocol: Option<&str>, app: Option<&str>) -> KubeServicePort {
        KubeServicePort {
            name: name.into(),
            port: number,
            target_port: None,
            protocol: protocol.map(String::from),
            app_protocol: app.map(String::from),
        }
    }

    #[test]
    fn kubernetes_port_protocols_follow_istios_conversion() {
        let cases = [
            (port("http", 80, None, None), Protocol::Http),
            (port("http-web", 80, None, None), Protocol::Http),
            (port("grpc-web-x", 80, None, None), Protocol::GrpcWeb),
            (port("GRPC", 80, None, None), Protocol::Grpc),
            (port("tcp-db", 5432, None, None), Protocol::Tcp),
            (port("web", 80, None, Some("https")), Protocol::Https),
            (port("web", 80, None, Some("kubernetes.io/h2c")), Protocol::Http2),
            (port("web", 80, None, Some("kubernetes.io/ws")), Protocol::Http),
            (port("web", 80, None, Some("kubernetes.io/wss")), Protocol::Https),
            (port("http", 53, Some("UDP"), None), Protocol::Udp),
            (port("", 3306, None, None), Protocol::Tcp),
            (port("", 8080, None, None), Protocol::Unsupported),
            (port("metrics", 9090, None, None), Protocol::Unsupported),
        ];
        for (p, want) in cases {
            assert_eq!(kube_port_protocol(&p), want, "{p:?}");
        }
    }

    fn registry(yaml: &str) -> Registry {
        let loaded = crate::load_str("t.yaml", yaml);
        assert!(
            loaded.diagnostics.iter().all(|d| !d.is_error()),
            "{:#?}",
            loaded.diagnostics
        );
        Registry::build(&loaded.config)
    }

    const SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: apps}\n\
        spec: {selector: {app: web}, ports: [{name: http, port: 80, targetPort: http-alt}, {name: grpc, port: 90, targetPort: 9090}]}\n---\n";

    fn pod(name: &str, ip: &str, labels: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: apps, labels: {labels}}}\n\
             spec: {{containers: [{{name: c, ports: [{{name: http-alt, containerPort: 8081}}]}}]}}\nstatus: {{podIP: {ip}}}\n---\n"
        )
    }

    #[test]
    fn a_service_gets_its_endpoints_from_slices_then_endpoints_then_pods() {
        let pods = pod("a", "10.0.0.1", "{app: web, version: v1}") + &pod("b", "10.0.0.2", "{app: other}");
        let r = registry(&format!("{SERVICE}{pods}"));
        let svc = &r.services[0];
        assert_eq!(svc.host, "web.apps.svc.cluster.local");
        assert_eq!(svc.source, "Service apps/web");
        assert_eq!(
            svc.ports
                .iter()
                .map(|p| (p.number, p.protocol.clone(), p.target_port))
                .collect::<Vec<_>>(),
            [(80, Some("HTTP".into()), None), (90, Some("GRPC".into()), Some(9090))]
        );
        assert_eq!(svc.endpoints.len(), 1, "only the Pod the selector picks");
        let ep = &svc.endpoints[0];
        assert_eq!(ep.address.as_deref(), Some("10.0.0.1"));
        assert_eq!(
            ep.ports.get("http"),
            Some(&8081),
            "a named targetPort is the container's port"
        );
        assert_eq!(ep.ports.get("grpc"), Some(&9090));
        assert_eq!(ep.labels.get("version").map(String::as_str), Some("v1"));

        let endpoints = "apiVersion: v1\nkind: Endpoints\nmetadata: {name: web, namespace: apps}\n\
            subsets: [{addresses: [{ip: 10.0.1.1, targetRef: {kind: Pod, name: a}}], ports: [{name: http, port: 7000}]}]\n---\n";
        let r = registry(&format!("{SERVICE}{pods}{endpoints}"));
        let ep = &r.services[0].endpoints;
        assert_eq!(
            (ep.len(), ep[0].address.as_deref(), ep[0].ports.get("http")),
            (1, Some("10.0.1.1"), Some(&7000))
        );
        assert_eq!(
            ep[0].labels.get("version").map(String::as_str),
            Some("v1"),
            "labels of the targetRef Pod"
        );

        let slice = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: web-x, namespace: apps, labels: {kubernetes.io/service-name: web}}\n\
            endpoints: [{addresses: [10.0.2.1]}, {addresses: [10.0.2.2], conditions: {ready: false}}]\nports: [{name: http, port: 6000}]\n---\n";
        let r = registry(&format!("{SERVICE}{pods}{endpoints}{slice}"));
        let ep = &r.services[0].endpoints;
        assert_eq!(
            ep.iter()
                .map(|e| e.address.clone().unwrap_or_default())
                .collect::<Vec<_>>(),
            ["10.0.2.1"],
            "not-ready endpoints are left out"
        );
        assert_eq!(ep[0].ports.get("http"), Some(&6000));
    }

    #[test]
    fn an_external_name_service_resolves_by_dns_and_export_to_comes_from_the_annotation() {
        let r = registry(
            "apiVersion: v1\nkind: Service\nmetadata: {name: ext, namespace: apps, annotations: {networking.istio.io/exportTo: 'a, .'}}\n\
             spec: {type: ExternalName, externalName: api.example.com, ports: [{name: https, port: 443}]}\n",
        );
        let svc = &r.services[0];
        assert_eq!(svc.resolution, Resolution::Dns);
        assert_eq!(svc.endpoints[0].address.as_deref(), Some("api.example.com"));
        assert_eq!(svc.export_to, ["a", "."]);
        assert!(r.lookup("ext.apps.svc.cluster.local", "apps", &["*".into()]).is_some());
        assert!(r.lookup("ext.apps.svc.cluster.local", "b", &["*".into()]).is_none());
    }

    #[test]
    fn export_to_names_namespaces_dot_is_the_own_and_star_is_every_one() {
        let list = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let seen = |export: &[&str], from: &str| exported_to(&list(export), &list(&["*"]), "apps", from);
        assert!(seen(&["."], "apps"));
        assert!(!seen(&["."], "b"));
        assert!(seen(&["b"], "b"));
        assert!(!seen(&["b"], "apps"), "a list without `.` leaves out the own namespace");
        assert!(seen(&["*"], "b"));
        // Empty: the mesh's default.
        assert!(seen(&[], "b"));
        assert!(!exported_to(&[], &list(&["."]), "apps", "b"));
        assert!(exported_to(&[], &list(&["."]), "apps", "apps"));
    }
}
