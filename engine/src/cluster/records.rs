//! The cluster metadata log's records and the image they build.
//!
//! Every change to the cluster is a [`Record`]; a Raft entry holds a
//! batch of them that applies as one (a topic and all its partitions
//! appear together). Replaying the committed entries in order into a
//! [`ClusterImage`] gives every broker the same view: which brokers are
//! registered and alive, which topics exist, and for every partition its
//! replicas, leader, leader epoch and in-sync replicas. Records are JSON:
//! the log is small (it changes when topics, brokers or leaders do, not
//! with traffic) and a readable log is worth more than a compact one.

use crate::quota::entity::{QuotaEntity, QuotaKey, QuotaMap, QuotaValue};
use crate::replication::controller::PartitionState;
use crate::replication::NodeId;
use crate::security::acl::AclBinding;
use crate::security::sasl::scram::{ScramCredential, ScramMechanism};
use serde::{Deserialize, Serialize};
use sluice_protocol::LeaderEpoch;
use std::collections::BTreeMap;

/// Every listener's advertised host and port, by listener name.
pub type Endpoints = BTreeMap<String, (String, u16)>;

/// One change to the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Record {
    /// A broker started (again): where clients reach it. `incarnation`
    /// tells one run from the next.
    RegisterBroker {
        node: i32,
        host: String,
        port: u16,
        incarnation: u64,
        /// Every listener's endpoint; `host`/`port` are the inter-broker
        /// listener's. Absent in records of brokers with one listener.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        listeners: Endpoints,
    },
    /// A broker stopped heartbeating (`fenced`) or came back.
    FenceBroker {
        node: i32,
        fenced: bool,
    },
    Topic {
        name: String,
        id: String,
        partitions: i32,
        config: BTreeMap<String, String>,
    },
    /// A partition's whole replication state, new or changed.
    Partition {
        topic_id: String,
        index: i32,
        replicas: Vec<i32>,
        isr: Vec<i32>,
        /// -1 while the partition has no leader.
        leader: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        /// A running reassignment's added and removed replicas.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        adding: Vec<i32>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        removing: Vec<i32>,
    },
    RemoveTopic {
        id: String,
    },
    /// A topic's config overrides, all of them (AlterConfigs).
    TopicConfig {
        id: String,
        config: BTreeMap<String, String>,
    },
    /// The cluster's id, once, by the first controller (KRaft's cluster id
    /// belongs to the metadata quorum): every broker reports it, and a
    /// broker whose data belongs to another cluster is refused.
    ClusterId {
        id: String,
    },
    /// Producer ids `start..end` go to broker `node` to hand out
    /// (Kafka's ProducerIdsRecord): no id is given twice in the cluster,
    /// across restarts too.
    ProducerIds {
        node: i32,
        start: i64,
        end: i64,
    },
    /// A user's SCRAM credential for one mechanism, new or replaced
    /// (Kafka's UserScramCredentialRecord): salt, iterations, stored and
    /// server key, never the password.
    ScramCredential {
        user: String,
        mechanism: ScramMechanism,
        credential: ScramCredential,
    },
    RemoveScramCredential {
        user: String,
        mechanism: ScramMechanism,
    },
    /// An ACL (CreateAcls); one that exists already stays one.
    Acl {
        binding: AclBinding,
    },
    /// An ACL removed (DeleteAcls).
    RemoveAcl {
        binding: AclBinding,
    },
    /// A client quota set (Kafka's ClientQuotaRecord): for `entity`,
    /// quota `key` is `value`.
    ClientQuota {
        entity: QuotaEntity,
        key: QuotaKey,
        value: QuotaValue,
    },
    /// A client quota removed (ClientQuotaRecord with `remove`).
    RemoveClientQuota {
        entity: QuotaEntity,
        key: QuotaKey,
    },
}

impl Record {
    pub fn partition(topic_id: uuid::Uuid, index: i32, s: &PartitionState) -> Record {
        let ids = |v: &[NodeId]| v.iter().map(|n| n.0).collect();
        Record::Partition {
            topic_id: topic_id.to_string(),
            index,
            replicas: ids(&s.replicas),
            isr: ids(&s.isr),
            leader: s.leader.map_or(-1, |n| n.0),
            leader_epoch: s.leader_epoch.0,
            partition_epoch: s.partition_epoch,
            adding: ids(&s.adding),
            removing: ids(&s.removing),
        }
    }
}

/// A partition whose Partition record has not been applied yet.
fn unplaced() -> PartitionState {
    PartitionState::new(vec![NodeId(-1)])
}

