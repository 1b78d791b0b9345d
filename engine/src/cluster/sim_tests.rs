//! A seeded simulation of a whole cluster: three brokers, each a voter
//! of the controller quorum, and a topic of three partitions replicated
//! on all of them. It runs the code the brokers run, with time and the
//! network as values:
//!
//! - the active controller's sessions ([`Sessions`]), fencing, unfencing,
//!   AlterPartition, preferred elections and the automatic rebalance
//!   (the functions of `controller.rs`, on [`ClusterImage`]s);
//! - each broker's route to the controller ([`Route`]), its heartbeats
//!   and ISR proposals with their call timeouts, and its leader lease;
//! - every replica's [`PartitionReplica`], fed the metadata its own voter
//!   has applied, which may lag the committed log;
//! - Raft as a committed log with one leader per term: a leader that
//!   pauses loses its term after an election timeout, a new leader may
//!   not yet have applied everything committed before its term, and a
//!   deposed leader that wakes believes it leads until it hears of the
//!   new term (what it proposes meanwhile is never committed).
//!
//! Any node may *pause* (SIGSTOP, a long GC, a hung VM) for up to 20 s:
//! it does nothing, messages to it wait, and when it wakes its clock has
//! jumped and it works through what waited, stale requests included.
//!
//! After every step: every record acknowledged to an acks=all producer
//! is in the log of every replica the controller could elect (its
//! committed ISR), where it was written; no broker that ran for a whole
//! session is fenced; and no fenced broker serves a produce or a fetch as
//! leader. At the end, with every node
//! running, each partition has a leader again and every acknowledged
//! record is still there.

use super::controller::{
    alter_partition, broker_down, broker_up, place, rebalance, ControllerConfig,
};
use super::records::{registrations, ClusterImage, Record};
use super::route::{Outcome, Route};
use super::sessions::Sessions;
use crate::replication::controller::{IsrProposal, PartitionState};
use crate::replication::log::ReplicaLog;
use crate::replication::state::{
    Acks, EpochRequest, EpochResponse, Event, FetchRequest, FetchResponse, FollowerRequest,
    PartitionReplica, Ticket,
};
use crate::replication::{NodeId, ReplicationConfig};
use crate::sim_rng::{env_or, Rng};
use sluice_protocol::{ErrorCode, LeaderEpoch, Offset};
use std::collections::BTreeMap;
use std::time::Duration;

const NODES: [i32; 3] = [1, 2, 3];
const PARTITIONS: usize = 3;
/// Kafka's defaults, which the reported loss ran with.
const SESSION_MS: i64 = 9_000;
const HEARTBEAT_MS: i64 = 2_000;
/// How often a controller checks sessions (`watch_sessions`).
const WATCH_MS: i64 = 250;
/// How soon an unanswered heartbeat is sent again.
const RETRY_MS: i64 = 100;
/// The shortest Raft election timeout.
const ELECTION_TIMEOUT_MS: i64 = 2_000;

fn node_index(n: i32) -> usize {
    usize::try_from(n - 1).expect("node ids start at 1")
}

/// What travels between nodes.
#[derive(Clone, Debug)]
enum Msg {
    Heartbeat {
        from: i32,
        call: u64,
    },
    HeartbeatAnswer {
        call: u64,
        voter: i32,
        outcome: Outcome,
        index: u64,
    },
    Alter {
        from: i32,
        call: u64,
        partition: usize,
        proposal: IsrProposal,
    },
    AlterAnswer {
        call: u64,
        voter: i32,
        partition: usize,
        partition_epoch: i32,
        /// `None`: committed; `Some(ineligible)`: refused.
        refused: Option<bool>,
        outcome: Outcome,
    },
    Epoch(i32, usize, EpochRequest),
    EpochAnswer(usize, EpochResponse),
    Fetch(i32, usize, FetchRequest),
    FetchAnswer(usize, FetchResponse),
    Produce(usize, u32),
    /// A deposed Raft leader hears of the newer term.
    NewTerm,
}

/// A call a broker waits on, given up at `deadline`.
#[derive(Clone, Debug)]
struct Call {
    id: u64,
    voter: i32,
    deadline_ms: i64,
    /// For ISR proposals: the partition and proposal, to resend.
    alter: Option<(usize, IsrProposal)>,
}

