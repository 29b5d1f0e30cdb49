//! The attempts loop on the wire: a scripted upstream on loopback, the request through
//! `proxy::handle` as a gateway worker runs it.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

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
