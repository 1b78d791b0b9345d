//! The Kafka 4 versions on the wire, request by request: topic ids in
//! Produce v13 and Fetch v13+ (sessions included), Metadata v13 by name
//! and by id, ListOffsets v10's special timestamps, FindCoordinator v6's
//! batched keys, DescribeGroups v6 and ListGroups v5, DescribeCluster v2's
//! endpoint types, DeleteTopics v6 by id, and DescribeTopicPartitions
//! walked page by page; ListOffsets v11's -6, OffsetCommit and
//! OffsetFetch v10 by topic id, DeleteGroups v3's error messages,
//! DescribeLogDirs v5's cordoned flag and ApiVersions v5's cluster and
//! node.

mod common;

use bytes::Bytes;
use common::{call, call_bytes, Broker, Raw};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::describe_topic_partitions_request::{Cursor, TopicRequest};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ForgottenTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use sluice_protocol::record_batch::BatchBuilder;
use std::time::{Duration, Instant};
use uuid::Uuid;

const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const INVALID_REQUEST: i16 = 42;
const GROUP_ID_NOT_FOUND: i16 = 69;
const UNKNOWN_TOPIC_ID: i16 = 100;
const MISMATCHED_ENDPOINT_TYPE: i16 = 114;

fn name(n: &str) -> TopicName {
    TopicName(StrBytes::from_string(n.to_string()))
}

fn create(raw: &mut Raw, topic: &str, partitions: i32) {
    let req = CreateTopicsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(name(topic))
            .with_num_partitions(partitions)
            .with_replication_factor(1)]);
    let resp: CreateTopicsResponse = call(raw, ApiKey::CreateTopics, 7, &req).expect("answer");
    assert_eq!(resp.topics[0].error_code, 0, "create {topic}");
}

/// Metadata v13 for `topic` by name: its id, checking the new top-level
/// error code.
fn topic_id(raw: &mut Raw, topic: &str) -> Uuid {
    let req = MetadataRequest::default().with_topics(Some(vec![
        MetadataRequestTopic::default().with_name(Some(name(topic)))
    ]));
    let resp: MetadataResponse = call(raw, ApiKey::Metadata, 13, &req).expect("answer");
    assert_eq!(resp.error_code, 0, "Metadata v13's top-level error");
    let t = &resp.topics[0];
    assert_eq!(t.error_code, 0);
    assert!(!t.topic_id.is_nil());
    t.topic_id
}

/// Produces `values` records to partition 0 of the topic with `id` at
/// v13; answers (topic id echoed, error code, base offset).
fn produce_by_id(raw: &mut Raw, id: Uuid, values: usize) -> (Uuid, i16, i64) {
    let mut b = BatchBuilder::new(1_000);
    for i in 0..values {
        b.push(1_000 + i as i64, Some(b"k"), Some(b"value"), &[]);
    }
    let req = ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_topic_id(id)
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(Bytes::from(b.finish())))])]);
    let resp: ProduceResponse = call(raw, ApiKey::Produce, 13, &req).expect("answer");
    let t = &resp.responses[0];
    let p = &t.partition_responses[0];
    (t.topic_id, p.error_code, p.base_offset)
}

/// A Fetch at `version` by topic id: (topic ids, offsets) asked for, the
/// session's id and epoch, topic ids forgotten. Answers the top-level
/// error and session id, and per partition (topic id, error, record
/// bytes).
fn fetch_by_id(
    raw: &mut Raw,
    version: i16,
    parts: &[(Uuid, i64)],
    (session, epoch): (i32, i32),
    forget: &[Uuid],
) -> (i16, i32, Vec<(Uuid, i16, usize)>) {
    let topics = parts
        .iter()
        .map(|(id, offset)| {
            FetchTopic::default()
                .with_topic_id(*id)
                .with_partitions(vec![FetchPartition::default()
                    .with_fetch_offset(*offset)
                    .with_partition_max_bytes(1 << 20)])
        })
        .collect();
    let forgotten = forget
        .iter()
        .map(|id| {
            ForgottenTopic::default()
                .with_topic_id(*id)
                .with_partitions(vec![0])
        })
        .collect();
    let req = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_session_id(session)
        .with_session_epoch(epoch)
        .with_topics(topics)
        .with_forgotten_topics_data(forgotten);
    let resp: FetchResponse = call(raw, ApiKey::Fetch, version, &req).expect("answer");
    let parts = resp
        .responses
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                let bytes = p.records.as_ref().map_or(0, |r| r.len());
                (t.topic_id, p.error_code, bytes)
            })
        })
        .collect();
    (resp.error_code, resp.session_id, parts)
}

