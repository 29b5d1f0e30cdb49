//! The sidecar's transparent outbound listener, Istio's `virtualOutbound` on 15001: iptables in
//! the workload's network namespace redirects its outbound TCP here, and `SO_ORIGINAL_DST` says
//! where each connection was going. As Envoy's outbound listeners decide, a connection goes:
//! 1. to a service that declares the destination address (ServiceEntry `addresses`, a clusterIP)
//!    on that port: HTTP by the port's route table, anything else as TCP to its cluster;
//! 2. else, by its first bytes (HTTP/1.1 and h2c, a TLS ClientHello, or neither within the
//!    detection timeout): HTTP by the port's route table (the Host picks the service), TLS by
//!    its server name (`host:port` of a TLS/HTTPS service), opaque TCP to the port's one TCP
//!    service without addresses;
//! 3. else outside the registry: to the original destination (ALLOW_ANY, PassthroughCluster)
//!    or nowhere (REGISTRY_ONLY, BlackHoleCluster: closed without a connection upstream).

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use mesh_model::api::mesh::OutboundTrafficMode;
use mesh_model::plan::{AddressedPort, Outbound};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::compile::Compiled;
use crate::conns::Registered;
use crate::context::Downstream;
use crate::state::State;
use crate::tls::{Hello, Rewind};

/// How long a connection's first bytes are waited for before it is taken as opaque TCP (a
/// server-first protocol sends nothing): MeshConfig's `protocolDetectionTimeout`, where 0
/// (Istio's default) is no limit: a server-first protocol needs its port declared, as Istio's
/// docs say.
pub fn detection_timeout(c: &Compiled) -> Option<Duration> {
    Some(c.plan.mesh.protocol_detection_timeout.as_std()).filter(|d| !d.is_zero())
}

/// What an HTTP/1.x request line may take before the connection is called opaque.
const MAX_REQUEST_LINE: usize = 8 * 1024;

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The outbound Plan in the form a captured connection is decided by.
#[derive(Debug, Default)]
pub struct Table {
    /// Services by destination address (longest prefix first).
    addressed: Vec<(ipnet::IpNet, AddressedPort)>,
    /// Ports whose connections are worth reading before deciding: a route table or a service
    /// reached by TLS server name.
    sniffed: HashSet<u32>,
}

impl Table {
    pub fn new(outbound: Option<&Outbound>) -> Table {
        let Some(o) = outbound else {
            return Table::default();
        };
        let mut addressed: Vec<_> = o
            .addresses
            .iter()
            .filter_map(|a| Some((parse_net(&a.address)?, a.clone())))
            .collect();
        addressed.sort_by_key(|(net, _)| std::cmp::Reverse(net.prefix_len()));
        // A port's TCP service taken by port alone, and services taken by address, need no
        // look at the bytes; any other TCP service on a port is told by its server name.
        let addressed_keys: HashSet<String> = o.addresses.iter().map(|a| format!("{}:{}", a.host, a.port)).collect();
        let mut sniffed: HashSet<u32> = o.route_tables.keys().copied().collect();
        sniffed.extend(o.tcp.keys().filter(|k| !addressed_keys.contains(*k)).filter_map(|k| {
            let port = k.rsplit_once(':')?.1.parse::<u32>().ok()?;
            (o.tcp_ports.get(&port) != Some(k)).then_some(port)
        }));
        Table { addressed, sniffed }
    }

    /// The service port that owns this destination address, if any.
    pub fn by_address(&self, dst: SocketAddr) -> Option<&AddressedPort> {
        self.addressed
            .iter()
            .find(|(net, a)| a.port == u32::from(dst.port()) && net.contains(&dst.ip()))
            .map(|(_, a)| a)
    }
}

/// `10.0.0.1` or `10.0.0.0/24` (an IPv4-mapped form is not needed: addresses are as written).
fn parse_net(s: &str) -> Option<ipnet::IpNet> {
    s.parse::<ipnet::IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(ipnet::IpNet::from))
}

/// What a connection's first bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sniffed {
    /// An HTTP/1.x request line or the HTTP/2 connection preface.
    Http,
    Tls(Option<String>),
    Opaque,
}

