//! Routes as Envoy config: the listener and its HTTP connection manager, matches, weights,
//! redirects, rewrites, header operations, direct responses, faults, timeouts, retries, mirrors
//! and CORS.

use serde_json::json;

use super::*;

pub(super) const R: &str = "outbound|9080|v1|reviews.default.svc.cluster.local";
pub(super) const R2: &str = "outbound|9080|v2|reviews.default.svc.cluster.local";

pub(super) fn config(http: &str, extra: &str) -> Value {
    let dr = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews, namespace: default}\n\
              spec:\n  host: reviews\n  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]\n---\n";
    export(&format!(
        "{GATEWAY_80}{}{dr}{extra}{}",
        service("reviews", 9080, "HTTP"),
        virtual_service(http)
    ))
}

pub(super) const TO_V1: &str = "    route: [{destination: {host: reviews, subset: v1, port: {number: 9080}}}]\n";

pub(super) fn one(http_match: &str, rest: &str) -> Value {
    config(&format!("  - match: [{http_match}]\n{rest}{TO_V1}"), "")
}

pub(super) fn only_route(b: &Value) -> &Value {
    &route_configs(b)[0]["virtual_hosts"][0]["routes"][0]
}

#[test]
fn gateway_listener_names_hcm_and_filters_follow_istiod() {
    let b = one("{uri: {prefix: /a}}", "");
    let l = listener(&b, "0.0.0.0_80");
    assert_eq!(
        l["address"]["socket_address"],
        json!({"address": "0.0.0.0", "port_value": 80})
    );
    assert_eq!(l["traffic_direction"], "OUTBOUND");
    assert!(l.get("listener_filters").is_none(), "no TLS inspector on plaintext");
    let hcm = &l["filter_chains"][0]["filters"][0];
    assert_eq!(hcm["name"], "envoy.filters.network.http_connection_manager");
    let t = &hcm["typed_config"];
    assert_eq!(t["stat_prefix"], "outbound_0.0.0.0_80");
    assert_eq!(t["use_remote_address"], true);
    assert_eq!(t["forward_client_cert_details"], "SANITIZE_SET");
    assert_eq!(t["server_name"], "istio-envoy");
    assert_eq!(t["upgrade_configs"], json!([{"upgrade_type": "websocket"}]));
    let filters: Vec<&str> = t["http_filters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        filters,
        [
            "envoy.filters.http.fault",
            "envoy.filters.http.cors",
            "envoy.filters.http.router"
        ]
    );
    let rc = &t["route_config"];
    assert_eq!(rc["name"], "http.80");
    assert_eq!(rc["validate_clusters"], false);
    assert_eq!(rc["ignore_port_in_host_matching"], true);
    let vh = &rc["virtual_hosts"][0];
    assert_eq!(vh["name"], "*:80");
    assert_eq!(vh["domains"], json!(["*"]));
    assert_eq!(vh["include_request_attempt_count"], true);
    let fmt = t["access_log"][0]["typed_config"]["log_format"]["text_format_source"]["inline_string"]
        .as_str()
        .unwrap();
    assert!(fmt.starts_with("[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS%"));
    assert!(fmt.ends_with("%REQUESTED_SERVER_NAME% %ROUTE_NAME%\n"));
}

#[test]
fn uri_matches_become_path_specifiers() {
    let cases = [
        ("{uri: {exact: /e}}", json!({"path": "/e"})),
        ("{uri: {prefix: /p}}", json!({"prefix": "/p"})),
        (
            "{uri: {regex: '/r/[0-9]+'}}",
            json!({"safe_regex": {"regex": "/r/[0-9]+"}}),
        ),
        (
            "{uri: {prefix: /i}, ignoreUriCase: true}",
            json!({"prefix": "/i", "case_sensitive": false}),
        ),
    ];
    for (m, want) in cases {
        assert_eq!(only_route(&one(m, ""))["match"], want, "{m}");
    }
    // No uri: every path.
    let b = config(TO_V1.replacen("    route", "  - route", 1).as_str(), "");
    assert_eq!(only_route(&b)["match"], json!({"prefix": "/"}));
}

