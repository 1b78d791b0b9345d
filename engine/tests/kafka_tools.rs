//! Apache Kafka's own command-line tools against real `sluice` brokers:
//! the main classes behind `kafka-topics.sh`, the console producer and
//! consumer, `kafka-consumer-groups.sh`, `kafka-configs.sh`, the producer
//! and consumer perf tests, `kafka-get-offsets.sh`,
//! `kafka-delete-records.sh`, `kafka-log-dirs.sh`,
//! `kafka-leader-election.sh`, `kafka-reassign-partitions.sh`,
//! `kafka-metadata-quorum.sh`, `kafka-acls.sh` and
//! `kafka-transactions.sh`, run with
//! `java -cp` from the jars `scripts/kafka.sh fetch` puts in
//! `~/.cache/sluice/kafka-<version>` (Maven, pinned by
//! `scripts/kafka/pom.xml`; `.ci/run` fetches them, and the first test
//! here does when they are missing). Each tool's output is checked, not
//! only its exit code. What each tool can and cannot do against Sluice,
//! and why, is in docs/ARCHITECTURE.md ("Kafka's command-line tools").
//!
//! Every tool is a JVM start (1–2 s), so each test runs few of them and
//! waits on brokers through the wire protocol instead.

mod common;

use common::{call, create_topic, Broker, Raw, READY_DEADLINE};
use kafka_protocol::messages::{ApiKey, MetadataRequest, MetadataResponse};
use sluice_engine::cluster::local::LocalCluster;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The Kafka release whose tools are run (the one `scripts/kafka.sh`
/// and its pom pin by default), whatever `KAFKA_VERSION` says.
const KAFKA_VERSION: &str = "4.4.0";

/// How long one tool may run before the test gives up on it.
const TOOL_TIMEOUT_S: &str = "120";

/// The folder of Kafka's jars, fetched once per test process.
fn kafka_lib() -> &'static PathBuf {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/kafka.sh");
        let out = Command::new(script)
            .arg("fetch")
            .env("KAFKA_VERSION", KAFKA_VERSION)
            .output()
            .expect("scripts/kafka.sh runs (needs Java 17+ and Maven)");
        assert!(
            out.status.success(),
            "scripts/kafka.sh fetch failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lib = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
        let jar = format!("kafka-tools-{KAFKA_VERSION}.jar");
        assert!(lib.join(jar).is_file(), "{lib:?}");
        lib
    })
}

/// `java` with Kafka's class path running `class`: tools log warnings to
/// stderr only, and C1 alone starts them faster.
fn java(class: &str, args: &[&str]) -> Command {
    let log4j = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scripts/kafka/log4j2-tools.properties"
    );
    let mut cmd = Command::new("timeout");
    cmd.arg(TOOL_TIMEOUT_S)
        .arg("java")
        .arg("-Xmx256m")
        .arg("-XX:TieredStopAtLevel=1")
        .arg(format!("-Dlog4j2.configurationFile={log4j}"))
        .arg("-cp")
        .arg(kafka_lib().join("*"))
        .arg(class)
        .args(args);
    cmd
}

