//! `__consumer_offsets` as a log: committed offsets survive kill -9, and
//! the log cleaner compacts it like any compacted topic (the latest
//! record of each key), so the topic stays small however many commits it
//! has seen; a kill -9 in the middle of a cleaning swap loses nothing.

mod common;

use common::{create_topic, segment_files, Broker};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(120);
const GROUP: &str = "compacting-group";
/// abs(Java hashCode of GROUP) % 2: where Kafka (and Sluice) keep it.
const GROUP_PARTITION: i32 = 1;

fn consumer(broker: &Broker) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", GROUP)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap()
}

/// Commits `offset` for partitions 0..4 of `topic`, retrying while the
/// coordinator is still being found.
fn commit(c: &BaseConsumer, topic: &str, offset: i64) {
    let mut tpl = TopicPartitionList::new();
    for p in 0..4 {
        tpl.add_partition_offset(topic, p, Offset::Offset(offset))
            .unwrap();
    }
    let start = Instant::now();
    while let Err(e) = c.commit(&tpl, CommitMode::Sync) {
        assert!(start.elapsed() < DEADLINE, "commit {offset} failed: {e}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn committed(c: &BaseConsumer, topic: &str) -> Vec<i64> {
    let mut tpl = TopicPartitionList::new();
    for p in 0..4 {
        tpl.add_partition(topic, p);
    }
    let start = Instant::now();
    loop {
        match c.committed_offsets(tpl.clone(), Duration::from_secs(10)) {
            Ok(list) => {
                return list
                    .elements()
                    .iter()
                    .map(|e| match e.offset() {
                        Offset::Offset(o) => o,
                        other => panic!("no committed offset: {other:?}"),
                    })
                    .collect()
            }
            Err(e) => assert!(start.elapsed() < DEADLINE, "committed(): {e}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Lines of the broker's log saying the cleaner finished a pass over
/// the group's offsets partition.
fn passes(broker: &Broker) -> usize {
    let partition = format!("partition={GROUP_PARTITION}");
    broker
        .log()
        .lines()
        .filter(|l| l.contains("cleaned log") && l.contains("__consumer_offsets"))
        .filter(|l| l.contains(&partition))
        .count()
}

#[test]
fn offsets_partition_is_compacted_and_survives_kill9() {
    let mut broker = Broker::start(
        2,
        &[
            "offsets.topic.num.partitions=2",
            "offsets.topic.segment.bytes=16384",
            "log.cleaner.backoff.ms=100",
        ],
    );
    create_topic(&broker, "orders", 4);
    let c = consumer(&broker);
    for offset in 1..=600 {
        commit(&c, "orders", offset);
    }
    drop(c);
    let partition = GROUP_PARTITION;
    let dir = broker.partition_dir("__consumer_offsets", partition);
    // 600 commits of four offsets fill about ten 16 KiB segments; the
    // cleaner leaves one segment of live records beside the active one.
    // The files go before the pass's line is logged: wait for both.
    let start = Instant::now();
    while segment_files(&dir).len() > 2 || passes(&broker) == 0 {
        assert!(
            start.elapsed() < DEADLINE,
            "{} segments left:\n{}",
            segment_files(&dir).len(),
            broker.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    broker.kill9();
    broker.restart();
    let c = consumer(&broker);
    assert_eq!(committed(&c, "orders"), vec![600; 4]);
    commit(&c, "orders", 601);
    drop(c);
    broker.stop();
    broker.restart();
    assert_eq!(committed(&consumer(&broker), "orders"), vec![601; 4]);
    // More commits, then a restart whose cleaner stops the process in
    // the middle of its swap (the cleaned copy committed, the old
    // segments still there): the next start finishes the swap.
    let c = consumer(&broker);
    for offset in 602..=1200 {
        commit(&c, "orders", offset);
    }
    drop(c);
    broker.stop();
    broker.set_env(&[("SLUICE_CLEANER_CRASH_AT", "swapped")]);
    let status = broker.restart_until_exit(DEADLINE);
    assert!(!status.success(), "stopped by the crash hook: {status}");
    assert!(broker
        .log()
        .contains("stopping at the cleaner's crash point"));
    broker.set_env(&[]);
    broker.restart();
    assert_eq!(committed(&consumer(&broker), "orders"), vec![1200; 4]);
    let start = Instant::now();
    while segment_files(&dir).len() > 2 {
        assert!(
            start.elapsed() < DEADLINE,
            "{} segments left:\n{}",
            segment_files(&dir).len(),
            broker.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    broker.kill9();
    broker.restart();
    assert_eq!(committed(&consumer(&broker), "orders"), vec![1200; 4]);
}
