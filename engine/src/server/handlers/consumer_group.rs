//! The consumer group protocol's APIs (KIP-848): ConsumerGroupHeartbeat
//! and ConsumerGroupDescribe. Like the classic group APIs they decode
//! here and run on the shard coordinating the group
//! ([`crate::group::consumer`]).

use super::group::{on_coordinator, OPERATIONS_OMITTED};
use super::{Ctx, HandlerError, Reply};
use crate::group::consumer::state::{unanchor, HeartbeatRequest, HeartbeatResult};
use crate::group::consumer::Assignment;
use crate::security::acl::{Operation, ResourceType};
use bytes::Bytes;
use kafka_protocol::messages::consumer_group_describe_response as describe;
use kafka_protocol::messages::consumer_group_heartbeat_response as heartbeat;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use sluice_protocol::ErrorCode;

/// Member type of a consumer-protocol member (ConsumerGroupDescribe v1).
const MEMBER_TYPE_CONSUMER: i8 = 1;
/// Member type of a classic member a consumer group holds.
const MEMBER_TYPE_CLASSIC: i8 = 0;

fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

pub async fn heartbeat(ctx: &Ctx<'_>, body: Bytes) -> Result<Reply, HandlerError> {
    let req: ConsumerGroupHeartbeatRequest = ctx.decode(body)?;
    let group_id = req.group_id.to_string();
    let beat = HeartbeatRequest {
        version: ctx.version(),
        member_id: req.member_id.to_string(),
        member_epoch: req.member_epoch,
        instance_id: req.instance_id.as_ref().map(|i| i.to_string()),
        rack_id: req.rack_id.as_ref().map(|r| r.to_string()),
        rebalance_timeout_ms: req.rebalance_timeout_ms,
        subscribed_topic_names: req
            .subscribed_topic_names
            .as_ref()
            .map(|ts| ts.iter().map(|t| t.to_string()).collect()),
        subscribed_topic_regex: req.subscribed_topic_regex.as_ref().map(|r| r.to_string()),
        server_assignor: req.server_assignor.as_ref().map(|a| a.to_string()),
        owned: req.topic_partitions.as_ref().map(|ts| {
            ts.iter()
                .map(|t| (t.topic_id, t.partitions.clone()))
                .collect()
        }),
        client_id: ctx.header.client_id.clone().unwrap_or_default(),
        client_host: ctx.client.host.clone(),
    };
    // DESCRIBE on every subscribed topic, once READ on the group is
    // granted (on_coordinator checks that otherwise).
    let denied = beat
        .subscribed_topic_names
        .iter()
        .flatten()
        .any(|t| !ctx.allowed(Operation::Describe, ResourceType::Topic, t));
    let id = group_id.clone();
    let result = if denied && ctx.allowed(Operation::Read, ResourceType::Group, &group_id) {
        HeartbeatResult::error(ErrorCode::TopicAuthorizationFailed, "")
    } else {
        on_coordinator(ctx, &group_id, move |c| async move {
            c.groups.consumer_heartbeat(&c, &id, beat)
        })
        .await
        .unwrap_or_else(|code| HeartbeatResult::error(code, ""))
    };
    let assignment = result.assignment.map(|a| {
        heartbeat::Assignment::default().with_topic_partitions(
            a.into_iter()
                .map(|(t, ps)| {
                    heartbeat::TopicPartitions::default()
                        .with_topic_id(t)
                        .with_partitions(ps.into_iter().collect())
                })
                .collect(),
        )
    });
    let resp = ConsumerGroupHeartbeatResponse::default()
        .with_error_code(result.error.code())
        .with_error_message(result.message.filter(|m| !m.is_empty()).map(s))
        .with_member_id(result.member_id.map(s))
        .with_member_epoch(result.member_epoch)
        .with_heartbeat_interval_ms(result.heartbeat_interval_ms)
        .with_assignment(assignment);
    ctx.respond(&resp)
}

/// An assignment with topic names, as ConsumerGroupDescribe shows it;
/// a topic deleted meanwhile is left out.
fn described(ctx: &Ctx<'_>, a: &Assignment) -> describe::Assignment {
    let metadata = ctx.shard.metadata();
    let topics = a
        .iter()
        .filter_map(|(id, ps)| {
            let t = metadata.topic_by_id(*id)?;
            Some(
                describe::TopicPartitions::default()
                    .with_topic_id(*id)
                    .with_topic_name(TopicName(s(t.name.clone())))
                    .with_partitions(ps.iter().copied().collect()),
            )
        })
        .collect();
    describe::Assignment::default().with_topic_partitions(topics)
}

pub async fn describe(ctx: &Ctx<'_>, body: Bytes) -> Result<Reply, HandlerError> {
    let req: ConsumerGroupDescribeRequest = ctx.decode(body)?;
    let mut groups = Vec::new();
    for group_id in &req.group_ids {
        let id = group_id.to_string();
        let asked = id.clone();
        let found = on_coordinator(ctx, &id, move |c| async move {
            let classic = c.groups.list().into_iter().any(|g| g.id == asked);
            (c.groups.consumer_describe(&asked), classic)
        })
        .await;
        let mut g = describe::DescribedGroup::default()
            .with_group_id(group_id.clone())
            .with_authorized_operations(match req.include_authorized_operations {
                true => ctx.authorized_operations(ResourceType::Group, &id),
                false => OPERATIONS_OMITTED,
            });
        match found {
            Ok((Ok(d), _)) => {
                g.group_state = s(d.state.name());
                g.group_epoch = d.epoch;
                g.assignment_epoch = d.assignment_epoch;
                g.assignor_name = s(d.assignor);
                g.members = d
                    .members
                    .iter()
                    .map(|(m, target)| {
                        describe::Member::default()
                            .with_member_id(s(m.id.clone()))
                            .with_instance_id(m.instance_id.clone().map(s))
                            .with_rack_id(m.rack_id.clone().map(s))
                            .with_member_epoch(m.assignment.epoch)
                            .with_client_id(s(m.client_id.clone()))
                            .with_client_host(s(m.client_host.clone()))
                            .with_subscribed_topic_names(
                                m.topic_names
                                    .iter()
                                    .map(|t| TopicName(s(t.clone())))
                                    .collect(),
                            )
                            // Kafka answers an empty regex, not none, for
                            // a member subscribed by names.
                            .with_subscribed_topic_regex(Some(
                                m.regex
                                    .as_ref()
                                    .map_or_else(|| s(""), |r| s(unanchor(r.as_str()))),
                            ))
                            .with_assignment(described(ctx, &m.assignment.assigned))
                            .with_target_assignment(described(ctx, target))
                            .with_member_type(match m.classic {
                                Some(_) => MEMBER_TYPE_CLASSIC,
                                None => MEMBER_TYPE_CONSUMER,
                            })
                    })
                    .collect();
            }
            Ok((Err(code), classic)) => {
                g.error_code = code.code();
                g.error_message = Some(s(match classic {
                    true => format!("Group {id} is not a consumer group."),
                    false => format!("Group {id} not found."),
                }));
            }
            Err(code) => g.error_code = code.code(),
        }
        groups.push(g);
    }
    ctx.respond(&ConsumerGroupDescribeResponse::default().with_groups(groups))
}
