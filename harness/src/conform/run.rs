//! Runs a suite against a target: starts the echo workloads, registers them (ServiceEntry +
//! WorkloadEntries), brings the target up, sends each case's requests and checks what came back.
//! Every failure says what was expected, what was observed, and the request that showed it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use meshbench_report::{CaseOutcome, CaseResult, SuiteResult};

use super::capture::{Hosts, OUTBOUND_PORT};
use super::check::{check, check_distribution};
use super::client::send;
use super::suite::{Case, Role, Suite};
use super::workloads::Launch;
pub use super::workloads::{start_workloads, Placement, Workloads};
use crate::targets::network::SuiteNetwork;
use crate::targets::{StartSpec, Target, TargetError};
use mesh_netns::Host;

/// Where a suite's cases are sent.
#[derive(Debug, Clone, Copy)]
pub struct Wire<'a> {
    /// Each gateway port's address.
    pub ports: &'a BTreeMap<u32, SocketAddr>,
    /// A captured run's hosts: cases go from them, as `aim` says.
    pub hosts: Option<&'a Hosts>,
}

/// The case as `wire` sends it: the request and expectation (a captured run's), the host it is
/// sent from and where to.
fn aim<'a>(case: &Case, wire: Wire<'a>) -> Result<(Case, Option<&'a Host>, SocketAddr), String> {
    let port = || {
        wire.ports
            .get(&case.request.port)
            .copied()
            .ok_or_else(|| format!("the target has no port {}", case.request.port))
    };
    let Some(hosts) = wire.hosts else {
        return Ok((case.clone(), None, port()?));
    };
    let mut aimed = case.clone();
    aimed.expect = hosts.directory.expectation(&case.expect, case.captured.as_ref())?;
    if case.request.port == OUTBOUND_PORT {
        let (to, request) = hosts.directory.captured(&case.request)?;
        aimed.request = request;
        return Ok((aimed, Some(&hosts.app), to));
    }
    Ok((aimed, Some(&hosts.client), port()?))
}

/// SYNs counted at a captured run's workloads' host, when the case expects a count.
fn syns(case: &Case, wire: Wire<'_>) -> Result<Option<u64>, String> {
    match (wire.hosts, case.expect.syns) {
        (Some(h), Some(_)) => h.workloads.syns().map(Some),
        _ => Ok(None),
    }
}

