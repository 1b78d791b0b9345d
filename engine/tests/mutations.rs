//! Mutated requests: a well-formed request of every supported API and
//! version, with a byte changed, a length blown up, a tail cut off or bytes
//! inserted, reaches every decoder past the header (the `kafka-protocol`
//! codec's and `sluice_protocol`'s own, for OffsetCommit and OffsetFetch
//! v10, DeleteGroups v3, DescribeLogDirs v5 and ApiVersions v5). Every
//! frame must get an
//! answer or a closed connection (only the APIs that wait by design may
//! still be waiting after a generous deadline, such as a Fetch whose
//! `max_wait_ms` was blown up), no shard may panic or exit,
//! and afterwards every shard must still serve. The broker runs two shards
//! behind one `SO_REUSEPORT` port: a dead shard's socket either leaves the
//! connections the kernel gives it unanswered or, once closed, lets the
//! kernel send every new connection to the live shard, where one fresh
//! client's answer would not show it. So 32 fresh connections must be
//! answered, a produce to each partition (one per shard) appended, and a
//! clean stop must log "shard stopped" for each shard.

mod common;

use bytes::{Bytes, BytesMut};
use common::{call, Broker, Raw};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::describe_topic_partitions_request::{Cursor, TopicRequest};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};
use sluice_protocol::api_versions::{codec_version, is_hand_coded, SUPPORTED};
use sluice_protocol::record_batch::BatchBuilder;
use std::collections::BTreeMap;
use std::io::{ErrorKind, Read};
use std::time::{Duration, Instant};
use uuid::Uuid;

const TOPIC: &str = "mutations";
const MUTATIONS_PER_REQUEST: usize = 40;
/// Shards, and partitions of the test topic: partitions are spread
/// round-robin over shards, so each shard owns one.
const SHARDS: usize = 2;
/// How long the frames of one API version (sent at once, on a connection
/// each) have to be answered or closed. Generous: answers take
/// milliseconds, a JoinGroup the 3 s initial rebalance delay.
const ANSWER_DEADLINE: Duration = Duration::from_secs(20);

fn topic() -> TopicName {
    TopicName(StrBytes::from_static_str(TOPIC))
}

fn group() -> GroupId {
    GroupId(StrBytes::from_static_str("mutations-group"))
}

/// Encodes a request at a version.
type Encode = Box<dyn Fn(&mut BytesMut, i16) -> Result<(), String>>;

/// `request`, or the empty request of its type at versions that lack a field
/// it sets.
fn enc<T: Encodable + Default + 'static>(request: T) -> Encode {
    Box::new(move |buf, version| {
        let start = buf.len();
        if request.encode(buf, version).is_ok() {
            return Ok(());
        }
        buf.truncate(start);
        T::default().encode(buf, version).map_err(|e| e.to_string())
    })
}

/// A request at a version `sluice_protocol` writes itself (topics by id,
/// so the test topic's `id`): OffsetCommit and OffsetFetch v10,
/// DeleteGroups v3, DescribeLogDirs v5 and ApiVersions v5.
fn hand_coded_sample(key: ApiKey, version: i16, id: Uuid) -> Vec<u8> {
    use sluice_protocol::{
        api_versions_request, delete_groups, describe_log_dirs, offset_commit, offset_fetch,
    };
    match (key, version) {
        (ApiKey::OffsetCommit, offset_commit::TOPIC_ID_VERSION) => {
            offset_commit::OffsetCommitRequest {
                group_id: "mutations-group".into(),
                generation_id_or_member_epoch: -1,
                topics: vec![offset_commit::CommitTopic {
                    topic_id: id,
                    partitions: vec![offset_commit::CommitPartition {
                        committed_offset: 1,
                        committed_leader_epoch: -1,
                        ..Default::default()
                    }],
                }],
                ..Default::default()
            }
            .encode()
        }
        (ApiKey::OffsetFetch, offset_fetch::TOPIC_ID_VERSION) => offset_fetch::OffsetFetchRequest {
            groups: vec![offset_fetch::FetchGroup {
                group_id: "mutations-group".into(),
                member_epoch: -1,
                topics: Some(vec![(id, vec![0, 1])]),
                ..Default::default()
            }],
            require_stable: true,
        }
        .encode(),
        (ApiKey::DeleteGroups, delete_groups::ERROR_MESSAGE_VERSION) => {
            delete_groups::DeleteGroupsRequest {
                groups_names: vec!["mutations-group".into(), "mutations-other".into()],
            }
            .encode()
        }
        (ApiKey::DescribeLogDirs, describe_log_dirs::CORDONED_VERSION) => {
            describe_log_dirs::DescribeLogDirsRequest {
                topics: Some(vec![(TOPIC.into(), vec![0, 1])]),
            }
            .encode()
        }
        // The cluster and node named are not the broker's, so a mutation
        // may land on either answer.
        (ApiKey::ApiVersions, api_versions_request::TARGET_VERSION) => {
            api_versions_request::ApiVersionsRequest {
                client_software_name: "mutations".into(),
                client_software_version: "1.0".into(),
                cluster_id: Some("mutations-cluster".into()),
                node_id: 0,
            }
            .encode()
        }
        _ => panic!("no hand-coded sample of {key:?} v{version}"),
    }
}

