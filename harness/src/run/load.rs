//! The load phase of `run`: a load suite's workloads (child processes, so their CPU is not the
//! generator's), every target brought up with the suite's config, and each scenario sent through
//! every target and straight to its workload (the `direct` baseline), repetitions interleaved
//! (the order rotates each repetition, so no side always runs first or last). Each measured run
//! follows a warm-up run of its own and is bracketed by /proc readings of the gateway process.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use meshbench_report::{LoadResult, ProcessUsage};

use crate::conform::suite::{RequestProtocol, Role, Scenario, Suite};
use crate::conform::workloads::{self, Launch, Placement};
use crate::load::spec::{LoadSpec, Proto, RequestTemplate, TlsOptions};
use crate::targets::process::usage;
use crate::targets::{StartSpec, Target, TargetError};

/// The baseline's name in reports.
pub const DIRECT: &str = "direct";

/// How long scenarios run: the file's durations, or scaled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scale {
    /// Measured duration multiplier.
    pub duration: f64,
    /// Warm-up multiplier.
    pub warmup: f64,
}

impl Scale {
    pub const DEFAULT: Scale = Scale {
        duration: 1.0,
        warmup: 1.0,
    };
    /// `--quick`: a smoke test (about a third of the default).
    pub const QUICK: Scale = Scale {
        duration: 0.34,
        warmup: 0.5,
    };
    /// `--full`: long enough for stable tails.
    pub const FULL: Scale = Scale {
        duration: 5.0,
        warmup: 2.0,
    };
}

/// Where one scenario's requests go.
#[derive(Debug, Clone)]
pub struct Destination<'a> {
    pub name: &'a str,
    pub addr: SocketAddr,
    /// Through a gateway (the scenario's TLS applies) or straight to the workload.
    pub gateway: bool,
}

/// The load spec of one scenario against one destination.
pub fn spec_for(sc: &Scenario, to: &Destination, certs: &Path, scale: Scale, hlog: Option<PathBuf>) -> LoadSpec {
    let tls = sc.tls.as_ref().filter(|_| to.gateway).map(|t| TlsOptions {
        sni: t.sni.clone(),
        ca: Some(certs.join(format!("{}-ca.pem", t.ca.as_deref().unwrap_or("main")))),
        cert: t.client_cert.as_ref().map(|c| certs.join(format!("{c}.crt"))),
        key: t.client_cert.as_ref().map(|c| certs.join(format!("{c}.key"))),
        insecure: false,
    });
    let (protocol, scheme) = match (sc.protocol, tls.is_some()) {
        (RequestProtocol::H1, false) => (Proto::H1, "http"),
        (RequestProtocol::H1, true) => (Proto::H1, "https"),
        (RequestProtocol::H2c, false) => (Proto::H2, "http"),
        (RequestProtocol::H2c, true) => (Proto::H2, "https"),
        (RequestProtocol::Grpc, false) => (Proto::Grpc, "grpc"),
        (RequestProtocol::Grpc, true) => (Proto::Grpc, "grpcs"),
        (RequestProtocol::Tcp, false) => (Proto::Tcp, "tcp"),
        (RequestProtocol::Tcp, true) => (Proto::Tcp, "tls"),
    };
    let path = sc.path.clone().unwrap_or_else(|| "/".into());
    let body = Bytes::from(sc.body.clone().unwrap_or_default());
    let scaled =
        |d: Option<mesh_model::api::Duration>, default: Duration, k: f64| d.map_or(default, |d| d.as_std()).mul_f64(k);
    LoadSpec {
        name: sc.name.clone(),
        url: format!("{scheme}://{}{path}", to.addr),
        protocol,
        address: to.addr.to_string(),
        host: sc
            .tls
            .as_ref()
            .and_then(|t| t.sni.clone())
            .unwrap_or_else(|| to.addr.ip().to_string()),
        tls,
        request: RequestTemplate {
            method: if body.is_empty() && protocol != Proto::Grpc {
                "GET"
            } else {
                "POST"
            }
            .into(),
            path,
            authority: sc.authority.clone().unwrap_or_else(|| to.addr.to_string()),
            headers: Vec::new(),
            body,
        },
        connections: sc.connections.unwrap_or(16),
        streams: sc.streams.unwrap_or(1),
        // One generator worker on a 2-core machine: the other core is the gateway's.
        workers: 1,
        rate: sc.rate,
        duration: Some(scaled(sc.duration, Duration::from_secs(3), scale.duration).max(Duration::from_millis(500))),
        requests: None,
        warmup: scaled(sc.warmup, Duration::from_secs(1), scale.warmup),
        timeout: Duration::from_secs(10),
        message_bytes: sc.message_bytes.unwrap_or(64),
        hlog,
        progress: true,
        start_at: None,
    }
}

