//! One cleaning pass over one log.
//!
//! 1. Headers of the cleanable segments are read to find each idempotent
//!    producer's last batch there (kept, empty if need be, so the
//!    producer's sequence and epoch survive a restart that rebuilds its
//!    state from the log).
//! 2. The offset map is filled from the dirty part, key by key in offset
//!    order, until the part ends or the map is full.
//! 3. The segments are rewritten in order into `.cleaned` files, each
//!    taking input segments until its output reaches `segment.bytes`,
//!    named after its first input's base. A
//!    record goes when the map holds a later offset for its key, or when
//!    it is a tombstone cleaned more than `delete.retention.ms` ago.
//!    Control batches (transaction markers) and transactional batches are
//!    copied unchanged, and their keys are not put in the map: a later
//!    record that may yet be aborted must not replace an earlier one.
//!    Each input segment's last batch is kept (empty if need be) so the
//!    segments still meet end to end and recovery never mistakes a
//!    cleaned gap for a lost tail; an empty batch no longer last goes at
//!    the next pass. Grouping by output size keeps runs of near-empty
//!    segments from forming, each of which would cost a consumer a fetch
//!    that returns no record.
//! 4. Each group is synced and swapped in (see `storage/cleaned.rs`).
//!
//! The pass yields to the shard's other tasks between batches and reads
//! no faster than `log.cleaner.io.max.bytes.per.second`.

use super::filter::{self, filter_batch, Filtered};
use super::offset_map::OffsetMap;
use super::plan::{LogState, Plan};
use super::throttle::Throttle;
use crate::shard::partition::{now_ms, Partition};
use crate::storage::cleaned::CleanedSegment;
use crate::storage::log::SealedSegment;
use crate::storage::segment::{BATCH_SIZE_MAX, SEGMENT_SIZE_MAX};
use crate::storage::StorageError;
use sluice_protocol::record_batch::{validate_stored_batch, BatchHeader, BATCH_HEADER_SIZE};
use sluice_protocol::Offset;
use std::collections::HashMap;
use std::os::unix::fs::FileExt;

/// Bytes of cleaned batches gathered before one write.
const WRITE_CHUNK_BYTES: usize = 1 << 20;

/// Why a pass stopped.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("corrupt batch in segment {base} at byte {position}: {reason}")]
    Corrupt {
        base: i64,
        position: u64,
        reason: String,
    },
    #[error(transparent)]
    Filter(#[from] filter::FilterError),
}

/// What a pass did.
#[derive(Debug, Default, Clone, Copy)]
pub struct PassStats {
    pub segments_before: usize,
    pub segments_after: usize,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub records_removed: u64,
    pub cleaned_upto: i64,
    /// The log changed under the pass (retention, truncation): it stopped.
    pub stale: bool,
}

/// Reads a sealed segment batch by batch.
struct Batches<'a> {
    segment: &'a SealedSegment,
    position: u64,
}

impl Batches<'_> {
    fn corrupt(&self, reason: impl Into<String>) -> PassError {
        PassError::Corrupt {
            base: self.segment.base.0,
            position: self.position,
            reason: reason.into(),
        }
    }

    /// The next batch's header alone.
    fn next_header(&mut self) -> Result<Option<BatchHeader>, PassError> {
        let Some(h) = self.peek_header()? else {
            return Ok(None);
        };
        self.position += h.total_size() as u64;
        Ok(Some(h))
    }

    fn peek_header(&self) -> Result<Option<BatchHeader>, PassError> {
        if self.position >= self.segment.size {
            return Ok(None);
        }
        let mut h = [0u8; BATCH_HEADER_SIZE];
        if self.position + BATCH_HEADER_SIZE as u64 > self.segment.size {
            return Err(self.corrupt("partial batch header"));
        }
        self.segment
            .file
            .read_exact_at(&mut h, self.position)
            .map_err(|e| self.corrupt(format!("read: {e}")))?;
        let h = BatchHeader::parse(&h).expect("whole header");
        let size = h.total_size();
        if !(BATCH_HEADER_SIZE..=BATCH_SIZE_MAX).contains(&size)
            || self.position + size as u64 > self.segment.size
        {
            return Err(self.corrupt(format!("impossible batch_length {}", h.batch_length)));
        }
        Ok(Some(h))
    }

    /// The next whole batch, checked (CRC and counts).
    fn next_batch(&mut self) -> Result<Option<(BatchHeader, Vec<u8>)>, PassError> {
        let Some(h) = self.peek_header()? else {
            return Ok(None);
        };
        let mut batch = vec![0u8; h.total_size()];
        self.segment
            .file
            .read_exact_at(&mut batch, self.position)
            .map_err(|e| self.corrupt(format!("read: {e}")))?;
        validate_stored_batch(&batch, 0).map_err(|e| self.corrupt(e.to_string()))?;
        self.position += batch.len() as u64;
        Ok(Some((h, batch)))
    }
}

