//! `istio`: Istio itself, without Kubernetes: istiod (`pilot-discovery discovery`, its config
//! from files, no registry but ServiceEntries and WorkloadEntries) and Istio's gateway
//! (`pilot-agent proxy router`, Istio's Envoy build), from the images `--istio-pilot-image` and
//! `--istio-proxy-image` name, as in `../shared/reference/containers.md` §2 (howardjohn's
//! local-istio-gateway). No registry reachable here has those images: where they were not
//! loaded by hand (`docker load -i`), the target says so in one line and its suites are skipped.
//!
//! Both containers share the host's network (the suite's workloads and client are on loopback):
//! istiod serves xDS on a free loopback port given by its flags, and the gateway binds each
//! Gateway server's port number on the host, as Istio's gateway does without a Service in front,
//! so those ports must be free.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use meshbench_report::TargetInfo;
use serde::Serialize;
use testcontainers::core::{Mount, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

use super::process::http_get;
use super::{StartSpec, Target, TargetError};

pub const DEFAULT_PILOT_IMAGE: &str = "istio/pilot:1.30.0";
pub const DEFAULT_PROXY_IMAGE: &str = "istio/proxyv2:1.30.0";

/// Where the files are inside the containers.
const MESH_FILE: &str = "/etc/istio/config/mesh";
const DATA_DIR: &str = "/var/lib/istio/config/data";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IstioImages {
    pub pilot: String,
    pub proxy: String,
}

impl Default for IstioImages {
    fn default() -> Self {
        IstioImages {
            pilot: DEFAULT_PILOT_IMAGE.into(),
            proxy: DEFAULT_PROXY_IMAGE.into(),
        }
    }
}

/// `repo:tag` split at the tag's colon (a registry's port is not a tag).
pub fn split_image(image: &str) -> (String, String) {
    match image.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo.into(), tag.into()),
        _ => (image.into(), "latest".into()),
    }
}

/// The one-line reason the target cannot run, given which images are missing.
pub fn missing_reason(missing: &[&str]) -> Option<String> {
    if missing.is_empty() {
        return None;
    }
    let loads: Vec<String> = missing
        .iter()
        .map(|m| {
            format!(
                "docker load -i {}.tar",
                split_image(m).0.rsplit('/').next().unwrap_or(m)
            )
        })
        .collect();
    Some(format!(
        "Istio's image{} {} {} not loaded here and cannot be pulled: save {} on a machine that has {} (docker save -o …), then `{}`",
        if missing.len() > 1 { "s" } else { "" },
        missing.join(" and "),
        if missing.len() > 1 { "are" } else { "is" },
        if missing.len() > 1 { "them" } else { "it" },
        if missing.len() > 1 { "them" } else { "it" },
        loads.join(" && ")
    ))
}

/// The files istiod reads, as written for one suite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The directory holding `mesh` and `data/`.
    pub root: PathBuf,
    pub mesh: String,
    /// The suite's config files copied into `data/`, by name.
    pub files: Vec<String>,
}

/// The mesh config: plaintext xDS to istiod on `xds`, config from the file source, and the
/// suite's own mesh settings (`outboundTrafficPolicy`, …) on top.
pub fn mesh_config(xds: &str, suite_mesh: Option<&serde_json::Value>) -> serde_json::Value {
    let mut mesh = serde_json::json!({
        "enableAutoMtls": false,
        "accessLogFile": "/dev/stdout",
        "defaultConfig": {
            "discoveryAddress": xds,
            "controlPlaneAuthPolicy": "NONE",
            "terminationDrainDuration": "0s",
        },
        "configSources": [{ "address": format!("fs://{DATA_DIR}") }],
    });
    if let (Some(serde_json::Value::Object(extra)), Some(m)) = (suite_mesh, mesh.as_object_mut()) {
        for (k, v) in extra {
            if !matches!(k.as_str(), "defaultConfig" | "configSources") {
                m.insert(k.clone(), v.clone());
            }
        }
    }
    mesh
}

