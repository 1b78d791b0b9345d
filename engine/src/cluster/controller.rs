//! The active controller: the quorum leader's decisions about the
//! cluster, each one a proposal to the metadata log.
//!
//! It registers brokers and watches their heartbeats. A broker silent for
//! `broker.session.timeout.ms` is fenced: every partition it led gets a
//! new leader from the ISR (or goes offline until one returns), and it
//! leaves the other ISRs. A heartbeat from a fenced broker unfences it and
//! elects it where a partition had no eligible leader. A broker that
//! registers again with a new incarnation restarted: it is treated as
//! gone and back, so it never resumes leading on a stale leader epoch.
//! Topic creation places replicas over the live brokers, leaders spread
//! round-robin. Changes are made one at a time, each on the image that
//! the previous one produced.

use super::monotonic_ms;
use super::quorum::{wall_ms, ProposeError, Quorum, ReplicaProgress};
use super::records::{ClusterImage, Record, TopicImage};
use super::rpc::{ConfigOp, OpKind, Request, Response};
use super::sessions::Sessions;
use crate::config::{check_value, find_topic_key, LIST_KEYS};
use crate::quota::entity::{QuotaEntity, QuotaKey, QuotaValue};
use crate::replication::controller::{IsrProposal, PartitionState};
use crate::replication::NodeId;
use crate::security::sasl::scram::{ScramCredential, ScramMechanism};
use crate::shard::controller::check_partition_count;
use sluice_protocol::{ErrorCode, LeaderEpoch};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Producer ids given to a broker at a time (Kafka's block size).
pub const PRODUCER_ID_BLOCK: i64 = 1000;

/// Most entries one metadata fetch returns: a broker behind by more
/// replays the log in steps.
const FETCH_MAX_ENTRIES: usize = 1024;

/// What the controller reads from the broker config.
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    /// `broker.session.timeout.ms`.
    pub session_timeout: Duration,
    /// `unclean.leader.election.enable`, the cluster default.
    pub unclean_default: bool,
    /// Every topic key's value where a topic does not override it (the
    /// base APPEND and SUBTRACT start from).
    pub topic_defaults: BTreeMap<String, String>,
    /// How often leadership moves back to preferred replicas (`None`:
    /// never on its own).
    pub rebalance_interval: Option<Duration>,
    /// The share of a broker's preferred partitions (in percent) that may
    /// be led elsewhere before they are moved back.
    pub imbalance_percentage: u64,
}

pub struct Controller {
    pub quorum: Rc<Quorum>,
    config: ControllerConfig,
    /// Broker sessions, kept while this voter is the active controller.
    sessions: RefCell<Sessions>,
    /// One change at a time.
    lock: glommio::sync::Semaphore,
    /// The last metadata fetch of each broker that said who it is, as
    /// this voter saw it while leading: (term, its log end, the fetch's
    /// wall-clock ms, when it last had everything committed).
    fetches: RefCell<BTreeMap<i32, (u64, u64, i64, i64)>>,
    /// Brokers whose port is being probed (see [`Controller::check_gone`]).
    probing: RefCell<std::collections::BTreeSet<i32>>,
    /// Brokers whose connection closed while this voter was not acting,
    /// with the address they connected from: checked when it takes over.
    closed: RefCell<BTreeMap<i32, std::net::IpAddr>>,
}

fn error(code: ErrorCode, message: impl Into<String>) -> Response {
    Response::Error {
        code: code.code(),
        message: message.into(),
    }
}

fn no_such_topic(name: &str) -> Response {
    error(
        ErrorCode::UnknownTopicOrPartition,
        format!("Topic '{name}' does not exist."),
    )
}

fn unclean(topic_config: &std::collections::BTreeMap<String, String>, default: bool) -> bool {
    topic_config
        .get("unclean.leader.election.enable")
        .map_or(default, |v| v == "true")
}

impl Controller {
    pub fn new(quorum: Rc<Quorum>, config: ControllerConfig) -> Controller {
        Controller {
            quorum,
            sessions: RefCell::new(Sessions::new(
                i64::try_from(config.session_timeout.as_millis()).unwrap_or(i64::MAX),
            )),
            lock: glommio::sync::Semaphore::new(1),
            fetches: RefCell::new(BTreeMap::new()),
            probing: RefCell::new(std::collections::BTreeSet::new()),
            closed: RefCell::new(BTreeMap::new()),
            config,
        }
    }

    fn not_controller(&self) -> Response {
        Response::NotController {
            leader: self.quorum.leader_id().map(|l| l as i32),
        }
    }

    async fn commit(&self, records: Vec<Record>) -> Response {
        if records.is_empty() {
            return Response::Ok { index: 0 };
        }
        match self.quorum.propose(records).await {
            Ok(index) => Response::Ok { index },
            Err(ProposeError::NotLeader(_)) => self.not_controller(),
            Err(ProposeError::Dropped) => error(
                ErrorCode::NotController,
                "the change was lost to a controller change; retry",
            ),
            Err(e @ ProposeError::NoSpace { .. }) => {
                error(ErrorCode::KafkaStorageError, e.to_string())
            }
        }
    }

