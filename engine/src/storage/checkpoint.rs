//! Small text files Kafka keeps beside the logs, in Kafka's formats.
//!
//! ```text
//! offset checkpoint (recovery-point-offset-checkpoint, log-start-offset-checkpoint):
//!   0                       version
//!   <n>                     number of entries
//!   <topic> <partition> <offset>      n lines
//!
//! leader-epoch-checkpoint: see leader_epoch.rs
//!
//! partition.metadata:
//!   version: 0
//!   topic_id: <topic id, base64 url-safe without padding>
//! ```
//!
//! Files are replaced atomically (temp file, fsync, rename, fsync dir).

use super::{write_atomically, Result, StorageError};
use std::collections::BTreeMap;
use std::path::Path;

pub const RECOVERY_POINT_FILE: &str = "recovery-point-offset-checkpoint";
pub const LOG_START_FILE: &str = "log-start-offset-checkpoint";
pub const HIGH_WATERMARK_FILE: &str = "replication-offset-checkpoint";
pub const CLEAN_SHUTDOWN_FILE: &str = ".kafka_cleanshutdown";
pub const LEADER_EPOCH_FILE: &str = "leader-epoch-checkpoint";
pub const PARTITION_METADATA_FILE: &str = "partition.metadata";

/// Bound on entries in a checkpoint file, checked before allocating.
const CHECKPOINT_ENTRIES_MAX: usize = 1_000_000;

/// Per-partition offsets keyed by (topic, partition).
pub type OffsetMap = BTreeMap<(String, i32), i64>;

fn corrupt(path: &Path, line: usize, reason: &str) -> StorageError {
    StorageError::Corrupt {
        path: path.to_path_buf(),
        position: line as u64,
        reason: reason.to_string(),
    }
}

/// Writes an offset checkpoint file.
pub fn write_offsets(path: &Path, offsets: &OffsetMap) -> Result<()> {
    let mut text = format!("0\n{}\n", offsets.len());
    for ((topic, partition), offset) in offsets {
        text.push_str(&format!("{topic} {partition} {offset}\n"));
    }
    write_atomically(path, text.as_bytes())
}

/// Reads an offset checkpoint file; a missing file is empty.
pub fn read_offsets(path: &Path) -> Result<OffsetMap> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(OffsetMap::new()),
        Err(e) => {
            return Err(StorageError::Io {
                op: "read checkpoint",
                path: path.to_path_buf(),
                source: e,
            })
        }
    };
    let mut lines = text.lines();
    if lines.next() != Some("0") {
        return Err(corrupt(path, 1, "unknown version"));
    }
    let count: usize = lines
        .next()
        .and_then(|l| l.trim().parse().ok())
        .filter(|n| *n <= CHECKPOINT_ENTRIES_MAX)
        .ok_or_else(|| corrupt(path, 2, "bad entry count"))?;
    let mut out = OffsetMap::new();
    for i in 0..count {
        let line = lines
            .next()
            .ok_or_else(|| corrupt(path, i + 3, "missing entry"))?;
        let mut parts = line.split(' ');
        let (Some(t), Some(p), Some(o), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(corrupt(path, i + 3, "expected: topic partition offset"));
        };
        let p: i32 = p
            .parse()
            .map_err(|_| corrupt(path, i + 3, "bad partition"))?;
        let o: i64 = o.parse().map_err(|_| corrupt(path, i + 3, "bad offset"))?;
        out.insert((t.to_string(), p), o);
    }
    Ok(out)
}

/// The contents of `partition.metadata` for a topic id.
pub fn partition_metadata_text(topic_id: uuid::Uuid) -> String {
    format!(
        "version: 0\ntopic_id: {}\n",
        base64_url(topic_id.as_bytes())
    )
}

/// Writes `partition.metadata` with the topic id, atomically and durably.
pub fn write_partition_metadata(dir: &Path, topic_id: uuid::Uuid) -> Result<()> {
    let text = partition_metadata_text(topic_id);
    write_atomically(&dir.join(PARTITION_METADATA_FILE), text.as_bytes())
}

/// Reads the topic id from `partition.metadata`.
pub fn read_partition_metadata(dir: &Path) -> Result<uuid::Uuid> {
    let path = dir.join(PARTITION_METADATA_FILE);
    let text = std::fs::read_to_string(&path).map_err(StorageError::io("read", &path))?;
    let id = text
        .lines()
        .find_map(|l| l.strip_prefix("topic_id: "))
        .ok_or_else(|| corrupt(&path, 2, "no topic_id"))?;
    let bytes = base64_url_decode(id.trim()).ok_or_else(|| corrupt(&path, 2, "bad topic_id"))?;
    uuid::Uuid::from_slice(&bytes).map_err(|_| corrupt(&path, 2, "topic_id is not 16 bytes"))
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Base64, URL-safe alphabet, no padding (how Kafka prints ids).
pub fn base64_url(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 4 / 3 + 2);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// Inverse of [`base64_url`].
pub fn base64_url_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = B64.iter().position(|b| *b == c)? as u32;
        acc = acc << 6 | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(RECOVERY_POINT_FILE);
        let mut m = OffsetMap::new();
        m.insert(("a-b".into(), 3), 42);
        write_offsets(&p, &m).unwrap();
        assert_eq!(read_offsets(&p).unwrap(), m);
        std::fs::write(&p, "0\n5\nx 1 2\n").unwrap();
        assert!(read_offsets(&p).is_err());
    }

    #[test]
    fn topic_id_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let id = uuid::Uuid::new_v4();
        write_partition_metadata(dir.path(), id).unwrap();
        assert_eq!(read_partition_metadata(dir.path()).unwrap(), id);
        assert_eq!(base64_url(&[0xfb, 0xff]), "-_8");
    }
}
