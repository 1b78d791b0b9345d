//! Broker start-up and shutdown.
//!
//! Start: lock the data directory, read `meta.properties` (or write it),
//! note whether the last stop was clean (and remove the marker), load the
//! checkpoints, then start one shard per core. Shard 0 joins the cluster
//! (replaying the metadata log, registering with the controller); every
//! shard then opens (and after an unclean stop, recovers) the partitions
//! it owns, binds the listener and reports ready; `start` returns once
//! all have.
//!
//! Stop: each shard stops accepting, flushes its partitions and reports
//! their offsets; the broker then writes the checkpoints and the
//! clean-shutdown marker.

use crate::config::BrokerConfig;
use crate::metadata::Snapshot;
use crate::security::acl::authorizer::Authorizer;
use crate::security::listeners::Served;
use crate::server;
use crate::shard::mesh::MeshPlan;
use crate::shard::{Job, Shard, MESH_CHANNEL_CAPACITY};
use crate::storage::checkpoint::{
    self, OffsetMap, CLEAN_SHUTDOWN_FILE, HIGH_WATERMARK_FILE, LOG_START_FILE, RECOVERY_POINT_FILE,
};
use crate::storage::{sync_dir, StorageError};
use glommio::{CpuSet, LocalExecutorPoolBuilder, PoolPlacement};
use std::net::SocketAddr;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    #[error("data directory {0} is in use by another broker")]
    Locked(String),
    #[error("shard {shard}: {reason}")]
    Shard { shard: usize, reason: String },
    #[error("starting executors: {0}")]
    Executor(String),
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
}

/// What the shards need to know about how the broker started.
#[derive(Debug, Default)]
pub struct StartState {
    /// The previous stop was clean: no recovery needed.
    pub clean: bool,
    pub recovery_points: OffsetMap,
    pub log_starts: OffsetMap,
    pub high_watermarks: OffsetMap,
}

/// A shard's offsets for the broker's checkpoint files.
#[derive(Debug, Default)]
pub struct CheckpointEntries {
    pub recovery_points: OffsetMap,
    pub log_starts: OffsetMap,
    pub high_watermarks: OffsetMap,
}

/// State shared by all shards. Read-mostly; the mutex is touched only at
/// checkpoint time, never on the produce or fetch path.
#[derive(Debug)]
pub struct BrokerShared {
    pub config: BrokerConfig,
    /// The cluster this data directory belongs to (`meta.properties`, or
    /// `cluster.id` in the config); none for a new one, which takes the
    /// cluster's id when it first registers.
    pub data_cluster_id: Option<String>,
    pub start: StartState,
    stop: AtomicBool,
    /// A stop was asked for; a broker of a cluster first moves its
    /// partitions away (controlled shutdown), then sets `stop`.
    stop_requested: AtomicBool,
    /// Every shard has started and serves.
    ready: AtomicBool,
    /// Per-shard offsets, merged into the checkpoint files.
    checkpoints: Mutex<Vec<CheckpointEntries>>,
    /// Held while the checkpoint files are written: two writers would
    /// share their temporary files.
    checkpoint_writer: Mutex<()>,
    /// The active controller as this broker last knew it; -1 unknown.
    pub controller_id: std::sync::atomic::AtomicI32,
    /// Until when (on [`crate::cluster::monotonic_ms`]'s clock) this
    /// broker may act as a partition leader: a session past the last
    /// heartbeat the controller answered. A broker that was frozen past
    /// it leads nothing until a heartbeat is answered and the metadata
    /// then current has reached its shards, so it learns first whether it
    /// was fenced and its partitions moved.
    lease_until_ms: std::sync::atomic::AtomicI64,
    pub sendfile_bytes: AtomicU64,
    pub copied_bytes: AtomicU64,
    /// Each SASL listener's settings, by listener name.
    pub sasl: std::collections::BTreeMap<String, Arc<crate::security::sasl::Settings>>,
    /// Decides whether a client may do what it asks, over the ACLs of
    /// each shard's metadata snapshot.
    pub authorizer: Authorizer,
    pub tls_bytes: AtomicU64,
    /// The listeners every shard binds, in `listeners` order.
    pub listeners: Vec<Arc<Served>>,
    /// The name of the listener followers fetch from leaders on.
    pub inter_broker_listener: String,
    /// The controller listener's live certificates when the quorum speaks
    /// TLS: voters serve with them, every node dials voters with them.
    pub controller_tls: Option<Arc<crate::security::tls::TlsAcceptor>>,
    /// Connections open over every shard, under `max.connections` and
    /// `max.connections.per.ip`.
    pub admission: Arc<crate::server::admission::Admission>,
    /// Shards done stopping (see `quiesce`).
    quiesced: AtomicUsize,
    /// A partition's files failed to sync (at runtime or in the flush at
    /// shutdown): the stop is not clean, so that the next start verifies
    /// the logs from their recovery points instead of trusting them.
    pub sync_failed: AtomicBool,
    /// Whose turn it is to clean, over every shard's cleaner.
    pub cleaner_turns: Arc<crate::cleaner::Turns>,
    _lock: std::fs::File,
}

