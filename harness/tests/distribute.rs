//! `meshbench distribute` + `collect` end to end: workers as local processes, as a Docker Swarm
//! replicated job on a single-node swarm the test makes (skipped, with the reason, where Docker
//! cannot), a worker killed mid-run, and the Kubernetes manifests against the Job schema.

#![allow(clippy::expect_used, clippy::unwrap_used)] // Test code: a failure should panic.

mod support;

use support::{meshbench, text};

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use meshbench_report::{RunReport, WorkerState};

const RATE: f64 = 300.0;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("meshbench-distribute-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn read_report(path: &Path) -> RunReport {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .expect("a run report")
}

/// Percentiles of one histogram built from every worker's samples, independently of `collect`.
fn all_samples(dir: &Path, workers: u32) -> (u64, Histogram<u64>) {
    let mut all: Histogram<u64> = Histogram::new(3).expect("histogram");
    let mut requests = 0;
    for i in 0..workers {
        let r = read_report(&dir.join(format!("worker-{i}.json")));
        let l = &r.load[0];
        requests += l.requests;
        let h = meshbench_report::html::decode_histogram(&l.histograms.corrected).expect("decode");
        all.add(&h).expect("add");
        let d = l.distribution.as_ref().expect("a worker's share");
        assert_eq!((d.worker_index, d.workers_total), (Some(i), workers));
        assert!(d.complete && d.problems.is_empty(), "worker {i} ran to its end");
        assert_eq!(
            l.asked_rps,
            Some(RATE / f64::from(workers)),
            "worker {i} takes rate / N"
        );
    }
    (requests, all)
}

