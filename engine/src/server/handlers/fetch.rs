//! Fetch: read whole batches from each partition's owner shard as file
//! regions, park until `min_bytes` are there or `max_wait_ms` passes, and
//! answer with a hand-encoded response whose record bytes go out with
//! `sendfile`.
//!
//! From v7 a client may open an incremental fetch session (KIP-227,
//! `fetch_session`): the answer then carries only partitions with news.

use super::fetch_session::{self, Kind, Session};
use super::{Ctx, HandlerError, Reply};
use crate::replication::state::FetchRequest as ReplicaFetch;
use crate::replication::NodeId;
use crate::shard::partition::{error_code, now_ms, Watermarks};
use crate::shard::{Shard, ShardId};
use crate::storage::segment::FileRegion;
use bytes::Bytes;
use futures::channel::oneshot;
use kafka_protocol::messages::FetchRequest;
use sluice_protocol::fetch_response::{self, PartitionData, ResponseHead, TopicData};
use sluice_protocol::{ErrorCode, LeaderEpoch, Offset};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Longest a fetch may park, whatever the client asks.
const MAX_WAIT_MS_MAX: u64 = 30_000;
/// The first Fetch version with sessions.
const SESSION_VERSION_MIN: i16 = 7;

/// What a request (or a fetch session) holds of one partition.
#[derive(Debug, Clone, Copy)]
pub struct Position {
    offset: Offset,
    max_bytes: usize,
    leader_epoch: LeaderEpoch,
    /// A follower's log start (-1 from consumers).
    log_start: Offset,
}

pub type FetchSession = Session<Position>;

/// One partition asked for.
#[derive(Debug, Clone)]
struct Want {
    topic: String,
    partition: i32,
    offset: Offset,
    max_bytes: usize,
    owner: Option<ShardId>,
    /// A follower's fetch: what replication reads of it.
    replica: Option<ReplicaFetch>,
}

/// One partition's answer.
#[derive(Debug, Default)]
struct Got {
    error: Option<ErrorCode>,
    marks: Watermarks,
    regions: Vec<FileRegion>,
    bytes: usize,
}

/// Log target of the debug lines that follow each follower's fetch:
/// "replica fetch received" once its session checks pass (a refused one
/// is answered at once) and "replica fetch answered" when it stops
/// waiting, before the answer is written. Tests enable it with
/// `SLUICE_LOG=info,replica_fetch=debug` to know when no follower's fetch
/// is parked at a leader.
const REPLICA_FETCH_TARGET: &str = "replica_fetch";

pub async fn handle(ctx: &Ctx<'_>, body: Bytes) -> Result<Reply, HandlerError> {
    let req: FetchRequest = ctx.decode(body)?;
    let shard = ctx.shard;
    let mut asks = Vec::new();
    for t in &req.topics {
        for p in &t.partitions {
            let position = Position {
                offset: Offset(p.fetch_offset),
                max_bytes: p.partition_max_bytes.max(0) as usize,
                leader_epoch: LeaderEpoch(p.current_leader_epoch),
                log_start: Offset(p.log_start_offset),
            };
            asks.push(((t.topic.0.to_string(), p.partition), position));
        }
    }
    let forgotten: Vec<(String, i32)> = req
        .forgotten_topics_data
        .iter()
        .flat_map(|t| t.partitions.iter().map(|&p| (t.topic.0.to_string(), p)))
        .collect();
    // The session is taken out of the connection while the fetch runs and
    // put back when it is answered.
    let mut session = ctx.client.fetch_session.take();
    let plan = if ctx.version() >= SESSION_VERSION_MIN {
        fetch_session::plan(
            &mut session,
            shard.id,
            (req.session_id, req.session_epoch),
            asks,
            &forgotten,
        )
    } else {
        Ok(fetch_session::Plan {
            kind: Kind::Sessionless,
            asks,
        })
    };
    let plan = match plan {
        Ok(plan) => plan,
        Err(code) => {
            ctx.client.fetch_session.set(session);
            let head = head(ctx, code, 0);
            return Ok(Reply::Parts(fetch_response::encode(head, Vec::new()).0));
        }
    };
    let replica = req.replica_id.0;
    if replica >= 0 {
        tracing::debug!(target: REPLICA_FETCH_TARGET, replica, "replica fetch received");
    }
    let wants = wants(shard, replica, plan.asks);
    let wait = Duration::from_millis((req.max_wait_ms.max(0) as u64).min(MAX_WAIT_MS_MAX));
    let deadline = Instant::now() + wait;
    let min_bytes = req.min_bytes.max(0) as usize;
    let mut got = read_all(shard, &wants).await;
    loop {
        let total: usize = got.iter().map(|g| g.bytes).sum();
        let errored = got.iter().any(|g| g.error.is_some());
        let now = Instant::now();
        if total >= min_bytes.max(1) || errored || now >= deadline {
            break;
        }
        wait_any(shard, &wants, deadline - now).await;
        got = read_all(shard, &wants).await;
    }
    trim_to(&mut got, req.max_bytes.max(0) as usize);
    if replica >= 0 {
        let bytes: usize = got.iter().map(|g| g.bytes).sum();
        tracing::debug!(target: REPLICA_FETCH_TARGET, replica, bytes, "replica fetch answered");
    }
    let (session_id, answer) = match (&plan.kind, session.as_mut()) {
        (Kind::Full { id }, Some(s)) => (*id, answer(s, wants, got, true)),
        (Kind::Incremental { id }, Some(s)) => (*id, answer(s, wants, got, false)),
        _ => (0, wants.into_iter().zip(got).collect()),
    };
    ctx.client.fetch_session.set(session);
    let head = head(ctx, ErrorCode::None, session_id);
    let (parts, _size) = fetch_response::encode(head, group(answer));
    Ok(Reply::Parts(parts))
}

