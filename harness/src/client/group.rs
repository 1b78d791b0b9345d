//! Membership in a consumer group: Kafka's classic rebalance protocol as a
//! client sees it, over one blocking connection to the group's coordinator.
//!
//! ```text
//! FindCoordinator ─► JoinGroup ─┬─ MEMBER_ID_REQUIRED: rejoin with the given id (KIP-394)
//!                               ├─ leader: range-assign the members' subscriptions
//!                               ▼
//!                           SyncGroup ─► assignment ─► Heartbeat every interval
//!                               ▲                          │
//!                               └── REBALANCE_IN_PROGRESS, ILLEGAL_GENERATION,
//!                                   UNKNOWN_MEMBER_ID (member id forgotten)
//! close: OffsetCommit, LeaveGroup
//! ```
//!
//! Everything here blocks the calling thread, like the rest of the harness
//! client: a consumer's thread calls [`GroupMember::heartbeat`] between
//! fetches, and a JoinGroup may be held by the coordinator until every
//! member has rejoined, so the coordinator connection's read timeout is the
//! rebalance timeout plus a margin. Offsets are committed and fetched here
//! too, since they go to the same coordinator under the same generation.

use super::admin::{self, topic_name};
use super::assignor::{self, Assignment, PROTOCOL_TYPE, RANGE};
use super::conn::Connection;
use super::endpoint::Endpoint;
use super::error::ClientError;
use super::security::Security;
use sluice_protocol::messages::messages::join_group_request::JoinGroupRequestProtocol;
use sluice_protocol::messages::messages::leave_group_request::MemberIdentity;
use sluice_protocol::messages::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use sluice_protocol::messages::messages::offset_fetch_request::OffsetFetchRequestTopic;
use sluice_protocol::messages::messages::sync_group_request::SyncGroupRequestAssignment;
use sluice_protocol::messages::messages::{
    ApiKey, FindCoordinatorRequest, FindCoordinatorResponse, GroupId, HeartbeatRequest,
    HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse,
    OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse,
    SyncGroupRequest, SyncGroupResponse,
};
use sluice_protocol::messages::protocol::StrBytes;
use sluice_protocol::ErrorCode;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Added to the rebalance timeout for the coordinator connection's reads:
/// the coordinator answers a JoinGroup at the latest when the rebalance
/// times out.
const JOIN_READ_MARGIN: Duration = Duration::from_secs(10);
/// Wait before retrying after a coordinator error (Kafka's retry.backoff.ms).
const RETRY_BACKOFF: Duration = Duration::from_millis(100);
/// How long a group leader waits for a subscribed topic's metadata before
/// assigning without it.
const METADATA_WAIT_MAX: Duration = Duration::from_secs(10);
/// JoinGroup/SyncGroup rounds one `join` may take before giving up. A
/// healthy group settles in two or three (MEMBER_ID_REQUIRED, then a
/// rebalance or two as members arrive); each round is bounded by the
/// rebalance timeout.
const JOIN_ROUNDS_MAX: u32 = 100;
/// Retries of a request whose coordinator moved or is loading.
const COORDINATOR_RETRIES_MAX: u32 = 50;
/// `generation_id` of a member outside any generation.
const NO_GENERATION: i32 = -1;

/// Timeouts of a member, from the consumer settings.
#[derive(Clone, Copy, Debug)]
pub struct GroupTimeouts {
    pub session_ms: i32,
    /// How long the coordinator waits for every member to rejoin
    /// (`max.poll.interval.ms` in the Java client).
    pub rebalance_ms: i32,
    pub heartbeat_interval: Duration,
}

/// What a heartbeat or commit says about the member's standing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    /// Still a member of the current generation.
    Member,
    /// The group is rebalancing or has moved on: rejoin.
    Rejoin,
}

pub struct GroupMember {
    group_id: String,
    topics: Vec<String>,
    bootstrap: Endpoint,
    security: Security,
    timeouts: GroupTimeouts,
    coordinator: Option<Connection>,
    member_id: String,
    generation: i32,
    last_heartbeat: Instant,
}

/// What the broker answered to one JoinGroup/SyncGroup round.
enum Round {
    Joined(Assignment),
    Again,
}

