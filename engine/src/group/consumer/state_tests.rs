use super::*;
use crate::group::consumer::MigrationPolicy;
use crate::sim_rng::Rng;

fn cfg() -> ConsumerConfig {
    ConsumerConfig {
        session_timeout_ms: 45_000,
        heartbeat_interval_ms: 5_000,
        assignors: vec![AssignorKind::Uniform, AssignorKind::Range],
        migration: MigrationPolicy::Bidirectional,
    }
}

fn topic_id(name: &str) -> Uuid {
    Uuid::from_bytes([name.len() as u8; 16])
}

fn topics(list: &[(&str, i32)]) -> Topics {
    list.iter()
        .map(|(n, p)| (n.to_string(), (topic_id(n), *p)))
        .collect()
}

fn join(id: &str, subs: &[&str]) -> HeartbeatRequest {
    HeartbeatRequest {
        version: 1,
        member_id: id.to_string(),
        member_epoch: 0,
        rebalance_timeout_ms: 30_000,
        subscribed_topic_names: Some(subs.iter().map(|s| s.to_string()).collect()),
        owned: Some(Vec::new()),
        ..HeartbeatRequest::default()
    }
}

fn beat(id: &str, epoch: i32, owned: Option<&Assignment>) -> HeartbeatRequest {
    HeartbeatRequest {
        version: 1,
        member_id: id.to_string(),
        member_epoch: epoch,
        rebalance_timeout_ms: -1,
        owned: owned.map(|o| {
            o.iter()
                .map(|(t, ps)| (*t, ps.iter().copied().collect()))
                .collect()
        }),
        ..HeartbeatRequest::default()
    }
}

/// A client as the Java consumer behaves: it owns what it was last
/// given, reports it, and heartbeats with its last epoch.
#[derive(Clone, Debug, Default)]
struct Client {
    epoch: i32,
    owned: Assignment,
}

impl Client {
    fn apply(&mut self, r: &HeartbeatResult) {
        assert_eq!(r.error, ErrorCode::None, "{r:?}");
        self.epoch = r.member_epoch;
        if let Some(a) = &r.assignment {
            self.owned = a.clone();
        }
    }
}

fn settle(g: &mut ConsumerGroup, clients: &mut BTreeMap<String, Client>, t: &Topics, now: i64) {
    for _ in 0..10 {
        for (id, c) in clients.iter_mut() {
            let r = g.heartbeat(beat(id, c.epoch, Some(&c.owned)), now, t, &cfg());
            c.apply(&r);
            g.check_invariants();
        }
    }
    assert_eq!(g.state(), ConsumerGroupState::Stable);
}

#[test]
fn two_members_share_a_topic_and_a_third_gets_its_share_after_revocation() {
    let t = topics(&[("orders", 6)]);
    let mut g = ConsumerGroup::new("g", AssignorKind::Uniform);
    let mut clients = BTreeMap::new();
    for id in ["a", "b"] {
        let r = g.heartbeat(join(id, &["orders"]), 0, &t, &cfg());
        assert_eq!(r.heartbeat_interval_ms, 5_000);
        let mut c = Client::default();
        c.apply(&r);
        clients.insert(id.to_string(), c);
    }
    settle(&mut g, &mut clients, &t, 0);
    assert_eq!(count(&clients["a"].owned) + count(&clients["b"].owned), 6);
    let epoch = g.epoch();
    let r = g.heartbeat(join("c", &["orders"]), 0, &t, &cfg());
    assert_eq!(g.epoch(), epoch + 1);
    // c gets nothing yet: a and b still own everything.
    assert_eq!(r.assignment, Some(Assignment::new()));
    let mut c = Client::default();
    c.apply(&r);
    clients.insert("c".into(), c);
    settle(&mut g, &mut clients, &t, 0);
    for c in clients.values() {
        assert_eq!(count(&c.owned), 2);
        assert_eq!(c.epoch, g.epoch());
    }
}

