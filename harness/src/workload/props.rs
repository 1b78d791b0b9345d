//! Kafka client and topic settings, read from Kafka property names.
//!
//! Defaults follow the Apache Kafka 3.x Java client, `enable.idempotence`
//! included: on unless set, and then off by itself when `acks`, `retries` or
//! `max.in.flight.requests.per.connection` rule it out.

use super::error::FieldError;
use super::security::{is_security_key, SecurityProps};
use crate::client::security::Security;
use sluice_protocol::record_batch::Compression;
use std::collections::BTreeMap;

/// Producer `acks`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Acks {
    /// No response is sent; latency is counted to the write.
    None,
    Leader,
    All,
}

impl Acks {
    /// The wire value of the Produce request's `acks` field.
    pub fn wire(self) -> i16 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }
}

/// Producer settings the harness client obeys.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ProducerSettings {
    pub acks: Acks,
    pub linger_ms: u64,
    pub batch_size: usize,
    #[serde(serialize_with = "ser_compression")]
    pub compression: Compression,
    pub max_in_flight: usize,
    pub retries: u32,
    pub retry_backoff_ms: u64,
    pub request_timeout_ms: u64,
    pub delivery_timeout_ms: u64,
    pub buffer_memory: usize,
    pub max_request_size: usize,
    pub enable_idempotence: bool,
    /// Whether `enable.idempotence` was given, rather than defaulted.
    #[serde(skip)]
    pub idempotence_set: bool,
    /// `transactional.id`: a prefix; each producer of a run takes
    /// `<prefix>-<n>`. With it (and `transaction.messages` above 0) every
    /// producer is transactional.
    pub transactional_id: Option<String>,
    /// `transaction.messages`: messages per transaction (the harness's
    /// own property: a benchmark has no application to say where a
    /// transaction ends). 0 keeps a producer with a transactional id
    /// idempotent only, so one sweep holds the non-transactional baseline.
    pub transaction_messages: u64,
    /// Whether `transaction.messages` was given.
    #[serde(skip)]
    pub transaction_messages_set: bool,
    /// `transaction.timeout.ms`, sent with InitProducerId.
    pub transaction_timeout_ms: u64,
    #[serde(skip)]
    pub transaction_timeout_set: bool,
    /// How the producer's connections (and the run's topic administration)
    /// are secured, resolved from `security_props`.
    pub security: Security,
    #[serde(skip)]
    pub security_props: SecurityProps,
    /// Properties accepted and recorded but without effect on this client.
    pub ignored: BTreeMap<String, String>,
}

fn ser_compression<S: serde::Serializer>(c: &Compression, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(compression_name(*c))
}

pub fn compression_name(c: Compression) -> &'static str {
    match c {
        Compression::None => "none",
        Compression::Gzip => "gzip",
        Compression::Snappy => "snappy",
        Compression::Lz4 => "lz4",
        Compression::Zstd => "zstd",
    }
}

impl Default for ProducerSettings {
    fn default() -> Self {
        ProducerSettings {
            acks: Acks::All,
            linger_ms: 0,
            batch_size: 16_384,
            compression: Compression::None,
            max_in_flight: 5,
            retries: i32::MAX as u32,
            retry_backoff_ms: 100,
            request_timeout_ms: 30_000,
            delivery_timeout_ms: 120_000,
            buffer_memory: 33_554_432,
            max_request_size: 1_048_576,
            enable_idempotence: true,
            idempotence_set: false,
            transactional_id: None,
            transaction_messages: TRANSACTION_MESSAGES_DEFAULT,
            transaction_messages_set: false,
            transaction_timeout_ms: 60_000,
            transaction_timeout_set: false,
            security: Security::plaintext(),
            security_props: SecurityProps::default(),
            ignored: BTreeMap::new(),
        }
    }
}

/// Producer properties that are accepted and recorded but change nothing in
/// the harness client (serializers, client identity, ...).
pub const PRODUCER_IGNORED: &[&str] = &[
    "bootstrap.servers",
    "client.id",
    "key.serializer",
    "value.serializer",
    "partitioner.class",
    "partitioner.ignore.keys",
    "max.block.ms",
    "send.buffer.bytes",
    "receive.buffer.bytes",
    "metadata.max.age.ms",
    "compression.level",
    "compression.gzip.level",
    "compression.lz4.level",
    "compression.zstd.level",
    "connections.max.idle.ms",
    "reconnect.backoff.ms",
    "reconnect.backoff.max.ms",
    "retry.backoff.max.ms",
    "interceptor.classes",
    "client.dns.lookup",
];

