use super::*;
use crate::limits::BodyLimits;

pub(crate) fn downstream() -> Downstream {
    let limits = <crate::Args as clap::Parser>::try_parse_from(["meshgate", "-c", "."])
        .map(|a| a.limits)
        .unwrap_or_else(|e| panic!("{e}"));
    Downstream {
        peer: "10.0.0.7:5000".parse().unwrap_or_else(|e| panic!("{e}")),
        local: "10.0.0.1:80".parse().unwrap_or_else(|e| panic!("{e}")),
        port: 80,
        scheme: "https",
        table: None,
        sni: None,
        outbound: false,
        original_dst: None,
        body: BodyLimits::new(&limits),
        telemetry: Arc::new(crate::telemetry::Telemetry::new(
            crate::telemetry::Identity::from_labels(&Default::default(), None),
        )),
    }
}

fn prepared(headers: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in headers {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap_or_else(|e| panic!("{e}")),
            HeaderValue::from_str(v).unwrap_or_else(|e| panic!("{e}")),
        );
    }
    prepare_downstream_headers(&mut h, &downstream());
    h
}

fn get<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

#[test]
fn the_peer_is_appended_to_x_forwarded_for_or_starts_it() {
    let h = prepared(&[("x-forwarded-for", "1.2.3.4, 5.6.7.8")]);
    assert_eq!(get(&h, "x-forwarded-for"), Some("1.2.3.4, 5.6.7.8, 10.0.0.7"));
    assert_eq!(get(&prepared(&[]), "x-forwarded-for"), Some("10.0.0.7"));
    assert_eq!(
        get(&prepared(&[("x-forwarded-for", "")]), "x-forwarded-for"),
        Some("10.0.0.7")
    );
}

#[test]
fn a_peer_address_is_written_as_display_writes_it() {
    for ip in [
        "0.0.0.0",
        "9.10.99.100",
        "255.254.1.20",
        "127.0.0.1",
        "::1",
        "2001:db8::7",
        "::ffff:10.0.0.1",
    ] {
        let ip: std::net::IpAddr = ip.parse().unwrap();
        let mut v = b"x".to_vec();
        push_ip(&mut v, ip);
        assert_eq!(String::from_utf8(v).unwrap(), format!("x{ip}"));
    }
}

#[test]
fn a_sidecars_outbound_side_leaves_x_forwarded_for_as_the_app_sent_it() {
    // Istio: `use_remote_address` is false on the outbound listener, so nothing is appended.
    let outbound = Downstream {
        outbound: true,
        ..downstream()
    };
    let mut h = HeaderMap::new();
    prepare_downstream_headers(&mut h, &outbound);
    assert_eq!(get(&h, "x-forwarded-for"), None);
    h.insert("x-forwarded-for", HeaderValue::from_static("1.2.3.4"));
    prepare_downstream_headers(&mut h, &outbound);
    assert_eq!(get(&h, "x-forwarded-for"), Some("1.2.3.4"));
}

#[test]
fn envoy_headers_from_outside_are_dropped_and_the_scheme_is_set() {
    let h = prepared(&[
        ("x-envoy-retry-on", "5xx"),
        ("x-envoy-upstream-rq-timeout-ms", "1"),
        ("x-env", "kept"),
        ("x-forwarded-proto", "http"),
    ]);
    assert!(h.keys().all(|k| !k.as_str().starts_with("x-envoy-")), "{h:?}");
    assert_eq!(get(&h, "x-env"), Some("kept"));
    assert_eq!(get(&h, "x-forwarded-proto"), Some("https"));
}

