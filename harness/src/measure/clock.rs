//! One clock for a run: monotonic nanoseconds since the run's origin, with the
//! wall-clock time of that origin kept so record timestamps (which cross to
//! the consumer inside messages) can be written and read on the same scale.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

#[derive(Clone, Copy, Debug)]
pub struct Clock {
    origin: Instant,
    origin_unix_us: i64,
}

impl Clock {
    pub fn start() -> Clock {
        let origin = Instant::now();
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as i64)
            .unwrap_or(0);
        Clock {
            origin,
            origin_unix_us: unix,
        }
    }

    /// Nanoseconds since the origin; monotonic.
    #[inline]
    pub fn now_ns(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }

    /// Wall-clock microseconds since the Unix epoch of a run time.
    #[inline]
    pub fn unix_us(&self, ns: u64) -> i64 {
        self.origin_unix_us + (ns / 1_000) as i64
    }

    /// Run time (ns since origin) of a wall-clock microsecond timestamp.
    /// Saturates at 0 for times before the origin.
    #[inline]
    pub fn ns_of_unix_us(&self, unix_us: i64) -> u64 {
        (unix_us - self.origin_unix_us).max(0) as u64 * 1_000
    }

    pub fn origin_unix_us(&self) -> i64 {
        self.origin_unix_us
    }
}
