//! Plan -> the form the request path runs: virtual hosts indexed by domain, regexes compiled once,
//! clusters with their endpoints, load balancer state and upstream client. Built on every config
//! (re)load, never per request.

use std::collections::HashMap;

/// A map looked up on every request: foldhash, randomly seeded per map, instead of SipHash
/// (about 240 instructions per lookup of a short key). Its keys come from the config.
pub type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::Arc;

use mesh_model::api::destination_rule::SimpleLb;
use mesh_model::api::StringMatch;
use mesh_model::plan::{ChainAction, Cluster, Plan, Route, RouteAction, RouteMatch, Transport};
use regex::Regex;

use crate::upstream::Client;

/// A compiled Plan, swapped whole on reload.
#[derive(Debug)]
pub struct Compiled {
    pub version: u64,
    /// When this config was loaded.
    pub loaded_at: std::time::SystemTime,
    /// The `credentialName` folder it read (for the exported config dump).
    pub credentials: Option<std::path::PathBuf>,
    /// Parts of the Plan that could not be served (a server whose certificate does not load).
    pub warnings: Vec<String>,
    pub plan: Arc<Plan>,
    /// By the Plan's listener port.
    pub listeners: Map<u32, Listener>,
    pub tables: Map<String, Table>,
    pub clusters: Map<String, Arc<UpstreamCluster>>,
    /// The sidecar's outbound services by destination address (transparent capture).
    pub capture: crate::capture::Table,
}

#[derive(Debug)]
pub struct Listener {
    pub port: u32,
    pub bind: String,
    pub chains: Vec<Chain>,
}

/// A filter chain, its TLS server config built.
#[derive(Debug)]
pub struct Chain {
    pub name: String,
    /// SNI names; empty: any (and clients without SNI).
    pub server_names: Vec<String>,
    pub transport: Transport,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub action: ChainAction,
}

impl Listener {
    /// Whether connections must be inspected for TLS before a chain is chosen.
    pub fn inspects_tls(&self) -> bool {
        self.chains.iter().any(|c| c.transport != Transport::Plaintext)
    }

    /// The chain for a connection: plaintext, or TLS by SNI (exact, then the longest wildcard,
    /// then the chain without server names, which also takes clients that send no SNI).
    pub fn select(&self, hello: &crate::tls::Hello) -> Option<&Chain> {
        if !hello.tls {
            return self.chains.iter().find(|c| c.transport == Transport::Plaintext);
        }
        let tls = self.chains.iter().filter(|c| c.transport != Transport::Plaintext);
        let by_name = hello.sni.as_deref().and_then(|sni| {
            tls.clone()
                .flat_map(|c| c.server_names.iter().map(move |n| (n, c)))
                .filter(|(n, _)| crate::tls::name_matches(n, sni))
                .max_by_key(|(n, _)| crate::tls::specificity(n))
                .map(|(_, c)| c)
        });
        by_name.or_else(|| tls.clone().find(|c| c.server_names.is_empty()))
    }
}

/// A route table: domain lookup as Envoy does it (exact, then the longest `*.` suffix, then `*`).
#[derive(Debug)]
pub struct Table {
    exact: Map<String, usize>,
    suffixes: Vec<(String, usize)>,
    any: Option<usize>,
    pub vhosts: Vec<VirtualHost>,
}

#[derive(Debug)]
pub struct VirtualHost {
    pub name: String,
    pub require_tls: bool,
    pub routes: Vec<CompiledRoute>,
    /// The routes by the header values they require.
    pub index: crate::route_index::RouteIndex,
}

#[derive(Debug)]
pub struct CompiledRoute {
    pub route: Route,
    pub matcher: Matcher,
    /// `uriRegexRewrite` compiled, with `\1` turned into `${1}`.
    pub regex_rewrite: Option<(Regex, String)>,
    /// `corsPolicy.allowOrigins` compiled once (a regex is never built per request).
    pub cors_origins: Vec<StrMatch>,
}

#[derive(Debug)]
pub enum StrMatch {
    Exact(String),
    Prefix(String),
    Regex(Regex),
}

#[derive(Debug)]
pub struct HeaderMatcher {
    pub name: String,
    /// `name` made once, when it names a header (not a pseudo-header such as `:method`): a
    /// lookup by `&str` would parse and check it on every request.
    pub key: Option<http::HeaderName>,
    /// None: presence.
    pub value: Option<StrMatch>,
    pub invert: bool,
    pub treat_missing_as_empty: bool,
}

