//! A consumer thread: keeps its group membership until the load's timeline
//! is known, fetches until told to stop, then reports.

use crate::client::consumer::Consumer;
use crate::client::group_consumer::GroupConsumer;
use crate::measure::clock::Clock;
use crate::measure::recorder::Recorder;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// Client errors one consumer keeps; past this only the count grows (a
/// broker refusing every request for minutes must not fill memory).
const ERRORS_KEPT_MAX: usize = 1_000;
/// Pause after an error, so a failing broker is not asked in a tight loop.
const ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// Shared with the orchestrator: the measured timeline, when to start
/// (backlog mode holds consumers back), when to stop, and how much was
/// consumed.
#[derive(Default)]
pub struct ConsumerShared {
    /// (load start, warm-up end, measure end) in clock ns, set once every
    /// group has settled and the producers' start time is known.
    pub window: OnceLock<(u64, u64, u64)>,
    pub go: AtomicBool,
    pub stop: AtomicBool,
    pub consumed: AtomicU64,
}

/// Generation and (topic, partition)s a member holds; `None` while
/// (re)joining.
pub type Held = Option<(i32, Vec<(String, i32)>)>;

/// What a group consumer holds, published after each poll so the
/// orchestrator can tell when its group has settled.
#[derive(Default)]
pub struct MemberStatus {
    pub held: Mutex<Held>,
    pub last_error: Mutex<Option<String>>,
}

pub enum AnyConsumer {
    /// Partitions assigned by the harness.
    Manual(Box<Consumer>),
    /// Partitions assigned by a consumer group.
    Group(Box<GroupConsumer>, Arc<MemberStatus>),
}

pub struct ConsumerResult {
    pub recorder: Recorder,
    pub errors: Vec<String>,
}

impl AnyConsumer {
    fn fetch_once(&mut self, rec: &mut Recorder) -> Result<u64, String> {
        let r = match self {
            AnyConsumer::Manual(c) => c.fetch_once(rec),
            AnyConsumer::Group(g, _) => g.fetch_once(rec),
        };
        self.publish(r.as_ref().err().map(|e| e.to_string()));
        r.map_err(|e| e.to_string())
    }

    /// Membership only, while there is nothing to fetch yet.
    fn keep_membership(&mut self) -> Result<(), String> {
        let r = match self {
            AnyConsumer::Manual(_) => Ok(()),
            AnyConsumer::Group(g, _) => g.poll(),
        };
        self.publish(r.as_ref().err().map(|e| e.to_string()));
        r.map_err(|e| e.to_string())
    }

    fn publish(&self, error: Option<String>) {
        let AnyConsumer::Group(g, status) = self else {
            return;
        };
        let held = g.assignment().map(|(generation, a)| {
            let parts = a
                .iter()
                .flat_map(|(t, ps)| ps.iter().map(move |p| (t.clone(), *p)))
                .collect();
            (generation, parts)
        });
        *status.held.lock().unwrap_or_else(|e| e.into_inner()) = held;
        if error.is_some() {
            *status.last_error.lock().unwrap_or_else(|e| e.into_inner()) = error;
        }
    }

    fn errors(&mut self) -> &mut Vec<String> {
        match self {
            AnyConsumer::Manual(c) => &mut c.client_errors,
            AnyConsumer::Group(g, _) => g.client_errors(),
        }
    }

    fn note(&mut self, e: String) {
        let errors = self.errors();
        if errors.len() < ERRORS_KEPT_MAX {
            errors.push(e);
        }
        std::thread::sleep(ERROR_BACKOFF);
    }

    /// Commits and leaves the group; errors are recorded, not fatal.
    fn close(&mut self) {
        if let AnyConsumer::Group(g, _) = self {
            if let Err(e) = g.close() {
                let e = e.to_string();
                g.client_errors().push(format!("closing: {e}"));
            }
        }
    }
}

/// Runs one consumer; `mine` counts what it consumes (its subscription's
/// share), `shared.consumed` what all consumers did.
pub fn run(
    clock: Clock,
    mut c: AnyConsumer,
    shared: Arc<ConsumerShared>,
    mine: Arc<AtomicU64>,
) -> ConsumerResult {
    // Until the timeline is set nothing is produced: only membership.
    let (start, warmup_end, measure_end) = loop {
        if let Some(w) = shared.window.get() {
            break *w;
        }
        if shared.stop.load(Ordering::Relaxed) {
            break (0, 0, u64::MAX);
        }
        if let Err(e) = c.keep_membership() {
            c.note(e);
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut rec = Recorder::new(start, warmup_end, measure_end);
    while !shared.go.load(Ordering::Relaxed) && !shared.stop.load(Ordering::Relaxed) {
        if let Err(e) = c.keep_membership() {
            c.note(e);
        }
        std::thread::sleep(Duration::from_millis(5));
        rec.tick(clock.now_ns());
    }
    while !shared.stop.load(Ordering::Relaxed) {
        match c.fetch_once(&mut rec) {
            Ok(n) => {
                shared.consumed.fetch_add(n, Ordering::Relaxed);
                mine.fetch_add(n, Ordering::Relaxed);
            }
            Err(e) => c.note(e),
        }
        rec.tick(clock.now_ns());
    }
    c.close();
    rec.finish(clock.now_ns());
    crate::measure::cpu::thread_ending();
    ConsumerResult {
        recorder: rec,
        errors: std::mem::take(c.errors()),
    }
}
