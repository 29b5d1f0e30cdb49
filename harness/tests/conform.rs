//! `meshbench conform`: the built-in suites pass against meshgate, and the harness can fail:
//! a plain echo server and a gateway with one rule changed fail the right cases with useful text.

#![allow(clippy::expect_used, clippy::unwrap_used)] // Test code: a failure should panic.

use std::path::PathBuf;
use std::process::{Command, Output};

fn meshbench(args: &[&str]) -> Output {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_meshbench"));
    let meshgate = bin.parent().unwrap().join("meshgate");
    Command::new(&bin)
        .args(args)
        .arg("--meshgate")
        .arg(meshgate)
        .output()
        .expect("run meshbench")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("meshbench-conform-test-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

fn suite_text(name: &str) -> String {
    std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../suites/conformance/{name}.yaml")),
    )
    .unwrap()
}

/// A built-in suite's text with each `(from, to)` made once; each `from` must still be there, so
/// a suite edit cannot quietly turn a test of a broken gateway into a test of a correct one.
fn changed(suite: &str, changes: &[(&str, &str)]) -> String {
    changes.iter().fold(suite_text(suite), |text, (from, to)| {
        assert!(text.contains(from), "suite {suite} no longer contains {from:?}");
        text.replacen(from, to, 1)
    })
}

/// Writes `suite` as `<file>.yaml` and runs the cases matching `filter`: (exit code, output).
fn conform_text(file: &str, suite: &str, filter: &str) -> (Option<i32>, String) {
    conform_with(file, suite, filter, &[])
}

/// `conform_text` with more arguments.
fn conform_with(file: &str, suite: &str, filter: &str, more: &[&str]) -> (Option<i32>, String) {
    let path = tmp(&format!("{file}.yaml"));
    std::fs::write(&path, suite).unwrap();
    let mut args = vec!["conform", "--suite", path.to_str().unwrap(), "--filter", filter];
    args.extend(more);
    let o = meshbench(&args);
    (o.status.code(), text(&o))
}

/// Whether this machine can run suites captured (root, iproute2, iptables, setpriv); says why not.
fn can_capture() -> bool {
    match mesh_netns::unavailable() {
        Some(why) => {
            eprintln!("captured half skipped: {why}");
            false
        }
        None => true,
    }
}

#[test]
fn built_in_suites_pass_against_the_reference_gateway_and_write_reports() {
    let out_dir = tmp("out");
    let o = meshbench(&["conform", "--out", out_dir.to_str().unwrap()]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(
        t.contains("suite http-routing against reference: 27 passed, 0 failed"),
        "{t}"
    );
    assert!(
        t.contains("suite weighted-splits against reference: 7 passed, 0 failed"),
        "{t}"
    );
    let report: meshbench_report::RunReport =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("report.json")).unwrap()).unwrap();
    assert!(
        t.contains("suite tcp-routing against reference: 3 passed, 0 failed"),
        "{t}"
    );
    assert!(
        t.contains("suite grpc-routing against reference: 8 passed, 0 failed"),
        "{t}"
    );
    assert!(
        t.contains("suite tls-termination against reference: 15 passed, 0 failed"),
        "{t}"
    );
    assert!(
        t.contains("suite egress-control against reference: 17 passed, 0 failed"),
        "{t}"
    );
    assert!(
        t.contains("suite egress-allow-any against reference: 5 passed, 0 failed"),
        "{t}"
    );
    // The sidecar suites say how they ran: captured where this machine can, else why not.
    let mode = match mesh_netns::unavailable() {
        None => "(captured)".to_string(),
        Some(why) => format!("(explicit proxy: {why})"),
    };
    for (suite, n) in [("egress-control", 17), ("egress-allow-any", 5), ("egress-gateway", 5)] {
        let line =
            format!("suite {suite} against reference: {n} passed, 0 failed, 0 skipped, 0 expected failures {mode}");
        assert!(t.contains(&line), "{line}\n{t}");
    }
    assert_eq!(report.conformance.len(), 8);
    // Every gateway's log is kept, the extra egress gateway's too.
    let log = std::fs::read_to_string(out_dir.join("logs/egress-gateway.reference-egress.log")).unwrap();
    assert!(log.contains("outbound|80||api.example.com"), "{log}");
    let junit = std::fs::read_to_string(out_dir.join("junit.xml")).unwrap();
    assert!(
        junit.contains("name=\"http-routing\" package=\"reference\" tests=\"27\" failures=\"0\" errors=\"0\""),
        "{junit}"
    );
}

