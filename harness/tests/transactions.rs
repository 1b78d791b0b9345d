//! The harness's transactional producer and read_committed consumer
//! against Apache Kafka itself: one KRaft node (the jars
//! `scripts/kafka.sh fetch` brings) on loopback.
//!
//! First the client alone: producer A leaves a transaction open with its
//! messages acknowledged; producer B takes the same transactional id, which
//! fences A and aborts A's transaction; A's commit then fails with a
//! fencing error and A stops. B commits thousands of messages in
//! transactions of 100 over three partitions. A read_committed consumer
//! reads B's messages exactly once and none of A's; a read_uncommitted one
//! reads both. Then a whole transactional workload: every message is
//! committed and consumed, and the results carry the commit latency.
//!
//! Workload values that cannot work are refused naming file, line and field.

mod kafka;
use kafka::{common_properties, free_port, KafkaNode};
use sluice_harness::client::admin;
use sluice_harness::client::conn::Connection;
use sluice_harness::client::consumer::Consumer;
use sluice_harness::client::endpoint::Endpoint;
use sluice_harness::client::producer::{wait, Producer};
use sluice_harness::measure::clock::Clock;
use sluice_harness::measure::recorder::Recorder;
use sluice_harness::report::files::read_run_json;
use sluice_harness::run::point;
use sluice_harness::run::sweep::{run_workload, RunOptions};
use sluice_harness::workload::error::WorkloadError;
use sluice_harness::workload::parse;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

/// Liveness bound for a producer's flush or a consumer's catching up.
const DEADLINE: Duration = Duration::from_secs(120);
const CLUSTER_ID: &str = "c2x1aWNlLXR4YmVuY2gxMQ";
const COMMITTED: u64 = 3_000;
const ABORTED: u64 = 50;

struct Kafka {
    /// Runs until the test ends.
    _node: KafkaNode,
    addr: SocketAddr,
}

impl Kafka {
    fn start() -> Kafka {
        let dir = tempfile::tempdir().unwrap();
        let (port, controller) = (free_port(), free_port());
        let props = format!(
            "listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
{}",
            common_properties(controller, &dir.path().join("data"))
        );
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let node = kafka::start(dir, &props, CLUSTER_ID, &[], addr);
        Kafka { _node: node, addr }
    }
}

/// Polls `p` until `done` holds, up to [`DEADLINE`]: a liveness bound.
fn poll_until(
    p: &mut Producer,
    clock: &Clock,
    rec: &mut Recorder,
    what: &str,
    done: impl Fn(&Producer) -> bool,
) {
    let start = Instant::now();
    let mut fds = Vec::new();
    while !done(p) {
        assert!(
            start.elapsed() < DEADLINE,
            "{what} within {DEADLINE:?}: {:?}",
            p.client_errors
        );
        p.poll(rec);
        fds.clear();
        p.pollfds(&mut fds);
        wait(clock, &mut fds, clock.now_ns() + 10_000_000);
    }
}

/// Sends `n` messages whose values start with the send time and carry
/// their index.
fn send(p: &mut Producer, clock: &Clock, rec: &mut Recorder, n: u64) {
    let mut i = 0;
    while i < n {
        let now = clock.now_ns();
        let mut v = clock.unix_us(now).to_be_bytes().to_vec();
        v.extend_from_slice(&i.to_be_bytes());
        if p.send(0, None, &v, now, now, rec).is_ok() {
            i += 1;
            continue;
        }
        // Refused while a transaction commits: poll, then send again.
        assert!(p.fenced().is_none(), "{:?}", p.client_errors);
        p.poll(rec);
        let mut fds = Vec::new();
        p.pollfds(&mut fds);
        wait(clock, &mut fds, clock.now_ns() + 1_000_000);
    }
}

/// Reads the topic from the start until every partition's position is at
/// `ends` (the log end: every transaction there has ended); the count.
fn consume_all(
    kafka: &Kafka,
    prepared: &point::Prepared,
    isolation: &str,
    ends: &std::collections::BTreeMap<i32, i64>,
) -> u64 {
    let yaml = format!(
        "name: read\nmessageSize: 16\npartitionsPerTopic: 3\nconsumer:\n  isolation.level: {isolation}\n"
    );
    let f = parse(Path::new("read.yaml"), &yaml, None).unwrap();
    let settings = f.points[0].workload.consumer.clone();
    assert_eq!(settings.read_committed, isolation == "read_committed");
    let topic = &prepared.topics[0];
    let parts: Vec<(String, i32)> = (0..3).map(|p| (topic.clone(), p)).collect();
    let clock = Clock::start();
    let mut c = Consumer::new(clock, settings, &parts, &prepared.md, kafka.addr).unwrap();
    let mut rec = Recorder::new(0, 0, u64::MAX);
    let start = Instant::now();
    let mut n = 0;
    loop {
        let at_end = c
            .positions()
            .iter()
            .all(|(_, p, o)| *o >= ends.get(p).copied().unwrap_or(0));
        if at_end {
            return n;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{isolation}: read {n}, positions {:?} of {ends:?}: {:?}",
            c.positions(),
            c.client_errors
        );
        n += c.fetch_once(&mut rec).unwrap();
    }
}