/// A request for `key` naming the test topic where it has one (by name,
/// and by `id` at the versions that name topics by id), so that the
/// mutations reach the handlers' deeper paths.
fn sample(key: ApiKey, id: Uuid) -> Encode {
    let mut batch = BatchBuilder::new(1_000);
    batch.push(1_000, Some(b"key"), Some(b"value"), &[]);
    match key {
        ApiKey::Produce => enc(ProduceRequest::default()
            .with_acks(1)
            .with_timeout_ms(1_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(topic())
                .with_topic_id(id)
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(Bytes::from(batch.finish())))])])),
        ApiKey::Fetch => enc(FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(0)
            .with_max_bytes(1 << 20)
            .with_topics(vec![FetchTopic::default()
                .with_topic(topic())
                .with_topic_id(id)
                .with_partitions(vec![
                    FetchPartition::default().with_partition_max_bytes(1 << 20)
                ])])),
        ApiKey::ListOffsets => enc(ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(topic())
                .with_partitions(vec![
                    ListOffsetsPartition::default().with_timestamp(-1)
                ])])),
        ApiKey::Metadata => enc(MetadataRequest::default().with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(topic())),
        ]))),
        ApiKey::CreateTopics => enc(CreateTopicsRequest::default()
            .with_timeout_ms(1_000)
            .with_topics(vec![CreatableTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("mutations-created")))
                .with_num_partitions(1)
                .with_replication_factor(1)])),
        ApiKey::OffsetCommit => enc(OffsetCommitRequest::default()
            .with_group_id(group())
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(topic())
                .with_partitions(vec![
                    OffsetCommitRequestPartition::default().with_committed_offset(1)
                ])])),
        ApiKey::FindCoordinator => enc(FindCoordinatorRequest::default().with_key(group().0)),
        ApiKey::OffsetFetch => enc(OffsetFetchRequest::default().with_group_id(group())),
        ApiKey::JoinGroup => enc(JoinGroupRequest::default()
            .with_group_id(group())
            .with_session_timeout_ms(6_000)
            .with_rebalance_timeout_ms(6_000)
            .with_protocol_type(StrBytes::from_static_str("consumer"))),
        ApiKey::Heartbeat => enc(HeartbeatRequest::default()),
        ApiKey::LeaveGroup => enc(LeaveGroupRequest::default()),
        ApiKey::SyncGroup => enc(SyncGroupRequest::default()),
        ApiKey::DescribeGroups => enc(DescribeGroupsRequest::default().with_groups(vec![group()])),
        ApiKey::ListGroups => enc(ListGroupsRequest::default()),
        ApiKey::ApiVersions => enc(ApiVersionsRequest::default()),
        ApiKey::DeleteTopics => enc(DeleteTopicsRequest::default()),
        ApiKey::DeleteRecords => enc(DeleteRecordsRequest::default()),
        ApiKey::InitProducerId => enc(InitProducerIdRequest::default()),
        ApiKey::OffsetForLeaderEpoch => enc(OffsetForLeaderEpochRequest::default()),
        ApiKey::DescribeConfigs => enc(DescribeConfigsRequest::default()),
        ApiKey::AlterConfigs => enc(AlterConfigsRequest::default()),
        ApiKey::DescribeLogDirs => enc(DescribeLogDirsRequest::default()),
        ApiKey::CreatePartitions => enc(CreatePartitionsRequest::default()),
        ApiKey::DeleteGroups => enc(DeleteGroupsRequest::default()),
        ApiKey::ElectLeaders => enc(ElectLeadersRequest::default()),
        ApiKey::IncrementalAlterConfigs => enc(IncrementalAlterConfigsRequest::default()),
        ApiKey::AlterPartitionReassignments => enc(AlterPartitionReassignmentsRequest::default()),
        ApiKey::ListPartitionReassignments => enc(ListPartitionReassignmentsRequest::default()),
        ApiKey::OffsetDelete => enc(OffsetDeleteRequest::default().with_group_id(group())),
        ApiKey::DescribeCluster => enc(DescribeClusterRequest::default()),
        ApiKey::DescribeTopicPartitions => enc(DescribeTopicPartitionsRequest::default()
            .with_topics(vec![TopicRequest::default().with_name(topic())])
            .with_response_partition_limit(1)
            .with_cursor(Some(Cursor::default().with_topic_name(topic())))),
        ApiKey::DescribeQuorum => {
            use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
            enc(
                DescribeQuorumRequest::default().with_topics(vec![TopicData::default()
                    .with_topic_name(TopicName(StrBytes::from_static_str("__cluster_metadata")))
                    .with_partitions(vec![PartitionData::default()])]),
            )
        }
        ApiKey::ConsumerGroupHeartbeat => enc(ConsumerGroupHeartbeatRequest::default()
            .with_group_id(group())
            .with_member_id(StrBytes::from_static_str("mutations-member"))
            .with_rebalance_timeout_ms(30_000)
            .with_subscribed_topic_names(Some(vec![topic()]))
            .with_subscribed_topic_regex(Some(StrBytes::from_static_str("mut.*")))
            .with_server_assignor(Some(StrBytes::from_static_str("uniform")))
            .with_topic_partitions(Some(Vec::new()))),
        ApiKey::ConsumerGroupDescribe => {
            enc(ConsumerGroupDescribeRequest::default().with_group_ids(vec![group()]))
        }
        ApiKey::SaslHandshake => {
            enc(SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN")))
        }
        ApiKey::SaslAuthenticate => enc(SaslAuthenticateRequest::default()
            .with_auth_bytes(Bytes::from_static(b"\0alice\0secret"))),
        ApiKey::AlterUserScramCredentials => {
            use kafka_protocol::messages::alter_user_scram_credentials_request::ScramCredentialUpsertion;
            enc(
                AlterUserScramCredentialsRequest::default().with_upsertions(vec![
                    ScramCredentialUpsertion::default()
                        .with_name(StrBytes::from_static_str("mutations-user"))
                        .with_mechanism(1)
                        .with_iterations(4096)
                        .with_salt(Bytes::from_static(b"salt"))
                        .with_salted_password(Bytes::from_static(&[7; 32])),
                ]),
            )
        }
        ApiKey::DescribeUserScramCredentials => enc(DescribeUserScramCredentialsRequest::default()),
        ApiKey::AlterClientQuotas => {
            use kafka_protocol::messages::alter_client_quotas_request::{
                EntityData, EntryData, OpData,
            };
            enc(AlterClientQuotasRequest::default()
                .with_entries(vec![EntryData::default()
                    .with_entity(vec![EntityData::default()
                        .with_entity_type(StrBytes::from_static_str("client-id"))
                        .with_entity_name(Some(StrBytes::from_static_str("mutations")))])
                    .with_ops(vec![OpData::default()
                        .with_key(StrBytes::from_static_str("producer_byte_rate"))
                        .with_value(1e9)])])
                // Stores nothing: a mutated quota must not throttle
                // the test's own clients.
                .with_validate_only(true))
        }
        ApiKey::DescribeClientQuotas => {
            use kafka_protocol::messages::describe_client_quotas_request::ComponentData;
            enc(DescribeClientQuotasRequest::default().with_components(vec![
                ComponentData::default()
                    .with_entity_type(StrBytes::from_static_str("client-id"))
                    .with_match_type(2),
            ]))
        }
        ApiKey::CreateAcls => {
            use kafka_protocol::messages::create_acls_request::AclCreation;
            enc(
                CreateAclsRequest::default().with_creations(vec![AclCreation::default()
                    .with_resource_type(2)
                    .with_resource_name(topic().0)
                    .with_resource_pattern_type(3)
                    .with_principal(StrBytes::from_static_str("User:alice"))
                    .with_host(StrBytes::from_static_str("*"))
                    .with_operation(3)
                    .with_permission_type(3)]),
            )
        }
        ApiKey::DescribeAcls => enc(DescribeAclsRequest::default()
            .with_resource_type_filter(1)
            .with_pattern_type_filter(1)
            .with_operation(1)
            .with_permission_type(1)),
        ApiKey::DeleteAcls => {
            use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
            enc(
                DeleteAclsRequest::default().with_filters(vec![DeleteAclsFilter::default()
                    .with_resource_type_filter(1)
                    .with_pattern_type_filter(1)
                    .with_operation(1)
                    .with_permission_type(1)]),
            )
        }
        ApiKey::WriteTxnMarkers => {
            use kafka_protocol::messages::write_txn_markers_request::{
                WritableTxnMarker, WritableTxnMarkerTopic,
            };
            enc(
                WriteTxnMarkersRequest::default().with_markers(vec![WritableTxnMarker::default()
                    .with_producer_id(ProducerId(7))
                    .with_producer_epoch(0)
                    .with_topics(vec![WritableTxnMarkerTopic::default()
                        .with_name(topic())
                        .with_partition_indexes(vec![0])])]),
            )
        }
        ApiKey::DescribeProducers => enc(DescribeProducersRequest::default().with_topics(vec![
            kafka_protocol::messages::describe_producers_request::TopicRequest::default()
                .with_name(topic())
                .with_partition_indexes(vec![0]),
        ])),
        ApiKey::AddPartitionsToTxn => {
            use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
            enc(AddPartitionsToTxnRequest::default()
                .with_v3_and_below_transactional_id(TransactionalId(StrBytes::from_static_str(
                    "tx",
                )))
                .with_v3_and_below_producer_id(ProducerId(7))
                .with_v3_and_below_producer_epoch(0)
                .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default()
                    .with_name(topic())
                    .with_partitions(vec![0])]))
        }
        ApiKey::AddOffsetsToTxn => enc(AddOffsetsToTxnRequest::default()
            .with_transactional_id(TransactionalId(StrBytes::from_static_str("tx")))
            .with_producer_id(ProducerId(7))
            .with_group_id(GroupId(StrBytes::from_static_str("g")))),
        ApiKey::EndTxn => enc(EndTxnRequest::default()
            .with_transactional_id(TransactionalId(StrBytes::from_static_str("tx")))
            .with_producer_id(ProducerId(7))
            .with_committed(true)),
        ApiKey::DescribeTransactions => enc(DescribeTransactionsRequest::default()
            .with_transactional_ids(vec![TransactionalId(StrBytes::from_static_str("tx"))])),
        // Every filter at the versions that have it: v1's duration and
        // v2's transactional id pattern.
        ApiKey::ListTransactions => Box::new(|buf: &mut BytesMut, version: i16| {
            let mut req = ListTransactionsRequest::default()
                .with_state_filters(vec![StrBytes::from_static_str("Ongoing")])
                .with_producer_id_filters(vec![ProducerId(7)]);
            if version >= 1 {
                req.duration_filter = 1_000;
            }
            if version >= 2 {
                req.transactional_id_pattern = Some(StrBytes::from_static_str("mutations-.*"));
            }
            req.encode(buf, version).map_err(|e| e.to_string())
        }),
        ApiKey::TxnOffsetCommit => {
            use kafka_protocol::messages::txn_offset_commit_request::{
                TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
            };
            enc(TxnOffsetCommitRequest::default()
                .with_transactional_id(TransactionalId(StrBytes::from_static_str("tx")))
                .with_group_id(GroupId(StrBytes::from_static_str("g")))
                .with_producer_id(ProducerId(7))
                .with_generation_id(-1)
                .with_topics(vec![TxnOffsetCommitRequestTopic::default()
                    .with_name(topic())
                    .with_partitions(vec![TxnOffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(1)])]))
        }
        other => panic!("no sample request for supported API {other:?}"),
    }
}

