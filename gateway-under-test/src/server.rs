//! Listeners: one accept loop per Plan listener port, HTTP/1.1 and h2c auto-detected on each
//! connection, every request through `proxy::handle`, then the access log line and stats.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use mesh_model::plan::{ChainAction, Transport};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::conns::{ConnHandle, Phase, Registered};
use crate::context::{Downstream, Inbound, Outcome};
use crate::errors::Failure;
use crate::headwatch::HeadWatch;
use crate::logging::{Finish, Logged, RequestLine};
use crate::proxy;
use crate::state::State;
use crate::{l4, tls};

/// Accepts connections until `stop` turns true, each registered against the connection limit
/// (counted open while it runs) and run by `conn`. Each connection closes gracefully when
/// the gateway drains or stops or when it is asked to (HTTP/1.1: after the current response;
/// h2: GOAWAY). `accept` failures (out of file descriptors) back off, doubling up to 100 ms,
/// and ask the connection idle longest to close, instead of spinning.
pub async fn accept_loop<F, Fut>(listener: TcpListener, state: Arc<State>, mut stop: watch::Receiver<bool>, conn: F)
where
    F: Fn(TcpStream, SocketAddr, SocketAddr, Arc<State>, Registered) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let local = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let mut backoff = Duration::ZERO;
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                state.conns.accept_errors.fetch_add(1, Ordering::Relaxed);
                if is_out_of_files(&e) {
                    state.conns.evict_idle();
                }
                backoff = (backoff * 2).clamp(Duration::from_millis(1), Duration::from_millis(100));
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        backoff = Duration::ZERO;
        // Over the limit with nothing idle to close: the new connection is closed at once.
        // The connection is counted open until `registered`, moved into its work, is dropped.
        let Some(registered) = state.conns.register() else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(conn(stream, peer, local, state.clone(), registered));
    }
}

/// EMFILE or ENFILE: the process or the system is out of file descriptors.
fn is_out_of_files(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(23 | 24))
}

/// A Plan listener's accept loop.
pub async fn serve(listener: TcpListener, port: u32, state: Arc<State>, stop: watch::Receiver<bool>) {
    accept_loop(
        listener,
        state,
        stop,
        move |stream, peer, local, state, registered| async move {
            connection(stream, peer, local, port, &state, registered).await;
        },
    )
    .await;
}

/// One downstream connection: inspect TLS and SNI, choose the filter chain, run it.
async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    port: u32,
    state: &Arc<State>,
    registered: Registered,
) {
    let compiled = state.current.load_full();
    let handshake = state.limits.tls_handshake_timeout;
    let Some(listener) = compiled.listeners.get(&port) else {
        return;
    };
    let (hello, prefix) = if listener.inspects_tls() {
        match tokio::time::timeout(handshake, tls::peek_hello(&mut stream)).await {
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
        body: state.body.clone(),
        telemetry: state.telemetry.clone(),
    };
    // A TCP or TLS session is in flight for its whole life: never closed as idle.
    let handle = registered.handle();
    let _session = (!matches!(chain.action, ChainAction::Http { .. })).then(|| handle.request(false));
    match (&chain.action, chain.transport, chain.tls.clone()) {
        (ChainAction::Http { route_table }, Transport::Plaintext, _) => {
            down.table = Some(route_table.clone());
            serve_http(io, down, state.clone(), registered).await;
        }
        (ChainAction::Http { route_table }, Transport::TerminateTls, Some(cfg)) => {
            down.table = Some(route_table.clone());
            down.scheme = "https";
            match accept_tls(cfg, io, handshake).await {
                Ok(tls) => serve_http(tls, down, state.clone(), registered).await,
                Err(e) => eprintln!("meshgate: TLS handshake with {peer} failed (chain {}): {e}", chain.name),
            }
        }
        (ChainAction::Tcp { route }, Transport::Plaintext, _) => {
            l4::proxy(io, route.as_ref(), &compiled, state, &down).await;
        }
        (ChainAction::Tcp { route }, Transport::TerminateTls, Some(cfg)) => {
            match accept_tls(cfg, io, handshake).await {
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

/// The TLS handshake, within `timeout` (a client that stalls mid-handshake is dropped).
async fn accept_tls<IO>(
    cfg: Arc<rustls::ServerConfig>,
    io: IO,
    timeout: Duration,
) -> std::io::Result<tokio_rustls::server::TlsStream<IO>>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    tokio::time::timeout(timeout, tokio_rustls::TlsAcceptor::from(cfg).accept(io))
        .await
        .unwrap_or_else(|_| Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "handshake timed out")))
}

/// HTTP/1.1 and h2c (or h2 after ALPN) on one connection, within the gateway's limits: the
/// request-headers timeout, header size and count (431 above them), h2's header list size.
/// HTTP/1.1 requests go by `h1serve`, which hands the connection to hyper (`serve_hyper`) for
/// h2 and for what it does not take.
pub async fn serve_http<IO>(io: IO, down: Downstream, state: Arc<State>, registered: Registered)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let io = crate::headwatch::HeadWatch::new(io, registered.handle());
    crate::h1serve::serve(io, down, state, registered).await;
}

/// hyper serves the rest of a connection, from the bytes already read from it (`prefix`).
pub async fn serve_hyper<IO>(
    io: HeadWatch<IO>,
    prefix: Vec<u8>,
    down: Arc<Downstream>,
    state: Arc<State>,
    mut registered: Registered,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let io = tls::Rewind::new(prefix, io);
    let conn_state = Arc::new(registered.handle());
    let svc_state = state.clone();
    let svc = hyper::service::service_fn(move |req| {
        let (state, down, conn) = (svc_state.clone(), down.clone(), conn_state.clone());
        async move { Ok::<_, Infallible>(one_request(&state, down, &conn, req).await) }
    });
    let limits = &state.limits;
    let headers_bytes = limits.max_request_headers_kb.saturating_mul(1024);
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // The request-headers timeout runs from a head's first byte (`headwatch`), not from the
        // end of the previous response: an idle keep-alive connection is the idle timeout's.
        .header_read_timeout(None)
        .max_buf_size(limits.head_buffer_bytes())
        .max_headers(limits.max_headers_count);
    let (stream_window, conn_window) = limits.h2_windows();
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(headers_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(limits.max_concurrent_streams)
        .initial_stream_window_size(stream_window)
        .initial_connection_window_size(conn_window);
    let conn = builder
        .serve_connection_with_upgrades(TokioIo::new(io), svc)
        .into_owned();
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = registered.closing() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.as_mut().await;
        }
    }
}

