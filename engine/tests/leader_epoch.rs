//! Leader epochs on the wire and on disk: OffsetForLeaderEpoch answers
//! from the leader-epoch cache, the `leader-epoch-checkpoint` file
//! survives clean stops and kill -9, and a deleted checkpoint is rebuilt
//! from the batch headers, epochs other than 0 included; librdkafka
//! consumers validate their positions with it.

mod common;

use bytes::Bytes;
use common::{call, Broker, Raw};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::message::Message;
use rdkafka::{ClientContext, TopicPartitionList};
use sluice_protocol::record_batch::BatchBuilder;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(60);

const FENCED_LEADER_EPOCH: i16 = 74;
const UNKNOWN_LEADER_EPOCH: i16 = 75;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;

fn topic(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

fn create(raw: &mut Raw, name: &str, partitions: i32) {
    let req = CreateTopicsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(topic(name))
            .with_num_partitions(partitions)
            .with_replication_factor(1)]);
    let resp: CreateTopicsResponse = call(raw, ApiKey::CreateTopics, 7, &req).unwrap();
    assert_eq!(resp.topics[0].error_code, 0);
}

/// Produces `batches` batches of `records` records to `partition`.
fn produce(raw: &mut Raw, name: &str, partition: i32, batches: usize, records: usize) {
    for _ in 0..batches {
        let mut b = BatchBuilder::new(1_000);
        for _ in 0..records {
            b.push(1_000, None, Some(b"value"), &[]);
        }
        let req = ProduceRequest::default()
            .with_acks(1)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(topic(name))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(partition)
                    .with_records(Some(Bytes::from(b.finish())))])]);
        let resp: ProduceResponse = call(raw, ApiKey::Produce, 9, &req).unwrap();
        assert_eq!(resp.responses[0].partition_responses[0].error_code, 0);
    }
}

/// One partition's question: (topic, partition, current epoch, epoch).
type Ask<'a> = (&'a str, i32, i32, i32);

/// Asks OffsetForLeaderEpoch v`version`; answers (partition, error,
/// epoch, end offset) in request order.
fn ask(raw: &mut Raw, version: i16, asks: &[Ask]) -> Vec<(i32, i16, i32, i64)> {
    let mut topics: Vec<OffsetForLeaderTopic> = Vec::new();
    for &(name, partition, current, epoch) in asks {
        let p = OffsetForLeaderPartition::default()
            .with_partition(partition)
            .with_current_leader_epoch(current)
            .with_leader_epoch(epoch);
        match topics.last_mut() {
            Some(t) if t.topic.0.as_str() == name => t.partitions.push(p),
            _ => topics.push(
                OffsetForLeaderTopic::default()
                    .with_topic(topic(name))
                    .with_partitions(vec![p]),
            ),
        }
    }
    let req = OffsetForLeaderEpochRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(topics);
    let resp: OffsetForLeaderEpochResponse =
        call(raw, ApiKey::OffsetForLeaderEpoch, version, &req).expect("an answer");
    resp.topics
        .iter()
        .flat_map(|t| &t.partitions)
        .map(|p| (p.partition, p.error_code, p.leader_epoch, p.end_offset))
        .collect()
}

fn checkpoint(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("leader-epoch-checkpoint")).unwrap()
}

#[test]
fn offset_for_leader_epoch_answers_from_the_cache() {
    // Two shards: the partitions are spread over both owners, and the
    // answers still come back in request order.
    let broker = Broker::start(2, &[]);
    let mut raw = Raw::connect(broker.addr());
    let versions: ApiVersionsResponse = call(
        &mut raw,
        ApiKey::ApiVersions,
        3,
        &ApiVersionsRequest::default(),
    )
    .unwrap();
    let advertised = versions
        .api_keys
        .iter()
        .find(|k| k.api_key == ApiKey::OffsetForLeaderEpoch as i16)
        .expect("OffsetForLeaderEpoch advertised");
    assert_eq!((advertised.min_version, advertised.max_version), (2, 4));
    create(&mut raw, "epochs", 4);
    produce(&mut raw, "epochs", 0, 3, 10);
    produce(&mut raw, "epochs", 3, 1, 7);
    for version in 2..=4 {
        let answers = ask(
            &mut raw,
            version,
            &[
                ("epochs", 3, -1, 0),
                ("epochs", 0, -1, 0),
                ("epochs", 0, 0, 0),
                ("epochs", 1, -1, 0),
                ("epochs", 0, 1, 0),
                ("epochs", 0, -1, 5),
                ("epochs", 0, -1, -1),
                ("epochs", 9, -1, 0),
                ("nope", 0, -1, 0),
            ],
        );
        assert_eq!(
            answers,
            vec![
                (3, 0, 0, 7),
                (0, 0, 0, 30),
                (0, 0, 0, 30),
                (1, 0, 0, 0),
                (0, UNKNOWN_LEADER_EPOCH, -1, -1),
                (0, 0, -1, -1),
                (0, 0, -1, -1),
                (9, UNKNOWN_TOPIC_OR_PARTITION, -1, -1),
                (0, UNKNOWN_TOPIC_OR_PARTITION, -1, -1),
            ],
            "v{version}"
        );
    }
}

