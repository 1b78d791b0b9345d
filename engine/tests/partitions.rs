//! Network partitions between brokers, checked the way Jepsen checks
//! Kafka-like systems.
//!
//! Three brokers of the real `sluice` binary each run in a network
//! namespace of their own, joined by a bridge (common/netns.rs); the
//! test's clients reach them over it from the root namespace. While
//! idempotent acks=all producers write unique values to a topic of
//! replication factor 3 and `min.insync.replicas=2`, and consumers read
//! everything, a seeded schedule cuts the network with nftables rules in
//! the brokers' namespaces: a broker isolated, a partition's leader cut
//! from its followers (clients still reach it), the active controller cut
//! from the majority, one-way cuts, random loss. Then the network heals,
//! the cluster settles, and a final read of every partition is checked:
//!
//! - every acknowledged record is there, at the offset its acknowledgement
//!   named;
//! - no value appears twice (values are unique per producer session);
//! - each producer session's records of a partition are in the order it
//!   sent them;
//! - every record a consumer read during the run is still at the offset it
//!   was read at (nothing a consumer saw vanished), each consumer's offsets
//!   only went forward, and the high watermark a consumer saw never went
//!   backwards.
//!
//! `SLUICE_PARTITION_SECONDS` (default 60) sets how long faults are
//! injected, `SLUICE_PARTITION_SEED` the schedule; a failure prints both
//! with the faults as injected, timestamped, and every anomaly.

mod common;
#[path = "common/netns.rs"]
mod netns;
#[path = "common/splitmix.rs"]
mod splitmix;

use common::{free_port, try_call, Raw, READY_DEADLINE};
use kafka_protocol::messages::{ApiKey, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use netns::{Net, Rule};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Message, TopicPartitionList};
use sluice_engine::cluster::local::LocalCluster;
use splitmix::Rng;
use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TOPIC: &str = "jepsen";
const PARTITIONS: i32 = 3;
const BROKERS: usize = 3;
const PRODUCERS: usize = 3;
const CONSUMERS: usize = 2;
/// A producer sends one record per this, about 200 a second each: enough
/// to keep every partition busy through every fault, little enough for a
/// loaded 2-core machine running three brokers.
const SEND_EVERY: Duration = Duration::from_millis(5);
/// How long the cluster may take to settle after the last heal, and the
/// producers to have every record answered: generous, the machine is
/// shared. Only a failure waits this long.
const SETTLE_DEADLINE: Duration = Duration::from_secs(240);

