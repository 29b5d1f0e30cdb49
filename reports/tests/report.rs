//! The report's JSON Schema is checked in and matches the model; reports validate against it,
//! round-trip through JSON, and render to the golden text. `UPDATE_GOLDEN=1` rewrites the files.

#![allow(clippy::expect_used, clippy::unwrap_used)] // Test code: a failure should panic.

use std::collections::BTreeMap;
use std::path::PathBuf;

use meshbench_report::*;

fn crate_file(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Compares `actual` with the file, or rewrites it under UPDATE_GOLDEN=1.
fn golden(rel: &str, actual: &str) {
    let path = crate_file(rel);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).expect("write golden");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        expected == actual,
        "{} differs from the output; rerun with UPDATE_GOLDEN=1 if the change is intended\n--- output:\n{actual}",
        path.display()
    );
}

fn percentiles(base: u64) -> Percentiles {
    Percentiles {
        p50: base,
        p90: base * 2,
        p99: base * 5,
        p999: base * 9,
        max: base * 20,
        mean: base as f64 * 1.2,
    }
}

pub fn sample() -> RunReport {
    let mut report = RunReport::new(RunMeta {
        tool: "meshbench".into(),
        version: "0.1.0".into(),
        git_revision: Some("abc1234".into()),
        host: "bench-1".into(),
        cores: 2,
        started_at: "2026-11-27T09:00:00Z".into(),
        command: vec!["meshbench".into(), "load".into()],
        machine: None,
    });
    report.targets.push(TargetInfo {
        name: "nginx".into(),
        kind: "external".into(),
        address: Some("127.0.0.1:8080".into()),
        version: None,
    });
    report.conformance.push(SuiteResult {
        suite: "http-routing".into(),
        target: "reference".into(),
        cases: vec![
            CaseResult {
                id: "exact-path".into(),
                outcome: CaseOutcome::Pass,
                message: None,
                duration_ms: 1.5,
            },
            CaseResult {
                id: "cors".into(),
                outcome: CaseOutcome::Fail,
                message: Some("expected 200, got 404".into()),
                duration_ms: 2.0,
            },
        ],
        mode: Some("captured".into()),
    });
    report.load.push(LoadResult {
        scenario: "ad-hoc".into(),
        target: Some("nginx".into()),
        repetition: 0,
        settings: LoadSettings {
            url: "http://127.0.0.1:8080/".into(),
            protocol: "h1".into(),
            mode: LoadMode::Open,
            rate: Some(1000.0),
            connections: 16,
            streams: 1,
            workers: 2,
            duration_s: Some(10.0),
            requests: None,
            warmup_s: 1.0,
            method: "GET".into(),
            request_body_bytes: 0,
            timeout_s: 10.0,
        },
        duration_s: 10.0,
        requests: 10_000,
        errors: 3,
        late: 12,
        rps: 1000.0,
        asked_rps: Some(1000.0),
        latency_us: percentiles(250),
        latency_uncorrected_us: Some(percentiles(200)),
        ladder_us: vec![
            LadderPoint {
                percentile: 50.0,
                value_us: 250,
                count: 5000,
            },
            LadderPoint {
                percentile: 99.0,
                value_us: 1250,
                count: 9900,
            },
            LadderPoint {
                percentile: 100.0,
                value_us: 5000,
                count: 10_000,
            },
        ],
        status_codes: BTreeMap::from([("200".into(), 9997), ("503".into(), 3)]),
        error_classes: BTreeMap::from([("http-5xx".into(), 3)]),
        time_series: vec![SeriesPoint {
            t_s: 1.0,
            requests: 1000,
            rps: 1000.0,
            errors: 0,
            p50_us: 250,
            p99_us: 1200,
        }],
        histograms: EncodedHistograms {
            encoding: "hdrhistogram-v2-deflate-base64".into(),
            corrected: "HISTFAAAAB".into(),
            uncorrected: None,
        },
        generator: GeneratorUsage {
            cpu_s: 0.5,
            requests_per_cpu_s: 20_000.0,
            max_worker_busy: 0.3,
            saturated: false,
        },
        thresholds: vec![],
        gateway: Some(ProcessUsage {
            cpu_s: 0.25,
            cpu_s_per_1k_requests: 0.025,
            rss_bytes: 12 << 20,
            peak_rss_bytes: 14 << 20,
        }),
        warnings: vec![],
        distribution: None,
    });
    report
}

#[test]
fn checked_in_schema_matches_the_model() {
    let schema = serde_json::to_string_pretty(&json_schema()).expect("schema") + "\n";
    golden(SCHEMA_FILE, &schema);
}

