//! A partition's log: its segments, in offset order, the last one active.
//!
//! Offsets obey `log_start <= recovery_point <= log_end` and
//! `log_start <= high_watermark <= log_end`, asserted on every update in
//! release builds too. `recovery_point` is the offset below which every
//! byte has been fdatasync'd; after an unclean stop, segments from the one
//! holding it onwards are verified batch by batch.
//!
//! The partition has a current leader epoch, stamped into every appended
//! batch's `partitionLeaderEpoch`; the leader-epoch cache
//! (`leader_epoch.rs`) records where each epoch starts and follows the
//! log through appends, truncation and deletion of old segments.

use super::checkpoint;
use super::cleaned::{CleanedSegment, Installed, SwapGate, SwapJob};
use super::leader_epoch::{EpochEnd, EpochHistory, LeaderEpochCache, UnwrittenEpochs};
use super::segment::{FileRegion, Segment};
use super::snapshot_file;
use super::txn_index::AbortedTxn;
use super::{segment_stem, Result, StorageError};
use crate::config::TopicConfig;
use sluice_protocol::record_batch::{
    decode_records, parse_marker, BatchHeader, Compression, Marker, RecordSetSummary,
    BATCH_HEADER_SIZE,
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
    /// `files[active..]` are the active segment's, the files appends
    /// write to; the ones before are sealed segments'.
    pub active: usize,
    pub upto: Offset,
}

/// Dirty bytes of the active segment past which their writeback is
/// started (`sync_file_range`). Left alone, the kernel writes a segment
/// out when its pages are 30 s old or a tenth of memory is dirty, gigabytes
/// at once; ext4 (data=ordered) then holds every append that needs a
/// journal handle until those blocks are on disk, stalling the shard for
/// hundreds of milliseconds. Started a chunk at a time, writeback runs
/// steadily beside the appends instead. Nothing waits for it: durability
/// still comes from the flush policy.
pub const WRITEBACK_CHUNK: u64 = 1 << 20;
const PAGE: u64 = 4096;

/// A range of a segment file whose writeback should start.
#[derive(Debug)]
pub struct Writeback {
    pub file: Arc<File>,
    pub from: u64,
    pub len: u64,
}

impl Writeback {
    /// Starts writing the range out; returns once the kernel has queued it
    /// (this may block on a busy device, so it runs off the executor).
    pub fn start(&self) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        // SAFETY: a plain syscall on a file descriptor this Arc keeps open.
        let r = unsafe {
            libc::sync_file_range(
                self.file.as_raw_fd(),
                self.from as libc::off64_t,
                self.len as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
}

/// What a fetch read found.
#[derive(Debug, Default)]
pub struct ReadResult {
    pub regions: Vec<FileRegion>,
    pub bytes: usize,
    /// An offset at or past the end of the batches read, no further than
    /// the end of their segment (what aborted transactions are looked up
    /// to).
    pub end_bound: Offset,
    /// The offsets the batches read span, from the first one's base
    /// offset to the next batch's (a compacted log's gaps included).
    pub offsets: u64,
}

/// A sealed segment as the log cleaner reads it: the file stays readable
/// through this handle whatever happens to the log meanwhile, and
/// [`PartitionLog::commit_cleaned`] checks that the log still holds it.
#[derive(Clone, Debug)]
pub struct SealedSegment {
    pub base: Offset,
    pub next_offset: Offset,
    pub size: u64,
    pub max_timestamp: i64,
    pub file: Arc<File>,
    /// The transactions whose ABORT marker lies in the segment.
    pub aborted: Vec<AbortedTxn>,
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
    /// The current leader epoch, stamped on appended batches.
    epoch: LeaderEpoch,
    /// Where each leader epoch starts in this log.
    epochs: LeaderEpochCache,
    /// Sealed segments whose data is not yet fdatasync'd.
    unsynced_sealed: Vec<Arc<File>>,
    /// The active segment (by base offset) and how much of it has been
    /// handed to writeback.
    writeback: (Offset, u64),
    /// Created by [`PartitionLog::create`] and not yet made durable.
    creation_unsynced: bool,
    /// Files of deleted segments, renamed `.deleted`, and when they may
    /// be removed (`file.delete.delay.ms` after their deletion).
    retired: Vec<(std::time::Instant, Vec<PathBuf>)>,
    /// A cleaned copy committed and awaiting its install, with the
    /// sealed segments it replaces ([`PartitionLog::commit_cleaned`]).
    /// A cleaned segment's swap running on a cleaner thread: the
    /// segments it replaces, and where its answer arrives.
    swap: Option<(Vec<SealedSegment>, Arc<SwapGate>)>,
    /// Truncations so far (and the log's deletion): a producer snapshot
    /// written before one is never named (see `snapshot_file.rs`).
    cuts: Arc<std::sync::atomic::AtomicU64>,
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

/// Opens the leader-epoch cache of a log made of `segments` (recovered,
/// so they hold whole valid batches) starting at `log_start`, and
/// reconciles it with the log. A missing or unreadable checkpoint, or one
/// that does not know the epoch of the log's last batch, is rebuilt from
/// the batch headers (one `pread` of 61 bytes per batch). Entries starting
/// past the log end (an epoch recorded before a crash lost its records,
/// or a truncation not yet written) are dropped, and the first entry is
/// moved up to the log start. An entry starting exactly at the log end is
/// kept: it is the current epoch, taken over before any record of it.
/// The partition then leads in its newest epoch (0 for an empty cache),
/// recorded at the log end if the cache is empty; the file is written
/// only if any of this changed it.
fn open_epochs(dir: &Path, segments: &[Segment], log_start: Offset) -> Result<LeaderEpochCache> {
    let log_end = segments.last().expect("a log has a segment").next_offset();
    let trusted = match LeaderEpochCache::read(dir) {
        Ok(cache) => match last_batch(segments)? {
            Some(h) if !knows_batch(cache.history(), &h, log_start) => {
                tracing::warn!(
                    path = %cache.path().display(), last_offset = h.last_offset().0,
                    epoch = h.partition_leader_epoch.0,
                    "leader epoch checkpoint does not know the last batch's epoch; rebuilding it"
                );
                None
            }
            _ => Some(cache),
        },
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "rebuilding the leader epoch checkpoint from the log");
            None
        }
    };
    let mut cache = match trusted {
        Some(cache) => cache,
        None => LeaderEpochCache::create(dir, scan_epochs(segments, log_start)?)?,
    };
    let epoch = cache.latest_epoch().unwrap_or(LeaderEpoch(0));
    cache.update(|h| {
        h.truncate_from_end(log_end.plus(1))
            | h.truncate_from_start(log_start)
            | (h.entries().is_empty() && h.assign(epoch, log_end))
    })?;
    Ok(cache)
}

/// Whether `history` gives the batch `h` the epoch it was written in.
fn knows_batch(history: &EpochHistory, h: &BatchHeader, log_start: Offset) -> bool {
    if h.partition_leader_epoch.0 < 0 || h.last_offset() < log_start {
        return true;
    }
    history.epoch_at(h.base_offset.max(log_start)) == Some(h.partition_leader_epoch)
}

/// The header of the log's last batch, if it has one.
fn last_batch(segments: &[Segment]) -> Result<Option<BatchHeader>> {
    for segment in segments.iter().rev() {
        if let Some(h) = segment.tail_headers(0)?.pop() {
            return Ok(Some(h));
        }
    }
    Ok(None)
}

/// The epoch history of the batches from `log_start` on, read from their
/// headers. Batches without an epoch (-1, written by pre-0.11 clients
/// through an old broker) are skipped, as Kafka does.
fn scan_epochs(segments: &[Segment], log_start: Offset) -> Result<EpochHistory> {
    let mut history = EpochHistory::new();
    for segment in segments {
        let mut pos = 0u64;
        while let Some(h) = segment.read_header(pos)? {
            if h.total_size() < BATCH_HEADER_SIZE {
                return Err(StorageError::Corrupt {
                    path: segment.log_path().to_path_buf(),
                    position: pos,
                    reason: format!("impossible batch_length {}", h.batch_length),
                });
            }
            pos += h.total_size() as u64;
            if h.partition_leader_epoch.0 >= 0 && h.last_offset() >= log_start {
                history.assign(h.partition_leader_epoch, h.base_offset.max(log_start));
            }
        }
    }
    Ok(history)
}

impl PartitionLog {
    /// Creates an empty partition directory with its metadata files.
    ///
    /// Nothing is synced here: with one sync per file and directory, a
    /// new partition cost five to six syncs on the shard's thread, and
    /// creating 10,000 took a minute or more. The partition's creation is
    /// made durable later, as a whole: by the shard in the background
    /// ([`PartitionLog::created_files`], through the ring, with the data
    /// directory synced once for many partitions), or at the latest by
    /// the first flush ([`PartitionLog::prepare_flush`]), so records a
    /// flush made durable are always reachable after a crash. Until then
    /// a crash may lose the directory or its files; the topic is in the
    /// metadata log, and opening the partition creates what is missing
    /// (records in it were not yet flushed, so no flush policy promised
    /// them).
    pub fn create(
        dir: &Path,
        config: Arc<TopicConfig>,
        topic_id: uuid::Uuid,
    ) -> Result<PartitionLog> {
        std::fs::create_dir_all(dir).map_err(StorageError::io("create partition dir", dir))?;
        super::write_unsynced(
            &dir.join(checkpoint::PARTITION_METADATA_FILE),
            checkpoint::partition_metadata_text(topic_id).as_bytes(),
        )?;
        // The partition leads in epoch 0 from offset 0, as a Kafka leader
        // records its epoch at the log end when it takes over.
        let mut history = EpochHistory::new();
        history.assign(LeaderEpoch(0), Offset(0));
        let epochs = LeaderEpochCache::create_unsynced(dir, history)?;
        let segment = Segment::create(dir, Offset(0))?;
        let mut log =
            PartitionLog::from_segments(dir, config, vec![segment], Offset(0), Offset(0), epochs);
        log.creation_unsynced = true;
        Ok(log)
    }

