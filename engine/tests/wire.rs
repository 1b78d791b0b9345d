//! Hand-made requests on the wire. Bad input: each case gets a clear error
//! or a closed connection, nothing bad is stored, and the broker keeps
//! serving a second client afterwards. Admin APIs: topic configs, deletion,
//! LogAppendTime topics.

mod common;

use bytes::Bytes;
use common::{call, new_producer_id, Broker, Raw};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, StrBytes};
use sluice_protocol::record_batch::BatchBuilder;

/// A second client still gets answers.
fn assert_serving(broker: &Broker) {
    let mut raw = Raw::connect(broker.addr());
    let resp: ApiVersionsResponse = call(
        &mut raw,
        ApiKey::ApiVersions,
        3,
        &ApiVersionsRequest::default(),
    )
    .expect("answer");
    assert_eq!(resp.error_code, 0);
    assert!(!resp.api_keys.is_empty());
}

fn topic(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

fn create_topic(raw: &mut Raw, name: &str) -> i16 {
    create_topic_with(raw, name, &[])
}

fn create_topic_with(raw: &mut Raw, name: &str, configs: &[(&str, &str)]) -> i16 {
    let configs = configs
        .iter()
        .map(|(k, v)| {
            create_topics_request::CreatableTopicConfig::default()
                .with_name(StrBytes::from_string(k.to_string()))
                .with_value(Some(StrBytes::from_string(v.to_string())))
        })
        .collect();
    let req = CreateTopicsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(topic(name))
            .with_num_partitions(1)
            .with_replication_factor(1)
            .with_configs(configs)]);
    let resp: CreateTopicsResponse = call(raw, ApiKey::CreateTopics, 7, &req).unwrap();
    resp.topics[0].error_code
}

fn produce(raw: &mut Raw, name: &str, records: Vec<u8>) -> ProducePartitionOutcome {
    let req = ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic(name))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(Bytes::from(records)))])]);
    let resp: ProduceResponse = call(raw, ApiKey::Produce, 9, &req).unwrap();
    let p = &resp.responses[0].partition_responses[0];
    ProducePartitionOutcome {
        error_code: p.error_code,
        message: p.error_message.as_ref().map(|m| m.to_string()),
        log_append_time_ms: p.log_append_time_ms,
    }
}

struct ProducePartitionOutcome {
    error_code: i16,
    message: Option<String>,
    log_append_time_ms: i64,
}

fn latest_offset(raw: &mut Raw, name: &str) -> i64 {
    list_offset(raw, name, -1)
}

/// ListOffsets for partition 0: -1 latest, -2 earliest.
fn list_offset(raw: &mut Raw, name: &str, timestamp: i64) -> i64 {
    let req = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(topic(name))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_timestamp(timestamp)])]);
    let resp: ListOffsetsResponse = call(raw, ApiKey::ListOffsets, 7, &req).unwrap();
    let p = &resp.topics[0].partitions[0];
    assert_eq!(p.error_code, 0);
    p.offset
}

fn batch(values: usize, size: usize) -> Vec<u8> {
    let mut b = BatchBuilder::new(1_000);
    for _ in 0..values {
        b.push(1_000, Some(b"k"), Some(&vec![b'v'; size]), &[]);
    }
    b.finish()
}

#[test]
fn frame_length_above_the_limit_closes_the_connection() {
    let broker = Broker::start(1, &["socket.request.max.bytes=1048576"]);
    let mut raw = Raw::connect(broker.addr());
    raw.send_bytes(&(200_000_000i32).to_be_bytes());
    assert!(raw.closed_by_broker());
    assert!(broker.log().contains("above the limit"), "{}", broker.log());
    assert_serving(&broker);
}

#[test]
fn negative_frame_length_closes_the_connection() {
    let broker = Broker::start(1, &[]);
    let mut raw = Raw::connect(broker.addr());
    raw.send_bytes(&(-5i32).to_be_bytes());
    assert!(raw.closed_by_broker());
    assert_serving(&broker);
}

#[test]
fn truncated_frame_then_disconnect() {
    let broker = Broker::start(1, &[]);
    let mut raw = Raw::connect(broker.addr());
    raw.send_bytes(&100i32.to_be_bytes());
    raw.send_bytes(&[0u8; 10]);
    drop(raw);
    assert_serving(&broker);
}

#[test]
fn random_garbage() {
    let broker = Broker::start(1, &[]);
    // A fixed-seed xorshift stream, so a failure replays.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..20 {
        let garbage: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let mut raw = Raw::connect(broker.addr());
        raw.send_bytes(&garbage);
        drop(raw);
    }
    assert_serving(&broker);
}

