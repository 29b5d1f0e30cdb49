//! Istio's gateway simulation tests (`pilot/pkg/networking/core/gateway_simulation_test.go`,
//! `TestHTTPGateway`, `TestGatewayConflicts`, TLS cases), replayed on the exported bootstrap: a
//! small model of Envoy's selection (listener by port, filter chain by SNI, virtual host by
//! domain, first matching route) names the listener, route config, virtual host and cluster a
//! call reaches, and each is compared with Istio's expectation. Istio's fake registry names
//! services `<name>.<ns>`; ours are full names, `<name>.<ns>.svc.cluster.local`.

use super::*;

#[derive(Debug, Default, Clone, Copy)]
struct Call<'a> {
    port: u32,
    host: &'a str,
    path: &'a str,
    /// TLS with this SNI (`Some("")`: TLS without SNI).
    sni: Option<&'a str>,
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Reached {
    listener: Option<String>,
    route_config: Option<String>,
    virtual_host: Option<String>,
    cluster: Option<String>,
    error: Option<&'static str>,
}

/// Envoy's server_names choice: exact, then the longest `*.suffix`, then a chain without names.
fn pick_chain<'v>(chains: &'v [Value], sni: Option<&str>) -> Result<&'v Value, &'static str> {
    let names = |c: &Value| -> Vec<String> {
        c["filter_chain_match"]["server_names"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
            .unwrap_or_default()
    };
    let pick = |hits: Vec<&'v Value>| match hits.as_slice() {
        [] => None,
        [one] => Some(Ok(*one)),
        _ => Some(Err("multiple filter chains")),
    };
    if let Some(sni) = sni.filter(|s| !s.is_empty()) {
        if let Some(r) = pick(chains.iter().filter(|c| names(c).iter().any(|n| n == sni)).collect()) {
            return r;
        }
        let wild_len = |c: &Value| {
            names(c)
                .iter()
                .filter(|n| n.starts_with("*.") && sni.ends_with(&n[1..]))
                .map(String::len)
                .max()
        };
        if let Some(best) = chains.iter().filter_map(wild_len).max() {
            return pick(chains.iter().filter(|c| wild_len(c) == Some(best)).collect())
                .unwrap_or(Err("no filter chain"));
        }
    }
    pick(chains.iter().filter(|c| names(c).is_empty()).collect()).unwrap_or(Err("no filter chain"))
}

/// Envoy's virtual host choice: exact domain, longest suffix wildcard, then `*`.
fn pick_vhost<'v>(vhosts: &'v [Value], host: &str) -> Option<&'v Value> {
    let domains = |v: &Value| -> Vec<String> {
        v["domains"]
            .as_array()
            .map(|a| a.iter().filter_map(|d| d.as_str().map(String::from)).collect())
            .unwrap_or_default()
    };
    if let Some(v) = vhosts.iter().find(|v| domains(v).iter().any(|d| d == host)) {
        return Some(v);
    }
    let suffix = |v: &Value| {
        domains(v)
            .iter()
            .filter(|d| d.len() > 1 && d.starts_with('*') && host.ends_with(&d[1..]))
            .map(String::len)
            .max()
    };
    if let Some(v) = vhosts.iter().filter(|v| suffix(v).is_some()).max_by_key(|v| suffix(v)) {
        return Some(v);
    }
    vhosts.iter().find(|v| domains(v).iter().any(|d| d == "*"))
}

fn route_matches(m: &Value, path: &str) -> bool {
    if m.get("headers").is_some() || m.get("query_parameters").is_some() {
        return false;
    }
    if let Some(p) = m["path"].as_str() {
        return p == path;
    }
    if let Some(p) = m["prefix"].as_str() {
        return path.starts_with(p);
    }
    m["safe_regex"]["regex"]
        .as_str()
        .and_then(|r| regex::Regex::new(&format!("^(?:{r})$")).ok())
        .is_some_and(|re| re.is_match(path))
}

