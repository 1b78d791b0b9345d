//! kcat, kafka-python, aiokafka, KafkaJS, sarama and franz-go (Go),
//! Apache Kafka's Java client and Kafka Streams against a real `sluice`
//! process. All are installed by `.ci/run`; a missing tool fails the test
//! rather than skipping it.

mod common;

use common::{java_classpath, kafkajs_round_trip, run_client, Broker};
use std::io::Write;
use std::process::{Command, Stdio};

fn kcat(args: &[&str], stdin: Option<&str>) -> String {
    let mut child = Command::new("timeout")
        .arg("60")
        .arg("kcat")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kcat is installed (apt-get install kcat)");
    let mut input = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "kcat {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn kcat_lists_metadata_and_round_trips_every_codec() {
    let broker = Broker::start(2, &["num.partitions=3"]);
    let b = broker.bootstrap();
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let topic = format!("kcat-{codec}");
        let lines: Vec<String> = (0..500).map(|i| format!("{codec}-message-{i}")).collect();
        let input = lines.join("\n") + "\n";
        kcat(
            &["-b", &b, "-P", "-t", &topic, "-z", codec, "-K", ":"],
            Some(&input.replace("message", "key:message")),
        );
        let out = kcat(
            &["-b", &b, "-C", "-t", &topic, "-e", "-q", "-f", "%k:%s\n"],
            None,
        );
        let mut got: Vec<&str> = out.lines().collect();
        let mut want: Vec<String> = lines
            .iter()
            .map(|l| l.replace("message", "key:message"))
            .collect();
        got.sort();
        want.sort();
        assert_eq!(got, want, "codec {codec}");
    }
    let listing = kcat(&["-b", &b, "-L"], None);
    assert!(
        listing.contains(&format!("broker 1 at 127.0.0.1:{}", broker.port)),
        "{listing}"
    );
    assert!(
        listing.contains("topic \"kcat-zstd\" with 3 partitions"),
        "{listing}"
    );
    assert!(
        listing.contains("partition 2, leader 1, replicas: 1, isrs: 1"),
        "{listing}"
    );
    common::passed("kcat", &["produce", "consume"]);
}

