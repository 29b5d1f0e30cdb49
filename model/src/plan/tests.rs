//! Plan tests: one per ordering or merging rule, asserting exact route order and cluster names.

use super::*;
use crate::api::destination_rule::{ClientTlsMode, SimpleLb};
use crate::diag::Diagnostic;

fn plan_for(yaml: &str, labels: Option<&[(&str, &str)]>) -> (Plan, Vec<Diagnostic>) {
    let loaded = crate::load_str("t.yaml", yaml);
    let errors: Vec<_> = loaded.diagnostics.iter().filter(|d| d.is_error()).collect();
    assert!(errors.is_empty(), "{errors:#?}");
    let labels = labels.map(|l| l.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
    build(
        &loaded.config,
        &PlanOptions {
            labels,
            namespace: None,
            sidecar: false,
        },
    )
}

fn plan(yaml: &str) -> Plan {
    plan_for(yaml, None).0
}

fn routes<'p>(p: &'p Plan, table: &str, domain: &str) -> &'p [Route] {
    let t = p.route_table(table).unwrap_or_else(|| panic!("no route table {table}"));
    let vh = t.virtual_hosts.iter().find(|v| v.domains.iter().any(|d| d == domain));
    &vh.unwrap_or_else(|| panic!("no vhost {domain} in {:?}", t.virtual_hosts))
        .routes
}

fn clusters_of(r: &Route) -> Vec<(String, u32)> {
    match &r.action {
        RouteAction::Route { clusters, .. } => clusters.iter().map(|c| (c.cluster.clone(), c.weight)).collect(),
        other => panic!("not a route action: {other:?}"),
    }
}

fn uri_of(r: &Route) -> String {
    match &r.matcher.uri {
        Some(u) => format!("{:?}{:?}{:?}", u.exact, u.prefix, u.regex),
        None => "any".into(),
    }
}

const GW: &str = "\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ['*']
---
";

fn vs(ns: &str, name: &str, hosts: &str, http: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: {ns}}}\n\
         spec:\n  hosts: {hosts}\n  gateways: [istio-system/gw]\n  http: {http}\n---\n"
    )
}

#[test]
fn seed_ingress_plans_a_50_50_split_across_subsets() {
    let yaml = ["internal-routing", "ingress-gateway", "egress-gateway", "workloads"]
        .map(|f| {
            std::fs::read_to_string(format!(
                "{}/../examples/seed-istio-gateways/{f}.yaml",
                env!("CARGO_MANIFEST_DIR")
            ))
            .unwrap_or_default()
        })
        .join("---\n");
    let (p, _) = plan_for(&yaml, Some(&[("istio", "ingressgateway")]));
    assert_eq!(p.listeners.len(), 1);
    assert_eq!(p.listeners[0].name, "0.0.0.0_80");
    assert_eq!(p.namespace, "istio-system");
    let r = routes(&p, "http.80", "app.example.com");
    assert_eq!(r.len(), 1);
    let v1 = "outbound|80|v1|app-svc.frontend.svc.cluster.local";
    let v2 = "outbound|80|v2|app-svc.frontend.svc.cluster.local";
    assert_eq!(clusters_of(&r[0]), vec![(v1.to_string(), 50), (v2.to_string(), 50)]);
    assert_eq!(r[0].virtual_service, "istio-system/ingress-app-vs");
    // The mesh-only VirtualService of `frontend` does not bind to the gateway.
    assert_eq!(p.route_tables[0].virtual_hosts.len(), 1);
    let c1 = p.cluster(v1).expect("v1 cluster");
    assert_eq!(c1.endpoints.len(), 1);
    assert_eq!(
        (c1.endpoints[0].address.as_str(), c1.endpoints[0].port),
        ("127.0.0.11", 8080)
    );
    assert_eq!(c1.policy.load_balancer.simple, Some(SimpleLb::LeastRequest));
    assert_eq!(c1.policy.tls.mode, Some(ClientTlsMode::Disable));
    assert_eq!(c1.policy.destination_rule.as_deref(), Some("frontend/app-ds"));
    let c2 = p.cluster(v2).expect("v2 cluster");
    assert_eq!(c2.endpoints[0].address, "127.0.0.12");
    let all = p
        .cluster("outbound|80||app-svc.frontend.svc.cluster.local")
        .expect("default cluster");
    assert_eq!(all.endpoints.len(), 2);
}

