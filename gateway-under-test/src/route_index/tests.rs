use std::sync::Arc;

use super::*;
use crate::compile::VirtualHost;
use crate::context::Downstream;
use crate::matching::matches;

/// Nine routes; five require an exact header value (x-route or x-tenant), so the table is indexed.
const CONFIG: &str = "
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {app: gw}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: default}
spec:
  hosts: ['*']
  gateways: [istio-system/gw]
  http:
  - {name: a-tenant, match: [{uri: {prefix: /a}, headers: {x-tenant: {exact: t1}}}], directResponse: {status: 200}}
  - {name: r1, match: [{headers: {x-route: {exact: r1}}}], directResponse: {status: 200}}
  - {name: r2-two, match: [{uri: {prefix: /two}, headers: {x-route: {exact: r2}}}], directResponse: {status: 200}}
  - {name: open, match: [{uri: {prefix: /open}}], directResponse: {status: 200}}
  - {name: r2, match: [{headers: {x-route: {exact: r2}}}], directResponse: {status: 200}}
  - {name: tenant, match: [{headers: {x-tenant: {exact: t1}}}], directResponse: {status: 200}}
  - {name: inv, match: [{uri: {prefix: /inv}, withoutHeaders: {x-route: {exact: r9}}}], directResponse: {status: 200}}
  - {name: pre, match: [{headers: {x-route: {prefix: r}}}], directResponse: {status: 200}}
  - {name: last, directResponse: {status: 200}}
";

fn compiled(yaml: &str) -> (Arc<crate::compile::Compiled>, Downstream) {
    crate::proxy::tests::compiled_gateway(yaml, 80, "http")
}

fn vhost<'a>(compiled: &'a crate::compile::Compiled, down: &Downstream) -> &'a VirtualHost {
    let table = down.table.as_ref().expect("port 80 has a route table");
    compiled.tables[table].vhost("web.example.com").expect("the '*' host")
}

fn request(uri: &str, headers: &[(&str, &str)]) -> Request<()> {
    let mut req = Request::get(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.body(()).unwrap_or_else(|e| panic!("{e}"))
}

/// The route the index picks, and the one the scan in order picks.
fn picked(vhost: &VirtualHost, req: &Request<()>, down: &Downstream) -> (String, String) {
    assert!(
        vhost.index.candidates(req, &mut Seen::default()).is_some(),
        "the table is indexed"
    );
    let by_index = pick(vhost, req, down);
    let mut seen = Seen::default();
    let by_scan = vhost.routes.iter().find(|r| matches(&r.matcher, req, down, &mut seen));
    let name = |r: Option<&CompiledRoute>| r.map_or("none".to_string(), |r| r.route.name.clone());
    (name(by_index), name(by_scan))
}

#[test]
fn the_index_picks_the_route_the_scan_in_order_picks() {
    let (compiled, down) = compiled(CONFIG);
    let vhost = vhost(&compiled, &down);
    for (uri, headers, want) in [
        ("/", &[("x-route", "r1")][..], "r1"),
        ("/two", &[("x-route", "r2")], "r2-two"),
        ("/other", &[("x-route", "r2")], "r2"),
        // An open route before a keyed one that also matches.
        ("/open", &[("x-route", "r2")], "open"),
        // Two headers, each with its routes: the first in the table wins.
        ("/a", &[("x-tenant", "t1"), ("x-route", "r1")], "a-tenant"),
        ("/b", &[("x-tenant", "t1"), ("x-route", "r2")], "r2"),
        ("/b", &[("x-tenant", "t1")], "tenant"),
        // withoutHeaders is not a required value: the route stays a candidate.
        ("/inv", &[("x-route", "r5")], "inv"),
        ("/inv", &[], "inv"),
        ("/inv", &[("x-route", "r9")], "pre"),
        ("/x", &[("x-route", "r5")], "pre"),
        ("/x", &[], "last"),
        // A repeated header is compared joined, as the match compares it.
        ("/", &[("x-route", "r1"), ("x-route", "r1")], "pre"),
        ("/b", &[("x-tenant", "T1")], "last"),
    ] {
        let (by_index, by_scan) = picked(vhost, &request(uri, headers), &down);
        assert_eq!((by_index.as_str(), by_scan.as_str()), (want, want), "{uri} {headers:?}");
    }
}

#[test]
fn the_candidates_are_the_open_routes_and_those_asking_for_the_values_sent_in_order() {
    let (compiled, down) = compiled(CONFIG);
    let vhost = vhost(&compiled, &down);
    let candidates = |headers: &[(&str, &str)]| {
        let req = request("/", headers);
        vhost.index.candidates(&req, &mut Seen::default())
    };
    // open: 3 (open), 6 (inv), 7 (pre), 8 (last).
    assert_eq!(candidates(&[]), Some(vec![3, 6, 7, 8]));
    assert_eq!(
        candidates(&[("x-route", "r1"), ("x-tenant", "t1")]),
        Some(vec![0, 1, 3, 5, 6, 7, 8])
    );
    assert_eq!(candidates(&[("x-route", "r2")]), Some(vec![2, 3, 4, 6, 7, 8]));
    assert_eq!(candidates(&[("x-route", "r3")]), Some(vec![3, 6, 7, 8]));
}

/// CONFIG's first `keyed` routes that require a value, and every route that does not.
fn with_keyed(keyed: usize) -> String {
    let mut yaml = CONFIG.to_string();
    for name in ["a-tenant", "r1", "r2-two", "r2", "tenant"].iter().skip(keyed) {
        let from = format!("  - {{name: {name}, ");
        let start = yaml.find(&from).expect("the route");
        let end = start + yaml[start..].find('\n').expect("its line") + 1;
        yaml.replace_range(start..end, "");
    }
    yaml
}

#[test]
fn a_table_with_fewer_than_four_routes_that_require_a_value_is_scanned() {
    for (keyed, indexed) in [(0, false), (3, false), (4, true), (5, true)] {
        let (compiled, down) = compiled(&with_keyed(keyed));
        let vhost = vhost(&compiled, &down);
        let req = request("/", &[]);
        assert_eq!(vhost.routes.len(), 4 + keyed);
        assert_eq!(
            vhost.index.candidates(&req, &mut Seen::default()).is_some(),
            indexed,
            "{keyed}"
        );
    }
}

#[test]
fn a_header_condition_met_by_an_absent_header_requires_no_value() {
    // Istio sets `treat_missing_as_empty` only on inverted conditions; one that is not inverted
    // (an exact "" the absent header meets) must not take its route out of an absent header's
    // candidates either.
    let mut compiled = crate::compile::from_yaml(CONFIG, false, |_| {}, &crate::proxy::tests::downstream().telemetry);
    let table = compiled.tables.values_mut().next().expect("a table");
    let routes = &mut table.vhosts[0].routes;
    let missing = &mut routes[1].matcher.headers[0];
    missing.value = Some(StrMatch::Exact(String::new()));
    missing.treat_missing_as_empty = true;
    let index = RouteIndex::of(routes);
    let req = request("/", &[]);
    assert_eq!(index.candidates(&req, &mut Seen::default()), Some(vec![1, 3, 6, 7, 8]));
}
