//! The HTTP echo: HTTP/1.1 and h2c on one port (auto-detected), Istio's echo format.

use std::convert::Infallible;
use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::{parse_delay, pick_code, Identity};

pub async fn serve(
    listener: TcpListener,
    id: Arc<Identity>,
    counter: Arc<AtomicU64>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let port = listener.local_addr().map_or(0, |a| a.port());
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (id, counter, tls) = (id.clone(), counter.clone(), tls.clone());
        tokio::spawn(async move {
            let Some(tls) = tls else {
                return serve_conn(stream, id, counter, peer, port, None).await;
            };
            // A failed handshake (wrong CA at the client, no client certificate) just closes.
            let Ok(stream) = tls.accept(stream).await else { return };
            let (_, conn) = stream.get_ref();
            let facts = TlsFacts {
                sni: conn.server_name().unwrap_or_default().to_string(),
                client_cert: conn.peer_certificates().is_some_and(|c| !c.is_empty()),
            };
            serve_conn(stream, id, counter, peer, port, Some(facts)).await;
        });
    }
}

/// What a TLS connection showed, reported as `TLS-SNI=` and `TLS-ClientCert=` echo lines.
#[derive(Debug, Clone)]
struct TlsFacts {
    sni: String,
    client_cert: bool,
}

async fn serve_conn<I>(
    io: I,
    id: Arc<Identity>,
    counter: Arc<AtomicU64>,
    peer: SocketAddr,
    port: u16,
    tls: Option<TlsFacts>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
        if let Some(t) = &tls {
            req.extensions_mut().insert(t.clone());
        }
        respond(req, id.clone(), counter.clone(), peer, port)
    });
    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
        .serve_connection_with_upgrades(TokioIo::new(io), svc)
        .await;
}

fn query_param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// The echo body: identity, what the request looked like, every request header.
pub fn echo_lines(id: &Identity, port: u16, req: &http::request::Parts, peer: SocketAddr) -> String {
    let mut b = String::new();
    let host = req
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string);
    let host = host
        .or_else(|| req.uri.authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let proto = match req.version {
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_10 => "HTTP/1.0",
        _ => "HTTP/1.1",
    };
    let url = req.uri.path_and_query().map_or("/".to_string(), |p| p.to_string());
    let _ = writeln!(b, "ServiceVersion={}", id.version);
    let _ = writeln!(b, "ServicePort={port}");
    let _ = writeln!(b, "Host={host}");
    let _ = writeln!(b, "URL={url}");
    if !id.namespace.is_empty() {
        let _ = writeln!(b, "Namespace={}", id.namespace);
    }
    let _ = writeln!(b, "Method={}", req.method);
    let _ = writeln!(b, "Proto={proto}");
    let _ = writeln!(b, "IP={}", peer.ip());
    if let Some(t) = req.extensions.get::<TlsFacts>() {
        let _ = writeln!(b, "TLS-SNI={}", t.sni);
        let _ = writeln!(b, "TLS-ClientCert={}", t.client_cert);
    }
    // h2 carries the host as :authority; it is reported as the Host header HTTP/1.1 would send.
    let h2_host = (req.version == http::Version::HTTP_2 && !req.headers.contains_key(http::header::HOST))
        .then(|| ("Host".to_string(), host.clone()));
    crate::write_headers_and_identity(&mut b, &req.headers, h2_host, id);
    b
}

async fn respond(
    mut req: Request<hyper::body::Incoming>,
    id: Arc<Identity>,
    counter: Arc<AtomicU64>,
    peer: SocketAddr,
    port: u16,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if let Some(proto) = req.headers().get(http::header::UPGRADE).cloned() {
        // Upgrades (WebSocket) are accepted and the upgraded stream is echoed byte for byte.
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(upgraded) = on.await {
                let (mut r, mut w) = tokio::io::split(TokioIo::new(upgraded));
                let _ = tokio::io::copy(&mut r, &mut w).await;
            }
        });
        let mut resp = Response::new(Full::new(Bytes::new()));
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        resp.headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("upgrade"));
        resp.headers_mut().insert(http::header::UPGRADE, proto);
        return Ok(resp);
    }
    let (parts, body) = req.into_parts();
    let _ = body.collect().await;
    let query = parts.uri.query().unwrap_or("").to_string();
    if let Some(d) = query_param(&query, "delay").and_then(parse_delay) {
        tokio::time::sleep(d).await;
    }
    let n = counter.fetch_add(1, Ordering::Relaxed);
    let status = query_param(&query, "codes")
        .and_then(|c| pick_code(c, n))
        .unwrap_or(200);
    let body = match query_param(&query, "size").and_then(|s| s.parse::<usize>().ok()) {
        Some(size) => Bytes::from(vec![b'x'; size]),
        None => Bytes::from(echo_lines(&id, port, &parts, peer)),
    };
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    resp.headers_mut()
        .insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/text"));
    if let Some(h) = query_param(&query, "headers") {
        for pair in h.split(',') {
            let Some((k, v)) = pair.split_once(':') else { continue };
            if let (Ok(k), Ok(v)) = (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(v)) {
                resp.headers_mut().append(k, v);
            }
        }
    }
    Ok(resp)
}
