//! A full disk, on a small tmpfs the test mounts (it runs as root): the
//! partitions' appends fail with KAFKA_STORAGE_ERROR and leave nothing
//! half-written behind, fetches go on, the broker stays up, logs the
//! condition once per partition and shows it in its metrics; librdkafka
//! retries and every record it was told is acknowledged is there once,
//! at offsets that never repeat, after space is freed. A broker killed
//! while the disk is full comes up on the full disk and serves every
//! acknowledged record, with no corrupt batch.

mod common;

use common::{call, create_topic, free_port, Broker, Raw};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(120);
const KAFKA_STORAGE_ERROR: i16 = 56;
/// What the broker logs, once per partition, when its disk is full.
const NO_SPACE_LINE: &str = "no space left for the partition's log";

/// A tmpfs of a given size mounted on a new temporary directory, and
/// unmounted when dropped (after the broker using it, declared later).
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "sluice-full"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(status.success(), "mount a {size} tmpfs (needs root)");
        SmallDisk { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file until the file system has no byte left; returns it.
    fn fill(&self) -> PathBuf {
        let path = self.path().join("filler");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        let chunk = vec![0u8; 64 << 10];
        loop {
            match f.write(&chunk) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling the disk: {e}"),
            }
        }
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("--lazy")
            .arg(self.path())
            .status();
    }
}

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

/// Acknowledged records: value → (partition, offset).
type Ledger = BTreeMap<String, (i32, i64)>;

/// Produces one batch of `count` records of about 1 KB, named
/// `{tag}-{i}`, to `partition` (v9, acks=1). On success the records go
/// into `acked`; returns the partition's error code.
fn produce_batch(
    raw: &mut Raw,
    topic: &str,
    partition: i32,
    tag: &str,
    count: usize,
    acked: &mut Ledger,
) -> i16 {
    let pad = "f".repeat(1000);
    let mut batch = sluice_protocol::record_batch::BatchBuilder::new(1_000);
    let values: Vec<String> = (0..count).map(|i| format!("{tag}-{i}-{pad}")).collect();
    for v in &values {
        batch.push(1_000, None, Some(v.as_bytes()), &[]);
    }
    let req = ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic_name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(bytes::Bytes::from(batch.finish())))])]);
    let resp: ProduceResponse = call(raw, ApiKey::Produce, 9, &req).expect("Produce answer");
    let p = &resp.responses[0].partition_responses[0];
    if p.error_code == 0 {
        for (i, v) in values.into_iter().enumerate() {
            let at = (partition, p.base_offset + i as i64);
            assert!(acked.insert(v, at).is_none(), "a value acknowledged twice");
        }
    }
    p.error_code
}

/// Produces 60-record batches to `partition` until the broker answers
/// KAFKA_STORAGE_ERROR; any other error fails the test.
fn produce_until_full(raw: &mut Raw, topic: &str, partition: i32, acked: &mut Ledger) {
    for i in 0.. {
        assert!(i < 100_000, "the disk never filled");
        match produce_batch(
            raw,
            topic,
            partition,
            &format!("raw-{partition}-{i}"),
            60,
            acked,
        ) {
            0 => {}
            KAFKA_STORAGE_ERROR => return,
            code => panic!("produce to a filling disk answered {code}"),
        }
    }
}

/// Every byte of a segment file is part of a whole batch: walks the batch
/// lengths to the file's end.
fn assert_whole_batches(path: &Path) {
    let bytes = std::fs::read(path).unwrap();
    let mut pos = 0usize;
    while pos < bytes.len() {
        assert!(
            pos + 12 <= bytes.len(),
            "{}: a torn batch header at {pos} of {}",
            path.display(),
            bytes.len()
        );
        let len = i32::from_be_bytes(bytes[pos + 8..pos + 12].try_into().unwrap());
        pos += 12 + len as usize;
    }
    assert_eq!(
        pos,
        bytes.len(),
        "{}: a torn batch at the end",
        path.display()
    );
}

/// The active (last) segment file of a partition.
fn active_segment(broker: &Broker, topic: &str, partition: i32) -> PathBuf {
    common::segment_files(&broker.partition_dir(topic, partition))
        .pop()
        .expect("a segment")
}

/// Scrapes the metrics listener: `name{labels}` → value.
fn scrape(port: u16) -> BTreeMap<String, f64> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the metrics listener");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// A partition's sample of metric `name`.
fn partition_metric(port: u16, name: &str, topic: &str, partition: i32) -> f64 {
    let key = format!("{name}{{topic=\"{topic}\",partition=\"{partition}\"}}");
    *scrape(port)
        .get(&key)
        .unwrap_or_else(|| panic!("no {key} in the scrape"))
}

