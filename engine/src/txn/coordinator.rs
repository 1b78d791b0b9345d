//! The transaction coordinator of one shard: the transactional ids whose
//! `__transaction_state` partition this shard owns and this broker leads.
//!
//! It wraps [`TxnMeta`] with what the state machine leaves out: storing
//! each step in the partition (acks=all, so a new leader has it) before
//! answering, replaying a partition when this broker starts leading it
//! (the coordinator epoch is the partition's leader epoch), completing
//! prepared transactions by writing their markers, and a timer task that
//! notices leadership changes, aborts timed-out transactions, removes
//! expired ids (the log cleaner compacts the partitions).

use super::markers::Marker;
use super::records::{decode_key, decode_value, encode_key, encode_value};
use super::state::{
    check_timeout, init_with_new_id, EndStep, InitRequest, InitStep, ProducerRef, TopicPartition,
    TxnMeta, TxnState,
};
use super::{TxnConfig, TXN_TOPIC};
use crate::replication::state::Acks;
use crate::shard::partition::now_ms;
use crate::shard::Shard;
use futures::channel::oneshot;
use sluice_protocol::record_batch::{for_each_keyed_record, validate_record_set, BatchBuilder};
use sluice_protocol::{ErrorCode, Offset};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// How often leadership of the state partitions is checked and timers
/// run: a new coordinator is found by clients retrying NOT_COORDINATOR
/// every 100 ms or so, and a check costs a map walk.
const TICK: Duration = Duration::from_millis(100);

/// How long a stored step may wait for the in-sync replicas; then the
/// client is told COORDINATOR_NOT_AVAILABLE and retries.
const STORE_TIMEOUT: Duration = Duration::from_secs(30);

/// Most records in one batch of an append.
const APPEND_BATCH_RECORDS: usize = 1_000;

/// Pause before storing a completion again after a failure.
const RETRY_BACKOFF: Duration = Duration::from_millis(200);

/// How long a request that would be answered CONCURRENT_TRANSACTIONS (the
/// id's previous transaction still has markers being written, or another
/// step of it is being stored) waits for that to finish before it is.
/// Markers normally take a few milliseconds; a client told to retry waits
/// its own backoff (20 ms and more), which would otherwise put a floor
/// under every short transaction. Bounded, so a completion stuck on an
/// unavailable partition still gets the client its answer to retry.
const SETTLE_WAIT: Duration = Duration::from_secs(1);

/// A transactional id as DescribeTransactions and ListTransactions show it.
pub type Described = TxnMeta;

/// Per-shard coordinator state.
pub struct TxnCoordinator {
    pub config: TxnConfig,
    txns: RefCell<HashMap<String, TxnMeta>>,
    /// The state partitions loaded, with the coordinator epoch (leader
    /// epoch) they were loaded under.
    loaded: RefCell<HashMap<i32, i32>>,
    markers: super::markers::MarkerSender,
    /// Requests waiting for an id's step under way to be stored
    /// ([`SETTLE_WAIT`]), woken when it is.
    settling: RefCell<HashMap<String, Vec<oneshot::Sender<()>>>>,
    last_abort_check: Cell<i64>,
    last_expiry_check: Cell<i64>,
}

/// Maps a failed store to what a transaction request reports, as Kafka
/// does: a lost leadership sends the client to find the coordinator
/// again, anything else is retried against this one.
fn store_error(e: ErrorCode) -> ErrorCode {
    match e {
        ErrorCode::NotLeaderOrFollower | ErrorCode::NotCoordinator => ErrorCode::NotCoordinator,
        _ => ErrorCode::CoordinatorNotAvailable,
    }
}

impl TxnCoordinator {
    pub fn new(config: TxnConfig) -> TxnCoordinator {
        let now = now_ms();
        TxnCoordinator {
            config,
            txns: RefCell::new(HashMap::new()),
            loaded: RefCell::new(HashMap::new()),
            markers: super::markers::MarkerSender::default(),
            settling: RefCell::new(HashMap::new()),
            last_abort_check: Cell::new(now),
            last_expiry_check: Cell::new(now),
        }
    }

    pub(super) fn marker_sender(&self) -> &super::markers::MarkerSender {
        &self.markers
    }

