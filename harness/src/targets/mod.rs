//! Targets: what a suite or a load scenario runs against. `reference` starts meshgate, `envoy`
//! starts Envoy with the Plan exported as a bootstrap, `external` is a gateway someone else
//! configured. Each is one implementation of `Target`; the process handling that the local
//! process targets share lives in `process`.

pub mod container;
pub mod envoy;
pub mod external;
pub mod istio;
pub mod network;
pub mod process;
pub mod reference;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use meshbench_report::TargetInfo;

use crate::conform::suite::Role;

/// Why a target could not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// The target cannot run on this machine (a binary or image is missing): skip, with this reason.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The target was there and failed (bad config, crashed, never ready).
    #[error("{0}")]
    Failed(String),
}

impl From<String> for TargetError {
    fn from(s: String) -> Self {
        TargetError::Failed(s)
    }
}

/// Where a gateway listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bind {
    /// Every listener and the admin on a free loopback port (a local process, or a container on
    /// the host's network).
    Loopback,
    /// Every address of its own, on the suite's port numbers, the admin on `ADMIN_PORT` (a
    /// container of its own on a suite network).
    OwnAddress,
}

/// The admin port of a gateway with addresses of its own (Istio's proxy admin port).
pub const ADMIN_PORT: u16 = 15000;

impl Bind {
    /// Where the listener of port `port` goes.
    pub fn at(self, port: u16) -> (String, u16) {
        match self {
            Bind::Loopback => ("127.0.0.1".into(), 0),
            Bind::OwnAddress => ("0.0.0.0".into(), port),
        }
    }

    /// `at` as `host:port` text.
    pub fn text(self, port: u16) -> String {
        let (host, port) = self.at(port);
        format!("{host}:{port}")
    }
}

/// What one suite (or scenario) asks a target to bring up.
#[derive(Debug, Clone)]
pub struct StartSpec<'a> {
    /// The suite's Istio YAML plus its workloads' registry.
    pub config_dir: &'a Path,
    pub mesh: Option<&'a Path>,
    /// The gateway workload's labels (Gateways select it by these).
    pub labels: &'a BTreeMap<String, String>,
    /// Gateway ports the cases use; a sidecar's outbound proxy is 15001.
    pub ports: &'a [u32],
    pub role: Role,
    /// The suite's Docker network, for a target that asked for one (`wants_network`).
    pub network: Option<&'a str>,
    /// A host of the run's own (a network namespace) to run in, as the proxy's group, every
    /// port on the host's address (`Bind::OwnAddress`); only for a target that can
    /// (`lacks_capture` is None).
    pub host: Option<&'a mesh_netns::Host>,
    /// The sidecar takes the host's captured outbound traffic (`--capture`, Envoy's
    /// `virtualOutbound` with `use_original_dst`) instead of being an explicit proxy.
    pub capture: bool,
}

impl StartSpec<'_> {
    /// Where the listeners go: the host's addresses when there is one, else free loopback ports.
    pub fn bind(&self) -> Bind {
        match self.host {
            Some(_) => Bind::OwnAddress,
            None => Bind::Loopback,
        }
    }

    /// `program` as the spec runs it: in its host as the proxy's group, or here.
    pub fn command(&self, program: &Path) -> tokio::process::Command {
        match self.host {
            Some(h) => h.proxy_command(&program.display().to_string()).into(),
            None => tokio::process::Command::new(program),
        }
    }

    /// A listener address as a client elsewhere reaches it: in a host, its address instead of
    /// the unspecified one it was bound to.
    pub fn reached_at(&self, ports: BTreeMap<u32, SocketAddr>) -> BTreeMap<u32, SocketAddr> {
        let Some(h) = self.host else { return ports };
        ports
            .into_iter()
            .map(|(p, a)| match a.ip().is_unspecified() {
                true => (p, SocketAddr::new(h.ip.into(), a.port())),
                false => (p, a),
            })
            .collect()
    }
}

