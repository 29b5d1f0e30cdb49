//! The subset of MeshConfig (`mesh/v1alpha1/config.proto`) that a gateway acts on, with Istio's defaults.

use serde::{Deserialize, Serialize};

use super::common::Duration;
use super::virtual_service::HttpRetry;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboundTrafficMode {
    RegistryOnly,
    AllowAny,
    AllowAnyDynamicDns,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct OutboundTrafficPolicy {
    pub mode: OutboundTrafficMode,
}

impl Default for OutboundTrafficPolicy {
    /// Istio's mesh default is ALLOW_ANY, although the proto's zero value is REGISTRY_ONLY.
    fn default() -> Self {
        OutboundTrafficPolicy {
            mode: OutboundTrafficMode::AllowAny,
        }
    }
}

/// `defaultConfig`, the proxies' default ProxyConfig: only `proxyMetadata` is read (the analyzer
/// of ServiceEntry addresses looks at DNS capture and auto-allocation there); the rest is ignored.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProxyConfig {
    pub proxy_metadata: std::collections::BTreeMap<String, String>,
}

/// MeshConfig fields meshbench uses. Other MeshConfig fields are accepted and ignored with a note.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct MeshConfig {
    pub outbound_traffic_policy: OutboundTrafficPolicy,
    pub default_http_retry_policy: Option<HttpRetry>,
    pub root_namespace: String,
    pub trust_domain: String,
    /// Not a MeshConfig field in Istio (it is istiod's `--domain` flag); accepted here because a
    /// file-configured mesh has no other place for it.
    pub domain_suffix: String,
    pub connect_timeout: Duration,
    pub dns_refresh_rate: Duration,
    pub default_service_export_to: Vec<String>,
    pub default_virtual_service_export_to: Vec<String>,
    pub default_destination_rule_export_to: Vec<String>,
    pub enable_auto_mtls: bool,
    pub protocol_detection_timeout: Duration,
    pub default_config: ProxyConfig,
}

impl MeshConfig {
    /// Names of the fields above, as written in YAML (for "ignored field" notes).
    pub const FIELDS: &'static [&'static str] = &[
        "outboundTrafficPolicy",
        "defaultHttpRetryPolicy",
        "rootNamespace",
        "trustDomain",
        "domainSuffix",
        "connectTimeout",
        "dnsRefreshRate",
        "defaultServiceExportTo",
        "defaultVirtualServiceExportTo",
        "defaultDestinationRuleExportTo",
        "enableAutoMtls",
        "protocolDetectionTimeout",
        "defaultConfig",
    ];
}

impl Default for MeshConfig {
    /// `DefaultMeshConfig` of `istio/istio pkg/config/mesh/mesh.go`.
    fn default() -> Self {
        MeshConfig {
            outbound_traffic_policy: OutboundTrafficPolicy::default(),
            default_http_retry_policy: None,
            root_namespace: "istio-system".into(),
            trust_domain: "cluster.local".into(),
            domain_suffix: "cluster.local".into(),
            connect_timeout: Duration::from_millis(10_000),
            dns_refresh_rate: Duration::from_millis(60_000),
            default_service_export_to: vec!["*".into()],
            default_virtual_service_export_to: vec!["*".into()],
            default_destination_rule_export_to: vec!["*".into()],
            enable_auto_mtls: true,
            protocol_detection_timeout: Duration::default(),
            default_config: ProxyConfig::default(),
        }
    }
}
