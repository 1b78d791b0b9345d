//! Per-thread recorders. Each load-generator and consumer thread owns one;
//! nothing on the per-message path is shared or locked. Every second a
//! thread closes its interval (counts plus a compact histogram) into a local
//! list, and the whole recorder is handed back when the thread ends.

use super::hist::{encode, new_hist, record_us, Hist};

pub const INTERVAL_NS: u64 = 1_000_000_000;

/// One closed second of one thread.
#[derive(Clone, Debug, Default)]
pub struct IntervalSample {
    /// Seconds since the run's origin at the interval's start.
    pub index: u64,
    pub messages: u64,
    pub bytes: u64,
    pub errors: u64,
    /// V2-deflate histogram of the latencies recorded in this second.
    pub latency: Vec<u8>,
    /// Same for publish delay (producers only; empty otherwise).
    pub delay: Vec<u8>,
}

/// Totals after warm-up.
#[derive(Clone, Debug)]
pub struct Totals {
    pub messages: u64,
    pub bytes: u64,
    pub errors: u64,
    /// Publish latency (intended send → ack) or end-to-end latency (create
    /// timestamp → consumed), µs.
    pub latency: Hist,
    /// Publish delay (intended send → actually handed to the client), µs.
    pub delay: Hist,
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
            latency: new_hist(),
            delay: new_hist(),
        }
    }

    pub fn add(&mut self, o: &Totals) {
        self.messages += o.messages;
        self.bytes += o.bytes;
        self.errors += o.errors;
        // Same bounds on both sides: adding cannot fail.
        let _ = self.latency.add(&o.latency);
        let _ = self.delay.add(&o.delay);
    }
}

/// A thread's recorder.
#[derive(Debug)]
pub struct Recorder {
    /// Samples whose start time (intended send, create timestamp) is before
    /// this are warm-up and left out of `totals`.
    warmup_end_ns: u64,
    /// Samples at or after this are past the measured window (draining).
    measure_end_ns: u64,
    pub totals: Totals,
    interval: Totals,
    interval_index: u64,
    pub intervals: Vec<IntervalSample>,
}

impl Recorder {
    pub fn new(warmup_end_ns: u64, measure_end_ns: u64) -> Recorder {
        Recorder {
            warmup_end_ns,
            measure_end_ns,
            totals: Totals::new(),
            interval: Totals::new(),
            interval_index: 0,
            intervals: Vec::new(),
        }
    }

    pub fn set_window(&mut self, warmup_end_ns: u64, measure_end_ns: u64) {
        self.warmup_end_ns = warmup_end_ns;
        self.measure_end_ns = measure_end_ns;
    }

    #[inline]
    fn measured(&self, start_ns: u64) -> bool {
        start_ns >= self.warmup_end_ns && start_ns < self.measure_end_ns
    }

    /// Closes intervals up to `now_ns`. Call at least once a second.
    pub fn tick(&mut self, now_ns: u64) {
        let index = now_ns / INTERVAL_NS;
        while self.interval_index < index {
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
            });
            i.messages = 0;
            i.bytes = 0;
            i.errors = 0;
            i.latency.reset();
            i.delay.reset();
            self.interval_index += 1;
        }
    }

    /// A message handed to the client at `now_ns`, meant for `intended_ns`.
    #[inline]
    pub fn on_send(&mut self, now_ns: u64, intended_ns: u64) {
        let us = now_ns.saturating_sub(intended_ns) / 1_000;
        record_us(&mut self.interval.delay, us);
        if self.measured(intended_ns) {
            record_us(&mut self.totals.delay, us);
        }
    }

    /// One completed message (acknowledged or consumed) that started at
    /// `start_ns` and is done at `now_ns`.
    #[inline]
    pub fn on_done(&mut self, now_ns: u64, start_ns: u64, bytes: u64) {
        let us = now_ns.saturating_sub(start_ns) / 1_000;
        self.interval.messages += 1;
        self.interval.bytes += bytes;
        record_us(&mut self.interval.latency, us);
        if self.measured(start_ns) {
            self.totals.messages += 1;
            self.totals.bytes += bytes;
            record_us(&mut self.totals.latency, us);
        }
    }

    /// `n` messages that failed (started at `start_ns`).
    pub fn on_error(&mut self, start_ns: u64, n: u64) {
        self.interval.errors += n;
        if self.measured(start_ns) {
            self.totals.errors += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_is_excluded_and_intervals_close() {
        let mut r = Recorder::new(1_000_000_000, u64::MAX);
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
}
