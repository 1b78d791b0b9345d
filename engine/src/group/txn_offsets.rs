//! Offsets committed inside a transaction (TxnOffsetCommit).
//!
//! A transactional producer that consumed what it transforms commits its
//! consumer's offsets with TxnOffsetCommit. They are appended, as Kafka
//! does, to the group's `__consumer_offsets` partition in a TRANSACTIONAL
//! batch carrying the producer's id and epoch (and no sequence, as a
//! coordinator's own writes have none), and kept here as that producer's
//! pending offsets: OffsetFetch does not see them (with `require_stable`
//! it answers UNSTABLE_OFFSET_COMMIT for those partitions) until the
//! transaction coordinator's marker reaches the partition. A COMMIT
//! marker makes them the group's committed offsets, an ABORT drops them.
//!
//! Replay follows the log the same way: a transactional batch's offsets
//! are pending until the control batch of their producer is met; what is
//! still pending at the log end stays pending, because the coordinator
//! will send the marker (it retries until every partition has it).
//!
//! A committed pending offset replaces the group's offset only if it was
//! written later in the log, as Kafka keeps "the most recent" when a
//! group mixes plain and transactional commits: compare log offsets, not
//! the order of the markers.

use super::coordinator::{CommitPartition, Coordinator};
use super::records::Key;
use super::state::{Committed, Group};
use crate::shard::partition::now_ms;
use crate::shard::Shard;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

/// A TxnOffsetCommit, decoded.
#[derive(Clone, Debug, Default)]
pub struct TxnCommitRequest {
    pub transactional_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// v3+: the committing consumer's member, instance and generation
    /// (KIP-447); -1 and empty before, which no check refuses.
    pub member_id: String,
    pub instance_id: Option<String>,
    pub generation: i32,
    pub topics: Vec<(String, Vec<CommitPartition>)>,
    /// The request version: v4+ clients know TRANSACTION_ABORTABLE.
    pub version: i16,
}

/// One group's pending offsets, by (topic, partition).
pub type GroupOffsets = BTreeMap<(String, i32), Committed>;

/// What one producer's open transaction committed, per group.
#[derive(Debug, Default)]
struct Producer {
    epoch: i16,
    groups: HashMap<String, GroupOffsets>,
}

/// Pending transactional offsets of every group on this shard, by
/// producer id.
#[derive(Debug, Default)]
pub struct PendingOffsets {
    producers: HashMap<i64, Producer>,
}

impl PendingOffsets {
    /// The epoch of the producer's pending offsets, if it has any.
    pub fn epoch(&self, producer_id: i64) -> Option<i16> {
        self.producers.get(&producer_id).map(|p| p.epoch)
    }

    /// Records a pending offset; a later write of the same partition in
    /// the same transaction replaces it.
    pub fn add(
        &mut self,
        producer_id: i64,
        epoch: i16,
        group: &str,
        topic: &str,
        partition: i32,
        c: Committed,
    ) {
        let p = self.producers.entry(producer_id).or_default();
        p.epoch = p.epoch.max(epoch);
        p.groups
            .entry(group.to_string())
            .or_default()
            .insert((topic.to_string(), partition), c);
    }

    /// Whether any open transaction holds an offset of this partition.
    pub fn is_pending(&self, group: &str, topic: &str, partition: i32) -> bool {
        let key = (topic.to_string(), partition);
        self.producers
            .values()
            .any(|p| p.groups.get(group).is_some_and(|o| o.contains_key(&key)))
    }

