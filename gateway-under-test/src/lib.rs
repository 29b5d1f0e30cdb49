//! meshgate: the reference gateway. Loads Istio YAML with mesh-model, plans it for the gateway
//! workload's labels, and serves the Plan: HTTP/1.1 and h2c listeners, routing, upstream pools.
//! Config files are watched (and SIGHUP reloads): a valid change is swapped in without dropping a
//! request; an invalid one is logged and the last good Plan keeps serving. SIGTERM drains.

pub mod admin;
pub mod balance;
pub mod breaker;
pub mod capture;
pub mod compile;
pub mod conns;
pub mod context;
pub mod counted;
pub mod dns;
pub mod errors;
pub mod forward;
pub mod h1pool;
pub mod h1serve;
pub mod h2pool;
pub mod headwatch;
pub mod l4;
pub mod limits;
pub mod local;
pub mod logformat;
pub mod logging;
pub mod matching;
pub mod memory;
pub mod names;
pub mod origination;
pub mod proxy;
pub mod replay;
pub mod route_index;
pub mod server;
pub mod sidecar;
pub mod state;
pub mod telemetry;
pub mod tls;
pub mod upgrade;
pub mod upstream;
pub mod workers;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mesh_model::plan::PlanOptions;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::state::{AccessLog, State};

/// What this meshgate plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// A gateway: listeners from the Gateways that select `--labels`.
    Gateway,
    /// A sidecar's outbound side on `--outbound`: an explicit HTTP proxy (absolute-form requests
    /// and CONNECT), or with `--capture` the target of iptables' redirect, applying
    /// VirtualServices bound to `mesh`, ServiceEntries and `outboundTrafficPolicy`.
    Sidecar,
}

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "meshgate",
    version,
    about = "The reference gateway: Istio's ingress/egress model from plain YAML"
)]
pub struct Args {
    /// Config files or directories (Gateway, VirtualService, DestinationRule, ServiceEntry, WorkloadEntry).
    #[arg(short = 'c', long = "config", required = true)]
    pub config: Vec<PathBuf>,
    /// MeshConfig file.
    #[arg(long)]
    pub mesh: Option<PathBuf>,
    /// This gateway workload's labels; Gateways select it by these (`istio=ingressgateway`).
    #[arg(long, value_delimiter = ',', default_value = "istio=ingressgateway")]
    pub labels: Vec<String>,
    /// The gateway's config namespace (first in DestinationRule lookup).
    #[arg(long)]
    pub namespace: Option<String>,
    /// Admin API address.
    #[arg(long, default_value = "127.0.0.1:15000")]
    pub admin: SocketAddr,
    /// `stdout`, `off` or a file path.
    #[arg(long, default_value = "stdout")]
    pub access_log: String,
    /// The access log line, in Envoy's command operators (Istio's `accessLogFormat`): a format
    /// string for TEXT, a JSON object of keys to format strings for JSON. Empty: Istio's default.
    #[arg(long, default_value = "")]
    pub access_log_format: String,
    /// TEXT or JSON (Istio's `accessLogEncoding`).
    #[arg(long, default_value = "TEXT")]
    pub access_log_encoding: String,
    /// Bind a Plan listener port elsewhere: `80=127.0.0.1:0` (port 0: any free port). Repeatable.
    #[arg(long = "port-map")]
    pub port_map: Vec<String>,
    /// Once listening, write `{"listeners": {"80": "127.0.0.1:41234"}, "admin": "…"}` here.
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
    /// After SIGTERM, how long listeners keep accepting while connections are drained
    /// (HTTP/1.1 responses say `Connection: close`, HTTP/2 gets GOAWAY, `/ready` answers 503):
    /// Istio's `terminationDrainDuration`, 5 s.
    #[arg(long, default_value = "5s")]
    pub drain_time: String,
    /// After the drain period, how long requests still in flight may take to finish.
    #[arg(long, default_value = "5s")]
    pub drain_timeout: String,
    /// How often config files are checked for changes.
    #[arg(long, default_value = "1s")]
    pub watch_interval: String,
    /// Credentials for `credentialName`: a folder per name holding tls.crt, tls.key, ca.crt, ca.crl
    /// (the key names of Istio's secrets).
    #[arg(long)]
    pub credentials: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "gateway")]
    pub role: Role,
    /// The sidecar role's outbound listener (Istio's outbound port is 15001).
    #[arg(long, default_value = "127.0.0.1:15001")]
    pub outbound: SocketAddr,
    /// The sidecar's outbound listener takes connections redirected to it by iptables (Istio's
    /// transparent capture: the original destination from SO_ORIGINAL_DST, the protocol from
    /// the first bytes) instead of explicit proxy requests.
    #[arg(long)]
    pub capture: bool,
    /// Worker threads (like Envoy's --concurrency); default: one per core.
    #[arg(long)]
    pub workers: Option<usize>,
    /// Test only: burn this many microseconds of CPU on every HTTP request (a deliberate, known
    /// slowdown for checking that the regression gate catches one).
    #[arg(long, hide = true, default_value = "0")]
    pub test_spin_us: u64,
    #[command(flatten)]
    pub limits: limits::Limits,
}