#[test]
fn header_scheme_method_authority_and_query_matches() {
    let b = one(
        "{headers: {end-user: {exact: jason}, x-any: {}, x-pre: {prefix: ab}, x-re: {regex: 'v[0-9]'}}, \
         withoutHeaders: {x-no: {exact: 'y'}, x-gone: {}}, scheme: {exact: https}, method: {exact: PUT}, \
         authority: {prefix: api.}, queryParams: {v: {exact: '2'}, flag: {}}}",
        "",
    );
    let m = &only_route(&b)["match"];
    let headers = m["headers"].as_array().unwrap();
    let by = |n: &str| {
        headers
            .iter()
            .find(|h| h["name"] == n)
            .unwrap_or_else(|| panic!("{n}: {m:#}"))
    };
    assert_eq!(by(":scheme")["string_match"], json!({"exact": "https"}));
    assert_eq!(by(":method")["string_match"], json!({"exact": "PUT"}));
    assert_eq!(by(":authority")["string_match"], json!({"prefix": "api."}));
    assert_eq!(by("end-user")["string_match"], json!({"exact": "jason"}));
    assert_eq!(by("x-any")["present_match"], true);
    assert_eq!(by("x-pre")["string_match"], json!({"prefix": "ab"}));
    assert_eq!(by("x-re")["string_match"], json!({"safe_regex": {"regex": "v[0-9]"}}));
    assert_eq!(
        *by("x-no"),
        json!({"name": "x-no", "string_match": {"exact": "y"}, "invert_match": true, "treat_missing_header_as_empty": true})
    );
    assert_eq!(
        *by("x-gone"),
        json!({"name": "x-gone", "present_match": true, "invert_match": true})
    );
    let q = m["query_parameters"].as_array().unwrap();
    assert!(
        q.contains(&json!({"name": "v", "string_match": {"exact": "2"}})),
        "{q:?}"
    );
    assert!(q.contains(&json!({"name": "flag", "present_match": true})), "{q:?}");
}

#[test]
fn weighted_clusters_and_single_destination() {
    let b = config(
        "  - route:\n    - {destination: {host: reviews, subset: v1, port: {number: 9080}}, weight: 80}\n    \
         - {destination: {host: reviews, subset: v2, port: {number: 9080}}, weight: 20}\n",
        "",
    );
    assert_eq!(
        only_route(&b)["route"]["weighted_clusters"],
        json!({"clusters": [{"name": R, "weight": 80}, {"name": R2, "weight": 20}]})
    );
    let b = one("{uri: {prefix: /}}", "");
    assert_eq!(only_route(&b)["route"]["cluster"], R);
    assert!(only_route(&b)["route"].get("weighted_clusters").is_none());
}

#[test]
fn redirects_as_istiod_applies_them() {
    let cases = [
        (
            "redirect: {uri: /new}",
            json!({"path_redirect": "/new", "response_code": "MOVED_PERMANENTLY"}),
        ),
        (
            "redirect: {authority: b.example, redirectCode: 302}",
            json!({"host_redirect": "b.example", "response_code": "FOUND"}),
        ),
        // FROM_REQUEST_PORT is the listener's port; https on 80 keeps it explicit.
        (
            "redirect: {scheme: https, derivePort: FROM_REQUEST_PORT}",
            json!({"scheme_redirect": "https", "port_redirect": 80, "response_code": "MOVED_PERMANENTLY"}),
        ),
        // No explicit :80 for http.
        (
            "redirect: {port: 80, redirectCode: 307}",
            json!({"response_code": "TEMPORARY_REDIRECT"}),
        ),
        (
            "redirect: {port: 443, scheme: https, redirectCode: 308}",
            json!({"scheme_redirect": "https", "response_code": "PERMANENT_REDIRECT"}),
        ),
        (
            "redirect: {port: 8443}",
            json!({"port_redirect": 8443, "response_code": "MOVED_PERMANENTLY"}),
        ),
        (
            "redirect: {derivePort: FROM_PROTOCOL_DEFAULT, scheme: https, redirectCode: 303}",
            json!({"scheme_redirect": "https", "response_code": "SEE_OTHER"}),
        ),
    ];
    for (action, want) in cases {
        let b = config(&format!("  - match: [{{uri: {{prefix: /x}}}}]\n    {action}\n"), "");
        assert_eq!(only_route(&b)["redirect"], want, "{action}");
        assert!(only_route(&b).get("route").is_none());
    }
}

