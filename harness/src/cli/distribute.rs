//! `meshbench distribute --engine local|swarm|kubernetes --workers N --out DIR -- LOAD-ARGS`:
//! one load run split over N workers that start together, each writing its result to DIR for
//! `meshbench collect`.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use super::exit;
use crate::distribute::engine::{self, Engine, Launch};
use crate::distribute::{format_time, parse_time};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[arg(long, value_enum)]
    pub engine: Engine,
    /// How many workers share the run.
    #[arg(long)]
    pub workers: u32,
    /// The result directory (created): the plan, and each worker's marker, report and log.
    #[arg(long)]
    pub out: PathBuf,
    /// A load scenario (suites/load/*.yaml), shipped to the workers.
    #[arg(long)]
    pub scenario: Option<PathBuf>,
    /// The whole run's rate (requests per second); each worker takes rate / N.
    #[arg(long, short = 'R')]
    pub rate: Option<f64>,
    /// The shared start: this long after now (workers need time to be scheduled).
    /// Default: 5s, 2m for kubernetes.
    #[arg(long)]
    pub start_in: Option<String>,
    /// The shared start as a wall-clock time (RFC 3339 or Unix seconds), instead of --start-in.
    #[arg(long, conflicts_with = "start_in")]
    pub start_at: Option<String>,
    /// The image of the workers (swarm, kubernetes).
    #[arg(long, default_value = concat!("meshbench/meshbench:", env!("CARGO_PKG_VERSION")))]
    pub image: String,
    /// The Swarm service / Kubernetes Job name. Default: meshbench-load-<unix seconds>.
    #[arg(long)]
    pub name: Option<String>,
    /// Kubernetes: the PersistentVolumeClaim (ReadWriteMany) the workers write to.
    #[arg(long, default_value = "meshbench-results")]
    pub results_claim: String,
    /// Swarm: launch and return, without waiting for the workers.
    #[arg(long)]
    pub no_wait: bool,
    /// Swarm: how long to wait for the workers to end, e.g. 10m.
    #[arg(long, default_value = "10m")]
    pub wait: String,
    /// Arguments of each worker's `meshbench load` (URL, --duration, --connections, …).
    #[arg(last = true)]
    pub load: Vec<String>,
}

fn duration(flag: &str, text: &str) -> Result<Duration, String> {
    mesh_model::api::Duration::parse(text)
        .map(|d| d.as_std())
        .map_err(|e| format!("--{flag}: {e}"))
}

/// The launch the flags describe; the scenario is copied into the result directory.
fn launch(args: &Args) -> Result<Launch, String> {
    if args.workers == 0 {
        return Err("--workers must be at least 1".into());
    }
    for flag in [
        "--worker-index",
        "--workers-total",
        "--start-at",
        "--results",
        "--scenario",
        "--rate",
        "-R",
    ] {
        if args
            .load
            .iter()
            .any(|a| a == flag || a.starts_with(&format!("{flag}=")))
        {
            return Err(format!(
                "{flag} after `--` is set by distribute itself: give --scenario/--rate before `--`, the share flags not at all"
            ));
        }
    }
    std::fs::create_dir_all(&args.out).map_err(|e| format!("cannot create {}: {e}", args.out.display()))?;
    let out = std::fs::canonicalize(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    let start_at = match (&args.start_at, &args.start_in) {
        (Some(t), _) => parse_time(t).map_err(|e| format!("--start-at: {e}"))?,
        (None, Some(d)) => SystemTime::now() + duration("start-in", d)?,
        (None, None) if args.engine == Engine::Kubernetes => SystemTime::now() + Duration::from_secs(120),
        (None, None) => SystemTime::now() + Duration::from_secs(5),
    };
    let mut load_args = args.load.clone();
    let mut scenario = None;
    if let Some(path) = &args.scenario {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        // Checked here, so a mistake is reported once and not by N workers.
        super::load::read_scenario(path)?;
        std::fs::write(out.join("scenario.yaml"), &text)
            .map_err(|e| format!("cannot write in {}: {e}", out.display()))?;
        load_args.push("--scenario".into());
        load_args.push(engine::scenario_path(args.engine, &out).display().to_string());
        scenario = Some(text);
    }
    if let Some(r) = args.rate {
        load_args.push("--rate".into());
        load_args.push(r.to_string());
    }
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Ok(Launch {
        engine: args.engine,
        workers: args.workers,
        out,
        start_at,
        load_args,
        image: args.image.clone(),
        name: args.name.clone().unwrap_or_else(|| format!("meshbench-load-{secs}")),
        results_claim: args.results_claim.clone(),
        scenario,
    })
}

pub fn run(args: &Args) -> u8 {
    let l = match launch(args).and_then(|l| engine::write_plan(&l).map(|()| l)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::USAGE;
        }
    };
    let dir = l.out.display();
    eprintln!(
        "{} workers on {}, starting at {}, results in {dir}",
        l.workers,
        l.engine.name(),
        format_time(l.start_at)
    );
    let outcome = match l.engine {
        Engine::Local => engine::run_local(&l).map(|codes| {
            codes
                .iter()
                .enumerate()
                .map(|(i, c)| match c {
                    Some(c) => format!("worker {i}: exit {c}"),
                    None => format!("worker {i}: killed by a signal"),
                })
                .collect()
        }),
        Engine::Swarm => {
            let wait = match duration("wait", &args.wait) {
                Ok(w) => (!args.no_wait).then_some(w),
                Err(e) => {
                    eprintln!("error: {e}");
                    return exit::USAGE;
                }
            };
            engine::run_swarm(&l, wait).map(|states| states.iter().map(|s| format!("task {s}")).collect())
        }
        Engine::Kubernetes => {
            let path = l.out.join("job.yaml");
            std::fs::write(&path, engine::kubernetes_yaml(&l))
                .map(|()| {
                    vec![format!(
                        "wrote {}: kubectl apply -f {0}, wait for job/{}, copy the claim `{}` to a directory, then meshbench collect it",
                        path.display(),
                        l.name,
                        l.results_claim
                    )]
                })
                .map_err(|e| format!("cannot write {}: {e}", path.display()))
        }
    };
    match outcome {
        Ok(lines) => {
            for line in lines {
                eprintln!("{line}");
            }
            if l.engine != Engine::Kubernetes {
                eprintln!("next: meshbench collect {dir}");
            }
            exit::OK
        }
        Err(e) => {
            eprintln!("error: {e}");
            exit::USAGE
        }
    }
}
