//! Max-rate mode (`producerRate: 0`) reported 0 msg/s, for two reasons.
//!
//! - The unpaced generator took each message's intended time from the clock
//!   and compared it with the time read just before the burst, so every
//!   burst stopped before its first message: nothing was ever sent, the
//!   probe measured 0 and the search "found" 0.
//! - The producer counted a batch against `buffer.memory` twice when it was
//!   closed by size (or by the end-of-run flush) and then sent: the phantom
//!   bytes filled the buffer under load, throttling the generator, and the
//!   final flush waited out its whole timeout for bytes that were never
//!   going to be acknowledged.
//!
//! These tests run against the fake broker and assert only that messages
//! flow and the accounting settles, never how fast.

mod common;

use common::FakeBroker;
use sluice_harness::client::producer::{wait, Producer};
use sluice_harness::measure::clock::Clock;
use sluice_harness::measure::recorder::Recorder;
use sluice_harness::report::files::read_run_json;
use sluice_harness::run::point::prepare;
use sluice_harness::run::sweep::{run_workload, RunOptions};
use sluice_harness::workload::parse;
use std::path::Path;
use std::time::Duration;

#[test]
fn the_max_rate_search_finds_a_rate_and_the_run_produces() {
    let broker = FakeBroker::start(Duration::from_millis(1), 4);
    let text = "name: max-rate\npartitionsPerTopic: 4\nmessageSize: 100\nsubscriptionsPerTopic: 0\nproducerRate: 0\ntestDurationSeconds: 1\nwarmupDurationSeconds: 0\nproducer:\n  acks: 1\n  linger.ms: 1\n  batch.size: 16384\n";
    let f = parse(Path::new("max-rate.yaml"), text, None).unwrap();
    let out = tempfile::tempdir().unwrap();
    let opts = RunOptions::quiet(out.path().to_path_buf(), Some(broker.addr));
    let dir = run_workload(&f, &opts).unwrap();
    let run = read_run_json(&dir).unwrap();
    assert_eq!(run.points.len(), 1);
    let p = &run.points[0];
    let found = p
        .max_rate_found
        .expect("max-rate mode records the rate found");
    assert!(found > 0.0, "the search found {found} msg/s");
    assert!(p.publish_rate_msgs > 0.0, "{p:?}");
    assert!(p.publish_latency.count > 0, "{:?}", p.publish_latency);
    assert_eq!(p.errors, 0, "{:?}", p.error_samples);
}

#[test]
fn batches_closed_by_size_are_released_once_acknowledged() {
    let broker = FakeBroker::start(Duration::from_millis(1), 2);
    let text = "name: acct\npartitionsPerTopic: 2\nmessageSize: 100\nsubscriptionsPerTopic: 0\nproducer:\n  acks: 1\n  linger.ms: 1000\n  batch.size: 1024\n";
    let w = parse(Path::new("acct.yaml"), text, None).unwrap().points[0]
        .workload
        .clone();
    let prepared = prepare(broker.addr, &w, "acct").unwrap();
    let clock = Clock::start();
    let mut p = Producer::new(
        clock,
        w.producer.clone(),
        &prepared.topics,
        &prepared.md,
        broker.addr,
        7,
    )
    .unwrap();
    let mut rec = Recorder::new(0, u64::MAX);
    let value = [7u8; 100];
    // Batches of ~1 KiB close by size long before the 1 s linger; the last,
    // partial one closes at the end.
    for _ in 0..500 {
        let now = clock.now_ns();
        p.send(0, None, &value, now, now, &mut rec).unwrap();
        p.poll(&mut rec);
    }
    p.close_all(&mut rec);
    // A liveness bound, not a speed check: with the double count the
    // producer stays pending forever.
    let deadline = clock.now_ns() + 30_000_000_000;
    let mut fds = Vec::new();
    while p.pending() && clock.now_ns() < deadline {
        p.poll(&mut rec);
        fds.clear();
        p.pollfds(&mut fds);
        wait(&clock, &mut fds, clock.now_ns() + 10_000_000);
    }
    assert!(
        !p.pending(),
        "{} bytes still held after every batch was acknowledged",
        p.buffered_bytes()
    );
    assert_eq!(rec.totals.messages, 500);
    assert_eq!(rec.totals.errors, 0);
}
