//! The log cleaner with real processes and librdkafka: a compacted topic
//! ends up with one record per key, the latest, in offset order; tombstones
//! stay until `delete.retention.ms` after their first cleaning (the delete
//! horizon written into their batch, which a restart does not reset), then
//! go;
//! kill -9 at any moment of a cleaning, and leftovers of an interrupted
//! swap, leave a consistent log with every latest value; compressed
//! batches round-trip; an idempotent producer goes on producing after its
//! batches were cleaned; aborted transactions' records go, an open
//! transaction's stay, and markers go `delete.retention.ms` after their
//! transaction's data.
//!
//! Every wait is for a state of the log seen by a consumer, with a
//! generous deadline; nothing depends on how fast the cleaner is.

mod common;

use common::{segment_files, Broker};
use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{
    BaseProducer, BaseRecord, DefaultProducerContext, Producer, ProducerContext, ThreadedProducer,
};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(120);

/// Broker settings that make the cleaner look often.
const BROKER: &[&str] = &["log.cleaner.backoff.ms=100"];

/// Topic settings: small segments, any dirt worth a pass.
fn compacted(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut v = vec![
        ("cleanup.policy", "compact"),
        ("segment.bytes", "16384"),
        ("min.cleanable.dirty.ratio", "0.01"),
    ];
    v.extend_from_slice(extra);
    v
}

fn admin(broker: &Broker) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .expect("admin client")
}

fn create(broker: &Broker, topic: &str, configs: &[(&str, &str)]) {
    let mut new = NewTopic::new(topic, 1, TopicReplication::Fixed(1));
    for (k, v) in configs {
        new = new.set(k, v);
    }
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(60)));
    let results = futures::executor::block_on(admin(broker).create_topics([&new], &options))
        .expect("CreateTopics answered");
    for r in results {
        r.unwrap_or_else(|(name, code)| panic!("create {name}: {code}"));
    }
}

fn alter(broker: &Broker, topic: &str, configs: &[(&str, &str)]) {
    let mut change = AlterConfig::new(ResourceSpecifier::Topic(topic));
    for (k, v) in configs {
        change = change.set(k, v);
    }
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(60)));
    let results = futures::executor::block_on(admin(broker).alter_configs([&change], &options))
        .expect("AlterConfigs answered");
    for r in results {
        r.unwrap_or_else(|(name, code)| panic!("alter {name:?}: {code}"));
    }
}

/// Delivery failures, which a producer's flush does not report.
#[derive(Clone, Default)]
struct Failures(Arc<Mutex<Vec<String>>>);

impl ClientContext for Failures {}

impl ProducerContext for Failures {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.0.lock().unwrap().push(e.to_string());
        }
    }
}

type TestProducer = BaseProducer<Failures>;

fn producer(broker: &Broker, extra: &[(&str, &str)]) -> TestProducer {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", broker.bootstrap())
        .set("linger.ms", "5")
        .set("batch.num.messages", "100")
        .set("message.timeout.ms", "60000");
    for (k, v) in extra {
        c.set(*k, *v);
    }
    c.create_with_context(Failures::default())
        .expect("producer")
}

/// Produces `(key, value)` records and waits for every delivery.
fn produce(p: &TestProducer, topic: &str, records: &[(String, Option<String>)]) {
    for (k, v) in records {
        let mut r: BaseRecord<'_, str, str> = BaseRecord::to(topic).key(k.as_str());
        if let Some(v) = v {
            r = r.payload(v.as_str());
        }
        let mut r = Some(r);
        while let Some(rec) = r.take() {
            if let Err((e, back)) = p.send(rec) {
                assert!(
                    matches!(
                        e,
                        KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull)
                    ),
                    "send: {e}"
                );
                p.poll(Duration::from_millis(10));
                r = Some(back);
            }
        }
        p.poll(Duration::ZERO);
    }
    p.flush(DEADLINE).expect("every record delivered");
    let failures = std::mem::take(&mut *p.context().0.lock().unwrap());
    assert!(failures.is_empty(), "delivery failed: {failures:?}");
}

/// Rounds of `keys` keys, value `round`, then `fillers` records of unique
/// keys so that the data lies in sealed segments the cleaner may take.
fn data(keys: usize, rounds: usize) -> Vec<(String, Option<String>)> {
    let mut v = Vec::new();
    for round in 0..rounds {
        for k in 0..keys {
            v.push((
                format!("key-{k}"),
                Some(format!("round-{round}-of-key-{k}")),
            ));
        }
    }
    v
}

