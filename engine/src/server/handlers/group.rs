//! The group APIs: FindCoordinator, JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup, OffsetCommit, OffsetFetch, ListGroups, DescribeGroups,
//! DeleteGroups, OffsetDelete, TxnOffsetCommit.
//!
//! Each decodes here, on the connection's shard, and runs on the shard
//! that coordinates the group (see [`crate::group`]); the decoded request
//! and the plain answer cross shards, the encoding stays here.
//!
//! The Kafka 4 versions: JoinGroup v8 and LeaveGroup v5 carry a reason,
//! which is logged; JoinGroup v9 lets a returning static leader skip the
//! assignment (KIP-814); DescribeGroups v6 answers GROUP_ID_NOT_FOUND for
//! an unknown group (KIP-1043); ListGroups v5 filters by group type, and
//! every group here is `classic`; FindCoordinator v6 knows share groups'
//! key type, answered INVALID_REQUEST as no share coordinator runs.
//! OffsetCommit v9 is v8 for classic groups, and OffsetFetch v9's member
//! id and epoch are checked only for KIP-848 consumer groups, as in Kafka.
//! OffsetCommit and OffsetFetch v10 name topics by id; `sluice_protocol`
//! reads and writes them, and ids are turned into names here, against
//! this broker's metadata, so the coordinator sees what v9 gives it.

use super::{Ctx, HandlerError, Reply};
use crate::group::coordinator::{CommitPartition, CommitRequest};
use crate::group::state::{JoinRequest, SyncRequest};
use crate::group::txn_offsets::TxnCommitRequest;
use crate::group::{partition_for, OFFSETS_TOPIC};
use crate::metadata::TopicMeta;
use crate::security::acl::{apis, Operation, ResourceType};
use crate::shard::controller::{self, NewTopic};
use crate::shard::Shard;
use bytes::Bytes;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::txn_offset_commit_request::TxnOffsetCommitRequestTopic;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use sluice_protocol::offset_commit as offset_commit_v10;
use sluice_protocol::offset_fetch as offset_fetch_v10;
use sluice_protocol::ErrorCode;
use std::collections::BTreeMap;
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;

/// Authorized operations, when not asked for (Kafka's sentinel).
pub(super) const OPERATIONS_OMITTED: i32 = i32::MIN;
/// FindCoordinator key types: a group, a transactional id, a share group
/// (v6, KIP-932).
const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;
/// DescribeGroups v6 answers GROUP_ID_NOT_FOUND for an unknown group
/// (KIP-1043); earlier versions describe it as Dead.
const DESCRIBE_NOT_FOUND_VERSION_MIN: i16 = 6;

fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

/// The offsets topic, created on first use as Kafka does: compacted,
/// with `offsets.topic.num.partitions` partitions and
/// `offsets.topic.replication.factor` replicas. The default, 3, is capped
/// by the live brokers with a warning, so a lone broker serves groups out
/// of the box and a cluster gets three replicas. A factor set explicitly
/// is kept: above the live brokers it fails (COORDINATOR_NOT_AVAILABLE, so
/// clients retry) until enough have registered, as in Kafka.
/// Creates an internal topic (`__consumer_offsets`,
/// `__transaction_state`) a coordinator needs: any failure is
/// COORDINATOR_NOT_AVAILABLE, which clients retry, and a replication
/// factor above the live brokers waits for more to register.
pub(super) async fn create_internal_topic(
    shard: &Rc<Shard>,
    new: NewTopic,
) -> Result<Arc<TopicMeta>, ErrorCode> {
    let name = new.name.clone();
    match controller::create_topic(shard, new).await {
        Ok(t) => Ok(t),
        Err((ErrorCode::TopicAlreadyExists, _)) => shard
            .metadata()
            .topic(&name)
            .cloned()
            .ok_or(ErrorCode::CoordinatorNotAvailable),
        Err((ErrorCode::InvalidReplicationFactor, message)) => {
            tracing::warn!(%message, "{name} waits for more brokers");
            Err(ErrorCode::CoordinatorNotAvailable)
        }
        Err((code, message)) => {
            tracing::error!(?code, %message, "creating {name}");
            Err(ErrorCode::CoordinatorNotAvailable)
        }
    }
}

async fn offsets_topic(shard: &Rc<Shard>) -> Result<Arc<TopicMeta>, ErrorCode> {
    if let Some(t) = shard.metadata().topic(OFFSETS_TOPIC) {
        return Ok(Arc::clone(t));
    }
    let cfg = &shard.groups.config;
    let overrides = BTreeMap::from([
        ("cleanup.policy".to_string(), "compact".to_string()),
        (
            "segment.bytes".to_string(),
            cfg.offsets_segment_bytes.to_string(),
        ),
    ]);
    let live = shard.metadata().live_brokers().count().max(1);
    let replication_factor = if cfg.offsets_replication_factor_is_default {
        cfg.offsets_replication_factor.min(live as i16)
    } else {
        cfg.offsets_replication_factor
    };
    if replication_factor < cfg.offsets_replication_factor {
        tracing::warn!(
            configured = cfg.offsets_replication_factor,
            live,
            "creating {OFFSETS_TOPIC} with replication factor {replication_factor}: \
             the default offsets.topic.replication.factor is more than the live brokers"
        );
    }
    let new = NewTopic {
        name: OFFSETS_TOPIC.to_string(),
        partitions: cfg.offsets_partitions,
        replication_factor,
        overrides,
        assignments: None,
    };
    create_internal_topic(shard, new).await
}

