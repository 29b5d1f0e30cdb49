//! Going upstream, in-process: the pure decisions (header operations, the weighted pick, which
//! answers are retried, the consistent-hash key) on their own; the attempts loop against a
//! scripted HTTP/1.1 upstream is in `attempts`.

use super::*;

fn ops(remove: &[&str], set: &[(&str, &str)], add: &[(&str, &str)]) -> HeaderOperations {
    let pairs = |kv: &[(&str, &str)]| kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    HeaderOperations {
        remove: remove.iter().map(|s| s.to_string()).collect(),
        set: pairs(set),
        add: pairs(add),
    }
}

fn values<'a>(h: &'a HeaderMap, name: &str) -> Vec<&'a str> {
    h.get_all(name).iter().filter_map(|v| v.to_str().ok()).collect()
}

#[test]
fn the_hop_by_hop_headers_a_request_carries_are_the_ones_named_for_removal() {
    let h = headers(&[
        ("host", "a.example"),
        ("x-kept", "1"),
        ("upgrade", "websocket"),
        ("keep-alive", "5"),
    ]);
    let named: Vec<&str> = carried(&h, &names::HOP_BY_HOP).map(HeaderName::as_str).collect();
    assert_eq!(named, ["keep-alive", "upgrade", "host"]);
    assert_eq!(carried(&HeaderMap::new(), &names::HOP_BY_HOP).count(), 0);
}

#[test]
fn an_upstream_response_loses_its_hop_by_hop_headers_and_keeps_the_rest() {
    let h = headers(&[
        ("connection", "close"),
        ("keep-alive", "timeout=5"),
        ("proxy-connection", "keep-alive"),
        ("transfer-encoding", "chunked"),
        ("upgrade", "h2c"),
        ("content-type", "text/plain"),
        ("x-kept", "1"),
    ]);
    let mut resp = Response::new(());
    *resp.headers_mut() = h.clone();
    strip_response_hop_by_hop(&mut resp);
    let mut left: Vec<&str> = resp.headers().keys().map(HeaderName::as_str).collect();
    left.sort_unstable();
    assert_eq!(left, ["content-type", "x-kept"]);
    // An HTTP/2 response is left as it is: the h2 crate refuses one with these headers.
    let mut h2 = Response::new(());
    *h2.version_mut() = http::Version::HTTP_2;
    *h2.headers_mut() = h;
    strip_response_hop_by_hop(&mut h2);
    assert_eq!(h2.headers().len(), 7);
}

#[test]
fn header_operations_remove_then_set_then_add_as_envoy_does() {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("x-gone", "1"),
        ("x-set", "a"),
        ("x-set", "b"),
        ("x-add", "old"),
        ("x-keep", "k"),
    ] {
        h.append(k, HeaderValue::from_static(v));
    }
    let both = ops(
        &["x-gone", "x-add"],
        &[("x-set", "50%%")],
        &[("x-add", "new"), ("x-gone", "back")],
    );
    apply_ops(&mut h, Some(&both));
    // Removal comes first, so an add of a removed header starts from nothing.
    assert_eq!(values(&h, "x-add"), ["new"]);
    assert_eq!(values(&h, "x-gone"), ["back"]);
    // Set replaces every value; `%%` is Envoy's escaped `%`.
    assert_eq!(values(&h, "x-set"), ["50%"]);
    // Add appends beside what is there.
    apply_ops(&mut h, Some(&ops(&[], &[], &[("x-keep", "k2")])));
    assert_eq!(values(&h, "x-keep"), ["k", "k2"]);
    let before = h.clone();
    apply_ops(&mut h, None);
    assert_eq!(h, before);
}

fn weighted(weights: &[u32]) -> Vec<WeightedCluster> {
    weights
        .iter()
        .enumerate()
        .map(|(i, w)| WeightedCluster {
            weight: *w,
            ..WeightedCluster::only(&format!("c{i}"))
        })
        .collect()
}

/// How often each cluster is picked in `n` picks.
fn picks(clusters: &[WeightedCluster], n: usize) -> Vec<usize> {
    let mut count = vec![0; clusters.len()];
    for _ in 0..n {
        let c = pick_weighted(clusters).expect("a cluster");
        count[clusters
            .iter()
            .position(|x| x.cluster == c.cluster)
            .expect("one of them")] += 1;
    }
    count
}