#[test]
fn array_lengths_beyond_the_frame_close_the_connection() {
    let broker = Broker::start(1, &[]);
    // Two billion elements (four with a compact array) in a frame of a few
    // bytes: sized before any element is read, the array would take over a
    // hundred gigabytes.
    let huge = i32::MAX.to_be_bytes();
    let huge_compact = [0xff, 0xff, 0xff, 0xff, 0x0f];
    let mut fetch_v4 = Vec::new();
    for field in [-1i32, 500, 1, 1 << 20] {
        fetch_v4.extend_from_slice(&field.to_be_bytes());
    }
    fetch_v4.push(0);
    fetch_v4.extend_from_slice(&huge);
    let cases: [(&str, i16, i16, bool, &[u8]); 4] = [
        ("Metadata v1, array", 3, 1, false, &huge),
        ("Metadata v12, compact array", 3, 12, true, &huge_compact),
        ("CreateTopics v2, array", 19, 2, false, &huge),
        ("Fetch v4, array", 1, 4, false, &fetch_v4),
    ];
    for (name, api, version, flexible, body) in cases {
        let mut raw = Raw::connect(broker.addr());
        raw.send(api, version, 1, flexible, body);
        assert!(raw.closed_by_broker(), "{name}");
        assert_serving(&broker);
    }
}

#[test]
fn unknown_api_key_closes_the_connection() {
    let broker = Broker::start(1, &[]);
    let mut raw = Raw::connect(broker.addr());
    raw.send(999, 0, 1, false, &[]);
    assert!(raw.closed_by_broker());
    assert!(
        broker.log().contains("unknown API key 999"),
        "{}",
        broker.log()
    );
    assert_serving(&broker);
}

#[test]
fn unsupported_versions() {
    let broker = Broker::start(1, &[]);
    // ApiVersions answers an unknown version with its ranges (KIP-511).
    let mut raw = Raw::connect(broker.addr());
    raw.send(18, 99, 7, true, &[]);
    let frame = raw.recv().expect("an answer");
    let mut buf = Bytes::from(frame);
    let _ = ResponseHeader::decode(&mut buf, 0).unwrap();
    let resp = ApiVersionsResponse::decode(&mut buf, 0).unwrap();
    assert_eq!(resp.error_code, 35);
    assert!(resp
        .api_keys
        .iter()
        .any(|k| k.api_key == 0 && k.max_version >= 9));
    // Any other API closes the connection on an unsupported version.
    let mut raw = Raw::connect(broker.addr());
    raw.send(1, 99, 8, false, &[]);
    assert!(raw.closed_by_broker());
    assert_serving(&broker);
}

#[test]
fn batch_with_wrong_crc_is_refused_and_not_stored() {
    let broker = Broker::start(1, &[]);
    let mut raw = Raw::connect(broker.addr());
    assert_eq!(create_topic(&mut raw, "crc"), 0);
    let mut b = batch(3, 10);
    let last = b.len() - 1;
    b[last] ^= 0x40;
    let outcome = produce(&mut raw, "crc", b);
    assert_eq!(outcome.error_code, 2, "CORRUPT_MESSAGE");
    assert!(outcome.message.unwrap().contains("CRC"));
    assert_eq!(latest_offset(&mut raw, "crc"), 0, "nothing appended");
    let ok = produce(&mut raw, "crc", batch(3, 10));
    assert_eq!(ok.error_code, 0);
    assert_eq!(latest_offset(&mut raw, "crc"), 3);
    assert_serving(&broker);
}

#[test]
fn batch_above_max_message_bytes_is_refused() {
    let broker = Broker::start(1, &["max.message.bytes=1000"]);
    let mut raw = Raw::connect(broker.addr());
    assert_eq!(create_topic(&mut raw, "big"), 0);
    let outcome = produce(&mut raw, "big", batch(2, 1000));
    assert_eq!(outcome.error_code, 10, "MESSAGE_TOO_LARGE");
    assert_eq!(latest_offset(&mut raw, "big"), 0);
    assert_serving(&broker);
}

#[test]
fn produce_to_unknown_topic_with_auto_create_off() {
    let broker = Broker::start(1, &["auto.create.topics.enable=false"]);
    let mut raw = Raw::connect(broker.addr());
    let outcome = produce(&mut raw, "nowhere", batch(1, 5));
    assert_eq!(outcome.error_code, 3, "UNKNOWN_TOPIC_OR_PARTITION");
    let md: MetadataResponse = call(
        &mut raw,
        ApiKey::Metadata,
        12,
        &MetadataRequest::default().with_topics(Some(vec![
            metadata_request::MetadataRequestTopic::default().with_name(Some(topic("nowhere"))),
        ])),
    )
    .unwrap();
    assert_eq!(
        md.topics[0].error_code, 3,
        "metadata does not create it either"
    );
    assert!(!broker.data_dir.join("nowhere-0").exists());
    assert_serving(&broker);
}

