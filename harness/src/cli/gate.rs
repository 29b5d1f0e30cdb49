//! `meshbench gate --baseline FILE report.json`: compares a run with a baseline run and exits 0
//! (pass), 1 (a conformance regression or a significant slowdown) or 2 (could not compare).

use std::path::{Path, PathBuf};

use meshbench_report::{GateReport, RunReport};

use super::{exit, Output};
use crate::gate::{self, Settings};

/// What the gate takes on any command that gates (`gate`, `run --baseline`).
#[derive(Debug, Clone, clap::Args)]
pub struct GateOptions {
    /// The family-wise false-alarm rate: the chance that a comparison of unchanged builds flags
    /// anything, over all its figures together.
    #[arg(long, default_value = "0.01")]
    pub alpha: f64,
    /// Changes shown to be smaller than this are noise, e.g. `10%`.
    #[arg(long, default_value = "10%")]
    pub noise: String,
    /// Write the verdict as Markdown here (also appended to $GITHUB_STEP_SUMMARY when it is set).
    #[arg(long)]
    pub summary: Option<PathBuf>,
}

impl GateOptions {
    pub fn settings(&self) -> Result<Settings, String> {
        let noise = self
            .noise
            .trim()
            .strip_suffix('%')
            .and_then(|n| n.trim().parse::<f64>().ok())
            .map(|n| n / 100.0)
            .filter(|n| (0.0..10.0).contains(n))
            .ok_or_else(|| format!("--noise `{}`: write a percentage such as 10%", self.noise))?;
        if !(self.alpha > 0.0 && self.alpha < 1.0) {
            return Err(format!("--alpha {}: must be between 0 and 1", self.alpha));
        }
        Ok(Settings {
            alpha: self.alpha,
            noise,
        })
    }
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A report saved by `meshbench run --save-baseline FILE` (or any report.json).
    #[arg(long, required_unless_present = "against", conflicts_with = "against")]
    pub baseline: Option<PathBuf>,
    /// Instead of a baseline file: the target of this same report to compare the others with
    /// (another build run beside them, e.g. `--target main=reference:/tmp/main/meshgate,reference`).
    #[arg(long)]
    pub against: Option<String>,
    /// The report to judge (`out/report.json`).
    pub report: PathBuf,
    #[command(flatten)]
    pub gate: GateOptions,
    /// Also write the report with the gate's verdict (JSON) here, and its JUnit XML.
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long, short, value_enum, default_value = "text")]
    pub output: Output,
}

/// Reads a report, saying which file is not one.
pub fn read_report(path: &Path) -> Result<RunReport, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}:{}: not a meshbench report: {e}", path.display(), e.line()))
}

/// Writes the Markdown summary where asked: `--summary` and GitHub's step summary.
pub fn write_summary(report: &RunReport, file: Option<&Path>) -> Result<(), String> {
    let md = gate::summary::markdown(report);
    if let Some(f) = file {
        std::fs::write(f, &md).map_err(|e| format!("cannot write {}: {e}", f.display()))?;
    }
    if let Some(gh) = std::env::var_os("GITHUB_STEP_SUMMARY").filter(|v| !v.is_empty()) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&gh)
            .map_err(|e| format!("cannot write $GITHUB_STEP_SUMMARY: {e}"))?;
        f.write_all(md.as_bytes())
            .map_err(|e| format!("cannot write $GITHUB_STEP_SUMMARY: {e}"))?;
    }
    Ok(())
}

/// The gate's verdict on `now`: against a baseline report, or against one of its own targets.
pub fn judge(
    now: &RunReport,
    baseline: Option<&RunReport>,
    against: Option<&str>,
    s: Settings,
) -> Result<GateReport, String> {
    match (baseline, against) {
        (_, Some(name)) => gate::compare_in_run(now, name, s),
        (Some(base), None) => Ok(gate::compare(base, now, s)),
        (None, None) => Err("give --baseline FILE or --against TARGET".into()),
    }
}

pub fn run(args: &Args) -> u8 {
    let loaded = args.gate.settings().and_then(|s| {
        let base = args.baseline.as_deref().map(read_report).transpose()?;
        Ok((s, base, read_report(&args.report)?))
    });
    let (settings, base, mut now) = match loaded {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::USAGE;
        }
    };
    let g = match judge(&now, base.as_ref(), args.against.as_deref(), settings) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::USAGE;
        }
    };
    let code = gate::exit_code(g.verdict);
    if args.output == Output::Text {
        print!("{}", gate::summary::text(&g));
    }
    now.gate = Some(g);
    if args.output != Output::Text {
        let printed = super::emit(&now.gate, args.output);
        if printed != exit::OK {
            return printed;
        }
    }
    if let Err(e) = write_summary(&now, args.gate.summary.as_deref()) {
        eprintln!("error: {e}");
        return exit::IO;
    }
    if let Some(dir) = &args.out {
        if let Err(e) = meshbench_report::write::write(dir, &now) {
            eprintln!("error: cannot write {}: {e}", dir.display());
            return exit::IO;
        }
    }
    code
}
