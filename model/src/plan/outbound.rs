//! The sidecar role: for each destination port, a route table with a virtual host per registered
//! service (its host, and `host:port`), carrying the routes of VirtualServices bound to `mesh`
//! and, without one, the service's own cluster. Non-HTTP ports are reached as TCP: by CONNECT,
//! or, captured, by the TLS server name, the destination address, or the port alone.

use std::collections::BTreeMap;

use crate::api::{Protocol, Spec};
use crate::host;

use super::build::Ctx;
use super::{
    cluster_name, routes, AddressedPort, L4Route, Outbound, Route, RouteAction, RouteMatch, RouteTable, VirtualHost,
    WeightedCluster,
};

pub(super) fn build(ctx: &mut Ctx) -> (Vec<RouteTable>, Outbound) {
    ctx.gateway = "mesh".into();
    let defaults = ctx.config.mesh.default_service_export_to.clone();
    let services: Vec<_> = ctx.registry.visible(&ctx.proxy_ns, &defaults).cloned().collect();
    let mut tables: BTreeMap<u32, Vec<VirtualHost>> = BTreeMap::new();
    let mut tcp = BTreeMap::new();
    let mut addresses = Vec::new();
    let mut tcp_ports = BTreeMap::new();
    for svc in &services {
        for port in &svc.ports {
            let protocol = Protocol::parse(port.protocol.as_deref().unwrap_or("")).unwrap_or(Protocol::Unsupported);
            let cluster = cluster_name(port.number, None, &svc.host);
            addresses.extend(svc.addresses.iter().map(|a| AddressedPort {
                address: a.clone(),
                port: port.number,
                host: svc.host.clone(),
                http: protocol.is_http(),
            }));
            ctx.port = port.number;
            if !protocol.is_http() {
                let by_name = matches!(protocol, Protocol::Tls | Protocol::Https);
                let host_port = format!("{}:{}", svc.host, port.number);
                if !by_name && svc.addresses.is_empty() {
                    tcp_ports.entry(port.number).or_insert_with(|| host_port.clone());
                }
                let route = mesh_l4_route(ctx, &svc.host, by_name).unwrap_or_else(|| L4Route {
                    virtual_service: host_port.clone(),
                    ..L4Route::to(&cluster)
                });
                tcp.insert(host_port, route);
                continue;
            }
            let mut vh_routes: Vec<Route> = Vec::new();
            for res in ctx.virtual_services_for_gateway() {
                let Spec::VirtualService(vs) = &res.spec else { continue };
                let covers = vs.hosts.iter().any(|h| {
                    host::matches(
                        &host::resolve_short_name(h, res.namespace(), ctx.config.domain_suffix()),
                        &svc.host,
                    )
                });
                if covers {
                    vh_routes.extend(routes::http_routes(ctx, res, vs));
                }
            }
            if vh_routes.is_empty() {
                vh_routes.push(default_route(&svc.host, port.number, &cluster, ctx));
            }
            let domains = vec![svc.host.clone(), format!("{}:{}", svc.host, port.number)];
            let name = format!("{}:{}", svc.host, port.number);
            tables.entry(port.number).or_default().push(VirtualHost {
                name,
                domains,
                require_tls: false,
                routes: vh_routes,
            });
        }
    }
    let mut out = Outbound {
        route_tables: BTreeMap::new(),
        tcp,
        addresses,
        tcp_ports,
    };
    let tables = tables
        .into_iter()
        .map(|(port, virtual_hosts)| {
            let name = format!("outbound.{port}");
            out.route_tables.insert(port, name.clone());
            RouteTable { name, virtual_hosts }
        })
        .collect();
    (tables, out)
}

