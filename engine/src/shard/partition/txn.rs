//! Transactions on a partition: markers, the last stable offset, the
//! aborted-transaction index, and producer state recovered from the
//! newest snapshot and the batches after it.
//!
//! Producer state follows every batch that reaches the log, whichever
//! way it comes: a leader's append (`append_checked`), a follower's copy
//! of its leader's batches (`on_fetch_response`), and a replay of the log
//! at start and after a truncation. A follower promoted to leader so
//! knows every open transaction, and the aborted ones are indexed on
//! every replica alike.

use super::created::sync_path;
use super::{now_ms, Appended, Partition};
use crate::replication::state::Acks;
use crate::shard::producer_state::{CompletedTxn, ProducerStates, ProducerView};
use crate::storage::log::{PartitionLog, ReadResult};
use crate::storage::txn_index::AbortedTxn;
use crate::storage::StorageError;
use sluice_protocol::record_batch::{validate_replicated_set, BatchBuilder, BatchHeader, Marker};
use sluice_protocol::{ErrorCode, Offset};
use std::rc::Rc;

/// A producer's pending verification: its epoch and a number no other
/// verification on the partition had.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Guard {
    epoch: i16,
    id: u64,
}

/// The index entry of an aborted transaction, with the last stable
/// offset once it ended (`producers` has already closed it).
fn abort_entry(producers: &ProducerStates, done: CompletedTxn) -> AbortedTxn {
    let after = done.last_offset.plus(1);
    AbortedTxn {
        producer_id: done.producer_id,
        first_offset: done.first_offset,
        last_offset: done.last_offset,
        last_stable_offset: producers
            .first_unstable_offset()
            .map_or(after, |f| f.min(after)),
    }
}

/// Producer state of an opened log: from the newest snapshot that is at
/// or below both `upto` and the first segment whose transaction index
/// was lost, then every batch after it. The aborted transactions of the
/// replayed range are indexed again. At open `upto` is the recovery point
/// (the log below it is durable, so a snapshot there describes it, even
/// if a crash undid the deletion of a newer one); after a truncation in
/// a running broker, the log end.
pub(super) fn recover_producers(
    log: &mut PartitionLog,
    upto: Offset,
    topic: &str,
    index: i32,
) -> ProducerStates {
    let bound = upto.min(log.txn_index_lost_from().unwrap_or(Offset(i64::MAX)));
    let (mut producers, from) = load_snapshot(log, bound, topic, index);
    match replay(log, &mut producers, from) {
        Ok(()) => producers,
        Err(e) => {
            tracing::warn!(%topic, partition = index, error = %e, "rebuilding producer state");
            ProducerStates::default()
        }
    }
}

fn load_snapshot(
    log: &PartitionLog,
    bound: Offset,
    topic: &str,
    index: i32,
) -> (ProducerStates, Offset) {
    let offsets = log.snapshot_offsets().unwrap_or_default();
    let usable = offsets
        .iter()
        .rev()
        .filter(|o| **o <= bound && **o >= log.log_start());
    for &offset in usable {
        let bytes = log.read_snapshot(offset);
        match bytes.ok().and_then(|b| ProducerStates::decode_snapshot(&b)) {
            Some(p) => return (p, offset),
            None => {
                tracing::warn!(%topic, partition = index, offset = offset.0, "unreadable producer snapshot; trying an older one")
            }
        }
    }
    (ProducerStates::default(), log.log_start())
}

/// Replays the batches from `from` (a batch boundary) into `producers`,
/// indexing again the aborted transactions whose markers it meets.
fn replay(
    log: &mut PartitionLog,
    producers: &mut ProducerStates,
    from: Offset,
) -> Result<(), StorageError> {
    log.forget_aborted_from(from)?;
    let mut aborted = Vec::new();
    log.for_each_header(from, |h, marker| {
        if h.base_offset < from {
            return;
        }
        if let Some(done) = producers.record(h, h.base_offset, marker) {
            if done.aborted {
                aborted.push(abort_entry(producers, done));
            }
        }
    })?;
    for a in aborted {
        log.add_aborted(a)?;
    }
    Ok(())
}