#[test]
fn seed_egress_plans_both_ports() {
    let yaml = ["egress-gateway", "workloads"]
        .map(|f| {
            std::fs::read_to_string(format!(
                "{}/../examples/seed-istio-gateways/{f}.yaml",
                env!("CARGO_MANIFEST_DIR")
            ))
            .unwrap_or_default()
        })
        .join("---\n");
    let (p, _) = plan_for(&yaml, Some(&[("istio", "egressgateway")]));
    let names: Vec<_> = p.listeners.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["0.0.0.0_80", "0.0.0.0_443"]);
    let r = routes(&p, "http.80", "api.example.com");
    assert_eq!(
        clusters_of(&r[0]),
        vec![("outbound|443||api.example.com".to_string(), 100)]
    );
    // HTTPS without a tls block: the zero value of the mode is PASSTHROUGH, and the VirtualService
    // has no `tls` rules, so nothing is routed on 443.
    let chain = &p.listeners[1].filter_chains[0];
    assert_eq!(chain.transport, Transport::Passthrough);
    assert_eq!(chain.action, ChainAction::TlsPassthrough { routes: vec![] });
    let api = p.cluster("outbound|443||api.example.com").expect("api cluster");
    assert_eq!(
        (api.endpoints[0].address.as_str(), api.endpoints[0].port),
        ("api.example.com", 443)
    );
}

#[test]
fn bookinfo_gateway_routes_in_order_to_productpage() {
    let dir = format!("{}/../examples/bookinfo", env!("CARGO_MANIFEST_DIR"));
    let loaded = crate::load_paths(&[dir], None).expect("read bookinfo");
    let labels = [("istio".to_string(), "ingressgateway".to_string())]
        .into_iter()
        .collect();
    let (p, _) = build(
        &loaded.config,
        &PlanOptions {
            labels: Some(labels),
            namespace: None,
            sidecar: false,
        },
    );
    assert_eq!(p.listeners[0].name, "0.0.0.0_8080");
    let r = routes(&p, "http.8080", "*");
    let uris: Vec<_> = r.iter().map(uri_of).collect();
    assert_eq!(
        uris,
        [
            "Some(\"/productpage\")NoneNone",
            "NoneSome(\"/static\")None",
            "Some(\"/login\")NoneNone",
            "Some(\"/logout\")NoneNone",
            "NoneSome(\"/api/v1/products\")None",
        ]
    );
    for route in r {
        assert_eq!(
            clusters_of(route),
            vec![("outbound|9080||productpage.default.svc.cluster.local".to_string(), 100)]
        );
    }
}

#[test]
fn catch_alls_move_last_and_public_virtual_services_go_by_name() {
    // Exported to all (the default), VirtualServices keep creation-time/name order whatever
    // their namespace; the catch-all goes last.
    let yaml = format!(
        "{GW}{}{}{}",
        vs("apps", "a-catchall", "['*']", "[{route: [{destination: {host: all.example.com, port: {number: 80}}}]}]"),
        vs("apps", "b-api", "['*']", "[{match: [{uri: {prefix: /api}}], route: [{destination: {host: api.example.com, port: {number: 80}}}]}]"),
        vs("istio-system", "z-local", "['*']", "[{match: [{uri: {prefix: /local}}], route: [{destination: {host: local.example.com, port: {number: 80}}}]}]"),
    );
    let p = plan(&yaml);
    let order: Vec<_> = routes(&p, "http.80", "*")
        .iter()
        .map(|r| r.virtual_service.as_str())
        .collect();
    assert_eq!(order, ["apps/b-api", "istio-system/z-local", "apps/a-catchall"]);
}

