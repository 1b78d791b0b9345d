//! One log segment: a `.log` file of record batches and its two indexes.
//!
//! The `.log` file holds batches exactly as they were produced, with the
//! broker-assigned `base_offset` and `partition_leader_epoch` written in.
//! Every batch starts where the previous one ended; there is no other
//! framing. The segment knows its size (the next write position) and the
//! offset after its last batch, and nothing else: everything it says about
//! its content is read from the file or the indexes.

use super::offset_index::OffsetIndex;
use super::time_index::TimeIndex;
use super::txn_index::{self, AbortedTxn, TxnIndex};
use super::{segment_stem, Result, StorageError};
use sluice_protocol::record_batch::{self, BatchHeader, BATCH_HEADER_SIZE, LOG_OVERHEAD};
use sluice_protocol::{LeaderEpoch, Offset};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Positions in a segment are u32 in the index, so a segment stays below 4 GiB.
pub const SEGMENT_SIZE_MAX: u64 = u32::MAX as u64;

/// Read size when scanning a segment during recovery.
const SCAN_CHUNK_BYTES: usize = 1 << 20;

/// Bound on one batch read from disk, so a corrupt length allocates little.
pub const BATCH_SIZE_MAX: usize = 256 << 20;

/// A byte range of a segment file, sent later with `sendfile`.
#[derive(Clone, Debug)]
pub struct FileRegion {
    pub file: Arc<File>,
    pub position: u64,
    pub len: usize,
}

impl sluice_protocol::fetch_response::Region for FileRegion {
    fn len(&self) -> usize {
        self.len
    }
}

/// What recovery found in a segment.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RecoveryOutcome {
    /// Byte position and reason of the first invalid batch, if any.
    pub invalid_at: Option<(u64, String)>,
    pub batches: u64,
}

/// A segment of a partition's log.
#[derive(Debug)]
pub struct Segment {
    base: Offset,
    log_path: PathBuf,
    log: Arc<File>,
    size: u64,
    next_offset: Offset,
    max_timestamp: i64,
    offset_of_max_timestamp: Offset,
    bytes_since_index: u64,
    index: OffsetIndex,
    time_index: TimeIndex,
    /// Transactions whose ABORT marker is in this segment.
    txn_index: TxnIndex,
    /// Wall-clock ms of the first append, for `segment.ms` rolls.
    first_append_ms: Option<i64>,
    /// How far the file's blocks are allocated (`fallocate`, past its
    /// size); `u64::MAX` once the file system has refused.
    allocated: u64,
}

/// How far ahead of the appends a segment's blocks are allocated: as much
/// as it already holds, within these bounds, so a quiet partition (every
/// `__consumer_offsets` one, say) reserves little and a busy one asks the
/// file system rarely.
const ALLOCATE_AHEAD_MIN: u64 = 1 << 20;
const ALLOCATE_AHEAD_MAX: u64 = 32 << 20;

fn paths(dir: &Path, base: Offset) -> (PathBuf, PathBuf, PathBuf) {
    let stem = segment_stem(base.0);
    (
        dir.join(format!("{stem}.log")),
        dir.join(format!("{stem}.index")),
        dir.join(format!("{stem}.timeindex")),
    )
}

