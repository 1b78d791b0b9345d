//! The log cleaner: compaction of `cleanup.policy=compact` topics.
//!
//! Each shard runs one cleaner over the partitions it holds, leader or
//! follower alike: replicas compact independently, as in Kafka, and a
//! follower copies its leader's batches as they are (cleaned or not),
//! which compaction never makes inconsistent because offsets are
//! preserved. The cleaner is a task on the shard's executor that plans
//! and swaps; a pass's reading, filtering, writing and syncing run on
//! the broker's cleaner threads ([`crate::idle`], at the lowest CPU priority),
//! paced by `log.cleaner.io.max.bytes.per.second`, so produce and fetch
//! on the shard go on while it works. Every `log.cleaner.backoff.ms`
//! without work it looks for the dirtiest due log ([`plan`]), waits for
//! its turn ([`Turns`]: at most `log.cleaner.threads` shards clean at
//! once, one per thread), runs a pass over it ([`pass`]), and looks again
//! at once.
//!
//! [`offset_map`] is the map of key to latest offset (its memory is
//! `log.cleaner.dedupe.buffer.size` split over the shards), [`filter`]
//! rebuilds one batch without the records that go, [`txn`] applies
//! Kafka's rules to transactional records and markers, and
//! `storage/cleaned.rs` swaps the cleaned segments in crash-safely.
//!
//! The internal topics (`__consumer_offsets`, `__transaction_state`) are
//! compacted topics like any other: their coordinators replay the
//! cleaned log (latest record per key, tombstones while they last) to the
//! same state. The service is installed per shard by `broker.rs` and
//! reached through [`cleaner`].

pub mod filter;
pub mod offset_map;
pub mod pass;
pub mod plan;
pub mod throttle;
pub mod txn;

use crate::shard::partition::{now_ms, Partition};
use crate::shard::Shard;
use offset_map::OffsetMap;
use pass::Work;
use plan::LogState;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use throttle::Throttle;

/// Turns to clean, over a broker's shards: at most `log.cleaner.threads`
/// passes run at once, in the order their shards asked, on as many
/// cleaner threads. Kafka runs its cleaner on that many threads (one by
/// default), so compaction takes at most that many cores from produce and
/// fetch; a cleaner on every shard with work would take every core a
/// broker has left, and on a small machine its clients' too.
#[derive(Debug)]
pub struct Turns {
    /// Tickets handed out.
    issued: AtomicU64,
    /// Tickets given back: a ticket may run while fewer than `at_once`
    /// tickets before it are out.
    returned: AtomicU64,
    at_once: u64,
    /// The threads the passes run on.
    workers: crate::idle::Workers,
}

/// How often a cleaner waiting for its turn looks again.
const TURN_POLL: Duration = Duration::from_millis(10);

impl Turns {
    /// Turns for `at_once` passes, and a cleaner thread for each.
    pub fn new(at_once: usize) -> std::io::Result<Turns> {
        Ok(Turns {
            issued: AtomicU64::new(0),
            returned: AtomicU64::new(0),
            at_once: at_once.max(1) as u64,
            workers: crate::idle::Workers::new("sluice-cleaner", at_once)?,
        })
    }

    /// Waits for a turn (None if the broker stops meanwhile). The turn
    /// ends when the returned guard drops, however the pass ends.
    async fn wait(&self, shard: &Shard) -> Option<Turn<'_>> {
        let turn = Turn {
            turns: self,
            ticket: self.issued.fetch_add(1, Ordering::AcqRel),
        };
        while !turn.may_run() {
            if shard.broker.stopping() {
                return None;
            }
            glommio::timer::sleep(TURN_POLL).await;
        }
        Some(turn)
    }
}

/// A ticket for a turn; returned on drop, waited for or not.
struct Turn<'a> {
    turns: &'a Turns,
    ticket: u64,
}

impl Turn<'_> {
    fn may_run(&self) -> bool {
        self.ticket < self.turns.returned.load(Ordering::Acquire) + self.turns.at_once
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.turns.returned.fetch_add(1, Ordering::AcqRel);
    }
}

/// The cleaner's settings, from the broker config.
#[derive(Clone, Debug)]
pub struct CleanerConfig {
    /// This shard's share of `log.cleaner.dedupe.buffer.size`.
    pub dedupe_buffer_bytes: u64,
    /// `log.cleaner.io.max.bytes.per.second`.
    pub io_max_bytes_per_second: u64,
    /// `log.cleaner.backoff.ms`: the pause when no log is due.
    pub backoff_ms: u64,
}

/// A log by topic, partition and topic id (a re-created topic is another).
type LogKey = (String, i32, uuid::Uuid);

/// One shard's log cleaner.
#[derive(Debug)]
pub struct Cleaner {
    config: CleanerConfig,
    turns: Arc<Turns>,
    logs: RefCell<HashMap<LogKey, LogState>>,
    /// Passes completed on this shard.
    passes: Cell<u64>,
}

thread_local! {
    static CLEANER: RefCell<Option<Rc<Cleaner>>> = const { RefCell::new(None) };
}

/// Installs this shard's cleaner; call once per shard at start.
pub fn install(c: Rc<Cleaner>) {
    CLEANER.with(|slot| *slot.borrow_mut() = Some(c));
}

/// This shard's cleaner; None before [`install`].
pub fn cleaner() -> Option<Rc<Cleaner>> {
    CLEANER.with(|slot| slot.borrow().clone())
}

