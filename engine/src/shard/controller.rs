//! Topic changes. Any shard validates what it can and hands the change to
//! shard 0, which asks the active controller (see [`crate::cluster`]) and
//! answers once the change is committed to the metadata log and every
//! shard of this broker has installed the snapshot that holds it.

use super::Shard;
use crate::cluster::rpc::{ConfigOp, Request};
use crate::metadata::{self, TopicMeta};
use crate::replication::NodeId;
use sluice_protocol::ErrorCode;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

/// The shard that talks to the controller.
pub const CONTROLLER: super::ShardId = 0;

/// A refused topic change: the error code and a message for the client.
pub type TopicError = (ErrorCode, String);

/// What a CreateTopics entry asks for.
#[derive(Debug, Clone)]
pub struct NewTopic {
    pub name: String,
    pub partitions: i32,
    pub replication_factor: i16,
    pub overrides: BTreeMap<String, String>,
    /// Each partition's replicas, in partition order, when the request
    /// names them; `partitions` and `replication_factor` are then -1.
    pub assignments: Option<Vec<Vec<i32>>>,
}

/// Checks a topic creation without making it; the result carries the
/// new topic's id and effective config (its replicas are placed by the
/// controller).
pub fn validate(shard: &Shard, t: &NewTopic) -> Result<TopicMeta, TopicError> {
    metadata::validate_topic_name(&t.name).map_err(|m| (ErrorCode::InvalidTopicException, m))?;
    let snapshot = shard.metadata();
    if snapshot.topic(&t.name).is_some() {
        return Err((
            ErrorCode::TopicAlreadyExists,
            format!("Topic '{}' already exists.", t.name),
        ));
    }
    if let Some(assignments) = &t.assignments {
        return validate_assigned(shard, t, assignments);
    }
    let partitions = if t.partitions == -1 {
        shard.broker.config.num_partitions()
    } else {
        t.partitions
    };
    check_partition_count(partitions)?;
    if t.replication_factor == 0 || t.replication_factor < -1 {
        return Err((
            ErrorCode::InvalidReplicationFactor,
            "Replication factor must be larger than 0.".into(),
        ));
    }
    let rf = replication_factor(shard, t);
    let live = snapshot.live_brokers().count();
    if usize::try_from(rf).unwrap_or(0) > live {
        return Err((
            ErrorCode::InvalidReplicationFactor,
            format!("Replication factor: {rf} larger than available brokers: {live}."),
        ));
    }
    new_meta(shard, t, partitions)
}

/// [`validate`] for a topic whose replicas the request names: as Kafka,
/// the partition count and replication factor must then be left at -1,
/// and the assignment is checked against the registered brokers (the
/// controller checks again against its own image).
fn validate_assigned(
    shard: &Shard,
    t: &NewTopic,
    assignments: &[Vec<i32>],
) -> Result<TopicMeta, TopicError> {
    if t.partitions != -1 || t.replication_factor != -1 {
        return Err((
            ErrorCode::InvalidRequest,
            "A manual partition assignment was specified, but the partition count \
             and replication factor were not left at -1."
                .into(),
        ));
    }
    let partitions = i32::try_from(assignments.len()).unwrap_or(i32::MAX);
    check_partition_count(partitions)?;
    let snapshot = shard.metadata();
    crate::cluster::controller::check_assignment(assignments, |b| {
        snapshot.brokers.contains_key(&b)
    })?;
    new_meta(shard, t, partitions)
}

fn new_meta(shard: &Shard, t: &NewTopic, partitions: i32) -> Result<TopicMeta, TopicError> {
    let config = shard
        .broker
        .config
        .topic_config(&t.overrides)
        .map_err(|e| (ErrorCode::InvalidConfig, e.to_string()))?;
    Ok(TopicMeta {
        name: t.name.clone(),
        id: uuid::Uuid::new_v4(),
        partitions,
        overrides: t.overrides.clone(),
        config: Arc::new(config),
        replicas: Vec::new(),
    })
}

fn replication_factor(shard: &Shard, t: &NewTopic) -> i16 {
    if t.replication_factor == -1 {
        shard
            .broker
            .config
            .get("default.replication.factor")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1)
    } else {
        t.replication_factor
    }
}

