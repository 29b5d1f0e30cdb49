//! A target that is a local child process (meshgate, Envoy): started with its stderr and access
//! log kept beside its config, polled until ready without blocking the runtime, killed on stop
//! and on drop, and measured from /proc (CPU seconds, resident memory).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::TargetError;

/// How long a stopped process may take to exit on SIGTERM before it is killed.
const GRACE: Duration = Duration::from_secs(3);

/// A running gateway process and the files it writes.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: tokio::process::Child,
}

/// Where a process's output goes: `<stem>.stderr.log` and `<stem>.access.log`.
#[derive(Debug, Clone)]
pub struct Logs {
    pub stem: PathBuf,
}

impl Logs {
    pub fn for_config(config_dir: &Path) -> Logs {
        Logs {
            stem: config_dir.to_path_buf(),
        }
    }

    pub fn stderr(&self) -> PathBuf {
        self.stem.with_extension("stderr.log")
    }

    pub fn access(&self) -> PathBuf {
        self.stem.with_extension("access.log")
    }

    /// Empties the access log before a run: a gateway appends to it, and a run's error should
    /// show that run's requests only.
    pub fn clear_access(&self) {
        let _ = std::fs::remove_file(self.access());
    }

    /// The stderr and the access log, as one text.
    pub fn read(&self) -> String {
        let read = |p: PathBuf| std::fs::read_to_string(p).unwrap_or_default();
        format!("{}{}", read(self.stderr()), read(self.access()))
    }
}

impl Process {
    /// Starts `cmd` with stderr to the log; stdout is dropped.
    pub fn spawn(name: &str, mut cmd: tokio::process::Command, logs: &Logs) -> Result<Process, TargetError> {
        logs.clear_access();
        let stderr = std::fs::File::create(logs.stderr())
            .map_err(|e| TargetError::Failed(format!("cannot create {}: {e}", logs.stderr().display())))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| TargetError::Failed(format!("cannot start {name}: {e}")))?;
        Ok(Process {
            name: name.to_string(),
            child,
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Polls `probe` every 20 ms until it gives a value; fails when the process exits first or
    /// `timeout` passes (with the logs, so the reason is visible).
    pub async fn ready<T, F, Fut>(&mut self, timeout: Duration, logs: &Logs, mut probe: F) -> Result<T, TargetError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = probe().await {
                return Ok(v);
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(TargetError::Failed(format!(
                    "{} exited ({status}): {}",
                    self.name,
                    tail(&logs.read())
                )));
            }
            if Instant::now() > deadline {
                self.stop().await;
                return Err(TargetError::Failed(format!(
                    "{} did not get ready in {}s: {}",
                    self.name,
                    timeout.as_secs(),
                    tail(&logs.read())
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, so the process flushes its logs and drains; SIGKILL after `GRACE`.
    pub async fn stop(&mut self) {
        if let Some(pid) = self.child.id().and_then(|p| rustix::process::Pid::from_raw(p as i32)) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            if tokio::time::timeout(GRACE, self.child.wait()).await.is_ok() {
                return;
            }
        }
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// The last 40 lines of a log (enough to see why a process failed).
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// What a process has used so far, from `/proc/<pid>/stat` and `/proc/<pid>/status`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    /// User + system CPU seconds.
    pub cpu_s: f64,
    /// Resident memory now and at its peak (VmHWM), bytes.
    pub rss_bytes: u64,
    pub peak_rss_bytes: u64,
}

/// Reads a process's usage; None when it is gone (or /proc is not there).
///
/// CPU time comes from the threads' `schedstat` (nanoseconds), not `stat`'s 10 ms ticks, which
/// over a one-second run at 1,000 rps (a few dozen ms of CPU) would be a ±20% quantisation.
pub fn usage(pid: u32) -> Option<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let mut u = parse_usage(&stat, &status, clock_ticks())?;
    if let Some(ns) = thread_runtime_ns(pid) {
        u.cpu_s = ns as f64 / 1e9;
    }
    Some(u)
}

/// The on-CPU time of every live thread of `pid` (the first field of each `schedstat`).
fn thread_runtime_ns(pid: u32) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = 0u64;
    for t in tasks.flatten() {
        let text = std::fs::read_to_string(t.path().join("schedstat")).ok()?;
        total += schedstat_runtime(&text)?;
    }
    Some(total)
}

/// `1374715 3165 3` -> 1374715.
pub fn schedstat_runtime(text: &str) -> Option<u64> {
    text.split_whitespace().next()?.parse().ok()
}

fn clock_ticks() -> f64 {
    // USER_HZ is 100 on every Linux ABI the project runs on (sysconf(_SC_CLK_TCK)).
    100.0
}

/// `stat`: fields after the `(comm)` that may contain spaces; utime and stime are the 14th and
/// 15th fields. `status`: `VmRSS:` and `VmHWM:` in kB.
pub fn parse_usage(stat: &str, status: &str, ticks: f64) -> Option<Usage> {
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3 (state), so utime (14) is index 11 and stime (15) index 12.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let kb = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .map(|n| n * 1024)
    };
    let rss = kb("VmRSS:")?;
    Some(Usage {
        cpu_s: (utime + stime) / ticks,
        rss_bytes: rss,
        peak_rss_bytes: kb("VmHWM:").unwrap_or(rss),
    })
}

/// One GET over HTTP/1.1 with `Connection: close` (admin APIs; Envoy refuses HTTP/1.0): the
/// status and the body (chunked encoding undone), or None when nothing answers.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> Option<(u16, String)> {
    http_get_from(None, addr, path).await
}

/// `http_get` from inside `host` when given (an unspecified address is the host's own loopback).
pub async fn http_get_from(
    host: Option<&mesh_netns::Host>,
    addr: std::net::SocketAddr,
    path: &str,
) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = match host {
        None => tokio::net::TcpStream::connect(addr).await.ok()?,
        Some(h) if addr.ip().is_unspecified() => {
            let local = std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, addr.port()));
            h.connect(local).await.ok()?
        }
        Some(h) => h.connect(addr).await.ok()?,
    };
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .ok()?
        .ok()?;
    parse_response(&String::from_utf8_lossy(&buf))
}

