//! Broker and topic configuration, under Kafka's key names.
//!
//! Every key Sluice knows is declared once in [`KEYS`] with its type,
//! default and, for topic-level keys, the broker-level key that sets its
//! default (`flush.messages` ↔ `log.flush.interval.messages`). Values come
//! from, in rising priority: defaults, the TOML file (dotted keys such as
//! `log.segment.bytes = 1073741824` are Kafka's names), then `--override`.
//! DescribeConfigs reports every key with its source, as Kafka does.

use crate::security::sasl;
use sluice_protocol::record_batch::Compression;
use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use thiserror::Error;

/// What type a key's value has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Int,
    Long,
    Bool,
    Text,
    OneOf(&'static [&'static str]),
    /// A double from 0 to 1 (`min.cleanable.dirty.ratio`).
    Ratio,
}

/// A known configuration key.
#[derive(Clone, Copy, Debug)]
pub struct Key {
    /// Broker-level name (for topic keys: the broker default's name).
    pub broker: Option<&'static str>,
    /// Topic-level name, for keys a topic may override.
    pub topic: Option<&'static str>,
    pub kind: Kind,
    pub default: &'static str,
    /// Smallest allowed value for numbers.
    pub min: i64,
}

const LONG_MAX: &str = "9223372036854775807";

/// Keys whose values are comma-separated lists: APPEND and SUBTRACT
/// change them, DescribeConfigs gives their type as a list.
pub const LIST_KEYS: &[&str] = &["cleanup.policy", "log.cleanup.policy"];

/// Broker keys Kafka leaves unset by default, deriving the value from
/// another key (`log.retention.hours`, `log.roll.hours`,
/// `log.roll.jitter.hours`, the flush scheduler's interval). Sluice has no
/// such second key and gives these the derived value as their default,
/// but reports no default synonym for them, as Kafka reports none.
pub const KAFKA_UNSET_DEFAULTS: &[&str] = &[
    "log.retention.ms",
    "log.roll.ms",
    "log.roll.jitter.ms",
    "log.flush.interval.ms",
];

const fn broker(name: &'static str, kind: Kind, default: &'static str, min: i64) -> Key {
    Key {
        broker: Some(name),
        topic: None,
        kind,
        default,
        min,
    }
}

const fn topic(
    name: &'static str,
    broker_name: Option<&'static str>,
    kind: Kind,
    default: &'static str,
    min: i64,
) -> Key {
    Key {
        broker: broker_name,
        topic: Some(name),
        kind,
        default,
        min,
    }
}

