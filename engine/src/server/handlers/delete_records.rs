//! DeleteRecords: each partition's leader moves its log start up to the
//! offset asked for (at most its high watermark), answered by the
//! partition's owner shard. Followers follow the leader's log start with
//! their next fetch.

use super::{Ctx, HandlerError, Reply};
use bytes::Bytes;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};
use sluice_protocol::ErrorCode;

pub async fn handle(ctx: &Ctx<'_>, body: Bytes) -> Result<Reply, HandlerError> {
    let req: DeleteRecordsRequest = ctx.decode(body)?;
    let shard = ctx.shard;
    let snapshot = shard.metadata();
    let mut topics = Vec::new();
    for t in req.topics {
        let name = t.name.0.to_string();
        let meta = snapshot.topic(&name).cloned();
        let mut partitions = Vec::new();
        for p in t.partitions {
            let mut r = DeleteRecordsPartitionResult::default()
                .with_partition_index(p.partition_index)
                .with_low_watermark(-1);
            let answer = match shard.owner_of(meta.as_ref(), p.partition_index) {
                None => Err(ErrorCode::UnknownTopicOrPartition),
                Some(_) if crate::metadata::is_internal(&name) => {
                    Err(ErrorCode::InvalidTopicException)
                }
                Some(owner) => {
                    let (topic, index, offset) = (name.clone(), p.partition_index, p.offset);
                    shard
                        .invoke_on(owner, move |s| async move {
                            let part = s
                                .leader_partition(&topic, index)
                                .ok_or(ErrorCode::NotLeaderOrFollower)?;
                            let start = part.delete_records(offset)?;
                            // The new log start is on disk before the
                            // answer, so a restart does not bring back
                            // what was deleted.
                            s.broker.publish_checkpoints(s.id, s.checkpoint_entries());
                            if let Err(e) = s.broker.write_checkpoints() {
                                tracing::warn!(error = %e, "writing checkpoints after DeleteRecords");
                            }
                            Ok(start)
                        })
                        .await
                        .unwrap_or(Err(ErrorCode::NotLeaderOrFollower))
                }
            };
            match answer {
                Ok(start) => r.low_watermark = start.0,
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
