//! Where the workers run: local processes, a Docker Swarm replicated job, or a Kubernetes
//! Indexed Job (manifests written for `kubectl apply`; this machine has no cluster).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use serde_json::json;

use super::{format_time, RunPlan, PLAN_FILE};

/// Where the result directory and the scenario are, as a worker sees them.
pub const CONTAINER_RESULTS: &str = "/results";
pub const K8S_SCENARIO_DIR: &str = "/scenario";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Engine {
    /// N processes on this machine.
    Local,
    /// A Docker Swarm `replicated-job` service (the engine must be a swarm manager).
    Swarm,
    /// A Kubernetes Indexed Job, written as a manifest to apply.
    Kubernetes,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::Local => "local",
            Engine::Swarm => "swarm",
            Engine::Kubernetes => "kubernetes",
        }
    }
}

/// A distributed run to launch.
#[derive(Debug, Clone)]
pub struct Launch {
    pub engine: Engine,
    pub workers: u32,
    /// The result directory on this machine (absolute).
    pub out: PathBuf,
    pub start_at: SystemTime,
    /// `meshbench load` arguments, paths already as the workers see them.
    pub load_args: Vec<String>,
    pub image: String,
    /// The service / Job name.
    pub name: String,
    /// Kubernetes: the PersistentVolumeClaim the workers write to.
    pub results_claim: String,
    /// Kubernetes: the scenario file's text, shipped in a ConfigMap.
    pub scenario: Option<String>,
}

impl Launch {
    pub fn plan(&self) -> RunPlan {
        RunPlan {
            engine: self.engine.name().into(),
            workers: self.workers,
            start_at: format_time(self.start_at),
            load_args: self.load_args.clone(),
            image: (self.engine != Engine::Local).then(|| self.image.clone()),
        }
    }

    /// The share flags every worker gets beside `load_args` (index comes from its environment
    /// on an orchestrator, from `--worker-index` locally).
    fn share_env(&self, results: &str) -> Vec<(String, String)> {
        vec![
            ("MESHBENCH_WORKERS_TOTAL".into(), self.workers.to_string()),
            ("MESHBENCH_START_AT".into(), format_time(self.start_at)),
            ("MESHBENCH_RESULTS".into(), results.into()),
        ]
    }
}

/// Writes the plan into the result directory.
pub fn write_plan(launch: &Launch) -> Result<(), String> {
    std::fs::create_dir_all(&launch.out).map_err(|e| format!("cannot create {}: {e}", launch.out.display()))?;
    let text = serde_json::to_vec_pretty(&launch.plan()).map_err(|e| e.to_string())?;
    super::write_atomic(&launch.out.join(PLAN_FILE), &text)
}

/// Runs the workers as local processes of this executable and waits for them; returns each
/// worker's exit status (None when it was killed by a signal).
pub fn run_local(launch: &Launch) -> Result<Vec<Option<i32>>, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    let results = launch.out.display().to_string();
    let mut children = Vec::new();
    for i in 0..launch.workers {
        let log = std::fs::File::create(launch.out.join(format!("worker-{i}.log")))
            .map_err(|e| format!("cannot write in {}: {e}", launch.out.display()))?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(&exe)
            .arg("load")
            .args(&launch.load_args)
            .args(["--quiet", "--worker-index", &i.to_string()])
            .envs(launch.share_env(&results))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start worker {i}: {e}"))?;
        children.push(child);
    }
    Ok(children
        .into_iter()
        .map(|mut c| c.wait().ok().and_then(|s| s.code()))
        .collect())
}

/// The `docker service create` arguments of a Swarm run.
pub fn swarm_args(launch: &Launch) -> Vec<String> {
    let mut a: Vec<String> = [
        "service",
        "create",
        "--detach",
        "--name",
        &launch.name,
        "--label",
        &format!("meshbench.run={}", launch.name),
        "--mode",
        "replicated-job",
        "--replicas",
        &launch.workers.to_string(),
        "--max-concurrent",
        &launch.workers.to_string(),
        "--restart-condition",
        "none",
        // The workers reach a target on the node's own addresses, as a load client on it would.
        "--network",
        "host",
        "--mount",
        &format!("type=bind,source={},target={CONTAINER_RESULTS}", launch.out.display()),
        "--env",
        "MESHBENCH_WORKER_SLOT={{.Task.Slot}}",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for (k, v) in launch.share_env(CONTAINER_RESULTS) {
        a.push("--env".into());
        a.push(format!("{k}={v}"));
    }
    a.push(launch.image.clone());
    a.push("load".into());
    a.extend(launch.load_args.iter().cloned());
    a.push("--quiet".into());
    a
}

/// A command line as a POSIX shell reads it back.
pub fn shell_line(program: &str, args: &[String]) -> String {
    let quote = |s: &str| {
        if !s.is_empty()
            && s.bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"-_./=:,@%+".contains(&c))
        {
            s.to_string()
        } else {
            format!("'{}'", s.replace('\'', r"'\''"))
        }
    };
    std::iter::once(program)
        .chain(args.iter().map(String::as_str))
        .map(quote)
        .collect::<Vec<_>>()
        .join(" ")
}

