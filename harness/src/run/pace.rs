//! When each message of a generator is meant to be sent: a rate that may
//! change in steps (OMB's `producerIncrementRate` ramp), or none at all
//! (unpaced, max-rate mode).
//!
//! Step i runs at `rate_i` from `start_i` until `start_{i+1}`; its messages
//! are those meant for before the next step starts, so message k's intended
//! time is `start_i + (k - first_k_i) / rate_i` for the step i holding k:
//!
//! ```text
//! rate ▲        ┌────────┐
//!      │   ┌────┘        │   first_k of a step = first_k of the one before
//!      │───┘             │   + ceil(its length × its rate)
//!      └───┴────┴────────┴──▶ time
//!     start_0 start_1 start_2
//! ```

/// The most steps a schedule may have: a ramp of a minute per step over a
/// week is about 10,000; more is a typo.
pub const STEPS_MAX: usize = 100_000;

#[derive(Clone, Copy, Debug, PartialEq)]
struct Step {
    start_ns: u64,
    first_k: u64,
    /// Nanoseconds between two messages; 0 only for an unpaced schedule.
    interval_ns: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Pace {
    steps: Vec<Step>,
}

impl Pace {
    /// `rate` msg/s from `start_ns` on; 0 is unpaced.
    pub fn constant(start_ns: u64, rate: f64) -> Pace {
        assert!(rate.is_finite() && rate >= 0.0, "rate {rate}");
        Pace {
            steps: vec![Step {
                start_ns,
                first_k: 0,
                interval_ns: if rate > 0.0 { 1e9 / rate } else { 0.0 },
            }],
        }
    }

    /// `rate` from `start_ns`, then each `(at_ns, rate)` of `changes` from
    /// its time on. Every rate must be above 0 and the times increasing.
    pub fn stepped(start_ns: u64, rate: f64, changes: &[(u64, f64)]) -> Pace {
        assert!(rate.is_finite() && rate > 0.0, "rate {rate}");
        assert!(changes.len() < STEPS_MAX, "{} steps", changes.len());
        let mut pace = Pace::constant(start_ns, rate);
        for &(at_ns, rate) in changes {
            assert!(rate.is_finite() && rate > 0.0, "rate {rate}");
            let last = *pace.steps.last().expect("a schedule has a step");
            assert!(at_ns > last.start_ns, "steps out of order");
            let count = ((at_ns - last.start_ns) as f64 / last.interval_ns).ceil() as u64;
            pace.steps.push(Step {
                start_ns: at_ns,
                first_k: last.first_k + count,
                interval_ns: 1e9 / rate,
            });
        }
        pace
    }

    /// The same schedule at `share` of each rate (a generator's part of
    /// the load).
    pub fn scaled(&self, share: f64) -> Pace {
        assert!(share > 0.0 && share <= 1.0, "share {share}");
        let first = self.steps[0];
        if self.unpaced() {
            return self.clone();
        }
        let changes: Vec<(u64, f64)> = self.steps[1..]
            .iter()
            .map(|s| (s.start_ns, 1e9 / s.interval_ns * share))
            .collect();
        Pace::stepped(first.start_ns, 1e9 / first.interval_ns * share, &changes)
    }

    pub fn unpaced(&self) -> bool {
        self.steps[0].interval_ns == 0.0
    }

    pub fn start_ns(&self) -> u64 {
        self.steps[0].start_ns
    }

    /// When message `k` is meant to be sent; meaningless when unpaced.
    pub fn at(&self, k: u64) -> u64 {
        let s = if self.steps.len() == 1 {
            &self.steps[0]
        } else {
            let i = self.steps.partition_point(|s| s.first_k <= k);
            &self.steps[i - 1]
        };
        s.start_ns + ((k - s.first_k) as f64 * s.interval_ns) as u64
    }

    /// Messages meant for `[from_ns, to_ns)`.
    pub fn count_between(&self, from_ns: u64, to_ns: u64) -> u64 {
        if self.unpaced() || to_ns <= from_ns {
            return 0;
        }
        self.messages_before(to_ns) - self.messages_before(from_ns)
    }

    /// Messages meant for before `t_ns`.
    fn messages_before(&self, t_ns: u64) -> u64 {
        let i = self.steps.partition_point(|s| s.start_ns < t_ns);
        if i == 0 {
            return 0;
        }
        let s = &self.steps[i - 1];
        s.first_k + ((t_ns - s.start_ns) as f64 / s.interval_ns).ceil() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_constant_rate_spaces_messages_evenly() {
        let p = Pace::constant(1_000, 1_000.0);
        assert_eq!(p.at(0), 1_000);
        assert_eq!(p.at(3), 3_001_000);
        assert_eq!(p.count_between(1_000, 1_000_001_000), 1_000);
        assert!(Pace::constant(0, 0.0).unpaced());
    }

    #[test]
    fn steps_change_the_spacing_where_they_start() {
        // 10 msg/s for a second, then 20 msg/s.
        let p = Pace::stepped(0, 10.0, &[(1_000_000_000, 20.0)]);
        assert_eq!(p.at(9), 900_000_000);
        assert_eq!(p.at(10), 1_000_000_000);
        assert_eq!(p.at(12), 1_100_000_000);
        assert_eq!(p.count_between(0, 2_000_000_000), 30);
        assert_eq!(p.count_between(1_000_000_000, 2_000_000_000), 20);
        // Intended times never go backwards across a step.
        let q = Pace::stepped(0, 3.0, &[(1_000_000_000, 7.0), (1_500_000_000, 2.0)]);
        let times: Vec<u64> = (0..12).map(|k| q.at(k)).collect();
        assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
    }

    #[test]
    fn a_share_scales_every_step() {
        let p = Pace::stepped(0, 100.0, &[(1_000_000_000, 200.0)]).scaled(0.5);
        assert_eq!(p.count_between(0, 1_000_000_000), 50);
        assert_eq!(p.count_between(1_000_000_000, 2_000_000_000), 100);
    }
}