/// Decides from the bytes read so far; None while they could still become either.
pub fn classify(buf: &[u8]) -> Option<Sniffed> {
    let first = *buf.first()?;
    if first == 0x16 {
        return crate::tls::sniff_hello(buf).map(|h: Hello| Sniffed::Tls(h.sni));
    }
    if buf.starts_with(H2_PREFACE) {
        return Some(Sniffed::Http);
    }
    if H2_PREFACE.starts_with(buf) {
        return None;
    }
    request_line(buf)
}

/// `METHOD SP target SP HTTP/1.x`, as Envoy's HTTP inspector reads it: opaque as soon as the
/// bytes cannot begin such a line (a CR or LF before the version is a control character in the
/// method or target, or not the version), or when 8 KiB have come without one.
fn request_line(buf: &[u8]) -> Option<Sniffed> {
    let undecided = (buf.len() >= MAX_REQUEST_LINE).then_some(Sniffed::Opaque);
    let token = |b: &u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b);
    let mut parts = buf.splitn(3, |&b| b == b' ');
    let method = parts.next().unwrap_or_default();
    let target = parts.next();
    let version = parts.next();
    let bad_method = !method.iter().all(token) || (method.is_empty() && target.is_some());
    let bad_target = target.is_some_and(|t| t.iter().any(u8::is_ascii_control) || (t.is_empty() && version.is_some()));
    if bad_method || bad_target {
        return Some(Sniffed::Opaque);
    }
    let Some(version) = version else {
        return undecided;
    };
    const HTTP1: &[u8] = b"HTTP/1.";
    match version.get(HTTP1.len()) {
        Some(minor) if version.starts_with(HTTP1) && minor.is_ascii_digit() => Some(Sniffed::Http),
        None if HTTP1.starts_with(version) => undecided,
        _ => Some(Sniffed::Opaque),
    }
}

/// Reads until `classify` decides, the peer stops sending, or `timeout` passes (then: opaque).
/// Returns the bytes read, to be replayed.
pub async fn sniff<S: tokio::io::AsyncRead + Unpin>(io: &mut S, timeout: Option<Duration>) -> (Sniffed, Vec<u8>) {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    loop {
        let read = match deadline {
            Some(d) => tokio::time::timeout_at(d, io.read(&mut chunk)).await,
            None => Ok(io.read(&mut chunk).await),
        };
        match read {
            Ok(Ok(n)) if n > 0 => {
                buf.extend_from_slice(&chunk[..n]);
                if let Some(s) = classify(&buf) {
                    return (s, buf);
                }
            }
            _ => return (Sniffed::Opaque, buf),
        }
    }
}

/// The connection's original destination (`SO_ORIGINAL_DST`), set by an iptables REDIRECT.
pub fn original_dst(stream: &TcpStream) -> std::io::Result<SocketAddr> {
    let sock = socket2::SockRef::from(stream);
    let addr = match stream.local_addr()? {
        SocketAddr::V4(_) => sock.original_dst_v4()?,
        SocketAddr::V6(_) => sock.original_dst_v6()?,
    };
    addr.as_socket()
        .ok_or_else(|| std::io::Error::other("the original destination is not an IP address"))
}

/// Accepts captured connections until `stop`.
pub async fn serve(listener: TcpListener, state: Arc<State>, stop: watch::Receiver<bool>) {
    crate::server::accept_loop(
        listener,
        state,
        stop,
        |stream, peer, local, state, registered| async move {
            connection(stream, peer, local, &state, registered).await;
        },
    )
    .await;
}

/// Where a captured connection goes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Decision {
    /// HTTP through the port's route table.
    Http(String),
    /// TCP along the route of a service's `host:port`.
    Tcp(String),
    /// Outside the registry: PassthroughCluster or BlackHoleCluster.
    Outside,
}

