//! `reference`: meshgate, started as a child process with the suite's config, every port bound
//! to a free loopback port and reported through its ready file.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use meshbench_report::TargetInfo;

use super::process::{Logs, Process};
use super::{Bind, StartSpec, Target, TargetError, ADMIN_PORT};
use crate::conform::suite::Role;

#[derive(Debug)]
pub struct Reference {
    name: String,
    binary: PathBuf,
    /// Worker threads (`--workers`).
    pub workers: u32,
    /// More arguments, passed as they are.
    pub extra_args: Vec<String>,
    process: Option<Process>,
    logs: Option<Logs>,
}

impl Reference {
    /// `binary`: the meshgate executable (default: beside this one).
    pub fn new(binary: Option<PathBuf>) -> Result<Reference, TargetError> {
        let binary = match binary {
            Some(b) => b,
            None => std::env::current_exe()
                .map_err(|e| TargetError::Failed(e.to_string()))?
                .with_file_name("meshgate"),
        };
        if !binary.exists() {
            return Err(TargetError::Unavailable(format!(
                "{} does not exist: build it (cargo build -p meshgate) or give --meshgate PATH",
                binary.display()
            )));
        }
        Ok(Reference {
            name: "reference".into(),
            binary,
            workers: 1,
            extra_args: Vec::new(),
            process: None,
            logs: None,
        })
    }
}

/// The listeners a meshgate ready file names: `{"listeners": {"80": "127.0.0.1:41234"}}`.
pub fn ready_listeners(text: &str) -> Option<BTreeMap<u32, SocketAddr>> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    let mut out = BTreeMap::new();
    for (k, a) in v["listeners"].as_object()? {
        if let (Ok(p), Some(Ok(addr))) = (k.parse(), a.as_str().map(str::parse)) {
            out.insert(p, addr);
        }
    }
    Some(out)
}

/// Where meshgate reports its listeners for a suite (removed first, so a stale one never counts).
pub fn ready_file(spec: &StartSpec<'_>) -> PathBuf {
    let ready = spec.config_dir.with_extension("ready.json");
    let _ = std::fs::remove_file(&ready);
    ready
}

/// The listeners of a ready file, once it is there.
pub async fn listeners(ready: PathBuf) -> Option<BTreeMap<u32, SocketAddr>> {
    let text = tokio::fs::read_to_string(&ready).await.ok()?;
    ready_listeners(&text)
}

/// meshgate's command line for a suite: its config, labels and ports, every port where `bind`
/// puts it, the listeners reported in the ready file.
pub fn arguments(spec: &StartSpec<'_>, logs: &Logs, workers: u32, extra: &[String], bind: Bind) -> Vec<String> {
    let labels: Vec<String> = spec.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let path = |p: &std::path::Path| p.display().to_string();
    let mut a: Vec<String> = vec![
        "-c".into(),
        path(spec.config_dir),
        "--admin".into(),
        bind.text(ADMIN_PORT),
        "--ready-file".into(),
        path(&spec.config_dir.with_extension("ready.json")),
        "--labels".into(),
        labels.join(","),
        "--workers".into(),
        workers.to_string(),
        // A suite's gateway has no load balancer to drain from: it stops at once.
        "--drain-time".into(),
        "0s".into(),
    ];
    a.extend(extra.iter().cloned());
    a.push("--access-log".into());
    a.push(path(&logs.access()));
    if let Some(m) = spec.mesh {
        a.push("--mesh".into());
        a.push(path(m));
    }
    let sidecar = spec.role == Role::Sidecar;
    if sidecar {
        // The outbound proxy is reported under Istio's outbound port, 15001.
        a.extend(["--role".into(), "sidecar".into(), "--outbound".into(), bind.text(15001)]);
    }
    for p in spec.ports.iter().filter(|p| !sidecar || **p != 15001) {
        a.push("--port-map".into());
        a.push(format!("{p}={}", bind.text(u16::try_from(*p).unwrap_or(0))));
    }
    a
}

#[async_trait::async_trait]
impl Target for Reference {
    fn info(&self) -> TargetInfo {
        TargetInfo {
            name: self.name.clone(),
            kind: "reference".into(),
            address: None,
            version: Some(format!("meshgate {}", env!("CARGO_PKG_VERSION"))),
        }
    }

    async fn start(&mut self, spec: &StartSpec<'_>) -> Result<BTreeMap<u32, SocketAddr>, TargetError> {
        self.stop().await;
        let logs = Logs::for_config(spec.config_dir);
        let ready = ready_file(spec);
        let mut cmd = spec.command(&self.binary);
        cmd.args(arguments(spec, &logs, self.workers, &self.extra_args, spec.bind()));
        if spec.capture {
            cmd.arg("--capture");
        }
        let mut process = Process::spawn("meshgate", cmd, &logs)?;
        self.logs = Some(logs.clone());
        let listeners = process
            .ready(Duration::from_secs(30), &logs, || listeners(ready.clone()))
            .await?;
        self.process = Some(process);
        Ok(spec.reached_at(listeners))
    }

    fn lacks_capture(&self) -> Option<String> {
        None
    }

    fn another(&self) -> Result<Box<dyn Target>, TargetError> {
        let mut r = Reference::new(Some(self.binary.clone()))?;
        r.workers = self.workers;
        r.extra_args = self.extra_args.clone();
        r.name = self.name.clone();
        Ok(Box::new(r))
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
    fn ready_files_name_each_port() {
        let m = ready_listeners(
            r#"{"listeners": {"80": "127.0.0.1:4100", "443": "127.0.0.1:4101", "x": "1"}, "admin": "127.0.0.1:1"}"#,
        );
        let m = m.unwrap_or_default();
        assert_eq!(m.len(), 2);
        assert_eq!(m[&443], "127.0.0.1:4101".parse().unwrap_or(m[&80]));
        assert_eq!(ready_listeners("not json"), None);
    }
}
