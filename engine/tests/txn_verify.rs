//! Transaction verification (KIP-890 part 1), by hand: a partition asks
//! the transaction coordinator (AddPartitionsToTxn v4, verify-only)
//! before it writes the first batch of a producer's new transaction, and
//! the group coordinator before it writes a transaction's first offsets;
//! a partition that is not part of the transaction refuses the batch
//! with Kafka's code and appends nothing. Also across brokers, and not
//! at all with `transaction.partition.verification.enable=false`.

mod common;

use bytes::Bytes;
use common::{call, create_topic, Broker, Raw, READY_DEADLINE};
use kafka_protocol::messages::add_partitions_to_txn_request::{
    AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use sluice_protocol::record_batch::BatchBuilder;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const INVALID_TXN_STATE: i16 = 48;
const INVALID_PRODUCER_ID_MAPPING: i16 = 49;
const PRODUCER_FENCED: i16 = 90;
const TRANSACTION_ABORTABLE: i16 = 120;
const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;
/// Retriable while the coordinator loads or a step completes.
const RETRIABLE: [i16; 4] = [14, 15, 16, 51];
const TOPIC: &str = "verified";
const GROUP: &str = "verified-group";

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// Retries `f` while it answers a retriable code; returns the first
/// other answer.
fn until_settled<T>(what: &str, mut f: impl FnMut() -> (i16, T)) -> (i16, T) {
    let deadline = Instant::now() + READY_DEADLINE;
    loop {
        let (code, v) = f();
        if !RETRIABLE.contains(&code) {
            return (code, v);
        }
        assert!(Instant::now() < deadline, "{what}: still {code}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn init(addr: SocketAddr, id: &str) -> (i64, i16) {
    let (code, p) = until_settled("InitProducerId", || {
        let req = InitProducerIdRequest::default()
            .with_transactional_id(Some(TransactionalId(s(id))))
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
        let resp: InitProducerIdResponse =
            call(&mut Raw::connect(addr), ApiKey::InitProducerId, 4, &req).expect("answer");
        (resp.error_code, (resp.producer_id.0, resp.producer_epoch))
    });
    assert_eq!(code, 0);
    p
}

/// AddPartitionsToTxn v3 (the client's form) of `parts` of TOPIC.
fn add_partitions(addr: SocketAddr, id: &str, p: (i64, i16), parts: &[i32]) {
    let (code, _) = until_settled("AddPartitionsToTxn", || {
        let req = AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(TransactionalId(s(id)))
            .with_v3_and_below_producer_id(ProducerId(p.0))
            .with_v3_and_below_producer_epoch(p.1)
            .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default()
                .with_name(TopicName(s(TOPIC)))
                .with_partitions(parts.to_vec())]);
        let resp: AddPartitionsToTxnResponse =
            call(&mut Raw::connect(addr), ApiKey::AddPartitionsToTxn, 3, &req).expect("answer");
        (
            resp.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code,
            (),
        )
    });
    assert_eq!(code, 0, "AddPartitionsToTxn");
}

fn end_txn(addr: SocketAddr, id: &str, p: (i64, i16), commit: bool) {
    let (code, _) = until_settled("EndTxn", || {
        let req = EndTxnRequest::default()
            .with_transactional_id(TransactionalId(s(id)))
            .with_producer_id(ProducerId(p.0))
            .with_producer_epoch(p.1)
            .with_committed(commit);
        let resp: EndTxnResponse =
            call(&mut Raw::connect(addr), ApiKey::EndTxn, 3, &req).expect("answer");
        (resp.error_code, ())
    });
    assert_eq!(code, 0, "EndTxn");
}

/// AddPartitionsToTxn v`version` (the brokers' batched form), verify-only,
/// for `parts` of TOPIC: the top-level code and each partition's.
fn verify_only(
    addr: SocketAddr,
    version: i16,
    id: &str,
    p: (i64, i16),
    parts: &[i32],
) -> (i16, Vec<i16>) {
    until_settled("AddPartitionsToTxn verify-only", || {
        let req = AddPartitionsToTxnRequest::default().with_transactions(vec![
            AddPartitionsToTxnTransaction::default()
                .with_transactional_id(TransactionalId(s(id)))
                .with_producer_id(ProducerId(p.0))
                .with_producer_epoch(p.1)
                .with_verify_only(true)
                .with_topics(vec![AddPartitionsToTxnTopic::default()
                    .with_name(TopicName(s(TOPIC)))
                    .with_partitions(parts.to_vec())]),
        ]);
        let resp: AddPartitionsToTxnResponse = call(
            &mut Raw::connect(addr),
            ApiKey::AddPartitionsToTxn,
            version,
            &req,
        )
        .expect("answer");
        let codes: Vec<i16> = resp
            .results_by_transaction
            .iter()
            .flat_map(|r| r.topic_results.iter())
            .flat_map(|t| t.results_by_partition.iter())
            .map(|r| r.partition_error_code)
            .collect();
        let first = codes.first().copied().unwrap_or(0);
        match resp.error_code {
            0 => (first, (0, codes)),
            top => (top, (top, codes)),
        }
    })
    .1
}

/// A transactional batch of one record for `p` at sequence `seq`.
fn txn_batch(p: (i64, i16), seq: i32, value: &str) -> Vec<u8> {
    let mut b = BatchBuilder::new(1_000)
        .producer(p.0, p.1, seq)
        .transactional();
    b.push(1_000, None, Some(value.as_bytes()), &[]);
    b.finish()
}

/// Produce v`version` of `batch` to TOPIC-`partition` as transactional id
/// `id`: the partition's code.
fn produce(addr: SocketAddr, version: i16, id: &str, partition: i32, batch: Vec<u8>) -> i16 {
    let req = ProduceRequest::default()
        .with_transactional_id(Some(TransactionalId(s(id))))
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(s(TOPIC)))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(Bytes::from(batch)))])]);
    let resp: ProduceResponse =
        call(&mut Raw::connect(addr), ApiKey::Produce, version, &req).expect("Produce answer");
    resp.responses[0].partition_responses[0].error_code
}

