//! Runs a suite against a target: starts the echo workloads, registers them (ServiceEntry +
//! WorkloadEntries), brings the target up, sends each case's requests and checks what came back.
//! Every failure says what was expected, what was observed, and the request that showed it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use meshbench_report::{CaseOutcome, CaseResult, SuiteResult};

use super::check::{check, check_distribution};
use super::client::send;
use super::suite::{Case, Role, Suite};
use super::workloads::Launch;
pub use super::workloads::{start_workloads, Placement, Workloads};
use crate::targets::network::SuiteNetwork;
use crate::targets::{StartSpec, Target, TargetError};

/// Runs one case: one request, or `count` for a distribution.
pub async fn run_case(
    case: &Case,
    ports: &BTreeMap<u32, SocketAddr>,
    certs: &std::path::Path,
    workloads: &Workloads,
) -> (CaseOutcome, Option<String>, Duration) {
    let start = Instant::now();
    let mut before: BTreeMap<&String, u64> = BTreeMap::new();
    for s in case.expect.workload_requests.keys() {
        before.insert(s, workloads.requests(s).await);
    }
    let Some(addr) = ports.get(&case.request.port).copied() else {
        return (
            CaseOutcome::Fail,
            Some(format!("the target has no port {}", case.request.port)),
            start.elapsed(),
        );
    };
    let count = case.request.count.unwrap_or(1).max(1);
    let concurrency = case.request.concurrency.unwrap_or(1).clamp(1, count);
    // `concurrency` senders take requests from one counter until `count` are sent.
    let next = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let mut senders = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (request, certs, next) = (case.request.clone(), certs.to_path_buf(), next.clone());
        senders.spawn(async move {
            let mut seen = Vec::new();
            while next.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < count {
                seen.push(send(addr, &request, &certs).await);
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
    if failures.is_empty() {
        (CaseOutcome::Pass, None, start.elapsed())
    } else {
        let r = &case.request;
        let req = format!(
            "request: {} {} {} port {} authority {:?} headers {:?}",
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
    let network = match target.wants_network() {
        true => Some(SuiteNetwork::create(&suite.name, &name)?),
        false => None,
    };
    let network = network.as_ref().map(|n| n.name.as_str());
    let workloads = match network {
        Some(n) => {
            let launch = Launch::Containers {
                network: n.into(),
                target: name.clone(),
            };
            super::workloads::start(suite, &certs, cx.placement, &launch).await?
        }
        None => start_workloads(suite, &certs, cx.placement).await?,
    };
    let started = start_gateways(suite, target, &workloads, &certs, network, cx).await;
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
        let (outcome, message, took) = run_case(&case, &ports, &certs, &workloads).await;
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
    })
}

type Extra = Vec<(String, Box<dyn Target>)>;

/// Brings up the suite's extra gateways (registered under their hosts), then the target itself:
/// every port's address, and the extra gateways to stop afterwards.
async fn start_gateways(
    suite: &Suite,
    target: &mut dyn Target,
    workloads: &Workloads,
    certs: &std::path::Path,
    network: Option<&str>,
    cx: RunContext<'_>,
) -> Result<(BTreeMap<u32, SocketAddr>, Extra), TargetError> {
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

/// A MESH_INTERNAL ServiceEntry for an extra gateway: `host` on its ports (HTTP).
fn gateway_registry(name: &str, host: &str, ports: &BTreeMap<u32, SocketAddr>) -> String {
    let declared: Vec<String> = ports
        .keys()
        .map(|p| format!("{{number: {p}, name: http-{p}, protocol: HTTP}}"))
        .collect();
    let mapped: Vec<String> = ports.iter().map(|(p, a)| format!("http-{p}: {}", a.port())).collect();
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
