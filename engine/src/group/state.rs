//! One consumer group under the classic rebalance protocol, as a plain
//! state machine: no I/O, no clock, no executor. Time comes in as
//! `now_ms`; answers to parked JoinGroup/SyncGroup requests go out as
//! [`Completion`]s named by the caller's [`Ticket`]. The coordinator shell
//! (`coordinator.rs`) persists and delivers; tests drive this directly.
//!
//! States, as Kafka has them:
//!
//! ```text
//!   Empty ──join──▶ PreparingRebalance ──all joined / timeout──▶ CompletingRebalance
//!     ▲                 ▲        │ (no members left)                  │ leader's SyncGroup stored
//!     └─────────────────┼────────┘                                    ▼
//!                       └──── join of leader / new metadata, leave, expiry ──── Stable
//! ```
//!
//! Dead is a group being deleted or whose offsets all expired.

use super::records::{GroupValue, MemberValue, OffsetValue};
use super::GroupConfig;
use bytes::Bytes;
use sluice_protocol::ErrorCode;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Names a parked request, chosen by the caller.
pub type Ticket = u64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// The name DescribeGroups and ListGroups report.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// A JoinGroup request, decoded.
#[derive(Clone, Debug, Default)]
pub struct JoinRequest {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: a first join gets MEMBER_ID_REQUIRED (KIP-394).
    pub require_known_member_id: bool,
    /// JoinGroup v9+: a returning static leader may be told to skip the
    /// assignment (KIP-814).
    pub supports_skip_assignment: bool,
}

/// A member as the leader sees it in its JoinGroup response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinedMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub metadata: Bytes,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinResult {
    pub error: ErrorCode,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Every member with its metadata, for the leader only.
    pub members: Vec<JoinedMember>,
    /// The leader is to compute nothing and send no assignments: the
    /// group keeps the ones it has (KIP-814).
    pub skip_assignment: bool,
}

impl JoinResult {
    pub fn error(error: ErrorCode, member_id: &str) -> JoinResult {
        JoinResult {
            error,
            generation: -1,
            protocol_type: None,
            protocol: None,
            leader: String::new(),
            member_id: member_id.to_string(),
            members: Vec::new(),
            skip_assignment: false,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncResult {
    pub error: ErrorCode,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub assignment: Bytes,
}

impl SyncResult {
    pub fn error(error: ErrorCode) -> SyncResult {
        SyncResult {
            error,
            protocol_type: None,
            protocol: None,
            assignment: Bytes::new(),
        }
    }
}

/// An answer to a parked request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Completion {
    Join(Ticket, JoinResult),
    Sync(Ticket, SyncResult),
}

/// What a SyncGroup asks of the shell.
#[derive(Debug, PartialEq, Eq)]
pub enum SyncStep {
    /// Answered or parked; see the completions.
    Done,
    /// The leader's assignment: store this record, then call
    /// [`Group::sync_stored`] with the generation.
    Store(GroupValue),
}

/// A SyncGroup request, decoded.
#[derive(Clone, Debug, Default)]
pub struct SyncRequest {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub assignments: BTreeMap<String, Bytes>,
}

#[derive(Clone, Debug)]
pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    awaiting_join: Option<Ticket>,
    awaiting_sync: Option<Ticket>,
    heartbeat_deadline_ms: i64,
}

impl Member {
    /// Takes what a new JoinGroup says about the member, and restarts its
    /// session.
    fn refresh(&mut self, req: JoinRequest, now_ms: i64) {
        self.protocols = req.protocols;
        self.session_timeout_ms = req.session_timeout_ms;
        self.rebalance_timeout_ms = req.rebalance_timeout_ms;
        self.client_id = req.client_id;
        self.client_host = req.client_host;
        self.heartbeat_deadline_ms = now_ms + i64::from(self.session_timeout_ms);
    }

    /// The member's metadata for `protocol` (empty if it has none).
    pub fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }
}

/// A committed offset and where its record sits in the offsets log, so a
/// commit whose append finished late never overwrites a newer one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    pub value: OffsetValue,
    pub log_offset: i64,
}

/// One group and its committed offsets.
#[derive(Debug)]
pub struct Group {
    pub id: String,
    state: GroupState,
    state_since_ms: i64,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, and until when they
    /// may come back with them.
    pending: BTreeMap<String, i64>,
    /// group.instance.id → member id.
    statics: HashMap<String, String>,
    join_deadline_ms: i64,
    /// While the initial delayed join runs: how much of the rebalance
    /// timeout is left to extend it by.
    initial_remaining_ms: Option<i64>,
    initial_delay_ms: i64,
    new_member_added: bool,
    /// Members that have not sent SyncGroup for this generation, and the
    /// time by which they must.
    pending_sync: BTreeSet<String>,
    sync_deadline_ms: Option<i64>,
    /// The leader's assignment while its record is being stored.
    proposed: Option<(i32, BTreeMap<String, Bytes>)>,
    completions: Vec<Completion>,
    needs_store: bool,
    pub offsets: HashMap<(String, i32), Committed>,
}

