//! The Kubernetes objects a dump of a cluster carries beside Istio's config, in the fields Istio
//! reads from them: a `Service` is a registry entry (`<name>.<ns>.svc.<domain>`), its endpoints come
//! from `EndpointSlice`s, `Endpoints` or the `Pod`s its selector picks, and Pods' labels are what
//! subsets and gateway selectors match. Unknown fields are ignored, as the API server prunes them.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use super::common::Labels;
use super::Source;

/// `metadata` of a Kubernetes object, the fields Istio reads.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct KubeMeta {
    pub name: String,
    pub namespace: String,
    pub labels: Labels,
    pub annotations: Labels,
}

/// An `int-or-string` field, such as a Service port's `targetPort`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum IntOrString {
    Int(u32),
    Str(String),
}

impl<'de> Deserialize<'de> for IntOrString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u32),
            Str(String),
        }
        Ok(match Raw::deserialize(d)? {
            Raw::Int(n) => IntOrString::Int(n),
            Raw::Str(s) => match s.parse() {
                Ok(n) => IntOrString::Int(n),
                Err(_) => IntOrString::Str(s),
            },
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ServiceSpec {
    pub ports: Vec<KubeServicePort>,
    pub selector: Labels,
    #[serde(rename = "clusterIP")]
    pub cluster_ip: Option<String>,
    #[serde(rename = "type")]
    pub type_: Option<String>,
    pub external_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct KubeServicePort {
    pub name: String,
    pub port: u32,
    pub target_port: Option<IntOrString>,
    /// `TCP` (the default), `UDP` or `SCTP`.
    pub protocol: Option<String>,
    pub app_protocol: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PodSpec {
    pub containers: Vec<Container>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Container {
    pub name: String,
    pub ports: Vec<ContainerPort>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ContainerPort {
    pub name: Option<String>,
    pub container_port: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PodStatus {
    #[serde(rename = "podIP")]
    pub pod_ip: Option<String>,
}

/// `Endpoints` (core/v1): addresses and ports per subset.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EndpointSubset {
    pub addresses: Vec<EndpointAddress>,
    pub ports: Vec<EndpointPort>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EndpointAddress {
    pub ip: String,
    pub target_ref: Option<ObjectReference>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ObjectReference {
    pub kind: Option<String>,
    pub name: String,
    pub namespace: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EndpointPort {
    pub name: Option<String>,
    pub port: u32,
}

/// One endpoint of an `EndpointSlice` (discovery.k8s.io/v1).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SliceEndpoint {
    pub addresses: Vec<String>,
    pub conditions: SliceConditions,
    pub target_ref: Option<ObjectReference>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SliceConditions {
    /// Absent means ready.
    pub ready: Option<bool>,
}

/// The kinds of Kubernetes object meshbench reads, each with the parts Istio uses.
#[derive(Debug, Clone, PartialEq)]
pub enum KubeSpec {
    Service(ServiceSpec),
    Pod {
        spec: PodSpec,
        status: PodStatus,
    },
    Endpoints(Vec<EndpointSubset>),
    EndpointSlice {
        endpoints: Vec<SliceEndpoint>,
        ports: Vec<EndpointPort>,
    },
}

impl KubeSpec {
    pub fn kind(&self) -> &'static str {
        match self {
            KubeSpec::Service(_) => "Service",
            KubeSpec::Pod { .. } => "Pod",
            KubeSpec::Endpoints(_) => "Endpoints",
            KubeSpec::EndpointSlice { .. } => "EndpointSlice",
        }
    }
}

/// `(apiVersion, kind)` of each object read, as Kubernetes serves them.
pub const KUBE_KINDS: &[(&str, &str)] = &[
    ("v1", "Service"),
    ("v1", "Pod"),
    ("v1", "Endpoints"),
    ("discovery.k8s.io/v1", "EndpointSlice"),
    ("discovery.k8s.io/v1beta1", "EndpointSlice"),
];

/// One Kubernetes object of a config.
#[derive(Debug, Clone)]
pub struct KubeObject {
    pub meta: KubeMeta,
    pub spec: KubeSpec,
    pub source: Source,
}

impl KubeObject {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.meta.namespace, self.meta.name)
    }

    pub fn service(&self) -> Option<&ServiceSpec> {
        match &self.spec {
            KubeSpec::Service(s) => Some(s),
            _ => None,
        }
    }
}

/// The label an EndpointSlice names its Service with.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Port name to number, as a Pod's containers declare them (for named `targetPort`s).
pub fn named_ports(spec: &PodSpec) -> BTreeMap<&str, u32> {
    spec.containers
        .iter()
        .flat_map(|c| c.ports.iter())
        .filter_map(|p| Some((p.name.as_deref()?, p.container_port)))
        .collect()
}