/// One request, whichever path read it: routed and answered, its response body logged when it
/// ends.
pub(crate) async fn one_request<B: Inbound>(
    state: &Arc<State>,
    down: Arc<Downstream>,
    conn: &ConnHandle,
    mut req: Request<B>,
) -> Response<Logged> {
    let start = Instant::now();
    let h2 = req.version() == http::Version::HTTP_2;
    let in_flight = conn.request(h2);
    let last = state.limits.is_last_request(in_flight.nth);
    if last && h2 {
        // GOAWAY: the streams already open finish, new ones go to a new connection.
        conn.close();
    }
    proxy::prepare_downstream_headers(req.headers_mut(), &down);
    let started_at = SystemTime::now();
    let line = state
        .access_log
        .enabled()
        .then(|| RequestLine::of(&req, &state.log_format));
    let compiled = state.current.load_full();
    let grpc = proxy::is_grpc(req.headers());
    let (mut resp, out) = if let Err(f) = within_header_limits(&req, &state.limits) {
        let mut out = Outcome::new();
        (crate::errors::fail(f, grpc, &mut out), out)
    } else if down.outbound {
        // Boxed: a sidecar's path is as large as the gateway's, and only one of them runs here.
        Box::pin(crate::sidecar::handle(state.clone(), compiled, &down, req)).await
    } else {
        proxy::handle(compiled, &down, req).await
    };
    // Draining: the client opens a new connection for its next request (Envoy's drain). A
    // request whose body timed out (read whole or streamed) leaves the rest of its body unread.
    let refused_body = out.details == Failure::RequestTimeout.details();
    if !h2 && (last || conn.phase() != Phase::Serving || refused_body) {
        resp.headers_mut()
            .insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
    }
    let finish = Finish {
        state: state.clone(),
        down,
        line,
        out,
        started_at,
        start,
        status: resp.status().as_u16(),
        grpc,
        response_headers: Vec::new(),
    };
    let (parts, body) = resp.into_parts();
    let body = Logged::new(body, &parts.headers, finish);
    Response::from_parts(parts, body)
}

/// Envoy's `max_request_headers_kb` and `max_headers_count`, counted exactly (hyper's own
/// buffer limit is a coarse bound): the request line and every header name and value.
fn within_header_limits<B>(req: &Request<B>, limits: &crate::limits::Limits) -> Result<(), Failure> {
    let headers = req.headers();
    let line = req.method().as_str().len() + req.uri().path_and_query().map_or(1, |p| p.as_str().len());
    let size: usize = line + headers.iter().map(|(k, v)| k.as_str().len() + v.len()).sum::<usize>();
    if size > limits.max_request_headers_kb.saturating_mul(1024) || headers.len() > limits.max_headers_count {
        return Err(Failure::HeadersTooLarge);
    }
    Ok(())
}
