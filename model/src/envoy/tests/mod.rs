//! Exporter tests: each Plan feature as Envoy config (`routes`, `clusters`, `listeners`), and
//! Istio's own gateway simulation expectations replayed against the exported config
//! (`simulation`).

#![allow(clippy::expect_used, clippy::unwrap_used)] // Test code: a failure should panic.

mod capture;
mod clusters;
mod listeners;
mod routes;
mod simulation;

use serde_json::Value;

use super::{bootstrap, EnvoyOptions};
use crate::plan::{build, PlanOptions};

/// The bootstrap of `yaml` for a gateway with `istio: ingressgateway` (or the sidecar role).
pub fn export_with(yaml: &str, sidecar: bool, opts: &EnvoyOptions) -> Value {
    let loaded = crate::load_str("t.yaml", yaml);
    let errors: Vec<_> = loaded.diagnostics.iter().filter(|d| d.is_error()).collect();
    assert!(errors.is_empty(), "{errors:#?}");
    let labels = if sidecar {
        [("app".to_string(), "sleep".to_string())].into()
    } else {
        [("istio".to_string(), "ingressgateway".to_string())].into()
    };
    let (plan, _) = build(
        &loaded.config,
        &PlanOptions {
            labels: Some(labels),
            namespace: None,
            sidecar,
        },
    );
    bootstrap(&plan, opts)
}

pub fn export(yaml: &str) -> Value {
    export_with(yaml, false, &EnvoyOptions::default())
}

/// The listener named `name`.
pub fn listener<'v>(b: &'v Value, name: &str) -> &'v Value {
    b["static_resources"]["listeners"]
        .as_array()
        .and_then(|ls| ls.iter().find(|l| l["name"] == name))
        .unwrap_or_else(|| panic!("no listener {name} in {b:#}"))
}

pub fn cluster<'v>(b: &'v Value, name: &str) -> &'v Value {
    b["static_resources"]["clusters"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no cluster {name}"))
}

/// Every route config of the bootstrap, by name.
pub fn route_configs(b: &Value) -> Vec<&Value> {
    b["static_resources"]["listeners"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|l| l["filter_chains"].as_array().into_iter().flatten())
        .flat_map(|c| c["filters"].as_array().into_iter().flatten())
        .filter_map(|f| f["typed_config"].get("route_config"))
        .collect()
}

/// The first route of `domain` in route config `rc` whose match has `path_key: path`.
pub fn route<'v>(b: &'v Value, rc: &str, domain: &str, path_key: &str, path: &str) -> &'v Value {
    let rc = route_configs(b)
        .into_iter()
        .find(|r| r["name"] == rc)
        .unwrap_or_else(|| panic!("no route config {rc}"));
    let vh = rc["virtual_hosts"]
        .as_array()
        .and_then(|v| {
            v.iter()
                .find(|v| v["domains"].as_array().is_some_and(|d| d.iter().any(|d| d == domain)))
        })
        .unwrap_or_else(|| panic!("no virtual host {domain} in {rc:#}"));
    vh["routes"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["match"][path_key] == path))
        .unwrap_or_else(|| panic!("no route {path_key}={path} in {vh:#}"))
}

pub const GATEWAY_80: &str = "\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ['*']
---
";

/// A ServiceEntry for `svc.default.svc.cluster.local` on `port` with two labelled endpoints.
pub fn service(svc: &str, port: u32, protocol: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {svc}, namespace: default}}\nspec:\n  \
         hosts: [{svc}.default.svc.cluster.local]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  \
         ports: [{{number: {port}, name: p, protocol: {protocol}}}]\n  \
         endpoints: [{{address: 10.0.0.1, labels: {{version: v1}}}}, {{address: 10.0.0.2, labels: {{version: v2}}, weight: 3}}]\n---\n"
    )
}

/// A VirtualService on the gateway with the given `http:` list (YAML, indented two spaces).
pub fn virtual_service(http: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: vs, namespace: default}}\nspec:\n  \
         hosts: ['*']\n  gateways: [istio-system/gw]\n  http:\n{http}---\n"
    )
}