/// A fixed-seed xorshift stream, so a failure replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// `body` with one mutation.
fn mutate(rng: &mut Rng, body: &[u8]) -> Vec<u8> {
    let mut b = body.to_vec();
    let at = rng.below(b.len() + 1);
    match rng.below(5) {
        // A byte changed.
        0 if !b.is_empty() => {
            let i = at.min(b.len() - 1);
            b[i] = rng.next() as u8;
        }
        // A length (or any field) made huge or negative.
        1 => {
            let big: [u8; 4] = match rng.below(3) {
                0 => i32::MAX.to_be_bytes(),
                1 => (-2i32).to_be_bytes(),
                _ => [0xff, 0xff, 0xff, 0xff],
            };
            for (i, byte) in big.into_iter().enumerate() {
                if let Some(slot) = b.get_mut(at + i) {
                    *slot = byte;
                }
            }
        }
        // A compact length made huge.
        2 => {
            let end = (at + 5).min(b.len());
            b.splice(at..end, [0xff, 0xff, 0xff, 0xff, 0x0f]);
        }
        // The tail cut off.
        3 => b.truncate(at),
        // Bytes inserted.
        _ => {
            let n = 1 + rng.below(8);
            let extra: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            b.splice(at..at, extra);
        }
    }
    b
}

