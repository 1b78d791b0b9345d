//! What a run reports at its edges, against a fake broker whose behaviour
//! is known: a schedule the broker cannot take (unsent messages), a broker
//! that never answers (the flush deadline), a slow consumer (the drain),
//! the interval rows and their phases, and the interval log as
//! HdrHistogram's own tools read it.
//!
//! No assertion here is about speed: each fake broker is far slower (or
//! far faster) than the harness, so what the report must say follows from
//! the broker's behaviour, not from how fast this machine is.

mod common;

use common::{Behaviour, FakeBroker};
use sluice_harness::report::files::{read_run_json, RunJson};
use sluice_harness::run::result::{Phase, PointResult};
use sluice_harness::run::sweep::{run_workload, RunOptions};
use sluice_harness::workload::parse;
use std::path::{Path, PathBuf};
use std::time::Duration;

const FLUSH_CAUSE: &str = "unacknowledged at the end-of-run flush deadline";

fn run(broker: &FakeBroker, yaml: &str) -> (RunJson, PathBuf, tempfile::TempDir) {
    let f = parse(Path::new("edges.yaml"), yaml, None).unwrap();
    let out = tempfile::tempdir().unwrap();
    let opts = RunOptions::quiet(out.path().to_path_buf(), Some(broker.addr));
    let dir = run_workload(&f, &opts).unwrap();
    (read_run_json(&dir).unwrap(), dir, out)
}

/// Every message handed to the client was acknowledged (in some second of
/// the load) or failed (for some cause): nothing vanishes.
fn assert_every_sent_message_accounted_for(p: &PointResult) {
    let acked: u64 = p.intervals.iter().map(|r| r.publish_msgs).sum();
    let failed: u64 = p.errors_by_cause.values().sum();
    assert_eq!(
        acked + failed,
        p.sent,
        "acked {acked} + failed {failed} != sent {}: {:?}",
        p.sent,
        p.errors_by_cause
    );
}

#[test]
fn a_schedule_the_broker_cannot_take_reports_unsent_messages_and_is_not_sustained() {
    // 500 msg/s of capacity against 20,000 msg/s asked for, with a buffer
    // of a few batches: the generator falls behind at once.
    let mut b = Behaviour::new(Duration::from_millis(1), 2);
    b.capacity = Some(500.0);
    let broker = FakeBroker::with(b);
    let yaml = "name: unsent\npartitionsPerTopic: 2\nmessageSize: 100\nsubscriptionsPerTopic: 0\n\
producerRate: 20000\ntestDurationSeconds: 3\nwarmupDurationSeconds: 0\nproducer:\n  acks: 1\n  \
linger.ms: 1\n  batch.size: 4096\n  buffer.memory: 16384\n";
    let (run, _, _tmp) = run(&broker, yaml);
    let p = &run.points[0];
    // 3 s of a 20,000 msg/s schedule is 60,000 messages; the broker takes
    // about 1,500 in that time and the buffer holds about 100.
    assert!(p.unsent > 40_000, "unsent {}", p.unsent);
    let s = p.sustain.as_ref().expect("a paced point is judged");
    assert!(!s.sustained, "{s:?}");
    assert!(s.why_not.iter().any(|w| w.contains("never sent")), "{s:?}");
    // The unsent messages are in the latency as lower bounds: the
    // histogram counts them, and its p99 reaches into seconds.
    assert!(
        p.publish_latency.count >= p.unsent,
        "{:?}",
        p.publish_latency
    );
    assert!(
        p.publish_latency.p99_us > 1_000_000,
        "{:?}",
        p.publish_latency
    );
    assert_every_sent_message_accounted_for(p);
}

#[test]
fn messages_unanswered_at_the_flush_deadline_are_errors() {
    let broker = FakeBroker::start(Duration::from_millis(1), 2);
    // No Produce is ever answered.
    let now = std::time::Instant::now();
    broker.stall_between(now, now + Duration::from_secs(3_600));
    let yaml = "name: silent\npartitionsPerTopic: 2\nmessageSize: 100\nsubscriptionsPerTopic: 0\n\
producerRate: 500\ntestDurationSeconds: 2\nwarmupDurationSeconds: 0\nproducer:\n  acks: 1\n  \
linger.ms: 1\n";
    let (run, _, _tmp) = run(&broker, yaml);
    let p = &run.points[0];
    assert!(p.sent > 0);
    assert_eq!(p.errors_by_cause.get(FLUSH_CAUSE), Some(&p.sent), "{p:?}");
    assert_eq!(p.publish_latency.count, 0);
    assert!(
        p.errors > 0 && p.error_rate > 0.99,
        "{} {}",
        p.errors,
        p.error_rate
    );
    assert!(!p.sustain.as_ref().unwrap().sustained);
    assert_every_sent_message_accounted_for(p);
}

