//! A rate over a sliding window of samples, as Kafka's `Rate` over a
//! `SampledStat` measures quota use: `quota.window.num` = 11 samples of
//! `quota.window.size.seconds` = 1 s each.
//!
//! Values go into the newest sample until it is a window old, then into
//! the next; a sample older than all windows together counts as empty.
//! The rate is the sum of the samples over the time they span, which is
//! at least `SAMPLES - 1` windows: a client's first burst is spread over
//! 10 s, not measured over the few milliseconds it took, as Kafka does
//! so that a client is not throttled for its first request.

/// Samples in a window (Kafka's `quota.window.num` default).
pub const SAMPLES: usize = 11;
/// One sample's span (Kafka's `quota.window.size.seconds` default).
pub const SAMPLE_MS: u64 = 1_000;
/// Time after which every sample of a rate is obsolete.
pub const EXPIRY_MS: u64 = SAMPLES as u64 * SAMPLE_MS;

#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    start_ms: u64,
    value: f64,
}

/// One measured rate: values per second.
#[derive(Clone, Debug)]
pub struct SampledRate {
    samples: [Sample; SAMPLES],
    current: usize,
}

impl SampledRate {
    pub fn new(now_ms: u64) -> SampledRate {
        SampledRate {
            samples: [Sample {
                start_ms: now_ms,
                value: 0.0,
            }; SAMPLES],
            current: 0,
        }
    }

    /// Adds `value` at `now_ms` (negative to take a recorded value back).
    pub fn record(&mut self, now_ms: u64, value: f64) {
        let s = &self.samples[self.current];
        if now_ms.saturating_sub(s.start_ms) >= SAMPLE_MS {
            self.current = (self.current + 1) % SAMPLES;
            self.samples[self.current] = Sample {
                start_ms: now_ms,
                value: 0.0,
            };
        }
        self.samples[self.current].value += value;
    }

    /// The rate at `now_ms`, per second.
    pub fn measure(&mut self, now_ms: u64) -> f64 {
        self.purge(now_ms);
        let total: f64 = self.samples.iter().map(|s| s.value).sum();
        total / (self.window_ms(now_ms) as f64 / 1000.0)
    }

    /// The span the rate is measured over at `now_ms`: from the oldest
    /// sample's start, at least `SAMPLES - 1` whole windows (Kafka's
    /// `Rate.windowSize`).
    pub fn window_ms(&self, now_ms: u64) -> u64 {
        let oldest = self
            .samples
            .iter()
            .map(|s| s.start_ms)
            .min()
            .unwrap_or(now_ms);
        let elapsed = now_ms.saturating_sub(oldest);
        let full = elapsed / SAMPLE_MS;
        let min_full = SAMPLES as u64 - 1;
        if full < min_full {
            elapsed + (min_full - full) * SAMPLE_MS
        } else {
            elapsed
        }
    }

    /// Samples older than all windows together restart empty at `now_ms`.
    fn purge(&mut self, now_ms: u64) {
        for s in &mut self.samples {
            if now_ms.saturating_sub(s.start_ms) >= EXPIRY_MS {
                *s = Sample {
                    start_ms: now_ms,
                    value: 0.0,
                };
            }
        }
    }

    /// When the last value went in.
    pub fn last_ms(&self) -> u64 {
        self.samples[self.current].start_ms
    }
}

/// How long a client whose rate is `measured` against `bound` waits for
/// its rate to come back to the bound (Kafka's `QuotaUtils.throttleTime`):
/// the excess, as a share of the bound, times the window it was measured
/// over. Zero at or under the bound.
pub fn throttle_ms(measured: f64, bound: f64, window_ms: u64) -> u64 {
    // NaN anywhere is no throttle.
    if measured.partial_cmp(&bound) != Some(std::cmp::Ordering::Greater) || bound <= 0.0 {
        return 0;
    }
    ((measured - bound) / bound * window_ms as f64).round() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_first_burst_is_spread_over_ten_windows() {
        let mut r = SampledRate::new(0);
        r.record(0, 1000.0);
        assert_eq!(r.window_ms(0), 10_000);
        assert_eq!(r.measure(0), 100.0);
    }

    #[test]
    fn a_steady_rate_is_measured_as_it_is() {
        let mut r = SampledRate::new(0);
        // 100 per 100 ms for 30 s: 1,000 per second.
        for t in (0..30_000).step_by(100) {
            r.record(t, 100.0);
        }
        let rate = r.measure(30_000);
        assert!((rate - 1000.0).abs() < 100.0, "{rate}");
    }

    #[test]
    fn old_samples_are_forgotten() {
        let mut r = SampledRate::new(0);
        r.record(0, 1e9);
        assert!(r.measure(EXPIRY_MS - 1) > 0.0);
        assert_eq!(r.measure(EXPIRY_MS), 0.0);
    }

    #[test]
    fn throttle_brings_the_rate_back_to_the_bound() {
        // Twice the bound over 10 s: 10 s more brings the average down.
        assert_eq!(throttle_ms(200.0, 100.0, 10_000), 10_000);
        assert_eq!(throttle_ms(100.0, 100.0, 10_000), 0);
        assert_eq!(throttle_ms(50.0, 100.0, 10_000), 0);
    }
}
