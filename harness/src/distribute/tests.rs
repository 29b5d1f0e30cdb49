use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use hdrhistogram::Histogram;
use meshbench_report::{Distribution, LoadResult, RunReport, WorkerState};

use super::collect::{collect, complete, Tolerance};
use super::*;
use crate::load::stats::{encode, histogram, percentiles};

fn spec(rate: Option<f64>, connections: u32, requests: Option<u64>) -> LoadSpec {
    crate::cli::load::specs(&args(rate, connections, requests))
        .unwrap_or_else(|e| panic!("{e}"))
        .remove(0)
}

fn args(rate: Option<f64>, connections: u32, requests: Option<u64>) -> crate::cli::load::Args {
    crate::cli::load::Args {
        url: Some("http://127.0.0.1:1/".into()),
        scenario: None,
        protocol: None,
        rate,
        duration: requests.is_none().then(|| "3s".into()),
        requests,
        connections: Some(connections),
        streams: None,
        workers: Some(4),
        warmup: None,
        timeout: None,
        method: None,
        headers: Vec::new(),
        body: None,
        body_file: None,
        host: None,
        message_bytes: None,
        sni: None,
        cacert: None,
        cert: None,
        key: None,
        insecure: false,
        hlog: None,
        out: None,
        output: crate::cli::Output::Text,
        quiet: true,
        thresholds: Vec::new(),
        worker_index: None,
        workers_total: None,
        start_at: None,
        results: None,
    }
}

#[test]
fn a_worker_reads_its_share_from_flags_or_its_orchestrator() {
    use super::worker::worker_mode;
    let env_of = |pairs: &'static [(&'static str, &'static str)]| {
        move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    };
    let plain = args(None, 6, None);
    assert!(matches!(worker_mode(&plain, &env_of(&[])), Ok(None)));
    // Kubernetes: the Indexed Job's completion index.
    let k8s = env_of(&[
        ("MESHBENCH_WORKERS_TOTAL", "3"),
        ("JOB_COMPLETION_INDEX", "2"),
        ("MESHBENCH_RESULTS", "/results"),
        ("MESHBENCH_START_AT", "2026-12-05T10:00:00Z"),
    ]);
    let w = worker_mode(&plain, &k8s)
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("a worker"));
    assert_eq!(w.share, Share { index: 2, total: 3 });
    assert_eq!(w.results, PathBuf::from("/results"));
    assert_eq!(format_time(w.start_at), "2026-12-05T10:00:00.000Z");
    // Swarm: a replicated job's slot counts from 0 and renders slot 0 as the node ID.
    let slot = |s: &'static str| {
        move |k: &str| match k {
            "MESHBENCH_WORKERS_TOTAL" => Some("3".to_string()),
            "MESHBENCH_RESULTS" => Some("/r".to_string()),
            "MESHBENCH_WORKER_SLOT" => Some(s.to_string()),
            _ => None,
        }
    };
    let index = |e: &dyn Fn(&str) -> Option<String>| worker_mode(&plain, e).ok().flatten().map(|w| w.share.index);
    assert_eq!(index(&slot("2")), Some(2));
    assert_eq!(index(&slot("q2pwerzwd1muhqvl1oa8q8utx")), Some(0));
    // Flags win over the environment.
    let mut flagged = args(None, 6, None);
    flagged.worker_index = Some(1);
    flagged.results = Some(PathBuf::from("/flag"));
    let w = worker_mode(&flagged, &k8s)
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("a worker"));
    assert_eq!((w.share.index, w.results), (1, PathBuf::from("/flag")));
    // What is missing or wrong is said.
    let no_dir = env_of(&[("MESHBENCH_WORKERS_TOTAL", "3"), ("MESHBENCH_WORKER_INDEX", "0")]);
    assert!(worker_mode(&plain, &no_dir).is_err_and(|e| e.contains("--results DIR")));
    let no_index = env_of(&[("MESHBENCH_WORKERS_TOTAL", "3"), ("MESHBENCH_RESULTS", "/r")]);
    assert!(worker_mode(&plain, &no_index).is_err_and(|e| e.contains("--worker-index")));
    let bad = env_of(&[("MESHBENCH_WORKERS_TOTAL", "three")]);
    assert!(worker_mode(&plain, &bad).is_err_and(|e| e.contains("$MESHBENCH_WORKERS_TOTAL=`three` is not a number")));
    let mut stray = args(None, 6, None);
    stray.start_at = Some("now".into());
    assert!(worker_mode(&stray, &env_of(&[])).is_err_and(|e| e.contains("give --workers-total")));
    let mut stray = args(None, 6, None);
    stray.worker_index = Some(0);
    assert!(worker_mode(&stray, &env_of(&[])).is_err_and(|e| e.contains("give --workers-total")));
    let mut stray = args(None, 6, None);
    stray.results = Some(PathBuf::from("/r"));
    assert!(worker_mode(&stray, &env_of(&[])).is_err_and(|e| e.contains("give --workers-total")));
    let mut late = args(None, 6, None);
    late.workers_total = Some(2);
    late.worker_index = Some(0);
    late.results = Some(PathBuf::from("/r"));
    late.start_at = Some("yesterday".into());
    assert!(worker_mode(&late, &env_of(&[])).is_err_and(|e| e.starts_with("--start-at:")));
    late.start_at = None;
    let before = std::time::SystemTime::now();
    let w = worker_mode(&late, &env_of(&[]))
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("a worker"));
    assert!(w.start_at >= before, "no --start-at: now");
}