    /// Answers one request. Fetches are served by any voter; changes only
    /// by the active controller.
    pub async fn handle(&self, req: Request) -> Response {
        if let Request::Fetch {
            after,
            wait_ms,
            node,
        } = req
        {
            if let Some(node) = node {
                self.note_fetch(node, after);
            }
            self.quorum
                .wait_applied_after(after, Duration::from_millis(wait_ms.min(5_000)))
                .await;
            if after < self.quorum.log_start() {
                // What it lacks is only in a snapshot now: the image.
                let image = self.quorum.image();
                return Response::Image {
                    index: image.applied,
                    records: image.to_records(),
                };
            }
            let entries = self.quorum.entries_after(after, FETCH_MAX_ENTRIES);
            let upto = if entries.len() == FETCH_MAX_ENTRIES {
                entries.last().map_or(after, |e| e.0)
            } else {
                self.quorum.image().applied.max(after)
            };
            return Response::Entries { entries, upto };
        }
        if let Request::Heartbeat { node, incarnation } = req {
            return self.heartbeat(node, incarnation).await;
        }
        if let Request::DescribeQuorum = req {
            return self.describe_quorum();
        }
        if !self.wait_current().await {
            return self.not_controller();
        }
        let Ok(_permit) = self.lock.acquire_permit(1).await else {
            return error(ErrorCode::UnknownServerError, "controller is stopping");
        };
        if !self.quorum.is_current() {
            return self.not_controller();
        }
        let image = self.quorum.image().clone();
        match req {
            Request::ControlledShutdown { node, incarnation } => match image.brokers.get(&node) {
                Some(b) if b.incarnation != incarnation => {
                    error(ErrorCode::StaleBrokerEpoch, "broker registered again since")
                }
                None => error(ErrorCode::StaleBrokerEpoch, "broker is not registered"),
                Some(b) if b.fenced => Response::Ok {
                    index: image.applied,
                },
                Some(_) => {
                    let response = self.commit(broker_down(&image, node, &self.config)).await;
                    if let Response::Ok { .. } = response {
                        tracing::info!(node, "broker shutting down; its partitions moved");
                    }
                    response
                }
            },
            Request::Register {
                node,
                host,
                port,
                incarnation,
                cluster_id,
                listeners,
            } => {
                let mut records = Vec::new();
                match (&image.cluster_id, cluster_id) {
                    (Some(ours), Some(theirs)) if *ours != theirs => {
                        return error(
                            ErrorCode::InconsistentClusterId,
                            format!(
                                "broker {node}'s data belongs to cluster {theirs}; this cluster is {ours}"
                            ),
                        );
                    }
                    (Some(_), _) => {}
                    // The first controller names the cluster: after the
                    // first broker whose data already has an id, or anew.
                    (None, theirs) => records.push(Record::ClusterId {
                        id: theirs.unwrap_or_else(|| {
                            crate::storage::checkpoint::base64_url(uuid::Uuid::new_v4().as_bytes())
                        }),
                    }),
                }
                self.sessions.borrow_mut().heartbeat(node, monotonic_ms());
                records.extend(register(
                    &image,
                    node,
                    host,
                    port,
                    listeners,
                    incarnation,
                    &self.config,
                ));
                if !records.is_empty() {
                    tracing::info!(node, incarnation, "broker registered");
                }
                self.commit(records).await
            }
            Request::CreateTopic {
                name,
                id,
                partitions,
                replication_factor,
                config,
                assignments,
            } => {
                if image.topics.contains_key(&name) {
                    return error(
                        ErrorCode::TopicAlreadyExists,
                        format!("Topic '{name}' already exists."),
                    );
                }
                if let Err((code, message)) = check_partition_count(partitions) {
                    return error(code, message);
                }
                let live = image.live_brokers();
                let Ok(topic_id) = id.parse::<uuid::Uuid>() else {
                    return error(ErrorCode::InvalidRequest, "bad topic id");
                };
                if let Some(assignments) = assignments {
                    let states = match assigned_partitions(&assignments, &image, &live) {
                        Ok(states) => states,
                        Err((code, message)) => return error(code, message),
                    };
                    let mut records = vec![Record::Topic {
                        name: name.clone(),
                        id: id.clone(),
                        partitions: states.len() as i32,
                        config,
                    }];
                    for (index, state) in states.iter().enumerate() {
                        records.push(Record::partition(topic_id, index as i32, state));
                    }
                    return self.commit(records).await;
                }
                let rf = replication_factor.max(1) as usize;
                if rf > live.len() {
                    return error(
                        ErrorCode::InvalidReplicationFactor,
                        format!(
                            "Replication factor: {rf} larger than available brokers: {}.",
                            live.len()
                        ),
                    );
                }
                let mut records = vec![Record::Topic {
                    name: name.clone(),
                    id: id.clone(),
                    partitions,
                    config,
                }];
                let placed = place(topic_id, partitions, rf, &live);
                for (index, replicas) in placed.into_iter().enumerate() {
                    let state = PartitionState::new(replicas);
                    records.push(Record::partition(topic_id, index as i32, &state));
                }
                self.commit(records).await
            }
            Request::CreatePartitions {
                name,
                count,
                assignments,
                validate_only,
            } => {
                let Some(topic) = image.topics.get(&name) else {
                    return no_such_topic(&name);
                };
                match new_partitions(topic, count, assignments.as_deref(), &image) {
                    Err((code, message)) => error(code, message),
                    Ok(_) if validate_only => Response::Ok { index: 0 },
                    Ok(placed) => {
                        let from = topic.partitions.len();
                        let records = placed
                            .into_iter()
                            .enumerate()
                            .map(|(i, replicas)| {
                                let state = PartitionState::new(replicas);
                                Record::partition(topic.id, (from + i) as i32, &state)
                            })
                            .collect();
                        self.commit(records).await
                    }
                }
            }
            Request::AlterTopicConfig {
                name,
                ops,
                replace,
                validate_only,
            } => {
                let Some(topic) = image.topics.get(&name) else {
                    return no_such_topic(&name);
                };
                match altered_config(&topic.config, &self.config.topic_defaults, &ops, replace) {
                    Err((code, message)) => error(code, message),
                    // Committed offsets live in it: retention must not
                    // delete them.
                    Ok(config)
                        if crate::metadata::is_internal(&name)
                            && config.get("cleanup.policy").map(String::as_str)
                                != Some("compact") =>
                    {
                        error(
                            ErrorCode::InvalidConfig,
                            format!("The cleanup.policy of {name} stays compact."),
                        )
                    }
                    Ok(config) if validate_only || config == topic.config => {
                        Response::Ok { index: 0 }
                    }
                    Ok(config) => {
                        tracing::info!(topic = %name, ?config, "topic config changed");
                        self.commit(vec![Record::TopicConfig {
                            id: topic.id.to_string(),
                            config,
                        }])
                        .await
                    }
                }
            }
            Request::ElectLeaders {
                unclean,
                partitions,
            } => {
                // Partitions no longer eligible since the broker looked
                // are left as they are; it reports them from its snapshot.
                let live = image.live_brokers();
                let mut records = Vec::new();
                for (name, index) in partitions {
                    let Some((t, p)) = image.partition(&name, index) else {
                        continue;
                    };
                    let elected = if unclean {
                        p.elect_unclean(&live)
                    } else {
                        p.elect_preferred(&live)
                    };
                    if let Ok(next) = elected {
                        records.push(Record::partition(t.id, index, &next));
                    }
                }
                if records.is_empty() {
                    return Response::Ok { index: 0 };
                }
                tracing::info!(
                    partitions = records.len(),
                    unclean,
                    "leader election asked for"
                );
                self.commit(records).await
            }
            Request::Reassign { partitions } => {
                // Partitions that changed so that the move no longer
                // applies are left as they are; the broker reports them
                // from its snapshot.
                let live = image.live_brokers();
                let registered = |b: i32| image.brokers.contains_key(&b);
                let mut records = Vec::new();
                for (name, index, target) in partitions {
                    let Some((t, p)) = image.partition(&name, index) else {
                        continue;
                    };
                    match reassignment(p, target.as_deref(), registered, &live) {
                        Ok(next) if next != *p => {
                            records.push(Record::partition(t.id, index, &next));
                        }
                        _ => {}
                    }
                }
                if !records.is_empty() {
                    tracing::info!(partitions = records.len(), "partition reassignment");
                }
                self.commit(records).await
            }
            Request::DeleteTopic { name } => match image.topics.get(&name) {
                None => no_such_topic(&name),
                Some(t) => {
                    self.commit(vec![Record::RemoveTopic {
                        id: t.id.to_string(),
                    }])
                    .await
                }
            },
            Request::AlterPartition {
                node,
                topic_id,
                index,
                leader_epoch,
                partition_epoch,
                isr,
            } => {
                let proposal = IsrProposal {
                    leader: NodeId(node),
                    leader_epoch: LeaderEpoch(leader_epoch),
                    partition_epoch,
                    isr: isr.into_iter().map(NodeId).collect(),
                };
                match alter_partition(&image, &topic_id, index, &proposal) {
                    Ok(records) => self.commit(records).await,
                    Err((code, message)) => error(code, message),
                }
            }
            Request::ReplicaFailed {
                node,
                incarnation,
                topic_id,
                index,
            } => match image.brokers.get(&node) {
                Some(b) if b.incarnation != incarnation => {
                    error(ErrorCode::StaleBrokerEpoch, "broker registered again since")
                }
                None => error(ErrorCode::StaleBrokerEpoch, "broker is not registered"),
                Some(_) => match replica_failed(&image, node, &topic_id, index, &self.config) {
                    Ok(records) => {
                        let changed = !records.is_empty();
                        let response = self.commit(records).await;
                        if changed && matches!(response, Response::Ok { .. }) {
                            tracing::warn!(node, %topic_id, index,
                                "a broker's replica failed: it left the ISR, and the leadership if it led");
                        }
                        response
                    }
                    Err((code, message)) => error(code, message),
                },
            },
            Request::AllocateProducerIds { node, incarnation } => {
                match image.brokers.get(&node) {
                    Some(b) if b.incarnation == incarnation => {}
                    _ => return error(ErrorCode::StaleBrokerEpoch, "broker is not registered"),
                }
                let start = image.next_producer_id;
                self.commit(vec![Record::ProducerIds {
                    node,
                    start,
                    end: start + PRODUCER_ID_BLOCK,
                }])
                .await
            }
            Request::AlterScramCredentials {
                upsertions,
                deletions,
                if_absent,
            } => {
                self.commit(scram_records(&image, upsertions, deletions, if_absent))
                    .await
            }
            Request::CreateAcls { bindings } => {
                let records = bindings
                    .into_iter()
                    .filter(|b| !image.acls.contains(b))
                    .map(|binding| Record::Acl { binding })
                    .collect::<Vec<_>>();
                if !records.is_empty() {
                    tracing::info!(acls = records.len(), "ACLs created");
                }
                self.commit(records).await
            }
            Request::DeleteAcls { bindings } => {
                let records = bindings
                    .into_iter()
                    .filter(|b| image.acls.contains(b))
                    .map(|binding| Record::RemoveAcl { binding })
                    .collect::<Vec<_>>();
                if !records.is_empty() {
                    tracing::info!(acls = records.len(), "ACLs deleted");
                }
                self.commit(records).await
            }
            Request::AlterClientQuotas { changes } => {
                let records = quota_records(&image, changes);
                if !records.is_empty() {
                    tracing::info!(changes = records.len(), "client quotas altered");
                }
                self.commit(records).await
            }
            Request::Fetch { .. } | Request::Heartbeat { .. } | Request::DescribeQuorum => {
                unreachable!("handled above")
            }
        }
    }

