//! DeleteRecords: each partition's leader moves its log start up to the
//! offset asked for (at most its high watermark), answered by the
//! partition's owner shard once every in-sync replica's log starts there
//! too (Kafka's low watermark): followers follow the leader's log start
//! with their next fetch and report theirs with the one after. The
//! partitions of a request wait together, up to its timeout.

use super::{Ctx, HandlerError, Reply};
use crate::security::acl::{Operation, ResourceType};
use crate::shard::partition::Partition;
use bytes::Bytes;
use futures::future::Either;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};
use sluice_protocol::{ErrorCode, Offset};
use std::time::{Duration, Instant};

pub async fn handle(ctx: &Ctx<'_>, body: Bytes) -> Result<Reply, HandlerError> {
    let req: DeleteRecordsRequest = ctx.decode(body)?;
    let shard = ctx.shard;
    let snapshot = shard.metadata();
    let timeout = Duration::from_millis(req.timeout_ms.max(0) as u64);
    let mut waits = Vec::new();
    for t in &req.topics {
        let name = t.name.0.to_string();
        let meta = snapshot.topic(&name).cloned();
        let denied = !ctx.allowed(Operation::Delete, ResourceType::Topic, &name);
        for p in &t.partitions {
            let (topic, index, offset) = (name.clone(), p.partition_index, p.offset);
            let owner = shard.owner_of(meta.as_ref(), index);
            waits.push(async move {
                match owner {
                    _ if denied => Err(ErrorCode::TopicAuthorizationFailed),
                    None => Err(ErrorCode::UnknownTopicOrPartition),
                    Some(_) if crate::metadata::is_internal(&topic) => {
                        Err(ErrorCode::InvalidTopicException)
                    }
                    Some(owner) => shard
                        .invoke_on(owner, move |s| async move {
                            let part = s
                                .serving_partition(&topic, index)
                                .ok_or(ErrorCode::NotLeaderOrFollower)?;
                            let start = part.delete_records(offset)?;
                            // The new log start is on disk before the
                            // answer, so a restart does not bring back
                            // what was deleted.
                            s.broker.publish_checkpoints(s.id, s.checkpoint_entries());
                            if let Err(e) =
                                crate::broker::write_checkpoints_off_shard(&s.broker).await
                            {
                                tracing::warn!(error = %e, "writing checkpoints after DeleteRecords");
                            }
                            low_watermark_reaches(&part, start, timeout).await
                        })
                        .await
                        .unwrap_or(Err(ErrorCode::NotLeaderOrFollower)),
                }
            });
        }
    }
    let mut answers = futures::future::join_all(waits).await.into_iter();
    let mut topics = Vec::new();
    for t in req.topics {
        let mut partitions = Vec::new();
        for p in t.partitions {
            let mut r = DeleteRecordsPartitionResult::default()
                .with_partition_index(p.partition_index)
                .with_low_watermark(-1);
            match answers.next().expect("one answer per partition") {
                Ok(low) => r.low_watermark = low.0,
                Err(code) => r.error_code = code.code(),
            }
            partitions.push(r);
        }
        topics.push(
            DeleteRecordsTopicResult::default()
                .with_name(t.name)
                .with_partitions(partitions),
        );
    }
    ctx.respond(&DeleteRecordsResponse::default().with_topics(topics))
}

/// Waits until the low watermark reaches `start`, so that no replica
/// that could be elected still holds the deleted records; returns it.
/// REQUEST_TIMED_OUT after `timeout`, NOT_LEADER_OR_FOLLOWER when the
/// partition stops being led here.
async fn low_watermark_reaches(
    part: &Partition,
    start: Offset,
    timeout: Duration,
) -> Result<Offset, ErrorCode> {
    let deadline = Instant::now() + timeout;
    loop {
        match part.low_watermark() {
            None => return Err(ErrorCode::NotLeaderOrFollower),
            Some(low) if low >= start => return Ok(low),
            Some(_) => {}
        }
        // Followers report their log starts in their fetches, each a step.
        let step = part.next_step();
        let left = deadline.saturating_duration_since(Instant::now());
        let timer = Box::pin(glommio::timer::sleep(left));
        if let Either::Right(_) = futures::future::select(step, timer).await {
            return Err(ErrorCode::RequestTimedOut);
        }
    }
}