/// Every key Sluice knows, with Kafka's defaults.
pub const KEYS: &[Key] = &[
    broker("node.id", Kind::Int, "1", 0),
    broker("listeners", Kind::Text, "PLAINTEXT://127.0.0.1:9092", 0),
    broker("advertised.listeners", Kind::Text, "", 0),
    broker(
        "listener.security.protocol.map",
        Kind::Text,
        "PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL",
        0,
    ),
    broker("inter.broker.listener.name", Kind::Text, "", 0),
    broker("controller.listener.names", Kind::Text, "", 0),
    broker("ssl.keystore.type", Kind::OneOf(&["PEM"]), "PEM", 0),
    broker("ssl.keystore.location", Kind::Text, "", 0),
    broker("ssl.keystore.certificate.chain", Kind::Text, "", 0),
    broker("ssl.keystore.key", Kind::Text, "", 0),
    broker("ssl.truststore.type", Kind::OneOf(&["PEM"]), "PEM", 0),
    broker("ssl.truststore.location", Kind::Text, "", 0),
    broker("ssl.truststore.certificates", Kind::Text, "", 0),
    broker(
        "ssl.client.auth",
        Kind::OneOf(&["none", "requested", "required"]),
        "none",
        0,
    ),
    broker("ssl.enabled.protocols", Kind::Text, "TLSv1.2,TLSv1.3", 0),
    broker("ssl.cipher.suites", Kind::Text, "", 0),
    broker("ssl.principal.mapping.rules", Kind::Text, "DEFAULT", 0),
    broker("log.dirs", Kind::Text, "./data", 0),
    broker("num.partitions", Kind::Int, "1", 1),
    broker("default.replication.factor", Kind::Int, "1", 1),
    broker("auto.create.topics.enable", Kind::Bool, "true", 0),
    broker("delete.topic.enable", Kind::Bool, "true", 0),
    broker("socket.request.max.bytes", Kind::Int, "104857600", 1),
    broker("max.connections", Kind::Int, "2147483647", 0),
    broker("max.connections.per.ip", Kind::Int, "2147483647", 0),
    broker("max.connections.per.ip.overrides", Kind::Text, "", 0),
    broker("connections.max.idle.ms", Kind::Long, "600000", 1),
    broker(
        "log.flush.offset.checkpoint.interval.ms",
        Kind::Int,
        "60000",
        1,
    ),
    broker("log.flush.scheduler.interval.ms", Kind::Long, "1000", 1),
    broker("cluster.id", Kind::Text, "", 0),
    broker("controller.quorum.voters", Kind::Text, "", 0),
    broker("broker.session.timeout.ms", Kind::Int, "9000", 1),
    broker("broker.heartbeat.interval.ms", Kind::Int, "2000", 1),
    broker("controlled.shutdown.enable", Kind::Bool, "true", 0),
    broker("metrics.listener", Kind::Text, "", 0),
    broker("metrics.partition.level", Kind::Bool, "false", 0),
    broker("controlled.shutdown.max.retries", Kind::Int, "3", 1),
    broker("controlled.shutdown.retry.backoff.ms", Kind::Long, "5000", 0),
    broker(
        "metadata.log.max.record.bytes.between.snapshots",
        Kind::Long,
        "20971520",
        1,
    ),
    broker("replica.lag.time.max.ms", Kind::Long, "30000", 1),
    broker("auto.leader.rebalance.enable", Kind::Bool, "true", 0),
    broker(
        "leader.imbalance.check.interval.seconds",
        Kind::Long,
        "300",
        1,
    ),
    broker("leader.imbalance.per.broker.percentage", Kind::Int, "10", 0),
    broker("offsets.topic.num.partitions", Kind::Int, "50", 1),
    broker("offsets.topic.replication.factor", Kind::Int, "3", 1),
    broker("offsets.topic.segment.bytes", Kind::Int, "104857600", 14),
    broker("offsets.retention.minutes", Kind::Int, "10080", 1),
    broker("transaction.state.log.num.partitions", Kind::Int, "50", 1),
    broker("transaction.state.log.replication.factor", Kind::Int, "3", 1),
    broker("transaction.state.log.min.isr", Kind::Int, "2", 1),
    broker(
        "transaction.state.log.segment.bytes",
        Kind::Int,
        "104857600",
        14,
    ),
    broker("transaction.max.timeout.ms", Kind::Int, "900000", 1),
    broker(
        "transaction.partition.verification.enable",
        Kind::Bool,
        "true",
        0,
    ),
    broker(
        "transaction.abort.timed.out.transaction.cleanup.interval.ms",
        Kind::Int,
        "10000",
        1,
    ),
    broker("transactional.id.expiration.ms", Kind::Int, "604800000", 1),
    broker(
        "transaction.remove.expired.transaction.cleanup.interval.ms",
        Kind::Int,
        "3600000",
        1,
    ),
    broker(
        "offsets.retention.check.interval.ms",
        Kind::Long,
        "600000",
        1,
    ),
    broker("offset.metadata.max.bytes", Kind::Int, "4096", 0),
    broker("group.initial.rebalance.delay.ms", Kind::Int, "3000", 0),
    broker("group.min.session.timeout.ms", Kind::Int, "6000", 0),
    broker("group.max.session.timeout.ms", Kind::Int, "1800000", 0),
    broker("group.max.size", Kind::Int, "2147483647", 1),
    broker("sasl.enabled.mechanisms", Kind::Text, "PLAIN", 0),
    broker("connections.max.reauth.ms", Kind::Long, "0", 0),
    broker(
        "connection.failed.authentication.delay.ms",
        Kind::Int,
        "100",
        0,
    ),
    broker("sasl.server.max.receive.size", Kind::Int, "524288", 1),
    broker("sasl.oauthbearer.jwks.endpoint.url", Kind::Text, "", 0),
    broker("sasl.oauthbearer.expected.audience", Kind::Text, "", 0),
    broker("sasl.oauthbearer.expected.issuer", Kind::Text, "", 0),
    broker("sasl.oauthbearer.sub.claim.name", Kind::Text, "sub", 0),
    broker("group.consumer.session.timeout.ms", Kind::Int, "45000", 1),
    broker("group.consumer.heartbeat.interval.ms", Kind::Int, "5000", 1),
    broker("group.consumer.migration.policy", Kind::Text, "bidirectional", 0),
    broker("authorizer.class.name", Kind::Text, "", 0),
    broker("super.users", Kind::Text, "", 0),
    broker("allow.everyone.if.no.acl.found", Kind::Bool, "false", 0),
    broker(
        "group.consumer.assignors",
        Kind::Text,
        "org.apache.kafka.coordinator.group.assignor.UniformAssignor,org.apache.kafka.coordinator.group.assignor.RangeAssignor",
        0,
    ),
    broker(
        "log.cleaner.dedupe.buffer.size",
        Kind::Long,
        "134217728",
        1 << 20,
    ),
    broker(
        "log.cleaner.io.max.bytes.per.second",
        Kind::Long,
        LONG_MAX,
        1,
    ),
    broker("log.cleaner.backoff.ms", Kind::Long, "15000", 1),
    broker("log.cleaner.threads", Kind::Long, "1", 1),
    broker("reactor.stall.threshold.ms", Kind::Long, "0", 0),
    topic(
        "min.cleanable.dirty.ratio",
        Some("log.cleaner.min.cleanable.ratio"),
        Kind::Ratio,
        "0.5",
        0,
    ),
    topic(
        "min.compaction.lag.ms",
        Some("log.cleaner.min.compaction.lag.ms"),
        Kind::Long,
        "0",
        0,
    ),
    topic(
        "max.compaction.lag.ms",
        Some("log.cleaner.max.compaction.lag.ms"),
        Kind::Long,
        LONG_MAX,
        1,
    ),
    topic(
        "delete.retention.ms",
        Some("log.cleaner.delete.retention.ms"),
        Kind::Long,
        "86400000",
        0,
    ),
    topic(
        "cleanup.policy",
        Some("log.cleanup.policy"),
        Kind::OneOf(&["delete", "compact", "compact,delete", "delete,compact"]),
        "delete",
        0,
    ),
    topic(
        "compression.type",
        Some("compression.type"),
        Kind::OneOf(&["producer", "uncompressed", "gzip", "snappy", "lz4", "zstd"]),
        "producer",
        0,
    ),
    topic(
        "max.message.bytes",
        Some("message.max.bytes"),
        Kind::Int,
        "1048588",
        0,
    ),
    topic(
        "segment.bytes",
        Some("log.segment.bytes"),
        Kind::Int,
        "1073741824",
        14,
    ),
    topic(
        "segment.ms",
        Some("log.roll.ms"),
        Kind::Long,
        "604800000",
        1,
    ),
    topic(
        "segment.jitter.ms",
        Some("log.roll.jitter.ms"),
        Kind::Long,
        "0",
        0,
    ),
    topic(
        "segment.index.bytes",
        Some("log.index.size.max.bytes"),
        Kind::Int,
        "10485760",
        4,
    ),
    topic(
        "index.interval.bytes",
        Some("log.index.interval.bytes"),
        Kind::Int,
        "4096",
        0,
    ),
    topic(
        "flush.messages",
        Some("log.flush.interval.messages"),
        Kind::Long,
        LONG_MAX,
        1,
    ),
    topic(
        "flush.ms",
        Some("log.flush.interval.ms"),
        Kind::Long,
        LONG_MAX,
        0,
    ),
    topic(
        "retention.ms",
        Some("log.retention.ms"),
        Kind::Long,
        "604800000",
        -1,
    ),
    topic(
        "retention.bytes",
        Some("log.retention.bytes"),
        Kind::Long,
        "-1",
        -1,
    ),
    topic(
        "min.insync.replicas",
        Some("min.insync.replicas"),
        Kind::Int,
        "1",
        1,
    ),
    topic(
        "message.timestamp.type",
        Some("log.message.timestamp.type"),
        Kind::OneOf(&["CreateTime", "LogAppendTime"]),
        "CreateTime",
        0,
    ),
    topic(
        "message.timestamp.after.max.ms",
        Some("log.message.timestamp.after.max.ms"),
        Kind::Long,
        "3600000",
        0,
    ),
    topic(
        "unclean.leader.election.enable",
        Some("unclean.leader.election.enable"),
        Kind::Bool,
        "false",
        0,
    ),
    topic(
        "file.delete.delay.ms",
        Some("log.segment.delete.delay.ms"),
        Kind::Long,
        "60000",
        0,
    ),
    broker("log.retention.check.interval.ms", Kind::Long, "300000", 1),
];