    /// Notes, while leading, a broker's metadata fetch from after `after`:
    /// its log ends there, and it is caught up if that is everything
    /// committed.
    fn note_fetch(&self, node: i32, after: u64) {
        if !self.quorum.is_leader() {
            return;
        }
        let now = wall_ms();
        let term = self.quorum.term();
        let caught_up = after >= self.quorum.committed_index();
        let mut fetches = self.fetches.borrow_mut();
        let before = fetches
            .get(&node)
            .filter(|f| f.0 == term)
            .map_or(-1, |f| f.3);
        fetches.insert(
            node,
            (term, after, now, if caught_up { now } else { before }),
        );
    }

    /// DescribeQuorum: the voters' progress, and every registered broker
    /// that is not a voter as an observer, with what this leader saw of
    /// its fetches in this term (-1 where it saw none; a broker may
    /// fetch from any voter).
    fn describe_quorum(&self) -> Response {
        let Some(state) = self.quorum.describe() else {
            return self.not_controller();
        };
        let fetches = self.fetches.borrow();
        let observers = self
            .quorum
            .image()
            .brokers
            .keys()
            .filter(|b| !state.voters.iter().any(|v| v.id == **b))
            .map(|b| {
                let seen = fetches.get(b).filter(|f| f.0 == state.term);
                ReplicaProgress {
                    id: *b,
                    log_end_offset: seen.map_or(-1, |f| f.1 as i64),
                    last_fetch_ms: seen.map_or(-1, |f| f.2),
                    last_caught_up_ms: seen.map_or(-1, |f| f.3),
                }
            })
            .collect();
        Response::Quorum { state, observers }
    }

    /// A broker's heartbeat: noted at once, without waiting for a change
    /// in progress (a heartbeat stuck behind one must not cost a broker
    /// its session). The answer names the index of this controller's
    /// image, which the broker waits to have before renewing its lease.
    async fn heartbeat(&self, node: i32, incarnation: u64) -> Response {
        if !self.quorum.is_current() {
            return self.not_controller();
        }
        {
            let image = self.quorum.image();
            let Some(b) = image.brokers.get(&node) else {
                return error(ErrorCode::StaleBrokerEpoch, "broker is not registered");
            };
            if b.incarnation != incarnation {
                return error(ErrorCode::StaleBrokerEpoch, "broker registered again since");
            }
            self.sessions.borrow_mut().heartbeat(node, monotonic_ms());
            if !b.fenced {
                return Response::Ok {
                    index: image.applied,
                };
            }
        }
        // Fenced: unfencing is a change, one at a time.
        let Ok(_permit) = self.lock.acquire_permit(1).await else {
            return error(ErrorCode::UnknownServerError, "controller is stopping");
        };
        if !self.quorum.is_current() {
            return self.not_controller();
        }
        let image = self.quorum.image().clone();
        match image.brokers.get(&node) {
            Some(b) if b.incarnation == incarnation && b.fenced => {
                tracing::info!(node, "broker unfenced");
                self.commit(broker_up(&image, node, &self.config)).await
            }
            Some(b) if b.incarnation == incarnation => Response::Ok {
                index: image.applied,
            },
            _ => error(ErrorCode::StaleBrokerEpoch, "broker registered again since"),
        }
    }

