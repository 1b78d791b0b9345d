//! A partition's log: its segments, in offset order, the last one active.
//!
//! Offsets obey `log_start <= recovery_point <= log_end` and
//! `log_start <= high_watermark <= log_end`, asserted on every update in
//! release builds too. `recovery_point` is the offset below which every
//! byte has been fdatasync'd; after an unclean stop, segments from the one
//! holding it onwards are verified batch by batch.

use super::checkpoint;
use super::segment::{FileRegion, Segment};
use super::{segment_stem, Result, StorageError};
use crate::config::TopicConfig;
use sluice_protocol::record_batch::{
    decode_records, BatchHeader, Compression, RecordSetSummary, BATCH_HEADER_SIZE,
};
use sluice_protocol::{LeaderEpoch, Offset};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where an append landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: Offset,
    pub last_offset: Offset,
    /// The broker's time written into the batches, or -1 (CreateTime topics).
    pub log_append_time_ms: i64,
}

/// Files to fdatasync and the offset that is durable once they are.
#[derive(Debug)]
pub struct FlushJob {
    pub files: Vec<Arc<File>>,
    pub upto: Offset,
}

/// What a fetch read found.
#[derive(Debug, Default)]
pub struct ReadResult {
    pub regions: Vec<FileRegion>,
    pub bytes: usize,
}

/// A partition's log.
#[derive(Debug)]
pub struct PartitionLog {
    dir: PathBuf,
    config: Arc<TopicConfig>,
    segments: Vec<Segment>,
    log_start: Offset,
    high_watermark: Offset,
    recovery_point: Offset,
    unflushed_messages: i64,
    last_flush_ms: i64,
    epoch: LeaderEpoch,
    /// Sealed segments whose data is not yet fdatasync'd.
    unsynced_sealed: Vec<Arc<File>>,
}

