//! Classic members inside a consumer group: KIP-848's online migration
//! (`group.consumer.migration.policy`).
//!
//! **Upgrade.** When a consumer-protocol member joins a classic group
//! that has members, the group becomes a consumer group in place
//! ([`ConsumerGroup::from_classic`]): each classic member becomes a
//! member whose epoch is the classic generation, owning the partitions
//! of its last SyncGroup assignment, subscribed to the topics of its
//! ConsumerProtocol metadata. From then on the group's server assignor
//! computes every member's target, and a classic member moves towards
//! its own through the requests it already speaks:
//!
//! ```text
//!   Heartbeat  ──▶ REBALANCE_IN_PROGRESS while it is not at its target
//!   JoinGroup  ──▶ says what it still owns (the subscription's owned
//!                  partitions; none for an eager member, which revoked
//!                  all first); it reconciles as a heartbeat would, and
//!                  its member epoch is the generation answered
//!   SyncGroup  ──▶ the partitions it is assigned at that epoch
//! ```
//!
//! Until a JoinGroup says a partition is gone, it counts as owned by the
//! classic member, so no other member is given it: revocation comes
//! before assignment across both kinds, as within the consumer protocol.
//! So a classic member cannot hold the group back for long, it owes the
//! JoinGroup it is asked for, and the SyncGroup after its answer, each
//! within its rebalance timeout (Kafka's join and sync timeouts); missing
//! either removes it, whatever its heartbeats say.
//!
//! **Static replacement.** A new incarnation of a static member takes
//! its predecessor's place whichever protocol either speaks
//! (`ConsumerGroup::replace_static`); a classic one replacing the last
//! consumer-protocol member downgrades the group with no rebalance
//! ([`ConsumerGroup::to_stable_classic`]).
//!
//! **Downgrade.** When the last consumer-protocol member leaves and
//! classic members remain, [`ConsumerGroup::to_classic`] gives the
//! classic group's record (the generation its members are at, each
//! member's assignment); the coordinator restores a classic group from
//! it and starts a rebalance: each member's next heartbeat, at its
//! generation, is told to rejoin.

use super::*;
use crate::group::consumer::records::ClassicRecord;
use crate::group::consumer::{difference, intersection, normalized, union};
use crate::group::records::{GroupValue, MemberValue};
use crate::group::state::{Group, JoinRequest, JoinResult, SyncRequest, SyncResult};
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedTopic;
use kafka_protocol::messages::TopicName;
use kafka_protocol::messages::{ConsumerProtocolAssignment, ConsumerProtocolSubscription};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

/// The protocol type of consumers' classic protocols; a group of another
/// type (Connect's) cannot hold consumer-protocol members.
pub const CONSUMER_PROTOCOL_TYPE: &str = "consumer";
/// Highest ConsumerProtocolSubscription version read (v3 adds the rack);
/// newer ones are read as this one, as Kafka reads them.
const SUBSCRIPTION_VERSION_MAX: i16 = 3;
/// Highest ConsumerProtocolAssignment version read.
const ASSIGNMENT_VERSION_MAX: i16 = 3;
/// The assignment version written: v0 (partitions, user data) is what
/// every client reads, and v1–v3 add nothing to it.
const ASSIGNMENT_VERSION: i16 = 0;

/// What a classic member adds: its session timeout and its protocols
/// (assignor name, ConsumerProtocol subscription) from its last JoinGroup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClassicMeta {
    pub session_timeout_ms: i32,
    pub protocols: Vec<(String, Bytes)>,
}

impl ClassicMeta {
    pub fn record(&self) -> ClassicRecord {
        ClassicRecord {
            session_timeout_ms: self.session_timeout_ms,
            protocols: self
                .protocols
                .iter()
                .map(|(n, m)| (n.clone(), m.to_vec()))
                .collect(),
        }
    }

    pub fn from_record(r: ClassicRecord) -> ClassicMeta {
        ClassicMeta {
            session_timeout_ms: r.session_timeout_ms,
            protocols: r
                .protocols
                .into_iter()
                .map(|(n, m)| (n, Bytes::from(m)))
                .collect(),
        }
    }

    /// The protocol answered in JoinGroup and SyncGroup: the member's
    /// first choice, as Kafka answers.
    pub fn protocol(&self) -> &str {
        self.protocols.first().map_or("", |(n, _)| n.as_str())
    }

