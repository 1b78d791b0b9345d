//! kcat, kafka-python, aiokafka, KafkaJS, sarama and franz-go (Go),
//! Apache Kafka's Java client and Kafka Streams against a real `sluice`
//! process. All are installed by `.ci/run`; a missing tool fails the test
//! rather than skipping it.

mod common;

use common::{java_classpath, kafkajs_round_trip, run_client, Broker};
use sluice_engine::cluster::local::{LocalCluster, LocalClusterSpec};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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
fn the_java_client_upgrades_a_group_to_the_consumer_protocol_and_back_online() {
    // KIP-848's online migration, as an operator rolls a deployment: three
    // classic members are replaced one by one by consumer-protocol members
    // (the first turns the classic group into a consumer group holding two
    // classic members), then back; under load, no record lost, none read
    // twice by one member within a generation, committed offsets carried.
    java_group_migration("the Java group migration check", "migration", &[]);
}

#[test]
fn the_java_client_migrates_a_group_of_static_members_by_replacing_them() {
    // The same rolling upgrade and downgrade with group.instance.id set:
    // each new incarnation takes its predecessor's place (a stopped
    // classic static member sends no LeaveGroup), the first
    // consumer-protocol one upgrading the group and the last classic one
    // downgrading it to a Stable classic group, as Kafka 4 converts on a
    // static member's replacement.
    java_group_migration(
        "the Java group migration check with static members",
        "static-migration",
        &["static"],
    );
}

/// Runs `GroupMigrationCheck` on topic `topic` (4,000 records) against
/// a fresh two-shard broker; `extra` are its further arguments.
fn java_group_migration(what: &str, topic: &str, extra: &[&str]) {
    let classpath = java_classpath();
    let broker = Broker::start(
        2,
        &[
            "group.consumer.session.timeout.ms=10000",
            "group.consumer.heartbeat.interval.ms=500",
            "group.initial.rebalance.delay.ms=0",
        ],
    );
    let bootstrap = broker.bootstrap();
    let mut args = vec![
        "400",
        "java",
        "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
        "-cp",
        &classpath,
        "sluice.GroupMigrationCheck",
        &bootstrap,
        topic,
        "4000",
    ];
    args.extend_from_slice(extra);
    let out = run_client(what, &args, || format!("broker log:\n{}", broker.log()));
    println!("{out}");
    assert!(out.contains("group migration: ok"), "{out}");
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
    // exactly. (exactly_once_v2 is tested on three brokers below.)
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
            "streams-wc",
        ])
        .arg(&state_dir)
        .arg("at_least_once")
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
    common::passed("kafka-streams", &["produce", "consume", "groups-classic"]);
}

/// A `sluice.StreamsExactlyOnce` process (the application or the input's
/// feeder): its standard output and error go to `log`, its standard input
/// stays open until [`JavaProcess::finish`].
struct JavaProcess {
    child: std::process::Child,
    log: std::path::PathBuf,
}

impl JavaProcess {
    fn start(classpath: &str, args: &[&str], log: &Path) -> JavaProcess {
        let out = std::fs::File::create(log).unwrap();
        let child = Command::new("java")
            .args([
                "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
                "-cp",
                classpath,
                "sluice.StreamsExactlyOnce",
            ])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("java is installed");
        JavaProcess {
            child,
            log: log.to_path_buf(),
        }
    }

    /// The largest N of the lines `WORD N` it printed so far (`at` the
    /// latest input line the application read, `fed` the lines fed).
    fn count(&self, word: &str) -> u64 {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        log.lines()
            .filter_map(|l| l.strip_prefix(word)?.strip_prefix(' '))
            .filter_map(|n| n.trim().parse().ok())
            .max()
            .unwrap_or(0)
    }

