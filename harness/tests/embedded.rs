//! End to end against the embedded Sluice broker: a two-point sweep runs
//! (consumers in a group, then assigned by hand), messages are produced and
//! consumed, and every output file is written; a replicated workload runs
//! on an embedded cluster of three brokers; a durable point reports the
//! disk's bare sync latency next to its publish latency.

use sluice_harness::report::files::read_run_json;
use sluice_harness::run::sweep::{run_workload, RunOptions};
use sluice_harness::workload::parse;
use std::path::Path;
use std::time::Duration;

#[test]
fn a_small_sweep_runs_against_the_embedded_broker() {
    let text = "name: smoke\npartitionsPerTopic: 2\nmessageSize: 100\nproducerRate: 500\ntestDurationSeconds: 2\nwarmupDurationSeconds: 0.5\nproducer:\n  compression.type: lz4\n  acks: all\nsweep:\n  consumerAssignment: [group, manual]\n";
    // Brokers in processes of their own, as `sluice-bench run` starts them.
    sluice_harness::target::set_broker_program(Path::new(env!("CARGO_BIN_EXE_sluice-bench")));
    let f = parse(Path::new("smoke.yaml"), text, None).unwrap();
    let out = tempfile::tempdir().unwrap();
    let opts = RunOptions::quiet(out.path().to_path_buf(), None);
    let dir = run_workload(&f, &opts).unwrap();
    let run = read_run_json(&dir).unwrap();
    assert_eq!(run.points.len(), 2);
    for p in &run.points {
        assert!(
            p.publish_latency.count > 500,
            "{}: {:?}",
            p.label,
            p.publish_latency
        );
        assert!(p.end_to_end.count > 500, "{}: {:?}", p.label, p.end_to_end);
        assert_eq!(p.errors, 0, "{}: {:?}", p.label, p.error_samples);
        assert!(p.publish_latency.p50_us < Duration::from_secs(1).as_micros() as u64);
        // The cost of each process: the harness and the broker's own.
        let cpu = p.cpu.as_ref().expect("every point accounts CPU");
        let names: Vec<&str> = cpu.processes.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["sluice-bench", "broker 1"], "{cpu:?}");
        assert!(
            cpu.processes
                .iter()
                .all(|c| c.peak_rss_mib.is_some_and(|m| m > 1.0)),
            "{cpu:?}"
        );
        assert!(
            cpu.client_cpu_s_per_gb.is_some() && cpu.broker_cpu_s_per_gb.is_some(),
            "{cpu:?}"
        );
        assert_eq!(p.unsent + p.unconsumed, 0, "{}: {p:?}", p.label);
        // The disk is probed only where the broker flushes per append.
        assert!(p.disk_sync.is_none(), "{:?}", p.disk_sync);
    }
    // Only the group point waits for a rebalance, and says how long it took.
    assert!(run.points[0].consumer_group_settle_s.is_some());
    assert!(run.points[1].consumer_group_settle_s.is_none());
    for f in [
        "run.json",
        "report.html",
        "point-0-r0.publish.hgrm",
        "point-1-r0.hlog",
    ] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    // Replication runs on an embedded cluster of three brokers.
    let rf3 = parse(
        Path::new("rf.yaml"),
        "name: rf\nmessageSize: 100\nproducerRate: 300\ntestDurationSeconds: 2\nwarmupDurationSeconds: 0.5\nproducer:\n  acks: all\ntopic:\n  replication.factor: 3\n  min.insync.replicas: 2\n",
        None,
    )
    .unwrap();
    let dir = run_workload(&rf3, &opts).unwrap();
    let run = read_run_json(&dir).unwrap();
    assert!(
        run.environment.target.contains("cluster of 3 brokers"),
        "{}",
        run.environment.target
    );
    let p = &run.points[0];
    let brokers = p
        .cpu
        .as_ref()
        .unwrap()
        .processes
        .iter()
        .filter(|c| c.broker)
        .count();
    assert_eq!(brokers, 3);
    assert!(p.publish_latency.count > 300, "{:?}", p.publish_latency);
    assert_eq!(p.errors, 0, "{:?}", p.error_samples);
}

