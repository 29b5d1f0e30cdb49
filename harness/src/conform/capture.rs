//! Captured runs of a sidecar suite (`capture: true`): hosts of the run's own, as Istio's egress
//! looks from a pod. The app's host has `istio-iptables`' outbound rules and runs the sidecar
//! (as the proxy's group, so its own connections leave); each extra gateway has a host; the
//! workloads share an "external" host that counts the SYNs reaching it; a "client" host sends
//! what is addressed to a gateway's port. A case sent to port 15001 is sent by the app straight
//! to its authority, resolved as the app's DNS would: the sidecar only sees it through capture.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use mesh_netns::{Host, Net, NOWHERE};

use super::suite::{Expect, Request, Suite};
use super::workloads::instance_name;
use crate::targets::Target;

/// The sidecar's outbound port: what a case sends there, the app sends to its destination.
pub const OUTBOUND_PORT: u32 = 15001;

/// Why `suite` cannot run captured on `target` here, if it cannot (it then runs with an explicit
/// proxy). `wanted`: the run allows capture (no `--no-capture`).
pub fn refused(wanted: bool, target: &dyn Target) -> Option<String> {
    if !wanted {
        return Some("--no-capture".into());
    }
    target.lacks_capture().or_else(mesh_netns::unavailable)
}

/// The hosts of one captured suite run; the namespaces go when this is dropped.
#[derive(Debug)]
pub struct Hosts {
    pub app: Host,
    pub client: Host,
    pub workloads: Host,
    pub gateways: BTreeMap<String, Host>,
    pub directory: Directory,
    // Last: dropped after the hosts' handles.
    _net: Net,
}

impl Hosts {
    /// Makes the hosts of `suite`, their hosts files, the app's capture and the SYN counter.
    pub fn make(suite: &Suite) -> Result<Hosts, String> {
        let mut net = Net::new()?;
        let app = net.host("app")?;
        let client = net.host("client")?;
        let workloads = net.host("external")?;
        let mut gateways = BTreeMap::new();
        for g in &suite.gateways {
            gateways.insert(g.name.clone(), net.host(&g.name)?);
        }
        let at: BTreeMap<String, Ipv4Addr> = gateways.iter().map(|(n, h)| (n.clone(), h.ip)).collect();
        let directory = Directory::of(suite, app.ip, workloads.ip, &at);
        let table: Vec<(&str, Ipv4Addr)> = directory.names.iter().map(|(n, a)| (n.as_str(), *a)).collect();
        for h in [&app, &client, &workloads].into_iter().chain(gateways.values()) {
            h.resolve(&table)?;
        }
        app.capture_outbound()?;
        workloads.count_syns()?;
        Ok(Hosts {
            app,
            client,
            workloads,
            gateways,
            directory,
            _net: net,
        })
    }
}

/// Who is where in a captured run: what the hosts' DNS answers, and the hosts a case's `peer`
/// may name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Directory {
    names: BTreeMap<String, Ipv4Addr>,
    peers: BTreeMap<String, Ipv4Addr>,
}

impl Directory {
    /// `suite`'s names: every registered workload host and named endpoint address at the
    /// workloads' host, every extra gateway's service at its host (`gateways`: name -> address).
    pub fn of(suite: &Suite, app: Ipv4Addr, workloads: Ipv4Addr, gateways: &BTreeMap<String, Ipv4Addr>) -> Directory {
        let mut names = BTreeMap::new();
        for w in &suite.workloads {
            if w.registered != Some(false) {
                names.insert(w.service_host(), workloads);
            }
            // A named endpoint address is each instance's own name here (`localhost` would be
            // the sidecar's own host).
            if w.address.is_some() {
                for v in &w.versions {
                    for r in 0..w.replicas.unwrap_or(1).max(1) {
                        names.insert(instance_name(w, v, r), workloads);
                    }
                }
            }
        }
        for g in &suite.gateways {
            if let (Some(service), Some(ip)) = (&g.service, gateways.get(&g.name)) {
                names.insert(service.clone(), *ip);
            }
        }
        let mut peers = gateways.clone();
        peers.insert("app".into(), app);
        Directory { names, peers }
    }

    /// The address the app's DNS gives `name`: a registered host's, or for any other name an
    /// address on the hosts' network that nothing has.
    pub fn resolve(&self, name: &str) -> Ipv4Addr {
        self.names.get(name).copied().unwrap_or(NOWHERE)
    }