#[test]
fn transactions_commit_abort_and_fence_against_kafka() {
    let kafka = Kafka::start();
    fenced_and_committed_transactions(&kafka);
    transactional_workload(&kafka);
}

fn fenced_and_committed_transactions(kafka: &Kafka) {
    let yaml = "name: tx\nmessageSize: 16\npartitionsPerTopic: 3\nproducer:\n  \
                transactional.id: tx-client\n  transaction.messages: 100\n  linger.ms: 1\n";
    let f = parse(Path::new("tx.yaml"), yaml, None).unwrap();
    let w = f.points[0].workload.clone();
    assert!(w.producer.transactional() && w.producer.enable_idempotence);
    let prepared = point::prepare(kafka.addr, &w, "txbench").unwrap();
    let clock = Clock::start();
    let mut rec = Recorder::new(0, 0, u64::MAX);
    let producer = |messages: u64| {
        let mut s = w.producer.clone();
        s.transaction_messages = messages;
        Producer::new(clock, s, &prepared.topics, &prepared.md, kafka.addr, 7).unwrap()
    };

    // A: its messages acknowledged, its transaction still open.
    let mut a = producer(1_000_000);
    assert_eq!(a.transactional_id(), Some("tx-client"));
    send(&mut a, &clock, &mut rec, ABORTED);
    // Sent once they lingered; the transaction stays open.
    poll_until(&mut a, &clock, &mut rec, "A's batches acknowledged", |p| {
        p.buffered_bytes() == 0
    });
    assert!(
        a.pending(),
        "{:?} {:?}",
        a.client_errors,
        rec.totals.errors_by_cause
    );
    // B fences A, and the coordinator aborts A's transaction: A's commit
    // is refused.
    let mut b = producer(100);
    a.close_all(&mut rec);
    poll_until(&mut a, &clock, &mut rec, "A fenced", |p| {
        p.fenced().is_some()
    });
    let why = a.fenced().unwrap().to_string();
    assert!(why.contains("fenced") && why.contains("tx-client"), "{why}");
    assert!(!a.pending());
    assert_eq!(
        a.send(0, None, b"late", 0, 0, &mut rec),
        Err(sluice_harness::client::producer::SendRefused::Fenced)
    );
    assert_eq!(rec.totals.transactions_aborted, 0);
    assert_eq!(
        rec.totals.errors, ABORTED,
        "{:?}",
        rec.totals.errors_by_cause
    );

    let mut brec = Recorder::new(0, 0, u64::MAX);
    send(&mut b, &clock, &mut brec, COMMITTED);
    b.close_all(&mut brec);
    poll_until(
        &mut b,
        &clock,
        &mut brec,
        "B's transactions committed",
        |p| !p.pending(),
    );
    assert!(b.client_errors.is_empty(), "{:?}", b.client_errors);
    assert_eq!(brec.totals.errors, 0, "{:?}", brec.totals.errors_by_cause);
    assert_eq!(brec.totals.messages, COMMITTED);
    assert_eq!(brec.totals.transactions, COMMITTED / 100);
    assert_eq!(brec.totals.commit.len(), COMMITTED / 100);
    let acked: u64 = b.acknowledged().map(|(_, n)| n).sum();
    assert_eq!(acked, COMMITTED);

    // Every transaction has ended: the log end is the last stable offset.
    let mut conn = Connection::connect(kafka.addr, Duration::from_secs(10)).unwrap();
    let ends =
        admin::list_offsets(&mut conn, &prepared.topics[0], &[0, 1, 2], admin::LATEST).unwrap();
    assert_eq!(
        consume_all(kafka, &prepared, "read_committed", &ends),
        COMMITTED
    );
    assert_eq!(
        consume_all(kafka, &prepared, "read_uncommitted", &ends),
        COMMITTED + ABORTED
    );
    point::cleanup(&prepared);
}

