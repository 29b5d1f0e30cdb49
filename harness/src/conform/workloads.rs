//! A suite's echo workloads: one per version and replica, in this process (conformance: their
//! request counters are read), as `meshbench echo` child processes (load: their CPU is not the
//! generator's) or as containers on a suite's Docker network (the container targets: registered
//! by their container addresses, counters read from their admin port), and the registry
//! documents (ServiceEntry + WorkloadEntries) that describe them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use testcontainers::core::{Mount, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};
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
    /// `meshbench echo` in a container (removed when dropped) and its admin address.
    Container {
        _container: Box<ContainerAsync<GenericImage>>,
        admin: SocketAddr,
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
    /// `meshbench echo` containers on a suite's Docker network (`targets::network`), labelled
    /// with the target's name as its gateway is.
    Containers {
        network: String,
        target: String,
    },
    /// In this process, listening in a host of the run's own (a captured run's external host,
    /// `conform::capture`), on its address.
    Host(mesh_netns::Host),
}

/// An echo instance's name (its `Hostname`): `<service>-<version>-<replica>`. Where a workload's
/// endpoint address is a name, a launch that gives each instance an address of its own registers
/// it by this name.
pub fn instance_name(w: &Workload, version: &str, replica: u32) -> String {
    format!("{}-{version}-{replica}", w.service)
}

/// Where a container echo's admin port answers `GET /requests`.
const ECHO_ADMIN_PORT: u16 = 15000;

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
        let (ns, host) = (w.namespace().to_string(), w.service_host());
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

    /// `address`: where this instance is (the registry's address, or a container's).
    fn workload_entry(&self, version: &str, replica: u32, address: &str, port: u16) -> String {
        let (port_name, _) = self.w.protocol.istio_port();
        format!(
            "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: {svc}-{version}-{replica}, namespace: {ns}}}\nspec:\n  \
             address: {address}\n  ports: {{{port_name}: {port}}}\n  labels: {{app: {svc}, version: {version}}}\n---\n",
            svc = self.w.service,
            ns = self.ns,
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
                let hostname = instance_name(w, v, r);
                let mut address = reg.address.clone();
                let (bound, running) = match launch {
                    Launch::InProcess => in_process(w, &reg.ns, v, &hostname, listen, certs, None).await?,
                    Launch::Host(h) => {
                        let listen = SocketAddr::new(h.ip.into(), 0);
                        address = match w.address {
                            Some(_) => hostname.clone(),
                            None => h.ip.to_string(),
                        };
                        in_process(w, &reg.ns, v, &hostname, listen, certs, Some(h)).await?
                    }
                    Launch::Processes(bin) => child(bin, w, &reg.ns, v, &hostname, listen).await?,
                    Launch::Containers { network, target } => {
                        let name = format!("{network}-{hostname}");
                        let on = (network.as_str(), target.as_str());
                        let got = container(on, &name, w, &reg.ns, v, &hostname, certs).await?;
                        // A named address (resolution DNS) becomes the container's name, which
                        // Docker's DNS resolves on the network; a number, its address there.
                        address = if w.address.is_some() {
                            name
                        } else {
                            got.0.ip().to_string()
                        };
                        got
                    }
                };
                out.addresses.entry(w.service.clone()).or_insert(bound);
                if registered {
                    out.registry.push_str(&reg.workload_entry(v, r, &address, bound.port()));
                }
                out.echoes.push((w.service.clone(), running));
            }
        }
    }
    Ok(out)
}

/// An echo in this process; in `host` when given (its sockets opened there, its tasks on this
/// runtime).
async fn in_process(
    w: &Workload,
    ns: &str,
    version: &str,
    hostname: &str,
    listen: SocketAddr,
    certs: &Path,
    host: Option<&mesh_netns::Host>,
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
    let started = match host {
        None => b.start().await,
        Some(h) => {
            let runtime = tokio::runtime::Handle::current();
            h.run(move || runtime.block_on(b.start())).await?
        }
    };
    let echo = started.map_err(|e| format!("cannot start echo {}/{version}: {e}", w.service))?;
    let bound = echo.http.first().or(echo.grpc.first()).or(echo.tcp.first()).copied();
    let bound = bound.ok_or_else(|| format!("echo {}/{version} listens nowhere", w.service))?;
    Ok((bound, Running::InProcess(echo)))
}