    /// Waits (a few seconds at most) until this voter leads with an image
    /// holding every entry committed before its term: a controller that
    /// decided on an older image could undo what its predecessor
    /// committed (an ISR shrink, a fence) with a record built on the state
    /// before it.
    async fn wait_current(&self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.quorum.is_leader() && Instant::now() < deadline {
            if self.quorum.is_current() {
                return true;
            }
            let applied = self.quorum.image().applied;
            self.quorum
                .wait_applied_after(applied, Duration::from_millis(100))
                .await;
        }
        false
    }

    /// A connection from broker `node` (at `ip`) closed: check at once
    /// whether its process is gone, or when this voter takes over.
    pub fn connection_closed(self: Rc<Self>, node: i32, ip: std::net::IpAddr) {
        if node as u64 == self.quorum.id {
            return;
        }
        if self.quorum.is_current() {
            glommio::spawn_local(self.check_gone(node, ip)).detach();
        } else {
            self.closed.borrow_mut().insert(node, ip);
        }
    }

    /// Fences broker `node` at once if its process is gone: a connection
    /// from it (at `ip`) closed and its client port there now refuses
    /// connections, which the kernel does once a crashed process's sockets
    /// are closed. A port that accepts, or does not answer (a hung
    /// machine, a cut network), proves nothing: that broker keeps its
    /// session, as fencing on silence alone would make brokers flap. So
    /// does a broker whose advertised host is not the address it connects
    /// from (behind a proxy, the advertised port may be another machine's).
    /// A broker that registered again meanwhile is left alone.
    async fn check_gone(self: Rc<Self>, node: i32, ip: std::net::IpAddr) {
        if !self.quorum.is_current() {
            return;
        }
        if !self.probing.borrow_mut().insert(node) {
            return;
        }
        let probed = async {
            let (incarnation, host, port) = {
                let image = self.quorum.image();
                match image.brokers.get(&node) {
                    Some(b) if !b.fenced => (b.incarnation, b.host.clone(), b.port),
                    _ => return,
                }
            };
            // A dying process's connections may close before its
            // listening sockets do, so an accepted probe is tried again a
            // few times before it counts as a live broker.
            let mut refused = false;
            for probe in 0..PROBES {
                if probe > 0 {
                    glommio::timer::sleep(PROBE_INTERVAL).await;
                }
                if port_refuses(host.clone(), ip, port).await {
                    refused = true;
                    break;
                }
            }
            if !refused {
                return;
            }
            let Ok(_permit) = self.lock.acquire_permit(1).await else {
                return;
            };
            if !self.quorum.is_current() {
                return;
            }
            let image = self.quorum.image().clone();
            if !image
                .brokers
                .get(&node)
                .is_some_and(|b| !b.fenced && b.incarnation == incarnation)
            {
                return;
            }
            if let Response::Ok { .. } = self.commit(broker_down(&image, node, &self.config)).await
            {
                tracing::warn!(
                    node,
                    "broker's connection closed and its port refuses connections; fencing it now"
                );
            }
        };
        probed.await;
        self.probing.borrow_mut().remove(&node);
    }

    /// Fences brokers whose heartbeats stopped, while this voter leads.
    pub async fn watch_sessions(self: Rc<Self>, stop: impl Fn() -> bool) {
        let mut was_leader = false;
        let mut next_rebalance = self.config.rebalance_interval.map(|i| Instant::now() + i);
        while !stop() {
            glommio::timer::sleep(Duration::from_millis(250)).await;
            // Sessions run from the moment this controller can act.
            let leader = self.quorum.is_current();
            if leader && !was_leader {
                // A new controller gives every broker a full session, but
                // fences at once those whose connections closed and whose
                // process is gone (the old controller's, if it crashed).
                self.sessions.borrow_mut().start(monotonic_ms());
                let closed = std::mem::take(&mut *self.closed.borrow_mut());
                for (node, ip) in closed {
                    glommio::spawn_local(Rc::clone(&self).check_gone(node, ip)).detach();
                }
            }
            if !leader && was_leader {
                self.sessions.borrow_mut().stop();
            }
            was_leader = leader;
            if !leader {
                continue;
            }
            let now = Instant::now();
            let expired = self
                .sessions
                .borrow()
                .expired(&self.quorum.image(), monotonic_ms());
            for node in expired {
                let Ok(_permit) = self.lock.acquire_permit(1).await else {
                    return;
                };
                let image = self.quorum.image().clone();
                if image.brokers.get(&node).is_none_or(|b| b.fenced) {
                    continue;
                }
                // Logged once committed: a controller deposed meanwhile
                // fences nobody.
                let down = broker_down(&image, node, &self.config);
                if let Response::Ok { .. } = self.commit(down).await {
                    tracing::warn!(node, "broker missed its session timeout; fencing it");
                }
            }
            if let (Some(at), Some(interval)) = (next_rebalance, self.config.rebalance_interval) {
                if now >= at {
                    next_rebalance = Some(now + interval);
                    let Ok(_permit) = self.lock.acquire_permit(1).await else {
                        return;
                    };
                    let records = rebalance(&self.quorum.image(), self.config.imbalance_percentage);
                    if !records.is_empty() {
                        tracing::info!(
                            partitions = records.len(),
                            "moving leadership back to preferred replicas"
                        );
                        let _ = self.commit(records).await;
                    }
                }
            }
        }
    }
}

/// The records of an AlterScramCredentials: removals of credentials
/// that exist, then the upsertions (those absent only, with `if_absent`).
/// A malformed credential never reaches the log.
fn scram_records(
    image: &ClusterImage,
    upsertions: Vec<(String, ScramMechanism, ScramCredential)>,
    deletions: Vec<(String, ScramMechanism)>,
    if_absent: bool,
) -> Vec<Record> {
    let mut records = Vec::new();
    for (user, mechanism) in deletions {
        if image.scram.contains_key(&(user.clone(), mechanism)) {
            records.push(Record::RemoveScramCredential { user, mechanism });
        }
    }
    for (user, mechanism, credential) in upsertions {
        let exists = image.scram.contains_key(&(user.clone(), mechanism));
        if !credential.is_valid_for(mechanism) || (if_absent && exists) {
            continue;
        }
        tracing::info!(%user, mechanism = mechanism.name(), "SCRAM credential set");
        records.push(Record::ScramCredential {
            user,
            mechanism,
            credential,
        });
    }
    records
}