    /// The metadata of `protocol`, else of the first choice.
    fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .or(self.protocols.first())
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }
}

/// A ConsumerProtocolSubscription, decoded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Subscription {
    pub topics: Vec<String>,
    /// Partitions the member says it owns (v1+; none before).
    pub owned: Vec<(String, Vec<i32>)>,
    pub rack: Option<String>,
}

/// Splits a versioned ConsumerProtocol structure into its version (capped
/// at `max`) and body.
fn versioned(b: &[u8], max: i16) -> Result<(i16, Bytes), String> {
    if b.len() < 2 {
        return Err("shorter than its version".into());
    }
    let version = i16::from_be_bytes([b[0], b[1]]);
    if version < 0 {
        return Err(format!("version {version}"));
    }
    Ok((version.min(max), Bytes::copy_from_slice(&b[2..])))
}

/// Decodes a classic member's subscription.
pub fn decode_subscription(b: &[u8]) -> Result<Subscription, String> {
    let (version, mut body) = versioned(b, SUBSCRIPTION_VERSION_MAX)?;
    let s = ConsumerProtocolSubscription::decode(&mut body, version).map_err(|e| e.to_string())?;
    let owned_count: usize = s.owned_partitions.iter().map(|t| t.partitions.len()).sum();
    if s.topics.len() > PARTITIONS_MAX || owned_count > PARTITIONS_MAX {
        return Err("too many topics or partitions".into());
    }
    Ok(Subscription {
        topics: s.topics.iter().map(|t| t.as_str().to_string()).collect(),
        owned: s
            .owned_partitions
            .into_iter()
            .map(|t| (t.topic.0.as_str().to_string(), t.partitions))
            .collect(),
        rack: s.rack_id.map(|r| r.as_str().to_string()),
    })
}

/// Decodes a classic assignment (empty bytes: no partitions).
pub fn decode_assignment(b: &[u8]) -> Result<Vec<(String, Vec<i32>)>, String> {
    if b.is_empty() {
        return Ok(Vec::new());
    }
    let (version, mut body) = versioned(b, ASSIGNMENT_VERSION_MAX)?;
    let a = ConsumerProtocolAssignment::decode(&mut body, version).map_err(|e| e.to_string())?;
    let count: usize = a
        .assigned_partitions
        .iter()
        .map(|t| t.partitions.len())
        .sum();
    if count > PARTITIONS_MAX {
        return Err("too many partitions".into());
    }
    Ok(a.assigned_partitions
        .into_iter()
        .map(|t| (t.topic.0.as_str().to_string(), t.partitions))
        .collect())
}

/// Encodes an assignment for SyncGroup, naming topics by `topics`.
pub fn encode_assignment(a: &Assignment, topics: &Topics) -> Bytes {
    let names: BTreeMap<Uuid, &str> = topics
        .iter()
        .map(|(name, (id, _))| (*id, name.as_str()))
        .collect();
    let body = ConsumerProtocolAssignment::default().with_assigned_partitions(
        a.iter()
            .filter_map(|(t, ps)| {
                let name = names.get(t)?;
                Some(
                    AssignedTopic::default()
                        .with_topic(TopicName(StrBytes::from_string(name.to_string())))
                        .with_partitions(ps.iter().copied().collect()),
                )
            })
            .collect(),
    );
    let mut out = BytesMut::new();
    out.put_i16(ASSIGNMENT_VERSION);
    // Encoding into a growable buffer only fails for lengths past
    // i32::MAX, which PARTITIONS_MAX rules out.
    body.encode(&mut out, ASSIGNMENT_VERSION)
        .expect("an assignment encodes at v0");
    out.freeze()
}

/// Topic names and partitions to an assignment by topic id; topics that
/// no longer exist and partitions past their count are left out.
pub fn to_ids(list: &[(String, Vec<i32>)], topics: &Topics) -> Assignment {
    let mut out = Assignment::new();
    for (name, ps) in list {
        if let Some((id, count)) = topics.get(name) {
            let valid = ps.iter().copied().filter(|p| (0..*count).contains(p));
            out.entry(*id).or_default().extend(valid);
        }
    }
    normalized(out)
}

