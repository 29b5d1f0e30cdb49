//! Runs a suite against a target: starts the echo workloads, registers them (ServiceEntry +
//! WorkloadEntries), brings the target up, sends each case's requests and checks what came back.
//! Every failure says what was expected, what was observed, and the request that showed it.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use meshbench_report::{CaseOutcome, CaseResult, SuiteResult};

use super::suite::{Case, Request, Suite};
use super::target::Target;

/// Echo workloads of a suite, and the registry documents that describe them.
#[allow(missing_debug_implementations)] // Holds running echo servers.
pub struct Workloads {
    echoes: Vec<mesh_echo::Echo>,
    pub registry: String,
    /// Each service's first echo, for `${addr:<service>}`.
    pub addresses: BTreeMap<String, SocketAddr>,
}

/// Where a suite's workloads and certificates live: an address a gateway can reach, optionally
/// fixed ports (the i-th echo of a suite, in file order, on `base + i`) and a kept certificate
/// folder, so that what `--print-config` printed for an external gateway stays true for a later
/// run.
#[derive(Debug, Clone)]
pub struct Placement {
    pub ip: std::net::IpAddr,
    pub base_port: Option<u16>,
    /// Certificates go to `<certs>/<suite>` and are reused when already there; default: the
    /// run's temporary folder.
    pub certs: Option<std::path::PathBuf>,
}

impl Default for Placement {
    fn default() -> Self {
        Placement {
            ip: std::net::Ipv4Addr::LOCALHOST.into(),
            base_port: None,
            certs: None,
        }
    }
}

impl Placement {
    /// The certificate folder of `suite`.
    pub fn certs_dir(&self, work_dir: &std::path::Path, suite: &str) -> std::path::PathBuf {
        match &self.certs {
            Some(d) => d.join(suite),
            None => work_dir.join(format!("{suite}-certs")),
        }
    }
}

/// Starts one echo per version (and replica) and writes their registry.
pub async fn start_workloads(
    suite: &Suite,
    certs: &std::path::Path,
    placement: &Placement,
) -> Result<Workloads, String> {
    let mut index: u16 = 0;
    let mut echoes = Vec::new();
    let mut registry = String::new();
    let mut addresses = BTreeMap::new();
    for w in &suite.workloads {
        let registered = w.registered.unwrap_or(true);
        let ns = w.namespace.clone().unwrap_or_else(|| "default".into());
        let protocol = w.protocol.clone().unwrap_or_else(|| "http".into());
        let (port_name, istio_protocol) = match protocol.as_str() {
            "grpc" => ("grpc", "GRPC"),
            "tcp" => ("tcp", "TCP"),
            "https" => ("https", "HTTPS"),
            _ => ("http", "HTTP"),
        };
        let host = w
            .host
            .clone()
            .unwrap_or_else(|| format!("{}.{ns}.svc.cluster.local", w.service));
        let location = w.location.as_deref().unwrap_or("MESH_INTERNAL");
        let resolution = w.resolution.as_deref().unwrap_or("STATIC");
        let address = w.address.clone().unwrap_or_else(|| placement.ip.to_string());
        if registered {
            let _ = write!(
            registry,
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {svc}, namespace: {ns}}}\nspec:\n  \
             hosts: [{host}]\n  location: {location}\n  resolution: {resolution}\n  \
             ports: [{{number: {port}, name: {port_name}, protocol: {istio_protocol}}}]\n  workloadSelector: {{labels: {{app: {svc}}}}}\n---\n",
            svc = w.service,
            port = w.port
        );
        }
        for v in &w.versions {
            for r in 0..w.replicas.unwrap_or(1).max(1) {
                let b = mesh_echo::Echo::builder(&w.service)
                    .version(v)
                    .namespace(&ns)
                    .hostname(&format!("{}-{v}-{r}", w.service));
                let b = match &w.tls {
                    Some(t) => b.tls(super::tls::server_config(certs, &t.cert, t.client_ca.as_deref())?),
                    None => b,
                };
                let port = match placement.base_port {
                    Some(base) => base
                        .checked_add(index)
                        .ok_or_else(|| format!("--workload-ports {base}: too high for {} workloads", index + 1))?,
                    None => 0,
                };
                index += 1;
                let loopback = SocketAddr::new(placement.ip, port);
                let b = match protocol.as_str() {
                    "grpc" => b.grpc(loopback),
                    "tcp" => b.tcp(loopback),
                    _ => b.http(loopback),
                };
                let echo = b
                    .start()
                    .await
                    .map_err(|e| format!("cannot start echo {}/{v}: {e}", w.service))?;
                let port = echo
                    .http
                    .first()
                    .or(echo.grpc.first())
                    .or(echo.tcp.first())
                    .map_or(0, |a| a.port());
                addresses
                    .entry(w.service.clone())
                    .or_insert(SocketAddr::new(placement.ip, port));
                if registered {
                    let _ = write!(
                    registry,
                    "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: {svc}-{v}-{r}, namespace: {ns}}}\nspec:\n  \
                     address: {address}\n  ports: {{{port_name}: {port}}}\n  labels: {{app: {svc}, version: {v}}}\n---\n",
                    svc = w.service
                );
                }
                echoes.push(echo);
            }
        }
    }
    Ok(Workloads {
        echoes,
        registry,
        addresses,
    })
}

