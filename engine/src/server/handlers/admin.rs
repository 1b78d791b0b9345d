//! Topic administration and cluster description: CreateTopics,
//! CreatePartitions, DeleteTopics, DescribeConfigs, AlterConfigs,
//! IncrementalAlterConfigs, ElectLeaders, AlterPartitionReassignments,
//! ListPartitionReassignments, DescribeLogDirs, DescribeCluster.

use super::{Ctx, HandlerError, Reply};
use crate::cluster::rpc::{ConfigOp, OpKind};
use crate::config::{find_topic_key, Kind, Source, KAFKA_UNSET_DEFAULTS, KEYS, LIST_KEYS};
use crate::security::acl::{Operation, ResourceType};
use crate::shard::controller::{self, NewTopic};
use bytes::Bytes;
use futures::future::LocalBoxFuture;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use sluice_protocol::ErrorCode;
use std::collections::BTreeMap;

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
const RESOURCE_BROKER_LOGGER: i8 = 8;

/// Config sources as DescribeConfigs numbers them.
fn source_code(s: Source) -> i8 {
    match s {
        Source::Topic => 1,
        Source::StaticBroker => 4,
        Source::Default => 5,
    }
}

/// Config types as DescribeConfigs v3+ numbers them. `cleanup.policy`
/// and its broker default are lists (7), as in Kafka, though Sluice
/// checks them against the few values it implements.
fn type_code(name: &str, k: Kind) -> i8 {
    if LIST_KEYS.contains(&name) {
        return 7;
    }
    match k {
        Kind::Bool => 1,
        Kind::Text | Kind::OneOf(_) => 2,
        Kind::Int => 3,
        Kind::Long => 5,
        Kind::Ratio => 6,
    }
}

fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

/// An outcome as a result's error code and message (none on success, as
/// Kafka sends).
fn error_fields(outcome: Result<(), controller::TopicError>) -> (i16, Option<StrBytes>) {
    match outcome {
        Ok(()) => (0, None),
        Err((code, message)) => (code.code(), Some(s(message))),
    }
}

/// A denial, as Kafka words it.
fn denied(code: ErrorCode) -> controller::TopicError {
    (code, "Authorization failed.".to_string())
}

/// Whether the client may `op` a config resource: a topic by its name,
/// a broker (or its loggers) through the cluster resource, as Kafka.
fn config_access(
    ctx: &Ctx<'_>,
    resource_type: i8,
    name: &str,
    op: Operation,
) -> Result<(), controller::TopicError> {
    match resource_type {
        RESOURCE_TOPIC if !ctx.allowed(op, ResourceType::Topic, name) => {
            Err(denied(ErrorCode::TopicAuthorizationFailed))
        }
        RESOURCE_BROKER | RESOURCE_BROKER_LOGGER if !ctx.cluster_allowed(op) => {
            Err(denied(ErrorCode::ClusterAuthorizationFailed))
        }
        _ => Ok(()),
    }
}

/// Per-partition outcomes grouped by topic, topics in first-seen order.
fn by_topic<R>(outcomes: Vec<(String, i32, R)>) -> Vec<(String, Vec<(i32, R)>)> {
    let mut topics: Vec<(String, Vec<(i32, R)>)> = Vec::new();
    for (topic, partition, outcome) in outcomes {
        match topics.iter_mut().find(|(t, _)| *t == topic) {
            Some((_, ps)) => ps.push((partition, outcome)),
            None => topics.push((topic, vec![(partition, outcome)])),
        }
    }
    topics
}

pub async fn create_topics(ctx: &Ctx<'_>, body: Bytes) -> Result<Reply, HandlerError> {
    let req: CreateTopicsRequest = ctx.decode(body)?;
    let v = ctx.version();
    // A name given twice is refused once, and neither is created, as
    // Kafka does.
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for t in &req.topics {
        *seen.entry(t.name.0.as_str()).or_default() += 1;
    }
    let duplicates: Vec<String> = seen
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(name, _)| name.to_string())
        .collect();
    let mut refused_twice: Vec<String> = Vec::new();
    // CREATE on the cluster, else on each topic.
    let cluster_create = ctx.cluster_allowed(Operation::Create);
    let mut results: Vec<LocalBoxFuture<'_, CreatableTopicResult>> = Vec::new();
    for t in req.topics {
        let name = t.name.0.to_string();
        if duplicates.contains(&name) {
            if !refused_twice.contains(&name) {
                tracing::info!(topic = %name, "CreateTopics refused: the name is given twice");
                let mut r = CreatableTopicResult::default()
                    .with_name(t.name.clone())
                    .with_error_code(ErrorCode::InvalidRequest.code());
                r.error_message = (v >= 1).then(|| s("Duplicate topic name."));
                refused_twice.push(name);
                results.push(Box::pin(async move { r }));
            }
            continue;
        }
        let allowed = cluster_create || ctx.allowed(Operation::Create, ResourceType::Topic, &name);
        results.push(Box::pin(create_one(
            ctx,
            t,
            name,
            v,
            req.validate_only,
            allowed,
        )));
    }
    // The topics are created together: one by one, each waited for its
    // own metadata commit (an fdatasync of the metadata log) and its
    // publication to every shard, 30–80 ms a topic on this project's VM,
    // and 1,000 topics took most of a minute. Together, the commits and
    // publications are shared. The names are distinct (duplicates were
    // refused above), and the answers keep the request's order.
    let results = futures::future::join_all(results).await;
    ctx.respond(&CreateTopicsResponse::default().with_topics(results))
}