#[test]
fn export_to_decides_which_virtual_services_a_gateway_sees_and_in_what_order() {
    let route = |p: &str| {
        format!("[{{match: [{{uri: {{prefix: /{p}}}}}], route: [{{destination: {{host: {p}.example.com, port: {{number: 80}}}}}}]}}]")
    };
    let with_export = |ns: &str, name: &str, export: &str| {
        vs(ns, name, "['*']", &route(name)).replace("  gateways:", &format!("  exportTo: {export}\n  gateways:"))
    };
    let yaml = format!(
        "{GW}{}{}{}{}{}{}",
        vs("apps", "a-public", "['*']", &route("a-public")),
        with_export("apps", "b-named", "[istio-system]"),
        with_export("istio-system", "c-private", "['.']"),
        with_export("apps", "d-elsewhere", "[other]"),
        with_export("apps", "e-private-to-apps", "['.']"),
        with_export("istio-system", "f-nobody", "['~']"),
    );
    let order = |p: &Plan| -> Vec<String> {
        routes(p, "http.80", "*")
            .iter()
            .map(|r| r.virtual_service.clone())
            .collect()
    };
    // Private to the gateway's namespace, then exported to it by name, then public.
    assert_eq!(
        order(&plan(&yaml)),
        ["istio-system/c-private", "apps/b-named", "apps/a-public"]
    );
    // With the mesh default `.`, a VirtualService without exportTo stays in its namespace.
    let mut loaded = crate::load_str("t.yaml", &yaml);
    crate::config::apply_mesh_str(&mut loaded, "mesh.yaml", "defaultVirtualServiceExportTo: ['.']\n");
    let opts = PlanOptions {
        labels: None,
        namespace: None,
        sidecar: false,
    };
    let (p, _) = build(&loaded.config, &opts);
    assert_eq!(order(&p), ["istio-system/c-private", "apps/b-named"]);
}

#[test]
fn emission_stops_after_the_first_catch_all() {
    let http = "[{match: [{uri: {prefix: /a}}], route: [{destination: {host: a.example.com, port: {number: 80}}}]}, \
                {route: [{destination: {host: b.example.com, port: {number: 80}}}]}, \
                {match: [{uri: {prefix: /c}}], route: [{destination: {host: c.example.com, port: {number: 80}}}]}]";
    let p = plan(&format!("{GW}{}", vs("apps", "r", "['*']", http)));
    let r = routes(&p, "http.80", "*");
    assert_eq!(r.len(), 2);
    assert_eq!(r[1].rule, 1);
}

#[test]
fn match_port_and_match_gateways_narrow_routes() {
    let http = "[{match: [{port: 8080, uri: {prefix: /other-port}}, {uri: {prefix: /this-port}, port: 80}], route: [{destination: {host: a.example.com, port: {number: 80}}}]}, \
                {match: [{gateways: [istio-system/other], uri: {prefix: /other-gw}}], route: [{destination: {host: b.example.com, port: {number: 80}}}]}, \
                {match: [{gateways: [istio-system/gw], uri: {prefix: /this-gw}}], route: [{destination: {host: b.example.com, port: {number: 80}}}]}]";
    let p = plan(&format!("{GW}{}", vs("apps", "r", "['*']", http)));
    let r = routes(&p, "http.80", "*");
    let kept: Vec<_> = r.iter().map(|r| (r.rule, r.match_index)).collect();
    assert_eq!(kept, [(0, Some(1)), (2, Some(0))]);
}

#[test]
fn weights_are_relative_single_is_100_and_zero_is_dropped() {
    let http = "[{match: [{uri: {prefix: /one}}], route: [{destination: {host: a.example.com, port: {number: 80}}, weight: 0}]}, \
                {match: [{uri: {prefix: /three}}], route: [{destination: {host: a.example.com, port: {number: 80}}, weight: 1}, \
                 {destination: {host: b.example.com, port: {number: 80}}, weight: 3}, {destination: {host: c.example.com, port: {number: 80}}, weight: 0}]}]";
    let p = plan(&format!("{GW}{}", vs("apps", "r", "['*']", http)));
    let r = routes(&p, "http.80", "*");
    assert_eq!(clusters_of(&r[0]), [("outbound|80||a.example.com".to_string(), 100)]);
    assert_eq!(
        clusters_of(&r[1]),
        [
            ("outbound|80||a.example.com".to_string(), 1),
            ("outbound|80||b.example.com".to_string(), 3)
        ]
    );
}

#[test]
fn virtual_hosts_are_the_intersection_of_server_and_virtual_service_hosts() {
    let yaml = GW.replace("hosts: ['*']", "hosts: ['*.example.com', 'apps/api.example.org']")
        + &vs(
            "apps",
            "a",
            "['*']",
            "[{route: [{destination: {host: x.example.com, port: {number: 80}}}]}]",
        )
        + &vs(
            "apps",
            "b",
            "[shop.example.com]",
            "[{route: [{destination: {host: x.example.com, port: {number: 80}}}]}]",
        )
        + &vs(
            "other",
            "c",
            "[api.example.org]",
            "[{route: [{destination: {host: x.example.com, port: {number: 80}}}]}]",
        );
    let p = plan(&yaml);
    let mut domains: Vec<_> = p.route_tables[0]
        .virtual_hosts
        .iter()
        .flat_map(|v| v.domains.clone())
        .collect();
    domains.sort();
    // `*` meets `*.example.com` and `api.example.org`; `shop.example.com` is the more specific name;
    // `other/c` may not bind to `apps/api.example.org`.
    assert_eq!(domains, ["*.example.com", "api.example.org", "shop.example.com"]);
    let api = routes(&p, "http.80", "api.example.org");
    assert_eq!(
        api.iter().map(|r| r.virtual_service.as_str()).collect::<Vec<_>>(),
        ["apps/a"]
    );
}

