//! L4: TCP proxying for TCP servers, TLS-terminated TCP, TLS passthrough by SNI and
//! AUTO_PASSTHROUGH: a weighted cluster, an endpoint by the cluster's load balancer, connect and
//! idle timeouts, `maxConnections`, half-close passed on, and an access log line per session.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use mesh_model::plan::L4Route;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::compile::Compiled;
use crate::context::Downstream;
use crate::errors::Failure;
use crate::state::State;

/// `outbound_.<port>_.<subset>_.<host>` -> `outbound|<port>|<subset>|<host>`.
pub fn auto_passthrough_cluster(sni: &str) -> Option<String> {
    let parts: Vec<&str> = sni.splitn(4, "_.").collect();
    match parts.as_slice() {
        ["outbound", port, subset, host] if port.parse::<u32>().is_ok() && !host.is_empty() => {
            Some(format!("outbound|{port}|{subset}|{host}"))
        }
        _ => None,
    }
}

/// Proxies a session along `route` (None: no route, the connection is closed).
pub async fn proxy<IO>(io: IO, route: Option<&L4Route>, compiled: &Arc<Compiled>, state: &State, down: &Downstream)
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let cluster = route.and_then(|r| pick_weighted(&r.clusters));
    match (route, cluster) {
        (None, _) => {
            state.telemetry.tcp_opened("");
            log(state, down, SystemTime::now(), Instant::now(), "NR", "", "", (0, 0));
        }
        (Some(_), cluster) => proxy_to_cluster(io, cluster, compiled, state, down).await,
    }
}

/// A cluster of a weighted list, by weight.
pub fn pick_weighted(clusters: &[mesh_model::plan::WeightedCluster]) -> Option<&str> {
    let total: u64 = clusters.iter().map(|c| u64::from(c.weight)).sum();
    let mut r = fastrand::u64(0..total.max(1));
    for c in clusters {
        if r < u64::from(c.weight) || total == 0 {
            return Some(&c.cluster);
        }
        r -= u64::from(c.weight);
    }
    clusters.first().map(|c| c.cluster.as_str())
}

/// Proxies a session to `cluster` (None: closed, NC).
pub async fn proxy_to_cluster<IO>(
    io: IO,
    cluster: Option<&str>,
    compiled: &Arc<Compiled>,
    state: &State,
    down: &Downstream,
) where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let (started_at, start) = (SystemTime::now(), Instant::now());
    let name = cluster.unwrap_or("");
    state.telemetry.tcp_opened(name);
    let Some(c) = cluster.and_then(|n| compiled.clusters.get(n)) else {
        log(
            state,
            down,
            started_at,
            start,
            Failure::NoCluster.flag(),
            name,
            "",
            (0, 0),
        );
        return;
    };
    let Ok(_admission) = c.breakers.admit_now() else {
        log(
            state,
            down,
            started_at,
            start,
            Failure::Overflow.flag(),
            name,
            "",
            (0, 0),
        );
        return;
    };
    let Some(i) = crate::balance::pick(c, None, &[]) else {
        log(
            state,
            down,
            started_at,
            start,
            Failure::NoHealthyUpstream.flag(),
            name,
            "",
            (0, 0),
        );
        return;
    };
    let original = down
        .original_dst
        .clone()
        .or_else(|| down.sni.clone())
        .unwrap_or_default();
    let endpoint = c.address(i, &original);
    let timeout = c.cluster.policy.connect_timeout.as_std();
    let to = crate::upstream::Dial::new(endpoint.clone(), timeout, &c.resolver);
    let idle = idle_timeout(&c.cluster);
    let report = |ok: bool| {
        if let Some(o) = &c.outlier {
            let f = Failure::ConnectFailure("connection failure".into());
            o.report(i, ok.then_some(200), (!ok).then_some(&f));
        }
    };
    let (bytes, timed_out) = match &c.origination {
        Err(_) => {
            log(state, down, started_at, start, "UF", name, &endpoint, (0, 0));
            return;
        }
        Ok(Some(o)) => match crate::origination::connect(o, &to, &c.cluster.service).await {
            Ok(tls) => {
                report(true);
                let _open = c.connections.opened();
                pump(io, tls, idle).await
            }
            Err(_) => {
                report(false);
                log(state, down, started_at, start, "UF", name, &endpoint, (0, 0));
                return;
            }
        },
        Ok(None) => match to.connect().await {
            Ok(upstream) => {
                report(true);
                let _open = c.connections.opened();
                pump(io, upstream, idle).await
            }
            _ => {
                report(false);
                log(state, down, started_at, start, "UF", name, &endpoint, (0, 0));
                return;
            }
        },
    };
    log(
        state,
        down,
        started_at,
        start,
        if timed_out { "SI" } else { "-" },
        name,
        &endpoint,
        bytes,
    );
}

