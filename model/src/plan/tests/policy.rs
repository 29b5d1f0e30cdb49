//! Plans of DestinationRules: port-level and subset policies, merges, and which namespace's
//! rules a proxy gets.

use super::*;

#[test]
fn port_level_settings_replace_the_whole_top_level_policy() {
    let body = "  host: web\n  trafficPolicy:\n    loadBalancer: {simple: ROUND_ROBIN}\n    connectionPool: {tcp: {maxConnections: 7}}\n    \
                portLevelSettings:\n    - port: {number: 443}\n      tls: {mode: SIMPLE, sni: web.example.com}\n";
    let p = plan(&format!("{GW}{SVC}{}", dr("apps", "web", body)));
    let c80 = p.cluster("outbound|80||web.apps.svc.cluster.local").expect("80");
    assert_eq!(c80.policy.load_balancer.simple, Some(SimpleLb::RoundRobin));
    assert!(c80.policy.connection_pool.is_some());
    let c443 = p.cluster("outbound|443||web.apps.svc.cluster.local").expect("443");
    assert_eq!(
        c443.policy.load_balancer.simple,
        Some(SimpleLb::LeastRequest),
        "nothing is inherited"
    );
    assert!(c443.policy.connection_pool.is_none());
    assert_eq!(c443.policy.tls.mode, Some(ClientTlsMode::Simple));
}

#[test]
fn subset_policies_override_field_by_field_and_subset_port_level_decides_all() {
    let body = "  host: web\n  trafficPolicy:\n    loadBalancer: {simple: ROUND_ROBIN}\n    connectionPool: {tcp: {maxConnections: 7}}\n  subsets:\n  \
                - name: v1\n    labels: {version: v1}\n    trafficPolicy:\n      loadBalancer: {simple: RANDOM}\n  \
                - name: v2\n    labels: {version: v2}\n    trafficPolicy:\n      portLevelSettings:\n      - port: {number: 80}\n        outlierDetection: {consecutive5xxErrors: 3}\n";
    let p = plan(&format!("{GW}{SVC}{}", dr("apps", "web", body)));
    let v1 = p.cluster("outbound|80|v1|web.apps.svc.cluster.local").expect("v1");
    assert_eq!(v1.policy.load_balancer.simple, Some(SimpleLb::Random));
    assert!(v1.policy.connection_pool.is_some(), "inherited from the top level");
    assert_eq!(
        v1.endpoints.iter().map(|e| e.address.as_str()).collect::<Vec<_>>(),
        ["127.0.0.1"]
    );
    let v2 = p.cluster("outbound|80|v2|web.apps.svc.cluster.local").expect("v2");
    assert_eq!(v2.policy.load_balancer.simple, Some(SimpleLb::LeastRequest));
    assert!(
        v2.policy.connection_pool.is_none(),
        "the subset's port-level entry decides even where silent"
    );
    assert_eq!(
        v2.policy
            .outlier_detection
            .as_ref()
            .and_then(|o| o.consecutive_5xx_errors),
        Some(3)
    );
    assert_eq!(
        (v2.endpoints[0].address.as_str(), v2.endpoints[0].port),
        ("127.0.0.2", 8080)
    );
    let v2_443 = p.cluster("outbound|443|v2|web.apps.svc.cluster.local").expect("v2 443");
    assert_eq!(
        v2_443.policy.load_balancer.simple,
        Some(SimpleLb::RoundRobin),
        "no port-level entry for 443: top level"
    );
}