/// Runs `f` on the shard coordinating `group_id`.
pub(super) async fn on_coordinator<R, F, Fut>(
    ctx: &Ctx<'_>,
    group_id: &str,
    f: F,
) -> Result<R, ErrorCode>
where
    R: Send + 'static,
    F: FnOnce(Rc<Shard>) -> Fut + Send + 'static,
    Fut: Future<Output = R> + 'static,
{
    // The operation this API needs on the group (security::acl::apis).
    let op = apis::rules(ctx.api)
        .and_then(|r| r.iter().find(|(_, t)| *t == ResourceType::Group))
        .map(|(op, _)| *op);
    if op.is_some_and(|op| !ctx.allowed(op, ResourceType::Group, group_id)) {
        return Err(ErrorCode::GroupAuthorizationFailed);
    }
    let topic = offsets_topic(ctx.shard).await?;
    let partition = partition_for(group_id, topic.partitions);
    if !ctx.shard.metadata().leads(&topic, partition) {
        return Err(ErrorCode::NotCoordinator);
    }
    let owner = ctx.shard.owner(&topic, partition);
    ctx.shard
        .invoke_on(owner, f)
        .await
        .map_err(|_| ErrorCode::CoordinatorNotAvailable)
}

/// Runs `f` on every shard, collecting the answers.
async fn on_every_shard<R, F, Fut>(ctx: &Ctx<'_>, f: F) -> Vec<R>
where
    R: Send + 'static,
    F: Fn(Rc<Shard>) -> Fut + Send + Clone + 'static,
    Fut: Future<Output = R> + 'static,
{
    let mut out = Vec::new();
    for target in 0..ctx.shard.count {
        if let Ok(r) = ctx.shard.invoke_on(target, f.clone()).await {
            out.push(r);
        }
    }
    out
}

/// Names the leader of `partition` of `topic`, the coordinator of the
/// keys hashed to it, in `c`, with its endpoint on the client's listener.
pub(super) fn name_leader(
    ctx: &Ctx<'_>,
    topic: &TopicMeta,
    partition: i32,
    c: &mut Coordinator,
) -> ErrorCode {
    let snapshot = ctx.shard.metadata();
    let leader = topic
        .partition(partition)
        .and_then(|p| p.leader)
        .and_then(|n| snapshot.brokers.get(&n.0).map(|b| (n.0, b)))
        .filter(|(_, b)| !b.fenced)
        .and_then(|(id, b)| Some((id, b.endpoint(&ctx.client.listener)?)));
    match leader {
        Some((id, (host, port))) => {
            c.node_id = kafka_protocol::messages::BrokerId(id);
            c.host = s(host.to_string());
            c.port = i32::from(port);
            ErrorCode::None
        }
        None => ErrorCode::CoordinatorNotAvailable,
    }
}

pub async fn find_coordinator(ctx: &Ctx<'_>, body: Bytes) -> Result<Reply, HandlerError> {
    let req: FindCoordinatorRequest = ctx.decode(body)?;
    let keys: Vec<StrBytes> = if ctx.version() >= 4 {
        req.coordinator_keys.clone()
    } else {
        vec![req.key.clone()]
    };
    let mut coordinators = Vec::new();
    for key in keys {
        let mut c = Coordinator::default()
            .with_key(key.clone())
            .with_node_id(kafka_protocol::messages::BrokerId(-1));
        let code = if req.key_type == KEY_TYPE_GROUP
            && !ctx.allowed(Operation::Describe, ResourceType::Group, &key)
        {
            ErrorCode::GroupAuthorizationFailed
        } else if req.key_type == KEY_TYPE_TRANSACTION
            && !ctx.allowed(Operation::Describe, ResourceType::TransactionalId, &key)
        {
            ErrorCode::TransactionalIdAuthorizationFailed
        } else if req.key_type == KEY_TYPE_TRANSACTION {
            super::txn::find(ctx, &key, &mut c).await
        } else if req.key_type != KEY_TYPE_GROUP {
            // Share groups (type 2) are not implemented, as on a Kafka
            // broker without a share coordinator; other types are unknown.
            c.error_message = Some(s(format!("no coordinator of key type {}", req.key_type)));
            ErrorCode::InvalidRequest
        } else {
            // An empty group id is a group id too: Kafka names its
            // coordinator (JoinGroup then refuses it, INVALID_GROUP_ID).
            match offsets_topic(ctx.shard).await {
                Ok(topic) => {
                    let partition = partition_for(&key, topic.partitions);
                    name_leader(ctx, &topic, partition, &mut c)
                }
                Err(code) => code,
            }
        };
        c.error_code = code.code();
        coordinators.push(c);
    }
    let mut resp = FindCoordinatorResponse::default();
    if ctx.version() >= 4 {
        resp.coordinators = coordinators;
    } else if let Some(c) = coordinators.pop() {
        resp.error_code = c.error_code;
        resp.error_message = c.error_message;
        resp.node_id = c.node_id;
        resp.host = c.host;
        resp.port = c.port;
    }
    ctx.respond(&resp)
}

pub async fn join_group(ctx: &Ctx<'_>, body: Bytes) -> Result<Reply, HandlerError> {
    let req: JoinGroupRequest = ctx.decode(body)?;
    let group_id = req.group_id.to_string();
    let join = JoinRequest {
        member_id: req.member_id.to_string(),
        instance_id: req.group_instance_id.as_ref().map(|i| i.to_string()),
        client_id: ctx.header.client_id.clone().unwrap_or_default(),
        client_host: ctx.client.host.clone(),
        session_timeout_ms: req.session_timeout_ms,
        rebalance_timeout_ms: if ctx.version() >= 1 {
            req.rebalance_timeout_ms
        } else {
            req.session_timeout_ms
        },
        protocol_type: req.protocol_type.to_string(),
        protocols: req
            .protocols
            .iter()
            .map(|p| (p.name.to_string(), p.metadata.clone()))
            .collect(),
        require_known_member_id: ctx.version() >= 4,
        supports_skip_assignment: ctx.version() >= 9,
    };
    if let Some(reason) = &req.reason {
        tracing::info!(group = %group_id, member = %join.member_id, %reason, "JoinGroup");
    }
    let member_id = join.member_id.clone();
    let id = group_id.clone();
    let result = on_coordinator(ctx, &group_id, move |c| async move {
        c.groups.join(&c, id, join).await
    })
    .await
    .unwrap_or_else(|code| crate::group::state::JoinResult::error(code, &member_id));
    let mut resp = JoinGroupResponse::default()
        .with_error_code(result.error.code())
        .with_generation_id(result.generation)
        .with_protocol_type(result.protocol_type.map(s))
        .with_protocol_name(if ctx.version() >= 7 {
            result.protocol.map(s)
        } else {
            Some(s(result.protocol.unwrap_or_default()))
        })
        .with_leader(s(result.leader))
        .with_member_id(s(result.member_id))
        .with_members(
            result
                .members
                .into_iter()
                .map(|m| {
                    JoinGroupResponseMember::default()
                        .with_member_id(s(m.member_id))
                        .with_group_instance_id(m.instance_id.map(s))
                        .with_metadata(m.metadata)
                })
                .collect(),
        );
    if ctx.version() >= 9 {
        resp.skip_assignment = result.skip_assignment;
    }
    ctx.respond(&resp)
}

pub async fn sync_group(ctx: &Ctx<'_>, body: Bytes) -> Result<Reply, HandlerError> {
    let req: SyncGroupRequest = ctx.decode(body)?;
    let group_id = req.group_id.to_string();
    let sync = SyncRequest {
        member_id: req.member_id.to_string(),
        instance_id: req.group_instance_id.as_ref().map(|i| i.to_string()),
        generation: req.generation_id,
        protocol_type: req.protocol_type.as_ref().map(|p| p.to_string()),
        protocol: req.protocol_name.as_ref().map(|p| p.to_string()),
        assignments: req
            .assignments
            .iter()
            .map(|a| (a.member_id.to_string(), a.assignment.clone()))
            .collect(),
    };
    let id = group_id.clone();
    let result = on_coordinator(ctx, &group_id, move |c| async move {
        c.groups.sync(&c, id, sync).await
    })
    .await
    .unwrap_or_else(crate::group::state::SyncResult::error);
    let resp = SyncGroupResponse::default()
        .with_error_code(result.error.code())
        .with_protocol_type(result.protocol_type.map(s))
        .with_protocol_name(result.protocol.map(s))
        .with_assignment(result.assignment);
    ctx.respond(&resp)
}

pub async fn heartbeat(ctx: &Ctx<'_>, body: Bytes) -> Result<Reply, HandlerError> {
    let req: HeartbeatRequest = ctx.decode(body)?;
    let group_id = req.group_id.to_string();
    let (id, member) = (group_id.clone(), req.member_id.to_string());
    let instance = req.group_instance_id.as_ref().map(|i| i.to_string());
    let generation = req.generation_id;
    let code = on_coordinator(ctx, &group_id, move |c| async move {
        c.groups
            .heartbeat(&c, &id, &member, instance.as_deref(), generation)
    })
    .await
    .unwrap_or_else(|code| code);
    ctx.respond(&HeartbeatResponse::default().with_error_code(code.code()))
}

pub async fn leave_group(ctx: &Ctx<'_>, body: Bytes) -> Result<Reply, HandlerError> {
    let req: LeaveGroupRequest = ctx.decode(body)?;
    let group_id = req.group_id.to_string();
    let members: Vec<(String, Option<String>)> = if ctx.version() >= 3 {
        req.members
            .iter()
            .map(|m| {
                if let Some(reason) = &m.reason {
                    tracing::info!(group = %group_id, member = %m.member_id, %reason, "LeaveGroup");
                }
                let instance = m.group_instance_id.as_ref().map(|i| i.to_string());
                (m.member_id.to_string(), instance)
            })
            .collect()
    } else {
        vec![(req.member_id.to_string(), None)]
    };
    let (id, asked) = (group_id.clone(), members.clone());
    let codes = on_coordinator(ctx, &group_id, move |c| async move {
        c.groups.leave(&c, &id, &asked)
    })
    .await
    .unwrap_or_else(|code| vec![code; members.len()]);
    let mut resp = LeaveGroupResponse::default();
    if ctx.version() >= 3 {
        resp.members = members
            .into_iter()
            .zip(&codes)
            .map(|((m, i), code)| {
                MemberResponse::default()
                    .with_member_id(s(m))
                    .with_group_instance_id(i.map(s))
                    .with_error_code(code.code())
            })
            .collect();
    } else {
        resp.error_code = codes.first().map_or(0, |c| c.code());
    }
    ctx.respond(&resp)
}

pub async fn offset_commit(ctx: &Ctx<'_>, body: Bytes) -> Result<Reply, HandlerError> {
    if ctx.version() >= offset_commit_v10::TOPIC_ID_VERSION {
        return offset_commit_by_id(ctx, &body).await;
    }
    let req: OffsetCommitRequest = ctx.decode(body)?;
    let commit = CommitRequest {
        member_id: req.member_id.to_string(),
        instance_id: req.group_instance_id.as_ref().map(|i| i.to_string()),
        generation: req.generation_id_or_member_epoch,
        version: ctx.version(),
        topics: req
            .topics
            .iter()
            .map(|t| {
                let partitions = t
                    .partitions
                    .iter()
                    .map(|p| CommitPartition {
                        partition: p.partition_index,
                        offset: p.committed_offset,
                        leader_epoch: p.committed_leader_epoch,
                        metadata: p
                            .committed_metadata
                            .as_ref()
                            .map(|m| m.to_string())
                            .unwrap_or_default(),
                    })
                    .collect();
                (t.name.to_string(), partitions)
            })
            .collect(),
    };
    let results = commit_offsets(ctx, req.group_id.to_string(), commit).await;
    let topics = results
        .into_iter()
        .map(|(t, ps)| {
            OffsetCommitResponseTopic::default()
                .with_name(TopicName(s(t)))
                .with_partitions(
                    ps.into_iter()
                        .map(|(p, code)| {
                            OffsetCommitResponsePartition::default()
                                .with_partition_index(p)
                                .with_error_code(code.code())
                        })
                        .collect(),
                )
        })
        .collect();
    ctx.respond(&OffsetCommitResponse::default().with_topics(topics))
}

/// OffsetCommit v10: topics named by id. As Kafka does, an id this
/// broker's metadata does not know is answered UNKNOWN_TOPIC_ID for each
/// of its partitions before anything else is checked; the others commit
/// under the name the id has now, and are answered by id.
async fn offset_commit_by_id(ctx: &Ctx<'_>, body: &[u8]) -> Result<Reply, HandlerError> {
    let req = ctx.decoded(offset_commit_v10::OffsetCommitRequest::decode(body))?;
    let snapshot = ctx.shard.metadata();
    let mut ids: BTreeMap<String, uuid::Uuid> = BTreeMap::new();
    let mut unknown = Vec::new();
    let mut topics = Vec::new();
    for t in req.topics {
        let Some(meta) = snapshot.topic_by_id(t.topic_id) else {
            let code = ErrorCode::UnknownTopicId.code();
            let partitions = t.partitions.iter().map(|p| (p.partition_index, code));
            unknown.push(offset_commit_v10::CommittedTopic {
                topic_id: t.topic_id,
                partitions: partitions.collect(),
            });
            continue;
        };
        ids.insert(meta.name.clone(), t.topic_id);
        let partitions = t
            .partitions
            .into_iter()
            .map(|p| CommitPartition {
                partition: p.partition_index,
                offset: p.committed_offset,
                leader_epoch: p.committed_leader_epoch,
                metadata: p.committed_metadata.unwrap_or_default(),
            })
            .collect();
        topics.push((meta.name.clone(), partitions));
    }
    let commit = CommitRequest {
        member_id: req.member_id,
        instance_id: req.group_instance_id,
        generation: req.generation_id_or_member_epoch,
        version: ctx.version(),
        topics,
    };
    let results = commit_offsets(ctx, req.group_id, commit).await;
    let mut answered: Vec<_> = results
        .into_iter()
        .map(|(name, ps)| offset_commit_v10::CommittedTopic {
            topic_id: ids.get(&name).copied().unwrap_or_default(),
            partitions: ps.into_iter().map(|(p, code)| (p, code.code())).collect(),
        })
        .collect();
    answered.extend(unknown);
    let resp = offset_commit_v10::OffsetCommitResponse {
        throttle_time_ms: 0,
        topics: answered,
    };
    Ok(ctx.respond_encoded(&resp.encode()))
}

/// Commits on the group's coordinator what the client may READ; the
/// other topics are answered TOPIC_AUTHORIZATION_FAILED, and every
/// partition the coordinator's error when it cannot be reached.
async fn commit_offsets(
    ctx: &Ctx<'_>,
    group_id: String,
    mut commit: CommitRequest,
) -> Vec<(String, Vec<(i32, ErrorCode)>)> {
    let fallback = commit.topics.clone();
    let denied = keep_readable(ctx, &mut commit.topics);
    let id = group_id.clone();
    on_coordinator(ctx, &group_id, move |c| async move {
        let mut results = c.groups.commit(&c, id, commit).await;
        results.extend(all_partitions(&denied, ErrorCode::TopicAuthorizationFailed));
        results
    })
    .await
    .unwrap_or_else(|code| all_partitions(&fallback, code))
}

/// A TxnOffsetCommit's topics as the coordinator takes them.
fn txn_commit_topics(
    topics: &[TxnOffsetCommitRequestTopic],
) -> Vec<(String, Vec<CommitPartition>)> {
    topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| CommitPartition {
                    partition: p.partition_index,
                    offset: p.committed_offset,
                    leader_epoch: p.committed_leader_epoch,
                    metadata: p
                        .committed_metadata
                        .as_ref()
                        .map(|m| m.to_string())
                        .unwrap_or_default(),
                })
                .collect();
            (t.name.to_string(), partitions)
        })
        .collect()
}