#[test]
fn produce_and_fetch_name_topics_by_id() {
    let broker = Broker::start(2, &[]);
    let mut raw = Raw::connect(broker.addr());
    create(&mut raw, "by-id-a", 1);
    create(&mut raw, "by-id-b", 1);
    let (a, b) = (topic_id(&mut raw, "by-id-a"), topic_id(&mut raw, "by-id-b"));
    assert_ne!(a, b);

    // Produce v13 by id; an unknown id is UNKNOWN_TOPIC_ID.
    assert_eq!(produce_by_id(&mut raw, a, 3), (a, 0, 0));
    assert_eq!(produce_by_id(&mut raw, a, 2), (a, 0, 3));
    let stranger = Uuid::from_u128(0x5151_cafe);
    assert_eq!(produce_by_id(&mut raw, stranger, 1).1, UNKNOWN_TOPIC_ID);

    // Fetch, sessionless, at every topic-id version.
    for version in 13..=18 {
        let (code, _, parts) =
            fetch_by_id(&mut raw, version, &[(a, 0), (stranger, 0)], (0, -1), &[]);
        assert_eq!(code, 0, "v{version}");
        assert_eq!(parts.len(), 2, "v{version}: {parts:?}");
        assert_eq!((parts[0].0, parts[0].1), (a, 0), "v{version}");
        assert!(parts[0].2 > 0, "v{version}: records");
        assert_eq!(
            (parts[1].0, parts[1].1),
            (stranger, UNKNOWN_TOPIC_ID),
            "v{version}"
        );
    }

    // A session keyed by ids: full, then only what changed, then forgotten.
    let (code, id, parts) = fetch_by_id(&mut raw, 17, &[(a, 0), (b, 0)], (0, 0), &[]);
    assert_eq!(code, 0);
    assert!(id > 0, "a session id");
    assert_eq!(parts.len(), 2);
    let (_, _, parts) = fetch_by_id(&mut raw, 17, &[(a, 5)], (id, 1), &[]);
    assert!(parts.is_empty(), "nothing new: {parts:?}");
    assert_eq!(produce_by_id(&mut raw, b, 1), (b, 0, 0));
    let (_, _, parts) = fetch_by_id(&mut raw, 17, &[], (id, 2), &[]);
    assert_eq!(parts.len(), 1, "{parts:?}");
    assert_eq!((parts[0].0, parts[0].1), (b, 0));
    assert!(parts[0].2 > 0);
    assert_eq!(produce_by_id(&mut raw, b, 1), (b, 0, 1));
    let (code, _, parts) = fetch_by_id(&mut raw, 17, &[], (id, 3), &[b]);
    assert_eq!((code, parts.len()), (0, 0), "b forgotten: {parts:?}");
}

#[test]
fn metadata_v13_answers_by_name_and_by_id() {
    let broker = Broker::start(1, &[]);
    let mut raw = Raw::connect(broker.addr());
    create(&mut raw, "meta-13", 2);
    let id = topic_id(&mut raw, "meta-13");
    let stranger = Uuid::from_u128(7);
    let req = MetadataRequest::default().with_topics(Some(vec![
        MetadataRequestTopic::default()
            .with_name(None)
            .with_topic_id(id),
        MetadataRequestTopic::default()
            .with_name(None)
            .with_topic_id(stranger),
        // As the Java client asks: an empty name beside the id.
        MetadataRequestTopic::default()
            .with_name(Some(name("")))
            .with_topic_id(id),
    ]));
    let resp: MetadataResponse = call(&mut raw, ApiKey::Metadata, 13, &req).expect("answer");
    assert_eq!(resp.error_code, 0);
    let known = &resp.topics[0];
    assert_eq!(known.error_code, 0);
    assert_eq!(known.name.as_ref().map(|n| n.0.as_str()), Some("meta-13"));
    assert_eq!((known.topic_id, known.partitions.len()), (id, 2));
    let unknown = &resp.topics[1];
    assert_eq!(
        (unknown.error_code, unknown.topic_id),
        (UNKNOWN_TOPIC_ID, stranger)
    );
    assert!(unknown.name.is_none());
    assert_eq!(resp.topics[2], resp.topics[0]);
}

/// ListOffsets v10 for partition 0 of `topic` at `timestamp`: (error,
/// offset, timestamp, leader epoch).
fn list_offset(raw: &mut Raw, topic: &str, timestamp: i64) -> (i16, i64, i64, i32) {
    list_offset_at(raw, 10, topic, timestamp)
}

/// [`list_offset`] at `version`.
fn list_offset_at(
    raw: &mut Raw,
    version: i16,
    topic: &str,
    timestamp: i64,
) -> (i16, i64, i64, i32) {
    let req = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_timeout_ms(5_000)
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(name(topic))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_timestamp(timestamp)])]);
    let resp: ListOffsetsResponse = call(raw, ApiKey::ListOffsets, version, &req).expect("answer");
    let p = &resp.topics[0].partitions[0];
    (p.error_code, p.offset, p.timestamp, p.leader_epoch)
}

