//! A suite's echo workloads: one per version and replica, in this process (conformance: their
//! request counters are read) or as `meshbench echo` child processes (load: their CPU is not the
//! generator's), and the registry documents (ServiceEntry + WorkloadEntries) that describe them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use tokio::io::AsyncBufReadExt;

use super::suite::{Suite, Workload, WorkloadProtocol};

/// One running echo.
#[derive(Debug)]
enum Running {
    InProcess(mesh_echo::Echo),
    /// A child and its stdout, kept open so that it never writes to a closed pipe.
    Process {
        _child: tokio::process::Child,
        _stdout: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    },
}

/// Echo workloads of a suite, and the registry documents that describe them.
#[derive(Debug)]
pub struct Workloads {
    echoes: Vec<(String, Running)>,
    pub registry: String,
    /// Each service's first echo, for `${addr:<service>}` and the direct baseline.
    pub addresses: BTreeMap<String, SocketAddr>,
}

/// How echoes run.
#[derive(Debug, Clone)]
pub enum Launch {
    InProcess,
    /// `meshbench echo` children; the path of the meshbench binary.
    Processes(PathBuf),
}

/// Where a suite's workloads and certificates live: an address a gateway can reach, optionally
/// fixed ports (the i-th echo of a suite, in file order, on `base + i`) and a kept certificate
/// folder, so that what `--print-config` printed for an external gateway stays true for a later
/// run.
#[derive(Debug, Clone)]
pub struct Placement {
    pub ip: std::net::IpAddr,
    pub base_port: Option<u16>,
    /// Certificates go to `<certs>/<suite>` and are reused when already there; default: the
    /// run's temporary folder.
    pub certs: Option<PathBuf>,
}

impl Default for Placement {
    fn default() -> Self {
        Placement {
            ip: std::net::Ipv4Addr::LOCALHOST.into(),
            base_port: None,
            certs: None,
        }
    }
}

impl Placement {
    /// The certificate folder of `suite`.
    pub fn certs_dir(&self, work_dir: &Path, suite: &str) -> PathBuf {
        match &self.certs {
            Some(d) => d.join(suite),
            None => work_dir.join(format!("{suite}-certs")),
        }
    }
}

/// What a workload's registry entries say about it.
struct Registered<'a> {
    w: &'a Workload,
    ns: String,
    host: String,
    address: String,
}

impl Registered<'_> {
    fn new<'a>(w: &'a Workload, placement: &Placement) -> Registered<'a> {
        let ns = w.namespace.clone().unwrap_or_else(|| "default".into());
        let host = w
            .host
            .clone()
            .unwrap_or_else(|| format!("{}.{ns}.svc.cluster.local", w.service));
        let address = w.address.clone().unwrap_or_else(|| placement.ip.to_string());
        Registered { w, ns, host, address }
    }

    fn service_entry(&self) -> String {
        let (port_name, istio_protocol) = self.w.protocol.istio_port();
        format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {svc}, namespace: {ns}}}\nspec:\n  \
             hosts: [{host}]\n  location: {location}\n  resolution: {resolution}\n  \
             ports: [{{number: {port}, name: {port_name}, protocol: {istio_protocol}}}]\n  workloadSelector: {{labels: {{app: {svc}}}}}\n---\n",
            svc = self.w.service,
            ns = self.ns,
            host = self.host,
            location = self.w.location.as_deref().unwrap_or("MESH_INTERNAL"),
            resolution = self.w.resolution.as_deref().unwrap_or("STATIC"),
            port = self.w.port
        )
    }

    fn workload_entry(&self, version: &str, replica: u32, port: u16) -> String {
        let (port_name, _) = self.w.protocol.istio_port();
        format!(
            "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: {svc}-{version}-{replica}, namespace: {ns}}}\nspec:\n  \
             address: {address}\n  ports: {{{port_name}: {port}}}\n  labels: {{app: {svc}, version: {version}}}\n---\n",
            svc = self.w.service,
            ns = self.ns,
            address = self.address
        )
    }
}

/// Starts one echo per version (and replica) in this process and writes their registry.
pub async fn start_workloads(suite: &Suite, certs: &Path, placement: &Placement) -> Result<Workloads, String> {
    start(suite, certs, placement, &Launch::InProcess).await
}