impl Workloads {
    /// Requests the echoes of `service` have answered so far.
    pub fn requests(&self, service: &str) -> u64 {
        self.echoes
            .iter()
            .filter(|e| e.identity.service == service)
            .map(mesh_echo::Echo::requests)
            .sum()
    }
}

/// What one request showed.
#[derive(Debug, Clone, Default)]
pub struct Observation {
    pub status: u16,
    pub grpc_status: Option<u16>,
    pub headers: BTreeMap<String, String>,
    pub body: String,
    pub elapsed: Duration,
    pub error: Option<String>,
    /// TLS facts: version, alpn, san.
    pub tls: BTreeMap<String, String>,
}

impl Observation {
    pub fn field(&self, key: &str) -> Option<String> {
        mesh_echo::parse_fields(&self.body)
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    pub fn saw_header(&self, name: &str) -> Option<String> {
        mesh_echo::parse_fields(&self.body)
            .into_iter()
            .filter(|(k, _)| k == "RequestHeader")
            .find_map(|(_, v)| {
                v.split_once(':')
                    .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.to_string())
            })
    }
}

/// Sends one request of a case. `certs`: the suite's certificates (for TLS requests).
pub async fn send(addr: SocketAddr, r: &Request, certs: &std::path::Path) -> Observation {
    let start = Instant::now();
    let mut o = exchange(addr, r, certs).await.unwrap_or_else(|e| Observation {
        error: Some(e),
        ..Default::default()
    });
    o.elapsed = start.elapsed();
    o
}

async fn exchange(addr: SocketAddr, r: &Request, certs: &std::path::Path) -> Result<Observation, String> {
    let protocol = r.protocol.as_deref().unwrap_or("h1");
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    // Through an explicit proxy, TLS and TCP go in a CONNECT tunnel to the authority.
    if r.proxy.unwrap_or(false) && (r.tls.is_some() || protocol == "tcp") {
        let authority = r.authority.clone().unwrap_or_else(|| addr.to_string());
        let status = connect_tunnel(&mut stream, &authority).await?;
        if status != 200 {
            return Ok(Observation {
                status,
                ..Default::default()
            });
        }
    }
    let Some(t) = &r.tls else {
        return match protocol {
            "tcp" => tcp(stream, r).await,
            _ => http(stream, addr, r, protocol).await,
        };
    };
    let (stream, facts) = super::tls::connect(stream, addr, t, certs).await?;
    let h2 = facts.get("alpn").map(String::as_str) == Some("h2");
    let o = match protocol {
        "tcp" => tcp(stream, r).await,
        "grpc" if !h2 => Err("gRPC over TLS needs ALPN h2; the server chose none".to_string()),
        "grpc" => http(stream, addr, r, "grpc").await,
        // In a tunnel the request is origin-form again: the tunnel's far end is the server.
        _ => {
            http(
                stream,
                addr,
                &Request {
                    proxy: None,
                    ..r.clone()
                },
                if h2 { "h2" } else { "h1" },
            )
            .await
        }
    };
    o.map(|o| Observation { tls: facts, ..o })
}

