//! HdrHistogram's percentile-distribution text format (`.hgrm`), as
//! `outputPercentileDistribution` writes it with values in milliseconds, so
//! HdrHistogram's own plotter and other tools read it.

use crate::measure::hist::Hist;
use std::fmt::Write;

/// Ticks per half-distance to 100%, as the Java default (5).
const TICKS: u32 = 5;

pub fn percentile_distribution(h: &Hist) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut total = 0u64;
    if !h.is_empty() {
        for v in h.iter_quantiles(TICKS) {
            total += v.count_since_last_iteration();
            let ms = v.value_iterated_to() as f64 / 1_000.0;
            let q = v.quantile_iterated_to();
            if q < 1.0 {
                let _ = writeln!(
                    out,
                    "{ms:12.3} {q:2.12} {total:10} {:14.2}",
                    1.0 / (1.0 - q)
                );
            } else {
                let _ = writeln!(out, "{ms:12.3} {q:2.12} {total:10}");
            }
        }
    }
    let mean = if h.is_empty() {
        0.0
    } else {
        h.mean() / 1_000.0
    };
    let sd = if h.is_empty() {
        0.0
    } else {
        h.stdev() / 1_000.0
    };
    let _ = writeln!(out, "#[Mean    = {mean:12.3}, StdDeviation   = {sd:12.3}]");
    let _ = writeln!(
        out,
        "#[Max     = {:12.3}, Total count    = {:12}]",
        h.max() as f64 / 1_000.0,
        h.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        h.buckets(),
        // Sub-buckets per bucket: 2·10^digits rounded up to a power of two.
        (2 * 10u64.pow(u32::from(crate::measure::hist::SIGNIFICANT_DIGITS))).next_power_of_two()
    );
    out
}

/// (quantile, value in ms) rows of a percentile distribution written by
/// [`percentile_distribution`] (or HdrHistogram's Java writer); header,
/// blank and `#[` summary lines are skipped. None when a data row does not
/// parse.
pub fn read_distribution(text: &str) -> Option<Vec<(f64, f64)>> {
    let mut rows = Vec::new();
    for line in text.lines().skip(1) {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let ms: f64 = fields.next()?.parse().ok()?;
        let q: f64 = fields.next()?.parse().ok()?;
        if !(0.0..=1.0).contains(&q) || !ms.is_finite() {
            return None;
        }
        rows.push((q, ms));
    }
    Some(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::hist::{new_hist, record_us};

    #[test]
    fn writes_the_standard_layout() {
        let mut h = new_hist();
        for v in 1..=1000 {
            record_us(&mut h, v * 10);
        }
        let text = percentile_distribution(&h);
        assert!(text.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)"));
        assert!(text.contains("Total count    =         1000]"), "{text}");
        let last = text
            .lines()
            .rfind(|l| !l.starts_with('#') && !l.is_empty())
            .unwrap();
        assert!(last.contains("1.000000000000"), "{last}");
        let rows = read_distribution(&text).unwrap();
        assert_eq!(rows.last().unwrap().0, 1.0);
        assert!(rows.windows(2).all(|w| w[0].0 <= w[1].0), "{rows:?}");
        assert!(read_distribution("head\n 1.0 x 3\n").is_none());
    }
}
