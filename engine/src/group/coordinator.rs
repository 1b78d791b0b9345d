//! The group coordinator of one shard: the groups whose
//! `__consumer_offsets` partition this shard owns.
//!
//! It wraps [`Group`] with what the state machine leaves out: parked
//! JoinGroup/SyncGroup requests waiting on oneshot channels, appends to
//! the offsets partition (local to this shard by construction), replay of
//! that partition at start, and a timer task. A commit is answered once
//! its record is appended under the offsets topic's flush policy; after
//! a kill -9 the page cache still holds it, as it does for produced data.

use super::consumer::state::ConsumerGroup;
use super::records::{decode_consumer_group_epoch, GroupValue, Key, OffsetValue};
use super::state::{Committed, Completion, Group, GroupState, JoinRequest, JoinResult};
use super::state::{SyncRequest, SyncResult, SyncStep, Ticket};
use super::txn_offsets::{self, PendingOffsets, TxnCommitRequest};
use super::{GroupConfig, OFFSETS_TOPIC};
use crate::shard::partition::now_ms;
use crate::shard::Shard;
use bytes::Bytes;
use futures::channel::oneshot;
use sluice_protocol::record_batch::{
    compute_crc, decode_records, for_each_keyed_record, validate_record_set, BatchBuilder,
    BatchHeader, ATTRIBUTES_OFFSET, BATCH_HEADER_SIZE, CRC_OFFSET,
};
use sluice_protocol::{ErrorCode, Offset};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::Duration;

/// How often group timers run: sessions are seconds long, so 10 ms adds
/// nothing noticeable to a rebalance and costs microseconds per tick.
pub const TICK: Duration = Duration::from_millis(10);

enum Waiter {
    Join(oneshot::Sender<JoinResult>),
    Sync(oneshot::Sender<SyncResult>),
}

/// Removes and returns the parked requests of the groups `moved` picks.
fn take_waiters(
    waiters: &mut HashMap<Ticket, (String, Waiter)>,
    moved: impl Fn(&str) -> bool,
) -> Vec<Waiter> {
    let tickets: Vec<Ticket> = waiters
        .iter()
        .filter(|(_, (id, _))| moved(id))
        .map(|(t, _)| *t)
        .collect();
    tickets
        .into_iter()
        .filter_map(|t| waiters.remove(&t).map(|(_, w)| w))
        .collect()
}

/// A record to append: key and value (`None` for a tombstone).
pub type Record = (Vec<u8>, Option<Vec<u8>>);

/// One partition's offsets in an OffsetCommit.
#[derive(Clone, Debug)]
pub struct CommitPartition {
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
}

/// An OffsetCommit, decoded.
#[derive(Clone, Debug, Default)]
pub struct CommitRequest {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub generation: i32,
    pub topics: Vec<(String, Vec<CommitPartition>)>,
    /// The OffsetCommit version: consumer-protocol members need v9+.
    pub version: i16,
}

/// A committed offset as OffsetFetch reports it (-1 when none).
#[derive(Clone, Debug)]
pub struct FetchedOffset {
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    /// UNSTABLE_OFFSET_COMMIT when `require_stable` was asked and an
    /// open transaction holds an offset of the partition.
    pub error: ErrorCode,
}

/// A group as DescribeGroups reports it.
#[derive(Clone, Debug)]
pub struct GroupDescription {
    pub state: GroupState,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberDescription>,
}

