//! Control requests: cluster metadata, topic creation and deletion, offsets.
//! All blocking, on a connection of their own, outside the measured path.

use super::conn::Connection;
use super::endpoint::Endpoint;
use super::error::ClientError;
use sluice_protocol::messages::messages::create_topics_request::{
    CreatableTopic, CreatableTopicConfig,
};
use sluice_protocol::messages::messages::list_offsets_request::{
    ListOffsetsPartition, ListOffsetsTopic,
};
use sluice_protocol::messages::messages::metadata_request::MetadataRequestTopic;
use sluice_protocol::messages::messages::{
    ApiKey, BrokerId, CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest,
    DeleteTopicsResponse, InitProducerIdRequest, InitProducerIdResponse, ListOffsetsRequest,
    ListOffsetsResponse, MetadataRequest, MetadataResponse, TopicName,
};
use sluice_protocol::messages::protocol::StrBytes;
use sluice_protocol::ErrorCode;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub fn topic_name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// What the harness needs of the cluster's metadata.
#[derive(Clone, Debug, Default)]
pub struct ClusterMetadata {
    pub brokers: BTreeMap<i32, Endpoint>,
    /// Topic name → leader node id per partition (-1: none yet).
    pub topics: BTreeMap<String, Vec<i32>>,
}

impl ClusterMetadata {
    pub fn leader(&self, topic: &str, partition: i32) -> Result<(i32, SocketAddr), ClientError> {
        let no_leader = || ClientError::NoLeader {
            topic: topic.to_string(),
            partition,
        };
        let id = *self
            .topics
            .get(topic)
            .and_then(|p| p.get(partition as usize))
            .ok_or_else(no_leader)?;
        let ep = self.brokers.get(&id).ok_or_else(no_leader)?;
        Ok((id, ep.addr))
    }
}

/// A producer id and epoch for an idempotent producer (InitProducerId
/// without a transactional id). Retriable refusals are retried until
/// `timeout`.
pub fn init_producer_id(
    conn: &mut Connection,
    timeout: Duration,
) -> Result<(i64, i16), ClientError> {
    let deadline = Instant::now() + timeout;
    let req = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(-1);
    loop {
        let resp: InitProducerIdResponse = conn.roundtrip(ApiKey::InitProducerId, &req)?;
        let code = ErrorCode::from_code(resp.error_code);
        match code {
            ErrorCode::None => return Ok((resp.producer_id.0, resp.producer_epoch)),
            c if c.is_retriable() && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100));
            }
            c => {
                return Err(ClientError::Broker {
                    what: "InitProducerId".into(),
                    code: c,
                })
            }
        }
    }
}

/// Metadata for `topics` (all topics when `None`).
pub fn metadata(
    conn: &mut Connection,
    topics: Option<&[String]>,
) -> Result<ClusterMetadata, ClientError> {
    let req = MetadataRequest::default()
        .with_topics(topics.map(|ts| {
            ts.iter()
                .map(|t| MetadataRequestTopic::default().with_name(Some(topic_name(t))))
                .collect()
        }))
        .with_allow_auto_topic_creation(false);
    let resp: MetadataResponse = conn.roundtrip(ApiKey::Metadata, &req)?;
    let mut md = ClusterMetadata::default();
    for b in &resp.brokers {
        md.brokers
            .insert(b.node_id.0, Endpoint::resolve(b.host.as_str(), b.port)?);
    }
    for t in &resp.topics {
        let Some(name) = &t.name else { continue };
        if t.error_code != 0 {
            continue;
        }
        let mut leaders = vec![-1; t.partitions.len()];
        for p in &t.partitions {
            if let Some(slot) = leaders.get_mut(p.partition_index as usize) {
                *slot = if p.error_code == 0 { p.leader_id.0 } else { -1 };
            }
        }
        md.topics.insert(name.0.as_str().to_string(), leaders);
    }
    Ok(md)
}

/// Creates topics; a topic that already exists is an error (names are
/// unique per run, so an existing one means a clash).
pub fn create_topics(
    conn: &mut Connection,
    names: &[String],
    partitions: u32,
    replication_factor: u32,
    configs: &BTreeMap<String, String>,
) -> Result<(), ClientError> {
    create_topics_if(conn, names, partitions, replication_factor, configs, false)
}