#[test]
fn short_names_expand_in_the_virtual_service_namespace() {
    let yaml = format!(
        "{GW}{}",
        vs(
            "bookinfo",
            "r",
            "['*']",
            "[{route: [{destination: {host: reviews, subset: v1, port: {number: 9080}}}]}]"
        )
    );
    let p = plan(&yaml);
    assert_eq!(
        clusters_of(&routes(&p, "http.80", "*")[0])[0].0,
        "outbound|9080|v1|reviews.bookinfo.svc.cluster.local"
    );
}

const SVC: &str = "\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web, namespace: apps}
spec:
  hosts: [web.apps.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}, {number: 443, name: https, protocol: HTTPS}]
  endpoints:
  - {address: 127.0.0.1, labels: {version: v1}}
  - {address: 127.0.0.2, labels: {version: v2}, ports: {http: 8080}}
---
";

fn dr(ns: &str, name: &str, body: &str) -> String {
    format!("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{body}---\n")
}

#[test]
fn port_level_settings_replace_the_whole_top_level_policy() {
    let body = "  host: web\n  trafficPolicy:\n    loadBalancer: {simple: ROUND_ROBIN}\n    connectionPool: {tcp: {maxConnections: 7}}\n    \
                portLevelSettings:\n    - port: {number: 443}\n      tls: {mode: SIMPLE, sni: web.example.com}\n";
    let p = plan(&format!("{GW}{SVC}{}", dr("apps", "web", body)));
    let c80 = p.cluster("outbound|80||web.apps.svc.cluster.local").expect("80");
    assert_eq!(c80.policy.load_balancer.simple, Some(SimpleLb::RoundRobin));
    assert!(c80.policy.connection_pool.is_some());
    let c443 = p.cluster("outbound|443||web.apps.svc.cluster.local").expect("443");
    assert_eq!(
        c443.policy.load_balancer.simple,
        Some(SimpleLb::LeastRequest),
        "nothing is inherited"
    );
    assert!(c443.policy.connection_pool.is_none());
    assert_eq!(c443.policy.tls.mode, Some(ClientTlsMode::Simple));
}

#[test]
fn subset_policies_override_field_by_field_and_subset_port_level_decides_all() {
    let body = "  host: web\n  trafficPolicy:\n    loadBalancer: {simple: ROUND_ROBIN}\n    connectionPool: {tcp: {maxConnections: 7}}\n  subsets:\n  \
                - name: v1\n    labels: {version: v1}\n    trafficPolicy:\n      loadBalancer: {simple: RANDOM}\n  \
                - name: v2\n    labels: {version: v2}\n    trafficPolicy:\n      portLevelSettings:\n      - port: {number: 80}\n        outlierDetection: {consecutive5xxErrors: 3}\n";
    let p = plan(&format!("{GW}{SVC}{}", dr("apps", "web", body)));
    let v1 = p.cluster("outbound|80|v1|web.apps.svc.cluster.local").expect("v1");
    assert_eq!(v1.policy.load_balancer.simple, Some(SimpleLb::Random));
    assert!(v1.policy.connection_pool.is_some(), "inherited from the top level");
    assert_eq!(
        v1.endpoints.iter().map(|e| e.address.as_str()).collect::<Vec<_>>(),
        ["127.0.0.1"]
    );
    let v2 = p.cluster("outbound|80|v2|web.apps.svc.cluster.local").expect("v2");
    assert_eq!(v2.policy.load_balancer.simple, Some(SimpleLb::LeastRequest));
    assert!(
        v2.policy.connection_pool.is_none(),
        "the subset's port-level entry decides even where silent"
    );
    assert_eq!(
        v2.policy
            .outlier_detection
            .as_ref()
            .and_then(|o| o.consecutive_5xx_errors),
        Some(3)
    );
    assert_eq!(
        (v2.endpoints[0].address.as_str(), v2.endpoints[0].port),
        ("127.0.0.2", 8080)
    );
    let v2_443 = p.cluster("outbound|443|v2|web.apps.svc.cluster.local").expect("v2 443");
    assert_eq!(
        v2_443.policy.load_balancer.simple,
        Some(SimpleLb::RoundRobin),
        "no port-level entry for 443: top level"
    );
}

