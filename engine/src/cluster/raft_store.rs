//! The metadata log on disk, under `__cluster_metadata-0/` in the data
//! directory: `entries.log` holds Raft entries as length-prefixed
//! protobuf frames, appended and fdatasynced before Raft may count them;
//! `hardstate` holds the term, vote and commit index, and `snapshot` the
//! image as of an applied index, both replaced atomically.
//!
//! A later entry with an index already in the file replaces that entry
//! and everything after it (a new leader overwrote an uncommitted tail),
//! so replaying the frames in order through [`LogStorage::append`], which
//! truncates the same way, rebuilds exactly the log Raft saw. A torn last
//! frame (a crash mid-write) was never acknowledged and is cut off.
//!
//! A snapshot ends the entries it covers: once it is written,
//! `entries.log` is rewritten with only the entries after it, so the log
//! on disk and in memory stays as small as the cluster, not its history.
//! Entries at or below the snapshot's index left by a crash between the
//! two writes are skipped when the log is read.

use crate::storage::{write_atomically, Result, StorageError};
use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, Storage};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

pub const DIR: &str = "__cluster_metadata-0";
const ENTRIES: &str = "entries.log";
const HARDSTATE: &str = "hardstate";
const SNAPSHOT: &str = "snapshot";

/// The log as raft-rs reads it: the last snapshot and the entries after
/// it, in memory.
pub struct LogStorage {
    hard_state: HardState,
    conf_state: ConfState,
    /// Index 0 until the first snapshot.
    snapshot: Snapshot,
    /// `entries[i].index == snapshot index + 1 + i`.
    entries: Vec<Entry>,
}

impl LogStorage {
    fn new(voters: Vec<u64>) -> LogStorage {
        LogStorage {
            hard_state: HardState::default(),
            conf_state: ConfState::from((voters, vec![])),
            snapshot: Snapshot::default(),
            entries: Vec::new(),
        }
    }

    pub fn snapshot_index(&self) -> u64 {
        self.snapshot.get_metadata().index
    }

    fn first(&self) -> u64 {
        self.snapshot_index() + 1
    }

    fn last(&self) -> u64 {
        self.entries
            .last()
            .map_or(self.snapshot_index(), |e| e.index)
    }

