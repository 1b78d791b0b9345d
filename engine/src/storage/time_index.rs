//! Sparse time index: maps timestamps to offsets in a segment.
//!
//! ```text
//! entry (12 bytes, big-endian):
//!   0  8  timestamp        i64  largest timestamp seen up to this entry
//!   8  4  relative offset  u32  offset of that timestamp - segment base
//! ```
//!
//! An entry is added alongside an offset-index entry when the largest
//! timestamp so far has grown, so timestamps rise strictly.

use super::index_file::IndexFile;
use super::Result;
use sluice_protocol::Offset;
use std::path::Path;

pub const ENTRY_SIZE: usize = 12;

/// The time index of one segment.
#[derive(Debug)]
pub struct TimeIndex {
    base: Offset,
    file: IndexFile<ENTRY_SIZE>,
}

fn decode(e: &[u8; ENTRY_SIZE]) -> (i64, u32) {
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&e[..8]);
    (
        i64::from_be_bytes(ts),
        u32::from_be_bytes([e[8], e[9], e[10], e[11]]),
    )
}

impl TimeIndex {
    pub fn open(path: &Path, base: Offset, load: bool) -> Result<Self> {
        Ok(TimeIndex {
            base,
            file: IndexFile::open(path, load)?,
        })
    }

    pub fn len(&self) -> usize {
        self.file.len()
    }

    /// Whether entries can still be added (the active segment's index).
    pub fn is_open(&self) -> bool {
        self.file.is_open()
    }

    pub fn is_empty(&self) -> bool {
        self.file.is_empty()
    }

    /// Adds an entry if `timestamp` is above the last one.
    pub fn maybe_append(&mut self, timestamp: i64, offset: Offset) -> Result<()> {
        if let Some(last) = self.file.last()? {
            if decode(&last).0 >= timestamp {
                return Ok(());
            }
        }
        let relative = u32::try_from(offset.0 - self.base.0).expect("offset within segment");
        let mut e = [0u8; ENTRY_SIZE];
        e[..8].copy_from_slice(&timestamp.to_be_bytes());
        e[8..].copy_from_slice(&relative.to_be_bytes());
        self.file.push(e);
        Ok(())
    }

    /// An offset from which to scan for the first record at or after
    /// `timestamp`: the offset of the last entry below it, else the base.
    pub fn lookup(&self, timestamp: i64) -> Result<Offset> {
        let e = self.file.floor(|e| decode(e).0 < timestamp)?;
        Ok(e.map_or(self.base, |e| self.base.plus(i64::from(decode(&e).1))))
    }

    /// Largest timestamp indexed.
    pub fn last_timestamp(&self) -> Result<Option<i64>> {
        Ok(self.file.last()?.map(|e| decode(&e).0))
    }

    pub fn flush(&mut self) -> Result<()> {
        self.file.flush()
    }

    pub fn sync(&mut self) -> Result<()> {
        self.file.sync()
    }

    pub fn seal(&mut self) -> Result<()> {
        self.file.seal()
    }

    pub fn clear(&mut self) -> Result<()> {
        self.file.clear()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_finds_a_scan_start() {
        let dir = tempfile::tempdir().unwrap();
        let mut idx = TimeIndex::open(&dir.path().join("0.timeindex"), Offset(10), true).unwrap();
        idx.maybe_append(1000, Offset(12)).unwrap();
        idx.maybe_append(900, Offset(13)).unwrap(); // not above: skipped
        idx.maybe_append(2000, Offset(20)).unwrap();
        assert_eq!(idx.len(), 2);
        assert_eq!(idx.lookup(500).unwrap(), Offset(10));
        assert_eq!(idx.lookup(1500).unwrap(), Offset(12));
        assert_eq!(idx.lookup(2500).unwrap(), Offset(20));
    }
}