/// Calls `f(position, batch)` for each whole batch in `file` from `from`
/// to `to`. Stops at the first batch that is short, too large or fails
/// `f`, and returns that position with the reason.
fn scan_batches(
    file: &File,
    path: &Path,
    from: u64,
    to: u64,
    mut f: impl FnMut(u64, &[u8]) -> std::result::Result<(), String>,
) -> Result<Option<(u64, String)>> {
    let mut buf = vec![0u8; SCAN_CHUNK_BYTES];
    let mut pos = from;
    while pos < to {
        let want = ((to - pos) as usize).min(buf.len());
        file.read_exact_at(&mut buf[..want], pos)
            .map_err(StorageError::io("read segment", path))?;
        let mut at = 0usize;
        while at < want {
            let rest = &buf[at..want];
            if rest.len() < LOG_OVERHEAD {
                if pos + (at + rest.len()) as u64 >= to {
                    return Ok(Some((pos + at as u64, "torn batch header".into())));
                }
                break;
            }
            let len = i32::from_be_bytes(rest[8..12].try_into().expect("4 bytes"));
            let size = LOG_OVERHEAD as i64 + i64::from(len);
            if len < (BATCH_HEADER_SIZE - LOG_OVERHEAD) as i32 || size as usize > BATCH_SIZE_MAX {
                return Ok(Some((
                    pos + at as u64,
                    format!("impossible batch_length {len}"),
                )));
            }
            let size = size as usize;
            if size > rest.len() {
                if pos + (at + size) as u64 > to {
                    return Ok(Some((pos + at as u64, "torn batch".into())));
                }
                if at == 0 {
                    // A batch larger than the buffer: read it alone.
                    let mut big = vec![0u8; size];
                    file.read_exact_at(&mut big, pos)
                        .map_err(StorageError::io("read segment", path))?;
                    if let Err(reason) = f(pos, &big) {
                        return Ok(Some((pos, reason)));
                    }
                    at = size;
                }
                break;
            }
            if let Err(reason) = f(pos + at as u64, &rest[..size]) {
                return Ok(Some((pos + at as u64, reason)));
            }
            at += size;
        }
        pos += at as u64;
    }
    Ok(None)
}

impl Segment {
    /// Creates an empty segment whose first offset will be `base`.
    pub fn create(dir: &Path, base: Offset) -> Result<Segment> {
        // A segment half made (its `.log` created, an index not, on a
        // full disk) would make every later attempt fail on the existing
        // `.log`: its files go with the error.
        Segment::create_files(dir, base).inspect_err(|_| {
            if let Err(e) = delete_files(dir, base) {
                tracing::warn!(dir = %dir.display(), base = base.0, error = %e, "removing a segment that could not be created");
            }
        })
    }

