//! The APIs Sluice implements and the versions it advertises.
//!
//! Only what is implemented is listed. The minimum versions are those of
//! Kafka 4.0 (which dropped Produce < 3 and Fetch < 4, i.e. the pre-v2
//! record formats, and the ZooKeeper-era OffsetCommit < 2 and
//! OffsetFetch < 1); the maxima are the versions whose every field
//! Sluice handles, up to Kafka 4.1's where the codec knows them (it stops
//! OffsetCommit and OffsetFetch at v9, before topic ids replace names).
//! Clients pick the highest version both sides know.
//!
//! `docs/ARCHITECTURE.md` carries this table for readers; a test below
//! keeps the two in step.

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
    range(ApiKey::Produce, 3, 13),
    range(ApiKey::Fetch, 4, 18),
    range(ApiKey::ListOffsets, 1, 10),
    range(ApiKey::Metadata, 0, 13),
    range(ApiKey::OffsetCommit, 2, 9),
    range(ApiKey::OffsetFetch, 1, 9),
    range(ApiKey::FindCoordinator, 0, 6),
    range(ApiKey::JoinGroup, 0, 9),
    range(ApiKey::Heartbeat, 0, 4),
    range(ApiKey::LeaveGroup, 0, 5),
    range(ApiKey::SyncGroup, 0, 5),
    range(ApiKey::DescribeGroups, 0, 6),
    range(ApiKey::ListGroups, 0, 5),
    range(ApiKey::SaslHandshake, 0, 1),
    range(ApiKey::ApiVersions, 0, 4),
    range(ApiKey::CreateTopics, 2, 7),
    range(ApiKey::DeleteTopics, 1, 6),
    range(ApiKey::DeleteRecords, 0, 2),
    range(ApiKey::InitProducerId, 0, 5),
    range(ApiKey::OffsetForLeaderEpoch, 2, 4),
    range(ApiKey::AddPartitionsToTxn, 0, 5),
    range(ApiKey::AddOffsetsToTxn, 0, 4),
    range(ApiKey::EndTxn, 0, 4),
    range(ApiKey::WriteTxnMarkers, 1, 1),
    range(ApiKey::TxnOffsetCommit, 0, 4),
    range(ApiKey::DescribeAcls, 1, 3),
    range(ApiKey::CreateAcls, 1, 3),
    range(ApiKey::DeleteAcls, 1, 3),
    range(ApiKey::DescribeConfigs, 1, 4),
    range(ApiKey::AlterConfigs, 0, 2),
    range(ApiKey::DescribeLogDirs, 1, 4),
    range(ApiKey::SaslAuthenticate, 0, 2),
    range(ApiKey::CreatePartitions, 0, 3),
    range(ApiKey::DeleteGroups, 0, 2),
    range(ApiKey::ElectLeaders, 0, 2),
    range(ApiKey::IncrementalAlterConfigs, 0, 1),
    range(ApiKey::AlterPartitionReassignments, 0, 1),
    range(ApiKey::ListPartitionReassignments, 0, 0),
    range(ApiKey::OffsetDelete, 0, 0),
    range(ApiKey::DescribeUserScramCredentials, 0, 0),
    range(ApiKey::AlterUserScramCredentials, 0, 0),
    range(ApiKey::DescribeClientQuotas, 0, 1),
    range(ApiKey::AlterClientQuotas, 0, 1),
    range(ApiKey::DescribeQuorum, 0, 2),
    range(ApiKey::DescribeCluster, 0, 2),
    range(ApiKey::DescribeProducers, 0, 0),
    range(ApiKey::DescribeTransactions, 0, 0),
    range(ApiKey::ListTransactions, 0, 1),
    range(ApiKey::ConsumerGroupHeartbeat, 0, 1),
    range(ApiKey::ConsumerGroupDescribe, 0, 1),
    range(ApiKey::DescribeTopicPartitions, 0, 0),
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
        assert!(is_supported(ApiKey::Fetch, 18));
        assert!(!is_supported(ApiKey::Fetch, 19));
        assert!(is_supported(ApiKey::DescribeTopicPartitions, 0));
        assert!(is_supported(ApiKey::AddPartitionsToTxn, 5));
        assert!(!is_supported(ApiKey::AddPartitionsToTxn, 6));
    }

    /// The rows of the "Wire protocol versions" table in
    /// `docs/ARCHITECTURE.md`: (API name, min, max).
    fn documented() -> Vec<(String, i16, i16)> {
        let doc = include_str!("../../docs/ARCHITECTURE.md");
        let table = doc
            .split("## Wire protocol versions")
            .nth(1)
            .expect("docs/ARCHITECTURE.md has a 'Wire protocol versions' section");
        let mut rows = Vec::new();
        for line in table.lines().skip_while(|l| !l.starts_with('|')) {
            let Some(row) = line.strip_prefix('|') else {
                break;
            };
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let (name, versions) = (cells[0], cells[1]);
            if name == "API" || name.starts_with("---") {
                continue;
            }
            let span = versions.split_whitespace().next().unwrap_or_default();
            let (min, max) = span.split_once('–').unwrap_or((span, span));
            let parse = |v: &str| -> i16 {
                v.parse()
                    .unwrap_or_else(|_| panic!("row {name}: versions {versions:?}"))
            };
            rows.push((name.to_string(), parse(min), parse(max)));
        }
        rows
    }

    /// Each advertised API as its docs row should read.
    fn advertised() -> Vec<(String, i16, i16)> {
        SUPPORTED
            .iter()
            .map(|r| (format!("{:?}", r.key), r.min, r.max))
            .collect()
    }

    #[test]
    fn the_docs_table_lists_exactly_what_api_versions_advertises() {
        let mut documented = documented();
        let mut advertised = advertised();
        documented.sort();
        advertised.sort();
        let expected: String = advertised
            .iter()
            .map(|(name, min, max)| match min == max {
                true => format!("| {name} | {min} |\n"),
                false => format!("| {name} | {min}–{max} |\n"),
            })
            .collect();
        assert_eq!(
            documented, advertised,
            "docs/ARCHITECTURE.md's version table differs from SUPPORTED; its rows should \
             read (notes after the versions are free):\n{expected}"
        );
    }
}
