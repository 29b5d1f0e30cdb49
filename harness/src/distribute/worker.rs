//! A worker's side of a distributed run: which share it takes (from its flags or its
//! orchestrator's environment), the marker it leaves when it begins, and what it adds to its
//! results.

use std::path::PathBuf;
use std::time::SystemTime;

use super::Share;
use crate::cli::load::{specs, Args};
use crate::load::spec::LoadSpec;

/// A worker's part in a distributed run.
#[derive(Debug, Clone)]
pub struct WorkerMode {
    pub share: Share,
    pub start_at: SystemTime,
    pub results: PathBuf,
}

/// The worker settings from the flags, else the orchestrator's environment; None for a plain run.
pub fn worker_mode(args: &Args, env: &dyn Fn(&str) -> Option<String>) -> Result<Option<WorkerMode>, String> {
    let number = |name: &str| -> Result<Option<u32>, String> {
        env(name)
            .map(|v| {
                v.trim()
                    .parse::<u32>()
                    .map_err(|_| format!("${name}=`{v}` is not a number"))
            })
            .transpose()
    };
    let Some(total) = args
        .workers_total
        .map(Ok)
        .or_else(|| number("MESHBENCH_WORKERS_TOTAL").transpose())
        .transpose()?
    else {
        if args.worker_index.is_some() || args.results.is_some() || args.start_at.is_some() {
            return Err(
                "--worker-index, --start-at and --results belong to a distributed run: give --workers-total".into(),
            );
        }
        return Ok(None);
    };
    // A Swarm replicated job numbers its tasks' slots from 0, and its templates render slot 0
    // as the node ID (swarmkit's fallback for global services), so a slot that is not a number
    // is slot 0.
    let slot = env("MESHBENCH_WORKER_SLOT").map(|s| s.trim().parse::<u32>().unwrap_or(0));
    let index = match args.worker_index {
        Some(i) => i,
        None => number("MESHBENCH_WORKER_INDEX")?
            .or(number("JOB_COMPLETION_INDEX")?)
            .or(slot)
            .ok_or("a distributed worker needs --worker-index (or $MESHBENCH_WORKER_INDEX, $JOB_COMPLETION_INDEX)")?,
    };
    let results = args
        .results
        .clone()
        .or_else(|| env("MESHBENCH_RESULTS").map(PathBuf::from))
        .ok_or("a distributed worker needs --results DIR (or $MESHBENCH_RESULTS)")?;
    let start_at = match args.start_at.clone().or_else(|| env("MESHBENCH_START_AT")) {
        Some(t) => super::parse_time(&t).map_err(|e| format!("--start-at: {e}"))?,
        None => SystemTime::now(),
    };
    Ok(Some(WorkerMode {
        share: super::Share::new(index, total)?,
        start_at,
        results,
    }))
}

/// The specs of a run, narrowed to a worker's share when it is one.
pub fn run_specs(args: &Args, worker: Option<&WorkerMode>) -> Result<Vec<LoadSpec>, String> {
    let Some(w) = worker else { return specs(args) };
    let mut args = args.clone();
    args.hlog = Some(super::hlog_file(&w.results, w.share.index));
    let mut all = specs(&args)?;
    for spec in &mut all {
        w.share.apply(spec)?;
    }
    if let Some(first) = all.first_mut() {
        first.start_at = Some(w.start_at);
    }
    Ok(all)
}

/// A worker's marker that it began (before it waits for the start time).
pub fn mark_started(w: &WorkerMode) -> Result<(), String> {
    std::fs::create_dir_all(&w.results).map_err(|e| format!("cannot create {}: {e}", w.results.display()))?;
    let started = super::Started {
        index: w.share.index,
        total: w.share.total,
        host: crate::meta::run_meta().host,
        pid: std::process::id(),
        at: super::format_time(SystemTime::now()),
    };
    let text = serde_json::to_vec_pretty(&started).map_err(|e| e.to_string())?;
    super::write_atomic(&super::started_file(&w.results, w.share.index), &text)
}

/// What a worker adds to each of its results: its share, its start and whether it ran to the end.
pub fn stamp(result: &mut meshbench_report::LoadResult, w: &WorkerMode, lag_ms: f64) {
    let interrupted = crate::load::interrupted();
    result.distribution = Some(meshbench_report::Distribution {
        workers_total: w.share.total,
        worker_index: Some(w.share.index),
        start_at: super::format_time(w.start_at),
        start_lag_ms: lag_ms,
        workers: Vec::new(),
        complete: !interrupted,
        problems: if interrupted {
            vec!["interrupted before its end".into()]
        } else {
            Vec::new()
        },
    });
}
