//! Making a new partition's creation durable through the shard's
//! io_uring (see `PartitionLog::create` for why it is deferred and
//! `shard/file_sync.rs` for who calls this).

use super::Partition;
use crate::storage::StorageError;
use std::path::{Path, PathBuf};

pub(super) fn io_error<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(glommio::GlommioError<()>) -> StorageError + 'a {
    move |e| StorageError::Io {
        op,
        path: path.to_path_buf(),
        source: std::io::Error::from(e),
    }
}

/// `fdatasync` of the file or directory at `path` through the ring.
pub(crate) async fn sync_path(path: &Path, dir: bool) -> Result<(), StorageError> {
    if dir {
        let d = glommio::io::Directory::open(path)
            .await
            .map_err(io_error("open dir", path))?;
        let synced = d.sync().await.map_err(io_error("fsync dir", path));
        let closed = d.close().await.map_err(io_error("close dir", path));
        return synced.and(closed);
    }
    let f = glommio::io::BufferedFile::open(path)
        .await
        .map_err(io_error("open", path))?;
    let synced = f.fdatasync().await.map_err(io_error("fdatasync", path));
    let closed = f.close().await.map_err(io_error("close", path));
    synced.and(closed)
}

impl Partition {
    /// Whether the partition's creation is not yet known durable.
    pub fn creation_unsynced(&self) -> bool {
        self.log.borrow().creation_unsynced()
    }

    /// Syncs the new partition's files, then its directory. Returns the
    /// directory holding it (the data directory), which must be synced
    /// next, once for all partitions created together, before
    /// [`Partition::mark_creation_synced`].
    /// These syncs count as a sync of the active segment in flight: no
    /// append writes into its files while they run (see
    /// [`Partition::sync_settled`]).
    pub async fn sync_created_files(&self) -> Result<PathBuf, StorageError> {
        self.sync_settled().await;
        let (files, dir) = {
            let log = self.log.borrow();
            (log.created_files(), log.dir().to_path_buf())
        };
        let synced = async {
            futures::future::try_join_all(files.iter().map(|f| sync_path(f, false))).await?;
            sync_path(&dir, true).await
        };
        self.syncing_active(synced).await?;
        Ok(dir.parent().unwrap_or(Path::new(".")).to_path_buf())
    }

    /// The partition's creation is durable: its files and directory were
    /// synced, then the directory holding it.
    pub fn mark_creation_synced(&self) {
        self.log.borrow_mut().mark_creation_synced();
    }
}