/// The records of an AlterClientQuotas: a removal of each quota that
/// exists and a record of each value that changes, as Kafka's
/// ClientQuotaControlManager writes them.
fn quota_records(
    image: &ClusterImage,
    changes: Vec<(QuotaEntity, QuotaKey, Option<QuotaValue>)>,
) -> Vec<Record> {
    let mut records = Vec::new();
    for (entity, key, value) in changes {
        let current = image.quotas.get(&entity).and_then(|q| q.get(&key));
        match value {
            None if current.is_some() => records.push(Record::RemoveClientQuota { entity, key }),
            None => {}
            Some(v) if current != Some(&v) => records.push(Record::ClientQuota {
                entity,
                key,
                value: v,
            }),
            Some(_) => {}
        }
    }
    records
}

/// A partition named by topic id and index, with its topic.
fn partition_by_id<'a>(
    image: &'a ClusterImage,
    topic_id: &str,
    index: i32,
) -> Result<(&'a TopicImage, &'a PartitionState), (ErrorCode, &'static str)> {
    let Some(topic) = topic_id.parse().ok().and_then(|id| image.topic_by_id(id)) else {
        return Err((ErrorCode::UnknownTopicOrPartition, "no such topic"));
    };
    let Some(state) = usize::try_from(index)
        .ok()
        .and_then(|i| topic.partitions.get(i))
    else {
        return Err((ErrorCode::UnknownTopicOrPartition, "no such partition"));
    };
    Ok((topic, state))
}

/// The records of a leader's ISR change, or why it is refused.
pub(crate) fn alter_partition(
    image: &ClusterImage,
    topic_id: &str,
    index: i32,
    proposal: &IsrProposal,
) -> Result<Vec<Record>, (ErrorCode, &'static str)> {
    use crate::replication::controller::AlterRefusal::*;
    let (topic, state) = partition_by_id(image, topic_id, index)?;
    let live = image.live_brokers();
    match state.alter(proposal, &live) {
        Ok(next) => {
            // The ISR change may complete a reassignment.
            let next = next.complete_reassignment(&live).unwrap_or(next);
            Ok(vec![Record::partition(topic.id, index, &next)])
        }
        Err(FencedLeaderEpoch) => Err((ErrorCode::FencedLeaderEpoch, "not the leader")),
        Err(StalePartitionEpoch) => Err((ErrorCode::InvalidUpdateVersion, "stale partition epoch")),
        Err(IneligibleReplica) => Err((ErrorCode::IneligibleReplica, "replica is not eligible")),
    }
}

/// The records of a broker's report that its replica failed (see
/// [`PartitionState::on_replica_failed`]); none when nothing changes.
pub(crate) fn replica_failed(
    image: &ClusterImage,
    node: i32,
    topic_id: &str,
    index: i32,
    config: &ControllerConfig,
) -> Result<Vec<Record>, (ErrorCode, &'static str)> {
    let (topic, state) = partition_by_id(image, topic_id, index)?;
    let unclean = unclean(&topic.config, config.unclean_default);
    let live = image.live_brokers();
    Ok(state
        .on_replica_failed(NodeId(node), &live, unclean)
        .map(|next| vec![Record::partition(topic.id, index, &next)])
        .unwrap_or_default())
}

/// Partition changes for every partition, given a rule.
fn partition_changes(
    image: &ClusterImage,
    config: &ControllerConfig,
    change: impl Fn(&PartitionState, bool) -> Option<PartitionState>,
) -> Vec<Record> {
    let mut records = Vec::new();
    for t in image.topics.values() {
        let unclean = unclean(&t.config, config.unclean_default);
        for (i, p) in t.partitions.iter().enumerate() {
            if let Some(next) = change(p, unclean) {
                records.push(Record::partition(t.id, i as i32, &next));
            }
        }
    }
    records
}

pub(crate) fn broker_down(
    image: &ClusterImage,
    node: i32,
    config: &ControllerConfig,
) -> Vec<Record> {
    let live: Vec<NodeId> = image
        .live_brokers()
        .into_iter()
        .filter(|n| n.0 != node)
        .collect();
    let mut records = vec![Record::FenceBroker { node, fenced: true }];
    records.extend(partition_changes(image, config, |p, unclean| {
        p.on_broker_down(NodeId(node), &live, unclean)
    }));
    records
}

pub(crate) fn broker_up(image: &ClusterImage, node: i32, config: &ControllerConfig) -> Vec<Record> {
    let mut live = image.live_brokers();
    live.push(NodeId(node));
    let mut records = vec![Record::FenceBroker {
        node,
        fenced: false,
    }];
    records.extend(partition_changes(image, config, |p, unclean| {
        p.on_broker_up(&live, unclean)
    }));
    records
}

/// Records for a (re)registration; none if nothing changed.
pub(crate) fn register(
    image: &ClusterImage,
    node: i32,
    host: String,
    port: u16,
    listeners: crate::cluster::records::Endpoints,
    incarnation: u64,
    config: &ControllerConfig,
) -> Vec<Record> {
    let known = image.brokers.get(&node);
    if known.is_some_and(|b| {
        b.incarnation == incarnation
            && b.host == host
            && b.port == port
            && b.listeners == listeners
            && !b.fenced
    }) {
        return Vec::new();
    }
    let record = Record::RegisterBroker {
        node,
        host,
        port,
        incarnation,
        listeners,
    };
    // A restart: first everything the old incarnation held moves on, as
    // if it had been fenced; then it comes back.
    let mut scratch = image.clone();
    let mut records = Vec::new();
    if known.is_some_and(|b| !b.fenced) {
        let down = broker_down(&scratch, node, config);
        scratch.apply(scratch.applied, &down);
        records.extend(
            down.into_iter()
                .filter(|r| !matches!(r, Record::FenceBroker { .. })),
        );
    }
    scratch.apply(scratch.applied, std::slice::from_ref(&record));
    records.insert(0, record);
    let mut live = scratch.live_brokers();
    live.sort();
    records.extend(partition_changes(&scratch, config, |p, unclean| {
        p.on_broker_up(&live, unclean)
    }));
    records
}

