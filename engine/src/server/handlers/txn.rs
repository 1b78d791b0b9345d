//! The transaction APIs: InitProducerId with a transactional id,
//! AddPartitionsToTxn, AddOffsetsToTxn, EndTxn, DescribeTransactions,
//! ListTransactions, and FindCoordinator's transaction key type.
//!
//! Each decodes here, on the connection's shard, and runs on the shard
//! that owns the transactional id's `__transaction_state` partition (see
//! [`crate::txn`]); the decoded request and the plain answer cross
//! shards, the encoding stays here.
//!
//! KIP-588 named PRODUCER_FENCED; older request versions (InitProducerId
//! < 4, AddPartitionsToTxn, AddOffsetsToTxn and EndTxn < 2) get
//! INVALID_PRODUCER_EPOCH instead, as Kafka answers them.

use super::group::create_internal_topic;
use super::{Ctx, HandlerError, Reply};
use crate::group::consumer::state::compile_regex;
use crate::metadata::TopicMeta;
use crate::security::acl::{Operation, ResourceType};
use crate::shard::controller::NewTopic;
use crate::shard::Shard;
use crate::txn::state::{InitRequest, ProducerRef, TopicPartition, TxnMeta, TxnState};
use crate::txn::TXN_TOPIC;
use bytes::Bytes;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use sluice_protocol::ErrorCode;
use std::collections::BTreeMap;
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;

fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

/// The transaction state topic, created on first use as Kafka does:
/// compacted, `transaction.state.log.num.partitions` partitions,
/// `transaction.state.log.replication.factor` replicas (the default, 3,
/// capped by the live brokers; a value set is kept, and the topic waits
/// for enough brokers) and `min.insync.replicas` from
/// `transaction.state.log.min.isr` (its default capped by the replicas).
pub(super) async fn txn_topic(shard: &Rc<Shard>) -> Result<Arc<TopicMeta>, ErrorCode> {
    if let Some(t) = shard.metadata().topic(TXN_TOPIC) {
        return Ok(Arc::clone(t));
    }
    let cfg = shard.broker.config.txn();
    let live = shard.metadata().live_brokers().count().max(1) as i16;
    let replication_factor = match cfg.log_replication_factor_is_default {
        true => cfg.log_replication_factor.min(live),
        false => cfg.log_replication_factor,
    };
    let min_isr = match cfg.log_min_isr_is_default {
        true => cfg.log_min_isr.min(replication_factor),
        false => cfg.log_min_isr,
    };
    if replication_factor < cfg.log_replication_factor {
        tracing::warn!(
            configured = cfg.log_replication_factor,
            live,
            "creating {TXN_TOPIC} with replication factor {replication_factor}: the default \
             transaction.state.log.replication.factor is more than the live brokers"
        );
    }
    let overrides = BTreeMap::from([
        ("cleanup.policy".to_string(), "compact".to_string()),
        (
            "segment.bytes".to_string(),
            cfg.log_segment_bytes.to_string(),
        ),
        ("min.insync.replicas".to_string(), min_isr.to_string()),
    ]);
    let new = NewTopic {
        name: TXN_TOPIC.to_string(),
        partitions: cfg.log_partitions,
        replication_factor,
        overrides,
        assignments: None,
    };
    create_internal_topic(shard, new).await
}

/// FindCoordinator for one transactional id: fills in `c` with the
/// leader of the id's partition.
pub(super) async fn find(
    ctx: &Ctx<'_>,
    key: &str,
    c: &mut find_coordinator_response::Coordinator,
) -> ErrorCode {
    match txn_topic(ctx.shard).await {
        Ok(topic) => {
            let partition = crate::group::partition_for(key, topic.partitions);
            super::group::name_leader(ctx, &topic, partition, c)
        }
        Err(code) => code,
    }
}

/// The shard of this broker coordinating `id`; NOT_COORDINATOR when
/// another broker does.
async fn coordinator_shard(ctx: &Ctx<'_>, id: &str) -> Result<crate::shard::ShardId, ErrorCode> {
    let topic = txn_topic(ctx.shard).await?;
    let partition = crate::group::partition_for(id, topic.partitions);
    if !ctx.shard.metadata().leads(&topic, partition) {
        return Err(ErrorCode::NotCoordinator);
    }
    Ok(ctx.shard.owner(&topic, partition))
}

