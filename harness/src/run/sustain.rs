//! Whether a load kept up. A rate is sustained when, over the measured
//! window, the producers' lag behind their schedule does not grow, publish
//! p99 does not trend upward, the consumers' backlog does not grow (OMB's
//! notion of backlog), acknowledgements came at the rate asked for (within
//! `RATE_SHORTFALL`), nothing scheduled went unsent and nothing failed.
//!
//! Trends compare the window's first third with its last third, second by
//! second: a load past what the system carries queues up, and its lag,
//! latency and backlog grow with the window's length, while one within it
//! stays flat apart from noise. The floors keep a noisy shared machine's
//! jitter (a few ms, a stall of tens of ms) from condemning a load that
//! keeps up.

use super::result::{IntervalRow, Phase, Sustain};

/// Lag or p99 must grow by more than this, and by more than its level in
/// the first third, to count as growing.
const LATENCY_FLOOR_MS: f64 = 100.0;
/// The backlog must grow by more than this many messages, and by more than
/// half a second of the load's rate.
const BACKLOG_FLOOR_MSGS: f64 = 1_000.0;
/// Acknowledgements in the window must reach this share of the rate asked.
const RATE_SHORTFALL: f64 = 0.95;

/// Judges the measured seconds of `rows`; `rates` is (asked, acknowledged)
/// msg/s for a paced load.
pub fn judge(rows: &[IntervalRow], unsent: u64, failed: u64, rates: Option<(f64, f64)>) -> Sustain {
    let window: Vec<&IntervalRow> = rows.iter().filter(|r| r.phase == Phase::Measure).collect();
    let mut why_not = Vec::new();
    if let Some((asked, acked)) = rates.filter(|(asked, acked)| *acked < asked * RATE_SHORTFALL) {
        why_not.push(format!(
            "acknowledged {acked:.0} msg/s of the {asked:.0} msg/s asked"
        ));
    }
    if unsent > 0 {
        why_not.push(format!(
            "{unsent} messages of the window's schedule were never sent"
        ));
    }
    if failed > 0 {
        why_not.push(format!("{failed} messages of the window failed"));
    }
    let lag = trend(&window, |r| Some(r.producer_lag_max_us as f64 / 1e3));
    if lag.grew_past(LATENCY_FLOOR_MS) {
        why_not.push(format!(
            "the producers' lag behind their schedule grew from {:.0} ms to {:.0} ms ({:+.1} ms/s)",
            lag.first, lag.last, lag.per_s
        ));
    }
    let p99 = trend(&window, |r| {
        (r.publish_msgs > 0).then_some(r.publish_p99_us as f64 / 1e3)
    });
    if p99.grew_past(LATENCY_FLOOR_MS) {
        why_not.push(format!(
            "publish p99 grew from {:.0} ms to {:.0} ms ({:+.1} ms/s)",
            p99.first, p99.last, p99.per_s
        ));
    }
    let has_backlog = window.iter().any(|r| r.backlog_msgs.is_some());
    let backlog = has_backlog.then(|| trend(&window, |r| r.backlog_msgs.map(|b| b as f64)));
    if let Some(b) = &backlog {
        let rate =
            window.iter().map(|r| r.publish_msgs as f64).sum::<f64>() / window.len().max(1) as f64;
        if b.grew_past(BACKLOG_FLOOR_MSGS.max(rate / 2.0)) {
            why_not.push(format!(
                "the consumers' backlog grew from {:.0} to {:.0} messages ({:+.0} msg/s)",
                b.first, b.last, b.per_s
            ));
        }
    }
    Sustain {
        sustained: why_not.is_empty(),
        lag_growth_ms_per_s: lag.per_s,
        p99_growth_ms_per_s: p99.per_s,
        backlog_growth_msgs_per_s: backlog.map(|b| b.per_s),
        why_not,
    }
}

/// A figure's mean over the first and the last third of the window, and
/// the growth per second between them.
#[derive(Debug, Default)]
struct Trend {
    first: f64,
    last: f64,
    per_s: f64,
}