/// What happened when, from the test's start: faults, heals, sessions.
#[derive(Clone)]
struct Journal {
    start: Instant,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Journal {
    fn new() -> Journal {
        Journal {
            start: Instant::now(),
            lines: Arc::default(),
        }
    }

    fn at(&self) -> String {
        format!("{:8.3}s", self.start.elapsed().as_secs_f64())
    }

    fn log(&self, what: String) {
        let line = format!("{} {what}", self.at());
        eprintln!("partitions: {line}");
        self.lines.lock().unwrap().push(line);
    }

    fn text(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }
}

/// The kinds of fault the schedule draws from.
#[derive(Clone, Copy, Debug)]
enum Kind {
    /// One broker cut from everyone, clients too.
    Isolate,
    /// A partition's leader cut from its followers; clients reach it.
    LeaderCut,
    /// The active controller cut from the other two brokers.
    ControllerCut,
    /// A broker hears nothing from the other brokers; its packets still go out.
    IngressCut,
    /// A broker's packets to the other brokers are lost; it still hears them.
    EgressCut,
    /// Random loss on one broker's link, or on every broker's.
    Loss,
}

const KINDS: [Kind; 6] = [
    Kind::Isolate,
    Kind::LeaderCut,
    Kind::ControllerCut,
    Kind::IngressCut,
    Kind::EgressCut,
    Kind::Loss,
];

/// One step of the schedule: a fault held for `fault`, then a heal held
/// for `heal`. Whom it hits is resolved when it starts (the leader and
/// controller move), from `pick`.
#[derive(Clone, Debug)]
struct Step {
    kind: Kind,
    pick: u64,
    loss_percent: u32,
    fault: Duration,
    heal: Duration,
}

/// Steps filling `seconds` of faults and heals, drawn from `seed`.
/// Faults last 2–10 s, around the 4 s broker session, so that some fence
/// a broker and some do not; heals 1–6 s, some too short for the cluster
/// to recover fully before the next fault.
fn schedule(seed: u64, seconds: u64) -> Vec<Step> {
    let mut rng = Rng(seed);
    let mut steps = Vec::new();
    let mut total = Duration::ZERO;
    while total < Duration::from_secs(seconds) {
        let step = Step {
            kind: KINDS[rng.below(KINDS.len())],
            pick: rng.next(),
            loss_percent: 5 + rng.below(36) as u32,
            fault: Duration::from_millis(2_000 + rng.below(8_000) as u64),
            heal: Duration::from_millis(1_000 + rng.below(5_000) as u64),
        };
        total += step.fault + step.heal;
        steps.push(step);
    }
    steps
}

/// The cluster as one reachable broker sees it.
struct View {
    from: usize,
    controller: i32,
    /// Partition → (leader, ISR).
    partitions: BTreeMap<i32, (i32, Vec<i32>)>,
    brokers: usize,
}

fn metadata_of(net: &Net, c: &LocalCluster, node: usize) -> Option<MetadataResponse> {
    let addr = SocketAddr::new(net.broker_ip(node).into(), c.spec.ports[node - 1]);
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .ok()?;
    let mut raw = Raw { stream };
    let mut req = MetadataRequest::default();
    // Asking must not create the topic before the test does.
    req.allow_auto_topic_creation = false;
    req.topics = Some(vec![
        kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
            .with_name(Some(TopicName(StrBytes::from_static_str(TOPIC)))),
    ]);
    try_call(&mut raw, ApiKey::Metadata, 12, &req)
}

fn view_of(net: &Net, c: &LocalCluster, node: usize) -> Option<View> {
    let m = metadata_of(net, c, node)?;
    let mut partitions = BTreeMap::new();
    for t in &m.topics {
        for p in &t.partitions {
            let isr = p.isr_nodes.iter().map(|b| b.0).collect();
            partitions.insert(p.partition_index, (p.leader_id.0, isr));
        }
    }
    Some(View {
        from: node,
        controller: m.controller_id.0,
        partitions,
        brokers: m.brokers.len(),
    })
}

/// The first view a broker answers with, asking `first` first.
fn any_view(net: &Net, c: &LocalCluster, first: usize) -> Option<View> {
    (0..BROKERS)
        .map(|i| 1 + (first - 1 + i) % BROKERS)
        .find_map(|node| view_of(net, c, node))
}

/// The nodes other than `node`.
fn others(node: usize) -> Vec<usize> {
    (1..=BROKERS).filter(|n| *n != node).collect()
}

/// Rules that cut `node` from `peers` both ways.
fn cut(net: &Net, peers: &[usize]) -> Vec<Rule> {
    let ips: Vec<_> = peers.iter().map(|p| net.broker_ip(*p)).collect();
    vec![Rule::DropFrom(ips.clone()), Rule::DropTo(ips)]
}

/// The rules of `step` per node, and what it does in words.
fn resolve(net: &Net, c: &LocalCluster, step: &Step) -> (Vec<(usize, Vec<Rule>)>, String) {
    let node = 1 + (step.pick % BROKERS as u64) as usize;
    let ips = |nodes: &[usize]| -> Vec<_> { nodes.iter().map(|n| net.broker_ip(*n)).collect() };
    match step.kind {
        Kind::Isolate => (
            vec![(node, vec![Rule::Isolate])],
            format!("isolate broker {node}"),
        ),
        Kind::LeaderCut => {
            let partition = (step.pick / 7 % PARTITIONS as u64) as i32;
            let view = any_view(net, c, node);
            let leader = view
                .as_ref()
                .and_then(|v| v.partitions.get(&partition))
                .map(|(l, _)| *l)
                .filter(|l| (1..=BROKERS as i32).contains(l));
            let (target, why) = match (leader, &view) {
                (Some(l), Some(v)) => (
                    l as usize,
                    format!("leader of {TOPIC}-{partition} per broker {}", v.from),
                ),
                _ => (node, format!("{TOPIC}-{partition} has no known leader")),
            };
            (
                vec![(target, cut(net, &others(target)))],
                format!("cut broker {target} ({why}) from its followers"),
            )
        }
        Kind::ControllerCut => {
            let view = any_view(net, c, node);
            let controller = view
                .as_ref()
                .map(|v| v.controller)
                .filter(|l| (1..=BROKERS as i32).contains(l));
            let (target, why) = match (controller, &view) {
                (Some(l), Some(v)) => (l as usize, format!("controller per broker {}", v.from)),
                _ => (node, "no known controller".to_string()),
            };
            (
                vec![(target, cut(net, &others(target)))],
                format!("cut broker {target} ({why}) from the majority"),
            )
        }
        Kind::IngressCut => (
            vec![(node, vec![Rule::DropFrom(ips(&others(node)))])],
            format!("broker {node} hears nothing from the other brokers"),
        ),
        Kind::EgressCut => (
            vec![(node, vec![Rule::DropTo(ips(&others(node)))])],
            format!("broker {node}'s packets to the other brokers are dropped"),
        ),
        Kind::Loss if (step.pick / 7).is_multiple_of(4) => (
            (1..=BROKERS)
                .map(|n| (n, vec![Rule::Loss(step.loss_percent)]))
                .collect(),
            format!("{}% loss on every broker's link", step.loss_percent),
        ),
        Kind::Loss => (
            vec![(node, vec![Rule::Loss(step.loss_percent)])],
            format!("{}% loss on broker {node}'s link", step.loss_percent),
        ),
    }
}

/// Runs the schedule until `seconds` have passed, then heals.
fn nemesis(net: &Net, c: &LocalCluster, steps: &[Step], seconds: u64, journal: &Journal) -> usize {
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut faults = 0;
    for step in steps {
        if Instant::now() >= end {
            break;
        }
        let (rules, what) = resolve(net, c, step);
        for (node, r) in &rules {
            net.set_rules(*node, r).expect("fault rules apply");
        }
        faults += 1;
        journal.log(format!("fault {faults}: {what} for {:?}", step.fault));
        std::thread::sleep(
            step.fault
                .min(end.saturating_duration_since(Instant::now())),
        );
        net.heal().expect("heal");
        journal.log(format!("heal for {:?}", step.heal));
        std::thread::sleep(step.heal.min(end.saturating_duration_since(Instant::now())));
    }
    net.heal().expect("heal");
    faults
}

/// What one producer did.
#[derive(Default)]
struct Produced {
    /// (partition, offset, value) of every acknowledged record.
    acked: Vec<(i32, i64, String)>,
    /// Records answered with an error (not acknowledged: they may or may
    /// not be in the log).
    failed: usize,
    /// Error texts and how often.
    errors: BTreeMap<String, usize>,
}

struct Delivery(Arc<Mutex<Produced>>);

impl rdkafka::ClientContext for Delivery {}

impl rdkafka::producer::ProducerContext for Delivery {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &rdkafka::message::DeliveryResult<'_>, _: ()) {
        let mut p = self.0.lock().unwrap();
        match r {
            Ok(m) => {
                let v = String::from_utf8(m.payload().unwrap().to_vec()).unwrap();
                p.acked.push((m.partition(), m.offset(), v));
            }
            Err((e, _)) => {
                p.failed += 1;
                *p.errors.entry(e.to_string()).or_default() += 1;
            }
        }
    }
}

