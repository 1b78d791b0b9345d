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

fn init(addr: SocketAddr, id: &str, timeout_ms: i32) -> (i16, (i64, i16)) {
    until_settled("InitProducerId", || {
        let req = InitProducerIdRequest::default()
            .with_transactional_id(Some(TransactionalId(s(id))))
            .with_transaction_timeout_ms(timeout_ms)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
        let resp: InitProducerIdResponse =
            call(&mut Raw::connect(addr), ApiKey::InitProducerId, 4, &req).expect("answer");
        (resp.error_code, (resp.producer_id.0, resp.producer_epoch))
    })
}

fn add_partitions(
    addr: SocketAddr,
    id: &str,
    p: (i64, i16),
    topic: &str,
    parts: &[i32],
) -> Vec<i16> {
    until_settled("AddPartitionsToTxn", || {
        let req = AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(TransactionalId(s(id)))
            .with_v3_and_below_producer_id(ProducerId(p.0))
            .with_v3_and_below_producer_epoch(p.1)
            .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default()
                .with_name(TopicName(s(topic)))
                .with_partitions(parts.to_vec())]);
        let resp: AddPartitionsToTxnResponse =
            call(&mut Raw::connect(addr), ApiKey::AddPartitionsToTxn, 3, &req).expect("answer");
        let codes: Vec<i16> = resp
            .results_by_topic_v3_and_below
            .iter()
            .flat_map(|t| {
                t.results_by_partition
                    .iter()
                    .map(|r| r.partition_error_code)
            })
            .collect();
        (codes[0], codes)
    })
    .1
}

fn end_txn(addr: SocketAddr, version: i16, id: &str, p: (i64, i16), commit: bool) -> i16 {
    until_settled("EndTxn", || {
        let req = EndTxnRequest::default()
            .with_transactional_id(TransactionalId(s(id)))
            .with_producer_id(ProducerId(p.0))
            .with_producer_epoch(p.1)
            .with_committed(commit);
        let resp: EndTxnResponse =
            call(&mut Raw::connect(addr), ApiKey::EndTxn, version, &req).expect("answer");
        (resp.error_code, ())
    })
    .0
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
    let mut b = small_broker(&["transaction.state.log.segment.bytes=1024"]);
    let addr = b.addr();
    let rounds = 100;
    let mut last = (0, 0);
    for _ in 0..rounds {
        let (code, p) = init(addr, "busy", 60_000);
        assert_eq!(code, 0);
        last = p;
    }
    assert_eq!(last.1, rounds - 1);
    // Small segments roll every few records; compaction keeps the one
    // live record per id and deletes the rest.
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
    let deadline = Instant::now() + READY_DEADLINE;
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

use sluice_engine::cluster::local::{LocalCluster, LocalClusterSpec};

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
    let mut spec = LocalClusterSpec::new(
        env!("CARGO_BIN_EXE_sluice").into(),
        dir.path().to_path_buf(),
        3,
    );
    spec.ports = (0..3).map(|_| common::free_port()).collect();
    spec.controller_ports = (0..3).map(|_| common::free_port()).collect();
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