#[test]
fn create_topics_with_invalid_names() {
    let broker = Broker::start(1, &[]);
    let mut raw = Raw::connect(broker.addr());
    for name in ["bad name", "..", "a/b", &"x".repeat(250)] {
        assert_eq!(
            create_topic(&mut raw, name),
            17,
            "INVALID_TOPIC_EXCEPTION for {name:?}"
        );
    }
    assert_eq!(create_topic(&mut raw, "fine.name_1-2"), 0);
    assert_eq!(
        create_topic(&mut raw, "fine.name_1-2"),
        36,
        "TOPIC_ALREADY_EXISTS"
    );
    assert_serving(&broker);
}

fn describe_topic(raw: &mut Raw, name: &str) -> Vec<(String, String, i8)> {
    let req = DescribeConfigsRequest::default().with_resources(vec![
        describe_configs_request::DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_configuration_keys(None)
            .with_resource_name(StrBytes::from_string(name.to_string())),
    ]);
    let resp: DescribeConfigsResponse = call(raw, ApiKey::DescribeConfigs, 4, &req).unwrap();
    assert_eq!(resp.results[0].error_code, 0);
    resp.results[0]
        .configs
        .iter()
        .map(|c| {
            (
                c.name.to_string(),
                c.value.as_ref().map(|v| v.to_string()).unwrap_or_default(),
                c.config_source,
            )
        })
        .collect()
}

/// A count above the broker's limit is POLICY_VIOLATION, as Kafka
/// answers an operation that would write too many partitions at once
/// (`engine/tests/kafka_diff` compares the two).
#[test]
fn absurd_partition_counts_are_refused() {
    let broker = Broker::start(1, &[]);
    let mut raw = Raw::connect(broker.addr());
    let req = CreateTopicsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(topic("huge"))
            .with_num_partitions(i32::MAX)
            .with_replication_factor(1)]);
    let resp: CreateTopicsResponse = call(&mut raw, ApiKey::CreateTopics, 7, &req).unwrap();
    assert_eq!(resp.topics[0].error_code, 44, "POLICY_VIOLATION");
    assert_eq!(create_topic(&mut raw, "small"), 0);
    let req = CreatePartitionsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(vec![
            create_partitions_request::CreatePartitionsTopic::default()
                .with_name(topic("small"))
                .with_count(i32::MAX),
        ]);
    let resp: CreatePartitionsResponse = call(&mut raw, ApiKey::CreatePartitions, 3, &req).unwrap();
    assert_eq!(resp.results[0].error_code, 44, "POLICY_VIOLATION");
    assert_serving(&broker);
}

#[test]
fn describe_configs_lists_every_topic_key_with_its_source() {
    let broker = Broker::start(1, &["flush.messages=5"]);
    let mut raw = Raw::connect(broker.addr());
    assert_eq!(
        create_topic_with(&mut raw, "cfg", &[("retention.ms", "1234")]),
        0
    );
    let configs = describe_topic(&mut raw, "cfg");
    let get = |k: &str| {
        configs
            .iter()
            .find(|c| c.0 == k)
            .cloned()
            .unwrap_or_else(|| panic!("{k} missing"))
    };
    assert_eq!(
        get("retention.ms"),
        ("retention.ms".into(), "1234".into(), 1),
        "topic override"
    );
    assert_eq!(
        get("flush.messages"),
        ("flush.messages".into(), "5".into(), 4),
        "static broker config"
    );
    assert_eq!(
        get("segment.bytes"),
        ("segment.bytes".into(), "1073741824".into(), 5),
        "default"
    );
    assert!(configs.len() >= 15);
    assert_eq!(
        create_topic_with(&mut raw, "badcfg", &[("retention.ms", "soon")]),
        40,
        "INVALID_CONFIG"
    );
}

