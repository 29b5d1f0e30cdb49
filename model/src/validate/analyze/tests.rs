//! One test per analyzer: the resources it flags with its code, and those it must not.

use crate::diag::{Code, Diagnostic, Severity};

fn analyze(yaml: &str) -> Vec<Diagnostic> {
    let loaded = crate::load_str("t.yaml", yaml);
    super::analyze(&loaded.config)
}

fn analyze_with_mesh(yaml: &str, mesh: &str) -> Vec<Diagnostic> {
    let mut loaded = crate::load_str("t.yaml", yaml);
    crate::config::apply_mesh_str(&mut loaded, "mesh.yaml", mesh);
    super::analyze(&loaded.config)
}

/// `namespace/name` of every resource flagged with `code`, sorted, with repeats.
fn flagged(diags: &[Diagnostic], code: Code) -> Vec<String> {
    let mut v: Vec<String> = diags
        .iter()
        .filter(|d| d.code == code)
        .filter_map(|d| d.resource.as_ref().map(|r| format!("{}/{}", r.namespace, r.name)))
        .collect();
    v.sort();
    v
}

fn doc(kind: &str, ns: &str, name: &str, spec: &str) -> String {
    format!("apiVersion: networking.istio.io/v1\nkind: {kind}\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {spec}\n---\n")
}

fn gateway(ns: &str, name: &str, selector: &str, servers: &str) -> String {
    doc(
        "Gateway",
        ns,
        name,
        &format!("{{selector: {selector}, servers: {servers}}}"),
    )
}

#[test]
fn ist0145_both_gateways_of_one_workload_claiming_a_host_on_a_port() {
    let srv = |port: u32, host: &str| {
        format!("[{{port: {{number: {port}, name: p{port}, protocol: HTTP}}, hosts: ['{host}']}}]")
    };
    let yaml = [
        gateway("a", "alpha", "{istio: ingressgateway}", &srv(80, "foo.bar")),
        gateway("a", "beta", "{istio: ingressgateway}", &srv(80, "foo.bar")),
        gateway("a", "other-port", "{istio: ingressgateway}", &srv(8080, "foo.bar")),
        gateway("a", "other-host", "{istio: ingressgateway}", &srv(80, "baz.bar")),
        gateway("a", "other-workload", "{istio: egressgateway}", &srv(80, "foo.bar")),
        gateway("a", "wider", "{istio: ingressgateway, app: x}", &srv(80, "foo.bar")),
    ]
    .concat();
    let d = analyze(&yaml);
    assert_eq!(flagged(&d, Code::ConflictingGateways), ["a/alpha", "a/beta"]);
    assert!(d
        .iter()
        .filter(|d| d.code == Code::ConflictingGateways)
        .all(|d| d.severity == Severity::Error));
    // A wider selector is the same workload only when a Pod carries both selectors' labels.
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: gw-1, namespace: a, labels: {istio: ingressgateway, app: x}}\n---\n";
    let d = analyze(&format!("{yaml}{pod}"));
    assert_eq!(flagged(&d, Code::ConflictingGateways), ["a/alpha", "a/beta", "a/wider"]);
    // A Pod with the narrower selector's labels only does not make them one workload.
    let two = [
        gateway("a", "alpha", "{istio: ingressgateway}", &srv(80, "foo.bar")),
        gateway("a", "wider", "{istio: ingressgateway, app: x}", &srv(80, "foo.bar")),
    ]
    .concat();
    let narrow =
        "apiVersion: v1\nkind: Pod\nmetadata: {name: gw-2, namespace: a, labels: {istio: ingressgateway}}\n---\n";
    assert!(flagged(&analyze(&format!("{two}{narrow}")), Code::ConflictingGateways).is_empty());
}

#[test]
fn ist0145_a_bind_address_separates_listeners() {
    let srv = |bind: &str| format!("[{{port: {{number: 80, name: http, protocol: HTTP}}, hosts: ['foo.bar']{bind}}}]");
    let yaml = [
        gateway("a", "alpha", "{istio: ingressgateway}", &srv(", bind: 10.0.0.1")),
        gateway("a", "beta", "{istio: ingressgateway}", &srv("")),
    ]
    .concat();
    assert!(flagged(&analyze(&yaml), Code::ConflictingGateways).is_empty());
}

