//! Checks: one observation against a case's expectations, and counts against a distribution with
//! exact binomial bounds. Every failure says what was expected and what was observed.

use std::collections::BTreeMap;

use super::client::Observation;
use super::suite::Case;

/// Counts per status against the expected ones (exact or ranges); a status not listed must not
/// occur. None when they agree.
pub fn check_status_counts(
    expected: &BTreeMap<u16, super::suite::CountRange>,
    observed: &BTreeMap<u16, u32>,
) -> Option<String> {
    if expected.is_empty() {
        return None;
    }
    let fits = expected
        .iter()
        .all(|(s, r)| r.contains(observed.get(s).copied().unwrap_or(0)))
        && observed.keys().all(|s| expected.contains_key(s));
    if fits {
        return None;
    }
    let want: Vec<String> = expected.iter().map(|(s, r)| format!("{s}: {r}")).collect();
    Some(format!(
        "status counts: expected {{{}}}, observed {observed:?}",
        want.join(", ")
    ))
}

/// How early a proxy's timer may fire: Envoy's dispatcher reads the clock once per loop
/// iteration, so a timer is armed from a time that is already stale by however long that
/// iteration ran. Idle, a 200 ms fault delay ends a fraction of a millisecond early; on a loaded
/// 2-core machine 197.9 ms was observed. 10 ms still tells a 200 ms delay from none.
pub const TIMER_SLACK: std::time::Duration = std::time::Duration::from_millis(10);

/// The failures of one observation against the case's expectations (distribution aside).
pub fn check(case: &Case, o: &Observation) -> Vec<String> {
    let e = &case.expect;
    let mut f = Vec::new();
    if let Some(kind) = e.error {
        // `refused`: no response at all; the other kinds name the failure (`handshake:`, `connect:`).
        let kind = kind.as_str();
        let failed_as_expected = match o.error.as_deref() {
            Some(err) => kind == "refused" || err.starts_with(&format!("{kind}:")),
            // A TCP connection closed without a byte is refused too.
            None => kind == "refused" && o.status == 0 && o.body.is_empty(),
        };
        if !failed_as_expected {
            let observed = o
                .error
                .clone()
                .unwrap_or_else(|| format!("a response with status {}", o.status));
            f.push(format!("expected a {kind} failure, observed {observed}"));
        }
        return f;
    }
    if let Some(err) = &o.error {
        f.push(format!("the request failed: {err}"));
        return f;
    }
    let mut want = |what: &str, expected: &str, observed: Option<&str>| {
        if observed != Some(expected) {
            f.push(format!(
                "{what}: expected {expected:?}, observed {}",
                observed.map_or("nothing".into(), |s| format!("{s:?}"))
            ));
        }
    };
    if let Some(s) = e.status {
        want("status", &s.to_string(), Some(&o.status.to_string()));
    }
    if let Some(g) = e.grpc_status {
        want(
            "grpc-status",
            &g.to_string(),
            o.grpc_status.map(|s| s.to_string()).as_deref(),
        );
    }
    if let Some(b) = &e.body {
        want("body", b, Some(&o.body));
    }
    if let Some(b) = &e.body_contains {
        if !o.body.contains(b.as_str()) {
            want("body containing", b, Some(&o.body));
        }
    }
    if let Some(l) = &e.location {
        want("location", l, o.headers.get("location").map(String::as_str));
    }
    for (k, v) in &e.headers {
        want(
            &format!("response header {k}"),
            v,
            o.headers.get(&k.to_ascii_lowercase()).map(String::as_str),
        );
    }
    if let Some(w) = &e.workload {
        if let Some(s) = &w.service {
            want("answered by service", s, o.field("Service").as_deref());
        }
        if let Some(v) = &w.version {
            want("answered by version", v, o.field("ServiceVersion").as_deref());
        }
        if let Some(i) = &w.instance {
            want("answered by instance", i, o.field("Hostname").as_deref());
        }
    }
    for (k, v) in &e.saw {
        want(&format!("the workload saw {k}"), v, o.field(k).as_deref());
    }
    for (k, v) in &e.saw_headers {
        want(&format!("the workload saw header {k}"), v, o.saw_header(k).as_deref());
    }
    for (k, v) in &e.tls {
        want(&format!("TLS {k}"), v, o.tls.get(k).map(String::as_str));
    }
    for k in &e.headers_present {
        if !o.headers.contains_key(&k.to_ascii_lowercase()) {
            f.push(format!("response header {k}: expected present, observed nothing"));
        }
    }
    for (k, re) in &e.headers_match {
        let observed = o.headers.get(&k.to_ascii_lowercase());
        match regex::Regex::new(&format!("^(?:{re})$")) {
            Err(err) => f.push(format!("response header {k}: bad regex {re:?}: {err}")),
            Ok(r) if observed.is_some_and(|v| r.is_match(v)) => {}
            Ok(_) => f.push(format!(
                "response header {k}: expected to match {re:?}, observed {observed:?}"
            )),
        }
    }
    for k in &e.headers_absent {
        if let Some(v) = o.headers.get(&k.to_ascii_lowercase()) {
            f.push(format!("response header {k}: expected absent, observed {v:?}"));
        }
    }
    for k in &e.saw_headers_absent {
        if let Some(v) = o.saw_header(k) {
            f.push(format!("the workload saw header {k}: expected absent, observed {v:?}"));
        }
    }
    if let Some(min) = e.latency_at_least {
        if o.elapsed + TIMER_SLACK < min.as_std() {
            f.push(format!(
                "latency: expected at least {:?}, observed {:?}",
                min.as_std(),
                o.elapsed
            ));
        }
    }
    if e.echo == Some(true) && !o.body.ends_with(case.request.body.as_deref().unwrap_or("")) {
        f.push(format!(
            "echo: expected the body to end with {:?}, observed {:?}",
            case.request.body, o.body
        ));
    }
    f
}

