//! The coordinator's side of consumer-protocol groups: runs heartbeats
//! against the shard's groups, stores each group epoch change in
//! `__consumer_offsets`, and runs session timers. Committed offsets of
//! these groups live with the classic groups' (one offsets store per
//! group id), so commits, fetches, expiry and compaction stay in one
//! place.

use super::records::{AssignmentRecord, MemberRecord};
use super::state::classic::CONSUMER_PROTOCOL_TYPE;
use super::state::{ConsumerGroup, ConsumerGroupDescription, HeartbeatRequest, HeartbeatResult};
use super::Topics;
use crate::group::coordinator::{Coordinator, Record};
use crate::group::records::{encode_consumer_group_epoch, GroupValue, Key};
use crate::group::state::{Group, GroupState, JoinRequest, JoinResult, SyncRequest, SyncResult};
use crate::shard::partition::now_ms;
use crate::shard::Shard;
use sluice_protocol::ErrorCode;
use std::rc::Rc;

/// What left a consumer group with classic members only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Downgrade {
    /// The last consumer-protocol member left or was fenced.
    Leave,
    /// A classic static member took the last one's place.
    Replacement,
}

/// The record of a consumer group's epoch (`None`: the group is gone).
pub fn epoch_record(group_id: &str, epoch: Option<i32>) -> Record {
    let key = Key::ConsumerGroup {
        group: group_id.to_string(),
    };
    (key.encode(), epoch.map(encode_consumer_group_epoch))
}

/// A member's two records (`None`: their tombstones).
pub fn member_records(
    group_id: &str,
    member: &str,
    stored: Option<&(MemberRecord, AssignmentRecord)>,
) -> [Record; 2] {
    let (group, member) = (group_id.to_string(), member.to_string());
    let meta = Key::ConsumerMember {
        group: group.clone(),
        member: member.clone(),
    };
    let assignment = Key::ConsumerAssignment { group, member };
    [
        (meta.encode(), stored.map(|(m, _)| m.encode())),
        (assignment.encode(), stored.map(|(_, a)| a.encode())),
    ]
}

/// The topics consumer groups may subscribe to: every non-internal topic.
pub fn topics(shard: &Shard) -> Topics {
    shard
        .metadata()
        .topics
        .values()
        .filter(|t| !crate::metadata::is_internal(&t.name))
        .map(|t| (t.name.clone(), (t.id, t.partitions)))
        .collect()
}

impl Coordinator {
    /// ConsumerGroupHeartbeat.
    pub fn consumer_heartbeat(
        &self,
        shard: &Rc<Shard>,
        group_id: &str,
        req: HeartbeatRequest,
    ) -> HeartbeatResult {
        if group_id.is_empty() {
            return HeartbeatResult::error(ErrorCode::InvalidGroupId, "GroupId can't be empty.");
        }
        let creating = req.member_epoch == 0;
        let mut prefix = Vec::new();
        if !self.consumers.borrow().contains_key(group_id) {
            if !creating {
                // As Kafka answers: the Java client gives up, librdkafka
                // rejoins. Groups with members are never dropped, so
                // this is a member of a group deleted or never created.
                return HeartbeatResult::error(
                    ErrorCode::GroupIdNotFound,
                    format!("Consumer group {group_id} not found."),
                );
            }
            let (g, tombstone) = match self.take_over_classic(shard, group_id) {
                Ok(taken) => taken,
                Err(r) => return r,
            };
            let g = g
                .unwrap_or_else(|| ConsumerGroup::new(group_id, self.config.consumer.assignors[0]));
            self.consumers.borrow_mut().insert(group_id.to_string(), g);
            prefix.extend(tombstone);
        }
        let topics = topics(shard);
        let result = self
            .consumers
            .borrow_mut()
            .get_mut(group_id)
            .expect("present")
            .heartbeat(req, now_ms(), &topics, &self.config.consumer);
        self.store_consumer_changes(shard, group_id, prefix);
        result
    }