#[test]
fn kafka_python_admin_grows_a_topic() {
    let broker = Broker::start(2, &[]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/admin.py");
    run_client(
        "kafka-python admin",
        &["120", "python3", script, &broker.bootstrap(), "py-grow"],
        || format!("broker log:\n{}", broker.log()),
    );
    common::passed("kafka-python", &["admin"]);
}

#[test]
fn kafka_python_round_trip() {
    let broker = Broker::start(2, &["num.partitions=3"]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/roundtrip.py");
    for codec in ["none", "gzip"] {
        let topic = format!("py-{codec}");
        run_client(
            &format!("kafka-python ({codec})"),
            &[
                "120",
                "python3",
                script,
                &broker.bootstrap(),
                &topic,
                "2000",
                codec,
            ],
            || format!("broker log:\n{}", broker.log()),
        );
    }
    common::passed("kafka-python", &["produce", "consume", "idempotence"]);
}

#[test]
fn aiokafka_creates_a_topic_produces_every_codec_and_consumes_in_a_group() {
    let broker = Broker::start(2, &[]);
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/aiokafka_client.py"
    );
    run_client(
        "aiokafka",
        &[
            "180",
            "python3",
            script,
            &broker.bootstrap(),
            "aiokafka",
            "2000",
        ],
        || format!("broker log:\n{}", broker.log()),
    );
    common::passed(
        "aiokafka",
        &[
            "admin",
            "produce",
            "consume",
            "groups-classic",
            "idempotence",
        ],
    );
}

#[test]
fn kafkajs_produces_and_consumes_in_a_group() {
    let broker = Broker::start(2, &[]);
    kafkajs_round_trip(&broker.bootstrap(), "kafkajs", 3000, 1, || {
        format!("broker log:\n{}", broker.log())
    });
    common::passed(
        "kafkajs",
        &[
            "admin",
            "produce",
            "consume",
            "groups-classic",
            "idempotence",
        ],
    );
}

#[test]
fn sarama_produces_reads_and_consumes_in_a_group() {
    // Debian's Go and sarama (golang-go, golang-github-shopify-sarama-dev),
    // built the GOPATH way from the packaged sources.
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/go/sarama");
    let out_dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("sarama");
    let bin = out_dir.join("sarama");
    let build = Command::new("go")
        .args(["build", "-o"])
        .arg(&bin)
        .arg(".")
        .current_dir(src)
        .env("GO111MODULE", "off")
        .env("GOPATH", "/usr/share/gocode")
        .env("GOCACHE", out_dir.join("cache"))
        .output()
        .expect("go is installed (apt-get install golang-go)");
    assert!(
        build.status.success(),
        "building the sarama test failed:\n{}",
        String::from_utf8_lossy(&build.stderr)
    );
    let broker = Broker::start(2, &[]);
    let bin = bin.to_str().expect("a UTF-8 path");
    run_client(
        "sarama",
        &["180", bin, &broker.bootstrap(), "sarama", "500"],
        || format!("broker log:\n{}", broker.log()),
    );
    common::passed("sarama", &["produce", "consume", "groups-classic"]);
}

#[test]
fn the_java_client_administers_produces_every_codec_and_consumes_in_a_group() {
    let classpath = java_classpath();
    let broker = Broker::start(2, &[]);
    let out = run_client(
        "the Java client",
        &[
            "300",
            "java",
            "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
            "-cp",
            &classpath,
            "sluice.ClientsCheck",
            &broker.bootstrap(),
            "java-clients",
            "2000",
        ],
        || format!("broker log:\n{}", broker.log()),
    );
    assert!(out.contains("java client: ok"), "{out}");
    common::passed(
        "java",
        &[
            "admin",
            "produce",
            "consume",
            "groups-classic",
            "idempotence",
        ],
    );
}

#[test]
fn confluent_kafka_transactions_commit_abort_and_fence() {
    let broker = Broker::start(2, &["transaction.state.log.num.partitions=4"]);
    common::create_topic(&broker, "py-txn", 2);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/transactions.py");
    let out = run_client(
        "confluent-kafka transactions",
        &["180", "python3", script, &broker.bootstrap(), "py-txn"],
        || format!("broker log:\n{}", broker.log()),
    );
    assert!(out.contains("confluent-kafka transactions: ok"), "{out}");
}

#[test]
fn the_java_transactional_producer_commits_aborts_and_is_fenced() {
    let classpath = java_classpath();
    let broker = Broker::start(2, &["transaction.state.log.num.partitions=4"]);
    common::create_topic(&broker, "java-txn", 2);
    let out = run_client(
        "the Java transactions check",
        &[
            "300",
            "java",
            "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
            "-cp",
            &classpath,
            "sluice.TransactionsCheck",
            &broker.bootstrap(),
            "java-txn",
        ],
        || format!("broker log:\n{}", broker.log()),
    );
    assert!(out.contains("java transactions: ok"), "{out}");
    common::passed("java", &["transactions"]);
}

#[test]
fn the_java_client_shares_a_topic_under_the_consumer_group_protocol() {
    // KIP-848 with group.protocol=consumer: members in their own JVMs, one
    // killed (fenced after the session timeout, 10 s here), one joining and
    // leaving while a producer writes; no record lost, none read twice
    // within one member epoch.
    let classpath = java_classpath();
    let broker = Broker::start(
        2,
        &[
            "group.consumer.session.timeout.ms=10000",
            "group.consumer.heartbeat.interval.ms=500",
        ],
    );
    let out = run_client(
        "the Java consumer-protocol check",
        &[
            "400",
            "java",
            "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
            "-cp",
            &classpath,
            "sluice.ConsumerProtocolCheck",
            &broker.bootstrap(),
            "kip848",
            "6000",
        ],
        || format!("broker log:\n{}", broker.log()),
    );
    println!("{out}");
    assert!(out.contains("consumer protocol: ok"), "{out}");
    common::passed("java", &["groups-kip848"]);
}

#[test]
fn franz_go_administers_produces_every_codec_and_consumes_in_a_group() {
    // franz-go from the Go module proxy, pinned by tests/go/franz/go.sum
    // (`.ci/run` downloads the modules).
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/go/franz");
    let out_dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("franz");
    let bin = out_dir.join("franz");
    let build = Command::new("go")
        .args(["build", "-o"])
        .arg(&bin)
        .arg(".")
        .current_dir(src)
        .env("GOFLAGS", "-mod=readonly")
        .output()
        .expect("go is installed (apt-get install golang-go)");
    assert!(
        build.status.success(),
        "building the franz-go test failed:\n{}",
        String::from_utf8_lossy(&build.stderr)
    );
    let broker = Broker::start(2, &[]);
    let bin = bin.to_str().expect("a UTF-8 path");
    let out = run_client(
        "franz-go",
        &["200", bin, &broker.bootstrap(), "franz", "2000"],
        || format!("broker log:\n{}", broker.log()),
    );
    assert!(out.contains("franz-go: ok"), "{out}");
    common::passed(
        "franz-go",
        &[
            "admin",
            "produce",
            "consume",
            "groups-classic",
            "idempotence",
        ],
    );
}

#[test]
fn librdkafka_shares_a_topic_under_the_consumer_group_protocol() {
    // librdkafka 2.12+ (confluent-kafka from PyPI; `.ci/run` installs it)
    // with group.protocol=consumer and the broker's range assignor.
    let broker = Broker::start(2, &[]);
    common::create_topic(&broker, "rdk-kip848", 4);
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/kip848_librdkafka.py"
    );
    let out = run_client(
        "librdkafka with group.protocol=consumer",
        &[
            "300",
            "python3",
            script,
            &broker.bootstrap(),
            "rdk-kip848",
            "rdk-kip848-group",
            "2000",
            "4",
        ],
        || format!("broker log:\n{}", broker.log()),
    );
    assert!(out.contains("librdkafka consumer protocol: ok"), "{out}");
    common::passed("librdkafka", &["groups-kip848"]);
}

