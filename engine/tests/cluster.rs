//! Several `sluice` processes as one cluster: the metadata log, broker
//! fencing, leader election and controller failover, and partition data
//! replication (acks=all, the ISR, min.insync.replicas, leader failover),
//! seen through real clients (librdkafka, kcat) and raw Metadata requests.
//! The tests run one at a time: three brokers each are enough for two
//! cores.

mod common;
mod lazyfs;

use common::{call, free_port, kafkajs_round_trip, new_producer_id, Raw, READY_DEADLINE};
use kafka_protocol::messages::{ApiKey, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, TopicPartitionList};
use sluice_engine::cluster::local::{LocalCluster, LocalClusterSpec};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// One cluster at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Three brokers, all voters, with short sessions so fencing is quick.
fn cluster(dir: &std::path::Path) -> LocalCluster {
    cluster_with(dir, &[])
}

fn cluster_with(dir: &std::path::Path, extra: &[&str]) -> LocalCluster {
    LocalCluster::start(spec(dir, extra), READY_DEADLINE).expect("cluster starts")
}

fn spec(dir: &std::path::Path, extra: &[&str]) -> LocalClusterSpec {
    let mut spec = common::cluster_spec(dir, 3);
    spec.overrides = vec![
        "broker.session.timeout.ms=4000".into(),
        "broker.heartbeat.interval.ms=300".into(),
    ];
    spec.overrides.extend(extra.iter().map(|o| o.to_string()));
    spec
}

/// Metadata v12 from broker `node` for `topics` (None: all).
fn metadata(c: &LocalCluster, node: usize, topics: Option<&[&str]>) -> MetadataResponse {
    let addr = SocketAddr::from(([127, 0, 0, 1], c.spec.ports[node - 1]));
    let mut raw = Raw::connect(addr);
    let mut req = MetadataRequest::default();
    req.topics = topics.map(|ts| {
        ts.iter()
            .map(|t| {
                kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
                    .with_name(Some(TopicName(StrBytes::from_string(t.to_string()))))
            })
            .collect()
    });
    call(&mut raw, ApiKey::Metadata, 12, &req).expect("metadata answer")
}

/// Waits until `check` holds for broker `node`'s Metadata.
fn wait_for(
    c: &LocalCluster,
    node: usize,
    what: &str,
    mut check: impl FnMut(&MetadataResponse) -> bool,
) -> MetadataResponse {
    let deadline = Instant::now() + READY_DEADLINE;
    loop {
        let m = metadata(c, node, None);
        if check(&m) {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "broker {node}: never saw {what}; last: {m:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn broker_ids(m: &MetadataResponse) -> BTreeSet<i32> {
    m.brokers.iter().map(|b| b.node_id.0).collect()
}

/// Partition index → (leader, leader epoch, replicas, isr).
fn partitions(m: &MetadataResponse, topic: &str) -> BTreeMap<i32, (i32, i32, Vec<i32>, Vec<i32>)> {
    let t = m
        .topics
        .iter()
        .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == topic))
        .unwrap_or_else(|| panic!("topic {topic} missing"));
    t.partitions
        .iter()
        .map(|p| {
            let ids = |v: &Vec<kafka_protocol::messages::BrokerId>| v.iter().map(|b| b.0).collect();
            (
                p.partition_index,
                (
                    p.leader_id.0,
                    p.leader_epoch,
                    ids(&p.replica_nodes),
                    ids(&p.isr_nodes),
                ),
            )
        })
        .collect()
}

fn create(bootstrap: &str, topic: &str, partitions: i32, rf: i32) -> Result<(), String> {
    create_with(bootstrap, topic, partitions, rf, &[])
}