/// Starts the suite's echoes as `launch` says.
pub async fn start(suite: &Suite, certs: &Path, placement: &Placement, launch: &Launch) -> Result<Workloads, String> {
    let mut index: u16 = 0;
    let mut out = Workloads {
        echoes: Vec::new(),
        registry: String::new(),
        addresses: BTreeMap::new(),
    };
    for w in &suite.workloads {
        let registered = w.registered.unwrap_or(true);
        let reg = Registered::new(w, placement);
        if registered {
            out.registry.push_str(&reg.service_entry());
        }
        for v in &w.versions {
            for r in 0..w.replicas.unwrap_or(1).max(1) {
                let port = match placement.base_port {
                    Some(base) => base
                        .checked_add(index)
                        .ok_or_else(|| format!("--workload-ports {base}: too high for {} workloads", index + 1))?,
                    None => 0,
                };
                index += 1;
                let listen = SocketAddr::new(placement.ip, port);
                let hostname = format!("{}-{v}-{r}", w.service);
                let (bound, running) = match launch {
                    Launch::InProcess => in_process(w, &reg.ns, v, &hostname, listen, certs).await?,
                    Launch::Processes(bin) => child(bin, w, &reg.ns, v, &hostname, listen).await?,
                };
                out.addresses.entry(w.service.clone()).or_insert(bound);
                if registered {
                    out.registry.push_str(&reg.workload_entry(v, r, bound.port()));
                }
                out.echoes.push((w.service.clone(), running));
            }
        }
    }
    Ok(out)
}

async fn in_process(
    w: &Workload,
    ns: &str,
    version: &str,
    hostname: &str,
    listen: SocketAddr,
    certs: &Path,
) -> Result<(SocketAddr, Running), String> {
    let b = mesh_echo::Echo::builder(&w.service)
        .version(version)
        .namespace(ns)
        .hostname(hostname)
        .tcp_greeting(w.greeting.unwrap_or(true));
    let b = match &w.tls {
        Some(t) => b.tls(super::tls::server_config(certs, &t.cert, t.client_ca.as_deref())?),
        None => b,
    };
    let b = match w.protocol {
        WorkloadProtocol::Grpc => b.grpc(listen),
        WorkloadProtocol::Tcp => b.tcp(listen),
        WorkloadProtocol::Http | WorkloadProtocol::Https => b.http(listen),
    };
    let echo = b
        .start()
        .await
        .map_err(|e| format!("cannot start echo {}/{version}: {e}", w.service))?;
    let bound = echo.http.first().or(echo.grpc.first()).or(echo.tcp.first()).copied();
    let bound = bound.ok_or_else(|| format!("echo {}/{version} listens nowhere", w.service))?;
    Ok((bound, Running::InProcess(echo)))
}

/// `meshbench echo …` as a child; its address read from its first output line.
async fn child(
    bin: &Path,
    w: &Workload,
    ns: &str,
    version: &str,
    hostname: &str,
    listen: SocketAddr,
) -> Result<(SocketAddr, Running), String> {
    if w.tls.is_some() {
        return Err(format!(
            "workload {}: TLS echoes run in-process only (conformance suites)",
            w.service
        ));
    }
    let kind = match w.protocol {
        WorkloadProtocol::Grpc => "grpc",
        WorkloadProtocol::Tcp => "tcp",
        WorkloadProtocol::Http | WorkloadProtocol::Https => "http",
    };
    let mut cmd = tokio::process::Command::new(bin);
    cmd.args(["echo", "--service", &w.service, "--version", version, "--namespace", ns])
        .args(["--hostname", hostname, &format!("--{kind}"), &listen.to_string()]);
    if w.greeting == Some(false) {
        cmd.arg("--tcp-plain");
    }
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let stdout = child.stdout.take().ok_or("echo: no stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    // `<kind> <address>` lines, then `ready`.
    let mut bound = None;
    loop {
        let line = tokio::time::timeout(std::time::Duration::from_secs(10), lines.next_line())
            .await
            .map_err(|_| format!("echo {}/{version} did not start in 10s", w.service))?
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("echo {}/{version} exited before it was ready", w.service))?;
        if line == "ready" {
            break;
        }
        bound = bound.or_else(|| line.split_whitespace().nth(1).and_then(|a| a.parse().ok()));
    }
    let bound = bound.ok_or_else(|| format!("echo {}/{version} reported no address", w.service))?;
    Ok((
        bound,
        Running::Process {
            _child: child,
            _stdout: lines,
        },
    ))
}

impl Workloads {
    /// Requests the in-process echoes of `service` have answered so far.
    pub fn requests(&self, service: &str) -> u64 {
        self.echoes
            .iter()
            .filter(|(s, _)| s == service)
            .map(|(_, r)| match r {
                Running::InProcess(e) => e.requests(),
                Running::Process { .. } => 0,
            })
            .sum()
    }
}
