//! Per-thread recorders. Each load-generator and consumer thread owns one;
//! nothing on the per-message path is shared or locked. Every second a
//! thread closes its interval (counts plus a compact histogram) into a local
//! list, and the whole recorder is handed back when the thread ends.

use super::hist::{encode, new_hist, record_us, Hist, HIGHEST_US};
use std::collections::BTreeMap;

pub const INTERVAL_NS: u64 = 1_000_000_000;

/// One closed second of one thread.
#[derive(Clone, Debug, Default)]
pub struct IntervalSample {
    /// Seconds since the load's start at the interval's start.
    pub index: u64,
    pub messages: u64,
    pub bytes: u64,
    pub errors: u64,
    /// V2-deflate histogram of the latencies recorded in this second.
    pub latency: Vec<u8>,
    /// Same for publish delay (producers only; empty otherwise).
    pub delay: Vec<u8>,
    /// The most a generator was behind its schedule in this second, µs,
    /// whether or not it could send (producers only).
    pub lag_max_us: u64,
}

/// Totals after warm-up.
#[derive(Clone, Debug)]
pub struct Totals {
    /// Messages that started in the measured window and completed.
    pub messages: u64,
    pub bytes: u64,
    /// Messages that started in the measured window and failed.
    pub errors: u64,
    /// Failed messages per cause, the window's and the rest alike.
    pub errors_by_cause: BTreeMap<String, u64>,
    /// Messages that completed inside the measured window, whenever they
    /// started: the achieved rate's numerator.
    pub done_in_window: u64,
    pub done_bytes_in_window: u64,
    /// Messages of the window's schedule never sent (producers) or never
    /// consumed (consumers); each is in `latency` as a lower bound.
    pub missing: u64,
    /// Consumed messages whose end-to-end latency started at the record's
    /// timestamp (values under 8 bytes carry no send time).
    pub timestamp_starts: u64,
    /// Publish latency (intended send → ack) or end-to-end latency (create
    /// timestamp → consumed), µs.
    pub latency: Hist,
    /// Publish delay (intended send → actually handed to the client), µs.
    pub delay: Hist,
    /// A transactional producer's commits of transactions begun in the
    /// window: the EndTxn round trip, µs.
    pub commit: Hist,
    /// The same transactions from their first message's send to the end
    /// of their EndTxn, µs.
    pub transaction: Hist,
    /// Transactions begun in the window and committed.
    pub transactions: u64,
    /// Transactions aborted (any time): a batch of theirs failed.
    pub transactions_aborted: u64,
    /// Transactions committed inside the window, whenever they began: the
    /// transaction rate's numerator.
    pub transactions_done_in_window: u64,
}

impl Default for Totals {
    fn default() -> Totals {
        Totals::new()
    }
}

impl Totals {
    /// Nothing counted yet.
    pub fn new() -> Totals {
        Totals {
            messages: 0,
            bytes: 0,
            errors: 0,
            errors_by_cause: BTreeMap::new(),
            done_in_window: 0,
            done_bytes_in_window: 0,
            missing: 0,
            timestamp_starts: 0,
            latency: new_hist(),
            delay: new_hist(),
            commit: new_hist(),
            transaction: new_hist(),
            transactions: 0,
            transactions_aborted: 0,
            transactions_done_in_window: 0,
        }
    }

    pub fn add(&mut self, o: &Totals) {
        self.messages += o.messages;
        self.bytes += o.bytes;
        self.errors += o.errors;
        for (cause, n) in &o.errors_by_cause {
            *self.errors_by_cause.entry(cause.clone()).or_default() += n;
        }
        self.done_in_window += o.done_in_window;
        self.done_bytes_in_window += o.done_bytes_in_window;
        self.missing += o.missing;
        self.timestamp_starts += o.timestamp_starts;
        // Same bounds on both sides: adding cannot fail.
        let _ = self.latency.add(&o.latency);
        let _ = self.delay.add(&o.delay);
        let _ = self.commit.add(&o.commit);
        let _ = self.transaction.add(&o.transaction);
        self.transactions += o.transactions;
        self.transactions_aborted += o.transactions_aborted;
        self.transactions_done_in_window += o.transactions_done_in_window;
    }
}