struct Node {
    /// Paused (SIGSTOP) until then; 0 when running.
    paused_until_ms: i64,
    /// When it last woke from a pause.
    resumed_ms: i64,
    // The voter.
    image: ClusterImage,
    /// Believes it is the Raft leader.
    leading: bool,
    /// The Raft leader it knows of (raft-rs's `leader_id`).
    leader_view: Option<i32>,
    /// Took a pause this long when it last paused.
    paused_ms: i64,
    /// A heartbeat answer waiting for the metadata it names: (index,
    /// when the beat was sent, given up at).
    renewal: Option<(u64, i64, i64)>,
    /// Index of its term's first entry: its image is current from there.
    term_start: u64,
    sessions: Sessions,
    next_watch_ms: i64,
    next_rebalance_ms: i64,
    // The broker.
    route: Route,
    next_heartbeat_ms: i64,
    heartbeat: Option<Call>,
    alters: Vec<Call>,
    /// The broker may act as leader until then (its last heartbeat the
    /// controller answered, plus a session).
    lease_until_ms: i64,
    replicas: Vec<PartitionReplica>,
    next_tick_ms: i64,
}

/// Which of the rules that keep a frozen node from losing acknowledged
/// records are in force. The brokers run with all of them; a test turns
/// them off to show that the simulation finds the loss without them.
#[derive(Clone, Copy)]
struct Rules {
    /// A new controller acts only once its image holds everything
    /// committed before its term (`Quorum::is_current`).
    current_image: bool,
    /// A broker serves as leader only under the lease its last answered
    /// heartbeat gave it (`BrokerShared::leased`).
    lease: bool,
}

impl Rules {
    const ALL: Rules = Rules {
        current_image: true,
        lease: true,
    };
}

struct Sim {
    rules: Rules,
    rng: Rng,
    now: i64,
    config: ControllerConfig,
    topic: uuid::Uuid,
    /// The committed metadata log; entry `i` has Raft index `i + 1`.
    log: Vec<Vec<Record>>,
    /// Everything committed, applied.
    truth: ClusterImage,
    /// The Raft leader, and since when it has been paused (if it is).
    leader: i32,
    leader_gone_since: Option<i64>,
    election_timeout_ms: i64,
    nodes: Vec<Node>,
    /// (due, to, message).
    net: Vec<(i64, i32, Msg)>,
    next_call: u64,
    next_ticket: Ticket,
    /// Parked acks=all produces: ticket → (partition, epoch, first, last).
    parked: BTreeMap<(i32, Ticket), (usize, LeaderEpoch, Offset, Offset)>,
    acked: Vec<(usize, LeaderEpoch, Offset, Offset)>,
    chaos: bool,
}

impl Sim {
    fn new(seed: u64, rules: Rules) -> Sim {
        let mut rng = Rng::new(seed);
        let rconfig = ReplicationConfig {
            replica_lag_time_max_ms: [2_000, 10_000, 30_000][rng.below(3) as usize],
            min_insync_replicas: 2,
            fetch_records_max: 1 + rng.below(20) as u32,
            unclean_leader_election: false,
        };
        let config = ControllerConfig {
            session_timeout: Duration::from_millis(SESSION_MS as u64),
            unclean_default: false,
            topic_defaults: BTreeMap::new(),
            rebalance_interval: Some(Duration::from_millis(5_000 + rng.below(30_000))),
            imbalance_percentage: 0,
        };
        let topic = uuid::Uuid::from_u128(u128::from(rng.next()));
        let mut records = registrations(&NODES);
        records.push(Record::Topic {
            name: "t".into(),
            id: topic.to_string(),
            partitions: PARTITIONS as i32,
            config: BTreeMap::new(),
        });
        let live: Vec<NodeId> = NODES.iter().copied().map(NodeId).collect();
        for (i, replicas) in place(topic, PARTITIONS as i32, 3, &live)
            .into_iter()
            .enumerate()
        {
            records.push(Record::partition(
                topic,
                i as i32,
                &PartitionState::new(replicas),
            ));
        }
        let leader = NODES[rng.below(3) as usize];
        let rebalance_ms = config
            .rebalance_interval
            .map_or(i64::MAX, |d| d.as_millis() as i64);
        let nodes = NODES
            .iter()
            .map(|&id| {
                let mut sessions = Sessions::new(SESSION_MS);
                if id == leader {
                    sessions.start(0);
                }
                Node {
                    paused_until_ms: 0,
                    resumed_ms: 0,
                    image: ClusterImage::default(),
                    leading: id == leader,
                    leader_view: Some(leader),
                    paused_ms: 0,
                    renewal: None,
                    term_start: 1,
                    sessions,
                    next_watch_ms: 0,
                    next_rebalance_ms: rebalance_ms,
                    route: Route::new(NODES.iter().map(|n| *n as u64).collect()),
                    next_heartbeat_ms: HEARTBEAT_MS,
                    heartbeat: None,
                    alters: Vec::new(),
                    lease_until_ms: SESSION_MS,
                    next_tick_ms: 0,
                    replicas: (0..PARTITIONS)
                        .map(|_| PartitionReplica::new(NodeId(id), rconfig, ReplicaLog::new()))
                        .collect(),
                }
            })
            .collect();
        let mut sim = Sim {
            rules,
            rng,
            now: 0,
            config,
            topic,
            log: Vec::new(),
            truth: ClusterImage::default(),
            leader,
            leader_gone_since: None,
            election_timeout_ms: 2_000,
            nodes,
            net: Vec::new(),
            next_call: 0,
            next_ticket: 0,
            parked: BTreeMap::new(),
            acked: Vec::new(),
            chaos: true,
        };
        sim.append(records);
        for n in NODES {
            sim.sync(n, usize::MAX);
        }
        sim
    }