fn simulate(b: &Value, call: Call) -> Reached {
    let mut out = Reached::default();
    let name = format!("0.0.0.0_{}", call.port);
    let Some(l) = b["static_resources"]["listeners"]
        .as_array()
        .and_then(|ls| ls.iter().find(|l| l["name"] == name.as_str()))
    else {
        out.error = Some("no listener");
        return out;
    };
    out.listener = Some(name);
    let chains = l["filter_chains"].as_array().map(Vec::as_slice).unwrap_or_default();
    let chain = match pick_chain(chains, call.sni) {
        Ok(c) => c,
        Err(e) => {
            out.error = Some(e);
            return out;
        }
    };
    let filter = &chain["filters"][0]["typed_config"];
    if let Some(c) = filter["cluster"].as_str() {
        out.cluster = Some(c.to_string());
        return out;
    }
    let rc = &filter["route_config"];
    out.route_config = rc["name"].as_str().map(String::from);
    let host = call.host.split(':').next().unwrap_or(call.host);
    let vhosts = rc["virtual_hosts"].as_array().map(Vec::as_slice).unwrap_or_default();
    let Some(vh) = pick_vhost(vhosts, host) else {
        out.error = Some("no virtual host");
        return out;
    };
    out.virtual_host = vh["name"].as_str().map(String::from);
    if vh["require_tls"] == "ALL" && call.sni.is_none() {
        out.error = Some("tls required, sending 301");
        return out;
    }
    let routes = vh["routes"].as_array().map(Vec::as_slice).unwrap_or_default();
    let Some(r) = routes.iter().find(|r| route_matches(&r["match"], call.path)) else {
        out.error = Some("no route");
        return out;
    };
    out.cluster = r["route"]["cluster"]
        .as_str()
        .or_else(|| r["route"]["weighted_clusters"]["clusters"][0]["name"].as_str())
        .map(String::from);
    out
}

fn gateway(name: &str, ns: &str, server: &str) -> String {
    let server = server.replace('\n', "\n    ");
    format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  \
         selector: {{istio: ingressgateway}}\n  servers:\n  - {server}\n---\n"
    )
}

const HTTP_SERVER: &str = "port: {number: 80, name: http, protocol: HTTP}\nhosts: [foo.bar]";

const SIMPLE_ROUTE: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: vs, namespace: default}\n\
spec:\n  hosts: [example.com]\n  gateways: [gateway]\n  http:\n  - match: [{uri: {prefix: /}}]\n    route: [{destination: {host: b}}]\n---\n";

fn reached(listener: &str, rc: &str, vh: &str, cluster: Option<&str>, error: Option<&'static str>) -> Reached {
    Reached {
        listener: Some(listener.into()),
        route_config: Some(rc.into()),
        virtual_host: (!vh.is_empty()).then(|| vh.into()),
        cluster: cluster.map(String::from),
        error,
    }
}

fn http(port: u32, host: &'static str, path: &'static str) -> Call<'static> {
    Call {
        port,
        host,
        path,
        sni: None,
    }
}

#[test]
fn no_virtual_services() {
    let b = export(&gateway("gateway", "default", HTTP_SERVER));
    assert_eq!(
        simulate(&b, http(80, "foo.bar", "/")),
        reached("0.0.0.0_80", "http.80", "blackhole:80", None, Some("no route"))
    );
    assert_eq!(simulate(&b, http(81, "foo.bar", "/")).error, Some("no listener"));
}

#[test]
fn simple_http_and_virtual_service() {
    let vs =
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: bookinfo, namespace: default}\n\
              spec:\n  hosts: ['*']\n  gateways: [gateway]\n  http:\n  - match: [{uri: {exact: /productpage}}]\n    \
              route: [{destination: {host: productpage, port: {number: 9080}}}]\n";
    let b = export(&format!("{}{vs}", gateway("gateway", "default", HTTP_SERVER)));
    assert_eq!(
        simulate(&b, http(80, "foo.bar", "/")),
        reached("0.0.0.0_80", "http.80", "foo.bar:80", None, Some("no route"))
    );
    assert_eq!(
        simulate(&b, http(80, "bad.bar", "/")),
        reached("0.0.0.0_80", "http.80", "", None, Some("no virtual host"))
    );
    assert_eq!(
        simulate(&b, http(80, "foo.bar", "/productpage")),
        reached(
            "0.0.0.0_80",
            "http.80",
            "foo.bar:80",
            Some("outbound|9080||productpage.default.svc.cluster.local"),
            None
        )
    );
}