/// The `meshbench echo` flag that serves `protocol` (`--http` also serves HTTPS with a cert).
fn echo_flag(protocol: WorkloadProtocol) -> &'static str {
    match protocol {
        WorkloadProtocol::Grpc => "grpc",
        WorkloadProtocol::Tcp => "tcp",
        WorkloadProtocol::Http | WorkloadProtocol::Https => "http",
    }
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
    let kind = echo_flag(w.protocol);
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

/// `meshbench echo` in a container named `name` on `(network, target)`, listening on the
/// workload's own port (the container has an address of its own); ready when it says so. Its
/// address on the network, and the container.
async fn container(
    (network, target): (&str, &str),
    name: &str,
    w: &Workload,
    ns: &str,
    version: &str,
    hostname: &str,
    certs: &Path,
) -> Result<(SocketAddr, Running), String> {
    let (repo, tag) = crate::images::reference("meshbench");
    if !crate::images::present(&format!("{repo}:{tag}"))? {
        return Err(format!(
            "the echo image {repo}:{tag} is not here: build it with `meshbench images build`"
        ));
    }
    let port = u16::try_from(w.port).map_err(|_| format!("workload {}: port {} is not a port", w.service, w.port))?;
    let kind = echo_flag(w.protocol);
    let mut args: Vec<String> = ["echo", "--service", &w.service, "--version", version, "--namespace", ns]
        .iter()
        .map(|a| a.to_string())
        .collect();
    args.extend([
        "--hostname".into(),
        hostname.into(),
        format!("--{kind}"),
        format!("0.0.0.0:{port}"),
        "--admin".into(),
        format!("0.0.0.0:{ECHO_ADMIN_PORT}"),
    ]);
    if w.greeting == Some(false) {
        args.push("--tcp-plain".into());
    }
    let mut image = GenericImage::new(repo, tag)
        .with_wait_for(WaitFor::message_on_stdout("ready"))
        .with_cmd(args.clone())
        .with_network(network)
        .with_container_name(name)
        .with_label(crate::targets::network::LABEL, network)
        .with_label(crate::targets::container::LABEL, target);
    if let Some(t) = &w.tls {
        let dir = certs.display().to_string();
        image = image.with_mount(Mount::bind_mount(dir.clone(), dir));
        let mut args = args;
        args.extend(["--tls-cert".into(), certs.join(&t.cert).display().to_string()]);
        if let Some(ca) = &t.client_ca {
            args.extend(["--client-ca".into(), ca.clone()]);
        }
        image = image.with_cmd(args);
    }
    let c = image
        .start()
        .await
        .map_err(|e| format!("cannot start echo {}/{version} in a container: {e}", w.service))?;
    let ip = c
        .get_bridge_ip_address()
        .await
        .map_err(|e| format!("echo {}/{version}: no address on {network}: {e}", w.service))?;
    Ok((
        SocketAddr::new(ip, port),
        Running::Container {
            _container: Box::new(c),
            admin: SocketAddr::new(ip, ECHO_ADMIN_PORT),
        },
    ))
}

impl Workloads {
    /// Requests the echoes of `service` have answered so far (an echo in a container is asked on
    /// its admin port; a child process counts nothing).
    pub async fn requests(&self, service: &str) -> u64 {
        let mut n = 0;
        for (_, r) in self.echoes.iter().filter(|(s, _)| s == service) {
            n += match r {
                Running::InProcess(e) => e.requests(),
                Running::Process { .. } => 0,
                Running::Container { admin, .. } => crate::targets::process::http_get(*admin, "/requests")
                    .await
                    .and_then(|(_, body)| body.trim().parse().ok())
                    .unwrap_or(0),
            };
        }
        n
    }
}