#[test]
fn rewrites_prefix_regex_and_authority() {
    let b = one(
        "{uri: {prefix: /old/}}",
        "    rewrite: {uri: /new/, authority: new-authority}\n",
    );
    let r = &only_route(&b)["route"];
    assert_eq!(r["prefix_rewrite"], "/new/");
    assert_eq!(r["host_rewrite_literal"], "new-authority");
    let b = one(
        "{uri: {prefix: /re/}}",
        "    rewrite: {uriRegexRewrite: {match: '^/re/(.*)$', rewrite: '/\\1'}}\n",
    );
    assert_eq!(
        only_route(&b)["route"]["regex_rewrite"],
        json!({"pattern": {"regex": "^/re/(.*)$"}, "substitution": "/\\1"})
    );
}

#[test]
fn header_operations_keep_istiods_order() {
    let b = config(
        "  - headers:\n      request: {set: {x-a: route}, add: {x-b: added}, remove: [x-drop]}\n      \
         response: {set: {x-resp: r}, remove: [server]}\n    route:\n    \
         - destination: {host: reviews, subset: v1, port: {number: 9080}}\n      \
         headers: {request: {set: {x-a: dest, ':authority': dest-host}}}\n",
        "",
    );
    let r = only_route(&b);
    // The single destination's operations follow the route's: its `set` wins.
    assert_eq!(
        r["request_headers_to_add"],
        json!([
            {"header": {"key": "x-a", "value": "route"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"},
            {"header": {"key": "x-b", "value": "added"}, "append_action": "APPEND_IF_EXISTS_OR_ADD"},
            {"header": {"key": "x-a", "value": "dest"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"},
        ])
    );
    assert_eq!(r["request_headers_to_remove"], json!(["x-drop"]));
    assert_eq!(
        r["response_headers_to_add"],
        json!([{"header": {"key": "x-resp", "value": "r"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}])
    );
    assert_eq!(r["response_headers_to_remove"], json!(["server"]));
    assert_eq!(r["route"]["host_rewrite_literal"], "dest-host");
    // Weighted destinations keep theirs on the cluster entry (applied before the route's).
    let b = config(
        "  - headers: {request: {set: {x-a: route}}}\n    route:\n    \
         - {destination: {host: reviews, subset: v1, port: {number: 9080}}, weight: 50, headers: {request: {set: {x-a: d1, host: h1}}}}\n    \
         - {destination: {host: reviews, subset: v2, port: {number: 9080}}, weight: 50}\n",
        "",
    );
    let r = only_route(&b);
    assert_eq!(r["request_headers_to_add"].as_array().unwrap().len(), 1);
    let w = &r["route"]["weighted_clusters"]["clusters"][0];
    assert_eq!(w["request_headers_to_add"][0]["header"]["value"], "d1");
    assert_eq!(w["host_rewrite_literal"], "h1");
}

#[test]
fn direct_responses_string_and_bytes() {
    let b = config(
        "  - match: [{uri: {exact: /s}}]\n    directResponse: {status: 418, body: {string: short and stout}}\n  \
         - match: [{uri: {exact: /b}}]\n    directResponse: {status: 200, body: {bytes: aGk=}}\n  \
         - match: [{uri: {exact: /n}}]\n    directResponse: {status: 204}\n",
        "",
    );
    assert_eq!(
        route(&b, "http.80", "*", "path", "/s")["direct_response"],
        json!({"status": 418, "body": {"inline_string": "short and stout"}})
    );
    assert_eq!(
        route(&b, "http.80", "*", "path", "/b")["direct_response"],
        json!({"status": 200, "body": {"inline_bytes": "aGk="}})
    );
    assert_eq!(
        route(&b, "http.80", "*", "path", "/n")["direct_response"],
        json!({"status": 204})
    );
}

#[test]
fn faults_are_per_route_filter_config() {
    let b = config(
        "  - match: [{uri: {exact: /d}}]\n    fault: {delay: {fixedDelay: 200ms, percentage: {value: 12.5}}}\n  \
         \x20 route: [{destination: {host: reviews, subset: v1, port: {number: 9080}}}]\n  \
         - match: [{uri: {exact: /a}}]\n    fault: {abort: {httpStatus: 418, percentage: {value: 100}}}\n  \
         \x20 route: [{destination: {host: reviews, subset: v1, port: {number: 9080}}}]\n  \
         - match: [{uri: {exact: /g}}]\n    fault: {abort: {grpcStatus: UNAVAILABLE, percentage: {value: 50}}}\n  \
         \x20 route: [{destination: {host: reviews, subset: v1, port: {number: 9080}}}]\n",
        "",
    );
    let f =
        |p: &str| route(&b, "http.80", "*", "path", p)["typed_per_filter_config"]["envoy.filters.http.fault"].clone();
    assert_eq!(
        f("/d"),
        json!({"@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
               "delay": {"fixed_delay": "0.200s", "percentage": {"numerator": 125000, "denominator": "MILLION"}}})
    );
    assert_eq!(
        f("/a")["abort"],
        json!({"http_status": 418, "percentage": {"numerator": 1000000, "denominator": "MILLION"}})
    );
    assert_eq!(
        f("/g")["abort"],
        json!({"grpc_status": 14, "percentage": {"numerator": 500000, "denominator": "MILLION"}})
    );
}

#[test]
fn timeouts_default_to_none_and_bound_grpc_timeouts() {
    let b = one("{uri: {prefix: /t}}", "    timeout: 1.5s\n");
    assert_eq!(only_route(&b)["route"]["timeout"], "1.500s");
    assert_eq!(only_route(&b)["route"]["max_grpc_timeout"], "1.500s");
    let b = one("{uri: {prefix: /u}}", "");
    assert_eq!(only_route(&b)["route"]["timeout"], "0s");
    assert_eq!(only_route(&b)["route"]["max_grpc_timeout"], "0s");
}

#[test]
fn retry_policies_with_istios_defaults() {
    let b = one("{uri: {prefix: /d}}", "");
    assert_eq!(
        only_route(&b)["route"]["retry_policy"],
        json!({
            "retry_on": "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
            "num_retries": 2,
            "retry_host_predicate": [{"name": "envoy.retry_host_predicates.previous_hosts",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"}}],
            "host_selection_retry_max_attempts": "5",
            "retry_back_off": {"base_interval": "0.025s"},
        })
    );
    let b = one(
        "{uri: {prefix: /r}}",
        "    retries: {attempts: 3, perTryTimeout: 2s, retryOn: '5xx,503,gateway-error', retryIgnorePreviousHosts: false}\n",
    );
    let p = &only_route(&b)["route"]["retry_policy"];
    assert_eq!(p["retry_on"], "5xx,gateway-error,retriable-status-codes");
    assert_eq!(p["num_retries"], 3);
    assert_eq!(p["retriable_status_codes"], json!([503]));
    assert_eq!(p["per_try_timeout"], "2s");
    assert!(p.get("retry_host_predicate").is_none());
    let b = one("{uri: {prefix: /n}}", "    retries: {attempts: 0}\n");
    assert!(only_route(&b)["route"].get("retry_policy").is_none());
}

#[test]
fn mirrors_and_cors() {
    let b = one(
        "{uri: {prefix: /m}}",
        "    mirror: {host: reviews, subset: v2, port: {number: 9080}}\n    mirrorPercentage: {value: 25}\n    \
         corsPolicy: {allowOrigins: [{exact: cors.com}, {regex: '.*\\.cors\\.com'}], allowMethods: [POST, GET], \
         allowHeaders: [X-Foo-Bar, X-Foo-Baz], exposeHeaders: [X-Expose], maxAge: 24h, allowCredentials: true}\n",
    );
    let r = only_route(&b);
    assert_eq!(
        r["route"]["request_mirror_policies"],
        json!([{"cluster": R2, "runtime_fraction": {"default_value": {"numerator": 250000, "denominator": "MILLION"}}, "trace_sampled": false, "disable_shadow_host_suffix_append": true}])
    );
    assert_eq!(
        r["typed_per_filter_config"]["envoy.filters.http.cors"],
        json!({
            "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy",
            "allow_origin_string_match": [{"exact": "cors.com"}, {"safe_regex": {"regex": ".*\\.cors\\.com"}}],
            "allow_methods": "POST,GET",
            "allow_headers": "X-Foo-Bar,X-Foo-Baz",
            "expose_headers": "X-Expose",
            "max_age": "86400",
            "allow_credentials": true,
            "forward_not_matching_preflights": true,
        })
    );
}
