//! Upstream connections: one pooled client per cluster (HTTP/1.1, or h2 with prior knowledge for
//! HTTP2/GRPC ports). Which endpoint a request goes to is `balance`'s.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::BodyExt;
use hyper_util::rt::TokioExecutor;
use mesh_model::plan::Cluster;
use tokio::net::TcpStream;

use crate::context::Body;
use crate::counted::Counted;
use crate::telemetry::Connections;

type Pooled<C> = hyper_util::client::legacy::Client<C, crate::replay::AttemptBody>;

/// Pooled connections for one cluster. HTTP/1.1 shares one pool keyed by endpoint (the Host
/// header carries the authority). HTTP/2 carries the authority in the URI (`:authority`), so each
/// endpoint gets its own h2 connection (`h2pool`), or with TLS its own client whose connector
/// always dials that endpoint.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // One per cluster, built on reload: size does not matter.
pub enum Client {
    H1(crate::h1pool::H1Pool),
    /// One h2 connection per endpoint.
    H2(Vec<crate::h2pool::H2Pool>),
    /// TLS origination: per endpoint, the server name from the request's authority (or `sni`).
    Tls(Vec<Pooled<Counted<crate::origination::TlsConnector>>>),
    /// An original-destination cluster (resolution NONE) over h2 or TLS: a client per
    /// destination, made when first used, as Envoy's ORIGINAL_DST cluster makes a host per
    /// destination address.
    Destinations(Destinations),
    /// The cluster's TLS settings cannot work; every request fails with this reason (UF).
    Broken(String),
}

impl Client {
    /// `original_dst`: the cluster sends each request to its original destination (resolution
    /// NONE without endpoints). Every connection made is counted in `connections`.
    pub fn new(
        c: &Cluster,
        origination: &Result<Option<crate::origination::Origination>, String>,
        original_dst: bool,
        resolver: &crate::dns::Resolver,
        connections: &Connections,
    ) -> Client {
        let timeout = c.policy.connect_timeout.as_std();
        let per_connection = c
            .policy
            .connection_pool
            .as_ref()
            .and_then(|p| p.http.as_ref())
            .and_then(|h| h.max_requests_per_connection);
        // connectionPool idleTimeout (http, else tcp): default 1h, as Istio's.
        let idle = pool_idle(c);
        // maxRequestsPerConnection: 1 turns keep-alive off.
        let keep_alive = per_connection != Some(1);
        let builder = |h2: bool| {
            let mut b = hyper_util::client::legacy::Client::builder(TokioExecutor::new());
            b.pool_idle_timeout(idle).http2_only(h2);
            if !keep_alive {
                b.pool_max_idle_per_host(0);
            }
            b
        };
        let tls = origination.as_ref().ok().cloned().flatten();
        if original_dst && (tls.is_some() || c.protocol.is_http2()) {
            return Client::Destinations(Destinations {
                builder: builder(c.protocol.is_http2()),
                idle,
                max_requests: per_connection.and_then(|n| u32::try_from(n).ok()),
                timeout,
                resolver: resolver.clone(),
                origination: tls,
                connections: connections.clone(),
                clients: Arc::default(),
            });
        }
        match origination {
            Err(e) => return Client::Broken(e.clone()),
            Ok(Some(o)) => {
                let h2 = c.protocol.is_http2();
                let clients = c
                    .endpoints
                    .iter()
                    .map(|e| {
                        let connector = crate::origination::TlsConnector {
                            to: Dial::new(join(&e.address, e.port), timeout, resolver),
                            origination: o.clone(),
                        };
                        builder(h2).build(Counted::new(connector, connections))
                    })
                    .collect();
                return Client::Tls(clients);
            }
            Ok(None) => {}
        }
        if c.protocol.is_http2() {
            let clients = c
                .endpoints
                .iter()
                .map(|e| {
                    let to = Dial::new(join(&e.address, e.port), timeout, resolver);
                    let max = per_connection.and_then(|n| u32::try_from(n).ok());
                    crate::h2pool::H2Pool::new(to, idle, max, connections)
                })
                .collect();
            Client::H2(clients)
        } else {
            Client::H1(crate::h1pool::H1Pool::new(
                idle,
                keep_alive,
                timeout,
                resolver,
                connections,
            ))
        }
    }