/// Runs one case: one request, or `count` for a distribution.
pub async fn run_case(
    case: &Case,
    wire: Wire<'_>,
    certs: &std::path::Path,
    workloads: &Workloads,
) -> (CaseOutcome, Option<String>, Duration) {
    let start = Instant::now();
    let aimed = aim(case, wire).and_then(|(case, from, to)| Ok((syns(&case, wire)?, case, from, to)));
    let (syns_before, case, from, addr) = match aimed {
        Ok(a) => a,
        Err(e) => return (CaseOutcome::Fail, Some(e), start.elapsed()),
    };
    let case = &case;
    let mut before: BTreeMap<&String, u64> = BTreeMap::new();
    for s in case.expect.workload_requests.keys() {
        before.insert(s, workloads.requests(s).await);
    }
    let count = case.request.count.unwrap_or(1).max(1);
    let concurrency = case.request.concurrency.unwrap_or(1).clamp(1, count);
    // `concurrency` senders take requests from one counter until `count` are sent.
    let next = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let mut senders = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (request, certs, next) = (case.request.clone(), certs.to_path_buf(), next.clone());
        let from = from.cloned();
        senders.spawn(async move {
            let mut seen = Vec::new();
            while next.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < count {
                seen.push(send(from.as_ref(), addr, &request, &certs).await);
            }
            seen
        });
    }
    let mut observations = Vec::new();
    while let Some(done) = senders.join_next().await {
        observations.extend(done.unwrap_or_default());
    }
    let mut failures = Vec::new();
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    let mut statuses: BTreeMap<u16, u32> = BTreeMap::new();
    for o in observations {
        *statuses.entry(o.status).or_insert(0) += 1;
        let f = check(case, &o);
        if let Some(v) = o.field("ServiceVersion") {
            // Counted per version and per service and version (`reviews/v1`).
            if let Some(s) = o.field("Service") {
                *seen.entry(format!("{s}/{v}")).or_insert(0) += 1;
            }
            *seen.entry(v).or_insert(0) += 1;
        }
        if !f.is_empty() && failures.is_empty() {
            failures.extend(f);
        }
    }
    if !case.expect.distribution.is_empty() {
        failures.extend(check_distribution(&case.expect.distribution, &seen, count));
    }
    if !case.expect.workload_requests.is_empty() {
        // Copies (mirrors) may land after the response: wait up to 2 s for the counts.
        let deadline = Instant::now() + Duration::from_secs(2);
        let received = loop {
            let mut now: BTreeMap<String, u64> = BTreeMap::new();
            for (s, b) in &before {
                now.insert((*s).clone(), workloads.requests(s).await.saturating_sub(*b));
            }
            if now == case.expect.workload_requests || Instant::now() > deadline {
                break now;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        if received != case.expect.workload_requests {
            failures.push(format!(
                "requests received by workloads: expected {:?}, observed {received:?}",
                case.expect.workload_requests
            ));
        }
    }
    if let Some(f) = super::check::check_status_counts(&case.expect.status_counts, &statuses) {
        failures.push(f);
    }
    if let (Some(before), Some(want)) = (syns_before, case.expect.syns) {
        match syns(case, wire) {
            Ok(Some(now)) if now.saturating_sub(before) == want => {}
            Ok(now) => failures.push(format!(
                "SYNs that reached the workloads' host: expected {want}, observed {}",
                now.unwrap_or(before).saturating_sub(before)
            )),
            Err(e) => failures.push(e),
        }
    }
    if failures.is_empty() {
        (CaseOutcome::Pass, None, start.elapsed())
    } else {
        let r = &case.request;
        let sent = match from {
            Some(h) => format!(" sent from {} to {addr}", h.ip),
            None => String::new(),
        };
        let req = format!(
            "request: {} {} {} port {} authority {:?} headers {:?}{sent}",
            r.protocol.as_str(),
            r.method.as_deref().unwrap_or("GET"),
            r.path.as_deref().unwrap_or("/"),
            r.port,
            r.authority,
            r.headers
        );
        (
            CaseOutcome::Fail,
            Some(format!("{}; {req}", failures.join("; "))),
            start.elapsed(),
        )
    }
}

/// Known differences of a target: `suite/case` -> reason.
pub type Known = BTreeMap<String, String>;

/// Where a suite runs and what it keeps.
#[derive(Debug, Clone, Copy)]
pub struct RunContext<'a> {
    pub work_dir: &'a std::path::Path,
    pub known: &'a Known,
    pub filter: Option<&'a str>,
    /// Keep every gateway's logs here.
    pub logs: Option<&'a std::path::Path>,
    pub placement: &'a Placement,
    /// Sidecar suites with `capture: true` run captured where they can (`--no-capture`: never).
    pub capture: bool,
}

/// Every case of the suite (that the filter selects) as skipped, with the reason.
pub fn skipped(suite: &Suite, target: &str, filter: Option<&str>, reason: &str) -> SuiteResult {
    let cases = suite
        .cases
        .iter()
        .filter(|c| filter.is_none_or(|f| glob(f, &format!("{}/{}", suite.name, c.id))))
        .map(|c| CaseResult {
            id: c.id.clone(),
            outcome: CaseOutcome::Skip,
            message: Some(format!("skipped on {target}: {reason}")),
            duration_ms: 0.0,
        })
        .collect();
    SuiteResult {
        suite: suite.name.clone(),
        target: target.to_string(),
        cases,
        mode: None,
    }
}

/// A sidecar suite with `capture: true`: its hosts when it runs captured on `target`, and the
/// mode the result records (`captured`, or `explicit proxy: <why not>`).
fn capture_hosts(suite: &Suite, target: &dyn Target, cx: RunContext<'_>) -> (Option<Hosts>, Option<String>) {
    if !suite.capture {
        return (None, None);
    }
    let made = match super::capture::refused(cx.capture, target) {
        Some(why) => Err(why),
        None => Hosts::make(suite).map_err(|e| format!("cannot make the run's hosts: {e}")),
    };
    match made {
        Ok(hosts) => (Some(hosts), Some("captured".into())),
        Err(why) => {
            eprintln!(
                "suite {}: the sidecar runs as an explicit proxy, not captured: {why}",
                suite.name
            );
            (None, Some(format!("explicit proxy: {why}")))
        }
    }
}

