//! `--cores 2`: partitions spread over both shards, one produce request
//! spanning both shards is answered right, and connections land on both.

mod common;

use common::{Broker, Raw};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const PARTITIONS: i32 = 8;

/// Reads `key=value` from the broker's "shard stopped" line for `shard`.
fn shard_stat(log: &str, shard: usize, key: &str) -> u64 {
    let line = log
        .lines()
        .find(|l| l.contains("shard stopped") && l.contains(&format!("shard={shard} ")))
        .unwrap_or_else(|| panic!("no stop line for shard {shard} in:\n{log}"));
    let field = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .expect(key);
    field.parse().unwrap()
}

#[test]
fn two_shards_share_partitions_and_connections() {
    let mut broker = Broker::start(2, &[&format!("num.partitions={PARTITIONS}")]);
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("linger.ms", "50")
        .create()
        .unwrap();
    // linger.ms lets one request carry batches for every partition.
    for i in 0..4000 {
        let v = format!("m{i}");
        let p = i % PARTITIONS;
        producer
            .send(BaseRecord::<(), _>::to("spread").partition(p).payload(&v))
            .unwrap();
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(60)).unwrap();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", "unused")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset("spread", p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut seen = BTreeSet::new();
    let start = Instant::now();
    while seen.len() < 4000 {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "consumed {}",
            seen.len()
        );
        if let Some(m) = common::poll_message(&consumer, String::new) {
            let v = String::from_utf8(m.payload().unwrap().to_vec()).unwrap();
            let i: i32 = v[1..].parse().unwrap();
            assert_eq!(
                i % PARTITIONS,
                m.partition(),
                "message {i} in its partition"
            );
            assert!(seen.insert(i), "message {i} twice");
        }
    }
    // Many connections: the kernel's SO_REUSEPORT hash sends some to each shard.
    let mut conns: Vec<Raw> = (0..32).map(|_| Raw::connect(broker.addr())).collect();
    for (i, c) in conns.iter_mut().enumerate() {
        c.send(18, 0, i as i32, false, &[]);
        assert!(c.recv().is_some());
    }
    drop(conns);
    drop(consumer);
    drop(producer);
    broker.stop();
    let log = broker.log();
    for shard in 0..2 {
        assert!(
            shard_stat(&log, shard, "partitions") > 0,
            "shard {shard} owns partitions"
        );
        assert!(
            shard_stat(&log, shard, "connections") > 0,
            "shard {shard} served connections"
        );
    }
    let forwarded =
        shard_stat(&log, 0, "cross_shard_jobs") + shard_stat(&log, 1, "cross_shard_jobs");
    assert!(forwarded > 0, "requests were forwarded between shards");
}
