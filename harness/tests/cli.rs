//! `meshbench validate` and `meshbench plan` as a user runs them: exit codes, diagnostics, output formats.

#![allow(clippy::expect_used, clippy::unwrap_used)] // Test helpers: a failure should panic.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn examples(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples").join(p)
}

fn meshbench(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_meshbench"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start meshbench");
    if let Some(text) = stdin {
        // A child that exits before reading all of it closes the pipe: its status and output,
        // which the caller checks, say why, so a broken pipe here is not the failure.
        let written = child.stdin.take().expect("stdin").write_all(text.as_bytes());
        if let Err(e) = written {
            assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "write stdin: {e}");
        }
    }
    drop(child.stdin.take());
    child.wait_with_output().expect("meshbench output")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn validate_accepts_bookinfo_with_warnings() {
    let out = meshbench(&["validate", examples("bookinfo").to_str().unwrap_or_default()], None);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("valid: 0 errors, 16 warnings in 10 resources"),
        "{stdout}"
    );
}

#[test]
fn validate_rejects_the_seed_egress_gateway_with_file_line_and_hint() {
    let out = meshbench(
        &["validate", examples("seed-istio-gateways").to_str().unwrap_or_default()],
        None,
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("egress-gateway.yaml:16: error[MB0200]: a server with protocol HTTPS needs a `tls` block"),
        "{stdout}"
    );
    assert!(
        stdout.contains("--> Gateway istio-system/egress-app-gateway, spec.servers[1].tls"),
        "{stdout}"
    );
    assert!(stdout.contains("= hint: add `tls:"), "{stdout}");
    assert!(
        stdout.contains("invalid: 1 error, 0 warnings in 10 resources"),
        "{stdout}"
    );
}

const TYPO: &str = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: r, namespace: web}
spec:
  host: [a.example.com]
  http:
  - route:
    - destination: {host: a.example.com}
      weight: -5
---
apiVersion: v1
kind: ConfigMap
metadata: {name: skipped}
";

#[test]
fn validate_reads_stdin_and_reports_every_problem() {
    let out = meshbench(&["validate", "-"], Some(TYPO));
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("<stdin>:5: error[MB0101]: unknown field `host`"),
        "{stdout}"
    );
    assert!(stdout.contains("did you mean `hosts`?"), "{stdout}");
    assert!(
        stdout.contains("<stdin>:9: error[MB0302]: weight -5 is negative"),
        "{stdout}"
    );
    assert!(
        stdout.contains("<stdin>:11: note[MB0105]: skipped ConfigMap (v1)"),
        "{stdout}"
    );
}

#[test]
fn validate_json_output_is_machine_readable() {
    let out = meshbench(&["validate", "--output", "json", "-"], Some(TYPO));
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["valid"], false);
    assert_eq!(v["resources"], 1);
    let codes: Vec<&str> = v["diagnostics"]
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|d| d["code"].as_str())
        .collect();
    assert!(
        codes.contains(&"MB0101") && codes.contains(&"MB0302") && codes.contains(&"MB0105"),
        "{codes:?}"
    );
    let weight = v["diagnostics"]
        .as_array()
        .expect("array")
        .iter()
        .find(|d| d["code"] == "MB0302")
        .expect("weight");
    assert_eq!(weight["field"], "spec.http[0].route[0].weight");
    assert_eq!(weight["line"], 9);
    assert_eq!(weight["resource"]["name"], "r");
}