/// ListOffsets v11 (KIP-1023) answers what v10 does, and -6, the earliest
/// offset not yet in tiered storage, is none (-1) as in Kafka without
/// remote storage, not a search for records stamped at or after -6.
#[test]
fn list_offsets_v11_answers_earliest_pending_upload_as_none() {
    let broker = Broker::start(1, &[]);
    let mut raw = Raw::connect(broker.addr());
    create(&mut raw, "offsets-11", 1);
    let id = topic_id(&mut raw, "offsets-11");
    assert_eq!(produce_by_id(&mut raw, id, 3).1, 0);
    for ts in [-1, -2, -3, -4, -5, 1001] {
        assert_eq!(
            list_offset_at(&mut raw, 11, "offsets-11", ts),
            list_offset_at(&mut raw, 10, "offsets-11", ts),
            "timestamp {ts}"
        );
    }
    assert_eq!(list_offset_at(&mut raw, 11, "offsets-11", 1001).1, 1);
    assert_eq!(
        list_offset_at(&mut raw, 11, "offsets-11", -6),
        (0, -1, -1, -1)
    );
    assert_eq!(
        list_offset_at(&mut raw, 11, "no-such-topic", -6).0,
        UNKNOWN_TOPIC_OR_PARTITION
    );
}

/// OffsetCommit v10 by id: (partition, error) per topic id answered.
fn commit_by_id(raw: &mut Raw, group: &str, commits: &[(Uuid, i32, i64)]) -> Vec<(Uuid, i32, i16)> {
    use sluice_protocol::offset_commit::{
        CommitPartition, CommitTopic, OffsetCommitRequest, OffsetCommitResponse,
    };
    let topics = commits
        .iter()
        .map(
            |&(topic_id, partition_index, committed_offset)| CommitTopic {
                topic_id,
                partitions: vec![CommitPartition {
                    partition_index,
                    committed_offset,
                    committed_leader_epoch: -1,
                    committed_metadata: Some("by id".into()),
                }],
            },
        )
        .collect();
    // A standalone commit: no member, generation -1.
    let req = OffsetCommitRequest {
        group_id: group.into(),
        generation_id_or_member_epoch: -1,
        topics,
        ..Default::default()
    };
    let body = call_bytes(raw, ApiKey::OffsetCommit, 10, &req.encode()).expect("answer");
    let resp = OffsetCommitResponse::decode(&body).expect("a v10 OffsetCommit response");
    resp.topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|&(p, e)| (t.topic_id, p, e)))
        .collect()
}

/// OffsetFetch v10 by id (None: every topic): the group's error, and
/// per partition (topic id, partition, offset, metadata, error), sorted.
#[allow(clippy::type_complexity)]
fn fetch_by_id_v10(
    raw: &mut Raw,
    group: &str,
    topics: Option<Vec<(Uuid, Vec<i32>)>>,
) -> (i16, Vec<(Uuid, i32, i64, Option<String>, i16)>) {
    use sluice_protocol::offset_fetch::{FetchGroup, OffsetFetchRequest, OffsetFetchResponse};
    let req = OffsetFetchRequest {
        groups: vec![FetchGroup {
            group_id: group.into(),
            member_id: None,
            member_epoch: -1,
            topics,
        }],
        require_stable: false,
    };
    let body = call_bytes(raw, ApiKey::OffsetFetch, 10, &req.encode()).expect("answer");
    let resp = OffsetFetchResponse::decode(&body).expect("a v10 OffsetFetch response");
    assert_eq!(resp.groups.len(), 1);
    let g = &resp.groups[0];
    assert_eq!(g.group_id, group);
    let mut parts: Vec<_> = g
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                let m = p.metadata.clone();
                (
                    t.topic_id,
                    p.partition_index,
                    p.committed_offset,
                    m,
                    p.error_code,
                )
            })
        })
        .collect();
    parts.sort();
    (g.error_code, parts)
}

