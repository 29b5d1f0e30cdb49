//! `meshbench validate <path>…`: Istio's verdict on config files, as compiler-style diagnostics.

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
    errors: usize,
    warnings: usize,
    diagnostics: &'a [mesh_model::Diagnostic],
}

pub fn run(args: &Args) -> u8 {
    let (config, diags) = match super::load_validated(&args.paths, args.mesh.as_deref()) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let diags = sorted(diags);
    let (errors, warnings) = counts(&diags);
    let resources = config.resources.len();
    match args.output {
        Output::Json | Output::Yaml => {
            let report = Report {
                valid: errors == 0,
                resources,
                errors,
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
            println!(
                "{verdict}: {}, {} in {}",
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
