//! meshgate on the wire: routing, route actions, errors and headers, against echo workloads.

#![allow(clippy::expect_used, clippy::unwrap_used)] // Test code: a failure should panic.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::*;

const GATEWAY: &str = "\
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

/// reviews v1 and v2 registered by a ServiceEntry, with subsets.
fn registry(v1: &EchoThread, v2: &EchoThread) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: reviews, namespace: default}}\nspec:\n  \
         hosts: [reviews.default.svc.cluster.local]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  \
         ports: [{{number: 9080, name: http, protocol: HTTP}}]\n  endpoints:\n{}{}---\n\
         apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: reviews, namespace: default}}\nspec:\n  \
         host: reviews\n  subsets: [{{name: v1, labels: {{version: v1}}}}, {{name: v2, labels: {{version: v2}}}}]\n---\n",
        endpoint(v1, "v1"),
        endpoint(v2, "v2")
    )
}

fn vs(hosts: &str, http: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: reviews, namespace: default}}\nspec:\n  \
         hosts: {hosts}\n  gateways: [istio-system/gw]\n  http:\n{http}---\n"
    )
}

struct Setup {
    _v1: EchoThread,
    _v2: EchoThread,
    gate: Gate,
}

fn setup(hosts: &str, http: &str) -> Setup {
    let (v1, v2) = (echo("reviews", "v1"), echo("reviews", "v2"));
    let yaml = format!("{GATEWAY}{}{}", registry(&v1, &v2), vs(hosts, http));
    let gate = gate(&yaml, &[80]);
    Setup { _v1: v1, _v2: v2, gate }
}

const TO_V1: &str = "route: [{destination: {host: reviews, subset: v1, port: {number: 9080}}}]";
const TO_V2: &str = "route: [{destination: {host: reviews, subset: v2, port: {number: 9080}}}]";

#[test]
fn first_match_wins_across_match_kinds() {
    let http = format!(
        "  - match: [{{headers: {{end-user: {{exact: jason}}}}}}]\n    {TO_V2}\n\
         \x20 - match: [{{uri: {{regex: '/items/[0-9]+'}}}}, {{queryParams: {{v: {{exact: '2'}}}}}}]\n    {TO_V2}\n\
         \x20 - match: [{{uri: {{prefix: /API}}, ignoreUriCase: true, method: {{exact: POST}}}}]\n    {TO_V2}\n\
         \x20 - match: [{{headers: {{':method': {{exact: PUT}}}}}}]\n    {TO_V2}\n\
         \x20 - match: [{{uri: {{prefix: /only-v1}}}}]\n    {TO_V1}\n"
    );
    let s = setup("['*']", &http);
    let a = s.gate.port(80);
    let version =
        |path: &str, method: &str, h: &[(&str, &str)]| request(a, method, path, h, "").field("ServiceVersion");
    assert_eq!(
        version("/only-v1", "GET", &[("end-user", "jason")]).as_deref(),
        Some("v2"),
        "header match wins, first"
    );
    assert_eq!(version("/only-v1", "GET", &[]).as_deref(), Some("v1"));
    assert_eq!(version("/items/42", "GET", &[]).as_deref(), Some("v2"), "regex");
    assert_eq!(get(a, "/items/42x", &[]).status, 404, "regex is a whole-string match");
    assert_eq!(
        version("/q?v=2", "GET", &[]).as_deref(),
        Some("v2"),
        "query param (OR of match blocks)"
    );
    assert_eq!(
        version("/api/x", "POST", &[]).as_deref(),
        Some("v2"),
        "prefix, ignoreUriCase, method: AND"
    );
    assert_eq!(get(a, "/api/x", &[]).status, 404, "method does not match");
    assert_eq!(
        version("/anything", "PUT", &[]).as_deref(),
        Some("v2"),
        "pseudo-header :method"
    );
    let miss = get(a, "/nothing-matches", &[]);
    assert_eq!(
        (miss.status, miss.body.as_str()),
        (404, ""),
        "no route: 404 with an empty body"
    );
    assert!(
        s.gate
            .access_log()
            .contains("\"GET /nothing-matches HTTP/1.1\" 404 NR route_not_found"),
        "{}",
        s.gate.access_log()
    );
}

