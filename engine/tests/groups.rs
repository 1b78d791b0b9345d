//! Consumer groups against a real `sluice` process with real clients:
//! librdkafka (range, roundrobin, cooperative-sticky, static membership), a
//! consumer killed with SIGKILL, committed offsets across a clean and a
//! kill -9 broker restart, kafka-python, and the `sluice groups` command.
//!
//! Every broker runs with `group.initial.rebalance.delay.ms=0` and allows
//! short sessions, so each rebalance takes about one heartbeat interval
//! (500 ms) and the file runs in well under a minute. Nothing asserts on
//! speed: every wait has a generous deadline and fails with the state of
//! every member and the broker's log.

mod common;

use common::Broker;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, RebalanceProtocol,
};
use rdkafka::message::{BorrowedMessage, DeliveryResult, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Broker settings for every test: rebalances start at once and sessions
/// as short as 500 ms are allowed.
const GROUP_OVERRIDES: &[&str] = &[
    "group.initial.rebalance.delay.ms=0",
    "group.min.session.timeout.ms=500",
];

/// How long any one wait may take. Generous: CI machines are shared and a
/// rebalance waits for every member's next heartbeat.
const DEADLINE: Duration = Duration::from_secs(90);

/// How long "nothing happens" is watched for: six heartbeat intervals, so
/// a rebalance the coordinator started would have reached every member.
const QUIET_PERIOD: Duration = Duration::from_secs(3);

/// Partitions of the topic most tests share out.
const PARTITIONS: i32 = 6;

fn start_broker() -> Broker {
    Broker::start(2, GROUP_OVERRIDES)
}

// ---------------------------------------------------------------------
// Producing
// ---------------------------------------------------------------------

/// Delivered messages: (partition, offset) → payload.
type Sent = BTreeMap<(i32, i64), String>;

#[derive(Clone, Default)]
struct Deliveries(Arc<Mutex<(Sent, Vec<String>)>>);

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let mut d = self.0.lock().unwrap();
        match result {
            Ok(m) => {
                let value = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
                d.0.insert((m.partition(), m.offset()), value);
            }
            Err((e, m)) => d.1.push(format!("partition {}: {e}", m.partition())),
        }
    }
}

/// Produces `count` messages `{tag}-{i}`, message `i` to partition
/// `i % partitions`, and waits for every acknowledgement.
fn produce(broker: &Broker, topic: &str, partitions: i32, tag: &str, count: usize) -> Sent {
    produce_to(
        broker,
        topic,
        tag,
        (0..count).map(|i| (i % partitions as usize) as i32),
    )
}

/// Produces one message per item of `partitions`, to that partition.
fn produce_to(
    broker: &Broker,
    topic: &str,
    tag: &str,
    partitions: impl Iterator<Item = i32>,
) -> Sent {
    let ctx = Deliveries::default();
    let producer: BaseProducer<Deliveries> = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("linger.ms", "5")
        .set("message.timeout.ms", "60000")
        .create_with_context(ctx.clone())
        .expect("producer");
    let mut count = 0;
    for (i, p) in partitions.enumerate() {
        let value = format!("{tag}-{i}");
        loop {
            let record = BaseRecord::<(), String, ()>::to(topic)
                .payload(&value)
                .partition(p);
            match producer.send(record) {
                Ok(()) => break,
                Err((e, _)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                    producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => panic!("send to {topic}/{p}: {e}"),
            }
        }
        count += 1;
    }
    producer.flush(Duration::from_secs(60)).expect("flush");
    let d = ctx.0.lock().unwrap();
    assert!(d.1.is_empty(), "delivery errors: {:?}", d.1);
    assert_eq!(d.0.len(), count, "acknowledged messages");
    d.0.clone()
}

// ---------------------------------------------------------------------
// Consuming
// ---------------------------------------------------------------------

/// A rebalance callback as a member saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Event {
    Assign(BTreeSet<i32>),
    Revoke(BTreeSet<i32>),
    Error(String),
}

/// Client log lines a member keeps: the newest, printed when one of its
/// reads breaks the hand-over rule.
const LOG_LINES: usize = 3000;

/// Records every rebalance callback of one consumer, and the newest
/// [`LOG_LINES`] of its client's group, topic and fetch log.
#[derive(Clone, Default)]
struct Rebalances(Arc<Mutex<Vec<Event>>>, Arc<Mutex<VecDeque<String>>>);

impl ClientContext for Rebalances {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let mut lines = self.1.lock().unwrap();
        if lines.len() == LOG_LINES {
            lines.pop_front();
        }
        lines.push_back(format!(
            "{}.{:03} {level:?} {fac} {log_message}",
            at.as_secs(),
            at.subsec_millis()
        ));
    }
}

impl ConsumerContext for Rebalances {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let event = match rebalance {
            Rebalance::Assign(tpl) => Event::Assign(partition_set(tpl)),
            Rebalance::Revoke(tpl) => Event::Revoke(partition_set(tpl)),
            Rebalance::Error(e) => Event::Error(e.to_string()),
        };
        self.0.lock().unwrap().push(event);
    }
}

fn partition_set(tpl: &TopicPartitionList) -> BTreeSet<i32> {
    tpl.elements().iter().map(|e| e.partition()).collect()
}

