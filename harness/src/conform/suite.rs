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
    /// What the target plays.
    pub role: Role,
    /// The sidecar captures the app's traffic transparently, as Istio's iptables do, where the
    /// machine allows it (root, iproute2, iptables, setpriv) and the target can (reference,
    /// envoy): the app, each extra gateway and the workloads get hosts of their own (network
    /// namespaces), and a case sent to port 15001 goes from the app straight to its authority,
    /// unaware of any proxy. Elsewhere the sidecar is an explicit proxy, and the result says why.
    pub capture: bool,
    /// More gateways brought up before the main one, from the same config (an egress gateway for
    /// the two-hop flow). Their ports join the suite's; each is registered under its `service`.
    pub gateways: Vec<ExtraGateway>,
    /// Certificates made for the run (rcgen); `${certs}` in `config` is their directory.
    pub certificates: Vec<Certificate>,
    pub cases: Vec<Case>,
    /// Load scenarios (a load suite, `suites/load/`): sent through the gateway and straight to
    /// the workload behind it (the direct baseline).
    pub scenarios: Vec<Scenario>,
}

/// One load scenario of a load suite: what to send, at what rate, for how long.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Scenario {
    pub name: String,
    pub description: Option<String>,
    pub protocol: RequestProtocol,
    /// The gateway port.
    pub port: u32,
    /// The workload the route leads to: the direct baseline sends to it.
    pub service: String,
    pub path: Option<String>,
    pub authority: Option<String>,
    /// TLS to the gateway (the baseline talks to the plaintext workload).
    pub tls: Option<TlsRequest>,
    /// Requests per second (open loop); none: closed loop, the maximum.
    pub rate: Option<f64>,
    pub connections: Option<u32>,
    /// Concurrent streams per connection (h2c, gRPC).
    pub streams: Option<u32>,
    pub duration: Option<Duration>,
    pub warmup: Option<Duration>,
    pub body: Option<String>,
    /// TCP: bytes per message.
    pub message_bytes: Option<usize>,
    /// Thresholds the run must meet (`p99 < 5ms`, `errors < 0.1%`, …).
    pub thresholds: Vec<String>,
}

/// A gateway besides the one under test, e.g. `{name: egress, labels: {istio: egressgateway},
/// ports: [80], service: istio-egressgateway.istio-system.svc.cluster.local}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ExtraGateway {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Its ports, distinct from the suite's: HTTP, but 443 HTTPS (TLS), as on Istio's
    /// `istio-egressgateway` Service.
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
    pub protocol: WorkloadProtocol,
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
    /// TCP: write the identity lines before echoing (default true; false for load tests, whose
    /// requests are messages echoed back).
    pub greeting: Option<bool>,
}

impl Workload {
    /// Its namespace (default `default`).
    pub fn namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or("default")
    }

    /// The service's host: `host`, or `<service>.<namespace>.svc.cluster.local`.
    pub fn service_host(&self) -> String {
        self.host
            .clone()
            .unwrap_or_else(|| format!("{}.{}.svc.cluster.local", self.service, self.namespace()))
    }
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
    /// What is expected instead when the suite runs captured, where Istio's sidecar behaves
    /// otherwise than an explicit proxy (a destination outside the registry on a port no
    /// service uses: the connection is closed, there is no HTTP listener to answer 502).
    pub captured: Option<Expect>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Request {
    pub protocol: RequestProtocol,
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
    /// TCP: half-close after sending and read to the end (default), or, when false, read until
    /// the bytes sent have come back. Default false through a CONNECT tunnel: HTTP/1.1 cannot
    /// carry a half-close, and Envoy ends the tunnel on the client's FIN.
    pub half_close: Option<bool>,
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
    /// How many of the `count` requests got each status (circuit breakers: `{200: 2, 503: 4}`), each
    /// an exact count or a range (`'1..=2'`).
    pub status_counts: BTreeMap<u16, CountRange>,
    /// Requests each service's workloads received during the case, copies from a mirror included
    /// (HTTP and gRPC workloads).
    pub workload_requests: BTreeMap<String, u64>,
    /// The response took at least this long (less `check::TIMER_SLACK`, 10 ms).
    pub latency_at_least: Option<Duration>,
    /// TCP: the bytes sent come back (the echo).
    pub echo: Option<bool>,
    /// TLS facts: `version` (`TLSv1_3`), `alpn`, `cn` (the served certificate's common name).
    pub tls: BTreeMap<String, String>,
    /// The request must fail this way.
    pub error: Option<Failure>,
    /// Captured runs only: the workload saw the request come from this host (`app`, or an extra
    /// gateway's name): its echo's `IP`.
    pub peer: Option<String>,
    /// Captured runs only: TCP SYNs that reached the workloads' host during the case (0: the
    /// sidecar let nothing out).
    pub syns: Option<u64>,
}

