//! What the log cleaner (`crate::cleaner`) reads of a partition and how
//! it hands back a cleaned segment. The cleaner holds no borrow of the
//! log across its awaits: it reads sealed segments through their own file
//! handles and swaps its copy in with two synchronous calls around a
//! directory sync, each checking that the segments it read are still the
//! log's.

use super::created::sync_path;
use super::Partition;
use crate::config::TopicConfig;
use crate::storage::cleaned::CleanedSegment;
use crate::storage::log::SealedSegment;
use crate::storage::StorageError;
use sluice_protocol::Offset;
use std::sync::Arc;

/// A partition's log as the cleaner plans a pass over it.
#[derive(Debug)]
pub struct CleanerView {
    pub dir: std::path::PathBuf,
    pub config: Arc<TopicConfig>,
    pub log_start: Offset,
    /// Nothing at or past the last stable offset is cleaned: open
    /// transactions and records not yet on every in-sync replica.
    pub last_stable: Offset,
    pub sealed: Vec<SealedSegment>,
}

impl Partition {
    /// Whether the topic's `cleanup.policy` includes `compact`.
    pub fn is_compacted(&self) -> bool {
        self.log.borrow().config().compact
    }

    /// The partition's log as the cleaner plans from it, read at once.
    pub fn cleaner_view(&self) -> CleanerView {
        let last_stable = self.last_stable_offset();
        let log = self.log.borrow();
        CleanerView {
            dir: log.dir().to_path_buf(),
            config: Arc::clone(log.config()),
            log_start: log.log_start(),
            last_stable,
            sealed: log.sealed_segments(),
        }
    }

    /// Replaces the sealed segments `replaced` with their cleaned copy
    /// ([`crate::storage::log::PartitionLog::commit_cleaned`], then
    /// `install_cleaned`). The directory syncs go through the shard's
    /// ring, so the shard serves requests while they run. False if the
    /// log changed and the copy was dropped.
    pub async fn replace_cleaned(
        &self,
        cleaned: CleanedSegment,
        replaced: &[SealedSegment],
    ) -> Result<bool, StorageError> {
        let Some(dir) = self.log.borrow_mut().commit_cleaned(cleaned, replaced)? else {
            return Ok(false);
        };
        if let Err(e) = sync_path(&dir, true).await {
            self.log.borrow_mut().cancel_cleaned();
            return Err(e);
        }
        if !self.log.borrow_mut().install_cleaned()? {
            return Ok(false);
        }
        // Not needed for safety (a crash before it finishes the swap at
        // open), but the new names should not wait for the next commit.
        sync_path(&dir, true).await?;
        Ok(true)
    }
}
