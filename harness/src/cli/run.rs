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
    let (suites, loads) = match picked {
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
    let printed = common::print_report(&report, c.output);
    if printed != exit::OK {
        return printed;
    }
    if let Err(e) = meshbench_report::write::write(&out, &report) {
        eprintln!("error: cannot write {}: {e}", out.display());
        return exit::IO;
    }
    if c.output == super::Output::Text {
        println!("\nreport: {}", out.join("report.html").display());
    }
    if common::conformance_ok(&report) && !load_failed {
        exit::OK
    } else {
        exit::INVALID
    }
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
