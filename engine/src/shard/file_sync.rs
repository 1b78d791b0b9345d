//! The shard's background writer of partition files whose durability
//! lags: leader-epoch checkpoints after a leader change, and the files
//! and directory entries of new partitions.
//!
//! A broker that comes back leads every partition it held in a new leader
//! epoch, and each partition's `leader-epoch-checkpoint` must then name
//! it: with 10,000 partitions, 10,000 files written, synced, renamed and
//! their directories synced. Done one after the other on the shard's
//! thread that took 10–15 s on this project's VM, during which the shard
//! answered nothing; creating 10,000 partitions, with five to six syncs
//! each, took one to one and a half minutes. The cache now takes the new
//! epoch in memory (`PartitionLog::set_leader_epoch`), a new partition's
//! files are created unsynced (`PartitionLog::create`), and the partition
//! joins this queue: a task writes and syncs through the ring, at most
//! [`FILE_SYNCS_IN_FLIGHT`] partitions at a time, while the shard serves
//! requests. The data directory, which every new partition's entry
//! changes, is synced once per round of the queue rather than once per
//! partition.
//!
//! Nothing waits for the queue where it matters: an append under a new
//! epoch writes its own partition's checkpoint first
//! (`Partition::write_epochs`, shared with the queue's write if one is in
//! flight), and a flush syncs a new partition's creation first
//! (`PartitionLog::prepare_flush`).

use super::partition::Partition;
use futures::StreamExt;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::rc::{Rc, Weak};

/// Partitions in the writer at once. Each holds at most three
/// descriptors for a moment, far below the open files limit, and 64
/// syncs in flight are plenty for the file system to commit them
/// together: the ring's worth here is overlap, not width.
pub const FILE_SYNCS_IN_FLIGHT: usize = 64;

/// Partitions whose files lag what they hold in memory.
#[derive(Default)]
pub struct FileSync {
    queue: RefCell<VecDeque<Weak<Partition>>>,
    running: Cell<bool>,
}

impl FileSync {
    /// Queues `partition` if any of its files lag, and starts the writer
    /// task if it is not running. A partition queued twice is written
    /// once: its second turn finds nothing to do.
    pub fn push(self: &Rc<Self>, partition: &Rc<Partition>) {
        if !(partition.epochs_unwritten() || partition.creation_unsynced()) {
            return;
        }
        self.queue.borrow_mut().push_back(Rc::downgrade(partition));
        if self.running.replace(true) {
            return;
        }
        let this = Rc::clone(self);
        glommio::spawn_local(async move { this.drain().await }).detach();
    }

    /// Whether the writer is at work. When it is not, no partition's
    /// files lag (but for a failed write, which the next append or flush
    /// retries itself).
    pub fn is_running(&self) -> bool {
        self.running.get()
    }

    async fn drain(&self) {
        let started = std::time::Instant::now();
        let done = Cell::new(0usize);
        loop {
            // New partitions whose own files and directory are synced, by
            // the directory holding them, still to be synced.
            let created: RefCell<BTreeMap<PathBuf, Vec<Rc<Partition>>>> = Default::default();
            let next = futures::stream::poll_fn(|_| {
                std::task::Poll::Ready(self.queue.borrow_mut().pop_front())
            });
            next.for_each_concurrent(FILE_SYNCS_IN_FLIGHT, |weak| {
                let (created, done) = (&created, &done);
                async move {
                    // A partition deleted meanwhile has nothing to write.
                    if let Some(p) = weak.upgrade() {
                        done.set(done.get() + 1);
                        if let Some(parent) = sync_one(&p).await {
                            created.borrow_mut().entry(parent).or_default().push(p);
                        }
                    }
                }
            })
            .await;
            for (parent, partitions) in created.into_inner() {
                match super::partition::sync_path(&parent, true).await {
                    Ok(()) => partitions.iter().for_each(|p| p.mark_creation_synced()),
                    // Their first flush syncs them itself.
                    Err(e) => tracing::error!(error = %e, "syncing the data directory failed"),
                }
            }
            // Pushed while the last writes were in flight: their push
            // saw the task running and left them to it.
            if self.queue.borrow().is_empty() {
                self.running.set(false);
                tracing::info!(
                    partitions = done.get(),
                    ms = started.elapsed().as_millis() as u64,
                    "partition files written and synced"
                );
                return;
            }
        }
    }
}

/// Writes `p`'s lagging files; returns the directory holding it if it is
/// a new partition whose own files are now synced. A failure is logged:
/// the partition's next append or flush writes the files itself, and
/// fails with the error if it persists.
async fn sync_one(p: &Partition) -> Option<PathBuf> {
    if let Err(e) = p.write_epochs().await {
        tracing::error!(topic = %p.topic, partition = p.index, error = %e, "writing the leader epoch checkpoint failed");
    }
    if !p.creation_unsynced() {
        return None;
    }
    match p.sync_created_files().await {
        Ok(parent) => Some(parent),
        Err(e) => {
            tracing::error!(topic = %p.topic, partition = p.index, error = %e, "syncing a new partition's files failed");
            None
        }
    }
}
