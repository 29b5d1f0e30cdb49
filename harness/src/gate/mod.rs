//! The CI regression gate: a report against a baseline report.
//!
//! - Conformance: a case that passed in the baseline and does not pass now is a regression, always.
//! - Performance: per target and scenario, each figure's per-repetition values (latency relative
//!   to the direct baseline measured in the same repetition, so that a slower machine does not
//!   look like a slower gateway; closed-loop rate the same way; the gateway's CPU per request
//!   relative to the load generator's in the same measured run, which moves with the machine's
//!   speed too) are compared with a one-sided Welch t-test on their logarithms. Holm's
//!   procedure holds the chance of any false alarm across all the comparisons at `alpha`. A
//!   significant worsening is a regression unless its upper confidence bound shows it smaller
//!   than the noise threshold.
//! - A baseline from another kind of machine (cores, CPU model) is compared with a warning.

pub mod stats;
pub mod summary;
pub mod threshold;

use meshbench_report::{
    CaseOutcome, CaseRegression, ChangeOutcome, Comparison, GateReport, GateVerdict, LoadMode, LoadResult, RunReport,
};

/// How strict the gate is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// The family-wise false-alarm rate (default 0.01).
    pub alpha: f64,
    /// Changes shown to be smaller than this fraction are noise (default 0.10).
    pub noise: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            alpha: 0.01,
            noise: 0.10,
        }
    }
}

/// A figure of a run, per repetition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Figure {
    P50,
    P99,
    /// Closed-loop throughput (higher is better).
    Rps,
    CpuPer1k,
}

impl Figure {
    const ALL: [Figure; 4] = [Figure::P50, Figure::P99, Figure::Rps, Figure::CpuPer1k];

    fn raw(self, r: &LoadResult) -> Option<f64> {
        let v = match self {
            Figure::P50 => r.latency_us.p50 as f64,
            Figure::P99 => r.latency_us.p99 as f64,
            Figure::Rps if r.settings.mode == LoadMode::Closed => r.rps,
            Figure::Rps => return None,
            Figure::CpuPer1k => {
                let generator = r.generator.cpu_s * 1000.0 / r.requests.max(1) as f64;
                r.gateway?.cpu_s_per_1k_requests / generator
            }
        };
        (v > 0.0).then_some(v)
    }

    /// Whether the figure is read relative to the direct baseline of the same repetition.
    fn relative(self) -> bool {
        !matches!(self, Figure::CpuPer1k)
    }

    fn higher_is_worse(self) -> bool {
        !matches!(self, Figure::Rps)
    }

    fn name(self, relative: bool) -> String {
        let base = match self {
            Figure::P50 => "p50",
            Figure::P99 => "p99",
            Figure::Rps => "rps",
            Figure::CpuPer1k => "cpu_per_1k/generator",
        };
        if relative {
            format!("{base}/direct")
        } else {
            base.to_string()
        }
    }
}

/// The values of `figure` for `target` and `scenario`, one per repetition, and whether they are
/// relative to the direct baseline.
pub fn values(report: &RunReport, target: &str, scenario: &str, figure: Figure) -> (Vec<f64>, bool) {
    let runs: Vec<&LoadResult> = report
        .load
        .iter()
        .filter(|r| r.scenario == scenario && r.target.as_deref() == Some(target))
        .collect();
    let direct = |rep: u32| {
        report
            .load
            .iter()
            .find(|r| r.scenario == scenario && r.target.as_deref() == Some("direct") && r.repetition == rep)
    };
    let relative = figure.relative() && target != "direct" && runs.iter().all(|r| direct(r.repetition).is_some());
    let values = runs
        .iter()
        .filter_map(|r| {
            let v = figure.raw(r)?;
            if relative {
                Some(v / figure.raw(direct(r.repetition)?)?)
            } else {
                Some(v)
            }
        })
        .collect();
    (values, relative)
}

fn geomean(v: &[f64]) -> f64 {
    (v.iter().map(|x| x.ln()).sum::<f64>() / v.len().max(1) as f64).exp()
}