#[derive(Debug)]
pub struct Matcher {
    pub uri: Option<StrMatch>,
    pub ignore_uri_case: bool,
    pub scheme: Option<StrMatch>,
    pub method: Option<StrMatch>,
    pub authority: Option<StrMatch>,
    pub headers: Vec<HeaderMatcher>,
    pub query: Vec<(String, Option<StrMatch>)>,
}

/// A cluster with its runtime state.
#[derive(Debug)]
pub struct UpstreamCluster {
    pub cluster: Cluster,
    /// `host:port` per endpoint.
    pub endpoints: Vec<String>,
    pub active: Vec<AtomicU64>,
    pub next: AtomicUsize,
    pub lb: SimpleLb,
    /// Ring of (hash, endpoint index), sorted, for consistent hashing.
    pub ring: Vec<(u64, usize)>,
    /// Connection pools, one per worker.
    pub client: crate::workers::PerWorker<Client>,
    /// The TLS this cluster originates (DestinationRule `tls`), or why it cannot.
    pub origination: Result<Option<crate::origination::Origination>, String>,
    pub breakers: crate::breaker::Breakers,
    pub outlier: Option<crate::breaker::Outlier>,
    /// resolution NONE: connect to the host the request names, on the cluster's port.
    pub original_dst: bool,
    /// How endpoints named by host are resolved (the config's DNS cache).
    pub resolver: crate::dns::Resolver,
    /// Where the cluster's upstream connections are counted (its pools' and TCP sessions').
    pub connections: crate::telemetry::Connections,
}

impl UpstreamCluster {
    /// `host:port` of endpoint `i`; for an original-destination cluster, `host` (from the request's
    /// authority or SNI, its port dropped) with the cluster's port.
    pub fn address(&self, i: usize, host: &str) -> String {
        if self.original_dst {
            let h = host
                .rsplit_once(':')
                .filter(|(_, p)| p.chars().all(|c| c.is_ascii_digit()))
                .map_or(host, |(h, _)| h);
            crate::upstream::join(h.trim_start_matches('[').trim_end_matches(']'), self.cluster.port)
        } else {
            self.endpoints.get(i).cloned().unwrap_or_default()
        }
    }
}

/// Anchored, whole-string RE2 semantics.
pub(crate) fn full_regex(re: &str, case_insensitive: bool) -> Result<Regex, String> {
    let flags = if case_insensitive { "(?i)" } else { "" };
    Regex::new(&format!("^{flags}(?:{re})$")).map_err(|e| format!("regex `{re}`: {e}"))
}

fn str_match(m: &StringMatch, ci: bool) -> Result<Option<StrMatch>, String> {
    let lower = |s: &str| if ci { s.to_ascii_lowercase() } else { s.to_string() };
    Ok(match (&m.exact, &m.prefix, &m.regex) {
        (Some(e), _, _) => Some(StrMatch::Exact(lower(e))),
        (_, Some(p), _) => Some(StrMatch::Prefix(lower(p))),
        (_, _, Some(r)) => Some(StrMatch::Regex(full_regex(r, ci)?)),
        _ => None,
    })
}

impl StrMatch {
    /// `value` already lowercased by the caller when the match is case-insensitive.
    pub fn matches(&self, value: &str) -> bool {
        match self {
            StrMatch::Exact(e) => value == e,
            StrMatch::Prefix(p) => value.starts_with(p.as_str()),
            StrMatch::Regex(r) => r.is_match(value),
        }
    }
}

fn matcher(m: &RouteMatch) -> Result<Matcher, String> {
    let opt =
        |sm: &Option<StringMatch>, ci: bool| sm.as_ref().map(|s| str_match(s, ci)).transpose().map(Option::flatten);
    Ok(Matcher {
        uri: opt(&m.uri, m.ignore_uri_case)?,
        ignore_uri_case: m.ignore_uri_case,
        scheme: opt(&m.scheme, false)?,
        method: opt(&m.method, false)?,
        authority: opt(&m.authority, false)?,
        headers: m
            .headers
            .iter()
            .map(|h| {
                Ok(HeaderMatcher {
                    name: h.name.clone(),
                    key: http::HeaderName::from_bytes(h.name.as_bytes()).ok(),
                    value: h.value.as_ref().map(|v| str_match(v, false)).transpose()?.flatten(),
                    invert: h.invert,
                    treat_missing_as_empty: h.treat_missing_as_empty,
                })
            })
            .collect::<Result<_, String>>()?,
        query: m
            .query_params
            .iter()
            .map(|q| {
                Ok((
                    q.name.clone(),
                    q.value.as_ref().map(|v| str_match(v, false)).transpose()?.flatten(),
                ))
            })
            .collect::<Result<_, String>>()?,
    })
}