/// Creates a topic; call on any shard.
pub async fn create_topic(shard: &Rc<Shard>, t: NewTopic) -> Result<Arc<TopicMeta>, TopicError> {
    let meta = validate(shard, &t)?;
    let req = Request::CreateTopic {
        name: meta.name.clone(),
        id: meta.id.to_string(),
        partitions: meta.partitions,
        replication_factor: replication_factor(shard, &t),
        config: meta.overrides.clone(),
        assignments: t.assignments.clone(),
    };
    change(shard, req).await?;
    tracing::info!(topic = %meta.name, partitions = meta.partitions, "created topic");
    shard.metadata().topic(&t.name).cloned().ok_or_else(|| {
        (
            ErrorCode::LeaderNotAvailable,
            format!("Topic '{}' was deleted again.", t.name),
        )
    })
}

/// Grows a topic to `count` partitions (placed by the controller, or as
/// `assignments` says for each new one); call on any shard.
pub async fn create_partitions(
    shard: &Rc<Shard>,
    name: String,
    count: i32,
    assignments: Option<Vec<Vec<i32>>>,
    validate_only: bool,
) -> Result<(), TopicError> {
    if crate::metadata::is_internal(&name) {
        // Every group's offsets partition is its id's hash modulo the count.
        return Err((
            ErrorCode::InvalidRequest,
            format!("The partition count of {name} cannot change."),
        ));
    }
    let req = Request::CreatePartitions {
        name: name.clone(),
        count,
        assignments,
        validate_only,
    };
    change(shard, req).await?;
    if !validate_only {
        tracing::info!(topic = %name, partitions = count, "added partitions");
    }
    Ok(())
}

/// Changes a topic's config overrides (see [`Request::AlterTopicConfig`]);
/// call on any shard.
pub async fn alter_topic_config(
    shard: &Rc<Shard>,
    name: String,
    ops: Vec<ConfigOp>,
    replace: bool,
    validate_only: bool,
) -> Result<(), TopicError> {
    let req = Request::AlterTopicConfig {
        name,
        ops,
        replace,
        validate_only,
    };
    change(shard, req).await.map(|_| ())
}

/// Most partitions a topic may have: a request for more (say
/// `i32::MAX`) would have every broker create that many directories.
pub const MAX_TOPIC_PARTITIONS: i32 = 100_000;

/// Refuses a partition count below 1 or above [`MAX_TOPIC_PARTITIONS`].
pub fn check_partition_count(count: i32) -> Result<(), TopicError> {
    if count <= 0 {
        return Err((
            ErrorCode::InvalidPartitions,
            "Number of partitions must be larger than 0.".into(),
        ));
    }
    if count > MAX_TOPIC_PARTITIONS {
        // A limit of the broker, not a malformed count: Kafka answers
        // POLICY_VIOLATION for an operation that would write too many
        // partitions at once.
        return Err((
            ErrorCode::PolicyViolation,
            format!(
                "A topic has at most {MAX_TOPIC_PARTITIONS} partitions; {count} were asked for."
            ),
        ));
    }
    Ok(())
}

/// One partition's election outcome: (topic, partition, outcome).
pub type Election = (String, i32, Result<(), TopicError>);

