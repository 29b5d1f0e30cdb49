//! Going upstream, in-process: the pure decisions (header operations, the weighted pick, which
//! answers are retried, the consistent-hash key) on their own, and the attempts loop against a
//! scripted HTTP/1.1 upstream on loopback, through `proxy::handle` as a request takes it.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("host", "a.example"),
        ("x-kept", "1"),
        ("upgrade", "websocket"),
        ("keep-alive", "5"),
    ] {
        h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    let named: Vec<&str> = hop_by_hop_in(&h).map(HeaderName::as_str).collect();
    assert_eq!(named, ["keep-alive", "upgrade", "host"]);
    assert_eq!(hop_by_hop_in(&HeaderMap::new()).count(), 0);
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

// The attempts loop on the wire: a scripted upstream on loopback, the request through
// `proxy::handle` as a gateway worker runs it.

/// One answer of the scripted upstream: its status, a `grpc-status` header, and how long it
/// waits before answering.
#[derive(Clone, Copy)]
struct Answer(u16, Option<u16>, u64);

/// What the upstream has seen: each request's head, in order.
type Seen = Arc<Mutex<Vec<String>>>;

/// An HTTP/1.1 upstream on 127.0.0.1 that answers each request with the next of `script`
/// (then 200), on keep-alive connections.
async fn upstream(script: &[Answer]) -> (u16, Seen) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("an address").port();
    let script = Arc::new(Mutex::new(script.iter().copied().collect::<VecDeque<_>>()));
    let seen: Seen = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let (script, log) = (script.clone(), log.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                        buf.drain(..end + 4);
                        log.lock().expect("the log").push(head);
                        let next = script.lock().expect("the script").pop_front();
                        let Answer(status, grpc, wait) = next.unwrap_or(Answer(200, None, 0));
                        tokio::time::sleep(Duration::from_millis(wait)).await;
                        let grpc = grpc.map(|g| format!("grpc-status: {g}\r\n")).unwrap_or_default();
                        let resp = if status == 101 {
                            "HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n"
                                .into()
                        } else {
                            format!("HTTP/1.1 {status} X\r\n{grpc}content-length: 2\r\n\r\nok")
                        };
                        if s.write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    (port, seen)
}

/// A gateway on port 80 whose only route goes to the upstream on `port` with `retries` (the
/// VirtualService's `retries`, YAML) and `extra` route fields.
fn gateway(port: u16, retries: &str, extra: &str) -> (Arc<Compiled>, Downstream) {
    gateway_with(port, retries, extra, "")
}

/// `gateway`, with `more` (YAML documents) added to the config.
fn gateway_with(port: u16, retries: &str, extra: &str, more: &str) -> (Arc<Compiled>, Downstream) {
    let yaml = format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: istio-system}}\n\
         spec:\n  selector: {{istio: ingressgateway}}\n  servers: [{{port: {{number: 80, name: http, protocol: HTTP}}, hosts: ['*']}}]\n\
         ---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: web, namespace: default}}\n\
         spec:\n  hosts: [web.example.com]\n  resolution: STATIC\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  \
         endpoints: [{{address: 127.0.0.1, ports: {{http: {port}}}}}]\n\
         ---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: web, namespace: default}}\n\
         spec:\n  hosts: ['*']\n  gateways: [istio-system/gw]\n  http:\n  - name: web\n    retries: {retries}\n{extra}    \
         route: [{{destination: {{host: web.example.com}}}}]\n{more}"
    );
    crate::proxy::tests::compiled_gateway(&yaml, 80, "http")
}

/// A GET of `uri` through the gateway: the response's status, its `grpc-status`, and the outcome.
async fn get(compiled: &Arc<Compiled>, down: &Downstream, uri: &str) -> (u16, Option<String>, Outcome) {
    let req = Request::builder()
        .uri(uri)
        .header("host", "web.example.com")
        .header("connection", "keep-alive")
        .header("keep-alive", "timeout=5")
        .header("proxy-connection", "keep-alive")
        .body(http_body_util::Empty::<Bytes>::new())
        .expect("a request");
    let (resp, out) = crate::proxy::handle(compiled.clone(), down, req).await;
    let grpc = resp
        .headers()
        .get(names::GRPC_STATUS)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    (status, grpc, out)
}

