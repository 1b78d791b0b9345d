//! One cleaning pass over one log.
//!
//! 1. Headers of the cleanable segments are read to find each idempotent
//!    producer's last data batch and last marker there (kept, a batch
//!    empty if need be, so the producer's sequence and epoch survive a
//!    restart that rebuilds its state from the log), and the aborted
//!    transactions overlapping them are collected from the transaction
//!    indexes.
//! 2. The offset map is filled from the dirty part, key by key in offset
//!    order, until the part ends or the map is full; records of aborted
//!    transactions and markers are left out. A full map ends the pass at
//!    the segment holding the first key it refused: the dirty part then
//!    starts there, for the next pass.
//! 3. The segments up to there are rewritten in order into `.cleaned` files, each
//!    taking input segments until its output reaches `segment.bytes`,
//!    named after its first input's base. A
//!    record goes when the map holds a later offset for its key, or when
//!    it is a tombstone whose batch's delete horizon has passed, or it
//!    belongs to an aborted transaction. Markers follow the rules of
//!    [`super::txn`]. A batch kept for a tombstone, or a marker kept only
//!    for its wait, that has no delete horizon yet gets one: this pass's
//!    time plus `delete.retention.ms`, written into the batch (Kafka's
//!    KIP-534), so the wait survives restarts. Each input segment's
//!    last batch is kept (empty if need be) so the segments still meet
//!    end to end and recovery never mistakes a
//!    cleaned gap for a lost tail; an empty batch no longer last goes at
//!    the next pass. Grouping by output size keeps runs of near-empty
//!    segments from forming, each of which would cost a consumer a fetch
//!    that returns no record.
//! 4. Each group is synced and swapped in (see `storage/cleaned.rs`).
//!
//! Steps 1 to 3 and the syncs run on a cleaner thread ([`crate::idle`]),
//! one job for the map and one per output group; the shard plans the
//! pass, and swaps each group in between the jobs, the log being its
//! alone. Reads go no faster than `log.cleaner.io.max.bytes.per.second`.

use super::filter::{self, filter_batch, Filtered};
use super::offset_map::OffsetMap;
use super::plan::{LogState, Plan};
use super::throttle::Throttle;
use super::txn::{Aborted, LastBatches, MarkerFate, Open};
use crate::config::TopicConfig;
use crate::idle::{Cancel, Workers};
use crate::shard::partition::Partition;
use crate::storage::cleaned::CleanedSegment;
use crate::storage::log::SealedSegment;
use crate::storage::segment::{BATCH_SIZE_MAX, SEGMENT_SIZE_MAX};
use crate::storage::StorageError;
use sluice_protocol::record_batch::{validate_stored_batch, BatchHeader, BATCH_HEADER_SIZE};
use sluice_protocol::Offset;
use std::borrow::Cow;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

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
    #[error("the broker is stopping")]
    Stopped,
    #[error("the cleaner thread failed (a panic, logged above)")]
    Lost,
}

