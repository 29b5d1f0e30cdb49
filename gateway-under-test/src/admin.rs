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
use crate::state::{State, BUCKETS_MS};

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
        "/stats/prometheus" => text(StatusCode::OK, prometheus(state), "text/plain; version=0.0.4"),
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

fn prometheus(state: &State) -> String {
    let s = &state.stats;
    let mut o = String::new();
    let _ = writeln!(o, "# TYPE meshgate_requests_total counter");
    if let Ok(m) = s.requests.lock() {
        let mut rows: Vec<_> = m
            .iter()
            .flat_map(|(cluster, codes)| codes.iter().map(move |(code, n)| ((code, cluster), n)))
            .collect();
        rows.sort();
        for ((code, cluster), n) in rows {
            let _ = writeln!(
                o,
                "meshgate_requests_total{{response_code=\"{code}\",cluster=\"{cluster}\"}} {n}"
            );
        }
    }
    let _ = writeln!(o, "# TYPE meshgate_upstream_rq_time_ms histogram");
    for (i, le) in BUCKETS_MS.iter().enumerate() {
        let _ = writeln!(
            o,
            "meshgate_upstream_rq_time_ms_bucket{{le=\"{le}\"}} {}",
            s.upstream_buckets[i].load(Ordering::Relaxed)
        );
    }
    let count = s.upstream_count.load(Ordering::Relaxed);
    let _ = writeln!(o, "meshgate_upstream_rq_time_ms_bucket{{le=\"+Inf\"}} {count}");
    let _ = writeln!(
        o,
        "meshgate_upstream_rq_time_ms_sum {}",
        s.upstream_sum_ms.load(Ordering::Relaxed)
    );
    let _ = writeln!(o, "meshgate_upstream_rq_time_ms_count {count}");
    let _ = writeln!(o, "# TYPE meshgate_downstream_cx_active gauge");
    let c = &state.conns;
    let _ = writeln!(o, "meshgate_downstream_cx_active {}", c.len());
    let counters = [
        ("meshgate_downstream_cx_overflow_total", &c.overflow),
        ("meshgate_downstream_cx_evicted_total", &c.evicted),
        ("meshgate_downstream_cx_accept_errors_total", &c.accept_errors),
    ];
    for (name, v) in counters {
        let _ = writeln!(o, "# TYPE {name} counter");
        let _ = writeln!(o, "{name} {}", v.load(Ordering::Relaxed));
    }
    let _ = writeln!(o, "# TYPE meshgate_worker_downstream_cx_total counter");
    for (i, n) in c.accepted.iter().enumerate() {
        let n = n.load(Ordering::Relaxed);
        let _ = writeln!(o, "meshgate_worker_downstream_cx_total{{worker=\"{i}\"}} {n}");
    }
    let _ = writeln!(o, "# TYPE meshgate_downstream_cx_limit gauge");
    let _ = writeln!(o, "meshgate_downstream_cx_limit {}", c.limit());
    let _ = writeln!(o, "# TYPE meshgate_request_buffer_bytes gauge");
    let _ = writeln!(o, "meshgate_request_buffer_bytes {}", state.body.budget.used());
    let _ = writeln!(o, "# TYPE meshgate_config_reloads_total counter");
    let _ = writeln!(o, "meshgate_config_reloads_total {}", s.reloads.load(Ordering::Relaxed));
    let _ = writeln!(o, "# TYPE meshgate_config_reload_failures_total counter");
    let _ = writeln!(
        o,
        "meshgate_config_reload_failures_total {}",
        s.reload_failures.load(Ordering::Relaxed)
    );
    let _ = writeln!(o, "# TYPE meshgate_config_version gauge");
    let _ = writeln!(o, "meshgate_config_version {}", state.version());
    o
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