/// Preferred-leader elections for every broker that leads too few of the
/// partitions it is the first replica of: more than `percentage` of them
/// led elsewhere (Kafka's `leader.imbalance.per.broker.percentage`).
/// Only partitions whose preferred replica is live and in sync move.
pub(crate) fn rebalance(image: &ClusterImage, percentage: u64) -> Vec<Record> {
    let live = image.live_brokers();
    let mut preferred: BTreeMap<NodeId, (u64, u64)> = BTreeMap::new();
    for t in image.topics.values() {
        for p in &t.partitions {
            let entry = preferred.entry(p.replicas[0]).or_default();
            entry.0 += 1;
            if p.leader != Some(p.replicas[0]) {
                entry.1 += 1;
            }
        }
    }
    let imbalanced = |n: &NodeId| {
        preferred
            .get(n)
            .is_some_and(|(total, elsewhere)| elsewhere * 100 > percentage * total)
    };
    let mut records = Vec::new();
    for t in image.topics.values() {
        for (i, p) in t.partitions.iter().enumerate() {
            if !imbalanced(&p.replicas[0]) {
                continue;
            }
            if let Ok(next) = p.elect_preferred(&live) {
                records.push(Record::partition(t.id, i as i32, &next));
            }
        }
    }
    records
}

/// A topic's overrides after `ops`, applied in order to the current ones
/// (or to none, when `replace`). Every name set must be a topic key and
/// every value it ends with valid for that key. Deleting a name that is
/// not a topic key deletes nothing and is no error: as in Kafka, which
/// checks the overrides a change leaves, not the names it removes, so a
/// tool may clear keys this broker never takes (kafka-reassign-partitions
/// `--verify` clears the replication throttles of every topic it moved).
pub fn altered_config(
    current: &BTreeMap<String, String>,
    defaults: &BTreeMap<String, String>,
    ops: &[ConfigOp],
    replace: bool,
) -> Result<BTreeMap<String, String>, (ErrorCode, String)> {
    let invalid = |m: String| (ErrorCode::InvalidConfig, m);
    let mut config = if replace {
        BTreeMap::new()
    } else {
        current.clone()
    };
    for op in ops {
        let name = op.name.as_str();
        let key = find_topic_key(name);
        if key.is_none() && op.op == OpKind::Delete {
            continue;
        }
        let key = key.ok_or_else(|| invalid(format!("Unknown topic config name: {name}")))?;
        let value = || {
            op.value.clone().ok_or_else(|| {
                (
                    ErrorCode::InvalidRequest,
                    format!("{name}: the operation needs a value"),
                )
            })
        };
        let new = match op.op {
            OpKind::Delete => None,
            OpKind::Set => Some(value()?),
            OpKind::Append | OpKind::Subtract => {
                if !LIST_KEYS.contains(&name) {
                    return Err(invalid(format!(
                        "{name} is not a list: APPEND and SUBTRACT do not apply to it"
                    )));
                }
                let now = config.get(name).or(defaults.get(name)).cloned();
                let mut items: Vec<String> = now
                    .iter()
                    .flat_map(|v| v.split(','))
                    .map(|i| i.trim().to_string())
                    .filter(|i| !i.is_empty())
                    .collect();
                for item in value()?.split(',').map(str::trim).filter(|i| !i.is_empty()) {
                    if op.op == OpKind::Subtract {
                        items.retain(|i| i != item);
                    } else if !items.iter().any(|i| i == item) {
                        items.push(item.to_string());
                    }
                }
                Some(items.join(","))
            }
        };
        match new {
            None => {
                config.remove(name);
            }
            Some(v) => {
                let v = check_value(name, key, &v).map_err(|e| invalid(e.to_string()))?;
                config.insert(name.to_string(), v);
            }
        }
    }
    crate::config::check_topic_combination(|k| {
        config
            .get(k)
            .or_else(|| defaults.get(k))
            .map(String::as_str)
    })
    .map_err(|e| invalid(e.to_string()))?;
    Ok(config)
}

/// The replicas of the partitions that grow `topic` to `count`: as
/// `assignments` has them (one list per new partition), else placed over
/// the live brokers as CreateTopics places them, with the topic's
/// replication factor.
fn new_partitions(
    topic: &TopicImage,
    count: i32,
    assignments: Option<&[Vec<i32>]>,
    image: &ClusterImage,
) -> Result<Vec<Vec<NodeId>>, (ErrorCode, String)> {
    let current = topic.partitions.len();
    check_partition_count(count)?;
    let Some(added) = usize::try_from(count).ok().filter(|c| *c > current) else {
        let message = if count as usize == current {
            format!("Topic already has {current} partitions.")
        } else {
            format!(
                "Topic currently has {current} partitions, which is higher than the requested {count}."
            )
        };
        return Err((ErrorCode::InvalidPartitions, message));
    };
    let added = added - current;
    let rf = topic.partitions.first().map_or(1, |p| p.target().len());
    let bad = |m: String| Err((ErrorCode::InvalidReplicaAssignment, m));
    let Some(assignments) = assignments else {
        let live = image.live_brokers();
        if rf > live.len() {
            return Err((
                ErrorCode::InvalidReplicationFactor,
                format!(
                    "Replication factor: {rf} larger than available brokers: {}.",
                    live.len()
                ),
            ));
        }
        let placed = place(topic.id, count, rf, &live);
        return Ok(placed[current..].to_vec());
    };
    if assignments.len() != added {
        return bad(format!(
            "Increasing the number of partitions by {added} but {} assignments provided.",
            assignments.len()
        ));
    }
    let mut placed = Vec::new();
    for (i, brokers) in assignments.iter().enumerate() {
        let mut distinct = brokers.clone();
        distinct.sort_unstable();
        distinct.dedup();
        if brokers.len() != rf || distinct.len() != rf {
            return bad(format!(
                "Partition {}: {rf} distinct replicas wanted, {brokers:?} given.",
                current + i
            ));
        }
        if let Some(unknown) = brokers.iter().find(|b| !image.brokers.contains_key(b)) {
            return bad(format!("Unknown broker {unknown} in the assignment."));
        }
        placed.push(brokers.iter().copied().map(NodeId).collect());
    }
    Ok(placed)
}

/// The state that starts moving `p` to `target` (see
/// [`PartitionState::reassign`]), or with no target cancels its running
/// reassignment; `registered` tells the brokers the cluster knows. Both
/// the broker that takes the request and the controller check with it.
pub fn reassignment(
    p: &PartitionState,
    target: Option<&[i32]>,
    registered: impl Fn(i32) -> bool,
    live: &[NodeId],
) -> Result<PartitionState, (ErrorCode, String)> {
    use crate::replication::controller::ReassignRefusal;
    let bad = |m: String| Err((ErrorCode::InvalidReplicaAssignment, m));
    let next = match target {
        None => p.cancel_reassignment(live),
        Some([]) => return bad("The replica list is empty.".into()),
        Some(target) => {
            let mut distinct = target.to_vec();
            distinct.sort_unstable();
            distinct.dedup();
            if distinct.len() != target.len() {
                return bad(format!("The replica list {target:?} names a broker twice."));
            }
            if let Some(b) = target.iter().find(|b| !registered(**b)) {
                return bad(format!("Broker {b} in the replica list is not registered."));
            }
            let target: Vec<NodeId> = target.iter().copied().map(NodeId).collect();
            p.reassign(&target, live)
        }
    };
    next.map_err(|refusal| match refusal {
        ReassignRefusal::NoReassignment => (
            ErrorCode::NoReassignmentInProgress,
            "No reassignment of this partition is in progress.".into(),
        ),
        ReassignRefusal::NoInSyncReplica => (
            ErrorCode::InvalidReplicaAssignment,
            "No in-sync replica would be left in the assignment.".into(),
        ),
    })
}

