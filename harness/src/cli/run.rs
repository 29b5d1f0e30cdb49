//! `meshbench run [--target reference,envoy,…] [--suite …] [--load …] [--out DIR]`: the main job.
//! For each target the conformance suites, then the load scenarios through every target and
//! straight to the workloads (the direct baseline), into one report: report.json, junit.xml,
//! report.html and the HdrHistogram interval logs under DIR/hlog/.

use std::path::PathBuf;

use meshbench_report::RunReport;

use super::common::{self, Common, Conformance, Slot};
use super::exit;
use crate::conform::suite::{self, Suite};
use crate::run::load::{LoadContext, Scale};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    /// A built-in load suite (`gateway-load`) or a load suite file; repeatable; `none` for
    /// conformance only. Default: gateway-load.
    #[arg(long)]
    pub load: Vec<String>,
    /// Measure every scenario this many times, interleaved across targets.
    #[arg(long, default_value = "1")]
    pub repeat: u32,
    /// Shorter scenarios (about a third): a smoke test.
    #[arg(long, conflicts_with = "full")]
    pub quick: bool,
    /// Longer scenarios (five times the default) for stable tails.
    #[arg(long)]
    pub full: bool,
    /// A threshold every scenario must meet on every target, added to each scenario's own
    /// (`p99 < 5ms`, `added_p99 < 1ms`, `cpu_per_1k_requests < 80ms`, …); repeatable.
    #[arg(long = "threshold")]
    pub thresholds: Vec<String>,
    /// Also save the report here, as the baseline of later `run --baseline` or `gate` runs.
    #[arg(long)]
    pub save_baseline: Option<PathBuf>,
    /// Compare with this baseline (a saved report): exit 1 on a regression, 2 if nothing compares.
    #[arg(long, conflicts_with = "against")]
    pub baseline: Option<PathBuf>,
    /// Compare every other target with this one of the same run (another build side by side, e.g.
    /// `--target main=reference:/tmp/main/meshgate,reference --against main`): repetitions are
    /// interleaved, so drift between runs cannot look like a regression.
    #[arg(long)]
    pub against: Option<String>,
    #[command(flatten)]
    pub gate: super::gate::GateOptions,
}

/// The load suites `--load` names (`none`: no load phase).
pub fn load_suites(names: &[String]) -> Result<Vec<Suite>, String> {
    if names.iter().any(|n| n == "none") {
        return Ok(Vec::new());
    }
    let names: Vec<String> = if names.is_empty() {
        vec!["gateway-load".into()]
    } else {
        names.to_vec()
    };
    names
        .iter()
        .map(|n| {
            let s = match suite::EMBEDDED_LOAD.iter().find(|(k, _)| k == n) {
                Some((k, text)) => suite::parse(&format!("<built-in load/{k}>"), text)?,
                None if std::path::Path::new(n).exists() => suite::read(std::path::Path::new(n))?,
                None => {
                    let known: Vec<&str> = suite::EMBEDDED_LOAD.iter().map(|(k, _)| *k).collect();
                    return Err(format!(
                        "no load suite `{n}`: give a file or one of {} (or `none`)",
                        known.join(", ")
                    ));
                }
            };
            if s.scenarios.is_empty() {
                return Err(format!("load suite {n} has no scenarios"));
            }
            Ok(s)
        })
        .collect()
}

fn conformance_suites(c: &Common) -> Result<Vec<Suite>, String> {
    if c.suite.iter().any(|s| s == "none") {
        return Ok(Vec::new());
    }
    c.selected_suites()
}

pub fn run(args: &Args) -> u8 {
    let mut c = args.common.clone();
    let out = c.out.clone().unwrap_or_else(|| PathBuf::from("out"));
    c.out = Some(out.clone());
    let scale = match (args.quick, args.full) {
        (true, _) => Scale::QUICK,
        (_, true) => Scale::FULL,
        _ => Scale::DEFAULT,
    };
    let picked = conformance_suites(&c).and_then(|s| Ok((s, load_suites(&args.load)?)));
    let checked = picked.and_then(|x| {
        crate::gate::threshold::parse_all(&args.thresholds)?;
        let baseline = args.baseline.as_deref().map(super::gate::read_report).transpose()?;
        Ok((x, baseline, args.gate.settings()?))
    });
    let ((suites, loads), baseline, settings) = match checked {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::USAGE;
        }
    };
    let Ok(rt) = tokio::runtime::Builder::new_multi_thread().enable_all().build() else {
        return exit::IO;
    };
    crate::load::install_ctrl_c();
    let work = std::env::temp_dir().join(format!("meshbench-run-{}", std::process::id()));
    let mut report = RunReport::new(crate::meta::run_meta());
    let outcome = main_job(&c, &suites, &loads, args, scale, &rt, &work, &mut report);
    let _ = std::fs::remove_dir_all(&work);
    let load_failed = match outcome {
        Ok(failed) => failed,
        Err(code) => return code,
    };
    let thresholds_failed = match check_thresholds(&mut report, &loads, &args.thresholds) {
        Ok(failed) => failed,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::USAGE;
        }
    };
    if baseline.is_some() || args.against.is_some() {
        match super::gate::judge(&report, baseline.as_ref(), args.against.as_deref(), settings) {
            Ok(g) => report.gate = Some(g),
            Err(e) => {
                eprintln!("error: {e}");
                return exit::USAGE;
            }
        }
    }
    let printed = common::print_report(&report, c.output);
    if printed != exit::OK {
        return printed;
    }
    if let (Some(g), super::Output::Text) = (&report.gate, c.output) {
        print!("\n{}", crate::gate::summary::text(g));
    }
    let written =
        meshbench_report::write::write(&out, &report).map_err(|e| format!("cannot write {}: {e}", out.display()));
    let saved = written.and_then(|()| match &args.save_baseline {
        Some(p) => meshbench_report::write::json(p, &report).map_err(|e| format!("cannot write {}: {e}", p.display())),
        None => Ok(()),
    });
    if let Err(e) = saved.and_then(|()| super::gate::write_summary(&report, args.gate.summary.as_deref())) {
        eprintln!("error: {e}");
        return exit::IO;
    }
    if c.output == super::Output::Text {
        println!("\nreport: {}", out.join("report.html").display());
    }
    verdict(&report, load_failed || thresholds_failed)
}

