//! Which part of a log a pass may clean, and whether it should.
//!
//! ```text
//!  log start     first dirty              end            LSO  log end
//!  |  clean part  |  dirty part            |  uncleanable |    | active |
//! ```
//!
//! The cleanable part is the run of sealed segments from the log start
//! that end at or below the last stable offset and whose newest record is
//! at least `min.compaction.lag.ms` old; `end` is where that run ends.
//! Below `first dirty` a previous pass already cleaned the log. The
//! dirty ratio is dirty bytes over cleanable bytes; a log is due when it
//! reaches `min.cleanable.dirty.ratio`, when its oldest dirty segment's
//! newest record is older than `max.compaction.lag.ms`, or when the
//! delete horizon of a tombstone or transaction marker it keeps has
//! passed.

use crate::shard::partition::CleanerView;
use crate::storage::log::SealedSegment;
use sluice_protocol::Offset;

/// What the cleaner remembers of one log between passes, in memory: a
/// restart makes the whole log dirty again, so the first pass after it
/// rebuilds both fields. When tombstones and markers may go is not kept
/// here but in their batches (the delete horizon, Kafka's KIP-534), so a
/// restart never restarts their clocks.
#[derive(Clone, Debug, Default)]
pub struct LogState {
    /// Where the dirty part starts.
    pub first_dirty: Offset,
    /// The earliest delete horizon (Unix ms) among the batches the last
    /// pass kept for tombstones or markers still waiting for it: a pass
    /// is due then even with no new dirt. Only a schedule: the horizons
    /// themselves are in the batches. (Kafka keeps nothing of the kind,
    /// so there a tombstone past its horizon waits for a pass that
    /// `min.cleanable.dirty.ratio` or `max.compaction.lag.ms` brings.)
    pub delete_horizon_ms: Option<i64>,
    /// A corrupt batch stopped cleaning this log (until a restart).
    pub failed: bool,
}

/// A pass the cleaner may run over one log.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The sealed segments to rewrite, from the log's first.
    pub segments: Vec<SealedSegment>,
    pub first_dirty: Offset,
    /// The end of the cleanable part.
    pub end: Offset,
    pub dirty_bytes: u64,
    pub clean_bytes: u64,
    /// Dirty ratio in millionths.
    pub dirty_ppm: u64,
    /// Due whatever the ratio (a compaction lag or delete horizon).
    pub forced: bool,
    /// The clock the pass runs by (Unix ms): what it compares delete
    /// horizons with, and adds `delete.retention.ms` to for new ones.
    pub now_ms: i64,
}

/// The pass due on `view`, if any.
pub fn plan(view: &CleanerView, state: &LogState, now_ms: i64) -> Option<Plan> {
    let config = &view.config;
    if !config.compact || state.failed {
        return None;
    }
    let newest_allowed = now_ms.saturating_sub(config.min_compaction_lag_ms);
    let segments: Vec<SealedSegment> = view
        .sealed
        .iter()
        .take_while(|s| s.next_offset <= view.last_stable && s.max_timestamp <= newest_allowed)
        .cloned()
        .collect();
    let end = segments.last()?.next_offset;
    let first_dirty = state.first_dirty.max(view.log_start).max(segments[0].base);
    let (mut clean_bytes, mut dirty_bytes) = (0u64, 0u64);
    let mut oldest_dirty_ms = None;
    for s in &segments {
        if s.next_offset <= first_dirty {
            clean_bytes += s.size;
        } else {
            dirty_bytes += s.size;
            oldest_dirty_ms.get_or_insert(s.max_timestamp);
        }
    }
    let total = (clean_bytes + dirty_bytes).max(1);
    let dirty_ppm = dirty_bytes.saturating_mul(1_000_000) / total;
    let lagging = oldest_dirty_ms
        .is_some_and(|t| t >= 0 && now_ms.saturating_sub(t) > config.max_compaction_lag_ms);
    let tombstones_due = state.delete_horizon_ms.is_some_and(|t| t <= now_ms);
    let by_ratio = dirty_bytes > 0 && dirty_ppm >= config.min_cleanable_dirty_ppm;
    if !(by_ratio || lagging || tombstones_due) {
        return None;
    }
    Some(Plan {
        segments,
        first_dirty,
        end,
        dirty_bytes,
        clean_bytes,
        dirty_ppm,
        forced: lagging || tombstones_due,
        now_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BrokerConfig;
    use std::collections::BTreeMap;
    use std::sync::Arc;

    fn view(overrides: &[(&str, &str)], bounds: &[(i64, i64, i64)], lso: i64) -> CleanerView {
        let mut o = BTreeMap::new();
        o.insert("cleanup.policy".to_string(), "compact".to_string());
        for (k, v) in overrides {
            o.insert(k.to_string(), v.to_string());
        }
        let file = Arc::new(tempfile::tempfile().unwrap());
        CleanerView {
            dir: std::path::PathBuf::from("/nonexistent"),
            config: Arc::new(BrokerConfig::default().topic_config(&o).unwrap()),
            log_start: Offset(0),
            last_stable: Offset(lso),
            sealed: bounds
                .iter()
                .map(|(base, next, ts)| SealedSegment {
                    base: Offset(*base),
                    next_offset: Offset(*next),
                    size: 100,
                    max_timestamp: *ts,
                    file: Arc::clone(&file),
                    aborted: Vec::new(),
                })
                .collect(),
        }
    }

    #[test]
    fn the_cleanable_part_stops_at_the_last_stable_offset_and_the_lag() {
        let segs = [(0, 10, 1_000), (10, 20, 2_000), (20, 30, 3_000)];
        let p = plan(&view(&[], &segs, 25), &LogState::default(), 10_000).unwrap();
        assert_eq!((p.segments.len(), p.end), (2, Offset(20)));
        let lag = [("min.compaction.lag.ms", "8500")];
        let p = plan(&view(&lag, &segs, 30), &LogState::default(), 10_000).unwrap();
        assert_eq!(p.end, Offset(10), "segments newer than the lag wait");
        assert!(plan(&view(&[], &segs, 5), &LogState::default(), 10_000).is_none());
        let delete = [("cleanup.policy", "delete")];
        assert!(plan(&view(&delete, &segs, 30), &LogState::default(), 10_000).is_none());
    }

    #[test]
    fn the_dirty_ratio_the_max_lag_and_tombstones_make_a_log_due() {
        let segs = [
            (0, 10, 1_000),
            (10, 20, 2_000),
            (20, 30, 3_000),
            (30, 40, 4_000),
        ];
        let mut state = LogState {
            first_dirty: Offset(30),
            ..LogState::default()
        };
        // 1 dirty segment of 4: 25 % is below the default 50 %.
        assert!(plan(&view(&[], &segs, 40), &state, 10_000).is_none());
        let low = [("min.cleanable.dirty.ratio", "0.25")];
        let p = plan(&view(&low, &segs, 40), &state, 10_000).unwrap();
        assert_eq!((p.dirty_ppm, p.forced), (250_000, false));
        let lag = [("max.compaction.lag.ms", "5000")];
        assert!(plan(&view(&lag, &segs, 40), &state, 10_000).unwrap().forced);
        state.delete_horizon_ms = Some(10_001);
        assert!(
            plan(&view(&[], &segs, 40), &state, 10_000).is_none(),
            "the horizon has not passed"
        );
        state.delete_horizon_ms = Some(10_000);
        assert!(plan(&view(&[], &segs, 40), &state, 10_000).unwrap().forced);
    }
}