pub const PRODUCER_KNOWN: &[&str] = &[
    "acks",
    "linger.ms",
    "batch.size",
    "compression.type",
    "max.in.flight.requests.per.connection",
    "retries",
    "retry.backoff.ms",
    "request.timeout.ms",
    "delivery.timeout.ms",
    "buffer.memory",
    "max.request.size",
    "enable.idempotence",
    "transactional.id",
    "transaction.messages",
    "transaction.timeout.ms",
];

/// Messages per transaction when `transactional.id` is given without
/// `transaction.messages`.
pub const TRANSACTION_MESSAGES_DEFAULT: u64 = 1_000;

fn parse_num<T: std::str::FromStr>(key: &str, v: &str) -> Result<T, FieldError> {
    v.trim()
        .parse::<T>()
        .map_err(|_| FieldError::new(key, format!("`{v}` is not a valid non-negative number")))
}

fn parse_bool(key: &str, v: &str) -> Result<bool, FieldError> {
    match v.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(FieldError::new(key, format!("`{v}` is not true or false"))),
    }
}

impl ProducerSettings {
    /// Applies properties in order; later ones win. `block` names the
    /// property block for error paths (e.g. `producer`).
    pub fn apply(&mut self, block: &str, props: &[(String, String)]) -> Result<(), FieldError> {
        for (key, value) in props {
            let path = format!("{block}.{key}");
            if is_security_key(key) {
                self.security_props.set(key, &path, value)?;
                continue;
            }
            self.apply_one(key, value)
                .map_err(|e| FieldError::new(path.clone(), e.message))?;
        }
        Ok(())
    }

    fn apply_one(&mut self, key: &str, v: &str) -> Result<(), FieldError> {
        match key {
            "acks" => {
                self.acks = match v.trim() {
                    "0" => Acks::None,
                    "1" => Acks::Leader,
                    "all" | "-1" => Acks::All,
                    _ => return Err(FieldError::new(key, format!("`{v}` is not 0, 1 or all"))),
                }
            }
            "linger.ms" => self.linger_ms = parse_num(key, v)?,
            "batch.size" => self.batch_size = parse_num(key, v)?,
            "compression.type" => self.compression = parse_compression(key, v)?,
            "max.in.flight.requests.per.connection" => self.max_in_flight = parse_num(key, v)?,
            "retries" => self.retries = parse_num(key, v)?,
            "retry.backoff.ms" => self.retry_backoff_ms = parse_num(key, v)?,
            "request.timeout.ms" => self.request_timeout_ms = parse_num(key, v)?,
            "delivery.timeout.ms" => self.delivery_timeout_ms = parse_num(key, v)?,
            "buffer.memory" => self.buffer_memory = parse_num(key, v)?,
            "max.request.size" => self.max_request_size = parse_num(key, v)?,
            "enable.idempotence" => {
                self.enable_idempotence = parse_bool(key, v)?;
                self.idempotence_set = true;
            }
            "transactional.id" => {
                let id = v.trim();
                if id.is_empty() {
                    return Err(FieldError::new(key, "must not be empty"));
                }
                self.transactional_id = Some(id.to_string());
            }
            "transaction.messages" => {
                self.transaction_messages = parse_num(key, v)?;
                self.transaction_messages_set = true;
            }
            "transaction.timeout.ms" => {
                self.transaction_timeout_ms = parse_num(key, v)?;
                self.transaction_timeout_set = true;
            }
            _ if PRODUCER_IGNORED.contains(&key) => {
                self.ignored.insert(key.to_string(), v.to_string());
            }
            _ => {
                return Err(FieldError::new(
                    key,
                    "unknown producer property (see docs/HARNESS.md for the list)",
                ))
            }
        }
        Ok(())
    }