    pub fn is_h2(&self) -> bool {
        matches!(self, Client::H2(_))
    }

    /// Sends `out` to endpoint `endpoint`. HTTP/1.1 dials `address` and carries `authority` as
    /// Host; h2 and TLS carry `authority` in the URI (`:authority`, the TLS server name) while
    /// their connector dials the endpoint, or for an original-destination cluster `address`.
    /// A whole HTTP/1.1 request is written from `out`'s borrowed parts; the other paths take a
    /// request of their own (`Outbound::request`).
    pub async fn send(
        &self,
        endpoint: usize,
        address: impl FnOnce() -> String,
        out: Outbound<'_>,
    ) -> Result<http::Response<Body>, SendError> {
        if let Client::H1(pool) = self {
            let wire = crate::h1pool::Outgoing::forwarded(out.method, out.path, out.authority, out.headers, &out.body);
            if let Some(wire) = wire {
                let sent = pool.send_wire(address(), &wire).await;
                return sent
                    .map(|r| r.map(|b| b.map_err(Into::into).boxed_unsync()))
                    .map_err(SendError::from);
            }
        }
        // Boxed: the future of the common path above is then a fraction of this one's size, and
        // every layer of the request path that awaits it moves fewer bytes.
        Box::pin(self.send_request(endpoint, address, out)).await
    }

    /// `send` by hyper's and h2's clients, on a request of its own.
    async fn send_request(
        &self,
        endpoint: usize,
        address: impl FnOnce() -> String,
        out: Outbound<'_>,
    ) -> Result<http::Response<Body>, SendError> {
        let (authority, path) = (out.authority, out.path);
        let mut req = out.request();
        // Made from its parts: no string formatted and parsed again per request.
        let uri = |scheme: http::uri::Scheme, host: &str| {
            let bad =
                |e: &dyn std::fmt::Display| SendError::Uri(format!("bad upstream URI {scheme}://{host}{path}: {e}"));
            let mut parts = http::uri::Parts::default();
            parts.authority = Some(http::uri::Authority::try_from(host).map_err(|e| bad(&e))?);
            parts.path_and_query = Some(http::uri::PathAndQuery::try_from(path).map_err(|e| bad(&e))?);
            parts.scheme = Some(scheme.clone());
            http::Uri::from_parts(parts).map_err(|e| bad(&e))
        };
        let sent = match self {
            Client::Broken(reason) => return Err(SendError::Broken(reason.clone())),
            Client::H1(pool) => {
                if let Ok(v) = http::HeaderValue::from_str(authority) {
                    req.headers_mut().insert(http::header::HOST, v);
                }
                *req.uri_mut() = path
                    .parse()
                    .map_err(|e| SendError::Uri(format!("bad upstream path {path}: {e}")))?;
                let sent = pool.send(address(), req).await;
                return sent
                    .map(|r| r.map(|b| b.map_err(Into::into).boxed_unsync()))
                    .map_err(SendError::from);
            }
            Client::H2(pools) => {
                let pool = pools.get(endpoint).ok_or(SendError::NoEndpoint)?;
                *req.uri_mut() = uri(http::uri::Scheme::HTTP, authority)?;
                let sent = pool.send(req).await;
                return sent.map(|r| r.map(|b| b.map_err(Into::into).boxed_unsync()));
            }
            Client::Tls(clients) => {
                let c = clients.get(endpoint).ok_or(SendError::NoEndpoint)?;
                *req.uri_mut() = uri(http::uri::Scheme::HTTPS, authority)?;
                c.request(req).await
            }
            Client::Destinations(d) => {
                *req.uri_mut() = uri(d.scheme(), authority)?;
                match d.dialer(&address()) {
                    Dialer::H2(pool) => {
                        let sent = pool.send(req).await;
                        return sent.map(|r| r.map(|b| b.map_err(Into::into).boxed_unsync()));
                    }
                    Dialer::Tls(c) => c.request(req).await,
                }
            }
        };
        match sent {
            Ok(resp) => Ok(resp.map(|b| b.map_err(Into::into).boxed_unsync())),
            Err(e) if e.is_connect() => Err(SendError::Connect(crate::forward::error_chain(&e))),
            Err(e) => Err(SendError::Reset(crate::forward::error_chain(&e))),
        }
    }
}

