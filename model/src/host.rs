//! Host names as Istio compares them (`pkg/config/host/name.go`): wildcard matching, subsets,
//! intersections, short-name expansion and DNS syntax checks.

/// Whether the host is `*` or `*.suffix`.
pub fn is_wildcard(host: &str) -> bool {
    host.starts_with('*')
}

/// Whether two hosts can name the same thing (either may be a wildcard). Case-insensitive.
pub fn matches(a: &str, b: &str) -> bool {
    let (a, b) = (a.to_ascii_lowercase(), b.to_ascii_lowercase());
    match (is_wildcard(&a), is_wildcard(&b)) {
        (true, true) => {
            if a.len() < b.len() {
                b[1..].ends_with(&a[1..])
            } else {
                a[1..].ends_with(&b[1..])
            }
        }
        (true, false) => b.ends_with(&a[1..]),
        (false, true) => a.ends_with(&b[1..]),
        (false, false) => a == b,
    }
}

/// Whether every name `a` covers is covered by `b`. Case-insensitive.
pub fn subset_of(a: &str, b: &str) -> bool {
    let (a, b) = (a.to_ascii_lowercase(), b.to_ascii_lowercase());
    match (is_wildcard(&a), is_wildcard(&b)) {
        (true, true) => a[1..].ends_with(&b[1..]),
        (true, false) => false,
        (false, true) => a.ends_with(&b[1..]),
        (false, false) => a == b,
    }
}

/// The more specific of two matching hosts, or None when they do not match.
pub fn intersection(a: &str, b: &str) -> Option<String> {
    if subset_of(a, b) {
        Some(a.to_ascii_lowercase())
    } else if subset_of(b, a) {
        Some(b.to_ascii_lowercase())
    } else {
        None
    }
}

/// Istio's `ResolveShortnameToFQDN`: `reviews` in `default` is `reviews.default.svc.cluster.local`.
/// Names with a dot, wildcards and IPs are kept as they are (lowercased).
pub fn resolve_short_name(host: &str, namespace: &str, domain_suffix: &str) -> String {
    let host = host.to_ascii_lowercase();
    if host.contains('.') || is_wildcard(&host) || host.parse::<std::net::IpAddr>().is_ok() || host.is_empty() {
        return host;
    }
    format!("{host}.{namespace}.svc.{domain_suffix}")
}

/// A DNS-1123 label: 1..63 of `[a-z0-9-]`, not starting or ending with `-`.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A DNS-1123 subdomain: dot-separated labels, at most 253 characters.
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// Istio's `ValidateWildcardDomain`: `*`, or an optional `*.` followed by DNS labels
/// (case-insensitive). Returns why not.
pub fn check_wildcard_domain(host: &str) -> Result<(), String> {
    if host == "*" {
        return Ok(());
    }
    if host.is_empty() {
        return Err("an empty host".into());
    }
    if host.len() > 255 {
        return Err(format!("`{host}` is longer than 255 characters"));
    }
    let rest = host.strip_prefix("*.").unwrap_or(host);
    if rest.contains('*') {
        return Err(format!(
            "`{host}` has a wildcard that is not the whole left-most label (write `*.example.com` or `*`)"
        ));
    }
    let rest = rest.strip_suffix('.').unwrap_or(rest);
    match rest.split('.').find(|label| !is_dns_label(&label.to_ascii_lowercase())) {
        Some(bad) => Err(format!("`{host}` has an invalid DNS label `{bad}`")),
        None => Ok(()),
    }
}