/// A thread's recorder.
#[derive(Debug)]
pub struct Recorder {
    /// The load's start: interval `i` covers [origin + i s, origin + i+1 s).
    origin_ns: u64,
    /// Samples whose start time (intended send, create timestamp) is before
    /// this are warm-up and left out of `totals`.
    warmup_end_ns: u64,
    /// Samples at or after this are past the measured window (draining).
    measure_end_ns: u64,
    pub totals: Totals,
    /// This second's samples outside the measured window.
    interval: Totals,
    /// This second's latency and delay samples inside the measured window:
    /// at the interval's close they join both `totals` and the interval.
    /// Each sample is recorded once, into one of the two, not into an
    /// interval and the totals both: two histogram records per message
    /// instead of four at the producer, one instead of two at the consumer.
    interval_latency_measured: Hist,
    interval_delay_measured: Hist,
    interval_lag_max_us: u64,
    interval_index: u64,
    pub intervals: Vec<IntervalSample>,
}

impl Recorder {
    /// A recorder whose intervals start at `origin_ns`, the load's start.
    pub fn new(origin_ns: u64, warmup_end_ns: u64, measure_end_ns: u64) -> Recorder {
        Recorder {
            origin_ns,
            warmup_end_ns,
            measure_end_ns,
            totals: Totals::new(),
            interval: Totals::new(),
            interval_latency_measured: new_hist(),
            interval_delay_measured: new_hist(),
            interval_lag_max_us: 0,
            interval_index: 0,
            intervals: Vec::new(),
        }
    }

    #[inline]
    fn measured(&self, start_ns: u64) -> bool {
        start_ns >= self.warmup_end_ns && start_ns < self.measure_end_ns
    }

    fn close_interval(&mut self) {
        // Same bounds on both sides: adding cannot fail.
        if !self.interval_latency_measured.is_empty() {
            let _ = self.totals.latency.add(&self.interval_latency_measured);
            let _ = self.interval.latency.add(&self.interval_latency_measured);
            self.interval_latency_measured.reset();
        }
        if !self.interval_delay_measured.is_empty() {
            let _ = self.totals.delay.add(&self.interval_delay_measured);
            let _ = self.interval.delay.add(&self.interval_delay_measured);
            self.interval_delay_measured.reset();
        }
        let i = &mut self.interval;
        self.intervals.push(IntervalSample {
            index: self.interval_index,
            messages: i.messages,
            bytes: i.bytes,
            errors: i.errors,
            latency: if i.latency.is_empty() {
                Vec::new()
            } else {
                encode(&i.latency)
            },
            delay: if i.delay.is_empty() {
                Vec::new()
            } else {
                encode(&i.delay)
            },
            lag_max_us: self.interval_lag_max_us,
        });
        self.interval_lag_max_us = 0;
        i.messages = 0;
        i.bytes = 0;
        i.errors = 0;
        i.latency.reset();
        i.delay.reset();
        self.interval_index += 1;
    }

    /// Closes intervals up to `now_ns`. Call at least once a second; the
    /// latency and delay totals hold a sample once its interval is closed
    /// (at the latest by [`Recorder::finish`]).
    pub fn tick(&mut self, now_ns: u64) {
        let index = now_ns.saturating_sub(self.origin_ns) / INTERVAL_NS;
        while self.interval_index < index {
            self.close_interval();
        }
    }

    /// The thread is done: closes every interval up to `now_ns` and the
    /// partial one it falls in, so no sample is left out of the intervals.
    pub fn finish(&mut self, now_ns: u64) {
        self.tick(now_ns);
        let i = &self.interval;
        if i.messages > 0
            || i.errors > 0
            || !i.delay.is_empty()
            || !self.interval_delay_measured.is_empty()
            || self.interval_lag_max_us > 0
        {
            self.close_interval();
        }
    }

    /// The generator is `lag_ns` behind its schedule (the oldest message
    /// it owes was meant that long ago).
    #[inline]
    pub fn on_lag(&mut self, lag_ns: u64) {
        self.interval_lag_max_us = self.interval_lag_max_us.max(lag_ns / 1_000);
    }

    /// A message handed to the client at `now_ns`, meant for `intended_ns`.
    #[inline]
    pub fn on_send(&mut self, now_ns: u64, intended_ns: u64) {
        let us = now_ns.saturating_sub(intended_ns) / 1_000;
        if self.measured(intended_ns) {
            record_us(&mut self.interval_delay_measured, us);
        } else {
            record_us(&mut self.interval.delay, us);
        }
    }

