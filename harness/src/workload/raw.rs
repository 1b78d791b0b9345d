//! The workload file as written: OpenMessaging Benchmark's field names (so an
//! OMB workload or Kafka driver file deserializes unmodified) plus Sluice's
//! extensions. Nothing here is checked beyond types; `resolve` turns a
//! `RawWorkload` into a runnable [`super::Workload`].

use serde::{Deserialize, Serialize};
use serde_yaml::{Mapping, Value};

/// Every field a workload file may hold. Field names are OMB's own, hence the
/// camelCase.
#[allow(non_snake_case)]
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawWorkload {
    // ---- OMB workload fields ----
    pub name: Option<String>,
    pub topics: Option<u32>,
    pub partitionsPerTopic: Option<u32>,
    pub keyDistributor: Option<String>,
    pub messageSize: Option<u32>,
    pub useRandomizedPayloads: Option<bool>,
    pub randomBytesRatio: Option<f64>,
    pub randomizedPayloadPoolSize: Option<u32>,
    pub payloadFile: Option<String>,
    pub subscriptionsPerTopic: Option<u32>,
    pub producersPerTopic: Option<u32>,
    pub consumerPerSubscription: Option<u32>,
    pub producerRate: Option<f64>,
    pub consumerBacklogSizeGB: Option<f64>,
    pub backlogDrainRatio: Option<f64>,
    pub testDurationMinutes: Option<f64>,
    pub warmupDurationMinutes: Option<f64>,
    // Fields of the DataStax fork of OMB: a ramp, a drain bound, filtered
    // subscriptions and producer pauses. The ramp and the drain bound run
    // as OMB runs them; the rest warn when set (`omb_warnings`).
    pub messageRateReceivedForSubscription: Option<u32>,
    pub producerStartRate: Option<f64>,
    pub acceptableBacklog: Option<u64>,
    pub producerIncrementRate: Option<f64>,
    pub producerIncrementSeconds: Option<u64>,
    pub producerPauseBeforeDrain: Option<u64>,
    pub producerPauseDuringDrain: Option<u64>,

    // ---- OMB Kafka driver fields ----
    pub driverClass: Option<String>,
    pub replicationFactor: Option<u32>,
    pub reset: Option<bool>,
    /// `key=value` lines, Java properties style.
    pub topicConfig: Option<String>,
    pub commonConfig: Option<String>,
    pub producerConfig: Option<String>,
    pub consumerConfig: Option<String>,

    // ---- Sluice extensions ----
    pub testDurationSeconds: Option<f64>,
    pub warmupDurationSeconds: Option<f64>,
    /// Kafka producer property names to values.
    pub producer: Option<Mapping>,
    /// Kafka consumer property names to values.
    pub consumer: Option<Mapping>,
    /// `replication.factor` and Kafka topic config names to values.
    pub topic: Option<Mapping>,
    pub keyDistribution: Option<KeyDistributionSpec>,
    pub messageSizeDistribution: Option<SizeDistributionSpec>,
    /// `group` (default): each subscription is a consumer group; `manual`:
    /// its consumers split the partitions statically.
    pub consumerAssignment: Option<String>,
    /// Setting name to a list of values; expanded as a cartesian product.
    pub sweep: Option<Mapping>,
    /// Runs of each sweep point, to measure run-to-run spread.
    pub repeat: Option<u32>,
}

/// The top-level field names, for classifying sweep keys.
pub const TOP_LEVEL_FIELDS: &[&str] = &[
    "name",
    "topics",
    "partitionsPerTopic",
    "keyDistributor",
    "messageSize",
    "useRandomizedPayloads",
    "randomBytesRatio",
    "randomizedPayloadPoolSize",
    "payloadFile",
    "subscriptionsPerTopic",
    "producersPerTopic",
    "consumerPerSubscription",
    "producerRate",
    "consumerBacklogSizeGB",
    "backlogDrainRatio",
    "testDurationMinutes",
    "warmupDurationMinutes",
    "messageRateReceivedForSubscription",
    "producerStartRate",
    "acceptableBacklog",
    "producerIncrementRate",
    "producerIncrementSeconds",
    "producerPauseBeforeDrain",
    "producerPauseDuringDrain",
    "driverClass",
    "replicationFactor",
    "reset",
    "topicConfig",
    "commonConfig",
    "producerConfig",
    "consumerConfig",
    "testDurationSeconds",
    "warmupDurationSeconds",
    "keyDistribution",
    "messageSizeDistribution",
    "consumerAssignment",
];

/// An OMB Kafka driver file, given with `--driver`.
#[allow(non_snake_case)]
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawDriver {
    pub name: Option<String>,
    pub driverClass: Option<String>,
    pub replicationFactor: Option<u32>,
    pub reset: Option<bool>,
    pub topicConfig: Option<String>,
    pub commonConfig: Option<String>,
    pub producerConfig: Option<String>,
    pub consumerConfig: Option<String>,
}

/// `keyDistribution:` — skewed or uniform keys over a fixed key space.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum KeyDistributionSpec {
    /// No key: the sticky partitioner spreads batches.
    None,
    /// Keys 0..keys in turn.
    RoundRobin { keys: u32 },
    /// Keys drawn uniformly from 0..keys.
    Uniform { keys: u32 },
    /// Key k (1-based rank) drawn with probability ∝ 1/k^exponent.
    Zipf { keys: u32, exponent: f64 },
}

/// `messageSizeDistribution:` — overrides `messageSize`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SizeDistributionSpec {
    Fixed {
        size: u32,
    },
    /// Sizes uniform in min..=max.
    Uniform {
        min: u32,
        max: u32,
    },
    /// A size drawn with probability ∝ its weight.
    Weighted {
        sizes: Vec<WeightedSize>,
    },
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WeightedSize {
    pub size: u32,
    pub weight: f64,
}

/// A scalar YAML value as a Kafka property string (`all`, `5`, `true`).
pub fn scalar_to_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Parses Java-properties style `key=value` lines (OMB's `producerConfig: |`).
/// Returns `(key, value)` pairs in order; `#` and `!` start comments.
pub fn parse_properties(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        let split = line.find(['=', ':']);
        let Some(at) = split else {
            return Err(format!("property line {} has no `=`: {line:?}", i + 1));
        };
        let key = line[..at].trim().to_string();
        let value = line[at + 1..].trim().to_string();
        if key.is_empty() {
            return Err(format!("property line {} has an empty key", i + 1));
        }
        out.push((key, value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_parse_like_java() {
        let p = parse_properties("# c\nacks=all\n linger.ms = 1\n\nbatch.size:131072\n").unwrap();
        assert_eq!(
            p,
            vec![
                ("acks".into(), "all".into()),
                ("linger.ms".into(), "1".into()),
                ("batch.size".into(), "131072".into())
            ]
        );
        assert!(parse_properties("novalue").is_err());
    }
}