#[test]
fn a_slow_consumer_leaves_unconsumed_messages_counted_as_lower_bounds() {
    // Each fetch waits 300 ms and carries one batch per partition: a few
    // dozen messages a second, against 1,000 produced.
    let mut b = Behaviour::new(Duration::from_millis(1), 2);
    b.fetch_delay = Duration::from_millis(300);
    b.fetch_batches = 1;
    let broker = FakeBroker::with(b);
    let yaml =
        "name: slow-consumer\npartitionsPerTopic: 2\nmessageSize: 100\nsubscriptionsPerTopic: 1\n\
consumerAssignment: manual\nproducerRate: 1000\ntestDurationSeconds: 4\nwarmupDurationSeconds: 0\n\
producer:\n  acks: 1\n  linger.ms: 1\n";
    let (run, _, _tmp) = run(&broker, yaml);
    let p = &run.points[0];
    let acked: u64 = p.intervals.iter().map(|r| r.publish_msgs).sum();
    let consumed: u64 = p.intervals.iter().map(|r| r.consume_msgs).sum();
    assert_eq!(acked, p.sent, "every message was acknowledged");
    assert!(p.unconsumed > 0, "{p:?}");
    assert_eq!(
        consumed + p.unconsumed,
        acked,
        "consumed + unconsumed = acked"
    );
    assert_eq!(p.unconsumed_by_subscription.len(), 1, "{p:?}");
    assert_eq!(
        p.unconsumed_by_subscription.values().sum::<u64>(),
        p.unconsumed
    );
    // Never consumed: at least the drain's 10 s each.
    assert!(p.end_to_end.max_us >= 9_000_000, "{:?}", p.end_to_end);
    let s = p.sustain.as_ref().unwrap();
    assert!(
        !s.sustained && s.why_not.iter().any(|w| w.contains("backlog")),
        "{s:?}"
    );
    let last = p.intervals.last().unwrap();
    assert!(last.backlog_msgs.unwrap() > 0);
}

#[test]
fn interval_rows_start_at_the_load_name_their_phase_and_sum_to_the_whole() {
    let broker = FakeBroker::start(Duration::from_millis(1), 2);
    let yaml = "name: rows\npartitionsPerTopic: 2\nmessageSize: 100\nsubscriptionsPerTopic: 1\n\
consumerAssignment: manual\nproducerRate: 1000\ntestDurationSeconds: 3\nwarmupDurationSeconds: 2\n\
producer:\n  acks: 1\n  linger.ms: 1\n";
    let (run, dir, _tmp) = run(&broker, yaml);
    let p = &run.points[0];
    assert_eq!(p.warmup_s, 2.0);
    assert_eq!(p.intervals[0].second, 0);
    let phases: Vec<Phase> = p.intervals.iter().map(|r| r.phase).collect();
    assert_eq!(
        &phases[..5],
        &[
            Phase::Warmup,
            Phase::Warmup,
            Phase::Measure,
            Phase::Measure,
            Phase::Measure
        ]
    );
    assert!(
        phases[5..].iter().all(|ph| *ph == Phase::Drain),
        "{phases:?}"
    );
    // Every acknowledgement and every consumed message is in some row,
    // the last partial second included.
    let acked: u64 = p.intervals.iter().map(|r| r.publish_msgs).sum();
    let consumed: u64 = p.intervals.iter().map(|r| r.consume_msgs).sum();
    assert_eq!(acked, p.sent);
    assert_eq!(consumed, acked);
    assert_eq!(p.unconsumed, 0);
    assert_eq!(p.unsent, 0);
    assert!(p.sustain.as_ref().unwrap().sustained, "{:?}", p.sustain);
    // 1,000 msg/s, so about 2,000 per second of each phase: the rows of
    // the measured window hold the window's acks give or take the
    // messages in flight at its edges.
    let measured: u64 = p
        .intervals
        .iter()
        .filter(|r| r.phase == Phase::Measure)
        .map(|r| r.publish_msgs)
        .sum();
    assert!(
        measured.abs_diff(p.publish_latency.count) < 200,
        "{measured} vs {:?}",
        p.publish_latency
    );
    check_interval_log_with_hdrhistogram(&dir, p);
}

