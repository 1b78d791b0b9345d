//! Mutated requests: a well-formed request of every supported API and
//! version, with a byte changed, a length blown up, a tail cut off or bytes
//! inserted, reaches every decoder past the header. Whatever each one gets
//! (an error, a closed connection), the broker must keep serving.

mod common;

use bytes::{Bytes, BytesMut};
use common::{call, Broker, Raw};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};
use sluice_protocol::api_versions::SUPPORTED;
use sluice_protocol::record_batch::BatchBuilder;

const TOPIC: &str = "mutations";
const MUTATIONS_PER_REQUEST: usize = 40;
/// Frames sent between two checks that the broker still answers.
const CHECK_EVERY: usize = 100;

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

/// A request for `key` naming the test topic where it has one, so that the
/// mutations reach the handlers' deeper paths.
fn sample(key: ApiKey) -> Encode {
    let mut batch = BatchBuilder::new(1_000);
    batch.push(1_000, Some(b"key"), Some(b"value"), &[]);
    match key {
        ApiKey::Produce => enc(ProduceRequest::default()
            .with_acks(1)
            .with_timeout_ms(1_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(topic())
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(Bytes::from(batch.finish())))])])),
        ApiKey::Fetch => enc(FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(0)
            .with_max_bytes(1 << 20)
            .with_topics(vec![FetchTopic::default()
                .with_topic(topic())
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

fn assert_serving(broker: &Broker, last: &[(ApiKey, i16, Vec<u8>)]) {
    let mut raw = Raw::connect(broker.addr());
    let resp: Option<ApiVersionsResponse> = call(
        &mut raw,
        ApiKey::ApiVersions,
        3,
        &ApiVersionsRequest::default(),
    );
    assert!(
        resp.is_some_and(|r| r.error_code == 0),
        "the broker stopped answering after one of these (api, version, body):\n{:?}\nbroker log:\n{}",
        last,
        broker.log()
    );
}

#[test]
fn mutated_requests_of_every_supported_api_and_version_leave_the_broker_serving() {
    let broker = Broker::start(2, &["num.partitions=2"]);
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut window: Vec<(ApiKey, i16, Vec<u8>)> = Vec::new();
    let mut sent = 0usize;
    for range in SUPPORTED {
        let encode = sample(range.key);
        for version in range.min..=range.max {
            let mut body = BytesMut::new();
            encode(&mut body, version)
                .unwrap_or_else(|e| panic!("{:?} v{version}: {e}", range.key));
            let flexible = range.key.request_header_version(version) >= 2;
            for _ in 0..MUTATIONS_PER_REQUEST {
                let mutated = mutate(&mut rng, &body);
                let mut raw = Raw::connect(broker.addr());
                raw.send(range.key as i16, version, 1, flexible, &mutated);
                drop(raw);
                window.push((range.key, version, mutated));
                sent += 1;
                if sent.is_multiple_of(CHECK_EVERY) {
                    assert_serving(&broker, &window);
                    window.clear();
                }
            }
        }
    }
    assert_serving(&broker, &window);
    assert!(sent > 5_000, "only {sent} frames sent");
}
