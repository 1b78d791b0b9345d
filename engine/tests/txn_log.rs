//! The partition side of transactions, with the test acting as the
//! transaction coordinator by hand: transactional batches produced under
//! a producer id from InitProducerId, COMMIT and ABORT markers written
//! with WriteTxnMarkers, and what read_committed readers then see
//! (Fetch's last stable offset and aborted transactions, ListOffsets),
//! across kill -9, lost index files and a leader's death. librdkafka's
//! read_committed consumer is the judge of the filtering.

mod common;

use bytes::Bytes;
use common::{call, create_topic, new_producer_id, Broker, Raw, READY_DEADLINE};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use sluice_protocol::compression::compress;
use sluice_protocol::record_batch::{
    decode_records, BatchBuilder, BatchHeader, Compression, BATCH_HEADER_SIZE,
};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const TXN_ID: &str = "txn-by-hand";
/// These transactions are made by hand, markers included, with no
/// transaction coordinator to verify them with.
const UNVERIFIED: &str = "transaction.partition.verification.enable=false";

fn topic(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

/// A transactional batch of `values` from producer `pid`.
fn txn_batch(pid: i64, epoch: i16, seq: i32, values: &[&str]) -> Vec<u8> {
    txn_batch_with(Compression::None, pid, epoch, seq, values)
}

/// [`txn_batch`] compressed with `codec`.
fn txn_batch_with(codec: Compression, pid: i64, epoch: i16, seq: i32, values: &[&str]) -> Vec<u8> {
    let mut b = BatchBuilder::new(1_000)
        .producer(pid, epoch, seq)
        .transactional();
    for v in values {
        b.push(1_000, None, Some(v.as_bytes()), &[]);
    }
    let mut payload = Vec::new();
    compress(codec, b.records(), &mut payload).unwrap();
    b.finish_with(codec, &payload)
}

/// Produces `batch` to `name`-`partition`; (error code, base offset).
fn produce(
    raw: &mut Raw,
    name: &str,
    partition: i32,
    transactional_id: Option<&str>,
    batch: Vec<u8>,
) -> (i16, i64) {
    let req = ProduceRequest::default()
        .with_transactional_id(
            transactional_id.map(|t| TransactionalId(StrBytes::from_string(t.into()))),
        )
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic(name))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(Bytes::from(batch)))])]);
    let resp: ProduceResponse = call(raw, ApiKey::Produce, 9, &req).expect("Produce answer");
    let p = &resp.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

/// Writes one marker for `partitions` of `name`; each partition's error.
fn marker(
    raw: &mut Raw,
    pid: i64,
    epoch: i16,
    commit: bool,
    coordinator_epoch: i32,
    name: &str,
    partitions: &[i32],
) -> Vec<i16> {
    let req = WriteTxnMarkersRequest::default().with_markers(vec![WritableTxnMarker::default()
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(epoch)
        .with_transaction_result(commit)
        .with_coordinator_epoch(coordinator_epoch)
        .with_topics(vec![WritableTxnMarkerTopic::default()
            .with_name(topic(name))
            .with_partition_indexes(partitions.to_vec())])]);
    let resp: WriteTxnMarkersResponse =
        call(raw, ApiKey::WriteTxnMarkers, 1, &req).expect("WriteTxnMarkers answer");
    assert_eq!(resp.markers.len(), 1);
    assert_eq!(resp.markers[0].producer_id.0, pid);
    resp.markers[0].topics[0]
        .partitions
        .iter()
        .map(|p| p.error_code)
        .collect()
}

/// One partition's Fetch answer, its records decoded.
#[derive(Debug)]
struct Fetched {
    error: i16,
    high_watermark: i64,
    last_stable: i64,
    aborted: Option<Vec<(i64, i64)>>,
    /// (offset, value) of each data record.
    values: Vec<(i64, String)>,
    /// Offsets of the control batches (markers).
    markers: Vec<i64>,
}

fn fetch(raw: &mut Raw, name: &str, offset: i64, isolation: i8, version: i16) -> Fetched {
    fetch_waiting(raw, name, offset, isolation, version, 0)
}

