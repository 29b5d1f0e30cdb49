//! What a load run does: target, protocol, request, schedule and limits. Built from the command
//! line or a scenario file; checked before any connection is made.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;

/// The wire protocol of a run. TLS comes from the URL scheme (`https://`, `grpcs://`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// HTTP/1.1 with keep-alive.
    H1,
    /// HTTP/2: over TLS with ALPN `h2`, or h2c with prior knowledge.
    H2,
    /// gRPC unary calls over HTTP/2.
    Grpc,
    /// TCP request/response of N-byte messages against an echo server.
    Tcp,
    /// A new TLS connection per request (handshake, one HTTP/1.1 request, close).
    TlsHandshake,
}

impl Proto {
    pub fn parse(s: &str) -> Result<Proto, String> {
        Ok(match s {
            "h1" | "http1" | "http/1.1" => Proto::H1,
            "h2" | "h2c" | "http2" => Proto::H2,
            "grpc" => Proto::Grpc,
            "tcp" => Proto::Tcp,
            "tls-handshake" => Proto::TlsHandshake,
            other => {
                return Err(format!(
                    "unknown protocol `{other}`: use h1, h2, h2c, grpc, tcp or tls-handshake"
                ))
            }
        })
    }
}

/// TLS client settings.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// Server name sent in SNI and verified; default: the URL's host.
    pub sni: Option<String>,
    /// PEM CA bundle; default: the system's roots.
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Accept any server certificate.
    pub insecure: bool,
}

/// The request every connection sends.
#[derive(Debug, Clone)]
pub struct RequestTemplate {
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Host header / :authority.
    pub authority: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub name: String,
    pub url: String,
    pub protocol: Proto,
    pub tls: Option<TlsOptions>,
    /// `host:port` to connect to.
    pub address: String,
    /// Host name for SNI (from the URL) when TlsOptions.sni is unset.
    pub host: String,
    pub request: RequestTemplate,
    pub connections: u32,
    pub streams: u32,
    pub workers: u32,
    /// Requests per second; None: closed loop.
    pub rate: Option<f64>,
    pub duration: Option<Duration>,
    /// Total requests instead of a duration.
    pub requests: Option<u64>,
    pub warmup: Duration,
    pub timeout: Duration,
    /// TCP mode: bytes per message.
    pub message_bytes: usize,
    /// Where to write the interval log.
    pub hlog: Option<PathBuf>,
    /// Show a progress line on a terminal.
    pub progress: bool,
    /// Start the schedule at this wall-clock time (distributed workers share one); None: now.
    pub start_at: Option<std::time::SystemTime>,
}

impl LoadSpec {
    /// Name of the protocol as reports show it.
    pub fn protocol_name(&self) -> &'static str {
        match (self.protocol, self.tls.is_some()) {
            (Proto::H1, false) => "h1",
            (Proto::H1, true) => "h1+tls",
            (Proto::H2, false) => "h2c",
            (Proto::H2, true) => "h2",
            (Proto::Grpc, false) => "grpc",
            (Proto::Grpc, true) => "grpc+tls",
            (Proto::Tcp, false) => "tcp",
            (Proto::Tcp, true) => "tcp+tls",
            (Proto::TlsHandshake, _) => "tls-handshake",
        }
    }

    /// Request slots: connections x streams (streams only multiply on HTTP/2 and gRPC).
    pub fn slots(&self) -> u32 {
        match self.protocol {
            Proto::H2 | Proto::Grpc => self.connections * self.streams.max(1),
            _ => self.connections,
        }
    }

    /// Problems that make the run meaningless, found before it starts.
    pub fn check(&self) -> Result<(), String> {
        if self.connections == 0 {
            return Err("--connections must be at least 1".into());
        }
        if self.workers == 0 {
            return Err("--workers must be at least 1".into());
        }
        if self.duration.is_none() && self.requests.is_none() {
            return Err("give --duration or --requests".into());
        }
        if let Some(r) = self.rate {
            if !(r.is_finite() && r > 0.0) {
                return Err(format!("--rate {r} must be a positive number of requests per second"));
            }
        }
        if self.protocol == Proto::TlsHandshake && self.tls.is_none() {
            return Err("tls-handshake needs an https:// URL".into());
        }
        if self.protocol == Proto::Tcp && self.message_bytes == 0 {
            return Err("tcp mode needs --message-bytes of at least 1".into());
        }
        Ok(())
    }
}

/// Parses `http://h:p/path`, `https://…`, `grpc://…`, `grpcs://…`, `tcp://h:p`, `tls://h:p` into
/// (tls?, host, port, path-and-query).
pub fn parse_url(url: &str) -> Result<(bool, String, u16, String), String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("`{url}` is not a URL: write e.g. http://127.0.0.1:8080/"))?;
    let (tls, default_port) = match scheme {
        "http" | "grpc" | "tcp" => (false, 80),
        "https" | "grpcs" | "tls" => (true, 443),
        other => {
            return Err(format!(
                "unknown scheme `{other}` in `{url}`: use http, https, grpc, grpcs, tcp or tls"
            ))
        }
    };
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = if let Some(h) = hostport.strip_prefix('[') {
        let (h, p) = h.split_once(']').ok_or_else(|| format!("unclosed `[` in `{url}`"))?;
        (h.to_string(), p.strip_prefix(':').unwrap_or(""))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p),
            None => (hostport.to_string(), ""),
        }
    };
    if host.is_empty() {
        return Err(format!("`{url}` has no host"));
    }
    let port = if port.is_empty() {
        default_port
    } else {
        port.parse().map_err(|_| format!("bad port `{port}` in `{url}`"))?
    };
    Ok((tls, host, port, path.to_string()))
}

/// `host:port`, with brackets for IPv6.
pub fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_defaults() {
        assert_eq!(
            parse_url("http://127.0.0.1:8080/a?b=1"),
            Ok((false, "127.0.0.1".into(), 8080, "/a?b=1".into()))
        );
        assert_eq!(
            parse_url("https://example.com"),
            Ok((true, "example.com".into(), 443, "/".into()))
        );
        assert_eq!(parse_url("http://[::1]:9/x"), Ok((false, "::1".into(), 9, "/x".into())));
        assert_eq!(
            parse_url("tcp://127.0.0.1:9000"),
            Ok((false, "127.0.0.1".into(), 9000, "/".into()))
        );
        assert!(parse_url("ftp://x").is_err());
        assert!(parse_url("127.0.0.1:80").is_err());
        assert_eq!(join_host_port("::1", 9), "[::1]:9");
    }
}