#[derive(Clone, Debug)]
pub struct MemberDescription {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

/// A group as ListGroups reports it.
#[derive(Clone, Debug)]
pub struct ListedGroup {
    pub id: String,
    pub protocol_type: String,
    pub state: &'static str,
    /// `classic` or `consumer` (ListGroups v5).
    pub group_type: &'static str,
}

/// Per topic, each partition's answer to a commit.
pub type PartitionCodes = Vec<(String, Vec<(i32, ErrorCode)>)>;

/// Per-shard coordinator state.
pub struct Coordinator {
    pub config: GroupConfig,
    pub(in crate::group) groups: RefCell<HashMap<String, Group>>,
    /// Consumer-protocol (KIP-848) groups; their offsets are kept in
    /// `groups` under the same id.
    pub(in crate::group) consumers: RefCell<HashMap<String, ConsumerGroup>>,
    /// Parked JoinGroup and SyncGroup requests, with their group's id.
    waiters: RefCell<HashMap<Ticket, (String, Waiter)>>,
    next_ticket: Cell<Ticket>,
    /// Offsets of open transactions (TxnOffsetCommit), by producer.
    pub(in crate::group) pending_txn: RefCell<PendingOffsets>,
}

/// Most records in one batch of an append.
const APPEND_BATCH_RECORDS: usize = 1_000;

fn bad_timeout(cfg: &GroupConfig, session_timeout_ms: i32) -> bool {
    let t = i64::from(session_timeout_ms);
    t < cfg.min_session_timeout_ms || t > cfg.max_session_timeout_ms
}

/// Gives every partition a commit accepted the code its append failed
/// with.
fn fail_accepted(results: &mut [(String, Vec<(i32, ErrorCode)>)], code: ErrorCode) {
    for (_, codes) in results.iter_mut() {
        for (_, c) in codes.iter_mut().filter(|(_, c)| *c == ErrorCode::None) {
            *c = code;
        }
    }
}

/// The attributes bit of a transactional batch (bit 4), which the
/// protocol's batch builder leaves clear.
const TRANSACTIONAL_ATTRIBUTE: i16 = 0x10;

/// Marks a finished batch transactional and recomputes its CRC, which
/// covers the attributes.
fn set_transactional(batch: &mut [u8]) {
    let at = ATTRIBUTES_OFFSET;
    let attributes = i16::from_be_bytes([batch[at], batch[at + 1]]) | TRANSACTIONAL_ATTRIBUTE;
    batch[at..at + 2].copy_from_slice(&attributes.to_be_bytes());
    let crc = compute_crc(batch);
    batch[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Maps a failed append to what a group request reports.
fn store_error(e: ErrorCode) -> ErrorCode {
    match e {
        ErrorCode::MessageTooLarge | ErrorCode::RecordListTooLarge => {
            ErrorCode::InvalidCommitOffsetSize
        }
        ErrorCode::NotLeaderOrFollower => ErrorCode::NotCoordinator,
        _ => ErrorCode::CoordinatorNotAvailable,
    }
}

impl Coordinator {
    pub fn new(config: GroupConfig) -> Coordinator {
        Coordinator {
            config,
            groups: RefCell::new(HashMap::new()),
            consumers: RefCell::new(HashMap::new()),
            waiters: RefCell::new(HashMap::new()),
            next_ticket: Cell::new(0),
            pending_txn: RefCell::new(PendingOffsets::default()),
        }
    }

    fn ticket(&self, group_id: &str, waiter: Waiter) -> Ticket {
        let t = self.next_ticket.get();
        self.next_ticket.set(t + 1);
        self.waiters
            .borrow_mut()
            .insert(t, (group_id.to_string(), waiter));
        t
    }

    /// Sends the group's finished answers and stores its record if a
    /// transition asked for it.
    pub(in crate::group) fn deliver(&self, shard: &Rc<Shard>, group_id: &str) {
        let (completions, store) = {
            let mut groups = self.groups.borrow_mut();
            let Some(g) = groups.get_mut(group_id) else {
                return;
            };
            let store = g.take_needs_store().then(|| g.stored_value(None));
            (g.take_completions(), store)
        };
        let mut waiters = self.waiters.borrow_mut();
        for c in completions {
            match c {
                Completion::Join(t, r) => {
                    if let Some((_, Waiter::Join(tx))) = waiters.remove(&t) {
                        let _ = tx.send(r);
                    }
                }
                Completion::Sync(t, r) => {
                    if let Some((_, Waiter::Sync(tx))) = waiters.remove(&t) {
                        let _ = tx.send(r);
                    }
                }
            }
        }
        drop(waiters);
        if let Some(value) = store {
            let (shard, id) = (Rc::clone(shard), group_id.to_string());
            glommio::spawn_local(async move {
                let records = vec![group_record(&id, Some(&value))];
                let c = &shard.groups;
                if let Err(e) = c.append(&shard, c.partition_of(&id), records).await {
                    tracing::warn!(group = %id, error = ?e, "storing group metadata failed")
                }
            })
            .detach();
        }
    }

    /// Appends records to an offsets partition.
    pub(in crate::group) async fn append(
        &self,
        shard: &Rc<Shard>,
        partition: i32,
        records: Vec<Record>,
    ) -> Result<i64, ErrorCode> {
        self.append_as(shard, partition, records, None).await
    }

    /// Appends records, in a transactional batch of `producer` (id,
    /// epoch) if one is given.
    async fn append_as(
        &self,
        shard: &Rc<Shard>,
        partition: i32,
        records: Vec<Record>,
        producer: Option<(i64, i16)>,
    ) -> Result<i64, ErrorCode> {
        append_set(shard, partition, records, producer).await
    }

    /// Tombstones a deletion writes for partitions only open transactions
    /// hold, as Kafka does, so no commit of theirs outlives the group.
    fn pending_tombstones(
        &self,
        group_id: &str,
        committed: &HashMap<(String, i32), Committed>,
    ) -> Vec<Record> {
        self.pending_txn
            .borrow()
            .partitions_of(group_id)
            .into_iter()
            .filter(|k| !committed.contains_key(k))
            .map(|(t, p)| offset_tombstone(group_id, &t, p))
            .collect()
    }

    /// Forgets offsets whose tombstones were appended from `base` on.
    fn apply_tombstones(&self, group_id: &str, keys: &[(String, i32)], base: i64) {
        if let Some(g) = self.groups.borrow_mut().get_mut(group_id) {
            for (i, (t, p)) in keys.iter().enumerate() {
                g.remove_offset(t, *p, base + i as i64);
            }
        }
    }

    pub(in crate::group) fn partition_of(&self, group_id: &str) -> i32 {
        super::partition_for(group_id, self.config.offsets_partitions)
    }

    /// JoinGroup: resolves when the group answers.
    pub async fn join(&self, shard: &Rc<Shard>, group_id: String, req: JoinRequest) -> JoinResult {
        if group_id.is_empty() {
            return JoinResult::error(ErrorCode::InvalidGroupId, &req.member_id);
        }
        if bad_timeout(&self.config, req.session_timeout_ms) {
            return JoinResult::error(ErrorCode::InvalidSessionTimeout, &req.member_id);
        }
        if let Some(r) = self.classic_join_consumer(shard, &group_id, &req) {
            return r;
        }
        if let Err(code) = self.classic_join_allowed(shard, &group_id) {
            return JoinResult::error(code, &req.member_id);
        }
        {
            let mut groups = self.groups.borrow_mut();
            if !groups.contains_key(&group_id) {
                if !req.member_id.is_empty() {
                    return JoinResult::error(ErrorCode::UnknownMemberId, &req.member_id);
                }
                groups.insert(group_id.clone(), Group::new(&group_id, now_ms()));
            }
        }
        let (tx, rx) = oneshot::channel();
        let ticket = self.ticket(&group_id, Waiter::Join(tx));
        let member_id = req.member_id.clone();
        if let Some(g) = self.groups.borrow_mut().get_mut(&group_id) {
            g.join(req, ticket, now_ms(), &self.config);
        }
        self.deliver(shard, &group_id);
        rx.await
            .unwrap_or_else(|_| JoinResult::error(ErrorCode::CoordinatorNotAvailable, &member_id))
    }

    /// SyncGroup: followers wait for the leader; the leader's assignment
    /// is stored before anyone gets it.
    pub async fn sync(&self, shard: &Rc<Shard>, group_id: String, req: SyncRequest) -> SyncResult {
        if let Some(r) = self.classic_sync_consumer(shard, &group_id, &req) {
            return r;
        }
        let (tx, rx) = oneshot::channel();
        let ticket = self.ticket(&group_id, Waiter::Sync(tx));
        let now = now_ms();
        let step = self
            .groups
            .borrow_mut()
            .get_mut(&group_id)
            .map(|g| (g.sync(req, ticket, now), g.generation()));
        let Some((step, generation)) = step else {
            self.waiters.borrow_mut().remove(&ticket);
            return SyncResult::error(ErrorCode::UnknownMemberId);
        };
        self.deliver(shard, &group_id);
        if let SyncStep::Store(value) = step {
            let records = vec![group_record(&group_id, Some(&value))];
            let stored = self
                .append(shard, self.partition_of(&group_id), records)
                .await
                .map(|_| ())
                .map_err(store_error);
            if let Some(g) = self.groups.borrow_mut().get_mut(&group_id) {
                g.sync_stored(generation, stored, now_ms(), &self.config);
            }
            self.deliver(shard, &group_id);
        }
        rx.await
            .unwrap_or_else(|_| SyncResult::error(ErrorCode::CoordinatorNotAvailable))
    }

    pub fn heartbeat(
        &self,
        shard: &Rc<Shard>,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> ErrorCode {
        if let Some(code) =
            self.classic_heartbeat_consumer(group_id, member_id, instance_id, generation)
        {
            return code;
        }
        let code = match self.groups.borrow_mut().get_mut(group_id) {
            Some(g) => g.heartbeat(member_id, instance_id, generation, now_ms()),
            None => ErrorCode::UnknownMemberId,
        };
        self.deliver(shard, group_id);
        code
    }

    /// LeaveGroup for each (member id, instance id); one code each.
    pub fn leave(
        &self,
        shard: &Rc<Shard>,
        group_id: &str,
        members: &[(String, Option<String>)],
    ) -> Vec<ErrorCode> {
        if let Some(codes) = self.classic_leave_consumer(shard, group_id, members) {
            return codes;
        }
        let codes = match self.groups.borrow_mut().get_mut(group_id) {
            Some(g) => members
                .iter()
                .map(|(m, i)| g.leave(m, i.as_deref(), now_ms(), &self.config))
                .collect(),
            None => vec![ErrorCode::UnknownMemberId; members.len()],
        };
        self.deliver(shard, group_id);
        codes
    }

    /// OffsetCommit: validates membership and every partition, appends one
    /// batch, then applies what was appended.
    pub async fn commit(
        &self,
        shard: &Rc<Shard>,
        group_id: String,
        req: CommitRequest,
    ) -> Vec<(String, Vec<(i32, ErrorCode)>)> {
        let all = |code: ErrorCode| {
            req.topics
                .iter()
                .map(|(t, ps)| (t.clone(), ps.iter().map(|p| (p.partition, code)).collect()))
                .collect()
        };
        if group_id.is_empty() {
            return all(ErrorCode::InvalidGroupId);
        }
        let now = now_ms();
        let committed: Vec<(&str, i32)> = req
            .topics
            .iter()
            .flat_map(|(t, ps)| ps.iter().map(move |p| (t.as_str(), p.partition)))
            .collect();
        let consumer_check = self
            .consumers
            .borrow()
            .get(&group_id)
            .map(|g| g.check_commit(&req.member_id, req.generation, req.version, &committed));
        let checked = if let Some(checked) = consumer_check {
            self.groups
                .borrow_mut()
                .entry(group_id.clone())
                .or_insert_with(|| Group::new(&group_id, now));
            checked
        } else {
            let mut groups = self.groups.borrow_mut();
            if !groups.contains_key(&group_id) {
                if req.generation >= 0 {
                    return all(ErrorCode::IllegalGeneration);
                }
                groups.insert(group_id.clone(), Group::new(&group_id, now));
            }
            let g = groups.get_mut(&group_id).expect("inserted");
            g.check_commit(
                &req.member_id,
                req.instance_id.as_deref(),
                req.generation,
                now,
            )
        };
        if let Err(code) = checked {
            return all(code);
        }
        let (mut results, accepted) = self.validate_partitions(shard, &req.topics);
        if accepted.is_empty() {
            return results;
        }
        let records = accepted
            .iter()
            .map(|(t, p)| offset_record(&group_id, t, p, now))
            .collect();
        match self
            .append(shard, self.partition_of(&group_id), records)
            .await
        {
            Ok(base) => {
                if let Some(g) = self.groups.borrow_mut().get_mut(&group_id) {
                    for (i, (t, p)) in accepted.iter().enumerate() {
                        let value = offset_value(p, now);
                        let log_offset = base + i as i64;
                        g.apply_offset(t, p.partition, Committed { value, log_offset });
                    }
                }
            }
            Err(e) => fail_accepted(&mut results, store_error(e)),
        }
        results
    }

    /// Checks each partition of a commit: it must exist and its metadata
    /// fit. Returns the codes and the accepted partitions.
    fn validate_partitions(
        &self,
        shard: &Rc<Shard>,
        topics: &[(String, Vec<CommitPartition>)],
    ) -> (PartitionCodes, Vec<(String, CommitPartition)>) {
        let metadata = shard.metadata();
        let mut results = Vec::new();
        let mut accepted = Vec::new();
        for (topic, partitions) in topics {
            let known = metadata.topic(topic).map_or(0, |t| t.partitions);
            let mut codes = Vec::new();
            for p in partitions {
                let code = if p.partition < 0 || p.partition >= known {
                    ErrorCode::UnknownTopicOrPartition
                } else if p.metadata.len() > self.config.offset_metadata_max_bytes {
                    ErrorCode::OffsetMetadataTooLarge
                } else {
                    accepted.push((topic.clone(), p.clone()));
                    ErrorCode::None
                };
                codes.push((p.partition, code));
            }
            results.push((topic.clone(), codes));
        }
        (results, accepted)
    }

    /// Checks a TxnOffsetCommit's member, as Kafka does: a group that
    /// does not exist is created as one that only stores offsets when no
    /// generation is named, else ILLEGAL_GENERATION.
    fn check_txn_member(&self, group_id: &str, req: &TxnCommitRequest) -> Result<(), ErrorCode> {
        let instance = req.instance_id.as_deref();
        if let Some(c) = self.consumers.borrow().get(group_id) {
            return c.check_txn_commit(&req.member_id, instance, req.generation);
        }
        let mut groups = self.groups.borrow_mut();
        if !groups.contains_key(group_id) {
            if req.generation >= 0 {
                return Err(ErrorCode::IllegalGeneration);
            }
            groups.insert(group_id.to_string(), Group::new(group_id, now_ms()));
        }
        let g = groups.get(group_id).expect("inserted");
        g.check_txn_commit(&req.member_id, instance, req.generation)
    }

    /// TxnOffsetCommit: validates the producer, member and partitions,
    /// appends the offsets in a transactional batch of the producer, then
    /// keeps them pending until its transaction's marker arrives
    /// ([`Coordinator::txn_marker`]).
    pub async fn txn_commit(
        &self,
        shard: &Rc<Shard>,
        group_id: String,
        req: TxnCommitRequest,
    ) -> Vec<(String, Vec<(i32, ErrorCode)>)> {
        let all = |code: ErrorCode| {
            req.topics
                .iter()
                .map(|(t, ps)| (t.clone(), ps.iter().map(|p| (p.partition, code)).collect()))
                .collect()
        };
        if group_id.is_empty() {
            return all(ErrorCode::InvalidGroupId);
        }
        if req.producer_id < 0 || req.producer_epoch < 0 {
            return all(ErrorCode::InvalidRequest);
        }
        // A fenced instance's late commit must not join its successor's
        // transaction.
        let pending_epoch = self.pending_txn.borrow().epoch(req.producer_id);
        if pending_epoch.is_some_and(|e| req.producer_epoch < e) {
            return all(ErrorCode::InvalidProducerEpoch);
        }
        if let Err(code) = self.check_txn_member(&group_id, &req) {
            tracing::info!(group = %group_id, transactional_id = %req.transactional_id, ?code, "TxnOffsetCommit refused");
            return all(code);
        }
        let (mut results, accepted) = self.validate_partitions(shard, &req.topics);
        if accepted.is_empty() {
            return results;
        }
        let now = now_ms();
        let records = accepted
            .iter()
            .map(|(t, p)| offset_record(&group_id, t, p, now))
            .collect();
        let producer = (req.producer_id, req.producer_epoch);
        let partition = self.partition_of(&group_id);
        if let Err(code) = verify_offsets_partition(shard, &req, partition).await {
            tracing::info!(group = %group_id, transactional_id = %req.transactional_id, ?code, "TxnOffsetCommit not verified");
            fail_accepted(&mut results, code);
            return results;
        }
        match self
            .append_as(shard, partition, records, Some(producer))
            .await
        {
            Ok(base) => {
                let mut pending = self.pending_txn.borrow_mut();
                for (i, (t, p)) in accepted.iter().enumerate() {
                    let value = offset_value(p, now);
                    let c = Committed {
                        value,
                        log_offset: base + i as i64,
                    };
                    pending.add(producer.0, producer.1, &group_id, t, p.partition, c);
                }
            }
            Err(e) => fail_accepted(&mut results, store_error(e)),
        }
        results
    }

    /// OffsetFetch: the requested partitions, or every committed one.
    /// With `require_stable` (OffsetFetch v7+, set by read_committed
    /// consumers) a partition an open transaction holds an offset of is
    /// answered UNSTABLE_OFFSET_COMMIT, which clients retry.
    pub fn fetch_offsets(
        &self,
        group_id: &str,
        topics: Option<Vec<(String, Vec<i32>)>>,
        require_stable: bool,
    ) -> Vec<(String, Vec<FetchedOffset>)> {
        let groups = self.groups.borrow();
        let group = groups.get(group_id);
        let found = |t: &str, p: i32| {
            if require_stable && self.is_unstable(group_id, t, p) {
                return FetchedOffset {
                    partition: p,
                    offset: -1,
                    leader_epoch: -1,
                    metadata: String::new(),
                    error: ErrorCode::UnstableOffsetCommit,
                };
            }
            let c = group.and_then(|g| g.offsets.get(&(t.to_string(), p)));
            FetchedOffset {
                partition: p,
                offset: c.map_or(-1, |c| c.value.offset),
                leader_epoch: c.map_or(-1, |c| c.value.leader_epoch),
                metadata: c.map(|c| c.value.metadata.clone()).unwrap_or_default(),
                error: ErrorCode::None,
            }
        };
        match topics {
            Some(topics) => topics
                .into_iter()
                .map(|(t, ps)| {
                    let offsets = ps.iter().map(|&p| found(&t, p)).collect();
                    (t, offsets)
                })
                .collect(),
            None => {
                let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
                for (t, p) in group.map(|g| g.offsets.keys()).into_iter().flatten() {
                    by_topic.entry(t.clone()).or_default().push(*p);
                }
                by_topic
                    .into_iter()
                    .map(|(t, mut ps)| {
                        ps.sort_unstable();
                        let offsets = ps.iter().map(|&p| found(&t, p)).collect();
                        (t, offsets)
                    })
                    .collect()
            }
        }
    }

    /// DescribeGroups for one group; a group this shard does not hold is
    /// Dead, as Kafka reports it.
    pub fn describe(&self, group_id: &str) -> GroupDescription {
        let groups = self.groups.borrow();
        let Some(g) = groups.get(group_id) else {
            return GroupDescription {
                state: GroupState::Dead,
                protocol_type: String::new(),
                protocol: String::new(),
                members: Vec::new(),
            };
        };
        let stable = g.state() == GroupState::Stable;
        let protocol = g.protocol().unwrap_or_default().to_string();
        GroupDescription {
            state: g.state(),
            protocol_type: g.protocol_type().unwrap_or_default().to_string(),
            protocol: if stable {
                protocol.clone()
            } else {
                String::new()
            },
            members: g
                .members()
                .map(|m| MemberDescription {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: if stable {
                        m.metadata(&protocol)
                    } else {
                        Bytes::new()
                    },
                    assignment: if stable {
                        m.assignment.clone()
                    } else {
                        Bytes::new()
                    },
                })
                .collect(),
        }
    }

    /// Every group this shard coordinates, for a metrics scrape: state,
    /// members and committed offsets.
    pub fn metrics_samples(&self) -> Vec<crate::metrics::GroupSample> {
        let consumers = self.consumers.borrow();
        let groups = self.groups.borrow();
        let mut out = Vec::with_capacity(groups.len());
        for (id, g) in groups.iter() {
            let (state, members) = match consumers.get(id) {
                Some(c) => (c.state().name(), c.members().count()),
                None => (g.state().name(), g.members().count()),
            };
            let mut committed: Vec<(String, i32, i64)> = g
                .offsets
                .iter()
                .map(|((t, p), c)| (t.clone(), *p, c.value.offset))
                .collect();
            committed.sort();
            out.push(crate::metrics::GroupSample {
                group: id.clone(),
                state: state.to_string(),
                members,
                committed,
            });
        }
        out
    }

    /// ListGroups: every group here, classic and consumer-protocol.
    pub fn list(&self) -> Vec<ListedGroup> {
        let consumers = self.consumers.borrow();
        let mut out: Vec<ListedGroup> = consumers
            .values()
            .map(|g| ListedGroup {
                id: g.id.clone(),
                protocol_type: "consumer".to_string(),
                state: g.state().name(),
                group_type: "consumer",
            })
            .collect();
        out.extend(
            self.groups
                .borrow()
                .values()
                .filter(|g| g.state() != GroupState::Dead && !consumers.contains_key(&g.id))
                .map(|g| ListedGroup {
                    id: g.id.clone(),
                    protocol_type: g.protocol_type().unwrap_or_default().to_string(),
                    state: g.state().name(),
                    group_type: "classic",
                }),
        );
        out
    }

    /// DeleteGroups for one group: only an Empty group can go; its
    /// offsets and metadata get tombstones.
    pub async fn delete_group(&self, shard: &Rc<Shard>, group_id: String) -> ErrorCode {
        let consumer = match self.consumers.borrow().get(&group_id) {
            Some(g) if !g.is_empty() => return ErrorCode::NonEmptyGroup,
            Some(_) => true,
            None => false,
        };
        if consumer {
            return self.delete_consumer_group(shard, group_id).await;
        }
        let records = {
            let mut groups = self.groups.borrow_mut();
            let Some(g) = groups.get_mut(&group_id) else {
                return ErrorCode::GroupIdNotFound;
            };
            match g.state() {
                GroupState::Dead => return ErrorCode::GroupIdNotFound,
                GroupState::Empty => {}
                _ => return ErrorCode::NonEmptyGroup,
            }
            let mut records: Vec<Record> = g
                .offsets
                .keys()
                .map(|(t, p)| offset_tombstone(&group_id, t, *p))
                .collect();
            records.extend(self.pending_tombstones(&group_id, &g.offsets));
            records.push(group_record(&group_id, None));
            // Dead while its tombstones are written: a JoinGroup meanwhile
            // is told to retry rather than join a group about to vanish.
            g.kill(now_ms());
            records
        };
        let appended = self
            .append(shard, self.partition_of(&group_id), records)
            .await;
        let mut groups = self.groups.borrow_mut();
        match appended {
            Ok(_) => {
                groups.remove(&group_id);
                self.pending_txn.borrow_mut().forget(|g| g == group_id);
                ErrorCode::None
            }
            Err(e) => {
                if let Some(g) = groups.get_mut(&group_id) {
                    g.revive(now_ms());
                }
                store_error(e)
            }
        }
    }

    /// Deletes an empty consumer-protocol group: tombstones for its epoch
    /// record and its offsets.
    async fn delete_consumer_group(&self, shard: &Rc<Shard>, group_id: String) -> ErrorCode {
        let mut records = vec![super::consumer::service::epoch_record(&group_id, None)];
        if let Some(g) = self.groups.borrow().get(&group_id) {
            records.extend(
                g.offsets
                    .keys()
                    .map(|(t, p)| offset_tombstone(&group_id, t, *p)),
            );
            records.extend(self.pending_tombstones(&group_id, &g.offsets));
        }
        // The group's own tombstone tells a replay to drop what open
        // transactions committed to it, as this deletion does.
        records.push(group_record(&group_id, None));
        let Some(group) = self.consumers.borrow_mut().remove(&group_id) else {
            return ErrorCode::GroupIdNotFound;
        };
        match self
            .append(shard, self.partition_of(&group_id), records)
            .await
        {
            Ok(_) => {
                self.groups.borrow_mut().remove(&group_id);
                self.pending_txn.borrow_mut().forget(|g| g == group_id);
                ErrorCode::None
            }
            Err(e) => {
                self.consumers.borrow_mut().insert(group_id, group);
                store_error(e)
            }
        }
    }

    /// OffsetDelete: the top-level error, then one code per partition.
    /// Offsets of topics an active consumer group subscribes to stay.
    pub async fn delete_offsets(
        &self,
        shard: &Rc<Shard>,
        group_id: String,
        topics: Vec<(String, Vec<i32>)>,
    ) -> (ErrorCode, Vec<(String, Vec<(i32, ErrorCode)>)>) {
        let (subscribed, deletable) = {
            let groups = self.groups.borrow();
            let Some(g) = groups
                .get(&group_id)
                .filter(|g| g.state() != GroupState::Dead)
            else {
                return (ErrorCode::GroupIdNotFound, Vec::new());
            };
            if g.has_members() && g.protocol_type() != Some("consumer") {
                return (ErrorCode::NonEmptyGroup, Vec::new());
            }
            let subscribed = match self.consumers.borrow().get(&group_id) {
                Some(c) => c.subscribed_topics().into_iter().collect(),
                None => subscribed_topics(g),
            };
            let deletable: Vec<(String, i32)> = topics
                .iter()
                .filter(|(t, _)| !subscribed.contains(t))
                .flat_map(|(t, ps)| ps.iter().map(move |p| (t.clone(), *p)))
                .filter(|k| g.offsets.contains_key(k))
                .collect();
            (subscribed, deletable)
        };
        let mut code_for_deleted = ErrorCode::None;
        if !deletable.is_empty() {
            let records = deletable
                .iter()
                .map(|(t, p)| offset_tombstone(&group_id, t, *p))
                .collect();
            match self
                .append(shard, self.partition_of(&group_id), records)
                .await
            {
                Ok(base) => self.apply_tombstones(&group_id, &deletable, base),
                Err(e) => code_for_deleted = store_error(e),
            }
        }
        let results = topics
            .into_iter()
            .map(|(t, ps)| {
                let code = if subscribed.contains(&t) {
                    ErrorCode::GroupSubscribedToTopic
                } else {
                    code_for_deleted
                };
                let codes = ps.into_iter().map(|p| (p, code)).collect();
                (t, codes)
            })
            .collect();
        (ErrorCode::None, results)
    }

    /// Takes up or gives up the groups of offsets partition `partition`
    /// as this broker starts or stops leading it. A new leader replays
    /// the partition; a former one forgets its groups, whose members find
    /// the new coordinator through FindCoordinator.
    pub fn set_leading(&self, shard: &Shard, partition: i32, leading: bool) {
        let partitions = self.config.offsets_partitions;
        let moved = |id: &str| super::partition_for(id, partitions) == partition;
        self.groups.borrow_mut().retain(|id, _| !moved(id));
        self.consumers.borrow_mut().retain(|id, _| !moved(id));
        self.pending_txn.borrow_mut().forget(moved);
        // Parked joins and syncs of those groups are told to look for the
        // coordinator again rather than waiting out their timeouts.
        let parked = take_waiters(&mut self.waiters.borrow_mut(), moved);
        for w in parked {
            match w {
                Waiter::Join(tx) => {
                    let _ = tx.send(JoinResult::error(ErrorCode::NotCoordinator, ""));
                }
                Waiter::Sync(tx) => {
                    let _ = tx.send(SyncResult::error(ErrorCode::NotCoordinator));
                }
            }
        }
        if leading {
            self.load(shard, partition);
        }
    }

    /// Replays one `__consumer_offsets` partition into groups.
    pub fn load(&self, shard: &Shard, partition: i32) {
        let Some(p) = shard.leader_partition(OFFSETS_TOPIC, partition) else {
            return;
        };
        let now = now_ms();
        let mut groups = self.groups.borrow_mut();
        let mut consumers = self.consumers.borrow_mut();
        let mut pending = self.pending_txn.borrow_mut();
        let here = |g: &str| self.partition_of(g) == partition;
        pending.forget(here);
        let (mut records, mut bad) = (0u64, 0u64);
        let result = p.for_each_batch(Offset(0), |h, batch| {
            if h.is_control() {
                // A transaction's marker settles its pending offsets here.
                if let Some(commit) = marker_of(h, batch) {
                    let taken = pending.take(h.producer_id, here);
                    if commit {
                        txn_offsets::apply_committed(&mut groups, taken, now);
                    }
                }
                return;
            }
            for_each_keyed_record(h, batch, |offset, key, value| {
                records += 1;
                let replayed = if h.is_transactional() {
                    let producer = (h.producer_id, h.producer_epoch);
                    txn_offsets::replay_pending(&mut pending, producer, offset, key, value)
                } else {
                    let mut stores = Stores {
                        groups: &mut groups,
                        consumers: &mut consumers,
                        pending: &mut pending,
                        config: &self.config.consumer,
                    };
                    replay(&mut stores, offset, key, value, now)
                };
                if replayed.is_err() {
                    bad += 1;
                }
            });
        });
        if let Err(e) = result {
            tracing::error!(partition, error = %e, "replaying __consumer_offsets");
        }
        // A classic group's record stored after its upgrade's tombstone
        // (a leader's SyncGroup whose append finished after the upgrade)
        // describes members the consumer group now holds: it is stale.
        for (id, g) in groups.iter_mut() {
            if g.has_members() && consumers.contains_key(id) {
                g.hand_over(now);
            }
        }
        groups.retain(|_, g| !g.is_removable());
        if records > 0 {
            tracing::info!(
                partition,
                records,
                undecodable = bad,
                groups = groups.len(),
                "loaded groups"
            );
        }
    }

    /// Runs group timers and offset expiry until the broker stops.
    pub async fn run_timers(shard: Rc<Shard>) {
        let c = &shard.groups;
        let mut last_expiry = now_ms();
        while !shard.broker.stopping() {
            glommio::timer::sleep(TICK).await;
            let now = now_ms();
            c.tick_consumer_groups(&shard, now);
            if c.groups.borrow().is_empty() {
                continue;
            }
            let ids: Vec<String> = c.groups.borrow().keys().cloned().collect();
            for id in &ids {
                if let Some(g) = c.groups.borrow_mut().get_mut(id) {
                    g.tick(now, &c.config);
                }
                c.deliver(&shard, id);
            }
            if now - last_expiry >= c.config.offsets_retention_check_ms {
                last_expiry = now;
                c.expire_offsets(&shard, now).await;
            }
        }
    }

    /// Drops expired offsets (with tombstones) and groups left with
    /// nothing.
    async fn expire_offsets(&self, shard: &Rc<Shard>, now: i64) {
        let expired: Vec<(String, Vec<(String, i32)>)> = self
            .groups
            .borrow()
            .values()
            .map(|g| {
                let mut expired = g.expired_offsets(now, self.config.offsets_retention_ms);
                // A consumer-protocol group's offsets expire one by one
                // from their commit, except those of topics it
                // subscribes to, as in Kafka.
                if let Some(c) = self.consumers.borrow().get(&g.id) {
                    expired.retain(|(t, _)| !c.subscribes(t));
                }
                (g.id.clone(), expired)
            })
            .filter(|(_, e)| !e.is_empty())
            .collect();
        for (group_id, keys) in expired {
            let mut records: Vec<Record> = keys
                .iter()
                .map(|(t, p)| offset_tombstone(&group_id, t, *p))
                .collect();
            let remaining = self
                .groups
                .borrow()
                .get(&group_id)
                .map_or(0, |g| g.offsets.len());
            // A group an open transaction committed to stays: its
            // tombstone would drop those offsets on replay.
            let pending = self.pending_txn.borrow().any(|g| g == group_id);
            if remaining == keys.len() && !pending {
                records.push(group_record(&group_id, None));
            }
            match self
                .append(shard, self.partition_of(&group_id), records)
                .await
            {
                Ok(base) => {
                    self.apply_tombstones(&group_id, &keys, base);
                    tracing::info!(group = %group_id, offsets = keys.len(), "expired committed offsets");
                }
                Err(e) => tracing::warn!(group = %group_id, error = ?e, "expiring offsets failed"),
            }
        }
        self.groups.borrow_mut().retain(|_, g| !g.is_removable());
        self.forget_empty_consumer_groups(shard).await;
    }
}

/// Topics the members of a consumer group subscribe to, from their
/// ConsumerProtocolSubscription metadata.
fn subscribed_topics(g: &Group) -> Vec<String> {
    use kafka_protocol::messages::ConsumerProtocolSubscription;
    use kafka_protocol::protocol::Decodable;
    let protocol = g.protocol().unwrap_or_default();
    let mut topics = Vec::new();
    for m in g.members() {
        let mut b = m.metadata(protocol);
        if b.len() < 2 {
            continue;
        }
        let version = i16::from_be_bytes([b[0], b[1]]).clamp(0, 3);
        bytes::Buf::advance(&mut b, 2);
        if let Ok(s) = ConsumerProtocolSubscription::decode(&mut b, version) {
            topics.extend(s.topics.iter().map(|t| t.to_string()));
        }
    }
    topics.sort();
    topics.dedup();
    topics
}

fn offset_value(p: &CommitPartition, now: i64) -> OffsetValue {
    OffsetValue {
        offset: p.offset,
        leader_epoch: p.leader_epoch,
        metadata: p.metadata.clone(),
        commit_timestamp_ms: now,
    }
}

fn offset_record(group: &str, topic: &str, p: &CommitPartition, now: i64) -> Record {
    let key = Key::Offset {
        group: group.to_string(),
        topic: topic.to_string(),
        partition: p.partition,
    };
    (key.encode(), Some(offset_value(p, now).encode()))
}

fn offset_tombstone(group: &str, topic: &str, partition: i32) -> Record {
    let key = Key::Offset {
        group: group.to_string(),
        topic: topic.to_string(),
        partition,
    };
    (key.encode(), None)
}

pub(in crate::group) fn group_record(group: &str, value: Option<&GroupValue>) -> Record {
    let key = Key::Group {
        group: group.to_string(),
    };
    (key.encode(), value.map(GroupValue::encode))
}

/// Appends records to a group's offsets partition, which this shard
/// owns, in batches of at most [`APPEND_BATCH_RECORDS`], all in one
/// record set so nothing interleaves. Returns the first record's offset.
/// With `producer` (id, epoch) the batches are transactional, of that
/// producer, with no sequence (as Kafka's coordinators write them).
/// Verifies with the transaction coordinator (`txn/verify.rs`, KIP-890
/// part 1) that the group's offsets partition was added to the
/// producer's transaction (AddOffsetsToTxn) before the first pending
/// offsets of that transaction are written to it; later commits of the
/// same transaction find it open on the partition and pass. Not added:
/// INVALID_TXN_STATE (TRANSACTION_ABORTABLE from v4); a coordinator that
/// could not answer: COORDINATOR_NOT_AVAILABLE, which clients retry.
async fn verify_offsets_partition(
    shard: &Rc<Shard>,
    req: &TxnCommitRequest,
    partition: i32,
) -> Result<(), ErrorCode> {
    if !shard.broker.config.txn_verification() {
        return Ok(());
    }
    let Some(p) = shard.serving_partition(OFFSETS_TOPIC, partition) else {
        // The append reports it.
        return Ok(());
    };
    if p.in_transaction(req.producer_id) {
        return Ok(());
    }
    let guard = p.start_verification(req.producer_id, req.producer_epoch);
    let asked = [(OFFSETS_TOPIC.to_string(), partition)];
    let answer = crate::txn::verify::verify(
        shard,
        &req.transactional_id,
        req.producer_id,
        req.producer_epoch,
        &asked,
    )
    .await;
    let code = match answer {
        Ok(m) => m
            .get(&asked[0])
            .copied()
            .unwrap_or(ErrorCode::NetworkException),
        Err(code) => code,
    };
    let code =
        crate::txn::verify::reported(code, req.version >= 4, ErrorCode::CoordinatorNotAvailable);
    if code != ErrorCode::None {
        p.end_verification(req.producer_id, guard);
        return Err(code);
    }
    match p.verified(req.producer_id, guard) {
        true => Ok(()),
        // The transaction ended while it was verified.
        false => Err(ErrorCode::InvalidTxnState),
    }
}

async fn append_set(
    shard: &Rc<Shard>,
    partition: i32,
    records: Vec<Record>,
    producer: Option<(i64, i16)>,
) -> Result<i64, ErrorCode> {
    let p = shard
        .serving_partition(OFFSETS_TOPIC, partition)
        .ok_or(ErrorCode::NotCoordinator)?;
    let now = now_ms();
    let mut set = Vec::new();
    for chunk in records.chunks(APPEND_BATCH_RECORDS) {
        let mut b = BatchBuilder::new(now);
        if let Some((id, epoch)) = producer {
            b = b.producer(id, epoch, -1);
        }
        for (k, v) in chunk {
            b.push(now, Some(k), v.as_deref(), &[]);
        }
        let mut batch = b.finish();
        if producer.is_some() {
            set_transactional(&mut batch);
        }
        set.extend_from_slice(&batch);
    }
    let summary = validate_record_set(&set, usize::MAX).map_err(|_| ErrorCode::CorruptMessage)?;
    let (info, _) = p.append(&set, &summary).await?;
    Ok(info.base_offset.0)
}

/// Whether a control batch is a transaction's COMMIT (true) or ABORT
/// (false) marker; `None` for other control records or a torn batch.
fn marker_of(h: &BatchHeader, batch: &[u8]) -> Option<bool> {
    let section = batch.get(BATCH_HEADER_SIZE..)?;
    let records = decode_records(section, h.records_count.max(0) as usize).ok()?;
    txn_offsets::marker_commits(records.first()?.key?)
}

/// Applies a consumer-protocol group's record; false if `key` is not one.
fn replay_consumer(
    stores: &mut Stores<'_>,
    key: &Key,
    value: Option<&[u8]>,
    now: i64,
) -> Result<bool, sluice_protocol::primitives::DecodeError> {
    use super::consumer::records::{AssignmentRecord, MemberRecord};
    let id = key.group().to_string();
    let cfg = stores.config;
    let consumers = &mut *stores.consumers;
    match (key, value) {
        (Key::ConsumerGroup { .. }, Some(v)) => {
            let epoch = decode_consumer_group_epoch(v)?;
            consumers
                .entry(id.clone())
                .or_insert_with(|| ConsumerGroup::restored(&id, epoch, cfg.assignors[0]))
                .restore_epoch(epoch);
        }
        (Key::ConsumerGroup { .. }, None) => {
            consumers.remove(&id);
        }
        (Key::ConsumerMember { member, .. }, Some(v)) => {
            let r = MemberRecord::decode(v)?;
            consumers
                .entry(id.clone())
                .or_insert_with(|| ConsumerGroup::new(&id, cfg.assignors[0]))
                .restore_member(member, r, now, cfg);
        }
        (Key::ConsumerAssignment { member, .. }, Some(v)) => {
            let r = AssignmentRecord::decode(v)?;
            if let Some(g) = consumers.get_mut(&id) {
                g.restore_assignment(member, r, now);
            }
        }
        (Key::ConsumerMember { member, .. }, None) => {
            if let Some(g) = consumers.get_mut(&id) {
                g.restore_removal(member);
            }
        }
        (Key::ConsumerAssignment { .. }, None) => {}
        _ => return Ok(false),
    }
    Ok(true)
}

/// What a replay fills in.
struct Stores<'a> {
    groups: &'a mut HashMap<String, Group>,
    consumers: &'a mut HashMap<String, ConsumerGroup>,
    pending: &'a mut PendingOffsets,
    config: &'a super::consumer::ConsumerConfig,
}

/// Applies one replayed record.
fn replay(
    stores: &mut Stores<'_>,
    log_offset: i64,
    key: &[u8],
    value: Option<&[u8]>,
    now: i64,
) -> Result<(), sluice_protocol::primitives::DecodeError> {
    let key = Key::decode(key)?;
    let id = key.group().to_string();
    if replay_consumer(stores, &key, value, now)? {
        return Ok(());
    }
    let groups = &mut *stores.groups;
    let g = groups
        .entry(id.clone())
        .or_insert_with(|| Group::new(&id, now));
    match (key, value) {
        (
            Key::Offset {
                topic, partition, ..
            },
            Some(v),
        ) => {
            let value = OffsetValue::decode(v)?;
            g.apply_offset(&topic, partition, Committed { value, log_offset });
        }
        (
            Key::Offset {
                topic, partition, ..
            },
            None,
        ) => g.remove_offset(&topic, partition, log_offset),
        (Key::Group { .. }, Some(v)) => g.restore(&GroupValue::decode(v)?, now),
        (Key::Group { .. }, None) => {
            // The group's metadata is gone; its offsets have records of
            // their own and stay (a deletion tombstones them too, an
            // upgrade to a consumer group keeps them).
            let offsets = std::mem::take(&mut g.offsets);
            groups.remove(&id);
            if offsets.is_empty() {
                stores.pending.forget(|g| g == id);
            } else {
                let mut kept = Group::new(&id, now);
                kept.offsets = offsets;
                groups.insert(id, kept);
            }
        }
        (Key::ConsumerGroup { .. }, _)
        | (Key::ConsumerMember { .. }, _)
        | (Key::ConsumerAssignment { .. }, _) => {} // applied above
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_moved_partitions_parked_requests_are_taken_and_no_others() {
        let mut waiters = HashMap::new();
        let (join_tx, mut join_rx) = oneshot::channel();
        let (sync_tx, _sync_rx) = oneshot::channel();
        let (other_tx, mut other_rx) = oneshot::channel::<JoinResult>();
        waiters.insert(1, ("moved".to_string(), Waiter::Join(join_tx)));
        waiters.insert(2, ("moved".to_string(), Waiter::Sync(sync_tx)));
        waiters.insert(3, ("stays".to_string(), Waiter::Join(other_tx)));
        let taken = take_waiters(&mut waiters, |id| id == "moved");
        assert_eq!(taken.len(), 2);
        assert_eq!(waiters.len(), 1);
        assert!(waiters.contains_key(&3));
        for w in taken {
            if let Waiter::Join(tx) = w {
                let _ = tx.send(JoinResult::error(ErrorCode::NotCoordinator, ""));
            }
        }
        let answer = join_rx.try_recv().unwrap().expect("answered");
        assert_eq!(answer.error, ErrorCode::NotCoordinator);
        assert!(
            other_rx.try_recv().unwrap().is_none(),
            "another group's join still waits"
        );
    }
}
