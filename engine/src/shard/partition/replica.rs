//! The partition's replication: the pure [`PartitionReplica`] (leader
//! epochs, follower progress, high watermark, ISR proposals, follower
//! truncation) kept in step with the real log.
//!
//! The model counts offsets; the log holds the bytes. They move together
//! in synchronous steps, with no `.await` between a log change and the
//! model's: a leader's append with `produce`, a follower's append with
//! `handle_fetch_response`, a follower's truncation with
//! `handle_epoch_response`. After every step the log takes the model's
//! high watermark, parked acks=all produces whose records it passed are
//! answered, and ISR proposals queue for the controller.

use super::Partition;
use crate::replication::controller::{IsrProposal, PartitionState};
use crate::replication::log::{ReplicaLog, Run};
use crate::replication::state::{
    Acks, EpochResponse, Event, FetchData, FetchRequest, FetchResponse, FollowerRequest,
};
use crate::replication::NodeId;
use crate::storage::log::PartitionLog;
use crate::storage::StorageError;
use futures::channel::oneshot;
use sluice_protocol::record_batch::{parse_marker, validate_replicated_set, BatchHeader};
use sluice_protocol::{ErrorCode, LeaderEpoch, Offset};

/// The model of a log as it is on disk.
pub(super) fn model_of(log: &PartitionLog) -> ReplicaLog {
    ReplicaLog::from_parts(
        log.log_start(),
        &log.epoch_entries(),
        log.log_end(),
        log.high_watermark(),
    )
}

impl Partition {
    /// Applies the controller's newest state for this partition: become
    /// leader (stamping appends with the new epoch) or follower, or take
    /// an ISR change. Older states are ignored.
    pub fn apply_state(&self, state: PartitionState, now_ms: i64) {
        let me = self.replica.borrow().node();
        let epoch = state.leader_epoch;
        if state.leader == Some(me) && self.log.borrow().leader_epoch() < epoch {
            // The checkpoint file follows in the background (the shard's
            // epoch writer); an append under the epoch waits for it.
            self.log.borrow_mut().set_leader_epoch(epoch);
        }
        self.replica.borrow_mut().apply_state(state, now_ms);
        self.after_step();
    }

    /// Sets `min.insync.replicas` (from the topic config).
    /// The topic's config as of the latest metadata (AlterConfigs may
    /// have changed it): `min.insync.replicas` applies at once; segment,
    /// flush and retention settings from the next append or cleanup.
    pub fn set_topic_config(&self, config: &std::sync::Arc<crate::config::TopicConfig>) {
        self.replica
            .borrow_mut()
            .set_min_insync_replicas(config.min_insync_replicas);
        self.replica
            .borrow_mut()
            .set_unclean_leader_election(config.unclean_leader_election);
        self.log
            .borrow_mut()
            .set_config(std::sync::Arc::clone(config));
    }

    /// The leader this partition follows, if it is a follower.
    pub fn following(&self) -> Option<NodeId> {
        self.replica.borrow().following()
    }

    /// The request a follower sends its leader next.
    pub fn follower_request(&self) -> Option<FollowerRequest> {
        // A replica whose files failed fetches nothing more: its position
        // would tell the leader it has caught up, and bring it back into
        // the ISR, with records that never reached the disk.
        if self.sync_failure().is_some() {
            return None;
        }
        self.replica.borrow().next_request()
    }

    /// Tells the model about a leader's append of `records` offsets;
    /// returns where the acks=all answer will come, if it is parked.
    pub(super) fn record_produce(&self, acks: Acks, records: i64) -> Option<super::Acked> {
        let ticket = self.next_ticket.get();
        self.next_ticket.set(ticket + 1);
        let count = u32::try_from(records).expect("a record set fits u32 offsets");
        let appended = self
            .replica
            .borrow_mut()
            .produce(acks, count, ticket)
            .expect("checked before appending");
        let rx = appended.parked.then(|| {
            let (tx, rx) = oneshot::channel();
            self.tickets.borrow_mut().insert(ticket, tx);
            rx
        });
        self.after_step();
        rx
    }

    /// A producer's retry of a batch already in the log, ending at
    /// `last_offset`: refused as an append would be, else where its
    /// acks=all answer will come, if it is parked until the high
    /// watermark passes the batch.
    pub(super) fn record_duplicate(
        &self,
        acks: Acks,
        last_offset: Offset,
    ) -> Result<Option<super::Acked>, ErrorCode> {
        let ticket = self.next_ticket.get();
        self.next_ticket.set(ticket + 1);
        let parked = self
            .replica
            .borrow_mut()
            .produce_duplicate(acks, last_offset, ticket)?;
        let rx = parked.then(|| {
            let (tx, rx) = oneshot::channel();
            self.tickets.borrow_mut().insert(ticket, tx);
            rx
        });
        self.after_step();
        Ok(rx)
    }

