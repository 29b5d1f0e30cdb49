//! Each Plan feature as Envoy config, field by field, as istiod writes it.

use serde_json::json;

use super::*;

const R: &str = "outbound|9080|v1|reviews.default.svc.cluster.local";
const R2: &str = "outbound|9080|v2|reviews.default.svc.cluster.local";

fn config(http: &str, extra: &str) -> Value {
    let dr = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews, namespace: default}\n\
              spec:\n  host: reviews\n  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]\n---\n";
    export(&format!(
        "{GATEWAY_80}{}{dr}{extra}{}",
        service("reviews", 9080, "HTTP"),
        virtual_service(http)
    ))
}

const TO_V1: &str = "    route: [{destination: {host: reviews, subset: v1, port: {number: 9080}}}]\n";

fn one(http_match: &str, rest: &str) -> Value {
    config(&format!("  - match: [{http_match}]\n{rest}{TO_V1}"), "")
}

fn only_route(b: &Value) -> &Value {
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
        json!([{"cluster": R2, "runtime_fraction": {"default_value": {"numerator": 250000, "denominator": "MILLION"}}, "trace_sampled": false}])
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

#[test]
fn clusters_endpoints_lb_breakers_and_outliers() {
    let dr = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: ratings, namespace: default}\nspec:\n  \
              host: ratings\n  trafficPolicy:\n    loadBalancer: {simple: ROUND_ROBIN}\n    \
              connectionPool: {tcp: {maxConnections: 1, connectTimeout: 2s}, http: {http1MaxPendingRequests: 1, http2MaxRequests: 9, maxRetries: 4, idleTimeout: 30s, maxRequestsPerConnection: 7}}\n    \
              outlierDetection: {consecutive5xxErrors: 3, interval: 5s, baseEjectionTime: 1m, maxEjectionPercent: 50}\n---\n";
    let b = export(&format!("{GATEWAY_80}{}{dr}", service("ratings", 9080, "HTTP")));
    let c = cluster(&b, "outbound|9080||ratings.default.svc.cluster.local");
    assert_eq!(c["type"], "STATIC");
    assert_eq!(c["lb_policy"], "ROUND_ROBIN");
    assert_eq!(c["connect_timeout"], "2s");
    assert_eq!(
        c["load_assignment"]["endpoints"][0]["lb_endpoints"],
        json!([
            {"endpoint": {"address": {"socket_address": {"address": "10.0.0.1", "port_value": 9080}}}, "load_balancing_weight": 1},
            {"endpoint": {"address": {"socket_address": {"address": "10.0.0.2", "port_value": 9080}}}, "load_balancing_weight": 3},
        ])
    );
    assert_eq!(
        c["circuit_breakers"]["thresholds"][0],
        json!({"max_connections": 1, "max_pending_requests": 1, "max_requests": 9, "max_retries": 4, "track_remaining": true})
    );
    assert_eq!(
        c["outlier_detection"],
        json!({"enforcing_success_rate": 0, "consecutive_5xx": 3, "enforcing_consecutive_5xx": 100,
               "interval": "5s", "base_ejection_time": "60s", "max_ejection_percent": 50})
    );
    assert_eq!(c["common_lb_config"]["healthy_panic_threshold"]["value"], 0);
    let opts = &c["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
    assert_eq!(opts["explicit_http_config"], json!({"http_protocol_options": {}}));
    assert_eq!(
        opts["common_http_protocol_options"],
        json!({"idle_timeout": "30s", "max_requests_per_connection": 7})
    );
    // Istio's defaults: no limits, LEAST_REQUEST.
    let b = export(&format!("{GATEWAY_80}{}", service("plain", 80, "HTTP")));
    let c = cluster(&b, "outbound|80||plain.default.svc.cluster.local");
    assert_eq!(c["lb_policy"], "LEAST_REQUEST");
    assert_eq!(c["connect_timeout"], "10s");
    assert_eq!(
        c["circuit_breakers"]["thresholds"][0]["max_connections"],
        4_294_967_295u64
    );
    assert!(c.get("outlier_detection").is_none());
    assert!(cluster(&b, "BlackHoleCluster")["load_assignment"]["endpoints"] == json!([]));
    assert_eq!(cluster(&b, "PassthroughCluster")["type"], "ORIGINAL_DST");
}

#[test]
fn grpc_ports_speak_h2_and_consistent_hashes_ring() {
    let dr = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: echo, namespace: default}\nspec:\n  \
              host: echo\n  trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x-user, ringHash: {minimumRingSize: 2048}}}}\n---\n";
    let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: vs, namespace: default}\nspec:\n  \
              hosts: ['*']\n  gateways: [istio-system/gw]\n  http:\n  - route: [{destination: {host: echo, port: {number: 7070}}}]\n";
    let b = export(&format!("{GATEWAY_80}{}{dr}{vs}", service("echo", 7070, "GRPC")));
    let c = cluster(&b, "outbound|7070||echo.default.svc.cluster.local");
    assert_eq!(c["lb_policy"], "RING_HASH");
    assert_eq!(c["ring_hash_lb_config"], json!({"minimum_ring_size": 2048}));
    assert_eq!(
        c["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
            ["explicit_http_config"],
        json!({"http2_protocol_options": {}})
    );
    let r = only_route(&b);
    assert_eq!(
        r["route"]["hash_policy"],
        json!([{"header": {"header_name": "x-user"}}])
    );
    // Consistent hashing and "other hosts first" do not mix (istiod drops the predicate).
    assert!(r["route"]["retry_policy"].get("retry_host_predicate").is_none());
}