#[test]
fn kafka_streams_counts_words_across_a_broker_crash_and_a_changelog_restore() {
    // Kafka Streams 4.4 with processing.guarantee=at_least_once: a word
    // count through a repartition topic into a KTable whose changelog
    // topic is compacted. The broker is killed (SIGKILL) and restarted
    // while the app runs; later a second instance with empty local state
    // restores the table from the changelog. sluice.StreamsWordCount waits
    // for its commits before each disruption, so the counts are checked
    // exactly.
    streams_word_count("streams-wc", "at_least_once");
}

#[test]
fn kafka_streams_exactly_once_v2_counts_words_across_a_broker_crash() {
    // The same with processing.guarantee=exactly_once_v2: transactional
    // producers, offsets committed in their transactions, read_committed
    // consumers, across the broker's SIGKILL.
    streams_word_count("streams-eos", "exactly_once_v2");
    common::passed("java", &["transactions"]);
}

/// Runs sluice.StreamsWordCount as application `app_id` with
/// `guarantee`, killing and restarting the broker when it asks.
fn streams_word_count(app_id: &str, guarantee: &str) {
    let classpath = java_classpath();
    let mut broker = Broker::start(2, &[]);
    let work = tempfile::tempdir().unwrap();
    let stderr_path = work.path().join("stderr");
    let state_dir = work.path().join("state");
    let mut child = Command::new("timeout")
        .args([
            "400",
            "java",
            "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
            "-cp",
            &classpath,
            "sluice.StreamsWordCount",
            &broker.bootstrap(),
            app_id,
        ])
        .arg(&state_dir)
        .arg(guarantee)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .expect("java is installed");
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut out = String::new();
    let fail = |out: &str, broker: &Broker| -> ! {
        panic!(
            "the Streams word count failed:\n{out}\n{}\nbroker log:\n{}",
            std::fs::read_to_string(&stderr_path).unwrap_or_default(),
            broker.log()
        )
    };
    loop {
        let mut line = String::new();
        if std::io::BufRead::read_line(&mut stdout, &mut line).unwrap() == 0 {
            child.wait().unwrap();
            fail(&out, &broker);
        }
        out.push_str(&line);
        if line.trim() == "restart the broker" {
            break;
        }
    }
    broker.kill9();
    broker.restart();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"restarted\n").unwrap();
    drop(stdin);
    std::io::Read::read_to_string(&mut stdout, &mut out).unwrap();
    let status = child.wait().unwrap();
    if !status.success() || !out.contains("streams word count: ok") {
        fail(&out, &broker);
    }
    println!("{out}");
}
