//! `meshbench load URL | --scenario FILE`: measures a target the way wrk2, oha and h2load do.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use mesh_model::api::Duration as ApiDuration;
use meshbench_report::RunReport;
use serde::Deserialize;

use super::{exit, Output};
use crate::load::spec::{join_host_port, parse_url, LoadSpec, Proto, RequestTemplate, TlsOptions};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Target URL: http://, https://, grpc://, grpcs://, tcp://host:port.
    pub url: Option<String>,
    /// A load scenario (suites/load/*.yaml); flags given here override it.
    #[arg(long)]
    pub scenario: Option<PathBuf>,
    /// h1, h2 (h2c on http://), grpc, tcp, tls-handshake. Default: h1 (grpc for grpc:// URLs, tcp for tcp://).
    #[arg(long, short = 'p')]
    pub protocol: Option<String>,
    /// Requests per second (open loop). Without it: closed loop, maximum throughput.
    #[arg(long, short = 'R')]
    pub rate: Option<f64>,
    /// How long to measure, e.g. 30s, 1m (after the warm-up).
    #[arg(long, short = 'd')]
    pub duration: Option<String>,
    /// Send this many requests instead of running for a duration.
    #[arg(long, short = 'n')]
    pub requests: Option<u64>,
    #[arg(long, short = 'c')]
    pub connections: Option<u32>,
    /// Concurrent streams per connection (h2, grpc).
    #[arg(long)]
    pub streams: Option<u32>,
    /// Worker threads, each with its own connections. Default: one per core.
    #[arg(long, short = 't')]
    pub workers: Option<u32>,
    /// Load applied before measuring starts, e.g. 2s.
    #[arg(long)]
    pub warmup: Option<String>,
    /// Per-request timeout.
    #[arg(long)]
    pub timeout: Option<String>,
    #[arg(long, short = 'm')]
    pub method: Option<String>,
    /// A request header, `name: value`; repeatable.
    #[arg(long = "header", short = 'H')]
    pub headers: Vec<String>,
    /// Request body (for gRPC: the EchoRequest message).
    #[arg(long, short = 'b')]
    pub body: Option<String>,
    #[arg(long)]
    pub body_file: Option<PathBuf>,
    /// Host header / :authority (default: the URL's host and port).
    #[arg(long)]
    pub host: Option<String>,
    /// TCP mode: bytes per message (echoed back by the server).
    #[arg(long)]
    pub message_bytes: Option<usize>,
    /// TLS: server name to send and verify.
    #[arg(long)]
    pub sni: Option<String>,
    /// TLS: CA bundle (PEM) to verify the server with.
    #[arg(long)]
    pub cacert: Option<PathBuf>,
    /// TLS: client certificate (PEM).
    #[arg(long)]
    pub cert: Option<PathBuf>,
    /// TLS: client private key (PEM).
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// TLS: accept any server certificate.
    #[arg(long, short = 'k')]
    pub insecure: bool,
    /// Write the HdrHistogram interval log here.
    #[arg(long)]
    pub hlog: Option<PathBuf>,
    /// Write the run report (JSON) here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// `text` (wrk2 style), `json` or `yaml` (the run report on stdout).
    #[arg(long, short, value_enum, default_value = "text")]
    pub output: Output,
    /// No progress line.
    #[arg(long, short)]
    pub quiet: bool,
    /// A threshold the run must meet, e.g. `p99 < 5ms`, `errors < 0.1%`, `rps >= 0.99 * asked`;
    /// repeatable, added to the scenario's. A failed one exits 1.
    #[arg(long = "threshold")]
    pub thresholds: Vec<String>,
    /// Distributed run: this worker's index, 0-based. Also read from $MESHBENCH_WORKER_INDEX,
    /// $JOB_COMPLETION_INDEX (a Kubernetes Indexed Job) or $MESHBENCH_WORKER_SLOT (a Docker
    /// Swarm replicated job's `{{.Task.Slot}}`).
    #[arg(long, help_heading = "Distributed run")]
    pub worker_index: Option<u32>,
    /// Distributed run: how many workers share the run (each takes rate / N, its own
    /// connections and its part of --requests). Also $MESHBENCH_WORKERS_TOTAL.
    #[arg(long, help_heading = "Distributed run")]
    pub workers_total: Option<u32>,
    /// Distributed run: the wall-clock start every worker waits for (RFC 3339 or Unix seconds).
    /// Also $MESHBENCH_START_AT. Default: now.
    #[arg(long, help_heading = "Distributed run")]
    pub start_at: Option<String>,
    /// Distributed run: the result directory (a shared volume) this worker writes its marker,
    /// report and interval log to. Also $MESHBENCH_RESULTS.
    #[arg(long, help_heading = "Distributed run")]
    pub results: Option<PathBuf>,
}

