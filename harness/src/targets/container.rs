//! `container:meshgate` and `container:envoy`: the same gateways as `reference` and `envoy`, run
//! from the images `meshbench images build` makes, brought up by testcontainers. The container
//! sees the suite's work directory at the same path, so the gateway reads the same files its
//! process target would. In a conformance suite it runs on the suite's own Docker network
//! (`network`) with its workloads as containers beside it: it listens on the suite's port
//! numbers at its own address, those ports are published on loopback for the client, and it is
//! ready when its admin's `/ready`, published too, answers 200. A load run,
//! whose workloads are local processes, shares the host's network instead. testcontainers
//! removes the container when the target stops, and when it is dropped (a failed or panicking
//! run).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use meshbench_report::TargetInfo;
use testcontainers::bollard::models::{HostConfig, PortBinding};
use testcontainers::core::{ContainerPort, Mount, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, ContainerRequest, GenericImage, ImageExt};

use super::process::{http_get_from, Logs};
use super::{envoy, reference, Bind, StartSpec, Target, TargetError, ADMIN_PORT};

/// The label every container of a meshbench run carries (`docker ps --filter label=meshbench.target`).
pub const LABEL: &str = "meshbench.target";

/// How long a started container has to answer as ready. A gateway is up in a second or two; on a
/// busy 2-core machine starting a suite's other containers beside it, some take many times that.
const READY_WITHIN: Duration = Duration::from_secs(60);

/// How long one readiness probe may take: a probe that hangs is abandoned and tried again, so it
/// cannot hold up the wait until its deadline.
const PROBE_WITHIN: Duration = Duration::from_secs(2);

/// Which gateway the container runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gateway {
    Meshgate,
    Envoy,
}

