//! Writing the partition's leader-epoch checkpoint through the shard's
//! io_uring, when taking over as leader left it behind the cache (see
//! `storage/leader_epoch.rs` for why that is allowed, and
//! `shard/file_sync.rs` for who calls this).
//!
//! The write keeps the synchronous path's crash safety: a temp file,
//! written and fdatasync'd, renamed over the checkpoint, and the
//! partition directory synced so the rename survives a crash. Only the
//! waiting moves: the open, write, sync and close of the temp file and
//! the directory's sync are submitted to the ring, so a shard taking over
//! 10,000 partitions has many of them in the kernel at once (where the
//! file system commits them together) and serves requests meanwhile,
//! instead of blocking on 20,000 syncs in turn.
//!
//! The directory is synced with `fdatasync` (glommio's `Directory::sync`):
//! a directory's entries are its data, and ext4 commits its journal for
//! any sync of a directory.

use super::created::io_error;
use super::Partition;
use crate::storage::leader_epoch::UnwrittenEpochs;
use crate::storage::StorageError;
use futures::channel::oneshot;
use std::path::{Path, PathBuf};

/// The temp file of a ring write. Not the synchronous path's `.tmp`:
/// that one may be created, written and renamed while a ring write is
/// between awaits, and must not be the file the ring write goes on
/// writing into.
fn ring_temp_path(path: &Path) -> PathBuf {
    path.with_extension("next")
}

impl Partition {
    /// Whether the leader-epoch checkpoint lags the cache.
    pub fn epochs_unwritten(&self) -> bool {
        self.log.borrow().epochs_lag()
    }

    /// Writes the leader-epoch checkpoint if it lags the cache. Callers
    /// at the same time share one write; returns once the file holds
    /// what the cache held when it was called (or something newer).
    pub async fn write_epochs(&self) -> Result<(), StorageError> {
        loop {
            let Some(unwritten) = self.log.borrow().unwritten_epochs() else {
                return Ok(());
            };
            if self.epochs_writing.get() {
                let (tx, rx) = oneshot::channel();
                self.epoch_waiters.borrow_mut().push(tx);
                let _ = rx.await;
                continue;
            }
            self.epochs_writing.set(true);
            let result = self.write_epochs_once(unwritten).await;
            self.epochs_writing.set(false);
            for w in self.epoch_waiters.borrow_mut().drain(..) {
                let _ = w.send(());
            }
            result?;
        }
    }

    /// One write of `unwritten`. If the cache changed meanwhile, the temp
    /// file is dropped instead of renamed (a newer version is due, or
    /// already written by a synchronous change), and the caller loops; so
    /// it does when a synchronous write came in during the rename.
    async fn write_epochs_once(&self, unwritten: UnwrittenEpochs) -> Result<(), StorageError> {
        let path = unwritten.path;
        let tmp = ring_temp_path(&path);
        let file = glommio::io::BufferedFile::create(&tmp)
            .await
            .map_err(io_error("create", &tmp))?;
        let written = write_all(&file, unwritten.contents).await;
        let synced = match written {
            Ok(()) => file.fdatasync().await.map_err(io_error("fdatasync", &tmp)),
            Err(e) => Err(e),
        };
        let closed = file.close().await.map_err(io_error("close", &tmp));
        synced.and(closed)?;
        let (current, sync_writes) = {
            let log = self.log.borrow();
            (
                log.epochs_current(unwritten.version),
                log.epochs_sync_writes(),
            )
        };
        if !current {
            let _ = glommio::io::remove(&tmp).await;
            return Ok(());
        }
        // The rename runs on the ring too: replacing the old file frees
        // its blocks, and on a file system mounted with `discard` that
        // waits for the device's discard, which on the shard's thread
        // stalled it for seconds over 10,000 partitions.
        glommio::io::rename(&tmp, &path)
            .await
            .map_err(io_error("rename", &path))?;
        if self.log.borrow().epochs_sync_writes() != sync_writes {
            // A synchronous write (a truncation, a follower's append) came
            // in during the rename, and may have been replaced by it.
            self.log.borrow_mut().rewrite_epochs();
            return Ok(());
        }
        super::created::sync_path(path.parent().unwrap_or(Path::new(".")), true).await?;
        self.log.borrow_mut().mark_epochs_written(unwritten.version);
        Ok(())
    }
}

/// Writes all of `contents` at the start of `file`.
async fn write_all(
    file: &glommio::io::BufferedFile,
    contents: Vec<u8>,
) -> Result<(), StorageError> {
    let path = file.path().map(|p| p.to_path_buf()).unwrap_or_default();
    let mut pos = 0usize;
    while pos < contents.len() {
        let n = file
            .write_at(contents[pos..].to_vec(), pos as u64)
            .await
            .map_err(io_error("write", &path))?;
        if n == 0 {
            return Err(StorageError::Io {
                op: "write",
                path,
                source: std::io::ErrorKind::WriteZero.into(),
            });
        }
        pos += n;
    }
    Ok(())
}
