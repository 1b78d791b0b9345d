//! The APIs Sluice implements and the versions it advertises.
//!
//! Only what is implemented is listed. The minimum versions are those of
//! Kafka 4.0 (which dropped Produce < 3 and Fetch < 4, i.e. the pre-v2
//! record formats, and the ZooKeeper-era OffsetCommit < 2 and
//! OffsetFetch < 1); the maxima are the versions whose every field
//! Sluice handles, up to Kafka 4.4's where the codec knows them or this
//! crate reads and writes them itself: the `kafka-protocol` codec stops
//! OffsetCommit and OffsetFetch at v9, before topic ids replace names,
//! ListOffsets at v10, DeleteGroups at v2, DescribeLogDirs and ApiVersions
//! at v4 (see [`codec_version`] and [`HAND_CODED`]).
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
    range(ApiKey::ListOffsets, 1, 11),
    range(ApiKey::Metadata, 0, 13),
    range(ApiKey::OffsetCommit, 2, 10),
    range(ApiKey::OffsetFetch, 1, 10),
    range(ApiKey::FindCoordinator, 0, 6),
    range(ApiKey::JoinGroup, 0, 9),
    range(ApiKey::Heartbeat, 0, 4),
    range(ApiKey::LeaveGroup, 0, 5),
    range(ApiKey::SyncGroup, 0, 5),
    range(ApiKey::DescribeGroups, 0, 6),
    range(ApiKey::ListGroups, 0, 5),
    range(ApiKey::SaslHandshake, 0, 1),
    range(ApiKey::ApiVersions, 0, 5),
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
    range(ApiKey::DescribeLogDirs, 1, 5),
    range(ApiKey::SaslAuthenticate, 0, 2),
    range(ApiKey::CreatePartitions, 0, 3),
    range(ApiKey::DeleteGroups, 0, 3),
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
    range(ApiKey::ListTransactions, 0, 2),
    range(ApiKey::ConsumerGroupHeartbeat, 0, 1),
    range(ApiKey::ConsumerGroupDescribe, 0, 1),
    range(ApiKey::DescribeTopicPartitions, 0, 0),
];

/// Versions past the `kafka-protocol` codec that this crate reads and
/// writes itself: topics named by id ([`crate::offset_commit`],
/// [`crate::offset_fetch`]), DeleteGroups' error messages
/// ([`crate::delete_groups`]), cordoned log directories
/// ([`crate::describe_log_dirs`]) and the cluster and node an
/// ApiVersions request is meant for ([`crate::api_versions_request`];
/// only the request is new, the codec writes the answer as v4).
pub const HAND_CODED: &[(ApiKey, i16)] = &[
    (ApiKey::OffsetCommit, crate::offset_commit::TOPIC_ID_VERSION),
    (ApiKey::OffsetFetch, crate::offset_fetch::TOPIC_ID_VERSION),
    (
        ApiKey::DeleteGroups,
        crate::delete_groups::ERROR_MESSAGE_VERSION,
    ),
    (
        ApiKey::DescribeLogDirs,
        crate::describe_log_dirs::CORDONED_VERSION,
    ),
    (
        ApiKey::ApiVersions,
        crate::api_versions_request::TARGET_VERSION,
    ),
];

/// The version whose bytes the `kafka-protocol` codec reads and writes
/// for (`key`, `version`): the version itself, or an earlier one laid out
/// byte for byte the same. ListOffsets v11 (KIP-1023) only gives the
/// timestamp -6, earliest pending upload, a meaning; its request and
/// response fields are v10's.
pub fn codec_version(key: ApiKey, version: i16) -> i16 {
    match (key, version) {
        (ApiKey::ListOffsets, 11) => 10,
        _ => version,
    }
}

