//! `meshbench plan <path>…`: the Plan (listeners, route tables, clusters) a gateway would run.

use std::collections::BTreeMap;
use std::path::PathBuf;

use mesh_model::plan::{self, PlanOptions};

use mesh_model::Diagnostic;

use super::{counts, exit, sorted, Output};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Files or directories (recursive, *.yaml and *.yml); `-` reads stdin.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// A MeshConfig file.
    #[arg(long)]
    pub mesh: Option<PathBuf>,
    /// The gateway workload's labels, e.g. `istio=ingressgateway`; Gateways select it by these.
    /// Without it, every Gateway applies.
    #[arg(long, value_delimiter = ',')]
    pub labels: Vec<String>,
    /// The gateway's config namespace (first in DestinationRule lookup).
    #[arg(long)]
    pub namespace: Option<String>,
    /// Plan the sidecar role (outbound routing of VirtualServices bound to `mesh`).
    #[arg(long)]
    pub sidecar: bool,
    /// Print the Envoy v3 bootstrap of the Plan (istiod's names) instead of the Plan.
    #[arg(long)]
    pub envoy: bool,
    /// With `--sidecar --envoy`: the transparent-capture shape (iptables redirects to 15001;
    /// `virtualOutbound` with `use_original_dst` and a listener per outbound port).
    #[arg(long, requires = "sidecar")]
    pub capture: bool,
    /// With --envoy: the folder of `credentialName` secrets (`<dir>/<name>/tls.crt`, …).
    #[arg(long)]
    pub credentials: Option<PathBuf>,
    /// `json`, `yaml` or `text` (a summary for people).
    #[arg(long, short, value_enum, default_value = "json")]
    pub output: Output,
}

/// Parses `k=v` pairs.
pub fn parse_labels(items: &[String]) -> Result<BTreeMap<String, String>, String> {
    items
        .iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(format!(
                "`{kv}` is not a label: write key=value, e.g. istio=ingressgateway"
            )),
        })
        .collect()
}

pub fn run(args: &Args) -> u8 {
    let labels = match parse_labels(&args.labels) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::INVALID;
        }
    };
    let (config, mut diags) = match super::load_validated(&args.paths, args.mesh.as_deref()) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let opts = PlanOptions {
        labels: (!args.labels.is_empty()).then_some(labels),
        namespace: args.namespace.clone(),
        sidecar: args.sidecar,
    };
    let (plan, plan_diags) = plan::build(&config, &opts);
    diags.extend(plan_diags);
    let diags = sorted(diags);
    for d in diags.iter().filter(|d| d.severity != mesh_model::Severity::Info) {
        eprintln!("{d}\n");
    }
    // What Istio's validation rejects stops the plan; analyzer findings (IST*) do not, as a
    // gateway still runs such a config (a missing subset answers 503 NC).
    let rejected: Vec<Diagnostic> = diags.into_iter().filter(|d| !d.code.id().starts_with("IST")).collect();
    let (errors, _) = counts(&rejected);
    if errors > 0 {
        eprintln!("error: the config has {errors} error(s); no plan printed (run `meshbench validate` for details)");
        return exit::INVALID;
    }
    if args.output == Output::Text && !args.envoy {
        print!("{}", plan::text::render(&plan));
        return exit::OK;
    }
    if args.envoy {
        let opts = mesh_model::envoy::EnvoyOptions {
            credentials: args.credentials.as_ref().map(|p| p.display().to_string()),
            capture: args.capture,
            ..Default::default()
        };
        // Envoy's config has no text form: `text` prints its JSON.
        let output = if args.output == Output::Yaml {
            Output::Yaml
        } else {
            Output::Json
        };
        return super::emit(&mesh_model::envoy::bootstrap(&plan, &opts), output);
    }
    super::emit(&plan, args.output)
}