fn batches(segment: &SealedSegment) -> Batches<'_> {
    Batches {
        segment,
        position: 0,
    }
}

/// Base offset of each producer's last batch in `segments`.
async fn last_batches(
    segments: &[SealedSegment],
    throttle: &mut Throttle,
) -> Result<HashMap<i64, Offset>, PassError> {
    let mut last = HashMap::new();
    for s in segments {
        let mut it = batches(s);
        while let Some(h) = it.next_header()? {
            if h.producer_id >= 0 && !h.is_control() {
                last.insert(h.producer_id, h.base_offset);
            }
            throttle.read(BATCH_HEADER_SIZE as u64).await;
        }
    }
    Ok(last)
}

/// Fills `map` from the dirty part `[first_dirty, end)`; returns the
/// offset below which every keyed record is in it (`end` unless the map
/// filled up).
async fn build_map(
    plan: &Plan,
    map: &mut OffsetMap,
    throttle: &mut Throttle,
) -> Result<Offset, PassError> {
    map.clear();
    for s in plan
        .segments
        .iter()
        .filter(|s| s.next_offset > plan.first_dirty)
    {
        let mut it = batches(s);
        while let Some((h, batch)) = it.next_batch()? {
            throttle.read(batch.len() as u64).await;
            if h.last_offset() < plan.first_dirty || h.is_control() || h.is_transactional() {
                continue;
            }
            let section = filter::records_section(&h, &batch)?;
            let mut full_at = None;
            filter::for_each_record(&h, &section, |r, _, _| {
                if full_at.is_some() || r.offset < plan.first_dirty {
                    return;
                }
                if let Some(key) = r.key {
                    if !map.put(key, r.offset) {
                        full_at = Some(r.offset);
                    }
                }
            })?;
            if let Some(at) = full_at {
                return Ok(at);
            }
        }
    }
    Ok(plan.end)
}

/// Whether a group whose output holds `bytes` and starts at `base` must
/// end before `next` joins it: its output reached `segment.bytes`, or
/// `next`'s offsets would pass the index's 32-bit relative offsets.
fn group_full(bytes: u64, base: Offset, next: &SealedSegment, segment_bytes: u64) -> bool {
    // Half the position limit: a group may pass segment.bytes by one
    // input segment's output, itself below the limit.
    bytes >= segment_bytes.min(SEGMENT_SIZE_MAX / 2)
        || next.next_offset.0 - base.0 > i64::from(i32::MAX)
}

/// What stays fixed through one pass.
struct PassContext<'a> {
    map: &'a OffsetMap,
    config: &'a crate::config::TopicConfig,
    last_of_producer: HashMap<i64, Offset>,
    now_ms: i64,
}

/// Filters one input segment's batches into `cleaned`.
async fn copy_segment(
    s: &SealedSegment,
    cleaned: &mut CleanedSegment,
    cx: &PassContext<'_>,
    state: &LogState,
    throttle: &mut Throttle,
    stats: &mut PassStats,
    oldest_tombstone: &mut Option<i64>,
) -> Result<(), PassError> {
    stats.bytes_before += s.size;
    for t in &s.aborted {
        cleaned.add_aborted(*t);
    }
    // Each input segment's last batch stays, empty if need be, so the
    // output ends where its inputs ended and segments meet end to end.
    let last_base = last_batch_base(s)?;
    let mut out = Vec::with_capacity(WRITE_CHUNK_BYTES);
    let mut it = batches(s);
    while let Some((h, batch)) = it.next_batch()? {
        throttle.read(batch.len() as u64).await;
        if h.is_control() || h.is_transactional() {
            out.extend_from_slice(&batch);
        } else {
            let keep_empty = Some(h.base_offset) == last_base
                || (h.producer_id >= 0
                    && cx.last_of_producer.get(&h.producer_id) == Some(&h.base_offset));
            let mut removed = 0u64;
            let filtered = filter_batch(&h, &batch, keep_empty, |r| {
                let keep = keeps(r, cx, state, oldest_tombstone);
                removed += u64::from(!keep);
                keep
            })?;
            stats.records_removed += removed;
            match filtered {
                Filtered::Unchanged => out.extend_from_slice(&batch),
                Filtered::Rebuilt(b) => out.extend_from_slice(&b),
                Filtered::Dropped => {}
            }
        }
        if out.len() >= WRITE_CHUNK_BYTES {
            cleaned.append(&out)?;
            out.clear();
        }
        glommio::yield_if_needed().await;
    }
    cleaned.append(&out)?;
    Ok(())
}

