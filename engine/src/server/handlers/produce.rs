//! Produce: validate every batch on this shard, then append each
//! partition's record set on its owner shard (one job per owner shard),
//! and answer in request order. An acks=all answer is deferred
//! ([`Reply::Later`]): once every append is done the connection reads its
//! next request while the in-sync replicas catch up. A partition whose batches fail validation
//! gets its error and nothing of it is appended; other partitions of the
//! same request are unaffected.
//!
//! From v13 topics are named by id (KIP-516); an id this broker does not
//! know is answered UNKNOWN_TOPIC_ID. From v10 a partition answered
//! NOT_LEADER_OR_FOLLOWER carries the leader this broker knows and where
//! it listens (KIP-951), so the producer can move there without a
//! Metadata round trip.

use super::produce_records;
use super::produce_time::late_records;
use super::{encode_frame, Ctx, HandlerError, Later, Reply};
use crate::quota::entity::QuotaKey;
use crate::replication::state::Acks;
use crate::security::acl::{Operation, ResourceType};
use crate::shard::partition::{acked, Acked, Guard, Partition};
use crate::shard::{Shard, ShardId};
use bytes::Bytes;
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, LeaderIdAndEpoch, NodeEndpoint, PartitionProduceResponse,
    TopicProduceResponse,
};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;
use sluice_protocol::record_batch::{
    validate_record_set, BatchError, BatchHeader, Compression, RecordSetSummary,
};
use sluice_protocol::ErrorCode;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::Duration;

/// The first version that names topics by id instead of by name.
const TOPIC_ID_VERSION_MIN: i16 = 13;
/// The first version whose answers name the current leader (KIP-951).
const CURRENT_LEADER_VERSION_MIN: i16 = 10;

/// One partition's place in the answer: topic name, topic id, partition.
type Slot = (String, uuid::Uuid, i32, Option<Outcome>);

/// One partition's outcome.
#[derive(Debug, Clone)]
struct Outcome {
    error: ErrorCode,
    message: Option<String>,
    base_offset: i64,
    log_append_time_ms: i64,
    log_start: i64,
    /// The records that made the set refused, by index, with why.
    record_errors: Vec<(i32, String)>,
}

impl Outcome {
    fn error(error: ErrorCode, message: Option<String>) -> Outcome {
        Outcome {
            error,
            message,
            base_offset: -1,
            log_append_time_ms: -1,
            log_start: -1,
            record_errors: Vec::new(),
        }
    }
}

/// A partition's validated record set on its way to the owner.
struct Append {
    slot: usize,
    topic: String,
    partition: i32,
    records: Bytes,
    summary: RecordSetSummary,
    acks: Acks,
    /// How long an acks=all produce may wait for the in-sync replicas.
    timeout: Duration,
    /// `message.timestamp.after.max.ms` of a CreateTime topic; `None` for
    /// a LogAppendTime topic, whose records' times are the broker's.
    timestamp_after_max_ms: Option<i64>,
}

fn batch_error(e: &BatchError) -> ErrorCode {
    match e {
        BatchError::Corrupt { .. } => ErrorCode::CorruptMessage,
        BatchError::TooLarge { .. } => ErrorCode::MessageTooLarge,
        BatchError::Invalid { .. } => ErrorCode::InvalidRecord,
        BatchError::UnsupportedCompression(_) => ErrorCode::UnsupportedCompressionType,
    }
}

fn uses_zstd(records: &[u8]) -> bool {
    let mut at = 0;
    while let Some(h) = sluice_protocol::record_batch::BatchHeader::parse(&records[at..]) {
        if h.compression() == Some(Compression::Zstd) {
            return true;
        }
        at += h.total_size();
        if at >= records.len() {
            break;
        }
    }
    false
}

