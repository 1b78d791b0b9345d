//! Producer-state snapshot files, `<offset>.snapshot` (20 digits, as
//! Kafka names them): the producer state of a partition as of every batch
//! below `offset`, so recovery replays only the batches after it. The
//! bytes are the shard's to encode (see `shard/producer_state.rs`); this
//! module lists, writes (atomically: temporary file, fsync, rename) and
//! deletes the files.

use super::{segment_stem, write_atomically, Result, StorageError};
use sluice_protocol::Offset;
use std::path::{Path, PathBuf};

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
