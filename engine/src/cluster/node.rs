//! A broker's part in the cluster, run on shard 0.
//!
//! Every broker registers with the active controller and heartbeats to
//! it, and replays the metadata log into its image: it fetches committed
//! entries (long polling) from a voter, applies them, and when anything
//! changed installs a new [`Snapshot`] on every shard, in order, so a
//! change is visible on all shards before anyone is told it is done. A
//! voter also runs its [`Quorum`] and [`Controller`] and serves the
//! controller listener; it reads the log from itself.

use super::controller::{Controller, ControllerConfig};
use super::quorum::{Quorum, QuorumState, ReplicaProgress};
use super::records::ClusterImage;
use super::route::{Outcome, Route};
use super::rpc::{self, Client, Dial, Request, Response};
use super::{monotonic_ms, ClusterConfig};
use crate::metadata::Snapshot;
use crate::security::acl::authorizer::PeerRefusal;
use crate::security::link::Link;
use crate::security::tls::TlsAcceptor;
use crate::security::Principal;
use crate::shard::Shard;
use futures::channel::{mpsc, oneshot};
use futures::StreamExt;
use glommio::net::{TcpListener, TcpStream};
use protobuf::Message as _;
use raft::eraftpb::Message;
use rustls::pki_types::CertificateDer;
use sluice_protocol::ErrorCode;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A refused change: the error code and a message for the client.
pub type ChangeError = (ErrorCode, String);

/// How long a broker keeps retrying a change while no controller answers.
const CHANGE_DEADLINE: Duration = Duration::from_secs(30);

/// How soon a heartbeat that went unanswered is sent again.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// How long a broker waits for a heartbeat's answer: a third of a
/// session (3 s of Kafka's 9 s), so that a controller that froze with
/// connections open costs a broker at most a third of its session before
/// it asks another voter, never the whole of it. Never below the
/// heartbeat interval, nor above a change's [`rpc::CALL_TIMEOUT`].
pub fn heartbeat_timeout(session: Duration, interval: Duration) -> Duration {
    (session / 3).max(interval).min(rpc::CALL_TIMEOUT)
}

pub struct ClusterNode {
    pub config: ClusterConfig,
    /// The controller listener's TLS, when the quorum speaks it.
    controller_tls: Option<Arc<TlsAcceptor>>,
    /// This run of the broker, told apart from earlier ones.
    pub incarnation: u64,
    pub controller: Option<Rc<Controller>>,
    /// The image this broker's shards see.
    image: RefCell<ClusterImage>,
    /// Highest index whose snapshot every shard has installed.
    published: Cell<u64>,
    /// Whether the shards have the metadata up to this broker's latest
    /// registration: from then on the image is no older than anything
    /// its logs hold, and reassignments may delete replicas.
    current: Cell<bool>,
    publish_waiters: RefCell<Vec<(u64, oneshot::Sender<()>)>>,
    /// Which voter to ask.
    route: RefCell<Route>,
    /// Open connections to voters, idle between calls (one call at a time
    /// each, so concurrent calls take several).
    idle: RefCell<HashMap<u64, Vec<Client>>>,
    /// Producer ids this run may still hand out, from the controller.
    producer_ids: RefCell<std::ops::Range<i64>>,
    /// One block request at a time.
    producer_ids_lock: glommio::sync::Semaphore,
    /// Set once a controlled shutdown begins: no more heartbeats, which
    /// would unfence this broker again.
    shutting_down: Cell<bool>,
    /// A heartbeat is on its way to the controller.
    beating: Cell<bool>,
    /// The metadata index this voter's shards must have before the ACLs
    /// decide who may speak on the controller listener: what the quorum
    /// had committed when this voter first knew a leader.
    acls_from: Cell<Option<u64>>,
    /// Set once the shards have reached `acls_from`; stays set.
    acls_loaded: Cell<bool>,
}

