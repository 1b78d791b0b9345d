//! Workload loading end to end: text in, points or a located error out.

use super::*;
use std::path::Path;

fn parse_str(text: &str) -> Result<WorkloadFile, WorkloadError> {
    parse(Path::new("w.yaml"), text, None)
}

fn invalid(text: &str) -> (Option<usize>, String, String) {
    match parse_str(text).unwrap_err() {
        WorkloadError::Invalid {
            line,
            field,
            message,
            ..
        } => (line, field, message),
        other => panic!("unexpected {other}"),
    }
}

/// OMB's `1-topic-16-partitions-1kb.yaml`, as shipped.
const OMB: &str = "name: 1 topic / 16 partitions / 1Kb

topics: 1
partitionsPerTopic: 16
keyDistributor: \"NO_KEY\"
messageSize: 1024
payloadFile: \"Cargo.toml\"
subscriptionsPerTopic: 1
consumerPerSubscription: 1
producersPerTopic: 1
producerRate: 50000
consumerBacklogSizeGB: 0
testDurationMinutes: 15
";

#[test]
fn omb_workload_runs_unmodified() {
    let f = parse_str(OMB).unwrap();
    assert_eq!(f.points.len(), 1);
    let w = &f.points[0].workload;
    assert_eq!(w.name, "1 topic / 16 partitions / 1Kb");
    assert_eq!(w.partitions_per_topic, 16);
    assert_eq!(w.producer_rate, 50_000.0);
    assert_eq!(w.test_duration, Duration::from_secs(900));
    assert_eq!(w.warmup_duration, WARMUP_DEFAULT);
    assert_eq!(w.sizes, SizeDistributionSpec::Fixed { size: 1024 });
    assert_eq!(w.keys, KeyDistributionSpec::None);
}

#[test]
fn omb_driver_settings_in_the_same_file() {
    let text = "name: d\nmessageSize: 100\nreplicationFactor: 1\ntopicConfig: |\n  min.insync.replicas=1\ncommonConfig: |\n  bootstrap.servers=localhost:9092\nproducerConfig: |\n  acks=all\n  linger.ms=1\n  batch.size=131072\nconsumerConfig: |\n  auto.offset.reset=earliest\n  enable.auto.commit=false\n  max.partition.fetch.bytes=10485760\n";
    let w = &parse_str(text).unwrap().points[0].workload;
    assert_eq!(w.producer.linger_ms, 1);
    assert_eq!(w.producer.batch_size, 131_072);
    assert_eq!(w.consumer.max_partition_fetch_bytes, 10_485_760);
    assert_eq!(w.topic.min_insync_replicas(), Some(1));
}

#[test]
fn extensions_and_sweep_expand() {
    let text = "name: q\nmessageSize: 100\ntestDurationSeconds: 8\nwarmupDurationSeconds: 2\nproducerRate: 1000\nproducer:\n  compression.type: lz4\nkeyDistribution:\n  type: zipf\n  keys: 100\n  exponent: 1.1\nsweep:\n  linger.ms: [0, 5]\n  acks: [1, all]\n  batch.size: [16384, 1048576]\nrepeat: 2\n";
    let f = parse_str(text).unwrap();
    assert_eq!(f.points.len(), 8);
    assert_eq!(f.repeat, 2);
    let last = &f.points[7];
    assert_eq!(last.label(), "linger.ms=5 acks=all batch.size=1048576");
    assert_eq!(last.workload.producer.linger_ms, 5);
    assert_eq!(last.workload.producer.acks, props::Acks::All);
    assert_eq!(last.workload.producer.batch_size, 1_048_576);
    assert_eq!(
        last.workload.producer.compression,
        sluice_protocol::record_batch::Compression::Lz4
    );
    assert_eq!(last.workload.test_duration, Duration::from_secs(8));
    assert_eq!(last.workload.warmup_duration, Duration::from_secs(2));
}

#[test]
fn unknown_field_names_file_line_and_field() {
    let (line, field, message) = invalid("name: x\nmessageSize: 10\npartitionsPerTopc: 3\n");
    assert_eq!(line, Some(3));
    assert!(
        message.contains("unknown field `partitionsPerTopc`"),
        "{message}"
    );
    let _ = field;
    let err = parse_str("name: x\nmessageSize: 10\npartitionsPerTopc: 3\n").unwrap_err();
    assert!(err.to_string().starts_with("w.yaml:3: field"), "{err}");
}

