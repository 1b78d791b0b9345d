//! Consumer groups under the consumer group protocol (KIP-848): the
//! coordinator, not a member, computes the assignment.
//!
//! Every member heartbeats (ConsumerGroupHeartbeat) with its member
//! epoch, its subscription and the partitions it owns. The group has an
//! epoch bumped whenever what the assignment depends on changes (a member
//! joins or leaves, a subscription or the server assignor changes, a
//! subscribed topic appears or grows); the target assignment is then
//! recomputed by a server-side assignor ([`assignor`]) and each member
//! moves towards its target on its own heartbeats ([`reconcile`]): it
//! first gives up what is no longer its own, keeping its epoch, and only
//! then gets the new epoch and the partitions no other member still
//! owns. So no partition ever has two owners, and a member's epoch tells
//! its offset commits apart from a fenced predecessor's.
//!
//! [`state`] is the group as a pure state machine (time comes in as
//! `now_ms`, the cluster's topics as [`Topics`]); [`service`] is the
//! shell on the coordinator: it runs requests on the owner shard, stores
//! the group epoch in `__consumer_offsets` and runs session timers.

pub mod assignor;
pub mod reconcile;
pub mod records;
pub mod service;
pub mod state;

use std::collections::{BTreeMap, BTreeSet};
use uuid::Uuid;

/// Partitions by topic id: an assignment, or what a member owns.
pub type Assignment = BTreeMap<Uuid, BTreeSet<i32>>;

/// The topics a group can subscribe to: name → (id, partition count).
pub type Topics = BTreeMap<String, (Uuid, i32)>;

/// Most topic-partitions in one assignment, owned set or group: bounds
/// what a heartbeat may make the coordinator hold per member.
pub const PARTITIONS_MAX: usize = 1 << 20;

/// Most members of one consumer group (Kafka's `group.consumer.max.size`
/// is unbounded by default; a bound keeps the per-heartbeat scans of the
/// group's members short).
pub const MEMBERS_MAX: usize = 10_000;

/// Longest subscription regex accepted, in bytes.
pub const REGEX_LEN_MAX: usize = 4_096;

/// Settings of consumer-protocol groups, from the broker config.
#[derive(Clone, Debug)]
pub struct ConsumerConfig {
    /// `group.consumer.session.timeout.ms`.
    pub session_timeout_ms: i32,
    /// `group.consumer.heartbeat.interval.ms`.
    pub heartbeat_interval_ms: i32,
    /// `group.consumer.assignors`; the first is the default.
    pub assignors: Vec<assignor::AssignorKind>,
    /// `group.consumer.migration.policy`.
    pub migration: MigrationPolicy,
}

/// `group.consumer.migration.policy`: which online conversions of a group
/// with members are allowed. Empty groups convert either way whatever it
/// says, as in Kafka.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MigrationPolicy {
    /// Both ways (Kafka 4's default).
    Bidirectional,
    /// Classic to consumer only.
    Upgrade,
    /// Consumer to classic only.
    Downgrade,
    Disabled,
}

impl MigrationPolicy {
    /// The names Kafka accepts, in any case.
    pub const NAMES: [&'static str; 4] = ["bidirectional", "upgrade", "downgrade", "disabled"];

    pub fn parse(s: &str) -> Option<MigrationPolicy> {
        match s.trim().to_ascii_lowercase().as_str() {
            "bidirectional" => Some(MigrationPolicy::Bidirectional),
            "upgrade" => Some(MigrationPolicy::Upgrade),
            "downgrade" => Some(MigrationPolicy::Downgrade),
            "disabled" => Some(MigrationPolicy::Disabled),
            _ => None,
        }
    }

    /// Whether a classic group with members may become a consumer group.
    pub fn upgrades(self) -> bool {
        matches!(
            self,
            MigrationPolicy::Bidirectional | MigrationPolicy::Upgrade
        )
    }

    /// Whether a consumer group left with classic members only may become
    /// a classic group.
    pub fn downgrades(self) -> bool {
        matches!(
            self,
            MigrationPolicy::Bidirectional | MigrationPolicy::Downgrade
        )
    }
}

impl Default for ConsumerConfig {
    fn default() -> ConsumerConfig {
        ConsumerConfig {
            session_timeout_ms: 45_000,
            heartbeat_interval_ms: 5_000,
            assignors: vec![
                assignor::AssignorKind::Uniform,
                assignor::AssignorKind::Range,
            ],
            migration: MigrationPolicy::Bidirectional,
        }
    }
}

/// Number of topic-partitions in an assignment.
pub fn count(a: &Assignment) -> usize {
    a.values().map(BTreeSet::len).sum()
}

/// Whether `a` holds partition `p` of topic `t`.
pub fn holds(a: &Assignment, t: Uuid, p: i32) -> bool {
    a.get(&t).is_some_and(|ps| ps.contains(&p))
}

/// `a` without empty topics.
pub fn normalized(mut a: Assignment) -> Assignment {
    a.retain(|_, ps| !ps.is_empty());
    a
}

/// `a ∩ b`.
pub fn intersection(a: &Assignment, b: &Assignment) -> Assignment {
    let mut out = Assignment::new();
    for (t, ps) in a {
        if let Some(qs) = b.get(t) {
            let common: BTreeSet<i32> = ps.intersection(qs).copied().collect();
            if !common.is_empty() {
                out.insert(*t, common);
            }
        }
    }
    out
}

/// `a \ b`.
pub fn difference(a: &Assignment, b: &Assignment) -> Assignment {
    let mut out = Assignment::new();
    for (t, ps) in a {
        let rest: BTreeSet<i32> = match b.get(t) {
            Some(qs) => ps.difference(qs).copied().collect(),
            None => ps.clone(),
        };
        if !rest.is_empty() {
            out.insert(*t, rest);
        }
    }
    out
}

/// `a ∪ b`.
pub fn union(a: &Assignment, b: &Assignment) -> Assignment {
    let mut out = a.clone();
    for (t, ps) in b {
        out.entry(*t).or_default().extend(ps.iter().copied());
    }
    normalized(out)
}

/// Whether every partition of `a` is in `b`.
pub fn is_subset(a: &Assignment, b: &Assignment) -> bool {
    a.iter()
        .all(|(t, ps)| ps.is_empty() || b.get(t).is_some_and(|qs| ps.is_subset(qs)))
}
