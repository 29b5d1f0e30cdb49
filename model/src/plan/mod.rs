//! The Plan: an Envoy-shaped form of a validated config (listeners, filter chains, route tables,
//! clusters, endpoints) that meshgate executes and the Envoy target exports, with every Istio
//! default made explicit. It serialises to JSON: it is the gateway's config dump.

mod build;
mod listeners;
mod outbound;
pub mod policy;
pub mod registry;
mod routes;
pub mod text;

use serde::{Deserialize, Serialize};

use crate::api::destination_rule::{
    ClientTls, ConnectionPoolSettings, LoadBalancerSettings, OutlierDetection, ProxyProtocol, TunnelSettings,
};
use crate::api::gateway::ServerTls;
use crate::api::mesh::OutboundTrafficMode;
use crate::api::service_entry::{Location, Resolution};
use crate::api::virtual_service::{CorsPolicy, HeaderOperations};
use crate::api::{Duration, Labels, Protocol, StringMatch};

pub use build::{build, PlanOptions};
pub use routes::{bound_gateways, resolve_gateway_ref};

/// The version of the Plan's JSON shape.
pub const PLAN_SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub schema_version: u32,
    /// Labels of the gateway workload the Plan is for (Gateways select it by these); empty: every Gateway.
    pub labels: Labels,
    /// The gateway's config namespace (first in DestinationRule lookup).
    pub namespace: String,
    pub mesh: MeshSettings,
    pub listeners: Vec<Listener>,
    /// The sidecar role's outbound routing (explicit proxy): None for a gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound: Option<Outbound>,
    pub route_tables: Vec<RouteTable>,
    pub clusters: Vec<Cluster>,
}

/// Outbound routing of the sidecar role: a route table per destination port, and the services
/// reached as TCP/TLS (by CONNECT, or captured: by SNI, by address, by port). Hosts in none
/// follow `mesh.outbound_traffic_policy`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outbound {
    /// Destination port -> route table name.
    pub route_tables: std::collections::BTreeMap<u32, String>,
    /// `host:port` -> where it goes, for non-HTTP ports: the first `tls` rule (by SNI host) or
    /// `tcp` rule of a VirtualService bound to `mesh` that takes it, else the service itself.
    pub tcp: std::collections::BTreeMap<String, L4Route>,
    /// Ports of services that declare addresses: a captured connection whose original
    /// destination is one of them belongs to that service, as Istio's `<address>_<port>`
    /// listeners decide, before the connection's first bytes are looked at.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<AddressedPort>,
    /// Port -> `host:port` (a key of `tcp`) of the first TCP service on that port without
    /// addresses: Istio's `0.0.0.0_<port>` listener, which takes every captured opaque TCP
    /// connection to the port.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub tcp_ports: std::collections::BTreeMap<u32, String>,
}

/// One port of a service with addresses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AddressedPort {
    /// An IP or a CIDR (`10.0.0.0/24`), as the ServiceEntry wrote it.
    pub address: String,
    pub port: u32,
    pub host: String,
    /// An HTTP port: routed by its route table (the request's Host picks the virtual host);
    /// otherwise proxied as TCP along `tcp[host:port]`.
    pub http: bool,
}

impl Plan {
    pub fn route_table(&self, name: &str) -> Option<&RouteTable> {
        self.route_tables.iter().find(|t| t.name == name)
    }

