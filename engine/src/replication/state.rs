//! One broker's replica of one partition, as a plain state machine: no
//! I/O, no clock. The controller's decisions arrive as
//! [`PartitionState`]s; Fetch and OffsetForLeaderEpoch requests come in
//! as values and their answers go out as values; acks=all completions
//! and ISR proposals collect as [`Event`]s for the shell to take.
//!
//! ```text
//!                 state names me leader
//!   Offline ─────────────────────────────▶ Leader ◀─┐
//!     │  state names another leader         │      │ newer epoch names me
//!     ▼                                     ▼      │
//!   Follower: Truncating ──epoch answer──▶ Fetching ┘
//!               ▲  (KIP-279: another round)  │
//!               └────────────────────────────┘ newer epoch, other leader
//! ```
//!
//! The leader keeps, per follower, the LEO its last Fetch reported and
//! when it last caught up; from those come the high watermark, the
//! acks=all completions and the ISR proposals. It keeps at most one
//! proposal in flight, and while one is, the HW is the minimum over the
//! committed ISR *and* the proposed one (Kafka's "maximal ISR").

use super::controller::{IsrProposal, PartitionState};
use super::log::{ReplicaLog, Run};
use super::{NodeId, ReplicationConfig};
use sluice_protocol::{ErrorCode, LeaderEpoch, Offset};
use std::collections::BTreeMap;

/// How long a leader waits for the controller's answer to an ISR
/// proposal before sending it again (the request or answer was lost).
pub const PROPOSAL_RESEND_MS: i64 = 5_000;

/// Names a parked acks=all produce, chosen by the caller.
pub type Ticket = u64;

/// The acknowledgement a producer asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acks {
    /// acks=1: answered once the leader has appended.
    Leader,
    /// acks=all (-1): answered once the high watermark passes the batch.
    All,
}

/// What the shell must act on, in the order it happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A parked acks=all produce is answered.
    Produced {
        ticket: Ticket,
        result: Result<Offset, ErrorCode>,
    },
    /// Send this ISR change to the controller.
    ProposeIsr(IsrProposal),
    /// A follower was told to cut its log below its high watermark, which
    /// only an unclean election may ask for, and kept it.
    RefusedTruncation {
        offset: Offset,
        high_watermark: Offset,
    },
}

/// Where a produce's records went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    pub base_offset: Offset,
    pub last_offset: Offset,
    pub epoch: LeaderEpoch,
    /// True when the answer is an [`Event::Produced`] still to come.
    pub parked: bool,
}

/// A follower's Fetch (the parts replication reads).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FetchRequest {
    pub replica: NodeId,
    /// The leader epoch the follower follows, for fencing.
    pub leader_epoch: LeaderEpoch,
    /// The next offset it wants: its log end offset.
    pub fetch_offset: Offset,
    /// Where its log starts, for the leader's low watermark.
    pub log_start: Offset,
}

/// The leader's answer to a [`FetchRequest`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchResponse {
    pub leader_epoch: LeaderEpoch,
    pub fetch_offset: Offset,
    pub result: Result<FetchData, ErrorCode>,
}

/// Records and the leader's high watermark.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchData {
    pub runs: Vec<Run>,
    pub high_watermark: Offset,
}

/// OffsetForLeaderEpoch from a follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochRequest {
    /// The leader epoch the follower follows, for fencing.
    pub leader_epoch: LeaderEpoch,
    /// The follower's newest epoch, whose end it asks for.
    pub requested_epoch: LeaderEpoch,
}

/// The leader's answer to an [`EpochRequest`]: `Ok(None)` is UNDEFINED.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochResponse {
    pub leader_epoch: LeaderEpoch,
    pub requested_epoch: LeaderEpoch,
    pub result: Result<Option<(LeaderEpoch, Offset)>, ErrorCode>,
}

/// What a follower sends next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FollowerRequest {
    Epoch {
        leader: NodeId,
        request: EpochRequest,
    },
    Fetch {
        leader: NodeId,
        request: FetchRequest,
    },
}

