//! Offsets committed in transactions, through clients: the Java client's
//! consume-transform-produce loop (sendOffsetsToTransaction with its
//! group metadata) copies what a read_committed consumer reads, once,
//! and its group's stable offsets are those it committed; a
//! confluent-kafka (librdkafka) application of the same shape, killed
//! with SIGKILL at random points 20 times and restarted, writes every
//! input record exactly once, and its group's committed offsets are the
//! input's end.

mod common;

use common::{create_topic, java_classpath, run_client, Broker};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/eos_app.py");

#[test]
fn java_consume_transform_produce_commits_offsets_in_its_transactions() {
    let classpath = java_classpath();
    let broker = Broker::start(2, &["group.initial.rebalance.delay.ms=0"]);
    // The classic protocol's generation, and KIP-848's member epoch, go
    // with the offsets (TxnOffsetCommit v3+).
    for protocol in ["classic", "consumer"] {
        let topic = format!("java-txn-{protocol}");
        create_topic(&broker, &topic, 3);
        let out = run_client(
            &format!("the Java exactly-once copy ({protocol} group)"),
            &[
                "300",
                "java",
                "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
                "-cp",
                &classpath,
                "sluice.ExactlyOnceCopyCheck",
                &broker.bootstrap(),
                &topic,
                "3",
                protocol,
            ],
            || format!("broker log:\n{}", broker.log()),
        );
        assert!(out.contains("transactions ok"), "unexpected output:\n{out}");
    }
    common::passed("java", &["transactions"]);
}

/// A small xorshift generator: the kill points differ per run, and the
/// seed printed on failure replays them.
struct Rng(u64);

impl Rng {
    fn next_below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

const KILLS: usize = 20;
const RECORDS: usize = 3_000;

#[test]
fn consume_transform_produce_survives_kill9_exactly_once() {
    let seed = std::env::var("TXN_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    println!("kill points from seed {seed} (TXN_KILL_SEED={seed} replays them)");
    let mut rng = Rng(seed);
    let broker = Broker::start(2, &["group.initial.rebalance.delay.ms=0"]);
    create_topic(&broker, "eos-in", 3);
    create_topic(&broker, "eos-out", 3);
    let bootstrap = broker.bootstrap();
    let context = || format!("seed {seed}; broker log:\n{}", broker.log());
    let records = RECORDS.to_string();
    run_client(
        "producing the input",
        &[
            "120", "python3", SCRIPT, "produce", &bootstrap, "eos-in", &records, "3",
        ],
        context,
    );
    let app = [
        SCRIPT,
        "process",
        &bootstrap,
        "eos-in",
        "eos-out",
        "eos-group",
        "eos-app",
    ];
    for kill in 0..KILLS {
        let mut child = Command::new("python3")
            .args(app)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("starting the application");
        // Anywhere from start-up (joining, fencing the killed instance)
        // to the middle of its transactions.
        let after = Duration::from_millis(200 + rng.next_below(3_000));
        let start = Instant::now();
        while start.elapsed() < after {
            if child.try_wait().expect("polling the application").is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // kill() is SIGKILL: no transaction is ended, nothing flushed.
        let _ = child.kill();
        let status = child.wait().expect("reaping the application");
        println!("run {kill}: killed after {after:?} ({status})");
    }
    run_client(
        "the application's last run",
        &[
            "240",
            "python3",
            SCRIPT,
            "process",
            &bootstrap,
            "eos-in",
            "eos-out",
            "eos-group",
            "eos-app",
        ],
        || format!("seed {seed}; broker log:\n{}", broker.log()),
    );
    let out = run_client(
        "checking exactly once",
        &[
            "180",
            "python3",
            SCRIPT,
            "verify",
            &bootstrap,
            "eos-in",
            "eos-out",
            "eos-group",
            &records,
        ],
        || format!("seed {seed}; broker log:\n{}", broker.log()),
    );
    assert!(out.contains("exactly once"), "unexpected output:\n{out}");
    common::passed("librdkafka", &["transactions"]);
}