/// CreateTopics with replicas named per partition: the partition count
/// and replication factor follow the assignment; an unknown broker, a
/// gap in the partition numbers or counts given as well are refused and
/// create nothing.
#[test]
fn create_topics_takes_replica_assignments() {
    use create_topics_request::CreatableReplicaAssignment;
    let broker = Broker::start(1, &[]);
    let mut raw = Raw::connect(broker.addr());
    let create = |raw: &mut Raw, name: &str, counts: (i32, i16), parts: &[(i32, i32)]| {
        let assignments = parts
            .iter()
            .map(|(p, b)| {
                CreatableReplicaAssignment::default()
                    .with_partition_index(*p)
                    .with_broker_ids(vec![BrokerId(*b)])
            })
            .collect();
        let req = CreateTopicsRequest::default()
            .with_timeout_ms(30_000)
            .with_topics(vec![CreatableTopic::default()
                .with_name(topic(name))
                .with_num_partitions(counts.0)
                .with_replication_factor(counts.1)
                .with_assignments(assignments)]);
        let resp: CreateTopicsResponse = call(raw, ApiKey::CreateTopics, 7, &req).unwrap();
        let t = &resp.topics[0];
        (t.error_code, t.num_partitions, t.replication_factor)
    };
    assert_eq!(
        create(&mut raw, "placed", (-1, -1), &[(1, 1), (0, 1), (2, 1)]),
        (0, 3, 1)
    );
    assert_eq!(
        create(&mut raw, "nowhere", (-1, -1), &[(0, 9)]).0,
        39,
        "INVALID_REPLICA_ASSIGNMENT"
    );
    assert_eq!(
        create(&mut raw, "gap", (-1, -1), &[(1, 1)]).0,
        39,
        "INVALID_REPLICA_ASSIGNMENT"
    );
    assert_eq!(
        create(&mut raw, "both", (2, -1), &[(0, 1)]).0,
        42,
        "INVALID_REQUEST"
    );
    let req = MetadataRequest::default()
        .with_topics(Some(
            ["placed", "nowhere", "gap", "both"]
                .iter()
                .map(|n| {
                    metadata_request::MetadataRequestTopic::default().with_name(Some(topic(n)))
                })
                .collect(),
        ))
        .with_allow_auto_topic_creation(false);
    let resp: MetadataResponse = call(&mut raw, ApiKey::Metadata, 12, &req).unwrap();
    let found: Vec<(String, i16, usize)> = resp
        .topics
        .iter()
        .map(|t| {
            (
                t.name.as_ref().unwrap().to_string(),
                t.error_code,
                t.partitions.len(),
            )
        })
        .collect();
    assert!(found.contains(&("placed".into(), 0, 3)), "{found:?}");
    for name in ["nowhere", "gap", "both"] {
        assert!(
            found.contains(&(name.into(), 3, 0)),
            "{name} was created: {found:?}"
        );
    }
    assert_serving(&broker);
}

/// `message.timestamp.after.max.ms` bounds how far past the broker's
/// clock a CreateTime record may be: a set holding one such record is
/// refused whole (INVALID_TIMESTAMP) and nothing of it is stored; a
/// LogAppendTime topic takes any time, the broker's replaces it.
#[test]
fn records_too_far_ahead_of_the_clock_are_refused() {
    let broker = Broker::start(1, &[]);
    let mut raw = Raw::connect(broker.addr());
    let limit = [("message.timestamp.after.max.ms", "60000")];
    assert_eq!(create_topic_with(&mut raw, "ahead", &limit), 0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let set = |times: &[i64]| {
        let mut b = BatchBuilder::new(times[0]);
        for t in times {
            b.push(*t, None, Some(b"v"), &[]);
        }
        b.finish()
    };
    let late = produce(&mut raw, "ahead", set(&[now, now + 600_000]));
    assert_eq!(late.error_code, 32, "INVALID_TIMESTAMP");
    assert_eq!(latest_offset(&mut raw, "ahead"), 0, "nothing stored");
    let fine = produce(&mut raw, "ahead", set(&[now, now + 30_000]));
    assert_eq!(fine.error_code, 0, "{:?}", fine.message);
    assert_eq!(latest_offset(&mut raw, "ahead"), 2);
    let appended = [
        ("message.timestamp.type", "LogAppendTime"),
        ("message.timestamp.after.max.ms", "0"),
    ];
    assert_eq!(create_topic_with(&mut raw, "ahead-lat", &appended), 0);
    let any = produce(&mut raw, "ahead-lat", set(&[now + 600_000]));
    assert_eq!(any.error_code, 0, "{:?}", any.message);
    assert_serving(&broker);
}

/// IncrementalAlterConfigs of one resource: (error code, message).
fn alter_incrementally(
    raw: &mut Raw,
    resource_type: i8,
    name: &str,
    ops: &[(&str, i8, Option<&str>)],
) -> (i16, Option<String>) {
    use incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig};
    let configs = ops
        .iter()
        .map(|(k, op, v)| {
            AlterableConfig::default()
                .with_name(StrBytes::from_string(k.to_string()))
                .with_config_operation(*op)
                .with_value(v.map(|v| StrBytes::from_string(v.to_string())))
        })
        .collect();
    let req = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(resource_type)
            .with_resource_name(StrBytes::from_string(name.to_string()))
            .with_configs(configs),
    ]);
    let resp: IncrementalAlterConfigsResponse =
        call(raw, ApiKey::IncrementalAlterConfigs, 1, &req).expect("answer");
    let r = &resp.responses[0];
    (
        r.error_code,
        r.error_message.as_ref().map(|m| m.to_string()),
    )
}

