use super::*;
use crate::group::consumer::assignor::AssignorKind;
use crate::group::consumer::state::LEAVE_EPOCH;
use crate::group::consumer::{count, MigrationPolicy};
use crate::group::records::GroupValue;
use crate::sim_rng::Rng;
use kafka_protocol::messages::consumer_protocol_subscription::TopicPartition as OwnedTopic;
use std::collections::BTreeSet;

const TOPIC: &str = "orders";
const PARTITIONS: i32 = 8;

fn cfg() -> ConsumerConfig {
    ConsumerConfig {
        session_timeout_ms: 45_000,
        heartbeat_interval_ms: 5_000,
        assignors: vec![AssignorKind::Uniform, AssignorKind::Range],
        migration: MigrationPolicy::Bidirectional,
    }
}

fn topics() -> Topics {
    Topics::from([(TOPIC.to_string(), (Uuid::from_u128(7), PARTITIONS))])
}

fn tid() -> Uuid {
    Uuid::from_u128(7)
}

fn parts(ps: &[i32]) -> Assignment {
    normalized(Assignment::from([(
        tid(),
        ps.iter().copied().collect::<BTreeSet<_>>(),
    )]))
}

/// A ConsumerProtocolSubscription v1 for `orders`, owning `owned`.
fn subscription(owned: &Assignment) -> Bytes {
    let owned_ps: Vec<i32> = owned.get(&tid()).into_iter().flatten().copied().collect();
    let body = ConsumerProtocolSubscription::default()
        .with_topics(vec![StrBytes::from_string(TOPIC.to_string())])
        .with_owned_partitions(match owned_ps.is_empty() {
            true => Vec::new(),
            false => vec![OwnedTopic::default()
                .with_topic(TopicName(StrBytes::from_string(TOPIC.to_string())))
                .with_partitions(owned_ps)],
        });
    let mut out = BytesMut::new();
    out.put_i16(1);
    body.encode(&mut out, 1).unwrap();
    out.freeze()
}

/// A Stable classic group of generation 5 whose members own `split`.
fn classic_group(split: &[(&str, &[i32])]) -> Group {
    let mut g = Group::new("g", 0);
    g.restore(&classic_value(split, false), 0);
    g
}

/// As [`classic_group`], every member static with instance id `i-ID`.
fn static_classic_group(split: &[(&str, &[i32])]) -> Group {
    let mut g = Group::new("g", 0);
    g.restore(&classic_value(split, true), 0);
    g
}

fn classic_value(split: &[(&str, &[i32])], statics: bool) -> GroupValue {
    GroupValue {
        protocol_type: "consumer".into(),
        generation: 5,
        protocol: Some("range".into()),
        leader: Some(split[0].0.into()),
        state_timestamp_ms: 0,
        members: split
            .iter()
            .map(|(id, ps)| MemberValue {
                member_id: id.to_string(),
                instance_id: statics.then(|| format!("i-{id}")),
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                rebalance_timeout_ms: 30_000,
                session_timeout_ms: 10_000,
                subscription: subscription(&Assignment::new()),
                assignment: encode_assignment(&parts(ps), &topics()),
            })
            .collect(),
    }
}

fn join_req(id: &str, owned: &Assignment) -> JoinRequest {
    JoinRequest {
        member_id: id.to_string(),
        client_id: "c".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 30_000,
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), subscription(owned))],
        require_known_member_id: true,
        ..JoinRequest::default()
    }
}

fn sync_req(id: &str, generation: i32) -> SyncRequest {
    SyncRequest {
        member_id: id.to_string(),
        generation,
        protocol_type: Some("consumer".into()),
        protocol: Some("range".into()),
        ..SyncRequest::default()
    }
}

fn consumer_join(id: &str) -> HeartbeatRequest {
    HeartbeatRequest {
        version: 1,
        member_id: id.to_string(),
        member_epoch: 0,
        rebalance_timeout_ms: 30_000,
        subscribed_topic_names: Some(vec![TOPIC.to_string()]),
        owned: Some(Vec::new()),
        ..HeartbeatRequest::default()
    }
}

fn consumer_beat(id: &str, epoch: i32, owned: &Assignment) -> HeartbeatRequest {
    HeartbeatRequest {
        version: 1,
        member_id: id.to_string(),
        member_epoch: epoch,
        rebalance_timeout_ms: -1,
        owned: Some(
            owned
                .iter()
                .map(|(t, ps)| (*t, ps.iter().copied().collect()))
                .collect(),
        ),
        ..HeartbeatRequest::default()
    }
}