/// Every partition of `topics` answered `code`.
/// Keeps in `topics` those the client may READ and returns the others.
fn keep_readable(
    ctx: &Ctx<'_>,
    topics: &mut Vec<(String, Vec<CommitPartition>)>,
) -> Vec<(String, Vec<CommitPartition>)> {
    let (allowed, denied) = std::mem::take(topics)
        .into_iter()
        .partition(|(t, _)| ctx.allowed(Operation::Read, ResourceType::Topic, t));
    *topics = allowed;
    denied
}

fn all_partitions(
    topics: &[(String, Vec<CommitPartition>)],
    code: ErrorCode,
) -> Vec<(String, Vec<(i32, ErrorCode)>)> {
    topics
        .iter()
        .map(|(t, ps)| (t.clone(), ps.iter().map(|p| (p.partition, code)).collect()))
        .collect()
}

/// TxnOffsetCommit: WRITE on the transactional id (else every partition
/// TRANSACTIONAL_ID_AUTHORIZATION_FAILED), READ on the group and each
/// topic, as Kafka checks them; the coordinator keeps the offsets
/// pending until the transaction's marker.
pub async fn txn_offset_commit(ctx: &Ctx<'_>, body: Bytes) -> Result<Reply, HandlerError> {
    let req: TxnOffsetCommitRequest = ctx.decode(body)?;
    let group_id = req.group_id.to_string();
    let mut commit = TxnCommitRequest {
        transactional_id: req.transactional_id.to_string(),
        producer_id: req.producer_id.0,
        producer_epoch: req.producer_epoch,
        member_id: req.member_id.to_string(),
        instance_id: req.group_instance_id.as_ref().map(|i| i.to_string()),
        generation: req.generation_id,
        topics: txn_commit_topics(&req.topics),
        version: ctx.version(),
    };
    let fallback = commit.topics.clone();
    let results = if !ctx.allowed(
        Operation::Write,
        ResourceType::TransactionalId,
        &commit.transactional_id,
    ) {
        all_partitions(&fallback, ErrorCode::TransactionalIdAuthorizationFailed)
    } else {
        let denied = keep_readable(ctx, &mut commit.topics);
        let id = group_id.clone();
        on_coordinator(ctx, &group_id, move |c| async move {
            let mut results = c.groups.txn_commit(&c, id, commit).await;
            results.extend(all_partitions(&denied, ErrorCode::TopicAuthorizationFailed));
            results
        })
        .await
        .unwrap_or_else(|code| all_partitions(&fallback, code))
    };
    let topics = results
        .into_iter()
        .map(|(t, ps)| {
            TxnOffsetCommitResponseTopic::default()
                .with_name(TopicName(s(t)))
                .with_partitions(
                    ps.into_iter()
                        .map(|(p, code)| {
                            TxnOffsetCommitResponsePartition::default()
                                .with_partition_index(p)
                                .with_error_code(code.code())
                        })
                        .collect(),
                )
        })
        .collect();
    ctx.respond(&TxnOffsetCommitResponse::default().with_topics(topics))
}