#[test]
fn ist0138_gateways_of_one_workload_sharing_a_certificate() {
    let tls = |cred: &str| {
        format!(
            "[{{port: {{number: 443, name: https, protocol: HTTPS}}, hosts: ['*'], tls: {{mode: SIMPLE, {cred}}}}}]"
        )
    };
    let yaml = [
        gateway("a", "one", "{istio: ingressgateway}", &tls("credentialName: shared")),
        gateway("a", "two", "{istio: ingressgateway}", &tls("credentialName: shared")),
        gateway("a", "own", "{istio: ingressgateway}", &tls("credentialName: mine")),
        gateway(
            "a",
            "files-1",
            "{istio: egress}",
            &tls("serverCertificate: /c.pem, privateKey: /k.pem"),
        ),
        gateway(
            "a",
            "files-2",
            "{istio: egress}",
            &tls("serverCertificate: /c.pem, privateKey: /k.pem"),
        ),
        gateway(
            "a",
            "files-3",
            "{istio: egress}",
            &tls("serverCertificate: /c.pem, privateKey: /other.pem"),
        ),
        gateway("a", "elsewhere", "{istio: other}", &tls("credentialName: shared")),
    ]
    .concat();
    let d = analyze(&yaml);
    assert_eq!(
        flagged(&d, Code::GatewayDuplicateCertificate),
        ["a/files-1", "a/files-2", "a/one", "a/two"]
    );
}

fn vs(ns: &str, name: &str, spec: &str) -> String {
    doc("VirtualService", ns, name, spec)
}

const ROUTE: &str = "http: [{route: [{destination: {host: reviews}}]}]";

#[test]
fn ist0109_mesh_virtual_services_sharing_a_host_in_a_scope() {
    let yaml = [
        vs("foo", "a", &format!("{{hosts: [reviews], {ROUTE}}}")),
        vs(
            "foo",
            "b",
            &format!("{{hosts: [reviews.foo.svc.cluster.local], {ROUTE}}}"),
        ),
        vs("bar", "c", &format!("{{hosts: [reviews], {ROUTE}}}")),
        vs(
            "foo",
            "gw-only",
            &format!("{{hosts: [reviews], gateways: [gw], {ROUTE}}}"),
        ),
        vs(
            "x",
            "private-1",
            &format!("{{hosts: [p.example.com], exportTo: ['.'], {ROUTE}}}"),
        ),
        vs(
            "y",
            "private-2",
            &format!("{{hosts: [p.example.com], exportTo: ['.'], {ROUTE}}}"),
        ),
        vs(
            "x",
            "named",
            &format!("{{hosts: [n.example.com], exportTo: [y], {ROUTE}}}"),
        ),
        vs("y", "public", &format!("{{hosts: [n.example.com], {ROUTE}}}")),
    ]
    .concat();
    let d = analyze(&yaml);
    assert_eq!(
        flagged(&d, Code::ConflictingMeshGatewayHosts),
        ["foo/a", "foo/b", "x/named", "y/public"]
    );
}

fn se(ns: &str, name: &str, spec: &str) -> String {
    doc("ServiceEntry", ns, name, spec)
}

#[test]
fn ist0101_and_ist0112_destinations_hosts_ports_and_subsets() {
    let registry = [
        se("default", "two-ports", "{hosts: [two.default.svc.cluster.local], location: MESH_INTERNAL, ports: [{number: 80, name: http, protocol: HTTP}, {number: 81, name: http2, protocol: HTTP}]}"),
        se("default", "one-port", "{hosts: [one.default.svc.cluster.local], location: MESH_INTERNAL, ports: [{number: 80, name: http, protocol: HTTP}]}"),
        se("default", "wild", "{hosts: ['*.wild.com'], ports: [{number: 443, name: tls, protocol: TLS}]}"),
        se("hidden", "private", "{hosts: [private.example.com], exportTo: ['.'], ports: [{number: 80, name: http, protocol: HTTP}]}"),
        doc("DestinationRule", "default", "one", "{host: one, subsets: [{name: v1, labels: {v: '1'}}]}"),
        doc("DestinationRule", "default", "two", "{host: two, trafficPolicy: {loadBalancer: {simple: RANDOM}}}"),
    ]
    .concat();
    let route = |name: &str, dest: &str| {
        vs(
            "default",
            name,
            &format!("{{hosts: [{name}.x], http: [{{route: [{{destination: {dest}}}]}}]}}"),
        )
    };
    let yaml = registry
        + &route("ok", "{host: one, subset: v1}")
        + &route("ok-port", "{host: two, port: {number: 81}}")
        + &route("ok-wildcard", "{host: api.wild.com}")
        + &route("no-port", "{host: two}")
        + &route("bad-port", "{host: one, port: {number: 9}}")
        + &route("bad-host", "{host: nowhere}")
        + &route("bad-subset", "{host: one, subset: v2}")
        + &route("invisible", "{host: private.example.com}")
        + &vs(
            "hidden",
            "own-namespace",
            "{hosts: [own.x], http: [{route: [{destination: {host: private.example.com}}]}]}",
        )
        + &route("no-subsets", "{host: two, port: {number: 80}, subset: v1}")
        // `*` is no host: validation rejects it, the analysis leaves it alone.
        + &route("star", "{host: '*'}");
    let d = analyze(&yaml);
    assert_eq!(flagged(&d, Code::DestinationPortRequired), ["default/no-port"]);
    assert_eq!(
        flagged(&d, Code::ReferencedResourceNotFound),
        [
            "default/bad-host",
            "default/bad-port",
            "default/bad-subset",
            "default/invisible",
            "default/no-subsets"
        ]
    );
    // A rule without subsets: the hint says where to define one, not an empty list.
    let no_subsets = d
        .iter()
        .find(|d| d.resource.as_ref().is_some_and(|r| r.name == "no-subsets"))
        .and_then(|d| d.hint.clone())
        .unwrap_or_default();
    assert!(
        no_subsets.starts_with("define it in a DestinationRule for `two.default.svc.cluster.local`"),
        "{no_subsets}"
    );
    let sev = |name: &str| {
        d.iter()
            .find(|d| d.resource.as_ref().is_some_and(|r| r.name == name))
            .map(|d| d.severity)
    };
    assert_eq!(
        sev("bad-host"),
        Some(Severity::Warning),
        "a host may be a Service outside the files"
    );
    assert_eq!(sev("bad-port"), Some(Severity::Error));
    assert_eq!(sev("bad-subset"), Some(Severity::Error));
}