fn head(ctx: &Ctx<'_>, error_code: ErrorCode, session_id: i32) -> ResponseHead {
    ResponseHead {
        version: ctx.version(),
        correlation_id: ctx.header.correlation_id,
        throttle_time_ms: 0,
        error_code,
        session_id,
    }
}

/// The partitions to read, each with its owner shard (none for a
/// partition this broker does not know).
fn wants(shard: &Shard, replica_id: i32, asks: Vec<fetch_session::Ask<Position>>) -> Vec<Want> {
    let snapshot = shard.metadata();
    asks.into_iter()
        .map(|((topic, partition), pos)| {
            let owner = snapshot
                .topic(&topic)
                .filter(|m| partition >= 0 && partition < m.partitions)
                .map(|m| shard.owner(m, partition));
            Want {
                topic,
                partition,
                offset: pos.offset,
                max_bytes: pos.max_bytes,
                owner,
                replica: (replica_id >= 0).then_some(ReplicaFetch {
                    replica: NodeId(replica_id),
                    leader_epoch: pos.leader_epoch,
                    fetch_offset: pos.offset,
                    log_start: pos.log_start,
                }),
            }
        })
        .collect()
}

/// The partitions a session's answer carries: every one when `full`, else
/// those with news. The session notes what each tells the client.
fn answer(s: &mut FetchSession, wants: Vec<Want>, got: Vec<Got>, full: bool) -> Vec<(Want, Got)> {
    wants
        .into_iter()
        .zip(got)
        .filter(|(w, g)| {
            let news = s.must_send(
                &(w.topic.clone(), w.partition),
                g.bytes > 0 || g.error.is_some(),
                g.marks.high_watermark.0,
                g.marks.log_start.0,
            );
            full || news
        })
        .collect()
}

/// Keeps whole partitions until `max_bytes` is reached; the first
/// partition with data is always kept, however large.
fn trim_to(got: &mut [Got], max_bytes: usize) {
    let mut total = 0usize;
    for g in got.iter_mut() {
        if g.bytes == 0 {
            continue;
        }
        if total > 0 && total + g.bytes > max_bytes {
            g.regions.clear();
            g.bytes = 0;
            continue;
        }
        total += g.bytes;
    }
}