const FIVE_XX: &str = "{attempts: 2, retryOn: 5xx}";

#[tokio::test]
async fn a_retriable_answer_is_retried_up_to_the_policys_attempts_then_passed_on() {
    let fail = Answer(503, None, 0);
    // Two retries: the third 503 is the answer.
    let (port, seen) = upstream(&[fail, fail, fail, fail]).await;
    let (compiled, down) = gateway(port, FIVE_XX, "");
    let (status, _, out) = get(&compiled, &down, "/a").await;
    assert_eq!((status, seen.lock().expect("seen").len()), (503, 3));
    assert_eq!(out.flags, "", "an upstream answer is not a failure");
    // A retry that succeeds is the answer.
    let (port, seen) = upstream(&[fail]).await;
    let (compiled, down) = gateway(port, FIVE_XX, "");
    assert_eq!(get(&compiled, &down, "/a").await.0, 200);
    assert_eq!(seen.lock().expect("seen").len(), 2);
    // Retries off: sent once.
    let (port, seen) = upstream(&[fail]).await;
    let (compiled, down) = gateway(port, "{attempts: 0}", "");
    assert_eq!(get(&compiled, &down, "/a").await.0, 503);
    assert_eq!(seen.lock().expect("seen").len(), 1);
}

#[tokio::test]
async fn a_grpc_status_in_a_200_is_retried_when_the_policy_names_it() {
    let (port, seen) = upstream(&[Answer(200, Some(14), 0)]).await;
    let (compiled, down) = gateway(port, "{attempts: 1, retryOn: unavailable}", "");
    let (status, grpc, _) = get(&compiled, &down, "/a").await;
    assert_eq!((status, grpc), (200, None));
    assert_eq!(seen.lock().expect("seen").len(), 2);
}

#[tokio::test]
async fn a_per_try_timeout_is_retried_and_each_try_gets_its_own_time() {
    // The first try outlasts its 200 ms; the second answers at once.
    let (port, seen) = upstream(&[Answer(200, None, 1_000)]).await;
    let (compiled, down) = gateway(port, "{attempts: 1, perTryTimeout: 0.2s, retryOn: 5xx}", "");
    let (status, _, out) = get(&compiled, &down, "/a").await;
    assert_eq!((status, out.flags.as_str()), (200, ""));
    assert_eq!(seen.lock().expect("seen").len(), 2);
}

#[tokio::test]
async fn connect_failures_are_retried_and_the_last_one_is_flagged_as_retried() {
    // A port nothing listens on: every attempt is refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let (compiled, down) = gateway(port, "{attempts: 2, retryOn: connect-failure}", "");
    let (status, _, out) = get(&compiled, &down, "/a").await;
    assert_eq!((status, out.flags.as_str()), (503, "URX,UF"));
    let (compiled, down) = gateway(port, "{attempts: 0}", "");
    let (status, _, out) = get(&compiled, &down, "/a").await;
    assert_eq!((status, out.flags.as_str()), (503, "UF"));
}