/// A value: producer, session, sequence number.
fn value(producer: usize, session: usize, seq: u64) -> String {
    format!("{producer}-{session}-{seq:08}")
}

fn parse_value(v: &str) -> Option<(usize, usize, u64)> {
    let mut it = v.split('-');
    let p = it.next()?.parse().ok()?;
    let s = it.next()?.parse().ok()?;
    let q = it.next()?.parse().ok()?;
    Some((p, s, q))
}

/// Producer `id`: sends `value(id, session, seq)` to partition
/// `seq % PARTITIONS` until `stop`, then waits for every answer. A fatal
/// error (the idempotent producer's sequence broken) ends a session and
/// starts another with a new producer.
fn producer(
    id: usize,
    bootstrap: String,
    stop: Arc<AtomicBool>,
    journal: Journal,
) -> std::thread::JoinHandle<Produced> {
    std::thread::spawn(move || {
        let log = Arc::new(Mutex::new(Produced::default()));
        let mut session = 0;
        loop {
            let p: rdkafka::producer::BaseProducer<Delivery> = ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .set("enable.idempotence", "true")
                .set("acks", "all")
                .set("linger.ms", "5")
                .set("request.timeout.ms", "10000")
                .set("message.timeout.ms", "180000")
                .set("retry.backoff.ms", "100")
                .create_with_context(Delivery(Arc::clone(&log)))
                .expect("producer");
            let mut seq = 0u64;
            let mut fatal = None;
            while !stop.load(Ordering::Relaxed) {
                if let Some((code, why)) = p.client().fatal_error() {
                    fatal = Some(format!("{code:?}: {why}"));
                    break;
                }
                let v = value(id, session, seq);
                let part = (seq % PARTITIONS as u64) as i32;
                match p.send(BaseRecord::<(), _>::to(TOPIC).partition(part).payload(&v)) {
                    Ok(()) => seq += 1,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {}
                    Err((e, _)) => panic!("producer {id}: send: {e}"),
                }
                p.poll(Duration::ZERO);
                std::thread::sleep(SEND_EVERY);
            }
            if let Some(why) = fatal {
                journal.log(format!(
                    "producer {id} session {session} ended by a fatal error after {seq} sends: {why}"
                ));
                session += 1;
                continue;
            }
            if let Err(e) = p.flush(SETTLE_DEADLINE) {
                journal.log(format!("producer {id}: not every record answered: {e}"));
            }
            break;
        }
        Arc::try_unwrap(log)
            .ok()
            .expect("no producer left")
            .into_inner()
            .unwrap()
    })
}

