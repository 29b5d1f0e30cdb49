//! ServiceEntry and WorkloadEntry (`service_entry.proto`, `workload_entry.proto`): the service registry
//! of a mesh without Kubernetes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::common::Labels;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Location {
    MeshExternal,
    MeshInternal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Resolution {
    None,
    Static,
    Dns,
    DnsRoundRobin,
    DynamicDns,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ServiceEntry {
    pub hosts: Vec<String>,
    pub addresses: Vec<String>,
    pub ports: Vec<ServicePort>,
    /// Absent means MESH_EXTERNAL: the enum's zero value.
    pub location: Option<Location>,
    /// Absent means NONE: the enum's zero value.
    pub resolution: Option<Resolution>,
    pub endpoints: Vec<WorkloadEntry>,
    pub workload_selector: Option<WorkloadSelector>,
    pub export_to: Vec<String>,
    pub subject_alt_names: Vec<String>,
}

impl ServiceEntry {
    pub fn effective_resolution(&self) -> Resolution {
        self.resolution.unwrap_or(Resolution::None)
    }

    pub fn effective_location(&self) -> Location {
        self.location.unwrap_or(Location::MeshExternal)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ServicePort {
    pub number: u32,
    /// Empty means protocol sniffing; case-insensitive.
    pub protocol: Option<String>,
    pub name: String,
    pub target_port: Option<u32>,
}

/// ServiceEntry's own selector: `{labels}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct WorkloadSelector {
    pub labels: Labels,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct WorkloadEntry {
    /// An IP, a DNS name (DNS resolution only) or `unix:///path`.
    pub address: Option<String>,
    /// Service port name to endpoint port.
    pub ports: BTreeMap<String, u32>,
    pub labels: Labels,
    pub network: Option<String>,
    pub locality: Option<String>,
    pub weight: Option<u32>,
    pub service_account: Option<String>,
}