    /// Where the app connects for `r` (its authority, resolved; port 80, or 443 with TLS), and
    /// the request as an app unaware of any proxy sends it.
    pub fn captured(&self, r: &Request) -> Result<(SocketAddr, Request), String> {
        let authority = r
            .authority
            .as_deref()
            .ok_or("a case sent through the sidecar needs an authority")?;
        let default_port = if r.tls.is_some() { 443 } else { 80 };
        let (host, port) = split_authority(authority, default_port)?;
        let ip = match host.parse::<IpAddr>() {
            Ok(ip) => ip,
            Err(_) => self.resolve(host).into(),
        };
        let request = Request {
            proxy: None,
            ..r.clone()
        };
        Ok((SocketAddr::new(ip, port), request))
    }

    /// A case's expectation in a captured run: `captured` where the case has one, and its `peer`
    /// as the address the workload saw (its echo's `IP`).
    pub fn expectation(&self, expect: &Expect, captured: Option<&Expect>) -> Result<Expect, String> {
        let mut e = captured.unwrap_or(expect).clone();
        if let Some(p) = &e.peer {
            let ip = self.peers.get(p).ok_or_else(|| {
                let names: Vec<&str> = self.peers.keys().map(String::as_str).collect();
                format!("peer `{p}` is not a host of this run ({})", names.join(", "))
            })?;
            e.saw.insert("IP".into(), ip.to_string());
        }
        Ok(e)
    }
}