/// Creates (or, with `validate_only`, checks) one topic of a
/// CreateTopics request, and says how it went; `allowed`: the client may
/// CREATE it.
async fn create_one(
    ctx: &Ctx<'_>,
    t: create_topics_request::CreatableTopic,
    name: String,
    v: i16,
    validate_only: bool,
    allowed: bool,
) -> CreatableTopicResult {
    let overrides: BTreeMap<String, String> = t
        .configs
        .iter()
        .filter_map(|c| {
            c.value
                .as_ref()
                .map(|v| (c.name.to_string(), v.to_string()))
        })
        .collect();
    let assignments = assignment(&t.assignments);
    let requested_rf = t.replication_factor.max(1);
    let mut r = CreatableTopicResult::default()
        .with_name(t.name.clone())
        .with_error_message(None);
    let outcome = match assignments {
        _ if !allowed => Err(denied(ErrorCode::TopicAuthorizationFailed)),
        Err(e) => Err(e),
        Ok(assignments) => {
            let new = NewTopic {
                name: name.clone(),
                partitions: t.num_partitions,
                replication_factor: t.replication_factor,
                overrides,
                assignments,
            };
            if validate_only {
                controller::validate(ctx.shard, &new).map(std::sync::Arc::new)
            } else {
                controller::create_topic(ctx.shard, new).await
            }
        }
    };
    match outcome {
        Ok(meta) => {
            if v >= 5 {
                r.num_partitions = meta.partitions;
                r.replication_factor = meta
                    .replicas
                    .first()
                    .map_or(requested_rf, |p| p.replicas.len() as i16);
                r.configs = Some(
                    meta.config
                        .values
                        .iter()
                        .map(|(k, (val, src))| {
                            CreatableTopicConfigs::default()
                                .with_name(s(k.clone()))
                                .with_value(Some(s(val.clone())))
                                .with_config_source(source_code(*src))
                        })
                        .collect(),
                );
                // The configs only to whom may DESCRIBE_CONFIGS them.
                if !ctx.allowed(Operation::DescribeConfigs, ResourceType::Topic, &name) {
                    r.configs = None;
                    r.topic_config_error_code = ErrorCode::TopicAuthorizationFailed.code();
                }
            }
            if v >= 7 && !validate_only {
                r.topic_id = meta.id;
            }
        }
        Err((code, message)) => {
            tracing::info!(topic = %name, %message, "CreateTopics refused");
            r.error_code = code.code();
            if v >= 1 {
                r.error_message = Some(s(message));
            }
        }
    }
    r
}

/// A CreateTopics manual assignment as replica lists in partition order
/// (none when the request has none): its partitions must be 0, 1, ...
/// each once, as Kafka requires.
fn assignment(
    given: &[create_topics_request::CreatableReplicaAssignment],
) -> Result<Option<Vec<Vec<i32>>>, controller::TopicError> {
    if given.is_empty() {
        return Ok(None);
    }
    let mut lists = vec![None; given.len()];
    for a in given {
        let slot = usize::try_from(a.partition_index)
            .ok()
            .and_then(|i| lists.get_mut(i))
            .filter(|slot| slot.is_none())
            .ok_or_else(|| {
                (
                    ErrorCode::InvalidReplicaAssignment,
                    "Assignments must be consecutive and start from 0.".to_string(),
                )
            })?;
        *slot = Some(a.broker_ids.iter().map(|b| b.0).collect());
    }
    Ok(Some(lists.into_iter().flatten().collect()))
}

pub async fn create_partitions(ctx: &Ctx<'_>, body: Bytes) -> Result<Reply, HandlerError> {
    let req: CreatePartitionsRequest = ctx.decode(body)?;
    let mut results = Vec::new();
    for t in req.topics {
        let assignments = t.assignments.map(|a| {
            a.into_iter()
                .map(|p| p.broker_ids.into_iter().map(|b| b.0).collect())
                .collect()
        });
        let name = t.name.0.to_string();
        let mut r = CreatePartitionsTopicResult::default().with_name(t.name);
        let outcome = match ctx.allowed(Operation::Alter, ResourceType::Topic, &name) {
            false => Err(denied(ErrorCode::TopicAuthorizationFailed)),
            true => {
                let (count, validate_only) = (t.count, req.validate_only);
                controller::create_partitions(
                    ctx.shard,
                    name.clone(),
                    count,
                    assignments,
                    validate_only,
                )
                .await
            }
        };
        if let Err((_, message)) = &outcome {
            tracing::info!(topic = %name, %message, "CreatePartitions refused");
        }
        (r.error_code, r.error_message) = error_fields(outcome);
        results.push(r);
    }
    ctx.respond(&CreatePartitionsResponse::default().with_results(results))
}