/// APIs whose answer may wait by design on a field a mutation can blow up
/// (a fetch's `max_wait_ms`, a join's rebalance timeout, a sync waiting
/// for its group's leader): such a frame may still be unanswered at the
/// deadline. Every other API must answer or close; a produce too, since
/// acks=all on a one-replica partition waits for nothing.
fn may_wait(key: ApiKey) -> bool {
    matches!(key, ApiKey::Fetch | ApiKey::JoinGroup | ApiKey::SyncGroup)
}

/// What became of one mutated frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// A whole response frame with the request's correlation id.
    Answered,
    /// End of stream or a reset.
    Closed,
    /// Neither, by the deadline.
    Waiting,
}

/// Reads what the broker did with the one request sent on `raw`
/// (correlation id 1), waiting until `deadline` at most.
fn outcome(raw: &mut Raw, deadline: Instant) -> Result<Outcome, String> {
    let left = deadline.saturating_duration_since(Instant::now());
    raw.stream
        .set_read_timeout(Some(left.max(Duration::from_millis(1))))
        .unwrap();
    let mut len = [0u8; 4];
    match raw.stream.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) => {
            return match e.kind() {
                ErrorKind::UnexpectedEof
                | ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted => Ok(Outcome::Closed),
                ErrorKind::WouldBlock | ErrorKind::TimedOut => Ok(Outcome::Waiting),
                _ => Err(format!("reading a response length: {e}")),
            }
        }
    }
    let len = i32::from_be_bytes(len);
    if !(4..=64 << 20).contains(&len) {
        return Err(format!("response length {len}"));
    }
    raw.stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut frame = vec![0u8; len as usize];
    raw.stream
        .read_exact(&mut frame)
        .map_err(|e| format!("reading a {len}-byte response: {e}"))?;
    let correlation_id = i32::from_be_bytes(frame[..4].try_into().unwrap());
    if correlation_id != 1 {
        return Err(format!("correlation id {correlation_id}, sent 1"));
    }
    Ok(Outcome::Answered)
}

