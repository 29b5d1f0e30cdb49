//! The sidecar role's outbound HTTP: as an explicit proxy, absolute-form requests are routed by
//! the outbound route table of their port (VirtualServices bound to `mesh`, then the service's
//! cluster) and CONNECT opens a TCP tunnel to a registered TCP/TLS service; captured
//! (`capture.rs`), requests in origin form are routed by the table of the port they were going
//! to, their Host naming the service. Hosts outside the registry follow `outboundTrafficPolicy`:
//! ALLOW_ANY passes them to the original destination (PassthroughCluster), REGISTRY_ONLY answers
//! 502 and opens no connection (BlackHoleCluster).

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_model::api::mesh::OutboundTrafficMode;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::compile::Compiled;
use crate::context::{full, Body, Downstream, Outcome};
use crate::state::State;

pub const PASSTHROUGH: &str = "PassthroughCluster";
pub const BLACKHOLE: &str = "BlackHoleCluster";

/// Accepts proxy connections until `stop`.
pub async fn serve(listener: TcpListener, state: Arc<State>, stop: watch::Receiver<bool>) {
    crate::server::accept_loop(
        listener,
        state,
        stop,
        |stream, peer, local, state, registered| async move {
            let down = Downstream {
                peer,
                local,
                port: 15001,
                scheme: "http",
                table: None,
                sni: None,
                outbound: true,
                original_dst: None,
                body: state.body.clone(),
                telemetry: state.telemetry.clone(),
            };
            crate::server::serve_http(stream, down, state, registered).await;
        },
    )
    .await;
}

fn allow_any(c: &Compiled) -> bool {
    c.plan.mesh.outbound_traffic_policy != OutboundTrafficMode::RegistryOnly
}

fn status(code: StatusCode, body: &'static str) -> Response<Body> {
    let mut r = Response::new(full(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = code;
    r
}

/// One proxied request.
pub async fn handle(
    state: Arc<State>,
    compiled: Arc<Compiled>,
    down: &Downstream,
    req: Request<hyper::body::Incoming>,
) -> (Response<Body>, Outcome) {
    let mut out = Outcome::new();
    if req.method() == Method::CONNECT {
        return (connect(state, compiled, down, req, &mut out), out);
    }
    // An HTTP request has an original destination only when its connection was captured (the
    // Downstream's port is then the destination's); an explicit proxy's names it in the URI.
    let captured = down.original_dst.as_deref();
    let (host, port) = match captured {
        Some(_) => (
            Some(crate::matching::request_host(&req)).filter(|h| !h.is_empty()),
            u16::try_from(down.port).unwrap_or(80),
        ),
        None => (
            req.uri().host().map(str::to_ascii_lowercase),
            req.uri().port_u16().unwrap_or(80),
        ),
    };
    let Some(host) = host else {
        out.details = "direct_response".into();
        return (
            status(
                StatusCode::BAD_REQUEST,
                "meshgate's outbound listener is an HTTP proxy: send absolute-form requests or CONNECT\n",
            ),
            out,
        );
    };
    let outbound = compiled.plan.outbound.as_ref();
    let table_name = outbound.and_then(|o| o.route_tables.get(&u32::from(port))).cloned();
    let known = table_name
        .as_ref()
        .and_then(|t| compiled.tables.get(t))
        .is_some_and(|t| t.vhost(&host).is_some());
    if known {
        let down = Downstream {
            table: table_name,
            ..down.clone()
        };
        return crate::proxy::handle(compiled, &down, req).await;
    }
    if !allow_any(&compiled) {
        out.cluster = BLACKHOLE.into();
        out.route = "block_all".into();
        out.details = "direct_response".into();
        return (status(StatusCode::BAD_GATEWAY, ""), out);
    }
    out.cluster = PASSTHROUGH.into();
    let to = captured.map_or_else(|| crate::upstream::join(&host, u32::from(port)), str::to_string);
    (passthrough(req, &to, &mut out).await, out)
}

fn passthrough_client() -> &'static hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>> {
    static CLIENT: OnceLock<hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>> = OnceLock::new();
    CLIENT.get_or_init(|| hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http())
}

/// ALLOW_ANY: the request goes to `to`, where it was going (the host and port an explicit proxy
/// request names, a captured connection's original destination), its Host as the client sent it.
async fn passthrough(req: Request<hyper::body::Incoming>, to: &str, out: &mut Outcome) -> Response<Body> {
    let (mut parts, body) = req.into_parts();
    let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
        return status(StatusCode::BAD_REQUEST, "bad request body\n");
    };
    if !parts.headers.contains_key(http::header::HOST) {
        if let Some(v) = parts
            .uri
            .authority()
            .and_then(|a| http::HeaderValue::from_str(a.as_str()).ok())
        {
            parts.headers.insert(http::header::HOST, v);
        }
    }
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let Ok(uri) = format!("http://{to}{path}").parse::<http::Uri>() else {
        return status(StatusCode::BAD_REQUEST, "bad request target\n");
    };
    let mut up = Request::new(Full::new(body));
    *up.method_mut() = parts.method;
    *up.uri_mut() = uri;
    *up.headers_mut() = parts.headers;
    up.headers_mut().remove("proxy-connection");
    out.upstream_host = to.to_string();
    match passthrough_client().request(up).await {
        Ok(resp) => resp.map(|b| b.boxed_unsync()),
        Err(e) => crate::errors::rescue(
            &crate::errors::Failure::ConnectFailure(e.to_string()),
            false,
            false,
            out,
        ),
    }
}

/// CONNECT host:port: a tunnel to a registered TCP/TLS service, to the original destination
/// under ALLOW_ANY, or refused under REGISTRY_ONLY.
fn connect(
    state: Arc<State>,
    compiled: Arc<Compiled>,
    down: &Downstream,
    mut req: Request<hyper::body::Incoming>,
    out: &mut Outcome,
) -> Response<Body> {
    let Some(authority) = req.uri().authority().map(|a| a.as_str().to_ascii_lowercase()) else {
        return status(StatusCode::BAD_REQUEST, "CONNECT needs host:port\n");
    };
    let cluster = compiled
        .plan
        .outbound
        .as_ref()
        .and_then(|o| o.tcp.get(&authority))
        .and_then(|route| crate::l4::pick_weighted(&route.clusters))
        .map(str::to_string);
    if cluster.is_none() && !allow_any(&compiled) {
        out.cluster = BLACKHOLE.into();
        out.details = "direct_response".into();
        return status(StatusCode::BAD_GATEWAY, "");
    }
    out.cluster = cluster.clone().unwrap_or_else(|| PASSTHROUGH.into());
    let upgrade = hyper::upgrade::on(&mut req);
    let down = Downstream {
        original_dst: Some(authority.clone()),
        ..down.clone()
    };
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let io = TokioIo::new(upgraded);
        match cluster {
            Some(c) => crate::l4::proxy_to_cluster(io, Some(&c), &compiled, &state, &down).await,
            None => crate::l4::passthrough(io, &authority, &compiled, &state, &down).await,
        }
    });
    status(StatusCode::OK, "")
}