/// A generated member id: the client or instance id, then a UUID, as
/// Kafka forms them.
pub fn new_member_id(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4())
}

impl Group {
    pub fn new(id: &str, now_ms: i64) -> Group {
        Group {
            id: id.to_string(),
            state: GroupState::Empty,
            state_since_ms: now_ms,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            pending: BTreeMap::new(),
            statics: HashMap::new(),
            join_deadline_ms: 0,
            initial_remaining_ms: None,
            initial_delay_ms: 0,
            new_member_added: false,
            pending_sync: BTreeSet::new(),
            sync_deadline_ms: None,
            proposed: None,
            completions: Vec::new(),
            needs_store: false,
            offsets: HashMap::new(),
        }
    }

    /// Rebuilds a group from its stored record: with members it is Stable
    /// and every member gets a fresh session, as after a coordinator move.
    pub fn restore(&mut self, v: &GroupValue, now_ms: i64) {
        self.generation = v.generation;
        self.protocol_type = Some(v.protocol_type.clone()).filter(|t| !t.is_empty());
        self.protocol = v.protocol.clone();
        self.leader = v.leader.clone();
        self.members.clear();
        self.statics.clear();
        for m in &v.members {
            let protocols = match &v.protocol {
                Some(p) => vec![(p.clone(), m.subscription.clone())],
                None => Vec::new(),
            };
            if let Some(i) = &m.instance_id {
                self.statics.insert(i.clone(), m.member_id.clone());
            }
            self.members.insert(
                m.member_id.clone(),
                Member {
                    id: m.member_id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    session_timeout_ms: m.session_timeout_ms,
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    protocols,
                    assignment: m.assignment.clone(),
                    awaiting_join: None,
                    awaiting_sync: None,
                    heartbeat_deadline_ms: now_ms + i64::from(m.session_timeout_ms),
                },
            );
        }
        let state = if self.members.is_empty() || self.protocol.is_none() {
            GroupState::Empty
        } else {
            GroupState::Stable
        };
        self.state = state;
        self.state_since_ms = if v.state_timestamp_ms >= 0 {
            v.state_timestamp_ms
        } else {
            now_ms
        };
    }

    pub fn state(&self) -> GroupState {
        self.state
    }

    /// Drops the protocol of an Empty group whose id a consumer-protocol
    /// group takes over; its offsets stay.
    pub fn forget_protocol(&mut self) {
        assert_eq!(self.state, GroupState::Empty);
        self.protocol_type = None;
        self.protocol = None;
        self.leader = None;
    }

    /// Gives the group's id over to a consumer group that takes its
    /// members (an online upgrade): parked JoinGroup and SyncGroup
    /// requests are told to rejoin, and the group keeps only its offsets.
    pub fn hand_over(&mut self, now_ms: i64) {
        self.reply_all_parked(ErrorCode::RebalanceInProgress);
        self.members.clear();
        self.pending.clear();
        self.statics.clear();
        self.pending_sync.clear();
        self.sync_deadline_ms = None;
        self.proposed = None;
        self.transition(GroupState::Empty, now_ms);
        self.forget_protocol();
    }

    /// Starts a rebalance of a group just restored from a consumer
    /// group's members (an online downgrade): each member rejoins.
    pub fn rebalance(&mut self, now_ms: i64, cfg: &GroupConfig) {
        assert!(self.has_members());
        self.prepare_rebalance(now_ms, cfg);
    }

    pub fn generation(&self) -> i32 {
        self.generation
    }

    pub fn protocol_type(&self) -> Option<&str> {
        self.protocol_type.as_deref()
    }

    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    pub fn leader(&self) -> Option<&str> {
        self.leader.as_deref()
    }

    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    pub fn has_members(&self) -> bool {
        !self.members.is_empty()
    }

    /// Answers ready for delivery.
    pub fn take_completions(&mut self) -> Vec<Completion> {
        std::mem::take(&mut self.completions)
    }

    /// Whether the group's record must be written (it became Empty, or a
    /// static member was replaced).
    pub fn take_needs_store(&mut self) -> bool {
        std::mem::take(&mut self.needs_store)
    }