/// What a cleaner keeps from pass to pass and lends each job: its offset
/// map's memory and its read pacing.
#[derive(Debug)]
pub struct Work {
    pub map: OffsetMap,
    pub throttle: Throttle,
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

/// Reads a sealed segment batch by batch; gives up once its job is
/// cancelled.
struct Batches<'a> {
    segment: &'a SealedSegment,
    position: u64,
    cancel: &'a Cancel,
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
        if self.cancel.cancelled() {
            return Err(PassError::Stopped);
        }
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

fn batches<'a>(segment: &'a SealedSegment, cancel: &'a Cancel) -> Batches<'a> {
    Batches {
        segment,
        position: 0,
        cancel,
    }
}

/// Each producer's last data batch and last marker in `segments`.
fn last_batches(
    segments: &[SealedSegment],
    throttle: &mut Throttle,
    cancel: &Cancel,
) -> Result<LastBatches, PassError> {
    let mut last = LastBatches::default();
    for s in segments {
        let mut it = batches(s, cancel);
        while let Some(h) = it.next_header()? {
            last.read(&h);
            throttle.read(BATCH_HEADER_SIZE as u64);
        }
    }
    Ok(last)
}

/// Fills `map` from the dirty part `[first_dirty, end)`; returns the
/// offset below which every keyed record is in it (`end` unless the map
/// filled up).
fn build_map(
    plan: &Plan,
    aborted: &Aborted,
    map: &mut OffsetMap,
    throttle: &mut Throttle,
    cancel: &Cancel,
) -> Result<Offset, PassError> {
    map.clear();
    for s in plan
        .segments
        .iter()
        .filter(|s| s.next_offset > plan.first_dirty)
    {
        let mut it = batches(s, cancel);
        while let Some((h, batch)) = it.next_batch()? {
            throttle.read(batch.len() as u64);
            if h.last_offset() < plan.first_dirty || h.is_control() || aborted.holds(&h) {
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

/// What stays fixed through one pass, shared by its jobs.
#[derive(Debug)]
struct Fixed {
    plan: Plan,
    config: Arc<TopicConfig>,
    dir: PathBuf,
    aborted: Aborted,
    last_of_producer: LastBatches,
    /// The oldest producer snapshot's offset: recovery may start from any
    /// snapshot there is, so a transaction marker at or past it stays (a
    /// snapshot taken while its transaction was open would otherwise
    /// never see it end).
    markers_removable_below: Offset,
}

/// What a copy reads, for one job.
struct PassContext<'a> {
    map: &'a OffsetMap,
    config: &'a TopicConfig,
    last_of_producer: &'a LastBatches,
    aborted: &'a Aborted,
    markers_removable_below: Offset,
    now_ms: i64,
}

impl PassContext<'_> {
    /// The delete horizon this pass gives a batch it keeps for a
    /// tombstone or a marker and that has none yet.
    fn new_horizon_ms(&self) -> i64 {
        self.now_ms.saturating_add(self.config.delete_retention_ms)
    }

    /// Whether a batch's delete horizon has passed.
    fn passed(&self, horizon_ms: Option<i64>) -> bool {
        horizon_ms.is_some_and(|h| self.now_ms >= h)
    }
}

/// What a pass gathers as it copies.
#[derive(Default)]
struct Progress {
    stats: PassStats,
    /// The earliest delete horizon still to pass among the batches kept
    /// for tombstones or markers.
    next_horizon: Option<i64>,
    open: Open,
}

impl Progress {
    fn horizon(&mut self, at: i64) {
        self.next_horizon = Some(self.next_horizon.map_or(at, |o| o.min(at)));
    }
}

/// Filters one input segment's batches into `cleaned`.
fn copy_segment(
    s: &SealedSegment,
    cleaned: &mut CleanedSegment,
    cx: &PassContext<'_>,
    throttle: &mut Throttle,
    progress: &mut Progress,
    cancel: &Cancel,
) -> Result<(), PassError> {
    progress.stats.bytes_before += s.size;
    // Each input segment's last batch stays, empty if need be, so the
    // output ends where its inputs ended and segments meet end to end.
    let last_base = last_batch_base(s, cancel)?;
    let mut out = Vec::with_capacity(WRITE_CHUNK_BYTES);
    let mut it = batches(s, cancel);
    while let Some((h, batch)) = it.next_batch()? {
        throttle.read(batch.len() as u64);
        let last_of_segment = Some(h.base_offset) == last_base;
        if h.is_control() {
            if let Some(b) = copy_marker(&h, &batch, last_of_segment, cx, cleaned, progress)? {
                out.extend_from_slice(&b);
            }
        } else {
            let keep_empty = last_of_segment || cx.last_of_producer.is_last(&h);
            let aborted = cx.aborted.holds(&h);
            let horizon = h.delete_horizon_ms();
            let (mut removed, mut tombstones) = (0u64, false);
            let filtered = filter_batch(&h, &batch, keep_empty, cx.new_horizon_ms(), |r| {
                let keep = !aborted && keeps(r, cx, horizon);
                removed += u64::from(!keep);
                tombstones |= keep && r.tombstone;
                keep
            })?;
            progress.stats.records_removed += removed;
            if tombstones {
                progress.horizon(horizon.unwrap_or_else(|| cx.new_horizon_ms()));
            }
            if h.is_transactional() && filtered != Filtered::Dropped {
                progress.open.data_kept(h.producer_id);
            }
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
    }
    cleaned.append(&out)?;
    Ok(())
}

/// The control batch to write, if it stays (see [`super::txn`]); an
/// ABORT marker kept for its data takes its index entry into `cleaned`,
/// and one kept only for its wait gets a delete horizon if it has none.
fn copy_marker<'b>(
    h: &BatchHeader,
    batch: &'b [u8],
    last_of_segment: bool,
    cx: &PassContext<'_>,
    cleaned: &mut CleanedSegment,
    progress: &mut Progress,
) -> Result<Option<Cow<'b, [u8]>>, PassError> {
    let horizon = h.delete_horizon_ms();
    // A marker recovery may still need stays whatever its horizon: a
    // later pass, once snapshots have moved past it, removes it.
    let last = last_of_segment
        || cx.last_of_producer.is_last(h)
        || h.base_offset >= cx.markers_removable_below;
    match progress
        .open
        .marker(h, batch, cx.aborted, last, || cx.passed(horizon))
    {
        MarkerFate::Needed(entry) => {
            if let Some(e) = entry {
                cleaned.add_aborted(e);
            }
            Ok(Some(Cow::Borrowed(batch)))
        }
        MarkerFate::Retained => match horizon {
            None => {
                let at = cx.new_horizon_ms();
                progress.horizon(at);
                Ok(Some(Cow::Owned(filter::stamp_horizon(h, batch, at)?)))
            }
            Some(at) => {
                // One kept past its horizon (a producer's last) needs no
                // pass of its own.
                if !cx.passed(horizon) {
                    progress.horizon(at);
                }
                Ok(Some(Cow::Borrowed(batch)))
            }
        },
        MarkerFate::Removed => {
            progress.stats.records_removed += 1;
            Ok(None)
        }
    }
}

/// Swaps a group's synced output in; false if the log changed.
async fn swap_group(
    partition: &Partition,
    cleaned: CleanedSegment,
    group: &[SealedSegment],
    stats: &mut PassStats,
    workers: &Workers,
) -> Result<bool, PassError> {
    let size = cleaned.size();
    if !partition.replace_cleaned(cleaned, group, workers).await? {
        stats.stale = true;
        return Ok(false);
    }
    stats.bytes_after += size;
    stats.segments_after += 1;
    Ok(true)
}

/// Step 1 and 2, a job: the producers' last batches, the oldest producer
/// snapshot, and the map. Returns the pass's fixed part and the offset
/// the map reaches.
fn prepare(
    plan: Plan,
    config: Arc<TopicConfig>,
    dir: PathBuf,
    aborted: Aborted,
    work: &mut Work,
    cancel: &Cancel,
) -> Result<(Fixed, Offset), PassError> {
    let last_of_producer = last_batches(&plan.segments, &mut work.throttle, cancel)?;
    let snapshots = crate::storage::snapshot_file::list(&dir)?;
    let markers_removable_below = snapshots.first().copied().unwrap_or(Offset(i64::MAX));
    let cleaned_upto = build_map(&plan, &aborted, &mut work.map, &mut work.throttle, cancel)?;
    let fixed = Fixed {
        plan,
        config,
        dir,
        aborted,
        last_of_producer,
        markers_removable_below,
    };
    Ok((fixed, cleaned_upto))
}

/// Step 3 for one group, a job: copies `segments[start..]` into a
/// cleaned segment until its output is full, then syncs it. Returns the
/// output and the index of the first segment it did not take.
fn copy_group(
    fixed: &Fixed,
    segments: &[SealedSegment],
    start: usize,
    work: &mut Work,
    progress: &mut Progress,
    cancel: &Cancel,
) -> Result<(CleanedSegment, usize), PassError> {
    let cx = PassContext {
        map: &work.map,
        config: &fixed.config,
        last_of_producer: &fixed.last_of_producer,
        aborted: &fixed.aborted,
        markers_removable_below: fixed.markers_removable_below,
        now_ms: fixed.plan.now_ms,
    };
    let mut cleaned = CleanedSegment::create(&fixed.dir, segments[start].base)?;
    let mut end = start;
    let copied = loop {
        let Some(s) = segments.get(end) else {
            break Ok(());
        };
        if end > start && group_full(cleaned.size(), cleaned.base(), s, cx.config.segment_bytes) {
            break Ok(());
        }
        if let Err(e) = copy_segment(s, &mut cleaned, &cx, &mut work.throttle, progress, cancel) {
            break Err(e);
        }
        end += 1;
    };
    match copied.and_then(|()| Ok(cleaned.finish_and_sync()?)) {
        Ok(()) => Ok((cleaned, end)),
        Err(e) => {
            cleaned.abandon();
            Err(e)
        }
    }
}

/// Runs a job on a cleaner thread with the cleaner's `work`, which it
/// takes and gives back (a job that panicked loses it: the next pass
/// starts a new one).
async fn on_worker<R: Send + 'static>(
    workers: &Workers,
    work: &mut Option<Work>,
    job: impl FnOnce(&mut Work, &Cancel) -> R + Send + 'static,
) -> Result<R, PassError> {
    let mut lent = work.take().ok_or(PassError::Lost)?;
    let (lent, answer) = workers
        .run(move |cancel| {
            let answer = job(&mut lent, cancel);
            (lent, answer)
        })
        .await
        .ok_or(PassError::Lost)?;
    *work = Some(lent);
    Ok(answer)
}

/// Runs one pass of `plan` over `partition`: the reading and writing on
/// `workers`, the swaps here.
pub async fn run(
    partition: &Partition,
    plan: &Plan,
    state: &mut LogState,
    work: &mut Option<Work>,
    workers: &Workers,
) -> Result<PassStats, PassError> {
    let first = plan.segments.first().expect("a plan has segments").base;
    let aborted = Aborted::new(partition.aborted_in(first, plan.end));
    let view = partition.cleaner_view();
    let (plan_copy, config, dir) = (plan.clone(), Arc::clone(&view.config), view.dir.clone());
    let (fixed, cleaned_upto) = on_worker(workers, work, move |w, cancel| {
        prepare(plan_copy, config, dir, aborted, w, cancel)
    })
    .await??;
    assert!(
        cleaned_upto > plan.first_dirty || cleaned_upto == plan.end,
        "a pass moves the dirty part on: {cleaned_upto} from {}",
        plan.first_dirty
    );
    // A map that filled up ends the pass at the segment where it did, as
    // in Kafka: the segments past it hold no record the map can supersede
    // and wait, untouched, for the next pass.
    let copied = plan.segments.partition_point(|s| s.base < cleaned_upto);
    let fixed = Arc::new(fixed);
    let mut progress = Progress {
        stats: PassStats {
            segments_before: copied,
            cleaned_upto: cleaned_upto.0,
            ..PassStats::default()
        },
        ..Progress::default()
    };
    let mut start = 0;
    while start < copied {
        let (f, mut p) = (Arc::clone(&fixed), std::mem::take(&mut progress));
        let (p, group) = on_worker(workers, work, move |w, cancel| {
            let segments = &f.plan.segments[..copied];
            let group = copy_group(&f, segments, start, w, &mut p, cancel);
            (p, group)
        })
        .await?;
        progress = p;
        let (cleaned, end) = group?;
        let group = &plan.segments[start..end];
        if !swap_group(partition, cleaned, group, &mut progress.stats, workers).await? {
            return Ok(progress.stats);
        }
        start = end;
    }
    state.first_dirty = cleaned_upto;
    state.delete_horizon_ms = progress.next_horizon;
    Ok(progress.stats)
}

/// Base offset of a segment's last batch.
fn last_batch_base(s: &SealedSegment, cancel: &Cancel) -> Result<Option<Offset>, PassError> {
    let mut it = batches(s, cancel);
    let mut last = None;
    while let Some(h) = it.next_header()? {
        last = Some(h.base_offset);
    }
    Ok(last)
}

/// Whether a record of a plain batch stays (Kafka's rule): the latest
/// of its key, and if a tombstone, its batch's delete horizon (`horizon`)
/// not passed or not yet set.
fn keeps(r: filter::RecordView<'_>, cx: &PassContext<'_>, horizon: Option<i64>) -> bool {
    let Some(key) = r.key else {
        return true;
    };
    if cx.map.get(key).is_some_and(|latest| latest > r.offset) {
        return false;
    }
    !r.tombstone || !cx.passed(horizon)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BrokerConfig;
    use crate::shard::partition::now_ms;
    use crate::storage::log::PartitionLog;
    use sluice_protocol::record_batch::{decode_records, validate_record_set, BatchBuilder};
    use std::collections::BTreeMap;
    use std::sync::Arc;

    /// A compacted partition this broker leads alone.
    /// Runs a test's body on a glommio executor of its own.
    fn on_executor<T>(body: impl std::future::Future<Output = T>) -> T {
        glommio::LocalExecutorBuilder::default()
            .make()
            .unwrap()
            .run(body)
    }

    fn leader(dir: &std::path::Path, delete_retention_ms: &str) -> Partition {
        let o = BTreeMap::from([
            ("cleanup.policy".to_string(), "compact".to_string()),
            ("segment.bytes".to_string(), "1000".to_string()),
            (
                "delete.retention.ms".to_string(),
                delete_retention_ms.to_string(),
            ),
        ]);
        let config = Arc::new(BrokerConfig::default().topic_config(&o).unwrap());
        let log = PartitionLog::create(&dir.join("t-0"), config, uuid::Uuid::new_v4()).unwrap();
        Partition::led_alone(log)
    }

    /// Appends one batch of `records` (transactional for a producer id).
    async fn append(p: &Partition, producer: Option<(i64, i32)>, records: &[(&str, &str)]) {
        let mut b = BatchBuilder::new(1_000);
        if let Some((id, sequence)) = producer {
            b = b.producer(id, 0, sequence).transactional();
        }
        for (k, v) in records {
            b.push(1_000, Some(k.as_bytes()), Some(v.as_bytes()), &[]);
        }
        let b = b.finish();
        p.append(&b, &validate_record_set(&b, 1 << 20).unwrap())
            .await
            .unwrap();
    }

    /// (offset, key, value) of the data records, and the markers' offsets.
    fn contents(p: &Partition) -> (Vec<(i64, String, String)>, Vec<i64>) {
        let (mut records, mut markers) = (Vec::new(), Vec::new());
        p.for_each_batch(Offset(0), |h, batch| {
            if h.is_control() {
                markers.push(h.base_offset.0);
                return;
            }
            let section = &batch[BATCH_HEADER_SIZE..];
            for r in decode_records(section, h.records_count as usize).unwrap() {
                let text = |b: Option<&[u8]>| String::from_utf8(b.unwrap().to_vec()).unwrap();
                let offset = h.base_offset.0 + i64::from(r.offset_delta);
                records.push((offset, text(r.key), text(r.value)));
            }
        })
        .unwrap();
        (records, markers)
    }

    /// The delete horizon of each batch, by base offset.
    fn horizons(p: &Partition) -> BTreeMap<i64, Option<i64>> {
        let mut out = BTreeMap::new();
        p.for_each_batch(Offset(0), |h, _| {
            out.insert(h.base_offset.0, h.delete_horizon_ms());
        })
        .unwrap();
        out
    }

    /// Transactions by Kafka's rules: a committed one compacted like any
    /// data, an aborted one's records gone and never displacing an earlier
    /// committed value, its ABORT marker gone after `delete.retention.ms`
    /// (kept and timed within it) and its index entry at once, a
    /// committed marker kept while its data is, an open transaction and
    /// everything after it untouched.
    #[test]
    fn transactions_follow_kafkas_rules_in_a_pass() {
        for retention in ["0", "86400000"] {
            let dir = tempfile::tempdir().unwrap();
            let p = leader(dir.path(), retention);
            on_executor(async {
                append(&p, Some((1, 0)), &[("k0", "a0"), ("k1", "a1")]).await;
                p.append_marker(1, 0, true, 0).unwrap(); // 2
                append(&p, Some((1, 2)), &[("k0", "b0")]).await; // 3
                p.append_marker(1, 0, false, 0).unwrap(); // 4
                append(&p, Some((1, 3)), &[("k1", "d1")]).await; // 5
                p.append_marker(1, 0, true, 0).unwrap(); // 6
                let filler = |i: usize| (format!("f{i}"), format!("{i:0>60}"));
                for i in 0..20 {
                    let (k, v) = filler(i);
                    append(&p, None, &[(&k, &v)]).await;
                }
                let open_at = p.log_end().0;
                append(&p, Some((2, 0)), &[("k0", "open")]).await;
                for i in 20..80 {
                    let (k, v) = filler(i);
                    append(&p, None, &[(&k, &v)]).await;
                }
                assert_eq!(p.last_stable_offset(), Offset(open_at));
                assert_eq!(p.aborted_in(Offset(0), Offset(open_at)).len(), 1);
                let view = p.cleaner_view();
                assert!(
                    view.sealed[0].next_offset.0 > 7,
                    "the transactions share a segment"
                );
                let mut state = LogState::default();
                let plan = super::super::plan::plan(&view, &state, now_ms()).unwrap();
                assert!(plan.end.0 <= open_at);
                let mut map = work(OffsetMap::with_memory(1 << 20));
                run(
                    &p,
                    &plan,
                    &mut state,
                    &mut map,
                    &Workers::new("test", 1).unwrap(),
                )
                .await
                .unwrap();
                let (records, markers) = contents(&p);
                let mine: Vec<_> = records
                    .iter()
                    .filter(|(_, k, _)| k.starts_with('k'))
                    .map(|(o, k, v)| (*o, k.as_str(), v.as_str()))
                    .collect();
                assert_eq!(
                    mine,
                    vec![(0, "k0", "a0"), (5, "k1", "d1"), (open_at, "k0", "open")],
                    "retention {retention}"
                );
                assert_eq!(records.len(), 3 + 80, "every filler stays");
                // The ABORT marker at 4 lost its data: it stays with a
                // delete horizon, this pass's time plus the retention.
                assert_eq!(markers, vec![2, 4, 6], "retention {retention}");
                let horizon = horizons(&p)[&4];
                assert_eq!(
                    horizon,
                    Some(plan.now_ms + retention.parse::<i64>().unwrap())
                );
                assert_eq!(state.delete_horizon_ms, horizon);
                assert_eq!(horizons(&p)[&2], None, "needed for its data, not timed");
                if retention == "0" {
                    // Its horizon has passed: the next pass is due
                    // and removes it.
                    one_pass(&p, &mut state, &mut map).await;
                    assert_eq!(contents(&p).1, vec![2, 6]);
                    assert_eq!(state.delete_horizon_ms, None);
                }
                assert!(
                    p.aborted_in(Offset(0), Offset(open_at)).is_empty(),
                    "no aborted data left to index"
                );
                assert_eq!(p.last_stable_offset(), Offset(open_at));
            });
        }
    }

    /// A cleaner's work with `map` and no pacing.
    fn work(map: OffsetMap) -> Option<Work> {
        Some(Work {
            map,
            throttle: Throttle::new(u64::MAX),
        })
    }

    /// Runs the pass due on `p` now with `map`; panics if none is due.
    async fn one_pass(p: &Partition, state: &mut LogState, map: &mut Option<Work>) -> PassStats {
        pass_at(p, state, map, now_ms()).await
    }

    /// Runs the pass due on `p` at `now` (Unix ms); panics if none is due.
    async fn pass_at(
        p: &Partition,
        state: &mut LogState,
        map: &mut Option<Work>,
        now: i64,
    ) -> PassStats {
        let plan = super::super::plan::plan(&p.cleaner_view(), state, now).expect("a pass due");
        let workers = Workers::new("test", 1).unwrap();
        run(p, &plan, state, map, &workers).await.unwrap()
    }

    /// Offsets of the tombstones (null values) left in `p`.
    fn tombstones(p: &Partition) -> Vec<i64> {
        let mut out = Vec::new();
        p.for_each_batch(Offset(0), |h, batch| {
            if h.is_control() {
                return;
            }
            let section = &batch[BATCH_HEADER_SIZE..];
            for r in decode_records(section, h.records_count as usize).unwrap() {
                if r.value.is_none() {
                    out.push(h.base_offset.0 + i64::from(r.offset_delta));
                }
            }
        })
        .unwrap();
        out
    }

    /// Appends a batch of 20 fillers of unique keys, `n` times, so that
    /// what came before lies in sealed segments.
    async fn fill(p: &Partition, n: usize) {
        for i in 0..n {
            let (k, v) = (format!("f{i}"), format!("{i:0>60}"));
            append(p, None, &[(&k, &v)]).await;
        }
    }

    /// Regression (KIP-534): a tombstone's wait was timed in the cleaner's
    /// memory, so a restart started it again and a broker restarted more
    /// often than `delete.retention.ms` never removed a tombstone. The
    /// first pass that keeps it now writes its delete horizon into the
    /// batch; a new cleaner state (a restart) keeps it before that
    /// horizon and removes it at it.
    #[test]
    fn a_tombstones_delete_horizon_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let p = leader(dir.path(), "60000");
        on_executor(async {
            append(&p, None, &[("k", "v")]).await; // 0
            let mut b = BatchBuilder::new(1_000);
            b.push(1_000, Some(b"k"), None, &[]); // 1
            let b = b.finish();
            p.append(&b, &validate_record_set(&b, 1 << 20).unwrap())
                .await
                .unwrap();
            fill(&p, 40).await;
            let mut map = work(OffsetMap::with_memory(1 << 20));
            let t0 = now_ms();
            let mut state = LogState::default();
            pass_at(&p, &mut state, &mut map, t0).await;
            assert_eq!(tombstones(&p), vec![1], "kept within the retention");
            assert_eq!(horizons(&p)[&1], Some(t0 + 60_000));
            assert_eq!(state.delete_horizon_ms, Some(t0 + 60_000));
            assert!(!horizons(&p).contains_key(&0), "the older value went");
            // Restarts: each pass with a state of its own.
            pass_at(&p, &mut LogState::default(), &mut map, t0 + 59_999).await;
            assert_eq!(tombstones(&p), vec![1], "before its horizon");
            assert_eq!(horizons(&p)[&1], Some(t0 + 60_000), "not set again");
            pass_at(&p, &mut LogState::default(), &mut map, t0 + 60_000).await;
            assert!(tombstones(&p).is_empty(), "gone at its horizon");
            assert!(
                contents(&p).0.iter().all(|(_, k, _)| k != "k"),
                "the key is gone"
            );
        });
    }