#[tokio::test]
async fn the_upstream_gets_the_rewritten_request_and_the_answer_its_header_operations() {
    let (port, seen) = upstream(&[]).await;
    let extra = "    match: [{uri: {prefix: /old}}]\n    rewrite: {uri: /v2, authority: api.internal}\n    \
                 headers: {request: {set: {x-route: r}}, response: {add: {x-answer: a}}}\n";
    let (compiled, down) = gateway(port, FIVE_XX, extra);
    let req = Request::builder()
        .uri("/old?q=1")
        .header("host", "web.example.com")
        .body(http_body_util::Empty::<Bytes>::new())
        .expect("a request");
    let (resp, out) = crate::proxy::handle(compiled.clone(), &down, req).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(values(resp.headers(), "x-answer"), ["a"]);
    let ms: u128 = values(resp.headers(), "x-envoy-upstream-service-time")[0]
        .parse()
        .expect("ms");
    assert_eq!(out.upstream_ms, Some(ms));
    assert_eq!(out.upstream_host, format!("127.0.0.1:{port}"));
    let head = seen.lock().expect("seen")[0].to_ascii_lowercase();
    assert!(head.starts_with("get /v2?q=1 http/1.1\r\n"), "{head}");
    for line in ["host: api.internal", "x-route: r", "x-envoy-original-path: /old?q=1"] {
        assert!(head.contains(line), "{line} in {head}");
    }
    // Not rewritten: no original path, and the request's own authority.
    let (port, seen) = upstream(&[]).await;
    let (compiled, down) = gateway(port, FIVE_XX, "");
    assert_eq!(get(&compiled, &down, "/same").await.0, 200);
    let head = seen.lock().expect("seen")[0].to_ascii_lowercase();
    assert!(
        head.contains("host: web.example.com") && !head.contains("x-envoy-original-path"),
        "{head}"
    );
    // Hop-by-hop headers stop at the gateway.
    for hop in ["connection:", "keep-alive:", "proxy-connection:"] {
        assert!(!head.contains(hop), "{hop} {head}");
    }
    assert_eq!(head.matches("host:").count(), 1, "{head}");
}