    pub fn cluster(&self, name: &str) -> Option<&Cluster> {
        self.clusters.iter().find(|c| c.name == name)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeshSettings {
    pub outbound_traffic_policy: OutboundTrafficMode,
    /// Used by routes that set no `retries`.
    pub default_retry: RetryPolicy,
    pub connect_timeout: Duration,
    pub domain_suffix: String,
    /// How long a DNS answer is kept (MeshConfig `dnsRefreshRate`, Envoy's `dns_refresh_rate`).
    pub dns_refresh_rate: Duration,
    /// How long a captured connection's first bytes are waited for before it is taken as
    /// opaque TCP (MeshConfig `protocolDetectionTimeout`; 0, Istio's default: no limit).
    pub protocol_detection_timeout: Duration,
}

/// One bound address and port, with filter chains chosen by SNI and TLS presence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Listener {
    /// `<bind>_<port>`, as Envoy names gateway listeners.
    pub name: String,
    pub bind: String,
    pub port: u32,
    pub filter_chains: Vec<FilterChain>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FilterChain {
    pub name: String,
    /// `gateway-namespace/gateway-name` and the server index that produced this chain.
    pub gateway: String,
    pub server: usize,
    pub protocol: Protocol,
    /// SNI names this chain takes; empty means any (and clients without SNI).
    pub server_names: Vec<String>,
    pub transport: Transport,
    /// Server TLS settings when the chain terminates TLS, mode made explicit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTls>,
    pub action: ChainAction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    Plaintext,
    TerminateTls,
    Passthrough,
    AutoPassthrough,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChainAction {
    /// HTTP routing with a route table.
    Http { route_table: String },
    /// TCP proxying: the first matching `tcp` rule (none: connections are closed).
    Tcp { route: Option<L4Route> },
    /// Unterminated TLS routed by SNI (`tls` rules).
    TlsPassthrough { routes: Vec<SniRoute> },
    /// AUTO_PASSTHROUGH: the SNI `outbound_.<port>_.<subset>_.<host>` names the cluster.
    AutoPassthrough,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct L4Route {
    pub virtual_service: String,
    pub rule: usize,
    pub clusters: Vec<WeightedCluster>,
}

impl L4Route {
    /// Everything to one cluster, by no VirtualService's rule.
    pub fn to(cluster: &str) -> L4Route {
        L4Route {
            virtual_service: String::new(),
            rule: 0,
            clusters: vec![WeightedCluster::only(cluster)],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SniRoute {
    pub sni_hosts: Vec<String>,
    pub route: L4Route,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteTable {
    /// `http.<port>` for plaintext servers, `https.<port>.<server>.<gateway>.<namespace>` per HTTPS server.
    pub name: String,
    pub virtual_hosts: Vec<VirtualHost>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VirtualHost {
    pub name: String,
    /// Domains served (may be wildcards); the port in Host is ignored when matching.
    pub domains: Vec<String>,
    /// httpsRedirect: every request gets 301 to https.
    pub require_tls: bool,
    /// In order; the first match wins. No match: 404.
    pub routes: Vec<Route>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Route {
    /// `<rule name>` or `<vs namespace>/<vs name>/<rule index>`; used in access logs.
    pub name: String,
    pub virtual_service: String,
    pub rule: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_index: Option<usize>,
    #[serde(rename = "match")]
    pub matcher: RouteMatch,
    pub action: RouteAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_headers: Option<HeaderOperations>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_headers: Option<HeaderOperations>,
    /// None: no timeout (Istio overrides Envoy's 15s default with 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    pub retry: RetryPolicy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<FaultPlan>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<Mirror>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<CorsPolicy>,
}

/// All conditions are ANDed. Empty: matches every request.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RouteMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<StringMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<StringMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<StringMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<StringMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query_params: Vec<QueryMatch>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ignore_uri_case: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderMatch {
    /// Lowercase; may be a pseudo-header (`:method`, `:authority`, `:scheme`, `:path`).
    pub name: String,
    /// None: the header must be present (Istio's `{}` or `regex: "*"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<StringMatch>,
    /// From `withoutHeaders`: the match is inverted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub invert: bool,
    /// `withoutHeaders` (except the presence form) treats a missing header as "".
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub treat_missing_as_empty: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryMatch {
    pub name: String,
    /// None: the parameter must be present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<StringMatch>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteAction {
    Route {
        clusters: Vec<WeightedCluster>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rewrite: Option<RewritePlan>,
    },
    Redirect(RedirectPlan),
    DirectResponse {
        status: u16,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        body: Option<String>,
        /// `body.bytes` as written (base64).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        body_base64: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeightedCluster {
    /// `outbound|<port>|<subset>|<fqdn>`.
    pub cluster: String,
    /// Relative weight; a single destination has 100.
    pub weight: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_headers: Option<HeaderOperations>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_headers: Option<HeaderOperations>,
    /// Host rewrite from this destination's headers; used only when the route sets none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_rewrite: Option<String>,
}

impl WeightedCluster {
    /// The one destination of a route: weight 100, no header operations.
    pub fn only(cluster: &str) -> WeightedCluster {
        WeightedCluster {
            cluster: cluster.to_string(),
            weight: 100,
            request_headers: None,
            response_headers: None,
            host_rewrite: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RewritePlan {
    /// Replaces the matched prefix (the whole path for an exact match).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// The prefix the rewrite replaces: the route's uri prefix, or the exact path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<(String, String)>,
    /// From `rewrite.authority` or a route-level `:authority`/`Host` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedirectPlan {
    pub code: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    pub port: RedirectPort,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_rewrite: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RedirectPort {
    /// Keep what the request had.
    Keep,
    Fixed(u32),
    /// The listener's port (omitted when it is the scheme's default).
    FromRequestPort,
    /// The new scheme's default port.
    FromProtocolDefault,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// 0: retries off.
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<Duration>,
    pub retry_on: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retriable_status_codes: Vec<u16>,
    pub retry_previous_hosts: bool,
    pub backoff: Duration,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultPlan {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<FaultDelayPlan>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<FaultAbortPlan>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultDelayPlan {
    pub delay: Duration,
    pub percentage: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultAbortPlan {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_status: Option<String>,
    pub percentage: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mirror {
    pub cluster: String,
    pub percentage: f64,
}

/// An upstream: one port of one service, optionally one subset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cluster {
    pub name: String,
    pub service: String,
    pub port: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset: Option<String>,
    pub protocol: Protocol,
    pub resolution: Resolution,
    pub location: Location,
    pub endpoints: Vec<Endpoint>,
    pub policy: ClusterPolicy,
    /// Upstream SANs from the ServiceEntry (`subjectAltNames`), used when the policy's TLS sets none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Endpoint {
    /// An IP, a host name to resolve (DNS), or `unix://…`.
    pub address: String,
    pub port: u32,
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
    pub weight: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<String>,
}

/// The traffic policy in force for one cluster after Istio's merge rules, defaults explicit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterPolicy {
    /// `outbound|…` DestinationRule that contributed (`namespace/name`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_rule: Option<String>,
    /// `simple` is always set unless `consistentHash` is (default LEAST_REQUEST).
    pub load_balancer: LoadBalancerSettings,
    pub connect_timeout: Duration,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPoolSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    /// Upstream TLS; mode always explicit (DISABLE when unset).
    pub tls: ClientTls,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<TunnelSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<ProxyProtocol>,
}

/// Loads, validates and plans config files as a proxy accepts them: what Istio's validation
/// rejects stops the config (every such diagnostic, as text); `istioctl analyze` findings (IST*)
/// do not, as in Istio (a missing subset then answers 503 NC) and are returned beside the Plan.
pub fn load<P: AsRef<std::path::Path>>(
    paths: &[P],
    mesh: Option<&std::path::Path>,
    opts: &PlanOptions,
) -> Result<(Plan, Vec<crate::Diagnostic>), String> {
    let loaded = crate::load_paths(paths, mesh).map_err(|e| format!("cannot read {e}"))?;
    let mut diags = loaded.diagnostics;
    diags.extend(crate::validate::validate(&loaded.config));
    let (analysis, rejections): (Vec<_>, Vec<_>) = diags
        .into_iter()
        .filter(|d| d.is_error())
        .partition(|d| d.code.id().starts_with("IST"));
    if !rejections.is_empty() {
        return Err(rejections.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("\n"));
    }
    let (plan, _) = build(&loaded.config, opts);
    Ok((plan, analysis))
}

/// `outbound|<port>|<subset>|<fqdn>`.
pub fn cluster_name(port: u32, subset: Option<&str>, host: &str) -> String {
    format!("outbound|{port}|{}|{host}", subset.unwrap_or(""))
}

#[cfg(test)]
mod tests;