impl BrokerShared {
    pub fn data_dir(&self) -> &Path {
        &self.config.data_dir
    }

    /// Every listener's advertised endpoint, by name, for the broker's
    /// registration.
    pub fn advertised_listeners(&self) -> crate::cluster::records::Endpoints {
        self.listeners
            .iter()
            .map(|l| (l.config.name.clone(), l.config.advertised.clone()))
            .collect()
    }

    /// Reloads every TLS listener's certificates from their files now.
    pub fn reload_tls(&self) {
        for l in &self.listeners {
            if let Some(tls) = &l.tls {
                tls.reload();
            }
        }
        if let Some(tls) = &self.controller_tls {
            tls.reload();
        }
    }

    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Whether a stop was asked for (it may still be moving partitions).
    pub fn stop_requested(&self) -> bool {
        self.stop_requested.load(Ordering::Relaxed)
    }

    /// Stops every shard now, without a controlled shutdown.
    pub fn stop_now(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Whether the broker has started: every shard serves.
    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Asks the broker to stop: at once when it is a cluster of one, else
    /// after a controlled shutdown (see [`maintenance`]).
    pub fn request_stop(&self) {
        let clustered = !self
            .config
            .get("controller.quorum.voters")
            .unwrap_or_default()
            .is_empty();
        if clustered {
            self.stop_requested.store(true, Ordering::Relaxed);
        } else {
            self.stop.store(true, Ordering::Relaxed);
        }
    }

    /// Whether this broker may act as a partition leader now (see
    /// `lease_until_ms`).
    pub fn leased(&self) -> bool {
        crate::cluster::monotonic_ms() < self.lease_until_ms.load(Ordering::Relaxed)
    }

    /// Extends the lease to `until_ms`; it never moves back.
    pub fn renew_lease(&self, until_ms: i64) {
        self.lease_until_ms.fetch_max(until_ms, Ordering::Relaxed);
    }

    pub fn publish_checkpoints(&self, shard: usize, entries: CheckpointEntries) {
        let mut all = self.checkpoints.lock().unwrap_or_else(|e| e.into_inner());
        if all.len() <= shard {
            all.resize_with(shard + 1, Default::default);
        }
        all[shard] = entries;
    }

    /// Writes the merged checkpoint files. Each write is fsynced, and so
    /// is the directory after its rename, which behind a stream of
    /// appends can wait seconds for the file system's journal: shards
    /// call [`write_checkpoints_off_shard`], never this.
    pub fn write_checkpoints(&self) -> Result<(), StorageError> {
        let _writer = self
            .checkpoint_writer
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut merged = CheckpointEntries::default();
        {
            let all = self.checkpoints.lock().unwrap_or_else(|e| e.into_inner());
            for e in all.iter() {
                merged.recovery_points.extend(e.recovery_points.clone());
                merged.log_starts.extend(e.log_starts.clone());
                merged.high_watermarks.extend(e.high_watermarks.clone());
            }
        }
        let dir = self.data_dir();
        checkpoint::write_offsets(&dir.join(RECOVERY_POINT_FILE), &merged.recovery_points)?;
        checkpoint::write_offsets(&dir.join(LOG_START_FILE), &merged.log_starts)?;
        checkpoint::write_offsets(&dir.join(HIGH_WATERMARK_FILE), &merged.high_watermarks)
    }
}

/// Writes the checkpoint files on the shard's blocking thread.
pub async fn write_checkpoints_off_shard(shared: &Arc<BrokerShared>) -> Result<(), StorageError> {
    let shared = Arc::clone(shared);
    glommio::executor()
        .spawn_blocking(move || shared.write_checkpoints())
        .await
}

/// A running broker.
pub struct Broker {
    shared: Arc<BrokerShared>,
    handles: Option<glommio::PoolThreadHandles<()>>,
}

fn lock_data_dir(dir: &Path) -> Result<std::fs::File, StartError> {
    std::fs::create_dir_all(dir).map_err(StorageError::io("create data dir", dir))?;
    let path = dir.join(".lock");
    let f = std::fs::File::create(&path).map_err(StorageError::io("create", &path))?;
    // SAFETY: flock on an open descriptor.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(StartError::Locked(dir.display().to_string()));
    }
    Ok(f)
}