    /// Every (topic, partition) of `group` some open transaction holds.
    pub fn partitions_of(&self, group: &str) -> Vec<(String, i32)> {
        let mut out: Vec<(String, i32)> = self
            .producers
            .values()
            .filter_map(|p| p.groups.get(group))
            .flat_map(|o| o.keys().cloned())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Whether a group `picked` chooses has pending offsets.
    pub fn any(&self, picked: impl Fn(&str) -> bool) -> bool {
        self.producers
            .values()
            .any(|p| p.groups.keys().any(|g| picked(g)))
    }

    /// Removes and returns the producer's pending offsets of the groups
    /// `picked` chooses (those of one offsets partition).
    pub fn take(
        &mut self,
        producer_id: i64,
        picked: impl Fn(&str) -> bool,
    ) -> Vec<(String, GroupOffsets)> {
        let Some(p) = self.producers.get_mut(&producer_id) else {
            return Vec::new();
        };
        let ids: Vec<String> = p.groups.keys().filter(|g| picked(g)).cloned().collect();
        let taken = ids
            .into_iter()
            .filter_map(|g| p.groups.remove(&g).map(|o| (g, o)))
            .collect();
        if p.groups.is_empty() {
            self.producers.remove(&producer_id);
        }
        taken
    }

    /// Forgets the pending offsets of the groups `picked` chooses (a
    /// group deleted, or an offsets partition given up).
    pub fn forget(&mut self, picked: impl Fn(&str) -> bool) {
        for p in self.producers.values_mut() {
            p.groups.retain(|g, _| !picked(g));
        }
        self.producers.retain(|_, p| !p.groups.is_empty());
    }
}

/// Makes committed pending offsets the groups' own; a group gone
/// meanwhile (only pending offsets keep none alive) comes back as a
/// group that only stores offsets.
pub fn apply_committed(
    groups: &mut HashMap<String, Group>,
    taken: Vec<(String, GroupOffsets)>,
    now: i64,
) {
    for (id, offsets) in taken {
        let g = groups
            .entry(id.clone())
            .or_insert_with(|| Group::new(&id, now));
        for ((topic, partition), c) in offsets {
            g.apply_offset(&topic, partition, c);
        }
    }
}

/// Replays one record of a transactional batch: an offset becomes
/// pending; anything else a transaction should not carry is ignored.
pub fn replay_pending(
    pending: &mut PendingOffsets,
    producer: (i64, i16),
    log_offset: i64,
    key: &[u8],
    value: Option<&[u8]>,
) -> Result<(), sluice_protocol::primitives::DecodeError> {
    let (
        Key::Offset {
            group,
            topic,
            partition,
        },
        Some(v),
    ) = (Key::decode(key)?, value)
    else {
        return Ok(());
    };
    let value = super::records::OffsetValue::decode(v)?;
    let c = Committed { value, log_offset };
    pending.add(producer.0, producer.1, &group, &topic, partition, c);
    Ok(())
}

/// The control record's type in a control batch: its key is
/// `version: i16 | type: i16`, type 0 ABORT and 1 COMMIT. `None` for
/// any other control record (Kafka's leader-change and snapshot records).
pub fn marker_commits(key: &[u8]) -> Option<bool> {
    let kind = i16::from_be_bytes(key.get(2..4)?.try_into().ok()?);
    match kind {
        0 => Some(false),
        1 => Some(true),
        _ => None,
    }
}

impl Coordinator {
    /// A transaction marker was appended to offsets partition
    /// `offsets_partition` for `producer_id`: on COMMIT its pending
    /// offsets of that partition's groups become committed, on ABORT
    /// they are dropped. Called by the WriteTxnMarkers handler once the
    /// marker is in the log, so memory follows what a replay would find.
    pub fn txn_marker(
        &self,
        shard: &Rc<Shard>,
        offsets_partition: i32,
        producer_id: i64,
        commit: bool,
    ) {
        if shard
            .partition(super::OFFSETS_TOPIC, offsets_partition)
            .is_none()
        {
            tracing::warn!(
                offsets_partition,
                producer_id,
                "transaction marker for an offsets partition this shard does not hold"
            );
            return;
        }
        let taken = self
            .pending_txn
            .borrow_mut()
            .take(producer_id, |g| self.partition_of(g) == offsets_partition);
        if commit {
            apply_committed(&mut self.groups.borrow_mut(), taken, now_ms());
        }
    }

