//! The sticky partitioner (KIP-480) against the embedded Sluice broker: a
//! slow keyless producer, whose batches close on `linger.ms` rather than on
//! `batch.size`, still moves from partition to partition, so every
//! partition of the topic gets records.

use sluice_harness::client::admin::{self, LATEST};
use sluice_harness::client::conn::Connection;
use sluice_harness::client::producer::Producer;
use sluice_harness::measure::clock::Clock;
use sluice_harness::measure::recorder::Recorder;
use sluice_harness::target::start_embedded;
use sluice_harness::workload::props::ProducerSettings;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const PARTITIONS: i32 = 4;
const MESSAGES: u64 = 40;
/// Generous: a failure, not a timing assertion.
const DEADLINE: Duration = Duration::from_secs(60);

#[test]
fn a_slow_keyless_producer_moves_on_when_its_batch_lingers_out() {
    let target = start_embedded(1, 1).unwrap();
    let bootstrap = target.bootstrap();
    let topic = "sticky-slow".to_string();
    let mut conn = Connection::connect(bootstrap, Duration::from_secs(10)).unwrap();
    let topics = [topic.clone()];
    admin::create_topics(&mut conn, &topics, PARTITIONS as u32, 1, &BTreeMap::new()).unwrap();
    let md = admin::wait_for_leaders(&mut conn, &topics, DEADLINE).unwrap();

    let clock = Clock::start();
    let settings = ProducerSettings {
        linger_ms: 0,
        ..ProducerSettings::default()
    };
    let mut p = Producer::new(clock, settings, &topics, &md, bootstrap, 7).unwrap();
    let mut rec = Recorder::new(0, 0, u64::MAX);
    // One record at a time, each sent (its batch lingered out) before the
    // next: no batch ever fills.
    for i in 0..MESSAGES {
        let now = clock.now_ns();
        p.send(0, None, &i.to_be_bytes(), now, now, &mut rec)
            .unwrap();
        let t0 = Instant::now();
        while p.pending() {
            assert!(t0.elapsed() < DEADLINE, "produce: {:?}", p.client_errors);
            p.poll(&mut rec);
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    assert_eq!(rec.totals.messages, MESSAGES, "{:?}", p.client_errors);

    let ends = admin::list_offsets(&mut conn, &topic, &[0, 1, 2, 3], LATEST).unwrap();
    assert_eq!(ends.values().sum::<i64>(), MESSAGES as i64, "{ends:?}");
    assert!(
        ends.values().all(|n| *n > 0),
        "every partition gets records: {ends:?}"
    );
}

/// A batch that fills takes the batches of the broker's other partitions
/// with it, lingered or not, as the Java client drains a ready node: a
/// lone record on another partition goes in the same request instead of
/// waiting out its ten-minute linger (or a request of its own).
#[test]
fn a_full_batch_takes_the_other_partitions_batches_with_it() {
    use sluice_harness::client::partitioner::partition_for_key;
    let target = start_embedded(1, 1).unwrap();
    let bootstrap = target.bootstrap();
    let topic = "drain-together".to_string();
    let mut conn = Connection::connect(bootstrap, Duration::from_secs(10)).unwrap();
    let topics = [topic.clone()];
    admin::create_topics(&mut conn, &topics, 2, 1, &BTreeMap::new()).unwrap();
    let md = admin::wait_for_leaders(&mut conn, &topics, DEADLINE).unwrap();
    let key_on = |p: u32| {
        (0u32..)
            .map(|i| format!("k{i}").into_bytes())
            .find(|k| partition_for_key(k, 2) == p)
            .unwrap()
    };
    let (lone, busy) = (key_on(0), key_on(1));

    let clock = Clock::start();
    let settings = ProducerSettings {
        linger_ms: 600_000,
        batch_size: 1024,
        ..ProducerSettings::default()
    };
    let mut p = Producer::new(clock, settings, &topics, &md, bootstrap, 7).unwrap();
    let mut rec = Recorder::new(0, 0, u64::MAX);
    let value = [7u8; 100];
    let now = clock.now_ns();
    p.send(0, Some(&lone), &value, now, now, &mut rec).unwrap();
    // Enough for partition 1's first batch to fill and close.
    for _ in 0..12 {
        let now = clock.now_ns();
        p.send(0, Some(&busy), &value, now, now, &mut rec).unwrap();
        p.poll(&mut rec);
    }
    let t0 = Instant::now();
    while rec.totals.messages == 0 {
        assert!(t0.elapsed() < DEADLINE, "produce: {:?}", p.client_errors);
        p.poll(&mut rec);
        std::thread::sleep(Duration::from_millis(1));
    }
    let ends = admin::list_offsets(&mut conn, &topic, &[0, 1], LATEST).unwrap();
    assert_eq!(
        ends[&0], 1,
        "the lone record went with the full batch: {ends:?}"
    );
    assert!(ends[&1] > 0 && ends[&1] < 12, "{ends:?}");
}