/// Rewrites the partitionLeaderEpoch of every batch at or above `from`
/// in the partition's segments. The field lies outside the CRC, so the
/// batches stay valid: this is the log a leader change would have left.
fn stamp_epoch(dir: &Path, from: i64, epoch: i32) {
    for path in common::segment_files(dir) {
        let mut bytes = std::fs::read(&path).unwrap();
        let mut at = 0;
        while at + 61 <= bytes.len() {
            let base = i64::from_be_bytes(bytes[at..at + 8].try_into().unwrap());
            let len = i32::from_be_bytes(bytes[at + 8..at + 12].try_into().unwrap());
            if base >= from {
                bytes[at + 12..at + 16].copy_from_slice(&epoch.to_be_bytes());
            }
            at += 12 + len as usize;
        }
        std::fs::write(&path, bytes).unwrap();
    }
}

#[test]
fn the_checkpoint_survives_restarts_and_is_rebuilt_when_deleted() {
    let mut broker = Broker::start(1, &["segment.bytes=1024"]);
    let mut raw = Raw::connect(broker.addr());
    create(&mut raw, "durable", 1);
    let dir = broker.partition_dir("durable", 0);
    assert_eq!(checkpoint(&dir), "0\n1\n0 0\n", "written at creation");
    produce(&mut raw, "durable", 0, 20, 5);
    assert!(common::segment_files(&dir).len() > 2);
    broker.stop();
    assert_eq!(checkpoint(&dir), "0\n1\n0 0\n");
    broker.restart();
    let mut raw = Raw::connect(broker.addr());
    assert_eq!(
        ask(&mut raw, 4, &[("durable", 0, 0, 0)]),
        vec![(0, 0, 0, 100)]
    );

    produce(&mut raw, "durable", 0, 2, 5);
    broker.kill9();
    assert_eq!(checkpoint(&dir), "0\n1\n0 0\n");
    broker.restart();
    let mut raw = Raw::connect(broker.addr());
    assert_eq!(
        ask(&mut raw, 4, &[("durable", 0, 0, 0)]),
        vec![(0, 0, 0, 110)]
    );

    // Deleted after a kill -9: rebuilt from the batch headers.
    broker.kill9();
    std::fs::remove_file(dir.join("leader-epoch-checkpoint")).unwrap();
    broker.restart();
    assert_eq!(checkpoint(&dir), "0\n1\n0 0\n");
    let mut raw = Raw::connect(broker.addr());
    assert_eq!(
        ask(&mut raw, 4, &[("durable", 0, 0, 0)]),
        vec![(0, 0, 0, 110)]
    );

    // A log holding two epochs, as a leader change leaves it (records from
    // offset 60 written in epoch 3), with its checkpoint lost.
    broker.stop();
    stamp_epoch(&dir, 60, 3);
    std::fs::remove_file(dir.join("leader-epoch-checkpoint")).unwrap();
    broker.restart();
    assert_eq!(checkpoint(&dir), "0\n2\n0 0\n3 60\n");
    let mut raw = Raw::connect(broker.addr());
    assert_eq!(
        ask(
            &mut raw,
            4,
            &[
                ("durable", 0, 3, 0),
                ("durable", 0, 3, 2),
                ("durable", 0, 3, 3),
                ("durable", 0, -1, 4),
                ("durable", 0, 0, 0),
                ("durable", 0, 4, 3),
            ]
        ),
        vec![
            (0, 0, 0, 60),
            (0, 0, 0, 60),
            (0, 0, 3, 110),
            (0, 0, -1, -1),
            (0, FENCED_LEADER_EPOCH, -1, -1),
            (0, UNKNOWN_LEADER_EPOCH, -1, -1),
        ]
    );
    // The partition carries on in epoch 3; a kill -9 keeps it.
    produce(&mut raw, "durable", 0, 1, 5);
    broker.kill9();
    broker.restart();
    assert_eq!(checkpoint(&dir), "0\n2\n0 0\n3 60\n");
    let mut raw = Raw::connect(broker.addr());
    assert_eq!(
        ask(&mut raw, 4, &[("durable", 0, 3, 3)]),
        vec![(0, 0, 3, 115)]
    );
}