    fn create_files(dir: &Path, base: Offset) -> Result<Segment> {
        let (log_path, index_path, time_path) = paths(dir, base);
        let log = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&log_path)
            .map_err(StorageError::io("create segment", &log_path))?;
        Ok(Segment {
            allocated: 0,
            base,
            log: Arc::new(log),
            size: 0,
            next_offset: base,
            max_timestamp: -1,
            offset_of_max_timestamp: base,
            bytes_since_index: 0,
            index: OffsetIndex::open(&index_path, base, true)?,
            time_index: TimeIndex::open(&time_path, base, true)?,
            txn_index: TxnIndex::create(&txn_index::path_for(&log_path))?,
            first_append_ms: None,
            log_path,
        })
    }

    /// Opens an existing segment. `active` loads its indexes into memory.
    /// Neither the log nor the indexes are verified here: call
    /// [`Segment::recover`] after an unclean stop, [`Segment::load`] after a
    /// clean one.
    pub fn open(dir: &Path, base: Offset, active: bool) -> Result<Segment> {
        let (log_path, index_path, time_path) = paths(dir, base);
        let log = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&log_path)
            .map_err(StorageError::io("open segment", &log_path))?;
        let size = log
            .metadata()
            .map_err(StorageError::io("stat segment", &log_path))?
            .len();
        Ok(Segment {
            allocated: size,
            base,
            log: Arc::new(log),
            size,
            next_offset: base,
            max_timestamp: -1,
            offset_of_max_timestamp: base,
            bytes_since_index: 0,
            index: OffsetIndex::open(&index_path, base, active)?,
            time_index: TimeIndex::open(&time_path, base, active)?,
            txn_index: TxnIndex::open(&txn_index::path_for(&log_path))?,
            first_append_ms: None,
            log_path,
        })
    }

    /// After a clean stop: checks the indexes (rebuilding them if they fail)
    /// and reads the tail after the last index entry to learn the next offset.
    pub fn load(&mut self, index_interval: u64) -> Result<()> {
        if self.index.sanity_check(self.size).is_err() {
            tracing::warn!(path = %self.log_path.display(), "offset index failed its sanity check; rebuilding");
            return self.rebuild(index_interval);
        }
        let from = u64::from(self.index.lookup(Offset(i64::MAX))?);
        let mut next = self.base;
        let mut max_ts = self.time_index.last_timestamp()?.unwrap_or(-1);
        let invalid = scan_batches(&self.log, &self.log_path, from, self.size, |_, b| {
            let h = BatchHeader::parse(b).ok_or("short batch")?;
            next = h.next_offset();
            max_ts = max_ts.max(h.max_timestamp);
            Ok(())
        })?;
        if let Some((position, reason)) = invalid {
            return Err(StorageError::Corrupt {
                path: self.log_path.clone(),
                position,
                reason,
            });
        }
        // A sealed segment's time index ends with its largest timestamp.
        // Without it the index was not all written before the machine
        // went down (index files are derived and may lag the log): both
        // are rebuilt from the log.
        let indexed = self.time_index.last_timestamp()?.unwrap_or(-1);
        if !self.time_index.is_open() && max_ts > indexed {
            tracing::warn!(path = %self.log_path.display(), "time index lacks the segment's last entry; rebuilding the indexes");
            return self.rebuild(index_interval);
        }
        self.next_offset = next;
        self.max_timestamp = max_ts;
        Ok(())
    }

    /// Rebuilds the indexes from a log that must be whole: an invalid batch
    /// is an error.
    fn rebuild(&mut self, index_interval: u64) -> Result<()> {
        match self.recover(index_interval)?.invalid_at {
            None => Ok(()),
            Some((position, reason)) => Err(StorageError::Corrupt {
                path: self.log_path.clone(),
                position,
                reason,
            }),
        }
    }

    /// Verifies every batch (length, magic, CRC, rising offsets), rebuilds
    /// both indexes and learns the next offset. Stops at the first invalid
    /// batch and reports it; the caller decides whether to truncate there.
    pub fn recover(&mut self, index_interval: u64) -> Result<RecoveryOutcome> {
        self.index.clear()?;
        self.time_index.clear()?;
        self.next_offset = self.base;
        self.max_timestamp = -1;
        self.bytes_since_index = 0;
        let mut batches = 0u64;
        let log = Arc::clone(&self.log);
        let path = self.log_path.clone();
        let invalid = scan_batches(&log, &path, 0, self.size, |pos, b| {
            let h = record_batch::validate_stored_batch(b, 0).map_err(|e| e.to_string())?;
            if h.base_offset < self.next_offset {
                return Err(format!("offset {} goes backwards", h.base_offset));
            }
            // The base offset is outside the CRC: a damaged one can jump
            // past what the indexes' 4-byte relative offsets hold. No
            // append writes that (a segment rolls long before), so it is
            // damage, not data.
            if h.last_offset().0 - self.base.0 > i64::from(u32::MAX) {
                return Err(format!(
                    "offset {} is past the segment's reach (base {})",
                    h.last_offset(),
                    self.base
                ));
            }
            self.track_batch(pos, &h, index_interval)
                .map_err(|e| e.to_string())?;
            batches += 1;
            Ok(())
        })?;
        Ok(RecoveryOutcome {
            invalid_at: invalid,
            batches,
        })
    }

    /// Indexes a segment from the batches its writer recorded (each at its
    /// position), as [`Segment::recover`] would from reading it, which
    /// these spare: a cleaned segment the shard opens while serving.
    pub fn index_written(
        &mut self,
        batches: &[(u64, BatchHeader)],
        index_interval: u64,
    ) -> Result<()> {
        self.index.clear()?;
        self.time_index.clear()?;
        self.next_offset = self.base;
        self.max_timestamp = -1;
        self.bytes_since_index = 0;
        let mut end = 0;
        for (position, h) in batches {
            if *position != end || h.base_offset < self.next_offset {
                return Err(StorageError::Corrupt {
                    path: self.log_path.clone(),
                    position: *position,
                    reason: "the batches written do not follow each other".into(),
                });
            }
            self.track_batch(*position, h, index_interval)?;
            end = position + h.total_size() as u64;
        }
        if end != self.size {
            return Err(StorageError::Corrupt {
                path: self.log_path.clone(),
                position: end,
                reason: format!("{} bytes written, {} on disk", end, self.size),
            });
        }
        Ok(())
    }

    /// Updates indexes and counters for a batch written at `position`.
    fn track_batch(&mut self, position: u64, h: &BatchHeader, index_interval: u64) -> Result<()> {
        if self.bytes_since_index > index_interval {
            self.index.append(h.last_offset(), position as u32)?;
            self.time_index
                .maybe_append(self.max_timestamp, self.offset_of_max_timestamp)?;
            self.bytes_since_index = 0;
        }
        if h.max_timestamp > self.max_timestamp {
            self.max_timestamp = h.max_timestamp;
            self.offset_of_max_timestamp = h.last_offset();
        }
        self.bytes_since_index += h.total_size() as u64;
        self.next_offset = h.next_offset();
        Ok(())
    }

    /// Whether a CRC-valid batch follows the (invalid) batch at `position`:
    /// then the damage is in the middle of the data, not a torn tail, and
    /// truncating would throw away good batches.
    pub fn valid_batch_follows(&self, position: u64) -> Result<bool> {
        let Some(h) = self.read_header(position)? else {
            return Ok(false);
        };
        if h.batch_length < (BATCH_HEADER_SIZE - LOG_OVERHEAD) as i32
            || h.total_size() > BATCH_SIZE_MAX
        {
            return Ok(false);
        }
        let next = position + h.total_size() as u64;
        let Some(n) = self.read_header(next)? else {
            return Ok(false);
        };
        if n.total_size() > BATCH_SIZE_MAX || next + n.total_size() as u64 > self.size {
            return Ok(false);
        }
        let batch = self.read_batch(next, &n)?;
        Ok(record_batch::validate_stored_batch(&batch, 0).is_ok())
    }

    /// Cuts the log at `position` (a batch boundary) and re-learns the rest.
    pub fn truncate_at(&mut self, position: u64, index_interval: u64) -> Result<()> {
        self.log
            .set_len(position)
            .map_err(StorageError::io("truncate segment", &self.log_path))?;
        self.size = position;
        // Shrinking the file freed every block past the new end.
        self.allocated = self.allocated.min(position);
        self.recover(index_interval)?;
        self.txn_index.truncate_from(self.next_offset)
    }

    /// The segment's aborted-transaction index.
    pub fn txn_index(&self) -> &TxnIndex {
        &self.txn_index
    }

    /// Indexes a transaction whose ABORT marker is in this segment.
    pub fn add_aborted(&mut self, txn: AbortedTxn) -> Result<()> {
        assert!(txn.last_offset >= self.base && txn.last_offset < self.next_offset);
        self.txn_index.append(txn)
    }

    /// Drops the aborted transactions whose marker is at or past `offset`
    /// (they are rebuilt from there); the index is no longer lost.
    pub fn forget_aborted_from(&mut self, offset: Offset) -> Result<()> {
        self.txn_index.truncate_from(offset)?;
        if offset <= self.base {
            self.txn_index.mark_rebuilt();
        }
        Ok(())
    }

    /// Appends a validated record set, rewriting each batch's base offset
    /// (from `first`) and leader epoch on the way to the file: `pwritev`
    /// sends a patched copy of the 61-byte header and the untouched rest of
    /// each batch, so the payload is not copied in user space. With
    /// `log_append_time` (topics with `message.timestamp.type=LogAppendTime`)
    /// the header also gets that timestamp type and time, and a new CRC.
    pub fn append(
        &mut self,
        set: &[u8],
        first: Offset,
        epoch: LeaderEpoch,
        index_interval: u64,
        now_ms: i64,
        log_append_time: Option<i64>,
    ) -> Result<Offset> {
        if self.size + set.len() as u64 > SEGMENT_SIZE_MAX {
            return Err(StorageError::SegmentPositionOverflow {
                path: self.log_path.clone(),
            });
        }
        let mut patches: Vec<[u8; BATCH_HEADER_SIZE]> = Vec::new();
        let mut spans: Vec<(usize, usize)> = Vec::new();
        let mut headers = Vec::new();
        let mut next = first;
        let mut at = 0usize;
        while at < set.len() {
            let size = BatchHeader::parse(&set[at..])
                .expect("record set was validated")
                .total_size();
            let mut patch = [0u8; BATCH_HEADER_SIZE];
            patch.copy_from_slice(&set[at..at + BATCH_HEADER_SIZE]);
            record_batch::set_base_offset(&mut patch, next);
            record_batch::set_leader_epoch(&mut patch, epoch);
            if let Some(time) = log_append_time {
                record_batch::set_log_append_time(
                    &mut patch,
                    &set[at + BATCH_HEADER_SIZE..at + size],
                    time,
                );
            }
            let h = BatchHeader::parse(&patch).expect("whole header");
            patches.push(patch);
            spans.push((at + BATCH_HEADER_SIZE, at + size));
            headers.push((self.size + at as u64, h));
            next = h.next_offset();
            at += size;
        }
        let mut iov: Vec<libc::iovec> = Vec::with_capacity(patches.len() * 2);
        for (patch, (from, to)) in patches.iter().zip(&spans) {
            iov.push(libc::iovec {
                iov_base: patch.as_ptr() as *mut _,
                iov_len: BATCH_HEADER_SIZE,
            });
            if to > from {
                iov.push(libc::iovec {
                    iov_base: set[*from..].as_ptr() as *mut _,
                    iov_len: to - from,
                });
            }
        }
        self.allocate_for(self.size + set.len() as u64);
        if let Err(e) = pwritev_all(&self.log, &mut iov, self.size) {
            self.cut_failed_write();
            return Err(StorageError::io("append", &self.log_path)(e));
        }
        for (pos, h) in &headers {
            self.track_batch(*pos, h, index_interval)?;
        }
        self.size += set.len() as u64;
        self.first_append_ms.get_or_insert(now_ms);
        Ok(next)
    }

    /// Cuts what a failed write left past the last whole batch: a short
    /// write on a full disk (ENOSPC after part of the iovecs) leaves part
    /// of a batch in the file, which a reader stops at but recovery after
    /// a clean stop would call corrupt. Shrinking a file needs no free
    /// space, and it also gives back any blocks allocated past the end, so
    /// the next append asks for them again. If even this fails, the tail
    /// stays: the size this segment keeps is still the last whole batch's
    /// end, the next append overwrites from there, and recovery after a
    /// stop truncates a torn tail of the active segment.
    fn cut_failed_write(&mut self) {
        match self.log.set_len(self.size) {
            Ok(()) => self.allocated = self.size,
            Err(e) => {
                tracing::warn!(path = %self.log_path.display(), size = self.size, error = %e, "cutting a failed append's bytes");
            }
        }
    }

    /// Allocates the file's blocks ahead of the appends
    /// (`FALLOC_FL_KEEP_SIZE`: the size, and so recovery and reads, are
    /// unaffected). An append then writes into blocks that
    /// exist instead of reserving them page by page through ext4's delayed
    /// allocation, the largest cost of a buffered append. A file system
    /// that refuses is not asked again for this segment; a full one
    /// (ENOSPC) is asked again at the next append, after what it may have
    /// allocated in part is given back: the append itself may still fit.
    fn allocate_for(&mut self, end: u64) {
        if end <= self.allocated || self.allocated == u64::MAX {
            return;
        }
        let ahead = self.size.clamp(ALLOCATE_AHEAD_MIN, ALLOCATE_AHEAD_MAX);
        let len = ahead.max(end - self.allocated);
        // SAFETY: a plain syscall on a descriptor this segment owns.
        let r = unsafe {
            libc::fallocate(
                self.log.as_raw_fd(),
                libc::FALLOC_FL_KEEP_SIZE,
                self.allocated as libc::off_t,
                len as libc::off_t,
            )
        };
        if r == 0 {
            self.allocated += len;
            return;
        }
        let e = std::io::Error::last_os_error();
        if is_no_space(&e) {
            self.cut_failed_write();
        } else {
            self.allocated = u64::MAX;
        }
    }

    /// Gives back the blocks allocated past the end (a sealed segment
    /// grows no more).
    fn release_allocated(&mut self) {
        if self.allocated == u64::MAX || self.allocated <= self.size {
            return;
        }
        // Setting the length it has frees the blocks past it (a hole
        // punched beyond the end would be ignored).
        if let Err(e) = self.log.set_len(self.size) {
            tracing::warn!(path = %self.log_path.display(), error = %e, "giving back preallocated blocks");
            return;
        }
        self.allocated = self.size;
    }

    /// Headers of the batches in the last `tail_bytes` or so of the segment,
    /// in order, starting at an indexed batch boundary.
    pub fn tail_headers(&self, tail_bytes: u64) -> Result<Vec<BatchHeader>> {
        let from = self
            .size
            .saturating_sub(tail_bytes)
            .min(u64::from(u32::MAX)) as u32;
        let mut pos = u64::from(self.index.lookup_position(from)?);
        let mut out = Vec::new();
        while let Some(h) = self.read_header(pos)? {
            pos += h.total_size() as u64;
            if pos > self.size {
                break;
            }
            out.push(h);
        }
        Ok(out)
    }

    /// The header of the batch at `position`, if a whole header is there.
    pub fn read_header(&self, position: u64) -> Result<Option<BatchHeader>> {
        if position + BATCH_HEADER_SIZE as u64 > self.size {
            return Ok(None);
        }
        let mut h = [0u8; BATCH_HEADER_SIZE];
        self.log
            .read_exact_at(&mut h, position)
            .map_err(StorageError::io("read batch header", &self.log_path))?;
        Ok(BatchHeader::parse(&h))
    }

    /// Reads the whole batch at `position`.
    pub fn read_batch(&self, position: u64, header: &BatchHeader) -> Result<Vec<u8>> {
        let size = header.total_size().min(BATCH_SIZE_MAX);
        let mut b = vec![0u8; size];
        self.log
            .read_exact_at(&mut b, position)
            .map_err(StorageError::io("read batch", &self.log_path))?;
        Ok(b)
    }

    /// Position and header of the first batch whose last offset is at or
    /// after `offset`; `None` when the segment ends before it.
    pub fn find_batch(&self, offset: Offset) -> Result<Option<(u64, BatchHeader)>> {
        // When batches are larger than index.interval.bytes every batch is
        // indexed, and the first one ending at or after `offset` holds it:
        // one header read instead of a scan from the entry before.
        if let Some(pos) = self.index.lookup_ceiling(offset)? {
            if let Some(h) = self.read_header(u64::from(pos))? {
                if h.base_offset <= offset && offset <= h.last_offset() {
                    return Ok(Some((u64::from(pos), h)));
                }
            }
        }
        let mut pos = u64::from(self.index.lookup(offset)?);
        while let Some(h) = self.read_header(pos)? {
            if h.last_offset() >= offset {
                return Ok(Some((pos, h)));
            }
            pos += h.total_size() as u64;
        }
        Ok(None)
    }

    /// The last batch boundary at or below `limit`, at or after `start`
    /// (which must itself be a boundary), with the offset that follows the
    /// batches before it: the base offset of the batch the boundary starts,
    /// or the segment's next offset at its end.
    pub fn boundary_at_or_below(&self, start: u64, limit: u64) -> Result<(u64, Offset)> {
        if limit >= self.size {
            return Ok((self.size, self.next_offset));
        }
        let mut pos = u64::from(self.index.lookup_position(limit as u32)?).max(start);
        while let Some(h) = self.read_header(pos)? {
            let end = pos + h.total_size() as u64;
            if end > limit {
                return Ok((pos, h.base_offset));
            }
            pos = end;
        }
        Ok((pos, self.next_offset))
    }

    /// A region of the file.
    pub fn region(&self, position: u64, len: usize) -> FileRegion {
        FileRegion {
            file: Arc::clone(&self.log),
            position,
            len,
        }
    }

    /// First offset at or after which a record has a timestamp at or above
    /// `timestamp`, with the batch holding it.
    pub fn find_timestamp(&self, timestamp: i64) -> Result<Option<(u64, BatchHeader)>> {
        if self.max_timestamp < timestamp {
            return Ok(None);
        }
        let start = self.time_index.lookup(timestamp)?;
        let mut pos = u64::from(self.index.lookup(start)?);
        while let Some(h) = self.read_header(pos)? {
            if h.max_timestamp >= timestamp {
                return Ok(Some((pos, h)));
            }
            pos += h.total_size() as u64;
        }
        Ok(None)
    }

    /// Writes pending index entries and fdatasyncs the log and indexes.
    pub fn flush(&mut self) -> Result<()> {
        self.flush_indexes()?;
        self.log
            .sync_data()
            .map_err(StorageError::io("fsync segment", &self.log_path))?;
        self.index.sync()?;
        self.time_index.sync()?;
        self.txn_index
            .file()
            .sync_data()
            .map_err(StorageError::io("fsync transaction index", &self.log_path))
    }

    /// Writes pending index entries without syncing.
    pub fn flush_indexes(&mut self) -> Result<()> {
        self.index.flush()?;
        self.time_index.flush()
    }

    /// Makes the segment read-only: final time-index entry, indexes written
    /// and dropped from memory.
    pub fn seal(&mut self) -> Result<()> {
        if self.max_timestamp >= 0 {
            self.time_index
                .maybe_append(self.max_timestamp, self.offset_of_max_timestamp)?;
        }
        // The writes before any change of state: if one fails (a full
        // disk), the segment stays active with both indexes in memory, and
        // sealing can be tried again (the entry above is not added twice).
        self.flush_indexes()?;
        self.release_allocated();
        self.index.seal()?;
        self.time_index.seal()
    }

    /// Deletes the segment's files.
    pub fn delete(self) -> Result<()> {
        delete_files(self.log_path.parent().unwrap_or(Path::new(".")), self.base)
    }

    /// Renames the segment's files with the [`DELETED_SUFFIX`] (readers
    /// holding the open log file go on reading it) and returns their new
    /// paths, to remove once `file.delete.delay.ms` has passed.
    pub fn retire(self) -> Result<Vec<PathBuf>> {
        retire_files(self.log_path.parent().unwrap_or(Path::new(".")), self.base)
    }

    /// Entries in the offset index and the time index: the segment rolls
    /// before either outgrows `segment.index.bytes`.
    pub fn index_entries(&self) -> (usize, usize) {
        (self.index.len(), self.time_index.len())
    }

    #[cfg(test)]
    pub fn time_index_is_empty(&self) -> bool {
        self.time_index.is_empty()
    }

    pub fn base(&self) -> Offset {
        self.base
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn next_offset(&self) -> Offset {
        self.next_offset
    }

    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp
    }

    pub fn first_append_ms(&self) -> Option<i64> {
        self.first_append_ms
    }

    pub fn log_file(&self) -> &Arc<File> {
        &self.log
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }
}