/// Whether (`key`, `version`) is read and written by this crate rather
/// than by the `kafka-protocol` codec.
pub fn is_hand_coded(key: ApiKey, version: i16) -> bool {
    HAND_CODED.contains(&(key, version))
}

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

    /// Every advertised version has a codec: `kafka-protocol`'s (directly
    /// or through a version laid out the same) or this crate's.
    #[test]
    fn every_advertised_version_has_a_codec() {
        for r in SUPPORTED {
            let codec = r.key.valid_versions();
            assert!(r.min >= codec.min, "{:?}", r);
            assert!(r.min <= r.max);
            for v in r.min..=r.max {
                let known = (codec.min..=codec.max).contains(&codec_version(r.key, v));
                assert!(known || is_hand_coded(r.key, v), "{:?} v{v}", r.key);
            }
        }
        assert_eq!(ProduceRequest::VERSIONS.min, 3);
        // Hand-coded versions are the next past the codec's requests (its
        // `ApiKey::valid_versions` table and its response types already
        // say 10 for both, but the request types stop at 9).
        assert_eq!(OffsetCommitRequest::VERSIONS.max + 1, HAND_CODED[0].1);
        assert_eq!(OffsetFetchRequest::VERSIONS.max + 1, HAND_CODED[1].1);
        assert_eq!(DeleteGroupsRequest::VERSIONS.max + 1, HAND_CODED[2].1);
        assert_eq!(DescribeLogDirsRequest::VERSIONS.max + 1, HAND_CODED[3].1);
        assert_eq!(ApiVersionsRequest::VERSIONS.max + 1, HAND_CODED[4].1);
        assert_eq!(ListOffsetsRequest::VERSIONS.max, 10);
    }

    /// The headers of versions past the codec are still worked out by
    /// it: every version from the first flexible one on uses request
    /// header v2 and response header v1.
    #[test]
    fn versions_past_the_codec_have_flexible_headers() {
        for (key, v) in [
            (ApiKey::ListOffsets, 11),
            (ApiKey::OffsetCommit, 10),
            (ApiKey::OffsetFetch, 10),
            (ApiKey::DeleteGroups, 3),
            (ApiKey::DescribeLogDirs, 5),
        ] {
            assert_eq!(key.request_header_version(v), 2, "{key:?}");
            assert_eq!(key.response_header_version(v), 1, "{key:?}");
        }
    }

    #[test]
    fn lookups() {
        assert!(is_supported(ApiKey::Fetch, 18));
        assert!(!is_supported(ApiKey::Fetch, 19));
        assert!(is_supported(ApiKey::DescribeTopicPartitions, 0));
        assert!(is_supported(ApiKey::AddPartitionsToTxn, 5));
        assert!(!is_supported(ApiKey::AddPartitionsToTxn, 6));
        assert!(is_supported(ApiKey::OffsetCommit, 10));
        assert!(!is_supported(ApiKey::OffsetCommit, 11));
        assert_eq!(codec_version(ApiKey::ListOffsets, 11), 10);
        assert_eq!(codec_version(ApiKey::ListOffsets, 9), 9);
    }

    /// ListOffsets v11 bytes, written out from the message spec, read
    /// and written by the codec at v10: earliest pending upload (-6) for
    /// partition 1 of "t", and its answer.
    #[test]
    fn list_offsets_v11_is_v10_on_the_wire() {
        use bytes::{Bytes, BytesMut};
        use kafka_protocol::messages::list_offsets_response::{
            ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
        };
        use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
        let v = codec_version(ApiKey::ListOffsets, 11);
        let mut b = Vec::new();
        b.extend_from_slice(&(-1i32).to_be_bytes()); // replica_id
        b.push(1); // isolation_level: read_committed
        b.extend_from_slice(&[2, 2, b't']); // 1 topic, "t"
        b.push(2); // 1 partition
        b.extend_from_slice(&1i32.to_be_bytes());
        b.extend_from_slice(&7i32.to_be_bytes()); // current_leader_epoch
        b.extend_from_slice(&(-6i64).to_be_bytes());
        b.extend_from_slice(&[0, 0]); // partition and topic tags
        b.extend_from_slice(&30_000i32.to_be_bytes()); // timeout_ms
        b.push(0);
        let req = ListOffsetsRequest::decode(&mut Bytes::from(b.clone()), v).unwrap();
        assert_eq!(req.isolation_level, 1);
        assert_eq!(req.timeout_ms, 30_000);
        let p = &req.topics[0].partitions[0];
        assert_eq!(req.topics[0].name.0.as_str(), "t");
        assert_eq!((p.partition_index, p.current_leader_epoch), (1, 7));
        assert_eq!(p.timestamp, -6);
        let mut again = BytesMut::new();
        req.encode(&mut again, v).unwrap();
        assert_eq!(&again[..], &b[..]);

        let resp =
            ListOffsetsResponse::default().with_topics(vec![ListOffsetsTopicResponse::default()
                .with_name(TopicName(StrBytes::from_static_str("t")))
                .with_partitions(vec![ListOffsetsPartitionResponse::default()
                    .with_partition_index(1)
                    .with_timestamp(-1)
                    .with_offset(-1)
                    .with_leader_epoch(-1)])]);
        let mut out = BytesMut::new();
        resp.encode(&mut out, v).unwrap();
        let mut b = Vec::new();
        b.extend_from_slice(&0i32.to_be_bytes()); // throttle_time_ms
        b.extend_from_slice(&[2, 2, b't', 2]);
        b.extend_from_slice(&1i32.to_be_bytes());
        b.extend_from_slice(&0i16.to_be_bytes());
        b.extend_from_slice(&(-1i64).to_be_bytes());
        b.extend_from_slice(&(-1i64).to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes());
        b.extend_from_slice(&[0, 0, 0]);
        assert_eq!(&out[..], &b[..]);
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