/// Istio's `ValidateWildcardDomainForVirtualServiceBoundToGateway`: for a gateway-bound
/// VirtualService with TLS routes (`sni`), istiod's own SNI names `outbound_.<port>_._.<host>`
/// (which DNS labels cannot spell) are accepted too.
pub fn check_gateway_bound_domain(sni: bool, host: &str) -> Result<(), String> {
    if !sni || !host.starts_with("outbound_") || host.len() > 255 {
        return check_wildcard_domain(host);
    }
    let parts: Vec<&str> = host.split('_').collect();
    let format = "write it as `outbound_.<port>_._.<host>`";
    if parts.len() < 4 {
        return Err(format!("`{host}` is not an auto-generated SNI name: {format}"));
    }
    let port = parts[1].trim_matches('.');
    let name = parts[3].trim_matches('.');
    if !port.bytes().any(|b| b.is_ascii_digit()) {
        return Err(format!("`{host}` has no port in its label `{port}`: {format}"));
    }
    if !name.bytes().any(|b| b.is_ascii_alphabetic()) {
        return Err(format!("`{host}` has no host name in `{name}`: {format}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_matching_follows_istio() {
        assert!(matches("*.foo.com", "a.foo.com"));
        assert!(matches("*.foo.com", "a.b.foo.com"));
        assert!(!matches("*.foo.com", "foo.com"));
        assert!(matches("*", "anything.example"));
        assert!(matches("A.Foo.com", "a.foo.COM"));
        assert!(matches("*.com", "*.foo.com"));
        assert!(!matches("a.com", "b.com"));
        assert!(matches("a.com", "A.COM"));
        // Two wildcards match when one suffix ends the other, in either order.
        assert!(matches("*.foo.com", "*.com"));
        assert!(matches("*.a.foo.com", "*.foo.com"));
        assert!(!matches("*.bar.com", "*.foo.com"));
        assert!(!matches("*.foo.com", "*.bar.foo.org"));
        // A concrete host against a wildcard, on either side.
        assert!(matches("a.foo.com", "*.foo.com"));
        assert!(matches("a.foo.com", "*"));
        assert!(!matches("a.bar.com", "*.foo.com"));
        assert!(!matches("foo.com", "*.foo.com"));
    }

    #[test]
    fn subsets_and_intersections() {
        assert!(subset_of("a.foo.com", "*.foo.com"));
        assert!(!subset_of("*.foo.com", "a.foo.com"));
        assert!(subset_of("*.foo.com", "*"));
        assert_eq!(intersection("*", "app.example.com").as_deref(), Some("app.example.com"));
        assert_eq!(
            intersection("*.example.com", "*.a.example.com").as_deref(),
            Some("*.a.example.com")
        );
        assert_eq!(intersection("a.com", "b.com"), None);
        // Concrete hosts are subsets only of themselves (any case); wildcards of wider ones.
        assert!(subset_of("A.com", "a.COM"));
        assert!(!subset_of("a.com", "b.com"));
        assert!(subset_of("*.a.foo.com", "*.foo.com"));
        assert!(!subset_of("*.foo.com", "*.a.foo.com"));
        assert!(!subset_of("a.bar.com", "*.foo.com"));
        assert!(subset_of("*.FOO.com", "*.foo.COM"));
        // The intersection is the narrower host, lowercased, whichever side it is on.
        assert_eq!(intersection("A.Foo.com", "*.foo.com").as_deref(), Some("a.foo.com"));
        assert_eq!(intersection("*.foo.com", "A.Foo.com").as_deref(), Some("a.foo.com"));
        assert_eq!(intersection("*.com", "*.FOO.com").as_deref(), Some("*.foo.com"));
    }

    #[test]
    fn short_names_expand_with_the_namespace() {
        assert_eq!(
            resolve_short_name("reviews", "default", "cluster.local"),
            "reviews.default.svc.cluster.local"
        );
        assert_eq!(
            resolve_short_name("api.example.com", "x", "cluster.local"),
            "api.example.com"
        );
        assert_eq!(resolve_short_name("*", "x", "cluster.local"), "*");
        assert_eq!(resolve_short_name("10.0.0.1", "x", "cluster.local"), "10.0.0.1");
        assert_eq!(resolve_short_name("fe80::1", "x", "cluster.local"), "fe80::1");
        assert_eq!(resolve_short_name("", "x", "cluster.local"), "");
        assert_eq!(
            resolve_short_name("Reviews", "prod", "corp.local"),
            "reviews.prod.svc.corp.local"
        );
        assert_eq!(
            resolve_short_name("API.Example.com", "x", "cluster.local"),
            "api.example.com"
        );
    }

    fn labels(lens: &[usize]) -> String {
        lens.iter().map(|n| "a".repeat(*n)).collect::<Vec<_>>().join(".")
    }

    #[test]
    fn dns_1123_labels_and_subdomains() {
        for ok in ["a", "a-b", "0", "web-1", &"a".repeat(63)] {
            assert!(is_dns_label(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", &"a".repeat(64)] {
            assert!(!is_dns_label(bad), "{bad}");
        }
        // 253 characters at most, every label valid.
        assert!(is_dns_subdomain("web.prod.svc"));
        assert!(is_dns_subdomain(&labels(&[63, 63, 63, 61])));
        assert_eq!(labels(&[63, 63, 63, 61]).len(), 253);
        assert!(!is_dns_subdomain(&labels(&[63, 63, 63, 62])));
        assert!(!is_dns_subdomain("a..b"));
        assert!(!is_dns_subdomain("Web.prod"));
        assert!(!is_dns_subdomain("web.-prod"));
    }

    #[test]
    fn wildcard_domain_syntax() {
        assert!(check_wildcard_domain("*.example.com").is_ok());
        assert!(check_wildcard_domain("Example.com").is_ok());
        assert!(check_wildcard_domain("*").is_ok());
        assert!(check_wildcard_domain("*foo.com").is_err());
        assert!(check_wildcard_domain("foo.*.com").is_err());
        assert!(check_wildcard_domain("-bad.com").is_err());
        assert!(check_wildcard_domain("").is_err());
        assert!(
            check_wildcard_domain("example.com.").is_ok(),
            "a trailing dot is fully qualified"
        );
        assert!(check_wildcard_domain("foo..com").is_err());
        assert!(check_wildcard_domain("*.*.com").is_err());
        // Istio's CheckDNS1123Preconditions: 255 characters at most.
        let max = labels(&[63, 63, 63, 63]);
        assert_eq!(max.len(), 255);
        assert!(check_wildcard_domain(&max).is_ok());
        let long = format!("{}.b", labels(&[63, 63, 63, 62]));
        assert_eq!(long.len(), 256);
        let err = check_wildcard_domain(&long).unwrap_err();
        assert!(err.contains("longer than 255"), "{err}");
        assert!(check_wildcard_domain(&format!("*.{}", labels(&[63, 63, 63, 61]))).is_ok());
        let err = check_wildcard_domain("a.b_c.com").unwrap_err();
        assert!(err.contains("invalid DNS label `b_c`"), "{err}");
    }

    #[test]
    fn istiods_sni_names_are_hosts_of_gateway_bound_tls_routes() {
        let sni = "outbound_.15010_._.istiod.istio-system.svc.cluster.local";
        assert!(check_gateway_bound_domain(true, sni).is_ok());
        assert!(check_gateway_bound_domain(false, sni).is_err());
        assert!(check_gateway_bound_domain(true, "outbound_.http_._.istiod.svc").is_err());
        assert!(check_gateway_bound_domain(true, "outbound_.80_._.8080").is_err());
        assert!(check_gateway_bound_domain(true, "outbound_.80_.x").is_err());
        assert!(check_gateway_bound_domain(true, "inbound_.80_._.a.com").is_err());
        assert!(check_gateway_bound_domain(true, "a.example.com").is_ok());
        assert!(check_gateway_bound_domain(true, "outbound_.80_.").is_err());
        // The 255-character bound holds for SNI names too.
        let name = |len: usize| {
            let head = "outbound_.443_._.";
            format!("{head}{}", "a".repeat(len - head.len()))
        };
        assert!(check_gateway_bound_domain(true, &name(255)).is_ok());
        assert!(check_gateway_bound_domain(true, &name(256)).is_err());
    }
}