/// Reads every partition of `topic` from its start to its high watermark
/// (assigned, nothing committed), CRCs checked by librdkafka: value →
/// (partition, offset).
fn consume_all(broker: &Broker, topic: &str, partitions: i32) -> Ledger {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", "reader")
        .set("enable.auto.commit", "false")
        .set("check.crcs", "true")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    let mut total = 0;
    for p in 0..partitions {
        let start = Instant::now();
        let (low, high) = loop {
            match c.fetch_watermarks(topic, p, Duration::from_secs(30)) {
                Ok(w) => break w,
                Err(e) if common::is_transient(&e) && start.elapsed() < DEADLINE => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Err(e) => panic!("watermarks: {e}; broker log:\n{}", broker.log()),
            }
        };
        total += high - low;
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut got = Ledger::new();
    let start = Instant::now();
    while (got.len() as i64) < total {
        assert!(
            start.elapsed() < DEADLINE,
            "consumed {} of {total}",
            got.len()
        );
        if let Some(m) = common::poll_message(&c, || format!("broker log:\n{}", broker.log())) {
            let v = String::from_utf8(m.payload().unwrap().to_vec()).unwrap();
            let at = (m.partition(), m.offset());
            assert!(got.insert(v, at).is_none(), "a value read twice, at {at:?}");
        }
    }
    got
}

/// Offsets of each partition run from 0 without a gap or a repeat.
fn assert_dense(read: &Ledger) {
    let mut offsets: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for (p, o) in read.values() {
        offsets.entry(*p).or_default().push(*o);
    }
    for (p, mut o) in offsets {
        o.sort();
        let expect: Vec<i64> = (0..o.len() as i64).collect();
        assert_eq!(o, expect, "partition {p}'s offsets");
    }
}

/// Delivery reports of librdkafka: acknowledged values, and failures.
#[derive(Clone, Default)]
struct Reports {
    acked: Arc<Mutex<Ledger>>,
    failed: Arc<Mutex<Vec<String>>>,
}

impl ClientContext for Reports {}

impl ProducerContext for Reports {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(m) => {
                let v = String::from_utf8(m.payload().unwrap().to_vec()).unwrap();
                let at = (m.partition(), m.offset());
                assert!(self.acked.lock().unwrap().insert(v, at).is_none());
            }
            Err((e, _)) => self.failed.lock().unwrap().push(e.to_string()),
        }
    }
}