pub async fn handle(ctx: &Ctx<'_>, body: Bytes) -> Result<Reply, HandlerError> {
    let request_bytes = body.len();
    let req: ProduceRequest = ctx.decode(body)?;
    if let Some(id) = req.transactional_id.as_deref() {
        if !ctx.allowed(Operation::Write, ResourceType::TransactionalId, id) {
            return transactional_id_refused(ctx, &req);
        }
    } else if has_transactional_batches(&req) {
        // As Kafka: transactional batches come with the transactional id
        // they are written under, or are refused whole.
        tracing::warn!(client = %ctx.client.host, "transactional batches without a transactional id");
        return transactional_id_refused(ctx, &req);
    }
    let shard = ctx.shard;
    let snapshot = shard.metadata();
    let mut slots: Vec<Slot> = Vec::new();
    let mut per_shard: BTreeMap<ShardId, Vec<Append>> = BTreeMap::new();
    let acks_valid = (-1..=1).contains(&req.acks);
    let by_id = ctx.version() >= TOPIC_ID_VERSION_MIN;
    for topic in &req.topic_data {
        let meta = match by_id {
            true => snapshot.topic_by_id(topic.topic_id),
            false => snapshot.topic(topic.name.0.as_str()),
        };
        let name = match (by_id, meta) {
            (true, m) => m.map(|m| m.name.clone()).unwrap_or_default(),
            (false, _) => topic.name.0.to_string(),
        };
        let unknown = match by_id {
            true => ErrorCode::UnknownTopicId,
            false => ErrorCode::UnknownTopicOrPartition,
        };
        let denied = !name.is_empty() && !ctx.allowed(Operation::Write, ResourceType::Topic, &name);
        for p in &topic.partition_data {
            let slot = slots.len();
            let outcome = match (acks_valid, meta) {
                (false, _) => Some(Outcome::error(ErrorCode::InvalidRequiredAcks, None)),
                _ if denied => Some(Outcome::error(ErrorCode::TopicAuthorizationFailed, None)),
                (_, None) => Some(Outcome::error(unknown, None)),
                (_, Some(m)) if crate::metadata::is_internal(&m.name) => Some(Outcome::error(
                    ErrorCode::InvalidTopicException,
                    Some(format!("Cannot append to internal topic {}", m.name)),
                )),
                (_, Some(m)) if p.index < 0 || p.index >= m.partitions => {
                    Some(Outcome::error(ErrorCode::UnknownTopicOrPartition, None))
                }
                (_, Some(m)) => {
                    let records = p.records.clone().unwrap_or_default();
                    match prepare(ctx.version(), records, &m.config, &name, p.index) {
                        Ok((records, summary)) => {
                            let owner = shard.owner(m, p.index);
                            per_shard.entry(owner).or_default().push(Append {
                                slot,
                                topic: name.clone(),
                                partition: p.index,
                                records,
                                summary,
                                acks: if req.acks == -1 {
                                    Acks::All
                                } else {
                                    Acks::Leader
                                },
                                timeout: Duration::from_millis(req.timeout_ms.max(0) as u64),
                                timestamp_after_max_ms: (!m.config.log_append_time)
                                    .then_some(m.config.timestamp_after_max_ms),
                            });
                            None
                        }
                        Err(refused) => Some(refused),
                    }
                }
            };
            slots.push((name.clone(), topic.topic_id, p.index, outcome));
        }
    }
    let verify = req.transactional_id.as_deref().map(|id| Verify {
        transactional_id: id.to_string(),
        version: ctx.version(),
    });
    let forwarded = per_shard
        .into_iter()
        .map(|(owner, appends)| append_on(shard, owner, appends, verify.clone()));
    let mut parked = Vec::new();
    for (slot, outcome, wait) in futures::future::join_all(forwarded)
        .await
        .into_iter()
        .flatten()
    {
        slots[slot].3 = Some(outcome);
        if let Some(wait) = wait {
            parked.push((slot, wait));
        }
    }
    // As Kafka, the request's bytes count against the producer quota
    // once it is handled; with acks=0 the connection is muted all the same.
    let throttle = ctx.record_quota(QuotaKey::ProducerByteRate, request_bytes as f64);
    let throttle_time_ms = super::fetch::throttle_ms(throttle);
    if req.acks == 0 {
        return Ok(Reply::None);
    }
    let version = ctx.version();
    if parked.is_empty() {
        return ctx.respond(
            &response(shard, version, slots, &ctx.client.listener)
                .with_throttle_time_ms(throttle_time_ms),
        );
    }
    // Appended: the connection may go on to its next request while the
    // in-sync replicas catch up; this answer still goes out in its turn.
    let (api, correlation_id) = (ctx.api, ctx.header.correlation_id);
    let shard = Rc::clone(shard);
    let listener = ctx.client.listener.clone();
    Ok(Reply::Later(Later(Box::pin(async move {
        let started = std::time::Instant::now();
        let waits = parked
            .into_iter()
            .map(|(slot, (rx, timeout))| async move { (slot, acked(rx, timeout).await) });
        let results = futures::future::join_all(waits).await;
        crate::metrics::acks_all_waited(started.elapsed());
        for (slot, result) in results {
            if let Err(code) = result {
                slots[slot].3 = Some(Outcome::error(code, None));
            }
        }
        encode_frame(
            api,
            version,
            correlation_id,
            &response(&shard, version, slots, &listener).with_throttle_time_ms(throttle_time_ms),
        )
    }))))
}

