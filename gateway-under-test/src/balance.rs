//! Which endpoint of a cluster a request goes to: Istio's load balancers (ROUND_ROBIN, RANDOM,
//! LEAST_REQUEST, consistent hashing), endpoint weights, outlier ejections and retries that go
//! elsewhere first.

use std::sync::atomic::Ordering;

use mesh_model::api::destination_rule::SimpleLb;

use crate::compile::UpstreamCluster;

/// Chooses an endpoint, avoiding `tried` ones while others are left. `hash`: consistent hashing.
pub fn pick(c: &UpstreamCluster, hash: Option<u64>, tried: &[usize]) -> Option<usize> {
    let n = c.endpoints.len();
    if n == 0 {
        return None;
    }
    // Ejected endpoints are out of the set; with no panic mode, none left means no healthy upstream.
    let healthy = |i: &usize| c.outlier.as_ref().is_none_or(|o| !o.is_ejected(*i));
    let healthy_count = (0..n).filter(healthy).count();
    if healthy_count == 0 {
        return None;
    }
    let retried_all = (0..n).filter(healthy).all(|i| tried.contains(&i));
    let allowed = |i: &usize| healthy(i) && (!tried.contains(i) || retried_all);
    if let (Some(h), false) = (hash, c.ring.is_empty()) {
        let start = c.ring.partition_point(|(k, _)| *k < h);
        let candidates = c.ring[start..].iter().chain(c.ring[..start].iter());
        return candidates.map(|(_, i)| *i).find(|i| allowed(i));
    }
    let weighted = c.cluster.endpoints.iter().any(|e| e.weight != 1);
    let choose = |k: usize| (0..n).map(|o| (k + o) % n).find(|i| allowed(i));
    match c.lb {
        SimpleLb::RoundRobin if !weighted => choose(c.next.fetch_add(1, Ordering::Relaxed)),
        SimpleLb::Random | SimpleLb::RoundRobin => choose(weighted_index(c)),
        _ => choose(least_request(c)),
    }
}

/// LEAST_REQUEST: the less loaded (active requests) of two weighted random choices.
fn least_request(c: &UpstreamCluster) -> usize {
    let (a, b) = (weighted_index(c), weighted_index(c));
    let load = |i: usize| c.active[i].load(Ordering::Relaxed);
    if load(b) < load(a) {
        b
    } else {
        a
    }
}