/// Refuses topic settings that are each valid but cannot hold together,
/// naming the key at fault. `get` gives a topic key's effective value
/// (checked by [`check_value`]). Checked wherever a topic's settings
/// change (CreateTopics, AlterConfigs, IncrementalAlterConfigs) and, for
/// the broker defaults, at start.
pub fn check_topic_combination<'a>(
    get: impl Fn(&str) -> Option<&'a str>,
) -> Result<(), ConfigError> {
    let long = |k: &str| get(k).and_then(|v| v.parse::<i64>().ok());
    if let (Some(min), Some(max)) = (long("min.compaction.lag.ms"), long("max.compaction.lag.ms")) {
        if min > max {
            return Err(ConfigError::Refused {
                key: "min.compaction.lag.ms".into(),
                reason: format!(
                    "{min} is above max.compaction.lag.ms ({max}) (as broker defaults: \
                     log.cleaner.min.compaction.lag.ms, log.cleaner.max.compaction.lag.ms): \
                     a record cannot be compacted both no sooner than the first and no later \
                     than the second"
                ),
            });
        }
    }
    Ok(())
}

/// A configuration value was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("unknown config key '{0}'")]
    UnknownKey(String),
    #[error("invalid value '{value}' for '{key}': expected {expected}")]
    InvalidValue {
        key: String,
        value: String,
        expected: String,
    },
    #[error("config file {path}: {reason}")]
    File { path: String, reason: String },
    /// A value that parses but cannot be served as given (a listener
    /// without its certificate, two listeners on one port).
    #[error("'{key}': {reason}")]
    Refused { key: String, reason: String },
}

/// Keys whose values are secrets: DescribeConfigs reports them without
/// a value, as Kafka does for its password-typed keys.
pub const SENSITIVE_KEYS: &[&str] = &["ssl.keystore.key"];

/// Whether `name` (a broker key, or its `listener.name.<l>.` form) holds
/// a secret.
pub fn is_sensitive(name: &str) -> bool {
    SENSITIVE_KEYS
        .iter()
        .any(|k| name == *k || name.ends_with(&format!(".{k}")))
}

fn find_broker_key(name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.broker == Some(name))
}

/// Finds a topic-level key by its topic name.
pub fn find_topic_key(name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.topic == Some(name))
}

/// Checks `value` against `key`'s type; returns it normalized.
pub fn check_value(name: &str, key: &Key, value: &str) -> Result<String, ConfigError> {
    let bad = |expected: String| ConfigError::InvalidValue {
        key: name.to_string(),
        value: value.to_string(),
        expected,
    };
    let number = |max: i64, what: &str| -> Result<String, ConfigError> {
        let n: i64 = value.trim().parse().map_err(|_| bad(what.to_string()))?;
        if n < key.min || n > max {
            return Err(bad(format!("{what} from {} to {max}", key.min)));
        }
        Ok(n.to_string())
    };
    match key.kind {
        Kind::Int => number(i64::from(i32::MAX), "an int"),
        Kind::Long => number(i64::MAX, "a long"),
        Kind::Bool => match value.trim().to_ascii_lowercase().as_str() {
            v @ ("true" | "false") => Ok(v.to_string()),
            _ => Err(bad("true or false".into())),
        },
        Kind::Text => Ok(value.to_string()),
        Kind::Ratio => match value.trim().parse::<f64>() {
            Ok(r) if (0.0..=1.0).contains(&r) => Ok(r.to_string()),
            _ => Err(bad("a double from 0 to 1".into())),
        },
        Kind::OneOf(allowed) => allowed
            .iter()
            .find(|a| a.eq_ignore_ascii_case(&list_normalized(name, value)))
            .map(|a| a.to_string())
            .ok_or_else(|| bad(format!("one of {}", allowed.join(", ")))),
    }
}

/// A list key's value with its items trimmed and repeats dropped
/// (`compact, delete` and `compact,delete,compact` are `compact,delete`,
/// as Kafka reads lists); other keys' values trimmed.
fn list_normalized(name: &str, value: &str) -> String {
    let is_list = LIST_KEYS.contains(&name);
    if !is_list {
        return value.trim().to_string();
    }
    let mut items: Vec<&str> = Vec::new();
    for item in value.split(',').map(str::trim) {
        if !items.contains(&item) {
            items.push(item);
        }
    }
    items.join(",")
}

/// Where a value came from, as DescribeConfigs reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Default,
    StaticBroker,
    Topic,
}