fn docker(args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run docker: {e} (is Docker installed?)"))?;
    if !out.status.success() {
        return Err(format!(
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Why this Docker engine cannot run a Swarm job, if it cannot.
pub fn swarm_unavailable(image: &str) -> Option<String> {
    match docker(&["info", "--format", "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}"]) {
        Err(e) => Some(e),
        Ok(s) if s != "active true" => Some(format!(
            "this Docker engine is not a swarm manager (state `{s}`): run `docker swarm init` for a single-node swarm, or run on a manager"
        )),
        Ok(_) => match crate::images::present(image) {
            Err(e) => Some(e),
            Ok(true) => None,
            Ok(false) => Some(format!(
                "the image {image} is not on this node: build it with `meshbench images build` (on a multi-node swarm, push it to a registry the nodes pull from)"
            )),
        },
    }
}

/// Launches the Swarm job and, unless `wait` is None, waits up to that long for every task to
/// end, then removes the service. Returns each task's final state (`name state`).
pub fn run_swarm(launch: &Launch, wait: Option<Duration>) -> Result<Vec<String>, String> {
    if let Some(why) = swarm_unavailable(&launch.image) {
        return Err(why);
    }
    let args = swarm_args(launch);
    let script = format!(
        "#!/bin/sh\n# Written by meshbench distribute\n{}\n",
        shell_line("docker", &args)
    );
    std::fs::write(launch.out.join("swarm-service.sh"), script).map_err(|e| e.to_string())?;
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    docker(&refs)?;
    let Some(limit) = wait else { return Ok(Vec::new()) };
    let deadline = Instant::now() + limit;
    let states = loop {
        let out = docker(&["service", "ps", &launch.name, "--format", "{{.Name}} {{.CurrentState}}"])?;
        let states: Vec<String> = out.lines().map(str::to_string).collect();
        let ended = |s: &String| {
            ["Complete", "Failed", "Rejected", "Shutdown", "Orphaned"]
                .iter()
                .any(|e| s.split_whitespace().nth(1) == Some(*e))
        };
        if states.len() >= launch.workers as usize && states.iter().all(ended) {
            break states;
        }
        if Instant::now() >= deadline {
            let _ = docker(&["service", "rm", &launch.name]);
            return Err(format!(
                "the workers did not end within {} s: {} (service removed)",
                limit.as_secs(),
                states.join("; ")
            ));
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    docker(&["service", "rm", &launch.name])?;
    Ok(states)
}

/// The Kubernetes manifests of a run: a ConfigMap with the scenario (when there is one) and an
/// Indexed Job whose pods each run one worker, writing to a shared PersistentVolumeClaim.
pub fn kubernetes_manifests(launch: &Launch) -> Vec<serde_json::Value> {
    let labels = json!({ "app.kubernetes.io/name": "meshbench", "meshbench.run": launch.name });
    let mut docs = Vec::new();
    let mut volumes = vec![json!({
        "name": "results",
        "persistentVolumeClaim": { "claimName": launch.results_claim },
    })];
    let mut mounts = vec![json!({ "name": "results", "mountPath": CONTAINER_RESULTS })];
    if let Some(text) = &launch.scenario {
        docs.push(json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": { "name": format!("{}-scenario", launch.name), "labels": labels },
            "data": { "scenario.yaml": text },
        }));
        volumes.push(json!({
            "name": "scenario",
            "configMap": { "name": format!("{}-scenario", launch.name) },
        }));
        mounts.push(json!({ "name": "scenario", "mountPath": K8S_SCENARIO_DIR, "readOnly": true }));
    }
    let env: Vec<serde_json::Value> = launch
        .share_env(CONTAINER_RESULTS)
        .into_iter()
        .map(|(k, v)| json!({ "name": k, "value": v }))
        .collect();
    let mut args = vec!["load".to_string()];
    args.extend(launch.load_args.iter().cloned());
    args.push("--quiet".into());
    docs.push(json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": { "name": launch.name, "labels": labels },
        "spec": {
            "completionMode": "Indexed",
            "completions": launch.workers,
            "parallelism": launch.workers,
            // A worker that fails is not retried: a late rerun would miss the shared start, and
            // `collect` names the failed index instead.
            "backoffLimitPerIndex": 0,
            "maxFailedIndexes": launch.workers,
            "podReplacementPolicy": "Failed",
            "ttlSecondsAfterFinished": 3600,
            "template": {
                "metadata": { "labels": labels },
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{
                        "name": "worker",
                        "image": launch.image,
                        "imagePullPolicy": "IfNotPresent",
                        "args": args,
                        // JOB_COMPLETION_INDEX is set by Kubernetes on every pod of an Indexed Job.
                        "env": env,
                        "resources": {
                            "requests": { "cpu": "2", "memory": "512Mi" },
                            "limits": { "cpu": "2", "memory": "2Gi" },
                        },
                        "volumeMounts": mounts,
                    }],
                    "volumes": volumes,
                },
            },
        },
    }));
    docs
}