fn produce(bootstrap: &str, topic: &str, from: usize, count: usize) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .set("acks", "1")
        .create()
        .expect("producer");
    for i in from..from + count {
        let key = format!("k{i}");
        let value = format!("v{i}");
        loop {
            match producer.send(BaseRecord::to(topic).key(&key).payload(&value)) {
                Ok(()) => break,
                Err((e, _)) => {
                    assert!(format!("{e}").contains("Queue full"), "send: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }
    producer
        .flush(Duration::from_secs(60))
        .expect("all delivered");
}

/// A consumer assigned every partition of `topic` from its start.
fn from_the_start(bootstrap: &str, topic: &str, partitions: i32) -> BaseConsumer {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "unused")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, rdkafka::Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    consumer
}

/// Every value in every partition of `topic`, read from the leaders,
/// sorted, a value read twice kept twice: at least `expect` records, then
/// on to each partition's high watermark, so that a record beyond the
/// expected ones is read too. Compared with [`values`], a duplicate cannot
/// hide a loss.
fn consume_all(bootstrap: &str, topic: &str, partitions: i32, expect: usize) -> Vec<String> {
    use rdkafka::Message;
    let consumer = from_the_start(bootstrap, topic, partitions);
    let mut seen = Vec::new();
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    let mut ends: Option<BTreeMap<i32, i64>> = None;
    let deadline = Instant::now() + READY_DEADLINE;
    loop {
        if seen.len() >= expect {
            let ends = ends.get_or_insert_with(|| high_watermarks(&consumer, topic, partitions));
            if ends
                .iter()
                .all(|(p, end)| next.get(p).copied().unwrap_or(0) >= *end)
            {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "read {} of {expect}, to {next:?} of {ends:?}",
            seen.len()
        );
        if let Some(m) = common::poll_message(&consumer, || topic.to_string()) {
            seen.push(String::from_utf8(m.payload().unwrap().to_vec()).unwrap());
            next.insert(m.partition(), m.offset() + 1);
        }
    }
    seen.sort();
    seen
}

/// Each partition's high watermark, asked of its leader.
fn high_watermarks(consumer: &BaseConsumer, topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
    let deadline = Instant::now() + READY_DEADLINE;
    (0..partitions)
        .map(|p| loop {
            match consumer.fetch_watermarks(topic, p, Duration::from_secs(10)) {
                Ok((_, high)) => break (p, high),
                Err(e) => assert!(Instant::now() < deadline, "watermarks of {topic}-{p}: {e}"),
            }
            std::thread::sleep(Duration::from_millis(100));
        })
        .collect()
}

/// The values `produce` (or a producer of `prefix{i}` values) sent for
/// `range`, sorted as [`consume_all`] returns them.
fn values(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    let mut v: Vec<String> = range.map(|i| format!("{prefix}{i}")).collect();
    v.sort();
    v
}

#[test]
fn brokers_share_the_metadata_log_and_clients_use_every_leader() {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let c = cluster_with(dir.path(), &["offsets.topic.replication.factor=3"]);
    for node in 1..=3 {
        wait_for(&c, node, "three brokers", |m| {
            broker_ids(m) == BTreeSet::from([1, 2, 3])
        });
    }
    create(&c.bootstrap(), "replicated", 6, 3).expect("rf 3 fits three brokers");
    let err = create(&c.bootstrap(), "too-many", 1, 4).expect_err("rf 4 does not fit");
    assert!(err.contains("InvalidReplicationFactor"), "{err}");
    // Every broker comes to the same view (each applies the topic
    // record on its own time); leaders are spread evenly.
    let deadline = Instant::now() + READY_DEADLINE;
    let views = loop {
        let views: Vec<_> = (1..=3)
            .map(|n| partitions(&metadata(&c, n, Some(&["replicated"])), "replicated"))
            .collect();
        if views.iter().all(|v| *v == views[0] && v.len() == 6) {
            break views;
        }
        assert!(Instant::now() < deadline, "views never agreed: {views:#?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut led = BTreeMap::new();
    for (leader, _, replicas, isr) in views[0].values() {
        *led.entry(*leader).or_insert(0) += 1;
        let set: BTreeSet<_> = replicas.iter().collect();
        assert_eq!(set.len(), 3);
        assert_eq!(replicas, isr);
        assert_eq!(replicas[0], *leader);
    }
    assert_eq!(led, BTreeMap::from([(1, 2), (2, 2), (3, 2)]));

    // librdkafka finds each partition's leader on its own broker.
    create(&c.bootstrap(), "spread", 6, 1).unwrap();
    let m = metadata(&c, 1, Some(&["spread"]));
    let leaders: BTreeSet<i32> = partitions(&m, "spread").values().map(|p| p.0).collect();
    assert_eq!(leaders, BTreeSet::from([1, 2, 3]));
    produce(&c.bootstrap(), "spread", 0, 3000);
    let seen = consume_all(&c.bootstrap(), "spread", 6, 3000);
    assert_eq!(seen, values("v", 0..3000));

    // The offsets topic, made by the first group request, has the
    // configured replication factor.
    let group: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", c.bootstrap())
        .set("group.id", "rf-check")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition("spread", 0);
    group
        .committed_offsets(tpl, Duration::from_secs(60))
        .expect("committed offsets");
    let offsets = partitions(
        &metadata(&c, 2, Some(&["__consumer_offsets"])),
        "__consumer_offsets",
    );
    assert_eq!(offsets.len(), 50);
    assert!(offsets.values().all(|p| p.2.len() == 3), "{offsets:?}");

    // Each broker hands out producer ids from its own block.
    let mut ids = BTreeSet::new();
    for port in &c.spec.ports {
        for _ in 0..2 {
            let id = new_producer_id(SocketAddr::from(([127, 0, 0, 1], *port)));
            assert!(ids.insert(id), "{ids:?}");
        }
    }

    // kcat against any one broker lists them all, with leaders and replicas.
    let out = std::process::Command::new("kcat")
        .args([
            "-b",
            &format!("127.0.0.1:{}", c.spec.ports[2]),
            "-L",
            "-t",
            "replicated",
        ])
        .output()
        .expect("kcat runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("3 brokers"), "{text}");
    for p in &c.spec.ports {
        assert!(text.contains(&format!("127.0.0.1:{p}")), "{text}");
    }
    assert!(text.contains("(controller)"), "{text}");
    assert_eq!(text.matches("isrs: ").count(), 6, "{text}");

    // KafkaJS, bootstrapped from one broker, finds the others: a topic of
    // replication factor 3, an idempotent producer, a consumer group whose
    // coordinator may be any broker.
    let one = format!("127.0.0.1:{}", c.spec.ports[1]);
    kafkajs_round_trip(&one, "kafkajs-rf3", 3000, 3, || {
        "on a cluster of three".into()
    });
}

#[test]
fn every_broker_reports_the_quorums_cluster_id_and_another_clusters_data_is_refused() {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut c = cluster(dir.path());
    for node in 1..=3 {
        wait_for(&c, node, "three brokers", |m| {
            broker_ids(m) == BTreeSet::from([1, 2, 3])
        });
    }
    let ids: Vec<String> = (1..=3)
        .map(|n| {
            metadata(&c, n, Some(&[]))
                .cluster_id
                .map(|s| s.to_string())
                .unwrap_or_default()
        })
        .collect();
    assert!(
        !ids[0].is_empty() && ids.iter().all(|i| *i == ids[0]),
        "one cluster, one id: {ids:?}"
    );
    for n in 1..=3 {
        let meta = dir.path().join(format!("broker-{n}/meta.properties"));
        let text = std::fs::read_to_string(&meta).unwrap();
        assert!(text.contains(&format!("cluster.id={}", ids[0])), "{text}");
    }
    // Broker 3's data directory now says it belongs to another cluster:
    // the controller refuses it and it does not start.
    c.stop(3);
    let meta = dir.path().join("broker-3/meta.properties");
    let ours = std::fs::read_to_string(&meta).unwrap();
    std::fs::write(&meta, "version=1\nnode.id=3\ncluster.id=another-cluster\n").unwrap();
    let refused = c
        .restart(3, READY_DEADLINE)
        .expect_err("another cluster's data is refused");
    let log = std::fs::read_to_string(dir.path().join("broker-3.log")).unwrap();
    assert!(
        log.contains("INCONSISTENT_CLUSTER_ID") && log.contains("another-cluster"),
        "{refused}: {log}"
    );
    // Nothing was harmed: with its own id back it rejoins.
    std::fs::write(&meta, ours).unwrap();
    c.restart(3, READY_DEADLINE).expect("broker 3 rejoins");
    wait_for(&c, 1, "broker 3 back", |m| {
        broker_ids(m) == BTreeSet::from([1, 2, 3])
    });
}

#[test]
fn a_dead_broker_is_fenced_its_partitions_move_and_a_new_controller_takes_over() {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut c = cluster(dir.path());
    let m = wait_for(&c, 1, "three brokers and a controller", |m| {
        broker_ids(m).len() == 3 && m.controller_id.0 > 0
    });
    create(&c.bootstrap(), "replicated", 3, 3).unwrap();
    create(&c.bootstrap(), "single", 3, 1).unwrap();
    produce(&c.bootstrap(), "single", 0, 300);
    // Kill the active controller, with whatever it leads.
    let victim = m.controller_id.0 as usize;
    let before = partitions(&metadata(&c, victim, Some(&["replicated"])), "replicated");
    let single = partitions(&metadata(&c, victim, Some(&["single"])), "single");
    c.kill(victim);
    let survivor = if victim == 1 { 2 } else { 1 };
    let m = wait_for(&c, survivor, "the dead broker fenced", |m| {
        !broker_ids(m).contains(&(victim as i32))
            && m.controller_id.0 > 0
            && m.controller_id.0 != victim as i32
    });
    let after = partitions(&m, "replicated");
    for (index, (leader, epoch, _, isr)) in &after {
        let (old_leader, old_epoch, _, _) = &before[index];
        assert_ne!(
            *leader, victim as i32,
            "partition {index} still led by the dead broker"
        );
        assert!(
            !isr.contains(&(victim as i32)),
            "partition {index}: {isr:?}"
        );
        if *old_leader == victim as i32 {
            assert!(
                epoch > old_epoch,
                "partition {index}: epoch {old_epoch} → {epoch}"
            );
        }
    }
    // Single-replica partitions of the dead broker have no leader to elect.
    let now = partitions(&m, "single");
    for (index, (old_leader, ..)) in &single {
        if *old_leader == victim as i32 {
            assert_eq!(now[index].0, -1, "partition {index} should be offline");
        }
    }
    // The new controller takes changes.
    let alive: Vec<String> = (1..=3)
        .filter(|n| *n != victim)
        .map(|n| format!("127.0.0.1:{}", c.spec.ports[n - 1]))
        .collect();
    create(&alive.join(","), "after-failover", 2, 2).expect("the new controller creates topics");

    // The dead broker comes back: registered again, leading its
    // single-replica partitions on a new epoch, with their data.
    c.restart(victim, READY_DEADLINE).unwrap();
    let m = wait_for(&c, survivor, "the broker back", |m| {
        broker_ids(m).contains(&(victim as i32))
            && partitions(m, "single").values().all(|p| p.0 > 0)
    });
    for (index, (leader, epoch, ..)) in partitions(&m, "single") {
        let (old_leader, old_epoch, ..) = single[&index];
        assert_eq!(leader, old_leader, "partition {index}");
        if old_leader == victim as i32 {
            assert!(
                epoch > old_epoch,
                "partition {index}: epoch {old_epoch} → {epoch}"
            );
        }
    }
    let seen = consume_all(&c.bootstrap(), "single", 3, 300);
    assert_eq!(seen, values("v", 0..300));
}

/// Names of the topics in a Metadata answer.
fn topic_names(m: &MetadataResponse) -> BTreeSet<String> {
    m.topics
        .iter()
        .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
        .collect()
}

#[test]
fn metadata_snapshots_bring_back_a_voter_that_missed_them_and_rebuild_on_restart() {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    // A snapshot after every entry: the log keeps almost nothing.
    let mut c = cluster_with(
        dir.path(),
        &["metadata.log.max.record.bytes.between.snapshots=1"],
    );
    let m = wait_for(&c, 1, "three brokers and a controller", |m| {
        broker_ids(m).len() == 3 && m.controller_id.0 > 0
    });
    create(&c.bootstrap(), "before", 2, 3).unwrap();
    // A voter other than the controller dies; the others go on, and
    // their snapshots pass everything it has.
    let away = if m.controller_id.0 == 3 { 2 } else { 3 };
    c.kill(away);
    let alive: Vec<String> = (1..=3)
        .filter(|n| *n != away)
        .map(|n| format!("127.0.0.1:{}", c.spec.ports[n - 1]))
        .collect();
    let mut expected: BTreeSet<String> = ["before".to_string()].into();
    for i in 0..4 {
        let topic = format!("while-away-{i}");
        create(&alive.join(","), &topic, 1, 2).unwrap();
        expected.insert(topic);
    }
    let meta_dir = |node: usize| {
        dir.path()
            .join(format!("broker-{node}"))
            .join("__cluster_metadata-0")
    };
    let present =
        |m: &MetadataResponse| expected.is_subset(&topic_names(m)) && broker_ids(m).len() == 3;
    for node in (1..=3).filter(|n| *n != away) {
        assert!(
            meta_dir(node).join("snapshot").exists(),
            "broker {node} wrote no metadata snapshot"
        );
    }
    // Back, it is sent the leader's snapshot in place of the entries.
    c.restart(away, READY_DEADLINE).unwrap();
    let seen = wait_for(&c, away, "every topic after rejoining", present);
    assert!(meta_dir(away).join("snapshot").exists());
    let log = std::fs::read_to_string(dir.path().join(format!("broker-{away}.log"))).unwrap();
    assert!(
        log.contains("metadata snapshot installed"),
        "broker {away} caught up without the leader's snapshot"
    );
    let reference = partitions(&seen, "before");
    // Everyone stops and starts again: snapshot and entries after it
    // rebuild the same metadata on every broker.
    c.stop_all();
    let spec = c.spec.clone();
    drop(c);
    let c = LocalCluster::start(spec, READY_DEADLINE).expect("cluster starts again");
    for node in 1..=3 {
        let m = wait_for(&c, node, "every topic after a restart", present);
        let now = partitions(&m, "before");
        for (index, (_, _, replicas, _)) in &reference {
            assert_eq!(&now[index].2, replicas, "broker {node}, partition {index}");
        }
    }
    // And it still takes changes.
    create(&c.bootstrap(), "after-restart", 1, 3).unwrap();
    wait_for(&c, away, "the topic made after the restart", |m| {
        topic_names(m).contains("after-restart")
    });
}

#[test]
fn a_broker_that_is_not_a_voter_replays_from_the_controllers_snapshot() {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut layout = spec(
        dir.path(),
        &["metadata.log.max.record.bytes.between.snapshots=1"],
    );
    layout.voters = 1;
    let mut c = LocalCluster::start(layout, READY_DEADLINE).expect("cluster starts");
    wait_for(&c, 3, "three brokers", |m| broker_ids(m).len() == 3);
    c.kill(3);
    let alive = format!(
        "127.0.0.1:{},127.0.0.1:{}",
        c.spec.ports[0], c.spec.ports[1]
    );
    for i in 0..3 {
        create(&alive, &format!("while-away-{i}"), 1, 2).unwrap();
    }
    // Back, broker 3 asks for entries the voter has folded into its
    // snapshot, and is sent the voter's image over the controller
    // listener instead.
    c.restart(3, READY_DEADLINE).unwrap();
    // Its view converges on the voter's: the same topics, leaders,
    // replicas and in-sync sets (which still change while broker 3
    // catches up, so both are read on every poll).
    wait_for(&c, 3, "the voter's view of every topic", |m| {
        let voter = metadata(&c, 1, None);
        broker_ids(m).len() == 3
            && (0..3).all(|i| {
                let topic = format!("while-away-{i}");
                topic_names(m).contains(&topic)
                    && partitions(m, &topic) == partitions(&voter, &topic)
            })
    });
    let log = std::fs::read_to_string(dir.path().join("broker-3.log")).unwrap();
    assert!(
        log.contains("metadata image received"),
        "broker 3 replayed without the image"
    );
}

/// CreatePartitions through librdkafka's admin client: the outcome for
/// each request, Ok or the error code's name.
fn grow(bootstrap: &str, new: rdkafka::admin::NewPartitions<'_>, validate_only: bool) -> String {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client");
    let options = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(30)))
        .validate_only(validate_only);
    let results = futures::executor::block_on(admin.create_partitions([&new], &options))
        .expect("CreatePartitions answered");
    match &results[0] {
        Ok(_) => "Ok".into(),
        Err((_, code)) => format!("{code:?}"),
    }
}

#[test]
fn create_partitions_grows_a_topic_and_clients_use_the_new_partitions() {
    use rdkafka::admin::NewPartitions;
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(dir.path());
    wait_for(&c, 1, "three brokers", |m| broker_ids(m).len() == 3);
    let b = c.bootstrap();
    create(&b, "grow", 2, 2).unwrap();
    produce(&b, "grow", 0, 100);

    assert_eq!(grow(&b, NewPartitions::new("grow", 4), false), "Ok");
    // Placed by the controller with the topic's replication factor,
    // leaders spread: partition p starts at the broker after p - 1's.
    let m = wait_for(&c, 3, "four partitions", |m| {
        partitions(m, "grow").len() == 4
    });
    let placed = partitions(&m, "grow");
    for (index, (leader, _, replicas, isr)) in &placed {
        assert_eq!(replicas.len(), 2, "partition {index}");
        assert_eq!(*leader, replicas[0], "partition {index}");
        assert_eq!(isr, replicas, "partition {index}");
    }
    assert_ne!(placed[&2].0, placed[&3].0, "new leaders are spread");

    // Replicas named by the caller.
    let assigned: &[&[i32]] = &[&[3, 1]];
    assert_eq!(
        grow(&b, NewPartitions::new("grow", 5).assign(assigned), false),
        "Ok"
    );
    let m = wait_for(&c, 1, "five partitions", |m| {
        partitions(m, "grow").len() == 5
    });
    assert_eq!(partitions(&m, "grow")[&4].2, vec![3, 1]);

    // Refusals change nothing.
    assert_eq!(
        grow(&b, NewPartitions::new("grow", 3), false),
        "InvalidPartitions"
    );
    assert_eq!(
        grow(&b, NewPartitions::new("grow", 5), false),
        "InvalidPartitions"
    );
    assert_eq!(
        grow(&b, NewPartitions::new("nowhere", 3), false),
        "UnknownTopicOrPartition"
    );
    let wrong_rf: &[&[i32]] = &[&[1]];
    assert_eq!(
        grow(&b, NewPartitions::new("grow", 6).assign(wrong_rf), false),
        "InvalidReplicaAssignment"
    );
    let unknown: &[&[i32]] = &[&[1, 9]];
    assert_eq!(
        grow(&b, NewPartitions::new("grow", 6).assign(unknown), false),
        "InvalidReplicaAssignment"
    );
    assert_eq!(
        grow(&b, NewPartitions::new("__consumer_offsets", 60), false),
        "InvalidRequest"
    );
    assert_eq!(grow(&b, NewPartitions::new("grow", 8), true), "Ok");
    assert_eq!(partitions(&metadata(&c, 2, None), "grow").len(), 5);

    // A new producer spreads keys over all five; every record reads back.
    produce(&b, "grow", 100, 400);
    let consumer = from_the_start(&b, "grow", 5);
    for p in 2..5 {
        let (_, high) = consumer
            .fetch_watermarks("grow", p, Duration::from_secs(30))
            .expect("watermarks");
        assert!(high > 0, "partition {p} got no records");
    }
    assert_eq!(consume_all(&b, "grow", 5, 500), values("v", 0..500));
}

#[test]
fn a_topic_config_change_reaches_every_broker() {
    use rdkafka::admin::{AlterConfig, ConfigSource, ResourceSpecifier};
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(dir.path());
    wait_for(&c, 1, "three brokers", |m| broker_ids(m).len() == 3);
    create(&c.bootstrap(), "tuned", 1, 3).unwrap();
    let leader = leader_of(&c, "tuned");
    assert_eq!(raw_produce(&c, leader, "tuned", 1, &[b'x'; 2000]), 0);

    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", c.bootstrap())
        .create()
        .expect("admin client");
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let change =
        AlterConfig::new(ResourceSpecifier::Topic("tuned")).set("max.message.bytes", "1000");
    let results = futures::executor::block_on(admin.alter_configs([&change], &options))
        .expect("AlterConfigs answered");
    assert!(results[0].is_ok(), "{:?}", results[0]);

    // Every broker describes the new value as the topic's own.
    for node in 1..=3 {
        let one: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set(
                "bootstrap.servers",
                format!("127.0.0.1:{}", c.spec.ports[node - 1]),
            )
            .create()
            .expect("admin client");
        let described = futures::executor::block_on(
            one.describe_configs([&ResourceSpecifier::Topic("tuned")], &options),
        )
        .expect("DescribeConfigs answered");
        let resource = described[0].as_ref().expect("topic described");
        let entry = resource
            .get("max.message.bytes")
            .expect("max.message.bytes");
        assert_eq!(entry.value.as_deref(), Some("1000"), "broker {node}");
        assert_eq!(entry.source, ConfigSource::DynamicTopic, "broker {node}");
    }
    // The leader holds produce to it at once.
    assert_eq!(
        raw_produce(&c, leader, "tuned", 1, &[b'x'; 2000]),
        10,
        "MESSAGE_TOO_LARGE"
    );
    assert_eq!(raw_produce(&c, leader, "tuned", 1, &[b'x'; 100]), 0);
    common::passed("librdkafka", &["admin"]);
}

/// ElectLeaders v2 on broker `node`: (topic, partition) → error code.
fn elect(
    c: &LocalCluster,
    node: usize,
    election_type: i8,
    partitions: Option<&[(&str, i32)]>,
) -> BTreeMap<(String, i32), i16> {
    use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
    use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse};
    let addr = SocketAddr::from(([127, 0, 0, 1], c.spec.ports[node - 1]));
    let mut raw = Raw::connect(addr);
    let wanted = partitions.map(|ps| {
        ps.iter()
            .map(|(t, p)| {
                TopicPartitions::default()
                    .with_topic(TopicName(StrBytes::from_string(t.to_string())))
                    .with_partitions(vec![*p])
            })
            .collect()
    });
    let req = ElectLeadersRequest::default()
        .with_election_type(election_type)
        .with_topic_partitions(wanted)
        .with_timeout_ms(30_000);
    let resp: ElectLeadersResponse =
        call(&mut raw, ApiKey::ElectLeaders, 2, &req).expect("ElectLeaders answer");
    assert_eq!(resp.error_code, 0);
    resp.replica_election_results
        .iter()
        .flat_map(|t| {
            t.partition_result
                .iter()
                .map(move |p| ((t.topic.0.to_string(), p.partition_id), p.error_code))
        })
        .collect()
}

/// Kills the broker that leads partition 0 of `topic`, waits for its
/// partitions to move, restarts it and waits until it is back in every
/// ISR. Returns it.
fn bounce_leader(c: &mut LocalCluster, topic: &str, count: usize) -> usize {
    let victim = leader_of(c, topic);
    c.kill(victim);
    let other = if victim == 1 { 2 } else { 1 };
    wait_for(c, other, "leadership moved off the dead broker", |m| {
        partitions_led_by(m, topic, victim) == 0
    });
    c.restart(victim, READY_DEADLINE).unwrap();
    wait_for(c, other, "the broker back in every ISR", |m| {
        let ps = partitions(m, topic);
        ps.len() == count && ps.values().all(|(_, _, _, isr)| isr.len() == 3)
    });
    victim
}

fn partitions_led_by(m: &MetadataResponse, topic: &str, node: usize) -> usize {
    partitions(m, topic)
        .values()
        .filter(|p| p.0 == node as i32)
        .count()
}

#[test]
fn elect_leaders_moves_leadership_back_to_preferred_replicas() {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut c = cluster_with(dir.path(), &["auto.leader.rebalance.enable=false"]);
    wait_for(&c, 1, "three brokers", |m| broker_ids(m).len() == 3);
    create(&c.bootstrap(), "pref", 3, 3).unwrap();
    let victim = bounce_leader(&mut c, "pref", 3);
    let before = partitions(&metadata(&c, 1, Some(&["pref"])), "pref");
    assert_eq!(
        partitions_led_by(&metadata(&c, 1, Some(&["pref"])), "pref", victim),
        0
    );

    // An unclean election is for offline partitions only.
    let unclean = elect(&c, 1, 1, Some(&[("pref", 0)]));
    assert_eq!(unclean[&("pref".to_string(), 0)], 84, "ELECTION_NOT_NEEDED");

    let mut wanted: Vec<(&str, i32)> = (0..3).map(|p| ("pref", p)).collect();
    wanted.push(("pref", 7));
    let results = elect(&c, 2, 0, Some(&wanted));
    assert_eq!(
        results[&("pref".to_string(), 7)],
        3,
        "UNKNOWN_TOPIC_OR_PARTITION"
    );
    let after = wait_for(&c, 3, "preferred leaders", |m| {
        partitions(m, "pref")
            .values()
            .all(|(leader, _, replicas, _)| *leader == replicas[0])
    });
    let after = partitions(&after, "pref");
    for (p, (leader, epoch, replicas, _)) in &before {
        let code = results[&("pref".to_string(), *p)];
        if *leader == replicas[0] {
            assert_eq!(code, 84, "partition {p}: ELECTION_NOT_NEEDED");
            assert_eq!(after[p].1, *epoch, "partition {p} untouched");
        } else {
            assert_eq!(code, 0, "partition {p} elected");
            assert!(after[p].1 > *epoch, "partition {p}: a new leader epoch");
        }
    }
    // Every partition led by its preferred replica: nothing to elect.
    assert!(elect(&c, 1, 0, None).is_empty());
    // Clients follow the new leaders.
    produce(&c.bootstrap(), "pref", 0, 300);
    assert_eq!(
        consume_all(&c.bootstrap(), "pref", 3, 300),
        values("v", 0..300)
    );
}

#[test]
fn the_controller_moves_leadership_back_on_its_own() {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut c = cluster_with(dir.path(), &["leader.imbalance.check.interval.seconds=1"]);
    wait_for(&c, 1, "three brokers", |m| broker_ids(m).len() == 3);
    create(&c.bootstrap(), "auto", 3, 3).unwrap();
    let victim = bounce_leader(&mut c, "auto", 3);
    let m = wait_for(&c, victim, "preferred leaders again", |m| {
        partitions(m, "auto")
            .values()
            .all(|(leader, _, replicas, _)| *leader == replicas[0])
    });
    assert!(partitions_led_by(&m, "auto", victim) > 0);
}

fn create_with(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    rf: i32,
    config: &[(&str, &str)],
) -> Result<(), String> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client");
    let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(rf));
    for (k, v) in config {
        new = new.set(k, v);
    }
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = futures::executor::block_on(admin.create_topics([&new], &options))
        .map_err(|e| e.to_string())?;
    for r in results {
        r.map_err(|(name, code)| format!("{name}: {code}"))?;
    }
    Ok(())
}

/// A topic of replication factor 3 and `min.insync.replicas=2`, every
/// replica in sync.
fn create_guarded(c: &LocalCluster, topic: &str, partitions: i32) {
    create_with(
        &c.bootstrap(),
        topic,
        partitions,
        3,
        &[("min.insync.replicas", "2")],
    )
    .unwrap();
    wait_full_isr(c, 1, topic);
}

/// Waits until every partition of `topic` has all three replicas in sync,
/// as broker `node` sees it.
fn wait_full_isr(c: &LocalCluster, node: usize, topic: &str) -> MetadataResponse {
    wait_for(c, node, "every replica in sync", |m| {
        m.topics
            .iter()
            .any(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == topic))
            && partitions(m, topic)
                .values()
                .all(|(leader, _, replicas, isr)| *leader > 0 && isr.len() == replicas.len())
    })
}

/// A Produce of one record, `value`, to partition 0 of `topic` with `acks`.
fn produce_request(
    topic: &str,
    acks: i16,
    value: &[u8],
) -> kafka_protocol::messages::ProduceRequest {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    let mut b = sluice_protocol::record_batch::BatchBuilder::new(1_000);
    b.push(1_000, None, Some(value), &[]);
    kafka_protocol::messages::ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(bytes::Bytes::from(b.finish())))])])
}

