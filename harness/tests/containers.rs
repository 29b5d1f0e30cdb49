//! The container targets on a real Docker engine: images built here (`meshbench images build`,
//! nothing pulled), every built-in suite on `container:meshgate` and `container:envoy`, and no
//! labelled container left after a run or an interrupted one. Skipped, with the reason, where no
//! Docker engine answers.

#![allow(clippy::expect_used, clippy::unwrap_used)] // Test code: a failure should panic.

mod support;

use support::{meshbench, text};

use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Builds the images once per test binary; None (with the reason printed) without Docker.
fn images() -> Option<()> {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let info = Command::new("docker")
            .args(["info", "--format", "{{.ServerVersion}}"])
            .output();
        match info {
            Ok(o) if o.status.success() => {}
            Ok(o) => return Err(format!("no Docker engine answers: {}", text(&o.stderr).trim())),
            Err(e) => return Err(format!("no docker command: {e}")),
        }
        let out = meshbench(&["images", "build"]);
        assert_eq!(out.status.code(), Some(0), "{}{}", text(&out.stdout), text(&out.stderr));
        let said = text(&out.stdout);
        assert!(said.contains("built meshbench/meshgate:"), "{said}");
        assert!(said.contains("built meshbench/envoy:"), "{said}");
        Ok(())
    });
    match built {
        Ok(()) => Some(()),
        Err(why) => {
            eprintln!("SKIPPED: {why}");
            None
        }
    }
}

/// Containers, then networks, carrying this target name's label (containers running or not).
fn labelled(name: &str) -> Vec<String> {
    let filter = format!("label=meshbench.target={name}");
    let mut all = docker(&["ps", "-a", "-q", "--filter", &filter]);
    all.extend(docker(&["network", "ls", "-q", "--filter", &filter]));
    all
}

/// The lines `docker ARGS` prints.
fn docker(args: &[&str]) -> Vec<String> {
    let out = Command::new("docker").args(args).output().expect("docker");
    text(&out.stdout).lines().map(String::from).collect()
}