impl GroupMember {
    /// A member-to-be of `group_id` subscribing to `topics`; nothing is sent
    /// until [`GroupMember::join`].
    pub fn new(
        bootstrap: impl Into<Endpoint>,
        group_id: String,
        topics: Vec<String>,
        timeouts: GroupTimeouts,
    ) -> GroupMember {
        assert!(timeouts.session_ms > 0 && timeouts.rebalance_ms > 0);
        assert!(!topics.is_empty(), "a member subscribes to some topic");
        GroupMember {
            group_id,
            topics,
            bootstrap: bootstrap.into(),
            security: Security::plaintext(),
            timeouts,
            coordinator: None,
            member_id: String::new(),
            generation: NO_GENERATION,
            last_heartbeat: Instant::now(),
        }
    }

    /// Connections to the bootstrap broker and the coordinator secured
    /// with `security` (PLAINTEXT unless set).
    pub fn with_security(mut self, security: Security) -> GroupMember {
        self.security = security;
        self
    }

    pub fn group_id(&self) -> &str {
        &self.group_id
    }

    pub fn member_id(&self) -> &str {
        &self.member_id
    }

    pub fn generation(&self) -> i32 {
        self.generation
    }

    fn gid(&self) -> GroupId {
        GroupId(StrBytes::from_string(self.group_id.clone()))
    }

    fn err(&self, op: &'static str, code: i16) -> ClientError {
        ClientError::Group {
            group: self.group_id.clone(),
            op,
            code,
        }
    }

    fn protocol_err(&self, reason: String) -> ClientError {
        ClientError::GroupProtocol {
            group: self.group_id.clone(),
            reason,
        }
    }

    /// The coordinator connection, finding the coordinator if needed.
    fn coordinator(&mut self) -> Result<&mut Connection, ClientError> {
        if self.coordinator.is_none() {
            let ep = self.find_coordinator()?;
            let mut conn = Connection::open(&ep, &self.security, CONNECT_TIMEOUT)?;
            let rebalance = Duration::from_millis(self.timeouts.rebalance_ms as u64);
            conn.set_read_timeout(rebalance + JOIN_READ_MARGIN)?;
            self.coordinator = Some(conn);
        }
        Ok(self.coordinator.as_mut().expect("connected above"))
    }

    fn find_coordinator(&self) -> Result<Endpoint, ClientError> {
        let mut conn = Connection::open(&self.bootstrap, &self.security, CONNECT_TIMEOUT)?;
        let version = conn.version(ApiKey::FindCoordinator)?;
        for _ in 0..COORDINATOR_RETRIES_MAX {
            let mut req = FindCoordinatorRequest::default().with_key_type(0);
            if version >= 4 {
                req.coordinator_keys = vec![StrBytes::from_string(self.group_id.clone())];
            } else {
                req.key = StrBytes::from_string(self.group_id.clone());
            }
            let resp: FindCoordinatorResponse =
                conn.roundtrip_at(ApiKey::FindCoordinator, version, &req)?;
            let (code, host, port) = if version >= 4 {
                let c = resp.coordinators.first().ok_or_else(|| {
                    self.protocol_err("FindCoordinator v4 answered no coordinator".into())
                })?;
                (c.error_code, c.host.to_string(), c.port)
            } else {
                (resp.error_code, resp.host.to_string(), resp.port)
            };
            match ErrorCode::from_code(code) {
                ErrorCode::None => return Endpoint::resolve(&host, port),
                ErrorCode::CoordinatorNotAvailable | ErrorCode::CoordinatorLoadInProgress => {
                    std::thread::sleep(RETRY_BACKOFF);
                }
                _ => return Err(self.err("FindCoordinator", code)),
            }
        }
        Err(self.err("FindCoordinator", ErrorCode::CoordinatorNotAvailable.code()))
    }

    /// After a coordinator error: forget the connection, wait, find again.
    fn coordinator_moved(&mut self) {
        self.coordinator = None;
        std::thread::sleep(RETRY_BACKOFF);
    }

    fn is_coordinator_error(code: ErrorCode) -> bool {
        matches!(
            code,
            ErrorCode::NotCoordinator
                | ErrorCode::CoordinatorNotAvailable
                | ErrorCode::CoordinatorLoadInProgress
        )
    }

