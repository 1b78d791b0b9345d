//! Scenario tests of the group state machine, and a seeded simulation
//! that drives it with randomly behaving clients, crashes, slow stores
//! and time jumps, checking after every step that no partition is owned
//! twice within a generation and that every parked request is answered
//! exactly once.

use super::*;

fn cfg(initial_delay_ms: i64) -> GroupConfig {
    GroupConfig {
        offsets_partitions: 50,
        offsets_replication_factor: 1,
        offsets_replication_factor_is_default: false,
        offsets_segment_bytes: 100 << 20,
        offsets_retention_ms: 7 * 24 * 3_600_000,
        offsets_retention_check_ms: 600_000,
        offset_metadata_max_bytes: 4096,
        initial_rebalance_delay_ms: initial_delay_ms,
        min_session_timeout_ms: 10,
        max_session_timeout_ms: 1_800_000,
        max_size: usize::MAX,
        consumer: crate::group::consumer::ConsumerConfig::default(),
    }
}

fn join_req(member_id: &str, instance: Option<&str>) -> JoinRequest {
    JoinRequest {
        member_id: member_id.to_string(),
        instance_id: instance.map(str::to_string),
        client_id: "client".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 30_000,
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), Bytes::from_static(b"sub"))],
        require_known_member_id: true,
        supports_skip_assignment: false,
    }
}