pub async fn elect_leaders(ctx: &Ctx<'_>, body: Bytes) -> Result<Reply, HandlerError> {
    use elect_leaders_response::{PartitionResult, ReplicaElectionResult};
    let req: ElectLeadersRequest = ctx.decode(body)?;
    let v = ctx.version();
    // v0 knows only preferred elections: 0 preferred, 1 unclean.
    let election = if v >= 1 { req.election_type } else { 0 };
    if !(0..=1).contains(&election) {
        return ctx.respond(
            &ElectLeadersResponse::default().with_error_code(ErrorCode::InvalidRequest.code()),
        );
    }
    let wanted: Option<Vec<(String, i32)>> = req.topic_partitions.map(|tps| {
        tps.into_iter()
            .flat_map(|tp| {
                let name = tp.topic.0.to_string();
                tp.partitions.into_iter().map(move |p| (name.clone(), p))
            })
            .collect()
    });
    // Refused: each partition asked for says so (v0 has no other place).
    let refused = !ctx.cluster_allowed(Operation::Alter);
    let outcomes = match refused {
        true => (wanted.unwrap_or_default().into_iter())
            .map(|(t, p)| (t, p, Err(denied(ErrorCode::ClusterAuthorizationFailed))))
            .collect(),
        false => controller::elect_leaders(ctx.shard, election == 1, wanted).await,
    };
    let results = by_topic(outcomes)
        .into_iter()
        .map(|(topic, partitions)| {
            let partitions = partitions.into_iter().map(|(partition, outcome)| {
                let mut r = PartitionResult::default().with_partition_id(partition);
                (r.error_code, r.error_message) = error_fields(outcome);
                r
            });
            ReplicaElectionResult::default()
                .with_topic(TopicName(s(topic)))
                .with_partition_result(partitions.collect())
        })
        .collect();
    let mut resp = ElectLeadersResponse::default().with_replica_election_results(results);
    if refused {
        resp.error_code = ErrorCode::ClusterAuthorizationFailed.code();
    }
    ctx.respond(&resp)
}

pub async fn alter_partition_reassignments(
    ctx: &Ctx<'_>,
    body: Bytes,
) -> Result<Reply, HandlerError> {
    use alter_partition_reassignments_response::{
        ReassignablePartitionResponse, ReassignableTopicResponse,
    };
    let req: AlterPartitionReassignmentsRequest = ctx.decode(body)?;
    if !ctx.cluster_allowed(Operation::Alter) {
        return ctx.respond(
            &AlterPartitionReassignmentsResponse::default()
                .with_error_code(ErrorCode::ClusterAuthorizationFailed.code())
                .with_error_message(Some(s("Authorization failed."))),
        );
    }
    // v0 has no say: a move may change the replica count.
    let allow_rf_change = ctx.version() == 0 || req.allow_replication_factor_change;
    let moves = req
        .topics
        .into_iter()
        .flat_map(|t| {
            let name = t.name.0.to_string();
            t.partitions.into_iter().map(move |p| {
                let target = p.replicas.map(|r| r.into_iter().map(|b| b.0).collect());
                (name.clone(), p.partition_index, target)
            })
        })
        .collect();
    let outcomes = controller::reassign_partitions(ctx.shard, moves, allow_rf_change).await;
    let responses = by_topic(outcomes)
        .into_iter()
        .map(|(topic, partitions)| {
            let partitions = partitions.into_iter().map(|(partition, outcome)| {
                if let Err((_, message)) = &outcome {
                    tracing::info!(%topic, partition, %message, "reassignment refused");
                }
                let mut r =
                    ReassignablePartitionResponse::default().with_partition_index(partition);
                (r.error_code, r.error_message) = error_fields(outcome);
                r
            });
            ReassignableTopicResponse::default()
                .with_partitions(partitions.collect())
                .with_name(TopicName(s(topic)))
        })
        .collect();
    ctx.respond(
        &AlterPartitionReassignmentsResponse::default()
            .with_allow_replication_factor_change(allow_rf_change)
            .with_responses(responses),
    )
}

/// The running reassignments: of every partition, or of those named.
pub fn list_partition_reassignments(ctx: &Ctx<'_>, body: Bytes) -> Result<Reply, HandlerError> {
    use list_partition_reassignments_response::{
        OngoingPartitionReassignment, OngoingTopicReassignment,
    };
    let req: ListPartitionReassignmentsRequest = ctx.decode(body)?;
    if !ctx.cluster_allowed(Operation::Describe) {
        return ctx.respond(
            &ListPartitionReassignmentsResponse::default()
                .with_error_code(ErrorCode::ClusterAuthorizationFailed.code())
                .with_error_message(Some(s("Authorization failed."))),
        );
    }
    let snapshot = ctx.shard.metadata();
    let wanted: Vec<(String, Option<Vec<i32>>)> = match req.topics {
        None => snapshot.topics.keys().map(|n| (n.clone(), None)).collect(),
        Some(topics) => topics
            .into_iter()
            .map(|t| (t.name.0.to_string(), Some(t.partition_indexes)))
            .collect(),
    };
    let ids = |v: &[crate::replication::NodeId]| v.iter().map(|n| BrokerId(n.0)).collect();
    let mut topics = Vec::new();
    for (name, indexes) in wanted {
        let Some(topic) = snapshot.topic(&name) else {
            continue;
        };
        let indexes = indexes.unwrap_or_else(|| (0..topic.partitions).collect());
        let partitions: Vec<OngoingPartitionReassignment> = indexes
            .into_iter()
            .filter_map(|i| topic.partition(i).map(|p| (i, p)))
            .filter(|(_, p)| p.reassigning())
            .map(|(i, p)| {
                OngoingPartitionReassignment::default()
                    .with_partition_index(i)
                    .with_replicas(ids(&p.replicas))
                    .with_adding_replicas(ids(&p.adding))
                    .with_removing_replicas(ids(&p.removing))
            })
            .collect();
        if !partitions.is_empty() {
            topics.push(
                OngoingTopicReassignment::default()
                    .with_name(TopicName(s(name)))
                    .with_partitions(partitions),
            );
        }
    }
    ctx.respond(&ListPartitionReassignmentsResponse::default().with_topics(topics))
}