#[test]
fn bad_heartbeats_get_kafkas_codes_and_leave_the_group_intact() {
    let t = topics(&[("orders", 2)]);
    let mut g = ConsumerGroup::new("g", AssignorKind::Uniform);
    let r = g.heartbeat(join("a", &["orders"]), 0, &t, &cfg());
    let epoch = r.member_epoch;
    let before = g.epoch();
    let cases = [
        (beat("nobody", 1, None), ErrorCode::UnknownMemberId),
        (beat("a", epoch + 1, None), ErrorCode::FencedMemberEpoch),
        (beat("a", -3, None), ErrorCode::InvalidRequest),
        (beat("", 1, None), ErrorCode::InvalidRequest),
        (
            HeartbeatRequest {
                server_assignor: Some("sticky".into()),
                ..join("b", &["orders"])
            },
            ErrorCode::UnsupportedAssignor,
        ),
        (
            HeartbeatRequest {
                subscribed_topic_regex: Some("orders(".into()),
                ..join("b", &[])
            },
            ErrorCode::InvalidRegularExpression,
        ),
        (
            HeartbeatRequest {
                rebalance_timeout_ms: -1,
                ..join("b", &["orders"])
            },
            ErrorCode::InvalidRequest,
        ),
        (
            HeartbeatRequest {
                member_epoch: LEAVE_STATIC_EPOCH,
                ..beat("a", 0, None)
            },
            ErrorCode::InvalidRequest,
        ),
    ];
    for (req, code) in cases {
        let r = g.heartbeat(req, 0, &t, &cfg());
        assert_eq!(r.error, code);
        assert_eq!(g.epoch(), before, "a refused heartbeat changes nothing");
        assert_eq!(g.members().count(), 1);
    }
    let r = g.heartbeat(beat("a", epoch, None), 0, &t, &cfg());
    assert_eq!((r.error, r.member_epoch), (ErrorCode::None, epoch));
}

#[test]
fn a_lost_response_is_forgiven_with_the_previous_epoch() {
    let t = topics(&[("orders", 2)]);
    let mut g = ConsumerGroup::new("g", AssignorKind::Uniform);
    let first = g.heartbeat(join("a", &["orders"]), 0, &t, &cfg());
    let owned = first.assignment.clone().unwrap();
    g.heartbeat(join("b", &["other"]), 0, &t, &cfg());
    let r = g.heartbeat(beat("a", first.member_epoch, Some(&owned)), 0, &t, &cfg());
    assert!(r.member_epoch > first.member_epoch);
    // The answer was lost: a comes again with its previous epoch.
    let again = g.heartbeat(beat("a", first.member_epoch, Some(&owned)), 0, &t, &cfg());
    assert_eq!(again.error, ErrorCode::None);
    let too_old = g.heartbeat(
        beat("a", first.member_epoch - 1, Some(&owned)),
        0,
        &t,
        &cfg(),
    );
    assert_eq!(too_old.error, ErrorCode::FencedMemberEpoch);
}

#[test]
fn an_expired_member_is_removed_and_its_partitions_reassigned() {
    let t = topics(&[("orders", 4)]);
    let mut g = ConsumerGroup::new("g", AssignorKind::Range);
    let mut clients = BTreeMap::new();
    for id in ["a", "b"] {
        let mut c = Client::default();
        c.apply(&g.heartbeat(join(id, &["orders"]), 0, &t, &cfg()));
        clients.insert(id.to_string(), c);
    }
    settle(&mut g, &mut clients, &t, 0);
    clients.remove("b");
    g.tick(44_000, &t, &cfg());
    assert_eq!(g.members().count(), 2, "still within the session");
    // a keeps heartbeating; b is silent past its session.
    settle(&mut g, &mut clients, &t, 40_000);
    g.tick(46_000, &t, &cfg());
    assert_eq!(g.members().count(), 1);
    settle(&mut g, &mut clients, &t, 46_000);
    assert_eq!(count(&clients["a"].owned), 4);
    let r = g.heartbeat(beat("b", 1, None), 46_000, &t, &cfg());
    assert_eq!(r.error, ErrorCode::UnknownMemberId);
}