/// Sends `CONNECT authority` and reads the proxy's answer; returns its status.
async fn connect_tunnel(s: &mut tokio::net::TcpStream, authority: &str) -> Result<u16, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes())
        .await
        .map_err(|e| format!("CONNECT: {e}"))?;
    // Byte by byte up to the blank line, so nothing of the tunnel is consumed.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut byte))
            .await
            .map_err(|_| "CONNECT: no answer in 10s".to_string())?
            .map_err(|e| format!("CONNECT: {e}"))?;
        if n == 0 || head.len() > 16 * 1024 {
            return Err("CONNECT: the proxy closed without a complete answer".into());
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("CONNECT: bad answer {:?}", text.lines().next().unwrap_or("")))
}

async fn tcp<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut s: S,
    r: &Request,
) -> Result<Observation, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(r.body.as_deref().unwrap_or("").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    s.shutdown().await.map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .map_err(|_| "timeout".to_string())?
        .map_err(|e| e.to_string())?;
    Ok(Observation {
        body: String::from_utf8_lossy(&out).into_owned(),
        ..Default::default()
    })
}

async fn http<S>(stream: S, addr: SocketAddr, r: &Request, protocol: &str) -> Result<Observation, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let io = hyper_util::rt::TokioIo::new(stream);
    let authority = r.authority.clone().unwrap_or_else(|| addr.to_string());
    let path = r.path.clone().unwrap_or_else(|| "/".into());
    let grpc = protocol == "grpc";
    let mut builder = http::Request::builder()
        .method(r.method.as_deref().unwrap_or(if grpc { "POST" } else { "GET" }))
        .uri(if protocol == "h1" && !r.proxy.unwrap_or(false) {
            path.clone()
        } else {
            format!("http://{authority}{path}")
        });
    if protocol == "h1" {
        builder = builder.header("host", &authority);
    }
    for (k, v) in &r.headers {
        builder = builder.header(k.as_str(), v.as_str());
    }
    let body = if grpc {
        builder = builder
            .header("content-type", "application/grpc")
            .header("te", "trailers");
        crate::load::client::h2::grpc_frame(&crate::load::client::h2::echo_request(
            r.body.as_deref().unwrap_or("").as_bytes(),
        ))
    } else {
        Bytes::from(r.body.clone().unwrap_or_default())
    };
    let req = builder.body(Full::new(body)).map_err(|e| e.to_string())?;
    let resp = if protocol == "h1" {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        send.send_request(req).await.map_err(|e| e.to_string())?
    } else {
        let (mut send, conn) = hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        send.send_request(req).await.map_err(|e| e.to_string())?
    };
    let status = resp.status().as_u16();
    let mut headers: BTreeMap<String, String> = resp
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let collected = resp.into_body().collect().await.map_err(|e| e.to_string())?;
    if let Some(t) = collected.trailers() {
        headers.extend(t.iter().map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        }));
    }
    let bytes = collected.to_bytes();
    let body = if grpc && bytes.len() > 5 {
        mesh_echo::decode_message(&bytes[5..]).unwrap_or_default()
    } else {
        String::from_utf8_lossy(&bytes).into_owned()
    };
    let grpc_status = headers.get("grpc-status").and_then(|s| s.parse().ok());
    Ok(Observation {
        status,
        grpc_status,
        headers,
        body,
        ..Default::default()
    })
}

