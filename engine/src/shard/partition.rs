//! A partition as its owner shard holds it: the log, the fetchers parked
//! on it, and the flush state. Only the owner shard touches it, so plain
//! `RefCell`s suffice; no borrow is held across an `.await`.

mod cleaning;
pub use cleaning::CleanerView;
mod created;
pub(crate) use created::sync_path;
mod epoch_file;
mod replica;
mod txn;
pub use txn::Guard;

use super::producer_state::{Check, ProducerStates};
use crate::replication::state::{Acks, PartitionReplica, Ticket};
use crate::replication::{NodeId, ReplicationConfig};
use crate::storage::leader_epoch::EpochEnd;
use crate::storage::log::{AppendInfo, PartitionLog, ReadResult};
use crate::storage::StorageError;
use futures::channel::oneshot;
use sluice_protocol::record_batch::{BatchHeader, RecordSetSummary};
use sluice_protocol::{ErrorCode, LeaderEpoch, Offset};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

/// Current wall-clock time in ms since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Offsets a fetch response reports with its data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Watermarks {
    pub log_start: Offset,
    pub high_watermark: Offset,
}

/// A partition owned by this shard.
#[derive(Debug)]
pub struct Partition {
    pub topic: String,
    pub index: i32,
    /// The topic's id: a topic re-created under the same name is another.
    pub topic_id: uuid::Uuid,
    log: RefCell<PartitionLog>,
    producers: RefCell<ProducerStates>,
    /// Verification guards of producers whose new transaction is being
    /// verified with its coordinator (see `partition/txn.rs`).
    verifying: RefCell<HashMap<i64, txn::Guard>>,
    next_guard: Cell<u64>,
    waiters: RefCell<Vec<oneshot::Sender<()>>>,
    flushing: Cell<bool>,
    flush_waiters: RefCell<Vec<oneshot::Sender<()>>>,
    /// Syncs in flight of the files appends write to (the active
    /// segment's), and the appends waiting for them to end (see
    /// [`Partition::sync_settled`]).
    active_syncs: Cell<u32>,
    settle_waiters: RefCell<Vec<oneshot::Sender<()>>>,
    /// A write of the leader-epoch checkpoint is in flight, and who waits
    /// for it (see `partition/epoch_file.rs`).
    epochs_writing: Cell<bool>,
    epoch_waiters: RefCell<Vec<oneshot::Sender<()>>>,
    /// Producer snapshots being synced and named (see
    /// `partition/txn.rs`).
    snapshots_writing: Rc<Cell<usize>>,
    /// Woken after the next step of the replication model (DeleteRecords
    /// waiting for the low watermark).
    step_waiters: RefCell<Vec<oneshot::Sender<()>>>,
    /// The replication state machine, kept in step with the log (see
    /// `replica.rs`).
    replica: RefCell<PartitionReplica>,
    /// Parked acks=all produces, answered as the high watermark passes.
    tickets: RefCell<HashMap<Ticket, oneshot::Sender<Result<Offset, ErrorCode>>>>,
    next_ticket: Cell<Ticket>,
    /// ISR changes for the controller.
    proposals: RefCell<Vec<crate::replication::controller::IsrProposal>>,
    /// Bytes and records in and out, for metrics.
    pub metrics: crate::metrics::PartitionCounters,
    /// Why the partition is offline after an fdatasync of its files
    /// failed (see [`Partition::sync_failure`]).
    sync_failure: RefCell<Option<String>>,
}

/// Who asks ListOffsets, which bounds what it is told (see
/// [`Partition::list_offset`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OffsetsFor {
    /// A read_committed consumer: up to the last stable offset.
    ReadCommitted,
    /// A read_uncommitted consumer: up to the high watermark.
    ReadUncommitted,
    /// A replica or an operator's debugging request: up to the log end.
    Replica,
}

/// Where a parked acks=all produce is answered.
pub type Acked = oneshot::Receiver<Result<Offset, ErrorCode>>;

/// Waits up to `timeout` for a parked acks=all produce's answer.
pub async fn acked(rx: Acked, timeout: std::time::Duration) -> Result<(), ErrorCode> {
    match glommio::timer::timeout(timeout, async { Ok(rx.await) }).await {
        Ok(Ok(Ok(_))) => Ok(()),
        Ok(Ok(Err(code))) => Err(code),
        // The partition went away with the answer.
        Ok(Err(_)) => Err(ErrorCode::NotLeaderOrFollower),
        Err(_) => Err(ErrorCode::RequestTimedOut),
    }
}

/// Maps a storage error to the error its partition reports.
/// An append done but not yet answered: see [`Partition::append_now`].
pub struct Appended {
    pub info: AppendInfo,
    pub log_start: Offset,
    /// For acks=all, where the answer comes once the in-sync replicas
    /// have the records.
    pub acked: Option<Acked>,
    /// The offset the log must be durable below before the answer goes
    /// out, when the flush policy asks for a flush.
    pub flush_to: Option<Offset>,
}