#[test]
fn unreadable_path_exits_2() {
    let out = meshbench(&["validate", "/nonexistent/meshbench.yaml"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("cannot read /nonexistent/meshbench.yaml"));
}

#[test]
fn plan_prints_the_gateway_config_dump() {
    let bookinfo = examples("bookinfo");
    let out = meshbench(
        &[
            "plan",
            "--labels",
            "istio=ingressgateway",
            bookinfo.to_str().unwrap_or_default(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["listeners"][0]["name"], "0.0.0.0_8080");
    assert_eq!(
        v["route_tables"][0]["virtual_hosts"][0]["routes"]
            .as_array()
            .map(Vec::len),
        Some(5)
    );
    let cluster = &v["route_tables"][0]["virtual_hosts"][0]["routes"][0]["action"]["route"]["clusters"][0]["cluster"];
    assert_eq!(cluster, "outbound|9080||productpage.default.svc.cluster.local");
}

#[test]
fn plan_yaml_output_reads_back() {
    let bookinfo = examples("bookinfo");
    let out = meshbench(&["plan", "-o", "yaml", bookinfo.to_str().unwrap_or_default()], None);
    assert_eq!(out.status.code(), Some(0));
    let docs = mesh_model::load::parse_str("plan.yaml", &text(&out.stdout));
    assert!(docs.problems.is_empty(), "{:?}", docs.problems);
    let json = docs.documents[0].root.to_json();
    assert_eq!(json["listeners"][0]["port"], 8080);
}

#[test]
fn plan_refuses_an_invalid_config() {
    let out = meshbench(&["plan", "-"], Some(TYPO));
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert!(text(&out.stderr).contains("no plan printed"));
}

#[test]
fn mesh_config_is_applied_and_unknown_fields_are_noted() {
    let dir = std::env::temp_dir().join(format!("meshbench-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let mesh = dir.join("mesh.yaml");
    std::fs::write(
        &mesh,
        "outboundTrafficPolicy: {mode: REGISTRY_ONLY}\naccessLogFile: /dev/stdout\nrootNamespace: mesh-root\n",
    )
    .expect("write");
    let bookinfo = examples("bookinfo");
    let out = meshbench(
        &[
            "plan",
            "--mesh",
            mesh.to_str().unwrap_or_default(),
            bookinfo.to_str().unwrap_or_default(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["mesh"]["outbound_traffic_policy"], "REGISTRY_ONLY");
    let out = meshbench(
        &[
            "validate",
            "--mesh",
            mesh.to_str().unwrap_or_default(),
            bookinfo.to_str().unwrap_or_default(),
        ],
        None,
    );
    assert!(text(&out.stdout).contains("MeshConfig field `accessLogFile` is not used by meshbench; ignored"));
    std::fs::write(&mesh, "outboundTrafficPolicy: {mode: REGISTRY_ONLYY}\n").expect("write");
    let out = meshbench(
        &[
            "validate",
            "--mesh",
            mesh.to_str().unwrap_or_default(),
            bookinfo.to_str().unwrap_or_default(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("did you mean `REGISTRY_ONLY`?"),
        "{}",
        text(&out.stdout)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn output_formats_are_honoured_and_a_closed_pipe_ends_quietly() {
    let bookinfo = examples("bookinfo");
    let b = bookinfo.to_str().unwrap_or_default();
    // `-o text` is text, `-o yaml` YAML, `-o json` JSON, for plan and validate alike.
    let t = meshbench(&["plan", "-o", "text", "--labels", "istio=ingressgateway", b], None);
    let out = text(&t.stdout);
    assert!(out.starts_with("listener 0.0.0.0_8080 (0.0.0.0:8080)\n"), "{out}");
    assert!(out.contains("uri =/productpage -> route to outbound|9080||productpage.default.svc.cluster.local (100)"));
    let y = meshbench(&["validate", "-o", "yaml", b], None);
    assert!(text(&y.stdout).contains("\nvalid: true\n"), "{}", text(&y.stdout));
    let envoy = meshbench(
        &["plan", "--envoy", "-o", "yaml", "--labels", "istio=ingressgateway", b],
        None,
    );
    assert!(
        text(&envoy.stdout).contains("name: 0.0.0.0_8080"),
        "{}",
        text(&envoy.stdout)
    );
    // A sidecar's capture shape: virtualOutbound hands connections on by original destination.
    let seed = examples("seed-istio-gateways").join("workloads.yaml");
    let w = seed.to_str().unwrap_or_default();
    let captured = meshbench(
        &["plan", "--sidecar", "--envoy", "--capture", "--labels", "app=sleep", w],
        None,
    );
    let captured: serde_json::Value = serde_json::from_slice(&captured.stdout).expect("JSON");
    let listeners = captured["static_resources"]["listeners"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(listeners[0]["name"], "virtualOutbound");
    assert_eq!(listeners[0]["use_original_dst"], true);
    assert!(listeners.iter().any(|l| l["name"] == "0.0.0.0_443"), "{listeners:?}");
    let explicit = meshbench(&["plan", "--sidecar", "--envoy", "--labels", "app=sleep", w], None);
    let explicit: serde_json::Value = serde_json::from_slice(&explicit.stdout).expect("JSON");
    assert!(explicit["static_resources"]["listeners"][0]["use_original_dst"].is_null());
    assert_ne!(
        meshbench(&["plan", "--envoy", "--capture", b], None).status.code(),
        Some(0),
        "--capture needs --sidecar"
    );
    // Many routes, more than a pipe holds; the reader takes a few bytes and goes away.
    let mut config = String::from(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: default}\nspec:\n  \
         selector: {istio: ingressgateway}\n  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}]\n",
    );
    for i in 0..400 {
        config.push_str(&format!(
            "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: v{i}, namespace: default}}\nspec:\n  \
             hosts: [h{i}.example.com]\n  gateways: [gw]\n  http: [{{route: [{{destination: {{host: s{i}, port: {{number: 80}}}}}}]}}]\n"
        ));
    }
    // Its warnings (400 unknown hosts) go to a file: an unread stderr pipe would fill and block it.
    let errors = std::env::temp_dir().join(format!("meshbench-pipe-{}.err", std::process::id()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_meshbench"))
        .args(["plan", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&errors).unwrap())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(config.as_bytes()).unwrap();
    drop(stdin);
    let mut first = [0u8; 16];
    std::io::Read::read_exact(child.stdout.as_mut().unwrap(), &mut first).unwrap();
    drop(child.stdout.take());
    let status = child.wait().unwrap();
    let err = std::fs::read_to_string(&errors).unwrap();
    let _ = std::fs::remove_file(&errors);
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(meshbench::cli::is_closed_pipe(
        "failed printing to stdout: Broken pipe (os error 32)"
    ));
    assert!(!meshbench::cli::is_closed_pipe("failed printing to stdout: disk full"));
}

#[test]
fn shell_completions_name_the_subcommands() {
    for shell in ["bash", "zsh", "fish"] {
        let out = meshbench(&["completions", shell], None);
        assert_eq!(out.status.code(), Some(0));
        let script = text(&out.stdout);
        for sub in ["validate", "plan", "conform", "run", "load", "merge"] {
            assert!(script.contains(sub), "{shell}: {sub}");
        }
    }
}

#[test]
fn two_targets_of_one_name_are_refused_before_anything_runs() {
    // Two builds side by side need names of their own, or their repetitions would be pooled.
    let out = meshbench(
        &[
            "run",
            "--target",
            "reference,reference",
            "--suite",
            "none",
            "--load",
            "none",
            "--out",
            "/tmp/meshbench-dup-target-test",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("a target named `reference` is already in the run") && err.contains("NAME=reference"),
        "{err}"
    );
    let out = meshbench(
        &[
            "run",
            "--target",
            "direct=reference",
            "--suite",
            "none",
            "--load",
            "none",
            "--out",
            "/tmp/meshbench-dup-target-test",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

const MISSING_SUBSET: &str = "\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web, namespace: apps}
spec:
  hosts: [web.apps.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 127.0.0.1}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: apps}
spec:
  hosts: [web]
  http:
  - route:
    - destination: {host: web, subset: v9}
  - route:
    - destination: {host: web}
";

#[test]
fn validate_gives_the_webhooks_verdict_and_counts_analysis_apart() {
    let out = meshbench(&["validate", "-"], Some(MISSING_SUBSET));
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "Kubernetes stores it: {stdout}");
    assert!(stdout.contains("error[IST0101]: subset `v9`"), "{stdout}");
    assert!(
        stdout.contains("valid: 0 errors, 1 warning in 2 resources; analysis: 1 error"),
        "{stdout}"
    );
    let out = meshbench(&["validate", "-o", "json", "-"], Some(MISSING_SUBSET));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        (
            v["valid"].as_bool(),
            v["errors"].as_u64(),
            v["analysis_errors"].as_u64()
        ),
        (Some(true), Some(0), Some(1))
    );
}

#[test]
fn analyze_reports_istios_codes_and_levels_and_exits_79_on_errors() {
    let out = meshbench(&["analyze", "-"], Some(MISSING_SUBSET));
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(79), "{stdout}");
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.starts_with("  =")).collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines[0].starts_with("Error [IST0101] (VirtualService apps/web <stdin>:18) subset `v9`"),
        "{stdout}"
    );
    // The webhook's warning about the rule after a rule without matches, at Istio's level.
    assert!(
        lines[1].starts_with("Warning [IST0130] (VirtualService apps/web <stdin>:19)"),
        "{stdout}"
    );

    let quiet = meshbench(
        &[
            "analyze",
            "--output-threshold",
            "error",
            "--failure-threshold",
            "Error",
            "-",
        ],
        Some(MISSING_SUBSET),
    );
    assert_eq!(
        text(&quiet.stdout).lines().filter(|l| l.starts_with("Warning")).count(),
        0
    );
    assert_eq!(quiet.status.code(), Some(79));
    let suppressed = meshbench(
        &["analyze", "-S", "IST0101=VirtualService apps/*", "-"],
        Some(MISSING_SUBSET),
    );
    assert_eq!(suppressed.status.code(), Some(0), "{}", text(&suppressed.stdout));
    let strict = meshbench(
        &[
            "analyze",
            "-S",
            "IST0101=VirtualService web",
            "--failure-threshold",
            "warning",
            "-",
        ],
        Some(MISSING_SUBSET),
    );
    assert_eq!(
        strict.status.code(),
        Some(79),
        "a warning fails at --failure-threshold warning"
    );
    let bad = meshbench(&["analyze", "-S", "IST0101", "-"], Some(MISSING_SUBSET));
    assert_eq!(bad.status.code(), Some(2));

    // Webhook errors are IST0106, as istioctl shows them, and keep meshbench's code as detail.
    let out = meshbench(&["analyze", "-o", "json", "-"], Some(TYPO));
    assert_eq!(out.status.code(), Some(79));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let first = &v.as_array().expect("messages")[0];
    assert_eq!(first["code"], "IST0106");
    assert_eq!(first["level"], "Error");
    assert_eq!(first["detail"], "MB0101");
    assert_eq!(first["origin"], "VirtualService web/r");
    assert_eq!(first["reference"], "<stdin>:5");
    assert_eq!(
        first["documentationUrl"],
        "https://istio.io/latest/docs/reference/config/analysis/ist0106/"
    );
    assert!(first["message"]
        .as_str()
        .unwrap_or("")
        .starts_with("Schema validation error: unknown field `host`"));
}