    fn node(&mut self, n: i32) -> &mut Node {
        &mut self.nodes[node_index(n)]
    }

    fn running(&self, n: i32) -> bool {
        self.nodes[node_index(n)].paused_until_ms <= self.now
    }

    fn send(&mut self, to: i32, msg: Msg) {
        let due = self.now + self.rng.below(50) as i64;
        self.net.push((due, to, msg));
    }

    fn append(&mut self, records: Vec<Record>) {
        self.log.push(records);
        let index = self.log.len() as u64;
        self.truth
            .apply(index, self.log.last().expect("just pushed"));
    }

    /// Node `n` applies up to `count` more committed entries, and its
    /// replicas take the partition states they now see.
    fn sync(&mut self, n: i32, count: usize) {
        let now = self.now;
        let from = self.node(n).image.applied as usize;
        let upto = self.log.len().min(from.saturating_add(count));
        if upto == from {
            return;
        }
        for i in from..upto {
            let records = self.log[i].clone();
            self.node(n).image.apply(i as u64 + 1, &records);
        }
        let states: Vec<PartitionState> = self.node(n).image.topics["t"].partitions.clone();
        for (p, s) in states.into_iter().enumerate() {
            self.node(n).replicas[p].apply_state(s, now);
        }
        self.drain(n);
        self.renew(n);
    }

    /// Proposes `records` from node `n`, which believes it leads: only
    /// the Raft leader of the current term, with a majority running,
    /// commits (and applies everything up to it, as raft-rs does).
    fn propose(&mut self, n: i32, records: Vec<Record>) -> bool {
        let majority = NODES.iter().filter(|m| self.running(**m)).count() >= 2;
        if n != self.leader || !majority {
            return false;
        }
        if !records.is_empty() {
            self.append(records);
        }
        self.sync(n, usize::MAX);
        true
    }

    // -----------------------------------------------------------------
    // Raft.

    fn raft(&mut self) {
        let leader = self.leader;
        if self.running(leader) && self.node(leader).leading {
            self.leader_gone_since = None;
            return;
        }
        let since = *self.leader_gone_since.get_or_insert(self.now);
        if self.now - since < self.election_timeout_ms {
            return;
        }
        let running: Vec<i32> = NODES.iter().copied().filter(|n| self.running(*n)).collect();
        if running.len() < 2 {
            return;
        }
        let candidates: Vec<i32> = running
            .iter()
            .copied()
            .filter(|n| *n != leader || self.running(leader))
            .collect();
        let next = candidates[self.rng.below(candidates.len() as u64) as usize];
        self.election_timeout_ms = 2_000 + self.rng.below(2_000) as i64;
        self.leader = next;
        self.leader_gone_since = None;
        // The new term's first (empty) entry.
        self.log.push(Vec::new());
        let start = self.log.len() as u64;
        self.truth.applied = start;
        let node = self.node(next);
        node.leading = true;
        node.term_start = start;
        for n in NODES {
            if running.contains(&n) {
                self.node(n).leader_view = Some(next);
            } else {
                // It hears of the new term once it runs again.
                self.send(n, Msg::NewTerm);
            }
        }
    }

    /// Whether node `n`'s controller acts: it leads (as far as it knows)
    /// and its image holds everything committed before its term.
    fn acting(&mut self, n: i32) -> bool {
        let node = self.node(n);
        node.leading && (node.image.applied >= node.term_start || !self.rules.current_image)
    }