/// The log end (high watermark) of TOPIC-`partition`.
fn log_end(addr: SocketAddr, partition: i32) -> i64 {
    let req = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(TopicName(s(TOPIC)))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(partition)
                .with_timestamp(-1)])]);
    let resp: ListOffsetsResponse =
        call(&mut Raw::connect(addr), ApiKey::ListOffsets, 4, &req).expect("answer");
    let p = &resp.topics[0].partitions[0];
    assert_eq!(p.error_code, 0);
    p.offset
}

fn small_broker(extra: &[&str]) -> Broker {
    let mut o = vec![
        "transaction.state.log.num.partitions=4",
        "offsets.topic.num.partitions=1",
    ];
    o.extend_from_slice(extra);
    Broker::start(2, &o)
}

#[test]
fn a_transactional_produce_to_a_partition_not_in_the_transaction_is_refused() {
    let b = small_broker(&[]);
    let addr = b.addr();
    create_topic(&b, TOPIC, 3);
    let id = "verify-app";
    let p = init(addr, id);

    // No transaction at all yet: refused, nothing written.
    assert_eq!(
        produce(addr, 9, id, 1, txn_batch(p, 0, "a")),
        INVALID_TXN_STATE
    );
    // A transaction holding partition 0 only.
    add_partitions(addr, id, p, &[0]);
    assert_eq!(produce(addr, 9, id, 0, txn_batch(p, 0, "in")), 0);
    assert_eq!(
        produce(addr, 9, id, 1, txn_batch(p, 0, "a")),
        INVALID_TXN_STATE
    );
    // Produce v11+ knows TRANSACTION_ABORTABLE, as Kafka answers it.
    assert_eq!(
        produce(addr, 11, id, 1, txn_batch(p, 0, "a")),
        TRANSACTION_ABORTABLE
    );
    assert_eq!(log_end(addr, 1), 0, "nothing appended");
    assert_eq!(log_end(addr, 2), 0);

    // The coordinator's answer, as brokers ask it: nothing is added.
    assert_eq!(
        verify_only(addr, 4, id, p, &[0, 1]),
        (0, vec![0, INVALID_TXN_STATE])
    );
    assert_eq!(
        verify_only(addr, 5, id, p, &[1]),
        (0, vec![TRANSACTION_ABORTABLE])
    );
    assert_eq!(
        verify_only(addr, 4, id, (p.0, p.1 + 1), &[0]),
        (0, vec![PRODUCER_FENCED])
    );
    assert_eq!(
        verify_only(addr, 4, "nobody", p, &[0]),
        (0, vec![INVALID_PRODUCER_ID_MAPPING])
    );
    assert_eq!(
        produce(addr, 9, id, 1, txn_batch(p, 0, "a")),
        INVALID_TXN_STATE
    );

    // Once added the same batch is accepted, and the transaction's next
    // batch there too.
    add_partitions(addr, id, p, &[1]);
    assert_eq!(produce(addr, 9, id, 1, txn_batch(p, 0, "a")), 0);
    assert_eq!(produce(addr, 9, id, 1, txn_batch(p, 1, "b")), 0);
    assert_eq!(log_end(addr, 1), 2);
    end_txn(addr, id, p, true);

    // A late batch of the ended transaction would open one no marker
    // closes (a hanging transaction): refused.
    let deadline = Instant::now() + READY_DEADLINE;
    loop {
        // The markers are written after EndTxn is answered.
        let code = produce(addr, 9, id, 1, txn_batch(p, 2, "late"));
        if code == INVALID_TXN_STATE {
            break;
        }
        assert_eq!(
            code, 19,
            "only NOT_ENOUGH_REPLICAS (being completed) before"
        );
        assert!(Instant::now() < deadline, "the transaction never completed");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(log_end(addr, 1), 3, "the two batches and the marker only");
}

#[test]
fn without_verification_the_batch_is_accepted_unverified() {
    let b = small_broker(&["transaction.partition.verification.enable=false"]);
    let addr = b.addr();
    create_topic(&b, TOPIC, 3);
    let id = "unverified-app";
    let p = init(addr, id);
    add_partitions(addr, id, p, &[0]);
    assert_eq!(produce(addr, 9, id, 1, txn_batch(p, 0, "a")), 0);
    assert_eq!(log_end(addr, 1), 1);
}

#[test]
fn only_brokers_may_send_the_batched_form() {
    let b = small_broker(&[
        "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found=false",
    ]);
    let req = AddPartitionsToTxnRequest::default();
    let resp: Option<AddPartitionsToTxnResponse> = call(
        &mut Raw::connect(b.addr()),
        ApiKey::AddPartitionsToTxn,
        4,
        &req,
    );
    let resp = resp.unwrap_or_else(|| panic!("no answer:\n{}", b.log()));
    assert_eq!(resp.error_code, CLUSTER_AUTHORIZATION_FAILED);
}

/// TxnOffsetCommit v`version` of offset 7 of TOPIC-0 for GROUP.
fn txn_commit(addr: SocketAddr, version: i16, id: &str, p: (i64, i16)) -> i16 {
    let req = TxnOffsetCommitRequest::default()
        .with_transactional_id(TransactionalId(s(id)))
        .with_group_id(GroupId(s(GROUP)))
        .with_producer_id(ProducerId(p.0))
        .with_producer_epoch(p.1)
        .with_generation_id(-1)
        .with_topics(vec![TxnOffsetCommitRequestTopic::default()
            .with_name(TopicName(s(TOPIC)))
            .with_partitions(vec![TxnOffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(7)])]);
    until_settled("TxnOffsetCommit", || {
        let resp: TxnOffsetCommitResponse = call(
            &mut Raw::connect(addr),
            ApiKey::TxnOffsetCommit,
            version,
            &req,
        )
        .expect("answer");
        (resp.topics[0].partitions[0].error_code, ())
    })
    .0
}

/// OffsetFetch v7 with `require_stable` of TOPIC-0: (offset, code).
fn fetch_offset(addr: SocketAddr) -> (i64, i16) {
    let req = OffsetFetchRequest::default()
        .with_group_id(GroupId(s(GROUP)))
        .with_require_stable(true)
        .with_topics(Some(vec![
            offset_fetch_request::OffsetFetchRequestTopic::default()
                .with_name(TopicName(s(TOPIC)))
                .with_partition_indexes(vec![0]),
        ]));
    let resp: OffsetFetchResponse =
        call(&mut Raw::connect(addr), ApiKey::OffsetFetch, 7, &req).expect("answer");
    let p = &resp.topics[0].partitions[0];
    (p.committed_offset, p.error_code)
}

#[test]
fn a_txn_offset_commit_without_add_offsets_is_refused() {
    let b = small_broker(&[]);
    let addr = b.addr();
    create_topic(&b, TOPIC, 1);
    let id = "offsets-app";
    let p = init(addr, id);
    add_partitions(addr, id, p, &[0]);
    assert_eq!(txn_commit(addr, 3, id, p), INVALID_TXN_STATE);
    assert_eq!(txn_commit(addr, 4, id, p), TRANSACTION_ABORTABLE);
    // Nothing pending: a stable reader is not held up.
    assert_eq!(fetch_offset(addr), (-1, 0));

    let (code, _) = until_settled("AddOffsetsToTxn", || {
        let req = AddOffsetsToTxnRequest::default()
            .with_transactional_id(TransactionalId(s(id)))
            .with_producer_id(ProducerId(p.0))
            .with_producer_epoch(p.1)
            .with_group_id(GroupId(s(GROUP)));
        let resp: AddOffsetsToTxnResponse =
            call(&mut Raw::connect(addr), ApiKey::AddOffsetsToTxn, 3, &req).expect("answer");
        (resp.error_code, ())
    });
    assert_eq!(code, 0);
    assert_eq!(txn_commit(addr, 3, id, p), 0);
    end_txn(addr, id, p, true);
    let deadline = Instant::now() + READY_DEADLINE;
    while fetch_offset(addr) != (7, 0) {
        assert!(Instant::now() < deadline, "the offset never committed");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_partition_verifies_with_a_coordinator_on_another_broker() {
    use sluice_engine::cluster::local::LocalCluster;
    let dir = tempfile::tempdir().unwrap();
    let mut spec = common::cluster_spec(dir.path(), 3);
    spec.overrides = vec!["transaction.state.log.num.partitions=4".into()];
    let c = LocalCluster::start(spec, READY_DEADLINE).expect("cluster starts");
    let ports = c.spec.ports.clone();
    let addr = |node: i32| SocketAddr::from(([127, 0, 0, 1], ports[node as usize - 1]));
    {
        let req = CreateTopicsRequest::default()
            .with_timeout_ms(30_000)
            .with_topics(vec![create_topics_request::CreatableTopic::default()
                .with_name(TopicName(s(TOPIC)))
                .with_num_partitions(1)
                .with_replication_factor(1)]);
        let resp: CreateTopicsResponse =
            call(&mut Raw::connect(addr(1)), ApiKey::CreateTopics, 5, &req).expect("answer");
        assert_eq!(resp.topics[0].error_code, 0);
    }
    // The partition's leader.
    let deadline = Instant::now() + READY_DEADLINE;
    let leader = loop {
        let req =
            MetadataRequest::default()
                .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default(
                )
                .with_name(Some(TopicName(s(TOPIC))))]));
        let m: MetadataResponse =
            call(&mut Raw::connect(addr(1)), ApiKey::Metadata, 12, &req).expect("Metadata");
        let l = m
            .topics
            .first()
            .and_then(|t| t.partitions.first())
            .map_or(-1, |p| p.leader_id.0);
        if l > 0 {
            break l;
        }
        assert!(Instant::now() < deadline, "no leader: {m:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    // A transactional id coordinated by another broker.
    let coordinator_of = |id: &str| {
        until_settled("FindCoordinator", || {
            let req = FindCoordinatorRequest::default()
                .with_key_type(1)
                .with_key(s(id));
            let resp: FindCoordinatorResponse =
                call(&mut Raw::connect(addr(1)), ApiKey::FindCoordinator, 3, &req).expect("answer");
            (resp.error_code, resp.node_id.0)
        })
        .1
    };
    let (id, coordinator) = (0..100)
        .map(|i| format!("cross-{i}"))
        .map(|id| {
            let c = coordinator_of(&id);
            (id, c)
        })
        .find(|(_, c)| *c != leader)
        .expect("an id coordinated elsewhere");
    let p = init(addr(coordinator), &id);
    assert_eq!(
        produce(addr(leader), 9, &id, 0, txn_batch(p, 0, "a")),
        INVALID_TXN_STATE
    );
    assert_eq!(log_end(addr(leader), 0), 0);
    add_partitions(addr(coordinator), &id, p, &[0]);
    assert_eq!(produce(addr(leader), 9, &id, 0, txn_batch(p, 0, "a")), 0);
    assert_eq!(log_end(addr(leader), 0), 1);
}