    /// Whether OffsetFetch with `require_stable` must answer
    /// UNSTABLE_OFFSET_COMMIT for this partition.
    pub fn is_unstable(&self, group_id: &str, topic: &str, partition: i32) -> bool {
        self.pending_txn
            .borrow()
            .is_pending(group_id, topic, partition)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::records::OffsetValue;

    fn at(offset: i64, log_offset: i64) -> Committed {
        Committed {
            value: OffsetValue {
                offset,
                leader_epoch: -1,
                metadata: String::new(),
                commit_timestamp_ms: 0,
            },
            log_offset,
        }
    }

    fn committed(groups: &HashMap<String, Group>, g: &str, t: &str, p: i32) -> Option<i64> {
        groups
            .get(g)
            .and_then(|g| g.offsets.get(&(t.to_string(), p)))
            .map(|c| c.value.offset)
    }

    #[test]
    fn a_commit_applies_one_producers_offsets_of_the_picked_groups_only() {
        let mut pending = PendingOffsets::default();
        pending.add(7, 0, "a", "t", 0, at(10, 100));
        pending.add(7, 0, "b", "t", 0, at(20, 101));
        pending.add(8, 0, "a", "t", 1, at(30, 102));
        assert!(pending.is_pending("a", "t", 0));
        assert!(pending.is_pending("a", "t", 1));
        assert!(!pending.is_pending("a", "t", 2));
        let mut groups = HashMap::new();
        let taken = pending.take(7, |g| g == "a");
        apply_committed(&mut groups, taken, 0);
        assert_eq!(committed(&groups, "a", "t", 0), Some(10));
        assert_eq!(committed(&groups, "a", "t", 1), None, "producer 8's stays");
        assert!(!pending.is_pending("a", "t", 0));
        assert!(pending.is_pending("b", "t", 0), "another partition's group");
        assert!(pending.is_pending("a", "t", 1));
        // An abort drops what it takes.
        let dropped = pending.take(8, |_| true);
        assert_eq!(dropped.len(), 1);
        assert!(!pending.is_pending("a", "t", 1));
        assert!(pending.take(8, |_| true).is_empty());
    }

    #[test]
    fn a_committed_offset_written_earlier_than_the_groups_own_loses() {
        let mut groups = HashMap::new();
        let mut g = Group::new("a", 0);
        g.apply_offset("t", 0, at(50, 200));
        groups.insert("a".to_string(), g);
        apply_committed(
            &mut groups,
            vec![(
                "a".to_string(),
                [(("t".to_string(), 0), at(40, 150))].into(),
            )],
            0,
        );
        assert_eq!(committed(&groups, "a", "t", 0), Some(50));
        apply_committed(
            &mut groups,
            vec![(
                "a".to_string(),
                [(("t".to_string(), 0), at(60, 250))].into(),
            )],
            0,
        );
        assert_eq!(committed(&groups, "a", "t", 0), Some(60));
    }

    #[test]
    fn forgetting_a_group_keeps_other_groups_pending() {
        let mut pending = PendingOffsets::default();
        pending.add(7, 1, "a", "t", 0, at(1, 1));
        pending.add(7, 1, "b", "t", 0, at(1, 2));
        assert_eq!(pending.partitions_of("a"), vec![("t".to_string(), 0)]);
        pending.forget(|g| g == "a");
        assert!(!pending.any(|g| g == "a"));
        assert!(pending.any(|g| g == "b"));
        assert_eq!(pending.epoch(7), Some(1));
        pending.forget(|_| true);
        assert_eq!(pending.epoch(7), None);
    }

    #[test]
    fn replayed_transactional_offsets_are_pending_and_markers_are_read() {
        let mut pending = PendingOffsets::default();
        let key = Key::Offset {
            group: "a".into(),
            topic: "t".into(),
            partition: 3,
        };
        let value = at(9, 0).value.encode();
        replay_pending(&mut pending, (5, 2), 77, &key.encode(), Some(&value)).unwrap();
        assert!(pending.is_pending("a", "t", 3));
        assert_eq!(pending.epoch(5), Some(2));
        // A tombstone in a transaction is not an offset to commit.
        replay_pending(&mut pending, (6, 0), 78, &key.encode(), None).unwrap();
        assert_eq!(pending.epoch(6), None);
        assert!(replay_pending(&mut pending, (6, 0), 79, b"\x00", None).is_err());
        assert_eq!(marker_commits(&[0, 0, 0, 1]), Some(true));
        assert_eq!(marker_commits(&[0, 0, 0, 0]), Some(false));
        assert_eq!(marker_commits(&[0, 0, 0, 2]), None);
        assert_eq!(marker_commits(&[0, 0]), None);
    }
}