pub async fn describe_log_dirs(ctx: &Ctx<'_>, body: Bytes) -> Result<Reply, HandlerError> {
    use sluice_protocol::describe_log_dirs as v5;
    let at_v5 = ctx.version() >= v5::CORDONED_VERSION;
    let wanted: Option<Vec<(String, Vec<i32>)>> = if at_v5 {
        ctx.decoded(v5::DescribeLogDirsRequest::decode(&body))?
            .topics
    } else {
        let req: DescribeLogDirsRequest = ctx.decode(body)?;
        req.topics.map(|ts| {
            ts.into_iter()
                .map(|t| (t.topic.0.to_string(), t.partitions))
                .collect()
        })
    };
    if !ctx.cluster_allowed(Operation::Describe) {
        let code = ErrorCode::ClusterAuthorizationFailed.code();
        if at_v5 {
            let resp = v5::DescribeLogDirsResponse {
                error_code: code,
                ..Default::default()
            };
            return Ok(ctx.respond_encoded(&resp.encode()));
        }
        return ctx.respond(&DescribeLogDirsResponse::default().with_error_code(code));
    }
    let dir = log_dir(ctx, wanted).await;
    if at_v5 {
        // Sluice has one data directory and never cordons it (KIP-1066's
        // `log.dirs.cordoned` is not a setting here), so it is always
        // open to new partitions.
        let result = v5::LogDirResult {
            error_code: 0,
            log_dir: dir.path,
            topics: dir
                .topics
                .into_iter()
                .map(|(name, partitions)| v5::LogDirTopic {
                    name,
                    partitions: partitions
                        .into_iter()
                        .map(|(index, size, lag)| v5::LogDirPartition {
                            partition_index: index,
                            partition_size: size,
                            offset_lag: lag,
                            is_future_key: false,
                        })
                        .collect(),
                })
                .collect(),
            total_bytes: dir.total_bytes,
            usable_bytes: dir.usable_bytes,
            is_cordoned: false,
        };
        let resp = v5::DescribeLogDirsResponse {
            results: vec![result],
            ..Default::default()
        };
        return Ok(ctx.respond_encoded(&resp.encode()));
    }
    use describe_log_dirs_response::{
        DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
    };
    let topics = dir
        .topics
        .into_iter()
        .map(|(name, partitions)| {
            DescribeLogDirsTopic::default()
                .with_name(TopicName(s(name)))
                .with_partitions(
                    partitions
                        .into_iter()
                        .map(|(index, size, lag)| {
                            DescribeLogDirsPartition::default()
                                .with_partition_index(index)
                                .with_partition_size(size)
                                .with_offset_lag(lag)
                        })
                        .collect(),
                )
        })
        .collect();
    let result = DescribeLogDirsResult::default()
        .with_log_dir(s(dir.path))
        .with_topics(topics)
        .with_total_bytes(dir.total_bytes)
        .with_usable_bytes(dir.usable_bytes);
    ctx.respond(&DescribeLogDirsResponse::default().with_results(vec![result]))
}

/// A replica as DescribeLogDirs reports it: (partition, size in bytes,
/// offset lag).
type Replica = (i32, i64, i64);

/// The data directory as DescribeLogDirs reports it.
struct LogDir {
    /// Its absolute path.
    path: String,
    /// Per topic, sorted, its replicas here.
    topics: Vec<(String, Vec<Replica>)>,
    /// The file system's size and free space, -1 when unknown.
    total_bytes: i64,
    usable_bytes: i64,
}

/// Every replica this broker holds (or those of `wanted`), from the
/// shard that owns it, and the directory's file system.
async fn log_dir(ctx: &Ctx<'_>, wanted: Option<Vec<(String, Vec<i32>)>>) -> LogDir {
    let wanted: Option<std::collections::BTreeSet<(String, i32)>> = wanted.map(|ts| {
        ts.into_iter()
            .flat_map(|(t, ps)| ps.into_iter().map(move |p| (t.clone(), p)))
            .collect()
    });
    let mut held: Vec<(String, i32, u64, i64)> = Vec::new();
    for target in 0..ctx.shard.count {
        let on_shard = ctx
            .shard
            .invoke_on(target, |s| async move {
                s.partitions()
                    .iter()
                    .map(|p| {
                        let (size, lag) = p.log_size_and_lag();
                        (p.topic.clone(), p.index, size, lag)
                    })
                    .collect::<Vec<_>>()
            })
            .await
            .unwrap_or_default();
        held.extend(on_shard);
    }
    held.sort();
    let mut topics: Vec<(String, Vec<Replica>)> = Vec::new();
    for (topic, index, size, lag) in held {
        if wanted
            .as_ref()
            .is_some_and(|w| !w.contains(&(topic.clone(), index)))
        {
            continue;
        }
        let p = (index, size as i64, lag);
        match topics.last_mut() {
            Some((t, partitions)) if *t == topic => partitions.push(p),
            _ => topics.push((topic, vec![p])),
        }
    }
    let dir = ctx.shard.broker.data_dir();
    let path = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let (total_bytes, usable_bytes) = crate::storage::reserve::disk_space(&path)
        .map_or((-1, -1), |(total, usable)| (total as i64, usable as i64));
    LogDir {
        path: path.display().to_string(),
        topics,
        total_bytes,
        usable_bytes,
    }
}

