//! The statistics of the gate: a one-sided Welch t-test on per-repetition figures (on a log scale,
//! so changes are ratios), its confidence bound, and Holm's step-down correction, which holds the
//! chance of any false alarm across the whole comparison at the family's alpha.

use statrs::distribution::{ContinuousCDF, StudentsT};

/// The comparison of one figure: baseline repetitions `a`, current ones `b`, on a log scale.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Welch {
    /// Difference of the means of the logs: ln(current / baseline) of the geometric means.
    pub diff: f64,
    pub se: f64,
    pub df: f64,
    /// One-sided p-value of "current is larger".
    pub p: f64,
}

fn mean_var(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let m = x.iter().sum::<f64>() / n;
    let v = x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (n - 1.0);
    (m, v)
}

/// Welch's test that `b` is larger than `a`. None with fewer than two values on a side.
pub fn welch_greater(a: &[f64], b: &[f64]) -> Option<Welch> {
    if a.len() < 2 || b.len() < 2 || a.iter().chain(b).any(|v| !v.is_finite()) {
        return None;
    }
    let ((ma, va), (mb, vb)) = (mean_var(a), mean_var(b));
    let (sa, sb) = (va / a.len() as f64, vb / b.len() as f64);
    let se2 = sa + sb;
    let diff = mb - ma;
    if se2 <= 0.0 {
        // No spread at all: the difference is certain (and a tie says nothing either way).
        let p = if diff > 0.0 {
            0.0
        } else if diff < 0.0 {
            1.0
        } else {
            0.5
        };
        return Some(Welch {
            diff,
            se: 0.0,
            df: f64::INFINITY,
            p,
        });
    }
    let df = se2.powi(2) / (sa.powi(2) / (a.len() as f64 - 1.0) + sb.powi(2) / (b.len() as f64 - 1.0));
    let se = se2.sqrt();
    let t = StudentsT::new(0.0, 1.0, df).ok()?;
    Some(Welch {
        diff,
        se,
        df,
        p: 1.0 - t.cdf(diff / se),
    })
}

impl Welch {
    /// The one-sided upper confidence bound of `diff` at level 1 - `alpha`.
    pub fn upper(&self, alpha: f64) -> f64 {
        if self.se == 0.0 {
            return self.diff;
        }
        let q = StudentsT::new(0.0, 1.0, self.df).map_or(f64::INFINITY, |t| t.inverse_cdf(1.0 - alpha));
        self.diff + q * self.se
    }
}

/// Holm's step-down: which hypotheses are rejected with the family-wise error rate held at
/// `alpha`, and each p-value's adjusted alpha (the level it was tested at).
pub fn holm(p: &[f64], alpha: f64) -> Vec<(bool, f64)> {
    let m = p.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|a, b| p[*a].total_cmp(&p[*b]));
    let mut out = vec![(false, alpha / m.max(1) as f64); m];
    let mut still = true;
    for (k, &i) in order.iter().enumerate() {
        let level = alpha / (m - k) as f64;
        out[i].1 = level;
        still = still && p[i] <= level;
        out[i].0 = still;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn welch_matches_a_worked_example() {
        // scipy.stats.ttest_ind(b, a, equal_var=False, alternative='greater'):
        // t = 2.29471, df = 7.36882, p = 0.0267999.
        let a = [19.8, 20.4, 19.6, 17.8, 18.5];
        let b = [21.0, 20.5, 21.6, 19.6, 20.1];
        let w = welch_greater(&a, &b).unwrap_or(Welch {
            diff: 0.0,
            se: 0.0,
            df: 0.0,
            p: 1.0,
        });
        assert!((w.diff - 1.34).abs() < 1e-9, "{w:?}");
        assert!((w.diff / w.se - 2.29471).abs() < 1e-4, "{w:?}");
        assert!((w.df - 7.36882).abs() < 1e-4, "{w:?}");
        assert!((w.p - 0.0267999).abs() < 1e-6, "{w:?}");
        // The other direction is not significant.
        assert!(welch_greater(&b, &a).is_some_and(|w| w.p > 0.9));
        assert!(w.upper(0.05) > w.diff);
        assert_eq!(welch_greater(&[1.0], &b), None);
        assert_eq!(welch_greater(&a, &[f64::NAN, 1.0]), None);
        let flat = welch_greater(&[1.0, 1.0], &[2.0, 2.0]).map(|w| (w.p, w.upper(0.05)));
        assert_eq!(flat, Some((0.0, 1.0)));
        // No spread: smaller is certainly not larger, and a tie says nothing either way.
        let p = |a: &[f64], b: &[f64]| welch_greater(a, b).map(|w| w.p);
        assert_eq!(p(&[2.0, 2.0], &[1.0, 1.0]), Some(1.0));
        assert_eq!(p(&[2.0, 2.0], &[2.0, 2.0]), Some(0.5));
    }

    #[test]
    fn holm_steps_down_and_stops_at_the_first_failure() {
        // m = 4, alpha 0.05: levels 0.0125, 0.0167, 0.025, 0.05 in p order.
        let r = holm(&[0.04, 0.001, 0.012, 0.03], 0.05);
        let rejected: Vec<bool> = r.iter().map(|x| x.0).collect();
        assert_eq!(rejected, [false, true, true, false]);
        assert!((r[1].1 - 0.0125).abs() < 1e-12 && (r[2].1 - 0.05 / 3.0).abs() < 1e-12);
        // 0.03 fails its level (0.025), so 0.04 is not rejected though it is under 0.05.
        assert!((r[0].1 - 0.05).abs() < 1e-12);
        assert!(holm(&[], 0.05).is_empty());
    }
}