#[test]
fn wrong_type_names_line_and_field() {
    let (line, field, _) = invalid("name: x\nmessageSize: 10\npartitionsPerTopic: many\n");
    assert_eq!(line, Some(3));
    assert_eq!(field, "partitionsPerTopic");
}

#[test]
fn zero_partitions_are_refused() {
    let (line, field, _) = invalid("name: x\nmessageSize: 10\npartitionsPerTopic: 0\n");
    assert_eq!(line, Some(3));
    assert_eq!(field, "partitionsPerTopic");
}

#[test]
fn acks_0_with_idempotence_is_refused_at_its_line() {
    let (line, field, message) =
        invalid("name: x\nmessageSize: 10\nproducer:\n  enable.idempotence: true\n  acks: 0\n");
    assert_eq!(field, "producer.acks");
    assert_eq!(line, Some(5));
    assert!(message.contains("idempotence"));
}

#[test]
fn bad_sweep_value_points_at_the_sweep() {
    let (line, field, _) =
        invalid("name: x\nmessageSize: 10\nsweep:\n  linger.ms: [0, 5]\n  acks: [1, sometimes]\n");
    assert_eq!(field, "producer.acks");
    assert_eq!(line, Some(5));
}

#[test]
fn unknown_producer_property_is_refused() {
    let (line, field, _) = invalid("name: x\nmessageSize: 10\nproducer:\n  lingr.ms: 5\n");
    assert_eq!(field, "producer.lingr.ms");
    assert_eq!(line, Some(4));
}

#[test]
fn replication_above_broker_count_is_refused() {
    let f = parse_str("name: x\nmessageSize: 10\nsweep:\n  replication.factor: [1, 3]\n").unwrap();
    assert_eq!(f.max_replication_factor(), 3);
    let e = f.check_brokers(1, "the embedded cluster").unwrap_err();
    assert!(e.to_string().contains("replication factor 3"), "{e}");
    assert!(e.to_string().starts_with("w.yaml:4:"), "{e}");
    f.check_brokers(3, "the cluster").unwrap();
}

#[test]
fn missing_message_size_is_refused() {
    let (_, field, _) = invalid("name: x\n");
    assert_eq!(field, "messageSize");
}

#[test]
fn syntax_errors_carry_a_line() {
    let (line, _, _) = invalid("name: x\nmessageSize: [1\n");
    assert!(line.is_some());
}

#[test]
fn driver_file_settings_are_overridden_by_the_workload() {
    let driver: Mapping =
        serde_yaml::from_str("name: Kafka\nproducerConfig: |\n  acks=1\n  linger.ms=7\n").unwrap();
    let d = (PathBuf::from("d.yaml"), String::new(), driver);
    let f = parse(
        Path::new("w.yaml"),
        "name: x\nmessageSize: 10\nproducer:\n  linger.ms: 2\n",
        Some(&d),
    )
    .unwrap();
    let p = &f.points[0].workload.producer;
    assert_eq!(p.acks, props::Acks::Leader);
    assert_eq!(p.linger_ms, 2);
    assert_eq!(f.name, "x");
}

#[test]
fn subscriptions_are_groups_unless_manual_is_asked_for() {
    let base = "name: g\nmessageSize: 10\n";
    let f = parse_str(base).unwrap();
    assert_eq!(
        f.points[0].workload.consumer_assignment,
        ConsumerAssignment::Group
    );
    let f = parse_str(&format!("{base}consumerAssignment: manual\n")).unwrap();
    assert_eq!(
        f.points[0].workload.consumer_assignment,
        ConsumerAssignment::Manual
    );
    let (line, field, _) = invalid(&format!("{base}consumerAssignment: static\n"));
    assert_eq!((line, field.as_str()), (Some(3), "consumerAssignment"));
}

#[test]
fn group_settings_are_read_and_checked() {
    let f = parse_str(
        "name: g\nmessageSize: 10\nconsumer:\n  group.id: bench\n  session.timeout.ms: 9000\n  enable.auto.commit: false\n",
    )
    .unwrap();
    let c = &f.points[0].workload.consumer;
    assert_eq!(c.group_id.as_deref(), Some("bench"));
    assert!(!c.enable_auto_commit);
    // Kafka's default interval (3 s) is at most a third of the session.
    assert_eq!(
        c.heartbeat_interval(),
        std::time::Duration::from_millis(3_000)
    );
    let (_, field, _) = invalid(
        "name: g\nmessageSize: 10\nconsumer:\n  session.timeout.ms: 6000\n  heartbeat.interval.ms: 6000\n",
    );
    assert_eq!(field, "consumer.heartbeat.interval.ms");
}

