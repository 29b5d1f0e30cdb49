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
    let on = r.target.as_ref().map(|t| format!(" on {t}")).unwrap_or_default();
    let rep = if r.repetition > 0 {
        format!(" [repetition {}]", r.repetition + 1)
    } else {
        String::new()
    };
    let _ = writeln!(o, "{}{on}{rep} @ {} ({}, {mode})", r.scenario, s.url, s.protocol);
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
    if let Some(u) = &r.gateway {
        let _ = writeln!(
            o,
            "  gateway: {:.2} CPU-s, {:.1} CPU-ms per 1k requests, RSS {} (peak {})",
            u.cpu_s,
            u.cpu_s_per_1k_requests * 1000.0,
            mib(u.rss_bytes),
            mib(u.peak_rss_bytes)
        );
    }
    for t in &r.thresholds {
        let verdict = if t.passed { "ok" } else { "FAILED" };
        let _ = writeln!(o, "  threshold {}: {verdict} ({})", t.expression, t.observed);
    }
    for w in &r.warnings {
        let _ = writeln!(o, "  warning: {w}");
    }
    o
}

/// Bytes as MiB with one decimal: `12.5MiB`.
pub fn mib(bytes: u64) -> String {
    format!("{:.1}MiB", bytes as f64 / (1024.0 * 1024.0))
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
            "\nsuite {} against {}: {} passed, {} failed, {} skipped, {} expected failures{}",
            suite.suite,
            suite.target,
            count(CaseOutcome::Pass),
            count(CaseOutcome::Fail) + count(CaseOutcome::UnexpectedPass),
            count(CaseOutcome::Skip),
            count(CaseOutcome::ExpectedFailure),
            suite.mode.as_ref().map(|m| format!(" ({m})")).unwrap_or_default()
        );
    }
    if report.targets.len() > 1 {
        o.push('\n');
        o.push_str(&render_matrix(report));
    }
    for r in &report.load {
        let _ = writeln!(o);
        o.push_str(&render_load(r));
    }
    o
}

/// The short label of an outcome.
pub fn outcome_label(o: CaseOutcome) -> &'static str {
    match o {
        CaseOutcome::Pass => "PASS",
        CaseOutcome::Fail => "FAIL",
        CaseOutcome::Skip => "SKIP",
        CaseOutcome::ExpectedFailure => "XFAIL",
        CaseOutcome::UnexpectedPass => "XPASS",
    }
}

/// Cases as rows, targets as columns: what each target did with each case (`-`: not run).
pub fn render_matrix(report: &RunReport) -> String {
    let targets: Vec<&str> = report.targets.iter().map(|t| t.name.as_str()).collect();
    let mut rows: Vec<String> = Vec::new();
    for s in &report.conformance {
        for c in &s.cases {
            let id = format!("{}/{}", s.suite, c.id);
            if !rows.contains(&id) {
                rows.push(id);
            }
        }
    }
    let cell = |row: &str, target: &str| {
        report
            .conformance
            .iter()
            .filter(|s| s.target == target)
            .flat_map(|s| {
                s.cases
                    .iter()
                    .map(move |c| (format!("{}/{}", s.suite, c.id), c.outcome))
            })
            .find(|(id, _)| id == row)
            .map_or("-", |(_, o)| outcome_label(o))
    };
    let width = rows.iter().map(String::len).max().unwrap_or(4).max(4);
    let line = |first: &str, cells: Vec<&str>| {
        let mut l = format!("{first:<width$}");
        for c in cells {
            let _ = write!(l, "  {c:<9}");
        }
        format!("{}\n", l.trim_end())
    };
    let mut o = line("case", targets.clone());
    for row in &rows {
        o.push_str(&line(row, targets.iter().map(|t| cell(row, t)).collect()));
    }
    o
}