/// The leader's view of one follower, reset at every leader change.
#[derive(Clone, Copy, Debug)]
struct Progress {
    /// The follower's LEO from its last Fetch in this epoch.
    log_end: Option<Offset>,
    /// Where its log started at that Fetch.
    log_start: Option<Offset>,
    last_caught_up_ms: i64,
    last_fetch_ms: i64,
    /// The leader's LEO when that Fetch arrived.
    last_fetch_leader_end: Offset,
}

impl Progress {
    /// A follower's LEO is unknown until it fetches in this epoch; an
    /// ISR member is presumed caught up now, as Kafka does, so it has
    /// replica.lag.time.max.ms to show up.
    fn presumed(now_ms: i64, leader_end: Offset) -> Progress {
        Progress {
            log_end: None,
            log_start: None,
            last_caught_up_ms: now_ms,
            last_fetch_ms: now_ms,
            last_fetch_leader_end: leader_end,
        }
    }
}

#[derive(Debug)]
struct LeaderState {
    isr: Vec<NodeId>,
    pending: Option<IsrProposal>,
    /// When the pending proposal was last sent, to resend a lost one.
    pending_sent_ms: i64,
    followers: BTreeMap<NodeId, Progress>,
    /// Where this epoch's records start: a follower below it has not yet
    /// fetched in this epoch and cannot join the ISR.
    epoch_start: Offset,
    /// Parked acks=all produces with their last offsets, oldest first.
    waiting: Vec<(Ticket, Offset)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FollowerPhase {
    /// Waiting on OffsetForLeaderEpoch before fetching.
    Truncating,
    Fetching,
}

#[derive(Debug)]
enum Role {
    /// No leader known yet, or the partition is offline.
    Offline,
    Leader(LeaderState),
    Follower {
        leader: NodeId,
        phase: FollowerPhase,
    },
}

/// One broker's replica of one partition.
#[derive(Debug)]
pub struct PartitionReplica {
    node: NodeId,
    config: ReplicationConfig,
    log: ReplicaLog,
    /// The newest state from the controller this replica has applied.
    state: Option<PartitionState>,
    role: Role,
    events: Vec<Event>,
}

impl PartitionReplica {
    /// A replica over `log` (empty, or as it survived a restart), waiting
    /// to hear from the controller.
    pub fn new(node: NodeId, config: ReplicationConfig, log: ReplicaLog) -> PartitionReplica {
        assert!(config.min_insync_replicas >= 1, "min.insync.replicas >= 1");
        assert!(config.fetch_records_max >= 1, "a fetch must carry a record");
        PartitionReplica {
            node,
            config,
            log,
            state: None,
            role: Role::Offline,
            events: Vec::new(),
        }
    }

    pub fn node(&self) -> NodeId {
        self.node
    }

    pub fn log(&self) -> &ReplicaLog {
        &self.log
    }

    /// True when this replica leads in `epoch`.
    pub fn is_leader_in(&self, epoch: LeaderEpoch) -> bool {
        matches!(self.role, Role::Leader(_)) && self.leader_epoch() == Some(epoch)
    }

    /// The leader epoch of the newest state applied.
    pub fn leader_epoch(&self) -> Option<LeaderEpoch> {
        self.state.as_ref().map(|s| s.leader_epoch)
    }

    /// The committed ISR, when leading.
    pub fn isr(&self) -> Option<&[NodeId]> {
        match &self.role {
            Role::Leader(l) => Some(&l.isr),
            _ => None,
        }
    }

    /// Events since the last call, oldest first.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// Applies a state from the controller. Older states, and states no
    /// newer than the one applied, are ignored: they can arrive late.
    pub fn apply_state(&mut self, state: PartitionState, now_ms: i64) {
        if let Some(cur) = &self.state {
            let newer = (state.leader_epoch, state.partition_epoch)
                > (cur.leader_epoch, cur.partition_epoch);
            if !newer {
                return;
            }
        }
        let same_epoch = self.leader_epoch() == Some(state.leader_epoch);
        let next = state.clone();
        self.state = Some(state);
        match (&mut self.role, next.leader) {
            (Role::Leader(l), Some(n)) if same_epoch && n == self.node => {
                l.isr = next.isr;
                l.pending = None;
                // A reassignment adds and removes followers in the epoch.
                let leo = self.log.log_end();
                l.followers.retain(|f, _| next.replicas.contains(f));
                for f in next.replicas.iter().filter(|f| **f != self.node) {
                    l.followers
                        .entry(*f)
                        .or_insert_with(|| Progress::presumed(now_ms, leo));
                }
                self.advance_high_watermark();
            }
            (Role::Follower { leader, .. }, Some(n)) if same_epoch && *leader == n => {}
            (_, Some(n)) if n == self.node => self.become_leader(next, now_ms),
            (_, Some(n)) => self.become_follower(n),
            (_, None) => self.step_down(Role::Offline),
        }
    }