/// [`fetch`] parking up to `max_wait_ms` for data.
fn fetch_waiting(
    raw: &mut Raw,
    name: &str,
    offset: i64,
    isolation: i8,
    version: i16,
    max_wait_ms: i32,
) -> Fetched {
    let req = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_isolation_level(isolation)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(topic(name))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1 << 20)])]);
    let resp: FetchResponse = call(raw, ApiKey::Fetch, version, &req).expect("Fetch answer");
    let p = &resp.responses[0].partitions[0];
    let (values, markers) = decode(p.records.as_deref().unwrap_or_default());
    Fetched {
        error: p.error_code,
        high_watermark: p.high_watermark,
        last_stable: p.last_stable_offset,
        aborted: p.aborted_transactions.as_ref().map(|list| {
            list.iter()
                .map(|a| (a.producer_id.0, a.first_offset))
                .collect()
        }),
        values,
        markers,
    }
}

fn decode(mut records: &[u8]) -> (Vec<(i64, String)>, Vec<i64>) {
    let (mut values, mut markers) = (Vec::new(), Vec::new());
    while let Some(h) = BatchHeader::parse(records) {
        if h.total_size() > records.len() {
            break;
        }
        if h.is_control() {
            markers.push(h.base_offset.0);
        } else {
            let section = &records[BATCH_HEADER_SIZE..h.total_size()];
            for r in decode_records(section, h.records_count as usize).unwrap() {
                let v = String::from_utf8(r.value.unwrap().to_vec()).unwrap();
                values.push((h.base_offset.0 + i64::from(r.offset_delta), v));
            }
        }
        records = &records[h.total_size()..];
    }
    (values, markers)
}

/// ListOffsets latest (-1) for partition 0 with `isolation`.
fn latest(raw: &mut Raw, name: &str, isolation: i8) -> i64 {
    list_offset(raw, name, isolation, -1)
}

/// ListOffsets for partition 0 with `isolation`: the offset answered for
/// `timestamp`.
fn list_offset(raw: &mut Raw, name: &str, isolation: i8, timestamp: i64) -> i64 {
    let req = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_isolation_level(isolation)
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(topic(name))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_timestamp(timestamp)])]);
    let resp: ListOffsetsResponse =
        call(raw, ApiKey::ListOffsets, 7, &req).expect("ListOffsets answer");
    let p = &resp.topics[0].partitions[0];
    assert_eq!(p.error_code, 0);
    p.offset
}

fn values(f: &Fetched) -> Vec<&str> {
    f.values.iter().map(|(_, v)| v.as_str()).collect()
}