/// A workload with `props` in its `commonConfig` block.
fn with_common(props: &str) -> String {
    let indented: String = props.lines().map(|l| format!("  {l}\n")).collect();
    format!("name: s\nmessageSize: 100\ncommonConfig: |\n{indented}")
}

#[test]
fn security_keys_are_honoured_not_ignored() {
    let text = with_common(
        "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=SCRAM-SHA-512\nsasl.username=alice\nsasl.password=secret",
    );
    let f = parse_str(&text).unwrap();
    assert!(
        describe(&f).contains("security: producer SASL_PLAINTEXT (SCRAM-SHA-512 as alice)"),
        "{}",
        describe(&f)
    );
    let w = &f.points[0].workload;
    for s in [&w.producer.security, &w.consumer.security] {
        assert_eq!(
            s.protocol,
            crate::client::security::SecurityProtocol::SaslPlaintext
        );
        let sasl = s.sasl.as_ref().unwrap();
        assert_eq!(
            sasl.mechanism,
            crate::client::security::Mechanism::ScramSha512
        );
        assert_eq!(
            (sasl.username.as_str(), sasl.password.as_str()),
            ("alice", "secret")
        );
    }
    assert!(w.producer.ignored.is_empty() && w.consumer.ignored.is_empty());
    // The password never reaches run.json.
    let json = serde_json::to_string(w).unwrap();
    assert!(!json.contains("secret"), "{json}");
}

#[test]
fn jaas_config_gives_the_credentials() {
    let text = with_common(
        "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAIN\nsasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username=\"bob\" password=\"p\\\"w\";",
    );
    let w = &parse_str(&text).unwrap().points[0].workload;
    let sasl = w.producer.security.sasl.as_ref().unwrap();
    assert_eq!(
        (sasl.username.as_str(), sasl.password.as_str()),
        ("bob", "p\"w")
    );
}

#[test]
fn bad_security_values_name_file_line_and_field() {
    let cases: &[(&str, &str, usize, &str)] = &[
        (
            "security.protocol=TLS",
            "commonConfig.security.protocol",
            4,
            "is not PLAINTEXT",
        ),
        (
            "security.protocol=SASL_SSL\nsasl.mechanism=GSSAPI",
            "commonConfig.sasl.mechanism",
            5,
            "not supported",
        ),
        (
            "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAIN",
            "commonConfig.sasl.username",
            3,
            "sasl.username",
        ),
        (
            "security.protocol=SASL_PLAINTEXT",
            "commonConfig.sasl.mechanism",
            3,
            "GSSAPI",
        ),
        (
            "security.protocol=SSL\nssl.ca.location=/nonexistent/ca.pem",
            "commonConfig.ssl.ca.location",
            5,
            "cannot read",
        ),
        (
            "security.protocol=SSL\nssl.ca.location=Cargo.toml",
            "commonConfig.ssl.ca.location",
            5,
            "BEGIN CERTIFICATE",
        ),
        (
            "security.protocol=SSL\nssl.key.password=x",
            "commonConfig.ssl.key.password",
            5,
            "no client key is given",
        ),
        (
            "security.protocol=SSL\nssl.enabled.protocols=TLSv1.2,TLSv1.4",
            "commonConfig.ssl.enabled.protocols",
            5,
            "unknown protocol 'TLSv1.4'",
        ),
        (
            "ssl.cipher.suites=TLS_AES_128_GCM_SHA256,TLS_RSA_WITH_RC4_128_SHA",
            "commonConfig.ssl.cipher.suites",
            4,
            "unknown cipher suite 'TLS_RSA_WITH_RC4_128_SHA'",
        ),
        (
            // Only TLS 1.3 enabled, only a TLS 1.2 suite given: nothing
            // could be offered.
            "security.protocol=SSL\nssl.ca.location=/nonexistent/ca.pem\nssl.enabled.protocols=TLSv1.3\nssl.cipher.suites=TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
            "commonConfig.ssl.cipher.suites",
            7,
            "no cipher suite",
        ),
        (
            "ssl.keystore.type=JKS",
            "commonConfig.ssl.keystore.type",
            4,
            "only PEM",
        ),
        (
            "sasl.kerberos.service.name=kafka",
            "commonConfig.sasl.kerberos.service.name",
            4,
            "not supported",
        ),
        (
            "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=SCRAM-SHA-256\nsasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username=\"a\" password=\"b\";",
            "commonConfig.sasl.jaas.config",
            6,
            "ScramLoginModule",
        ),
        (
            "security.protocol=SSL\nssl.endpoint.identification.algorithm=dns",
            "commonConfig.ssl.endpoint.identification.algorithm",
            5,
            "is not https",
        ),
    ];
    // A missing key is located at its block (line 3), a wrong one at its line.
    for (props, field, line, message) in cases {
        let (l, f, m) = invalid(&with_common(props));
        assert_eq!(&f, field, "{props}: {m}");
        assert_eq!(l, Some(*line), "{props}: {m}");
        assert!(m.contains(message), "{props}: `{m}` lacks `{message}`");
    }
}