/// Leader elections (ElectLeaders) for `wanted` partitions, or for every
/// partition when `None` (then only those that needed one are reported):
/// the preferred replica, or with `unclean` any live replica of an
/// offline partition. Call on any shard.
pub async fn elect_leaders(
    shard: &Rc<Shard>,
    unclean: bool,
    wanted: Option<Vec<(String, i32)>>,
) -> Vec<Election> {
    use crate::replication::controller::ElectionRefusal;
    let snapshot = shard.metadata();
    let every = wanted.is_none();
    let wanted = wanted.unwrap_or_else(|| {
        snapshot
            .topics
            .values()
            .flat_map(|t| (0..t.partitions).map(|i| (t.name.clone(), i)))
            .collect()
    });
    let live: Vec<NodeId> = snapshot.live_brokers().map(|(id, _)| NodeId(id)).collect();
    let not_available = || -> TopicError {
        if unclean {
            (
                ErrorCode::EligibleLeadersNotAvailable,
                "No live replica can lead the partition.".into(),
            )
        } else {
            (
                ErrorCode::PreferredLeaderNotAvailable,
                "The preferred replica is not live and in sync.".into(),
            )
        }
    };
    let mut results = Vec::new();
    let mut ask = Vec::new();
    for (name, index) in wanted {
        let Some(state) = snapshot.topic(&name).and_then(|t| t.partition(index)) else {
            results.push((name.clone(), index, Err(no_such_partition(&name, index))));
            continue;
        };
        let elected = if unclean {
            state.elect_unclean(&live)
        } else {
            state.elect_preferred(&live)
        };
        match elected {
            Ok(_) => ask.push((name, index)),
            Err(ElectionRefusal::NotNeeded) if every => {}
            Err(ElectionRefusal::NotNeeded) => {
                let not_needed = (
                    ErrorCode::ElectionNotNeeded,
                    "Leader election not needed for topic partition.".into(),
                );
                results.push((name, index, Err(not_needed)));
            }
            Err(ElectionRefusal::NotAvailable) => results.push((name, index, Err(not_available()))),
        }
    }
    if ask.is_empty() {
        return results;
    }
    let req = Request::ElectLeaders {
        unclean,
        partitions: ask.clone(),
    };
    if let Err(e) = change(shard, req).await {
        results.extend(ask.into_iter().map(|(n, i)| (n, i, Err(e.clone()))));
        return results;
    }
    // What the controller committed is now on every shard.
    let snapshot = shard.metadata();
    for (name, index) in ask {
        let led = snapshot
            .topic(&name)
            .and_then(|t| t.partition(index))
            .is_some_and(|p| {
                if unclean {
                    p.leader.is_some()
                } else {
                    p.leader == p.replicas.first().copied()
                }
            });
        let outcome = if led { Ok(()) } else { Err(not_available()) };
        results.push((name, index, outcome));
    }
    results
}

/// One partition's move: (topic, partition, target replicas, or `None`
/// to cancel a running one).
pub type Move = (String, i32, Option<Vec<i32>>);

/// Starts partition reassignments (AlterPartitionReassignments); with
/// `allow_rf_change` false a target must keep the replica count. Answers
/// once the moves have started, not finished. Call on any shard.
pub async fn reassign_partitions(
    shard: &Rc<Shard>,
    moves: Vec<Move>,
    allow_rf_change: bool,
) -> Vec<(String, i32, Result<(), TopicError>)> {
    let snapshot = shard.metadata();
    let live: Vec<NodeId> = snapshot.live_brokers().map(|(id, _)| NodeId(id)).collect();
    let registered = |b: i32| snapshot.brokers.contains_key(&b);
    let mut results = Vec::new();
    let mut ask: Vec<Move> = Vec::new();
    let mut named = std::collections::HashSet::new();
    for (name, index, target) in moves {
        if !named.insert((name.clone(), index)) {
            let twice = (
                ErrorCode::InvalidRequest,
                format!("Partition {index} of topic '{name}' is named twice."),
            );
            results.push((name, index, Err(twice)));
            continue;
        }
        let Some(state) = snapshot.topic(&name).and_then(|t| t.partition(index)) else {
            results.push((name.clone(), index, Err(no_such_partition(&name, index))));
            continue;
        };
        let original = state.original().len();
        if let Some(t) = target
            .as_ref()
            .filter(|t| !allow_rf_change && t.len() != original)
        {
            let refused = (
                ErrorCode::InvalidReplicationFactor,
                format!(
                    "The replica list has {} replicas, the partition {original}, and the request does not allow a change.",
                    t.len()
                ),
            );
            results.push((name, index, Err(refused)));
            continue;
        }
        match crate::cluster::controller::reassignment(state, target.as_deref(), registered, &live)
        {
            Ok(_) => ask.push((name, index, target)),
            Err(e) => results.push((name, index, Err(e))),
        }
    }
    if ask.is_empty() {
        return results;
    }
    let req = Request::Reassign {
        partitions: ask.clone(),
    };
    if let Err(e) = change(shard, req).await {
        results.extend(ask.into_iter().map(|(n, i, _)| (n, i, Err(e.clone()))));
        return results;
    }
    // What the controller committed is now on every shard.
    let snapshot = shard.metadata();
    for (name, index, target) in ask {
        let state = snapshot.topic(&name).and_then(|t| t.partition(index));
        let started = state.is_some_and(|p| match &target {
            Some(t) => p.target().iter().map(|n| n.0).eq(t.iter().copied()),
            None => !p.reassigning(),
        });
        let outcome = if started {
            tracing::info!(topic = %name, partition = index, ?target, "reassignment started");
            Ok(())
        } else {
            Err((
                ErrorCode::InvalidReplicaAssignment,
                "The partition changed while the reassignment was being made; ask again.".into(),
            ))
        };
        results.push((name, index, outcome));
    }
    results
}

