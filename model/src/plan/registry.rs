//! The service registry of a file-configured mesh: one service per ServiceEntry host, with its
//! ports and endpoints (inline, or WorkloadEntries chosen by `workloadSelector`).

use crate::api::service_entry::{Location, Resolution, ServicePort, WorkloadEntry};
use crate::api::{Kind, Labels, Resource, Spec};
use crate::config::Config;

/// One host of one ServiceEntry.
#[derive(Debug, Clone)]
pub struct Service {
    pub host: String,
    pub namespace: String,
    /// `namespace/name` of the ServiceEntry.
    pub service_entry: String,
    pub ports: Vec<ServicePort>,
    pub resolution: Resolution,
    pub location: Location,
    pub endpoints: Vec<WorkloadEntry>,
    pub export_to: Vec<String>,
    pub subject_alt_names: Vec<String>,
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
        for res in config.of_kind(Kind::ServiceEntry) {
            let Spec::ServiceEntry(se) = &res.spec else { continue };
            let endpoints = match &se.workload_selector {
                Some(sel) => selected_workloads(config, res, &sel.labels),
                None => se.endpoints.clone(),
            };
            for host in &se.hosts {
                services.push(Service {
                    host: host.to_ascii_lowercase(),
                    namespace: res.namespace().to_string(),
                    service_entry: res.key(),
                    ports: se.ports.clone(),
                    resolution: se.effective_resolution(),
                    location: se.effective_location(),
                    endpoints: endpoints.clone(),
                    export_to: se.export_to.clone(),
                    subject_alt_names: se.subject_alt_names.clone(),
                });
            }
        }
        Registry { services }
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
        self.visible(ns, defaults).find(|s| s.host == host)
    }
}

fn selected_workloads(config: &Config, se: &Resource, selector: &Labels) -> Vec<WorkloadEntry> {
    config
        .of_kind(Kind::WorkloadEntry)
        .filter(|r| r.namespace() == se.namespace())
        .filter_map(|r| match &r.spec {
            Spec::WorkloadEntry(we) if labels_match(selector, &we.labels) => Some(we.clone()),
            _ => None,
        })
        .collect()
}