/// Suffix of a deleted segment's files waiting for
/// `file.delete.delay.ms`, as Kafka names them.
pub const DELETED_SUFFIX: &str = ".deleted";

/// Removes every file of `dir` named with [`DELETED_SUFFIX`]: at open,
/// files a previous run renamed and did not get to remove. Returns how
/// many.
pub fn remove_deleted_files(dir: &Path) -> Result<usize> {
    let mut removed = 0;
    for entry in std::fs::read_dir(dir).map_err(StorageError::io("list", dir))? {
        let entry = entry.map_err(StorageError::io("list", dir))?;
        if !entry
            .file_name()
            .to_string_lossy()
            .ends_with(DELETED_SUFFIX)
        {
            continue;
        }
        let path = entry.path();
        std::fs::remove_file(&path).map_err(StorageError::io("remove deleted segment", &path))?;
        removed += 1;
    }
    Ok(removed)
}

/// Deletes the files of the segment at `base` in `dir`, whichever exist.
pub fn delete_files(dir: &Path, base: Offset) -> Result<()> {
    let (log, index, time) = paths(dir, base);
    let txn = txn_index::path_for(&log);
    for p in [log, index, time, txn] {
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(StorageError::Io {
                    op: "delete segment",
                    path: p,
                    source: e,
                })
            }
        }
    }
    Ok(())
}

