//! Every setting a broker accepts has its effect, or is refused naming
//! the key: keys on compacted topics, impossible combinations, topic
//! `compression.type`, time-based rolling, retention checks and delayed
//! file deletion, `segment.index.bytes`, one data directory.
//!
//! Effects that take time are waited for with generous deadlines; nothing
//! here asserts how fast anything happens.

mod common;

use bytes::Bytes;
use common::{call, Broker, Raw};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use sluice_protocol::compression::compress;
use sluice_protocol::record_batch::{
    decode_records, validate_record_set, BatchBuilder, BatchHeader, Compression, BATCH_HEADER_SIZE,
};
use std::path::Path;
use std::time::{Duration, Instant};

/// How long an effect that needs time (a roll, a retention check) may
/// take to show. Generous: CI machines are shared.
const EFFECT_DEADLINE: Duration = Duration::from_secs(60);

fn topic(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// CreateTopics of one single-partition topic: (error code, message).
fn create(raw: &mut Raw, name: &str, configs: &[(&str, &str)]) -> (i16, String) {
    let configs = configs
        .iter()
        .map(|(k, v)| {
            CreatableTopicConfig::default()
                .with_name(text(k))
                .with_value(Some(text(v)))
        })
        .collect();
    let req = CreateTopicsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(topic(name))
            .with_num_partitions(1)
            .with_replication_factor(1)
            .with_configs(configs)]);
    let resp: CreateTopicsResponse = call(raw, ApiKey::CreateTopics, 7, &req).expect("answer");
    let t = &resp.topics[0];
    let message = t.error_message.as_ref().map(|m| m.to_string());
    (t.error_code, message.unwrap_or_default())
}

fn create_ok(raw: &mut Raw, name: &str, configs: &[(&str, &str)]) {
    let (code, message) = create(raw, name, configs);
    assert_eq!(code, 0, "create {name}: {message}");
}

/// Produce v9 of `records` to partition 0 of `name`.
fn produce(
    raw: &mut Raw,
    name: &str,
    records: Vec<u8>,
) -> produce_response::PartitionProduceResponse {
    let req = ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic(name))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(Bytes::from(records)))])]);
    let resp: ProduceResponse = call(raw, ApiKey::Produce, 9, &req).expect("answer");
    resp.responses[0].partition_responses[0].clone()
}

fn produce_ok(raw: &mut Raw, name: &str, records: Vec<u8>) -> i64 {
    let p = produce(raw, name, records);
    assert_eq!(p.error_code, 0, "produce to {name}: {:?}", p.error_message);
    p.base_offset
}

/// ListOffsets of partition 0: -1 latest, -2 earliest.
fn list_offset(raw: &mut Raw, name: &str, timestamp: i64) -> i64 {
    let req = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(topic(name))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_timestamp(timestamp)])]);
    let resp: ListOffsetsResponse = call(raw, ApiKey::ListOffsets, 7, &req).expect("answer");
    let p = &resp.topics[0].partitions[0];
    assert_eq!(p.error_code, 0);
    p.offset
}

/// A batch of records with these keys, values `value-<i>`, timestamps
/// from `timestamp` on.
fn batch_at(timestamp: i64, keys: &[Option<&[u8]>]) -> BatchBuilder {
    let mut b = BatchBuilder::new(timestamp);
    for (i, k) in keys.iter().enumerate() {
        let v = format!("value-{i} {}", "x".repeat(100));
        b.push(timestamp + i as i64, *k, Some(v.as_bytes()), &[]);
    }
    b
}

fn batch(keys: &[Option<&[u8]>]) -> Vec<u8> {
    batch_at(now_ms(), keys).finish()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

/// The headers of the batches in a record set, with each batch's values.
fn batches(set: &[u8]) -> Vec<(BatchHeader, Vec<Vec<u8>>)> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(h) = BatchHeader::parse(&set[at..]) {
        let end = at + h.total_size();
        if end > set.len() {
            break;
        }
        let section = &set[at + BATCH_HEADER_SIZE..end];
        let plain = sluice_protocol::compression::decompress(h.compression().unwrap(), section)
            .expect("records decompress");
        let values = decode_records(&plain, h.records_count as usize)
            .expect("records decode")
            .iter()
            .map(|r| r.value.unwrap_or_default().to_vec())
            .collect();
        out.push((h, values));
        at = end;
    }
    out
}

