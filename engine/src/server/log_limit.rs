//! Rate limiting of the warnings bad clients cause. A client that sends
//! garbage in a loop (or a port scanner, or a plaintext client hammering
//! a TLS port) would otherwise fill the log with the same line: each
//! address gets [`PER_WINDOW`] warnings per [`WINDOW`], and the next
//! warning after a quiet spell says how many were left out.
//!
//! One limiter per shard (a thread-local: a shard is one thread), so
//! nothing is shared; a client's connections usually land on several
//! shards, so an address may log up to that many times the limit.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Warnings logged per address and window.
pub const PER_WINDOW: u32 = 5;
/// The window.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Addresses remembered per shard; beyond it, windows that have ended
/// are forgotten, and if none has, the oldest.
const ADDRESSES_MAX: usize = 4096;

/// Whether to log this warning.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Log it; `left_out` warnings from this address were not logged
    /// since the last one that was.
    Log { left_out: u64 },
    /// Leave it out.
    Quiet,
}

#[derive(Default)]
struct Limiter {
    /// Per address: window start, warnings in it, warnings left out.
    seen: HashMap<IpAddr, (Instant, u32, u64)>,
}

impl Limiter {
    fn decide(&mut self, ip: IpAddr, now: Instant) -> Decision {
        if self.seen.len() >= ADDRESSES_MAX && !self.seen.contains_key(&ip) {
            self.seen
                .retain(|_, (start, _, _)| now.duration_since(*start) < WINDOW);
            if self.seen.len() >= ADDRESSES_MAX {
                if let Some(oldest) = self.seen.iter().min_by_key(|(_, v)| v.0).map(|(k, _)| *k) {
                    self.seen.remove(&oldest);
                }
            }
        }
        let entry = self.seen.entry(ip).or_insert((now, 0, 0));
        if now.duration_since(entry.0) >= WINDOW {
            entry.0 = now;
            entry.1 = 0;
        }
        if entry.1 < PER_WINDOW {
            entry.1 += 1;
            let left_out = std::mem::take(&mut entry.2);
            Decision::Log { left_out }
        } else {
            entry.2 += 1;
            Decision::Quiet
        }
    }
}

thread_local! {
    static LIMITER: RefCell<Limiter> = RefCell::new(Limiter::default());
}

/// Whether this shard should log a warning about a client at `ip` now.
pub fn decide(ip: IpAddr) -> Decision {
    LIMITER.with(|l| l.borrow_mut().decide(ip, Instant::now()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_logs_a_few_per_window_then_says_how_many_were_left_out() {
        let mut l = Limiter::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..PER_WINDOW {
            assert_eq!(l.decide(ip, t0), Decision::Log { left_out: 0 });
        }
        for _ in 0..7 {
            assert_eq!(l.decide(ip, t0), Decision::Quiet);
        }
        // Another address is not held back by the first.
        assert_eq!(l.decide(other, t0), Decision::Log { left_out: 0 });
        // A new window: logged again, with the count left out.
        let t1 = t0 + WINDOW;
        assert_eq!(l.decide(ip, t1), Decision::Log { left_out: 7 });
        assert_eq!(l.decide(ip, t1), Decision::Log { left_out: 0 });
    }

    #[test]
    fn the_memory_of_addresses_is_bounded() {
        let mut l = Limiter::default();
        let t0 = Instant::now();
        for i in 0..(ADDRESSES_MAX as u32 + 100) {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(i));
            l.decide(ip, t0);
        }
        assert!(l.seen.len() <= ADDRESSES_MAX);
    }
}