/// Who consumed what, in the order the test's one polling thread saw it,
/// checked against Kafka's rule for a partition changing hands: its next
/// reader (a new owner, or the old one after an eager rebalance) starts
/// exactly at the partition's last committed offset, 0 if none.
///
/// So each read of a partition is either the offset after the last one
/// read (the owner reads on) or, in a later generation than that last
/// read, the last committed offset (a new owner starts). Anything else is
/// a violation: a gap, a restart anywhere but at the commit, a restart in
/// the same generation. After a planned hand-over, where the old owner
/// committed all it read, the commit *is* the next offset, so nothing is
/// read twice; after a rebalance nobody planned (a member late to
/// heartbeat on a loaded machine), exactly what was read but not yet
/// committed is read again, and [`Ledger::redelivered`] counts it.
#[derive(Default)]
struct Ledger {
    /// (partition, offset) → (member, payload) of the latest read.
    seen: BTreeMap<(i32, i64), (String, String)>,
    /// Reads of each (partition, offset), including repeats.
    reads: BTreeMap<(i32, i64), usize>,
    /// Partition → (offset after the last read, generation of that read).
    next: BTreeMap<i32, (i64, i32)>,
    /// Partition → the offset the test last committed for it.
    committed: BTreeMap<i32, i64>,
    /// Reads that break the rule above.
    violations: Vec<String>,
    /// Reads of an offset read before.
    redelivered: usize,
    /// Offsets that were read but uncommitted when their partition
    /// restarted at its commit: the most that may be read again.
    uncommitted_at_restarts: usize,
}

impl Ledger {
    /// A ledger for a group whose partitions were committed at `committed`
    /// before this ledger saw any read.
    fn resuming_at(committed: BTreeMap<i32, i64>) -> Ledger {
        Ledger {
            committed,
            ..Ledger::default()
        }
    }

    fn record(&mut self, member: &str, generation: i32, m: &BorrowedMessage<'_>) {
        let value = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
        let (p, offset) = (m.partition(), m.offset());
        let commit = self.committed.get(&p).copied().unwrap_or(0);
        match self.next.get(&p).copied() {
            // The first read of the partition: at its commit.
            None if offset == commit => {}
            // The owner reads on.
            Some((next, _)) if offset == next => {}
            // A new generation starts at the commit.
            Some((next, last_generation)) if offset == commit && generation > last_generation => {
                eprintln!(
                    "{p}: {member} restarts at commit {commit} in generation {generation}, \
                     {} offsets read but uncommitted before",
                    next - commit
                );
                self.uncommitted_at_restarts += (next - commit).max(0) as usize;
            }
            expected => self.violations.push(format!(
                "partition {p}: {member} read offset {offset} in generation {generation}; \
                 expected {expected:?} (next offset, generation of the last read) \
                 or, in a later generation, the last commit {commit}"
            )),
        }
        self.next.insert(p, (offset + 1, generation));
        let reads = self.reads.entry((p, offset)).or_insert(0);
        *reads += 1;
        if *reads > 1 {
            self.redelivered += 1;
        }
        self.seen.insert((p, offset), (member.to_string(), value));
    }

    /// Notes that the test committed `offset` for partition `p`.
    fn committed(&mut self, member: &str, p: i32, offset: i64) {
        let next = self.next.get(&p).map(|(n, _)| *n);
        assert_eq!(
            next,
            Some(offset),
            "{member} commits partition {p} at {offset}, after the last read"
        );
        self.committed.insert(p, offset);
    }

    fn has_all(&self, sent: &Sent) -> bool {
        sent.keys().all(|k| self.seen.contains_key(k))
    }

    fn check_rule(&self) {
        assert!(
            self.violations.is_empty(),
            "reads against the hand-over rule ({} in all): {:#?}",
            self.violations.len(),
            &self.violations[..self.violations.len().min(10)]
        );
        assert!(
            self.redelivered <= self.uncommitted_at_restarts,
            "{} reads repeated, but only {} offsets were uncommitted when \
             their partitions changed hands",
            self.redelivered,
            self.uncommitted_at_restarts
        );
    }

    /// Every sent message was consumed, with its payload, last by the
    /// member named in `owner` for its partition, and every read kept
    /// the hand-over rule.
    fn check(&self, sent: &Sent, owner: &BTreeMap<i32, String>) {
        self.check_rule();
        for (key, value) in sent {
            let (member, got) = self.seen.get(key).expect("checked by has_all");
            assert_eq!(got, value, "payload at {key:?}");
            assert_eq!(Some(member), owner.get(&key.0), "consumer of {key:?}");
        }
    }

    /// What was consumed over the whole test is exactly what was sent:
    /// per partition the offsets 0 to the end, no more, each read once
    /// except what was uncommitted when a partition restarted at its
    /// commit, read exactly once more per restart. Planned hand-overs
    /// after a commit of everything read add nothing, so a test whose
    /// only rebalances are planned expects no repeat at all; a repeat
    /// the log shows came from a restart nobody planned.
    fn check_complete(&self, sent: &Sent) {
        self.check_rule();
        for (p, end) in next_offsets(sent) {
            let offsets: Vec<i64> = sent.keys().filter(|k| k.0 == p).map(|k| k.1).collect();
            assert_eq!(
                offsets,
                (0..end).collect::<Vec<_>>(),
                "partition {p}: acknowledged offsets are 0..{end}"
            );
        }
        let read: Vec<&(i32, i64)> = self.reads.keys().collect();
        let produced: Vec<&(i32, i64)> = sent.keys().collect();
        assert_eq!(read, produced, "offsets consumed against offsets produced");
        let mut consumed: Vec<&str> = Vec::new();
        for (key, n) in &self.reads {
            let value = self.seen[key].1.as_str();
            consumed.extend(std::iter::repeat_n(value, *n));
        }
        let mut expected: Vec<&str> = sent.values().map(String::as_str).collect();
        assert_eq!(
            consumed.len(),
            expected.len() + self.redelivered,
            "values consumed"
        );
        consumed.sort_unstable();
        consumed.dedup();
        expected.sort_unstable();
        assert_eq!(
            consumed, expected,
            "distinct values consumed against produced"
        );
        assert_eq!(
            self.redelivered, self.uncommitted_at_restarts,
            "repeated reads against offsets uncommitted at restarts"
        );
    }
}

