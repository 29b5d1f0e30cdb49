//! `meshbench validate <path>…`: Istio's verdict on config files, as compiler-style diagnostics.
//! The verdict is the webhook's: only errors of meshbench's own codes (what Kubernetes would
//! refuse to store) make a config invalid; istioctl analyze's findings (`IST*`) are shown beside
//! them and counted apart (`meshbench analyze` reports them with Istio's levels).

use std::path::PathBuf;

use serde::Serialize;

use super::{counts, exit, plural, sorted, Output};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Files or directories (recursive, *.yaml and *.yml); `-` reads stdin.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// A MeshConfig file (outboundTrafficPolicy, defaultHttpRetryPolicy, rootNamespace, …).
    #[arg(long)]
    pub mesh: Option<PathBuf>,
    /// `text` (compiler style), `json` or `yaml`.
    #[arg(long, short, value_enum, default_value = "text")]
    pub output: Output,
}

#[derive(Debug, Serialize)]
struct Report<'a> {
    valid: bool,
    resources: usize,
    /// Errors the webhook would reject the config for.
    errors: usize,
    /// Error-level findings of the cross-resource analysis (IST codes); they do not make it invalid.
    analysis_errors: usize,
    warnings: usize,
    diagnostics: &'a [mesh_model::Diagnostic],
}

pub fn run(args: &Args) -> u8 {
    let (config, diags) = match super::load_validated(&args.paths, args.mesh.as_deref()) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let diags = sorted(diags);
    let (all_errors, warnings) = counts(&diags);
    let analysis_errors = diags.iter().filter(|d| d.is_error() && d.code.is_analysis()).count();
    let errors = all_errors - analysis_errors;
    let resources = config.resources.len();
    match args.output {
        Output::Json | Output::Yaml => {
            let report = Report {
                valid: errors == 0,
                resources,
                errors,
                analysis_errors,
                warnings,
                diagnostics: &diags,
            };
            let code = super::emit(&report, args.output);
            if code != exit::OK {
                return code;
            }
        }
        Output::Text => {
            for d in &diags {
                println!("{d}\n");
            }
            let verdict = if errors == 0 { "valid" } else { "invalid" };
            let analysis = match analysis_errors {
                0 => String::new(),
                n => format!("; analysis: {} (`meshbench analyze` lists them)", plural(n, "error")),
            };
            println!(
                "{verdict}: {}, {} in {}{analysis}",
                plural(errors, "error"),
                plural(warnings, "warning"),
                plural(resources, "resource")
            );
        }
    }
    if errors == 0 {
        exit::OK
    } else {
        exit::INVALID
    }
}