/// How a classic client stops taking part in rebalances while its
/// heartbeats keep its session alive: it never sends the JoinGroup it is
/// asked for, or never the SyncGroup after a JoinGroup answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stall {
    Join,
    Sync,
}

/// A client of either protocol as the Java consumer behaves.
#[derive(Clone, Debug)]
struct Client {
    classic: bool,
    /// Eager (revokes all before it rejoins) or cooperative.
    eager: bool,
    epoch: i32,
    owned: Assignment,
    /// Classic: told to rejoin; joined at a generation, to sync.
    rejoin: bool,
    joined: Option<i32>,
    stall: Option<Stall>,
}

impl Client {
    fn classic(eager: bool, generation: i32, owned: Assignment) -> Client {
        Client {
            classic: true,
            eager,
            epoch: generation,
            owned,
            rejoin: false,
            joined: None,
            stall: None,
        }
    }

    fn consumer() -> Client {
        Client {
            classic: false,
            eager: false,
            epoch: 0,
            owned: Assignment::new(),
            rejoin: true,
            joined: None,
            stall: None,
        }
    }

    /// One request of the client's next step; with `lost`, a classic
    /// client never sees its JoinGroup answer and joins again, still
    /// owning what it had.
    fn step(&mut self, id: &str, g: &mut ConsumerGroup, now: i64, lost: bool) {
        match self.classic {
            true => self.classic_step(id, g, now, lost),
            false => self.consumer_step(id, g, now),
        }
    }

    fn consumer_step(&mut self, id: &str, g: &mut ConsumerGroup, now: i64) {
        let req = match self.rejoin {
            true => consumer_join(id),
            false => consumer_beat(id, self.epoch, &self.owned),
        };
        let r = g.heartbeat(req, now, &topics(), &cfg());
        if r.error != ErrorCode::None {
            // Fenced: the client loses what it had and rejoins.
            self.owned.clear();
            self.rejoin = true;
            return;
        }
        self.rejoin = false;
        self.epoch = r.member_epoch;
        if let Some(a) = r.assignment {
            self.owned = a;
        }
    }

    fn classic_step(&mut self, id: &str, g: &mut ConsumerGroup, now: i64, lost: bool) {
        match (self.stall, self.joined) {
            (Some(Stall::Sync), Some(generation)) => {
                g.classic_heartbeat(id, None, generation, now);
                return;
            }
            (Some(Stall::Join), None) if self.rejoin => {
                g.classic_heartbeat(id, None, self.epoch, now);
                return;
            }
            _ => {}
        }
        if lost && self.joined.take().is_some() {
            self.rejoin = true;
            return;
        }
        if let Some(generation) = self.joined.take() {
            let r = g.classic_sync(&sync_req(id, generation), now, &topics());
            if r.error != ErrorCode::None {
                self.rejoin = true;
                return;
            }
            let given = to_ids(&decode_assignment(&r.assignment).unwrap(), &topics());
            let revoked = difference(&self.owned, &given);
            self.owned = given;
            self.epoch = generation;
            // A cooperative client that gave something up rejoins.
            self.rejoin = !revoked.is_empty();
            return;
        }
        if self.rejoin {
            if self.eager {
                self.owned.clear();
            }
            let mut req = join_req(id, &self.owned);
            req.require_known_member_id = false;
            let r = g.classic_join(req, now, &topics(), &cfg());
            assert_eq!(r.error, ErrorCode::None, "{r:?}");
            self.joined = Some(r.generation);
            self.rejoin = false;
            return;
        }
        match g.classic_heartbeat(id, None, self.epoch, now) {
            ErrorCode::None => {}
            ErrorCode::RebalanceInProgress => self.rejoin = true,
            _ => {
                // ILLEGAL_GENERATION or gone: partitions lost.
                self.owned.clear();
                self.rejoin = true;
            }
        }
    }
}

/// No partition held by two clients, as the clients themselves see it.
fn check_clients(clients: &BTreeMap<String, Client>) {
    let mut seen: BTreeMap<i32, &str> = BTreeMap::new();
    for (id, c) in clients {
        for p in c.owned.get(&tid()).into_iter().flatten() {
            if let Some(other) = seen.insert(*p, id) {
                panic!("partition {p} held by {other} and {id}");
            }
        }
    }
}