#[test]
fn destinations_are_picked_in_proportion_to_their_weights() {
    fastrand::seed(15);
    // 10,000 picks at 25/75: the share is within 2 points (more than 4 standard deviations).
    let count = picks(&weighted(&[25, 75]), 10_000);
    assert!((2_300..=2_700).contains(&count[0]), "{count:?}");
    // Equal weights of 1: each gets about half (the pick walks past a weight it has used up).
    let count = picks(&weighted(&[1, 1]), 1_000);
    assert!(count.iter().all(|c| (400..=600).contains(c)), "{count:?}");
    // A zero weight is never picked.
    assert_eq!(picks(&weighted(&[0, 5, 0]), 200), [0, 200, 0]);
}

#[test]
fn all_weights_zero_take_the_first_destination_and_none_is_none() {
    let clusters = weighted(&[0, 0]);
    assert_eq!(pick_weighted(&clusters).map(|c| c.cluster.as_str()), Some("c0"));
    assert!(pick_weighted(&[]).is_none());
}

#[test]
fn header_operations_order_lets_a_single_destination_win_and_the_route_win_over_weighted_ones() {
    let (d, r) = (ops(&["d"], &[], &[]), ops(&["r"], &[], &[]));
    let order = |n| header_order(n, Some(&d), Some(&r)).map(|o| o.map(|o| o.remove[0].clone()));
    assert_eq!(order(1), [Some("r".to_string()), Some("d".to_string())]);
    assert_eq!(order(2), [Some("d".to_string()), Some("r".to_string())]);
}

fn policy(retry_on: &[&str], codes: &[u16]) -> RetryPolicy {
    RetryPolicy {
        attempts: 2,
        per_try_timeout: None,
        retry_on: retry_on.iter().map(|s| s.to_string()).collect(),
        retriable_status_codes: codes.to_vec(),
        retry_previous_hosts: false,
        backoff: mesh_model::api::Duration::from_millis(25),
    }
}

#[test]
fn http_answers_are_retried_under_envoys_retry_on_conditions() {
    let http = |on: &[&str], codes: &[u16], status| retriable(&policy(on, codes), Some(status), None, None);
    assert!(http(&["5xx"], &[], 500) && http(&["5xx"], &[], 503));
    assert!(!http(&["5xx"], &[], 499));
    assert!(http(&["gateway-error"], &[], 502) && http(&["gateway-error"], &[], 504));
    assert!(!http(&["gateway-error"], &[], 500) && !http(&["gateway-error"], &[], 505));
    assert!(http(&["retriable-4xx"], &[], 409) && !http(&["retriable-4xx"], &[], 404));
    assert!(http(&["retriable-status-codes"], &[418], 418));
    assert!(!http(&["retriable-status-codes"], &[418], 419));
    // A condition not named is not retried, whatever the answer.
    assert!(!http(&["connect-failure", "reset"], &[418], 503));
    assert!(!http(&[], &[], 503));
}

#[test]
fn grpc_statuses_are_retried_only_under_their_own_condition() {
    let cases = [
        ("cancelled", 1),
        ("deadline-exceeded", 4),
        ("resource-exhausted", 8),
        ("internal", 13),
        ("unavailable", 14),
    ];
    for (on, code) in cases {
        let p = policy(&[on], &[]);
        for (_, other) in cases {
            assert_eq!(
                retriable(&p, Some(200), Some(other), None),
                other == code,
                "{on} on {other}"
            );
        }
        assert!(!retriable(&p, Some(200), None, None), "{on} without grpc-status");
    }
}

#[test]
fn connect_failures_and_resets_are_retried_under_the_conditions_that_cover_them() {
    let refused = Failure::ConnectFailure("refused".into());
    let reset = Failure::Reset("closed".into());
    let failed = |on: &str, f: &Failure| retriable(&policy(&[on], &[]), None, None, Some(f));
    for on in ["5xx", "reset", "connect-failure", "gateway-error"] {
        assert!(failed(on, &refused), "{on}");
    }
    for on in ["5xx", "reset"] {
        assert!(failed(on, &reset), "{on}");
    }
    assert!(!failed("connect-failure", &reset) && !failed("gateway-error", &reset));
    assert!(!failed("retriable-4xx", &refused) && !failed("unavailable", &refused));
}

/// The one cluster of a ServiceEntry with `policy` as its DestinationRule's trafficPolicy.
fn cluster(policy: &str) -> UpstreamCluster {
    crate::balance::tests::cluster("STATIC", "[{address: 10.0.0.1}]", policy)
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).expect("a name"),
            HeaderValue::from_str(v).expect("a value"),
        );
    }
    h
}