    /// The state partition of `id`, as the topic now stands.
    fn partition_of(shard: &Shard, id: &str) -> Option<i32> {
        let snapshot = shard.metadata();
        let topic = snapshot.topic(TXN_TOPIC)?;
        Some(crate::group::partition_for(id, topic.partitions))
    }

    /// The leader epoch of state partition `partition` if this broker
    /// leads it.
    pub(super) fn leader_epoch(shard: &Shard, partition: i32) -> Option<i32> {
        let snapshot = shard.metadata();
        let topic = snapshot.topic(TXN_TOPIC)?;
        if !snapshot.leads(topic, partition) {
            return None;
        }
        topic.partition(partition).map(|p| p.leader_epoch.0)
    }

    /// The partition and coordinator epoch of `id`, loading the partition
    /// if this broker leads it and it is not loaded yet.
    fn ready(&self, shard: &Rc<Shard>, id: &str) -> Result<(i32, i32), ErrorCode> {
        // Kafka refuses an empty transactional id (a null one means an
        // idempotent producer, which never gets here).
        if id.is_empty() {
            return Err(ErrorCode::InvalidRequest);
        }
        let partition = Self::partition_of(shard, id).ok_or(ErrorCode::NotCoordinator)?;
        let epoch = Self::leader_epoch(shard, partition).ok_or(ErrorCode::NotCoordinator)?;
        if self.loaded.borrow().get(&partition) != Some(&epoch) {
            self.sync_partition(shard, partition);
        }
        match self.loaded.borrow().get(&partition) {
            Some(e) if *e == epoch => Ok((partition, epoch)),
            _ => Err(ErrorCode::CoordinatorLoadInProgress),
        }
    }

    fn still_coordinator(&self, shard: &Shard, partition: i32, epoch: i32) -> bool {
        Self::leader_epoch(shard, partition) == Some(epoch)
            && self.loaded.borrow().get(&partition) == Some(&epoch)
    }

    /// Appends records to a state partition (acks=all): returns once the
    /// in-sync replicas have them.
    async fn append(
        &self,
        shard: &Rc<Shard>,
        partition: i32,
        records: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    ) -> Result<i64, ErrorCode> {
        append_set(shard, partition, records).await
    }

    /// Stores `step` for its id, then makes it current. The id's entry is
    /// marked pending meanwhile, so other requests for it get
    /// CONCURRENT_TRANSACTIONS.
    async fn store(
        &self,
        shard: &Rc<Shard>,
        partition: i32,
        epoch: i32,
        step: TxnMeta,
    ) -> Result<TxnMeta, ErrorCode> {
        let id = step.transactional_id.clone();
        let fresh = {
            let mut txns = self.txns.borrow_mut();
            match txns.get_mut(&id) {
                Some(m) if m.pending.is_some() => return Err(ErrorCode::ConcurrentTransactions),
                Some(m) => {
                    m.pending = Some(step.state);
                    false
                }
                None => {
                    let mut placeholder = step.clone();
                    placeholder.pending = Some(step.state);
                    txns.insert(id.clone(), placeholder);
                    true
                }
            }
        };
        let record = (encode_key(&id), Some(encode_value(&step)));
        let stored = self.append(shard, partition, vec![record]).await;
        self.wake(&id);
        if !self.still_coordinator(shard, partition, epoch) {
            return Err(ErrorCode::NotCoordinator);
        }
        let mut txns = self.txns.borrow_mut();
        match stored {
            Ok(_) => {
                let m = TxnMeta::stored(step);
                txns.insert(id, m.clone());
                Ok(m)
            }
            Err(e) => {
                if fresh {
                    txns.remove(&id);
                } else if let Some(m) = txns.get_mut(&id) {
                    m.pending = None;
                }
                tracing::warn!(transactional_id = %id, error = ?e, "storing transaction state failed");
                Err(store_error(e))
            }
        }
    }

    /// Wakes the requests waiting for `id` to settle: they look again.
    fn wake(&self, id: &str) {
        for waiter in self.settling.borrow_mut().remove(id).unwrap_or_default() {
            let _ = waiter.send(());
        }
    }