pub fn error_code(e: &StorageError) -> ErrorCode {
    match e {
        StorageError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
        StorageError::SegmentPositionOverflow { .. } => ErrorCode::MessageTooLarge,
        StorageError::Io { .. } | StorageError::Corrupt { .. } => ErrorCode::KafkaStorageError,
    }
}

impl Partition {
    /// Partition 0 of topic `t` on `log`, led by this broker (node 1)
    /// alone: unit tests' partition.
    #[cfg(test)]
    pub(crate) fn led_alone(log: PartitionLog) -> Partition {
        let node = NodeId(1);
        let p = Partition::new(
            "t".into(),
            0,
            uuid::Uuid::nil(),
            log,
            node,
            ReplicationConfig::default(),
        );
        p.apply_state(
            crate::replication::controller::PartitionState::new(vec![node]),
            0,
        );
        p
    }

    /// Wraps an opened log. Producer state is recovered from the newest
    /// producer snapshot and the batches after it (see `partition/txn.rs`),
    /// so a producer retrying across a broker restart is still
    /// deduplicated and open transactions stay open.
    pub fn new(
        topic: String,
        index: i32,
        topic_id: uuid::Uuid,
        mut log: PartitionLog,
        node: NodeId,
        config: ReplicationConfig,
    ) -> Partition {
        let recovery_point = log.recovery_point();
        let producers = txn::recover_producers(&mut log, recovery_point, &topic, index);
        let model = replica::model_of(&log);
        Partition {
            topic,
            index,
            topic_id,
            replica: RefCell::new(PartitionReplica::new(node, config, model)),
            tickets: RefCell::new(HashMap::new()),
            next_ticket: Cell::new(0),
            proposals: RefCell::new(Vec::new()),
            log: RefCell::new(log),
            producers: RefCell::new(producers),
            verifying: RefCell::new(HashMap::new()),
            next_guard: Cell::new(0),
            waiters: RefCell::new(Vec::new()),
            flushing: Cell::new(false),
            snapshots_writing: Rc::default(),
            active_syncs: Cell::new(0),
            settle_waiters: RefCell::new(Vec::new()),
            flush_waiters: RefCell::new(Vec::new()),
            epochs_writing: Cell::new(false),
            epoch_waiters: RefCell::new(Vec::new()),
            step_waiters: RefCell::new(Vec::new()),
            metrics: Default::default(),
            sync_failure: RefCell::new(None),
        }
    }

    /// This partition's figures for a metrics scrape.
    pub fn metrics_sample(&self, shard: &super::Shard) -> crate::metrics::PartitionSample {
        let log = self.log.borrow();
        let leader = shard
            .metadata()
            .topic(&self.topic)
            .and_then(|t| t.partition(self.index))
            .is_some_and(|p| p.leader.map(|l| l.0) == Some(shard.broker.config.node_id));
        crate::metrics::PartitionSample {
            topic: self.topic.clone(),
            partition: self.index,
            leader,
            bytes_in: self.metrics.bytes_in.get(),
            messages_in: self.metrics.messages_in.get(),
            bytes_out: self.metrics.bytes_out.get(),
            messages_out: self.metrics.messages_out.get(),
            size_bytes: log.size_bytes(),
            segments: log.segment_count(),
            log_start: log.log_start().0,
            log_end: log.log_end().0,
            high_watermark: log.high_watermark().0,
            append_failures: self.metrics.append_failures.get(),
            no_space: self.metrics.no_space.get(),
        }
    }

    pub fn watermarks(&self) -> Watermarks {
        let log = self.log.borrow();
        Watermarks {
            log_start: log.log_start(),
            high_watermark: log.high_watermark(),
        }
    }

    /// Bytes in the partition's segments, and how far its log end lags
    /// its high watermark (DescribeLogDirs).
    pub fn log_size_and_lag(&self) -> (u64, i64) {
        let log = self.log.borrow();
        let lag = (log.high_watermark().0 - log.log_end().0).max(0);
        (log.size_bytes(), lag)
    }

    /// Appends a validated record set, wakes parked fetchers, and flushes
    /// first if the flush policy asks for it (`flush.messages=1` makes
    /// every acknowledged batch durable).
    pub async fn append(
        &self,
        set: &[u8],
        summary: &RecordSetSummary,
    ) -> Result<(AppendInfo, Offset), ErrorCode> {
        let (info, start, _) = self.append_with(set, summary, Acks::Leader).await?;
        Ok((info, start))
    }

    /// Appends as [`Partition::append`] does; for acks=all also returns
    /// where the answer comes once the high watermark passes the records
    /// (they are then on every in-sync replica): see [`acked`].
    pub async fn append_with(
        &self,
        set: &[u8],
        summary: &RecordSetSummary,
        acks: Acks,
    ) -> Result<(AppendInfo, Offset, Option<Acked>), ErrorCode> {
        // A failed write is retried, and reported, by the append itself.
        let _ = self.write_epochs().await;
        self.sync_settled().await;
        let appended = self.append_now(set, summary, acks)?;
        if let Some(target) = appended.flush_to {
            self.flush_for_append(target).await?;
        }
        Ok((appended.info, appended.log_start, appended.acked))
    }