fn fillers(n: usize, tag: &str) -> Vec<(String, Option<String>)> {
    (0..n)
        .map(|i| (format!("filler-{tag}-{i}"), Some(format!("{i:0>40}"))))
        .collect()
}

/// A record as a consumer saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    offset: i64,
    key: String,
    value: Option<String>,
    /// CreateTime, Unix ms.
    timestamp: i64,
}

/// Everything in partition 0 from the beginning, read_committed.
fn read_all(broker: &Broker, topic: &str) -> Vec<Seen> {
    read_all_with(broker, topic, "read_committed")
}

/// Everything in partition 0 from the beginning, with `isolation`.
fn read_all_with(broker: &Broker, topic: &str, isolation: &str) -> Vec<Seen> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", "compaction-test")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", isolation)
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let start = Instant::now();
    let mut out = Vec::new();
    loop {
        assert!(
            start.elapsed() < DEADLINE,
            "reading {topic} did not reach its end"
        );
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Ok(m)) => out.push(Seen {
                offset: m.offset(),
                key: String::from_utf8(m.key().unwrap_or_default().to_vec()).unwrap(),
                value: m.payload().map(|p| String::from_utf8(p.to_vec()).unwrap()),
                timestamp: m.timestamp().to_millis().expect("a CreateTime"),
            }),
            Some(Err(KafkaError::PartitionEOF(_))) => return out,
            Some(Err(e)) if common::is_transient(&e) => {}
            Some(Err(e)) => {
                let _ = std::process::Command::new("cp")
                    .arg("-r")
                    .arg(broker.partition_dir(topic, 0))
                    .arg("/tmp/compaction-debug")
                    .status();
                panic!("consume {topic}: {e}")
            }
        }
    }
}

/// The latest value of each key in what was produced.
fn latest(records: &[(String, Option<String>)]) -> BTreeMap<String, Option<String>> {
    records.iter().cloned().collect()
}

/// What any consumer must see at any moment: offsets rising (none twice)
/// and, for each key, the latest value produced as the last one seen.
fn check_consistent(seen: &[Seen], produced: &[(String, Option<String>)]) {
    for w in seen.windows(2) {
        assert!(
            w[0].offset < w[1].offset,
            "offsets rise: {:?} then {:?}",
            w[0],
            w[1]
        );
    }
    let mut last = BTreeMap::new();
    for s in seen {
        last.insert(s.key.clone(), s.value.clone());
    }
    for (k, v) in latest(produced) {
        assert_eq!(last.get(&k), Some(&v), "latest value of {k}");
    }
}

/// Whether every key appears once.
fn compacted_fully(seen: &[Seen]) -> bool {
    let mut keys = std::collections::HashSet::new();
    seen.iter().all(|s| keys.insert(s.key.clone()))
}