#[test]
fn dns_services_resolve_and_unix_endpoints_are_pipes() {
    let se = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: ext, namespace: default}\nspec:\n  \
              hosts: [api.example.com]\n  location: MESH_EXTERNAL\n  resolution: DNS\n  ports: [{number: 443, name: https, protocol: TLS}]\n---\n\
              apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: uds, namespace: default}\nspec:\n  \
              hosts: [uds.example.com]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  \
              endpoints: [{address: 'unix:///var/run/app.sock'}]\n---\n";
    let b = export(&format!("{GATEWAY_80}{se}"));
    let c = cluster(&b, "outbound|443||api.example.com");
    assert_eq!(c["type"], "STRICT_DNS");
    assert_eq!(c["dns_lookup_family"], "V4_ONLY");
    // MeshConfig's default dnsRefreshRate, and the answer's TTL honoured, as istiod sets them.
    assert_eq!(c["dns_refresh_rate"], "60s");
    assert_eq!(c["respect_dns_ttl"], true);
    assert_eq!(
        c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"],
        json!({"socket_address": {"address": "api.example.com", "port_value": 443}})
    );
    assert!(
        c.get("typed_extension_protocol_options").is_none(),
        "TLS port: no HTTP options"
    );
    let c = cluster(&b, "outbound|80||uds.example.com");
    assert!(c.get("dns_refresh_rate").is_none(), "a pipe is not resolved");
    assert_eq!(
        c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"],
        json!({"pipe": {"path": "/var/run/app.sock"}})
    );
}

#[test]
fn tls_origination_simple_mutual_and_insecure() {
    let se = |h: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {h}, namespace: default}}\nspec:\n  \
             hosts: [{h}.example.com]\n  location: MESH_EXTERNAL\n  resolution: DNS\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n---\n"
        )
    };
    let dr = |h: &str, tls: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: {h}, namespace: default}}\nspec:\n  \
             host: {h}.example.com\n  trafficPolicy: {{tls: {tls}}}\n---\n"
        )
    };
    let yaml = format!(
        "{GATEWAY_80}{}{}{}{}{}{}",
        se("s"),
        dr(
            "s",
            "{mode: SIMPLE, caCertificates: /ca.pem, sni: s.example.com, subjectAltNames: [s.example.com]}"
        ),
        se("m"),
        dr(
            "m",
            "{mode: MUTUAL, clientCertificate: /c.crt, privateKey: /c.key, caCertificates: /ca.pem}"
        ),
        se("i"),
        dr("i", "{mode: SIMPLE, insecureSkipVerify: true}")
    );
    let b = export(&yaml);
    let ts = |h: &str| cluster(&b, &format!("outbound|80||{h}.example.com"))["transport_socket"].clone();
    assert_eq!(
        ts("s")["typed_config"],
        json!({
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": "s.example.com",
            "common_tls_context": {"validation_context": {"trusted_ca": {"filename": "/ca.pem"},
                "match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": "s.example.com"}}]}},
        })
    );
    let m = ts("m");
    assert_eq!(
        m["typed_config"]["common_tls_context"]["tls_certificates"],
        json!([{"certificate_chain": {"filename": "/c.crt"}, "private_key": {"filename": "/c.key"}}])
    );
    // No `sni`: Envoy takes it from the request's Host, and checks the SAN against it.
    let opts = &cluster(&b, "outbound|80||m.example.com")["typed_extension_protocol_options"]
        ["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
    assert_eq!(
        opts["upstream_http_protocol_options"],
        json!({"auto_sni": true, "auto_san_validation": true})
    );
    assert!(ts("i")["typed_config"]["common_tls_context"]
        .get("validation_context")
        .is_none());
}

