//! Consumer groups: the classic rebalance protocol and committed offsets.
//!
//! A group lives on exactly one shard: the owner of the
//! `__consumer_offsets` partition its id hashes to (Kafka's
//! `abs(groupId.hashCode) % offsets.topic.num.partitions`). All its state
//! is there, so no lock guards it; requests for it arriving on other
//! shards are forwarded like produce requests. Group membership records
//! and committed offsets are appended to that partition in Kafka's own
//! record schema ([`records`]) and replayed from it when the broker
//! starts, so the log is the only copy on disk.
//!
//! [`state`] is the classic protocol as a pure state machine;
//! [`consumer`] is the consumer group protocol (KIP-848), its own state
//! machine and assignors; [`coordinator`] is the shell that stores,
//! delivers answers and runs the timers of both.

pub mod consumer;
pub mod coordinator;
pub mod records;
pub mod state;
pub mod txn_offsets;

/// The internal topic holding committed offsets and group metadata.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// The coordinator's settings, from the broker config.
#[derive(Clone, Debug)]
pub struct GroupConfig {
    /// `offsets.topic.replication.factor`.
    pub offsets_replication_factor: i16,
    /// Whether that is the default (3), which is capped by the live
    /// brokers, rather than a value the operator set, which is not.
    pub offsets_replication_factor_is_default: bool,
    pub offsets_partitions: i32,
    pub offsets_segment_bytes: i64,
    pub offsets_retention_ms: i64,
    pub offsets_retention_check_ms: i64,
    pub offset_metadata_max_bytes: usize,
    pub initial_rebalance_delay_ms: i64,
    pub min_session_timeout_ms: i64,
    pub max_session_timeout_ms: i64,
    pub max_size: usize,
    /// Consumer-protocol groups' settings.
    pub consumer: consumer::ConsumerConfig,
}

/// Java's `String.hashCode`: `s[0]*31^(n-1) + ... + s[n-1]` over UTF-16
/// code units, wrapping.
fn java_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)))
}

/// The `__consumer_offsets` partition of a group, as Kafka computes it, so
/// a group keeps its partition if its data is moved between the two.
pub fn partition_for(group_id: &str, partitions: i32) -> i32 {
    assert!(partitions > 0);
    (java_hash(group_id) & 0x7fff_ffff) % partitions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_matches_kafka() {
        // Values of Java's "...".hashCode(), computed independently.
        assert_eq!(java_hash(""), 0);
        assert_eq!(java_hash("a"), 97);
        assert_eq!(java_hash("test-group"), 627_841_412);
        assert_eq!(java_hash("my-group"), -1_906_497_762);
        assert_eq!(partition_for("test-group", 50), 12);
        assert_eq!(partition_for("my-group", 50), 36);
    }
}