    /// A consumer-protocol member may found a group where no classic
    /// group is active: an Empty classic group becomes a consumer group
    /// and keeps its offsets, as in Kafka. A classic group with members
    /// becomes one too, its members with it (an online upgrade, see
    /// `classic.rs`), where `group.consumer.migration.policy` allows it
    /// and the group is a consumer's (protocol type `consumer`); else the
    /// heartbeat is refused, as Kafka refuses it. Returns the converted
    /// group, if any, and the classic group's tombstone to store first.
    fn take_over_classic(
        &self,
        shard: &Rc<Shard>,
        group_id: &str,
    ) -> Result<(Option<ConsumerGroup>, Option<Record>), HeartbeatResult> {
        let topics = topics(shard);
        let now = now_ms();
        let mut groups = self.groups.borrow_mut();
        let Some(g) = groups.get_mut(group_id) else {
            return Ok((None, None));
        };
        if g.protocol_type().is_none() {
            return Ok((None, None));
        }
        let mut converted = None;
        if g.state() != GroupState::Empty {
            let refused = |why: String| {
                tracing::info!(group = %group_id, "not upgrading a classic group: {why}");
                HeartbeatResult::error(
                    ErrorCode::GroupIdNotFound,
                    format!("Group {group_id} is not a consumer group."),
                )
            };
            if g.state() == GroupState::Dead {
                return Err(refused("it is being deleted".into()));
            }
            if !self.config.consumer.migration.upgrades() {
                return Err(refused("group.consumer.migration.policy forbids it".into()));
            }
            if g.protocol_type() != Some(CONSUMER_PROTOCOL_TYPE) {
                return Err(refused("its protocol type is not consumer".into()));
            }
            let c = ConsumerGroup::from_classic(g, &topics, now, &self.config.consumer)
                .map_err(refused)?;
            tracing::info!(
                group = %group_id,
                members = c.members().count(),
                generation = g.generation(),
                "upgrading a classic group to a consumer group"
            );
            converted = Some(c);
        }
        g.hand_over(now);
        drop(groups);
        // Parked JoinGroup and SyncGroup requests learn to rejoin.
        self.deliver(shard, group_id);
        let tombstone = crate::group::coordinator::group_record(group_id, None);
        Ok((converted, Some(tombstone)))
    }

    /// A classic JoinGroup to a consumer group with members: the member
    /// joins it as a classic member (see `classic.rs`); `None` when no
    /// such group holds the id.
    pub fn classic_join_consumer(
        &self,
        shard: &Rc<Shard>,
        group_id: &str,
        req: &JoinRequest,
    ) -> Option<JoinResult> {
        let replacing = {
            let consumers = self.consumers.borrow();
            let g = consumers.get(group_id)?;
            if g.is_empty() {
                return None;
            }
            g.replaces_consumer_member(&req.member_id, req.instance_id.as_deref())
        };
        let topics = topics(shard);
        let mut result = self.consumers.borrow_mut().get_mut(group_id)?.classic_join(
            req.clone(),
            now_ms(),
            &topics,
            &self.config.consumer,
        );
        let by = match replacing && result.error == ErrorCode::None {
            true => Downgrade::Replacement,
            false => Downgrade::Leave,
        };
        if let Some(value) = self.store_consumer_changes_by(shard, group_id, Vec::new(), by) {
            if by == Downgrade::Replacement {
                // The group is classic now and Stable: the new member
                // syncs at its generation, with its protocol.
                result.generation = value.generation;
                result.protocol = value.protocol;
            }
        }
        Some(result)
    }

    /// A classic SyncGroup to a consumer group: the member's assignment.
    pub fn classic_sync_consumer(
        &self,
        shard: &Rc<Shard>,
        group_id: &str,
        req: &SyncRequest,
    ) -> Option<SyncResult> {
        let topics = topics(shard);
        let mut consumers = self.consumers.borrow_mut();
        Some(
            consumers
                .get_mut(group_id)?
                .classic_sync(req, now_ms(), &topics),
        )
    }

