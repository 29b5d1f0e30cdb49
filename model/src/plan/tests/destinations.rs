//! Plans of route destinations: short names, ports, cluster names and weights, and services
//! reached through the registry.

use super::*;

#[test]
fn weights_are_relative_single_is_100_and_zero_is_dropped() {
    let http = "[{match: [{uri: {prefix: /one}}], route: [{destination: {host: a.example.com, port: {number: 80}}, weight: 0}]}, \
                {match: [{uri: {prefix: /three}}], route: [{destination: {host: a.example.com, port: {number: 80}}, weight: 1}, \
                 {destination: {host: b.example.com, port: {number: 80}}, weight: 3}, {destination: {host: c.example.com, port: {number: 80}}, weight: 0}]}]";
    let p = plan(&format!("{GW}{}", vs("apps", "r", "['*']", http)));
    let r = routes(&p, "http.80", "*");
    assert_eq!(clusters_of(&r[0]), [("outbound|80||a.example.com".to_string(), 100)]);
    assert_eq!(
        clusters_of(&r[1]),
        [
            ("outbound|80||a.example.com".to_string(), 1),
            ("outbound|80||b.example.com".to_string(), 3)
        ]
    );
}

#[test]
fn short_names_expand_in_the_virtual_service_namespace() {
    let yaml = format!(
        "{GW}{}",
        vs(
            "bookinfo",
            "r",
            "['*']",
            "[{route: [{destination: {host: reviews, subset: v1, port: {number: 9080}}}]}]"
        )
    );
    let p = plan(&yaml);
    assert_eq!(
        clusters_of(&routes(&p, "http.80", "*")[0])[0].0,
        "outbound|9080|v1|reviews.bookinfo.svc.cluster.local"
    );
}

#[test]
fn a_service_without_endpoints_is_reached_by_its_name_only_when_resolved_by_dns() {
    let se = |name: &str, resolution: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  \
             hosts: [{name}.example.com]\n  resolution: {resolution}\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n---\n"
        )
    };
    let p = plan(&format!("{GW}{}{}", se("dns", "DNS"), se("static", "STATIC")));
    let endpoints = |host: &str| -> Vec<(String, u32)> {
        p.cluster(&format!("outbound|80||{host}"))
            .unwrap_or_else(|| panic!("no cluster for {host}"))
            .endpoints
            .iter()
            .map(|e| (e.address.clone(), e.port))
            .collect()
    };
    assert_eq!(endpoints("dns.example.com"), [("dns.example.com".to_string(), 80)]);
    assert_eq!(endpoints("static.example.com"), []);
}

#[test]
fn a_destination_without_a_port_takes_the_listeners_and_is_warned_when_its_service_lacks_it() {
    let lacks = |d: &Diagnostic| d.message.contains("has no port and its service has several");
    // The cluster a route to `host` without a port gets at listener 80, and how many warnings
    // say the service lacks that port.
    let planned = |svc: &str, host: &str| {
        let route = format!("[{{route: [{{destination: {{host: {host}}}}}]}}]");
        let (p, diags) = plan_for(&format!("{GW}{svc}{}", vs("apps", "web", "['*']", &route)), None);
        let cluster = clusters_of(&routes(&p, "http.80", "*")[0])[0].0.clone();
        (cluster, diags.iter().filter(|d| lacks(d)).count())
    };
    let cluster = |port: u32| format!("outbound|{port}||web.apps.svc.cluster.local");
    // web.apps has ports 80 and 443: at listener 80 the destination is port 80, silently.
    assert_eq!(planned(SVC, "web"), (cluster(80), 0));
    // Ports 8080 and 9090 only: still the listener's port, as Istio does, with a warning.
    let other = SVC
        .replace("number: 80,", "number: 8080,")
        .replace("number: 443,", "number: 9090,");
    assert_eq!(planned(&other, "web"), (cluster(80), 1));
    // A single port is the destination's port whatever the listener's (GetDestinationCluster).
    let single = SVC
        .replace(", {number: 443, name: https, protocol: HTTPS}", "")
        .replace("number: 80,", "number: 8080,");
    assert_eq!(planned(&single, "web"), (cluster(8080), 0));
    // A host outside the registry has no ports to choose from: no such warning.
    assert_eq!(planned(SVC, "elsewhere.example.com").1, 0);
}