/// `host[:port]` (an IPv6 address in brackets) into its host and port.
fn split_authority(authority: &str, default_port: u16) -> Result<(&str, u16), String> {
    let bad = || format!("authority `{authority}`: the port is not a number");
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("authority `{authority}`: no closing `]`"))?;
        return match after.strip_prefix(':') {
            Some(p) => Ok((host, p.parse().map_err(|_| bad())?)),
            None => Ok((host, default_port)),
        };
    }
    match authority.rsplit_once(':') {
        Some((host, p)) => Ok((host, p.parse().map_err(|_| bad())?)),
        None => Ok((authority, default_port)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUITE: &str = "name: s\nrole: sidecar\ncapture: true\nports: [15001]\n\
        gateways: [{name: egress, ports: [80], service: gw.istio-system.svc.cluster.local}, {name: quiet, ports: [81]}]\n\
        workloads:\n\
        - {service: httpbin, versions: [v1, v2], port: 8000}\n\
        - {service: api, host: api.example.com, versions: [v1], port: 80}\n\
        - {service: named, host: named.example.com, resolution: DNS, address: localhost, versions: [v1], replicas: 2, port: 80}\n\
        - {service: rogue, versions: [v1], port: 80, registered: false}\n";

    fn directory() -> Directory {
        let suite = crate::conform::suite::parse("s.yaml", SUITE).unwrap_or_default();
        let gateways = [("egress".to_string(), Ipv4Addr::new(10, 0, 0, 5))].into();
        Directory::of(
            &suite,
            Ipv4Addr::new(10, 0, 0, 2),
            Ipv4Addr::new(10, 0, 0, 4),
            &gateways,
        )
    }

    #[test]
    fn registered_hosts_resolve_to_where_they_are_and_the_rest_to_nowhere() {
        let d = directory();
        let workloads = Ipv4Addr::new(10, 0, 0, 4);
        assert_eq!(d.resolve("httpbin.default.svc.cluster.local"), workloads);
        assert_eq!(d.resolve("api.example.com"), workloads);
        assert_eq!(d.resolve("named.example.com"), workloads);
        // Each instance of a workload with a named endpoint address has a name of its own.
        assert_eq!(d.resolve("named-v1-0"), workloads);
        assert_eq!(d.resolve("named-v1-1"), workloads);
        assert_eq!(d.resolve("localhost"), NOWHERE);
        // An unregistered workload has no name; a gateway's service is at the gateway.
        assert_eq!(d.resolve("rogue.default.svc.cluster.local"), NOWHERE);
        assert_eq!(
            d.resolve("gw.istio-system.svc.cluster.local"),
            Ipv4Addr::new(10, 0, 0, 5)
        );
        assert_eq!(d.resolve("unknown.example.org"), NOWHERE);
        assert_eq!(d.names.len(), 6, "{:?}", d.names);
    }

    #[test]
    fn a_captured_request_goes_to_its_authority_without_a_proxy() {
        let d = directory();
        let r = |authority: &str, tls: bool| Request {
            authority: Some(authority.into()),
            proxy: Some(true),
            port: OUTBOUND_PORT,
            tls: tls.then(Default::default),
            ..Default::default()
        };
        let nowhere = || (SocketAddr::from(([0, 0, 0, 0], 0)), Request::default());
        let (to, sent) = d.captured(&r("api.example.com", false)).unwrap_or_else(|_| nowhere());
        assert_eq!(to, SocketAddr::from(([10, 0, 0, 4], 80)));
        assert_eq!(sent.proxy, None);
        assert_eq!(sent.authority.as_deref(), Some("api.example.com"));
        assert_eq!(sent.port, OUTBOUND_PORT);
        let (to, _) = d.captured(&r("api.example.com", true)).unwrap_or_else(|_| nowhere());
        assert_eq!(to, SocketAddr::from(([10, 0, 0, 4], 443)));
        let (to, _) = d
            .captured(&r("unknown.example.org:8080", false))
            .unwrap_or_else(|_| nowhere());
        assert_eq!(to, SocketAddr::new(NOWHERE.into(), 8080));
        let (to, _) = d.captured(&r("127.0.0.1:9000", false)).unwrap_or_else(|_| nowhere());
        assert_eq!(to, SocketAddr::from(([127, 0, 0, 1], 9000)));
        let none = Request::default();
        assert!(d.captured(&none).unwrap_err().contains("needs an authority"));
        assert!(d.captured(&r("api.example.com:x", false)).is_err());
    }

    #[test]
    fn captured_expectations_replace_the_case_and_name_the_peer_by_address() {
        let d = directory();
        let expect = Expect {
            status: Some(502),
            peer: Some("egress".into()),
            ..Default::default()
        };
        let e = d.expectation(&expect, None).unwrap_or_default();
        assert_eq!(e.status, Some(502));
        assert_eq!(e.saw.get("IP").map(String::as_str), Some("10.0.0.5"));
        let app = Expect {
            peer: Some("app".into()),
            ..Default::default()
        };
        let e = d.expectation(&expect, Some(&app)).unwrap_or_default();
        assert_eq!(e.status, None);
        assert_eq!(e.saw.get("IP").map(String::as_str), Some("10.0.0.2"));
        let plain = d.expectation(&Expect::default(), None).unwrap_or_default();
        assert!(plain.saw.is_empty());
        let stranger = Expect {
            peer: Some("quiet".into()),
            ..Default::default()
        };
        let err = d.expectation(&stranger, None).unwrap_err();
        assert_eq!(err, "peer `quiet` is not a host of this run (app, egress)");
    }

    #[test]
    fn capture_is_refused_when_the_run_or_the_target_or_the_machine_says_no() {
        let external = crate::targets::external::External::new(BTreeMap::new());
        assert_eq!(refused(false, &external).as_deref(), Some("--no-capture"));
        assert_eq!(
            refused(true, &external).as_deref(),
            Some("the external target runs a sidecar as an explicit proxy only")
        );
        // A target that can be captured: the machine decides.
        let reference = match crate::targets::reference::Reference::new(Some("/bin/sh".into())) {
            Ok(r) => r,
            Err(e) => panic!("a reference target on /bin/sh: {e}"),
        };
        assert_eq!(refused(true, &reference), mesh_netns::unavailable());
        assert_eq!(refused(false, &reference).as_deref(), Some("--no-capture"));
    }

    #[test]
    fn authorities_split_into_host_and_port() {
        assert_eq!(split_authority("api.example.com", 80), Ok(("api.example.com", 80)));
        assert_eq!(
            split_authority("api.example.com:8080", 80),
            Ok(("api.example.com", 8080))
        );
        assert_eq!(split_authority("10.0.0.1:9000", 443), Ok(("10.0.0.1", 9000)));
        assert_eq!(split_authority("[::1]:8443", 80), Ok(("::1", 8443)));
        assert_eq!(split_authority("[::1]", 443), Ok(("::1", 443)));
        assert!(split_authority("a:b", 80).unwrap_err().contains("not a number"));
        assert!(split_authority("[::1", 80).unwrap_err().contains("no closing"));
    }
}