fn list_segment_bases(dir: &Path) -> Result<Vec<Offset>> {
    let mut bases = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(StorageError::io("list", dir))? {
        let entry = entry.map_err(StorageError::io("list", dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(stem) = name.strip_suffix(".log") {
            if let Ok(base) = stem.parse::<i64>() {
                bases.push(Offset(base));
            }
        }
    }
    bases.sort();
    Ok(bases)
}

impl PartitionLog {
    /// Creates an empty partition directory with its metadata files.
    pub fn create(
        dir: &Path,
        config: Arc<TopicConfig>,
        topic_id: uuid::Uuid,
    ) -> Result<PartitionLog> {
        std::fs::create_dir_all(dir).map_err(StorageError::io("create partition dir", dir))?;
        checkpoint::write_partition_metadata(dir, topic_id)?;
        checkpoint::write_leader_epochs(dir, &[(0, 0)])?;
        let segment = Segment::create(dir, Offset(0))?;
        super::sync_dir(dir)?;
        super::sync_dir(dir.parent().unwrap_or(Path::new(".")))?;
        Ok(PartitionLog::from_segments(
            dir,
            config,
            vec![segment],
            Offset(0),
            Offset(0),
        ))
    }

    fn from_segments(
        dir: &Path,
        config: Arc<TopicConfig>,
        segments: Vec<Segment>,
        log_start: Offset,
        recovery_point: Offset,
    ) -> PartitionLog {
        let log_end = segments.last().expect("a log has a segment").next_offset();
        let log = PartitionLog {
            dir: dir.to_path_buf(),
            config,
            segments,
            log_start,
            high_watermark: log_end,
            recovery_point: recovery_point.min(log_end),
            unflushed_messages: 0,
            last_flush_ms: 0,
            epoch: LeaderEpoch(0),
            unsynced_sealed: Vec::new(),
        };
        log.check_invariants();
        log
    }

    /// Opens an existing partition. After an unclean stop (`clean` false)
    /// every segment from the one holding `recovery_point` is verified; a
    /// torn or corrupt tail of the last segment is cut off, corruption in an
    /// earlier segment is an error and the partition stays offline.
    pub fn open(
        dir: &Path,
        config: Arc<TopicConfig>,
        clean: bool,
        recovery_point: Offset,
        log_start: Offset,
    ) -> Result<PartitionLog> {
        let bases = list_segment_bases(dir)?;
        if bases.is_empty() {
            let segment = Segment::create(dir, log_start)?;
            return Ok(PartitionLog::from_segments(
                dir,
                config,
                vec![segment],
                log_start,
                log_start,
            ));
        }
        let interval = config.index_interval_bytes;
        let verify_from = bases
            .iter()
            .rposition(|b| *b <= recovery_point)
            .unwrap_or(0);
        let mut segments: Vec<Segment> = Vec::with_capacity(bases.len());
        for (i, base) in bases.iter().enumerate() {
            let last = i + 1 == bases.len();
            let mut segment = Segment::open(dir, *base, last)?;
            let trusted = clean || i < verify_from;
            let needs_recovery = !trusted
                || match segment.load(interval) {
                    Ok(()) => false,
                    Err(e) if last => {
                        tracing::warn!(error = %e, "active segment does not load cleanly; recovering it");
                        true
                    }
                    Err(e) => return Err(e),
                };
            if needs_recovery {
                let outcome = segment.recover(interval)?;
                if let Some((position, reason)) = outcome.invalid_at {
                    if !last || segment.valid_batch_follows(position)? {
                        return Err(StorageError::Corrupt {
                            path: segment.log_path().to_path_buf(),
                            position,
                            reason,
                        });
                    }
                    tracing::warn!(
                        path = %segment.log_path().display(), position, %reason,
                        "truncating the log's torn or corrupt tail"
                    );
                    segment.truncate_at(position, interval)?;
                }
            }
            if let Some(prev) = segments.last() {
                if segment.base() < prev.next_offset() {
                    return Err(StorageError::Corrupt {
                        path: segment.log_path().to_path_buf(),
                        position: 0,
                        reason: format!(
                            "segment starts at {} inside the previous one",
                            segment.base()
                        ),
                    });
                }
            }
            if !last {
                segment.seal()?;
            }
            segments.push(segment);
        }
        let first_base = segments[0].base();
        let log_start = log_start.max(first_base);
        let recovery_point = if clean {
            segments.last().map_or(log_start, Segment::next_offset)
        } else {
            recovery_point.max(log_start)
        };
        Ok(PartitionLog::from_segments(
            dir,
            config,
            segments,
            log_start,
            recovery_point,
        ))
    }

    fn check_invariants(&self) {
        let log_end = self.log_end();
        assert!(
            self.log_start <= self.high_watermark && self.high_watermark <= log_end,
            "{}: log_start {} <= high_watermark {} <= log_end {}",
            self.dir.display(),
            self.log_start,
            self.high_watermark,
            log_end
        );
        assert!(
            self.log_start <= self.recovery_point.max(self.log_start)
                && self.recovery_point <= log_end,
            "{}: recovery_point {} outside [{}, {}]",
            self.dir.display(),
            self.recovery_point,
            self.log_start,
            log_end
        );
    }

    pub fn log_start(&self) -> Offset {
        self.log_start
    }

    pub fn log_end(&self) -> Offset {
        self.active().next_offset()
    }

    pub fn high_watermark(&self) -> Offset {
        self.high_watermark
    }

    pub fn recovery_point(&self) -> Offset {
        self.recovery_point
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &Arc<TopicConfig> {
        &self.config
    }

    pub fn set_config(&mut self, config: Arc<TopicConfig>) {
        self.config = config;
    }

    fn active(&self) -> &Segment {
        self.segments.last().expect("a log has a segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments.last_mut().expect("a log has a segment")
    }

    /// Total bytes of all segments.
    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(Segment::size).sum()
    }

    /// Appends a validated record set and assigns its offsets.
    pub fn append(
        &mut self,
        set: &[u8],
        summary: &RecordSetSummary,
        now_ms: i64,
    ) -> Result<AppendInfo> {
        self.maybe_roll(set.len() as u64, now_ms)?;
        let base = self.log_end();
        let interval = self.config.index_interval_bytes;
        let epoch = self.epoch;
        let append_time = self.config.log_append_time.then_some(now_ms);
        let next = self
            .active_mut()
            .append(set, base, epoch, interval, now_ms, append_time)?;
        assert_eq!(
            next.0 - base.0,
            summary.records,
            "offsets taken match the record count"
        );
        self.unflushed_messages += summary.records;
        // With one replica the high watermark is the log end.
        self.high_watermark = next;
        self.check_invariants();
        Ok(AppendInfo {
            base_offset: base,
            last_offset: Offset(next.0 - 1),
            log_append_time_ms: append_time.unwrap_or(-1),
        })
    }

    fn maybe_roll(&mut self, incoming: u64, now_ms: i64) -> Result<()> {
        let active = self.active();
        if active.size() == 0 {
            return Ok(());
        }
        let full = active.size() + incoming > self.config.segment_bytes;
        let old = active
            .first_append_ms()
            .is_some_and(|t| now_ms - t >= self.config.segment_ms);
        if !(full || old) {
            return Ok(());
        }
        let base = self.log_end();
        tracing::debug!(dir = %self.dir.display(), base = base.0, "rolling segment");
        let segment = Segment::create(&self.dir, base)?;
        let sealed = self.active_mut();
        sealed.seal()?;
        let file = Arc::clone(sealed.log_file());
        self.unsynced_sealed.push(file);
        self.segments.push(segment);
        Ok(())
    }

    /// Whether `flush.messages` or `flush.ms` asks for a flush now.
    pub fn flush_due(&self, now_ms: i64) -> bool {
        if self.recovery_point >= self.log_end() {
            return false;
        }
        self.unflushed_messages >= self.config.flush_messages
            || now_ms.saturating_sub(self.last_flush_ms) >= self.config.flush_ms
            || !self.unsynced_sealed.is_empty() && self.config.flush_messages == i64::MAX
    }

    /// Writes pending index entries and returns the files to fdatasync for
    /// everything appended so far to become durable.
    pub fn prepare_flush(&mut self, now_ms: i64) -> Result<FlushJob> {
        for s in &mut self.segments {
            s.flush_indexes()?;
        }
        let mut files = std::mem::take(&mut self.unsynced_sealed);
        files.push(Arc::clone(self.active().log_file()));
        self.unflushed_messages = 0;
        self.last_flush_ms = now_ms;
        Ok(FlushJob {
            files,
            upto: self.log_end(),
        })
    }

    /// Records that a flush job's files were synced.
    pub fn complete_flush(&mut self, upto: Offset) {
        if upto > self.recovery_point {
            self.recovery_point = upto.min(self.log_end());
        }
        self.check_invariants();
    }

    /// Flushes synchronously (clean shutdown).
    pub fn flush_now(&mut self, now_ms: i64) -> Result<()> {
        let job = self.prepare_flush(now_ms)?;
        for f in &job.files {
            f.sync_data()
                .map_err(StorageError::io("fsync segment", &self.dir))?;
        }
        self.complete_flush(job.upto);
        Ok(())
    }

    fn segment_index_for(&self, offset: Offset) -> usize {
        self.segments
            .partition_point(|s| s.base() <= offset)
            .saturating_sub(1)
    }

    /// Headers of the most recent batches (about the last `tail_bytes` of
    /// the active segment), to rebuild idempotent-producer state at start.
    pub fn recent_batches(&self, tail_bytes: u64) -> Result<Vec<BatchHeader>> {
        self.active().tail_headers(tail_bytes)
    }

    /// Calls `f` with every batch from the one holding `from` to the log
    /// end, in order: how an internal topic (`__consumer_offsets`) is
    /// replayed at start. Reads go through `pread`, one batch at a time.
    pub fn for_each_batch(
        &self,
        from: Offset,
        mut f: impl FnMut(&BatchHeader, &[u8]),
    ) -> Result<()> {
        let from = from.max(self.log_start);
        for segment in &self.segments[self.segment_index_for(from)..] {
            let Some((mut pos, _)) = segment.find_batch(from)? else {
                continue;
            };
            while let Some(h) = segment.read_header(pos)? {
                let batch = segment.read_batch(pos, &h)?;
                if h.last_offset() >= from {
                    f(&h, &batch);
                }
                pos += h.total_size() as u64;
            }
        }
        Ok(())
    }

    /// Whole batches from the one holding `offset` on, up to `max_bytes`
    /// (the first batch always, whatever its size), never past `upto`
    /// (the high watermark).
    pub fn read(&self, offset: Offset, max_bytes: usize, upto: Offset) -> Result<ReadResult> {
        if offset < self.log_start || offset > self.log_end() {
            return Err(StorageError::OffsetOutOfRange {
                offset: offset.0,
                log_start: self.log_start.0,
                log_end: self.log_end().0,
            });
        }
        let upto = upto.min(self.high_watermark);
        if offset >= upto {
            return Ok(ReadResult::default());
        }
        for segment in &self.segments[self.segment_index_for(offset)..] {
            let Some((start, first)) = segment.find_batch(offset)? else {
                continue;
            };
            if first.base_offset >= upto {
                return Ok(ReadResult::default());
            }
            let limit = if upto >= segment.next_offset() {
                segment.size()
            } else {
                segment.find_batch(upto)?.map_or(segment.size(), |(p, _)| p)
            };
            let want = start.saturating_add(max_bytes as u64).min(limit);
            let mut end = segment.boundary_at_or_below(start, want)?;
            if end == start {
                end = start + first.total_size() as u64;
            }
            let len = (end - start) as usize;
            return Ok(ReadResult {
                regions: vec![segment.region(start, len)],
                bytes: len,
            });
        }
        Ok(ReadResult::default())
    }

    /// Offset and timestamp of the first record with a timestamp at or
    /// above `timestamp`. A compressed batch is decompressed to find the
    /// record (a cold path: ListOffsets by time, once per consumer seek).
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<(Offset, i64)>> {
        for segment in &self.segments {
            let Some((pos, h)) = segment.find_timestamp(timestamp)? else {
                continue;
            };
            if h.base_offset < self.log_start {
                continue;
            }
            let batch = segment.read_batch(pos, &h)?;
            if let Some(found) = first_record_at_or_after(&batch, &h, timestamp) {
                return Ok(Some(found));
            }
            return Ok(Some((h.base_offset, h.max_timestamp)));
        }
        Ok(None)
    }

    /// Deletes whole segments past `retention.ms` / `retention.bytes`,
    /// never the active one, when `cleanup.policy` includes `delete`.
    /// Returns how many were deleted.
    pub fn enforce_retention(&mut self, now_ms: i64) -> Result<usize> {
        let mut deleted = 0;
        if !self.config.delete_retention {
            return Ok(0);
        }
        while self.segments.len() > 1 {
            let oldest = &self.segments[0];
            let by_time = self.config.retention_ms >= 0
                && oldest.max_timestamp() >= 0
                && now_ms - oldest.max_timestamp() > self.config.retention_ms;
            let by_size = self.config.retention_bytes >= 0
                && self.size_bytes() - oldest.size() >= self.config.retention_bytes as u64;
            if !(by_time || by_size) {
                break;
            }
            self.delete_oldest_segment("past retention")?;
            deleted += 1;
        }
        self.check_invariants();
        Ok(deleted)
    }

    /// Deletes the oldest segment (never the only one) and moves the log
    /// start to the next.
    fn delete_oldest_segment(&mut self, why: &'static str) -> Result<()> {
        assert!(self.segments.len() > 1);
        let segment = self.segments.remove(0);
        self.log_start = self.log_start.max(self.segments[0].base());
        self.recovery_point = self.recovery_point.max(self.log_start);
        tracing::info!(path = %segment.log_path().display(), why, "deleting segment");
        segment.delete()
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Deletes the segments that lie wholly below `offset` (never the
    /// active one) and moves the log start past them. Used once what they
    /// hold has been rewritten above `offset`.
    pub fn delete_segments_before(&mut self, offset: Offset) -> Result<usize> {
        let mut deleted = 0;
        while self.segments.len() > 1 && self.segments[1].base() <= offset {
            self.delete_oldest_segment("rewritten above")?;
            deleted += 1;
        }
        self.check_invariants();
        Ok(deleted)
    }

    /// Removes the partition directory and everything in it.
    pub fn delete(self) -> Result<()> {
        let dir = self.dir.clone();
        drop(self);
        std::fs::remove_dir_all(&dir).map_err(StorageError::io("delete partition", &dir))
    }

    /// Name of the segment file holding `offset`, for messages.
    pub fn segment_name_for(&self, offset: Offset) -> String {
        segment_stem(self.segments[self.segment_index_for(offset)].base().0)
    }
}

fn first_record_at_or_after(
    batch: &[u8],
    h: &BatchHeader,
    timestamp: i64,
) -> Option<(Offset, i64)> {
    let section = &batch[BATCH_HEADER_SIZE..];
    let decompressed;
    let records = match h.compression()? {
        Compression::None => section,
        codec => {
            decompressed = sluice_protocol::compression::decompress(codec, section).ok()?;
            &decompressed[..]
        }
    };
    let records = decode_records(records, h.records_count.max(0) as usize).ok()?;
    records.iter().find_map(|r| {
        let ts = h.base_timestamp + r.timestamp_delta;
        (ts >= timestamp).then(|| (h.base_offset.plus(i64::from(r.offset_delta)), ts))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BrokerConfig;
    use sluice_protocol::record_batch::{validate_record_set, BatchBuilder};
    use std::collections::BTreeMap;

    fn config(segment_bytes: &str) -> Arc<TopicConfig> {
        let mut c = BrokerConfig::default();
        c.set("segment.bytes", segment_bytes).unwrap();
        c.set("index.interval.bytes", "1000").unwrap();
        Arc::new(c.topic_config(&BTreeMap::new()).unwrap())
    }

    fn batch(n: usize, ts: i64) -> Vec<u8> {
        let mut b = BatchBuilder::new(ts);
        for i in 0..n {
            b.push(ts + i as i64, None, Some(&[1u8; 200]), &[]);
        }
        b.finish()
    }

    fn append(log: &mut PartitionLog, b: &[u8]) -> AppendInfo {
        let s = validate_record_set(b, 1 << 20).unwrap();
        log.append(b, &s, 0).unwrap()
    }

    #[test]
    fn rolls_reads_across_segments_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let pdir = dir.path().join("t-0");
        let mut log = PartitionLog::create(&pdir, config("20000"), uuid::Uuid::new_v4()).unwrap();
        for i in 0..100 {
            let info = append(&mut log, &batch(5, i * 10));
            assert_eq!(info.base_offset, Offset(i * 5));
        }
        assert!(log.segments.len() > 1);
        let r = log.read(Offset(0), 1, log.high_watermark()).unwrap();
        assert_eq!(r.regions.len(), 1);
        assert!(r.bytes > 1, "the first batch is returned whole");
        let mid = log.read(Offset(251), 3000, log.high_watermark()).unwrap();
        assert!(mid.bytes <= 3000 && mid.bytes > 0);
        assert!(log.read(Offset(501), 10, Offset(500)).is_err());
        assert_eq!(log.read(Offset(500), 10, Offset(500)).unwrap().bytes, 0);
        assert_eq!(
            log.offset_for_timestamp(503).unwrap(),
            Some((Offset(253), 503))
        );
        log.flush_now(0).unwrap();
        drop(log);
        let log = PartitionLog::open(&pdir, config("20000"), true, Offset(0), Offset(0)).unwrap();
        assert_eq!(log.log_end(), Offset(500));
        let log2 = {
            drop(log);
            PartitionLog::open(&pdir, config("20000"), false, Offset(0), Offset(0)).unwrap()
        };
        assert_eq!(log2.log_end(), Offset(500));
    }

    #[test]
    fn corrupt_middle_segment_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let pdir = dir.path().join("t-0");
        let mut log = PartitionLog::create(&pdir, config("5000"), uuid::Uuid::new_v4()).unwrap();
        for i in 0..30 {
            append(&mut log, &batch(5, i));
        }
        let first = log.segments[0].log_path().to_path_buf();
        drop(log);
        let mut bytes = std::fs::read(&first).unwrap();
        bytes[100] ^= 0xff;
        std::fs::write(&first, bytes).unwrap();
        let err =
            PartitionLog::open(&pdir, config("5000"), false, Offset(0), Offset(0)).unwrap_err();
        assert!(matches!(err, StorageError::Corrupt { .. }), "{err}");
    }
}
