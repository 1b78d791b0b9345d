//! Transactions end to end: the coordinator's answers to raw requests
//! (Kafka's error codes for bad input), its state across a kill -9, the
//! timeout abort, and librdkafka's transactional producer with a
//! read_committed consumer.

mod common;

use common::{call, create_topic, Broker, Raw, READY_DEADLINE};
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const INVALID_PRODUCER_EPOCH: i16 = 47;
const INVALID_TXN_STATE: i16 = 48;
const INVALID_PRODUCER_ID_MAPPING: i16 = 49;
const INVALID_TRANSACTION_TIMEOUT: i16 = 50;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const PRODUCER_FENCED: i16 = 90;
const TRANSACTIONAL_ID_NOT_FOUND: i16 = 105;
/// Retriable while the coordinator loads or a step completes.
const RETRIABLE: [i16; 4] = [14, 15, 16, 51];

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// Retries `f` while it answers a retriable code, up to a generous
/// deadline; returns the first other answer.
fn until_settled<T>(what: &str, f: impl FnMut() -> (i16, T)) -> (i16, T) {
    until_settled_within(what, READY_DEADLINE, f)
}

fn until_settled_within<T>(
    what: &str,
    within: Duration,
    mut f: impl FnMut() -> (i16, T),
) -> (i16, T) {
    let deadline = Instant::now() + within;
    loop {
        let (code, v) = f();
        if !RETRIABLE.contains(&code) {
            return (code, v);
        }
        assert!(Instant::now() < deadline, "{what}: still {code}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A connection that waits longer for an answer than a step may wait
/// for the state log's replicas (30 s) before it is answered.
fn patient(addr: SocketAddr) -> Raw {
    let raw = Raw::connect(addr);
    raw.stream
        .set_read_timeout(Some(Duration::from_secs(90)))
        .unwrap();
    raw
}

fn init(addr: SocketAddr, id: &str, timeout_ms: i32) -> (i16, (i64, i16)) {
    until_settled("InitProducerId", || init_once(addr, id, timeout_ms))
}

/// One InitProducerId, its answer as it comes.
fn init_once(addr: SocketAddr, id: &str, timeout_ms: i32) -> (i16, (i64, i16)) {
    let req = InitProducerIdRequest::default()
        .with_transactional_id(Some(TransactionalId(s(id))))
        .with_transaction_timeout_ms(timeout_ms)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    let resp: InitProducerIdResponse =
        call(&mut patient(addr), ApiKey::InitProducerId, 4, &req).expect("answer");
    (resp.error_code, (resp.producer_id.0, resp.producer_epoch))
}

fn add_partitions(
    addr: SocketAddr,
    id: &str,
    p: (i64, i16),
    topic: &str,
    parts: &[i32],
) -> Vec<i16> {
    until_settled("AddPartitionsToTxn", || {
        let codes = add_partitions_once(addr, id, p, topic, parts);
        (codes[0], codes)
    })
    .1
}

/// One AddPartitionsToTxn (v3): each partition's code.
fn add_partitions_once(
    addr: SocketAddr,
    id: &str,
    p: (i64, i16),
    topic: &str,
    parts: &[i32],
) -> Vec<i16> {
    let req = AddPartitionsToTxnRequest::default()
        .with_v3_and_below_transactional_id(TransactionalId(s(id)))
        .with_v3_and_below_producer_id(ProducerId(p.0))
        .with_v3_and_below_producer_epoch(p.1)
        .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default()
            .with_name(TopicName(s(topic)))
            .with_partitions(parts.to_vec())]);
    let resp: AddPartitionsToTxnResponse =
        call(&mut patient(addr), ApiKey::AddPartitionsToTxn, 3, &req).expect("answer");
    resp.results_by_topic_v3_and_below
        .iter()
        .flat_map(|t| {
            t.results_by_partition
                .iter()
                .map(|r| r.partition_error_code)
        })
        .collect()
}

fn end_txn(addr: SocketAddr, version: i16, id: &str, p: (i64, i16), commit: bool) -> i16 {
    until_settled("EndTxn", || {
        (end_txn_once(addr, version, id, p, commit), ())
    })
    .0
}

/// One EndTxn, its code as it comes.
fn end_txn_once(addr: SocketAddr, version: i16, id: &str, p: (i64, i16), commit: bool) -> i16 {
    let req = EndTxnRequest::default()
        .with_transactional_id(TransactionalId(s(id)))
        .with_producer_id(ProducerId(p.0))
        .with_producer_epoch(p.1)
        .with_committed(commit);
    let resp: EndTxnResponse =
        call(&mut patient(addr), ApiKey::EndTxn, version, &req).expect("answer");
    resp.error_code
}

fn describe(addr: SocketAddr, id: &str) -> describe_transactions_response::TransactionState {
    until_settled("DescribeTransactions", || {
        let req = DescribeTransactionsRequest::default()
            .with_transactional_ids(vec![TransactionalId(s(id))]);
        let resp: DescribeTransactionsResponse = call(
            &mut Raw::connect(addr),
            ApiKey::DescribeTransactions,
            0,
            &req,
        )
        .expect("answer");
        let state = resp.transaction_states[0].clone();
        (state.error_code, state)
    })
    .1
}

/// Waits until `id`'s state is `want`.
fn wait_state(
    addr: SocketAddr,
    id: &str,
    want: &str,
) -> describe_transactions_response::TransactionState {
    let deadline = Instant::now() + READY_DEADLINE;
    loop {
        let d = describe(addr, id);
        if d.transaction_state.as_str() == want {
            return d;
        }
        assert!(
            Instant::now() < deadline,
            "{id} is {} (code {}), not {want}",
            d.transaction_state.as_str(),
            d.error_code
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn small_broker(extra: &[&str]) -> Broker {
    let mut o = vec![
        "transaction.state.log.num.partitions=4",
        "transaction.abort.timed.out.transaction.cleanup.interval.ms=200",
    ];
    o.extend_from_slice(extra);
    Broker::start(2, &o)
}

#[test]
fn find_coordinator_names_the_leader_of_the_ids_partition() {
    let b = small_broker(&[]);
    for version in [1, 4] {
        let mut req = FindCoordinatorRequest::default().with_key_type(1);
        if version >= 4 {
            req.coordinator_keys = vec![s("app-1"), s("app-2")];
        } else {
            req.key = s("app-1");
        }
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            let resp: FindCoordinatorResponse = call(
                &mut Raw::connect(b.addr()),
                ApiKey::FindCoordinator,
                version,
                &req,
            )
            .expect("answer");
            let (code, port) = match version {
                4 => (resp.coordinators[0].error_code, resp.coordinators[0].port),
                _ => (resp.error_code, resp.port),
            };
            if code == 0 {
                assert_eq!(port, i32::from(b.port));
                break;
            }
            assert!(
                RETRIABLE.contains(&code),
                "FindCoordinator v{version}: {code}"
            );
            assert!(Instant::now() < deadline, "no coordinator");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn bad_input_gets_kafkas_error_codes_and_changes_nothing() {
    let b = small_broker(&["transaction.max.timeout.ms=60000"]);
    create_topic(&b, "t", 2);
    let addr = b.addr();
    // An empty transactional id.
    assert_eq!(init(addr, "", 1_000).0, 42, "INVALID_REQUEST");
    // A timeout above transaction.max.timeout.ms.
    assert_eq!(init(addr, "app", 60_001).0, INVALID_TRANSACTION_TIMEOUT);
    // EndTxn and AddPartitionsToTxn for an id never initialised.
    assert_eq!(
        end_txn(addr, 3, "nobody", (1, 0), true),
        INVALID_PRODUCER_ID_MAPPING
    );
    assert_eq!(
        add_partitions(addr, "nobody", (1, 0), "t", &[0]),
        vec![INVALID_PRODUCER_ID_MAPPING]
    );
    let (code, first) = init(addr, "app", 30_000);
    assert_eq!(code, 0);
    assert_eq!(first.1, 0, "a new id starts at epoch 0");
    // A second instance bumps the epoch: the first is fenced.
    let (code, second) = init(addr, "app", 30_000);
    assert_eq!((code, second.0, second.1), (0, first.0, 1));
    assert_eq!(end_txn(addr, 3, "app", first, true), PRODUCER_FENCED);
    assert_eq!(
        end_txn(addr, 1, "app", first, true),
        INVALID_PRODUCER_EPOCH,
        "before KIP-588"
    );
    assert_eq!(
        add_partitions(addr, "app", first, "t", &[0]),
        vec![PRODUCER_FENCED]
    );
    // The wrong producer id for the transactional id.
    assert_eq!(
        end_txn(addr, 3, "app", (second.0 + 1000, second.1), true),
        INVALID_PRODUCER_ID_MAPPING
    );
    // Nothing is open: EndTxn is in the wrong state.
    assert_eq!(end_txn(addr, 3, "app", second, true), INVALID_TXN_STATE);
    assert_eq!(end_txn(addr, 3, "app", second, false), INVALID_TXN_STATE);
    // An unknown partition is refused, and nothing else is attempted.
    let codes = add_partitions(addr, "app", second, "t", &[0, 7]);
    assert!(codes.contains(&UNKNOWN_TOPIC_OR_PARTITION), "{codes:?}");
    assert_eq!(describe(addr, "app").transaction_state.as_str(), "Empty");
    assert_eq!(
        describe(addr, "nobody").error_code,
        TRANSACTIONAL_ID_NOT_FOUND
    );
    // A good one opens the transaction.
    assert_eq!(
        add_partitions(addr, "app", second, "t", &[0, 1]),
        vec![0, 0]
    );
    let d = describe(addr, "app");
    assert_eq!(d.transaction_state.as_str(), "Ongoing");
    assert_eq!(d.topics[0].partitions, vec![0, 1]);
    assert_eq!((d.producer_id.0, d.producer_epoch), second);
    // ListTransactions filters by state and producer id.
    let list = |states: Vec<&str>, pids: Vec<i64>| -> Vec<String> {
        let req = ListTransactionsRequest::default()
            .with_state_filters(states.into_iter().map(s).collect())
            .with_producer_id_filters(pids.into_iter().map(ProducerId).collect());
        let resp: ListTransactionsResponse =
            call(&mut Raw::connect(addr), ApiKey::ListTransactions, 1, &req).expect("answer");
        resp.transaction_states
            .iter()
            .map(|t| t.transactional_id.to_string())
            .collect()
    };
    assert_eq!(list(vec!["Ongoing"], vec![]), vec!["app".to_string()]);
    assert!(list(vec!["CompleteCommit"], vec![]).is_empty());
    assert!(list(vec![], vec![second.0 + 1]).is_empty());
    // Committing with the stale epoch still fails; the transaction stays.
    assert_eq!(end_txn(addr, 3, "app", first, true), PRODUCER_FENCED);
    assert_eq!(describe(addr, "app").transaction_state.as_str(), "Ongoing");
}

#[test]
fn coordinator_state_survives_a_kill_9() {
    let mut b = small_broker(&[]);
    let addr = b.addr();
    let (code, p) = init(addr, "durable", 60_000);
    assert_eq!(code, 0);
    let (_, p2) = init(addr, "durable", 60_000);
    assert_eq!(p2, (p.0, 1));
    b.kill9();
    b.restart();
    // The epoch continues from the stored one: the restart fenced nobody
    // back into service.
    let (code, p3) = init(b.addr(), "durable", 60_000);
    assert_eq!(code, 0);
    assert_eq!(p3, (p.0, 2));
}

#[test]
fn a_transaction_past_its_timeout_is_aborted_and_its_producer_fenced() {
    let b = small_broker(&[]);
    create_topic(&b, "slow", 1);
    let addr = b.addr();
    let (code, p) = init(addr, "slow-app", 1_000);
    assert_eq!(code, 0);
    assert_eq!(add_partitions(addr, "slow-app", p, "slow", &[0]), vec![0]);
    let d = wait_state(addr, "slow-app", "CompleteAbort");
    assert_eq!(d.producer_epoch, p.1 + 1, "the abort bumped the epoch");
    assert_eq!(end_txn(addr, 3, "slow-app", p, true), PRODUCER_FENCED);
}

#[test]
fn an_idle_transactional_id_expires() {
    let b = small_broker(&[
        "transactional.id.expiration.ms=500",
        "transaction.remove.expired.transaction.cleanup.interval.ms=200",
    ]);
    let addr = b.addr();
    assert_eq!(init(addr, "idle", 60_000).0, 0);
    let deadline = Instant::now() + READY_DEADLINE;
    while describe(addr, "idle").error_code != TRANSACTIONAL_ID_NOT_FOUND {
        assert!(Instant::now() < deadline, "idle never expired");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Its tombstone is in the log: a restart does not bring it back.
    let mut b = b;
    b.kill9();
    b.restart();
    assert_eq!(
        describe(b.addr(), "idle").error_code,
        TRANSACTIONAL_ID_NOT_FOUND
    );
}

/// Segment files of every `__transaction_state` partition.
fn state_segments(b: &Broker) -> usize {
    (0..4)
        .map(|p| common::segment_files(&b.partition_dir("__transaction_state", p)).len())
        .sum()
}

#[test]
fn the_state_log_is_compacted_and_replays_to_the_same_state() {
    let mut b = small_broker(&[
        "transaction.state.log.segment.bytes=1024",
        "log.cleaner.backoff.ms=100",
    ]);
    let addr = b.addr();
    let rounds = 100;
    let mut last = (0, 0);
    for _ in 0..rounds {
        let (code, p) = init(addr, "busy", 60_000);
        assert_eq!(code, 0);
        last = p;
    }
    assert_eq!(last.1, rounds - 1);
    // Small segments roll every few records; the log cleaner keeps the
    // one live record per id and merges the segments it empties.
    let deadline = Instant::now() + READY_DEADLINE;
    while state_segments(&b) > 4 * 2 {
        assert!(
            Instant::now() < deadline,
            "{} segments left",
            state_segments(&b)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    b.kill9();
    b.restart();
    let (code, p) = init(b.addr(), "busy", 60_000);
    assert_eq!((code, p), (0, (last.0, rounds)));
}

// ---- librdkafka's transactional producer, with read_committed consumers.

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

/// How long a client call may take: generous, for shared CI machines.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

fn transactional(
    bootstrap: &str,
    id: &str,
    extra: &[(&str, &str)],
) -> ThreadedProducer<DefaultProducerContext> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("transactional.id", id)
        .set("linger.ms", "0");
    for (k, v) in extra {
        c.set(*k, *v);
    }
    let p: ThreadedProducer<DefaultProducerContext> = c.create().expect("producer");
    p.init_transactions(CLIENT_TIMEOUT)
        .expect("init_transactions");
    p
}

fn send(p: &ThreadedProducer<DefaultProducerContext>, topic: &str, partition: i32, value: &str) {
    p.send(
        BaseRecord::<(), str>::to(topic)
            .partition(partition)
            .payload(value),
    )
    .map_err(|(e, _)| e)
    .expect("send");
}

/// Every value in `partitions`, read with `isolation`, until `done` says
/// enough has been read (or the deadline passes, failing the test).
fn read(
    bootstrap: &str,
    isolation: &str,
    partitions: &[(&str, i32)],
    done: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    read_within(bootstrap, isolation, partitions, READY_DEADLINE, done)
}

fn read_within(
    bootstrap: &str,
    isolation: &str,
    partitions: &[(&str, i32)],
    within: Duration,
    done: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "txn-test-reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for (t, p) in partitions {
        tpl.add_partition_offset(t, *p, Offset::Beginning).unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + within;
    while !done(&got) {
        assert!(Instant::now() < deadline, "{isolation} read only {got:?}");
        if let Some(m) = common::poll_message(&c, || format!("{got:?}")) {
            got.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).to_string());
        }
    }
    got
}

const PARTITIONS: [(&str, i32); 3] = [("tx-a", 0), ("tx-a", 1), ("tx-b", 0)];

#[test]
fn committed_transactions_are_read_committed_and_aborted_ones_are_not() {
    let b = small_broker(&[]);
    create_topic(&b, "tx-a", 2);
    create_topic(&b, "tx-b", 1);
    let p = transactional(&b.bootstrap(), "rd-app", &[]);
    for (round, commit) in [(0, true), (1, false), (2, true)] {
        p.begin_transaction().expect("begin");
        for (t, part) in PARTITIONS {
            for i in 0..3 {
                let kind = if commit { "commit" } else { "abort" };
                send(&p, t, part, &format!("{kind}-{round}-{t}-{part}-{i}"));
            }
        }
        // Flushed first, so the aborted records reach the log (an abort
        // drops what the client still holds).
        p.flush(CLIENT_TIMEOUT).expect("flush");
        match commit {
            true => p.commit_transaction(CLIENT_TIMEOUT).expect("commit"),
            false => p.abort_transaction(CLIENT_TIMEOUT).expect("abort"),
        }
    }
    // The last committed transaction comes after the aborted one in every
    // partition: once all its records are read, so is everything before.
    let committed = read(&b.bootstrap(), "read_committed", &PARTITIONS, |g| {
        g.iter().filter(|v| v.starts_with("commit-2")).count() == 9
    });
    assert_eq!(committed.len(), 18, "{committed:?}");
    assert!(
        committed.iter().all(|v| v.starts_with("commit-")),
        "{committed:?}"
    );
    let all = read(&b.bootstrap(), "read_uncommitted", &PARTITIONS, |g| {
        g.iter().filter(|v| v.starts_with("commit-2")).count() == 9
    });
    assert_eq!(
        all.iter().filter(|v| v.starts_with("abort-")).count(),
        9,
        "read_uncommitted sees the aborted records: {all:?}"
    );
    common::passed("librdkafka", &["transactions"]);
}

#[test]
fn a_second_instance_fences_the_first_and_none_of_its_records_are_visible() {
    let b = small_broker(&[]);
    create_topic(&b, "tx-a", 2);
    create_topic(&b, "tx-b", 1);
    let zombie = transactional(&b.bootstrap(), "fenced-app", &[]);
    zombie.begin_transaction().expect("begin");
    for (t, part) in PARTITIONS {
        send(&zombie, t, part, "zombie");
    }
    zombie.flush(CLIENT_TIMEOUT).expect("flush");
    // The new instance's init aborts the zombie's open transaction.
    let fresh = transactional(&b.bootstrap(), "fenced-app", &[]);
    fresh.begin_transaction().expect("begin");
    for (t, part) in PARTITIONS {
        send(&fresh, t, part, "fresh");
    }
    fresh.commit_transaction(CLIENT_TIMEOUT).expect("commit");
    let late = zombie.commit_transaction(CLIENT_TIMEOUT);
    match late.expect_err("the fenced instance cannot commit") {
        rdkafka::error::KafkaError::Transaction(e) => {
            assert!(e.is_fatal(), "fencing is fatal to the zombie: {e:?}");
            let fenced = [
                rdkafka::types::RDKafkaErrorCode::ProducerFenced,
                rdkafka::types::RDKafkaErrorCode::InvalidProducerEpoch,
                rdkafka::types::RDKafkaErrorCode::Fenced,
            ];
            assert!(fenced.contains(&e.code()), "a fencing error: {e:?}");
        }
        other => panic!("not a transaction error: {other:?}"),
    }
    let got = read(&b.bootstrap(), "read_committed", &PARTITIONS, |g| {
        g.iter().filter(|v| *v == "fresh").count() == 3
    });
    assert!(!got.iter().any(|v| v == "zombie"), "{got:?}");
}

#[test]
fn an_abandoned_transaction_is_aborted_after_its_timeout_and_does_not_block_readers() {
    let b = small_broker(&[]);
    create_topic(&b, "tx-slow", 1);
    let quick = [
        ("transaction.timeout.ms", "2000"),
        ("message.timeout.ms", "2000"),
    ];
    let silent = transactional(&b.bootstrap(), "silent-app", &quick);
    silent.begin_transaction().expect("begin");
    send(&silent, "tx-slow", 0, "abandoned");
    silent.flush(CLIENT_TIMEOUT).expect("flush");
    // Another producer commits behind it; read_committed readers get its
    // record once the abandoned transaction is aborted.
    let other = transactional(&b.bootstrap(), "other-app", &[]);
    other.begin_transaction().expect("begin");
    send(&other, "tx-slow", 0, "after");
    other.commit_transaction(CLIENT_TIMEOUT).expect("commit");
    let got = read(&b.bootstrap(), "read_committed", &[("tx-slow", 0)], |g| {
        g.iter().any(|v| v == "after")
    });
    assert_eq!(got, vec!["after".to_string()]);
    wait_state(b.addr(), "silent-app", "CompleteAbort");
    drop(silent);
}

// ---- Three brokers: the coordinator's broker killed mid-transaction.

use sluice_engine::cluster::local::LocalCluster;

/// The broker coordinating `id`, asked of broker port `port`.
fn coordinator_of(port: u16, id: &str) -> Option<i32> {
    let req = FindCoordinatorRequest::default()
        .with_key_type(1)
        .with_key(s(id));
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let resp: FindCoordinatorResponse =
        common::try_call(&mut Raw::connect(addr), ApiKey::FindCoordinator, 3, &req)?;
    (resp.error_code == 0).then_some(resp.node_id.0)
}

#[test]
fn a_killed_coordinators_transactions_complete_or_abort_as_a_whole() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = common::cluster_spec(dir.path(), 3);
    spec.overrides = vec![
        "broker.session.timeout.ms=4000".into(),
        "broker.heartbeat.interval.ms=300".into(),
        "transaction.state.log.num.partitions=4".into(),
        "offsets.topic.replication.factor=3".into(),
    ];
    let mut c = LocalCluster::start(spec, READY_DEADLINE).expect("cluster starts");
    let bootstrap = c.bootstrap();
    // The state topic's replication factor defaults to 3 when three
    // brokers are up.
    let deadline = Instant::now() + READY_DEADLINE;
    while coordinator_of(c.spec.ports[0], "ha-app").is_none() {
        assert!(Instant::now() < deadline, "no coordinator for ha-app");
        std::thread::sleep(Duration::from_millis(50));
    }
    {
        let probe: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()
            .expect("client");
        let m = probe
            .fetch_metadata(Some("__transaction_state"), CLIENT_TIMEOUT)
            .expect("metadata");
        let t = &m.topics()[0];
        assert_eq!(t.partitions().len(), 4);
        assert!(t.partitions().iter().all(|p| p.replicas().len() == 3));
    }
    {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        let admin: AdminClient<rdkafka::client::DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()
            .expect("admin");
        let topic = NewTopic::new("tx-ha", 3, TopicReplication::Fixed(3));
        let options = AdminOptions::new().operation_timeout(Some(CLIENT_TIMEOUT));
        let made = futures::executor::block_on(admin.create_topics([&topic], &options)).unwrap();
        assert!(made.iter().all(Result::is_ok), "{made:?}");
    }
    let partitions = [("tx-ha", 0), ("tx-ha", 1), ("tx-ha", 2)];
    let first = transactional(&bootstrap, "ha-app", &[]);
    // t1 is committed: EndTxn answered once PrepareCommit was stored; its
    // markers may still be on their way when the coordinator dies.
    first.begin_transaction().expect("begin");
    for (t, p) in partitions {
        send(&first, t, p, "t1");
    }
    first.commit_transaction(CLIENT_TIMEOUT).expect("commit t1");
    // t2 is open when the coordinator dies.
    first.begin_transaction().expect("begin");
    for (t, p) in partitions {
        send(&first, t, p, "t2");
    }
    first.flush(CLIENT_TIMEOUT).expect("flush t2");
    let deadline = Instant::now() + READY_DEADLINE;
    let victim = loop {
        if let Some(n) = coordinator_of(c.spec.ports[0], "ha-app") {
            break n;
        }
        assert!(Instant::now() < deadline, "no coordinator for ha-app");
        std::thread::sleep(Duration::from_millis(50));
    };
    c.kill(victim as usize);
    // A new instance finds the new coordinator, which replayed the state:
    // it completes t1 and aborts t2 (fencing the first instance).
    let second = transactional(&bootstrap, "ha-app", &[]);
    second.begin_transaction().expect("begin");
    for (t, p) in partitions {
        send(&second, t, p, "t3");
    }
    second
        .commit_transaction(CLIENT_TIMEOUT)
        .expect("commit t3");
    let got = read(&bootstrap, "read_committed", &partitions, |g| {
        g.iter().filter(|v| *v == "t3").count() == 3
    });
    let count = |v: &str| got.iter().filter(|g| *g == v).count();
    assert_eq!(count("t1"), 3, "t1 committed whole: {got:?}");
    assert_eq!(count("t2"), 0, "t2 aborted whole: {got:?}");
    drop(first);
}

#[test]
fn a_deleted_topic_is_dropped_from_a_transaction_and_the_rest_commits() {
    use rdkafka::admin::{AdminClient, AdminOptions};
    let b = small_broker(&[]);
    create_topic(&b, "tx-doomed", 1);
    create_topic(&b, "tx-kept", 1);
    let p = transactional(&b.bootstrap(), "doomed-app", &[]);
    p.begin_transaction().expect("begin");
    send(&p, "tx-doomed", 0, "doomed");
    send(&p, "tx-kept", 0, "kept");
    p.flush(CLIENT_TIMEOUT).expect("flush");
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", b.bootstrap())
        .create()
        .expect("admin");
    let options = AdminOptions::new().operation_timeout(Some(CLIENT_TIMEOUT));
    let deleted = futures::executor::block_on(admin.delete_topics(&["tx-doomed"], &options));
    assert!(deleted.expect("delete").iter().all(Result::is_ok));
    p.commit_transaction(CLIENT_TIMEOUT).expect("commit");
    // The markers went to what is left, and the transaction completed.
    wait_state(b.addr(), "doomed-app", "CompleteCommit");
    let got = read(&b.bootstrap(), "read_committed", &[("tx-kept", 0)], |g| {
        g.iter().any(|v| v == "kept")
    });
    assert_eq!(got, vec!["kept".to_string()]);
}

/// A request for an id whose previous transaction is still completing is
/// held until the completion is stored rather than told at once to retry
/// (a retry's backoff would put a floor under every short transaction);
/// a completion that cannot finish still gets the request its retriable
/// answer, and changes nothing.
/// A topic of one partition that takes no marker (nor any acks=all
/// append) until [`unstick`] is called: it requires more in-sync
/// replicas than it has.
fn stuck_topic(b: &Broker, topic: &str) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", b.bootstrap())
        .create()
        .expect("admin");
    let options = AdminOptions::new().operation_timeout(Some(CLIENT_TIMEOUT));
    let topic = NewTopic::new(topic, 1, TopicReplication::Fixed(1)).set("min.insync.replicas", "2");
    let made = futures::executor::block_on(admin.create_topics([&topic], &options));
    assert!(made.expect("create").iter().all(Result::is_ok));
}

fn unstick(b: &Broker, topic: &str) {
    use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", b.bootstrap())
        .create()
        .expect("admin");
    let options = AdminOptions::new().operation_timeout(Some(CLIENT_TIMEOUT));
    let lowered = AlterConfig::new(ResourceSpecifier::Topic(topic)).set("min.insync.replicas", "1");
    let altered = futures::executor::block_on(admin.alter_configs([&lowered], &options));
    assert!(altered.expect("alter").iter().all(Result::is_ok));
}

/// The log end of partition 0 of `topic`.
fn log_end(b: &Broker, topic: &str) -> i64 {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", b.bootstrap())
        .create()
        .expect("client");
    c.fetch_watermarks(topic, 0, CLIENT_TIMEOUT)
        .expect("watermarks")
        .1
}

/// A request for an id whose previous transaction is still completing is
/// held until the completion is stored rather than told at once to retry
/// (a retry's backoff would put a floor under every short transaction);
/// a completion that cannot finish still gets the request its retriable
/// answer, and changes nothing.
#[test]
fn a_request_behind_an_unfinished_completion_is_answered_and_goes_through_after_it() {
    let b = small_broker(&[]);
    stuck_topic(&b, "tx-stuck");
    let id = "stuck-app";
    let (code, p) = init(b.addr(), id, 60_000);
    assert_eq!(code, 0);
    assert_eq!(add_partitions(b.addr(), id, p, "tx-stuck", &[0]), vec![0]);
    assert_eq!(end_txn(b.addr(), 3, id, p, true), 0);
    // The commit is decided; its marker cannot be written.
    assert_eq!(
        add_partitions_once(b.addr(), id, p, "tx-stuck", &[0]),
        vec![51],
        "CONCURRENT_TRANSACTIONS once the wait for the completion is over"
    );
    assert_eq!(
        describe(b.addr(), id).transaction_state.as_str(),
        "PrepareCommit"
    );
    unstick(&b, "tx-stuck");
    wait_state(b.addr(), id, "CompleteCommit");
    assert_eq!(add_partitions(b.addr(), id, p, "tx-stuck", &[0]), vec![0]);
    assert_eq!(describe(b.addr(), id).transaction_state.as_str(), "Ongoing");
}

/// kill -9 after the commit is decided (PrepareCommit stored, EndTxn
/// answered) and before its marker is written: the restarted coordinator
/// finds the decision in its log and writes the marker.
#[test]
fn a_commit_decided_before_a_kill_9_gets_its_markers_after_the_restart() {
    let mut b = small_broker(&[]);
    stuck_topic(&b, "tx-decided");
    let id = "decided-app";
    let (code, p) = init(b.addr(), id, 60_000);
    assert_eq!(code, 0);
    assert_eq!(add_partitions(b.addr(), id, p, "tx-decided", &[0]), vec![0]);
    assert_eq!(end_txn(b.addr(), 3, id, p, true), 0);
    assert_eq!(
        describe(b.addr(), id).transaction_state.as_str(),
        "PrepareCommit"
    );
    assert_eq!(log_end(&b, "tx-decided"), 0, "no marker yet");
    b.kill9();
    b.restart();
    assert_eq!(
        describe(b.addr(), id).transaction_state.as_str(),
        "PrepareCommit"
    );
    unstick(&b, "tx-decided");
    wait_state(b.addr(), id, "CompleteCommit");
    assert_eq!(log_end(&b, "tx-decided"), 1, "the COMMIT marker, once");
}

// ---- Three brokers: the state log's replicas away.

const COORDINATOR_NOT_AVAILABLE: i16 = 15;

/// How long anything may take once brokers come back: generous, for a
/// loaded machine where restarted brokers take a while to catch up.
const RECOVERY_DEADLINE: Duration = Duration::from_secs(180);

/// Whether every partition of `topic` is led by `node` alone, in sync
/// with nobody else, as the broker at `port` sees it.
fn led_alone(port: u16, topic: &str, node: i32) -> bool {
    let req = MetadataRequest::default().with_topics(Some(vec![
        metadata_request::MetadataRequestTopic::default().with_name(Some(TopicName(s(topic)))),
    ]));
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let resp: Option<MetadataResponse> =
        common::try_call(&mut Raw::connect(addr), ApiKey::Metadata, 9, &req);
    let Some(t) = resp.and_then(|r| r.topics.into_iter().next()) else {
        return false;
    };
    !t.partitions.is_empty()
        && t.partitions
            .iter()
            .all(|p| p.leader_id.0 == node && p.isr_nodes.iter().map(|b| b.0).eq([node]))
}

/// How many times broker `log` failed to store a step of `id`.
fn refused_stores(log: &std::path::Path, id: &str) -> usize {
    let needle = format!("transactional_id={id} ");
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("storing transaction state failed") && l.contains(&needle))
        .count()
}

/// kill -9 brokers 2 and 3 and waits until broker 1 leads every state
/// partition with an ISR of itself alone, below `min.isr` = 2.
fn kill_the_replicas(c: &mut LocalCluster) {
    c.kill(2);
    c.kill(3);
    let deadline = Instant::now() + RECOVERY_DEADLINE;
    while !led_alone(c.spec.ports[0], "__transaction_state", 1) {
        assert!(
            Instant::now() < deadline,
            "the ISRs never shrank to broker 1"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs `op` on another thread while brokers 2 and 3 are away; once the
/// coordinator (broker 1) has refused to store a step of `id` at least
/// once more than before, brings them back. Returns what `op` returned.
fn with_replicas_back_after_a_refusal<T: Send + 'static>(
    c: &mut LocalCluster,
    log: &std::path::Path,
    id: &str,
    op: impl FnOnce() -> T + Send + 'static,
) -> T {
    let before = refused_stores(log, id);
    let running = std::thread::spawn(op);
    let deadline = Instant::now() + RECOVERY_DEADLINE;
    while refused_stores(log, id) == before && !running.is_finished() {
        assert!(Instant::now() < deadline, "{id}'s step was never refused");
        std::thread::sleep(Duration::from_millis(50));
    }
    let refused = refused_stores(log, id) > before;
    for node in [2, 3] {
        c.restart(node, RECOVERY_DEADLINE).expect("broker restarts");
    }
    let out = running.join().expect("the operation's thread");
    assert!(refused, "{id}'s operation ended with the replicas away");
    out
}

/// A transaction request whose step cannot be stored, because
/// `__transaction_state` has fewer in-sync replicas than
/// `transaction.state.log.min.isr`, is answered COORDINATOR_NOT_AVAILABLE
/// as Kafka answers it (passed through, NOT_ENOUGH_REPLICAS fails
/// librdkafka's commit for good), leaves the transaction as it was (a
/// failed InitProducerId that moved the epoch on would fence the producer
/// it refused), and is taken when retried once the replicas are back.
#[test]
fn without_the_state_logs_replicas_requests_are_retried_until_they_are_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = common::cluster_spec(dir.path(), 3);
    // Broker 1 is the only controller: with brokers 2 and 3 away it still
    // fences them and shrinks the ISRs, so the state log is below its
    // min.isr rather than the cluster without a quorum.
    spec.voters = 1;
    spec.overrides = vec![
        "transaction.state.log.num.partitions=3".into(),
        "transaction.state.log.replication.factor=3".into(),
        "transaction.state.log.min.isr=2".into(),
    ];
    let mut c = LocalCluster::start(spec, RECOVERY_DEADLINE).expect("cluster starts");
    let bootstrap = c.bootstrap();
    let port = c.spec.ports[0];
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let log = dir.path().join("broker-1.log");
    // Three ids broker 1 coordinates: by hand, new, and librdkafka's.
    let deadline = Instant::now() + RECOVERY_DEADLINE;
    let mut ids = Vec::new();
    for i in 0.. {
        let id = format!("avail-{i}");
        loop {
            match coordinator_of(port, &id) {
                Some(1) => ids.push(id),
                Some(_) => {}
                None => {
                    assert!(Instant::now() < deadline, "no coordinator for {id}");
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            }
            break;
        }
        if ids.len() == 3 {
            break;
        }
    }
    let (by_hand, fresh, app) = (ids[0].clone(), ids[1].clone(), ids[2].clone());
    {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        let admin: AdminClient<rdkafka::client::DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()
            .expect("admin");
        let topic = NewTopic::new("tx-avail", 3, TopicReplication::Fixed(3))
            .set("min.insync.replicas", "1");
        let options = AdminOptions::new().operation_timeout(Some(CLIENT_TIMEOUT));
        let made = futures::executor::block_on(admin.create_topics([&topic], &options)).unwrap();
        assert!(made.iter().all(Result::is_ok), "{made:?}");
    }
    let partitions = [("tx-avail", 0), ("tx-avail", 1), ("tx-avail", 2)];

    // By hand: a transaction open on partition 0, then every request that
    // would store a step, with the replicas away.
    let (code, p) = init(addr, &by_hand, 600_000);
    assert_eq!(code, 0);
    assert_eq!(add_partitions(addr, &by_hand, p, "tx-avail", &[0]), vec![0]);
    kill_the_replicas(&mut c);
    assert_eq!(
        init_once(addr, &by_hand, 600_000).0,
        COORDINATOR_NOT_AVAILABLE,
        "InitProducerId fencing the open transaction"
    );
    assert_eq!(
        add_partitions_once(addr, &by_hand, p, "tx-avail", &[1]),
        vec![COORDINATOR_NOT_AVAILABLE]
    );
    assert_eq!(
        end_txn_once(addr, 3, &by_hand, p, true),
        COORDINATOR_NOT_AVAILABLE
    );
    assert_eq!(
        init_once(addr, &fresh, 600_000).0,
        COORDINATOR_NOT_AVAILABLE,
        "InitProducerId of a new id"
    );
    // Nothing changed.
    let d = describe(addr, &by_hand);
    assert_eq!(d.transaction_state.as_str(), "Ongoing");
    assert_eq!((d.producer_id.0, d.producer_epoch), p);
    assert_eq!(d.topics.len(), 1);
    assert_eq!(d.topics[0].partitions, vec![0]);
    assert_eq!(
        describe(addr, &fresh).error_code,
        TRANSACTIONAL_ID_NOT_FOUND
    );

    // librdkafka's init_transactions, begun with the replicas away,
    // succeeds once they are back.
    let config = {
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", &bootstrap)
            .set("transactional.id", &app)
            .set("linger.ms", "0")
            // Longer than the test: the coordinator must not abort the
            // transaction it could not commit while the replicas were away.
            .set("transaction.timeout.ms", "600000");
        cfg
    };
    let producer = with_replicas_back_after_a_refusal(&mut c, &log, &app, move || {
        let p: ThreadedProducer<DefaultProducerContext> = config.create().expect("producer");
        p.init_transactions(RECOVERY_DEADLINE).map(|()| p)
    })
    .expect("init_transactions once the replicas are back");
    // The requests refused by hand now succeed: the transaction commits
    // under the epoch it had.
    let committed = until_settled_within("EndTxn", RECOVERY_DEADLINE, || {
        (end_txn_once(addr, 3, &by_hand, p, true), ())
    });
    assert_eq!(committed.0, 0);
    wait_state(addr, &by_hand, "CompleteCommit");

    // A commit begun with the replicas away succeeds once they are back.
    producer.begin_transaction().expect("begin t1");
    for (t, part) in partitions {
        for i in 0..2 {
            send(&producer, t, part, &format!("t1-{part}-{i}"));
        }
    }
    producer.flush(RECOVERY_DEADLINE).expect("flush t1");
    kill_the_replicas(&mut c);
    let (producer, commit) = with_replicas_back_after_a_refusal(&mut c, &log, &app, move || {
        let r = producer.commit_transaction(RECOVERY_DEADLINE);
        (producer, r)
    });
    commit.expect("commit t1 once the replicas are back");
    // Then an aborted transaction and a committed one: the reader below
    // sees exactly the committed records.
    for (round, commit) in [("t2", false), ("t3", true)] {
        producer.begin_transaction().expect("begin");
        for (t, part) in partitions {
            for i in 0..2 {
                send(&producer, t, part, &format!("{round}-{part}-{i}"));
            }
        }
        producer.flush(RECOVERY_DEADLINE).expect("flush");
        match commit {
            true => producer
                .commit_transaction(RECOVERY_DEADLINE)
                .expect("commit"),
            false => producer
                .abort_transaction(RECOVERY_DEADLINE)
                .expect("abort"),
        }
    }
    let got = read_within(
        &bootstrap,
        "read_committed",
        &partitions,
        RECOVERY_DEADLINE,
        |g| g.iter().filter(|v| v.starts_with("t3-")).count() == 6,
    );
    let mut got = got;
    got.sort();
    let mut want: Vec<String> = ["t1", "t3"]
        .iter()
        .flat_map(|r| (0..3).flat_map(move |p| (0..2).map(move |i| format!("{r}-{p}-{i}"))))
        .collect();
    want.sort();
    assert_eq!(got, want, "exactly the committed records");
}

/// ListTransactions v2 (KIP-1152) lists the ids a pattern matches whole,
/// in RE2/J's syntax, together with the other filters; an empty or null
/// pattern lists every id, and one that does not compile fails the
/// request with INVALID_REGULAR_EXPRESSION and lists nothing.
#[test]
fn list_transactions_v2_lists_the_ids_a_pattern_matches_whole() {
    const INVALID_REGULAR_EXPRESSION: i16 = 128;
    let b = small_broker(&[]);
    let addr = b.addr();
    for id in ["orders-1", "orders-2", "payments-1"] {
        assert_eq!(init(addr, id, 30_000).0, 0, "{id}");
    }
    let list = |version: i16, pattern: Option<&str>, states: Vec<&str>| {
        let mut req = ListTransactionsRequest::default()
            .with_state_filters(states.into_iter().map(s).collect());
        req.transactional_id_pattern = pattern.map(s);
        let resp: ListTransactionsResponse = call(
            &mut Raw::connect(addr),
            ApiKey::ListTransactions,
            version,
            &req,
        )
        .expect("answer");
        let mut ids: Vec<String> = resp
            .transaction_states
            .iter()
            .map(|t| t.transactional_id.to_string())
            .collect();
        ids.sort();
        (resp.error_code, ids)
    };
    let ids = |v: &[&str]| v.iter().map(|i| i.to_string()).collect::<Vec<_>>();
    let every = ids(&["orders-1", "orders-2", "payments-1"]);
    assert_eq!(
        list(2, Some("orders-.*"), vec![]),
        (0, ids(&["orders-1", "orders-2"]))
    );
    assert_eq!(
        list(2, Some("orders"), vec![]),
        (0, vec![]),
        "a prefix is no match"
    );
    assert_eq!(
        list(2, Some(".*-1"), vec!["Empty"]),
        (0, ids(&["orders-1", "payments-1"]))
    );
    assert_eq!(list(2, Some(".*-1"), vec!["Ongoing"]), (0, vec![]));
    assert_eq!(list(2, Some(""), vec![]), (0, every.clone()));
    assert_eq!(list(2, None, vec![]), (0, every.clone()));
    assert_eq!(list(1, None, vec![]), (0, every));
    assert_eq!(
        list(2, Some("orders-("), vec![]),
        (INVALID_REGULAR_EXPRESSION, vec![])
    );
}