/// The first rule of a VirtualService bound to `mesh` (at `ctx.port`) that takes `host`'s
/// TCP: a `tls` rule whose `sniHosts` cover it (`by_name`: TLS/HTTPS ports), else a `tcp` rule.
fn mesh_l4_route(ctx: &mut Ctx, host: &str, by_name: bool) -> Option<L4Route> {
    for res in ctx.virtual_services_for_gateway() {
        let Spec::VirtualService(vs) = &res.spec else { continue };
        let suffix = ctx.config.domain_suffix();
        if !vs
            .hosts
            .iter()
            .any(|h| host::matches(&host::resolve_short_name(h, res.namespace(), suffix), host))
        {
            continue;
        }
        if by_name {
            for (i, rule) in vs.tls.iter().enumerate() {
                let takes = rule.matches.iter().any(|m| {
                    routes::l4_applies(ctx, res.namespace(), &[(m.port, m.gateways.as_slice())])
                        && m.sni_hosts.iter().any(|sni| host::matches(sni, host))
                });
                if takes {
                    return Some(routes::l4_route(ctx, res, i, &rule.route));
                }
            }
        }
        if let Some(route) = routes::first_tcp_route(ctx, res, vs) {
            return Some(route);
        }
    }
    None
}

/// A service without a VirtualService: every request to its cluster.
fn default_route(host: &str, port: u32, cluster: &str, ctx: &Ctx) -> Route {
    Route {
        name: "default".into(),
        virtual_service: format!("{host}:{port}"),
        rule: 0,
        match_index: None,
        matcher: RouteMatch::default(),
        action: RouteAction::Route {
            clusters: vec![WeightedCluster::only(cluster)],
            rewrite: None,
        },
        request_headers: None,
        response_headers: None,
        timeout: None,
        retry: ctx.default_retry.clone(),
        fault: None,
        mirrors: Vec::new(),
        cors: None,
    }
}

#[cfg(test)]
mod tests {
    use crate::plan::{build, AddressedPort, Outbound, PlanOptions};

    fn outbound(yaml: &str) -> Outbound {
        let loaded = crate::load_str("t.yaml", yaml);
        let opts = PlanOptions {
            labels: None,
            namespace: Some("apps".into()),
            sidecar: true,
        };
        build(&loaded.config, &opts).0.outbound.expect("outbound")
    }