/// What one consumer saw.
#[derive(Default)]
struct Consumed {
    /// (when, partition, offset, value) of every record read.
    records: Vec<(String, i32, i64, String)>,
    /// Anomalies seen as they happened.
    anomalies: Vec<String>,
    /// High watermarks seen going backwards, apart: see [`Checked`].
    watermarks_back: Vec<String>,
    /// Error texts and how often.
    errors: BTreeMap<String, usize>,
    /// How often a fetch answer moved a high watermark this consumer
    /// watched: the high-watermark check is not vacuous.
    watermark_moves: usize,
}

/// A consumer assigned every partition from its start, resetting nowhere:
/// a position past the end is an error, not a silent jump. `isolation`
/// is `read_committed` (librdkafka's default, bounded by the last stable
/// offset) or `read_uncommitted` (bounded by the high watermark): the
/// broker reads each its own way.
fn assigned_consumer(bootstrap: &str, isolation: &str) -> BaseConsumer {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("isolation.level", isolation)
        .set("group.id", "unused")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "error")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(TOPIC, p, rdkafka::Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    consumer
}

/// The high watermark of `TOPIC`-`partition` the consumer's last fetch
/// answer carried (librdkafka's cache; rust-rdkafka only wraps the query
/// that asks the leader again), if one did.
fn cached_high_watermark(consumer: &BaseConsumer, partition: i32) -> Option<i64> {
    use rdkafka::bindings as rd;
    let topic = std::ffi::CString::new(TOPIC).unwrap();
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: the client pointer lives as long as `consumer`; the topic
    // is a NUL-terminated string; low and high are valid for writes.
    let err = unsafe {
        rd::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0).then_some(high)
}

/// Consumer `id`: reads everything until `stop`, checking as it goes that
/// offsets and high watermarks only move forward. Even consumers read
/// committed, odd ones uncommitted.
fn consumer(
    id: usize,
    bootstrap: String,
    stop: Arc<AtomicBool>,
    journal: Journal,
) -> std::thread::JoinHandle<Consumed> {
    std::thread::spawn(move || {
        let isolation = ["read_committed", "read_uncommitted"][id % 2];
        let consumer = assigned_consumer(&bootstrap, isolation);
        let mut out = Consumed::default();
        let mut next: BTreeMap<i32, i64> = BTreeMap::new();
        let mut hw: BTreeMap<i32, i64> = BTreeMap::new();
        while !stop.load(Ordering::Relaxed) {
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    let (p, o) = (m.partition(), m.offset());
                    let v = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
                    if let Some(n) = next.get(&p).filter(|n| o < **n) {
                        out.anomalies.push(format!(
                            "{} consumer {id} read {TOPIC}-{p} offset {o} after reading up to {}",
                            journal.at(),
                            n - 1
                        ));
                    }
                    next.insert(p, o + 1);
                    out.records.push((journal.at(), p, o, v));
                }
                Some(Err(e)) => {
                    let text = e.to_string();
                    if matches!(
                        e.rdkafka_error_code(),
                        Some(
                            RDKafkaErrorCode::OffsetOutOfRange | RDKafkaErrorCode::AutoOffsetReset
                        )
                    ) {
                        out.anomalies.push(format!(
                            "{} consumer {id}: position past the log's end: {text} (read up to {next:?})",
                            journal.at()
                        ));
                    }
                    *out.errors.entry(text).or_default() += 1;
                }
                None => {}
            }
            for p in 0..PARTITIONS {
                let Some(high) = cached_high_watermark(&consumer, p) else {
                    continue;
                };
                let last = hw.entry(p).or_insert(high);
                if high < *last {
                    out.watermarks_back.push(format!(
                        "{} consumer {id}: high watermark of {TOPIC}-{p} went back from {last} to {high}",
                        journal.at()
                    ));
                }
                if high > *last {
                    out.watermark_moves += 1;
                }
                *last = high;
            }
        }
        out
    })
}

