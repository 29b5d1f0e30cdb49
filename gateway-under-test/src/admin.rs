//! The admin API: `/ready`, `/config_dump` (the config in force in Envoy's admin shape, from
//! mesh-model's Envoy exporter, so tools written for Envoy read it), `/plan` (the Plan, its
//! version and the last reload error), `/stats/prometheus`, `/clusters` (endpoints and active
//! requests), `/listeners`.

use std::convert::Infallible;
use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::conns::Phase;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{prometheus_text, DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::state::State;

pub async fn serve(listener: TcpListener, state: Arc<State>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(&state, &req)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn text(status: StatusCode, body: String, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert("content-type", http::HeaderValue::from_static(content_type));
    r
}

fn route<B>(state: &State, req: &Request<B>) -> Response<Full<Bytes>> {
    match req.uri().path() {
        // Envoy's /ready: LIVE while serving, DRAINING (503) from SIGTERM on.
        "/ready" if state.conns.phase() == Phase::Serving => text(StatusCode::OK, "LIVE\n".into(), "text/plain"),
        "/ready" => text(StatusCode::SERVICE_UNAVAILABLE, "DRAINING\n".into(), "text/plain"),
        "/config_dump" => text(StatusCode::OK, config_dump(state), "application/json"),
        "/plan" => text(StatusCode::OK, plan(state), "application/json"),
        "/stats/prometheus" => text(StatusCode::OK, prometheus(state), prometheus_text::CONTENT_TYPE),
        "/clusters" => text(StatusCode::OK, clusters(state), "text/plain"),
        "/listeners" => {
            let bound = state.bound.lock().map(|b| b.clone()).unwrap_or_default();
            let map: serde_json::Map<String, serde_json::Value> = bound
                .iter()
                .map(|(p, a)| (p.to_string(), serde_json::Value::String(a.to_string())))
                .collect();
            text(
                StatusCode::OK,
                serde_json::Value::Object(map).to_string(),
                "application/json",
            )
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "admin paths: /ready /config_dump /plan /stats/prometheus /clusters /listeners\n".into(),
            "text/plain",
        ),
    }
}

/// The config in force as Envoy's `/config_dump` shows it: listeners at the addresses they are
/// bound to.
fn config_dump(state: &State) -> String {
    let c = state.current.load();
    let bound = state.bound.lock().map(|b| b.clone()).unwrap_or_default();
    let opts = mesh_model::envoy::EnvoyOptions {
        bind: bound
            .iter()
            .map(|(p, a)| (*p, (a.ip().to_string(), a.port())))
            .collect(),
        credentials: c.credentials.as_ref().map(|p| p.display().to_string()),
        ..Default::default()
    };
    let at = mesh_model::time::rfc3339(c.loaded_at, true);
    let v = mesh_model::envoy::config_dump(&c.plan, &opts, &c.version.to_string(), &at);
    serde_json::to_string_pretty(&v).unwrap_or_default()
}

fn plan(state: &State) -> String {
    let c = state.current.load();
    let last_error = state.last_error.lock().ok().and_then(|e| e.clone());
    let v = serde_json::json!({
        "version": c.version,
        "last_error": last_error.map(|(at, msg)| serde_json::json!({
            "at": mesh_model::time::rfc3339(at, true),
            "diagnostics": msg,
        })),
        "plan": &*c.plan,
    });
    serde_json::to_string_pretty(&v).unwrap_or_default()
}

/// `/stats/prometheus`: Istio's and Envoy's metrics, then the gateway's own, in the Prometheus
/// text format.
fn prometheus(state: &State) -> String {
    for c in state.current.load().clusters.values() {
        if let Some(o) = &c.outlier {
            o.expire();
        }
    }
    let mut registry = Registry::default();
    registry.register_collector(Box::new(state.telemetry.clone()));
    registry.register_collector(Box::new(GatewayStats::of(state)));
    let mut o = String::new();
    let _ = prometheus_text::encode(&mut o, &registry);
    state.telemetry.envoy_counters(&mut o);
    o
}

/// The gateway's own counters and gauges, read when scraped.
#[derive(Debug)]
struct GatewayStats {
    counters: Vec<(&'static str, &'static str, u64)>,
    gauges: Vec<(&'static str, &'static str, i64)>,
    per_worker: Vec<u64>,
}

impl GatewayStats {
    fn of(state: &State) -> GatewayStats {
        let c = &state.conns;
        let n = |v: &std::sync::atomic::AtomicU64| v.load(Ordering::Relaxed);
        let i = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        GatewayStats {
            counters: vec![
                (
                    "meshgate_downstream_cx_overflow",
                    "Connections closed at once over the limit",
                    n(&c.overflow),
                ),
                (
                    "meshgate_downstream_cx_evicted",
                    "Idle connections closed to make room",
                    n(&c.evicted),
                ),
                (
                    "meshgate_downstream_cx_accept_errors",
                    "accept() failures",
                    n(&c.accept_errors),
                ),
                (
                    "meshgate_downstream_cx_hyper",
                    "Connections served by hyper: h2, and HTTP/1.1 from a request meshgate's own path does not take",
                    n(&c.handed_to_hyper),
                ),
                (
                    "meshgate_config_reloads",
                    "Configs loaded after the first",
                    n(&state.stats.reloads),
                ),
                (
                    "meshgate_config_reload_failures",
                    "Configs rejected",
                    n(&state.stats.reload_failures),
                ),
            ],
            gauges: vec![
                (
                    "meshgate_downstream_cx_active",
                    "Open downstream connections",
                    i(c.len() as u64),
                ),
                (
                    "meshgate_downstream_cx_limit",
                    "The downstream connection limit",
                    i(c.limit() as u64),
                ),
                (
                    "meshgate_request_buffer_bytes",
                    "Request body bytes buffered",
                    i(state.body.budget.used() as u64),
                ),
                (
                    "meshgate_config_version",
                    "The version of the config in force",
                    i(state.version()),
                ),
            ],
            per_worker: c.accepted.iter().map(n).collect(),
        }
    }
}

impl Collector for GatewayStats {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for (name, help, v) in &self.counters {
            let c = ConstCounter::new(*v);
            c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)?;
        }
        for (name, help, v) in &self.gauges {
            let g = ConstGauge::new(*v);
            g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)?;
        }
        let help = "Connections accepted, by worker";
        let mut m = e.encode_descriptor("meshgate_worker_downstream_cx", help, None, MetricType::Counter)?;
        for (i, n) in self.per_worker.iter().enumerate() {
            let worker = [("worker", i.to_string())];
            ConstCounter::new(*n).encode(m.encode_family(&worker)?)?;
        }
        Ok(())
    }
}

/// Envoy's `/clusters` text: `cluster::endpoint::stat::value`.
fn clusters(state: &State) -> String {
    let c = state.current.load();
    let mut names: Vec<&String> = c.clusters.keys().collect();
    names.sort();
    let mut o = String::new();
    for name in names {
        let cl = &c.clusters[name];
        for (i, ep) in cl.endpoints.iter().enumerate() {
            let _ = writeln!(o, "{name}::{ep}::rq_active::{}", cl.active[i].load(Ordering::Relaxed));
            let ejected = cl.outlier.as_ref().is_some_and(|od| od.is_ejected(i));
            let flags = if ejected { "/failed_outlier_check" } else { "healthy" };
            let _ = writeln!(o, "{name}::{ep}::health_flags::{flags}");
            let times = cl.outlier.as_ref().map_or(0, |od| od.times_ejected(i));
            let _ = writeln!(o, "{name}::{ep}::outlier_ejections::{times}");
            let weight = cl.cluster.endpoints.get(i).map_or(1, |e| e.weight);
            let _ = writeln!(o, "{name}::{ep}::weight::{weight}");
        }
    }
    o
}