    /// The replica is being deleted (its topic went, or a reassignment
    /// moved it away): parked produces get NOT_LEADER_OR_FOLLOWER.
    pub fn retire(&mut self) {
        self.step_down(Role::Offline);
    }

    /// Answers every parked produce and leaves the leader role.
    fn step_down(&mut self, role: Role) {
        if let Role::Leader(l) = std::mem::replace(&mut self.role, role) {
            for (ticket, _) in l.waiting {
                self.events.push(Event::Produced {
                    ticket,
                    result: Err(ErrorCode::NotLeaderOrFollower),
                });
            }
        }
    }

    fn become_leader(&mut self, state: PartitionState, now_ms: i64) {
        // Leading on in a new epoch (one that fenced dropped replicas),
        // parked produces stay parked: their records are in this log and
        // commit once the new epoch's ISR has them.
        let waiting = match std::mem::replace(&mut self.role, Role::Offline) {
            Role::Leader(l) => l.waiting,
            _ => Vec::new(),
        };
        let leo = self.log.log_end();
        self.log.assign_epoch(state.leader_epoch, leo);
        let progress = Progress::presumed(now_ms, leo);
        let followers = state
            .replicas
            .iter()
            .filter(|n| **n != self.node)
            .map(|n| (*n, progress))
            .collect();
        self.role = Role::Leader(LeaderState {
            isr: state.isr,
            pending: None,
            pending_sent_ms: now_ms,
            followers,
            epoch_start: leo,
            waiting,
        });
        // As Kafka's makeLeader: an ISR of this replica alone commits its
        // whole log now; otherwise the HW waits for the followers.
        self.advance_high_watermark();
    }

    fn become_follower(&mut self, leader: NodeId) {
        let phase = if self.log.latest_epoch().is_some() {
            FollowerPhase::Truncating
        } else {
            FollowerPhase::Fetching
        };
        self.step_down(Role::Follower { leader, phase });
    }

    // -----------------------------------------------------------------
    // Leader: produce.

    /// Appends `count` records from a producer. acks=all is refused with
    /// NOT_ENOUGH_REPLICAS, before anything is appended, while the
    /// committed ISR is below `min.insync.replicas`; otherwise its answer
    /// comes later as an [`Event::Produced`] for `ticket`.
    pub fn produce(
        &mut self,
        acks: Acks,
        count: u32,
        ticket: Ticket,
    ) -> Result<Appended, ErrorCode> {
        self.check_produce(acks)?;
        let epoch = self.leader_epoch().expect("a leader has applied a state");
        if count == 0 {
            return Err(ErrorCode::InvalidRequest);
        }
        let base_offset = self.log.log_end();
        self.log.append(epoch, count);
        let last_offset = Offset(self.log.log_end().0 - 1);
        let parked = acks == Acks::All;
        if let Role::Leader(l) = &mut self.role {
            if parked {
                l.waiting.push((ticket, last_offset));
            }
        }
        // With an ISR of the leader alone the HW moves at once.
        self.advance_high_watermark();
        Ok(Appended {
            base_offset,
            last_offset,
            epoch,
            parked,
        })
    }

    /// A producer's retry of a batch already in the log, whose last
    /// offset is `last_offset`: refused as a new append would be (this
    /// replica does not lead, or acks=all below `min.insync.replicas`),
    /// and for acks=all answered, as an [`Event::Produced`] for `ticket`,
    /// only once the high watermark passes it, as Kafka's delayed produce
    /// waits for a duplicate's offsets too. Answering at once would
    /// acknowledge a batch only this replica may hold: a leader cut off
    /// from its followers, or a replica that no longer leads, would have
    /// a retry acknowledged that the next leader's log does not have.
    /// Returns whether the answer is parked.
    pub fn produce_duplicate(
        &mut self,
        acks: Acks,
        last_offset: Offset,
        ticket: Ticket,
    ) -> Result<bool, ErrorCode> {
        self.check_produce(acks)?;
        if acks != Acks::All || last_offset < self.log.high_watermark() {
            return Ok(false);
        }
        let Role::Leader(l) = &mut self.role else {
            unreachable!("checked: this replica leads");
        };
        // `waiting` stays sorted by last offset: the HW completes a prefix.
        let at = l.waiting.partition_point(|(_, last)| *last <= last_offset);
        l.waiting.insert(at, (ticket, last_offset));
        Ok(true)
    }