impl ConsumerGroup {
    /// A classic group with members, as a consumer group: each member
    /// keeps its generation as its epoch and its assignment as what it
    /// owns, and the group epoch starts at the generation. A partition
    /// that two assignments name stays with the first member only (a
    /// leader's assignment never does that).
    pub fn from_classic(
        classic: &Group,
        topics: &Topics,
        now_ms: i64,
        cfg: &ConsumerConfig,
    ) -> Result<ConsumerGroup, String> {
        let protocol = classic.protocol().unwrap_or_default();
        let generation = classic.generation();
        let mut g = ConsumerGroup::new(&classic.id, cfg.assignors[0]);
        g.epoch = generation;
        g.assignment_epoch = generation;
        let mut claimed = Assignment::new();
        for m in classic.members() {
            let meta = ClassicMeta {
                session_timeout_ms: m.session_timeout_ms,
                protocols: m.protocols.clone(),
            };
            let sub = decode_subscription(&meta.metadata(protocol))
                .map_err(|e| format!("member {}: subscription: {e}", m.id))?;
            let given = decode_assignment(&m.assignment)
                .map_err(|e| format!("member {}: assignment: {e}", m.id))?;
            let assigned = difference(&to_ids(&given, topics), &claimed);
            claimed = union(&claimed, &assigned);
            let mut topic_names = sub.topics;
            topic_names.sort();
            topic_names.dedup();
            if let Some(i) = &m.instance_id {
                g.statics.insert(i.clone(), m.id.clone());
            }
            g.target.insert(m.id.clone(), assigned.clone());
            g.changed_members.insert(m.id.clone(), true);
            let member = ConsumerMember {
                id: m.id.clone(),
                instance_id: m.instance_id.clone(),
                rack_id: sub.rack,
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                rebalance_timeout_ms: m.rebalance_timeout_ms,
                topic_names,
                regex: None,
                server_assignor: None,
                assignment: MemberAssignment {
                    epoch: generation,
                    previous_epoch: generation,
                    state: MemberState::Stable,
                    assigned,
                    revoking: Assignment::new(),
                    given_at: Default::default(),
                },
                session_deadline_ms: now_ms + i64::from(meta.session_timeout_ms),
                classic: Some(meta),
                revoke_deadline_ms: None,
                join_deadline_ms: None,
                sync_deadline_ms: None,
            };
            g.members.insert(m.id.clone(), member);
        }
        if g.members.len() > MEMBERS_MAX {
            return Err(format!("more than {MEMBERS_MAX} members"));
        }
        g.subscribed = topics
            .iter()
            .filter(|(name, _)| g.subscribes(name))
            .map(|(n, v)| (n.clone(), *v))
            .collect();
        g.needs_store = true;
        Ok(g)
    }

    /// Whether every member speaks the classic protocol, so that the
    /// group may become a classic group again.
    pub fn only_classic_members(&self) -> bool {
        !self.members.is_empty() && self.members.values().all(|m| m.classic.is_some())
    }

    /// Whether the group may become a classic group: every member speaks
    /// the classic protocol and, as Kafka checks, they are no more than
    /// a classic group may hold (`group.max.size`); a group too big for
    /// that stays a consumer group.
    pub fn may_downgrade(&self, classic_max_size: usize) -> bool {
        self.only_classic_members() && self.members.len() <= classic_max_size
    }

    /// The classic group's record a downgrade on a leave starts from: as
    /// generation the highest member epoch, so members at their target
    /// heartbeat with a current generation and are asked to rejoin rather
    /// than fenced; each member given what it is assigned. The group
    /// rebalances at once.
    pub fn to_classic(&self, topics: &Topics, now_ms: i64) -> GroupValue {
        let generation = self
            .members
            .values()
            .map(|m| m.assignment.epoch)
            .max()
            .unwrap_or(self.epoch);
        self.classic_value(topics, now_ms, generation, |m| {
            m.assignment.assigned.clone()
        })
    }

