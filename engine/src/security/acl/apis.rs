//! Which operation each API needs on which resource: the broker's copy
//! of the "Operations and Resources on Protocols" table of Kafka's
//! security documentation, for the APIs Sluice serves.
//!
//! A handler asks through `Ctx::allowed(operation, resource type, name)`;
//! in debug builds that asserts the pair is listed here for the API, so
//! this table and the handlers cannot drift apart, and a test checks
//! that every served API has its row.
//!
//! Where an API lists two rules on one request (CreateTopics: CREATE on
//! the cluster *or* on the topic; Produce from an idempotent producer)
//! the handler combines them as the comments below say.

use super::{Operation, ResourceType};
use kafka_protocol::messages::ApiKey;

use Operation::*;
use ResourceType::{Cluster, Group, Topic, TransactionalId};

/// One (operation, resource type) an API may check.
pub type Rule = (Operation, ResourceType);

/// The rules of every API Sluice serves; an empty list means the API is
/// served to anyone (ApiVersions, and SASL's handshake).
pub const RULES: &[(ApiKey, &[Rule])] = &[
    // WRITE on each topic; a transactional producer WRITE on its
    // transactional id.
    (ApiKey::Produce, &[(Write, Topic), (Write, TransactionalId)]),
    // READ on each topic; a follower (replica id set) CLUSTER_ACTION on
    // the cluster instead.
    (ApiKey::Fetch, &[(Read, Topic), (ClusterAction, Cluster)]),
    (ApiKey::ListOffsets, &[(Describe, Topic)]),
    // DESCRIBE on each topic (others are left out of an all-topics
    // answer); auto-creation needs CREATE on the cluster or the topic.
    (
        ApiKey::Metadata,
        &[(Describe, Topic), (Create, Cluster), (Create, Topic)],
    ),
    (ApiKey::OffsetCommit, &[(Read, Group), (Read, Topic)]),
    (ApiKey::OffsetFetch, &[(Describe, Group), (Describe, Topic)]),
    (
        ApiKey::FindCoordinator,
        &[(Describe, Group), (Describe, TransactionalId)],
    ),
    (ApiKey::JoinGroup, &[(Read, Group)]),
    (ApiKey::Heartbeat, &[(Read, Group)]),
    (ApiKey::LeaveGroup, &[(Read, Group)]),
    (ApiKey::SyncGroup, &[(Read, Group)]),
    (ApiKey::DescribeGroups, &[(Describe, Group)]),
    // DESCRIBE on the cluster lists every group; otherwise only those
    // the principal may DESCRIBE.
    (
        ApiKey::ListGroups,
        &[(Describe, Cluster), (Describe, Group)],
    ),
    (ApiKey::ApiVersions, &[]),
    // CREATE on the cluster, else on each topic; the new topic's configs
    // are returned only with DESCRIBE_CONFIGS on it.
    (
        ApiKey::CreateTopics,
        &[(Create, Cluster), (Create, Topic), (DescribeConfigs, Topic)],
    ),
    (ApiKey::DeleteTopics, &[(Delete, Topic)]),
    (ApiKey::DeleteRecords, &[(Delete, Topic)]),
    // A transactional id: WRITE on it. Idempotent only: IDEMPOTENT_WRITE
    // on the cluster or WRITE on any topic (KIP-679).
    (
        ApiKey::InitProducerId,
        &[
            (Write, TransactionalId),
            (IdempotentWrite, Cluster),
            (Write, Topic),
        ],
    ),
    // DESCRIBE on each topic; a follower CLUSTER_ACTION on the cluster.
    (
        ApiKey::OffsetForLeaderEpoch,
        &[(Describe, Topic), (ClusterAction, Cluster)],
    ),
    // Brokers only: CLUSTER_ACTION on the cluster.
    (ApiKey::WriteTxnMarkers, &[(ClusterAction, Cluster)]),
    (ApiKey::DescribeAcls, &[(Describe, Cluster)]),
    (ApiKey::CreateAcls, &[(Alter, Cluster)]),
    (ApiKey::DeleteAcls, &[(Alter, Cluster)]),
    // Broker resources are checked on the cluster.
    (
        ApiKey::DescribeConfigs,
        &[(DescribeConfigs, Topic), (DescribeConfigs, Cluster)],
    ),
    (
        ApiKey::AlterConfigs,
        &[(AlterConfigs, Topic), (AlterConfigs, Cluster)],
    ),
    (ApiKey::DescribeLogDirs, &[(Describe, Cluster)]),
    (ApiKey::CreatePartitions, &[(Alter, Topic)]),
    (ApiKey::DeleteGroups, &[(Delete, Group)]),
    (ApiKey::ElectLeaders, &[(Alter, Cluster)]),
    (
        ApiKey::IncrementalAlterConfigs,
        &[(AlterConfigs, Topic), (AlterConfigs, Cluster)],
    ),
    (ApiKey::AlterPartitionReassignments, &[(Alter, Cluster)]),
    (ApiKey::ListPartitionReassignments, &[(Describe, Cluster)]),
    (ApiKey::OffsetDelete, &[(Delete, Group), (Read, Topic)]),
    (ApiKey::DescribeQuorum, &[(Describe, Cluster)]),
    (ApiKey::DescribeCluster, &[(Describe, Cluster)]),
    (ApiKey::DescribeProducers, &[(Read, Topic)]),
    (
        ApiKey::ConsumerGroupHeartbeat,
        &[(Read, Group), (Describe, Topic)],
    ),
    (ApiKey::ConsumerGroupDescribe, &[(Describe, Group)]),
    (ApiKey::DescribeTopicPartitions, &[(Describe, Topic)]),
    (ApiKey::SaslHandshake, &[]),
    (ApiKey::SaslAuthenticate, &[]),
    (ApiKey::DescribeUserScramCredentials, &[(Describe, Cluster)]),
    (ApiKey::AlterUserScramCredentials, &[(Alter, Cluster)]),
    (ApiKey::DescribeClientQuotas, &[(DescribeConfigs, Cluster)]),
    (ApiKey::AlterClientQuotas, &[(AlterConfigs, Cluster)]),
    // WRITE on the transactional id, READ on the group and each topic.
    (
        ApiKey::TxnOffsetCommit,
        &[(Write, TransactionalId), (Read, Group), (Read, Topic)],
    ),
    // Transactions: WRITE on the transactional id, and on each topic
    // added; READ on the group whose offsets join the transaction.
    (
        ApiKey::AddPartitionsToTxn,
        &[
            (Write, TransactionalId),
            (Write, Topic),
            (ClusterAction, Cluster),
        ],
    ),
    (
        ApiKey::AddOffsetsToTxn,
        &[(Write, TransactionalId), (Read, Group)],
    ),
    (ApiKey::EndTxn, &[(Write, TransactionalId)]),
    (
        ApiKey::DescribeTransactions,
        &[(Describe, TransactionalId), (Describe, Topic)],
    ),
    (ApiKey::ListTransactions, &[(Describe, TransactionalId)]),
];