/// The failures of one observation against the case's expectations (distribution aside).
pub fn check(case: &Case, o: &Observation) -> Vec<String> {
    let e = &case.expect;
    let mut f = Vec::new();
    if let Some(kind) = &e.error {
        // `refused`: no response at all (TLS 1.3 refuses a client certificate after the
        // handshake, on the first read); other kinds name the failure (`handshake`, `connect`).
        let failed_as_expected = o
            .error
            .as_deref()
            .is_some_and(|err| kind == "refused" || err.starts_with(&format!("{kind}:")));
        if !failed_as_expected {
            let observed = o
                .error
                .clone()
                .unwrap_or_else(|| format!("a response with status {}", o.status));
            f.push(format!("expected a {kind} failure, observed {observed}"));
        }
        return f;
    }
    if let Some(err) = &o.error {
        f.push(format!("the request failed: {err}"));
        return f;
    }
    let mut want = |what: &str, expected: &str, observed: Option<&str>| {
        if observed != Some(expected) {
            f.push(format!(
                "{what}: expected {expected:?}, observed {}",
                observed.map_or("nothing".into(), |s| format!("{s:?}"))
            ));
        }
    };
    if let Some(s) = e.status {
        want("status", &s.to_string(), Some(&o.status.to_string()));
    }
    if let Some(g) = e.grpc_status {
        want(
            "grpc-status",
            &g.to_string(),
            o.grpc_status.map(|s| s.to_string()).as_deref(),
        );
    }
    if let Some(b) = &e.body {
        want("body", b, Some(&o.body));
    }
    if let Some(b) = &e.body_contains {
        if !o.body.contains(b.as_str()) {
            want("body containing", b, Some(&o.body));
        }
    }
    if let Some(l) = &e.location {
        want("location", l, o.headers.get("location").map(String::as_str));
    }
    for (k, v) in &e.headers {
        want(
            &format!("response header {k}"),
            v,
            o.headers.get(&k.to_ascii_lowercase()).map(String::as_str),
        );
    }
    if let Some(w) = &e.workload {
        if let Some(s) = &w.service {
            want("answered by service", s, o.field("Service").as_deref());
        }
        if let Some(v) = &w.version {
            want("answered by version", v, o.field("ServiceVersion").as_deref());
        }
        if let Some(i) = &w.instance {
            want("answered by instance", i, o.field("Hostname").as_deref());
        }
    }
    for (k, v) in &e.saw {
        want(&format!("the workload saw {k}"), v, o.field(k).as_deref());
    }
    for (k, v) in &e.saw_headers {
        want(&format!("the workload saw header {k}"), v, o.saw_header(k).as_deref());
    }
    for (k, v) in &e.tls {
        want(&format!("TLS {k}"), v, o.tls.get(k).map(String::as_str));
    }
    for k in &e.headers_present {
        if !o.headers.contains_key(&k.to_ascii_lowercase()) {
            f.push(format!("response header {k}: expected present, observed nothing"));
        }
    }
    for (k, re) in &e.headers_match {
        let observed = o.headers.get(&k.to_ascii_lowercase());
        match regex::Regex::new(&format!("^(?:{re})$")) {
            Err(err) => f.push(format!("response header {k}: bad regex {re:?}: {err}")),
            Ok(r) if observed.is_some_and(|v| r.is_match(v)) => {}
            Ok(_) => f.push(format!(
                "response header {k}: expected to match {re:?}, observed {observed:?}"
            )),
        }
    }
    for k in &e.headers_absent {
        if let Some(v) = o.headers.get(&k.to_ascii_lowercase()) {
            f.push(format!("response header {k}: expected absent, observed {v:?}"));
        }
    }
    for k in &e.saw_headers_absent {
        if let Some(v) = o.saw_header(k) {
            f.push(format!("the workload saw header {k}: expected absent, observed {v:?}"));
        }
    }
    if let Some(min) = e.latency_at_least {
        if o.elapsed < min.as_std() {
            f.push(format!(
                "latency: expected at least {:?}, observed {:?}",
                min.as_std(),
                o.elapsed
            ));
        }
    }
    if e.echo == Some(true) && !o.body.ends_with(case.request.body.as_deref().unwrap_or("")) {
        f.push(format!(
            "echo: expected the body to end with {:?}, observed {:?}",
            case.request.body, o.body
        ));
    }
    f
}