#[test]
fn a_report_validates_against_the_schema_and_a_broken_one_does_not() {
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(crate_file(SCHEMA_FILE)).expect("schema file"))
            .expect("schema json");
    let validator = jsonschema::validator_for(&schema).expect("valid schema");
    let good = serde_json::to_value(sample()).expect("json");
    let errors: Vec<String> = validator.iter_errors(&good).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:?}");
    let mut bad = good.clone();
    bad["load"][0]["rps"] = serde_json::json!("fast");
    assert!(!validator.is_valid(&bad));
    let mut extra = good;
    extra["load"][0]["surprise"] = serde_json::json!(1);
    assert!(!validator.is_valid(&extra));
}

#[test]
fn reports_round_trip_through_json() {
    let r = sample();
    let back: RunReport = serde_json::from_str(&serde_json::to_string(&r).expect("ser")).expect("de");
    assert_eq!(back, r);
}

#[test]
fn text_rendering_matches_the_golden_file() {
    golden("tests/golden/sample.txt", &text::render(&sample()));
}

#[test]
fn several_targets_get_a_case_by_target_matrix() {
    let mut report = sample();
    report.targets.push(TargetInfo {
        name: "envoy".into(),
        kind: "envoy".into(),
        address: None,
        version: Some("envoy 1.40.0".into()),
    });
    report.conformance.push(SuiteResult {
        suite: "http-routing".into(),
        target: "envoy".into(),
        cases: vec![CaseResult {
            id: "cors".into(),
            outcome: CaseOutcome::ExpectedFailure,
            message: Some("known difference".into()),
            duration_ms: 1.0,
        }],
        mode: None,
    });
    // `nginx` ran no suite: a column of dashes.
    let m = meshbench_report::text::render_matrix(&report);
    assert_eq!(
        m,
        "case                     nginx      envoy\n\
         http-routing/exact-path  -          -\n\
         http-routing/cors        -          XFAIL\n"
    );
    report.targets[0].name = "reference".into();
    let m = meshbench_report::text::render_matrix(&report);
    assert!(m.contains("http-routing/exact-path  PASS       -\n"), "{m}");
    assert!(m.contains("http-routing/cors        FAIL       XFAIL\n"), "{m}");
    assert!(meshbench_report::text::render(&report).contains(&m));
}

/// xmllint's verdict on a JUnit file against the checked-in Ant JUnit schema.
fn xmllint(xml: &str, name: &str) -> (bool, String) {
    let file = std::env::temp_dir().join(format!("meshbench-junit-{}-{name}.xml", std::process::id()));
    std::fs::write(&file, xml).expect("write");
    let o = std::process::Command::new("xmllint")
        .args(["--noout", "--schema"])
        .arg(crate_file("schema/junit.xsd"))
        .arg(&file)
        .output()
        .expect("xmllint (apt-get install libxml2-utils; ci/test.sh does)");
    let _ = std::fs::remove_file(&file);
    (o.status.success(), String::from_utf8_lossy(&o.stderr).into_owned())
}

#[test]
fn junit_passes_the_ant_schema_with_readable_failures() {
    let mut report = sample();
    report.conformance[0].cases.push(CaseResult {
        id: "tls".into(),
        outcome: CaseOutcome::ExpectedFailure,
        message: Some("known difference: a reason".into()),
        duration_ms: 3.0,
    });
    let xml = junit::render(&report);
    let (ok, why) = xmllint(&xml, "good");
    assert!(ok, "{why}\n{xml}");
    assert!(xml.contains(
        "<testsuite id=\"0\" name=\"http-routing\" package=\"reference\" tests=\"3\" failures=\"1\" errors=\"0\" skipped=\"1\" time=\"0.006\" timestamp=\"2026-11-27T09:00:00\" hostname=\"bench-1\">"
    ), "{xml}");
    assert!(
        xml.contains(
            "<failure message=\"expected 200, got 404\" type=\"ExpectationFailed\">expected 200, got 404</failure>"
        ),
        "{xml}"
    );
    assert!(xml.contains("<skipped message=\"known difference: a reason\"/>"));
    assert!(xml.contains("<property name=\"mode\" value=\"captured\"/>"), "{xml}");
    // The schema is a real check: without a hostname the file is refused.
    let (ok, _) = xmllint(&xml.replace(" hostname=\"bench-1\"", ""), "bad");
    assert!(!ok);
}

#[test]
fn how_a_suite_ran_is_shown_with_its_cases() {
    let report = sample();
    let html = meshbench_report::html::render(&report);
    assert!(
        html.contains("<tr class=\"mode\"><td colspan=\"1\">on reference: captured</td></tr>"),
        "{html}"
    );
    assert!(text::render(&report).contains("1 passed, 1 failed, 0 skipped, 0 expected failures (captured)\n"));
    let mut plain = report;
    plain.conformance[0].mode = None;
    assert!(!meshbench_report::html::render(&plain).contains("class=\"mode\""));
}
