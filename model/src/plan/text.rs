//! The Plan as text, for people: listeners and their chains, route tables with each virtual host's
//! routes in order (match, then action), and clusters with their endpoints and policy.

use std::fmt::Write;

use crate::api::StringMatch;

use super::{ChainAction, Cluster, Plan, Route, RouteAction, RouteMatch, RouteTable};

fn string_match(sm: &StringMatch) -> String {
    match (&sm.exact, &sm.prefix, &sm.regex) {
        (Some(e), _, _) => format!("={e}"),
        (_, Some(p), _) => format!("^{p}"),
        (_, _, Some(r)) => format!("~{r}"),
        _ => "present".into(),
    }
}

/// `uri ^/api, header end-user=jason, …` (empty: `any`).
pub fn match_text(m: &RouteMatch) -> String {
    let mut parts = Vec::new();
    for (name, sm) in [
        ("uri", &m.uri),
        ("scheme", &m.scheme),
        ("method", &m.method),
        ("authority", &m.authority),
    ] {
        if let Some(sm) = sm {
            parts.push(format!("{name} {}", string_match(sm)));
        }
    }
    for h in &m.headers {
        let v = h.value.as_ref().map_or("present".into(), string_match);
        let not = if h.invert { "not " } else { "" };
        parts.push(format!(
            "{not}header {}{}",
            h.name,
            if v == "present" { " present".into() } else { v }
        ));
    }
    for q in &m.query_params {
        let v = q.value.as_ref().map_or(" present".into(), string_match);
        parts.push(format!("query {}{v}", q.name));
    }
    if m.ignore_uri_case {
        parts.push("ignoring uri case".into());
    }
    if parts.is_empty() {
        "any".into()
    } else {
        parts.join(", ")
    }
}

fn action_text(r: &Route) -> String {
    match &r.action {
        RouteAction::Route { clusters, rewrite } => {
            let dests: Vec<String> = clusters
                .iter()
                .map(|c| format!("{} ({})", c.cluster, c.weight))
                .collect();
            let rw = rewrite
                .as_ref()
                .map(|rw| {
                    let mut s = String::new();
                    if let Some(p) = &rw.prefix {
                        let _ = write!(s, ", rewrite uri {p}");
                    }
                    if let Some(h) = &rw.host {
                        let _ = write!(s, ", rewrite host {h}");
                    }
                    s
                })
                .unwrap_or_default();
            format!("route to {}{rw}", dests.join(", "))
        }
        RouteAction::Redirect(rd) => format!(
            "redirect {} to {}{}{}",
            rd.code,
            rd.scheme.as_deref().map(|s| format!("{s}://")).unwrap_or_default(),
            rd.host.as_deref().unwrap_or("(same host)"),
            rd.path.as_deref().unwrap_or("")
        ),
        RouteAction::DirectResponse { status, .. } => format!("direct response {status}"),
    }
}

fn table(o: &mut String, plan: &Plan, t: &RouteTable) {
    let _ = writeln!(o, "route table {}", t.name);
    for vh in &t.virtual_hosts {
        let tls = if vh.require_tls { ", https redirect" } else { "" };
        let _ = writeln!(o, "  virtual host {} [{}]{tls}", vh.name, vh.domains.join(", "));
        if vh.routes.is_empty() {
            let _ = writeln!(o, "    (no routes: 404)");
        }
        for r in &vh.routes {
            let mut extras = Vec::new();
            if let Some(t) = r.timeout {
                extras.push(format!("timeout {t}"));
            }
            if r.retry.attempts > 0 && r.retry != plan.mesh.default_retry {
                extras.push(format!(
                    "{} retries on {}",
                    r.retry.attempts,
                    r.retry.retry_on.join(",")
                ));
            }
            if r.fault.is_some() {
                extras.push("fault".into());
            }
            if !r.mirrors.is_empty() {
                extras.push(format!("{} mirror(s)", r.mirrors.len()));
            }
            let extras = if extras.is_empty() {
                String::new()
            } else {
                format!(" [{}]", extras.join("; "))
            };
            let _ = writeln!(
                o,
                "    {}: {} -> {}{extras}",
                r.name,
                match_text(&r.matcher),
                action_text(r)
            );
        }
    }
}

fn cluster(o: &mut String, c: &Cluster) {
    let lb = match (&c.policy.load_balancer.simple, &c.policy.load_balancer.consistent_hash) {
        (_, Some(_)) => "consistent hash".to_string(),
        (Some(s), None) => format!("{s:?}"),
        (None, None) => "LeastRequest".to_string(),
    };
    let eps: Vec<String> = c
        .endpoints
        .iter()
        .map(|e| format!("{}:{} (w{})", e.address, e.port, e.weight))
        .collect();
    let _ = writeln!(
        o,
        "cluster {} [{:?}, {lb}, tls {:?}]: {}",
        c.name,
        c.resolution,
        c.policy.tls.effective_mode(),
        if eps.is_empty() {
            "no endpoints".into()
        } else {
            eps.join(", ")
        }
    );
}

/// The whole Plan.
pub fn render(plan: &Plan) -> String {
    let mut o = String::new();
    for l in &plan.listeners {
        let _ = writeln!(o, "listener {} ({}:{})", l.name, l.bind, l.port);
        for c in &l.filter_chains {
            let sni = if c.server_names.is_empty() {
                "any SNI".to_string()
            } else {
                format!("SNI {}", c.server_names.join(", "))
            };
            let action = match &c.action {
                ChainAction::Http { route_table } => format!("HTTP -> {route_table}"),
                ChainAction::Tcp { route: Some(r) } => {
                    let d: Vec<String> = r
                        .clusters
                        .iter()
                        .map(|c| format!("{} ({})", c.cluster, c.weight))
                        .collect();
                    format!("TCP -> {}", d.join(", "))
                }
                ChainAction::Tcp { route: None } => "TCP -> nothing (closed)".into(),
                ChainAction::TlsPassthrough { routes } => format!("TLS passthrough, {} SNI route(s)", routes.len()),
                ChainAction::AutoPassthrough => "AUTO_PASSTHROUGH".into(),
            };
            let _ = writeln!(o, "  chain {} [{:?}, {sni}]: {action}", c.name, c.transport);
        }
    }
    if let Some(out) = &plan.outbound {
        let _ = writeln!(
            o,
            "outbound (sidecar): {:?}; {} HTTP port(s), {} TCP service(s)",
            plan.mesh.outbound_traffic_policy,
            out.route_tables.len(),
            out.tcp.len()
        );
    }
    for t in &plan.route_tables {
        table(&mut o, plan, t);
    }
    for c in &plan.clusters {
        cluster(&mut o, c);
    }
    o
}
