//! Offsets committed inside transactions, by hand: TxnOffsetCommit keeps
//! them pending (OffsetFetch shows the group's earlier offsets, and
//! UNSTABLE_OFFSET_COMMIT with `require_stable`) until a COMMIT marker
//! reaches the group's `__consumer_offsets` partition; an ABORT marker
//! drops them; a restart replays both from the log, also after the
//! offsets partition is compacted. Bad requests get Kafka's codes and
//! change nothing.

mod common;

use common::{call, create_topic, new_producer_id, segment_files, Broker, Raw};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use sluice_protocol::ErrorCode;
use std::time::{Duration, Instant};

const GROUP: &str = "txn-group";
const TOPIC: &str = "orders";
/// One offsets partition, so the group's is 0.
const OFFSETS_PARTITIONS: &str = "offsets.topic.num.partitions=1";
/// These transactions are made by hand, markers included, with no
/// transaction coordinator to verify them with.
const UNVERIFIED: &str = "transaction.partition.verification.enable=false";

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn code(c: i16) -> ErrorCode {
    ErrorCode::from_code(c)
}

/// A TxnOffsetCommit v3 of `offsets` (partition, offset) of TOPIC;
/// returns each partition's code.
fn txn_commit(
    raw: &mut Raw,
    producer: (i64, i16),
    member: (&str, i32),
    offsets: &[(i32, i64)],
) -> Vec<ErrorCode> {
    let partitions = offsets
        .iter()
        .map(|&(p, o)| {
            TxnOffsetCommitRequestPartition::default()
                .with_partition_index(p)
                .with_committed_offset(o)
                .with_committed_leader_epoch(-1)
                .with_committed_metadata(Some(s("txn")))
        })
        .collect();
    let req = TxnOffsetCommitRequest::default()
        .with_transactional_id(TransactionalId(s("tx-1")))
        .with_group_id(GroupId(s(GROUP)))
        .with_producer_id(ProducerId(producer.0))
        .with_producer_epoch(producer.1)
        .with_member_id(s(member.0))
        .with_generation_id(member.1)
        .with_topics(vec![TxnOffsetCommitRequestTopic::default()
            .with_name(TopicName(s(TOPIC)))
            .with_partitions(partitions)]);
    let resp: TxnOffsetCommitResponse =
        call(raw, ApiKey::TxnOffsetCommit, 3, &req).expect("TxnOffsetCommit answer");
    resp.topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| code(p.error_code)))
        .collect()
}

/// A plain OffsetCommit by no member (a group that only stores offsets).
fn commit(raw: &mut Raw, partition: i32, offset: i64) {
    let req = OffsetCommitRequest::default()
        .with_group_id(GroupId(s(GROUP)))
        .with_generation_id_or_member_epoch(-1)
        .with_member_id(s(""))
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(s(TOPIC)))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(partition)
                .with_committed_offset(offset)])]);
    let resp: OffsetCommitResponse =
        call(raw, ApiKey::OffsetCommit, 8, &req).expect("OffsetCommit answer");
    assert_eq!(resp.topics[0].partitions[0].error_code, 0);
}

/// OffsetFetch v7 of TOPIC's partitions 0 and 1: (offset, code) each.
fn fetch(raw: &mut Raw, require_stable: bool) -> Vec<(i64, ErrorCode)> {
    let req = OffsetFetchRequest::default()
        .with_group_id(GroupId(s(GROUP)))
        .with_require_stable(require_stable)
        .with_topics(Some(vec![OffsetFetchRequestTopic::default()
            .with_name(TopicName(s(TOPIC)))
            .with_partition_indexes(vec![0, 1])]));
    let resp: OffsetFetchResponse =
        call(raw, ApiKey::OffsetFetch, 7, &req).expect("OffsetFetch answer");
    assert_eq!(resp.error_code, 0);
    resp.topics[0]
        .partitions
        .iter()
        .map(|p| (p.committed_offset, code(p.error_code)))
        .collect()
}