impl Partition {
    /// Producer state again from the log, after a truncation cut batches
    /// it remembered: what the cut left is still deduplicated, and the
    /// transactions it left open are open again.
    pub(super) fn rebuild_producers(&self) {
        let mut log = self.log.borrow_mut();
        let end = log.log_end();
        let rebuilt = recover_producers(&mut log, end, &self.topic, self.index);
        drop(log);
        *self.producers.borrow_mut() = rebuilt;
    }

    /// Records a batch written at `base_offset` in producer state; a
    /// marker ending an aborted transaction indexes it.
    pub(super) fn track_batch(&self, h: &BatchHeader, base_offset: Offset, marker: Option<Marker>) {
        if marker.is_some() {
            // A marker ends whatever was verified before it.
            self.verifying.borrow_mut().remove(&h.producer_id);
        }
        let mut producers = self.producers.borrow_mut();
        let Some(done) = producers.record(h, base_offset, marker) else {
            return;
        };
        if !done.aborted {
            return;
        }
        let entry = abort_entry(&producers, done);
        if let Err(e) = self.log.borrow_mut().add_aborted(entry) {
            // The index is rebuilt from the log at the next start.
            tracing::error!(topic = %self.topic, partition = self.index, error = %e, "indexing an aborted transaction failed");
        }
    }

