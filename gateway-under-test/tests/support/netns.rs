//! Hosts of a test's own: network namespaces on one bridge (itself in a namespace the test made),
//! each with one address in 10.251.0.0/24, made with iproute2 and removed when dropped. Outside
//! these namespaces nothing is touched but `/etc/netns/<name>/hosts` (the hosts file that
//! `ip netns exec` shows the processes it starts: a host's DNS), removed with them.
//!
//! `Host::capture_outbound` installs what Istio's `istio-iptables` installs for a pod's outbound
//! traffic: every TCP connection redirected to the sidecar's port 15001, except the sidecar's
//! own (uid or gid 1337, `PROXY_GID`) and loopback's.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Output};

/// The group the sidecar runs as: its own connections are not captured.
pub const PROXY_GID: u32 = 1337;

static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Why this machine cannot make hosts (not root; no `ip`, `iptables` or `setpriv`), if it cannot.
pub fn unavailable() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not root: network namespaces and iptables need it".into());
    }
    for (tool, version) in [("ip", "-V"), ("iptables", "--version"), ("setpriv", "--version")] {
        let found = Command::new(tool)
            .arg(version)
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Some(format!("`{tool}` is not installed"));
        }
    }
    None
}

/// Runs `cmd`, panicking with its output when it fails.
fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn ip(args: &[&str]) -> Output {
    run(Command::new("ip").args(args))
}

/// A set of hosts on one bridge.
pub struct Net {
    prefix: String,
    bridge: String,
    hosts: Vec<Host>,
}

/// One host: a network namespace with one address.
#[derive(Debug, Clone)]
pub struct Host {
    pub ns: String,
    pub ip: Ipv4Addr,
}

impl Net {
    pub fn new() -> Net {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let prefix = format!("mbt{}-{n}", std::process::id());
        let bridge = format!("{prefix}-net");
        ip(&["netns", "add", &bridge]);
        let net = Net {
            prefix,
            bridge,
            hosts: Vec::new(),
        };
        ip(&["-n", &net.bridge, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &net.bridge, "link", "set", "br0", "up"]);
        net
    }

    /// A new host on the bridge: 10.251.0.2, .3, … in the order they are made.
    pub fn host(&mut self, name: &str) -> Host {
        let i = self.hosts.len() + 2;
        let host = Host {
            ns: format!("{}-{name}", self.prefix),
            ip: Ipv4Addr::new(10, 251, 0, u8::try_from(i).expect("fewer than 250 hosts")),
        };
        ip(&["netns", "add", &host.ns]);
        self.hosts.push(host.clone());
        let veth = format!("v{i}");
        ip(&[
            "-n",
            &self.bridge,
            "link",
            "add",
            &veth,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &host.ns,
        ]);
        ip(&["-n", &self.bridge, "link", "set", &veth, "master", "br0", "up"]);
        ip(&["-n", &host.ns, "addr", "add", &format!("{}/24", host.ip), "dev", "eth0"]);
        ip(&["-n", &host.ns, "link", "set", "eth0", "up"]);
        ip(&["-n", &host.ns, "link", "set", "lo", "up"]);
        host
    }
}

impl Default for Net {
    fn default() -> Self {
        Net::new()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for h in &self.hosts {
            let _ = Command::new("ip").args(["netns", "del", &h.ns]).output();
            let _ = std::fs::remove_dir_all(h.etc());
        }
        let _ = Command::new("ip").args(["netns", "del", &self.bridge]).output();
    }
}

impl Host {
    fn etc(&self) -> PathBuf {
        PathBuf::from("/etc/netns").join(&self.ns)
    }

    /// `program` to be run in this host.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns, program]);
        c
    }

    /// `program` run in this host as the sidecar's group (not captured).
    pub fn proxy_command(&self, program: &str) -> Command {
        let mut c = self.command("setpriv");
        c.args(["--regid", &PROXY_GID.to_string(), "--clear-groups", "--", program]);
        c
    }

    /// Names this host's processes (started by `command`) resolve: its `/etc/hosts`.
    pub fn resolve(&self, names: &[(&str, Ipv4Addr)]) {
        std::fs::create_dir_all(self.etc()).expect("/etc/netns");
        let mut text = String::from("127.0.0.1 localhost\n");
        for (name, addr) in names {
            text.push_str(&format!("{addr} {name}\n"));
        }
        std::fs::write(self.etc().join("hosts"), text).expect("hosts file");
    }

    fn iptables(&self, args: &[&str]) {
        run(self.command("iptables").args(args));
    }

    /// Istio's outbound capture (`istio-iptables -p 15001 -u 1337 -g 1337 -m REDIRECT`).
    pub fn capture_outbound(&self) {
        let gid = PROXY_GID.to_string();
        self.iptables(&["-t", "nat", "-N", "ISTIO_REDIRECT"]);
        self.iptables(&[
            "-t",
            "nat",
            "-A",
            "ISTIO_REDIRECT",
            "-p",
            "tcp",
            "-j",
            "REDIRECT",
            "--to-ports",
            "15001",
        ]);
        self.iptables(&["-t", "nat", "-N", "ISTIO_OUTPUT"]);
        self.iptables(&["-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-j", "ISTIO_OUTPUT"]);
        self.iptables(&[
            "-t",
            "nat",
            "-A",
            "ISTIO_OUTPUT",
            "-o",
            "lo",
            "-s",
            "127.0.0.6/32",
            "-j",
            "RETURN",
        ]);
        for owner in [["--uid-owner", gid.as_str()], ["--gid-owner", gid.as_str()]] {
            self.iptables(&[
                "-t",
                "nat",
                "-A",
                "ISTIO_OUTPUT",
                "-m",
                "owner",
                owner[0],
                owner[1],
                "-j",
                "RETURN",
            ]);
        }
        self.iptables(&["-t", "nat", "-A", "ISTIO_OUTPUT", "-d", "127.0.0.1/32", "-j", "RETURN"]);
        self.iptables(&["-t", "nat", "-A", "ISTIO_OUTPUT", "-j", "ISTIO_REDIRECT"]);
    }

    /// Counts the TCP SYNs that reach this host from now on (see `syns`).
    pub fn count_syns(&self) {
        self.iptables(&["-I", "INPUT", "1", "-p", "tcp", "--syn", "-j", "ACCEPT"]);
    }

    /// SYNs counted since `count_syns`.
    pub fn syns(&self) -> u64 {
        let out = run(self.command("iptables").args(["-L", "INPUT", "1", "-v", "-x", "-n"]));
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no packet count in `{text}`"))
    }

    /// Runs `f` on a thread inside this host's network namespace: the sockets it opens (and the
    /// threads it starts) belong to this host.
    pub fn within<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/var/run/netns/{}", self.ns);
        std::thread::scope(|s| {
            s.spawn(move || {
                let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
                nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
                f()
            })
            .join()
            .expect("thread in namespace")
        })
    }
}