#[test]
fn a_request_id_is_kept_or_made_a_version_4_uuid() {
    assert_eq!(get(&prepared(&[("x-request-id", "abc")]), "x-request-id"), Some("abc"));
    let h = prepared(&[]);
    let id = get(&h, "x-request-id").unwrap_or_default().to_string();
    let groups: Vec<&str> = id.split('-').collect();
    assert_eq!(
        groups.iter().map(|g| g.len()).collect::<Vec<_>>(),
        vec![8, 4, 4, 4, 12],
        "{id}"
    );
    assert!(
        id.chars()
            .all(|c| c == '-' || c.is_ascii_digit() || ('a'..='f').contains(&c)),
        "{id}"
    );
    // Version 4; variant 10xx (8, 9, a or b).
    assert!(groups[2].starts_with('4'), "{id}");
    assert!(matches!(groups[3].as_bytes()[0], b'8' | b'9' | b'a' | b'b'), "{id}");
    // Random: 1000 ids, all different, and every hex digit used in the random places.
    let ids: std::collections::HashSet<[u8; 36]> = (0..1000).map(|_| request_id_bytes()).collect();
    assert_eq!(ids.len(), 1000);
    let digits: std::collections::HashSet<u8> = ids.iter().flat_map(|i| i[..8].to_vec()).collect();
    assert_eq!(digits.len(), 16);
    // Version and variant hold for every id, not by chance for one.
    assert!(ids
        .iter()
        .all(|i| i[14] == b'4' && matches!(i[19], b'8' | b'9' | b'a' | b'b')));
}

// The phases in-process: the request is built here, with no socket on either side.

