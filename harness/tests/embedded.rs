//! End to end against the embedded Sluice broker: a two-point sweep runs,
//! messages are produced and consumed, and every output file is written.

use sluice_harness::report::files::read_run_json;
use sluice_harness::run::sweep::{run_workload, RunOptions};
use sluice_harness::workload::parse;
use std::path::Path;
use std::time::Duration;

#[test]
fn a_small_sweep_runs_against_the_embedded_broker() {
    let text = "name: smoke\npartitionsPerTopic: 2\nmessageSize: 100\nproducerRate: 500\ntestDurationSeconds: 2\nwarmupDurationSeconds: 0.5\nproducer:\n  compression.type: lz4\nsweep:\n  acks: [1, all]\n";
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
    }
    for f in [
        "run.json",
        "report.html",
        "point-0-r0.publish.hgrm",
        "point-1-r0.hlog",
    ] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    // An embedded run refuses replication it cannot provide.
    let rf3 = parse(
        Path::new("rf.yaml"),
        "name: rf\nmessageSize: 10\ntopic:\n  replication.factor: 3\n",
        None,
    )
    .unwrap();
    let e = run_workload(&rf3, &opts).unwrap_err();
    assert!(e.contains("replication factor 3"), "{e}");
}