#[test]
fn a_static_member_leaves_temporarily_and_its_successor_keeps_its_partitions() {
    let t = topics(&[("orders", 4)]);
    let mut g = ConsumerGroup::new("g", AssignorKind::Uniform);
    let static_join = |id: &str| HeartbeatRequest {
        instance_id: Some("i1".into()),
        ..join(id, &["orders"])
    };
    let mut clients = BTreeMap::new();
    let mut a = Client::default();
    a.apply(&g.heartbeat(static_join("a"), 0, &t, &cfg()));
    clients.insert("a".to_string(), a);
    let mut b = Client::default();
    b.apply(&g.heartbeat(join("b", &["orders"]), 0, &t, &cfg()));
    clients.insert("b".to_string(), b);
    settle(&mut g, &mut clients, &t, 0);
    let owned = clients["a"].owned.clone();
    let epoch = g.epoch();
    // While a is active its instance id cannot be taken.
    let r = g.heartbeat(static_join("a2"), 0, &t, &cfg());
    assert_eq!(r.error, ErrorCode::UnreleasedInstanceId);
    let leave = HeartbeatRequest {
        instance_id: Some("i1".into()),
        member_epoch: LEAVE_STATIC_EPOCH,
        ..beat("a", 0, None)
    };
    let r = g.heartbeat(leave, 0, &t, &cfg());
    assert_eq!((r.error, r.member_epoch), (ErrorCode::None, -2));
    assert_eq!(g.epoch(), epoch, "a temporary leave does not rebalance");
    let r = g.heartbeat(static_join("a2"), 0, &t, &cfg());
    assert_eq!(r.error, ErrorCode::None);
    assert_eq!(r.assignment.as_ref(), Some(&owned));
    assert_eq!(g.epoch(), epoch);
    assert!(g.member("a").is_none());
}

#[test]
fn a_leave_hands_the_partitions_to_the_others() {
    let t = topics(&[("orders", 4)]);
    let mut g = ConsumerGroup::new("g", AssignorKind::Uniform);
    let mut clients = BTreeMap::new();
    for id in ["a", "b"] {
        let mut c = Client::default();
        c.apply(&g.heartbeat(join(id, &["orders"]), 0, &t, &cfg()));
        clients.insert(id.to_string(), c);
    }
    settle(&mut g, &mut clients, &t, 0);
    let r = g.heartbeat(beat("b", LEAVE_EPOCH, None), 0, &t, &cfg());
    assert_eq!((r.error, r.member_epoch), (ErrorCode::None, LEAVE_EPOCH));
    clients.remove("b");
    settle(&mut g, &mut clients, &t, 0);
    assert_eq!(count(&clients["a"].owned), 4);
}

#[test]
fn a_regex_subscription_follows_new_topics() {
    let mut t = topics(&[("orders-eu", 2)]);
    let mut g = ConsumerGroup::new("g", AssignorKind::Uniform);
    let req = HeartbeatRequest {
        subscribed_topic_regex: Some("orders-.*".into()),
        subscribed_topic_names: None,
        ..join("a", &[])
    };
    let r = g.heartbeat(req, 0, &t, &cfg());
    assert_eq!(count(r.assignment.as_ref().unwrap()), 2);
    t.insert("orders-us".into(), (Uuid::from_bytes([99; 16]), 3));
    t.insert("payments".into(), (Uuid::from_bytes([98; 16]), 3));
    let r = g.heartbeat(
        beat("a", r.member_epoch, r.assignment.as_ref()),
        0,
        &t,
        &cfg(),
    );
    assert_eq!(count(r.assignment.as_ref().unwrap()), 5);
}