    /// Whether a produce with `acks` may append now: this replica leads,
    /// and for acks=all the committed ISR has `min.insync.replicas`.
    pub fn check_produce(&self, acks: Acks) -> Result<(), ErrorCode> {
        let Role::Leader(l) = &self.role else {
            return Err(ErrorCode::NotLeaderOrFollower);
        };
        if acks == Acks::All && l.isr.len() < self.config.min_insync_replicas {
            return Err(ErrorCode::NotEnoughReplicas);
        }
        Ok(())
    }

    /// Whether this replica leads with a high watermark still below the
    /// offset its leader epoch began at (Kafka's check of KIP-207): right
    /// after an election the new leader's HW is the one it had as a
    /// follower, which may be below what the previous leader had already
    /// told consumers, until the followers fetch in the new epoch.
    pub fn hw_behind_epoch_start(&self) -> bool {
        match &self.role {
            Role::Leader(l) => l.epoch_start > self.log.high_watermark(),
            _ => false,
        }
    }

    /// True while this replica follows a leader.
    pub fn is_follower(&self) -> bool {
        matches!(self.role, Role::Follower { .. })
    }

    /// The leader this replica follows.
    pub fn following(&self) -> Option<NodeId> {
        match self.role {
            Role::Follower { leader, .. } => Some(leader),
            _ => None,
        }
    }

    /// Whether [`PartitionReplica::handle_fetch_response`] would take an
    /// answer to a Fetch sent in `leader_epoch` from `fetch_offset`.
    pub fn accepts_fetch(&self, leader_epoch: LeaderEpoch, fetch_offset: Offset) -> bool {
        matches!(
            self.role,
            Role::Follower {
                phase: FollowerPhase::Fetching,
                ..
            }
        ) && self.leader_epoch() == Some(leader_epoch)
            && fetch_offset == self.log.log_end()
    }

    /// Cuts the model's log where the real log's cut fell (inside a batch,
    /// below the point asked for).
    pub fn truncate_log(&mut self, offset: Offset) {
        self.log.truncate_to(offset);
    }

    /// Moves the model's log start where the real log's moved.
    pub fn advance_log_start(&mut self, offset: Offset) {
        self.log.advance_start(offset);
    }

    /// Replaces the model's log with the real log's, after the follower
    /// emptied it to start at its leader's log start.
    pub fn reset_log(&mut self, log: ReplicaLog) {
        self.log = log;
    }

    /// Replaces `unclean.leader.election.enable` (a topic config change).
    pub fn set_unclean_leader_election(&mut self, unclean: bool) {
        self.config.unclean_leader_election = unclean;
    }

    /// Replaces `min.insync.replicas` (a topic config change).
    pub fn set_min_insync_replicas(&mut self, n: usize) {
        self.config.min_insync_replicas = n.max(1);
    }

    /// What a consumer may read from `from`: committed records only.
    pub fn read(&self, from: Offset, max_records: u32) -> Result<Vec<Run>, ErrorCode> {
        if !matches!(self.role, Role::Leader(_)) {
            return Err(ErrorCode::NotLeaderOrFollower);
        }
        let hw = self.log.high_watermark();
        if from < self.log.log_start() || from > hw {
            return Err(ErrorCode::OffsetOutOfRange);
        }
        Ok(self.log.read(from, hw, max_records))
    }

    // -----------------------------------------------------------------
    // Leader: follower requests.