    /// Runs `attempt` and, while it answers CONCURRENT_TRANSACTIONS, waits
    /// for `id`'s next stored step and runs it again, for up to
    /// [`SETTLE_WAIT`] in all.
    async fn when_settled<T, F, Fut>(&self, id: &str, mut attempt: F) -> Result<T, ErrorCode>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ErrorCode>>,
    {
        let deadline = Instant::now() + SETTLE_WAIT;
        loop {
            let result = attempt().await;
            let left = deadline.saturating_duration_since(Instant::now());
            if !matches!(result, Err(ErrorCode::ConcurrentTransactions)) || left.is_zero() {
                return result;
            }
            // No await since the attempt's answer: the step it saw under
            // way cannot have been stored before this waiter is in.
            let (tx, rx) = oneshot::channel();
            self.settling
                .borrow_mut()
                .entry(id.to_string())
                .or_default()
                .push(tx);
            let settled = async { Ok(rx.await.is_ok()) };
            if glommio::timer::timeout(left, settled).await.is_err() {
                return Err(ErrorCode::ConcurrentTransactions);
            }
        }
    }

    /// InitProducerId with a transactional id: the producer id and epoch
    /// the producer is to use.
    pub async fn init_producer_id(
        &self,
        shard: &Rc<Shard>,
        id: &str,
        req: InitRequest,
    ) -> Result<ProducerRef, ErrorCode> {
        self.when_settled(id, || self.try_init_producer_id(shard, id, req))
            .await
    }

    async fn try_init_producer_id(
        &self,
        shard: &Rc<Shard>,
        id: &str,
        req: InitRequest,
    ) -> Result<ProducerRef, ErrorCode> {
        check_timeout(req.timeout_ms, self.config.max_timeout_ms)?;
        let (partition, epoch) = self.ready(shard, id)?;
        let existing = self.txns.borrow().get(id).cloned();
        let step = match &existing {
            None => InitStep::NewProducerId,
            Some(m) => m.init(req, now_ms())?,
        };
        let answer = |m: &TxnMeta| ProducerRef {
            producer_id: m.producer_id,
            epoch: m.epoch,
        };
        match step {
            InitStep::Answer(p) => Ok(p),
            InitStep::Store(m) => self
                .store(shard, partition, epoch, m)
                .await
                .map(|m| answer(&m)),
            InitStep::FenceAndAbort(m) => {
                tracing::info!(transactional_id = %id, epoch = m.epoch, "fencing the previous producer and aborting its transaction");
                let m = self.store(shard, partition, epoch, m).await?;
                self.spawn_completion(shard, partition, epoch, m);
                Err(ErrorCode::ConcurrentTransactions)
            }
            InitStep::NewProducerId => {
                let producer_id = crate::shard::controller::producer_id(shard).await.map_err(
                    |(code, message)| {
                        tracing::warn!(?code, %message, "no producer id");
                        ErrorCode::CoordinatorNotAvailable
                    },
                )?;
                if self.txns.borrow().get(id) != existing.as_ref() {
                    return Err(ErrorCode::ConcurrentTransactions);
                }
                let m =
                    init_with_new_id(id, existing.as_ref(), producer_id, req.timeout_ms, now_ms());
                self.store(shard, partition, epoch, m)
                    .await
                    .map(|m| answer(&m))
            }
        }
    }

    /// The current metadata of `id`, or INVALID_PRODUCER_ID_MAPPING.
    fn current(&self, id: &str) -> Result<TxnMeta, ErrorCode> {
        self.txns
            .borrow()
            .get(id)
            .cloned()
            .ok_or(ErrorCode::InvalidProducerIdMapping)
    }

    /// AddPartitionsToTxn (and AddOffsetsToTxn): adds partitions to the
    /// open transaction, or opens one.
    pub async fn add_partitions(
        &self,
        shard: &Rc<Shard>,
        id: &str,
        producer: ProducerRef,
        partitions: Vec<TopicPartition>,
    ) -> Result<(), ErrorCode> {
        self.when_settled(id, || {
            self.try_add_partitions(shard, id, producer, partitions.clone())
        })
        .await
    }