#[test]
fn a_share_is_an_even_split_with_the_rest_on_the_first_workers() {
    let parts: Vec<u64> = (0..3)
        .map(|i| Share::new(i, 3).map(|s| s.part(10)).unwrap_or(99))
        .collect();
    assert_eq!(parts, vec![4, 3, 3]);
    assert_eq!(Share::new(2, 3).map(|s| s.part(9)), Ok(3));
    assert_eq!(Share::new(0, 1).map(|s| s.part(7)), Ok(7));
    assert!(Share::new(3, 3).is_err_and(|e| e.contains("0..3")));
    assert!(Share::new(0, 0).is_err());
}

#[test]
fn a_worker_takes_its_part_of_rate_connections_and_requests() {
    let mut s = spec(Some(300.0), 7, None);
    Share::new(2, 3)
        .and_then(|sh| sh.apply(&mut s))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((s.rate, s.connections, s.workers), (Some(100.0), 2, 2));
    let mut s = spec(None, 6, Some(1000));
    Share::new(0, 3)
        .and_then(|sh| sh.apply(&mut s))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((s.rate, s.connections, s.workers, s.requests), (None, 2, 2, Some(334)));
    let mut s = spec(None, 9, None);
    Share::new(1, 2)
        .and_then(|sh| sh.apply(&mut s))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((s.connections, s.workers), (4, 4));
    let mut s = spec(None, 2, None);
    assert!(Share::new(0, 3)
        .and_then(|sh| sh.apply(&mut s))
        .is_err_and(|e| e.contains("2 connections")));
    let mut s = spec(None, 3, Some(2));
    assert!(Share::new(2, 3)
        .and_then(|sh| sh.apply(&mut s))
        .is_err_and(|e| e.contains("2 requests")));
    let mut s = spec(None, 3, Some(3));
    assert_eq!(Share::new(2, 3).and_then(|sh| sh.apply(&mut s)), Ok(()));
    assert_eq!(s.requests, Some(1));
}

#[test]
fn start_times_parse_as_rfc3339_or_unix_seconds() {
    let t = |s: &str| parse_time(s).map(|t| t.duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0));
    assert_eq!(t("1795770000.042"), Ok(1_795_770_000_042));
    assert_eq!(t("2026-11-27T09:00:00.042Z"), Ok(1_795_770_000_042));
    assert!(t("-1").is_err());
    assert!(t("NaN").is_err());
    assert!(t("tomorrow").is_err_and(|e| e.contains("RFC 3339")));
    assert_eq!(
        format_time(UNIX_EPOCH + Duration::from_millis(1_795_770_000_042)),
        "2026-11-27T09:00:00.042Z"
    );
    let start = UNIX_EPOCH + Duration::from_secs(100);
    assert_eq!(lag_ms(start, start + Duration::from_millis(1500)), 1500.0);
    assert_eq!(lag_ms(start, start - Duration::from_millis(1500)), 0.0);
}