    /// The part of an append that does not wait: the record set is in the
    /// log, fetchers are woken, and `flush_to` says how far the flush
    /// policy wants the log durable before the append is answered. A
    /// request's appends to several partitions all happen first, and
    /// their flushes then run together.
    pub fn append_now(
        &self,
        set: &[u8],
        summary: &RecordSetSummary,
        acks: Acks,
    ) -> Result<Appended, ErrorCode> {
        let first = BatchHeader::parse(set).expect("record set was validated");
        match self.producers.borrow().check(&first) {
            Check::Append => {}
            Check::Duplicate(base) => {
                let info = AppendInfo {
                    base_offset: base,
                    last_offset: base.plus(i64::from(first.last_offset_delta)),
                    log_append_time_ms: -1,
                };
                let acked = self.record_duplicate(acks, info.last_offset)?;
                return Ok(Appended {
                    info,
                    log_start: self.log.borrow().log_start(),
                    acked,
                    flush_to: None,
                });
            }
            Check::Reject(code) => return Err(code),
        }
        self.append_checked(set, summary, acks, &first, None)
    }

    /// Appends a record set producer state accepted (`first` is its
    /// first batch's header; `marker` what a control batch says).
    fn append_checked(
        &self,
        set: &[u8],
        summary: &RecordSetSummary,
        acks: Acks,
        first: &BatchHeader,
        marker: Option<sluice_protocol::record_batch::Marker>,
    ) -> Result<Appended, ErrorCode> {
        if self.sync_failure.borrow().is_some() {
            return Err(ErrorCode::KafkaStorageError);
        }
        let now = now_ms();
        // Leadership and min.insync.replicas are checked, the log
        // appended and the replication model told, in one step: no other
        // task runs in between.
        self.replica.borrow().check_produce(acks)?;
        let active_base = self.log.borrow().active_base();
        let (info, flush) = {
            let mut log = self.log.borrow_mut();
            let info = log
                .append(set, summary, now)
                .map_err(|e| self.append_failed(&e))?;
            (info, log.flush_due(now))
        };
        self.append_succeeded();
        let acked = self.record_produce(acks, summary.records);
        self.metrics
            .appended(set.len(), summary.records.max(0) as u64);
        self.track_batch(first, info.base_offset, marker);
        self.snapshot_if_rolled(active_base);
        self.wake_fetchers();
        self.start_writeback();
        Ok(Appended {
            info,
            log_start: self.log.borrow().log_start(),
            acked,
            flush_to: flush.then(|| info.last_offset.plus(1)),
        })
    }

    /// Counts a failed append and says what the producer is answered.
    /// It is logged once per run of failures, not per request: a full
    /// disk fails every produce to the partition until space is freed,
    /// hundreds a second. Nothing of the failed append stays (the segment
    /// cut its bytes), so the log end, the high watermark and producer
    /// state are as before it, and the producer's retry gets the same
    /// offsets a first attempt would have.
    fn append_failed(&self, e: &StorageError) -> ErrorCode {
        let m = &self.metrics;
        m.append_failures.set(m.append_failures.get() + 1);
        let no_space = e.is_no_space();
        if !no_space && matches!(e, StorageError::Io { .. }) {
            // A disk that fails a write (EIO) may have written part of
            // it anywhere: the partition goes offline as after a failed
            // sync, and the restart verifies the log.
            self.fail_sync(e);
        }
        if !m.append_failing.replace(true) || m.no_space.get() != no_space {
            if no_space {
                tracing::error!(topic = %self.topic, partition = self.index, error = %e,
                    "no space left for the partition's log: produces are answered KAFKA_STORAGE_ERROR until space is freed; fetches go on");
            } else {
                tracing::error!(topic = %self.topic, partition = self.index, error = %e, "append failed");
            }
        }
        m.no_space.set(no_space);
        error_code(e)
    }

    /// Ends a run of failed appends, if one was going on.
    fn append_succeeded(&self) {
        let m = &self.metrics;
        if m.append_failing.replace(false) {
            tracing::info!(topic = %self.topic, partition = self.index,
                failed = m.append_failures.get(), "appends succeed again");
            m.no_space.set(false);
        }
    }

    /// Makes an append durable up to `target` ([`Appended::flush_to`]).
    pub async fn flush_for_append(&self, target: Offset) -> Result<(), ErrorCode> {
        self.flush_upto(target).await.map_err(|e| error_code(&e))
    }

    /// Starts writing out the appended pages once a chunk has gathered
    /// (see [`WRITEBACK_CHUNK`](crate::storage::log::WRITEBACK_CHUNK)), on
    /// the blocking pool; nothing waits for it.
    pub(crate) fn start_writeback(&self) {
        let Some(job) = self.log.borrow_mut().writeback_due() else {
            return;
        };
        glommio::spawn_local(async move {
            let started = glommio::executor()
                .spawn_blocking(move || job.start())
                .await;
            if let Err(e) = started {
                tracing::debug!(error = %e, "starting writeback failed");
            }
        })
        .detach();
    }

