//! The tutorial's own YAML, end to end: its ingress Gateway and VirtualService (in
//! `istio-system`) and its VirtualService and DestinationRule (in `frontend`) exactly as the
//! files in examples/seed-istio-gateways give them, with the cluster's side as `kubectl get
//! service,endpointslice,pod -n frontend -o yaml` prints it (a `kind: List`). The subsets are
//! found across namespaces, `meshbench validate` finds no error, and meshgate splits 50/50.

#![allow(clippy::expect_used, clippy::unwrap_used)] // Test code: a failure should panic.

mod support;

use std::path::PathBuf;

use support::*;

fn seed(file: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/seed-istio-gateways")
        .join(file);
    std::fs::read_to_string(path).expect("seed file")
}

/// The Kubernetes objects behind `app-svc`: the Service, one EndpointSlice per version (each
/// echo listens on its own port) and the Pods they point at, whose labels the subsets select.
fn cluster_dump(v1: &EchoThread, v2: &EchoThread) -> String {
    let slice = |version: &str, port: u16| {
        format!(
            "- apiVersion: discovery.k8s.io/v1\n  kind: EndpointSlice\n  metadata:\n    name: app-svc-{version}\n    namespace: frontend\n    \
             labels: {{kubernetes.io/service-name: app-svc}}\n  addressType: IPv4\n  endpoints:\n  - addresses: [127.0.0.1]\n    \
             conditions: {{ready: true}}\n    targetRef: {{kind: Pod, name: app-{version}, namespace: frontend}}\n  \
             ports: [{{name: http, port: {port}, protocol: TCP}}]\n"
        )
    };
    let pod = |version: &str| {
        format!(
            "- apiVersion: v1\n  kind: Pod\n  metadata:\n    name: app-{version}\n    namespace: frontend\n    \
             labels: {{app: app-svc, version: {version}}}\n    uid: 0f6c2a4e-{version}\n  \
             spec: {{containers: [{{name: app, image: app:{version}, ports: [{{containerPort: 8080}}]}}]}}\n  \
             status: {{phase: Running, podIP: 127.0.0.1}}\n"
        )
    };
    format!(
        "apiVersion: v1\nkind: List\nmetadata: {{resourceVersion: \"\"}}\nitems:\n\
         - apiVersion: v1\n  kind: Service\n  metadata: {{name: app-svc, namespace: frontend, resourceVersion: \"4711\"}}\n  \
         spec:\n    clusterIP: 10.96.0.20\n    selector: {{app: app-svc}}\n    \
         ports: [{{name: http, port: 80, protocol: TCP, targetPort: 8080}}]\n  status: {{loadBalancer: {{}}}}\n{}{}{}{}",
        slice("v1", v1.http[0].port()),
        slice("v2", v2.http[0].port()),
        pod("v1"),
        pod("v2")
    )
}

#[test]
fn the_seeds_cross_namespace_subsets_validate_plan_and_split_50_50_on_the_wire() {
    let (v1, v2) = (echo("app-svc", "v1"), echo("app-svc", "v2"));
    let yaml = format!(
        "{}\n---\n{}\n---\n{}",
        seed("ingress-gateway.yaml"),
        seed("internal-routing.yaml"),
        cluster_dump(&v1, &v2)
    );
    let dir = temp_dir("seed");
    let file = dir.join("seed.yaml");
    std::fs::write(&file, &yaml).unwrap();

    let loaded = mesh_model::load_paths(&[&file], None).expect("read");
    let mut diags = loaded.diagnostics.clone();
    diags.extend(mesh_model::validate::validate(&loaded.config));
    assert!(diags.iter().all(|d| !d.is_error()), "{diags:#?}");
    assert!(
        diags.iter().all(|d| d.code.id() != "IST0101"),
        "app-svc is registered by its Service and its subsets found: {diags:#?}"
    );

    let gate = gate(&yaml, &[80]);
    let n = 400;
    let mut v2_count = 0;
    for _ in 0..n {
        let r = get(gate.port(80), "/", &[("Host", "app.example.com")]);
        assert_eq!(r.status, 200, "{}", r.body);
        if r.field("ServiceVersion").as_deref() == Some("v2") {
            v2_count += 1;
        }
    }
    // Binomial(400, 0.5): mean 200, sd 10. ±50 is 5 sd: a correct split fails < 1e-6 of the time;
    // a gateway that ignored the subsets' weights (all to one) or the cross-namespace rule
    // (503 NR) cannot pass.
    assert!((150..=250).contains(&v2_count), "v2 got {v2_count} of {n}");
}