    /// The controller's periodic work: sessions and the rebalance.
    fn watch(&mut self, n: i32) {
        let now = self.now;
        if now < self.node(n).next_watch_ms {
            return;
        }
        self.node(n).next_watch_ms = now + WATCH_MS;
        let acting = self.acting(n);
        let node = self.node(n);
        match (acting, node.sessions.acting()) {
            (true, false) => node.sessions.start(now),
            (false, true) => node.sessions.stop(),
            _ => {}
        }
        if !acting {
            return;
        }
        let node = &self.nodes[node_index(n)];
        let expired = node.sessions.expired(&node.image, now);
        for b in expired {
            let image = self.node(n).image.clone();
            if image.brokers[&b].fenced {
                continue;
            }
            let awake_ms = now - self.node(b).resumed_ms;
            assert!(
                n != self.leader || awake_ms <= SESSION_MS + HEARTBEAT_MS,
                "controller {n} fences broker {b}, which has been running for {awake_ms} ms"
            );
            let records = broker_down(&image, b, &self.config);
            self.propose(n, records);
        }
        if now >= self.node(n).next_rebalance_ms {
            let interval = self.config.rebalance_interval.expect("set").as_millis() as i64;
            self.node(n).next_rebalance_ms = now + interval;
            let percentage = self.config.imbalance_percentage;
            let records = rebalance(&self.node(n).image, percentage);
            self.propose(n, records);
        }
    }

    /// What voter `v` answers a heartbeat from `b`, with the index of
    /// its image when it answers as the controller.
    fn handle_heartbeat(&mut self, v: i32, b: i32) -> (Outcome, u64) {
        if !self.acting(v) {
            let view = self.node(v).leader_view.map(|l| l as u64);
            return (Outcome::NotController(view), 0);
        }
        let now = self.now;
        self.node(v).sessions.heartbeat(b, now);
        let image = self.node(v).image.clone();
        if !image.brokers[&b].fenced {
            return (Outcome::Answered, image.applied);
        }
        let records = broker_up(&image, b, &self.config);
        if self.propose(v, records) {
            (Outcome::Answered, self.node(v).image.applied)
        } else {
            (Outcome::NotController(None), 0)
        }
    }

    /// What voter `v` answers an ISR proposal: committed, refused, or
    /// not the controller.
    fn handle_alter(
        &mut self,
        v: i32,
        p: usize,
        proposal: &IsrProposal,
    ) -> (Option<bool>, Outcome) {
        if !self.acting(v) {
            let view = self.node(v).leader_view.map(|l| l as u64);
            return (None, Outcome::NotController(view));
        }
        let image = self.node(v).image.clone();
        match alter_partition(&image, &self.topic.to_string(), p as i32, proposal) {
            Ok(records) => {
                if self.propose(v, records) {
                    (None, Outcome::Answered)
                } else {
                    (None, Outcome::NotController(None))
                }
            }
            Err((code, _)) => (
                Some(code == ErrorCode::IneligibleReplica),
                Outcome::Answered,
            ),
        }
    }

    // -----------------------------------------------------------------
    // Brokers.

    /// A broker's heartbeat loop: one call at a time, every interval, at
    /// once again after one that went unanswered.
    fn heartbeat(&mut self, b: i32) {
        let now = self.now;
        if let Some((_, _, until)) = self.node(b).renewal {
            if now >= until {
                self.node(b).renewal = None;
            }
        }
        if let Some(call) = self.node(b).heartbeat.clone() {
            if now >= call.deadline_ms {
                let node = self.node(b);
                node.heartbeat = None;
                node.route
                    .learn(call.voter as u64, Outcome::Unreachable, true);
                node.next_heartbeat_ms = now + RETRY_MS;
            }
            return;
        }
        if now < self.node(b).next_heartbeat_ms || self.node(b).renewal.is_some() {
            return;
        }
        let own = self.node(b).leader_view.map(|l| l as u64);
        let voter = self.node(b).route.target(own) as i32;
        if voter == b {
            let (outcome, index) = self.handle_heartbeat(b, b);
            self.heartbeat_answered(b, voter, outcome, index, now);
            return;
        }
        self.next_call += 1;
        let call = Call {
            id: self.next_call,
            voter,
            deadline_ms: now + heartbeat_timeout_ms(),
            alter: None,
        };
        self.node(b).heartbeat = Some(call);
        self.send(
            voter,
            Msg::Heartbeat {
                from: b,
                call: self.next_call,
            },
        );
    }