/// One produce of `value` to partition 0 of `topic` with `acks`; the
/// partition's error code.
fn raw_produce(c: &LocalCluster, node: usize, topic: &str, acks: i16, value: &[u8]) -> i16 {
    let addr = SocketAddr::from(([127, 0, 0, 1], c.spec.ports[node - 1]));
    let mut raw = Raw::connect(addr);
    let req = produce_request(topic, acks, value);
    let resp: kafka_protocol::messages::ProduceResponse =
        call(&mut raw, ApiKey::Produce, 9, &req).expect("produce answer");
    resp.responses[0].partition_responses[0].error_code
}

/// A consumer's ListOffsets (v7) for partition 0 of `topic` at
/// `timestamp`, asked of broker `node`: (error code, offset).
fn list_offset_on(c: &LocalCluster, node: usize, topic: &str, timestamp: i64) -> (i16, i64) {
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    use kafka_protocol::messages::{BrokerId, ListOffsetsRequest, ListOffsetsResponse};
    let addr = SocketAddr::from(([127, 0, 0, 1], c.spec.ports[node - 1]));
    let mut raw = Raw::connect(addr);
    let req = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_timestamp(timestamp)])]);
    let resp: ListOffsetsResponse =
        call(&mut raw, ApiKey::ListOffsets, 7, &req).expect("ListOffsets answer");
    let p = &resp.topics[0].partitions[0];
    (p.error_code, p.offset)
}

/// The leader of partition 0 of `topic`, as broker 1 sees it.
fn leader_of(c: &LocalCluster, topic: &str) -> usize {
    partitions(&metadata(c, 1, Some(&[topic])), topic)[&0].0 as usize
}

/// Every `.log` file of partition `index` of `topic` on broker `node`,
/// concatenated in offset order.
fn log_bytes(c: &LocalCluster, node: usize, topic: &str, index: i32) -> Vec<u8> {
    let dir = c
        .spec
        .data_dir
        .join(format!("broker-{node}"))
        .join(format!("{topic}-{index}"));
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| std::fs::read(f).unwrap())
        .collect()
}

/// Delivery reports of an acks=all producer: the payloads acknowledged.
struct Acked(std::sync::Arc<std::sync::Mutex<Vec<(i32, String)>>>);

/// Messages a producer thread has had acknowledged so far: (partition,
/// value), shared with the test while the thread runs.
type Progress = std::sync::Arc<std::sync::Mutex<Vec<(i32, String)>>>;

/// Waits until `progress` holds at least `count` acknowledgements for
/// `partition`.
fn wait_acked(progress: &Progress, partition: i32, count: usize, what: &str) {
    let deadline = Instant::now() + READY_DEADLINE;
    loop {
        let n = progress
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| *p == partition)
            .count();
        if n >= count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{n} of {count} acknowledged on partition {partition} {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl rdkafka::ClientContext for Acked {}

impl rdkafka::producer::ProducerContext for Acked {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &rdkafka::message::DeliveryResult<'_>, _: ()) {
        use rdkafka::Message;
        if let Ok(m) = r {
            let v = String::from_utf8(m.payload().unwrap().to_vec()).unwrap();
            self.0.lock().unwrap().push((m.partition(), v));
        }
    }
}

#[test]
fn acks_all_loses_nothing_while_every_leader_is_killed_in_turn() {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut c = cluster(dir.path());
    wait_for(&c, 1, "three brokers", |m| broker_ids(m).len() == 3);
    create_guarded(&c, "orders", 3);

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let producer = acks_all_producer(c.bootstrap(), "orders", 3, &stop);

    for index in 0..3 {
        std::thread::sleep(Duration::from_millis(700));
        let m = wait_full_isr(&c, 1 + (index as usize + 1) % 3, "orders");
        let leader = partitions(&m, "orders")[&index].0 as usize;
        let probe = if leader == 1 { 2 } else { 1 };
        c.kill(leader);
        wait_for(&c, probe, "a new leader", |m| {
            let p = &partitions(m, "orders")[&index];
            p.0 > 0 && p.0 != leader as i32
        });
        std::thread::sleep(Duration::from_millis(500));
        c.restart(leader, READY_DEADLINE).unwrap();
    }
    std::thread::sleep(Duration::from_millis(700));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked = producer.join().unwrap();
    assert!(
        acked.len() > 100,
        "only {} messages acknowledged",
        acked.len()
    );

    // Every acknowledged message is there, in order per partition.
    wait_full_isr(&c, 1, "orders");
    let seen = consume_all_ordered(&c.bootstrap(), "orders", 3, &acked);
    for (part, v) in &acked {
        assert!(
            seen[part].contains_key(v),
            "acknowledged {v} on {part} is lost"
        );
    }
    // Every replica holds the same log, byte for byte.
    for index in 0..3 {
        wait_logs_agree(&c, &[1, 2, 3], "orders", index);
    }
}

/// An acks=all producer writing "<partition>-<seq>" values round-robin
/// to `partitions` partitions of `topic` until `stop`; the thread
/// returns what was acknowledged.
fn acks_all_producer(
    bootstrap: String,
    topic: &'static str,
    partitions: i32,
    stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<Vec<(i32, String)>> {
    producer_thread(
        bootstrap,
        topic,
        partitions,
        stop,
        &[],
        &Progress::default(),
    )
}

/// [`acks_all_producer`] with extra client settings.
fn producer_thread(
    bootstrap: String,
    topic: &'static str,
    partitions: i32,
    stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
    extra: &[(&str, &str)],
    progress: &Progress,
) -> std::thread::JoinHandle<Vec<(i32, String)>> {
    let stop = std::sync::Arc::clone(stop);
    let progress = std::sync::Arc::clone(progress);
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &bootstrap)
        .set("acks", "all")
        .set("linger.ms", "2")
        .set("max.in.flight.requests.per.connection", "1")
        .set("message.timeout.ms", "120000")
        .set("retry.backoff.ms", "50");
    for (k, v) in extra {
        config.set(*k, *v);
    }
    std::thread::spawn(move || {
        let p: rdkafka::producer::BaseProducer<Acked> = config
            .create_with_context(Acked(progress))
            .expect("producer");
        let mut seq = vec![0u64; partitions as usize];
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            for part in 0..partitions {
                let v = format!("{part}-{:08}", seq[part as usize]);
                if p.send(BaseRecord::<(), _>::to(topic).partition(part).payload(&v))
                    .is_ok()
                {
                    seq[part as usize] += 1;
                }
            }
            p.poll(Duration::from_millis(5));
        }
        p.flush(Duration::from_secs(120))
            .expect("every message answered");
        let acked = std::mem::take(&mut *p.context().0.lock().unwrap());
        acked
    })
}

/// Waits until partition `index` of `topic` has the same log, byte for
/// byte, on every broker in `nodes`.
fn wait_logs_agree(c: &LocalCluster, nodes: &[usize], topic: &str, index: i32) {
    let deadline = Instant::now() + READY_DEADLINE;
    loop {
        let logs: Vec<Vec<u8>> = nodes
            .iter()
            .map(|n| log_bytes(c, *n, topic, index))
            .collect();
        if logs.iter().all(|l| *l == logs[0]) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "partition {index}: replicas differ: {:?} bytes",
            logs.iter().map(Vec::len).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// AlterPartitionReassignments v1 on broker `node`: each (topic,
/// partition, target or `None` to cancel) → error code.
fn reassign(
    c: &LocalCluster,
    node: usize,
    moves: &[(&str, i32, Option<&[i32]>)],
    allow_rf_change: bool,
) -> BTreeMap<(String, i32), i16> {
    use kafka_protocol::messages::alter_partition_reassignments_request::{
        ReassignablePartition, ReassignableTopic,
    };
    use kafka_protocol::messages::{
        AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId,
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], c.spec.ports[node - 1]));
    let mut raw = Raw::connect(addr);
    let topics = moves
        .iter()
        .map(|(t, p, target)| {
            ReassignableTopic::default()
                .with_name(TopicName(StrBytes::from_string(t.to_string())))
                .with_partitions(vec![ReassignablePartition::default()
                    .with_partition_index(*p)
                    .with_replicas(
                        target.map(|r| r.iter().copied().map(BrokerId).collect()),
                    )])
        })
        .collect();
    let req = AlterPartitionReassignmentsRequest::default()
        .with_timeout_ms(30_000)
        .with_allow_replication_factor_change(allow_rf_change)
        .with_topics(topics);
    let resp: AlterPartitionReassignmentsResponse =
        call(&mut raw, ApiKey::AlterPartitionReassignments, 1, &req).expect("answer");
    assert_eq!(resp.error_code, 0);
    resp.responses
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| ((t.name.0.to_string(), p.partition_index), p.error_code))
        })
        .collect()
}

/// A running reassignment: (replicas, adding, removing).
type Moving = (Vec<i32>, Vec<i32>, Vec<i32>);

/// ListPartitionReassignments on broker `node`, of every partition.
fn reassignments(c: &LocalCluster, node: usize) -> BTreeMap<(String, i32), Moving> {
    use kafka_protocol::messages::{
        ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse,
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], c.spec.ports[node - 1]));
    let mut raw = Raw::connect(addr);
    let req = ListPartitionReassignmentsRequest::default().with_timeout_ms(30_000);
    let resp: ListPartitionReassignmentsResponse =
        call(&mut raw, ApiKey::ListPartitionReassignments, 0, &req).expect("answer");
    assert_eq!(resp.error_code, 0);
    let ids = |v: &[kafka_protocol::messages::BrokerId]| v.iter().map(|b| b.0).collect();
    resp.topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(move |p| {
                let moving = (
                    ids(&p.replicas),
                    ids(&p.adding_replicas),
                    ids(&p.removing_replicas),
                );
                ((t.name.0.to_string(), p.partition_index), moving)
            })
        })
        .collect()
}

/// Partition `index` of `topic`'s directory on broker `node`.
fn replica_dir(c: &LocalCluster, node: usize, topic: &str, index: i32) -> std::path::PathBuf {
    c.spec
        .data_dir
        .join(format!("broker-{node}"))
        .join(format!("{topic}-{index}"))
}