#[test]
fn a_point_that_flushes_per_append_reports_the_disks_bare_sync_latency() {
    sluice_harness::target::set_broker_program(Path::new(env!("CARGO_BIN_EXE_sluice-bench")));
    let f = parse(
        Path::new("durable.yaml"),
        "name: durable\nmessageSize: 100\nproducersPerTopic: 2\nproducerRate: 200\ntestDurationSeconds: 2\nwarmupDurationSeconds: 0.5\nproducer:\n  acks: all\ntopic:\n  flush.messages: 1\n",
        None,
    )
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    let dir = run_workload(&f, &RunOptions::quiet(out.path().to_path_buf(), None)).unwrap();
    let run = read_run_json(&dir).unwrap();
    let p = &run.points[0];
    assert_eq!(p.errors, 0, "{:?}", p.error_samples);
    let d = p
        .disk_sync
        .as_ref()
        .expect("a durable point probes the disk");
    assert!(
        d.latency.count > 0 && d.latency.p50_us <= d.latency.p99_us,
        "{d:?}"
    );
    assert_eq!(d.write_bytes, 4096);
    let report = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(
        report.contains("bare fdatasync"),
        "the report names the yardstick"
    );
    // `--sync-probe DIR` probes a point that does not flush per append.
    let lazy = parse(
        Path::new("lazy.yaml"),
        "name: lazy\nmessageSize: 100\nproducerRate: 200\ntestDurationSeconds: 1\nwarmupDurationSeconds: 0.5\n",
        None,
    )
    .unwrap();
    let probed = tempfile::tempdir().unwrap();
    let mut opts = RunOptions::quiet(out.path().to_path_buf(), None);
    opts.sync_probe = Some(probed.path().to_path_buf());
    let run = read_run_json(&run_workload(&lazy, &opts).unwrap()).unwrap();
    let d = run.points[0].disk_sync.as_ref().expect("probed on request");
    assert_eq!(d.dir, probed.path().display().to_string());
    assert!(d.latency.count > 0, "{d:?}");
}

/// The harness's transactional workload against Sluice itself: two
/// transactional producers in transactions of 100 messages, read_committed
/// consumers; every message is committed and consumed exactly once, no
/// transaction aborts, and the commit latency is in the results.
#[test]
fn a_transactional_workload_commits_and_consumes_every_message_once() {
    let text = "name: tx\npartitionsPerTopic: 3\nmessageSize: 100\nproducerRate: 2000\n\
                producersPerTopic: 2\ntestDurationSeconds: 4\nwarmupDurationSeconds: 1\n\
                producer:\n  acks: all\n  linger.ms: 2\n  transactional.id: tx-embedded\n  \
                transaction.messages: 100\n\
                consumer:\n  isolation.level: read_committed\n";
    sluice_harness::target::set_broker_program(Path::new(env!("CARGO_BIN_EXE_sluice-bench")));
    let f = parse(Path::new("tx.yaml"), text, None).unwrap();
    let out = tempfile::tempdir().unwrap();
    let opts = RunOptions::quiet(out.path().to_path_buf(), None);
    let dir = run_workload(&f, &opts).unwrap();
    let run = read_run_json(&dir).unwrap();
    let p = &run.points[0];
    assert_eq!(p.errors, 0, "{:?}", p.error_samples);
    assert!(p.error_samples.is_empty(), "{:?}", p.error_samples);
    // Every message sent was committed and consumed: none left unsent or
    // unread, and none read twice (a duplicate counts as an error).
    assert_eq!(p.unsent, 0, "{p:?}");
    assert_eq!(p.unconsumed, 0, "{p:?}");
    assert!(p.sent >= 5_000, "only {} sent", p.sent);
    // Counted per second over the whole load: as many consumed as
    // acknowledged (committed), and as many acknowledged as sent.
    let published: u64 = p.intervals.iter().map(|r| r.publish_msgs).sum();
    let consumed: u64 = p.intervals.iter().map(|r| r.consume_msgs).sum();
    assert_eq!(published, p.sent, "{:?}", p.intervals);
    assert_eq!(consumed, published, "{:?}", p.intervals);
    let t = p.transactions.as_ref().expect("a transactional point");
    assert_eq!(t.messages_per_transaction, 100);
    assert_eq!(t.aborted, 0, "{t:?}");
    assert!(t.committed > 0 && t.rate_per_s > 0.0, "{t:?}");
    assert_eq!(t.commit_latency.count, t.committed);
    assert!(t.commit_latency.p50_us > 0 && t.commit_latency.p99_us >= t.commit_latency.p50_us);
    assert!(t.begin_to_commit.p50_us >= t.commit_latency.p50_us, "{t:?}");
    assert!(dir.join("point-0-r0.commit.hgrm").exists());
    assert!(p.end_to_end.count > 0);
}