    fn heartbeat_answered(
        &mut self,
        b: i32,
        voter: i32,
        outcome: Outcome,
        index: u64,
        sent_ms: i64,
    ) {
        let now = self.now;
        let node = self.node(b);
        node.route.learn(voter as u64, outcome, true);
        node.heartbeat = None;
        node.next_heartbeat_ms = now + RETRY_MS;
        if outcome == Outcome::Answered {
            node.next_heartbeat_ms = now + HEARTBEAT_MS;
            node.renewal = Some((index, sent_ms, now + heartbeat_timeout_ms()));
            self.renew(b);
        }
    }

    /// A heartbeat answer renews the lease once the broker's metadata
    /// has reached the index it named.
    fn renew(&mut self, b: i32) {
        let node = self.node(b);
        if let Some((index, sent, _)) = node.renewal {
            if node.image.applied >= index {
                node.lease_until_ms = node.lease_until_ms.max(sent + SESSION_MS);
                node.renewal = None;
            }
        }
    }

    fn propose_isr(&mut self, b: i32, p: usize, proposal: IsrProposal) {
        let own = self.node(b).leader_view.map(|l| l as u64);
        let voter = self.node(b).route.target(own) as i32;
        if voter == b {
            let (refused, outcome) = self.handle_alter(b, p, &proposal);
            self.alter_answered(b, voter, p, proposal, refused, outcome);
            return;
        }
        self.next_call += 1;
        let call = Call {
            id: self.next_call,
            voter,
            deadline_ms: self.now + call_timeout_ms(),
            alter: Some((p, proposal.clone())),
        };
        self.node(b).alters.push(call);
        self.send(
            voter,
            Msg::Alter {
                from: b,
                call: self.next_call,
                partition: p,
                proposal,
            },
        );
    }

    fn alter_answered(
        &mut self,
        b: i32,
        voter: i32,
        p: usize,
        proposal: IsrProposal,
        refused: Option<bool>,
        outcome: Outcome,
    ) {
        self.node(b).route.learn(voter as u64, outcome, true);
        match (outcome, refused) {
            (Outcome::Answered, Some(ineligible)) => {
                self.node(b).replicas[p].proposal_refused(proposal.partition_epoch, ineligible)
            }
            (Outcome::Answered, None) => {}
            // Another voter next; the leader resends in any case.
            _ => {
                if self.rng.one_in(2) {
                    self.propose_isr(b, p, proposal);
                }
            }
        }
        self.drain(b);
    }

    /// Calls whose time is up fail.
    fn expire_alters(&mut self, b: i32) {
        let now = self.now;
        let (late, kept): (Vec<Call>, Vec<Call>) = std::mem::take(&mut self.node(b).alters)
            .into_iter()
            .partition(|c| now >= c.deadline_ms);
        self.node(b).alters = kept;
        for call in late {
            self.node(b)
                .route
                .learn(call.voter as u64, Outcome::Unreachable, true);
        }
    }

    /// Whether broker `b` may act as a partition leader now.
    fn leased(&mut self, b: i32) -> bool {
        let now = self.now;
        now < self.node(b).lease_until_ms || !self.rules.lease
    }

    /// A broker the controller has fenced serves nothing as leader: by
    /// the time it is fenced its lease has run out.
    fn check_not_fenced(&self, b: i32, what: &str) {
        assert!(
            !self.truth.brokers[&b].fenced || !self.rules.lease,
            "broker {b}, fenced, serves a {what} as leader"
        );
    }

    /// Proposals and acks from broker `b`'s replicas.
    fn drain(&mut self, b: i32) {
        for p in 0..PARTITIONS {
            for e in self.node(b).replicas[p].take_events() {
                match e {
                    Event::ProposeIsr(proposal) => self.propose_isr(b, p, proposal),
                    e @ Event::RefusedTruncation { .. } => {
                        panic!("broker {b}, partition {p}: asked to cut committed records: {e:?}")
                    }
                    Event::Produced { ticket, result } => {
                        let batch = self.parked.remove(&(b, ticket)).expect("parked");
                        if let Ok(last) = result {
                            assert_eq!(last, batch.3, "acknowledged the wrong offset");
                            self.check_acked(batch);
                            self.acked.push(batch);
                        }
                    }
                }
            }
        }
    }

    fn produce(&mut self) {
        let p = self.rng.below(PARTITIONS as u64) as usize;
        // The client's metadata comes from some broker, maybe stale.
        let source = NODES[self.rng.below(3) as usize];
        let Some(leader) = self.node(source).image.topics["t"].partitions[p].leader else {
            return;
        };
        let count = 1 + self.rng.below(5) as u32;
        self.send(leader.0, Msg::Produce(p, count));
    }