#[test]
fn an_upgrade_keeps_each_classic_members_partitions_and_generation() {
    let classic = classic_group(&[("a", &[0, 1, 2, 3]), ("b", &[4, 5, 6, 7])]);
    let mut g = ConsumerGroup::from_classic(&classic, &topics(), 0, &cfg()).unwrap();
    g.check_invariants();
    assert_eq!(g.epoch(), 5);
    let a = g.member("a").unwrap();
    assert_eq!(a.assignment.epoch, 5);
    assert_eq!(a.assignment.assigned, parts(&[0, 1, 2, 3]));
    assert_eq!(a.topic_names, vec![TOPIC.to_string()]);
    assert_eq!(a.classic.as_ref().unwrap().session_timeout_ms, 10_000);
    // Every member's records are stored with the group epoch.
    let changes = g.take_changes();
    assert_eq!(changes.epoch, Some(5));
    assert_eq!(changes.members.len(), 2);
    let stored = changes.members[0].1.as_ref().unwrap();
    assert!(stored.0.classic.is_some());
    // Stable at the generation: heartbeats need no rejoin, commits with
    // the generation count, others are refused.
    assert_eq!(g.classic_heartbeat("a", None, 5, 1), ErrorCode::None);
    assert_eq!(
        g.classic_heartbeat("a", None, 4, 1),
        ErrorCode::IllegalGeneration
    );
    assert_eq!(g.check_commit("a", 5, 8, &[]), Ok(()));
    assert_eq!(
        g.check_commit("a", 4, 8, &[]),
        Err(ErrorCode::IllegalGeneration)
    );
}

#[test]
fn a_consumer_member_joining_makes_classic_members_revoke_before_it_gets_anything() {
    let classic = classic_group(&[("a", &[0, 1, 2, 3]), ("b", &[4, 5, 6, 7])]);
    let mut g = ConsumerGroup::from_classic(&classic, &topics(), 0, &cfg()).unwrap();
    let r = g.heartbeat(consumer_join("c"), 1, &topics(), &cfg());
    assert_eq!(r.error, ErrorCode::None);
    assert_eq!(g.epoch(), 6);
    // Everything is still owned by a and b: c waits.
    assert_eq!(r.assignment, Some(Assignment::new()));
    g.check_invariants();
    // a is told to rejoin; as a cooperative member it still owns all.
    assert_eq!(
        g.classic_heartbeat("a", None, 5, 2),
        ErrorCode::RebalanceInProgress
    );
    let j = g.classic_join(join_req("a", &parts(&[0, 1, 2, 3])), 2, &topics(), &cfg());
    assert_eq!((j.error, j.generation), (ErrorCode::None, 5));
    assert_eq!(j.leader, "");
    let s = g.classic_sync(&sync_req("a", 5), 2, &topics());
    let kept = to_ids(&decode_assignment(&s.assignment).unwrap(), &topics());
    assert!(count(&kept) < 4, "{kept:?}");
    // c still gets none of what a gave up but has not said it released.
    let r = g.heartbeat(
        consumer_beat("c", 6, &Assignment::new()),
        3,
        &topics(),
        &cfg(),
    );
    assert_eq!(r.member_epoch, 6);
    assert!(intersection(
        &g.member("c").unwrap().assignment.assigned,
        &parts(&[0, 1, 2, 3])
    )
    .is_empty());
    g.check_invariants();
    // a rejoins owning what it kept: it moves to epoch 6, and c may
    // now take a's released partitions.
    let j = g.classic_join(join_req("a", &kept), 4, &topics(), &cfg());
    assert_eq!(j.generation, 6);
    let r = g.heartbeat(
        consumer_beat("c", 6, &Assignment::new()),
        5,
        &topics(),
        &cfg(),
    );
    let given = r.assignment.unwrap();
    assert!(
        !intersection(&given, &parts(&[0, 1, 2, 3])).is_empty(),
        "{given:?}"
    );
    g.check_invariants();
}