fn parse_duration(flag: &str, s: &str) -> Result<Duration, String> {
    mesh_model::api::Duration::parse(s)
        .map(|d| d.as_std())
        .map_err(|e| format!("--{flag}: {e}"))
}

/// `--labels` as a map.
fn workload_labels(args: &Args) -> Result<BTreeMap<String, String>, String> {
    args.labels
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| format!("label `{kv}` is not key=value"))
        })
        .collect()
}

/// Loads, validates and plans the config. Errors: every diagnostic, as text.
pub fn load_plan(args: &Args) -> Result<mesh_model::plan::Plan, String> {
    let labels = workload_labels(args)?;
    let opts = PlanOptions {
        labels: Some(labels),
        namespace: args.namespace.clone(),
        sidecar: args.role == Role::Sidecar,
    };
    let (plan, analysis) = mesh_model::plan::load(&args.config, args.mesh.as_deref(), &opts)?;
    for d in analysis {
        eprintln!("meshgate: {d}");
    }
    Ok(plan)
}

fn port_map(args: &Args) -> Result<HashMap<u32, SocketAddr>, String> {
    args.port_map
        .iter()
        .map(|m| {
            let (port, addr) = m
                .split_once('=')
                .ok_or_else(|| format!("--port-map `{m}` is not PORT=ADDR"))?;
            let port = port.parse().map_err(|_| format!("--port-map `{m}`: bad port"))?;
            let addr = addr.parse().map_err(|_| format!("--port-map `{m}`: bad address"))?;
            Ok((port, addr))
        })
        .collect()
}

/// Fingerprint of the files a reload reads (paths, sizes, modification times), to notice
/// changes: in a config folder only the YAML files the loader reads, so an editor's swap file or
/// a temporary file renamed into place does not count as a change of its own.
fn fingerprint(paths: &[PathBuf]) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
    paths
        .iter()
        .flat_map(|p| mesh_model::load::yaml_files(p).unwrap_or_default())
        .map(|f| {
            let meta = std::fs::metadata(&f).ok();
            let len = meta.as_ref().map_or(0, |m| m.len());
            let modified = meta.and_then(|m| m.modified().ok());
            (f, len, modified)
        })
        .collect()
}

/// Certificate files the Plan's terminating chains read (a rotation reloads them).
fn tls_files(plan: &mesh_model::plan::Plan, credentials: Option<&Path>) -> Vec<PathBuf> {
    plan.listeners
        .iter()
        .flat_map(|l| &l.filter_chains)
        .filter_map(|c| c.tls.as_ref())
        .flat_map(|t| tls::files(t, credentials))
        .collect()
}

/// The running gateway's listeners and their shutdown plumbing.
struct Listeners {
    state: Arc<State>,
    map: HashMap<u32, SocketAddr>,
    stop: Arc<watch::Sender<bool>>,
    workers: workers::Workers,
}

impl Listeners {
    /// Binds every Plan listener not yet bound, on every worker.
    fn ensure(&self) -> Result<(), String> {
        let compiled = self.state.current.load_full();
        let mut ports: Vec<_> = compiled.listeners.values().collect();
        ports.sort_by_key(|l| l.port);
        for l in ports {
            if self.state.bound.lock().map(|b| b.contains_key(&l.port)).unwrap_or(true) {
                continue;
            }
            let addr: SocketAddr = match self.map.get(&l.port) {
                Some(a) => *a,
                None => format!("{}:{}", l.bind, l.port)
                    .parse()
                    .map_err(|e| format!("listener {}:{}: {e}", l.bind, l.port))?,
            };
            let (port, state, stop) = (l.port, self.state.clone(), self.stop.clone());
            let local = self
                .workers
                .listen(addr, move |listener| {
                    server::serve(listener, port, state.clone(), stop.subscribe())
                })
                .map_err(|e| format!("cannot listen on {addr} (port {}): {e}", l.port))?;
            if let Ok(mut b) = self.state.bound.lock() {
                b.insert(l.port, local);
            }
            eprintln!(
                "meshgate: listener for port {} on {local} ({} workers)",
                l.port,
                self.workers.len()
            );
        }
        Ok(())
    }
}