/// Effective settings of one topic, parsed for the data path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicConfig {
    pub max_message_bytes: usize,
    pub segment_bytes: u64,
    pub segment_ms: i64,
    /// `segment.jitter.ms`: up to this much is taken off `segment.ms`,
    /// differently for each segment, so partitions created together do
    /// not all roll at once.
    pub segment_jitter_ms: i64,
    /// `segment.index.bytes`: a segment rolls once its offset or time
    /// index would grow past this.
    pub segment_index_bytes: u64,
    pub index_interval_bytes: u64,
    pub flush_messages: i64,
    pub flush_ms: i64,
    pub retention_ms: i64,
    pub retention_bytes: i64,
    /// `cleanup.policy` includes `delete`: retention removes old segments.
    pub delete_retention: bool,
    /// `cleanup.policy` includes `compact`: every record needs a key.
    pub compact: bool,
    /// `compression.type`: the codec appended batches are rewritten in;
    /// `None` (`producer`) keeps each batch as its producer compressed it.
    pub compression: Option<Compression>,
    /// `file.delete.delay.ms`: how long a deleted segment's files stay,
    /// renamed `.deleted`, before they are removed.
    pub file_delete_delay_ms: i64,
    /// `min.cleanable.dirty.ratio`, in millionths.
    pub min_cleanable_dirty_ppm: u64,
    /// `min.compaction.lag.ms`: records younger than this stay uncleaned.
    pub min_compaction_lag_ms: i64,
    /// `max.compaction.lag.ms`: a record older than this gets its log
    /// cleaned whatever the dirty ratio.
    pub max_compaction_lag_ms: i64,
    /// `delete.retention.ms`: how long a tombstone stays once cleaned.
    pub delete_retention_ms: i64,
    pub log_append_time: bool,
    /// `message.timestamp.after.max.ms`: how far past the broker's clock a
    /// record's CreateTime may be (Kafka 4's default: one hour).
    pub timestamp_after_max_ms: i64,
    /// `min.insync.replicas`: the smallest ISR that takes acks=all.
    pub min_insync_replicas: usize,
    /// `unclean.leader.election.enable`.
    pub unclean_leader_election: bool,
    /// The values as strings, every topic key present.
    pub values: BTreeMap<String, (String, Source)>,
}

/// The codec `compression.type` names; `None` for `producer`.
fn codec(name: &str) -> Option<Compression> {
    match name {
        "uncompressed" => Some(Compression::None),
        "gzip" => Some(Compression::Gzip),
        "snappy" => Some(Compression::Snappy),
        "lz4" => Some(Compression::Lz4),
        "zstd" => Some(Compression::Zstd),
        _ => None,
    }
}

impl TopicConfig {
    fn long(values: &BTreeMap<String, (String, Source)>, k: &str) -> i64 {
        values[k].0.parse().expect("values are checked when set")
    }

    fn from_values(values: BTreeMap<String, (String, Source)>) -> TopicConfig {
        TopicConfig {
            max_message_bytes: Self::long(&values, "max.message.bytes") as usize,
            segment_bytes: Self::long(&values, "segment.bytes") as u64,
            segment_ms: Self::long(&values, "segment.ms"),
            segment_jitter_ms: Self::long(&values, "segment.jitter.ms"),
            segment_index_bytes: Self::long(&values, "segment.index.bytes") as u64,
            index_interval_bytes: Self::long(&values, "index.interval.bytes") as u64,
            flush_messages: Self::long(&values, "flush.messages"),
            flush_ms: Self::long(&values, "flush.ms"),
            retention_ms: Self::long(&values, "retention.ms"),
            retention_bytes: Self::long(&values, "retention.bytes"),
            delete_retention: values["cleanup.policy"].0.contains("delete"),
            compact: values["cleanup.policy"].0.contains("compact"),
            compression: codec(&values["compression.type"].0),
            file_delete_delay_ms: Self::long(&values, "file.delete.delay.ms"),
            min_cleanable_dirty_ppm: (values["min.cleanable.dirty.ratio"]
                .0
                .parse::<f64>()
                .expect("values are checked when set")
                * 1e6)
                .round() as u64,
            min_compaction_lag_ms: Self::long(&values, "min.compaction.lag.ms"),
            max_compaction_lag_ms: Self::long(&values, "max.compaction.lag.ms"),
            delete_retention_ms: Self::long(&values, "delete.retention.ms"),
            log_append_time: values["message.timestamp.type"].0 == "LogAppendTime",
            timestamp_after_max_ms: Self::long(&values, "message.timestamp.after.max.ms"),
            min_insync_replicas: Self::long(&values, "min.insync.replicas").max(1) as usize,
            unclean_leader_election: values["unclean.leader.election.enable"].0 == "true",
            values,
        }
    }
}

/// The broker's configuration.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    pub listen: SocketAddr,
    /// host:port clients are told to connect to.
    pub advertised: (String, u16),
    pub data_dir: PathBuf,
    pub cores: usize,
    /// CPUs the shards are pinned to, shard `i` on `cpus[i % len]`; `None`
    /// spreads them over every online CPU.
    pub cpus: Option<Vec<usize>>,
    pub node_id: i32,
    /// Every broker key's value and source (topic keys under broker names).
    values: BTreeMap<&'static str, (String, Source)>,
    /// SASL keys outside [`KEYS`]: listener-scoped ones and secrets,
    /// which DescribeConfigs does not report.
    sasl_values: BTreeMap<String, String>,
    /// `listener.name.<listener>.ssl.*`: per-listener TLS settings, by
    /// lower-case listener name and the `ssl.*` key they override.
    listener_overrides: BTreeMap<(String, &'static str), String>,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        let mut c = BrokerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9092)),
            advertised: ("127.0.0.1".into(), 9092),
            data_dir: PathBuf::from("./data"),
            cores: online_cpus(),
            cpus: None,
            node_id: 1,
            values: BTreeMap::new(),
            sasl_values: BTreeMap::new(),
            listener_overrides: BTreeMap::new(),
        };
        for k in KEYS {
            if let Some(b) = k.broker {
                c.values.insert(b, (k.default.to_string(), Source::Default));
            }
        }
        c
    }
}

/// Number of CPUs this process may run on.
pub fn online_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Parses a CPU list as `taskset -c` takes it: `0,2-3`.
pub fn parse_cpu_list(key: &str, value: &str) -> Result<Vec<usize>, ConfigError> {
    let bad = || ConfigError::InvalidValue {
        key: key.to_string(),
        value: value.to_string(),
        expected: "CPU numbers and ranges, e.g. 0,2-3".into(),
    };
    let mut cpus = Vec::new();
    for part in value.split(',').map(str::trim) {
        let (first, last) = part.split_once('-').unwrap_or((part, part));
        let first: usize = first.trim().parse().map_err(|_| bad())?;
        let last: usize = last.trim().parse().map_err(|_| bad())?;
        if last < first {
            return Err(bad());
        }
        cpus.extend(first..=last);
    }
    Ok(cpus)
}