#[test]
fn scheme_authority_pseudo_headers_absence_and_query_decide_the_route() {
    let http = format!(
        "  - match: [{{uri: {{prefix: /sch}}, scheme: {{exact: https}}}}]\n    {TO_V2}\n\
         \x20 - match: [{{uri: {{prefix: /sch}}, scheme: {{exact: http}}}}]\n    {TO_V1}\n\
         \x20 - match: [{{uri: {{prefix: /auth}}, authority: {{prefix: api.}}}}]\n    {TO_V2}\n\
         \x20 - match: [{{uri: {{prefix: /auth}}}}]\n    {TO_V1}\n\
         \x20 - match: [{{uri: {{prefix: /pseudo}}, headers: {{':authority': {{exact: 'p.test:8080'}}, ':scheme': {{exact: http}}, ':path': {{exact: '/pseudo?x=1'}}}}}}]\n    {TO_V2}\n\
         \x20 - match: [{{uri: {{prefix: /multi}}, headers: {{x-tag: {{exact: 'a,b'}}}}}}]\n    {TO_V2}\n\
         \x20 - match: [{{uri: {{prefix: /without}}, withoutHeaders: {{x-debug: {{exact: '1'}}}}}}]\n    {TO_V2}\n\
         \x20 - match: [{{uri: {{prefix: /present}}, headers: {{x-present: {{}}}}}}]\n    {TO_V2}\n\
         \x20 - match: [{{uri: {{prefix: /qp}}, queryParams: {{v: {{prefix: ab}}}}}}]\n    {TO_V2}\n"
    );
    let s = setup("['*']", &http);
    let a = s.gate.port(80);
    let version = |path: &str, h: &[(&str, &str)]| {
        let r = request(a, "GET", path, h, "");
        if r.status == 404 {
            "404".to_string()
        } else {
            r.field("ServiceVersion").unwrap_or_default()
        }
    };
    // The scheme of a plain listener is http: the https match does not take it.
    assert_eq!(version("/sch", &[]), "v1");
    // The authority as sent, from Host or from an absolute-form request target.
    assert_eq!(version("/auth", &[("Host", "api.example.com")]), "v2");
    assert_eq!(version("/auth", &[("Host", "www.example.com")]), "v1");
    assert_eq!(version("http://api.abs.test/auth", &[("Host", "www.abs.test")]), "v2");
    assert_eq!(version("http://www.abs.test/auth", &[("Host", "api.abs.test")]), "v1");
    // Pseudo-headers: all three must hold (the authority with its port, the path with its query).
    assert_eq!(version("/pseudo?x=1", &[("Host", "p.test:8080")]), "v2");
    assert_eq!(version("/pseudo?x=1", &[("Host", "p.test")]), "404");
    assert_eq!(version("/pseudo?x=2", &[("Host", "p.test:8080")]), "404");
    // A header sent twice is matched as its values joined by commas, as Envoy does.
    assert_eq!(version("/multi", &[("x-tag", "a"), ("x-tag", "b")]), "v2");
    assert_eq!(version("/multi", &[("x-tag", "a")]), "404");
    // withoutHeaders: a missing header counts as empty, so it does not match the value.
    assert_eq!(version("/without", &[]), "v2");
    assert_eq!(version("/without", &[("x-debug", "2")]), "v2");
    assert_eq!(version("/without", &[("x-debug", "1")]), "404");
    // An empty StringMatch is a presence match.
    assert_eq!(version("/present", &[("x-present", "")]), "v2");
    assert_eq!(version("/present", &[]), "404");
    // Query parameters: the named one, by its value, wherever it is in the query.
    assert_eq!(version("/qp?x=1&v=abc", &[]), "v2");
    assert_eq!(version("/qp?v=zz", &[]), "404");
    assert_eq!(version("/qp?vv=abc", &[]), "404");
    assert_eq!(version("/qp?v", &[]), "404");
    assert_eq!(version("/qp", &[]), "404");
}

#[test]
fn hosts_match_case_insensitively_with_any_port_and_wildcards() {
    let http = format!("  - {TO_V1}\n");
    let s = setup("['*.example.com', 'exact.test']", &http);
    let a = s.gate.port(80);
    for host in ["a.example.com", "A.B.Example.COM:12345", "exact.test:80", "EXACT.test"] {
        assert_eq!(get(a, "/", &[("Host", host)]).status, 200, "{host}");
    }
    for host in ["example.com", "other.test", "exact.test.evil"] {
        assert_eq!(get(a, "/", &[("Host", host)]).status, 404, "{host}");
    }
}