#[test]
fn topic_configs_change_and_take_effect_at_once() {
    const TOPIC: i8 = 2;
    const BROKER: i8 = 4;
    let (set, delete, append) = (0, 1, 2);
    let broker = Broker::start(2, &[]);
    let mut raw = Raw::connect(broker.addr());
    assert_eq!(
        create_topic_with(&mut raw, "live", &[("retention.ms", "60000")]),
        0
    );
    assert_eq!(produce(&mut raw, "live", batch(2, 2000)).error_code, 0);

    // Set, delete and append in one request.
    let ops = [
        ("max.message.bytes", set, Some("1000")),
        ("retention.ms", delete, None),
        ("cleanup.policy", append, Some("compact")),
    ];
    assert_eq!(
        alter_incrementally(&mut raw, TOPIC, "live", &ops),
        (0, None)
    );
    let configs = describe_topic(&mut raw, "live");
    let get = |k: &str| configs.iter().find(|c| c.0 == k).cloned().unwrap();
    assert_eq!(
        get("max.message.bytes"),
        ("max.message.bytes".into(), "1000".into(), 1)
    );
    assert_eq!(get("retention.ms").2, 5, "back to the default");
    assert_eq!(get("cleanup.policy").1, "delete,compact");
    // The partitions use the new limit at once.
    assert_eq!(
        produce(&mut raw, "live", batch(2, 2000)).error_code,
        10,
        "MESSAGE_TOO_LARGE"
    );
    assert_eq!(latest_offset(&mut raw, "live"), 2);

    // Refusals name the problem and change nothing.
    let (code, message) = alter_incrementally(
        &mut raw,
        TOPIC,
        "live",
        &[("segment.bytes", set, Some("huge"))],
    );
    assert_eq!(code, 40, "INVALID_CONFIG");
    assert!(message.unwrap().contains("segment.bytes"));
    let (code, _) = alter_incrementally(&mut raw, TOPIC, "live", &[("no.such", set, Some("1"))]);
    assert_eq!(code, 40);
    let (code, _) = alter_incrementally(
        &mut raw,
        TOPIC,
        "nowhere",
        &[("retention.ms", set, Some("1"))],
    );
    assert_eq!(code, 3, "UNKNOWN_TOPIC_OR_PARTITION");
    let (code, message) = alter_incrementally(
        &mut raw,
        BROKER,
        "1",
        &[("log.retention.ms", set, Some("1"))],
    );
    assert_eq!(code, 42, "INVALID_REQUEST");
    assert!(message.unwrap().contains("static"));
    assert_eq!(get("max.message.bytes").1, "1000");
    // Committed offsets stay compacted.
    let mut probe = Raw::connect(broker.addr());
    let find: FindCoordinatorResponse = call(
        &mut probe,
        ApiKey::FindCoordinator,
        3,
        &FindCoordinatorRequest::default().with_key(StrBytes::from_static_str("g")),
    )
    .unwrap();
    assert_eq!(find.error_code, 0, "the offsets topic exists");
    let (code, message) = alter_incrementally(
        &mut raw,
        TOPIC,
        "__consumer_offsets",
        &[("cleanup.policy", set, Some("delete"))],
    );
    assert_eq!(code, 40, "INVALID_CONFIG");
    assert!(message.unwrap().contains("compact"));
    let ok = alter_incrementally(
        &mut raw,
        TOPIC,
        "__consumer_offsets",
        &[("segment.bytes", set, Some("10485760"))],
    );
    assert_eq!(ok, (0, None));

    // AlterConfigs replaces every override with the ones it names.
    let req = AlterConfigsRequest::default().with_resources(vec![
        alter_configs_request::AlterConfigsResource::default()
            .with_resource_type(TOPIC)
            .with_resource_name(StrBytes::from_static_str("live"))
            .with_configs(vec![alter_configs_request::AlterableConfig::default()
                .with_name(StrBytes::from_static_str("retention.ms"))
                .with_value(Some(StrBytes::from_static_str("5000")))]),
    ]);
    let resp: AlterConfigsResponse = call(&mut raw, ApiKey::AlterConfigs, 2, &req).unwrap();
    assert_eq!(resp.responses[0].error_code, 0);
    let configs = describe_topic(&mut raw, "live");
    let get = |k: &str| configs.iter().find(|c| c.0 == k).cloned().unwrap();
    assert_eq!(
        get("retention.ms"),
        ("retention.ms".into(), "5000".into(), 1)
    );
    assert_eq!(get("max.message.bytes").2, 5, "no longer overridden");
    assert_eq!(produce(&mut raw, "live", batch(2, 2000)).error_code, 0);
    assert_serving(&broker);
}

/// DeleteRecords of one partition: (error code, low watermark).
fn delete_records(raw: &mut Raw, name: &str, partition: i32, offset: i64) -> (i16, i64) {
    use delete_records_request::{DeleteRecordsPartition, DeleteRecordsTopic};
    let req = DeleteRecordsRequest::default()
        .with_topics(vec![DeleteRecordsTopic::default()
            .with_name(topic(name))
            .with_partitions(vec![DeleteRecordsPartition::default()
                .with_partition_index(partition)
                .with_offset(offset)])])
        .with_timeout_ms(30_000);
    let resp: DeleteRecordsResponse = call(raw, ApiKey::DeleteRecords, 2, &req).unwrap();
    let p = &resp.topics[0].partitions[0];
    (p.error_code, p.low_watermark)
}

