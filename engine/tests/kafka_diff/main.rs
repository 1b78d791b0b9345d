//! Differential tests: the same scripted scenarios against Apache Kafka
//! (a single KRaft node, `kafka.rs`) and against Sluice, answers compared
//! field by field (`compare.rs`). The intended differences, and why, are
//! in `docs/DIFFERENTIAL.md`.
//!
//! One Kafka for the whole binary: it takes far longer to start than the
//! scenarios take to run, so this test has its own `main` (`harness =
//! false`) that starts Kafka and Sluice once, runs every scenario (or those
//! whose names contain an argument) and stops both at the end.
//! Each scenario uses its own topic and group names on both brokers.

#[path = "../common/mod.rs"]
mod common;

mod admin;
mod compare;
mod groups;
mod intended;
mod kafka;
mod records;

use compare::{differences, Side, Versions};
use kafka_protocol::messages::TopicName;
use kafka_protocol::protocol::StrBytes;
use std::panic::{catch_unwind, AssertUnwindSafe};

type Scenario = fn(&mut Side);

const SCENARIOS: &[(&str, Scenario)] = &[
    ("create_topics", admin::create_topics),
    ("delete_topics", admin::delete_topics),
    ("describe_configs", admin::describe_configs),
    ("alter_configs", admin::alter_configs),
    ("create_partitions", admin::create_partitions),
    ("metadata", admin::metadata_cases),
    ("acls_without_authorizer", admin::acls_without_authorizer),
    ("api_versions_v5", admin::api_versions_v5),
    (
        "list_transactions_patterns",
        admin::list_transactions_patterns,
    ),
    ("produce", records::produce_cases),
    ("fetch", records::fetch_cases),
    ("list_offsets", records::list_offsets_cases),
    ("delete_records", records::delete_records_cases),
    ("idempotent_produce", records::idempotent_cases),
    ("leader_epochs", records::leader_epoch_cases),
    ("describe_cluster", records::describe_cluster_cases),
    ("describe_log_dirs", records::describe_log_dirs_cases),
    ("group_join_sync_heartbeat", groups::join_sync_heartbeat),
    ("group_offsets", groups::offsets),
    ("group_static_members", groups::static_members),
    ("group_listed", groups::listed),
    ("consumer_protocol", groups::consumer_protocol),
];

/// The settings Kafka's `server.properties` changes from Kafka's defaults
/// that DescribeConfigs shows, given to Sluice too (`kafka.rs`).
const SLUICE_OVERRIDES: [&str; 2] = [
    "group.initial.rebalance.delay.ms=0",
    "offsets.topic.num.partitions=1",
];

pub fn topic_name(name: &str) -> TopicName {
    TopicName(text(name))
}

pub fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a panic".into())
}

/// Whether the arguments (libtest's, as `cargo test` passes them) select
/// scenario `name`: it contains one of the filters, or there are none, and
/// it contains no `--skip` value. The values of libtest's other options
/// are not filters.
fn selected(name: &str, args: &[String]) -> bool {
    const WITH_VALUE: &[&str] = &["--test-threads", "--format", "--color", "--logfile", "-Z"];
    let (mut filters, mut skips) = (Vec::new(), Vec::new());
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--skip" {
            skips.extend(it.next());
        } else if WITH_VALUE.contains(&a.as_str()) {
            it.next();
        } else if !a.starts_with('-') {
            filters.push(a);
        }
    }
    (filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str())))
        && !skips.iter().any(|s| name.contains(s.as_str()))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        for (name, _) in SCENARIOS {
            println!("{name}: test");
        }
        return;
    }
    let chosen: Vec<_> = SCENARIOS
        .iter()
        .filter(|(name, _)| selected(name, &args))
        .collect();
    if chosen.is_empty() {
        println!("no scenario matches {args:?}");
        return;
    }
    let kafka = kafka::Kafka::start();
    let sluice = common::Broker::start(1, &SLUICE_OVERRIDES);
    let versions = Versions::negotiate(kafka.addr(), sluice.addr());
    println!("versions both brokers speak: {}", versions.describe());
    let mut failures = Vec::new();
    for (name, scenario) in chosen {
        let mut k = Side::new("kafka", kafka.addr(), versions.clone());
        let mut s = Side::new("sluice", sluice.addr(), versions.clone());
        let ran = catch_unwind(AssertUnwindSafe(|| {
            scenario(&mut k);
            scenario(&mut s);
        }));
        save_transcripts(name, &[&k, &s]);
        let found = match ran {
            Err(p) => vec![format!("panicked: {}", panic_text(&*p))],
            Ok(()) => differences(&k, &s),
        };
        if found.is_empty() {
            println!("test {name} ... ok");
        } else {
            println!("test {name} ... FAILED");
            failures.push(format!("---- {name}\n{}", found.join("\n")));
        }
    }
    if !failures.is_empty() {
        println!("\n{}", failures.join("\n\n"));
        println!(
            "\nKafka's log:\n{}\nSluice's log (end):\n{}",
            kafka.log_tail(),
            tail(&sluice.log(), 40)
        );
        drop(sluice);
        drop(kafka);
        std::process::exit(1);
    }
}

/// Both transcripts in full, for reading beside a difference:
/// `target/tmp/kafka_diff/<scenario>.<side>.txt`.
fn save_transcripts(name: &str, sides: &[&Side]) {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("kafka_diff");
    std::fs::create_dir_all(&dir).unwrap();
    for side in sides {
        let text: String = side
            .transcript
            .iter()
            .map(|(step, answer)| format!("== {step}\n{answer}\n"))
            .collect();
        std::fs::write(dir.join(format!("{name}.{}.txt", side.name)), text).unwrap();
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