#[test]
fn classic_requests_of_unknown_or_stale_members_are_refused() {
    let classic = classic_group(&[("a", &[0, 1, 2, 3]), ("b", &[4, 5, 6, 7])]);
    let mut g = ConsumerGroup::from_classic(&classic, &topics(), 0, &cfg()).unwrap();
    assert_eq!(
        g.classic_heartbeat("x", None, 5, 1),
        ErrorCode::UnknownMemberId
    );
    assert_eq!(
        g.classic_sync(&sync_req("a", 4), 1, &topics()).error,
        ErrorCode::IllegalGeneration
    );
    let mut other = sync_req("a", 5);
    other.protocol = Some("roundrobin".into());
    assert_eq!(
        g.classic_sync(&other, 1, &topics()).error,
        ErrorCode::InconsistentGroupProtocol
    );
    // A first JoinGroup (v4+) gets a member id to come back with.
    let j = g.classic_join(join_req("", &Assignment::new()), 1, &topics(), &cfg());
    assert_eq!(j.error, ErrorCode::MemberIdRequired);
    assert!(g.member(&j.member_id).is_none());
    // A protocol no classic member offers is refused.
    let mut rr = join_req("n", &Assignment::new());
    rr.protocols[0].0 = "roundrobin".into();
    let j = g.classic_join(rr, 1, &topics(), &cfg());
    assert_eq!(j.error, ErrorCode::InconsistentGroupProtocol);
    // A classic member cannot heartbeat as a consumer-protocol one.
    let r = g.heartbeat(
        consumer_beat("a", 5, &Assignment::new()),
        1,
        &topics(),
        &cfg(),
    );
    assert_eq!(r.error, ErrorCode::UnknownMemberId);
    assert_eq!(
        g.classic_leave("a", None, &topics(), &cfg()),
        ErrorCode::None
    );
    assert_eq!(
        g.classic_leave("a", None, &topics(), &cfg()),
        ErrorCode::UnknownMemberId
    );
    g.check_invariants();
}

#[test]
fn a_classic_members_records_bring_it_back_after_a_coordinator_move() {
    let classic = classic_group(&[("a", &[0, 1, 2, 3]), ("b", &[4, 5, 6, 7])]);
    let mut g = ConsumerGroup::from_classic(&classic, &topics(), 0, &cfg()).unwrap();
    g.heartbeat(consumer_join("c"), 1, &topics(), &cfg());
    let changes = g.take_changes();
    let mut restored = ConsumerGroup::restored("g", changes.epoch.unwrap(), AssignorKind::Uniform);
    for (id, records) in changes.members {
        let (m, a) = records.unwrap();
        restored.restore_member(&id, m, 2, &cfg());
        restored.restore_assignment(&id, a, 2);
    }
    let a = restored.member("a").unwrap();
    assert!(a.classic.is_some());
    assert_eq!(a.assignment.assigned, parts(&[0, 1, 2, 3]));
    // Its heartbeat works as before the move, and it is told to rejoin.
    assert_eq!(
        restored.classic_heartbeat("a", None, 5, 3),
        ErrorCode::RebalanceInProgress
    );
    restored.check_invariants();
}

#[test]
fn a_group_left_with_classic_members_gives_the_classic_record_to_restart_from() {
    let classic = classic_group(&[("a", &[0, 1, 2, 3]), ("b", &[4, 5, 6, 7])]);
    let mut g = ConsumerGroup::from_classic(&classic, &topics(), 0, &cfg()).unwrap();
    assert!(g.only_classic_members());
    g.heartbeat(consumer_join("c"), 1, &topics(), &cfg());
    assert!(!g.only_classic_members());
    let r = g.heartbeat(
        consumer_beat("c", LEAVE_EPOCH, &Assignment::new()),
        2,
        &topics(),
        &cfg(),
    );
    assert_eq!(r.error, ErrorCode::None);
    assert!(g.only_classic_members());
    // Two classic members fit a classic group of two, not one of one.
    assert!(g.may_downgrade(2));
    assert!(!g.may_downgrade(1));
    let v = g.to_classic(&topics(), 3);
    // The generation the classic members are at, so their heartbeats
    // match and they are asked to rejoin, not fenced.
    assert_eq!(v.generation, 5);
    assert_eq!(v.protocol.as_deref(), Some("range"));
    assert_eq!(v.members.len(), 2);
    let a = &v.members[0];
    assert_eq!(
        decode_assignment(&a.assignment).unwrap(),
        vec![(TOPIC.to_string(), vec![0, 1, 2, 3])]
    );
    let mut back = Group::new("g", 3);
    back.restore(&v, 3);
    back.rebalance(
        3,
        &crate::group::GroupConfig {
            offsets_replication_factor: 1,
            offsets_replication_factor_is_default: false,
            offsets_partitions: 1,
            offsets_segment_bytes: 1 << 20,
            offsets_retention_ms: 1,
            offsets_retention_check_ms: 1,
            offset_metadata_max_bytes: 4096,
            initial_rebalance_delay_ms: 0,
            min_session_timeout_ms: 1,
            max_session_timeout_ms: 1_000_000,
            max_size: 100,
            consumer: cfg(),
        },
    );
    assert_eq!(
        back.heartbeat("a", None, 5, 4),
        ErrorCode::RebalanceInProgress
    );
}