/// The rules of `api`; `None` for an API this table does not know.
pub fn rules(api: ApiKey) -> Option<&'static [Rule]> {
    RULES.iter().find(|(k, _)| *k == api).map(|(_, r)| *r)
}

/// Whether `api` may check `operation` on `resource_type`.
pub fn requires(api: ApiKey, operation: Operation, resource_type: ResourceType) -> bool {
    rules(api).is_some_and(|r| r.contains(&(operation, resource_type)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_protocol::api_versions::SUPPORTED;

    /// Every API the broker advertises has a row: adding an API without
    /// deciding what it needs fails here.
    #[test]
    fn every_served_api_has_rules() {
        for r in SUPPORTED {
            assert!(
                rules(r.key).is_some(),
                "{:?} has no authorization rules",
                r.key
            );
        }
        let mut keys: Vec<i16> = RULES.iter().map(|(k, _)| *k as i16).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), RULES.len(), "an API listed twice");
    }

    /// The matrix: the operation Kafka's documentation names for each
    /// API, resource by resource.
    #[test]
    fn apis_need_what_kafka_documents() {
        let expect: &[(ApiKey, Operation, ResourceType)] = &[
            (ApiKey::Produce, Write, Topic),
            (ApiKey::Produce, Write, TransactionalId),
            (ApiKey::Fetch, Read, Topic),
            (ApiKey::Fetch, ClusterAction, Cluster),
            (ApiKey::ListOffsets, Describe, Topic),
            (ApiKey::Metadata, Describe, Topic),
            (ApiKey::Metadata, Create, Cluster),
            (ApiKey::Metadata, Create, Topic),
            (ApiKey::OffsetCommit, Read, Group),
            (ApiKey::OffsetCommit, Read, Topic),
            (ApiKey::OffsetFetch, Describe, Group),
            (ApiKey::OffsetFetch, Describe, Topic),
            (ApiKey::FindCoordinator, Describe, Group),
            (ApiKey::FindCoordinator, Describe, TransactionalId),
            (ApiKey::JoinGroup, Read, Group),
            (ApiKey::Heartbeat, Read, Group),
            (ApiKey::LeaveGroup, Read, Group),
            (ApiKey::SyncGroup, Read, Group),
            (ApiKey::DescribeGroups, Describe, Group),
            (ApiKey::ListGroups, Describe, Cluster),
            (ApiKey::ListGroups, Describe, Group),
            (ApiKey::CreateTopics, Create, Cluster),
            (ApiKey::CreateTopics, Create, Topic),
            (ApiKey::CreateTopics, DescribeConfigs, Topic),
            (ApiKey::DeleteTopics, Delete, Topic),
            (ApiKey::DeleteRecords, Delete, Topic),
            (ApiKey::InitProducerId, Write, TransactionalId),
            (ApiKey::InitProducerId, IdempotentWrite, Cluster),
            (ApiKey::AddPartitionsToTxn, Write, TransactionalId),
            (ApiKey::AddPartitionsToTxn, Write, Topic),
            (ApiKey::AddPartitionsToTxn, ClusterAction, Cluster),
            (ApiKey::AddOffsetsToTxn, Write, TransactionalId),
            (ApiKey::AddOffsetsToTxn, Read, Group),
            (ApiKey::EndTxn, Write, TransactionalId),
            (ApiKey::DescribeTransactions, Describe, TransactionalId),
            (ApiKey::ListTransactions, Describe, TransactionalId),
            (ApiKey::OffsetForLeaderEpoch, ClusterAction, Cluster),
            (ApiKey::OffsetForLeaderEpoch, Describe, Topic),
            (ApiKey::DescribeAcls, Describe, Cluster),
            (ApiKey::CreateAcls, Alter, Cluster),
            (ApiKey::DeleteAcls, Alter, Cluster),
            (ApiKey::DescribeConfigs, DescribeConfigs, Cluster),
            (ApiKey::DescribeConfigs, DescribeConfigs, Topic),
            (ApiKey::AlterConfigs, AlterConfigs, Cluster),
            (ApiKey::AlterConfigs, AlterConfigs, Topic),
            (ApiKey::DescribeLogDirs, Describe, Cluster),
            (ApiKey::CreatePartitions, Alter, Topic),
            (ApiKey::DeleteGroups, Delete, Group),
            (ApiKey::ElectLeaders, Alter, Cluster),
            (ApiKey::IncrementalAlterConfigs, AlterConfigs, Cluster),
            (ApiKey::IncrementalAlterConfigs, AlterConfigs, Topic),
            (ApiKey::AlterPartitionReassignments, Alter, Cluster),
            (ApiKey::ListPartitionReassignments, Describe, Cluster),
            (ApiKey::OffsetDelete, Delete, Group),
            (ApiKey::OffsetDelete, Read, Topic),
            (ApiKey::DescribeQuorum, Describe, Cluster),
            (ApiKey::DescribeCluster, Describe, Cluster),
            (ApiKey::ConsumerGroupHeartbeat, Read, Group),
            (ApiKey::ConsumerGroupHeartbeat, Describe, Topic),
            (ApiKey::ConsumerGroupDescribe, Describe, Group),
            (ApiKey::DescribeTopicPartitions, Describe, Topic),
            (ApiKey::TxnOffsetCommit, Write, TransactionalId),
            (ApiKey::TxnOffsetCommit, Read, Group),
            (ApiKey::TxnOffsetCommit, Read, Topic),
        ];
        for (api, op, t) in expect {
            assert!(requires(*api, *op, *t), "{api:?} needs {op:?} on {t:?}");
        }
        // Nothing needs more than Kafka asks.
        assert!(!requires(ApiKey::Fetch, Write, Topic));
        assert!(!requires(ApiKey::Produce, Read, Topic));
        assert_eq!(rules(ApiKey::ApiVersions), Some(&[][..]));
    }
}