    async fn try_add_partitions(
        &self,
        shard: &Rc<Shard>,
        id: &str,
        producer: ProducerRef,
        partitions: Vec<TopicPartition>,
    ) -> Result<(), ErrorCode> {
        let (partition, epoch) = self.ready(shard, id)?;
        let m = self.current(id)?;
        match m.add_partitions(producer, &partitions, now_ms())? {
            None => Ok(()),
            Some(step) => self.store(shard, partition, epoch, step).await.map(|_| ()),
        }
    }

    /// AddPartitionsToTxn v4's verify-only form.
    pub fn verify_partitions(
        &self,
        shard: &Rc<Shard>,
        id: &str,
        producer: ProducerRef,
        partitions: &[TopicPartition],
    ) -> Result<Vec<(TopicPartition, ErrorCode)>, ErrorCode> {
        self.ready(shard, id)?;
        self.current(id)?.verify_partitions(producer, partitions)
    }

    /// EndTxn: answered once the decision (PrepareCommit/PrepareAbort) is
    /// stored; the markers and the completion follow.
    pub async fn end_txn(
        &self,
        shard: &Rc<Shard>,
        id: &str,
        producer: ProducerRef,
        commit: bool,
    ) -> Result<(), ErrorCode> {
        self.when_settled(id, || self.try_end_txn(shard, id, producer, commit))
            .await
    }

    async fn try_end_txn(
        &self,
        shard: &Rc<Shard>,
        id: &str,
        producer: ProducerRef,
        commit: bool,
    ) -> Result<(), ErrorCode> {
        let (partition, epoch) = self.ready(shard, id)?;
        let m = self.current(id)?;
        match m.end(producer, commit, now_ms())? {
            EndStep::Done => Ok(()),
            EndStep::Prepare(step) => {
                let m = self.store(shard, partition, epoch, step).await?;
                self.spawn_completion(shard, partition, epoch, m);
                Ok(())
            }
        }
    }

    /// Writes a prepared transaction's markers and stores its completion,
    /// in the background.
    fn spawn_completion(&self, shard: &Rc<Shard>, partition: i32, epoch: i32, m: TxnMeta) {
        let shard = Rc::clone(shard);
        glommio::spawn_local(async move {
            if let Some(c) = super::coordinator() {
                c.complete(&shard, partition, epoch, m).await;
            }
        })
        .detach();
    }

    async fn complete(&self, shard: &Rc<Shard>, partition: i32, epoch: i32, prepared: TxnMeta) {
        assert!(prepared.state.is_prepared());
        let marker = Marker {
            producer_id: prepared.producer_id,
            producer_epoch: prepared.epoch,
            commit: prepared.state == TxnState::PrepareCommit,
            coordinator_epoch: epoch,
        };
        let partitions = prepared.partitions.iter().cloned().collect();
        if let Err(e) = self
            .markers
            .write(shard, partition, marker, partitions)
            .await
        {
            tracing::warn!(transactional_id = %prepared.transactional_id, error = ?e, "markers not written; the partition's next coordinator completes the transaction");
            return;
        }
        loop {
            if !self.still_coordinator(shard, partition, epoch) {
                return;
            }
            let same = self
                .txns
                .borrow()
                .get(&prepared.transactional_id)
                .is_some_and(|m| {
                    m.producer_id == prepared.producer_id
                        && m.epoch == prepared.epoch
                        && m.state == prepared.state
                });
            if !same {
                return;
            }
            let step = prepared.complete(now_ms());
            match self.store(shard, partition, epoch, step).await {
                Ok(_) => return,
                Err(ErrorCode::NotCoordinator) => return,
                Err(_) => glommio::timer::sleep(RETRY_BACKOFF).await,
            }
        }
    }

    /// DescribeTransactions of one id: its metadata, or the error.
    pub fn describe(&self, shard: &Rc<Shard>, id: &str) -> Result<Described, ErrorCode> {
        self.ready(shard, id)?;
        self.txns
            .borrow()
            .get(id)
            .filter(|m| m.state != TxnState::Dead)
            .cloned()
            .ok_or(ErrorCode::TransactionalIdNotFound)
    }

    /// ListTransactions on this shard: every id passing `keep`.
    pub fn list(&self, keep: impl Fn(&TxnMeta) -> bool) -> Vec<Described> {
        self.txns
            .borrow()
            .values()
            .filter(|m| keep(m))
            .cloned()
            .collect()
    }