#[test]
fn enabled_protocols_and_cipher_suites_reach_the_tls_config() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    let (ca_pem, _) = sluice_engine::security::local_pki::broker_certificates().unwrap();
    std::fs::write(&ca, ca_pem).unwrap();
    let text = with_common(&format!(
        "security.protocol=SSL\nssl.ca.location={}\nssl.enabled.protocols=TLSv1.2\n\
         ssl.cipher.suites=ECDHE-RSA-AES128-GCM-SHA256:TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        ca.display()
    ));
    let w = &parse_str(&text).unwrap().points[0].workload;
    let tls = w.producer.security.tls.as_ref().unwrap();
    assert_eq!(tls.protocols.as_deref(), Some("TLSv1.2"));
    assert_eq!(
        tls.cipher_suites.as_deref(),
        Some("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384")
    );
    let suites: Vec<_> = tls
        .config
        .crypto_provider()
        .cipher_suites
        .iter()
        .map(sluice_engine::security::tls::suite_name)
        .collect();
    assert_eq!(
        suites,
        [
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
            "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"
        ]
    );
    // Without the keys: both versions and rustls's default suites.
    let plain = with_common(&format!(
        "security.protocol=SSL\nssl.ca.location={}",
        ca.display()
    ));
    let w = &parse_str(&plain).unwrap().points[0].workload;
    let tls = w.producer.security.tls.as_ref().unwrap();
    assert_eq!(
        (tls.protocols.as_deref(), tls.cipher_suites.as_deref()),
        (None, None)
    );
    assert_eq!(
        tls.config.crypto_provider().cipher_suites.len(),
        rustls::crypto::ring::DEFAULT_CIPHER_SUITES.len()
    );
}

#[test]
fn security_keys_in_a_producer_block_are_located_there() {
    let text = "name: s\nmessageSize: 100\nproducer:\n  security.protocol: SSL\n  ssl.ca.location: /nonexistent/ca.pem\n";
    let (line, field, _) = invalid(text);
    assert_eq!(field, "producer.ssl.ca.location");
    assert_eq!(line, Some(5));
}

#[test]
fn jaas_entries_parse_as_kafka_writes_them() {
    let j = security::parse_jaas(
        "org.apache.kafka.common.security.scram.ScramLoginModule required\n  username=\"u\"\n  password=\"a b\\\\c\";",
    )
    .unwrap();
    assert_eq!(
        j.module,
        "org.apache.kafka.common.security.scram.ScramLoginModule"
    );
    assert_eq!(j.options["username"], "u");
    assert_eq!(j.options["password"], "a b\\c");
    assert!(security::parse_jaas("X required username=\"u\"").is_err());
    assert!(security::parse_jaas("X maybe username=\"u\";").is_err());
    assert!(security::parse_jaas("X required username=\"u;").is_err());
}