    /// The classic group's record after a classic static member replaced
    /// the last consumer-protocol member, as Kafka builds it: Stable, no
    /// rebalance, at the group epoch, each member given its target (the
    /// new incarnation its predecessor's). A member still short of the
    /// group epoch heartbeats with an older generation, is told
    /// ILLEGAL_GENERATION and rejoins, which starts a rebalance.
    pub fn to_stable_classic(&self, topics: &Topics, now_ms: i64) -> GroupValue {
        self.classic_value(topics, now_ms, self.epoch, |m| {
            self.target.get(&m.id).cloned().unwrap_or_default()
        })
    }

    /// Whether a classic JoinGroup takes the place of a consumer-protocol
    /// static member (a new incarnation: no member id, a known instance
    /// id), the one case in which Kafka downgrades on a join.
    pub fn replaces_consumer_member(&self, member_id: &str, instance_id: Option<&str>) -> bool {
        member_id.is_empty()
            && instance_id
                .and_then(|i| self.statics.get(i))
                .and_then(|owner| self.members.get(owner))
                .is_some_and(|m| m.classic.is_none())
    }

    /// A classic group's record of these members: the protocol every
    /// member offers (else the first member's first), each member's
    /// metadata for it, and `assignment` of each.
    fn classic_value(
        &self,
        topics: &Topics,
        now_ms: i64,
        generation: i32,
        assignment: impl Fn(&ConsumerMember) -> Assignment,
    ) -> GroupValue {
        let metas: Vec<&ClassicMeta> = self
            .members
            .values()
            .filter_map(|m| m.classic.as_ref())
            .collect();
        let protocol = metas
            .first()
            .and_then(|first| {
                first
                    .protocols
                    .iter()
                    .map(|(n, _)| n)
                    .find(|n| {
                        metas
                            .iter()
                            .all(|c| c.protocols.iter().any(|(p, _)| p == *n))
                    })
                    .or(first.protocols.first().map(|(n, _)| n))
            })
            .cloned();
        let members = self
            .members
            .values()
            .filter_map(|m| {
                let c = m.classic.as_ref()?;
                Some(MemberValue {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    session_timeout_ms: c.session_timeout_ms,
                    subscription: c.metadata(protocol.as_deref().unwrap_or_default()),
                    assignment: encode_assignment(&assignment(m), topics),
                })
            })
            .collect();
        GroupValue {
            protocol_type: CONSUMER_PROTOCOL_TYPE.to_string(),
            generation,
            protocol,
            leader: self.members.keys().next().cloned(),
            state_timestamp_ms: now_ms,
            members,
        }
    }

    /// Whether a classic member offering `protocols` may join: a consumer
    /// protocol type, and a protocol every classic member here offers.
    fn supports_classic(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if protocol_type != CONSUMER_PROTOCOL_TYPE || protocols.is_empty() {
            return false;
        }
        let classics: Vec<&ClassicMeta> = self
            .members
            .values()
            .filter_map(|m| m.classic.as_ref())
            .collect();
        protocols.iter().any(|(name, _)| {
            classics
                .iter()
                .all(|c| c.protocols.iter().any(|(p, _)| p == name))
        })
    }

    /// A classic member's instance id check, as for its other requests.
    fn check_classic(&self, member_id: &str, instance_id: Option<&str>) -> Result<(), ErrorCode> {
        if let Some(instance) = instance_id {
            match self.statics.get(instance) {
                None => return Err(ErrorCode::UnknownMemberId),
                Some(owner) if owner != member_id => return Err(ErrorCode::FencedInstanceId),
                Some(_) => {}
            }
        }
        match self.members.get(member_id) {
            Some(m) if m.classic.is_some() => Ok(()),
            _ => Err(ErrorCode::UnknownMemberId),
        }
    }