fn route(r: &Route) -> Result<CompiledRoute, String> {
    let regex_rewrite = match &r.action {
        RouteAction::Route { rewrite: Some(rw), .. } => match &rw.regex {
            Some((pattern, replacement)) => {
                let re = Regex::new(pattern).map_err(|e| format!("rewrite regex `{pattern}`: {e}"))?;
                // RE2 substitutions write groups as \1; the regex crate as ${1}.
                let backref = Regex::new(r"\\(\d)").map_err(|e| e.to_string())?;
                Some((re, backref.replace_all(replacement, "$${$1}").into_owned()))
            }
            None => None,
        },
        _ => None,
    };
    let cors_origins = r.cors.as_ref().map_or(&[][..], |c| &c.allow_origins[..]);
    Ok(CompiledRoute {
        route: r.clone(),
        matcher: matcher(&r.matcher)?,
        regex_rewrite,
        cors_origins: cors_origins
            .iter()
            .filter_map(|m| str_match(m, false).transpose())
            .collect::<Result<_, _>>()?,
    })
}

impl Table {
    fn compile(t: &mesh_model::plan::RouteTable) -> Result<Table, String> {
        let mut table = Table {
            exact: Map::default(),
            suffixes: Vec::new(),
            any: None,
            vhosts: Vec::new(),
        };
        for (i, vh) in t.virtual_hosts.iter().enumerate() {
            for d in &vh.domains {
                let d = d.to_ascii_lowercase();
                if d == "*" {
                    table.any.get_or_insert(i);
                } else if let Some(suffix) = d.strip_prefix('*') {
                    table.suffixes.push((suffix.to_string(), i));
                } else {
                    table.exact.entry(d).or_insert(i);
                }
            }
            let routes: Vec<_> = vh.routes.iter().map(route).collect::<Result<_, _>>()?;
            table.vhosts.push(VirtualHost {
                name: vh.name.clone(),
                require_tls: vh.require_tls,
                index: crate::route_index::RouteIndex::of(&routes),
                routes,
            });
        }
        table.suffixes.sort_by_key(|s| std::cmp::Reverse(s.0.len()));
        Ok(table)
    }

    /// The virtual host for a request host (lowercase, no port).
    pub fn vhost(&self, host: &str) -> Option<&VirtualHost> {
        let i = self
            .exact
            .get(host)
            .copied()
            .or_else(|| {
                self.suffixes
                    .iter()
                    .find(|(s, _)| host.ends_with(s.as_str()))
                    .map(|(_, i)| *i)
            })
            .or(self.any)?;
        self.vhosts.get(i)
    }
}

