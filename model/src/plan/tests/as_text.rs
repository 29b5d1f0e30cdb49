//! The Plan as text, for people: what `text::render` prints of listeners, routes and clusters.

use super::*;

#[test]
fn the_plan_reads_as_text_listeners_then_routes_in_order_then_clusters() {
    let http = "[{match: [{uri: {prefix: /api}, headers: {end-user: {exact: jason}}}], rewrite: {uri: /v2, authority: api.internal}, \
                route: [{destination: {host: web, port: {number: 80}}, weight: 90}, {destination: {host: web, port: {number: 443}}, weight: 10}]}, \
                {redirect: {uri: /moved, redirectCode: 301}}]";
    let text = text::render(&plan(&format!("{GW}{SVC}{}", vs("apps", "web", "['*']", http))));
    let want = "\
listener 0.0.0.0_80 (0.0.0.0:80)
  chain http.80 [Plaintext, any SNI]: HTTP -> http.80
route table http.80
  virtual host *:80 [*]
    apps/web/0: uri ^/api, header end-user=jason -> route to outbound|80||web.apps.svc.cluster.local (90), \
outbound|443||web.apps.svc.cluster.local (10), rewrite uri /v2, rewrite host api.internal
    apps/web/1: any -> redirect 301 to (same host)/moved
cluster outbound|80||web.apps.svc.cluster.local [Static, LeastRequest, tls Disable]: 127.0.0.1:80 (w1), 127.0.0.2:8080 (w1)
cluster outbound|443||web.apps.svc.cluster.local [Static, LeastRequest, tls Disable]: 127.0.0.1:443 (w1), 127.0.0.2:443 (w1)
";
    assert_eq!(text, want);
}

#[test]
fn the_plan_as_text_marks_exact_prefix_and_regex_matches() {
    let http = "[{match: [{uri: {regex: '/v[0-9]+'}}, {uri: {exact: /e}, method: {prefix: P}}], \
                route: [{destination: {host: web, port: {number: 80}}}]}]";
    let text = text::render(&plan(&format!("{GW}{SVC}{}", vs("apps", "web", "['*']", http))));
    assert!(text.contains("apps/web/0: uri ~/v[0-9]+ ->"), "{text}");
    assert!(text.contains("apps/web/0: uri =/e, method ^P ->"), "{text}");
}

#[test]
fn the_plan_as_text_shows_retries_only_where_a_route_sets_its_own() {
    let http = |retries: &str| format!("[{{{retries}route: [{{destination: {{host: web, port: {{number: 80}}}}}}]}}]");
    let text = |retries: &str| {
        text::render(&plan(&format!(
            "{GW}{SVC}{}",
            vs("apps", "web", "['*']", &http(retries))
        )))
    };
    assert!(
        text("retries: {attempts: 5, retryOn: 5xx}, ").contains("5 retries on 5xx"),
        "{}",
        text("")
    );
    assert!(!text("").contains("retries"), "Istio's default policy is not printed");
    assert!(
        !text("retries: {attempts: 0}, ").contains("retries"),
        "no retries, none printed"
    );
}
