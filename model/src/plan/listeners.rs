//! Gateway servers -> listeners and filter chains (`mergeGateways` and `buildGatewayListeners`):
//! plaintext HTTP servers on a port share one route table; each TLS server is its own filter
//! chain chosen by SNI; TCP servers proxy by `tcp` rules; passthrough servers route by SNI.

use std::collections::{HashMap, HashSet};

use crate::api::gateway::{Server, ServerTlsMode};
use crate::api::virtual_service::VirtualService;
use crate::api::{Protocol, Resource, Spec};
use crate::diag::{Code, Diagnostic, Severity};
use crate::host;

use super::build::Ctx;
use super::routes;
use super::{ChainAction, FilterChain, L4Route, Listener, RouteTable, SniRoute, Transport, VirtualHost};

/// One server of one selected Gateway.
struct ServerRef<'a> {
    gateway: &'a Resource,
    index: usize,
    server: &'a Server,
    protocol: Protocol,
    bind: String,
    port: u32,
}

impl ServerRef<'_> {
    fn gateway_key(&self) -> String {
        self.gateway.key()
    }

    /// `(namespace filter, host)` pairs of the server.
    fn hosts(&self) -> Vec<(String, String)> {
        self.server
            .hosts
            .iter()
            .map(|h| match h.split_once('/') {
                Some((ns, name)) => (ns.to_string(), name.to_ascii_lowercase()),
                None => ("*".to_string(), h.to_ascii_lowercase()),
            })
            .collect()
    }

    fn mode(&self) -> Option<ServerTlsMode> {
        self.protocol.is_tls().then(|| {
            self.server
                .tls
                .as_ref()
                .map_or(ServerTlsMode::Passthrough, |t| t.effective_mode())
        })
    }

    fn warn(&self, code: Code, msg: String) -> Diagnostic {
        let src = &self.gateway.source;
        let mut d = Diagnostic::new(Severity::Warning, code, msg)
            .at(&src.file, src.line_of(&format!("spec.servers[{}]", self.index)));
        d.field = Some(format!("spec.servers[{}]", self.index));
        d
    }
}

/// Which servers can share a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    PlainHttp,
    Tls,
    Tcp,
}

fn family(p: Protocol) -> Family {
    if p.is_tls() {
        Family::Tls
    } else if p.is_http() {
        Family::PlainHttp
    } else {
        Family::Tcp
    }
}

pub(super) fn build(ctx: &mut Ctx, gateways: &[&Resource]) -> (Vec<Listener>, Vec<RouteTable>) {
    let mut servers: Vec<ServerRef> = Vec::new();
    for gw in gateways {
        let Spec::Gateway(g) = &gw.spec else { continue };
        for (index, server) in g.servers.iter().enumerate() {
            let Some(port) = &server.port else { continue };
            let Some(protocol) = Protocol::parse(&port.protocol).filter(|p| *p != Protocol::Unsupported) else {
                continue;
            };
            let bind = server.bind.clone().unwrap_or_else(|| "0.0.0.0".into());
            servers.push(ServerRef {
                gateway: gw,
                index,
                server,
                protocol,
                bind,
                port: port.number,
            });
        }
    }
    let mut keys: Vec<(String, u32)> = Vec::new();
    for s in &servers {
        if !keys.contains(&(s.bind.clone(), s.port)) {
            keys.push((s.bind.clone(), s.port));
        }
    }
    let mut listeners = Vec::new();
    let mut tables = Vec::new();
    for (bind, port) in keys {
        let group: Vec<&ServerRef> = servers.iter().filter(|s| s.bind == bind && s.port == port).collect();
        let Some(&first) = group.first() else { continue };
        let fam = family(first.protocol);
        let mut kept = Vec::new();
        for s in group {
            if family(s.protocol) != fam {
                let msg = format!("server on {bind}:{port} speaks {}, but an earlier server on that port speaks {}; this server is skipped", s.protocol.name(), first.protocol.name());
                ctx.diag(s.warn(Code::ConflictingGateways, msg));
            } else {
                kept.push(s);
            }
        }
        ctx.port = port;
        let chains = match fam {
            Family::PlainHttp => plain_http_chain(ctx, &kept, &mut tables),
            Family::Tls => tls_chains(ctx, &kept, &mut tables),
            Family::Tcp => tcp_chain(ctx, &kept),
        };
        listeners.push(Listener {
            name: format!("{bind}_{port}"),
            bind,
            port,
            filter_chains: chains,
        });
    }
    (listeners, tables)
}

