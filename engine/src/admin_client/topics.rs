//! Topics and configs, as `kafka-topics.sh` and `kafka-configs.sh` ask:
//!
//! ```text
//! list, describe:  Metadata (all topics, or the ones named)
//! create:          CreateTopics      (any broker; it forwards to the controller)
//! delete:          DeleteTopics
//! configs:         DescribeConfigs / IncrementalAlterConfigs
//! ```

use super::{topic_name, AdminClient, AdminError};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, DeleteTopicsRequest, DescribeConfigsRequest,
    IncrementalAlterConfigsRequest, MetadataRequest,
};
use kafka_protocol::protocol::StrBytes;
use serde::Serialize;

/// DescribeConfigs and IncrementalAlterConfigs resource types.
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

/// IncrementalAlterConfigs operations.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;

/// How long the broker may take over a topic change before answering.
const CHANGE_TIMEOUT_MS: i32 = 30_000;

/// A topic as Metadata describes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TopicDescription {
    pub name: String,
    /// The topic id (UUID), when the broker sends one.
    pub id: Option<String>,
    pub internal: bool,
    pub partitions: Vec<PartitionDescription>,
}

/// One partition's placement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PartitionDescription {
    pub partition: i32,
    /// The leader's node id; -1 when the partition has none.
    pub leader: i32,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    /// Replicas the controller holds offline, if any.
    pub offline: Vec<i32>,
    /// The partition's error, e.g. `LEADER_NOT_AVAILABLE (5)`.
    pub error: Option<String>,
}

/// A config entry as DescribeConfigs answers it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConfigEntry {
    pub name: String,
    /// `None` for a sensitive value the broker does not show.
    pub value: Option<String>,
    /// Kafka's source name: DYNAMIC_TOPIC_CONFIG, DEFAULT_CONFIG, ...
    pub source: String,
    pub read_only: bool,
    pub sensitive: bool,
}

/// What a config describe is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigResource {
    Topic(String),
    Broker(i32),
}

impl ConfigResource {
    fn kind_and_name(&self) -> (i8, String) {
        match self {
            ConfigResource::Topic(t) => (RESOURCE_TOPIC, t.clone()),
            ConfigResource::Broker(id) => (RESOURCE_BROKER, id.to_string()),
        }
    }
}

/// A topic to create; -1 takes the broker's default.
#[derive(Clone, Debug)]
pub struct NewTopic {
    pub name: String,
    pub partitions: i32,
    pub replication_factor: i16,
    pub configs: Vec<(String, String)>,
}

