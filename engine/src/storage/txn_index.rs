//! The aborted-transaction index of one segment (`<base>.txnindex`, as
//! Kafka names it): one entry per transaction whose ABORT marker lies in
//! the segment, so a read_committed fetch can tell the consumer which
//! producers' records to drop in the range it returns.
//!
//! ```text
//! entry (34 bytes, big-endian), appended in marker order:
//!   0   2  version             i16  = 0
//!   2   8  producer_id         i64
//!  10   8  first_offset        i64  the transaction's first batch
//!  18   8  last_offset         i64  its ABORT marker
//!  26   8  last_stable_offset  i64  the partition's LSO once it ended
//! ```
//!
//! The entries are kept in memory as well (a few per aborted transaction;
//! the file is read once when the segment opens). The file is created
//! with the segment, so one that is missing was lost: the segment reports
//! it ([`TxnIndex::lost`]) and the partition rebuilds its entries by
//! replaying producer state over the segment's batches. A torn last entry
//! (the machine stopped during its write) is cut off and reported the
//! same way.
//!
//! `last_stable_offset` bounds a search: every transaction aborted later
//! that was open when this one ended started at or after it, and one
//! started later starts after this marker, so once an entry's
//! `last_stable_offset` reaches the upper bound of a read, no later entry
//! overlaps the read.

use super::{Result, StorageError};
use sluice_protocol::Offset;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Bytes per entry.
pub const ENTRY_SIZE: usize = 34;
const VERSION_OFFSET: usize = 0;
const PRODUCER_ID_OFFSET: usize = VERSION_OFFSET + 2;
const FIRST_OFFSET_OFFSET: usize = PRODUCER_ID_OFFSET + 8;
const LAST_OFFSET_OFFSET: usize = FIRST_OFFSET_OFFSET + 8;
const LAST_STABLE_OFFSET_OFFSET: usize = LAST_OFFSET_OFFSET + 8;
const _: () = assert!(LAST_STABLE_OFFSET_OFFSET + 8 == ENTRY_SIZE);
/// The only entry version.
const VERSION: i16 = 0;
/// Bound on one index file read at open: 4 GiB segments could hold at
/// most one marker per 70 bytes; far fewer in practice.
const FILE_BYTES_MAX: u64 = 1 << 30;

/// A transaction ended by an ABORT marker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: Offset,
    pub last_offset: Offset,
    pub last_stable_offset: Offset,
}

impl AbortedTxn {
    fn encode(&self) -> [u8; ENTRY_SIZE] {
        let mut b = [0u8; ENTRY_SIZE];
        b[VERSION_OFFSET..PRODUCER_ID_OFFSET].copy_from_slice(&VERSION.to_be_bytes());
        b[PRODUCER_ID_OFFSET..FIRST_OFFSET_OFFSET].copy_from_slice(&self.producer_id.to_be_bytes());
        b[FIRST_OFFSET_OFFSET..LAST_OFFSET_OFFSET]
            .copy_from_slice(&self.first_offset.0.to_be_bytes());
        b[LAST_OFFSET_OFFSET..LAST_STABLE_OFFSET_OFFSET]
            .copy_from_slice(&self.last_offset.0.to_be_bytes());
        b[LAST_STABLE_OFFSET_OFFSET..].copy_from_slice(&self.last_stable_offset.0.to_be_bytes());
        b
    }

    /// Decodes an entry; `None` if it cannot be one (wrong version, the
    /// transaction ending before it starts).
    fn decode(b: &[u8]) -> Option<AbortedTxn> {
        let i64_at = |at: usize| i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"));
        let version = i16::from_be_bytes([b[VERSION_OFFSET], b[VERSION_OFFSET + 1]]);
        let txn = AbortedTxn {
            producer_id: i64_at(PRODUCER_ID_OFFSET),
            first_offset: Offset(i64_at(FIRST_OFFSET_OFFSET)),
            last_offset: Offset(i64_at(LAST_OFFSET_OFFSET)),
            last_stable_offset: Offset(i64_at(LAST_STABLE_OFFSET_OFFSET)),
        };
        let sane = version == VERSION
            && txn.producer_id >= 0
            && txn.first_offset.0 >= 0
            && txn.first_offset <= txn.last_offset;
        sane.then_some(txn)
    }

