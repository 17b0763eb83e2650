//! Medians and spreads over repeats.

/// A sample summarised: median, quartiles and range.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    pub n: usize,
    pub median: f64,
    pub p25: f64,
    pub p75: f64,
    pub min: f64,
    pub max: f64,
}

impl Summary {
    /// Summarises `values` (not empty).
    pub fn of(values: &[f64]) -> Self {
        assert!(!values.is_empty(), "a summary of nothing");
        let mut v = values.to_vec();
        v.sort_by(|a, b| a.total_cmp(b));
        Self {
            n: v.len(),
            median: quantile(&v, 0.5),
            p25: quantile(&v, 0.25),
            p75: quantile(&v, 0.75),
            min: v[0],
            max: v[v.len() - 1],
        }
    }

    /// `median (min–max)` with `decimals` digits.
    pub fn show(&self, decimals: usize) -> String {
        format!(
            "{:.d$} ({:.d$}–{:.d$})",
            self.median,
            self.min,
            self.max,
            d = decimals
        )
    }
}

/// Linear interpolation between closest ranks of a sorted slice.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.len() == 1 {
        return sorted[0];
    }
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// The median of `values` (not empty).
pub fn median(values: &[f64]) -> f64 {
    Summary::of(values).median
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_quartiles() {
        let s = Summary::of(&[5.0, 1.0, 3.0, 2.0, 4.0]);
        assert_eq!(s.median, 3.0);
        assert_eq!(s.p25, 2.0);
        assert_eq!(s.p75, 4.0);
        assert_eq!((s.min, s.max), (1.0, 5.0));
        assert_eq!(Summary::of(&[1.0, 2.0]).median, 1.5);
    }
}