/// Files of `dir` whose names end with `suffix`.
fn files_ending(dir: &Path, suffix: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("partition dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(suffix))
        .collect();
    names.sort();
    names
}

/// Waits for `done`, polling every 100 ms, failing after
/// [`EFFECT_DEADLINE`] with `what`.
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < EFFECT_DEADLINE, "still waiting: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs `sluice` with `args`, expecting it to refuse to start; returns
/// what it wrote to stderr.
fn refused_start(args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start sluice");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > EFFECT_DEADLINE {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("sluice {args:?} started instead of refusing");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(!status.success(), "{args:?}: {stderr}");
    stderr
}

/// Kafka's rule: compaction keeps the latest record of each key, so a
/// compacted topic (`compact` or `compact,delete`) refuses a record
/// without one. The partition gets INVALID_RECORD with Kafka's message,
/// each keyless record is named, nothing of the batch is appended, and
/// the broker goes on serving; a librdkafka producer sees the error.
#[test]
fn a_compacted_topic_refuses_records_without_a_key() {
    let broker = Broker::start(1, &[]);
    let mut raw = Raw::connect(broker.addr());
    create_ok(&mut raw, "compacted", &[("cleanup.policy", "compact")]);
    create_ok(&mut raw, "both", &[("cleanup.policy", "compact, delete")]);
    create_ok(&mut raw, "deleted", &[]);

    for name in ["compacted", "both"] {
        let p = produce(&mut raw, name, batch(&[Some(b"a"), None, Some(b"b")]));
        assert_eq!(p.error_code, 87, "INVALID_RECORD: {:?}", p.error_message);
        let want = format!(
            "Compacted topic cannot accept message without key in topic partition {name}-0"
        );
        assert_eq!(p.record_errors.len(), 1);
        assert_eq!(p.record_errors[0].batch_index, 1);
        assert_eq!(
            p.record_errors[0]
                .batch_index_error_message
                .as_ref()
                .map(|m| m.to_string()),
            Some(want.clone())
        );
        let message = p.error_message.map(|m| m.to_string()).unwrap_or_default();
        assert!(message.contains(&want), "{message}");
        assert_eq!(list_offset(&mut raw, name, -1), 0, "nothing appended");
        // A keyless record inside a compressed batch is found too.
        let b = batch_at(now_ms(), &[None, Some(b"c")]);
        let mut zstd = Vec::new();
        compress(Compression::Zstd, b.records(), &mut zstd).unwrap();
        let p = produce(&mut raw, name, b.finish_with(Compression::Zstd, &zstd));
        assert_eq!(p.error_code, 87);
        assert_eq!(p.record_errors[0].batch_index, 0);
        // Keyed records go in.
        assert_eq!(
            produce_ok(&mut raw, name, batch(&[Some(b"a"), Some(b"b")])),
            0
        );
    }
    // A topic that is not compacted takes keyless records.
    produce_ok(&mut raw, "deleted", batch(&[None]));

    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("message.timeout.ms", "60000")
        .create()
        .expect("producer");
    let keyless = FutureRecord::<(), str>::to("compacted").payload("no key");
    let sent = futures::executor::block_on(producer.send(keyless, Duration::from_secs(0)));
    let (error, _) = sent.expect_err("a keyless record is refused");
    assert_eq!(
        error.rdkafka_error_code(),
        Some(rdkafka::types::RDKafkaErrorCode::InvalidRecord),
        "{error}"
    );
    let keyed = FutureRecord::to("compacted").key("k").payload("v");
    futures::executor::block_on(producer.send(keyed, Duration::from_secs(0)))
        .expect("a keyed record goes in");
    assert_eq!(list_offset(&mut raw, "compacted", -1), 3);
}

/// Settings each valid alone but impossible together are refused where
/// they are set, naming the key: at CreateTopics, AlterConfigs,
/// IncrementalAlterConfigs, and at start for the broker's defaults.
/// Values no key takes (an unknown `cleanup.policy`, several `log.dirs`)
/// are refused the same way.
#[test]
fn impossible_settings_are_refused_naming_the_key() {
    let broker = Broker::start(1, &[]);
    let mut raw = Raw::connect(broker.addr());
    let lags = [
        ("min.compaction.lag.ms", "60000"),
        ("max.compaction.lag.ms", "1000"),
    ];
    let (code, message) = create(&mut raw, "lags", &lags);
    assert_eq!(code, 40, "INVALID_CONFIG: {message}");
    assert!(message.contains("min.compaction.lag.ms"), "{message}");
    let (code, message) = create(&mut raw, "policy", &[("cleanup.policy", "shred")]);
    assert_eq!(code, 40, "INVALID_CONFIG: {message}");
    assert!(message.contains("cleanup.policy"), "{message}");
    let (code, _) = create(&mut raw, "policy", &[("cleanup.policy", "compact,shred")]);
    assert_eq!(code, 40);

    create_ok(&mut raw, "lagged", &[("min.compaction.lag.ms", "60000")]);
    let alter = |raw: &mut Raw, value: &str| {
        use incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig};
        let req = IncrementalAlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(text("lagged"))
                .with_configs(vec![AlterableConfig::default()
                    .with_name(text("max.compaction.lag.ms"))
                    .with_config_operation(0)
                    .with_value(Some(text(value)))]),
        ]);
        let resp: IncrementalAlterConfigsResponse =
            call(raw, ApiKey::IncrementalAlterConfigs, 1, &req).expect("answer");
        let r = &resp.responses[0];
        let message = r.error_message.as_ref().map(|m| m.to_string());
        (r.error_code, message.unwrap_or_default())
    };
    let (code, message) = alter(&mut raw, "1000");
    assert_eq!(code, 40, "{message}");
    assert!(message.contains("min.compaction.lag.ms"), "{message}");
    assert_eq!(
        alter(&mut raw, "120000").0,
        0,
        "a max above the min is fine"
    );

    // AlterConfigs replaces the overrides: the pair must hold together.
    let req = AlterConfigsRequest::default().with_resources(vec![
        alter_configs_request::AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(text("lagged"))
            .with_configs(
                lags.iter()
                    .map(|(k, v)| {
                        alter_configs_request::AlterableConfig::default()
                            .with_name(text(k))
                            .with_value(Some(text(v)))
                    })
                    .collect(),
            ),
    ]);
    let resp: AlterConfigsResponse = call(&mut raw, ApiKey::AlterConfigs, 2, &req).unwrap();
    let r = &resp.responses[0];
    assert_eq!(r.error_code, 40);
    let message = r.error_message.as_ref().map(|m| m.to_string());
    assert!(
        message
            .as_deref()
            .unwrap_or("")
            .contains("min.compaction.lag.ms"),
        "{message:?}"
    );

    let stderr = refused_start(&[
        "--override",
        "log.cleaner.min.compaction.lag.ms=60000",
        "--override",
        "log.cleaner.max.compaction.lag.ms=1000",
    ]);
    assert!(stderr.contains("min.compaction.lag.ms"), "{stderr}");
    let stderr = refused_start(&["--override", "log.cleanup.policy=shred"]);
    assert!(stderr.contains("log.cleanup.policy"), "{stderr}");
    let stderr = refused_start(&["--override", "log.dirs=/tmp/a,/tmp/b"]);
    assert!(stderr.contains("log.dirs"), "{stderr}");
}