/// What one attempt sends upstream, borrowed from the routed request so the common path copies
/// nothing but bytes onto the wire. `headers` are the request's after the route's operations,
/// hop-by-hop headers and the client's Host still among them: no path sends those on.
#[derive(Debug)]
pub struct Outbound<'a> {
    pub method: &'a http::Method,
    /// Host, `:authority`, or the TLS server name.
    pub authority: &'a str,
    /// The request target after any rewrite.
    pub path: &'a str,
    pub headers: &'a http::HeaderMap,
    pub body: crate::replay::AttemptBody,
}

impl Outbound<'_> {
    /// A request of its own (no URI yet) for hyper's and h2's clients: the headers copied
    /// without the hop-by-hop ones.
    fn request(self) -> http::Request<crate::replay::AttemptBody> {
        let mut headers = self.headers.clone();
        for hop in crate::forward::carried(self.headers, &crate::names::HOP_BY_HOP) {
            headers.remove(hop);
        }
        let mut req = http::Request::new(self.body);
        *req.method_mut() = self.method.clone();
        *req.headers_mut() = headers;
        req
    }
}

/// Why `Client::send` sent nothing, or what went wrong on the way.
#[derive(Debug)]
pub enum SendError {
    /// The cluster's TLS settings cannot work.
    Broken(String),
    /// No client for the endpoint.
    NoEndpoint,
    /// The URI cannot be made from the authority and path.
    Uri(String),
    /// No connection could be made to the endpoint (why).
    Connect(String),
    /// The connection failed once made (why).
    Reset(String),
}

impl From<crate::h1pool::H1Error> for SendError {
    fn from(e: crate::h1pool::H1Error) -> SendError {
        match e {
            crate::h1pool::H1Error::Connect(why) => SendError::Connect(why),
            crate::h1pool::H1Error::Http(e) => SendError::Reset(crate::forward::error_chain(&e)),
            crate::h1pool::H1Error::Wire(why) => SendError::Reset(why),
        }
    }
}

/// At most this many destinations keep a client in an original-destination cluster; past it
/// the one used longest ago goes (its connections with it).
pub const MAX_DESTINATIONS: usize = 1024;

/// The clients of an original-destination cluster, by destination (`host:port`).
#[derive(Debug, Clone)]
pub struct Destinations {
    /// For TLS origination.
    builder: hyper_util::client::legacy::Builder,
    /// For h2 without TLS: the cluster's idle timeout and requests per connection.
    idle: Option<Duration>,
    max_requests: Option<u32>,
    timeout: Duration,
    resolver: crate::dns::Resolver,
    origination: Option<crate::origination::Origination>,
    connections: Connections,
    clients: Arc<Mutex<Used>>,
}

/// Clients by destination, each with when it was last used (a count of uses, not a clock).
#[derive(Debug, Default)]
pub struct Used {
    tick: u64,
    clients: HashMap<String, (u64, Dialer)>,
}

/// One destination's pooled client.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // Made once per destination and kept in a map: size does not matter.
pub enum Dialer {
    H2(crate::h2pool::H2Pool),
    Tls(Pooled<Counted<crate::origination::TlsConnector>>),
}

impl Destinations {
    /// The scheme of the URI a request carries (its authority is the request's; the dialer
    /// connects to the destination).
    pub fn scheme(&self) -> http::uri::Scheme {
        match self.origination {
            Some(_) => http::uri::Scheme::HTTPS,
            None => http::uri::Scheme::HTTP,
        }
    }