/// Encodes one Raft entry's records.
pub fn encode(records: &[Record]) -> Vec<u8> {
    serde_json::to_vec(records).expect("records serialize")
}

/// Decodes one Raft entry's records.
pub fn decode(data: &[u8]) -> Result<Vec<Record>, String> {
    serde_json::from_slice(data).map_err(|e| e.to_string())
}

/// A registered broker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerInfo {
    pub host: String,
    pub port: u16,
    pub listeners: Endpoints,
    pub incarnation: u64,
    pub fenced: bool,
}

/// A topic as the metadata log has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicImage {
    pub name: String,
    pub id: uuid::Uuid,
    pub config: BTreeMap<String, String>,
    /// By partition index.
    pub partitions: Vec<PartitionState>,
}

/// The cluster as of one point in the metadata log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterImage {
    /// Raft index of the last entry applied.
    pub applied: u64,
    pub brokers: BTreeMap<i32, BrokerInfo>,
    pub topics: BTreeMap<String, TopicImage>,
    /// The first producer id not yet given to a broker.
    pub next_producer_id: i64,
    /// Each broker's latest block of producer ids.
    pub producer_ids: BTreeMap<i32, std::ops::Range<i64>>,
    /// The cluster's id, from its first controller.
    pub cluster_id: Option<String>,
    /// SCRAM credentials by user and mechanism.
    pub scram: BTreeMap<(String, ScramMechanism), ScramCredential>,
    /// Every ACL.
    pub acls: std::collections::BTreeSet<AclBinding>,
    /// Client quotas by entity.
    pub quotas: QuotaMap,
}

impl ClusterImage {
    /// Registered brokers that are not fenced, in id order.
    pub fn live_brokers(&self) -> Vec<NodeId> {
        self.brokers
            .iter()
            .filter(|(_, b)| !b.fenced)
            .map(|(id, _)| NodeId(*id))
            .collect()
    }

    /// Topic `name` and its partition `index`, if both exist.
    pub fn partition(&self, name: &str, index: i32) -> Option<(&TopicImage, &PartitionState)> {
        let t = self.topics.get(name)?;
        let p = t.partitions.get(usize::try_from(index).ok()?)?;
        Some((t, p))
    }

    pub fn topic_by_id(&self, id: uuid::Uuid) -> Option<&TopicImage> {
        self.topics.values().find(|t| t.id == id)
    }

    /// Records that build this image from an empty one: what a metadata
    /// snapshot holds (as Kafka's snapshots are records too).
    pub fn to_records(&self) -> Vec<Record> {
        let mut records = Vec::new();
        if let Some(id) = &self.cluster_id {
            records.push(Record::ClusterId { id: id.clone() });
        }
        for (node, b) in &self.brokers {
            records.push(Record::RegisterBroker {
                node: *node,
                host: b.host.clone(),
                port: b.port,
                incarnation: b.incarnation,
                listeners: b.listeners.clone(),
            });
            if b.fenced {
                records.push(Record::FenceBroker {
                    node: *node,
                    fenced: true,
                });
            }
        }
        for t in self.topics.values() {
            records.push(Record::Topic {
                name: t.name.clone(),
                id: t.id.to_string(),
                partitions: t.partitions.len() as i32,
                config: t.config.clone(),
            });
            for (index, p) in t.partitions.iter().enumerate() {
                records.push(Record::partition(t.id, index as i32, p));
            }
        }
        // The latest block handed out ends at `next_producer_id`, so the
        // blocks rebuild it.
        for (node, ids) in &self.producer_ids {
            records.push(Record::ProducerIds {
                node: *node,
                start: ids.start,
                end: ids.end,
            });
        }
        for ((user, mechanism), credential) in &self.scram {
            records.push(Record::ScramCredential {
                user: user.clone(),
                mechanism: *mechanism,
                credential: credential.clone(),
            });
        }
        records.extend(self.acls.iter().map(|b| Record::Acl { binding: b.clone() }));
        for (entity, values) in &self.quotas {
            for (key, value) in values {
                records.push(Record::ClientQuota {
                    entity: entity.clone(),
                    key: *key,
                    value: *value,
                });
            }
        }
        records
    }

    /// Applies one entry's records.
    pub fn apply(&mut self, index: u64, records: &[Record]) {
        for r in records {
            self.apply_one(r);
        }
        self.applied = index;
    }

