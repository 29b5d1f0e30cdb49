//! A benchmark backend: HTTP/1.1 keep-alive, every response after a fixed delay, and optionally
//! one stall (every response held) for a window of the run. Used by `ci/bench/loadgen.py` to
//! check open-loop accuracy and coordinated-omission correction against known delays.
//!
//! `cargo run --release --example delay_server -- ADDR DELAY_MS [STALL_AT_S STALL_FOR_S]`
//! prints `listening on ADDR` when ready.

#![allow(clippy::expect_used, clippy::unwrap_used)] // A bench tool: failing loudly is what we want.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use tokio::net::TcpListener;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let addr = args.get(1).cloned().unwrap_or_else(|| "127.0.0.1:0".into());
    let delay = Duration::from_millis(args.get(2).and_then(|a| a.parse().ok()).unwrap_or(0));
    let stall_at = args
        .get(3)
        .and_then(|a| a.parse::<f64>().ok())
        .map(Duration::from_secs_f64);
    let stall_for = args
        .get(4)
        .and_then(|a| a.parse::<f64>().ok())
        .map_or(Duration::ZERO, Duration::from_secs_f64);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let listener = TcpListener::bind(&addr).await.expect("bind");
        println!("listening on {}", listener.local_addr().expect("addr"));
        // The clock of the stall starts at the first request.
        let first: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        let first: &'static std::sync::OnceLock<Instant> = Box::leak(Box::new(first));
        loop {
            let (s, _) = listener.accept().await.expect("accept");
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req: Request<hyper::body::Incoming>| async move {
                    let t0 = *first.get_or_init(Instant::now);
                    let mut wait = delay;
                    if let Some(at) = stall_at {
                        let since = t0.elapsed();
                        if since >= at && since < at + stall_for {
                            wait += at + stall_for - since;
                        }
                    }
                    if !wait.is_zero() {
                        tokio::time::sleep(wait).await;
                    }
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok\n"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
}