    fn on_produce(&mut self, b: i32, p: usize, count: u32) {
        if !self.leased(b) {
            return;
        }
        self.next_ticket += 1;
        let ticket = self.next_ticket;
        match self.node(b).replicas[p].produce(Acks::All, count, ticket) {
            Ok(a) => {
                self.check_not_fenced(b, "produce");
                assert!(a.parked);
                self.parked
                    .insert((b, ticket), (p, a.epoch, a.base_offset, a.last_offset));
            }
            Err(e) => assert!(
                matches!(
                    e,
                    ErrorCode::NotEnoughReplicas | ErrorCode::NotLeaderOrFollower
                ),
                "produce failed with {e:?}"
            ),
        }
        self.drain(b);
    }

    fn follower_sends(&mut self, b: i32) {
        let p = self.rng.below(PARTITIONS as u64) as usize;
        let busy = self.net.iter().any(|(_, _, m)| match m {
            Msg::Epoch(f, q, _) | Msg::Fetch(f, q, _) => *f == b && *q == p,
            _ => false,
        }) || self.net.iter().any(|(_, to, m)| {
            *to == b && matches!(m, Msg::EpochAnswer(q, _) | Msg::FetchAnswer(q, _) if *q == p)
        });
        if busy {
            return;
        }
        match self.node(b).replicas[p].next_request() {
            Some(FollowerRequest::Epoch { leader, request }) => {
                self.send(leader.0, Msg::Epoch(b, p, request))
            }
            Some(FollowerRequest::Fetch { leader, request }) => {
                self.send(leader.0, Msg::Fetch(b, p, request))
            }
            None => {}
        }
    }

    fn deliver(&mut self) {
        let now = self.now;
        let due: Vec<usize> = (0..self.net.len())
            .filter(|i| self.net[*i].0 <= now && self.running(self.net[*i].1))
            .collect();
        if due.is_empty() {
            self.now += 10;
            return;
        }
        let pick = due[self.rng.below(due.len() as u64) as usize];
        let (_, to, msg) = self.net.swap_remove(pick);
        self.receive(to, msg);
    }

    fn receive(&mut self, to: i32, msg: Msg) {
        let now = self.now;
        match msg {
            Msg::Heartbeat { from, call } => {
                let (outcome, index) = self.handle_heartbeat(to, from);
                self.send(
                    from,
                    Msg::HeartbeatAnswer {
                        call,
                        voter: to,
                        outcome,
                        index,
                    },
                );
            }
            Msg::HeartbeatAnswer {
                call,
                voter,
                outcome,
                index,
            } => {
                let waiting = self.node(to).heartbeat.clone();
                if let Some(c) = waiting.filter(|c| c.id == call && now < c.deadline_ms) {
                    let sent = c.deadline_ms - heartbeat_timeout_ms();
                    self.heartbeat_answered(to, voter, outcome, index, sent);
                }
            }
            Msg::Alter {
                from,
                call,
                partition,
                proposal,
            } => {
                let (refused, outcome) = self.handle_alter(to, partition, &proposal);
                self.send(
                    from,
                    Msg::AlterAnswer {
                        call,
                        voter: to,
                        partition,
                        partition_epoch: proposal.partition_epoch,
                        refused,
                        outcome,
                    },
                );
            }
            Msg::AlterAnswer {
                call,
                voter,
                partition,
                partition_epoch,
                refused,
                outcome,
            } => {
                let node = self.node(to);
                let Some(i) = node.alters.iter().position(|c| c.id == call) else {
                    return;
                };
                let c = node.alters.swap_remove(i);
                let (_, proposal) = c.alter.expect("an ISR call");
                assert_eq!(proposal.partition_epoch, partition_epoch);
                self.alter_answered(to, voter, partition, proposal, refused, outcome);
            }
            Msg::Epoch(from, p, req) => {
                let leased = self.leased(to);
                let mut resp = self.node(to).replicas[p].handle_epoch_request(req);
                if !leased {
                    resp.result = Err(ErrorCode::NotLeaderOrFollower);
                }
                self.send(from, Msg::EpochAnswer(p, resp));
            }
            Msg::EpochAnswer(p, resp) => {
                self.node(to).replicas[p].handle_epoch_response(resp);
                self.drain(to);
            }
            Msg::Fetch(from, p, req) => {
                let resp = if self.leased(to) {
                    let resp = self.node(to).replicas[p].handle_fetch(req, now);
                    if resp.result.is_ok() {
                        self.check_not_fenced(to, "fetch");
                    }
                    resp
                } else {
                    FetchResponse {
                        leader_epoch: req.leader_epoch,
                        fetch_offset: req.fetch_offset,
                        result: Err(ErrorCode::NotLeaderOrFollower),
                    }
                };
                self.drain(to);
                self.send(from, Msg::FetchAnswer(p, resp));
            }
            Msg::FetchAnswer(p, resp) => {
                self.node(to).replicas[p].handle_fetch_response(resp);
                self.drain(to);
            }
            Msg::Produce(p, count) => self.on_produce(to, p, count),
            Msg::NewTerm if to == self.leader => self.node(to).leader_view = Some(to),
            Msg::NewTerm => {
                let leader = self.leader;
                let node = self.node(to);
                node.leading = false;
                node.leader_view = Some(leader);
                node.sessions.stop();
            }
        }
    }