/// The coordinator's round by hand on one broker: data inside an open
/// transaction stays invisible to read_committed readers until its
/// COMMIT; an ABORTed one is returned with `aborted_transactions` naming
/// it; read_uncommitted readers see everything with no list; the wrong
/// producer or coordinator epoch and a transactional batch without its
/// transactional id are refused with Kafka's codes.
#[test]
fn a_coordinator_by_hand_commits_and_aborts_and_read_committed_follows() {
    let broker = Broker::start(2, &[UNVERIFIED]);
    create_topic(&broker, "tx", 1);
    let mut raw = Raw::connect(broker.addr());
    let pid = new_producer_id(broker.addr());

    // Transaction 1: two batches, open.
    let (code, base) = produce(
        &mut raw,
        "tx",
        0,
        Some(TXN_ID),
        txn_batch(pid, 0, 0, &["c1", "c2"]),
    );
    assert_eq!((code, base), (0, 0));
    let (code, base) = produce(
        &mut raw,
        "tx",
        0,
        Some(TXN_ID),
        txn_batch(pid, 0, 2, &["c3"]),
    );
    assert_eq!((code, base), (0, 2));
    let f = fetch(&mut raw, "tx", 0, 1, 12);
    assert_eq!(
        (f.error, f.high_watermark, f.last_stable),
        (0, 3, 0),
        "{f:?}"
    );
    assert!(f.values.is_empty(), "{f:?}");
    assert_eq!(latest(&mut raw, "tx", 1), 0);
    assert_eq!(latest(&mut raw, "tx", 0), 3);
    // By timestamp: the first record is past the last stable offset.
    assert_eq!(list_offset(&mut raw, "tx", 1, 0), -1);
    assert_eq!(list_offset(&mut raw, "tx", 0, 0), 0);
    // read_uncommitted sees it, with the last stable offset but no list.
    let f = fetch(&mut raw, "tx", 0, 0, 12);
    assert_eq!(values(&f), ["c1", "c2", "c3"]);
    assert_eq!((f.last_stable, f.aborted.clone()), (0, None), "{f:?}");

    // COMMIT: marker at 3, everything below 4 stable.
    assert_eq!(marker(&mut raw, pid, 0, true, 0, "tx", &[0]), [0]);
    let f = fetch(&mut raw, "tx", 0, 1, 12);
    assert_eq!((f.high_watermark, f.last_stable), (4, 4), "{f:?}");
    assert_eq!(values(&f), ["c1", "c2", "c3"]);
    assert_eq!(f.markers, [3]);
    assert_eq!(f.aborted, Some(vec![]));
    assert_eq!(latest(&mut raw, "tx", 1), 4);
    assert_eq!(list_offset(&mut raw, "tx", 1, 0), 0);

    // Transaction 2, ABORTed: returned, named in the list.
    let (code, base) = produce(
        &mut raw,
        "tx",
        0,
        Some(TXN_ID),
        txn_batch(pid, 0, 3, &["a1", "a2"]),
    );
    assert_eq!((code, base), (0, 4));
    assert_eq!(marker(&mut raw, pid, 0, false, 0, "tx", &[0]), [0]);
    for version in [4, 11, 12] {
        let f = fetch(&mut raw, "tx", 0, 1, version);
        assert_eq!(f.last_stable, 7, "v{version}: {f:?}");
        assert_eq!(f.aborted, Some(vec![(pid, 4)]), "v{version}");
        assert_eq!(values(&f), ["c1", "c2", "c3", "a1", "a2"], "v{version}");
    }
    // A fetch past the aborted data does not name it.
    let f = fetch(&mut raw, "tx", 7, 1, 12);
    assert_eq!(f.aborted, Some(vec![]), "{f:?}");

    // Bad input: a transactional batch without its transactional id, or
    // without a sequence.
    let (code, _) = produce(&mut raw, "tx", 0, None, txn_batch(pid, 0, 5, &["x"]));
    assert_eq!(code, 53, "TRANSACTIONAL_ID_AUTHORIZATION_FAILED");
    let (code, _) = produce(
        &mut raw,
        "tx",
        0,
        Some(TXN_ID),
        txn_batch(pid, 0, -1, &["x"]),
    );
    assert_eq!(code, 87, "INVALID_RECORD");
    // A marker of an older producer epoch, of an older coordinator
    // epoch, for a partition that does not exist.
    let other = new_producer_id(broker.addr());
    let (code, _) = produce(
        &mut raw,
        "tx",
        0,
        Some(TXN_ID),
        txn_batch(other, 5, 0, &["o"]),
    );
    assert_eq!(code, 0);
    assert_eq!(
        marker(&mut raw, other, 4, false, 3, "tx", &[0]),
        [47],
        "INVALID_PRODUCER_EPOCH"
    );
    assert_eq!(marker(&mut raw, other, 5, false, 3, "tx", &[0]), [0]);
    assert_eq!(
        marker(&mut raw, other, 5, false, 2, "tx", &[0]),
        [52],
        "TRANSACTION_COORDINATOR_FENCED"
    );
    assert_eq!(marker(&mut raw, other, 5, true, 3, "tx", &[0, 9]), [0, 3]);
    assert_eq!(marker(&mut raw, other, 5, true, 3, "nope", &[0]), [3]);
    // Refused markers changed nothing: the stable offset is the log end.
    let f = fetch(&mut raw, "tx", 0, 1, 12);
    assert_eq!((f.high_watermark, f.last_stable), (10, 10), "{f:?}");
    assert_eq!(f.markers, [3, 6, 8, 9]);

    // DescribeProducers: both producers, the last markers' epochs, and an
    // open transaction's start.
    let (code, base) = produce(
        &mut raw,
        "tx",
        0,
        Some(TXN_ID),
        txn_batch(pid, 0, 5, &["open"]),
    );
    assert_eq!((code, base), (0, 10));
    let req = DescribeProducersRequest::default().with_topics(vec![
        describe_producers_request::TopicRequest::default()
            .with_name(topic("tx"))
            .with_partition_indexes(vec![0, 7]),
    ]);
    let resp: DescribeProducersResponse =
        call(&mut raw, ApiKey::DescribeProducers, 0, &req).expect("DescribeProducers answer");
    let parts = &resp.topics[0].partitions;
    assert_eq!(parts[1].error_code, 3, "no partition 7");
    assert_eq!(parts[0].error_code, 0);
    let mut seen: Vec<(i64, i32, i32, i32, i64)> = parts[0]
        .active_producers
        .iter()
        .map(|p| {
            let txn = p.current_txn_start_offset;
            (
                p.producer_id.0,
                p.producer_epoch,
                p.last_sequence,
                p.coordinator_epoch,
                txn,
            )
        })
        .collect();
    seen.sort();
    let mut want = vec![(pid, 0, 5, 0, 10), (other, 5, 0, 3, -1)];
    want.sort();
    assert_eq!(seen, want);
}