/// Steps `clients` once each, a second apart from `from` until `to`
/// (inclusive), with `a` heartbeating at `generation` in between, and
/// runs the group's timers after each second; returns whether `a` is
/// still a member at `to`.
fn heartbeat_only(
    g: &mut ConsumerGroup,
    clients: &mut BTreeMap<String, Client>,
    generation: i32,
    from: i64,
    to: i64,
) -> bool {
    let mut now = from;
    while now <= to {
        for (id, c) in clients.iter_mut() {
            c.step(id, g, now, false);
        }
        g.classic_heartbeat("a", None, generation, now);
        g.tick(now, &topics(), &cfg());
        g.check_invariants();
        check_clients(clients);
        now += 1_000;
    }
    g.member("a").is_some()
}

/// Kafka's join timeout. Before it, a classic member that kept
/// heartbeating but never sent the JoinGroup it was asked for stayed in
/// the group for good (its heartbeats kept its session alive), and the
/// group never became Stable. Now it is removed one rebalance timeout
/// (30 s) after it was first asked, however often it is asked again, and
/// the others take its partitions.
#[test]
fn a_classic_member_that_does_not_rejoin_within_its_rebalance_timeout_is_removed() {
    let classic = classic_group(&[("a", &[0, 1, 2, 3]), ("b", &[4, 5, 6, 7])]);
    let mut g = ConsumerGroup::from_classic(&classic, &topics(), 0, &cfg()).unwrap();
    let mut clients = BTreeMap::from([
        (
            "b".to_string(),
            Client::classic(false, 5, parts(&[4, 5, 6, 7])),
        ),
        ("c".to_string(), Client::consumer()),
    ]);
    // c joins at 1 s; a is first asked to rejoin at 1 s.
    assert!(heartbeat_only(&mut g, &mut clients, 5, 1_000, 1_000));
    assert!(g.epoch() > 5);
    assert_eq!(
        g.classic_heartbeat("a", None, 5, 1_000),
        ErrorCode::RebalanceInProgress
    );
    assert!(heartbeat_only(&mut g, &mut clients, 5, 2_000, 30_000));
    assert!(!heartbeat_only(&mut g, &mut clients, 5, 31_000, 31_000));
    // b and c settle on all eight partitions.
    assert!(!heartbeat_only(&mut g, &mut clients, 5, 32_000, 60_000));
    assert_eq!(g.state(), ConsumerGroupState::Stable);
    let held: usize = clients.values().map(|c| count(&c.owned)).sum();
    assert_eq!(held, PARTITIONS as usize);
}

/// Kafka's sync timeout: a classic member answered a JoinGroup that
/// never sends its SyncGroup is removed one rebalance timeout (30 s)
/// after the answer, though its heartbeats (at its target, so never
/// asked to rejoin) keep its session alive; it used to stay, holding a
/// target it never learnt.
#[test]
fn a_classic_member_that_does_not_sync_within_its_rebalance_timeout_is_removed() {
    let classic = classic_group(&[("a", &[0, 1, 2, 3, 4, 5, 6, 7])]);
    let mut g = ConsumerGroup::from_classic(&classic, &topics(), 0, &cfg()).unwrap();
    let mut clients = BTreeMap::from([("c".to_string(), Client::consumer())]);
    assert!(heartbeat_only(&mut g, &mut clients, 5, 1_000, 1_000));
    // a revoked everything (eager) and joins at 2 s: it is at its target.
    let j = g.classic_join(join_req("a", &Assignment::new()), 2_000, &topics(), &cfg());
    assert_eq!(j.error, ErrorCode::None);
    assert_eq!(j.generation, g.epoch());
    assert_eq!(
        g.classic_heartbeat("a", None, j.generation, 2_000),
        ErrorCode::None
    );
    assert!(heartbeat_only(
        &mut g,
        &mut clients,
        j.generation,
        3_000,
        31_000
    ));
    assert!(!heartbeat_only(
        &mut g,
        &mut clients,
        j.generation,
        32_000,
        32_000
    ));
    assert!(!heartbeat_only(
        &mut g,
        &mut clients,
        j.generation,
        33_000,
        40_000
    ));
    assert_eq!(g.state(), ConsumerGroupState::Stable);
    assert_eq!(count(&clients["c"].owned), PARTITIONS as usize);
}