/// Committed offsets of one group: per topic, (partition, offset,
/// leader epoch, metadata), or the error for the whole group.
type Fetched = Result<Vec<(String, Vec<crate::group::coordinator::FetchedOffset>)>, ErrorCode>;

/// A consumer-protocol member's id and epoch in OffsetFetch v9+.
type Fetcher = Option<(Option<String>, i32)>;

async fn fetch_group(
    ctx: &Ctx<'_>,
    group_id: String,
    topics: Option<Vec<(String, Vec<i32>)>>,
    member: Fetcher,
    require_stable: bool,
) -> Fetched {
    let id = group_id.clone();
    let named = topics.is_some();
    let fetched = on_coordinator(ctx, &group_id, move |c| async move {
        if let Some((member_id, epoch)) = member {
            c.groups
                .check_consumer_fetch(&id, member_id.as_deref(), epoch)?;
        }
        Ok(c.groups.fetch_offsets(&id, topics, require_stable))
    })
    .await
    .and_then(|r| r)?;
    // DESCRIBE on each topic: others are left out of an all-topics
    // answer, and named ones answered TOPIC_AUTHORIZATION_FAILED.
    let mut out = Vec::with_capacity(fetched.len());
    for (t, ps) in fetched {
        if ctx.allowed(Operation::Describe, ResourceType::Topic, &t) {
            out.push((t, ps));
        } else if named {
            let denied = ps
                .into_iter()
                .map(|p| crate::group::coordinator::FetchedOffset {
                    partition: p.partition,
                    offset: -1,
                    leader_epoch: -1,
                    metadata: String::new(),
                    error: ErrorCode::TopicAuthorizationFailed,
                });
            out.push((t, denied.collect()));
        }
    }
    Ok(out)
}