/// Consumer settings shared by every member: manual commits, short
/// sessions, frequent heartbeats.
fn consumer_config(bootstrap: &str, group: &str, name: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("client.id", name)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("session.timeout.ms", "3000")
        .set("heartbeat.interval.ms", "500")
        .set("max.poll.interval.ms", "60000")
        .set("debug", "cgrp,topic,fetch");
    config
}

/// One subscribed group member.
struct Member {
    name: String,
    consumer: BaseConsumer<Rebalances>,
    rebalances: Rebalances,
}

impl Member {
    /// A member subscribed to `topic`, with `settings` over the defaults.
    fn join(
        bootstrap: &str,
        group: &str,
        topic: &str,
        name: &str,
        settings: &[(&str, &str)],
    ) -> Member {
        let member = Member::unsubscribed(bootstrap, group, name, settings);
        member.consumer.subscribe(&[topic]).expect("subscribe");
        member
    }

    /// A consumer of the group that does not join it: for OffsetFetch.
    fn unsubscribed(bootstrap: &str, group: &str, name: &str, settings: &[(&str, &str)]) -> Member {
        let mut config = consumer_config(bootstrap, group, name);
        for (k, v) in settings {
            config.set(*k, *v);
        }
        let rebalances = Rebalances::default();
        let consumer: BaseConsumer<Rebalances> = config
            .create_with_context(rebalances.clone())
            .expect("consumer");
        Member {
            name: name.to_string(),
            consumer,
            rebalances,
        }
    }

    fn assignment(&self) -> BTreeSet<i32> {
        partition_set(&self.consumer.assignment().expect("assignment"))
    }

    fn events(&self) -> Vec<Event> {
        self.rebalances.0.lock().unwrap().clone()
    }

    /// One poll; a message goes into `ledger`.
    fn poll(&self, ledger: &mut Ledger) {
        match self.consumer.poll(Duration::from_millis(50)) {
            Some(Ok(m)) => {
                let violations = ledger.violations.len();
                ledger.record(&self.name, self.generation().0, &m);
                if ledger.violations.len() > violations {
                    let log = self.rebalances.1.lock().unwrap();
                    let log: Vec<&str> = log.iter().map(String::as_str).collect();
                    eprintln!(
                        "{}: {}; its client's log up to that read:\n{}",
                        self.name,
                        ledger.violations.last().expect("one more"),
                        log.join("\n")
                    );
                }
            }
            Some(Err(e)) if common::is_transient(&e) => {}
            Some(Err(e)) => panic!("{}: consume error {e}", self.name),
            None => {}
        }
    }

    /// Commits the position of every assigned partition it has read
    /// from, waits for the answer, and notes the offsets in `ledger`.
    fn commit(&self, ledger: &mut Ledger) {
        let position = self.consumer.position().expect("position");
        let mut tpl = TopicPartitionList::new();
        for e in position.elements() {
            if let Offset::Offset(o) = e.offset() {
                tpl.add_partition_offset(e.topic(), e.partition(), Offset::Offset(o))
                    .unwrap();
            }
        }
        if tpl.count() == 0 {
            return;
        }
        if let Err(e) = self.consumer.commit(&tpl, CommitMode::Sync) {
            panic!("{}: commit {tpl:?}: {e}", self.name);
        }
        for e in tpl.elements() {
            if let Offset::Offset(o) = e.offset() {
                ledger.committed(&self.name, e.partition(), o);
            }
        }
    }

    /// (generation, member id) as the client last heard them from the
    /// coordinator.
    fn generation(&self) -> (i32, String) {
        use rdkafka::bindings as rd;
        // SAFETY: the consumer's handle is alive for the call; the
        // metadata is a copy this function owns and destroys, and the
        // member id string is copied out before that.
        unsafe {
            let md = rd::rd_kafka_consumer_group_metadata(self.consumer.client().native_ptr());
            assert!(!md.is_null(), "{}: no group metadata", self.name);
            let generation = rd::rd_kafka_consumer_group_metadata_generation_id(md);
            let id = rd::rd_kafka_consumer_group_metadata_member_id(md);
            let member_id = std::ffi::CStr::from_ptr(id).to_string_lossy().into_owned();
            rd::rd_kafka_consumer_group_metadata_destroy(md);
            (generation, member_id)
        }
    }

    fn state(&self) -> String {
        format!(
            "{} holds {:?}, events {:?}",
            self.name,
            self.assignment(),
            self.events()
        )
    }
}

/// Polls every member until `done` holds; after [`DEADLINE`] fails with
/// what `state` says and the broker's log.
fn poll_until(
    broker: &Broker,
    members: &[&Member],
    ledger: &mut Ledger,
    what: &str,
    mut done: impl FnMut(&Ledger) -> bool,
    mut state: impl FnMut(&Ledger) -> String,
) {
    let start = Instant::now();
    loop {
        for m in members {
            m.poll(ledger);
        }
        if done(ledger) {
            return;
        }
        if start.elapsed() > DEADLINE {
            let members: Vec<String> = members.iter().map(|m| m.state()).collect();
            panic!(
                "{what}: not reached in {DEADLINE:?}\n{}\n{}\nbroker log:\n{}",
                members.join("\n"),
                state(ledger),
                broker.log()
            );
        }
    }
}

/// Polls until every member holds `per_member` partitions and together
/// they hold all `total`, each once.
fn wait_balanced(
    broker: &Broker,
    members: &[&Member],
    ledger: &mut Ledger,
    total: i32,
    per_member: usize,
) {
    let what = format!(
        "{} members with {per_member} partitions each",
        members.len()
    );
    poll_until(
        broker,
        members,
        ledger,
        &what,
        |_| balanced(members, total, per_member),
        |_| String::new(),
    );
}