impl Gateway {
    pub fn parse(s: &str) -> Result<Gateway, TargetError> {
        match s {
            "meshgate" => Ok(Gateway::Meshgate),
            "envoy" => Ok(Gateway::Envoy),
            other => Err(TargetError::Failed(format!(
                "unknown container target `container:{other}`: use container:meshgate or container:envoy"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Gateway::Meshgate => "meshgate",
            Gateway::Envoy => "envoy",
        }
    }

    /// The image `meshbench images build` makes for it.
    pub fn image(self) -> (String, String) {
        crate::images::reference(self.name())
    }
}

/// Why the container target cannot run here, if it cannot: no Docker, or no image.
pub fn unavailable(gateway: Gateway) -> Option<String> {
    let (repo, tag) = gateway.image();
    match crate::images::present(&format!("{repo}:{tag}")) {
        Err(e) => Some(e),
        Ok(true) => None,
        Ok(false) => Some(format!(
            "the image {repo}:{tag} is not here: build it with `meshbench images build` (no image is pulled)"
        )),
    }
}

#[derive(Debug)]
pub struct Container {
    name: String,
    gateway: Gateway,
    /// Worker threads (meshgate `--workers`, Envoy `--concurrency`).
    pub workers: u32,
    /// More meshgate arguments, passed as they are.
    pub extra_args: Vec<String>,
    running: Option<ContainerAsync<GenericImage>>,
    /// Where the running gateway's ports are on the suite network, when it is on one.
    on_network: Option<BTreeMap<u32, SocketAddr>>,
    logs: Option<Logs>,
    /// The container's own output, kept when it stops.
    output: String,
}

impl Container {
    pub fn new(gateway: Gateway) -> Result<Container, TargetError> {
        if let Some(why) = unavailable(gateway) {
            return Err(TargetError::Unavailable(why));
        }
        Ok(Container {
            name: format!("container:{}", gateway.name()),
            gateway,
            workers: 1,
            extra_args: Vec::new(),
            running: None,
            on_network: None,
            logs: None,
            output: String::new(),
        })
    }

    /// The gateway's command line, the files it writes, and how to tell it is ready.
    fn command(&self, spec: &StartSpec<'_>, logs: &Logs, bind: Bind) -> Result<(Vec<String>, Probe), TargetError> {
        Ok(match self.gateway {
            Gateway::Meshgate => {
                let ready = reference::ready_file(spec);
                (
                    reference::arguments(spec, logs, self.workers, &self.extra_args, bind),
                    Probe::Meshgate(ready),
                )
            }
            Gateway::Envoy => {
                let (bootstrap, names) = envoy::Envoy::write_bootstrap(spec, logs, bind)?;
                let admin = envoy::admin_file(spec);
                (
                    envoy::arguments(&bootstrap, &admin, self.workers),
                    Probe::Envoy(admin, names),
                )
            }
        })
    }
}

impl Container {
    /// The container for `args`: its image with `wait`, the suite's directories mounted at
    /// their own paths, the target's label.
    fn request(&self, image: GenericImage, args: Vec<String>, spec: &StartSpec<'_>) -> ContainerRequest<GenericImage> {
        let dir = work_dir(spec);
        let mut mounts = vec![dir.clone()];
        if let Some(m) = spec.mesh.and_then(Path::parent).map(|p| p.display().to_string()) {
            if !m.starts_with(&dir) {
                mounts.push(m);
            }
        }
        let mut request = image.with_cmd(args).with_label(LABEL, self.name.clone());
        for m in mounts {
            request = request.with_mount(Mount::bind_mount(m.clone(), m));
        }
        request
    }

    /// On the suite's network: the suite's port numbers at the container's own address,
    /// published on loopback; ready when the admin's `/ready` answers 200.
    async fn start_on_network(
        &mut self,
        spec: &StartSpec<'_>,
        logs: &Logs,
        network: &str,
    ) -> Result<BTreeMap<u32, SocketAddr>, TargetError> {
        let (args, _) = self.command(spec, logs, Bind::OwnAddress)?;
        let ports: Vec<u16> = spec
            .ports
            .iter()
            .map(|p| u16::try_from(*p).map_err(|_| TargetError::Failed(format!("port {p} is not a port"))))
            .collect::<Result<_, _>>()?;
        let (repo, tag) = self.gateway.image();
        let mut image = GenericImage::new(repo, tag)
            .with_wait_for(WaitFor::Nothing)
            .with_exposed_port(ContainerPort::Tcp(ADMIN_PORT));
        for p in &ports {
            image = image.with_exposed_port(ContainerPort::Tcp(*p));
        }
        let mut published = ports.clone();
        published.push(ADMIN_PORT);
        let running = self
            .request(image, args, spec)
            .with_network(network)
            .with_label(super::network::LABEL, network)
            .with_host_config_modifier(move |hc| publish_on_loopback(hc, &published))
            .start()
            .await
            .map_err(|e| TargetError::Failed(format!("cannot start the {} container: {e}", self.name)))?;
        let admin = match running.get_host_port_ipv4(ADMIN_PORT).await {
            Ok(port) => SocketAddr::from(([127, 0, 0, 1], port)),
            Err(e) => {
                let _ = running.rm().await;
                return Err(TargetError::Failed(format!("{}: {e}", self.name)));
            }
        };
        let (running, ()) = self
            .until_ready(running, logs, || async move {
                let (status, _) = http_get_from(None, admin, "/ready").await?;
                (status == 200).then_some(())
            })
            .await?;
        let failed = |e: testcontainers::TestcontainersError| TargetError::Failed(format!("{}: {e}", self.name));
        let ip = running.get_bridge_ip_address().await.map_err(failed)?;
        let mut client = BTreeMap::new();
        let mut inside = BTreeMap::new();
        for p in ports {
            let mapped = running.get_host_port_ipv4(p).await.map_err(failed)?;
            client.insert(u32::from(p), SocketAddr::from(([127, 0, 0, 1], mapped)));
            inside.insert(u32::from(p), SocketAddr::new(ip, p));
        }
        self.on_network = Some(inside);
        self.running = Some(running);
        Ok(client)
    }

    /// On the host's network (a load run's workloads are local processes): free loopback ports,
    /// found as the process target finds them.
    async fn start_on_host(
        &mut self,
        spec: &StartSpec<'_>,
        logs: &Logs,
    ) -> Result<BTreeMap<u32, SocketAddr>, TargetError> {
        let (args, probe) = self.command(spec, logs, Bind::Loopback)?;
        let (repo, tag) = self.gateway.image();
        let image = GenericImage::new(repo, tag).with_wait_for(WaitFor::Nothing);
        let running = self
            .request(image, args, spec)
            .with_network("host")
            .start()
            .await
            .map_err(|e| TargetError::Failed(format!("cannot start the {} container: {e}", self.name)))?;
        let (running, listeners) = self.until_ready(running, logs, || probe.listeners()).await?;
        self.running = Some(running);
        Ok(listeners)
    }

    /// Polls `ready` (each try bounded by `PROBE_WITHIN`) until it answers, the container exits,
    /// or `READY_WITHIN` passes. A container that fails is removed, and the error carries what it
    /// printed and what the gateway wrote to its files.
    async fn until_ready<T, F, Fut>(
        &self,
        running: ContainerAsync<GenericImage>,
        logs: &Logs,
        mut ready: F,
    ) -> Result<(ContainerAsync<GenericImage>, T), TargetError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Ok(Some(answer)) = tokio::time::timeout(PROBE_WITHIN, ready()).await {
                return Ok((running, answer));
            }
            let alive = running.is_running().await.unwrap_or(false);
            if !alive || Instant::now() >= deadline {
                let output = output_of(&running).await;
                let _ = running.rm().await;
                let why = if alive {
                    format!("was not ready within {} s", READY_WITHIN.as_secs())
                } else {
                    "exited".into()
                };
                return Err(TargetError::Failed(format!(
                    "the {} container {why}:\n{output}{}",
                    self.name,
                    logs.read()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Publishes each of `ports` on a free port of the host's loopback only (testcontainers alone
/// would publish on every interface).
fn publish_on_loopback(hc: &mut HostConfig, ports: &[u16]) {
    hc.publish_all_ports = Some(false);
    hc.port_bindings = Some(
        ports
            .iter()
            .map(|p| {
                let binding = PortBinding {
                    host_ip: Some("127.0.0.1".into()),
                    host_port: Some(String::new()),
                };
                (format!("{p}/tcp"), Some(vec![binding]))
            })
            .collect(),
    );
}

/// What a container printed, stdout then stderr.
pub async fn output_of(c: &ContainerAsync<GenericImage>) -> String {
    let out = c.stdout_to_vec().await.unwrap_or_default();
    let err = c.stderr_to_vec().await.unwrap_or_default();
    format!("{}{}", String::from_utf8_lossy(&out), String::from_utf8_lossy(&err))
}

/// How a started gateway reports its listeners.
#[derive(Debug)]
enum Probe {
    Meshgate(std::path::PathBuf),
    Envoy(std::path::PathBuf, BTreeMap<String, u32>),
}

impl Probe {
    async fn listeners(&self) -> Option<BTreeMap<u32, SocketAddr>> {
        match self {
            Probe::Meshgate(ready) => reference::listeners(ready.clone()).await,
            Probe::Envoy(admin, names) => envoy::ready_listeners(admin.clone(), names.clone()).await,
        }
    }
}

/// The directory the container must see: the one holding the suite's config, its generated files,
/// the mesh file and the certificates.
fn work_dir(spec: &StartSpec<'_>) -> String {
    spec.config_dir.parent().unwrap_or(Path::new("/")).display().to_string()
}

#[async_trait::async_trait]
impl Target for Container {
    fn info(&self) -> TargetInfo {
        let (repo, tag) = self.gateway.image();
        TargetInfo {
            name: self.name.clone(),
            kind: format!("container:{}", self.gateway.name()),
            address: None,
            version: Some(format!("{repo}:{tag}")),
        }
    }

    async fn start(&mut self, spec: &StartSpec<'_>) -> Result<BTreeMap<u32, SocketAddr>, TargetError> {
        self.stop().await;
        let logs = Logs::for_config(spec.config_dir);
        logs.clear_access();
        self.logs = Some(logs.clone());
        match spec.network {
            Some(network) => self.start_on_network(spec, &logs, network).await,
            None => self.start_on_host(spec, &logs).await,
        }
    }

    fn wants_network(&self) -> bool {
        true
    }

    fn network_addresses(&self) -> Option<BTreeMap<u32, SocketAddr>> {
        self.on_network.clone()
    }

    fn another(&self) -> Result<Box<dyn Target>, TargetError> {
        let mut c = Container::new(self.gateway)?;
        c.workers = self.workers;
        c.extra_args = self.extra_args.clone();
        c.name = self.name.clone();
        Ok(Box::new(c))
    }

    async fn stop(&mut self) {
        self.on_network = None;
        if let Some(c) = self.running.take() {
            self.output = output_of(&c).await;
            let _ = c.stop_with_timeout(Some(5)).await;
            let _ = c.rm().await;
        }
    }

    fn logs(&self) -> String {
        let files = self.logs.as_ref().map(Logs::read).unwrap_or_default();
        format!("{}{files}", self.output)
    }

    fn rename(&mut self, name: &str) {
        self.name = name.into();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateways_and_their_images() {
        assert_eq!(Gateway::parse("meshgate"), Ok(Gateway::Meshgate));
        assert_eq!(Gateway::parse("envoy").map(Gateway::name), Ok("envoy"));
        assert!(Gateway::parse("istio").is_err_and(|e| e.to_string().contains("container:meshgate")));
        assert_eq!(
            Gateway::Envoy.image(),
            ("meshbench/envoy".to_string(), env!("CARGO_PKG_VERSION").to_string())
        );
    }
}
