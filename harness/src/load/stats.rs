//! Measurements: HdrHistograms in microseconds (1us to 60s, 3 significant digits), status and
//! error counts, per interval; merged exactly (histograms add) across workers and seconds.

use std::collections::BTreeMap;

use hdrhistogram::serialization::{Serializer, V2DeflateSerializer};
use hdrhistogram::Histogram;
use meshbench_report::{LadderPoint, Percentiles};

pub const LOWEST_US: u64 = 1;
pub const HIGHEST_US: u64 = 60_000_000;
pub const SIGFIG: u8 = 3;

/// An empty latency histogram with meshbench's bounds.
pub fn histogram() -> Histogram<u64> {
    // Infallible: the bounds are constants HdrHistogram accepts (1 <= low, high >= 2 * low, sigfig <= 5),
    // checked by the `bounds_are_valid` test.
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(LOWEST_US, HIGHEST_US, SIGFIG).expect("constant histogram bounds are valid")
}

/// Records a value, clamping to the histogram's range (60s and more count as 60s).
pub fn record(h: &mut Histogram<u64>, us: u64) {
    h.saturating_record(us.clamp(LOWEST_US, HIGHEST_US));
}

/// What went wrong with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ErrorClass {
    Connect,
    Timeout,
    Reset,
    Tls,
    Protocol,
    /// An HTTP 5xx response.
    Http5xx,
    /// A gRPC status other than OK.
    Grpc(u8),
}

impl ErrorClass {
    pub fn name(self) -> String {
        match self {
            ErrorClass::Connect => "connect".into(),
            ErrorClass::Timeout => "timeout".into(),
            ErrorClass::Reset => "reset".into(),
            ErrorClass::Tls => "tls".into(),
            ErrorClass::Protocol => "protocol".into(),
            ErrorClass::Http5xx => "http-5xx".into(),
            ErrorClass::Grpc(c) => format!("grpc-{c}"),
        }
    }
}

/// One interval's measurements from one worker, or merged.
#[derive(Debug, Clone)]
pub struct IntervalStats {
    pub corrected: Histogram<u64>,
    pub uncorrected: Histogram<u64>,
    pub requests: u64,
    pub errors: u64,
    pub late: u64,
    /// Status code (`200`, `grpc-0`) -> count.
    pub status: BTreeMap<String, u64>,
    pub error_classes: BTreeMap<ErrorClass, u64>,
}

impl Default for IntervalStats {
    fn default() -> Self {
        IntervalStats {
            corrected: histogram(),
            uncorrected: histogram(),
            requests: 0,
            errors: 0,
            late: 0,
            status: BTreeMap::new(),
            error_classes: BTreeMap::new(),
        }
    }
}

impl IntervalStats {
    /// A response (any status) with its latencies.
    pub fn response(
        &mut self,
        status: &str,
        corrected_us: u64,
        uncorrected_us: u64,
        late: bool,
        error: Option<ErrorClass>,
    ) {
        self.requests += 1;
        self.late += u64::from(late);
        record(&mut self.corrected, corrected_us);
        record(&mut self.uncorrected, uncorrected_us);
        match self.status.get_mut(status) {
            Some(n) => *n += 1,
            None => {
                self.status.insert(status.to_string(), 1);
            }
        }
        if let Some(e) = error {
            self.error(e);
        }
    }

    /// A request that got no response.
    pub fn failure(&mut self, class: ErrorClass, late: bool) {
        self.requests += 1;
        self.late += u64::from(late);
        self.error(class);
    }

    fn error(&mut self, class: ErrorClass) {
        self.errors += 1;
        *self.error_classes.entry(class).or_insert(0) += 1;
    }

    /// Adds another interval's measurements (exact: histograms add).
    pub fn add(&mut self, other: &IntervalStats) {
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = self.corrected.add(&other.corrected);
        let _ = self.uncorrected.add(&other.uncorrected);
        self.requests += other.requests;
        self.errors += other.errors;
        self.late += other.late;
        for (k, v) in &other.status {
            *self.status.entry(k.clone()).or_insert(0) += v;
        }
        for (k, v) in &other.error_classes {
            *self.error_classes.entry(*k).or_insert(0) += v;
        }
    }

    /// Takes the measurements out, leaving an empty interval (histograms reset, not reallocated).
    pub fn take(&mut self) -> IntervalStats {
        let out = self.clone();
        self.corrected.reset();
        self.uncorrected.reset();
        self.requests = 0;
        self.errors = 0;
        self.late = 0;
        self.status.clear();
        self.error_classes.clear();
        out
    }
}