const CONFIG: &str = "\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ['*']
  - port: {number: 8080, name: http-secure, protocol: HTTP}
    hosts: [secure.example.com]
    tls: {httpsRedirect: true}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews.example.com]
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  endpoints: [{address: 127.0.0.1, labels: {version: v1}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews.example.com
  subsets: [{name: v1, labels: {version: v1}}, {name: v9, labels: {version: v9}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: default}
spec:
  hosts: ['*']
  gateways: [istio-system/gw]
  http:
  - name: moved
    match: [{uri: {prefix: /moved}}]
    redirect: {uri: /new, authority: other.example.com}
  - name: direct
    match: [{uri: {prefix: /direct}}]
    directResponse: {status: 503, body: {string: down}}
  - name: abort
    match: [{uri: {prefix: /abort}}]
    fault: {abort: {httpStatus: 418, percentage: {value: 100}}}
    route: [{destination: {host: reviews.example.com, subset: v1}}]
  - name: cors
    match: [{uri: {prefix: /cors}}]
    corsPolicy:
      allowOrigins: [{exact: 'https://a.example'}, {regex: 'https://[a-z]+\\.r\\.example'}]
      allowMethods: [GET, PUT]
      exposeHeaders: [x-trace]
    route: [{destination: {host: reviews.example.com, subset: v9}}]
  - name: rewrite
    match: [{uri: {prefix: /old}}]
    rewrite: {uri: /v2, authority: api.internal}
    headers: {request: {set: {x-route: route, x-both: route}}}
    route:
    - destination: {host: reviews.example.com, subset: v1}
      headers: {request: {set: {x-both: destination}, remove: [cookie]}}
  - name: nowhere
    match: [{uri: {prefix: /nowhere}}]
    route: [{destination: {host: reviews.example.com, subset: v7}}]
---
";

/// The config compiled, and a downstream on the route table of `port`'s plaintext chain.
fn gateway(port: u32, scheme: &'static str) -> (Arc<Compiled>, Downstream) {
    compiled_gateway(CONFIG, port, scheme)
}

/// `yaml` compiled for a gateway, and a downstream on the route table of `port`'s plaintext chain.
pub(crate) fn compiled_gateway(yaml: &str, port: u32, scheme: &'static str) -> (Arc<Compiled>, Downstream) {
    let compiled = crate::compile::from_yaml(yaml, false, |_| {}, &downstream().telemetry);
    let table = compiled.listeners[&port].chains.iter().find_map(|c| match &c.action {
        mesh_model::plan::ChainAction::Http { route_table } => Some(route_table.clone()),
        _ => None,
    });
    let down = Downstream {
        port,
        scheme,
        table,
        ..downstream()
    };
    (Arc::new(compiled), down)
}

fn request(method: &str, uri: &str, headers: &[(&str, &str)]) -> Request<http_body_util::Empty<bytes::Bytes>> {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.body(http_body_util::Empty::new()).unwrap_or_else(|e| panic!("{e}"))
}

/// `handle` on the port-80 gateway: the response's status and headers, its body, and the outcome.
async fn handled(method: &str, uri: &str, headers: &[(&str, &str)]) -> (Response<()>, String, Outcome) {
    let (compiled, down) = gateway(80, "http");
    let (resp, out) = handle(compiled, &down, request(method, uri, headers)).await;
    let (parts, body) = resp.into_parts();
    let body = http_body_util::BodyExt::collect(body)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .to_bytes();
    (
        Response::from_parts(parts, ()),
        String::from_utf8_lossy(&body).into_owned(),
        out,
    )
}

fn header<'a>(r: &'a Response<()>, name: &str) -> Option<&'a str> {
    r.headers().get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn a_request_no_route_matches_gets_404_nr_as_http_or_grpc() {
    let (r, _, out) = handled("GET", "http://web.example.com/none", &[]).await;
    assert_eq!(r.status(), 404);
    assert_eq!((out.flags.as_str(), out.route.as_str()), ("NR", ""));
    assert_eq!(out.details, "route_not_found");
    assert_eq!(header(&r, "server"), Some("istio-envoy"));
    // gRPC: trailers-only, UNIMPLEMENTED (Envoy's mapping of 404).
    let (r, _, out) = handled(
        "POST",
        "http://web.example.com/none",
        &[("content-type", "application/grpc")],
    )
    .await;
    assert_eq!((r.status().as_u16(), header(&r, "grpc-status")), (200, Some("12")));
    assert_eq!(out.flags, "NR");
}

#[tokio::test]
async fn an_https_redirect_vhost_sends_plaintext_to_https_and_tls_through() {
    let (compiled, down) = gateway(8080, "http");
    let req = request("GET", "http://secure.example.com:8080/a?b=c", &[]);
    let (r, out) = handle(compiled.clone(), &down, req).await;
    assert_eq!(r.status(), 301);
    assert_eq!(
        r.headers().get("location").and_then(|v| v.to_str().ok()),
        Some("https://secure.example.com/a?b=c")
    );
    assert_eq!(out.details, "direct_response");
    // Over TLS the vhost routes as usual: no route here, so 404 rather than a redirect loop.
    let tls = Downstream {
        scheme: "https",
        ..down
    };
    let (r, _) = handle(compiled, &tls, request("GET", "https://secure.example.com/a", &[])).await;
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn local_replies_name_their_route_and_never_go_upstream() {
    let (r, _, out) = handled("GET", "http://web.example.com/moved/x?q=1", &[]).await;
    assert_eq!(r.status(), 301);
    assert_eq!(header(&r, "location"), Some("http://other.example.com/new?q=1"));
    assert_eq!((out.route.as_str(), out.details.as_ref()), ("moved", "direct_response"));
    let (r, body, out) = handled("GET", "http://web.example.com/direct", &[]).await;
    assert_eq!((r.status().as_u16(), body.as_str()), (503, "down"));
    assert_eq!((out.route.as_str(), out.flags.as_str()), ("direct", ""));
    // A fault abort still names the destination it was picked with (for the metrics).
    let (r, _, out) = handled("GET", "http://web.example.com/abort", &[]).await;
    assert_eq!(r.status(), 418);
    assert_eq!(out.flags, "FI");
    assert_eq!(out.details, "fault_filter_abort");
    assert_eq!(out.cluster, "outbound|9080|v1|reviews.example.com");
    assert_eq!(out.upstream_host, "", "no upstream was tried");
    assert_eq!(header(&r, "server"), Some("istio-envoy"));
}

#[tokio::test]
async fn a_route_without_endpoints_or_without_its_cluster_gets_503() {
    // A subset no endpoint carries: the cluster exists, empty.
    let (r, _, out) = handled("GET", "http://web.example.com/cors", &[]).await;
    assert_eq!(r.status(), 503);
    assert_eq!(
        (out.flags.as_str(), out.details.as_ref()),
        ("UH", "no_healthy_upstream")
    );
    assert_eq!(out.cluster, "outbound|9080|v9|reviews.example.com");
    // A subset the DestinationRule does not define: no cluster.
    let (r, _, out) = handled("GET", "http://web.example.com/nowhere", &[]).await;
    assert_eq!(r.status(), 503);
    assert_eq!((out.flags.as_str(), out.details.as_ref()), ("NC", "cluster_not_found"));
}

#[tokio::test]
async fn cors_preflights_are_answered_and_other_answers_carry_the_cors_headers() {
    let origin = ("origin", "https://a.example");
    let (r, _, out) = handled(
        "OPTIONS",
        "http://web.example.com/cors",
        &[origin, ("access-control-request-method", "PUT")],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(out.details, "cors_response");
    assert_eq!(header(&r, "access-control-allow-origin"), Some("https://a.example"));
    assert_eq!(header(&r, "access-control-allow-methods"), Some("GET,PUT"));
    assert_eq!(
        header(&r, "access-control-expose-headers"),
        None,
        "a preflight's own headers"
    );
    assert_eq!(header(&r, "server"), Some("istio-envoy"));
    // Any other answer to an allowed origin carries the CORS response headers: here a 503.
    let (r, _, _) = handled("GET", "http://web.example.com/cors", &[origin]).await;
    assert_eq!(r.status(), 503);
    assert_eq!(header(&r, "access-control-allow-origin"), Some("https://a.example"));
    assert_eq!(header(&r, "access-control-expose-headers"), Some("x-trace"));
    // The route's regex, compiled with its config, allows a whole origin and no more.
    let (r, _, _) = handled(
        "GET",
        "http://web.example.com/cors",
        &[("origin", "https://x.r.example")],
    )
    .await;
    assert_eq!(header(&r, "access-control-allow-origin"), Some("https://x.r.example"));
    let (r, _, _) = handled(
        "GET",
        "http://web.example.com/cors",
        &[("origin", "https://x.r.example.evil")],
    )
    .await;
    assert_eq!(header(&r, "access-control-allow-origin"), None);
    // Another origin gets none, and its preflight goes on as an ordinary request.
    let other = ("origin", "https://b.example");
    let (r, _, _) = handled("GET", "http://web.example.com/cors", &[other]).await;
    assert_eq!(header(&r, "access-control-allow-origin"), None);
    let (r, _, out) = handled(
        "OPTIONS",
        "http://web.example.com/cors",
        &[other, ("access-control-request-method", "PUT")],
    )
    .await;
    assert_eq!(
        (r.status().as_u16(), out.details.as_ref()),
        (503, "no_healthy_upstream")
    );
    // A preflight is an OPTIONS request that names the method it asks for (Fetch's CORS
    // protocol): without either, an allowed origin's request goes upstream.
    for (method, extra) in [
        ("OPTIONS", None),
        ("GET", Some(("access-control-request-method", "PUT"))),
    ] {
        let headers: Vec<_> = [origin].into_iter().chain(extra).collect();
        let (r, _, out) = handled(method, "http://web.example.com/cors", &headers).await;
        assert_eq!(
            (r.status().as_u16(), out.details.as_ref()),
            (503, "no_healthy_upstream"),
            "{method}"
        );
    }
}

#[test]
fn the_upstream_request_is_rewritten_and_the_destinations_operations_win() {
    let (compiled, down) = gateway(80, "http");
    let req = request(
        "GET",
        "http://web.example.com/old/list?page=2",
        &[("cookie", "a=b"), ("x-both", "client")],
    );
    let Ok(routed) = route(&compiled, &down, &req, &mut Outcome::new()) else {
        panic!("no route")
    };
    assert_eq!(routed.route.route.name, "rewrite");
    let peer =
        crate::forward::upstream_peer(&compiled, routed.route, routed.picked).unwrap_or_else(|f| panic!("{f:?}"));
    let (mut parts, _) = req.into_parts();
    let out = crate::forward::outgoing(routed.route, &peer, &mut parts);
    assert_eq!(
        (out.path.as_str(), out.authority.as_str()),
        ("/v2/list?page=2", "api.internal")
    );
    let h = &parts.headers;
    assert_eq!(get(h, "x-envoy-original-path"), Some("/old/list?page=2"));
    assert_eq!(get(h, "x-route"), Some("route"));
    // One destination: its operations run after the route's (istiod's processDestination).
    assert_eq!(get(h, "x-both"), Some("destination"));
    assert_eq!(get(h, "cookie"), None);
}

/// `--test-spin-us` (the CI gate's injected regression) burns at least that much CPU per request.
#[tokio::test]
async fn the_test_spin_burns_its_time_on_every_request() {
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};
    let (compiled, down) = gateway(80, "http");
    TEST_SPIN_NS.store(40_000_000, Ordering::Relaxed);
    let start = Instant::now();
    let _ = handle(compiled, &down, request("GET", "http://web.example.com/direct", &[])).await;
    TEST_SPIN_NS.store(0, Ordering::Relaxed);
    assert!(start.elapsed() >= Duration::from_millis(40));
}