/// Cases that passed in `base` and do not pass in `now` (a case gone from `now` included), and
/// how many are skipped now (a target that cannot run here is not a regression, but is said).
pub fn case_regressions(base: &RunReport, now: &RunReport) -> (Vec<CaseRegression>, usize) {
    let mut out = Vec::new();
    let mut skipped = 0;
    for bs in &base.conformance {
        for bc in bs.cases.iter().filter(|c| c.outcome == CaseOutcome::Pass) {
            let current = now
                .conformance
                .iter()
                .filter(|s| s.suite == bs.suite && s.target == bs.target)
                .flat_map(|s| &s.cases)
                .find(|c| c.id == bc.id);
            let message = match current {
                Some(c) if c.outcome == CaseOutcome::Pass => continue,
                Some(c) if c.outcome == CaseOutcome::Skip => {
                    skipped += 1;
                    continue;
                }
                Some(c) => c.message.clone(),
                None => Some("not run".into()),
            };
            out.push(CaseRegression {
                target: bs.target.clone(),
                suite: bs.suite.clone(),
                case: bc.id.clone(),
                message,
            });
        }
    }
    (out, skipped)
}

/// Raw comparisons before the family-wise correction.
struct Pending {
    c: Comparison,
    welch: stats::Welch,
}

fn pending(base: &RunReport, now: &RunReport) -> (Vec<Pending>, Vec<String>) {
    let mut out = Vec::new();
    let mut warnings = Vec::new();
    let mut keys: Vec<(String, String)> = Vec::new();
    for r in &now.load {
        let k = (r.target.clone().unwrap_or_default(), r.scenario.clone());
        if k.0 != "direct" && !keys.contains(&k) {
            keys.push(k);
        }
    }
    for (target, scenario) in keys {
        for figure in Figure::ALL {
            let (a, rel_a) = values(base, &target, &scenario, figure);
            let (b, rel_b) = values(now, &target, &scenario, figure);
            if a.is_empty() || b.is_empty() {
                continue;
            }
            if rel_a != rel_b {
                warnings.push(format!(
                    "{target}/{scenario} {}: one report has a direct baseline and the other not; not compared",
                    figure.name(rel_b)
                ));
                continue;
            }
            // On a log scale, signed so that larger is worse: `change` reads "worse by".
            let sign = if figure.higher_is_worse() { 1.0 } else { -1.0 };
            let la: Vec<f64> = a.iter().map(|v| sign * v.ln()).collect();
            let lb: Vec<f64> = b.iter().map(|v| sign * v.ln()).collect();
            let Some(welch) = stats::welch_greater(&la, &lb) else {
                warnings.push(format!(
                    "{target}/{scenario} {}: {} baseline and {} current repetition(s); the gate needs 2 or more of each (run --repeat 5)",
                    figure.name(rel_b),
                    a.len(),
                    b.len()
                ));
                continue;
            };
            out.push(Pending {
                c: Comparison {
                    target: target.clone(),
                    scenario: scenario.clone(),
                    figure: figure.name(rel_b),
                    baseline: geomean(&a),
                    current: geomean(&b),
                    baseline_repetitions: a.len() as u32,
                    current_repetitions: b.len() as u32,
                    change: welch.diff.exp() - 1.0,
                    change_upper: 0.0,
                    p: welch.p,
                    level: 0.0,
                    outcome: ChangeOutcome::NoChange,
                },
                welch,
            });
        }
    }
    (out, warnings)
}

/// Warnings about comparing unlike machines.
fn machine_warnings(base: &RunReport, now: &RunReport) -> Vec<String> {
    let mut w = Vec::new();
    if base.meta.cores != now.meta.cores {
        w.push(format!(
            "the baseline ran on {} cores, this run on {}: figures compared anyway",
            base.meta.cores, now.meta.cores
        ));
    }
    if let (Some(a), Some(b)) = (&base.meta.machine, &now.meta.machine) {
        if a.cpu_model != b.cpu_model {
            w.push(format!(
                "the baseline ran on `{}`, this run on `{}`: figures compared anyway",
                a.cpu_model, b.cpu_model
            ));
        }
    }
    w
}

/// Distributed runs that lack a worker's share: their figures describe another run, so nothing
/// about them may pass.
fn incomplete(base: &RunReport, now: &RunReport) -> Vec<String> {
    [("this run", now), ("the baseline", base)]
        .iter()
        .flat_map(|(which, r)| {
            r.load.iter().filter_map(move |l| {
                let d = l.distribution.as_ref().filter(|d| !d.complete)?;
                Some(format!(
                    "{which} is incomplete ({}): {}",
                    l.scenario,
                    d.problems.join("; ")
                ))
            })
        })
        .collect()
}