/// Topic `compression.type` other than `producer` rewrites each appended
/// batch in its codec, as Kafka does: uncompressed produce lands as zstd
/// batches on disk, and `uncompressed` stores a gzip producer's records
/// plain. Records and timestamps are kept (producer fields too: see
/// the unit tests of `produce_records`).
#[test]
fn topic_compression_type_rewrites_batches_on_append() {
    let broker = Broker::start(1, &[]);
    let mut raw = Raw::connect(broker.addr());
    create_ok(&mut raw, "zstd", &[("compression.type", "zstd")]);
    create_ok(&mut raw, "plain", &[("compression.type", "uncompressed")]);
    create_ok(&mut raw, "as-sent", &[]);

    let sent = batch_at(now_ms(), &[Some(b"a"), Some(b"b"), Some(b"c")]);
    let plain = sent.finish();
    produce_ok(&mut raw, "zstd", plain.clone());
    produce_ok(&mut raw, "as-sent", plain.clone());
    let want: Vec<Vec<u8>> = batches(&plain).remove(0).1;
    let sent_header = BatchHeader::parse(&plain).unwrap();

    let log = |name: &str| {
        let dir = broker.partition_dir(name, 0);
        std::fs::read(dir.join("00000000000000000000.log")).expect("segment file")
    };
    let on_disk = batches(&log("zstd"));
    assert_eq!(on_disk.len(), 1);
    let (h, values) = &on_disk[0];
    assert_eq!(h.compression(), Some(Compression::Zstd));
    assert_eq!(values, &want);
    assert_eq!(
        (h.max_timestamp, h.records_count),
        (sent_header.max_timestamp, sent_header.records_count)
    );
    validate_record_set(&log("zstd"), usize::MAX).expect("a valid batch on disk");
    let fetched = batches(&common::fetch_partition_0(&mut raw, "zstd", 0));
    assert_eq!(fetched[0].0.compression(), Some(Compression::Zstd));
    assert_eq!(fetched[0].1, want);
    // `producer` keeps the batch as it came.
    assert_eq!(
        batches(&log("as-sent"))[0].0.compression(),
        Some(Compression::None)
    );

    let mut gzip = Vec::new();
    compress(Compression::Gzip, sent.records(), &mut gzip).unwrap();
    produce_ok(
        &mut raw,
        "plain",
        sent.finish_with(Compression::Gzip, &gzip),
    );
    let stored = batches(&log("plain"));
    assert_eq!(stored[0].0.compression(), Some(Compression::None));
    assert_eq!(stored[0].1, want);

    // A librdkafka consumer reads the rewritten batches.
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", "compression-readers")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&["zstd"]).unwrap();
    let mut got = Vec::new();
    let start = Instant::now();
    while got.len() < want.len() {
        assert!(start.elapsed() < EFFECT_DEADLINE, "consumed {got:?}");
        use rdkafka::Message;
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => got.push(m.payload().unwrap_or_default().to_vec()),
            Some(Err(e)) if common::is_transient(&e) => {}
            Some(Err(e)) => panic!("consume: {e}"),
            None => {}
        }
    }
    assert_eq!(got, want);
}