    /// Loads or drops state partition `partition` as this broker leads it
    /// or not.
    fn sync_partition(&self, shard: &Rc<Shard>, partition: i32) {
        let epoch = Self::leader_epoch(shard, partition);
        let loaded = self.loaded.borrow().get(&partition).copied();
        if epoch == loaded {
            return;
        }
        let count = Self::partition_count(shard);
        self.txns
            .borrow_mut()
            .retain(|id, _| crate::group::partition_for(id, count) != partition);
        self.loaded.borrow_mut().remove(&partition);
        // Waiting requests look again, and find another coordinator or
        // this one loaded anew.
        let waiting: Vec<String> = self
            .settling
            .borrow()
            .keys()
            .filter(|id| crate::group::partition_for(id, count) == partition)
            .cloned()
            .collect();
        for id in waiting {
            self.wake(&id);
        }
        if let Some(epoch) = epoch {
            if shard.leader_partition(TXN_TOPIC, partition).is_some() {
                self.load(shard, partition);
                self.loaded.borrow_mut().insert(partition, epoch);
                self.resume(shard, partition, epoch);
            }
        } else {
            tracing::info!(
                partition,
                "no longer coordinating the transactions of {TXN_TOPIC}"
            );
        }
    }

    fn partition_count(shard: &Shard) -> i32 {
        shard
            .metadata()
            .topic(TXN_TOPIC)
            .map_or(1, |t| t.partitions.max(1))
    }

    /// Replays one state partition into memory.
    fn load(&self, shard: &Shard, partition: i32) {
        let Some(p) = shard.leader_partition(TXN_TOPIC, partition) else {
            return;
        };
        let mut txns = self.txns.borrow_mut();
        let (mut records, mut bad) = (0u64, 0u64);
        let result = p.for_each_batch(Offset(0), |h, batch| {
            for_each_keyed_record(h, batch, |_, key, value| {
                records += 1;
                let Ok(id) = decode_key(key) else {
                    bad += 1;
                    return;
                };
                match value.map(|v| decode_value(&id, v)) {
                    None => {
                        txns.remove(&id);
                    }
                    Some(Ok(m)) => {
                        txns.insert(id, m);
                    }
                    Some(Err(_)) => bad += 1,
                }
            });
        });
        if let Err(e) = result {
            tracing::error!(partition, error = %e, "replaying {TXN_TOPIC}");
        }
        if records > 0 {
            tracing::info!(partition, records, undecodable = bad, "loaded transactions");
        }
    }

    /// Completes the prepared transactions of a partition just loaded.
    fn resume(&self, shard: &Rc<Shard>, partition: i32, epoch: i32) {
        let count = Self::partition_count(shard);
        let prepared: Vec<TxnMeta> = self
            .txns
            .borrow()
            .values()
            .filter(|m| m.state.is_prepared() && m.pending.is_none())
            .filter(|m| crate::group::partition_for(&m.transactional_id, count) == partition)
            .cloned()
            .collect();
        for m in prepared {
            tracing::info!(transactional_id = %m.transactional_id, state = m.state.name(), "completing a transaction left prepared");
            self.spawn_completion(shard, partition, epoch, m);
        }
    }

    /// Notices the state partitions this shard starts or stops leading.
    fn sync_leadership(&self, shard: &Rc<Shard>) {
        let mut partitions: Vec<i32> = shard
            .partitions()
            .iter()
            .filter(|p| p.topic == TXN_TOPIC)
            .map(|p| p.index)
            .collect();
        partitions.extend(self.loaded.borrow().keys().copied());
        partitions.sort_unstable();
        partitions.dedup();
        for partition in partitions {
            self.sync_partition(shard, partition);
        }
    }