/// [`create_topics`]; with `existing_ok` a topic that exists already is
/// taken as made (another worker of the same run was first).
pub fn create_topics_if(
    conn: &mut Connection,
    names: &[String],
    partitions: u32,
    replication_factor: u32,
    configs: &BTreeMap<String, String>,
    existing_ok: bool,
) -> Result<(), ClientError> {
    let topics = names
        .iter()
        .map(|n| {
            CreatableTopic::default()
                .with_name(topic_name(n))
                .with_num_partitions(partitions as i32)
                .with_replication_factor(replication_factor as i16)
                .with_configs(
                    configs
                        .iter()
                        .map(|(k, v)| {
                            CreatableTopicConfig::default()
                                .with_name(StrBytes::from_string(k.clone()))
                                .with_value(Some(StrBytes::from_string(v.clone())))
                        })
                        .collect(),
                )
        })
        .collect();
    let req = CreateTopicsRequest::default()
        .with_topics(topics)
        .with_timeout_ms(30_000);
    let resp: CreateTopicsResponse = conn.roundtrip(ApiKey::CreateTopics, &req)?;
    for t in &resp.topics {
        let exists = t.error_code == ErrorCode::TopicAlreadyExists.code();
        if t.error_code != 0 && !(existing_ok && exists) {
            let detail = t
                .error_message
                .as_ref()
                .map(|m| m.as_str().to_string())
                .unwrap_or_default();
            return Err(ClientError::Broker {
                what: format!("creating topic {} {detail}", t.name.0.as_str()),
                code: ErrorCode::from_code(t.error_code),
            });
        }
    }
    Ok(())
}

/// Deletes topics; errors are returned but callers treat cleanup as best effort.
pub fn delete_topics(conn: &mut Connection, names: &[String]) -> Result<(), ClientError> {
    let version = conn.version(ApiKey::DeleteTopics)?;
    let mut req = DeleteTopicsRequest::default().with_timeout_ms(30_000);
    if version >= 6 {
        req.topics = names
            .iter()
            .map(|n| {
                sluice_protocol::messages::messages::delete_topics_request::DeleteTopicState::default()
                    .with_name(Some(topic_name(n)))
            })
            .collect();
    } else {
        req.topic_names = names.iter().map(|n| topic_name(n)).collect();
    }
    let _: DeleteTopicsResponse = conn.roundtrip_at(ApiKey::DeleteTopics, version, &req)?;
    Ok(())
}

/// Polls metadata until every partition of `topics` has a leader.
pub fn wait_for_leaders(
    conn: &mut Connection,
    topics: &[String],
    timeout: Duration,
) -> Result<ClusterMetadata, ClientError> {
    let deadline = Instant::now() + timeout;
    loop {
        let md = metadata(conn, Some(topics))?;
        let ready = topics.iter().all(|t| {
            md.topics.get(t).is_some_and(|ls| {
                !ls.is_empty() && ls.iter().all(|&l| l >= 0 && md.brokers.contains_key(&l))
            })
        });
        if ready {
            return Ok(md);
        }
        if Instant::now() > deadline {
            return Err(ClientError::Timeout {
                what: "partition leaders of the new topics",
                ms: timeout.as_millis() as u64,
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `ListOffsets` timestamps with special meaning.
pub const LATEST: i64 = -1;
pub const EARLIEST: i64 = -2;

/// Offsets of `partitions` of `topic` at `timestamp` (LATEST/EARLIEST),
/// asked of the connection's broker (which must lead them).
pub fn list_offsets(
    conn: &mut Connection,
    topic: &str,
    partitions: &[i32],
    timestamp: i64,
) -> Result<BTreeMap<i32, i64>, ClientError> {
    list_offsets_isolated(conn, topic, partitions, timestamp, 0)
}

/// [`list_offsets`] at an isolation level: 1 (read_committed) answers
/// LATEST with the last stable offset.
pub fn list_offsets_isolated(
    conn: &mut Connection,
    topic: &str,
    partitions: &[i32],
    timestamp: i64,
    isolation_level: i8,
) -> Result<BTreeMap<i32, i64>, ClientError> {
    let req = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_isolation_level(isolation_level)
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(topic_name(topic))
            .with_partitions(
                partitions
                    .iter()
                    .map(|&p| {
                        ListOffsetsPartition::default()
                            .with_partition_index(p)
                            .with_timestamp(timestamp)
                    })
                    .collect(),
            )]);
    let resp: ListOffsetsResponse = conn.roundtrip(ApiKey::ListOffsets, &req)?;
    let mut out = BTreeMap::new();
    for t in &resp.topics {
        for p in &t.partitions {
            if p.error_code != 0 {
                return Err(ClientError::Broker {
                    what: format!("listing offsets of {topic}-{}", p.partition_index),
                    code: ErrorCode::from_code(p.error_code),
                });
            }
            out.insert(p.partition_index, p.offset);
        }
    }
    Ok(out)
}