/// Writes the transaction's marker to the group's offsets partition, as
/// the transaction coordinator does.
fn marker(raw: &mut Raw, producer: (i64, i16), commit: bool) {
    let req = WriteTxnMarkersRequest::default().with_markers(vec![WritableTxnMarker::default()
        .with_producer_id(ProducerId(producer.0))
        .with_producer_epoch(producer.1)
        .with_transaction_result(commit)
        .with_coordinator_epoch(0)
        .with_topics(vec![WritableTxnMarkerTopic::default()
            .with_name(TopicName(s("__consumer_offsets")))
            .with_partition_indexes(vec![0])])]);
    let resp: WriteTxnMarkersResponse =
        call(raw, ApiKey::WriteTxnMarkers, 1, &req).expect("WriteTxnMarkers answer");
    for t in &resp.markers[0].topics {
        for p in &t.partitions {
            assert_eq!(code(p.error_code), ErrorCode::None, "marker refused");
        }
    }
}

/// Connects once the broker answers group requests (the offsets topic
/// is created and loaded on first use).
fn ready(broker: &Broker) -> Raw {
    let start = Instant::now();
    loop {
        let mut raw = Raw::connect(broker.addr());
        let req = OffsetFetchRequest::default()
            .with_group_id(GroupId(s(GROUP)))
            .with_topics(None);
        let resp: Option<OffsetFetchResponse> = call(&mut raw, ApiKey::OffsetFetch, 7, &req);
        if resp.is_some_and(|r| r.error_code == 0) {
            return raw;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the group coordinator never answered:\n{}",
            broker.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

const UNSTABLE: ErrorCode = ErrorCode::UnstableOffsetCommit;
const OK: ErrorCode = ErrorCode::None;

#[test]
fn txn_offsets_count_only_once_their_transaction_commits() {
    let mut broker = Broker::start(2, &[OFFSETS_PARTITIONS, UNVERIFIED]);
    create_topic(&broker, TOPIC, 2);
    let mut raw = ready(&broker);
    let producer = (new_producer_id(broker.addr()), 0);
    commit(&mut raw, 0, 5);

    // Pending: invisible, and unstable to a reader that asks.
    let codes = txn_commit(&mut raw, producer, ("", -1), &[(0, 10), (1, 20)]);
    assert_eq!(codes, vec![OK, OK]);
    assert_eq!(fetch(&mut raw, false), vec![(5, OK), (-1, OK)]);
    assert_eq!(fetch(&mut raw, true), vec![(-1, UNSTABLE), (-1, UNSTABLE)]);
    marker(&mut raw, producer, true);
    assert_eq!(fetch(&mut raw, true), vec![(10, OK), (20, OK)]);

    // Aborted: dropped.
    assert_eq!(
        txn_commit(&mut raw, producer, ("", -1), &[(0, 30)]),
        vec![OK]
    );
    marker(&mut raw, producer, false);
    assert_eq!(fetch(&mut raw, true), vec![(10, OK), (20, OK)]);

    // Pending across a kill -9: still pending after the replay, then
    // committed by the marker.
    assert_eq!(
        txn_commit(&mut raw, producer, ("", -1), &[(0, 40)]),
        vec![OK]
    );
    broker.kill9();
    broker.restart();
    let mut raw = ready(&broker);
    assert_eq!(fetch(&mut raw, false), vec![(10, OK), (20, OK)]);
    assert_eq!(fetch(&mut raw, true), vec![(-1, UNSTABLE), (20, OK)]);
    marker(&mut raw, producer, true);
    assert_eq!(fetch(&mut raw, true), vec![(40, OK), (20, OK)]);

    // A plain commit written after a transaction's offset wins over it
    // when the transaction commits later, as in Kafka.
    assert_eq!(
        txn_commit(&mut raw, producer, ("", -1), &[(1, 50)]),
        vec![OK]
    );
    commit(&mut raw, 1, 60);
    marker(&mut raw, producer, true);
    assert_eq!(fetch(&mut raw, true), vec![(40, OK), (60, OK)]);

    // The replay from the log agrees with all of it.
    broker.kill9();
    broker.restart();
    let mut raw = ready(&broker);
    assert_eq!(fetch(&mut raw, true), vec![(40, OK), (60, OK)]);
}

#[test]
fn bad_txn_offset_commits_get_kafka_codes_and_change_nothing() {
    let broker = Broker::start(2, &[OFFSETS_PARTITIONS, UNVERIFIED]);
    create_topic(&broker, TOPIC, 2);
    let mut raw = ready(&broker);
    let producer = (new_producer_id(broker.addr()), 3);

    // A generation for a group that does not exist.
    let codes = txn_commit(&mut raw, producer, ("m", 4), &[(0, 10)]);
    assert_eq!(codes, vec![ErrorCode::IllegalGeneration]);
    // An unknown member of a group that exists (it stores offsets only).
    commit(&mut raw, 0, 5);
    let codes = txn_commit(&mut raw, producer, ("nobody", 1), &[(0, 10)]);
    assert_eq!(codes, vec![ErrorCode::UnknownMemberId]);
    // A partition that does not exist, next to one that does.
    let codes = txn_commit(&mut raw, producer, ("", -1), &[(7, 10), (1, 11)]);
    assert_eq!(codes, vec![ErrorCode::UnknownTopicOrPartition, OK]);
    // An older epoch of a producer with an open transaction here.
    let codes = txn_commit(&mut raw, (producer.0, 2), ("", -1), &[(0, 12)]);
    assert_eq!(codes, vec![ErrorCode::InvalidProducerEpoch]);
    // No producer at all.
    let codes = txn_commit(&mut raw, (-1, -1), ("", -1), &[(0, 13)]);
    assert_eq!(codes, vec![ErrorCode::InvalidRequest]);

    assert_eq!(fetch(&mut raw, false), vec![(5, OK), (-1, OK)]);
    assert_eq!(fetch(&mut raw, true), vec![(5, OK), (-1, UNSTABLE)]);
}

/// Before compaction waited for open transactions, a compaction while one
/// was open rewrote only committed offsets and deleted the segment holding
/// the transaction's batch: after a restart its marker found nothing to
/// commit, and the offsets were lost.
#[test]
fn compaction_keeps_an_open_transactions_offsets() {
    let mut broker = Broker::start(
        2,
        &[
            OFFSETS_PARTITIONS,
            UNVERIFIED,
            "offsets.topic.segment.bytes=16384",
            "log.cleaner.backoff.ms=100",
        ],
    );
    create_topic(&broker, TOPIC, 2);
    let mut raw = ready(&broker);
    let producer = (new_producer_id(broker.addr()), 0);
    assert_eq!(
        txn_commit(&mut raw, producer, ("", -1), &[(0, 10)]),
        vec![OK]
    );
    let dir = broker.partition_dir("__consumer_offsets", 0);
    let mut next = 1;
    while segment_files(&dir).len() < 3 {
        assert!(
            next < 10_000,
            "the offsets partition never rolled:\n{}",
            broker.log()
        );
        commit(&mut raw, 1, next);
        next += 1;
    }
    // The cleaner looks every 100 ms: give it the chance to run while the
    // transaction is open (the checks below hold whether it ran or not).
    std::thread::sleep(Duration::from_secs(2));
    broker.kill9();
    broker.restart();
    let mut raw = ready(&broker);
    let last = next - 1;
    assert_eq!(fetch(&mut raw, true), vec![(-1, UNSTABLE), (last, OK)]);
    marker(&mut raw, producer, true);
    assert_eq!(fetch(&mut raw, true), vec![(10, OK), (last, OK)]);
    // Now the cleaner passes over the partition, and keeps the
    // transaction's offsets.
    let cleaned = |b: &Broker| {
        b.log()
            .lines()
            .any(|l| l.contains("cleaned log") && l.contains("__consumer_offsets"))
    };
    let start = Instant::now();
    while !cleaned(&broker) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "never compacted:\n{}",
            broker.log()
        );
        commit(&mut raw, 1, next);
        next += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    let last = next - 1;
    broker.kill9();
    broker.restart();
    let mut raw = ready(&broker);
    assert_eq!(fetch(&mut raw, true), vec![(10, OK), (last, OK)]);
}
