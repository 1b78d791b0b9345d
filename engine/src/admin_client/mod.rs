//! A small blocking admin client for consumer groups and topics, over plain
//! `std::net::TcpStream`s and the `kafka-protocol` messages.
//!
//! It asks what Kafka's own `kafka-consumer-groups.sh` asks:
//!
//! ```text
//! list:      Metadata (brokers) ─▶ ListGroups to every broker
//! describe:  FindCoordinator(group) ─▶ DescribeGroups + OffsetFetch to the coordinator
//!            Metadata (leaders)     ─▶ ListOffsets(latest) to each partition's leader
//! delete:    FindCoordinator(group) ─▶ DeleteGroups to the coordinator
//! ```
//!
//! Coordinator errors that Kafka marks retriable (the offsets topic is
//! still loading, the coordinator moved) are retried with backoff until the
//! client's timeout; every other error is returned at once.

mod assignment;
mod connection;
mod error;
mod topics;

pub use error::{AdminError, ErrorName};
#[cfg(test)]
pub use topics::PartitionDescription;
pub use topics::{ConfigEntry, ConfigResource, NewTopic, TopicDescription};

use connection::Connection;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, BrokerId, ConsumerGroupDescribeRequest, DeleteGroupsRequest, DescribeGroupsRequest,
    FindCoordinatorRequest, GroupId, ListGroupsRequest, ListOffsetsRequest, MetadataRequest,
    MetadataResponse, OffsetFetchRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// First pause before retrying a retriable error; doubled up to
/// [`RETRY_BACKOFF_MAX`]. A coordinator that is loading its offsets
/// usually answers within a few hundred milliseconds.
const RETRY_BACKOFF_FIRST: Duration = Duration::from_millis(100);
/// Longest pause between retries.
const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// ListOffsets timestamp meaning "the offset after the last message".
const LATEST_TIMESTAMP: i64 = -1;

/// A topic and a partition index.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: i32,
}

impl TopicPartition {
    /// A topic-partition pair.
    pub fn new(topic: impl Into<String>, partition: i32) -> TopicPartition {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }
}

/// One line of ListGroups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupListing {
    /// The group id.
    pub group_id: String,
    /// Stable, Empty, PreparingRebalance, ...; `None` from brokers that
    /// answer ListGroups below v4, which has no state.
    pub state: Option<String>,
    /// `consumer` for consumer groups; empty for groups that only commit
    /// offsets.
    pub protocol_type: String,
}

/// A group as DescribeGroups reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupDescription {
    /// The group id.
    pub group_id: String,
    /// Stable, Empty, PreparingRebalance, CompletingRebalance.
    pub state: String,
    /// `consumer` for consumer groups.
    pub protocol_type: String,
    /// The assignor the group agreed on (`range`, `roundrobin`, ...).
    pub protocol: String,
    /// The members, in the coordinator's order.
    pub members: Vec<MemberDescription>,
}

/// One member of a group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberDescription {
    /// The id the coordinator gave the member.
    pub member_id: String,
    /// `group.instance.id` of a static member.
    pub instance_id: Option<String>,
    /// The member's `client.id`.
    pub client_id: String,
    /// The member's address as the coordinator saw it (`/127.0.0.1`).
    pub client_host: String,
    /// The partitions the member was assigned, sorted.
    pub assignment: Vec<TopicPartition>,
}

/// The end of a partition's log, or why it is unknown.
pub type LogEnd = Result<i64, ResponseError>;

/// A blocking admin client; connections are opened on first use and kept.
pub struct AdminClient {
    bootstrap: String,
    timeout: Duration,
    connections: HashMap<String, Connection>,
}

impl AdminClient {
    /// Connects to the bootstrap broker (HOST:PORT). `timeout` bounds each
    /// connect, read and write, and the retrying of retriable errors.
    pub fn connect(bootstrap: &str, timeout: Duration) -> Result<AdminClient, AdminError> {
        let mut client = AdminClient {
            bootstrap: bootstrap.to_string(),
            timeout,
            connections: HashMap::new(),
        };
        client.connection(bootstrap)?;
        Ok(client)
    }