impl ClusterNode {
    /// Opens the quorum if this broker is a voter. The returned future
    /// runs the voter's side (Raft, listener, session watch) and must be
    /// spawned on shard 0; `start` then runs the broker's side.
    pub fn open(
        shard: &Rc<Shard>,
        config: ClusterConfig,
    ) -> crate::storage::Result<(Rc<ClusterNode>, Vec<glommio::Task<()>>)> {
        let incarnation = u64::try_from(crate::shard::partition::now_ms()).unwrap_or(0) << 16
            | u64::from(std::process::id() as u16);
        let mut tasks = Vec::new();
        let controller_tls = shard.broker.controller_tls.clone();
        let mut listener = None;
        let controller = match config.voter_addr(config.node_id) {
            None => None,
            Some(addr) => {
                let mut outboxes = HashMap::new();
                for (id, peer) in &config.voters {
                    if *id == config.node_id as u64 {
                        continue;
                    }
                    let (tx, rx) = mpsc::unbounded();
                    outboxes.insert(*id, tx);
                    let dial = dial(&config, &controller_tls, *id, *peer);
                    tasks.push(glommio::spawn_local(send_to_peer(dial, rx)));
                }
                let ids = config.voters.iter().map(|(id, _)| *id).collect();
                let (quorum, inbox) = Quorum::open(
                    config.node_id as u64,
                    ids,
                    shard.broker.data_dir(),
                    config.snapshot_bytes,
                    outboxes,
                )?;
                let broker = Arc::clone(&shard.broker);
                tasks.push(glommio::spawn_local(
                    Rc::clone(&quorum).run(inbox, move || broker.stopping()),
                ));
                let controller = Rc::new(Controller::new(
                    quorum,
                    ControllerConfig {
                        session_timeout: config.session_timeout,
                        unclean_default: config.unclean_default,
                        topic_defaults: shard
                            .broker
                            .config
                            .topic_config(&Default::default())
                            .map(|c| c.values.into_iter().map(|(k, (v, _))| (k, v)).collect())
                            .unwrap_or_default(),
                        rebalance_interval: config.rebalance_interval,
                        imbalance_percentage: config.imbalance_percentage,
                    },
                ));
                let broker = Arc::clone(&shard.broker);
                tasks.push(glommio::spawn_local(
                    Rc::clone(&controller).watch_sessions(move || broker.stopping()),
                ));
                // A cluster of one (no voters configured) has nobody to
                // serve; port 0 marks it.
                if addr.port() != 0 {
                    let bound =
                        TcpListener::bind(addr).map_err(|e| crate::storage::StorageError::Io {
                            op: "bind controller listener",
                            path: addr.to_string().into(),
                            source: e.into(),
                        })?;
                    listener = Some(bound);
                }
                Some(controller)
            }
        };
        let route = Route::new(config.voters.iter().map(|(id, _)| *id).collect());
        let node = Rc::new(ClusterNode {
            config,
            controller_tls,
            incarnation,
            controller,
            image: RefCell::new(ClusterImage::default()),
            published: Cell::new(0),
            current: Cell::new(false),
            publish_waiters: RefCell::new(Vec::new()),
            route: RefCell::new(route),
            idle: RefCell::new(HashMap::new()),
            producer_ids: RefCell::new(0..0),
            producer_ids_lock: glommio::sync::Semaphore::new(1),
            shutting_down: Cell::new(false),
            beating: Cell::new(false),
            acls_from: Cell::new(None),
            acls_loaded: Cell::new(false),
        });
        if let Some(listener) = listener {
            tasks.push(glommio::spawn_local(serve(
                Rc::clone(&node),
                Rc::clone(shard),
                listener,
            )));
        }
        Ok((node, tasks))
    }

