//! Cross-resource checks, as `istioctl analyze` runs them (`pkg/config/analysis/analyzers`), with
//! Istio's codes and levels. One module per resource kind the analyzers start from.
//!
//! Where a files-only view cannot know what a cluster holds, meshbench says less than Istio: a
//! destination host that no ServiceEntry or Kubernetes Service in the files defines is a warning
//! (istioctl analyze on a cluster reports it as an error), since a Service may live outside them.

mod destination_rule;
mod gateway;
mod service_entry;
mod virtual_service;

#[cfg(test)]
mod tests;

use std::collections::BTreeSet;

use crate::config::Config;
use crate::diag::Diagnostic;
use crate::plan::registry::Registry;

pub fn analyze(config: &Config) -> Vec<Diagnostic> {
    let registry = Registry::build(config);
    let mut out = Vec::new();
    virtual_service::analyze(config, &registry, &mut out);
    gateway::analyze(config, &mut out);
    destination_rule::analyze(config, &mut out);
    service_entry::analyze(config, &mut out);
    out
}

/// Istio's `IsExportToAllNamespaces`: no exportTo, or one with `*`.
fn exports_to_all(export_to: &[String]) -> bool {
    export_to.is_empty() || export_to.iter().any(|e| e == "*")
}

/// The namespaces a resource is visible in, as the analyzers scope hosts: `*` alone when it is
/// exported to all, else its exportTo with `.` as its own namespace.
fn export_scopes(export_to: &[String], own_ns: &str) -> BTreeSet<String> {
    if exports_to_all(export_to) {
        return BTreeSet::from(["*".to_string()]);
    }
    export_to
        .iter()
        .map(|e| if e == "." { own_ns.to_string() } else { e.clone() })
        .collect()
}

/// Istio's analyzers' `ConvertHostToFQDN`: a short name gets `<ns>.svc.<domain>`.
fn to_fqdn(config: &Config, ns: &str, host: &str) -> String {
    if host.starts_with('*') || host.contains('.') {
        host.to_string()
    } else {
        format!("{host}.{ns}.svc.{}", config.domain_suffix())
    }
}

/// `name` and `namespace` of a `<name>.<namespace>.svc.<domain>` host, else the host itself in
/// `default_ns` (Istio's `GetResourceNameFromHost`).
fn resource_name_of_host(config: &Config, default_ns: &str, host: &str) -> (String, String) {
    let suffix = format!(".svc.{}", config.domain_suffix());
    if let Some(rest) = host.strip_suffix(&suffix) {
        if let Some((name, ns)) = rest.rsplit_once('.') {
            if !name.is_empty() && !ns.is_empty() {
                return (ns.to_string(), name.to_string());
            }
        }
    }
    (default_ns.to_string(), host.to_string())
}