fn write_ready_file(path: &Path, state: &State, admin: SocketAddr) -> Result<(), String> {
    let bound = state.bound.lock().map(|b| b.clone()).unwrap_or_default();
    let listeners: serde_json::Map<String, serde_json::Value> = bound
        .iter()
        .map(|(p, a)| (p.to_string(), serde_json::Value::String(a.to_string())))
        .collect();
    let v = serde_json::json!({ "listeners": listeners, "admin": admin.to_string(), "version": state.version() });
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, v.to_string())
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Reloads when files change or SIGHUP arrives; keeps the last good Plan on any error.
async fn watch_config(args: Args, listeners: Arc<Listeners>, admin: SocketAddr) {
    let interval = parse_duration("watch-interval", &args.watch_interval).unwrap_or(Duration::from_secs(1));
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let watched = |state: &State| {
        let mut paths = args.config.clone();
        paths.extend(args.mesh.clone());
        paths.extend(tls_files(&state.current.load().plan, args.credentials.as_deref()));
        paths
    };
    let mut last = fingerprint(&watched(&listeners.state));
    loop {
        let signalled = tokio::select! {
            _ = tokio::time::sleep(interval) => false,
            Some(_) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
        };
        let now = fingerprint(&watched(&listeners.state));
        if now == last && !signalled {
            continue;
        }
        reload(&args, &listeners, admin).await;
        // Certificates named by the new Plan are watched from now on.
        last = fingerprint(&watched(&listeners.state));
    }
}

/// One reload attempt.
pub async fn reload_once(args: &Args, state: &Arc<State>) -> Result<u64, String> {
    let state = state.clone();
    let plan = load_plan(args);
    let result =
        plan.and_then(|p| compile::compile(p, state.version() + 1, args.credentials.as_deref(), &state.telemetry));
    match result {
        Ok(compiled) => {
            for w in &compiled.warnings {
                eprintln!("meshgate: {w}");
            }
            let v = compiled.version;
            state.current.store(Arc::new(compiled));
            state.stats.reloads.fetch_add(1, Ordering::Relaxed);
            Ok(v)
        }
        Err(e) => {
            state.stats.reload_failures.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut le) = state.last_error.lock() {
                *le = Some((SystemTime::now(), e.clone()));
            }
            Err(e)
        }
    }
}

async fn reload(args: &Args, listeners: &Arc<Listeners>, admin: SocketAddr) {
    match reload_once(args, &listeners.state).await {
        Ok(v) => {
            eprintln!("meshgate: config version {v} in force");
            if let Err(e) = listeners.ensure() {
                eprintln!("meshgate: {e}");
            }
            if let Some(p) = &args.ready_file {
                if let Err(e) = write_ready_file(p, &listeners.state, admin) {
                    eprintln!("meshgate: {e}");
                }
            }
        }
        Err(e) => eprintln!(
            "meshgate: config rejected, version {} keeps serving:\n{e}",
            listeners.state.version()
        ),
    }
}

