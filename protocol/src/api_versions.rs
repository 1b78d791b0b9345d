//! The APIs Sluice implements and the versions it advertises.
//!
//! Only what is implemented is listed. The minimum versions are those of
//! Kafka 4.0 (which dropped Produce < 3 and Fetch < 4, i.e. the pre-v2
//! record formats, and the ZooKeeper-era OffsetCommit < 2 and
//! OffsetFetch < 1); the maxima are the versions whose every field
//! Sluice handles, for the classic group APIs those of Kafka 3.0, with
//! OffsetCommit/OffsetFetch v9 (member epochs of the consumer group
//! protocol, KIP-848). Clients pick the highest version both sides know.

use kafka_protocol::messages::ApiKey;

/// One advertised API: key and inclusive version range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApiRange {
    pub key: ApiKey,
    pub min: i16,
    pub max: i16,
}

const fn range(key: ApiKey, min: i16, max: i16) -> ApiRange {
    ApiRange { key, min, max }
}

/// Everything the broker answers, ordered by API key.
pub const SUPPORTED: &[ApiRange] = &[
    range(ApiKey::Produce, 3, 9),
    range(ApiKey::Fetch, 4, 12),
    range(ApiKey::ListOffsets, 1, 7),
    range(ApiKey::Metadata, 0, 12),
    range(ApiKey::OffsetCommit, 2, 9),
    range(ApiKey::OffsetFetch, 1, 9),
    range(ApiKey::FindCoordinator, 0, 4),
    range(ApiKey::JoinGroup, 0, 7),
    range(ApiKey::Heartbeat, 0, 4),
    range(ApiKey::LeaveGroup, 0, 4),
    range(ApiKey::SyncGroup, 0, 5),
    range(ApiKey::DescribeGroups, 0, 5),
    range(ApiKey::ListGroups, 0, 4),
    range(ApiKey::ApiVersions, 0, 4),
    range(ApiKey::CreateTopics, 2, 7),
    range(ApiKey::DeleteTopics, 1, 6),
    range(ApiKey::DeleteRecords, 0, 2),
    range(ApiKey::InitProducerId, 0, 4),
    range(ApiKey::OffsetForLeaderEpoch, 2, 4),
    range(ApiKey::DescribeConfigs, 1, 4),
    range(ApiKey::AlterConfigs, 0, 2),
    range(ApiKey::DescribeLogDirs, 1, 4),
    range(ApiKey::CreatePartitions, 0, 3),
    range(ApiKey::DeleteGroups, 0, 2),
    range(ApiKey::ElectLeaders, 0, 2),
    range(ApiKey::IncrementalAlterConfigs, 0, 1),
    range(ApiKey::AlterPartitionReassignments, 0, 1),
    range(ApiKey::ListPartitionReassignments, 0, 0),
    range(ApiKey::OffsetDelete, 0, 0),
    range(ApiKey::DescribeCluster, 0, 0),
    range(ApiKey::ConsumerGroupHeartbeat, 0, 1),
    range(ApiKey::ConsumerGroupDescribe, 0, 1),
];

/// The advertised range for `key`, if the API is implemented.
pub fn supported_range(key: ApiKey) -> Option<ApiRange> {
    SUPPORTED.iter().copied().find(|r| r.key == key)
}

/// Whether (`key`, `version`) is implemented.
pub fn is_supported(key: ApiKey, version: i16) -> bool {
    supported_range(key).is_some_and(|r| version >= r.min && version <= r.max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::Message;

    #[test]
    fn ranges_are_within_what_the_codec_knows() {
        for r in SUPPORTED {
            let codec = r.key.valid_versions();
            assert!(r.min >= codec.min && r.max <= codec.max, "{:?}", r);
            assert!(r.min <= r.max);
        }
        assert_eq!(ProduceRequest::VERSIONS.min, 3);
    }

    #[test]
    fn lookups() {
        assert!(is_supported(ApiKey::Fetch, 12));
        assert!(!is_supported(ApiKey::Fetch, 13));
        assert!(!is_supported(ApiKey::AddPartitionsToTxn, 0));
    }
}
