//! Shards: one glommio executor per core, each owning a set of partitions.
//!
//! A shard holds the partitions [`crate::metadata::owner_shard`] assigns
//! it, the current metadata snapshot, and the sending side of a bounded
//! channel mesh to every other shard. Work for another shard's partitions
//! travels as a [`Job`]: a `Send` closure that the owner runs on its own
//! executor, returning its answer over a oneshot channel (Seastar's
//! `invoke_on`). Bytes move as refcounted `Bytes`, never copied per hop.

pub mod broker_client;
pub mod controller;
pub mod file_sync;
pub mod follower;
pub mod mesh;
pub mod partition;
pub mod producer_state;
pub mod rebuild;

use crate::broker::BrokerShared;
use crate::metadata::{owner_shard, Snapshot, TopicMeta};
use crate::storage::log::PartitionLog;
use crate::storage::partition_dir_name;
use futures::channel::oneshot;
use futures::future::LocalBoxFuture;
use partition::Partition;
use sluice_protocol::Offset;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;

/// Index of a shard, 0..count.
pub type ShardId = usize;

/// Work sent to another shard.
pub type Job = Box<dyn FnOnce(Rc<Shard>) -> LocalBoxFuture<'static, ()> + Send>;

/// Capacity of each channel in the mesh: bounded so a slow shard pushes
/// back on the shards feeding it.
pub const MESH_CHANNEL_CAPACITY: usize = 1024;

/// A served connection: its task, when it was last active, and its
/// listener's counters (see `server::accept_loop`).
pub type OpenConnection = (
    glommio::task::JoinHandle<()>,
    Rc<Cell<std::time::Instant>>,
    Rc<crate::metrics::listeners::ListenerCounters>,
);

/// The shard is stopping and can take no more work.
#[derive(Debug, thiserror::Error)]
#[error("shard {0} is not accepting work")]
pub struct ShardGone(pub ShardId);

/// Partition key: topic name and partition index.
pub type TopicPartition = (String, i32);

/// Per-shard counters, published to the broker at shutdown.
#[derive(Debug, Default)]
pub struct Stats {
    pub sendfile_bytes: Cell<u64>,
    pub copied_bytes: Cell<u64>,
    /// Record bytes of fetches sent over TLS: read from the page cache,
    /// encrypted, written.
    pub tls_bytes: Cell<u64>,
    pub connections: Cell<u64>,
    pub cross_shard_jobs: Cell<u64>,
}

/// A partition that could not be opened, and why.
#[derive(Debug, Clone)]
pub struct Offline {
    pub reason: String,
}

/// One shard's state.
pub struct Shard {
    pub id: ShardId,
    pub count: usize,
    pub broker: Arc<BrokerShared>,
    senders: mesh::Senders<Job>,
    partitions: RefCell<HashMap<TopicPartition, Rc<Partition>>>,
    offline: RefCell<HashMap<TopicPartition, Offline>>,
    metadata: RefCell<Arc<Snapshot>>,
    /// The consumer groups this shard coordinates.
    pub groups: crate::group::coordinator::Coordinator,
    /// This broker's part in the cluster (shard 0 only).
    pub cluster: RefCell<Option<Rc<crate::cluster::node::ClusterNode>>>,
    /// Fired when the first snapshot from the metadata log is installed.
    first_snapshot: RefCell<Option<oneshot::Sender<()>>>,
    /// Leaders this shard runs a replica fetcher for.
    pub fetchers: RefCell<std::collections::HashSet<i32>>,
    /// This shard, for tasks it starts itself (set once it is in an `Rc`).
    pub this: RefCell<std::rc::Weak<Shard>>,
    /// The client connections being served, closed at shutdown or when
    /// idle: each one's task, when it last read a request or wrote an
    /// answer, and its listener's counters.
    pub open_connections: RefCell<HashMap<u64, OpenConnection>>,
    /// Partition files to write and sync in the background.
    pub file_sync: Rc<file_sync::FileSync>,
    /// A snapshot was applied: later ones visit only what changed.
    applied_any: Cell<bool>,
    /// The metadata has reached this broker's registration (see
    /// [`Shard::metadata_current`]).
    current: Cell<bool>,
    /// Failed replicas being reported and rebuilt (see `rebuild.rs`).
    pub failures: RefCell<HashMap<TopicPartition, rebuild::Failure>>,
    pub stats: Stats,
}

