//! The harness consumer against an embedded cluster of three brokers: one
//! consumer of partitions led by every broker keeps a fetch in flight to
//! each leader at once, in incremental fetch sessions, so a leader holding
//! its fetch for `fetch.max.wait.ms` delays nobody else's records.

use sluice_harness::client::admin;
use sluice_harness::client::conn::Connection;
use sluice_harness::client::consumer::Consumer;
use sluice_harness::measure::clock::Clock;
use sluice_harness::measure::recorder::Recorder;
use sluice_harness::target::start_embedded;
use sluice_harness::workload::props::ConsumerSettings;
use sluice_protocol::messages::messages::produce_request::{
    PartitionProduceData, TopicProduceData,
};
use sluice_protocol::messages::messages::{ApiKey, ProduceRequest, ProduceResponse};
use sluice_protocol::record_batch::BatchBuilder;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

const PARTITIONS: i32 = 3;
const PER_PARTITION: u64 = 200;
/// Generous: a failure, not a timing assertion.
const DEADLINE: Duration = Duration::from_secs(30);

/// Appends `count` records to `partition` of `topic` through its leader,
/// each value starting with its send time as the producer writes it.
fn produce(md: &admin::ClusterMetadata, clock: &Clock, topic: &str, partition: i32, count: u64) {
    let (_, addr) = md.leader(topic, partition).unwrap();
    let mut conn = Connection::connect(addr, Duration::from_secs(10)).unwrap();
    let now_ms = clock.unix_us(clock.now_ns()) / 1_000;
    let mut b = BatchBuilder::new(now_ms);
    for i in 0..count {
        let mut value = clock.unix_us(clock.now_ns()).to_be_bytes().to_vec();
        value.extend_from_slice(&i.to_be_bytes());
        b.push(now_ms, None, Some(&value), &[]);
    }
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(admin::topic_name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(b.finish().into()))])]);
    let resp: ProduceResponse = conn.roundtrip_at(ApiKey::Produce, 9, &req).unwrap();
    assert_eq!(resp.responses[0].partition_responses[0].error_code, 0);
}

/// Fetches until `total` records have been consumed in all.
fn consume_until(c: &mut Consumer, rec: &mut Recorder, total: u64, context: &str) {
    let start = Instant::now();
    while rec.totals.messages < total {
        assert!(
            start.elapsed() < DEADLINE,
            "{context}: consumed {} of {total}; errors {:?}",
            rec.totals.messages,
            c.client_errors
        );
        c.fetch_once(rec).unwrap();
    }
    assert_eq!(
        rec.totals.messages, total,
        "{context}: consumed more than produced"
    );
}

#[test]
fn one_consumer_fetches_from_every_leader_at_once_in_fetch_sessions() {
    // Brokers in processes of their own, as `sluice-bench run` starts them.
    sluice_harness::target::set_broker_program(Path::new(env!("CARGO_BIN_EXE_sluice-bench")));
    let target = start_embedded(3, 1).unwrap();
    let bootstrap = target.bootstrap();
    let topic = "spread".to_string();
    let mut conn = Connection::connect(bootstrap, Duration::from_secs(10)).unwrap();
    let topics = [topic.clone()];
    admin::create_topics(&mut conn, &topics, PARTITIONS as u32, 1, &BTreeMap::new()).unwrap();
    let md = admin::wait_for_leaders(&mut conn, &topics, DEADLINE).unwrap();
    let leaders: BTreeSet<i32> = (0..PARTITIONS)
        .map(|p| md.leader(&topic, p).unwrap().0)
        .collect();
    assert_eq!(leaders.len(), 3, "one partition led by each broker: {md:?}");

    let clock = Clock::start();
    for p in 0..PARTITIONS {
        produce(&md, &clock, &topic, p, PER_PARTITION);
    }
    // Leaders with nothing new hold a fetch for a minute.
    let settings = ConsumerSettings {
        fetch_max_wait_ms: 60_000,
        auto_offset_reset_earliest: true,
        ..ConsumerSettings::default()
    };
    let partitions: Vec<(String, i32)> = (0..PARTITIONS).map(|p| (topic.clone(), p)).collect();
    let mut c = Consumer::new(clock, settings, &partitions, &md, bootstrap).unwrap();
    let mut rec = Recorder::new(0, 0, u64::MAX);
    let all = PER_PARTITION * PARTITIONS as u64;
    consume_until(&mut c, &mut rec, all, "the backlog");
    // The first fetches opened a session with every leader.
    assert_eq!(c.fetch_sessions(), 3);
    // New records on one partition arrive while the two other leaders
    // hold their (incremental) fetches.
    for p in 0..PARTITIONS {
        produce(&md, &clock, &topic, p, 50);
        consume_until(
            &mut c,
            &mut rec,
            all + 50 * (p as u64 + 1),
            "one partition's news",
        );
    }
    assert_eq!(c.fetch_sessions(), 3);
    let positions: Vec<i64> = c.positions().iter().map(|(_, _, o)| *o).collect();
    assert_eq!(
        positions,
        vec![PER_PARTITION as i64 + 50; PARTITIONS as usize]
    );
    assert!(c.client_errors.is_empty(), "{:?}", c.client_errors);
}