/// `segment.ms` rolls the active segment once it is that old, at the
/// next append (as in Kafka).
#[test]
fn segment_ms_rolls_segments_by_time() {
    let broker = Broker::start(1, &[]);
    let mut raw = Raw::connect(broker.addr());
    create_ok(&mut raw, "timed", &[("segment.ms", "300")]);
    create_ok(&mut raw, "untimed", &[]);
    let dir = broker.partition_dir("timed", 0);
    wait_for("a time-based roll", || {
        produce_ok(&mut raw, "timed", batch(&[Some(b"k")]));
        produce_ok(&mut raw, "untimed", batch(&[Some(b"k")]));
        files_ending(&dir, ".log").len() >= 3
    });
    let untimed = broker.partition_dir("untimed", 0);
    assert_eq!(files_ending(&untimed, ".log").len(), 1);
}

/// `segment.index.bytes` bounds a segment's indexes: with an index
/// entry per batch (`index.interval.bytes=0`), a segment rolls once its
/// offset or time index is full.
#[test]
fn segment_index_bytes_rolls_segments_with_full_indexes() {
    let broker = Broker::start(1, &[]);
    let mut raw = Raw::connect(broker.addr());
    let every_batch = ("index.interval.bytes", "0");
    create_ok(
        &mut raw,
        "small-index",
        &[every_batch, ("segment.index.bytes", "96")],
    );
    create_ok(&mut raw, "default-index", &[every_batch]);
    let start = now_ms();
    for i in 0..40 {
        let b = batch_at(start + i, &[Some(b"k")]).finish();
        produce_ok(&mut raw, "small-index", b.clone());
        produce_ok(&mut raw, "default-index", b);
    }
    let small = broker.partition_dir("small-index", 0);
    let segments = files_ending(&small, ".log").len();
    // 96 bytes: 8 time-index entries of 12 bytes, 12 offset entries of 8.
    assert!(segments >= 4, "{segments} segments");
    let default = broker.partition_dir("default-index", 0);
    assert_eq!(files_ending(&default, ".log").len(), 1);
    // Every record is still there, in order.
    let mut next = 0;
    while next < 40 {
        let got = batches(&common::fetch_partition_0(&mut raw, "small-index", next));
        assert!(!got.is_empty());
        for (h, _) in got {
            assert_eq!(h.base_offset.0, next);
            next = h.next_offset().0;
        }
    }
}

