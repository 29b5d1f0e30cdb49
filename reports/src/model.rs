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
}

impl RunReport {
    pub fn new(meta: RunMeta) -> Self {
        RunReport {
            schema_version: SCHEMA_VERSION,
            meta,
            targets: Vec::new(),
            conformance: Vec::new(),
            load: Vec::new(),
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
    #[serde(default)]
    pub warnings: Vec<String>,
}