/// Runs `f` with the coordinator on the shard coordinating `id`.
async fn on_coordinator<R, F, Fut>(ctx: &Ctx<'_>, id: &str, f: F) -> Result<R, ErrorCode>
where
    R: Send + 'static,
    F: FnOnce(Rc<Shard>, Rc<crate::txn::coordinator::TxnCoordinator>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<R, ErrorCode>> + 'static,
{
    let owner = coordinator_shard(ctx, id).await?;
    ctx.shard
        .invoke_on(owner, move |shard| async move {
            match crate::txn::coordinator() {
                Some(c) => f(shard, c).await,
                None => Err(ErrorCode::CoordinatorNotAvailable),
            }
        })
        .await
        .map_err(|_| ErrorCode::CoordinatorNotAvailable)?
}

/// PRODUCER_FENCED for versions that know it, INVALID_PRODUCER_EPOCH
/// before (KIP-588).
fn fenced_for(code: ErrorCode, version: i16, first_knowing: i16) -> ErrorCode {
    match (code, version < first_knowing) {
        (ErrorCode::ProducerFenced, true) => ErrorCode::InvalidProducerEpoch,
        _ => code,
    }
}

/// Logs a refused transaction request once, at info: bad input from a
/// client, not a broker fault. COORDINATOR_NOT_AVAILABLE is a broker
/// fault (the state log cannot take the step, say), which the coordinator
/// has logged with its cause; clients retry it every 100 ms or so, and a
/// second line each time would double that.
fn refused(api: &str, id: &str, code: ErrorCode) {
    if !matches!(
        code,
        ErrorCode::None
            | ErrorCode::ConcurrentTransactions
            | ErrorCode::NotCoordinator
            | ErrorCode::CoordinatorNotAvailable
    ) {
        tracing::info!(transactional_id = %id, ?code, "{api} refused");
    }
}

/// InitProducerId with a transactional id (ACLs already checked).
pub(super) async fn init_producer_id(
    ctx: &Ctx<'_>,
    req: &InitProducerIdRequest,
    id: String,
) -> Result<Reply, HandlerError> {
    let init = InitRequest {
        timeout_ms: req.transaction_timeout_ms,
        current: ProducerRef {
            producer_id: if ctx.version() >= 3 {
                req.producer_id.0
            } else {
                -1
            },
            epoch: if ctx.version() >= 3 {
                req.producer_epoch
            } else {
                -1
            },
        },
    };
    let key = id.clone();
    let result = on_coordinator(ctx, &id, move |shard, c| async move {
        c.init_producer_id(&shard, &key, init).await
    })
    .await;
    let mut resp = InitProducerIdResponse::default();
    match result {
        Ok(p) => {
            resp.producer_id = ProducerId(p.producer_id);
            resp.producer_epoch = p.epoch;
        }
        Err(code) => {
            refused("InitProducerId", &id, code);
            resp.error_code = fenced_for(code, ctx.version(), 4).code();
            resp.producer_id = ProducerId(-1);
            resp.producer_epoch = -1;
        }
    }
    ctx.respond(&resp)
}

pub async fn add_partitions_to_txn(ctx: &Ctx<'_>, body: Bytes) -> Result<Reply, HandlerError> {
    let req: AddPartitionsToTxnRequest = ctx.decode(body)?;
    if ctx.version() >= 4 {
        return add_partitions_batched(ctx, req).await;
    }
    let id = req.v3_and_below_transactional_id.to_string();
    let producer = ProducerRef {
        producer_id: req.v3_and_below_producer_id.0,
        epoch: req.v3_and_below_producer_epoch,
    };
    let partitions = asked(
        req.v3_and_below_topics
            .iter()
            .map(|t| (t.name.to_string(), &t.partitions)),
    );
    let codes = add_partitions_codes(ctx, &id, producer, &partitions).await;
    let topics = results(&partitions, &codes, |code| {
        fenced_for(code, ctx.version(), 2)
    });
    let resp = AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(topics);
    ctx.respond(&resp)
}

/// The partitions a request names, in its order.
fn asked<'a>(topics: impl Iterator<Item = (String, &'a Vec<i32>)>) -> Vec<TopicPartition> {
    topics
        .flat_map(|(t, ps)| ps.iter().map(move |p| (t.clone(), *p)))
        .collect()
}

