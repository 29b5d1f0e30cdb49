//! A load run split over N worker processes, on this machine or on an orchestrator people
//! already run (a Kubernetes Indexed Job, a Docker Swarm replicated job), and merged exactly.
//!
//! Each worker runs `meshbench load … --worker-index I --workers-total N --start-at T --results
//! DIR`: its share of the rate, connections and requests, on the shared wall-clock start, and
//! writes three files into the result directory: a marker when it starts, its run report (with
//! its encoded histograms) and its interval log when it ends, or an error file when it fails.
//! `collect` adds the histograms (HdrHistograms add without loss), names every worker that is
//! missing, failed, late or saturated, and marks the merged run incomplete when one is.

pub mod collect;
pub mod engine;
pub mod worker;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::load::spec::LoadSpec;

/// Which share of a run this process takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    pub index: u32,
    pub total: u32,
}

impl Share {
    pub fn new(index: u32, total: u32) -> Result<Share, String> {
        if total == 0 {
            return Err("--workers-total must be at least 1".into());
        }
        if index >= total {
            return Err(format!(
                "--worker-index {index} is out of range: workers are numbered 0..{total}"
            ));
        }
        Ok(Share { index, total })
    }

    /// This worker's part of `n` things split as evenly as they go, the first workers taking
    /// one more when `n` does not divide.
    pub fn part(self, n: u64) -> u64 {
        let (each, rest) = (n / u64::from(self.total), n % u64::from(self.total));
        each + u64::from(u64::from(self.index) < rest)
    }

    /// Narrows a whole run's spec to this worker's share: rate / N, its own connections (at least
    /// one) and its part of a request count; threads no more than its connections.
    pub fn apply(self, spec: &mut LoadSpec) -> Result<(), String> {
        if u64::from(spec.connections) < u64::from(self.total) {
            return Err(format!(
                "{} connections cannot be split over {} workers: give at least one per worker",
                spec.connections, self.total
            ));
        }
        spec.rate = spec.rate.map(|r| r / f64::from(self.total));
        spec.connections = self.part(u64::from(spec.connections)) as u32;
        spec.workers = spec.workers.min(spec.connections).max(1);
        if let Some(n) = spec.requests {
            let part = self.part(n);
            if part == 0 {
                return Err(format!("{n} requests cannot be split over {} workers", self.total));
            }
            spec.requests = Some(part);
        }
        Ok(())
    }
}

/// Where a worker writes, inside the result directory.
pub fn result_file(dir: &Path, index: u32) -> PathBuf {
    dir.join(format!("worker-{index}.json"))
}

pub fn started_file(dir: &Path, index: u32) -> PathBuf {
    dir.join(format!("worker-{index}.started.json"))
}

pub fn error_file(dir: &Path, index: u32) -> PathBuf {
    dir.join(format!("worker-{index}.error"))
}

pub fn hlog_file(dir: &Path, index: u32) -> PathBuf {
    dir.join(format!("worker-{index}.hlog"))
}

/// The coordinator's record of a run, `distribution.json` in the result directory.
pub const PLAN_FILE: &str = "distribution.json";

/// What `distribute` asked for; `collect` checks the workers against it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunPlan {
    pub engine: String,
    pub workers: u32,
    /// RFC 3339, UTC.
    pub start_at: String,
    /// The arguments every worker's `meshbench load` got (before its share flags).
    pub load_args: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

/// A worker's note that it began, written before it waits for the start time: a worker that
/// leaves this and no result was killed, one that leaves neither never started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Started {
    pub index: u32,
    pub total: u32,
    pub host: String,
    pub pid: u32,
    pub at: String,
}

/// Parses `--start-at`: RFC 3339 (`2026-12-05T10:00:00Z`, `…+01:00`, fractions allowed) or Unix
/// seconds (`1764928800.5`).
pub fn parse_time(text: &str) -> Result<SystemTime, String> {
    let bad = || format!("`{text}` is not a time: give RFC 3339 (2026-12-05T10:00:00Z) or Unix seconds (1764928800)");
    if let Ok(secs) = text.parse::<f64>() {
        if !(secs.is_finite() && secs >= 0.0) {
            return Err(bad());
        }
        return Ok(UNIX_EPOCH + Duration::from_secs_f64(secs));
    }
    mesh_model::time::parse_rfc3339(text).ok_or_else(bad)
}

/// RFC 3339 in UTC with milliseconds.
pub fn format_time(t: SystemTime) -> String {
    mesh_model::time::rfc3339(t, true)
}

/// Milliseconds from `start_at` until `now`; 0 when `now` is not after it.
pub fn lag_ms(start_at: SystemTime, now: SystemTime) -> f64 {
    now.duration_since(start_at).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// Writes `bytes` to `path` through a temporary file and a rename, so a reader never sees half.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, bytes).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests;