/// Where the shards run: shard `i` pinned to `cpus[i % len]` when CPUs are
/// given, else one shard per CPU spread over the machine, or unpinned when
/// there are more shards than CPUs.
fn placement(cores: usize, cpus: Option<&[usize]>) -> Result<PoolPlacement, StartError> {
    let Some(cpus) = cpus.filter(|c| !c.is_empty()) else {
        return Ok(if cores <= crate::config::online_cpus() {
            PoolPlacement::MaxSpread(cores, None)
        } else {
            PoolPlacement::Unbound(cores)
        });
    };
    let online = CpuSet::online().map_err(|e| StartError::Executor(e.to_string()))?;
    let sets = (0..cores)
        .map(|i| {
            let cpu = cpus[i % cpus.len()];
            let set = online.clone().filter(|l| l.cpu == cpu);
            if set.is_empty() {
                Err(StartError::Executor(format!(
                    "--cpus: CPU {cpu} is not online"
                )))
            } else {
                Ok(set)
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(PoolPlacement::Custom(sets))
}

/// The cluster id of `meta.properties`, else `cluster.id` from the config,
/// else none (a new data directory).
fn meta_properties(config: &BrokerConfig) -> Result<Option<String>, StorageError> {
    let path = config.data_dir.join("meta.properties");
    if let Ok(text) = std::fs::read_to_string(&path) {
        if let Some(id) = text.lines().find_map(|l| l.strip_prefix("cluster.id=")) {
            return Ok(Some(id.trim().to_string()));
        }
        return Err(StorageError::Corrupt {
            path,
            position: 0,
            reason: "no cluster.id".into(),
        });
    }
    Ok(config
        .get("cluster.id")
        .filter(|id| !id.is_empty())
        .map(str::to_string))
}

/// Writes `meta.properties` for a data directory that joined `cluster_id`.
pub fn write_meta_properties(config: &BrokerConfig, cluster_id: &str) -> Result<(), StorageError> {
    let path = config.data_dir.join("meta.properties");
    let text = format!(
        "version=1\nnode.id={}\ncluster.id={cluster_id}\n",
        config.node_id
    );
    crate::storage::write_atomically(&path, text.as_bytes())
}

/// Resolves and loads the listeners (refusing what cannot be served),
/// and points `listen` and `advertised` at the first and the
/// inter-broker listener.
/// Refuses a listener whose port another process listens on. The shards
/// bind with SO_REUSEPORT, which would otherwise share the port with
/// another `sluice` (or anything bound with it) and split its clients
/// between the two. The test is a connection, asked again for a few
/// seconds: a killed predecessor's listening socket lives on briefly
/// after its process (its io_uring is torn down after it exits), and a
/// plain bind would also fail on the closing sockets it leaves behind.
fn port_free(listener: &str, addr: std::net::SocketAddr) -> Result<(), StartError> {
    let mut probe = addr;
    if probe.ip().is_unspecified() {
        probe.set_ip(match addr {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let deadline = std::time::Instant::now() + PORT_IN_USE_PATIENCE;
    while std::net::TcpStream::connect_timeout(&probe, Duration::from_secs(1)).is_ok() {
        if std::time::Instant::now() >= deadline {
            return Err(crate::config::ConfigError::Refused {
                key: "listeners".into(),
                reason: format!(
                    "listener {listener}: port {} on {} is already in use by another process",
                    addr.port(),
                    addr.ip()
                ),
            }
            .into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// How long a port must stay taken before start-up is refused.
const PORT_IN_USE_PATIENCE: Duration = Duration::from_secs(5);

/// The listeners the shards serve, the inter-broker listener's name and
/// the controller quorum's TLS.
type Resolved = (
    Vec<Arc<Served>>,
    String,
    Option<Arc<crate::security::tls::TlsAcceptor>>,
);

fn listeners(config: &mut BrokerConfig) -> Result<Resolved, StartError> {
    let resolved = crate::security::listeners::resolve(config)?;
    let inter = resolved.inter_broker();
    let clustered = !config
        .get("controller.quorum.voters")
        .unwrap_or("")
        .trim()
        .is_empty();
    if clustered && inter.protocol.uses_sasl() {
        // Followers fetch from leaders without SASL; a cluster whose
        // inter-broker listener wants it would not replicate.
        return Err(crate::config::ConfigError::Refused {
            key: "inter.broker.listener.name".into(),
            reason: format!(
                "{} is {}; followers fetch over PLAINTEXT or SSL only",
                inter.name, inter.protocol
            ),
        }
        .into());
    }
    for l in &resolved.all {
        port_free(&l.name, l.bind)?;
    }
    config.listen = resolved.all[0].bind;
    config.advertised = inter.advertised.clone();
    let served = resolved
        .all
        .iter()
        .map(|l| Served::new(l.clone()).map(Arc::new))
        .collect::<Result<Vec<_>, _>>()?;
    let inter_tls = served
        .iter()
        .find(|l| l.config.name == resolved.inter_broker)
        .and_then(|l| l.tls.as_ref());
    if let Some(tls) = inter_tls.filter(|t| clustered && t.client_config().is_none()) {
        let (_, key) = config.listener_setting(&tls.settings.listener, "ssl.truststore.location");
        return Err(crate::config::ConfigError::Refused {
            key,
            reason: format!(
                "the inter-broker listener {} uses TLS: followers check leaders' certificates against CA certificates, and none are configured",
                tls.settings.listener
            ),
        }
        .into());
    }
    if served.iter().any(|l| l.tls.is_some()) {
        match crate::security::tls::ktls_available() {
            true => tracing::info!("kTLS is available in this kernel; TLS listeners still encrypt in user space (read, encrypt, send)"),
            false => tracing::info!("no kTLS in this kernel (TCP_ULP \"tls\" unknown): TLS listeners encrypt in user space (read, encrypt, send)"),
        }
    }
    for l in &served {
        tracing::info!(listener = %l.config.name, protocol = %l.config.protocol, bind = %l.config.bind,
            advertised = %format!("{}:{}", l.config.advertised.0, l.config.advertised.1), "listener");
    }
    let controller_tls = match &resolved.controller_tls {
        Some(settings) => {
            let tls = crate::security::tls::TlsAcceptor::new(settings.clone())?;
            tracing::info!(listener = %settings.listener, client_auth = ?settings.client_auth,
                "the controller quorum speaks TLS");
            Some(Arc::new(tls))
        }
        None => None,
    };
    Ok((served, resolved.inter_broker.clone(), controller_tls))
}

impl Broker {
    /// Starts the broker; returns once every shard is listening.
    pub fn start(mut config: BrokerConfig) -> Result<Broker, StartError> {
        let (listeners, inter_broker_listener, controller_tls) = listeners(&mut config)?;
        let lock = lock_data_dir(&config.data_dir)?;
        // Before anything else writes: a full disk gets its room back.
        crate::storage::reserve::at_start(&config.data_dir)?;
        crate::storage::remove_set_aside_dirs(&config.data_dir);
        let data_cluster_id = meta_properties(&config)?;
        let marker = config.data_dir.join(CLEAN_SHUTDOWN_FILE);
        let clean = marker.exists();
        if clean {
            std::fs::remove_file(&marker).map_err(StorageError::io("remove", &marker))?;
            sync_dir(&config.data_dir)?;
        }
        let start = StartState {
            clean,
            recovery_points: checkpoint::read_offsets(&config.data_dir.join(RECOVERY_POINT_FILE))?,
            log_starts: checkpoint::read_offsets(&config.data_dir.join(LOG_START_FILE))?,
            high_watermarks: checkpoint::read_offsets(&config.data_dir.join(HIGH_WATERMARK_FILE))?,
        };
        let cluster_config =
            crate::cluster::ClusterConfig::from_broker(&config).map_err(|e| StartError::Shard {
                shard: 0,
                reason: e.to_string(),
            })?;
        let mut sasl = std::collections::BTreeMap::new();
        for l in listeners.iter().filter(|l| l.config.protocol.uses_sasl()) {
            let settings = config.sasl_settings(&l.config.name)?;
            sasl.insert(l.config.name.clone(), Arc::new(settings));
        }
        let authorizer = Authorizer::from_config(&config)?;
        let admission = crate::server::admission::Admission::new(config.connection_limits()?);
        let snapshot = Arc::new(Snapshot::empty(config.node_id));
        tracing::info!(
            data_dir = %config.data_dir.display(), clean, node = config.node_id, cores = config.cores,
            "starting broker"
        );
        let cores = config.cores.max(1);
        let cleaner_turns = Arc::new(
            crate::cleaner::Turns::new(config.cleaner_threads())
                .map_err(|e| StartError::Executor(format!("starting the cleaner threads: {e}")))?,
        );
        let shared = Arc::new(BrokerShared {
            config,
            data_cluster_id,
            start,
            stop: AtomicBool::new(false),
            stop_requested: AtomicBool::new(false),
            ready: AtomicBool::new(false),
            checkpoints: Mutex::new(Vec::new()),
            checkpoint_writer: Mutex::new(()),
            controller_id: std::sync::atomic::AtomicI32::new(-1),
            lease_until_ms: std::sync::atomic::AtomicI64::new(0),
            sendfile_bytes: AtomicU64::new(0),
            copied_bytes: AtomicU64::new(0),
            sasl,
            authorizer,
            tls_bytes: AtomicU64::new(0),
            listeners,
            inter_broker_listener,
            controller_tls,
            admission,
            quiesced: AtomicUsize::new(0),
            sync_failed: AtomicBool::new(false),
            cleaner_turns,
            _lock: lock,
        });
        let (ready_tx, ready_rx) = mpsc::channel::<Result<usize, (usize, String)>>();
        let mesh = MeshPlan::<Job>::new(cores, MESH_CHANNEL_CAPACITY);
        let placement = placement(cores, shared.config.cpus.as_deref())?;
        let run_shared = Arc::clone(&shared);
        let stalls = shared.config.stall_threshold();
        let handles = LocalExecutorPoolBuilder::new(placement)
            .name("sluice-shard")
            .detect_stalls(stalls.map(|threshold| {
                Box::new(move || {
                    Box::new(StallLog { threshold }) as Box<dyn glommio::StallDetectionHandler>
                }) as Box<dyn Fn() -> Box<dyn glommio::StallDetectionHandler>>
            }))
            .on_all_shards(move || {
                let (shared, mesh, snapshot, ready, cluster) = (
                    Arc::clone(&run_shared),
                    mesh.clone(),
                    Arc::clone(&snapshot),
                    ready_tx.clone(),
                    cluster_config.clone(),
                );
                async move { shard_main(shared, mesh, snapshot, cluster, ready).await }
            })
            .map_err(|e| StartError::Executor(e.to_string()))?;
        let mut broker = Broker {
            shared,
            handles: Some(handles),
        };
        for _ in 0..cores {
            match ready_rx.recv() {
                Ok(Ok(_)) => {}
                Ok(Err((shard, reason))) => {
                    broker.shared.stop_now();
                    let _ = broker.join();
                    return Err(StartError::Shard { shard, reason });
                }
                Err(_) => {
                    broker.shared.stop_now();
                    let _ = broker.join();
                    return Err(StartError::Executor(
                        "a shard exited during start-up".into(),
                    ));
                }
            }
        }
        broker.shared.ready.store(true, Ordering::Relaxed);
        tracing::info!(listen = %broker.listen_addr(), "broker ready");
        Ok(broker)
    }

    pub fn listen_addr(&self) -> SocketAddr {
        self.shared.config.listen
    }

    /// The bound address of listener `name`.
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.shared
            .listeners
            .iter()
            .find(|l| l.config.name == name)
            .map(|l| l.config.bind)
    }

    pub fn shared(&self) -> &Arc<BrokerShared> {
        &self.shared
    }

    /// Asks every shard to stop, after a controlled shutdown when the
    /// broker is part of a cluster; `join` waits for them.
    pub fn stop(&self) {
        self.shared.request_stop();
    }

    /// Waits for the shards to finish, then writes checkpoints and the
    /// clean-shutdown marker.
    pub fn join(&mut self) -> Result<(), StorageError> {
        let Some(handles) = self.handles.take() else {
            return Ok(());
        };
        let mut clean = true;
        for r in handles.join_all() {
            if let Err(e) = r {
                tracing::error!(error = %e, "shard ended with an error");
                clean = false;
            }
        }
        if self.shared.sync_failed.load(Ordering::Relaxed) {
            tracing::error!("a partition's files failed to sync: the next start verifies the logs from their recovery points");
            clean = false;
        }
        self.shared.write_checkpoints()?;
        if clean {
            let marker = self.shared.data_dir().join(CLEAN_SHUTDOWN_FILE);
            std::fs::write(&marker, b"").map_err(StorageError::io("write", &marker))?;
            sync_dir(self.shared.data_dir())?;
        }
        tracing::info!(
            sendfile_bytes = self.shared.sendfile_bytes.load(Ordering::Relaxed),
            copied_bytes = self.shared.copied_bytes.load(Ordering::Relaxed),
            tls_bytes = self.shared.tls_bytes.load(Ordering::Relaxed),
            clean,
            "broker stopped"
        );
        Ok(())
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if self.handles.is_some() {
            self.stop();
            if let Err(e) = self.join() {
                tracing::error!(error = %e, "stopping broker");
            }
        }
    }
}

async fn shard_main(
    shared: Arc<BrokerShared>,
    mesh: MeshPlan<Job>,
    snapshot: Arc<Snapshot>,
    cluster: crate::cluster::ClusterConfig,
    ready: mpsc::Sender<Result<usize, (usize, String)>>,
) {
    let Some((senders, receivers)) = mesh.join(|| shared.stopping()).await else {
        let _ = ready.send(Err((
            usize::MAX,
            "stopped before the shard mesh joined".into(),
        )));
        return;
    };
    drop(mesh);
    let (first_tx, first_rx) = futures::channel::oneshot::channel();
    let shard = Rc::new(Shard::new(Arc::clone(&shared), senders, snapshot, first_tx));
    *shard.this.borrow_mut() = Rc::downgrade(&shard);
    crate::quota::install(Rc::new(crate::quota::QuotaManager::new()));
    let mut tasks = Vec::new();
    for (_peer, rx) in receivers {
        let shard = Rc::clone(&shard);
        tasks.push(glommio::spawn_local(async move {
            while let Some(job) = rx.recv().await {
                glommio::spawn_local(job(Rc::clone(&shard))).detach();
            }
        }));
    }
    if shard.id == 0 {
        let (node, cluster_tasks) = match crate::cluster::node::ClusterNode::open(&shard, cluster) {
            Ok(x) => x,
            Err(e) => {
                let _ = ready.send(Err((shard.id, format!("joining the cluster: {e}"))));
                return;
            }
        };
        tasks.extend(cluster_tasks);
        *shard.cluster.borrow_mut() = Some(Rc::clone(&node));
        let (registered_tx, registered_rx) = futures::channel::oneshot::channel();
        tasks.push(glommio::spawn_local(
            Rc::clone(&node).run(Rc::clone(&shard), registered_tx),
        ));
        tracing::info!("waiting to register with the controller");
        match unless_stopped(&shared, registered_rx).await {
            Some(Ok(Ok(()))) => {}
            Some(Ok(Err(refused))) => {
                let _ = ready.send(Err((shard.id, refused)));
                return;
            }
            _ => {
                let _ = ready.send(Err((shard.id, "stopped before registering".into())));
                return;
            }
        }
        if let Err(refused) = create_bootstrap_users(&shard, &node).await {
            let _ = ready.send(Err((shard.id, refused)));
            return;
        }
    }
    if !matches!(unless_stopped(&shared, first_rx).await, Some(Ok(()))) {
        let _ = ready.send(Err((shard.id, "stopped before the first metadata".into())));
        return;
    }
    let timers = glommio::spawn_local(crate::group::coordinator::Coordinator::run_timers(
        Rc::clone(&shard),
    ));
    crate::txn::install(Rc::new(crate::txn::coordinator::TxnCoordinator::new(
        shared.config.txn(),
    )));
    let txn_timers = glommio::spawn_local(crate::txn::coordinator::TxnCoordinator::run_timers(
        Rc::clone(&shard),
    ));
    let cleaner = Rc::new(crate::cleaner::Cleaner::new(
        shared.config.cleaner(shared.config.cores),
        Arc::clone(&shared.cleaner_turns),
    ));
    crate::cleaner::install(Rc::clone(&cleaner));
    let cleaner_task = match spawn_cleaner(cleaner, &shard) {
        Ok(t) => t,
        Err(e) => {
            let _ = ready.send(Err((shard.id, e)));
            return;
        }
    };
    let mut sockets = Vec::new();
    for served in &shared.listeners {
        match glommio::net::TcpListener::bind(served.config.bind) {
            Ok(l) => sockets.push((l, Arc::clone(served))),
            Err(e) => {
                let _ = ready.send(Err((
                    shard.id,
                    format!(
                        "binding listener {} on {}: {e}",
                        served.config.name, served.config.bind
                    ),
                )));
                return;
            }
        }
    }
    let metrics = match metrics_listener(&shard) {
        Ok(m) => m,
        Err(e) => {
            let _ = ready.send(Err((shard.id, e)));
            return;
        }
    };
    let _ = ready.send(Ok(shard.id));
    let accepts: Vec<_> = sockets
        .into_iter()
        .map(|(socket, served)| {
            glommio::spawn_local(server::accept_loop(Rc::clone(&shard), socket, served))
        })
        .collect();
    let idle = glommio::spawn_local(server::close_idle_connections(Rc::clone(&shard)));
    maintenance(&shard).await;
    drop(idle.cancel());
    if let Some(m) = metrics {
        drop(m.cancel());
    }
    for accept in accepts {
        drop(accept.cancel());
    }
    drop(timers.cancel());
    drop(txn_timers.cancel());
    drop(cleaner_task.cancel());
    server::close_connections(&shard, CLOSE_CONNECTIONS_MAX).await;
    shutdown(&shard);
    for t in tasks {
        drop(t.cancel());
    }
    quiesce(&shared).await;
}

/// `reactor.stall.threshold.ms`: logs the backtrace of a shard whose task
/// queue ran `threshold` past its slice, where a blocking call or a long
/// computation holds every other request of that core (Seastar's
/// blocked-reactor notice); glommio logs it, under the target
/// `glommio::executor::stall`. Off by default: it arms a timer each time
/// a task queue runs.
#[derive(Debug)]
struct StallLog {
    threshold: Duration,
}

impl glommio::StallDetectionHandler for StallLog {
    fn threshold(&self, _: glommio::TaskQueueHandle, _: Duration) -> Option<Duration> {
        Some(self.threshold)
    }
}

/// Starts the shard's log cleaner in a task queue of its own with a
/// tenth of the default queue's shares and a 1 ms slice. Its passes read
/// and write on the cleaner threads; what runs here (planning, and the
/// swaps' renames) should still give way to produce and fetch.
fn spawn_cleaner(
    cleaner: Rc<crate::cleaner::Cleaner>,
    shard: &Rc<Shard>,
) -> Result<glommio::Task<()>, String> {
    let queue = glommio::executor().create_task_queue(
        glommio::Shares::Static(100),
        glommio::Latency::Matters(Duration::from_millis(1)),
        "cleaner",
    );
    glommio::spawn_local_into(cleaner.run(Rc::clone(shard)), queue)
        .map_err(|e| format!("starting the log cleaner: {e}"))
}

/// Binds `metrics.listener` on shard 0, if set, and serves it.
fn metrics_listener(shard: &Rc<Shard>) -> Result<Option<glommio::Task<()>>, String> {
    let addr = shard
        .broker
        .config
        .get("metrics.listener")
        .unwrap_or_default();
    if shard.id != 0 || addr.is_empty() {
        return Ok(None);
    }
    // glommio's bind sets SO_REUSEPORT, which would share a port another
    // process listens on.
    if let Ok(a) = addr.parse::<std::net::SocketAddr>() {
        if port_free("metrics", a).is_err() {
            return Err(format!(
                "metrics.listener={addr}: the port is already in use by another process"
            ));
        }
    }
    let listener = glommio::net::TcpListener::bind(addr)
        .map_err(|e| format!("metrics.listener={addr}: cannot bind: {e}"))?;
    let encoder = crate::idle::Workers::new("sluice-metrics", 1)
        .map_err(|e| format!("metrics.listener={addr}: cannot start its thread: {e}"))?;
    tracing::info!(%addr, "metrics listener ready");
    Ok(Some(glommio::spawn_local(crate::metrics::http::serve(
        Rc::clone(shard),
        listener,
        Rc::new(encoder),
    ))))
}

/// Creates the SCRAM users of `sluice.scram.users` that the metadata log
/// does not have yet, before clients are served, so they can log in as
/// soon as the broker listens. Each broker of a cluster asks; the
/// controller leaves out users already there, so a password changed with
/// AlterUserScramCredentials stays changed across restarts.
async fn create_bootstrap_users(
    shard: &Rc<Shard>,
    node: &crate::cluster::node::ClusterNode,
) -> Result<(), String> {
    use crate::security::sasl::{config, scram::ScramCredential};
    let users = config::bootstrap_users(shard.broker.config.value(config::BOOTSTRAP_USERS_KEY));
    if users.is_empty() {
        return Ok(());
    }
    let upsertions = users
        .iter()
        .map(|u| {
            let credential = ScramCredential::from_password(u.mechanism, &u.password, u.iterations);
            (u.user.clone(), u.mechanism, credential)
        })
        .collect();
    let req = crate::cluster::rpc::Request::AlterScramCredentials {
        upsertions,
        deletions: Vec::new(),
        if_absent: true,
    };
    node.change(req, shard)
        .await
        .map(|_| {
            tracing::info!(
                users = users.len(),
                "SCRAM users of {} present",
                config::BOOTSTRAP_USERS_KEY
            )
        })
        .map_err(|(code, message)| {
            format!(
                "creating the SCRAM users of {}: {code:?} {message}",
                config::BOOTSTRAP_USERS_KEY
            )
        })
}

/// How long a stopping shard waits for its connections' tasks to end.
const CLOSE_CONNECTIONS_MAX: Duration = Duration::from_secs(2);
/// How long a stopping shard waits for the other shards to stop.
const QUIESCE_MAX: Duration = Duration::from_secs(5);

/// Waits until every shard has closed its connections and stopped taking
/// jobs, then a moment for wakes already in flight between shards. A task
/// on one shard may be woken from another (a cross-shard job's answer); an
/// executor torn down while another shard is still waking one of its tasks
/// would have that wake write to freed memory.
async fn quiesce(shared: &BrokerShared) {
    shared.quiesced.fetch_add(1, Ordering::SeqCst);
    let cores = shared.config.cores.max(1);
    let deadline = std::time::Instant::now() + QUIESCE_MAX;
    while shared.quiesced.load(Ordering::SeqCst) < cores && std::time::Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
    glommio::timer::sleep(Duration::from_millis(10)).await;
}

/// Lets every partition shrink its ISR of lagging followers, and sends
/// the ISR changes partitions propose to the controller.
fn replication_tick(shard: &Rc<Shard>) {
    let now = crate::shard::partition::now_ms();
    for p in shard.partitions() {
        p.replication_tick(now);
        for proposal in p.take_proposals() {
            let (shard, p) = (Rc::clone(shard), Rc::clone(&p));
            glommio::spawn_local(async move {
                let epoch = proposal.partition_epoch;
                let Some(topic_id) = shard.metadata().topic(&p.topic).map(|t| t.id) else {
                    return;
                };
                let req = crate::cluster::rpc::Request::AlterPartition {
                    node: proposal.leader.0,
                    topic_id: topic_id.to_string(),
                    index: p.index,
                    leader_epoch: proposal.leader_epoch.0,
                    partition_epoch: epoch,
                    isr: proposal.isr.iter().map(|n| n.0).collect(),
                };
                tracing::info!(topic = %p.topic, partition = p.index, isr = ?proposal.isr, "proposing an ISR change");
                let current_isr = shard
                    .metadata()
                    .topic(&p.topic)
                    .and_then(|t| t.partition(p.index))
                    .map_or(0, |s| s.isr.len());
                let shrink = proposal.isr.len() < current_isr;
                let changed = crate::shard::controller::change(&shard, req).await;
                if changed.is_ok() {
                    crate::metrics::isr_changed(shrink);
                }
                if let Err((code, message)) = changed {
                    tracing::info!(topic = %p.topic, partition = p.index, ?code, %message, "ISR change refused");
                    p.proposal_refused(epoch, code == sluice_protocol::ErrorCode::IneligibleReplica);
                }
            })
            .detach();
        }
    }
}

/// Waits for `fut`, or gives up with `None` once the broker stops.
async fn unless_stopped<F: std::future::Future + Unpin>(
    shared: &BrokerShared,
    mut fut: F,
) -> Option<F::Output> {
    loop {
        let tick = Box::pin(glommio::timer::sleep(Duration::from_millis(100)));
        match futures::future::select(&mut fut, tick).await {
            futures::future::Either::Left((v, _)) => return Some(v),
            futures::future::Either::Right(_) if shared.stopping() => return None,
            futures::future::Either::Right(_) => {}
        }
    }
}

/// Periodic work until the broker stops: `flush.ms` flushes, retention,
/// checkpoints.
async fn maintenance(shard: &Rc<Shard>) {
    let config = &shard.broker.config;
    // The stop flag is checked every tick: 100 ms bounds how long a
    // SIGTERM waits, and costs nothing measurable.
    let tick = Duration::from_millis(100);
    let checkpoint_every = Duration::from_millis(config.checkpoint_interval_ms());
    let retention_every = Duration::from_millis(config.retention_check_interval_ms());
    let flush_every = Duration::from_millis(config.flush_scheduler_interval_ms());
    let (mut last_checkpoint, mut last_retention, mut last_flush) = (
        std::time::Instant::now(),
        std::time::Instant::now(),
        std::time::Instant::now(),
    );
    let mut last_removal = std::time::Instant::now();
    let mut shutting_down = false;
    while !shard.broker.stopping() {
        glommio::timer::sleep(tick).await;
        if shard.id == 0 && !shutting_down && shard.broker.stop_requested() {
            shutting_down = true;
            let shard = Rc::clone(shard);
            glommio::spawn_local(async move {
                shard.cluster().controlled_shutdown(&shard).await;
                shard.broker.stop.store(true, Ordering::Relaxed);
            })
            .detach();
        }
        replication_tick(shard);
        crate::shard::rebuild::tend(shard);
        if last_flush.elapsed() >= flush_every {
            last_flush = std::time::Instant::now();
            for p in shard.partitions() {
                if let Err(e) = p.flush_if_due().await {
                    tracing::error!(topic = %p.topic, partition = p.index, error = %e, "scheduled flush failed");
                }
            }
        }
        if last_retention.elapsed() >= retention_every {
            last_retention = std::time::Instant::now();
            for p in shard.partitions() {
                if let Err(e) = p.enforce_retention() {
                    tracing::error!(topic = %p.topic, partition = p.index, error = %e, "retention failed");
                }
            }
        }
        // A deleted segment's files go within a second of their
        // file.delete.delay.ms; checking each partition every tick would
        // cost a pass over 10,000 partitions ten times a second.
        if last_removal.elapsed() >= REMOVE_RETIRED_EVERY {
            last_removal = std::time::Instant::now();
            remove_retired(shard);
        }
        if last_checkpoint.elapsed() >= checkpoint_every {
            last_checkpoint = std::time::Instant::now();
            shard
                .broker
                .publish_checkpoints(shard.id, shard.checkpoint_entries());
            if shard.id == 0 {
                let shared = Arc::clone(&shard.broker);
                glommio::spawn_local(async move {
                    if let Err(e) = write_checkpoints_off_shard(&shared).await {
                        tracing::error!(error = %e, "writing checkpoints failed");
                    }
                })
                .detach();
            }
        }
    }
}

/// How often deleted segments' files are checked for removal.
const REMOVE_RETIRED_EVERY: Duration = Duration::from_secs(1);

/// Removes the files of deleted segments whose `file.delete.delay.ms`
/// has passed.
fn remove_retired(shard: &Shard) {
    for p in shard.partitions() {
        if let Err(e) = p.remove_retired() {
            tracing::error!(topic = %p.topic, partition = p.index, error = %e, "removing deleted segment files failed");
        }
    }
}

fn shutdown(shard: &Shard) {
    let lagging = shard
        .partitions()
        .iter()
        .filter(|p| p.epochs_unwritten() || p.creation_unsynced())
        .count();
    if lagging > 0 {
        // Their flush below writes and syncs them on this thread.
        tracing::info!(
            shard = shard.id,
            lagging,
            "partition files the background writer had not reached"
        );
    }
    for p in shard.partitions() {
        if p.sync_failure().is_some() {
            shard.broker.sync_failed.store(true, Ordering::Relaxed);
            continue;
        }
        if let Err(e) = p.flush_now() {
            tracing::error!(topic = %p.topic, partition = p.index, error = %e, "flush at shutdown failed");
            shard.broker.sync_failed.store(true, Ordering::Relaxed);
        }
    }
    shard
        .broker
        .publish_checkpoints(shard.id, shard.checkpoint_entries());
    tracing::info!(
        shard = shard.id,
        partitions = shard.partitions().len(),
        connections = shard.stats.connections.get(),
        cross_shard_jobs = shard.stats.cross_shard_jobs.get(),
        sendfile_bytes = shard.stats.sendfile_bytes.get(),
        copied_bytes = shard.stats.copied_bytes.get(),
        tls_bytes = shard.stats.tls_bytes.get(),
        "shard stopped"
    );
    shard
        .broker
        .tls_bytes
        .fetch_add(shard.stats.tls_bytes.get(), Ordering::Relaxed);
    shard
        .broker
        .sendfile_bytes
        .fetch_add(shard.stats.sendfile_bytes.get(), Ordering::Relaxed);
    shard
        .broker
        .copied_bytes
        .fetch_add(shard.stats.copied_bytes.get(), Ordering::Relaxed);
}