/// Renames the files of the segment at `base` with the
/// [`DELETED_SUFFIX`] and returns their new paths (see
/// [`Segment::retire`]).
pub fn retire_files(dir: &Path, base: Offset) -> Result<Vec<PathBuf>> {
    let (log, index, time) = paths(dir, base);
    let txn = txn_index::path_for(&log);
    let mut retired = Vec::new();
    for p in [log, index, time, txn] {
        let mut to = p.clone().into_os_string();
        to.push(DELETED_SUFFIX);
        let to = PathBuf::from(to);
        match std::fs::rename(&p, &to) {
            Ok(()) => retired.push(to),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(StorageError::Io {
                    op: "rename deleted segment",
                    path: p,
                    source,
                })
            }
        }
    }
    Ok(retired)
}

/// Whether an I/O error says the file system has no room: no free
/// blocks (ENOSPC) or the owner's quota is used up (EDQUOT).
pub fn is_no_space(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

/// `pwritev` until every byte of `iov` is written.
fn pwritev_all(file: &File, iov: &mut [libc::iovec], mut position: u64) -> std::io::Result<()> {
    let fd = file.as_raw_fd();
    let mut first = 0usize;
    while first < iov.len() {
        let count = (iov.len() - first).min(1024) as libc::c_int;
        // SAFETY: the iovecs point into buffers borrowed for this call.
        let n = unsafe { libc::pwritev(fd, iov[first..].as_ptr(), count, position as libc::off_t) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        let mut n = n as usize;
        position += n as u64;
        while n > 0 {
            let v = &mut iov[first];
            if n >= v.iov_len {
                n -= v.iov_len;
                first += 1;
            } else {
                // SAFETY: advancing within the same buffer.
                v.iov_base = unsafe { (v.iov_base as *mut u8).add(n) } as *mut _;
                v.iov_len -= n;
                n = 0;
            }
        }
        while first < iov.len() && iov[first].iov_len == 0 {
            first += 1;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_protocol::record_batch::BatchBuilder;

    fn batch(n: usize, ts: i64) -> Vec<u8> {
        let mut b = BatchBuilder::new(ts);
        for i in 0..n {
            b.push(ts + i as i64, None, Some(&[7u8; 100]), &[]);
        }
        b.finish()
    }

    /// Appends `count` batches of ten records to a new segment at 0.
    fn filled(dir: &Path, count: i64) -> (Segment, Offset) {
        let mut s = Segment::create(dir, Offset(0)).unwrap();
        let mut next = Offset(0);
        for i in 0..count {
            next = s
                .append(&batch(10, i * 100), next, LeaderEpoch(0), 1024, 0, None)
                .unwrap();
        }
        (s, next)
    }

    #[test]
    fn append_find_and_recover() {
        let dir = tempfile::tempdir().unwrap();
        let (s, next) = filled(dir.path(), 50);
        assert_eq!(next, Offset(500));
        let (pos, h) = s.find_batch(Offset(255)).unwrap().unwrap();
        assert_eq!(h.base_offset, Offset(250));
        assert!(pos > 0);
        let (_, h) = s.find_timestamp(1_205).unwrap().unwrap();
        assert_eq!(h.base_offset, Offset(120));
        let (b, next) = s.boundary_at_or_below(pos, pos + 3000).unwrap();
        assert!(b > pos && b <= pos + 3000);
        assert_eq!(s.find_batch(next).unwrap().unwrap().0, b);
        // Torn tail: garbage after the last batch.
        let size = s.size();
        s.log_file().write_all_at(&[0xffu8; 30], size).unwrap();
        drop(s);
        let mut s = Segment::open(dir.path(), Offset(0), true).unwrap();
        let out = s.recover(1024).unwrap();
        assert_eq!(out.batches, 50);
        let (at, _) = out.invalid_at.unwrap();
        assert_eq!(at, size);
        s.truncate_at(at, 1024).unwrap();
        assert_eq!(s.next_offset(), Offset(500));
        assert_eq!(s.size(), size);
    }

    #[test]
    fn blocks_are_allocated_ahead_and_given_back_at_seal() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = filled(dir.path(), 20);
        let meta = s.log_file().metadata().unwrap();
        assert_eq!(
            meta.len(),
            s.size(),
            "allocation ahead leaves the size alone"
        );
        if s.allocated == u64::MAX {
            // This file system does not allocate ahead: appends work anyway.
            return;
        }
        assert!(s.allocated >= ALLOCATE_AHEAD_MIN && s.allocated > s.size());
        assert!(
            meta.blocks() * 512 >= ALLOCATE_AHEAD_MIN,
            "{} blocks",
            meta.blocks()
        );
        s.seal().unwrap();
        let meta = s.log_file().metadata().unwrap();
        assert_eq!(meta.len(), s.size());
        assert!(
            meta.blocks() * 512 < s.size() + 64 * 1024,
            "{} blocks for {} bytes after seal",
            meta.blocks(),
            s.size()
        );
    }

    #[test]
    fn clean_load_learns_next_offset() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Segment::create(dir.path(), Offset(7)).unwrap();
        let mut next = Offset(7);
        for _ in 0..30 {
            next = s
                .append(&batch(3, 5), next, LeaderEpoch(0), 512, 0, None)
                .unwrap();
        }
        s.flush().unwrap();
        drop(s);
        let mut s = Segment::open(dir.path(), Offset(7), true).unwrap();
        s.load(512).unwrap();
        assert_eq!(s.next_offset(), next);
    }
}