    /// Writes a producer snapshot at the log end when a segment rolled
    /// since `active_base`, so recovery replays at most about a segment.
    /// Its syncs go through the shard's ring: a file's and a directory's
    /// fsync wait for the file system's journal, which behind a stream of
    /// writes took seconds, and the shard serves requests meanwhile.
    pub(super) fn snapshot_if_rolled(&self, active_base: Offset) {
        let log = self.log.borrow();
        if log.active_base() == active_base {
            return;
        }
        let bytes = self.producers.borrow().encode_snapshot();
        let pending = match log.write_snapshot_pending(log.log_end(), &bytes) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(topic = %self.topic, partition = self.index, error = %e, "writing a producer snapshot failed");
                return;
            }
        };
        let (topic, index) = (self.topic.clone(), self.index);
        let writing = Rc::clone(&self.snapshots_writing);
        writing.set(writing.get() + 1);
        glommio::spawn_local(async move {
            let (dir, tmp) = (pending.dir().to_path_buf(), pending.tmp_path());
            let done = match sync_path(&tmp, false).await {
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    Err(e)
                }
                Ok(()) => match pending.publish() {
                    Ok(true) => sync_path(&dir, true).await,
                    Ok(false) => Ok(()),
                    Err(e) => Err(e),
                },
            };
            if let Err(e) = done {
                tracing::warn!(%topic, partition = index, error = %e, "writing a producer snapshot failed");
            }
            writing.set(writing.get() - 1);
        })
        .detach();
    }

    /// Whether producer snapshots are still being written.
    #[cfg(test)]
    pub(crate) fn snapshots_writing(&self) -> bool {
        self.snapshots_writing.get() > 0
    }

    /// Writes a producer snapshot at the log end (clean shutdown), unless
    /// one is there already (nothing was appended since the last).
    pub(super) fn snapshot_now(&self) -> Result<(), StorageError> {
        let log = self.log.borrow();
        if log.snapshot_offsets()?.last() == Some(&log.log_end()) {
            return Ok(());
        }
        log.write_snapshot(log.log_end(), &self.producers.borrow().encode_snapshot())
    }

    /// Appends a transaction marker as the leader: one control batch
    /// (COMMIT when `commit`, else ABORT) for `producer_id`, after
    /// Kafka's checks (its producer epoch not older than the producer's:
    /// INVALID_PRODUCER_EPOCH; `coordinator_epoch` not older than the
    /// last marker's: TRANSACTION_COORDINATOR_FENCED). The caller awaits
    /// `acked` and `flush_to` as a produce with acks=all does; the marker
    /// moves the last stable offset once the high watermark passes it.
    pub fn append_marker(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        coordinator_epoch: i32,
    ) -> Result<Appended, ErrorCode> {
        if producer_id < 0 {
            return Err(ErrorCode::InvalidRequest);
        }
        self.producers
            .borrow()
            .check_marker(producer_id, producer_epoch, coordinator_epoch)?;
        let marker = Marker {
            commit,
            coordinator_epoch,
        };
        let batch = BatchBuilder::marker(now_ms(), producer_id, producer_epoch, marker).finish();
        let summary = validate_replicated_set(&batch, usize::MAX).expect("a marker batch is valid");
        let first = BatchHeader::parse(&batch).expect("a marker batch is valid");
        let appended = self.append_checked(&batch, &summary, Acks::All, &first, Some(marker))?;
        tracing::debug!(topic = %self.topic, partition = self.index, producer_id, producer_epoch, commit, offset = appended.info.base_offset.0, "transaction marker appended");
        Ok(appended)
    }

    /// Whether a record set must be verified with the transaction
    /// coordinator before it is appended (KIP-890 part 1): its first
    /// batch is transactional and its producer has no transaction open
    /// here, so it would open one. Later batches of the same transaction
    /// find it open and pass.
    pub fn needs_verification(&self, h: &BatchHeader) -> bool {
        h.is_transactional()
            && !h.is_control()
            && !self.producers.borrow().in_transaction(h.producer_id)
    }

    /// Whether `producer_id` has a transaction open here.
    pub fn in_transaction(&self, producer_id: i64) -> bool {
        self.producers.borrow().in_transaction(producer_id)
    }

    /// Starts (or joins) the verification of `producer_id`'s new
    /// transaction at `epoch`: the guard its append must still find. A
    /// marker for the producer, or a newer epoch, drops the guard, so a
    /// transaction that ended while its verification was under way is not
    /// opened again by a late batch (Kafka's verification guard).
    pub fn start_verification(&self, producer_id: i64, epoch: i16) -> Guard {
        let mut verifying = self.verifying.borrow_mut();
        if let Some(g) = verifying.get(&producer_id) {
            if g.epoch == epoch {
                return *g;
            }
        }
        let id = self.next_guard.get();
        self.next_guard.set(id + 1);
        let g = Guard { epoch, id };
        verifying.insert(producer_id, g);
        g
    }

    /// Drops a guard whose verification failed.
    pub fn end_verification(&self, producer_id: i64, guard: Guard) {
        let mut verifying = self.verifying.borrow_mut();
        if verifying.get(&producer_id) == Some(&guard) {
            verifying.remove(&producer_id);
        }
    }

    /// Whether a verified record set may be appended now: its guard is
    /// still the producer's, or its transaction is open already.
    pub fn verified(&self, producer_id: i64, guard: Guard) -> bool {
        self.producers.borrow().in_transaction(producer_id)
            || self.verifying.borrow().get(&producer_id) == Some(&guard)
    }

    /// The last stable offset: the first offset of the earliest ongoing
    /// transaction, or the high watermark if that is lower. A
    /// read_committed consumer reads below it. Never below the log start:
    /// a transaction whose first records retention or DeleteRecords took
    /// would otherwise hold every read_committed consumer at the log
    /// start, with nothing there to read.
    pub fn last_stable_offset(&self) -> Offset {
        let log = self.log.borrow();
        let hw = log.high_watermark();
        let first = self.producers.borrow().first_unstable_offset();
        first.map_or(hw, |f| f.min(hw)).max(log.log_start())
    }

    /// Whole batches from `offset` below the last stable offset, and the
    /// aborted transactions with records among them (read_committed).
    pub fn read_committed(
        &self,
        offset: Offset,
        max_bytes: usize,
    ) -> Result<(ReadResult, Vec<AbortedTxn>), StorageError> {
        let lso = self.last_stable_offset();
        let log = self.log.borrow();
        let read = log.read(offset, max_bytes, lso)?;
        self.metrics.read(&read);
        let aborted = match read.bytes {
            0 => Vec::new(),
            _ => log.aborted_in(offset, read.end_bound),
        };
        Ok((read, aborted))
    }

    /// The aborted transactions with records in `[from, upto)`.
    pub fn aborted_in(&self, from: Offset, upto: Offset) -> Vec<AbortedTxn> {
        self.log.borrow().aborted_in(from, upto)
    }

    /// The producers this partition knows (DescribeProducers).
    pub fn describe_producers(&self) -> Vec<ProducerView> {
        self.producers.borrow().describe()
    }
}
