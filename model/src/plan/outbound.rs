//! The sidecar role: for each destination port, a route table with a virtual host per registered
//! service (its host, and `host:port`), carrying the routes of VirtualServices bound to `mesh`
//! and, without one, the service's own cluster. Non-HTTP ports are reached as TCP by CONNECT.

use std::collections::BTreeMap;

use crate::api::{Protocol, Spec};
use crate::host;

use super::build::Ctx;
use super::{cluster_name, routes, Outbound, Route, RouteAction, RouteMatch, RouteTable, VirtualHost, WeightedCluster};

pub(super) fn build(ctx: &mut Ctx) -> (Vec<RouteTable>, Outbound) {
    ctx.gateway = "mesh".into();
    let defaults = ctx.config.mesh.default_service_export_to.clone();
    let services: Vec<_> = ctx.registry.visible(&ctx.proxy_ns, &defaults).cloned().collect();
    let mut tables: BTreeMap<u32, Vec<VirtualHost>> = BTreeMap::new();
    let mut tcp = BTreeMap::new();
    for svc in &services {
        for port in &svc.ports {
            let protocol = Protocol::parse(port.protocol.as_deref().unwrap_or("")).unwrap_or(Protocol::Unsupported);
            let cluster = cluster_name(port.number, None, &svc.host);
            if !protocol.is_http() {
                tcp.insert(format!("{}:{}", svc.host, port.number), cluster);
                continue;
            }
            ctx.port = port.number;
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

/// A service without a VirtualService: every request to its cluster.
fn default_route(host: &str, port: u32, cluster: &str, ctx: &Ctx) -> Route {
    Route {
        name: "default".into(),
        virtual_service: format!("{host}:{port}"),
        rule: 0,
        match_index: None,
        matcher: RouteMatch::default(),
        action: RouteAction::Route {
            clusters: vec![WeightedCluster {
                cluster: cluster.to_string(),
                weight: 100,
                request_headers: None,
                response_headers: None,
                host_rewrite: None,
            }],
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