    /// Every group on every broker, sorted by id.
    pub fn list_groups(&mut self) -> Result<Vec<GroupListing>, AdminError> {
        self.retrying(|client| {
            let brokers = client.brokers()?;
            let mut groups = Vec::new();
            for addr in brokers.values() {
                let response = client
                    .connection(addr)?
                    .call(&ListGroupsRequest::default())?;
                if response.error_code != 0 {
                    return Err(AdminError::broker(
                        ApiKey::ListGroups,
                        response.error_code,
                        None,
                    ));
                }
                groups.extend(response.groups.into_iter().map(|g| GroupListing {
                    group_id: g.group_id.to_string(),
                    state: (!g.group_state.is_empty()).then(|| g.group_state.to_string()),
                    protocol_type: g.protocol_type.to_string(),
                }));
            }
            groups.sort_by(|a, b| a.group_id.cmp(&b.group_id));
            Ok(groups)
        })
    }

    /// The group's state and members; [`AdminError::UnknownGroup`] when
    /// the coordinator does not know it.
    pub fn describe_group(&mut self, group: &str) -> Result<GroupDescription, AdminError> {
        let described = self.retrying(|client| {
            let coordinator = client.coordinator(group)?;
            let request = DescribeGroupsRequest::default().with_groups(vec![group_id(group)]);
            let response = client.connection(&coordinator)?.call(&request)?;
            let missing = AdminError::NoEntry {
                addr: coordinator.clone(),
                api: ApiKey::DescribeGroups,
                group: group.to_string(),
            };
            let described = response
                .groups
                .into_iter()
                .find(|g| g.group_id.as_str() == group)
                .ok_or(missing)?;
            match described.error_code {
                0 => Ok(described),
                code => Err(group_error(ApiKey::DescribeGroups, group, code)),
            }
        })?;
        // Kafka answers an unknown group with state Dead and no error, and
        // so a consumer-protocol group (KIP-848), which has an API of its
        // own.
        if described.group_state.as_str() == "Dead" {
            return self.describe_consumer_group(group);
        }
        let mut members = Vec::with_capacity(described.members.len());
        for m in described.members {
            let assignment = assignment::decode(&m.member_assignment).map_err(|reason| {
                AdminError::BadAssignment {
                    group: group.to_string(),
                    member: m.member_id.to_string(),
                    reason,
                }
            })?;
            members.push(MemberDescription {
                member_id: m.member_id.to_string(),
                instance_id: m.group_instance_id.map(|s| s.to_string()),
                client_id: m.client_id.to_string(),
                client_host: m.client_host.to_string(),
                assignment,
            });
        }
        Ok(GroupDescription {
            group_id: group.to_string(),
            state: described.group_state.to_string(),
            protocol_type: described.protocol_type.to_string(),
            protocol: described.protocol_data.to_string(),
            members,
        })
    }

    /// A consumer-protocol group through ConsumerGroupDescribe: the
    /// protocol is the server-side assignor. A broker without the API, or
    /// that does not know the group, leaves it unknown.
    fn describe_consumer_group(&mut self, group: &str) -> Result<GroupDescription, AdminError> {
        let unknown = || AdminError::UnknownGroup(group.to_string());
        let described = self.retrying(|client| {
            let coordinator = client.coordinator(group)?;
            let request = ConsumerGroupDescribeRequest::default()
                .with_group_ids(vec![group_id(group)])
                .with_include_authorized_operations(false);
            let response = match client.connection(&coordinator)?.call(&request) {
                Err(AdminError::Unsupported { .. }) => return Ok(None),
                other => other?,
            };
            let described = response
                .groups
                .into_iter()
                .find(|g| g.group_id.as_str() == group);
            match described {
                Some(g) if g.error_code == ResponseError::GroupIdNotFound.code() => Ok(None),
                Some(g) if g.error_code != 0 => Err(group_error(
                    ApiKey::ConsumerGroupDescribe,
                    group,
                    g.error_code,
                )),
                other => Ok(other),
            }
        })?;
        let described = described.ok_or_else(unknown)?;
        let members = described
            .members
            .into_iter()
            .map(|m| {
                let mut assignment: Vec<TopicPartition> = m
                    .assignment
                    .topic_partitions
                    .iter()
                    .flat_map(|t| {
                        let name = t.topic_name.to_string();
                        t.partitions
                            .iter()
                            .map(move |p| TopicPartition::new(name.clone(), *p))
                    })
                    .collect();
                assignment.sort();
                MemberDescription {
                    member_id: m.member_id.to_string(),
                    instance_id: m.instance_id.map(|s| s.to_string()),
                    client_id: m.client_id.to_string(),
                    client_host: m.client_host.to_string(),
                    assignment,
                }
            })
            .collect();
        Ok(GroupDescription {
            group_id: group.to_string(),
            state: described.group_state.to_string(),
            protocol_type: "consumer".to_string(),
            protocol: described.assignor_name.to_string(),
            members,
        })
    }