/// Checks a new topic's manual assignment (one replica list per
/// partition, in partition order) as Kafka does: no empty list, no broker
/// twice in one, only brokers `registered` says exist, and the same
/// replication factor everywhere.
pub fn check_assignment(
    assignments: &[Vec<i32>],
    registered: impl Fn(i32) -> bool,
) -> Result<(), (ErrorCode, String)> {
    let bad = |m: String| Err((ErrorCode::InvalidReplicaAssignment, m));
    let Some(rf) = assignments.first().map(Vec::len) else {
        return bad("The manual partition assignment names no partition.".into());
    };
    for (p, replicas) in assignments.iter().enumerate() {
        if replicas.is_empty() {
            return bad(format!("Partition {p}: the replica list is empty."));
        }
        let mut distinct = replicas.clone();
        distinct.sort_unstable();
        distinct.dedup();
        if distinct.len() != replicas.len() {
            return bad(format!("Partition {p}: {replicas:?} names a broker twice."));
        }
        if let Some(b) = replicas.iter().find(|b| !registered(**b)) {
            return bad(format!("Partition {p}: no broker {b} is registered."));
        }
        if replicas.len() != rf {
            return bad(format!(
                "Partition {p} has {} replicas, partition 0 has {rf}.",
                replicas.len()
            ));
        }
    }
    Ok(())
}

/// The partitions of a new topic with a manual assignment: each led by
/// its first live replica, its live replicas in sync (as Kafka, which
/// leaves fenced brokers out of a new partition's ISR). A partition with
/// no live replica is refused.
fn assigned_partitions(
    assignments: &[Vec<i32>],
    image: &ClusterImage,
    live: &[NodeId],
) -> Result<Vec<PartitionState>, (ErrorCode, String)> {
    check_assignment(assignments, |b| image.brokers.contains_key(&b))?;
    check_partition_count(i32::try_from(assignments.len()).unwrap_or(i32::MAX))?;
    assignments
        .iter()
        .enumerate()
        .map(|(p, replicas)| {
            let replicas: Vec<NodeId> = replicas.iter().copied().map(NodeId).collect();
            let isr: Vec<NodeId> = replicas
                .iter()
                .copied()
                .filter(|r| live.contains(r))
                .collect();
            if isr.is_empty() {
                return Err((
                    ErrorCode::InvalidReplicaAssignment,
                    format!("Partition {p}: every broker assigned is fenced."),
                ));
            }
            let mut state = PartitionState::new(replicas);
            state.leader = Some(isr[0]);
            state.isr = isr;
            Ok(state)
        })
        .collect()
}

/// Replica lists for a new topic: partition `p` starts at live broker
/// `start + p`, so leaders spread round-robin; `start` comes from the
/// topic id so that every topic's partition 0 does not share a leader.
pub fn place(
    topic_id: uuid::Uuid,
    partitions: i32,
    rf: usize,
    live: &[NodeId],
) -> Vec<Vec<NodeId>> {
    let n = live.len();
    let start = (topic_id.as_u128() % n.max(1) as u128) as usize;
    (0..partitions.max(0) as usize)
        .map(|p| (0..rf).map(|k| live[(start + p + k) % n]).collect())
        .collect()
}

/// Whether the broker advertised as HOST:PORT, which connected from
/// `ip`, refuses a TCP connection at `ip`:PORT (nothing listens there).
/// False when HOST does not resolve to `ip`. Resolving and connecting
/// block, so they run on a helper thread.
async fn port_refuses(host: String, ip: std::net::IpAddr, port: u16) -> bool {
    glommio::executor()
        .spawn_blocking(move || {
            use std::net::ToSocketAddrs;
            let same_host = (host.as_str(), port)
                .to_socket_addrs()
                .is_ok_and(|mut addrs| addrs.any(|a| a.ip() == ip));
            if !same_host {
                return false;
            }
            let addr = std::net::SocketAddr::new(ip, port);
            matches!(
                std::net::TcpStream::connect_timeout(&addr, PROBE_TIMEOUT),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
            )
        })
        .await
}

