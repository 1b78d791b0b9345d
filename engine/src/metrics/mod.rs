//! What a broker exposes to Prometheus, and how it is counted.
//!
//! Counting stays off the data path's shared state: each shard counts in
//! its own thread-local cells (a shard is one thread), and partitions
//! count their own bytes in plain `Cell`s. A scrape asks every shard for a
//! [`ShardSnapshot`] (one cross-shard job each), adds them up and encodes
//! the text on shard 0 ([`exposition`]). Nothing is locked, and a slow
//! scraper only holds its own HTTP connection ([`http`]).

pub mod exposition;
pub mod http;
pub mod listeners;
pub mod requests;

use crate::shard::Shard;
use listeners::ListenerSample;
use requests::{ApiCounters, RequestCounters};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

/// Upper bounds of latency buckets, in nanoseconds: 0.1 ms to 10 s,
/// about three per decade. Integers, so that an observation is placed by
/// comparing integers.
pub const LATENCY_BUCKET_NANOS: [u64; 16] = [
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// A latency histogram with [`LATENCY_BUCKET_NANOS`] (plus +Inf).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last is +Inf.
    pub counts: [u64; LATENCY_BUCKET_NANOS.len() + 1],
    pub sum_nanos: u64,
}

impl Histogram {
    pub fn observe(&mut self, d: Duration) {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let i = LATENCY_BUCKET_NANOS.partition_point(|b| *b < nanos);
        self.counts[i] += 1;
        self.sum_nanos = self.sum_nanos.saturating_add(nanos);
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn sum_seconds(&self) -> f64 {
        self.sum_nanos as f64 / 1e9
    }

    pub fn add(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts) {
            *a += b;
        }
        self.sum_nanos = self.sum_nanos.saturating_add(other.sum_nanos);
    }
}

/// Counts kept by one shard, outside the partitions.
#[derive(Clone, Debug, Default)]
pub struct ShardCounters {
    /// How long acks=all produces waited for the in-sync replicas.
    pub acks_all_wait: Histogram,
    /// fdatasync calls of partition logs and how long they took.
    pub fsync: Histogram,
    /// ISR changes this broker proposed as a leader and the controller
    /// took.
    pub isr_shrinks: u64,
    pub isr_expands: u64,
    /// Times this broker became a partition's leader (on a new epoch).
    pub leader_elections: u64,
    /// How long fetches stayed parked waiting for data, by who fetched.
    pub fetch_wait_consumer: Histogram,
    pub fetch_wait_replica: Histogram,
    /// Responses throttled for a client quota, and the milliseconds they
    /// throttled for, by quota type (`QUOTA_NAMES`' order).
    pub quota_throttled: [u64; 3],
    pub quota_throttle_ms: [u64; 3],
}

/// Quota types as the metrics label them, in `QuotaKey::ALL`'s order
/// (Kafka's produce, fetch and request quota managers).
pub const QUOTA_NAMES: [&str; 3] = ["produce", "fetch", "request"];

thread_local! {
    static COUNTERS: RefCell<ShardCounters> = RefCell::new(ShardCounters::default());
    /// Apart from [`COUNTERS`]: a scrape copies only the APIs seen.
    static REQUESTS: RefCell<RequestCounters> = RefCell::new(RequestCounters::default());
}

/// Counts a handled request: the time from its last byte read to its
/// handler starting (`queue`) and the handler's (`handle`); `ok`:
/// answered, not a closed connection.
pub fn request(api: i16, version: i16, queue: Duration, handle: Duration, ok: bool) {
    REQUESTS.with(|r| r.borrow_mut().handled(api, version, queue, handle, ok));
}

/// Counts an answer written, `send` after it was ready.
pub fn response_sent(api: i16, send: Duration) {
    REQUESTS.with(|r| r.borrow_mut().sent(api, send));
}

/// Counts an acks=all produce's wait for its in-sync replicas.
pub fn acks_all_waited(took: Duration) {
    COUNTERS.with(|c| c.borrow_mut().acks_all_wait.observe(took));
}

