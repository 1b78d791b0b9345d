//! Transactions through more clients: each commits a transaction, aborts
//! one and commits another; its read_committed consumer reads exactly the
//! committed records and, where the client lets it choose, its
//! read_uncommitted consumer reads them all. All clients are installed by
//! `.ci/run`; a missing one fails the test rather than skipping it.

mod common;

use common::{create_topic, run_client, Broker};
use std::process::Command;

/// A broker with a few `__transaction_state` partitions, so that the
/// transactional ids land on different coordinators' partitions.
fn txn_broker() -> Broker {
    Broker::start(
        2,
        &[
            "transaction.state.log.num.partitions=4",
            "group.initial.rebalance.delay.ms=0",
        ],
    )
}

#[test]
fn franz_go_commits_aborts_and_transforms_in_a_group_transact_session() {
    // franz-go from the Go module proxy, pinned by tests/go/franz/go.sum.
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/go/franz");
    let out_dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("franz-txn");
    let bin = out_dir.join("franz-txn");
    let build = Command::new("go")
        .args(["build", "-o"])
        .arg(&bin)
        .arg("./txn")
        .current_dir(src)
        .env("GOFLAGS", "-mod=readonly")
        .output()
        .expect("go is installed (apt-get install golang-go)");
    assert!(
        build.status.success(),
        "building the franz-go transactions test failed:\n{}",
        String::from_utf8_lossy(&build.stderr)
    );
    let broker = txn_broker();
    create_topic(&broker, "franz-txn", 3);
    create_topic(&broker, "franz-txn-out", 2);
    let bin = bin.to_str().expect("a UTF-8 path");
    let out = run_client(
        "franz-go transactions",
        &[
            "200",
            bin,
            &broker.bootstrap(),
            "franz-txn",
            "franz-txn-out",
            "300",
        ],
        || format!("broker log:\n{}", broker.log()),
    );
    assert!(out.contains("franz-go transactions: ok"), "{out}");
    common::passed("franz-go", &["transactions"]);
}

#[test]
fn kafkajs_commits_and_aborts_and_its_read_committed_group_skips_the_aborted() {
    // KafkaJS from `npm ci` in engine/tests/node.
    let broker = txn_broker();
    create_topic(&broker, "kafkajs-txn", 3);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/node/transactions.js");
    let out = run_client(
        "KafkaJS transactions",
        &[
            "200",
            "node",
            script,
            &broker.bootstrap(),
            "kafkajs-txn",
            "200",
        ],
        || format!("broker log:\n{}", broker.log()),
    );
    assert!(out.contains("kafkajs transactions: ok"), "{out}");
    common::passed("kafkajs", &["transactions"]);
}

fn python_transactions(client: &str, topic: &str) {
    let broker = txn_broker();
    create_topic(&broker, topic, 3);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/txn_clients.py");
    let out = run_client(
        &format!("{client} transactions"),
        &[
            "200",
            "python3",
            script,
            client,
            &broker.bootstrap(),
            topic,
            "200",
        ],
        || format!("broker log:\n{}", broker.log()),
    );
    assert!(out.contains(&format!("{client} transactions: ok")), "{out}");
    common::passed(client, &["transactions"]);
}

#[test]
fn aiokafka_commits_and_aborts_and_its_read_committed_consumer_skips_the_aborted() {
    python_transactions("aiokafka", "aiokafka-txn");
}

#[test]
fn kafka_python_commits_and_aborts_and_its_read_committed_consumer_skips_the_aborted() {
    python_transactions("kafka-python", "kafka-python-txn");
}

#[test]
fn sarama_commits_and_aborts_and_its_read_committed_consumer_skips_the_aborted() {
    // IBM sarama from the Go module proxy, pinned by
    // tests/go/saramatxn/go.sum (Debian's sarama predates transactions).
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/go/saramatxn");
    let out_dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("saramatxn");
    let bin = out_dir.join("saramatxn");
    let build = Command::new("go")
        .args(["build", "-o"])
        .arg(&bin)
        .arg(".")
        .current_dir(src)
        .env("GOFLAGS", "-mod=readonly")
        .output()
        .expect("go is installed (apt-get install golang-go)");
    assert!(
        build.status.success(),
        "building the sarama transactions test failed:\n{}",
        String::from_utf8_lossy(&build.stderr)
    );
    let broker = txn_broker();
    create_topic(&broker, "sarama-txn", 3);
    let bin = bin.to_str().expect("a UTF-8 path");
    let out = run_client(
        "sarama transactions",
        &["200", bin, &broker.bootstrap(), "sarama-txn", "200"],
        || format!("broker log:\n{}", broker.log()),
    );
    assert!(out.contains("sarama transactions: ok"), "{out}");
    common::passed("sarama", &["transactions"]);
}