    /// Whether the transaction has records in `[from, upto)`.
    pub fn overlaps(&self, from: Offset, upto: Offset) -> bool {
        self.last_offset >= from && self.first_offset < upto
    }
}

/// A segment's aborted-transaction index.
#[derive(Debug)]
pub struct TxnIndex {
    path: PathBuf,
    file: Arc<File>,
    entries: Vec<AbortedTxn>,
    /// The file was missing or torn at open: its entries must be rebuilt.
    lost: bool,
}

fn open_file(path: &Path, create_new: bool) -> Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .create_new(create_new)
        .open(path)
        .map_err(StorageError::io("open transaction index", path))
}

impl TxnIndex {
    /// Creates the empty index of a new segment.
    pub fn create(path: &Path) -> Result<TxnIndex> {
        Ok(TxnIndex {
            path: path.to_path_buf(),
            file: Arc::new(open_file(path, true)?),
            entries: Vec::new(),
            lost: false,
        })
    }

    /// Opens an existing segment's index, creating it empty (and marked
    /// lost) when it is missing; a torn or invalid tail is cut off.
    pub fn open(path: &Path) -> Result<TxnIndex> {
        let existed = path.exists();
        let file = open_file(path, false)?;
        let len = file
            .metadata()
            .map_err(StorageError::io("stat transaction index", path))?
            .len();
        if len > FILE_BYTES_MAX {
            return Err(StorageError::Corrupt {
                path: path.to_path_buf(),
                position: 0,
                reason: format!("transaction index of {len} bytes"),
            });
        }
        let mut bytes = vec![0u8; len as usize];
        file.read_exact_at(&mut bytes, 0)
            .map_err(StorageError::io("read transaction index", path))?;
        let mut entries = Vec::with_capacity(bytes.len() / ENTRY_SIZE);
        for chunk in bytes.chunks_exact(ENTRY_SIZE) {
            match AbortedTxn::decode(chunk) {
                Some(e)
                    if entries
                        .last()
                        .is_none_or(|l: &AbortedTxn| l.last_offset < e.last_offset) =>
                {
                    entries.push(e)
                }
                _ => break,
            }
        }
        let whole = (entries.len() * ENTRY_SIZE) as u64;
        let torn = whole != len;
        if torn {
            tracing::warn!(path = %path.display(), kept = entries.len(), "cutting the transaction index's torn or invalid tail; rebuilding it");
            file.set_len(whole)
                .map_err(StorageError::io("truncate transaction index", path))?;
        }
        if !existed {
            tracing::warn!(path = %path.display(), "transaction index missing; rebuilding it");
        }
        Ok(TxnIndex {
            path: path.to_path_buf(),
            file: Arc::new(file),
            entries,
            lost: torn || !existed,
        })
    }

    /// Whether the entries must be rebuilt from the log.
    pub fn lost(&self) -> bool {
        self.lost
    }

    /// The entries were rebuilt.
    pub fn mark_rebuilt(&mut self) {
        self.lost = false;
    }

    pub fn entries(&self) -> &[AbortedTxn] {
        &self.entries
    }

    pub fn file(&self) -> &Arc<File> {
        &self.file
    }

    /// Appends an entry; its marker follows every marker already indexed.
    pub fn append(&mut self, txn: AbortedTxn) -> Result<()> {
        assert!(txn.first_offset <= txn.last_offset);
        assert!(txn.last_stable_offset <= txn.last_offset.plus(1));
        if let Some(last) = self.entries.last() {
            assert!(
                last.last_offset < txn.last_offset,
                "{}: markers are indexed in order",
                self.path.display()
            );
        }
        let at = (self.entries.len() * ENTRY_SIZE) as u64;
        self.file
            .write_all_at(&txn.encode(), at)
            .map_err(StorageError::io("write transaction index", &self.path))?;
        self.entries.push(txn);
        Ok(())
    }