#[test]
fn an_omb_ramp_steps_up_to_the_producer_rate() {
    let f = parse_str(
        "messageSize: 100\nproducerRate: 350\nproducerStartRate: 100\nproducerIncrementRate: 100\nproducerIncrementSeconds: 10\ntestDurationSeconds: 60\n",
    )
    .unwrap();
    let ramp = f.points[0].workload.ramp.clone().expect("a ramp");
    let s = Duration::from_secs;
    // 400 would pass producerRate: the ramp holds at 300, as OMB's does.
    assert_eq!(ramp.changes(s(60)), [(s(10), 200.0), (s(20), 300.0)]);
    // A window shorter than the ramp ends it early.
    assert_eq!(ramp.changes(s(15)), [(s(10), 200.0)]);
    assert_eq!(
        ramp.mean_rate(s(40)),
        (100.0 + 200.0 + 300.0 * 2.0) * 10.0 / 40.0
    );
    assert!(f.warnings.is_empty(), "{:?}", f.warnings);
    // OMB's defaults: from 10,000 msg/s, a step a minute.
    let d =
        parse_str("messageSize: 100\nproducerRate: 30000\nproducerIncrementRate: 5000\n").unwrap();
    let ramp = d.points[0].workload.ramp.clone().unwrap();
    assert_eq!(ramp.start_rate, RAMP_START_RATE_DEFAULT);
    assert_eq!(ramp.period, s(RAMP_PERIOD_DEFAULT_S));
    assert!(parse_str("messageSize: 100\nproducerRate: 300\n")
        .unwrap()
        .points[0]
        .workload
        .ramp
        .is_none());
}

#[test]
fn omb_fields_not_acted_on_are_warned_about_with_file_and_line() {
    let f = parse_str(
        "messageSize: 100\nproducerRate: 0\nproducerStartRate: 5000\nacceptableBacklog: 100\nmessageRateReceivedForSubscription: 100\nproducerPauseBeforeDrain: 30\n",
    )
    .unwrap();
    let w = &f.warnings;
    assert_eq!(w.len(), 3, "{w:?}");
    assert!(
        w[0].starts_with("w.yaml:3: producerStartRate: ignored"),
        "{w:?}"
    );
    assert!(
        w[1].starts_with("w.yaml:4: acceptableBacklog: ignored"),
        "{w:?}"
    );
    assert!(
        w[2].starts_with("w.yaml:6: producerPauseBeforeDrain: ignored"),
        "{w:?}"
    );
    // 100% received is what every subscription here does: nothing to say.
    assert!(
        !w.iter().any(|m| m.contains("messageRateReceived")),
        "{w:?}"
    );
    // With a backlog, acceptableBacklog ends the drain, as in OMB.
    let b = parse_str(
        "messageSize: 100\nproducerRate: 1000\nconsumerBacklogSizeGB: 1\nacceptableBacklog: 100\n",
    )
    .unwrap();
    assert!(b.warnings.is_empty(), "{:?}", b.warnings);
    assert_eq!(b.points[0].workload.acceptable_backlog, Some(100));
    // A ramp that cannot rise says so.
    let flat = parse_str("messageSize: 100\nproducerRate: 0\nproducerIncrementRate: 10\n").unwrap();
    assert!(
        flat.warnings[0].contains("stays at producerStartRate"),
        "{:?}",
        flat.warnings
    );
}

#[test]
fn ramp_and_backlog_settings_are_checked() {
    let (_, field, _) = invalid("messageSize: 100\nproducerIncrementRate: -1\n");
    assert_eq!(field, "producerIncrementRate");
    let (_, field, _) =
        invalid("messageSize: 100\nproducerIncrementRate: 10\nproducerIncrementSeconds: 0\n");
    assert_eq!(field, "producerIncrementSeconds");
    let (_, field, _) =
        invalid("messageSize: 100\nproducerIncrementRate: 10\nproducerStartRate: 0\n");
    assert_eq!(field, "producerStartRate");
    let (_, field, _) = invalid(
        "messageSize: 100\nproducerRate: 100\nconsumerBacklogSizeGB: 1\nbacklogDrainRatio: 0.9\nacceptableBacklog: 10\n",
    );
    assert_eq!(field, "acceptableBacklog");
}

#[test]
fn a_driver_files_bootstrap_servers_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let driver = dir.path().join("kafka.yaml");
    std::fs::write(
        &driver,
        "name: Kafka\ncommonConfig: |\n  bootstrap.servers=SASL_SSL://broker-1:9093, broker-2:9093\n",
    )
    .unwrap();
    let workload = dir.path().join("w.yaml");
    std::fs::write(&workload, "messageSize: 100\n").unwrap();
    let f = load(&workload, Some(&driver)).unwrap();
    assert_eq!(
        f.driver_bootstrap,
        Some(DriverTarget {
            file: driver.clone(),
            servers: "broker-1:9093".to_string()
        })
    );
    assert_eq!(load(&workload, None).unwrap().driver_bootstrap, None);
}

fn parse_embedded(text: &str) -> Result<WorkloadFile, WorkloadError> {
    parse_for(Path::new("w.yaml"), text, None, SecurityFor::Embedded)
}

