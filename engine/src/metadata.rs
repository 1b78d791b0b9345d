//! Cluster metadata as each shard sees it: an immutable snapshot of topics,
//! replaced whole when a topic is created or deleted. Shards read it without
//! locks; only shard 0 (the controller) makes new ones.
//!
//! Persisted as `topics.toml` in the data directory:
//! ```text
//! [topics."orders"]
//! id = "<topic id, base64 url-safe>"
//! partitions = 6
//! [topics."orders".config]
//! "retention.ms" = "86400000"
//! ```

use crate::config::{BrokerConfig, TopicConfig};
use crate::storage::checkpoint::{base64_url, base64_url_decode};
use crate::storage::{write_atomically, Result, StorageError};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

pub const TOPICS_FILE: &str = "topics.toml";

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
}

/// Every topic, by name and id.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub topics: BTreeMap<String, Arc<TopicMeta>>,
    by_id: HashMap<uuid::Uuid, String>,
}

impl Snapshot {
    pub fn new(topics: BTreeMap<String, Arc<TopicMeta>>) -> Snapshot {
        let by_id = topics.values().map(|t| (t.id, t.name.clone())).collect();
        Snapshot { topics, by_id }
    }

    pub fn topic(&self, name: &str) -> Option<&Arc<TopicMeta>> {
        self.topics.get(name)
    }

    pub fn topic_by_id(&self, id: uuid::Uuid) -> Option<&Arc<TopicMeta>> {
        self.by_id.get(&id).and_then(|n| self.topics.get(n))
    }

    /// A copy with `topic` added or replaced.
    pub fn with_topic(&self, topic: Arc<TopicMeta>) -> Snapshot {
        let mut topics = self.topics.clone();
        topics.insert(topic.name.clone(), topic);
        Snapshot::new(topics)
    }

    /// A copy without `name`.
    pub fn without_topic(&self, name: &str) -> Snapshot {
        let mut topics = self.topics.clone();
        topics.remove(name);
        Snapshot::new(topics)
    }
}

#[derive(Serialize, Deserialize, Default)]
struct TopicsFile {
    #[serde(default)]
    topics: BTreeMap<String, TopicEntry>,
}

#[derive(Serialize, Deserialize)]
struct TopicEntry {
    id: String,
    partitions: i32,
    #[serde(default)]
    config: BTreeMap<String, String>,
}

/// Loads `topics.toml`; a missing file means no topics.
pub fn load(data_dir: &Path, broker: &BrokerConfig) -> Result<Snapshot> {
    let path = data_dir.join(TOPICS_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Snapshot::default()),
        Err(e) => {
            return Err(StorageError::Io {
                op: "read",
                path,
                source: e,
            })
        }
    };
    let corrupt = |reason: String| StorageError::Corrupt {
        path: path.clone(),
        position: 0,
        reason,
    };
    let file: TopicsFile = toml::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
    let mut topics = BTreeMap::new();
    for (name, entry) in file.topics {
        let id = base64_url_decode(&entry.id)
            .and_then(|b| uuid::Uuid::from_slice(&b).ok())
            .ok_or_else(|| corrupt(format!("topic {name}: bad id")))?;
        let config = broker
            .topic_config(&entry.config)
            .map_err(|e| corrupt(format!("topic {name}: {e}")))?;
        let meta = TopicMeta {
            name: name.clone(),
            id,
            partitions: entry.partitions,
            overrides: entry.config,
            config: Arc::new(config),
        };
        topics.insert(name, Arc::new(meta));
    }
    Ok(Snapshot::new(topics))
}

/// Writes the snapshot's topics to `topics.toml` atomically.
pub fn save(data_dir: &Path, snapshot: &Snapshot) -> Result<()> {
    let file = TopicsFile {
        topics: snapshot
            .topics
            .values()
            .map(|t| {
                let entry = TopicEntry {
                    id: base64_url(t.id.as_bytes()),
                    partitions: t.partitions,
                    config: t.overrides.clone(),
                };
                (t.name.clone(), entry)
            })
            .collect(),
    };
    let text = toml::to_string(&file).expect("topics serialize");
    write_atomically(&data_dir.join(TOPICS_FILE), text.as_bytes())
}

/// Topics the broker writes itself; clients may read, not write or
/// delete them.
pub fn is_internal(name: &str) -> bool {
    name == crate::group::OFFSETS_TOPIC
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

    #[test]
    fn save_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let broker = BrokerConfig::default();
        let mut overrides = BTreeMap::new();
        overrides.insert("retention.ms".to_string(), "1000".to_string());
        let meta = TopicMeta {
            name: "t".into(),
            id: uuid::Uuid::new_v4(),
            partitions: 3,
            config: Arc::new(broker.topic_config(&overrides).unwrap()),
            overrides,
        };
        let snap = Snapshot::default().with_topic(Arc::new(meta));
        save(dir.path(), &snap).unwrap();
        let loaded = load(dir.path(), &broker).unwrap();
        let t = loaded.topic("t").unwrap();
        assert_eq!(t.partitions, 3);
        assert_eq!(t.config.retention_ms, 1000);
        assert!(loaded.topic_by_id(t.id).is_some());
    }
}