    /// Joins (or rejoins) the group and returns this member's partitions.
    pub fn join(&mut self) -> Result<Assignment, ClientError> {
        let mut last: Option<ClientError> = None;
        for _ in 0..JOIN_ROUNDS_MAX {
            match self.join_round() {
                Ok(Round::Joined(a)) => {
                    self.last_heartbeat = Instant::now();
                    return Ok(a);
                }
                Ok(Round::Again) => {}
                Err(e @ (ClientError::Io { .. } | ClientError::Closed { .. })) => {
                    // The coordinator went away mid-rebalance: find it again.
                    last = Some(e);
                    self.coordinator_moved();
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            self.protocol_err(format!(
                "no stable generation after {JOIN_ROUNDS_MAX} rounds"
            ))
        }))
    }

    fn join_round(&mut self) -> Result<Round, ClientError> {
        self.generation = NO_GENERATION;
        let req = JoinGroupRequest::default()
            .with_group_id(self.gid())
            .with_session_timeout_ms(self.timeouts.session_ms)
            .with_rebalance_timeout_ms(self.timeouts.rebalance_ms)
            .with_member_id(StrBytes::from_string(self.member_id.clone()))
            .with_protocol_type(StrBytes::from_static_str(PROTOCOL_TYPE))
            .with_protocols(vec![JoinGroupRequestProtocol::default()
                .with_name(StrBytes::from_static_str(RANGE))
                .with_metadata(assignor::encode_subscription(&self.topics))]);
        let resp: JoinGroupResponse = self.coordinator()?.roundtrip(ApiKey::JoinGroup, &req)?;
        match ErrorCode::from_code(resp.error_code) {
            ErrorCode::None => {}
            ErrorCode::MemberIdRequired => {
                // KIP-394: the coordinator hands out the id and expects the
                // same JoinGroup again with it.
                self.member_id = resp.member_id.to_string();
                return Ok(Round::Again);
            }
            ErrorCode::UnknownMemberId => {
                self.member_id.clear();
                return Ok(Round::Again);
            }
            ErrorCode::RebalanceInProgress => return Ok(Round::Again),
            c if Self::is_coordinator_error(c) => {
                self.coordinator_moved();
                return Ok(Round::Again);
            }
            _ => return Err(self.err("JoinGroup", resp.error_code)),
        }
        if let Some(p) = &resp.protocol_name {
            if p.as_str() != RANGE {
                return Err(self.protocol_err(format!(
                    "the coordinator chose protocol `{p}`; this client only speaks `{RANGE}`"
                )));
            }
        }
        self.member_id = resp.member_id.to_string();
        self.generation = resp.generation_id;
        let assignments = if resp.leader == resp.member_id {
            self.lead(&resp)?
        } else {
            Vec::new()
        };
        self.sync(assignments)
    }

    /// As the leader: range-assign every member's subscription.
    fn lead(
        &mut self,
        resp: &JoinGroupResponse,
    ) -> Result<Vec<SyncGroupRequestAssignment>, ClientError> {
        let mut members = BTreeMap::new();
        for m in &resp.members {
            let topics = assignor::decode_subscription(m.metadata.clone()).map_err(|e| {
                self.protocol_err(format!("member {}'s subscription: {e}", m.member_id))
            })?;
            members.insert(m.member_id.to_string(), topics);
        }
        let mut wanted: Vec<String> = members.values().flatten().cloned().collect();
        wanted.sort_unstable();
        wanted.dedup();
        // A broker of a cluster applies a new topic's metadata a little
        // after the controller created it; assigning without it would hand
        // out none of its partitions, and nothing makes the group
        // rebalance when it arrives (three Kafka brokers showed a group
        // holding 0 of 16 partitions for good). The leader asks again for
        // a while, well within the members' session timeout.
        let patience = Instant::now()
            + Duration::from_millis(self.timeouts.session_ms as u64 / 2).min(METADATA_WAIT_MAX);
        let counts = loop {
            let md = admin::metadata(self.coordinator()?, Some(&wanted))?;
            let counts: BTreeMap<String, i32> = md
                .topics
                .iter()
                .map(|(t, leaders)| (t.clone(), leaders.len() as i32))
                .collect();
            let known = wanted.iter().all(|t| counts.get(t).is_some_and(|&n| n > 0));
            if known || Instant::now() >= patience {
                break counts;
            }
            std::thread::sleep(RETRY_BACKOFF);
        };
        Ok(assignor::range_assign(&members, &counts)
            .into_iter()
            .map(|(member, a)| {
                SyncGroupRequestAssignment::default()
                    .with_member_id(StrBytes::from_string(member))
                    .with_assignment(assignor::encode_assignment(&a))
            })
            .collect())
    }