fn no_such_partition(name: &str, index: i32) -> TopicError {
    (
        ErrorCode::UnknownTopicOrPartition,
        format!("No partition {index} of topic '{name}'."),
    )
}

/// Deletes a topic; call on any shard.
pub async fn delete_topic(shard: &Rc<Shard>, name: String) -> Result<(), TopicError> {
    if shard.metadata().topic(&name).is_none() {
        return Err((
            ErrorCode::UnknownTopicOrPartition,
            format!("Topic '{name}' does not exist."),
        ));
    }
    change(shard, Request::DeleteTopic { name: name.clone() }).await?;
    tracing::info!(topic = %name, "deleted topic");
    Ok(())
}

/// A producer id unique in the cluster; call on any shard.
pub async fn producer_id(shard: &Rc<Shard>) -> Result<i64, TopicError> {
    shard
        .invoke_on(CONTROLLER, |c| async move {
            let node = c.cluster();
            node.producer_id(&c).await
        })
        .await
        .map_err(|e| (ErrorCode::UnknownServerError, e.to_string()))?
}

/// The metadata quorum, as DescribeQuorum reports it: the active
/// controller's view of its voters and observers, and each voter's
/// controller listener.
pub struct QuorumDescription {
    pub state: crate::cluster::quorum::QuorumState,
    pub observers: Vec<crate::cluster::quorum::ReplicaProgress>,
    pub voter_addrs: Vec<(i32, std::net::SocketAddr)>,
}

/// Asks the active controller how the quorum stands; call on any shard.
pub async fn describe_quorum(shard: &Rc<Shard>) -> Result<QuorumDescription, TopicError> {
    shard
        .invoke_on(CONTROLLER, |c| async move {
            let node = c.cluster();
            let (state, observers) = node.describe_quorum(&c).await?;
            let voter_addrs = state
                .voters
                .iter()
                .filter_map(|v| node.config.voter_addr(v.id).map(|a| (v.id, a)))
                // A broker that is its own cluster of one has no
                // controller listener (port 0): no endpoint to name.
                .filter(|(_, a)| a.port() != 0)
                .collect();
            Ok(QuorumDescription {
                state,
                observers,
                voter_addrs,
            })
        })
        .await
        .map_err(|e| (ErrorCode::UnknownServerError, e.to_string()))?
}

/// Sends a change to the controller from shard 0; returns once every
/// shard has it.
pub async fn change(shard: &Rc<Shard>, req: Request) -> Result<u64, TopicError> {
    shard
        .invoke_on(CONTROLLER, move |c| async move {
            let node = c.cluster();
            node.change(req, &c).await
        })
        .await
        .map_err(|e| (ErrorCode::UnknownServerError, e.to_string()))?
}

/// Tells the controller that this broker's replica of partition `index`
/// of topic `topic_id` failed (see `shard/rebuild.rs`); returns once
/// every shard has the change, if there was one. Call on any shard.
pub async fn report_failed_replica(
    shard: &Rc<Shard>,
    topic_id: uuid::Uuid,
    index: i32,
) -> Result<u64, TopicError> {
    shard
        .invoke_on(CONTROLLER, move |c| async move {
            let node = c.cluster();
            let req = Request::ReplicaFailed {
                node: c.broker.config.node_id,
                incarnation: node.incarnation,
                topic_id: topic_id.to_string(),
                index,
            };
            node.change(req, &c).await
        })
        .await
        .map_err(|e| (ErrorCode::UnknownServerError, e.to_string()))?
}