/// Runs a whole suite against `target`. A target that lacks one of the suite's features, or
/// cannot run here, reports every case as skipped with the reason.
pub async fn run_suite(suite: &Suite, target: &mut dyn Target, cx: RunContext<'_>) -> Result<SuiteResult, String> {
    let name = target.info().name;
    if let Some(reason) = suite.features.iter().find_map(|f| target.lacks(f)) {
        return Ok(skipped(suite, &name, cx.filter, &reason));
    }
    let certs = cx.placement.certs_dir(cx.work_dir, &suite.name);
    super::tls::make_certificates(&suite.certificates, &certs)?;
    // Declared before the workloads and gateways, so dropped after them (with whatever is left on it).
    let (hosts, mode) = capture_hosts(suite, target, cx);
    let network = match target.wants_network() {
        true => Some(SuiteNetwork::create(&suite.name, &name)?),
        false => None,
    };
    let network = network.as_ref().map(|n| n.name.as_str());
    let workloads = match (network, &hosts) {
        (_, Some(h)) => {
            let launch = Launch::Host(h.workloads.clone());
            super::workloads::start(suite, &certs, cx.placement, &launch).await?
        }
        (Some(n), None) => {
            let launch = Launch::Containers {
                network: n.into(),
                target: name.clone(),
            };
            super::workloads::start(suite, &certs, cx.placement, &launch).await?
        }
        (None, None) => start_workloads(suite, &certs, cx.placement).await?,
    };
    let on = On {
        network,
        hosts: hosts.as_ref(),
    };
    let started = start_gateways(suite, target, &workloads, &certs, on, cx).await;
    let (ports, mut extra) = match started {
        Ok(x) => x,
        Err(TargetError::Unavailable(reason)) => return Ok(skipped(suite, &name, cx.filter, &reason)),
        Err(TargetError::Failed(e)) => {
            target.stop().await;
            keep_logs(suite, target, &[], cx.logs);
            return Err(e);
        }
    };
    let mut cases = Vec::new();
    for case in &suite.cases {
        let id = format!("{}/{}", suite.name, case.id);
        if cx.filter.is_some_and(|f| !glob(f, &id)) {
            continue;
        }
        let case = with_addresses(case, &workloads.addresses);
        let wire = Wire {
            ports: &ports,
            hosts: hosts.as_ref(),
        };
        let (outcome, message, took) = run_case(&case, wire, &certs, &workloads).await;
        let (outcome, message) = match (outcome, cx.known.get(&id)) {
            (CaseOutcome::Fail, Some(reason)) => (
                CaseOutcome::ExpectedFailure,
                Some(format!("known difference: {reason}; {}", message.unwrap_or_default())),
            ),
            (CaseOutcome::Pass, Some(reason)) => (
                CaseOutcome::UnexpectedPass,
                Some(format!("listed as a known difference ({reason}) but passed")),
            ),
            (outcome, _) => (outcome, message),
        };
        cases.push(CaseResult {
            id: case.id.clone(),
            outcome,
            message,
            duration_ms: took.as_secs_f64() * 1000.0,
        });
    }
    // Stopped first: a process flushes its access log as it exits.
    for (_, t) in &mut extra {
        t.stop().await;
    }
    target.stop().await;
    keep_logs(suite, target, &extra, cx.logs);
    Ok(SuiteResult {
        suite: suite.name.clone(),
        target: name,
        cases,
        mode,
    })
}

type Extra = Vec<(String, Box<dyn Target>)>;

/// Where a suite's gateways run: on its Docker network, in its hosts, or here.
#[derive(Debug, Clone, Copy)]
struct On<'a> {
    network: Option<&'a str>,
    hosts: Option<&'a Hosts>,
}

/// Brings up the suite's extra gateways (registered under their hosts), then the target itself:
/// every port's address, and the extra gateways to stop afterwards.
async fn start_gateways(
    suite: &Suite,
    target: &mut dyn Target,
    workloads: &Workloads,
    certs: &std::path::Path,
    on: On<'_>,
    cx: RunContext<'_>,
) -> Result<(BTreeMap<u32, SocketAddr>, Extra), TargetError> {
    let network = on.network;
    let config = suite.config.replace("${certs}", &certs.display().to_string());
    let write_config = |name: &str, registry: &str| -> Result<std::path::PathBuf, String> {
        let dir = cx.work_dir.join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        std::fs::write(dir.join("config.yaml"), &config).map_err(|e| e.to_string())?;
        std::fs::write(dir.join("registry.yaml"), registry).map_err(|e| e.to_string())?;
        Ok(dir)
    };
    let mesh = match &suite.mesh {
        Some(m) => {
            let p = cx.work_dir.join(format!("{}.mesh.yaml", suite.name));
            std::fs::write(&p, m).map_err(|e| e.to_string())?;
            Some(p)
        }
        None => None,
    };
    let mut labels = suite.labels.clone();
    if labels.is_empty() {
        labels.insert("istio".into(), "ingressgateway".into());
    }
    // Extra gateways first: the main one's registry names them.
    let mut registry = workloads.registry.clone();
    let mut ports = BTreeMap::new();
    let mut extra: Extra = Vec::new();
    for g in &suite.gateways {
        let mut t = target.another()?;
        let dir = write_config(&format!("{}-{}", suite.name, g.name), &workloads.registry)?;
        let spec = StartSpec {
            config_dir: &dir,
            mesh: mesh.as_deref(),
            labels: &g.labels,
            ports: &g.ports,
            role: Role::Gateway,
            network,
            host: on.hosts.and_then(|h| h.gateways.get(&g.name)),
            capture: false,
        };
        let got = match t.start(&spec).await {
            Ok(got) => got,
            Err(e) => {
                keep_logs(suite, &*t, &extra, cx.logs);
                return Err(match e {
                    TargetError::Failed(m) => TargetError::Failed(format!("gateway {}: {m}", g.name)),
                    unavailable => unavailable,
                });
            }
        };
        if let Some(host) = &g.service {
            let reached_at = t.network_addresses().unwrap_or_else(|| got.clone());
            registry.push_str(&gateway_registry(&g.name, host, &reached_at));
        }
        ports.extend(got);
        extra.push((g.name.clone(), t));
    }
    let dir = write_config(&suite.name, &registry)?;
    let spec = StartSpec {
        config_dir: &dir,
        mesh: mesh.as_deref(),
        labels: &labels,
        ports: &suite.ports,
        role: suite.role,
        network,
        host: on.hosts.map(|h| &h.app),
        capture: on.hosts.is_some(),
    };
    match target.start(&spec).await {
        Ok(got) => ports.extend(got),
        Err(e) => {
            for (_, t) in &mut extra {
                t.stop().await;
            }
            return Err(e);
        }
    }
    Ok((ports, extra))
}

