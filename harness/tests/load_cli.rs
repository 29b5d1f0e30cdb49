//! `meshbench load`, `merge` and `report` as a user runs them, and the scenario files in suites/load.

#![allow(clippy::expect_used, clippy::unwrap_used)] // Test code: a failure should panic.

mod support;

use support::{meshbench, text};

use std::path::PathBuf;
use std::process::Command;

use meshbench_report::RunReport;

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("meshbench-load-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    dir.join(name)
}

#[test]
fn load_prints_a_wrk2_style_summary() {
    let addr = support::http_server();
    let out = meshbench(&["load", &format!("http://{addr}/"), "-n", "300", "-c", "3", "-t", "1"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("requests 300 "), "{stdout}");
    assert!(stdout.contains("status codes: 200: 300"), "{stdout}");
    assert!(stdout.contains("latency distribution:"), "{stdout}");
    assert!(stdout.contains("requests per CPU-second"), "{stdout}");
}

#[test]
fn json_report_merge_and_rerender() {
    let addr = support::http_server();
    let (a, b, report) = (tmp("a.hlog"), tmp("b.hlog"), tmp("run.json"));
    let mut total = 0;
    for log in [&a, &b] {
        let out = meshbench(&[
            "load",
            &format!("http://{addr}/"),
            "-R",
            "100",
            "-d",
            "1s",
            "-c",
            "2",
            "-t",
            "1",
            "--hlog",
            log.to_str().unwrap(),
            "--output",
            "json",
            "--out",
            report.to_str().unwrap(),
        ]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let r: RunReport = serde_json::from_slice(&out.stdout).expect("report on stdout");
        assert_eq!(r.load[0].requests, 100);
        assert!(r.load[0].latency_uncorrected_us.is_some());
        total += r.load[0].requests;
    }
    let m = tmp("merged.hlog");
    let merged = meshbench(&[
        "merge",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--output",
        "json",
        "-O",
        m.to_str().unwrap(),
    ]);
    assert_eq!(merged.status.code(), Some(0), "{}", text(&merged.stderr));
    let v: serde_json::Value = serde_json::from_slice(&merged.stdout).expect("json");
    assert_eq!(v["corrected"]["count"], total);
    assert_eq!(v["uncorrected"]["count"], total);
    // HdrHistogram's own Python reader (PyPI `hdrhistogram`) reads the logs as written: the
    // merged one keeps the two runs one after the other on its time axis, nothing lost.
    for (log, count, min_span_ms) in [(&a, 200, 900), (&m, 2 * total, 1900)] {
        let script = format!(
            "from hdrh.log import HistogramLogReader\nfrom hdrh.histogram import HdrHistogram\n\
             r = HistogramLogReader('{}', HdrHistogram(1, 60000000, 3))\nn, first, last = 0, None, 0\n\
             while True:\n    h = r.get_next_interval_histogram()\n    if h is None: break\n\
             \x20   n += h.get_total_count(); first = first or h.get_start_time_stamp(); last = h.get_end_time_stamp()\n\
             print(n, int(last - first), int(r.start_time_sec))\n",
            log.display()
        );
        let py = std::process::Command::new("python3")
            .args(["-c", &script])
            .output()
            .expect("python3");
        assert!(
            py.status.success(),
            "pip install hdrhistogram (ci/test.sh does): {}",
            text(&py.stderr)
        );
        let out = text(&py.stdout);
        let f: Vec<u64> = out.split_whitespace().map(|x| x.parse().unwrap()).collect();
        assert_eq!(f[0], count, "{}: {out}", log.display());
        assert!(f[1] >= min_span_ms, "{}: spans {} ms", log.display(), f[1]);
        assert!(f[2] > 1_700_000_000, "StartTime read: {out}");
    }
    let rendered = meshbench(&["report", report.to_str().unwrap()]);
    assert_eq!(rendered.status.code(), Some(0));
    assert!(
        text(&rendered.stdout).contains("open loop at 100 rps"),
        "{}",
        text(&rendered.stdout)
    );
}

#[test]
fn bad_input_is_refused_before_any_request() {
    let out = meshbench(&["load", "ftp://127.0.0.1/"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("unknown scheme `ftp`"));
    let out = meshbench(&["load", "http://127.0.0.1:1/", "-R", "-5"]);
    assert_eq!(out.status.code(), Some(2));
    let scenario = tmp("bad.yaml");
    std::fs::write(
        &scenario,
        "name: x\nurl: http://127.0.0.1:1/\nconections: 4\nsteps:\n- {rate: 10, duration: 1z}\n",
    )
    .expect("write");
    let out = meshbench(&["load", "--scenario", scenario.to_str().unwrap()]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("bad.yaml:3: conections: unknown field `conections` (did you mean `connections`?"),
        "{err}"
    );
    assert!(err.contains("bad.yaml:5: steps[0].duration:"), "{err}");
}

#[test]
fn every_scenario_in_suites_load_parses() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../suites/load");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).expect("dir") {
        let path = entry.expect("entry").path();
        if std::fs::read_to_string(&path).expect("read").contains("\nscenarios:\n") {
            // A load suite of `meshbench run` (workloads, config, scenarios).
            let suite = meshbench::conform::suite::read(&path).unwrap_or_else(|e| panic!("{e}"));
            assert!(!suite.scenarios.is_empty(), "{}", path.display());
            continue;
        }
        let s = meshbench::cli::load::read_scenario(&path).unwrap_or_else(|e| panic!("{e}"));
        assert!(s.url.is_some() && !s.steps.is_empty(), "{}", path.display());
        n += 1;
    }
    assert!(n >= 2);
}

#[test]
fn scenario_steps_run_in_order() {
    let addr = support::http_server();
    let scenario = tmp("steps.yaml");
    std::fs::write(
        &scenario,
        format!("name: steps\nurl: http://{addr}/\nconnections: 2\nworkers: 1\nsteps:\n- {{requests: 50}}\n- {{rate: 50, duration: 1s}}\n"),
    )
    .expect("write");
    let out = meshbench(&["load", "--scenario", scenario.to_str().unwrap(), "--output", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let r: RunReport = serde_json::from_slice(&out.stdout).expect("json");
    let got: Vec<_> = r
        .load
        .iter()
        .map(|l| (l.scenario.as_str(), l.requests, l.asked_rps))
        .collect();
    assert_eq!(got, [("steps [step 1]", 50, None), ("steps [step 2]", 50, Some(50.0))]);
}

#[test]
fn ctrl_c_stops_early_and_still_reports() {
    let addr = support::http_server();
    let child = Command::new(env!("CARGO_BIN_EXE_meshbench"))
        .args([
            "load",
            &format!("http://{addr}/"),
            "-R",
            "200",
            "-d",
            "60s",
            "-c",
            "2",
            "-t",
            "1",
            "--output",
            "json",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("pid");
    rustix::process::kill_process(pid, rustix::process::Signal::INT).expect("SIGINT");
    let started = std::time::Instant::now();
    let out = child.wait_with_output().expect("wait");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "did not stop promptly"
    );
    assert_eq!(out.status.code(), Some(0));
    let r: RunReport = serde_json::from_slice(&out.stdout).expect("report");
    let l = &r.load[0];
    assert!(l.requests > 0 && l.requests < 12_000, "{}", l.requests);
    assert!(
        l.warnings.iter().any(|w| w.starts_with("interrupted")),
        "{:?}",
        l.warnings
    );
}
