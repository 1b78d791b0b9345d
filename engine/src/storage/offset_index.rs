//! Sparse offset index: maps offsets to byte positions in a segment's `.log`.
//!
//! ```text
//! entry (8 bytes, big-endian):
//!   0  4  relative offset  u32  offset - segment base offset
//!   4  4  position         u32  byte position of a batch in the .log file
//! ```
//!
//! As in Kafka, an entry is added before appending a batch once more than
//! `index.interval.bytes` were appended since the last entry; the entry
//! holds the *last* offset of the batch appended at that position. Both
//! columns rise strictly, which [`OffsetIndex::sanity_check`] verifies.

use super::index_file::IndexFile;
use super::{Result, StorageError};
use sluice_protocol::Offset;
use std::path::Path;

pub const ENTRY_SIZE: usize = 8;

/// The offset index of one segment.
#[derive(Debug)]
pub struct OffsetIndex {
    base: Offset,
    file: IndexFile<ENTRY_SIZE>,
}

fn decode(e: &[u8; ENTRY_SIZE]) -> (u32, u32) {
    (
        u32::from_be_bytes([e[0], e[1], e[2], e[3]]),
        u32::from_be_bytes([e[4], e[5], e[6], e[7]]),
    )
}

impl OffsetIndex {
    pub fn open(path: &Path, base: Offset, load: bool) -> Result<Self> {
        Ok(OffsetIndex {
            base,
            file: IndexFile::open(path, load)?,
        })
    }

    pub fn len(&self) -> usize {
        self.file.len()
    }

    pub fn is_empty(&self) -> bool {
        self.file.is_empty()
    }

    /// Records that the batch at `position` ends at `last_offset`.
    pub fn append(&mut self, last_offset: Offset, position: u32) -> Result<()> {
        let relative = u32::try_from(last_offset.0 - self.base.0).expect("offset within segment");
        if let Some(last) = self.file.last()? {
            let (r, p) = decode(&last);
            assert!(
                relative > r && position > p,
                "index must rise: ({r},{p}) then ({relative},{position})"
            );
        }
        let mut e = [0u8; ENTRY_SIZE];
        e[..4].copy_from_slice(&relative.to_be_bytes());
        e[4..].copy_from_slice(&position.to_be_bytes());
        self.file.push(e);
        Ok(())
    }

    /// Position of the last indexed batch ending at or before `offset`, or
    /// 0: scanning forward from there reaches the batch holding `offset`.
    pub fn lookup(&self, offset: Offset) -> Result<u32> {
        if offset.0 < self.base.0 {
            return Ok(0);
        }
        let relative = (offset.0 - self.base.0).min(i64::from(u32::MAX)) as u32;
        let e = self.file.floor(|e| decode(e).0 <= relative)?;
        Ok(e.map_or(0, |e| decode(&e).1))
    }

    /// Position of the first indexed batch ending at or after `offset`.
    pub fn lookup_ceiling(&self, offset: Offset) -> Result<Option<u32>> {
        if offset.0 < self.base.0 {
            return Ok(None);
        }
        let relative = (offset.0 - self.base.0).min(i64::from(u32::MAX)) as u32;
        Ok(self
            .file
            .ceiling(|e| decode(e).0 >= relative)?
            .map(|e| decode(&e).1))
    }

    /// The last indexed position at or below `position`, or 0.
    pub fn lookup_position(&self, position: u32) -> Result<u32> {
        let e = self.file.floor(|e| decode(e).1 <= position)?;
        Ok(e.map_or(0, |e| decode(&e).1))
    }

    /// Checks the entries rise and stay within a log of `log_size` bytes.
    pub fn sanity_check(&self, log_size: u64) -> Result<()> {
        let mut prev: Option<(u32, u32)> = None;
        let corrupt = |i: usize, reason: &str| StorageError::Corrupt {
            path: self.file.path().to_path_buf(),
            position: (i * ENTRY_SIZE) as u64,
            reason: reason.to_string(),
        };
        for i in 0..self.len() {
            let (r, p) = decode(&self.file.entry(i)?);
            if u64::from(p) >= log_size.max(1) {
                return Err(corrupt(i, "position past the end of the log"));
            }
            if let Some((pr, pp)) = prev {
                if r <= pr || p <= pp {
                    return Err(corrupt(i, "entries do not rise"));
                }
            }
            prev = Some((r, p));
        }
        Ok(())
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
    fn lookups_and_persistence() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.index");
        let mut idx = OffsetIndex::open(&path, Offset(100), true).unwrap();
        idx.append(Offset(109), 4096).unwrap();
        idx.append(Offset(130), 9000).unwrap();
        assert_eq!(idx.lookup(Offset(105)).unwrap(), 0);
        assert_eq!(idx.lookup(Offset(109)).unwrap(), 4096);
        assert_eq!(idx.lookup(Offset(200)).unwrap(), 9000);
        assert_eq!(idx.lookup_position(5000).unwrap(), 4096);
        idx.seal().unwrap();
        assert_eq!(idx.lookup(Offset(131)).unwrap(), 9000);
        let reopened = OffsetIndex::open(&path, Offset(100), false).unwrap();
        assert_eq!(reopened.len(), 2);
        reopened.sanity_check(10_000).unwrap();
        assert!(reopened.sanity_check(5_000).is_err());
    }
}