    /// JoinGroup from a classic member: joins or rejoins, updates its
    /// subscription (a change bumps the group epoch), takes what it still
    /// owns from its subscription, and reconciles it.
    pub fn classic_join(
        &mut self,
        req: JoinRequest,
        now_ms: i64,
        topics: &Topics,
        cfg: &ConsumerConfig,
    ) -> JoinResult {
        let unknown = req.member_id.is_empty();
        let id = match unknown {
            true => Uuid::new_v4().to_string(),
            false => req.member_id.clone(),
        };
        if !self.supports_classic(&req.protocol_type, &req.protocols) {
            return JoinResult::error(ErrorCode::InconsistentGroupProtocol, &req.member_id);
        }
        if unknown && req.require_known_member_id && req.instance_id.is_none() {
            // KIP-394: the member comes back with this id; nothing
            // changes until it does.
            return JoinResult::error(ErrorCode::MemberIdRequired, &id);
        }
        let sub = match decode_subscription(&req.protocols[0].1) {
            Ok(s) => s,
            Err(_) => {
                return JoinResult::error(ErrorCode::InconsistentGroupProtocol, &req.member_id)
            }
        };
        let meta = ClassicMeta {
            session_timeout_ms: req.session_timeout_ms,
            protocols: req.protocols.clone(),
        };
        if let Some(instance) = &req.instance_id {
            if let Some(owner) = self.statics.get(instance).cloned() {
                if owner != id {
                    if !unknown {
                        return JoinResult::error(ErrorCode::FencedInstanceId, &id);
                    }
                    // A new incarnation of a static member takes its
                    // predecessor's place and target, whichever protocol
                    // that one spoke; the partitions it reports owning
                    // (none, for a new process) bound what it keeps.
                    if let Err((code, _)) = self.replace_static(&owner, &id, Some(meta.clone())) {
                        return JoinResult::error(code, &id);
                    }
                }
            }
        }
        if !self.members.contains_key(&id) && self.members.len() >= MEMBERS_MAX {
            return JoinResult::error(ErrorCode::GroupMaxSizeReached, &id);
        }
        let stored = self.records_of(&id);
        let created = !self.members.contains_key(&id);
        let m = self
            .members
            .entry(id.clone())
            .or_insert_with(|| ConsumerMember {
                id: id.clone(),
                instance_id: None,
                rack_id: None,
                client_id: String::new(),
                client_host: String::new(),
                rebalance_timeout_ms: req.rebalance_timeout_ms,
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
        let mut names = sub.topics;
        names.sort();
        names.dedup();
        let changed = created || names != m.topic_names || m.regex.is_some();
        m.topic_names = names;
        m.regex = None;
        m.instance_id = req.instance_id.clone();
        if sub.rack.is_some() {
            m.rack_id = sub.rack;
        }
        m.rebalance_timeout_ms = req.rebalance_timeout_ms;
        m.client_id = req.client_id;
        m.client_host = req.client_host;
        m.session_deadline_ms = now_ms + i64::from(req.session_timeout_ms);
        // Answered now: no longer owes a JoinGroup, and owes a SyncGroup
        // within its rebalance timeout.
        m.join_deadline_ms = None;
        m.sync_deadline_ms = Some(now_ms + i64::from(req.rebalance_timeout_ms.max(0)));
        let protocol = meta.protocol().to_string();
        if m.classic.is_none() {
            // A consumer-protocol member rejoining as classic starts over.
            m.assignment = MemberAssignment::joining();
        }
        m.classic = Some(meta);
        // What it reports owning bounds what it may still own: an eager
        // member revoked everything before this JoinGroup.
        let owned = to_ids(&sub.owned, topics);
        let kept = intersection(&m.assignment.assigned, &owned);
        if kept != m.assignment.assigned && m.assignment.state == MemberState::Stable {
            // Short of its target now: let the reconciliation below
            // give back what is free.
            m.assignment.state = MemberState::UnreleasedPartitions;
        }
        m.assignment.assigned = kept;
        m.assignment.revoking = intersection(&m.assignment.revoking, &owned);
        if let Some(instance) = &req.instance_id {
            self.statics.insert(instance.clone(), id.clone());
        }
        if changed {
            self.bump();
        }
        self.refresh(topics, cfg);
        self.reconcile(&id, Some(&owned), now_ms);
        if created || self.records_of(&id) != stored {
            self.changed_members.insert(id.clone(), true);
        }
        JoinResult {
            error: ErrorCode::None,
            generation: self.members[&id].assignment.epoch,
            protocol_type: Some(CONSUMER_PROTOCOL_TYPE.to_string()),
            protocol: Some(protocol),
            // No leader: the coordinator assigns, so the member sends an
            // empty SyncGroup, as Kafka answers.
            leader: String::new(),
            member_id: id,
            members: Vec::new(),
            skip_assignment: false,
        }
    }

    /// SyncGroup from a classic member: its assigned partitions. As in
    /// Kafka, a member whose epoch fell behind the group's since its
    /// JoinGroup (and that is not revoking) is told to rejoin instead,
    /// and owes that JoinGroup within its rebalance timeout.
    pub fn classic_sync(&mut self, req: &SyncRequest, now_ms: i64, topics: &Topics) -> SyncResult {
        if let Err(e) = self.check_classic(&req.member_id, req.instance_id.as_deref()) {
            return SyncResult::error(e);
        }
        let epoch = self.epoch;
        let m = self.members.get_mut(&req.member_id).expect("checked");
        let meta = m.classic.as_ref().expect("checked");
        if req.generation != m.assignment.epoch {
            return SyncResult::error(ErrorCode::IllegalGeneration);
        }
        let type_differs = req
            .protocol_type
            .as_ref()
            .is_some_and(|t| t != CONSUMER_PROTOCOL_TYPE);
        let protocol_differs = req.protocol.as_ref().is_some_and(|p| p != meta.protocol());
        if type_differs || protocol_differs {
            return SyncResult::error(ErrorCode::InconsistentGroupProtocol);
        }
        if epoch > m.assignment.epoch && m.assignment.state != MemberState::UnrevokedPartitions {
            m.join_deadline_ms
                .get_or_insert(now_ms + i64::from(m.rebalance_timeout_ms.max(0)));
            return SyncResult::error(ErrorCode::RebalanceInProgress);
        }
        let session_ms = meta.session_timeout_ms;
        let protocol = meta.protocol().to_string();
        m.sync_deadline_ms = None;
        m.session_deadline_ms = now_ms + i64::from(session_ms);
        SyncResult {
            error: ErrorCode::None,
            protocol_type: Some(CONSUMER_PROTOCOL_TYPE.to_string()),
            protocol: Some(protocol),
            assignment: encode_assignment(&m.assignment.assigned, topics),
        }
    }

    /// Heartbeat from a classic member: keeps its session, and asks it
    /// to rejoin while it is not at its target. A member asked to rejoin
    /// owes a JoinGroup within its rebalance timeout from the first ask,
    /// however often it heartbeats meanwhile (Kafka's join timeout).
    pub fn classic_heartbeat(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now_ms: i64,
    ) -> ErrorCode {
        if let Err(e) = self.check_classic(member_id, instance_id) {
            return e;
        }
        let m = self.members.get_mut(member_id).expect("checked");
        if generation != m.assignment.epoch {
            return ErrorCode::IllegalGeneration;
        }
        let session_ms = m.classic.as_ref().expect("checked").session_timeout_ms;
        m.session_deadline_ms = now_ms + i64::from(session_ms);
        if !self.classic_behind(member_id) {
            return ErrorCode::None;
        }
        let m = self.members.get_mut(member_id).expect("checked");
        m.join_deadline_ms
            .get_or_insert(now_ms + i64::from(m.rebalance_timeout_ms.max(0)));
        ErrorCode::RebalanceInProgress
    }

    /// Whether a JoinGroup would move classic member `id`: it is at an
    /// older epoch than the target, has partitions to give up, or waits
    /// for a partition another member has meanwhile released.
    fn classic_behind(&self, id: &str) -> bool {
        let m = &self.members[id];
        let a = &m.assignment;
        if a.epoch != self.assignment_epoch || a.state == MemberState::UnrevokedPartitions {
            return true;
        }
        if a.state != MemberState::UnreleasedPartitions {
            return false;
        }
        let target = self.target.get(id).cloned().unwrap_or_default();
        let wanted = difference(&target, &a.assigned);
        wanted.iter().any(|(t, ps)| {
            ps.iter().any(|p| {
                !self
                    .members
                    .values()
                    .any(|o| o.id != id && holds(&o.assignment.owned(), *t, *p))
            })
        })
    }

    /// LeaveGroup of one classic member, named by member or instance id.
    pub fn classic_leave(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        topics: &Topics,
        cfg: &ConsumerConfig,
    ) -> ErrorCode {
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
        if self.members.get(&id).is_none_or(|m| m.classic.is_none()) {
            return ErrorCode::UnknownMemberId;
        }
        self.remove(&id);
        self.refresh(topics, cfg);
        ErrorCode::None
    }
}

#[cfg(test)]
#[path = "classic_tests.rs"]
mod tests;