/// A read_committed fetch parked on an open transaction is answered
/// with the records once their COMMIT makes them stable, not at its
/// 30 s deadline with nothing (it is woken when the last stable offset
/// moves; were it not, the answer would be empty).
#[test]
fn a_parked_read_committed_fetch_wakes_on_the_commit() {
    let broker = Broker::start(1, &[UNVERIFIED]);
    create_topic(&broker, "tx", 1);
    let pid = new_producer_id(broker.addr());
    let mut raw = Raw::connect(broker.addr());
    let batch = txn_batch(pid, 0, 0, &["t1", "t2"]);
    assert_eq!(produce(&mut raw, "tx", 0, Some(TXN_ID), batch), (0, 0));
    let addr = broker.addr();
    let parked = std::thread::spawn(move || {
        let mut raw = Raw::connect(addr);
        fetch_waiting(&mut raw, "tx", 0, 1, 12, 30_000)
    });
    assert_eq!(marker(&mut raw, pid, 0, true, 0, "tx", &[0]), [0]);
    let f = parked.join().unwrap();
    assert_eq!(values(&f), ["t1", "t2"], "{f:?}");
    assert_eq!(f.last_stable, 3);
}

/// A broker killed with a transaction open comes back with the last
/// stable offset still at its first batch; a lost `.txnindex` and lost
/// producer snapshots are rebuilt from the log, so a read_committed
/// reader is told the same aborted transactions as before.
#[test]
fn an_open_transaction_survives_kill_9_and_lost_indexes_are_rebuilt() {
    let mut broker = Broker::start(1, &[UNVERIFIED]);
    create_topic(&broker, "tx", 1);
    let pid = new_producer_id(broker.addr());
    let mut raw = Raw::connect(broker.addr());
    produce(
        &mut raw,
        "tx",
        0,
        Some(TXN_ID),
        txn_batch(pid, 0, 0, &["a1"]),
    );
    assert_eq!(marker(&mut raw, pid, 0, false, 0, "tx", &[0]), [0]);
    let (code, base) = produce(
        &mut raw,
        "tx",
        0,
        Some(TXN_ID),
        txn_batch(pid, 0, 1, &["o1"]),
    );
    assert_eq!((code, base), (0, 2));
    let before = fetch(&mut raw, "tx", 0, 1, 12);
    assert_eq!(before.last_stable, 2);
    assert_eq!(before.aborted, Some(vec![(pid, 0)]));
    drop(raw);

    broker.kill9();
    broker.restart();
    let mut raw = Raw::connect(broker.addr());
    assert_eq!(
        latest(&mut raw, "tx", 1),
        2,
        "the open transaction is still open"
    );
    let f = fetch(&mut raw, "tx", 0, 1, 12);
    assert_eq!((f.last_stable, &f.aborted), (2, &before.aborted), "{f:?}");
    // The open transaction ends with ABORT; a clean stop writes a
    // producer snapshot.
    assert_eq!(marker(&mut raw, pid, 0, false, 0, "tx", &[0]), [0]);
    drop(raw);
    broker.stop();
    let dir = broker.partition_dir("tx", 0);
    let names = |ext: &str| -> Vec<std::path::PathBuf> {
        std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == ext))
            .collect()
    };
    let indexes = names("txnindex");
    assert_eq!(indexes.len(), 1);
    assert_eq!(std::fs::metadata(&indexes[0]).unwrap().len(), 2 * 34);
    assert!(
        !names("snapshot").is_empty(),
        "a clean stop writes a snapshot"
    );

    // Lost: the index and every snapshot.
    for p in names("txnindex").into_iter().chain(names("snapshot")) {
        std::fs::remove_file(p).unwrap();
    }
    broker.restart();
    let mut raw = Raw::connect(broker.addr());
    let f = fetch(&mut raw, "tx", 0, 1, 12);
    assert_eq!(f.last_stable, 4, "{f:?}");
    assert_eq!(f.aborted, Some(vec![(pid, 0), (pid, 2)]));
    assert_eq!(values(&f), ["a1", "o1"]);

    // Torn: the index loses half its last entry in an unclean stop.
    broker.kill9();
    let index = &names("txnindex")[0];
    let f = std::fs::OpenOptions::new().write(true).open(index).unwrap();
    f.set_len(34 + 17).unwrap();
    drop(f);
    broker.restart();
    let mut raw = Raw::connect(broker.addr());
    let f = fetch(&mut raw, "tx", 0, 1, 12);
    assert_eq!(f.aborted, Some(vec![(pid, 0), (pid, 2)]), "{f:?}");
}

