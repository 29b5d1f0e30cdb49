//! `collect`: the workers' results in one report. Histograms add exactly; every worker that did
//! not deliver its share on time is named, and the merged run is then marked incomplete.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use hdrhistogram::Histogram;
use meshbench_report::{Distribution, LoadResult, RunReport, SeriesPoint, WorkerRow, WorkerState};

use super::{error_file, hlog_file, result_file, started_file, RunPlan, Started, PLAN_FILE};
use crate::load::hlog;
use crate::load::stats::{decode, encode, histogram, ladder, percentiles};

/// When a worker counts as late or saturated.
#[derive(Debug, Clone, Copy)]
pub struct Tolerance {
    /// A worker that began its schedule later than this after the shared start.
    pub late: Duration,
    /// A worker whose busiest thread was at least this busy (CPU over wall time).
    pub busy: f64,
}

impl Default for Tolerance {
    fn default() -> Self {
        Tolerance {
            late: Duration::from_secs(1),
            busy: 0.9,
        }
    }
}

/// What one worker left in the result directory.
#[derive(Debug)]
enum Found {
    Result(Box<RunReport>),
    Error(String),
    Started(Started),
    Nothing,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, String> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

fn find(dir: &Path, index: u32) -> Result<Found, String> {
    if let Some(report) = read_json::<RunReport>(&result_file(dir, index))? {
        return Ok(Found::Result(Box::new(report)));
    }
    match std::fs::read_to_string(error_file(dir, index)) {
        Ok(text) => return Ok(Found::Error(text.trim().to_string())),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(format!("cannot read {}: {e}", error_file(dir, index).display()))
        }
        Err(_) => {}
    }
    Ok(match read_json::<Started>(&started_file(dir, index))? {
        Some(s) => Found::Started(s),
        None => Found::Nothing,
    })
}

/// How many workers the run had: the coordinator's plan, else what the workers' files say.
fn workers_total(dir: &Path, plan: Option<&RunPlan>) -> Result<u32, String> {
    if let Some(p) = plan {
        return Ok(p.workers);
    }
    let entries = std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let mut total = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("worker-") && name.ends_with(".started.json") {
            if let Some(s) = read_json::<Started>(&entry.path())? {
                total = total.max(s.total);
            }
        }
    }
    if total == 0 {
        return Err(format!(
            "{}: no {PLAN_FILE} and no worker files: is this the directory the workers wrote to?",
            dir.display()
        ));
    }
    Ok(total)
}

/// Reads a result directory and merges it into one report (`expected` overrides the plan's count).
pub fn collect(dir: &Path, expected: Option<u32>, tol: Tolerance) -> Result<RunReport, String> {
    let plan = read_json::<RunPlan>(&dir.join(PLAN_FILE))?;
    let total = match expected {
        Some(n) => n,
        None => workers_total(dir, plan.as_ref())?,
    };
    let mut found = Vec::new();
    for i in 0..total {
        found.push(find(dir, i)?);
    }
    let mut merged = merge(dir, &found, tol)?;
    if let Some(p) = &plan {
        for l in &mut merged.load {
            if let Some(d) = &mut l.distribution {
                d.start_at.clone_from(&p.start_at);
            }
        }
    }
    Ok(merged)
}

/// The row of a worker that left no result.
fn absent_row(index: u32, found: &Found) -> WorkerRow {
    let (state, host, message) = match found {
        Found::Error(e) => (WorkerState::Failed, String::new(), format!("failed: {e}")),
        Found::Started(s) => (
            WorkerState::Missing,
            s.host.clone(),
            format!(
                "started on {} (pid {}) at {} but left no result: killed, or still running",
                s.host, s.pid, s.at
            ),
        ),
        _ => (
            WorkerState::Missing,
            String::new(),
            "never started: it left no file".to_string(),
        ),
    };
    WorkerRow {
        index,
        state,
        host,
        requests: 0,
        errors: 0,
        rps: 0.0,
        p99_us: 0,
        start_lag_ms: 0.0,
        max_busy: 0.0,
        message: Some(message),
    }
}