pub fn percentiles(h: &Histogram<u64>) -> Percentiles {
    Percentiles {
        p50: h.value_at_quantile(0.50),
        p90: h.value_at_quantile(0.90),
        p99: h.value_at_quantile(0.99),
        p999: h.value_at_quantile(0.999),
        max: h.max(),
        mean: if h.is_empty() { 0.0 } else { h.mean() },
    }
}

/// wrk2's ladder: 50, 75, 90, 99, 99.9, 99.99, 99.999, 100.
pub fn ladder(h: &Histogram<u64>) -> Vec<LadderPoint> {
    if h.is_empty() {
        return Vec::new();
    }
    [50.0, 75.0, 90.0, 99.0, 99.9, 99.99, 99.999, 100.0]
        .iter()
        .map(|p| {
            let value_us = h.value_at_quantile(p / 100.0);
            LadderPoint {
                percentile: *p,
                value_us,
                count: h.count_between(0, value_us),
            }
        })
        .collect()
}

/// HdrHistogram's V2 compressed encoding, base64: what `.hlog` lines carry.
pub fn encode(h: &Histogram<u64>) -> String {
    use base64::Engine;
    let mut buf = Vec::new();
    match V2DeflateSerializer::new().serialize(h, &mut buf) {
        Ok(_) => base64::engine::general_purpose::STANDARD.encode(&buf),
        Err(_) => String::new(),
    }
}

/// Decodes `encode`'s output.
pub fn decode(text: &str) -> Result<Histogram<u64>, String> {
    meshbench_report::html::decode_histogram(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_classes_have_the_names_reports_use() {
        let names: Vec<String> = [
            ErrorClass::Connect,
            ErrorClass::Timeout,
            ErrorClass::Reset,
            ErrorClass::Tls,
            ErrorClass::Protocol,
            ErrorClass::Http5xx,
            ErrorClass::Grpc(14),
        ]
        .into_iter()
        .map(ErrorClass::name)
        .collect();
        assert_eq!(
            names,
            ["connect", "timeout", "reset", "tls", "protocol", "http-5xx", "grpc-14"]
        );
    }

    #[test]
    fn bounds_are_valid() {
        assert!(Histogram::<u64>::new_with_bounds(LOWEST_US, HIGHEST_US, SIGFIG).is_ok());
    }

    #[test]
    fn merging_is_exact() {
        let mut a = IntervalStats::default();
        let mut b = IntervalStats::default();
        for v in 1..=1000 {
            a.response("200", v, v, false, None);
        }
        for v in 1001..=2000 {
            b.response("503", v, v, true, Some(ErrorClass::Http5xx));
        }
        b.failure(ErrorClass::Timeout, false);
        b.failure(ErrorClass::Reset, true);
        let mut all = IntervalStats::default();
        all.add(&a);
        all.add(&b);
        assert_eq!(all.requests, 2002);
        assert_eq!(all.errors, 1002);
        assert_eq!(all.late, 1001);
        assert_eq!(all.corrected.len(), 2000);
        assert_eq!(all.status.get("200"), Some(&1000));
        assert_eq!(all.status.get("503"), Some(&1000));
        assert_eq!(all.error_classes.get(&ErrorClass::Timeout), Some(&1));
        let p = percentiles(&all.corrected);
        assert!((999..=1001).contains(&p.p50), "{p:?}");
        assert!((1999..=2001).contains(&p.max), "{p:?}");
    }

    #[test]
    fn take_leaves_an_empty_interval() {
        let mut a = IntervalStats::default();
        a.response("200", 5, 5, false, None);
        let t = a.take();
        assert_eq!(
            (t.requests, a.requests, a.corrected.len(), t.corrected.len()),
            (1, 0, 0, 1)
        );
    }

    #[test]
    fn encoding_round_trips() {
        let mut h = histogram();
        for v in [1, 10, 100, 1000, 59_000_000] {
            record(&mut h, v);
        }
        let back = decode(&encode(&h)).expect("decode");
        assert_eq!(back, h);
    }

    #[test]
    fn ladder_ends_at_the_maximum() {
        let mut h = histogram();
        for v in 1..=100_000 {
            record(&mut h, v);
        }
        let l = ladder(&h);
        assert_eq!(l.len(), 8);
        assert_eq!(l.last().map(|p| p.count), Some(100_000));
        assert_eq!(l.last().map(|p| p.value_us), Some(h.max()));
        // Each rung at its percentile, counting the values up to it (within the histogram's
        // three significant figures).
        let near = |got: u64, want: u64| got.abs_diff(want) <= want / 500;
        for (rung, want) in l.iter().zip([50_000, 75_000, 90_000, 99_000, 99_900]) {
            assert!(near(rung.value_us, want) && near(rung.count, want), "{rung:?}");
        }
    }
}