/// The figures the issue asks of a merged run: the sum of the requests, the percentiles of one
/// histogram of all samples, and the asked rate within 1%.
fn check_exact(dir: &Path, workers: u32) {
    let out = dir.join("merged.json");
    let collected = meshbench(&["collect", dir.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    let stdout = text(&collected.stdout);
    assert_eq!(collected.status.code(), Some(0), "{stdout}{}", text(&collected.stderr));
    assert!(stdout.contains("worker   2 ok"), "{stdout}");
    let merged = read_report(&out);
    let l = &merged.load[0];
    let (requests, all) = all_samples(dir, workers);
    assert_eq!(l.requests, requests);
    assert_eq!(l.latency_us.p50, all.value_at_quantile(0.5));
    assert_eq!(l.latency_us.p99, all.value_at_quantile(0.99));
    assert_eq!(l.latency_us.max, all.max());
    assert_eq!(l.latency_us.p999, all.value_at_quantile(0.999));
    assert!((l.latency_us.mean - all.mean()).abs() < 1e-6);
    let achieved = l.requests as f64 / l.duration_s;
    assert!(
        (achieved / RATE - 1.0).abs() <= 0.01,
        "achieved {achieved} rps of {RATE}"
    );
    assert!((l.rps / RATE - 1.0).abs() <= 0.01, "merged rps {} of {RATE}", l.rps);
    let d = l.distribution.as_ref().expect("distribution");
    assert!(d.complete, "{:?}", d.problems);
    assert_eq!(d.workers.len(), workers as usize);
    assert!(d.workers.iter().all(|w| w.state == WorkerState::Ok));
    // Per second, the merged percentiles come from the workers' interval logs on one time axis.
    assert!(
        !l.warnings.iter().any(|w| w.contains("interval log is missing")),
        "{:?}",
        l.warnings
    );
}

#[test]
fn local_workers_merge_into_one_exact_report_at_the_asked_rate() {
    let addr = support::http_server();
    let dir = scratch("local");
    let out = meshbench(&[
        "distribute",
        "--engine",
        "local",
        "--workers",
        "3",
        "--out",
        dir.to_str().unwrap(),
        "--rate",
        &RATE.to_string(),
        "--start-in",
        "1s",
        "--",
        &format!("http://{addr}/"),
        "-d",
        "3s",
        "-c",
        "6",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    check_exact(&dir, 3);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_worker_killed_mid_run_makes_the_run_incomplete_and_names_it() {
    let addr = support::http_server();
    let dir = scratch("killed");
    let d = dir.clone();
    let url = format!("http://{addr}/");
    let run = std::thread::spawn(move || {
        meshbench(&[
            "distribute",
            "--engine",
            "local",
            "--workers",
            "3",
            "--out",
            d.to_str().unwrap(),
            "--rate",
            "150",
            "--start-in",
            "1s",
            "--",
            &url,
            "-d",
            "4s",
            "-c",
            "3",
        ])
    });
    let marker = dir.join("worker-1.started.json");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !marker.exists() {
        assert!(Instant::now() < deadline, "worker 1 never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let started: serde_json::Value = serde_json::from_slice(&std::fs::read(&marker).unwrap()).unwrap();
    let pid = started["pid"].as_u64().expect("pid").to_string();
    // Two seconds into the run (one to the shared start, one of load).
    std::thread::sleep(Duration::from_secs(2));
    let killed = Command::new("kill").args(["-KILL", &pid]).status().expect("kill");
    assert!(killed.success());
    let out = run.join().expect("distribute");
    assert!(
        text(&out.stderr).contains("worker 1: killed by a signal"),
        "{}",
        text(&out.stderr)
    );
    let collected = meshbench(&["collect", dir.to_str().unwrap(), "-o", "json"]);
    let stderr = text(&collected.stderr);
    assert_eq!(collected.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("incomplete: worker 1: started on"), "{stderr}");
    assert!(stderr.contains("left no result"), "{stderr}");
    let merged: RunReport = serde_json::from_slice(&collected.stdout).expect("json");
    let d = merged.load[0].distribution.as_ref().expect("distribution");
    assert!(!d.complete);
    assert_eq!(d.workers[1].state, WorkerState::Missing);
    assert_eq!(d.workers[0].state, WorkerState::Ok);
    // The HTML report says so above the workers' rows.
    let html = dir.join("html");
    let again = meshbench(&["collect", dir.to_str().unwrap(), "--out", html.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(2));
    let page = std::fs::read_to_string(html.join("report.html")).expect("report.html");
    assert!(page.contains("Merged from 3 workers"), "{page}");
    assert!(page.contains("INCOMPLETE</span>: worker 1: started on"), "{page}");
    assert!(page.contains("<td class=\"fail\">missing</td>"), "{page}");
    // The gate refuses to judge an incomplete run, whatever the baseline.
    let merged_file = dir.join("merged.json");
    std::fs::write(&merged_file, &collected.stdout).unwrap();
    let gate = meshbench(&[
        "gate",
        "--baseline",
        merged_file.to_str().unwrap(),
        merged_file.to_str().unwrap(),
    ]);
    assert_eq!(gate.status.code(), Some(2), "{}", text(&gate.stdout));
    assert!(text(&gate.stdout).contains("incomplete"), "{}", text(&gate.stdout));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_kubernetes_job_validates_against_the_job_schema() {
    let dir = scratch("k8s");
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("../suites/load/static-h1.yaml");
    let out = meshbench(&[
        "distribute",
        "--engine",
        "kubernetes",
        "--workers",
        "4",
        "--out",
        dir.to_str().unwrap(),
        "--scenario",
        scenario.to_str().unwrap(),
        "--rate",
        "4000",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let job = dir.join("job.yaml");
    let yaml = std::fs::read_to_string(&job).expect("job.yaml");
    assert!(yaml.contains("completionMode: Indexed"), "{yaml}");
    assert!(yaml.contains("- /scenario/scenario.yaml"), "{yaml}");
    let validate = |path: &Path| {
        Command::new("kubernetes-validate")
            .args(["--strict", "-k", "1.33.0"])
            .arg(path)
            .output()
            .expect("kubernetes-validate (pip install kubernetes-validate; ci/test.sh installs it)")
    };
    let ok = validate(&job);
    assert!(ok.status.success(), "{}{}", text(&ok.stdout), text(&ok.stderr));
    assert!(
        text(&ok.stdout).contains("passed for resource job/"),
        "{}",
        text(&ok.stdout)
    );
    // The validator does reject what the API server would: a misspelt field.
    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, yaml.replace("completionMode", "completionsMode")).unwrap();
    let refused = validate(&bad);
    assert!(!refused.status.success());
    assert!(
        text(&refused.stdout).contains("completionsMode"),
        "{}",
        text(&refused.stdout)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn docker(args: &[&str]) -> Option<String> {
    let out = Command::new("docker").args(args).output().ok()?;
    out.status.success().then(|| text(&out.stdout).trim().to_string())
}

/// A single-node swarm for the test: made here (and left at the end) unless one is active.
struct Swarm {
    made: bool,
}

impl Swarm {
    fn up() -> Result<Swarm, String> {
        let state = docker(&["info", "--format", "{{.Swarm.LocalNodeState}}"])
            .ok_or("no Docker engine answers here (docker info failed)")?;
        if state == "active" {
            return Ok(Swarm { made: false });
        }
        docker(&["swarm", "init", "--advertise-addr", "127.0.0.1"]).ok_or("docker swarm init failed on this engine")?;
        Ok(Swarm { made: true })
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        if self.made {
            let _ = docker(&["swarm", "leave", "--force"]);
        }
    }
}

#[test]
fn a_swarm_replicated_job_merges_into_one_exact_report() {
    let swarm = match Swarm::up() {
        Ok(s) => s,
        Err(why) => {
            eprintln!("SKIPPED a_swarm_replicated_job_merges_into_one_exact_report: {why}");
            return;
        }
    };
    let built = meshbench(&["images", "build"]);
    assert_eq!(built.status.code(), Some(0), "{}", text(&built.stderr));
    let addr = support::http_server();
    let dir = scratch("swarm");
    let name = format!("meshbench-test-{}", std::process::id());
    let out = meshbench(&[
        "distribute",
        "--engine",
        "swarm",
        "--workers",
        "3",
        "--out",
        dir.to_str().unwrap(),
        "--name",
        &name,
        "--rate",
        &RATE.to_string(),
        "--start-in",
        "5s",
        "--wait",
        "2m",
        "--",
        &format!("http://{addr}/"),
        "-d",
        "3s",
        "-c",
        "6",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("Complete"), "{}", text(&out.stderr));
    check_exact(&dir, 3);
    // The job's service is gone; nothing of it is left running.
    assert_eq!(
        docker(&["service", "ls", "--filter", &format!("name={name}"), "-q"]).as_deref(),
        Some("")
    );
    let script = std::fs::read_to_string(dir.join("swarm-service.sh")).expect("the service command");
    assert!(script.contains("--mode replicated-job --replicas 3"), "{script}");
    drop(swarm);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_worker_that_cannot_start_says_why_where_collect_looks() {
    let dir = scratch("cannot");
    let out = meshbench(&[
        "distribute",
        "--engine",
        "local",
        "--workers",
        "3",
        "--out",
        dir.to_str().unwrap(),
        "--start-in",
        "0s",
        "--",
        "http://127.0.0.1:9/",
        "-d",
        "1s",
        "-c",
        "2",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("worker 2: exit 2"), "{}", text(&out.stderr));
    let collected = meshbench(&["collect", dir.to_str().unwrap()]);
    let stderr = text(&collected.stderr);
    assert_eq!(collected.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("worker 0: failed: 2 connections cannot be split over 3 workers"),
        "{stderr}"
    );
    // Flags that distribute sets itself are refused after `--`.
    let refused = meshbench(&[
        "distribute",
        "--engine",
        "local",
        "--workers",
        "2",
        "--out",
        dir.to_str().unwrap(),
        "--",
        "http://127.0.0.1:9/",
        "--rate",
        "10",
    ]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        text(&refused.stderr).contains("--rate after `--` is set by distribute itself"),
        "{}",
        text(&refused.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