/// A SyncGroup after the group moved on since the member's JoinGroup is
/// told REBALANCE_IN_PROGRESS (as Kafka answers), and the member then
/// owes a JoinGroup within its rebalance timeout.
#[test]
fn a_sync_behind_the_group_epoch_is_asked_to_rejoin() {
    let classic = classic_group(&[("a", &[0, 1, 2, 3, 4, 5, 6, 7])]);
    let mut g = ConsumerGroup::from_classic(&classic, &topics(), 0, &cfg()).unwrap();
    g.heartbeat(consumer_join("c"), 1_000, &topics(), &cfg());
    let j = g.classic_join(join_req("a", &Assignment::new()), 2_000, &topics(), &cfg());
    assert_eq!(j.error, ErrorCode::None);
    g.heartbeat(consumer_join("d"), 3_000, &topics(), &cfg());
    let s = g.classic_sync(&sync_req("a", j.generation), 4_000, &topics());
    assert_eq!(s.error, ErrorCode::RebalanceInProgress);
    assert_eq!(g.member("a").unwrap().join_deadline_ms, Some(34_000));
    // Its JoinGroup answer clears that and starts the sync deadline,
    // which its SyncGroup clears.
    let j = g.classic_join(join_req("a", &Assignment::new()), 5_000, &topics(), &cfg());
    assert_eq!(j.error, ErrorCode::None);
    let m = g.member("a").unwrap();
    assert_eq!(
        (m.join_deadline_ms, m.sync_deadline_ms),
        (None, Some(35_000))
    );
    let s = g.classic_sync(&sync_req("a", j.generation), 6_000, &topics());
    assert_eq!(s.error, ErrorCode::None);
    assert_eq!(g.member("a").unwrap().sync_deadline_ms, None);
}

/// The upgrade on a static member's replacement: a classic static member
/// restarted with group.protocol=consumer comes back under a new member
/// id with the same instance id. As in Kafka, it takes the classic
/// member's place, target and partitions at once, with no rebalance and
/// no UNRELEASED_INSTANCE_ID (a classic member never sends the leave
/// that would release its id); the old incarnation is fenced. Stored as
/// the old member's tombstones and the new member's records.
#[test]
fn a_consumer_member_replacing_a_classic_static_member_takes_its_place() {
    let classic = static_classic_group(&[("a", &[0, 1, 2, 3]), ("b", &[4, 5, 6, 7])]);
    let mut g = ConsumerGroup::from_classic(&classic, &topics(), 0, &cfg()).unwrap();
    g.take_changes();
    let mut req = consumer_join("n");
    req.instance_id = Some("i-a".into());
    let r = g.heartbeat(req, 1, &topics(), &cfg());
    assert_eq!(r.error, ErrorCode::None, "{r:?}");
    assert_eq!(g.epoch(), 5, "no rebalance");
    assert_eq!(r.member_epoch, 5);
    assert_eq!(r.assignment, Some(parts(&[0, 1, 2, 3])));
    assert!(g.member("a").is_none());
    assert!(g.member("n").unwrap().classic.is_none());
    assert_eq!(
        g.classic_heartbeat("a", Some("i-a"), 5, 2),
        ErrorCode::FencedInstanceId
    );
    assert_eq!(g.classic_heartbeat("b", Some("i-b"), 5, 2), ErrorCode::None);
    let changes = g.take_changes();
    assert_eq!(changes.epoch, None);
    let stored: BTreeMap<String, bool> = changes
        .members
        .iter()
        .map(|(id, r)| (id.clone(), r.is_some()))
        .collect();
    assert_eq!(
        stored,
        BTreeMap::from([("a".to_string(), false), ("n".to_string(), true)])
    );
    g.check_invariants();
}

/// The downgrade on a static member's replacement: when a classic static
/// member takes the place of the last consumer-protocol member, the
/// group becomes a Stable classic group at the group epoch, as Kafka
/// builds it, with no rebalance: the new member has its predecessor's
/// partitions, and the other members carry on at their generation.
#[test]
fn a_classic_member_replacing_the_last_consumer_member_gives_a_stable_classic_group() {
    let classic = static_classic_group(&[("a", &[0, 1, 2, 3]), ("b", &[4, 5, 6, 7])]);
    let mut g = ConsumerGroup::from_classic(&classic, &topics(), 0, &cfg()).unwrap();
    let mut up = consumer_join("n");
    up.instance_id = Some("i-b".into());
    assert_eq!(g.heartbeat(up, 1, &topics(), &cfg()).error, ErrorCode::None);
    assert!(!g.only_classic_members());
    assert!(g.replaces_consumer_member("", Some("i-b")));
    assert!(!g.replaces_consumer_member("", Some("i-a")));
    assert!(!g.replaces_consumer_member("n", Some("i-b")));
    let mut back = join_req("", &Assignment::new());
    back.instance_id = Some("i-b".into());
    let j = g.classic_join(back, 2, &topics(), &cfg());
    assert_eq!((j.error, j.generation), (ErrorCode::None, 5), "{j:?}");
    assert!(g.member("n").is_none());
    assert!(g.only_classic_members());
    assert_eq!(g.epoch(), 5, "no rebalance");
    let v = g.to_stable_classic(&topics(), 3);
    assert_eq!((v.generation, v.protocol.as_deref()), (5, Some("range")));
    let assigned: BTreeMap<String, Vec<(String, Vec<i32>)>> = v
        .members
        .iter()
        .map(|m| {
            (
                m.member_id.clone(),
                decode_assignment(&m.assignment).unwrap(),
            )
        })
        .collect();
    assert_eq!(
        assigned[&j.member_id],
        vec![(TOPIC.to_string(), vec![4, 5, 6, 7])]
    );
    assert_eq!(assigned["a"], vec![(TOPIC.to_string(), vec![0, 1, 2, 3])]);
    let mut classic = Group::new("g", 3);
    classic.restore(&v, 3);
    assert_eq!(classic.state(), crate::group::state::GroupState::Stable);
    assert_eq!(classic.heartbeat("a", Some("i-a"), 5, 4), ErrorCode::None);
    assert_eq!(
        classic.heartbeat(&j.member_id, Some("i-b"), 5, 4),
        ErrorCode::None
    );
}

