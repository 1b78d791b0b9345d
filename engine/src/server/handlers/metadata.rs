//! Metadata: the cluster's live brokers at their advertised addresses,
//! and topics with every partition's leader, leader epoch, replicas and
//! in-sync replicas. Asking for an unknown topic creates it when
//! `auto.create.topics.enable` is set and the client allows it. From v10 a
//! topic may be asked for by id (a non-zero id wins over the name, which
//! clients leave null or empty); an unknown id is answered
//! UNKNOWN_TOPIC_ID. v13's top-level error code lets a broker tell the
//! client to bootstrap again (REBOOTSTRAP_REQUIRED, KIP-1102); Sluice's
//! brokers never ask that, so it stays 0.

use super::{Ctx, HandlerError, Reply};
use crate::metadata::TopicMeta;
use crate::security::acl::{Operation, ResourceType, CLUSTER_NAME};
use crate::shard::controller::{self, NewTopic};
use bytes::Bytes;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use sluice_protocol::ErrorCode;
use std::collections::BTreeMap;

pub async fn handle(ctx: &Ctx<'_>, body: Bytes) -> Result<Reply, HandlerError> {
    let req: MetadataRequest = ctx.decode(body)?;
    let v = ctx.version();
    let shard = ctx.shard;
    let config = &shard.broker.config;
    // v0 has no way to ask for no topics: an empty list means all.
    let all = req.topics.is_none() || (v == 0 && req.topics.as_ref().is_some_and(Vec::is_empty));
    let allow_create = (v < 4 || req.allow_auto_topic_creation) && config.auto_create_topics();
    let topic_operations = v >= 8 && req.include_topic_authorized_operations;
    let cluster_operations = v >= 8 && req.include_cluster_authorized_operations;
    let mut topics = Vec::new();
    if all {
        // Topics the client may not DESCRIBE are left out.
        for t in shard.metadata().topics.values() {
            if ctx.allowed(Operation::Describe, ResourceType::Topic, &t.name) {
                topics.push(topic_response(ctx, t));
            }
        }
    } else {
        for wanted in req.topics.unwrap_or_default() {
            // v10+ may name a topic by id, the name then null or empty
            // (the Java client leaves it empty): the id decides.
            let by_name = wanted.name.map(|n| n.0.to_string());
            let Some(name) = by_name.filter(|_| wanted.topic_id.is_nil()) else {
                let found = ctx.shard.metadata().topic_by_id(wanted.topic_id).cloned();
                match found {
                    Some(t) if ctx.allowed(Operation::Describe, ResourceType::Topic, &t.name) => {
                        topics.push(topic_response(ctx, &t))
                    }
                    // An id the client may not DESCRIBE is answered without its name.
                    found => {
                        let code = match found {
                            Some(_) => ErrorCode::TopicAuthorizationFailed,
                            None => ErrorCode::UnknownTopicId,
                        };
                        let mut t = unknown(v, None, code);
                        t.topic_id = wanted.topic_id;
                        topics.push(t);
                    }
                }
                continue;
            };
            topics.push(lookup_or_create(ctx, name, allow_create).await);
        }
    }
    // v8+ may ask what the client may do on each topic (KIP-430).
    for t in topics
        .iter_mut()
        .filter(|t| topic_operations && t.error_code == 0)
    {
        if let Some(name) = &t.name {
            t.topic_authorized_operations = ctx.authorized_operations(ResourceType::Topic, name);
        }
    }
    let snapshot = shard.metadata();
    // Each broker at its address on the listener this client came in on.
    let brokers = snapshot
        .live_brokers_on(&ctx.client.listener)
        .map(|(id, host, port)| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(id))
                .with_host(StrBytes::from_string(host.to_string()))
                .with_port(i32::from(port))
        })
        .collect();
    let mut resp = MetadataResponse::default()
        .with_brokers(brokers)
        .with_controller_id(BrokerId(
            shard
                .broker
                .controller_id
                .load(std::sync::atomic::Ordering::Relaxed),
        ))
        .with_topics(topics);
    // v8–10 may ask what the client may do on the cluster (KIP-430).
    if cluster_operations {
        resp.cluster_authorized_operations =
            ctx.authorized_operations(ResourceType::Cluster, CLUSTER_NAME);
    }
    if v >= 2 {
        resp.cluster_id = Some(StrBytes::from_string(shard.metadata().cluster_id.clone()));
    }
    ctx.respond(&resp)
}