/// Whether any partition's first batch is transactional (attribute bit
/// 4); from v3 a partition carries one batch.
fn has_transactional_batches(req: &ProduceRequest) -> bool {
    req.topic_data
        .iter()
        .flat_map(|t| t.partition_data.iter())
        .filter_map(|p| p.records.as_deref())
        .filter_map(sluice_protocol::record_batch::BatchHeader::parse)
        .any(|h| h.is_transactional())
}

/// Validates a partition's record set and applies its topic's settings
/// to it (`produce_records`): keys on compacted topics, the topic's
/// `compression.type`. A refusal comes back as the partition's outcome.
fn prepare(
    version: i16,
    records: Bytes,
    config: &crate::config::TopicConfig,
    topic: &str,
    partition: i32,
) -> Result<(Bytes, RecordSetSummary), Outcome> {
    let refused = |e: BatchError| {
        tracing::warn!(topic, partition, error = %e, "rejected produce");
        Outcome::error(batch_error(&e), Some(e.to_string()))
    };
    let max = config.max_message_bytes;
    let summary = validate(version, &records, max).map_err(refused)?;
    if config.compact {
        let keyless = produce_records::keyless_records(&records).map_err(refused)?;
        if !keyless.is_empty() {
            let why = produce_records::keyless_message(topic, partition);
            let errors: Vec<(i32, String)> = keyless.iter().map(|i| (*i, why.clone())).collect();
            let message = produce_records::record_errors_message(&errors);
            tracing::warn!(
                topic,
                partition,
                keyless = keyless.len(),
                "rejected produce: records without a key on a compacted topic"
            );
            let mut outcome = Outcome::error(ErrorCode::InvalidRecord, Some(message));
            outcome.record_errors = errors;
            return Err(outcome);
        }
    }
    let Some(codec) = config.compression else {
        return Ok((records, summary));
    };
    match produce_records::recompressed(&records, codec).map_err(refused)? {
        None => Ok((records, summary)),
        Some(rewritten) => {
            // Decompressed, a batch may outgrow max.message.bytes.
            let summary = validate_record_set(&rewritten, max).map_err(refused)?;
            Ok((Bytes::from(rewritten), summary))
        }
    }
}

fn validate(version: i16, records: &[u8], max: usize) -> Result<RecordSetSummary, BatchError> {
    let summary = validate_record_set(records, max)?;
    let first = sluice_protocol::record_batch::BatchHeader::parse(records);
    let unnamed = |h: &sluice_protocol::record_batch::BatchHeader| {
        h.producer_id < 0 || h.producer_epoch < 0 || h.base_sequence < 0
    };
    if first.is_some_and(|h| h.is_transactional() && unnamed(&h)) {
        return Err(BatchError::Invalid {
            position: 0,
            reason: "a transactional batch needs a producer id, epoch and sequence",
        });
    }
    if version < 7 && uses_zstd(records) {
        return Err(BatchError::UnsupportedCompression(Compression::Zstd));
    }
    Ok(summary)
}