fn group(answer: Vec<(Want, Got)>) -> Vec<TopicData<FileRegion>> {
    let mut topics: Vec<TopicData<FileRegion>> = Vec::new();
    for (w, g) in answer {
        let hw = g.marks.high_watermark.0;
        let data = PartitionData {
            partition_index: w.partition,
            error_code: g.error.unwrap_or(ErrorCode::None),
            high_watermark: if g.error.is_some() { -1 } else { hw },
            last_stable_offset: if g.error.is_some() { -1 } else { hw },
            // Also with OFFSET_OUT_OF_RANGE to a follower, so that one
            // behind the log start knows where to start again; a consumer
            // gets -1 with any error, as from Kafka.
            log_start_offset: match g.error {
                None => g.marks.log_start.0,
                Some(ErrorCode::OffsetOutOfRange) if w.replica.is_some() => g.marks.log_start.0,
                Some(_) => -1,
            },
            records: g.regions,
        };
        match topics.last_mut() {
            Some(t) if t.name == w.topic => t.partitions.push(data),
            _ => topics.push(TopicData {
                name: w.topic,
                partitions: vec![data],
            }),
        }
    }
    topics
}

fn by_owner(wants: &[Want]) -> BTreeMap<ShardId, Vec<(usize, Want)>> {
    let mut m: BTreeMap<ShardId, Vec<(usize, Want)>> = BTreeMap::new();
    for (i, w) in wants.iter().enumerate() {
        if let Some(owner) = w.owner {
            m.entry(owner).or_default().push((i, w.clone()));
        }
    }
    m
}

async fn read_all(shard: &Rc<Shard>, wants: &[Want]) -> Vec<Got> {
    let mut got: Vec<Got> = wants
        .iter()
        .map(|w| Got {
            error: w
                .owner
                .is_none()
                .then_some(ErrorCode::UnknownTopicOrPartition),
            ..Got::default()
        })
        .collect();
    let jobs = by_owner(wants).into_iter().map(|(owner, list)| {
        shard.invoke_on(owner, move |s| async move {
            list.into_iter()
                .map(|(i, w)| (i, read_one(&s, &w)))
                .collect::<Vec<_>>()
        })
    });
    for result in futures::future::join_all(jobs).await {
        match result {
            Ok(list) => list.into_iter().for_each(|(i, g)| got[i] = g),
            Err(e) => tracing::error!(error = %e, "fetch forwarding failed"),
        }
    }
    got
}

fn read_one(shard: &Shard, w: &Want) -> Got {
    let Some(p) = shard.serving_partition(&w.topic, w.partition) else {
        let code = match shard.offline_reason(&w.topic, w.partition) {
            Some(_) => ErrorCode::KafkaStorageError,
            None => ErrorCode::NotLeaderOrFollower,
        };
        return Got {
            error: Some(code),
            ..Got::default()
        };
    };
    let mut marks = p.watermarks();
    // A follower learns the log up to its end; the leader learns the
    // follower's progress from the offset it asks for.
    let read = match w.replica {
        Some(request) => match p.replica_fetch(request, now_ms()) {
            Ok(hw) => {
                marks.high_watermark = hw;
                p.read_for_replica(w.offset, w.max_bytes)
            }
            Err(code) => {
                return Got {
                    error: Some(code),
                    marks,
                    ..Got::default()
                }
            }
        },
        None => p.read(w.offset, w.max_bytes),
    };
    match read {
        Ok(r) => Got {
            error: None,
            marks,
            regions: r.regions,
            bytes: r.bytes,
        },
        Err(e) => Got {
            error: Some(error_code(&e)),
            marks,
            ..Got::default()
        },
    }
}

/// Parks until any partition has data past its fetch offset, or `timeout`.
async fn wait_any(shard: &Rc<Shard>, wants: &[Want], timeout: Duration) {
    let jobs = by_owner(wants).into_iter().map(|(owner, list)| {
        shard.invoke_on(owner, move |s| async move {
            list.into_iter()
                .filter_map(|(_, w)| {
                    s.serving_partition(&w.topic, w.partition)
                        .map(|p| p.watch(w.offset, w.replica.is_some()))
                })
                .collect::<Vec<oneshot::Receiver<()>>>()
        })
    });
    let receivers: Vec<oneshot::Receiver<()>> = futures::future::join_all(jobs)
        .await
        .into_iter()
        .filter_map(Result::ok)
        .flatten()
        .collect();
    let timer = glommio::timer::sleep(timeout);
    if receivers.is_empty() {
        timer.await;
        return;
    }
    let any = futures::future::select_all(receivers);
    futures::pin_mut!(timer);
    let _ = futures::future::select(any, timer).await;
}
