//! `meshbench collect DIR`: the workers of a distributed run merged exactly into one report,
//! with thresholds and the baseline gate on the merged figures. A worker that is missing,
//! failed, started late or ran saturated makes the run incomplete: exit 2, never a pass.

use std::path::PathBuf;
use std::time::Duration;

use meshbench_report::WorkerState;

use super::{exit, Output};
use crate::distribute::collect::{collect, complete, Tolerance};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The result directory the workers wrote to.
    pub dir: PathBuf,
    /// How many workers there were (default: the plan's count in DIR).
    #[arg(long)]
    pub workers: Option<u32>,
    /// A worker that began later than this after the shared start makes the run incomplete.
    #[arg(long, default_value = "1s")]
    pub late_after: String,
    /// A threshold the merged run must meet (`p99 < 5ms`); repeatable. A failed one exits 1.
    #[arg(long = "threshold")]
    pub thresholds: Vec<String>,
    /// A baseline report: the gate compares the merged run with it.
    #[arg(long)]
    pub baseline: Option<PathBuf>,
    #[command(flatten)]
    pub gate: super::gate::GateOptions,
    /// Write the merged report here: report.json, junit.xml and report.html in a directory, or
    /// one JSON file when the name ends in .json.
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long, short, value_enum, default_value = "text")]
    pub output: Output,
}

/// One line per worker, for the terminal.
fn worker_lines(report: &meshbench_report::RunReport) -> String {
    let mut s = String::new();
    for l in &report.load {
        let Some(d) = &l.distribution else { continue };
        s.push_str(&format!("{}: {} workers\n", l.scenario, d.workers_total));
        for w in &d.workers {
            let state = match w.state {
                WorkerState::Ok => "ok",
                WorkerState::Missing => "MISSING",
                WorkerState::Failed => "FAILED",
                WorkerState::Late => "LATE",
                WorkerState::Saturated => "SATURATED",
            };
            s.push_str(&format!(
                "  worker {:>3} {:<9} {:>9} requests {:>10.1} rps  p99 {:>9}  {}\n",
                w.index,
                state,
                w.requests,
                w.rps,
                meshbench_report::text::us(w.p99_us),
                w.message.as_deref().unwrap_or(&w.host)
            ));
        }
    }
    s
}

fn write_out(path: &std::path::Path, report: &meshbench_report::RunReport) -> Result<(), String> {
    let written = if path.extension().is_some_and(|e| e == "json") {
        meshbench_report::write::json(path, report)
    } else {
        meshbench_report::write::write(path, report)
    };
    written.map_err(|e| format!("cannot write {}: {e}", path.display()))
}

pub fn run(args: &Args) -> u8 {
    let late = match mesh_model::api::Duration::parse(&args.late_after) {
        Ok(d) => d.as_std(),
        Err(e) => {
            eprintln!("error: --late-after: {e}");
            return exit::USAGE;
        }
    };
    let tol = Tolerance {
        late: late.max(Duration::from_millis(1)),
        ..Tolerance::default()
    };
    let prepared = crate::gate::threshold::parse_all(&args.thresholds).and_then(|t| {
        let base = args.baseline.as_deref().map(super::gate::read_report).transpose()?;
        Ok((t, base, args.gate.settings()?))
    });
    let (thresholds, baseline, settings) = match prepared {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::USAGE;
        }
    };
    let mut report = match collect(&args.dir, args.workers, tol) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::USAGE;
        }
    };
    for l in &mut report.load {
        l.thresholds = thresholds.iter().map(|t| t.check(l, None)).collect();
    }
    if let Some(base) = &baseline {
        report.gate = Some(crate::gate::compare(base, &report, settings));
    }
    if args.output == Output::Text {
        for l in &report.load {
            print!("{}", meshbench_report::text::render_load(l));
        }
        print!("{}", worker_lines(&report));
        if let Some(g) = &report.gate {
            print!("{}", crate::gate::summary::text(g));
        }
    } else {
        let printed = super::emit(&report, args.output);
        if printed != exit::OK {
            return printed;
        }
    }
    if let Some(path) = &args.out {
        if let Err(e) = write_out(path, &report) {
            eprintln!("error: {e}");
            return exit::IO;
        }
    }
    if !complete(&report) {
        for p in report
            .load
            .iter()
            .filter_map(|l| l.distribution.as_ref())
            .flat_map(|d| &d.problems)
        {
            eprintln!("incomplete: {p}");
        }
        return exit::USAGE;
    }
    if let Some(g) = &report.gate {
        let code = crate::gate::exit_code(g.verdict);
        if code != exit::OK {
            return code;
        }
    }
    if report
        .load
        .iter()
        .any(|r| crate::run::failed(r) || r.thresholds.iter().any(|t| !t.passed))
    {
        return exit::INVALID;
    }
    exit::OK
}