    /// Marks the group deleted; its parked requests are told to look for
    /// the coordinator again.
    pub fn kill(&mut self, now_ms: i64) {
        self.reply_all_parked(ErrorCode::CoordinatorNotAvailable);
        self.members.clear();
        self.pending.clear();
        self.statics.clear();
        self.transition(GroupState::Dead, now_ms);
    }

    /// Undoes [`Group::kill`] of an Empty group whose deletion could not
    /// be stored: it is Empty again, with its offsets.
    pub fn revive(&mut self, now_ms: i64) {
        if self.state == GroupState::Dead {
            self.transition(GroupState::Empty, now_ms);
        }
    }

    fn transition(&mut self, to: GroupState, now_ms: i64) {
        if self.state != to {
            // As Kafka's coordinator logs its rebalances: rare, and what
            // an operator (or a stalled client's test) needs to follow one.
            let members: Vec<&str> = self.members.keys().map(String::as_str).collect();
            tracing::info!(
                group = %self.id,
                from = self.state.name(),
                to = to.name(),
                generation = self.generation,
                ?members,
                "group state"
            );
        }
        self.state = to;
        self.state_since_ms = now_ms;
    }

    fn reply_join(&mut self, ticket: Ticket, result: JoinResult) {
        self.completions.push(Completion::Join(ticket, result));
    }

    fn reply_sync(&mut self, ticket: Ticket, result: SyncResult) {
        self.completions.push(Completion::Sync(ticket, result));
    }