/// A load scenario file: target, protocol, request, and rate steps.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Scenario {
    pub name: Option<String>,
    pub description: Option<String>,
    pub url: Option<String>,
    pub protocol: Option<String>,
    pub connections: Option<u32>,
    pub streams: Option<u32>,
    pub workers: Option<u32>,
    pub warmup: Option<ApiDuration>,
    pub timeout: Option<ApiDuration>,
    pub request: ScenarioRequest,
    pub message_bytes: Option<usize>,
    /// Run one after another; a step without `rate` is closed loop.
    pub steps: Vec<Step>,
    /// Thresholds every step must meet (`p99 < 5ms`, …).
    pub thresholds: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ScenarioRequest {
    pub method: Option<String>,
    pub host: Option<String>,
    pub headers: std::collections::BTreeMap<String, String>,
    pub body: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Step {
    pub rate: Option<f64>,
    pub duration: Option<ApiDuration>,
    pub requests: Option<u64>,
}

/// Reads a scenario file, with file:line diagnostics for mistakes.
pub fn read_scenario(path: &std::path::Path) -> Result<Scenario, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let sources = mesh_model::load::parse_str(&path.display().to_string(), &text);
    if let Some(p) = sources.problems.first() {
        return Err(format!("{}:{}: {}", p.file, p.line, p.message));
    }
    let doc = sources
        .documents
        .first()
        .ok_or_else(|| format!("{}: empty scenario", path.display()))?;
    let (scenario, problems) = mesh_model::decode::decode_lenient::<Scenario>(doc.root.to_json(), "");
    if !problems.is_empty() {
        let lines: Vec<String> = problems
            .iter()
            .map(|p| {
                let hint = p.hint.as_deref().map(|h| format!(" ({h})")).unwrap_or_default();
                format!(
                    "{}:{}: {}: {}{hint}",
                    path.display(),
                    doc.root.line_of(&p.path),
                    p.path,
                    p.message
                )
            })
            .collect();
        return Err(lines.join("\n"));
    }
    Ok(scenario)
}

fn duration(flag: &str, text: &str) -> Result<Duration, String> {
    ApiDuration::parse(text)
        .map(|d| d.as_std())
        .map_err(|e| format!("--{flag}: {e}"))
}