    /// The group's committed offsets; partitions without a commit are
    /// left out.
    pub fn committed_offsets(
        &mut self,
        group: &str,
    ) -> Result<BTreeMap<TopicPartition, i64>, AdminError> {
        self.retrying(|client| {
            let coordinator = client.coordinator(group)?;
            // `topics: None` asks for every partition the group committed.
            let request = OffsetFetchRequest::default()
                .with_group_id(group_id(group))
                .with_topics(None);
            let response = client.connection(&coordinator)?.call(&request)?;
            if response.error_code != 0 {
                return Err(group_error(ApiKey::OffsetFetch, group, response.error_code));
            }
            let mut offsets = BTreeMap::new();
            for topic in response.topics {
                for p in topic.partitions {
                    if p.error_code != 0 {
                        return Err(AdminError::broker(ApiKey::OffsetFetch, p.error_code, None));
                    }
                    // -1: nothing committed for this partition.
                    if p.committed_offset >= 0 {
                        let tp = TopicPartition::new(topic.name.as_str(), p.partition_index);
                        offsets.insert(tp, p.committed_offset);
                    }
                }
            }
            Ok(offsets)
        })
    }

    /// The log-end offset (high watermark) of each partition, from its
    /// leader.
    pub fn log_end_offsets(
        &mut self,
        partitions: &BTreeSet<TopicPartition>,
    ) -> Result<BTreeMap<TopicPartition, LogEnd>, AdminError> {
        let mut result = BTreeMap::new();
        if partitions.is_empty() {
            return Ok(result);
        }
        let topics: BTreeSet<&str> = partitions.iter().map(|tp| tp.topic.as_str()).collect();
        let metadata = self.metadata(Some(&topics))?;
        let (by_leader, unplaced) = place_on_leaders(&metadata, partitions);
        result.extend(unplaced);
        for (addr, wanted) in by_leader {
            let request = list_offsets_request(&wanted);
            let response = self.connection(&addr)?.call(&request)?;
            for t in response.topics {
                for p in t.partitions {
                    let tp = TopicPartition::new(t.name.as_str(), p.partition_index);
                    let end = match ResponseError::try_from_code(p.error_code) {
                        None => Ok(p.offset),
                        Some(e) => Err(e),
                    };
                    result.insert(tp, end);
                }
            }
        }
        Ok(result)
    }

    /// Deletes an empty group and its committed offsets.
    pub fn delete_group(&mut self, group: &str) -> Result<(), AdminError> {
        self.retrying(|client| {
            let coordinator = client.coordinator(group)?;
            let request = DeleteGroupsRequest::default().with_groups_names(vec![group_id(group)]);
            let response = client.connection(&coordinator)?.call(&request)?;
            let result = response
                .results
                .into_iter()
                .find(|r| r.group_id.as_str() == group)
                .ok_or_else(|| AdminError::NoEntry {
                    addr: coordinator.clone(),
                    api: ApiKey::DeleteGroups,
                    group: group.to_string(),
                })?;
            match result.error_code {
                0 => Ok(()),
                code => Err(group_error(ApiKey::DeleteGroups, group, code)),
            }
        })
    }

    /// The address of the group's coordinator (one attempt).
    fn coordinator(&mut self, group: &str) -> Result<String, AdminError> {
        let bootstrap = self.bootstrap.clone();
        let request = FindCoordinatorRequest::default()
            .with_key(StrBytes::from_string(group.to_string()))
            .with_key_type(0);
        let response = self.connection(&bootstrap)?.call(&request)?;
        if response.error_code != 0 {
            let message = response.error_message.map(|m| m.to_string());
            return Err(AdminError::broker(
                ApiKey::FindCoordinator,
                response.error_code,
                message,
            ));
        }
        Ok(format!("{}:{}", response.host.as_str(), response.port))
    }

    /// Node id → HOST:PORT of every broker in the cluster.
    fn brokers(&mut self) -> Result<BTreeMap<i32, String>, AdminError> {
        let metadata = self.metadata(None)?;
        Ok(broker_addrs(&metadata))
    }

    /// Metadata for `topics`, or for no topics (brokers only) when `None`.
    fn metadata(
        &mut self,
        topics: Option<&BTreeSet<&str>>,
    ) -> Result<MetadataResponse, AdminError> {
        let topics = topics
            .into_iter()
            .flatten()
            .map(|t| MetadataRequestTopic::default().with_name(Some(topic_name(t))))
            .collect();
        let request = MetadataRequest::default().with_topics(Some(topics));
        let bootstrap = self.bootstrap.clone();
        // The field exists from v4 on; below it the broker never creates
        // topics for Metadata.
        self.connection(&bootstrap)?
            .call_with(request, |r, version| {
                r.with_allow_auto_topic_creation(version < 4)
            })
    }

