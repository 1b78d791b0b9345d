//! `security.protocol` swept like any setting on the embedded broker: one
//! run, a point per protocol, each producing and consuming over the
//! listener of its protocol with the certificate and user the harness made
//! for the run. The broker's own counters over each point say which
//! listener took the connections and which path carried the fetched bytes,
//! so a TLS point quietly measured over plaintext (or the other way round)
//! fails here rather than passing as a figure.

use sluice_harness::client::security::local;
use sluice_harness::report::files::read_run_json;
use sluice_harness::run::sweep::{run_workload, RunOptions};
use sluice_harness::workload::security::SecurityFor;
use sluice_harness::workload::{parse, parse_for};
use std::path::Path;

const LISTENERS: [&str; 4] = ["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"];

#[test]
fn security_protocol_sweeps_over_the_embedded_brokers_listeners() {
    // Brokers in processes of their own, as `sluice-bench run` starts them.
    sluice_harness::target::set_broker_program(Path::new(env!("CARGO_BIN_EXE_sluice-bench")));
    // The consumers log in with PLAIN, the producers with the default
    // SCRAM-SHA-512: both mechanisms against the broker's one user.
    let text = "name: security\npartitionsPerTopic: 2\nmessageSize: 200\nproducerRate: 500\n\
                testDurationSeconds: 2\nwarmupDurationSeconds: 0.5\nconsumer:\n  sasl.mechanism: PLAIN\n\
                sweep:\n  security.protocol: [PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL]\n";
    let f = parse_for(
        Path::new("security.yaml"),
        text,
        None,
        SecurityFor::Embedded,
    )
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    let dir = run_workload(&f, &RunOptions::quiet(out.path().to_path_buf(), None)).unwrap();
    let run = read_run_json(&dir).unwrap();
    assert_eq!(run.points.len(), 4);
    let listeners = &run
        .environment
        .broker_config
        .iter()
        .find(|(k, _)| k == "listeners")
        .expect("the broker's listeners are recorded")
        .1;
    for l in LISTENERS {
        assert!(listeners.contains(&format!("{l}://")), "{listeners}");
    }
    for (p, protocol) in run.points.iter().zip(LISTENERS) {
        assert_eq!(
            p.settings,
            vec![("security.protocol".to_string(), protocol.to_string())]
        );
        assert_eq!(p.errors, 0, "{protocol}: {:?}", p.error_samples);
        assert!(p.publish_latency.count > 500, "{protocol}: {p:?}");
        assert!(p.end_to_end.count > 500, "{protocol}: {p:?}");
        assert_eq!(p.unsent + p.unconsumed, 0, "{protocol}: {p:?}");
        let security = p
            .security
            .as_ref()
            .expect("each point says how it connected");
        assert!(security.producer.starts_with(protocol), "{security:?}");
        assert!(security.consumer.starts_with(protocol), "{security:?}");
        if protocol.starts_with("SASL") {
            let user = local::USER;
            assert!(
                security
                    .producer
                    .ends_with(&format!("(SCRAM-SHA-512 as {user})")),
                "{security:?}"
            );
            assert!(
                security.consumer.ends_with(&format!("(PLAIN as {user})")),
                "{security:?}"
            );
        }
        let c = p
            .broker_counters
            .as_ref()
            .expect("the embedded broker's counters are read");
        // Every connection of the point came in on its protocol's listener.
        let accepted = |l: &str| c.connections_accepted.get(l).copied().unwrap_or(0);
        assert!(accepted(protocol) > 0, "{protocol}: {c:?}");
        for other in LISTENERS.iter().filter(|l| **l != protocol) {
            assert_eq!(accepted(other), 0, "{protocol}: {c:?}");
        }
        let plain_bytes = c.fetch_sendfile_bytes + c.fetch_copied_bytes;
        if protocol.ends_with("SSL") {
            assert!(c.fetch_tls_bytes > 0, "{protocol}: {c:?}");
            assert_eq!(plain_bytes, 0, "{protocol}: {c:?}");
        } else {
            assert_eq!(c.fetch_tls_bytes, 0, "{protocol}: {c:?}");
            assert!(plain_bytes > 0, "{protocol}: {c:?}");
        }
        // The broker's CPU per GB is what the benchmark compares.
        let cpu = p.cpu.as_ref().expect("every point accounts CPU");
        assert!(cpu.broker_cpu_s_per_gb.is_some(), "{cpu:?}");
    }
}

#[test]
fn security_resolved_for_another_broker_is_refused_before_anything_starts() {
    // Trust for a broker given with --bootstrap does not open the
    // embedded broker's listeners: the run says so instead of failing a
    // handshake.
    let pki = tempfile::tempdir().unwrap();
    let ca = pki.path().join("ca.pem");
    std::fs::write(&ca, &local::credentials().unwrap().ca_pem).unwrap();
    let text = format!(
        "name: given\nmessageSize: 100\ntestDurationSeconds: 1\nproducer:\n  security.protocol: SSL\n  ssl.ca.location: {}\n",
        ca.display()
    );
    let f = parse(Path::new("given.yaml"), &text, None).unwrap();
    let out = tempfile::tempdir().unwrap();
    let e = run_workload(&f, &RunOptions::quiet(out.path().to_path_buf(), None)).unwrap_err();
    assert!(
        e.contains("given.yaml") && e.contains("resolved for a broker given with --bootstrap"),
        "{e}"
    );
}