pub async fn offset_fetch(ctx: &Ctx<'_>, body: Bytes) -> Result<Reply, HandlerError> {
    let v = ctx.version();
    if v >= offset_fetch_v10::TOPIC_ID_VERSION {
        return offset_fetch_by_id(ctx, &body).await;
    }
    let req: OffsetFetchRequest = ctx.decode(body)?;
    if v >= 8 {
        let mut groups = Vec::new();
        for g in &req.groups {
            let topics = g.topics.as_ref().map(|ts| {
                ts.iter()
                    .map(|t| (t.name.to_string(), t.partition_indexes.clone()))
                    .collect()
            });
            let member = (v >= 9).then(|| {
                let id = g.member_id.as_ref().map(|m| m.to_string());
                (id, g.member_epoch)
            });
            let id = g.group_id.to_string();
            let fetched = fetch_group(ctx, id, topics, member, req.require_stable).await;
            let (code, topics) = match fetched {
                Ok(t) => (ErrorCode::None, t),
                Err(code) => (code, Vec::new()),
            };
            let topics = topics
                .into_iter()
                .map(|(t, ps)| {
                    OffsetFetchResponseTopics::default()
                        .with_name(TopicName(s(t)))
                        .with_partitions(
                            ps.into_iter()
                                .map(|p| {
                                    OffsetFetchResponsePartitions::default()
                                        .with_error_code(p.error.code())
                                        .with_partition_index(p.partition)
                                        .with_committed_offset(p.offset)
                                        .with_committed_leader_epoch(p.leader_epoch)
                                        .with_metadata(Some(s(p.metadata)))
                                })
                                .collect(),
                        )
                })
                .collect();
            groups.push(
                OffsetFetchResponseGroup::default()
                    .with_group_id(g.group_id.clone())
                    .with_error_code(code.code())
                    .with_topics(topics),
            );
        }
        return ctx.respond(&OffsetFetchResponse::default().with_groups(groups));
    }
    let topics = req.topics.as_ref().map(|ts| {
        ts.iter()
            .map(|t| (t.name.to_string(), t.partition_indexes.clone()))
            .collect()
    });
    // `require_stable` is v7's; earlier versions decode it as false.
    let id = req.group_id.to_string();
    let (code, fetched) = match fetch_group(ctx, id, topics, None, req.require_stable).await {
        Ok(t) => (ErrorCode::None, t),
        Err(code) => (code, Vec::new()),
    };
    let topics = fetched
        .into_iter()
        .map(|(t, ps)| {
            OffsetFetchResponseTopic::default()
                .with_name(TopicName(s(t)))
                .with_partitions(
                    ps.into_iter()
                        .map(|p| {
                            let error = if v < 2 { code } else { p.error };
                            OffsetFetchResponsePartition::default()
                                .with_partition_index(p.partition)
                                .with_committed_offset(p.offset)
                                .with_committed_leader_epoch(p.leader_epoch)
                                .with_metadata(Some(s(p.metadata)))
                                .with_error_code(error.code())
                        })
                        .collect(),
                )
        })
        .collect();
    let mut resp = OffsetFetchResponse::default().with_topics(topics);
    if v >= 2 {
        resp.error_code = code.code();
    }
    ctx.respond(&resp)
}

