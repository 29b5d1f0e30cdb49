//! Listeners: one accept loop per Plan listener port, HTTP/1.1 and h2c auto-detected on each
//! connection, every request through `proxy::handle`, then the access log line and stats.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::{Request, Response};
use hyper::body::Body as _;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_model::plan::{ChainAction, Transport};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::proxy::{self, Body, Downstream, Outcome};
use crate::state::State;
use crate::{l4, tls};

/// Accepts connections until `stop` turns true, each run by `conn` (counted as active while it
/// runs); then each open connection finishes its in-flight requests and closes (HTTP/1.1: after
/// the current response; h2: GOAWAY).
pub async fn accept_loop<F, Fut>(listener: TcpListener, state: Arc<State>, mut stop: watch::Receiver<bool>, conn: F)
where
    F: Fn(TcpStream, SocketAddr, SocketAddr, Arc<State>, watch::Receiver<bool>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let local = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => return,
        };
        let Ok((stream, peer)) = accepted else { continue };
        let _ = stream.set_nodelay(true);
        state.stats.active_connections.fetch_add(1, Ordering::Relaxed);
        let work = conn(stream, peer, local, state.clone(), stop.clone());
        let state = state.clone();
        tokio::spawn(async move {
            work.await;
            state.stats.active_connections.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// A Plan listener's accept loop.
pub async fn serve(listener: TcpListener, port: u32, state: Arc<State>, stop: watch::Receiver<bool>) {
    accept_loop(
        listener,
        state,
        stop,
        move |stream, peer, local, state, stop| async move {
            connection(stream, peer, local, port, &state, stop).await;
        },
    )
    .await;
}

/// How long a client may take to send its ClientHello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// One downstream connection: inspect TLS and SNI, choose the filter chain, run it.
async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    port: u32,
    state: &Arc<State>,
    stop: watch::Receiver<bool>,
) {
    let compiled = state.current.load_full();
    let Some(listener) = compiled.listeners.get(&port) else {
        return;
    };
    let (hello, prefix) = if listener.inspects_tls() {
        match tokio::time::timeout(HELLO_TIMEOUT, tls::peek_hello(&mut stream)).await {
            Ok(Ok(x)) => x,
            _ => return,
        }
    } else {
        (tls::Hello::default(), Vec::new())
    };
    let Some(chain) = listener.select(&hello) else {
        eprintln!(
            "meshgate: {peer} -> {local}: no filter chain for SNI {:?} (TLS: {}); connection closed",
            hello.sni, hello.tls
        );
        return;
    };
    let io = tls::Rewind::new(prefix, stream);
    let mut down = Downstream {
        outbound: false,
        original_dst: None,
        peer,
        local,
        port,
        scheme: "http",
        table: None,
        sni: hello.sni.clone(),
    };
    match (&chain.action, chain.transport, chain.tls.clone()) {
        (ChainAction::Http { route_table }, Transport::Plaintext, _) => {
            down.table = Some(route_table.clone());
            serve_http(io, down, state.clone(), stop).await;
        }
        (ChainAction::Http { route_table }, Transport::TerminateTls, Some(cfg)) => {
            down.table = Some(route_table.clone());
            down.scheme = "https";
            match tokio_rustls::TlsAcceptor::from(cfg).accept(io).await {
                Ok(tls) => serve_http(tls, down, state.clone(), stop).await,
                Err(e) => eprintln!("meshgate: TLS handshake with {peer} failed (chain {}): {e}", chain.name),
            }
        }
        (ChainAction::Tcp { route }, Transport::Plaintext, _) => {
            l4::proxy(io, route.as_ref(), &compiled, state, &down).await;
        }
        (ChainAction::Tcp { route }, Transport::TerminateTls, Some(cfg)) => {
            match tokio_rustls::TlsAcceptor::from(cfg).accept(io).await {
                Ok(tls) => l4::proxy(tls, route.as_ref(), &compiled, state, &down).await,
                Err(e) => eprintln!("meshgate: TLS handshake with {peer} failed (chain {}): {e}", chain.name),
            }
        }
        (ChainAction::TlsPassthrough { routes }, _, _) => {
            let route = hello.sni.as_deref().and_then(|sni| {
                routes
                    .iter()
                    .find(|r| r.sni_hosts.iter().any(|h| h == "*" || tls::name_matches(h, sni)))
                    .map(|r| &r.route)
            });
            l4::proxy(io, route, &compiled, state, &down).await;
        }
        (ChainAction::AutoPassthrough, _, _) => {
            let cluster = hello.sni.as_deref().and_then(l4::auto_passthrough_cluster);
            l4::proxy_to_cluster(io, cluster.as_deref(), &compiled, state, &down).await;
        }
        _ => {}
    }
}

pub async fn serve_http<IO>(io: IO, down: Downstream, state: Arc<State>, mut stop: watch::Receiver<bool>)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let down = Arc::new(down);
    let svc_state = state.clone();
    let svc = hyper::service::service_fn(move |req| {
        let (state, down) = (svc_state.clone(), down.clone());
        async move { Ok::<_, Infallible>(one_request(&state, &down, req).await) }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let conn = builder
        .serve_connection_with_upgrades(TokioIo::new(io), svc)
        .into_owned();
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = async { let _ = stop.wait_for(|s| *s).await; } => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.as_mut().await;
        }
    }
}