#[test]
fn commits_need_the_current_member_epoch() {
    let t = topics(&[("orders", 2)]);
    let mut g = ConsumerGroup::new("g", AssignorKind::Uniform);
    assert_eq!(g.check_commit("", -1, 9, &[]), Ok(()));
    let r = g.heartbeat(join("a", &["orders"]), 0, &t, &cfg());
    let e = r.member_epoch;
    assert_eq!(g.check_commit("a", e, 9, &[]), Ok(()));
    // Given orders-0 at epoch e, it cannot have committed it before.
    assert_eq!(
        g.check_commit("a", e - 1, 9, &[("orders", 0)]),
        Err(ErrorCode::StaleMemberEpoch)
    );
    assert_eq!(
        g.check_commit("a", e + 1, 9, &[]),
        Err(ErrorCode::StaleMemberEpoch)
    );
    assert_eq!(
        g.check_commit("a", e, 8, &[]),
        Err(ErrorCode::UnsupportedVersion)
    );
    assert_eq!(
        g.check_commit("x", e, 9, &[]),
        Err(ErrorCode::UnknownMemberId)
    );
    assert_eq!(
        g.check_commit("", -1, 9, &[]),
        Err(ErrorCode::UnknownMemberId)
    );
    assert_eq!(g.check_fetch(None, -1), Ok(()));
    assert_eq!(
        g.check_fetch(Some("a"), e + 1),
        Err(ErrorCode::StaleMemberEpoch)
    );
}

/// KIP-1251: a commit sent before the heartbeat answer that moved the
/// member's epoch reaches it counts for the partitions it has owned
/// since that epoch, never for one it gave up or got back later.
#[test]
fn a_commit_at_an_older_epoch_counts_for_partitions_owned_since() {
    let t = topics(&[("orders", 2)]);
    let mut g = ConsumerGroup::new("g", AssignorKind::Range);
    let mut clients = BTreeMap::from([("a".to_string(), Client::default())]);
    let r = g.heartbeat(join("a", &["orders"]), 0, &t, &cfg());
    clients.get_mut("a").unwrap().apply(&r);
    settle(&mut g, &mut clients, &t, 0);
    let first = clients["a"].epoch;
    assert_eq!(count(&clients["a"].owned), 2);

    // b joins: a's epoch moves on, it gives orders-1 up and keeps orders-0.
    let r = g.heartbeat(join("b", &["orders"]), 0, &t, &cfg());
    clients.insert("b".to_string(), Client::default());
    clients.get_mut("b").unwrap().apply(&r);
    settle(&mut g, &mut clients, &t, 0);
    assert!(clients["a"].epoch > first);
    let kept: Vec<i32> = clients["a"].owned.values().flatten().copied().collect();
    assert_eq!(kept.len(), 1);
    let (kept, lost) = (kept[0], 1 - kept[0]);
    assert_eq!(g.check_commit("a", first, 9, &[("orders", kept)]), Ok(()));
    assert_eq!(
        g.check_commit("a", first, 9, &[("orders", lost)]),
        Err(ErrorCode::StaleMemberEpoch)
    );
    assert_eq!(
        g.check_commit("a", first, 9, &[("orders", kept), ("payments", 0)]),
        Err(ErrorCode::StaleMemberEpoch)
    );

    // b leaves: a gets the other partition back, at a newer epoch, so a
    // commit of it from the first epoch stays refused (b owned it since).
    let r = g.heartbeat(beat("b", -1, None), 0, &t, &cfg());
    assert_eq!(r.error, ErrorCode::None);
    clients.remove("b");
    settle(&mut g, &mut clients, &t, 0);
    assert_eq!(count(&clients["a"].owned), 2);
    let now = clients["a"].epoch;
    assert_eq!(g.check_commit("a", first, 9, &[("orders", kept)]), Ok(()));
    assert_eq!(
        g.check_commit("a", first, 9, &[("orders", lost)]),
        Err(ErrorCode::StaleMemberEpoch)
    );
    assert_eq!(g.check_commit("a", now, 9, &[("orders", lost)]), Ok(()));
}

/// Random clients join, heartbeat (sometimes slow to revoke, sometimes
/// losing an answer), leave, leave temporarily, go silent and come back,
/// while topics grow. After every step no partition has two owners;
/// once the chaos stops and everyone heartbeats, the group is Stable and
/// every subscribed partition is owned. `CONSUMER_GROUP_SIM_SEEDS=N` runs
/// more schedules; a failure names its seed.
#[test]
fn random_schedules_never_give_a_partition_two_owners() {
    let seeds = crate::sim_rng::env_or("CONSUMER_GROUP_SIM_SEEDS", 300);
    for seed in 0..seeds {
        let result = std::panic::catch_unwind(|| simulate(seed));
        if result.is_err() {
            panic!("consumer group simulation failed with seed {seed}");
        }
    }
}