/// Counts one fdatasync of a partition's files.
pub fn fsynced(took: Duration) {
    COUNTERS.with(|c| c.borrow_mut().fsync.observe(took));
}

/// Counts an ISR change the controller accepted.
pub fn isr_changed(shrink: bool) {
    COUNTERS.with(|c| {
        let mut c = c.borrow_mut();
        if shrink {
            c.isr_shrinks += 1;
        } else {
            c.isr_expands += 1;
        }
    });
}

/// Counts a response throttled for quota `key` (nothing when `throttle`
/// is zero).
pub fn throttled(key: crate::quota::entity::QuotaKey, throttle: Duration) {
    if throttle.is_zero() {
        return;
    }
    let i = crate::quota::entity::QuotaKey::ALL
        .iter()
        .position(|k| *k == key)
        .unwrap_or(0);
    COUNTERS.with(|c| {
        let mut c = c.borrow_mut();
        c.quota_throttled[i] += 1;
        c.quota_throttle_ms[i] += throttle.as_millis() as u64;
    });
}

/// Counts how long a fetch stayed parked for data (`replica`: a follower's).
pub fn fetch_waited(replica: bool, took: Duration) {
    COUNTERS.with(|c| {
        let mut c = c.borrow_mut();
        if replica {
            c.fetch_wait_replica.observe(took);
        } else {
            c.fetch_wait_consumer.observe(took);
        }
    });
}

/// What a partition counts itself: bytes and records appended by
/// producers, bytes and records read by consumers (records read counted as
/// the offsets the batches sent span, which includes a compacted log's
/// gaps and transaction markers: counting them one by one would mean
/// reading every batch a fetch sends from the page cache).
#[derive(Debug)]
pub struct PartitionCounters {
    pub bytes_in: std::cell::Cell<u64>,
    pub messages_in: std::cell::Cell<u64>,
    pub bytes_out: std::cell::Cell<u64>,
    pub messages_out: std::cell::Cell<u64>,
    /// The last leader epoch this broker led the partition on.
    led_epoch: std::cell::Cell<i32>,
    /// Appends the log refused with a storage error (a full disk, a
    /// failing one).
    pub append_failures: std::cell::Cell<u64>,
    /// Whether the last append failed (see `Partition::append_failed`).
    pub append_failing: std::cell::Cell<bool>,
    /// Whether it failed for lack of space.
    pub no_space: std::cell::Cell<bool>,
}

impl Default for PartitionCounters {
    fn default() -> PartitionCounters {
        PartitionCounters {
            bytes_in: Default::default(),
            messages_in: Default::default(),
            bytes_out: Default::default(),
            messages_out: Default::default(),
            led_epoch: std::cell::Cell::new(-1),
            append_failures: Default::default(),
            append_failing: Default::default(),
            no_space: Default::default(),
        }
    }
}

impl PartitionCounters {
    /// The metadata makes this broker the leader on `epoch`: a new
    /// election won is counted once.
    pub fn leading(&self, epoch: i32) {
        if epoch > self.led_epoch.get() {
            self.led_epoch.set(epoch);
            COUNTERS.with(|c| c.borrow_mut().leader_elections += 1);
        }
    }

    pub fn appended(&self, bytes: usize, records: u64) {
        self.bytes_in.set(self.bytes_in.get() + bytes as u64);
        self.messages_in.set(self.messages_in.get() + records);
    }

    pub fn read(&self, read: &crate::storage::log::ReadResult) {
        self.bytes_out.set(self.bytes_out.get() + read.bytes as u64);
        self.messages_out
            .set(self.messages_out.get() + read.offsets);
    }
}

/// One partition replica held by a shard, at scrape time.
#[derive(Clone, Debug)]
pub struct PartitionSample {
    pub topic: String,
    pub partition: i32,
    pub leader: bool,
    pub bytes_in: u64,
    pub messages_in: u64,
    pub bytes_out: u64,
    pub messages_out: u64,
    pub size_bytes: u64,
    pub segments: usize,
    pub log_start: i64,
    pub log_end: i64,
    pub high_watermark: i64,
    /// Appends refused with a storage error, since the broker started.
    pub append_failures: u64,
    /// Whether appends fail for lack of space now (until one succeeds).
    pub no_space: bool,
}