impl Shard {
    pub fn new(
        broker: Arc<BrokerShared>,
        senders: mesh::Senders<Job>,
        metadata: Arc<Snapshot>,
        first_snapshot: oneshot::Sender<()>,
    ) -> Shard {
        let mut group_config = broker.config.group();
        // An existing offsets topic keeps its partition count: groups must
        // hash to the partitions that hold their records.
        if let Some(t) = metadata.topic(crate::group::OFFSETS_TOPIC) {
            group_config.offsets_partitions = t.partitions;
        }
        Shard {
            groups: crate::group::coordinator::Coordinator::new(group_config),
            id: senders.id(),
            count: senders.shards().max(1),
            broker,
            senders,
            partitions: RefCell::new(HashMap::new()),
            offline: RefCell::new(HashMap::new()),
            metadata: RefCell::new(metadata),
            cluster: RefCell::new(None),
            first_snapshot: RefCell::new(Some(first_snapshot)),
            fetchers: RefCell::new(std::collections::HashSet::new()),
            this: RefCell::new(std::rc::Weak::new()),
            open_connections: RefCell::new(HashMap::new()),
            file_sync: Rc::new(file_sync::FileSync::default()),
            applied_any: Cell::new(false),
            current: Cell::new(false),
            failures: RefCell::new(HashMap::new()),
            stats: Stats::default(),
        }
    }

    /// The current metadata snapshot.
    pub fn metadata(&self) -> Arc<Snapshot> {
        Arc::clone(&self.metadata.borrow())
    }

    /// The shard owning partition `index` of `topic`.
    pub fn owner(&self, topic: &TopicMeta, index: i32) -> ShardId {
        owner_shard(topic.id, index, self.count)
    }

    /// The shard owning partition `index` of `topic`, if the topic exists
    /// and has that partition.
    pub fn owner_of(&self, topic: Option<&Arc<TopicMeta>>, index: i32) -> Option<ShardId> {
        topic
            .filter(|m| index >= 0 && index < m.partitions)
            .map(|m| self.owner(m, index))
    }