    fn apply_one(&mut self, r: &Record) {
        match r {
            Record::RegisterBroker {
                node,
                host,
                port,
                incarnation,
                listeners,
            } => {
                self.brokers.insert(
                    *node,
                    BrokerInfo {
                        host: host.clone(),
                        port: *port,
                        listeners: listeners.clone(),
                        incarnation: *incarnation,
                        fenced: false,
                    },
                );
            }
            Record::ClusterId { id } => match &self.cluster_id {
                None => self.cluster_id = Some(id.clone()),
                Some(current) if current != id => {
                    tracing::error!(%current, other = %id, "a second cluster id in the metadata log; keeping the first");
                }
                Some(_) => {}
            },
            Record::FenceBroker { node, fenced } => {
                if let Some(b) = self.brokers.get_mut(node) {
                    b.fenced = *fenced;
                }
            }
            Record::Topic {
                name,
                id,
                partitions,
                config,
            } => {
                let Ok(id) = id.parse() else {
                    tracing::error!(topic = %name, %id, "metadata record with a bad topic id");
                    return;
                };
                self.topics.insert(
                    name.clone(),
                    TopicImage {
                        name: name.clone(),
                        id,
                        config: config.clone(),
                        partitions: vec![unplaced(); (*partitions).max(0) as usize],
                    },
                );
            }
            Record::Partition {
                topic_id,
                index,
                replicas,
                isr,
                leader,
                leader_epoch,
                partition_epoch,
                adding,
                removing,
            } => {
                let Some(topic) = topic_id
                    .parse::<uuid::Uuid>()
                    .ok()
                    .and_then(|id| self.topics.values_mut().find(|t| t.id == id))
                else {
                    return;
                };
                let nodes = |v: &[i32]| v.iter().copied().map(NodeId).collect();
                let state = PartitionState {
                    leader: (*leader >= 0).then_some(NodeId(*leader)),
                    leader_epoch: LeaderEpoch(*leader_epoch),
                    partition_epoch: *partition_epoch,
                    isr: nodes(isr),
                    replicas: nodes(replicas),
                    adding: nodes(adding),
                    removing: nodes(removing),
                };
                let Ok(index) = usize::try_from(*index) else {
                    return;
                };
                // One past the end adds a partition (CreatePartitions).
                if index >= topic.partitions.len() {
                    topic.partitions.resize(index + 1, unplaced());
                }
                topic.partitions[index] = state;
            }
            Record::TopicConfig { id, config } => {
                if let Some(t) = id
                    .parse::<uuid::Uuid>()
                    .ok()
                    .and_then(|id| self.topics.values_mut().find(|t| t.id == id))
                {
                    t.config = config.clone();
                }
            }
            Record::RemoveTopic { id } => {
                if let Ok(id) = id.parse::<uuid::Uuid>() {
                    self.topics.retain(|_, t| t.id != id);
                }
            }
            Record::ProducerIds { node, start, end } => {
                self.next_producer_id = self.next_producer_id.max(*end);
                self.producer_ids.insert(*node, *start..*end);
            }
            Record::ScramCredential {
                user,
                mechanism,
                credential,
            } => {
                if !credential.is_valid_for(*mechanism) {
                    tracing::error!(%user, mechanism = mechanism.name(), "metadata record with a malformed SCRAM credential; ignored");
                    return;
                }
                self.scram
                    .insert((user.clone(), *mechanism), credential.clone());
            }
            Record::RemoveScramCredential { user, mechanism } => {
                self.scram.remove(&(user.clone(), *mechanism));
            }
            Record::Acl { binding } => {
                self.acls.insert(binding.clone());
            }
            Record::RemoveAcl { binding } => {
                self.acls.remove(binding);
            }
            Record::ClientQuota { entity, key, value } => {
                self.quotas
                    .entry(entity.clone())
                    .or_default()
                    .insert(*key, *value);
            }
            Record::RemoveClientQuota { entity, key } => {
                if let Some(values) = self.quotas.get_mut(entity) {
                    values.remove(key);
                    if values.is_empty() {
                        self.quotas.remove(entity);
                    }
                }
            }
        }
    }
}