#[test]
fn several_rules_for_one_host_merge_subsets_and_the_first_policy_wins() {
    let a = dr("apps", "a", "  host: web.apps.svc.cluster.local\n  trafficPolicy: {loadBalancer: {simple: RANDOM}}\n  subsets: [{name: v1, labels: {version: v1}}]\n");
    let b = dr("apps", "b", "  host: web\n  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}\n  subsets: [{name: v1, labels: {version: v2}}, {name: v2, labels: {version: v2}}]\n");
    let p = plan(&format!("{GW}{SVC}{b}{a}"));
    let v1 = p.cluster("outbound|80|v1|web.apps.svc.cluster.local").expect("v1");
    assert_eq!(v1.policy.load_balancer.simple, Some(SimpleLb::Random));
    assert_eq!(v1.policy.destination_rule.as_deref(), Some("apps/a,apps/b"));
    assert_eq!(
        v1.endpoints[0].address, "127.0.0.1",
        "the first definition of a subset wins"
    );
    assert!(p.cluster("outbound|80|v2|web.apps.svc.cluster.local").is_some());
}

fn plan_in(yaml: &str, namespace: &str, labels: &[(&str, &str)]) -> Plan {
    let loaded = crate::load_str("t.yaml", yaml);
    let opts = PlanOptions {
        labels: Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
        namespace: Some(namespace.into()),
        sidecar: false,
    };
    build(&loaded.config, &opts).0
}

fn lb_of(p: &Plan) -> Option<SimpleLb> {
    p.cluster("outbound|80||web.apps.svc.cluster.local")
        .expect("cluster")
        .policy
        .load_balancer
        .simple
}

#[test]
fn rules_in_the_gateway_namespace_win_over_the_service_namespace() {
    let rule = |ns: &str, name: &str, extra: &str, lb: &str| {
        dr(
            ns,
            name,
            &format!(
                "  host: web.apps.svc.cluster.local\n{extra}  trafficPolicy: {{loadBalancer: {{simple: {lb}}}}}\n"
            ),
        )
    };
    let gw = GW.replace("namespace: istio-system", "namespace: gateways");
    let local = rule("gateways", "web-at-gateway", "", "RANDOM");
    let remote = rule("apps", "web", "", "ROUND_ROBIN");
    let ingress = [("istio", "ingressgateway")];
    assert_eq!(
        lb_of(&plan_in(&format!("{gw}{SVC}{remote}{local}"), "gateways", &ingress)),
        Some(SimpleLb::Random)
    );
    // A rule of the service's namespace that is not exported to the gateway's is not seen there.
    let hidden = rule("apps", "web", "  exportTo: ['.']\n", "ROUND_ROBIN");
    assert_eq!(
        lb_of(&plan_in(&format!("{gw}{SVC}{hidden}"), "gateways", &ingress)),
        Some(SimpleLb::LeastRequest)
    );
    // A rule with a workloadSelector applies to the proxies of its namespace that it selects,
    // and wins over the rule without one.
    let selecting = rule(
        "gateways",
        "for-ingress",
        "  workloadSelector: {matchLabels: {istio: ingressgateway}}\n",
        "PASSTHROUGH",
    );
    let yaml = format!("{gw}{SVC}{local}{selecting}");
    assert_eq!(
        lb_of(&plan_in(&yaml, "gateways", &ingress)),
        Some(SimpleLb::Passthrough)
    );
    assert_eq!(
        lb_of(&plan_in(&yaml, "gateways", &[("istio", "egressgateway")])),
        Some(SimpleLb::Random)
    );
}

