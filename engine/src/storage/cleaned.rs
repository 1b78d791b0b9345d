//! Replacing sealed segments with their cleaned copy, crash-safely.
//!
//! The log cleaner (`crate::cleaner`) rewrites a run of sealed segments
//! `[B, E)` into one new segment with the same base `B`. Its files go
//! through three names, Kafka's scheme:
//!
//! ```text
//! B.log.cleaned, B.txnindex.cleaned   being written; fsynced when whole
//! B.txnindex.swap, then B.log.swap     renamed, directory synced: the
//!                                      commit point is the .log.swap
//! (old segments in (B, E) deleted, B.index/B.timeindex removed)
//! B.txnindex, then B.log               renamed over the old ones
//! ```
//!
//! At open ([`recover`]) a `.cleaned` file, or a `.txnindex.swap` without
//! its `.log.swap`, is from a cleaning that never committed: it is
//! deleted and the old segments stand. A `.log.swap` is whole (it was
//! fsynced before its rename): the swap is finished, deleting the old
//! segments it covers and renaming it into place. Either way no record
//! is lost and no offset is held twice. The offset and time indexes of
//! the new segment are rebuilt from its batches.
//!
//! A swap runs on a cleaner thread, all of it ([`SwapJob::run`]): the
//! shard serves requests meanwhile. The log keeps the replaced segments
//! in place until it takes the answer, and anything that would remove
//! one first waits for that answer and puts the new segment in ([`SwapGate`]),
//! so a swap never runs over segments the log has changed.

use super::segment::{delete_files, retire_files, Segment};
use super::txn_index::{self, AbortedTxn, TxnIndex};
use super::{segment_stem, Result, StorageError};
use sluice_protocol::record_batch::{BatchHeader, BATCH_HEADER_SIZE};
use sluice_protocol::Offset;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const CLEANED: &str = ".cleaned";
const SWAP: &str = ".swap";

