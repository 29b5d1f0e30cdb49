//! `container:meshgate` and `container:envoy`: the same gateways as `reference` and `envoy`, run
//! from the images `meshbench images build` makes, brought up by testcontainers. The container
//! shares the host's network namespace (the suite's workloads and client are on loopback) and
//! sees the suite's work directory at the same path, so the gateway gets exactly the command
//! line its process target would. testcontainers removes the container when the target stops,
//! and when it is dropped (a failed or panicking run).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use meshbench_report::TargetInfo;
use testcontainers::core::{Mount, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

use super::process::Logs;
use super::{envoy, reference, StartSpec, Target, TargetError};

/// The label every container of a meshbench run carries (`docker ps --filter label=meshbench.target`).
pub const LABEL: &str = "meshbench.target";

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

    /// The image `meshbench images build` makes for it: `<prefix>/<gateway>:<version>`, the
    /// prefix `meshbench` or $MESHBENCH_IMAGE_PREFIX (`images build --prefix`).
    pub fn image(self) -> (String, String) {
        let prefix = std::env::var("MESHBENCH_IMAGE_PREFIX")
            .ok()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "meshbench".into());
        (
            format!("{prefix}/{}", self.name()),
            env!("CARGO_PKG_VERSION").to_string(),
        )
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
            logs: None,
            output: String::new(),
        })
    }

    /// The gateway's command line, the files it writes, and how to tell it is ready.
    fn command(&self, spec: &StartSpec<'_>, logs: &Logs) -> Result<(Vec<String>, Probe), TargetError> {
        Ok(match self.gateway {
            Gateway::Meshgate => {
                let ready = reference::ready_file(spec);
                (
                    reference::arguments(spec, logs, self.workers, &self.extra_args),
                    Probe::Meshgate(ready),
                )
            }
            Gateway::Envoy => {
                let (bootstrap, names) = envoy::Envoy::write_bootstrap(spec, logs)?;
                let admin = envoy::admin_file(spec);
                (
                    envoy::arguments(&bootstrap, &admin, self.workers),
                    Probe::Envoy(admin, names),
                )
            }
        })
    }
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
        let (args, probe) = self.command(spec, &logs)?;
        let dir = work_dir(spec);
        let mut mounts = vec![dir.clone()];
        if let Some(m) = spec.mesh.and_then(Path::parent).map(|p| p.display().to_string()) {
            if !m.starts_with(&dir) {
                mounts.push(m);
            }
        }
        let (repo, tag) = self.gateway.image();
        let mut request = GenericImage::new(repo, tag)
            .with_wait_for(WaitFor::Nothing)
            .with_cmd(args)
            .with_network("host")
            .with_label(LABEL, self.name.clone());
        for m in mounts {
            request = request.with_mount(Mount::bind_mount(m.clone(), m));
        }
        self.logs = Some(logs);
        let running = request
            .start()
            .await
            .map_err(|e| TargetError::Failed(format!("cannot start the {} container: {e}", self.name)))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(listeners) = probe.listeners().await {
                self.running = Some(running);
                return Ok(listeners);
            }
            let alive = running.is_running().await.unwrap_or(false);
            if !alive || Instant::now() >= deadline {
                let output = output_of(&running).await;
                let _ = running.rm().await;
                let why = if alive { "was not ready within 30 s" } else { "exited" };
                return Err(TargetError::Failed(format!(
                    "the {} container {why}:\n{output}",
                    self.name
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn another(&self) -> Result<Box<dyn Target>, TargetError> {
        let mut c = Container::new(self.gateway)?;
        c.workers = self.workers;
        c.extra_args = self.extra_args.clone();
        c.name = self.name.clone();
        Ok(Box::new(c))
    }

    async fn stop(&mut self) {
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