fn balanced(members: &[&Member], total: i32, per_member: usize) -> bool {
    let sets: Vec<BTreeSet<i32>> = members.iter().map(|m| m.assignment()).collect();
    let union: BTreeSet<i32> = sets.iter().flatten().copied().collect();
    sets.iter().all(|s| s.len() == per_member) && union == (0..total).collect()
}

/// Polls until every message of `sent` was consumed.
fn consume_all(broker: &Broker, members: &[&Member], ledger: &mut Ledger, sent: &Sent) {
    let what = format!("all {} messages consumed", sent.len());
    let progress = |l: &Ledger| {
        let got = sent.keys().filter(|k| l.seen.contains_key(k)).count();
        format!("consumed {got} of {} sent", sent.len())
    };
    poll_until(
        broker,
        members,
        ledger,
        &what,
        |l| l.has_all(sent),
        progress,
    );
}

/// Commits offset 0 for every partition of `topic` to the empty `group`
/// (a simple commit, no member), so every member starts each partition
/// at a commit and none at an offset reset, which librdkafka does
/// asynchronously (a ListOffsets round trip, possibly still under way
/// when the rebalance that follows the first join takes the partition
/// away). These tests check the hand-over at commits; a read that breaks
/// it prints the member's client log (cgrp, topic and fetch) up to it.
fn commit_start(broker: &Broker, group: &str, topic: &str, partitions: i32) {
    let setup = Member::unsubscribed(&broker.bootstrap(), group, "setup", &[]);
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Offset(0))
            .unwrap();
    }
    let deadline = Instant::now() + DEADLINE;
    while let Err(e) = setup.consumer.commit(&tpl, CommitMode::Sync) {
        assert!(
            Instant::now() < deadline,
            "committing the start of {group}: {e}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Partition → name of the member that holds it.
fn owners(members: &[&Member]) -> BTreeMap<i32, String> {
    members
        .iter()
        .flat_map(|m| m.assignment().into_iter().map(|p| (p, m.name.clone())))
        .collect()
}

// ---------------------------------------------------------------------
// a. Eager assignors: spread, take over, spread again
// ---------------------------------------------------------------------

/// Three members split six partitions two each in the shape the assignor
/// dictates; every message is consumed once; when one member leaves the
/// other two take its partitions; when a new one joins they spread again.
fn spread_take_over_and_spread_again(
    strategy: &str,
    three_way: &[[i32; 2]; 3],
    two_way: &[[i32; 3]; 2],
) {
    let broker = start_broker();
    let topic = format!("spread-{strategy}");
    let group = format!("group-{strategy}");
    common::create_topic(&broker, &topic, PARTITIONS);
    let settings = [("partition.assignment.strategy", strategy)];
    commit_start(&broker, &group, &topic, PARTITIONS);
    let join = |name: &str| Member::join(&broker.bootstrap(), &group, &topic, name, &settings);
    let (c1, c2, c3) = (join("c1"), join("c2"), join("c3"));
    let mut ledger = Ledger::default();

    wait_balanced(&broker, &[&c1, &c2, &c3], &mut ledger, PARTITIONS, 2);
    check_shape(strategy, &[&c1, &c2, &c3], three_way);
    let sent = produce(&broker, &topic, PARTITIONS, "first", 600);
    consume_all(&broker, &[&c1, &c2, &c3], &mut ledger, &sent);
    ledger.check(&sent, &owners(&[&c1, &c2, &c3]));
    let mut all_sent = sent;
    for c in [&c1, &c2, &c3] {
        c.commit(&mut ledger);
    }

    // c3 closes cleanly (LeaveGroup): c1 and c2 take over its partitions
    // and start where c3 committed.
    drop(c3);
    wait_balanced(&broker, &[&c1, &c2], &mut ledger, PARTITIONS, 3);
    check_shape(strategy, &[&c1, &c2], two_way);
    let sent = produce(&broker, &topic, PARTITIONS, "second", 600);
    consume_all(&broker, &[&c1, &c2], &mut ledger, &sent);
    ledger.check(&sent, &owners(&[&c1, &c2]));
    all_sent.extend(sent);
    c1.commit(&mut ledger);
    c2.commit(&mut ledger);

    // A new member joins: two partitions each again.
    let c4 = join("c4");
    wait_balanced(&broker, &[&c1, &c2, &c4], &mut ledger, PARTITIONS, 2);
    check_shape(strategy, &[&c1, &c2, &c4], three_way);
    let sent = produce(&broker, &topic, PARTITIONS, "third", 600);
    consume_all(&broker, &[&c1, &c2, &c4], &mut ledger, &sent);
    ledger.check(&sent, &owners(&[&c1, &c2, &c4]));
    all_sent.extend(sent);
    // Both hand-overs were planned and came after a commit of all that
    // was read, so they repeat nothing: a repeated read is owed only to a
    // restart nobody planned, and then exactly what it left uncommitted.
    ledger.check_complete(&all_sent);
    assert!(c1.events().iter().all(|e| !matches!(e, Event::Error(_))));
}

/// Each member's partitions are one of `shapes`, and no shape twice.
fn check_shape<const N: usize>(strategy: &str, members: &[&Member], shapes: &[[i32; N]]) {
    let shapes: Vec<BTreeSet<i32>> = shapes.iter().map(|s| s.iter().copied().collect()).collect();
    let mut used = BTreeSet::new();
    for m in members {
        let a = m.assignment();
        let index = shapes.iter().position(|s| *s == a);
        assert!(
            index.is_some(),
            "{strategy}: {} holds {a:?}, expected one of {shapes:?}",
            m.name
        );
        assert!(used.insert(index), "{strategy}: two members hold {a:?}");
    }
}

#[test]
fn range_assignor_spreads_takes_over_and_spreads_again() {
    spread_take_over_and_spread_again("range", &[[0, 1], [2, 3], [4, 5]], &[[0, 1, 2], [3, 4, 5]]);
}

#[test]
fn roundrobin_assignor_spreads_takes_over_and_spreads_again() {
    spread_take_over_and_spread_again(
        "roundrobin",
        &[[0, 3], [1, 4], [2, 5]],
        &[[0, 2, 4], [1, 3, 5]],
    );
}

// ---------------------------------------------------------------------
// b. Cooperative-sticky: a join revokes only what moves
// ---------------------------------------------------------------------

#[test]
fn cooperative_sticky_join_revokes_only_the_partitions_that_move() {
    let broker = start_broker();
    let (topic, group) = ("sticky", "sticky-group");
    common::create_topic(&broker, topic, PARTITIONS);
    let settings = [("partition.assignment.strategy", "cooperative-sticky")];
    let join = |name: &str| Member::join(&broker.bootstrap(), group, topic, name, &settings);
    let (a, b) = (join("a"), join("b"));
    let mut ledger = Ledger::default();
    wait_balanced(&broker, &[&a, &b], &mut ledger, PARTITIONS, 3);
    for m in [&a, &b] {
        assert!(
            matches!(
                m.consumer.rebalance_protocol(),
                RebalanceProtocol::Cooperative
            ),
            "{} did not settle on the cooperative protocol",
            m.name
        );
    }
    let sent = produce(&broker, topic, PARTITIONS, "before", 300);
    consume_all(&broker, &[&a, &b], &mut ledger, &sent);
    let mut all_sent = sent;
    a.commit(&mut ledger);
    b.commit(&mut ledger);
    let before = [
        (a.assignment(), a.events().len()),
        (b.assignment(), b.events().len()),
    ];

    let c = join("c");
    wait_balanced(&broker, &[&a, &b, &c], &mut ledger, PARTITIONS, 2);
    for (m, (held, seen_events)) in [&a, &b].into_iter().zip(&before) {
        let now = m.assignment();
        assert!(
            now.is_subset(held),
            "{} gained {now:?} from {held:?}",
            m.name
        );
        let mut revoked = BTreeSet::new();
        for e in &m.events()[*seen_events..] {
            match e {
                Event::Revoke(ps) => {
                    assert!(
                        ps.is_disjoint(&now),
                        "{} had kept partitions revoked: {ps:?} while keeping {now:?}",
                        m.name
                    );
                    revoked.extend(ps);
                }
                Event::Assign(ps) => assert!(
                    ps.is_empty(),
                    "{} was assigned {ps:?} while only giving partitions up",
                    m.name
                ),
                Event::Error(e) => panic!("{}: rebalance error {e}", m.name),
            }
        }
        let moved: BTreeSet<i32> = held.difference(&now).copied().collect();
        assert_eq!(revoked, moved, "{}: revoked exactly what moved", m.name);
    }
    let sent = produce(&broker, topic, PARTITIONS, "after", 300);
    consume_all(&broker, &[&a, &b, &c], &mut ledger, &sent);
    ledger.check(&sent, &owners(&[&a, &b, &c]));
    all_sent.extend(sent);
    // The partitions that moved had been committed to their ends: c
    // starts each at its end, and nothing is read twice.
    ledger.check_complete(&all_sent);
    common::passed("librdkafka", &["groups-classic"]);
}

// ---------------------------------------------------------------------
// c. A member that dies without leaving is expelled
// ---------------------------------------------------------------------

/// Environment variable that turns [`child_consumer`] on:
/// `BOOTSTRAP|GROUP|TOPIC`.
const CHILD_ENV: &str = "SLUICE_GROUPS_TEST_CHILD";

/// The longest a child consumer lives, should its parent vanish without
/// killing it.
const CHILD_LIFETIME: Duration = Duration::from_secs(300);

/// Not a test: the group member that
/// `crashed_member_is_expelled_and_its_partitions_reassigned` runs in a
/// child process (this test binary, re-executed) so that it can die by
/// SIGKILL, without LeaveGroup. Prints `ASSIGNED p,p,...` on every change.
#[test]
#[ignore = "run in a child process by crashed_member_is_expelled_and_its_partitions_reassigned"]
fn child_consumer() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let parts: Vec<&str> = spec.split('|').collect();
    let [bootstrap, group, topic] = parts[..] else {
        panic!("{CHILD_ENV}={spec}: want BOOTSTRAP|GROUP|TOPIC");
    };
    let member = Member::join(bootstrap, group, topic, "child", &[]);
    let mut ledger = Ledger::default();
    let mut reported = None;
    let start = Instant::now();
    while start.elapsed() < CHILD_LIFETIME {
        member.poll(&mut ledger);
        let now = member.assignment();
        if reported.as_ref() != Some(&now) {
            let list: Vec<String> = now.iter().map(|p| p.to_string()).collect();
            println!("ASSIGNED {}", list.join(","));
            reported = Some(now);
        }
    }
}

/// A child process running [`child_consumer`]; killed when dropped.
struct ChildConsumer {
    child: Child,
    reports: mpsc::Receiver<BTreeSet<i32>>,
    last: Option<BTreeSet<i32>>,
}

impl ChildConsumer {
    fn spawn(broker: &Broker, group: &str, topic: &str) -> ChildConsumer {
        let exe = std::env::current_exe().expect("test binary path");
        let mut child = Command::new(exe)
            .args(["child_consumer", "--exact", "--ignored", "--nocapture"])
            .env(CHILD_ENV, format!("{}|{group}|{topic}", broker.bootstrap()))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start child consumer");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, reports) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if let Some(list) = line.strip_prefix("ASSIGNED ") {
                    let set = list.split(',').filter_map(|p| p.parse().ok()).collect();
                    if tx.send(set).is_err() {
                        return;
                    }
                }
            }
        });
        ChildConsumer {
            child,
            reports,
            last: None,
        }
    }

    /// The child's latest reported assignment.
    fn assignment(&mut self) -> Option<&BTreeSet<i32>> {
        while let Ok(set) = self.reports.try_recv() {
            self.last = Some(set);
        }
        self.last.as_ref()
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildConsumer {
    fn drop(&mut self) {
        self.kill9();
    }
}

#[test]
fn crashed_member_is_expelled_and_its_partitions_reassigned() {
    let broker = start_broker();
    let (topic, group) = ("crash", "crash-group");
    common::create_topic(&broker, topic, PARTITIONS);
    let mut child = ChildConsumer::spawn(&broker, group, topic);
    let join = |name: &str| Member::join(&broker.bootstrap(), group, topic, name, &[]);
    let (a, b) = (join("a"), join("b"));
    let mut ledger = Ledger::default();
    let child_held = std::cell::RefCell::new(BTreeSet::new());
    poll_until(
        &broker,
        &[&a, &b],
        &mut ledger,
        "a, b and the child with two partitions each",
        |_| {
            let Some(held) = child.assignment() else {
                return false;
            };
            child_held.replace(held.clone());
            let (in_a, in_b) = (a.assignment(), b.assignment());
            let all: BTreeSet<i32> = in_a.iter().chain(&in_b).chain(held).copied().collect();
            in_a.len() == 2 && in_b.len() == 2 && held.len() == 2 && all.len() == 6
        },
        |_| format!("child reported {:?}", child_held.borrow()),
    );

    // SIGKILL: no LeaveGroup, no more heartbeats. The coordinator must
    // expel it once its session (3 s) runs out and hand its partitions
    // to a and b.
    child.kill9();
    wait_balanced(&broker, &[&a, &b], &mut ledger, PARTITIONS, 3);
    let sent = produce(&broker, topic, PARTITIONS, "after-crash", 600);
    consume_all(&broker, &[&a, &b], &mut ledger, &sent);
    ledger.check(&sent, &owners(&[&a, &b]));
    // Nothing was produced before the crash: the survivors read every
    // partition from 0, once.
    ledger.check_complete(&sent);
}

// ---------------------------------------------------------------------
// d. Committed offsets survive a broker restart
// ---------------------------------------------------------------------

/// How the broker goes down between the commit and the resume.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Restart {
    /// The consumer leaves, then SIGTERM: a clean shutdown.
    Clean,
    /// SIGKILL the moment the synchronous commit returns; the consumer
    /// is closed only after the broker is back.
    Kill9,
}

