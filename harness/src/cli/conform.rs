//! `meshbench conform [--target reference,envoy,external] [--suite NAME|PATH]… [--filter GLOB]
//! [--out DIR]`: runs conformance suites against each target and says, case by case, whether it
//! behaves as Istio specifies.

use meshbench_report::RunReport;

use super::common::{self, Common, Conformance};
use super::exit;
use crate::conform::run;
use crate::conform::suite::Suite;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    /// Run every suite this many times.
    #[arg(long, default_value = "1")]
    pub repeat: u32,
    /// Print the Istio YAML a suite needs (config plus its workloads' registry) and exit. With an
    /// external gateway, give `--workload-ports` (and `--workload-address`) here and in the run.
    #[arg(long)]
    pub print_config: bool,
}

/// Prints `--print-config` for each suite.
fn print_config(suites: &[Suite], c: &Common, rt: &tokio::runtime::Runtime, work: &std::path::Path) -> u8 {
    let placement = c.placement();
    for s in suites {
        let certs = placement.certs_dir(work, &s.name);
        let registry = crate::conform::tls::make_certificates(&s.certificates, &certs)
            .and_then(|()| rt.block_on(run::start_workloads(s, &certs, &placement)));
        let registry = match registry {
            Ok(w) => w.registry,
            Err(e) => {
                eprintln!("error: suite {}: {e}", s.name);
                return exit::USAGE;
            }
        };
        let config = s.config.replace("${certs}", &certs.display().to_string());
        println!("# suite {}\n{}\n---\n{registry}", s.name, config.trim_end());
    }
    exit::OK
}

pub fn run(args: &Args) -> u8 {
    let c = &args.common;
    let Ok(rt) = tokio::runtime::Builder::new_multi_thread().enable_all().build() else {
        return exit::IO;
    };
    let work = std::env::temp_dir().join(format!("meshbench-conform-{}", std::process::id()));
    let suites = match c.selected_suites() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::USAGE;
        }
    };
    if args.print_config {
        let code = print_config(&suites, c, &rt, &work);
        let _ = std::fs::remove_dir_all(&work);
        return code;
    }
    let mut report = RunReport::new(crate::meta::run_meta());
    let job = Conformance {
        common: c,
        suites: &suites,
        repeat: args.repeat,
        work: &work,
    };
    let ran = common::build_targets(c, &["reference"], &mut report)
        .map_err(|e| {
            eprintln!("error: {e}");
            exit::USAGE
        })
        .and_then(|mut slots| common::conformance(job, &mut slots, &rt, &mut report));
    let _ = std::fs::remove_dir_all(&work);
    if let Err(code) = ran {
        return code;
    }
    let printed = common::print_report(&report, c.output);
    if printed != exit::OK {
        return printed;
    }
    if let Some(dir) = &c.out {
        if let Err(e) = meshbench_report::write::write(dir, &report) {
            eprintln!("error: cannot write {}: {e}", dir.display());
            return exit::IO;
        }
    }
    if common::conformance_ok(&report) {
        exit::OK
    } else {
        exit::INVALID
    }
}
