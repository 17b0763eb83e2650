//! Percentiles with order-statistic confidence intervals: distribution-free, so a long tail (a
//! scheduler hiccup) widens the interval of p99 instead of biasing it.

use groundzero_api::journey_ab::Estimate;

/// How [`estimate`] computes its intervals, for the report.
pub const CI_METHOD: &str = "95% order-statistic interval, exact: the sorted samples whose \
                             ranks l and u have P(l ≤ B < u) ≥ 95% for B ~ Binomial(n, q), \
                             2.5% each side; a bound no rank reaches (too few samples for that \
                             percentile) is not estimable (null)";

/// Each tail's share of the 95% interval.
const TAIL: f64 = 0.025;

/// The `q` quantile (nearest rank) of `sorted` and its 95% confidence interval; `None` when
/// there are no samples. A bound is `None` when no sample's rank gives 97.5% on its side.
pub fn estimate(sorted: &[f64], q: f64) -> Option<Estimate> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let (lo, hi) = ranks(n, q);
    let nearest = ((n as f64 * q).ceil() as usize).clamp(1, n);
    Some(Estimate {
        ns: sorted[nearest - 1],
        lo_ns: lo.map(|r| sorted[r - 1]),
        hi_ns: hi.map(|r| sorted[r - 1]),
    })
}

/// The 1-based ranks (l, u) of the interval's bounds among `n` samples for the `q` quantile:
/// l the largest with P(B ≤ l − 1) ≤ 2.5%, u the smallest with P(B ≤ u − 1) ≥ 97.5%, where B
/// counts the samples below the true quantile; `None` where that rank is outside 1..=n.
fn ranks(n: usize, q: f64) -> (Option<usize>, Option<usize>) {
    let cdf = binomial_cdf(n, q);
    // cdf[k] = P(B ≤ k), k = 0..=n.
    let lo = (1..=n).rev().find(|&l| cdf[l - 1] <= TAIL);
    let hi = (1..=n).find(|&u| cdf[u - 1] >= 1.0 - TAIL);
    (lo, hi)
}

/// P(B ≤ k) for k = 0..=n, B ~ Binomial(n, q), summed in log space so that n in the
/// thousands does not underflow the first terms to nothing.
fn binomial_cdf(n: usize, q: f64) -> Vec<f64> {
    let q = q.clamp(f64::MIN_POSITIVE, 1.0 - f64::EPSILON);
    let (ln_q, ln_not_q) = (q.ln(), (1.0 - q).ln());
    let mut ln_pmf = n as f64 * ln_not_q;
    let mut sum = 0.0;
    let mut cdf = Vec::with_capacity(n + 1);
    for k in 0..=n {
        sum += ln_pmf.exp();
        cdf.push(sum.min(1.0));
        // pmf(k + 1) = pmf(k) · (n − k)/(k + 1) · q/(1 − q)
        ln_pmf += ((n - k) as f64).ln() - ((k + 1) as f64).ln() + ln_q - ln_not_q;
    }
    cdf
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_to(n: u32) -> Vec<f64> {
        (1..=n).map(f64::from).collect()
    }

    #[test]
    fn median_of_one_to_hundred_with_the_exact_binomial_interval() {
        let e = estimate(&one_to(100), 0.5).unwrap();
        assert_eq!(e.ns, 50.0);
        // Binomial(100, ½): P(B ≤ 39) = 1.8% ≤ 2.5% < P(B ≤ 40) = 2.8%, and
        // P(B ≤ 59) = 97.2% < 97.5% ≤ P(B ≤ 60) = 98.2%: ranks 40 and 61.
        assert_eq!((e.lo_ns, e.hi_ns), (Some(40.0), Some(61.0)));
    }

    #[test]
    fn p99_of_hundred_has_no_upper_bound_inside_the_samples() {
        let e = estimate(&one_to(100), 0.99).unwrap();
        assert_eq!(e.ns, 99.0);
        // P(B ≤ 99) = 1 − 0.99¹⁰⁰ = 63%: even the largest sample is not above p99 with 97.5%.
        assert_eq!(e.hi_ns, None);
        // P(B ≤ 96) = 1.8% ≤ 2.5% < P(B ≤ 97) = 7.9%: rank 97.
        assert_eq!(e.lo_ns, Some(97.0));
    }

    #[test]
    fn p99_of_ten_has_a_lower_bound_only() {
        let e = estimate(&one_to(10), 0.99).unwrap();
        assert_eq!(e.ns, 10.0);
        // Binomial(10, 0.99): P(B ≤ 8) = 0.4%, P(B ≤ 9) = 9.6%: rank 9; no rank above.
        assert_eq!((e.lo_ns, e.hi_ns), (Some(9.0), None));
    }

    #[test]
    fn one_sample_bounds_nothing_it_cannot() {
        assert_eq!(estimate(&[], 0.5), None);
        let median = estimate(&[7.0], 0.5).unwrap();
        assert_eq!((median.ns, median.lo_ns, median.hi_ns), (7.0, None, None));
        // P(B ≤ 0) = 1% for p99: the one sample is a lower bound, there is no upper one.
        let p99 = estimate(&[7.0], 0.99).unwrap();
        assert_eq!((p99.ns, p99.lo_ns, p99.hi_ns), (7.0, Some(7.0), None));
    }

    #[test]
    fn many_samples_do_not_underflow() {
        let e = estimate(&one_to(10_000), 0.5).unwrap();
        let (lo, hi) = (e.lo_ns.unwrap(), e.hi_ns.unwrap());
        // ±1.96·50 ranks around 5000, give or take one.
        assert!(
            (4900.0..=4903.0).contains(&lo) && (5098.0..=5101.0).contains(&hi),
            "{e:?}"
        );
    }
}