/// OffsetFetch v10: topics named by id, as Kafka answers them. An id
/// this broker's metadata does not know gets UNKNOWN_TOPIC_ID on each
/// partition asked for (offset -1); the others are fetched under the name
/// the id has now. Asked for every topic, the group's topics are answered
/// by their current ids, and one no longer in the metadata (deleted) is
/// left out, having no id to give. A group-level error answers no topic.
async fn offset_fetch_by_id(ctx: &Ctx<'_>, body: &[u8]) -> Result<Reply, HandlerError> {
    let req = ctx.decoded(offset_fetch_v10::OffsetFetchRequest::decode(body))?;
    let snapshot = ctx.shard.metadata();
    let mut groups = Vec::with_capacity(req.groups.len());
    for g in req.groups {
        let mut unknown = Vec::new();
        let mut ids: BTreeMap<String, uuid::Uuid> = BTreeMap::new();
        let named = g.topics.map(|topics| {
            let mut named = Vec::with_capacity(topics.len());
            for (id, partitions) in topics {
                match snapshot.topic_by_id(id) {
                    Some(meta) => {
                        ids.insert(meta.name.clone(), id);
                        named.push((meta.name.clone(), partitions));
                    }
                    None => unknown.push(unknown_topic_id(id, &partitions)),
                }
            }
            named
        });
        let member = Some((g.member_id, g.member_epoch));
        let fetched = fetch_group(ctx, g.group_id.clone(), named, member, req.require_stable).await;
        let (error_code, topics) = match fetched {
            Err(code) => (code.code(), Vec::new()),
            Ok(topics) => {
                let mut answered: Vec<_> = topics
                    .into_iter()
                    .filter_map(|(name, ps)| {
                        let id = ids
                            .get(&name)
                            .copied()
                            .or_else(|| snapshot.topic(&name).map(|m| m.id))?;
                        Some(offset_fetch_v10::FetchedTopic {
                            topic_id: id,
                            partitions: ps.into_iter().map(fetched_partition).collect(),
                        })
                    })
                    .collect();
                answered.extend(unknown);
                (0, answered)
            }
        };
        groups.push(offset_fetch_v10::FetchedGroup {
            group_id: g.group_id,
            topics,
            error_code,
        });
    }
    let resp = offset_fetch_v10::OffsetFetchResponse {
        throttle_time_ms: 0,
        groups,
    };
    Ok(ctx.respond_encoded(&resp.encode()))
}

