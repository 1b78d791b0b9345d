//! The harness's group consumer against the embedded Sluice broker: two
//! consumers of one group split a topic's partitions with no overlap, read
//! every message exactly once between them, and commit where they stopped.

use sluice_harness::client::admin::{self, EARLIEST};
use sluice_harness::client::assignor::Assignment;
use sluice_harness::client::conn::Connection;
use sluice_harness::client::group::{GroupMember, GroupTimeouts};
use sluice_harness::client::group_consumer::GroupConsumer;
use sluice_harness::client::producer::Producer;
use sluice_harness::measure::clock::Clock;
use sluice_harness::measure::recorder::Recorder;
use sluice_harness::target::start_embedded;
use sluice_harness::workload::props::{ConsumerSettings, ProducerSettings};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PARTITIONS: i32 = 4;
const MESSAGES: u64 = 1_000;
/// Generous: a failure, not a timing assertion.
const DEADLINE: Duration = Duration::from_secs(60);

struct Shared {
    stop: AtomicBool,
    consumed: AtomicU64,
}

/// What a consumer thread ends with.
struct Finished {
    consumed: u64,
    generation: i32,
    assignment: Assignment,
    positions: Vec<(String, i32, i64)>,
    errors: Vec<String>,
}

type Held = Arc<Mutex<Option<(i32, Assignment)>>>;

fn consume(mut c: GroupConsumer, held: Held, shared: Arc<Shared>) -> Finished {
    let mut rec = Recorder::new(0, 0, u64::MAX);
    let mut errors = Vec::new();
    while !shared.stop.load(Ordering::Relaxed) {
        let before = rec.totals.messages;
        if let Err(e) = c.fetch_once(&mut rec) {
            errors.push(e.to_string());
            std::thread::sleep(Duration::from_millis(100));
        }
        shared
            .consumed
            .fetch_add(rec.totals.messages - before, Ordering::Relaxed);
        *held.lock().unwrap() = c.assignment().map(|(g, a)| (g, a.clone()));
    }
    let (generation, assignment) = c.assignment().map(|(g, a)| (g, a.clone())).unwrap();
    let positions = c.positions();
    c.close().unwrap();
    errors.append(c.client_errors());
    Finished {
        consumed: rec.totals.messages,
        generation,
        assignment,
        positions,
        errors,
    }
}

/// Both consumers hold one generation's assignments, together covering
/// every partition once.
fn settled(held: &[Held], topic: &str) -> bool {
    let mut generations = Vec::new();
    let mut parts = Vec::new();
    for h in held {
        let Some((g, a)) = h.lock().unwrap().clone() else {
            return false;
        };
        generations.push(g);
        parts.extend(a.get(topic).cloned().unwrap_or_default());
    }
    parts.sort_unstable();
    generations.windows(2).all(|w| w[0] == w[1]) && parts == (0..PARTITIONS).collect::<Vec<_>>()
}

fn produce(bootstrap: SocketAddr, topic: &str, md: &admin::ClusterMetadata) {
    let clock = Clock::start();
    let settings = ProducerSettings::default();
    let mut p = Producer::new(clock, settings, &[topic.to_string()], md, bootstrap, 7).unwrap();
    let mut rec = Recorder::new(0, 0, u64::MAX);
    for i in 0..MESSAGES {
        let now = clock.now_ns();
        let mut value = clock.unix_us(now).to_be_bytes().to_vec();
        value.extend_from_slice(&i.to_be_bytes());
        let key = (i % 64).to_be_bytes();
        p.send(0, Some(&key), &value, now, now, &mut rec).unwrap();
    }
    p.close_all(&mut rec);
    let t0 = Instant::now();
    while p.pending() {
        assert!(t0.elapsed() < DEADLINE, "produce: {:?}", p.client_errors);
        p.poll(&mut rec);
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(rec.totals.messages, MESSAGES, "{:?}", p.client_errors);
}

#[test]
fn two_consumers_of_a_group_split_partitions_and_read_each_message_once() {
    let target = start_embedded(1, 1).unwrap();
    let bootstrap = target.bootstrap();
    let topic = "groups-split".to_string();
    let mut conn = Connection::connect(bootstrap, Duration::from_secs(10)).unwrap();
    let topics = [topic.clone()];
    admin::create_topics(&mut conn, &topics, PARTITIONS as u32, 1, &BTreeMap::new()).unwrap();
    let md = admin::wait_for_leaders(&mut conn, &topics, DEADLINE).unwrap();

    let clock = Clock::start();
    let settings = ConsumerSettings {
        // Short, so the first member learns of the second quickly.
        heartbeat_interval_ms: 200,
        auto_commit_interval_ms: 500,
        ..ConsumerSettings::default()
    };
    let shared = Arc::new(Shared {
        stop: AtomicBool::new(false),
        consumed: AtomicU64::new(0),
    });
    let mut held = Vec::new();
    let mut threads = Vec::new();
    for _ in 0..2 {
        let c = GroupConsumer::new(
            clock,
            settings.clone(),
            "split-group".into(),
            topics.to_vec(),
            &md,
            bootstrap,
            EARLIEST,
        )
        .unwrap();
        let h: Held = Arc::default();
        held.push(h.clone());
        let s = shared.clone();
        threads.push(std::thread::spawn(move || consume(c, h, s)));
    }
    let t0 = Instant::now();
    while !settled(&held, &topic) {
        assert!(t0.elapsed() < DEADLINE, "the group did not settle");
        std::thread::sleep(Duration::from_millis(20));
    }

    produce(bootstrap, &topic, &md);
    let t0 = Instant::now();
    while shared.consumed.load(Ordering::Relaxed) < MESSAGES && t0.elapsed() < DEADLINE {
        std::thread::sleep(Duration::from_millis(20));
    }
    shared.stop.store(true, Ordering::Relaxed);
    let done: Vec<Finished> = threads.into_iter().map(|t| t.join().unwrap()).collect();

    for d in &done {
        assert!(d.errors.is_empty(), "{:?}", d.errors);
    }
    // Same generation, disjoint halves (range: 0-1 and 2-3).
    assert_eq!(done[0].generation, done[1].generation);
    let mut halves: Vec<Vec<i32>> = done.iter().map(|d| d.assignment[&topic].clone()).collect();
    halves.sort();
    assert_eq!(halves, vec![vec![0, 1], vec![2, 3]]);
    // Exactly once: the counts add up to what was produced, and every
    // partition was read to its end by its one owner.
    assert_eq!(done[0].consumed + done[1].consumed, MESSAGES);
    let ends = admin::list_offsets(&mut conn, &topic, &[0, 1, 2, 3], admin::LATEST).unwrap();
    assert_eq!(ends.values().sum::<i64>(), MESSAGES as i64);
    let mut positions: BTreeMap<i32, i64> = BTreeMap::new();
    for d in &done {
        for (_, p, o) in &d.positions {
            assert!(
                positions.insert(*p, *o).is_none(),
                "partition {p} held twice"
            );
        }
    }
    assert_eq!(positions, ends);

    // Closing committed those positions.
    let mut reader = GroupMember::new(
        bootstrap,
        "split-group".into(),
        topics.to_vec(),
        GroupTimeouts {
            session_ms: 10_000,
            rebalance_ms: 10_000,
            heartbeat_interval: Duration::from_secs(3),
        },
    );
    let all: Assignment = [(topic.clone(), (0..PARTITIONS).collect())].into();
    let committed = reader.committed(&all).unwrap();
    let committed: BTreeMap<i32, i64> = committed.into_iter().map(|((_, p), o)| (p, o)).collect();
    assert_eq!(committed, ends);
    target.stop();
}
