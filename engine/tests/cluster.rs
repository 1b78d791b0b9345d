//! Several `sluice` processes as one cluster: the metadata log, broker
//! fencing, leader election and controller failover, seen through real
//! clients (librdkafka, kcat) and raw Metadata requests.

mod common;

use common::{call, free_port, Raw, READY_DEADLINE};
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

/// Three brokers, all voters, with short sessions so fencing is quick.
fn cluster(dir: &std::path::Path) -> LocalCluster {
    let mut spec = LocalClusterSpec::new(env!("CARGO_BIN_EXE_sluice").into(), dir.to_path_buf(), 3);
    spec.ports = (0..3).map(|_| free_port()).collect();
    spec.controller_ports = (0..3).map(|_| free_port()).collect();
    spec.overrides = vec![
        "broker.session.timeout.ms=3000".into(),
        "broker.heartbeat.interval.ms=300".into(),
    ];
    LocalCluster::start(spec, READY_DEADLINE).expect("cluster starts")
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
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client");
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(rf));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = futures::executor::block_on(admin.create_topics([&new], &options))
        .map_err(|e| e.to_string())?;
    for r in results {
        r.map_err(|(name, code)| format!("{name}: {code}"))?;
    }
    Ok(())
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

/// Every value in every partition of `topic`, read from the leaders.
fn consume_all(bootstrap: &str, topic: &str, partitions: i32, expect: usize) -> BTreeSet<String> {
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
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + READY_DEADLINE;
    while seen.len() < expect {
        assert!(Instant::now() < deadline, "read {} of {expect}", seen.len());
        if let Some(m) = common::poll_message(&consumer, || topic.to_string()) {
            use rdkafka::Message;
            let v = String::from_utf8(m.payload().unwrap().to_vec()).unwrap();
            seen.insert(v);
        }
    }
    seen
}

#[test]
fn brokers_share_the_metadata_log_and_clients_use_every_leader() {
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(dir.path());
    for node in 1..=3 {
        wait_for(&c, node, "three brokers", |m| {
            broker_ids(m) == BTreeSet::from([1, 2, 3])
        });
    }
    create(&c.bootstrap(), "replicated", 6, 3).expect("rf 3 fits three brokers");
    let err = create(&c.bootstrap(), "too-many", 1, 4).expect_err("rf 4 does not fit");
    assert!(err.contains("InvalidReplicationFactor"), "{err}");
    // Every broker has the same view; leaders are spread evenly.
    let views: Vec<_> = (1..=3)
        .map(|n| partitions(&metadata(&c, n, Some(&["replicated"])), "replicated"))
        .collect();
    assert!(views.iter().all(|v| *v == views[0]), "{views:#?}");
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
    assert_eq!(seen.len(), 3000);

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
}

#[test]
fn a_dead_broker_is_fenced_its_partitions_move_and_a_new_controller_takes_over() {
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
    assert_eq!(seen.len(), 300);
}