    /// Registers, then keeps the shards' metadata current and the
    /// controller's heartbeats coming, until the broker stops. Resolves
    /// `ready` once this broker's registration is visible on every shard.
    pub async fn run(self: Rc<Self>, shard: Rc<Shard>, ready: oneshot::Sender<Result<(), String>>) {
        let follower = glommio::spawn_local(Rc::clone(&self).follow_log(Rc::clone(&shard)));
        let mut ready = Some(ready);
        let interval = self.config.heartbeat_interval;
        while !shard.broker.stopping() {
            let register = Request::Register {
                node: self.config.node_id,
                host: shard.broker.config.advertised.0.clone(),
                port: shard.broker.config.advertised.1,
                listeners: shard.broker.advertised_listeners(),
                incarnation: self.incarnation,
                cluster_id: shard.broker.data_cluster_id.clone(),
            };
            let sent_ms = monotonic_ms();
            let index = match self.change(register, &shard).await {
                Ok(index) => index,
                Err((ErrorCode::InconsistentClusterId, message)) => {
                    // Another cluster's data: serving it here would mix
                    // two clusters' logs. The broker does not start.
                    tracing::error!(%message, "the controller refused this broker: INCONSISTENT_CLUSTER_ID");
                    if let Some(r) = ready.take() {
                        let _ = r.send(Err(format!("INCONSISTENT_CLUSTER_ID: {message}")));
                    }
                    return;
                }
                Err((code, message)) => {
                    tracing::warn!(?code, %message, "registering with the controller failed; retrying");
                    glommio::timer::sleep(interval).await;
                    continue;
                }
            };
            self.wait_published(index).await;
            if shard.broker.data_cluster_id.is_none() {
                // A new data directory joined: it belongs to this cluster now.
                let id = shard.metadata().cluster_id.clone();
                if let Err(e) = crate::broker::write_meta_properties(&shard.broker.config, &id) {
                    tracing::error!(error = %e, "writing meta.properties failed");
                }
            }
            self.renew_lease(&shard, sent_ms);
            if !self.current.replace(true) {
                for target in 0..shard.count {
                    let _ = shard
                        .invoke_on(target, |s| async move { s.metadata_current() })
                        .await;
                }
            }
            if let Some(r) = ready.take() {
                let _ = r.send(Ok(()));
            }
            // Heartbeat until the controller forgets this incarnation.
            // After a beat that went unanswered the next goes at once (to
            // another voter), so that a frozen controller costs one
            // heartbeat timeout, well within a session.
            let limit = heartbeat_timeout(self.config.session_timeout, interval);
            let mut pause = interval;
            while !shard.broker.stopping() {
                glommio::timer::sleep(pause).await;
                if self.shutting_down.get() {
                    pause = interval;
                    continue;
                }
                let beat = Request::Heartbeat {
                    node: self.config.node_id,
                    incarnation: self.incarnation,
                };
                let sent_ms = monotonic_ms();
                pause = RETRY_PAUSE;
                self.beating.set(true);
                let answer = self.call_once(&beat, limit).await;
                self.beating.set(false);
                match answer {
                    Some(Response::Error { code, message })
                        if code == ErrorCode::StaleBrokerEpoch.code() =>
                    {
                        tracing::warn!(%message, "controller no longer knows this broker; registering again");
                        break;
                    }
                    Some(Response::Ok { index }) => {
                        // The answer names the controller's metadata: the
                        // lease is renewed once this broker has it too,
                        // so a fence it slept through is seen first.
                        let published = glommio::timer::timeout(limit, async {
                            self.wait_published(index).await;
                            Ok(())
                        })
                        .await;
                        if published.is_ok() {
                            self.renew_lease(&shard, sent_ms);
                            pause = interval;
                        }
                    }
                    _ => {}
                }
            }
        }
        drop(follower.cancel());
    }