/// The chance that a correct target fails a distribution case: one in a million, shared among
/// the case's versions.
pub const FALSE_ALARM: f64 = 1e-6;

/// The counts of a version with share `p` among `n` requests that a correct target stays within
/// with probability at least 1 - `alpha`: exact Binomial(n, p) quantiles, `alpha / 2` per tail.
pub fn binomial_bounds(n: u32, p: f64, alpha: f64) -> (u32, u32) {
    if p <= 0.0 {
        return (0, 0);
    }
    if p >= 1.0 {
        return (n, n);
    }
    // pmf in log space (n in the thousands underflows otherwise): P(k+1) = P(k) (n-k)/(k+1) p/(1-p).
    let (nf, odds) = (f64::from(n), (p / (1.0 - p)).ln());
    let mut log_pmf = nf * (1.0 - p).ln();
    let mut pmf = Vec::with_capacity(n as usize + 1);
    for k in 0..=n {
        pmf.push(log_pmf.exp());
        let kf = f64::from(k);
        log_pmf += ((nf - kf) / (kf + 1.0)).ln() + odds;
    }
    let tail = alpha / 2.0;
    let first_past = |ks: &mut dyn Iterator<Item = u32>| {
        let mut mass = 0.0;
        for k in ks {
            mass += pmf[k as usize];
            if mass > tail {
                return Some(k);
            }
        }
        None
    };
    let lo = first_past(&mut (0..=n)).unwrap_or(0);
    let hi = first_past(&mut (0..=n).rev()).unwrap_or(n);
    (lo, hi)
}

/// Each version's count against exact binomial bounds (see `binomial_bounds`, `FALSE_ALARM`).
pub fn check_distribution(expected: &BTreeMap<String, f64>, seen: &BTreeMap<String, u32>, n: u32) -> Vec<String> {
    let alpha = FALSE_ALARM / expected.len().max(1) as f64;
    let mut f = Vec::new();
    for (version, pct) in expected {
        let k = seen.get(version).copied().unwrap_or(0);
        let (lo, hi) = binomial_bounds(n, pct / 100.0, alpha);
        if k < lo || k > hi {
            f.push(format!(
                "distribution: expected {version} at {pct}% of {n} ({lo}..={hi}; a correct target falls outside \
                 less than once in {:.0}), observed {k} ({seen:?})",
                1.0 / alpha
            ));
        }
    }
    f
}