    /// Whether the partition's creation is not yet known durable.
    pub fn creation_unsynced(&self) -> bool {
        self.creation_unsynced
    }

    /// The files a new partition wrote contents into, to fdatasync before
    /// its directory, and then the data directory, are synced. (The
    /// segment's files are empty: their directory entries are all they
    /// need.)
    pub fn created_files(&self) -> [PathBuf; 2] {
        [
            self.dir.join(checkpoint::PARTITION_METADATA_FILE),
            self.dir.join(checkpoint::LEADER_EPOCH_FILE),
        ]
    }

    /// The partition's creation is durable: [`PartitionLog::created_files`]
    /// and its directory were synced, then the data directory.
    pub fn mark_creation_synced(&mut self) {
        self.creation_unsynced = false;
    }

    /// Makes the partition's creation durable now, on this thread, if
    /// nothing did yet.
    fn sync_creation(&mut self) -> Result<()> {
        if !self.creation_unsynced {
            return Ok(());
        }
        for path in self.created_files() {
            let f = File::open(&path).map_err(StorageError::io("open", &path))?;
            f.sync_data()
                .map_err(StorageError::io("fdatasync", &path))?;
        }
        super::sync_dir(&self.dir)?;
        super::sync_dir(self.dir.parent().unwrap_or(Path::new(".")))?;
        self.creation_unsynced = false;
        Ok(())
    }

    fn from_segments(
        dir: &Path,
        config: Arc<TopicConfig>,
        segments: Vec<Segment>,
        log_start: Offset,
        recovery_point: Offset,
        epochs: LeaderEpochCache,
    ) -> PartitionLog {
        let log_end = segments.last().expect("a log has a segment").next_offset();
        let epoch = epochs.latest_epoch().unwrap_or(LeaderEpoch(0));
        let log = PartitionLog {
            dir: dir.to_path_buf(),
            config,
            segments,
            log_start,
            high_watermark: log_end,
            recovery_point: recovery_point.min(log_end),
            unflushed_messages: 0,
            last_flush_ms: 0,
            epoch,
            epochs,
            unsynced_sealed: Vec::new(),
            writeback: (Offset(-1), 0),
            creation_unsynced: false,
            retired: Vec::new(),
            swap: None,
            cuts: Arc::default(),
        };
        log.check_invariants();
        log
    }