    /// One completed message (acknowledged or consumed) that started at
    /// `start_ns` and is done at `now_ns`.
    #[inline]
    pub fn on_done(&mut self, now_ns: u64, start_ns: u64, bytes: u64) {
        let us = now_ns.saturating_sub(start_ns) / 1_000;
        self.interval.messages += 1;
        self.interval.bytes += bytes;
        if self.measured(start_ns) {
            self.totals.messages += 1;
            self.totals.bytes += bytes;
            record_us(&mut self.interval_latency_measured, us);
        } else {
            record_us(&mut self.interval.latency, us);
        }
        if now_ns >= self.warmup_end_ns && now_ns < self.measure_end_ns {
            self.totals.done_in_window += 1;
            self.totals.done_bytes_in_window += bytes;
        }
    }

    /// A transaction committed at `now_ns`: its first message was sent at
    /// `begun_ns`, its EndTxn at `end_sent_ns`. Counted by when it began,
    /// as messages are by their intended send time.
    pub fn on_commit(&mut self, begun_ns: u64, end_sent_ns: u64, now_ns: u64) {
        debug_assert!(begun_ns <= end_sent_ns && end_sent_ns <= now_ns);
        if self.measured(begun_ns) {
            self.totals.transactions += 1;
            record_us(
                &mut self.totals.commit,
                now_ns.saturating_sub(end_sent_ns) / 1_000,
            );
            record_us(
                &mut self.totals.transaction,
                now_ns.saturating_sub(begun_ns) / 1_000,
            );
        }
        if now_ns >= self.warmup_end_ns && now_ns < self.measure_end_ns {
            self.totals.transactions_done_in_window += 1;
        }
    }

    /// A transaction aborted.
    pub fn on_abort(&mut self) {
        self.totals.transactions_aborted += 1;
    }

    /// `n` messages that failed (started at `start_ns`), and why.
    pub fn on_error(&mut self, start_ns: u64, n: u64, cause: &str) {
        self.interval.errors += n;
        if self.measured(start_ns) {
            self.totals.errors += n;
        }
        match self.totals.errors_by_cause.get_mut(cause) {
            Some(count) => *count += n,
            None => {
                self.totals.errors_by_cause.insert(cause.to_string(), n);
            }
        }
    }

    /// `n` messages of the measured window that never completed: neither
    /// sent nor failed by the end (a producer's schedule), or never read (a
    /// consumer's tail). Each counts as missing and enters the latency
    /// histogram at `lower_bound_ns`, the least it would have taken.
    pub fn on_missing(&mut self, n: u64, lower_bound_ns: u64) {
        self.totals.missing += n;
        let us = (lower_bound_ns / 1_000).clamp(1, HIGHEST_US);
        let _ = self.totals.latency.record_n(us, n);
    }

    /// Whether a message started at `start_ns` belongs to the window.
    pub fn in_window(&self, start_ns: u64) -> bool {
        self.measured(start_ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_is_excluded_and_intervals_close() {
        let mut r = Recorder::new(0, 1_000_000_000, u64::MAX);
        r.on_done(500_000_000, 400_000_000, 10); // warm-up
        r.tick(1_200_000_000);
        r.on_done(1_300_000_000, 1_100_000_000, 10);
        r.tick(3_000_000_000);
        assert_eq!(r.totals.messages, 1);
        assert_eq!(
            r.totals.latency.max(),
            r.totals.latency.highest_equivalent(200_000)
        );
        assert_eq!(r.intervals.len(), 3);
        assert_eq!(r.intervals[0].messages, 1);
        assert_eq!(r.intervals[1].messages, 1);
        assert_eq!(r.intervals[2].messages, 0);
    }

    /// A measured sample lands in the totals and in its interval, an
    /// unmeasured one only in its interval, each recorded once.
    #[test]
    fn samples_reach_totals_and_intervals_at_the_close() {
        let mut r = Recorder::new(0, 1_000, 2_000_000_000);
        r.on_done(500_000, 100, 1); // warm-up
        r.on_done(600_000, 10_000, 1);
        r.on_done(700_000, 20_000, 1);
        r.on_send(30_000, 10_000);
        r.on_send(30_000, 500);
        assert_eq!(r.totals.messages, 2);
        r.finish(800_000);
        assert_eq!((r.totals.latency.len(), r.totals.delay.len()), (2, 1));
        assert_eq!(r.intervals.len(), 1);
        let i = &r.intervals[0];
        assert_eq!(super::super::hist::decode(&i.latency).unwrap().len(), 3);
        assert_eq!(super::super::hist::decode(&i.delay).unwrap().len(), 2);
        assert_eq!(
            r.totals.latency.max(),
            r.totals.latency.highest_equivalent(680)
        );
    }
}
