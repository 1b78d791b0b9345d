//! What the log cleaner (`crate::cleaner`) reads of a partition and how
//! it hands back a cleaned segment. The cleaner holds no borrow of the
//! log across its awaits: it reads sealed segments through their own file
//! handles and swaps its copy in with two synchronous calls around a
//! directory sync, each checking that the segments it read are still the
//! log's.

use super::Partition;
use crate::config::TopicConfig;
use crate::idle::Workers;
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

    /// Waits, on this thread, for a cleaned segment's swap in flight and
    /// puts it in (or drops it, failed), before the directory goes.
    pub fn settle_swap(&self) {
        if let Err(e) = self.log.borrow_mut().settle_swap() {
            tracing::warn!(topic = %self.topic, partition = self.index, error = %e,
                "a cleaned segment's swap failed");
        }
    }

    /// Replaces the sealed segments `replaced` with their cleaned copy:
    /// the swap's file operations run on a cleaner thread while the shard
    /// serves requests (the replaced segments stay readable meanwhile),
    /// then the new segment goes in. False if the log changed and the
    /// copy was dropped.
    pub async fn replace_cleaned(
        &self,
        cleaned: CleanedSegment,
        replaced: &[SealedSegment],
        workers: &Workers,
    ) -> Result<bool, StorageError> {
        let Some((job, gate)) = self.log.borrow_mut().begin_swap(cleaned, replaced) else {
            return Ok(false);
        };
        let answer = Arc::clone(&gate);
        let ran = workers.run(move |_| answer.answer(job.run())).await;
        if ran.is_none() {
            // The job panicked before answering: the log must not wait
            // for it.
            gate.answer(Err(StorageError::Io {
                op: "swap cleaned segment",
                path: self.log.borrow().dir().to_path_buf(),
                source: std::io::Error::other("the cleaner thread failed"),
            }));
        }
        let old = self.log.borrow_mut().settle_swap()?;
        // Unmapping their indexes can take milliseconds.
        workers.drop_later(old);
        Ok(true)
    }
}