fn chain(
    s: &ServerRef,
    name: String,
    server_names: Vec<String>,
    transport: Transport,
    action: ChainAction,
) -> FilterChain {
    let tls = (transport == Transport::TerminateTls).then(|| {
        let mut t = s.server.tls.clone().unwrap_or_default();
        t.mode = Some(t.effective_mode());
        t
    });
    FilterChain {
        name,
        gateway: s.gateway_key(),
        server: s.index,
        protocol: s.protocol,
        server_names,
        transport,
        tls,
        action,
    }
}

fn plain_http_chain(ctx: &mut Ctx, servers: &[&ServerRef], tables: &mut Vec<RouteTable>) -> Vec<FilterChain> {
    let Some(first) = servers.first() else {
        return Vec::new();
    };
    let name = format!("http.{}", first.port);
    tables.push(route_table(ctx, &name, servers));
    vec![chain(
        first,
        name.clone(),
        Vec::new(),
        Transport::Plaintext,
        ChainAction::Http { route_table: name },
    )]
}

fn sni_names(s: &ServerRef) -> Vec<String> {
    let names: Vec<String> = s.hosts().into_iter().map(|(_, h)| h).collect();
    if names.iter().any(|h| h == "*") {
        Vec::new()
    } else {
        names
    }
}

fn tls_chains(ctx: &mut Ctx, servers: &[&ServerRef], tables: &mut Vec<RouteTable>) -> Vec<FilterChain> {
    let mut chains = Vec::new();
    let mut taken: Vec<String> = Vec::new();
    for s in servers {
        let names = sni_names(s);
        let key_names = if names.is_empty() {
            vec!["*".to_string()]
        } else {
            names.clone()
        };
        if let Some(dup) = key_names.iter().find(|n| taken.contains(n)) {
            let msg = format!(
                "host `{dup}` on port {} is already served by an earlier server; this server is skipped",
                s.port
            );
            ctx.diag(s.warn(Code::ConflictingGateways, msg));
            continue;
        }
        taken.extend(key_names);
        ctx.gateway = s.gateway_key();
        let server_name = s
            .server
            .name
            .clone()
            .or_else(|| s.server.port.as_ref().map(|p| p.name.clone()))
            .unwrap_or_default();
        let chain_name = format!(
            "{}.{}.{}.{}",
            if s.protocol == Protocol::Https { "https" } else { "tls" },
            s.port,
            server_name,
            s.gateway.name()
        );
        let chain_name = format!("{chain_name}.{}", s.gateway.namespace());
        match s.mode() {
            Some(ServerTlsMode::Passthrough) => {
                let routes = sni_routes(ctx, s);
                chains.push(chain(
                    s,
                    chain_name,
                    names,
                    Transport::Passthrough,
                    ChainAction::TlsPassthrough { routes },
                ));
            }
            Some(ServerTlsMode::AutoPassthrough) => {
                chains.push(chain(
                    s,
                    chain_name,
                    names,
                    Transport::AutoPassthrough,
                    ChainAction::AutoPassthrough,
                ));
            }
            _ if s.protocol == Protocol::Https => {
                tables.push(route_table(ctx, &chain_name, &[s]));
                let action = ChainAction::Http {
                    route_table: chain_name.clone(),
                };
                chains.push(chain(s, chain_name, names, Transport::TerminateTls, action));
            }
            _ => {
                let route = tcp_route(ctx, s);
                chains.push(chain(
                    s,
                    chain_name,
                    names,
                    Transport::TerminateTls,
                    ChainAction::Tcp { route },
                ));
            }
        }
    }
    chains
}

fn tcp_chain(ctx: &mut Ctx, servers: &[&ServerRef]) -> Vec<FilterChain> {
    let Some(first) = servers.first() else {
        return Vec::new();
    };
    for extra in &servers[1..] {
        let msg = format!(
            "TCP port {} is already served by an earlier server; this server is skipped",
            extra.port
        );
        ctx.diag(extra.warn(Code::ConflictingGateways, msg));
    }
    ctx.gateway = first.gateway_key();
    let route = tcp_route(ctx, first);
    vec![chain(
        first,
        format!("tcp.{}", first.port),
        Vec::new(),
        Transport::Plaintext,
        ChainAction::Tcp { route },
    )]
}