    /// Moves this broker's partitions to other in-sync replicas before it
    /// stops (KRaft's controlled shutdown): the controller fences it at
    /// once, electing new leaders and shrinking the ISRs it was in, so
    /// clients move on within a metadata refresh instead of a session
    /// timeout. Heartbeats stop first, since one would unfence it. Gives
    /// up, logging why, after the configured attempts; nothing is lost
    /// then, the session timeout fences it as after a crash.
    pub async fn controlled_shutdown(&self, shard: &Shard) {
        let Some((attempts, backoff)) = self.config.controlled_shutdown else {
            return;
        };
        self.shutting_down.set(true);
        let me = self.config.node_id;
        let others_live = shard.metadata().live_brokers().any(|(id, _)| id != me);
        if !others_live {
            tracing::info!("no other live broker to take over; stopping without moving partitions");
            return;
        }
        let limit = heartbeat_timeout(self.config.session_timeout, self.config.heartbeat_interval);
        // A heartbeat already sent could unfence this broker after the
        // shutdown was committed: let it land first.
        let _ = glommio::timer::timeout(limit, async {
            while self.beating.get() {
                glommio::timer::sleep(Duration::from_millis(5)).await;
            }
            Ok(())
        })
        .await;
        let req = Request::ControlledShutdown {
            node: me,
            incarnation: self.incarnation,
        };
        for attempt in 1..=attempts.max(1) {
            let change =
                glommio::timer::timeout(limit, async { Ok(self.change(req.clone(), shard).await) })
                    .await;
            match change {
                Ok(Ok(_)) => {
                    tracing::info!("controlled shutdown: partitions moved to other replicas");
                    self.hand_over_controller().await;
                    return;
                }
                Ok(Err((code, message))) => {
                    tracing::warn!(attempt, ?code, %message, "controlled shutdown refused")
                }
                Err(_) => tracing::warn!(attempt, "controlled shutdown: no controller answered"),
            }
            if attempt < attempts {
                glommio::timer::sleep(backoff).await;
            }
        }
        tracing::warn!("controlled shutdown gave up; stopping anyway");
    }