/// A gateway under test.
#[async_trait::async_trait]
pub trait Target: Send {
    /// Name, kind and version, as the report records them.
    fn info(&self) -> TargetInfo;
    /// Why this target cannot run suites with `feature` (a suite's `features:`), if it cannot.
    fn lacks(&self, feature: &str) -> Option<String> {
        let _ = feature;
        None
    }
    /// Whether a conformance suite runs this target, and its workloads as containers, on a
    /// Docker network of the suite's own (the container targets).
    fn wants_network(&self) -> bool {
        false
    }
    /// Why this target cannot run in a host of a run's own with transparent capture (a sidecar
    /// suite's `capture: true`), if it cannot: such suites then run it as an explicit proxy.
    fn lacks_capture(&self) -> Option<String> {
        Some(format!(
            "the {} target runs a sidecar as an explicit proxy only",
            self.info().kind
        ))
    }
    /// Where the started gateway's ports are on the suite's network, when it is on one (the
    /// address other gateways reach it at; `start` gives the client's).
    fn network_addresses(&self) -> Option<BTreeMap<u32, SocketAddr>> {
        None
    }
    /// Applies the config and returns the address of each gateway port the suite uses.
    async fn start(&mut self, spec: &StartSpec<'_>) -> Result<BTreeMap<u32, SocketAddr>, TargetError>;
    /// One more target of the same kind (for a suite's extra gateways).
    fn another(&self) -> Result<Box<dyn Target>, TargetError>;
    /// Tears down (also on drop).
    async fn stop(&mut self);
    /// Output worth keeping (access log, stderr).
    fn logs(&self) -> String;
    /// The gateway's process, when it is a local one (for CPU and memory figures).
    fn pid(&self) -> Option<u32> {
        None
    }
    /// Gives the target another name in reports (two builds of one kind side by side).
    fn rename(&mut self, name: &str);
}

/// What the command line says about building targets.
#[derive(Debug, Clone, Default)]
pub struct TargetOptions {
    pub meshgate: Option<PathBuf>,
    /// Extra arguments for meshgate.
    pub meshgate_args: Vec<String>,
    pub envoy: Option<PathBuf>,
    /// External target: suite port -> address.
    pub addresses: BTreeMap<u32, SocketAddr>,
    /// Worker threads of each gateway process (meshgate `--workers`, Envoy `--concurrency`).
    pub workers: u32,
    /// The istio target's images.
    pub istio: istio::IstioImages,
}

/// The kinds `--target` accepts.
pub const KINDS: &[&str] = &[
    "reference",
    "envoy",
    "external",
    "container:meshgate",
    "container:envoy",
    "istio",
];

/// Builds a target from its spec: `KIND`, `KIND:BINARY` (another meshgate or Envoy build) or
/// `NAME=KIND[:BINARY]` (a name of its own in the report, e.g. `main=reference:/tmp/main/meshgate`
/// beside `reference`, so two builds run side by side).
pub fn build(spec: &str, opts: &TargetOptions) -> Result<Box<dyn Target>, TargetError> {
    let (name, rest) = match spec.split_once('=') {
        Some((n, r)) if !n.is_empty() => (Some(n.to_string()), r),
        _ => (None, spec),
    };
    let (kind, binary) = match rest.split_once(':') {
        Some((k, b)) => (k, Some(PathBuf::from(b))),
        None => (rest, None),
    };
    let mut target: Box<dyn Target> = match kind {
        "reference" => {
            let mut r = reference::Reference::new(binary.or_else(|| opts.meshgate.clone()))?;
            r.workers = opts.workers.max(1);
            r.extra_args = opts.meshgate_args.clone();
            Box::new(r)
        }
        "envoy" => {
            let mut e = envoy::Envoy::new(binary.or_else(|| opts.envoy.clone()))?;
            e.concurrency = opts.workers.max(1);
            Box::new(e)
        }
        "external" => Box::new(external::External::new(opts.addresses.clone())),
        "istio" => Box::new(istio::Istio::new(opts.istio.clone())?),
        "container" => {
            let which = binary.as_deref().and_then(|b| b.to_str()).unwrap_or("meshgate");
            let mut c = container::Container::new(container::Gateway::parse(which)?)?;
            c.workers = opts.workers.max(1);
            c.extra_args = opts.meshgate_args.clone();
            Box::new(c)
        }
        other => {
            return Err(TargetError::Failed(format!(
                "unknown target `{other}`: use one of {} (optionally `NAME=KIND:BINARY`)",
                KINDS.join(", ")
            )))
        }
    };
    if let Some(n) = name {
        target.rename(&n);
    }
    Ok(target)
}

/// Parses `80=10.0.0.5:80` pairs.
pub fn parse_addresses(items: &[String]) -> Result<BTreeMap<u32, SocketAddr>, String> {
    let mut out = BTreeMap::new();
    for a in items {
        let (p, addr) = a
            .split_once('=')
            .ok_or_else(|| format!("--address `{a}` is not PORT=HOST:PORT"))?;
        let addr: SocketAddr = addr.parse().map_err(|_| format!("--address `{a}`: bad address"))?;
        out.insert(p.parse().map_err(|_| format!("--address `{a}`: bad port"))?, addr);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_and_bad_ones_say_why() {
        let ok = parse_addresses(&["80=127.0.0.1:8080".into(), "443=[::1]:8443".into()]).unwrap_or_default();
        assert_eq!(ok.len(), 2);
        assert_eq!(ok[&443].port(), 8443);
        assert!(parse_addresses(&["80".into()])
            .unwrap_err()
            .contains("not PORT=HOST:PORT"));
        assert!(parse_addresses(&["x=127.0.0.1:1".into()])
            .unwrap_err()
            .contains("bad port"));
        assert!(parse_addresses(&["80=nowhere".into()])
            .unwrap_err()
            .contains("bad address"));
    }

    #[test]
    fn an_unknown_kind_lists_the_known_ones() {
        let Err(e) = build("nginx", &TargetOptions::default()) else {
            panic!("nginx is not a target kind")
        };
        assert_eq!(
            e,
            TargetError::Failed(
                "unknown target `nginx`: use one of reference, envoy, external, container:meshgate, container:envoy, istio \
                 (optionally `NAME=KIND:BINARY`)"
                    .into()
            )
        );
        let named = build("main=external", &TargetOptions::default()).map(|t| (t.info().name, t.info().kind));
        assert_eq!(named.ok(), Some(("main".to_string(), "external".to_string())));
        let missing = build("old=reference:/nonexistent/meshgate", &TargetOptions::default()).err();
        assert!(matches!(missing, Some(TargetError::Unavailable(m)) if m.contains("/nonexistent/meshgate")));
    }
}