    /// A follower's Fetch reached this leader: learns its log end and log
    /// start, and returns the high watermark to send it.
    pub fn replica_fetch(&self, request: FetchRequest, now_ms: i64) -> Result<Offset, ErrorCode> {
        let resp = self.replica.borrow_mut().handle_fetch(request, now_ms);
        self.after_step();
        resp.result.map(|d| d.high_watermark)
    }

    /// The lowest log start over this leader and its in-sync followers;
    /// `None` unless leading.
    pub fn low_watermark(&self) -> Option<Offset> {
        self.replica.borrow().low_watermark()
    }

    /// The leader's OffsetForLeaderEpoch answer reached this follower:
    /// cuts a divergent tail off the log.
    pub fn on_epoch_response(&self, resp: EpochResponse) -> Result<(), StorageError> {
        self.replica.borrow_mut().handle_epoch_response(resp);
        let target = self.replica.borrow().log().log_end();
        if target < self.log.borrow().log_end() {
            let end = self.log.borrow_mut().truncate_to(target)?;
            if end < target {
                // The cut fell inside a batch: the model follows the log.
                self.replica.borrow_mut().truncate_log(end);
            }
            self.rebuild_producers();
        }
        self.after_step();
        Ok(())
    }

    /// Whether a fetch answer for this request would be taken.
    pub fn takes_fetch(&self, leader_epoch: LeaderEpoch, fetch_offset: Offset) -> bool {
        self.replica
            .borrow()
            .accepts_fetch(leader_epoch, fetch_offset)
    }

    /// The leader's Fetch answer reached this follower: appends the
    /// batches as they are, takes the leader's high watermark, and
    /// follows its log start (records deleted there are deleted here
    /// once committed here too).
    ///
    /// A write that fails for another reason than a full disk (EIO) takes
    /// the partition offline, as on a leader: the append may have reached
    /// the log and not the model (a leader-epoch checkpoint that failed to
    /// sync after the batches were written), and every later fetch would
    /// find the log and the model apart.
    pub async fn on_fetch_response(
        &self,
        leader_epoch: LeaderEpoch,
        fetch_offset: Offset,
        records: &[u8],
        high_watermark: Offset,
        leader_log_start: Offset,
        now_ms: i64,
    ) -> Result<(), StorageError> {
        let result = self
            .take_fetch_response(
                leader_epoch,
                fetch_offset,
                records,
                high_watermark,
                leader_log_start,
                now_ms,
            )
            .await;
        if let Err(e) = &result {
            if matches!(e, StorageError::Io { .. }) && !e.is_no_space() {
                self.fail_sync(e);
            }
        }
        result
    }

    async fn take_fetch_response(
        &self,
        leader_epoch: LeaderEpoch,
        fetch_offset: Offset,
        records: &[u8],
        high_watermark: Offset,
        leader_log_start: Offset,
        now_ms: i64,
    ) -> Result<(), StorageError> {
        // Not written into a file being synced (see `sync_settled`).
        self.sync_settled().await;
        if !self.takes_fetch(leader_epoch, fetch_offset) {
            return Ok(());
        }
        // A fetch may end in a partial batch; only whole ones are kept.
        let whole = whole_batches(records);
        let mut runs: Vec<Run> = Vec::new();
        if !whole.is_empty() {
            if let Err(e) = validate_replicated_set(whole, usize::MAX) {
                tracing::error!(topic = %self.topic, partition = self.index, error = %e, "leader sent a corrupt batch; refetching");
                return Ok(());
            }
            let active_base = self.log.borrow().active_base();
            let appended_from = self.log.borrow().log_end();
            self.log.borrow_mut().append_replicated(whole, now_ms)?;
            self.start_writeback();
            // One pass over the headers: the model's runs of offsets per
            // epoch, and producer state, so that a follower that becomes
            // leader deduplicates retries and knows the open transactions.
            let mut pos = 0;
            // The model counts offsets, not records: offsets a leader's
            // cleaner left without a batch belong to the run after them.
            while let Some(h) = BatchHeader::parse(&whole[pos..]) {
                let run_end = |r: &Run| r.base_offset.plus(i64::from(r.count));
                let from = runs.last().map_or(appended_from, run_end);
                let span = |base: Offset| {
                    u32::try_from(h.next_offset().0 - base.0).expect("a fetch spans < 2^32 offsets")
                };
                match runs.last_mut() {
                    Some(r) if r.epoch == h.partition_leader_epoch => r.count = span(r.base_offset),
                    _ => runs.push(Run {
                        epoch: h.partition_leader_epoch,
                        base_offset: from,
                        count: span(from),
                    }),
                }
                let marker = match h.is_control() {
                    true => parse_marker(&whole[pos..pos + h.total_size()]),
                    false => None,
                };
                self.track_batch(&h, h.base_offset, marker);
                pos += h.total_size();
                if pos >= whole.len() {
                    break;
                }
            }
            self.snapshot_if_rolled(active_base);
        }
        self.replica
            .borrow_mut()
            .handle_fetch_response(FetchResponse {
                leader_epoch,
                fetch_offset,
                result: Ok(FetchData {
                    runs,
                    high_watermark,
                }),
            });
        self.after_step();
        if leader_log_start > self.log.borrow().log_start() {
            self.advance_log_start(leader_log_start)?;
        }
        let flush = self.log.borrow().flush_due(now_ms);
        if flush {
            let end = self.log.borrow().log_end();
            self.flush_upto(end).await?;
        }
        Ok(())
    }