/// Syncs a group's output and swaps it in; false if the log changed.
async fn swap_group(
    partition: &Partition,
    mut cleaned: CleanedSegment,
    group: &[SealedSegment],
    stats: &mut PassStats,
) -> Result<bool, PassError> {
    cleaned.finish()?;
    partition.sync_cleaned(&cleaned).await?;
    let size = cleaned.size();
    if !partition.replace_cleaned(cleaned, group)? {
        stats.stale = true;
        return Ok(false);
    }
    stats.bytes_after += size;
    stats.segments_after += 1;
    Ok(true)
}

/// Runs one pass of `plan` over `partition`.
pub async fn run(
    partition: &Partition,
    plan: &Plan,
    state: &mut LogState,
    map: &mut OffsetMap,
    throttle: &mut Throttle,
) -> Result<PassStats, PassError> {
    let now = now_ms();
    let last_of_producer = last_batches(&plan.segments, throttle).await?;
    let cleaned_upto = build_map(plan, map, throttle).await?;
    let view = partition.cleaner_view();
    let cx = PassContext {
        map,
        config: &view.config,
        last_of_producer,
        now_ms: now,
    };
    let mut stats = PassStats {
        segments_before: plan.segments.len(),
        cleaned_upto: cleaned_upto.0,
        ..PassStats::default()
    };
    let mut oldest_tombstone: Option<i64> = None;
    let mut group_start = 0;
    let mut cleaned: Option<CleanedSegment> = None;
    for (i, s) in plan.segments.iter().enumerate() {
        if let Some(c) = cleaned.take() {
            if group_full(c.size(), c.base(), s, cx.config.segment_bytes) {
                if !swap_group(partition, c, &plan.segments[group_start..i], &mut stats).await? {
                    return Ok(stats);
                }
                group_start = i;
            } else {
                cleaned = Some(c);
            }
        }
        let c = match cleaned.as_mut() {
            Some(c) => c,
            None => cleaned.insert(CleanedSegment::create(&view.dir, s.base)?),
        };
        let copied = copy_segment(
            s,
            c,
            &cx,
            state,
            throttle,
            &mut stats,
            &mut oldest_tombstone,
        )
        .await;
        if let Err(e) = copied {
            if let Some(c) = cleaned.take() {
                c.abandon();
            }
            return Err(e);
        }
    }
    if let Some(c) = cleaned {
        if !swap_group(partition, c, &plan.segments[group_start..], &mut stats).await? {
            return Ok(stats);
        }
    }
    state.first_dirty = cleaned_upto;
    state.record_pass(cleaned_upto, now);
    state.oldest_tombstone_ms = oldest_tombstone;
    Ok(stats)
}

/// Base offset of a segment's last batch.
fn last_batch_base(s: &SealedSegment) -> Result<Option<Offset>, PassError> {
    let mut it = batches(s);
    let mut last = None;
    while let Some(h) = it.next_header()? {
        last = Some(h.base_offset);
    }
    Ok(last)
}

/// Whether a record of a plain batch stays, noting when the oldest kept
/// tombstone was first cleaned.
fn keeps(
    r: filter::RecordView<'_>,
    cx: &PassContext<'_>,
    state: &LogState,
    oldest_tombstone: &mut Option<i64>,
) -> bool {
    let Some(key) = r.key else {
        return true;
    };
    if cx.map.get(key).is_some_and(|latest| latest > r.offset) {
        return false;
    }
    if !r.tombstone {
        return true;
    }
    match state.first_cleaned_ms(r.offset) {
        Some(at) if cx.now_ms.saturating_sub(at) >= cx.config.delete_retention_ms => false,
        first => {
            let at = first.unwrap_or(cx.now_ms);
            *oldest_tombstone = Some(oldest_tombstone.map_or(at, |o: i64| o.min(at)));
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn seg(base: i64, next: i64, size: u64) -> SealedSegment {
        SealedSegment {
            base: Offset(base),
            next_offset: Offset(next),
            size,
            max_timestamp: 0,
            file: Arc::new(tempfile::tempfile().unwrap()),
            aborted: Vec::new(),
        }
    }

    #[test]
    fn a_group_ends_at_segment_bytes_of_output_or_the_offset_span() {
        let next = seg(100, 200, 50);
        assert!(!group_full(99, Offset(0), &next, 100));
        assert!(group_full(100, Offset(0), &next, 100));
        let far = seg(100, i64::from(i32::MAX) + 1, 50);
        assert!(group_full(0, Offset(0), &far, 100));
        assert!(!group_full(0, Offset(1), &far, 100));
    }
}