    /// Drops the entries whose marker is at or past `offset` (the log was
    /// cut there, or they are about to be rebuilt from there).
    pub fn truncate_from(&mut self, offset: Offset) -> Result<()> {
        let keep = self.entries.partition_point(|e| e.last_offset < offset);
        if keep == self.entries.len() {
            return Ok(());
        }
        self.entries.truncate(keep);
        self.file
            .set_len((keep * ENTRY_SIZE) as u64)
            .map_err(StorageError::io("truncate transaction index", &self.path))
    }

    /// Adds the entries overlapping `[from, upto)` to `out`; returns true
    /// once no later entry (in this index or a later segment's) can
    /// overlap it.
    pub fn collect(&self, from: Offset, upto: Offset, out: &mut Vec<AbortedTxn>) -> bool {
        let start = self.entries.partition_point(|e| e.last_offset < from);
        for e in &self.entries[start..] {
            if e.overlaps(from, upto) {
                out.push(*e);
            }
            if e.last_stable_offset >= upto {
                return true;
            }
        }
        false
    }
}

/// Path of the index of the segment whose `.log` is `log_path`.
pub fn path_for(log_path: &Path) -> PathBuf {
    log_path.with_extension("txnindex")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn txn(pid: i64, first: i64, last: i64, lso: i64) -> AbortedTxn {
        AbortedTxn {
            producer_id: pid,
            first_offset: Offset(first),
            last_offset: Offset(last),
            last_stable_offset: Offset(lso),
        }
    }

    #[test]
    fn entries_survive_reopening_and_queries_stop_at_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000000000.txnindex");
        let mut index = TxnIndex::create(&path).unwrap();
        index.append(txn(1, 0, 5, 2)).unwrap();
        index.append(txn(2, 2, 9, 10)).unwrap();
        index.append(txn(3, 12, 20, 21)).unwrap();
        drop(index);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 3 * 34);
        let index = TxnIndex::open(&path).unwrap();
        assert!(!index.lost());
        let mut out = Vec::new();
        // [6, 10): only pid 2 (ends at 9) overlaps; its LSO 10 ends the search.
        assert!(index.collect(Offset(6), Offset(10), &mut out));
        assert_eq!(out, vec![txn(2, 2, 9, 10)]);
        let mut out = Vec::new();
        assert!(!index.collect(Offset(0), Offset(100), &mut out));
        assert_eq!(out.len(), 3);
    }

    #[test]
    fn a_torn_tail_is_cut_and_a_missing_file_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000000000.txnindex");
        let mut index = TxnIndex::create(&path).unwrap();
        index.append(txn(1, 0, 5, 6)).unwrap();
        index.append(txn(2, 6, 9, 10)).unwrap();
        drop(index);
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(34 + 20).unwrap();
        let index = TxnIndex::open(&path).unwrap();
        assert!(index.lost());
        assert_eq!(index.entries(), &[txn(1, 0, 5, 6)]);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 34);
        std::fs::remove_file(&path).unwrap();
        let index = TxnIndex::open(&path).unwrap();
        assert!(index.lost() && index.entries().is_empty());
        assert!(path.exists());
    }

    #[test]
    fn truncation_drops_entries_whose_marker_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.txnindex");
        let mut index = TxnIndex::create(&path).unwrap();
        index.append(txn(1, 0, 5, 6)).unwrap();
        index.append(txn(2, 6, 9, 10)).unwrap();
        index.truncate_from(Offset(9)).unwrap();
        assert_eq!(index.entries(), &[txn(1, 0, 5, 6)]);
        drop(index);
        assert_eq!(TxnIndex::open(&path).unwrap().entries().len(), 1);
    }
}
