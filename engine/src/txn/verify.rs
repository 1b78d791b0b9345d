//! Transaction verification (KIP-890 part 1), the asking side: before a
//! partition writes the first batch of a producer's new transaction (a
//! Produce, or the pending offsets of a TxnOffsetCommit), it asks the
//! transaction coordinator whether the partition is part of that
//! producer's ongoing transaction, with AddPartitionsToTxn v4's
//! verify-only form sent to the leader of the transactional id's
//! `__transaction_state` partition over the inter-broker listener (when
//! that is this broker, the coordinator's shard answers directly). A
//! batch whose transaction already ended (a late retry, a producer that
//! never added the partition) would
//! otherwise open a transaction no marker will ever close: a hanging
//! transaction holding the last stable offset back for good.
//!
//! Connections are kept per shard and coordinator broker while idle, so
//! a transaction's verifications do not each connect; one request is in
//! flight on a connection, and concurrent verifications use more of them.

use super::state::{ProducerRef, TopicPartition};
use super::TXN_TOPIC;
use crate::shard::broker_client::BrokerConn;
use crate::shard::Shard;
use kafka_protocol::messages::add_partitions_to_txn_request::{
    AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
};
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, ApiKey, ProducerId, TopicName,
    TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use sluice_protocol::ErrorCode;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

/// The request version sent: v4 answers "not in the transaction" with
/// INVALID_TXN_STATE, which every client version understands.
const VERSION: i16 = 4;

/// Idle connections kept per coordinator broker and shard.
const IDLE_MAX: usize = 4;

thread_local! {
    static IDLE: RefCell<HashMap<i32, Vec<BrokerConn>>> = RefCell::new(HashMap::new());
}

/// Asks the coordinator of `transactional_id` whether each partition is
/// part of the ongoing transaction of `producer_id` at `epoch`. Ok holds
/// each partition's answer (NONE when it is; INVALID_TXN_STATE when not;
/// PRODUCER_FENCED, INVALID_PRODUCER_ID_MAPPING, CONCURRENT_TRANSACTIONS,
/// NOT_COORDINATOR, ... as the coordinator says); Err is one error for
/// all when the coordinator could not be asked: COORDINATOR_NOT_AVAILABLE
/// (no state topic, no leader) or NETWORK_EXCEPTION (no connection, no
/// answer). Callers turn these into their own API's codes.
pub async fn verify(
    shard: &Rc<Shard>,
    transactional_id: &str,
    producer_id: i64,
    epoch: i16,
    partitions: &[TopicPartition],
) -> Result<BTreeMap<TopicPartition, ErrorCode>, ErrorCode> {
    let snapshot = shard.metadata();
    let topic = snapshot
        .topic(TXN_TOPIC)
        .ok_or(ErrorCode::CoordinatorNotAvailable)?;
    let index = crate::group::partition_for(transactional_id, topic.partitions);
    let leader = topic
        .partition(index)
        .and_then(|p| p.leader)
        .ok_or(ErrorCode::CoordinatorNotAvailable)?
        .0;
    if leader == snapshot.node_id {
        let owner = shard.owner(topic, index);
        let producer = ProducerRef { producer_id, epoch };
        return Ok(verify_on(shard, owner, transactional_id, producer, partitions).await);
    }
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (t, p) in partitions {
        by_topic.entry(t).or_default().push(*p);
    }
    let txn = AddPartitionsToTxnTransaction::default()
        .with_transactional_id(TransactionalId(StrBytes::from_string(
            transactional_id.to_string(),
        )))
        .with_producer_id(ProducerId(producer_id))
        .with_producer_epoch(epoch)
        .with_verify_only(true)
        .with_topics(
            by_topic
                .into_iter()
                .map(|(t, ps)| {
                    AddPartitionsToTxnTopic::default()
                        .with_name(TopicName(StrBytes::from_string(t.to_string())))
                        .with_partitions(ps)
                })
                .collect(),
        );
    let req = AddPartitionsToTxnRequest::default().with_transactions(vec![txn]);
    let idle = IDLE.with(|m| m.borrow_mut().get_mut(&leader).and_then(Vec::pop));
    let mut conn = match idle {
        Some(c) => c,
        None => BrokerConn::connect(shard, leader, "sluice-txn-verify")
            .await
            .ok_or(ErrorCode::NetworkException)?,
    };
    let resp: AddPartitionsToTxnResponse = match conn
        .call(ApiKey::AddPartitionsToTxn, VERSION, &req)
        .await
    {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(node = leader, error = %e, "transaction verification: no answer from the coordinator");
            return Err(ErrorCode::NetworkException);
        }
    };
    IDLE.with(|m| {
        let mut m = m.borrow_mut();
        let idle = m.entry(leader).or_default();
        if idle.len() < IDLE_MAX {
            idle.push(conn);
        }
    });
    match ErrorCode::from_code(resp.error_code) {
        ErrorCode::None => {}
        // The coordinator does not take this broker for a broker: the
        // client hears that verification failed, not why.
        ErrorCode::ClusterAuthorizationFailed => {
            tracing::error!(
                node = leader,
                "transaction verification refused: CLUSTER_ACTION is missing"
            );
            return Err(ErrorCode::InvalidTxnState);
        }
        code => return Err(code),
    }
    let mut answers: BTreeMap<TopicPartition, ErrorCode> = partitions
        .iter()
        .map(|tp| (tp.clone(), ErrorCode::NetworkException))
        .collect();
    for r in resp
        .results_by_transaction
        .iter()
        .filter(|r| r.transactional_id.as_str() == transactional_id)
    {
        for t in &r.topic_results {
            for p in &t.results_by_partition {
                let tp = (t.name.to_string(), p.partition_index);
                if let Some(slot) = answers.get_mut(&tp) {
                    *slot = ErrorCode::from_code(p.partition_error_code);
                }
            }
        }
    }
    Ok(answers)
}