pub async fn delete_topics(ctx: &Ctx<'_>, body: Bytes) -> Result<Reply, HandlerError> {
    let req: DeleteTopicsRequest = ctx.decode(body)?;
    let v = ctx.version();
    let snapshot = ctx.shard.metadata();
    let mut wanted: Vec<(Option<String>, uuid::Uuid)> = req
        .topic_names
        .iter()
        .map(|n| (Some(n.0.to_string()), uuid::Uuid::nil()))
        .collect();
    wanted.extend(
        req.topics
            .iter()
            .map(|t| (t.name.as_ref().map(|n| n.0.to_string()), t.topic_id)),
    );
    let mut results = Vec::new();
    for (name, id) in wanted {
        // v6 names a topic by name or by id, never both (as Kafka).
        let both = name.is_some() && !id.is_nil();
        let name = name.or_else(|| snapshot.topic_by_id(id).map(|t| t.name.clone()));
        let mut r =
            DeletableTopicResult::default().with_name(name.clone().map(|n| TopicName(s(n))));
        if v >= 6 {
            // The answer carries the topic's id, also when named by name.
            let known = name
                .as_deref()
                .and_then(|n| snapshot.topic(n))
                .map(|t| t.id);
            r.topic_id = if id.is_nil() { known.unwrap_or(id) } else { id };
        }
        let outcome = match name {
            _ if both => Err((
                ErrorCode::InvalidRequest,
                "a topic may be named by name or by id, not both".to_string(),
            )),
            None => Err((ErrorCode::UnknownTopicId, "unknown topic id".to_string())),
            Some(n) if !ctx.allowed(Operation::Delete, ResourceType::Topic, &n) => {
                Err(denied(ErrorCode::TopicAuthorizationFailed))
            }
            Some(n) if crate::metadata::is_internal(&n) => Err((
                ErrorCode::InvalidTopicException,
                format!("Topic {n} is internal and cannot be deleted"),
            )),
            Some(_) if ctx.shard.broker.config.get("delete.topic.enable") != Some("true") => Err((
                ErrorCode::PolicyViolation,
                "delete.topic.enable is false".to_string(),
            )),
            Some(n) => controller::delete_topic(ctx.shard, n).await,
        };
        if let Err((code, message)) = outcome {
            r.error_code = code.code();
            if v >= 5 {
                r.error_message = Some(s(message));
            }
        }
        results.push(r);
    }
    ctx.respond(&DeleteTopicsResponse::default().with_responses(results))
}

pub fn describe_configs(ctx: &Ctx<'_>, body: Bytes) -> Result<Reply, HandlerError> {
    let req: DescribeConfigsRequest = ctx.decode(body)?;
    let v = ctx.version();
    let config = &ctx.shard.broker.config;
    let snapshot = ctx.shard.metadata();
    let mut results = Vec::new();
    for res in req.resources {
        let keys: Option<Vec<String>> = res
            .configuration_keys
            .as_ref()
            .map(|k| k.iter().map(|x| x.to_string()).collect());
        let wanted = |k: &str| keys.as_ref().is_none_or(|ks| ks.iter().any(|x| x == k));
        let mut result = DescribeConfigsResult::default()
            .with_resource_type(res.resource_type)
            .with_resource_name(res.resource_name.clone());
        let mut entries = Vec::new();
        let name = res.resource_name.as_str();
        if let Err(e) = config_access(ctx, res.resource_type, name, Operation::DescribeConfigs) {
            (result.error_code, result.error_message) = error_fields(Err(e));
            results.push(result);
            continue;
        }
        match res.resource_type {
            RESOURCE_TOPIC => match snapshot.topic(res.resource_name.as_str()) {
                Some(t) => {
                    for (k, (val, src)) in &t.config.values {
                        if !wanted(k) {
                            continue;
                        }
                        let key = find_topic_key(k).expect("topic config keys are known");
                        let mut e = entry(v, k, val, *src, key.kind);
                        if req.include_synonyms && v >= 1 {
                            e.synonyms = topic_synonyms(config, k, val, *src);
                        }
                        entries.push(e);
                    }
                }
                None => result.error_code = ErrorCode::UnknownTopicOrPartition.code(),
            },
            RESOURCE_BROKER => {
                let node = config.node_id.to_string();
                if res.resource_name.is_empty() {
                    // The cluster-wide dynamic defaults: Sluice has none
                    // (its broker configs are static), so none is listed,
                    // as Kafka lists none where none is set.
                } else if res.resource_name.as_str() != node {
                    result.error_code = ErrorCode::InvalidRequest.code();
                    result.error_message = Some(s(format!("this broker is node {node}")));
                } else {
                    for (k, val, src) in config.broker_entries() {
                        if wanted(k) {
                            let kind = KEYS
                                .iter()
                                .find(|x| x.broker == Some(k))
                                .map_or(Kind::Text, |x| x.kind);
                            let mut e = entry(v, k, val, src, kind);
                            // Broker configs are static: AlterConfigs
                            // refuses them (see `alter`).
                            e.read_only = true;
                            if req.include_synonyms && v >= 1 {
                                e.synonyms = broker_synonyms(k, val, src);
                            }
                            entries.push(e);
                        }
                    }
                }
            }
            other => {
                result.error_code = ErrorCode::InvalidRequest.code();
                result.error_message = Some(s(format!("unsupported resource type {other}")));
            }
        }
        results.push(result.with_configs(entries));
    }
    ctx.respond(&DescribeConfigsResponse::default().with_results(results))
}