#[test]
fn weighted_split_80_20_within_a_stated_bound() {
    let http = "  - route:\n    - {destination: {host: reviews, subset: v1, port: {number: 9080}}, weight: 80}\n    \
                - {destination: {host: reviews, subset: v2, port: {number: 9080}}, weight: 20}\n";
    let s = setup("['*']", http);
    let n = 500;
    let v2 = (0..n)
        .filter(|_| get(s.gate.port(80), "/", &[]).field("ServiceVersion").as_deref() == Some("v2"))
        .count();
    // Binomial(500, 0.2): mean 100, sd ~8.9. ±45 is 5 sd: a correct gateway fails < 1e-6 of the
    // time; one splitting 70/30 (mean 150) lands outside almost always.
    assert!((55..=145).contains(&v2), "v2 got {v2} of {n}");
}

#[test]
fn redirect_rewrite_and_direct_response() {
    let http = format!(
        "  - match: [{{uri: {{exact: /old}}}}]\n    redirect: {{uri: /new/path}}\n\
         \x20 - match: [{{uri: {{exact: /tls}}}}]\n    redirect: {{scheme: https, derivePort: FROM_REQUEST_PORT, redirectCode: 302}}\n\
         \x20 - match: [{{uri: {{prefix: /v1/}}}}]\n    rewrite: {{uri: /api/, authority: new-authority}}\n    {TO_V1}\n\
         \x20 - match: [{{uri: {{prefix: /re/}}}}]\n    rewrite: {{uriRegexRewrite: {{match: '^/re/([a-z]+)/(.*)$', rewrite: '/\\2/\\1'}}}}\n    {TO_V1}\n\
         \x20 - match: [{{uri: {{exact: /teapot}}}}]\n    directResponse: {{status: 418, body: {{string: short and stout}}}}\n"
    );
    let s = setup("['*']", &http);
    let a = s.gate.port(80);
    let r = get(a, "/old?key=value", &[("Host", "b.example")]);
    assert_eq!(
        (r.status, r.header("location")),
        (301, Some("http://b.example/new/path?key=value"))
    );
    let r = get(a, "/tls", &[("Host", "b.example")]);
    assert_eq!(
        (r.status, r.header("location")),
        (302, Some("https://b.example:80/tls")),
        "derivePort keeps the request port"
    );
    let r = get(a, "/v1/items?x=1", &[]);
    assert_eq!(r.field("URL").as_deref(), Some("/api/items?x=1"));
    assert_eq!(r.field("Host").as_deref(), Some("new-authority"));
    assert_eq!(r.saw_header("x-envoy-original-path").as_deref(), Some("/v1/items?x=1"));
    assert_eq!(get(a, "/re/abc/def", &[]).field("URL").as_deref(), Some("/def/abc"));
    let r = get(a, "/teapot", &[]);
    assert_eq!((r.status, r.body.as_str()), (418, "short and stout"));
}