/// Runs a tool with `stdin` as its input.
fn run(class: &str, args: &[&str], stdin: &str) -> Output {
    let mut child = java(class, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("java runs (Java 17+)");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

/// A tool's standard output; fails the test with both outputs unless it
/// exits 0.
fn tool(class: &str, args: &[&str]) -> String {
    tool_with_input(class, args, "")
}

fn tool_with_input(class: &str, args: &[&str], stdin: &str) -> String {
    let out = run(class, args, stdin);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{class} {args:?} exited with {}:\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

const TOPICS: &str = "org.apache.kafka.tools.TopicCommand";
const CONSOLE_PRODUCER: &str = "org.apache.kafka.tools.ConsoleProducer";
const CONSOLE_CONSUMER: &str = "org.apache.kafka.tools.consumer.ConsoleConsumer";
const GROUPS: &str = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand";
const CONFIGS: &str = "org.apache.kafka.tools.ConfigCommand";
const PRODUCER_PERF: &str = "org.apache.kafka.tools.ProducerPerformance";
const CONSUMER_PERF: &str = "org.apache.kafka.tools.ConsumerPerformance";
const GET_OFFSETS: &str = "org.apache.kafka.tools.GetOffsetShell";
const DELETE_RECORDS: &str = "org.apache.kafka.tools.DeleteRecordsCommand";
const LOG_DIRS: &str = "org.apache.kafka.tools.LogDirsCommand";
const LEADER_ELECTION: &str = "org.apache.kafka.tools.LeaderElectionCommand";
const REASSIGN: &str = "org.apache.kafka.tools.reassign.ReassignPartitionsCommand";
const METADATA_QUORUM: &str = "org.apache.kafka.tools.MetadataQuorumCommand";
/// `kafka-acls.sh`.
const ACLS: &str = "org.apache.kafka.tools.AclCommand";

/// The rows of a tool's table, split on runs of white space, without the
/// header row (the one starting with `header`) and blank lines.
fn rows(out: &str, header: &str) -> Vec<Vec<String>> {
    out.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with(header))
        .map(|l| l.split_whitespace().map(String::from).collect())
        .collect()
}

/// `kafka-topics` line `Topic: t\tPartition: p\tLeader: ...` as
/// field → value.
fn fields(line: &str) -> BTreeMap<String, String> {
    line.trim()
        .split('\t')
        .filter_map(|f| f.split_once(": "))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn kafka_topics_creates_lists_describes_alters_and_deletes_topics() {
    let broker = Broker::start(2, &[]);
    let b = broker.bootstrap();
    let created = tool(
        TOPICS,
        &[
            "--bootstrap-server",
            &b,
            "--create",
            "--topic",
            "tools-topic",
            "--partitions",
            "3",
            "--replication-factor",
            "1",
            "--config",
            "retention.ms=3600000",
        ],
    );
    assert_eq!(created.trim(), "Created topic tools-topic.");
    tool(
        TOPICS,
        &["--bootstrap-server", &b, "--create", "--topic", "doomed"],
    );
    let listed = tool(TOPICS, &["--bootstrap-server", &b, "--list"]);
    assert_eq!(
        listed.lines().collect::<Vec<_>>(),
        ["doomed", "tools-topic"]
    );

    let altered = tool(
        TOPICS,
        &[
            "--bootstrap-server",
            &b,
            "--alter",
            "--topic",
            "tools-topic",
            "--partitions",
            "5",
        ],
    );
    assert_eq!(altered.trim(), "");
    let deleted = tool(
        TOPICS,
        &["--bootstrap-server", &b, "--delete", "--topic", "doomed"],
    );
    assert_eq!(deleted.trim(), "");

    // Describing every topic shows that the alteration and the deletion
    // took effect: five partitions, and no other topic.
    let described = tool(TOPICS, &["--bootstrap-server", &b, "--describe"]);
    let lines: Vec<&str> = described.lines().collect();
    assert_eq!(lines.len(), 6, "{described}");
    let topic = fields(lines[0]);
    assert_eq!(topic["Topic"], "tools-topic", "{described}");
    assert_eq!(topic["TopicId"].len(), 22, "a base64 uuid: {described}");
    assert_eq!(topic["PartitionCount"], "5");
    assert_eq!(topic["ReplicationFactor"], "1");
    assert_eq!(topic["Configs"], "retention.ms=3600000");
    for (p, line) in lines[1..].iter().enumerate() {
        let partition = fields(line);
        assert_eq!(partition["Partition"], p.to_string(), "{described}");
        assert_eq!(partition["Leader"], "1");
        assert_eq!(partition["Replicas"], "1");
        assert_eq!(partition["Isr"], "1");
    }
    // The new partitions exist on disk.
    assert!(broker.partition_dir("tools-topic", 4).is_dir());
    assert!(!broker.partition_dir("doomed", 0).exists());
    common::passed("kafka-tools", &["admin"]);
}

/// A console consumer in a group, running until it is stopped; its lines
/// come through a channel.
struct Consumer {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Consumer {
    fn start(bootstrap: &str, topic: &str, group: &str) -> Consumer {
        let mut child = java(
            CONSOLE_CONSUMER,
            &[
                "--bootstrap-server",
                bootstrap,
                "--topic",
                topic,
                "--group",
                group,
                "--from-beginning",
                "--formatter-property",
                "print.key=true",
                "--formatter-property",
                "print.partition=true",
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("java runs");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Consumer { child, lines }
    }

    fn read(&self, count: usize) -> Vec<String> {
        let deadline = Instant::now() + READY_DEADLINE;
        (0..count)
            .map(|i| {
                let left = deadline.saturating_duration_since(Instant::now());
                self.lines
                    .recv_timeout(left)
                    .unwrap_or_else(|e| panic!("console consumer line {i} of {count}: {e}"))
            })
            .collect()
    }

    /// SIGTERM, as Ctrl-C: the consumer commits and leaves its group.
    fn stop(mut self) {
        let pid = self.child.id() as i32;
        // SAFETY: `pid` is this test's own child, not yet waited for.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        // `timeout` passes the signal on to the JVM, whose shutdown hook
        // closes the consumer.
        self.child.wait().unwrap();
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn console_producer_and_consumer_and_consumer_groups() {
    let broker = Broker::start(2, &[]);
    let b = broker.bootstrap();
    create_topic(&broker, "lines", 2);
    let input: String = (0..6).map(|i| format!("k{i}:v{i}\n")).collect();
    tool_with_input(
        CONSOLE_PRODUCER,
        &[
            "--bootstrap-server",
            &b,
            "--topic",
            "lines",
            "--reader-property",
            "parse.key=true",
            "--reader-property",
            "key.separator=:",
        ],
        &input,
    );

    let consumer = Consumer::start(&b, "lines", "tools-group");
    let mut got: Vec<(String, String, String)> = consumer
        .read(6)
        .iter()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 3, "{l}");
            (f[1].to_string(), f[2].to_string(), f[0].to_string())
        })
        .collect();
    got.sort();
    for (i, (key, value, partition)) in got.iter().enumerate() {
        assert_eq!(key, &format!("k{i}"));
        assert_eq!(value, &format!("v{i}"));
        assert!(
            partition == "Partition:0" || partition == "Partition:1",
            "{partition}"
        );
    }
    // Records of one key go to one partition, whichever it is.
    let by_partition = |p: &str| got.iter().filter(|g| g.2 == p).count();
    let per_partition = [by_partition("Partition:0"), by_partition("Partition:1")];

    // It has read everything, so it has joined: one member with both
    // partitions.
    let members = tool(
        GROUPS,
        &[
            "--bootstrap-server",
            &b,
            "--describe",
            "--group",
            "tools-group",
            "--members",
            "--verbose",
        ],
    );
    let member = rows(&members, "GROUP");
    assert_eq!(member.len(), 1, "{members}");
    assert_eq!(member[0][0], "tools-group");
    assert!(member[0][1].starts_with("console-consumer-"), "{members}");
    assert_eq!(member[0][2], "/127.0.0.1");
    assert_eq!(member[0][3], "console-consumer");
    assert_eq!(member[0][4], "2", "#PARTITIONS: {members}");
    assert_eq!(member[0][6], "lines:0,1", "CURRENT-ASSIGNMENT: {members}");
    let states = tool(GROUPS, &["--bootstrap-server", &b, "--list", "--state"]);
    assert_eq!(
        rows(&states, "GROUP"),
        [["tools-group", "Stable"]],
        "{states}"
    );

    consumer.stop();
    // Its offsets were committed as it left: no lag.
    let offsets = |out: &str| -> Vec<(String, i64, i64, i64)> {
        rows(out, "GROUP")
            .into_iter()
            .filter(|r| r[0] == "tools-group")
            .map(|r| {
                (
                    format!("{}-{}", r[1], r[2]),
                    r[3].parse().unwrap(),
                    r[4].parse().unwrap(),
                    r[5].parse().unwrap(),
                )
            })
            .collect()
    };
    let described = tool(
        GROUPS,
        &[
            "--bootstrap-server",
            &b,
            "--describe",
            "--group",
            "tools-group",
        ],
    );
    assert!(
        rows(&described, "GROUP").iter().all(|r| r[6] == "-"),
        "no consumer: {described}"
    );
    let mut committed = offsets(&described);
    committed.sort();
    assert_eq!(
        committed,
        [
            (
                "lines-0".to_string(),
                per_partition[0] as i64,
                per_partition[0] as i64,
                0
            ),
            (
                "lines-1".to_string(),
                per_partition[1] as i64,
                per_partition[1] as i64,
                0
            ),
        ],
        "{described}"
    );

    let reset = tool(
        GROUPS,
        &[
            "--bootstrap-server",
            &b,
            "--reset-offsets",
            "--group",
            "tools-group",
            "--topic",
            "lines",
            "--to-earliest",
            "--execute",
        ],
    );
    let mut new_offsets = rows(&reset, "GROUP");
    new_offsets.sort();
    assert_eq!(
        new_offsets,
        [
            ["tools-group", "lines", "0", "0"],
            ["tools-group", "lines", "1", "0"]
        ],
        "{reset}"
    );
    // The reset is committed: all six records are lag again.
    let after_reset = tool(
        GROUPS,
        &[
            "--bootstrap-server",
            &b,
            "--describe",
            "--group",
            "tools-group",
        ],
    );
    let lag: i64 = offsets(&after_reset).iter().map(|o| o.3).sum();
    assert_eq!(lag, 6, "{after_reset}");
    assert!(offsets(&after_reset).iter().all(|o| o.1 == 0));

    let deleted = tool(
        GROUPS,
        &[
            "--bootstrap-server",
            &b,
            "--delete",
            "--group",
            "tools-group",
        ],
    );
    assert_eq!(
        deleted.trim(),
        "Deletion of requested consumer groups ('tools-group') was successful."
    );
    let listed = tool(GROUPS, &["--bootstrap-server", &b, "--list"]);
    assert_eq!(listed.trim(), "", "no group left");
    common::passed("kafka-tools", &["produce", "consume", "groups-classic"]);
}

#[test]
fn kafka_configs_alters_and_describes_topic_configs() {
    let broker = Broker::start(1, &[]);
    let b = broker.bootstrap();
    create_topic(&broker, "configured", 1);
    let topic = ["--entity-type", "topics", "--entity-name", "configured"];
    let alter = |change: &[&str]| {
        let mut args = vec!["--bootstrap-server", b.as_str(), "--alter"];
        args.extend(topic);
        args.extend(change);
        let out = tool(CONFIGS, &args);
        assert_eq!(
            out.trim(),
            "Completed updating config for topic configured."
        );
    };
    alter(&[
        "--add-config",
        "retention.ms=200000,max.message.bytes=2000000,cleanup.policy=[compact,delete]",
    ]);
    alter(&["--delete-config", "max.message.bytes"]);
    let mut args = vec!["--bootstrap-server", b.as_str(), "--describe"];
    args.extend(topic);
    let described = tool(CONFIGS, &args);
    let lines: Vec<&str> = described.lines().collect();
    assert_eq!(
        lines,
        [
            "Dynamic configs for topic configured are:",
            "  cleanup.policy=compact,delete sensitive=false \
             synonyms={DYNAMIC_TOPIC_CONFIG:cleanup.policy=compact,delete, \
             DEFAULT_CONFIG:log.cleanup.policy=delete}",
            // Kafka's default for `log.retention.ms` is unset (it falls
            // back to `log.retention.hours`, a key Sluice does not have),
            // so there is no default synonym to list: see
            // docs/DIFFERENTIAL.md.
            "  retention.ms=200000 sensitive=false \
             synonyms={DYNAMIC_TOPIC_CONFIG:retention.ms=200000}",
        ],
        "{described}"
    );

    // A broker's configs: every key, with its value.
    let broker_configs = tool(
        CONFIGS,
        &[
            "--bootstrap-server",
            &b,
            "--describe",
            "--all",
            "--entity-type",
            "brokers",
            "--entity-name",
            "1",
        ],
    );
    assert!(
        broker_configs.starts_with("All configs for broker 1 are:\n"),
        "{broker_configs}"
    );
    assert!(
        broker_configs.contains("\n  num.partitions=1 sensitive=false"),
        "{broker_configs}"
    );
}

#[test]
fn perf_tests_get_offsets_delete_records_and_log_dirs() {
    let broker = Broker::start(2, &[]);
    let b = broker.bootstrap();
    create_topic(&broker, "perf", 2);
    let produced = tool(
        PRODUCER_PERF,
        &[
            "--topic",
            "perf",
            "--num-records",
            "10000",
            "--record-size",
            "100",
            "--throughput",
            "-1",
            "--bootstrap-server",
            &b,
            "--command-property",
            "acks=all",
        ],
    );
    let summary = produced.lines().last().unwrap_or_default();
    assert!(summary.starts_with("10000 records sent, "), "{produced}");
    assert!(summary.contains(" ms 99th, "), "{produced}");

    let consumed = tool(
        CONSUMER_PERF,
        &[
            "--bootstrap-server",
            &b,
            "--topic",
            "perf",
            "--num-records",
            "10000",
            "--timeout",
            "60000",
        ],
    );
    // start.time, end.time, data.consumed.in.MB, MB.sec,
    // data.consumed.in.nMsg, ...
    let csv: Vec<Vec<&str>> = consumed.lines().map(|l| l.split(", ").collect()).collect();
    assert_eq!(csv.len(), 2, "{consumed}");
    assert_eq!(csv[0][4], "data.consumed.in.nMsg", "{consumed}");
    assert_eq!(csv[1][4], "10000", "{consumed}");
    assert_eq!(csv[1][2], "0.9537", "10,000 × 100 bytes in MiB: {consumed}");

    let ends = |time: &str| -> BTreeMap<String, i64> {
        let out = tool(
            GET_OFFSETS,
            &["--bootstrap-server", &b, "--topic", "perf", "--time", time],
        );
        out.lines()
            .map(|l| {
                let (tp, offset) = l.rsplit_once(':').unwrap();
                (tp.to_string(), offset.parse().unwrap())
            })
            .collect()
    };
    let latest = ends("-1");
    assert_eq!(latest.len(), 2, "{latest:?}");
    assert_eq!(latest.values().sum::<i64>(), 10_000, "{latest:?}");
    assert!(latest["perf:0"] > 100, "{latest:?}");

    let plan = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        plan.path(),
        r#"{"version":1,"partitions":[{"topic":"perf","partition":0,"offset":100}]}"#,
    )
    .unwrap();
    let deleted = tool(
        DELETE_RECORDS,
        &[
            "--bootstrap-server",
            &b,
            "--offset-json-file",
            plan.path().to_str().unwrap(),
        ],
    );
    assert!(
        deleted.contains("partition: perf-0\tlow_watermark: 100"),
        "{deleted}"
    );
    let earliest = ends("-2");
    assert_eq!(
        earliest,
        BTreeMap::from([("perf:0".to_string(), 100), ("perf:1".to_string(), 0)])
    );

    let dirs = tool(
        LOG_DIRS,
        &[
            "--bootstrap-server",
            &b,
            "--describe",
            "--topic-list",
            "perf",
        ],
    );
    let json = dirs
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON in {dirs}"));
    let json: serde_json::Value = serde_json::from_str(json).unwrap();
    let brokers = json["brokers"].as_array().unwrap();
    assert_eq!(brokers.len(), 1, "{json}");
    assert_eq!(brokers[0]["broker"], 1);
    let dir = &brokers[0]["logDirs"][0];
    assert_eq!(dir["logDir"], broker.data_dir.to_str().unwrap(), "{json}");
    assert_eq!(dir["error"], serde_json::Value::Null);
    let sizes: BTreeMap<String, u64> = dir["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            assert_eq!(p["isFuture"], false);
            assert_eq!(p["offsetLag"], 0);
            (
                p["partition"].as_str().unwrap().to_string(),
                p["size"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        sizes.keys().collect::<Vec<_>>(),
        ["perf-0", "perf-1"],
        "{json}"
    );
    let on_disk = |p: i32| -> u64 {
        common::segment_files(&broker.partition_dir("perf", p))
            .iter()
            .filter(|f| f.extension().is_some_and(|e| e == "log"))
            .map(|f| f.metadata().unwrap().len())
            .sum()
    };
    assert_eq!(sizes["perf-0"], on_disk(0), "{json}");
    assert_eq!(sizes["perf-1"], on_disk(1), "{json}");
    assert!(sizes.values().sum::<u64>() > 1_000_000, "{json}");
}

/// Partition index → (leader, replicas, isr), from the Metadata of
/// broker 2, which the test never stops.
fn partitions(c: &LocalCluster, topic: &str) -> BTreeMap<i32, (i32, Vec<i32>, Vec<i32>)> {
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::protocol::StrBytes;
    let mut raw = Raw::connect(SocketAddr::from(([127, 0, 0, 1], c.spec.ports[1])));
    let req = MetadataRequest::default().with_topics(Some(vec![MetadataRequestTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(topic.to_string()))))]));
    let m: MetadataResponse = call(&mut raw, ApiKey::Metadata, 12, &req).expect("metadata");
    let ids = |v: &[kafka_protocol::messages::BrokerId]| v.iter().map(|b| b.0).collect();
    m.topics
        .iter()
        .flat_map(|t| &t.partitions)
        .map(|p| {
            let replicas = ids(&p.replica_nodes);
            (
                p.partition_index,
                (p.leader_id.0, replicas, ids(&p.isr_nodes)),
            )
        })
        .collect()
}

/// Waits until `check` holds for `topic`'s partitions.
fn wait_partitions(
    c: &LocalCluster,
    topic: &str,
    what: &str,
    check: impl Fn(&BTreeMap<i32, (i32, Vec<i32>, Vec<i32>)>) -> bool,
) {
    let deadline = Instant::now() + READY_DEADLINE;
    loop {
        let ps = partitions(c, topic);
        if check(&ps) {
            return;
        }
        assert!(Instant::now() < deadline, "never saw {what}: {ps:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn leader_election_and_partition_reassignment_on_three_brokers() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = common::cluster_spec(dir.path(), 3);
    spec.overrides = vec![
        "broker.session.timeout.ms=4000".into(),
        "broker.heartbeat.interval.ms=300".into(),
        // Only the tool moves leaders back.
        "auto.leader.rebalance.enable=false".into(),
    ];
    // Broker 1 is the controller quorum alone, brokers 2 and 3 observe
    // the metadata log: kafka-metadata-quorum shows both kinds.
    spec.voters = 1;
    let mut c = LocalCluster::start(spec, READY_DEADLINE).expect("cluster starts");
    let b = c.bootstrap();
    for (topic, assignment) in [("elect", "1:2:3,2:3:1,3:1:2"), ("moved", "1:2")] {
        tool(
            TOPICS,
            &[
                "--bootstrap-server",
                &b,
                "--create",
                "--topic",
                topic,
                "--replica-assignment",
                assignment,
            ],
        );
    }
    wait_partitions(&c, "elect", "every replica in sync", |ps| {
        ps.len() == 3 && ps.values().all(|p| p.2.len() == 3)
    });

    // Broker 3, preferred leader of elect-2 only, goes away and comes
    // back: elect-2 is led by another broker.
    c.kill(3);
    wait_partitions(&c, "elect", "elect-2 led elsewhere", |ps| {
        ps[&2].0 != 3 && ps[&2].0 != -1
    });
    c.restart(3, READY_DEADLINE).unwrap();
    wait_partitions(&c, "elect", "broker 3 back in sync", |ps| {
        ps.values().all(|p| p.2.len() == 3)
    });
    let elected = tool(
        LEADER_ELECTION,
        &[
            "--bootstrap-server",
            &b,
            "--election-type",
            "preferred",
            "--all-topic-partitions",
        ],
    );
    assert_eq!(
        elected.trim(),
        "Successfully completed leader election (PREFERRED) for partitions elect-2"
    );
    wait_partitions(&c, "elect", "preferred leaders", |ps| {
        ps.values().all(|p| p.0 == p.1[0])
    });

    // Some records, then moved-0 goes from brokers 1, 2 to 2, 3.
    let input: String = (0..100).map(|i| format!("m{i}\n")).collect();
    tool_with_input(
        CONSOLE_PRODUCER,
        &["--bootstrap-server", &b, "--topic", "moved"],
        &input,
    );
    let plan = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        plan.path(),
        r#"{"version":1,"partitions":[{"topic":"moved","partition":0,"replicas":[2,3]}]}"#,
    )
    .unwrap();
    let plan = plan.path().to_str().unwrap();
    let started = tool(
        REASSIGN,
        &[
            "--bootstrap-server",
            &b,
            "--execute",
            "--reassignment-json-file",
            plan,
        ],
    );
    assert!(
        started.contains(r#"{"topic":"moved","partition":0,"replicas":[1,2],"#),
        "the current assignment, to roll back to: {started}"
    );
    assert!(
        started.contains("Successfully started partition reassignment for moved-0"),
        "{started}"
    );
    wait_partitions(&c, "moved", "moved-0 on brokers 2 and 3", |ps| {
        let (leader, replicas, mut isr) = ps[&0].clone();
        isr.sort();
        replicas == [2, 3] && isr == [2, 3] && leader != 1
    });
    let verified = tool(
        REASSIGN,
        &[
            "--bootstrap-server",
            &b,
            "--verify",
            "--reassignment-json-file",
            plan,
        ],
    );
    assert!(
        verified.contains("Reassignment of partition moved-0 is completed."),
        "{verified}"
    );
    assert!(
        verified.contains("Clearing topic-level throttles on topic moved"),
        "{verified}"
    );

    // Both new replicas hold the records.
    let dirs = tool(
        LOG_DIRS,
        &[
            "--bootstrap-server",
            &b,
            "--describe",
            "--topic-list",
            "moved",
            "--broker-list",
            "2,3",
        ],
    );
    let json = dirs
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or_default();
    let json: serde_json::Value = serde_json::from_str(json).unwrap();
    let brokers = json["brokers"].as_array().unwrap();
    assert_eq!(brokers.len(), 2, "{json}");
    for broker in brokers {
        let partitions = broker["logDirs"][0]["partitions"].as_array().unwrap();
        assert_eq!(partitions.len(), 1, "{json}");
        assert_eq!(partitions[0]["partition"], "moved-0");
        assert!(partitions[0]["size"].as_u64().unwrap() > 0, "{json}");
    }
    let consumed = tool(
        CONSOLE_CONSUMER,
        &[
            "--bootstrap-server",
            &b,
            "--topic",
            "moved",
            "--from-beginning",
            "--max-messages",
            "100",
        ],
    );
    assert_eq!(consumed, input);

    // The metadata quorum: broker 1 leads it alone, brokers 2 and 3
    // follow the log as observers.
    let status = tool(
        METADATA_QUORUM,
        &["--bootstrap-server", &b, "describe", "--status"],
    );
    let status: BTreeMap<&str, &str> = status
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k, v.trim()))
        .collect();
    assert_eq!(status["LeaderId"], "1", "{status:?}");
    let high_watermark: i64 = status["HighWatermark"].parse().unwrap();
    assert!(high_watermark > 0, "{status:?}");
    assert!(status["LeaderEpoch"].parse::<i64>().unwrap() >= 1);
    assert_eq!(status["MaxFollowerLag"], "0", "{status:?}");
    assert_eq!(status["MaxFollowerLagTimeMs"], "0", "{status:?}");
    let controller = c.spec.controller_ports[0];
    assert_eq!(
        status["CurrentVoters"],
        format!(r#"[{{"id": 1, "endpoints": ["CONTROLLER://127.0.0.1:{controller}"]}}]"#),
    );
    assert_eq!(
        status["CurrentObservers"], r#"[{"id": 2}, {"id": 3}]"#,
        "{status:?}"
    );
    // NodeId, DirectoryId, LogEndOffset, Lag, LastFetchTimestamp,
    // LastCaughtUpTimestamp, Status. Every broker fetches the log from its
    // only voter, so the leader knows how far each has read (all have
    // applied the topics) and when; an observer counts as caught up at
    // its first fetch that has everything committed, which may come a
    // moment after the last change: asked again until then.
    let deadline = Instant::now() + READY_DEADLINE;
    let (replication, replicas) = loop {
        let replication = tool(
            METADATA_QUORUM,
            &["--bootstrap-server", &b, "describe", "--replication"],
        );
        let mut replicas = rows(&replication, "NodeId");
        replicas.sort();
        let known = |r: &Vec<String>| (2..=5).all(|f| r[f] != "-1");
        if replicas.iter().all(known) || Instant::now() > deadline {
            break (replication, replicas);
        }
    };
    let statuses: Vec<(&str, &str)> = replicas
        .iter()
        .map(|r| (r[0].as_str(), r[6].as_str()))
        .collect();
    assert_eq!(
        statuses,
        [("1", "Leader"), ("2", "Observer"), ("3", "Observer")],
        "{replication}"
    );
    assert!(
        replicas[0][2].parse::<i64>().unwrap() >= high_watermark,
        "the leader's log holds what it committed: {replication}"
    );
    for r in &replicas {
        assert!(r[2].parse::<i64>().unwrap() > 0, "{replication}");
        assert!(r[4].parse::<i64>().unwrap() > 0, "{replication}");
        assert!(r[5].parse::<i64>().unwrap() > 0, "{replication}");
    }
}

/// `kafka-configs.sh --alter --add-config 'SCRAM-SHA-512=[password=...]'
/// --entity-type users` (AlterUserScramCredentials) over a SASL listener,
/// logged in as a PLAIN admin: the new user then logs in with
/// SCRAM-SHA-512 (librdkafka), and `--delete-config` removes it again.
#[test]
fn kafka_configs_adds_and_removes_a_scram_user() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let broker = Broker::start_with(1, |port| {
        vec![
            format!("listeners=SASL_PLAINTEXT://127.0.0.1:{port}"),
            "sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-512".into(),
            "sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required \
             user_admin=\"admin-secret\";"
                .into(),
        ]
    });
    let dir = tempfile::tempdir().unwrap();
    let admin = dir.path().join("admin.properties");
    std::fs::write(
        &admin,
        "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAIN\n\
         sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required \
         username=\"admin\" password=\"admin-secret\";\n",
    )
    .unwrap();
    let b = broker.bootstrap();
    let base = [
        "--bootstrap-server",
        b.as_str(),
        "--command-config",
        admin.to_str().unwrap(),
        "--entity-type",
        "users",
        "--entity-name",
        "dave",
        "--alter",
    ];
    let out = tool(
        CONFIGS,
        &[
            &base[..],
            &[
                "--add-config",
                "SCRAM-SHA-512=[iterations=8192,password=dave-secret]",
            ],
        ]
        .concat(),
    );
    assert!(out.contains("Completed updating config"), "{out}");
    let logs_in = |password: &str| {
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &b)
            .set("security.protocol", "SASL_PLAINTEXT")
            .set("sasl.mechanism", "SCRAM-SHA-512")
            .set("sasl.username", "dave")
            .set("sasl.password", password)
            .create()
            .unwrap();
        consumer
            .fetch_metadata(None, Duration::from_secs(20))
            .is_ok()
    };
    assert!(logs_in("dave-secret"), "log:\n{}", broker.log());
    assert!(broker
        .log()
        .contains("SASL authentication succeeded principal=User:dave"));
    let out = tool(
        CONFIGS,
        &[&base[..], &["--delete-config", "SCRAM-SHA-512"]].concat(),
    );
    assert!(out.contains("Completed updating config"), "{out}");
    assert!(!logs_in("dave-secret"), "a deleted user logged in");
    common::passed("kafka-tools", &["security"]);
}

/// `kafka-acls.sh` adds, lists and removes ACLs (LITERAL and PREFIXED,
/// topics and groups) on a broker with an authorizer; every client is
/// User:ANONYMOUS, and the cluster resource has no ACL, so with
/// `allow.everyone.if.no.acl.found` the tool may change them.
#[test]
fn kafka_acls_adds_lists_and_removes_acls() {
    let broker = Broker::start(
        1,
        &[
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "allow.everyone.if.no.acl.found=true",
        ],
    );
    let b = broker.bootstrap();
    let acls = |args: &[&str]| {
        let mut all = vec!["--bootstrap-server", b.as_str()];
        all.extend_from_slice(args);
        tool(ACLS, &all)
    };
    acls(&[
        "--add",
        "--allow-principal",
        "User:alice",
        "--operation",
        "Read",
        "--operation",
        "Describe",
        "--topic",
        "tools-orders",
        "--group",
        "tools-group",
    ]);
    acls(&[
        "--add",
        "--deny-principal",
        "User:bob",
        "--operation",
        "Write",
        "--resource-pattern-type",
        "prefixed",
        "--topic",
        "tools-",
    ]);
    let listed = acls(&["--list"]);
    for want in [
        "resourceType=TOPIC, name=tools-orders, patternType=LITERAL",
        "resourceType=GROUP, name=tools-group, patternType=LITERAL",
        "resourceType=TOPIC, name=tools-, patternType=PREFIXED",
        "principal=User:alice, host=*, operation=READ, permissionType=ALLOW",
        "principal=User:alice, host=*, operation=DESCRIBE, permissionType=ALLOW",
        "principal=User:bob, host=*, operation=WRITE, permissionType=DENY",
    ] {
        assert!(listed.contains(want), "missing {want:?} in:\n{listed}");
    }
    let one = acls(&["--list", "--topic", "tools-orders"]);
    assert!(one.contains("name=tools-orders"), "{one}");
    assert!(!one.contains("name=tools-group"), "{one}");

    acls(&[
        "--remove",
        "--force",
        "--allow-principal",
        "User:alice",
        "--operation",
        "Read",
        "--topic",
        "tools-orders",
    ]);
    let after = acls(&["--list", "--topic", "tools-orders"]);
    assert!(after.contains("operation=DESCRIBE"), "{after}");
    assert!(!after.contains("operation=READ"), "{after}");
    acls(&["--remove", "--force", "--topic", "tools-orders"]);
    acls(&["--remove", "--force", "--group", "tools-group"]);
    acls(&[
        "--remove",
        "--force",
        "--resource-pattern-type",
        "prefixed",
        "--topic",
        "tools-",
    ]);
    let none = acls(&["--list"]);
    assert!(!none.contains("principal="), "{none}");
}

/// `kafka-transactions.sh`.
const TRANSACTIONS: &str = "org.apache.kafka.tools.TransactionsCommand";

#[test]
fn kafka_transactions_lists_and_describes_an_open_transaction() {
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    let broker = Broker::start(2, &["transaction.state.log.num.partitions=4"]);
    create_topic(&broker, "tools-txn-topic", 1);
    let b = broker.bootstrap();
    let producer: ThreadedProducer<DefaultProducerContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &b)
        .set("transactional.id", "tools-txn")
        .create()
        .expect("producer");
    producer
        .init_transactions(READY_DEADLINE)
        .expect("init_transactions");
    producer.begin_transaction().expect("begin");
    producer
        .send(
            BaseRecord::<(), str>::to("tools-txn-topic")
                .partition(0)
                .payload("open"),
        )
        .map_err(|(e, _)| e)
        .expect("send");
    producer.flush(READY_DEADLINE).expect("flush");
    let listed = tool(TRANSACTIONS, &["--bootstrap-server", &b, "list"]);
    let row = rows(&listed, "TransactionalId")
        .into_iter()
        .find(|r| r[0] == "tools-txn")
        .unwrap_or_else(|| panic!("tools-txn is not listed:\n{listed}"));
    assert_eq!(row[3], "Ongoing", "{listed}");
    let described = tool(
        TRANSACTIONS,
        &[
            "--bootstrap-server",
            &b,
            "describe",
            "--transactional-id",
            "tools-txn",
        ],
    );
    assert!(described.contains("Ongoing"), "{described}");
    assert!(described.contains("tools-txn-topic-0"), "{described}");
    producer.abort_transaction(READY_DEADLINE).expect("abort");
    let described = tool(
        TRANSACTIONS,
        &[
            "--bootstrap-server",
            &b,
            "describe",
            "--transactional-id",
            "tools-txn",
        ],
    );
    assert!(
        described.contains("CompleteAbort") || described.contains("PrepareAbort"),
        "{described}"
    );
}

/// `kafka-transactions.sh find-hanging` finds a transaction its
/// coordinator never heard of (a transactional batch produced raw under a
/// producer id, never added to a transaction nor ended), and `abort`
/// ends it with an ABORT marker, after which read_committed readers move
/// past it.
#[test]
fn kafka_transactions_finds_and_aborts_a_hanging_transaction() {
    use bytes::Bytes;
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{
        ListOffsetsRequest, ListOffsetsResponse, ProduceRequest, ProduceResponse, TopicName,
        TransactionalId,
    };
    use kafka_protocol::protocol::StrBytes;
    use sluice_protocol::record_batch::BatchBuilder;

    // A hanging transaction is what verification (KIP-890 part 1)
    // prevents, so this broker runs without it, as brokers before it did.
    let broker = Broker::start(
        2,
        &[
            "transaction.state.log.num.partitions=4",
            "transaction.partition.verification.enable=false",
        ],
    );
    create_topic(&broker, "tools-hanging", 1);
    let b = broker.bootstrap();
    let name = || TopicName(StrBytes::from_static_str("tools-hanging"));
    let mut raw = Raw::connect(broker.addr());
    let pid = common::new_producer_id(broker.addr());
    // Record timestamps in 1970: the transaction looks older than any
    // transaction timeout.
    let mut batch = BatchBuilder::new(1_000).producer(pid, 0, 0).transactional();
    batch.push(1_000, None, Some(b"hanging"), &[]);
    let records = batch.records().to_vec();
    let batch = batch.finish_with(sluice_protocol::record_batch::Compression::None, &records);
    let req = ProduceRequest::default()
        .with_transactional_id(Some(TransactionalId(StrBytes::from_static_str(
            "tools-hanging-txn",
        ))))
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name())
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(Bytes::from(batch)))])]);
    let resp: ProduceResponse = call(&mut raw, ApiKey::Produce, 9, &req).expect("Produce answer");
    assert_eq!(resp.responses[0].partition_responses[0].error_code, 0);
    let mut stable = |isolation: i8| -> i64 {
        let req = ListOffsetsRequest::default()
            .with_replica_id(kafka_protocol::messages::BrokerId(-1))
            .with_isolation_level(isolation)
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(name())
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(0)
                    .with_timestamp(-1)])]);
        let resp: ListOffsetsResponse =
            call(&mut raw, ApiKey::ListOffsets, 7, &req).expect("ListOffsets answer");
        resp.topics[0].partitions[0].offset
    };
    assert_eq!((stable(1), stable(0)), (0, 1), "read_committed is held");

    let found = tool(
        TRANSACTIONS,
        &["--bootstrap-server", &b, "find-hanging", "--broker-id", "1"],
    );
    let row = rows(&found, "Topic")
        .into_iter()
        .find(|r| r[0] == "tools-hanging")
        .unwrap_or_else(|| panic!("no hanging transaction found:\n{found}"));
    assert_eq!(row[1], "0", "{found}");
    assert_eq!(row[2], pid.to_string(), "{found}");
    assert_eq!(row[5], "0", "the start offset:\n{found}");

    tool(
        TRANSACTIONS,
        &[
            "--bootstrap-server",
            &b,
            "abort",
            "--topic",
            "tools-hanging",
            "--partition",
            "0",
            "--start-offset",
            "0",
        ],
    );
    // The ABORT marker at 1: everything below 2 is stable.
    assert_eq!((stable(1), stable(0)), (2, 2), "after the abort");
    let found = tool(
        TRANSACTIONS,
        &["--bootstrap-server", &b, "find-hanging", "--broker-id", "1"],
    );
    assert!(
        !rows(&found, "Topic")
            .iter()
            .any(|r| r[0] == "tools-hanging"),
        "still hanging after the abort:\n{found}"
    );
    common::passed("kafka-tools", &["transactions"]);
}