    pub(crate) fn wake_fetchers(&self) {
        for w in self.waiters.borrow_mut().drain(..) {
            let _ = w.send(());
        }
    }

    /// Whether an fdatasync of the files appends write to is in flight.
    pub fn is_syncing(&self) -> bool {
        self.active_syncs.get() > 0
    }

    /// Waits, without holding the shard, until no fdatasync of the files
    /// appends write to (the active segment's) is in flight; an append
    /// waits here before it writes. On a file system whose fsync holds the file's inode lock to
    /// its end (FUSE, btrfs) a write to the file being synced waits in the
    /// kernel for that sync, and the append's `pwritev` runs on the
    /// shard's thread: one partition's stalled sync stopped every
    /// partition of its shard, and fetches too (`tests/slow_disk.rs`).
    /// Waiting here costs an append nothing it would not wait anyway
    /// under `flush.messages=1`: what is appended during a sync needs the
    /// next one. The appends woken together all write before the next
    /// sync starts (see [`Partition::flush_upto`]), so they still share it.
    /// A sealed segment's sync (a roll's flush) does not hold appends.
    pub async fn sync_settled(&self) {
        while self.active_syncs.get() > 0 {
            let (tx, rx) = oneshot::channel();
            self.settle_waiters.borrow_mut().push(tx);
            let _ = rx.await;
        }
    }

    /// Runs `sync`, a sync of the active segment's files, counted as in
    /// flight for [`Partition::sync_settled`].
    pub(crate) async fn syncing_active<T>(&self, sync: impl std::future::Future<Output = T>) -> T {
        self.active_syncs.set(self.active_syncs.get() + 1);
        // Counted out even if the sync's future is dropped unfinished, so
        // that no append waits for it forever.
        let _counted = ActiveSync(self);
        sync.await
    }

    fn wake_flush_waiters(&self) {
        for w in self.flush_waiters.borrow_mut().drain(..) {
            let _ = w.send(());
        }
    }

    /// Makes every offset below `target` durable. Concurrent callers share
    /// one fdatasync where they can (group commit).
    pub async fn flush_upto(&self, target: Offset) -> Result<(), StorageError> {
        // Appends that waited for the last sync to settle were woken with
        // this task: they run, and append, before it starts the next sync,
        // which then covers them all.
        let mut yielded = false;
        loop {
            if self.log.borrow().recovery_point() >= target {
                return Ok(());
            }
            if self.flushing.get() {
                let (tx, rx) = oneshot::channel();
                self.flush_waiters.borrow_mut().push(tx);
                let _ = rx.await;
                continue;
            }
            if !yielded {
                yielded = true;
                yield_once().await;
                continue;
            }
            self.flushing.set(true);
            let result = self.flush_once().await;
            self.flushing.set(false);
            self.wake_flush_waiters();
            result?;
        }
    }

    async fn flush_once(&self) -> Result<(), StorageError> {
        self.refuse_if_sync_failed()?;
        let prepared = self.log.borrow_mut().prepare_flush(now_ms());
        let job = match prepared {
            Ok(job) => job,
            // Index entries that found no room are written at the next
            // flush; anything else is the disk failing.
            Err(e) if e.is_no_space() => return Err(e),
            Err(e) => {
                self.fail_sync(&e);
                return Err(e);
            }
        };
        let dir = self.log.borrow().dir().to_path_buf();
        let (sealed, active) = job.files.split_at(job.active);
        let (sealed, active) = futures::join!(
            futures::future::try_join_all(sealed.iter().map(|f| fdatasync(f))),
            self.syncing_active(futures::future::try_join_all(
                active.iter().map(|f| fdatasync(f))
            )),
        );
        if let Err(source) = sealed.and(active) {
            let e = StorageError::Io {
                op: "fdatasync",
                path: dir,
                source,
            };
            self.fail_sync(&e);
            return Err(e);
        }
        self.log.borrow_mut().complete_flush(job.upto);
        Ok(())
    }

    /// Takes the partition offline after a failed fdatasync (or a write
    /// failed for another reason than a full disk). The kernel
    /// reports a writeback error to one fsync and then marks the pages
    /// clean: a second sync would succeed while the records it should
    /// have made durable may never reach the disk, and the page cache
    /// would go on serving them. So nothing is retried, appended or
    /// served (KAFKA_STORAGE_ERROR, as a partition that failed to open),
    /// and the broker's stop is not clean: the next start verifies the
    /// log from its recovery point, the last offset a sync did make
    /// durable. Kafka likewise takes the log directory offline on an
    /// I/O error. In a cluster the shard then reports the replica to the
    /// controller and rebuilds it from the new leader (`shard/rebuild.rs`).
    fn fail_sync(&self, e: &StorageError) {
        if self.sync_failure.borrow().is_some() {
            return;
        }
        tracing::error!(topic = %self.topic, partition = self.index, error = %e,
            "writing or syncing the partition's files failed: the partition is offline; in a cluster the replica is rebuilt from the leader once another in-sync replica leads, else a restart verifies its log");
        *self.sync_failure.borrow_mut() = Some(e.to_string());
        self.wake_fetchers();
    }