/// Writes istiod's mesh file and config directory for a suite under `root`.
pub fn write_layout(spec: &StartSpec<'_>, root: &Path, xds: &str) -> Result<Layout, TargetError> {
    let fail = |what: &Path, e: std::io::Error| TargetError::Failed(format!("cannot write {}: {e}", what.display()));
    let data = root.join("data");
    std::fs::create_dir_all(&data).map_err(|e| fail(&data, e))?;
    let suite_mesh = match spec.mesh {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| fail(path, e))?;
            let sources = mesh_model::load::parse_str(&path.display().to_string(), &text);
            sources.documents.first().map(|d| d.root.to_json())
        }
        None => None,
    };
    let mesh = mesh_model::load::to_yaml_string(&mesh_config(xds, suite_mesh.as_ref()));
    let mesh_path = root.join("mesh");
    std::fs::write(&mesh_path, &mesh).map_err(|e| fail(&mesh_path, e))?;
    let mut files = Vec::new();
    let entries = std::fs::read_dir(spec.config_dir).map_err(|e| fail(spec.config_dir, e))?;
    for entry in entries.flatten() {
        let path = entry.path();
        let yaml = path.extension().is_some_and(|e| e == "yaml" || e == "yml");
        if yaml {
            let name = entry.file_name().to_string_lossy().into_owned();
            std::fs::copy(&path, data.join(&name)).map_err(|e| fail(&path, e))?;
            files.push(name);
        }
    }
    files.sort();
    Ok(Layout {
        root: root.to_path_buf(),
        mesh,
        files,
    })
}

/// A container to start: what testcontainers is given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContainerSpec {
    pub image: String,
    pub cmd: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// host path -> container path
    pub mounts: BTreeMap<String, String>,
    pub network: String,
    pub labels: BTreeMap<String, String>,
}

/// Free loopback ports for istiod's servers: xDS, HTTP (debug), monitoring, webhook, secure xDS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IstiodPorts {
    pub grpc: u16,
    pub http: u16,
    pub monitoring: u16,
    pub https: u16,
    pub secure_grpc: u16,
}

pub fn istiod_spec(images: &IstioImages, layout: &Layout, ports: IstiodPorts, name: &str) -> ContainerSpec {
    let addr = |p: u16| format!("127.0.0.1:{p}");
    ContainerSpec {
        image: images.pilot.clone(),
        cmd: vec![
            "discovery".into(),
            // No Kubernetes registry: ServiceEntries and WorkloadEntries from the files only.
            "--registries=".into(),
            "--meshConfig".into(),
            MESH_FILE.into(),
            "--grpcAddr".into(),
            addr(ports.grpc),
            "--httpAddr".into(),
            addr(ports.http),
            "--monitoringAddr".into(),
            addr(ports.monitoring),
            "--httpsAddr".into(),
            addr(ports.https),
            "--secureGRPCAddr".into(),
            addr(ports.secure_grpc),
        ],
        env: BTreeMap::new(),
        mounts: [
            (layout.root.join("mesh").display().to_string(), MESH_FILE.to_string()),
            (layout.root.join("data").display().to_string(), DATA_DIR.to_string()),
        ]
        .into(),
        network: "host".into(),
        labels: [(super::container::LABEL.to_string(), name.to_string())].into(),
    }
}

/// Istio's gateway: `pilot-agent proxy router` with the suite's gateway labels as node labels
/// (what a Gateway's `selector` matches) and the suite's certificates mounted where its YAML
/// names them.
pub fn gateway_spec(images: &IstioImages, layout: &Layout, spec: &StartSpec<'_>, name: &str) -> ContainerSpec {
    let labels = serde_json::to_string(spec.labels).unwrap_or_else(|_| "{}".into());
    let work = spec.config_dir.parent().unwrap_or(Path::new("/")).display().to_string();
    ContainerSpec {
        image: images.proxy.clone(),
        cmd: vec!["proxy".into(), "router".into()],
        env: [
            ("FILE_MOUNTED_CERTS".to_string(), "true".to_string()),
            ("ISTIO_META_NAMESPACE".into(), "istio-system".into()),
            ("ISTIO_METAJSON_LABELS".into(), labels),
        ]
        .into(),
        mounts: [
            (layout.root.join("mesh").display().to_string(), MESH_FILE.to_string()),
            (work.clone(), work),
        ]
        .into(),
        network: "host".into(),
        labels: [(super::container::LABEL.to_string(), name.to_string())].into(),
    }
}

