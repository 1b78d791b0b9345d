//! OffsetForLeaderEpoch: where a leader epoch ends in a partition's log.
//!
//! Followers ask a new leader where their newest epoch ends in its log and
//! truncate their own there (KIP-101, KIP-279); consumers ask it to learn
//! whether the records before their position were truncated away by a
//! leader change (KIP-320). Each partition is answered from the
//! leader-epoch cache by its owner shard, one job per owner shard, in
//! request order.
//!
//! Per partition, as Kafka answers:
//! - unknown topic or partition: UNKNOWN_TOPIC_OR_PARTITION;
//! - `current_leader_epoch` given (not -1) and older than the partition's
//!   epoch: FENCED_LEADER_EPOCH (the requester must refresh metadata);
//!   newer: UNKNOWN_LEADER_EPOCH (this broker has not heard of it yet);
//! - otherwise the cache's answer: the largest epoch at or below the one
//!   asked for and where it ends, or -1/-1 (UNDEFINED) with no error.
//!
//! Only a partition's leader answers (NOT_LEADER_OR_FOLLOWER elsewhere),
//! as in Kafka. `replica_id` (v3+: a follower's broker id, -1 for
//! consumers) is read and not used: a leader answers followers and
//! consumers alike.

use super::{Ctx, HandlerError, Reply};
use crate::security::acl::{Operation, ResourceType};
use crate::shard::{Shard, ShardId};
use bytes::Bytes;
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};
use sluice_protocol::{ErrorCode, LeaderEpoch};
use std::collections::BTreeMap;
use std::rc::Rc;

/// Kafka's NO_PARTITION_LEADER_EPOCH: the requester sent no current epoch.
const NO_LEADER_EPOCH: i32 = -1;

/// One partition's question, on its way to the owner shard.
struct Query {
    /// (topic, partition) position in the response.
    slot: (usize, usize),
    topic: String,
    partition: i32,
    current: Option<LeaderEpoch>,
    requested: LeaderEpoch,
}

/// How the partition's own leader epoch `local` judges the requester's
/// `current` one (Kafka's `checkCurrentLeaderEpoch`): an older one is
/// fenced, a newer one is not known here yet, none at all is not checked.
pub fn check_current_epoch(
    local: LeaderEpoch,
    current: Option<LeaderEpoch>,
) -> Result<(), ErrorCode> {
    match current {
        Some(c) if c < local => Err(ErrorCode::FencedLeaderEpoch),
        Some(c) if c > local => Err(ErrorCode::UnknownLeaderEpoch),
        _ => Ok(()),
    }
}

pub async fn handle(ctx: &Ctx<'_>, body: Bytes) -> Result<Reply, HandlerError> {
    let req: OffsetForLeaderEpochRequest = ctx.decode(body)?;
    let shard = ctx.shard;
    let snapshot = shard.metadata();
    let mut topics: Vec<OffsetForLeaderTopicResult> = Vec::with_capacity(req.topics.len());
    let mut per_shard: BTreeMap<ShardId, Vec<Query>> = BTreeMap::new();
    // Brokers (CLUSTER_ACTION) may ask about every topic, others about
    // those they may DESCRIBE.
    let every_topic = ctx.cluster_allowed(Operation::ClusterAction);
    for (ti, t) in req.topics.into_iter().enumerate() {
        let name = t.topic.0.to_string();
        let meta = snapshot.topic(&name);
        let denied = !every_topic && !ctx.allowed(Operation::Describe, ResourceType::Topic, &name);
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for (pi, p) in t.partitions.into_iter().enumerate() {
            let answer = EpochEndOffset::default().with_partition(p.partition);
            if denied {
                let code = ErrorCode::TopicAuthorizationFailed.code();
                partitions.push(answer.with_error_code(code));
                continue;
            }
            match meta.filter(|m| p.partition >= 0 && p.partition < m.partitions) {
                None => partitions
                    .push(answer.with_error_code(ErrorCode::UnknownTopicOrPartition.code())),
                Some(m) => {
                    partitions.push(answer);
                    per_shard
                        .entry(shard.owner(m, p.partition))
                        .or_default()
                        .push(Query {
                            slot: (ti, pi),
                            topic: name.clone(),
                            partition: p.partition,
                            current: (p.current_leader_epoch != NO_LEADER_EPOCH)
                                .then_some(LeaderEpoch(p.current_leader_epoch)),
                            requested: LeaderEpoch(p.leader_epoch),
                        });
                }
            }
        }
        topics.push(
            OffsetForLeaderTopicResult::default()
                .with_topic(t.topic)
                .with_partitions(partitions),
        );
    }
    let asked = per_shard
        .into_iter()
        .map(|(owner, queries)| ask_owner(shard, owner, queries));
    for ((ti, pi), answer) in futures::future::join_all(asked).await.into_iter().flatten() {
        topics[ti].partitions[pi] = answer;
    }
    ctx.respond(&OffsetForLeaderEpochResponse::default().with_topics(topics))
}

/// Answers `queries` on their owner shard.
async fn ask_owner(
    shard: &Rc<Shard>,
    owner: ShardId,
    queries: Vec<Query>,
) -> Vec<((usize, usize), EpochEndOffset)> {
    let slots: Vec<((usize, usize), i32)> = queries.iter().map(|q| (q.slot, q.partition)).collect();
    let answers = shard
        .invoke_on(owner, move |s| async move {
            queries
                .into_iter()
                .map(|q| (q.slot, answer_one(&s, &q)))
                .collect::<Vec<_>>()
        })
        .await;
    answers.unwrap_or_else(|e| {
        tracing::error!(error = %e, "OffsetForLeaderEpoch forwarding failed");
        slots
            .into_iter()
            .map(|(slot, partition)| {
                let answer = EpochEndOffset::default()
                    .with_partition(partition)
                    .with_error_code(ErrorCode::NotLeaderOrFollower.code());
                (slot, answer)
            })
            .collect()
    })
}

/// One partition's answer, on its owner shard.
fn answer_one(shard: &Rc<Shard>, q: &Query) -> EpochEndOffset {
    let answer = EpochEndOffset::default().with_partition(q.partition);
    let Some(partition) = shard.serving_partition(&q.topic, q.partition) else {
        let code = match shard.offline_reason(&q.topic, q.partition) {
            Some(_) => ErrorCode::KafkaStorageError,
            None => ErrorCode::NotLeaderOrFollower,
        };
        return answer.with_error_code(code.code());
    };
    let (local, end) = partition.end_offset_for_epoch(q.requested);
    match check_current_epoch(local, q.current) {
        Ok(()) => answer
            .with_leader_epoch(end.epoch.0)
            .with_end_offset(end.end_offset.0),
        Err(code) => answer.with_error_code(code.code()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_epoch_checks_follow_kafka() {
        let local = LeaderEpoch(3);
        assert_eq!(check_current_epoch(local, None), Ok(()));
        assert_eq!(check_current_epoch(local, Some(LeaderEpoch(3))), Ok(()));
        assert_eq!(
            check_current_epoch(local, Some(LeaderEpoch(2))),
            Err(ErrorCode::FencedLeaderEpoch)
        );
        assert_eq!(
            check_current_epoch(local, Some(LeaderEpoch(4))),
            Err(ErrorCode::UnknownLeaderEpoch)
        );
    }
}
