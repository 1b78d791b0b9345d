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
//! newest record is older than `max.compaction.lag.ms`, or when a
//! tombstone it keeps has passed `delete.retention.ms`.

use crate::shard::partition::CleanerView;
use crate::storage::log::SealedSegment;
use sluice_protocol::Offset;

/// Passes remembered per log for tombstone ages; older ones merge.
pub const PASSES_MAX: usize = 64;
/// Markers whose wait is timed per log (16 bytes each). Past this many,
/// the later ones start their wait at a later pass: they stay longer,
/// and are timed once the earlier ones have gone.
pub const MARKERS_TIMED_MAX: usize = 1 << 16;

/// What the cleaner remembers of one log between passes (in memory: a
/// restart makes the whole log dirty again, and restarts the tombstones'
/// clocks, which only keeps them longer).
#[derive(Clone, Debug, Default)]
pub struct LogState {
    /// Where the dirty part starts.
    pub first_dirty: Offset,
    /// Each pass: the offset it cleaned below and when, both rising.
    passes: Vec<(Offset, i64)>,
    /// When the earliest-cleaned tombstone the log keeps was first
    /// cleaned, or the earliest transaction marker kept was first found
    /// without its transaction's data: it may go `delete.retention.ms`
    /// after (read at each plan, so a changed setting applies at once).
    pub oldest_tombstone_ms: Option<i64>,
    /// Markers kept only for `delete.retention.ms`, by offset, with when
    /// a pass first found their transaction's data gone.
    markers: Vec<(Offset, i64)>,
    /// A corrupt batch stopped cleaning this log (until a restart).
    pub failed: bool,
}

impl LogState {
    /// When the record at `offset` was first part of a cleaned log.
    pub fn first_cleaned_ms(&self, offset: Offset) -> Option<i64> {
        let i = self.passes.partition_point(|(upto, _)| *upto <= offset);
        self.passes.get(i).map(|(_, at)| *at)
    }

    /// When a pass first found the marker at `offset` without data.
    pub fn marker_since(&self, offset: Offset) -> Option<i64> {
        let i = self.markers.partition_point(|(o, _)| *o < offset);
        self.markers
            .get(i)
            .filter(|(o, _)| *o == offset)
            .map(|(_, at)| *at)
    }

    /// The markers a pass kept for their wait, in offset order.
    pub fn set_markers(&mut self, mut markers: Vec<(Offset, i64)>) {
        assert!(
            markers.windows(2).all(|w| w[0].0 < w[1].0),
            "in offset order"
        );
        markers.truncate(MARKERS_TIMED_MAX);
        self.markers = markers;
    }

    /// A pass cleaned the log below `upto` at `now_ms`.
    pub fn record_pass(&mut self, upto: Offset, now_ms: i64) {
        if self.passes.last().is_some_and(|(u, _)| *u >= upto) {
            return;
        }
        if self.passes.len() == PASSES_MAX {
            // Merged into the next pass: the records it covered count as
            // cleaned later than they were, so their tombstones stay longer.
            self.passes.remove(0);
        }
        self.passes.push((upto, now_ms));
    }
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
    /// Due whatever the ratio (a compaction lag or tombstone deadline).
    pub forced: bool,
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
    let tombstones_due = state
        .oldest_tombstone_ms
        .is_some_and(|t| t.saturating_add(config.delete_retention_ms) <= now_ms);
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
        state.oldest_tombstone_ms = Some(9_000);
        assert!(
            plan(&view(&[], &segs, 40), &state, 10_000).is_none(),
            "kept a day"
        );
        let short = [("delete.retention.ms", "1000")];
        assert!(
            plan(&view(&short, &segs, 40), &state, 10_000)
                .unwrap()
                .forced
        );
    }

    #[test]
    fn a_markers_wait_is_found_by_its_offset_and_bounded() {
        let mut s = LogState::default();
        s.set_markers(vec![(Offset(5), 100), (Offset(9), 200)]);
        assert_eq!(s.marker_since(Offset(9)), Some(200));
        assert_eq!(s.marker_since(Offset(6)), None);
        let many = (0..MARKERS_TIMED_MAX as i64 + 5)
            .map(|i| (Offset(i), i))
            .collect();
        s.set_markers(many);
        assert_eq!(s.markers.len(), MARKERS_TIMED_MAX);
        assert_eq!(s.marker_since(Offset(MARKERS_TIMED_MAX as i64)), None);
    }

    #[test]
    fn a_record_is_first_cleaned_by_the_first_pass_past_it() {
        let mut s = LogState::default();
        s.record_pass(Offset(100), 1_000);
        s.record_pass(Offset(300), 2_000);
        s.record_pass(Offset(300), 3_000);
        assert_eq!(s.first_cleaned_ms(Offset(0)), Some(1_000));
        assert_eq!(s.first_cleaned_ms(Offset(100)), Some(2_000));
        assert_eq!(s.first_cleaned_ms(Offset(300)), None);
        for i in 0..PASSES_MAX as i64 {
            s.record_pass(Offset(400 + i), 4_000 + i);
        }
        assert_eq!(s.passes.len(), PASSES_MAX);
        assert_eq!(s.first_cleaned_ms(Offset(0)), Some(4_000), "merged later");
    }
}