/// AlterConfigs (`replace`: the given configs become the topic's only
/// overrides) and IncrementalAlterConfigs for one resource. Topics only:
/// broker configs are static, so a broker has no dynamic override to
/// change. Deleting overrides of a broker (its node id, or "" for the
/// cluster default) succeeds with nothing to do, as Kafka answers the
/// deletion of an override that is not set; tools clear keys that way
/// (kafka-reassign-partitions `--verify` its replication throttles).
async fn alter(
    ctx: &Ctx<'_>,
    resource_type: i8,
    name: &str,
    ops: Vec<ConfigOp>,
    replace: bool,
    validate_only: bool,
) -> Result<(), controller::TopicError> {
    config_access(ctx, resource_type, name, Operation::AlterConfigs)?;
    let ops = refuse_duplicate_keys(ops)?;
    match resource_type {
        RESOURCE_TOPIC => {
            let outcome = controller::alter_topic_config(
                ctx.shard,
                name.to_string(),
                ops,
                replace,
                validate_only,
            )
            .await;
            if let Err((_, message)) = &outcome {
                tracing::info!(topic = %name, %message, "config change refused");
            }
            outcome
        }
        RESOURCE_BROKER if !replace && ops.iter().all(|o| o.op == OpKind::Delete) => {
            let node = ctx.shard.broker.config.node_id.to_string();
            if name.is_empty() || name == node {
                Ok(())
            } else {
                Err((
                    ErrorCode::InvalidRequest,
                    format!("this broker is node {node}, not {name}"),
                ))
            }
        }
        RESOURCE_BROKER | RESOURCE_BROKER_LOGGER => Err((
            ErrorCode::InvalidRequest,
            "Broker configs are static: set them in the config file or with --override and restart the broker."
                .into(),
        )),
        other => Err((
            ErrorCode::InvalidRequest,
            format!("unsupported resource type {other}"),
        )),
    }
}

/// A key named twice for one resource is refused (INVALID_REQUEST), as
/// Kafka does, rather than the last one winning.
fn refuse_duplicate_keys(ops: Vec<ConfigOp>) -> Result<Vec<ConfigOp>, controller::TopicError> {
    for (i, op) in ops.iter().enumerate() {
        if ops[..i].iter().any(|o| o.name == op.name) {
            return Err((
                ErrorCode::InvalidRequest,
                format!("Error due to duplicate config keys: {}", op.name),
            ));
        }
    }
    Ok(ops)
}

pub async fn alter_configs(ctx: &Ctx<'_>, body: Bytes) -> Result<Reply, HandlerError> {
    let req: AlterConfigsRequest = ctx.decode(body)?;
    let mut responses = Vec::new();
    for res in req.resources {
        // A null value leaves the key at its default, like no entry.
        let ops = res
            .configs
            .iter()
            .filter_map(|c| {
                c.value.as_ref().map(|v| ConfigOp {
                    name: c.name.to_string(),
                    op: OpKind::Set,
                    value: Some(v.to_string()),
                })
            })
            .collect();
        let outcome = alter(
            ctx,
            res.resource_type,
            res.resource_name.as_str(),
            ops,
            true,
            req.validate_only,
        )
        .await;
        let mut r = alter_configs_response::AlterConfigsResourceResponse::default()
            .with_resource_type(res.resource_type)
            .with_resource_name(res.resource_name);
        (r.error_code, r.error_message) = error_fields(outcome);
        responses.push(r);
    }
    ctx.respond(&AlterConfigsResponse::default().with_responses(responses))
}

pub async fn incremental_alter_configs(ctx: &Ctx<'_>, body: Bytes) -> Result<Reply, HandlerError> {
    let req: IncrementalAlterConfigsRequest = ctx.decode(body)?;
    let mut responses = Vec::new();
    for res in req.resources {
        let ops: Result<Vec<ConfigOp>, controller::TopicError> = res
            .configs
            .iter()
            .map(|c| {
                let op = match c.config_operation {
                    0 => OpKind::Set,
                    1 => OpKind::Delete,
                    2 => OpKind::Append,
                    3 => OpKind::Subtract,
                    other => {
                        return Err((
                            ErrorCode::InvalidRequest,
                            format!("unknown config operation {other}"),
                        ))
                    }
                };
                Ok(ConfigOp {
                    name: c.name.to_string(),
                    op,
                    value: c.value.as_ref().map(|v| v.to_string()),
                })
            })
            .collect();
        let outcome = match ops {
            Ok(ops) => {
                alter(
                    ctx,
                    res.resource_type,
                    res.resource_name.as_str(),
                    ops,
                    false,
                    req.validate_only,
                )
                .await
            }
            Err(e) => Err(e),
        };
        let mut r = incremental_alter_configs_response::AlterConfigsResourceResponse::default()
            .with_resource_type(res.resource_type)
            .with_resource_name(res.resource_name);
        (r.error_code, r.error_message) = error_fields(outcome);
        responses.push(r);
    }
    ctx.respond(&IncrementalAlterConfigsResponse::default().with_responses(responses))
}