    fn sync(&mut self, assignments: Vec<SyncGroupRequestAssignment>) -> Result<Round, ClientError> {
        let req = SyncGroupRequest::default()
            .with_group_id(self.gid())
            .with_generation_id(self.generation)
            .with_member_id(StrBytes::from_string(self.member_id.clone()))
            .with_protocol_type(Some(StrBytes::from_static_str(PROTOCOL_TYPE)))
            .with_protocol_name(Some(StrBytes::from_static_str(RANGE)))
            .with_assignments(assignments);
        let resp: SyncGroupResponse = self.coordinator()?.roundtrip(ApiKey::SyncGroup, &req)?;
        match ErrorCode::from_code(resp.error_code) {
            ErrorCode::None => {}
            ErrorCode::RebalanceInProgress | ErrorCode::IllegalGeneration => {
                return Ok(Round::Again)
            }
            ErrorCode::UnknownMemberId => {
                self.member_id.clear();
                return Ok(Round::Again);
            }
            c if Self::is_coordinator_error(c) => {
                self.coordinator_moved();
                return Ok(Round::Again);
            }
            _ => return Err(self.err("SyncGroup", resp.error_code)),
        }
        let a = assignor::decode_assignment(resp.assignment.clone())
            .map_err(|e| self.protocol_err(format!("SyncGroup assignment: {e}")))?;
        if let Some(t) = a.keys().find(|t| !self.topics.contains(t)) {
            return Err(self.protocol_err(format!(
                "assigned topic `{t}`, which this member did not subscribe to"
            )));
        }
        Ok(Round::Joined(a))
    }

    pub fn heartbeat_due(&self) -> bool {
        self.last_heartbeat.elapsed() >= self.timeouts.heartbeat_interval
    }

    /// One heartbeat. A coordinator error is not fatal: the coordinator is
    /// looked up again on the next call, within the session timeout.
    pub fn heartbeat(&mut self) -> Result<Standing, ClientError> {
        self.last_heartbeat = Instant::now();
        let req = HeartbeatRequest::default()
            .with_group_id(self.gid())
            .with_generation_id(self.generation)
            .with_member_id(StrBytes::from_string(self.member_id.clone()));
        let resp: HeartbeatResponse = match self.coordinator()?.roundtrip(ApiKey::Heartbeat, &req) {
            Ok(r) => r,
            Err(e) => {
                self.coordinator = None;
                return Err(e);
            }
        };
        self.standing("Heartbeat", resp.error_code)
    }

    fn standing(&mut self, op: &'static str, code: i16) -> Result<Standing, ClientError> {
        match ErrorCode::from_code(code) {
            ErrorCode::None => Ok(Standing::Member),
            ErrorCode::RebalanceInProgress | ErrorCode::IllegalGeneration => Ok(Standing::Rejoin),
            ErrorCode::UnknownMemberId => {
                self.member_id.clear();
                Ok(Standing::Rejoin)
            }
            c if Self::is_coordinator_error(c) => {
                self.coordinator = None;
                Ok(Standing::Member)
            }
            _ => Err(self.err(op, code)),
        }
    }