    /// Settles what depends on other settings once all are applied: an
    /// `enable.idempotence` left to its default is off where acks, retries
    /// or requests in flight rule it out, as in the Java client.
    pub fn settle(&mut self) {
        if !self.idempotence_set {
            // A transactional producer is idempotent, as in the Java client.
            self.enable_idempotence = self.transactional()
                || (self.acks == Acks::All && self.retries > 0 && self.max_in_flight <= 5);
        }
    }

    /// Whether the producers run transactions: a `transactional.id` and
    /// more than 0 `transaction.messages`.
    pub fn transactional(&self) -> bool {
        self.transactional_id.is_some() && self.transaction_messages > 0
    }

    /// Transaction settings that cannot work, or would do nothing.
    fn check_transactions(&self, block: &str) -> Result<(), FieldError> {
        let f = |k: &str| format!("{block}.{k}");
        if self.transactional_id.is_none() {
            for (set, key) in [
                (self.transaction_messages_set, "transaction.messages"),
                (self.transaction_timeout_set, "transaction.timeout.ms"),
            ] {
                if set {
                    return Err(FieldError::new(
                        f(key),
                        "needs transactional.id: without it the producer runs no transactions",
                    ));
                }
            }
            return Ok(());
        }
        if !self.transactional() {
            return Ok(());
        }
        if self.acks != Acks::All {
            return Err(FieldError::new(
                f("acks"),
                "transactional.id requires acks=all (Kafka refuses this combination)",
            ));
        }
        if !self.enable_idempotence {
            return Err(FieldError::new(
                f("enable.idempotence"),
                "transactional.id requires enable.idempotence=true (Kafka refuses this combination)",
            ));
        }
        if self.transaction_timeout_ms == 0 || self.transaction_timeout_ms > i32::MAX as u64 {
            return Err(FieldError::new(
                f("transaction.timeout.ms"),
                "must be between 1 and 2147483647",
            ));
        }
        Ok(())
    }

    /// Impossible or unsupported combinations.
    pub fn check(&self, block: &str) -> Result<(), FieldError> {
        self.check_transactions(block)?;
        let f = |k: &str| format!("{block}.{k}");
        if self.enable_idempotence && self.acks != Acks::All {
            return Err(FieldError::new(
                f("acks"),
                "enable.idempotence=true requires acks=all (Kafka refuses this combination)",
            ));
        }
        if self.enable_idempotence && self.retries == 0 {
            return Err(FieldError::new(
                f("retries"),
                "enable.idempotence=true needs retries above 0",
            ));
        }
        if self.enable_idempotence && self.max_in_flight > 5 {
            return Err(FieldError::new(
                f("max.in.flight.requests.per.connection"),
                "enable.idempotence=true allows at most 5 requests in flight",
            ));
        }
        if self.max_in_flight == 0 {
            return Err(FieldError::new(
                f("max.in.flight.requests.per.connection"),
                "must be at least 1",
            ));
        }
        if self.batch_size > self.buffer_memory {
            return Err(FieldError::new(
                f("batch.size"),
                format!(
                    "batch.size {} is above buffer.memory {}",
                    self.batch_size, self.buffer_memory
                ),
            ));
        }
        if self.request_timeout_ms == 0 {
            return Err(FieldError::new(f("request.timeout.ms"), "must be above 0"));
        }
        Ok(())
    }
}

pub fn parse_compression(key: &str, v: &str) -> Result<Compression, FieldError> {
    Ok(match v.trim() {
        "none" => Compression::None,
        "gzip" => Compression::Gzip,
        "snappy" => Compression::Snappy,
        "lz4" => Compression::Lz4,
        "zstd" => Compression::Zstd,
        _ => {
            return Err(FieldError::new(
                key,
                format!("`{v}` is not one of none, gzip, snappy, lz4, zstd"),
            ))
        }
    })
}

/// Consumer settings the harness client obeys.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ConsumerSettings {
    pub fetch_min_bytes: i32,
    pub fetch_max_wait_ms: i32,
    pub fetch_max_bytes: i32,
    pub max_partition_fetch_bytes: i32,
    /// `earliest` reads the backlog; `latest` (Kafka's default) only new data.
    pub auto_offset_reset_earliest: bool,
    /// Prefix of the run's group ids (`group.id`); the harness appends the
    /// run and subscription so no run resumes another's offsets.
    pub group_id: Option<String>,
    pub enable_auto_commit: bool,
    pub auto_commit_interval_ms: u64,
    pub session_timeout_ms: i32,
    pub heartbeat_interval_ms: i32,
    /// Sent as JoinGroup's rebalance timeout, as the Java client does.
    pub max_poll_interval_ms: i32,
    /// `isolation.level=read_committed`: fetches stop at the last stable
    /// offset and records of aborted transactions are dropped.
    pub read_committed: bool,
    /// How the consumer's connections are secured, from `security_props`.
    pub security: Security,
    #[serde(skip)]
    pub security_props: SecurityProps,
    pub ignored: BTreeMap<String, String>,
}