/// Waits until the target's containers include its echo workloads and its gateway (started
/// after them); their ids.
fn wait_for_suite(name: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ids = docker(&["ps", "-q", "--filter", &format!("label=meshbench.target={name}")]);
        let commands = docker(
            &[
                &["inspect", "--format", "{{json .Config.Cmd}}"][..],
                &ids.iter().map(String::as_str).collect::<Vec<_>>(),
            ]
            .concat(),
        );
        let gateway = commands.iter().any(|c| c.starts_with("[\"-c\""));
        if gateway && commands.iter().any(|c| c.starts_with("[\"echo\"")) {
            return ids;
        }
        assert!(
            Instant::now() < deadline,
            "the suite's containers never all ran for {name}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn every_built_in_suite_passes_on_container_meshgate_and_envoy() {
    if images().is_none() {
        return;
    }
    let out = meshbench(&[
        "conform",
        "--target",
        "ct-meshgate=container:meshgate,ct-envoy=container:envoy",
        "-o",
        "json",
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let report: meshbench_report::RunReport = serde_json::from_slice(&out.stdout).expect("json");
    for target in ["ct-meshgate", "ct-envoy"] {
        let suites: Vec<_> = report.conformance.iter().filter(|s| s.target == target).collect();
        assert_eq!(suites.len(), 8, "{target}: every built-in suite ran");
        for s in suites {
            // A container cannot be put in a host with capture: the egress suites fall back, saying why.
            let mode = s
                .suite
                .starts_with("egress")
                .then_some("explicit proxy: the container:meshgate target runs a sidecar as an explicit proxy only");
            if target == "ct-meshgate" {
                assert_eq!(s.mode.as_deref(), mode, "{}", s.suite);
            }
            for c in &s.cases {
                assert_eq!(
                    c.outcome,
                    meshbench_report::CaseOutcome::Pass,
                    "{target} {}/{}: {:?}",
                    s.suite,
                    c.id,
                    c.message
                );
            }
        }
        assert!(
            labelled(target).is_empty(),
            "{target} left containers or networks behind"
        );
    }
    let info: Vec<_> = report
        .targets
        .iter()
        .map(|t| (t.kind.as_str(), t.version.clone()))
        .collect();
    assert!(
        info.contains(&(
            "container:envoy",
            Some(format!("meshbench/envoy:{}", env!("CARGO_PKG_VERSION")))
        )),
        "{info:?}"
    );
}

#[test]
fn an_interrupted_run_leaves_no_container_behind() {
    if images().is_none() {
        return;
    }
    let name = format!("ct-interrupted-{}", std::process::id());
    let target = format!("{name}=container:meshgate");
    let mut child = Command::new(env!("CARGO_BIN_EXE_meshbench"))
        .args(["conform", "--target", &target])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_suite(&name);
    std::thread::sleep(Duration::from_millis(500));
    assert!(Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert_eq!(labelled(&name), Vec::<String>::new(), "{stderr}");
}

#[test]
fn the_gateway_and_its_workloads_are_containers_on_a_network_of_the_suite() {
    if images().is_none() {
        return;
    }
    let name = format!("ct-network-{}", std::process::id());
    let target = format!("{name}=container:meshgate");
    let child = Command::new(env!("CARGO_BIN_EXE_meshbench"))
        .args(["conform", "--suite", "http-routing", "--target", &target])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let ids = wait_for_suite(&name);
    // One network, labelled with the target, and every container of the target on it alone.
    let networks = docker(&[
        "network",
        "ls",
        "--format",
        "{{.Name}}",
        "--filter",
        &format!("label=meshbench.target={name}"),
    ]);
    assert_eq!(networks.len(), 1, "{networks:?}");
    assert!(networks[0].starts_with("meshbench-http-routing-"), "{networks:?}");
    let each = docker(&[&["inspect", "--format", "{{json .Config.Cmd}} {{range $n, $_ := .NetworkSettings.Networks}}{{$n}}{{end}} {{json .HostConfig.PortBindings}}"][..], &ids.iter().map(String::as_str).collect::<Vec<_>>()].concat());
    for line in &each {
        assert!(
            line.contains(&format!(" {} ", networks[0])),
            "on the suite's network only: {line}"
        );
    }
    // The gateway listens on the suite's port numbers at its own address, published on loopback
    // only; an echo listens on its service port and publishes nothing.
    let gateway = each
        .iter()
        .find(|l| l.starts_with("[\"-c\""))
        .expect("the gateway container");
    assert!(gateway.contains("\"80=0.0.0.0:80\""), "{gateway}");
    assert!(gateway.contains("\"80/tcp\":[{\"HostIp\":\"127.0.0.1\""), "{gateway}");
    assert!(!gateway.contains("0.0.0.0\",\"HostPort"), "{gateway}");
    let echo = each
        .iter()
        .find(|l| l.contains("\"reviews\""))
        .expect("a reviews echo container");
    assert!(echo.contains("\"--http\",\"0.0.0.0:9080\""), "{echo}");
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("PASS"), "{}", text(&out.stdout));
    assert_eq!(labelled(&name), Vec::<String>::new(), "nothing left");
}

#[test]
fn a_missing_image_skips_the_target_with_how_to_build_it() {
    if images().is_none() {
        return;
    }
    // A target whose image is not there: its suites are skipped with the reason, not failed.
    let out = Command::new(env!("CARGO_BIN_EXE_meshbench"))
        .args([
            "conform",
            "--suite",
            "http-routing",
            "--target",
            "container:envoy",
            "-o",
            "json",
        ])
        .env("MESHBENCH_IMAGE_PREFIX", "meshbench-test-absent")
        .output()
        .unwrap();
    let report: meshbench_report::RunReport = serde_json::from_slice(&out.stdout).expect("json");
    let cases = &report.conformance[0].cases;
    assert!(!cases.is_empty());
    for c in cases {
        assert_eq!(c.outcome, meshbench_report::CaseOutcome::Skip, "{c:?}");
        let why = c.message.as_deref().unwrap_or("");
        assert!(
            why.contains("meshbench-test-absent/envoy:") && why.contains("meshbench images build"),
            "{why}"
        );
    }
    // An unknown gateway is a usage error that names the ones there are.
    let out = Command::new(env!("CARGO_BIN_EXE_meshbench"))
        .args(["conform", "--suite", "http-routing", "--target", "container:nosuch"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("use container:meshgate or container:envoy"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn the_istio_target_without_its_images_skips_with_one_line_saying_how_to_load_them() {
    let out = meshbench(&[
        "conform",
        "--target",
        "istio",
        "--suite",
        "http-routing",
        "-o",
        "json",
        "--istio-pilot-image",
        "meshbench-test-absent/pilot:1.30.0",
        "--istio-proxy-image",
        "meshbench-test-absent/proxyv2:1.30.0",
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("istio: "))
        .expect("the reason, on one line");
    assert!(
        line.contains("meshbench-test-absent/pilot:1.30.0 and meshbench-test-absent/proxyv2:1.30.0"),
        "{line}"
    );
    assert!(
        line.contains("docker load -i pilot.tar && docker load -i proxyv2.tar"),
        "{line}"
    );
    let report: meshbench_report::RunReport = serde_json::from_slice(&out.stdout).expect("json");
    let suite = &report.conformance[0];
    assert_eq!(suite.target, "istio");
    assert!(suite
        .cases
        .iter()
        .all(|c| c.outcome == meshbench_report::CaseOutcome::Skip));
}
