//! Cluster metadata as each shard sees it: an immutable snapshot of the
//! brokers and topics, with every partition's replicas, leader and ISR,
//! replaced whole when the metadata log changes. Shards read it without
//! locks; [`crate::cluster::node`] builds new ones from the log.

use crate::cluster::records::ClusterImage;
use crate::config::{BrokerConfig, TopicConfig};
use crate::quota::entity::ClientQuotas;
use crate::replication::controller::PartitionState;
use crate::replication::NodeId;
use crate::security::acl::index::AclIndex;
use crate::security::sasl::scram::{CredentialStore, ScramCredential, ScramMechanism};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Kafka's limit on topic name length.
pub const TOPIC_NAME_LEN_MAX: usize = 249;

/// One topic.
#[derive(Debug, Clone)]
pub struct TopicMeta {
    pub name: String,
    pub id: uuid::Uuid,
    pub partitions: i32,
    /// Topic-level config overrides as given.
    pub overrides: BTreeMap<String, String>,
    /// Effective config (broker defaults plus overrides).
    pub config: Arc<TopicConfig>,
    /// Replication state by partition index.
    pub replicas: Vec<PartitionState>,
}

impl TopicMeta {
    /// Whether this is the snapshot of topic image `t`: same name, id,
    /// stored config and partition states.
    fn is_image(&self, t: &crate::cluster::records::TopicImage) -> bool {
        self.name == t.name
            && self.id == t.id
            && self.overrides == t.config
            && self.replicas == t.partitions
    }

    /// The replication state of partition `index`.
    pub fn partition(&self, index: i32) -> Option<&PartitionState> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.replicas.get(i))
    }
}

/// A broker clients can reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerMeta {
    /// The inter-broker listener's endpoint.
    pub host: String,
    pub port: u16,
    /// Every listener's endpoint by name (empty: the broker registered
    /// one listener, `host`/`port`).
    pub listeners: crate::cluster::records::Endpoints,
    /// Stopped heartbeating: not listed to clients.
    pub fenced: bool,
}

impl BrokerMeta {
    /// Where a client of listener `listener` reaches this broker; `None`
    /// if the broker has no such listener (Kafka leaves it out).
    pub fn endpoint(&self, listener: &str) -> Option<(&str, u16)> {
        if self.listeners.is_empty() {
            return Some((&self.host, self.port));
        }
        self.listeners
            .get(listener)
            .map(|(host, port)| (host.as_str(), *port))
    }
}

/// Every broker and topic, by name and id.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub topics: BTreeMap<String, Arc<TopicMeta>>,
    by_id: HashMap<uuid::Uuid, String>,
    pub brokers: BTreeMap<i32, BrokerMeta>,
    /// This broker.
    pub node_id: i32,
    /// The cluster's id (empty until the metadata log names it).
    pub cluster_id: String,
    /// SCRAM credentials by user and mechanism.
    pub scram: BTreeMap<(String, ScramMechanism), ScramCredential>,
    /// Every ACL, indexed for the authorizer.
    pub acls: Arc<AclIndex>,
    /// Client quotas.
    pub quotas: Arc<ClientQuotas>,
}

impl CredentialStore for Snapshot {
    fn scram_credential(&self, user: &str, mechanism: ScramMechanism) -> Option<ScramCredential> {
        self.scram.get(&(user.to_string(), mechanism)).cloned()
    }
}

impl Snapshot {
    pub fn new(topics: BTreeMap<String, Arc<TopicMeta>>) -> Snapshot {
        let by_id = topics.values().map(|t| (t.id, t.name.clone())).collect();
        Snapshot {
            topics,
            by_id,
            ..Snapshot::default()
        }
    }

    /// No brokers, no topics: before the metadata log is read.
    pub fn empty(node_id: i32) -> Snapshot {
        Snapshot {
            node_id,
            ..Snapshot::default()
        }
    }

