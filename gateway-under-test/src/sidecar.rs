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
use crate::context::{full, Body, Downstream, Inbound, Outcome};
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
pub async fn handle<B: Inbound>(
    state: Arc<State>,
    compiled: Arc<Compiled>,
    down: &Downstream,
    req: Request<B>,
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
            Some(crate::matching::request_host(&req).into_owned()).filter(|h| !h.is_empty()),
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
/// request names, a captured connection's original destination).
async fn passthrough<B: Inbound>(req: Request<B>, to: &str, out: &mut Outcome) -> Response<Body> {
    let (mut parts, body) = req.into_parts();
    let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
        return status(StatusCode::BAD_REQUEST, "bad request body\n");
    };
    // An absolute-form target names the host: a proxy replaces Host with it (RFC 9112 3.2.2), as
    // Envoy's codec does. A captured request (origin form) keeps its own.
    if let Some(v) = parts
        .uri
        .authority()
        .and_then(|a| http::HeaderValue::from_str(a.as_str()).ok())
    {
        parts.headers.insert(http::header::HOST, v);
    }
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let Ok(uri) = format!("http://{to}{path}").parse::<http::Uri>() else {
        return status(StatusCode::BAD_REQUEST, "bad request target\n");
    };
    let mut up = Request::new(Full::new(body));
    *up.method_mut() = parts.method;
    *up.uri_mut() = uri;
    *up.headers_mut() = parts.headers;
    up.headers_mut().remove(crate::names::PROXY_CONNECTION);
    out.upstream_host = to.to_string();
    match passthrough_client().request(up).await {
        Ok(mut resp) => {
            crate::forward::strip_response_hop_by_hop(&mut resp);
            resp.map(|b| b.map_err(Into::into).boxed_unsync())
        }
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
fn connect<B>(
    state: Arc<State>,
    compiled: Arc<Compiled>,
    down: &Downstream,
    mut req: Request<B>,
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

#[cfg(test)]
mod tests {
    //! The outbound side in-process: requests built here, no socket on either side.

    use super::*;
    use crate::telemetry::{Identity, Telemetry};

    const CONFIG: &str = "\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api, namespace: default}
spec:
  hosts: [api.example.com]
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 127.0.0.1}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: default}
spec:
  hosts: [api.example.com]
  http:
  - name: maintenance
    directResponse: {status: 503, body: {string: maintenance}}
---
";

    /// The sidecar's state under `mode`, and the explicit proxy's downstream.
    fn sidecar(mode: OutboundTrafficMode) -> (Arc<State>, Downstream) {
        let args =
            <crate::Args as clap::Parser>::try_parse_from(["meshgate", "-c", "."]).unwrap_or_else(|e| panic!("{e}"));
        let telemetry = Arc::new(Telemetry::new(Identity::from_labels(&Default::default(), None)));
        let compiled = crate::compile::from_yaml(
            CONFIG,
            true,
            |plan| plan.mesh.outbound_traffic_policy = mode,
            &telemetry,
        );
        let format = crate::logformat::Format::new("TEXT", "").unwrap_or_else(|e| panic!("{e}"));
        let state = State::new(
            compiled,
            (crate::state::AccessLog::Off, format),
            args.limits.clone(),
            telemetry.clone(),
        );
        let down = Downstream {
            peer: "127.0.0.1:40000".parse().unwrap_or_else(|e| panic!("{e}")),
            local: "127.0.0.1:15001".parse().unwrap_or_else(|e| panic!("{e}")),
            port: 15001,
            scheme: "http",
            table: None,
            sni: None,
            outbound: true,
            original_dst: None,
            body: state.body.clone(),
            telemetry,
        };
        (state, down)
    }

    async fn send(mode: OutboundTrafficMode, method: &str, uri: &str) -> (StatusCode, String, Outcome) {
        let (state, down) = sidecar(mode);
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .body(http_body_util::Empty::<Bytes>::new())
            .unwrap_or_else(|e| panic!("{e}"));
        let compiled = state.current.load_full();
        let (resp, out) = handle(state, compiled, &down, req).await;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned(), out)
    }

    #[tokio::test]
    async fn a_registered_host_is_routed_by_its_virtual_service() {
        for mode in [OutboundTrafficMode::RegistryOnly, OutboundTrafficMode::AllowAny] {
            let (status, body, out) = send(mode, "GET", "http://api.example.com/x").await;
            assert_eq!((status.as_u16(), body.as_str()), (503, "maintenance"));
            assert_eq!(out.route, "maintenance");
        }
    }

    #[tokio::test]
    async fn registry_only_answers_502_from_the_black_hole_for_http_and_connect() {
        let (status, _, out) = send(
            OutboundTrafficMode::RegistryOnly,
            "GET",
            "http://elsewhere.example.com/",
        )
        .await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        assert_eq!((out.cluster.as_str(), out.route.as_str()), (BLACKHOLE, "block_all"));
        assert_eq!(out.upstream_host, "", "no connection is opened");
        let (status, _, out) = send(
            OutboundTrafficMode::RegistryOnly,
            "CONNECT",
            "elsewhere.example.com:443",
        )
        .await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        assert_eq!(out.cluster, BLACKHOLE);
    }

    #[tokio::test]
    async fn a_captured_request_without_a_host_is_a_bad_request() {
        // HTTP/1.1 requires Host (RFC 9112 3.2); a captured request names its service by it.
        let (state, down) = sidecar(OutboundTrafficMode::AllowAny);
        let captured = Downstream {
            original_dst: Some("10.0.0.9:80".into()),
            port: 80,
            ..down
        };
        let req = Request::get("/x")
            .body(http_body_util::Empty::<Bytes>::new())
            .unwrap_or_else(|e| panic!("{e}"));
        let compiled = state.current.load_full();
        let (resp, out) = handle(state, compiled, &captured, req).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        assert_eq!((out.cluster.as_str(), out.upstream_host.as_str()), ("", ""));
    }

    #[tokio::test]
    async fn the_explicit_proxy_asks_for_absolute_form_and_connect_for_a_port() {
        let (status, body, out) = send(OutboundTrafficMode::AllowAny, "GET", "/x").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.contains("absolute-form"), "{body}");
        assert_eq!(out.details, "direct_response");
        // Under ALLOW_ANY, CONNECT to an unregistered host is a passthrough tunnel (200).
        let (status, _, out) = send(OutboundTrafficMode::AllowAny, "CONNECT", "elsewhere.example.com:443").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(out.cluster, PASSTHROUGH);
    }
}