fn weighted_index(c: &UpstreamCluster) -> usize {
    let total: u64 = c.cluster.endpoints.iter().map(|e| u64::from(e.weight.max(1))).sum();
    let mut r = fastrand::u64(0..total.max(1));
    for (i, e) in c.cluster.endpoints.iter().enumerate() {
        let w = u64::from(e.weight.max(1));
        if r < w {
            return i;
        }
        r -= w;
    }
    0
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use super::*;

    /// A cluster of `endpoints` (ServiceEntry endpoint YAML) with `policy` as its trafficPolicy.
    pub(crate) fn cluster(resolution: &str, endpoints: &str, policy: &str) -> UpstreamCluster {
        let c = crate::breaker::tests::service_cluster("HTTP", resolution, endpoints, policy);
        let identity = crate::telemetry::Identity::from_labels(&Default::default(), None);
        let telemetry = crate::telemetry::Telemetry::new(identity);
        UpstreamCluster::compile(&c, None, &crate::dns::Cache::new(Duration::from_secs(1)), &telemetry)
    }

    const THREE: &str = "[{address: 10.0.0.1}, {address: 10.0.0.2}, {address: 10.0.0.3}]";

    fn lb(simple: &str) -> String {
        format!("{{loadBalancer: {{simple: {simple}}}}}")
    }

    /// How often each endpoint is picked in `n` picks with nothing tried.
    fn shares(c: &UpstreamCluster, n: usize) -> Vec<f64> {
        let mut count = vec![0usize; c.endpoints.len()];
        for _ in 0..n {
            count[pick(c, None, &[]).expect("an endpoint")] += 1;
        }
        count.iter().map(|k| *k as f64 / n as f64).collect()
    }

    #[test]
    fn round_robin_takes_each_endpoint_in_turn_and_ignores_a_hash_without_consistent_hashing() {
        let c = cluster("STATIC", THREE, &lb("ROUND_ROBIN"));
        let picks: Vec<_> = (0..9)
            .filter_map(|k| pick(&c, (k % 2 == 0).then_some(7), &[]))
            .collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn a_retry_goes_to_an_endpoint_not_tried_until_every_one_has_been() {
        fastrand::seed(19);
        for simple in ["ROUND_ROBIN", "RANDOM", "LEAST_REQUEST"] {
            let c = cluster("STATIC", THREE, &lb(simple));
            for _ in 0..50 {
                assert_eq!(pick(&c, None, &[0, 2]), Some(1), "{simple}");
            }
            // All tried: any of them again, not none.
            let mut seen = [false; 3];
            for _ in 0..60 {
                seen[pick(&c, None, &[0, 1, 2]).expect("an endpoint")] = true;
            }
            assert_eq!(seen, [true; 3], "{simple}");
        }
    }

    #[test]
    fn ejected_endpoints_are_out_and_none_left_is_no_healthy_upstream() {
        fastrand::seed(19);
        let policy = "{loadBalancer: {simple: RANDOM}, \
                      outlierDetection: {consecutive5xxErrors: 1, maxEjectionPercent: 100}}";
        let c = cluster("STATIC", THREE, policy);
        let outlier = c.outlier.as_ref().expect("outlier detection");
        outlier.report(1, Some(503), None);
        assert!(outlier.is_ejected(1));
        let shares = shares(&c, 300);
        assert_eq!(shares[1], 0.0);
        assert!(shares[0] > 0.3 && shares[2] > 0.3, "{shares:?}");
        // 0 and 2 are the healthy ones: with both tried, either again, never the ejected one.
        for _ in 0..50 {
            assert_eq!(pick(&c, None, &[2]), Some(0));
            assert_ne!(pick(&c, None, &[0, 2]), Some(1));
        }
        outlier.report(0, Some(503), None);
        outlier.report(2, Some(503), None);
        assert_eq!(pick(&c, None, &[]), None);
        assert_eq!(pick(&c, Some(7), &[]), None);
    }

    #[test]
    fn a_cluster_without_endpoints_has_none_and_an_original_destination_one_has_its_own() {
        let empty = cluster("STATIC", "[]", &lb("LEAST_REQUEST"));
        assert_eq!(pick(&empty, None, &[]), None);
        // resolution NONE without endpoints: one pseudo-endpoint (the request's own destination),
        // under every load balancer.
        for simple in ["ROUND_ROBIN", "RANDOM", "LEAST_REQUEST"] {
            let c = cluster("NONE", "[]", &lb(simple));
            assert!(c.original_dst);
            assert_eq!(pick(&c, None, &[]), Some(0), "{simple}");
            assert_eq!(pick(&c, None, &[0]), Some(0), "{simple}");
        }
    }

    #[test]
    fn consistent_hashing_takes_the_first_ring_entry_at_or_after_the_hash() {
        let c = cluster(
            "STATIC",
            THREE,
            "{loadBalancer: {consistentHash: {httpHeaderName: x-user}}}",
        );
        let ring = &c.ring;
        assert!(ring.len() >= 1024, "{}", ring.len());
        // An entry followed by one of another endpoint, with room between their hashes.
        let j = (0..ring.len() - 1)
            .find(|j| ring[*j].1 != ring[j + 1].1 && ring[j + 1].0 - ring[*j].0 > 1)
            .expect("neighbouring entries of two endpoints");
        let (at, next) = (ring[j], ring[j + 1]);
        assert_eq!(pick(&c, Some(at.0), &[]), Some(at.1));
        assert_eq!(pick(&c, Some(at.0 + 1), &[]), Some(next.1));
        // The same hash keeps its endpoint; a retry moves on along the ring.
        for _ in 0..5 {
            assert_eq!(pick(&c, Some(at.0), &[]), Some(at.1));
        }
        assert_eq!(pick(&c, Some(at.0), &[at.1]), Some(next.1));
        assert_eq!(pick(&c, Some(at.0), &[0, 1, 2]), Some(at.1));
        // Past the last entry the ring wraps to its first.
        let last = ring[ring.len() - 1].0;
        if last < u64::MAX {
            assert_eq!(pick(&c, Some(last + 1), &[]), Some(ring[0].1));
        }
        assert_eq!(pick(&c, Some(0), &[]), Some(ring[0].1));
    }

    #[test]
    fn endpoints_get_shares_by_weight_under_round_robin_and_random() {
        fastrand::seed(19);
        let weighted = "[{address: 10.0.0.1, weight: 2}, {address: 10.0.0.2, weight: 6}]";
        for simple in ["ROUND_ROBIN", "RANDOM", "LEAST_REQUEST"] {
            let c = cluster("STATIC", weighted, &lb(simple));
            let shares = shares(&c, 4000);
            assert!((0.70..0.80).contains(&shares[1]), "{simple}: {shares:?}");
        }
    }

    #[test]
    fn least_request_prefers_the_less_loaded_of_two_and_random_ignores_load() {
        fastrand::seed(19);
        let two = "[{address: 10.0.0.1}, {address: 10.0.0.2}]";
        let loaded = |simple: &str| {
            let c = cluster("STATIC", two, &lb(simple));
            c.active[0].store(50, Ordering::Relaxed);
            c
        };
        // Power of two choices: the busy endpoint only when both choices are it (1 in 4).
        let least = shares(&loaded("LEAST_REQUEST"), 2000);
        assert!((0.18..0.32).contains(&least[0]), "{least:?}");
        let random = shares(&loaded("RANDOM"), 2000);
        assert!((0.43..0.57).contains(&random[0]), "{random:?}");
        // The default load balancer is LEAST_REQUEST, as Istio's.
        let default = cluster("STATIC", two, "{}");
        default.active[0].store(50, Ordering::Relaxed);
        let default = shares(&default, 2000);
        assert!((0.18..0.32).contains(&default[0]), "{default:?}");
    }
}