    /// The fencing check Kafka applies to a follower's request.
    fn check_epoch(&self, epoch: LeaderEpoch) -> Result<(), ErrorCode> {
        let mine = self.leader_epoch();
        if !matches!(self.role, Role::Leader(_)) {
            return Err(ErrorCode::NotLeaderOrFollower);
        }
        let mine = mine.expect("a leader has applied a state");
        match epoch.cmp(&mine) {
            std::cmp::Ordering::Less => Err(ErrorCode::FencedLeaderEpoch),
            std::cmp::Ordering::Greater => Err(ErrorCode::UnknownLeaderEpoch),
            std::cmp::Ordering::Equal => Ok(()),
        }
    }

    /// Answers a follower's OffsetForLeaderEpoch.
    pub fn handle_epoch_request(&self, req: EpochRequest) -> EpochResponse {
        let result = self
            .check_epoch(req.leader_epoch)
            .map(|()| self.log.end_offset_for_epoch(req.requested_epoch));
        EpochResponse {
            leader_epoch: req.leader_epoch,
            requested_epoch: req.requested_epoch,
            result,
        }
    }

    /// Answers a follower's Fetch, learning its LEO on the way.
    pub fn handle_fetch(&mut self, req: FetchRequest, now_ms: i64) -> FetchResponse {
        let result = self.fetch_for_follower(req, now_ms);
        FetchResponse {
            leader_epoch: req.leader_epoch,
            fetch_offset: req.fetch_offset,
            result,
        }
    }

    fn fetch_for_follower(
        &mut self,
        req: FetchRequest,
        now_ms: i64,
    ) -> Result<FetchData, ErrorCode> {
        self.check_epoch(req.leader_epoch)?;
        let leo = self.log.log_end();
        if req.fetch_offset > leo || req.fetch_offset < self.log.log_start() {
            return Err(ErrorCode::OffsetOutOfRange);
        }
        let Role::Leader(l) = &mut self.role else {
            return Err(ErrorCode::NotLeaderOrFollower);
        };
        let Some(p) = l.followers.get_mut(&req.replica) else {
            return Err(ErrorCode::NotLeaderOrFollower);
        };
        record_fetch(p, req.fetch_offset, leo, now_ms);
        p.log_start = Some(req.log_start);
        self.maybe_expand_isr(req.replica, now_ms);
        self.advance_high_watermark();
        let runs = self
            .log
            .read(req.fetch_offset, leo, self.config.fetch_records_max);
        Ok(FetchData {
            runs,
            high_watermark: self.log.high_watermark(),
        })
    }

    /// The lowest log start of this leader and its in-sync followers,
    /// those of a pending ISR expansion included (Kafka's low watermark):
    /// records below it are deleted on every replica that could lead
    /// next. A follower not heard from in this epoch counts from 0.
    /// `None` unless leading.
    pub fn low_watermark(&self) -> Option<Offset> {
        let Role::Leader(l) = &self.role else {
            return None;
        };
        let proposed = l.pending.iter().flat_map(|p| p.isr.iter());
        let in_sync = l.isr.iter().chain(proposed).filter(|n| **n != self.node);
        let followers = in_sync.map(|n| {
            l.followers
                .get(n)
                .and_then(|p| p.log_start)
                .unwrap_or(Offset(0))
        });
        Some(followers.fold(self.log.log_start(), Offset::min))
    }

    /// Kafka's rule: a follower joins once its LEO reaches both the HW
    /// and the start of this leader epoch.
    fn maybe_expand_isr(&mut self, follower: NodeId, now_ms: i64) {
        let hw = self.log.high_watermark();
        let Role::Leader(l) = &self.role else { return };
        if l.pending.is_some() || l.isr.contains(&follower) {
            return;
        }
        let Some(leo) = l.followers.get(&follower).and_then(|p| p.log_end) else {
            return;
        };
        if leo >= hw && leo >= l.epoch_start {
            let mut isr = l.isr.clone();
            isr.push(follower);
            self.propose(isr, now_ms);
        }
    }

