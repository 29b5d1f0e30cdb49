//! Conformance suite files: Istio config, the workloads behind it, and the cases with their
//! expectations. Read through mesh-model's YAML loader, so a mistake names its file and line.

use std::collections::BTreeMap;
use std::path::Path;

use mesh_model::api::Duration;
use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Suite {
    pub name: String,
    pub description: String,
    pub features: Vec<String>,
    /// Istio config documents (multi-document YAML as a block string).
    pub config: String,
    /// MeshConfig for the run (YAML as a block string).
    pub mesh: Option<String>,
    pub workloads: Vec<Workload>,
    /// The gateway's labels (default `istio: ingressgateway`).
    pub labels: BTreeMap<String, String>,
    /// Gateway ports the cases use. A sidecar's outbound proxy is port 15001.
    pub ports: Vec<u32>,
    /// `gateway` (default: an ingress/egress gateway) or `sidecar` (the outbound side of a workload's
    /// proxy: requests go to port 15001 as an explicit HTTP proxy, VirtualServices bound to `mesh`
    /// and `outboundTrafficPolicy` apply).
    pub role: Option<String>,
    /// More gateways brought up before the main one, from the same config (an egress gateway for
    /// the two-hop flow). Their ports join the suite's; each is registered under its `service`.
    pub gateways: Vec<ExtraGateway>,
    /// Certificates made for the run (rcgen); `${certs}` in `config` is their directory.
    pub certificates: Vec<Certificate>,
    pub cases: Vec<Case>,
}

/// A gateway besides the one under test, e.g. `{name: egress, labels: {istio: egressgateway},
/// ports: [80], service: istio-egressgateway.istio-system.svc.cluster.local}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ExtraGateway {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Its ports (HTTP), distinct from the suite's.
    pub ports: Vec<u32>,
    /// The host it is registered under (a MESH_INTERNAL ServiceEntry with these ports), so that
    /// routes can name it as a destination.
    pub service: Option<String>,
}

/// A certificate written as `${certs}/<name>.crt` and `.key`, signed by `${certs}/<ca>-ca.pem`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Certificate {
    pub name: String,
    pub hosts: Vec<String>,
    /// The CA that signs it (default `main`).
    pub ca: Option<String>,
}