/// OffsetCommit and OffsetFetch v10 name topics by id (KIP-848): what is
/// committed by id is stored under the topic's name (v9 reads it back by
/// name), an unknown id is UNKNOWN_TOPIC_ID for each of its partitions
/// and commits nothing, and a fetch of every topic answers by id.
#[test]
fn offset_commit_and_fetch_v10_name_topics_by_id() {
    let broker = Broker::start(2, &[]);
    let mut raw = Raw::connect(broker.addr());
    create(&mut raw, "commit-10", 2);
    let id = topic_id(&mut raw, "commit-10");
    let unknown = Uuid::from_u128(0x5151_0000_0000_0000_0000_0000_0000_0010);
    let group = "group-10";

    // The offsets topic is created by the first commit; its leaders may
    // take a moment.
    let deadline = Instant::now() + Duration::from_secs(60);
    let committed = loop {
        let got = commit_by_id(&mut raw, group, &[(id, 0, 5), (id, 1, 7), (unknown, 3, 9)]);
        if got.iter().all(|&(t, _, e)| e == 0 || t == unknown) {
            break got;
        }
        assert!(Instant::now() < deadline, "commit not taken: {got:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut committed = committed;
    committed.sort();
    let mut expected = vec![(id, 0, 0), (id, 1, 0), (unknown, 3, UNKNOWN_TOPIC_ID)];
    expected.sort();
    assert_eq!(committed, expected);

    let md = || Some("by id".to_string());
    let (error, parts) = fetch_by_id_v10(
        &mut raw,
        group,
        Some(vec![(id, vec![0, 1]), (unknown, vec![3])]),
    );
    assert_eq!(error, 0);
    let mut expected = vec![
        (id, 0, 5, md(), 0),
        (id, 1, 7, md(), 0),
        (unknown, 3, -1, Some(String::new()), UNKNOWN_TOPIC_ID),
    ];
    expected.sort();
    assert_eq!(parts, expected);
    // Every topic: the one committed, by its id; nothing of the unknown.
    let (error, parts) = fetch_by_id_v10(&mut raw, group, None);
    assert_eq!(error, 0);
    assert_eq!(parts, vec![(id, 0, 5, md(), 0), (id, 1, 7, md(), 0)]);

    // v9 reads the same offsets by name.
    use kafka_protocol::messages::offset_fetch_request::{
        OffsetFetchRequestGroup, OffsetFetchRequestTopics,
    };
    let req = OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default()
        .with_group_id(GroupId(StrBytes::from_static_str(group)))
        .with_member_epoch(-1)
        .with_topics(Some(vec![OffsetFetchRequestTopics::default()
            .with_name(name("commit-10"))
            .with_partition_indexes(vec![0, 1])]))]);
    let v9: OffsetFetchResponse = call(&mut raw, ApiKey::OffsetFetch, 9, &req).expect("answer");
    let offsets: Vec<i64> = v9.groups[0].topics[0]
        .partitions
        .iter()
        .map(|p| p.committed_offset)
        .collect();
    assert_eq!(offsets, vec![5, 7]);
}

#[test]
fn list_offsets_v10_answers_every_special_timestamp() {
    let broker = Broker::start(1, &[]);
    let mut raw = Raw::connect(broker.addr());
    create(&mut raw, "offsets-10", 1);
    let id = topic_id(&mut raw, "offsets-10");
    // Three records stamped 1000, 1001, 1002.
    assert_eq!(produce_by_id(&mut raw, id, 3).1, 0);
    let latest = list_offset(&mut raw, "offsets-10", -1);
    assert_eq!((latest.0, latest.1), (0, 3));
    let earliest = list_offset(&mut raw, "offsets-10", -2);
    assert_eq!((earliest.0, earliest.1), (0, 0));
    let max = list_offset(&mut raw, "offsets-10", -3);
    assert_eq!((max.0, max.1, max.2), (0, 2, 1002));
    // Earliest local: the log start, as nothing is tiered.
    assert_eq!(list_offset(&mut raw, "offsets-10", -4), earliest);
    // Latest tiered: none.
    assert_eq!(list_offset(&mut raw, "offsets-10", -5), (0, -1, -1, -1));
    let at = list_offset(&mut raw, "offsets-10", 1001);
    assert_eq!((at.0, at.1, at.2), (0, 1, 1001));
    assert_eq!(
        list_offset(&mut raw, "no-such-topic", -1).0,
        UNKNOWN_TOPIC_OR_PARTITION
    );
}