#[test]
fn several_rules_for_one_host_merge_subsets_and_the_first_policy_wins() {
    let a = dr("apps", "a", "  host: web.apps.svc.cluster.local\n  trafficPolicy: {loadBalancer: {simple: RANDOM}}\n  subsets: [{name: v1, labels: {version: v1}}]\n");
    let b = dr("apps", "b", "  host: web\n  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}\n  subsets: [{name: v1, labels: {version: v2}}, {name: v2, labels: {version: v2}}]\n");
    let p = plan(&format!("{GW}{SVC}{b}{a}"));
    let v1 = p.cluster("outbound|80|v1|web.apps.svc.cluster.local").expect("v1");
    assert_eq!(v1.policy.load_balancer.simple, Some(SimpleLb::Random));
    assert_eq!(v1.policy.destination_rule.as_deref(), Some("apps/a,apps/b"));
    assert_eq!(
        v1.endpoints[0].address, "127.0.0.1",
        "the first definition of a subset wins"
    );
    assert!(p.cluster("outbound|80|v2|web.apps.svc.cluster.local").is_some());
    // The same for a gateway with labels: rules with the same exportTo and no selector are one.
    let p = plan_in(
        &format!("{GW}{SVC}{b}{a}"),
        "istio-system",
        &[("istio", "ingressgateway")],
    );
    let v1 = p.cluster("outbound|80|v1|web.apps.svc.cluster.local").expect("v1");
    assert_eq!(v1.policy.load_balancer.simple, Some(SimpleLb::Random));
    assert_eq!(v1.policy.destination_rule.as_deref(), Some("apps/a,apps/b"));
    // Rules with different exportTo (neither set containing the other) stay apart, as in
    // istiod's mergeDestinationRule; the proxy takes the last rule without a selector.
    let a = a.replace("  host:", "  exportTo: ['*']\n  host:");
    let b = b.replace("  host:", "  exportTo: [istio-system]\n  host:");
    let p = plan_in(
        &format!("{GW}{SVC}{b}{a}"),
        "istio-system",
        &[("istio", "ingressgateway")],
    );
    let v1 = p.cluster("outbound|80|v1|web.apps.svc.cluster.local").expect("v1");
    assert_eq!(v1.policy.load_balancer.simple, Some(SimpleLb::RoundRobin));
    assert_eq!(v1.policy.destination_rule.as_deref(), Some("apps/b"));
    assert_eq!(v1.endpoints[0].address, "127.0.0.2", "b's v1");
}

fn plan_in(yaml: &str, namespace: &str, labels: &[(&str, &str)]) -> Plan {
    let loaded = crate::load_str("t.yaml", yaml);
    let opts = PlanOptions {
        labels: Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
        namespace: Some(namespace.into()),
        sidecar: false,
    };
    build(&loaded.config, &opts).0
}

/// A DestinationRule `name` in `ns` for web.apps with load balancer `lb`, `extra` lines before
/// its traffic policy.
fn rule(ns: &str, name: &str, extra: &str, lb: &str) -> String {
    dr(
        ns,
        name,
        &format!("  host: web.apps.svc.cluster.local\n{extra}  trafficPolicy: {{loadBalancer: {{simple: {lb}}}}}\n"),
    )
}

fn lb_of(p: &Plan) -> Option<SimpleLb> {
    p.cluster("outbound|80||web.apps.svc.cluster.local")
        .expect("cluster")
        .policy
        .load_balancer
        .simple
}