#[test]
fn kubernetes_services_are_registry_entries_with_their_export_annotation() {
    let svc = |ns: &str, name: &str, anno: &str| {
        format!("apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}{anno}}}\nspec: {{ports: [{{port: 9080, name: http}}]}}\n---\n")
    };
    let yaml = svc("default", "reviews", "")
        + &svc(
            "default",
            "details",
            ", annotations: {networking.istio.io/exportTo: banana}",
        )
        + &vs(
            "istio-system",
            "cross",
            "{hosts: [r], http: [{route: [{destination: {host: reviews.default.svc.cluster.local}}]}]}",
        )
        + &vs(
            "istio-system",
            "hidden",
            "{hosts: [d], http: [{route: [{destination: {host: details.default.svc.cluster.local}}]}]}",
        )
        + &vs(
            "banana",
            "seen",
            "{hosts: [d], http: [{route: [{destination: {host: details.default.svc.cluster.local}}]}]}",
        )
        + &vs(
            "default",
            "exported-elsewhere",
            "{hosts: [r], exportTo: [bogus], http: [{route: [{destination: {host: details}}]}]}",
        );
    let d = analyze(&yaml);
    assert_eq!(
        flagged(&d, Code::ReferencedResourceNotFound),
        ["default/exported-elsewhere", "istio-system/hidden"]
    );
}

#[test]
fn ist0132_and_ist0165_gateway_references() {
    let yaml = [
        gateway("istio-system", "gw", "{istio: ingressgateway}", "[{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*.example.com', 'apps/only-apps.com', './own.com']}]"),
        vs("apps", "matches", "{hosts: [a.example.com, other.org], gateways: [istio-system/gw], http: [{route: [{destination: {host: a}}]}]}"),
        vs("apps", "ns-scoped", "{hosts: [only-apps.com], gateways: [istio-system/gw], http: [{route: [{destination: {host: a}}]}]}"),
        vs("web", "not-for-web", "{hosts: [only-apps.com], gateways: [istio-system/gw], http: [{route: [{destination: {host: a}}]}]}"),
        vs("istio-system", "dot-is-gateway-ns", "{hosts: [own.com], gateways: [gw], http: [{route: [{destination: {host: a}}]}]}"),
        vs("apps", "dot-elsewhere", "{hosts: [own.com], gateways: [istio-system/gw], http: [{route: [{destination: {host: a}}]}]}"),
        vs("apps", "missing", "{hosts: [a.example.com], gateways: [nope], http: [{route: [{destination: {host: a}}]}]}"),
        vs("apps", "internal", "{hosts: [a.example.com], gateways: ['istio-ingress/gw~istio-autogenerated-k8s-gateway~http'], http: [{route: [{destination: {host: a}}]}]}"),
        vs("apps", "mesh", "{hosts: [a], gateways: [mesh], http: [{route: [{destination: {host: a}}]}]}"),
        vs("apps", "match-gateways", "{hosts: [a.example.com], gateways: [istio-system/gw, mesh], http: [{match: [{gateways: [mesh]}, {gateways: [istio-system/gw, gone]}], route: [{destination: {host: a}}]}]}"),
    ]
    .concat();
    let d = analyze(&yaml);
    assert_eq!(
        flagged(&d, Code::VirtualServiceHostNotInGateway),
        ["apps/dot-elsewhere", "apps/missing", "web/not-for-web"]
    );
    assert_eq!(flagged(&d, Code::ReferencedInternalGateway), ["apps/internal"]);
    let missing_gateways: Vec<String> = d
        .iter()
        .filter(|d| d.code == Code::ReferencedResourceNotFound && d.field.as_deref() == Some("spec.gateways[0]"))
        .filter_map(|d| d.resource.as_ref().map(|r| r.name.clone()))
        .collect();
    assert_eq!(missing_gateways, ["missing"]);
    // A match's gateways are looked up too (Istio's analyzer does not): `mesh` is no resource.
    let in_matches: Vec<&str> = d
        .iter()
        .filter(|d| d.code == Code::ReferencedResourceNotFound)
        .filter_map(|d| d.field.as_deref())
        .filter(|f| f.contains(".match["))
        .collect();
    assert_eq!(in_matches, ["spec.http[0].match[1].gateways[1]"]);
}