/// Waits until every broker answers, lists every broker and sees every
/// partition led with its whole replica set in sync.
fn settle(net: &Net, c: &LocalCluster) -> Result<(), String> {
    let deadline = Instant::now() + SETTLE_DEADLINE;
    loop {
        let views: Vec<Option<View>> = (1..=BROKERS).map(|n| view_of(net, c, n)).collect();
        let settled = views.iter().all(|v| {
            v.as_ref().is_some_and(|v| {
                v.brokers == BROKERS
                    && v.partitions.len() == PARTITIONS as usize
                    && v.partitions
                        .values()
                        .all(|(l, isr)| *l > 0 && isr.len() == BROKERS)
            })
        });
        if settled {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let text: Vec<String> = views
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Some(v) => format!(
                        "broker {}: {} brokers, controller {}, partitions {:?}",
                        i + 1,
                        v.brokers,
                        v.controller,
                        v.partitions
                    ),
                    None => format!("broker {}: no answer", i + 1),
                })
                .collect();
            return Err(format!(
                "not settled within {SETTLE_DEADLINE:?}: {}",
                text.join("; ")
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every partition read from its start to its high watermark: partition →
/// offset → value.
fn final_read(bootstrap: &str) -> Result<BTreeMap<i32, BTreeMap<i64, String>>, String> {
    let consumer = assigned_consumer(bootstrap, "read_uncommitted");
    let deadline = Instant::now() + SETTLE_DEADLINE;
    let mut ends = BTreeMap::new();
    for p in 0..PARTITIONS {
        let high = loop {
            match consumer.fetch_watermarks(TOPIC, p, Duration::from_secs(10)) {
                Ok((_, high)) => break high,
                Err(e) if Instant::now() >= deadline => {
                    return Err(format!("watermarks of {TOPIC}-{p}: {e}"))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        };
        ends.insert(p, high);
    }
    let mut log: BTreeMap<i32, BTreeMap<i64, String>> = BTreeMap::new();
    let mut next: BTreeMap<i32, i64> = (0..PARTITIONS).map(|p| (p, 0)).collect();
    while next.iter().any(|(p, n)| *n < ends[p]) {
        if Instant::now() >= deadline {
            return Err(format!("final read reached {next:?} of {ends:?}"));
        }
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let v = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
                log.entry(m.partition()).or_default().insert(m.offset(), v);
                next.insert(m.partition(), m.offset() + 1);
            }
            Some(Err(e)) if common::is_transient(&e) => {}
            Some(Err(e)) => return Err(format!("final read: {e}")),
            None => {}
        }
    }
    Ok(log)
}

/// What the checks found, by kind.
#[derive(Default)]
struct Checked {
    anomalies: Vec<String>,
    /// Values the final log holds more than once. Two kinds stay apart so
    /// that a run can report them without failing
    /// (`SLUICE_PARTITION_REPORT_ONLY=duplicates,watermarks`, as CI sets
    /// while they are open defects; see docs/ARCHITECTURE.md, "Network
    /// partitions"): by default they fail the test like any anomaly.
    duplicates: Vec<String>,
    /// High watermarks a consumer saw go backwards.
    watermarks_back: Vec<String>,
}

/// The checks on the final log; every anomaly found.
fn check(
    log: &BTreeMap<i32, BTreeMap<i64, String>>,
    produced: &[Produced],
    consumed: &[Consumed],
) -> Checked {
    let mut checked = Checked::default();
    let anomalies = &mut checked.anomalies;
    let mut at: BTreeMap<&str, Vec<(i32, i64)>> = BTreeMap::new();
    for (p, records) in log {
        for (o, v) in records {
            at.entry(v.as_str()).or_default().push((*p, *o));
        }
    }
    for (i, pr) in produced.iter().enumerate() {
        for (p, o, v) in &pr.acked {
            // librdkafka acknowledges some records without an offset
            // (-1001), when it learns they were written other than from
            // the answer that carried their offset. Those must be in their
            // partition; that they are there once is the duplicate check's.
            if *o < 0
                && at
                    .get(v.as_str())
                    .is_some_and(|w| w.iter().any(|(q, _)| q == p))
            {
                continue;
            }
            if log.get(p).and_then(|r| r.get(o)) != Some(v) {
                anomalies.push(format!(
                    "producer {i}: acknowledged {v} at {TOPIC}-{p} offset {o} is {}",
                    match at.get(v.as_str()) {
                        Some(places) => format!("elsewhere: {places:?}"),
                        None => "lost".to_string(),
                    }
                ));
            }
        }
    }
    for (v, places) in &at {
        if places.len() > 1 {
            checked
                .duplicates
                .push(format!("{v} appears {} times: {places:?}", places.len()));
        }
    }
    let anomalies = &mut checked.anomalies;
    for (p, records) in log {
        let mut last: BTreeMap<(usize, usize), (u64, i64)> = BTreeMap::new();
        for (o, v) in records {
            // A value's later copies are the duplicate check's: order is
            // checked on first copies.
            if at[v.as_str()]
                .first()
                .is_some_and(|first| *first != (*p, *o))
            {
                continue;
            }
            let Some((producer, session, seq)) = parse_value(v) else {
                anomalies.push(format!("{TOPIC}-{p} offset {o} holds {v:?}, never sent"));
                continue;
            };
            if (seq % PARTITIONS as u64) as i32 != *p {
                anomalies.push(format!("{v} was sent to partition {}, is in {p}", seq % 3));
            }
            if let Some((prev, prev_o)) = last.get(&(producer, session)) {
                if *prev >= seq {
                    anomalies.push(format!(
                        "{TOPIC}-{p}: {v} at offset {o} after sequence {prev} at offset {prev_o}"
                    ));
                }
            }
            last.insert((producer, session), (seq, *o));
        }
    }
    for (i, c) in consumed.iter().enumerate() {
        anomalies.extend(c.anomalies.iter().cloned());
        checked
            .watermarks_back
            .extend(c.watermarks_back.iter().cloned());
        for (when, p, o, v) in &c.records {
            let now = log.get(p).and_then(|r| r.get(o));
            if now != Some(v) {
                anomalies.push(format!(
                    "consumer {i} read {v} at {TOPIC}-{p} offset {o} at {when}; the final log has {now:?} there"
                ));
            }
        }
    }
    checked
}

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v} is not a number")),
        Err(_) => default,
    }
}

