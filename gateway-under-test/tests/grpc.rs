//! gRPC through meshgate with a real gRPC client (tonic): h2c downstream, h2 upstream to a GRPC
//! port, method matching, weighted splits, and gRPC-shaped errors (fault abort, no upstream).

#![allow(clippy::expect_used, clippy::unwrap_used)] // Test code: a failure should panic.

mod support;

use support::*;

async fn call(
    addr: std::net::SocketAddr,
    path: &'static str,
    meta: &[(&'static str, &str)],
) -> Result<String, tonic::Status> {
    grpc_client::echo_call(addr, path, meta).await
}

fn field(text: &str, key: &str) -> Option<String> {
    parse_fields(text).into_iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

#[test]
fn grpc_routing_splits_and_errors() {
    let (v1, v2) = (grpc_echo("echo", "v1"), grpc_echo("echo", "v2"));
    let yaml = format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: istio-system}}\nspec:\n  \
         selector: {{istio: ingressgateway}}\n  servers:\n  - port: {{number: 8080, name: grpc, protocol: GRPC}}\n    hosts: ['*']\n---\n\
         apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: echo, namespace: default}}\nspec:\n  \
         hosts: [echo.default.svc.cluster.local]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  \
         ports: [{{number: 7070, name: grpc, protocol: GRPC}}]\n  endpoints:\n  \
         - {{address: 127.0.0.1, ports: {{grpc: {}}}, labels: {{version: v1}}}}\n  \
         - {{address: 127.0.0.1, ports: {{grpc: {}}}, labels: {{version: v2}}}}\n---\n\
         apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: echo, namespace: default}}\nspec:\n  \
         host: echo\n  subsets: [{{name: v1, labels: {{version: v1}}}}, {{name: v2, labels: {{version: v2}}}}]\n---\n\
         apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: echo, namespace: default}}\nspec:\n  \
         hosts: ['*']\n  gateways: [istio-system/gw]\n  http:\n  \
         - match: [{{uri: {{exact: /proto.EchoTestService/Abort}}}}]\n    fault: {{abort: {{grpcStatus: UNAVAILABLE, percentage: {{value: 100}}}}}}\n    \
         route: [{{destination: {{host: echo, subset: v1, port: {{number: 7070}}}}}}]\n  \
         - match: [{{uri: {{exact: /proto.EchoTestService/Echo}}, headers: {{x-version: {{exact: v2}}}}}}]\n    \
         route: [{{destination: {{host: echo, subset: v2, port: {{number: 7070}}}}}}]\n  \
         - match: [{{uri: {{prefix: /proto.EchoTestService/}}}}]\n    route:\n    \
         - {{destination: {{host: echo, subset: v1, port: {{number: 7070}}}}, weight: 50}}\n    \
         - {{destination: {{host: echo, subset: v2, port: {{number: 7070}}}}, weight: 50}}\n  \
         - match: [{{uri: {{prefix: /nowhere.Service/}}}}]\n    route: [{{destination: {{host: nowhere.example.com, port: {{number: 7070}}}}}}]\n---\n",
        v1.grpc[0].port(),
        v2.grpc[0].port()
    );
    let g = gate(&yaml, &[8080]);
    let addr = g.port(8080);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let text = call(addr, "/proto.EchoTestService/Echo", &[("x-version", "v2")])
            .await
            .expect("echo");
        assert_eq!(field(&text, "Echo").as_deref(), Some("hello"));
        assert_eq!(field(&text, "ServiceVersion").as_deref(), Some("v2"));
        assert_eq!(field(&text, "Proto").as_deref(), Some("GRPC"));
        // 50/50 over 200 calls: Binomial(200, .5) has sd ~7.1; ±40 is over 5 sd.
        let mut v2_count = 0;
        for _ in 0..200 {
            let text = call(addr, "/proto.EchoTestService/Echo", &[]).await.expect("echo");
            v2_count += usize::from(field(&text, "ServiceVersion").as_deref() == Some("v2"));
        }
        assert!((60..=140).contains(&v2_count), "v2 answered {v2_count} of 200");
        let err = call(addr, "/proto.EchoTestService/Abort", &[])
            .await
            .expect_err("abort");
        assert_eq!(err.code(), tonic::Code::Unavailable);
        let err = call(addr, "/nowhere.Service/Call", &[]).await.expect_err("no upstream");
        assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
        let err = call(addr, "/unrouted.Service/Call", &[]).await.expect_err("no route");
        assert_eq!(err.code(), tonic::Code::Unimplemented, "{err:?}");
        // The upstream's own status passes through in trailers.
        let err = call(addr, "/proto.EchoTestService/Echo", &[("codes", "7:1")])
            .await
            .expect_err("codes");
        assert_eq!(err.code(), tonic::Code::PermissionDenied);
    });
}