/// Fails the test if the broker's log shows a panic or a shard that ended.
fn assert_no_shard_died(broker: &Broker, context: &dyn Fn() -> String) {
    let log = broker.log();
    for sign in ["panicked", "shard stopped", "shard ended"] {
        assert!(
            !log.contains(sign),
            "the broker's log says \"{sign}\" after {}\nbroker log:\n{log}",
            context()
        );
    }
}

/// Creates the test topic with a partition per shard; answers its id.
fn create_topic(broker: &Broker) -> Uuid {
    let mut raw = Raw::connect(broker.addr());
    let req = CreateTopicsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(topic())
            .with_num_partitions(SHARDS as i32)
            .with_replication_factor(1)]);
    let resp: CreateTopicsResponse =
        call(&mut raw, ApiKey::CreateTopics, 7, &req).expect("CreateTopics answer");
    assert_eq!(resp.topics[0].error_code, 0);
    resp.topics[0].topic_id
}

/// Every shard still serves: fresh clients get answers, and a produce to
/// each partition (each shard owns one; a request for a dead shard's
/// partition would never be answered) is appended.
fn assert_every_shard_serves(broker: &Broker) {
    let mut conns: Vec<Raw> = (0..32).map(|_| Raw::connect(broker.addr())).collect();
    for (i, raw) in conns.iter_mut().enumerate() {
        let resp: Option<ApiVersionsResponse> =
            call(raw, ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
        assert!(
            resp.is_some_and(|r| r.error_code == 0),
            "fresh connection {i} got no ApiVersions answer; broker log:\n{}",
            broker.log()
        );
    }
    for partition in 0..SHARDS as i32 {
        let mut batch = BatchBuilder::new(1_000);
        batch.push(1_000, None, Some(b"after the mutations"), &[]);
        let req = ProduceRequest::default()
            .with_acks(1)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(topic())
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(partition)
                    .with_records(Some(Bytes::from(batch.finish())))])]);
        let mut raw = Raw::connect(broker.addr());
        let resp: ProduceResponse = call(&mut raw, ApiKey::Produce, 9, &req).unwrap_or_else(|| {
            panic!(
                "no answer to a produce to partition {partition}; broker log:\n{}",
                broker.log()
            )
        });
        let code = resp.responses[0].partition_responses[0].error_code;
        assert_eq!(code, 0, "produce to partition {partition}");
    }
}