#[tokio::test]
async fn each_attempt_is_counted_with_its_time_in_milliseconds() {
    let (port, _) = upstream(&[Answer(503, None, 60)]).await;
    let (compiled, down) = gateway(port, FIVE_XX, "");
    assert_eq!(get(&compiled, &down, "/a").await.0, 200);
    let scrape = crate::telemetry::tests::scrape_shared(&down.telemetry);
    let line = |prefix: &str| {
        scrape
            .lines()
            .find(|l| l.starts_with(prefix) && l.contains("web.example.com"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{prefix} in {scrape}"))
    };
    assert_eq!(line("envoy_cluster_upstream_rq_total"), 2.0);
    assert_eq!(line("envoy_cluster_upstream_rq_retry"), 1.0);
    // The 503 took 60 ms and more: the time is in milliseconds, not seconds.
    let sum = line("envoy_cluster_upstream_rq_time_sum");
    assert!((55.0..1_000.0).contains(&sum), "{sum} ms in {scrape}");
}

#[tokio::test]
async fn the_route_timeout_answers_504_ut_and_zero_turns_it_off() {
    let (port, _) = upstream(&[Answer(200, None, 1_000)]).await;
    let (compiled, down) = gateway(port, FIVE_XX, "    timeout: 0.2s\n");
    let (status, _, out) = get(&compiled, &down, "/a").await;
    assert_eq!((status, out.flags.as_str()), (504, "UT"));
    // Istio: a timeout of 0 disables it; the slow answer arrives.
    let (port, _) = upstream(&[Answer(200, None, 300)]).await;
    let (compiled, down) = gateway(port, FIVE_XX, "    timeout: 0s\n");
    assert_eq!(get(&compiled, &down, "/a").await.0, 200);
}

#[tokio::test]
async fn an_upgrade_to_an_http1_upstream_goes_as_it_came_and_its_101_comes_back() {
    let (port, seen) = upstream(&[Answer(101, None, 0)]).await;
    let (compiled, down) = gateway(port, FIVE_XX, "");
    let req = Request::builder()
        .uri("/ws")
        .header("host", "web.example.com")
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .body(http_body_util::Empty::<Bytes>::new())
        .expect("a request");
    let (resp, _) = crate::proxy::handle(compiled.clone(), &down, req).await;
    assert_eq!(resp.status(), 101);
    // The hop-by-hop headers an upgrade needs reach the upstream.
    let head = seen.lock().expect("seen")[0].to_ascii_lowercase();
    assert!(
        head.contains("upgrade: websocket") && head.contains("connection: upgrade"),
        "{head}"
    );
}

#[tokio::test]
async fn with_maxretries_retries_in_flight_a_failed_request_is_not_retried() {
    let fail = Answer(503, None, 0);
    let (port, seen) = upstream(&[fail, fail]).await;
    let rule =
        "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: web, namespace: default}\n\
                spec:\n  host: web.example.com\n  trafficPolicy: {connectionPool: {http: {maxRetries: 1}}}\n";
    let (compiled, down) = gateway_with(port, FIVE_XX, "", rule);
    let cluster = compiled.clusters.values().next().expect("the cluster");
    // Another request's retry holds the one slot: this one's 503 is its answer.
    assert!(cluster.breakers.start_retry());
    assert_eq!(get(&compiled, &down, "/a").await.0, 503);
    assert_eq!(seen.lock().expect("seen").len(), 1);
    // The slot free again: the retry goes, and gives the slot back when it ends.
    cluster.breakers.end_retry();
    assert_eq!(get(&compiled, &down, "/a").await.0, 200);
    assert_eq!(seen.lock().expect("seen").len(), 3);
    assert!(cluster.breakers.start_retry());
}

#[tokio::test]
async fn a_request_the_breaker_refuses_is_503_uo_and_counted_as_an_overflow() {
    let (port, seen) = upstream(&[]).await;
    let rule =
        "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: web, namespace: default}\n\
                spec:\n  host: web.example.com\n  trafficPolicy: {connectionPool: {http: {http2MaxRequests: 1}}}\n";
    let (compiled, down) = gateway_with(port, FIVE_XX, "", rule);
    let cluster = compiled.clusters.values().next().expect("the cluster");
    // Another request holds the one request slot.
    let held = cluster.breakers.admit().await.expect("the slot");
    let (status, _, out) = get(&compiled, &down, "/a").await;
    assert_eq!((status, out.flags.as_str()), (503, "UO"));
    assert!(seen.lock().expect("seen").is_empty(), "refused before it was sent");
    let overflow = || {
        let scrape = crate::telemetry::tests::scrape_shared(&down.telemetry);
        scrape
            .lines()
            .find(|l| l.starts_with("envoy_cluster_upstream_rq_pending_overflow") && l.contains("web.example.com"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("the overflow counter in {scrape}"))
    };
    assert_eq!(overflow(), 1.0);
    // The slot free again: the request goes, and is no overflow.
    drop(held);
    assert_eq!(get(&compiled, &down, "/a").await.0, 200);
    assert_eq!(overflow(), 1.0);
}

#[tokio::test]
async fn a_mirror_gets_a_copy_with_the_requests_own_authority_and_the_client_the_main_answer() {
    let (port, seen) = upstream(&[]).await;
    let (mirror_port, mirrored) = upstream(&[Answer(500, None, 0)]).await;
    let mirror_entry = format!(
        "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: mirror, namespace: default}}\n\
         spec:\n  hosts: [mirror.example.com]\n  resolution: STATIC\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  \
         endpoints: [{{address: 127.0.0.1, ports: {{http: {mirror_port}}}}}]\n"
    );
    let extra = "    mirror: {host: mirror.example.com}\n";
    let (compiled, down) = gateway_with(port, FIVE_XX, extra, &mirror_entry);
    // The mirror's 500 is not the client's answer, and is not retried.
    assert_eq!(get(&compiled, &down, "/copy?x=1").await.0, 200);
    assert_eq!(seen.lock().expect("seen").len(), 1);
    let deadline = Instant::now() + Duration::from_secs(5);
    while mirrored.lock().expect("mirrored").is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let copies = mirrored.lock().expect("mirrored").clone();
    assert_eq!(copies.len(), 1, "{copies:?}");
    let head = copies[0].to_ascii_lowercase();
    assert!(head.starts_with("get /copy?x=1 http/1.1\r\n"), "{head}");
    // Istio turns off Envoy's `-shadow` suffix (`DISABLE_SHADOW_HOST_SUFFIX`, true by default).
    assert!(head.lines().any(|l| l == "host: web.example.com"), "{head}");
}