    /// The client for `destination`, made on first use.
    pub fn dialer(&self, destination: &str) -> Dialer {
        let mut used = self.clients.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        used.tick += 1;
        let now = used.tick;
        let clients = &mut used.clients;
        if let Some((last, d)) = clients.get_mut(destination) {
            *last = now;
            return d.clone();
        }
        if clients.len() >= MAX_DESTINATIONS {
            let oldest = clients
                .iter()
                .min_by_key(|(_, (last, _))| *last)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                clients.remove(&k);
            }
        }
        let to = Dial::new(destination.to_string(), self.timeout, &self.resolver);
        let dialer = match &self.origination {
            Some(o) => {
                let connector = crate::origination::TlsConnector {
                    to,
                    origination: o.clone(),
                };
                Dialer::Tls(self.builder.build(Counted::new(connector, &self.connections)))
            }
            None => Dialer::H2(crate::h2pool::H2Pool::new(
                to,
                self.idle,
                self.max_requests,
                &self.connections,
            )),
        };
        clients.insert(destination.to_string(), (now, dialer.clone()));
        dialer
    }
}

fn pool_idle(c: &Cluster) -> Option<Duration> {
    let pool = c.policy.connection_pool.as_ref();
    let idle = pool
        .and_then(|p| p.http.as_ref())
        .and_then(|h| h.idle_timeout)
        .or_else(|| pool.and_then(|p| p.tcp.as_ref()).and_then(|t| t.idle_timeout))
        .map_or(Duration::from_secs(3600), |d| d.as_std());
    // `0s` disables the idle timeout.
    (!idle.is_zero()).then_some(idle)
}

/// `host:port`, bracketing IPv6.
pub fn join(address: &str, port: u32) -> String {
    if address.contains(':') && !address.starts_with('[') {
        format!("[{address}]:{port}")
    } else {
        format!("{address}:{port}")
    }
}

/// Where a connector dials: one `host:port`, its name resolved by the cluster's resolver.
#[derive(Debug, Clone)]
pub struct Dial {
    pub addr: String,
    pub timeout: Duration,
    pub resolver: crate::dns::Resolver,
}

impl Dial {
    pub fn new(addr: String, timeout: Duration, resolver: &crate::dns::Resolver) -> Dial {
        Dial {
            addr,
            timeout,
            resolver: resolver.clone(),
        }
    }