/// Compares `now` with `base`.
pub fn compare(base: &RunReport, now: &RunReport, settings: Settings) -> GateReport {
    let (conformance, skipped) = case_regressions(base, now);
    let (mut pending, mut warnings) = pending(base, now);
    warnings.splice(0..0, machine_warnings(base, now));
    if skipped > 0 {
        warnings.push(format!(
            "{skipped} case(s) that passed in the baseline were skipped in this run"
        ));
    }
    let p: Vec<f64> = pending.iter().map(|x| x.welch.p).collect();
    let worse = stats::holm(&p, settings.alpha);
    // Improvements are tested the same way, in the other direction.
    let better_p: Vec<f64> = pending.iter().map(|x| 1.0 - x.welch.p).collect();
    let better = stats::holm(&better_p, settings.alpha);
    for (i, x) in pending.iter_mut().enumerate() {
        let (rejected, level) = worse[i];
        x.c.level = level;
        x.c.change_upper = x.welch.upper(level).exp() - 1.0;
        x.c.outcome = if rejected && x.c.change_upper >= settings.noise {
            ChangeOutcome::Regression
        } else if rejected {
            ChangeOutcome::WithinNoise
        } else if better[i].0 {
            ChangeOutcome::Improvement
        } else {
            ChangeOutcome::NoChange
        };
    }
    let comparisons: Vec<Comparison> = pending.into_iter().map(|x| x.c).collect();
    let any_load = !now.load.is_empty() || !base.load.is_empty();
    let incomplete = incomplete(base, now);
    warnings.extend(incomplete.iter().cloned());
    let verdict = if !incomplete.is_empty() {
        GateVerdict::CannotCompare
    } else if !conformance.is_empty() || comparisons.iter().any(|c| c.outcome == ChangeOutcome::Regression) {
        GateVerdict::Regression
    } else if (any_load && comparisons.is_empty()) || (now.conformance.is_empty() && !any_load) {
        GateVerdict::CannotCompare
    } else {
        GateVerdict::Pass
    };
    GateReport {
        verdict,
        baseline: base.meta.clone(),
        alpha: settings.alpha,
        noise: settings.noise,
        conformance,
        comparisons,
        warnings,
    }
}

/// Compares every other target of one report with its target `base` (another build run beside
/// it, repetitions interleaved): the comparison that machine drift between runs cannot fool.
pub fn compare_in_run(report: &RunReport, base: &str, settings: Settings) -> Result<GateReport, String> {
    if !report.targets.iter().any(|t| t.name == base) {
        let names: Vec<&str> = report.targets.iter().map(|t| t.name.as_str()).collect();
        return Err(format!(
            "no target `{base}` in the report (targets: {})",
            names.join(", ")
        ));
    }
    let others: Vec<&str> = report
        .targets
        .iter()
        .map(|t| t.name.as_str())
        .filter(|n| *n != base && *n != "direct")
        .collect();
    let (mut was, mut now) = (report.clone(), report.clone());
    for r in [&mut was, &mut now] {
        r.load.retain(|l| l.target.as_deref() == Some("direct"));
        r.conformance.clear();
    }
    for t in others {
        let as_t = |target: Option<String>| (target.as_deref() == Some(base)).then(|| Some(t.to_string()));
        for l in &report.load {
            if let Some(name) = as_t(l.target.clone()) {
                was.load.push(LoadResult {
                    target: name,
                    ..l.clone()
                });
            } else if l.target.as_deref() == Some(t) {
                now.load.push(l.clone());
            }
        }
        for s in &report.conformance {
            if s.target == base {
                was.conformance.push(meshbench_report::SuiteResult {
                    target: t.to_string(),
                    ..s.clone()
                });
            } else if s.target == t {
                now.conformance.push(s.clone());
            }
        }
    }
    let mut g = compare(&was, &now, settings);
    g.warnings.insert(0, format!("baseline: target `{base}` of this run"));
    Ok(g)
}

/// The exit code of a verdict: 0 pass, 1 regression, 2 could not compare.
pub fn exit_code(v: GateVerdict) -> u8 {
    match v {
        GateVerdict::Pass => 0,
        GateVerdict::Regression => 1,
        GateVerdict::CannotCompare => 2,
    }
}

#[cfg(test)]
mod tests;