    /// Why the partition is offline after a failed fdatasync, if it is.
    pub fn sync_failure(&self) -> Option<String> {
        self.sync_failure.borrow().clone()
    }

    fn refuse_if_sync_failed(&self) -> Result<(), StorageError> {
        match self.sync_failure.borrow().as_ref() {
            None => Ok(()),
            Some(reason) => Err(StorageError::Io {
                op: "sync (failed before)",
                path: self.log.borrow().dir().to_path_buf(),
                source: std::io::Error::other(reason.clone()),
            }),
        }
    }

    /// Flushes now if `flush.ms` or a roll asks for it.
    pub async fn flush_if_due(&self) -> Result<(), StorageError> {
        // Offline after a failed sync: said once, when it failed.
        if self.sync_failure.borrow().is_some() {
            return Ok(());
        }
        let (due, end) = {
            let log = self.log.borrow();
            (log.flush_due(now_ms()), log.log_end())
        };
        if due {
            self.flush_upto(end).await?;
        }
        Ok(())
    }

    /// Flushes everything synchronously (clean shutdown).
    pub fn flush_now(&self) -> Result<(), StorageError> {
        self.log.borrow_mut().flush_now(now_ms())?;
        self.snapshot_now()
    }

    /// Whole batches from `offset`, at most `max_bytes` beyond the first.
    pub fn read(&self, offset: Offset, max_bytes: usize) -> Result<ReadResult, StorageError> {
        let log = self.log.borrow();
        let read = log.read(offset, max_bytes, log.high_watermark())?;
        self.metrics.read(&read);
        Ok(read)
    }

    /// Whole batches from `offset` up to the log end, for a follower.
    pub fn read_for_replica(
        &self,
        offset: Offset,
        max_bytes: usize,
    ) -> Result<ReadResult, StorageError> {
        let log = self.log.borrow();
        log.read(offset, max_bytes, log.log_end())
    }

    /// Calls `f` with every batch from `from` on (replaying an internal
    /// topic at start).
    pub fn for_each_batch(
        &self,
        from: Offset,
        f: impl FnMut(&BatchHeader, &[u8]),
    ) -> Result<(), StorageError> {
        self.log.borrow().for_each_batch(from, f)
    }

    /// A receiver that fires on the next append or high-watermark move
    /// (which is when the last stable offset moves too: a marker's append,
    /// then the high watermark passing it). A fetch that has just read
    /// this partition and wants more parks on it: whatever was readable
    /// then was read, so only news can add to it.
    pub fn watch(&self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        let mut waiters = self.waiters.borrow_mut();
        waiters.retain(|w| !w.is_canceled());
        waiters.push(tx);
        rx
    }

    /// ListOffsets: -2 earliest, -1 latest, -3 the record with the largest
    /// timestamp, -4 earliest local (the log start: nothing is tiered),
    /// -5 latest tiered and -6 earliest pending upload (none: -1), else
    /// by timestamp. With the
    /// offset and timestamp comes the leader epoch Kafka reports: the
    /// epoch of the record found (of the first one for earliest), the
    /// current epoch for latest, -1 when none. A consumer keeps it with
    /// its position and later validates the position with
    /// OffsetForLeaderEpoch, so a wrong epoch reads as a truncation.
    ///
    /// As Kafka, what a consumer asks is bounded by what it may read: the
    /// high watermark, or for read_committed the last stable offset, is
    /// latest, and a record found at or past it (by timestamp or as the
    /// largest timestamp) is not reported (-1). A replica's or operator's
    /// request ([`OffsetsFor::Replica`]) is bounded by the log end. A
    /// leader elected moments ago whose high watermark has not reached
    /// the start of its epoch cannot tell a consumer where the end is,
    /// and answers OFFSET_NOT_AVAILABLE (retriable) instead of an offset
    /// below one the previous leader may have given.
    pub fn list_offset(
        &self,
        timestamp: i64,
        asker: OffsetsFor,
    ) -> Result<(Offset, i64, LeaderEpoch), ErrorCode> {
        let found = self
            .list_offset_uncommitted(timestamp)
            .map_err(|e| error_code(&e))?;
        let bound = match asker {
            OffsetsFor::ReadCommitted => self.last_stable_offset(),
            OffsetsFor::ReadUncommitted => self.log.borrow().high_watermark(),
            OffsetsFor::Replica => self.log.borrow().log_end(),
        };
        let lagging = asker != OffsetsFor::Replica && self.replica.borrow().hw_behind_epoch_start();
        let not_available = || Err(ErrorCode::OffsetNotAvailable);
        match timestamp {
            -1 if lagging => not_available(),
            -1 => Ok((bound, -1, found.2)),
            -2 | -4 | -5 | -6 => Ok(found),
            _ if found.0 >= Offset(0) && found.0 < bound => Ok(found),
            _ if lagging => not_available(),
            _ => Ok((Offset(-1), -1, LeaderEpoch(-1))),
        }
    }

