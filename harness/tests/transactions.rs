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
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Kafka's start-up takes 5–15 s on an idle machine, many times that on a
/// 2-core machine shared with compilers.
const READY_DEADLINE: Duration = Duration::from_secs(240);
/// Fetching the jars the first time (about 100 MB from Maven Central).
const FETCH_DEADLINE_S: &str = "900";
/// Liveness bound for a producer's flush or a consumer's catching up.
const DEADLINE: Duration = Duration::from_secs(120);
const CLUSTER_ID: &str = "c2x1aWNlLXR4YmVuY2gxMQ";
const COMMITTED: u64 = 3_000;
const ABORTED: u64 = 50;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn lib_dir() -> PathBuf {
    let out = Command::new("timeout")
        .arg(FETCH_DEADLINE_S)
        .arg(repo_root().join("scripts/kafka.sh"))
        .arg("fetch")
        .stderr(Stdio::inherit())
        .output()
        .expect("run scripts/kafka.sh fetch");
    assert!(
        out.status.success(),
        "scripts/kafka.sh fetch failed ({}); it needs Maven and Java 17+",
        out.status
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    PathBuf::from(stdout.trim().lines().last().expect("the jars' folder"))
}

fn java(lib: &Path, heap: &str) -> Command {
    let mut cmd = Command::new(std::env::var("JAVA").unwrap_or_else(|_| "java".into()));
    cmd.arg(format!("-Xmx{heap}"))
        .args(["-XX:+UseG1GC", "-Djava.awt.headless=true"])
        .arg("-cp")
        .arg(format!("{}/*", lib.display()));
    cmd
}

struct Kafka {
    child: Child,
    dir: tempfile::TempDir,
    addr: SocketAddr,
}

impl Kafka {
    fn start() -> Kafka {
        let lib = lib_dir();
        let dir = tempfile::tempdir().unwrap();
        let (port, controller) = (free_port(), free_port());
        // One partition of `__transaction_state` and of `__consumer_offsets`:
        // the default 50 take long to create on a loaded machine.
        let props = format!(
            "process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={data}
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
",
            data = dir.path().join("data").display(),
        );
        let props_path = dir.path().join("server.properties");
        std::fs::write(&props_path, props).unwrap();
        let tools_log = repo_root().join("scripts/kafka/log4j2-tools.properties");
        let format = java(&lib, "256m")
            .arg(format!(
                "-Dlog4j2.configurationFile={}",
                tools_log.display()
            ))
            .args(["kafka.tools.StorageTool", "format", "-t", CLUSTER_ID, "-c"])
            .arg(&props_path)
            .output()
            .expect("run Kafka's StorageTool");
        assert!(
            format.status.success(),
            "formatting Kafka's storage failed:\n{}{}",
            String::from_utf8_lossy(&format.stdout),
            String::from_utf8_lossy(&format.stderr)
        );
        let logs = dir.path().join("logs");
        std::fs::create_dir_all(&logs).unwrap();
        let stdout = std::fs::File::create(dir.path().join("stdout.log")).unwrap();
        let broker_log = repo_root().join("scripts/kafka/log4j2-broker.properties");
        let mut cmd = java(&lib, "512m");
        cmd.arg(format!("-Dkafka.logs.dir={}", logs.display()))
            .arg(format!(
                "-Dlog4j2.configurationFile={}",
                broker_log.display()
            ))
            .arg("kafka.Kafka")
            .arg(&props_path)
            .stdin(Stdio::null())
            .stdout(stdout.try_clone().unwrap())
            .stderr(stdout);
        // SAFETY: prctl is async-signal-safe; nothing else runs between
        // fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("start Kafka");
        let mut k = Kafka {
            child,
            dir,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        k.wait_ready();
        k
    }

    /// Until Metadata names the broker.
    fn wait_ready(&mut self) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("Kafka exited ({status}):\n{}", self.log_tail());
            }
            let listed = Connection::connect(self.addr, Duration::from_secs(5))
                .and_then(|mut c| admin::metadata(&mut c, Some(&[])))
                .map_or(0, |md| md.brokers.len());
            if listed >= 1 {
                return;
            }
            assert!(
                start.elapsed() < READY_DEADLINE,
                "Kafka not ready after {READY_DEADLINE:?}:\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn log_tail(&self) -> String {
        let mut out = String::new();
        for name in ["logs/server.log", "stdout.log"] {
            let text = std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(40);
            out.push_str(&format!("--- {name}\n{}\n", lines[from..].join("\n")));
        }
        out
    }
}

impl Drop for Kafka {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
