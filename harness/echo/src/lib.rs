//! mesh-echo: the workloads behind a gateway under test. Answers in Istio's echo format
//! (`Key=Value` lines: ServiceVersion, ServicePort, Host, URL, Method, Proto, IP, RequestHeader,
//! Hostname, Service) over HTTP/1.1 and h2c on one port, gRPC (`proto.EchoTestService/Echo` and
//! the standard health service), and raw TCP (identity lines, then every byte echoed). HTTP ports
//! can serve over TLS (`tls`), adding `TLS-SNI` and `TLS-ClientCert` lines.
//!
//! Query controls on HTTP: `?delay=250ms`, `?codes=500:1,200:1` (cycled), `?headers=name:value,…`
//! (added to the response), `?size=N` (a body of N bytes). gRPC takes `delay` and `codes` (gRPC
//! status codes) as request metadata.

mod grpc;
mod http_echo;
mod tcp;

/// Reads `EchoResponse.message` (protobuf field 1) from a gRPC message.
pub use grpc::decode_string_field1 as decode_message;

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

/// Who this workload is.
#[derive(Debug, Clone)]
pub struct Identity {
    pub service: String,
    pub version: String,
    pub namespace: String,
    /// The instance name (a pod's hostname).
    pub hostname: String,
}

/// Builds and starts an echo workload: `Echo::builder("reviews").version("v2").http(addr)…`.
#[derive(Debug, Clone)]
pub struct EchoBuilder {
    id: Identity,
    http: Vec<SocketAddr>,
    grpc: Vec<SocketAddr>,
    tcp: Vec<SocketAddr>,
    tls: Option<Arc<rustls::ServerConfig>>,
    greeting: bool,
}

/// A running echo workload and the addresses it listens on.
#[derive(Debug)]
pub struct Echo {
    pub identity: Identity,
    pub http: Vec<SocketAddr>,
    pub grpc: Vec<SocketAddr>,
    pub tcp: Vec<SocketAddr>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    requests: Arc<AtomicU64>,
}