#[test]
fn rules_in_the_gateway_namespace_win_over_the_service_namespace() {
    let gw = GW.replace("namespace: istio-system", "namespace: gateways");
    let local = rule("gateways", "web-at-gateway", "", "RANDOM");
    let remote = rule("apps", "web", "", "ROUND_ROBIN");
    let ingress = [("istio", "ingressgateway")];
    let at_gateway = |rules: &str| lb_of(&plan_in(&format!("{gw}{SVC}{rules}"), "gateways", &ingress));
    assert_eq!(at_gateway(&format!("{remote}{local}")), Some(SimpleLb::Random));
    // A rule of the service's namespace that is not exported to the gateway's is not seen there.
    let hidden = rule("apps", "web", "  exportTo: ['.']\n", "ROUND_ROBIN");
    assert_eq!(at_gateway(&hidden), Some(SimpleLb::LeastRequest));
    // A rule of the gateway's own namespace exported only elsewhere is not the gateway's.
    let elsewhere = rule("gateways", "web-elsewhere", "  exportTo: [apps]\n", "RANDOM");
    assert_eq!(at_gateway(&format!("{elsewhere}{remote}")), Some(SimpleLb::RoundRobin));
    // Exported by name to another namespace, it is not seen at the gateway either.
    let other = rule("apps", "web", "  exportTo: [other]\n", "ROUND_ROBIN");
    assert_eq!(at_gateway(&other), Some(SimpleLb::LeastRequest));
    // Exported by name to the gateway's namespace, it is.
    let named = rule("apps", "web", "  exportTo: [gateways]\n", "ROUND_ROBIN");
    assert_eq!(at_gateway(&named), Some(SimpleLb::RoundRobin));
    // A rule with a workloadSelector applies to the proxies of its namespace that it selects,
    // and wins over the rule without one.
    let selecting = rule(
        "gateways",
        "for-ingress",
        "  workloadSelector: {matchLabels: {istio: ingressgateway}}\n",
        "PASSTHROUGH",
    );
    let yaml = format!("{gw}{SVC}{local}{selecting}");
    assert_eq!(
        lb_of(&plan_in(&yaml, "gateways", &ingress)),
        Some(SimpleLb::Passthrough)
    );
    assert_eq!(
        lb_of(&plan_in(&yaml, "gateways", &[("istio", "egressgateway")])),
        Some(SimpleLb::Random)
    );
}

#[test]
fn a_wildcard_rule_applies_to_the_hosts_it_covers_and_the_longest_wins() {
    let wild = |name: &str, host: &str, lb: &str| {
        dr(
            "apps",
            name,
            &format!("  host: '{host}'\n  trafficPolicy: {{loadBalancer: {{simple: {lb}}}}}\n"),
        )
    };
    let other = wild("other", "*.example.org", "ROUND_ROBIN");
    assert_eq!(lb_of(&plan(&format!("{GW}{SVC}{other}"))), Some(SimpleLb::LeastRequest));
    let svc = wild("svc", "*.svc.cluster.local", "RANDOM");
    let apps = wild("apps", "*.apps.svc.cluster.local", "PASSTHROUGH");
    assert_eq!(lb_of(&plan(&format!("{GW}{SVC}{other}{svc}"))), Some(SimpleLb::Random));
    assert_eq!(
        lb_of(&plan(&format!("{GW}{SVC}{svc}{apps}{other}"))),
        Some(SimpleLb::Passthrough)
    );
}

#[test]
fn a_gateway_in_the_root_namespace_prefers_the_services_rules_to_the_roots_exported_ones() {
    // istiod's own exception: for a proxy in the root namespace (istio-system), the root's rules
    // exported to everyone are mesh-wide defaults, looked at after the service's namespace; only
    // the root's private rules come first.
    let root_public = rule("istio-system", "mesh-default", "", "RANDOM");
    let service = rule("apps", "web", "", "ROUND_ROBIN");
    let ingress = [("istio", "ingressgateway")];
    let p = plan_in(&format!("{GW}{SVC}{service}{root_public}"), "istio-system", &ingress);
    assert_eq!(lb_of(&p), Some(SimpleLb::RoundRobin));
    let p = plan_in(&format!("{GW}{SVC}{root_public}"), "istio-system", &ingress);
    assert_eq!(
        lb_of(&p),
        Some(SimpleLb::Random),
        "without the service's rule the root's applies"
    );
    let root_private = rule("istio-system", "gateway-only", "  exportTo: ['.']\n", "PASSTHROUGH");
    let p = plan_in(&format!("{GW}{SVC}{service}{root_private}"), "istio-system", &ingress);
    assert_eq!(lb_of(&p), Some(SimpleLb::Passthrough));
}
