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
    let value = GroupValue {
        protocol_type: "consumer".into(),
        generation: 5,
        protocol: Some("range".into()),
        leader: Some(split[0].0.into()),
        state_timestamp_ms: 0,
        members: split
            .iter()
            .map(|(id, ps)| MemberValue {
                member_id: id.to_string(),
                instance_id: None,
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                rebalance_timeout_ms: 30_000,
                session_timeout_ms: 10_000,
                subscription: subscription(&Assignment::new()),
                assignment: encode_assignment(&parts(ps), &topics()),
            })
            .collect(),
    };
    let mut g = Group::new("g", 0);
    g.restore(&value, 0);
    g
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
        if lost && self.joined.take().is_some() {
            self.rejoin = true;
            return;
        }
        if let Some(generation) = self.joined.take() {
            let r = g.classic_sync(&sync_req(id, generation), &topics());
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
    assert_eq!(g.check_commit("a", 5, 8), Ok(()));
    assert_eq!(g.check_commit("a", 4, 8), Err(ErrorCode::IllegalGeneration));
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
    let s = g.classic_sync(&sync_req("a", 5), &topics());
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
        g.classic_sync(&sync_req("a", 4), &topics()).error,
        ErrorCode::IllegalGeneration
    );
    let mut other = sync_req("a", 5);
    other.protocol = Some("roundrobin".into());
    assert_eq!(
        g.classic_sync(&other, &topics()).error,
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
/// it, in a seeded order: the same guarantees while both kinds mix.
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
            1 if clients.len() > 1 => {
                let ids: Vec<String> = clients.keys().cloned().collect();
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
            _ => {
                let ids: Vec<String> = clients.keys().cloned().collect();
                let id = &ids[rng.below(ids.len() as u64) as usize];
                let lost = rng.one_in(6);
                clients.get_mut(id).unwrap().step(id, &mut g, now, lost);
            }
        }
        g.check_invariants();
        check_clients(&clients);
    }
    for _ in 0..40 {
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
