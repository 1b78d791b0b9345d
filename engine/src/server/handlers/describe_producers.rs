//! DescribeProducers (v0): the producers a partition leader knows, each
//! with its epoch, last sequence, last timestamp, the coordinator epoch
//! of its last marker and where its ongoing transaction started (-1:
//! none), from the partition's producer state on its owner shard. Kafka
//! asks READ on each topic; a partition this broker does not lead is
//! NOT_LEADER_OR_FOLLOWER.

use super::{Ctx, HandlerError, Reply};
use crate::security::acl::{Operation, ResourceType};
use bytes::Bytes;
use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::{DescribeProducersRequest, DescribeProducersResponse, ProducerId};
use sluice_protocol::ErrorCode;

pub async fn handle(ctx: &Ctx<'_>, body: Bytes) -> Result<Reply, HandlerError> {
    let req: DescribeProducersRequest = ctx.decode(body)?;
    let shard = ctx.shard;
    let snapshot = shard.metadata();
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let name = t.name.0.to_string();
        let denied = !ctx.allowed(Operation::Read, ResourceType::Topic, &name);
        let meta = snapshot.topic(&name);
        let mut partitions = Vec::with_capacity(t.partition_indexes.len());
        for index in t.partition_indexes {
            let resp = PartitionResponse::default().with_partition_index(index);
            let owner = shard.owner_of(meta, index);
            let answer = match (denied, owner) {
                (true, _) => Err(ErrorCode::TopicAuthorizationFailed),
                (false, None) => Err(ErrorCode::UnknownTopicOrPartition),
                (false, Some(owner)) => {
                    let topic = name.clone();
                    shard
                        .invoke_on(owner, move |s| async move {
                            match s.serving_partition(&topic, index) {
                                Some(p) if p.following().is_none() => Ok(p.describe_producers()),
                                _ => Err(ErrorCode::NotLeaderOrFollower),
                            }
                        })
                        .await
                        .unwrap_or(Err(ErrorCode::NotLeaderOrFollower))
                }
            };
            partitions.push(match answer {
                Ok(producers) => resp.with_active_producers(
                    producers
                        .into_iter()
                        .map(|v| {
                            ProducerState::default()
                                .with_producer_id(ProducerId(v.producer_id))
                                .with_producer_epoch(i32::from(v.epoch))
                                .with_last_sequence(v.last_sequence)
                                .with_last_timestamp(v.last_timestamp)
                                .with_coordinator_epoch(v.coordinator_epoch)
                                .with_current_txn_start_offset(v.txn_start_offset)
                        })
                        .collect(),
                ),
                Err(code) => resp.with_error_code(code.code()),
            });
        }
        topics.push(
            TopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions),
        );
    }
    ctx.respond(&DescribeProducersResponse::default().with_topics(topics))
}
