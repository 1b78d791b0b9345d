//! A consumer thread: fetches until told to stop, then reports.

use crate::client::consumer::Consumer;
use crate::measure::clock::Clock;
use crate::measure::recorder::Recorder;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// Shared with the orchestrator: when to start (backlog mode holds
/// consumers back), when to stop, and how much was consumed.
#[derive(Default)]
pub struct ConsumerShared {
    pub go: AtomicBool,
    pub stop: AtomicBool,
    pub consumed: AtomicU64,
}

pub struct ConsumerResult {
    pub recorder: Recorder,
    pub errors: Vec<String>,
}

pub fn run(
    clock: Clock,
    mut c: Consumer,
    mut rec: Recorder,
    shared: Arc<ConsumerShared>,
) -> ConsumerResult {
    while !shared.go.load(Ordering::Relaxed) && !shared.stop.load(Ordering::Relaxed) {
        std::thread::sleep(std::time::Duration::from_millis(5));
        rec.tick(clock.now_ns());
    }
    while !shared.stop.load(Ordering::Relaxed) {
        match c.fetch_once(&mut rec) {
            Ok(n) => {
                shared.consumed.fetch_add(n, Ordering::Relaxed);
            }
            Err(e) => c.client_errors.push(e.to_string()),
        }
        rec.tick(clock.now_ns());
    }
    ConsumerResult {
        recorder: rec,
        errors: c.client_errors,
    }
}