/// Appends on `owner`, in request order. Each acks=all partition comes
/// back with the receiver of its answer and how long it may wait.
async fn append_on(
    shard: &Rc<Shard>,
    owner: ShardId,
    appends: Vec<Append>,
    verify: Option<Verify>,
) -> Vec<(usize, Outcome, Option<(Acked, Duration)>)> {
    let slots: Vec<usize> = appends.iter().map(|a| a.slot).collect();
    let result = shard
        .invoke_on(owner, move |s| async move {
            let mut verified = match verify {
                Some(v) if s.broker.config.txn_verification() => {
                    verify_first(&s, &appends, &v).await
                }
                _ => HashMap::new(),
            };
            write_epochs_first(&s, &appends).await;
            syncs_settled_first(&s, &appends).await;
            let mut out = Vec::with_capacity(appends.len());
            let mut flushes = Vec::new();
            // Every append is done, in request order, before any flush is
            // awaited; the flushes then run together, so a request to
            // several partitions waits one sync, not one per partition.
            for a in appends {
                let (slot, timeout) = (a.slot, a.timeout);
                let (outcome, acked, flush) = match verified.remove(&slot) {
                    None => append_one(&s, a),
                    Some(Err(code)) => (Outcome::error(code, None), None, None),
                    Some(Ok((producer_id, guard))) => {
                        let still = s
                            .serving_partition(&a.topic, a.partition)
                            .is_none_or(|p| p.verified(producer_id, guard));
                        match still {
                            true => append_one(&s, a),
                            // Its transaction ended while it was verified.
                            false => (Outcome::error(ErrorCode::InvalidTxnState, None), None, None),
                        }
                    }
                };
                if let Some((partition, target)) = flush {
                    flushes.push((out.len(), partition, target));
                }
                out.push((slot, outcome, acked.map(|rx| (rx, timeout))));
            }
            let flushed =
                futures::future::join_all(flushes.into_iter().map(
                    |(i, partition, target)| async move {
                        (i, partition.flush_for_append(target).await)
                    },
                ))
                .await;
            for (i, result) in flushed {
                if let Err(code) = result {
                    out[i].1 = Outcome::error(code, None);
                    out[i].2 = None;
                }
            }
            out
        })
        .await;
    result.unwrap_or_else(|e| {
        tracing::error!(error = %e, "produce forwarding failed");
        slots
            .into_iter()
            .map(|s| {
                (
                    s,
                    Outcome::error(ErrorCode::NotLeaderOrFollower, None),
                    None,
                )
            })
            .collect()
    })
}

/// What a transactional Produce's batches are verified as.
#[derive(Clone)]
struct Verify {
    transactional_id: String,
    /// The Produce version: v11+ clients know TRANSACTION_ABORTABLE.
    version: i16,
}

/// Verifies with the transaction coordinator (`txn/verify.rs`) every
/// append that would open a transaction for its producer on its
/// partition, one request per producer. A verified append comes back
/// with the guard it must still find when it is appended; a refused one
/// with the code its partition answers: INVALID_TXN_STATE (or
/// TRANSACTION_ABORTABLE) when the partition is not in the transaction,
/// NOT_ENOUGH_REPLICAS when the coordinator could not answer, which
/// clients retry without refreshing metadata, as Kafka answers.
async fn verify_first(
    shard: &Rc<Shard>,
    appends: &[Append],
    v: &Verify,
) -> HashMap<usize, Result<(i64, Guard), ErrorCode>> {
    type Waiting = Vec<(usize, Rc<Partition>, (String, i32), Guard)>;
    let mut waiting: BTreeMap<(i64, i16), Waiting> = BTreeMap::new();
    for a in appends {
        let Some(h) = BatchHeader::parse(&a.records) else {
            continue;
        };
        let Some(partition) = shard.serving_partition(&a.topic, a.partition) else {
            continue;
        };
        if !partition.needs_verification(&h) {
            continue;
        }
        let guard = partition.start_verification(h.producer_id, h.producer_epoch);
        waiting
            .entry((h.producer_id, h.producer_epoch))
            .or_default()
            .push((a.slot, partition, (a.topic.clone(), a.partition), guard));
    }
    let mut out = HashMap::new();
    for ((producer_id, epoch), list) in waiting {
        let tps: Vec<(String, i32)> = list.iter().map(|w| w.2.clone()).collect();
        let answers =
            crate::txn::verify::verify(shard, &v.transactional_id, producer_id, epoch, &tps).await;
        for (slot, partition, tp, guard) in list {
            let code = match &answers {
                Ok(m) => m.get(&tp).copied().unwrap_or(ErrorCode::NetworkException),
                Err(code) => *code,
            };
            let code =
                crate::txn::verify::reported(code, v.version >= 11, ErrorCode::NotEnoughReplicas);
            if code == ErrorCode::None {
                out.insert(slot, Ok((producer_id, guard)));
            } else {
                partition.end_verification(producer_id, guard);
                tracing::info!(transactional_id = %v.transactional_id, topic = %tp.0, partition = tp.1, producer_id, epoch, ?code, "transactional produce not verified");
                out.insert(slot, Err(code));
            }
        }
    }
    out
}