/// Each partition's answer from the coordinator of `transactional_id` on
/// shard `owner` of this broker: what a verify-only AddPartitionsToTxn
/// answers (Kafka's `handleVerifyPartitionsInTransaction`), one error for
/// all when the id, the producer or its state is wrong. [`verify`] uses
/// it when this broker coordinates the id, with no connection to its own
/// listener.
pub async fn verify_on(
    shard: &Rc<Shard>,
    owner: crate::shard::ShardId,
    transactional_id: &str,
    producer: ProducerRef,
    partitions: &[TopicPartition],
) -> BTreeMap<TopicPartition, ErrorCode> {
    let all = |code: ErrorCode| partitions.iter().map(|tp| (tp.clone(), code)).collect();
    if transactional_id.is_empty() {
        return all(ErrorCode::InvalidRequest);
    }
    let id = transactional_id.to_string();
    let asked = partitions.to_vec();
    let answered = shard
        .invoke_on(owner, move |s| async move {
            match super::coordinator() {
                Some(c) => c.verify_partitions(&s, &id, producer, &asked),
                None => Err(ErrorCode::CoordinatorNotAvailable),
            }
        })
        .await;
    match answered {
        Ok(Ok(codes)) => codes.into_iter().collect(),
        Ok(Err(code)) => all(code),
        Err(_) => all(ErrorCode::CoordinatorNotAvailable),
    }
}

/// A verification's answer as a Produce (or a TxnOffsetCommit) reports
/// it, Kafka's translation: a partition not in the transaction is
/// INVALID_TXN_STATE (TRANSACTION_ABORTABLE to versions that know it);
/// a fenced producer INVALID_PRODUCER_EPOCH; a coordinator that could not
/// answer yet `retriable`, so the client retries.
pub fn reported(code: ErrorCode, abortable_known: bool, retriable: ErrorCode) -> ErrorCode {
    match code {
        ErrorCode::None => ErrorCode::None,
        ErrorCode::InvalidTxnState | ErrorCode::TransactionAbortable => match abortable_known {
            true => ErrorCode::TransactionAbortable,
            false => ErrorCode::InvalidTxnState,
        },
        ErrorCode::ProducerFenced => ErrorCode::InvalidProducerEpoch,
        ErrorCode::NetworkException
        | ErrorCode::CoordinatorLoadInProgress
        | ErrorCode::CoordinatorNotAvailable
        | ErrorCode::NotCoordinator
        | ErrorCode::ConcurrentTransactions
        | ErrorCode::RequestTimedOut => retriable,
        other => other,
    }
}