/// What a process used between two readings, per 1,000 of `requests`.
pub fn usage_between(
    before: crate::targets::process::Usage,
    after: crate::targets::process::Usage,
    requests: u64,
) -> ProcessUsage {
    let cpu_s = (after.cpu_s - before.cpu_s).max(0.0);
    ProcessUsage {
        cpu_s,
        cpu_s_per_1k_requests: if requests > 0 {
            cpu_s * 1000.0 / requests as f64
        } else {
            0.0
        },
        rss_bytes: after.rss_bytes,
        peak_rss_bytes: after.peak_rss_bytes,
    }
}

/// Measures one scenario against one destination: a warm-up run, then the measured run with the
/// gateway process read from /proc before and after.
pub fn measure(mut spec: LoadSpec, pid: Option<u32>) -> Result<LoadResult, String> {
    let warmup = spec.warmup;
    if !warmup.is_zero() {
        let mut warm = spec.clone();
        warm.duration = Some(warm.warmup);
        warm.warmup = Duration::ZERO;
        warm.hlog = None;
        warm.progress = false;
        crate::load::run(warm)?;
        spec.warmup = Duration::ZERO;
    }
    let before = pid.and_then(usage);
    let mut result = crate::load::run(spec)?;
    let after = pid.and_then(usage);
    result.gateway = before.zip(after).map(|(b, a)| usage_between(b, a, result.requests));
    result.settings.warmup_s = warmup.as_secs_f64();
    Ok(result)
}

/// The order destinations run in for repetition `rep`: rotated by `rep`.
pub fn rotation<T: Clone>(items: &[T], rep: u32) -> Vec<T> {
    if items.is_empty() {
        return Vec::new();
    }
    let k = rep as usize % items.len();
    items[k..].iter().chain(&items[..k]).cloned().collect()
}

/// A target that is up with the load suite's config: its name, ports and process.
struct Up {
    name: String,
    ports: BTreeMap<u32, SocketAddr>,
    pid: Option<u32>,
}

/// Everything the load phase needs from `run`.
#[derive(Debug)]
pub struct LoadContext<'a> {
    pub work_dir: &'a Path,
    /// The meshbench binary, for echo child processes.
    pub bin: PathBuf,
    pub scale: Scale,
    pub repeat: u32,
    /// Interval logs go here as `<target>.<scenario>[.<rep>].hlog`.
    pub hlog_dir: Option<PathBuf>,
    /// Print each result as it is measured (text output).
    pub print: bool,
}

/// Runs a load suite on every target and the direct baseline. Targets that cannot run here are
/// reported in `skipped`; a target that fails to start is an error.
pub fn run_suite(
    rt: &tokio::runtime::Runtime,
    suite: &Suite,
    targets: &mut [Box<dyn Target>],
    cx: &LoadContext,
    skipped: &mut Vec<(String, String)>,
) -> Result<Vec<LoadResult>, String> {
    let placement = Placement::default();
    let certs = placement.certs_dir(cx.work_dir, &suite.name);
    crate::conform::tls::make_certificates(&suite.certificates, &certs)?;
    let workloads = rt.block_on(workloads::start(
        suite,
        &certs,
        &placement,
        &Launch::Processes(cx.bin.clone()),
    ))?;
    let config = suite.config.replace("${certs}", &certs.display().to_string());
    let labels: BTreeMap<String, String> = if suite.labels.is_empty() {
        [("istio".to_string(), "ingressgateway".to_string())].into()
    } else {
        suite.labels.clone()
    };
    let mut up = Vec::new();
    for t in targets.iter_mut() {
        let name = t.info().name;
        let dir = cx.work_dir.join(format!("{}.{name}", suite.name));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        std::fs::write(dir.join("config.yaml"), &config).map_err(|e| e.to_string())?;
        std::fs::write(dir.join("registry.yaml"), &workloads.registry).map_err(|e| e.to_string())?;
        let spec = StartSpec {
            config_dir: &dir,
            mesh: None,
            labels: &labels,
            ports: &suite.ports,
            role: Role::Gateway,
            network: None,
            host: None,
            capture: false,
        };
        match rt.block_on(t.start(&spec)) {
            Ok(ports) => up.push(Up {
                name,
                ports,
                pid: t.pid(),
            }),
            Err(TargetError::Unavailable(why)) => skipped.push((name, why)),
            Err(TargetError::Failed(e)) => {
                for t in targets.iter_mut() {
                    rt.block_on(t.stop());
                }
                return Err(format!("{name} did not start with load suite {}: {e}", suite.name));
            }
        }
    }
    let results = measure_all(suite, &up, &workloads.addresses, &certs, cx);
    for t in targets.iter_mut() {
        rt.block_on(t.stop());
    }
    drop(workloads);
    results
}