/// Retention runs every `log.retention.check.interval.ms` (the default,
/// as Kafka's, is five minutes, past this test's deadline), deleting
/// segments whose records are older than `retention.ms`, and the oldest
/// while a partition holds more than `retention.bytes`. A deleted
/// segment's files are renamed `.deleted` and removed after
/// `file.delete.delay.ms`; files a stopped broker left are removed when
/// it starts again.
#[test]
fn retention_check_interval_and_file_delete_delay() {
    let mut broker = Broker::start(1, &["log.retention.check.interval.ms=200"]);
    let mut raw = Raw::connect(broker.addr());
    let old = ("retention.ms", "60000");
    let small = ("segment.bytes", "300");
    let kept = [old, small, ("file.delete.delay.ms", "3600000")];
    let brief = [old, small, ("file.delete.delay.ms", "300")];
    create_ok(&mut raw, "kept", &kept);
    create_ok(&mut raw, "brief", &brief);
    // By size: records of now, but more than retention.bytes of them.
    let sized = [
        small,
        ("retention.bytes", "400"),
        ("file.delete.delay.ms", "0"),
    ];
    create_ok(&mut raw, "sized", &sized);
    for _ in 0..5 {
        produce_ok(&mut raw, "sized", batch(&[Some(b"k")]));
    }
    wait_for("retention of sized", || {
        list_offset(&mut raw, "sized", -2) >= 2
    });
    // An hour old: past retention as soon as the segment is sealed.
    let hour_ago = now_ms() - 3_600_000;
    for name in ["kept", "brief"] {
        for i in 0..4 {
            produce_ok(
                &mut raw,
                name,
                batch_at(hour_ago + i, &[Some(b"k")]).finish(),
            );
        }
        produce_ok(&mut raw, name, batch(&[Some(b"fresh")]));
    }
    for name in ["kept", "brief"] {
        wait_for(&format!("retention of {name}"), || {
            list_offset(&mut raw, name, -2) == 4
        });
    }
    let kept_dir = broker.partition_dir("kept", 0);
    let renamed = files_ending(&kept_dir, ".log.deleted");
    assert_eq!(renamed.len(), 4, "{renamed:?}");
    assert!(renamed.contains(&"00000000000000000000.log.deleted".to_string()));
    assert_eq!(
        files_ending(&kept_dir, ".log"),
        vec!["00000000000000000004.log".to_string()]
    );
    let brief_dir = broker.partition_dir("brief", 0);
    wait_for("removal after file.delete.delay.ms", || {
        files_ending(&brief_dir, ".deleted").is_empty()
    });
    assert_eq!(files_ending(&brief_dir, ".log").len(), 1);
    assert!(!files_ending(&kept_dir, ".deleted").is_empty());

    broker.stop();
    broker.restart();
    assert!(files_ending(&kept_dir, ".deleted").is_empty());
    let mut raw = Raw::connect(broker.addr());
    assert_eq!(list_offset(&mut raw, "kept", -2), 4);
    assert_eq!(list_offset(&mut raw, "kept", -1), 5);
}

/// `delete.topic.enable=false` refuses DeleteTopics (POLICY_VIOLATION)
/// and the topic stays.
#[test]
fn delete_topic_enable_false_keeps_topics() {
    let broker = Broker::start(1, &["delete.topic.enable=false"]);
    let mut raw = Raw::connect(broker.addr());
    create_ok(&mut raw, "stays", &[]);
    let req = DeleteTopicsRequest::default()
        .with_timeout_ms(30_000)
        .with_topic_names(vec![topic("stays")]);
    let resp: DeleteTopicsResponse = call(&mut raw, ApiKey::DeleteTopics, 4, &req).expect("answer");
    assert_eq!(resp.responses[0].error_code, 44, "POLICY_VIOLATION");
    produce_ok(&mut raw, "stays", batch(&[Some(b"k")]));
}