/// A service with one echo workload per version, registered by a ServiceEntry and WorkloadEntries.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Workload {
    pub service: String,
    pub namespace: Option<String>,
    pub versions: Vec<String>,
    /// Echo instances per version.
    pub replicas: Option<u32>,
    /// `http` (HTTP/1.1 + h2c), `https` (with `tls`: an HTTPS port), `grpc` or `tcp`.
    pub protocol: Option<String>,
    /// The service port (ServiceEntry port number).
    pub port: u32,
    /// The service's host (default `<service>.<namespace>.svc.cluster.local`).
    pub host: Option<String>,
    /// `MESH_INTERNAL` (default) or `MESH_EXTERNAL`.
    pub location: Option<String>,
    /// The ServiceEntry's resolution: `STATIC` (default) or `DNS` (then `address` may be a name).
    pub resolution: Option<String>,
    /// The WorkloadEntries' address (default 127.0.0.1; the echo listens there): `localhost` with
    /// `resolution: DNS` makes the gateway resolve it.
    pub address: Option<String>,
    /// `false`: no ServiceEntry is written; the echo is an address outside the registry, named in
    /// cases as `${addr:<service>}`.
    pub registered: Option<bool>,
    /// The echo serves HTTP over TLS (what a DestinationRule's TLS origination talks to).
    pub tls: Option<WorkloadTls>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct WorkloadTls {
    /// A certificate from `certificates`.
    pub cert: String,
    /// Require client certificates signed by this CA (`${certs}/<ca>-ca.pem`).
    pub client_ca: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Case {
    pub id: String,
    pub description: Option<String>,
    pub request: Request,
    pub expect: Expect,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Request {
    /// `h1`, `h2c`, `grpc`, `tcp` (default h1).
    pub protocol: Option<String>,
    /// The gateway port.
    pub port: u32,
    pub authority: Option<String>,
    pub path: Option<String>,
    pub method: Option<String>,
    pub headers: BTreeMap<String, String>,
    pub body: Option<String>,
    /// Requests sent (for distributions).
    pub count: Option<u32>,
    /// Requests in flight at once, each on its own connection (default 1).
    pub concurrency: Option<u32>,
    /// TLS to the gateway (HTTPS: `h1` or `h2` by ALPN; `tcp` over TLS).
    pub tls: Option<TlsRequest>,
    /// HTTP/1.1 in absolute form (`GET http://authority/path`), as a client of an explicit proxy
    /// (the sidecar role) sends it.
    pub proxy: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TlsRequest {
    /// Server name to send; none: no SNI.
    pub sni: Option<String>,
    pub alpn: Vec<String>,
    /// CA to verify the server with (`${certs}/<ca>-ca.pem`, default `main`).
    pub ca: Option<String>,
    /// A client certificate from `certificates`.
    pub client_cert: Option<String>,
    /// Only this TLS version: `1.2` or `1.3`.
    pub version: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Expect {
    pub status: Option<u16>,
    pub grpc_status: Option<u16>,
    pub body: Option<String>,
    /// Text the response body must contain.
    pub body_contains: Option<String>,
    /// Response headers that must have these values.
    pub headers: BTreeMap<String, String>,
    pub headers_absent: Vec<String>,
    /// Response headers that must be there, whatever their value.
    pub headers_present: Vec<String>,
    /// Response headers whose value must match a regex (whole value, as Istio's `regex` matches).
    pub headers_match: BTreeMap<String, String>,
    /// Which workload answered (`service`, `version`).
    pub workload: Option<WorkloadMatch>,
    /// What the workload saw: its echo fields (`URL`, `Host`) and request headers.
    pub saw: BTreeMap<String, String>,
    pub saw_headers: BTreeMap<String, String>,
    pub saw_headers_absent: Vec<String>,
    pub location: Option<String>,
    /// Share of requests per version (`v1`) or per service and version (`reviews/v1`), in percent;
    /// checked against exact binomial bounds.
    pub distribution: BTreeMap<String, f64>,
    /// How many of the `count` requests got each status (circuit breakers: `{200: 2, 503: 4}`).
    pub status_counts: BTreeMap<u16, u32>,
    /// Requests each service's workloads received during the case, copies from a mirror included
    /// (HTTP and gRPC workloads).
    pub workload_requests: BTreeMap<String, u64>,
    pub latency_at_least: Option<Duration>,
    /// TCP: the bytes sent come back (the echo).
    pub echo: Option<bool>,
    /// TLS facts: `version` (`TLSv1_3`), `alpn`, `cn` (the served certificate's common name).
    pub tls: BTreeMap<String, String>,
    /// The request must fail: `handshake` (the TLS handshake fails), `connect`, or `refused` (no
    /// response at all, whatever the reason).
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct WorkloadMatch {
    pub service: Option<String>,
    pub version: Option<String>,
    /// The instance (the echo's `Hostname`, `<service>-<version>-<replica>`).
    pub instance: Option<String>,
}

/// The suites built into the binary (`suites/conformance/*.yaml`).
#[rustfmt::skip]
pub const EMBEDDED: &[(&str, &str)] = &[
    ("http-routing", include_str!("../../../suites/conformance/http-routing.yaml")),
    ("weighted-splits", include_str!("../../../suites/conformance/weighted-splits.yaml")),
    ("tcp-routing", include_str!("../../../suites/conformance/tcp-routing.yaml")),
    ("grpc-routing", include_str!("../../../suites/conformance/grpc-routing.yaml")),
    ("tls-termination", include_str!("../../../suites/conformance/tls-termination.yaml")),
    ("egress-control", include_str!("../../../suites/conformance/egress-control.yaml")),
    ("egress-allow-any", include_str!("../../../suites/conformance/egress-allow-any.yaml")),
    ("egress-gateway", include_str!("../../../suites/conformance/egress-gateway.yaml")),
];

/// Parses a suite, with `file:line` for every mistake.
pub fn parse(file: &str, text: &str) -> Result<Suite, String> {
    let sources = mesh_model::load::parse_str(file, text);
    if let Some(p) = sources.problems.first() {
        return Err(format!("{}:{}: {}", p.file, p.line, p.message));
    }
    let doc = sources
        .documents
        .first()
        .ok_or_else(|| format!("{file}: empty suite"))?;
    let (suite, problems) = mesh_model::decode::decode_lenient::<Suite>(doc.root.to_json(), "");
    if !problems.is_empty() {
        let lines: Vec<String> = problems
            .iter()
            .map(|p| {
                format!(
                    "{file}:{}: {}: {}{}",
                    doc.root.line_of(&p.path),
                    p.path,
                    p.message,
                    p.hint.as_deref().map(|h| format!(" ({h})")).unwrap_or_default()
                )
            })
            .collect();
        return Err(lines.join("\n"));
    }
    if suite.name.is_empty() {
        return Err(format!("{file}: the suite needs a name"));
    }
    for (i, g) in suite.gateways.iter().enumerate() {
        let line = doc.root.line_of(&format!("gateways[{i}]"));
        if g.name.is_empty() || g.ports.is_empty() {
            return Err(format!(
                "{file}:{line}: gateways[{i}]: a gateway needs a name and ports"
            ));
        }
        if let Some(p) = g.ports.iter().find(|p| suite.ports.contains(p)) {
            return Err(format!(
                "{file}:{line}: gateways[{i}].ports: port {p} is also the suite's; give each gateway its own ports"
            ));
        }
    }
    if let Some(role) = suite.role.as_deref().filter(|r| !matches!(*r, "gateway" | "sidecar")) {
        return Err(format!(
            "{file}:{}: role: unknown role {role:?} (use gateway or sidecar)",
            doc.root.line_of("role")
        ));
    }
    Ok(suite)
}

pub fn read(path: &Path) -> Result<Suite, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse(&path.display().to_string(), &text)
}