fn measure_all(
    suite: &Suite,
    up: &[Up],
    workload_addrs: &BTreeMap<String, SocketAddr>,
    certs: &Path,
    cx: &LoadContext,
) -> Result<Vec<LoadResult>, String> {
    let mut out = Vec::new();
    // The baseline first, then the targets: rotated every repetition.
    let mut sides: Vec<Option<&Up>> = vec![None];
    sides.extend(up.iter().map(Some));
    for rep in 0..cx.repeat.max(1) {
        for sc in &suite.scenarios {
            for side in rotation(&sides, rep) {
                let (name, addr, pid, gateway) = match side {
                    None => (DIRECT, workload_addrs.get(&sc.service).copied(), None, false),
                    Some(u) => (u.name.as_str(), u.ports.get(&sc.port).copied(), u.pid, true),
                };
                let Some(addr) = addr else {
                    return Err(format!(
                        "scenario {}: {name} has no address for {}",
                        sc.name,
                        if gateway {
                            format!("port {}", sc.port)
                        } else {
                            format!("workload {}", sc.service)
                        }
                    ));
                };
                let hlog = cx.hlog_dir.as_ref().map(|d| {
                    let rep = if cx.repeat > 1 {
                        format!(".{rep}")
                    } else {
                        String::new()
                    };
                    d.join(format!("{name}.{}{rep}.hlog", sc.name))
                });
                let to = Destination { name, addr, gateway };
                eprintln!(
                    "load: {} on {name}{}",
                    sc.name,
                    if cx.repeat > 1 {
                        format!(" (repetition {}/{})", rep + 1, cx.repeat)
                    } else {
                        String::new()
                    }
                );
                let mut r = measure(spec_for(sc, &to, certs, cx.scale, hlog), pid)
                    .map_err(|e| format!("scenario {} on {name}: {e}", sc.name))?;
                r.target = Some(name.to_string());
                r.repetition = rep;
                out.push(r);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::targets::process::Usage;

    #[test]
    fn rotation_moves_the_first_to_the_end_each_repetition() {
        let v = ["direct", "reference", "envoy"];
        assert_eq!(rotation(&v, 0), ["direct", "reference", "envoy"]);
        assert_eq!(rotation(&v, 1), ["reference", "envoy", "direct"]);
        assert_eq!(rotation(&v, 2), ["envoy", "direct", "reference"]);
        assert_eq!(rotation(&v, 3), v);
        assert!(rotation::<u8>(&[], 4).is_empty());
    }

    #[test]
    fn usage_is_per_thousand_requests() {
        let before = Usage {
            cpu_s: 1.0,
            rss_bytes: 1,
            peak_rss_bytes: 1,
        };
        let after = Usage {
            cpu_s: 3.0,
            rss_bytes: 10,
            peak_rss_bytes: 20,
        };
        let u = usage_between(before, after, 4000);
        assert_eq!(u.cpu_s, 2.0);
        assert_eq!(u.cpu_s_per_1k_requests, 0.5);
        assert_eq!((u.rss_bytes, u.peak_rss_bytes), (10, 20));
        assert_eq!(usage_between(before, after, 0).cpu_s_per_1k_requests, 0.0);
    }

    #[test]
    fn specs_follow_the_scenario_and_drop_tls_for_the_baseline() {
        let sc = Scenario {
            name: "https".into(),
            protocol: RequestProtocol::H1,
            port: 443,
            service: "web".into(),
            tls: Some(crate::conform::suite::TlsRequest {
                sni: Some("load.example.com".into()),
                ..Default::default()
            }),
            authority: Some("load.example.com".into()),
            rate: Some(500.0),
            connections: Some(8),
            duration: Some(mesh_model::api::Duration::from_millis(3000)),
            warmup: Some(mesh_model::api::Duration::from_millis(1000)),
            ..Default::default()
        };
        let addr: SocketAddr = "127.0.0.1:4443".parse().unwrap_or_else(|_| unreachable!());
        let gw = Destination {
            name: "reference",
            addr,
            gateway: true,
        };
        let s = spec_for(&sc, &gw, Path::new("/certs"), Scale::QUICK, None);
        assert_eq!(s.url, "https://127.0.0.1:4443/");
        assert_eq!(s.protocol_name(), "h1+tls");
        assert_eq!(s.rate, Some(500.0));
        assert_eq!((s.connections, s.workers), (8, 1));
        assert_eq!(s.duration, Some(Duration::from_millis(1020)));
        assert_eq!(s.warmup, Duration::from_millis(500));
        assert_eq!(s.request.authority, "load.example.com");
        let t = s.tls.unwrap_or_default();
        assert_eq!(t.ca.as_deref(), Some(Path::new("/certs/main-ca.pem")));
        assert_eq!(t.sni.as_deref(), Some("load.example.com"));
        let direct = Destination { gateway: false, ..gw };
        let d = spec_for(&sc, &direct, Path::new("/certs"), Scale::DEFAULT, None);
        assert_eq!((d.url.as_str(), d.tls.is_none()), ("http://127.0.0.1:4443/", true));
        assert_eq!(d.duration, Some(Duration::from_secs(3)));
    }
}
