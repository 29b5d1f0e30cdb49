//! `meshbench report run.json`: renders a saved run report again.

use std::path::PathBuf;

use meshbench_report::RunReport;

use super::{exit, Output};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A report written by `--out` or `--output json`.
    pub report: PathBuf,
    #[arg(long, short, value_enum, default_value = "text")]
    pub output: Output,
    /// Also render the report as one self-contained HTML page here.
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// Also write its JUnit XML here.
    #[arg(long)]
    pub junit: Option<PathBuf>,
}

pub fn run(args: &Args) -> u8 {
    let text = match std::fs::read_to_string(&args.report) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", args.report.display());
            return exit::IO;
        }
    };
    let report: RunReport = match serde_json::from_str(&text) {
        Ok(r) => r,
        Err(e) => {
            eprintln!(
                "error: {}:{}: not a meshbench run report: {e}",
                args.report.display(),
                e.line()
            );
            return exit::IO;
        }
    };
    let files = [
        (&args.html, meshbench_report::html::render as fn(&RunReport) -> String),
        (&args.junit, meshbench_report::junit::render),
    ];
    for (path, render) in files {
        if let Some(p) = path {
            if let Err(e) = std::fs::write(p, render(&report)) {
                eprintln!("error: cannot write {}: {e}", p.display());
                return exit::IO;
            }
        }
    }
    super::common::print_report(&report, args.output)
}