/// A worker's result with these latencies (µs), all 200s, at `rps` over one second.
fn result(index: u32, total: u32, values: &[u64], lag_ms: f64, busy: f64) -> LoadResult {
    let mut r: LoadResult =
        serde_json::from_str(include_str!("../gate/testdata/load-result.json")).unwrap_or_else(|e| panic!("{e}"));
    let mut h = histogram();
    for v in values {
        h.record(*v).unwrap_or_else(|e| panic!("{e}"));
    }
    r.requests = values.len() as u64;
    r.errors = 0;
    r.rps = values.len() as f64;
    r.asked_rps = Some(100.0);
    r.settings.rate = Some(100.0);
    r.settings.connections = 2;
    r.latency_us = percentiles(&h);
    r.histograms.corrected = encode(&h);
    r.histograms.uncorrected = Some(encode(&h));
    r.status_codes = [("200".to_string(), values.len() as u64)].into();
    r.generator.max_worker_busy = busy;
    r.time_series[0].requests = values.len() as u64;
    r.warnings.clear();
    r.distribution = Some(Distribution {
        workers_total: total,
        worker_index: Some(index),
        start_at: "2026-12-05T10:00:00.000Z".into(),
        start_lag_ms: lag_ms,
        workers: Vec::new(),
        complete: true,
        problems: Vec::new(),
    });
    r
}

