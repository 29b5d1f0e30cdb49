//! The gate's verdict for people and CI: a Markdown summary (what `$GITHUB_STEP_SUMMARY` shows)
//! and a terminal table.

use std::fmt::Write;

use meshbench_report::{ChangeOutcome, Comparison, GateReport, GateVerdict, RunReport};

fn outcome(o: ChangeOutcome) -> &'static str {
    match o {
        ChangeOutcome::Regression => "REGRESSION",
        ChangeOutcome::Improvement => "improved",
        ChangeOutcome::WithinNoise => "within noise",
        ChangeOutcome::NoChange => "no change",
    }
}

fn verdict(v: GateVerdict) -> &'static str {
    match v {
        GateVerdict::Pass => "pass",
        GateVerdict::Regression => "REGRESSION",
        GateVerdict::CannotCompare => "could not compare",
    }
}

fn value(c: &Comparison, v: f64) -> String {
    match c.figure.as_str() {
        "p50" | "p99" => meshbench_report::text::us(v.round() as u64),
        _ => format!("{v:.3}x"),
    }
}

fn pct(f: f64) -> String {
    format!("{:+.1}%", f * 100.0)
}

/// One line per comparison for the terminal.
pub fn text(g: &GateReport) -> String {
    let mut o = format!(
        "gate: {} (against the baseline of {} on {}; alpha {} for all {} comparisons, noise {})\n",
        verdict(g.verdict),
        g.baseline.started_at,
        g.baseline.host,
        g.alpha,
        g.comparisons.len(),
        pct(g.noise).trim_start_matches('+')
    );
    for r in &g.conformance {
        let _ = writeln!(
            o,
            "  REGRESSION conformance {}/{} on {}: passed in the baseline, {}",
            r.suite,
            r.case,
            r.target,
            r.message.as_deref().unwrap_or("fails now")
        );
    }
    for c in &g.comparisons {
        let _ = writeln!(
            o,
            "  {:<12} {}/{} {}: {} -> {} ({} worse, at most {}; p {:.2e}, tested at {:.1e})",
            outcome(c.outcome),
            c.target,
            c.scenario,
            c.figure,
            value(c, c.baseline),
            value(c, c.current),
            pct(c.change),
            pct(c.change_upper),
            c.p,
            c.level
        );
    }
    for w in &g.warnings {
        let _ = writeln!(o, "  warning: {w}");
    }
    o
}

/// The Markdown summary: the verdict, conformance regressions, the comparison table, failed
/// thresholds and warnings.
pub fn markdown(report: &RunReport) -> String {
    let mut o = String::from("## meshbench\n\n");
    let failed: Vec<String> = report
        .load
        .iter()
        .flat_map(|r| {
            r.thresholds.iter().filter(|t| !t.passed).map(move |t| {
                format!(
                    "| {} | {} | `{}` | {} |",
                    r.target.as_deref().unwrap_or(""),
                    r.scenario,
                    t.expression,
                    t.observed
                )
            })
        })
        .collect();
    let Some(g) = &report.gate else {
        let _ = writeln!(o, "No baseline given: thresholds only.\n");
        return thresholds(o, &failed);
    };
    let _ = writeln!(
        o,
        "**Gate: {}** against the baseline of {} (meshbench {} on {}). False alarms held at {} \
         across all {} comparisons; changes shown to be under {} are noise.\n",
        verdict(g.verdict),
        g.baseline.started_at,
        g.baseline.version,
        g.baseline.host,
        g.alpha,
        g.comparisons.len(),
        pct(g.noise).trim_start_matches('+')
    );
    if !g.conformance.is_empty() {
        o.push_str("### Conformance regressions\n\n| target | case | now |\n|---|---|---|\n");
        for r in &g.conformance {
            let _ = writeln!(
                o,
                "| {} | {}/{} | {} |",
                r.target,
                r.suite,
                r.case,
                r.message.as_deref().unwrap_or("fails").replace('|', "\\|")
            );
        }
        o.push('\n');
    }
    if !g.comparisons.is_empty() {
        o.push_str(
            "### Performance\n\n| | target | scenario | figure | baseline | current | change | at most | p | reps |\n\
             |---|---|---|---|---|---|---|---|---|---|\n",
        );
        for c in &g.comparisons {
            let mark = match c.outcome {
                ChangeOutcome::Regression => ":x:",
                ChangeOutcome::Improvement => ":white_check_mark:",
                _ => "",
            };
            let _ = writeln!(
                o,
                "| {mark} {} | {} | {} | {} | {} | {} | {} | {} | {:.1e} | {}/{} |",
                outcome(c.outcome),
                c.target,
                c.scenario,
                c.figure,
                value(c, c.baseline),
                value(c, c.current),
                pct(c.change),
                pct(c.change_upper),
                c.p,
                c.baseline_repetitions,
                c.current_repetitions
            );
        }
        o.push('\n');
    }
    for w in &g.warnings {
        let _ = writeln!(o, "> warning: {w}\n");
    }
    thresholds(o, &failed)
}

fn thresholds(mut o: String, failed: &[String]) -> String {
    if !failed.is_empty() {
        o.push_str("### Failed thresholds\n\n| target | scenario | threshold | observed |\n|---|---|---|---|\n");
        for f in failed {
            o.push_str(f);
            o.push('\n');
        }
    }
    o
}