/// The CPUs for broker `index` (0-based) of several on one machine, each
/// with `cores` shards: consecutive CPUs, the next broker starting where
/// the last ended, wrapping around, so brokers share a CPU only once every
/// CPU has one. Without this every broker would pin its first shard to
/// the same CPU.
pub fn cpus_for_broker(index: usize, cores: usize) -> Vec<usize> {
    let online = online_cpus().max(1);
    (0..cores.max(1))
        .map(|j| (index * cores.max(1) + j) % online)
        .collect()
}

/// A value for an error message: a JAAS config or SCRAM user list holds
/// passwords, which stay out of messages and logs.
fn hide_secret(key: &str, value: &str) -> String {
    match sasl::config::is_secret(key) {
        true => "(hidden: it holds passwords)".into(),
        false => value.to_string(),
    }
}

/// The protocol of the first listener. Until listeners are named, the
/// one listener is PLAINTEXT or SASL_PLAINTEXT; TLS listeners are refused
/// rather than served as plaintext.
fn parse_listener(key: &str, value: &str) -> Result<(String, u16), ConfigError> {
    let bad = || ConfigError::InvalidValue {
        key: key.to_string(),
        value: value.to_string(),
        expected: "PLAINTEXT://HOST:PORT".into(),
    };
    let first = value.split(',').next().unwrap_or("").trim();
    let hostport = first.split_once("://").map_or(first, |(_, rest)| rest);
    let (host, port) = hostport.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Ok((host.to_string(), port))
}

