//! Hosts of a run's own: network namespaces on one bridge (itself in a namespace the run made),
//! each with one address in 10.251.0.0/24, made with iproute2 and removed when dropped. Outside
//! these namespaces nothing is touched but `/etc/netns/<name>/hosts` (the hosts file that
//! `ip netns exec` shows the processes it starts: a host's DNS), removed with them.
//!
//! `Host::capture_outbound` installs what Istio's `istio-iptables` installs for a pod's outbound
//! traffic: every TCP connection redirected to the sidecar's port 15001, except the sidecar's
//! own (uid or gid 1337, `PROXY_GID`) and loopback's.
//!
//! Each host keeps one thread inside its namespace (`Host::run`): sockets made there belong to
//! the host, whichever thread or runtime uses them afterwards. That is how a client connects from
//! a host (`Host::connect`) and a server listens in one, in this process.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::{mpsc, Arc, Mutex};

/// The group the sidecar runs as: its own connections are not captured.
pub const PROXY_GID: u32 = 1337;

/// The bridge's network: hosts get .2, .3, … in the order they are made.
const NETWORK: [u8; 3] = [10, 251, 0];

/// An address on the bridge that no host has (what a name outside every registry resolves to).
pub const NOWHERE: Ipv4Addr = Ipv4Addr::new(NETWORK[0], NETWORK[1], NETWORK[2], 254);

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

/// Runs `cmd`: its output, or what it printed when it failed.
fn run(cmd: &mut Command) -> Result<Output, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(out)
}

fn ip(args: &[&str]) -> Result<(), String> {
    run(Command::new("ip").args(args)).map(drop)
}

/// A set of hosts on one bridge.
#[derive(Debug)]
pub struct Net {
    prefix: String,
    bridge: String,
    hosts: Vec<Host>,
}

/// A job for a host's thread.
type Job = Box<dyn FnOnce() + Send>;

/// One host: a network namespace with one address, and a thread inside it.
#[derive(Debug, Clone)]
pub struct Host {
    pub ns: String,
    pub ip: Ipv4Addr,
    jobs: Arc<Mutex<mpsc::Sender<Job>>>,
}

impl Net {
    /// A bridge of its own, in a namespace named after this process.
    pub fn new() -> Result<Net, String> {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let prefix = format!("mbt{}-{n}", std::process::id());
        let bridge = format!("{prefix}-net");
        ip(&["netns", "add", &bridge])?;
        // From here on, dropping `net` removes what was made.
        let net = Net {
            prefix,
            bridge,
            hosts: Vec::new(),
        };
        ip(&["-n", &net.bridge, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &net.bridge, "link", "set", "br0", "up"])?;
        Ok(net)
    }

    /// A new host on the bridge: 10.251.0.2, .3, … in the order they are made.
    pub fn host(&mut self, name: &str) -> Result<Host, String> {
        let i = self.hosts.len() + 2;
        let address = host_address(i).ok_or("a net has at most 252 hosts")?;
        let ns = format!("{}-{name}", self.prefix);
        ip(&["netns", "add", &ns])?;
        let jobs = match inside(&ns) {
            Ok(jobs) => jobs,
            Err(e) => {
                let _ = Command::new("ip").args(["netns", "del", &ns]).output();
                return Err(e);
            }
        };
        let host = Host {
            ns,
            ip: address,
            jobs: Arc::new(Mutex::new(jobs)),
        };
        self.hosts.push(host.clone());
        let veth = format!("v{i}");
        let ns = host.ns.as_str();
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
            ns,
        ])?;
        ip(&["-n", &self.bridge, "link", "set", &veth, "master", "br0", "up"])?;
        ip(&["-n", ns, "addr", "add", &format!("{}/24", host.ip), "dev", "eth0"])?;
        ip(&["-n", ns, "link", "set", "eth0", "up"])?;
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        Ok(host)
    }
}

/// The address of the host made `i`-th (from 2): on the bridge's network, short of `NOWHERE`.
fn host_address(i: usize) -> Option<Ipv4Addr> {
    let last = u8::try_from(i).ok().filter(|l| *l < NOWHERE.octets()[3])?;
    Some(Ipv4Addr::new(NETWORK[0], NETWORK[1], NETWORK[2], last))
}