/// The row of a worker's result for one step, judged against the tolerance.
fn result_row(index: u32, host: &str, r: &LoadResult, tol: Tolerance) -> WorkerRow {
    let lag = r.distribution.as_ref().map_or(0.0, |d| d.start_lag_ms);
    let busy = r.generator.max_worker_busy;
    // A worker says itself when it did not run to its end; older results only by their warning.
    let interrupted =
        r.distribution.as_ref().is_some_and(|d| !d.complete) || r.warnings.iter().any(|w| w.starts_with("interrupted"));
    let (state, message) = if interrupted {
        (WorkerState::Failed, Some("interrupted before its end".to_string()))
    } else if lag > tol.late.as_secs_f64() * 1000.0 {
        (
            WorkerState::Late,
            Some(format!(
                "started {:.0} ms after the shared start (tolerance {} ms)",
                lag,
                tol.late.as_millis()
            )),
        )
    } else if busy >= tol.busy {
        (
            WorkerState::Saturated,
            Some(format!(
                "its busiest thread was {:.0}% busy: the generator may have been the bottleneck",
                busy * 100.0
            )),
        )
    } else {
        (WorkerState::Ok, None)
    };
    WorkerRow {
        index,
        state,
        host: host.to_string(),
        requests: r.requests,
        errors: r.errors,
        rps: r.rps,
        p99_us: r.latency_us.p99,
        start_lag_ms: lag,
        max_busy: busy,
        message,
    }
}

fn add(into: &mut Histogram<u64>, encoded: &str, worker: u32) -> Result<(), String> {
    let h = decode(encoded).map_err(|e| format!("worker {worker}: {e}"))?;
    into.auto(true);
    into.add(&h)
        .map_err(|e| format!("worker {worker}: cannot add its histogram: {e:?}"))
}

fn sum_into(into: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>) {
    for (k, v) in from {
        *into.entry(k.clone()).or_default() += v;
    }
}

/// Per-second points of the merged run: counts added, percentiles from the workers' interval
/// logs put on one time axis (exact); without every log, the workers' highest (an upper bound).
fn series(parts: &[(u32, &LoadResult)], logs: Option<&[hlog::Log]>) -> Vec<SeriesPoint> {
    let timeline = logs.map(|l| hlog::timeline(l).1);
    let mut points: BTreeMap<u64, SeriesPoint> = BTreeMap::new();
    for (_, r) in parts {
        for p in &r.time_series {
            let key = p.t_s.round() as u64;
            let e = points.entry(key).or_insert(SeriesPoint {
                t_s: p.t_s,
                requests: 0,
                rps: 0.0,
                errors: 0,
                p50_us: 0,
                p99_us: 0,
            });
            e.requests += p.requests;
            e.rps += p.rps;
            e.errors += p.errors;
            e.p50_us = e.p50_us.max(p.p50_us);
            e.p99_us = e.p99_us.max(p.p99_us);
        }
    }
    if let Some(t) = timeline {
        for (key, point) in &mut points {
            // Point t_s = n covers the n-th second, interval n - 1.
            if let Some(h) = t.get(&(String::new(), key.saturating_sub(1))) {
                let p = percentiles(h);
                (point.p50_us, point.p99_us) = (p.p50, p.p99);
            }
        }
    }
    points.into_values().collect()
}

/// Merges one step over the workers that delivered it.
fn merge_step(parts: &[(u32, &LoadResult)], logs: Option<&[hlog::Log]>) -> Result<LoadResult, String> {
    let Some((_, first)) = parts.first() else {
        return Err("no worker delivered a result".into());
    };
    let mut out = (*first).clone();
    let (mut corrected, mut uncorrected) = (histogram(), histogram());
    let open = first.histograms.uncorrected.is_some();
    out.status_codes.clear();
    out.error_classes.clear();
    out.warnings.clear();
    out.thresholds.clear();
    let (mut requests, mut errors, mut late, mut rps, mut cpu) = (0, 0, 0, 0.0, 0.0);
    let (mut connections, mut threads, mut duration, mut busy) = (0, 0, 0.0f64, 0.0f64);
    let (mut rate, mut asked, mut count) = (None::<f64>, None::<f64>, None::<u64>);
    for (w, r) in parts {
        add(&mut corrected, &r.histograms.corrected, *w)?;
        if let (true, Some(u)) = (open, &r.histograms.uncorrected) {
            add(&mut uncorrected, u, *w)?;
        }
        sum_into(&mut out.status_codes, &r.status_codes);
        sum_into(&mut out.error_classes, &r.error_classes);
        requests += r.requests;
        errors += r.errors;
        late += r.late;
        rps += r.rps;
        cpu += r.generator.cpu_s;
        connections += r.settings.connections;
        threads += r.settings.workers;
        duration = duration.max(r.duration_s);
        busy = busy.max(r.generator.max_worker_busy);
        rate = r.settings.rate.map(|x| x + rate.unwrap_or(0.0));
        asked = r.asked_rps.map(|x| x + asked.unwrap_or(0.0));
        count = r.settings.requests.map(|x| x + count.unwrap_or(0));
        for warning in &r.warnings {
            out.warnings.push(format!("worker {w}: {warning}"));
        }
    }
    out.settings.rate = rate;
    out.settings.connections = connections;
    out.settings.workers = threads;
    out.settings.requests = count;
    out.duration_s = duration;
    (out.requests, out.errors, out.late, out.rps, out.asked_rps) = (requests, errors, late, rps, asked);
    out.latency_us = percentiles(&corrected);
    out.latency_uncorrected_us = open.then(|| percentiles(&uncorrected));
    out.ladder_us = ladder(&corrected);
    out.histograms.corrected = encode(&corrected);
    out.histograms.uncorrected = open.then(|| encode(&uncorrected));
    out.generator.cpu_s = cpu;
    out.generator.requests_per_cpu_s = if cpu > 0.0 { requests as f64 / cpu } else { 0.0 };
    out.generator.max_worker_busy = busy;
    out.generator.saturated = parts.iter().any(|(_, r)| r.generator.saturated);
    out.time_series = series(parts, logs);
    if logs.is_none() {
        out.warnings
            .push("an interval log is missing: per-second percentiles are the workers' highest, not merged".into());
    }
    Ok(out)
}