/// The VirtualService hosts (FQDN) of `vs` that one of the server's hosts admits, as domains.
fn domains(ctx: &Ctx, s: &ServerRef, res: &Resource, vs: &VirtualService) -> Vec<String> {
    let gw_ns = s.gateway.namespace();
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (ns, server_host) in s.hosts() {
        let ns_ok = ns == "*" || ns == res.namespace() || (ns == "." && res.namespace() == gw_ns);
        if !ns_ok {
            continue;
        }
        for h in &vs.hosts {
            let h = host::resolve_short_name(h, res.namespace(), ctx.config.domain_suffix());
            if let Some(d) = host::intersection(&h, &server_host) {
                if seen.insert(d.clone()) {
                    out.push(d);
                }
            }
        }
    }
    out
}

fn route_table(ctx: &mut Ctx, name: &str, servers: &[&ServerRef]) -> RouteTable {
    let mut hosts = VirtualHosts::default();
    let mut added: HashSet<(String, String)> = HashSet::new();
    for s in servers {
        ctx.gateway = s.gateway_key();
        let redirect = s.server.tls.as_ref().is_some_and(|t| t.https_redirect);
        for res in ctx.virtual_services_for_gateway() {
            let Spec::VirtualService(vs) = &res.spec else { continue };
            let doms = domains(ctx, s, res, vs);
            if doms.is_empty() {
                continue;
            }
            let vs_routes = routes::http_routes(ctx, res, vs);
            for d in doms {
                if !added.insert((d.clone(), res.key())) {
                    continue;
                }
                let vh = hosts.get(&d, s.port);
                vh.require_tls |= redirect;
                vh.routes.extend(vs_routes.iter().cloned());
            }
        }
        if redirect {
            for (_, h) in s.hosts() {
                hosts.get(&h, s.port).require_tls = true;
            }
        }
    }
    let mut vhosts = hosts.list;
    for vh in &mut vhosts {
        // Catch-alls go last, their relative order kept (SortVHostRoutes).
        vh.routes.sort_by_key(|r| routes::is_catch_all(&r.matcher));
    }
    if vhosts.is_empty() {
        let port = servers.first().map_or(0, |s| s.port);
        vhosts.push(VirtualHost {
            name: format!("blackhole:{port}"),
            domains: vec!["*".into()],
            require_tls: false,
            routes: Vec::new(),
        });
    }
    RouteTable {
        name: name.to_string(),
        virtual_hosts: vhosts,
    }
}

/// Virtual hosts of one route table, in the order they were first named, found by domain.
#[derive(Default)]
struct VirtualHosts {
    list: Vec<VirtualHost>,
    by_domain: HashMap<String, usize>,
}

impl VirtualHosts {
    /// The virtual host serving `domain`, added (named `<domain>:<port>`) when there is none.
    fn get(&mut self, domain: &str, port: u32) -> &mut VirtualHost {
        let next = self.list.len();
        let i = *self.by_domain.entry(domain.to_string()).or_insert(next);
        if i == next {
            self.list.push(VirtualHost {
                name: format!("{domain}:{port}"),
                domains: vec![domain.to_string()],
                require_tls: false,
                routes: Vec::new(),
            });
        }
        &mut self.list[i]
    }
}

/// The first `tcp` rule (of the first bound VirtualService, in order) that takes this server.
fn tcp_route(ctx: &mut Ctx, s: &ServerRef) -> Option<L4Route> {
    for res in ctx.virtual_services_for_gateway() {
        let Spec::VirtualService(vs) = &res.spec else { continue };
        if domains(ctx, s, res, vs).is_empty() {
            continue;
        }
        if let Some(route) = routes::first_tcp_route(ctx, res, vs) {
            return Some(route);
        }
    }
    None
}

/// `tls` rules for a passthrough server; a duplicate SNI on the port keeps the first rule.
fn sni_routes(ctx: &mut Ctx, s: &ServerRef) -> Vec<SniRoute> {
    let mut out = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    let server_hosts: Vec<String> = s.hosts().into_iter().map(|(_, h)| h).collect();
    for res in ctx.virtual_services_for_gateway() {
        let Spec::VirtualService(vs) = &res.spec else { continue };
        if domains(ctx, s, res, vs).is_empty() {
            continue;
        }
        for (i, rule) in vs.tls.iter().enumerate() {
            for m in &rule.matches {
                if !routes::l4_applies(ctx, res.namespace(), &[(m.port, m.gateways.as_slice())]) {
                    continue;
                }
                let sni: Vec<String> = m
                    .sni_hosts
                    .iter()
                    .filter_map(|h| server_hosts.iter().find_map(|sh| host::intersection(h, sh)))
                    .filter(|h| seen.insert(h.clone()))
                    .collect();
                if !sni.is_empty() {
                    out.push(SniRoute {
                        sni_hosts: sni,
                        route: routes::l4_route(ctx, res, i, &rule.route),
                    });
                }
            }
        }
    }
    out
}