    fn term_at(&self, index: u64) -> Option<u64> {
        let meta = self.snapshot.get_metadata();
        if index == meta.index {
            return Some(meta.term);
        }
        let i = index.checked_sub(self.first())?;
        self.entries.get(i as usize).map(|e| e.term)
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    pub fn set_hard_state(&mut self, hs: HardState) {
        self.hard_state = hs;
    }

    /// The entries after the snapshot.
    pub fn entries_after_snapshot(&self) -> &[Entry] {
        &self.entries
    }

    /// Appends `ents`, replacing the entries from the first of them on.
    /// Entries the snapshot covers are committed and already in it.
    pub fn append(&mut self, ents: &[Entry]) {
        let covered = ents
            .iter()
            .take_while(|e| e.index <= self.snapshot_index())
            .count();
        let Some(first) = ents.get(covered) else {
            return;
        };
        let keep = (first.index - self.first()) as usize;
        assert!(
            keep <= self.entries.len(),
            "metadata log entry {} leaves a gap after {}",
            first.index,
            self.last()
        );
        self.entries.truncate(keep);
        self.entries.extend_from_slice(&ents[covered..]);
    }

    /// Makes `snapshot` the start of the log. The entries after it stay
    /// when the log agrees with it (a snapshot taken here); otherwise the
    /// log is replaced by it (one sent by the leader to a voter that fell
    /// behind).
    pub fn install(&mut self, snapshot: Snapshot) {
        let meta = snapshot.get_metadata();
        if self.term_at(meta.index) == Some(meta.term) {
            let covered = (meta.index + 1).saturating_sub(self.first()) as usize;
            self.entries.drain(..covered.min(self.entries.len()));
        } else {
            self.entries.clear();
        }
        self.hard_state.commit = self.hard_state.commit.max(meta.index);
        self.hard_state.term = self.hard_state.term.max(meta.term);
        self.conf_state = meta.get_conf_state().clone();
        self.snapshot = snapshot;
    }
}

impl Storage for LogStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState {
            hard_state: self.hard_state.clone(),
            conf_state: self.conf_state.clone(),
        })
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low < self.first() {
            return Err(raft::Error::Store(raft::StorageError::Compacted));
        }
        if high > self.last() + 1 {
            return Err(raft::Error::Store(raft::StorageError::Unavailable));
        }
        let (from, to) = (
            (low - self.first()) as usize,
            (high - self.first()) as usize,
        );
        let mut ents = self.entries[from..to].to_vec();
        raft::util::limit_size(&mut ents, max_size.into());
        Ok(ents)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx < self.snapshot_index() {
            return Err(raft::Error::Store(raft::StorageError::Compacted));
        }
        self.term_at(idx)
            .ok_or(raft::Error::Store(raft::StorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.first())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        if self.snapshot_index() < request_index {
            return Err(raft::Error::Store(
                raft::StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        Ok(self.snapshot.clone())
    }
}

/// The persistent half of the Raft storage; [`LogStorage`] is the half
/// Raft reads.
pub struct RaftStore {
    dir: PathBuf,
    entries: File,
}

impl RaftStore {
    /// Opens (or creates) the log and loads it into a `LogStorage` whose
    /// voters are `voters`.
    pub fn open(data_dir: &Path, voters: Vec<u64>) -> Result<(RaftStore, LogStorage)> {
        let dir = data_dir.join(DIR);
        std::fs::create_dir_all(&dir).map_err(StorageError::io("create", &dir))?;
        let mut storage = LogStorage::new(voters);
        let snap_path = dir.join(SNAPSHOT);
        match std::fs::read(&snap_path) {
            Ok(b) => {
                let snap = Snapshot::parse_from_bytes(&b).map_err(|e| StorageError::Corrupt {
                    path: snap_path.clone(),
                    position: 0,
                    reason: e.to_string(),
                })?;
                storage.install(snap);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StorageError::io("read", &snap_path)(e)),
        }
        let path = dir.join(ENTRIES);
        let mut entries = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(StorageError::io("open", &path))?;
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
            if entry.index > storage.last() + 1 {
                return Err(StorageError::Corrupt {
                    path: path.clone(),
                    position: pos as u64,
                    reason: format!(
                        "entry {} after {}: the log has a gap",
                        entry.index,
                        storage.last()
                    ),
                });
            }
            storage.append(&[entry]);
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
                let mut hs =
                    HardState::parse_from_bytes(&b).map_err(|e| StorageError::Corrupt {
                        path: hs_path.clone(),
                        position: 0,
                        reason: e.to_string(),
                    })?;
                // A snapshot is of committed entries, whatever an older
                // hard state says.
                hs.commit = hs.commit.max(storage.snapshot_index());
                storage.set_hard_state(hs);
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
        let buf = frames(ents);
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

    /// Keeps `snapshot` and then only the entries after it, `kept`.
    pub fn save_snapshot(&mut self, snapshot: &Snapshot, kept: &[Entry]) -> Result<()> {
        let bytes = snapshot.write_to_bytes().expect("snapshot encodes");
        write_atomically(&self.dir.join(SNAPSHOT), &bytes)?;
        let path = self.dir.join(ENTRIES);
        write_atomically(&path, &frames(kept))?;
        self.entries = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(StorageError::io("open", &path))?;
        Ok(())
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

/// Entries as length-prefixed protobuf frames.
fn frames(ents: &[Entry]) -> Vec<u8> {
    let mut buf = Vec::new();
    for e in ents {
        let body = e.write_to_bytes().expect("entry encodes");
        buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
        buf.extend_from_slice(&body);
    }
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn snapshot(index: u64, term: u64, data: &[u8]) -> Snapshot {
        let mut s = Snapshot::default();
        s.mut_metadata().index = index;
        s.mut_metadata().term = term;
        s.mut_metadata()
            .set_conf_state(ConfState::from((vec![1], vec![])));
        s.data = data.to_vec().into();
        s
    }

    #[test]
    fn a_snapshot_ends_the_entries_it_covers_on_disk_and_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut store, mut mem) = RaftStore::open(dir.path(), vec![1]).unwrap();
            let ents: Vec<Entry> = (1..=5).map(|i| entry(i, 1, b"x")).collect();
            store.append(&ents).unwrap();
            mem.append(&ents);
            let snap = snapshot(3, 1, b"image");
            mem.install(snap.clone());
            assert_eq!(mem.first_index().unwrap(), 4);
            assert_eq!(mem.last_index().unwrap(), 5);
            assert_eq!(mem.term(3).unwrap(), 1);
            assert!(mem.term(2).is_err());
            assert!(mem
                .entries(3, 5, None, GetEntriesContext::empty(false))
                .is_err());
            store
                .save_snapshot(&snap, mem.entries_after_snapshot())
                .unwrap();
            store.append(&[entry(6, 2, b"y")]).unwrap();
        }
        let (store, mem) = RaftStore::open(dir.path(), vec![1]).unwrap();
        assert_eq!(mem.snapshot(0, 2).unwrap().data.as_ref(), b"image");
        assert_eq!(
            (mem.first_index().unwrap(), mem.last_index().unwrap()),
            (4, 6)
        );
        assert_eq!(mem.hard_state().commit, 3);
        let ents = mem
            .entries(4, 7, None, GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(ents.iter().map(|e| e.index).collect::<Vec<_>>(), [4, 5, 6]);
        assert!(store.entries_len() > 0);
    }

    #[test]
    fn a_snapshot_from_the_leader_replaces_a_log_that_disagrees() {
        let dir = tempfile::tempdir().unwrap();
        let (_, mut mem) = RaftStore::open(dir.path(), vec![1]).unwrap();
        mem.append(&[entry(1, 1, b"a"), entry(2, 1, b"b")]);
        mem.install(snapshot(7, 3, b"image"));
        assert_eq!(
            (mem.first_index().unwrap(), mem.last_index().unwrap()),
            (8, 7)
        );
        assert_eq!(mem.term(7).unwrap(), 3);
        assert_eq!(mem.hard_state().commit, 7);
        // Entries the snapshot covers are ignored; later ones follow it.
        mem.append(&[entry(7, 3, b"old"), entry(8, 3, b"c")]);
        assert_eq!(mem.last_index().unwrap(), 8);
    }
}