/// A rolling upgrade under a seeded schedule: classic members (eager or
/// cooperative) are replaced one by one by consumer-protocol members,
/// while every client takes its steps in random order. After every step
/// no partition is held by two clients (as they see it) or owned twice
/// (as the group sees it); at the end the group is Stable and every
/// partition is held once. `MIGRATION_SIM_SEEDS=N` runs more schedules.
#[test]
fn rolling_upgrades_never_give_a_partition_two_owners() {
    let seeds = crate::sim_rng::env_or("MIGRATION_SIM_SEEDS", 300);
    for seed in 0..seeds {
        if std::panic::catch_unwind(|| rolling_upgrade(seed)).is_err() {
            panic!("migration simulation failed with seed {seed}");
        }
    }
}

fn rolling_upgrade(seed: u64) {
    let mut rng = Rng::new(seed);
    let eager = rng.one_in(2);
    let split: [(&str, &[i32]); 3] = [("k0", &[0, 1, 2]), ("k1", &[3, 4, 5]), ("k2", &[6, 7])];
    let classic = classic_group(&split);
    let mut g = ConsumerGroup::from_classic(&classic, &topics(), 0, &cfg()).unwrap();
    let mut clients: BTreeMap<String, Client> = split
        .iter()
        .map(|(id, ps)| (id.to_string(), Client::classic(eager, 5, parts(ps))))
        .collect();
    let mut now = 0i64;
    let mut upgraded = 0;
    for step in 0..400 {
        now += 1 + rng.below(100) as i64;
        let classics: Vec<String> = clients
            .iter()
            .filter(|(_, c)| c.classic)
            .map(|(id, _)| id.clone())
            .collect();
        if !classics.is_empty() && rng.one_in(25) {
            // Restart one classic member with group.protocol=consumer:
            // it leaves (its partitions go with it) and a new member
            // joins under the consumer protocol.
            let id = &classics[rng.below(classics.len() as u64) as usize];
            clients.remove(id);
            assert_eq!(
                g.classic_leave(id, None, &topics(), &cfg()),
                ErrorCode::None
            );
            clients.insert(format!("n{step}"), Client::consumer());
            upgraded += 1;
        } else {
            let ids: Vec<String> = clients.keys().cloned().collect();
            let id = &ids[rng.below(ids.len() as u64) as usize];
            let lost = rng.one_in(6);
            clients.get_mut(id).unwrap().step(id, &mut g, now, lost);
        }
        g.check_invariants();
        check_clients(&clients);
    }
    // Upgrade whoever is left, then let everyone settle.
    let rest: Vec<String> = clients
        .iter()
        .filter(|(_, c)| c.classic)
        .map(|(id, _)| id.clone())
        .collect();
    for id in rest {
        clients.remove(&id);
        g.classic_leave(&id, None, &topics(), &cfg());
        clients.insert(format!("{id}-consumer"), Client::consumer());
        upgraded += 1;
    }
    assert_eq!(upgraded, 3);
    for _ in 0..30 {
        let ids: Vec<String> = clients.keys().cloned().collect();
        for id in &ids {
            clients.get_mut(id).unwrap().step(id, &mut g, now, false);
            g.check_invariants();
            check_clients(&clients);
        }
    }
    assert_eq!(g.state(), ConsumerGroupState::Stable, "seed {seed}");
    let held: usize = clients.values().map(|c| count(&c.owned)).sum();
    assert_eq!(held, PARTITIONS as usize, "seed {seed}");
}