/// A consumer commits part of what it read, the broker restarts, and a
/// new consumer of the group starts exactly at the committed offsets:
/// nothing is lost, and only what was read but not committed is read again.
fn commit_survives_restart(restart: Restart) {
    const COMMIT_PARTITIONS: i32 = 4;
    let mut broker = start_broker();
    let topic = "resume";
    let group = format!("resume-{restart:?}");
    common::create_topic(&broker, topic, COMMIT_PARTITIONS);
    let sent = produce(&broker, topic, COMMIT_PARTITIONS, "m", 800);

    let first = Member::join(&broker.bootstrap(), &group, topic, "first", &[]);
    let mut before = Ledger::default();
    let read = |n: usize| move |l: &Ledger| l.seen.len() >= n;
    poll_until(
        &broker,
        &[&first],
        &mut before,
        "400 read",
        read(400),
        |_| String::new(),
    );
    let committed = next_offsets(&before.seen);
    // Read on without committing: these may be read again.
    poll_until(
        &broker,
        &[&first],
        &mut before,
        "500 read",
        read(500),
        |_| String::new(),
    );
    let mut tpl = TopicPartitionList::new();
    for (p, o) in &committed {
        tpl.add_partition_offset(topic, *p, Offset::Offset(*o))
            .unwrap();
    }
    first
        .consumer
        .commit(&tpl, CommitMode::Sync)
        .expect("synchronous commit");
    match restart {
        Restart::Kill9 => {
            broker.kill9();
            broker.restart();
            drop(first);
        }
        Restart::Clean => {
            drop(first);
            broker.stop();
            broker.restart();
        }
    }

    let second = Member::join(&broker.bootstrap(), &group, topic, "second", &[]);
    assert_eq!(
        fetch_committed(&broker, &second, topic, COMMIT_PARTITIONS),
        committed,
        "committed offsets after the restart"
    );
    let mut after = Ledger::resuming_at(committed.clone());
    let remaining: Sent = sent
        .iter()
        .filter(|((p, o), _)| *o >= committed.get(p).copied().unwrap_or(0))
        .map(|(k, v)| (*k, v.clone()))
        .collect();
    consume_all(&broker, &[&second], &mut after, &remaining);
    // The new member reads each partition from its commit, once.
    after.check_rule();
    assert_eq!(after.redelivered, 0, "read twice after the restart");
    let ends = next_offsets(&sent);
    for p in 0..COMMIT_PARTITIONS {
        let first_read = after.seen.keys().find(|(q, _)| *q == p).map(|(_, o)| *o);
        let resume_at = committed.get(&p).copied().unwrap_or(0);
        // A partition committed up to its end has nothing left to read.
        let expected = (resume_at < ends[&p]).then_some(resume_at);
        assert_eq!(first_read, expected, "partition {p} resumes at its commit");
    }
    let lost: Vec<_> = sent
        .keys()
        .filter(|k| !before.seen.contains_key(k) && !after.seen.contains_key(k))
        .collect();
    assert!(lost.is_empty(), "never consumed: {lost:?}");
    let again: BTreeSet<(i32, i64)> = before
        .seen
        .keys()
        .filter(|k| after.seen.contains_key(k))
        .copied()
        .collect();
    let uncommitted: BTreeSet<(i32, i64)> = before
        .seen
        .keys()
        .filter(|(p, o)| *o >= committed.get(p).copied().unwrap_or(0))
        .copied()
        .collect();
    assert_eq!(
        again, uncommitted,
        "read again: exactly what was not committed"
    );
}

