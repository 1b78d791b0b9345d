//! A produce-and-consume run over a secured connection, shared by the
//! security tests against Kafka and against Sluice.

use sluice_harness::client::endpoint::Endpoint;
use sluice_harness::report::files::read_run_json;
use sluice_harness::run::sweep::{run_workload, RunOptions};
use sluice_harness::workload::parse;
use std::path::Path;

/// Runs a produce-and-consume workload with `props` as its common client
/// config against `bootstrap`; every message must be acknowledged and
/// consumed, with no client error on the way.
pub fn run_secured(name: &str, bootstrap: &str, props: &str, seconds: u32) {
    let indented: String = props.lines().map(|l| format!("  {l}\n")).collect();
    let text = format!(
        "name: {name}\npartitionsPerTopic: 2\nmessageSize: 200\nproducerRate: 500\n\
         testDurationSeconds: {seconds}\nwarmupDurationSeconds: 0.5\ncommonConfig: |\n{indented}"
    );
    let f = parse(Path::new("secured.yaml"), &text, None).unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut opts = RunOptions::quiet(out.path().to_path_buf(), None);
    opts.bootstrap = Some(Endpoint::parse(bootstrap).unwrap());
    let dir = run_workload(&f, &opts).unwrap_or_else(|e| panic!("{name}: {e}"));
    let run = read_run_json(&dir).unwrap();
    let p = &run.points[0];
    assert!(p.sent >= 1_000, "{name}: only {} messages sent", p.sent);
    assert_eq!(p.errors, 0, "{name}: {:?}", p.error_samples);
    assert!(p.error_samples.is_empty(), "{name}: {:?}", p.error_samples);
    assert_eq!(p.unsent, 0, "{name}: {p:?}");
    assert_eq!(p.unconsumed, 0, "{name}: {p:?}");
    assert!(p.end_to_end.count > 0, "{name}: nothing consumed");
}
