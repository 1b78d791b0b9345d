//! One consumer-protocol group as a pure state machine: members with
//! epochs, the group epoch, the target assignment and each member's
//! reconciliation. No I/O, no clock; the coordinator shell stores the
//! group epoch and delivers answers.
//!
//! ```text
//!   Empty ──join──▶ Assigning ──target computed──▶ Reconciling ──all at target──▶ Stable
//!     ▲                 ▲                                                          │
//!     └── last member ──┴──────── join, leave, expiry, subscription change ────────┘
//! ```
//!
//! The target is computed in the same step that bumps the group epoch,
//! so Assigning is never seen between requests; it is kept for the
//! names Kafka reports.

use super::assignor::{AssignorKind, AssignorMember, Targets};
use super::reconcile::{MemberAssignment, MemberState};
use super::records::{AssignmentRecord, MemberRecord};
use super::{count, holds, is_subset, union, Assignment, ConsumerConfig, Topics};
use super::{MEMBERS_MAX, PARTITIONS_MAX, REGEX_LEN_MAX};
use regex::Regex;
use sluice_protocol::ErrorCode;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use uuid::Uuid;

/// Member epoch of a leave.
pub const LEAVE_EPOCH: i32 = -1;
/// Member epoch of a static member's temporary leave.
pub const LEAVE_STATIC_EPOCH: i32 = -2;

/// A group's state, with Kafka's names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsumerGroupState {
    Empty,
    Assigning,
    Reconciling,
    Stable,
}

impl ConsumerGroupState {
    pub fn name(self) -> &'static str {
        match self {
            ConsumerGroupState::Empty => "Empty",
            ConsumerGroupState::Assigning => "Assigning",
            ConsumerGroupState::Reconciling => "Reconciling",
            ConsumerGroupState::Stable => "Stable",
        }
    }
}

/// A ConsumerGroupHeartbeat, decoded. `None` and -1 mean "unchanged".
#[derive(Clone, Debug, Default)]
pub struct HeartbeatRequest {
    pub version: i16,
    pub member_id: String,
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub rebalance_timeout_ms: i32,
    pub subscribed_topic_names: Option<Vec<String>>,
    pub subscribed_topic_regex: Option<String>,
    pub server_assignor: Option<String>,
    pub owned: Option<Vec<(Uuid, Vec<i32>)>>,
    pub client_id: String,
    pub client_host: String,
}

/// A ConsumerGroupHeartbeat answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeartbeatResult {
    pub error: ErrorCode,
    pub message: Option<String>,
    pub member_id: Option<String>,
    pub member_epoch: i32,
    pub heartbeat_interval_ms: i32,
    pub assignment: Option<Assignment>,
}

impl HeartbeatResult {
    pub fn error(error: ErrorCode, message: impl Into<String>) -> HeartbeatResult {
        HeartbeatResult {
            error,
            message: Some(message.into()),
            member_id: None,
            member_epoch: 0,
            heartbeat_interval_ms: 0,
            assignment: None,
        }
    }
}

type Refusal = (ErrorCode, String);

fn refuse<T>(code: ErrorCode, message: impl Into<String>) -> Result<T, Refusal> {
    Err((code, message.into()))
}

/// One member.
#[derive(Clone, Debug)]
pub struct ConsumerMember {
    pub id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub topic_names: Vec<String>,
    pub regex: Option<Regex>,
    pub server_assignor: Option<AssignorKind>,
    pub assignment: MemberAssignment,
    /// Set for a member that speaks the classic protocol.
    pub classic: Option<classic::ClassicMeta>,
    session_deadline_ms: i64,
    revoke_deadline_ms: Option<i64>,
    /// A classic member told to rejoin must send its JoinGroup by then
    /// (its rebalance timeout after it was first told), as in Kafka.
    join_deadline_ms: Option<i64>,
    /// A classic member answered a JoinGroup must send its SyncGroup by
    /// then (its rebalance timeout after the answer), as in Kafka.
    sync_deadline_ms: Option<i64>,
}

impl ConsumerMember {
    /// Whether the member subscribes to topic `name`.
    pub fn subscribes(&self, name: &str) -> bool {
        self.topic_names.iter().any(|t| t == name)
            || self.regex.as_ref().is_some_and(|r| r.is_match(name))
    }
}