#[test]
fn the_embedded_broker_supplies_trust_and_credentials() {
    use crate::client::security::{local, Mechanism, SecurityProtocol};
    let f = parse_embedded(
        "name: s\nmessageSize: 100\nconsumer:\n  sasl.mechanism: PLAIN\nsweep:\n  security.protocol: [PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL]\n",
    )
    .unwrap();
    assert_eq!(f.security_for, SecurityFor::Embedded);
    let creds = local::credentials().unwrap();
    let protocols: Vec<SecurityProtocol> = f
        .points
        .iter()
        .map(|p| p.workload.producer.security.protocol)
        .collect();
    assert_eq!(
        protocols,
        [
            SecurityProtocol::Plaintext,
            SecurityProtocol::Ssl,
            SecurityProtocol::SaslPlaintext,
            SecurityProtocol::SaslSsl
        ]
    );
    for p in &f.points {
        let (ps, cs) = (&p.workload.producer.security, &p.workload.consumer.security);
        // The sweep sets both clients.
        assert_eq!(ps.protocol, cs.protocol);
        assert!(ps.is_consistent() && cs.is_consistent());
        if let Some(t) = &ps.tls {
            assert!(t.ca.contains("embedded broker"), "{}", t.ca);
            assert!(t.verify_hostname);
        }
        if let (Some(ps), Some(cs)) = (&ps.sasl, &cs.sasl) {
            // The mechanism as given (the consumer's), else the default.
            assert_eq!(ps.mechanism, Mechanism::ScramSha512);
            assert_eq!(cs.mechanism, Mechanism::Plain);
            assert_eq!(
                (ps.username.as_str(), &ps.password),
                (local::USER, &creds.password)
            );
        }
    }
}

#[test]
fn trust_or_credentials_for_the_embedded_broker_are_refused_where_written() {
    let cases: &[(&str, &str, usize)] = &[
        (
            "name: s\nproducer:\n  security.protocol: SSL\n  ssl.ca.location: /tmp/ca.pem\n",
            "producer.ssl.ca.location",
            4,
        ),
        (
            "name: s\nconsumer:\n  security.protocol: SASL_SSL\n  sasl.mechanism: PLAIN\n  sasl.username: alice\n  sasl.password: x\n",
            "consumer.sasl.password",
            6,
        ),
        (
            "name: s\ncommonConfig: |\n  security.protocol=PLAINTEXT\n  ssl.keystore.location=/tmp/k.pem\n",
            "commonConfig.ssl.keystore.location",
            4,
        ),
    ];
    for (text, field, line) in cases {
        match parse_embedded(text).unwrap_err() {
            WorkloadError::Invalid {
                line: l,
                field: f,
                message,
                ..
            } => {
                assert_eq!(&f, field, "{text}: {message}");
                assert_eq!(l, Some(*line), "{text}: {message}");
                assert!(message.contains("cannot be honoured"), "{message}");
            }
            other => panic!("{other}"),
        }
    }
    // A mechanism the client does not speak is refused too.
    let e = parse_embedded(
        "name: s\nproducer:\n  security.protocol: SASL_SSL\n  sasl.mechanism: GSSAPI\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("w.yaml:4") && e.contains("producer.sasl.mechanism"),
        "{e}"
    );
}