    /// The snapshot of a metadata image. A topic whose stored config no
    /// longer parses keeps the broker defaults (and says so).
    ///
    /// A topic that is the same in `prev` (the snapshot before) keeps
    /// `prev`'s `Arc`: nothing is parsed or copied for it, and shards
    /// tell changed topics from unchanged ones by pointer
    /// ([`Snapshot::changed_topics`]). Creating 1,000 topics one by one
    /// otherwise rebuilt every topic for every new one, and every shard
    /// then visited every partition: quadratic in the topic count.
    pub fn from_image(image: &ClusterImage, broker: &BrokerConfig, prev: &Snapshot) -> Snapshot {
        let mut topics = BTreeMap::new();
        for t in image.topics.values() {
            if let Some(same) = prev.topics.get(&t.name).filter(|m| m.is_image(t)) {
                topics.insert(t.name.clone(), Arc::clone(same));
                continue;
            }
            let config = broker.topic_config(&t.config).unwrap_or_else(|e| {
                tracing::error!(topic = %t.name, error = %e, "topic config does not apply; using defaults");
                broker.topic_config(&BTreeMap::new()).expect("defaults parse")
            });
            let meta = TopicMeta {
                name: t.name.clone(),
                id: t.id,
                partitions: t.partitions.len() as i32,
                overrides: t.config.clone(),
                config: Arc::new(config),
                replicas: t.partitions.clone(),
            };
            topics.insert(t.name.clone(), Arc::new(meta));
        }
        let mut s = Snapshot::new(topics);
        s.brokers = image
            .brokers
            .iter()
            .map(|(id, b)| {
                let meta = BrokerMeta {
                    host: b.host.clone(),
                    port: b.port,
                    listeners: b.listeners.clone(),
                    fenced: b.fenced,
                };
                (*id, meta)
            })
            .collect();
        s.node_id = broker.node_id;
        s.cluster_id = image.cluster_id.clone().unwrap_or_default();
        s.scram = image.scram.clone();
        s.acls = Arc::new(AclIndex::new(&image.acls));
        s.quotas = match image.quotas == *prev.quotas.map() {
            true => Arc::clone(&prev.quotas),
            false => Arc::new(ClientQuotas::new(image.quotas.clone())),
        };
        s
    }

    /// What changed from `prev` to this snapshot, for a shard to visit
    /// only that: the names of topics added, changed or removed, or
    /// `None` when the brokers changed (a fence, a registration), after
    /// which every partition is visited again.
    pub fn changed_topics(&self, prev: &Snapshot) -> Option<std::collections::BTreeSet<String>> {
        if self.brokers != prev.brokers || self.node_id != prev.node_id {
            return None;
        }
        let mut changed: std::collections::BTreeSet<String> = self
            .topics
            .iter()
            .filter(|(name, t)| prev.topics.get(*name).is_none_or(|p| !Arc::ptr_eq(p, t)))
            .map(|(name, _)| name.clone())
            .collect();
        changed.extend(
            prev.topics
                .keys()
                .filter(|name| !self.topics.contains_key(*name))
                .cloned(),
        );
        Some(changed)
    }

    pub fn topic(&self, name: &str) -> Option<&Arc<TopicMeta>> {
        self.topics.get(name)
    }

    pub fn topic_by_id(&self, id: uuid::Uuid) -> Option<&Arc<TopicMeta>> {
        self.by_id.get(&id).and_then(|n| self.topics.get(n))
    }

    /// Brokers clients may use: registered and not fenced.
    pub fn live_brokers(&self) -> impl Iterator<Item = (i32, &BrokerMeta)> {
        self.brokers
            .iter()
            .filter(|(_, b)| !b.fenced)
            .map(|(id, b)| (*id, b))
    }

    /// Brokers clients of `listener` may use, at that listener's address.
    pub fn live_brokers_on<'a>(
        &'a self,
        listener: &'a str,
    ) -> impl Iterator<Item = (i32, &'a str, u16)> + 'a {
        self.live_brokers()
            .filter_map(move |(id, b)| b.endpoint(listener).map(|(h, p)| (id, h, p)))
    }

    /// Whether this broker leads partition `index` of `topic`.
    pub fn leads(&self, topic: &TopicMeta, index: i32) -> bool {
        topic
            .partition(index)
            .is_some_and(|p| p.leader == Some(NodeId(self.node_id)))
    }

    /// Whether this broker holds a replica of partition `index` of `topic`.
    pub fn hosts(&self, topic: &TopicMeta, index: i32) -> bool {
        topic
            .partition(index)
            .is_some_and(|p| p.replicas.contains(&NodeId(self.node_id)))
    }
}

