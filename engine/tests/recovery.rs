//! Restart and crash recovery with real processes: a clean stop loses
//! nothing; kill -9 under `flush.messages=1` loses no acknowledged message
//! and never serves a corrupt batch; a torn tail is cut off on restart; a
//! corrupt batch inside a log takes only its partition offline; and a
//! power loss (the data directory on a file system that throws away what
//! was not synced) loses nothing acknowledged under `flush.messages=1`,
//! and with the default policy only a tail.

mod common;
mod lazyfs;

use common::{call, segment_files, Broker, Raw};
use kafka_protocol::messages::{
    ApiKey, BrokerId, FetchRequest, FetchResponse, ProduceRequest, ProduceResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(120);

/// Acknowledged messages: (partition, offset) → value.
#[derive(Clone, Default)]
struct Acked(Arc<Mutex<BTreeMap<(i32, i64), String>>>);

impl ClientContext for Acked {}

impl ProducerContext for Acked {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Ok(m) = result {
            let v = String::from_utf8(m.payload().unwrap().to_vec()).unwrap();
            let prev = self
                .0
                .lock()
                .unwrap()
                .insert((m.partition(), m.offset()), v);
            assert!(prev.is_none(), "two acknowledged messages at one offset");
        }
    }
}

fn producer(broker: &Broker, acked: &Acked) -> ThreadedProducer<Acked> {
    ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("acks", "1")
        .set("linger.ms", "1")
        .set("message.timeout.ms", "10000")
        .set("retries", "0")
        .create_with_context(acked.clone())
        .unwrap()
}

fn produce_n(broker: &Broker, topic: &str, n: usize) -> BTreeMap<(i32, i64), String> {
    let acked = Acked::default();
    let p = producer(broker, &acked);
    for i in 0..n {
        let v = format!("{topic}-{i}");
        p.send(BaseRecord::<(), _>::to(topic).payload(&v)).unwrap();
    }
    p.flush(DEADLINE).unwrap();
    let map = acked.0.lock().unwrap().clone();
    assert_eq!(map.len(), n);
    map
}

/// Reads every partition of `topic` to its end; CRCs checked by librdkafka.
fn consume_all(broker: &Broker, topic: &str, partitions: i32) -> BTreeMap<(i32, i64), String> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", "unused")
        .set("enable.auto.commit", "false")
        .set("check.crcs", "true")
        .create()
        .unwrap();
    let mut ends = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        let start = Instant::now();
        let (_, high) = loop {
            match c.fetch_watermarks(topic, p, Duration::from_secs(30)) {
                Ok(w) => break w,
                Err(e) if common::is_transient(&e) && start.elapsed() < DEADLINE => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Err(e) => panic!("watermarks: {e}; broker log:\n{}", broker.log()),
            }
        };
        ends.insert(p, high);
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    let total: i64 = ends.values().sum();
    c.assign(&tpl).unwrap();
    let mut got = BTreeMap::new();
    let start = Instant::now();
    while (got.len() as i64) < total {
        assert!(
            start.elapsed() < DEADLINE,
            "consumed {} of {total}",
            got.len()
        );
        if let Some(m) = common::poll_message(&c, || format!("broker log:\n{}", broker.log())) {
            let v = String::from_utf8(m.payload().unwrap().to_vec()).unwrap();
            assert!(
                got.insert((m.partition(), m.offset()), v).is_none(),
                "duplicate offset"
            );
        }
    }
    got
}

#[test]
fn clean_restart_keeps_everything() {
    let mut broker = Broker::start(2, &["num.partitions=3", "segment.bytes=65536"]);
    let acked = produce_n(&broker, "restart", 20_000);
    broker.stop();
    assert!(broker.data_dir.join(".kafka_cleanshutdown").exists());
    broker.restart();
    assert_eq!(consume_all(&broker, "restart", 3), acked);
    // Offsets continue after the restart.
    let more = produce_n(&broker, "restart", 100);
    assert!(more.keys().all(|k| !acked.contains_key(k)));
}