    fn tick_replicas(&mut self, b: i32) {
        let now = self.now;
        for p in 0..PARTITIONS {
            self.node(b).replicas[p].tick(now);
        }
        self.drain(b);
    }

    /// Timers fire on every running node; then one node does one thing,
    /// or time passes, or a fault happens.
    fn step(&mut self) {
        self.raft();
        for n in NODES {
            if self.running(n) {
                self.timers(n);
            }
        }
        let n = NODES[self.rng.below(3) as usize];
        let running = self.running(n);
        match self.rng.below(20) {
            0..=3 if self.chaos => self.produce(),
            4..=7 if running => self.follower_sends(n),
            8..=12 => self.deliver(),
            13 | 14 if running => {
                let count = 1 + self.rng.below(3) as usize;
                self.sync(n, count);
            }
            15..=17 => self.now += self.rng.below(200) as i64,
            18 if running && self.chaos && self.rng.one_in(8) => self.pause(n),
            19 if running && self.chaos && self.rng.one_in(8) => self.elect_preferred(n),
            _ => {}
        }
        self.check();
    }

    /// What node `n` does when its timers are due.
    fn timers(&mut self, n: i32) {
        let now = self.now;
        // A running node works through what waited more than half a
        // second: the network reorders, but never stalls one that runs.
        while let Some(i) = self
            .net
            .iter()
            .position(|(due, to, _)| *to == n && *due + 500 < now)
        {
            let (_, to, msg) = self.net.swap_remove(i);
            self.receive(to, msg);
        }
        let node = self.node(n);
        if node.paused_ms > 0 && now >= node.resumed_ms {
            // Awake again: a leader away for an election timeout steps
            // down (`Quorum::run`).
            if node.paused_ms >= ELECTION_TIMEOUT_MS && node.leading {
                node.leading = false;
                node.leader_view = None;
                node.sessions.stop();
            }
            node.paused_ms = 0;
        }
        self.expire_alters(n);
        self.heartbeat(n);
        self.watch(n);
        let now = self.now;
        if now >= self.node(n).next_tick_ms {
            self.node(n).next_tick_ms = now + 500;
            self.tick_replicas(n);
        }
    }

    /// Pauses `n` for up to 20 s, while every other node runs.
    fn pause(&mut self, n: i32) {
        if NODES.iter().any(|m| !self.running(*m)) {
            return;
        }
        let length = 500 + self.rng.below(20_000) as i64;
        let until = self.now + length;
        let node = self.node(n);
        node.paused_ms = length;
        node.paused_until_ms = until;
        node.resumed_ms = node.paused_until_ms;
    }

    /// An operator's ElectLeaders (preferred) through broker `n`.
    fn elect_preferred(&mut self, n: i32) {
        let own = self.node(n).leader_view.map(|l| l as u64);
        let v = self.node(n).route.target(own) as i32;
        if !self.running(v) || !self.acting(v) {
            return;
        }
        let image = self.node(v).image.clone();
        let live = image.live_brokers();
        let p = self.rng.below(PARTITIONS as u64) as usize;
        if let Ok(next) = image.topics["t"].partitions[p].elect_preferred(&live) {
            self.propose(v, vec![Record::partition(self.topic, p as i32, &next)]);
        }
    }