/// An inclusive range of counts, written as a number (`2`) or `'1..=2'`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CountRange {
    pub min: u32,
    pub max: u32,
}

impl CountRange {
    pub fn contains(&self, n: u32) -> bool {
        (self.min..=self.max).contains(&n)
    }

    pub fn parse(text: &str) -> Result<CountRange, String> {
        let bad = || format!("`{text}` is not a count or a range like `1..=2`");
        let (min, max) = match text.split_once("..=") {
            Some((a, b)) => (
                a.trim().parse().map_err(|_| bad())?,
                b.trim().parse().map_err(|_| bad())?,
            ),
            None => {
                let n = text.trim().parse().map_err(|_| bad())?;
                (n, n)
            }
        };
        if min > max {
            return Err(format!("`{text}`: the range is empty"));
        }
        Ok(CountRange { min, max })
    }
}

impl std::fmt::Display for CountRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.min == self.max {
            write!(f, "{}", self.min)
        } else {
            write!(f, "{}..={}", self.min, self.max)
        }
    }
}

impl<'de> Deserialize<'de> for CountRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u32),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(CountRange { min: n, max: n }),
            Raw::S(s) => CountRange::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

/// What a suite's target plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// An ingress or egress gateway: listeners from the Gateways that select the suite's labels.
    #[default]
    Gateway,
    /// The outbound side of a workload's proxy: requests go to port 15001 as an explicit HTTP
    /// proxy; VirtualServices bound to `mesh` and `outboundTrafficPolicy` apply.
    Sidecar,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Gateway => "gateway",
            Role::Sidecar => "sidecar",
        }
    }
}

/// What an echo workload speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkloadProtocol {
    /// HTTP/1.1 and h2c on one port.
    #[default]
    Http,
    /// HTTP over TLS (with `tls`).
    Https,
    Grpc,
    Tcp,
}

impl WorkloadProtocol {
    /// The port name and Istio protocol its ServiceEntry declares.
    pub fn istio_port(self) -> (&'static str, &'static str) {
        match self {
            WorkloadProtocol::Http => ("http", "HTTP"),
            WorkloadProtocol::Https => ("https", "HTTPS"),
            WorkloadProtocol::Grpc => ("grpc", "GRPC"),
            WorkloadProtocol::Tcp => ("tcp", "TCP"),
        }
    }
}

/// How a case's client talks to the gateway (over TLS when the request has `tls`, h1 or h2 by ALPN).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestProtocol {
    #[default]
    H1,
    H2c,
    Grpc,
    Tcp,
}

impl RequestProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestProtocol::H1 => "h1",
            RequestProtocol::H2c => "h2c",
            RequestProtocol::Grpc => "grpc",
            RequestProtocol::Tcp => "tcp",
        }
    }
}

/// How a request is expected to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Failure {
    /// The TLS handshake fails.
    Handshake,
    /// The TCP connection is not established.
    Connect,
    /// No response at all, whatever the reason (TLS 1.3 refuses a client certificate after the
    /// handshake, on the first read; a TCP connection closed before a byte came back).
    Refused,
}

impl Failure {
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Handshake => "handshake",
            Failure::Connect => "connect",
            Failure::Refused => "refused",
        }
    }
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

/// The load suites built into the binary (`suites/load/*.yaml` with `scenarios`).
#[rustfmt::skip]
pub const EMBEDDED_LOAD: &[(&str, &str)] = &[
    ("gateway-load", include_str!("../../../suites/load/gateway-load.yaml")),
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
    if suite.capture && suite.role != Role::Sidecar {
        let line = doc.root.line_of("capture");
        return Err(format!(
            "{file}:{line}: capture: only a sidecar captures traffic; add `role: sidecar` or remove `capture`"
        ));
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
    Ok(suite)
}

pub fn read(path: &Path) -> Result<Suite, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse(&path.display().to_string(), &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_sidecar_suite_may_capture() {
        let e = parse("g.yaml", "name: g\nports: [80]\ncapture: true\n").err();
        assert_eq!(
            e.as_deref(),
            Some("g.yaml:3: capture: only a sidecar captures traffic; add `role: sidecar` or remove `capture`")
        );
        let ok = parse("s.yaml", "name: s\nrole: sidecar\ncapture: true\nports: [15001]\n");
        assert!(ok.is_ok_and(|s| s.capture && s.role == Role::Sidecar));
        let case =
            "name: s\ncases:\n- id: c\n  expect: {status: 502}\n  captured: {error: refused, syns: 0, peer: app}\n";
        let s = parse("s.yaml", case).unwrap_or_default();
        let captured = s.cases.first().and_then(|c| c.captured.clone()).unwrap_or_default();
        assert_eq!(
            (captured.error, captured.syns, captured.peer.as_deref()),
            (Some(Failure::Refused), Some(0), Some("app"))
        );
    }
}
