//! `sluice topics` and `sluice configs` against a running broker: a topic
//! created, listed, described, reconfigured and deleted, each step read
//! back through `--json`.

mod common;

use common::Broker;
use serde_json::Value;
use std::process::Command;

/// Runs `sluice ARGS... --bootstrap B`: (success, stdout, stderr).
fn sluice(bootstrap: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .args(["--bootstrap", bootstrap, "--timeout-ms", "60000"])
        .output()
        .expect("run sluice");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs a command that must succeed and returns its stdout.
fn ok(bootstrap: &str, args: &[&str]) -> String {
    let (success, stdout, stderr) = sluice(bootstrap, args);
    assert!(success, "sluice {args:?} failed: {stderr}\n{stdout}");
    stdout
}

fn json(bootstrap: &str, args: &[&str]) -> Value {
    let stdout = ok(bootstrap, args);
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {stdout}"))
}

/// The value `configs describe --topic` shows for `key`, if it lists it.
fn topic_config(bootstrap: &str, topic: &str, key: &str) -> Option<String> {
    let entries = json(
        bootstrap,
        &["configs", "describe", "--topic", topic, "--json"],
    );
    entries
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == key)
        .map(|e| e["value"].as_str().unwrap().to_string())
}

#[test]
fn topics_are_created_listed_described_reconfigured_and_deleted() {
    let broker = Broker::start(2, &[]);
    let b = broker.bootstrap();

    let out = ok(
        &b,
        &[
            "topics",
            "create",
            "orders",
            "--partitions",
            "3",
            "--config",
            "retention.ms=60000",
        ],
    );
    assert!(out.contains("Created topic orders"), "{out}");

    let list = json(&b, &["topics", "list", "--json"]);
    let orders = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "orders")
        .unwrap_or_else(|| panic!("orders not listed: {list}"));
    assert_eq!(orders["partitions"], 3);
    assert_eq!(orders["replication_factor"], 1);

    let described = json(&b, &["topics", "describe", "orders", "--json"]);
    let partitions = described[0]["partitions"].as_array().unwrap();
    assert_eq!(partitions.len(), 3);
    for (i, p) in partitions.iter().enumerate() {
        assert_eq!(p["partition"], i as i64);
        assert_eq!(p["replicas"], p["isr"], "{p}");
        assert!(p["leader"].as_i64().unwrap() >= 0, "{p}");
    }
    let table = ok(&b, &["topics", "describe", "orders"]);
    assert_eq!(table.lines().count(), 4, "{table}");

    assert_eq!(
        topic_config(&b, "orders", "retention.ms").as_deref(),
        Some("60000")
    );
    ok(
        &b,
        &[
            "topics",
            "alter-config",
            "orders",
            "--set",
            "max.message.bytes=2000000",
            "--delete",
            "retention.ms",
        ],
    );
    assert_eq!(
        topic_config(&b, "orders", "max.message.bytes").as_deref(),
        Some("2000000")
    );
    assert_eq!(topic_config(&b, "orders", "retention.ms"), None);
    let all = json(
        &b,
        &[
            "configs", "describe", "--topic", "orders", "--all", "--json",
        ],
    );
    assert!(
        all.as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "retention.ms"),
        "--all lists defaults too: {all}"
    );

    ok(&b, &["topics", "delete", "orders"]);
    let list = json(&b, &["topics", "list", "--json"]);
    assert!(
        !list
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "orders"),
        "{list}"
    );
}

#[test]
fn topic_commands_fail_with_kafkas_error_names() {
    let broker = Broker::start(1, &[]);
    let b = broker.bootstrap();
    ok(&b, &["topics", "create", "dup", "--partitions", "1"]);

    let (success, _, stderr) = sluice(&b, &["topics", "create", "dup"]);
    assert!(!success);
    assert!(stderr.contains("TOPIC_ALREADY_EXISTS"), "{stderr}");

    let (success, _, stderr) = sluice(&b, &["topics", "describe", "missing"]);
    assert!(!success);
    assert!(stderr.contains("UNKNOWN_TOPIC_OR_PARTITION"), "{stderr}");

    let (success, _, stderr) = sluice(
        &b,
        &["topics", "alter-config", "dup", "--set", "no.such.key=1"],
    );
    assert!(!success);
    assert!(stderr.contains("no.such.key"), "{stderr}");

    let (success, _, stderr) = sluice(&b, &["topics", "alter-config", "dup"]);
    assert!(!success);
    assert!(stderr.contains("nothing to change"), "{stderr}");

    let (success, _, stderr) = sluice(&b, &["topics", "create", "bad", "--config", "novalue"]);
    assert!(!success);
    assert!(stderr.contains("KEY=VALUE"), "{stderr}");
}
