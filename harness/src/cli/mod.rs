//! The command line: one module per subcommand, each an `Args` struct and a `run()`.

pub mod analyze;
pub mod collect;
pub mod common;
pub mod completions;
pub mod conform;
pub mod distribute;
pub mod echo;
pub mod gate;
pub mod images;
pub mod load;
pub mod merge;
pub mod plan;
pub mod report;
pub mod run;
pub mod validate;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use mesh_model::Diagnostic;

#[derive(Debug, Parser)]
#[command(
    name = "meshbench",
    version,
    about = "Conformance and load suites for Istio-style gateways"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Istio's webhook verdict on config files (exit 1 only for what Kubernetes would refuse to
    /// store), with istioctl analyze's cross-checks shown beside it.
    Validate(validate::Args),
    /// istioctl analyze's messages for config files, with Istio's codes and levels (exit 79 when
    /// a message reaches --failure-threshold, as istioctl does).
    Analyze(analyze::Args),
    /// Compile Istio config into the Plan a gateway executes (its config dump).
    Plan(plan::Args),
    /// Load-test a target: open loop (constant rate, corrected latency) or closed loop (max throughput).
    Load(Box<load::Args>),
    /// Merge HdrHistogram interval logs from several workers or machines, exactly.
    Merge(merge::Args),
    /// Split one load run over N workers that start together: local processes, a Docker Swarm
    /// replicated job, or a Kubernetes Indexed Job (manifests).
    Distribute(Box<distribute::Args>),
    /// Merge a distributed run's workers exactly into one report; exit 2 when a worker is
    /// missing, failed, late or saturated.
    Collect(collect::Args),
    /// Build the container images (meshbench, meshgate) from this build's binaries.
    Images(images::Args),
    /// Render a saved run report.
    Report(report::Args),
    /// The main job: conformance and load on every target (meshgate and Envoy by default) and
    /// the direct baseline, into report.json, junit.xml and report.html.
    Run(run::Args),
    /// Run conformance suites against a target, case by case.
    Conform(conform::Args),
    /// Compare a report with a baseline: exit 1 on a conformance regression or a significant
    /// slowdown, 2 when nothing could be compared.
    Gate(gate::Args),
    /// Run an echo workload (HTTP/1.1 + h2c, gRPC, TCP) answering in Istio's echo format.
    Echo(echo::Args),
    /// Print a shell completion script: `meshbench completions bash > /etc/bash_completion.d/meshbench`.
    Completions(completions::Args),
}

/// A reader that stops reading (`meshbench plan … | head`) ends the run quietly with exit 0, as
/// Unix tools do, instead of a panic about a broken pipe: Rust ignores SIGPIPE, so printing to a
/// closed stdout panics; this hook turns exactly that panic into a clean exit.
pub fn quiet_on_closed_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if is_closed_pipe(msg) {
            std::process::exit(i32::from(exit::OK));
        }
        default(info);
    }));
}

/// Whether a panic message is `println!`'s on a closed stdout.
pub fn is_closed_pipe(msg: &str) -> bool {
    msg.starts_with("failed printing to stdout") && msg.contains("Broken pipe")
}

/// Exit codes shared by the subcommands.
pub mod exit {
    /// Everything valid (warnings allowed).
    pub const OK: u8 = 0;
    /// The config has errors.
    pub const INVALID: u8 = 1;
    /// A path could not be read, or output could not be written.
    pub const IO: u8 = 2;
    /// The command could not run as given (bad flags, unreachable target setup).
    pub const USAGE: u8 = 2;
    /// Stopped by SIGINT or SIGTERM (128 + SIGINT, as shells report it).
    pub const INTERRUPTED: u8 = 130;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
    Yaml,
}

/// Prints a machine-readable value as `--output json` or `yaml` asks (text callers print their own).
pub fn emit<T: serde::Serialize>(value: &T, output: Output) -> u8 {
    let v = match serde_json::to_value(value) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: cannot write the output: {e}");
            return exit::IO;
        }
    };
    match output {
        Output::Yaml => print!("{}", mesh_model::load::to_yaml_string(&v)),
        Output::Json | Output::Text => println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default()),
    }
    exit::OK
}

pub fn run(cli: Cli) -> ExitCode {
    let code = match cli.command {
        Command::Validate(args) => validate::run(&args),
        Command::Analyze(args) => analyze::run(&args),
        Command::Plan(args) => plan::run(&args),
        Command::Load(args) => load::run(&args),
        Command::Merge(args) => merge::run(&args),
        Command::Distribute(args) => distribute::run(&args),
        Command::Collect(args) => collect::run(&args),
        Command::Images(args) => images::run(&args),
        Command::Report(args) => report::run(&args),
        Command::Echo(args) => echo::run(&args),
        Command::Conform(args) => conform::run(&args),
        Command::Gate(args) => gate::run(&args),
        Command::Run(args) => run::run(&args),
        Command::Completions(args) => completions::run(&args),
    };
    ExitCode::from(code)
}

/// Loads config paths (and a mesh file) and validates them: the config and every diagnostic.
/// Err: the exit code, after saying why a path could not be read.
pub fn load_validated(
    paths: &[std::path::PathBuf],
    mesh: Option<&std::path::Path>,
) -> Result<(mesh_model::Config, Vec<Diagnostic>), u8> {
    let loaded = mesh_model::load_paths(paths, mesh).map_err(|e| {
        eprintln!("error: cannot read {e}");
        exit::IO
    })?;
    let mut diags = loaded.diagnostics;
    diags.extend(mesh_model::validate::validate(&loaded.config));
    Ok((loaded.config, diags))
}

/// Diagnostics in file and line order (stable for the same input).
pub fn sorted(mut diags: Vec<Diagnostic>) -> Vec<Diagnostic> {
    diags.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
    diags
}

/// `N errors, M warnings` with correct plurals.
pub fn counts(diags: &[Diagnostic]) -> (usize, usize) {
    let errors = diags
        .iter()
        .filter(|d| d.severity == mesh_model::Severity::Error)
        .count();
    let warnings = diags
        .iter()
        .filter(|d| d.severity == mesh_model::Severity::Warning)
        .count();
    (errors, warnings)
}

pub fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("{n} {word}")
    } else {
        format!("{n} {word}s")
    }
}