    /// Waits until it has printed `WORD N` with N at least `n`; an error
    /// if it exits first or the deadline passes.
    fn await_count(&mut self, word: &str, n: u64) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(180);
        while self.count(word) < n {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Err(format!(
                    "{:?} exited ({status}) before {word} {n}",
                    self.log
                ));
            }
            if Instant::now() > deadline {
                return Err(format!("{:?} never reached {word} {n}", self.log));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// SIGKILL: no transaction ended, no state flushed, no group left.
    fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Ends its standard input and waits for it to finish its work and
    /// exit; returns what it printed.
    fn finish(mut self) -> Result<String, String> {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                if !status.success() {
                    return Err(format!("{:?} failed ({status})", self.log));
                }
                return Ok(std::fs::read_to_string(&self.log).unwrap_or_default());
            }
            if Instant::now() > deadline {
                return Err(format!("{:?} did not finish", self.log));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for JavaProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const EOS_APP: &str = "streams-eos";

/// The broker coordinating one of `app`'s transactional ids, by asking
/// each broker which transactions it coordinates.
fn transaction_coordinator(ports: &[u16], app: &str) -> Option<usize> {
    use kafka_protocol::messages::{ApiKey, ListTransactionsRequest, ListTransactionsResponse};
    ports
        .iter()
        .position(|&port| {
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            let resp: Option<ListTransactionsResponse> = common::try_call(
                &mut common::Raw::connect(addr),
                ApiKey::ListTransactions,
                1,
                &ListTransactionsRequest::default(),
            );
            resp.is_some_and(|r| {
                r.transaction_states
                    .iter()
                    .any(|t| t.transactional_id.starts_with(&format!("{app}-")))
            })
        })
        .map(|i| i + 1)
}

#[test]
fn kafka_streams_exactly_once_v2_counts_every_word_once_across_kills() {
    // Kafka Streams 4.4 with processing.guarantee=exactly_once_v2 on three
    // brokers: the word count of StreamsWordCount, its input, output,
    // repartition and changelog topics with three replicas, while a feeder
    // appends lines all along. The application is killed with SIGKILL
    // mid-run and restarted on its state directory (its transactional id
    // fences the killed instance and aborts its open transaction); then,
    // while it runs, the broker coordinating its transactions is killed
    // with SIGKILL and restarted; the application is killed again and a
    // new instance with an empty state directory (another transactional
    // id: the killed one's transaction is aborted by its timeout) restores
    // the store from the changelog and counts on. Read with read_committed,
    // each word's counts run 1, 2, ... N exactly: nothing counted twice
    // (as at_least_once would after a kill), nothing lost.
    let classpath = java_classpath();
    let work = tempfile::tempdir().unwrap();
    let mut spec = LocalClusterSpec::new(
        env!("CARGO_BIN_EXE_sluice").into(),
        work.path().join("cluster"),
        3,
    );
    spec.overrides = [
        "broker.session.timeout.ms=4000",
        "broker.heartbeat.interval.ms=300",
        "transaction.state.log.num.partitions=4",
        "offsets.topic.num.partitions=4",
        "min.insync.replicas=2",
        "group.initial.rebalance.delay.ms=0",
    ]
    .map(String::from)
    .to_vec();
    let mut cluster = LocalCluster::start(spec, common::READY_DEADLINE).expect("cluster starts");
    let bootstrap = cluster.bootstrap();
    // Every process's output and every broker's log, for a failure.
    let logs = |what: &str| -> String {
        let mut all = format!("{what}\n");
        let mut paths: Vec<_> = std::fs::read_dir(work.path())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .collect();
        paths.sort();
        paths.extend((1..=3).map(|n| work.path().join(format!("cluster/broker-{n}.log"))));
        for p in paths {
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            all.push_str(&format!("==== {}\n{text}\n", p.display()));
        }
        all
    };
    let fail = |what: &str| -> ! { panic!("{}", logs(what)) };
    let app = |n: usize, state: &str| {
        let state = work.path().join(state);
        let log = work.path().join(format!("app-{n}.log"));
        JavaProcess::start(
            &classpath,
            &["app", &bootstrap, EOS_APP, state.to_str().unwrap()],
            &log,
        )
    };

    let mut feeder = JavaProcess::start(
        &classpath,
        &["feed", &bootstrap, EOS_APP],
        &work.path().join("feed.log"),
    );
    feeder.await_count("fed", 100).unwrap_or_else(|e| fail(&e));
    // The waits below are for the application to read lines past those
    // fed so far: it is at work, its transactions open, when it is killed.
    let ahead = |feeder: &JavaProcess, lines: u64| feeder.count("fed") + lines;

    let mut first = app(1, "state");
    first
        .await_count("at", ahead(&feeder, 300))
        .unwrap_or_else(|e| fail(&e));
    first.kill9();
    println!("killed the first instance mid-run");

    let mut second = app(2, "state");
    second
        .await_count("at", ahead(&feeder, 300))
        .unwrap_or_else(|e| fail(&e));
    let ports = cluster.spec.ports.clone();
    let deadline = Instant::now() + common::READY_DEADLINE;
    let victim = loop {
        if let Some(node) = transaction_coordinator(&ports, EOS_APP) {
            break node;
        }
        if Instant::now() > deadline {
            fail("no broker lists the application's transactions");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    cluster.kill(victim);
    println!("killed broker {victim}, the transaction coordinator");
    let at = second.count("at");
    second
        .await_count("at", at + 600)
        .unwrap_or_else(|e| fail(&e));
    if let Err(e) = cluster.restart(victim, common::READY_DEADLINE) {
        fail(&format!("broker {victim} did not restart: {e}"));
    }
    println!("restarted broker {victim}");
    second
        .await_count("at", ahead(&feeder, 300))
        .unwrap_or_else(|e| fail(&e));
    second.kill9();
    println!("killed the second instance mid-run");

    let mut third = app(3, "state-empty");
    third
        .await_count("at", ahead(&feeder, 300))
        .unwrap_or_else(|e| fail(&e));
    let fed = feeder.finish().unwrap_or_else(|e| fail(&e));
    let lines = fed
        .lines()
        .find_map(|l| l.strip_prefix("fed lines 0.."))
        .unwrap_or_else(|| fail("the feeder did not say how many lines it fed"))
        .trim()
        .to_string();
    println!("fed {lines} lines");
    let out = run_client(
        "checking the counts",
        &[
            "300",
            "java",
            "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
            "-cp",
            &classpath,
            "sluice.StreamsExactlyOnce",
            "verify",
            &bootstrap,
            EOS_APP,
            &lines,
        ],
        || logs("checking the counts"),
    );
    print!("{out}");
    third.finish().unwrap_or_else(|e| fail(&e));
    common::passed("kafka-streams", &["transactions"]);
}