#[test]
fn ist0140_gateway_routes_without_the_subsets_a_mesh_split_uses() {
    let yaml = [
        vs(
            "default",
            "split",
            "{hosts: [reviews], http: [{route: [{destination: {host: reviews, subset: v1}}]}]}",
        ),
        vs(
            "default",
            "ingress",
            "{hosts: ['*'], gateways: [gw], http: [{route: [{destination: {host: reviews}}]}]}",
        ),
        vs(
            "default",
            "ingress-subset",
            "{hosts: ['*'], gateways: [gw], http: [{route: [{destination: {host: reviews, subset: v1}}]}]}",
        ),
        vs(
            "default",
            "mesh-only",
            "{hosts: [x], http: [{route: [{destination: {host: reviews}}]}]}",
        ),
        vs(
            "default",
            "other-host",
            "{hosts: ['*'], gateways: [gw], http: [{route: [{destination: {host: ratings}}]}]}",
        ),
    ]
    .concat();
    assert_eq!(
        flagged(&analyze(&yaml), Code::IngressRouteRulesNotAffected),
        ["default/ingress"]
    );
}

#[test]
fn ist0002_the_deprecated_delay_percent() {
    let yaml = vs("foo", "old", "{hosts: [a], http: [{fault: {delay: {percent: 50, fixedDelay: 1s}}, route: [{destination: {host: a}}]}]}")
        + &vs("foo", "zero", "{hosts: [a], http: [{fault: {delay: {percent: 0, fixedDelay: 1s}}, route: [{destination: {host: a}}]}]}")
        + &vs("foo", "new", "{hosts: [a], http: [{fault: {delay: {percentage: {value: 50}, fixedDelay: 1s}}, route: [{destination: {host: a}}]}]}");
    assert_eq!(flagged(&analyze(&yaml), Code::Deprecated), ["foo/old"]);
}

#[test]
fn ist0128_and_ist0129_client_tls_without_a_ca() {
    let dr = |name: &str, tp: &str, selector: &str| {
        doc(
            "DestinationRule",
            "db",
            name,
            &format!("{{host: db, trafficPolicy: {tp}{selector}}}"),
        )
    };
    let yaml = [
        dr("simple", "{tls: {mode: SIMPLE}}", ""),
        dr("mutual", "{tls: {mode: MUTUAL, clientCertificate: /c, privateKey: /k}}", ""),
        dr("with-ca", "{tls: {mode: SIMPLE, caCertificates: /ca.pem}}", ""),
        dr("istio", "{tls: {mode: ISTIO_MUTUAL}}", ""),
        dr("port", "{portLevelSettings: [{port: {number: 5432}, tls: {mode: SIMPLE}}]}", ""),
        dr("both", "{tls: {mode: SIMPLE}, portLevelSettings: [{port: {number: 5432}, tls: {mode: MUTUAL, clientCertificate: /c, privateKey: /k}}]}", ""),
        dr("credential", "{tls: {mode: SIMPLE, credentialName: db-cred}}", ""),
        dr("credential-selector", "{tls: {mode: SIMPLE, credentialName: db-cred}}", ", workloadSelector: {matchLabels: {app: x}}"),
    ]
    .concat();
    let d = analyze(&yaml);
    assert_eq!(
        flagged(&d, Code::NoCaCertificatesDestination),
        ["db/both", "db/credential", "db/mutual", "db/simple"]
    );
    assert_eq!(flagged(&d, Code::NoCaCertificatesPort), ["db/both", "db/port"]);
}

