//! Plan -> Envoy v3 static bootstrap (JSON), with istiod's names and defaults, so that the same
//! Istio YAML runs on real Envoy exactly as meshgate runs it, and `istioctl proxy-config` users
//! recognise every listener, route config, virtual host and cluster. Pure: no I/O.
//!
//! Istio's sources for each choice are named where they are made (istio/istio
//! `pilot/pkg/networking/core/{gateway,listener,cluster_traffic_policy,route/route}.go`).

mod clusters;
mod listeners;
mod outbound;
mod routes;
mod tls;

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::plan::Plan;

/// Where the exported gateway binds and writes; everything else comes from the Plan.
#[derive(Debug, Clone)]
pub struct EnvoyOptions {
    /// Admin API address (port 0: any free port; Envoy writes it with `--admin-address-path`).
    pub admin: (String, u16),
    /// Plan listener port -> the address Envoy binds instead (tests bind `127.0.0.1:0`). Ports
    /// not listed bind the Plan's own address and port.
    pub bind: BTreeMap<u32, (String, u16)>,
    /// The sidecar role's outbound listener (Istio's outbound port is 15001).
    pub outbound: (String, u16),
    /// Access log path (`/dev/stdout` by default); None: no access log.
    pub access_log: Option<String>,
    /// Folder of `credentialName` secrets: `<dir>/<name>/{tls.crt,tls.key,ca.crt,ca.crl}`.
    pub credentials: Option<String>,
    /// The trust store used when an origination rule names no `caCertificates`.
    pub system_ca_file: String,
    /// `router` (gateway) or `sidecar`; derived from the Plan when None.
    pub node_type: Option<String>,
    /// The sidecar takes connections redirected by iptables (Istio's `virtualOutbound` with
    /// `use_original_dst` and a listener per outbound port) instead of explicit proxy requests.
    pub capture: bool,
}

impl Default for EnvoyOptions {
    fn default() -> Self {
        EnvoyOptions {
            admin: ("127.0.0.1".into(), 15000),
            bind: BTreeMap::new(),
            outbound: ("127.0.0.1".into(), 15001),
            access_log: Some("/dev/stdout".into()),
            credentials: None,
            system_ca_file: "/etc/ssl/certs/ca-certificates.crt".into(),
            node_type: None,
            capture: false,
        }
    }
}

/// `type.googleapis.com/<name>`.
pub(crate) fn type_url(name: &str) -> String {
    format!("type.googleapis.com/{name}")
}

/// `{"name": name, "typed_config": {"@type": …, …config}}`.
pub(crate) fn typed(name: &str, proto: &str, config: Value) -> Value {
    let mut cfg = match config {
        Value::Object(m) => m,
        _ => serde_json::Map::new(),
    };
    cfg.insert("@type".into(), Value::String(type_url(proto)));
    json!({"name": name, "typed_config": Value::Object(cfg)})
}

/// A socket address; `unix://path` becomes a pipe.
pub(crate) fn address(host: &str, port: u32) -> Value {
    match host.strip_prefix("unix://") {
        Some(path) => json!({"pipe": {"path": path}}),
        None => json!({"socket_address": {"address": host, "port_value": port}}),
    }
}

/// A percentage as Envoy's FractionalPercent (Istio: `translatePercentToFractionalPercent`).
pub(crate) fn fraction(percent: f64) -> Value {
    let numerator = (percent.clamp(0.0, 100.0) * 10_000.0).round() as u64;
    json!({"numerator": numerator, "denominator": "MILLION"})
}

/// Istio's default access-log format, TEXT (`pilot/pkg/model/telemetry_logging.go` `EnvoyTextLogFormat`).
pub const ISTIO_TEXT_LOG_FORMAT: &str =
    "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" \
%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% \
\"%UPSTREAM_TRANSPORT_FAILURE_REASON%\" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% \
%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \
\"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\" %UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS% \
%DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%\n";