    /// Runs `f` on shard `target` and returns its result.
    pub async fn invoke_on<R, F, Fut>(
        self: &Rc<Self>,
        target: ShardId,
        f: F,
    ) -> Result<R, ShardGone>
    where
        R: Send + 'static,
        F: FnOnce(Rc<Shard>) -> Fut + Send + 'static,
        Fut: Future<Output = R> + 'static,
    {
        if target == self.id {
            return Ok(f(Rc::clone(self)).await);
        }
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |shard| {
            Box::pin(async move {
                let _ = tx.send(f(shard).await);
            })
        });
        self.stats
            .cross_shard_jobs
            .set(self.stats.cross_shard_jobs.get() + 1);
        if !self.senders.send_to(target, job).await {
            return Err(ShardGone(target));
        }
        rx.await.map_err(|_| ShardGone(target))
    }

    /// A partition this shard owns.
    pub fn partition(&self, topic: &str, index: i32) -> Option<Rc<Partition>> {
        self.partitions
            .borrow()
            .get(&(topic.to_string(), index))
            .cloned()
    }

    /// A partition this shard owns and the metadata says this broker
    /// leads.
    pub fn leader_partition(&self, topic: &str, index: i32) -> Option<Rc<Partition>> {
        let p = self.partition(topic, index)?;
        let snapshot = self.metadata.borrow();
        let meta = snapshot.topic(topic)?;
        (meta.id == p.topic_id && snapshot.leads(meta, index)).then_some(p)
    }

    /// A partition this broker leads and may serve as leader now: the one
    /// clients and followers produce to and fetch from. None while the
    /// broker's lease with the controller has run out, since it may have
    /// been fenced meanwhile (see `BrokerShared::leased`).
    pub fn serving_partition(&self, topic: &str, index: i32) -> Option<Rc<Partition>> {
        if !self.broker.leased() {
            return None;
        }
        self.leader_partition(topic, index)
            .filter(|p| p.sync_failure().is_none())
    }

    /// Why an owned partition is offline, if it is: it could not be
    /// opened, or syncing its files failed since.
    pub fn offline_reason(&self, topic: &str, index: i32) -> Option<String> {
        let key = (topic.to_string(), index);
        if let Some(o) = self.offline.borrow().get(&key) {
            return Some(o.reason.clone());
        }
        self.partitions.borrow().get(&key)?.sync_failure()
    }

    /// Partitions this shard holds offline for a storage failure (failed
    /// to open, or to sync since).
    pub fn storage_offline_count(&self) -> usize {
        let failed_syncs = self
            .partitions
            .borrow()
            .values()
            .filter(|p| p.sync_failure().is_some())
            .count();
        self.offline.borrow().len() + failed_syncs
    }

    /// The partitions this shard holds offline for a storage failure,
    /// in order: failed to open, or to write or sync since.
    pub fn failed_replicas(&self) -> Vec<TopicPartition> {
        let mut failed: Vec<TopicPartition> = self.offline.borrow().keys().cloned().collect();
        failed.extend(
            self.partitions
                .borrow()
                .iter()
                .filter(|(_, p)| p.sync_failure().is_some())
                .map(|(k, _)| k.clone()),
        );
        failed.sort();
        failed
    }

    /// All partitions of this shard.
    pub fn partitions(&self) -> Vec<Rc<Partition>> {
        self.partitions.borrow().values().cloned().collect()
    }

    /// This broker's cluster node; call on shard 0 only.
    pub fn cluster(&self) -> Rc<crate::cluster::node::ClusterNode> {
        self.cluster
            .borrow()
            .clone()
            .expect("the cluster node lives on shard 0")
    }

    /// Opens (or creates) the partitions of `topic` that this broker
    /// holds a replica of and this shard owns.
    pub fn open_topic(&self, topic: &TopicMeta) {
        let node = crate::replication::NodeId(self.broker.config.node_id);
        for index in 0..topic.partitions {
            if owner_shard(topic.id, index, self.count) != self.id {
                continue;
            }
            if !topic
                .partition(index)
                .is_some_and(|p| p.replicas.contains(&node))
            {
                continue;
            }
            let key = (topic.name.clone(), index);
            if self.partitions.borrow().contains_key(&key) {
                continue;
            }
            if let Err(e) = self.open_replica(topic, index) {
                tracing::error!(topic = %topic.name, partition = index, error = %e, "partition is offline");
                self.offline.borrow_mut().insert(
                    key,
                    Offline {
                        reason: e.to_string(),
                    },
                );
            }
        }
    }

    /// Opens (or creates) this broker's replica of partition `index` of
    /// `topic` and adds it to the shard's partitions.
    fn open_replica(&self, topic: &TopicMeta, index: i32) -> crate::storage::Result<Rc<Partition>> {
        let node = crate::replication::NodeId(self.broker.config.node_id);
        let log = self.open_partition(topic, index)?;
        let p = Rc::new(Partition::new(
            topic.name.clone(),
            index,
            topic.id,
            log,
            node,
            self.replication_config(topic),
        ));
        let key = (topic.name.clone(), index);
        self.partitions
            .borrow_mut()
            .insert(key.clone(), Rc::clone(&p));
        self.offline.borrow_mut().remove(&key);
        Ok(p)
    }

    /// Replaces a failed replica with an empty one that follows the
    /// leader (see `rebuild.rs`): the partition's directory is renamed
    /// to `<dir>.<uuid>-delete` and deleted in the background, as Kafka
    /// deletes a replica, and a new log is created in its place. Until
    /// that has worked the partition stays offline: a directory that
    /// could not be set aside keeps its failed replica, and a new log
    /// that could not be created leaves it offline with that error.
    pub fn rebuild_replica(&self, topic: &TopicMeta, index: i32) -> crate::storage::Result<()> {
        let key = (topic.name.clone(), index);
        let name = partition_dir_name(&topic.name, index);
        let dir = self.broker.data_dir().join(&name);
        if let Some(old) = self.partitions.borrow().get(&key) {
            // A cleaned segment's swap may be at work in the directory.
            old.settle_swap();
        }
        if dir.exists() {
            let aside = self
                .broker
                .data_dir()
                .join(crate::storage::set_aside_dir_name(&name));
            std::fs::rename(&dir, &aside).map_err(crate::storage::StorageError::io(
                "set aside a failed replica",
                &dir,
            ))?;
            glommio::spawn_local(rebuild::remove_set_aside(aside)).detach();
        }
        if let Some(old) = self.partitions.borrow_mut().remove(&key) {
            // Requests still holding it reach files about to be unlinked.
            old.retire();
        }
        let p = self.open_replica(topic, index).inspect_err(|e| {
            self.offline.borrow_mut().insert(
                key.clone(),
                Offline {
                    reason: e.to_string(),
                },
            );
        })?;
        let snapshot = self.metadata();
        self.apply_state_to(&p, &snapshot, partition::now_ms());
        Ok(())
    }

    fn open_partition(
        &self,
        topic: &TopicMeta,
        index: i32,
    ) -> crate::storage::Result<PartitionLog> {
        let dir = self
            .broker
            .data_dir()
            .join(partition_dir_name(&topic.name, index));
        let config = Arc::clone(&topic.config);
        if dir.exists() {
            // Left from a topic of the same name deleted while this broker
            // was down: not this topic's data.
            let stale = crate::storage::checkpoint::read_partition_metadata(&dir)
                .is_ok_and(|id| id != topic.id);
            if stale {
                tracing::warn!(dir = %dir.display(), "removing the log of a deleted topic");
                std::fs::remove_dir_all(&dir)
                    .map_err(crate::storage::StorageError::io("remove", &dir))?;
            }
        }
        if !dir.exists() {
            return PartitionLog::create(&dir, config, topic.id);
        }
        if crate::storage::checkpoint::read_partition_metadata(&dir).is_err() {
            // A new partition's files are synced after its creation (see
            // `PartitionLog::create`): a crash may have lost this one.
            tracing::warn!(dir = %dir.display(), "partition.metadata missing or unreadable; writing it again");
            crate::storage::checkpoint::write_partition_metadata(&dir, topic.id)?;
        }
        let key = (topic.name.clone(), index);
        let recovery_point = Offset(
            self.broker
                .start
                .recovery_points
                .get(&key)
                .copied()
                .unwrap_or(0),
        );
        let log_start = Offset(self.broker.start.log_starts.get(&key).copied().unwrap_or(0));
        let mut log = PartitionLog::open(
            &dir,
            config,
            self.broker.start.clean,
            recovery_point,
            log_start,
        )?;
        // The log may end in records the other replicas never got: the
        // high watermark restarts where it was checkpointed (the log start
        // if it never was). As leader it moves on once the in-sync replicas
        // are heard from, at once when the ISR is this replica alone.
        let hw = self.broker.start.high_watermarks.get(&key).copied();
        log.set_high_watermark(Offset(hw.unwrap_or(log.log_start().0)));
        Ok(log)
    }

    /// Installs a new snapshot: opens the partitions this shard now holds
    /// a replica of, deletes those of topics that are gone, and once the
    /// metadata is `current` (see [`Shard::metadata_current`]) those that
    /// reassignments moved to other brokers.
    ///
    /// Only the topics that changed since the shard's last snapshot are
    /// visited (all of them for the first snapshot, after a change of the
    /// brokers, and topics with an offline partition, which are tried
    /// again): see [`Snapshot::changed_topics`].
    pub fn apply_snapshot(&self, snapshot: Arc<Snapshot>, current: bool) {
        let prev = self.metadata();
        let changed = match self.applied_any.replace(true) {
            true => snapshot.changed_topics(&prev),
            false => None,
        };
        // Each changed topic with the most partitions either snapshot gives it.
        let changed: Option<BTreeMap<String, i32>> = changed.map(|mut names| {
            names.extend(self.offline.borrow().keys().map(|(t, _)| t.clone()));
            let count = |s: &Snapshot, n: &str| s.topic(n).map_or(0, |t| t.partitions);
            names
                .into_iter()
                .map(|n| {
                    let most = count(&snapshot, &n).max(count(&prev, &n));
                    (n, most)
                })
                .collect()
        });
        self.delete_replicas(&snapshot, current, changed.as_ref());
        self.offline
            .borrow_mut()
            .retain(|(t, _), _| snapshot.topic(t).is_some());
        let visit = |name: &String| changed.as_ref().is_none_or(|c| c.contains_key(name));
        for (name, topic) in &snapshot.topics {
            if visit(name) {
                self.open_topic(topic);
            }
        }
        let led_before = self.led_offsets_partitions(&self.metadata());
        *self.metadata.borrow_mut() = Arc::clone(&snapshot);
        self.apply_partition_states(&snapshot, changed.as_ref());
        let led_after = self.led_offsets_partitions(&snapshot);
        for p in led_after.difference(&led_before) {
            self.groups.set_leading(self, *p, true);
        }
        for p in led_before.difference(&led_after) {
            self.groups.set_leading(self, *p, false);
        }
        if let Some(first) = self.first_snapshot.borrow_mut().take() {
            let _ = first.send(());
        }
    }

    /// The metadata has reached this broker's registration, so it is no
    /// older than anything the logs hold: replicas that reassignments
    /// moved away, while it ran or while it was down, are deleted. Before,
    /// an image replayed from an old snapshot or a lagging voter could
    /// show a replica as moved away that a later entry gives back.
    pub fn metadata_current(&self) {
        self.current.set(true);
        let snapshot = self.metadata();
        self.remove_strays(&snapshot);
        self.delete_replicas(&snapshot, true, None);
    }

    /// Whether [`Shard::metadata_current`] has been called.
    pub fn metadata_is_current(&self) -> bool {
        self.current.get()
    }

    /// The partitions of this shard of the topics in `topics` (each with
    /// the most partitions it may have), or all of them for `None`.
    fn partitions_of(&self, topics: Option<&BTreeMap<String, i32>>) -> Vec<Rc<Partition>> {
        let partitions = self.partitions.borrow();
        let Some(topics) = topics else {
            return partitions.values().cloned().collect();
        };
        let mut out = Vec::new();
        for (name, count) in topics {
            let mut key = (name.clone(), 0);
            for index in 0..*count {
                key.1 = index;
                if let Some(p) = partitions.get(&key) {
                    out.push(Rc::clone(p));
                }
            }
        }
        out
    }

    /// Deletes the replicas of topics that are gone and, with `moved`,
    /// those no longer assigned to this broker; of the topics named in
    /// `topics` only, if given.
    fn delete_replicas(
        &self,
        snapshot: &Snapshot,
        moved: bool,
        topics: Option<&BTreeMap<String, i32>>,
    ) {
        let node = crate::replication::NodeId(self.broker.config.node_id);
        let held = |t: &str, index: i32, p: &Partition| {
            snapshot.topic(t).is_some_and(|m| {
                m.id == p.topic_id
                    && (!moved
                        || m.partition(index)
                            .is_some_and(|s| s.replicas.contains(&node)))
            })
        };
        let doomed: Vec<TopicPartition> = self
            .partitions_of(topics)
            .iter()
            .filter(|p| !held(&p.topic, p.index, p))
            .map(|p| (p.topic.clone(), p.index))
            .collect();
        for key in doomed {
            if let Some(p) = self.partitions.borrow_mut().remove(&key) {
                tracing::info!(topic = %key.0, partition = key.1, "deleting replica");
                if let Err(e) = p.delete() {
                    tracing::error!(topic = %key.0, partition = key.1, error = %e, "deleting partition");
                }
            }
        }
    }

    /// Deletes the logs of partitions this shard owns that hold this
    /// topic's data but are no longer assigned to this broker: moved away
    /// while it was down.
    fn remove_strays(&self, snapshot: &Snapshot) {
        let node = crate::replication::NodeId(self.broker.config.node_id);
        for topic in snapshot.topics.values() {
            for index in 0..topic.partitions {
                let assigned = topic
                    .partition(index)
                    .is_some_and(|s| s.replicas.contains(&node));
                let open = self
                    .partitions
                    .borrow()
                    .contains_key(&(topic.name.clone(), index));
                if assigned || open || owner_shard(topic.id, index, self.count) != self.id {
                    continue;
                }
                let dir = self
                    .broker
                    .data_dir()
                    .join(partition_dir_name(&topic.name, index));
                let ours = crate::storage::checkpoint::read_partition_metadata(&dir)
                    .is_ok_and(|id| id == topic.id);
                if !ours {
                    continue;
                }
                tracing::info!(dir = %dir.display(), "removing a replica moved to other brokers");
                if let Err(e) = std::fs::remove_dir_all(&dir) {
                    tracing::error!(dir = %dir.display(), error = %e, "removing a stray replica");
                }
            }
        }
    }

    /// Replication settings of `topic`'s partitions.
    fn replication_config(&self, topic: &TopicMeta) -> crate::replication::ReplicationConfig {
        crate::replication::ReplicationConfig {
            replica_lag_time_max_ms: self
                .broker
                .config
                .get("replica.lag.time.max.ms")
                .and_then(|v| v.parse().ok())
                .unwrap_or(30_000),
            min_insync_replicas: topic.config.min_insync_replicas,
            unclean_leader_election: topic.config.unclean_leader_election,
            ..Default::default()
        }
    }

    /// Gives every partition of this shard its state from `snapshot`, and
    /// makes sure a fetcher runs for every leader one now follows.
    fn apply_partition_states(
        self: &Shard,
        snapshot: &Snapshot,
        topics: Option<&BTreeMap<String, i32>>,
    ) {
        let now = partition::now_ms();
        for p in self.partitions_of(topics) {
            self.apply_state_to(&p, snapshot, now);
        }
    }

    /// Gives partition `p` its state from `snapshot`, and makes sure a
    /// fetcher runs for its leader if it follows one.
    fn apply_state_to(&self, p: &Rc<Partition>, snapshot: &Snapshot, now: i64) {
        let Some(meta) = snapshot.topic(&p.topic).filter(|m| m.id == p.topic_id) else {
            return;
        };
        let Some(state) = meta.partition(p.index) else {
            return;
        };
        p.set_topic_config(&meta.config);
        if state.leader.map(|l| l.0) == Some(snapshot.node_id) {
            p.metrics.leading(state.leader_epoch.0);
        }
        p.apply_state(state.clone(), now);
        self.file_sync.push(p);
        if let Some(leader) = p.following() {
            if let Some(shard) = self.this.borrow().upgrade() {
                follower::ensure_fetcher(&shard, leader);
            }
        }
    }

    /// The `__consumer_offsets` partitions this shard owns and this
    /// broker leads in `snapshot`.
    fn led_offsets_partitions(&self, snapshot: &Snapshot) -> std::collections::BTreeSet<i32> {
        let Some(topic) = snapshot.topic(crate::group::OFFSETS_TOPIC) else {
            return Default::default();
        };
        (0..topic.partitions)
            .filter(|i| self.owner(topic, *i) == self.id && snapshot.leads(topic, *i))
            .filter(|i| self.partition(&topic.name, *i).is_some())
            .collect()
    }

    /// Recovery points, log start offsets and high watermarks of this
    /// shard's partitions.
    pub fn checkpoint_entries(&self) -> crate::broker::CheckpointEntries {
        let mut out = crate::broker::CheckpointEntries::default();
        for ((t, i), p) in self.partitions.borrow().iter() {
            let key = (t.clone(), *i);
            let marks = p.watermarks();
            out.recovery_points
                .insert(key.clone(), p.recovery_point().0);
            out.log_starts.insert(key.clone(), marks.log_start.0);
            out.high_watermarks.insert(key, marks.high_watermark.0);
        }
        out
    }
}