    /// If this broker is the active controller, hands the quorum's
    /// leadership to another voter before stopping, and waits (a few
    /// seconds at most) until it has gone.
    async fn hand_over_controller(&self) {
        let Some(controller) = &self.controller else {
            return;
        };
        if !controller.quorum.transfer_leadership() {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while controller.quorum.is_leader() && Instant::now() < deadline {
            glommio::timer::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The controller heard this broker at `sent_ms` or later, and will
    /// not fence it before a session has passed from then: until then it
    /// may act as the leader the metadata names.
    fn renew_lease(&self, shard: &Shard, sent_ms: i64) {
        let session = i64::try_from(self.config.session_timeout.as_millis()).unwrap_or(i64::MAX);
        shard.broker.renew_lease(sent_ms.saturating_add(session));
    }

    /// Replays committed metadata into the shards' snapshots.
    async fn follow_log(self: Rc<Self>, shard: Rc<Shard>) {
        while !shard.broker.stopping() {
            let controller = match &self.controller {
                Some(c) => c.quorum.leader_id(),
                None => self.route.borrow().hint(),
            };
            shard.broker.controller_id.store(
                controller.map_or(-1, |c| c as i32),
                std::sync::atomic::Ordering::Relaxed,
            );
            let after = self.image.borrow().applied;
            let req = Request::Fetch {
                after,
                wait_ms: 500,
                node: Some(self.config.node_id),
            };
            let (entries, upto) = match self.fetch(&req).await {
                Some(Response::Entries { entries, upto }) => (entries, upto),
                Some(Response::Image { index, records }) => {
                    tracing::info!(index, "metadata image received in place of entries");
                    *self.image.borrow_mut() = ClusterImage::default();
                    (vec![(index, records)], index)
                }
                _ => {
                    glommio::timer::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if upto <= after {
                continue;
            }
            let changed = !entries.is_empty();
            {
                let mut image = self.image.borrow_mut();
                for (index, records) in &entries {
                    image.apply(*index, records);
                }
                image.applied = upto;
            }
            if changed {
                let snapshot = Arc::new(Snapshot::from_image(
                    &self.image.borrow(),
                    &shard.broker.config,
                    &shard.metadata(),
                ));
                for target in 0..shard.count {
                    let snapshot = Arc::clone(&snapshot);
                    let current = self.current.get();
                    let _ = shard
                        .invoke_on(target, move |s| async move {
                            s.apply_snapshot(snapshot, current)
                        })
                        .await;
                }
            }
            self.published.set(upto);
            let mut waiters = self.publish_waiters.borrow_mut();
            for (index, w) in std::mem::take(&mut *waiters) {
                if index <= upto {
                    let _ = w.send(());
                } else {
                    waiters.push((index, w));
                }
            }
        }
    }

    /// Waits until every shard has the snapshot of `index`.
    pub async fn wait_published(&self, index: u64) {
        if self.published.get() >= index {
            return;
        }
        let (tx, rx) = oneshot::channel();
        self.publish_waiters.borrow_mut().push((index, tx));
        let _ = rx.await;
    }

    /// Asks for a change and waits until every shard sees it.
    pub async fn change(&self, req: Request, shard: &Shard) -> Result<u64, ChangeError> {
        let deadline = Instant::now() + CHANGE_DEADLINE;
        loop {
            match self.call_once(&req, rpc::CALL_TIMEOUT).await {
                Some(Response::Ok { index }) => {
                    self.wait_published(index).await;
                    return Ok(index);
                }
                Some(Response::Error { code, message }) => {
                    let code = ErrorCode::from_code(code);
                    if code != ErrorCode::NotController {
                        return Err((code, message));
                    }
                }
                Some(Response::NotController { .. })
                | None
                | Some(
                    Response::Entries { .. } | Response::Image { .. } | Response::Quorum { .. },
                ) => {}
            }
            if Instant::now() >= deadline || shard.broker.stopping() {
                return Err((
                    ErrorCode::RequestTimedOut,
                    "no active controller answered".into(),
                ));
            }
            glommio::timer::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The metadata quorum as the active controller sees it: its voters'
    /// progress and the brokers that observe it.
    pub async fn describe_quorum(
        &self,
        shard: &Shard,
    ) -> Result<(QuorumState, Vec<ReplicaProgress>), ChangeError> {
        let deadline = Instant::now() + CHANGE_DEADLINE;
        loop {
            match self
                .call_once(&Request::DescribeQuorum, rpc::CALL_TIMEOUT)
                .await
            {
                Some(Response::Quorum { state, observers }) => return Ok((state, observers)),
                Some(Response::Error { code, message })
                    if ErrorCode::from_code(code) != ErrorCode::NotController =>
                {
                    return Err((ErrorCode::from_code(code), message));
                }
                _ => {}
            }
            if Instant::now() >= deadline || shard.broker.stopping() {
                return Err((
                    ErrorCode::RequestTimedOut,
                    "no active controller answered".into(),
                ));
            }
            glommio::timer::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A producer id no one else in the cluster has had, from this run's
    /// block; an empty block is replaced by a new one from the controller.
    pub async fn producer_id(&self, shard: &Shard) -> Result<i64, ChangeError> {
        loop {
            if let Some(id) = self.producer_ids.borrow_mut().next() {
                return Ok(id);
            }
            let _one = self
                .producer_ids_lock
                .acquire_permit(1)
                .await
                .map_err(|_| (ErrorCode::UnknownServerError, "broker is stopping".into()))?;
            if !self.producer_ids.borrow().is_empty() {
                continue;
            }
            let node = self.config.node_id;
            let req = Request::AllocateProducerIds {
                node,
                incarnation: self.incarnation,
            };
            self.change(req, shard).await?;
            let block = self.image.borrow().producer_ids.get(&node).cloned();
            let block = block.ok_or_else(|| {
                (
                    ErrorCode::UnknownServerError,
                    "producer id block not in the metadata log".into(),
                )
            })?;
            tracing::debug!(start = block.start, end = block.end, "producer id block");
            *self.producer_ids.borrow_mut() = block;
        }
    }

    /// Reads the log: from this voter's own quorum, else from a voter.
    async fn fetch(&self, req: &Request) -> Option<Response> {
        if let Some(c) = &self.controller {
            return Some(c.handle(req.clone()).await);
        }
        self.call_once(req, rpc::CALL_TIMEOUT).await
    }

    /// One attempt at a request to the controller this broker believes
    /// active (or the next voter); notes any leader hint. `None` when the
    /// voter could not be reached.
    async fn call_once(&self, req: &Request, limit: Duration) -> Option<Response> {
        let own = self.controller.as_ref().and_then(|c| c.quorum.leader_id());
        let target = self.route.borrow_mut().target(own);
        let resp = match &self.controller {
            Some(c) if target == self.config.node_id as u64 => {
                glommio::timer::timeout(limit, async { Ok(c.handle(req.clone()).await) })
                    .await
                    .ok()
            }
            _ => self.call_voter(target, req, limit).await,
        };
        let outcome = match &resp {
            Some(Response::NotController { leader }) => {
                Outcome::NotController(leader.map(|l| l as u64))
            }
            None => Outcome::Unreachable,
            Some(_) => Outcome::Answered,
        };
        // Any voter serves the log: only a change names the leader.
        let change = !matches!(req, Request::Fetch { .. });
        self.route.borrow_mut().learn(target, outcome, change);
        resp
    }

    /// A request to a remote voter over an idle connection if there is
    /// one. A kept connection the voter has since closed (it restarted)
    /// fails at once, so that failure is retried on a new connection.
    async fn call_voter(&self, voter: u64, req: &Request, limit: Duration) -> Option<Response> {
        let addr = self.config.voter_addr(voter as i32)?;
        let dial = dial(&self.config, &self.controller_tls, voter, addr);
        let kept = self.idle.borrow_mut().get_mut(&voter).and_then(Vec::pop);
        let reused = kept.is_some();
        let mut client = kept.unwrap_or_else(|| Client::new(dial.clone()));
        let mut result = client.call(req, limit).await;
        let stale = matches!(&result, Err(e) if e.kind() != std::io::ErrorKind::TimedOut);
        if stale && reused {
            client = Client::new(dial);
            result = client.call(req, limit).await;
        }
        let resp = result.ok()?;
        let mut idle = self.idle.borrow_mut();
        let pool = idle.entry(voter).or_default();
        if pool.len() < IDLE_PER_VOTER {
            pool.push(client);
        }
        Some(resp)
    }

    /// Whether this voter's shards hold the ACLs, so that they may
    /// decide who speaks on the controller listener. A restarted voter
    /// may still be replaying its log, and an ACL removed late in it
    /// would still let its principal in: the ACLs count once the shards
    /// have the metadata the quorum had committed when this voter first
    /// knew a leader (a leader itself once it holds everything committed
    /// before its term, which its own commit index may not yet show);
    /// Kafka's authorizer likewise waits for its initial load. Until
    /// then super users alone get in: the voters' own principals must be
    /// among them, or they could never elect the leader the ACLs wait for.
    fn acls_loaded(&self) -> bool {
        if self.acls_loaded.get() {
            return true;
        }
        let Some(controller) = &self.controller else {
            return false;
        };
        let quorum = &controller.quorum;
        let knows = if quorum.is_leader() {
            quorum.is_current()
        } else {
            quorum.leader_id().is_some()
        };
        if self.acls_from.get().is_none() && knows {
            self.acls_from.set(Some(quorum.committed_index()));
        }
        let loaded = self
            .acls_from
            .get()
            .is_some_and(|from| self.published.get() >= from);
        self.acls_loaded.set(loaded);
        loaded
    }

    /// Whether `principal`, connected from `host`, may speak on the
    /// controller listener now (see
    /// [`crate::security::acl::authorizer::Authorizer::authorize_cluster_peer`]).
    fn admit(&self, shard: &Shard, principal: &Principal, host: &str) -> Result<(), PeerRefusal> {
        let authorizer = &shard.broker.authorizer;
        if !authorizer.enabled() {
            return Ok(());
        }
        let snapshot = self.acls_loaded().then(|| shard.metadata());
        authorizer.authorize_cluster_peer(snapshot.as_ref().map(|s| &*s.acls), principal, host)
    }
}

/// Idle connections kept per voter: a broker has at most a heartbeat, a
/// metadata long poll and a change or two in flight.
const IDLE_PER_VOTER: usize = 4;

/// How this node reaches voter `id` at `addr`: over TLS, checking the
/// voter's certificate against its host, when the quorum speaks TLS.
fn dial(config: &ClusterConfig, tls: &Option<Arc<TlsAcceptor>>, id: u64, addr: SocketAddr) -> Dial {
    let host = config
        .voter_host(id)
        .map_or_else(|| addr.ip().to_string(), str::to_string);
    Dial {
        addr,
        tls: tls.as_ref().map(|t| (Arc::clone(t), host)),
    }
}

/// Sends Raft messages to one peer voter over a connection it reopens
/// as needed; messages that cannot be sent are dropped (Raft resends).
async fn send_to_peer(dial: Dial, mut rx: mpsc::UnboundedReceiver<Message>) {
    let mut stream: Option<Link> = None;
    let mut retry_at = Instant::now();
    while let Some(msg) = rx.next().await {
        if stream.is_none() {
            if Instant::now() < retry_at {
                continue;
            }
            match dial.connect().await {
                Ok(s) => stream = Some(s),
                Err(_) => {
                    retry_at = Instant::now() + Duration::from_millis(200);
                    continue;
                }
            }
        }
        let body = msg.write_to_bytes().expect("raft message encodes");
        let s = stream.as_mut().expect("connected");
        if rpc::write_frame(s, rpc::KIND_RAFT, &body).await.is_err() {
            stream = None;
        }
    }
}

/// The controller listener: Raft messages from voters, requests from
/// brokers.
async fn serve(node: Rc<ClusterNode>, shard: Rc<Shard>, listener: TcpListener) {
    loop {
        let Ok(stream) = listener.accept().await else {
            glommio::timer::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        glommio::spawn_local(connection(Rc::clone(&node), Rc::clone(&shard), stream)).detach();
    }
}

/// Serves one connection to the controller listener. With an authorizer
/// the peer's principal (its certificate's, or `User:ANONYMOUS` on
/// plaintext or without one) must be let in by [`ClusterNode::admit`]
/// before its first frame is read and again before each frame is served,
/// so an ACL removed also closes connections already open. When a
/// connection from a broker (one that said who it is) closes, the
/// controller checks whether that broker's process is gone (see
/// [`Controller::check_gone`]).
async fn connection(node: Rc<ClusterNode>, shard: Rc<Shard>, stream: TcpStream) {
    let Some(controller) = node.controller.clone() else {
        return;
    };
    let peer = stream.peer_addr().ok();
    let (mut link, cert) = match &node.controller_tls {
        None => (Link::Plain(stream), None),
        Some(tls) => match accept(stream, tls, peer).await {
            Some(shaken) => shaken,
            None => return,
        },
    };
    let checking = shard.broker.authorizer.enabled();
    let principal = match (&node.controller_tls, cert) {
        (Some(tls), Some(cert)) if checking => match tls.settings.mapper.principal(cert.as_ref()) {
            Ok(p) => p,
            Err(reason) => {
                refused(peer, "?", &reason);
                return;
            }
        },
        _ => Principal::anonymous(),
    };
    let host = peer.map_or_else(String::new, |p| p.ip().to_string());
    let admitted = || match node.admit(&shard, &principal, &host) {
        Ok(()) => true,
        Err(reason) => {
            refused(peer, &principal.to_string(), &reason.to_string());
            false
        }
    };
    if !admitted() {
        return;
    }
    let mut from: Option<i32> = None;
    serve_frames(&controller, &mut link, &mut from, admitted).await;
    if let (Some(node), Some(peer)) = (from, peer) {
        controller.connection_closed(node, peer.ip());
    }
}

/// Logs a peer the authorizer keeps off the controller listener, at most
/// a few per window per address (see `server::log_limit`).
fn refused(peer: Option<SocketAddr>, principal: &str, reason: &str) {
    if let crate::server::log_limit::Decision::Log { left_out } = log_decision(peer) {
        let peer = peer.map_or_else(|| "?".to_string(), |p| p.to_string());
        tracing::warn!(%peer, %principal, %reason, left_out,
            "controller listener: peer refused, not authorized for CLUSTER_ACTION; it may not register nor join the quorum");
    }
}

/// Whether a warning about `peer` is logged (see `server::log_limit`).
fn log_decision(peer: Option<SocketAddr>) -> crate::server::log_limit::Decision {
    match peer {
        Some(p) => crate::server::log_limit::decide(p.ip()),
        None => crate::server::log_limit::Decision::Log { left_out: 0 },
    }
}

/// The server side of a TLS handshake on the controller listener, within
/// [`rpc::HANDSHAKE_TIMEOUT`], with the certificate the peer showed. A
/// peer that fails it (no certificate, one from another CA, plaintext)
/// never gets a frame read: it cannot register as a broker nor speak Raft
/// as a voter. Each refusal is logged once, at most a few per window per
/// address (see `server::log_limit`), so a peer retrying in a loop cannot
/// flood the log.
async fn accept(
    stream: TcpStream,
    tls: &TlsAcceptor,
    peer: Option<SocketAddr>,
) -> Option<(Link, Option<CertificateDer<'static>>)> {
    let listener = &tls.settings.listener;
    let shaken = glommio::timer::timeout(rpc::HANDSHAKE_TIMEOUT, async {
        Ok(Link::accept(stream, tls.config()).await)
    })
    .await;
    let error = match shaken {
        Ok(Ok((link, cert))) => {
            if let Some(cert) = &cert {
                let subject = crate::security::ssl_principal::subject_dn(cert.as_ref());
                tracing::debug!(peer = ?peer, subject = ?subject, "controller listener: TLS peer authenticated");
            }
            return Some((link, cert));
        }
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("not done within {:?}", rpc::HANDSHAKE_TIMEOUT),
    };
    if let crate::server::log_limit::Decision::Log { left_out } = log_decision(peer) {
        let peer = peer.map_or_else(|| "?".to_string(), |p| p.to_string());
        tracing::warn!(%peer, %listener, %error, left_out,
            "controller listener: TLS handshake refused; the peer may not register nor join the quorum");
    }
    None
}

/// Serves frames until the peer closes, sends what cannot be read, or
/// is no longer `admitted` when a frame arrives (that frame unserved).
async fn serve_frames(
    controller: &Rc<Controller>,
    stream: &mut Link,
    from: &mut Option<i32>,
    admitted: impl Fn() -> bool,
) {
    loop {
        let (kind, body) = match rpc::read_frame(stream).await {
            Ok(Some(f)) => f,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(error = %e, "controller connection closed");
                return;
            }
        };
        if !admitted() {
            return;
        }
        match kind {
            rpc::KIND_RAFT => match Message::parse_from_bytes(&body) {
                Ok(m) => {
                    *from = i32::try_from(m.from).ok();
                    controller.quorum.deliver(m)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "undecodable raft message; closing the connection");
                    return;
                }
            },
            rpc::KIND_REQUEST => {
                let resp = match serde_json::from_slice::<Request>(&body) {
                    Ok(req) => {
                        if let Some(node) = req.node() {
                            *from = Some(node);
                        }
                        controller.handle(req).await
                    }
                    Err(e) => Response::Error {
                        code: ErrorCode::InvalidRequest.code(),
                        message: format!("undecodable controller request: {e}"),
                    },
                };
                let out = serde_json::to_vec(&resp).expect("response serializes");
                if rpc::write_frame(stream, rpc::KIND_RESPONSE, &out)
                    .await
                    .is_err()
                {
                    return;
                }
            }
            other => {
                tracing::warn!(
                    kind = other,
                    "unknown controller frame; closing the connection"
                );
                return;
            }
        }
    }
}