    /// An acknowledged batch must be committed: in the log of every
    /// replica the controller could elect.
    fn check_acked(&self, (p, epoch, first, last): (usize, LeaderEpoch, Offset, Offset)) {
        let state = &self.truth.topics["t"].partitions[p];
        for r in &state.isr {
            let log = self.nodes[node_index(r.0)].replicas[p].log();
            assert!(
                log.log_end() > last
                    && log.epoch_at(first) == Some(epoch)
                    && log.epoch_at(last) == Some(epoch),
                "partition {p}: acknowledged offsets {first}..={last} (epoch {epoch:?}) are not \
                 on replica {r}, which the controller may elect (ISR {:?}); its log: {:?}",
                state.isr,
                log
            );
        }
    }

    /// Per partition, the newest acknowledged batch: logs change only at
    /// their ends, so a replica that lost an older one lost it too (the
    /// whole list is checked when the run ends).
    fn check(&self) {
        for p in 0..PARTITIONS {
            if let Some(b) = self.acked.iter().rev().find(|b| b.0 == p) {
                self.check_acked(*b);
            }
        }
    }

    /// Every node runs again and no fault happens: each partition gets a
    /// leader that holds every acknowledged record.
    fn settle(&mut self) {
        self.chaos = false;
        for n in NODES {
            let now = self.now;
            let node = self.node(n);
            if node.paused_until_ms > now {
                node.paused_until_ms = now;
                node.resumed_ms = now;
            }
        }
        for _ in 0..200_000 {
            self.step();
            if self.settled() {
                for batch in &self.acked {
                    self.check_acked(*batch);
                }
                return;
            }
        }
        for n in &self.nodes {
            eprintln!(
                "leading {} applied {}/{} route {:?} hb {:?} alters {:?} lease {} replicas {:?}",
                n.leading,
                n.image.applied,
                self.log.len(),
                n.route,
                n.heartbeat,
                n.alters,
                n.lease_until_ms,
                n.replicas
            );
        }
        panic!(
            "the cluster never settled at {} (leader {}): {:?} brokers {:?}",
            self.now, self.leader, self.truth.topics["t"].partitions, self.truth.brokers
        );
    }

    fn settled(&self) -> bool {
        self.truth.topics["t"]
            .partitions
            .iter()
            .enumerate()
            .all(|(p, s)| {
                let Some(l) = s.leader else { return false };
                let replica = &self.nodes[node_index(l.0)].replicas[p];
                replica.is_leader_in(s.leader_epoch)
                    && s.isr.len() == NODES.len()
                    && replica.log().high_watermark() == replica.log().log_end()
            })
    }
}

/// How long a broker waits for the controller's answer to a change.
fn call_timeout_ms() -> i64 {
    super::rpc::CALL_TIMEOUT.as_millis() as i64
}

/// How long a broker waits for a heartbeat's answer.
fn heartbeat_timeout_ms() -> i64 {
    let session = Duration::from_millis(SESSION_MS as u64);
    let interval = Duration::from_millis(HEARTBEAT_MS as u64);
    super::node::heartbeat_timeout(session, interval).as_millis() as i64
}

/// Runs one seed to the end; the panic's message if it failed.
fn run_seed(seed: u64, rules: Rules) -> Result<(), String> {
    std::panic::catch_unwind(|| {
        let mut sim = Sim::new(seed, rules);
        for _ in 0..8_000 {
            sim.step();
        }
        sim.settle();
    })
    .map_err(|e| {
        e.downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    })
}

#[test]
fn seeded_cluster_simulation_never_loses_an_acknowledged_record() {
    let first = env_or("CLUSTER_SIM_FIRST_SEED", 0);
    for seed in first..first + env_or("CLUSTER_SIM_SEEDS", 300) {
        if let Err(message) = run_seed(seed, Rules::ALL) {
            panic!("cluster simulation failed with seed {seed}: {message}");
        }
    }
}

/// Without the current-image and lease rules, the simulation finds the
/// loss a frozen controller caused: a controller that has just taken
/// over acts on an image that misses the latest ISR changes, moves
/// leadership back to its preferred replica, which had been dropped from
/// the ISR for lagging, and that replica's log lacks acknowledged
/// records (seed 2,554 when this was written; the search goes on past it
/// should the simulation change).
#[test]
fn without_its_rules_the_cluster_simulation_finds_the_frozen_controller_loss() {
    let ungated = Rules {
        current_image: false,
        lease: false,
    };
    let found = (2_550..12_550)
        .find(|seed| run_seed(*seed, ungated).is_err_and(|m| m.contains("acknowledged offsets")));
    let seed = found.expect("no seed lost an acknowledged record");
    eprintln!("without the rules, seed {seed} lost an acknowledged record");
}