    /// A classic Heartbeat to a consumer group.
    pub fn classic_heartbeat_consumer(
        &self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Option<ErrorCode> {
        let mut consumers = self.consumers.borrow_mut();
        let g = consumers.get_mut(group_id)?;
        Some(g.classic_heartbeat(member_id, instance_id, generation, now_ms()))
    }

    /// A classic LeaveGroup to a consumer group; one code per member.
    pub fn classic_leave_consumer(
        &self,
        shard: &Rc<Shard>,
        group_id: &str,
        members: &[(String, Option<String>)],
    ) -> Option<Vec<ErrorCode>> {
        let topics = topics(shard);
        let codes = {
            let mut consumers = self.consumers.borrow_mut();
            let g = consumers.get_mut(group_id)?;
            members
                .iter()
                .map(|(m, i)| g.classic_leave(m, i.as_deref(), &topics, &self.config.consumer))
                .collect()
        };
        self.store_consumer_changes(shard, group_id, Vec::new());
        Some(codes)
    }

    /// A classic JoinGroup for `group_id`: refused while a consumer group
    /// with members holds the id; an empty one is dropped so a classic
    /// group can take its place (its offsets stay).
    pub fn classic_join_allowed(&self, shard: &Rc<Shard>, group_id: &str) -> Result<(), ErrorCode> {
        let empty = match self.consumers.borrow().get(group_id) {
            None => return Ok(()),
            Some(g) => g.is_empty(),
        };
        if !empty {
            return Err(ErrorCode::GroupIdNotFound);
        }
        self.consumers.borrow_mut().remove(group_id);
        self.append_detached(shard, group_id, vec![epoch_record(group_id, None)]);
        Ok(())
    }

    /// Appends records in the background, logging a failure: for group
    /// metadata whose loss only costs a rejoin, never for offsets.
    fn append_detached(&self, shard: &Rc<Shard>, group_id: &str, records: Vec<Record>) {
        let (shard, id) = (Rc::clone(shard), group_id.to_string());
        glommio::spawn_local(async move {
            let c = &shard.groups;
            if let Err(e) = c.append(&shard, c.partition_of(&id), records).await {
                tracing::warn!(group = %id, error = ?e, "storing consumer group metadata failed");
            }
        })
        .detach();
    }

    /// Stores what changed, after `prefix`: the group epoch first, then
    /// each changed member's metadata and assignment (or their
    /// tombstones), in one record set. A group left with classic members
    /// only becomes a classic group, if the policy allows.
    fn store_consumer_changes(&self, shard: &Rc<Shard>, group_id: &str, prefix: Vec<Record>) {
        self.store_consumer_changes_by(shard, group_id, prefix, Downgrade::Leave);
    }

    /// As [`Coordinator::store_consumer_changes`], with what made the
    /// group all classic; returns the classic group's record if it
    /// became one.
    fn store_consumer_changes_by(
        &self,
        shard: &Rc<Shard>,
        group_id: &str,
        prefix: Vec<Record>,
        by: Downgrade,
    ) -> Option<GroupValue> {
        let changes = self
            .consumers
            .borrow_mut()
            .get_mut(group_id)
            .map(ConsumerGroup::take_changes)?;
        let mut records = prefix;
        records.extend(changes.epoch.map(|e| epoch_record(group_id, Some(e))));
        for (member, stored) in changes.members {
            records.extend(member_records(group_id, &member, stored.as_ref()));
        }
        let downgrade = self.config.consumer.migration.downgrades()
            && self
                .consumers
                .borrow()
                .get(group_id)
                .is_some_and(|g| g.may_downgrade(self.config.max_size));
        let mut classic = None;
        if let Some((value, converted)) = downgrade
            .then(|| self.downgrade(shard, group_id, by))
            .flatten()
        {
            records.extend(converted);
            classic = Some(value);
        }
        if !records.is_empty() {
            self.append_detached(shard, group_id, records);
        }
        classic
    }

    /// Turns a consumer group whose members all speak the classic
    /// protocol into a classic group, as Kafka does: after the last
    /// consumer-protocol member left (or was fenced) the group rebalances
    /// at once; after a classic static member took the last one's place
    /// it is Stable at the group epoch, every member keeping its target,
    /// and the new member's JoinGroup is answered at that generation.
    /// Returns the classic group's record and the records to store: the
    /// consumer group's tombstones, then that record.
    fn downgrade(
        &self,
        shard: &Rc<Shard>,
        group_id: &str,
        by: Downgrade,
    ) -> Option<(GroupValue, Vec<Record>)> {
        let topics = topics(shard);
        let now = now_ms();
        let c = self.consumers.borrow_mut().remove(group_id)?;
        let value = match by {
            Downgrade::Leave => c.to_classic(&topics, now),
            Downgrade::Replacement => c.to_stable_classic(&topics, now),
        };
        let mut records = Vec::new();
        for m in c.members() {
            records.extend(member_records(group_id, &m.id, None));
        }
        records.push(epoch_record(group_id, None));
        records.push(crate::group::coordinator::group_record(
            group_id,
            Some(&value),
        ));
        let mut groups = self.groups.borrow_mut();
        let g = groups
            .entry(group_id.to_string())
            .or_insert_with(|| Group::new(group_id, now));
        g.restore(&value, now);
        if by == Downgrade::Leave {
            g.rebalance(now, &self.config);
        }
        tracing::info!(
            group = %group_id,
            members = value.members.len(),
            generation = value.generation,
            by = ?by,
            "downgrading a consumer group to a classic group"
        );
        Some((value, records))
    }

    /// Session and revocation timers of every consumer group here.
    pub fn tick_consumer_groups(&self, shard: &Rc<Shard>, now: i64) {
        if self.consumers.borrow().is_empty() {
            return;
        }
        let topics = topics(shard);
        let ids: Vec<String> = self.consumers.borrow().keys().cloned().collect();
        for id in ids {
            if let Some(g) = self.consumers.borrow_mut().get_mut(&id) {
                g.tick(now, &topics, &self.config.consumer);
            }
            self.store_consumer_changes(shard, &id, Vec::new());
        }
    }

    /// Drops consumer groups left with no members and no offsets, with
    /// a tombstone for their epoch record, as Kafka cleans up groups at
    /// each offset expiry check.
    pub async fn forget_empty_consumer_groups(&self, shard: &Rc<Shard>) {
        let gone: Vec<String> = {
            let groups = self.groups.borrow();
            self.consumers
                .borrow()
                .values()
                .filter(|g| g.is_empty())
                .filter(|g| groups.get(&g.id).is_none_or(|h| h.offsets.is_empty()))
                .map(|g| g.id.clone())
                .collect()
        };
        for id in gone {
            let records = vec![epoch_record(&id, None)];
            match self.append(shard, self.partition_of(&id), records).await {
                Ok(_) => {
                    let mut consumers = self.consumers.borrow_mut();
                    if consumers.get(&id).is_some_and(ConsumerGroup::is_empty) {
                        consumers.remove(&id);
                        tracing::info!(group = %id, "forgot an empty consumer group");
                    }
                }
                Err(e) => {
                    tracing::warn!(group = %id, error = ?e, "forgetting a consumer group failed")
                }
            }
        }
    }

    /// ConsumerGroupDescribe for one group.
    pub fn consumer_describe(&self, group_id: &str) -> Result<ConsumerGroupDescription, ErrorCode> {
        match self.consumers.borrow().get(group_id) {
            Some(g) => Ok(g.describe()),
            None => Err(ErrorCode::GroupIdNotFound),
        }
    }

    /// Whether `group_id` is a consumer-protocol group here.
    pub fn is_consumer_group(&self, group_id: &str) -> bool {
        self.consumers.borrow().contains_key(group_id)
    }

    /// OffsetFetch v9+ from a member of a consumer-protocol group: its
    /// epoch must be current. Other groups' fetches are not checked.
    pub fn check_consumer_fetch(
        &self,
        group_id: &str,
        member_id: Option<&str>,
        epoch: i32,
    ) -> Result<(), ErrorCode> {
        match self.consumers.borrow().get(group_id) {
            Some(g) => g.check_fetch(member_id, epoch),
            None => Ok(()),
        }
    }
}
