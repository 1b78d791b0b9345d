//! The coordinator's side of consumer-protocol groups: runs heartbeats
//! against the shard's groups, stores each group epoch change in
//! `__consumer_offsets`, and runs session timers. Committed offsets of
//! these groups live with the classic groups' (one offsets store per
//! group id), so commits, fetches, expiry and compaction stay in one
//! place.

use super::records::{AssignmentRecord, MemberRecord};
use super::state::{ConsumerGroup, ConsumerGroupDescription, HeartbeatRequest, HeartbeatResult};
use super::Topics;
use crate::group::coordinator::{Coordinator, Record};
use crate::group::records::{encode_consumer_group_epoch, Key};
use crate::group::state::GroupState;
use crate::shard::partition::now_ms;
use crate::shard::Shard;
use sluice_protocol::ErrorCode;
use std::rc::Rc;

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
            if let Err(r) = self.take_over_classic(shard, group_id) {
                return r;
            }
            let g = ConsumerGroup::new(group_id, self.config.consumer.assignors[0]);
            self.consumers.borrow_mut().insert(group_id.to_string(), g);
        }
        let topics = topics(shard);
        let result = self
            .consumers
            .borrow_mut()
            .get_mut(group_id)
            .expect("present")
            .heartbeat(req, now_ms(), &topics, &self.config.consumer);
        self.store_consumer_changes(shard, group_id);
        result
    }

    /// A consumer-protocol member may found a group only where no classic
    /// group is active; an Empty classic group becomes a consumer group
    /// and keeps its offsets, as in Kafka. (Kafka can also convert a
    /// classic group with members online; Sluice refuses, as Kafka does
    /// with `group.consumer.migration.policy=disabled`.)
    fn take_over_classic(&self, shard: &Rc<Shard>, group_id: &str) -> Result<(), HeartbeatResult> {
        let mut groups = self.groups.borrow_mut();
        let Some(g) = groups.get_mut(group_id) else {
            return Ok(());
        };
        if g.protocol_type().is_none() {
            return Ok(());
        }
        if g.state() != GroupState::Empty {
            return Err(HeartbeatResult::error(
                ErrorCode::GroupIdNotFound,
                format!("Group {group_id} is not a consumer group."),
            ));
        }
        g.forget_protocol();
        drop(groups);
        self.append_detached(
            shard,
            group_id,
            vec![crate::group::coordinator::group_record(group_id, None)],
        );
        Ok(())
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

    /// Stores what changed: the group epoch first, then each changed
    /// member's metadata and assignment (or their tombstones), in one
    /// record set.
    fn store_consumer_changes(&self, shard: &Rc<Shard>, group_id: &str) {
        let Some(changes) = self
            .consumers
            .borrow_mut()
            .get_mut(group_id)
            .map(ConsumerGroup::take_changes)
        else {
            return;
        };
        let mut records: Vec<Record> = changes
            .epoch
            .map(|e| epoch_record(group_id, Some(e)))
            .into_iter()
            .collect();
        for (member, stored) in changes.members {
            records.extend(member_records(group_id, &member, stored.as_ref()));
        }
        if !records.is_empty() {
            self.append_detached(shard, group_id, records);
        }
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
            self.store_consumer_changes(shard, &id);
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
