//! `meshbench run`, the main job, on a small real run: conformance and load through meshgate and
//! the direct baseline, every report file written, and report.html checked in headless Chromium
//! (the charts carry one line per target plus the baseline, the matrix one row per case, and the
//! page fetches nothing from the network). ci/test.sh installs Chromium.

#![allow(clippy::expect_used, clippy::unwrap_used)] // Test code: a failure should panic.

use std::path::{Path, PathBuf};
use std::process::Command;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("meshbench-run-test-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

/// gateway-load with only the scenarios named.
fn small_load_suite(keep: &[&str]) -> PathBuf {
    let text =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../suites/load/gateway-load.yaml"))
            .unwrap();
    let (head, scenarios) = text.split_once("scenarios:\n").unwrap();
    let mut out = format!("{head}scenarios:\n");
    for block in scenarios.split("\n- name: ").map(|b| b.trim_start_matches("- name: ")) {
        if keep.iter().any(|k| block.starts_with(&format!("{k}\n"))) {
            out.push_str(&format!("- name: {}\n", block.trim_end()));
        }
    }
    let path = tmp("load.yaml");
    std::fs::write(&path, out).unwrap();
    path
}

const BROWSER_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--hide-scrollbars",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--no-first-run",
];

fn chromium() -> PathBuf {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|b| {
            std::env::var_os("PATH").and_then(|p| std::env::split_paths(&p).map(|d| d.join(b)).find(|f| f.is_file()))
        })
        .expect("headless Chromium is needed to check report.html: apt-get install chromium (ci/test.sh does)")
}

/// The DOM after load, and every URL the page itself asked the network for (the browser's own
/// background traffic has no page as its isolation key and is left out).
fn load_page(page: &Path) -> (String, Vec<String>) {
    let netlog = page.with_extension("netlog.json");
    let o = Command::new(chromium())
        .args(BROWSER_FLAGS)
        .arg(format!("--log-net-log={}", netlog.display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&o.stdout).into_owned();
    let log: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&netlog).unwrap()).unwrap();
    let mut fetched: Vec<String> = log["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e["params"]["network_isolation_key"]
                .as_str()
                .is_some_and(|k| k.starts_with("file://"))
        })
        .filter_map(|e| e["params"]["url"].as_str().map(String::from))
        .filter(|u| !u.starts_with("file://"))
        .collect();
    fetched.dedup();
    (dom, fetched)
}

/// The inner text of every `<figure class="chart KIND" …>…</figure>`.
fn figures<'d>(dom: &'d str, kind: &str) -> Vec<&'d str> {
    dom.split(&format!("<figure class=\"chart {kind}\""))
        .skip(1)
        .map(|f| f.split("</figure>").next().unwrap())
        .collect()
}

#[test]
fn the_network_check_sees_a_page_that_fetches() {
    // The detector below must be able to fail: a page with a remote image is caught.
    let page = tmp("leak.html");
    std::fs::write(
        &page,
        "<html><body><img src=\"http://127.0.0.1:9/x.png\"></body></html>",
    )
    .unwrap();
    let (_, fetched) = load_page(&page);
    assert_eq!(fetched, ["http://127.0.0.1:9/x.png"]);
}

#[test]
fn a_small_run_writes_every_report_and_the_page_reads_in_a_browser() {
    let out = tmp("out");
    let load = small_load_suite(&["h1-1000rps", "tcp-echo-1000rps"]);
    let o = Command::new(env!("CARGO_BIN_EXE_meshbench"))
        .args([
            "run",
            "--quick",
            "--target",
            "reference",
            "--suite",
            "tcp-routing",
            "--load",
        ])
        .arg(&load)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let t = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(
        t.contains("suite tcp-routing against reference: 3 passed, 0 failed"),
        "{t}"
    );

    let report: meshbench_report::RunReport =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let names: Vec<&str> = report.targets.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["reference", "direct"]);
    assert_eq!(report.load.len(), 4, "2 scenarios x (meshgate, direct)");
    for r in &report.load {
        let who = format!("{} on {:?}", r.scenario, r.target);
        assert!(
            r.requests > 500 && r.errors == 0,
            "{who}: {} requests, {} errors",
            r.requests,
            r.errors
        );
        assert_eq!(r.asked_rps, Some(1000.0), "{who}");
        let through_gateway = r.target.as_deref() == Some("reference");
        assert_eq!(r.gateway.is_some(), through_gateway, "{who}");
        if let Some(g) = r.gateway {
            assert!(g.cpu_s > 0.0 && g.peak_rss_bytes > 1 << 20, "{who}: {g:?}");
        }
        let hlog = out.join(format!("hlog/{}.{}.hlog", r.target.as_deref().unwrap(), r.scenario));
        assert!(hlog.is_file(), "{}", hlog.display());
    }
    assert!(std::fs::read_to_string(out.join("junit.xml"))
        .unwrap()
        .contains("tcp-routing"));

    let page = out.join("report.html");
    let (dom, fetched) = load_page(&page);
    assert!(fetched.is_empty(), "report.html fetched {fetched:?}");
    let curves = figures(&dom, "percentiles");
    assert_eq!(curves.len(), 2, "one percentile chart per scenario");
    for f in curves.iter().chain(&figures(&dom, "rate")).chain(&figures(&dom, "p99")) {
        assert!(f.starts_with(" data-series=\"2\""), "{}", &f[..80.min(f.len())]);
        assert_eq!(f.matches("class=\"series\"").count(), 2, "meshgate and the baseline");
        assert!(f.contains(">reference</li>") && f.contains(">direct</li>"));
    }
    assert_eq!(
        dom.matches("<tr class=\"case\">").count(),
        3,
        "the matrix: one row per case"
    );
    assert!(dom.contains("tcp-routing/weighted-80-20"));
    assert!(dom.contains("<th>added p99</th>"));
    // A screenshot, for people who want to look (and proof the page renders).
    let png = out.join("report.png");
    let shot = Command::new(chromium())
        .args(BROWSER_FLAGS)
        .args(["--window-size=1280,2400", &format!("--screenshot={}", png.display())])
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    assert!(shot.status.success(), "{}", String::from_utf8_lossy(&shot.stderr));
    assert!(std::fs::metadata(&png).unwrap().len() > 20_000);
    // The saved report renders again.
    let again = tmp("again.html");
    let o = Command::new(env!("CARGO_BIN_EXE_meshbench"))
        .args(["report"])
        .arg(out.join("report.json"))
        .arg("--html")
        .arg(&again)
        .output()
        .unwrap();
    assert!(o.status.success());
    assert_eq!(
        std::fs::read_to_string(&again).unwrap(),
        std::fs::read_to_string(&page).unwrap()
    );
}
