//! Filter chains at a gateway: HTTPS redirects and SNI, TCP and TLS routes, selectors.

use super::*;

#[test]
fn a_redirecting_server_redirects_every_host_its_virtual_services_bring() {
    // Server host `*`: the virtual host is the VirtualService's a.example.com, and it redirects.
    let gw = GW.replace(
        "    hosts: ['*']\n",
        "    hosts: ['*']\n    tls: {httpsRedirect: true}\n",
    );
    let route = "[{route: [{destination: {host: a.example.com, port: {number: 80}}}]}]";
    let p = plan(&format!("{gw}{}", vs("apps", "a", "[a.example.com]", route)));
    let t = p.route_table("http.80").expect("http.80");
    let a = t
        .virtual_hosts
        .iter()
        .find(|v| v.domains.iter().any(|d| d == "a.example.com"))
        .expect("a.example.com");
    assert!(a.require_tls);
    // Without httpsRedirect, the same host is served in plaintext.
    let p = plan(&format!("{GW}{}", vs("apps", "a", "[a.example.com]", route)));
    let t = p.route_table("http.80").expect("http.80");
    assert!(t.virtual_hosts.iter().all(|v| !v.require_tls));
}

#[test]
fn https_redirect_and_sni_filter_chains() {
    let yaml = "\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [a.example.com]
    tls: {httpsRedirect: true}
  - port: {number: 443, name: https-a, protocol: HTTPS}
    hosts: [a.example.com]
    tls: {mode: SIMPLE, serverCertificate: /a.crt, privateKey: /a.key}
  - port: {number: 443, name: https-wild, protocol: HTTPS}
    hosts: ['*.example.com']
    tls: {mode: MUTUAL, serverCertificate: /w.crt, privateKey: /w.key, caCertificates: /ca.crt}
  - port: {number: 443, name: https-dup, protocol: HTTPS}
    hosts: [a.example.com]
    tls: {mode: SIMPLE, serverCertificate: /d.crt, privateKey: /d.key}
  - port: {number: 9443, name: tls, protocol: TLS}
    hosts: ['*']
    tls: {mode: PASSTHROUGH}
---
";
    let (p, diags) = plan_for(yaml, None);
    let http = &p
        .route_tables
        .iter()
        .find(|t| t.name == "http.80")
        .expect("http.80")
        .virtual_hosts;
    assert_eq!(http.len(), 1);
    assert!(http[0].require_tls);
    assert_eq!(http[0].domains, ["a.example.com"]);
    let l443 = p.listeners.iter().find(|l| l.port == 443).expect("443");
    let chains: Vec<_> = l443
        .filter_chains
        .iter()
        .map(|c| (c.server_names.clone(), c.transport))
        .collect();
    assert_eq!(
        chains,
        [
            (vec!["a.example.com".to_string()], Transport::TerminateTls),
            (vec!["*.example.com".to_string()], Transport::TerminateTls)
        ]
    );
    assert_eq!(
        l443.filter_chains[1].tls.as_ref().and_then(|t| t.mode),
        Some(crate::api::gateway::ServerTlsMode::Mutual)
    );
    assert!(diags
        .iter()
        .any(|d| d.field.as_deref() == Some("spec.servers[3]") && d.message.contains("a.example.com")));
    let l9443 = p.listeners.iter().find(|l| l.port == 9443).expect("9443");
    assert!(
        l9443.filter_chains[0].server_names.is_empty(),
        "`*` takes any SNI and none"
    );
    assert_eq!(l9443.filter_chains[0].transport, Transport::Passthrough);
}

#[test]
fn tcp_and_tls_routes_at_a_gateway() {
    let yaml = "\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  servers:
  - port: {number: 31400, name: tcp, protocol: TCP}
    hosts: ['*']
  - port: {number: 443, name: tls, protocol: TLS}
    hosts: ['*.example.com']
    tls: {mode: PASSTHROUGH}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: tcp-echo, namespace: apps}
spec:
  hosts: ['*']
  gateways: [istio-system/gw]
  tcp:
  - match: [{port: 9999}]
    route: [{destination: {host: other, port: {number: 9000}}}]
  - match: [{port: 31400}]
    route:
    - {destination: {host: tcp-echo, port: {number: 9000}, subset: v1}, weight: 80}
    - {destination: {host: tcp-echo, port: {number: 9000}, subset: v2}, weight: 20}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: sni, namespace: apps}