#[test]
fn tls_termination_chains_by_sni() {
    let gw = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: istio-system}\nspec:\n  \
              selector: {istio: ingressgateway}\n  servers:\n  \
              - port: {number: 443, name: https-a, protocol: HTTPS}\n    hosts: [a.example.com]\n    \
                tls: {mode: SIMPLE, serverCertificate: /a.crt, privateKey: /a.key, minProtocolVersion: TLSV1_3, cipherSuites: [ECDHE-RSA-AES256-GCM-SHA384]}\n  \
              - port: {number: 443, name: https-m, protocol: HTTPS}\n    hosts: ['*.m.example.com']\n    \
                tls: {mode: MUTUAL, serverCertificate: /m.crt, privateKey: /m.key, caCertificates: /ca.pem, subjectAltNames: [client.example.com]}\n  \
              - port: {number: 443, name: https-o, protocol: HTTPS}\n    hosts: ['*']\n    \
                tls: {mode: OPTIONAL_MUTUAL, credentialName: cred}\n---\n";
    let opts = EnvoyOptions {
        credentials: Some("/creds".into()),
        ..Default::default()
    };
    let b = export_with(
        &format!(
            "{gw}{}",
            virtual_service(TO_V1.replacen("    route", "  - route", 1).as_str())
        ),
        false,
        &opts,
    );
    let l = listener(&b, "0.0.0.0_443");
    assert_eq!(l["listener_filters"][0]["name"], "envoy.filters.listener.tls_inspector");
    let chains = l["filter_chains"].as_array().unwrap();
    assert_eq!(chains.len(), 3);
    let a = &chains[0];
    assert_eq!(a["name"], "https.443.https-a.gw.istio-system");
    assert_eq!(a["filter_chain_match"], json!({"server_names": ["a.example.com"]}));
    let ctx = &a["transport_socket"]["typed_config"];
    assert_eq!(ctx["require_client_certificate"], false);
    assert_eq!(
        ctx["common_tls_context"]["tls_params"],
        json!({"tls_minimum_protocol_version": "TLSv1_3", "tls_maximum_protocol_version": "TLSv1_3", "cipher_suites": ["ECDHE-RSA-AES256-GCM-SHA384"]})
    );
    assert_eq!(ctx["common_tls_context"]["alpn_protocols"], json!(["h2", "http/1.1"]));
    assert_eq!(
        a["filters"][0]["typed_config"]["route_config"]["name"],
        "https.443.https-a.gw.istio-system"
    );
    assert_eq!(
        a["filters"][0]["typed_config"]["stat_prefix"],
        "https.443.https-a.gw.istio-system"
    );
    let m = &chains[1]["transport_socket"]["typed_config"];
    assert_eq!(m["require_client_certificate"], true);
    assert_eq!(
        m["common_tls_context"]["validation_context"],
        json!({"trusted_ca": {"filename": "/ca.pem"}, "match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": "client.example.com"}}]})
    );
    let o = &chains[2];
    assert!(o.get("filter_chain_match").is_none(), "`*` takes any SNI and none");
    let octx = &o["transport_socket"]["typed_config"];
    assert_eq!(octx["require_client_certificate"], false);
    assert_eq!(
        octx["common_tls_context"]["tls_certificates"],
        json!([{"certificate_chain": {"filename": "/creds/cred/tls.crt"}, "private_key": {"filename": "/creds/cred/tls.key"}}])
    );
    assert_eq!(
        octx["common_tls_context"]["validation_context"]["trusted_ca"],
        json!({"filename": "/creds/cred/ca.crt"})
    );
}

