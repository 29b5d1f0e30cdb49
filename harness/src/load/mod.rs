//! The load generator: per-core workers that own their connections and histograms, open loop
//! (wrk2's intended-start rule) or closed loop, merged exactly by an aggregator that writes one
//! interval per second to the HdrHistogram log and the time series. Memory does not grow with run
//! length: only the current second and the running totals are kept.

pub mod client;
pub mod hlog;
pub mod schedule;
pub mod spec;
pub mod stats;
mod worker;

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use meshbench_report::{EncodedHistograms, GeneratorUsage, LoadMode, LoadResult, LoadSettings, SeriesPoint};

use self::spec::{LoadSpec, Proto};
use self::stats::{encode, ladder, percentiles, IntervalStats};
use self::worker::{Msg, Shared};

/// A worker busier than this (CPU time over wall time) may have been the bottleneck.
const SATURATED: f64 = 0.9;

/// Set by Ctrl-C; a run in progress stops early and still reports what it measured.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Whether Ctrl-C (or SIGTERM in a worker) cut the run short.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

/// Installs the Ctrl-C (and SIGTERM) handler once (a small thread waiting on the signal).
pub fn install_ctrl_c() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = std::thread::Builder::new().name("ctrl-c".into()).spawn(|| {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            rt.block_on(async {
                // SIGTERM too: an orchestrator stopping a worker gets what it measured so far.
                let term = async {
                    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                        Ok(mut s) => s.recv().await,
                        Err(_) => std::future::pending().await,
                    }
                };
                let stopped = tokio::select! {
                    c = tokio::signal::ctrl_c() => c.is_ok(),
                    t = term => t.is_some(),
                };
                if stopped {
                    INTERRUPTED.store(true, Ordering::SeqCst);
                }
            });
        });
    });
}

fn resolve(address: &str) -> Result<std::net::SocketAddr, String> {
    use std::net::ToSocketAddrs;
    address
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {address}: {e}"))?
        .next()
        .ok_or_else(|| format!("{address} resolves to no address"))
}

fn tls_setup(
    spec: &LoadSpec,
) -> Result<Option<(Arc<rustls::ClientConfig>, rustls::pki_types::ServerName<'static>)>, String> {
    let Some(opts) = &spec.tls else { return Ok(None) };
    let alpn: &[&str] = match spec.protocol {
        Proto::H2 | Proto::Grpc => &["h2"],
        Proto::H1 | Proto::TlsHandshake => &["http/1.1"],
        Proto::Tcp => &[],
    };
    let config = client::tls::client_config(opts, alpn)?;
    let name = client::tls::server_name(opts, &spec.host)?;
    Ok(Some((config, name)))
}

/// Runs one load test and returns its result.
pub fn run(spec: LoadSpec) -> Result<LoadResult, String> {
    spec.check()?;
    let addr = resolve(&spec.address)?;
    let tls = tls_setup(&spec)?;
    let workers = spec.workers.min(spec.connections).max(1);
    // A short lead so that every worker starts on the same schedule; a distributed worker waits
    // for the wall-clock start it shares with the others.
    let wait = spec
        .start_at
        .and_then(|t| t.duration_since(SystemTime::now()).ok())
        .unwrap_or_default();
    let start = Instant::now() + wait.max(Duration::from_millis(20));
    let record_from = start + spec.warmup;
    let shared = Arc::new(Shared {
        addr,
        start,
        record_from,
        end: spec.duration.map(|d| record_from + d),
        stop: AtomicBool::new(false),
        remaining: spec.requests.map(|n| AtomicI64::new(n.min(i64::MAX as u64) as i64)),
        tls,
        spec,
    });
    let (tx, rx) = mpsc::channel();
    let mut handles = Vec::new();
    for w in 0..workers {
        let conns: Vec<u32> = (0..shared.spec.connections).filter(|c| c % workers == w).collect();
        let (shared, tx) = (shared.clone(), tx.clone());
        let h = std::thread::Builder::new()
            .name(format!("meshbench-worker-{w}"))
            .spawn(move || worker::run(shared, w, conns, tx))
            .map_err(|e| format!("cannot start a worker thread: {e}"))?;
        handles.push(h);
    }
    drop(tx);
    let outcome = aggregate(&shared, workers, rx);
    for h in handles {
        let _ = h.join();
    }
    outcome.map(|a| a.into_result(&shared.spec, workers))
}