/// `kafka-configs.sh --alter --add-config producer_byte_rate=...` for a
/// user, a user's client id and the default client id
/// (AlterClientQuotas), `--describe` of each (DescribeClientQuotas, and
/// for users DescribeUserScramCredentials too), and `--delete-config`.
#[test]
fn kafka_configs_sets_describes_and_deletes_client_quotas() {
    let broker = Broker::start(1, &[]);
    let b = broker.bootstrap();
    let configs = |args: &[&str]| {
        tool(
            CONFIGS,
            &[&["--bootstrap-server", b.as_str()], args].concat(),
        )
    };
    let alice = ["--entity-type", "users", "--entity-name", "alice"];
    let out = configs(
        &[
            &alice[..],
            &[
                "--alter",
                "--add-config",
                "producer_byte_rate=1024,consumer_byte_rate=2048",
            ],
        ]
        .concat(),
    );
    assert!(out.contains("Completed updating"), "{out}");
    let alice_app = [
        &alice[..],
        &["--entity-type", "clients", "--entity-name", "app"],
    ]
    .concat();
    let out = configs(
        &[
            &alice_app[..],
            &["--alter", "--add-config", "request_percentage=25.5"],
        ]
        .concat(),
    );
    assert!(out.contains("Completed updating"), "{out}");
    let default_clients = ["--entity-type", "clients", "--entity-default"];
    let out = configs(
        &[
            &default_clients[..],
            &["--alter", "--add-config", "consumer_byte_rate=4096"],
        ]
        .concat(),
    );
    assert!(out.contains("Completed updating"), "{out}");

    let out = configs(&[&alice[..], &["--describe"]].concat());
    assert!(
        out.contains("Quota configs for user-principal 'alice' are")
            && out.contains("producer_byte_rate=1024.0")
            && out.contains("consumer_byte_rate=2048.0"),
        "{out}"
    );
    let out = configs(&[&alice_app[..], &["--describe"]].concat());
    assert!(
        out.contains("user-principal 'alice', client-id 'app'")
            && out.contains("request_percentage=25.5"),
        "{out}"
    );
    let out = configs(&[&default_clients[..], &["--describe"]].concat());
    assert!(
        out.contains("the default client-id") && out.contains("consumer_byte_rate=4096.0"),
        "{out}"
    );

    // An unknown key is refused by the broker with Kafka's message.
    let refused = run(
        CONFIGS,
        &[
            &["--bootstrap-server", b.as_str()],
            &alice[..],
            &["--alter", "--add-config", "controller_mutation_rate=10"],
        ]
        .concat(),
        "",
    );
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&refused.stdout),
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(!refused.status.success(), "{said}");
    assert!(
        said.contains("Invalid configuration key controller_mutation_rate"),
        "{said}"
    );

    let out = configs(
        &[
            &alice[..],
            &["--alter", "--delete-config", "producer_byte_rate"],
        ]
        .concat(),
    );
    assert!(out.contains("Completed updating"), "{out}");
    let out = configs(&[&alice[..], &["--describe"]].concat());
    assert!(
        !out.contains("producer_byte_rate") && out.contains("consumer_byte_rate=2048.0"),
        "{out}"
    );
}