/// The specs of a run: one per scenario step (one for an ad-hoc run).
pub fn specs(args: &Args) -> Result<Vec<LoadSpec>, String> {
    let scenario = match &args.scenario {
        Some(p) => read_scenario(p)?,
        None => Scenario::default(),
    };
    let url = args
        .url
        .clone()
        .or(scenario.url.clone())
        .ok_or("give a URL, or --scenario with `url`")?;
    let (tls, host, port, path) = parse_url(&url)?;
    let default_proto = match url.split("://").next() {
        Some("grpc" | "grpcs") => "grpc",
        Some("tcp" | "tls") => "tcp",
        _ => "h1",
    };
    let protocol = Proto::parse(
        args.protocol
            .as_deref()
            .or(scenario.protocol.as_deref())
            .unwrap_or(default_proto),
    )?;
    let authority = args.host.clone().or(scenario.request.host.clone()).unwrap_or_else(|| {
        let default_port = if tls { 443 } else { 80 };
        if port == default_port {
            host.clone()
        } else {
            join_host_port(&host, port)
        }
    });
    let body = match (&args.body_file, &args.body) {
        (Some(f), _) => Bytes::from(std::fs::read(f).map_err(|e| format!("cannot read {}: {e}", f.display()))?),
        (None, Some(b)) => Bytes::from(b.clone()),
        (None, None) => Bytes::from(scenario.request.body.clone().unwrap_or_default()),
    };
    let mut headers: Vec<(String, String)> = scenario.request.headers.clone().into_iter().collect();
    for h in &args.headers {
        let (k, v) = h
            .split_once(':')
            .ok_or_else(|| format!("header `{h}` is not `name: value`"))?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let method = args
        .method
        .clone()
        .or(scenario.request.method.clone())
        .unwrap_or_else(|| if body.is_empty() { "GET" } else { "POST" }.to_string());
    let tls_opts = (tls || protocol == Proto::TlsHandshake).then(|| TlsOptions {
        sni: args.sni.clone(),
        ca: args.cacert.clone(),
        cert: args.cert.clone(),
        key: args.key.clone(),
        insecure: args.insecure,
    });
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let warmup = match (&args.warmup, scenario.warmup) {
        (Some(w), _) => duration("warmup", w)?,
        (None, Some(w)) => w.as_std(),
        (None, None) => Duration::ZERO,
    };
    let timeout = match (&args.timeout, scenario.timeout) {
        (Some(t), _) => duration("timeout", t)?,
        (None, Some(t)) => t.as_std(),
        (None, None) => Duration::from_secs(10),
    };
    let base = LoadSpec {
        name: scenario.name.clone().unwrap_or_else(|| "ad-hoc".into()),
        url: url.clone(),
        protocol,
        tls: tls_opts,
        address: join_host_port(&host, port),
        host,
        request: RequestTemplate {
            method,
            path,
            authority,
            headers,
            body,
        },
        connections: args.connections.or(scenario.connections).unwrap_or(16),
        streams: args.streams.or(scenario.streams).unwrap_or(1),
        workers: args.workers.or(scenario.workers).unwrap_or(cores),
        rate: None,
        duration: None,
        requests: None,
        warmup,
        timeout,
        message_bytes: args.message_bytes.or(scenario.message_bytes).unwrap_or(64),
        hlog: args.hlog.clone(),
        progress: !args.quiet,
        start_at: None,
    };
    let adhoc_duration = args.duration.as_deref().map(|d| duration("duration", d)).transpose()?;
    let steps: Vec<Step> =
        if scenario.steps.is_empty() || args.rate.is_some() || adhoc_duration.is_some() || args.requests.is_some() {
            vec![Step {
                rate: args.rate,
                duration: None,
                requests: args.requests,
            }]
        } else {
            scenario.steps
        };
    let n = steps.len();
    let mut out = Vec::new();
    for (i, step) in steps.into_iter().enumerate() {
        let mut spec = base.clone();
        spec.rate = step.rate;
        spec.requests = step.requests;
        spec.duration = step.duration.map(|d| d.as_std()).or(adhoc_duration);
        if spec.duration.is_none() && spec.requests.is_none() {
            spec.duration = Some(Duration::from_secs(10));
        }
        if n > 1 {
            spec.name = format!("{} [step {}]", base.name, i + 1);
            spec.hlog = base
                .hlog
                .as_ref()
                .map(|p| p.with_extension(format!("step{}.hlog", i + 1)));
            if i > 0 {
                spec.warmup = Duration::ZERO;
            }
        }
        spec.check()?;
        out.push(spec);
    }
    Ok(out)
}

/// The thresholds of a run: the scenario's, then the command line's.
fn thresholds(args: &Args) -> Result<Vec<crate::gate::threshold::Threshold>, String> {
    let mut all = match &args.scenario {
        Some(p) => read_scenario(p)?.thresholds,
        None => Vec::new(),
    };
    all.extend(args.thresholds.iter().cloned());
    crate::gate::threshold::parse_all(&all)
}

pub fn run(args: &Args) -> u8 {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let worker = match crate::distribute::worker::worker_mode(args, &env) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::USAGE;
        }
    };
    let (specs, thresholds) =
        match crate::distribute::worker::run_specs(args, worker.as_ref()).and_then(|s| Ok((s, thresholds(args)?))) {
            Ok(x) => x,
            Err(e) => {
                eprintln!("error: {e}");
                // A worker that cannot start says why where `collect` looks.
                if let Some(w) = &worker {
                    let _ = std::fs::create_dir_all(&w.results);
                    let path = crate::distribute::error_file(&w.results, w.share.index);
                    let _ = crate::distribute::write_atomic(&path, e.as_bytes());
                }
                return exit::USAGE;
            }
        };
    crate::load::install_ctrl_c();
    if let Some(w) = &worker {
        if let Err(e) = crate::distribute::worker::mark_started(w) {
            eprintln!("error: {e}");
            return exit::IO;
        }
    }
    let mut report = RunReport::new(crate::meta::run_meta());
    for (step, spec) in specs.into_iter().enumerate() {
        let lag = match &worker {
            Some(w) if step == 0 => crate::distribute::lag_ms(w.start_at, std::time::SystemTime::now()),
            _ => 0.0,
        };
        match crate::load::run(spec) {
            Ok(mut result) => {
                result.thresholds = thresholds.iter().map(|t| t.check(&result, None)).collect();
                if let Some(w) = &worker {
                    crate::distribute::worker::stamp(&mut result, w, lag);
                }
                if args.output == Output::Text {
                    print!("{}", meshbench_report::text::render_load(&result));
                }
                report.load.push(result);
            }
            Err(e) => {
                eprintln!("error: {e}");
                if let Some(w) = &worker {
                    let _ = crate::distribute::write_atomic(
                        &crate::distribute::error_file(&w.results, w.share.index),
                        e.as_bytes(),
                    );
                }
                return exit::USAGE;
            }
        }
    }
    if let Some(w) = &worker {
        let path = crate::distribute::result_file(&w.results, w.share.index);
        let written = serde_json::to_vec_pretty(&report)
            .map_err(|e| e.to_string())
            .and_then(|bytes| crate::distribute::write_atomic(&path, &bytes));
        if let Err(e) = written {
            eprintln!("error: {e}");
            return exit::IO;
        }
    }
    if let Some(path) = &args.out {
        if let Err(e) = meshbench_report::write::json(path, &report) {
            eprintln!("error: cannot write {}: {e}", path.display());
            return exit::IO;
        }
    }
    if args.output != Output::Text {
        let printed = super::emit(&report, args.output);
        if printed != exit::OK {
            return printed;
        }
    }
    // A threshold that failed, or a run in which every request failed, fails the command.
    let failed = report
        .load
        .iter()
        .any(|r| crate::run::failed(r) || r.thresholds.iter().any(|t| !t.passed));
    if failed {
        return exit::INVALID;
    }
    exit::OK
}