#[test]
fn header_operations_and_gateway_headers() {
    let http = "  - headers:\n      request: {set: {x-route: route, x-both: route}, add: {x-added: a}, remove: [x-drop]}\n      \
                response: {set: {x-resp: r}, remove: [content-type]}\n    route:\n    \
                - destination: {host: reviews, subset: v1, port: {number: 9080}}\n      headers:\n        request: {set: {x-dest: dest, x-both: dest}}\n";
    let s = setup("['*']", http);
    let r = get(
        s.gate.port(80),
        "/",
        &[
            ("x-drop", "1"),
            ("x-envoy-force-trace", "1"),
            ("x-forwarded-for", "10.1.1.1"),
        ],
    );
    assert_eq!(r.saw_header("x-route").as_deref(), Some("route"));
    assert_eq!(r.saw_header("x-dest").as_deref(), Some("dest"));
    assert_eq!(
        r.saw_header("x-both").as_deref(),
        Some("dest"),
        "a single destination's set wins (istiod appends it after the route's; Envoy agrees)"
    );
    assert_eq!(r.saw_header("x-added").as_deref(), Some("a"));
    assert_eq!(r.saw_header("x-drop"), None);
    assert_eq!(
        r.saw_header("x-envoy-force-trace"),
        None,
        "x-envoy-* from outside is stripped"
    );
    assert_eq!(r.saw_header("x-forwarded-for").as_deref(), Some("10.1.1.1, 127.0.0.1"));
    assert_eq!(r.saw_header("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(r.saw_header("x-request-id").map(|v| v.len()), Some(36));
    assert_eq!(r.header("x-resp"), Some("r"));
    assert_eq!(r.header("content-type"), None);
    assert!(r.header("x-envoy-upstream-service-time").is_some());
    assert_eq!(r.header("server"), Some("istio-envoy"));
}

#[test]
fn fault_abort_and_delay() {
    let http = format!(
        "  - match: [{{uri: {{exact: /abort}}}}]\n    fault: {{abort: {{httpStatus: 418, percentage: {{value: 100}}}}}}\n    {TO_V1}\n\
         \x20 - match: [{{uri: {{exact: /never}}}}]\n    fault: {{abort: {{httpStatus: 500}}}}\n    {TO_V1}\n\
         \x20 - match: [{{uri: {{exact: /delay}}}}]\n    fault: {{delay: {{fixedDelay: 300ms, percentage: {{value: 100}}}}}}\n    {TO_V1}\n"
    );
    let s = setup("['*']", &http);
    let a = s.gate.port(80);
    let r = get(a, "/abort", &[]);
    assert_eq!((r.status, r.body.as_str()), (418, "fault filter abort"));
    assert_eq!(get(a, "/never", &[]).status, 200, "no percentage: nothing injected");
    let t = Instant::now();
    assert_eq!(get(a, "/delay", &[]).status, 200);
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert!(
        s.gate.access_log().contains(" 418 FI fault_filter_abort "),
        "{}",
        s.gate.access_log()
    );
}

#[test]
fn timeout_is_504_and_retries_recover() {
    let http = format!(
        "  - match: [{{uri: {{prefix: /slow}}}}]\n    timeout: 200ms\n    {TO_V1}\n\
         \x20 - match: [{{uri: {{prefix: /flaky}}}}]\n    retries: {{attempts: 3, retryOn: 5xx}}\n    {TO_V1}\n\
         \x20 - match: [{{uri: {{prefix: /no-retry}}}}]\n    retries: {{attempts: 0}}\n    {TO_V1}\n"
    );
    let s = setup("['*']", &http);
    let a = s.gate.port(80);
    let t = Instant::now();
    let r = get(a, "/slow?delay=2s", &[]);
    assert_eq!((r.status, r.body.as_str()), (504, "upstream request timeout"));
    assert!(t.elapsed() < Duration::from_secs(2));
    // The echo cycles 503, 200: the retry gets the 200.
    let codes: Vec<u16> = (0..4).map(|_| get(a, "/flaky?codes=503:1,200:1", &[]).status).collect();
    assert_eq!(codes, [200, 200, 200, 200]);
    let codes: Vec<u16> = (0..4)
        .map(|_| get(a, "/no-retry?codes=503:1,200:1", &[]).status)
        .collect();
    assert_eq!(codes.iter().filter(|c| **c == 503).count(), 2, "{codes:?}");
}

#[test]
fn missing_cluster_no_endpoints_and_connect_failure() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let v1 = echo("reviews", "v1");
    let yaml = format!(
        "{GATEWAY}{}\
         apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: empty, namespace: default}}\nspec:\n  \
         hosts: [empty.example.com]\n  resolution: STATIC\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n---\n\
         apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: dead, namespace: default}}\nspec:\n  \
         hosts: [dead.example.com]\n  resolution: STATIC\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  \
         endpoints: [{{address: 127.0.0.1, ports: {{http: {dead}}}}}]\n---\n{}",
        registry(&v1, &v1),
        vs(
            "['*']",
            "  - match: [{uri: {prefix: /nc}}]\n    route: [{destination: {host: reviews, subset: v9, port: {number: 9080}}}]\n  \
             - match: [{uri: {prefix: /uh}}]\n    route: [{destination: {host: empty.example.com}}]\n  \
             - match: [{uri: {prefix: /uf}}]\n    route: [{destination: {host: dead.example.com}}]\n"
        )
    );
    let g = gate(&yaml, &[80]);
    let a = g.port(80);
    let r = get(a, "/nc", &[]);
    assert_eq!((r.status, r.body.as_str()), (503, ""));
    let r = get(a, "/uh", &[]);
    assert_eq!((r.status, r.body.as_str()), (503, "no healthy upstream"));
    let r = get(a, "/uf", &[]);
    assert_eq!(r.status, 503);
    assert_eq!(
        r.body,
        "upstream connect error or disconnect/reset before headers. retried and the latest reset reason: remote connection failure"
    );
    let log = g.access_log();
    assert!(log.contains(" 503 NC cluster_not_found "), "{log}");
    assert!(log.contains(" 503 UH no_healthy_upstream "), "{log}");
    assert!(
        log.contains(" 503 URX,UF upstream_reset_before_response_started{remote_connection_failure|"),
        "{log}"
    );
}

#[test]
fn cors_preflight_is_answered_by_the_gateway() {
    let http = format!(
        "  - corsPolicy:\n      allowOrigins: [{{exact: 'https://cors.com'}}, {{prefix: 'https://ok.'}}]\n      \
         allowMethods: [POST, GET]\n      allowHeaders: [X-Foo-Bar, X-Foo-Baz]\n      maxAge: 24h\n      exposeHeaders: [X-Exposed]\n    {TO_V1}\n"
    );
    let s = setup("['*']", &http);
    let a = s.gate.port(80);
    let r = request(
        a,
        "OPTIONS",
        "/",
        &[
            ("Origin", "https://cors.com"),
            ("Access-Control-Request-Method", "POST"),
        ],
        "",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), Some("https://cors.com"));
    assert_eq!(r.header("access-control-allow-methods"), Some("POST,GET"));
    assert_eq!(r.header("access-control-allow-headers"), Some("X-Foo-Bar,X-Foo-Baz"));
    assert_eq!(r.header("access-control-max-age"), Some("86400"));
    assert_eq!(r.field("ServiceVersion"), None, "answered by the gateway");
    let r = get(a, "/", &[("Origin", "https://ok.example")]);
    assert_eq!(
        (
            r.header("access-control-allow-origin"),
            r.header("access-control-expose-headers")
        ),
        (Some("https://ok.example"), Some("X-Exposed"))
    );
    assert_eq!(
        get(a, "/", &[("Origin", "https://evil.com")]).header("access-control-allow-origin"),
        None
    );
    assert_eq!(get(a, "/", &[]).header("access-control-allow-origin"), None);
}