fn decide(outbound: &Outbound, dst: SocketAddr, sniffed: &Sniffed) -> Decision {
    let port = u32::from(dst.port());
    let table = outbound.route_tables.get(&port);
    match sniffed {
        Sniffed::Http => table.cloned().map_or(Decision::Outside, Decision::Http),
        Sniffed::Tls(sni) => sni
            .as_ref()
            .map(|sni| format!("{sni}:{port}"))
            .filter(|host_port| outbound.tcp.contains_key(host_port))
            .map_or(Decision::Outside, Decision::Tcp),
        Sniffed::Opaque => outbound
            .tcp_ports
            .get(&port)
            .cloned()
            .map_or(Decision::Outside, Decision::Tcp),
    }
}

async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    state: &Arc<State>,
    registered: Registered,
) {
    let dst = match original_dst(&stream) {
        // Not redirected, or sent to the listener itself: forwarding would loop.
        Ok(dst) if dst != local => dst,
        Ok(_) | Err(_) => {
            eprintln!("meshgate: {peer} -> {local}: no original destination (not redirected by iptables); closed");
            return;
        }
    };
    let compiled = state.current.load_full();
    let Some(outbound) = compiled.plan.outbound.as_ref() else {
        return;
    };
    let mut down = Downstream {
        peer,
        local,
        port: u32::from(dst.port()),
        scheme: "http",
        table: None,
        sni: None,
        outbound: true,
        original_dst: Some(dst.to_string()),
        body: state.body.clone(),
        telemetry: state.telemetry.clone(),
    };
    let addressed = compiled.capture.by_address(dst);
    let (decision, prefix) = match addressed {
        Some(a) if !a.http => (Decision::Tcp(format!("{}:{}", a.host, a.port)), Vec::new()),
        _ if addressed.is_none() && !compiled.capture.sniffed.contains(&down.port) => {
            (decide(outbound, dst, &Sniffed::Opaque), Vec::new())
        }
        _ => {
            let (sniffed, prefix) = sniff(&mut stream, detection_timeout(&compiled)).await;
            if let Sniffed::Tls(sni) = &sniffed {
                down.sni.clone_from(sni);
            }
            (decide(outbound, dst, &sniffed), prefix)
        }
    };
    let io = Rewind::new(prefix, stream);
    if let Decision::Http(table) = decision {
        down.table = Some(table);
        crate::server::serve_http(io, down, state.clone(), registered).await;
        return;
    }
    // A TCP session is in flight for its whole life: never closed as idle.
    let handle = registered.handle();
    let _session = handle.request(false);
    match decision {
        Decision::Tcp(host_port) => {
            crate::l4::proxy(io, outbound.tcp.get(&host_port), &compiled, state, &down).await;
        }
        _ => outside_registry(io, dst, &compiled, state, &down).await,
    }
}