    fn list_offset_uncommitted(
        &self,
        timestamp: i64,
    ) -> Result<(Offset, i64, LeaderEpoch), StorageError> {
        let log = self.log.borrow();
        let epoch_at = |offset: Offset| {
            log.epoch_history()
                .epoch_at(offset)
                .unwrap_or(LeaderEpoch(-1))
        };
        match timestamp {
            // Earliest (-2), and earliest in the local log (-4, KIP-405):
            // with no tiered storage the whole log is local.
            -2 | -4 => Ok((log.log_start(), -1, epoch_at(log.log_start()))),
            // The last offset in tiered storage (-5, KIP-1005) and the
            // first not yet uploaded to it (-6, KIP-1023): none, as
            // Kafka answers both for a topic without remote storage.
            -5 | -6 => Ok((Offset(-1), -1, LeaderEpoch(-1))),
            -1 => Ok((log.high_watermark(), -1, log.leader_epoch())),
            -3 => Ok(match log.max_timestamp_offset()? {
                Some((offset, ts)) => (offset, ts, epoch_at(offset)),
                None => (Offset(-1), -1, LeaderEpoch(-1)),
            }),
            ts => Ok(match log.offset_for_timestamp(ts)? {
                Some((offset, ts)) => (offset, ts, epoch_at(offset)),
                None => (Offset(-1), -1, LeaderEpoch(-1)),
            }),
        }
    }

    pub fn recovery_point(&self) -> Offset {
        self.log.borrow().recovery_point()
    }

    /// The partition's current leader epoch and where `requested` ends in
    /// its log (OffsetForLeaderEpoch), read together.
    pub fn end_offset_for_epoch(&self, requested: LeaderEpoch) -> (LeaderEpoch, EpochEnd) {
        let log = self.log.borrow();
        (log.leader_epoch(), log.end_offset_for_epoch(requested))
    }

    pub fn segment_count(&self) -> usize {
        self.log.borrow().segment_count()
    }

    pub fn log_end(&self) -> Offset {
        self.log.borrow().log_end()
    }

    /// See [`PartitionLog::delete_segments_before`].
    pub fn delete_segments_before(&self, offset: Offset) -> Result<usize, StorageError> {
        self.log.borrow_mut().delete_segments_before(offset)
    }

    pub fn enforce_retention(&self) -> Result<usize, StorageError> {
        let deleted = self.log.borrow_mut().enforce_retention(now_ms())?;
        if deleted > 0 {
            let start = self.log.borrow().log_start();
            self.replica.borrow_mut().advance_log_start(start);
        }
        Ok(deleted)
    }

    /// See [`PartitionLog::remove_retired`].
    pub fn remove_retired(&self) -> Result<usize, StorageError> {
        self.log.borrow_mut().remove_retired()
    }

    /// Ends the replica's part in replication before it goes: produces
    /// parked for acks=all are answered NOT_LEADER_OR_FOLLOWER, parked
    /// fetches woken, and background writes of its files dropped (see
    /// [`PartitionLog::set_aside`]).
    pub fn retire(&self) {
        self.replica.borrow_mut().retire();
        self.after_step();
        self.wake_fetchers();
        self.log.borrow().set_aside();
    }

    /// Deletes the partition's files. The caller has already made it
    /// unreachable; a request still holding it writes to unlinked files,
    /// and produces parked for acks=all are answered NOT_LEADER_OR_FOLLOWER.
    pub fn delete(&self) -> Result<(), StorageError> {
        self.retire();
        let dir = self.log.borrow().dir().to_path_buf();
        std::fs::remove_dir_all(&dir).map_err(StorageError::io("delete partition", &dir))
    }
}

/// One sync of a partition's active segment in flight; its drop ends it
/// and wakes the appends waiting once none is left.
struct ActiveSync<'a>(&'a Partition);

impl Drop for ActiveSync<'_> {
    fn drop(&mut self) {
        let p = self.0;
        p.active_syncs.set(p.active_syncs.get() - 1);
        if p.active_syncs.get() == 0 {
            for w in p.settle_waiters.borrow_mut().drain(..) {
                let _ = w.send(());
            }
        }
    }
}