/// A whole HTTP/1.1 response: status and body.
pub fn parse_response(text: &str) -> Option<(u16, String)> {
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let chunked = head
        .lines()
        .any(|l| l.to_ascii_lowercase().replace(' ', "") == "transfer-encoding:chunked");
    if !chunked {
        return Some((status, body.to_string()));
    }
    let mut out = String::new();
    let mut rest = body;
    loop {
        let (size, after) = rest.split_once("\r\n")?;
        let n = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        if n == 0 {
            return Some((status, out));
        }
        out.push_str(after.get(..n)?);
        rest = after.get(n..)?.strip_prefix("\r\n")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_reads_cpu_and_memory_from_proc_text() {
        // A comm with spaces and a parenthesis, as the kernel allows.
        let stat = "4242 (envoy (main)) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 8 0 100 0 0";
        let status = "Name:\tenvoy\nVmHWM:\t   65536 kB\nVmRSS:\t   40960 kB\n";
        let u = parse_usage(stat, status, 100.0).unwrap_or(Usage {
            cpu_s: -1.0,
            rss_bytes: 0,
            peak_rss_bytes: 0,
        });
        assert_eq!(u.cpu_s, 3.0);
        assert_eq!(u.rss_bytes, 40960 * 1024);
        assert_eq!(u.peak_rss_bytes, 65536 * 1024);
        assert_eq!(parse_usage("no parenthesis", status, 100.0), None);
        assert_eq!(parse_usage(stat, "VmHWM: 1 kB\n", 100.0), None);
    }

    #[test]
    fn schedstat_gives_nanoseconds() {
        assert_eq!(schedstat_runtime("1374715 3165 3\n"), Some(1_374_715));
        assert_eq!(schedstat_runtime(""), None);
        // Our own threads have run, with finer than tick precision.
        assert!(thread_runtime_ns(std::process::id()).is_some_and(|ns| ns > 0));
    }

    #[test]
    fn our_own_usage_is_readable() {
        let u = usage(std::process::id());
        assert!(u.is_some_and(|u| u.rss_bytes > 0 && u.peak_rss_bytes >= u.rss_bytes));
    }

    #[test]
    fn responses_parse_plain_and_chunked() {
        let plain = "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nLIVE\n";
        assert_eq!(parse_response(plain), Some((200, "LIVE\n".into())));
        let chunked = "HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nPRE_\r\n9\r\nINITIALIZ\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked), Some((503, "PRE_INITIALIZ".into())));
        assert_eq!(
            parse_response("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
            None
        );
        assert_eq!(parse_response("garbage"), None);
    }

    #[test]
    fn tail_keeps_the_last_forty_lines() {
        let text: String = (0..100).map(|i| format!("line {i}\n")).collect();
        let t = tail(&text);
        assert!(t.starts_with("line 60\n") && t.ends_with("line 99"));
    }
}