impl ConsumerSettings {
    /// The Fetch and ListOffsets `isolation_level` field.
    pub fn isolation_level(&self) -> i8 {
        i8::from(self.read_committed)
    }

    /// Heartbeats go every `heartbeat.interval.ms`, but at least three per
    /// session timeout so one lost heartbeat does not expire the member.
    pub fn heartbeat_interval(&self) -> std::time::Duration {
        let ms = self
            .heartbeat_interval_ms
            .min(self.session_timeout_ms / 3)
            .max(1);
        std::time::Duration::from_millis(ms as u64)
    }
}

impl Default for ConsumerSettings {
    fn default() -> Self {
        ConsumerSettings {
            fetch_min_bytes: 1,
            fetch_max_wait_ms: 500,
            fetch_max_bytes: 52_428_800,
            max_partition_fetch_bytes: 1_048_576,
            auto_offset_reset_earliest: true,
            group_id: None,
            enable_auto_commit: true,
            auto_commit_interval_ms: 5_000,
            session_timeout_ms: 45_000,
            heartbeat_interval_ms: 3_000,
            max_poll_interval_ms: 300_000,
            read_committed: false,
            security: Security::plaintext(),
            security_props: SecurityProps::default(),
            ignored: BTreeMap::new(),
        }
    }
}

pub const CONSUMER_IGNORED: &[&str] = &[
    "bootstrap.servers",
    "client.id",
    "key.deserializer",
    "value.deserializer",
    "max.poll.records",
    "partition.assignment.strategy",
    "receive.buffer.bytes",
    "send.buffer.bytes",
    "check.crcs",
    "client.rack",
    "request.timeout.ms",
    "metadata.max.age.ms",
    "group.instance.id",
    "client.dns.lookup",
];

pub const CONSUMER_KNOWN: &[&str] = &[
    "fetch.min.bytes",
    "fetch.max.wait.ms",
    "fetch.max.bytes",
    "max.partition.fetch.bytes",
    "auto.offset.reset",
    "group.id",
    "enable.auto.commit",
    "auto.commit.interval.ms",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "max.poll.interval.ms",
    "isolation.level",
];

impl ConsumerSettings {
    pub fn apply(&mut self, block: &str, props: &[(String, String)]) -> Result<(), FieldError> {
        for (key, v) in props {
            let path = format!("{block}.{key}");
            let e = |m: FieldError| FieldError::new(path.clone(), m.message);
            if is_security_key(key) {
                self.security_props.set(key, &path, v)?;
                continue;
            }
            match key.as_str() {
                "fetch.min.bytes" => self.fetch_min_bytes = parse_num(key, v).map_err(e)?,
                "fetch.max.wait.ms" => self.fetch_max_wait_ms = parse_num(key, v).map_err(e)?,
                "fetch.max.bytes" => self.fetch_max_bytes = parse_num(key, v).map_err(e)?,
                "max.partition.fetch.bytes" => {
                    self.max_partition_fetch_bytes = parse_num(key, v).map_err(e)?
                }
                "group.id" => self.group_id = Some(v.trim().to_string()),
                "enable.auto.commit" => self.enable_auto_commit = parse_bool(key, v).map_err(e)?,
                "auto.commit.interval.ms" => {
                    self.auto_commit_interval_ms = parse_num(key, v).map_err(e)?
                }
                "session.timeout.ms" => self.session_timeout_ms = parse_num(key, v).map_err(e)?,
                "heartbeat.interval.ms" => {
                    self.heartbeat_interval_ms = parse_num(key, v).map_err(e)?
                }
                "max.poll.interval.ms" => {
                    self.max_poll_interval_ms = parse_num(key, v).map_err(e)?
                }
                "isolation.level" => match v.trim() {
                    "read_committed" => self.read_committed = true,
                    "read_uncommitted" => self.read_committed = false,
                    _ => {
                        return Err(FieldError::new(
                            path,
                            "must be read_committed or read_uncommitted",
                        ));
                    }
                },
                "auto.offset.reset" => match v.trim() {
                    "earliest" => self.auto_offset_reset_earliest = true,
                    "latest" => self.auto_offset_reset_earliest = false,
                    _ => {
                        return Err(FieldError::new(path, "must be earliest or latest"));
                    }
                },
                k if CONSUMER_IGNORED.contains(&k) => {
                    self.ignored.insert(key.clone(), v.clone());
                }
                _ => {
                    return Err(FieldError::new(
                        path,
                        "unknown consumer property (see docs/HARNESS.md for the list)",
                    ))
                }
            }
        }
        if self.fetch_min_bytes < 0 || self.fetch_max_wait_ms < 0 {
            return Err(FieldError::new(
                format!("{block}.fetch.min.bytes"),
                "fetch settings must not be negative",
            ));
        }
        if self.max_partition_fetch_bytes <= 0 {
            return Err(FieldError::new(
                format!("{block}.max.partition.fetch.bytes"),
                "must be above 0",
            ));
        }
        self.check_group(block)
    }