fn joined(g: &mut Group, ticket: Ticket) -> JoinResult {
    let all = g.take_completions();
    all.into_iter()
        .find_map(|c| match c {
            Completion::Join(t, r) if t == ticket => Some(r),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no join answer for ticket {ticket}"))
}

/// Joins a dynamic member the KIP-394 way; returns its member id.
fn new_member(g: &mut Group, ticket: Ticket, now: i64, c: &GroupConfig) -> String {
    g.join(join_req("", None), ticket, now, c);
    let r = joined(g, ticket);
    assert_eq!(r.error, ErrorCode::MemberIdRequired);
    g.join(join_req(&r.member_id, None), ticket + 1, now, c);
    r.member_id
}

fn sync_as(g: &mut Group, id: &str, generation: i32, ticket: Ticket, now: i64, c: &GroupConfig) {
    let mut assignments = BTreeMap::new();
    for m in g.members.keys() {
        assignments.insert(m.clone(), Bytes::from(format!("for {m}")));
    }
    let req = SyncRequest {
        member_id: id.to_string(),
        generation,
        assignments,
        ..SyncRequest::default()
    };
    if let SyncStep::Store(_) = g.sync(req, ticket, now) {
        g.sync_stored(generation, Ok(()), now, c);
    }
}

#[test]
fn single_member_joins_syncs_and_is_stable() {
    let c = cfg(0);
    let mut g = Group::new("g", 0);
    let id = new_member(&mut g, 1, 0, &c);
    let r = joined(&mut g, 2);
    assert_eq!(r.error, ErrorCode::None);
    assert_eq!((r.generation, r.leader.as_str()), (1, id.as_str()));
    assert_eq!(r.members.len(), 1);
    assert_eq!(g.state(), GroupState::CompletingRebalance);
    sync_as(&mut g, &id, 1, 3, 0, &c);
    assert_eq!(g.state(), GroupState::Stable);
    let done = g.take_completions();
    assert!(matches!(&done[..], [Completion::Sync(3, r)] if r.assignment == format!("for {id}")));
    assert_eq!(g.heartbeat(&id, None, 1, 5), ErrorCode::None);
    assert_eq!(g.heartbeat(&id, None, 0, 5), ErrorCode::IllegalGeneration);
    assert_eq!(
        g.heartbeat("nobody", None, 1, 5),
        ErrorCode::UnknownMemberId
    );
}

#[test]
fn initial_delay_gathers_members_into_one_generation() {
    let c = cfg(100);
    let mut g = Group::new("g", 0);
    let a = new_member(&mut g, 10, 0, &c);
    let b = new_member(&mut g, 20, 50, &c);
    g.tick(99, &c);
    assert_eq!(g.state(), GroupState::PreparingRebalance);
    // b arrived during the delay, so it is extended once more.
    g.tick(100, &c);
    assert_eq!(g.state(), GroupState::PreparingRebalance);
    g.tick(200, &c);
    assert_eq!(g.state(), GroupState::CompletingRebalance);
    let done = g.take_completions();
    assert_eq!(done.len(), 2);
    for c in done {
        let Completion::Join(_, r) = c else {
            panic!("join answers only")
        };
        assert_eq!(r.generation, 1);
        assert_eq!(r.leader, a);
        assert_eq!(r.members.len(), if r.member_id == a { 2 } else { 0 });
        assert!(r.member_id == a || r.member_id == b);
    }
}

#[test]
fn leave_rebalances_and_survivors_get_the_next_generation() {
    let c = cfg(0);
    let mut g = Group::new("g", 0);
    let a = new_member(&mut g, 1, 0, &c);
    g.take_completions();
    let b = new_member(&mut g, 3, 0, &c);
    // b's join started a rebalance that waits for a to rejoin.
    assert_eq!(g.heartbeat(&a, None, 1, 1), ErrorCode::RebalanceInProgress);
    g.join(join_req(&a, None), 5, 1, &c);
    assert_eq!(g.state(), GroupState::CompletingRebalance);
    assert_eq!(g.generation(), 2);
    g.take_completions();
    sync_as(&mut g, &a, 2, 6, 1, &c);
    let follower = SyncRequest {
        member_id: b.clone(),
        generation: 2,
        ..SyncRequest::default()
    };
    assert_eq!(g.sync(follower, 7, 1), SyncStep::Done);
    assert_eq!(g.state(), GroupState::Stable);
    g.take_completions();
    assert_eq!(g.leave(&a, None, 2, &c), ErrorCode::None);
    assert_eq!(g.state(), GroupState::PreparingRebalance);
    assert_eq!(g.leave(&a, None, 2, &c), ErrorCode::UnknownMemberId);
    g.join(join_req(&b, None), 8, 3, &c);
    let r = joined(&mut g, 8);
    assert_eq!((r.generation, r.leader.as_str()), (3, b.as_str()));
}

#[test]
fn silent_member_is_expelled_after_its_session_timeout() {
    let c = cfg(0);
    let mut g = Group::new("g", 0);
    let a = new_member(&mut g, 1, 0, &c);
    g.take_completions();
    sync_as(&mut g, &a, 1, 3, 0, &c);
    g.tick(9_999, &c);
    assert_eq!(g.state(), GroupState::Stable);
    g.tick(10_000, &c);
    assert_eq!(g.state(), GroupState::Empty);
    assert_eq!(g.generation(), 2);
    assert!(g.take_needs_store());
}

#[test]
fn static_member_returns_without_a_rebalance() {
    let c = cfg(0);
    let mut g = Group::new("g", 0);
    g.join(join_req("", Some("i-1")), 1, 0, &c);
    let first = joined(&mut g, 1);
    assert_eq!(first.error, ErrorCode::None, "static members skip KIP-394");
    sync_as(&mut g, &first.member_id, 1, 2, 0, &c);
    g.take_completions();
    // Restart: a new JoinGroup with no member id, same instance id.
    g.join(join_req("", Some("i-1")), 3, 100, &c);
    let again = joined(&mut g, 3);
    assert_eq!(again.error, ErrorCode::None);
    assert_eq!(again.generation, 1, "no new generation");
    assert_ne!(again.member_id, first.member_id);
    assert_eq!(g.state(), GroupState::Stable);
    let req = SyncRequest {
        member_id: again.member_id.clone(),
        instance_id: Some("i-1".into()),
        generation: 1,
        ..SyncRequest::default()
    };
    g.sync(req, 4, 100);
    let done = g.take_completions();
    let want = format!("for {}", first.member_id);
    assert!(matches!(&done[..], [Completion::Sync(4, r)] if r.assignment == want));
    // The old incarnation is fenced.
    let hb = g.heartbeat(&first.member_id, Some("i-1"), 1, 100);
    assert_eq!(hb, ErrorCode::FencedInstanceId);
    // A member naming an instance id no member has was accepted as if it
    // had named none; Kafka answers UNKNOWN_MEMBER_ID.
    let hb = g.heartbeat(&again.member_id, Some("i-2"), 1, 100);
    assert_eq!(hb, ErrorCode::UnknownMemberId);
}

/// KIP-814: before JoinGroup v9 a returning static leader is reported as
/// a follower (under its old id); from v9 it is told it leads, with the
/// members, and to skip the assignment, which the group keeps.
#[test]
fn returning_static_leader_skips_the_assignment_from_v9() {
    let c = cfg(0);
    let mut g = Group::new("g", 0);
    g.join(join_req("", Some("i-1")), 1, 0, &c);
    let first = joined(&mut g, 1);
    sync_as(&mut g, &first.member_id, 1, 2, 0, &c);
    g.take_completions();
    let old = JoinRequest {
        supports_skip_assignment: false,
        ..join_req("", Some("i-1"))
    };
    g.join(old, 3, 100, &c);
    let before_v9 = joined(&mut g, 3);
    assert!(!before_v9.skip_assignment);
    assert_eq!(
        before_v9.leader, first.member_id,
        "reported under its old id"
    );
    assert!(before_v9.members.is_empty());
    let v9 = JoinRequest {
        supports_skip_assignment: true,
        ..join_req("", Some("i-1"))
    };
    g.join(v9, 4, 200, &c);
    let r = joined(&mut g, 4);
    assert_eq!((r.error, r.generation), (ErrorCode::None, 1));
    assert!(r.skip_assignment);
    assert_eq!(r.leader, r.member_id, "told it leads");
    assert_eq!(r.members.len(), 1);
    assert_eq!(g.state(), GroupState::Stable);
    // Its SyncGroup carries no assignments; the group's stays.
    let req = SyncRequest {
        member_id: r.member_id.clone(),
        instance_id: Some("i-1".into()),
        generation: 1,
        ..SyncRequest::default()
    };
    g.sync(req, 5, 200);
    let done = g.take_completions();
    let want = format!("for {}", first.member_id);
    assert!(matches!(&done[..], [Completion::Sync(5, r)] if r.assignment == want));
}

#[test]
fn bad_requests_get_kafka_errors() {
    let c = cfg(0);
    let mut g = Group::new("g", 0);
    let a = new_member(&mut g, 1, 0, &c);
    g.take_completions();
    let mut other = join_req("", None);
    other.protocols = vec![("roundrobin".into(), Bytes::new())];
    g.join(other, 3, 0, &c);
    assert_eq!(
        joined(&mut g, 3).error,
        ErrorCode::InconsistentGroupProtocol
    );
    g.join(join_req("ghost", None), 4, 0, &c);
    assert_eq!(joined(&mut g, 4).error, ErrorCode::UnknownMemberId);
    let stale = SyncRequest {
        member_id: a.clone(),
        generation: 7,
        ..SyncRequest::default()
    };
    g.sync(stale, 5, 0);
    let done = g.take_completions();
    assert!(
        matches!(&done[..], [Completion::Sync(5, r)] if r.error == ErrorCode::IllegalGeneration)
    );
    assert_eq!(
        g.check_commit(&a, None, 1, 0),
        Err(ErrorCode::RebalanceInProgress),
        "generation 1 is still completing"
    );
    assert_eq!(
        g.check_commit("ghost", None, 1, 0),
        Err(ErrorCode::RebalanceInProgress)
    );
    let empty = &mut Group::new("e", 0);
    assert_eq!(empty.check_commit("", None, -1, 0), Ok(()));
    assert_eq!(
        empty.check_commit("m", None, 3, 0),
        Err(ErrorCode::UnknownMemberId)
    );
}

#[test]
fn late_commit_never_overwrites_a_newer_one() {
    let mut g = Group::new("g", 0);
    let value = |offset| OffsetValue {
        offset,
        leader_epoch: -1,
        metadata: String::new(),
        commit_timestamp_ms: 0,
    };
    g.apply_offset(
        "t",
        0,
        Committed {
            value: value(20),
            log_offset: 8,
        },
    );
    g.apply_offset(
        "t",
        0,
        Committed {
            value: value(10),
            log_offset: 7,
        },
    );
    assert_eq!(g.offsets[&("t".to_string(), 0)].value.offset, 20);
    g.remove_offset("t", 0, 6);
    assert!(g.offsets.contains_key(&("t".to_string(), 0)));
    g.remove_offset("t", 0, 9);
    assert!(g.offsets.is_empty());
}

#[test]
fn offsets_expire_only_from_groups_without_members() {
    let c = cfg(0);
    let value = |ts| OffsetValue {
        offset: 1,
        leader_epoch: -1,
        metadata: String::new(),
        commit_timestamp_ms: ts,
    };
    // A consumer group: its offsets expire once it has been Empty for the
    // retention, all at once.
    let mut g = Group::new("g", 0);
    let a = new_member(&mut g, 1, 0, &c);
    g.take_completions();
    g.apply_offset(
        "t",
        0,
        Committed {
            value: value(0),
            log_offset: 1,
        },
    );
    assert!(g.expired_offsets(1_000_000, 10).is_empty(), "has a member");
    g.leave(&a, None, 100, &c);
    assert_eq!(g.state(), GroupState::Empty);
    assert!(g.expired_offsets(105, 10).is_empty());
    assert_eq!(g.expired_offsets(110, 10), vec![("t".to_string(), 0)]);
    // A group that only stores offsets: each expires on its own clock.
    let mut plain = Group::new("p", 0);
    plain.apply_offset(
        "t",
        0,
        Committed {
            value: value(0),
            log_offset: 1,
        },
    );
    plain.apply_offset(
        "t",
        1,
        Committed {
            value: value(50),
            log_offset: 2,
        },
    );
    assert_eq!(plain.expired_offsets(20, 10), vec![("t".to_string(), 0)]);
    plain.remove_offset("t", 0, 3);
    plain.remove_offset("t", 1, 4);
    assert!(plain.is_removable());
}

// ---------------------------------------------------------------------
// Seeded simulation.

use crate::sim_rng::Rng;

const PARTITIONS: u8 = 12;

#[derive(Clone, Debug, PartialEq)]
enum Phase {
    Idle,
    Joining(Ticket),
    Syncing(Ticket, i32),
    Member { generation: i32, owned: Vec<u8> },
    Crashed,
}

#[derive(Debug)]
struct Client {
    member_id: String,
    instance_id: Option<String>,
    phase: Phase,
    is_leader: bool,
    members: Vec<String>,
}

struct Sim {
    rng: Rng,
    g: Group,
    c: GroupConfig,
    now: i64,
    next_ticket: Ticket,
    clients: Vec<Client>,
    outstanding: HashMap<Ticket, usize>,
    /// Leader assignments stored but not yet acknowledged (a slow log).
    pending_store: Option<i32>,
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let mut rng = Rng::new(seed);
        let c = cfg(rng.below(3) as i64 * 500);
        let clients = (0..4)
            .map(|i| Client {
                member_id: String::new(),
                instance_id: (i % 2 == 1).then(|| format!("static-{i}")),
                phase: Phase::Idle,
                is_leader: false,
                members: Vec::new(),
            })
            .collect();
        Sim {
            rng,
            g: Group::new("g", 0),
            c,
            now: 0,
            next_ticket: 0,
            clients,
            outstanding: HashMap::new(),
            pending_store: None,
        }
    }

    fn ticket(&mut self, client: usize) -> Ticket {
        self.next_ticket += 1;
        self.outstanding.insert(self.next_ticket, client);
        self.next_ticket
    }

    fn step(&mut self, allow_chaos: bool) {
        match self.rng.below(10) {
            0..=5 => {
                let i = self.rng.below(self.clients.len() as u64) as usize;
                self.act(i, allow_chaos);
            }
            6 | 7 => {
                self.now += self.rng.below(4_000) as i64;
                self.g.tick(self.now, &self.c);
            }
            _ => self.finish_store(allow_chaos),
        }
        self.deliver();
        self.check();
    }

    fn finish_store(&mut self, allow_chaos: bool) {
        if let Some(generation) = self.pending_store.take() {
            let failed = allow_chaos && self.rng.below(8) == 0;
            let result = if failed {
                Err(ErrorCode::CoordinatorNotAvailable)
            } else {
                Ok(())
            };
            self.g.sync_stored(generation, result, self.now, &self.c);
        }
    }

    fn act(&mut self, i: usize, allow_chaos: bool) {
        let chaos = allow_chaos && self.rng.below(12) == 0;
        let phase = self.clients[i].phase.clone();
        match phase {
            Phase::Crashed if !allow_chaos || self.rng.below(4) == 0 => {
                // Restart: the member id was in memory; a static member
                // comes back under its instance id.
                self.clients[i].member_id.clear();
                self.clients[i].phase = Phase::Idle;
            }
            Phase::Idle => {
                let t = self.ticket(i);
                self.clients[i].phase = Phase::Joining(t);
                let mut req = join_req(&self.clients[i].member_id, None);
                req.instance_id = self.clients[i].instance_id.clone();
                self.g.join(req, t, self.now, &self.c);
            }
            Phase::Member { .. } if chaos => {
                if self.rng.below(2) == 0 {
                    self.clients[i].phase = Phase::Crashed;
                } else {
                    let (id, inst) = (&self.clients[i].member_id, &self.clients[i].instance_id);
                    self.g.leave(id, inst.as_deref(), self.now, &self.c);
                    self.clients[i].member_id.clear();
                    self.clients[i].phase = Phase::Idle;
                }
            }
            Phase::Member { generation, .. } => {
                let (id, inst) = (&self.clients[i].member_id, &self.clients[i].instance_id);
                match self.g.heartbeat(id, inst.as_deref(), generation, self.now) {
                    ErrorCode::None => {}
                    ErrorCode::RebalanceInProgress => self.clients[i].phase = Phase::Idle,
                    _ => self.reset(i),
                }
            }
            // A client that dies with a request parked: the request
            // stays the group's to answer (to a closed connection) once
            // the member is fenced, expelled or its rebalance completes.
            Phase::Joining(_) | Phase::Syncing(..) if chaos => {
                self.clients[i].phase = Phase::Crashed;
            }
            _ => {}
        }
    }

    /// What clients do on UNKNOWN_MEMBER_ID, ILLEGAL_GENERATION or a
    /// fenced instance: forget the member id and join afresh.
    fn reset(&mut self, i: usize) {
        let c = &mut self.clients[i];
        c.member_id.clear();
        c.phase = Phase::Idle;
    }

    fn deliver(&mut self) {
        for done in self.g.take_completions() {
            let t = match &done {
                Completion::Join(t, _) | Completion::Sync(t, _) => *t,
            };
            let i = self
                .outstanding
                .remove(&t)
                .unwrap_or_else(|| panic!("ticket {t} answered twice or never asked"));
            if self.clients[i].phase == Phase::Crashed {
                continue;
            }
            match done {
                Completion::Join(t, r) => self.on_join(i, t, r),
                Completion::Sync(t, r) => self.on_sync(i, t, r),
            }
        }
    }

    fn on_join(&mut self, i: usize, t: Ticket, r: JoinResult) {
        if self.clients[i].phase != Phase::Joining(t) {
            return;
        }
        match r.error {
            ErrorCode::None => {
                let c = &mut self.clients[i];
                c.member_id = r.member_id.clone();
                c.is_leader = r.leader == r.member_id;
                c.members = r.members.iter().map(|m| m.member_id.clone()).collect();
                let st = self.ticket(i);
                self.clients[i].phase = Phase::Syncing(st, r.generation);
                let mut assignments = BTreeMap::new();
                if self.clients[i].is_leader {
                    let members = self.clients[i].members.clone();
                    for p in 0..PARTITIONS {
                        let m = &members[p as usize % members.len()];
                        let e: &mut Vec<u8> = assignments.entry(m.clone()).or_default();
                        e.push(p);
                    }
                }
                let req = SyncRequest {
                    member_id: r.member_id,
                    instance_id: self.clients[i].instance_id.clone(),
                    generation: r.generation,
                    assignments: assignments
                        .into_iter()
                        .map(|(k, v)| (k, Bytes::from(v)))
                        .collect(),
                    ..SyncRequest::default()
                };
                if let SyncStep::Store(_) = self.g.sync(req, st, self.now) {
                    self.pending_store = Some(r.generation);
                }
            }
            ErrorCode::MemberIdRequired => {
                self.clients[i].member_id = r.member_id;
                self.clients[i].phase = Phase::Idle;
            }
            _ => self.reset(i),
        }
    }

    fn on_sync(&mut self, i: usize, t: Ticket, r: SyncResult) {
        let Phase::Syncing(st, generation) = self.clients[i].phase.clone() else {
            return;
        };
        if st != t {
            return;
        }
        match r.error {
            ErrorCode::None => {
                self.clients[i].phase = Phase::Member {
                    generation,
                    owned: r.assignment.to_vec(),
                }
            }
            ErrorCode::RebalanceInProgress => self.clients[i].phase = Phase::Idle,
            _ => self.reset(i),
        }
    }

    /// No partition has two owners among members of the group's current
    /// generation, and the group's own bookkeeping is consistent.
    fn check(&self) {
        let mut owners = [0u8; PARTITIONS as usize];
        for c in &self.clients {
            if let Phase::Member { generation, owned } = &c.phase {
                if *generation == self.g.generation() && self.g.members.contains_key(&c.member_id) {
                    for p in owned {
                        owners[*p as usize] += 1;
                    }
                }
            }
        }
        assert!(
            owners.iter().all(|&n| n <= 1),
            "partition owned twice: {owners:?}"
        );
        if self.g.has_members() {
            let leader = self.g.leader().expect("a group with members has a leader");
            assert!(self.g.members.contains_key(leader));
        }
        if self.g.state() == GroupState::Stable {
            assert!(self.g.members.values().all(|m| m.awaiting_join.is_none()));
        }
        let parked = self
            .g
            .members
            .values()
            .filter(|m| m.awaiting_join.is_some() || m.awaiting_sync.is_some())
            .count();
        assert!(parked <= self.outstanding.len());
    }

    /// Every request a client sent was answered, and the group holds no
    /// parked request: with all clients settled as members, a ticket
    /// still outstanding is a request that would hang until its client
    /// gave up.
    fn check_all_answered(&self) {
        let mut unanswered: Vec<(Ticket, usize)> =
            self.outstanding.iter().map(|(t, i)| (*t, *i)).collect();
        unanswered.sort_unstable();
        assert!(
            unanswered.is_empty(),
            "tickets never answered (ticket, client): {unanswered:?}; clients {:?}",
            self.clients
        );
        let parked: Vec<&String> = self
            .g
            .members
            .iter()
            .filter(|(_, m)| m.awaiting_join.is_some() || m.awaiting_sync.is_some())
            .map(|(id, _)| id)
            .collect();
        assert!(
            parked.is_empty(),
            "members with parked requests: {parked:?}"
        );
    }

    /// With no more chaos, every live client ends as a member of one
    /// Stable generation owning all partitions between them, and the
    /// group holds no one else: a client that died with a request parked
    /// leaves a member behind until its session runs out.
    fn settle(&mut self) {
        for _ in 0..4_000 {
            self.step(false);
            self.finish_store(false);
            self.deliver();
            let all_members = self.clients.iter().all(|c| {
                matches!(&c.phase, Phase::Member { generation, .. } if *generation == self.g.generation())
            });
            let only_clients = self.g.members.len() == self.clients.len();
            if all_members && only_clients && self.g.state() == GroupState::Stable {
                let owned: usize = self
                    .clients
                    .iter()
                    .map(|c| match &c.phase {
                        Phase::Member { owned, .. } => owned.len(),
                        _ => 0,
                    })
                    .sum();
                assert_eq!(owned, PARTITIONS as usize);
                return;
            }
        }
        panic!(
            "group never settled: state {:?}, generation {}, clients {:?}",
            self.g.state(),
            self.g.generation(),
            self.clients
        );
    }
}

#[test]
fn seeded_simulation_keeps_ownership_exclusive_and_settles() {
    let seeds: u64 = std::env::var("GROUP_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000);
    for seed in 0..seeds {
        let run = std::panic::catch_unwind(|| {
            let mut sim = Sim::new(seed);
            for _ in 0..300 {
                sim.step(true);
            }
            sim.settle();
            sim.check_all_answered();
        });
        if run.is_err() {
            panic!("group simulation failed with seed {seed}");
        }
    }
}

/// TxnOffsetCommit before v3 names no member, and is accepted whatever
/// the group does; from v3 a named member must be in the current
/// generation, but a rebalance under way does not refuse it.
#[test]
fn txn_commits_check_a_named_member_only() {
    let c = cfg(0);
    let mut g = Group::new("g", 0);
    assert_eq!(g.check_txn_commit("", None, -1), Ok(()));
    let id = new_member(&mut g, 1, 0, &c);
    let _ = joined(&mut g, 2);
    assert_eq!(g.state(), GroupState::CompletingRebalance);
    assert_eq!(g.check_txn_commit(&id, None, 1), Ok(()));
    assert_eq!(g.check_txn_commit("", None, -1), Ok(()));
    sync_as(&mut g, &id, 1, 3, 0, &c);
    assert_eq!(g.check_txn_commit(&id, None, 1), Ok(()));
    assert_eq!(
        g.check_txn_commit(&id, None, 0),
        Err(ErrorCode::IllegalGeneration)
    );
    assert_eq!(
        g.check_txn_commit("nobody", None, 1),
        Err(ErrorCode::UnknownMemberId)
    );
    assert_eq!(
        g.check_txn_commit(&id, Some("unknown-instance"), 1),
        Err(ErrorCode::UnknownMemberId)
    );
    g.kill(5);
    assert_eq!(
        g.check_txn_commit("", None, -1),
        Err(ErrorCode::CoordinatorNotAvailable)
    );
}