/// Runs one case: one request, or `count` for a distribution.
pub async fn run_case(
    case: &Case,
    ports: &BTreeMap<u32, SocketAddr>,
    certs: &std::path::Path,
    workloads: &Workloads,
) -> (CaseOutcome, Option<String>, Duration) {
    let start = Instant::now();
    let before: BTreeMap<&String, u64> = case
        .expect
        .workload_requests
        .keys()
        .map(|s| (s, workloads.requests(s)))
        .collect();
    let Some(addr) = ports.get(&case.request.port).copied() else {
        return (
            CaseOutcome::Fail,
            Some(format!("the target has no port {}", case.request.port)),
            start.elapsed(),
        );
    };
    let count = case.request.count.unwrap_or(1).max(1);
    let concurrency = case.request.concurrency.unwrap_or(1).clamp(1, count);
    // `concurrency` senders take requests from one counter until `count` are sent.
    let next = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let mut senders = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (request, certs, next) = (case.request.clone(), certs.to_path_buf(), next.clone());
        senders.spawn(async move {
            let mut seen = Vec::new();
            while next.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < count {
                seen.push(send(addr, &request, &certs).await);
            }
            seen
        });
    }
    let mut observations = Vec::new();
    while let Some(done) = senders.join_next().await {
        observations.extend(done.unwrap_or_default());
    }
    let mut failures = Vec::new();
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    let mut statuses: BTreeMap<u16, u32> = BTreeMap::new();
    for o in observations {
        *statuses.entry(o.status).or_insert(0) += 1;
        let f = check(case, &o);
        if let Some(v) = o.field("ServiceVersion") {
            // Counted per version and per service and version (`reviews/v1`).
            if let Some(s) = o.field("Service") {
                *seen.entry(format!("{s}/{v}")).or_insert(0) += 1;
            }
            *seen.entry(v).or_insert(0) += 1;
        }
        if !f.is_empty() && failures.is_empty() {
            failures.extend(f);
        }
    }
    if !case.expect.distribution.is_empty() {
        failures.extend(check_distribution(&case.expect.distribution, &seen, count));
    }
    if !case.expect.workload_requests.is_empty() {
        // Copies (mirrors) may land after the response: wait up to 2 s for the counts.
        let deadline = Instant::now() + Duration::from_secs(2);
        let received = loop {
            let now: BTreeMap<String, u64> = before
                .iter()
                .map(|(s, b)| ((*s).clone(), workloads.requests(s) - b))
                .collect();
            if now == case.expect.workload_requests || Instant::now() > deadline {
                break now;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        if received != case.expect.workload_requests {
            failures.push(format!(
                "requests received by workloads: expected {:?}, observed {received:?}",
                case.expect.workload_requests
            ));
        }
    }
    if !case.expect.status_counts.is_empty() && case.expect.status_counts != statuses {
        failures.push(format!(
            "status counts: expected {:?}, observed {statuses:?}",
            case.expect.status_counts
        ));
    }
    if failures.is_empty() {
        (CaseOutcome::Pass, None, start.elapsed())
    } else {
        let r = &case.request;
        let req = format!(
            "request: {} {} {} port {} authority {:?} headers {:?}",
            r.protocol.as_deref().unwrap_or("h1"),
            r.method.as_deref().unwrap_or("GET"),
            r.path.as_deref().unwrap_or("/"),
            r.port,
            r.authority,
            r.headers
        );
        (
            CaseOutcome::Fail,
            Some(format!("{}; {req}", failures.join("; "))),
            start.elapsed(),
        )
    }
}

/// Known differences of a target: `suite/case` -> reason.
pub type Known = BTreeMap<String, String>;

/// Runs a whole suite against `target`.
pub async fn run_suite(
    suite: &Suite,
    target: &mut dyn Target,
    work_dir: &std::path::Path,
    known: &Known,
    filter: Option<&str>,
    logs: Option<&std::path::Path>,
    placement: &Placement,
) -> Result<SuiteResult, String> {
    let certs = placement.certs_dir(work_dir, &suite.name);
    super::tls::make_certificates(&suite.certificates, &certs)?;
    let workloads = start_workloads(suite, &certs, placement).await?;
    let config = suite.config.replace("${certs}", &certs.display().to_string());
    let write_config = |name: &str, registry: &str| -> Result<std::path::PathBuf, String> {
        let dir = work_dir.join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        std::fs::write(dir.join("config.yaml"), &config).map_err(|e| e.to_string())?;
        std::fs::write(dir.join("registry.yaml"), registry).map_err(|e| e.to_string())?;
        Ok(dir)
    };
    let mesh = match &suite.mesh {
        Some(m) => {
            let p = work_dir.join(format!("{}.mesh.yaml", suite.name));
            std::fs::write(&p, m).map_err(|e| e.to_string())?;
            Some(p)
        }
        None => None,
    };
    let mut labels = suite.labels.clone();
    if labels.is_empty() {
        labels.insert("istio".into(), "ingressgateway".into());
    }
    // Extra gateways first: the main one's registry names them.
    let mut registry = workloads.registry.clone();
    let mut ports = BTreeMap::new();
    let mut extra = Vec::new();
    for g in &suite.gateways {
        let mut t = target.another()?;
        let dir = write_config(&format!("{}-{}", suite.name, g.name), &workloads.registry)?;
        let got = t
            .start(&dir, mesh.as_deref(), &g.labels, &g.ports, "gateway")
            .map_err(|e| format!("gateway {}: {e}", g.name))?;
        if let Some(host) = &g.service {
            registry.push_str(&gateway_registry(&g.name, host, &got));
        }
        ports.extend(got);
        extra.push((g.name.clone(), t));
    }
    let dir = write_config(&suite.name, &registry)?;
    let role = suite.role.as_deref().unwrap_or("gateway");
    ports.extend(target.start(&dir, mesh.as_deref(), &labels, &suite.ports, role)?);
    let mut cases = Vec::new();
    for case in &suite.cases {
        let id = format!("{}/{}", suite.name, case.id);
        if filter.is_some_and(|f| !glob(f, &id)) {
            continue;
        }
        let case = with_addresses(case, &workloads.addresses);
        let (outcome, message, took) = run_case(&case, &ports, &certs, &workloads).await;
        let (outcome, message) = match (outcome, known.get(&id)) {
            (CaseOutcome::Fail, Some(reason)) => (
                CaseOutcome::ExpectedFailure,
                Some(format!("known difference: {reason}; {}", message.unwrap_or_default())),
            ),
            (CaseOutcome::Pass, Some(reason)) => (
                CaseOutcome::UnexpectedPass,
                Some(format!("listed as a known difference ({reason}) but passed")),
            ),
            (outcome, _) => (outcome, message),
        };
        cases.push(CaseResult {
            id: case.id.clone(),
            outcome,
            message,
            duration_ms: took.as_secs_f64() * 1000.0,
        });
    }
    if let Some(logs) = logs {
        // Every gateway's access log and stderr, kept beside the report.
        let mut all = vec![(target.name().to_string(), target.logs())];
        all.extend(extra.iter().map(|(n, t)| (n.clone(), t.logs())));
        let kept = std::fs::create_dir_all(logs).and_then(|()| {
            all.iter()
                .try_for_each(|(n, text)| std::fs::write(logs.join(format!("{}.{n}.log", suite.name)), text))
        });
        if let Err(e) = kept {
            eprintln!("warning: cannot keep logs in {}: {e}", logs.display());
        }
    }
    for (_, t) in &mut extra {
        t.stop();
    }
    target.stop();
    Ok(SuiteResult {
        suite: suite.name.clone(),
        target: target.name().to_string(),
        cases,
    })
}

/// A MESH_INTERNAL ServiceEntry for an extra gateway: `host` on its ports (HTTP).
fn gateway_registry(name: &str, host: &str, ports: &BTreeMap<u32, SocketAddr>) -> String {
    let declared: Vec<String> = ports
        .keys()
        .map(|p| format!("{{number: {p}, name: http-{p}, protocol: HTTP}}"))
        .collect();
    let mapped: Vec<String> = ports.iter().map(|(p, a)| format!("http-{p}: {}", a.port())).collect();
    let ip = ports
        .values()
        .next()
        .map_or("127.0.0.1".to_string(), |a| a.ip().to_string());
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: gateway-{name}, namespace: istio-system}}\nspec:\n  \
         hosts: [{host}]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{}]\n  \
         endpoints: [{{address: {ip}, ports: {{{}}}}}]\n---\n",
        declared.join(", "),
        mapped.join(", ")
    )
}

