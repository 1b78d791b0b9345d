//! Leader epochs on the wire and on disk: OffsetForLeaderEpoch answers
//! from the leader-epoch cache; the `leader-epoch-checkpoint` file follows
//! the leader epochs Metadata announces (a lone broker leads in a new one
//! after every restart), survives clean stops and kill -9, and is rebuilt
//! from the batch headers when deleted or unreadable; librdkafka consumers
//! validate their positions with it.

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

/// The checkpoint once it reads `expected`, or as it reads after 60 s.
/// A leader's new epoch reaches the file in the background (the shard's
/// file sync), so right after a restart it may still name the old ones.
fn settled_checkpoint(dir: &Path, expected: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(dir.join("leader-epoch-checkpoint")).unwrap_or_default();
        if text == expected || Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
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

/// The leader epoch Metadata gives partition 0 of `name`.
fn leader_epoch(raw: &mut Raw, name: &str) -> i32 {
    let req = MetadataRequest::default().with_topics(Some(vec![
        metadata_request::MetadataRequestTopic::default().with_name(Some(topic(name))),
    ]));
    let resp: MetadataResponse = call(raw, ApiKey::Metadata, 12, &req).unwrap();
    assert_eq!(resp.topics[0].error_code, 0);
    resp.topics[0].partitions[0].leader_epoch
}

/// ListOffsets v7 for partition 0 of `name` at `timestamp` (-2 earliest,
/// -1 latest): (offset, leader epoch).
fn list_offset(raw: &mut Raw, name: &str, timestamp: i64) -> (i64, i32) {
    let req = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![list_offsets_request::ListOffsetsTopic::default()
            .with_name(topic(name))
            .with_partitions(vec![
                list_offsets_request::ListOffsetsPartition::default()
                    .with_partition_index(0)
                    .with_timestamp(timestamp),
            ])]);
    let resp: ListOffsetsResponse = call(raw, ApiKey::ListOffsets, 7, &req).unwrap();
    let p = &resp.topics[0].partitions[0];
    assert_eq!(p.error_code, 0);
    (p.offset, p.leader_epoch)
}

/// The checkpoint text for `entries`.
fn checkpoint_of(entries: &[(i32, i64)]) -> String {
    let mut text = format!("0\n{}\n", entries.len());
    for (epoch, start) in entries {
        text.push_str(&format!("{epoch} {start}\n"));
    }
    text
}

/// Restarts the broker; returns a connection and the partition's new
/// leader epoch, which must be above `before`: a lone replica coming back
/// leads in a new epoch.
fn restart(broker: &mut Broker, before: i32) -> (Raw, i32) {
    broker.restart();
    let mut raw = Raw::connect(broker.addr());
    let epoch = leader_epoch(&mut raw, "durable");
    assert!(epoch > before, "epoch {epoch} after {before}");
    (raw, epoch)
}

