//! The client side of a case: one request over the wire as the case describes it (HTTP/1.1,
//! h2c, h2 or gRPC, TLS, TCP, through an explicit proxy and CONNECT tunnels) and what it showed.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

use super::suite::Request;

/// What one request showed.
#[derive(Debug, Clone, Default)]
pub struct Observation {
    pub status: u16,
    pub grpc_status: Option<u16>,
    pub headers: BTreeMap<String, String>,
    pub body: String,
    pub elapsed: Duration,
    pub error: Option<String>,
    /// TLS facts: version, alpn, san.
    pub tls: BTreeMap<String, String>,
}

impl Observation {
    pub fn field(&self, key: &str) -> Option<String> {
        mesh_echo::parse_fields(&self.body)
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    pub fn saw_header(&self, name: &str) -> Option<String> {
        mesh_echo::parse_fields(&self.body)
            .into_iter()
            .filter(|(k, _)| k == "RequestHeader")
            .find_map(|(_, v)| {
                v.split_once(':')
                    .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.to_string())
            })
    }
}

/// Sends one request of a case, from `from` when given (a host of a captured run). `certs`:
/// the suite's certificates (for TLS requests).
pub async fn send(
    from: Option<&mesh_netns::Host>,
    addr: SocketAddr,
    r: &Request,
    certs: &std::path::Path,
) -> Observation {
    let start = Instant::now();
    let mut o = exchange(from, addr, r, certs).await.unwrap_or_else(|e| Observation {
        error: Some(e),
        ..Default::default()
    });
    o.elapsed = start.elapsed();
    o
}

async fn exchange(
    from: Option<&mesh_netns::Host>,
    addr: SocketAddr,
    r: &Request,
    certs: &std::path::Path,
) -> Result<Observation, String> {
    let protocol = r.protocol.as_str();
    let connected = match from {
        Some(h) => h.connect(addr).await,
        None => tokio::net::TcpStream::connect(addr).await,
    };
    let mut stream = connected.map_err(|e| format!("connect: {e}"))?;
    // Through an explicit proxy, TLS and TCP go in a CONNECT tunnel to the authority.
    if r.proxy.unwrap_or(false) && (r.tls.is_some() || protocol == "tcp") {
        let authority = r.authority.clone().unwrap_or_else(|| addr.to_string());
        let status = connect_tunnel(&mut stream, &authority).await?;
        if status != 200 {
            return Ok(Observation {
                status,
                ..Default::default()
            });
        }
    }
    let Some(t) = &r.tls else {
        return match protocol {
            "tcp" => tcp(stream, r).await,
            _ => http(stream, addr, r, protocol).await,
        };
    };
    let (stream, facts) = super::tls::connect(stream, addr, t, certs).await?;
    let h2 = facts.get("alpn").map(String::as_str) == Some("h2");
    let o = match protocol {
        "tcp" => tcp(stream, r).await,
        "grpc" if !h2 => Err("gRPC over TLS needs ALPN h2; the server chose none".to_string()),
        "grpc" => http(stream, addr, r, "grpc").await,
        // In a tunnel the request is origin-form again: the tunnel's far end is the server.
        _ => {
            http(
                stream,
                addr,
                &Request {
                    proxy: None,
                    ..r.clone()
                },
                if h2 { "h2" } else { "h1" },
            )
            .await
        }
    };
    o.map(|o| Observation { tls: facts, ..o })
}

/// Sends `CONNECT authority` and reads the proxy's answer; returns its status.
async fn connect_tunnel(s: &mut tokio::net::TcpStream, authority: &str) -> Result<u16, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes())
        .await
        .map_err(|e| format!("CONNECT: {e}"))?;
    // Byte by byte up to the blank line, so nothing of the tunnel is consumed.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut byte))
            .await
            .map_err(|_| "CONNECT: no answer in 10s".to_string())?
            .map_err(|e| format!("CONNECT: {e}"))?;
        if n == 0 || head.len() > 16 * 1024 {
            return Err("CONNECT: the proxy closed without a complete answer".into());
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("CONNECT: bad answer {:?}", text.lines().next().unwrap_or("")))
}

async fn tcp<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut s: S,
    r: &Request,
) -> Result<Observation, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sent = r.body.as_deref().unwrap_or("").as_bytes();
    s.write_all(sent).await.map_err(|e| e.to_string())?;
    let half_close = r.half_close.unwrap_or(!r.proxy.unwrap_or(false));
    if half_close {
        s.shutdown().await.map_err(|e| e.to_string())?;
    }
    let mut out = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            let n = s.read(&mut buf).await?;
            out.extend_from_slice(&buf[..n]);
            if n == 0 || (!half_close && out.ends_with(sent)) {
                return Ok::<(), std::io::Error>(());
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .map_err(|_| "timeout".to_string())?
        .map_err(|e| e.to_string())?;
    Ok(Observation {
        body: String::from_utf8_lossy(&out).into_owned(),
        ..Default::default()
    })
}

async fn http<S>(stream: S, addr: SocketAddr, r: &Request, protocol: &str) -> Result<Observation, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let io = hyper_util::rt::TokioIo::new(stream);
    let authority = r.authority.clone().unwrap_or_else(|| addr.to_string());
    let path = r.path.clone().unwrap_or_else(|| "/".into());
    let grpc = protocol == "grpc";
    let mut builder = http::Request::builder()
        .method(r.method.as_deref().unwrap_or(if grpc { "POST" } else { "GET" }))
        .uri(if protocol == "h1" && !r.proxy.unwrap_or(false) {
            path.clone()
        } else {
            format!("http://{authority}{path}")
        });
    if protocol == "h1" {
        builder = builder.header("host", &authority);
    }
    for (k, v) in &r.headers {
        builder = builder.header(k.as_str(), v.as_str());
    }
    let body = if grpc {
        builder = builder
            .header("content-type", "application/grpc")
            .header("te", "trailers");
        crate::load::client::h2::grpc_frame(&crate::load::client::h2::echo_request(
            r.body.as_deref().unwrap_or("").as_bytes(),
        ))
    } else {
        Bytes::from(r.body.clone().unwrap_or_default())
    };
    let req = builder.body(Full::new(body)).map_err(|e| e.to_string())?;
    let resp = if protocol == "h1" {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        send.send_request(req).await.map_err(|e| e.to_string())?
    } else {
        let (mut send, conn) = hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        send.send_request(req).await.map_err(|e| e.to_string())?
    };
    let status = resp.status().as_u16();
    let mut headers: BTreeMap<String, String> = resp
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let collected = resp.into_body().collect().await.map_err(|e| e.to_string())?;
    if let Some(t) = collected.trailers() {
        headers.extend(t.iter().map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        }));
    }
    let bytes = collected.to_bytes();
    let body = if grpc && bytes.len() > 5 {
        mesh_echo::decode_message(&bytes[5..]).unwrap_or_default()
    } else {
        String::from_utf8_lossy(&bytes).into_owned()
    };
    let grpc_status = headers.get("grpc-status").and_then(|s| s.parse().ok());
    Ok(Observation {
        status,
        grpc_status,
        headers,
        body,
        ..Default::default()
    })
}