    /// Shrinks the ISR of followers that have not caught up to the
    /// leader's LEO within `replica.lag.time.max.ms`, and resends a
    /// proposal unanswered for [`PROPOSAL_RESEND_MS`]. Call periodically.
    pub fn tick(&mut self, now_ms: i64) {
        let leo = self.log.log_end();
        let lag_max_ms = self.config.replica_lag_time_max_ms;
        let Role::Leader(l) = &mut self.role else {
            return;
        };
        if let Some(p) = &l.pending {
            if now_ms - l.pending_sent_ms >= PROPOSAL_RESEND_MS {
                l.pending_sent_ms = now_ms;
                self.events.push(Event::ProposeIsr(p.clone()));
            }
            return;
        }
        let lagging = |n: &NodeId| {
            l.followers.get(n).is_some_and(|p| {
                p.log_end != Some(leo) && now_ms - p.last_caught_up_ms > lag_max_ms
            })
        };
        if l.isr.iter().any(lagging) {
            let isr = l.isr.iter().copied().filter(|n| !lagging(n)).collect();
            self.propose(isr, now_ms);
        }
    }

    fn propose(&mut self, isr: Vec<NodeId>, now_ms: i64) {
        let state = self.state.as_ref().expect("a leader has applied a state");
        let proposal = IsrProposal {
            leader: self.node,
            leader_epoch: state.leader_epoch,
            partition_epoch: state.partition_epoch,
            isr,
        };
        let Role::Leader(l) = &mut self.role else {
            return;
        };
        assert!(
            proposal.isr.contains(&self.node),
            "the leader stays in its ISR"
        );
        l.pending = Some(proposal.clone());
        l.pending_sent_ms = now_ms;
        self.events.push(Event::ProposeIsr(proposal));
    }

    /// The proposal built on `partition_epoch` was not confirmed. Only
    /// `ineligible` (INELIGIBLE_REPLICA, decided on the very partition
    /// epoch the leader has, so the controller's ISR is the leader's)
    /// frees it to propose again at once. After any other answer (a stale
    /// partition epoch, a deposed leader, a lost or timed-out request) the
    /// proposal may have been committed: an expansion resent after the
    /// first was accepted is refused as stale. The HW then keeps waiting
    /// for the proposed ISR too, until the controller's next state says
    /// what the ISR is; the proposal is resent meanwhile.
    pub fn proposal_refused(&mut self, partition_epoch: i32, ineligible: bool) {
        if let Role::Leader(l) = &mut self.role {
            if ineligible && l.pending.as_ref().map(|p| p.partition_epoch) == Some(partition_epoch)
            {
                l.pending = None;
            }
        }
    }

    /// HW = min LEO over the maximal ISR; never moves back.
    fn advance_high_watermark(&mut self) {
        let leo = self.log.log_end();
        let Role::Leader(l) = &mut self.role else {
            return;
        };
        let proposed = l.pending.iter().flat_map(|p| p.isr.iter());
        let mut hw = leo;
        for n in l.isr.iter().chain(proposed).filter(|n| **n != self.node) {
            match l.followers.get(n).and_then(|p| p.log_end) {
                Some(end) => hw = hw.min(end),
                // Not heard from in this epoch: the HW waits for it.
                None => return,
            }
        }
        let old = self.log.high_watermark();
        if hw <= old {
            return;
        }
        assert!(hw <= leo, "high watermark above the leader's log end");
        self.log.set_high_watermark(hw);
        self.complete_waiting();
    }

    fn complete_waiting(&mut self) {
        let hw = self.log.high_watermark();
        let min_isr = self.config.min_insync_replicas;
        let Role::Leader(l) = &mut self.role else {
            return;
        };
        let done = l.waiting.partition_point(|(_, last)| *last < hw);
        let enough = l.isr.len() >= min_isr;
        for (ticket, last) in l.waiting.drain(..done) {
            let result = if enough {
                Ok(last)
            } else {
                Err(ErrorCode::NotEnoughReplicasAfterAppend)
            };
            self.events.push(Event::Produced { ticket, result });
        }
    }

    // -----------------------------------------------------------------
    // Follower.

    /// The request a follower sends its leader next, if it follows one.
    /// A replica no longer assigned (a reassignment moved it, and its
    /// broker has not deleted it yet) sends nothing.
    pub fn next_request(&self) -> Option<FollowerRequest> {
        let Role::Follower { leader, phase } = self.role else {
            return None;
        };
        if !self.state.as_ref()?.replicas.contains(&self.node) {
            return None;
        }
        let leader_epoch = self.leader_epoch().expect("a follower has applied a state");
        Some(match (phase, self.log.latest_epoch()) {
            (FollowerPhase::Truncating, Some(requested_epoch)) => FollowerRequest::Epoch {
                leader,
                request: EpochRequest {
                    leader_epoch,
                    requested_epoch,
                },
            },
            _ => FollowerRequest::Fetch {
                leader,
                request: FetchRequest {
                    replica: self.node,
                    leader_epoch,
                    fetch_offset: self.log.log_end(),
                    log_start: self.log.log_start(),
                },
            },
        })
    }