/// The `.hlog` read by HdrHistogram's Python implementation: its counts
/// are the rows' counts, its values nanoseconds, its start the load's.
fn check_interval_log_with_hdrhistogram(dir: &Path, p: &PointResult) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/hlog.py");
    let log = dir.join(format!("point-{}-r{}.hlog", p.index, p.repeat));
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg(&log)
        .output()
        .expect("running python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    // `tag second count p50_ns` per interval, then `start <unix s>`.
    let mut publish = 0;
    let mut p50s = Vec::new();
    let mut start = None;
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            ["publish", second, count, p50] => {
                let second: u64 = second.parse().unwrap();
                let row = p.intervals.iter().find(|r| r.second == second).unwrap();
                assert_eq!(
                    row.publish_msgs,
                    count.parse::<u64>().unwrap(),
                    "second {second}"
                );
                publish += row.publish_msgs;
                p50s.push(p50.parse::<u64>().unwrap());
            }
            ["e2e", ..] => {}
            ["start", unix] => start = Some(unix.parse::<f64>().unwrap()),
            _ => panic!("unexpected line {line}"),
        }
    }
    assert_eq!(publish, p.sent);
    // The fake broker answers after 1 ms: p50s are around a million ns,
    // never around a thousand (µs written as if ns).
    assert!(p50s.iter().all(|v| *v >= 500_000), "{p50s:?}");
    let start = start.expect("a StartTime");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    // The load started after the run did and well before the file was read.
    assert!(
        now - start > 5.0 && now - start < 600.0,
        "start {start}, now {now}"
    );
}

#[test]
fn acks_0_counts_a_message_once_its_request_is_written() {
    let broker = FakeBroker::start(Duration::from_millis(1), 2);
    let yaml = "name: acks0\npartitionsPerTopic: 2\nmessageSize: 100\nsubscriptionsPerTopic: 0\n\
producerRate: 1000\ntestDurationSeconds: 2\nwarmupDurationSeconds: 0\nproducer:\n  acks: 0\n  \
linger.ms: 1\n  enable.idempotence: false\n";
    let (run, _, _tmp) = run(&broker, yaml);
    let p = &run.points[0];
    assert_every_sent_message_accounted_for(p);
    assert_eq!(p.errors, 0);
    // The broker saw every message the report counts as done.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while broker.produced.load(std::sync::atomic::Ordering::Relaxed) < p.sent
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        broker.produced.load(std::sync::atomic::Ordering::Relaxed),
        p.sent
    );
}

/// A leader-epoch refusal (the leader moved on, or our metadata is
/// behind) is retried after fresh metadata, as the Java client does, and
/// the retry is acknowledged.
#[test]
fn a_fenced_leader_epoch_refreshes_metadata_and_the_retry_is_acknowledged() {
    let broker = FakeBroker::start(Duration::from_millis(1), 1);
    let text = "name: fenced\npartitionsPerTopic: 1\nmessageSize: 100\nsubscriptionsPerTopic: 0\nproducer:\n  acks: 1\n  linger.ms: 1\n";
    let (mut p, clock, mut rec) = common::producer_on(&broker, text);
    // FENCED_LEADER_EPOCH (74) for the first answer.
    broker.refuse_produce(74, 1);
    let before = broker.metadata_requests();
    let now = clock.now_ns();
    p.send(0, None, &[7u8; 100], now, now, &mut rec).unwrap();
    common::flush_producer(&mut p, &clock, &mut rec);
    assert_eq!((rec.totals.messages, rec.totals.errors), (1, 0));
    assert_eq!(
        broker.produced.load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert!(
        broker.metadata_requests() > before,
        "the producer retried without asking for metadata"
    );
}
