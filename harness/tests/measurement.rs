//! The measurement itself, checked against a fake broker whose Produce
//! responses are delayed by a known amount: the reported latency must match
//! the delay, and a stall must show up under open-loop load.

mod common;

use common::FakeBroker;
use sluice_harness::run::point::{prepare, run_load, LoadSpec};
use sluice_harness::workload::{parse, Workload};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

fn workload(rate: u32, partitions: u32) -> Workload {
    let text = format!(
        "name: m\nmessageSize: 100\npartitionsPerTopic: {partitions}\nsubscriptionsPerTopic: 0\nproducerRate: {rate}\nproducer:\n  acks: 1\n  linger.ms: 0\n"
    );
    parse(Path::new("m.yaml"), &text, None).unwrap().points[0]
        .workload
        .clone()
}

fn spec(rate: f64, warmup_ms: u64, test_ms: u64) -> LoadSpec {
    LoadSpec {
        rate,
        steps: Vec::new(),
        warmup: Duration::from_millis(warmup_ms),
        test: Duration::from_millis(test_ms),
        consumers: false,
        backlog_bytes: 0,
        threads: 1,
        pin: false,
        seed: 1,
        watched: Vec::new(),
        in_process_broker: false,
        share: None,
    }
}

#[test]
fn p50_matches_a_known_server_delay() {
    let delay = Duration::from_millis(20);
    let broker = FakeBroker::start(delay, 4);
    let w = workload(200, 4);
    let p = prepare(broker.addr, &w, "delay").unwrap();
    let out = run_load(
        &p,
        &w,
        &spec(200.0, 500, 3_000),
        &AtomicBool::new(false),
        &mut |_| {},
    )
    .unwrap();
    let h = &out.produce.latency;
    let p50 = h.value_at_quantile(0.5) as f64;
    assert!(
        out.produce.messages > 400,
        "acked only {}",
        out.produce.messages
    );
    // Latency counts from each message's intended send time and the
    // broker holds every answer for the delay, so no latency can be
    // shorter: a p50 below the delay is a measurement error. Above it, a
    // loaded machine adds its scheduling delays, so the upper bound is
    // generous: 80 ms above the delay.
    let delay_us = delay.as_micros() as f64;
    assert!(
        p50 >= delay_us,
        "p50 {p50} µs is below the {delay_us} µs the broker held each answer"
    );
    assert!(
        p50 < delay_us + 80_000.0,
        "p50 {p50} µs is far above the {delay_us} µs delay"
    );
    assert_eq!(out.produce.errors, 0);
}

#[test]
fn a_stall_shows_up_in_p99_under_open_loop() {
    let broker = FakeBroker::start(Duration::from_millis(2), 4);
    let w = workload(200, 4);
    let p = prepare(broker.addr, &w, "stall").unwrap();
    // The load starts ~0.2 s after run_load is called; stall 1 s of a 4 s
    // test, 1.5 s in.
    let t0 = Instant::now() + Duration::from_millis(200);
    broker.stall_between(
        t0 + Duration::from_millis(1_500),
        t0 + Duration::from_millis(2_500),
    );
    let out = run_load(
        &p,
        &w,
        &spec(200.0, 0, 4_000),
        &AtomicBool::new(false),
        &mut |_| {},
    )
    .unwrap();
    let h = &out.produce.latency;
    let p50 = h.value_at_quantile(0.5);
    let p99 = h.value_at_quantile(0.99);
    // A quarter of the messages were meant to go out during the stall, so
    // open-loop p99 is most of the stall; a closed-loop generator would have
    // sent only a handful of messages then and reported a tiny p99.
    assert!(p99 >= 500_000, "p99 {p99} µs hides a 1 s stall");
    assert!(
        p50 < 100_000,
        "p50 {p50} µs should stay near the 2 ms delay"
    );
}