    fn reply_all_parked(&mut self, error: ErrorCode) {
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let m = self.members.get_mut(&id).expect("listed");
            let (join, sync) = (m.awaiting_join.take(), m.awaiting_sync.take());
            if let Some(t) = join {
                self.reply_join(t, JoinResult::error(error, &id));
            }
            if let Some(t) = sync {
                self.reply_sync(t, SyncResult::error(error));
            }
        }
    }

    /// The largest rebalance timeout among members: how long a rebalance
    /// waits for every member to rejoin.
    fn rebalance_timeout_ms(&self) -> i64 {
        self.members
            .values()
            .map(|m| i64::from(m.rebalance_timeout_ms))
            .max()
            .unwrap_or(0)
    }

    /// Protocols every member supports.
    fn candidates(&self) -> Vec<String> {
        let mut members = self.members.values();
        let Some(first) = members.next() else {
            return Vec::new();
        };
        let mut names: Vec<String> = first.protocols.iter().map(|(n, _)| n.clone()).collect();
        for m in members {
            names.retain(|n| m.protocols.iter().any(|(p, _)| p == n));
        }
        names
    }

    fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if protocol_type.is_empty() || protocols.is_empty() {
            return false;
        }
        if self.members.is_empty() {
            return true;
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && self
                .candidates()
                .iter()
                .any(|c| protocols.iter().any(|(p, _)| p == c))
    }

    /// The protocol for the next generation: each member votes for its
    /// most preferred candidate; most votes wins, ties going to the
    /// earlier candidate in the first member's order.
    fn select_protocol(&self) -> Option<String> {
        let candidates = self.candidates();
        let mut votes: Vec<usize> = vec![0; candidates.len()];
        for m in self.members.values() {
            if let Some(i) = m
                .protocols
                .iter()
                .find_map(|(p, _)| candidates.iter().position(|c| c == p))
            {
                votes[i] += 1;
            }
        }
        let best = (0..candidates.len()).max_by_key(|&i| (votes[i], std::cmp::Reverse(i)))?;
        Some(candidates[best].clone())
    }

    /// For a request of an existing member: `Err(FENCED_INSTANCE_ID)`
    /// when `instance_id` belongs to another member id, and, as in Kafka,
    /// `Err(UNKNOWN_MEMBER_ID)` when no member has it.
    fn check_instance(&self, member_id: &str, instance_id: Option<&str>) -> Result<(), ErrorCode> {
        let Some(instance) = instance_id else {
            return Ok(());
        };
        match self.statics.get(instance) {
            None => Err(ErrorCode::UnknownMemberId),
            Some(owner) if owner != member_id => Err(ErrorCode::FencedInstanceId),
            Some(_) => Ok(()),
        }
    }

    /// JoinGroup. The answer arrives as a completion for `ticket`, at once
    /// or when the rebalance completes.
    pub fn join(&mut self, req: JoinRequest, ticket: Ticket, now_ms: i64, cfg: &GroupConfig) {
        if self.state == GroupState::Dead {
            let r = JoinResult::error(ErrorCode::CoordinatorNotAvailable, &req.member_id);
            return self.reply_join(ticket, r);
        }
        if !self.supports(&req.protocol_type, &req.protocols) {
            let r = JoinResult::error(ErrorCode::InconsistentGroupProtocol, &req.member_id);
            return self.reply_join(ticket, r);
        }
        if req.member_id.is_empty() {
            self.join_new(req, ticket, now_ms, cfg);
        } else {
            self.join_known(req, ticket, now_ms, cfg);
        }
        self.advance(now_ms);
    }

    fn join_new(&mut self, req: JoinRequest, ticket: Ticket, now_ms: i64, cfg: &GroupConfig) {
        let known_static = req
            .instance_id
            .as_ref()
            .and_then(|i| self.statics.get(i))
            .cloned();
        if known_static.is_none() && self.members.len() + self.pending.len() >= cfg.max_size {
            let r = JoinResult::error(ErrorCode::GroupMaxSizeReached, "");
            return self.reply_join(ticket, r);
        }
        let id = new_member_id(req.instance_id.as_deref().unwrap_or(&req.client_id));
        if let Some(old) = known_static {
            return self.replace_static(&old, id, req, ticket, now_ms, cfg);
        }
        if req.instance_id.is_none() && req.require_known_member_id {
            self.pending
                .insert(id.clone(), now_ms + i64::from(req.session_timeout_ms));
            let r = JoinResult::error(ErrorCode::MemberIdRequired, &id);
            return self.reply_join(ticket, r);
        }
        self.add_member(id, req, ticket, now_ms, cfg);
    }

    fn join_known(&mut self, req: JoinRequest, ticket: Ticket, now_ms: i64, cfg: &GroupConfig) {
        let id = req.member_id.clone();
        if self.pending.remove(&id).is_some() {
            return self.add_member(id, req, ticket, now_ms, cfg);
        }
        let Some(member) = self.members.get(&id) else {
            return self.reply_join(ticket, JoinResult::error(ErrorCode::UnknownMemberId, &id));
        };
        if let Err(e) = self.check_instance(&id, req.instance_id.as_deref()) {
            return self.reply_join(ticket, JoinResult::error(e, &id));
        }
        let same_metadata = member.protocols == req.protocols;
        let is_leader = self.leader.as_deref() == Some(id.as_str());
        match self.state {
            GroupState::PreparingRebalance => self.update_member(req, ticket, now_ms),
            GroupState::CompletingRebalance if same_metadata => {
                let r = self.current_generation(&id, is_leader);
                self.reply_join(ticket, r);
            }
            GroupState::Stable if same_metadata && !is_leader => {
                let r = self.current_generation(&id, false);
                self.reply_join(ticket, r);
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                self.update_member(req, ticket, now_ms);
                self.prepare_rebalance(now_ms, cfg);
            }
            GroupState::Empty | GroupState::Dead => {
                self.reply_join(ticket, JoinResult::error(ErrorCode::UnknownMemberId, &id));
            }
        }
    }

    /// The answer for a member of the current generation.
    fn current_generation(&self, member_id: &str, with_members: bool) -> JoinResult {
        let protocol = self.protocol.clone().unwrap_or_default();
        JoinResult {
            error: ErrorCode::None,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol: self.protocol.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            member_id: member_id.to_string(),
            skip_assignment: false,
            members: if with_members {
                self.members
                    .values()
                    .map(|m| JoinedMember {
                        member_id: m.id.clone(),
                        instance_id: m.instance_id.clone(),
                        metadata: m.metadata(&protocol),
                    })
                    .collect()
            } else {
                Vec::new()
            },
        }
    }

    fn add_member(
        &mut self,
        id: String,
        req: JoinRequest,
        ticket: Ticket,
        now_ms: i64,
        cfg: &GroupConfig,
    ) {
        if self.members.is_empty() {
            self.protocol_type = Some(req.protocol_type.clone());
        }
        if let Some(i) = &req.instance_id {
            self.statics.insert(i.clone(), id.clone());
        }
        if self.leader.is_none() {
            self.leader = Some(id.clone());
        }
        self.members.insert(
            id.clone(),
            Member {
                id,
                instance_id: req.instance_id,
                client_id: req.client_id,
                client_host: req.client_host,
                session_timeout_ms: req.session_timeout_ms,
                rebalance_timeout_ms: req.rebalance_timeout_ms,
                protocols: req.protocols,
                assignment: Bytes::new(),
                awaiting_join: Some(ticket),
                awaiting_sync: None,
                heartbeat_deadline_ms: now_ms + i64::from(req.session_timeout_ms),
            },
        );
        if self.state == GroupState::PreparingRebalance {
            self.new_member_added = true;
        } else {
            self.prepare_rebalance(now_ms, cfg);
        }
    }

    fn update_member(&mut self, req: JoinRequest, ticket: Ticket, now_ms: i64) {
        let id = req.member_id.clone();
        let m = self.members.get_mut(&id).expect("caller checked");
        m.refresh(req, now_ms);
        // A second JoinGroup from the same member supersedes the first,
        // whose sender has given up on it.
        if let Some(old) = m.awaiting_join.replace(ticket) {
            let r = JoinResult::error(ErrorCode::RebalanceInProgress, &id);
            self.reply_join(old, r);
        }
    }

    /// KIP-345: a static member came back with a new member id. In a
    /// Stable group whose protocol would not change it gets the current
    /// generation and keeps its assignment: no rebalance.
    fn replace_static(
        &mut self,
        old_id: &str,
        new_id: String,
        req: JoinRequest,
        ticket: Ticket,
        now_ms: i64,
        cfg: &GroupConfig,
    ) {
        let mut m = self.members.remove(old_id).expect("statics names members");
        if let Some(t) = m.awaiting_join.take() {
            self.reply_join(t, JoinResult::error(ErrorCode::FencedInstanceId, old_id));
        }
        if let Some(t) = m.awaiting_sync.take() {
            self.reply_sync(t, SyncResult::error(ErrorCode::FencedInstanceId));
        }
        let old_leader = self.leader.clone().unwrap_or_default();
        if old_leader == old_id {
            self.leader = Some(new_id.clone());
        }
        if self.pending_sync.remove(old_id) {
            self.pending_sync.insert(new_id.clone());
        }
        m.id = new_id.clone();
        let skip_assignment = req.supports_skip_assignment;
        m.refresh(req, now_ms);
        let instance = m.instance_id.clone().expect("static member");
        self.statics.insert(instance, new_id.clone());
        self.members.insert(new_id.clone(), m);
        match self.state {
            GroupState::Stable if self.select_protocol() == self.protocol => {
                self.needs_store = true;
                let r = if old_leader == old_id && skip_assignment {
                    // The leader learns it leads, with the members'
                    // metadata, and is told to keep the assignment.
                    let mut r = self.current_generation(&new_id, true);
                    r.skip_assignment = true;
                    r
                } else {
                    // Before v9 the leader is reported under its old id,
                    // so a returning leader syncs as a follower and keeps
                    // the assignment.
                    let mut r = self.current_generation(&new_id, false);
                    r.leader = old_leader;
                    r
                };
                self.reply_join(ticket, r);
            }
            GroupState::PreparingRebalance => {
                self.members
                    .get_mut(&new_id)
                    .expect("inserted")
                    .awaiting_join = Some(ticket);
            }
            _ => {
                self.members
                    .get_mut(&new_id)
                    .expect("inserted")
                    .awaiting_join = Some(ticket);
                self.prepare_rebalance(now_ms, cfg);
            }
        }
    }

    fn prepare_rebalance(&mut self, now_ms: i64, cfg: &GroupConfig) {
        if self.state == GroupState::CompletingRebalance {
            self.reset_assignments(ErrorCode::RebalanceInProgress);
        }
        self.pending_sync.clear();
        self.sync_deadline_ms = None;
        self.proposed = None;
        let timeout = self.rebalance_timeout_ms();
        if self.state == GroupState::Empty {
            let delay = cfg.initial_rebalance_delay_ms.min(timeout);
            self.initial_delay_ms = cfg.initial_rebalance_delay_ms;
            self.join_deadline_ms = now_ms + delay;
            self.initial_remaining_ms = Some((timeout - delay).max(0));
            self.new_member_added = false;
        } else {
            self.join_deadline_ms = now_ms + timeout;
            self.initial_remaining_ms = None;
        }
        self.transition(GroupState::PreparingRebalance, now_ms);
    }

    /// Forgets assignments and fails the SyncGroups waiting for them.
    fn reset_assignments(&mut self, error: ErrorCode) {
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let m = self.members.get_mut(&id).expect("listed");
            m.assignment = Bytes::new();
            if let Some(t) = m.awaiting_sync.take() {
                self.reply_sync(t, SyncResult::error(error));
            }
        }
    }

    /// Completes the join phase if it can: everyone rejoined, or the
    /// deadline passed. The initial delayed join waits its whole delay and
    /// extends while new members keep arriving.
    fn maybe_complete_join(&mut self, now_ms: i64) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        let deadline_passed = now_ms >= self.join_deadline_ms;
        if let Some(remaining) = self.initial_remaining_ms {
            if !deadline_passed {
                return;
            }
            if self.new_member_added && remaining > 0 {
                self.new_member_added = false;
                let delay = self.initial_delay_ms.min(remaining);
                self.join_deadline_ms = now_ms + delay;
                self.initial_remaining_ms = Some((remaining - self.initial_delay_ms).max(0));
                return;
            }
            return self.complete_join(now_ms);
        }
        let all_joined =
            self.pending.is_empty() && self.members.values().all(|m| m.awaiting_join.is_some());
        if all_joined || deadline_passed {
            self.complete_join(now_ms);
        }
    }

    fn complete_join(&mut self, now_ms: i64) {
        let missing: Vec<String> = self
            .members
            .values()
            .filter(|m| m.awaiting_join.is_none())
            .map(|m| m.id.clone())
            .collect();
        for id in missing {
            self.remove_member(&id);
        }
        self.generation += 1;
        self.initial_remaining_ms = None;
        if self.members.is_empty() {
            self.protocol = None;
            self.transition(GroupState::Empty, now_ms);
            self.needs_store = true;
            return;
        }
        self.protocol = self.select_protocol();
        if !self
            .leader
            .as_ref()
            .is_some_and(|l| self.members.contains_key(l))
        {
            self.leader = self.members.keys().next().cloned();
        }
        self.transition(GroupState::CompletingRebalance, now_ms);
        let leader = self.leader.clone().unwrap_or_default();
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in &ids {
            let r = self.current_generation(id, *id == leader);
            let m = self.members.get_mut(id).expect("listed");
            m.heartbeat_deadline_ms = now_ms + i64::from(m.session_timeout_ms);
            if let Some(t) = m.awaiting_join.take() {
                self.reply_join(t, r);
            }
        }
        self.pending_sync = ids.into_iter().collect();
        self.sync_deadline_ms = Some(now_ms + self.rebalance_timeout_ms());
    }

    fn remove_member(&mut self, id: &str) -> Option<Member> {
        let m = self.members.remove(id)?;
        if let Some(i) = &m.instance_id {
            if self.statics.get(i).map(String::as_str) == Some(id) {
                self.statics.remove(i);
            }
        }
        if self.leader.as_deref() == Some(id) {
            self.leader = self.members.keys().next().cloned();
        }
        self.pending_sync.remove(id);
        Some(m)
    }

    /// A member is gone (LeaveGroup, session expiry, missed sync).
    fn member_left(&mut self, id: &str, now_ms: i64, cfg: &GroupConfig) {
        let Some(m) = self.remove_member(id) else {
            return;
        };
        if let Some(t) = m.awaiting_join {
            self.reply_join(t, JoinResult::error(ErrorCode::UnknownMemberId, id));
        }
        if let Some(t) = m.awaiting_sync {
            self.reply_sync(t, SyncResult::error(ErrorCode::UnknownMemberId));
        }
        if matches!(
            self.state,
            GroupState::Stable | GroupState::CompletingRebalance
        ) {
            self.prepare_rebalance(now_ms, cfg);
        }
    }

    /// SyncGroup. Followers wait for the leader's assignment; the leader's
    /// is returned for storing.
    pub fn sync(&mut self, req: SyncRequest, ticket: Ticket, now_ms: i64) -> SyncStep {
        if let Err(e) = self.check_sync(&req) {
            self.reply_sync(ticket, SyncResult::error(e));
            return SyncStep::Done;
        }
        let id = req.member_id.clone();
        self.pending_sync.remove(&id);
        if self.state == GroupState::Stable {
            let m = &self.members[&id];
            let r = SyncResult {
                error: ErrorCode::None,
                protocol_type: self.protocol_type.clone(),
                protocol: self.protocol.clone(),
                assignment: m.assignment.clone(),
            };
            self.reply_sync(ticket, r);
            return SyncStep::Done;
        }
        let m = self.members.get_mut(&id).expect("checked");
        m.heartbeat_deadline_ms = now_ms + i64::from(m.session_timeout_ms);
        if let Some(old) = m.awaiting_sync.replace(ticket) {
            self.reply_sync(old, SyncResult::error(ErrorCode::RebalanceInProgress));
        }
        if self.leader.as_deref() != Some(id.as_str()) {
            return SyncStep::Done;
        }
        let assignments: BTreeMap<String, Bytes> = self
            .members
            .keys()
            .map(|m| {
                (
                    m.clone(),
                    req.assignments.get(m).cloned().unwrap_or_default(),
                )
            })
            .collect();
        let value = self.stored_value(Some(&assignments));
        self.proposed = Some((self.generation, assignments));
        SyncStep::Store(value)
    }

    fn check_sync(&self, req: &SyncRequest) -> Result<(), ErrorCode> {
        if self.state == GroupState::Dead {
            return Err(ErrorCode::CoordinatorNotAvailable);
        }
        if !self.members.contains_key(&req.member_id) {
            return Err(ErrorCode::UnknownMemberId);
        }
        self.check_instance(&req.member_id, req.instance_id.as_deref())?;
        if req.generation != self.generation {
            return Err(ErrorCode::IllegalGeneration);
        }
        let mismatch = |asked: &Option<String>, have: &Option<String>| {
            asked.as_ref().is_some_and(|a| have.as_ref() != Some(a))
        };
        if mismatch(&req.protocol_type, &self.protocol_type)
            || mismatch(&req.protocol, &self.protocol)
        {
            return Err(ErrorCode::InconsistentGroupProtocol);
        }
        match self.state {
            GroupState::PreparingRebalance => Err(ErrorCode::RebalanceInProgress),
            GroupState::Empty | GroupState::Dead => Err(ErrorCode::UnknownMemberId),
            GroupState::CompletingRebalance | GroupState::Stable => Ok(()),
        }
    }

    /// The leader's assignment of `generation` was stored (or failed to
    /// be): hand it out and become Stable, unless the group moved on.
    pub fn sync_stored(
        &mut self,
        generation: i32,
        stored: Result<(), ErrorCode>,
        now_ms: i64,
        cfg: &GroupConfig,
    ) {
        let Some((proposed_generation, assignments)) = self.proposed.take() else {
            return;
        };
        if self.state != GroupState::CompletingRebalance
            || generation != self.generation
            || proposed_generation != generation
        {
            return;
        }
        if let Err(e) = stored {
            self.reset_assignments(e);
            self.prepare_rebalance(now_ms, cfg);
            return;
        }
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let assignment = assignments.get(&id).cloned().unwrap_or_default();
            let m = self.members.get_mut(&id).expect("listed");
            m.assignment = assignment.clone();
            if let Some(t) = m.awaiting_sync.take() {
                let r = SyncResult {
                    error: ErrorCode::None,
                    protocol_type: self.protocol_type.clone(),
                    protocol: self.protocol.clone(),
                    assignment,
                };
                self.reply_sync(t, r);
            }
        }
        self.transition(GroupState::Stable, now_ms);
    }

    /// Heartbeat: keeps the member's session and tells it whether to
    /// rejoin.
    pub fn heartbeat(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now_ms: i64,
    ) -> ErrorCode {
        match self.state {
            GroupState::Dead => return ErrorCode::CoordinatorNotAvailable,
            GroupState::Empty => return ErrorCode::UnknownMemberId,
            _ => {}
        }
        if let Err(e) = self.check_instance(member_id, instance_id) {
            return e;
        }
        let Some(m) = self.members.get_mut(member_id) else {
            return ErrorCode::UnknownMemberId;
        };
        if generation != self.generation {
            return ErrorCode::IllegalGeneration;
        }
        m.heartbeat_deadline_ms = now_ms + i64::from(m.session_timeout_ms);
        if self.state == GroupState::PreparingRebalance {
            ErrorCode::RebalanceInProgress
        } else {
            ErrorCode::None
        }
    }

    /// LeaveGroup for one member, named by member id or instance id.
    pub fn leave(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        now_ms: i64,
        cfg: &GroupConfig,
    ) -> ErrorCode {
        if self.state == GroupState::Dead {
            return ErrorCode::CoordinatorNotAvailable;
        }
        let id = match instance_id {
            Some(i) => match self.statics.get(i) {
                None => return ErrorCode::UnknownMemberId,
                Some(owner) if !member_id.is_empty() && owner != member_id => {
                    return ErrorCode::FencedInstanceId
                }
                Some(owner) => owner.clone(),
            },
            None => member_id.to_string(),
        };
        if self.pending.remove(&id).is_some() {
            self.advance(now_ms);
            return ErrorCode::None;
        }
        if !self.members.contains_key(&id) {
            return ErrorCode::UnknownMemberId;
        }
        self.member_left(&id, now_ms, cfg);
        self.advance(now_ms);
        ErrorCode::None
    }

    /// Checks an OffsetCommit against membership. A commit with no member
    /// and generation -1 to an Empty group is a plain consumer's commit.
    pub fn check_commit(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now_ms: i64,
    ) -> Result<(), ErrorCode> {
        if self.state == GroupState::Dead {
            return Err(ErrorCode::CoordinatorNotAvailable);
        }
        // A simple commit (no member) to an empty group names no member
        // to check.
        if generation < 0 && self.state == GroupState::Empty {
            return Ok(());
        }
        self.check_instance(member_id, instance_id)?;
        match self.state {
            GroupState::Empty => return Err(ErrorCode::UnknownMemberId),
            GroupState::CompletingRebalance => return Err(ErrorCode::RebalanceInProgress),
            _ => {}
        }
        let Some(m) = self.members.get_mut(member_id) else {
            return Err(ErrorCode::UnknownMemberId);
        };
        if generation != self.generation {
            return Err(ErrorCode::IllegalGeneration);
        }
        // A commit is as good as a heartbeat.
        m.heartbeat_deadline_ms = now_ms + i64::from(m.session_timeout_ms);
        Ok(())
    }

    /// Checks a TxnOffsetCommit as Kafka does for classic groups: v0–v2
    /// name no member (generation -1, empty member id), which is always
    /// accepted; a named member must exist in the current generation. A
    /// rebalance under way does not refuse it, unlike OffsetCommit: the
    /// offsets only count once the transaction commits.
    pub fn check_txn_commit(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), ErrorCode> {
        if self.state == GroupState::Dead {
            return Err(ErrorCode::CoordinatorNotAvailable);
        }
        if generation < 0 && self.state == GroupState::Empty {
            return Ok(());
        }
        if generation < 0 && member_id.is_empty() && instance_id.is_none() {
            return Ok(());
        }
        self.check_instance(member_id, instance_id)?;
        if !self.members.contains_key(member_id) {
            return Err(ErrorCode::UnknownMemberId);
        }
        if generation != self.generation {
            return Err(ErrorCode::IllegalGeneration);
        }
        Ok(())
    }

    /// Records a committed offset read from, or just written to, the log.
    pub fn apply_offset(&mut self, topic: &str, partition: i32, c: Committed) {
        let key = (topic.to_string(), partition);
        match self.offsets.get(&key) {
            Some(old) if old.log_offset > c.log_offset => {}
            _ => {
                self.offsets.insert(key, c);
            }
        }
    }

    /// Removes an offset (tombstone or OffsetDelete).
    pub fn remove_offset(&mut self, topic: &str, partition: i32, log_offset: i64) {
        let key = (topic.to_string(), partition);
        if self
            .offsets
            .get(&key)
            .is_some_and(|old| old.log_offset <= log_offset)
        {
            self.offsets.remove(&key);
        }
    }

    /// Offsets due to expire: all of an Empty consumer group once it has
    /// been empty for `retention_ms`; for a group that only stores
    /// offsets, each once `retention_ms` passed since its commit.
    pub fn expired_offsets(&self, now_ms: i64, retention_ms: i64) -> Vec<(String, i32)> {
        if self.state != GroupState::Empty {
            return Vec::new();
        }
        let group_expired = now_ms - self.state_since_ms >= retention_ms;
        self.offsets
            .iter()
            .filter(|(_, c)| match self.protocol_type {
                Some(_) => group_expired,
                None => now_ms - c.value.commit_timestamp_ms >= retention_ms,
            })
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Whether the group can be forgotten: Empty with no offsets.
    pub fn is_removable(&self) -> bool {
        self.state == GroupState::Empty && self.offsets.is_empty() && self.pending.is_empty()
    }

    /// Timers: pending member ids, sessions, the missed-sync deadline and
    /// the join deadline.
    pub fn tick(&mut self, now_ms: i64, cfg: &GroupConfig) {
        self.pending.retain(|_, deadline| *deadline > now_ms);
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| {
                m.awaiting_join.is_none()
                    && m.awaiting_sync.is_none()
                    && m.heartbeat_deadline_ms <= now_ms
            })
            .map(|m| m.id.clone())
            .collect();
        for id in expired {
            tracing::info!(group = %self.id, member = %id, "member session expired");
            self.member_left(&id, now_ms, cfg);
        }
        if self.sync_deadline_ms.is_some_and(|d| d <= now_ms) {
            self.sync_deadline_ms = None;
            let missing: Vec<String> = std::mem::take(&mut self.pending_sync).into_iter().collect();
            for id in missing {
                tracing::info!(group = %self.id, member = %id, "member sent no SyncGroup in time");
                self.member_left(&id, now_ms, cfg);
            }
        }
        self.advance(now_ms);
    }

    fn advance(&mut self, now_ms: i64) {
        self.maybe_complete_join(now_ms);
    }

    /// The group's record: membership with each member's metadata for
    /// the chosen protocol and its assignment.
    pub fn stored_value(&self, assignments: Option<&BTreeMap<String, Bytes>>) -> GroupValue {
        let protocol = self.protocol.clone().unwrap_or_default();
        GroupValue {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol: self.protocol.clone(),
            leader: self.leader.clone(),
            state_timestamp_ms: self.state_since_ms,
            members: self
                .members
                .values()
                .map(|m| MemberValue {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    session_timeout_ms: m.session_timeout_ms,
                    subscription: m.metadata(&protocol),
                    assignment: assignments
                        .and_then(|a| a.get(&m.id).cloned())
                        .unwrap_or_else(|| m.assignment.clone()),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