#[test]
fn the_checkpoint_survives_restarts_and_is_rebuilt_when_deleted() {
    let mut broker = Broker::start(1, &["segment.bytes=1024"]);
    let mut raw = Raw::connect(broker.addr());
    create(&mut raw, "durable", 1);
    let dir = broker.partition_dir("durable", 0);
    let e0 = leader_epoch(&mut raw, "durable");
    let want = checkpoint_of(&[(e0, 0)]);
    assert_eq!(settled_checkpoint(&dir, &want), want, "at creation");
    produce(&mut raw, "durable", 0, 20, 5);
    assert!(common::segment_files(&dir).len() > 2);

    // A clean stop: the new leader epoch starts at the log end.
    broker.stop();
    let (mut raw, e1) = restart(&mut broker, e0);
    let want = checkpoint_of(&[(e0, 0), (e1, 100)]);
    assert_eq!(settled_checkpoint(&dir, &want), want);
    assert_eq!(
        ask(
            &mut raw,
            4,
            &[("durable", 0, e1, e1), ("durable", 0, e1, e0)]
        ),
        vec![(0, 0, e1, 100), (0, 0, e0, 100)]
    );
    produce(&mut raw, "durable", 0, 2, 5);

    // kill -9 keeps the file; the epoch after it starts at 110.
    broker.kill9();
    let (mut raw, e2) = restart(&mut broker, e1);
    let want = checkpoint_of(&[(e0, 0), (e1, 100), (e2, 110)]);
    assert_eq!(settled_checkpoint(&dir, &want), want);
    assert_eq!(
        ask(&mut raw, 4, &[("durable", 0, e2, e1)]),
        vec![(0, 0, e1, 110)]
    );
    // ListOffsets names the epoch a consumer validates its position with:
    // the current one at the end, the record's own elsewhere.
    assert_eq!(list_offset(&mut raw, "durable", -1), (110, e2));
    assert_eq!(list_offset(&mut raw, "durable", -2), (0, e0));
    assert_eq!(list_offset(&mut raw, "durable", 1_000), (0, e0));
    assert_eq!(list_offset(&mut raw, "durable", 5_000), (-1, -1));

    // Deleted after a kill -9: rebuilt from the batch headers, which know
    // the epochs that wrote records (e0 and e1); the new epoch is added.
    broker.kill9();
    std::fs::remove_file(dir.join("leader-epoch-checkpoint")).unwrap();
    let (mut raw, e3) = restart(&mut broker, e2);
    let want = checkpoint_of(&[(e0, 0), (e1, 100), (e3, 110)]);
    assert_eq!(settled_checkpoint(&dir, &want), want);
    assert_eq!(
        ask(
            &mut raw,
            4,
            &[
                ("durable", 0, e3, e0),
                ("durable", 0, e3, e1),
                ("durable", 0, e3, e2),
                ("durable", 0, e3, e3),
                ("durable", 0, -1, e3 + 1),
                ("durable", 0, e3 - 1, e3),
                ("durable", 0, e3 + 1, e3),
            ]
        ),
        vec![
            (0, 0, e0, 100),
            (0, 0, e1, 110),
            (0, 0, e1, 110),
            (0, 0, e3, 110),
            (0, 0, -1, -1),
            (0, FENCED_LEADER_EPOCH, -1, -1),
            (0, UNKNOWN_LEADER_EPOCH, -1, -1),
        ]
    );

    // Appends are stamped with the partition's epoch, so a rebuild after
    // them finds it in the batches; an unreadable file is rebuilt too.
    produce(&mut raw, "durable", 0, 1, 5);
    broker.stop();
    std::fs::write(dir.join("leader-epoch-checkpoint"), "not a checkpoint").unwrap();
    let (mut raw, e4) = restart(&mut broker, e3);
    let want = checkpoint_of(&[(e0, 0), (e1, 100), (e3, 110), (e4, 115)]);
    assert_eq!(settled_checkpoint(&dir, &want), want);
    assert_eq!(
        ask(&mut raw, 4, &[("durable", 0, e4, e3)]),
        vec![(0, 0, e3, 115)]
    );
}