/// Reads until every key appears once, checking consistency each time.
fn wait_compacted(
    broker: &Broker,
    topic: &str,
    produced: &[(String, Option<String>)],
) -> Vec<Seen> {
    let start = Instant::now();
    loop {
        let seen = read_all(broker, topic);
        check_consistent(&seen, produced);
        if compacted_fully(&seen) {
            return seen;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{topic} not compacted: {} records for {} keys; log:\n{}",
            seen.len(),
            latest(produced).len(),
            broker.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn a_compacted_topic_keeps_the_latest_record_of_each_key_in_offset_order() {
    let broker = Broker::start(1, BROKER);
    create(&broker, "compacted", &compacted(&[]));
    let p = producer(&broker, &[]);
    let mut records = data(500, 40);
    records.extend(fillers(1000, "a"));
    produce(&p, "compacted", &records);
    let seen = wait_compacted(&broker, "compacted", &records);
    assert_eq!(seen.len(), 500 + 1000);
    let want = latest(&records);
    for s in &seen {
        assert_eq!(Some(&s.value), want.get(&s.key), "{s:?}");
    }
    assert!(seen
        .iter()
        .any(|s| s.value.as_deref() == Some("round-39-of-key-0")));
    assert!(broker.log().contains("cleaned log"));
}

/// Issue 23's first case with kafka-python as producer and reader:
/// 100,000 records over 1,000 keys, compacted to one record per key.
#[test]
fn kafka_python_sees_one_record_per_key_the_latest_after_cleaning() {
    let broker = Broker::start(1, BROKER);
    create(&broker, "compacted-kp", &compacted(&[]));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/compaction.py");
    let out = common::run_client(
        "kafka-python on a compacted topic",
        &[
            "300",
            "python3",
            script,
            &broker.bootstrap(),
            "compacted-kp",
            "1000",
            "100",
            "1000",
        ],
        || broker.log(),
    );
    assert!(out.contains("compacted: 2000 records"), "{out}");
}

/// Unix time in ms.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// 100 keys five times, then tombstones for key-0..key-49, then fillers
/// so that they lie in sealed segments.
fn with_tombstones(tag: &str) -> Vec<(String, Option<String>)> {
    let mut records = data(100, 5);
    for k in 0..50 {
        records.push((format!("key-{k}"), None));
    }
    records.extend(fillers(1000, tag));
    records
}

/// The delete horizons of the batches of partition 0 that carry one.
fn horizons(broker: &Broker, topic: &str) -> Vec<i64> {
    stored_headers(broker, topic)
        .iter()
        .filter_map(|b| b.delete_horizon_ms)
        .collect()
}

/// Within `delete.retention.ms` a consumer sees the tombstones, in
/// batches the cleaner served as it stored them, with the delete horizon
/// (attribute bit 6) a retention ahead of their records; the records'
/// timestamps, as librdkafka reads them, are the producer's, not moved
/// by the horizon.
#[test]
fn tombstones_are_seen_within_delete_retention_with_their_horizon() {
    let broker = Broker::start(1, BROKER);
    let kept = compacted(&[("delete.retention.ms", "3600000")]);
    create(&broker, "tombstones", &kept);
    let p = producer(&broker, &[]);
    let records = with_tombstones("b");
    let before = now_ms();
    produce(&p, "tombstones", &records);
    let seen = wait_compacted(&broker, "tombstones", &records);
    let after = now_ms();
    let tombstones = seen.iter().filter(|s| s.value.is_none()).count();
    assert_eq!(
        tombstones, 50,
        "a consumer within delete.retention.ms sees them"
    );
    for s in &seen {
        assert!(
            (before - 1_000..=after).contains(&s.timestamp),
            "{s:?} keeps its CreateTime ({before}..{after})"
        );
    }
    let stamped: Vec<StoredBatch> = stored_headers(&broker, "tombstones")
        .into_iter()
        .filter(|b| b.delete_horizon_ms.is_some())
        .collect();
    assert!(
        !stamped.is_empty(),
        "the tombstones' batches carry a horizon"
    );
    for b in stamped {
        let horizon = b.delete_horizon_ms.unwrap();
        assert!(
            horizon >= b.max_timestamp + 3_600_000,
            "{b:?}: a retention after its records, or later"
        );
    }
}

/// Regression (KIP-534): a tombstone's wait was kept in the cleaner's
/// memory, so every restart started it again; a broker restarted more
/// often than `delete.retention.ms` kept its tombstones for ever. The
/// first pass that keeps a tombstone now writes its delete horizon into
/// the batch. Here the broker stops after that pass and starts again once
/// every horizon has passed: its first pass after the restart removes the
/// tombstones (a restarted clock would keep them
/// `delete.retention.ms` more).
#[test]
fn a_restart_does_not_restart_the_tombstones_clock() {
    let mut broker = Broker::start(1, BROKER);
    let topic = "tombstones-restart";
    create(
        &broker,
        topic,
        // Long enough that the loop below sees the horizons before they
        // pass even on a loaded machine (were every tombstone gone first,
        // it would wait for horizons that no batch carries any more).
        &compacted(&[("delete.retention.ms", "60000")]),
    );
    let p = producer(&broker, &[]);
    let records = with_tombstones("r");
    produce(&p, topic, &records);
    drop(p);
    // Every key once, and every tombstone's batch stamped.
    let start = Instant::now();
    let horizon = loop {
        // (On a slow machine some horizons may pass, and tombstones go,
        // before this sees them: the end state below allows that.)
        let seen = read_all(&broker, topic);
        let h = horizons(&broker, topic);
        if compacted_fully(&seen) && !h.is_empty() {
            break h.into_iter().max().unwrap();
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{topic} not compacted with horizons; log:\n{}",
            broker.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    broker.stop();
    let passes_before = passes(&broker, topic).len();
    // The broker is down until every horizon has passed.
    while now_ms() <= horizon {
        std::thread::sleep(Duration::from_millis(200));
    }
    broker.restart();
    let start = Instant::now();
    while passes(&broker, topic).len() == passes_before {
        assert!(
            start.elapsed() < DEADLINE,
            "no pass after the restart; log:\n{}",
            broker.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The first pass after the restart is done: nothing else may have
    // removed the tombstones.
    let seen = read_all(&broker, topic);
    assert!(compacted_fully(&seen));
    let deleted: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.key.starts_with("key-") && s.value.is_none())
        .collect();
    assert!(
        deleted.is_empty(),
        "{} tombstones outlived their horizon {horizon}: {:?}; log:\n{}",
        deleted.len(),
        deleted.first(),
        broker.log()
    );
    let want = latest(&records);
    let live: Vec<_> = seen.iter().filter(|s| s.key.starts_with("key-")).collect();
    assert_eq!(live.len(), 50, "the deleted keys are gone, the others stay");
    for s in live {
        assert_eq!(Some(&s.value), want.get(&s.key));
    }
}

#[test]
fn zstd_and_lz4_batches_round_trip_through_cleaning() {
    let broker = Broker::start(1, BROKER);
    for codec in ["zstd", "lz4"] {
        let topic = format!("compressed-{codec}");
        create(&broker, &topic, &compacted(&[]));
        let p = producer(&broker, &[("compression.type", codec)]);
        let mut records = data(200, 20);
        records.extend(fillers(3000, codec));
        produce(&p, &topic, &records);
        let seen = wait_compacted(&broker, &topic, &records);
        assert_eq!(seen.len(), 200 + 3000, "{codec}");
    }
}

#[test]
fn an_idempotent_producer_keeps_producing_after_its_batches_were_cleaned() {
    let mut broker = Broker::start(1, BROKER);
    create(&broker, "idempotent", &compacted(&[]));
    let p = producer(&broker, &[("enable.idempotence", "true")]);
    let mut records = data(100, 20);
    records.extend(fillers(1000, "e1"));
    produce(&p, "idempotent", &records);
    wait_compacted(&broker, "idempotent", &records);
    // The same producer, same id and sequence run, goes on.
    let more = data(100, 3);
    produce(&p, "idempotent", &more);
    records.extend(more);
    // And after a restart, whose producer state comes from the cleaned log.
    broker.stop();
    broker.restart();
    let again = data(100, 2);
    produce(&p, "idempotent", &again);
    records.extend(again);
    records.extend(fillers(1000, "e2"));
    produce(&p, "idempotent", &fillers(1000, "e2"));
    wait_compacted(&broker, "idempotent", &records);
}

/// Kill -9 at several moments of a slow cleaning, and at each step of a
/// swap through the broker's crash hook; then leftovers made by hand.
/// After every restart the log is consistent, and in the end compacted.
#[test]
fn kill_9_during_cleaning_loses_nothing_and_duplicates_no_offset() {
    let slow = [
        "log.cleaner.backoff.ms=100",
        "log.cleaner.io.max.bytes.per.second=200000",
    ];
    let mut broker = Broker::start(1, &slow);
    create(&broker, "crashy", &compacted(&[]));
    let p = producer(&broker, &[]);
    let mut records = data(300, 30);
    records.extend(fillers(1000, "c"));
    produce(&p, "crashy", &records);
    drop(p);
    for wait_ms in [0u64, 150, 400, 900, 1700] {
        std::thread::sleep(Duration::from_millis(wait_ms));
        broker.kill9();
        broker.restart();
        check_consistent(&read_all(&broker, "crashy"), &records);
    }
    // A crash right after the swap committed, and after the old segments
    // went: the restart finishes the swap.
    let p = producer(&broker, &[]);
    for (round, step) in ["swapped", "deleted"].into_iter().enumerate() {
        let more = data(300, 3);
        let tag = format!("c{round}");
        produce(&p, "crashy", &more);
        produce(&p, "crashy", &fillers(1000, &tag));
        records.extend(more);
        records.extend(fillers(1000, &tag));
        broker.stop();
        broker.set_env(&[("SLUICE_CLEANER_CRASH_AT", step)]);
        let crashes = |b: &Broker| {
            b.log()
                .matches("stopping at the cleaner's crash point")
                .count()
        };
        let before = crashes(&broker);
        let status = broker.restart_until_exit(DEADLINE);
        assert!(!status.success(), "stopped at {step}: {status}");
        assert_eq!(
            crashes(&broker),
            before + 1,
            "stopped by the hook at {step}"
        );
        broker.set_env(&[]);
        broker.restart();
        check_consistent(&read_all(&broker, "crashy"), &records);
    }
    drop(p);
    wait_compacted(&broker, "crashy", &records);
    // Leftovers by hand: a half-written `.cleaned`, and a committed
    // `.swap` of the first two segments (their batches end to end).
    broker.stop();
    let dir = broker.partition_dir("crashy", 0);
    let logs = segment_files(&dir);
    assert!(logs.len() >= 3, "{logs:?}");
    let mut swap = std::fs::read(&logs[0]).unwrap();
    swap.extend(std::fs::read(&logs[1]).unwrap());
    std::fs::write(format!("{}.swap", logs[0].display()), &swap).unwrap();
    std::fs::write(format!("{}.cleaned", logs[1].display()), b"half a batch").unwrap();
    let count = |b: &Broker, what: &str| b.log().matches(what).count();
    let finished = count(&broker, "finishing an interrupted segment swap");
    let removed = count(&broker, "removing an uncommitted cleaned segment");
    broker.restart();
    // Both leftovers were handled at open, before the broker was ready
    // (the stop may have left a file of the cleaner's own, and a running
    // cleaner has files under way, so the directory is not compared).
    let now_finished = count(&broker, "finishing an interrupted segment swap");
    assert_eq!(now_finished, finished + 1);
    assert!(count(&broker, "removing an uncommitted cleaned segment") > removed);
    let seen = read_all(&broker, "crashy");
    check_consistent(&seen, &records);
    assert!(compacted_fully(&seen));
}

/// A transactional producer, ready for its first transaction.
fn txn_producer(broker: &Broker, id: &str) -> ThreadedProducer<DefaultProducerContext> {
    let p: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("transactional.id", id)
        .set("transaction.timeout.ms", "600000")
        .set("linger.ms", "5")
        .set("batch.num.messages", "100")
        .set("message.timeout.ms", "60000")
        .create()
        .expect("transactional producer");
    p.init_transactions(DEADLINE).expect("init_transactions");
    p
}

/// Sends `records` to each of `topics` in one transaction, every one
/// written to the log, then commits or aborts it.
fn transaction(
    p: &ThreadedProducer<DefaultProducerContext>,
    topics: &[&str],
    records: &[(String, Option<String>)],
    commit: bool,
) {
    p.begin_transaction().expect("begin");
    for topic in topics {
        send_in_transaction(p, topic, records);
    }
    match commit {
        true => p.commit_transaction(DEADLINE).expect("commit"),
        false => p.abort_transaction(DEADLINE).expect("abort"),
    }
}

/// Sends `records` in the open transaction and waits until the log has
/// them (an abort would otherwise drop some unsent).
fn send_in_transaction(
    p: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    records: &[(String, Option<String>)],
) {
    for (k, v) in records {
        let mut r: BaseRecord<'_, str, str> = BaseRecord::to(topic).partition(0).key(k.as_str());
        if let Some(v) = v {
            r = r.payload(v.as_str());
        }
        let mut r = Some(r);
        while let Some(rec) = r.take() {
            if let Err((e, back)) = p.send(rec) {
                assert!(
                    matches!(
                        e,
                        KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull)
                    ),
                    "send: {e}"
                );
                std::thread::sleep(Duration::from_millis(10));
                r = Some(back);
            }
        }
    }
    p.flush(DEADLINE).expect("every record written");
}

/// Round `round` of `keys` keys from `first`, valued by the round.
fn round_of(round: usize, first: usize, keys: usize) -> Vec<(String, Option<String>)> {
    (first..first + keys)
        .map(|k| {
            (
                format!("key-{k}"),
                Some(format!("round-{round}-of-key-{k}")),
            )
        })
        .collect()
}

/// A batch header as a client fetches it.
#[derive(Debug)]
struct StoredBatch {
    base_offset: i64,
    control: bool,
    /// Attribute bit 6 set: the base timestamp is the delete horizon.
    delete_horizon_ms: Option<i64>,
    max_timestamp: i64,
}

/// The header of every batch of partition 0, read by raw
/// read_uncommitted fetches from offset 0 to the high watermark.
fn stored_headers(broker: &Broker, topic: &str) -> Vec<StoredBatch> {
    let mut raw = common::Raw::connect(broker.addr());
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let bytes = common::fetch_partition_0(&mut raw, topic, offset);
        let (mut at, before) = (0, out.len());
        // base_offset i64 | batch_length i32 | epoch i32 | magic i8 |
        // crc u32 | attributes i16 | last_offset_delta i32 |
        // base_timestamp i64 | max_timestamp i64 | ... (61 bytes)
        while at + 61 <= bytes.len() {
            let i64_at = |i: usize| i64::from_be_bytes(bytes[i..i + 8].try_into().unwrap());
            let i32_at = |i: usize| i32::from_be_bytes(bytes[i..i + 4].try_into().unwrap());
            let len = i32_at(at + 8) as usize;
            if at + 12 + len > bytes.len() {
                break;
            }
            let attributes = i16::from_be_bytes(bytes[at + 21..at + 23].try_into().unwrap());
            out.push(StoredBatch {
                base_offset: i64_at(at),
                control: attributes & 0x20 != 0,
                delete_horizon_ms: (attributes & 0x40 != 0).then(|| i64_at(at + 27)),
                max_timestamp: i64_at(at + 35),
            });
            offset = i64_at(at) + i64::from(i32_at(at + 23)) + 1;
            at += 12 + len;
        }
        if out.len() == before {
            return out;
        }
    }
}

/// Base offset and control flag of every batch of partition 0.
fn stored_batches(broker: &Broker, topic: &str) -> Vec<(i64, bool)> {
    stored_headers(broker, topic)
        .iter()
        .map(|b| (b.base_offset, b.control))
        .collect()
}

fn markers(broker: &Broker, topic: &str) -> usize {
    stored_batches(broker, topic)
        .iter()
        .filter(|(_, c)| *c)
        .count()
}

/// Reads `isolation` until every key appears once with its latest
/// committed value; offsets always rise.
fn wait_committed_only(
    broker: &Broker,
    topic: &str,
    isolation: &str,
    committed: &[(String, Option<String>)],
) {
    let want = latest(committed);
    let start = Instant::now();
    loop {
        let seen = read_all_with(broker, topic, isolation);
        for w in seen.windows(2) {
            assert!(w[0].offset < w[1].offset, "{isolation}: {:?}", &w);
        }
        let got: BTreeMap<String, Option<String>> = seen
            .iter()
            .map(|s| (s.key.clone(), s.value.clone()))
            .collect();
        if compacted_fully(&seen) && got == want {
            return;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{isolation}: {} records for {} keys, values {}; log:\n{}",
            seen.len(),
            want.len(),
            if got == want { "right" } else { "wrong" },
            broker.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Committed and aborted transactions on a compacted topic: after
/// cleaning both isolation levels see only the latest committed value
/// of each key; markers stay while their transaction's data does, and
/// `delete.retention.ms` after; the log they leave replays after a
/// restart to a stable offset at its end, and the producer goes on. The
/// same transactions go to two topics: one keeps markers an hour, the
/// other (`delete.retention.ms=0`) removes them as soon as their data is
/// gone (a marker's delete horizon is written into its batch when first
/// kept, so a shorter setting later would not reach it).
#[test]
fn aborted_records_go_and_markers_follow_their_transactions_data() {
    let mut broker = Broker::start(1, BROKER);
    let (kept, topic) = ("txn-compacted", "txn-compacted-0");
    create(
        &broker,
        kept,
        &compacted(&[("delete.retention.ms", "3600000")]),
    );
    create(&broker, topic, &compacted(&[("delete.retention.ms", "0")]));
    let p = txn_producer(&broker, "cleaner-txn");
    let mut committed = Vec::new();
    let mut transactions = 0;
    for round in 0..20 {
        // Round 18 rewrites half the keys: the others' latest committed
        // value is round 16's, behind two aborted rounds.
        let keys = if round == 18 { 50 } else { 100 };
        let records = round_of(round, 0, keys);
        let commit = round % 2 == 0;
        transaction(&p, &[kept, topic], &records, commit);
        if commit {
            committed.extend(records);
        }
        transactions += 1;
    }
    let fill = fillers(1000, "t");
    transaction(&p, &[kept, topic], &fill, true);
    committed.extend(fill);
    transactions += 1;
    wait_compacted(&broker, kept, &committed);
    wait_committed_only(&broker, kept, "read_uncommitted", &committed);
    assert_eq!(
        markers(&broker, kept),
        transactions,
        "every marker stays within delete.retention.ms"
    );
    wait_compacted(&broker, topic, &committed);
    // Rounds 16, 18 and the fillers keep data (3 markers needed); each
    // segment's last batch stays, which may keep one marker more each.
    let bound = |b: &Broker| segment_files(&b.partition_dir(topic, 0)).len() + 3;
    assert!(bound(&broker) < transactions, "the bound says something");
    let start = Instant::now();
    while markers(&broker, topic) > bound(&broker) {
        assert!(
            start.elapsed() < DEADLINE,
            "{} markers, {} segments; log:\n{}",
            markers(&broker, topic),
            bound(&broker) - 3,
            broker.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    wait_committed_only(&broker, topic, "read_committed", &committed);
    wait_committed_only(&broker, topic, "read_uncommitted", &committed);
    // Producer state comes back from the cleaned log: no transaction is
    // taken for open (read_committed reaches the end) and the producer
    // goes on.
    broker.stop();
    broker.restart();
    wait_committed_only(&broker, topic, "read_committed", &committed);
    // And with the producer snapshots gone, so that producer state is
    // replayed from the log start: every transaction whose records are
    // left still has its marker.
    broker.stop();
    let dir = broker.partition_dir(topic, 0);
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "snapshot") {
            std::fs::remove_file(path).unwrap();
        }
    }
    broker.restart();
    wait_committed_only(&broker, topic, "read_committed", &committed);
    let more = round_of(20, 0, 10);
    transaction(&p, &[topic], &more, true);
    committed.extend(more);
    // (In the active segment, so not compacted: the latest values come
    // last.)
    check_consistent(&read_all(&broker, topic), &committed);
}

/// A transaction left open holds the last stable offset: a pass cleans
/// below it and leaves its records, and the later committed ones, as
/// they are; once it is aborted its records go.
#[test]
fn an_open_transactions_records_survive_cleaning() {
    let broker = Broker::start(1, BROKER);
    let topic = "txn-open";
    create(&broker, topic, &compacted(&[]));
    let committer = txn_producer(&broker, "committer");
    let holder = txn_producer(&broker, "holder");
    // One committed transaction around the open one, so that the first
    // pass the cleaner may run sees the whole log:
    // [before | open (never ended) | after | COMMIT].
    let mut before = Vec::new();
    for round in 0..10 {
        before.extend(round_of(round, 0, 50));
    }
    before.extend(fillers(500, "before"));
    let open: Vec<_> = (0..50)
        .map(|k| (format!("key-{k}"), Some(format!("open-of-key-{k}"))))
        .collect();
    let mut after = Vec::new();
    for round in 10..20 {
        after.extend(round_of(round, 0, 50));
    }
    after.extend(fillers(500, "after"));
    committer.begin_transaction().expect("begin");
    send_in_transaction(&committer, topic, &before);
    holder.begin_transaction().expect("begin");
    send_in_transaction(&holder, topic, &open);
    send_in_transaction(&committer, topic, &after);
    committer.commit_transaction(DEADLINE).expect("commit");
    let mut committed = before;
    committed.extend(after.clone());
    // A finished pass compacted the part below the open transaction.
    let passes = |b: &Broker| {
        b.log()
            .lines()
            .filter(|l| l.contains("cleaned log") && l.contains(topic))
            .count()
    };
    let is_open = |s: &Seen| s.value.as_deref().is_some_and(|v| v.starts_with("open-"));
    let start = Instant::now();
    let seen = loop {
        let done = passes(&broker) > 0;
        let seen = read_all_with(&broker, topic, "read_uncommitted");
        let open_at = seen
            .iter()
            .find(|s| is_open(s))
            .map_or(i64::MAX, |s| s.offset);
        let below: Vec<Seen> = seen
            .iter()
            .filter(|s| s.offset < open_at)
            .cloned()
            .collect();
        if done && compacted_fully(&below) {
            break seen;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "not cleaned below the open transaction; log:\n{}",
            broker.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(
        seen.iter().filter(|s| is_open(s)).count(),
        50,
        "the open transaction's records stay"
    );
    let values: std::collections::HashSet<_> = seen.iter().map(|s| s.value.clone()).collect();
    for (_, v) in &after {
        assert!(values.contains(v), "{v:?} past the stable offset stays");
    }
    holder.abort_transaction(DEADLINE).expect("abort");
    let more = fillers(500, "more");
    transaction(&committer, &[topic], &more, true);
    committed.extend(more);
    wait_committed_only(&broker, topic, "read_uncommitted", &committed);
    wait_committed_only(&broker, topic, "read_committed", &committed);
}

/// Topic settings that hold the cleaner off (every segment is younger
/// than `min.compaction.lag.ms`) until [`let_clean`] lifts the lag, so
/// its first pass meets the whole log at once.
fn held(segment_bytes: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![
        ("cleanup.policy", "compact"),
        ("segment.bytes", segment_bytes),
        ("min.cleanable.dirty.ratio", "0.01"),
        ("min.compaction.lag.ms", "86400000"),
    ]
}

fn let_clean(broker: &Broker, topic: &str, segment_bytes: &'static str) {
    let mut configs = held(segment_bytes);
    configs.retain(|(k, _)| *k != "min.compaction.lag.ms");
    alter(broker, topic, &configs);
}

/// The fields of each "cleaned log" line the broker wrote for `topic`.
fn passes(broker: &Broker, topic: &str) -> Vec<BTreeMap<String, String>> {
    let topic_field = format!("topic={topic}");
    broker
        .log()
        .lines()
        .filter(|l| l.contains("cleaned log") && l.split(' ').any(|w| w == topic_field))
        .map(|l| {
            l.split(' ')
                .filter_map(|w| w.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

/// `log.cleaner.dedupe.buffer.size` at its 1 MiB floor on one shard is a
/// map of 1 MiB / 24 bytes a key * 90 % = 39,321 keys. The dirty part
/// holds 66,000: keys a-0..a-29999 twice (offsets 0..60000), b-0..b-29999
/// twice (60000..120000), 6,000 fillers (more than the active segment
/// holds, so every key's latest record is cleanable). The first pass maps the a-keys
/// and 9,321 b-keys, so it stops at offset 69,321 having cleaned below
/// it only; later passes finish, and a consumer sees each key once.
#[test]
fn a_dedupe_buffer_too_small_for_the_dirty_keys_cleans_in_several_passes() {
    let broker = Broker::start(
        1,
        &[
            "log.cleaner.backoff.ms=100",
            "log.cleaner.dedupe.buffer.size=1048576",
        ],
    );
    create(&broker, "dedupe", &held("262144"));
    let p = producer(&broker, &[("batch.num.messages", "1000")]);
    let mut records = Vec::new();
    for group in ["a", "b"] {
        for round in 0..2 {
            for k in 0..30_000 {
                records.push((format!("{group}-{k}"), Some(format!("r{round}"))));
            }
        }
    }
    records.extend(fillers(6000, "d"));
    produce(&p, "dedupe", &records);
    drop(p);
    let_clean(&broker, "dedupe", "262144");
    let seen = wait_compacted(&broker, "dedupe", &records);
    assert_eq!(seen.len(), 66_000);
    let passes = passes(&broker, "dedupe");
    let first = passes.first().expect("a pass was logged");
    assert_eq!(
        first.get("cleaned_upto").map(String::as_str),
        Some("69321"),
        "the first pass stops where the map filled: {passes:?}"
    );
    assert!(passes.len() >= 2, "{passes:?}");
}

/// `log.cleaner.io.max.bytes.per.second`: a pass must read every byte of
/// the segments it cleans, so cleaning N bytes at R bytes/s cannot end
/// sooner than about N / R after the cleaner may start. Only that lower
/// bound is asserted; how much longer it takes depends on the machine.
/// The slack: up to 64 KiB read before the throttle's first check and
/// after its last go unpaced, and a window opened up to 1 s before the
/// start may have allowed up to R bytes more.
#[test]
fn a_throttled_cleaner_reads_no_faster_than_its_rate() {
    const RATE: u64 = 250_000;
    let rate_setting = format!("log.cleaner.io.max.bytes.per.second={RATE}");
    let broker = Broker::start(1, &["log.cleaner.backoff.ms=100", rate_setting.as_str()]);
    create(&broker, "throttled", &held("65536"));
    let p = producer(&broker, &[]);
    let mut records: Vec<_> = data(500, 40)
        .into_iter()
        .map(|(k, v)| (k, v.map(|v| format!("{v:-<100}"))))
        .collect();
    // Fillers past a segment's worth: every key's latest is sealed.
    records.extend(fillers(2000, "t"));
    produce(&p, "throttled", &records);
    drop(p);
    // Every segment but the active one is cleanable once the lag lifts.
    let logs = segment_files(&broker.partition_dir("throttled", 0));
    let sealed_bytes: u64 = logs[..logs.len() - 1]
        .iter()
        .map(|l| std::fs::metadata(l).unwrap().len())
        .sum();
    assert!(sealed_bytes > 2_000_000, "{sealed_bytes} bytes to clean");
    let start = Instant::now();
    let_clean(&broker, "throttled", "65536");
    wait_compacted(&broker, "throttled", &records);
    let took = start.elapsed();
    let slack = 2 * 65_536 + RATE;
    let floor = Duration::from_secs_f64((sealed_bytes - slack) as f64 / RATE as f64);
    assert!(
        took >= floor,
        "{sealed_bytes} bytes cleaned in {took:?}, under the {floor:?} the rate allows"
    );
}