impl Echo {
    /// HTTP and gRPC requests answered so far, over all ports (a mirror's copies included).
    pub fn requests(&self) -> u64 {
        self.requests.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The counter behind `requests`, for a reader that outlives this borrow (an admin port).
    pub fn counter(&self) -> Arc<AtomicU64> {
        self.requests.clone()
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

impl Echo {
    pub fn builder(service: &str) -> EchoBuilder {
        EchoBuilder {
            id: Identity {
                service: service.to_string(),
                version: "v1".into(),
                namespace: "default".into(),
                hostname: format!("{service}-v1-0"),
            },
            http: Vec::new(),
            grpc: Vec::new(),
            tcp: Vec::new(),
            tls: None,
            greeting: true,
        }
    }
}

impl EchoBuilder {
    pub fn version(mut self, v: &str) -> Self {
        if self.id.hostname == format!("{}-{}-0", self.id.service, self.id.version) {
            self.id.hostname = format!("{}-{v}-0", self.id.service);
        }
        self.id.version = v.to_string();
        self
    }

    pub fn namespace(mut self, ns: &str) -> Self {
        self.id.namespace = ns.to_string();
        self
    }

    /// The instance name reported as `Hostname`.
    pub fn hostname(mut self, h: &str) -> Self {
        self.id.hostname = h.to_string();
        self
    }

    /// An HTTP/1.1 + h2c port; `127.0.0.1:0` picks a free one.
    pub fn http(mut self, addr: SocketAddr) -> Self {
        self.http.push(addr);
        self
    }

    pub fn grpc(mut self, addr: SocketAddr) -> Self {
        self.grpc.push(addr);
        self
    }

    pub fn tcp(mut self, addr: SocketAddr) -> Self {
        self.tcp.push(addr);
        self
    }

    /// TCP ports write their identity lines before echoing (default); without, they only echo
    /// (what a request/response load test needs).
    pub fn tcp_greeting(mut self, on: bool) -> Self {
        self.greeting = on;
        self
    }

    /// Serves the HTTP ports over TLS (HTTPS; ALPN as the acceptor's config says). The echo then
    /// reports `TLS-SNI` and `TLS-ClientCert`.
    pub fn tls(mut self, config: Arc<rustls::ServerConfig>) -> Self {
        self.tls = Some(config);
        self
    }

    /// One HTTP port on a free loopback port (the usual test setup).
    pub fn http_loopback(self) -> Self {
        self.http(loopback())
    }

    pub fn grpc_loopback(self) -> Self {
        self.grpc(loopback())
    }

    pub fn tcp_loopback(self) -> Self {
        self.tcp(loopback())
    }

    /// Binds every port and serves on the current tokio runtime.
    pub async fn start(self) -> std::io::Result<Echo> {
        let id = Arc::new(self.id);
        let mut echo = Echo {
            identity: (*id).clone(),
            http: Vec::new(),
            grpc: Vec::new(),
            tcp: Vec::new(),
            tasks: Vec::new(),
            requests: Arc::new(AtomicU64::new(0)),
        };
        for addr in self.http {
            let l = TcpListener::bind(addr).await?;
            echo.http.push(l.local_addr()?);
            let serve = http_echo::serve(
                l,
                id.clone(),
                echo.requests.clone(),
                self.tls.clone().map(tokio_rustls::TlsAcceptor::from),
            );
            echo.tasks.push(tokio::spawn(serve));
        }
        for addr in self.grpc {
            let l = TcpListener::bind(addr).await?;
            echo.grpc.push(l.local_addr()?);
            echo.tasks
                .push(tokio::spawn(grpc::serve(l, id.clone(), echo.requests.clone())));
        }
        for addr in self.tcp {
            let l = TcpListener::bind(addr).await?;
            echo.tcp.push(l.local_addr()?);
            echo.tasks.push(tokio::spawn(tcp::serve(l, id.clone(), self.greeting)));
        }
        Ok(echo)
    }

    /// Starts on a runtime of its own thread (for synchronous tests); lives until the handle drops.
    pub fn start_in_thread(self) -> std::io::Result<EchoThread> {
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let handle = std::thread::Builder::new()
            .name(format!("echo-{}", self.id.service))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                rt.block_on(async move {
                    match self.start().await {
                        Ok(echo) => {
                            let _ = tx.send(Ok((
                                echo.identity.clone(),
                                echo.http.clone(),
                                echo.grpc.clone(),
                                echo.tcp.clone(),
                            )));
                            let _ = stop_rx.await;
                            drop(echo);
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                        }
                    }
                });
            })?;
        let (identity, http, grpc, tcp) = rx.recv().map_err(std::io::Error::other)??;
        Ok(EchoThread {
            identity,
            http,
            grpc,
            tcp,
            stop: Some(stop_tx),
            handle: Some(handle),
        })
    }
}

/// An echo workload running on its own thread.
#[derive(Debug)]
pub struct EchoThread {
    pub identity: Identity,
    pub http: Vec<SocketAddr>,
    pub grpc: Vec<SocketAddr>,
    pub tcp: Vec<SocketAddr>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Drop for EchoThread {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Parses Go-style durations as the echo's `delay` control takes them (`250ms`, `1s`, `1.5s`).
pub fn parse_delay(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !(c.is_ascii_digit() || c == '.'))?);
    let n: f64 = num.parse().ok()?;
    let secs = match unit {
        "ns" => n / 1e9,
        "us" | "µs" => n / 1e6,
        "ms" => n / 1e3,
        "s" => n,
        "m" => n * 60.0,
        _ => return None,
    };
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

/// `500:1,200:2` -> the status for request number `n` (0-based), cycling through the weights.
pub fn pick_code(spec: &str, n: u64) -> Option<u16> {
    let pairs: Vec<(u16, u64)> = spec
        .split(',')
        .filter_map(|p| {
            let (code, weight) = p.split_once(':').unwrap_or((p, "1"));
            Some((code.trim().parse().ok()?, weight.trim().parse().ok()?))
        })
        .collect();
    let total: u64 = pairs.iter().map(|(_, w)| w).sum();
    if total == 0 {
        return None;
    }
    let mut slot = n % total;
    for (code, w) in pairs {
        if slot < w {
            return Some(code);
        }
        slot -= w;
    }
    None
}

/// The echo body's closing lines: every request header as `RequestHeader=Name:value` (sorted,
/// `extra` among them), then `Hostname` and `Service`.
pub(crate) fn write_headers_and_identity(
    b: &mut String,
    headers: &http::HeaderMap,
    extra: Option<(String, String)>,
    id: &Identity,
) {
    use std::fmt::Write;
    let mut lines: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| {
            (
                canonical_header(k.as_str()),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .chain(extra)
        .collect();
    lines.sort();
    for (k, v) in lines {
        let _ = writeln!(b, "RequestHeader={k}:{v}");
    }
    let _ = writeln!(b, "Hostname={}", id.hostname);
    let _ = writeln!(b, "Service={}", id.service);
}

/// Go's canonical header name: `x-forwarded-for` -> `X-Forwarded-For`.
pub fn canonical_header(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut c = part.chars();
            match c.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + &c.as_str().to_ascii_lowercase(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// Reads `Key=Value` lines of an echo response (the first value of each key, and every
/// `RequestHeader`), the way Istio's `parse.go` does.
pub fn parse_fields(body: &str) -> Vec<(String, String)> {
    body.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_and_codes() {
        assert_eq!(parse_delay("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_delay("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_delay("abc"), None);
        let codes: Vec<_> = (0..6).map(|n| pick_code("500:1,200:2", n)).collect();
        assert_eq!(
            codes,
            [Some(500), Some(200), Some(200), Some(500), Some(200), Some(200)]
        );
        assert_eq!(pick_code("x", 0), None);
    }

    #[test]
    fn header_names_are_canonical() {
        assert_eq!(canonical_header("x-forwarded-for"), "X-Forwarded-For");
        assert_eq!(canonical_header("USER-AGENT"), "User-Agent");
    }
}
