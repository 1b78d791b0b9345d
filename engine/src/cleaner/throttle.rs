//! `log.cleaner.io.max.bytes.per.second`: the cleaner sleeps whenever it
//! has read more than the rate allows since its window opened. The window
//! restarts after each second without a sleep, so a cleaner idle for a
//! while does not bank a burst.

use std::time::{Duration, Instant};

/// Bytes between checks of the clock and yields to the shard's other
/// tasks.
const CHECK_BYTES: u64 = 64 << 10;

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
        Throttle {
            bytes_per_second: bytes_per_second.max(1),
            window_start: Instant::now(),
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

    /// Counts `bytes` read, sleeping when ahead of the rate, and yields to
    /// other tasks every [`CHECK_BYTES`].
    pub async fn read(&mut self, bytes: u64) {
        self.window_bytes += bytes;
        self.unchecked += bytes;
        if self.unchecked < CHECK_BYTES {
            return;
        }
        self.unchecked = 0;
        let elapsed = self.window_start.elapsed();
        let wait = self.wait_for(elapsed);
        if !wait.is_zero() {
            glommio::timer::sleep(wait).await;
        } else {
            glommio::yield_if_needed().await;
            if elapsed >= Duration::from_secs(1) {
                self.window_start = Instant::now();
                self.window_bytes = 0;
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
}