    /// Aborts the transactions open longer than their timeout, fencing
    /// their producers (the epoch is bumped, as Kafka does).
    async fn abort_timed_out(&self, shard: &Rc<Shard>, now: i64) {
        let timed_out: Vec<TxnMeta> = self
            .txns
            .borrow()
            .values()
            .filter(|m| m.timed_out(now))
            .cloned()
            .collect();
        for m in timed_out {
            let Ok((partition, epoch)) = self.ready(shard, &m.transactional_id) else {
                continue;
            };
            // An earlier abort of this loop awaited its store: the id may
            // have moved on meanwhile (its producer ended the transaction).
            let now = now_ms();
            let current = self.txns.borrow().get(&m.transactional_id).cloned();
            let Some(m) = current.filter(|c| c.timed_out(now)) else {
                continue;
            };
            tracing::info!(transactional_id = %m.transactional_id, timeout_ms = m.timeout_ms, "aborting a transaction past its timeout");
            if let Ok(stored) = self.store(shard, partition, epoch, m.fence(now)).await {
                self.spawn_completion(shard, partition, epoch, stored);
            }
        }
    }

    /// Removes transactional ids idle past `transactional.id.expiration.ms`
    /// with a tombstone each.
    async fn remove_expired(&self, shard: &Rc<Shard>, now: i64) {
        let expired: Vec<String> = self
            .txns
            .borrow()
            .values()
            .filter(|m| m.expired(now, self.config.id_expiration_ms))
            .map(|m| m.transactional_id.clone())
            .collect();
        for id in expired {
            let Ok((partition, epoch)) = self.ready(shard, &id) else {
                continue;
            };
            // Checked again: an earlier removal of this loop awaited its
            // store, and the id may have been used meanwhile.
            let expiration_ms = self.config.id_expiration_ms;
            match self.txns.borrow_mut().get_mut(&id) {
                Some(m) if m.expired(now_ms(), expiration_ms) => m.pending = Some(TxnState::Dead),
                _ => continue,
            }
            let stored = self
                .append(shard, partition, vec![(encode_key(&id), None)])
                .await;
            if !self.still_coordinator(shard, partition, epoch) {
                continue;
            }
            match stored {
                Ok(_) => {
                    self.txns.borrow_mut().remove(&id);
                    tracing::info!(transactional_id = %id, "removed an expired transactional id");
                }
                Err(e) => {
                    if let Some(m) = self.txns.borrow_mut().get_mut(&id) {
                        m.pending = None;
                    }
                    tracing::warn!(transactional_id = %id, error = ?e, "removing an expired transactional id failed");
                }
            }
        }
    }

    /// Runs leadership checks, timeouts and expiry until the broker
    /// stops (the log cleaner compacts the state partitions).
    pub async fn run_timers(shard: Rc<Shard>) {
        while !shard.broker.stopping() {
            glommio::timer::sleep(TICK).await;
            let Some(c) = super::coordinator() else {
                continue;
            };
            c.sync_leadership(&shard);
            let now = now_ms();
            if now - c.last_abort_check.get() >= c.config.abort_check_ms {
                c.last_abort_check.set(now);
                c.abort_timed_out(&shard, now).await;
            }
            if now - c.last_expiry_check.get() >= c.config.expiry_check_ms {
                c.last_expiry_check.set(now);
                c.remove_expired(&shard, now).await;
            }
        }
    }
}

/// Appends records to a state partition this shard owns, in batches of
/// at most [`APPEND_BATCH_RECORDS`], all in one record set, with
/// acks=all. Returns the first record's offset.
async fn append_set(
    shard: &Rc<Shard>,
    partition: i32,
    records: Vec<(Vec<u8>, Option<Vec<u8>>)>,
) -> Result<i64, ErrorCode> {
    let p = shard
        .serving_partition(TXN_TOPIC, partition)
        .ok_or(ErrorCode::NotCoordinator)?;
    let now = now_ms();
    let mut set = Vec::new();
    for chunk in records.chunks(APPEND_BATCH_RECORDS) {
        let mut b = BatchBuilder::new(now);
        for (k, v) in chunk {
            b.push(now, Some(k), v.as_deref(), &[]);
        }
        set.extend_from_slice(&b.finish());
    }
    let summary = validate_record_set(&set, usize::MAX).map_err(|_| ErrorCode::CorruptMessage)?;
    let (info, _, acked) = p.append_with(&set, &summary, Acks::All).await?;
    if let Some(rx) = acked {
        crate::shard::partition::acked(rx, STORE_TIMEOUT).await?;
    }
    Ok(info.base_offset.0)
}