/// The answer's topics for `asked`, in its order, each partition's code
/// from `codes` (NONE when absent) as `shown` turns it for the version.
fn results(
    asked: &[TopicPartition],
    codes: &BTreeMap<TopicPartition, ErrorCode>,
    shown: impl Fn(ErrorCode) -> ErrorCode,
) -> Vec<AddPartitionsToTxnTopicResult> {
    let mut topics: Vec<AddPartitionsToTxnTopicResult> = Vec::new();
    for tp in asked {
        let code = shown(codes.get(tp).copied().unwrap_or(ErrorCode::None));
        let partition = AddPartitionsToTxnPartitionResult::default()
            .with_partition_index(tp.1)
            .with_partition_error_code(code.code());
        match topics.last_mut() {
            Some(t) if t.name.as_str() == tp.0 => t.results_by_partition.push(partition),
            _ => topics.push(
                AddPartitionsToTxnTopicResult::default()
                    .with_name(TopicName(s(tp.0.clone())))
                    .with_results_by_partition(vec![partition]),
            ),
        }
    }
    topics
}

/// The brokers' batched form (v4+): several transactions, each either
/// verified (`verify_only`: is each partition part of the ongoing
/// transaction of this producer id and epoch? nothing is added) or added
/// as v3 adds. Only brokers send it (CLUSTER_ACTION), to verify a
/// transactional Produce or TxnOffsetCommit before writing it.
async fn add_partitions_batched(
    ctx: &Ctx<'_>,
    req: AddPartitionsToTxnRequest,
) -> Result<Reply, HandlerError> {
    let mut resp = AddPartitionsToTxnResponse::default();
    if !ctx.cluster_allowed(Operation::ClusterAction) {
        tracing::warn!(client = %ctx.client.host, "AddPartitionsToTxn v4+ refused: not a broker (CLUSTER_ACTION)");
        resp.error_code = ErrorCode::ClusterAuthorizationFailed.code();
        return ctx.respond(&resp);
    }
    for txn in &req.transactions {
        let id = txn.transactional_id.to_string();
        let producer = ProducerRef {
            producer_id: txn.producer_id.0,
            epoch: txn.producer_epoch,
        };
        let partitions = asked(
            txn.topics
                .iter()
                .map(|t| (t.name.to_string(), &t.partitions)),
        );
        let all = |code: ErrorCode| partitions.iter().map(|tp| (tp.clone(), code)).collect();
        let codes = if id.is_empty() {
            all(ErrorCode::InvalidRequest)
        } else if txn.verify_only {
            match coordinator_shard(ctx, &id).await {
                Ok(owner) => {
                    crate::txn::verify::verify_on(ctx.shard, owner, &id, producer, &partitions)
                        .await
                }
                Err(code) => all(code),
            }
        } else {
            add_partitions_codes(ctx, &id, producer, &partitions).await
        };
        let topics = results(&partitions, &codes, |code| match code {
            // TRANSACTION_ABORTABLE came with v5.
            ErrorCode::TransactionAbortable if ctx.version() < 5 => ErrorCode::InvalidTxnState,
            code => code,
        });
        resp.results_by_transaction.push(
            add_partitions_to_txn_response::AddPartitionsToTxnResult::default()
                .with_transactional_id(TransactionalId(s(id)))
                .with_topic_results(topics),
        );
    }
    ctx.respond(&resp)
}

/// Each asked partition's code: authorization and existence first (the
/// others then get OPERATION_NOT_ATTEMPTED, as in Kafka), then the
/// coordinator's answer for all.
async fn add_partitions_codes(
    ctx: &Ctx<'_>,
    id: &str,
    producer: ProducerRef,
    partitions: &[TopicPartition],
) -> BTreeMap<TopicPartition, ErrorCode> {
    let all = |code: ErrorCode| partitions.iter().map(|tp| (tp.clone(), code)).collect();
    if !ctx.allowed(Operation::Write, ResourceType::TransactionalId, id) {
        return all(ErrorCode::TransactionalIdAuthorizationFailed);
    }
    let snapshot = ctx.shard.metadata();
    let mut bad = BTreeMap::new();
    for (t, p) in partitions {
        let known = snapshot.topic(t).map_or(0, |m| m.partitions);
        // The state topic is the coordinator's own: no client writes it.
        let code = if t == TXN_TOPIC || !ctx.allowed(Operation::Write, ResourceType::Topic, t) {
            ErrorCode::TopicAuthorizationFailed
        } else if *p < 0 || *p >= known {
            ErrorCode::UnknownTopicOrPartition
        } else {
            continue;
        };
        bad.insert((t.clone(), *p), code);
    }
    if !bad.is_empty() {
        let mut codes = all(ErrorCode::OperationNotAttempted);
        codes.extend(bad);
        refused("AddPartitionsToTxn", id, ErrorCode::UnknownTopicOrPartition);
        return codes;
    }
    let partitions = partitions.to_vec();
    let key = id.to_string();
    let result = on_coordinator(ctx, id, move |shard, c| async move {
        c.add_partitions(&shard, &key, producer, partitions).await
    })
    .await;
    let code = result.err().unwrap_or(ErrorCode::None);
    refused("AddPartitionsToTxn", id, code);
    all(code)
}

