//! OpenMessaging Benchmark files run as OMB runs them: a workload with
//! `producerIncrementRate` raises its rate in OMB's steps, an OMB driver
//! file's `bootstrap.servers` is the target when none is given (named with
//! `--target-name`), and a field the harness does not act on is named in a
//! warning before the run.
//!
//! Against a fake broker that takes far more than the few hundred
//! messages a second asked for; what is checked is the schedule the
//! harness chose (the steps, and how many messages it meant to send), not
//! how fast anything went.

mod common;

use common::{Behaviour, FakeBroker};
use sluice_harness::report::files::read_run_json;
use sluice_harness::report::terminal::Summary;
use sluice_harness::run::result::RateStep;
use std::process::Command;
use std::time::Duration;

/// OMB's fields (durations in seconds, a Sluice extension, to stay short):
/// 100 msg/s, 100 more every second, up to 300.
const WORKLOAD: &str = "name: ramp\ntopics: 1\npartitionsPerTopic: 1\nmessageSize: 100\n\
subscriptionsPerTopic: 0\nproducersPerTopic: 1\nproducerRate: 300\nproducerStartRate: 100\n\
producerIncrementRate: 100\nproducerIncrementSeconds: 1\nmessageRateReceivedForSubscription: 50\n\
testDurationSeconds: 4\nwarmupDurationSeconds: 1\n";

#[test]
fn an_omb_ramp_rises_in_omb_steps_against_the_driver_files_broker() {
    let broker = FakeBroker::with(Behaviour::new(Duration::from_millis(1), 1));
    let tmp = tempfile::tempdir().unwrap();
    let workload = tmp.path().join("ramp.yaml");
    std::fs::write(&workload, WORKLOAD).unwrap();
    let driver = tmp.path().join("kafka.yaml");
    std::fs::write(
        &driver,
        format!(
            "name: Kafka\ndriverClass: io.openmessaging.benchmark.driver.kafka.KafkaBenchmarkDriver\n\
replicationFactor: 1\ncommonConfig: |\n  bootstrap.servers=PLAINTEXT://{}\nproducerConfig: |\n  acks=1\n  linger.ms=1\n",
            broker.addr
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sluice-bench"))
        .arg("run")
        .arg(&workload)
        .arg("--driver")
        .arg(&driver)
        .arg("--out")
        .arg(tmp.path().join("results"))
        .args(["--no-pin", "--json", "--target-name", "fake broker 1.0"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}");
    // The driver file's broker was chosen, and the choice said so.
    assert!(
        stderr.contains(&format!("target: {}", broker.addr))
            && stderr.contains("bootstrap.servers of the driver file"),
        "{stderr}"
    );
    // A field not acted on is named with its file and line.
    assert!(
        stderr.contains("ramp.yaml:11: messageRateReceivedForSubscription: ignored"),
        "{stderr}"
    );
    let summary: Summary = serde_json::from_slice(&out.stdout).unwrap();
    let run = read_run_json(std::path::Path::new(&summary.results)).unwrap();
    assert_eq!(run.warnings.len(), 1, "{:?}", run.warnings);
    assert_eq!(run.environment.target, broker.addr.to_string());
    // Named as the user named it; what ApiVersions told is kept beside.
    assert_eq!(
        run.environment.broker_version.as_deref(),
        Some("fake broker 1.0")
    );
    let protocol = run.environment.broker_protocol.as_deref().unwrap();
    assert!(protocol.contains("APIs (Produce v"), "{protocol}");
    let p = &run.points[0];
    // OMB's steps: the start rate, then +100 each second while at most
    // producerRate; the last holds to the end.
    let step = |from_s: f64, rate: f64| RateStep { from_s, rate };
    assert_eq!(
        p.rate_steps,
        [step(0.0, 100.0), step(1.0, 200.0), step(2.0, 300.0)]
    );
    // Asked for on average: (100 + 200 + 300 + 300) / 4.
    assert_eq!(p.target_rate, 225.0);
    assert_eq!(p.max_rate_found, None);
    // The generator followed the steps: 1 s of warm-up at 100, then 100,
    // 200, 300 and 300 (a constant 100 or 300 would be 500 or 1,500).
    // Every message meant for before the end was sent or counted unsent.
    let scheduled = p.sent + p.unsent;
    assert!(
        (998..=1_002).contains(&scheduled),
        "sent {} + unsent {}",
        p.sent,
        p.unsent
    );
}
