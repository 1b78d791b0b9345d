//! Failed replicas: reported to the controller, then rebuilt from the
//! leader while the broker runs.
//!
//! A replica whose write or fdatasync failed with EIO, or whose log would
//! not open, is offline on this broker (KAFKA_STORAGE_ERROR; see
//! `Partition::fail_sync`): a retried sync could succeed over records the
//! kernel already gave up on, so the log cannot be trusted again. Kafka
//! takes the whole log directory offline and tells the controller, which
//! moves leadership away and shrinks the ISRs (KIP-112). Sluice does that
//! per partition, from each shard's maintenance tick:
//!
//! 1. While the metadata still shows this broker in the partition's ISR
//!    (leading or following), the shard reports the replica
//!    (`ReplicaFailed`). The controller elects another in-sync replica if
//!    it led and takes it out of the ISR. The new leader comes from the
//!    ISR as in any election, so every acknowledged acks=all record is on
//!    it. A replica that is the last in sync is left leading, offline:
//!    nobody else holds what was acknowledged on it.
//! 2. Once another broker leads and this one is out of the ISR, the shard
//!    sets the partition's directory aside (`<dir>.<uuid>-delete`, as
//!    Kafka names a replica it deletes), deletes it in the background,
//!    creates an empty log and follows the leader from its log start
//!    like a new replica. The leader adds it back to the ISR once it has
//!    caught up.
//!
//! A report or a rebuild that does not take (no other replica could
//! lead yet; the disk still fails, so the rebuilt log fails its first
//! sync again) is tried again after a backoff that doubles from
//! [`RETRY_MIN`] to [`RETRY_MAX`], and is logged once per attempt. The
//! backoff is forgotten once the replica is back in the ISR. With no
//! other replica to lead (a broker alone, or a replication factor of 1)
//! nothing is reported or rebuilt: the partition stays offline until a
//! restart verifies its log.

use super::{Shard, TopicPartition};
use crate::replication::NodeId;
use std::rc::Rc;
use std::time::Duration;

/// The first pause before a report or rebuild is tried again.
pub const RETRY_MIN: Duration = Duration::from_secs(1);
/// The longest pause: a disk replaced after an hour is used within half
/// a minute, and a disk that keeps failing costs one attempt (a rename,
/// a few small files, one fetch) every 30 s.
pub const RETRY_MAX: Duration = Duration::from_secs(30);

/// What has been done about one failed replica.
#[derive(Debug, Default)]
pub struct Failure {
    /// Reports sent, and when (monotonic ms) the next may go.
    reports: u32,
    next_report_ms: i64,
    /// A report is on its way to the controller.
    reporting: bool,
    /// Rebuilds begun, and when the next may begin.
    rebuilds: u32,
    next_rebuild_ms: i64,
}

/// The pause after the `attempt`th try (1-based).
pub fn backoff(attempt: u32) -> Duration {
    let doublings = attempt.saturating_sub(1).min(16);
    (RETRY_MIN * 2u32.pow(doublings)).min(RETRY_MAX)
}

fn later(now_ms: i64, attempt: u32) -> i64 {
    now_ms.saturating_add(i64::try_from(backoff(attempt).as_millis()).unwrap_or(i64::MAX))
}

/// What the metadata says to do with a failed replica.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// It still leads or is in the ISR: ask the controller to move on.
    Report,
    /// Another broker leads and it is out of the ISR: rebuild it.
    Rebuild,
    /// Nobody else can lead (or nobody leads): it stays offline.
    Wait,
}

fn step(state: &crate::replication::controller::PartitionState, me: NodeId) -> Step {
    let others_in_sync = state.isr.iter().any(|n| *n != me);
    if state.leader == Some(me) || state.isr.contains(&me) {
        return match others_in_sync {
            true => Step::Report,
            false => Step::Wait,
        };
    }
    match state.leader {
        Some(l) if l != me => Step::Rebuild,
        _ => Step::Wait,
    }
}

/// Reports and rebuilds this shard's failed replicas as they become due;
/// called from the shard's maintenance tick.
pub fn tend(shard: &Rc<Shard>) {
    // Metadata replayed from before this broker's registration may be
    // older than its logs: an old image could show another leader of a
    // partition this replica alone holds in sync.
    if !shard.metadata_is_current() {
        return;
    }
    let failed = shard.failed_replicas();
    let snapshot = shard.metadata();
    let me = NodeId(shard.broker.config.node_id);
    // Kept until the replica is back in the ISR, so that a rebuilt log
    // that fails again waits longer before the next rebuild.
    shard.failures.borrow_mut().retain(|(t, i), _| {
        let failing = failed.iter().any(|(ft, fi)| ft == t && fi == i);
        let catching_up = shard.partition(t, *i).is_some()
            && snapshot
                .topic(t)
                .and_then(|m| m.partition(*i))
                .is_some_and(|s| !s.isr.contains(&me));
        failing || catching_up
    });
    if failed.is_empty() {
        return;
    }
    let now = crate::cluster::monotonic_ms();
    for key in failed {
        let Some(topic) = snapshot.topic(&key.0).cloned() else {
            continue;
        };
        let Some(state) = topic.partition(key.1) else {
            continue;
        };
        let step = step(state, me);
        let mut failures = shard.failures.borrow_mut();
        let f = failures.entry(key.clone()).or_default();
        match step {
            Step::Report if !f.reporting && now >= f.next_report_ms => {
                f.reports += 1;
                f.next_report_ms = later(now, f.reports);
                f.reporting = true;
                let attempt = f.reports;
                drop(failures);
                glommio::spawn_local(report(Rc::clone(shard), key, topic.id, attempt)).detach();
            }
            Step::Rebuild if now >= f.next_rebuild_ms => {
                f.rebuilds += 1;
                f.next_rebuild_ms = later(now, f.rebuilds);
                let attempt = f.rebuilds;
                drop(failures);
                rebuild(shard, &key, &topic, attempt);
            }
            Step::Report | Step::Rebuild | Step::Wait => {}
        }
    }
}