#[test]
fn the_consistent_hash_key_is_the_configured_header_cookie_query_parameter_or_source_ip() {
    let down = crate::proxy::tests::downstream();
    let uri: Uri = "/p?a=1&user=q7".parse().expect("a uri");
    let h = headers(&[("x-user", "u1"), ("cookie", "a=1; user=c9"), ("cookie", "b=2")]);
    let key = |lb: &str| {
        hash_source(
            &cluster(&format!("{{loadBalancer: {{consistentHash: {lb}}}}}")),
            &h,
            &uri,
            &down,
        )
    };
    assert_eq!(key("{httpHeaderName: x-user}").as_deref(), Some("u1"));
    assert_eq!(key("{httpHeaderName: x-none}"), None);
    assert_eq!(key("{httpCookie: {name: user, ttl: 0s}}").as_deref(), Some("c9"));
    assert_eq!(key("{httpCookie: {name: b, ttl: 0s}}").as_deref(), Some("2"));
    assert_eq!(key("{httpCookie: {name: none, ttl: 0s}}"), None);
    assert_eq!(key("{useSourceIp: true}").as_deref(), Some("10.0.0.7"));
    assert_eq!(key("{httpQueryParameterName: user}").as_deref(), Some("q7"));
    assert_eq!(key("{httpQueryParameterName: none}"), None);
    // Without consistent hashing there is no key.
    assert_eq!(
        hash_source(&cluster("{loadBalancer: {simple: RANDOM}}"), &h, &uri, &down),
        None
    );
    // The same key hashes the same, so the request goes where its key's others went.
    let (hash, cookie) = consistent_hash(
        &cluster("{loadBalancer: {consistentHash: {httpHeaderName: x-user}}}"),
        &h,
        &uri,
        &down,
    );
    assert_eq!((hash, cookie), (Some(hash_key("u1")), None));
}

#[test]
fn a_hash_cookie_the_request_lacks_is_generated_with_its_path_and_ttl_as_envoy_does() {
    let down = crate::proxy::tests::downstream();
    let uri: Uri = "/".parse().expect("a uri");
    let none = HeaderMap::new();
    let set = |cookie: &str| {
        let c = cluster(&format!(
            "{{loadBalancer: {{consistentHash: {{httpCookie: {cookie}}}}}}}"
        ));
        consistent_hash(&c, &none, &uri, &down)
    };
    let (hash, cookie) = set("{name: user, path: /app, ttl: 60s}");
    let cookie = cookie.expect("a Set-Cookie");
    let value = cookie
        .strip_prefix("user=")
        .and_then(|c| c.split(';').next())
        .expect("user=<value>");
    assert!(
        value.len() == 16 && value.chars().all(|c| c.is_ascii_hexdigit()),
        "{cookie}"
    );
    assert_eq!(cookie, format!("user={value}; Path=/app; Max-Age=60; HttpOnly"));
    // The request is hashed by the value it is given, as its next requests will be.
    assert_eq!(hash, Some(hash_key(value)));
    // ttl 0: a session cookie, with no Max-Age; no path: no Path.
    let (_, cookie) = set("{name: user, ttl: 0s}");
    let cookie = cookie.expect("a Set-Cookie");
    assert!(
        cookie.ends_with("; HttpOnly") && !cookie.contains("Max-Age") && !cookie.contains("Path"),
        "{cookie}"
    );
    // No ttl: Envoy generates no cookie, and the request has no key.
    assert_eq!(set("{name: user}"), (None, None));
}

#[test]
fn an_error_chain_names_every_cause_outermost_first() {
    let inner = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
    let outer = std::io::Error::other(Wrapped(inner));
    assert_eq!(error_chain(&outer), "connecting: refused");
    assert_eq!(error_chain(&std::io::Error::other("alone")), "alone");
}

/// An error whose text is its own and whose source is the error it wraps.
#[derive(Debug)]
struct Wrapped(std::io::Error);

impl std::fmt::Display for Wrapped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connecting")
    }
}

impl std::error::Error for Wrapped {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

#[test]
fn retry_backoff_is_envoys_fully_jittered_exponential_range() {
    let ms = |n: u64| Duration::from_millis(n);
    // Istio's 25 ms base: [0, 25), [0, 75), [0, 175), then capped at 10x the base.
    assert_eq!(backoff_cap(ms(25), 1), ms(25));
    assert_eq!(backoff_cap(ms(25), 2), ms(75));
    assert_eq!(backoff_cap(ms(25), 3), ms(175));
    assert_eq!(backoff_cap(ms(25), 4), ms(250));
    assert_eq!(backoff_cap(ms(25), 40), ms(250));
    // A zero base still waits a little, never panics.
    assert_eq!(backoff_cap(Duration::ZERO, 1), ms(1));
}

mod attempts;