#[test]
fn a_gateway_in_the_root_namespace_prefers_the_services_rules_to_the_roots_exported_ones() {
    // istiod's own exception: for a proxy in the root namespace (istio-system), the root's rules
    // exported to everyone are mesh-wide defaults, looked at after the service's namespace; only
    // the root's private rules come first.
    let rule = |ns: &str, name: &str, extra: &str, lb: &str| {
        dr(
            ns,
            name,
            &format!(
                "  host: web.apps.svc.cluster.local\n{extra}  trafficPolicy: {{loadBalancer: {{simple: {lb}}}}}\n"
            ),
        )
    };
    let root_public = rule("istio-system", "mesh-default", "", "RANDOM");
    let service = rule("apps", "web", "", "ROUND_ROBIN");
    let ingress = [("istio", "ingressgateway")];
    let p = plan_in(&format!("{GW}{SVC}{service}{root_public}"), "istio-system", &ingress);
    assert_eq!(lb_of(&p), Some(SimpleLb::RoundRobin));
    let p = plan_in(&format!("{GW}{SVC}{root_public}"), "istio-system", &ingress);
    assert_eq!(
        lb_of(&p),
        Some(SimpleLb::Random),
        "without the service's rule the root's applies"
    );
    let root_private = rule("istio-system", "gateway-only", "  exportTo: ['.']\n", "PASSTHROUGH");
    let p = plan_in(&format!("{GW}{SVC}{service}{root_private}"), "istio-system", &ingress);
    assert_eq!(lb_of(&p), Some(SimpleLb::Passthrough));
}