impl BrokerConfig {
    /// Sets a key by its broker name or, for topic keys, its topic name.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), ConfigError> {
        let refused = |expected: String| ConfigError::InvalidValue {
            key: name.to_string(),
            value: hide_secret(name, value),
            expected,
        };
        if sasl::config::is_unlisted_key(name) {
            sasl::config::check(name, value).map_err(refused)?;
            self.sasl_values.insert(name.to_string(), value.to_string());
            return Ok(());
        }
        if let Some(rest) = name.strip_prefix("listener.name.") {
            return self.set_listener_override(name, rest, value);
        }
        let (key, broker_name): (&Key, &'static str) = match find_broker_key(name) {
            Some(k) => (k, k.broker.expect("found by broker name")),
            None => match find_topic_key(name) {
                Some(k) => (
                    k,
                    k.broker
                        .ok_or_else(|| ConfigError::UnknownKey(name.into()))?,
                ),
                None => return Err(ConfigError::UnknownKey(name.to_string())),
            },
        };
        let value = check_value(name, key, value)?;
        if broker_name.starts_with("sasl.") || broker_name == sasl::config::REAUTH_KEY {
            sasl::config::check(name, &value).map_err(refused)?;
        }
        match broker_name {
            "listeners" => {
                let (host, port) = parse_listener(name, &value)?;
                // An empty host binds every interface, as in Kafka.
                let bind_host = if host.is_empty() { "0.0.0.0" } else { &host };
                let addr = (bind_host, port)
                    .to_socket_addrs()
                    .ok()
                    .and_then(|mut a| a.next())
                    .ok_or_else(|| ConfigError::InvalidValue {
                        key: name.into(),
                        value: value.clone(),
                        expected: "a resolvable HOST:PORT".into(),
                    })?;
                self.listen = addr;
                if self.values["advertised.listeners"].1 == Source::Default {
                    self.advertised = (host, port);
                }
            }
            "advertised.listeners" => self.advertised = parse_listener(name, &value)?,
            "log.dirs" => {
                let dirs: Vec<&str> = value
                    .split(',')
                    .map(str::trim)
                    .filter(|d| !d.is_empty())
                    .collect();
                if dirs.len() != 1 {
                    // One directory holds the broker's checkpoints, lock
                    // and partitions; spreading partitions over several
                    // is not built, and taking the first alone would
                    // leave the others' disks unused without a word.
                    return Err(ConfigError::Refused {
                        key: name.into(),
                        reason: format!(
                            "exactly one data directory is supported, {} given ({value}); \
                             put several disks behind one file system (RAID, LVM) or run \
                             one broker per disk",
                            dirs.len()
                        ),
                    });
                }
                self.data_dir = PathBuf::from(dirs[0]);
            }
            "node.id" => self.node_id = value.parse().expect("checked"),
            "controller.quorum.voters" => {
                crate::cluster::parse_voters(&value)?;
            }
            "group.consumer.migration.policy"
                if crate::group::consumer::MigrationPolicy::parse(&value).is_none() =>
            {
                return Err(ConfigError::InvalidValue {
                    key: name.into(),
                    value: value.clone(),
                    expected: format!(
                        "one of {}",
                        crate::group::consumer::MigrationPolicy::NAMES.join(", ")
                    ),
                });
            }
            "group.consumer.assignors"
                if crate::group::consumer::assignor::parse_list(&value).is_none() =>
            {
                return Err(ConfigError::InvalidValue {
                    key: name.into(),
                    value: value.clone(),
                    expected:
                        "a comma-separated list of uniform, range (or their Kafka class names)"
                            .into(),
                });
            }
            _ => {}
        }
        self.values
            .insert(broker_name, (value, Source::StaticBroker));
        Ok(())
    }

    /// `listener.name.<listener>.<ssl key>`: a TLS setting of one listener.
    fn set_listener_override(
        &mut self,
        name: &str,
        rest: &str,
        value: &str,
    ) -> Result<(), ConfigError> {
        let unknown = || ConfigError::UnknownKey(name.to_string());
        let (listener, key_name) = rest.split_once('.').ok_or_else(unknown)?;
        let key = find_broker_key(key_name)
            .filter(|_| key_name.starts_with("ssl."))
            .ok_or_else(unknown)?;
        if listener.is_empty() {
            return Err(unknown());
        }
        let value = check_value(name, key, value)?;
        let key_name = key.broker.expect("found by broker name");
        self.listener_overrides
            .insert((listener.to_ascii_lowercase(), key_name), value);
        Ok(())
    }

    /// An `ssl.*` setting as listener `listener` sees it: its
    /// `listener.name.<listener>.` override, else the broker's value.
    /// Returns the value and the key it came from, for error messages.
    pub fn listener_setting(&self, listener: &str, key: &'static str) -> (String, String) {
        let lower = listener.to_ascii_lowercase();
        match self.listener_overrides.get(&(lower.clone(), key)) {
            Some(v) => (v.clone(), format!("listener.name.{lower}.{key}")),
            None => (self.get(key).unwrap_or("").to_string(), key.to_string()),
        }
    }

    /// Whether listener `listener` sets `key` itself.
    pub fn has_listener_setting(&self, listener: &str, key: &'static str) -> bool {
        self.listener_overrides
            .contains_key(&(listener.to_ascii_lowercase(), key))
    }

    /// `key` as listener `listener` sets it itself (empty if it does
    /// not), with the key it came from.
    pub fn own_listener_setting(&self, listener: &str, key: &'static str) -> (String, String) {
        let lower = listener.to_ascii_lowercase();
        let value = self
            .listener_overrides
            .get(&(lower.clone(), key))
            .cloned()
            .unwrap_or_default();
        (value, format!("listener.name.{lower}.{key}"))
    }

    /// Sets `listeners` from a plain HOST:PORT.
    pub fn set_listen(&mut self, hostport: &str) -> Result<(), ConfigError> {
        self.set("listeners", &format!("PLAINTEXT://{hostport}"))
    }

    /// Loads a TOML file; nested tables become dotted Kafka keys.
    pub fn load_file(&mut self, path: &std::path::Path) -> Result<(), ConfigError> {
        let file_err = |reason: String| ConfigError::File {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| file_err(e.to_string()))?;
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| file_err(e.to_string()))?;
        let mut flat = Vec::new();
        flatten("", &toml::Value::Table(table), &mut flat);
        for (k, v) in flat {
            self.set(&k, &v).map_err(|e| file_err(e.to_string()))?;
        }
        Ok(())
    }

    /// A key's value, SASL keys outside [`KEYS`] included.
    pub fn value(&self, name: &str) -> Option<&str> {
        match self.sasl_values.get(name) {
            Some(v) => Some(v),
            None => self.get(name),
        }
    }

    /// The SASL settings of the listener, if it speaks SASL; an error
    /// names the key at fault.
    pub fn sasl_settings(&self, listener: &str) -> Result<sasl::Settings, ConfigError> {
        let listener = listener.to_ascii_lowercase();
        let get = |k: &str| self.value(k).map(str::to_string);
        sasl::Settings::for_listener(&get, &listener).map_err(|(key, reason)| {
            ConfigError::InvalidValue {
                value: hide_secret(&key, self.value(&key).unwrap_or_default()),
                key,
                expected: reason,
            }
        })
    }

    /// A broker key's value (by broker name).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(|(v, _)| v.as_str())
    }

    fn get_long(&self, name: &str) -> i64 {
        self.get(name).and_then(|v| v.parse().ok()).unwrap_or(0)
    }

    pub fn num_partitions(&self) -> i32 {
        self.get_long("num.partitions") as i32
    }

    pub fn auto_create_topics(&self) -> bool {
        self.get("auto.create.topics.enable") == Some("true")
    }

    pub fn request_max_bytes(&self) -> usize {
        self.get_long("socket.request.max.bytes") as usize
    }

    /// `max.connections`, `max.connections.per.ip` and its overrides; an
    /// override that does not parse or resolve is an error naming the key.
    pub fn connection_limits(&self) -> Result<crate::server::admission::Limits, ConfigError> {
        let key = "max.connections.per.ip.overrides";
        let text = self.get(key).unwrap_or_default();
        let per_ip_overrides = crate::server::admission::parse_overrides(text).map_err(|e| {
            ConfigError::InvalidValue {
                key: key.to_string(),
                value: text.to_string(),
                expected: format!("host:count pairs separated by commas ({e})"),
            }
        })?;
        let count = |k: &str| u32::try_from(self.get_long(k)).unwrap_or(u32::MAX);
        Ok(crate::server::admission::Limits {
            max_total: count("max.connections"),
            max_per_ip: count("max.connections.per.ip"),
            per_ip_overrides,
        })
    }

    /// `connections.max.idle.ms`: a connection that sent no request and
    /// was sent no answer for this long is closed.
    pub fn connections_max_idle(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.get_long("connections.max.idle.ms") as u64)
    }

    pub fn flush_scheduler_interval_ms(&self) -> u64 {
        self.get_long("log.flush.scheduler.interval.ms") as u64
    }

    /// Settings of the group coordinator.
    pub fn group(&self) -> crate::group::GroupConfig {
        crate::group::GroupConfig {
            offsets_partitions: self.get_long("offsets.topic.num.partitions") as i32,
            offsets_replication_factor: self.get_long("offsets.topic.replication.factor") as i16,
            offsets_replication_factor_is_default: self.values["offsets.topic.replication.factor"]
                .1
                == Source::Default,
            offsets_segment_bytes: self.get_long("offsets.topic.segment.bytes"),
            offsets_retention_ms: self.get_long("offsets.retention.minutes") * 60_000,
            offsets_retention_check_ms: self.get_long("offsets.retention.check.interval.ms"),
            offset_metadata_max_bytes: self.get_long("offset.metadata.max.bytes") as usize,
            initial_rebalance_delay_ms: self.get_long("group.initial.rebalance.delay.ms"),
            min_session_timeout_ms: self.get_long("group.min.session.timeout.ms"),
            max_session_timeout_ms: self.get_long("group.max.session.timeout.ms"),
            max_size: self.get_long("group.max.size") as usize,
            consumer: crate::group::consumer::ConsumerConfig {
                session_timeout_ms: self.get_long("group.consumer.session.timeout.ms") as i32,
                heartbeat_interval_ms: self.get_long("group.consumer.heartbeat.interval.ms") as i32,
                assignors: crate::group::consumer::assignor::parse_list(
                    self.get("group.consumer.assignors").unwrap_or_default(),
                )
                .expect("checked when set"),
                migration: crate::group::consumer::MigrationPolicy::parse(
                    self.get("group.consumer.migration.policy")
                        .unwrap_or_default(),
                )
                .expect("checked when set"),
            },
        }
    }

    /// `transaction.partition.verification.enable`: whether a partition
    /// asks the transaction coordinator before writing the first batch of
    /// a producer's new transaction (see `txn/verify.rs`).
    pub fn txn_verification(&self) -> bool {
        self.get("transaction.partition.verification.enable") == Some("true")
    }

    /// The transaction coordinator's settings.
    pub fn txn(&self) -> crate::txn::TxnConfig {
        let is_default = |k: &str| self.values[k].1 == Source::Default;
        crate::txn::TxnConfig {
            log_partitions: self.get_long("transaction.state.log.num.partitions") as i32,
            log_replication_factor: self.get_long("transaction.state.log.replication.factor")
                as i16,
            log_replication_factor_is_default: is_default(
                "transaction.state.log.replication.factor",
            ),
            log_min_isr: self.get_long("transaction.state.log.min.isr") as i16,
            log_min_isr_is_default: is_default("transaction.state.log.min.isr"),
            log_segment_bytes: self.get_long("transaction.state.log.segment.bytes"),
            max_timeout_ms: self.get_long("transaction.max.timeout.ms"),
            abort_check_ms: self
                .get_long("transaction.abort.timed.out.transaction.cleanup.interval.ms"),
            id_expiration_ms: self.get_long("transactional.id.expiration.ms"),
            expiry_check_ms: self
                .get_long("transaction.remove.expired.transaction.cleanup.interval.ms"),
        }
    }

    /// `log.retention.check.interval.ms`: how often each shard applies
    /// retention to its partitions and removes files whose
    /// `file.delete.delay.ms` has passed.
    pub fn retention_check_interval_ms(&self) -> u64 {
        self.get_long("log.retention.check.interval.ms") as u64
    }

    /// The log cleaner's settings for one of `shards` shards.
    pub fn cleaner(&self, shards: usize) -> crate::cleaner::CleanerConfig {
        crate::cleaner::CleanerConfig {
            dedupe_buffer_bytes: self.get_long("log.cleaner.dedupe.buffer.size") as u64
                / shards.max(1) as u64,
            io_max_bytes_per_second: self.get_long("log.cleaner.io.max.bytes.per.second") as u64,
            backoff_ms: self.get_long("log.cleaner.backoff.ms") as u64,
        }
    }

    /// `reactor.stall.threshold.ms`: how far past its time slice a shard's
    /// task queue may run before its backtrace is logged; None when off.
    pub fn stall_threshold(&self) -> Option<std::time::Duration> {
        let ms = self.get_long("reactor.stall.threshold.ms");
        (ms > 0).then(|| std::time::Duration::from_millis(ms as u64))
    }

    /// `log.cleaner.threads`: how many shards may clean at once.
    pub fn cleaner_threads(&self) -> usize {
        self.get_long("log.cleaner.threads") as usize
    }

    pub fn checkpoint_interval_ms(&self) -> u64 {
        self.get_long("log.flush.offset.checkpoint.interval.ms") as u64
    }

    /// Every broker-level key with value and source, for DescribeConfigs.
    pub fn broker_entries(&self) -> impl Iterator<Item = (&'static str, &str, Source)> + '_ {
        self.values.iter().map(|(k, (v, s))| (*k, v.as_str(), *s))
    }

    /// A topic's effective config: broker defaults overlaid by `overrides`.
    pub fn topic_config(
        &self,
        overrides: &BTreeMap<String, String>,
    ) -> Result<TopicConfig, ConfigError> {
        let mut values = BTreeMap::new();
        for k in KEYS {
            let Some(name) = k.topic else { continue };
            let base = k
                .broker
                .and_then(|b| self.values.get(b))
                .cloned()
                .unwrap_or((k.default.to_string(), Source::Default));
            values.insert(name.to_string(), base);
        }
        for (name, value) in overrides {
            let key = find_topic_key(name).ok_or_else(|| ConfigError::UnknownKey(name.clone()))?;
            values.insert(
                name.clone(),
                (check_value(name, key, value)?, Source::Topic),
            );
        }
        check_topic_combination(|k| values.get(k).map(|(v, _)| v.as_str()))?;
        Ok(TopicConfig::from_values(values))
    }
}