/// A topic id the metadata does not know, answered as Kafka does.
fn unknown_topic_id(id: uuid::Uuid, partitions: &[i32]) -> offset_fetch_v10::FetchedTopic {
    let partitions = partitions
        .iter()
        .map(|&p| offset_fetch_v10::FetchedPartition {
            partition_index: p,
            committed_offset: -1,
            committed_leader_epoch: -1,
            metadata: Some(String::new()),
            error_code: ErrorCode::UnknownTopicId.code(),
        });
    offset_fetch_v10::FetchedTopic {
        topic_id: id,
        partitions: partitions.collect(),
    }
}

fn fetched_partition(
    p: crate::group::coordinator::FetchedOffset,
) -> offset_fetch_v10::FetchedPartition {
    offset_fetch_v10::FetchedPartition {
        partition_index: p.partition,
        committed_offset: p.offset,
        committed_leader_epoch: p.leader_epoch,
        metadata: Some(p.metadata),
        error_code: p.error.code(),
    }
}

pub async fn list_groups(ctx: &Ctx<'_>, body: Bytes) -> Result<Reply, HandlerError> {
    let req: ListGroupsRequest = ctx.decode(body)?;
    let states: Vec<String> = req.states_filter.iter().map(|s| s.to_lowercase()).collect();
    // v5's types filter, matched without case as Kafka does.
    let types: Vec<String> = req.types_filter.iter().map(|t| t.to_lowercase()).collect();
    let lists = on_every_shard(ctx, |c: Rc<Shard>| async move { c.groups.list() }).await;
    // DESCRIBE on the cluster lists every group, else those the client
    // may DESCRIBE.
    let every = ctx.cluster_allowed(Operation::Describe);
    let groups = lists
        .into_iter()
        .flatten()
        .filter(|g| every || ctx.allowed(Operation::Describe, ResourceType::Group, &g.id))
        .filter(|g| states.is_empty() || states.contains(&g.state.to_lowercase()))
        .filter(|g| types.is_empty() || types.iter().any(|t| t == g.group_type))
        .map(|g| {
            let listed = ListedGroup::default()
                .with_group_id(GroupId(s(g.id)))
                .with_protocol_type(s(g.protocol_type))
                .with_group_state(s(g.state));
            match ctx.version() >= 5 {
                true => listed.with_group_type(s(g.group_type)),
                false => listed,
            }
        })
        .collect();
    ctx.respond(&ListGroupsResponse::default().with_groups(groups))
}

pub async fn describe_groups(ctx: &Ctx<'_>, body: Bytes) -> Result<Reply, HandlerError> {
    let req: DescribeGroupsRequest = ctx.decode(body)?;
    let mut groups = Vec::new();
    for group_id in &req.groups {
        let id = group_id.to_string();
        let asked = id.clone();
        let described = on_coordinator(ctx, &id, move |c| async move {
            (
                c.groups.is_consumer_group(&asked),
                c.groups.describe(&asked),
            )
        })
        .await;
        let mut g = DescribedGroup::default()
            .with_group_id(group_id.clone())
            .with_authorized_operations(match req.include_authorized_operations {
                true => ctx.authorized_operations(ResourceType::Group, &id),
                false => OPERATIONS_OMITTED,
            });
        let not_found = ctx.version() >= DESCRIBE_NOT_FOUND_VERSION_MIN;
        match described {
            // A consumer-protocol group is described by
            // ConsumerGroupDescribe; here it is Dead, as in Kafka, which
            // from v6 also says why.
            Ok((true, _)) => {
                g.group_state = s("Dead");
                if not_found {
                    g.error_code = ErrorCode::GroupIdNotFound.code();
                    g.error_message = Some(s(format!("Group {id} is not a classic group.")));
                }
            }
            Ok((false, d)) if not_found && d.state == crate::group::state::GroupState::Dead => {
                g.group_state = s(d.state.name());
                g.error_code = ErrorCode::GroupIdNotFound.code();
                g.error_message = Some(s(format!("Group {id} not found.")));
            }
            Ok((false, d)) => {
                g.group_state = s(d.state.name());
                g.protocol_type = s(d.protocol_type);
                g.protocol_data = s(d.protocol);
                g.members = d
                    .members
                    .into_iter()
                    .map(|m| {
                        DescribedGroupMember::default()
                            .with_member_id(s(m.member_id))
                            .with_group_instance_id(m.instance_id.map(s))
                            .with_client_id(s(m.client_id))
                            .with_client_host(s(m.client_host))
                            .with_member_metadata(m.metadata)
                            .with_member_assignment(m.assignment)
                    })
                    .collect();
            }
            Err(code) => g.error_code = code.code(),
        }
        groups.push(g);
    }
    ctx.respond(&DescribeGroupsResponse::default().with_groups(groups))
}