fn hash64(s: &str) -> u64 {
    // FNV-1a: stable across runs and processes, which consistent hashing needs.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

pub fn hash_key(s: &str) -> u64 {
    hash64(s)
}

impl UpstreamCluster {
    pub(crate) fn compile(
        c: &Cluster,
        credentials: Option<&std::path::Path>,
        dns: &Arc<crate::dns::Cache>,
        telemetry: &crate::telemetry::Telemetry,
    ) -> UpstreamCluster {
        let (connections, ejections) = telemetry.cluster(&c.name);
        let origination = crate::origination::for_cluster(c, credentials);
        let resolver = crate::dns::Resolver::new(dns.clone(), crate::dns::Take::of(c.resolution));
        // resolution NONE without endpoints: traffic goes to its original destination.
        let original_dst = c.resolution == mesh_model::api::service_entry::Resolution::None && c.endpoints.is_empty();
        let mut endpoints: Vec<String> = c
            .endpoints
            .iter()
            .map(|e| crate::upstream::join(&e.address, e.port))
            .collect();
        if original_dst {
            // One pseudo-endpoint: the address is the request's own host and the cluster's port.
            endpoints.push(String::new());
        }
        let lb = c.policy.load_balancer.simple.unwrap_or(SimpleLb::LeastRequest);
        let ring = match &c.policy.load_balancer.consistent_hash {
            Some(ch) if !endpoints.is_empty() => {
                let size = ch
                    .ring_hash
                    .as_ref()
                    .and_then(|r| r.minimum_ring_size)
                    .or(ch.minimum_ring_size)
                    .unwrap_or(1024)
                    .max(endpoints.len() as u64);
                let per = (size as usize).div_ceil(endpoints.len());
                let mut ring: Vec<(u64, usize)> = (0..endpoints.len())
                    .flat_map(|i| (0..per).map(move |k| (i, k)))
                    .map(|(i, k)| (hash64(&format!("{}_{k}", endpoints[i])), i))
                    .collect();
                ring.sort_unstable();
                ring
            }
            _ => Vec::new(),
        };
        UpstreamCluster {
            active: endpoints.iter().map(|_| AtomicU64::new(0)).collect(),
            endpoints,
            next: AtomicUsize::new(0),
            lb,
            ring,
            client: crate::workers::PerWorker::new(|_| {
                Client::new(c, &origination, original_dst, &resolver, &connections)
            }),
            original_dst,
            resolver,
            connections,
            origination,
            breakers: crate::breaker::Breakers::new(c),
            outlier: crate::breaker::Outlier::new(c, ejections),
            cluster: c.clone(),
        }
    }
}

/// Compiles a Plan. Errors only for what validation lets through but cannot run (none expected).
/// The clusters count their connections in `telemetry`.
pub fn compile(
    plan: Plan,
    version: u64,
    credentials: Option<&std::path::Path>,
    telemetry: &crate::telemetry::Telemetry,
) -> Result<Compiled, String> {
    let mut tables = Map::default();
    for t in &plan.route_tables {
        tables.insert(t.name.clone(), Table::compile(t)?);
    }
    let mut listeners = Map::default();
    let mut warnings = Vec::new();
    for l in &plan.listeners {
        let mut chains = Vec::new();
        for c in &l.filter_chains {
            let tls = match (&c.tls, c.transport) {
                (Some(t), Transport::TerminateTls) => {
                    let alpn: &[&[u8]] = if matches!(c.action, ChainAction::Http { .. }) {
                        &[b"h2", b"http/1.1"]
                    } else {
                        &[]
                    };
                    match crate::tls::server_config(t, alpn, credentials) {
                        Ok(cfg) => Some(cfg),
                        Err(e) => {
                            // As in Istio, a server with a bad certificate fails alone.
                            warnings.push(format!(
                                "filter chain {} (gateway {} server {}) is not served: {e}",
                                c.name, c.gateway, c.server
                            ));
                            continue;
                        }
                    }
                }
                _ => None,
            };
            chains.push(Chain {
                name: c.name.clone(),
                server_names: c.server_names.clone(),
                transport: c.transport,
                tls,
                action: c.action.clone(),
            });
        }
        listeners.insert(
            l.port,
            Listener {
                port: l.port,
                bind: l.bind.clone(),
                chains,
            },
        );
    }
    // One DNS cache per config: a reload resolves afresh, as Envoy does for updated clusters.
    let dns = crate::dns::Cache::new(plan.mesh.dns_refresh_rate.as_std());
    let clusters = plan
        .clusters
        .iter()
        .map(|c| {
            (
                c.name.clone(),
                Arc::new(UpstreamCluster::compile(c, credentials, &dns, telemetry)),
            )
        })
        .collect();
    Ok(Compiled {
        warnings,
        version,
        loaded_at: std::time::SystemTime::now(),
        credentials: credentials.map(std::path::Path::to_path_buf),
        capture: crate::capture::Table::new(plan.outbound.as_ref()),
        plan: Arc::new(plan),
        listeners,
        tables,
        clusters,
    })
}

/// For in-process tests: `yaml` planned for a gateway (or the sidecar role), `edit`ed, compiled.
#[cfg(test)]
pub(crate) fn from_yaml(
    yaml: &str,
    sidecar: bool,
    edit: impl FnOnce(&mut Plan),
    telemetry: &crate::telemetry::Telemetry,
) -> Compiled {
    let loaded = mesh_model::load_str("test.yaml", yaml);
    let opts = mesh_model::plan::PlanOptions {
        labels: None,
        namespace: None,
        sidecar,
    };
    let (mut plan, _) = mesh_model::plan::build(&loaded.config, &opts);
    edit(&mut plan);
    compile(plan, 1, None, telemetry).unwrap_or_else(|e| panic!("{e}"))
}
