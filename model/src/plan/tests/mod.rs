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
fn istio_defaults_are_explicit() {
    let http = "[{match: [{uri: {exact: /r}}], redirect: {uri: /new, derivePort: FROM_REQUEST_PORT}}, \
                {match: [{uri: {exact: /f}}], fault: {abort: {httpStatus: 503}, delay: {fixedDelay: 1s}}, route: [{destination: {host: a.example.com, port: {number: 80}}}]}, \
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
        vs("apps", "root", "['*']", "[{match: [{uri: {prefix: /reviews}, ignoreUriCase: true}], delegate: {name: reviews, namespace: apps}}]"),
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
    // The root's ignoreUriCase carries into every delegate route.
    assert!(r.iter().all(|r| r.matcher.ignore_uri_case), "{r:?}");
}

#[test]
fn a_virtual_service_bound_to_another_gateway_is_not_routed_here() {
    let other = vs(
        "apps",
        "other",
        "['*']",
        "[{match: [{uri: {prefix: /other}}], route: [{destination: {host: b.example.com}}]}]",
    )
    .replace("gateways: [istio-system/gw]", "gateways: [istio-system/other]");
    let mine = vs(
        "apps",
        "mine",
        "['*']",
        "[{match: [{uri: {prefix: /mine}}], route: [{destination: {host: a.example.com}}]}]",
    );
    let p = plan(&format!("{GW}{other}{mine}"));
    let names: Vec<&str> = routes(&p, "http.80", "*")
        .iter()
        .map(|r| r.virtual_service.as_str())
        .collect();
    assert_eq!(names, ["apps/mine"]);
}

#[test]
fn load_plans_valid_files_and_refuses_what_validation_rejects() {
    let dir = std::env::temp_dir().join(format!("mesh-plan-load-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("config.yaml");
    let route = "[{route: [{destination: {host: a.example.com}, weight: 50}, {destination: {host: b.example.com}, weight: 50}]}]";
    std::fs::write(&file, format!("{GW}{}", vs("apps", "web", "['*']", route))).expect("write");
    let (p, _) = load(&[dir.as_path()], None, &PlanOptions::default()).expect("valid config plans");
    assert_eq!(routes(&p, "http.80", "*").len(), 1);
    // A negative weight: Istio's validation refuses it, so nothing is planned.
    std::fs::write(
        &file,
        format!(
            "{GW}{}",
            vs("apps", "web", "['*']", &route.replace("weight: 50}]", "weight: -1}]"))
        ),
    )
    .expect("write");
    let err = load(&[dir.as_path()], None, &PlanOptions::default()).expect_err("invalid config");
    assert!(err.contains("config.yaml") && err.contains("weight"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
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
            .map(|r| (r.clusters[0].cluster.as_str(), r.virtual_service.as_str())),
        Some(("outbound|5432||db.example.com", "db.example.com:5432")),
        "without a VirtualService the route is named for the service and port"
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

#[test]
fn a_server_host_with_a_dot_binds_only_virtual_services_of_the_gateways_namespace() {
    let gw = GW.replace("hosts: ['*']", "hosts: ['./app.example.com']");
    let bound = |ns: &str| {
        let p = plan(&format!(
            "{gw}{}",
            vs(
                ns,
                "app",
                "[app.example.com]",
                "[{route: [{destination: {host: a.example.com, port: {number: 80}}}]}]"
            )
        ));
        let t = p.route_table("http.80").expect("http.80");
        t.virtual_hosts
            .iter()
            .any(|v| v.domains.iter().any(|d| d == "app.example.com") && !v.routes.is_empty())
    };
    assert!(bound("istio-system"));
    assert!(!bound("web"));
}

mod as_text;
mod destinations;
mod listeners;
mod policy;
mod routes;

#[test]
fn gateway_references_resolve_to_namespace_and_name_as_istio_resolves_them() {
    for (reference, want) in [
        ("mesh", "mesh"),
        ("gw", "apps/gw"),
        ("./gw", "apps/gw"),
        ("istio-system/gw", "istio-system/gw"),
        ("gw.istio-system.svc.cluster.local", "istio-system/gw"),
        ("gw.istio-system.svc", "istio-system/gw"),
    ] {
        assert_eq!(resolve_gateway_ref(reference, "apps"), want, "{reference}");
    }
}
