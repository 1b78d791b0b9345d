//! `log.cleaner.io.max.bytes.per.second`: the cleaner sleeps whenever it
//! has read more than the rate allows since its window opened. The window
//! restarts after each second without a sleep, so a cleaner idle for a
//! while does not bank a burst: past an idle spell it may read at most
//! [`CHECK_BYTES`] before it is paced again.
//!
//! The arithmetic ([`Throttle::account`]) takes the time as an argument,
//! so tests drive it with a clock of their own; [`Throttle::read`] feeds
//! it the real one and does the sleeping, on the cleaner's own thread.

use std::time::{Duration, Instant};

/// Bytes between checks of the clock.
pub const CHECK_BYTES: u64 = 64 << 10;

/// Paces the cleaner's reads.
#[derive(Debug)]
pub struct Throttle {
    bytes_per_second: u64,
    window_start: Instant,
    window_bytes: u64,
    unchecked: u64,
}

impl Throttle {
    pub fn new(bytes_per_second: u64) -> Throttle {
        Throttle::starting_at(bytes_per_second, Instant::now())
    }

    /// A throttle whose first window opens at `now`.
    pub fn starting_at(bytes_per_second: u64, now: Instant) -> Throttle {
        Throttle {
            bytes_per_second: bytes_per_second.max(1),
            window_start: now,
            window_bytes: 0,
            unchecked: 0,
        }
    }

    /// How long to wait after `bytes` more, `elapsed` into the window.
    fn wait_for(&self, elapsed: Duration) -> Duration {
        let allowed =
            Duration::from_secs_f64(self.window_bytes as f64 / self.bytes_per_second as f64);
        allowed.saturating_sub(elapsed)
    }

    /// Counts `bytes` read at `now`. None until [`CHECK_BYTES`] have
    /// gathered since the last check; then how long to sleep, zero when
    /// the reads are within the rate.
    pub fn account(&mut self, bytes: u64, now: Instant) -> Option<Duration> {
        self.window_bytes = self.window_bytes.saturating_add(bytes);
        self.unchecked = self.unchecked.saturating_add(bytes);
        if self.unchecked < CHECK_BYTES {
            return None;
        }
        self.unchecked = 0;
        let elapsed = now.saturating_duration_since(self.window_start);
        let wait = self.wait_for(elapsed);
        if wait.is_zero() && elapsed >= Duration::from_secs(1) {
            self.window_start = now;
            self.window_bytes = 0;
        }
        Some(wait)
    }

    /// Counts `bytes` read, sleeping when ahead of the rate.
    pub fn read(&mut self, bytes: u64) {
        if let Some(wait) = self.account(bytes, Instant::now()) {
            if !wait.is_zero() {
                std::thread::sleep(wait);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_is_what_the_rate_allows_beyond_the_time_spent() {
        let mut t = Throttle::new(1_000);
        t.window_bytes = 2_000;
        assert_eq!(
            t.wait_for(Duration::from_millis(500)),
            Duration::from_millis(1_500)
        );
        assert_eq!(t.wait_for(Duration::from_secs(3)), Duration::ZERO);
    }

    /// Reads `total` bytes in `chunk`s starting at `now` with a reader
    /// that takes `per_chunk` of its own for each read and sleeps exactly
    /// as told; returns the time it ends.
    fn read_all(
        t: &mut Throttle,
        mut now: Instant,
        total: u64,
        chunk: u64,
        per_chunk: Duration,
    ) -> Instant {
        let mut left = total;
        while left > 0 {
            let n = chunk.min(left);
            left -= n;
            now += per_chunk;
            if let Some(wait) = t.account(n, now) {
                now += wait;
            }
        }
        now
    }

    /// An infinitely fast reader of 10 MB at 1 MB/s takes 10 s less at
    /// most the bytes read since the last check, and no more than 10 s.
    #[test]
    fn a_fast_reader_takes_the_bytes_over_the_rate() {
        let start = Instant::now();
        let mut t = Throttle::starting_at(1_000_000, start);
        let end = read_all(&mut t, start, 10_000_000, 4_096, Duration::ZERO);
        let took = end - start;
        let floor = Duration::from_secs_f64((10_000_000 - CHECK_BYTES) as f64 / 1e6);
        assert!(took >= floor, "{took:?} < {floor:?}");
        assert!(took <= Duration::from_secs(10), "{took:?}");
    }

    /// A reader slower than the rate is never made to sleep.
    #[test]
    fn a_reader_slower_than_the_rate_never_sleeps() {
        let start = Instant::now();
        let mut t = Throttle::starting_at(1_000_000, start);
        let mut now = start;
        for _ in 0..10_000 {
            // 4 KiB a 5 ms: 800 KB/s.
            now += Duration::from_millis(5);
            if let Some(wait) = t.account(4_096, now) {
                assert_eq!(wait, Duration::ZERO);
            }
        }
    }

    /// An idle minute banks nothing: the 3 MB read after it at 1 MB/s
    /// still take about 3 s.
    #[test]
    fn idle_time_banks_no_burst() {
        let start = Instant::now();
        let mut t = Throttle::starting_at(1_000_000, start);
        let after_first = read_all(&mut t, start, 1_000_000, 4_096, Duration::ZERO);
        let resumed = after_first + Duration::from_secs(60);
        let end = read_all(&mut t, resumed, 3_000_000, 4_096, Duration::ZERO);
        let took = end - resumed;
        // The check that finds the window old lets its own bytes through,
        // and the last check leaves up to CHECK_BYTES unpaid.
        let floor = Duration::from_secs_f64((3_000_000 - 2 * CHECK_BYTES) as f64 / 1e6);
        assert!(took >= floor, "{took:?} < {floor:?}");
    }
}