/// Writes the leader-epoch checkpoints of the partitions the appends go
/// to that took over as leader and whose file still lags (see
/// `shard/file_sync.rs`), all at once, so the appends after them do
/// not each write theirs on the shard's thread. A failed write is left
/// to the append, which writes again and reports it.
async fn write_epochs_first(shard: &Shard, appends: &[Append]) {
    if !shard.file_sync.is_running() {
        return;
    }
    let lagging: Vec<Rc<Partition>> = appends
        .iter()
        .filter_map(|a| shard.serving_partition(&a.topic, a.partition))
        .filter(|p| p.epochs_unwritten())
        .collect();
    if lagging.is_empty() {
        return;
    }
    futures::future::join_all(lagging.iter().map(|p| p.write_epochs())).await;
}

/// Waits until none of the partitions the appends go to has a sync of
/// its active segment in flight, so that no append writes into a file
/// being synced (see `Partition::sync_settled`). Nothing yields between the
/// last check and the appends, so none starts meanwhile.
async fn syncs_settled_first(shard: &Shard, appends: &[Append]) {
    loop {
        let syncing: Vec<Rc<Partition>> = appends
            .iter()
            .filter_map(|a| shard.serving_partition(&a.topic, a.partition))
            .filter(|p| p.is_syncing())
            .collect();
        if syncing.is_empty() {
            return;
        }
        futures::future::join_all(syncing.iter().map(|p| p.sync_settled())).await;
    }
}

/// A partition's flush an append still waits for, and to where.
type PendingFlush = (Rc<Partition>, sluice_protocol::Offset);

/// Appends one partition's record set; returns its outcome, the
/// receiver of its acks=all answer, and the flush it still needs.
fn append_one(shard: &Rc<Shard>, a: Append) -> (Outcome, Option<Acked>, Option<PendingFlush>) {
    let Some(partition): Option<Rc<Partition>> = shard.serving_partition(&a.topic, a.partition)
    else {
        let code = match shard.offline_reason(&a.topic, a.partition) {
            Some(_) => ErrorCode::KafkaStorageError,
            None => ErrorCode::NotLeaderOrFollower,
        };
        return (Outcome::error(code, None), None, None);
    };
    if let Some(refused) = late_records_refused(&partition, &a) {
        return (refused, None, None);
    }
    match partition.append_now(&a.records, &a.summary, a.acks) {
        Ok(appended) => {
            let outcome = Outcome {
                error: ErrorCode::None,
                message: None,
                base_offset: appended.info.base_offset.0,
                log_append_time_ms: appended.info.log_append_time_ms,
                log_start: appended.log_start.0,
                record_errors: Vec::new(),
            };
            let flush = appended.flush_to.map(|t| (partition, t));
            (outcome, appended.acked, flush)
        }
        Err(code) => {
            let mut outcome = Outcome::error(code, None);
            if reports_log_start(code) {
                outcome.log_start = partition.watermarks().log_start.0;
            }
            (outcome, None, None)
        }
    }
}

/// INVALID_TIMESTAMP when a record of a CreateTime topic is timestamped
/// too far ahead of this broker's clock (`produce_time`), naming each such
/// record; the partition's log start is reported, as for other refusals
/// by the log.
fn late_records_refused(partition: &Partition, a: &Append) -> Option<Outcome> {
    let after_max_ms = a.timestamp_after_max_ms?;
    let now = crate::shard::partition::now_ms();
    let late = late_records(&a.records, now, after_max_ms);
    let first = late.first()?;
    let message = format!(
        "Timestamp {} of record {} is more than message.timestamp.after.max.ms ({after_max_ms} ms) past the broker's clock ({now}).",
        first.timestamp, first.index
    );
    tracing::warn!(topic = %a.topic, partition = a.partition, %message, "rejected produce");
    let mut outcome = Outcome::error(ErrorCode::InvalidTimestamp, Some(message));
    outcome.log_start = partition.watermarks().log_start.0;
    outcome.record_errors = late
        .iter()
        .map(|r| {
            let why = format!(
                "Timestamp {} is more than {after_max_ms} ms past the broker's clock ({now}).",
                r.timestamp
            );
            (r.index, why)
        })
        .collect();
    Some(outcome)
}