/// The case with `${addr:<service>}` in its authority and headers replaced by that service's echo
/// address (for workloads outside the registry).
fn with_addresses(case: &Case, addresses: &BTreeMap<String, SocketAddr>) -> Case {
    let fill = |s: &str| {
        addresses.iter().fold(s.to_string(), |s, (svc, a)| {
            s.replace(&format!("${{addr:{svc}}}"), &a.to_string())
        })
    };
    let mut case = case.clone();
    case.request.authority = case.request.authority.as_deref().map(fill);
    for v in case.request.headers.values_mut() {
        *v = fill(v);
    }
    case
}

/// `*` matches any run of characters.
pub fn glob(pattern: &str, s: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == s,
        Some((head, tail)) => {
            s.starts_with(head)
                && (0..=s.len() - head.len()).any(|i| s.get(head.len() + i..).is_some_and(|rest| glob(tail, rest)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distribution_bounds() {
        // The n of the built-in 80/20 cases: a correct split passes, 10 points off fails.
        let want: BTreeMap<String, f64> = [("v1".into(), 80.0), ("v2".into(), 20.0)].into();
        let seen = |a: u32, b: u32| -> BTreeMap<String, u32> { [("v1".into(), a), ("v2".into(), b)].into() };
        assert!(check_distribution(&want, &seen(1040, 260), 1300).is_empty());
        assert!(
            check_distribution(&want, &seen(980, 320), 1300).is_empty(),
            "within bounds"
        );
        assert_eq!(
            check_distribution(&want, &seen(910, 390), 1300).len(),
            2,
            "off by 10 points"
        );
        let zero: BTreeMap<String, f64> = [("v3".into(), 0.0)].into();
        assert_eq!(check_distribution(&zero, &[("v3".into(), 1)].into(), 400).len(), 1);
        let all: BTreeMap<String, f64> = [("v2".into(), 100.0)].into();
        assert!(check_distribution(&all, &[("v2".into(), 50)].into(), 50).is_empty());
        assert_eq!(check_distribution(&all, &[("v2".into(), 49)].into(), 50).len(), 1);
    }

    #[test]
    fn header_presence_regex_and_instance_checks() {
        let case: Case = serde_json::from_value(serde_json::json!({
            "id": "x",
            "expect": {
                "headersPresent": ["date"],
                "headersMatch": {"x-envoy-upstream-service-time": "[0-9]+"},
                "workload": {"instance": "reviews-v2-0"}
            }
        }))
        .unwrap();
        let mut o = Observation {
            status: 200,
            headers: [
                ("date".to_string(), "now".to_string()),
                ("x-envoy-upstream-service-time".to_string(), "12".to_string()),
            ]
            .into(),
            body: "Hostname=reviews-v2-0\n".into(),
            ..Default::default()
        };
        assert_eq!(check(&case, &o), Vec::<String>::new());
        o.headers.insert("x-envoy-upstream-service-time".into(), "12ms".into());
        o.headers.remove("date");
        o.body = "Hostname=reviews-v2-1\n".into();
        assert_eq!(
            check(&case, &o),
            [
                "answered by instance: expected \"reviews-v2-0\", observed \"reviews-v2-1\"",
                "response header date: expected present, observed nothing",
                "response header x-envoy-upstream-service-time: expected to match \"[0-9]+\", observed Some(\"12ms\")",
            ]
        );
    }

    #[test]
    fn binomial_bounds_are_exact_quantiles() {
        // Binomial(1300, 0.8) and (1300, 0.2) at alpha 5e-7 (the values the suites' comments quote,
        // computed independently in Python from the same definition).
        assert_eq!(binomial_bounds(1300, 0.8, 5e-7), (965, 1110));
        assert_eq!(binomial_bounds(1300, 0.2, 5e-7), (190, 335));
        assert_eq!(binomial_bounds(1700, 0.5, 5e-7), (747, 953));
        assert_eq!(binomial_bounds(900, 0.1, 5e-7), (48, 138));
        // Symmetry, and the degenerate shares.
        let (lo, hi) = binomial_bounds(1000, 0.3, 1e-3);
        assert_eq!(binomial_bounds(1000, 0.7, 1e-3), (1000 - hi, 1000 - lo));
        assert_eq!(binomial_bounds(10, 0.0, 1e-6), (0, 0));
        assert_eq!(binomial_bounds(10, 1.0, 1e-6), (10, 10));
    }

    #[test]
    fn globs() {
        assert!(glob("http-routing/*", "http-routing/redirect"));
        assert!(glob("*redirect*", "http-routing/redirect-port"));
        assert!(!glob("tcp-*", "http-routing/x"));
    }
}
