//! Test support: echo workloads, a config written to a temp dir, the `meshgate` binary started on
//! free ports (it reports them in its ready file), and a small blocking HTTP/1.1 client.

#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)] // Shared by several test files.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod grpc_client;
pub mod tls;

pub use mesh_echo::{parse_fields, Echo, EchoThread};

static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

pub fn temp_dir(tag: &str) -> PathBuf {
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("meshgate-test-{}-{tag}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// An echo workload on a free loopback port.
pub fn echo(service: &str, version: &str) -> EchoThread {
    Echo::builder(service)
        .version(version)
        .http_loopback()
        .start_in_thread()
        .expect("echo")
}

pub fn grpc_echo(service: &str, version: &str) -> EchoThread {
    Echo::builder(service)
        .version(version)
        .grpc_loopback()
        .start_in_thread()
        .expect("echo")
}

/// A running meshgate.
pub struct Gate {
    pub child: Child,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub listeners: BTreeMap<u32, SocketAddr>,
    pub admin: SocketAddr,
}

impl Drop for Gate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts meshgate on `yaml`, every Plan port mapped to a free loopback port.
pub fn gate(yaml: &str, ports: &[u32]) -> Gate {
    gate_with(yaml, ports, &[])
}

pub fn gate_with(yaml: &str, ports: &[u32], extra: &[&str]) -> Gate {
    gate_by(Command::new(meshgate_bin()), yaml, ports, extra)
}

pub fn meshgate_bin() -> &'static str {
    env!("CARGO_BIN_EXE_meshgate")
}

/// Starts meshgate by `cmd`: the binary, or a command that runs it (`ip netns exec … meshgate`).
pub fn gate_by(mut cmd: Command, yaml: &str, ports: &[u32], extra: &[&str]) -> Gate {
    let dir = temp_dir("gate");
    let config = dir.join("config.yaml");
    std::fs::write(&config, yaml).expect("write config");
    let ready = dir.join("ready.json");
    cmd.args([
        "-c",
        config.to_str().unwrap(),
        "--admin",
        "127.0.0.1:0",
        "--ready-file",
        ready.to_str().unwrap(),
    ]);
    cmd.args(["--access-log", dir.join("access.log").to_str().unwrap()]);
    if !extra.contains(&"--watch-interval") {
        cmd.args(["--watch-interval", "100ms"]);
    }
    for p in ports {
        cmd.args(["--port-map", &format!("{p}=127.0.0.1:0")]);
    }
    cmd.args(extra);
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(dir.join("stderr.log")).expect("log")))
        .spawn()
        .expect("start meshgate");
    let mut gate = Gate {
        child,
        dir: dir.clone(),
        config,
        listeners: BTreeMap::new(),
        admin: "127.0.0.1:0".parse().unwrap(),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(text) = std::fs::read_to_string(&ready) {
            let v: serde_json::Value = serde_json::from_str(&text).expect("ready json");
            gate.admin = v["admin"].as_str().unwrap().parse().unwrap();
            for (k, a) in v["listeners"].as_object().unwrap() {
                gate.listeners
                    .insert(k.parse().unwrap(), a.as_str().unwrap().parse().unwrap());
            }
            return gate;
        }
        if let Ok(Some(status)) = gate.child.try_wait() {
            panic!(
                "meshgate exited with {status}: {}",
                std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "meshgate did not get ready: {}",
            std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Gate {
    pub fn port(&self, plan_port: u32) -> SocketAddr {
        self.listeners[&plan_port]
    }

    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("access.log")).unwrap_or_default()
    }

    /// Waits until the access log has a line containing `needle` (TCP sessions log when they end).
    pub fn wait_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.access_log();
            if log.contains(needle) {
                return log;
            }
            assert!(Instant::now() < deadline, "no access log line with {needle:?}: {log}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }

    pub fn admin_get(&self, path: &str) -> String {
        get(self.admin, path, &[]).body
    }

    pub fn version(&self) -> u64 {
        let v: serde_json::Value = serde_json::from_str(&self.admin_get("/plan")).expect("dump");
        v["version"].as_u64().unwrap()
    }

    /// Polls until the config version is at least `v`.
    pub fn wait_version(&self, v: u64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.version() < v {
            assert!(
                Instant::now() < deadline,
                "config version {v} never came: {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// One HTTP/1.1 response.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// An echo field (`ServiceVersion`, `Host`, `URL`, …).
    pub fn field(&self, key: &str) -> Option<String> {
        parse_fields(&self.body)
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    /// A request header the echo saw, by canonical name.
    pub fn saw_header(&self, name: &str) -> Option<String> {
        parse_fields(&self.body)
            .into_iter()
            .filter(|(k, _)| k == "RequestHeader")
            .find_map(|(_, v)| {
                v.split_once(':')
                    .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.to_string())
            })
    }
}

/// A request on a new connection. `headers` may set `Host`.
pub fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Resp {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    let mut req = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    s.write_all(req.as_bytes()).expect("write");
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).expect("status line");
    let status = line.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line).expect("header");
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let mut body = String::new();
    let _ = r.read_to_string(&mut body);
    Resp { status, headers, body }
}

pub fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Resp {
    request(addr, "GET", path, headers, "")
}

/// An echo's port as a WorkloadEntry/ServiceEntry endpoint line.
pub fn endpoint(e: &EchoThread, version: &str) -> String {
    format!(
        "  - {{address: 127.0.0.1, ports: {{http: {}}}, labels: {{version: {version}}}}}\n",
        e.http[0].port()
    )
}

/// A request through an explicit proxy (absolute-form URL).
pub fn proxy_get(proxy: SocketAddr, url: &str) -> Resp {
    let mut s = TcpStream::connect(proxy).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    let host = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or("")
        .to_string();
    s.write_all(format!("GET {url} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes())
        .expect("write");
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let headers = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Resp {
        status,
        headers,
        body: body.to_string(),
    }
}

/// A CA that issues server and client certificates into a directory.
pub struct Ca {
    dir: PathBuf,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl Ca {
    pub fn new(dir: &Path, name: &str) -> Ca {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} CA"));
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.join(format!("{name}-ca.pem")), cert.pem()).unwrap();
        Ca {
            dir: dir.to_path_buf(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    pub fn ca_file(&self, name: &str) -> String {
        self.dir.join(format!("{name}-ca.pem")).display().to_string()
    }

    /// Writes `<file>.crt` and `<file>.key` for `names` (CN = the first name).
    pub fn issue(&self, file: &str, names: &[&str]) -> (String, String) {
        self.issue_with(file, names, false)
    }

    /// The same, valid only in 2020.
    pub fn issue_expired(&self, file: &str, names: &[&str]) -> (String, String) {
        self.issue_with(file, names, true)
    }

    fn issue_with(&self, file: &str, names: &[&str], expired: bool) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, names[0]);
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let (crt, k) = (
            self.dir.join(format!("{file}.crt")),
            self.dir.join(format!("{file}.key")),
        );
        std::fs::write(&crt, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (crt.display().to_string(), k.display().to_string())
    }
}

/// Reads until the peer closes (Ok with what came) or `limit` passes (Err).
pub fn read_until_closed(s: &mut TcpStream, limit: Duration) -> Result<String, String> {
    let start = Instant::now();
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while start.elapsed() < limit {
        match s.read(&mut buf) {
            Ok(0) => return Ok(String::from_utf8_lossy(&got).into_owned()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            // A reset is a close too.
            Err(_) => return Ok(String::from_utf8_lossy(&got).into_owned()),
        }
    }
    Err(format!(
        "still open after {limit:?}; got {:?}",
        String::from_utf8_lossy(&got)
    ))
}

/// The status code of a raw HTTP/1.1 response.
pub fn status_of(response: &str) -> Option<u16> {
    response.split_whitespace().nth(1)?.parse().ok()
}

/// Reads one response (its head, then Content-Length bytes of body) from a keep-alive connection.
pub fn read_response(s: &mut TcpStream) -> String {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_string())
                })
                .and_then(|v| v.parse::<usize>().ok())
                .expect("a content-length");
            if got.len() >= end + 4 + length {
                return text;
            }
        }
        let n = s.read(&mut buf).expect("the rest of the response");
        assert!(n > 0, "closed mid-response: {text:?}");
        got.extend_from_slice(&buf[..n]);
    }
}