/// A connection to no registered service: passed to where it was going (ALLOW_ANY) or closed.
async fn outside_registry<IO>(io: IO, dst: SocketAddr, compiled: &Compiled, state: &State, down: &Downstream)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if compiled.plan.mesh.outbound_traffic_policy == OutboundTrafficMode::RegistryOnly {
        crate::l4::blackhole(state, down);
    } else {
        crate::l4::passthrough(io, &dst.to_string(), compiled, state, down).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_is_told_by_its_request_line_and_h2c_by_its_preface() {
        assert_eq!(classify(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"), Some(Sniffed::Http));
        assert_eq!(classify(b"OPTIONS * HTTP/1.0\r\n"), Some(Sniffed::Http));
        assert_eq!(classify(H2_PREFACE), Some(Sniffed::Http));
        // Not decided while the bytes could still be either.
        for partial in [
            &b"GET"[..],
            b"GET /a",
            b"GET /a HTTP",
            b"GET /a HTTP/1.",
            b"PRI * HTTP/2",
            b"",
        ] {
            assert_eq!(classify(partial), None, "{:?}", String::from_utf8_lossy(partial));
        }
        // Anything else is opaque as soon as it shows.
        for other in [
            &b"\x00\x01binary"[..],
            b"GET /a HTTP/2.0\r\n",
            b"GET /a FTP/1.1\r\n",
            b"GET /a FTP",
            b"GET /a HTTP/1\r\n",
            b"GET /a\r\n",
            b"GET\r\n",
            b"GET /a HTTP/1.x\r\n",
            b"GET  HTTP/1.1\r\n",
            b"GE(T / HTTP/1.1",
            b"GET /\x01 HTTP/1.1",
            b"SSH-2.0-OpenSSH_9.2\r\n",
            b"PRI * HTTP/2.0\r\n\r\nXX",
        ] {
            assert_eq!(
                classify(other),
                Some(Sniffed::Opaque),
                "{:?}",
                String::from_utf8_lossy(other)
            );
        }
        // A request line longer than 8 KiB without a version is not waited for.
        let mut long = b"GET /".to_vec();
        long.resize(MAX_REQUEST_LINE + 10, b'a');
        assert_eq!(classify(&long), Some(Sniffed::Opaque));
        long.truncate(MAX_REQUEST_LINE);
        assert_eq!(classify(&long), Some(Sniffed::Opaque));
        long.truncate(MAX_REQUEST_LINE - 1);
        assert_eq!(classify(&long), None);
        // A long target is still HTTP.
        let mut line = b"GET /".to_vec();
        line.resize(4096, b'a');
        assert_eq!(
            classify(&line),
            None,
            "4 KiB of request line: still waiting for the version"
        );
        line.extend_from_slice(b" HTTP/1.1\r\n");
        assert_eq!(classify(&line), Some(Sniffed::Http));
        let mut method = b"GET".to_vec();
        method.resize(MAX_REQUEST_LINE + 10, b'T');
        assert_eq!(classify(&method), Some(Sniffed::Opaque));
    }

    #[test]
    fn tls_is_told_by_its_client_hello_with_the_server_name() {
        let hello = client_hello("api.example.com");
        assert_eq!(classify(&hello), Some(Sniffed::Tls(Some("api.example.com".into()))));
        assert_eq!(classify(&hello[..hello.len() / 2]), None);
    }

    fn client_hello(name: &str) -> Vec<u8> {
        let roots = rustls::RootCertStore::empty();
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let server_name = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap_or_else(|_| unreachable!());
        let mut conn =
            rustls::ClientConnection::new(Arc::new(config), server_name).unwrap_or_else(|e| unreachable!("{e}"));
        let mut out = Vec::new();
        let _ = conn.write_tls(&mut out);
        out
    }

    #[tokio::test]
    async fn sniffing_gives_up_on_a_silent_peer_and_keeps_every_byte_read() {
        let (mut client, mut server) = tokio::io::duplex(64);
        let got = sniff(&mut server, Some(Duration::from_millis(20))).await;
        assert_eq!(got, (Sniffed::Opaque, Vec::new()));
        use tokio::io::AsyncWriteExt;
        client.write_all(b"GET /x HT").await.unwrap_or_default();
        // Without a limit (Istio's default), a slow client is waited for.
        let got = tokio::spawn(async move { sniff(&mut server, None).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        client.write_all(b"TP/1.1\r\n").await.unwrap_or_default();
        assert_eq!(got.await.ok(), Some((Sniffed::Http, b"GET /x HTTP/1.1\r\n".to_vec())));
        // A peer that closes before deciding is opaque, its bytes kept.
        let (mut client, mut server) = tokio::io::duplex(64);
        client.write_all(b"GE").await.unwrap_or_default();
        drop(client);
        assert_eq!(
            sniff(&mut server, Some(Duration::from_secs(5))).await,
            (Sniffed::Opaque, b"GE".to_vec())
        );
    }

    #[test]
    fn the_detection_timeout_is_the_mesh_configs_and_zero_is_none() {
        let compiled = |mesh: &str| {
            let dir = std::env::temp_dir().join(format!("meshgate-detect-{}-{}", std::process::id(), mesh.len()));
            let config = dir.join("config");
            let _ = std::fs::create_dir_all(&config);
            let file = dir.join("mesh.yaml");
            let _ = std::fs::write(&file, mesh);
            let opts = mesh_model::plan::PlanOptions::default();
            let (plan, _) = mesh_model::plan::load(&[config.as_path()], Some(file.as_path()), &opts).ok()?;
            let telemetry = crate::telemetry::Telemetry::new(crate::telemetry::Identity::from_labels(
                &std::collections::BTreeMap::new(),
                None,
            ));
            crate::compile::compile(plan, 1, None, &telemetry).ok()
        };
        let zero = compiled("outboundTrafficPolicy: {mode: ALLOW_ANY}\n");
        assert_eq!(zero.as_ref().map(detection_timeout), Some(None));
        let set = compiled("protocolDetectionTimeout: 250ms\n");
        assert_eq!(
            set.as_ref().map(detection_timeout),
            Some(Some(Duration::from_millis(250)))
        );
    }

    fn outbound() -> Outbound {
        let addressed = |address: &str, port, http, host: &str| AddressedPort {
            address: address.into(),
            port,
            host: host.into(),
            http,
        };
        let route = mesh_model::plan::L4Route::to;
        Outbound {
            route_tables: [(80, "outbound.80".to_string())].into(),
            tcp: [
                (
                    "secure.example.com:443".to_string(),
                    route("outbound|443||secure.example.com"),
                ),
                (
                    "narrow.example.com:5432".to_string(),
                    route("outbound|5432||narrow.example.com"),
                ),
                (
                    "cache.example.com:6379".to_string(),
                    route("outbound|6379||cache.example.com"),
                ),
            ]
            .into(),
            addresses: vec![
                addressed("10.9.0.0/16", 5432, false, "wide.example.com"),
                addressed("10.9.1.0/24", 5432, false, "narrow.example.com"),
                addressed("10.9.1.7", 8080, true, "web.example.com"),
                addressed("fd00::/64", 5432, false, "six.example.com"),
                addressed("not an address", 5432, false, "bad.example.com"),
            ],
            tcp_ports: [(6379, "cache.example.com:6379".to_string())].into(),
        }
    }

    #[test]
    fn the_destination_address_picks_the_most_specific_service() {
        let table = Table::new(Some(&outbound()));
        let host = |dst: &str| {
            table
                .by_address(dst.parse().unwrap_or_else(|_| unreachable!()))
                .map(|a| a.host.as_str())
        };
        assert_eq!(host("10.9.1.3:5432"), Some("narrow.example.com"));
        assert_eq!(host("10.9.2.3:5432"), Some("wide.example.com"));
        assert_eq!(host("10.9.1.7:8080"), Some("web.example.com"));
        assert_eq!(host("[fd00::5]:5432"), Some("six.example.com"));
        // The port matters; so does the address.
        assert_eq!(host("10.9.1.3:5433"), None);
        assert_eq!(host("10.9.1.8:8080"), None);
        assert_eq!(host("10.10.0.1:5432"), None);
        // Ports worth sniffing: a route table's, a TLS service's; not the port of a TCP service
        // taken by port alone, nor one taken by address.
        let mut sniffed: Vec<u32> = table.sniffed.iter().copied().collect();
        sniffed.sort_unstable();
        assert_eq!(sniffed, [80, 443]);
        assert!(Table::new(None)
            .by_address("10.9.1.3:5432".parse().unwrap_or_else(|_| unreachable!()))
            .is_none());
    }

    #[test]
    fn first_bytes_pick_the_route_table_the_server_name_or_the_port() {
        let o = outbound();
        let at = |port: u16| SocketAddr::from(([10, 1, 0, 4], port));
        assert_eq!(decide(&o, at(80), &Sniffed::Http), Decision::Http("outbound.80".into()));
        assert_eq!(decide(&o, at(81), &Sniffed::Http), Decision::Outside);
        let tls = |sni: &str| Sniffed::Tls(Some(sni.into()));
        assert_eq!(
            decide(&o, at(443), &tls("secure.example.com")),
            Decision::Tcp("secure.example.com:443".into())
        );
        assert_eq!(decide(&o, at(8443), &tls("secure.example.com")), Decision::Outside);
        assert_eq!(decide(&o, at(443), &tls("other.example.com")), Decision::Outside);
        assert_eq!(decide(&o, at(443), &Sniffed::Tls(None)), Decision::Outside);
        assert_eq!(
            decide(&o, at(6379), &Sniffed::Opaque),
            Decision::Tcp("cache.example.com:6379".into())
        );
        assert_eq!(decide(&o, at(6380), &Sniffed::Opaque), Decision::Outside);
    }
}