/// Waits until broker `node` has deleted its replica of `topic`-`index`.
fn wait_replica_gone(c: &LocalCluster, node: usize, topic: &str, index: i32) {
    let dir = replica_dir(c, node, topic, index);
    let deadline = Instant::now() + READY_DEADLINE;
    while dir.exists() {
        assert!(
            Instant::now() < deadline,
            "{} is still there",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_reassignment_moves_a_partition_while_an_acks_all_producer_writes() {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(dir.path());
    wait_for(&c, 1, "three brokers", |m| broker_ids(m).len() == 3);
    create(&c.bootstrap(), "moved", 2, 2).unwrap();
    let m = wait_full_isr(&c, 1, "moved");
    let (leader, _, replicas, _) = partitions(&m, "moved")[&0].clone();
    let spare = (1..=3).find(|n| !replicas.contains(n)).unwrap();
    let kept = replicas[1];
    assert_eq!(leader, replicas[0]);

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let progress = Progress::default();
    let producer = producer_thread(c.bootstrap(), "moved", 2, &stop, &[], &progress);
    // The move starts under load: once 50 messages of the moved partition
    // are acknowledged.
    wait_acked(&progress, 0, 50, "before the move");
    // The leader's replica goes to the spare broker; the kept one leads.
    let target = format!("{kept},{spare}");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/reassign.py");
    common::run_client(
        "kafka-python reassignment",
        &["180", "python3", script, &c.bootstrap(), "moved", &target],
        String::new,
    );
    // And goes on after it: 50 more are acknowledged.
    let moved_at = progress
        .lock()
        .unwrap()
        .iter()
        .filter(|(p, _)| *p == 0)
        .count();
    wait_acked(&progress, 0, moved_at + 50, "after the move");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked = producer.join().unwrap();

    let m = wait_for(&c, leader as usize, "the new replicas in sync", |m| {
        let (l, _, r, isr) = &partitions(m, "moved")[&0];
        *l == kept && *r == vec![kept, spare] && isr.len() == 2
    });
    assert!(partitions(&m, "moved")[&0].1 > 0, "a new leader epoch");
    wait_replica_gone(&c, leader as usize, "moved", 0);
    let seen = consume_all_ordered(&c.bootstrap(), "moved", 2, &acked);
    for (part, v) in &acked {
        assert!(
            seen[part].contains_key(v),
            "acknowledged {v} on {part} is lost"
        );
    }
    wait_logs_agree(&c, &[kept as usize, spare as usize], "moved", 0);
    assert!(reassignments(&c, spare as usize).is_empty());
}

#[test]
fn reassignments_are_listed_cancelled_refused_and_strays_removed_after_a_restart() {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut c = cluster(dir.path());
    wait_for(&c, 1, "three brokers", |m| broker_ids(m).len() == 3);
    create(&c.bootstrap(), "away", 1, 2).unwrap();
    let m = wait_full_isr(&c, 1, "away");
    let replicas = partitions(&m, "away")[&0].2.clone();
    let (x, y) = (replicas[0], replicas[1]);
    let z = (1..=3).find(|n| !replicas.contains(n)).unwrap();
    produce(&c.bootstrap(), "away", 0, 300);
    let p = |node: i32| node as usize;

    let key = ("away".to_string(), 0);
    let refused =
        |moves: &[(&str, i32, Option<&[i32]>)], allow: bool| reassign(&c, p(x), moves, allow);
    assert_eq!(refused(&[("away", 0, Some(&[x, x]))], true)[&key], 39);
    assert_eq!(refused(&[("away", 0, Some(&[x, 97]))], true)[&key], 39);
    assert_eq!(refused(&[("away", 0, Some(&[]))], true)[&key], 39);
    assert_eq!(refused(&[("away", 0, None)], true)[&key], 85);
    assert_eq!(refused(&[("away", 0, Some(&[z]))], false)[&key], 38);
    assert_eq!(
        refused(&[("away", 5, Some(&[x]))], true)[&("away".to_string(), 5)],
        3
    );
    // A partition named twice: the second is refused, and the first
    // (refused here for its own reason) starts nothing.
    let twice: &[(&str, i32, Option<&[i32]>)] =
        &[("away", 0, Some(&[x, x])), ("away", 0, Some(&[x, z]))];
    assert_eq!(refused(twice, true)[&key], 42, "INVALID_REQUEST");
    assert!(reassignments(&c, p(x)).is_empty());

    // With z down the move cannot finish: it is listed, then cancelled.
    c.kill(p(z));
    let moving = (vec![x, z, y], vec![z], vec![y]);
    assert_eq!(
        reassign(&c, p(y), &[("away", 0, Some(&[x, z]))], false)[&key],
        0
    );
    assert_eq!(reassignments(&c, p(y))[&key], moving);
    wait_for(&c, p(x), "the move in the metadata", |m| {
        partitions(m, "away")[&0].2 == moving.0
    });
    assert_eq!(reassign(&c, p(x), &[("away", 0, None)], true)[&key], 0);
    assert!(reassignments(&c, p(x)).is_empty());
    wait_for(&c, p(y), "the original replicas", |m| {
        partitions(m, "away")[&0].2 == vec![x, y]
    });

    // Again, and this time z comes back, catches up and the move ends:
    // y, live, deletes its replica at once.
    assert_eq!(
        reassign(&c, p(y), &[("away", 0, Some(&[x, z]))], false)[&key],
        0
    );
    c.restart(p(z), READY_DEADLINE).unwrap();
    wait_for(&c, p(z), "the move done", |m| {
        let (_, _, r, isr) = &partitions(m, "away")[&0];
        *r == vec![x, z] && isr.len() == 2
    });
    wait_replica_gone(&c, p(y), "away", 0);
    wait_logs_agree(&c, &[p(x), p(z)], "away", 0);

    // z's replica moves to y while z is down: z finds it a stray when it
    // restarts and deletes it.
    c.kill(p(z));
    assert_eq!(
        reassign(&c, p(x), &[("away", 0, Some(&[x, y]))], false)[&key],
        0
    );
    wait_for(&c, p(x), "the move back done", |m| {
        let (_, _, r, isr) = &partitions(m, "away")[&0];
        *r == vec![x, y] && isr.len() == 2
    });
    assert!(replica_dir(&c, p(z), "away", 0).exists());
    c.restart(p(z), READY_DEADLINE).unwrap();
    wait_replica_gone(&c, p(z), "away", 0);
    assert_eq!(
        consume_all(&c.bootstrap(), "away", 1, 300),
        values("v", 0..300)
    );
}

/// Reads each partition from the start until every acknowledged value
/// of it is seen, checking that acknowledged values come in the order
/// they were sent; returns each partition's values with their copies.
fn consume_all_ordered(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    acked: &[(i32, String)],
) -> BTreeMap<i32, BTreeMap<String, usize>> {
    let consumer = from_the_start(bootstrap, topic, partitions);
    let mut wanted: BTreeMap<i32, BTreeSet<&str>> = BTreeMap::new();
    for (p, v) in acked {
        wanted.entry(*p).or_default().insert(v.as_str());
    }
    let mut seen: BTreeMap<i32, BTreeMap<String, usize>> = BTreeMap::new();
    let mut newest: BTreeMap<i32, String> = BTreeMap::new();
    let deadline = Instant::now() + READY_DEADLINE;
    while wanted.values().any(|w| !w.is_empty()) {
        assert!(
            Instant::now() < deadline,
            "still missing {:?}",
            wanted.iter().map(|(p, w)| (p, w.len())).collect::<Vec<_>>()
        );
        if let Some(m) = common::poll_message(&consumer, || topic.to_string()) {
            use rdkafka::Message;
            let v = String::from_utf8(m.payload().unwrap().to_vec()).unwrap();
            // Values are "<partition>-<seq>". A retry of a batch whose
            // answer was lost with its leader may repeat values (the
            // producer is not idempotent), but a value seen for the
            // first time never comes before one sent earlier.
            let copies = seen.entry(m.partition()).or_default();
            if !copies.contains_key(&v) {
                let newest = newest.entry(m.partition()).or_default();
                assert!(
                    *newest < v,
                    "partition {}: {v} after {newest}",
                    m.partition()
                );
                *newest = v.clone();
            }
            if let Some(w) = wanted.get_mut(&m.partition()) {
                w.remove(v.as_str());
            }
            *copies.entry(v).or_default() += 1;
        }
    }
    seen
}

#[test]
fn acks_all_needs_min_insync_replicas_and_recovers_when_replicas_return() {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    // Broker 1 alone is the controller quorum, so that it survives two of
    // three brokers stopping (with three voters, so would the quorum not).
    let mut layout = spec(dir.path(), &[]);
    layout.voters = 1;
    layout.log_filter = Some("info,replica_fetch=debug".into());
    let mut c = LocalCluster::start(layout, READY_DEADLINE).expect("cluster starts");
    wait_for(&c, 1, "three brokers", |m| broker_ids(m).len() == 3);
    create_guarded(&c, "guarded", 1);
    assert_eq!(
        raw_produce(&c, leader_of(&c, "guarded"), "guarded", -1, b"before"),
        0
    );
    let leader = 1;
    let others = [2, 3];
    for n in &others {
        c.kill(*n);
    }
    wait_for(&c, leader, "the ISR down to the leader", |m| {
        partitions(m, "guarded")[&0].3 == vec![leader as i32]
    });
    let not_enough = sluice_protocol::ErrorCode::NotEnoughReplicas.code();
    assert_eq!(
        raw_produce(&c, leader, "guarded", -1, b"refused"),
        not_enough
    );
    assert_eq!(raw_produce(&c, leader, "guarded", 1, b"acks=1 works"), 0);
    for n in &others {
        c.restart(*n, READY_DEADLINE).unwrap();
    }
    wait_full_isr(&c, leader, "guarded");
    assert_eq!(raw_produce(&c, leader, "guarded", -1, b"after"), 0);
}

/// Creates `topic` (one partition, three replicas), waits until every
/// replica is in sync, and pauses (SIGSTOP) a follower that is not the
/// active controller, which must stay up to commit ISR changes. Returns
/// (leader, paused follower).
fn pause_a_follower(c: &LocalCluster, topic: &str) -> (usize, usize) {
    let m = wait_for(c, 1, "three brokers", |m| {
        broker_ids(m).len() == 3 && m.controller_id.0 > 0
    });
    let controller = m.controller_id.0;
    create(&c.bootstrap(), topic, 1, 3).unwrap();
    let m = wait_full_isr(c, 1, topic);
    let leader = partitions(&m, topic)[&0].0 as usize;
    let paused = (1..=3)
        .find(|n| *n != leader && *n as i32 != controller)
        .expect("three brokers");
    c.signal(paused, libc::SIGSTOP);
    (leader, paused)
}

/// A consumer's ListOffsets names only what it may read, as Kafka's
/// does: a record past the high watermark (acknowledged with acks=1
/// while an in-sync follower is paused) is neither the latest offset nor
/// found by its timestamp or as the largest timestamp until the follower
/// has it.
#[test]
fn list_offsets_names_no_record_above_the_high_watermark() {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    // The paused follower stays in the ISR and a member: the high
    // watermark waits for it.
    let spec = spec(
        dir.path(),
        &[
            "broker.session.timeout.ms=120000",
            "replica.lag.time.max.ms=120000",
        ],
    );
    let c = LocalCluster::start(spec, READY_DEADLINE).expect("cluster starts");
    let (leader, paused) = pause_a_follower(&c, "above-hw");
    // The record's timestamp is 1,000 (`produce_request`).
    assert_eq!(raw_produce(&c, leader, "above-hw", 1, b"pending"), 0);
    let ask = |timestamp| list_offset_on(&c, leader, "above-hw", timestamp);
    assert_eq!(ask(-1), (0, 0), "latest is the high watermark");
    assert_eq!(ask(500), (0, -1), "nothing committed at or after 500");
    assert_eq!(ask(-3), (0, -1), "nor a largest timestamp");
    assert_eq!(ask(-2), (0, 0), "earliest is the log start");
    c.signal(paused, libc::SIGCONT);
    let deadline = Instant::now() + READY_DEADLINE;
    while ask(-1) != (0, 1) {
        assert!(
            Instant::now() < deadline,
            "the high watermark never reached 1"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(ask(500), (0, 0));
    assert_eq!(ask(-3), (0, 0));
}

#[test]
fn a_paused_follower_leaves_the_isr_and_returns_after_catching_up() {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    // Sessions outlast the pause: the ISR shrinks for lag, not fencing.
    let mut spec = spec(
        dir.path(),
        &[
            "broker.session.timeout.ms=120000",
            "replica.lag.time.max.ms=2000",
        ],
    );
    spec.metrics_ports = (0..3).map(|_| free_port()).collect();
    let c = LocalCluster::start(spec, READY_DEADLINE).expect("cluster starts");
    let (probe, paused) = pause_a_follower(&c, "lagging");
    for i in 0..20 {
        assert_eq!(
            raw_produce(&c, probe, "lagging", 1, format!("m{i}").as_bytes()),
            0
        );
    }
    wait_for(&c, probe, "the paused follower out of the ISR", |m| {
        !partitions(m, "lagging")[&0].3.contains(&(paused as i32))
    });
    // The leader's scrape shows the partition under-replicated...
    let metrics = c.spec.metrics_ports[probe - 1];
    wait_metric(metrics, "sluice_under_replicated_partitions", |v| v >= 1.0);
    c.signal(paused, libc::SIGCONT);
    wait_full_isr(&c, probe, "lagging");
    // ...and no longer once the follower is back in the ISR.
    wait_metric(metrics, "sluice_under_replicated_partitions", |v| v == 0.0);
    // Back in the ISR means caught up: the returned follower's log is the
    // leader's, byte for byte, with all 20 records.
    wait_logs_agree(&c, &[1, 2, 3], "lagging", 0);
    let log = log_bytes(&c, paused, "lagging", 0);
    let expected: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
    assert_eq!(
        log_values(&log),
        expected,
        "the returned follower's records"
    );
}

/// The values of the records in `log` (uncompressed batches, as
/// `raw_produce` writes them), in log order.
fn log_values(log: &[u8]) -> Vec<String> {
    use sluice_protocol::record_batch::{decode_records, BatchHeader, BATCH_HEADER_SIZE};
    let mut values = Vec::new();
    let mut at = 0;
    while at < log.len() {
        let h = BatchHeader::parse(&log[at..]).expect("a whole batch header");
        let end = at + h.total_size();
        let records = decode_records(&log[at + BATCH_HEADER_SIZE..end], h.records_count as usize)
            .expect("uncompressed records");
        for r in records {
            values.push(String::from_utf8_lossy(r.value.unwrap_or_default()).into_owned());
        }
        at = end;
    }
    values
}

#[test]
fn a_follower_behind_the_leaders_log_start_starts_again_there() {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut c = cluster_with(
        dir.path(),
        &[
            "broker.session.timeout.ms=120000",
            "replica.lag.time.max.ms=2000",
        ],
    );
    let (leader, paused) = pause_a_follower(&c, "trimmed");
    let produce_range = |range: std::ops::Range<i32>| {
        for i in range {
            let value = format!("m{i}");
            assert_eq!(raw_produce(&c, leader, "trimmed", 1, value.as_bytes()), 0);
        }
    };
    produce_range(0..20);
    wait_for(&c, leader, "the paused follower out of the ISR", |m| {
        !partitions(m, "trimmed")[&0].3.contains(&(paused as i32))
    });
    // The paused follower may hold an answer to a fetch it sent before
    // the pause, with some of the first 20 records: the log start goes
    // past all of them.
    produce_range(20..25);
    wait_high_watermark(&c, "trimmed", 25);
    // Records below 25 go, through librdkafka's DeleteRecords.
    assert_eq!(delete_records(&c, "trimmed", 25), 25, "low watermark");
    produce_range(25..30);
    // The follower's next fetch is below the leader's log start: it
    // empties its log, starts at 25 and is back in sync.
    c.signal(paused, libc::SIGCONT);
    wait_full_isr(&c, leader, "trimmed");
    let segments = common::segment_files(
        &dir.path()
            .join(format!("broker-{paused}"))
            .join("trimmed-0"),
    );
    let names: Vec<String> = segments
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["00000000000000000025.log"]);
    let seen = consume_all(&c.bootstrap(), "trimmed", 1, 5);
    assert_eq!(seen, values("m", 25..30));
    // Every replica starts at 25: the other follower followed the
    // leader's log start in its fetches. Each broker writes its log starts
    // when it stops.
    c.stop_all();
    for node in 1..=3 {
        let path = dir
            .path()
            .join(format!("broker-{node}"))
            .join("log-start-offset-checkpoint");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.lines().any(|l| l == "trimmed 0 25"),
            "broker {node}: {text}"
        );
    }
}

/// Waits until partition 0 of `topic` has a high watermark of `offset`.
fn wait_high_watermark(c: &LocalCluster, topic: &str, offset: i64) {
    let probe = from_the_start(&c.bootstrap(), topic, 1);
    let deadline = Instant::now() + READY_DEADLINE;
    while probe
        .fetch_watermarks(topic, 0, Duration::from_secs(10))
        .map_or(true, |(_, high)| high < offset)
    {
        assert!(
            Instant::now() < deadline,
            "the high watermark never reached {offset}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Deletes the records of partition 0 of `topic` below `offset` with
/// librdkafka's DeleteRecords; returns the low watermark it answers.
/// Asked again while the partition's leadership moves (a loaded machine
/// can have a broker fenced and the leader elected anew): deleting below
/// an offset twice is deleting it once.
fn delete_records(c: &LocalCluster, topic: &str, offset: i64) -> i64 {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", c.bootstrap())
        .create()
        .expect("admin client");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, rdkafka::Offset::Offset(offset))
        .unwrap();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let deadline = Instant::now() + READY_DEADLINE;
    loop {
        let result = futures::executor::block_on(admin.delete_records(&tpl, &options))
            .expect("DeleteRecords answered");
        let low = result.find_partition(topic, 0).expect("partition 0");
        match low.error() {
            Ok(()) => match low.offset() {
                rdkafka::Offset::Offset(o) => return o,
                other => panic!("low watermark {other:?}"),
            },
            Err(rdkafka::error::KafkaError::OffsetFetch(
                rdkafka::types::RDKafkaErrorCode::NotLeaderForPartition
                | rdkafka::types::RDKafkaErrorCode::LeaderNotAvailable,
            )) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            Err(e) => panic!("DeleteRecords: {e:?}"),
        }
    }
}

#[test]
fn records_deleted_stay_deleted_when_the_leader_dies_right_after() {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut c = cluster(dir.path());
    wait_for(&c, 1, "three brokers", |m| broker_ids(m).len() == 3);
    create(&c.bootstrap(), "purged", 1, 3).unwrap();
    wait_full_isr(&c, 1, "purged");
    produce(&c.bootstrap(), "purged", 0, 100);
    wait_high_watermark(&c, "purged", 100);
    assert_eq!(delete_records(&c, "purged", 60), 60, "low watermark");
    // The answer came once every in-sync replica starts at 60: whichever
    // is elected next does not bring the deleted records back.
    let leader = leader_of(&c, "purged");
    c.kill(leader);
    let other = if leader == 1 { 2 } else { 1 };
    wait_for(&c, other, "a new leader", |m| {
        let l = partitions(m, "purged")[&0].0;
        l > 0 && l != leader as i32
    });
    let probe = from_the_start(&c.bootstrap(), "purged", 1);
    let deadline = Instant::now() + READY_DEADLINE;
    let low = loop {
        if let Ok((low, _)) = probe.fetch_watermarks("purged", 0, Duration::from_secs(10)) {
            break low;
        }
        assert!(
            Instant::now() < deadline,
            "no watermarks from the new leader"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(low, 60);
    let seen = consume_all(&c.bootstrap(), "purged", 1, 40);
    assert_eq!(seen, values("v", 60..100));
}

#[test]
fn a_cut_off_leader_drops_what_it_appended_alone_when_it_returns_as_follower() {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    // Broker 1 alone is the controller, so the others can be stopped
    // without losing the quorum.
    let mut layout = spec(dir.path(), &[]);
    layout.voters = 1;
    layout.log_filter = Some("info,replica_fetch=debug".into());
    let mut c = LocalCluster::start(layout, READY_DEADLINE).expect("cluster starts");
    wait_for(&c, 1, "three brokers", |m| broker_ids(m).len() == 3);
    // A topic led by a broker other than the controller.
    let (topic, leader) = (0..20)
        .find_map(|i| {
            let t = format!("div-{i}");
            create(&c.bootstrap(), &t, 1, 3).unwrap();
            wait_full_isr(&c, 1, &t);
            let l = leader_of(&c, &t);
            (l != 1).then_some((t, l))
        })
        .expect("some topic is led by broker 2 or 3");
    let follower = if leader == 2 { 3 } else { 2 };
    for i in 0..10 {
        let v = format!("committed-{i}");
        assert_eq!(raw_produce(&c, leader, &topic, -1, v.as_bytes()), 0);
    }
    // Cut the leader off: its followers stop, it appends alone, it dies.
    c.signal(1, libc::SIGSTOP);
    c.signal(follower, libc::SIGSTOP);
    // Wait until the followers' pending long polls (500 ms) have run out:
    // their empty answers wait in socket buffers, and no fetch is left at
    // the leader to carry what it appends next.
    let paused = [1, follower];
    let fetches = wait_no_replica_fetch_parked(&c, leader, &paused);
    for i in 0..5 {
        let v = format!("alone-{i}");
        assert_eq!(raw_produce(&c, leader, &topic, 1, v.as_bytes()), 0);
    }
    c.kill(leader);
    // The dead leader's log is complete: no fetch from a stopped follower
    // was received or answered after the wait, so none carried the records
    // appended alone. (Only a fetch the leader had read from its socket but
    // not yet logged when the wait looked could have; this says so rather
    // than let the test pass on a broken premise.)
    assert_eq!(
        replica_fetches(&c, leader, &paused),
        fetches,
        "fetches from the stopped followers (received, answered) at the \
         wait and after the leader died"
    );
    c.signal(1, libc::SIGCONT);
    c.signal(follower, libc::SIGCONT);
    let m = wait_for(&c, 1, "a new leader", |m| {
        let l = partitions(m, &topic)[&0].0;
        l > 0 && l != leader as i32
    });
    let new_leader = partitions(&m, &topic)[&0].0 as usize;
    for i in 0..3 {
        let v = format!("after-{i}");
        assert_eq!(raw_produce(&c, new_leader, &topic, -1, v.as_bytes()), 0);
    }
    // It comes back as a follower, cuts its divergent tail, and catches up.
    c.restart(leader, READY_DEADLINE).unwrap();
    wait_full_isr(&c, 1, &topic);
    let deadline = Instant::now() + READY_DEADLINE;
    loop {
        let returned = log_bytes(&c, leader, &topic, 0);
        let current = log_bytes(&c, new_leader, &topic, 0);
        if returned == current {
            let text = String::from_utf8_lossy(&returned);
            assert!(!text.contains("alone-"), "the unreplicated tail survived");
            assert!(text.contains("committed-9") && text.contains("after-2"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "logs differ: returned {} bytes, leader {} bytes",
            returned.len(),
            current.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Its high watermark (10 committed, then 3) is checkpointed for the
    // next start, which begins there rather than at its log end.
    c.stop(leader);
    let checkpoint = dir
        .path()
        .join(format!("broker-{leader}"))
        .join("replication-offset-checkpoint");
    let text = std::fs::read_to_string(&checkpoint).expect("replication-offset-checkpoint");
    assert!(
        text.lines().any(|l| l == format!("{topic} 0 13")),
        "{}:\n{text}",
        checkpoint.display()
    );
}

/// Per replica in `replicas`: (fetches received, fetches answered) in
/// broker `node`'s log, from its `replica_fetch` debug lines.
fn replica_fetches(c: &LocalCluster, node: usize, replicas: &[usize]) -> Vec<(usize, usize)> {
    let log = log_since(c, node, 0);
    let count = |what: &str, r: usize| {
        let field = format!("replica={r}");
        log.lines()
            .filter(|l| l.contains(what) && l.split_whitespace().any(|w| w == field))
            .count()
    };
    replicas
        .iter()
        .map(|r| {
            (
                count("replica fetch received", *r),
                count("replica fetch answered", *r),
            )
        })
        .collect()
}

/// Whether every thread of broker `node` is stopped (SIGSTOP delivered).
fn stopped(c: &LocalCluster, node: usize) -> bool {
    let pid = c.pid(node).expect("a running broker");
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.filter_map(Result::ok).all(|t| {
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        // The state follows the parenthesised command name.
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('T'))
    })
}

/// Bytes that arrived on loopback sockets with local port `port` and that
/// their owner has not read yet (`rx_queue` in /proc/net/tcp).
fn unread_bytes_at(port: u16) -> u64 {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            let local_port = fields.get(1)?.rsplit_once(':')?.1;
            let rx_queue = fields.get(4)?.split_once(':')?.1;
            (u16::from_str_radix(local_port, 16).ok()? == port)
                .then(|| u64::from_str_radix(rx_queue, 16).ok())?
        })
        .sum()
}

/// Waits until each of `replicas` (already sent SIGSTOP) is stopped, the
/// `leader` has read every byte sent to its listener, and it has answered
/// every fetch it received from them, so none is parked there; returns
/// the counts at that point.
fn wait_no_replica_fetch_parked(
    c: &LocalCluster,
    leader: usize,
    replicas: &[usize],
) -> Vec<(usize, usize)> {
    let deadline = Instant::now() + READY_DEADLINE;
    let port = c.spec.ports[leader - 1];
    loop {
        if replicas.iter().all(|r| stopped(c, *r)) && unread_bytes_at(port) == 0 {
            let fetches = replica_fetches(c, leader, replicas);
            if fetches
                .iter()
                .all(|(received, answered)| received == answered)
            {
                assert!(
                    fetches.iter().all(|(received, _)| *received > 0),
                    "no replica fetch lines in the leader's log: {fetches:?}"
                );
                return fetches;
            }
        }
        assert!(
            Instant::now() < deadline,
            "fetches from {replicas:?} still parked at {leader}: {:?}",
            replica_fetches(c, leader, replicas)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Produce requests pipelined on one connection: while the first acks=all
/// request waits for a paused follower, the second is read and appended,
/// and no answer comes; both are answered, in request order, once the
/// follower is back.
#[test]
fn pipelined_acks_all_requests_append_while_earlier_ones_wait_and_answer_in_order() {
    use kafka_protocol::messages::{ProduceResponse, ResponseHeader};
    use kafka_protocol::protocol::{Decodable, Encodable};
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    // The paused follower stays in the ISR (and registered) for the test,
    // and the leader stays leader: no preferred-leader election may hand
    // the partition to the paused broker (and answer the waiting requests
    // NOT_LEADER_OR_FOLLOWER).
    let c = cluster_with(
        dir.path(),
        &[
            "broker.session.timeout.ms=120000",
            "replica.lag.time.max.ms=120000",
            "auto.leader.rebalance.enable=false",
        ],
    );
    let (leader, paused) = pause_a_follower(&c, "pipelined");
    let mut raw = Raw::connect(SocketAddr::from(([127, 0, 0, 1], c.spec.ports[leader - 1])));
    for (correlation_id, value) in [(1, "first"), (2, "second")] {
        let mut req = produce_request("pipelined", -1, value.as_bytes());
        req.timeout_ms = 120_000;
        let mut body = bytes::BytesMut::new();
        req.encode(&mut body, 9).unwrap();
        raw.send(ApiKey::Produce as i16, 9, correlation_id, true, &body);
    }
    // The first cannot be answered while a replica in the ISR is paused,
    // yet the second reaches the leader's log.
    let deadline = Instant::now() + READY_DEADLINE;
    while !String::from_utf8_lossy(&log_bytes(&c, leader, "pipelined", 0)).contains("second") {
        assert!(
            Instant::now() < deadline,
            "the second request was not appended while the first waited"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // No answer while the follower is stopped: it cannot have fetched
    // either record, so the high watermark is still 0. Watched for a
    // second, long after the second append, so an answer sent without
    // waiting would be in the socket; the window cannot produce a false
    // failure, since nothing may legitimately arrive in it.
    assert_no_answer_yet(&mut raw, Duration::from_secs(1));
    c.signal(paused, libc::SIGCONT);
    raw.stream.set_read_timeout(Some(READY_DEADLINE)).unwrap();
    for (correlation_id, offset) in [(1, 0), (2, 1)] {
        let frame = raw.recv().expect("produce answer");
        let mut buf = bytes::Bytes::from(frame);
        let header =
            ResponseHeader::decode(&mut buf, ApiKey::Produce.response_header_version(9)).unwrap();
        assert_eq!(
            header.correlation_id, correlation_id,
            "answers in request order"
        );
        let resp = ProduceResponse::decode(&mut buf, 9).unwrap();
        let p = &resp.responses[0].partition_responses[0];
        assert_eq!((p.error_code, p.base_offset), (0, offset));
    }
}

/// Fails if any byte of an answer arrives on `raw` within `window`,
/// saying what the answer was.
fn assert_no_answer_yet(raw: &mut Raw, window: Duration) {
    use kafka_protocol::messages::{ProduceResponse, ResponseHeader};
    use kafka_protocol::protocol::Decodable;
    raw.stream.set_read_timeout(Some(window)).unwrap();
    let mut byte = [0u8; 1];
    match raw.stream.peek(&mut byte) {
        Ok(0) => panic!("the leader closed the connection instead of waiting"),
        Ok(_) => {
            raw.stream.set_read_timeout(Some(READY_DEADLINE)).unwrap();
            let mut frame = bytes::Bytes::from(raw.recv().expect("the answer that came"));
            let version = ApiKey::Produce.response_header_version(9);
            let header = ResponseHeader::decode(&mut frame, version).unwrap();
            let resp = ProduceResponse::decode(&mut frame, 9).unwrap();
            let p = &resp.responses[0].partition_responses[0];
            panic!(
                "an acks=all answer arrived while an in-sync follower was stopped: \
                 request {}, error code {}, base offset {}",
                header.correlation_id, p.error_code, p.base_offset
            )
        }
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "reading the connection: {e}"
        ),
    }
}

/// Lines of broker `node`'s log from byte `from` on.
fn log_since(c: &LocalCluster, node: usize, from: usize) -> String {
    let path = c.spec.data_dir.join(format!("broker-{node}.log"));
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.get(from..).unwrap_or_default().to_string()
}

/// Brokers the active controller fenced in `text` (log lines).
fn fenced_in(text: &str) -> BTreeSet<usize> {
    text.lines()
        .filter(|l| l.contains("fencing it"))
        .filter_map(|l| l.rsplit("node=").next()?.trim().parse().ok())
        .collect()
}

/// Which broker to freeze in a round.
#[derive(Clone, Copy, Debug)]
enum Victim {
    Controller,
    /// A partition leader that is not the active controller.
    Leader,
    /// A broker that is neither, or, when every broker leads, one that
    /// is not the controller and leads as little as another.
    Follower,
}

fn pick(c: &LocalCluster, topic: &str, victim: Victim) -> usize {
    wait_full_isr(c, 1, topic);
    // Right after a freeze a broker may not know the new controller yet
    // (Metadata says -1): wait until it does.
    let m = wait_for(c, 1, "every replica in sync and a known controller", |m| {
        m.controller_id.0 > 0
            && partitions(m, topic)
                .values()
                .all(|(leader, _, replicas, isr)| *leader > 0 && isr.len() == replicas.len())
    });
    let controller = m.controller_id.0 as usize;
    let leaders: Vec<usize> = partitions(&m, topic)
        .values()
        .map(|p| p.0 as usize)
        .collect();
    let led = |n: usize| leaders.iter().filter(|l| **l == n).count();
    let others = (1..=3).filter(|n| *n != controller);
    match victim {
        Victim::Controller => controller,
        Victim::Leader => others.max_by_key(|n| led(*n)).expect("two others"),
        Victim::Follower => others.min_by_key(|n| led(*n)).expect("two others"),
    }
}

/// Regression test for a loss of acknowledged acks=all records: a
/// frozen (SIGSTOP) active controller kept the live brokers' heartbeats
/// waiting on it for longer than a session, so the controller that took
/// over fenced every broker, itself included; the frozen broker, thawed,
/// could then be elected with a log behind what had been acknowledged.
/// Now heartbeats give up on a silent voter within a third of a session,
/// a new controller acts only on a current image, a broker frozen past
/// its lease leads nothing until the controller has answered it, and no
/// replica cuts records below its high watermark.
///
/// Under an acks=all producer, the active controller is frozen for
/// longer than a session five times, with five timings, then a leader
/// that is not the controller, then a follower. Only the frozen broker
/// is ever fenced, and every acknowledged record is read back, in order,
/// once (the producer is idempotent).
#[test]
fn freezing_any_broker_past_its_session_loses_no_acknowledged_record() {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    // A session of 6 s, so that a busy two-core machine (three brokers
    // and a producer) still heartbeats well within one.
    let c = cluster_with(dir.path(), &["broker.session.timeout.ms=6000"]);
    wait_for(&c, 1, "three brokers", |m| broker_ids(m).len() == 3);
    create_guarded(&c, "frozen", 3);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Idempotent, so that every record is in the log once.
    let idempotent = [
        ("enable.idempotence", "true"),
        ("max.in.flight.requests.per.connection", "5"),
    ];
    let producer = producer_thread(
        c.bootstrap(),
        "frozen",
        3,
        &stop,
        &idempotent,
        &Progress::default(),
    );

    // Each freeze outlasts the session.
    let rounds = [
        (Victim::Controller, 6_500),
        (Victim::Controller, 7_300),
        (Victim::Controller, 8_100),
        (Victim::Controller, 9_700),
        (Victim::Controller, 11_500),
        (Victim::Leader, 8_000),
        (Victim::Follower, 8_000),
    ];
    for (victim, freeze_ms) in rounds {
        let frozen = pick(&c, "frozen", victim);
        let marks: Vec<usize> = (1..=3).map(|n| log_since(&c, n, 0).len()).collect();
        std::thread::sleep(Duration::from_millis(300));
        c.signal(frozen, libc::SIGSTOP);
        std::thread::sleep(Duration::from_millis(freeze_ms));
        c.signal(frozen, libc::SIGCONT);
        let thawed = Instant::now();
        wait_full_isr(&c, 1 + frozen % 3, "frozen");
        // A fence the freeze earned comes within a session of the thaw
        // (by then the thawed broker has either renewed its session or
        // lost it), possibly after the ISR is full again: it is this
        // round's, so the round ends only after that, with some slack.
        let settled = thawed + Duration::from_millis(6_000 + 3_000);
        std::thread::sleep(settled.saturating_duration_since(Instant::now()));
        let mut fenced = BTreeSet::new();
        for n in 1..=3 {
            fenced.extend(fenced_in(&log_since(&c, n, marks[n - 1])));
        }
        if !fenced.iter().all(|n| *n == frozen) {
            for n in 1..=3 {
                eprintln!(
                    "--- broker {n} in this round:\n{}",
                    log_since(&c, n, marks[n - 1])
                );
            }
        }
        assert!(
            fenced.iter().all(|n| *n == frozen),
            "{victim:?} {frozen} frozen for {freeze_ms} ms, yet brokers {fenced:?} were fenced"
        );
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked = producer.join().unwrap();
    assert!(acked.len() > 100, "only {} acknowledged", acked.len());
    wait_full_isr(&c, 1, "frozen");
    let seen = consume_all_ordered(&c.bootstrap(), "frozen", 3, &acked);
    for (part, v) in &acked {
        let copies = seen[part].get(v).copied().unwrap_or(0);
        assert_eq!(
            copies, 1,
            "acknowledged {v} on {part} is there {copies} times"
        );
    }
    for index in 0..3 {
        wait_logs_agree(&c, &[1, 2, 3], "frozen", index);
    }
    common::passed("librdkafka", &["idempotence"]);
}

/// KIP-951: a broker asked to produce to or fetch from a partition it does
/// not lead answers NOT_LEADER_OR_FOLLOWER with the leader and its epoch
/// as it knows them (Produce v10+, Fetch v12+) and where the leader
/// listens (Produce v10+, Fetch v16+), so the client moves without a
/// Metadata round trip; older versions carry neither.
#[test]
fn a_broker_that_does_not_lead_names_the_leader_and_where_it_listens() {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::{FetchRequest, FetchResponse, ProduceResponse};
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(dir.path());
    create_guarded(&c, "moved", 1);
    let leader = leader_of(&c, "moved");
    let other = (1..=3).find(|n| *n != leader).unwrap();
    let m = wait_full_isr(&c, other, "moved");
    let (leader_id, epoch, _, _) = partitions(&m, "moved")[&0].clone();
    let id = m
        .topics
        .iter()
        .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == "moved"))
        .expect("moved")
        .topic_id;
    assert_eq!(leader_id as usize, leader);
    let leader_port = i32::from(c.spec.ports[leader - 1]);
    let addr = SocketAddr::from(([127, 0, 0, 1], c.spec.ports[other - 1]));
    let mut raw = Raw::connect(addr);
    const NOT_LEADER_OR_FOLLOWER: i16 = 6;

    for version in [9, 10, 13] {
        let mut req = produce_request("moved", 1, b"v");
        if version >= 13 {
            req.topic_data[0].topic_id = id;
        }
        let resp: ProduceResponse = call(&mut raw, ApiKey::Produce, version, &req).unwrap();
        let p = &resp.responses[0].partition_responses[0];
        assert_eq!(p.error_code, NOT_LEADER_OR_FOLLOWER, "v{version}");
        let named = (p.current_leader.leader_id.0, p.current_leader.leader_epoch);
        let endpoints: Vec<(i32, i32)> = resp
            .node_endpoints
            .iter()
            .map(|n| (n.node_id.0, n.port))
            .collect();
        match version >= 10 {
            true => {
                assert_eq!(named, (leader_id, epoch), "v{version}");
                assert_eq!(endpoints, vec![(leader_id, leader_port)], "v{version}");
            }
            false => assert_eq!((named, endpoints.len()), ((-1, -1), 0), "v{version}"),
        }
    }

    for version in [11, 12, 16] {
        let req = FetchRequest::default()
            .with_replica_id(kafka_protocol::messages::BrokerId(-1))
            .with_max_wait_ms(0)
            .with_max_bytes(1 << 20)
            .with_session_epoch(-1)
            .with_topics(vec![FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_static_str("moved")))
                .with_topic_id(id)
                .with_partitions(vec![
                    FetchPartition::default().with_partition_max_bytes(1 << 20)
                ])]);
        let resp: FetchResponse = call(&mut raw, ApiKey::Fetch, version, &req).unwrap();
        let p = &resp.responses[0].partitions[0];
        assert_eq!(p.error_code, NOT_LEADER_OR_FOLLOWER, "v{version}");
        let named = (p.current_leader.leader_id.0, p.current_leader.leader_epoch);
        let endpoints: Vec<(i32, i32)> = resp
            .node_endpoints
            .iter()
            .map(|n| (n.node_id.0, n.port))
            .collect();
        let want_leader = if version >= 12 {
            (leader_id, epoch)
        } else {
            (-1, -1)
        };
        assert_eq!(named, want_leader, "v{version}");
        let want_endpoints = match version >= 16 {
            true => vec![(leader_id, leader_port)],
            false => vec![],
        };
        assert_eq!(endpoints, want_endpoints, "v{version}");
    }
}

/// A rolling restart as operators do it: each broker in turn gets SIGTERM
/// and is started again once it is gone. A stopping broker first has the
/// controller move its partitions to other in-sync replicas (controlled
/// shutdown), so an acks=all idempotent producer sees only retriable
/// errors, nothing it had acknowledged is lost and nothing is written
/// twice. The longest pause between acknowledgements is printed.
#[test]
fn a_rolling_restart_moves_partitions_first_and_loses_nothing() {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut spec = spec(dir.path(), &[]);
    spec.metrics_ports = (0..3).map(|_| free_port()).collect();
    let mut c = LocalCluster::start(spec, READY_DEADLINE).expect("cluster starts");
    wait_for(&c, 1, "three brokers", |m| broker_ids(m).len() == 3);
    create_guarded(&c, "rolling", 3);

    // A consumer group reads along the whole time.
    let group_read = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let group_stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let group = {
        let (read, stop, bootstrap) = (
            std::sync::Arc::clone(&group_read),
            std::sync::Arc::clone(&group_stop),
            c.bootstrap(),
        );
        std::thread::spawn(move || {
            let consumer: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .set("group.id", "rolling-readers")
                .set("auto.offset.reset", "earliest")
                .create()
                .expect("consumer");
            consumer.subscribe(&["rolling"]).unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(Ok(_)) = consumer.poll(Duration::from_millis(100)) {
                    read.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        })
    };

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let progress = Progress::default();
    let producer = producer_thread(
        c.bootstrap(),
        "rolling",
        3,
        &stop,
        &[("enable.idempotence", "true")],
        &progress,
    );
    // Samples the acknowledgements so far, for the longest pause.
    let monitor = {
        let (stop, progress) = (std::sync::Arc::clone(&stop), Progress::clone(&progress));
        std::thread::spawn(move || {
            let (mut last_count, mut last_change) = (0, Instant::now());
            let mut longest = Duration::ZERO;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let n = progress.lock().unwrap().len();
                if n != last_count {
                    // From the first acknowledgement on: the producer's
                    // start is not a pause.
                    if last_count > 0 {
                        longest = longest.max(last_change.elapsed());
                    }
                    (last_count, last_change) = (n, Instant::now());
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            longest
        })
    };

    for node in 1..=3 {
        wait_full_isr(&c, 1 + node % 3, "rolling");
        let acked = progress.lock().unwrap().len();
        wait_acked(&progress, 0, acked / 3 + 50, "before the restart");
        let status = c.stop(node).expect("broker was running");
        assert!(status.success(), "broker {node} stopped with {status}");
        let log = std::fs::read_to_string(dir.path().join(format!("broker-{node}.log"))).unwrap();
        assert!(
            log.contains("controlled shutdown: partitions moved"),
            "broker {node} stopped without moving its partitions:\n{log}"
        );
        c.restart(node, READY_DEADLINE).unwrap();
        wait_ready(c.spec.metrics_ports[node - 1]);
    }
    wait_full_isr(&c, 1, "rolling");
    let acked = progress.lock().unwrap().len();
    wait_acked(&progress, 0, acked / 3 + 50, "after the restarts");
    // The group goes on reading after the last restart.
    let read_then = group_read.load(std::sync::atomic::Ordering::Relaxed);
    let deadline = Instant::now() + READY_DEADLINE;
    while group_read.load(std::sync::atomic::Ordering::Relaxed) <= read_then {
        assert!(
            Instant::now() < deadline,
            "the consumer group stopped reading"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    group_stop.store(true, std::sync::atomic::Ordering::Relaxed);
    group.join().unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked = producer.join().unwrap();
    let longest = monitor.join().unwrap();
    println!(
        "rolling restart: {} messages acknowledged, longest pause between acknowledgements {longest:?}",
        acked.len()
    );

    let seen = consume_all_ordered(&c.bootstrap(), "rolling", 3, &acked);
    for (part, v) in &acked {
        assert!(
            seen[part].contains_key(v),
            "acknowledged {v} on {part} is lost"
        );
    }
    for (part, values) in &seen {
        assert!(
            values.values().all(|&copies| copies == 1),
            "partition {part}: a value was written twice by an idempotent producer"
        );
    }
}

/// A broker killed with kill -9 is fenced as soon as its connections to
/// the controller close and its port refuses connections, not a session
/// later: with a 60 s session, the partition it led has a new leader and
/// the acks=all producer goes on, and the controller says why it fenced
/// it. How long that took is printed, never asserted.
#[test]
fn a_crashed_broker_is_fenced_when_its_port_refuses_not_a_session_later() {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut c = cluster_with(dir.path(), &["broker.session.timeout.ms=60000"]);
    wait_for(&c, 1, "three brokers", |m| broker_ids(m).len() == 3);
    create_guarded(&c, "crash", 3);

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let progress = Progress::default();
    let producer = producer_thread(c.bootstrap(), "crash", 3, &stop, &[], &progress);
    wait_acked(&progress, 0, 50, "before the crash");

    // A partition led by a broker that is not the active controller: a
    // new controller would need an election first.
    let m = wait_full_isr(&c, 1, "crash");
    let controller = m.controller_id.0 as usize;
    let (index, leader) = partitions(&m, "crash")
        .iter()
        .map(|(i, p)| (*i, p.0 as usize))
        .find(|(_, l)| *l != controller)
        .expect("three partitions over three brokers");
    let probe = if controller == leader { 1 } else { controller };

    let acked_before = progress
        .lock()
        .unwrap()
        .iter()
        .filter(|(p, _)| *p == index)
        .count();
    let killed_at = Instant::now();
    c.kill(leader);
    wait_for(&c, probe, "a new leader", |m| {
        let p = &partitions(m, "crash")[&index];
        p.0 > 0 && p.0 != leader as i32
    });
    let elected = killed_at.elapsed();
    wait_acked(&progress, index, acked_before + 1, "after the crash");
    let first_ack = killed_at.elapsed();
    println!(
        "kill -9 of broker {leader}: new leader of partition {index} seen after {elected:?}, \
         first acknowledgement there after {first_ack:?} (session timeout 60 s)"
    );
    let log = std::fs::read_to_string(dir.path().join(format!("broker-{controller}.log"))).unwrap();
    assert!(
        log.lines().any(
            |l| l.contains("its port refuses connections; fencing it now")
                && l.contains(&format!("node={leader}"))
        ),
        "the controller (broker {controller}) did not fence broker {leader} for its closed port"
    );

    c.restart(leader, READY_DEADLINE).unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked = producer.join().unwrap();
    wait_full_isr(&c, 1, "crash");
    let seen = consume_all_ordered(&c.bootstrap(), "crash", 3, &acked);
    for (part, v) in &acked {
        assert!(
            seen[part].contains_key(v),
            "acknowledged {v} on {part} is lost"
        );
    }
}

/// Scrapes `/metrics` on `port` until the unlabelled sample `name`
/// satisfies `ok`.
fn wait_metric(port: u16, name: &str, ok: impl Fn(f64) -> bool) {
    use std::io::{Read, Write};
    let deadline = Instant::now() + READY_DEADLINE;
    loop {
        let mut body = String::new();
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
            let _ = s.read_to_string(&mut body);
        }
        let value = body.lines().find_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            (k == name).then(|| v.parse::<f64>().ok()).flatten()
        });
        if value.is_some_and(&ok) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} is {value:?} on the metrics listener at {port}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until the metrics listener on `port` answers `/ready` with 200.
fn wait_ready(port: u16) {
    use std::io::{Read, Write};
    let deadline = Instant::now() + READY_DEADLINE;
    loop {
        let mut answer = String::new();
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.write_all(b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\n");
            let _ = s.read_to_string(&mut answer);
        }
        if answer.starts_with("HTTP/1.1 200") {
            return;
        }
        assert!(Instant::now() < deadline, "never ready: {answer:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A broker process started outside a [`LocalCluster`]; killed on drop.
struct Stranger(std::process::Child);

impl Drop for Stranger {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `nodes` brokers laid out, clients on PLAINTEXT, replication on an
/// INTERNAL and the quorum on a CONTROLLER listener, both SSL requiring a
/// certificate from the CA in `ca_file`; node `n` shows `keystore(n)`, and
/// `extra` goes to every node.
fn mtls_layout(
    data_dir: &std::path::Path,
    nodes: usize,
    ca_file: &std::path::Path,
    extra: &[&str],
    keystore: impl Fn(usize) -> std::path::PathBuf,
) -> LocalClusterSpec {
    let mut settings = vec![
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,INTERNAL:SSL,CONTROLLER:SSL",
        "inter.broker.listener.name=INTERNAL",
        "controller.listener.names=CONTROLLER",
        "listener.name.internal.ssl.client.auth=required",
        "listener.name.controller.ssl.client.auth=required",
    ];
    settings.extend_from_slice(extra);
    let mut layout = spec(data_dir, &settings);
    layout
        .overrides
        .push(format!("ssl.truststore.location={}", ca_file.display()));
    let base = common::cluster_spec(&layout.data_dir, nodes);
    layout.ports = base.ports;
    layout.controller_ports = base.controller_ports;
    layout.voters = 3;
    layout.broker_overrides = (1..=nodes)
        .map(|node| {
            vec![
                format!(
                    "listeners=PLAINTEXT://127.0.0.1:{},INTERNAL://127.0.0.1:{}",
                    layout.ports[node - 1],
                    free_port()
                ),
                format!("ssl.keystore.location={}", keystore(node).display()),
            ]
        })
        .collect();
    layout
}

/// The first three brokers of `layout`, the cluster its others try to join.
fn first_three(layout: &LocalClusterSpec) -> LocalClusterSpec {
    let mut three = layout.clone();
    three.ports.truncate(3);
    three.controller_ports.truncate(3);
    three.broker_overrides.truncate(3);
    three
}

/// Starts broker `node` of `layout` on its own, its output in
/// `<data_dir>/broker-<node>.log`.
fn start_stranger(layout: &LocalClusterSpec, node: usize) -> Stranger {
    let log = std::fs::File::create(layout.data_dir.join(format!("broker-{node}.log"))).unwrap();
    let child = layout
        .command(node)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start a broker");
    Stranger(child)
}

/// Every voter's log (broker `1..=3`), concatenated.
fn voter_logs(layout: &LocalClusterSpec) -> String {
    (1..=3)
        .map(|n| {
            std::fs::read_to_string(layout.data_dir.join(format!("broker-{n}.log")))
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The controller listener's refusals in `log` whose error contains `why`.
fn refusals(log: &str, why: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("controller listener: TLS handshake refused") && l.contains(why))
        .count()
}

/// Produces `prefix{i}` for `range` to partition 0 of `topic` with
/// acks=all, every one acknowledged.
fn produce_acks_all(bootstrap: &str, topic: &str, range: std::ops::Range<usize>) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("message.timeout.ms", "60000")
        .create()
        .expect("producer");
    for i in range {
        let value = format!("v{i}");
        let mut record = BaseRecord::<(), _>::to(topic).partition(0).payload(&value);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((e, r)) => {
                    assert!(format!("{e}").contains("Queue full"), "send: {e}");
                    record = r;
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }
    producer
        .flush(Duration::from_secs(60))
        .expect("all delivered");
    assert_eq!(producer.in_flight_count(), 0, "every record acknowledged");
}

/// Issue 21, test 3. Three brokers whose replication (`INTERNAL`) and
/// controller quorum (`CONTROLLER`) listeners both require a certificate
/// from the cluster's CA replicate acks=all and fail over: the active
/// controller, which also leads the partition, is killed; a surviving
/// voter takes over the quorum (Raft over TLS) and a follower the
/// partition, serving every acknowledged record and taking more. Then two
/// strangers try to join: broker 4 shows a certificate from another CA
/// (and trusts the cluster's, so only the voters' check of its
/// certificate keeps it out), broker 5 speaks plaintext to the
/// controllers. Neither ever appears in Metadata, and the voters' logs
/// say why.
#[test]
fn a_quorum_on_mutual_tls_fails_over_and_keeps_out_brokers_without_its_certificate() {
    use common::certs::{Ca, Files};
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let files = Files::new();
    let (ca, rogue) = (Ca::new("cluster-ca"), Ca::new("rogue-ca"));
    let ca_file = files.write("ca.pem", &ca.pem());
    let cluster_ks = files.keystore("broker.pem", &ca);
    let rogue_ks = files.keystore("rogue.pem", &rogue);
    // Five brokers laid out; 1 to 3 are the cluster, 4 and 5 the strangers.
    let mut layout = mtls_layout(&dir.path().join("data"), 5, &ca_file, &[], |node| {
        if node <= 3 {
            cluster_ks.clone()
        } else {
            rogue_ks.clone()
        }
    });
    layout.broker_overrides[4].push(
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,INTERNAL:SSL,CONTROLLER:PLAINTEXT"
            .into(),
    );
    let three = first_three(&layout);
    let mut c = LocalCluster::start(three, READY_DEADLINE).expect("cluster starts");

    let m = wait_for(&c, 1, "three brokers and a controller", |m| {
        broker_ids(m).len() == 3 && m.controller_id.0 > 0
    });
    let victim = m.controller_id.0;
    let others: Vec<i32> = (1..=3).filter(|n| *n != victim).collect();
    // The first replica leads a new partition: the controller.
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", c.bootstrap())
        .create()
        .expect("admin client");
    let replicas = [victim, others[0], others[1]];
    let assignment: [&[i32]; 1] = [&replicas];
    let topic = NewTopic::new("guarded", 1, TopicReplication::Variable(&assignment))
        .set("min.insync.replicas", "2");
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let created = futures::executor::block_on(admin.create_topics([&topic], &options)).unwrap();
    assert!(created.iter().all(Result::is_ok), "{created:?}");
    wait_full_isr(&c, 1, "guarded");
    assert_eq!(leader_of(&c, "guarded"), victim as usize);
    produce_acks_all(&c.bootstrap(), "guarded", 0..300);

    c.kill(victim as usize);
    let survivor = others[0] as usize;
    wait_for(&c, survivor, "a new controller and leader", |m| {
        let leader = partitions(m, "guarded")[&0].0;
        !broker_ids(m).contains(&victim)
            && others.contains(&m.controller_id.0)
            && others.contains(&leader)
    });
    let alive: Vec<String> = others
        .iter()
        .map(|n| format!("127.0.0.1:{}", c.spec.ports[*n as usize - 1]))
        .collect();
    let alive = alive.join(",");
    produce_acks_all(&alive, "guarded", 300..400);
    assert_eq!(
        consume_all(&alive, "guarded", 1, 400),
        values("v", 0..400),
        "the new leader serves every acknowledged record"
    );

    // The strangers, one at a time, so that each one's refusals are
    // logged (the log is rate limited per address).
    for (node, why) in [(4, "invalid peer certificate"), (5, "corrupt message")] {
        let _stranger = start_stranger(&layout, node);
        let deadline = Instant::now() + READY_DEADLINE;
        while refusals(&voter_logs(&layout), why) == 0 {
            let ids = broker_ids(&metadata(&c, survivor, None));
            assert!(
                !ids.contains(&(node as i32)),
                "broker {node} joined: {ids:?}"
            );
            assert!(
                Instant::now() < deadline,
                "no refusal of broker {node} ({why}) logged:\n{}",
                voter_logs(&layout)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let ids = broker_ids(&metadata(&c, survivor, None));
        assert!(
            !ids.contains(&(node as i32)),
            "broker {node} joined: {ids:?}"
        );
        let own = std::fs::read_to_string(layout.data_dir.join(format!("broker-{node}.log")))
            .unwrap_or_default();
        assert!(
            !own.contains("broker ready"),
            "broker {node} started:\n{own}"
        );
    }
    // A process with no certificate at all (trusting the cluster's CA):
    // its Register gets no answer.
    let port = c.spec.controller_ports[survivor - 1];
    let deadline = Instant::now() + READY_DEADLINE;
    while refusals(&voter_logs(&layout), "peer sent no certificates") == 0 {
        assert!(
            register_without_certificate(&ca.pem(), port).is_none(),
            "a Register without a certificate was answered"
        );
        assert!(
            Instant::now() < deadline,
            "no refusal of a client without a certificate logged:\n{}",
            voter_logs(&layout)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!broker_ids(&metadata(&c, survivor, None)).contains(&6));
}

/// Sends a Register for node 6 to the controller listener at `port` over
/// TLS without a client certificate; the answer's bytes, if any came.
fn register_without_certificate(ca_pem: &str, port: u16) -> Option<Vec<u8>> {
    use rustls::pki_types::pem::PemObject;
    use std::io::{Read, Write};
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    #[allow(deprecated)]
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    let sock = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    sock.set_read_timeout(Some(READY_DEADLINE)).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    let body = br#"{"type":"Register","node":6,"host":"127.0.0.1","port":1,"incarnation":1}"#;
    let mut frame = (body.len() as u32 + 1).to_be_bytes().to_vec();
    frame.push(1);
    frame.extend_from_slice(body);
    tls.write_all(&frame).ok()?;
    let mut answer = vec![0u8; 256];
    match tls.read(&mut answer) {
        Ok(n) if n > 0 => Some(answer[..n].to_vec()),
        _ => None,
    }
}

/// The authorizer's refusals on the controller listener in `log` that
/// name `principal`.
fn peer_refusals(log: &str, principal: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("controller listener: peer refused") && l.contains(principal))
        .count()
}

/// CreateAcls v3 on the broker at `addr`: ALLOW CLUSTER_ACTION on the
/// cluster for `principal`, from any host.
fn grant_cluster_action(addr: SocketAddr, principal: &str) {
    use kafka_protocol::messages::create_acls_request::AclCreation;
    use kafka_protocol::messages::{CreateAclsRequest, CreateAclsResponse};
    // Kafka's codes: CLUSTER, LITERAL, CLUSTER_ACTION, ALLOW.
    let creation = AclCreation::default()
        .with_resource_type(4)
        .with_resource_name(StrBytes::from_static_str("kafka-cluster"))
        .with_resource_pattern_type(3)
        .with_principal(StrBytes::from_string(principal.to_string()))
        .with_host(StrBytes::from_static_str("*"))
        .with_operation(9)
        .with_permission_type(3);
    let req = CreateAclsRequest::default().with_creations(vec![creation]);
    let resp: CreateAclsResponse =
        call(&mut Raw::connect(addr), ApiKey::CreateAcls, 3, &req).expect("CreateAcls answer");
    let codes: Vec<i16> = resp.results.iter().map(|r| r.error_code).collect();
    assert_eq!(codes, [0], "CreateAcls");
}

/// Issue 21: with an authorizer, a certificate from the cluster's own CA
/// is not enough to speak on the controller listener. Three brokers run
/// mutual TLS on the replication and controller listeners with
/// `super.users` naming their certificate's principal (`User:CN=localhost`;
/// and `User:ANONYMOUS`, the test's own clients on the plaintext client
/// listener, which the controller listener, requiring a certificate,
/// never sees). A fourth process with a certificate the same CA signed
/// for `CN=intruder` passes the TLS handshake but not the authorizer: it
/// never appears in Metadata and the voters log its principal. The
/// cluster meanwhile serves acks=all produce and consume. Once an ACL
/// allows `User:CN=intruder` CLUSTER_ACTION on the cluster, it registers:
/// the voters decide with the ACLs of the metadata log, not only
/// `super.users`.
#[test]
fn a_quorum_with_an_authorizer_keeps_out_its_own_cas_certificates_without_cluster_action() {
    use common::certs::{Ca, Files};
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let files = Files::new();
    let ca = Ca::new("cluster-ca");
    let ca_file = files.write("ca.pem", &ca.pem());
    let cluster_ks = files.keystore("broker.pem", &ca);
    let (cert, key) = ca.issue(&[("CN", "intruder")], false);
    let intruder_ks = files.write("intruder.pem", &format!("{key}{cert}"));
    let extra = [
        "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users=User:CN=localhost;User:ANONYMOUS",
    ];
    let layout = mtls_layout(&dir.path().join("data"), 4, &ca_file, &extra, |node| {
        if node <= 3 {
            cluster_ks.clone()
        } else {
            intruder_ks.clone()
        }
    });
    let three = first_three(&layout);
    let c = LocalCluster::start(three, READY_DEADLINE).expect("cluster starts");
    wait_for(&c, 1, "three brokers and a controller", |m| {
        broker_ids(m).len() == 3 && m.controller_id.0 > 0
    });

    let intruder = start_stranger(&layout, 4);
    let deadline = Instant::now() + READY_DEADLINE;
    while peer_refusals(&voter_logs(&layout), "User:CN=intruder") == 0 {
        let ids = broker_ids(&metadata(&c, 1, None));
        assert!(!ids.contains(&4), "the intruder joined: {ids:?}");
        assert!(
            Instant::now() < deadline,
            "no refusal of User:CN=intruder logged:\n{}",
            voter_logs(&layout)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    create_guarded(&c, "guarded", 1);
    produce_acks_all(&c.bootstrap(), "guarded", 0..200);
    assert_eq!(
        consume_all(&c.bootstrap(), "guarded", 1, 200),
        values("v", 0..200)
    );
    for node in 1..=3 {
        let ids = broker_ids(&metadata(&c, node, None));
        assert_eq!(ids, BTreeSet::from([1, 2, 3]), "broker {node}'s Metadata");
    }
    let own = std::fs::read_to_string(layout.data_dir.join("broker-4.log")).unwrap_or_default();
    assert!(
        !own.contains("broker ready"),
        "the intruder started:\n{own}"
    );
    let logs = voter_logs(&layout);
    assert_eq!(
        peer_refusals(&logs, "User:CN=localhost"),
        0,
        "a cluster broker was refused:\n{logs}"
    );

    // An ACL lets it in.
    grant_cluster_action(
        SocketAddr::from(([127, 0, 0, 1], c.spec.ports[0])),
        "User:CN=intruder",
    );
    wait_for(&c, 1, "broker 4 registered once allowed", |m| {
        broker_ids(m).contains(&4)
    });
    drop(intruder);
}

/// Keyed records `key-{k}` = `round-{r}-of-key-{k}` for `rounds` rounds of
/// `keys` keys, then `fillers` records of their own keys (so the rounds
/// lie in sealed segments), acks=all.
fn produce_keyed(bootstrap: &str, topic: &str, keys: usize, rounds: usize, fillers: usize) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .set("batch.num.messages", "100")
        .set("acks", "all")
        .create()
        .expect("producer");
    let records = (0..rounds)
        .flat_map(|r| (0..keys).map(move |k| (format!("key-{k}"), format!("round-{r}-of-key-{k}"))))
        .chain((0..fillers).map(|i| (format!("filler-{i}"), format!("{i:0>40}"))));
    for (key, value) in records {
        loop {
            match producer.send(BaseRecord::to(topic).partition(0).key(&key).payload(&value)) {
                Ok(()) => break,
                Err((e, _)) => {
                    assert!(format!("{e}").contains("Queue full"), "send: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }
    producer
        .flush(Duration::from_secs(60))
        .expect("all delivered");
}

/// (offset, key, value) of every record of partition `index` of `topic`
/// in broker `node`'s own files; None while a file changes under the read
/// (a cleaning swap).
fn replica_records(
    c: &LocalCluster,
    node: usize,
    topic: &str,
    index: i32,
) -> Option<Vec<(i64, String, String)>> {
    use sluice_protocol::record_batch::{decode_records, BatchHeader, BATCH_HEADER_SIZE};
    let bytes = log_bytes(c, node, topic, index);
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let h = BatchHeader::parse(&bytes[at..])?;
        let batch = bytes.get(at..at + h.total_size())?;
        if !h.is_control() {
            let records =
                decode_records(&batch[BATCH_HEADER_SIZE..], h.records_count as usize).ok()?;
            for r in records {
                let text =
                    |b: Option<&[u8]>| String::from_utf8_lossy(b.unwrap_or_default()).to_string();
                out.push((
                    h.base_offset.0 + i64::from(r.offset_delta),
                    text(r.key),
                    text(r.value),
                ));
            }
        }
        at += h.total_size();
    }
    Some(out)
}

/// Whether `records` hold each key once, with its latest value, offsets
/// rising.
fn one_latest_per_key(records: &[(i64, String, String)], keys: usize, rounds: usize) -> bool {
    let rising = records.windows(2).all(|w| w[0].0 < w[1].0);
    let mut seen = BTreeMap::new();
    for (_, k, v) in records {
        if seen.insert(k.clone(), v.clone()).is_some() {
            return false;
        }
    }
    let latest = (0..keys).all(|k| {
        seen.get(&format!("key-{k}")) == Some(&format!("round-{}-of-key-{k}", rounds - 1))
    });
    rising && latest
}

/// Makes `node` the leader of partition 0 of `topic`: its replicas are
/// reordered to put it first, then its preferred leader elected.
fn lead_from(c: &LocalCluster, topic: &str, node: i32) {
    let (_, _, replicas, _) = partitions(&metadata(c, 1, Some(&[topic])), topic)[&0].clone();
    let mut order = vec![node];
    order.extend(replicas.iter().copied().filter(|r| *r != node));
    let codes = reassign(c, 1, &[(topic, 0, Some(order.as_slice()))], false);
    assert_eq!(codes[&(topic.to_string(), 0)], 0, "reassign to {order:?}");
    wait_for(c, 1, "the replicas reordered, all in sync", |m| {
        let (_, _, r, isr) = &partitions(m, topic)[&0];
        *r == order && isr.len() == 3
    });
    let deadline = Instant::now() + READY_DEADLINE;
    loop {
        let code = elect(c, 1, 0, Some(&[(topic, 0)]))[&(topic.to_string(), 0)];
        assert!([0, 84].contains(&code), "ElectLeaders: {code}");
        let m = metadata(c, 1, Some(&[topic]));
        if partitions(&m, topic)[&0].0 == node {
            return;
        }
        assert!(Instant::now() < deadline, "{node} never led {topic}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every record of partition 0 of `topic` read with librdkafka from the
/// current leader: (offset, key, value), at least `expect` records, then
/// on to the high watermark (asked once they are read: a new leader's
/// may lag until its followers fetch again).
fn consume_keyed(bootstrap: &str, topic: &str, expect: usize) -> Vec<(i64, String, String)> {
    use rdkafka::Message;
    let consumer = from_the_start(bootstrap, topic, 1);
    let mut out: Vec<(i64, String, String)> = Vec::new();
    let mut end = None;
    let deadline = Instant::now() + READY_DEADLINE;
    loop {
        if out.len() >= expect {
            let end = *end.get_or_insert_with(|| high_watermarks(&consumer, topic, 1)[&0]);
            if out.last().is_some_and(|(o, _, _)| o + 1 >= end) {
                return out;
            }
        }
        assert!(
            Instant::now() < deadline,
            "read {} of {expect}, to {:?} of {end:?}",
            out.len(),
            out.last()
        );
        if let Some(m) = common::poll_message(&consumer, || topic.to_string()) {
            let text =
                |b: Option<&[u8]>| String::from_utf8_lossy(b.unwrap_or_default()).to_string();
            out.push((m.offset(), text(m.key()), text(m.payload())));
        }
    }
}

/// A compacted topic of replication factor 3: each replica's own cleaner
/// compacts its copy (each broker's files end with one record per key),
/// and a consumer reading from each broker as leader in turn sees the
/// same records: one per key, the latest, at the same offsets.
#[test]
fn replicas_of_a_compacted_topic_compact_independently_and_agree() {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let c = cluster_with(
        dir.path(),
        &[
            "log.cleaner.backoff.ms=100",
            "auto.leader.rebalance.enable=false",
        ],
    );
    wait_for(&c, 1, "three brokers", |m| broker_ids(m).len() == 3);
    let topic = "compacted-rf3";
    let config = [
        ("cleanup.policy", "compact"),
        ("segment.bytes", "16384"),
        ("min.cleanable.dirty.ratio", "0.01"),
    ];
    create_with(&c.bootstrap(), topic, 1, 3, &config).unwrap();
    wait_full_isr(&c, 1, topic);
    let (keys, rounds, fillers) = (200, 20, 1000);
    produce_keyed(&c.bootstrap(), topic, keys, rounds, fillers);
    for node in 1..=3 {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let records = replica_records(&c, node, topic, 0);
            if records.is_some_and(|r| one_latest_per_key(&r, keys, rounds)) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "broker {node}'s replica is not compacted"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    let mut seen = Vec::new();
    for node in 1..=3 {
        lead_from(&c, topic, node);
        let records = consume_keyed(&c.bootstrap(), topic, keys + fillers);
        assert!(
            one_latest_per_key(&records, keys, rounds),
            "read from broker {node}: {} records",
            records.len()
        );
        assert_eq!(records.len(), keys + fillers);
        seen.push(records);
    }
    assert!(
        seen.iter().all(|s| *s == seen[0]),
        "every leader serves the same records"
    );
}

/// Issue 25. A replica whose disk fails while it leads is reported to the
/// controller and rebuilt from the new leader while its broker runs.
/// Broker 1 keeps its data on the lazy FUSE file system, which is made to
/// fail every sync of the partition's files with EIO: broker 1 takes its
/// replica offline, reports it, and the controller moves leadership to
/// another in-sync replica and takes broker 1 out of the ISR, so every
/// acknowledged acks=all record is read from the new leader. While the
/// disk still fails, each rebuild fails its first sync and is tried again
/// later; once the disk works, broker 1 sets the directory aside, deletes
/// it, follows the leader from the start and is back in the ISR with the
/// leader's log, byte for byte.
#[test]
fn a_replica_whose_disk_fails_hands_over_and_is_rebuilt_from_the_new_leader() {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let (backing, mountpoint) = (dir.path().join("disk-1"), dir.path().join("broker-1"));
    std::fs::create_dir(&backing).unwrap();
    std::fs::create_dir(&mountpoint).unwrap();
    // Dropped after the cluster (declared first): its brokers are gone
    // before the file system is unmounted.
    let disk = lazyfs::LazyMount::mount(&backing, &mountpoint);
    let mut layout = spec(dir.path(), &["auto.leader.rebalance.enable=false"]);
    layout.metrics_ports = (0..3).map(|_| free_port()).collect();
    let metrics_1 = layout.metrics_ports[0];
    let c = LocalCluster::start(layout, READY_DEADLINE).expect("cluster starts");
    wait_for(&c, 2, "three brokers", |m| broker_ids(m).len() == 3);

    // Led by broker 1; every append synced (flush.messages=1), so the
    // first one after the switch meets the failing disk.
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", c.bootstrap())
        .create()
        .expect("admin client");
    let assignment: [&[i32]; 1] = [&[1, 2, 3]];
    let topic = NewTopic::new("eio", 1, TopicReplication::Variable(&assignment))
        .set("min.insync.replicas", "2")
        .set("flush.messages", "1");
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let created = futures::executor::block_on(admin.create_topics([&topic], &options)).unwrap();
    assert!(created.iter().all(Result::is_ok), "{created:?}");
    wait_full_isr(&c, 2, "eio");
    assert_eq!(leader_of(&c, "eio"), 1);
    produce_acks_all(&c.bootstrap(), "eio", 0..200);

    disk.fail_syncs_under(Some(std::path::Path::new("eio-0")));
    assert_eq!(
        raw_produce(&c, 1, "eio", 1, b"unacknowledged"),
        56,
        "KAFKA_STORAGE_ERROR"
    );
    wait_metric(metrics_1, "sluice_storage_offline_partitions", |v| v == 1.0);
    let m = wait_for(&c, 2, "leadership moved and broker 1 out of the ISR", |m| {
        let (leader, _, _, isr) = &partitions(m, "eio")[&0];
        *leader > 1 && !isr.contains(&1) && isr.len() == 2
    });
    let leader = partitions(&m, "eio")[&0].0 as usize;
    produce_acks_all(&c.bootstrap(), "eio", 200..300);
    let mut got = consume_all(&c.bootstrap(), "eio", 1, 300);
    // The record whose sync failed was never acknowledged; a follower
    // may have fetched it before the failure.
    got.retain(|v| v != "unacknowledged");
    assert_eq!(got, values("v", 0..300), "every acknowledged record");
    let log = log_since(&c, 1, 0);
    assert!(log.contains("reporting the failed replica"), "{log}");
    // The disk still fails: broker 1 stays out of the ISR meanwhile.
    wait_for(&c, 3, "a rebuild that failed its sync", |_| {
        log_since(&c, 1, 0).contains("rebuilding the failed replica")
            && log_since(&c, 1, 0)
                .matches("writing or syncing the partition's files failed")
                .count()
                >= 2
    });
    let (_, _, _, isr) = &partitions(&metadata(&c, 2, Some(&["eio"])), "eio")[&0];
    assert!(
        !isr.contains(&1),
        "a replica on a failing disk rejoined: {isr:?}"
    );

    disk.fail_syncs_under(None);
    wait_for(&c, 2, "broker 1 back in the ISR", |m| {
        partitions(m, "eio")[&0].3.len() == 3
    });
    wait_metric(metrics_1, "sluice_storage_offline_partitions", |v| v == 0.0);
    produce_acks_all(&c.bootstrap(), "eio", 300..400);
    wait_logs_agree(&c, &[leader, 1], "eio", 0);
    let values_1 = log_values(&log_bytes(&c, 1, "eio", 0));
    assert!(values_1.iter().any(|v| v == "v0") && values_1.iter().any(|v| v == "v399"));
    // The set-aside directories are deleted.
    let deadline = Instant::now() + READY_DEADLINE;
    loop {
        let left: Vec<String> = std::fs::read_dir(&mountpoint)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with("-delete"))
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "left behind: {left:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(c);
}