/// Topics the broker writes itself; clients may read, not write or
/// delete them.
pub fn is_internal(name: &str) -> bool {
    name == crate::group::OFFSETS_TOPIC || name == crate::txn::TXN_TOPIC
}

/// Kafka's topic name rules: 1 to 249 characters of `[a-zA-Z0-9._-]`,
/// not `.` or `..`.
pub fn validate_topic_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() {
        return Err("topic name is empty".into());
    }
    if name == "." || name == ".." {
        return Err(format!("topic name cannot be '{name}'"));
    }
    if name.len() > TOPIC_NAME_LEN_MAX {
        return Err(format!(
            "topic name is longer than {TOPIC_NAME_LEN_MAX} characters"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!("topic name '{name}' contains '{c}': only ASCII letters, digits, '.', '_' and '-' are allowed"));
    }
    Ok(())
}

/// Which shard owns a partition: spread a topic's partitions round-robin
/// over shards, starting at a point derived from the topic id so that
/// partition 0 of every topic does not land on shard 0.
pub fn owner_shard(topic_id: uuid::Uuid, partition: i32, shards: usize) -> usize {
    let start = u64::from_be_bytes(topic_id.as_bytes()[..8].try_into().expect("8 bytes"));
    ((start % shards as u64) as usize + partition as usize) % shards
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brokers_are_listed_at_the_address_of_the_listener_asked() {
        let endpoint = |h: &str, p| (h.to_string(), p);
        let mut s = Snapshot::empty(1);
        s.brokers.insert(
            1,
            BrokerMeta {
                host: "10.0.0.1".into(),
                port: 9094,
                listeners: [
                    ("PLAINTEXT".to_string(), endpoint("10.0.0.1", 9092)),
                    ("SSL".to_string(), endpoint("kafka1.example", 9093)),
                ]
                .into(),
                fenced: false,
            },
        );
        // Without the SSL listener: left out for SSL clients.
        s.brokers.insert(
            2,
            BrokerMeta {
                host: "10.0.0.2".into(),
                port: 9092,
                listeners: [("PLAINTEXT".to_string(), endpoint("10.0.0.2", 9092))].into(),
                fenced: false,
            },
        );
        // Registered before named listeners: one endpoint for every listener.
        s.brokers.insert(
            3,
            BrokerMeta {
                host: "10.0.0.3".into(),
                port: 9092,
                listeners: Default::default(),
                fenced: false,
            },
        );
        let on = |l: &str| -> Vec<(i32, String, u16)> {
            s.live_brokers_on(l)
                .map(|(id, h, p)| (id, h.to_string(), p))
                .collect()
        };
        assert_eq!(
            on("SSL"),
            vec![
                (1, "kafka1.example".to_string(), 9093),
                (3, "10.0.0.3".to_string(), 9092)
            ]
        );
        assert_eq!(on("PLAINTEXT").len(), 3);
    }

    #[test]
    fn topic_names() {
        assert!(validate_topic_name("orders.v1_x-y").is_ok());
        assert!(validate_topic_name("").is_err());
        assert!(validate_topic_name("..").is_err());
        assert!(validate_topic_name("bad name").is_err());
        assert!(validate_topic_name(&"x".repeat(250)).is_err());
    }

    #[test]
    fn partitions_spread_over_shards() {
        let id = uuid::Uuid::new_v4();
        let owners: std::collections::HashSet<_> = (0..4).map(|p| owner_shard(id, p, 2)).collect();
        assert_eq!(owners.len(), 2);
        assert_eq!(owner_shard(id, 5, 1), 0);
    }
}