#[test]
fn delete_records_moves_the_log_start_and_drops_whole_segments() {
    let mut broker = Broker::start(2, &[]);
    let mut raw = Raw::connect(broker.addr());
    // Every two-record batch rolls a segment of its own.
    assert_eq!(
        create_topic_with(&mut raw, "trim", &[("segment.bytes", "1000")]),
        0
    );
    for _ in 0..3 {
        assert_eq!(produce(&mut raw, "trim", batch(2, 600)).error_code, 0);
    }
    let dir = broker.partition_dir("trim", 0);
    assert_eq!(common::segment_files(&dir).len(), 3);

    assert_eq!(delete_records(&mut raw, "trim", 0, 3), (0, 3));
    assert_eq!(list_offset(&mut raw, "trim", -2), 3, "earliest");
    // The segment of offsets 0 and 1 is gone; offset 3 shares one with 2.
    assert_eq!(common::segment_files(&dir).len(), 2);
    // Refused: past the high watermark, unknown partitions, internal topics.
    assert_eq!(
        delete_records(&mut raw, "trim", 0, 7).0,
        1,
        "OFFSET_OUT_OF_RANGE"
    );
    assert_eq!(
        delete_records(&mut raw, "trim", 5, 1).0,
        3,
        "UNKNOWN_TOPIC_OR_PARTITION"
    );
    assert_eq!(
        delete_records(&mut raw, "trim", 0, 1),
        (0, 3),
        "already deleted"
    );
    // -1: everything below the high watermark.
    assert_eq!(delete_records(&mut raw, "trim", 0, -1), (0, 6));
    assert_eq!(list_offset(&mut raw, "trim", -2), 6);
    assert_eq!(latest_offset(&mut raw, "trim"), 6);

    // kill -9 and a restart keep the log start; new records follow on.
    drop(raw);
    broker.kill9();
    broker.restart();
    let mut raw = Raw::connect(broker.addr());
    assert_eq!(
        list_offset(&mut raw, "trim", -2),
        6,
        "earliest after a restart"
    );
    assert_eq!(produce(&mut raw, "trim", batch(1, 10)).error_code, 0);
    assert_eq!(latest_offset(&mut raw, "trim"), 7);
    assert_serving(&broker);
}

#[test]
fn describe_log_dirs_lists_every_replica_with_its_size() {
    let broker = Broker::start(2, &[]);
    let mut raw = Raw::connect(broker.addr());
    let req = CreateTopicsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(topic("sized"))
            .with_num_partitions(4)
            .with_replication_factor(1)]);
    let resp: CreateTopicsResponse = call(&mut raw, ApiKey::CreateTopics, 7, &req).unwrap();
    assert_eq!(resp.topics[0].error_code, 0);
    assert_eq!(produce(&mut raw, "sized", batch(3, 500)).error_code, 0);
    let describe = |raw: &mut Raw, topics: Option<Vec<(&str, Vec<i32>)>>| {
        let topics = topics.map(|ts| {
            ts.into_iter()
                .map(|(t, ps)| {
                    describe_log_dirs_request::DescribableLogDirTopic::default()
                        .with_topic(topic(t))
                        .with_partitions(ps)
                })
                .collect()
        });
        let req = DescribeLogDirsRequest::default().with_topics(topics);
        let resp: DescribeLogDirsResponse = call(raw, ApiKey::DescribeLogDirs, 4, &req).unwrap();
        assert_eq!(resp.results.len(), 1, "one log dir");
        resp.results.into_iter().next().unwrap()
    };
    let all = describe(&mut raw, None);
    assert_eq!(all.error_code, 0);
    assert!(all.total_bytes > 0 && all.usable_bytes > 0);
    let sized = all
        .topics
        .iter()
        .find(|t| t.name.0.as_str() == "sized")
        .expect("the topic is listed");
    // Partitions on both shards, each with its size.
    let sizes: Vec<(i32, i64)> = sized
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.partition_size))
        .collect();
    assert_eq!(sizes.iter().map(|p| p.0).collect::<Vec<_>>(), [0, 1, 2, 3]);
    assert!(sizes[0].1 > 1500, "{sizes:?}");
    assert!(sizes[1..].iter().all(|p| p.1 == 0), "{sizes:?}");
    let one = describe(&mut raw, Some(vec![("sized", vec![1])]));
    assert_eq!(one.topics.len(), 1);
    assert_eq!(one.topics[0].partitions.len(), 1);
    assert_eq!(one.topics[0].partitions[0].partition_index, 1);
}