/// A scrape of the metrics listener on `port`.
fn scrape(port: u16) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("metrics listener");
    s.set_read_timeout(Some(EFFECT_DEADLINE)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// `metrics.partition.level=true` adds per-partition traffic counters
/// to the scrape; without it there are only per-topic ones.
#[test]
fn metrics_partition_level_adds_partition_counters() {
    for per_partition in [true, false] {
        let port = common::free_port();
        let broker = Broker::start(
            1,
            &[
                &format!("metrics.listener=127.0.0.1:{port}"),
                &format!("metrics.partition.level={per_partition}"),
            ],
        );
        let mut raw = Raw::connect(broker.addr());
        create_ok(&mut raw, "m", &[]);
        produce_ok(&mut raw, "m", batch(&[Some(b"k")]));
        let mut body = String::new();
        wait_for("the produce in a scrape", || {
            body = scrape(port);
            body.lines().any(|l| {
                l.starts_with("sluice_topic_messages_in_total{topic=\"m\"}")
                    && l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) >= Some(1.0)
            })
        });
        let has_partition_rows = body
            .lines()
            .any(|l| l.starts_with("sluice_partition_messages_in_total{"));
        assert_eq!(has_partition_rows, per_partition, "{body}");
    }
}

/// A partition's recovery point in the broker's checkpoint file (0
/// where it has none).
fn recovery_point(broker: &Broker, topic: &str) -> i64 {
    let path = broker.data_dir.join("recovery-point-offset-checkpoint");
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .skip(2)
        .filter_map(|l| match l.split_whitespace().collect::<Vec<_>>()[..] {
            [t, "0", o] if t == topic => o.parse().ok(),
            _ => None,
        })
        .next()
        .unwrap_or(0)
}

/// `flush.ms` syncs a partition once its last flush is that old, checked
/// every `log.flush.scheduler.interval.ms`; the synced offset reaches the
/// recovery-point checkpoint every
/// `log.flush.offset.checkpoint.interval.ms`. A partition without a flush
/// policy stays unsynced (its recovery point 0) while the broker runs.
#[test]
fn flush_ms_syncs_and_the_checkpoint_records_it() {
    let broker = Broker::start(
        1,
        &[
            "log.flush.scheduler.interval.ms=100",
            "log.flush.offset.checkpoint.interval.ms=200",
        ],
    );
    let mut raw = Raw::connect(broker.addr());
    create_ok(&mut raw, "flushed", &[("flush.ms", "100")]);
    create_ok(&mut raw, "unflushed", &[]);
    produce_ok(&mut raw, "flushed", batch(&[Some(b"k")]));
    produce_ok(&mut raw, "unflushed", batch(&[Some(b"k")]));
    wait_for("the flushed partition's recovery point", || {
        recovery_point(&broker, "flushed") == 1
    });
    assert_eq!(recovery_point(&broker, "unflushed"), 0);
}

/// `group.max.size` caps a classic group's members: with 1, a second
/// consumer's JoinGroup gets GROUP_MAX_SIZE_REACHED while the first
/// (waiting to rejoin with its member id) counts.
#[test]
fn group_max_size_caps_a_group() {
    let broker = Broker::start(1, &["group.max.size=1"]);
    let mut raw = Raw::connect(broker.addr());
    let join = |raw: &mut Raw, member: &str| -> (i16, String) {
        let req = JoinGroupRequest::default()
            .with_group_id(GroupId(text("capped")))
            .with_session_timeout_ms(10_000)
            .with_rebalance_timeout_ms(10_000)
            .with_member_id(text(member))
            .with_protocol_type(text("consumer"))
            .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default(
            )
            .with_name(text("range"))
            .with_metadata(Bytes::from_static(b"\0\0\0\0\0\0"))]);
        let resp: JoinGroupResponse = call(raw, ApiKey::JoinGroup, 7, &req).expect("answer");
        (resp.error_code, resp.member_id.to_string())
    };
    let (code, _) = join(&mut raw, "");
    assert_eq!(code, 79, "MEMBER_ID_REQUIRED");
    let mut second = Raw::connect(broker.addr());
    let (code, _) = join(&mut second, "");
    assert_eq!(code, 81, "GROUP_MAX_SIZE_REACHED");
}