/// A consumer group coordinated by a shard, at scrape time.
#[derive(Clone, Debug)]
pub struct GroupSample {
    pub group: String,
    pub state: String,
    pub members: usize,
    /// Committed offsets: (topic, partition, offset).
    pub committed: Vec<(String, i32, i64)>,
}

/// Everything one shard reports to a scrape.
#[derive(Clone, Debug)]
pub struct ShardSnapshot {
    pub shard: usize,
    pub counters: ShardCounters,
    /// Requests per API key that has any.
    pub apis: Vec<(i16, ApiCounters)>,
    /// Connections per listener.
    pub listeners: Vec<ListenerSample>,
    pub partitions: Vec<PartitionSample>,
    pub groups: Vec<GroupSample>,
    pub connections: usize,
    /// Partitions offline for a storage failure: failed to open (a
    /// corrupt segment, an I/O error) or to sync since.
    pub storage_offline: usize,
    pub cross_shard_jobs: u64,
    pub sendfile_bytes: u64,
    pub copied_bytes: u64,
    /// Fetch bytes read from the page cache and encrypted (TLS listeners).
    pub tls_bytes: u64,
    /// Time the shard's executor spent running tasks.
    pub busy: Duration,
}

/// This shard's part of a scrape.
pub fn snapshot(shard: &Rc<Shard>) -> ShardSnapshot {
    let partitions = shard
        .partitions()
        .iter()
        .map(|p| p.metrics_sample(shard))
        .collect();
    ShardSnapshot {
        shard: shard.id,
        counters: COUNTERS.with(|c| c.borrow().clone()),
        apis: REQUESTS.with(|r| r.borrow().seen()),
        listeners: listeners::samples(),
        partitions,
        groups: shard.groups.metrics_samples(),
        connections: shard.open_connections.borrow().len(),
        storage_offline: shard.storage_offline_count(),
        cross_shard_jobs: shard.stats.cross_shard_jobs.get(),
        sendfile_bytes: shard.stats.sendfile_bytes.get(),
        copied_bytes: shard.stats.copied_bytes.get(),
        tls_bytes: shard.stats.tls_bytes.get(),
        busy: glommio::executor().executor_stats().total_runtime(),
    }
}

/// Cluster-level state as this broker sees it (from shard 0).
#[derive(Clone, Debug, Default)]
pub struct ClusterSample {
    /// Partitions this broker leads whose ISR lacks a replica.
    pub under_replicated: usize,
    /// Partitions this broker leads with fewer in sync than
    /// `min.insync.replicas`.
    pub under_min_isr: usize,
    /// Partitions with no leader, in this broker's metadata.
    pub offline: usize,
    /// Partitions this broker leads.
    pub leaders: usize,
    /// Whether this broker is the active controller.
    pub controller_active: bool,
    /// The Raft term and committed index, on voters.
    pub controller: Option<(u64, u64)>,
    /// The metadata log since its last snapshot (entries, bytes), on
    /// voters.
    pub metadata_log: Option<(u64, u64)>,
}

/// Reads the cluster-level state on shard 0.
pub fn cluster_sample(shard: &Rc<Shard>) -> ClusterSample {
    let snapshot = shard.metadata();
    let me = crate::replication::NodeId(snapshot.node_id);
    let mut sample = ClusterSample::default();
    for t in snapshot.topics.values() {
        for p in &t.replicas {
            match p.leader {
                None => sample.offline += 1,
                Some(l) if l == me => {
                    sample.leaders += 1;
                    if p.isr.len() < p.replicas.len() {
                        sample.under_replicated += 1;
                    }
                    if p.isr.len() < t.config.min_insync_replicas {
                        sample.under_min_isr += 1;
                    }
                }
                Some(_) => {}
            }
        }
    }
    let controller = shard
        .cluster
        .borrow()
        .as_ref()
        .and_then(|n| n.controller.clone());
    if let Some(controller) = controller {
        sample.controller_active = controller.quorum.is_current();
        sample.controller = Some((
            controller.quorum.term(),
            controller.quorum.committed_index(),
        ));
        sample.metadata_log = Some(controller.quorum.log_size());
    }
    sample
}