/// librdkafka's read_committed consumer judges the filtering: with two
/// producers interleaving committed and aborted transactions by hand,
/// in batches of every codec, it reads exactly the committed records; a
/// read_uncommitted consumer reads them all.
#[test]
fn librdkafka_read_committed_reads_only_committed_records() {
    let broker = Broker::start(2, &[UNVERIFIED]);
    let codecs = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];
    for codec in codecs {
        let name = format!("tx-{codec:?}").to_lowercase();
        create_topic(&broker, &name, 1);
        let mut raw = Raw::connect(broker.addr());
        let (a, b) = (
            new_producer_id(broker.addr()),
            new_producer_id(broker.addr()),
        );
        let p = |raw: &mut Raw, pid, seq, vs: &[&str]| {
            let batch = txn_batch_with(codec, pid, 0, seq, vs);
            assert_eq!(produce(raw, &name, 0, Some(TXN_ID), batch).0, 0);
        };
        let m = |raw: &mut Raw, pid, commit| {
            assert_eq!(marker(raw, pid, 0, commit, 0, &name, &[0]), [0]);
        };
        p(&mut raw, a, 0, &["a-aborted-1", "a-aborted-2"]);
        p(&mut raw, b, 0, &["b-committed-1"]);
        p(&mut raw, a, 2, &["a-aborted-3"]);
        m(&mut raw, a, false);
        p(&mut raw, b, 1, &["b-committed-2"]);
        p(&mut raw, a, 3, &["a-committed-1"]);
        m(&mut raw, b, true);
        p(&mut raw, b, 2, &["b-aborted-1"]);
        m(&mut raw, a, true);
        m(&mut raw, b, false);
        p(&mut raw, a, 4, &["end"]);
        m(&mut raw, a, true);

        let committed = consume_to_end(&broker, &name, "read_committed");
        assert_eq!(
            committed,
            ["b-committed-1", "b-committed-2", "a-committed-1", "end"],
            "{codec:?}"
        );
        let all = consume_to_end(&broker, &name, "read_uncommitted");
        assert_eq!(all.len(), 8, "{codec:?}: {all:?}");
    }
}

/// Every value up to and including "end", read from the start.
fn consume_to_end(broker: &Broker, name: &str, isolation: &str) -> Vec<String> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::Message;
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", "unused")
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .create()
        .expect("consumer");
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(name, 0, rdkafka::Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + READY_DEADLINE;
    let mut seen = Vec::new();
    while seen.last().map(String::as_str) != Some("end") {
        assert!(Instant::now() < deadline, "{isolation}: read only {seen:?}");
        if let Some(m) = common::poll_message(&consumer, || broker.log()) {
            seen.push(String::from_utf8(m.payload().unwrap().to_vec()).unwrap());
        }
    }
    seen
}