/// The distribution part of a merged result, which every collected result has.
fn dist(l: &LoadResult) -> &Distribution {
    l.distribution.as_ref().unwrap_or_else(|| panic!("no distribution"))
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("meshbench-collect-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    dir
}

fn put_result(dir: &Path, index: u32, r: LoadResult) {
    let mut report = RunReport::new(crate::meta::run_meta());
    report.load.push(r);
    let bytes = serde_json::to_vec(&report).unwrap_or_else(|e| panic!("{e}"));
    write_atomic(&result_file(dir, index), &bytes).unwrap_or_else(|e| panic!("{e}"));
}

fn put_started(dir: &Path, index: u32, total: u32) {
    let s = Started {
        index,
        total,
        host: "node-b".into(),
        pid: 4242,
        at: "2026-12-05T09:59:58.000Z".into(),
    };
    let bytes = serde_json::to_vec(&s).unwrap_or_else(|e| panic!("{e}"));
    write_atomic(&started_file(dir, index), &bytes).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn workers_merge_exactly_into_one_result() {
    let dir = scratch("exact");
    let samples: [Vec<u64>; 3] = [
        (1..=100).map(|v| v * 10).collect(),
        (1..=120).map(|v| v * 37).collect(),
        vec![50_000; 30],
    ];
    for (i, s) in samples.iter().enumerate() {
        put_started(&dir, i as u32, 3);
        put_result(&dir, i as u32, result(i as u32, 3, s, 0.0, 0.2));
    }
    let merged = collect(&dir, None, Tolerance::default()).unwrap_or_else(|e| panic!("{e}"));
    assert!(complete(&merged));
    let l = &merged.load[0];
    let mut all: Histogram<u64> = histogram();
    for v in samples.iter().flatten() {
        all.record(*v).unwrap_or_else(|e| panic!("{e}"));
    }
    assert_eq!(l.requests, 250);
    assert_eq!(l.rps, 250.0);
    assert_eq!(
        (l.asked_rps, l.settings.rate, l.settings.connections),
        (Some(300.0), Some(300.0), 6)
    );
    assert_eq!(l.latency_us, percentiles(&all));
    assert_eq!(l.latency_uncorrected_us, Some(percentiles(&all)));
    assert_eq!(l.status_codes.get("200"), Some(&250));
    assert_eq!(l.time_series.len(), 1);
    assert_eq!(l.time_series[0].requests, 250);
    let d = dist(l);
    assert_eq!((d.workers_total, d.worker_index, d.complete), (3, None, true));
    assert_eq!(
        d.workers.iter().map(|w| w.requests).collect::<Vec<_>>(),
        vec![100, 120, 30]
    );
    assert!(d.workers.iter().all(|w| w.state == WorkerState::Ok));
    // Without their interval logs the per-second percentiles are only an upper bound, and say so.
    assert!(l.warnings.iter().any(|w| w.contains("interval log is missing")));
}

#[test]
fn a_missing_failed_late_or_saturated_worker_makes_the_run_incomplete() {
    let dir = scratch("incomplete");
    let values: Vec<u64> = (1..=50).collect();
    put_result(&dir, 0, result(0, 6, &values, 0.0, 0.5));
    put_started(&dir, 1, 6); // started, then killed
    std::fs::write(error_file(&dir, 2), "cannot resolve nowhere:80\n").unwrap_or_else(|e| panic!("{e}"));
    put_result(&dir, 3, result(3, 6, &values, 2500.0, 0.5));
    put_result(&dir, 4, result(4, 6, &values, 0.0, 0.95));
    // worker 5 left nothing at all
    let merged = collect(&dir, None, Tolerance::default()).unwrap_or_else(|e| panic!("{e}"));
    assert!(!complete(&merged));
    let d = dist(&merged.load[0]);
    let states: Vec<WorkerState> = d.workers.iter().map(|w| w.state).collect();
    use WorkerState::*;
    assert_eq!(states, vec![Ok, Missing, Failed, Late, Saturated, Missing]);
    assert_eq!(d.problems.len(), 5);
    assert!(d.problems[0].starts_with("worker 1: started on node-b (pid 4242)"));
    assert!(d.problems[1].contains("worker 2: failed: cannot resolve nowhere:80"));
    assert!(d.problems[2].contains("worker 3: started 2500 ms after"));
    assert!(d.problems[3].contains("worker 4: its busiest thread was 95% busy"));
    assert!(d.problems[4].contains("worker 5: never started"));
    assert_eq!(merged.load[0].requests, 150, "what was delivered is still merged");
    assert!(merged.load[0].warnings[0].starts_with("incomplete: worker 1"));
    // A looser tolerance accepts the late and the busy worker.
    let loose = Tolerance {
        late: Duration::from_secs(3),
        busy: 0.96,
    };
    let merged = collect(&dir, Some(1), loose).unwrap_or_else(|e| panic!("{e}"));
    assert!(complete(&merged), "only worker 0 asked for");
    let merged = collect(&dir, None, loose).unwrap_or_else(|e| panic!("{e}"));
    let d = dist(&merged.load[0]);
    assert_eq!(d.workers[3].state, WorkerState::Ok);
    assert_eq!(d.workers[4].state, WorkerState::Ok);
}

#[test]
fn an_interrupted_worker_failed() {
    let dir = scratch("interrupted");
    let mut r = result(0, 1, &[100, 200], 0.0, 0.1);
    r.warnings
        .push("interrupted: the results cover the time until Ctrl-C".into());
    put_result(&dir, 0, r);
    let merged = collect(&dir, Some(1), Tolerance::default()).unwrap_or_else(|e| panic!("{e}"));
    let d = dist(&merged.load[0]);
    assert_eq!(d.workers[0].state, WorkerState::Failed);
    assert!(!d.complete);
    // The worker's own word is enough.
    let mut r = result(0, 1, &[100, 200], 0.0, 0.1);
    if let Some(d) = r.distribution.as_mut() {
        d.complete = false;
    }
    put_result(&dir, 0, r);
    let merged = collect(&dir, Some(1), Tolerance::default()).unwrap_or_else(|e| panic!("{e}"));
    let d = dist(&merged.load[0]);
    assert_eq!(d.workers[0].state, WorkerState::Failed);
}

#[test]
fn a_directory_without_workers_says_what_it_expected() {
    let dir = scratch("empty");
    assert!(collect(&dir, None, Tolerance::default()).is_err_and(|e| e.contains("no distribution.json")));
    put_started(&dir, 1, 2);
    let e = collect(&dir, None, Tolerance::default()).err().unwrap_or_default();
    assert!(e.contains("no worker delivered"), "{e}");
    assert!(
        e.contains("worker 0: never started") && e.contains("worker 1: started on node-b"),
        "{e}"
    );
}

#[test]
fn per_second_percentiles_come_from_the_workers_interval_logs() {
    use crate::load::hlog;
    use crate::load::stats::IntervalStats;
    let dir = scratch("hlog");
    let start = std::time::SystemTime::now();
    let mut all = histogram();
    for (i, base) in [(0u32, 100u64), (1, 9_000)] {
        let values: Vec<u64> = (1..=50).map(|v| base + v).collect();
        put_result(&dir, i, result(i, 2, &values, 0.0, 0.1));
        let mut interval = IntervalStats::default();
        for v in &values {
            interval.response("200", *v, *v, false, None);
            all.record(*v).unwrap_or_else(|e| panic!("{e}"));
        }
        let mut w = hlog::Writer::create(Some(&hlog_file(&dir, i)), start, true).unwrap_or_else(|e| panic!("{e}"));
        w.write(0, &interval).unwrap_or_else(|e| panic!("{e}"));
        w.finish().unwrap_or_else(|e| panic!("{e}"));
    }
    let merged = collect(&dir, Some(2), Tolerance::default()).unwrap_or_else(|e| panic!("{e}"));
    let l = &merged.load[0];
    assert!(
        !l.warnings.iter().any(|w| w.contains("interval log")),
        "{:?}",
        l.warnings
    );
    let p = percentiles(&all);
    assert_eq!((l.time_series[0].p50_us, l.time_series[0].p99_us), (p.p50, p.p99));
    // Without the logs, the workers' own per-second figures (from their reports) would be used.
    let theirs = result(0, 2, &[1], 0.0, 0.1).time_series[0];
    assert_ne!((theirs.p50_us, theirs.p99_us), (p.p50, p.p99));
}

#[test]
fn an_unreadable_worker_file_is_an_error_not_a_missing_worker() {
    let dir = scratch("unreadable");
    std::fs::create_dir_all(result_file(&dir, 0)).unwrap_or_else(|e| panic!("{e}"));
    let e = collect(&dir, Some(1), Tolerance::default()).err().unwrap_or_default();
    assert!(e.starts_with("cannot read ") && e.contains("worker-0.json"), "{e}");
    let dir = scratch("unreadable-error");
    std::fs::create_dir_all(error_file(&dir, 0)).unwrap_or_else(|e| panic!("{e}"));
    let e = collect(&dir, Some(1), Tolerance::default()).err().unwrap_or_default();
    assert!(e.starts_with("cannot read ") && e.contains("worker-0.error"), "{e}");
    std::fs::write(dir.join(PLAN_FILE), "{not json").unwrap_or_else(|e| panic!("{e}"));
    let e = collect(&dir, None, Tolerance::default()).err().unwrap_or_default();
    assert!(e.contains("distribution.json"), "{e}");
}

#[test]
fn late_means_later_than_the_tolerance_and_busy_means_at_least_its_share() {
    let dir = scratch("boundary");
    put_result(&dir, 0, result(0, 2, &[100], 1000.0, 0.1));
    put_result(&dir, 1, result(1, 2, &[100], 1000.5, 0.9));
    let merged = collect(&dir, Some(2), Tolerance::default()).unwrap_or_else(|e| panic!("{e}"));
    let d = dist(&merged.load[0]);
    assert_eq!(d.workers[0].state, WorkerState::Ok, "exactly the tolerance is on time");
    assert_eq!(d.workers[1].state, WorkerState::Late);
    assert_eq!(d.start_lag_ms, 1000.5, "the latest worker's lag");
    let busy_ok = Tolerance {
        late: Duration::from_secs(2),
        busy: 0.9,
    };
    let merged = collect(&dir, Some(2), busy_ok).unwrap_or_else(|e| panic!("{e}"));
    let d = dist(&merged.load[0]);
    assert_eq!(
        d.workers[1].state,
        WorkerState::Saturated,
        "0.9 busy reaches a 0.9 limit"
    );
    assert_eq!(d.workers[1].max_busy, 0.9);
}

#[test]
fn every_count_of_the_workers_is_added() {
    let dir = scratch("sums");
    for i in 0..3u32 {
        let k = u64::from(i) + 1;
        let mut r = result(i, 3, &[100 * k], 0.0, 0.1 * k as f64);
        r.errors = k;
        r.late = 10 * k;
        r.generator.cpu_s = 0.5 * k as f64;
        r.settings.workers = i + 1;
        r.settings.requests = Some(100 * k);
        r.error_classes = [("timeout".to_string(), k)].into();
        r.status_codes = [("200".to_string(), k), ("503".to_string(), 1)].into();
        r.time_series[0].rps = 10.0 * k as f64;
        r.time_series[0].errors = k;
        r.time_series[0].p50_us = 1000 * k;
        r.time_series[0].p99_us = 5000 - 1000 * k;
        r.generator.saturated = i == 1;
        r.warnings.push(format!("note {i}"));
        put_result(&dir, i, r);
    }
    let merged = collect(&dir, Some(3), Tolerance::default()).unwrap_or_else(|e| panic!("{e}"));
    let l = &merged.load[0];
    assert_eq!((l.errors, l.late), (6, 60));
    assert_eq!(l.generator.cpu_s, 3.0);
    assert_eq!(l.generator.requests_per_cpu_s, 1.0, "3 requests over 3 CPU-seconds");
    assert!((l.generator.max_worker_busy - 0.3).abs() < 1e-9);
    assert_eq!((l.settings.workers, l.settings.requests), (6, Some(600)));
    assert_eq!(l.error_classes.get("timeout"), Some(&6));
    assert_eq!(l.status_codes.get("200"), Some(&6));
    assert_eq!(l.status_codes.get("503"), Some(&3));
    assert_eq!((l.time_series[0].rps, l.time_series[0].errors), (60.0, 6));
    // No interval logs here: each second's percentiles are the workers' highest, an upper bound.
    assert_eq!((l.time_series[0].p50_us, l.time_series[0].p99_us), (3000, 4000));
    assert!(
        l.generator.saturated,
        "one saturated worker makes the merged generator saturated"
    );
    assert!(l.warnings.contains(&"worker 2: note 2".to_string()), "{:?}", l.warnings);
    assert_eq!(l.duration_s, 1.02);
}

#[test]
fn each_step_merges_with_its_own_interval_logs_and_a_short_result_is_named() {
    use crate::load::hlog;
    use crate::load::stats::IntervalStats;
    let dir = scratch("steps");
    let start = std::time::SystemTime::now();
    // Worker 0 ran both steps; worker 1 only the first.
    for (i, steps) in [(0u32, 2usize), (1, 1)] {
        let mut report = RunReport::new(crate::meta::run_meta());
        for step in 0..steps {
            let v = 100 * (step as u64 + 1) + u64::from(i);
            let mut r = result(i, 2, &[v], 0.0, 0.1);
            r.generator.cpu_s = 0.0;
            report.load.push(r);
            let mut interval = IntervalStats::default();
            interval.response("200", v, v, false, None);
            let path = hlog_file(&dir, i).with_extension(format!("step{}.hlog", step + 1));
            let mut w = hlog::Writer::create(Some(&path), start, true).unwrap_or_else(|e| panic!("{e}"));
            w.write(0, &interval).unwrap_or_else(|e| panic!("{e}"));
            w.finish().unwrap_or_else(|e| panic!("{e}"));
        }
        let bytes = serde_json::to_vec(&report).unwrap_or_else(|e| panic!("{e}"));
        write_atomic(&result_file(&dir, i), &bytes).unwrap_or_else(|e| panic!("{e}"));
    }
    let merged = collect(&dir, Some(2), Tolerance::default()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(merged.load.len(), 2);
    let first = &merged.load[0];
    assert!(
        !first.warnings.iter().any(|w| w.contains("interval log")),
        "{:?}",
        first.warnings
    );
    assert_eq!(first.time_series[0].p99_us, 101, "from both workers' step-1 logs");
    assert_eq!(
        first.generator.requests_per_cpu_s, 0.0,
        "no CPU measured: no figure, not infinity"
    );
    let second = &merged.load[1];
    let d = dist(second);
    assert_eq!(d.workers[1].state, WorkerState::Failed);
    assert_eq!(d.workers[1].message.as_deref(), Some("its result has 1 step(s), not 2"));
    assert!(!d.complete);
    assert_eq!(second.time_series[0].p99_us, 200, "worker 0's step-2 log");
}
