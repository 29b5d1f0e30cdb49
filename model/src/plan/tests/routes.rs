//! Plans of routes: which rules are emitted, and the policies a route carries.

use super::*;

#[test]
fn emission_stops_after_the_first_catch_all() {
    // No match, a uri prefix `/` alone, or a uri regex `.*` alone takes every request.
    for catch_all in ["", "match: [{uri: {prefix: /}}], ", "match: [{uri: {regex: '.*'}}], "] {
        let http = format!(
            "[{{match: [{{uri: {{prefix: /a}}}}], route: [{{destination: {{host: a.example.com, port: {{number: 80}}}}}}]}}, \
             {{{catch_all}route: [{{destination: {{host: b.example.com, port: {{number: 80}}}}}}]}}, \
             {{match: [{{uri: {{prefix: /c}}}}], route: [{{destination: {{host: c.example.com, port: {{number: 80}}}}}}]}}]"
        );
        let p = plan(&format!("{GW}{}", vs("apps", "r", "['*']", &http)));
        let r = routes(&p, "http.80", "*");
        assert_eq!(r.len(), 2, "{catch_all}");
        assert_eq!(r[1].rule, 1);
    }
    // A prefix `/` with anything else beside it is not a catch-all.
    let http = "[{match: [{uri: {prefix: /}, method: {exact: GET}}], route: [{destination: {host: b.example.com, port: {number: 80}}}]}, \
                {match: [{uri: {prefix: /c}}], route: [{destination: {host: c.example.com, port: {number: 80}}}]}]";
    let p = plan(&format!("{GW}{}", vs("apps", "r", "['*']", http)));
    assert_eq!(routes(&p, "http.80", "*").len(), 2);
}

#[test]
fn retry_on_gains_retriable_status_codes_once_and_only_with_codes() {
    let retry_on = |list: &str| {
        let http = format!(
            "[{{retries: {{attempts: 2, retryOn: '{list}'}}, route: [{{destination: {{host: a.example.com, port: {{number: 80}}}}}}]}}]"
        );
        let p = plan(&format!("{GW}{}", vs("apps", "r", "['*']", &http)));
        let r = &routes(&p, "http.80", "*")[0];
        (r.retry.retry_on.clone(), r.retry.retriable_status_codes.clone())
    };
    assert_eq!(retry_on("gateway-error"), (vec!["gateway-error".to_string()], vec![]));
    assert_eq!(
        retry_on("retriable-status-codes,503"),
        (vec!["retriable-status-codes".to_string()], vec![503])
    );
    assert_eq!(
        retry_on("5xx,429"),
        (vec!["5xx".to_string(), "retriable-status-codes".to_string()], vec![429])
    );
}