#[test]
fn delete_topic_removes_it_and_its_files() {
    let broker = Broker::start(2, &[]);
    let mut raw = Raw::connect(broker.addr());
    assert_eq!(create_topic(&mut raw, "doomed"), 0);
    assert!(broker.data_dir.join("doomed-0").exists());
    let req = DeleteTopicsRequest::default()
        .with_timeout_ms(30_000)
        .with_topic_names(vec![topic("doomed")]);
    let resp: DeleteTopicsResponse = call(&mut raw, ApiKey::DeleteTopics, 4, &req).unwrap();
    assert_eq!(resp.responses[0].error_code, 0);
    assert!(!broker.data_dir.join("doomed-0").exists());
    let resp: DeleteTopicsResponse = call(&mut raw, ApiKey::DeleteTopics, 4, &req).unwrap();
    assert_eq!(resp.responses[0].error_code, 3, "already gone");
    assert_eq!(
        create_topic(&mut raw, "doomed"),
        0,
        "the name can be used again"
    );
}

#[test]
fn log_append_time_topics_stamp_batches_with_broker_time() {
    let broker = Broker::start(1, &[]);
    let mut raw = Raw::connect(broker.addr());
    assert_eq!(
        create_topic_with(
            &mut raw,
            "lat",
            &[("message.timestamp.type", "LogAppendTime")]
        ),
        0
    );
    let before_ms = wall_clock_ms();
    // The producer's timestamps are 1,000 ms after the epoch: far from
    // any broker time.
    let outcome = produce(&mut raw, "lat", batch(2, 10));
    let after_ms = wall_clock_ms();
    assert_eq!(outcome.error_code, 0);
    let stamped = outcome.log_append_time_ms;
    assert!(
        (before_ms..=after_ms).contains(&stamped),
        "log_append_time_ms {stamped} outside [{before_ms}, {after_ms}]"
    );
    assert_eq!(latest_offset(&mut raw, "lat"), 2);
    // The stored batch says so too, as a consumer reads it.
    let records = common::fetch_partition_0(&mut raw, "lat", 0);
    let header = sluice_protocol::record_batch::BatchHeader::parse(&records).expect("a batch");
    assert_eq!(header.total_size(), records.len(), "one batch");
    assert!(
        header.uses_log_append_time(),
        "timestamp type is LogAppendTime: attributes {:#06x}",
        header.attributes
    );
    assert_eq!(
        header.max_timestamp, stamped,
        "max timestamp is the broker's time"
    );
    sluice_protocol::record_batch::validate_batch(&records, 0)
        .unwrap_or_else(|e| panic!("the stamped batch's CRC: {e}"));
}

fn wall_clock_ms() -> i64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    since_epoch.as_millis() as i64
}

/// Producer ids come in blocks recorded in the metadata log, so none is
/// handed out twice: not within a run, not after a clean restart, not
/// after kill -9.
#[test]
fn producer_ids_are_never_handed_out_twice() {
    let mut broker = Broker::start(2, &[]);
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..5 {
        assert!(seen.insert(new_producer_id(broker.addr())));
    }
    broker.stop();
    broker.restart();
    for _ in 0..5 {
        assert!(seen.insert(new_producer_id(broker.addr())));
    }
    broker.kill9();
    broker.restart();
    for _ in 0..5 {
        assert!(seen.insert(new_producer_id(broker.addr())), "{seen:?}");
    }
    assert!(seen.iter().all(|id| *id >= 0));
}

/// A Fetch v12 of `parts` (topic, fetch offset) in session `id` at `epoch`,
/// dropping `forget`; answers with the top-level error and, per topic, the
/// partitions that came back with their record bytes.
fn session_fetch(
    raw: &mut Raw,
    (id, epoch): (i32, i32),
    parts: &[(&str, i64)],
    forget: &[&str],
) -> (i16, i32, Vec<(String, usize)>) {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ForgottenTopic};
    let req = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_session_id(id)
        .with_session_epoch(epoch)
        .with_topics(
            parts
                .iter()
                .map(|(t, offset)| {
                    FetchTopic::default()
                        .with_topic(topic(t))
                        .with_partitions(vec![FetchPartition::default()
                            .with_fetch_offset(*offset)
                            .with_partition_max_bytes(1 << 20)])
                })
                .collect(),
        )
        .with_forgotten_topics_data(
            forget
                .iter()
                .map(|t| {
                    ForgottenTopic::default()
                        .with_topic(topic(t))
                        .with_partitions(vec![0])
                })
                .collect(),
        );
    let resp: FetchResponse = call(raw, ApiKey::Fetch, 12, &req).expect("Fetch answer");
    let parts = resp
        .responses
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                assert_eq!(p.error_code, 0);
                (
                    t.topic.0.to_string(),
                    p.records.as_ref().map_or(0, |r| r.len()),
                )
            })
        })
        .collect();
    (resp.error_code, resp.session_id, parts)
}