    /// Opens an existing partition. After an unclean stop (`clean` false)
    /// every segment from the one holding `recovery_point` is verified; a
    /// torn or corrupt tail of the last segment is cut off, corruption in an
    /// earlier segment is an error and the partition stays offline, and a
    /// segment that ends short of the next one's base (its unsynced tail
    /// lost with the power) ends the log: the segments after it go.
    pub fn open(
        dir: &Path,
        config: Arc<TopicConfig>,
        clean: bool,
        recovery_point: Offset,
        log_start: Offset,
    ) -> Result<PartitionLog> {
        super::cleaned::recover(dir)?;
        let leftovers = super::segment::remove_deleted_files(dir)?;
        if leftovers > 0 {
            tracing::info!(dir = %dir.display(), files = leftovers, "removed deleted segment files left by the last run");
        }
        let bases = list_segment_bases(dir)?;
        if bases.is_empty() {
            let segments = vec![Segment::create(dir, log_start)?];
            let epochs = open_epochs(dir, &segments, log_start)?;
            return Ok(PartitionLog::from_segments(
                dir, config, segments, log_start, log_start, epochs,
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
                if !clean && segment.base() > prev.next_offset() {
                    // The previous segment lost its tail (written but not
                    // synced when the power went), while a later segment's
                    // file survived: from the gap on the log is not
                    // contiguous. Everything from this segment on goes; the
                    // previous one becomes the active segment again.
                    tracing::warn!(
                        dir = %dir.display(),
                        gap_from = prev.next_offset().0,
                        gap_to = segment.base().0,
                        segments = bases.len() - i,
                        "a segment lost its tail before a later one: dropping the later segments"
                    );
                    drop(segment);
                    drop(segments);
                    for b in &bases[i..] {
                        super::segment::delete_files(dir, *b)?;
                    }
                    return PartitionLog::open(dir, config, clean, recovery_point, log_start);
                }
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
        let survived_end = segments.last().map_or(log_start, Segment::next_offset);
        if survived_end < log_start {
            // The log start was moved (DeleteRecords, a leader's log start)
            // past records a crash then took from the unsynced tail: nothing
            // at or above the start is left. As Kafka does, the log starts
            // again, empty, at its start.
            tracing::warn!(
                dir = %dir.display(), log_end = survived_end.0, log_start = log_start.0,
                "the log ends below its start after recovery: starting it again, empty, at its start"
            );
            drop(segments);
            for b in &bases {
                super::segment::delete_files(dir, *b)?;
            }
            segments = vec![Segment::create(dir, log_start)?];
        }
        let log_end = segments.last().map_or(log_start, Segment::next_offset);
        let recovery_point = if clean {
            log_end
        } else {
            // A recovery point past what survived (a checkpoint newer than
            // the data it speaks of) is only a hint: nothing past the end
            // is there to be trusted.
            recovery_point.max(log_start).min(log_end)
        };
        let epochs = open_epochs(dir, &segments, log_start)?;
        // A snapshot past the log end describes batches a crash or a
        // truncation took: the offsets will be reused by other batches.
        snapshot_file::delete_outside(dir, log_start, log_end)?;
        Ok(PartitionLog::from_segments(
            dir,
            config,
            segments,
            log_start,
            recovery_point,
            epochs,
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

    /// The current leader epoch, stamped on every appended batch.
    pub fn leader_epoch(&self) -> LeaderEpoch {
        self.epoch
    }

    /// Makes `epoch` the partition's leader epoch from now on: appends are
    /// stamped with it, and the cache records it as starting at the log
    /// end, as a Kafka leader does when it takes over, so that
    /// OffsetForLeaderEpoch answers for it before its first record.
    /// Epochs never go back; the caller fences older ones.
    ///
    /// The checkpoint file is not written here: see
    /// [`PartitionLog::unwritten_epochs`]. The first append, flush or
    /// other change of the cache writes it if nothing did before.
    /// Returns whether the file now lags.
    pub fn set_leader_epoch(&mut self, epoch: LeaderEpoch) -> bool {
        assert!(
            epoch >= self.epoch,
            "{}: leader epoch {} after {}",
            self.dir.display(),
            epoch.0,
            self.epoch.0
        );
        let log_end = self.log_end();
        self.epoch = epoch;
        self.epochs.assign_unwritten(epoch, log_end)
    }

    /// Whether the leader-epoch checkpoint file lags the cache.
    pub fn epochs_lag(&self) -> bool {
        self.epochs.is_unwritten()
    }

    /// The leader-epoch checkpoint to write, if the file lags the cache
    /// (after [`PartitionLog::set_leader_epoch`]).
    pub fn unwritten_epochs(&self) -> Option<UnwrittenEpochs> {
        self.epochs.unwritten()
    }

    /// Whether the checkpoint's `version` is still the cache's newest:
    /// only then may a write of it replace the file.
    pub fn epochs_current(&self, version: u64) -> bool {
        self.epochs.is_current(version)
    }

    /// The checkpoint's `version` is durable in the file.
    pub fn mark_epochs_written(&mut self, version: u64) {
        self.epochs.mark_written(version);
    }

    /// How many synchronous writes the checkpoint has had: a background
    /// write compares the count before and after its rename.
    pub fn epochs_sync_writes(&self) -> u64 {
        self.epochs.sync_writes()
    }

    /// See [`LeaderEpochCache::rewrite`].
    pub fn rewrite_epochs(&mut self) {
        self.epochs.rewrite();
    }

    /// OffsetForLeaderEpoch: where `requested` ends in this log (see
    /// [`EpochHistory::end_offset_for`]).
    pub fn end_offset_for_epoch(&self, requested: LeaderEpoch) -> EpochEnd {
        self.epochs.end_offset_for(requested, self.log_end())
    }

    /// The leader-epoch cache's entries.
    pub fn epoch_history(&self) -> &EpochHistory {
        self.epochs.history()
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
        // Recorded before the records are written: after a crash the cache
        // may name an epoch whose records were lost (dropped at open), but
        // never lacks one the log holds. Free unless the epoch is new.
        self.epochs.assign(epoch, base)?;
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

    /// Appends batches a leader already numbered (a follower copying its
    /// leader): validated record set, first batch at the log end or past
    /// it (the leader's cleaner removed the batches between). Offsets,
    /// leader epochs and timestamps are kept as they came; the epochs go
    /// into the leader-epoch cache. The high watermark does not move (the
    /// caller sets it from the leader's). Returns the new log end.
    pub fn append_replicated(&mut self, set: &[u8], now_ms: i64) -> Result<Offset> {
        let interval = self.config.index_interval_bytes;
        let mut pos = 0;
        while pos < set.len() {
            let h = BatchHeader::parse(&set[pos..]).expect("record set was validated");
            // A run of batches under one epoch goes in one write: their
            // offsets follow each other, so numbering them again from the
            // run's base changes nothing.
            // The run also ends at a gap: a leader's cleaned log has
            // offsets no batch holds any more.
            let mut end = pos;
            let mut records = 0i64;
            let mut expect = h.base_offset;
            while end < set.len() {
                let next = BatchHeader::parse(&set[end..]).expect("record set was validated");
                if next.partition_leader_epoch != h.partition_leader_epoch
                    || next.base_offset != expect
                {
                    break;
                }
                records += i64::from(next.last_offset_delta) + 1;
                expect = next.next_offset();
                end += next.total_size();
            }
            let log_end = self.log_end();
            // As Kafka's follower append: offsets only rise. A gap is a
            // leader's compacted log (a policy may have changed since it
            // was cleaned, so the topic's current one cannot tell).
            if h.base_offset < log_end {
                return Err(StorageError::OffsetOutOfRange {
                    offset: h.base_offset.0,
                    log_start: self.log_start.0,
                    log_end: log_end.0,
                });
            }
            let base = h.base_offset;
            let run = &set[pos..end];
            self.maybe_roll(run.len() as u64, now_ms)?;
            let epoch = h.partition_leader_epoch;
            self.epochs.assign(epoch, base)?;
            let next = self
                .active_mut()
                .append(run, base, epoch, interval, now_ms, None)?;
            debug_assert_eq!(next.0 - base.0, records);
            self.unflushed_messages += records;
            pos = end;
        }
        self.check_invariants();
        Ok(self.log_end())
    }

    /// Sets the high watermark (a replicated partition's, from the ISR),
    /// kept within `[log_start, log_end]`.
    pub fn set_high_watermark(&mut self, high_watermark: Offset) {
        self.high_watermark = high_watermark.max(self.log_start).min(self.log_end());
        self.check_invariants();
    }

    /// The leader-epoch cache's entries, oldest first.
    pub fn epoch_entries(&self) -> Vec<(LeaderEpoch, Offset)> {
        self.epochs
            .history()
            .entries()
            .iter()
            .map(|e| (e.epoch, e.start_offset))
            .collect()
    }

    fn maybe_roll(&mut self, incoming: u64, now_ms: i64) -> Result<()> {
        let active = self.active();
        if active.size() == 0 {
            return Ok(());
        }
        let full = active.size() + incoming > self.config.segment_bytes;
        let roll_ms = self.config.segment_ms - self.roll_jitter_ms();
        let old = active
            .first_append_ms()
            .is_some_and(|t| now_ms - t >= roll_ms);
        // As Kafka: an index holds segment.index.bytes / entry size
        // entries, and a full one rolls the segment.
        let (offsets, times) = active.index_entries();
        let index_max = self.config.segment_index_bytes;
        let index_full = offsets as u64 >= index_max / super::offset_index::ENTRY_SIZE as u64
            || times as u64 >= index_max / super::time_index::ENTRY_SIZE as u64;
        if !(full || old || index_full) {
            return Ok(());
        }
        let base = self.log_end();
        tracing::debug!(dir = %self.dir.display(), base = base.0, "rolling segment");
        let segment = Segment::create(&self.dir, base)?;
        let sealed = self.active_mut();
        if let Err(e) = sealed.seal() {
            // Most likely a full disk: the old segment stays active (seal
            // changed nothing), and the new one goes, so that the next
            // roll can create it again.
            if let Err(d) = segment.delete() {
                tracing::warn!(dir = %self.dir.display(), base = base.0, error = %d, "removing a segment that was not rolled to");
            }
            return Err(e);
        }
        let file = Arc::clone(sealed.log_file());
        let txn_file = Arc::clone(sealed.txn_index().file());
        self.unsynced_sealed.push(file);
        self.unsynced_sealed.push(txn_file);
        self.segments.push(segment);
        Ok(())
    }

    /// How much earlier than `segment.ms` the active segment rolls: a
    /// number below `min(segment.jitter.ms, segment.ms)` drawn from the
    /// partition's directory and the segment's base offset, so it differs
    /// between partitions and segments yet stays the same while a segment
    /// is active (Kafka draws one per log at random).
    fn roll_jitter_ms(&self) -> i64 {
        use std::hash::{Hash, Hasher};
        let bound = self.config.segment_jitter_ms.min(self.config.segment_ms);
        if bound <= 0 {
            return 0;
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (self.dir.as_path(), self.active().base().0).hash(&mut h);
        (h.finish() % bound as u64) as i64
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
        // The flushed records' epochs are in the file already (an append
        // writes it first); an epoch taken over since is written too, so
        // a flushed log, as at a clean stop, leaves nothing behind.
        self.sync_creation()?;
        self.epochs.write_unwritten()?;
        for s in &mut self.segments {
            s.flush_indexes()?;
        }
        let mut files = std::mem::take(&mut self.unsynced_sealed);
        let active = files.len();
        files.push(Arc::clone(self.active().log_file()));
        files.push(Arc::clone(self.active().txn_index().file()));
        self.unflushed_messages = 0;
        self.last_flush_ms = now_ms;
        Ok(FlushJob {
            files,
            active,
            upto: self.log_end(),
        })
    }

    /// The whole pages of the active segment not yet handed to writeback,
    /// once they reach [`WRITEBACK_CHUNK`]. The page being appended to is
    /// left out, so an append never waits for a page under writeback.
    pub fn writeback_due(&mut self) -> Option<Writeback> {
        let (base, size) = (self.active().base(), self.active().size());
        if self.writeback.0 != base {
            self.writeback = (base, 0);
        }
        let from = self.writeback.1.min(size);
        let upto = size / PAGE * PAGE;
        if upto < from + WRITEBACK_CHUNK {
            return None;
        }
        self.writeback.1 = upto;
        Some(Writeback {
            file: Arc::clone(self.active().log_file()),
            from,
            len: upto - from,
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
    /// (the high watermark for consumers, the log end for followers).
    pub fn read(&self, offset: Offset, max_bytes: usize, upto: Offset) -> Result<ReadResult> {
        if offset < self.log_start || offset > self.log_end() {
            return Err(StorageError::OffsetOutOfRange {
                offset: offset.0,
                log_start: self.log_start.0,
                log_end: self.log_end().0,
            });
        }
        let upto = upto.min(self.log_end());
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
            let (mut end, mut next) = segment.boundary_at_or_below(start, want)?;
            if end == start {
                end = start + first.total_size() as u64;
                next = first.next_offset();
            }
            let len = (end - start) as usize;
            return Ok(ReadResult {
                regions: vec![segment.region(start, len)],
                bytes: len,
                end_bound: upto.min(segment.next_offset()),
                offsets: (next.0 - first.base_offset.0).max(0) as u64,
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

    /// Offset and timestamp of the record with the largest timestamp (the
    /// first such record on a tie): ListOffsets' -3. Each segment knows
    /// its largest timestamp; the batch holding it is read to find the
    /// record.
    pub fn max_timestamp_offset(&self) -> Result<Option<(Offset, i64)>> {
        let mut best: Option<&Segment> = None;
        for s in &self.segments {
            if s.max_timestamp() >= 0 && best.is_none_or(|b| s.max_timestamp() > b.max_timestamp())
            {
                best = Some(s);
            }
        }
        let Some(segment) = best else {
            return Ok(None);
        };
        let ts = segment.max_timestamp();
        let Some((pos, h)) = segment.find_timestamp(ts)? else {
            return Ok(None);
        };
        let batch = segment.read_batch(pos, &h)?;
        let found = first_record_at_or_after(&batch, &h, ts).unwrap_or((h.base_offset, ts));
        // Records below the log start are gone: the search for one at or
        // after its timestamp starts there.
        if found.0 < self.log_start {
            return self.offset_for_timestamp(ts);
        }
        Ok(Some(found))
    }

    /// Deletes whole segments past `retention.ms` / `retention.bytes`,
    /// never the active one, when `cleanup.policy` includes `delete`.
    /// Returns how many were deleted.
    pub fn enforce_retention(&mut self, now_ms: i64) -> Result<usize> {
        // A swap in flight holds its segments: retention looks again at
        // its next check.
        if self.swap.is_some() {
            return Ok(0);
        }
        let mut deleted = 0;
        if !self.config.delete_retention {
            return Ok(0);
        }
        while self.segments.len() > 1 {
            let oldest = &self.segments[0];
            // Only what is committed: replicas may still need the rest.
            if self.segments[1].base() > self.high_watermark {
                break;
            }
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
        if deleted > 0 {
            self.epochs.truncate_from_start(self.log_start)?;
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
        self.discard(segment)?;
        snapshot_file::delete_outside(&self.dir, self.log_start, self.log_end())
    }

    /// Deletes a segment no longer in the log: at once when
    /// `file.delete.delay.ms` is 0, else renamed `.deleted` and removed
    /// that much later (a reader holding its file goes on reading it).
    fn discard(&mut self, segment: Segment) -> Result<()> {
        assert!(
            self.swap.is_none(),
            "segments change only once a swap in flight is settled"
        );
        let delay_ms = self.config.file_delete_delay_ms;
        if delay_ms == 0 {
            return segment.delete();
        }
        let due = std::time::Instant::now() + std::time::Duration::from_millis(delay_ms as u64);
        self.retired.push((due, segment.retire()?));
        Ok(())
    }

    /// Removes the files of deleted segments whose `file.delete.delay.ms`
    /// has passed. Returns how many files went.
    pub fn remove_retired(&mut self) -> Result<usize> {
        let now = std::time::Instant::now();
        let mut removed = 0;
        while let Some(i) = self.retired.iter().position(|(due, _)| *due <= now) {
            let (_, files) = self.retired.swap_remove(i);
            for path in files {
                match std::fs::remove_file(&path) {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(StorageError::io("remove deleted segment", &path)(e)),
                }
            }
        }
        Ok(removed)
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Every segment but the active one, in offset order.
    pub fn sealed_segments(&self) -> Vec<SealedSegment> {
        let sealed = &self.segments[..self.segments.len() - 1];
        sealed
            .iter()
            .map(|s| SealedSegment {
                base: s.base(),
                next_offset: s.next_offset(),
                size: s.size(),
                max_timestamp: s.max_timestamp(),
                file: Arc::clone(s.log_file()),
                aborted: s.txn_index().entries().to_vec(),
            })
            .collect()
    }

    /// Whether the log still holds exactly the sealed segments `replaced`
    /// (contiguous, in order, as read), and where they start.
    fn holds(&self, replaced: &[SealedSegment]) -> Option<usize> {
        let first = replaced.first().expect("something to replace");
        let at = self.segments.iter().position(|s| s.base() == first.base)?;
        let held = at + replaced.len() < self.segments.len()
            && replaced.iter().zip(&self.segments[at..]).all(|(r, s)| {
                r.base == s.base() && r.size == s.size() && Arc::ptr_eq(&r.file, s.log_file())
            });
        held.then_some(at)
    }

    /// Starts replacing the sealed segments `replaced` with their cleaned
    /// copy (see `storage/cleaned.rs`): the returned job does every file
    /// operation, off the shard's thread, and hands its answer to the
    /// gate; [`PartitionLog::settle_swap`] then puts the new segment in.
    /// Until then the replaced segments stay, readable, and whatever
    /// would remove one settles the swap first. If the log no longer
    /// holds exactly those segments (retention, truncation or deletion
    /// took some meanwhile), the copy is dropped and None returned.
    pub fn begin_swap(
        &mut self,
        cleaned: CleanedSegment,
        replaced: &[SealedSegment],
    ) -> Option<(SwapJob, Arc<SwapGate>)> {
        let held = self.holds(replaced);
        if held.is_none() || cleaned.base() != replaced[0].base || self.swap.is_some() {
            cleaned.abandon();
            return None;
        }
        let old = replaced.iter().map(|s| s.base).collect();
        let retire = self.config.file_delete_delay_ms != 0;
        let job = SwapJob::new(cleaned, old, retire, self.config.index_interval_bytes);
        let gate = Arc::new(SwapGate::default());
        self.swap = Some((replaced.to_vec(), Arc::clone(&gate)));
        Some((job, gate))
    }

    /// Puts a swap's new segment in place of the ones it replaced, waiting
    /// for the job's answer if need be. Returns the replaced segments (for
    /// the caller to drop where unmapping their indexes costs no request
    /// anything), none if no swap was in flight. A job that failed is an
    /// error: the log keeps the old segments (their files may be renamed
    /// already; a restart finishes the swap from its committed copy).
    pub fn settle_swap(&mut self) -> Result<Vec<Segment>> {
        let Some((replaced, gate)) = self.swap.take() else {
            return Ok(Vec::new());
        };
        let Installed { segment, retired } = gate.wait()?;
        let at = self
            .holds(&replaced)
            .expect("nothing removes segments while their swap is in flight");
        let old: Vec<Segment> = self.segments.drain(at..at + replaced.len()).collect();
        assert!(segment.next_offset() <= self.segments[at].base());
        self.segments.insert(at, segment);
        if !retired.is_empty() {
            let due = std::time::Instant::now()
                + std::time::Duration::from_millis(self.config.file_delete_delay_ms as u64);
            self.retired.push((due, retired));
        }
        self.check_invariants();
        Ok(old)
    }

    /// Whether a cleaned segment's swap is in flight.
    pub fn swap_in_flight(&self) -> bool {
        self.swap.is_some()
    }

    /// Both halves at once, on this thread.
    #[cfg(test)]
    pub fn replace_cleaned(
        &mut self,
        cleaned: CleanedSegment,
        replaced: &[SealedSegment],
    ) -> Result<bool> {
        let Some((job, gate)) = self.begin_swap(cleaned, replaced) else {
            return Ok(false);
        };
        gate.answer(job.run());
        self.settle_swap()?;
        Ok(true)
    }

    /// Deletes the segments that lie wholly below `offset` (never the
    /// active one) and moves the log start past them. Used once what they
    /// hold has been rewritten above `offset`.
    pub fn delete_segments_before(&mut self, offset: Offset) -> Result<usize> {
        self.settle_swap()?;
        let mut deleted = 0;
        while self.segments.len() > 1 && self.segments[1].base() <= offset {
            self.delete_oldest_segment("rewritten above")?;
            deleted += 1;
        }
        if deleted > 0 {
            self.epochs.truncate_from_start(self.log_start)?;
        }
        self.check_invariants();
        Ok(deleted)
    }

    /// Drops every record at or above `offset` (a follower cutting a tail
    /// that diverges from its leader's log). Whole batches only, as in
    /// Kafka: the batch holding `offset` goes too, so the new log end is
    /// at or below `offset`; the returned value is the new log end.
    /// Segments above are deleted, the one holding the cut is truncated
    /// and its indexes rebuilt, and the leader-epoch cache forgets the
    /// epochs starting at or past the new end (after the log is cut, so a
    /// crash in between leaves the cache saying too much, which open
    /// repairs). The high watermark and recovery point move down with it.
    pub fn truncate_to(&mut self, offset: Offset) -> Result<Offset> {
        self.settle_swap()?;
        if offset >= self.log_end() {
            return Ok(self.log_end());
        }
        if offset < self.log_start {
            return Err(StorageError::OffsetOutOfRange {
                offset: offset.0,
                log_start: self.log_start.0,
                log_end: self.log_end().0,
            });
        }
        self.cut();
        let keep = self.segment_index_for(offset);
        while self.segments.len() > keep + 1 {
            let segment = self.segments.pop().expect("more than one segment");
            tracing::info!(path = %segment.log_path().display(), offset = offset.0, "deleting segment above a truncation");
            self.discard(segment)?;
        }
        let interval = self.config.index_interval_bytes;
        let log_start = self.log_start;
        let segment = self.active();
        let cut = match segment.find_batch(offset)? {
            Some((position, h)) if h.base_offset >= log_start => Some(position),
            Some(_) => None,
            None => Some(segment.size()),
        };
        match cut {
            Some(position) => self.active_mut().truncate_at(position, interval)?,
            // The batch holding `offset` also holds the log start (which is
            // then inside a batch): nothing at or above the start survives.
            None => self.restart_at(self.log_start)?,
        }
        let log_end = self.log_end();
        tracing::info!(dir = %self.dir.display(), offset = offset.0, log_end = log_end.0, "truncated log");
        self.high_watermark = self.high_watermark.min(log_end);
        self.recovery_point = self.recovery_point.min(log_end);
        snapshot_file::delete_outside(&self.dir, self.log_start, log_end)?;
        self.epochs.truncate_from_end(log_end)?;
        self.check_invariants();
        Ok(log_end)
    }

    /// Deletes the records below `offset` (DeleteRecords, or a follower
    /// following its leader's log start), never past the high watermark:
    /// the log starts there, and the segments wholly below it go. Returns
    /// the log start.
    pub fn advance_log_start(&mut self, offset: Offset) -> Result<Offset> {
        self.settle_swap()?;
        let offset = offset.min(self.high_watermark);
        if offset <= self.log_start {
            return Ok(self.log_start);
        }
        self.log_start = offset;
        self.recovery_point = self.recovery_point.max(offset);
        while self.segments.len() > 1 && self.segments[1].base() <= offset {
            self.delete_oldest_segment("below the log start")?;
        }
        self.epochs.truncate_from_start(self.log_start)?;
        self.check_invariants();
        Ok(self.log_start)
    }

    /// Empties the log to start again at `start`: a follower whose
    /// leader's log now starts past everything it has.
    pub fn truncate_fully_and_start_at(&mut self, start: Offset) -> Result<()> {
        self.settle_swap()?;
        tracing::info!(dir = %self.dir.display(), start = start.0, "emptying the log to start at the leader's log start");
        self.restart_at(start)?;
        self.log_start = start;
        self.recovery_point = start;
        self.high_watermark = start;
        self.epochs.truncate_from_end(start)?;
        self.epochs.truncate_from_start(start)?;
        self.check_invariants();
        Ok(())
    }

    /// Replaces every segment with one empty segment starting at `start`.
    fn restart_at(&mut self, start: Offset) -> Result<()> {
        self.cut();
        let old: Vec<Segment> = self.segments.drain(..).collect();
        for segment in old {
            self.discard(segment)?;
        }
        // The snapshots describe batches that are gone, whatever their
        // offsets.
        snapshot_file::delete_all(&self.dir)?;
        self.segments.push(Segment::create(&self.dir, start)?);
        super::sync_dir(&self.dir)
    }

    /// The log's directory is being set aside (a failed replica rebuilt,
    /// see `shard/rebuild.rs`): a background write begun before (a
    /// producer snapshot) drops its result instead of naming it in the
    /// directory that takes this one's place.
    pub fn set_aside(&self) {
        self.cut();
    }

    /// Removes the partition directory and everything in it.
    pub fn delete(mut self) -> Result<()> {
        // A swap's thread must be done with the directory first.
        let _ = self.settle_swap();
        self.cut();
        let dir = self.dir.clone();
        drop(self);
        std::fs::remove_dir_all(&dir).map_err(StorageError::io("delete partition", &dir))
    }

    /// Indexes a transaction ended by an ABORT marker, in the segment
    /// holding the marker.
    pub fn add_aborted(&mut self, txn: AbortedTxn) -> Result<()> {
        let i = self.segment_index_for(txn.last_offset);
        self.segments[i].add_aborted(txn)
    }

    /// The aborted transactions with records in `[from, upto)`, in marker
    /// order (a read_committed fetch of that range).
    pub fn aborted_in(&self, from: Offset, upto: Offset) -> Vec<AbortedTxn> {
        let mut out = Vec::new();
        if from >= upto {
            return out;
        }
        // A transaction aborted in a later segment may have started in
        // this range: search on until an entry's stable offset says no
        // later one can.
        for segment in &self.segments[self.segment_index_for(from)..] {
            if segment.txn_index().collect(from, upto, &mut out) {
                break;
            }
        }
        out
    }

    /// Drops the aborted transactions whose marker is at or past `offset`,
    /// before producer state replays the log from there and indexes them
    /// again.
    pub fn forget_aborted_from(&mut self, offset: Offset) -> Result<()> {
        self.settle_swap()?;
        for segment in &mut self.segments {
            segment.forget_aborted_from(offset)?;
        }
        Ok(())
    }

    /// Base offset of the first segment whose transaction index was lost
    /// (missing or torn at open): replay must start at or below it.
    pub fn txn_index_lost_from(&self) -> Option<Offset> {
        self.segments
            .iter()
            .find(|s| s.txn_index().lost())
            .map(Segment::base)
    }

    /// Calls `f` with the header of every batch from the one holding
    /// `from` to the log end, with the marker of each control batch:
    /// what replaying producer state needs. One `pread` per header, one
    /// more per control batch.
    pub fn for_each_header(
        &self,
        from: Offset,
        mut f: impl FnMut(&BatchHeader, Option<Marker>),
    ) -> Result<()> {
        let from = from.max(self.log_start);
        for segment in &self.segments[self.segment_index_for(from)..] {
            let Some((mut pos, _)) = segment.find_batch(from)? else {
                continue;
            };
            while let Some(h) = segment.read_header(pos)? {
                if pos + h.total_size() as u64 > segment.size() {
                    break;
                }
                let marker = match h.is_control() {
                    true => parse_marker(&segment.read_batch(pos, &h)?),
                    false => None,
                };
                f(&h, marker);
                pos += h.total_size() as u64;
            }
        }
        Ok(())
    }

    /// Offsets of the producer snapshots kept, ascending.
    pub fn snapshot_offsets(&self) -> Result<Vec<Offset>> {
        snapshot_file::list(&self.dir)
    }

    /// The bytes of the producer snapshot at `offset`.
    pub fn read_snapshot(&self, offset: Offset) -> Result<Vec<u8>> {
        snapshot_file::read(&self.dir, offset)
    }

    /// Writes a producer snapshot as of `offset` (at most the log end).
    pub fn write_snapshot(&self, offset: Offset, bytes: &[u8]) -> Result<()> {
        assert!(offset <= self.log_end() && offset >= self.log_start);
        snapshot_file::write(&self.dir, offset, bytes)
    }

    /// Starts a producer snapshot at `offset` without syncing it (see
    /// [`snapshot_file::PendingSnapshot`]).
    pub fn write_snapshot_pending(
        &self,
        offset: Offset,
        bytes: &[u8],
    ) -> Result<snapshot_file::PendingSnapshot> {
        assert!(offset <= self.log_end() && offset >= self.log_start);
        snapshot_file::write_pending(&self.dir, offset, bytes, &self.cuts)
    }

    /// Counts a truncation: producer snapshots begun before it are not
    /// named.
    fn cut(&self) {
        self.cuts.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// Base offset of the active segment (a roll moves it).
    pub fn active_base(&self) -> Offset {
        self.active().base()
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

    fn timed_config(segment_ms: &str, jitter_ms: &str) -> Arc<TopicConfig> {
        let mut c = BrokerConfig::default();
        c.set("segment.ms", segment_ms).unwrap();
        c.set("segment.jitter.ms", jitter_ms).unwrap();
        Arc::new(c.topic_config(&BTreeMap::new()).unwrap())
    }

    fn append_at(log: &mut PartitionLog, b: &[u8], now_ms: i64) {
        let s = validate_record_set(b, 1 << 20).unwrap();
        log.append(b, &s, now_ms).unwrap();
    }

    /// `segment.jitter.ms` takes up to that much off `segment.ms`, a
    /// different amount per partition and segment, so partitions created
    /// together do not all roll at once; without it every segment rolls
    /// at `segment.ms`.
    #[test]
    fn segment_jitter_rolls_each_segment_somewhat_earlier() {
        let dir = tempfile::tempdir().unwrap();
        let mut jitters = Vec::new();
        for p in 0..8 {
            let pdir = dir.path().join(format!("t-{p}"));
            let config = timed_config("100000", "50000");
            let mut log = PartitionLog::create(&pdir, config, uuid::Uuid::new_v4()).unwrap();
            let jitter = log.roll_jitter_ms();
            assert!((0..50_000).contains(&jitter), "{jitter}");
            jitters.push(jitter);
            append_at(&mut log, &batch(1, 0), 0);
            // Just before the jittered age: no roll; at it: a roll.
            append_at(&mut log, &batch(1, 0), 100_000 - jitter - 1);
            assert_eq!(log.segment_count(), 1);
            append_at(&mut log, &batch(1, 0), 100_000 - jitter);
            assert_eq!(log.segment_count(), 2);
        }
        jitters.dedup();
        assert!(jitters.len() > 1, "every partition got {jitters:?}");

        let pdir = dir.path().join("plain-0");
        let mut log =
            PartitionLog::create(&pdir, timed_config("100000", "0"), uuid::Uuid::new_v4()).unwrap();
        assert_eq!(log.roll_jitter_ms(), 0);
        append_at(&mut log, &batch(1, 0), 0);
        append_at(&mut log, &batch(1, 0), 99_999);
        assert_eq!(log.segment_count(), 1);
        append_at(&mut log, &batch(1, 0), 100_000);
        assert_eq!(log.segment_count(), 2);
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

    /// The first two segments are replaced by a copy that keeps every
    /// other batch and their last: reads see the gaps, the log end and
    /// the later segments are untouched, and a reopen (clean or not)
    /// finds the same log. A copy of segments the log no longer holds as
    /// read is dropped.
    #[test]
    fn a_cleaned_copy_replaces_sealed_segments_and_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let pdir = dir.path().join("t-0");
        let mut log = PartitionLog::create(&pdir, config("5000"), uuid::Uuid::new_v4()).unwrap();
        for i in 0..40 {
            append(&mut log, &batch(2, i * 10));
        }
        let sealed = log.sealed_segments();
        assert!(sealed.len() >= 3, "{}", sealed.len());
        let group = &sealed[..2];
        let mut cleaned = CleanedSegment::create(&pdir, group[0].base).unwrap();
        let mut kept = Vec::new();
        log.for_each_batch(Offset(0), |h, b| {
            let last = h.next_offset() == group[1].next_offset;
            if h.next_offset() <= group[1].next_offset && (h.base_offset.0 % 4 == 0 || last) {
                kept.push(h.base_offset.0);
                cleaned.append(b).unwrap();
            }
        })
        .unwrap();
        let stale = CleanedSegment::create(&pdir, sealed[2].base).unwrap();
        assert!(
            !log.replace_cleaned(stale, &sealed[1..2]).unwrap(),
            "not the log's run"
        );
        let second = pdir.join(format!("{}.log", segment_stem(group[1].base.0)));
        assert!(log.replace_cleaned(cleaned, group).unwrap());
        // The replaced files wait `file.delete.delay.ms` as `.deleted`.
        assert!(log.config.file_delete_delay_ms > 0, "60 s by default");
        assert!(!second.exists(), "{} left the log", second.display());
        assert!(PathBuf::from(format!("{}.deleted", second.display())).exists());
        assert!(
            !log.replace_cleaned(CleanedSegment::create(&pdir, group[0].base).unwrap(), group)
                .unwrap(),
            "those segments are gone"
        );
        let check = |log: &PartitionLog| {
            assert_eq!(log.log_end(), Offset(80));
            assert_eq!(log.segment_count(), sealed.len());
            let mut bases = Vec::new();
            log.for_each_batch(Offset(0), |h, _| bases.push(h.base_offset.0))
                .unwrap();
            let rest: Vec<i64> = (group[1].next_offset.0..80).step_by(2).collect();
            assert_eq!(bases, [kept.clone(), rest].concat());
            // A read inside a removed batch starts at the next kept one.
            let r = log.read(Offset(2), 1, log.high_watermark()).unwrap();
            assert_eq!(r.regions[0].position, batch(2, 0).len() as u64);
        };
        check(&log);
        log.flush_now(0).unwrap();
        drop(log);
        for clean in [true, false] {
            let log =
                PartitionLog::open(&pdir, config("5000"), clean, Offset(0), Offset(0)).unwrap();
            check(&log);
        }
        let names: Vec<String> = std::fs::read_dir(&pdir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names
            .iter()
            .all(|n| !n.contains(".cleaned") && !n.contains(".swap")));
    }

    /// A truncation into a cleaned run whose swap is in flight first
    /// waits for the swap's answer and puts the new segment in, then cuts
    /// it: the truncated records never come back, neither from the swap
    /// nor from a restart's recovery. Both orders: the job answered
    /// before the truncation, and answering on another thread while the
    /// truncation may be waiting.
    #[test]
    fn a_truncation_into_a_swap_in_flight_settles_it_first() {
        for answer_first in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let pdir = dir.path().join("t-0");
            let mut log =
                PartitionLog::create(&pdir, config("5000"), uuid::Uuid::new_v4()).unwrap();
            for i in 0..40 {
                append(&mut log, &batch(2, i * 10));
            }
            log.set_high_watermark(log.log_end());
            let sealed = log.sealed_segments();
            let group = &sealed[..2];
            let mut cleaned = CleanedSegment::create(&pdir, group[0].base).unwrap();
            log.for_each_batch(Offset(0), |h, b| {
                if h.next_offset() <= group[1].next_offset {
                    cleaned.append(b).unwrap();
                }
            })
            .unwrap();
            let (job, gate) = log.begin_swap(cleaned, group).unwrap();
            assert!(log.swap_in_flight());
            let answer = Arc::clone(&gate);
            let mut thread = Some(std::thread::spawn(move || answer.answer(job.run())));
            if answer_first {
                thread.take().unwrap().join().unwrap();
            }
            let cut = Offset(group[1].base.0 + 2);
            assert_eq!(log.truncate_to(cut).unwrap(), cut);
            assert!(!log.swap_in_flight(), "settled by the truncation");
            assert!(log.settle_swap().unwrap().is_empty(), "nothing left");
            assert_eq!(log.segment_count(), 1, "the cut falls in the new segment");
            log.flush_now(0).unwrap();
            drop(log);
            if let Some(t) = thread {
                t.join().unwrap();
            }
            let names: Vec<String> = std::fs::read_dir(&pdir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            assert!(names
                .iter()
                .all(|n| !n.ends_with(".swap") && !n.ends_with(".cleaned")));
            let log =
                PartitionLog::open(&pdir, config("5000"), false, Offset(0), Offset(0)).unwrap();
            assert_eq!(log.log_end(), cut, "answer first: {answer_first}");
        }
    }

    /// A producer snapshot written before a truncation is never named:
    /// its state would count batches the cut removed.
    #[test]
    fn a_snapshot_begun_before_a_truncation_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let pdir = dir.path().join("t-0");
        let mut log = PartitionLog::create(&pdir, config("5000"), uuid::Uuid::new_v4()).unwrap();
        for i in 0..10 {
            append(&mut log, &batch(2, i * 10));
        }
        let before = log.write_snapshot_pending(log.log_end(), b"state").unwrap();
        let after_cut = |log: &mut PartitionLog| {
            log.truncate_to(Offset(10)).unwrap();
            log.write_snapshot_pending(log.log_end(), b"state").unwrap()
        };
        let after = after_cut(&mut log);
        assert!(!before.publish().unwrap());
        assert!(after.publish().unwrap());
        assert_eq!(log.snapshot_offsets().unwrap(), [Offset(10)]);
        let names: Vec<String> = std::fs::read_dir(&pdir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    }

    /// A follower copying a leader's cleaned log meets gaps between
    /// batches: each batch keeps its offsets, the log end follows the
    /// last one, and a batch before the log end is still refused.
    #[test]
    fn replicated_batches_may_start_past_the_log_end() {
        let dir = tempfile::tempdir().unwrap();
        let pdir = dir.path().join("t-0");
        let mut log = PartitionLog::create(&pdir, config("100000"), uuid::Uuid::new_v4()).unwrap();
        let at = |offset: i64| {
            let mut b = batch(2, 0);
            sluice_protocol::record_batch::set_base_offset(&mut b, Offset(offset));
            sluice_protocol::record_batch::set_leader_epoch(&mut b, LeaderEpoch(0));
            b
        };
        let set = [at(0), at(5), at(7)].concat();
        assert_eq!(log.append_replicated(&set, 0).unwrap(), Offset(9));
        let mut bases = Vec::new();
        log.for_each_batch(Offset(0), |h, _| bases.push(h.base_offset.0))
            .unwrap();
        assert_eq!(bases, vec![0, 5, 7]);
        assert!(log.append_replicated(&at(8), 0).is_err());
        log.flush_now(0).unwrap();
        drop(log);
        let log = PartitionLog::open(&pdir, config("100000"), false, Offset(0), Offset(0)).unwrap();
        assert_eq!(log.log_end(), Offset(9));
    }

    #[test]
    fn writeback_starts_per_chunk_of_whole_pages_and_restarts_on_roll() {
        let dir = tempfile::tempdir().unwrap();
        let pdir = dir.path().join("t-0");
        let mut log = PartitionLog::create(&pdir, config("2500000"), uuid::Uuid::new_v4()).unwrap();
        let mut jobs = Vec::new();
        for i in 0..4000 {
            append(&mut log, &batch(5, i));
            if let Some(job) = log.writeback_due() {
                job.start().unwrap();
                jobs.push((log.active().base(), job.from, job.len));
            }
        }
        assert!(log.segments.len() > 1, "rolled");
        assert!(jobs.len() >= 3, "{jobs:?}");
        for (i, (base, from, len)) in jobs.iter().enumerate() {
            assert!(
                *len >= WRITEBACK_CHUNK && (from + len) % PAGE == 0,
                "{jobs:?}"
            );
            match jobs.get(i + 1) {
                // Ranges of one segment follow each other; a new segment starts at 0.
                Some((b, next, _)) if b == base => assert_eq!(*next, from + len),
                Some((_, next, _)) => assert_eq!(*next, 0),
                None => {}
            }
        }
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

    #[test]
    fn the_largest_timestamp_is_found_in_whichever_segment_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let pdir = dir.path().join("t-0");
        let mut log = PartitionLog::create(&pdir, config("5000"), uuid::Uuid::new_v4()).unwrap();
        assert_eq!(log.max_timestamp_offset().unwrap(), None);
        for i in 0..40 {
            append(&mut log, &batch(5, i * 10));
        }
        // The last batch's last record: 390 + 4.
        assert_eq!(
            log.max_timestamp_offset().unwrap(),
            Some((Offset(199), 394))
        );
        // A batch stamped up to 2000 in the middle of the active segment,
        // then lower ones after it: its last record keeps the maximum.
        append(&mut log, &batch(3, 1998));
        append(&mut log, &batch(3, 5));
        assert_eq!(
            log.max_timestamp_offset().unwrap(),
            Some((Offset(202), 2000))
        );
        // Several segments later, still found there.
        for _ in 0..20 {
            append(&mut log, &batch(5, 7));
        }
        assert!(log.segments.len() > 3);
        assert_eq!(
            log.max_timestamp_offset().unwrap(),
            Some((Offset(202), 2000))
        );
    }

    #[test]
    fn a_segment_that_lost_its_tail_before_a_later_one_ends_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let pdir = dir.path().join("t-0");
        let mut log = PartitionLog::create(&pdir, config("5000"), uuid::Uuid::new_v4()).unwrap();
        for i in 0..60 {
            append(&mut log, &batch(5, i));
        }
        assert!(log.segments.len() >= 3);
        // The power went before the second segment's last half was synced;
        // the later segments' files survived.
        let second = log.segments[1].log_path().to_path_buf();
        let (second_base, third_base) = (log.segments[1].base(), log.segments[2].base());
        drop(log);
        let bytes = std::fs::read(&second).unwrap();
        let whole = BatchHeader::parse(&bytes).unwrap().total_size();
        let kept = whole * (bytes.len() / whole / 2);
        std::fs::write(&second, &bytes[..kept]).unwrap();
        // A clean stop cannot leave this; an unclean one is recovered.
        let log = PartitionLog::open(&pdir, config("5000"), false, Offset(0), Offset(0)).unwrap();
        assert_eq!(log.segments.len(), 2);
        let end = log.log_end();
        assert!(end > second_base && end < third_base, "{end:?}");
        assert_eq!(list_segment_bases(&pdir).unwrap().len(), 2);
        // And it takes appends on from there.
        drop(log);
        let mut log =
            PartitionLog::open(&pdir, config("5000"), false, Offset(0), Offset(0)).unwrap();
        let next = log.log_end();
        append(&mut log, &batch(5, 0));
        assert_eq!(log.log_end(), Offset(next.0 + 5));
    }

    #[test]
    fn sealed_segments_whose_indexes_were_lost_are_rebuilt_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let pdir = dir.path().join("t-0");
        let mut log = PartitionLog::create(&pdir, config("5000"), uuid::Uuid::new_v4()).unwrap();
        for i in 0..60 {
            append(&mut log, &batch(5, i));
        }
        let end = log.log_end();
        let first = log.segments[0].log_path().to_path_buf();
        log.flush_now(0).unwrap();
        drop(log);
        // The index files of a synced segment did not reach the disk.
        for ext in ["index", "timeindex"] {
            std::fs::write(first.with_extension(ext), b"").unwrap();
        }
        for clean in [true, false] {
            let log = PartitionLog::open(&pdir, config("5000"), clean, end, Offset(0)).unwrap();
            assert_eq!(log.log_end(), end);
            assert!(!log.segments[0].time_index_is_empty());
        }
    }

    fn epochs(log: &PartitionLog) -> Vec<(i32, i64)> {
        log.epoch_history()
            .entries()
            .iter()
            .map(|e| (e.epoch.0, e.start_offset.0))
            .collect()
    }

    fn checkpoint_text(pdir: &Path) -> String {
        std::fs::read_to_string(pdir.join(checkpoint::LEADER_EPOCH_FILE)).unwrap()
    }

    /// A log of 3 batches of 5 in epoch 0, then 2 in epoch 2, 1 in epoch 5.
    fn log_with_epochs(pdir: &Path, segment_bytes: &str) -> PartitionLog {
        let mut log =
            PartitionLog::create(pdir, config(segment_bytes), uuid::Uuid::new_v4()).unwrap();
        for (epoch, batches) in [(0, 3), (2, 2), (5, 1)] {
            log.set_leader_epoch(LeaderEpoch(epoch));
            for _ in 0..batches {
                append(&mut log, &batch(5, 0));
            }
        }
        log
    }

    #[test]
    fn appends_stamp_the_leader_epoch_and_record_where_it_starts() {
        let dir = tempfile::tempdir().unwrap();
        let pdir = dir.path().join("t-0");
        let mut log = log_with_epochs(&pdir, "1000000");
        assert_eq!(epochs(&log), vec![(0, 0), (2, 15), (5, 25)]);
        assert_eq!(checkpoint_text(&pdir), "0\n3\n0 0\n2 15\n5 25\n");
        let mut stamped = Vec::new();
        log.for_each_batch(Offset(0), |h, _| {
            stamped.push((h.base_offset.0, h.partition_leader_epoch.0))
        })
        .unwrap();
        assert_eq!(
            stamped,
            vec![(0, 0), (5, 0), (10, 0), (15, 2), (20, 2), (25, 5)]
        );
        let end = |e| log.end_offset_for_epoch(LeaderEpoch(e));
        assert_eq!(
            end(5),
            EpochEnd {
                epoch: LeaderEpoch(5),
                end_offset: Offset(30)
            }
        );
        assert_eq!(
            end(3),
            EpochEnd {
                epoch: LeaderEpoch(2),
                end_offset: Offset(25)
            }
        );
        assert_eq!(
            end(0),
            EpochEnd {
                epoch: LeaderEpoch(0),
                end_offset: Offset(15)
            }
        );
        assert_eq!(end(6), EpochEnd::UNDEFINED);
        // A new leader epoch is known at the log end before its first record.
        log.set_leader_epoch(LeaderEpoch(7));
        let end = |e| log.end_offset_for_epoch(LeaderEpoch(e));
        assert_eq!(log.leader_epoch(), LeaderEpoch(7));
        assert_eq!(
            end(7),
            EpochEnd {
                epoch: LeaderEpoch(7),
                end_offset: Offset(30)
            }
        );
        assert_eq!(
            end(5),
            EpochEnd {
                epoch: LeaderEpoch(5),
                end_offset: Offset(30)
            }
        );
    }

    /// Taking over as leader leaves the checkpoint file to be written in
    /// the background; the first record of the new epoch must not reach
    /// the log before the file names the epoch.
    #[test]
    fn a_new_leader_epoch_reaches_the_file_before_its_first_record() {
        let dir = tempfile::tempdir().unwrap();
        let pdir = dir.path().join("t-0");
        let mut log = PartitionLog::create(&pdir, config("1000000"), uuid::Uuid::new_v4()).unwrap();
        append(&mut log, &batch(5, 0));
        let before = checkpoint_text(&pdir);
        assert_eq!(before, "0\n1\n0 0\n");
        assert!(log.set_leader_epoch(LeaderEpoch(3)), "the file lags");
        assert_eq!(
            checkpoint_text(&pdir),
            before,
            "not written by the takeover"
        );
        let unwritten = log.unwritten_epochs().unwrap();
        assert_eq!(unwritten.contents, b"0\n2\n0 0\n3 5\n");
        append(&mut log, &batch(1, 0));
        assert_eq!(checkpoint_text(&pdir), "0\n2\n0 0\n3 5\n");
        assert!(log.unwritten_epochs().is_none());
        assert!(log.epochs_current(unwritten.version), "no change since");
    }

    /// A new partition is created without syncs, and a takeover leaves
    /// its checkpoint behind; a flush catches both up, so what a flush
    /// made durable is reachable and named after a crash.
    #[test]
    fn a_flush_syncs_a_new_partition_and_writes_a_lagging_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let pdir = dir.path().join("t-0");
        let mut log = PartitionLog::create(&pdir, config("1000000"), uuid::Uuid::new_v4()).unwrap();
        assert!(log.creation_unsynced());
        assert!(log.set_leader_epoch(LeaderEpoch(2)));
        assert_eq!(checkpoint_text(&pdir), "0\n1\n0 0\n");
        log.flush_now(0).unwrap();
        assert!(!log.creation_unsynced());
        assert!(log.unwritten_epochs().is_none());
        assert_eq!(checkpoint_text(&pdir), "0\n1\n2 0\n");
        drop(log);
        let log =
            PartitionLog::open(&pdir, config("1000000"), false, Offset(0), Offset(0)).unwrap();
        assert_eq!(log.leader_epoch(), LeaderEpoch(2));
        assert!(!log.creation_unsynced(), "only a created partition lags");
    }

    #[test]
    fn reopening_keeps_the_epochs_and_the_current_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let pdir = dir.path().join("t-0");
        let mut log = log_with_epochs(&pdir, "2000");
        log.set_leader_epoch(LeaderEpoch(6));
        log.flush_now(0).unwrap();
        drop(log);
        for clean in [true, false] {
            let mut log =
                PartitionLog::open(&pdir, config("2000"), clean, Offset(0), Offset(0)).unwrap();
            assert_eq!(epochs(&log), vec![(0, 0), (2, 15), (5, 25), (6, 30)]);
            assert_eq!(log.leader_epoch(), LeaderEpoch(6));
            if !clean {
                assert_eq!(append(&mut log, &batch(1, 0)).base_offset, Offset(30));
                assert_eq!(epochs(&log), vec![(0, 0), (2, 15), (5, 25), (6, 30)]);
            }
        }
    }

    #[test]
    fn a_missing_or_unreadable_checkpoint_is_rebuilt_from_the_batches() {
        let dir = tempfile::tempdir().unwrap();
        let pdir = dir.path().join("t-0");
        let log = log_with_epochs(&pdir, "2000");
        assert!(log.segment_count() > 2, "the scan crosses segments");
        drop(log);
        let file = pdir.join(checkpoint::LEADER_EPOCH_FILE);
        for damage in ["", "0\n3\n0 0\n", "garbage", "0\n1\n0 0\n"] {
            if damage.is_empty() {
                std::fs::remove_file(&file).unwrap();
            } else {
                // The last one parses but does not know the last batch's epoch.
                std::fs::write(&file, damage).unwrap();
            }
            let log =
                PartitionLog::open(&pdir, config("2000"), true, Offset(0), Offset(0)).unwrap();
            assert_eq!(
                epochs(&log),
                vec![(0, 0), (2, 15), (5, 25)],
                "after {damage:?}"
            );
            assert_eq!(checkpoint_text(&pdir), "0\n3\n0 0\n2 15\n5 25\n");
            assert_eq!(log.leader_epoch(), LeaderEpoch(5));
        }
    }

    #[test]
    fn a_torn_tail_cut_at_recovery_takes_its_epoch_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let pdir = dir.path().join("t-0");
        let log = log_with_epochs(&pdir, "1000000");
        let path = log.segments[0].log_path().to_path_buf();
        drop(log);
        // Tear the last batch (epoch 5's only one) in half.
        let bytes = std::fs::read(&path).unwrap();
        let last = batch(5, 0).len();
        std::fs::write(&path, &bytes[..bytes.len() - last / 2]).unwrap();
        let log =
            PartitionLog::open(&pdir, config("1000000"), false, Offset(0), Offset(0)).unwrap();
        assert_eq!(log.log_end(), Offset(25));
        // Epoch 5 started at the new log end: it stays the current epoch.
        assert_eq!(epochs(&log), vec![(0, 0), (2, 15), (5, 25)]);
        drop(log);
        // Cutting into epoch 2 drops epoch 5, which started past the end.
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - last / 2]).unwrap();
        let log =
            PartitionLog::open(&pdir, config("1000000"), false, Offset(0), Offset(0)).unwrap();
        assert_eq!(log.log_end(), Offset(20));
        assert_eq!(epochs(&log), vec![(0, 0), (2, 15)]);
        assert_eq!(log.leader_epoch(), LeaderEpoch(2));
        assert_eq!(checkpoint_text(&pdir), "0\n2\n0 0\n2 15\n");
    }

    #[test]
    fn deleting_old_segments_moves_the_first_epoch_up() {
        let dir = tempfile::tempdir().unwrap();
        let pdir = dir.path().join("t-0");
        let mut log = log_with_epochs(&pdir, "2000");
        let second = log.segments[1].base();
        assert!(second > Offset(0) && second < Offset(15));
        log.delete_segments_before(second).unwrap();
        assert_eq!(log.log_start(), second);
        assert_eq!(epochs(&log), vec![(0, second.0), (2, 15), (5, 25)]);
        let third = log.segments[1].base();
        log.delete_segments_before(third).unwrap();
        assert_eq!(epochs(&log)[0].1, third.0);
        drop(log);
        let log = PartitionLog::open(&pdir, config("2000"), true, Offset(0), Offset(0)).unwrap();
        assert_eq!(epochs(&log)[0].1, third.0, "the move was written");
    }

    #[test]
    fn retention_moves_the_first_epoch_up() {
        let dir = tempfile::tempdir().unwrap();
        let pdir = dir.path().join("t-0");
        let mut log = log_with_epochs(&pdir, "2000");
        let mut c = BrokerConfig::default();
        c.set("segment.bytes", "2000").unwrap();
        c.set("retention.bytes", "3000").unwrap();
        log.set_config(Arc::new(c.topic_config(&BTreeMap::new()).unwrap()));
        assert!(log.enforce_retention(0).unwrap() > 0);
        let start = log.log_start();
        assert!(start >= Offset(15), "epoch 0 is gone: {start}");
        assert_eq!(epochs(&log)[0], (2, start.0));
        assert_eq!(epochs(&log)[1], (5, 25));
        assert_eq!(log.enforce_retention(0).unwrap(), 0);
    }

    #[test]
    fn a_log_start_checkpoint_inside_the_log_moves_the_first_epoch_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let pdir = dir.path().join("t-0");
        drop(log_with_epochs(&pdir, "1000000"));
        let log =
            PartitionLog::open(&pdir, config("1000000"), true, Offset(0), Offset(17)).unwrap();
        assert_eq!(epochs(&log), vec![(2, 17), (5, 25)]);
    }

    #[test]
    fn truncate_to_cuts_segments_indexes_and_epochs() {
        let dir = tempfile::tempdir().unwrap();
        let pdir = dir.path().join("t-0");
        let mut log = log_with_epochs(&pdir, "2000");
        let segments = log.segment_count();
        assert!(segments > 2);
        assert_eq!(
            log.truncate_to(Offset(40)).unwrap(),
            Offset(30),
            "past the end: nothing"
        );
        // Offset 22 is inside the batch 20..24: the whole batch goes.
        assert_eq!(log.truncate_to(Offset(22)).unwrap(), Offset(20));
        assert_eq!(log.log_end(), Offset(20));
        assert_eq!(log.high_watermark(), Offset(20));
        assert!(log.segment_count() < segments);
        assert_eq!(epochs(&log), vec![(0, 0), (2, 15)]);
        assert_eq!(checkpoint_text(&pdir), "0\n2\n0 0\n2 15\n");
        // The current epoch is the partition's, not the cache's: appends
        // after the cut start epoch 5 again where the log now ends.
        assert_eq!(append(&mut log, &batch(5, 0)).base_offset, Offset(20));
        assert_eq!(epochs(&log), vec![(0, 0), (2, 15), (5, 20)]);
        let r = log.read(Offset(20), 1, log.high_watermark()).unwrap();
        assert_eq!(r.bytes, batch(5, 0).len());
        // Down to a segment boundary and then to the start.
        let second = log.segments[1].base();
        assert_eq!(log.truncate_to(second).unwrap(), second);
        assert_eq!(log.segment_count(), 2);
        assert_eq!(log.truncate_to(Offset(0)).unwrap(), Offset(0));
        assert_eq!(log.segment_count(), 1);
        assert!(epochs(&log).is_empty());
        assert_eq!(append(&mut log, &batch(2, 0)).base_offset, Offset(0));
        assert_eq!(epochs(&log), vec![(5, 0)]);
        log.flush_now(0).unwrap();
        drop(log);
        for clean in [true, false] {
            let log =
                PartitionLog::open(&pdir, config("2000"), clean, Offset(0), Offset(0)).unwrap();
            assert_eq!(log.log_end(), Offset(2));
            assert_eq!(epochs(&log), vec![(5, 0)]);
        }
    }

    /// A follower's truncation deleted the segments above the cut at once,
    /// whatever `file.delete.delay.ms` said, under a reader still using
    /// them; they now wait `.deleted` like the segments retention takes.
    #[test]
    fn truncated_segments_wait_file_delete_delay_as_deleted_files() {
        let dir = tempfile::tempdir().unwrap();
        let pdir = dir.path().join("t-0");
        let mut log = log_with_epochs(&pdir, "2000");
        assert!(log.config.file_delete_delay_ms > 0, "60 s by default");
        let second = log.segments[1].base();
        let above: Vec<PathBuf> = log.segments[2..]
            .iter()
            .map(|s| s.log_path().to_path_buf())
            .collect();
        assert!(!above.is_empty());
        log.truncate_to(second).unwrap();
        let deleted = |p: &Path| PathBuf::from(format!("{}.deleted", p.display()));
        for p in &above {
            assert!(!p.exists(), "{} left the log", p.display());
            assert!(deleted(p).exists(), "{} waits", p.display());
        }
        assert_eq!(log.remove_retired().unwrap(), 0, "not yet due");
        // Emptying the log to start again retires its segments too.
        log.truncate_fully_and_start_at(Offset(100)).unwrap();
        assert!(deleted(&pdir.join(format!("{}.log", segment_stem(0)))).exists());
        for (due, _) in &mut log.retired {
            *due = std::time::Instant::now();
        }
        assert!(log.remove_retired().unwrap() >= above.len());
        for p in &above {
            assert!(!deleted(p).exists());
        }
        // With no delay they go at once.
        let mut log = log_with_epochs(&dir.path().join("t-1"), "2000");
        let mut c = BrokerConfig::default();
        c.set("segment.bytes", "2000").unwrap();
        let overrides = BTreeMap::from([("file.delete.delay.ms".to_string(), "0".to_string())]);
        log.config = Arc::new(c.topic_config(&overrides).unwrap());
        let last = log.segments.last().unwrap().log_path().to_path_buf();
        let second = log.segments[1].base();
        log.truncate_to(second).unwrap();
        assert!(!last.exists() && !deleted(&last).exists());
    }

    #[test]
    fn truncate_to_below_the_log_start_is_refused_and_inside_its_batch_empties_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let pdir = dir.path().join("t-0");
        drop(log_with_epochs(&pdir, "1000000"));
        let mut log =
            PartitionLog::open(&pdir, config("1000000"), true, Offset(0), Offset(17)).unwrap();
        assert!(matches!(
            log.truncate_to(Offset(16)),
            Err(StorageError::OffsetOutOfRange { .. })
        ));
        // The batch 15..19 holds both the log start and the cut.
        assert_eq!(log.truncate_to(Offset(18)).unwrap(), Offset(17));
        assert_eq!((log.log_start(), log.log_end()), (Offset(17), Offset(17)));
        assert!(epochs(&log).is_empty());
        assert_eq!(append(&mut log, &batch(1, 0)).base_offset, Offset(17));
    }

    /// A transaction aborted in a later segment that started in the range
    /// read is found; the search stops at the first entry whose stable
    /// offset passes the range; truncation and a deleted segment take
    /// their entries along; reopening reads them back.
    #[test]
    fn aborted_transactions_are_found_across_segments_and_follow_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let pdir = dir.path().join("t-0");
        let mut log = PartitionLog::create(&pdir, config("2000"), uuid::Uuid::new_v4()).unwrap();
        for i in 0..30 {
            append(&mut log, &batch(1, i));
        }
        assert!(log.segments.len() >= 3);
        let base = |i: usize| log.segments[i].base();
        let txn = |pid, first: Offset, last: Offset, lso: Offset| AbortedTxn {
            producer_id: pid,
            first_offset: first,
            last_offset: last,
            last_stable_offset: lso,
        };
        // pid 1 spans segments 0..2, open while pid 2, in segment 1, is
        // aborted (whose stable offset is then pid 1's first offset).
        let (b1, b2) = (base(1), base(2));
        let long = txn(1, Offset(1), b2, b2.plus(1));
        let short = txn(2, b1, b1.plus(1), Offset(1));
        log.add_aborted(short).unwrap();
        log.add_aborted(long).unwrap();
        assert_eq!(log.aborted_in(Offset(0), Offset(2)), vec![long]);
        assert_eq!(log.aborted_in(b1, b1.plus(1)), vec![short, long]);
        assert_eq!(log.aborted_in(b2.plus(1), log.log_end()), vec![]);
        assert_eq!(log.aborted_in(Offset(0), Offset(0)), vec![]);

        drop(log);
        let mut log =
            PartitionLog::open(&pdir, config("2000"), true, Offset(30), Offset(0)).unwrap();
        assert_eq!(log.txn_index_lost_from(), None);
        assert_eq!(log.aborted_in(b1, b1.plus(1)), vec![short, long]);
        log.truncate_to(b2).unwrap();
        assert_eq!(log.aborted_in(Offset(0), log.log_end()), vec![short]);
        log.advance_log_start(b1.plus(2)).unwrap();
        assert!(!pdir.join(format!("{}.txnindex", segment_stem(0))).exists());
    }
}
