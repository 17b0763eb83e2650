//! Percentiles with order-statistic confidence intervals: distribution-free, so a long tail (a
//! scheduler hiccup) widens the interval of p99 instead of biasing it.

use groundzero_api::journey_ab::Estimate;

/// How [`estimate`] computes its intervals, for the report.
pub const CI_METHOD: &str = "95% order-statistic interval: the ranks n·q ± 1.96·√(n·q·(1−q)) \
                             of the sorted samples (normal approximation to the binomial)";

/// The `q` quantile (nearest rank) of `sorted` and its 95% confidence interval; `None` when
/// there are no samples.
pub fn estimate(sorted: &[f64], q: f64) -> Option<Estimate> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let nf = n as f64;
    let rank = |r: f64| (r.clamp(1.0, nf) as usize) - 1;
    let half = 1.96 * (nf * q * (1.0 - q)).sqrt();
    Some(Estimate {
        ns: sorted[rank((nf * q).ceil())],
        lo_ns: sorted[rank((nf * q - half).floor())],
        hi_ns: sorted[rank((nf * q + half).ceil())],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_one_to_hundred_with_an_interval_around_it() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        let e = estimate(&v, 0.5).unwrap();
        assert_eq!(e.ns, 50.0);
        // ±1.96·5 ranks: 40 and 60.
        assert_eq!((e.lo_ns, e.hi_ns), (40.0, 60.0));
    }

    #[test]
    fn p99_interval_reaches_the_top_and_never_past_it() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        let e = estimate(&v, 0.99).unwrap();
        assert_eq!(e.ns, 99.0);
        assert_eq!(e.hi_ns, 100.0);
        assert!(e.lo_ns >= 96.0 && e.lo_ns < 99.0, "{e:?}");
    }

    #[test]
    fn no_samples_no_estimate_and_one_sample_is_its_own_interval() {
        assert_eq!(estimate(&[], 0.5), None);
        let e = estimate(&[7.0], 0.99).unwrap();
        assert_eq!((e.ns, e.lo_ns, e.hi_ns), (7.0, 7.0, 7.0));
    }
}