#[test]
fn a_plain_echo_server_fails_the_routing_cases() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let echo = rt
        .block_on(mesh_echo::Echo::builder("imposter").http_loopback().start())
        .unwrap();
    let addr = echo.http[0];
    let _guard = rt.enter();
    let handle = std::thread::spawn(move || {
        let o = meshbench(&[
            "conform",
            "--target",
            "external",
            "--address",
            &format!("80={addr}"),
            "--suite",
            "http-routing",
        ]);
        (o.status.code(), text(&o))
    });
    // Keep the runtime (and the echo) alive while meshbench runs.
    let (code, t) = loop {
        if handle.is_finished() {
            break handle.join().unwrap();
        }
        rt.block_on(tokio::time::sleep(std::time::Duration::from_millis(20)));
    };
    assert_eq!(code, Some(1), "{t}");
    assert!(
        t.contains("FAIL  http-routing/no-route-is-404\n      status: expected \"404\", observed \"200\""),
        "{t}"
    );
    assert!(t.contains("FAIL  http-routing/redirect-keeps-query"), "{t}");
    assert!(
        t.contains("request: h1 GET /foo?key=value port 80"),
        "the failing request is shown: {t}"
    );
}

#[test]
fn one_changed_rule_fails_its_case_and_known_differences_apply() {
    let broken = changed(
        "http-routing",
        &[(
            "route: [{destination: {host: reviews, subset: v2, port: {number: 9080}}}]",
            "route: [{destination: {host: reviews, subset: v1, port: {number: 9080}}}]",
        )],
    );
    let path = tmp("broken.yaml");
    std::fs::write(&path, broken).unwrap();
    let o = meshbench(&[
        "conform",
        "--suite",
        path.to_str().unwrap(),
        "--filter",
        "http-routing/header-*",
    ]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(
        t.contains(
            "FAIL  http-routing/header-exact-match\n      answered by version: expected \"v2\", observed \"v1\""
        ),
        "{t}"
    );
    assert!(
        t.contains("PASS  http-routing/header-operations-single-destination-wins"),
        "{t}"
    );
    // Listed as a known difference: an expected failure, and the run passes.
    let known = tmp("known.yaml");
    std::fs::write(
        &known,
        "http-routing/header-exact-match: a deliberate change for this test\n",
    )
    .unwrap();
    let o = meshbench(&[
        "conform",
        "--suite",
        path.to_str().unwrap(),
        "--filter",
        "http-routing/header-*",
        "--known-differences",
        known.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("XFAIL http-routing/header-exact-match"));
    // A listed case that passes is reported, and fails the run.
    std::fs::write(
        &known,
        "http-routing/header-operations-single-destination-wins: not really different\n",
    )
    .unwrap();
    let o = meshbench(&[
        "conform",
        "--suite",
        "http-routing",
        "--filter",
        "http-routing/header-operations-*",
        "--known-differences",
        known.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("XPASS http-routing/header-operations-single-destination-wins"),
        "{}",
        text(&o)
    );
}

#[test]
fn a_sidecar_that_lets_everything_out_fails_the_egress_blocking_cases() {
    let open = changed("egress-control", &[("{mode: REGISTRY_ONLY}", "{mode: ALLOW_ANY}")]);
    // Cut the cases naming hosts outside loopback: under ALLOW_ANY they would go out for real.
    let (kept, _) = open.split_once("- id: unregistered-host-blocked").unwrap();
    let (code, t) = conform_with("open-egress", kept, "*", &["--no-capture"]);
    assert_eq!(code, Some(1), "{t}");
    // The unregistered echo answers, where REGISTRY_ONLY must refuse.
    assert!(
        t.contains(
            "FAIL  egress-control/unregistered-address-blocked\n      status: expected \"502\", observed \"200\""
        ),
        "{t}"
    );
    assert!(t.contains("PASS  egress-control/registered-internal-service"), "{t}");
    assert!(t.contains("PASS  egress-control/mesh-route-header-match"), "{t}");
    assert!(
        t.contains("suite egress-control against reference: 6 passed, 1 failed, 0 skipped, 0 expected failures (explicit proxy: --no-capture)"),
        "{t}"
    );
    if can_capture() {
        // Captured, the app's connection to the unregistered echo goes through, and its SYN
        // reaches the workloads' host.
        let (code, t) = conform_text("open-egress-captured", kept, "*");
        assert_eq!(code, Some(1), "{t}");
        assert!(
            t.contains("FAIL  egress-control/unregistered-address-blocked\n      expected a refused failure, observed a response with status 200"),
            "{t}"
        );
        assert!(
            t.contains("6 passed, 1 failed, 0 skipped, 0 expected failures (captured)"),
            "{t}"
        );
        let syns = kept.replacen(
            "captured: {error: refused, syns: 0}",
            "captured: {status: 200, syns: 0}",
            1,
        );
        let (code, t) = conform_text("open-egress-syns", &syns, "egress-control/unregistered-address-blocked");
        assert_eq!(code, Some(1), "{t}");
        assert!(
            t.contains("FAIL  egress-control/unregistered-address-blocked\n      SYNs that reached the workloads' host: expected 0, observed 1"),
            "{t}"
        );
    }
    // Without its DestinationRule the sidecar sends plain HTTP to the HTTPS service.
    let no_origination = changed(
        "egress-control",
        &[("host: secure.example.com\n", "host: elsewhere.example.com\n")],
    );
    let (code, t) = conform_text(
        "no-origination",
        &no_origination,
        "egress-control/tls-origination-simple",
    );
    assert_eq!(code, Some(1), "{t}");
    assert!(
        t.contains("FAIL  egress-control/tls-origination-simple\n      status: expected \"200\""),
        "{t}"
    );
}

#[test]
fn a_sidecar_that_skips_the_egress_gateway_fails_the_two_hop_case() {
    let direct = changed(
        "egress-gateway",
        &[(
            "route: [{destination: {host: istio-egressgateway.istio-system.svc.cluster.local, port: {number: 80}}}]",
            "route: [{destination: {host: api.example.com, port: {number: 80}}}]",
        )],
    );
    let (code, t) = conform_with("direct-egress", &direct, "*", &["--no-capture"]);
    assert_eq!(code, Some(1), "{t}");
    assert!(
        t.contains("FAIL  egress-gateway/two-hops-reach-the-external-service\n      the workload saw header X-Egress-Hop: expected \"gateway\", observed nothing"),
        "{t}"
    );
    assert!(
        t.contains("PASS  egress-gateway/egress-gateway-serves-its-host-directly"),
        "{t}"
    );
    if can_capture() {
        // Captured, the external service sees who came: the app (the first host, .2), not the
        // egress gateway.
        let (code, t) = conform_text("direct-egress-captured", &direct, "*");
        assert_eq!(code, Some(1), "{t}");
        assert!(
            t.contains("FAIL  egress-gateway/two-hops-reach-the-external-service\n      the workload saw IP: expected \"10.251.0."),
            "{t}"
        );
        assert!(t.contains("observed \"10.251.0.2\""), "{t}");
        assert!(t.contains("sent from 10.251.0.2 to "), "{t}");
    }
}

/// Children of `pid` named `name`, from /proc.
fn children_named(pid: u32, name: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let Some((comm, rest)) = stat.split_once(") ") else {
            continue;
        };
        let ppid = rest.split_whitespace().nth(1).and_then(|p| p.parse::<u32>().ok());
        if comm.ends_with(&format!("({name}")) && ppid == Some(pid) {
            out.push(child);
        }
    }
    out
}

#[test]
fn an_interrupted_run_stops_its_gateways() {
    let path = tmp("slow.yaml");
    std::fs::write(
        &path,
        "name: slow\nports: [80]\nworkloads:\n- {service: reviews, versions: [v1], port: 9080}\nconfig: |\n  \
         apiVersion: networking.istio.io/v1\n  kind: Gateway\n  metadata: {name: gw, namespace: istio-system}\n  \
         spec:\n    servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}]\n  ---\n  \
         apiVersion: networking.istio.io/v1\n  kind: VirtualService\n  metadata: {name: r, namespace: default}\n  \
         spec:\n    hosts: ['*']\n    gateways: [istio-system/gw]\n    \
         http: [{route: [{destination: {host: reviews, port: {number: 9080}}}]}]\n\
         cases:\n- id: slow\n  request: {port: 80, path: '/?delay=60s'}\n  expect: {status: 200}\n",
    )
    .unwrap();
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_meshbench"));
    let mut child = Command::new(&bin)
        .args(["conform", "--suite", path.to_str().unwrap(), "--meshgate"])
        .arg(bin.parent().unwrap().join("meshgate"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let gateways = loop {
        let found = children_named(child.id(), "meshgate");
        if !found.is_empty() {
            break found;
        }
        assert!(std::time::Instant::now() < deadline, "meshgate never started");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    // Let the slow case start, then interrupt.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("interrupted: gateways and workloads stopped"),
        "{stderr}"
    );
    for pid in gateways {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "meshgate {pid} outlived the run"
        );
    }
}

#[test]
fn requests_one_at_a_time_do_not_trip_the_circuit_breaker() {
    let serial = changed(
        "http-routing",
        &[
            ("count: 6, concurrency: 6}", "count: 6, concurrency: 1}"),
            ("/breaker?delay=2s", "/breaker?delay=10ms"),
        ],
    );
    let (code, t) = conform_text("serial", &serial, "*breaker*");
    assert_eq!(code, Some(1), "{t}");
    assert!(
        t.contains("status counts: expected {200: 1..=2, 503: 4..=5}, observed {200: 6}"),
        "{t}"
    );
}

#[test]
fn a_split_ten_points_off_fails_its_distribution_case() {
    let off = changed(
        "weighted-splits",
        &[
            (
                "subset: v1, port: {number: 9080}}, weight: 80}",
                "subset: v1, port: {number: 9080}}, weight: 70}",
            ),
            (
                "subset: v2, port: {number: 9080}}, weight: 20}",
                "subset: v2, port: {number: 9080}}, weight: 30}",
            ),
        ],
    );
    let (code, t) = conform_text("off", &off, "*80-20");
    assert_eq!(code, Some(1), "{t}");
    assert!(
        t.contains("distribution: expected v1 at 80% of 1300 (965..=1110; a correct target falls outside less than once in 2000000), observed"),
        "{t}"
    );
}

/// The external workflow: print the config with fixed workload ports and kept certificates, have
/// "someone else" (here: this test) run a gateway with it, then run the suite against that gateway.
#[test]
fn an_external_gateway_configured_from_print_config_passes() {
    let certs = tmp("kept-certs");
    // Fixed ports below Linux's ephemeral range (32768 and up), so the connections of tests
    // running alongside cannot take them: the first base whose three ports (the suite's three
    // echoes) are free.
    let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
    let base = (0..200u16)
        .map(|i| 20000 + (std::process::id() % 50) as u16 * 200 + i * 4)
        .find(|&b| (b..b + 3).all(free))
        .expect("a free port range")
        .to_string();
    let placement = ["--workload-ports", &base, "--certs", certs.to_str().unwrap()];
    let mut args = vec!["conform", "--suite", "tls-termination", "--print-config"];
    args.extend(placement);
    let o = meshbench(&args);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let config_dir = tmp("external-config");
    std::fs::create_dir_all(&config_dir).unwrap();
    std::fs::write(config_dir.join("all.yaml"), &o.stdout).unwrap();
    let ready = tmp("external.ready.json");
    let ports = ["80", "443", "8443", "9443", "15443", "31400"];
    let mut gate = Command::new(
        PathBuf::from(env!("CARGO_BIN_EXE_meshbench"))
            .parent()
            .unwrap()
            .join("meshgate"),
    );
    gate.arg("-c")
        .arg(&config_dir)
        .args(["--labels", "istio=ingressgateway", "--ready-file"])
        .arg(&ready);
    for p in ports {
        gate.args(["--port-map", &format!("{p}=127.0.0.1:0")]);
    }
    let mut gate = gate
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let listeners: serde_json::Value = loop {
        if let Ok(t) = std::fs::read_to_string(&ready) {
            break serde_json::from_str(&t).unwrap();
        }
        assert!(std::time::Instant::now() < deadline, "meshgate did not get ready");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut args = vec![
        "conform".to_string(),
        "--suite".into(),
        "tls-termination".into(),
        "--target".into(),
        "external".into(),
    ];
    args.extend(placement.iter().map(|s| s.to_string()));
    for p in ports {
        args.push("--address".into());
        args.push(format!("{p}={}", listeners["listeners"][p].as_str().unwrap()));
    }
    let o = meshbench(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let _ = gate.kill();
    let _ = gate.wait();
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(
        t.contains("suite tls-termination against external: 15 passed, 0 failed"),
        "{t}"
    );
}

#[test]
fn a_route_without_its_mirror_fails_the_mirror_case() {
    let unmirrored = changed(
        "http-routing",
        &[("      mirror: {host: ratings, port: {number: 9080}}\n", "")],
    );
    let (code, t) = conform_text("unmirrored", &unmirrored, "*mirror*");
    assert_eq!(code, Some(1), "{t}");
    assert!(
        t.contains(
            "requests received by workloads: expected {\"ratings\": 1, \"reviews\": 1}, observed {\"ratings\": 0, \"reviews\": 1}"
        ),
        "{t}"
    );
}

#[test]
fn a_bad_suite_file_exits_2_with_file_and_line() {
    let path = tmp("bad.yaml");
    std::fs::write(
        &path,
        "name: bad\ncases:\n- id: x\n  request: {port: 80}\n  expect: {stauts: 200}\n",
    )
    .unwrap();
    let o = meshbench(&["conform", "--suite", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).contains("bad.yaml:5: cases[0].expect.stauts: unknown field `stauts` (did you mean `status`?"),
        "{}",
        text(&o)
    );
    std::fs::write(&path, "name: bad\nrole: ingress\ncases: []\n").unwrap();
    let o = meshbench(&["conform", "--suite", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).contains("bad.yaml:2: role: `ingress` is not a valid value (valid values: gateway, sidecar)"),
        "{}",
        text(&o)
    );
    std::fs::write(
        &path,
        "name: bad\nports: [80]\ngateways:\n- {name: egress, ports: [80]}\ncases: []\n",
    )
    .unwrap();
    let o = meshbench(&["conform", "--suite", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).contains("bad.yaml:4: gateways[0].ports: port 80 is also the suite's"),
        "{}",
        text(&o)
    );
}