fn flatten(prefix: &str, v: &toml::Value, out: &mut Vec<(String, String)>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        toml::Value::String(s) => out.push((prefix.to_string(), s.clone())),
        toml::Value::Array(a) => {
            let items: Vec<String> = a
                .iter()
                .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_string))
                .collect();
            out.push((prefix.to_string(), items.join(",")));
        }
        other => out.push((prefix.to_string(), other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_keys_set_broker_defaults() {
        let mut c = BrokerConfig::default();
        c.set("flush.messages", "1").unwrap();
        assert_eq!(c.get("log.flush.interval.messages"), Some("1"));
        let t = c.topic_config(&BTreeMap::new()).unwrap();
        assert_eq!(t.flush_messages, 1);
        assert_eq!(t.values["flush.messages"].1, Source::StaticBroker);
    }

    #[test]
    fn cpu_lists_and_brokers_sharing_a_machine() {
        assert_eq!(parse_cpu_list("--cpus", "0,2-4").unwrap(), vec![0, 2, 3, 4]);
        for bad in ["", "a", "3-1", "1,,2"] {
            let e = parse_cpu_list("--cpus", bad).unwrap_err().to_string();
            assert!(e.contains("--cpus"), "{e}");
        }
        let online = online_cpus();
        assert_eq!(cpus_for_broker(0, 1), vec![0]);
        assert_eq!(cpus_for_broker(1, 1), vec![1 % online]);
        assert_eq!(cpus_for_broker(1, 2), vec![2 % online, 3 % online]);
    }

    #[test]
    fn bad_values_name_key_and_allowed_values() {
        let mut c = BrokerConfig::default();
        let e = c.set("compression.type", "brotli").unwrap_err();
        assert!(e.to_string().contains("compression.type"), "{e}");
        assert!(e.to_string().contains("zstd"), "{e}");
        assert_eq!(
            c.set("nope", "1"),
            Err(ConfigError::UnknownKey("nope".into()))
        );
        assert!(c.set("segment.bytes", "-5").is_err());
    }

    #[test]
    fn cleanup_policy_lists_and_impossible_combinations() {
        let mut c = BrokerConfig::default();
        let policy = |c: &BrokerConfig, v: &str| {
            let overrides = BTreeMap::from([("cleanup.policy".to_string(), v.to_string())]);
            c.topic_config(&overrides)
                .map(|t| (t.compact, t.delete_retention))
        };
        assert_eq!(policy(&c, " compact , delete "), Ok((true, true)));
        assert_eq!(policy(&c, "compact,compact"), Ok((true, false)));
        let e = policy(&c, "compact,shred").unwrap_err().to_string();
        assert!(e.contains("cleanup.policy"), "{e}");
        let lags = |min: &str, max: &str| {
            BTreeMap::from([
                ("min.compaction.lag.ms".to_string(), min.to_string()),
                ("max.compaction.lag.ms".to_string(), max.to_string()),
            ])
        };
        assert!(c.topic_config(&lags("10", "10")).is_ok());
        let e = c.topic_config(&lags("11", "10")).unwrap_err().to_string();
        assert!(e.contains("min.compaction.lag.ms"), "{e}");
        // The broker defaults are checked the same way.
        c.set("log.cleaner.min.compaction.lag.ms", "5000").unwrap();
        c.set("log.cleaner.max.compaction.lag.ms", "1000").unwrap();
        assert!(c.topic_config(&BTreeMap::new()).is_err());
    }

    #[test]
    fn one_data_directory() {
        let mut c = BrokerConfig::default();
        c.set("log.dirs", " /var/lib/sluice ").unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/sluice"));
        let e = c.set("log.dirs", "/disk1,/disk2").unwrap_err().to_string();
        assert!(e.contains("log.dirs"), "{e}");
        assert!(c.set("log.dirs", " , ").is_err());
    }

    #[test]
    fn consumer_group_settings() {
        use crate::group::consumer::assignor::AssignorKind;
        let mut c = BrokerConfig::default();
        let g = c.group().consumer;
        assert_eq!(
            g.assignors,
            vec![AssignorKind::Uniform, AssignorKind::Range]
        );
        assert_eq!(
            (g.session_timeout_ms, g.heartbeat_interval_ms),
            (45_000, 5_000)
        );
        c.set("group.consumer.assignors", "range").unwrap();
        assert_eq!(c.group().consumer.assignors, vec![AssignorKind::Range]);
        let e = c.set("group.consumer.assignors", "sticky").unwrap_err();
        assert!(e.to_string().contains("uniform"), "{e}");
        assert!(c.set("group.consumer.session.timeout.ms", "0").is_err());
        use crate::group::consumer::MigrationPolicy;
        assert_eq!(g.migration, MigrationPolicy::Bidirectional);
        c.set("group.consumer.migration.policy", "UPGRADE").unwrap();
        assert_eq!(c.group().consumer.migration, MigrationPolicy::Upgrade);
        let e = c
            .set("group.consumer.migration.policy", "both")
            .unwrap_err();
        assert!(e.to_string().contains("bidirectional"), "{e}");
    }

    #[test]
    fn the_example_production_config_loads() {
        let mut c = BrokerConfig::default();
        c.load_file(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/sluice.toml"
        )))
        .unwrap();
        assert_eq!(c.get("min.insync.replicas"), Some("2"));
        assert_eq!(c.get("metrics.listener"), Some("0.0.0.0:9644"));
    }

    #[test]
    fn listeners_and_advertised() {
        let mut c = BrokerConfig::default();
        c.set("listeners", "PLAINTEXT://127.0.0.1:19092").unwrap();
        assert_eq!(c.listen.port(), 19092);
        assert_eq!(c.advertised, ("127.0.0.1".to_string(), 19092));
        c.set("advertised.listeners", "PLAINTEXT://proxy.example:29092")
            .unwrap();
        assert_eq!(c.advertised, ("proxy.example".to_string(), 29092));
    }

    #[test]
    fn sasl_listener_and_jaas_config_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sluice.toml");
        std::fs::write(
            &p,
            "listeners = \"SASL_PLAINTEXT://127.0.0.1:19094\"\n\
             \"sasl.enabled.mechanisms\" = \"PLAIN,SCRAM-SHA-512\"\n\
             \"listener.name.sasl_plaintext.plain.sasl.jaas.config\" = 'org.apache.kafka.common.security.plain.PlainLoginModule required user_alice=\"a;b\";'\n\
             \"connections.max.reauth.ms\" = 60000\n",
        )
        .unwrap();
        let mut c = BrokerConfig::default();
        c.load_file(&p).unwrap();
        let s = c.sasl_settings("SASL_PLAINTEXT").unwrap();
        assert_eq!(s.plain_users["alice"], "a;b");
        assert_eq!(s.reauth_ms, 60000);
        assert_eq!(s.mechanism_names(), ["PLAIN", "SCRAM-SHA-512"]);
        // Secrets stay out of DescribeConfigs.
        assert!(c.broker_entries().all(|(k, _, _)| !k.contains("jaas")));
        let key = "listener.name.sasl_plaintext.plain.sasl.jaas.config";
        let e = c
            .set(key, "PlainLoginModule required user_a=\"pw-1\"")
            .unwrap_err();
        assert!(e.to_string().contains(key), "{e}");
        assert!(
            !e.to_string().contains("pw-1"),
            "a password in an error: {e}"
        );
        let e = c.set("sasl.enabled.mechanisms", "GSSAPI").unwrap_err();
        assert!(e.to_string().contains("Kerberos"), "{e}");
    }

    #[test]
    fn toml_dotted_keys() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sluice.toml");
        std::fs::write(&p, "log.segment.bytes = 1048576\nnum.partitions = 3\n").unwrap();
        let mut c = BrokerConfig::default();
        c.load_file(&p).unwrap();
        assert_eq!(c.num_partitions(), 3);
        assert_eq!(
            c.topic_config(&BTreeMap::new()).unwrap().segment_bytes,
            1 << 20
        );
    }
}