    /// The same for a transaction marker whose transaction's data is
    /// gone: its horizon is in its batch, and a new cleaner state removes
    /// it once the horizon passes (the producer's last marker stays).
    #[test]
    fn a_markers_delete_horizon_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let p = leader(dir.path(), "60000");
        on_executor(async {
            append(&p, Some((1, 0)), &[("k0", "a")]).await; // 0
            p.append_marker(1, 0, true, 0).unwrap(); // 1
            append(&p, Some((1, 1)), &[("k0", "b")]).await; // 2
            p.append_marker(1, 0, true, 0).unwrap(); // 3
            append(&p, None, &[("k0", "c")]).await; // 4
            fill(&p, 40).await;
            let mut map = work(OffsetMap::with_memory(1 << 20));
            let t0 = now_ms();
            let mut state = LogState::default();
            pass_at(&p, &mut state, &mut map, t0).await;
            assert_eq!(contents(&p).1, vec![1, 3]);
            assert_eq!(horizons(&p)[&1], Some(t0 + 60_000), "its data is gone");
            assert_eq!(state.delete_horizon_ms, Some(t0 + 60_000));
            pass_at(&p, &mut LogState::default(), &mut map, t0 + 59_999).await;
            assert_eq!(contents(&p).1, vec![1, 3], "before its horizon");
            assert_eq!(horizons(&p)[&1], Some(t0 + 60_000), "not set again");
            pass_at(&p, &mut LogState::default(), &mut map, t0 + 60_000).await;
            assert_eq!(contents(&p).1, vec![3], "the producer's last stays");
            let values: Vec<_> = contents(&p).0.into_iter().map(|(_, _, v)| v).collect();
            assert!(values.contains(&"c".to_string()));
            assert!(!values.contains(&"a".to_string()) && !values.contains(&"b".to_string()));
        });
    }

    /// How many times each key appears.
    fn copies(p: &Partition) -> BTreeMap<String, usize> {
        let mut n = BTreeMap::new();
        for (_, k, _) in contents(p).0 {
            *n.entry(k).or_insert(0) += 1;
        }
        n
    }

    /// `log.cleaner.dedupe.buffer.size` too small for the dirty part's
    /// keys: the pass stops where the map filled, cleans the log below
    /// that offset only and leaves the segments past it as they were; the
    /// next pass starts there and finishes. A map big enough does it all
    /// in one pass.
    #[test]
    fn a_map_too_small_for_the_dirty_keys_cleans_part_of_the_log_per_pass() {
        for map_keys in [10usize, 1_000] {
            let dir = tempfile::tempdir().unwrap();
            let p = leader(dir.path(), "86400000");
            on_executor(async {
                // Keys a0..a9 five times (offsets 0..50), then b0..b9
                // five times (50..100), then fillers to seal them.
                for (group, first) in [("a", 0), ("b", 50)] {
                    for round in 0..5 {
                        for k in 0..10 {
                            let key = format!("{group}{k}");
                            let value = format!("{round}-{:0>50}", first + round * 10 + k);
                            append(&p, None, &[(&key, &value)]).await;
                        }
                    }
                }
                for i in 0..40 {
                    let (k, v) = (format!("f{i}"), format!("{i:0>60}"));
                    append(&p, None, &[(&k, &v)]).await;
                }
                // The fewest entries of budget whose 90 % is map_keys.
                let entries = (map_keys as u64 * 100).div_ceil(90);
                let budget = entries * super::super::offset_map::ENTRY_BYTES;
                let mut map = work(OffsetMap::with_memory(budget));
                assert_eq!(map.as_ref().unwrap().map.capacity(), map_keys);
                let mut state = LogState::default();
                let sealed_before = p.cleaner_view().sealed;
                let first = one_pass(&p, &mut state, &mut map).await;
                let n = copies(&p);
                if map_keys == 1_000 {
                    assert!(n.values().all(|c| *c == 1), "one pass: {n:?}");
                    return;
                }
                // The map took a0..a9 and refused b0 at offset 50.
                assert_eq!(first.cleaned_upto, 50);
                assert_eq!(state.first_dirty, Offset(50));
                assert!(
                    n.iter()
                        .all(|(k, c)| *c == if k.starts_with('b') { 5 } else { 1 }),
                    "{n:?}"
                );
                assert!(first.segments_before < sealed_before.len(), "stopped early");
                let after = p.cleaner_view().sealed;
                let untouched = |s: &&SealedSegment| s.base.0 > 50;
                let bounds = |v: &[SealedSegment]| -> Vec<(i64, i64, u64)> {
                    v.iter()
                        .filter(untouched)
                        .map(|s| (s.base.0, s.next_offset.0, s.size))
                        .collect()
                };
                assert_eq!(
                    bounds(&after),
                    bounds(&sealed_before),
                    "segments past 50 as they were"
                );
                let latest_a9 = contents(&p)
                    .0
                    .into_iter()
                    .find(|(_, k, _)| k == "a9")
                    .unwrap();
                assert_eq!(latest_a9.0, 49);
                let second = one_pass(&p, &mut state, &mut map).await;
                // b0..b9 filled the map again; the first filler ends it.
                assert_eq!(second.cleaned_upto, 100, "{second:?}");
                let n = copies(&p);
                assert!(n.values().all(|c| *c == 1), "two passes: {n:?}");
            });
        }
    }

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