/// A group as ConsumerGroupDescribe reports it.
#[derive(Clone, Debug)]
pub struct ConsumerGroupDescription {
    pub state: ConsumerGroupState,
    pub epoch: i32,
    pub assignment_epoch: i32,
    pub assignor: String,
    pub members: Vec<(ConsumerMember, Assignment)>,
}

/// One consumer-protocol group.
#[derive(Debug)]
pub struct ConsumerGroup {
    pub id: String,
    epoch: i32,
    assignment_epoch: i32,
    members: BTreeMap<String, ConsumerMember>,
    /// group.instance.id → member id.
    statics: HashMap<String, String>,
    target: Targets,
    /// The subscribed topics the target was computed from.
    subscribed: Topics,
    assignor: AssignorKind,
    /// The group epoch changed and is not yet stored.
    needs_store: bool,
    /// Members whose records changed (true) or who left (false) since
    /// the last [`ConsumerGroup::take_changes`].
    changed_members: BTreeMap<String, bool>,
}

/// What to store after a request: the group epoch if it changed, and
/// each changed member's records (`None`: tombstones).
#[derive(Debug, Default)]
pub struct Changes {
    pub epoch: Option<i32>,
    pub members: Vec<(String, Option<(MemberRecord, AssignmentRecord)>)>,
}

/// Compiles a subscription regex as Kafka's RE2/J reads it: the whole
/// topic name must match.
pub fn compile_regex(re: &str) -> Result<Regex, String> {
    if re.len() > REGEX_LEN_MAX {
        return Err(format!("the regex is longer than {REGEX_LEN_MAX} bytes"));
    }
    Regex::new(&format!("^(?:{re})$")).map_err(|e| e.to_string())
}

impl ConsumerGroup {
    pub fn new(id: &str, assignor: AssignorKind) -> ConsumerGroup {
        ConsumerGroup {
            id: id.to_string(),
            epoch: 0,
            assignment_epoch: 0,
            members: BTreeMap::new(),
            statics: HashMap::new(),
            target: Targets::new(),
            subscribed: Topics::new(),
            assignor,
            needs_store: false,
            changed_members: BTreeMap::new(),
        }
    }

    /// A group read back from its stored epoch: members rejoin, and
    /// every epoch from here on is above any handed out before.
    pub fn restored(id: &str, epoch: i32, assignor: AssignorKind) -> ConsumerGroup {
        let mut g = ConsumerGroup::new(id, assignor);
        g.epoch = epoch;
        g.assignment_epoch = epoch;
        g
    }