/// Every gateway's access log and stderr, kept beside the report as `<suite>.<gateway>.log`.
fn keep_logs(suite: &Suite, target: &dyn Target, extra: &[(String, Box<dyn Target>)], logs: Option<&std::path::Path>) {
    let Some(logs) = logs else { return };
    let target_name = target.info().name;
    let mut all = vec![(target_name.clone(), target.logs())];
    all.extend(extra.iter().map(|(n, t)| (format!("{target_name}-{n}"), t.logs())));
    let kept = std::fs::create_dir_all(logs).and_then(|()| {
        all.iter()
            .try_for_each(|(n, text)| std::fs::write(logs.join(format!("{}.{n}.log", suite.name)), text))
    });
    if let Err(e) = kept {
        eprintln!("warning: cannot keep logs in {}: {e}", logs.display());
    }
}

/// The name and protocol an extra gateway's Service gives its port: 443 is HTTPS (TLS to the
/// sidecars that send to it), as on Istio's `istio-egressgateway` Service; the rest HTTP.
fn gateway_port(port: u32) -> (String, &'static str) {
    match port {
        443 => (format!("https-{port}"), "HTTPS"),
        _ => (format!("http-{port}"), "HTTP"),
    }
}

/// A MESH_INTERNAL ServiceEntry for an extra gateway: `host` on its ports (`gateway_port`).
fn gateway_registry(name: &str, host: &str, ports: &BTreeMap<u32, SocketAddr>) -> String {
    let declared: Vec<String> = ports
        .keys()
        .map(|p| {
            let (name, protocol) = gateway_port(*p);
            format!("{{number: {p}, name: {name}, protocol: {protocol}}}")
        })
        .collect();
    let mapped: Vec<String> = ports
        .iter()
        .map(|(p, a)| format!("{}: {}", gateway_port(*p).0, a.port()))
        .collect();
    let ip = ports
        .values()
        .next()
        .map_or("127.0.0.1".to_string(), |a| a.ip().to_string());
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: gateway-{name}, namespace: istio-system}}\nspec:\n  \
         hosts: [{host}]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{}]\n  \
         endpoints: [{{address: {ip}, ports: {{{}}}}}]\n---\n",
        declared.join(", "),
        mapped.join(", ")
    )
}

/// The case with `${addr:<service>}` in its authority and headers replaced by that service's echo
/// address (for workloads outside the registry).
fn with_addresses(case: &Case, addresses: &BTreeMap<String, SocketAddr>) -> Case {
    let fill = |s: &str| {
        addresses.iter().fold(s.to_string(), |s, (svc, a)| {
            s.replace(&format!("${{addr:{svc}}}"), &a.to_string())
        })
    };
    let mut case = case.clone();
    case.request.authority = case.request.authority.as_deref().map(fill);
    for v in case.request.headers.values_mut() {
        *v = fill(v);
    }
    case
}

/// `*` matches any run of characters.
pub fn glob(pattern: &str, s: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == s,
        Some((head, tail)) => {
            s.starts_with(head)
                && (0..=s.len() - head.len()).any(|i| s.get(head.len() + i..).is_some_and(|rest| glob(tail, rest)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("http-routing/*", "http-routing/redirect"));
        assert!(glob("*redirect*", "http-routing/redirect-port"));
        assert!(!glob("tcp-*", "http-routing/x"));
    }
}