    fn entry(name: &str, ns: &str, rest: &str) -> String {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}, namespace: {ns}}}\n\
             spec:\n  hosts: [{name}.example.com]\n  location: MESH_EXTERNAL\n{rest}---\n"
        )
    }

    #[test]
    fn captured_connections_find_services_by_address_then_by_port() {
        let yaml = [
            entry(
                "db",
                "apps",
                "  addresses: [10.9.0.0/24]\n  resolution: NONE\n  ports: [{number: 5432, name: pg, protocol: TCP}, {number: 8080, name: web, protocol: HTTP}]\n",
            ),
            entry("cache", "apps", "  resolution: DNS\n  ports: [{number: 6379, name: redis, protocol: TCP}]\n"),
            entry("cache2", "apps", "  resolution: DNS\n  ports: [{number: 6379, name: redis, protocol: TCP}]\n"),
            entry("secure", "apps", "  resolution: DNS\n  ports: [{number: 443, name: tls, protocol: TLS}]\n"),
            entry("hidden", "other", "  exportTo: [.]\n  resolution: DNS\n  ports: [{number: 9000, name: t, protocol: TCP}]\n"),
        ]
        .concat();
        let out = outbound(&yaml);
        let port = |port: u32, http: bool| AddressedPort {
            address: "10.9.0.0/24".into(),
            port,
            host: "db.example.com".into(),
            http,
        };
        assert_eq!(out.addresses, [port(5432, false), port(8080, true)]);
        // By port alone: the first address-less TCP service; never one reached by TLS server
        // name; never a service with addresses; never one not exported to the sidecar's namespace.
        let by_port: Vec<(u32, &str)> = out.tcp_ports.iter().map(|(p, c)| (*p, c.as_str())).collect();
        assert_eq!(by_port, [(6379, "cache.example.com:6379")]);
        assert_eq!(
            clusters(&out, "secure.example.com:443"),
            ["outbound|443||secure.example.com"]
        );
        assert!(!out.tcp.contains_key("hidden.example.com:9000"));
    }

    fn clusters<'a>(out: &'a Outbound, host_port: &str) -> Vec<&'a str> {
        out.tcp[host_port].clusters.iter().map(|c| c.cluster.as_str()).collect()
    }

    #[test]
    fn mesh_tls_and_tcp_rules_send_a_service_elsewhere() {
        let yaml = [
            entry("api", "apps", "  resolution: DNS\n  ports: [{number: 443, name: tls, protocol: TLS}, {number: 5432, name: pg, protocol: TCP}]\n"),
            entry("egress", "apps", "  resolution: DNS\n  ports: [{number: 443, name: tls, protocol: TLS}, {number: 5432, name: pg, protocol: TCP}]\n"),
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: api, namespace: apps}\nspec:\n  \
             hosts: [api.example.com]\n  gateways: [mesh, egressgateway]\n  tls:\n  \
             - match: [{gateways: [egressgateway], port: 443, sniHosts: [api.example.com]}]\n    route: [{destination: {host: api.example.com}}]\n  \
             - match: [{gateways: [mesh], port: 8443, sniHosts: [api.example.com]}]\n    route: [{destination: {host: api.example.com}}]\n  \
             - match: [{gateways: [mesh], port: 443, sniHosts: [other.example.com]}]\n    route: [{destination: {host: api.example.com}}]\n  \
             - match: [{gateways: [mesh], port: 443, sniHosts: [api.example.com]}]\n    \
             route: [{destination: {host: egress.example.com, port: {number: 443}}, weight: 80}, {destination: {host: api.example.com, port: {number: 443}}, weight: 20}]\n  \
             tcp:\n  - match: [{gateways: [mesh], port: 5432}]\n    route: [{destination: {host: egress.example.com, port: {number: 5432}}}]\n---\n"
                .to_string(),
        ]
        .concat();
        let out = outbound(&yaml);
        // The first rule that takes the gateway `mesh`, the port and the server name.
        assert_eq!(
            clusters(&out, "api.example.com:443"),
            ["outbound|443||egress.example.com", "outbound|443||api.example.com"]
        );
        let weights: Vec<u32> = out.tcp["api.example.com:443"]
            .clusters
            .iter()
            .map(|c| c.weight)
            .collect();
        assert_eq!(weights, [80, 20]);
        assert_eq!(out.tcp["api.example.com:443"].virtual_service, "apps/api");
        assert_eq!(
            clusters(&out, "api.example.com:5432"),
            ["outbound|5432||egress.example.com"]
        );
        // A service no rule covers goes to itself.
        assert_eq!(
            clusters(&out, "egress.example.com:443"),
            ["outbound|443||egress.example.com"]
        );
    }

    #[test]
    fn a_kubernetes_service_is_addressed_by_its_cluster_ip() {
        let yaml = "apiVersion: v1\nkind: Service\nmetadata: {name: db, namespace: apps}\n\
                    spec: {clusterIP: 10.96.0.7, ports: [{name: tcp-pg, port: 5432}]}\n---\n\
                    apiVersion: v1\nkind: Service\nmetadata: {name: headless, namespace: apps}\n\
                    spec: {clusterIP: None, ports: [{name: tcp-pg, port: 5433}]}\n";
        let out = outbound(yaml);
        let addressed: Vec<(&str, u32, &str)> = out
            .addresses
            .iter()
            .map(|a| (a.address.as_str(), a.port, a.host.as_str()))
            .collect();
        assert_eq!(addressed, [("10.96.0.7", 5432, "db.apps.svc.cluster.local")]);
        assert_eq!(
            out.tcp_ports.get(&5433).map(String::as_str),
            Some("headless.apps.svc.cluster.local:5433")
        );
    }
}