/// The chance that a correct target fails a distribution case: one in a million, shared among
/// the case's versions.
pub const FALSE_ALARM: f64 = 1e-6;

/// The counts of a version with share `p` among `n` requests that a correct target stays within
/// with probability at least 1 - `alpha`: exact Binomial(n, p) quantiles, `alpha / 2` per tail.
pub fn binomial_bounds(n: u32, p: f64, alpha: f64) -> (u32, u32) {
    if p <= 0.0 {
        return (0, 0);
    }
    if p >= 1.0 {
        return (n, n);
    }
    // pmf in log space (n in the thousands underflows otherwise): P(k+1) = P(k) (n-k)/(k+1) p/(1-p).
    let (nf, odds) = (f64::from(n), (p / (1.0 - p)).ln());
    let mut log_pmf = nf * (1.0 - p).ln();
    let mut pmf = Vec::with_capacity(n as usize + 1);
    for k in 0..=n {
        pmf.push(log_pmf.exp());
        let kf = f64::from(k);
        log_pmf += ((nf - kf) / (kf + 1.0)).ln() + odds;
    }
    let tail = alpha / 2.0;
    let first_past = |ks: &mut dyn Iterator<Item = u32>| {
        let mut mass = 0.0;
        for k in ks {
            mass += pmf[k as usize];
            if mass > tail {
                return Some(k);
            }
        }
        None
    };
    let lo = first_past(&mut (0..=n)).unwrap_or(0);
    let hi = first_past(&mut (0..=n).rev()).unwrap_or(n);
    (lo, hi)
}