#[test]
fn istio_defaults_are_explicit() {
    let http = "[{match: [{uri: {exact: /r}}], redirect: {uri: /new, derivePort: FROM_REQUEST_PORT}}, \
                {match: [{uri: {exact: /f}}], fault: {abort: {httpStatus: 503}}, route: [{destination: {host: a.example.com, port: {number: 80}}}]}, \
                {match: [{uri: {exact: /m}}], mirror: {host: m.example.com, port: {number: 80}}, route: [{destination: {host: a.example.com, port: {number: 80}}}], \
                 retries: {attempts: 3, retryOn: 'gateway-error,503'}}, \
                {match: [{uri: {exact: /m0}}], mirror: {host: m.example.com, port: {number: 80}}, mirrorPercentage: {value: 0}, route: [{destination: {host: a.example.com, port: {number: 80}}}]}]";
    let p = plan(&format!("{GW}{}", vs("apps", "r", "['*']", http)));
    let r = routes(&p, "http.80", "*");
    match &r[0].action {
        RouteAction::Redirect(rd) => {
            assert_eq!(rd.code, 301);
            assert_eq!(rd.port, RedirectPort::FromRequestPort);
            assert_eq!(rd.path.as_deref(), Some("/new"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(r[1].fault, None, "no percentage: nothing is injected");
    assert_eq!(r[1].timeout, None, "no timeout by default");
    assert_eq!(r[1].retry.attempts, 2);
    assert_eq!(
        r[1].retry.retry_on,
        [
            "connect-failure",
            "refused-stream",
            "unavailable",
            "cancelled",
            "retriable-status-codes"
        ]
    );
    assert_eq!(
        r[2].mirrors,
        [Mirror {
            cluster: "outbound|80||m.example.com".into(),
            percentage: 100.0
        }]
    );
    assert_eq!(r[2].retry.attempts, 3);
    assert_eq!(r[2].retry.retry_on, ["gateway-error", "retriable-status-codes"]);
    assert_eq!(r[2].retry.retriable_status_codes, [503]);
    assert!(r[3].mirrors.is_empty(), "an explicit 0 turns the mirror off");
}

#[test]
fn authority_precedence_and_rewrite_prefix() {
    let http = "[{match: [{uri: {prefix: /foo}}], rewrite: {uri: /bar}, headers: {request: {set: {':authority': route-authority, x-a: b}}}, \
                 route: [{destination: {host: a.example.com, port: {number: 80}}, headers: {request: {set: {host: dest-authority}}}}]}]";
    let p = plan(&format!("{GW}{}", vs("apps", "r", "['*']", http)));
    let r = &routes(&p, "http.80", "*")[0];
    let RouteAction::Route { clusters, rewrite } = &r.action else {
        panic!()
    };
    let rw = rewrite.as_ref().expect("rewrite");
    assert_eq!(rw.host.as_deref(), Some("route-authority"));
    assert_eq!(
        (rw.prefix.as_deref(), rw.matched_prefix.as_deref()),
        (Some("/bar"), Some("/foo"))
    );
    assert_eq!(clusters[0].host_rewrite.as_deref(), Some("dest-authority"));
    let req = r.request_headers.as_ref().expect("headers");
    assert!(req.set.contains_key("x-a") && !req.set.contains_key(":authority"));
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
fn plan_json_round_trips() {
    let p = plan(&format!(
        "{GW}{SVC}{}",
        vs(
            "apps",
            "r",
            "['*']",
            "[{route: [{destination: {host: web, port: {number: 80}}}], timeout: 3s}]"
        )
    ));
    let json = serde_json::to_string(&p).expect("serialise");
    let back: Plan = serde_json::from_str(&json).expect("deserialise");
    assert_eq!(back, p);
}

#[test]
fn delegates_are_expanded_one_level_with_root_matches_anded() {
    let yaml = format!(
        "{GW}{}{}",
        vs("apps", "root", "['*']", "[{match: [{uri: {prefix: /reviews}}], delegate: {name: reviews, namespace: apps}}]"),
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews, namespace: apps}\nspec:\n  http:\n  \
         - match: [{headers: {end-user: {exact: jason}}}]\n    route: [{destination: {host: reviews, subset: v2, port: {number: 9080}}}]\n  \
         - route: [{destination: {host: reviews, subset: v1, port: {number: 9080}}}]\n---\n"
    );
    let p = plan(&yaml);
    let r = routes(&p, "http.80", "*");
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].matcher.headers.len(), 1);
    assert_eq!(
        r[0].matcher.uri.as_ref().and_then(|u| u.prefix.as_deref()),
        Some("/reviews")
    );
    assert_eq!(
        r[1].matcher.uri.as_ref().and_then(|u| u.prefix.as_deref()),
        Some("/reviews")
    );
    assert_eq!(r[1].virtual_service, "apps/reviews");
}

#[test]
fn without_headers_and_presence_matches_compile_as_istio_does() {
    let http = "[{match: [{headers: {x-present: {}, x-star: {regex: '*'}}, withoutHeaders: {end-user: {exact: jason}, x-gone: {}}, queryParams: {q: {exact: ''}}}], \
                 route: [{destination: {host: a.example.com, port: {number: 80}}}]}]";
    let p = plan(&format!("{GW}{}", vs("apps", "r", "['*']", http)));
    let m = &routes(&p, "http.80", "*")[0].matcher;
    let h: Vec<_> = m
        .headers
        .iter()
        .map(|h| (h.name.as_str(), h.value.is_some(), h.invert, h.treat_missing_as_empty))
        .collect();
    assert_eq!(
        h,
        [
            ("x-present", false, false, false),
            ("x-star", false, false, false),
            ("end-user", true, true, true),
            ("x-gone", false, true, false)
        ]
    );
    assert_eq!(m.query_params[0].value, None);
}

#[test]
fn sidecar_role_routes_by_port_with_mesh_virtual_services() {
    let yaml = format!(
        "{SVC}apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: web, namespace: apps}}\nspec:\n  \
         hosts: [web]\n  http:\n  - match: [{{uri: {{prefix: /v2}}}}]\n    route: [{{destination: {{host: web, port: {{number: 80}}}}}}]\n---\n\
         apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: db, namespace: apps}}\nspec:\n  \
         hosts: [db.example.com]\n  addresses: [240.0.0.1]\n  resolution: STATIC\n  ports: [{{number: 5432, name: pg, protocol: TCP}}]\n  \
         endpoints: [{{address: 127.0.0.1}}]\n---\n"
    );
    let loaded = crate::load_str("t.yaml", &yaml);
    let (p, _) = build(
        &loaded.config,
        &PlanOptions {
            labels: None,
            namespace: Some("apps".into()),
            sidecar: true,
        },
    );
    assert!(p.listeners.is_empty());
    let out = p.outbound.as_ref().expect("outbound");
    assert_eq!(out.route_tables.get(&80).map(String::as_str), Some("outbound.80"));
    assert_eq!(
        out.tcp
            .get("db.example.com:5432")
            .map(|r| r.clusters[0].cluster.as_str()),
        Some("outbound|5432||db.example.com")
    );
    let r80 = routes(&p, "outbound.80", "web.apps.svc.cluster.local");
    assert_eq!(r80.len(), 1, "the mesh VirtualService's rule");
    assert_eq!(r80[0].virtual_service, "apps/web");
    // HTTPS is reached by CONNECT (TLS from the application), like TCP.
    assert_eq!(
        out.tcp
            .get("web.apps.svc.cluster.local:443")
            .map(|r| r.clusters[0].cluster.as_str()),
        Some("outbound|443||web.apps.svc.cluster.local")
    );
}