    /// Deletes the records below `offset`, up to the high watermark, in
    /// the log and the model alike; returns the log start.
    fn advance_log_start(&self, offset: Offset) -> Result<Offset, StorageError> {
        let start = self.log.borrow_mut().advance_log_start(offset)?;
        self.replica.borrow_mut().advance_log_start(start);
        Ok(start)
    }

    /// The leader's log starts past everything this follower has (its
    /// retention or DeleteRecords went further): empties the log to start
    /// at `leader_log_start`, as Kafka's followers do.
    pub fn restart_at(&self, leader_log_start: Offset) -> Result<(), StorageError> {
        if leader_log_start <= self.log.borrow().log_end() || self.following().is_none() {
            return Ok(());
        }
        self.log
            .borrow_mut()
            .truncate_fully_and_start_at(leader_log_start)?;
        let model = model_of(&self.log.borrow());
        self.replica.borrow_mut().reset_log(model);
        self.rebuild_producers();
        self.after_step();
        Ok(())
    }

    /// DeleteRecords on the leader: the log starts at `offset` (-1: the
    /// high watermark). Refused past the high watermark. Returns the new
    /// log start (Kafka's low watermark); followers follow it with their
    /// next fetch.
    pub fn delete_records(&self, offset: i64) -> Result<Offset, ErrorCode> {
        if self.following().is_some() {
            return Err(ErrorCode::NotLeaderOrFollower);
        }
        let hw = self.log.borrow().high_watermark();
        let target = if offset == -1 { hw } else { Offset(offset) };
        if target.0 < 0 || target > hw {
            return Err(ErrorCode::OffsetOutOfRange);
        }
        let start = self
            .advance_log_start(target)
            .map_err(|e| super::error_code(&e))?;
        tracing::info!(topic = %self.topic, partition = self.index, log_start = start.0, "records deleted");
        Ok(start)
    }

    /// Shrinks the ISR of lagging followers and resends lost proposals;
    /// call periodically.
    pub fn replication_tick(&self, now_ms: i64) {
        self.replica.borrow_mut().tick(now_ms);
        self.after_step();
    }

    /// ISR proposals for the controller, oldest first.
    pub fn take_proposals(&self) -> Vec<IsrProposal> {
        std::mem::take(&mut *self.proposals.borrow_mut())
    }

    /// The proposal built on `partition_epoch` was not confirmed, with
    /// INELIGIBLE_REPLICA when `ineligible` (see
    /// [`PartitionReplica::proposal_refused`]).
    pub fn proposal_refused(&self, partition_epoch: i32, ineligible: bool) {
        self.replica
            .borrow_mut()
            .proposal_refused(partition_epoch, ineligible);
    }

    /// The log takes the model's high watermark; events are acted on.
    pub(super) fn after_step(&self) {
        let hw = self.replica.borrow().log().high_watermark();
        let moved = {
            let mut log = self.log.borrow_mut();
            let old = log.high_watermark();
            log.set_high_watermark(hw);
            log.high_watermark() != old
        };
        for e in self.replica.borrow_mut().take_events() {
            match e {
                Event::Produced { ticket, result } => {
                    if let Some(tx) = self.tickets.borrow_mut().remove(&ticket) {
                        let _ = tx.send(result);
                    }
                }
                Event::ProposeIsr(p) => self.proposals.borrow_mut().push(p),
                Event::RefusedTruncation {
                    offset,
                    high_watermark,
                } => tracing::error!(
                    topic = %self.topic,
                    partition = self.index,
                    truncate_to = offset.0,
                    high_watermark = high_watermark.0,
                    "the leader's log lacks records below this replica's high watermark; \
                     not truncating them (unclean.leader.election.enable is off)"
                ),
            }
        }
        if moved {
            self.wake_fetchers();
        }
        for w in self.step_waiters.borrow_mut().drain(..) {
            let _ = w.send(());
        }
    }

    /// Resolves after the model's next step (a fetch, an append, a new
    /// state), or when the partition is deleted.
    pub fn next_step(&self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.step_waiters.borrow_mut().push(tx);
        rx
    }
}

/// The prefix of `records` made of whole batches.
fn whole_batches(records: &[u8]) -> &[u8] {
    let mut pos = 0;
    while let Some(h) = BatchHeader::parse(&records[pos..]) {
        let size = h.total_size();
        if size == 0 || pos + size > records.len() {
            break;
        }
        pos += size;
    }
    &records[..pos]
}