fn simulate(seed: u64) {
    let mut rng = Rng::new(seed);
    let mut t = topics(&[("a", 3), ("bb", 5)]);
    let mut g = ConsumerGroup::new("g", AssignorKind::Uniform);
    let mut clients: BTreeMap<String, Client> = BTreeMap::new();
    let mut now = 0i64;
    let names = ["a", "bb"];
    for step in 0..200 {
        now += rng.below(3_000) as i64;
        match rng.below(10) {
            0 if clients.len() < 6 => {
                let id = format!("m{step}");
                let subs: Vec<&str> = names.iter().copied().filter(|_| rng.below(3) > 0).collect();
                let subs = if subs.is_empty() { vec!["a"] } else { subs };
                let r = g.heartbeat(join(&id, &subs), now, &t, &cfg());
                let mut c = Client::default();
                c.apply(&r);
                clients.insert(id, c);
            }
            1 if !clients.is_empty() => {
                let id = clients
                    .keys()
                    .nth(rng.below(clients.len() as u64) as usize)
                    .cloned()
                    .unwrap();
                clients.remove(&id);
                let r = g.heartbeat(beat(&id, LEAVE_EPOCH, None), now, &t, &cfg());
                assert_eq!(r.error, ErrorCode::None);
            }
            2 => {
                let name = names[rng.below(2) as usize];
                if let Some(e) = t.get_mut(name) {
                    e.1 += 1;
                }
            }
            3 => {
                // Time passes without heartbeats: sessions may expire.
                now += rng.below(60_000) as i64;
                g.tick(now, &t, &cfg());
                clients.retain(|id, _| g.member(id).is_some());
            }
            _ => {
                for (id, c) in clients.iter_mut() {
                    if rng.below(4) == 0 {
                        continue;
                    }
                    // A slow client has not yet revoked: it reports what
                    // it had, a stale superset.
                    let r = g.heartbeat(beat(id, c.epoch, Some(&c.owned)), now, &t, &cfg());
                    if rng.below(8) == 0 && r.error == ErrorCode::None && r.assignment.is_none() {
                        continue; // the answer was lost
                    }
                    match r.error {
                        ErrorCode::None => c.apply(&r),
                        _ => {
                            // Fenced: give everything up and rejoin.
                            let r = g.heartbeat(join(id, &["a"]), now, &t, &cfg());
                            *c = Client::default();
                            c.apply(&r);
                        }
                    }
                }
            }
        }
        g.check_invariants();
        clients.retain(|id, _| g.member(id).is_some());
    }
    // Quiet: everyone heartbeats until the group settles.
    for _ in 0..20 {
        for (id, c) in clients.iter_mut() {
            let r = g.heartbeat(beat(id, c.epoch, Some(&c.owned)), now, &t, &cfg());
            match r.error {
                ErrorCode::None => c.apply(&r),
                _ => {
                    let r = g.heartbeat(join(id, &["a"]), now, &t, &cfg());
                    *c = Client::default();
                    c.apply(&r);
                }
            }
            g.check_invariants();
        }
    }
    if clients.is_empty() {
        return;
    }
    assert_eq!(g.state(), ConsumerGroupState::Stable, "seed {seed}");
    let owned: usize = clients.values().map(|c| count(&c.owned)).sum();
    let subscribed: i32 = t
        .iter()
        .filter(|(n, _)| g.subscribes(n))
        .map(|(_, (_, p))| *p)
        .sum();
    assert_eq!(owned, subscribed as usize, "seed {seed}");
}

#[test]
fn only_configured_assignors_are_accepted_and_the_first_is_the_default() {
    let t = topics(&[("orders", 4)]);
    let only_range = ConsumerConfig {
        assignors: vec![AssignorKind::Range],
        ..cfg()
    };
    let mut g = ConsumerGroup::new("g", AssignorKind::Range);
    let uniform = HeartbeatRequest {
        server_assignor: Some("uniform".into()),
        ..join("a", &["orders"])
    };
    let r = g.heartbeat(uniform, 0, &t, &only_range);
    assert_eq!(r.error, ErrorCode::UnsupportedAssignor);
    let r = g.heartbeat(join("a", &["orders"]), 0, &t, &only_range);
    assert_eq!(r.error, ErrorCode::None);
    assert_eq!(g.describe().assignor, "range");
    // Members that ask for an assignor get it.
    let mut g = ConsumerGroup::new("g2", AssignorKind::Uniform);
    let range = HeartbeatRequest {
        server_assignor: Some("range".into()),
        ..join("a", &["orders"])
    };
    g.heartbeat(range, 0, &t, &cfg());
    assert_eq!(g.describe().assignor, "range");
}

