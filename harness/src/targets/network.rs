//! A Docker network of a suite's own, for the container targets: the suite's echo workloads run
//! as containers on it and are registered by their container addresses, the gateway joins it and
//! reaches them as it would in a cluster, and the client stays on the host (the gateway's ports
//! are published on loopback). The network and every container on it carry labels, and all of
//! them are removed when it is dropped: after the suite, on failure, on Ctrl-C and on panic.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// The label on a suite network and on every container attached to it (value: the network).
pub const LABEL: &str = "meshbench.network";

#[derive(Debug)]
pub struct SuiteNetwork {
    pub name: String,
}

/// A Docker name for `suite` on this run: lower case letters, digits and dashes, unique per
/// process and call.
pub fn name_for(suite: &str, pid: u32, n: u32) -> String {
    let clean: String = suite
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(30)
        .collect();
    format!("meshbench-{clean}-{pid}-{n}")
}

fn docker(args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run docker ({e}): the container targets need a Docker engine"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "docker {}: {}",
            args.first().copied().unwrap_or_default(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl SuiteNetwork {
    /// Creates a bridge network for `suite`, labelled with the target's name as its containers are.
    pub fn create(suite: &str, target: &str) -> Result<SuiteNetwork, String> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = name_for(suite, std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        docker(&[
            "network",
            "create",
            "--driver",
            "bridge",
            "--label",
            &format!("{}={target}", super::container::LABEL),
            "--label",
            &format!("{LABEL}={name}"),
            &name,
        ])?;
        Ok(SuiteNetwork { name })
    }

    /// Removes every container on the network (running or not), then the network.
    fn remove(&self) -> Result<(), String> {
        let ids = docker(&["ps", "-a", "-q", "--filter", &format!("label={LABEL}={}", self.name)])?;
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f", "-v"];
            args.extend(ids);
            docker(&args)?;
        }
        docker(&["network", "rm", &self.name]).map(drop)
    }
}

impl Drop for SuiteNetwork {
    fn drop(&mut self) {
        if let Err(e) = self.remove() {
            eprintln!("warning: cannot remove the Docker network {}: {e}", self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_docker_and_dns_safe() {
        assert_eq!(name_for("http-routing", 42, 0), "meshbench-http-routing-42-0");
        assert_eq!(name_for("My Suite_1", 7, 3), "meshbench-my-suite-1-7-3");
        let long = name_for(&"x".repeat(100), 4_194_304, 9);
        assert_eq!(long, format!("meshbench-{}-4194304-9", "x".repeat(30)));
        assert!(long.len() <= 63, "a DNS label");
    }
}