#[test]
fn virtual_service_merging() {
    let vs = |name: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: default}}\n\
             spec:\n  hosts: [{name}.example.com]\n  gateways: [gateway]\n  http:\n  - match: [{{uri: {{prefix: /}}}}]\n    \
             route: [{{destination: {{host: {name}, port: {{number: 80}}}}}}]\n---\n"
        )
    };
    let gw = gateway(
        "gateway",
        "default",
        "port: {number: 80, name: http, protocol: HTTP}\nhosts: ['*.example.com']",
    );
    let b = export(&format!("{gw}{}{}", vs("a"), vs("b")));
    for (host, cluster) in [
        ("a.example.com", "outbound|80||a.default.svc.cluster.local"),
        ("b.example.com", "outbound|80||b.default.svc.cluster.local"),
    ] {
        assert_eq!(
            simulate(&b, http(80, host, "/")).cluster.as_deref(),
            Some(cluster),
            "{host}"
        );
    }
    assert_eq!(
        simulate(&b, http(80, "c.example.com", "/")).error,
        Some("no virtual host")
    );
}

#[test]
fn https_redirect_with_and_without_routes() {
    let redirect = "port: {number: 80, name: http, protocol: HTTP}\nhosts: [example.com]\ntls: {httpsRedirect: true}";
    let plain = "port: {number: 80, name: http, protocol: HTTP}\nhosts: [example.com]";
    let configs = [
        // httpsRedirect without routes
        gateway("gateway", "default", redirect),
        // httpsRedirect with routes: the same, the routes are elided by the redirect
        format!("{}{SIMPLE_ROUTE}", gateway("gateway", "default", redirect)),
        // mixed httpsRedirect with routes: Envoy redirects per virtual host, not per route
        format!(
            "{}{}{SIMPLE_ROUTE}",
            gateway("gateway", "default", redirect),
            gateway("gateway2", "default", plain)
        ),
    ];
    for (i, c) in configs.iter().enumerate() {
        assert_eq!(
            simulate(&export(c), http(80, "example.com", "/")),
            reached(
                "0.0.0.0_80",
                "http.80",
                "example.com:80",
                None,
                Some("tls required, sending 301")
            ),
            "config {i}"
        );
    }
}

#[test]
fn https_redirect_on_https_routes() {
    let server = "port: {number: 443, name: https, protocol: HTTPS}\nhosts: [example.com]\n\
                  tls: {httpsRedirect: true, mode: SIMPLE, credentialName: test}";
    let b = export(&format!("{}{SIMPLE_ROUTE}", gateway("gateway", "default", server)));
    let call = Call {
        port: 443,
        host: "example.com",
        path: "/",
        sni: Some("example.com"),
    };
    assert_eq!(
        simulate(&b, call),
        reached(
            "0.0.0.0_443",
            "https.443.https.gateway.default",
            "example.com:443",
            Some("outbound|443||b.default.svc.cluster.local"),
            None
        )
    );
}

#[test]
fn cross_namespace_tcp_gateway_collision_keeps_the_first() {
    // "duplicate cross namespace gateway collision - selected first": both servers take port 80;
    // the one that sorts first (istio-system before zeta) is the one serving.
    let tcp = "port: {number: 80, name: tcp, protocol: TCP}\nhosts: [foo.bar]";
    let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: bookinfo, namespace: default}\n\
              spec:\n  hosts: ['*']\n  gateways: [istio-system/gateway]\n  tcp:\n  - route: [{destination: {host: productpage, port: {number: 9080}}}]\n";
    let b = export(&format!(
        "{}{}{vs}",
        gateway("gateway", "istio-system", tcp),
        gateway("gateway", "zeta", tcp)
    ));
    let r = simulate(&b, http(80, "", ""));
    assert_eq!(r.listener.as_deref(), Some("0.0.0.0_80"));
    assert_eq!(
        r.cluster.as_deref(),
        Some("outbound|9080||productpage.default.svc.cluster.local")
    );
}

