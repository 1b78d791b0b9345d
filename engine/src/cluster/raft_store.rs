//! The metadata log on disk, under `__cluster_metadata-0/` in the data
//! directory: `entries.log` holds Raft entries as length-prefixed
//! protobuf frames, appended and fdatasynced before Raft may count them;
//! `hardstate` holds the term, vote and commit index, replaced atomically.
//!
//! A later entry with an index already in the file replaces that entry
//! and everything after it (a new leader overwrote an uncommitted tail),
//! so replaying the frames in order through [`MemStorage::append`], which
//! truncates the same way, rebuilds exactly the log Raft saw. A torn last
//! frame (a crash mid-write) was never acknowledged and is cut off.

use crate::storage::{write_atomically, Result, StorageError};
use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState};
use raft::storage::MemStorage;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

pub const DIR: &str = "__cluster_metadata-0";
const ENTRIES: &str = "entries.log";
const HARDSTATE: &str = "hardstate";

/// The persistent half of the Raft storage; [`MemStorage`] is the half
/// Raft reads.
pub struct RaftStore {
    dir: PathBuf,
    entries: File,
}

impl RaftStore {
    /// Opens (or creates) the log and loads it into a `MemStorage` whose
    /// voters are `voters`.
    pub fn open(data_dir: &Path, voters: Vec<u64>) -> Result<(RaftStore, MemStorage)> {
        let dir = data_dir.join(DIR);
        std::fs::create_dir_all(&dir).map_err(StorageError::io("create", &dir))?;
        let path = dir.join(ENTRIES);
        let mut entries = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(StorageError::io("open", &path))?;
        let storage = MemStorage::new_with_conf_state(ConfState::from((voters, vec![])));
        let mut bytes = Vec::new();
        entries
            .read_to_end(&mut bytes)
            .map_err(StorageError::io("read", &path))?;
        let mut pos = 0;
        while let Some(len) = bytes
            .get(pos..pos + 4)
            .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")) as usize)
        {
            let Some(frame) = bytes.get(pos + 4..pos + 4 + len) else {
                break;
            };
            let entry = Entry::parse_from_bytes(frame).map_err(|e| StorageError::Corrupt {
                path: path.clone(),
                position: pos as u64,
                reason: e.to_string(),
            })?;
            storage
                .wl()
                .append(&[entry])
                .map_err(|e| StorageError::Corrupt {
                    path: path.clone(),
                    position: pos as u64,
                    reason: e.to_string(),
                })?;
            pos += 4 + len;
        }
        if pos < bytes.len() {
            tracing::warn!(path = %path.display(), position = pos, "cutting a torn metadata log tail");
            entries
                .set_len(pos as u64)
                .map_err(StorageError::io("truncate", &path))?;
        }
        let hs_path = dir.join(HARDSTATE);
        match std::fs::read(&hs_path) {
            Ok(b) => {
                let hs = HardState::parse_from_bytes(&b).map_err(|e| StorageError::Corrupt {
                    path: hs_path.clone(),
                    position: 0,
                    reason: e.to_string(),
                })?;
                storage.wl().set_hardstate(hs);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StorageError::io("read", &hs_path)(e)),
        }
        Ok((RaftStore { dir, entries }, storage))
    }

    /// Appends entries and syncs them.
    pub fn append(&mut self, ents: &[Entry]) -> Result<()> {
        if ents.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::new();
        for e in ents {
            let body = e.write_to_bytes().expect("entry encodes");
            buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
            buf.extend_from_slice(&body);
        }
        let path = self.dir.join(ENTRIES);
        self.entries
            .write_all(&buf)
            .map_err(StorageError::io("write", &path))?;
        self.entries
            .sync_data()
            .map_err(StorageError::io("fdatasync", &path))
    }

    /// Replaces the hard state.
    pub fn set_hardstate(&self, hs: &HardState) -> Result<()> {
        let bytes = hs.write_to_bytes().expect("hardstate encodes");
        write_atomically(&self.dir.join(HARDSTATE), &bytes)
    }

    /// Size of the entries file (for tests and logs).
    pub fn entries_len(&self) -> u64 {
        self.entries.metadata().map(|m| m.len()).unwrap_or(0)
    }

    #[cfg(test)]
    fn append_garbage(&mut self, bytes: &[u8]) {
        self.entries.write_all(bytes).unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::Storage;

    fn entry(index: u64, term: u64, data: &[u8]) -> Entry {
        Entry {
            index,
            term,
            data: data.to_vec().into(),
            ..Default::default()
        }
    }

    #[test]
    fn entries_and_hardstate_survive_reopen_and_overwrites_replay() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut store, _) = RaftStore::open(dir.path(), vec![1]).unwrap();
            store
                .append(&[entry(1, 1, b"a"), entry(2, 1, b"b"), entry(3, 1, b"c")])
                .unwrap();
            // A new leader in term 2 replaced index 2 onwards.
            store.append(&[entry(2, 2, b"B")]).unwrap();
            let hs = HardState {
                term: 2,
                vote: 1,
                commit: 2,
                ..Default::default()
            };
            store.set_hardstate(&hs).unwrap();
            store.append_garbage(&[0, 0, 1, 0, 9, 9]);
        }
        let (store, mem) = RaftStore::open(dir.path(), vec![1]).unwrap();
        assert_eq!(mem.last_index().unwrap(), 2);
        let ents = mem
            .entries(1, 3, None, raft::GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(ents[1].data.as_ref(), b"B");
        assert_eq!(mem.initial_state().unwrap().hard_state.commit, 2);
        // The torn frame is gone.
        let (_, again) = RaftStore::open(dir.path(), vec![1]).unwrap();
        assert_eq!(again.last_index().unwrap(), 2);
        assert!(store.entries_len() > 0);
    }
}
