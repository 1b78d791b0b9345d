//! librdkafka (through the `rdkafka` crate) against a real `sluice`
//! process: every codec round-trips 100,000 keyed and unkeyed messages with
//! headers over a multi-partition topic, and ListOffsets answers right.

mod common;

use common::Broker;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, DeliveryResult, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MESSAGES: usize = 100_000;
const PARTITIONS: i32 = 4;
const DEADLINE: Duration = Duration::from_secs(180);

/// Message index → (partition, offset), and delivery errors.
type DeliveryLog = (HashMap<usize, (i32, i64)>, Vec<String>);

/// Collects delivery reports.
#[derive(Clone, Default)]
struct Deliveries(Arc<Mutex<DeliveryLog>>);

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = Box<usize>;

    fn delivery(&self, result: &DeliveryResult<'_>, index: Self::DeliveryOpaque) {
        let mut d = self.0.lock().unwrap();
        match result {
            Ok(m) => {
                d.0.insert(*index, (m.partition(), m.offset()));
            }
            Err((e, _)) => d.1.push(format!("message {index}: {e}")),
        }
    }
}

fn key(i: usize) -> Option<String> {
    i.is_multiple_of(2).then(|| format!("key-{i}"))
}

fn value(i: usize, codec: &str) -> String {
    format!("value-{i}-{codec}-{}", "x".repeat(i % 50))
}

fn produce(broker: &Broker, topic: &str, codec: &str, base_ts: i64) -> HashMap<usize, (i32, i64)> {
    let ctx = Deliveries::default();
    let producer: ThreadedProducer<Deliveries> = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("compression.type", codec)
        .set("linger.ms", "5")
        .set("message.timeout.ms", "120000")
        .create_with_context(ctx.clone())
        .expect("producer");
    for i in 0..MESSAGES {
        let v = value(i, codec);
        let k = key(i);
        let idx = i.to_string();
        let mut record = BaseRecord::with_opaque_to(topic, Box::new(i))
            .payload(&v)
            .timestamp(base_ts + i as i64)
            .headers(OwnedHeaders::new().insert(Header {
                key: "idx",
                value: Some(&idx),
            }));
        if let Some(k) = &k {
            record = record.key(k);
        }
        let mut record = Some(record);
        while let Some(r) = record.take() {
            if let Err((e, r)) = producer.send(r) {
                assert!(
                    matches!(
                        e.rdkafka_error_code(),
                        Some(rdkafka::types::RDKafkaErrorCode::QueueFull)
                    ),
                    "{e}"
                );
                std::thread::sleep(Duration::from_millis(5));
                record = Some(r);
            }
        }
    }
    producer.flush(DEADLINE).expect("flush");
    let d = ctx.0.lock().unwrap();
    assert!(
        d.1.is_empty(),
        "delivery errors: {:?}",
        &d.1[..d.1.len().min(5)]
    );
    assert_eq!(d.0.len(), MESSAGES);
    d.0.clone()
}

fn consumer(broker: &Broker) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", "unused-assign-only")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .expect("consumer")
}

/// (partition, offset) → (key, value, idx header, timestamp)
type Consumed = BTreeMap<(i32, i64), (Option<String>, String, String, i64)>;

fn record(m: &BorrowedMessage<'_>) -> (Option<String>, String, String, i64) {
    let key = m.key().map(|k| String::from_utf8(k.to_vec()).unwrap());
    let value = String::from_utf8(m.payload().unwrap().to_vec()).unwrap();
    let headers = m.headers().expect("headers");
    let h = headers.get(0);
    assert_eq!(h.key, "idx");
    let idx = String::from_utf8(h.value.unwrap().to_vec()).unwrap();
    (key, value, idx, m.timestamp().to_millis().unwrap())
}

fn consume_all(broker: &Broker, topic: &str, expected: usize) -> Consumed {
    let c = consumer(broker);
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut got = Consumed::new();
    let start = Instant::now();
    while got.len() < expected {
        assert!(
            start.elapsed() < DEADLINE,
            "consumed {} of {expected}",
            got.len()
        );
        if let Some(m) = common::poll_message(&c, String::new) {
            let previous = got.insert((m.partition(), m.offset()), record(&m));
            assert!(
                previous.is_none(),
                "offset {} of partition {} returned twice",
                m.offset(),
                m.partition()
            );
        }
    }
    got
}

fn check_round_trip(codec: &str) {
    let mut broker = Broker::start(1, &[&format!("num.partitions={PARTITIONS}")]);
    let topic = format!("roundtrip-{codec}");
    let base_ts = 1_700_000_000_000i64;
    let delivered = produce(&broker, &topic, codec, base_ts);
    let got = consume_all(&broker, &topic, MESSAGES);
    for (i, (p, o)) in &delivered {
        let (k, v, idx, ts) = got
            .get(&(*p, *o))
            .unwrap_or_else(|| panic!("message {i} at {p}/{o} missing"));
        assert_eq!(k, &key(*i), "key of {i}");
        assert_eq!(v, &value(*i, codec), "value of {i}");
        assert_eq!(idx, &i.to_string(), "header of {i}");
        assert_eq!(*ts, base_ts + *i as i64, "timestamp of {i}");
    }
    // Offsets are contiguous from 0 in every partition, and order within a
    // partition is send order.
    let mut per_partition: BTreeMap<i32, Vec<(i64, usize)>> = BTreeMap::new();
    for (i, (p, o)) in &delivered {
        per_partition.entry(*p).or_default().push((*o, *i));
    }
    assert!(per_partition.len() > 1, "messages spread over partitions");
    let c = consumer(&broker);
    for (p, mut list) in per_partition {
        list.sort();
        for (n, (o, _)) in list.iter().enumerate() {
            assert_eq!(*o, n as i64, "partition {p} offsets contiguous");
        }
        assert!(
            list.windows(2).all(|w| w[0].1 < w[1].1),
            "partition {p} keeps send order"
        );
        let (low, high) = c
            .fetch_watermarks(&topic, p, Duration::from_secs(30))
            .unwrap();
        assert_eq!(
            (low, high),
            (0, list.len() as i64),
            "watermarks of partition {p}"
        );
        // By timestamp: the first message of this partition at or after the
        // timestamp of its middle message.
        let (mid_offset, mid_index) = list[list.len() / 2];
        let mut q = TopicPartitionList::new();
        q.add_partition_offset(&topic, p, Offset::Offset(base_ts + mid_index as i64))
            .unwrap();
        let answer = c.offsets_for_times(q, Duration::from_secs(30)).unwrap();
        let found = answer.find_partition(&topic, p).unwrap().offset();
        assert_eq!(
            found,
            Offset::Offset(mid_offset),
            "offset for timestamp, partition {p}"
        );
    }
    broker.stop();
    common::passed("librdkafka", &["produce", "consume"]);
}

#[test]
fn round_trip_uncompressed() {
    check_round_trip("none");
}

#[test]
fn round_trip_gzip() {
    check_round_trip("gzip");
}

#[test]
fn round_trip_snappy() {
    check_round_trip("snappy");
}

#[test]
fn round_trip_lz4() {
    check_round_trip("lz4");
}

#[test]
fn round_trip_zstd() {
    check_round_trip("zstd");
}