fn create_topic(bootstrap: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client");
    let new = NewTopic::new(TOPIC, PARTITIONS, TopicReplication::Fixed(BROKERS as i32))
        .set("min.insync.replicas", "2");
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = futures::executor::block_on(admin.create_topics([&new], &options))
        .expect("CreateTopics answered");
    for r in results {
        r.unwrap_or_else(|(name, code)| panic!("creating {name}: {code}"));
    }
}

#[test]
fn acknowledged_records_survive_network_partitions_between_brokers() {
    Net::check_tools().expect(
        "this test needs root, iproute2 and nftables (.ci/run installs them) to build its network",
    );
    Net::remove_leftovers();
    let seconds = env_u64("SLUICE_PARTITION_SECONDS", 60);
    let seed = env_u64(
        "SLUICE_PARTITION_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    );
    eprintln!("partitions: seed {seed}, {seconds} s of faults (SLUICE_PARTITION_SEED={seed} replays the schedule)");
    let steps = schedule(seed, seconds);

    // The network outlives the brokers: declared first, dropped last.
    let net = Net::create(BROKERS).expect("network namespaces");
    let dir = tempfile::tempdir().unwrap();
    let mut spec = common::cluster_spec(dir.path(), BROKERS);
    spec.hosts = (1..=BROKERS)
        .map(|n| net.broker_ip(n).to_string())
        .collect();
    spec.namespaces = (1..=BROKERS).map(|n| net.namespace(n)).collect();
    // Ports are per namespace here; free loopback ones are as good as any.
    spec.ports = (0..BROKERS).map(|_| free_port()).collect();
    spec.overrides = vec![
        "broker.session.timeout.ms=4000".into(),
        "broker.heartbeat.interval.ms=300".into(),
        "replica.lag.time.max.ms=4000".into(),
    ];
    let c = LocalCluster::start(spec, READY_DEADLINE).expect("cluster starts");
    let bootstrap = c.bootstrap();
    let wait = Instant::now() + READY_DEADLINE;
    while any_view(&net, &c, 1).is_none_or(|v| v.brokers < BROKERS) {
        assert!(Instant::now() < wait, "three brokers never registered");
        std::thread::sleep(Duration::from_millis(100));
    }
    create_topic(&bootstrap);
    settle(&net, &c).expect("the topic's replicas all in sync");

    let journal = Journal::new();
    journal.log(format!("seed {seed}; brokers at {bootstrap}"));
    let stop_producers = Arc::new(AtomicBool::new(false));
    let stop_consumers = Arc::new(AtomicBool::new(false));
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|i| {
            producer(
                i,
                bootstrap.clone(),
                Arc::clone(&stop_producers),
                journal.clone(),
            )
        })
        .collect();
    let consumers: Vec<_> = (0..CONSUMERS)
        .map(|i| {
            consumer(
                i,
                bootstrap.clone(),
                Arc::clone(&stop_consumers),
                journal.clone(),
            )
        })
        .collect();

    let faults = nemesis(&net, &c, &steps, seconds, &journal);
    journal.log("healed; waiting for the cluster to settle".into());
    let mut failures = Vec::new();
    if let Err(e) = settle(&net, &c) {
        failures.push(e);
    }
    journal.log("settled; stopping the producers".into());
    stop_producers.store(true, Ordering::Relaxed);
    let produced: Vec<Produced> = producers.into_iter().map(|p| p.join().unwrap()).collect();
    journal.log("every producer answered; the final read".into());
    let log = final_read(&bootstrap);
    stop_consumers.store(true, Ordering::Relaxed);
    let consumed: Vec<Consumed> = consumers.into_iter().map(|c| c.join().unwrap()).collect();
    let acked: usize = produced.iter().map(|p| p.acked.len()).sum();
    let failed: usize = produced.iter().map(|p| p.failed).sum();
    let read: usize = consumed.iter().map(|c| c.records.len()).sum();
    let moves: usize = consumed.iter().map(|c| c.watermark_moves).sum();
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    for (e, n) in produced
        .iter()
        .flat_map(|p| &p.errors)
        .chain(consumed.iter().flat_map(|c| &c.errors))
    {
        *errors.entry(e.clone()).or_default() += n;
    }
    match &log {
        Ok(log) => {
            let checked = check(log, &produced, &consumed);
            failures.extend(checked.anomalies);
            let report_only = std::env::var("SLUICE_PARTITION_REPORT_ONLY").unwrap_or_default();
            for (kind, found) in [
                ("duplicates", checked.duplicates),
                ("watermarks", checked.watermarks_back),
            ] {
                if report_only.split(',').any(|k| k.trim() == kind) {
                    eprintln!("partitions: {} {kind} (reported, not failed):", found.len());
                    for f in found.iter().take(20) {
                        eprintln!("  {f}");
                    }
                } else {
                    failures.extend(found);
                }
            }
        }
        Err(e) => failures.push(e.clone()),
    }
    let final_records: usize = log
        .as_ref()
        .map_or(0, |l| l.values().map(|r| r.len()).sum());
    let summary = format!(
        "seed {seed}: {faults} faults in {seconds} s; {acked} records acknowledged, {failed} failed \
         (not acknowledged), {final_records} in the final log, {read} read by {CONSUMERS} consumers \
         during the run, who saw high watermarks move {moves} times; client errors: {errors:?}; {} anomalies",
        failures.len()
    );
    eprintln!("partitions: {summary}");
    if !failures.is_empty() {
        // The brokers' logs and data stay for a look.
        let kept = dir.keep();
        eprintln!(
            "partitions: brokers' logs and data kept in {}",
            kept.display()
        );
        let shown: Vec<&String> = failures.iter().take(60).collect();
        panic!(
            "{summary}\nSLUICE_PARTITION_SEED={seed} SLUICE_PARTITION_SECONDS={seconds} replays the schedule\n\
             schedule as run:\n{}\nanomalies (first {} of {}):\n{}",
            journal.text(),
            shown.len(),
            failures.len(),
            shown
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    assert!(
        acked >= 1_000 && moves > 0,
        "{summary}: too few records acknowledged or watermarks seen to check anything"
    );
}