/// A group rebuilt from its stored records (as a new coordinator replays
/// them) has the same members, epochs and assignments, and its members
/// carry on with their epochs and keep their partitions.
#[test]
fn a_group_restored_from_its_records_carries_on() {
    let t = topics(&[("orders", 6)]);
    let mut g = ConsumerGroup::new("g", AssignorKind::Uniform);
    let mut clients = BTreeMap::new();
    for id in ["a", "b", "c"] {
        let mut c = Client::default();
        c.apply(&g.heartbeat(join(id, &["orders"]), 0, &t, &cfg()));
        clients.insert(id.to_string(), c);
    }
    settle(&mut g, &mut clients, &t, 0);
    assert_eq!(g.take_changes().members.len(), 3);
    let mut restored = ConsumerGroup::restored("g", g.epoch(), AssignorKind::Uniform);
    for m in g.members() {
        let (meta, assignment) = g.records_of(&m.id).unwrap();
        let meta = super::super::records::MemberRecord::decode(&meta.encode()).unwrap();
        restored.restore_member(&m.id, meta, 100, &cfg());
        restored.restore_assignment(&m.id, assignment, 100);
    }
    for m in g.members() {
        assert_eq!(restored.records_of(&m.id), g.records_of(&m.id));
    }
    restored.check_invariants();
    let before: BTreeMap<String, Assignment> = clients
        .iter()
        .map(|(id, c)| (id.clone(), c.owned.clone()))
        .collect();
    settle(&mut restored, &mut clients, &t, 100);
    for (id, c) in &clients {
        assert_eq!(c.owned, before[id], "{id} kept its partitions");
    }
}

#[test]
fn heartbeats_report_what_to_store() {
    let t = topics(&[("orders", 2)]);
    let mut g = ConsumerGroup::new("g", AssignorKind::Uniform);
    g.heartbeat(join("a", &["orders"]), 0, &t, &cfg());
    let c = g.take_changes();
    assert_eq!(c.epoch, Some(g.epoch()));
    assert_eq!(c.members.len(), 1);
    assert!(c.members[0].1.is_some());
    let e = g.epoch();
    let r = g.heartbeat(beat("a", e, None), 0, &t, &cfg());
    assert_eq!(r.error, ErrorCode::None);
    let c = g.take_changes();
    assert!(
        c.epoch.is_none() && c.members.is_empty(),
        "a plain heartbeat stores nothing"
    );
    g.heartbeat(beat("a", LEAVE_EPOCH, None), 0, &t, &cfg());
    let c = g.take_changes();
    assert_eq!(c.members, vec![("a".to_string(), None)]);
}

/// A transactional commit without a member is accepted; a member's must
/// carry its epoch, a different one is ILLEGAL_GENERATION as in Kafka.
#[test]
fn txn_commits_need_the_current_member_epoch_when_a_member_is_named() {
    let t = topics(&[("orders", 2)]);
    let mut g = ConsumerGroup::new("g", AssignorKind::Uniform);
    assert_eq!(g.check_txn_commit("", None, -1), Ok(()));
    let r = g.heartbeat(join("a", &["orders"]), 0, &t, &cfg());
    let e = r.member_epoch;
    assert_eq!(g.check_txn_commit("", None, -1), Ok(()));
    assert_eq!(g.check_txn_commit("a", None, e), Ok(()));
    assert_eq!(
        g.check_txn_commit("a", None, e - 1),
        Err(ErrorCode::IllegalGeneration)
    );
    assert_eq!(
        g.check_txn_commit("x", None, e),
        Err(ErrorCode::UnknownMemberId)
    );
}