pub(crate) fn access_logs(opts: &EnvoyOptions) -> Value {
    match &opts.access_log {
        None => json!([]),
        Some(path) => json!([typed(
            "envoy.access_loggers.file",
            "envoy.extensions.access_loggers.file.v3.FileAccessLog",
            json!({"path": path, "log_format": {"text_format_source": {"inline_string": ISTIO_TEXT_LOG_FORMAT}}}),
        )]),
    }
}

/// The node the bootstrap describes, named as istiod names proxies: `router~<ip>~<name>.<ns>~<ns>.svc.<suffix>`.
fn node(plan: &Plan, opts: &EnvoyOptions) -> Value {
    let kind = opts
        .node_type
        .clone()
        .unwrap_or_else(|| if plan.outbound.is_some() { "sidecar" } else { "router" }.into());
    let app = plan
        .labels
        .get("istio")
        .or_else(|| plan.labels.get("app"))
        .cloned()
        .unwrap_or_else(|| "meshbench".into());
    let ns = &plan.namespace;
    json!({
        "id": format!("{kind}~127.0.0.1~{app}.{ns}~{ns}.svc.{}", plan.mesh.domain_suffix),
        "cluster": format!("{app}.{ns}"),
        "metadata": {"NAMESPACE": ns, "LABELS": plan.labels, "EXPORTED_BY": "meshbench"},
    })
}

/// The whole static bootstrap for a Plan.
pub fn bootstrap(plan: &Plan, opts: &EnvoyOptions) -> Value {
    let (admin_host, admin_port) = &opts.admin;
    json!({
        "node": node(plan, opts),
        "admin": {"address": address(admin_host, u32::from(*admin_port))},
        "static_resources": {
            "listeners": listeners(plan, opts),
            "clusters": clusters::clusters(plan, opts),
        },
        // Istio's bootstrap sets no practical limit on downstream connections.
        "overload_manager": {"resource_monitors": [typed(
            "envoy.resource_monitors.global_downstream_max_connections",
            "envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig",
            json!({"max_active_downstream_connections": 2_147_483_647u64}),
        )]},
    })
}

/// Every listener: the Plan's gateway listeners, or the sidecar's outbound proxy.
pub fn listeners(plan: &Plan, opts: &EnvoyOptions) -> Vec<Value> {
    match &plan.outbound {
        Some(out) if opts.capture => outbound::captured(plan, out, opts),
        Some(out) => vec![outbound::listener(plan, out, opts)],
        None => plan
            .listeners
            .iter()
            .filter_map(|l| listeners::listener(plan, l, opts))
            .collect(),
    }
}

/// The bootstrap in the shape of Envoy's `/config_dump` (`configs[]` with one `@type` per kind),
/// so tools written for Envoy's admin API read it unchanged.
pub fn config_dump(plan: &Plan, opts: &EnvoyOptions, version: &str, last_updated: &str) -> Value {
    let boot = bootstrap(plan, opts);
    let listeners = boot["static_resources"]["listeners"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let clusters = boot["static_resources"]["clusters"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let routes: Vec<Value> = listeners
        .iter()
        .flat_map(|l| l["filter_chains"].as_array().cloned().unwrap_or_default())
        .flat_map(|c| c["filters"].as_array().cloned().unwrap_or_default())
        .filter_map(|f| f["typed_config"].get("route_config").cloned())
        .map(|rc| json!({"version_info": version, "route_config": rc, "last_updated": last_updated}))
        .collect();
    let wrap = |item: &str, v: &Value| json!({item: v, "last_updated": last_updated});
    json!({"configs": [
        {"@type": type_url("envoy.admin.v3.BootstrapConfigDump"), "bootstrap": boot, "last_updated": last_updated},
        {"@type": type_url("envoy.admin.v3.ClustersConfigDump"), "version_info": version,
         "static_clusters": clusters.iter().map(|c| wrap("cluster", c)).collect::<Vec<_>>()},
        {"@type": type_url("envoy.admin.v3.ListenersConfigDump"), "version_info": version,
         "static_listeners": listeners.iter().map(|l| wrap("listener", l)).collect::<Vec<_>>()},
        {"@type": type_url("envoy.admin.v3.RoutesConfigDump"), "static_route_configs": routes},
    ]})
}

#[cfg(test)]
mod tests;