/// Whether a refused append still reports the partition's log start
/// offset. Kafka reports it when the log itself refused the batch (a
/// producer's sequence or epoch, too few in-sync replicas), and -1 when
/// the batch never reached a log (too large, corrupt, no such partition
/// here, a failed disk).
fn reports_log_start(code: ErrorCode) -> bool {
    !matches!(
        code,
        ErrorCode::KafkaStorageError
            | ErrorCode::NotLeaderOrFollower
            | ErrorCode::UnknownTopicOrPartition
            | ErrorCode::MessageTooLarge
            | ErrorCode::RecordListTooLarge
            | ErrorCode::CorruptMessage
    )
}

fn response(shard: &Shard, version: i16, slots: Vec<Slot>, listener: &str) -> ProduceResponse {
    let snapshot = shard.metadata();
    let mut leaders = std::collections::BTreeSet::new();
    let mut topics: Vec<TopicProduceResponse> = Vec::new();
    for (name, topic_id, index, outcome) in slots {
        let o = outcome.unwrap_or_else(|| Outcome::error(ErrorCode::UnknownServerError, None));
        let mut p = PartitionProduceResponse::default()
            .with_index(index)
            .with_error_code(o.error.code())
            .with_base_offset(o.base_offset)
            .with_log_append_time_ms(o.log_append_time_ms)
            .with_log_start_offset(o.log_start)
            .with_record_errors(
                o.record_errors
                    .into_iter()
                    .map(|(index, why)| {
                        BatchIndexAndErrorMessage::default()
                            .with_batch_index(index)
                            .with_batch_index_error_message(Some(StrBytes::from_string(why)))
                    })
                    .collect(),
            )
            .with_error_message(o.message.map(StrBytes::from_string));
        let moved = o.error == ErrorCode::NotLeaderOrFollower;
        if let Some(l) = moved
            .then(|| super::fetch::current_leader(&snapshot, &name, index))
            .flatten()
            .filter(|_| version >= CURRENT_LEADER_VERSION_MIN)
        {
            leaders.insert(l.leader_id);
            p.current_leader = LeaderIdAndEpoch::default()
                .with_leader_id(kafka_protocol::messages::BrokerId(l.leader_id))
                .with_leader_epoch(l.leader_epoch);
        }
        match topics.last_mut() {
            Some(t) if t.name.0.as_str() == name && t.topic_id == topic_id => {
                t.partition_responses.push(p)
            }
            _ => topics.push(
                TopicProduceResponse::default()
                    .with_name(kafka_protocol::messages::TopicName(StrBytes::from_string(
                        name,
                    )))
                    .with_topic_id(topic_id)
                    .with_partition_responses(vec![p]),
            ),
        }
    }
    let node_endpoints = leaders
        .into_iter()
        .filter_map(|id| {
            let (host, port) = snapshot.brokers.get(&id)?.endpoint(listener)?;
            Some(
                NodeEndpoint::default()
                    .with_node_id(kafka_protocol::messages::BrokerId(id))
                    .with_host(StrBytes::from_string(host.to_string()))
                    .with_port(i32::from(port)),
            )
        })
        .collect();
    ProduceResponse::default()
        .with_responses(topics)
        .with_node_endpoints(node_endpoints)
}

/// Every partition of a transactional produce whose transactional id the
/// client may not WRITE: TRANSACTIONAL_ID_AUTHORIZATION_FAILED, as Kafka.
fn transactional_id_refused(ctx: &Ctx<'_>, req: &ProduceRequest) -> Result<Reply, HandlerError> {
    if req.acks == 0 {
        return Ok(Reply::None);
    }
    let code = Outcome::error(ErrorCode::TransactionalIdAuthorizationFailed, None);
    let slots = req
        .topic_data
        .iter()
        .flat_map(|t| {
            let code = &code;
            t.partition_data.iter().map(move |p| {
                (
                    t.name.0.to_string(),
                    t.topic_id,
                    p.index,
                    Some(code.clone()),
                )
            })
        })
        .collect();
    ctx.respond(&response(
        ctx.shard,
        ctx.version(),
        slots,
        &ctx.client.listener,
    ))
}