fn entry(
    v: i16,
    name: &str,
    value: &str,
    src: Source,
    kind: Kind,
) -> DescribeConfigsResourceResult {
    let mut e = DescribeConfigsResourceResult::default()
        .with_name(s(name))
        .with_value(Some(s(value)))
        .with_config_source(source_code(src));
    if crate::config::is_sensitive(name) {
        // A secret is named, never shown.
        e.value = None;
        e.is_sensitive = true;
    }
    if v >= 3 {
        e.config_type = type_code(name, kind);
        // Sluice has no documentation text for its keys: null, as Kafka
        // sends when documentation was not asked for.
        e.documentation = None;
    }
    e
}

fn synonym(name: &str, value: &str, src: Source) -> DescribeConfigsSynonym {
    DescribeConfigsSynonym::default()
        .with_name(s(name))
        .with_value((!crate::config::is_sensitive(name)).then(|| s(value)))
        .with_source(source_code(src))
}

/// A broker key's synonyms, most specific first, as Kafka lists them: the
/// static setting if any, then the default. Keys Kafka leaves unset by
/// default ([`KAFKA_UNSET_DEFAULTS`]) have no default synonym.
fn broker_synonyms(key: &str, value: &str, src: Source) -> Vec<DescribeConfigsSynonym> {
    let mut out = Vec::new();
    if src != Source::Default {
        out.push(synonym(key, value, src));
    }
    if !KAFKA_UNSET_DEFAULTS.contains(&key) {
        if let Some(k) = KEYS.iter().find(|x| x.broker == Some(key)) {
            out.push(synonym(key, k.default, Source::Default));
        }
    }
    out
}

/// A topic key's synonyms: the topic's own override if any, then those
/// of the broker key that sets its default.
fn topic_synonyms(
    config: &crate::config::BrokerConfig,
    topic_key: &str,
    value: &str,
    src: Source,
) -> Vec<DescribeConfigsSynonym> {
    let mut out = Vec::new();
    if src == Source::Topic {
        out.push(synonym(topic_key, value, src));
    }
    if let Some(b) = find_topic_key(topic_key).and_then(|k| k.broker) {
        if let Some((_, bv, bsrc)) = config.broker_entries().find(|(k, _, _)| *k == b) {
            out.extend(broker_synonyms(b, bv, bsrc));
        }
    }
    out
}

pub fn describe_cluster(ctx: &Ctx<'_>, body: Bytes) -> Result<Reply, HandlerError> {
    let req: DescribeClusterRequest = ctx.decode(body)?;
    if !ctx.cluster_allowed(Operation::Describe) {
        let resp = DescribeClusterResponse::default()
            .with_error_code(ErrorCode::ClusterAuthorizationFailed.code())
            .with_error_message(Some(s("Authorization failed.")));
        return ctx.respond(&resp);
    }
    // v1's endpoint type (KIP-919): 1 asks for brokers, 2 for controllers,
    // whose quorum Sluice's brokers do not expose as a listener of its own.
    let refusal = match req.endpoint_type {
        ENDPOINT_TYPE_BROKERS => None,
        ENDPOINT_TYPE_CONTROLLERS => Some((
            ErrorCode::MismatchedEndpointType,
            "this is a broker endpoint; controllers were asked for".to_string(),
        )),
        other => Some((
            ErrorCode::UnsupportedEndpointType,
            format!("unknown endpoint type {other}"),
        )),
    };
    if let Some((code, message)) = refusal {
        let code = match ctx.version() {
            0 => ErrorCode::InvalidRequest,
            _ => code,
        };
        let resp = DescribeClusterResponse::default()
            .with_error_code(code.code())
            .with_error_message(Some(s(message)));
        return ctx.respond(&resp);
    }
    let snapshot = ctx.shard.metadata();
    // v2 may ask for fenced brokers too, marked as such (KIP-1073).
    let brokers = snapshot
        .brokers
        .iter()
        .filter(|(_, b)| !b.fenced || req.include_fenced_brokers)
        .filter_map(|(&id, b)| {
            let (host, port) = b.endpoint(&ctx.client.listener)?;
            let broker = DescribeClusterBroker::default()
                .with_broker_id(BrokerId(id))
                .with_host(s(host.to_string()))
                .with_port(i32::from(port));
            Some(match ctx.version() >= 2 {
                true => broker.with_is_fenced(b.fenced),
                false => broker,
            })
        })
        .collect();
    let controller = ctx
        .shard
        .broker
        .controller_id
        .load(std::sync::atomic::Ordering::Relaxed);
    let mut resp = DescribeClusterResponse::default()
        .with_cluster_id(s(ctx.shard.metadata().cluster_id.clone()))
        .with_controller_id(BrokerId(controller))
        .with_brokers(brokers);
    if req.include_cluster_authorized_operations {
        resp.cluster_authorized_operations =
            ctx.authorized_operations(ResourceType::Cluster, crate::security::acl::CLUSTER_NAME);
    }
    if ctx.version() >= 1 {
        resp.endpoint_type = ENDPOINT_TYPE_BROKERS;
    }
    ctx.respond(&resp)
}

