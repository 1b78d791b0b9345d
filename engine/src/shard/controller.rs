//! Topic changes. Shard 0 is the controller: it serializes creations and
//! deletions, persists `topics.toml` first (so a crash leaves intent on
//! disk that the next start completes), then has every shard install the
//! new snapshot and open or delete its partitions, and answers only when
//! all shards have.

use super::{Shard, ShardId};
use crate::metadata::{self, Snapshot, TopicMeta};
use sluice_protocol::ErrorCode;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

/// The controller shard.
pub const CONTROLLER: ShardId = 0;

/// A refused topic change: the error code and a message for the client.
pub type TopicError = (ErrorCode, String);

/// What a CreateTopics entry asks for.
#[derive(Debug, Clone)]
pub struct NewTopic {
    pub name: String,
    pub partitions: i32,
    pub replication_factor: i16,
    pub overrides: BTreeMap<String, String>,
}

/// Checks a topic creation without making it.
pub fn validate(shard: &Shard, t: &NewTopic) -> Result<TopicMeta, TopicError> {
    metadata::validate_topic_name(&t.name).map_err(|m| (ErrorCode::InvalidTopicException, m))?;
    if shard.metadata().topic(&t.name).is_some() {
        return Err((
            ErrorCode::TopicAlreadyExists,
            format!("Topic '{}' already exists.", t.name),
        ));
    }
    let partitions = if t.partitions == -1 {
        shard.broker.config.num_partitions()
    } else {
        t.partitions
    };
    if partitions <= 0 {
        return Err((
            ErrorCode::InvalidPartitions,
            "Number of partitions must be larger than 0.".into(),
        ));
    }
    if t.replication_factor == 0 || t.replication_factor < -1 {
        return Err((
            ErrorCode::InvalidReplicationFactor,
            "Replication factor must be larger than 0.".into(),
        ));
    }
    if t.replication_factor > 1 {
        return Err((
            ErrorCode::InvalidReplicationFactor,
            format!(
                "Replication factor: {} larger than available brokers: 1.",
                t.replication_factor
            ),
        ));
    }
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
    })
}

/// Creates a topic; call on any shard, runs on the controller.
pub async fn create_topic(shard: &Rc<Shard>, t: NewTopic) -> Result<Arc<TopicMeta>, TopicError> {
    let gone = |e: super::ShardGone| (ErrorCode::UnknownServerError, e.to_string());
    shard
        .invoke_on(CONTROLLER, move |c| async move {
            create_on_controller(&c, t).await
        })
        .await
        .map_err(gone)?
}

async fn create_on_controller(c: &Rc<Shard>, t: NewTopic) -> Result<Arc<TopicMeta>, TopicError> {
    let _permit = c
        .controller_lock
        .acquire_permit(1)
        .await
        .map_err(|e| (ErrorCode::UnknownServerError, e.to_string()))?;
    let meta = Arc::new(validate(c, &t)?);
    let snapshot = Arc::new(c.metadata().with_topic(Arc::clone(&meta)));
    persist(c, &snapshot)?;
    tracing::info!(topic = %meta.name, partitions = meta.partitions, "created topic");
    broadcast(c, snapshot, Some(Arc::clone(&meta)), None).await?;
    Ok(meta)
}

/// Deletes a topic; call on any shard, runs on the controller.
pub async fn delete_topic(shard: &Rc<Shard>, name: String) -> Result<(), TopicError> {
    let gone = |e: super::ShardGone| (ErrorCode::UnknownServerError, e.to_string());
    shard
        .invoke_on(CONTROLLER, move |c| async move {
            delete_on_controller(&c, name).await
        })
        .await
        .map_err(gone)?
}

async fn delete_on_controller(c: &Rc<Shard>, name: String) -> Result<(), TopicError> {
    let _permit = c
        .controller_lock
        .acquire_permit(1)
        .await
        .map_err(|e| (ErrorCode::UnknownServerError, e.to_string()))?;
    if c.metadata().topic(&name).is_none() {
        return Err((
            ErrorCode::UnknownTopicOrPartition,
            format!("Topic '{name}' does not exist."),
        ));
    }
    let snapshot = Arc::new(c.metadata().without_topic(&name));
    persist(c, &snapshot)?;
    tracing::info!(topic = %name, "deleted topic");
    broadcast(c, snapshot, None, Some(name)).await
}

fn persist(c: &Shard, snapshot: &Snapshot) -> Result<(), TopicError> {
    metadata::save(c.broker.data_dir(), snapshot).map_err(|e| {
        tracing::error!(error = %e, "persisting topics");
        (ErrorCode::KafkaStorageError, e.to_string())
    })
}

async fn broadcast(
    c: &Rc<Shard>,
    snapshot: Arc<Snapshot>,
    created: Option<Arc<TopicMeta>>,
    deleted: Option<String>,
) -> Result<(), TopicError> {
    for target in 0..c.count {
        let (snapshot, created, deleted) =
            (Arc::clone(&snapshot), created.clone(), deleted.clone());
        c.invoke_on(target, move |s| async move {
            s.apply_snapshot(snapshot, created.as_deref(), deleted.as_deref());
        })
        .await
        .map_err(|e| (ErrorCode::UnknownServerError, e.to_string()))?;
    }
    Ok(())
}