/// Three brokers: the leader holds an aborted transaction and an open
/// one, replicated, and dies. The follower promoted in its place learned
/// both from the batches it copied: it answers the same last stable
/// offset and the same aborted list, and takes the open one's marker.
#[test]
fn a_promoted_follower_keeps_the_last_stable_offset_and_the_aborted_list() {
    use sluice_engine::cluster::local::LocalCluster;
    let dir = tempfile::tempdir().unwrap();
    let mut spec = common::cluster_spec(dir.path(), 3);
    spec.overrides = vec![
        "broker.session.timeout.ms=4000".into(),
        "broker.heartbeat.interval.ms=300".into(),
        UNVERIFIED.into(),
    ];
    let mut c = LocalCluster::start(spec, READY_DEADLINE).expect("cluster starts");
    let ports = c.spec.ports.clone();
    let addr = |node: usize| SocketAddr::from(([127, 0, 0, 1], ports[node - 1]));
    create_replicated(&c.bootstrap(), "tx");
    let leader = wait_leader(addr(1), "tx", |l, isr| l > 0 && isr == 3);
    let mut raw = Raw::connect(addr(leader));
    let pid = new_producer_id(addr(leader));
    let p = |raw: &mut Raw, seq, vs: &[&str]| {
        assert_eq!(
            produce(raw, "tx", 0, Some(TXN_ID), txn_batch(pid, 0, seq, vs)).0,
            0
        );
    };
    p(&mut raw, 0, &["a1", "a2"]);
    assert_eq!(marker(&mut raw, pid, 0, false, 0, "tx", &[0]), [0]);
    p(&mut raw, 2, &["o1"]);
    let before = fetch(&mut raw, "tx", 0, 1, 12);
    assert_eq!(
        (before.high_watermark, before.last_stable),
        (4, 3),
        "{before:?}"
    );
    assert_eq!(before.aborted, Some(vec![(pid, 0)]));
    drop(raw);

    c.kill(leader);
    let probe = if leader == 1 { 2 } else { 1 };
    let promoted = wait_leader(addr(probe), "tx", |l, _| l > 0 && l as usize != leader);
    let mut raw = Raw::connect(addr(promoted));
    let deadline = Instant::now() + READY_DEADLINE;
    let after = loop {
        let f = fetch(&mut raw, "tx", 0, 1, 12);
        if f.error == 0 && f.high_watermark == 4 {
            break f;
        }
        assert!(
            Instant::now() < deadline,
            "the new leader never served: {f:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(after.last_stable, 3, "{after:?}");
    assert_eq!(after.aborted, before.aborted);
    assert_eq!(latest(&mut raw, "tx", 1), 3);
    // The open transaction ends on the new leader.
    assert_eq!(marker(&mut raw, pid, 0, true, 0, "tx", &[0]), [0]);
    let f = fetch(&mut raw, "tx", 0, 1, 12);
    assert_eq!(f.last_stable, 5, "{f:?}");
    assert_eq!(values(&f), ["a1", "a2", "o1"]);
}

fn create_replicated(bootstrap: &str, name: &str) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client");
    let new = NewTopic::new(name, 1, TopicReplication::Fixed(3)).set("min.insync.replicas", "2");
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = futures::executor::block_on(admin.create_topics([&new], &options)).unwrap();
    for r in results {
        r.unwrap();
    }
}

/// Waits until `check(leader, isr size)` holds for partition 0 of `name`
/// in `addr`'s Metadata; returns the leader.
fn wait_leader(addr: SocketAddr, name: &str, check: impl Fn(i32, usize) -> bool) -> usize {
    let deadline = Instant::now() + READY_DEADLINE;
    loop {
        let req = MetadataRequest::default().with_topics(Some(vec![
            metadata_request::MetadataRequestTopic::default().with_name(Some(topic(name))),
        ]));
        let mut raw = Raw::connect(addr);
        let m: MetadataResponse = call(&mut raw, ApiKey::Metadata, 12, &req).expect("Metadata");
        if let Some(p) = m.topics.first().and_then(|t| t.partitions.first()) {
            if check(p.leader_id.0, p.isr_nodes.len()) {
                return p.leader_id.0 as usize;
            }
        }
        assert!(
            Instant::now() < deadline,
            "partition 0 of {name} never settled: {m:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