/// Each version's count against exact binomial bounds (see `binomial_bounds`, `FALSE_ALARM`).
pub fn check_distribution(expected: &BTreeMap<String, f64>, seen: &BTreeMap<String, u32>, n: u32) -> Vec<String> {
    let alpha = FALSE_ALARM / expected.len().max(1) as f64;
    let mut f = Vec::new();
    for (version, pct) in expected {
        let k = seen.get(version).copied().unwrap_or(0);
        let (lo, hi) = binomial_bounds(n, pct / 100.0, alpha);
        if k < lo || k > hi {
            f.push(format!(
                "distribution: expected {version} at {pct}% of {n} ({lo}..={hi}; a correct target falls outside \
                 less than once in {:.0}), observed {k} ({seen:?})",
                1.0 / alpha
            ));
        }
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conform::suite::CountRange;

    #[test]
    fn status_counts_take_exact_counts_and_ranges() {
        let r = |t: &str| CountRange::parse(t).unwrap_or(CountRange { min: 9, max: 0 });
        let expected: BTreeMap<u16, CountRange> = [(200, r("1..=2")), (503, r("4..=5"))].into();
        let seen = |pairs: &[(u16, u32)]| pairs.iter().copied().collect::<BTreeMap<u16, u32>>();
        assert_eq!(check_status_counts(&expected, &seen(&[(200, 2), (503, 4)])), None);
        assert_eq!(check_status_counts(&expected, &seen(&[(200, 1), (503, 5)])), None);
        assert_eq!(
            check_status_counts(&expected, &seen(&[(200, 6)])).as_deref(),
            Some("status counts: expected {200: 1..=2, 503: 4..=5}, observed {200: 6}")
        );
        // A status nobody expected fails even when the listed ones fit.
        assert!(check_status_counts(&expected, &seen(&[(200, 2), (503, 4), (502, 1)])).is_some());
        assert_eq!(check_status_counts(&BTreeMap::new(), &seen(&[(500, 1)])), None);
        assert_eq!(r("3"), CountRange { min: 3, max: 3 });
        assert_eq!(r("3").to_string(), "3");
        assert!(CountRange::parse("2..=1").unwrap_err().contains("empty"));
        assert!(CountRange::parse("two").unwrap_err().contains("not a count"));
    }

    #[test]
    fn an_expected_failure_is_met_only_by_that_failure() {
        let expecting = |kind: &str| -> Case {
            serde_json::from_value(serde_json::json!({"id": "x", "expect": {"error": kind}}))
                .unwrap_or_else(|e| panic!("{e}"))
        };
        let closed = Observation::default();
        let answered = Observation {
            status: 200,
            body: "hello".into(),
            ..Default::default()
        };
        let handshake = Observation {
            error: Some("handshake: alert".into()),
            ..Default::default()
        };
        // A connection closed with no byte is refused; an answer is not, whatever its status.
        assert!(check(&expecting("refused"), &closed).is_empty());
        assert!(check(&expecting("refused"), &handshake).is_empty());
        assert_eq!(
            check(&expecting("refused"), &answered),
            ["expected a refused failure, observed a response with status 200"]
        );
        // Other kinds need that very failure: a closed connection is not a failed handshake.
        assert!(check(&expecting("handshake"), &handshake).is_empty());
        assert_eq!(
            check(&expecting("handshake"), &closed),
            ["expected a handshake failure, observed a response with status 0"]
        );
    }

    #[test]
    fn distribution_bounds() {
        // The n of the built-in 80/20 cases: a correct split passes, 10 points off fails.
        let want: BTreeMap<String, f64> = [("v1".into(), 80.0), ("v2".into(), 20.0)].into();
        let seen = |a: u32, b: u32| -> BTreeMap<String, u32> { [("v1".into(), a), ("v2".into(), b)].into() };
        assert!(check_distribution(&want, &seen(1040, 260), 1300).is_empty());
        assert!(
            check_distribution(&want, &seen(980, 320), 1300).is_empty(),
            "within bounds"
        );
        assert_eq!(
            check_distribution(&want, &seen(910, 390), 1300).len(),
            2,
            "off by 10 points"
        );
        // The false-alarm budget is shared between the two versions (Bonferroni): each is held
        // to its exact bounds at 5e-7, Binomial(1300, 0.8) 965..=1110 and (1300, 0.2) 190..=335.
        assert!(check_distribution(&want, &seen(965, 335), 1300).is_empty());
        assert_eq!(
            check_distribution(&want, &seen(964, 336), 1300),
            [
                "distribution: expected v1 at 80% of 1300 (965..=1110; a correct target falls outside less than \
                 once in 2000000), observed 964 ({\"v1\": 964, \"v2\": 336})",
                "distribution: expected v2 at 20% of 1300 (190..=335; a correct target falls outside less than \
                 once in 2000000), observed 336 ({\"v1\": 964, \"v2\": 336})",
            ]
        );
        let zero: BTreeMap<String, f64> = [("v3".into(), 0.0)].into();
        assert_eq!(check_distribution(&zero, &[("v3".into(), 1)].into(), 400).len(), 1);
        let all: BTreeMap<String, f64> = [("v2".into(), 100.0)].into();
        assert!(check_distribution(&all, &[("v2".into(), 50)].into(), 50).is_empty());
        assert_eq!(check_distribution(&all, &[("v2".into(), 49)].into(), 50).len(), 1);
    }

    #[test]
    fn header_presence_regex_and_instance_checks() {
        let case: Case = serde_json::from_value(serde_json::json!({
            "id": "x",
            "expect": {
                "headersPresent": ["date"],
                "headersMatch": {"x-envoy-upstream-service-time": "[0-9]+"},
                "workload": {"instance": "reviews-v2-0"}
            }
        }))
        .unwrap();
        let mut o = Observation {
            status: 200,
            headers: [
                ("date".to_string(), "now".to_string()),
                ("x-envoy-upstream-service-time".to_string(), "12".to_string()),
            ]
            .into(),
            body: "Hostname=reviews-v2-0\n".into(),
            ..Default::default()
        };
        assert_eq!(check(&case, &o), Vec::<String>::new());
        o.headers.insert("x-envoy-upstream-service-time".into(), "12ms".into());
        o.headers.remove("date");
        o.body = "Hostname=reviews-v2-1\n".into();
        assert_eq!(
            check(&case, &o),
            [
                "answered by instance: expected \"reviews-v2-0\", observed \"reviews-v2-1\"",
                "response header date: expected present, observed nothing",
                "response header x-envoy-upstream-service-time: expected to match \"[0-9]+\", observed Some(\"12ms\")",
            ]
        );
    }

    #[test]
    fn a_body_must_contain_its_text_and_an_echo_must_end_with_what_was_sent() {
        let case: Case = serde_json::from_value(serde_json::json!({
            "id": "x",
            "request": {"body": "ping"},
            "expect": {"bodyContains": "Service=web", "echo": true}
        }))
        .unwrap();
        let answer = |body: &str| Observation {
            status: 200,
            body: body.into(),
            ..Default::default()
        };
        assert!(check(&case, &answer("Service=web\nping")).is_empty());
        assert_eq!(
            check(&case, &answer("Service=api\nping")),
            ["body containing: expected \"Service=web\", observed \"Service=api\\nping\""]
        );
        assert_eq!(
            check(&case, &answer("Service=web\npong")),
            ["echo: expected the body to end with Some(\"ping\"), observed \"Service=web\\npong\""]
        );
        // Without `echo: true` the body's end is not checked.
        let mut quiet = case.clone();
        quiet.expect.echo = Some(false);
        assert!(check(&quiet, &answer("Service=web\npong")).is_empty());
    }

    #[test]
    fn a_delay_may_end_up_to_the_timer_slack_early_and_no_more() {
        let case: Case = serde_json::from_value(serde_json::json!({
            "id": "x",
            "expect": {"latencyAtLeast": "200ms"}
        }))
        .unwrap();
        let at = |ms: u64| Observation {
            status: 200,
            elapsed: std::time::Duration::from_millis(ms),
            ..Default::default()
        };
        assert!(check(&case, &at(200)).is_empty());
        assert!(check(&case, &at(190)).is_empty(), "10 ms of slack");
        assert_eq!(
            check(&case, &at(189)),
            ["latency: expected at least 200ms, observed 189ms"]
        );
        assert_eq!(check(&case, &at(1)).len(), 1, "no delay at all");
    }

    #[test]
    fn binomial_bounds_are_exact_quantiles() {
        // Binomial(1300, 0.8) and (1300, 0.2) at alpha 5e-7 (the values the suites' comments quote,
        // computed independently in Python from the same definition).
        assert_eq!(binomial_bounds(1300, 0.8, 5e-7), (965, 1110));
        assert_eq!(binomial_bounds(1300, 0.2, 5e-7), (190, 335));
        assert_eq!(binomial_bounds(1700, 0.5, 5e-7), (747, 953));
        assert_eq!(binomial_bounds(900, 0.1, 5e-7), (48, 138));
        // Symmetry, and the degenerate shares.
        let (lo, hi) = binomial_bounds(1000, 0.3, 1e-3);
        assert_eq!(binomial_bounds(1000, 0.7, 1e-3), (1000 - hi, 1000 - lo));
        // A tail of exactly alpha / 2 is spent, not left: Binomial(4, 1/2) puts 1/16 on 0 and on
        // 4, so at alpha 1/8 both are outside, and a correct target falls outside exactly 1/8 of
        // the time, as "at least 1 - alpha" allows.
        assert_eq!(binomial_bounds(4, 0.5, 0.125), (1, 3));
        assert_eq!(binomial_bounds(10, 0.0, 1e-6), (0, 0));
        assert_eq!(binomial_bounds(10, 1.0, 1e-6), (10, 10));
    }
}