#[test]
fn find_coordinator_v6_answers_each_key_and_group_apis_their_kafka_4_forms() {
    let broker = Broker::start(2, &[]);
    let mut raw = Raw::connect(broker.addr());
    // An empty group id gets its coordinator too, as from Kafka.
    let keys = ["g-one", "g-two", ""];
    let ask = |raw: &mut Raw, key_type: i8| -> FindCoordinatorResponse {
        let req = FindCoordinatorRequest::default()
            .with_key_type(key_type)
            .with_coordinator_keys(keys.iter().map(|k| StrBytes::from_static_str(k)).collect());
        call(raw, ApiKey::FindCoordinator, 6, &req).expect("answer")
    };
    // The offsets topic is created by the first ask; its leaders may
    // take a moment.
    let deadline = Instant::now() + Duration::from_secs(60);
    let resp = loop {
        let resp = ask(&mut raw, 0);
        if resp.coordinators.iter().all(|c| c.error_code == 0) {
            break resp;
        }
        assert!(Instant::now() < deadline, "no coordinators: {resp:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let got: Vec<(&str, i16, i32)> = resp
        .coordinators
        .iter()
        .map(|c| (c.key.as_str(), c.error_code, c.port))
        .collect();
    let port = i32::from(broker.port);
    assert_eq!(
        got,
        vec![("g-one", 0, port), ("g-two", 0, port), ("", 0, port)]
    );
    // Share groups (key type 2) have no coordinator here.
    let share = ask(&mut raw, 2);
    assert!(share
        .coordinators
        .iter()
        .all(|c| c.error_code == INVALID_REQUEST));

    // DescribeGroups v6: an unknown group is GROUP_ID_NOT_FOUND, with a
    // message; v5 describes it as Dead.
    let req = DescribeGroupsRequest::default()
        .with_groups(vec![GroupId(StrBytes::from_static_str("g-one"))]);
    let v6: DescribeGroupsResponse = call(&mut raw, ApiKey::DescribeGroups, 6, &req).unwrap();
    assert_eq!(v6.groups[0].error_code, GROUP_ID_NOT_FOUND);
    assert_eq!(v6.groups[0].group_state.as_str(), "Dead");
    assert!(v6.groups[0].error_message.is_some());
    let v5: DescribeGroupsResponse = call(&mut raw, ApiKey::DescribeGroups, 5, &req).unwrap();
    assert_eq!(
        (v5.groups[0].error_code, v5.groups[0].group_state.as_str()),
        (0, "Dead")
    );

    // ListGroups v5's type filter: no group is of type "consumer".
    let filter = |types: &[&'static str]| {
        ListGroupsRequest::default()
            .with_types_filter(types.iter().map(|t| StrBytes::from_static_str(t)).collect())
    };
    let consumer: ListGroupsResponse =
        call(&mut raw, ApiKey::ListGroups, 5, &filter(&["consumer"])).unwrap();
    assert_eq!((consumer.error_code, consumer.groups.len()), (0, 0));
    let classic: ListGroupsResponse =
        call(&mut raw, ApiKey::ListGroups, 5, &filter(&["Classic"])).unwrap();
    assert_eq!(classic.error_code, 0);
    assert!(classic
        .groups
        .iter()
        .all(|g| g.group_type.as_str() == "classic"));
}

#[test]
fn describe_cluster_v2_answers_brokers_and_refuses_controllers() {
    let broker = Broker::start(1, &[]);
    let mut raw = Raw::connect(broker.addr());
    let ask = |raw: &mut Raw, endpoint_type: i8| -> DescribeClusterResponse {
        let req = DescribeClusterRequest::default()
            .with_endpoint_type(endpoint_type)
            .with_include_fenced_brokers(true);
        call(raw, ApiKey::DescribeCluster, 2, &req).expect("answer")
    };
    let brokers = ask(&mut raw, 1);
    assert_eq!((brokers.error_code, brokers.endpoint_type), (0, 1));
    assert_eq!(brokers.brokers.len(), 1);
    assert!(!brokers.brokers[0].is_fenced);
    assert_eq!(brokers.brokers[0].port, i32::from(broker.port));
    let controllers = ask(&mut raw, 2);
    assert_eq!(controllers.error_code, MISMATCHED_ENDPOINT_TYPE);
    assert!(controllers.brokers.is_empty());
}

/// DescribeTopicPartitions with `topics` (all when empty) from `cursor`.
fn describe_page(
    raw: &mut Raw,
    topics: &[&str],
    cursor: Option<(String, i32)>,
    limit: i32,
) -> DescribeTopicPartitionsResponse {
    let req = DescribeTopicPartitionsRequest::default()
        .with_topics(
            topics
                .iter()
                .map(|t| TopicRequest::default().with_name(name(t)))
                .collect(),
        )
        .with_response_partition_limit(limit)
        .with_cursor(cursor.map(|(t, p)| {
            Cursor::default()
                .with_topic_name(name(&t))
                .with_partition_index(p)
        }));
    call(raw, ApiKey::DescribeTopicPartitions, 0, &req).expect("answer")
}

/// (name, error, partition count) of each topic answered.
fn outline(resp: &DescribeTopicPartitionsResponse) -> Vec<(&str, i16, usize)> {
    resp.topics
        .iter()
        .map(|t| {
            (
                t.name.as_ref().map_or("", |n| n.0.as_str()),
                t.error_code,
                t.partitions.len(),
            )
        })
        .collect()
}

#[test]
fn describe_topic_partitions_pages_through_every_partition_once() {
    let broker = Broker::start(2, &[]);
    let mut raw = Raw::connect(broker.addr());
    create(&mut raw, "dtp-b", 3);
    create(&mut raw, "dtp-a", 2);
    create(&mut raw, "dtp-c", 1);
    let ids = [
        ("dtp-a", topic_id(&mut raw, "dtp-a")),
        ("dtp-b", topic_id(&mut raw, "dtp-b")),
        ("dtp-c", topic_id(&mut raw, "dtp-c")),
    ];
    // Pages of two partitions over all topics: a, b, c in name order.
    let mut seen = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let resp = describe_page(&mut raw, &[], cursor.take(), 2);
        pages += 1;
        assert!(pages <= 10, "the cursor does not advance: {resp:?}");
        let count: usize = resp.topics.iter().map(|t| t.partitions.len()).sum();
        assert!(count <= 2, "{resp:?}");
        for t in &resp.topics {
            assert_eq!(t.error_code, 0);
            let n = t.name.as_ref().expect("name").0.to_string();
            let id = ids
                .iter()
                .find(|(i, _)| *i == n)
                .expect("a created topic")
                .1;
            assert_eq!(t.topic_id, id);
            assert!(!t.is_internal);
            for p in &t.partitions {
                assert_eq!(p.error_code, 0);
                assert!(p.leader_id.0 >= 0, "{p:?}");
                assert_eq!(p.replica_nodes, vec![p.leader_id]);
                assert_eq!(p.isr_nodes, vec![p.leader_id]);
                assert_eq!(p.eligible_leader_replicas, Some(vec![]));
                assert_eq!(p.last_known_elr, Some(vec![]));
                assert!(p.offline_replicas.is_empty());
                seen.push((n.clone(), p.partition_index));
            }
        }
        match resp.next_cursor {
            Some(c) => cursor = Some((c.topic_name.0.to_string(), c.partition_index)),
            None => break,
        }
    }
    let want: Vec<(String, i32)> = [("dtp-a", 2), ("dtp-b", 3), ("dtp-c", 1)]
        .iter()
        .flat_map(|(t, n)| (0..*n).map(move |p| (t.to_string(), p)))
        .collect();
    assert_eq!(seen, want);
    assert_eq!(pages, 3);

    // Named topics, one unknown: answered in name order, taking no room.
    let resp = describe_page(&mut raw, &["dtp-c", "dtp-zz", "dtp-a"], None, 10);
    let got = outline(&resp);
    assert_eq!(
        got,
        vec![
            ("dtp-a", 0, 2),
            ("dtp-c", 0, 1),
            ("dtp-zz", UNKNOWN_TOPIC_OR_PARTITION, 0)
        ]
    );
    assert!(resp.next_cursor.is_none());
    // No authorizer: every topic operation is allowed (READ, WRITE,
    // CREATE, DELETE, ALTER, DESCRIBE, DESCRIBE_CONFIGS, ALTER_CONFIGS),
    // also on a topic that does not exist, as Kafka answers.
    assert!(resp
        .topics
        .iter()
        .all(|t| t.topic_authorized_operations == 0b1101_1111_1000));
    // The limit is at least one partition; a full page's cursor names the
    // next topic, known or not.
    let resp = describe_page(&mut raw, &["dtp-c", "dtp-zz"], None, 0);
    assert_eq!(outline(&resp), vec![("dtp-c", 0, 1)]);
    let next = resp.next_cursor.expect("a cursor");
    assert_eq!(
        (next.topic_name.0.as_str(), next.partition_index),
        ("dtp-zz", 0)
    );
    let resp = describe_page(
        &mut raw,
        &["dtp-c", "dtp-zz"],
        Some(("dtp-zz".into(), 0)),
        0,
    );
    assert_eq!(
        outline(&resp),
        vec![("dtp-zz", UNKNOWN_TOPIC_OR_PARTITION, 0)]
    );
    assert!(resp.next_cursor.is_none());

    // A cursor outside the named topics, or with a negative partition.
    let bad = describe_page(&mut raw, &["dtp-a"], Some(("dtp-b".into(), 0)), 10);
    assert!(
        bad.topics.iter().all(|t| t.error_code == INVALID_REQUEST),
        "{bad:?}"
    );
    let bad = describe_page(&mut raw, &["dtp-a"], Some(("dtp-a".into(), -1)), 10);
    assert!(
        bad.topics.iter().all(|t| t.error_code == INVALID_REQUEST),
        "{bad:?}"
    );
    assert!(!bad.topics.is_empty());
}

/// DeleteTopics v6 by topic id: (name, id) per topic; answers (name, id,
/// error) per topic.
fn delete(raw: &mut Raw, topics: &[(Option<&str>, Uuid)]) -> Vec<(Option<String>, Uuid, i16)> {
    use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
    let req = DeleteTopicsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(
            topics
                .iter()
                .map(|(n, id)| {
                    DeleteTopicState::default()
                        .with_name(n.map(name))
                        .with_topic_id(*id)
                })
                .collect(),
        );
    let resp: DeleteTopicsResponse = call(raw, ApiKey::DeleteTopics, 6, &req).expect("answer");
    resp.responses
        .iter()
        .map(|r| {
            (
                r.name.as_ref().map(|n| n.0.to_string()),
                r.topic_id,
                r.error_code,
            )
        })
        .collect()
}

#[test]
fn delete_topics_v6_names_topics_by_name_or_by_id() {
    let broker = Broker::start(1, &[]);
    let mut raw = Raw::connect(broker.addr());
    for t in ["del-a", "del-b", "del-c"] {
        create(&mut raw, t, 1);
    }
    let (a, b, c) = (
        topic_id(&mut raw, "del-a"),
        topic_id(&mut raw, "del-b"),
        topic_id(&mut raw, "del-c"),
    );
    let stranger = Uuid::from_u128(99);
    let got = delete(
        &mut raw,
        &[
            (None, a),
            (Some("del-b"), Uuid::nil()),
            (Some("del-c"), c),
            (None, stranger),
        ],
    );
    assert_eq!(
        got,
        vec![
            (Some("del-a".to_string()), a, 0),
            (Some("del-b".to_string()), b, 0),
            (Some("del-c".to_string()), c, INVALID_REQUEST),
            (None, stranger, UNKNOWN_TOPIC_ID),
        ]
    );
    let req = MetadataRequest::default().with_topics(None);
    let resp: MetadataResponse = call(&mut raw, ApiKey::Metadata, 13, &req).expect("answer");
    let left: Vec<_> = resp
        .topics
        .iter()
        .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
        .collect();
    assert_eq!(left, vec!["del-c".to_string()]);
}

/// DeleteGroups v3 (Kafka 4.4) answers each group with v2's code and an
/// error message, none when the code says it all: an Empty group is
/// deleted with its offsets, an unknown one is GROUP_ID_NOT_FOUND, a
/// group named twice is answered once, and a v2 request afterwards
/// agrees that the group is gone.
#[test]
fn delete_groups_v3_answers_each_group_with_an_error_message_field() {
    use sluice_protocol::delete_groups::{
        DeletableGroupResult, DeleteGroupsRequest as V3Request, DeleteGroupsResponse as V3Response,
    };
    let broker = Broker::start(1, &[]);
    let mut raw = Raw::connect(broker.addr());
    create(&mut raw, "del-groups", 1);
    let id = topic_id(&mut raw, "del-groups");
    // A standalone commit leaves an Empty group holding one offset; the
    // offsets topic it creates may take a moment to lead.
    let deadline = Instant::now() + Duration::from_secs(60);
    while commit_by_id(&mut raw, "doomed", &[(id, 0, 4)]) != vec![(id, 0, 0)] {
        assert!(Instant::now() < deadline, "the commit was never taken");
        std::thread::sleep(Duration::from_millis(100));
    }
    // A name given twice is answered once, as Kafka answers it.
    let req = V3Request {
        groups_names: vec!["doomed".into(), "never-was".into(), "doomed".into()],
    };
    let body = call_bytes(&mut raw, ApiKey::DeleteGroups, 3, &req.encode()).expect("answer");
    let resp = V3Response::decode(&body).expect("a v3 DeleteGroups response");
    let result = |group: &str, code| DeletableGroupResult {
        group_id: group.into(),
        error_code: code,
        error_message: None,
    };
    assert_eq!(
        resp.results,
        vec![result("doomed", 0), result("never-was", GROUP_ID_NOT_FOUND)]
    );
    let (_, offsets) = fetch_by_id_v10(&mut raw, "doomed", Some(vec![(id, vec![0])]));
    assert_eq!(offsets[0].2, -1, "the deleted group's offset is gone");
    let v2 = DeleteGroupsRequest::default()
        .with_groups_names(vec![GroupId(StrBytes::from_static_str("doomed"))]);
    let resp: DeleteGroupsResponse = call(&mut raw, ApiKey::DeleteGroups, 2, &v2).expect("answer");
    assert_eq!(resp.results[0].error_code, GROUP_ID_NOT_FOUND);
}

/// DescribeLogDirs v5 (KIP-1066) answers as v4 does, and says the data
/// directory is not cordoned.
#[test]
fn describe_log_dirs_v5_reports_the_directory_open() {
    use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
    use sluice_protocol::describe_log_dirs::{
        DescribeLogDirsRequest as V5Request, DescribeLogDirsResponse as V5Response,
    };
    let broker = Broker::start(2, &[]);
    let mut raw = Raw::connect(broker.addr());
    create(&mut raw, "log-dirs", 3);
    let req = V5Request {
        topics: Some(vec![("log-dirs".into(), vec![0, 2, 9])]),
    };
    let body = call_bytes(&mut raw, ApiKey::DescribeLogDirs, 5, &req.encode()).expect("answer");
    let v5 = V5Response::decode(&body).expect("a v5 DescribeLogDirs response");
    assert_eq!(v5.error_code, 0);
    assert_eq!(v5.results.len(), 1, "one data directory");
    let dir = &v5.results[0];
    assert_eq!(dir.error_code, 0);
    assert!(!dir.is_cordoned);
    assert!(dir.total_bytes > 0 && dir.usable_bytes > 0, "{dir:?}");
    assert_eq!(dir.topics.len(), 1);
    assert_eq!(dir.topics[0].name, "log-dirs");
    let held: Vec<i32> = dir.topics[0]
        .partitions
        .iter()
        .map(|p| p.partition_index)
        .collect();
    assert_eq!(
        held,
        vec![0, 2],
        "the partition that does not exist is left out"
    );

    let v4 =
        DescribeLogDirsRequest::default()
            .with_topics(Some(vec![DescribableLogDirTopic::default()
                .with_topic(name("log-dirs"))
                .with_partitions(vec![0, 2, 9])]));
    let v4: DescribeLogDirsResponse =
        call(&mut raw, ApiKey::DescribeLogDirs, 4, &v4).expect("answer");
    assert_eq!(v4.results[0].log_dir.as_str(), dir.log_dir);
    let v4_held: Vec<(i32, i64)> = v4.results[0].topics[0]
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.partition_size))
        .collect();
    let v5_held: Vec<(i32, i64)> = dir.topics[0]
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.partition_size))
        .collect();
    assert_eq!(v4_held, v5_held);
}