/// Partition → offset after the last of `messages` in it.
fn next_offsets<V>(messages: &BTreeMap<(i32, i64), V>) -> BTreeMap<i32, i64> {
    let mut next = BTreeMap::new();
    for (p, o) in messages.keys() {
        let n = next.entry(*p).or_insert(0);
        *n = (*n).max(o + 1);
    }
    next
}

/// The group's committed offsets (OffsetFetch), retried while the
/// coordinator loads them after a restart. Partitions without a commit
/// are left out.
fn fetch_committed(
    broker: &Broker,
    member: &Member,
    topic: &str,
    partitions: i32,
) -> BTreeMap<i32, i64> {
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let start = Instant::now();
    loop {
        match member
            .consumer
            .committed_offsets(tpl.clone(), Duration::from_secs(10))
        {
            Ok(answer) => {
                return answer
                    .elements()
                    .iter()
                    .filter_map(|e| match e.offset() {
                        Offset::Offset(o) => Some((e.partition(), o)),
                        _ => None,
                    })
                    .collect()
            }
            Err(e) => assert!(
                start.elapsed() < DEADLINE,
                "committed offsets: {e}\nbroker log:\n{}",
                broker.log()
            ),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn committed_offsets_survive_a_clean_restart() {
    commit_survives_restart(Restart::Clean);
}

#[test]
fn committed_offsets_survive_kill9_right_after_a_synchronous_commit() {
    commit_survives_restart(Restart::Kill9);
}

// ---------------------------------------------------------------------
// e. kafka-python
// ---------------------------------------------------------------------

#[test]
fn kafka_python_consumers_share_a_topic_and_commit() {
    const PY_PARTITIONS: i32 = 4;
    const COUNT: usize = 2000;
    let broker = start_broker();
    let (topic, group) = ("py-group-topic", "py-group");
    common::create_topic(&broker, topic, PY_PARTITIONS);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/groups.py");
    let (count, partitions) = (COUNT.to_string(), PY_PARTITIONS.to_string());
    let stdout = common::run_client(
        "kafka-python group",
        &[
            "150",
            "python3",
            script,
            &broker.bootstrap(),
            topic,
            group,
            &count,
            &partitions,
        ],
        || format!("broker log:\n{}", broker.log()),
    );
    // librdkafka reads back what kafka-python committed: every partition
    // at its log end.
    let end = (COUNT / PY_PARTITIONS as usize) as i64;
    let expected: BTreeMap<i32, i64> = (0..PY_PARTITIONS).map(|p| (p, end)).collect();
    let reported: BTreeMap<i32, i64> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("committed "))
        .filter_map(|l| {
            let (p, o) = l.split_once(' ')?;
            Some((p.parse().ok()?, o.parse().ok()?))
        })
        .collect();
    assert_eq!(reported, expected, "kafka-python's committed offsets");
    let reader = Member::unsubscribed(&broker.bootstrap(), group, "rd-reader", &[]);
    assert_eq!(
        fetch_committed(&broker, &reader, topic, PY_PARTITIONS),
        expected,
        "committed offsets as librdkafka reads them"
    );
    common::passed("kafka-python", &["groups-classic"]);
}

// ---------------------------------------------------------------------
// f. Static membership
// ---------------------------------------------------------------------

#[test]
fn static_member_restarting_within_its_session_keeps_its_partitions_without_a_rebalance() {
    let broker = start_broker();
    let (topic, group) = ("static", "static-group");
    common::create_topic(&broker, topic, PARTITIONS);
    // Long sessions: the restart must fall well inside the static
    // member's, and nobody else may time out on a slow machine.
    let long = [("session.timeout.ms", "30000")];
    let static_settings = [
        ("session.timeout.ms", "30000"),
        ("group.instance.id", "static-s"),
    ];
    let join =
        |name: &str, s: &[(&str, &str)]| Member::join(&broker.bootstrap(), group, topic, name, s);
    let (a, b) = (join("a", &long), join("b", &long));
    let s = join("s", &static_settings);
    let mut ledger = Ledger::default();
    wait_balanced(&broker, &[&a, &b, &s], &mut ledger, PARTITIONS, 2);
    let generation = a.generation().0;
    assert_eq!(b.generation().0, generation, "a and b in one generation");
    assert_eq!(s.generation().0, generation, "a and s in one generation");
    let held = s.assignment();
    let others = [
        (a.assignment(), a.events().len()),
        (b.assignment(), b.events().len()),
    ];

    // A static member sends no LeaveGroup when it closes (KIP-345); its
    // replacement with the same group.instance.id takes its place.
    drop(s);
    let s2 = join("s2", &static_settings);
    poll_until(
        &broker,
        &[&a, &b, &s2],
        &mut ledger,
        "the restarted static member assigned",
        |_| !s2.assignment().is_empty(),
        |_| String::new(),
    );
    assert_eq!(s2.assignment(), held, "the restarted member's partitions");
    assert_eq!(
        s2.generation().0,
        generation,
        "no new generation for a static rejoin"
    );

    // Watch for a rebalance that might still reach a or b.
    let quiet_start = Instant::now();
    let quiet = |_: &Ledger| quiet_start.elapsed() > QUIET_PERIOD;
    poll_until(
        &broker,
        &[&a, &b, &s2],
        &mut ledger,
        "quiet period",
        quiet,
        |_| String::new(),
    );
    for (m, (assigned, events)) in [&a, &b].into_iter().zip(&others) {
        assert_eq!(&m.assignment(), assigned, "{} keeps its partitions", m.name);
        assert_eq!(
            &m.events()[*events..],
            &[] as &[Event],
            "{} saw a rebalance",
            m.name
        );
        assert_eq!(
            m.generation().0,
            generation,
            "{}: generation unchanged",
            m.name
        );
    }
    let sent = produce(&broker, topic, PARTITIONS, "static", 300);
    consume_all(&broker, &[&a, &b, &s2], &mut ledger, &sent);
    ledger.check(&sent, &owners(&[&a, &b, &s2]));
    ledger.check_complete(&sent);
}

// ---------------------------------------------------------------------
// g. `sluice groups`
// ---------------------------------------------------------------------

/// Runs `sluice groups ARGS... --bootstrap B`: (success, stdout, stderr).
fn sluice_groups(bootstrap: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("groups")
        .args(args)
        .args(["--bootstrap", bootstrap, "--timeout-ms", "30000"])
        .output()
        .expect("run sluice groups");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The describe table's rows for `topic`, split into words, by partition.
fn describe_rows(stdout: &str, topic: &str) -> BTreeMap<i32, Vec<String>> {
    stdout
        .lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .filter(|w| w.len() == 9 && w[1] == topic)
        .filter_map(|w| Some((w[2].parse().ok()?, w)))
        .collect()
}

#[test]
fn sluice_groups_describe_shows_committed_log_end_and_lag() {
    let broker = start_broker();
    let bootstrap = broker.bootstrap();
    let (topic, group) = ("lag", "lag-group");
    common::create_topic(&broker, topic, 3);
    // 10, 20 and 30 messages in partitions 0, 1 and 2.
    let layout = (0..3).flat_map(|p| std::iter::repeat_n(p, 10 * (p as usize + 1)));
    let sent = produce_to(&broker, topic, "lag", layout);
    let member = Member::join(&bootstrap, group, topic, "lag-client", &[]);
    let mut ledger = Ledger::default();
    consume_all(&broker, &[&member], &mut ledger, &sent);
    // Processed 4 of partition 0, all of partition 1, none of partition 2.
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(4))
        .unwrap();
    tpl.add_partition_offset(topic, 1, Offset::Offset(20))
        .unwrap();
    member
        .consumer
        .commit(&tpl, CommitMode::Sync)
        .expect("commit");
    let member_id = member.generation().1;

    let (ok, out, err) = sluice_groups(&bootstrap, &["describe", group]);
    assert!(ok, "describe failed: {err}\n{out}");
    assert!(out.contains("state Stable"), "{out}");
    assert!(out.contains("1 member"), "{out}");
    let rows = describe_rows(&out, topic);
    assert_eq!(rows.len(), 3, "{out}");
    for (p, offsets) in [(0, "4 10 6"), (1, "20 20 0"), (2, "- 30 -")] {
        let w = &rows[&p];
        assert_eq!(w[3..6].join(" "), offsets, "partition {p} in\n{out}");
        assert_eq!(w[6], member_id, "consumer id of partition {p} in\n{out}");
        // Kafka writes the host as `/127.0.0.1`.
        assert!(
            w[7].ends_with("127.0.0.1"),
            "host of partition {p} in\n{out}"
        );
        assert_eq!(w[8], "lag-client", "client id of partition {p} in\n{out}");
    }

    let (ok, out, err) = sluice_groups(&bootstrap, &["list"]);
    assert!(ok, "list failed: {err}");
    assert!(
        out.lines()
            .any(|l| l.split_whitespace().eq([group, "Stable", "consumer"])),
        "list:\n{out}"
    );
    let (ok, _, err) = sluice_groups(&bootstrap, &["delete", group]);
    assert!(!ok, "a group with a member must not be deleted");
    assert!(err.contains("NON_EMPTY_GROUP"), "{err}");

    // The member leaves: the commits stay, nothing is assigned.
    drop(member);
    let start = Instant::now();
    let out = loop {
        let (ok, out, err) = sluice_groups(&bootstrap, &["describe", group]);
        assert!(ok, "describe failed: {err}");
        if out.contains("has no active members") {
            break out;
        }
        assert!(start.elapsed() < DEADLINE, "member never left:\n{out}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let rows = describe_rows(&out, topic);
    assert_eq!(rows.keys().copied().collect::<Vec<_>>(), [0, 1], "{out}");
    assert_eq!(rows[&0][3..].join(" "), "4 10 6 - - -", "{out}");
    assert_eq!(rows[&1][3..].join(" "), "20 20 0 - - -", "{out}");

    let (ok, out, err) = sluice_groups(&bootstrap, &["delete", group]);
    assert!(ok, "delete failed: {err}");
    assert!(out.contains("Deleted consumer group 'lag-group'"), "{out}");
    let (ok, _, err) = sluice_groups(&bootstrap, &["describe", group]);
    assert!(!ok, "a deleted group is not described");
    assert!(
        err.contains("consumer group 'lag-group' does not exist"),
        "{err}"
    );

    let closed = format!("127.0.0.1:{}", common::free_port());
    let (ok, _, err) = sluice_groups(&closed, &["describe", group]);
    assert!(!ok);
    assert!(
        err.contains("cannot connect") && err.contains("refused"),
        "{err}"
    );
}