/// 1 when a case failed, a scenario failed or missed a threshold, or the gate found a
/// regression; 2 when the gate could compare nothing; 0 otherwise.
fn verdict(report: &RunReport, load_failed: bool) -> u8 {
    let gate = report.gate.as_ref().map(|g| g.verdict);
    if !common::conformance_ok(report) || load_failed || gate == Some(meshbench_report::GateVerdict::Regression) {
        exit::INVALID
    } else if gate == Some(meshbench_report::GateVerdict::CannotCompare) {
        exit::USAGE
    } else {
        exit::OK
    }
}

/// Checks each scenario's thresholds (its own and `extra`) on every target's results, with the
/// direct baseline of the same repetition for `added_*`. Ok: whether one failed.
fn check_thresholds(report: &mut RunReport, loads: &[Suite], extra: &[String]) -> Result<bool, String> {
    let direct: Vec<meshbench_report::LoadResult> = report
        .load
        .iter()
        .filter(|r| r.target.as_deref() == Some(crate::run::load::DIRECT))
        .cloned()
        .collect();
    let mut failed = false;
    for r in report
        .load
        .iter_mut()
        .filter(|r| r.target.as_deref() != Some(crate::run::load::DIRECT))
    {
        let own = loads
            .iter()
            .flat_map(|s| &s.scenarios)
            .find(|sc| sc.name == r.scenario)
            .map(|sc| sc.thresholds.clone())
            .unwrap_or_default();
        let all: Vec<String> = own.into_iter().chain(extra.iter().cloned()).collect();
        let base = direct
            .iter()
            .find(|d| d.scenario == r.scenario && d.repetition == r.repetition);
        r.thresholds = crate::gate::threshold::parse_all(&all)?
            .iter()
            .map(|t| t.check(r, base))
            .collect();
        failed |= r.thresholds.iter().any(|t| !t.passed);
    }
    Ok(failed)
}

/// Conformance on every target, then the load phase. Ok: whether a load scenario failed.
#[allow(clippy::too_many_arguments)] // One call site; the pieces of one job.
fn main_job(
    c: &Common,
    suites: &[Suite],
    loads: &[Suite],
    args: &Args,
    scale: Scale,
    rt: &tokio::runtime::Runtime,
    work: &std::path::Path,
    report: &mut RunReport,
) -> Result<bool, u8> {
    let mut slots = common::build_targets(c, &["reference", "envoy"], report).map_err(|e| {
        eprintln!("error: {e}");
        exit::USAGE
    })?;
    let job = Conformance {
        common: c,
        suites,
        repeat: 1,
        work,
    };
    common::conformance(job, &mut slots, rt, report)?;
    if loads.is_empty() {
        return Ok(false);
    }
    let mut targets: Vec<Box<dyn crate::targets::Target>> = slots
        .into_iter()
        .filter_map(|s| match s {
            Slot::Ready(t) => Some(t),
            Slot::Unavailable { .. } => None,
        })
        .collect();
    let hlog_dir = c.out.as_ref().map(|o| o.join("hlog"));
    if let Some(d) = &hlog_dir {
        if let Err(e) = std::fs::create_dir_all(d) {
            eprintln!("error: cannot create {}: {e}", d.display());
            return Err(exit::IO);
        }
    }
    let cx = LoadContext {
        work_dir: work,
        bin: std::env::current_exe().map_err(|_| exit::IO)?,
        scale,
        repeat: args.repeat,
        hlog_dir,
        print: c.output == super::Output::Text,
    };
    match crate::run::load_phase(rt, loads, &mut targets, &cx, report) {
        Ok(skipped) => {
            for (name, why) in skipped {
                eprintln!("load: {name} skipped: {why}");
            }
            Ok(report.load.iter().any(crate::run::failed))
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(true)
        }
    }
}