    pub async fn connect(&self) -> std::io::Result<TcpStream> {
        self.resolver.connect(&self.addr, self.timeout).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A resolver that refreshes every second and takes every address.
    fn resolver() -> crate::dns::Resolver {
        crate::dns::Resolver::new(crate::dns::Cache::new(Duration::from_secs(1)), crate::dns::Take::Every)
    }

    fn destinations() -> Destinations {
        Destinations {
            builder: hyper_util::client::legacy::Client::builder(TokioExecutor::new()),
            idle: None,
            max_requests: None,
            timeout: Duration::from_secs(1),
            resolver: resolver(),
            origination: None,
            connections: Connections::default(),
            clients: Arc::default(),
        }
    }

    #[test]
    fn a_destination_keeps_its_client_and_the_longest_unused_goes_first() {
        let d = destinations();
        let len = |d: &Destinations| d.clients.lock().map_or(0, |u| u.clients.len());
        assert_eq!(len(&d), 0);
        assert_eq!(d.scheme(), http::uri::Scheme::HTTP);
        for i in 0..MAX_DESTINATIONS {
            d.dialer(&format!("10.0.0.1:{i}"));
        }
        assert_eq!(len(&d), MAX_DESTINATIONS);
        // Used again: the same entry, no new one.
        d.dialer("10.0.0.1:0");
        assert_eq!(len(&d), MAX_DESTINATIONS);
        // One more destination: the one used longest ago (port 1; 0 was just used) makes room.
        d.dialer("10.0.0.2:80");
        assert_eq!(len(&d), MAX_DESTINATIONS);
        let kept = |k: &str| d.clients.lock().map(|u| u.clients.contains_key(k)).unwrap_or(false);
        assert!(kept("10.0.0.1:0") && kept("10.0.0.2:80") && kept("10.0.0.1:2"));
        assert!(!kept("10.0.0.1:1"));
        assert!(matches!(d.dialer("10.0.0.2:80"), Dialer::H2(_)));
    }

    #[test]
    fn an_address_joins_its_port_with_ipv6_bracketed_once() {
        assert_eq!(join("10.0.0.1", 80), "10.0.0.1:80");
        assert_eq!(join("web.example.com", 8080), "web.example.com:8080");
        assert_eq!(join("::1", 443), "[::1]:443");
        assert_eq!(join("[fd00::2]", 9000), "[fd00::2]:9000");
    }

    #[test]
    fn the_idle_timeout_is_http_then_tcp_then_istios_hour_and_zero_turns_it_off() {
        let idle = |policy: &str| pool_idle(&crate::breaker::tests::cluster("HTTP", policy));
        let secs = |n: u64| Some(Duration::from_secs(n));
        assert_eq!(idle("{}"), secs(3600));
        assert_eq!(idle("{connectionPool: {http: {idleTimeout: 5s}}}"), secs(5));
        assert_eq!(idle("{connectionPool: {tcp: {idleTimeout: 7s}}}"), secs(7));
        assert_eq!(
            idle("{connectionPool: {http: {idleTimeout: 5s}, tcp: {idleTimeout: 7s}}}"),
            secs(5)
        );
        assert_eq!(idle("{connectionPool: {http: {idleTimeout: 0s}}}"), None);
    }

    #[test]
    fn http2_and_grpc_clusters_get_h2_connections() {
        let resolver = resolver();
        let client = |protocol: &str| {
            let c = crate::breaker::tests::cluster(protocol, "{}");
            Client::new(&c, &Ok(None), false, &resolver, &Connections::default())
        };
        assert!(client("HTTP2").is_h2());
        assert!(client("GRPC").is_h2());
        assert!(!client("HTTP").is_h2());
    }

    /// A client originating TLS (SIMPLE, any certificate accepted) to one endpoint, 127.0.0.1:`port`.
    fn tls_client(port: u16) -> Client {
        let resolver = resolver();
        let c = crate::breaker::tests::service_cluster(
            "HTTP",
            "STATIC",
            &format!("[{{address: 127.0.0.1, ports: {{web: {port}}}}}]"),
            "{tls: {mode: SIMPLE, insecureSkipVerify: true}}",
        );
        let origination = crate::origination::for_cluster(&c, None);
        let client = Client::new(&c, &origination, false, &resolver, &Connections::default());
        assert!(matches!(client, Client::Tls(_)), "{client:?}");
        client
    }

    async fn send(client: &Client) -> Result<http::Response<Body>, SendError> {
        let out = Outbound {
            method: &http::Method::GET,
            authority: "web.example.com",
            path: "/",
            headers: &http::HeaderMap::new(),
            body: crate::replay::RequestBody::empty().attempt(),
        };
        client.send(0, String::new, out).await
    }

    /// Envoy's flags tell the two apart: no connection is UF (retried on `connect-failure`), a
    /// connection that ends without a response is UC (retried on `reset`).
    #[tokio::test]
    async fn a_tls_upstream_refusing_the_connection_is_a_connect_failure_and_one_closing_it_a_reset() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("bind: {e}"));
        let refused = send(&tls_client(closed)).await;
        assert!(matches!(refused, Err(SendError::Connect(_))), "{refused:?}");

        // A server that completes the handshake, reads the request and closes without answering.
        let cert = rcgen::generate_simple_self_signed(vec!["web.example.com".to_string()])
            .unwrap_or_else(|e| panic!("cert: {e}"));
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .and_then(|b| {
                b.with_no_client_auth()
                    .with_single_cert(vec![cert.cert.der().clone()], key)
            })
            .unwrap_or_else(|e| panic!("server config: {e}"));
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("bind: {e}"));
        let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
        tokio::spawn(async move {
            use tokio::io::AsyncReadExt as _;
            while let Ok((tcp, _)) = listener.accept().await {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let mut buf = [0u8; 1024];
                    let _ = tls.read(&mut buf).await;
                }
            }
        });
        let reset = send(&tls_client(port)).await;
        assert!(matches!(reset, Err(SendError::Reset(_))), "{reset:?}");
    }
}
