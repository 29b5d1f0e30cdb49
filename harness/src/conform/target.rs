//! Targets: what a suite runs against. `reference` starts the meshgate binary with the suite's
//! config; `external` is a gateway someone else configured, reached at given addresses. An Envoy
//! or container target is one more implementation of `Target`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A gateway under test, brought up for one suite.
pub trait Target {
    fn name(&self) -> &str;
    /// Applies `config_dir` (the suite's Istio YAML plus its workloads' registry) and returns the
    /// address of each gateway port the suite uses.
    fn start(
        &mut self,
        config_dir: &Path,
        mesh: Option<&Path>,
        labels: &BTreeMap<String, String>,
        ports: &[u32],
        role: &str,
    ) -> Result<BTreeMap<u32, SocketAddr>, String>;
    /// One more target of the same kind (for a suite's extra gateways).
    fn another(&self) -> Result<Box<dyn Target>, String>;
    /// Tears down (also on drop).
    fn stop(&mut self);
    /// Output worth keeping (access log, stderr).
    fn logs(&self) -> String;
}

/// meshgate, started as a child process.
#[derive(Debug)]
pub struct Reference {
    binary: PathBuf,
    child: Option<Child>,
    dir: Option<PathBuf>,
}

impl Reference {
    /// `binary`: the meshgate executable (default: beside this one).
    pub fn new(binary: Option<PathBuf>) -> Result<Reference, String> {
        let binary = match binary {
            Some(b) => b,
            None => std::env::current_exe()
                .map_err(|e| e.to_string())?
                .parent()
                .map(|d| d.join("meshgate"))
                .ok_or("cannot find the meshgate binary: give --meshgate PATH")?,
        };
        if !binary.exists() {
            return Err(format!(
                "{} does not exist: build it (cargo build -p meshgate) or give --meshgate PATH",
                binary.display()
            ));
        }
        Ok(Reference {
            binary,
            child: None,
            dir: None,
        })
    }
}

impl Target for Reference {
    fn name(&self) -> &str {
        "reference"
    }

    fn start(
        &mut self,
        config_dir: &Path,
        mesh: Option<&Path>,
        labels: &BTreeMap<String, String>,
        ports: &[u32],
        role: &str,
    ) -> Result<BTreeMap<u32, SocketAddr>, String> {
        self.stop();
        let ready = config_dir.with_extension("ready.json");
        let _ = std::fs::remove_file(&ready);
        let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut cmd = Command::new(&self.binary);
        cmd.arg("-c")
            .arg(config_dir)
            .args(["--admin", "127.0.0.1:0", "--ready-file"])
            .arg(&ready);
        cmd.args(["--labels", &labels.join(",")]);
        cmd.arg("--access-log").arg(config_dir.with_extension("access.log"));
        if let Some(m) = mesh {
            cmd.arg("--mesh").arg(m);
        }
        if role == "sidecar" {
            // The outbound proxy is reported under Istio's outbound port, 15001.
            cmd.args(["--role", "sidecar", "--outbound", "127.0.0.1:0"]);
        }
        for p in ports.iter().filter(|p| role != "sidecar" || **p != 15001) {
            cmd.args(["--port-map", &format!("{p}=127.0.0.1:0")]);
        }
        let stderr = std::fs::File::create(config_dir.with_extension("stderr.log")).map_err(|e| e.to_string())?;
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.binary.display()))?;
        self.dir = Some(config_dir.to_path_buf());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(text) = std::fs::read_to_string(&ready) {
                let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
                let mut out = BTreeMap::new();
                for (k, a) in v["listeners"].as_object().into_iter().flatten() {
                    if let (Ok(p), Some(Ok(addr))) = (k.parse(), a.as_str().map(str::parse)) {
                        out.insert(p, addr);
                    }
                }
                self.child = Some(child);
                return Ok(out);
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("meshgate exited ({status}): {}", self.logs()));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err(format!("meshgate did not get ready in 30s: {}", self.logs()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn another(&self) -> Result<Box<dyn Target>, String> {
        Ok(Box::new(Reference::new(Some(self.binary.clone()))?))
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn logs(&self) -> String {
        let Some(d) = &self.dir else { return String::new() };
        let read = |ext: &str| std::fs::read_to_string(d.with_extension(ext)).unwrap_or_default();
        format!("{}{}", read("stderr.log"), read("access.log"))
    }
}

impl Drop for Reference {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A gateway configured by someone else: suite ports map to addresses (`80=10.0.0.5:80`).
#[derive(Debug)]
pub struct External {
    pub addresses: BTreeMap<u32, SocketAddr>,
}

impl Target for External {
    fn name(&self) -> &str {
        "external"
    }

    fn start(
        &mut self,
        _: &Path,
        _: Option<&Path>,
        _: &BTreeMap<String, String>,
        ports: &[u32],
        _: &str,
    ) -> Result<BTreeMap<u32, SocketAddr>, String> {
        match ports.iter().find(|p| !self.addresses.contains_key(p)) {
            Some(p) => Err(format!("port {p} has no address: add --address {p}=HOST:PORT")),
            None => Ok(self.addresses.clone()),
        }
    }

    /// Extra gateways are reached at the same `--address` map.
    fn another(&self) -> Result<Box<dyn Target>, String> {
        Ok(Box::new(External {
            addresses: self.addresses.clone(),
        }))
    }

    fn stop(&mut self) {}

    fn logs(&self) -> String {
        String::new()
    }
}