fn key_of(p: &Partition) -> LogKey {
    (p.topic.clone(), p.index, p.topic_id)
}

impl Cleaner {
    pub fn new(config: CleanerConfig, turns: Arc<Turns>) -> Cleaner {
        Cleaner {
            config,
            turns,
            logs: RefCell::new(HashMap::new()),
            passes: Cell::new(0),
        }
    }

    /// Passes completed on this shard.
    pub fn passes(&self) -> u64 {
        self.passes.get()
    }

    /// The offset map and pacing a pass borrows.
    fn work(&self) -> Work {
        Work {
            map: OffsetMap::with_memory(self.config.dedupe_buffer_bytes),
            throttle: Throttle::new(self.config.io_max_bytes_per_second),
        }
    }

    /// Cleans until the broker stops.
    pub async fn run(self: Rc<Self>, shard: Rc<Shard>) {
        let mut work = None;
        let backoff = Duration::from_millis(self.config.backoff_ms);
        // The stop flag is checked at least this often while idle.
        let tick = Duration::from_millis(100).min(backoff);
        while !shard.broker.stopping() {
            if self.clean_dirtiest(&shard, &mut work).await {
                glommio::yield_if_needed().await;
                continue;
            }
            let idle_since = std::time::Instant::now();
            while idle_since.elapsed() < backoff && !shard.broker.stopping() {
                glommio::timer::sleep(tick).await;
            }
        }
    }

    /// Runs one pass over the dirtiest due log, in this shard's turn;
    /// false if none was due.
    async fn clean_dirtiest(&self, shard: &Shard, work: &mut Option<Work>) -> bool {
        if self.dirtiest(shard).is_none() {
            return false;
        }
        let Some(_turn) = self.turns.wait(shard).await else {
            return false;
        };
        // Chosen again: the logs may have changed during the wait.
        let Some((chosen, plan)) = self.dirtiest(shard) else {
            return false;
        };
        let key = key_of(&chosen);
        let mut state = self.logs.borrow_mut().remove(&key).unwrap_or_default();
        let started = std::time::Instant::now();
        // A job that panicked took the last one with it.
        if work.is_none() {
            *work = Some(self.work());
        }
        let workers = &self.turns.workers;
        let result = pass::run(&chosen, &plan, &mut state, work, workers).await;
        match result {
            Ok(stats) => {
                self.passes.set(self.passes.get() + 1);
                tracing::info!(
                    topic = %chosen.topic, partition = chosen.index,
                    dirty_ppm = plan.dirty_ppm, forced = plan.forced,
                    segments_before = stats.segments_before, segments_after = stats.segments_after,
                    bytes_before = stats.bytes_before, bytes_after = stats.bytes_after,
                    records_removed = stats.records_removed, cleaned_upto = stats.cleaned_upto,
                    stale = stats.stale, elapsed_ms = started.elapsed().as_millis() as u64,
                    "cleaned log"
                );
            }
            Err(pass::PassError::Stopped) => {}
            Err(e) => {
                tracing::error!(
                    topic = %chosen.topic, partition = chosen.index, error = %e,
                    "cleaning failed; this partition is not cleaned again until a restart"
                );
                state.failed = true;
            }
        }
        self.logs.borrow_mut().insert(key, state);
        true
    }

    /// The dirtiest due log of this shard and its plan.
    fn dirtiest(&self, shard: &Shard) -> Option<(Rc<Partition>, plan::Plan)> {
        let now = now_ms();
        let partitions: Vec<Rc<Partition>> = shard
            .partitions()
            .into_iter()
            .filter(|p| p.is_compacted())
            .collect();
        let mut logs = self.logs.borrow_mut();
        let present: std::collections::HashSet<LogKey> =
            partitions.iter().map(|p| key_of(p)).collect();
        logs.retain(|k, _| present.contains(k));
        let mut best: Option<(Rc<Partition>, plan::Plan)> = None;
        for p in &partitions {
            let view = p.cleaner_view();
            let state = logs.entry(key_of(p)).or_default();
            let Some(candidate) = plan::plan(&view, state, now) else {
                continue;
            };
            let better = best.as_ref().is_none_or(|(_, b)| {
                (candidate.forced, candidate.dirty_ppm) > (b.forced, b.dirty_ppm)
            });
            if better {
                best = Some((Rc::clone(p), candidate));
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket(turns: &Turns) -> Turn<'_> {
        Turn {
            turns,
            ticket: turns.issued.fetch_add(1, Ordering::AcqRel),
        }
    }

    #[test]
    fn turns_go_in_order_and_at_most_so_many_at_once() {
        let one = Turns::new(1).unwrap();
        let (a, b, c) = (ticket(&one), ticket(&one), ticket(&one));
        assert!(a.may_run());
        assert!(!b.may_run() && !c.may_run());
        drop(a);
        assert!(b.may_run());
        assert!(!c.may_run(), "one at a time");
        drop(b);
        assert!(c.may_run());

        let two = Turns::new(2).unwrap();
        let (a, b, c) = (ticket(&two), ticket(&two), ticket(&two));
        assert!(a.may_run() && b.may_run());
        assert!(!c.may_run());
        // Whichever ends first lets the next in.
        drop(b);
        assert!(c.may_run());
        drop(a);
    }
}