    fn check_group(&self, block: &str) -> Result<(), FieldError> {
        let f = |k: &str| format!("{block}.{k}");
        for (k, v) in [
            ("session.timeout.ms", self.session_timeout_ms),
            ("heartbeat.interval.ms", self.heartbeat_interval_ms),
            ("max.poll.interval.ms", self.max_poll_interval_ms),
        ] {
            if v <= 0 {
                return Err(FieldError::new(f(k), "must be above 0"));
            }
        }
        if self.heartbeat_interval_ms >= self.session_timeout_ms {
            return Err(FieldError::new(
                f("heartbeat.interval.ms"),
                "must be below session.timeout.ms (Kafka refuses this combination)",
            ));
        }
        if self.auto_commit_interval_ms == 0 {
            return Err(FieldError::new(
                f("auto.commit.interval.ms"),
                "must be above 0",
            ));
        }
        if self.group_id.as_deref() == Some("") {
            return Err(FieldError::new(f("group.id"), "must not be empty"));
        }
        Ok(())
    }
}

/// Topic settings: replication factor plus topic configs passed to CreateTopics.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct TopicSettings {
    pub replication_factor: u32,
    /// Kafka topic config name to value, sent with CreateTopics.
    pub configs: BTreeMap<String, String>,
}

impl Default for TopicSettings {
    fn default() -> Self {
        TopicSettings {
            replication_factor: 1,
            configs: BTreeMap::new(),
        }
    }
}

/// Kafka topic configs passed through to CreateTopics.
pub const TOPIC_CONFIGS: &[&str] = &[
    "cleanup.policy",
    "compression.type",
    "delete.retention.ms",
    "file.delete.delay.ms",
    "flush.messages",
    "flush.ms",
    "index.interval.bytes",
    "local.retention.bytes",
    "local.retention.ms",
    "max.compaction.lag.ms",
    "max.message.bytes",
    "message.timestamp.type",
    "message.timestamp.after.max.ms",
    "message.timestamp.before.max.ms",
    "min.cleanable.dirty.ratio",
    "min.compaction.lag.ms",
    "min.insync.replicas",
    "preallocate",
    "retention.bytes",
    "retention.ms",
    "segment.bytes",
    "segment.index.bytes",
    "segment.jitter.ms",
    "segment.ms",
    "unclean.leader.election.enable",
];

impl TopicSettings {
    pub fn apply(&mut self, block: &str, props: &[(String, String)]) -> Result<(), FieldError> {
        for (key, v) in props {
            let path = format!("{block}.{key}");
            if key == "replication.factor" {
                self.replication_factor =
                    parse_num(key, v).map_err(|e| FieldError::new(path.clone(), e.message))?;
            } else if TOPIC_CONFIGS.contains(&key.as_str()) {
                self.configs.insert(key.clone(), v.trim().to_string());
            } else {
                return Err(FieldError::new(
                    path,
                    "unknown topic property (see docs/HARNESS.md for the list)",
                ));
            }
        }
        Ok(())
    }