/// How long a port probe waits for a connection: a refusal comes back at
/// once from a live machine; anything slower proves nothing.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Probes of a closed broker's port, [`PROBE_INTERVAL`] apart: the kernel
/// closes a killed process's sockets one by one, and a loaded machine can
/// take a while to reach the listening ones.
const PROBES: u32 = 5;
const PROBE_INTERVAL: Duration = Duration::from_millis(200);

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ControllerConfig {
        ControllerConfig {
            session_timeout: Duration::from_secs(9),
            unclean_default: false,
            topic_defaults: BTreeMap::new(),
            rebalance_interval: None,
            imbalance_percentage: 10,
        }
    }

    #[test]
    fn placement_spreads_leaders_and_never_repeats_a_broker() {
        let live = [NodeId(1), NodeId(2), NodeId(3)];
        let p = place(uuid::Uuid::new_v4(), 6, 3, &live);
        let mut leaders = [0; 4];
        for replicas in &p {
            leaders[replicas[0].0 as usize] += 1;
            let mut r = replicas.clone();
            r.sort();
            r.dedup();
            assert_eq!(r.len(), 3);
        }
        assert_eq!(&leaders[1..], &[2, 2, 2]);
    }

    fn cluster(brokers: &[i32]) -> (ClusterImage, uuid::Uuid) {
        let mut image = ClusterImage::default();
        let id = uuid::Uuid::new_v4();
        let mut records = crate::cluster::records::registrations(brokers);
        records.push(Record::Topic {
            name: "t".into(),
            id: id.to_string(),
            partitions: 1,
            config: Default::default(),
        });
        let replicas = brokers.iter().copied().map(NodeId).collect();
        records.push(Record::partition(id, 0, &PartitionState::new(replicas)));
        image.apply(1, &records);
        (image, id)
    }

    #[test]
    fn a_manual_assignment_is_checked_and_leaves_fenced_brokers_out_of_the_isr() {
        let (mut image, _) = cluster(&[1, 2, 3]);
        let down = broker_down(&image, 2, &config());
        image.apply(2, &down);
        let live = image.live_brokers();
        let states = assigned_partitions(&[vec![2, 1], vec![3, 2]], &image, &live).unwrap();
        assert_eq!(states[0].replicas, [NodeId(2), NodeId(1)]);
        assert_eq!(states[0].leader, Some(NodeId(1)));
        assert_eq!(states[0].isr, [NodeId(1)]);
        assert_eq!(states[1].leader, Some(NodeId(3)));
        assert_eq!(states[1].isr, [NodeId(3)]);
        let refused = |a: &[Vec<i32>]| assigned_partitions(a, &image, &live).unwrap_err().0;
        for bad in [
            vec![],
            vec![vec![]],
            vec![vec![1, 1]],
            vec![vec![1, 4]],
            vec![vec![1, 3], vec![3]],
            vec![vec![2]],
        ] {
            assert_eq!(
                refused(&bad),
                ErrorCode::InvalidReplicaAssignment,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn fencing_the_leader_elects_from_the_isr_and_a_restart_bumps_the_epoch() {
        let (mut image, _) = cluster(&[1, 2, 3]);
        let down = broker_down(&image, 1, &config());
        image.apply(2, &down);
        let p = &image.topics["t"].partitions[0];
        assert_eq!(p.leader, Some(NodeId(2)));
        assert_eq!(p.isr, vec![NodeId(2), NodeId(3)]);
        assert!(image.brokers[&1].fenced);
        let up = broker_up(&image, 1, &config());
        image.apply(3, &up);
        assert!(!image.brokers[&1].fenced);
        // Broker 2 restarts: it loses the lead to 3 and comes back as a
        // follower outside the ISR.
        let epoch = image.topics["t"].partitions[0].leader_epoch;
        let again = register(
            &image,
            2,
            "127.0.0.1".into(),
            9002,
            Default::default(),
            2,
            &config(),
        );
        image.apply(4, &again);
        let p = &image.topics["t"].partitions[0];
        assert_eq!(p.leader, Some(NodeId(3)));
        assert!(p.leader_epoch.0 > epoch.0);
        assert_eq!(image.brokers[&2].incarnation, 2);
        assert!(register(
            &image,
            2,
            "127.0.0.1".into(),
            9002,
            Default::default(),
            2,
            &config()
        )
        .is_empty());
    }

    #[test]
    fn a_lone_replica_restarting_leads_again_on_a_new_epoch() {
        let (mut image, _) = cluster(&[1]);
        let again = register(
            &image,
            1,
            "127.0.0.1".into(),
            9001,
            Default::default(),
            2,
            &config(),
        );
        image.apply(2, &again);
        let p = &image.topics["t"].partitions[0];
        assert_eq!(p.leader, Some(NodeId(1)));
        assert_eq!(p.leader_epoch, LeaderEpoch(2));
    }

    #[test]
    fn config_changes_apply_in_order_and_are_checked() {
        let op = |name: &str, op, value: Option<&str>| ConfigOp {
            name: name.into(),
            op,
            value: value.map(String::from),
        };
        let current: BTreeMap<String, String> =
            [("retention.ms".to_string(), "1000".to_string())].into();
        let defaults: BTreeMap<String, String> =
            [("cleanup.policy".to_string(), "delete".to_string())].into();
        let next = altered_config(
            &current,
            &defaults,
            &[
                op("segment.bytes", OpKind::Set, Some("1048576")),
                op("retention.ms", OpKind::Delete, None),
                op("cleanup.policy", OpKind::Append, Some("compact")),
                op("unclean.leader.election.enable", OpKind::Set, Some("TRUE")),
            ],
            false,
        )
        .unwrap();
        let expect: BTreeMap<String, String> = [
            ("segment.bytes", "1048576"),
            ("cleanup.policy", "delete,compact"),
            ("unclean.leader.election.enable", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(next, expect);
        let back = altered_config(
            &next,
            &defaults,
            &[op("cleanup.policy", OpKind::Subtract, Some("delete"))],
            false,
        )
        .unwrap();
        assert_eq!(back["cleanup.policy"], "compact");
        // AlterConfigs replaces every override.
        let replaced = altered_config(
            &next,
            &defaults,
            &[op("flush.messages", OpKind::Set, Some("1"))],
            true,
        )
        .unwrap();
        assert_eq!(replaced.len(), 1);
        let refused = |ops: &[ConfigOp]| {
            altered_config(&current, &defaults, ops, false)
                .unwrap_err()
                .0
        };
        assert_eq!(
            refused(&[op("no.such.key", OpKind::Set, Some("1"))]),
            ErrorCode::InvalidConfig
        );
        // Nothing can have set it, so deleting it leaves the overrides as
        // they were (Kafka checks what a change leaves, not what it removes).
        let cleared = altered_config(
            &current,
            &defaults,
            &[op(
                "leader.replication.throttled.replicas",
                OpKind::Delete,
                None,
            )],
            false,
        );
        assert_eq!(cleared, Ok(current.clone()));
        assert_eq!(
            refused(&[op("segment.bytes", OpKind::Set, Some("big"))]),
            ErrorCode::InvalidConfig
        );
        assert_eq!(
            refused(&[op("segment.bytes", OpKind::Append, Some("1"))]),
            ErrorCode::InvalidConfig
        );
        assert_eq!(
            refused(&[op("segment.bytes", OpKind::Set, None)]),
            ErrorCode::InvalidRequest
        );
        assert_eq!(
            refused(&[op("cleanup.policy", OpKind::Subtract, Some("delete"))]),
            ErrorCode::InvalidConfig,
            "an empty cleanup.policy is not a policy"
        );
    }

    #[test]
    fn rebalancing_moves_leaders_back_only_past_the_imbalance_share() {
        let (mut image, _) = cluster(&[1, 2, 3]);
        let topic = image.topics.values().next().unwrap().name.clone();
        let t = image.topics.get_mut(&topic).unwrap();
        // Broker 1 is preferred for some partitions; lead one elsewhere.
        let first: Vec<usize> = (0..t.partitions.len())
            .filter(|i| t.partitions[*i].replicas[0] == NodeId(1))
            .collect();
        assert!(!first.is_empty());
        let moved = first[0];
        let p = &mut t.partitions[moved];
        p.leader = Some(p.replicas[1]);
        let records = rebalance(&image, 10);
        assert_eq!(records.len(), 1);
        let mut after = image.clone();
        after.apply(image.applied + 1, &records);
        let p = &after.topics[&topic].partitions[moved];
        assert_eq!(p.leader, Some(NodeId(1)));
        assert!(rebalance(&after, 10).is_empty(), "balanced now");
        // Within the allowed share nothing moves.
        assert!(rebalance(&image, 100).is_empty());
    }
}