/// A session outside the registry under ALLOW_ANY (Envoy's PassthroughCluster): to the address
/// the client was going to, within the mesh's connect timeout, for as long as both sides talk.
pub async fn passthrough<IO>(io: IO, address: &str, compiled: &Compiled, state: &State, down: &Downstream)
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let (started_at, start) = (SystemTime::now(), Instant::now());
    let name = crate::sidecar::PASSTHROUGH;
    state.telemetry.tcp_opened(name);
    let timeout = compiled.plan.mesh.connect_timeout.as_std();
    match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
        Ok(Ok(upstream)) => {
            let _ = upstream.set_nodelay(true);
            let (bytes, _) = pump(io, upstream, None).await;
            log(state, down, started_at, start, "-", name, address, bytes);
        }
        _ => log(state, down, started_at, start, "UF", name, address, (0, 0)),
    }
}

/// A session outside the registry under REGISTRY_ONLY (Envoy's BlackHoleCluster): closed, no
/// connection upstream, logged.
pub fn blackhole(state: &State, down: &Downstream) {
    let name = crate::sidecar::BLACKHOLE;
    state.telemetry.tcp_opened(name);
    log(state, down, SystemTime::now(), Instant::now(), "-", name, "", (0, 0));
}

/// connectionPool tcp.idleTimeout: default 1h; `0s` disables it.
fn idle_timeout(c: &mesh_model::plan::Cluster) -> Option<Duration> {
    let t = c
        .policy
        .connection_pool
        .as_ref()
        .and_then(|p| p.tcp.as_ref())
        .and_then(|t| t.idle_timeout);
    let t = t.map_or(Duration::from_secs(3600), |d| d.as_std());
    (!t.is_zero()).then_some(t)
}

/// Copies both ways until both sides have closed; a side's EOF is passed on as a half-close.
/// Returns (bytes from downstream, bytes from upstream) and whether the idle timeout ended it.
pub async fn pump<A, B>(a: A, b: B, idle: Option<Duration>) -> ((u64, u64), bool)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (mut ar, mut aw) = tokio::io::split(a);
    let (mut br, mut bw) = tokio::io::split(b);
    let (mut buf_a, mut buf_b) = (vec![0u8; 16 * 1024], vec![0u8; 16 * 1024]);
    let (mut a_open, mut b_open) = (true, true);
    let (mut up, mut back) = (0u64, 0u64);
    let far = Duration::from_secs(86_400 * 365);
    let mut deadline = tokio::time::Instant::now() + idle.unwrap_or(far);
    while a_open || b_open {
        tokio::select! {
            r = ar.read(&mut buf_a), if a_open => match r {
                Ok(0) | Err(_) => {
                    a_open = false;
                    let _ = bw.shutdown().await;
                }
                Ok(n) => {
                    if bw.write_all(&buf_a[..n]).await.is_err() {
                        break;
                    }
                    up += n as u64;
                    deadline = tokio::time::Instant::now() + idle.unwrap_or(far);
                }
            },
            r = br.read(&mut buf_b), if b_open => match r {
                Ok(0) | Err(_) => {
                    b_open = false;
                    let _ = aw.shutdown().await;
                }
                Ok(n) => {
                    if aw.write_all(&buf_b[..n]).await.is_err() {
                        break;
                    }
                    back += n as u64;
                    deadline = tokio::time::Instant::now() + idle.unwrap_or(far);
                }
            },
            _ = tokio::time::sleep_until(deadline) => return ((up, back), true),
        }
    }
    ((up, back), false)
}

/// The end of a TCP session: Istio's TCP metrics and access log line. `bytes`: from the
/// client, to the client.
#[allow(clippy::too_many_arguments)]
fn log(
    state: &State,
    down: &Downstream,
    started_at: SystemTime,
    start: Instant,
    flags: &str,
    cluster: &str,
    upstream: &str,
    bytes: (u64, u64),
) {
    state.telemetry.tcp_closed(cluster, flags, bytes.1, bytes.0);
    if !state.access_log.enabled() {
        return;
    }
    let dash = |s: &str| if s.is_empty() { "-".to_string() } else { s.to_string() };
    state.access_log.write(&format!(
        "[{}] \"- - -\" 0 {} - - \"-\" {} {} {} - \"-\" \"-\" \"-\" \"-\" \"{}\" {} - {} {} {} -",
        mesh_model::time::rfc3339(started_at, true),
        dash(flags),
        bytes.0,
        bytes.1,
        start.elapsed().as_millis(),
        dash(upstream),
        dash(cluster),
        down.local,
        down.peer,
        down.sni.as_deref().unwrap_or("-"),
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_passthrough_sni_names_the_cluster() {
        assert_eq!(
            auto_passthrough_cluster("outbound_.9080_.v1_.reviews.default.svc.cluster.local").as_deref(),
            Some("outbound|9080|v1|reviews.default.svc.cluster.local")
        );
        assert_eq!(
            auto_passthrough_cluster("outbound_.80_._.a.example.com").as_deref(),
            Some("outbound|80||a.example.com")
        );
        assert_eq!(auto_passthrough_cluster("a.example.com"), None);
        assert_eq!(auto_passthrough_cluster("outbound_.x_._.a"), None);
    }
}