#[test]
fn an_incremental_fetch_session_answers_only_what_changed() {
    let broker = Broker::start(2, &[]);
    let mut raw = Raw::connect(broker.addr());
    for t in ["sa", "sb"] {
        assert_eq!(create_topic(&mut raw, t), 0);
    }
    assert_eq!(produce(&mut raw, "sa", batch(3, 10)).error_code, 0);

    // A full fetch opens the session and answers every partition.
    let (code, id, parts) = session_fetch(&mut raw, (0, 0), &[("sa", 0), ("sb", 0)], &[]);
    assert_eq!(code, 0);
    assert!(id > 0, "a session id");
    assert_eq!(parts.len(), 2);
    assert!(parts[0].1 > 0 && parts[1] == ("sb".into(), 0), "{parts:?}");

    // sa moves to its end: nothing has changed since the last answer.
    let (code, same, parts) = session_fetch(&mut raw, (id, 1), &[("sa", 3)], &[]);
    assert_eq!((code, same), (0, id));
    assert!(parts.is_empty(), "{parts:?}");

    // Only sb gets records, and only sb comes back.
    assert_eq!(produce(&mut raw, "sb", batch(2, 10)).error_code, 0);
    let (_, _, parts) = session_fetch(&mut raw, (id, 2), &[], &[]);
    assert_eq!(parts.len(), 1);
    assert_eq!(parts[0].0, "sb");
    assert!(parts[0].1 > 0);

    // An epoch is good once; another connection does not have the session.
    let (code, _, _) = session_fetch(&mut raw, (id, 2), &[], &[]);
    assert_eq!(code, 71, "INVALID_FETCH_SESSION_EPOCH");
    let mut other = Raw::connect(broker.addr());
    let (code, _, _) = session_fetch(&mut other, (id, 3), &[], &[]);
    assert_eq!(code, 70, "FETCH_SESSION_ID_NOT_FOUND");

    // A forgotten partition is not answered, whatever arrives there.
    assert_eq!(produce(&mut raw, "sb", batch(1, 10)).error_code, 0);
    let (code, _, parts) = session_fetch(&mut raw, (id, 3), &[], &["sb"]);
    assert_eq!(code, 0);
    assert!(parts.is_empty(), "{parts:?}");
    let (_, _, parts) = session_fetch(&mut raw, (id, 4), &[("sb", 0)], &[]);
    assert_eq!(parts.len(), 1);
    assert_eq!(parts[0].0, "sb");

    // The final epoch closes it: a sessionless full fetch.
    let (code, none, parts) = session_fetch(&mut raw, (id, -1), &[("sa", 0)], &[]);
    assert_eq!((code, none, parts.len()), (0, 0, 1));
    let (code, _, _) = session_fetch(&mut raw, (id, 5), &[], &[]);
    assert_eq!(code, 70);
    assert_serving(&broker);
}

/// DescribeQuorum of a broker that is its own cluster of one: it leads
/// the metadata log alone, with no controller listener to name; a request
/// for anything but `__cluster_metadata`-0 is refused as a whole, as
/// Kafka refuses it.
#[test]
fn describe_quorum_names_the_lone_voter_and_refuses_other_partitions() {
    use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
    let broker = Broker::start(1, &[]);
    let mut raw = Raw::connect(broker.addr());
    let ask = |raw: &mut Raw, name: &str, partition: i32| -> DescribeQuorumResponse {
        let req = DescribeQuorumRequest::default().with_topics(vec![TopicData::default()
            .with_topic_name(topic(name))
            .with_partitions(vec![
                PartitionData::default().with_partition_index(partition)
            ])]);
        call(raw, ApiKey::DescribeQuorum, 2, &req).expect("DescribeQuorum answer")
    };
    let resp = ask(&mut raw, "__cluster_metadata", 0);
    assert_eq!(resp.error_code, 0);
    assert!(resp.nodes.is_empty(), "no controller listener: {resp:?}");
    let p = &resp.topics[0].partitions[0];
    assert_eq!(p.error_code, 0);
    assert_eq!(p.leader_id.0, 1);
    assert!(p.leader_epoch >= 1, "{p:?}");
    assert!(p.high_watermark > 0, "the broker's registration: {p:?}");
    assert_eq!(p.current_voters.len(), 1);
    let voter = &p.current_voters[0];
    assert_eq!(voter.replica_id.0, 1);
    assert!(voter.log_end_offset >= p.high_watermark);
    assert!(voter.last_fetch_timestamp > 0 && voter.last_caught_up_timestamp > 0);
    assert!(p.observers.is_empty());

    for (name, partition) in [("__cluster_metadata", 1), ("other", 0)] {
        let refused = ask(&mut raw, name, partition);
        assert_eq!(refused.error_code, 3, "UNKNOWN_TOPIC_OR_PARTITION");
        assert!(refused.topics.is_empty());
    }
    assert_serving(&broker);
}
