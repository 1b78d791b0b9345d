//! The log cleaner: compaction of `cleanup.policy=compact` topics.
//!
//! Each shard runs one cleaner over the partitions it holds, leader or
//! follower alike: replicas compact independently, as in Kafka, and a
//! follower copies its leader's batches as they are (cleaned or not),
//! which compaction never makes inconsistent because offsets are
//! preserved. The cleaner is a cooperative task on the shard's executor:
//! it yields between batches and paces its reads
//! (`log.cleaner.io.max.bytes.per.second`), so produce and fetch on the
//! shard go on while it works. Every `log.cleaner.backoff.ms` without
//! work it looks for the dirtiest due log ([`plan`]), runs a pass over it
//! ([`pass`]), and looks again at once.
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
use plan::LogState;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;
use throttle::Throttle;

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
    pub fn new(config: CleanerConfig) -> Cleaner {
        Cleaner {
            config,
            logs: RefCell::new(HashMap::new()),
            passes: Cell::new(0),
        }
    }

    /// Passes completed on this shard.
    pub fn passes(&self) -> u64 {
        self.passes.get()
    }

    /// Cleans until the broker stops.
    pub async fn run(self: Rc<Self>, shard: Rc<Shard>) {
        let mut map = OffsetMap::with_memory(self.config.dedupe_buffer_bytes);
        let mut throttle = Throttle::new(self.config.io_max_bytes_per_second);
        let backoff = Duration::from_millis(self.config.backoff_ms);
        // The stop flag is checked at least this often while idle.
        let tick = Duration::from_millis(100).min(backoff);
        while !shard.broker.stopping() {
            if self.clean_dirtiest(&shard, &mut map, &mut throttle).await {
                glommio::yield_if_needed().await;
                continue;
            }
            let idle_since = std::time::Instant::now();
            while idle_since.elapsed() < backoff && !shard.broker.stopping() {
                glommio::timer::sleep(tick).await;
            }
        }
    }

    /// Runs one pass over the dirtiest due log; false if none was due.
    async fn clean_dirtiest(
        &self,
        shard: &Shard,
        map: &mut OffsetMap,
        throttle: &mut Throttle,
    ) -> bool {
        let now = now_ms();
        let partitions: Vec<Rc<Partition>> = shard
            .partitions()
            .into_iter()
            .filter(|p| p.is_compacted())
            .collect();
        let (chosen, plan) = {
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
            match best {
                Some(b) => b,
                None => return false,
            }
        };
        let key = key_of(&chosen);
        let mut state = self.logs.borrow_mut().remove(&key).unwrap_or_default();
        let started = std::time::Instant::now();
        let result = pass::run(&chosen, &plan, &mut state, map, throttle).await;
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
}