#[test]
fn ist0134_tcp_ports_need_addresses_unless_allocated() {
    let yaml = [
        se(
            "default",
            "tcp",
            "{hosts: [a.example.com], ports: [{number: 22, name: tcp, protocol: TCP}]}",
        ),
        se(
            "default",
            "unset",
            "{hosts: [b.example.com], ports: [{number: 22, name: ssh}]}",
        ),
        se(
            "default",
            "http",
            "{hosts: [c.example.com], ports: [{number: 80, name: http, protocol: HTTP}]}",
        ),
        se(
            "default",
            "addressed",
            "{hosts: [d.example.com], addresses: [10.0.0.1], ports: [{number: 22, name: tcp, protocol: tcp}]}",
        ),
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: allocated, namespace: default}\n\
         spec: {hosts: [e.example.com], ports: [{number: 22, name: tcp, protocol: TCP}]}\n\
         status: {addresses: [{host: e.example.com, value: 240.240.0.1}]}\n---\n"
            .to_string(),
    ]
    .concat();
    assert_eq!(
        flagged(&analyze(&yaml), Code::ServiceEntryAddressesRequired),
        ["default/tcp", "default/unset"]
    );
    let capture = "defaultConfig: {proxyMetadata: {ISTIO_META_DNS_CAPTURE: 'true'}}\n";
    assert_eq!(
        flagged(&analyze_with_mesh(&yaml, capture), Code::ServiceEntryAddressesRequired).len(),
        2
    );
    let allocate =
        "defaultConfig: {proxyMetadata: {ISTIO_META_DNS_CAPTURE: 'true', ISTIO_META_DNS_AUTO_ALLOCATE: 'true'}}\n";
    assert!(flagged(&analyze_with_mesh(&yaml, allocate), Code::ServiceEntryAddressesRequired).is_empty());
    let pilot =
        "defaultConfig: {proxyMetadata: {ISTIO_META_DNS_CAPTURE: 'true', PILOT_ENABLE_IP_AUTOALLOCATE: 'true'}}\n";
    assert!(flagged(&analyze_with_mesh(&yaml, pilot), Code::ServiceEntryAddressesRequired).is_empty());
}

#[test]
fn ist0177_one_host_and_port_with_two_protocols_in_a_shared_scope() {
    let port = |p: &str| format!("ports: [{{number: 443, name: p, protocol: {p}}}]");
    let yaml = [
        se(
            "default",
            "se-http",
            &format!("{{hosts: [api.example.com], {}}}", port("HTTP")),
        ),
        se(
            "default",
            "se-https",
            &format!("{{hosts: [api.example.com], {}}}", port("HTTPS")),
        ),
        se(
            "default",
            "same-proto",
            &format!("{{hosts: [api.example.com], {}}}", port("http")),
        ),
        se(
            "a",
            "private-a",
            &format!("{{hosts: [p.example.com], exportTo: ['.'], {}}}", port("HTTP")),
        ),
        se(
            "b",
            "private-b",
            &format!("{{hosts: [p.example.com], exportTo: ['.'], {}}}", port("TLS")),
        ),
        // One exported to every namespace shares the scope of a namespace's private one.
        se(
            "c",
            "private-c",
            &format!("{{hosts: [q.example.com], exportTo: ['.'], {}}}", port("HTTP")),
        ),
        se(
            "default",
            "public-q",
            &format!("{{hosts: [q.example.com], {}}}", port("TCP")),
        ),
    ]
    .concat();
    assert_eq!(
        flagged(&analyze(&yaml), Code::ConflictingServiceEntryProtocol),
        [
            "c/private-c",
            "default/public-q",
            "default/same-proto",
            "default/se-http",
            "default/se-https"
        ]
    );
}

#[test]
fn a_service_host_names_its_namespace_only_with_a_name_and_a_namespace() {
    let config = crate::load_str("t.yaml", "").config;
    let of = |host: &str| super::resource_name_of_host(&config, "default", host);
    let pair = |ns: &str, name: &str| (ns.to_string(), name.to_string());
    assert_eq!(of("reviews.apps.svc.cluster.local"), pair("apps", "reviews"));
    assert_eq!(of("api.example.com"), pair("default", "api.example.com"));
    // An empty name or namespace names nothing: the host stays whole, in the default namespace.
    assert_eq!(
        of(".apps.svc.cluster.local"),
        pair("default", ".apps.svc.cluster.local")
    );
    assert_eq!(
        of("reviews..svc.cluster.local"),
        pair("default", "reviews..svc.cluster.local")
    );
}