/// ApiVersions v5 (KIP-1242) as Kafka 4.4 answers it: a request naming
/// neither cluster nor node, or this broker's, gets the ranges; one
/// naming another cluster or node gets REBOOTSTRAP_REQUIRED and no
/// ranges, one naming only one of the two INVALID_REQUEST; the
/// connection stays open through each, and v6 is still answered per
/// KIP-511.
#[test]
fn api_versions_v5_answers_only_requests_meant_for_this_broker() {
    use kafka_protocol::protocol::Decodable;
    use sluice_protocol::api_versions_request::ApiVersionsRequest as V5Request;
    const REBOOTSTRAP_REQUIRED: i16 = 129;
    const UNSUPPORTED_VERSION: i16 = 35;
    let broker = Broker::start(1, &[]);
    let mut raw = Raw::connect(broker.addr());
    let md: MetadataResponse = call(
        &mut raw,
        ApiKey::Metadata,
        13,
        &MetadataRequest::default().with_topics(Some(vec![])),
    )
    .expect("answer");
    let cluster = md.cluster_id.expect("a cluster id").to_string();
    let node = md.brokers[0].node_id.0;
    let ask = |raw: &mut Raw, cluster_id: Option<&str>, node_id: i32| -> ApiVersionsResponse {
        let req = V5Request {
            client_software_name: "versions-test".into(),
            client_software_version: "1.0".into(),
            cluster_id: cluster_id.map(str::to_string),
            node_id,
        };
        let body = call_bytes(raw, ApiKey::ApiVersions, 5, &req.encode()).expect("answer");
        // v5's response is laid out as v4's.
        ApiVersionsResponse::decode(&mut Bytes::from(body), 4).expect("an ApiVersions response")
    };
    let max_of = |resp: &ApiVersionsResponse, key: ApiKey| {
        resp.api_keys
            .iter()
            .find(|k| k.api_key == key as i16)
            .map(|k| k.max_version)
    };
    for (cluster_id, node_id) in [(None, -1), (Some(cluster.as_str()), node)] {
        let resp = ask(&mut raw, cluster_id, node_id);
        assert_eq!(resp.error_code, 0, "{cluster_id:?} {node_id}");
        assert_eq!(max_of(&resp, ApiKey::ApiVersions), Some(5));
        assert_eq!(max_of(&resp, ApiKey::DeleteGroups), Some(3));
    }
    for (cluster_id, node_id, code) in [
        (Some("another-cluster"), node, REBOOTSTRAP_REQUIRED),
        (Some(cluster.as_str()), node + 1, REBOOTSTRAP_REQUIRED),
        (Some(cluster.as_str()), -1, INVALID_REQUEST),
        (None, node, INVALID_REQUEST),
    ] {
        let resp = ask(&mut raw, cluster_id, node_id);
        assert_eq!(resp.error_code, code, "{cluster_id:?} {node_id}");
        assert!(resp.api_keys.is_empty(), "{resp:?}");
    }
    // Still served on the same connection.
    assert_eq!(ask(&mut raw, None, -1).error_code, 0);
    let body = call_bytes(&mut raw, ApiKey::ApiVersions, 6, &[0]);
    let resp = ApiVersionsResponse::decode(&mut Bytes::from(body.expect("answer")), 0).unwrap();
    assert_eq!(resp.error_code, UNSUPPORTED_VERSION);
    assert_eq!(max_of(&resp, ApiKey::ApiVersions), Some(5));
}
