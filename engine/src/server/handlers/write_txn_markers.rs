//! WriteTxnMarkers (v1; Kafka 4.0 dropped v0): a transaction coordinator tells each partition
//! leader to end a producer's transaction with a COMMIT or ABORT marker.
//! Each marker is appended on the partition's owner shard as a control
//! batch (`Partition::append_marker`), replicated like any batch; the
//! answer for a partition comes once the in-sync replicas hold the marker
//! (acks=all) and the flush policy is met, so a coordinator that hears
//! NONE may forget the transaction.
//!
//! Only brokers send it: with an authorizer, CLUSTER_ACTION on the
//! cluster, else every partition is answered CLUSTER_AUTHORIZATION_FAILED.

use super::{Ctx, HandlerError, Reply};
use crate::security::acl::Operation;
use crate::shard::partition::{acked, Partition};
use crate::shard::{Shard, ShardId};
use bytes::Bytes;
use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{WriteTxnMarkersRequest, WriteTxnMarkersResponse};
use sluice_protocol::ErrorCode;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

/// How long a marker waits for the in-sync replicas: Kafka's
/// `request.timeout.ms` default, which bounds its marker appends too.
const MARKER_ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// One marker for one partition, on its way to the owner shard.
#[derive(Clone, Debug)]
struct Job {
    /// (marker, topic, partition) position in the answer.
    slot: (usize, usize, usize),
    topic: String,
    partition: i32,
    producer_id: i64,
    producer_epoch: i16,
    commit: bool,
    coordinator_epoch: i32,
}

pub async fn handle(ctx: &Ctx<'_>, body: Bytes) -> Result<Reply, HandlerError> {
    let req: WriteTxnMarkersRequest = ctx.decode(body)?;
    let allowed = ctx.cluster_allowed(Operation::ClusterAction);
    if !allowed {
        tracing::warn!(client = %ctx.client.host, "WriteTxnMarkers refused: not a broker (CLUSTER_ACTION)");
    }
    ctx.respond(&write_markers(ctx.shard, &req, allowed).await)
}

/// Appends the markers of `req` where their partitions live and answers
/// as WriteTxnMarkers does: the handler's work, and what this broker's
/// own transaction coordinator calls for the partitions it leads, without
/// a round trip through its own listener. `allowed`: the sender may
/// (CLUSTER_ACTION); otherwise every partition is refused.
pub async fn write_markers(
    shard: &Rc<Shard>,
    req: &WriteTxnMarkersRequest,
    allowed: bool,
) -> WriteTxnMarkersResponse {
    let snapshot = shard.metadata();
    let mut answer: Vec<WritableTxnMarkerResult> = Vec::with_capacity(req.markers.len());
    let mut per_shard: BTreeMap<ShardId, Vec<Job>> = BTreeMap::new();
    for (mi, m) in req.markers.iter().enumerate() {
        let mut topics = Vec::with_capacity(m.topics.len());
        for (ti, t) in m.topics.iter().enumerate() {
            let name = t.name.0.to_string();
            let meta = snapshot.topic(&name);
            let mut partitions = Vec::with_capacity(t.partition_indexes.len());
            for (pi, &index) in t.partition_indexes.iter().enumerate() {
                let owner = shard.owner_of(meta, index);
                let code = match (allowed, owner) {
                    (false, _) => ErrorCode::ClusterAuthorizationFailed,
                    (true, None) => ErrorCode::UnknownTopicOrPartition,
                    (true, Some(owner)) => {
                        per_shard.entry(owner).or_default().push(Job {
                            slot: (mi, ti, pi),
                            topic: name.clone(),
                            partition: index,
                            producer_id: m.producer_id.0,
                            producer_epoch: m.producer_epoch,
                            commit: m.transaction_result,
                            coordinator_epoch: m.coordinator_epoch,
                        });
                        ErrorCode::None
                    }
                };
                partitions.push(
                    WritableTxnMarkerPartitionResult::default()
                        .with_partition_index(index)
                        .with_error_code(code.code()),
                );
            }
            topics.push(
                WritableTxnMarkerTopicResult::default()
                    .with_name(t.name.clone())
                    .with_partitions(partitions),
            );
        }
        answer.push(
            WritableTxnMarkerResult::default()
                .with_producer_id(m.producer_id)
                .with_topics(topics),
        );
    }
    let jobs = per_shard
        .into_iter()
        .map(|(owner, jobs)| append_on(shard, owner, jobs));
    for ((mi, ti, pi), code) in futures::future::join_all(jobs).await.into_iter().flatten() {
        answer[mi].topics[ti].partitions[pi].error_code = code.code();
    }
    WriteTxnMarkersResponse::default().with_markers(answer)
}

/// Appends `jobs` on `owner` in request order, then waits for all of
/// them together.
async fn append_on(
    shard: &Rc<Shard>,
    owner: ShardId,
    jobs: Vec<Job>,
) -> Vec<((usize, usize, usize), ErrorCode)> {
    let slots: Vec<_> = jobs.iter().map(|j| j.slot).collect();
    let result = shard
        .invoke_on(owner, move |s| async move {
            let waits = jobs.into_iter().map(|j| {
                let s = Rc::clone(&s);
                async move { (j.slot, append_one(&s, &j).await) }
            });
            futures::future::join_all(waits).await
        })
        .await;
    result.unwrap_or_else(|e| {
        tracing::error!(error = %e, "WriteTxnMarkers forwarding failed");
        slots
            .into_iter()
            .map(|s| (s, ErrorCode::NotLeaderOrFollower))
            .collect()
    })
}

async fn append_one(shard: &Rc<Shard>, j: &Job) -> ErrorCode {
    let Some(partition): Option<Rc<Partition>> = shard.serving_partition(&j.topic, j.partition)
    else {
        return match shard.offline_reason(&j.topic, j.partition) {
            Some(_) => ErrorCode::KafkaStorageError,
            None => ErrorCode::NotLeaderOrFollower,
        };
    };
    if partition.epochs_unwritten() {
        // As a produce does: the new leader epoch reaches its file before
        // the first batch of that epoch.
        let _ = partition.write_epochs().await;
    }
    // Not written into a file being synced (see `Partition::sync_settled`).
    partition.sync_settled().await;
    let appended = match partition.append_marker(
        j.producer_id,
        j.producer_epoch,
        j.commit,
        j.coordinator_epoch,
    ) {
        Ok(a) => {
            // The group coordinator settles the transaction's offsets as
            // soon as the marker is in the log, with nothing in between.
            if j.topic == crate::group::OFFSETS_TOPIC {
                let groups = &shard.groups;
                groups.txn_marker(shard, j.partition, j.producer_id, j.commit);
            }
            a
        }
        Err(code) => {
            tracing::warn!(topic = %j.topic, partition = j.partition, producer_id = j.producer_id, producer_epoch = j.producer_epoch, coordinator_epoch = j.coordinator_epoch, error = ?code, "transaction marker refused");
            return code;
        }
    };
    if let Some(target) = appended.flush_to {
        if let Err(code) = partition.flush_for_append(target).await {
            return code;
        }
    }
    match appended.acked {
        Some(rx) => match acked(rx, MARKER_ACK_TIMEOUT).await {
            Ok(()) => ErrorCode::None,
            Err(code) => code,
        },
        None => ErrorCode::None,
    }
}