    pub fn min_insync_replicas(&self) -> Option<u32> {
        self.configs
            .get("min.insync.replicas")
            .and_then(|v| v.parse().ok())
    }

    pub fn check(&self, block: &str) -> Result<(), FieldError> {
        if self.replication_factor == 0 {
            return Err(FieldError::new(
                format!("{block}.replication.factor"),
                "must be at least 1",
            ));
        }
        if let Some(v) = self.configs.get("min.insync.replicas") {
            let min: u32 = parse_num("min.insync.replicas", v)
                .map_err(|e| FieldError::new(format!("{block}.min.insync.replicas"), e.message))?;
            if min == 0 || min > self.replication_factor {
                return Err(FieldError::new(
                    format!("{block}.min.insync.replicas"),
                    format!(
                        "min.insync.replicas {min} must be between 1 and the replication factor {}",
                        self.replication_factor
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Whether a producer property name is one the harness knows (used,
/// ignored, or a security key resolved in `workload::security`).
pub fn producer_accepts(key: &str) -> bool {
    PRODUCER_KNOWN.contains(&key) || PRODUCER_IGNORED.contains(&key) || is_security_key(key)
}

/// Whether a consumer property name is one the harness knows (used,
/// ignored, or a security key resolved in `workload::security`).
pub fn consumer_accepts(key: &str) -> bool {
    CONSUMER_KNOWN.contains(&key) || CONSUMER_IGNORED.contains(&key) || is_security_key(key)
}

/// Whether a name is a topic-level setting.
pub fn topic_accepts(key: &str) -> bool {
    key == "replication.factor" || TOPIC_CONFIGS.contains(&key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn producer_properties_apply_in_order() {
        let mut s = ProducerSettings::default();
        s.apply(
            "producer",
            &props(&[
                ("acks", "1"),
                ("linger.ms", "5"),
                ("compression.type", "zstd"),
                ("acks", "all"),
                ("key.serializer", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(s.acks, Acks::All);
        assert_eq!(s.linger_ms, 5);
        assert_eq!(s.compression, Compression::Zstd);
        assert_eq!(s.ignored.len(), 1);
    }

    #[test]
    fn bad_producer_properties_name_the_field() {
        let mut s = ProducerSettings::default();
        let e = s
            .apply("producer", &props(&[("linger.ms", "soon")]))
            .unwrap_err();
        assert_eq!(e.field, "producer.linger.ms");
        let e = s
            .apply("producer", &props(&[("lingr.ms", "1")]))
            .unwrap_err();
        assert_eq!(e.field, "producer.lingr.ms");
    }

    #[test]
    fn idempotence_with_acks_0_is_impossible() {
        let mut s = ProducerSettings::default();
        s.apply(
            "producer",
            &props(&[("acks", "0"), ("enable.idempotence", "true")]),
        )
        .unwrap();
        assert_eq!(s.check("producer").unwrap_err().field, "producer.acks");
    }

    #[test]
    fn idempotence_defaults_on_unless_other_settings_rule_it_out() {
        let settled = |p: &[(&str, &str)]| {
            let mut s = ProducerSettings::default();
            s.apply("producer", &props(p)).unwrap();
            s.settle();
            s.check("producer").map(|()| s.enable_idempotence)
        };
        assert_eq!(settled(&[]), Ok(true));
        assert_eq!(settled(&[("acks", "1")]), Ok(false));
        assert_eq!(settled(&[("retries", "0")]), Ok(false));
        assert_eq!(
            settled(&[("max.in.flight.requests.per.connection", "6")]),
            Ok(false)
        );
        assert_eq!(
            settled(&[("acks", "all"), ("enable.idempotence", "false")]),
            Ok(false)
        );
        let refused = settled(&[("retries", "0"), ("enable.idempotence", "true")]);
        assert_eq!(refused.unwrap_err().field, "producer.retries");
    }

    #[test]
    fn min_insync_above_replication_is_impossible() {
        let mut t = TopicSettings::default();
        t.apply(
            "topic",
            &props(&[("replication.factor", "1"), ("min.insync.replicas", "2")]),
        )
        .unwrap();
        assert!(t.check("topic").is_err());
    }
}