impl AdminClient {
    /// Every topic the broker shows (all of them when `names` is empty),
    /// sorted by name. A named topic that does not exist is an error.
    pub fn describe_topics(
        &mut self,
        names: &[String],
    ) -> Result<Vec<TopicDescription>, AdminError> {
        let topics = (!names.is_empty()).then(|| {
            names
                .iter()
                .map(|n| MetadataRequestTopic::default().with_name(Some(topic_name(n))))
                .collect()
        });
        let bootstrap = self.bootstrap.clone();
        let response = self.connection(&bootstrap)?.call_with(
            MetadataRequest::default().with_topics(topics),
            |r, version| r.with_allow_auto_topic_creation(version < 4),
        )?;
        let mut out = Vec::with_capacity(response.topics.len());
        for t in response.topics {
            let name = t.name.map(|n| n.to_string()).unwrap_or_default();
            if t.error_code != 0 {
                return Err(AdminError::broker(
                    ApiKey::Metadata,
                    t.error_code,
                    Some(format!("topic '{name}'")),
                ));
            }
            let mut partitions: Vec<PartitionDescription> = t
                .partitions
                .into_iter()
                .map(|p| PartitionDescription {
                    partition: p.partition_index,
                    leader: *p.leader_id,
                    leader_epoch: p.leader_epoch,
                    replicas: p.replica_nodes.iter().map(|b| **b).collect(),
                    isr: p.isr_nodes.iter().map(|b| **b).collect(),
                    offline: p.offline_replicas.iter().map(|b| **b).collect(),
                    error: error_name(p.error_code),
                })
                .collect();
            partitions.sort_by_key(|p| p.partition);
            let id = (!t.topic_id.is_nil()).then(|| t.topic_id.to_string());
            out.push(TopicDescription {
                name,
                id,
                internal: t.is_internal,
                partitions,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Creates a topic and waits until the controller has it.
    pub fn create_topic(&mut self, topic: &NewTopic) -> Result<(), AdminError> {
        let configs = topic
            .configs
            .iter()
            .map(|(k, v)| {
                CreatableTopicConfig::default()
                    .with_name(StrBytes::from_string(k.clone()))
                    .with_value(Some(StrBytes::from_string(v.clone())))
            })
            .collect();
        let request = CreateTopicsRequest::default()
            .with_topics(vec![CreatableTopic::default()
                .with_name(topic_name(&topic.name))
                .with_num_partitions(topic.partitions)
                .with_replication_factor(topic.replication_factor)
                .with_configs(configs)])
            .with_timeout_ms(CHANGE_TIMEOUT_MS);
        let bootstrap = self.bootstrap.clone();
        let response = self.connection(&bootstrap)?.call(&request)?;
        for r in response.topics {
            if r.error_code != 0 {
                let message = r.error_message.map(|m| m.to_string());
                return Err(AdminError::broker(
                    ApiKey::CreateTopics,
                    r.error_code,
                    Some(with_topic(&topic.name, message)),
                ));
            }
        }
        Ok(())
    }

    /// Deletes topics by name; the first error is returned.
    pub fn delete_topics(&mut self, names: &[String]) -> Result<(), AdminError> {
        let request = DeleteTopicsRequest::default().with_timeout_ms(CHANGE_TIMEOUT_MS);
        let bootstrap = self.bootstrap.clone();
        // Names moved from `topic_names` into `topics` at v6.
        let response = self
            .connection(&bootstrap)?
            .call_with(request, |r, version| {
                if version >= 6 {
                    r.with_topics(
                        names
                            .iter()
                            .map(|n| DeleteTopicState::default().with_name(Some(topic_name(n))))
                            .collect(),
                    )
                } else {
                    r.with_topic_names(names.iter().map(|n| topic_name(n)).collect())
                }
            })?;
        for r in response.responses {
            if r.error_code != 0 {
                let name = r.name.map(|n| n.to_string()).unwrap_or_default();
                let message = r.error_message.map(|m| m.to_string());
                return Err(AdminError::broker(
                    ApiKey::DeleteTopics,
                    r.error_code,
                    Some(with_topic(&name, message)),
                ));
            }
        }
        Ok(())
    }

    /// The resource's config entries, sorted by name; with `all` false
    /// only those set dynamically (through the admin APIs), as
    /// `kafka-configs.sh --describe` lists them.
    pub fn describe_configs(
        &mut self,
        resource: &ConfigResource,
        all: bool,
    ) -> Result<Vec<ConfigEntry>, AdminError> {
        let (kind, name) = resource.kind_and_name();
        let request = DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(kind)
                .with_resource_name(StrBytes::from_string(name.clone()))
                .with_configuration_keys(None),
        ]);
        let addr = self.address_for(resource)?;
        let response = self.connection(&addr)?.call(&request)?;
        let mut entries = Vec::new();
        for r in response.results {
            if r.error_code != 0 {
                let message = r.error_message.map(|m| m.to_string());
                return Err(AdminError::broker(
                    ApiKey::DescribeConfigs,
                    r.error_code,
                    message.or(Some(name.clone())),
                ));
            }
            for c in r.configs {
                let source = config_source(c.config_source);
                if !all && !source.starts_with("DYNAMIC_") {
                    continue;
                }
                entries.push(ConfigEntry {
                    name: c.name.to_string(),
                    value: c.value.map(|v| v.to_string()),
                    source: source.to_string(),
                    read_only: c.read_only,
                    sensitive: c.is_sensitive,
                });
            }
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    /// Sets and deletes (reverts to default) config keys of a resource.
    pub fn alter_configs(
        &mut self,
        resource: &ConfigResource,
        set: &[(String, String)],
        delete: &[String],
    ) -> Result<(), AdminError> {
        let (kind, name) = resource.kind_and_name();
        let configs = set
            .iter()
            .map(|(k, v)| (k, Some(v), OP_SET))
            .chain(delete.iter().map(|k| (k, None, OP_DELETE)))
            .map(|(k, v, op)| {
                AlterableConfig::default()
                    .with_name(StrBytes::from_string(k.clone()))
                    .with_config_operation(op)
                    .with_value(v.map(|v| StrBytes::from_string(v.clone())))
            })
            .collect();
        let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(kind)
                .with_resource_name(StrBytes::from_string(name.clone()))
                .with_configs(configs),
        ]);
        let addr = self.address_for(resource)?;
        let response = self.connection(&addr)?.call(&request)?;
        for r in response.responses {
            if r.error_code != 0 {
                let message = r.error_message.map(|m| m.to_string());
                return Err(AdminError::broker(
                    ApiKey::IncrementalAlterConfigs,
                    r.error_code,
                    message.or(Some(name.clone())),
                ));
            }
        }
        Ok(())
    }

    /// Topic configs are answered by any broker; a broker's own by that
    /// broker.
    fn address_for(&mut self, resource: &ConfigResource) -> Result<String, AdminError> {
        match resource {
            ConfigResource::Topic(_) => Ok(self.bootstrap.clone()),
            ConfigResource::Broker(id) => self.brokers()?.remove(id).ok_or_else(|| {
                AdminError::broker(
                    ApiKey::Metadata,
                    ResponseError::BrokerNotAvailable.code(),
                    Some(format!("no broker with node id {id}")),
                )
            }),
        }
    }
}

fn error_name(code: i16) -> Option<String> {
    ResponseError::try_from_code(code).map(|e| super::ErrorName(e).to_string())
}

fn with_topic(topic: &str, message: Option<String>) -> String {
    match message {
        Some(m) if !m.is_empty() => format!("topic '{topic}': {m}"),
        _ => format!("topic '{topic}'"),
    }
}

/// Kafka's Admin API names for DescribeConfigs' source codes.
fn config_source(code: i8) -> &'static str {
    match code {
        1 => "DYNAMIC_TOPIC_CONFIG",
        2 => "DYNAMIC_BROKER_CONFIG",
        3 => "DYNAMIC_DEFAULT_BROKER_CONFIG",
        4 => "STATIC_BROKER_CONFIG",
        5 => "DEFAULT_CONFIG",
        6 => "DYNAMIC_BROKER_LOGGER_CONFIG",
        7 => "DYNAMIC_CLIENT_METRICS_CONFIG",
        8 => "DYNAMIC_GROUP_CONFIG",
        _ => "UNKNOWN",
    }
}