impl Trend {
    /// Grew by more than `floor` and more than its first-third level.
    fn grew_past(&self, floor: f64) -> bool {
        self.last - self.first > floor.max(self.first)
    }
}

fn trend(rows: &[&IntervalRow], figure: impl Fn(&IntervalRow) -> Option<f64>) -> Trend {
    let values: Vec<(usize, f64)> = rows
        .iter()
        .enumerate()
        .filter_map(|(i, r)| figure(r).map(|v| (i, v)))
        .collect();
    if values.len() < 3 {
        return Trend::default();
    }
    let k = values.len() / 3;
    let mean = |part: &[(usize, f64)]| {
        let n = part.len() as f64;
        (
            part.iter().map(|(i, _)| *i as f64).sum::<f64>() / n,
            part.iter().map(|(_, v)| *v).sum::<f64>() / n,
        )
    };
    let (t0, first) = mean(&values[..k]);
    let (t1, last) = mean(&values[values.len() - k..]);
    Trend {
        first,
        last,
        per_s: (last - first) / (t1 - t0).max(1.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(second: u64, lag_ms: u64, p99_ms: u64, backlog: Option<u64>) -> IntervalRow {
        IntervalRow {
            second,
            phase: Phase::Measure,
            publish_msgs: 10_000,
            publish_p99_us: p99_ms * 1_000,
            producer_lag_max_us: lag_ms * 1_000,
            consume_msgs: 10_000,
            e2e_p99_us: 0,
            backlog_msgs: backlog,
            errors: 0,
        }
    }

    #[test]
    fn a_flat_noisy_load_is_sustained() {
        let rows: Vec<IntervalRow> = (0..10)
            .map(|s| {
                row(
                    s,
                    [1, 40, 2, 3, 80, 1, 2, 1, 60, 2][s as usize],
                    5 + s % 3,
                    Some(200),
                )
            })
            .collect();
        let v = judge(&rows, 0, 0, None);
        assert!(v.sustained, "{v:?}");
    }

    #[test]
    fn growing_lag_latency_or_backlog_is_not_sustained() {
        let lag: Vec<IntervalRow> = (0..9).map(|s| row(s, s * 200, 5, None)).collect();
        let v = judge(&lag, 0, 0, None);
        assert!(!v.sustained && v.why_not[0].contains("lag"), "{v:?}");
        assert!((v.lag_growth_ms_per_s - 200.0).abs() < 1.0, "{v:?}");

        let p99: Vec<IntervalRow> = (0..9).map(|s| row(s, 1, 10 + s * 100, None)).collect();
        let v = judge(&p99, 0, 0, None);
        assert!(!v.sustained && v.why_not[0].contains("p99"), "{v:?}");

        let backlog: Vec<IntervalRow> = (0..9).map(|s| row(s, 1, 5, Some(s * 20_000))).collect();
        let v = judge(&backlog, 0, 0, None);
        assert!(!v.sustained && v.why_not[0].contains("backlog"), "{v:?}");
        assert_eq!(v.backlog_growth_msgs_per_s, Some(20_000.0));
    }

    #[test]
    fn unsent_or_failed_messages_are_not_sustained_and_warmup_is_ignored() {
        let mut rows: Vec<IntervalRow> = (0..6).map(|s| row(s, 1, 5, None)).collect();
        assert!(!judge(&rows, 3, 0, None).sustained);
        assert!(!judge(&rows, 0, 1, None).sustained);
        // A slow warm-up second is no trend.
        rows[0].phase = Phase::Warmup;
        rows[0].producer_lag_max_us = 5_000_000;
        rows[0].publish_p99_us = 5_000_000;
        assert!(judge(&rows, 0, 0, None).sustained);
        assert!(judge(&rows, 0, 0, Some((10_000.0, 9_600.0))).sustained);
        let short = judge(&rows, 0, 0, Some((10_000.0, 9_000.0)));
        assert!(
            !short.sustained && short.why_not[0].contains("9000 msg/s of the 10000"),
            "{short:?}"
        );
    }
}