/// Gathers every shard's snapshot (shard 0 runs this).
pub async fn gather(shard: &Rc<Shard>) -> (Vec<ShardSnapshot>, ClusterSample) {
    let mut shards = Vec::with_capacity(shard.count);
    for target in 0..shard.count {
        if let Ok(s) = shard
            .invoke_on(target, |s| async move { snapshot(&s) })
            .await
        {
            shards.push(s);
        }
    }
    (shards, cluster_sample(shard))
}

/// Process-wide figures from /proc: CPU seconds, resident bytes, open
/// file descriptors.
#[derive(Clone, Debug, Default)]
pub struct ProcessSample {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub open_fds: usize,
    pub start_time_seconds: f64,
}

pub fn process_sample() -> ProcessSample {
    // SAFETY: sysconf with constant arguments has no preconditions.
    let (ticks, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK).max(1) as f64,
            libc::sysconf(libc::_SC_PAGESIZE).max(1) as u64,
        )
    };
    let mut sample = ProcessSample::default();
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // Fields after the command name, which is in parentheses.
        if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
            let f: Vec<&str> = rest.split_whitespace().collect();
            // utime and stime are fields 14 and 15 of stat(5); `f` starts
            // at field 3.
            let n = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            sample.cpu_seconds = (n(11) + n(12)) / ticks;
            let boot = boot_time_seconds();
            sample.start_time_seconds = boot + n(19) / ticks;
        }
    }
    if let Ok(statm) = std::fs::read_to_string("/proc/self/statm") {
        let resident = statm
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        sample.resident_bytes = resident * page;
    }
    sample.open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count());
    sample
}

fn boot_time_seconds() -> f64 {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("btime "))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

/// Lag per (group, topic, partition): the high watermark minus the
/// committed offset, where this broker leads the partition.
pub fn group_lags(shards: &[ShardSnapshot]) -> Vec<(String, String, i32, i64)> {
    let mut hw: HashMap<(&str, i32), i64> = HashMap::new();
    for s in shards {
        for p in s.partitions.iter().filter(|p| p.leader) {
            hw.insert((p.topic.as_str(), p.partition), p.high_watermark);
        }
    }
    let mut lags = Vec::new();
    for s in shards {
        for g in &s.groups {
            for (topic, partition, offset) in &g.committed {
                if let Some(end) = hw.get(&(topic.as_str(), *partition)) {
                    lags.push((
                        g.group.clone(),
                        topic.clone(),
                        *partition,
                        (end - offset).max(0),
                    ));
                }
            }
        }
    }
    lags.sort();
    lags
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_put_each_observation_in_its_bucket_and_add_up() {
        let mut h = Histogram::default();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(60));
        assert_eq!(h.counts[0], 1);
        assert_eq!(h.counts[5], 1, "3 ms lands in the 5 ms bucket");
        h.observe(Duration::from_micros(250));
        assert_eq!(h.counts[LATENCY_BUCKET_NANOS.len()], 1, "+Inf");
        assert_eq!(h.counts[1], 1, "a bound is in its own bucket (le)");
        let mut sum = h.clone();
        sum.add(&h);
        assert_eq!(sum.count(), 8);
        assert!((sum.sum_seconds() - 2.0 * 60.0033).abs() < 1e-9);
    }

    #[test]
    fn process_figures_come_from_proc() {
        let p = process_sample();
        assert!(p.resident_bytes > 0);
        assert!(p.open_fds > 0);
        assert!(p.start_time_seconds > 1.0e9);
    }
}
