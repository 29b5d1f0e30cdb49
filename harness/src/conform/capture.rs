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
    /// What the app's (and every host's) DNS answers.
    names: BTreeMap<String, Ipv4Addr>,
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
        let mut names = BTreeMap::new();
        for w in &suite.workloads {
            if w.registered != Some(false) {
                let ns = w.namespace.as_deref().unwrap_or("default");
                let host = w
                    .host
                    .clone()
                    .unwrap_or_else(|| format!("{}.{ns}.svc.cluster.local", w.service));
                names.insert(host, workloads.ip);
            }
            // A named endpoint address is each instance's own name here (`localhost` would be
            // the sidecar's own host).
            if w.address.is_some() {
                for v in &w.versions {
                    for r in 0..w.replicas.unwrap_or(1).max(1) {
                        names.insert(instance_name(w, v, r), workloads.ip);
                    }
                }
            }
        }
        for g in &suite.gateways {
            if let (Some(service), Some(h)) = (&g.service, gateways.get(&g.name)) {
                names.insert(service.clone(), h.ip);
            }
        }
        let table: Vec<(&str, Ipv4Addr)> = names.iter().map(|(n, a)| (n.as_str(), *a)).collect();
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
            names,
            _net: net,
        })
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

    /// The host a case's `peer` names: `app`, or an extra gateway.
    fn peer(&self, name: &str) -> Option<Ipv4Addr> {
        match name {
            "app" => Some(self.app.ip),
            g => self.gateways.get(g).map(|h| h.ip),
        }
    }

    /// A case's expectation in a captured run: `captured` where the case has one, and its `peer`
    /// as the address the workload saw (its echo's `IP`).
    pub fn expectation(&self, expect: &Expect, captured: Option<&Expect>) -> Result<Expect, String> {
        let mut e = captured.unwrap_or(expect).clone();
        if let Some(p) = &e.peer {
            let ip = self.peer(p).ok_or_else(|| {
                let names: Vec<&str> = self.gateways.keys().map(String::as_str).collect();
                format!("peer `{p}` is not a host of this run: app, or a gateway ({})", names.join(", "))
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

    #[test]
    fn authorities_split_into_host_and_port() {
        assert_eq!(split_authority("api.example.com", 80), Ok(("api.example.com", 80)));
        assert_eq!(split_authority("api.example.com:8080", 80), Ok(("api.example.com", 8080)));
        assert_eq!(split_authority("10.0.0.1:9000", 443), Ok(("10.0.0.1", 9000)));
        assert_eq!(split_authority("[::1]:8443", 80), Ok(("::1", 8443)));
        assert_eq!(split_authority("[::1]", 443), Ok(("::1", 443)));
        assert!(split_authority("a:b", 80).unwrap_err().contains("not a number"));
        assert!(split_authority("[::1", 80).unwrap_err().contains("no closing"));
    }
}
