//! ListOffsets: earliest (-2), latest (-1), the largest timestamp (-3) or
//! the first offset at or after a timestamp, answered by each partition's
//! owner shard. v8 and v9 add -4 (earliest local offset) and -5 (latest
//! tiered offset, KIP-405/1005): with no tiered storage the first is the
//! log start and the second is always -1. v10's `timeout_ms` bounds a wait
//! for remote storage (KIP-1075); every answer here is local and
//! immediate, so there is nothing for it to bound. v11 (KIP-1023) adds
//! -6, the earliest offset not yet uploaded to tiered storage: with none,
//! Kafka answers -1, and so does Sluice, at every version as Kafka's log
//! does. v11's fields are v10's, which the codec reads and writes for it
//! (`codec_version`). A consumer is answered within what it may read
//! (the high watermark, or with isolation_level 1 the last stable offset),
//! and by a leader just elected whose high watermark is still below its
//! epoch's start with OFFSET_NOT_AVAILABLE (`Partition::list_offset`).

use super::{Ctx, HandlerError, Reply};
use crate::security::acl::{Operation, ResourceType};
use crate::shard::partition::OffsetsFor;
use bytes::Bytes;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use sluice_protocol::ErrorCode;
use std::collections::{BTreeMap, BTreeSet};

pub async fn handle(ctx: &Ctx<'_>, body: Bytes) -> Result<Reply, HandlerError> {
    let req: ListOffsetsRequest = ctx.decode(body)?;
    let shard = ctx.shard;
    let snapshot = shard.metadata();
    let v = ctx.version();
    // A consumer (replica id -1) is told what it may read: below the last
    // stable offset with isolation_level 1 (read_committed, v2+), below
    // the high watermark otherwise; anyone else (-2, an operator's
    // debugging request) the log end, as Kafka does.
    let asker = match (req.replica_id.0, req.isolation_level) {
        (-1, 1) => OffsetsFor::ReadCommitted,
        (-1, _) => OffsetsFor::ReadUncommitted,
        _ => OffsetsFor::Replica,
    };
    // A partition asked for twice is answered once, INVALID_REQUEST, as
    // Kafka does: the two questions would get one answer each, in an
    // order the client cannot tell apart.
    let mut asked: BTreeMap<(&str, i32), usize> = BTreeMap::new();
    for t in &req.topics {
        for p in &t.partitions {
            *asked
                .entry((t.name.0.as_str(), p.partition_index))
                .or_default() += 1;
        }
    }
    let twice: BTreeSet<(String, i32)> = asked
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|((t, p), _)| (t.to_string(), p))
        .collect();
    let mut answered_twice = BTreeSet::new();
    let mut topics = Vec::new();
    for t in req.topics {
        let name = t.name.0.to_string();
        let meta = snapshot.topic(&name).cloned();
        let denied = !ctx.allowed(Operation::Describe, ResourceType::Topic, &name);
        let mut partitions = Vec::new();
        for p in t.partitions {
            let mut resp =
                ListOffsetsPartitionResponse::default().with_partition_index(p.partition_index);
            let key = (name.clone(), p.partition_index);
            if twice.contains(&key) {
                if answered_twice.insert(key) {
                    partitions.push(resp.with_error_code(ErrorCode::InvalidRequest.code()));
                }
                continue;
            }
            if denied {
                partitions.push(resp.with_error_code(ErrorCode::TopicAuthorizationFailed.code()));
                continue;
            }
            let Some(owner) = shard.owner_of(meta.as_ref(), p.partition_index) else {
                partitions.push(resp.with_error_code(ErrorCode::UnknownTopicOrPartition.code()));
                continue;
            };
            let (topic, index, ts) = (name.clone(), p.partition_index, p.timestamp);
            let answer = shard
                .invoke_on(owner, move |s| async move {
                    match s.serving_partition(&topic, index) {
                        Some(part) => part.list_offset(ts, asker),
                        None => Err(ErrorCode::NotLeaderOrFollower),
                    }
                })
                .await
                .unwrap_or(Err(ErrorCode::NotLeaderOrFollower));
            match answer {
                Ok((offset, timestamp, epoch)) => {
                    resp = resp.with_offset(offset.0).with_timestamp(timestamp);
                    if v >= 4 {
                        resp.leader_epoch = epoch.0;
                    }
                }
                // Before v5 a client knows no OFFSET_NOT_AVAILABLE; Kafka
                // gives those LEADER_NOT_AVAILABLE, retriable as well.
                Err(ErrorCode::OffsetNotAvailable) if v < 5 => {
                    resp = resp.with_error_code(ErrorCode::LeaderNotAvailable.code())
                }
                Err(code) => resp = resp.with_error_code(code.code()),
            }
            partitions.push(resp);
        }
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions),
        );
    }
    ctx.respond(&ListOffsetsResponse::default().with_topics(topics))
}