fn log_path(dir: &Path, base: Offset) -> PathBuf {
    dir.join(format!("{}.log", segment_stem(base.0)))
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// A cleaned segment being written (`<base>.log.cleaned`).
#[derive(Debug)]
pub struct CleanedSegment {
    dir: PathBuf,
    base: Offset,
    file: File,
    size: u64,
    next_offset: Offset,
    aborted: Vec<AbortedTxn>,
    /// The transaction index, once [`CleanedSegment::finish`] wrote it.
    txn_file: Option<File>,
    /// Each batch written, at its position: the swap indexes the new
    /// segment from these instead of reading it back.
    batches: Vec<(u64, BatchHeader)>,
    /// Finished and fdatasynced ([`CleanedSegment::finish_and_sync`]).
    synced: bool,
}

impl CleanedSegment {
    /// Starts the cleaned copy of the segments from `base`; a leftover of
    /// an earlier attempt is replaced.
    pub fn create(dir: &Path, base: Offset) -> Result<CleanedSegment> {
        let path = with_suffix(&log_path(dir, base), CLEANED);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(StorageError::io("create cleaned segment", &path))?;
        Ok(CleanedSegment {
            dir: dir.to_path_buf(),
            base,
            file,
            size: 0,
            next_offset: base,
            aborted: Vec::new(),
            txn_file: None,
            batches: Vec::new(),
            synced: false,
        })
    }

    fn path(&self) -> PathBuf {
        with_suffix(&log_path(&self.dir, self.base), CLEANED)
    }

    /// Appends whole batches, in offset order.
    pub fn append(&mut self, batches: &[u8]) -> Result<()> {
        let mut at = 0;
        while at < batches.len() {
            let h = BatchHeader::parse(&batches[at..]).expect("whole batches");
            assert!(h.base_offset >= self.next_offset, "cleaned batches rise");
            self.next_offset = h.next_offset();
            self.batches.push((self.size + at as u64, h));
            at += h.total_size();
        }
        assert_eq!(at, batches.len(), "whole batches");
        let path = self.path();
        self.file
            .write_all_at(batches, self.size)
            .map_err(StorageError::io("write cleaned segment", &path))?;
        self.size += batches.len() as u64;
        Ok(())
    }

    /// Carries over an aborted transaction whose marker the copy keeps.
    pub fn add_aborted(&mut self, txn: AbortedTxn) {
        self.aborted.push(txn);
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn base(&self) -> Offset {
        self.base
    }

    /// Deletes the files written so far (a cleaning given up).
    pub fn abandon(self) {
        let path = self.path();
        let txn = with_suffix(
            &txn_index::path_for(&log_path(&self.dir, self.base)),
            CLEANED,
        );
        drop(self);
        let _ = std::fs::remove_file(path);
        let _ = std::fs::remove_file(txn);
    }

    /// The offset after the last batch written.
    pub fn next_offset(&self) -> Offset {
        self.next_offset
    }

    /// Writes the transaction index beside the log and makes both
    /// durable; nothing is appended after. The cleaner does this on its
    /// own thread, so the swap, on the shard's, finds nothing to sync.
    pub fn finish_and_sync(&mut self) -> Result<()> {
        self.sync()
    }

    /// Writes the transaction index beside the log; nothing is appended
    /// after.
    fn finish(&mut self) -> Result<()> {
        let txn_path = with_suffix(
            &txn_index::path_for(&log_path(&self.dir, self.base)),
            CLEANED,
        );
        let _ = std::fs::remove_file(&txn_path);
        let mut index = TxnIndex::create(&txn_path)?;
        for t in &self.aborted {
            index.append(*t)?;
        }
        let file = index.file().try_clone().map_err(StorageError::io(
            "open cleaned transaction index",
            &txn_path,
        ))?;
        self.txn_file = Some(file);
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        if self.synced {
            return Ok(());
        }
        if self.txn_file.is_none() {
            self.finish()?;
        }
        for f in std::iter::once(&self.file).chain(self.txn_file.as_ref()) {
            f.sync_data()
                .map_err(StorageError::io("fsync cleaned segment", &self.path()))?;
        }
        self.synced = true;
        Ok(())
    }
}

/// Point at which a test may stop the process (kill -9 between the steps
/// of a swap). Read once from `SLUICE_CLEANER_CRASH_AT`: `swapped` (the
/// `.swap` files committed, old segments in place) or `deleted` (old
/// segments gone, `.swap` not yet renamed).
fn crash_point(step: &str) {
    thread_local! {
        static AT: Option<String> = std::env::var("SLUICE_CLEANER_CRASH_AT").ok();
    }
    if AT.with(|at| at.as_deref() == Some(step)) {
        tracing::warn!(step, "stopping at the cleaner's crash point");
        // SAFETY: ends the process at once, as kill -9 would: nothing
        // runs after, nothing is flushed.
        unsafe { libc::_exit(86) };
    }
}

/// A swap of a cleaned segment over the sealed segments it replaces:
/// every file operation of it, in the order [`recover`] expects, run on
/// a cleaner thread ([`SwapJob::run`]). The log that made it
/// (`PartitionLog::begin_swap`) keeps the replaced segments in place
/// meanwhile and lets nothing else remove them until it has the answer.
#[derive(Debug)]
pub struct SwapJob {
    cleaned: CleanedSegment,
    /// Bases of the replaced segments, the cleaned copy's own first.
    old: Vec<Offset>,
    /// `file.delete.delay.ms` is not 0: the replaced files are renamed
    /// `.deleted` rather than deleted.
    retire: bool,
    index_interval: u64,
}

/// A swap done: the new segment, opened, indexed from the batches written
/// and sealed, and the replaced files renamed `.deleted` (to remove after
/// `file.delete.delay.ms`).
#[derive(Debug)]
pub struct Installed {
    pub segment: Segment,
    pub retired: Vec<PathBuf>,
}

impl SwapJob {
    pub(super) fn new(
        cleaned: CleanedSegment,
        old: Vec<Offset>,
        retire: bool,
        index_interval: u64,
    ) -> SwapJob {
        assert_eq!(old.first(), Some(&cleaned.base));
        SwapJob {
            cleaned,
            old,
            retire,
            index_interval,
        }
    }

    /// Commits the copy (renamed `.swap`, the directory synced: from here
    /// a crash finishes the swap at open), deletes the replaced segments,
    /// renames the swap into place and opens it.
    pub fn run(self) -> Result<Installed> {
        let SwapJob {
            mut cleaned,
            old,
            retire,
            index_interval,
        } = self;
        cleaned.sync()?;
        let (dir, base) = (cleaned.dir.clone(), cleaned.base);
        let log = log_path(&dir, base);
        let txn = txn_index::path_for(&log);
        let rename = |from: &Path, to: &Path| {
            std::fs::rename(from, to).map_err(StorageError::io("rename cleaned segment", to))
        };
        rename(&with_suffix(&txn, CLEANED), &with_suffix(&txn, SWAP))?;
        rename(&with_suffix(&log, CLEANED), &with_suffix(&log, SWAP))?;
        let batches = std::mem::take(&mut cleaned.batches);
        drop(cleaned);
        super::sync_dir(&dir)?;
        crash_point("swapped");
        let mut retired = Vec::new();
        for b in old {
            if retire {
                retired.extend(retire_files(&dir, b)?);
            } else {
                delete_files(&dir, b)?;
            }
        }
        crash_point("deleted");
        rename_swap_into_place(&dir, base)?;
        let mut segment = Segment::open(&dir, base, false)?;
        segment.index_written(&batches, index_interval)?;
        segment.seal()?;
        // The directory is not synced again: a crash before the file
        // system commits the new names finishes the swap at open, and one
        // sync fewer per swap is one journal commit fewer under produce's
        // writes (a pass over 1 MiB segments swaps dozens of groups).
        Ok(Installed { segment, retired })
    }
}

/// Where a swap's answer waits for the log: the shard's cleaner task
/// takes it once its job ends, or the log, needing its segments settled
/// first (a truncation, say), waits here for it on its own thread.
#[derive(Debug, Default)]
pub struct SwapGate {
    answer: std::sync::Mutex<Option<Result<Installed>>>,
    answered: std::sync::Condvar,
}

impl SwapGate {
    /// Hands over the job's answer.
    pub fn answer(&self, answer: Result<Installed>) {
        *self.answer.lock().unwrap_or_else(|e| e.into_inner()) = Some(answer);
        self.answered.notify_all();
    }

    /// The answer, waiting for it if the job has not ended.
    pub(super) fn wait(&self) -> Result<Installed> {
        let mut answer = self.answer.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(a) = answer.take() {
                return a;
            }
            answer = self
                .answered
                .wait(answer)
                .unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Renames a committed swap of the segment at `base` into place (its old
/// segments are gone), removing the old segment's indexes.
fn rename_swap_into_place(dir: &Path, base: Offset) -> Result<()> {
    let log = log_path(dir, base);
    let txn = txn_index::path_for(&log);
    let stem = segment_stem(base.0);
    for stale in [
        dir.join(format!("{stem}.index")),
        dir.join(format!("{stem}.timeindex")),
    ] {
        match std::fs::remove_file(&stale) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StorageError::io("remove stale index", &stale)(e)),
        }
    }
    let txn_swap = with_suffix(&txn, SWAP);
    if txn_swap.exists() {
        std::fs::rename(&txn_swap, &txn).map_err(StorageError::io("rename swap", &txn))?;
    }
    std::fs::rename(with_suffix(&log, SWAP), &log).map_err(StorageError::io("rename swap", &log))
}

/// The offset after the last whole batch of a `.swap` file.
fn swap_next_offset(path: &Path, base: Offset) -> Result<Offset> {
    let file = File::open(path).map_err(StorageError::io("open swap", path))?;
    let size = file
        .metadata()
        .map_err(StorageError::io("stat swap", path))?
        .len();
    let mut pos = 0u64;
    let mut next = base;
    let mut h = [0u8; BATCH_HEADER_SIZE];
    while pos + BATCH_HEADER_SIZE as u64 <= size {
        file.read_exact_at(&mut h, pos)
            .map_err(StorageError::io("read swap", path))?;
        let Some(header) = BatchHeader::parse(&h) else {
            break;
        };
        if header.total_size() < BATCH_HEADER_SIZE || pos + header.total_size() as u64 > size {
            return Err(StorageError::Corrupt {
                path: path.to_path_buf(),
                position: pos,
                reason: "a committed swap file ends in a partial batch".into(),
            });
        }
        next = header.next_offset();
        pos += header.total_size() as u64;
    }
    Ok(next)
}

/// Finishes or rolls back a cleaning a crash interrupted, before the
/// partition's segments are opened (see the module doc).
pub fn recover(dir: &Path) -> Result<()> {
    let mut swaps = Vec::new();
    let mut stale = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(StorageError::io("list", dir))? {
        let entry = entry.map_err(StorageError::io("list", dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(CLEANED) {
            stale.push(entry.path());
        } else if let Some(stem) = name.strip_suffix(".log.swap") {
            if let Ok(base) = stem.parse::<i64>() {
                swaps.push(Offset(base));
            }
        } else if let Some(stem) = name.strip_suffix(".txnindex.swap") {
            let log = dir.join(format!("{stem}.log.swap"));
            if !log.exists() {
                stale.push(entry.path());
            }
        }
    }
    for path in &stale {
        tracing::warn!(path = %path.display(), "removing an uncommitted cleaned segment");
        std::fs::remove_file(path).map_err(StorageError::io("remove cleaned", path))?;
    }
    swaps.sort();
    for base in swaps {
        let swap = with_suffix(&log_path(dir, base), SWAP);
        let next = swap_next_offset(&swap, base)?;
        for replaced in segment_bases(dir)? {
            if replaced > base && replaced < next {
                delete_files(dir, replaced)?;
            }
        }
        tracing::warn!(path = %swap.display(), next = next.0, "finishing an interrupted segment swap");
        rename_swap_into_place(dir, base)?;
        super::sync_dir(dir)?;
    }
    Ok(())
}

fn segment_bases(dir: &Path) -> Result<Vec<Offset>> {
    let mut bases = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(StorageError::io("list", dir))? {
        let entry = entry.map_err(StorageError::io("list", dir))?;
        let name = entry.file_name();
        if let Some(stem) = name.to_string_lossy().strip_suffix(".log") {
            if let Ok(base) = stem.parse::<i64>() {
                bases.push(Offset(base));
            }
        }
    }
    Ok(bases)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_protocol::record_batch::BatchBuilder;

    fn batch_at(offset: i64) -> Vec<u8> {
        let mut b = BatchBuilder::new(1_000);
        b.push(1_000, Some(b"k"), Some(b"v"), &[]);
        let mut bytes = b.finish();
        sluice_protocol::record_batch::set_base_offset(&mut bytes, Offset(offset));
        bytes
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn an_uncommitted_cleaning_is_rolled_back_and_a_committed_swap_finished() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for base in [0i64, 5, 9] {
            std::fs::write(log_path(d, Offset(base)), batch_at(base)).unwrap();
        }
        std::fs::write(with_suffix(&log_path(d, Offset(0)), CLEANED), b"junk").unwrap();
        recover(d).unwrap();
        assert_eq!(
            names(d),
            vec![
                "00000000000000000000.log",
                "00000000000000000005.log",
                "00000000000000000009.log"
            ]
        );
        // A swap of [0, 6) replaces segments 0 and 5, not 9.
        let mut swap = batch_at(0);
        swap.extend(batch_at(5));
        std::fs::write(with_suffix(&log_path(d, Offset(0)), SWAP), &swap).unwrap();
        recover(d).unwrap();
        assert_eq!(
            names(d),
            vec!["00000000000000000000.log", "00000000000000000009.log"]
        );
        assert_eq!(std::fs::read(log_path(d, Offset(0))).unwrap(), swap);
    }
}