#[test]
fn mutated_requests_of_every_supported_api_and_version_leave_the_broker_serving() {
    let mut broker = Broker::start(SHARDS, &[]);
    let id = create_topic(&broker);
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let mut versions = 0usize;
    for range in SUPPORTED {
        let encode = sample(range.key, id);
        for version in range.min..=range.max {
            versions += 1;
            let mut body = BytesMut::new();
            if is_hand_coded(range.key, version) {
                body.extend_from_slice(&hand_coded_sample(range.key, version, id));
            } else {
                encode(&mut body, codec_version(range.key, version))
                    .unwrap_or_else(|e| panic!("{:?} v{version}: {e}", range.key));
            }
            let flexible = range.key.request_header_version(version) >= 2;
            // All of one version's frames at once, a connection each, so
            // that frames that wait share one deadline.
            let mut sent = Vec::new();
            for _ in 0..MUTATIONS_PER_REQUEST {
                let mutated = mutate(&mut rng, &body);
                let mut raw = Raw::connect(broker.addr());
                raw.send(range.key as i16, version, 1, flexible, &mutated);
                sent.push((raw, mutated));
            }
            let deadline = Instant::now() + ANSWER_DEADLINE;
            for (mut raw, mutated) in sent {
                let what = || {
                    format!(
                        "{:?} v{version} with body {mutated:?}; broker log:\n{}",
                        range.key,
                        broker.log()
                    )
                };
                let got = outcome(&mut raw, deadline).unwrap_or_else(|e| panic!("{e}: {}", what()));
                assert!(
                    got != Outcome::Waiting || may_wait(range.key),
                    "no answer and no close within {ANSWER_DEADLINE:?}: {}",
                    what()
                );
                *counts
                    .entry(match got {
                        Outcome::Answered => "answered",
                        Outcome::Closed => "closed",
                        Outcome::Waiting => "waiting",
                    })
                    .or_default() += 1;
            }
            assert_no_shard_died(&broker, &|| format!("{:?} v{version}", range.key));
        }
    }
    let frames: usize = counts.values().sum();
    println!("{frames} mutated frames over {versions} API versions: {counts:?}");
    assert_eq!(frames, versions * MUTATIONS_PER_REQUEST);
    assert_every_shard_serves(&broker);
    assert_no_shard_died(&broker, &|| "the final checks".to_string());
    broker.stop();
    let log = broker.log();
    for shard in 0..SHARDS {
        assert!(
            log.lines()
                .any(|l| l.contains("shard stopped") && l.contains(&format!("shard={shard} "))),
            "shard {shard} did not stop cleanly; broker log:\n{log}"
        );
    }
    assert!(!log.contains("panicked"), "broker log:\n{log}");
    assert!(!log.contains("shard ended"), "broker log:\n{log}");
}