spec:
  hosts: [a.example.com, b.example.com]
  gateways: [istio-system/gw]
  tls:
  - match: [{sniHosts: [a.example.com], port: 443}]
    route: [{destination: {host: a.example.com, port: {number: 443}}}]
  - match: [{sniHosts: [a.example.com, b.example.com]}]
    route: [{destination: {host: b.example.com, port: {number: 443}}}]
---
";
    let p = plan(yaml);
    let tcp = &p
        .listeners
        .iter()
        .find(|l| l.port == 31400)
        .expect("31400")
        .filter_chains[0];
    let ChainAction::Tcp { route: Some(route) } = &tcp.action else {
        panic!("{:?}", tcp.action)
    };
    assert_eq!(route.rule, 1);
    let w: Vec<_> = route.clusters.iter().map(|c| (c.cluster.as_str(), c.weight)).collect();
    assert_eq!(
        w,
        [
            ("outbound|9000|v1|tcp-echo.apps.svc.cluster.local", 80),
            ("outbound|9000|v2|tcp-echo.apps.svc.cluster.local", 20)
        ]
    );
    let tls = &p.listeners.iter().find(|l| l.port == 443).expect("443").filter_chains[0];
    let ChainAction::TlsPassthrough { routes } = &tls.action else {
        panic!()
    };
    let sni: Vec<_> = routes
        .iter()
        .map(|r| (r.sni_hosts.clone(), r.route.clusters[0].cluster.clone()))
        .collect();
    // a.example.com is taken by the first rule; the second keeps only b.example.com.
    assert_eq!(
        sni,
        [
            (
                vec!["a.example.com".to_string()],
                "outbound|443||a.example.com".to_string()
            ),
            (
                vec!["b.example.com".to_string()],
                "outbound|443||b.example.com".to_string()
            )
        ]
    );
}

#[test]
fn selector_chooses_gateways_and_unmatched_config_gives_a_404_vhost() {
    let (p, _) = plan_for(GW, Some(&[("istio", "egressgateway")]));
    assert!(p.listeners.is_empty());
    let (p, _) = plan_for(GW, Some(&[("istio", "ingressgateway"), ("app", "x")]));
    assert_eq!(p.listeners.len(), 1);
    let vh = &p.route_tables[0].virtual_hosts;
    assert_eq!(
        (vh.len(), vh[0].domains.as_slice(), vh[0].routes.len()),
        (1, ["*".to_string()].as_slice(), 0)
    );
}

#[test]
fn a_terminating_tls_server_routes_tcp_and_an_https_one_routes_http() {
    let yaml = "\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  servers:
  - port: {number: 8443, name: tls-db, protocol: TLS}
    hosts: ['*']
    tls: {mode: SIMPLE, credentialName: db-cert}
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ['*']
    tls: {mode: SIMPLE, credentialName: web-cert}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db, namespace: apps}
spec:
  hosts: ['*']
  gateways: [istio-system/gw]
  tcp:
  - match: [{port: 8443}]
    route: [{destination: {host: db, port: {number: 5432}}}]
---
";
    let p = plan(yaml);
    let chain = |port: u32| {
        &p.listeners
            .iter()
            .find(|l| l.port == port)
            .expect("listener")
            .filter_chains[0]
    };
    let tls = chain(8443);
    assert_eq!(tls.transport, Transport::TerminateTls);
    assert_eq!(tls.name, "tls.8443.tls-db.gw.istio-system");
    let ChainAction::Tcp { route: Some(route) } = &tls.action else {
        panic!("{:?}", tls.action)
    };
    assert_eq!(route.clusters[0].cluster, "outbound|5432||db.apps.svc.cluster.local");
    let https = chain(443);
    assert_eq!(https.transport, Transport::TerminateTls);
    assert_eq!(https.name, "https.443.https.gw.istio-system");
    assert!(
        matches!(&https.action, ChainAction::Http { route_table } if route_table == &https.name),
        "{:?}",
        https.action
    );
}