/// librdkafka's log lines (with `debug=fetch`), to see what it decided.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<String>>>);

impl ClientContext for Logs {
    fn log(&self, _level: RDKafkaLogLevel, fac: &str, message: &str) {
        self.0.lock().unwrap().push(format!("{fac} {message}"));
    }
}

impl ConsumerContext for Logs {}

impl Logs {
    fn contains(&self, needle: &str) -> bool {
        self.0.lock().unwrap().iter().any(|l| l.contains(needle))
    }
}

/// Seeks partition 0 of `topic` to `offset`, naming the leader epoch of
/// the record before it, as a consumer resuming from a committed position
/// does: librdkafka then validates the position with OffsetForLeaderEpoch.
fn seek_with_epoch(consumer: &BaseConsumer<Logs>, topic: &str, offset: i64, epoch: i32) {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, rdkafka::Offset::Offset(offset))
        .unwrap();
    // SAFETY: the list holds one element, just added; the crate has no
    // setter for its leader epoch.
    unsafe {
        rdkafka::bindings::rd_kafka_topic_partition_set_leader_epoch((*tpl.ptr()).elems, epoch);
    }
    consumer
        .seek_partitions(tpl, Duration::from_secs(10))
        .unwrap();
}

/// The offset of the next message, within `DEADLINE`.
fn next_offset(consumer: &BaseConsumer<Logs>, logs: &Logs) -> i64 {
    let start = Instant::now();
    loop {
        assert!(
            start.elapsed() < DEADLINE,
            "no message; librdkafka said:\n{}",
            logs.0.lock().unwrap().join("\n")
        );
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => return m.offset(),
            Some(Err(e)) if common::is_transient(&e) => {}
            Some(Err(e)) => panic!("consume error {e}"),
            None => {}
        }
    }
}

#[test]
fn librdkafka_validates_positions_with_offset_for_leader_epoch() {
    let broker = Broker::start(1, &[]);
    let mut raw = Raw::connect(broker.addr());
    create(&mut raw, "validated", 1);
    produce(&mut raw, "validated", 0, 2, 10);
    let logs = Logs::default();
    let consumer: BaseConsumer<Logs> = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", "unused-assign-only")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("debug", "fetch")
        .set_log_level(RDKafkaLogLevel::Debug)
        .create_with_context(logs.clone())
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("validated", 0, rdkafka::Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    assert_eq!(next_offset(&consumer, &logs), 0);

    // A position inside epoch 0: the broker says epoch 0 ends at 20, so
    // the position is valid and reading goes on from it.
    seek_with_epoch(&consumer, "validated", 5, 0);
    assert_eq!(next_offset(&consumer, &logs), 5);
    assert!(
        logs.contains("validation succeeded: broker end offset 20"),
        "validated with the broker's answer"
    );

    // A position past where epoch 0 ends: librdkafka takes 20..25 as
    // truncated and moves to 20, rather than fetching out of range and
    // falling back to auto.offset.reset (which would start again at 0).
    seek_with_epoch(&consumer, "validated", 25, 0);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(2) {
        let _ = consumer.poll(Duration::from_millis(100));
    }
    produce(&mut raw, "validated", 0, 1, 10);
    assert_eq!(next_offset(&consumer, &logs), 20);
    assert!(logs.contains("epoch validation of offset 25"));
}