/// Classic members joining a consumer group and consumer members leaving
/// it, in a seeded order: the same guarantees while both kinds mix. Some
/// classic clients stall (they heartbeat but never send the JoinGroup
/// they are asked for, or the SyncGroup after their JoinGroup answer):
/// the coordinator must remove them within their rebalance timeout
/// (30 s), as Kafka does, for the others to settle; a stalled client is
/// dropped from the simulation once the group has removed it (a real one
/// is fenced on its next request).
#[test]
fn mixed_members_never_give_a_partition_two_owners() {
    let seeds = crate::sim_rng::env_or("MIGRATION_SIM_SEEDS", 300);
    for seed in 0..seeds {
        if std::panic::catch_unwind(|| mixed(seed)).is_err() {
            panic!("mixed-protocol simulation failed with seed {seed}");
        }
    }
}

fn mixed(seed: u64) {
    let mut rng = Rng::new(seed);
    let classic = classic_group(&[("k0", &[0, 1, 2, 3, 4, 5, 6, 7])]);
    let mut g = ConsumerGroup::from_classic(&classic, &topics(), 0, &cfg()).unwrap();
    let mut clients: BTreeMap<String, Client> = BTreeMap::from([(
        "k0".to_string(),
        Client::classic(false, 5, parts(&[0, 1, 2, 3, 4, 5, 6, 7])),
    )]);
    let mut now = 0i64;
    for step in 0..400 {
        now += 1 + rng.below(100) as i64;
        match rng.below(20) {
            0 if clients.len() < 5 => {
                let c = match rng.one_in(2) {
                    true => Client {
                        rejoin: true,
                        ..Client::classic(rng.one_in(2), -1, Assignment::new())
                    },
                    false => Client::consumer(),
                };
                clients.insert(format!("m{step}"), c);
            }
            1 if live(&clients).len() > 1 => {
                let ids = live(&clients);
                let id = ids[rng.below(ids.len() as u64) as usize].clone();
                let c = clients.remove(&id).unwrap();
                if g.member(&id).is_some() {
                    match c.classic {
                        true => {
                            g.classic_leave(&id, None, &topics(), &cfg());
                        }
                        false => {
                            g.heartbeat(
                                consumer_beat(&id, LEAVE_EPOCH, &c.owned),
                                now,
                                &topics(),
                                &cfg(),
                            );
                        }
                    }
                }
            }
            2 if live(&clients).len() > 1 => {
                let classics: Vec<String> = live(&clients)
                    .into_iter()
                    .filter(|id| clients[id].classic)
                    .collect();
                if !classics.is_empty() {
                    let id = &classics[rng.below(classics.len() as u64) as usize];
                    let how = match rng.one_in(2) {
                        true => Stall::Join,
                        false => Stall::Sync,
                    };
                    clients.get_mut(id).unwrap().stall = Some(how);
                }
            }
            _ => {
                let ids: Vec<String> = clients.keys().cloned().collect();
                let id = &ids[rng.below(ids.len() as u64) as usize];
                let lost = rng.one_in(6);
                clients.get_mut(id).unwrap().step(id, &mut g, now, lost);
            }
        }
        tick(&mut g, &mut clients, now);
    }
    // Settle, a second at a time: long enough for every stalled client's
    // rebalance timeout to run out, each removal possibly asking another
    // stalled client to rejoin (at most five of 30 s each).
    for _ in 0..200 {
        now += 1_000;
        let ids: Vec<String> = clients.keys().cloned().collect();
        for id in &ids {
            if let Some(c) = clients.get_mut(id) {
                c.step(id, &mut g, now, false);
            }
            tick(&mut g, &mut clients, now);
        }
    }
    assert_eq!(g.state(), ConsumerGroupState::Stable, "seed {seed}");
    let held: usize = clients.values().map(|c| count(&c.owned)).sum();
    assert_eq!(held, PARTITIONS as usize, "seed {seed}");
}

/// Clients that have not stalled.
fn live(clients: &BTreeMap<String, Client>) -> Vec<String> {
    clients
        .iter()
        .filter(|(_, c)| c.stall.is_none())
        .map(|(id, _)| id.clone())
        .collect()
}

/// Runs the group's timers, drops the stalled clients it removed, and
/// checks both views of ownership.
fn tick(g: &mut ConsumerGroup, clients: &mut BTreeMap<String, Client>, now: i64) {
    g.tick(now, &topics(), &cfg());
    clients.retain(|id, c| c.stall.is_none() || g.member(id).is_some());
    g.check_invariants();
    check_clients(clients);
}
