//! The report model. Field names are the JSON keys; the JSON Schema is generated from these types.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Bumped on any incompatible change of the JSON shape.
pub const SCHEMA_VERSION: u32 = 1;

/// Everything one meshbench run measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunReport {
    pub schema_version: u32,
    pub meta: RunMeta,
    #[serde(default)]
    pub targets: Vec<TargetInfo>,
    #[serde(default)]
    pub conformance: Vec<SuiteResult>,
    #[serde(default)]
    pub load: Vec<LoadResult>,
    /// The comparison with a baseline, when one was given (`run --baseline`, `meshbench gate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<GateReport>,
}

impl RunReport {
    pub fn new(meta: RunMeta) -> Self {
        RunReport {
            schema_version: SCHEMA_VERSION,
            meta,
            targets: Vec::new(),
            conformance: Vec::new(),
            load: Vec::new(),
            gate: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunMeta {
    /// `meshbench`.
    pub tool: String,
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_revision: Option<String>,
    pub host: String,
    pub cores: u32,
    /// RFC 3339, UTC.
    pub started_at: String,
    /// The command line that produced the report.
    #[serde(default)]
    pub command: Vec<String>,
    /// What the machine is (the gate compares figures from like machines only, or warns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<Machine>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Machine {
    /// `/proc/cpuinfo`'s `model name`.
    pub cpu_model: String,
    pub cores: u32,
    /// `uname -r`.
    pub kernel: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TargetInfo {
    pub name: String,
    /// `reference`, `envoy`, `istio`, `external`.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// One conformance suite run against one target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SuiteResult {
    pub suite: String,
    pub target: String,
    pub cases: Vec<CaseResult>,
    /// How the suite ran, when it could run more than one way: `captured` (a sidecar suite with
    /// transparent capture in network namespaces), or `explicit proxy: <why not captured>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CaseResult {
    pub id: String,
    pub outcome: CaseOutcome,
    /// What was expected, what was observed, and the request that showed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub duration_ms: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CaseOutcome {
    Pass,
    Fail,
    Skip,
    /// Listed in the target's known differences, and failed.
    ExpectedFailure,
    /// Listed in the target's known differences, but passed.
    UnexpectedPass,
}

/// How requests were scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LoadMode {
    /// Maximum throughput: each connection (or stream) sends its next request when the last completes.
    Closed,
    /// A constant rate; latency is timed from each request's intended start.
    Open,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoadSettings {
    pub url: String,
    /// `h1`, `h2`, `h2c`, `grpc`, `grpcs`, `tcp`, `tls-handshake`.
    pub protocol: String,
    pub mode: LoadMode,
    /// Requests per second asked for (open loop).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    pub connections: u32,
    /// Concurrent streams per connection (HTTP/2 and gRPC).
    pub streams: u32,
    pub workers: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<f64>,
    /// A request count instead of a duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<u64>,
    pub warmup_s: f64,
    pub method: String,
    pub request_body_bytes: u64,
    pub timeout_s: f64,
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Percentiles {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LadderPoint {
    /// 0..100.
    pub percentile: f64,
    pub value_us: u64,
    /// Requests at or below this value.
    pub count: u64,
}

/// One second of the run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SeriesPoint {
    /// Seconds since the end of the warm-up.
    pub t_s: f64,
    pub requests: u64,
    pub rps: f64,
    pub errors: u64,
    pub p50_us: u64,
    pub p99_us: u64,
}

/// Histograms in HdrHistogram's V2 compressed encoding, base64 (what `.hlog` lines carry).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EncodedHistograms {
    /// `hdrhistogram-v2-deflate-base64`; values in microseconds.
    pub encoding: String,
    pub corrected: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uncorrected: Option<String>,
}

/// What the load generator itself used.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GeneratorUsage {
    /// User + system CPU seconds of the generator process during the measured run.
    pub cpu_s: f64,
    pub requests_per_cpu_s: f64,
    /// The busiest worker thread's CPU time over wall time (1.0 = a full core).
    pub max_worker_busy: f64,
    /// True when a worker was busy enough that the generator may have been the bottleneck.
    pub saturated: bool,
}

/// What the gateway process used during a measured run (from /proc; local process targets).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProcessUsage {
    /// User + system CPU seconds of the gateway during the measured run.
    pub cpu_s: f64,
    /// CPU seconds per 1,000 completed requests: the cost figure that drifts least on a shared machine.
    pub cpu_s_per_1k_requests: f64,
    /// Resident memory at the end of the run, and the process's peak (VmHWM), bytes.
    pub rss_bytes: u64,
    pub peak_rss_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoadResult {
    pub scenario: String,
    /// The target's name (`direct` for the baseline straight to the workload).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Which repetition of the scenario this is (0-based; `run --repeat`).
    #[serde(default)]
    pub repetition: u32,
    pub settings: LoadSettings,
    /// Measured seconds (warm-up excluded).
    pub duration_s: f64,
    /// Completed requests, errors included.
    pub requests: u64,
    pub errors: u64,
    /// Open loop: requests that could not be sent at their intended time (the connection was busy).
    pub late: u64,
    /// Achieved rate: completed requests per measured second.
    pub rps: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asked_rps: Option<f64>,
    /// Corrected for coordinated omission in open loop (from the intended start).
    pub latency_us: Percentiles,
    /// Open loop: from the actual send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_uncorrected_us: Option<Percentiles>,
    /// The percentile ladder of `latency_us`, as wrk2 prints it.
    pub ladder_us: Vec<LadderPoint>,
    /// By status code: HTTP status, or `grpc-<code>` for gRPC.
    pub status_codes: BTreeMap<String, u64>,
    /// `connect`, `timeout`, `reset`, `tls`, `protocol`, `grpc-<code>`, `http-5xx`.
    pub error_classes: BTreeMap<String, u64>,
    pub time_series: Vec<SeriesPoint>,
    pub histograms: EncodedHistograms,
    pub generator: GeneratorUsage,
    /// The gateway's CPU and memory, when the target is a local process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<ProcessUsage>,
    /// The scenario's thresholds and how this run did against each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub thresholds: Vec<ThresholdResult>,
    #[serde(default)]
    pub warnings: Vec<String>,
    /// A run split over several workers (`meshbench distribute`): in a worker's own result its
    /// share; in the merged result (`meshbench collect`) every worker's row and whether the
    /// merged figures cover the whole run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distribution: Option<Distribution>,
}

/// How a load run was split over workers, and whether all of them delivered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Distribution {
    pub workers_total: u32,
    /// This worker's index (0-based); absent in the merged result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_index: Option<u32>,
    /// The wall-clock start every worker aimed at (RFC 3339, UTC).
    pub start_at: String,
    /// A worker's own result: how many milliseconds after `start_at` it began (0 when on time).
    #[serde(default)]
    pub start_lag_ms: f64,
    /// The merged result: one row per worker, missing ones included.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workers: Vec<WorkerRow>,
    /// False when a worker is missing, failed, started late or ran saturated: the merged figures
    /// do not describe the run that was asked for, and the gate refuses to pass it (exit 2).
    pub complete: bool,
    /// Why the run is incomplete, one line per worker problem.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

/// One worker of a distributed run, as `meshbench collect` found it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkerRow {
    pub index: u32,
    pub state: WorkerState,
    /// Where it ran (its host name), when it said.
    #[serde(default)]
    pub host: String,
    pub requests: u64,
    pub errors: u64,
    pub rps: f64,
    pub p99_us: u64,
    pub start_lag_ms: f64,
    /// Its busiest thread's CPU time over wall time.
    pub max_busy: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    /// Delivered its share on time, not saturated.
    Ok,
    /// Left no result: never started, or started and was killed.
    Missing,
    /// Reported an error or was interrupted.
    Failed,
    /// Started after the shared start time by more than the tolerance.
    Late,
    /// Its generator was busy enough to have been the bottleneck.
    Saturated,
}

/// One threshold (`p99 < 5ms`) checked against one load result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ThresholdResult {
    pub expression: String,
    /// `observed 4.20ms, limit 5.00ms`, or why it could not be observed.
    pub observed: String,
    pub passed: bool,
}

/// What the gate decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum GateVerdict {
    Pass,
    /// A conformance case that passed now fails, or a figure got significantly worse.
    Regression,
    /// Nothing comparable (no common scenarios, or too few repetitions).
    CannotCompare,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChangeOutcome {
    /// Significantly worse, and not shown to be within the noise threshold.
    Regression,
    /// Significantly better.
    Improvement,
    /// Significantly worse, but shown to be smaller than the noise threshold.
    WithinNoise,
    NoChange,
}

/// One figure of one scenario on one target, baseline vs current.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Comparison {
    pub target: String,
    pub scenario: String,
    /// `p50/direct`, `p99/direct` (latency relative to the direct baseline of the same
    /// repetition), `p50`, `p99` (absolute, without a baseline), `rps/direct`, `cpu_per_1k`.
    pub figure: String,
    /// Geometric means over the repetitions.
    pub baseline: f64,
    pub current: f64,
    pub baseline_repetitions: u32,
    pub current_repetitions: u32,
    /// How much worse (+) or better (-) the current is, as a fraction.
    pub change: f64,
    /// The most it may be worse at the test's confidence (one-sided bound), as a fraction.
    pub change_upper: f64,
    /// One-sided p-value of "worse", and the level Holm's procedure tested it at.
    pub p: f64,
    pub level: f64,
    pub outcome: ChangeOutcome,
}

/// A case that passed in the baseline and fails now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CaseRegression {
    pub target: String,
    pub suite: String,
    pub case: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The gate's comparison of a report with a baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GateReport {
    pub verdict: GateVerdict,
    pub baseline: RunMeta,
    /// The family-wise false-alarm rate the comparisons are held at.
    pub alpha: f64,
    /// Changes shown to be smaller than this (a fraction) are noise.
    pub noise: f64,
    pub conformance: Vec<CaseRegression>,
    pub comparisons: Vec<Comparison>,
    #[serde(default)]
    pub warnings: Vec<String>,
}