#[test]
fn kill_9_loses_no_acknowledged_message() {
    let mut broker = Broker::start(
        2,
        &[
            "num.partitions=2",
            "flush.messages=1",
            "segment.bytes=262144",
        ],
    );
    let acked = Acked::default();
    let p = producer(&broker, &acked);
    let start = Instant::now();
    let mut i = 0u64;
    // Produce until enough messages are acknowledged, then kill the broker
    // with requests still in flight.
    while acked.0.lock().unwrap().len() < 3_000 {
        assert!(start.elapsed() < DEADLINE, "producing stalled");
        let v = format!("crash-{i}");
        if p.send(BaseRecord::<(), _>::to("crash").payload(&v)).is_ok() {
            i += 1;
        }
        if i.is_multiple_of(200) {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    broker.kill9();
    let before = acked.0.lock().unwrap().clone();
    drop(p);
    assert!(!broker.data_dir.join(".kafka_cleanshutdown").exists());
    broker.restart();
    let got = consume_all(&broker, "crash", 2);
    for (k, v) in &before {
        assert_eq!(
            got.get(k),
            Some(v),
            "acknowledged message at {k:?} lost or changed"
        );
    }
    // Offsets are contiguous: nothing was skipped or duplicated.
    for part in 0..2 {
        let offsets: Vec<i64> = got
            .keys()
            .filter(|(p, _)| *p == part)
            .map(|(_, o)| *o)
            .collect();
        assert!(
            offsets.iter().enumerate().all(|(n, o)| *o == n as i64),
            "partition {part} offsets contiguous"
        );
    }
    // New appends continue after the recovered end.
    let more = produce_n(&broker, "crash", 10);
    assert!(more.keys().all(|k| !got.contains_key(k)));
}

fn append_garbage(broker: &Broker, topic: &str) -> u64 {
    let dir = broker.partition_dir(topic, 0);
    let active = segment_files(&dir).pop().unwrap();
    let size = std::fs::metadata(&active).unwrap().len();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&active)
        .unwrap();
    f.write_all(&[0x5a; 777]).unwrap();
    size
}

#[test]
fn torn_tail_is_truncated_after_a_crash() {
    let mut broker = Broker::start(1, &["num.partitions=1"]);
    let acked = produce_n(&broker, "torn", 1_000);
    broker.kill9();
    let good_size = append_garbage(&broker, "torn");
    broker.restart();
    assert_eq!(consume_all(&broker, "torn", 1), acked);
    let active = segment_files(&broker.partition_dir("torn", 0))
        .pop()
        .unwrap();
    assert_eq!(std::fs::metadata(&active).unwrap().len(), good_size);
    assert!(
        broker.log().contains("truncating"),
        "the truncation is logged"
    );
}

/// The end of the last whole batch of a segment file, walking the batch
/// headers from the start: where a torn tail begins.
fn whole_batches_end(segment: &std::path::Path) -> u64 {
    use sluice_protocol::record_batch::BatchHeader;
    let bytes = std::fs::read(segment).unwrap();
    let mut at = 0usize;
    while let Some(h) = BatchHeader::parse(&bytes[at..]) {
        let end = at + h.total_size();
        if h.batch_length <= 0 || end > bytes.len() {
            break;
        }
        at = end;
    }
    at as u64
}

#[test]
fn torn_tail_is_truncated_after_a_clean_stop() {
    let mut broker = Broker::start(1, &["num.partitions=1"]);
    let acked = produce_n(&broker, "torn2", 500);
    broker.stop();
    let active = segment_files(&broker.partition_dir("torn2", 0))
        .pop()
        .unwrap();
    let good_size = append_garbage(&broker, "torn2");
    assert_eq!(
        whole_batches_end(&active),
        good_size,
        "the batches before the garbage"
    );
    assert_eq!(std::fs::metadata(&active).unwrap().len(), good_size + 777);
    broker.restart();
    assert_eq!(
        std::fs::metadata(&active).unwrap().len(),
        good_size,
        "the segment is cut at the end of its last whole batch; broker log:\n{}",
        broker.log()
    );
    assert_eq!(consume_all(&broker, "torn2", 1), acked);
    let more = produce_n(&broker, "torn2", 5);
    assert_eq!(more.keys().next().unwrap().1, 500);
}

#[test]
fn corrupt_batch_inside_the_log_takes_only_its_partition_offline() {
    let mut broker = Broker::start(1, &["num.partitions=1", "segment.bytes=16384"]);
    // Flushing after every 100 messages makes many small batches, so
    // several segments and a batch after the damaged one.
    for _ in 0..20 {
        produce_n(&broker, "damaged", 100);
    }
    let healthy = produce_n(&broker, "healthy", 100);
    broker.kill9();
    let first = segment_files(&broker.partition_dir("damaged", 0)).remove(0);
    let mut bytes = std::fs::read(&first).unwrap();
    bytes[200] ^= 0xff;
    std::fs::write(&first, bytes).unwrap();
    broker.restart();
    let log = broker.log();
    assert!(
        log.contains("partition is offline") && log.contains(first.to_str().unwrap()),
        "{log}"
    );
    assert_eq!(consume_all(&broker, "healthy", 1), healthy);
    // Clients get KAFKA_STORAGE_ERROR for the damaged partition, and the
    // healthy one still takes and serves records.
    let mut raw = Raw::connect(broker.addr());
    let (code, _) = fetch_partition_0(&mut raw, "damaged");
    assert_eq!(
        code, KAFKA_STORAGE_ERROR,
        "fetch from the damaged partition"
    );
    assert_eq!(
        produce_one(&mut raw, "damaged"),
        KAFKA_STORAGE_ERROR,
        "produce to it"
    );
    let (code, records) = fetch_partition_0(&mut raw, "healthy");
    assert_eq!(code, 0, "fetch from the healthy partition");
    assert!(records > 0, "the healthy partition's records are served");
    assert_eq!(
        produce_one(&mut raw, "healthy"),
        0,
        "produce to the healthy partition"
    );
}

const KAFKA_STORAGE_ERROR: i16 = 56;

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

/// A sessionless Fetch v12 of partition 0 of `name` from offset 0: the
/// partition's error code and how many record bytes came back.
fn fetch_partition_0(raw: &mut Raw, name: &str) -> (i16, usize) {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    let req = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(topic_name(name))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20)])]);
    let resp: FetchResponse = call(raw, ApiKey::Fetch, 12, &req).expect("Fetch answer");
    assert_eq!(resp.error_code, 0);
    let p = &resp.responses[0].partitions[0];
    (p.error_code, p.records.as_ref().map_or(0, |r| r.len()))
}