/// Tells the controller the replica failed, and logs how that went.
async fn report(shard: Rc<Shard>, key: TopicPartition, topic_id: uuid::Uuid, attempt: u32) {
    let (topic, index) = (&key.0, key.1);
    if attempt == 1 {
        tracing::warn!(%topic, partition = index,
            "reporting the failed replica to the controller: leadership moves to another in-sync replica and it leaves the ISR");
    }
    let result = super::controller::report_failed_replica(&shard, topic_id, index).await;
    if let Err((code, message)) = &result {
        let retry_s = backoff(attempt).as_secs();
        tracing::warn!(%topic, partition = index, attempt, ?code, %message, retry_s,
            "reporting the failed replica to the controller failed");
    }
    if let Some(f) = shard.failures.borrow_mut().get_mut(&key) {
        f.reporting = false;
    }
}

/// Sets the failed replica's directory aside and starts it again empty,
/// following the leader; on failure it stays offline until the next
/// attempt.
fn rebuild(
    shard: &Rc<Shard>,
    key: &TopicPartition,
    topic: &crate::metadata::TopicMeta,
    attempt: u32,
) {
    let (name, index) = (&key.0, key.1);
    tracing::warn!(topic = %name, partition = index, attempt,
        "rebuilding the failed replica: its directory is set aside and deleted, and an empty log follows the leader from its log start");
    match shard.rebuild_replica(topic, index) {
        Ok(()) => {
            tracing::info!(topic = %name, partition = index, attempt, "replica rebuilt empty; it rejoins the ISR once it has caught up");
            // The checkpoint files still hold the old log's recovery
            // point, log start and high watermark, which a start before
            // the next checkpoint would apply to the new log.
            shard
                .broker
                .publish_checkpoints(shard.id, shard.checkpoint_entries());
            let shared = std::sync::Arc::clone(&shard.broker);
            glommio::spawn_local(async move {
                if let Err(e) = crate::broker::write_checkpoints_off_shard(&shared).await {
                    tracing::error!(error = %e, "writing checkpoints failed");
                }
            })
            .detach();
        }
        Err(e) => {
            let retry_s = backoff(attempt).as_secs();
            tracing::error!(topic = %name, partition = index, attempt, error = %e, retry_s,
                "rebuilding the failed replica failed; it stays offline until the next attempt");
        }
    }
}

/// Deletes a failed replica's directory, set aside under `aside`, on the
/// shard's blocking thread: a large log takes a while to unlink, and a
/// failing disk longer.
pub(super) async fn remove_set_aside(aside: std::path::PathBuf) {
    let removed = glommio::executor()
        .spawn_blocking({
            let aside = aside.clone();
            move || std::fs::remove_dir_all(&aside)
        })
        .await;
    match removed {
        Ok(()) => tracing::info!(dir = %aside.display(), "deleted a failed replica's directory"),
        Err(e) => {
            tracing::error!(dir = %aside.display(), error = %e, "deleting a failed replica's directory failed")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::controller::PartitionState;

    const A: NodeId = NodeId(1);
    const B: NodeId = NodeId(2);
    const C: NodeId = NodeId(3);

    #[test]
    fn backoff_doubles_from_a_second_to_half_a_minute() {
        let secs: Vec<u64> = (1..=8).map(|a| backoff(a).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(backoff(u32::MAX), RETRY_MAX);
    }

    #[test]
    fn a_failed_replica_is_reported_while_in_sync_and_rebuilt_once_out() {
        let s = PartitionState::new(vec![A, B, C]);
        assert_eq!(step(&s, A), Step::Report, "the leader");
        assert_eq!(step(&s, B), Step::Report, "an in-sync follower");
        let moved = s.on_replica_failed(A, &[A, B, C], false).unwrap();
        assert_eq!(step(&moved, A), Step::Rebuild);
        // Alone in sync, or with nobody leading, nothing can take over.
        let alone = PartitionState::new(vec![A]);
        assert_eq!(step(&alone, A), Step::Wait);
        let mut leaderless = moved.clone();
        leaderless.leader = None;
        assert_eq!(step(&leaderless, A), Step::Wait);
    }
}