#[test]
fn oauthbearer_takes_java_and_librdkafka_keys() {
    use crate::client::security::oauth::{ClientCredentials, TokenSource};
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token.jwt");
    std::fs::write(&token, "h.p.s\n").unwrap();
    let endpoint = |w: &Workload| w.producer.security.sasl.as_ref().unwrap().token.clone();
    let creds = |id: &str, secret: &str, scope: Option<&str>| ClientCredentials {
        client_id: id.into(),
        client_secret: secret.into(),
        scope: scope.map(Into::into),
    };
    let cases: Vec<(String, TokenSource)> = vec![
        (
            format!(
                "sasl.oauthbearer.token.endpoint.url=file://{}",
                token.display()
            ),
            TokenSource::File(token.clone()),
        ),
        (
            "sasl.oauthbearer.method=OIDC\nsasl.oauthbearer.token.endpoint.url=https://idp/t\nsasl.oauthbearer.client.id=bench\nsasl.oauthbearer.client.secret=s3cret\nsasl.oauthbearer.scope=kafka".to_string(),
            TokenSource::Endpoint {
                url: "https://idp/t".into(),
                credentials: creds("bench", "s3cret", Some("kafka")),
            },
        ),
        (
            "sasl.login.callback.handler.class=org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginCallbackHandler\nsasl.oauthbearer.token.endpoint.url=http://idp/t\nsasl.jaas.config=org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required clientId=\"bench\" clientSecret=\"s3cret\";".to_string(),
            TokenSource::Endpoint {
                url: "http://idp/t".into(),
                credentials: creds("bench", "s3cret", None),
            },
        ),
    ];
    for (props, want) in cases {
        let text = with_common(&format!(
            "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=OAUTHBEARER\n{props}"
        ));
        let f = parse_str(&text).unwrap_or_else(|e| panic!("{props}: {e}"));
        let w = &f.points[0].workload;
        assert_eq!(endpoint(w).unwrap().source, want, "{props}");
        // The secret reaches neither run.json nor Debug output.
        let json = serde_json::to_string(w).unwrap();
        assert!(!json.contains("s3cret"), "{json}");
        let sasl = w.producer.security.sasl.as_ref().unwrap();
        assert!(!format!("{sasl:?}").contains("s3cret"));
    }
}

#[test]
fn bad_oauthbearer_settings_name_file_line_and_field() {
    let head = "security.protocol=SASL_SSL\nsasl.mechanism=OAUTHBEARER\n";
    let cases: &[(&str, &str, usize, &str)] = &[
        ("", "commonConfig.sasl.oauthbearer.token.endpoint.url", 3, "needs sasl.oauthbearer.token.endpoint.url"),
        (
            "sasl.oauthbearer.token.endpoint.url=https://idp/t",
            "commonConfig.sasl.oauthbearer.token.endpoint.url",
            6,
            "clientId",
        ),
        (
            "sasl.oauthbearer.token.endpoint.url=file:///nonexistent/token",
            "commonConfig.sasl.oauthbearer.token.endpoint.url",
            6,
            "cannot read the token",
        ),
        (
            "sasl.oauthbearer.method=default\nsasl.oauthbearer.token.endpoint.url=https://idp/t",
            "commonConfig.sasl.oauthbearer.method",
            6,
            "only oidc",
        ),
        (
            "sasl.oauthbearer.token.endpoint.url=https://idp/t\nsasl.oauthbearer.client.id=a",
            "commonConfig.sasl.oauthbearer.client.id",
            7,
            "both sasl.oauthbearer.client.id and",
        ),
        (
            "sasl.oauthbearer.token.endpoint.url=https://idp/t\nsasl.oauthbearer.client.id=a\nsasl.oauthbearer.client.secret=b\nsasl.jaas.config=org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required clientId=\"a\" clientSecret=\"b\";",
            "commonConfig.sasl.jaas.config",
            9,
            "not both",
        ),
        (
            "sasl.oauthbearer.token.endpoint.url=https://idp/t\nsasl.jaas.config=org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required unsecuredLoginStringClaim_sub=\"a\";",
            "commonConfig.sasl.jaas.config",
            7,
            "unsecuredLoginStringClaim_sub is not supported",
        ),
        (
            "sasl.login.callback.handler.class=com.example.Handler\nsasl.oauthbearer.token.endpoint.url=https://idp/t",
            "commonConfig.sasl.login.callback.handler.class",
            6,
            "cannot run here",
        ),
        (
            "sasl.username=a\nsasl.password=b\nsasl.oauthbearer.token.endpoint.url=https://idp/t",
            "commonConfig.sasl.username",
            6,
            "takes a token",
        ),
    ];
    for (props, field, line, message) in cases {
        let (l, f, m) = invalid(&with_common(&format!("{head}{props}")));
        assert_eq!(&f, field, "{props}: {m}");
        assert_eq!(l, Some(*line), "{props}: {m}");
        assert!(m.contains(message), "{props}: `{m}` lacks `{message}`");
        assert!(!m.contains("\"b\""), "{m}");
    }
    // An OAUTHBEARER key under another mechanism would be ignored: refused.
    let (_, f, m) = invalid(&with_common(
        "security.protocol=SASL_SSL\nsasl.mechanism=PLAIN\nsasl.username=a\nsasl.password=b\nsasl.oauthbearer.scope=x",
    ));
    assert_eq!(f, "commonConfig.sasl.oauthbearer.scope", "{m}");
    assert!(m.contains("OAUTHBEARER only"), "{m}");
}