/// A thread inside namespace `ns` that runs the jobs sent to it, until every sender is gone.
fn inside(ns: &str) -> Result<mpsc::Sender<Job>, String> {
    let path = format!("/var/run/netns/{ns}");
    let (jobs, todo) = mpsc::channel::<Job>();
    let (entered, result) = mpsc::channel();
    std::thread::Builder::new()
        .name(format!("netns-{ns}"))
        .spawn(move || {
            let joined = std::fs::File::open(&path)
                .map_err(|e| format!("{path}: {e}"))
                .and_then(|f| {
                    nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET)
                        .map_err(|e| format!("cannot enter {path}: {e}"))
                });
            let ok = joined.is_ok();
            let _ = entered.send(joined);
            if ok {
                while let Ok(job) = todo.recv() {
                    job();
                }
            }
        })
        .map_err(|e| format!("cannot start a thread for {ns}: {e}"))?;
    result.recv().map_err(|_| format!("the thread for {ns} ended"))??;
    Ok(jobs)
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
    pub fn resolve(&self, names: &[(&str, Ipv4Addr)]) -> Result<(), String> {
        let mut text = String::from("127.0.0.1 localhost\n");
        for (name, addr) in names {
            text.push_str(&format!("{addr} {name}\n"));
        }
        let file = self.etc().join("hosts");
        std::fs::create_dir_all(self.etc())
            .and_then(|()| std::fs::write(&file, text))
            .map_err(|e| format!("{}: {e}", file.display()))
    }

    fn iptables(&self, args: &[&str]) -> Result<Output, String> {
        run(self.command("iptables").args(args))
    }

    /// Istio's outbound capture (`istio-iptables -p 15001 -u 1337 -g 1337 -m REDIRECT`).
    pub fn capture_outbound(&self) -> Result<(), String> {
        let gid = PROXY_GID.to_string();
        let rules: [&[&str]; 8] = [
            &["-N", "ISTIO_REDIRECT"],
            &[
                "-A",
                "ISTIO_REDIRECT",
                "-p",
                "tcp",
                "-j",
                "REDIRECT",
                "--to-ports",
                "15001",
            ],
            &["-N", "ISTIO_OUTPUT"],
            &["-A", "OUTPUT", "-p", "tcp", "-j", "ISTIO_OUTPUT"],
            &["-A", "ISTIO_OUTPUT", "-o", "lo", "-s", "127.0.0.6/32", "-j", "RETURN"],
            &["-A", "ISTIO_OUTPUT", "-m", "owner", "--uid-owner", &gid, "-j", "RETURN"],
            &["-A", "ISTIO_OUTPUT", "-m", "owner", "--gid-owner", &gid, "-j", "RETURN"],
            &["-A", "ISTIO_OUTPUT", "-d", "127.0.0.1/32", "-j", "RETURN"],
        ];
        for rule in rules {
            self.iptables(&[&["-t", "nat"], rule].concat())?;
        }
        self.iptables(&["-t", "nat", "-A", "ISTIO_OUTPUT", "-j", "ISTIO_REDIRECT"])
            .map(drop)
    }

    /// Counts the TCP SYNs that reach this host from now on (see `syns`).
    pub fn count_syns(&self) -> Result<(), String> {
        self.iptables(&["-I", "INPUT", "1", "-p", "tcp", "--syn", "-j", "ACCEPT"])
            .map(drop)
    }

    /// SYNs counted since `count_syns`.
    pub fn syns(&self) -> Result<u64, String> {
        let out = self.iptables(&["-L", "INPUT", "1", "-v", "-x", "-n"])?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("no packet count in `{text}`"))
    }

    /// Runs `f` on this host's thread (inside its namespace): the sockets it opens belong to
    /// this host. Jobs run one at a time; `f` should not wait long.
    pub async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        let sent = self
            .jobs
            .lock()
            .map_err(|_| "a host's job queue was poisoned".to_string())?
            .send(job);
        sent.map_err(|_| format!("the thread of {} has ended", self.ns))?;
        rx.await.map_err(|_| format!("a job in {} did not finish", self.ns))
    }

    /// `f` on this host's thread, for code that is not async (a test's setup).
    pub fn within<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = mpsc::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        // A job that cannot be queued is dropped with its sender: `recv` then fails.
        if let Ok(jobs) = self.jobs.lock() {
            let _ = jobs.send(job);
        }
        rx.recv()
            .unwrap_or_else(|_| panic!("the thread of {} has ended", self.ns))
    }

    /// A TCP connection from this host to `to`.
    pub async fn connect(&self, to: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
        let socket = self
            .run(move || match to {
                SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
                SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
            })
            .await
            .map_err(std::io::Error::other)??;
        socket.connect(to).await
    }

    /// A listener in this host, on `at` (port 0: a free one).
    pub async fn listen(&self, at: SocketAddr) -> std::io::Result<std::net::TcpListener> {
        self.run(move || std::net::TcpListener::bind(at))
            .await
            .map_err(std::io::Error::other)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_get_the_bridge_addresses_short_of_nowhere() {
        assert_eq!(host_address(2), Some(Ipv4Addr::new(10, 251, 0, 2)));
        assert_eq!(host_address(253), Some(Ipv4Addr::new(10, 251, 0, 253)));
        assert_eq!(host_address(254), None);
        assert_eq!(host_address(300), None);
    }

    #[test]
    fn unavailable_says_why_in_one_line() {
        let runs = |tool: &str, arg: &str| Command::new(tool).arg(arg).output().is_ok_and(|o| o.status.success());
        let root = nix::unistd::geteuid().is_root();
        let tools = runs("ip", "-V") && runs("iptables", "--version") && runs("setpriv", "--version");
        match unavailable() {
            None => assert!(root && tools),
            Some(why) if why.starts_with("not root") => assert!(!root, "{why}"),
            Some(why) => {
                assert!(root, "{why}");
                let tool = why.split('`').nth(1).unwrap_or_default();
                let arg = if tool == "ip" { "-V" } else { "--version" };
                assert!(why.ends_with("is not installed") && !runs(tool, arg), "{why}");
            }
        }
    }
}