async fn start(c: &ContainerSpec) -> Result<ContainerAsync<GenericImage>, TargetError> {
    let (repo, tag) = split_image(&c.image);
    let mut request = GenericImage::new(repo, tag)
        .with_wait_for(WaitFor::Nothing)
        .with_cmd(c.cmd.clone())
        .with_network(c.network.clone());
    for (k, v) in &c.env {
        request = request.with_env_var(k.clone(), v.clone());
    }
    for (host, inside) in &c.mounts {
        request = request.with_mount(Mount::bind_mount(host.clone(), inside.clone()));
    }
    for (k, v) in &c.labels {
        request = request.with_label(k.clone(), v.clone());
    }
    request
        .start()
        .await
        .map_err(|e| TargetError::Failed(format!("cannot start {}: {e}", c.image)))
}

fn free_port() -> Result<u16, TargetError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| TargetError::Failed(format!("no free loopback port: {e}")))
}

#[derive(Debug)]
pub struct Istio {
    name: String,
    images: IstioImages,
    running: Vec<ContainerAsync<GenericImage>>,
    /// What istiod and the gateway printed, kept when they stop.
    output: String,
}

impl Istio {
    pub fn new(images: IstioImages) -> Result<Istio, TargetError> {
        let missing: Vec<&str> = [images.pilot.as_str(), images.proxy.as_str()]
            .into_iter()
            .filter(|i| !crate::images::present(i).unwrap_or(false))
            .collect();
        if let Some(why) = missing_reason(&missing) {
            return Err(TargetError::Unavailable(why));
        }
        Ok(Istio {
            name: "istio".into(),
            images,
            running: Vec::new(),
            output: String::new(),
        })
    }
}

#[async_trait::async_trait]
impl Target for Istio {
    fn info(&self) -> TargetInfo {
        TargetInfo {
            name: self.name.clone(),
            kind: "istio".into(),
            address: None,
            version: Some(format!("{} + {}", self.images.pilot, self.images.proxy)),
        }
    }

    async fn start(&mut self, spec: &StartSpec<'_>) -> Result<BTreeMap<u32, SocketAddr>, TargetError> {
        self.stop().await;
        let ports = IstiodPorts {
            grpc: free_port()?,
            http: free_port()?,
            monitoring: free_port()?,
            https: free_port()?,
            secure_grpc: free_port()?,
        };
        let root = spec.config_dir.with_extension("istio");
        let layout = write_layout(spec, &root, &format!("127.0.0.1:{}", ports.grpc))?;
        self.running
            .push(start(&istiod_spec(&self.images, &layout, ports, &self.name)).await?);
        self.running
            .push(start(&gateway_spec(&self.images, &layout, spec, &self.name)).await?);
        // Istio's gateway says it is ready on 15021 once it has its listeners from istiod.
        let ready: SocketAddr = ([127, 0, 0, 1], 15021).into();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !matches!(http_get(ready, "/healthz/ready").await, Some((200, _))) {
            if Instant::now() >= deadline {
                self.stop().await;
                return Err(TargetError::Failed("Istio's gateway was not ready within 60 s".into()));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(spec
            .ports
            .iter()
            .filter_map(|p| Some((*p, SocketAddr::from(([127, 0, 0, 1], u16::try_from(*p).ok()?)))))
            .collect())
    }

    fn another(&self) -> Result<Box<dyn Target>, TargetError> {
        let mut i = Istio::new(self.images.clone())?;
        i.name = self.name.clone();
        Ok(Box::new(i))
    }

    async fn stop(&mut self) {
        let mut output = String::new();
        for c in self.running.drain(..).rev() {
            output.push_str(&super::container::output_of(&c).await);
            let _ = c.rm().await;
        }
        self.output = output;
    }

    fn logs(&self) -> String {
        self.output.clone()
    }

    fn rename(&mut self, name: &str) {
        self.name = name.into();
    }
}

#[cfg(test)]
mod tests;