#[test]
fn tcp_weighted_passthrough_and_auto_passthrough() {
    let gw = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: istio-system}\nspec:\n  \
              selector: {istio: ingressgateway}\n  servers:\n  \
              - port: {number: 31400, name: tcp, protocol: TCP}\n    hosts: ['*']\n  \
              - port: {number: 15443, name: tls, protocol: TLS}\n    hosts: [pass.example.com, other.example.com]\n    tls: {mode: PASSTHROUGH}\n  \
              - port: {number: 15444, name: auto, protocol: TLS}\n    hosts: ['*.svc.cluster.local']\n    tls: {mode: AUTO_PASSTHROUGH}\n---\n";
    let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: t, namespace: default}\nspec:\n  \
              hosts: ['*']\n  gateways: [istio-system/gw]\n  tcp:\n  - match: [{port: 31400}]\n    route:\n    \
              - {destination: {host: tcp, port: {number: 9000}}, weight: 80}\n    - {destination: {host: pass, port: {number: 443}}, weight: 20}\n  \
              tls:\n  - match: [{port: 15443, sniHosts: [pass.example.com]}]\n    route: [{destination: {host: pass, port: {number: 443}}}]\n---\n";
    let b = export(&format!(
        "{gw}{vs}{}{}",
        service("tcp", 9000, "TCP"),
        service("pass", 443, "TLS")
    ));
    let tcp = &listener(&b, "0.0.0.0_31400")["filter_chains"][0]["filters"][0];
    assert_eq!(tcp["name"], "envoy.filters.network.tcp_proxy");
    assert_eq!(
        tcp["typed_config"]["weighted_clusters"],
        json!({"clusters": [{"name": "outbound|9000||tcp.default.svc.cluster.local", "weight": 80},
                             {"name": "outbound|443||pass.default.svc.cluster.local", "weight": 20}]})
    );
    assert_eq!(tcp["typed_config"]["idle_timeout"], "3600s");
    let pass = &listener(&b, "0.0.0.0_15443")["filter_chains"];
    assert_eq!(
        pass.as_array().map(Vec::len),
        Some(1),
        "one chain per matching tls rule"
    );
    assert_eq!(
        pass[0]["filter_chain_match"],
        json!({"server_names": ["pass.example.com"]})
    );
    assert!(pass[0].get("transport_socket").is_none());
    assert_eq!(
        pass[0]["filters"][0]["typed_config"]["cluster"],
        "outbound|443||pass.default.svc.cluster.local"
    );
    let auto = listener(&b, "0.0.0.0_15444")["filter_chains"].as_array().unwrap();
    let snis: Vec<&Value> = auto
        .iter()
        .map(|c| &c["filter_chain_match"]["server_names"][0])
        .collect();
    assert!(
        snis.contains(&&json!("outbound_.9000_._.tcp.default.svc.cluster.local")),
        "{snis:?}"
    );
    assert!(
        snis.contains(&&json!("outbound_.443_._.pass.default.svc.cluster.local")),
        "{snis:?}"
    );
}

#[test]
fn a_tcp_server_without_a_rule_goes_to_the_black_hole() {
    let gw = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: istio-system}\nspec:\n  \
              selector: {istio: ingressgateway}\n  servers:\n  - port: {number: 31400, name: tcp, protocol: TCP}\n    hosts: ['*']\n---\n";
    let b = export(gw);
    assert_eq!(
        listener(&b, "0.0.0.0_31400")["filter_chains"][0]["filters"][0]["typed_config"]["cluster"],
        "BlackHoleCluster"
    );
}

#[test]
fn ports_can_be_bound_elsewhere_and_admin_moved() {
    let opts = EnvoyOptions {
        admin: ("127.0.0.1".into(), 0),
        bind: [(80, ("127.0.0.1".to_string(), 0))].into(),
        access_log: None,
        ..Default::default()
    };
    let b = export_with(
        &format!(
            "{GATEWAY_80}{}",
            virtual_service(TO_V1.replacen("    route", "  - route", 1).as_str())
        ),
        false,
        &opts,
    );
    let l = listener(&b, "0.0.0.0_80");
    assert_eq!(
        l["address"]["socket_address"],
        json!({"address": "127.0.0.1", "port_value": 0})
    );
    assert_eq!(b["admin"]["address"]["socket_address"]["port_value"], 0);
    assert_eq!(
        l["filter_chains"][0]["filters"][0]["typed_config"]["access_log"],
        json!([])
    );
    assert!(b["node"]["id"]
        .as_str()
        .unwrap()
        .starts_with("router~127.0.0.1~ingressgateway.istio-system~"));
}

