//! Producer-state snapshot files, `<offset>.snapshot` (20 digits, as
//! Kafka names them): the producer state of a partition as of every batch
//! below `offset`, so recovery replays only the batches after it. The
//! bytes are the shard's to encode (see `shard/producer_state.rs`); this
//! module lists, writes (atomically: temporary file, fsync, rename) and
//! deletes the files. A snapshot taken while serving is written in two
//! steps around a sync the shard awaits ([`write_pending`], then
//! [`PendingSnapshot::publish`]), so the shard's thread never waits for
//! the disk.

use super::{segment_stem, write_atomically, Result, StorageError};
use sluice_protocol::Offset;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Snapshots kept per partition: the newest few, so one at or below the
/// recovery point survives a crash soon after a roll.
pub const SNAPSHOTS_KEPT: usize = 3;
/// Bound on a snapshot read back: 10,000 producers of under 120 bytes.
pub const SNAPSHOT_BYTES_MAX: u64 = 4 << 20;

fn path(dir: &Path, offset: Offset) -> PathBuf {
    dir.join(format!("{}.snapshot", segment_stem(offset.0)))
}

/// Offsets of the snapshots in `dir`, ascending.
pub fn list(dir: &Path) -> Result<Vec<Offset>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(StorageError::io("list", dir))? {
        let entry = entry.map_err(StorageError::io("list", dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(stem) = name.strip_suffix(".snapshot") {
            if let Ok(offset) = stem.parse::<i64>() {
                out.push(Offset(offset));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The bytes of the snapshot at `offset`.
pub fn read(dir: &Path, offset: Offset) -> Result<Vec<u8>> {
    let p = path(dir, offset);
    let len = std::fs::metadata(&p)
        .map_err(StorageError::io("stat snapshot", &p))?
        .len();
    if len > SNAPSHOT_BYTES_MAX {
        return Err(StorageError::Corrupt {
            path: p,
            position: 0,
            reason: format!("snapshot of {len} bytes"),
        });
    }
    std::fs::read(&p).map_err(StorageError::io("read snapshot", &p))
}

/// Writes the snapshot at `offset` and deletes all but the newest
/// [`SNAPSHOTS_KEPT`].
pub fn write(dir: &Path, offset: Offset, bytes: &[u8]) -> Result<()> {
    write_atomically(&path(dir, offset), bytes)?;
    let all = list(dir)?;
    let old = all.len().saturating_sub(SNAPSHOTS_KEPT);
    for o in &all[..old] {
        delete(dir, *o)?;
    }
    Ok(())
}

/// A snapshot written to a temporary file, neither synced nor named yet:
/// the shard syncs it through its ring, then [`PendingSnapshot::publish`]
/// names it, unless the log was cut meanwhile (the state would describe
/// batches that are gone).
#[derive(Debug)]
pub struct PendingSnapshot {
    dir: PathBuf,
    offset: Offset,
    cuts_seen: u64,
    cuts: Arc<AtomicU64>,
}

/// Writes the snapshot at `offset` to its temporary file, unsynced.
/// `cuts` counts the log's truncations.
pub fn write_pending(
    dir: &Path,
    offset: Offset,
    bytes: &[u8],
    cuts: &Arc<AtomicU64>,
) -> Result<PendingSnapshot> {
    let pending = PendingSnapshot {
        dir: dir.to_path_buf(),
        offset,
        cuts_seen: cuts.load(Ordering::Acquire),
        cuts: Arc::clone(cuts),
    };
    let tmp = pending.tmp_path();
    if let Err(e) = std::fs::write(&tmp, bytes) {
        let _ = std::fs::remove_file(&tmp);
        return Err(StorageError::io("write snapshot", &tmp)(e));
    }
    Ok(pending)
}

impl PendingSnapshot {
    /// The temporary file, to sync before [`PendingSnapshot::publish`].
    pub fn tmp_path(&self) -> PathBuf {
        path(&self.dir, self.offset).with_extension("snapshot.tmp")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Names the synced snapshot and deletes all but the newest
    /// [`SNAPSHOTS_KEPT`]; its directory is then to be synced. False (the
    /// file removed) if the log was cut since it was written.
    pub fn publish(self) -> Result<bool> {
        let tmp = self.tmp_path();
        if self.cuts.load(Ordering::Acquire) != self.cuts_seen {
            let _ = std::fs::remove_file(&tmp);
            return Ok(false);
        }
        let to = path(&self.dir, self.offset);
        std::fs::rename(&tmp, &to).map_err(StorageError::io("rename snapshot", &to))?;
        let all = list(&self.dir)?;
        for o in &all[..all.len().saturating_sub(SNAPSHOTS_KEPT)] {
            delete(&self.dir, *o)?;
        }
        Ok(true)
    }
}

/// Deletes the snapshot at `offset`.
pub fn delete(dir: &Path, offset: Offset) -> Result<()> {
    let p = path(dir, offset);
    match std::fs::remove_file(&p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StorageError::Io {
            op: "delete snapshot",
            path: p,
            source: e,
        }),
    }
}

/// Deletes the snapshots that do not describe the log `[start, end]`:
/// those past its end (their batches were cut) and below its start.
pub fn delete_outside(dir: &Path, start: Offset, end: Offset) -> Result<()> {
    for o in list(dir)? {
        if o > end || o < start {
            delete(dir, o)?;
        }
    }
    Ok(())
}

/// Deletes every snapshot (the log was emptied).
pub fn delete_all(dir: &Path) -> Result<()> {
    for o in list(dir)? {
        delete(dir, o)?;
    }
    Ok(())
}