/// DescribeCluster's endpoint types (KIP-919).
const ENDPOINT_TYPE_BROKERS: i8 = 1;
const ENDPOINT_TYPE_CONTROLLERS: i8 = 2;

/// InitProducerId for idempotent producers: always a new producer id at
/// epoch 0, also for a producer that names its current id and epoch to
/// have it bumped (KIP-360), as Kafka answers without a transactional id;
/// the new id starts a new sequence, which is all the bump is for.
/// Transactions are not supported.
pub async fn init_producer_id(ctx: &Ctx<'_>, body: Bytes) -> Result<Reply, HandlerError> {
    let req: InitProducerIdRequest = ctx.decode(body)?;
    let mut resp = InitProducerIdResponse::default();
    let refused = match req.transactional_id.as_deref() {
        Some(id) => !ctx.allowed(Operation::Write, ResourceType::TransactionalId, id),
        // KIP-679: IDEMPOTENT_WRITE on the cluster, or WRITE on any topic.
        None => {
            !ctx.cluster_allowed(Operation::IdempotentWrite)
                && !ctx.allowed_on_any(Operation::Write, ResourceType::Topic)
        }
    };
    if refused {
        resp.error_code = match req.transactional_id {
            Some(_) => ErrorCode::TransactionalIdAuthorizationFailed.code(),
            None => ErrorCode::ClusterAuthorizationFailed.code(),
        };
        resp.producer_id = ProducerId(-1);
        resp.producer_epoch = -1;
        return ctx.respond(&resp);
    }
    if let Some(id) = req.transactional_id.as_ref() {
        let id = id.to_string();
        return super::txn::init_producer_id(ctx, &req, id).await;
    }
    match controller::producer_id(ctx.shard).await {
        Ok(id) => {
            resp.producer_id = ProducerId(id);
            resp.producer_epoch = 0;
        }
        Err((code, message)) => {
            tracing::warn!(?code, %message, "no producer id");
            resp.error_code = code.code();
            resp.producer_id = ProducerId(-1);
            resp.producer_epoch = -1;
        }
    }
    ctx.respond(&resp)
}

/// The metadata log's name and partition, which DescribeQuorum asks about.
const METADATA_TOPIC: &str = "__cluster_metadata";

/// DescribeQuorum: the metadata log's leader, term (its leader epoch),
/// high watermark, each voter's progress and the observers, from the
/// active controller. Kafka's answer to a request for any other topic or
/// partition is UNKNOWN_TOPIC_OR_PARTITION for the whole request.
pub async fn describe_quorum(ctx: &Ctx<'_>, body: Bytes) -> Result<Reply, HandlerError> {
    use describe_quorum_response::{Listener, Node, PartitionData, ReplicaState, TopicData};
    let req: DescribeQuorumRequest = ctx.decode(body)?;
    let v = ctx.version();
    if !ctx.cluster_allowed(Operation::Describe) {
        let code = ErrorCode::ClusterAuthorizationFailed.code();
        return ctx.respond(&DescribeQuorumResponse::default().with_error_code(code));
    }
    let asks_for_the_log = matches!(
        req.topics.as_slice(),
        [t] if t.topic_name.0.as_str() == METADATA_TOPIC
            && matches!(t.partitions.as_slice(), [p] if p.partition_index == 0)
    );
    if !asks_for_the_log {
        return ctx.respond(
            &DescribeQuorumResponse::default()
                .with_error_code(ErrorCode::UnknownTopicOrPartition.code()),
        );
    }
    let mut partition = PartitionData::default()
        .with_partition_index(0)
        .with_leader_id(BrokerId(-1))
        .with_leader_epoch(-1)
        .with_high_watermark(-1);
    let mut nodes = Vec::new();
    match controller::describe_quorum(ctx.shard).await {
        Ok(q) => {
            let replica = |r: &crate::cluster::quorum::ReplicaProgress| {
                ReplicaState::default()
                    .with_replica_id(BrokerId(r.id))
                    .with_log_end_offset(r.log_end_offset)
                    .with_last_fetch_timestamp(r.last_fetch_ms)
                    .with_last_caught_up_timestamp(r.last_caught_up_ms)
            };
            partition.leader_id = BrokerId(q.state.leader);
            partition.leader_epoch = i32::try_from(q.state.term).unwrap_or(i32::MAX);
            partition.high_watermark = q.state.high_watermark;
            partition.current_voters = q.state.voters.iter().map(replica).collect();
            partition.observers = q.observers.iter().map(replica).collect();
            nodes = q
                .voter_addrs
                .iter()
                .map(|(id, addr)| {
                    Node::default()
                        .with_node_id(BrokerId(*id))
                        .with_listeners(vec![Listener::default()
                            .with_name(s("CONTROLLER"))
                            .with_host(s(addr.ip().to_string()))
                            .with_port(addr.port())])
                })
                .collect();
        }
        Err((code, message)) => {
            partition.error_code = code.code();
            if v >= 2 {
                partition.error_message = Some(s(message));
            }
        }
    }
    let mut resp = DescribeQuorumResponse::default().with_topics(vec![TopicData::default()
        .with_topic_name(TopicName(s(METADATA_TOPIC)))
        .with_partitions(vec![partition])]);
    if v >= 2 {
        resp.nodes = nodes;
    }
    ctx.respond(&resp)
}