#[test]
fn the_sidecar_is_an_explicit_proxy_with_a_catch_all() {
    let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r, namespace: default}\nspec:\n  \
              hosts: [reviews.default.svc.cluster.local]\n  http:\n  - route: [{destination: {host: reviews.default.svc.cluster.local}}]\n---\n";
    let mesh_only = format!("{}{}{vs}", service("reviews", 8000, "HTTP"), service("db", 5432, "TCP"));
    let b = export_with(&mesh_only, true, &EnvoyOptions::default());
    let l = listener(&b, "virtualOutbound");
    assert_eq!(l["address"]["socket_address"]["port_value"], 15001);
    let t = &l["filter_chains"][0]["filters"][0]["typed_config"];
    assert_eq!(t["use_remote_address"], false);
    assert!(t["upgrade_configs"]
        .as_array()
        .unwrap()
        .contains(&json!({"upgrade_type": "CONNECT"})));
    let vhosts = t["route_config"]["virtual_hosts"].as_array().unwrap();
    let by = |name: &str| {
        vhosts
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("{name}"))
    };
    // Port 8000: the domain keeps its port; no bare host (that would mean port 80).
    assert_eq!(
        by("reviews.default.svc.cluster.local:8000")["domains"],
        json!(["reviews.default.svc.cluster.local:8000"])
    );
    let db = by("db.default.svc.cluster.local:5432");
    assert_eq!(db["routes"][0]["match"], json!({"connect_matcher": {}}));
    assert_eq!(
        db["routes"][0]["route"]["upgrade_configs"],
        json!([{"upgrade_type": "CONNECT", "connect_config": {}}])
    );
    // ALLOW_ANY (Istio's default): the catch-all goes to the original destination.
    let last = vhosts.last().unwrap();
    assert_eq!((&last["name"], &last["domains"]), (&json!("allow_any"), &json!(["*"])));
    assert_eq!(last["routes"][1]["route"]["cluster"], "PassthroughCluster");
    // REGISTRY_ONLY: 502 for anything outside the registry, CONNECT included.
    let loaded = {
        let mut l = crate::load_str("t.yaml", &mesh_only);
        crate::config::apply_mesh_str(&mut l, "mesh.yaml", "outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n");
        l
    };
    let (plan, _) = build(
        &loaded.config,
        &PlanOptions {
            labels: Some([("app".to_string(), "sleep".to_string())].into()),
            namespace: None,
            sidecar: true,
        },
    );
    let b = bootstrap(&plan, &EnvoyOptions::default());
    let vhosts = listener(&b, "virtualOutbound")["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]
        ["virtual_hosts"]
        .clone();
    let last = vhosts.as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["name"], "block_all");
    assert_eq!(
        last["routes"],
        json!([
            {"name": "block_all", "match": {"connect_matcher": {}}, "direct_response": {"status": 502}},
            {"name": "block_all", "match": {"prefix": "/"}, "direct_response": {"status": 502}},
        ])
    );
}

#[test]
fn config_dump_has_envoys_admin_shape() {
    let loaded = crate::load_str("t.yaml", &format!("{GATEWAY_80}{}", service("plain", 80, "HTTP")));
    let (plan, _) = build(&loaded.config, &PlanOptions::default());
    let d = crate::envoy::config_dump(&plan, &EnvoyOptions::default(), "3", "2026-12-01T00:00:00Z");
    let types: Vec<&str> = d["configs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["@type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump",
            "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
            "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
            "type.googleapis.com/envoy.admin.v3.RoutesConfigDump",
        ]
    );
    assert_eq!(d["configs"][2]["static_listeners"][0]["listener"]["name"], "0.0.0.0_80");
    assert_eq!(
        d["configs"][3]["static_route_configs"][0]["route_config"]["name"],
        "http.80"
    );
    assert_eq!(d["configs"][1]["version_info"], "3");
    let clusters = d["configs"][1]["static_clusters"].as_array().unwrap();
    assert!(clusters
        .iter()
        .any(|c| c["cluster"]["name"] == "outbound|80||plain.default.svc.cluster.local"));
}
