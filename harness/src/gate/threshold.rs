//! Thresholds, k6-style but on exact histograms: `p99 < 5ms`, `p99.9 < 20ms`, `errors < 0.1%`,
//! `rps >= 0.99 * asked`, `added_p99 < 1ms` (over the direct baseline of `run`),
//! `cpu_per_1k_requests < 80ms`, `peak_rss < 100MiB`. Each is checked against one load result.

use meshbench_report::{LoadResult, ThresholdResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Metric {
    /// A corrected-latency quantile (0..=1), `max` and `mean` included.
    Latency(Quantile),
    /// The same quantile over the direct baseline's.
    Added(Quantile),
    Errors,
    Rps,
    CpuPer1k,
    PeakRss,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quantile {
    P50,
    P90,
    P99,
    P999,
    Max,
    Mean,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Limit {
    /// In the metric's canonical unit: microseconds, a fraction (errors %), requests, bytes.
    Value(f64),
    /// A count of errors (no `%`).
    Count(f64),
    /// A factor of the asked rate.
    Asked(f64),
}

/// One parsed threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    text: String,
    metric: Metric,
    op: Op,
    limit: Limit,
}

fn quantile(name: &str) -> Option<Quantile> {
    Some(match name {
        "p50" | "median" => Quantile::P50,
        "p90" => Quantile::P90,
        "p99" => Quantile::P99,
        "p99.9" | "p999" => Quantile::P999,
        "max" => Quantile::Max,
        "mean" | "avg" => Quantile::Mean,
        _ => return None,
    })
}

fn metric(name: &str) -> Option<Metric> {
    if let Some(q) = name.strip_prefix("added_").and_then(quantile) {
        return Some(Metric::Added(q));
    }
    Some(match name {
        "errors" => Metric::Errors,
        "rps" => Metric::Rps,
        "cpu_per_1k_requests" => Metric::CpuPer1k,
        "peak_rss" => Metric::PeakRss,
        other => Metric::Latency(quantile(other)?),
    })
}

/// `5ms` -> 5000 (µs); `100MiB` -> bytes; a bare number as it is.
fn amount(text: &str) -> Option<f64> {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (num, unit) = text.split_at(split);
    let n: f64 = num.parse().ok()?;
    let scale = match unit.trim() {
        "" => 1.0,
        "us" | "µs" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some(n * scale)
}

const HELP: &str = "write `METRIC OP VALUE`: METRIC p50|p90|p99|p99.9|max|mean, added_p50|added_p90|added_p99, \
errors, rps, cpu_per_1k_requests, peak_rss; OP < <= > >=; VALUE e.g. 5ms, 0.1%, 0.99 * asked, 100MiB";

impl Threshold {
    pub fn parse(text: &str) -> Result<Threshold, String> {
        let bad = |why: &str| format!("threshold `{text}`: {why}; {HELP}");
        let t = text.trim();
        let (at, op_len, op) = [("<=", Op::Le), (">=", Op::Ge), ("<", Op::Lt), (">", Op::Gt)]
            .iter()
            .find_map(|(s, op)| t.find(s).map(|i| (i, s.len(), *op)))
            .ok_or_else(|| bad("no comparison"))?;
        let name = t[..at].trim();
        let value = t[at + op_len..].trim();
        let metric = metric(name).ok_or_else(|| bad(&format!("unknown metric `{name}`")))?;
        let limit = if let Some(f) = value.strip_suffix("asked").map(str::trim) {
            let f = f.strip_suffix('*').map_or(f, str::trim);
            Limit::Asked(if f.is_empty() {
                1.0
            } else {
                f.parse().map_err(|_| bad("bad factor"))?
            })
        } else if let Some(pct) = value.strip_suffix('%') {
            Limit::Value(pct.trim().parse::<f64>().map_err(|_| bad("bad percentage"))? / 100.0)
        } else if metric == Metric::Errors {
            Limit::Count(value.parse().map_err(|_| bad("bad count"))?)
        } else {
            Limit::Value(amount(value).ok_or_else(|| bad(&format!("bad value `{value}`")))?)
        };
        let fits = matches!(
            (metric, limit),
            (Metric::Rps, Limit::Asked(_) | Limit::Value(_))
                | (Metric::Errors, Limit::Value(_) | Limit::Count(_))
                | (
                    Metric::Latency(_) | Metric::Added(_) | Metric::CpuPer1k | Metric::PeakRss,
                    Limit::Value(_)
                )
        );
        if !fits {
            return Err(bad("this value does not fit the metric"));
        }
        Ok(Threshold {
            text: t.to_string(),
            metric,
            op,
            limit,
        })
    }

    /// Checks `r`; `direct` is the baseline run of the same scenario (for `added_*`).
    pub fn check(&self, r: &LoadResult, direct: Option<&LoadResult>) -> ThresholdResult {
        let (observed, limit) = match self.observe(r, direct) {
            Ok(x) => x,
            Err(why) => {
                return ThresholdResult {
                    expression: self.text.clone(),
                    observed: why,
                    passed: false,
                }
            }
        };
        let passed = match self.op {
            Op::Lt => observed < limit,
            Op::Le => observed <= limit,
            Op::Gt => observed > limit,
            Op::Ge => observed >= limit,
        };
        ThresholdResult {
            expression: self.text.clone(),
            observed: self.show(observed, limit),
            passed,
        }
    }

    /// (observed, limit) in one unit, or why it cannot be observed.
    fn observe(&self, r: &LoadResult, direct: Option<&LoadResult>) -> Result<(f64, f64), String> {
        let q = |r: &LoadResult, q: Quantile| {
            let p = &r.latency_us;
            match q {
                Quantile::P50 => p.p50 as f64,
                Quantile::P90 => p.p90 as f64,
                Quantile::P99 => p.p99 as f64,
                Quantile::P999 => p.p999 as f64,
                Quantile::Max => p.max as f64,
                Quantile::Mean => p.mean,
            }
        };
        let limit = |asked: Option<f64>| match self.limit {
            Limit::Value(v) | Limit::Count(v) => Ok(v),
            Limit::Asked(f) => asked
                .map(|a| f * a)
                .ok_or_else(|| "no asked rate (a closed-loop run)".to_string()),
        };
        let observed = match self.metric {
            Metric::Latency(x) => q(r, x),
            Metric::Added(x) => {
                let d = direct.ok_or("no direct baseline (added_* needs `meshbench run`)")?;
                q(r, x) - q(d, x)
            }
            Metric::Errors if matches!(self.limit, Limit::Count(_)) => r.errors as f64,
            Metric::Errors => r.errors as f64 / r.requests.max(1) as f64,
            Metric::Rps => r.rps,
            Metric::CpuPer1k => r
                .gateway
                .map(|g| g.cpu_s_per_1k_requests * 1e6)
                .ok_or("no gateway process to measure")?,
            Metric::PeakRss => r
                .gateway
                .map(|g| g.peak_rss_bytes as f64)
                .ok_or("no gateway process to measure")?,
        };
        Ok((observed, limit(r.asked_rps)?))
    }

    /// `observed 4.20ms, limit 5.00ms` in the metric's unit.
    fn show(&self, observed: f64, limit: f64) -> String {
        let f = |v: f64| match (self.metric, self.limit) {
            (Metric::Latency(_) | Metric::Added(_) | Metric::CpuPer1k, _) => {
                let sign = if v < 0.0 { "-" } else { "" };
                format!("{sign}{}", meshbench_report::text::us(v.abs().round() as u64))
            }
            (Metric::Errors, Limit::Value(_)) => format!("{:.3}%", v * 100.0),
            (Metric::PeakRss, _) => meshbench_report::text::mib(v as u64),
            _ => format!("{v:.1}"),
        };
        format!("observed {}, limit {}", f(observed), f(limit))
    }
}

/// Parses every threshold, with every mistake reported.
pub fn parse_all(texts: &[String]) -> Result<Vec<Threshold>, String> {
    let (ok, bad): (Vec<_>, Vec<_>) = texts.iter().map(|t| Threshold::parse(t)).partition(Result::is_ok);
    if !bad.is_empty() {
        return Err(bad.into_iter().filter_map(Result::err).collect::<Vec<_>>().join("\n"));
    }
    Ok(ok.into_iter().filter_map(Result::ok).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn result(p50: u64, p99: u64, errors: u64, rps: f64) -> LoadResult {
        let mut r: LoadResult =
            serde_json::from_str(include_str!("testdata/load-result.json")).unwrap_or_else(|e| panic!("{e}"));
        r.latency_us.p50 = p50;
        r.latency_us.p99 = p99;
        r.errors = errors;
        r.rps = rps;
        r
    }

    /// `r` with a gateway process that used 50 ms of CPU per 1k requests and peaked at `peak_rss`.
    fn with_gateway(r: &LoadResult, peak_rss: u64) -> LoadResult {
        let mut g = r.clone();
        g.gateway = Some(meshbench_report::ProcessUsage {
            cpu_s: 0.1,
            cpu_s_per_1k_requests: 0.05,
            rss_bytes: peak_rss,
            peak_rss_bytes: peak_rss,
        });
        g
    }

    fn check(t: &str, r: &LoadResult, d: Option<&LoadResult>) -> (bool, String) {
        let res = Threshold::parse(t).unwrap_or_else(|e| panic!("{e}")).check(r, d);
        (res.passed, res.observed)
    }

    #[test]
    fn latency_errors_and_rate_thresholds() {
        let r = result(800, 4200, 1, 995.0);
        assert_eq!(
            check("p99 < 5ms", &r, None),
            (true, "observed 4.20ms, limit 5.00ms".into())
        );
        assert!(!check("p99 < 4ms", &r, None).0);
        assert!(check("p99 <= 4.2ms", &r, None).0);
        assert!(!check("p50 > 1ms", &r, None).0);
        // 1 error in 1000 requests: 0.1%.
        assert_eq!(
            check("errors < 0.1%", &r, None),
            (false, "observed 0.100%, limit 0.100%".into())
        );
        assert!(check("errors <= 0.1%", &r, None).0);
        assert!(check("errors < 2", &r, None).0);
        // A bare number counts errors: one is not fewer than one.
        assert_eq!(check("errors < 1", &r, None), (false, "observed 1.0, limit 1.0".into()));
        assert_eq!(
            check("rps >= 0.99 * asked", &r, None),
            (true, "observed 995.0, limit 990.0".into())
        );
        assert!(!check("rps >= asked", &r, None).0);
        assert!(check("rps > 900", &r, None).0);
    }

    #[test]
    fn added_latency_needs_the_baseline_and_usage_needs_a_process() {
        let r = result(800, 4200, 0, 1000.0);
        let d = result(300, 1000, 0, 1000.0);
        assert_eq!(
            check("added_p99 < 3.5ms", &r, Some(&d)),
            (true, "observed 3.20ms, limit 3.50ms".into())
        );
        assert!(!check("added_p50 < 0.4ms", &r, Some(&d)).0);
        // The gateway faster than the direct path (noise) reads as negative; equal as zero.
        let slower = result(900, 4200, 0, 1000.0);
        assert_eq!(
            check("added_p50 < 1ms", &r, Some(&slower)),
            (true, "observed -100us, limit 1.00ms".into())
        );
        assert_eq!(
            check("added_p99 < 1ms", &r, Some(&slower)),
            (true, "observed 0us, limit 1.00ms".into())
        );
        let (ok, why) = check("added_p99 < 1ms", &r, None);
        assert!(!ok && why.contains("no direct baseline"), "{why}");
        let (ok, why) = check("cpu_per_1k_requests < 100ms", &r, None);
        assert!(!ok && why.contains("no gateway process"), "{why}");
        let g = with_gateway(&r, 12 << 20);
        assert_eq!(
            check("cpu_per_1k_requests < 80ms", &g, None),
            (true, "observed 50.00ms, limit 80.00ms".into())
        );
        assert_eq!(
            check("peak_rss < 10MiB", &g, None),
            (false, "observed 12.0MiB, limit 10.0MiB".into())
        );
        let mut closed = r.clone();
        closed.asked_rps = None;
        let (ok, why) = check("rps >= 0.9 * asked", &closed, None);
        assert!(!ok && why.contains("closed-loop"), "{why}");
    }

    #[test]
    fn each_latency_name_reads_its_own_figure() {
        let mut r = result(1100, 1300, 0, 1000.0);
        r.latency_us.p90 = 1200;
        r.latency_us.p999 = 1400;
        r.latency_us.max = 1500;
        r.latency_us.mean = 1050.0;
        for (name, ms) in [
            ("p50", "1.10"),
            ("median", "1.10"),
            ("p90", "1.20"),
            ("p99", "1.30"),
            ("p99.9", "1.40"),
            ("p999", "1.40"),
            ("max", "1.50"),
            ("mean", "1.05"),
            ("avg", "1.05"),
        ] {
            let t = format!("{name} < 9ms");
            assert_eq!(
                check(&t, &r, None),
                (true, format!("observed {ms}ms, limit 9.00ms")),
                "{t}"
            );
        }
    }

    #[test]
    fn values_take_their_units_and_each_comparison_its_boundary() {
        let r = result(800, 4200, 0, 1000.0);
        assert!(check("p50 >= 0.8ms", &r, None).0);
        assert!(!check("p50 > 0.8ms", &r, None).0, "strictly greater");
        assert!(check("p50 <= 800us", &r, None).0 && !check("p50 < 800us", &r, None).0);
        assert_eq!(
            check("p99 < 4300µs", &r, None),
            (true, "observed 4.20ms, limit 4.30ms".into())
        );
        assert_eq!(
            check("p99 < 1s", &r, None),
            (true, "observed 4.20ms, limit 1.00s".into())
        );
        let g = with_gateway(&r, 3 << 19);
        assert_eq!(
            check("peak_rss < 2048KiB", &g, None),
            (true, "observed 1.5MiB, limit 2.0MiB".into())
        );
        assert_eq!(
            check("peak_rss < 1GiB", &g, None),
            (true, "observed 1.5MiB, limit 1024.0MiB".into())
        );
    }

    #[test]
    fn mistakes_name_the_threshold_and_the_grammar() {
        for (bad, why) in [
            ("p98 < 5ms", "unknown metric `p98`"),
            ("p99 5ms", "no comparison"),
            ("p99 < 5 parsecs", "bad value"),
            ("errors < lots", "bad count"),
            ("p99 < 0.99 * asked", "does not fit"),
        ] {
            let e = Threshold::parse(bad).unwrap_err();
            assert!(
                e.contains(why) && e.contains(&format!("`{bad}`")) && e.contains("METRIC OP VALUE"),
                "{e}"
            );
        }
        let e = parse_all(&["p99 < 5ms".into(), "nope".into(), "max < 1x".into()]).unwrap_err();
        assert_eq!(e.lines().count(), 2);
        assert_eq!(parse_all(&["p99.9 < 20ms".into()]).map(|v| v.len()), Ok(1));
    }
}
