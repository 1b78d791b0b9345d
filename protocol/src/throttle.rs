//! Where a response carries `throttle_time_ms`.
//!
//! A client over its request-time quota learns it from the response to
//! the request that took it over, as from Kafka, whatever the API: the
//! broker measures the request's handling only once its response is
//! encoded, so it writes the throttle into the encoded bytes. In almost
//! every response the field (INT32) leads the body; the exceptions are
//! named below.

use kafka_protocol::messages::ApiKey;

/// The byte offset of `throttle_time_ms` in the body of `key`'s
/// response at `version`, or None where it has no such field or it sits
/// behind fields of variable length (Produce after its topics,
/// ApiVersions after its keys: a Produce response carries its byte-rate
/// throttle already).
pub fn throttle_time_at(key: ApiKey, version: i16) -> Option<usize> {
    use ApiKey::*;
    // The first version whose body starts with the field.
    let from = match key {
        Fetch | FindCoordinator | SyncGroup | Heartbeat | LeaveGroup | ListGroups
        | DescribeGroups | DeleteTopics => 1,
        JoinGroup | ListOffsets | OffsetForLeaderEpoch | CreateTopics => 2,
        Metadata | OffsetCommit | OffsetFetch => 3,
        DeleteRecords
        | DescribeLogDirs
        | CreatePartitions
        | DescribeConfigs
        | AlterConfigs
        | IncrementalAlterConfigs
        | InitProducerId
        | DeleteGroups
        | ElectLeaders
        | AlterPartitionReassignments
        | ListPartitionReassignments
        | DescribeCluster
        | DescribeProducers
        | ConsumerGroupHeartbeat
        | ConsumerGroupDescribe
        | AlterUserScramCredentials
        | DescribeUserScramCredentials
        | DescribeClientQuotas
        | AlterClientQuotas
        | DescribeTopicPartitions
        | CreateAcls
        | DescribeAcls
        | DeleteAcls
        | TxnOffsetCommit
        | AddPartitionsToTxn
        | AddOffsetsToTxn
        | EndTxn
        | DescribeTransactions
        | ListTransactions => 0,
        // After its error code.
        OffsetDelete => return Some(2),
        _ => return None,
    };
    (version >= from).then_some(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api_versions::supported_range;
    use bytes::BytesMut;
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::{Encodable, Message};

    const MARK: i32 = 0x1122_3344;

    /// Every served version of `key`'s response the codec knows, encoded
    /// with a marked throttle: the marker is where the table says, and a
    /// version the table gives no place has no throttle at all.
    fn check<T: Encodable + Message + Default>(key: ApiKey, set: fn(&mut T, i32)) {
        let served = supported_range(key).expect("a served API");
        let (lo, hi) = (
            served.min.max(T::VERSIONS.min),
            served.max.min(T::VERSIONS.max),
        );
        assert!(lo <= hi, "{key:?}");
        for v in lo..=hi {
            let encode = |ms| {
                let mut r = T::default();
                set(&mut r, ms);
                let mut b = BytesMut::new();
                r.encode(&mut b, v).unwrap();
                b
            };
            let marked = encode(MARK);
            match throttle_time_at(key, v) {
                Some(at) => assert_eq!(marked[at..at + 4], MARK.to_be_bytes(), "{key:?} v{v}"),
                None => assert_eq!(marked, encode(7), "{key:?} v{v} has a throttle"),
            }
        }
    }

    macro_rules! check_all {
        ($($key:ident => $ty:ty),* $(,)?) => {
            $(check::<$ty>(ApiKey::$key, |r, ms| r.throttle_time_ms = ms);)*
        };
    }

    #[test]
    fn the_table_matches_the_codecs_layouts() {
        check_all!(
            Fetch => FetchResponse,
            FindCoordinator => FindCoordinatorResponse,
            SyncGroup => SyncGroupResponse,
            Heartbeat => HeartbeatResponse,
            LeaveGroup => LeaveGroupResponse,
            ListGroups => ListGroupsResponse,
            DescribeGroups => DescribeGroupsResponse,
            DeleteTopics => DeleteTopicsResponse,
            JoinGroup => JoinGroupResponse,
            ListOffsets => ListOffsetsResponse,
            OffsetForLeaderEpoch => OffsetForLeaderEpochResponse,
            CreateTopics => CreateTopicsResponse,
            Metadata => MetadataResponse,
            OffsetCommit => OffsetCommitResponse,
            OffsetFetch => OffsetFetchResponse,
            DeleteRecords => DeleteRecordsResponse,
            DescribeLogDirs => DescribeLogDirsResponse,
            CreatePartitions => CreatePartitionsResponse,
            DescribeConfigs => DescribeConfigsResponse,
            AlterConfigs => AlterConfigsResponse,
            IncrementalAlterConfigs => IncrementalAlterConfigsResponse,
            InitProducerId => InitProducerIdResponse,
            DeleteGroups => DeleteGroupsResponse,
            ElectLeaders => ElectLeadersResponse,
            AlterPartitionReassignments => AlterPartitionReassignmentsResponse,
            ListPartitionReassignments => ListPartitionReassignmentsResponse,
            DescribeCluster => DescribeClusterResponse,
            DescribeProducers => DescribeProducersResponse,
            ConsumerGroupHeartbeat => ConsumerGroupHeartbeatResponse,
            ConsumerGroupDescribe => ConsumerGroupDescribeResponse,
            AlterUserScramCredentials => AlterUserScramCredentialsResponse,
            DescribeUserScramCredentials => DescribeUserScramCredentialsResponse,
            DescribeClientQuotas => DescribeClientQuotasResponse,
            AlterClientQuotas => AlterClientQuotasResponse,
            DescribeTopicPartitions => DescribeTopicPartitionsResponse,
            CreateAcls => CreateAclsResponse,
            DescribeAcls => DescribeAclsResponse,
            DeleteAcls => DeleteAclsResponse,
            TxnOffsetCommit => TxnOffsetCommitResponse,
            AddPartitionsToTxn => AddPartitionsToTxnResponse,
            AddOffsetsToTxn => AddOffsetsToTxnResponse,
            EndTxn => EndTxnResponse,
            DescribeTransactions => DescribeTransactionsResponse,
            ListTransactions => ListTransactionsResponse,
            OffsetDelete => OffsetDeleteResponse,
        );
    }

    #[test]
    fn responses_without_a_leading_throttle_have_no_place() {
        for key in [
            ApiKey::Produce,
            ApiKey::ApiVersions,
            ApiKey::SaslHandshake,
            ApiKey::SaslAuthenticate,
            ApiKey::DescribeQuorum,
            ApiKey::WriteTxnMarkers,
        ] {
            assert_eq!(throttle_time_at(key, 12), None, "{key:?}");
        }
    }
}
