//! The main job: for each target, the conformance suites, then the load suites through every
//! target and straight to the workloads (the direct baseline), into one RunReport.

pub mod load;

use meshbench_report::{LoadResult, RunReport, TargetInfo};

use crate::conform::suite::Suite;
use crate::targets::Target;

/// Whether a load result counts as a failed run: nothing completed, or every request failed.
pub fn failed(r: &LoadResult) -> bool {
    r.requests == 0 || r.errors >= r.requests
}

/// Runs every load suite on `targets` (each brought up with the suite's config) and records the
/// results and the baseline in `report`. Targets that cannot run here are noted as skipped.
pub fn load_phase(
    rt: &tokio::runtime::Runtime,
    suites: &[Suite],
    targets: &mut [Box<dyn Target>],
    cx: &load::LoadContext,
    report: &mut RunReport,
) -> Result<Vec<(String, String)>, String> {
    let mut skipped = Vec::new();
    for s in suites {
        let results = load::run_suite(rt, s, targets, cx, &mut skipped)?;
        for r in results.iter().filter(|_| cx.print) {
            print!("{}", meshbench_report::text::render_load(r));
        }
        report.load.extend(results);
    }
    if !report.load.is_empty() && !report.targets.iter().any(|t| t.name == load::DIRECT) {
        report.targets.push(TargetInfo {
            name: load::DIRECT.into(),
            kind: load::DIRECT.into(),
            address: None,
            version: None,
        });
    }
    Ok(skipped)
}
