//! Partition replication, the Kafka way, as pure state machines.
//!
//! A partition has a fixed list of replicas on different brokers. One of
//! them is the *leader* for a *leader epoch*, a number the controller
//! bumps at every leader change; the others are *followers* that copy
//! the leader's log by sending it Fetch requests, exactly as consumers
//! do but with their replica id. A Fetch names the offset the follower
//! wants next, which is also its log end offset (LEO), so the leader
//! learns every follower's progress for free.
//!
//! The *in-sync replica set* (ISR) is the leader plus the followers that
//! have kept up: each one has reached the leader's LEO within the last
//! `replica.lag.time.max.ms`. The leader's *high watermark* (HW) is the
//! smallest LEO over the ISR; records below it are on every ISR member
//! and are *committed*: consumers see only those, and an acks=all
//! produce is answered once the HW passes its last record. The leader
//! refuses acks=all produce outright while the ISR is smaller than
//! `min.insync.replicas`, so "committed" means "on at least that many
//! brokers".
//!
//! The ISR is not the leader's to change alone. It *proposes* a shrink
//! (a follower fell behind) or an expansion (a follower caught up to the
//! HW) to the controller, which commits it in the cluster metadata log
//! (Kafka's AlterPartition). Until the answer arrives the leader computes
//! the HW over the union of the old and the proposed ISR, and checks
//! `min.insync.replicas` against the committed one: the controller may
//! elect any member of its ISR, so the HW must never outrun one of them.
//!
//! When a leader dies the controller elects a live member of the ISR
//! (or, with unclean election allowed, any live replica, losing what
//! only the ISR had). The new leader first writes its epoch into its
//! leader-epoch cache at its LEO. Followers may hold a *divergent tail*:
//! records an old leader appended that never became committed. Before
//! fetching, a follower asks the new leader, through
//! OffsetForLeaderEpoch, where its own newest epoch ends in the leader's
//! log, and truncates there (KIP-101); if the leader never knew that
//! epoch it truncates to the end of the epoch below and asks again
//! (KIP-279), so two logs that agree on an epoch also agree on its
//! records. A follower's HW is the leader's, capped by its own LEO.
//!
//! [`log`] is a replica's log reduced to what this needs (the epoch
//! cache, LEO, HW); [`state`] is one broker's replica of one partition,
//! leader or follower; [`controller`] is the controller's part: the
//! partition's leader, epochs and ISR, elections and AlterPartition.
//! Nothing here does I/O or reads a clock: time comes in as `now_ms`,
//! requests come in as values and answers go out as values, so a seeded
//! simulation drives whole clusters of them (see `state_tests.rs`).

pub mod controller;
pub mod log;
pub mod state;

use std::fmt;

/// A broker's id in the cluster (Kafka's `node.id` / `broker.id`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub i32);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The settings replication reads, with Kafka's names.
#[derive(Clone, Copy, Debug)]
pub struct ReplicationConfig {
    /// `replica.lag.time.max.ms`: how long a follower may go without
    /// reaching the leader's log end before it leaves the ISR.
    pub replica_lag_time_max_ms: i64,
    /// `min.insync.replicas`: the smallest ISR that accepts acks=all.
    pub min_insync_replicas: usize,
    /// Most records one Fetch response carries to a follower.
    pub fetch_records_max: u32,
    /// `unclean.leader.election.enable`: a replica outside the ISR may be
    /// elected, so a follower may have to cut committed records.
    pub unclean_leader_election: bool,
}

impl Default for ReplicationConfig {
    /// Kafka's defaults: 30 s lag, min.insync.replicas 1.
    fn default() -> ReplicationConfig {
        ReplicationConfig {
            unclean_leader_election: false,
            replica_lag_time_max_ms: 30_000,
            min_insync_replicas: 1,
            fetch_records_max: 1_000,
        }
    }
}