/// The interval logs of step `step` (of `steps`) of the workers in `indices`, if all are there.
fn step_logs(dir: &Path, indices: &[u32], step: usize, steps: usize) -> Option<Vec<hlog::Log>> {
    indices
        .iter()
        .map(|i| {
            let base = hlog_file(dir, *i);
            let path = if steps > 1 {
                base.with_extension(format!("step{}.hlog", step + 1))
            } else {
                base
            };
            hlog::read(&path).ok()
        })
        .collect()
}

fn merge(dir: &Path, found: &[Found], tol: Tolerance) -> Result<RunReport, String> {
    let total = found.len() as u32;
    let delivered: Vec<(u32, &RunReport)> = found
        .iter()
        .zip(0..)
        .filter_map(|(f, i)| match f {
            Found::Result(r) => Some((i, &**r)),
            _ => None,
        })
        .collect();
    let Some((_, first)) = delivered.first() else {
        let rows: Vec<String> = found
            .iter()
            .zip(0..)
            .filter_map(|(f, i)| absent_row(i, f).message.map(|m| format!("worker {i}: {m}")))
            .collect();
        return Err(format!("no worker delivered a result:\n  {}", rows.join("\n  ")));
    };
    let steps = first.load.len();
    let mut report = RunReport::new(first.meta.clone());
    report.meta.command = std::env::args().collect();
    report.targets = first.targets.clone();
    for step in 0..steps {
        let mut rows = Vec::new();
        let mut parts = Vec::new();
        for (f, i) in found.iter().zip(0..) {
            match f {
                Found::Result(r) => match r.load.get(step) {
                    Some(l) => {
                        rows.push(result_row(i, &r.meta.host, l, tol));
                        parts.push((i, l));
                    }
                    None => rows.push(WorkerRow {
                        message: Some(format!("its result has {} step(s), not {}", r.load.len(), steps)),
                        ..absent_row(i, &Found::Error(String::new()))
                    }),
                },
                other => rows.push(absent_row(i, other)),
            }
        }
        let indices: Vec<u32> = parts.iter().map(|(i, _)| *i).collect();
        let logs = step_logs(dir, &indices, step, steps);
        let mut merged = merge_step(&parts, logs.as_deref())?;
        let problems: Vec<String> = rows
            .iter()
            .filter(|r| r.state != WorkerState::Ok)
            .map(|r| format!("worker {}: {}", r.index, r.message.as_deref().unwrap_or("not ok")))
            .collect();
        merged
            .warnings
            .splice(0..0, problems.iter().map(|p| format!("incomplete: {p}")));
        merged.distribution = Some(Distribution {
            workers_total: total,
            worker_index: None,
            start_at: first.load[step]
                .distribution
                .as_ref()
                .map(|d| d.start_at.clone())
                .unwrap_or_default(),
            start_lag_ms: rows.iter().map(|r| r.start_lag_ms).fold(0.0, f64::max),
            complete: problems.is_empty(),
            problems,
            workers: rows,
        });
        report.load.push(merged);
    }
    Ok(report)
}

/// Whether every load result of a report that was split over workers covers the whole run.
pub fn complete(report: &RunReport) -> bool {
    report
        .load
        .iter()
        .all(|l| l.distribution.as_ref().is_none_or(|d| d.complete))
}
