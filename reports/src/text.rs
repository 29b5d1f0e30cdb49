//! The terminal renderer: a function of the report alone.

use std::fmt::Write;

use crate::model::{CaseOutcome, LoadMode, LoadResult, Percentiles, RunReport};

/// Microseconds as a short human duration: `412us`, `3.21ms`, `1.50s`.
pub fn us(v: u64) -> String {
    match v {
        0..=999 => format!("{v}us"),
        1_000..=999_999 => format!("{:.2}ms", v as f64 / 1e3),
        _ => format!("{:.2}s", v as f64 / 1e6),
    }
}

fn percentiles_line(p: &Percentiles) -> String {
    format!(
        "p50 {:>9}  p90 {:>9}  p99 {:>9}  p99.9 {:>9}  max {:>9}  mean {:>9}",
        us(p.p50),
        us(p.p90),
        us(p.p99),
        us(p.p999),
        us(p.max),
        us(p.mean.round() as u64)
    )
}

/// One load result, in the manner of wrk2's output.
pub fn render_load(r: &LoadResult) -> String {
    let mut o = String::new();
    let s = &r.settings;
    let mode = match (s.mode, s.rate) {
        (LoadMode::Open, Some(rate)) => format!("open loop at {rate} rps"),
        _ => "closed loop".to_string(),
    };
    let _ = writeln!(o, "{} @ {} ({}, {mode})", r.scenario, s.url, s.protocol);
    let _ = writeln!(
        o,
        "  {} connections x {} streams, {} workers, {:.1}s measured after {:.1}s warm-up",
        s.connections, s.streams, s.workers, r.duration_s, s.warmup_s
    );
    let asked = r.asked_rps.map(|a| format!(" of {a:.1} asked")).unwrap_or_default();
    let _ = writeln!(
        o,
        "  requests {}  rps {:.1}{asked}  errors {}  late {}",
        r.requests, r.rps, r.errors, r.late
    );
    let label = if r.latency_uncorrected_us.is_some() {
        "latency (corrected)  "
    } else {
        "latency              "
    };
    let _ = writeln!(o, "  {label} {}", percentiles_line(&r.latency_us));
    if let Some(u) = &r.latency_uncorrected_us {
        let _ = writeln!(o, "  latency (uncorrected) {}", percentiles_line(u));
    }
    if !r.ladder_us.is_empty() {
        let _ = writeln!(o, "  latency distribution:");
        for p in &r.ladder_us {
            let _ = writeln!(o, "    {:>8.3}%  {:>10}  {:>10}", p.percentile, us(p.value_us), p.count);
        }
    }
    let codes: Vec<String> = r.status_codes.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    let _ = writeln!(
        o,
        "  status codes: {}",
        if codes.is_empty() {
            "none".into()
        } else {
            codes.join(", ")
        }
    );
    if !r.error_classes.is_empty() {
        let errs: Vec<String> = r.error_classes.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        let _ = writeln!(o, "  errors: {}", errs.join(", "));
    }
    let g = &r.generator;
    let _ = writeln!(
        o,
        "  generator: {:.2} CPU-s, {:.0} requests per CPU-second, busiest worker {:.0}%",
        g.cpu_s,
        g.requests_per_cpu_s,
        g.max_worker_busy * 100.0
    );
    for w in &r.warnings {
        let _ = writeln!(o, "  warning: {w}");
    }
    o
}

/// The whole report.
pub fn render(report: &RunReport) -> String {
    let mut o = String::new();
    let m = &report.meta;
    let _ = writeln!(
        o,
        "{} {} on {} ({} cores), {}",
        m.tool, m.version, m.host, m.cores, m.started_at
    );
    for suite in &report.conformance {
        let count = |k: CaseOutcome| suite.cases.iter().filter(|c| c.outcome == k).count();
        let _ = writeln!(
            o,
            "\nsuite {} against {}: {} passed, {} failed, {} skipped, {} expected failures",
            suite.suite,
            suite.target,
            count(CaseOutcome::Pass),
            count(CaseOutcome::Fail) + count(CaseOutcome::UnexpectedPass),
            count(CaseOutcome::Skip),
            count(CaseOutcome::ExpectedFailure)
        );
    }
    for r in &report.load {
        let _ = writeln!(o);
        o.push_str(&render_load(r));
    }
    o
}