async fn one_request(state: &Arc<State>, down: &Downstream, mut req: Request<hyper::body::Incoming>) -> Response<Body> {
    let start = Instant::now();
    proxy::prepare_downstream_headers(req.headers_mut(), down);
    let started_at = SystemTime::now();
    let line = state.access_log.enabled().then(|| RequestLine::of(&req));
    let compiled = state.current.load_full();
    let (resp, out) = if down.outbound {
        crate::sidecar::handle(state.clone(), compiled, down, req).await
    } else {
        proxy::handle(compiled, down, req).await
    };
    state
        .stats
        .record(resp.status().as_u16(), &out.cluster, out.upstream_ms);
    if let Some(line) = line {
        state
            .access_log
            .write(&line.format(started_at, start, &resp, &out, down));
    }
    resp
}

/// The request's part of the access log, taken before the request moves on.
struct RequestLine {
    method: String,
    path: String,
    protocol: &'static str,
    xff: String,
    user_agent: String,
    request_id: String,
    authority: String,
    bytes_received: u64,
}

fn header(req: &Request<hyper::body::Incoming>, name: &str) -> String {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string()
}

impl RequestLine {
    fn of(req: &Request<hyper::body::Incoming>) -> RequestLine {
        RequestLine {
            method: req.method().to_string(),
            path: req.uri().path_and_query().map_or("/".into(), |p| p.to_string()),
            protocol: match req.version() {
                http::Version::HTTP_2 => "HTTP/2",
                http::Version::HTTP_10 => "HTTP/1.0",
                _ => "HTTP/1.1",
            },
            xff: header(req, "x-forwarded-for"),
            user_agent: header(req, "user-agent"),
            request_id: header(req, "x-request-id"),
            authority: req
                .uri()
                .authority()
                .map(|a| a.to_string())
                .unwrap_or_else(|| header(req, "host")),
            bytes_received: req.body().size_hint().exact().unwrap_or(0),
        }
    }

    /// Istio's default TEXT access log format.
    fn format(
        &self,
        started_at: SystemTime,
        start: Instant,
        resp: &Response<Body>,
        out: &Outcome,
        down: &Downstream,
    ) -> String {
        let dash = |s: &str| if s.is_empty() { "-".to_string() } else { s.to_string() };
        let upstream_time = out.upstream_ms.map_or("-".into(), |m| m.to_string());
        let bytes_sent = resp.body().size_hint().exact().map_or("-".into(), |n| n.to_string());
        format!(
            "[{}] \"{} {} {}\" {} {} {} - \"{}\" {} {} {} {} \"{}\" \"{}\" \"{}\" \"{}\" \"{}\" {} - {} {} {} {}",
            mesh_model::time::rfc3339(started_at, true),
            self.method,
            self.path,
            self.protocol,
            resp.status().as_u16(),
            dash(&out.flags),
            out.details,
            dash(&out.transport_failure),
            self.bytes_received,
            bytes_sent,
            start.elapsed().as_millis(),
            upstream_time,
            self.xff,
            self.user_agent,
            self.request_id,
            self.authority,
            dash(&out.upstream_host),
            dash(&out.cluster),
            down.local,
            down.peer,
            down.sni.as_deref().unwrap_or("-"),
            dash(&out.route),
        )
    }
}