/// A transactional workload: every message committed and read once by a
/// read_committed consumer; the commit latency is in the results.
fn transactional_workload(kafka: &Kafka) {
    let text = "name: tx workload\npartitionsPerTopic: 3\nmessageSize: 100\nproducerRate: 2000\n\
                producersPerTopic: 2\ntestDurationSeconds: 4\nwarmupDurationSeconds: 1\n\
                producer:\n  transactional.id: tx-run\n  transaction.messages: 200\n  linger.ms: 2\n\
                consumer:\n  isolation.level: read_committed\n";
    let f = parse(Path::new("tx-run.yaml"), text, None).unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut opts = RunOptions::quiet(out.path().to_path_buf(), None);
    opts.bootstrap = Some(Endpoint::from(kafka.addr));
    let dir = run_workload(&f, &opts).unwrap();
    let run = read_run_json(&dir).unwrap();
    let p = &run.points[0];
    assert_eq!(p.errors, 0, "{:?}", p.error_samples);
    assert!(p.error_samples.is_empty(), "{:?}", p.error_samples);
    assert_eq!(p.unsent, 0, "{p:?}");
    assert_eq!(p.unconsumed, 0, "{p:?}");
    assert!(p.sent >= 5_000, "only {} sent", p.sent);
    let t = p.transactions.as_ref().expect("a transactional point");
    assert_eq!(t.messages_per_transaction, 200);
    assert_eq!(t.aborted, 0);
    assert!(t.committed > 0 && t.rate_per_s > 0.0, "{t:?}");
    assert_eq!(t.commit_latency.count, t.committed);
    assert!(t.commit_latency.p50_us > 0 && t.commit_latency.p99_us >= t.commit_latency.p50_us);
    assert!(t.begin_to_commit.p50_us >= t.commit_latency.p50_us, "{t:?}");
    assert!(dir.join("point-0-r0.commit.hgrm").exists());
    assert!(p.end_to_end.count > 0);
}

fn invalid(text: &str) -> (Option<usize>, String, String) {
    match parse(Path::new("w.yaml"), text, None).unwrap_err() {
        WorkloadError::Invalid {
            file,
            line,
            field,
            message,
        } => {
            assert_eq!(file, Path::new("w.yaml"));
            (line, field, message)
        }
        other => panic!("unexpected {other}"),
    }
}

#[test]
fn bad_transaction_values_name_file_line_and_field() {
    let base = "name: x\nmessageSize: 10\n";
    let (line, field, _) = invalid(&format!(
        "{base}producer:\n  transactional.id: t\n  transaction.messages: many\n"
    ));
    assert_eq!(
        (line, field.as_str()),
        (Some(5), "producer.transaction.messages")
    );
    let (line, field, msg) = invalid(&format!("{base}producer:\n  transaction.messages: 10\n"));
    assert_eq!(
        (line, field.as_str()),
        (Some(4), "producer.transaction.messages")
    );
    assert!(msg.contains("transactional.id"), "{msg}");
    let (line, field, _) = invalid(&format!("{base}producer:\n  transactional.id: \"\"\n"));
    assert_eq!(
        (line, field.as_str()),
        (Some(4), "producer.transactional.id")
    );
    let (line, field, msg) = invalid(&format!(
        "{base}producer:\n  acks: 1\n  transactional.id: t\n"
    ));
    assert_eq!((line, field.as_str()), (Some(4), "producer.acks"));
    assert!(msg.contains("transactional.id"), "{msg}");
    let (line, field, _) = invalid(&format!(
        "{base}producer:\n  transactional.id: t\n  enable.idempotence: false\n"
    ));
    assert_eq!(
        (line, field.as_str()),
        (Some(5), "producer.enable.idempotence")
    );
    let (line, field, _) = invalid(&format!(
        "{base}consumer:\n  isolation.level: serializable\n"
    ));
    assert_eq!(
        (line, field.as_str()),
        (Some(4), "consumer.isolation.level")
    );
    let (line, field, _) = invalid(&format!(
        "{base}producer:\n  transactional.id: t\nsweep:\n  transaction.messages: [100, lots]\n"
    ));
    assert_eq!(line, Some(6));
    assert!(field.contains("transaction.messages"), "{field}");
}

/// Transactions are swept like any setting: 0 messages per transaction is
/// the idempotent baseline of the same sweep.
#[test]
fn transaction_settings_sweep() {
    let text = "name: x\nmessageSize: 10\nproducer:\n  transactional.id: t\n\
                sweep:\n  transaction.messages: [0, 100, 1000]\n  isolation.level: [read_uncommitted, read_committed]\n";
    let f = parse(Path::new("w.yaml"), text, None).unwrap();
    assert_eq!(f.points.len(), 6);
    let got: Vec<(bool, u64, bool)> = f
        .points
        .iter()
        .map(|p| {
            let w = &p.workload;
            (
                w.producer.transactional(),
                w.producer.transaction_messages,
                w.consumer.read_committed,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (false, 0, false),
            (false, 0, true),
            (true, 100, false),
            (true, 100, true),
            (true, 1000, false),
            (true, 1000, true),
        ]
    );
    assert!(f
        .points
        .iter()
        .all(|p| p.workload.producer.enable_idempotence));
}