    pub fn epoch(&self) -> i32 {
        self.epoch
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn members(&self) -> impl Iterator<Item = &ConsumerMember> {
        self.members.values()
    }

    pub fn member(&self, id: &str) -> Option<&ConsumerMember> {
        self.members.get(id)
    }

    /// What changed since the last call, to store.
    pub fn take_changes(&mut self) -> Changes {
        let epoch = std::mem::take(&mut self.needs_store).then_some(self.epoch);
        let members = std::mem::take(&mut self.changed_members)
            .into_iter()
            .map(|(id, present)| {
                let records = present.then(|| self.records_of(&id)).flatten();
                (id, records)
            })
            .collect();
        Changes { epoch, members }
    }

    /// A member's records as stored.
    pub fn records_of(&self, id: &str) -> Option<(MemberRecord, AssignmentRecord)> {
        let m = self.members.get(id)?;
        let member = MemberRecord {
            instance_id: m.instance_id.clone(),
            rack_id: m.rack_id.clone(),
            client_id: m.client_id.clone(),
            client_host: m.client_host.clone(),
            topic_names: m.topic_names.clone(),
            regex: m.regex.as_ref().map(|r| unanchor(r.as_str()).to_string()),
            rebalance_timeout_ms: m.rebalance_timeout_ms,
            server_assignor: m.server_assignor.map(|a| a.name().to_string()),
            classic: m.classic.as_ref().map(classic::ClassicMeta::record),
        };
        let a = &m.assignment;
        let assignment = AssignmentRecord {
            epoch: a.epoch,
            previous_epoch: a.previous_epoch,
            state: a.state.code(),
            assigned: a.assigned.clone(),
            revoking: a.revoking.clone(),
        };
        Some((member, assignment))
    }

    /// Replays a stored epoch: epochs only grow.
    pub fn restore_epoch(&mut self, epoch: i32) {
        self.epoch = self.epoch.max(epoch);
        self.assignment_epoch = self.epoch;
    }

    /// Replays a member's stored metadata; its session starts now.
    pub fn restore_member(&mut self, id: &str, r: MemberRecord, now_ms: i64, cfg: &ConsumerConfig) {
        let assignor = r
            .server_assignor
            .as_deref()
            .and_then(|n| cfg.assignors.iter().copied().find(|k| k.name() == n));
        let regex = r.regex.as_deref().and_then(|re| compile_regex(re).ok());
        let m = self
            .members
            .entry(id.to_string())
            .or_insert_with(|| ConsumerMember {
                id: id.to_string(),
                instance_id: None,
                rack_id: None,
                client_id: String::new(),
                client_host: String::new(),
                rebalance_timeout_ms: -1,
                topic_names: Vec::new(),
                regex: None,
                server_assignor: None,
                assignment: MemberAssignment::joining(),
                classic: None,
                session_deadline_ms: 0,
                revoke_deadline_ms: None,
                join_deadline_ms: None,
                sync_deadline_ms: None,
            });
        if let Some(i) = &r.instance_id {
            self.statics.insert(i.clone(), id.to_string());
        }
        m.instance_id = r.instance_id;
        m.rack_id = r.rack_id;
        m.client_id = r.client_id;
        m.client_host = r.client_host;
        m.topic_names = r.topic_names;
        m.regex = regex;
        m.rebalance_timeout_ms = r.rebalance_timeout_ms;
        m.server_assignor = assignor;
        m.classic = r.classic.map(classic::ClassicMeta::from_record);
        let session_ms = match &m.classic {
            Some(c) => c.session_timeout_ms,
            None => cfg.session_timeout_ms,
        };
        m.session_deadline_ms = now_ms + i64::from(session_ms);
    }

    /// Replays a member's stored assignment.
    pub fn restore_assignment(&mut self, id: &str, r: AssignmentRecord, now_ms: i64) {
        let Some(m) = self.members.get_mut(id) else {
            return;
        };
        m.assignment = MemberAssignment {
            epoch: r.epoch,
            previous_epoch: r.previous_epoch,
            state: match r.state {
                1 => MemberState::UnrevokedPartitions,
                2 => MemberState::UnreleasedPartitions,
                _ => MemberState::Stable,
            },
            given_at: union(&r.assigned, &r.revoking)
                .iter()
                .flat_map(|(t, ps)| ps.iter().map(move |p| ((*t, *p), r.epoch)))
                .collect(),
            assigned: r.assigned,
            revoking: r.revoking,
        };
        m.revoke_deadline_ms = (m.assignment.state == MemberState::UnrevokedPartitions)
            .then(|| now_ms + i64::from(m.rebalance_timeout_ms.max(0)));
        self.epoch = self.epoch.max(r.epoch);
        self.assignment_epoch = self.epoch;
    }

    /// Replays a member's tombstone.
    pub fn restore_removal(&mut self, id: &str) {
        if let Some(m) = self.members.remove(id) {
            if let Some(i) = &m.instance_id {
                self.statics.remove(i);
            }
        }
    }

    pub fn state(&self) -> ConsumerGroupState {
        if self.members.is_empty() {
            ConsumerGroupState::Empty
        } else if self.epoch != self.assignment_epoch {
            ConsumerGroupState::Assigning
        } else if self.members.values().any(|m| {
            m.assignment.epoch != self.assignment_epoch || m.assignment.state != MemberState::Stable
        }) {
            ConsumerGroupState::Reconciling
        } else {
            ConsumerGroupState::Stable
        }
    }

    /// Whether topic `name` is subscribed by any member.
    pub fn subscribes(&self, name: &str) -> bool {
        self.members.values().any(|m| m.subscribes(name))
    }

    fn bump(&mut self) {
        self.epoch += 1;
        self.needs_store = true;
    }

    /// Handles one heartbeat.
    pub fn heartbeat(
        &mut self,
        req: HeartbeatRequest,
        now_ms: i64,
        topics: &Topics,
        cfg: &ConsumerConfig,
    ) -> HeartbeatResult {
        let result = match validate(&req, cfg) {
            Err(e) => Err(e),
            Ok(parsed) => match req.member_epoch {
                LEAVE_EPOCH | LEAVE_STATIC_EPOCH => self.leave(&req, topics, cfg),
                _ => self.beat(req, parsed, now_ms, topics, cfg),
            },
        };
        match result {
            Ok(r) => r,
            Err((code, message)) => HeartbeatResult::error(code, message),
        }
    }

    fn beat(
        &mut self,
        req: HeartbeatRequest,
        parsed: Parsed,
        now_ms: i64,
        topics: &Topics,
        cfg: &ConsumerConfig,
    ) -> Result<HeartbeatResult, Refusal> {
        let full = req.member_epoch == 0
            || (req.rebalance_timeout_ms != -1
                && req.subscribed_topic_names.is_some()
                && req.owned.is_some());
        let (id, created) = self.admit(&req, &parsed)?;
        let stored = self.records_of(&id);
        let m = self.members.get_mut(&id).expect("admitted");
        let before = m.assignment.assigned.clone();
        let mut changed = created;
        if let Some(names) = req.subscribed_topic_names {
            let mut names = names;
            names.sort();
            names.dedup();
            changed |= names != m.topic_names;
            m.topic_names = names;
        }
        if req.subscribed_topic_regex.is_some() {
            let old = m.regex.as_ref().map(Regex::as_str);
            let new = parsed.regex.as_ref().map(Regex::as_str);
            changed |= old != new;
            m.regex = parsed.regex;
        }
        if req.server_assignor.is_some() {
            changed |= m.server_assignor != parsed.assignor;
            m.server_assignor = parsed.assignor;
        }
        if req.rebalance_timeout_ms != -1 {
            m.rebalance_timeout_ms = req.rebalance_timeout_ms;
        }
        if req.rack_id.is_some() {
            m.rack_id = req.rack_id;
        }
        m.client_id = req.client_id;
        m.client_host = req.client_host;
        m.session_deadline_ms = now_ms + i64::from(cfg.session_timeout_ms);
        if changed {
            self.bump();
        }
        self.refresh(topics, cfg);
        self.reconcile(&id, parsed.owned.as_ref(), now_ms);
        if created || self.records_of(&id) != stored {
            self.changed_members.insert(id.clone(), true);
        }
        let m = &self.members[&id];
        let assignment =
            (full || m.assignment.assigned != before).then(|| m.assignment.assigned.clone());
        Ok(HeartbeatResult {
            error: ErrorCode::None,
            message: None,
            member_id: Some(id),
            member_epoch: m.assignment.epoch,
            heartbeat_interval_ms: cfg.heartbeat_interval_ms,
            assignment,
        })
    }

    /// Finds or creates the member a heartbeat is from, checking its
    /// epoch and instance id. Returns its member id, and whether it is
    /// new to the group.
    fn admit(
        &mut self,
        req: &HeartbeatRequest,
        parsed: &Parsed,
    ) -> Result<(String, bool), Refusal> {
        if req.member_epoch == 0 {
            return self.join(req, parsed);
        }
        if let Some(instance) = &req.instance_id {
            match self.statics.get(instance) {
                None => return refuse(ErrorCode::UnknownMemberId, "unknown static member"),
                Some(owner) if *owner != req.member_id => {
                    return refuse(
                        ErrorCode::FencedInstanceId,
                        "the instance id belongs to another member",
                    )
                }
                Some(_) => {}
            }
        }
        let Some(m) = self.members.get(&req.member_id) else {
            return refuse(ErrorCode::UnknownMemberId, "unknown member id");
        };
        if m.classic.is_some() {
            return refuse(
                ErrorCode::UnknownMemberId,
                "the member speaks the classic protocol; rejoin",
            );
        }
        let a = &m.assignment;
        let received = req.member_epoch;
        let resent = received == a.previous_epoch
            && parsed
                .owned
                .as_ref()
                .is_some_and(|o| is_subset(o, &a.assigned));
        if received > a.epoch || (received < a.epoch && !resent) {
            return refuse(
                ErrorCode::FencedMemberEpoch,
                format!(
                    "member epoch {received} does not match the coordinator's {}; rejoin",
                    a.epoch
                ),
            );
        }
        Ok((req.member_id.clone(), false))
    }

    /// A heartbeat with epoch 0: a new member, a member rejoining, or a
    /// static member coming back under a new member id.
    fn join(&mut self, req: &HeartbeatRequest, parsed: &Parsed) -> Result<(String, bool), Refusal> {
        let id = match req.member_id.is_empty() {
            true => Uuid::new_v4().to_string(),
            false => req.member_id.clone(),
        };
        if let Some(instance) = &req.instance_id {
            if let Some(old_id) = self.statics.get(instance).cloned() {
                if old_id != id {
                    self.replace_static(&old_id, &id, None)?;
                    return Ok((id, false));
                }
            }
        }
        if let Some(m) = self.members.get_mut(&id) {
            // It gave up what it owned before rejoining.
            m.assignment = MemberAssignment::joining();
            m.revoke_deadline_ms = None;
            m.join_deadline_ms = None;
            m.sync_deadline_ms = None;
            m.classic = None;
            self.changed_members.insert(id.clone(), true);
            return Ok((id, false));
        }
        if self.members.len() >= MEMBERS_MAX {
            return refuse(
                ErrorCode::GroupMaxSizeReached,
                format!("the group has {MEMBERS_MAX} members"),
            );
        }
        let m = ConsumerMember {
            id: id.clone(),
            instance_id: req.instance_id.clone(),
            rack_id: None,
            client_id: String::new(),
            client_host: String::new(),
            rebalance_timeout_ms: req.rebalance_timeout_ms,
            topic_names: Vec::new(),
            regex: None,
            server_assignor: parsed.assignor,
            assignment: MemberAssignment::joining(),
            classic: None,
            session_deadline_ms: 0,
            revoke_deadline_ms: None,
            join_deadline_ms: None,
            sync_deadline_ms: None,
        };
        if let Some(instance) = &req.instance_id {
            self.statics.insert(instance.clone(), id.clone());
        }
        self.members.insert(id.clone(), m);
        Ok((id, true))
    }

    /// A static member's new incarnation takes over its predecessor's
    /// place: its target and what it was assigned, at epoch 0. As in
    /// Kafka, a consumer-protocol member replacing another one needs the
    /// predecessor to have left temporarily (epoch -2); where either of
    /// the two speaks the classic protocol the replacement is always
    /// allowed, since a classic member never sends that leave. So a
    /// consumer-protocol member restarted from a classic one keeps its
    /// partitions across the upgrade, and back.
    fn replace_static(
        &mut self,
        old_id: &str,
        new_id: &str,
        classic: Option<classic::ClassicMeta>,
    ) -> Result<(), Refusal> {
        let old = self
            .members
            .get(old_id)
            .expect("static members are members");
        if classic.is_none() && old.classic.is_none() && old.assignment.epoch != LEAVE_STATIC_EPOCH
        {
            return refuse(
                ErrorCode::UnreleasedInstanceId,
                "the instance id is still in use by an active member",
            );
        }
        if self.members.contains_key(new_id) {
            return refuse(ErrorCode::InvalidRequest, "the member id is already in use");
        }
        let mut m = self.members.remove(old_id).expect("checked");
        m.id = new_id.to_string();
        m.assignment.epoch = 0;
        m.assignment.previous_epoch = 0;
        // Partitions still being revoked stay so until the new incarnation
        // reports them gone (at epoch 0 it owns nothing); a member made
        // Stable here would keep them owned for good.
        if m.assignment.state != MemberState::UnrevokedPartitions {
            m.assignment.state = MemberState::Stable;
        }
        m.classic = classic;
        m.join_deadline_ms = None;
        m.sync_deadline_ms = None;
        if let Some(t) = self.target.remove(old_id) {
            self.target.insert(new_id.to_string(), t);
        }
        let instance = m.instance_id.clone().expect("static");
        self.statics.insert(instance, new_id.to_string());
        self.members.insert(new_id.to_string(), m);
        self.changed_members.insert(old_id.to_string(), false);
        self.changed_members.insert(new_id.to_string(), true);
        Ok(())
    }

    /// Epoch -1 (leave) or -2 (a static member's temporary leave).
    fn leave(
        &mut self,
        req: &HeartbeatRequest,
        topics: &Topics,
        cfg: &ConsumerConfig,
    ) -> Result<HeartbeatResult, Refusal> {
        let id = match &req.instance_id {
            Some(instance) => match self.statics.get(instance) {
                None => return refuse(ErrorCode::UnknownMemberId, "unknown static member"),
                Some(owner) if *owner != req.member_id => {
                    return refuse(
                        ErrorCode::FencedInstanceId,
                        "the instance id belongs to another member",
                    )
                }
                Some(owner) => owner.clone(),
            },
            None if self.members.contains_key(&req.member_id) => req.member_id.clone(),
            None => return refuse(ErrorCode::UnknownMemberId, "unknown member id"),
        };
        if req.member_epoch == LEAVE_STATIC_EPOCH {
            let m = self.members.get_mut(&id).expect("found");
            if m.assignment.epoch != LEAVE_STATIC_EPOCH {
                m.assignment.previous_epoch = m.assignment.epoch;
                m.assignment.epoch = LEAVE_STATIC_EPOCH;
                self.changed_members.insert(id.clone(), true);
            }
        } else {
            self.remove(&id);
            self.refresh(topics, cfg);
        }
        Ok(HeartbeatResult {
            error: ErrorCode::None,
            message: None,
            member_id: Some(id),
            member_epoch: req.member_epoch,
            heartbeat_interval_ms: 0,
            assignment: None,
        })
    }

    fn remove(&mut self, id: &str) {
        if let Some(m) = self.members.remove(id) {
            if let Some(i) = &m.instance_id {
                self.statics.remove(i);
            }
            self.target.remove(id);
            self.changed_members.insert(id.to_string(), false);
            self.bump();
        }
    }

    /// Re-reads the subscribed topics; a change bumps the group epoch.
    /// Then recomputes the target if the epoch moved past it.
    fn refresh(&mut self, topics: &Topics, cfg: &ConsumerConfig) {
        let subscribed: Topics = topics
            .iter()
            .filter(|(name, _)| self.subscribes(name))
            .map(|(n, v)| (n.clone(), *v))
            .collect();
        if subscribed != self.subscribed {
            self.subscribed = subscribed;
            self.bump();
        }
        if self.epoch != self.assignment_epoch {
            self.assign(cfg);
        }
    }

    /// The assignor most members ask for, else the configured default.
    fn choose_assignor(&self, cfg: &ConsumerConfig) -> AssignorKind {
        let mut votes: BTreeMap<&str, (usize, AssignorKind)> = BTreeMap::new();
        for k in self.members.values().filter_map(|m| m.server_assignor) {
            votes.entry(k.name()).or_insert((0, k)).0 += 1;
        }
        votes
            .values()
            .max_by_key(|(n, _)| *n)
            .map(|(_, k)| *k)
            .unwrap_or(cfg.assignors[0])
    }

    fn assign(&mut self, cfg: &ConsumerConfig) {
        self.assignor = self.choose_assignor(cfg);
        let members: Vec<AssignorMember> = self
            .members
            .values()
            .map(|m| AssignorMember {
                id: m.id.clone(),
                topics: self
                    .subscribed
                    .iter()
                    .filter(|(name, _)| m.subscribes(name))
                    .map(|(_, (id, _))| *id)
                    .collect(),
                // After a coordinator move the target is gone: stick to
                // what the member owns.
                previous: self
                    .target
                    .get(&m.id)
                    .cloned()
                    .unwrap_or_else(|| m.assignment.owned()),
            })
            .collect();
        let topics: BTreeMap<Uuid, i32> = self.subscribed.values().copied().collect();
        self.target = self.assignor.assign(&members, &topics);
        self.assignment_epoch = self.epoch;
    }

    /// Moves member `id` towards its target.
    fn reconcile(&mut self, id: &str, reported: Option<&Assignment>, now_ms: i64) {
        if self.members[id].assignment.epoch == LEAVE_STATIC_EPOCH {
            return;
        }
        let target = self.target.get(id).cloned().unwrap_or_default();
        let others: Vec<Assignment> = self
            .members
            .values()
            .filter(|m| m.id != id)
            .map(|m| m.assignment.owned())
            .collect();
        let taken = |t: Uuid, p: i32| others.iter().any(|o| holds(o, t, p));
        let epoch = self.assignment_epoch;
        let m = self.members.get_mut(id).expect("member");
        let was = m.assignment.state;
        m.assignment.reconcile(epoch, &target, reported, taken);
        m.revoke_deadline_ms = match m.assignment.state {
            MemberState::UnrevokedPartitions if was != MemberState::UnrevokedPartitions => {
                Some(now_ms + i64::from(m.rebalance_timeout_ms.max(0)))
            }
            MemberState::UnrevokedPartitions => m.revoke_deadline_ms,
            _ => None,
        };
    }

    /// Timers: members whose session expired, that did not revoke
    /// within their rebalance timeout, or classic members that did not
    /// rejoin or sync within it, are removed and their partitions go to
    /// the others.
    pub fn tick(&mut self, now_ms: i64, topics: &Topics, cfg: &ConsumerConfig) {
        let due = |d: Option<i64>| d.is_some_and(|d| d <= now_ms);
        let expired: Vec<(String, &'static str)> = self
            .members
            .values()
            .filter_map(|m| {
                let why = if m.session_deadline_ms <= now_ms {
                    "session expired"
                } else if due(m.revoke_deadline_ms) {
                    "did not revoke within its rebalance timeout"
                } else if due(m.join_deadline_ms) {
                    "did not rejoin within its rebalance timeout"
                } else if due(m.sync_deadline_ms) {
                    "did not sync within its rebalance timeout"
                } else {
                    return None;
                };
                Some((m.id.clone(), why))
            })
            .collect();
        if expired.is_empty() {
            return;
        }
        for (id, why) in expired {
            tracing::info!(group = %self.id, member = %id, "consumer group member fenced: {why}");
            self.remove(&id);
        }
        self.refresh(topics, cfg);
    }

    /// Checks an OffsetCommit: the member must be known and at its
    /// current epoch, or (KIP-1251) at an older one while it still owns
    /// every partition `committed` names since that epoch: the member
    /// may commit before the heartbeat answer that moved its epoch
    /// reaches it. A commit with no member id and a negative epoch is an
    /// admin's or a plain consumer's, allowed while the group is empty.
    pub fn check_commit(
        &self,
        member_id: &str,
        epoch: i32,
        version: i16,
        committed: &[(&str, i32)],
    ) -> Result<(), ErrorCode> {
        if epoch < 0 && self.members.is_empty() {
            return Ok(());
        }
        let Some(m) = self.members.get(member_id) else {
            return Err(ErrorCode::UnknownMemberId);
        };
        if m.classic.is_some() {
            // A classic member commits with its generation, which is its
            // member epoch, at any OffsetCommit version.
            return match epoch == m.assignment.epoch {
                true => Ok(()),
                false => Err(ErrorCode::IllegalGeneration),
            };
        }
        if version < 9 {
            // Members of a consumer-protocol group commit with their
            // member epoch, which OffsetCommit names only from v9.
            return Err(ErrorCode::UnsupportedVersion);
        }
        if epoch == m.assignment.epoch {
            return Ok(());
        }
        let owned_then = |&(t, p): &(&str, i32)| {
            self.subscribed
                .get(t)
                .is_some_and(|&(id, _)| m.assignment.owned_since(id, p, epoch))
        };
        match epoch < m.assignment.epoch && committed.iter().all(owned_then) {
            true => Ok(()),
            false => Err(ErrorCode::StaleMemberEpoch),
        }
    }

    /// Checks a TxnOffsetCommit as Kafka does: no member named (epoch
    /// -1, empty id, no instance) is accepted, as TxnOffsetCommit v0–v2
    /// carry none; a named member must exist, and a different epoch is
    /// ILLEGAL_GENERATION (Kafka maps its stale-epoch error so).
    pub fn check_txn_commit(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
        epoch: i32,
    ) -> Result<(), ErrorCode> {
        if epoch < 0 && self.members.is_empty() {
            return Ok(());
        }
        if epoch == -1 && member_id.is_empty() && instance_id.is_none() {
            return Ok(());
        }
        let Some(m) = self.members.get(member_id) else {
            return Err(ErrorCode::UnknownMemberId);
        };
        if epoch != m.assignment.epoch {
            return Err(ErrorCode::IllegalGeneration);
        }
        Ok(())
    }

    /// Checks an OffsetFetch (v9+) naming a member: as a commit, but an
    /// unnamed member with a negative epoch may always read.
    pub fn check_fetch(&self, member_id: Option<&str>, epoch: i32) -> Result<(), ErrorCode> {
        let member_id = member_id.unwrap_or_default();
        if epoch < 0 && member_id.is_empty() {
            return Ok(());
        }
        let Some(m) = self.members.get(member_id) else {
            return Err(ErrorCode::UnknownMemberId);
        };
        if epoch != m.assignment.epoch {
            return Err(ErrorCode::StaleMemberEpoch);
        }
        Ok(())
    }

    pub fn describe(&self) -> ConsumerGroupDescription {
        ConsumerGroupDescription {
            state: self.state(),
            epoch: self.epoch,
            assignment_epoch: self.assignment_epoch,
            assignor: self.assignor.name().to_string(),
            members: self
                .members
                .values()
                .map(|m| {
                    (
                        m.clone(),
                        self.target.get(&m.id).cloned().unwrap_or_default(),
                    )
                })
                .collect(),
        }
    }

    /// Names of the subscribed topics that exist.
    pub fn subscribed_topics(&self) -> BTreeSet<String> {
        self.subscribed.keys().cloned().collect()
    }

    /// Checks the invariants: no partition has two owners; each member
    /// owns only partitions of its target or being revoked.
    pub fn check_invariants(&self) {
        let mut owners: BTreeMap<(Uuid, i32), &str> = BTreeMap::new();
        for m in self.members.values() {
            for (t, ps) in &m.assignment.owned() {
                for &p in ps {
                    if let Some(other) = owners.insert((*t, p), &m.id) {
                        panic!("partition {t}:{p} owned by {other} and {}", m.id);
                    }
                }
            }
            assert!(count(&m.assignment.assigned) <= PARTITIONS_MAX);
        }
        assert!(self.assignment_epoch <= self.epoch);
    }
}

/// A regex as the member sent it, without the anchors added to match
/// whole topic names.
pub fn unanchor(re: &str) -> &str {
    re.strip_prefix("^(?:")
        .and_then(|r| r.strip_suffix(")$"))
        .unwrap_or(re)
}

/// What validation parsed from a heartbeat.
struct Parsed {
    regex: Option<Regex>,
    assignor: Option<AssignorKind>,
    owned: Option<Assignment>,
}

/// Kafka's checks of a heartbeat's fields, before the group is looked at.
fn validate(req: &HeartbeatRequest, cfg: &ConsumerConfig) -> Result<Parsed, Refusal> {
    let epoch = req.member_epoch;
    if req.member_id.is_empty() && (req.version >= 1 || epoch != 0) {
        return refuse(ErrorCode::InvalidRequest, "MemberId can't be empty.");
    }
    if req.instance_id.as_deref() == Some("") {
        return refuse(ErrorCode::InvalidRequest, "InstanceId can't be empty.");
    }
    if epoch == 0 {
        if req.rebalance_timeout_ms == -1 {
            return refuse(
                ErrorCode::InvalidRequest,
                "RebalanceTimeoutMs must be provided in first request.",
            );
        }
        if req.owned.as_ref().is_none_or(|o| !o.is_empty()) {
            return refuse(
                ErrorCode::InvalidRequest,
                "TopicPartitions must be empty when (re-)joining.",
            );
        }
        if req.subscribed_topic_names.is_none() && req.subscribed_topic_regex.is_none() {
            return refuse(
                ErrorCode::InvalidRequest,
                "SubscribedTopicNames or SubscribedTopicRegex must be set in first request.",
            );
        }
    } else if epoch == LEAVE_STATIC_EPOCH && req.instance_id.is_none() {
        return refuse(ErrorCode::InvalidRequest, "InstanceId can't be null.");
    } else if epoch < LEAVE_STATIC_EPOCH {
        return refuse(ErrorCode::InvalidRequest, "MemberEpoch is invalid.");
    }
    let regex = match req.subscribed_topic_regex.as_deref() {
        None | Some("") => None,
        Some(re) => match compile_regex(re) {
            Ok(r) => Some(r),
            Err(e) => {
                return refuse(
                    ErrorCode::InvalidRegularExpression,
                    format!("SubscribedTopicRegex `{re}` is not a valid regular expression: {e}"),
                )
            }
        },
    };
    let assignor = match req.server_assignor.as_deref() {
        None => None,
        Some(name) => match cfg.assignors.iter().find(|k| k.name() == name) {
            Some(k) => Some(*k),
            None => {
                return refuse(
                    ErrorCode::UnsupportedAssignor,
                    format!("ServerAssignor {name} is not supported."),
                )
            }
        },
    };
    let owned = match &req.owned {
        None => None,
        Some(topics) => {
            let total: usize = topics.iter().map(|(_, ps)| ps.len()).sum();
            if total > PARTITIONS_MAX {
                return refuse(ErrorCode::InvalidRequest, "too many owned partitions");
            }
            let mut a = Assignment::new();
            for (t, ps) in topics {
                a.entry(*t).or_default().extend(ps.iter().copied());
            }
            Some(super::normalized(a))
        }
    };
    Ok(Parsed {
        regex,
        assignor,
        owned,
    })
}

#[path = "classic.rs"]
pub mod classic;

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