/// A restarted broker once wrote every partition's checkpoint, with its
/// syncs, on the shard's thread before serving anything: 10–15 s with
/// 10,000 partitions. The new epoch now reaches the file in the
/// background, and this guards the rule that made the synchronous write
/// safe: the file names an epoch before the log holds records of it. Each
/// partition is written to right after the restart, many at once in one
/// request, and once acknowledged its file must name the new epoch where
/// the records start.
#[test]
fn records_of_a_new_epoch_are_never_ahead_of_the_checkpoint() {
    let mut broker = Broker::start(1, &[]);
    let mut raw = Raw::connect(broker.addr());
    let partitions = 16;
    create(&mut raw, "ahead", partitions);
    for p in 0..partitions {
        produce(&mut raw, "ahead", p, 1, 5);
    }
    broker.stop();
    broker.restart();
    let mut raw = Raw::connect(broker.addr());
    let mut b = BatchBuilder::new(1_000);
    b.push(1_000, None, Some(b"value"), &[]);
    let batch = Bytes::from(b.finish());
    let req = ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic("ahead"))
            .with_partition_data(
                (0..partitions)
                    .map(|p| {
                        PartitionProduceData::default()
                            .with_index(p)
                            .with_records(Some(batch.clone()))
                    })
                    .collect(),
            )]);
    let resp: ProduceResponse = call(&mut raw, ApiKey::Produce, 9, &req).unwrap();
    for answer in &resp.responses[0].partition_responses {
        assert_eq!((answer.index, answer.error_code), (answer.index, 0));
        let text = checkpoint(&broker.partition_dir("ahead", answer.index));
        let last = text.lines().last().unwrap().to_string();
        let (epoch, start) = last.split_once(' ').unwrap();
        assert_eq!(start, "5", "partition {}: {text:?}", answer.index);
        assert!(
            epoch.parse::<i32>().unwrap() > 0,
            "partition {}: {text:?}",
            answer.index
        );
    }
}

/// librdkafka's log lines (with `debug=fetch`), to see what it decided.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<String>>>);

impl ClientContext for Logs {
    fn log(&self, _level: RDKafkaLogLevel, fac: &str, message: &str) {
        if let Ok(mut lines) = self.0.lock() {
            lines.push(format!("{fac} {message}"));
        }
    }
}

impl ConsumerContext for Logs {}

impl Logs {
    fn contains(&self, needle: &str) -> bool {
        self.0.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    /// Whether a line containing `then` follows the first line containing
    /// `first`.
    fn contains_after(&self, first: &str, then: &str) -> bool {
        let lines = self.0.lock().unwrap();
        lines
            .iter()
            .position(|l| l.contains(first))
            .is_some_and(|at| lines[at + 1..].iter().any(|l| l.contains(then)))
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
        if start.elapsed() > DEADLINE {
            let said = logs.0.lock().map(|l| l.join("\n")).unwrap_or_default();
            panic!("no message; librdkafka said:\n{said}");
        }
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
    let mut broker = Broker::start(1, &[]);
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
        .set("topic.metadata.refresh.interval.ms", "200")
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
    // Records 20.. are produced only once librdkafka has moved its
    // position to 20 (its fetch state turns active at 20 after it asked
    // about 25; a fetch at 20 already in flight at the seek does not
    // count): produced earlier, they would make 25 a valid position.
    seek_with_epoch(&consumer, "validated", 25, 0);
    let start = Instant::now();
    while !logs.contains_after(
        "epoch validation of offset 25",
        "in state active at offset 20",
    ) {
        if start.elapsed() > DEADLINE {
            let said = logs.0.lock().map(|l| l.join("\n")).unwrap_or_default();
            panic!("librdkafka did not move from 25 to 20; it said:\n{said}");
        }
        let _ = consumer.poll(Duration::from_millis(100));
    }
    produce(&mut raw, "validated", 0, 1, 10);
    assert_eq!(next_offset(&consumer, &logs), 20);
    assert!(logs.contains("epoch validation of offset 25"));

    // The broker restarts and leads in a new epoch. The consumer learns it
    // from Metadata and validates its position (30, written in epoch 0)
    // again, naming the new epoch as the current one: that needs the
    // partition to have taken the new epoch on, or the answer would be
    // UNKNOWN_LEADER_EPOCH, retried forever.
    for offset in 21..30 {
        assert_eq!(next_offset(&consumer, &logs), offset);
    }
    broker.stop();
    broker.restart();
    let start = Instant::now();
    while !logs.contains("validation succeeded: broker end offset 30") {
        assert!(
            start.elapsed() < DEADLINE,
            "no validation after the restart"
        );
        let _ = consumer.poll(Duration::from_millis(100));
    }
    let mut raw = Raw::connect(broker.addr());
    produce(&mut raw, "validated", 0, 1, 10);
    assert_eq!(next_offset(&consumer, &logs), 30);
}
