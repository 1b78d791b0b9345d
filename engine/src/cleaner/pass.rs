//! One cleaning pass over one log.
//!
//! 1. Headers of the cleanable segments are read to find each idempotent
//!    producer's last batch there (kept, empty if need be, so the
//!    producer's sequence and epoch survive a restart that rebuilds its
//!    state from the log).
//! 2. The offset map is filled from the dirty part, key by key in offset
//!    order, until the part ends or the map is full.
//! 3. The segments are rewritten in groups that fit in `segment.bytes`,
//!    each group into one `.cleaned` file with the first one's base. A
//!    record goes when the map holds a later offset for its key, or when
//!    it is a tombstone cleaned more than `delete.retention.ms` ago.
//!    Control batches (transaction markers) and transactional batches are
//!    copied unchanged, and their keys are not put in the map: a later
//!    record that may yet be aborted must not replace an earlier one.
//!    Each group's last batch is kept (empty if need be) so the segments
//!    still meet end to end and recovery never mistakes a cleaned gap for
//!    a lost tail.
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

/// Splits the segments into runs that each fit one segment.
fn groups(segments: &[SealedSegment], segment_bytes: u64) -> Vec<&[SealedSegment]> {
    let limit = segment_bytes.min(SEGMENT_SIZE_MAX);
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0u64;
    for (i, s) in segments.iter().enumerate() {
        let span = s.next_offset.0 - segments[start].base.0;
        if i > start && (bytes + s.size > limit || span > i64::from(i32::MAX)) {
            out.push(&segments[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += s.size;
    }
    if start < segments.len() {
        out.push(&segments[start..]);
    }
    out
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
    let config = partition.cleaner_view().config;
    let mut stats = PassStats {
        segments_before: plan.segments.len(),
        cleaned_upto: cleaned_upto.0,
        ..PassStats::default()
    };
    let mut oldest_tombstone: Option<i64> = None;
    let dir = partition.cleaner_view().dir;
    for group in groups(&plan.segments, config.segment_bytes) {
        let mut cleaned = CleanedSegment::create(&dir, group[0].base)?;
        let mut out = Vec::with_capacity(WRITE_CHUNK_BYTES);
        let last_base = match group.last() {
            Some(s) => last_batch_base(s)?,
            None => None,
        };
        for s in group {
            stats.bytes_before += s.size;
            for t in &s.aborted {
                cleaned.add_aborted(*t);
            }
            let mut it = batches(s);
            while let Some((h, batch)) = it.next_batch()? {
                throttle.read(batch.len() as u64).await;
                if h.is_control() || h.is_transactional() {
                    out.extend_from_slice(&batch);
                } else {
                    let keep_empty = Some(h.base_offset) == last_base
                        || (h.producer_id >= 0
                            && last_of_producer.get(&h.producer_id) == Some(&h.base_offset));
                    let mut removed = 0u64;
                    let filtered = filter_batch(&h, &batch, keep_empty, |r| {
                        let keep = keeps(r, map, state, &config, now, &mut oldest_tombstone);
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
        }
        cleaned.append(&out)?;
        cleaned.finish()?;
        partition.sync_cleaned(&cleaned).await?;
        let size = cleaned.size();
        if !partition.replace_cleaned(cleaned, group)? {
            stats.stale = true;
            return Ok(stats);
        }
        stats.bytes_after += size;
        stats.segments_after += 1;
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
    map: &OffsetMap,
    state: &LogState,
    config: &crate::config::TopicConfig,
    now_ms: i64,
    oldest_tombstone: &mut Option<i64>,
) -> bool {
    let Some(key) = r.key else {
        return true;
    };
    if map.get(key).is_some_and(|latest| latest > r.offset) {
        return false;
    }
    if !r.tombstone {
        return true;
    }
    match state.first_cleaned_ms(r.offset) {
        Some(at) if now_ms.saturating_sub(at) >= config.delete_retention_ms => false,
        first => {
            let at = first.unwrap_or(now_ms);
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
    fn groups_fit_one_segment_each() {
        let s = [
            seg(0, 10, 60),
            seg(10, 20, 50),
            seg(20, 30, 30),
            seg(30, 40, 100),
        ];
        let g = groups(&s, 100);
        let bases: Vec<Vec<i64>> = g
            .iter()
            .map(|g| g.iter().map(|s| s.base.0).collect())
            .collect();
        assert_eq!(bases, vec![vec![0], vec![10, 20], vec![30]]);
        assert_eq!(
            groups(&s, 10).len(),
            4,
            "an oversized segment is its own group"
        );
    }
}