#[test]
fn duplicate_tls_gateway_is_not_two_chains() {
    // "duplicate tls gateway": istiod emits two identical chains that Envoy would NACK (istio
    // #24638, a known bug); the Plan keeps the first and warns, so Envoy gets one chain.
    let tls = "port: {number: 443, name: https-ingress, protocol: HTTPS}\nhosts: ['./*']\n\
               tls: {credentialName: sds-credential, mode: SIMPLE}";
    let b = export(&format!(
        "{}{}",
        gateway("gateway", "istio-system", tls),
        gateway("gateway", "default", tls)
    ));
    let call = Call {
        port: 443,
        host: "foo.bar",
        path: "/",
        sni: Some("foo.bar"),
    };
    let r = simulate(&b, call);
    assert_eq!(r.listener.as_deref(), Some("0.0.0.0_443"));
    assert_ne!(r.error, Some("multiple filter chains"));
}

#[test]
fn overlapping_sni_takes_the_most_specific_chain() {
    // TestGatewayFilterChainSNIOverlap / "overlapping SNI match": an exact name beats a
    // wildcard, a wildcard beats `*`, and no SNI takes the chain without names.
    let servers = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gateway, namespace: default}\nspec:\n  \
                   selector: {istio: ingressgateway}\n  servers:\n  \
                   - port: {number: 443, name: exact, protocol: HTTPS}\n    hosts: [a.example.com]\n    tls: {mode: SIMPLE, credentialName: a}\n  \
                   - port: {number: 443, name: wild, protocol: HTTPS}\n    hosts: ['*.example.com']\n    tls: {mode: SIMPLE, credentialName: w}\n  \
                   - port: {number: 443, name: any, protocol: HTTPS}\n    hosts: ['*']\n    tls: {mode: SIMPLE, credentialName: s}\n";
    let b = export(servers);
    let rc = |sni: &'static str| {
        simulate(
            &b,
            Call {
                port: 443,
                host: "x",
                path: "/",
                sni: Some(sni),
            },
        )
        .route_config
    };
    assert_eq!(rc("a.example.com").as_deref(), Some("https.443.exact.gateway.default"));
    assert_eq!(rc("b.example.com").as_deref(), Some("https.443.wild.gateway.default"));
    assert_eq!(rc("other.org").as_deref(), Some("https.443.any.gateway.default"));
    assert_eq!(rc("").as_deref(), Some("https.443.any.gateway.default"));
}

#[test]
fn tls_passthrough_routes_by_sni_from_the_virtual_service() {
    // "duplicate tls virtual service" (the first rule for an SNI wins) and TestTLSRouteTermination's
    // passthrough half.
    let gw = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: ingressgateway, namespace: istio-system}\nspec:\n  \
              selector: {istio: ingressgateway}\n  servers:\n  - hosts: ['*.example.com']\n    port: {name: https, number: 443, protocol: HTTPS}\n    \
              tls: {mode: PASSTHROUGH}\n---\n";
    let vs = |ns: &str, dest: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: vs1, namespace: {ns}}}\nspec:\n  \
             gateways: [istio-system/ingressgateway]\n  hosts: [mysite.example.com]\n  tls:\n  \
             - match: [{{port: 443, sniHosts: [mysite.example.com]}}]\n    route: [{{destination: {{host: {dest}, port: {{number: 443}}}}}}]\n---\n"
        )
    };
    let b = export(&format!("{gw}{}{}", vs("default", "mysite"), vs("foo", "other")));
    let call = Call {
        port: 443,
        host: "",
        path: "",
        sni: Some("mysite.example.com"),
    };
    let r = simulate(&b, call);
    assert_eq!(r.error, None, "{r:?}");
    assert_eq!(
        r.cluster.as_deref(),
        Some("outbound|443||mysite.default.svc.cluster.local")
    );
    let other = Call {
        sni: Some("nope.example.com"),
        ..call
    };
    assert_eq!(simulate(&b, other).error, Some("no filter chain"));
}

#[test]
fn a_destination_without_a_port_takes_the_listeners() {
    // GetDestinationCluster: no port, and the service is unknown (or has several): the listener's.
    let b = export(&format!(
        "{}{SIMPLE_ROUTE}",
        gateway(
            "gateway",
            "default",
            "port: {number: 8080, name: http, protocol: HTTP}\nhosts: [example.com]"
        )
    ));
    assert_eq!(
        simulate(&b, http(8080, "example.com", "/x")).cluster.as_deref(),
        Some("outbound|8080||b.default.svc.cluster.local")
    );
}