/// Runs the gateway until SIGTERM/SIGINT. Returns the process exit code.
pub async fn run(args: Args) -> u8 {
    proxy::TEST_SPIN_NS.store(args.test_spin_us.saturating_mul(1000), Ordering::Relaxed);
    let setup = async {
        let drain_times = (
            parse_duration("drain-time", &args.drain_time)?,
            parse_duration("drain-timeout", &args.drain_timeout)?,
        );
        parse_duration("watch-interval", &args.watch_interval)?;
        let map = port_map(&args)?;
        let n = args
            .workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let workers = workers::Workers::start(n).map_err(|e| format!("cannot start {n} workers: {e}"))?;
        let plan = load_plan(&args)?;
        let identity = telemetry::Identity::from_labels(&workload_labels(&args)?, args.namespace.as_deref());
        let telemetry = Arc::new(telemetry::Telemetry::new(identity));
        let compiled = compile::compile(plan, 1, args.credentials.as_deref(), &telemetry)?;
        for w in &compiled.warnings {
            eprintln!("meshgate: {w}");
        }
        let access_log =
            AccessLog::open(&args.access_log).map_err(|e| format!("--access-log {}: {e}", args.access_log))?;
        let log_format = logformat::Format::new(&args.access_log_encoding, &args.access_log_format)
            .map_err(|e| format!("--access-log-format/--access-log-encoding: {e}"))?;
        let state = State::new(compiled, (access_log, log_format), args.limits.clone(), telemetry);
        tokio::spawn(
            state
                .conns
                .clone()
                .sweep(args.limits.idle_timeout, args.limits.headers_timeout()),
        );
        let (stop, _) = watch::channel(false);
        let listeners = Arc::new(Listeners {
            state: state.clone(),
            map,
            stop: Arc::new(stop),
            workers,
        });
        listeners.ensure()?;
        if args.role == Role::Sidecar {
            let (outbound_state, stop, capture) = (state.clone(), listeners.stop.clone(), args.capture);
            let addr = listeners
                .workers
                .listen(args.outbound, move |l| {
                    let (state, stop) = (outbound_state.clone(), stop.subscribe());
                    async move {
                        if capture {
                            capture::serve(l, state, stop).await;
                        } else {
                            sidecar::serve(l, state, stop).await;
                        }
                    }
                })
                .map_err(|e| format!("cannot listen on {} (outbound): {e}", args.outbound))?;
            if let Ok(mut b) = state.bound.lock() {
                // The outbound listener is reported under Istio's outbound port.
                b.insert(15001, addr);
            }
            let mode = if args.capture { "captured" } else { "explicit proxy" };
            eprintln!("meshgate: outbound (sidecar, {mode}) listener on {addr}");
        }
        let admin_listener = TcpListener::bind(args.admin)
            .await
            .map_err(|e| format!("cannot listen on {} (admin): {e}", args.admin))?;
        let admin = admin_listener.local_addr().map_err(|e| e.to_string())?;
        tokio::spawn(admin::serve(admin_listener, state.clone()));
        if let Some(p) = &args.ready_file {
            write_ready_file(p, &state, admin)?;
        }
        eprintln!("meshgate: ready, config version 1, admin on {admin}");
        Ok::<_, String>((listeners, admin, drain_times))
    };
    let (listeners, admin, (drain_time, drain_timeout)) = match setup.await {
        Ok(x) => x,
        Err(e) => {
            eprintln!("meshgate: {e}");
            return 1;
        }
    };
    let watcher = tokio::spawn(watch_config(args.clone(), listeners.clone(), admin));
    wait_for_shutdown().await;
    watcher.abort();
    drain(&listeners, drain_time, drain_timeout).await;
    0
}

/// Envoy's drain on SIGTERM: `/ready` turns 503 and, for `drain_time`, listeners keep accepting
/// while every HTTP/1.1 response says `Connection: close` and HTTP/2 connections get GOAWAY;
/// then listeners close, every connection closes after its in-flight requests, and those get up
/// to `timeout` to finish.
async fn drain(listeners: &Listeners, drain_time: Duration, timeout: Duration) {
    let state = &listeners.state;
    eprintln!("meshgate: draining for {drain_time:?}");
    state.conns.set_phase(conns::Phase::Draining);
    tokio::time::sleep(drain_time).await;
    state.conns.set_phase(conns::Phase::Stopping);
    let _ = listeners.stop.send(true);
    let deadline = tokio::time::Instant::now() + timeout;
    while !state.conns.is_empty() {
        if tokio::time::Instant::now() >= deadline {
            eprintln!("meshgate: drain timeout; closing the remaining connections");
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn wait_for_shutdown() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).ok();
    let term = async {
        match term.as_mut() {
            Some(t) => {
                t.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = term => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_of_a_config_folder_is_its_yaml_files_only() {
        let dir = std::env::temp_dir().join(format!("meshgate-fingerprint-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap_or_default();
        for f in ["a.yaml", "sub/b.yml", "a.yaml.tmp", ".a.yaml.swp", "notes.txt"] {
            std::fs::write(dir.join(f), "x").unwrap_or_default();
        }
        let files: Vec<PathBuf> = fingerprint(std::slice::from_ref(&dir))
            .into_iter()
            .map(|(p, _, _)| p)
            .collect();
        assert_eq!(files, vec![dir.join("a.yaml"), dir.join("sub/b.yml")]);
        // A change of size is a change; a file that is gone drops out.
        let before = fingerprint(std::slice::from_ref(&dir));
        std::fs::write(dir.join("a.yaml"), "xy").unwrap_or_default();
        assert_ne!(fingerprint(std::slice::from_ref(&dir)), before);
        std::fs::remove_dir_all(&dir).unwrap_or_default();
        assert!(fingerprint(&[dir]).is_empty());
    }
}
