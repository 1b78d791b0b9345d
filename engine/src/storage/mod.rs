//! Partition storage in Kafka's on-disk layout.
//!
//! ```text
//! <data_dir>/
//!   meta.properties                       node id, cluster id
//!   recovery-point-offset-checkpoint      flushed offset per partition
//!   log-start-offset-checkpoint           first offset per partition
//!   replication-offset-checkpoint         high watermark per partition
//!   .kafka_cleanshutdown                  present only after a clean stop
//!   __cluster_metadata-0/                 the metadata log (see cluster/raft_store.rs)
//!   <topic>-<partition>/
//!     00000000000000000000.log            record batches exactly as produced
//!     00000000000000000000.index          offset index (see offset_index.rs)
//!     00000000000000000000.timeindex      time index (see time_index.rs)
//!     00000000000000000000.txnindex       aborted transactions (see txn_index.rs)
//!     00000000000000000000.log.cleaned    a cleaned copy being written, then
//!     00000000000000000000.log.swap       committed (see cleaned.rs)
//!     00000000000000000100.snapshot       producer state below offset 100
//!                                         (see shard/producer_state.rs)
//!     leader-epoch-checkpoint             leader epoch starts (see leader_epoch.rs)
//!     partition.metadata                  topic id
//!   .space-reserve                        space held for a restart on a
//!                                         full disk (see reserve.rs)
//! ```
//!
//! Appends go to the page cache with `pwritev`; durability comes from
//! `fdatasync` as the flush policy asks. Reads for consumers never copy:
//! they return file regions that the network layer hands to `sendfile`.

pub mod checkpoint;
pub mod cleaned;
pub mod index_file;
pub mod leader_epoch;
pub mod log;
pub mod offset_index;
pub mod reserve;
pub mod segment;
pub mod snapshot_file;
pub mod time_index;
pub mod txn_index;

use std::io;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Storage failures. Corruption is its own variant so it is never mistaken
/// for a transient I/O error.
#[derive(Debug, Error)]
pub enum StorageError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("corrupt data in {path} at byte {position}: {reason}")]
    Corrupt {
        path: PathBuf,
        position: u64,
        reason: String,
    },
    #[error("offset {offset} is outside the log [{log_start}, {log_end}]")]
    OffsetOutOfRange {
        offset: i64,
        log_start: i64,
        log_end: i64,
    },
    #[error("segment full: {path} would pass 4 GiB of positions")]
    SegmentPositionOverflow { path: PathBuf },
}

impl StorageError {
    /// Whether the file system had no room for a write (ENOSPC, EDQUOT):
    /// a condition that passes once space is freed, unlike a failing disk.
    pub fn is_no_space(&self) -> bool {
        match self {
            StorageError::Io { source, .. } => segment::is_no_space(source),
            _ => false,
        }
    }
}

impl StorageError {
    /// Wraps an I/O error with the operation and file it concerned.
    pub fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StorageError + 'a {
        move |source| StorageError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}

pub type Result<T> = std::result::Result<T, StorageError>;

/// File name stem of a segment: its base offset, 20 digits, zero padded.
pub fn segment_stem(base_offset: i64) -> String {
    format!("{base_offset:020}")
}

/// Name of a partition's directory.
pub fn partition_dir_name(topic: &str, partition: i32) -> String {
    format!("{topic}-{partition}")
}

/// Name a failed replica's directory is renamed to before it is deleted:
/// `<topic>-<partition>.<uuid>-delete`, as Kafka names a replica it
/// deletes. It never parses as a partition directory, which ends in the
/// partition's number.
pub fn set_aside_dir_name(partition_dir: &str) -> String {
    format!("{partition_dir}.{}-delete", uuid::Uuid::new_v4().simple())
}

/// Whether `name` is a directory [`set_aside_dir_name`] made.
pub fn is_set_aside_dir_name(name: &str) -> bool {
    let Some(rest) = name.strip_suffix("-delete") else {
        return false;
    };
    rest.rsplit_once('.').is_some_and(|(dir, id)| {
        parse_partition_dir_name(dir).is_some()
            && id.len() == 32
            && id.bytes().all(|b| b.is_ascii_hexdigit())
    })
}

/// Deletes the set-aside replica directories a stop left in `data_dir`
/// before their deletion ended; an error is logged, not fatal.
pub fn remove_set_aside_dirs(data_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(data_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_str().is_some_and(is_set_aside_dir_name) {
            continue;
        }
        let path = entry.path();
        match std::fs::remove_dir_all(&path) {
            Ok(()) => {
                tracing::info!(dir = %path.display(), "deleted a failed replica's directory left by the last run")
            }
            Err(e) => {
                tracing::error!(dir = %path.display(), error = %e, "deleting a failed replica's directory failed")
            }
        }
    }
}

/// Splits a partition directory name into topic and partition.
pub fn parse_partition_dir_name(name: &str) -> Option<(&str, i32)> {
    let (topic, partition) = name.rsplit_once('-')?;
    let partition: i32 = partition.parse().ok()?;
    (partition >= 0 && !topic.is_empty()).then_some((topic, partition))
}

/// Writes `contents` to `path` atomically: temp file, fsync, rename, fsync dir.
pub fn write_atomically(path: &Path, contents: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let written = std::fs::File::create(&tmp)
        .map_err(StorageError::io("create", &tmp))
        .and_then(|mut f| {
            f.write_all(contents)
                .map_err(StorageError::io("write", &tmp))?;
            f.sync_all().map_err(StorageError::io("fsync", &tmp))
        });
    if let Err(e) = written {
        // A temp file left on a full disk holds blocks the disk lacks.
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path).map_err(StorageError::io("rename", path))?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Writes `contents` to a new file at `path`, without syncing: for the
/// files of a new partition, synced later (see `PartitionLog::create`).
pub fn write_unsynced(path: &Path, contents: &[u8]) -> Result<()> {
    std::fs::write(path, contents).map_err(StorageError::io("write", path))
}

/// fsyncs a directory so a created or renamed entry survives a crash.
pub fn sync_dir(dir: &Path) -> Result<()> {
    let d = std::fs::File::open(dir).map_err(StorageError::io("open dir", dir))?;
    d.sync_all().map_err(StorageError::io("fsync dir", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(segment_stem(42), "00000000000000000042");
        assert_eq!(
            parse_partition_dir_name("my-topic-3"),
            Some(("my-topic", 3))
        );
        assert_eq!(parse_partition_dir_name("nope"), None);
        assert_eq!(parse_partition_dir_name("-3"), None);
    }

    #[test]
    fn set_aside_directories_are_told_from_partition_directories() {
        let aside = set_aside_dir_name("my.topic-3");
        assert!(
            aside.starts_with("my.topic-3.") && aside.ends_with("-delete"),
            "{aside}"
        );
        assert!(is_set_aside_dir_name(&aside));
        assert_eq!(parse_partition_dir_name(&aside), None);
        for other in [
            "my.topic-3",
            "x-delete-0",
            "x.0123-delete",
            "meta.properties",
        ] {
            assert!(!is_set_aside_dir_name(other), "{other}");
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(&aside).join("inner")).unwrap();
        std::fs::create_dir(dir.path().join("my.topic-3")).unwrap();
        remove_set_aside_dirs(dir.path());
        assert!(!dir.path().join(&aside).exists());
        assert!(dir.path().join("my.topic-3").exists(), "a partition stays");
    }
}
