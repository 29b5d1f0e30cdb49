//! `meshbench conform [--target reference|external] [--suite NAME|PATH]… [--filter GLOB] [--out DIR]`:
//! runs conformance suites and says, case by case, whether the target behaves as Istio specifies.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use meshbench_report::{CaseOutcome, RunReport, TargetInfo};

use super::exit;
use crate::conform::run::Known;
use crate::conform::suite::{self, Suite};
use crate::conform::target::{External, Reference, Target};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// `reference` (meshgate) or `external`.
    #[arg(long, default_value = "reference")]
    pub target: String,
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
    /// External target: suite port to address, `80=10.0.0.5:80`; repeatable.
    #[arg(long, value_delimiter = ',')]
    pub address: Vec<String>,
    /// Known differences of the target (YAML map `suite/case: reason`); default:
    /// suites/known-differences/<target>.yaml when it exists.
    #[arg(long)]
    pub known_differences: Option<PathBuf>,
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

fn suites(args: &Args) -> Result<Vec<Suite>, String> {
    if args.suite.is_empty() {
        return suite::EMBEDDED
            .iter()
            .map(|(name, text)| suite::parse(&format!("<built-in {name}>"), text))
            .collect();
    }
    args.suite
        .iter()
        .map(|s| match suite::EMBEDDED.iter().find(|(n, _)| n == s) {
            Some((name, text)) => suite::parse(&format!("<built-in {name}>"), text),
            None => suite::read(std::path::Path::new(s)),
        })
        .collect()
}

fn known(args: &Args) -> Result<Known, String> {
    let path = args
        .known_differences
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("suites/known-differences/{}.yaml", args.target)));
    if !path.exists() {
        return Ok(Known::new());
    }
    let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let sources = mesh_model::load::parse_str(&path.display().to_string(), &text);
    let doc = sources.documents.first().map(|d| d.root.to_json()).unwrap_or_default();
    serde_json::from_value(doc).map_err(|e| format!("{}: expected a map of `suite/case: reason`: {e}", path.display()))
}

fn target(args: &Args) -> Result<Box<dyn Target>, String> {
    match args.target.as_str() {
        "reference" => Ok(Box::new(Reference::new(args.meshgate.clone())?)),
        "external" => {
            let mut addresses = BTreeMap::new();
            for a in &args.address {
                let (p, addr) = a
                    .split_once('=')
                    .ok_or_else(|| format!("--address `{a}` is not PORT=HOST:PORT"))?;
                let addr: SocketAddr = addr.parse().map_err(|_| format!("--address `{a}`: bad address"))?;
                addresses.insert(p.parse().map_err(|_| format!("--address `{a}`: bad port"))?, addr);
            }
            Ok(Box::new(External { addresses }))
        }
        other => Err(format!("unknown target `{other}`: use reference or external")),
    }
}

pub fn run(args: &Args) -> u8 {
    let setup = suites(args).and_then(|s| Ok((s, known(args)?, target(args)?)));
    let (suites, known, mut target) = match setup {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::USAGE;
        }
    };
    let Ok(rt) = tokio::runtime::Builder::new_multi_thread().enable_all().build() else {
        return exit::IO;
    };
    let work = std::env::temp_dir().join(format!("meshbench-conform-{}", std::process::id()));
    let mut report = RunReport::new(crate::meta::run_meta());
    report.targets.push(TargetInfo {
        name: target.name().into(),
        kind: args.target.clone(),
        address: None,
        version: None,
    });
    let placement = crate::conform::run::Placement {
        ip: args.workload_address,
        base_port: args.workload_ports,
        certs: args.certs.clone(),
    };
    for s in &suites {
        if args.print_config {
            let certs = placement.certs_dir(&work, &s.name);
            let registry = crate::conform::tls::make_certificates(&s.certificates, &certs)
                .and_then(|()| rt.block_on(crate::conform::run::start_workloads(s, &certs, &placement)));
            let registry = match registry {
                Ok(w) => w.registry,
                Err(e) => {
                    eprintln!("error: suite {}: {e}", s.name);
                    return exit::USAGE;
                }
            };
            let config = s.config.replace("${certs}", &certs.display().to_string());
            println!("# suite {}\n{}\n---\n{registry}", s.name, config.trim_end());
            continue;
        }
        for _ in 0..args.repeat.max(1) {
            let logs = args.out.as_ref().map(|o| o.join("logs"));
            let run = crate::conform::run::run_suite(
                s,
                target.as_mut(),
                &work,
                &known,
                args.filter.as_deref(),
                logs.as_deref(),
                &placement,
            );
            // Ctrl-C or SIGTERM drops the suite in flight: its workloads and extra gateways go
            // with it, and the target is stopped below, so no meshgate outlives the run.
            let outcome = rt.block_on(async {
                tokio::select! {
                    r = run => Some(r),
                    () = interrupted() => None,
                }
            });
            let Some(outcome) = outcome else {
                target.stop();
                let _ = std::fs::remove_dir_all(&work);
                eprintln!("interrupted: gateways and workloads stopped");
                return exit::INTERRUPTED;
            };
            match outcome {
                Ok(result) => {
                    for c in &result.cases {
                        let label = match c.outcome {
                            CaseOutcome::Pass => "PASS",
                            CaseOutcome::Fail => "FAIL",
                            CaseOutcome::Skip => "SKIP",
                            CaseOutcome::ExpectedFailure => "XFAIL",
                            CaseOutcome::UnexpectedPass => "XPASS",
                        };
                        println!(
                            "{label:<5} {}/{}{}",
                            result.suite,
                            c.id,
                            c.message.as_deref().map(|m| format!("\n      {m}")).unwrap_or_default()
                        );
                    }
                    report.conformance.push(result);
                }
                Err(e) => {
                    eprintln!("error: suite {}: {e}", s.name);
                    return exit::USAGE;
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&work);
    if args.print_config {
        return exit::OK;
    }
    print!(
        "{}",
        meshbench_report::text::render(&report)
            .split_once('\n')
            .map_or("", |(_, rest)| rest)
    );
    if let Some(dir) = &args.out {
        let written = std::fs::create_dir_all(dir)
            .and_then(|_| {
                std::fs::write(
                    dir.join("conformance.json"),
                    serde_json::to_string_pretty(&report).unwrap_or_default(),
                )
            })
            .and_then(|_| {
                std::fs::write(
                    dir.join("junit.xml"),
                    crate::conform::junit::render(&report.conformance),
                )
            });
        if let Err(e) = written {
            eprintln!("error: cannot write {}: {e}", dir.display());
            return exit::IO;
        }
    }
    let failed = report
        .conformance
        .iter()
        .flat_map(|s| &s.cases)
        .any(|c| matches!(c.outcome, CaseOutcome::Fail | CaseOutcome::UnexpectedPass));
    if failed {
        exit::INVALID
    } else {
        exit::OK
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn interrupted() {
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