/// Returns to the executor once, so that every task already woken runs
/// before this one goes on.
async fn yield_once() {
    let mut yielded = false;
    futures::future::poll_fn(|cx| {
        if yielded {
            return std::task::Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    })
    .await
}

/// `fdatasync` through the shard's io_uring, on a duplicate of `file`'s
/// descriptor (the ring takes ownership of what it closes). Unlike the
/// blocking pool, one thread per shard that would run every partition's
/// syncs in turn, the ring has the syncs of all the shard's partitions in
/// the kernel at once, where the file system commits them together.
async fn fdatasync(file: &std::fs::File) -> std::io::Result<()> {
    use std::os::fd::{AsRawFd, FromRawFd};
    // SAFETY: dup of a descriptor the caller keeps open.
    let fd = unsafe { libc::dup(file.as_raw_fd()) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor owned by nothing else.
    let ring_file = unsafe { glommio::io::BufferedFile::from_raw_fd(fd) };
    let started = std::time::Instant::now();
    let synced = ring_file.fdatasync().await;
    crate::metrics::fsynced(started.elapsed());
    let closed = ring_file.close().await;
    synced.and(closed).map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BrokerConfig;
    use sluice_protocol::record_batch::{validate_record_set, BatchBuilder};
    use std::collections::BTreeMap;
    use std::sync::Arc;

    /// Runs `f` on a glommio executor: an append may write the
    /// leader-epoch checkpoint through the ring first.
    fn run<T>(f: impl std::future::Future<Output = T>) -> T {
        glommio::LocalExecutorBuilder::default()
            .make()
            .expect("an executor")
            .run(f)
    }

    /// A producer whose batch was appended but whose acknowledgement was
    /// lost in a broker restart retries it: before producer state was
    /// rebuilt from the log at start, the retry was appended a second time.
    #[test]
    fn retried_batch_after_restart_is_not_appended_twice() {
        let dir = tempfile::tempdir().unwrap();
        let pdir = dir.path().join("t-0");
        let config = Arc::new(
            BrokerConfig::default()
                .topic_config(&BTreeMap::new())
                .unwrap(),
        );
        let mut b = BatchBuilder::new(0).producer(42, 0, 0);
        b.push(0, None, Some(b"once"), &[]);
        let batch = b.finish();
        let summary = validate_record_set(&batch, 1 << 20).unwrap();
        let log = PartitionLog::create(&pdir, Arc::clone(&config), uuid::Uuid::new_v4()).unwrap();
        let p = Partition::led_alone(log);
        let (first, _) = run(p.append(&batch, &summary)).unwrap();
        p.flush_now().unwrap();
        drop(p);
        let log = PartitionLog::open(&pdir, config, true, Offset(1), Offset(0)).unwrap();
        let p = Partition::led_alone(log);
        let (retry, _) = run(p.append(&batch, &summary)).unwrap();
        assert_eq!(retry.base_offset, first.base_offset);
        assert_eq!(p.watermarks().high_watermark, Offset(1));
    }

    /// A follower that cuts a divergent tail keeps deduplicating what the
    /// cut left: before, it forgot every producer, and leading later it
    /// appended a retry of a batch it already held.
    #[test]
    fn a_truncation_keeps_the_producer_state_of_what_is_left() {
        use crate::replication::controller::PartitionState;
        use crate::replication::state::EpochResponse;
        use sluice_protocol::LeaderEpoch;
        let dir = tempfile::tempdir().unwrap();
        let config = Arc::new(
            BrokerConfig::default()
                .topic_config(&BTreeMap::new())
                .unwrap(),
        );
        let batch = |seq: i32| {
            let mut b = BatchBuilder::new(0).producer(42, 0, seq);
            b.push(0, None, Some(b"x"), &[]);
            let batch = b.finish();
            let summary = validate_record_set(&batch, 1 << 20).unwrap();
            (batch, summary)
        };
        let log =
            PartitionLog::create(&dir.path().join("t-0"), config, uuid::Uuid::new_v4()).unwrap();
        let p = Partition::led_alone(log);
        let (first, first_summary) = batch(0);
        let (second, second_summary) = batch(1);
        run(p.append(&first, &first_summary)).unwrap();
        run(p.append(&second, &second_summary)).unwrap();

        // Broker 2 leads epoch 1 and never had the second batch, which
        // this replica committed alone: an unclean election, the one case
        // where a follower cuts below its high watermark.
        p.replica.borrow_mut().set_unclean_leader_election(true);
        let (me, other) = (NodeId(1), NodeId(2));
        let follow = PartitionState {
            leader: Some(other),
            leader_epoch: LeaderEpoch(1),
            partition_epoch: 1,
            isr: vec![other],
            replicas: vec![me, other],
            adding: vec![],
            removing: vec![],
        };
        p.apply_state(follow.clone(), 1);
        p.on_epoch_response(EpochResponse {
            leader_epoch: LeaderEpoch(1),
            requested_epoch: LeaderEpoch(0),
            result: Ok(Some((LeaderEpoch(0), Offset(1)))),
        })
        .unwrap();
        assert_eq!(p.log.borrow().log_end(), Offset(1));

        // Leading again, a retry of the first batch gets its offset back.
        let lead = PartitionState {
            leader: Some(me),
            leader_epoch: LeaderEpoch(2),
            partition_epoch: 2,
            isr: vec![me],
            ..follow
        };
        p.apply_state(lead, 2);
        let (retry, _) = run(p.append(&first, &first_summary)).unwrap();
        assert_eq!(retry.base_offset, Offset(0));
        assert_eq!(p.log.borrow().log_end(), Offset(1));
    }

    /// Producer snapshots are written as segments roll and at a clean
    /// stop; recovery starts from the newest usable one, so a
    /// transaction opened many segments back is still open after a
    /// restart, whether the newest snapshot is whole, damaged or gone.
    #[test]
    fn an_open_transaction_far_back_is_recovered_through_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        let pdir = dir.path().join("t-0");
        let mut c = BrokerConfig::default();
        c.set("segment.bytes", "2000").unwrap();
        let config = Arc::new(c.topic_config(&BTreeMap::new()).unwrap());
        let log = PartitionLog::create(&pdir, Arc::clone(&config), uuid::Uuid::new_v4()).unwrap();
        let p = Partition::led_alone(log);
        let mut open = BatchBuilder::new(0).producer(9, 0, 0).transactional();
        open.push(0, None, Some(b"open"), &[]);
        let open = open.finish();
        run(async {
            p.append(&open, &validate_record_set(&open, 1 << 20).unwrap())
                .await
                .unwrap();
            for i in 0..40 {
                let mut b = BatchBuilder::new(0);
                b.push(0, None, Some(format!("{i:0>200}").as_bytes()), &[]);
                let b = b.finish();
                p.append(&b, &validate_record_set(&b, 1 << 20).unwrap())
                    .await
                    .unwrap();
            }
            // The snapshots of the rolls are synced and named in the
            // background.
            while p.snapshots_writing() {
                glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
            }
        });
        assert!(p.segment_count() > 3);
        let expect = p.describe_producers();
        assert_eq!(expect[0].txn_start_offset, 0);
        p.flush_now().unwrap();
        let end = p.log_end();
        drop(p);
        let snapshots = crate::storage::snapshot_file::list(&pdir).unwrap();
        assert_eq!(
            snapshots.len(),
            crate::storage::snapshot_file::SNAPSHOTS_KEPT
        );
        assert!(snapshots.iter().all(|o| o.0 > 0), "{snapshots:?}");
        assert_eq!(snapshots.last(), Some(&end), "the clean stop's");

        let reopen = || {
            let log = PartitionLog::open(&pdir, Arc::clone(&config), false, end, Offset(0));
            Partition::led_alone(log.unwrap())
        };
        let p = reopen();
        assert_eq!(p.describe_producers(), expect);
        assert_eq!(p.last_stable_offset(), Offset(0));
        drop(p);
        let newest = pdir.join(format!("{}.snapshot", crate::storage::segment_stem(end.0)));
        std::fs::write(&newest, b"damaged").unwrap();
        let p = reopen();
        assert_eq!(p.describe_producers(), expect, "from an older snapshot");
        drop(p);
        for o in crate::storage::snapshot_file::list(&pdir).unwrap() {
            crate::storage::snapshot_file::delete(&pdir, o).unwrap();
        }
        let p = reopen();
        assert_eq!(p.describe_producers(), expect, "from the log start");
        assert_eq!(p.last_stable_offset(), Offset(0));
    }

    /// A follower that cuts a divergent tail holding an ABORT marker
    /// reopens the transaction the marker closed and forgets its index
    /// entry: the marker is no longer in its log, and the new leader may
    /// end the transaction otherwise.
    #[test]
    fn a_truncation_reopens_the_transaction_whose_marker_it_cut() {
        use crate::replication::controller::PartitionState;
        use crate::replication::state::EpochResponse;
        use sluice_protocol::LeaderEpoch;
        let dir = tempfile::tempdir().unwrap();
        let config = Arc::new(
            BrokerConfig::default()
                .topic_config(&BTreeMap::new())
                .unwrap(),
        );
        let log =
            PartitionLog::create(&dir.path().join("t-0"), config, uuid::Uuid::new_v4()).unwrap();
        let p = Partition::led_alone(log);
        let mut b = BatchBuilder::new(0).producer(42, 0, 0).transactional();
        b.push(0, None, Some(b"x"), &[]);
        let batch = b.finish();
        run(p.append(&batch, &validate_record_set(&batch, 1 << 20).unwrap())).unwrap();
        assert_eq!(p.last_stable_offset(), Offset(0));
        let marker = run(async { p.append_marker(42, 0, false, 3) }).unwrap();
        assert_eq!(marker.info.base_offset, Offset(1));
        assert_eq!(p.last_stable_offset(), Offset(2));
        assert_eq!(p.aborted_in(Offset(0), Offset(2)).len(), 1);
        assert_eq!(
            p.append_marker(42, 0, false, 2).err(),
            Some(ErrorCode::TransactionCoordinatorFenced)
        );

        p.replica.borrow_mut().set_unclean_leader_election(true);
        let (me, other) = (NodeId(1), NodeId(2));
        let follow = PartitionState {
            leader: Some(other),
            leader_epoch: LeaderEpoch(1),
            partition_epoch: 1,
            isr: vec![other],
            replicas: vec![me, other],
            adding: vec![],
            removing: vec![],
        };
        p.apply_state(follow, 1);
        p.on_epoch_response(EpochResponse {
            leader_epoch: LeaderEpoch(1),
            requested_epoch: LeaderEpoch(0),
            result: Ok(Some((LeaderEpoch(0), Offset(1)))),
        })
        .unwrap();
        assert_eq!(p.log_end(), Offset(1));
        assert_eq!(p.last_stable_offset(), Offset(0));
        assert!(p.aborted_in(Offset(0), Offset(2)).is_empty());
        assert_eq!(p.describe_producers()[0].txn_start_offset, 0);
    }
}