pub async fn delete_groups(ctx: &Ctx<'_>, body: Bytes) -> Result<Reply, HandlerError> {
    use sluice_protocol::delete_groups as v3;
    if ctx.version() >= v3::ERROR_MESSAGE_VERSION {
        let req = ctx.decoded(v3::DeleteGroupsRequest::decode(&body))?;
        // Kafka 4.4 gives a message only where the code alone cannot say
        // what went wrong (a streams group's topology, a failed write);
        // every answer here is fully said by its code, so none has one.
        let results = delete_each(ctx, req.groups_names)
            .await
            .into_iter()
            .map(|(group_id, code)| v3::DeletableGroupResult {
                group_id,
                error_code: code.code(),
                error_message: None,
            })
            .collect();
        let resp = v3::DeleteGroupsResponse {
            throttle_time_ms: 0,
            results,
        };
        return Ok(ctx.respond_encoded(&resp.encode()));
    }
    let req: DeleteGroupsRequest = ctx.decode(body)?;
    let names = req.groups_names.iter().map(|g| g.to_string()).collect();
    let results = delete_each(ctx, names)
        .await
        .into_iter()
        .map(|(group_id, code)| {
            delete_groups_response::DeletableGroupResult::default()
                .with_group_id(GroupId(s(group_id)))
                .with_error_code(code.code())
        })
        .collect();
    ctx.respond(&DeleteGroupsResponse::default().with_results(results))
}

/// Deletes each group on its coordinator, in the order asked: the
/// outcome of each. A group named twice is answered once, as Kafka does.
async fn delete_each(ctx: &Ctx<'_>, groups: Vec<String>) -> Vec<(String, ErrorCode)> {
    let mut results: Vec<(String, ErrorCode)> = Vec::with_capacity(groups.len());
    for id in groups {
        if results.iter().any(|(done, _)| *done == id) {
            continue;
        }
        let asked = id.clone();
        let code = on_coordinator(ctx, &id, move |c| async move {
            c.groups.delete_group(&c, asked).await
        })
        .await
        .unwrap_or_else(|code| code);
        results.push((id, code));
    }
    results
}

pub async fn offset_delete(ctx: &Ctx<'_>, body: Bytes) -> Result<Reply, HandlerError> {
    let req: OffsetDeleteRequest = ctx.decode(body)?;
    let group_id = req.group_id.to_string();
    // Partitions that do not exist are answered here, as Kafka does:
    // UNKNOWN_TOPIC_OR_PARTITION, whatever the group holds.
    let snapshot = ctx.shard.metadata();
    let exists = |t: &str, p: i32| {
        snapshot
            .topic(t)
            .is_some_and(|m| (0..m.partitions).contains(&p))
    };
    let mut unknown: Vec<(String, Vec<(i32, ErrorCode)>)> = Vec::new();
    let topics: Vec<(String, Vec<i32>)> = req
        .topics
        .iter()
        .filter_map(|t| {
            let name = t.name.to_string();
            if !ctx.allowed(Operation::Read, ResourceType::Topic, &name) {
                let code = ErrorCode::TopicAuthorizationFailed;
                let codes = t.partitions.iter().map(|p| (p.partition_index, code));
                unknown.push((name, codes.collect()));
                return None;
            }
            let (known, missing): (Vec<i32>, Vec<i32>) = t
                .partitions
                .iter()
                .map(|p| p.partition_index)
                .partition(|p| exists(&name, *p));
            if !missing.is_empty() {
                let codes = missing
                    .into_iter()
                    .map(|p| (p, ErrorCode::UnknownTopicOrPartition));
                unknown.push((name.clone(), codes.collect()));
            }
            (!known.is_empty()).then_some((name, known))
        })
        .collect();
    let id = group_id.clone();
    let (code, mut results) = on_coordinator(ctx, &group_id, move |c| async move {
        c.groups.delete_offsets(&c, id, topics).await
    })
    .await
    .unwrap_or_else(|code| (code, Vec::new()));
    if code == ErrorCode::None {
        for (name, codes) in unknown {
            match results.iter_mut().find(|(t, _)| *t == name) {
                Some((_, known)) => known.extend(codes),
                None => results.push((name, codes)),
            }
        }
    }
    let topics = results
        .into_iter()
        .map(|(t, ps)| {
            OffsetDeleteResponseTopic::default()
                .with_name(TopicName(s(t)))
                .with_partitions(
                    ps.into_iter()
                        .map(|(p, code)| {
                            OffsetDeleteResponsePartition::default()
                                .with_partition_index(p)
                                .with_error_code(code.code())
                        })
                        .collect(),
                )
        })
        .collect();
    ctx.respond(
        &OffsetDeleteResponse::default()
            .with_error_code(code.code())
            .with_topics(topics),
    )
}