pub async fn add_offsets_to_txn(ctx: &Ctx<'_>, body: Bytes) -> Result<Reply, HandlerError> {
    let req: AddOffsetsToTxnRequest = ctx.decode(body)?;
    let id = req.transactional_id.to_string();
    let group = req.group_id.to_string();
    let producer = ProducerRef {
        producer_id: req.producer_id.0,
        epoch: req.producer_epoch,
    };
    let code = if !ctx.allowed(Operation::Write, ResourceType::TransactionalId, &id) {
        ErrorCode::TransactionalIdAuthorizationFailed
    } else if !ctx.allowed(Operation::Read, ResourceType::Group, &group) {
        ErrorCode::GroupAuthorizationFailed
    } else {
        // The group's offsets partition joins the transaction, so its
        // marker tells the group coordinator the outcome.
        let offsets_partitions = ctx
            .shard
            .metadata()
            .topic(crate::group::OFFSETS_TOPIC)
            .map_or(ctx.shard.groups.config.offsets_partitions, |t| t.partitions);
        let partition = crate::group::partition_for(&group, offsets_partitions);
        let tp = vec![(crate::group::OFFSETS_TOPIC.to_string(), partition)];
        let key = id.clone();
        let result = on_coordinator(ctx, &id, move |shard, c| async move {
            c.add_partitions(&shard, &key, producer, tp).await
        })
        .await;
        result.err().unwrap_or(ErrorCode::None)
    };
    refused("AddOffsetsToTxn", &id, code);
    let code = fenced_for(code, ctx.version(), 2);
    ctx.respond(&AddOffsetsToTxnResponse::default().with_error_code(code.code()))
}

pub async fn end_txn(ctx: &Ctx<'_>, body: Bytes) -> Result<Reply, HandlerError> {
    let req: EndTxnRequest = ctx.decode(body)?;
    let id = req.transactional_id.to_string();
    let producer = ProducerRef {
        producer_id: req.producer_id.0,
        epoch: req.producer_epoch,
    };
    let commit = req.committed;
    let code = if !ctx.allowed(Operation::Write, ResourceType::TransactionalId, &id) {
        ErrorCode::TransactionalIdAuthorizationFailed
    } else {
        let key = id.clone();
        let result = on_coordinator(ctx, &id, move |shard, c| async move {
            c.end_txn(&shard, &key, producer, commit).await
        })
        .await;
        result.err().unwrap_or(ErrorCode::None)
    };
    refused("EndTxn", &id, code);
    let code = fenced_for(code, ctx.version(), 2);
    ctx.respond(&EndTxnResponse::default().with_error_code(code.code()))
}

fn described(m: &TxnMeta) -> describe_transactions_response::TransactionState {
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (t, p) in &m.partitions {
        by_topic.entry(t).or_default().push(*p);
    }
    describe_transactions_response::TransactionState::default()
        .with_transactional_id(TransactionalId(s(m.transactional_id.clone())))
        .with_transaction_state(s(m.state.name()))
        .with_transaction_timeout_ms(m.timeout_ms)
        .with_transaction_start_time_ms(m.start_ms)
        .with_producer_id(ProducerId(m.producer_id))
        .with_producer_epoch(m.epoch)
        .with_topics(
            by_topic
                .into_iter()
                .map(|(t, ps)| {
                    describe_transactions_response::TopicData::default()
                        .with_topic(TopicName(s(t)))
                        .with_partitions(ps)
                })
                .collect(),
        )
}

