//! serde types for Istio's networking API, one file per resource. `networking.istio.io` v1,
//! v1beta1 and v1alpha3 share one schema, so all three decode into the same structs.

pub mod common;
pub mod destination_rule;
pub mod gateway;
pub mod kube;
pub mod mesh;
pub mod service_entry;
pub mod virtual_service;

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use common::{Destination, Duration, Labels, Percent, PortSelector, StringMatch};
pub use destination_rule::DestinationRule;
pub use gateway::Gateway;
pub use mesh::MeshConfig;
pub use service_entry::{ServiceEntry, WorkloadEntry};
pub use virtual_service::VirtualService;

use crate::load::Node;

/// The API group every resource here belongs to.
pub const GROUP: &str = "networking.istio.io";
/// The versions accepted; they are aliases of one schema.
pub const VERSIONS: &[&str] = &["v1", "v1beta1", "v1alpha3"];

/// The kinds meshbench understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    Gateway,
    VirtualService,
    DestinationRule,
    ServiceEntry,
    WorkloadEntry,
}

impl Kind {
    pub const ALL: &'static [Kind] = &[
        Kind::Gateway,
        Kind::VirtualService,
        Kind::DestinationRule,
        Kind::ServiceEntry,
        Kind::WorkloadEntry,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Gateway => "Gateway",
            Kind::VirtualService => "VirtualService",
            Kind::DestinationRule => "DestinationRule",
            Kind::ServiceEntry => "ServiceEntry",
            Kind::WorkloadEntry => "WorkloadEntry",
        }
    }

    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.iter().copied().find(|k| k.name() == name)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Kubernetes ObjectMeta, the fields a config file may carry.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ObjectMeta {
    pub name: String,
    /// Empty in the file means `default`; the decoder fills it in (with a warning).
    pub namespace: String,
    pub labels: Labels,
    pub annotations: Labels,
    pub creation_timestamp: Option<String>,
    pub generation: Option<i64>,
    pub resource_version: Option<String>,
    pub uid: Option<String>,
    pub generate_name: Option<String>,
    pub finalizers: Vec<String>,
    pub owner_references: Vec<serde_json::Value>,
    pub managed_fields: Vec<serde_json::Value>,
    pub self_link: Option<String>,
    pub deletion_timestamp: Option<String>,
    pub deletion_grace_period_seconds: Option<i64>,
}

/// The spec of a resource, by kind. Not boxed: a config holds a few hundred resources at most,
/// built once per load.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "spec")]
pub enum Spec {
    Gateway(Gateway),
    VirtualService(VirtualService),
    DestinationRule(DestinationRule),
    ServiceEntry(ServiceEntry),
    WorkloadEntry(WorkloadEntry),
}

impl Spec {
    pub fn kind(&self) -> Kind {
        match self {
            Spec::Gateway(_) => Kind::Gateway,
            Spec::VirtualService(_) => Kind::VirtualService,
            Spec::DestinationRule(_) => Kind::DestinationRule,
            Spec::ServiceEntry(_) => Kind::ServiceEntry,
            Spec::WorkloadEntry(_) => Kind::WorkloadEntry,
        }
    }
}

/// Where a resource came from: its file, the line its document starts on, and its node tree
/// (to find the line of any field).
#[derive(Debug, Clone)]
pub struct Source {
    pub file: Arc<str>,
    pub line: usize,
    pub root: Arc<Node>,
}

impl Source {
    /// The line of a field path such as `spec.http[1].route[0].weight`.
    pub fn line_of(&self, path: &str) -> usize {
        if path.is_empty() {
            self.line
        } else {
            self.root.line_of(path)
        }
    }
}

/// One decoded Istio resource.
#[derive(Debug, Clone)]
pub struct Resource {
    pub api_version: String,
    pub meta: ObjectMeta,
    pub spec: Spec,
    /// `status` as the cluster wrote it (`kubectl get -o yaml`); Null when absent.
    pub status: serde_json::Value,
    pub source: Source,
}

impl Resource {
    pub fn kind(&self) -> Kind {
        self.spec.kind()
    }

    pub fn name(&self) -> &str {
        &self.meta.name
    }

    pub fn namespace(&self) -> &str {
        &self.meta.namespace
    }

    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.meta.namespace, self.meta.name)
    }

    /// The resource as a Kubernetes-style document (for round trips and `--output yaml`).
    pub fn to_json(&self) -> serde_json::Value {
        let spec = serde_json::to_value(&self.spec).unwrap_or_default();
        serde_json::json!({
            "apiVersion": self.api_version,
            "kind": self.kind().name(),
            "metadata": self.meta,
            "spec": spec.get("spec").cloned().unwrap_or_default(),
        })
    }
}

/// Port protocols as Istio names them (`pkg/config/protocol/instance.go`); parsing is case-insensitive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING-KEBAB-CASE")]
pub enum Protocol {
    Http,
    Https,
    Http2,
    Grpc,
    GrpcWeb,
    Tcp,
    Tls,
    Mongo,
    Redis,
    Mysql,
    HttpProxy,
    Udp,
    /// No protocol given: Istio sniffs it.
    Unsupported,
}

impl Protocol {
    pub const NAMES: &'static [&'static str] = &[
        "HTTP",
        "HTTPS",
        "HTTP2",
        "GRPC",
        "GRPC-WEB",
        "TCP",
        "TLS",
        "MONGO",
        "REDIS",
        "MYSQL",
        "HTTP_PROXY",
        "UDP",
    ];

    /// The canonical upper-case name (`HTTPS`, `GRPC-WEB`, …).
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Http => "HTTP",
            Protocol::Https => "HTTPS",
            Protocol::Http2 => "HTTP2",
            Protocol::Grpc => "GRPC",
            Protocol::GrpcWeb => "GRPC-WEB",
            Protocol::Tcp => "TCP",
            Protocol::Tls => "TLS",
            Protocol::Mongo => "MONGO",
            Protocol::Redis => "REDIS",
            Protocol::Mysql => "MYSQL",
            Protocol::HttpProxy => "HTTP_PROXY",
            Protocol::Udp => "UDP",
            Protocol::Unsupported => "",
        }
    }

    pub fn parse(s: &str) -> Option<Protocol> {
        Some(match s.to_ascii_uppercase().as_str() {
            "HTTP" => Protocol::Http,
            "HTTPS" => Protocol::Https,
            "HTTP2" => Protocol::Http2,
            "GRPC" => Protocol::Grpc,
            "GRPC-WEB" => Protocol::GrpcWeb,
            "TCP" => Protocol::Tcp,
            "TLS" => Protocol::Tls,
            "MONGO" => Protocol::Mongo,
            "REDIS" => Protocol::Redis,
            "MYSQL" => Protocol::Mysql,
            "HTTP_PROXY" => Protocol::HttpProxy,
            "UDP" => Protocol::Udp,
            "" => Protocol::Unsupported,
            _ => return None,
        })
    }

    /// HTTP-family protocols: routed by VirtualService `http` rules.
    pub fn is_http(self) -> bool {
        matches!(
            self,
            Protocol::Http | Protocol::Http2 | Protocol::Grpc | Protocol::GrpcWeb | Protocol::HttpProxy
        )
    }

    /// Whether the upstream speaks HTTP/2 (HTTP2 and gRPC ports).
    pub fn is_http2(self) -> bool {
        matches!(self, Protocol::Http2 | Protocol::Grpc | Protocol::GrpcWeb)
    }

    pub fn is_tls(self) -> bool {
        matches!(self, Protocol::Https | Protocol::Tls)
    }
}