    /// The connection to `addr`, opened if needed.
    fn connection(&mut self, addr: &str) -> Result<&mut Connection, AdminError> {
        if !self.connections.contains_key(addr) {
            let conn = Connection::open(addr, self.timeout)?;
            self.connections.insert(addr.to_string(), conn);
        }
        Ok(self
            .connections
            .get_mut(addr)
            .expect("inserted just above if missing"))
    }

    /// Runs `op` until it succeeds, fails with a non-retriable error or the
    /// timeout passes. Connections are dropped between attempts, so a
    /// coordinator that moved is found afresh.
    fn retrying<T>(
        &mut self,
        mut op: impl FnMut(&mut AdminClient) -> Result<T, AdminError>,
    ) -> Result<T, AdminError> {
        let deadline = Instant::now() + self.timeout;
        let mut backoff = RETRY_BACKOFF_FIRST;
        loop {
            match op(self) {
                Err(e) if e.is_retriable() && Instant::now() + backoff < deadline => {
                    self.connections.retain(|addr, _| *addr == self.bootstrap);
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
                }
                other => return other,
            }
        }
    }
}

/// The error for a group-level error code: GROUP_ID_NOT_FOUND is
/// [`AdminError::UnknownGroup`].
fn group_error(api: ApiKey, group: &str, code: i16) -> AdminError {
    if ResponseError::try_from_code(code) == Some(ResponseError::GroupIdNotFound) {
        AdminError::UnknownGroup(group.to_string())
    } else {
        AdminError::broker(api, code, None)
    }
}

fn broker_addrs(metadata: &MetadataResponse) -> BTreeMap<i32, String> {
    metadata
        .brokers
        .iter()
        .map(|b| (*b.node_id, format!("{}:{}", b.host.as_str(), b.port)))
        .collect()
}

/// Groups `partitions` by the address of their leader; partitions with no
/// known leader get their error instead.
fn place_on_leaders(
    metadata: &MetadataResponse,
    partitions: &BTreeSet<TopicPartition>,
) -> (
    BTreeMap<String, Vec<TopicPartition>>,
    BTreeMap<TopicPartition, LogEnd>,
) {
    let brokers = broker_addrs(metadata);
    let mut leaders: HashMap<TopicPartition, Result<String, ResponseError>> = HashMap::new();
    for t in &metadata.topics {
        let Some(name) = &t.name else { continue };
        for p in &t.partitions {
            let tp = TopicPartition::new(name.as_str(), p.partition_index);
            let leader =
                match (t.error_code, p.error_code) {
                    (0, 0) => brokers
                        .get(&p.leader_id)
                        .cloned()
                        .ok_or(ResponseError::LeaderNotAvailable),
                    (0, code) | (code, _) => Err(ResponseError::try_from_code(code)
                        .unwrap_or(ResponseError::UnknownServerError)),
                };
            leaders.insert(tp, leader);
        }
    }
    let mut by_leader: BTreeMap<String, Vec<TopicPartition>> = BTreeMap::new();
    let mut unplaced = BTreeMap::new();
    for tp in partitions {
        match leaders.remove(tp) {
            Some(Ok(addr)) => by_leader.entry(addr).or_default().push(tp.clone()),
            Some(Err(e)) => {
                unplaced.insert(tp.clone(), Err(e));
            }
            None => {
                unplaced.insert(tp.clone(), Err(ResponseError::UnknownTopicOrPartition));
            }
        }
    }
    (by_leader, unplaced)
}

fn list_offsets_request(partitions: &[TopicPartition]) -> ListOffsetsRequest {
    let mut topics: BTreeMap<&str, Vec<ListOffsetsPartition>> = BTreeMap::new();
    for tp in partitions {
        topics.entry(&tp.topic).or_default().push(
            ListOffsetsPartition::default()
                .with_partition_index(tp.partition)
                .with_timestamp(LATEST_TIMESTAMP),
        );
    }
    ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(
            topics
                .into_iter()
                .map(|(name, ps)| {
                    ListOffsetsTopic::default()
                        .with_name(topic_name(name))
                        .with_partitions(ps)
                })
                .collect(),
        )
}

fn group_id(group: &str) -> GroupId {
    GroupId(StrBytes::from_string(group.to_string()))
}

fn topic_name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_string()))
}
