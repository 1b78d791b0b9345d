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
//! And the search itself overshot: acknowledging most of a short unpaced
//! probe is not sustaining a rate, and a report said "max 650k msg/s"
//! where 250k was sustained. The search now brackets and bisects on the
//! sustainability check (`run/sustain.rs`), consumers running. Short
//! probes still passed above what a whole window carries (526,820 msg/s
//! searched, 280,823 delivered), so the measured window now confirms the
//! rate, stepping it down when it does not (`run/maxrate.rs`).
//!
//! These tests run against the fake broker. Its capacity is set far below
//! what the harness sends on any machine, so what they assert follows from
//! the broker's behaviour, not from how fast this machine is.

mod common;

use common::{flush_producer, producer_on, Behaviour, FakeBroker};
use sluice_harness::report::files::read_run_json;
use sluice_harness::run::result::ProbeKind;
use sluice_harness::run::sweep::{run_workload, RunOptions};
use sluice_harness::workload::parse;
use std::path::Path;
use std::time::{Duration, Instant};

/// Messages per second the fake broker's Produce server takes: far below
/// what the harness can send on any machine, so the search's answer
/// follows from the broker, not from this machine's speed.
const CAPACITY: f64 = 4_000.0;

#[test]
fn the_max_rate_search_finds_what_a_broker_of_known_capacity_sustains_with_consumers_running() {
    let mut b = Behaviour::new(Duration::from_millis(1), 4);
    b.capacity = Some(CAPACITY);
    let broker = FakeBroker::with(b);
    let text =
        "name: max-rate\npartitionsPerTopic: 4\nmessageSize: 100\nsubscriptionsPerTopic: 1\n\
consumerAssignment: manual\nproducerRate: 0\ntestDurationSeconds: 4\nwarmupDurationSeconds: 1\n\
producer:\n  acks: 1\n  linger.ms: 1\n  batch.size: 16384\n";
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
    let probes = &p.max_rate_search;
    eprintln!("found {found:.0} msg/s; probes {probes:?}");
    // The unpaced probe first, then paced ones, each judged.
    assert_eq!(probes[0].rate, 0.0, "{probes:?}");
    assert!(probes.len() >= 2, "{probes:?}");
    // What used to go wrong: a rate well above what the broker can take
    // reported as the maximum.
    assert!(found <= CAPACITY * 1.1, "found {found} msg/s: {probes:?}");
    assert!(found >= CAPACITY * 0.5, "found {found} msg/s: {probes:?}");
    for pr in probes.iter().filter(|pr| pr.rate > CAPACITY * 1.2) {
        assert!(!pr.sustained, "{pr:?} sustained above capacity");
    }
    // The rate reported is the one the point's measured window sustained,
    // recorded last among the attempts.
    assert_eq!(p.max_rate_confirmed, Some(true), "{probes:?}");
    let last = probes.last().unwrap();
    assert_eq!(last.kind, ProbeKind::Window, "{probes:?}");
    assert!(last.sustained && last.rate == found, "{probes:?}");
    assert!(p.sustain.as_ref().is_some_and(|s| s.sustained), "{p:?}");
    assert!(p.publish_rate_msgs > 0.0, "{p:?}");
    assert!(p.consume_rate_msgs > 0.0, "{p:?}");
    assert_eq!(p.errors, 0, "{:?}", p.error_samples);
}

#[test]
fn a_broker_that_slows_down_mid_run_marks_the_point_unsustained() {
    // 2,000 msg/s asked of a broker that takes 20,000 until a few seconds
    // into the run, then 500.
    let mut b = Behaviour::new(Duration::from_millis(1), 2);
    b.capacity = Some(20_000.0);
    let broker = FakeBroker::with(b);
    broker.slow_down_at(Instant::now() + Duration::from_secs(4), 500.0);
    let text = "name: slows\npartitionsPerTopic: 2\nmessageSize: 100\nsubscriptionsPerTopic: 0\n\
producerRate: 2000\ntestDurationSeconds: 6\nwarmupDurationSeconds: 0\nproducer:\n  acks: 1\n  \
linger.ms: 1\n";
    let f = parse(Path::new("slows.yaml"), text, None).unwrap();
    let out = tempfile::tempdir().unwrap();
    let opts = RunOptions::quiet(out.path().to_path_buf(), Some(broker.addr));
    let dir = run_workload(&f, &opts).unwrap();
    let p = &read_run_json(&dir).unwrap().points[0];
    let s = p.sustain.as_ref().expect("a paced point is judged");
    assert!(!s.sustained, "{p:?}");
    assert!(
        s.why_not
            .iter()
            .any(|w| w.contains("p99") || w.contains("lag")),
        "{s:?}"
    );
    assert!(s.p99_growth_ms_per_s > 0.0, "{s:?}");
}

#[test]
fn batches_closed_by_size_are_released_once_acknowledged() {
    let broker = FakeBroker::start(Duration::from_millis(1), 2);
    let text = "name: acct\npartitionsPerTopic: 2\nmessageSize: 100\nsubscriptionsPerTopic: 0\nproducer:\n  acks: 1\n  linger.ms: 1000\n  batch.size: 1024\n";
    let (mut p, clock, mut rec) = producer_on(&broker, text);
    let value = [7u8; 100];
    // Batches of ~1 KiB close by size long before the 1 s linger; the last,
    // partial one closes at the end.
    for _ in 0..500 {
        let now = clock.now_ns();
        p.send(0, None, &value, now, now, &mut rec).unwrap();
        p.poll(&mut rec);
    }
    // With the double count the producer stays pending forever.
    flush_producer(&mut p, &clock, &mut rec);
    assert!(
        !p.pending(),
        "{} bytes still held after every batch was acknowledged",
        p.buffered_bytes()
    );
    assert_eq!(rec.totals.messages, 500);
    assert_eq!(rec.totals.errors, 0);
}