/// Produces one record to partition 0 of `name` (v9, acks=1): the
/// partition's error code.
fn produce_one(raw: &mut Raw, name: &str) -> i16 {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    let mut batch = sluice_protocol::record_batch::BatchBuilder::new(1_000);
    batch.push(1_000, None, Some(b"after the restart"), &[]);
    let req = ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic_name(name))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(bytes::Bytes::from(batch.finish())))])]);
    let resp: ProduceResponse = call(raw, ApiKey::Produce, 9, &req).expect("Produce answer");
    resp.responses[0].partition_responses[0].error_code
}

/// Sends values of about 200 bytes (so 64 KiB segments roll several
/// times) to `topic` until `count` are acknowledged in all.
fn send_until(p: &ThreadedProducer<Acked>, acked: &Acked, topic: &str, count: usize, i: &mut u64) {
    let pad = "p".repeat(190);
    let start = Instant::now();
    while acked.0.lock().unwrap().len() < count {
        assert!(start.elapsed() < DEADLINE, "producing stalled");
        let v = format!("{topic}-{i}-{pad}");
        if p.send(BaseRecord::<(), _>::to(topic).payload(&v)).is_ok() {
            *i += 1;
        }
        if i.is_multiple_of(100) {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// Kills the broker with requests in flight and cuts the power. Returns
/// what was acknowledged.
fn lose_power(
    broker: &mut Broker,
    disk: &mut lazyfs::LazyMount,
    p: ThreadedProducer<Acked>,
    acked: &Acked,
) -> BTreeMap<(i32, i64), String> {
    broker.kill9();
    let before = acked.0.lock().unwrap().clone();
    drop(p);
    let (written, syncs) = disk.traffic();
    assert!(
        written > 0 && syncs > 0,
        "the broker did not run on the lazy file system"
    );
    disk.lose_power();
    before
}

/// The recovery point of each partition of `topic` in a data directory's
/// checkpoint (0 where there is none).
fn recovery_points(data: &Path, topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
    let text =
        std::fs::read_to_string(data.join("recovery-point-offset-checkpoint")).unwrap_or_default();
    let mut out: BTreeMap<i32, i64> = (0..partitions).map(|p| (p, 0)).collect();
    for line in text.lines().skip(2) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if let [t, p, o] = f.as_slice() {
            if *t == topic {
                out.insert(p.parse().unwrap(), o.parse().unwrap());
            }
        }
    }
    out
}

/// Per partition, the offsets read are 0, 1, 2, ... and each holds what
/// was acknowledged there (if it was).
fn assert_prefixes_of_acknowledged(
    got: &BTreeMap<(i32, i64), String>,
    acked: &BTreeMap<(i32, i64), String>,
    partitions: i32,
) {
    for part in 0..partitions {
        let offsets: Vec<i64> = got
            .keys()
            .filter(|(p, _)| *p == part)
            .map(|(_, o)| *o)
            .collect();
        assert!(
            offsets.iter().enumerate().all(|(n, o)| *o == n as i64),
            "partition {part}: offsets read are not contiguous from 0: {offsets:?}"
        );
    }
    for (k, v) in got {
        if let Some(a) = acked.get(k) {
            assert_eq!(
                a, v,
                "offset {k:?} holds another value than was acknowledged there"
            );
        }
    }
}

fn lazy_disk() -> (tempfile::TempDir, lazyfs::LazyMount) {
    let tmp = tempfile::tempdir().unwrap();
    let backing = tmp.path().join("disk");
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&backing).unwrap();
    std::fs::create_dir(&mnt).unwrap();
    let disk = lazyfs::LazyMount::mount(&backing, &mnt);
    (tmp, disk)
}

#[test]
fn losing_power_under_flush_messages_1_loses_no_acknowledged_message() {
    let (_tmp, mut disk) = lazy_disk();
    let data = disk.mountpoint.join("data");
    let overrides = [
        "num.partitions=2",
        "flush.messages=1",
        "segment.bytes=65536",
    ];
    let mut broker = Broker::start_at(Some(data), 1, &overrides);
    let acked = Acked::default();
    let p = producer(&broker, &acked);
    send_until(&p, &acked, "durable", 2_000, &mut 0);
    let acked = lose_power(&mut broker, &mut disk, p, &acked);
    broker.restart();
    let got = consume_all(&broker, "durable", 2);
    for (k, v) in &acked {
        assert_eq!(
            got.get(k),
            Some(v),
            "acknowledged message at {k:?} lost or changed by the power loss; broker log:\n{}",
            broker.log()
        );
    }
    assert_prefixes_of_acknowledged(&got, &acked, 2);
    let more = produce_n(&broker, "durable", 10);
    assert!(more.keys().all(|k| !got.contains_key(k)));
}

/// With the default policy, segments are synced once rolled and the
/// recovery point is checkpointed: a power loss takes at most what lies
/// above the checkpointed recovery point, and the log stays a contiguous
/// prefix of what was acknowledged.
#[test]
fn losing_power_under_the_default_policy_loses_only_what_lies_above_the_recovery_point() {
    let (_tmp, mut disk) = lazy_disk();
    let data = disk.mountpoint.join("data");
    let overrides = [
        "num.partitions=2",
        "segment.bytes=65536",
        "log.flush.offset.checkpoint.interval.ms=100",
    ];
    let mut broker = Broker::start_at(Some(data.clone()), 1, &overrides);
    let acked = Acked::default();
    let p = producer(&broker, &acked);
    let mut i = 0;
    send_until(&p, &acked, "lazy", 2_000, &mut i);
    // Some of it is below a checkpointed recovery point before the power
    // goes, so the bound below is not empty.
    let start = Instant::now();
    while recovery_points(&data, "lazy", 2).values().all(|o| *o == 0) {
        assert!(
            start.elapsed() < DEADLINE,
            "no recovery point was checkpointed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    send_until(&p, &acked, "lazy", 4_000, &mut i);
    let acked = lose_power(&mut broker, &mut disk, p, &acked);
    let synced = recovery_points(&data, "lazy", 2);
    broker.restart();
    let got = consume_all(&broker, "lazy", 2);
    assert_prefixes_of_acknowledged(&got, &acked, 2);
    for ((part, offset), v) in &acked {
        if *offset < synced[part] {
            assert_eq!(
                got.get(&(*part, *offset)),
                Some(v),
                "message at {part}/{offset}, below the checkpointed recovery point {}, was lost",
                synced[part]
            );
        }
    }
    let more = produce_n(&broker, "lazy", 10);
    assert!(more.keys().all(|k| !got.contains_key(k)));
}

/// An fdatasync that fails (EIO from the file system, as a disk failing
/// writeback gives it) takes its partition offline: a retried sync would
/// succeed over records Linux has already given up on. Produces and
/// fetches get KAFKA_STORAGE_ERROR, another partition is served, the
/// failure is logged once and counted in the metrics, the stop is not
/// clean, and the restart verifies the log and serves it again.
#[test]
fn a_failed_sync_takes_the_partition_offline_until_a_restart() {
    offline_until_a_restart(lazyfs::LazyMount::fail_syncs_under);
}

/// A write that fails with EIO (not a full disk) takes its partition
/// offline the same way: part of it may be on the disk anywhere.
#[test]
fn a_failed_write_takes_the_partition_offline_until_a_restart() {
    offline_until_a_restart(lazyfs::LazyMount::fail_writes_under);
}

/// Produces to topics `failing` and `healthy` (flush.messages=1), makes
/// `fail` fail the first one's files with EIO, and checks what the tests
/// above say.
fn offline_until_a_restart(fail: fn(&lazyfs::LazyMount, Option<&Path>)) {
    let (_tmp, disk) = lazy_disk();
    let data = disk.mountpoint.join("data");
    let metrics_port = common::free_port();
    let metrics = format!("metrics.listener=127.0.0.1:{metrics_port}");
    let overrides = ["num.partitions=1", "flush.messages=1", metrics.as_str()];
    let mut broker = Broker::start_at(Some(data.clone()), 1, &overrides);
    let acked = produce_n(&broker, "failing", 50);
    let healthy = produce_n(&broker, "healthy", 50);

    fail(&disk, Some(Path::new("data/failing-0")));
    let mut raw = Raw::connect(broker.addr());
    assert_eq!(
        produce_one(&mut raw, "failing"),
        KAFKA_STORAGE_ERROR,
        "the failure"
    );
    assert_eq!(
        produce_one(&mut raw, "failing"),
        KAFKA_STORAGE_ERROR,
        "offline since"
    );
    assert_eq!(
        fetch_partition_0(&mut raw, "failing").0,
        KAFKA_STORAGE_ERROR
    );
    assert_eq!(produce_one(&mut raw, "healthy"), 0, "another partition");
    assert_eq!(fetch_partition_0(&mut raw, "healthy").0, 0);
    let line = "writing or syncing the partition's files failed";
    assert_eq!(broker.log().matches(line).count(), 1, "{}", broker.log());
    let scrape = scrape_metrics(metrics_port);
    let offline = scrape
        .lines()
        .find_map(|l| l.strip_prefix("sluice_storage_offline_partitions "))
        .and_then(|v| v.parse::<f64>().ok());
    assert_eq!(offline, Some(1.0), "{scrape}");

    fail(&disk, None);
    broker.stop();
    assert!(
        !data.join(".kafka_cleanshutdown").exists(),
        "a stop after a failed write or sync is not clean"
    );
    broker.restart();
    let mut raw = Raw::connect(broker.addr());
    assert_eq!(
        produce_one(&mut raw, "failing"),
        0,
        "back after the restart"
    );
    let got = consume_all(&broker, "failing", 1);
    for (k, v) in &acked {
        assert_eq!(got.get(k), Some(v), "acknowledged record at {k:?}");
    }
    assert_eq!(consume_all(&broker, "healthy", 1).len(), healthy.len() + 1);
}

/// The metrics listener's `/metrics` body.
fn scrape_metrics(port: u16) -> String {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}