    /// Commits `offsets` (topic, partition, next offset to read) under the
    /// current generation.
    pub fn commit(&mut self, offsets: &[(String, i32, i64)]) -> Result<Standing, ClientError> {
        if offsets.is_empty() {
            return Ok(Standing::Member);
        }
        let mut topics: Vec<OffsetCommitRequestTopic> = Vec::new();
        for (t, p, o) in offsets {
            let part = OffsetCommitRequestPartition::default()
                .with_partition_index(*p)
                .with_committed_offset(*o)
                .with_committed_leader_epoch(-1)
                .with_committed_metadata(Some(StrBytes::from_static_str("")));
            let name = topic_name(t);
            match topics.iter_mut().find(|x| x.name == name) {
                Some(x) => x.partitions.push(part),
                None => topics.push(
                    OffsetCommitRequestTopic::default()
                        .with_name(name)
                        .with_partitions(vec![part]),
                ),
            }
        }
        let req = OffsetCommitRequest::default()
            .with_group_id(self.gid())
            .with_generation_id_or_member_epoch(self.generation)
            .with_member_id(StrBytes::from_string(self.member_id.clone()))
            .with_retention_time_ms(-1)
            .with_topics(topics);
        for _ in 0..COORDINATOR_RETRIES_MAX {
            let resp: OffsetCommitResponse =
                self.coordinator()?.roundtrip(ApiKey::OffsetCommit, &req)?;
            // One error per partition; they share a cause, so the first
            // non-zero one speaks for the request.
            let code = resp
                .topics
                .iter()
                .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
                .find(|&c| c != 0)
                .unwrap_or(0);
            if Self::is_coordinator_error(ErrorCode::from_code(code)) {
                self.coordinator_moved();
                continue;
            }
            return self.standing("OffsetCommit", code);
        }
        Err(self.err("OffsetCommit", ErrorCode::NotCoordinator.code()))
    }

    /// Committed offsets of `a`'s partitions; partitions with none are left
    /// out.
    pub fn committed(
        &mut self,
        a: &Assignment,
    ) -> Result<BTreeMap<(String, i32), i64>, ClientError> {
        let req = OffsetFetchRequest::default()
            .with_group_id(self.gid())
            .with_topics(Some(
                a.iter()
                    .map(|(t, ps)| {
                        OffsetFetchRequestTopic::default()
                            .with_name(topic_name(t))
                            .with_partition_indexes(ps.clone())
                    })
                    .collect(),
            ));
        for _ in 0..COORDINATOR_RETRIES_MAX {
            let resp: OffsetFetchResponse =
                self.coordinator()?.roundtrip(ApiKey::OffsetFetch, &req)?;
            let mut code = resp.error_code;
            let mut out = BTreeMap::new();
            for t in &resp.topics {
                for p in &t.partitions {
                    if p.error_code != 0 && code == 0 {
                        code = p.error_code;
                    }
                    if p.committed_offset >= 0 {
                        out.insert(
                            (t.name.0.to_string(), p.partition_index),
                            p.committed_offset,
                        );
                    }
                }
            }
            match ErrorCode::from_code(code) {
                ErrorCode::None => return Ok(out),
                c if Self::is_coordinator_error(c) => self.coordinator_moved(),
                _ => return Err(self.err("OffsetFetch", code)),
            }
        }
        Err(self.err("OffsetFetch", ErrorCode::CoordinatorLoadInProgress.code()))
    }

    /// Leaves the group so the others rebalance at once instead of after
    /// the session timeout. Best effort at the end of a run.
    pub fn leave(&mut self) -> Result<(), ClientError> {
        if self.member_id.is_empty() {
            return Ok(());
        }
        let version = self.coordinator()?.version(ApiKey::LeaveGroup)?;
        let mut req = LeaveGroupRequest::default().with_group_id(self.gid());
        let member = StrBytes::from_string(self.member_id.clone());
        if version >= 3 {
            req.members = vec![MemberIdentity::default().with_member_id(member)];
        } else {
            req.member_id = member;
        }
        let resp: LeaveGroupResponse =
            self.coordinator()?
                .roundtrip_at(ApiKey::LeaveGroup, version, &req)?;
        let code = if resp.error_code != 0 {
            resp.error_code
        } else {
            resp.members
                .iter()
                .map(|m| m.error_code)
                .find(|&c| c != 0)
                .unwrap_or(0)
        };
        self.member_id.clear();
        self.generation = NO_GENERATION;
        match ErrorCode::from_code(code) {
            // Already gone (expired, or the group was emptied): the goal.
            ErrorCode::None | ErrorCode::UnknownMemberId => Ok(()),
            _ => Err(self.err("LeaveGroup", code)),
        }
    }
}