/// What the aggregator collected.
struct Aggregate {
    totals: IntervalStats,
    series: Vec<SeriesPoint>,
    measured: Duration,
    cpu: Duration,
    max_busy: f64,
}

/// Merges the workers' intervals in order: interval `seq` is final when every worker has sent it
/// or finished. Each final interval goes to the totals, the time series and the interval log.
fn aggregate(shared: &Shared, workers: u32, rx: mpsc::Receiver<Msg>) -> Result<Aggregate, String> {
    let spec = &shared.spec;
    // Interval 0 begins when recording does (after the warm-up).
    let recording = SystemTime::now() + shared.record_from.saturating_duration_since(Instant::now());
    let mut log = hlog::Writer::create(spec.hlog.as_deref(), recording, spec.rate.is_some())?;
    let progress = Progress::new(spec);
    let mut pending: BTreeMap<u64, IntervalStats> = BTreeMap::new();
    let mut sent_up_to: Vec<Option<u64>> = vec![None; workers as usize];
    let mut done = vec![false; workers as usize];
    let mut next_final = 0u64;
    let mut totals = IntervalStats::default();
    let mut series = Vec::new();
    let (mut cpu0, mut cpu_end, mut max_busy) = (None, None, 0.0f64);
    let mut finished_at = Instant::now();
    while done.iter().any(|d| !d) {
        if INTERRUPTED.load(Ordering::Relaxed) {
            shared.stop.store(true, Ordering::Relaxed);
        }
        if cpu0.is_none() && Instant::now() >= shared.record_from {
            cpu0 = Some(worker::process_cpu());
        }
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(Msg::Interval { worker, seq, stats }) => {
                pending.entry(seq).or_default().add(&stats);
                sent_up_to[worker as usize] = Some(seq);
            }
            Ok(Msg::Done { worker, cpu, wall }) => {
                done[worker as usize] = true;
                finished_at = Instant::now();
                max_busy = max_busy.max(cpu.as_secs_f64() / wall.as_secs_f64().max(1e-9));
                if done.iter().all(|d| *d) {
                    cpu_end = Some(worker::process_cpu());
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        // Final intervals: every worker has moved past them or is done.
        while (0..workers as usize).all(|w| done[w] || sent_up_to[w].is_some_and(|s| s >= next_final)) {
            let Some(interval) = pending.remove(&next_final) else {
                break;
            };
            finish_interval(&mut log, &mut totals, &mut series, next_final, &interval, &progress)?;
            next_final += 1;
        }
    }
    for (seq, interval) in std::mem::take(&mut pending) {
        finish_interval(&mut log, &mut totals, &mut series, seq, &interval, &progress)?;
    }
    progress.finish();
    log.finish()?;
    let cpu = match (cpu0, cpu_end) {
        (Some(a), Some(b)) => b.saturating_sub(a),
        _ => Duration::ZERO,
    };
    let measured = finished_at.saturating_duration_since(shared.record_from);
    let measured = match shared.end {
        // A duration run is measured over its duration (in-flight requests at the end finish after it).
        Some(end) if !shared.stop.load(Ordering::Relaxed) => end
            .saturating_duration_since(shared.record_from)
            .max(Duration::from_millis(1)),
        _ => measured.max(Duration::from_millis(1)),
    };
    Ok(Aggregate {
        totals,
        series,
        measured,
        cpu,
        max_busy,
    })
}

fn finish_interval(
    log: &mut hlog::Writer,
    totals: &mut IntervalStats,
    series: &mut Vec<SeriesPoint>,
    seq: u64,
    interval: &IntervalStats,
    progress: &Progress,
) -> Result<(), String> {
    totals.add(interval);
    log.write(seq, interval)?;
    let p = percentiles(&interval.corrected);
    let point = SeriesPoint {
        t_s: (seq + 1) as f64,
        requests: interval.requests,
        rps: interval.requests as f64,
        errors: interval.errors,
        p50_us: p.p50,
        p99_us: p.p99,
    };
    progress.update(&point, totals);
    series.push(point);
    Ok(())
}

impl Aggregate {
    fn into_result(self, spec: &LoadSpec, workers: u32) -> LoadResult {
        let t = &self.totals;
        let open = spec.rate.is_some();
        let secs = self.measured.as_secs_f64();
        let rps = t.requests as f64 / secs;
        let cpu_s = self.cpu.as_secs_f64();
        let saturated = self.max_busy >= SATURATED;
        let mut warnings = Vec::new();
        if saturated {
            warnings.push(format!(
                "the generator may be the bottleneck: a worker was busy {:.0}% of the time; add --workers or lower the load",
                self.max_busy * 100.0
            ));
        }
        if let Some(asked) = spec.rate {
            if rps < asked * 0.99 && spec.requests.is_none() {
                warnings.push(format!(
                    "achieved {rps:.1} rps, {:.1}% below the asked {asked} rps",
                    (1.0 - rps / asked) * 100.0
                ));
            }
        }
        if INTERRUPTED.load(Ordering::Relaxed) {
            warnings.push("interrupted: the results cover the time until Ctrl-C".into());
        }
        LoadResult {
            scenario: spec.name.clone(),
            target: None,
            repetition: 0,
            settings: LoadSettings {
                url: spec.url.clone(),
                protocol: spec.protocol_name().into(),
                mode: if open { LoadMode::Open } else { LoadMode::Closed },
                rate: spec.rate,
                connections: spec.connections,
                streams: spec.streams,
                workers,
                duration_s: spec.duration.map(|d| d.as_secs_f64()),
                requests: spec.requests,
                warmup_s: spec.warmup.as_secs_f64(),
                method: spec.request.method.clone(),
                request_body_bytes: spec.request.body.len() as u64,
                timeout_s: spec.timeout.as_secs_f64(),
            },
            duration_s: secs,
            requests: t.requests,
            errors: t.errors,
            late: t.late,
            rps,
            asked_rps: spec.rate,
            latency_us: percentiles(&t.corrected),
            latency_uncorrected_us: open.then(|| percentiles(&t.uncorrected)),
            ladder_us: ladder(&t.corrected),
            status_codes: t.status.clone(),
            error_classes: t.error_classes.iter().map(|(k, v)| (k.name(), *v)).collect(),
            time_series: self.series,
            histograms: EncodedHistograms {
                encoding: "hdrhistogram-v2-deflate-base64".into(),
                corrected: encode(&t.corrected),
                uncorrected: open.then(|| encode(&t.uncorrected)),
            },
            generator: GeneratorUsage {
                cpu_s,
                requests_per_cpu_s: if cpu_s > 0.0 { t.requests as f64 / cpu_s } else { 0.0 },
                max_worker_busy: self.max_busy,
                saturated,
            },
            gateway: None,
            thresholds: Vec::new(),
            warnings,
            distribution: None,
        }
    }
}

/// A progress line on a terminal (rate, p99 so far, errors, time left); nothing otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    by_requests: bool,
}

impl Progress {
    fn new(spec: &LoadSpec) -> Progress {
        if !spec.progress || !std::io::stderr().is_terminal() {
            return Progress {
                bar: None,
                by_requests: false,
            };
        }
        let bar = match (spec.duration, spec.requests) {
            (Some(d), _) => indicatif::ProgressBar::new(d.as_secs().max(1)),
            (None, Some(n)) => indicatif::ProgressBar::new(n),
            (None, None) => indicatif::ProgressBar::no_length(),
        };
        if let Ok(style) = indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {msg}, {eta} left") {
            bar.set_style(style);
        }
        Progress {
            bar: Some(bar),
            by_requests: spec.duration.is_none(),
        }
    }

    fn update(&self, point: &SeriesPoint, totals: &IntervalStats) {
        if let Some(bar) = &self.bar {
            let p99 = percentiles(&totals.corrected).p99;
            bar.set_message(format!(
                "{:.0} rps, p99 {}, {} errors",
                point.rps,
                meshbench_report::text::us(p99),
                totals.errors
            ));
            if self.by_requests {
                bar.set_position(totals.requests);
            } else {
                bar.inc(1);
            }
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