pub async fn describe_transactions(ctx: &Ctx<'_>, body: Bytes) -> Result<Reply, HandlerError> {
    let req: DescribeTransactionsRequest = ctx.decode(body)?;
    let mut states = Vec::new();
    for id in req.transactional_ids.iter().map(|i| i.to_string()) {
        let result = if !ctx.allowed(Operation::Describe, ResourceType::TransactionalId, &id) {
            Err(ErrorCode::TransactionalIdAuthorizationFailed)
        } else {
            let key = id.clone();
            on_coordinator(
                ctx,
                &id,
                move |shard, c| async move { c.describe(&shard, &key) },
            )
            .await
        };
        let state = match result {
            Ok(mut m) => {
                // Topics the client may not describe are left out.
                m.partitions
                    .retain(|(t, _)| ctx.allowed(Operation::Describe, ResourceType::Topic, t));
                described(&m)
            }
            Err(code) => describe_transactions_response::TransactionState::default()
                .with_transactional_id(TransactionalId(s(id)))
                .with_error_code(code.code())
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1)
                .with_transaction_timeout_ms(-1)
                .with_transaction_start_time_ms(-1),
        };
        states.push(state);
    }
    ctx.respond(&DescribeTransactionsResponse::default().with_transaction_states(states))
}

pub async fn list_transactions(ctx: &Ctx<'_>, body: Bytes) -> Result<Reply, HandlerError> {
    let req: ListTransactionsRequest = ctx.decode(body)?;
    let mut states = Vec::new();
    let mut unknown = Vec::new();
    for f in &req.state_filters {
        match TxnState::from_name(f.as_str()) {
            Some(s) => states.push(s),
            None => unknown.push(f.clone()),
        }
    }
    let producers: Vec<i64> = req.producer_id_filters.iter().map(|p| p.0).collect();
    // v2 (KIP-1152): a pattern the whole transactional id must match, in
    // RE2/J's syntax as Kafka reads it; null or empty lists every id. One
    // that does not compile fails the whole request, as in Kafka, before
    // any state is looked at.
    let pattern = match req.transactional_id_pattern.as_deref() {
        Some(p) if !p.is_empty() => match compile_regex(p) {
            Ok(re) => Some(re),
            Err(e) => {
                tracing::debug!(pattern = %p, error = %e, "ListTransactions: invalid pattern");
                let code = ErrorCode::InvalidRegularExpression.code();
                return ctx.respond(&ListTransactionsResponse::default().with_error_code(code));
            }
        },
        _ => None,
    };
    let duration_ms = if ctx.version() >= 1 {
        req.duration_filter
    } else {
        -1
    };
    let now = crate::shard::partition::now_ms();
    let mut listed: Vec<TxnMeta> = Vec::new();
    // A filter naming only unknown states matches nothing, as in Kafka.
    if unknown.is_empty() || !states.is_empty() {
        for target in 0..ctx.shard.count {
            let (states, producers) = (states.clone(), producers.clone());
            let found = ctx
                .shard
                .invoke_on(target, move |_| async move {
                    let Some(c) = crate::txn::coordinator() else {
                        return Vec::new();
                    };
                    c.list(|m| {
                        (states.is_empty() || states.contains(&m.state))
                            && (producers.is_empty() || producers.contains(&m.producer_id))
                            && (duration_ms < 0
                                || (m.start_ms >= 0 && now - m.start_ms > duration_ms))
                    })
                })
                .await
                .unwrap_or_default();
            listed.extend(found);
        }
    }
    listed.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
    let listed = listed
        .into_iter()
        .filter(|m| {
            pattern
                .as_ref()
                .is_none_or(|re| re.is_match(&m.transactional_id))
        })
        .filter(|m| {
            ctx.allowed(
                Operation::Describe,
                ResourceType::TransactionalId,
                &m.transactional_id,
            )
        })
        .map(|m| {
            list_transactions_response::TransactionState::default()
                .with_transactional_id(TransactionalId(s(m.transactional_id)))
                .with_producer_id(ProducerId(m.producer_id))
                .with_transaction_state(s(m.state.name()))
        })
        .collect();
    ctx.respond(
        &ListTransactionsResponse::default()
            .with_unknown_state_filters(unknown)
            .with_transaction_states(listed),
    )
}