#[test]
fn h1_and_h2c_downstream_with_curl() {
    let s = setup("['*']", &format!("  - {TO_V1}\n"));
    let out = Command::new("curl")
        .args(["-s", "-i", &format!("http://{}/h1?q=1", s.gate.port(80))])
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.contains("URL=/h1?q=1\n") && text.contains("RequestHeader=User-Agent:curl/"),
        "{text}"
    );
    let out = Command::new("curl")
        .args([
            "-s",
            "-i",
            "--http2-prior-knowledge",
            &format!("http://{}/h2c", s.gate.port(80)),
        ])
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("HTTP/2 200"), "{text}");
    assert!(
        text.contains("ServiceVersion=v1\n") && text.contains("URL=/h2c\n"),
        "{text}"
    );
    assert!(
        s.gate.access_log().contains("\"GET /h2c HTTP/2\" 200 - via_upstream"),
        "{}",
        s.gate.access_log()
    );
}

#[test]
fn admin_api_reports_config_stats_and_clusters() {
    let s = setup("['*']", &format!("  - {TO_V1}\n"));
    assert_eq!(get(s.gate.admin, "/ready", &[]).status, 200);
    for _ in 0..3 {
        get(s.gate.port(80), "/", &[]);
    }
    let dump: serde_json::Value = serde_json::from_str(&s.gate.admin_get("/plan")).unwrap();
    assert_eq!(dump["version"], 1);
    assert_eq!(dump["plan"]["listeners"][0]["port"], 80);
    // /config_dump is Envoy's shape: the listener as Envoy would run it, at its bound address.
    let envoy: serde_json::Value = serde_json::from_str(&s.gate.admin_get("/config_dump")).unwrap();
    let listener = &envoy["configs"][2]["static_listeners"][0]["listener"];
    assert_eq!(
        envoy["configs"][2]["@type"],
        "type.googleapis.com/envoy.admin.v3.ListenersConfigDump"
    );
    assert_eq!(listener["name"], "0.0.0.0_80");
    assert_eq!(
        listener["address"]["socket_address"]["port_value"],
        u64::from(s.gate.port(80).port())
    );
    assert_eq!(envoy["configs"][1]["version_info"], "1");
    let stats = s.gate.admin_get("/stats/prometheus");
    let cluster = "cluster_name=\"outbound|9080|v1|reviews.default.svc.cluster.local\"";
    assert!(
        stats.contains(&format!("envoy_cluster_upstream_rq_total{{{cluster}}} 3\n")),
        "{stats}"
    );
    assert!(
        stats.contains(&format!("envoy_cluster_upstream_rq_time_count{{{cluster}}} 3\n")),
        "{stats}"
    );
    let clusters = s.gate.admin_get("/clusters");
    assert!(
        clusters.contains("outbound|9080|v2|reviews.default.svc.cluster.local::127.0.0.1:"),
        "{clusters}"
    );
}