/// A full disk fails both partitions' appends with KAFKA_STORAGE_ERROR,
/// cuts what a short write left, keeps fetches working and the broker up,
/// logs once per partition and shows it in the metrics; an idempotent
/// librdkafka producer retries through it and, once the disk has room
/// again, every record acknowledged is stored once, at dense offsets.
#[test]
fn a_full_disk_refuses_appends_until_space_is_freed() {
    const TOPIC: &str = "full";
    let disk = SmallDisk::mount("48m");
    let metrics_port = free_port();
    let broker = Broker::start_at(
        Some(disk.path().join("data")),
        2,
        &[
            &format!("metrics.listener=127.0.0.1:{metrics_port}"),
            "segment.bytes=4194304",
        ],
    );
    create_topic(&broker, TOPIC, 2);
    // An idempotent producer, with its producer id taken while there is
    // room (a new one needs a block of ids from the metadata log).
    let reports = Reports::default();
    let producer: ThreadedProducer<Reports> = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "300000")
        .create_with_context(reports.clone())
        .unwrap();
    // Records larger than a page: on the full disk below, none fits in
    // what is left of a segment's last page.
    let pad = "k".repeat(5000);
    let send = |tag: &str, i: i32| {
        let v = format!("{tag}-{i}-{pad}");
        producer
            .send(BaseRecord::<(), _>::to(TOPIC).partition(i % 2).payload(&v))
            .unwrap();
    };
    for i in 0..10 {
        send("idempotent", i);
    }
    producer.flush(DEADLINE).expect("delivered");
    let mut acked = std::mem::take(&mut *reports.acked.lock().unwrap());
    assert_eq!(acked.len(), 10);
    let mut raw = Raw::connect(broker.addr());
    for p in 0..2 {
        for i in 0..20 {
            let tag = format!("before-{p}-{i}");
            assert_eq!(produce_batch(&mut raw, TOPIC, p, &tag, 60, &mut acked), 0);
        }
    }

    // The disk fills up; the partitions write into what they allocated
    // ahead, then fail.
    let filler = disk.fill();
    for p in 0..2 {
        produce_until_full(&mut raw, TOPIC, p, &mut acked);
    }
    // What the failed appends cut off is free again: taken too, so that
    // no append of a whole page (every one below) can succeed.
    disk.fill();
    let end_0 = partition_metric(metrics_port, "sluice_log_end_offset", TOPIC, 0);
    for i in 0..5 {
        let code = produce_batch(&mut raw, TOPIC, 0, &format!("refused-{i}"), 60, &mut acked);
        assert_eq!(code, KAFKA_STORAGE_ERROR);
    }
    assert_eq!(
        partition_metric(metrics_port, "sluice_log_end_offset", TOPIC, 0),
        end_0,
        "a refused append moved the log end"
    );
    for p in 0..2 {
        assert_whole_batches(&active_segment(&broker, TOPIC, p));
        assert_eq!(
            partition_metric(metrics_port, "sluice_log_no_space", TOPIC, p),
            1.0
        );
    }
    assert!(partition_metric(metrics_port, "sluice_log_append_failures_total", TOPIC, 0) >= 6.0);
    assert_eq!(
        broker.log().matches(NO_SPACE_LINE).count(),
        2,
        "logged once per partition:\n{}",
        broker.log()
    );

    // Fetches go on from the full disk.
    assert_eq!(consume_all(&broker, TOPIC, 2), acked);

    // The idempotent producer meets the full disk and retries.
    let failures_before: f64 = (0..2)
        .map(|p| partition_metric(metrics_port, "sluice_log_append_failures_total", TOPIC, p))
        .sum();
    for i in 0..400 {
        send("retried", i);
    }
    let start = Instant::now();
    loop {
        let failures: f64 = (0..2)
            .map(|p| partition_metric(metrics_port, "sluice_log_append_failures_total", TOPIC, p))
            .sum();
        if failures >= failures_before + 2.0 {
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "the producer's appends were not refused"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        reports.acked.lock().unwrap().is_empty(),
        "acknowledged on a full disk"
    );

    // Space comes back: the retries succeed.
    std::fs::remove_file(&filler).unwrap();
    producer.flush(DEADLINE).expect("every record delivered");
    assert_eq!(*reports.failed.lock().unwrap(), Vec::<String>::new());
    let retried = reports.acked.lock().unwrap().clone();
    assert_eq!(retried.len(), 400);
    acked.extend(retried);
    let read = consume_all(&broker, TOPIC, 2);
    assert_eq!(read, acked, "what was read is what was acknowledged");
    assert_dense(&read);
    for p in 0..2 {
        assert_eq!(
            partition_metric(metrics_port, "sluice_log_no_space", TOPIC, p),
            0.0
        );
    }
    assert_eq!(broker.log().matches("appends succeed again").count(), 2);
}

/// A broker killed while its disk is full comes up on the still-full
/// disk, serves every acknowledged record with no corrupt batch, and
/// once space is freed appends after them without reusing an offset.
#[test]
fn a_broker_killed_on_a_full_disk_restarts_on_it() {
    const TOPIC: &str = "restarted";
    let disk = SmallDisk::mount("32m");
    let mut broker = Broker::start_at(
        Some(disk.path().join("data")),
        1,
        &["segment.bytes=2097152"],
    );
    create_topic(&broker, TOPIC, 1);
    let mut raw = Raw::connect(broker.addr());
    let mut acked = Ledger::new();
    for i in 0..20 {
        assert_eq!(
            produce_batch(&mut raw, TOPIC, 0, &format!("before-{i}"), 60, &mut acked),
            0
        );
    }
    let filler = disk.fill();
    produce_until_full(&mut raw, TOPIC, 0, &mut acked);
    assert_whole_batches(&active_segment(&broker, TOPIC, 0));

    broker.kill9();
    // What the failed append cut off is free again: taken too, so that
    // the restart has not one block to write but the reserve's.
    disk.fill();
    let reserve = broker.data_dir.join(".space-reserve");
    assert!(
        reserve.exists(),
        "the space reserve made at the first start"
    );
    broker.restart();
    assert!(
        !reserve.exists(),
        "the space reserve released for the start"
    );
    assert!(broker.log().contains("removed the space reserve"));
    assert_eq!(consume_all(&broker, TOPIC, 1), acked);
    let mut raw = Raw::connect(broker.addr());

    std::fs::remove_file(&filler).unwrap();
    for i in 0..5 {
        assert_eq!(
            produce_batch(&mut raw, TOPIC, 0, &format!("after-{i}"), 60, &mut acked),
            0
        );
    }
    let read = consume_all(&broker, TOPIC, 1);
    assert_eq!(read, acked);
    assert_dense(&read);
}