async fn lookup_or_create(
    ctx: &Ctx<'_>,
    name: String,
    allow_create: bool,
) -> MetadataResponseTopic {
    let v = ctx.version();
    if !ctx.allowed(Operation::Describe, ResourceType::Topic, &name) {
        return unknown(v, Some(name), ErrorCode::TopicAuthorizationFailed);
    }
    if let Some(t) = ctx.shard.metadata().topic(&name) {
        return topic_response(ctx, t);
    }
    if crate::metadata::validate_topic_name(&name).is_err() {
        return unknown(v, Some(name), ErrorCode::InvalidTopicException);
    }
    if !allow_create {
        return unknown(v, Some(name), ErrorCode::UnknownTopicOrPartition);
    }
    if !ctx.cluster_allowed(Operation::Create)
        && !ctx.allowed(Operation::Create, ResourceType::Topic, &name)
    {
        return unknown(v, Some(name), ErrorCode::TopicAuthorizationFailed);
    }
    let new = NewTopic {
        name: name.clone(),
        partitions: -1,
        replication_factor: -1,
        overrides: BTreeMap::new(),
        assignments: None,
    };
    match controller::create_topic(ctx.shard, new).await {
        Ok(t) => topic_response(ctx, &t),
        // Lost a race with another creator: the topic exists now.
        Err((ErrorCode::TopicAlreadyExists, _)) => match ctx.shard.metadata().topic(&name) {
            Some(t) => topic_response(ctx, t),
            None => unknown(v, Some(name), ErrorCode::LeaderNotAvailable),
        },
        Err((code, message)) => {
            tracing::warn!(topic = %name, %message, "auto-creating topic failed");
            unknown(v, Some(name), code)
        }
    }
}

fn unknown(v: i16, name: Option<String>, code: ErrorCode) -> MetadataResponseTopic {
    let mut t = MetadataResponseTopic::default().with_error_code(code.code());
    t.name = name.map(|n| TopicName(StrBytes::from_string(n)));
    if v >= 10 {
        t.topic_id = uuid::Uuid::nil();
    }
    t
}

fn topic_response(ctx: &Ctx<'_>, t: &TopicMeta) -> MetadataResponseTopic {
    let v = ctx.version();
    let snapshot = ctx.shard.metadata();
    let ids = |nodes: &[crate::replication::NodeId]| nodes.iter().map(|n| BrokerId(n.0)).collect();
    let partitions = t
        .replicas
        .iter()
        .enumerate()
        .map(|(index, state)| {
            let offline = state
                .replicas
                .iter()
                .filter(|n| snapshot.brokers.get(&n.0).is_none_or(|b| b.fenced))
                .map(|n| BrokerId(n.0))
                .collect();
            let mut p = MetadataResponsePartition::default()
                .with_partition_index(index as i32)
                .with_leader_id(BrokerId(state.leader.map_or(-1, |n| n.0)))
                .with_replica_nodes(ids(&state.replicas))
                .with_isr_nodes(ids(&state.isr));
            if state.leader.is_none() {
                p.error_code = ErrorCode::LeaderNotAvailable.code();
            }
            if v >= 5 {
                p.offline_replicas = offline;
            }
            if v >= 7 {
                p.leader_epoch = state.leader_epoch.0;
            }
            p
        })
        .collect();
    let mut resp = MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(t.name.clone()))))
        .with_is_internal(crate::metadata::is_internal(&t.name))
        .with_partitions(partitions);
    if v >= 10 {
        resp.topic_id = t.id;
    }
    resp
}