/// The manifests as one YAML file.
pub fn kubernetes_yaml(launch: &Launch) -> String {
    let mut out = format!(
        "# meshbench distribute --engine kubernetes: {} workers, start at {}.\n\
         # kubectl apply -f job.yaml && kubectl wait --for=condition=complete --timeout=30m job/{}\n",
        launch.workers,
        format_time(launch.start_at),
        launch.name
    );
    // Each document comes with its own `---` line.
    for doc in kubernetes_manifests(launch) {
        out.push_str(&mesh_model::load::to_yaml_string(&doc));
    }
    out
}

/// Where the scenario is for the workers of `engine`, given its copy in the result directory.
pub fn scenario_path(engine: Engine, out: &Path) -> PathBuf {
    match engine {
        Engine::Local => out.join("scenario.yaml"),
        Engine::Swarm => Path::new(CONTAINER_RESULTS).join("scenario.yaml"),
        Engine::Kubernetes => Path::new(K8S_SCENARIO_DIR).join("scenario.yaml"),
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn launch(engine: Engine) -> Launch {
        Launch {
            engine,
            workers: 3,
            out: PathBuf::from("/srv/results"),
            start_at: UNIX_EPOCH + Duration::from_secs(1_796_464_800),
            load_args: vec![
                "http://10.0.0.5:8080/".into(),
                "-d".into(),
                "30s".into(),
                "--rate".into(),
                "3000".into(),
            ],
            image: "registry.example/meshbench:0.1.0".into(),
            name: "meshbench-load-1".into(),
            results_claim: "meshbench-results".into(),
            scenario: Some("name: steady\nurl: http://10.0.0.5:8080/\n".into()),
        }
    }

    #[test]
    fn the_swarm_job_shares_the_start_and_mounts_the_results() {
        let l = launch(Engine::Swarm);
        let args = swarm_args(&l);
        let line = shell_line("docker", &args);
        assert_eq!(
            line,
            "docker service create --detach --name meshbench-load-1 --label meshbench.run=meshbench-load-1 \
             --mode replicated-job --replicas 3 --max-concurrent 3 --restart-condition none --network host \
             --mount type=bind,source=/srv/results,target=/results --env 'MESHBENCH_WORKER_SLOT={{.Task.Slot}}' \
             --env MESHBENCH_WORKERS_TOTAL=3 --env MESHBENCH_START_AT=2026-12-05T10:00:00.000Z \
             --env MESHBENCH_RESULTS=/results registry.example/meshbench:0.1.0 load http://10.0.0.5:8080/ -d 30s \
             --rate 3000 --quiet"
        );
        assert_eq!(shell_line("a", &["".into(), "it's".into()]), "a '' 'it'\\''s'");
        assert_eq!(
            scenario_path(Engine::Swarm, Path::new("/x")),
            PathBuf::from("/results/scenario.yaml")
        );
        assert_eq!(
            scenario_path(Engine::Local, Path::new("/x")),
            PathBuf::from("/x/scenario.yaml")
        );
        let plan = l.plan();
        assert_eq!((plan.engine.as_str(), plan.workers), ("swarm", 3));
        assert_eq!(plan.image.as_deref(), Some("registry.example/meshbench:0.1.0"));
        assert_eq!(launch(Engine::Local).plan().image, None);
    }

    #[test]
    fn the_kubernetes_job_matches_its_golden_file() {
        let yaml = kubernetes_yaml(&launch(Engine::Kubernetes));
        let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/kubernetes-job.yaml");
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&golden, &yaml).unwrap_or_else(|e| panic!("{e}"));
        }
        let want = std::fs::read_to_string(&golden).unwrap_or_else(|e| panic!("{}: {e}", golden.display()));
        assert_eq!(yaml, want, "UPDATE_GOLDEN=1 cargo test rewrites the golden file");
        let no_scenario = Launch {
            scenario: None,
            ..launch(Engine::Kubernetes)
        };
        let docs = kubernetes_manifests(&no_scenario);
        assert_eq!(docs.len(), 1, "no ConfigMap without a scenario");
        assert_eq!(
            docs[0]["spec"]["template"]["spec"]["volumes"].as_array().map(Vec::len),
            Some(1)
        );
    }
}
