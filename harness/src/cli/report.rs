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
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default()),
        Output::Text | Output::Yaml => print!("{}", meshbench_report::text::render(&report)),
    }
    exit::OK
}