/// For tests: the registrations of `nodes` (first incarnation, port
/// 9000 + id), as the controller commits them.
#[cfg(test)]
pub fn registrations(nodes: &[i32]) -> Vec<Record> {
    nodes
        .iter()
        .map(|&node| Record::RegisterBroker {
            node,
            host: "127.0.0.1".into(),
            port: 9000 + node as u16,
            incarnation: 1,
            listeners: Default::default(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(topic: &str) -> AclBinding {
        AclBinding::from_wire(2, topic, 3, "User:alice", "*", 3, 3).unwrap()
    }

    #[test]
    fn records_build_the_image() {
        let id = uuid::Uuid::new_v4();
        let mut image = ClusterImage::default();
        let state = PartitionState::new(vec![NodeId(2), NodeId(1)]);
        let entry = vec![
            Record::RegisterBroker {
                node: 1,
                host: "127.0.0.1".into(),
                port: 9092,
                incarnation: 7,
                listeners: Default::default(),
            },
            Record::Topic {
                name: "t".into(),
                id: id.to_string(),
                partitions: 1,
                config: BTreeMap::new(),
            },
            Record::partition(id, 0, &state),
        ];
        let decoded = decode(&encode(&entry)).unwrap();
        assert_eq!(decoded, entry);
        image.apply(3, &decoded);
        assert_eq!(image.applied, 3);
        assert_eq!(image.live_brokers(), vec![NodeId(1)]);
        assert_eq!(image.topics["t"].partitions[0], state);
        image.apply(
            4,
            &[Record::FenceBroker {
                node: 1,
                fenced: true,
            }],
        );
        assert!(image.live_brokers().is_empty());
        image.apply(5, &[Record::RemoveTopic { id: id.to_string() }]);
        assert!(image.topics.is_empty());
        let block = |node, start, end| Record::ProducerIds { node, start, end };
        image.apply(6, &[block(1, 0, 1000), block(2, 1000, 2000)]);
        image.apply(7, &[block(1, 2000, 3000)]);
        assert_eq!(image.next_producer_id, 3000);
        assert_eq!(image.producer_ids[&1], 2000..3000);
        assert_eq!(image.producer_ids[&2], 1000..2000);
    }

    fn alice_app() -> QuotaEntity {
        use crate::quota::entity::Name;
        QuotaEntity {
            user: Some(Name::Named("alice".into())),
            client_id: Some(Name::Default),
        }
    }

    #[test]
    fn an_image_rebuilds_from_its_records() {
        let id = uuid::Uuid::new_v4();
        let mut image = ClusterImage::default();
        let mut state = PartitionState::new(vec![NodeId(1), NodeId(2)]);
        state.isr = vec![NodeId(1)];
        state.leader_epoch = LeaderEpoch(4);
        state.partition_epoch = 6;
        let broker = |node| Record::RegisterBroker {
            node,
            host: "127.0.0.1".into(),
            port: 9090 + node as u16,
            incarnation: node as u64,
            listeners: Default::default(),
        };
        image.apply(
            9,
            &[
                broker(1),
                broker(2),
                Record::FenceBroker {
                    node: 2,
                    fenced: true,
                },
                Record::Topic {
                    name: "t".into(),
                    id: id.to_string(),
                    partitions: 2,
                    config: [("cleanup.policy".to_string(), "compact".to_string())].into(),
                },
                Record::partition(id, 0, &state),
                Record::partition(id, 1, &PartitionState::new(vec![NodeId(2)])),
                Record::ProducerIds {
                    node: 1,
                    start: 0,
                    end: 1000,
                },
                Record::ProducerIds {
                    node: 2,
                    start: 1000,
                    end: 2000,
                },
                Record::ScramCredential {
                    user: "alice".into(),
                    mechanism: ScramMechanism::Sha512,
                    credential: ScramCredential::from_password(ScramMechanism::Sha512, "s", 4096),
                },
                Record::ScramCredential {
                    user: "bob".into(),
                    mechanism: ScramMechanism::Sha256,
                    credential: ScramCredential::from_password(ScramMechanism::Sha256, "s", 4096),
                },
                Record::RemoveScramCredential {
                    user: "bob".into(),
                    mechanism: ScramMechanism::Sha256,
                },
                Record::ClientQuota {
                    entity: alice_app(),
                    key: QuotaKey::ProducerByteRate,
                    value: QuotaValue(1024.0),
                },
                Record::ClientQuota {
                    entity: alice_app(),
                    key: QuotaKey::RequestPercentage,
                    value: QuotaValue(50.0),
                },
                Record::RemoveClientQuota {
                    entity: alice_app(),
                    key: QuotaKey::RequestPercentage,
                },
                Record::Acl {
                    binding: acl("orders"),
                },
                Record::Acl {
                    binding: acl("payments"),
                },
                Record::RemoveAcl {
                    binding: acl("orders"),
                },
            ],
        );
        assert_eq!(image.scram.len(), 1);
        assert_eq!(image.acls.len(), 1);
        assert_eq!(image.quotas[&alice_app()].len(), 1);
        let mut rebuilt = ClusterImage::default();
        rebuilt.apply(9, &decode(&encode(&image.to_records())).unwrap());
        assert_eq!(rebuilt, image);
    }
}