    /// Truncates by the leader's OffsetForLeaderEpoch answer (KIP-101,
    /// KIP-279), then fetches, or asks again for an older epoch.
    pub fn handle_epoch_response(&mut self, resp: EpochResponse) {
        let Role::Follower { phase, .. } = self.role else {
            return;
        };
        let asked = self.log.latest_epoch();
        let current = self.leader_epoch() == Some(resp.leader_epoch);
        if phase != FollowerPhase::Truncating || !current || asked != Some(resp.requested_epoch) {
            return;
        }
        // Errors: the leader moved on; the next state says where.
        let Ok(answer) = resp.result else { return };
        let (offset, complete) = self.truncation_point(answer);
        if offset < self.log.high_watermark() && !self.config.unclean_leader_election {
            // Records below the HW were acknowledged, and a clean leader
            // has them all: a leader that lacks them was elected against
            // the rules. Keep them, and ask again (the next state may
            // name another leader).
            self.events.push(Event::RefusedTruncation {
                offset,
                high_watermark: self.log.high_watermark(),
            });
            return;
        }
        self.log.truncate_to(offset);
        let done = complete || self.log.latest_epoch().is_none();
        if let Role::Follower { phase, .. } = &mut self.role {
            if done {
                *phase = FollowerPhase::Fetching;
            }
        }
    }

    /// Kafka's `getOffsetTruncationState`: where to cut, and whether the
    /// logs then agree or another round is needed.
    fn truncation_point(&self, answer: Option<(LeaderEpoch, Offset)>) -> (Offset, bool) {
        let leo = self.log.log_end();
        let Some((leader_epoch, leader_end)) = answer else {
            // UNDEFINED: the leader knows no epoch at or below ours. What
            // is committed here is safe; keep that much.
            return (self.log.high_watermark(), true);
        };
        match self.log.end_offset_for_epoch(leader_epoch) {
            Some((epoch, end)) if epoch == leader_epoch => (end.min(leader_end).min(leo), true),
            // We never had the leader's epoch: cut to the end of the one
            // below it and ask again about that.
            Some((_, end)) => (end.min(leo), false),
            None => (leader_end.min(leo), true),
        }
    }

    /// Appends what the leader sent and takes its HW, capped by our LEO.
    /// Answers to stale requests are dropped.
    pub fn handle_fetch_response(&mut self, resp: FetchResponse) {
        let Role::Follower { phase, .. } = self.role else {
            return;
        };
        let current = self.leader_epoch() == Some(resp.leader_epoch);
        let in_place = resp.fetch_offset == self.log.log_end();
        if phase != FollowerPhase::Fetching || !current || !in_place {
            return;
        }
        let Ok(data) = resp.result else { return };
        for run in &data.runs {
            assert_eq!(
                run.base_offset,
                self.log.log_end(),
                "fetched runs are contiguous"
            );
            self.log.append(run.epoch, run.count);
        }
        let hw = data.high_watermark.min(self.log.log_end());
        self.log.set_high_watermark(hw.max(self.log.log_start()));
    }
}

/// Kafka's `updateFetchState`: a follower is caught up at this fetch if it
/// reached the leader's LEO, and at its previous fetch if it has now
/// reached the LEO the leader had then.
fn record_fetch(p: &mut Progress, fetch_offset: Offset, leader_end: Offset, now_ms: i64) {
    if fetch_offset >= leader_end {
        p.last_caught_up_ms = p.last_caught_up_ms.max(now_ms);
    } else if fetch_offset >= p.last_fetch_leader_end {
        p.last_caught_up_ms = p.last_caught_up_ms.max(p.last_fetch_ms);
    }
    p.log_end = Some(fetch_offset);
    p.last_fetch_leader_end = leader_end;
    p.last_fetch_ms = now_ms;
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
