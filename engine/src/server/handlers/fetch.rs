//! Fetch: read whole batches from each partition's owner shard as file
//! regions, park until `min_bytes` are there or `max_wait_ms` passes, and
//! answer with a hand-encoded response whose record bytes go out with
//! `sendfile`.
//!
//! From v7 a client may open an incremental fetch session (KIP-227,
//! `fetch_session`): the answer then carries only partitions with news.
//!
//! From v13 topics are named by id (KIP-516): an id this broker does not
//! know is answered UNKNOWN_TOPIC_ID, and a session keys such partitions
//! by id, so a topic deleted and created again under its name is not
//! mistaken for the old one. From v15 a follower names itself in
//! `replica_state` (KIP-903; the broker epoch in it is not checked, as
//! Sluice's brokers have no registration epochs). A partition answered
//! NOT_LEADER_OR_FOLLOWER or FENCED_LEADER_EPOCH carries the leader this
//! broker knows, and from v16 where it listens (KIP-951). From v18 a
//! follower says which high watermark it knows (KIP-1166): a fetch that
//! would tell it a newer one is answered without parking. v17's
//! `replica_directory_id` names one of several log directories; a broker
//! with a single data directory has nothing to check against it.

use super::fetch_session::{self, Kind, Session};
use super::{Ctx, HandlerError, Reply};
use crate::quota::entity::QuotaKey;
use crate::replication::state::FetchRequest as ReplicaFetch;
use crate::replication::NodeId;
use crate::security::acl::{Operation, ResourceType};
use crate::shard::partition::{error_code, now_ms, Watermarks};
use crate::shard::{Shard, ShardId};
use crate::storage::segment::FileRegion;
use bytes::Bytes;
use futures::channel::oneshot;
use kafka_protocol::messages::FetchRequest;
use sluice_protocol::fetch_response::{
    self, LeaderIdAndEpoch, NodeEndpoint, PartitionData, ResponseHead, TopicData,
};
use sluice_protocol::{ErrorCode, LeaderEpoch, Offset};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Longest a fetch may park, whatever the client asks.
const MAX_WAIT_MS_MAX: u64 = 30_000;
/// The first Fetch version with sessions.
const SESSION_VERSION_MIN: i16 = 7;
/// The first version that names topics by id instead of by name.
const TOPIC_ID_VERSION_MIN: i16 = 13;
/// The first version whose follower names itself in `replica_state`.
const REPLICA_STATE_VERSION_MIN: i16 = 15;

/// What a request (or a fetch session) holds of one partition.
#[derive(Debug, Clone, Copy)]
pub struct Position {
    offset: Offset,
    max_bytes: usize,
    leader_epoch: LeaderEpoch,
    /// A follower's log start (-1 from consumers).
    log_start: Offset,
    /// The topic's id (v13+; nil before).
    topic_id: uuid::Uuid,
    /// The high watermark a v18 follower knows: -1 when it knows none,
    /// `i64::MAX` from older versions and consumers (nothing to compare).
    known_high_watermark: i64,
}

pub type FetchSession = Session<Position>;

/// One partition asked for.
#[derive(Debug, Clone)]
struct Want {
    /// The session key: the topic's name, or from v13 its id.
    key: String,
    /// The topic's name (empty for an unknown id).
    topic: String,
    topic_id: uuid::Uuid,
    partition: i32,
    offset: Offset,
    max_bytes: usize,
    owner: Option<ShardId>,
    /// The answer when there is no owner.
    no_owner: ErrorCode,
    /// A follower's fetch: what replication reads of it.
    replica: Option<ReplicaFetch>,
    known_high_watermark: i64,
    /// A read_committed consumer (isolation_level 1): data only below
    /// the last stable offset, with the aborted transactions in it.
    committed: bool,
}

/// One partition's answer.
#[derive(Debug, Default)]
struct Got {
    error: Option<ErrorCode>,
    marks: Watermarks,
    last_stable: Offset,
    /// For a read_committed fetch, (producer id, first offset) of the
    /// aborted transactions among the records.
    aborted: Option<Vec<(i64, i64)>>,
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
    let by_id = ctx.version() >= TOPIC_ID_VERSION_MIN;
    let key = |name: &kafka_protocol::messages::TopicName, id: uuid::Uuid| match by_id {
        true => id.to_string(),
        false => name.0.to_string(),
    };
    let mut asks = Vec::new();
    for t in &req.topics {
        for p in &t.partitions {
            let position = Position {
                offset: Offset(p.fetch_offset),
                max_bytes: p.partition_max_bytes.max(0) as usize,
                leader_epoch: LeaderEpoch(p.current_leader_epoch),
                log_start: Offset(p.log_start_offset),
                topic_id: t.topic_id,
                known_high_watermark: p.high_watermark,
            };
            asks.push(((key(&t.topic, t.topic_id), p.partition), position));
        }
    }
    let forgotten: Vec<(String, i32)> = req
        .forgotten_topics_data
        .iter()
        .flat_map(|t| {
            let k = key(&t.topic, t.topic_id);
            t.partitions.iter().map(move |&p| (k.clone(), p))
        })
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
            return Ok(Reply::Parts(
                fetch_response::encode(head, Vec::new(), &[]).0,
            ));
        }
    };
    let replica = match ctx.version() >= REPLICA_STATE_VERSION_MIN {
        true => req.replica_state.replica_id.0,
        false => req.replica_id.0,
    };
    if replica >= 0 {
        tracing::debug!(target: REPLICA_FETCH_TARGET, replica, "replica fetch received");
    }
    // A follower needs CLUSTER_ACTION; a consumer READ on each topic,
    // asked once per topic (and not at all without an authorizer: this
    // is the fetch path).
    let checking = shard.broker.authorizer.enabled();
    let follower_allowed = replica < 0 || ctx.cluster_allowed(Operation::ClusterAction);
    // A follower's fetch is replication, not a client's request: no
    // client quota counts it (Kafka exempts it too).
    ctx.quota_exempt.set(replica >= 0 && follower_allowed);
    let mut verdicts: HashMap<String, bool> = HashMap::new();
    let mut denied = |topic: &str| match (checking, replica >= 0) {
        (false, _) => false,
        (true, true) => !follower_allowed,
        (true, false) => match verdicts.get(topic) {
            Some(denied) => *denied,
            None => {
                let denied = !ctx.allowed(Operation::Read, ResourceType::Topic, topic);
                verdicts.insert(topic.to_string(), denied);
                denied
            }
        },
    };
    let committed = replica < 0 && req.isolation_level == 1;
    let mut wants = wants(shard, replica, by_id, plan.asks, &mut denied);
    wants.iter_mut().for_each(|w| w.committed = committed);
    let wait = Duration::from_millis((req.max_wait_ms.max(0) as u64).min(MAX_WAIT_MS_MAX));
    let deadline = Instant::now() + wait;
    let min_bytes = req.min_bytes.max(0) as usize;
    let (mut got, mut news) = read_all(shard, &wants, min_bytes.max(1)).await;
    let mut parked = None;
    loop {
        let total: usize = got.iter().map(|g| g.bytes).sum();
        let errored = got.iter().any(|g| g.error.is_some());
        let now = Instant::now();
        if total >= min_bytes.max(1)
            || errored
            || news_of_high_watermark(&wants, &got)
            || now >= deadline
        {
            break;
        }
        parked.get_or_insert(now);
        wait_any(news, deadline - now).await;
        (got, news) = read_all(shard, &wants, min_bytes.max(1)).await;
    }
    if let Some(since) = parked {
        crate::metrics::fetch_waited(replica >= 0, since.elapsed());
    }
    // A consumer's response stays within what its quota lets through in
    // a window (replicas have no client quota, as in Kafka).
    let quota_max = match replica < 0 {
        true => ctx
            .with_quotas(|m, q, who| m.fetch_bytes_max(q, who))
            .flatten(),
        false => None,
    };
    let bytes_max = (req.max_bytes.max(0) as usize).min(quota_max.unwrap_or(usize::MAX));
    trim_to(&mut got, bytes_max);
    if replica < 0 {
        if let Some(throttle) = over_quota(ctx, &got) {
            // As Kafka: a throttled fetch is answered empty and its bytes
            // not counted; a full fetch opens no session (the client asks
            // again in full), an incremental one goes on in its session.
            let session_id = match plan.kind {
                Kind::Incremental { id } => {
                    ctx.client.fetch_session.set(session);
                    id
                }
                _ => 0,
            };
            let mut head = head(ctx, ErrorCode::None, session_id);
            head.throttle_time_ms = throttle_ms(throttle);
            return Ok(Reply::Parts(
                fetch_response::encode(head, Vec::new(), &[]).0,
            ));
        }
    }
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
    let (topics, endpoints) = group(shard, answer, &ctx.client.listener);
    let (parts, _size) = fetch_response::encode(head, topics, &endpoints);
    Ok(Reply::Parts(parts))
}

/// Whether a follower that said which high watermark it knows (v18)
/// would learn a newer one: then it is answered at once, as its own
/// high watermark, and so its consumers, wait on it.
fn news_of_high_watermark(wants: &[Want], got: &[Got]) -> bool {
    wants.iter().zip(got).any(|(w, g)| {
        w.replica.is_some()
            && g.error.is_none()
            && g.marks.high_watermark.0 > w.known_high_watermark
    })
}

/// Records a consumer's fetch against its consumer quota: the throttle
/// if that takes it over (the bytes then taken back).
fn over_quota(ctx: &Ctx<'_>, got: &[Got]) -> Option<Duration> {
    let bytes = got.iter().map(|g| g.bytes).sum::<usize>() as f64;
    let throttle = ctx.record_quota(QuotaKey::ConsumerByteRate, bytes);
    if throttle.is_zero() {
        return None;
    }
    ctx.with_quotas(|m, q, who| m.unrecord(q, who, QuotaKey::ConsumerByteRate, bytes));
    Some(throttle)
}

/// A throttle as `throttle_time_ms`.
pub fn throttle_ms(throttle: Duration) -> i32 {
    i32::try_from(throttle.as_millis()).unwrap_or(i32::MAX)
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
/// partition this broker does not know). `by_id`: the keys are topic ids.
fn wants(
    shard: &Shard,
    replica_id: i32,
    by_id: bool,
    asks: Vec<fetch_session::Ask<Position>>,
    denied: &mut dyn FnMut(&str) -> bool,
) -> Vec<Want> {
    let snapshot = shard.metadata();
    asks.into_iter()
        .map(|((key, partition), pos)| {
            let meta = match by_id {
                true => snapshot.topic_by_id(pos.topic_id),
                false => snapshot.topic(&key),
            };
            let owner = meta
                .filter(|m| partition >= 0 && partition < m.partitions)
                .map(|m| shard.owner(m, partition));
            let no_owner = match (by_id, meta) {
                (true, None) => ErrorCode::UnknownTopicId,
                _ => ErrorCode::UnknownTopicOrPartition,
            };
            let topic = match (by_id, meta) {
                (true, m) => m.map(|m| m.name.clone()).unwrap_or_default(),
                (false, _) => key.clone(),
            };
            let (owner, no_owner) = match !topic.is_empty() && denied(&topic) {
                true => (None, ErrorCode::TopicAuthorizationFailed),
                false => (owner, no_owner),
            };
            Want {
                key,
                topic,
                topic_id: pos.topic_id,
                partition,
                offset: pos.offset,
                max_bytes: pos.max_bytes,
                owner,
                no_owner,
                known_high_watermark: pos.known_high_watermark,
                committed: false,
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
                &(w.key.clone(), w.partition),
                g.bytes > 0 || g.error.is_some(),
                (
                    g.marks.high_watermark.0,
                    g.last_stable.0,
                    g.marks.log_start.0,
                ),
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

/// The answer by topic, in request order, with the endpoints of the
/// leaders named to clients that asked the wrong broker.
fn group(
    shard: &Shard,
    answer: Vec<(Want, Got)>,
    listener: &str,
) -> (Vec<TopicData<FileRegion>>, Vec<NodeEndpoint>) {
    let snapshot = shard.metadata();
    let mut topics: Vec<TopicData<FileRegion>> = Vec::new();
    let mut leaders = std::collections::BTreeSet::new();
    for (w, g) in answer {
        let current_leader = match g.error {
            Some(ErrorCode::NotLeaderOrFollower | ErrorCode::FencedLeaderEpoch) => {
                current_leader(&snapshot, &w.topic, w.partition)
            }
            _ => None,
        };
        if let Some(l) = current_leader {
            leaders.insert(l.leader_id);
        }
        let hw = g.marks.high_watermark.0;
        let data = PartitionData {
            partition_index: w.partition,
            error_code: g.error.unwrap_or(ErrorCode::None),
            high_watermark: if g.error.is_some() { -1 } else { hw },
            last_stable_offset: if g.error.is_some() {
                -1
            } else {
                g.last_stable.0
            },
            // Also with OFFSET_OUT_OF_RANGE to a follower, so that one
            // behind the log start knows where to start again; a consumer
            // gets -1 with any error, as from Kafka.
            log_start_offset: match g.error {
                None => g.marks.log_start.0,
                Some(ErrorCode::OffsetOutOfRange) if w.replica.is_some() => g.marks.log_start.0,
                Some(_) => -1,
            },
            aborted_transactions: g.aborted,
            current_leader,
            records: g.regions,
        };
        match topics.last_mut() {
            Some(t) if t.name == w.topic && t.topic_id == w.topic_id.into_bytes() => {
                t.partitions.push(data)
            }
            _ => topics.push(TopicData {
                name: w.topic,
                topic_id: w.topic_id.into_bytes(),
                partitions: vec![data],
            }),
        }
    }
    let endpoints = leaders
        .into_iter()
        .filter_map(|id| {
            let (host, port) = snapshot.brokers.get(&id)?.endpoint(listener)?;
            Some(NodeEndpoint {
                node_id: id,
                host: host.to_string(),
                port: i32::from(port),
                rack: None,
            })
        })
        .collect();
    (topics, endpoints)
}

/// The leader and leader epoch of a partition, from the metadata snapshot.
pub(super) fn current_leader(
    snapshot: &crate::metadata::Snapshot,
    topic: &str,
    partition: i32,
) -> Option<LeaderIdAndEpoch> {
    let state = snapshot.topic(topic)?.partition(partition)?;
    let leader = state.leader?;
    Some(LeaderIdAndEpoch {
        leader_id: leader.0,
        leader_epoch: state.leader_epoch.0,
    })
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

/// Reads every partition asked for on its owner shard, one trip to each.
/// An owner whose partitions hold fewer than `min_bytes` (and answered no
/// error) also watches them in the same trip: were the fetch to park, it
/// parks on those receivers without another trip to every owner.
async fn read_all(
    shard: &Rc<Shard>,
    wants: &[Want],
    min_bytes: usize,
) -> (Vec<Got>, Vec<oneshot::Receiver<()>>) {
    let mut got: Vec<Got> = wants
        .iter()
        .map(|w| Got {
            error: w.owner.is_none().then_some(w.no_owner),
            ..Got::default()
        })
        .collect();
    let jobs = by_owner(wants).into_iter().map(|(owner, list)| {
        shard.invoke_on(owner, move |s| async move {
            let read: Vec<(usize, Got)> = list.iter().map(|(i, w)| (*i, read_one(&s, w))).collect();
            let bytes: usize = read.iter().map(|(_, g)| g.bytes).sum();
            let errored = read.iter().any(|(_, g)| g.error.is_some());
            let news = match bytes < min_bytes && !errored {
                true => list
                    .iter()
                    .filter_map(|(_, w)| s.serving_partition(&w.topic, w.partition))
                    .map(|p| p.watch())
                    .collect(),
                false => Vec::new(),
            };
            (read, news)
        })
    });
    let mut news = Vec::new();
    for result in futures::future::join_all(jobs).await {
        match result {
            Ok((list, watching)) => {
                list.into_iter().for_each(|(i, g)| got[i] = g);
                news.extend(watching);
            }
            Err(e) => tracing::error!(error = %e, "fetch forwarding failed"),
        }
    }
    (got, news)
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
    let last_stable = p.last_stable_offset();
    if w.committed {
        return match p.read_committed(w.offset, w.max_bytes) {
            Ok((r, aborted)) => Got {
                error: None,
                marks,
                last_stable,
                aborted: Some(
                    aborted
                        .iter()
                        .map(|a| (a.producer_id, a.first_offset.0))
                        .collect(),
                ),
                regions: r.regions,
                bytes: r.bytes,
            },
            Err(e) => Got {
                error: Some(error_code(&e)),
                marks,
                ..Got::default()
            },
        };
    }
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
            last_stable,
            aborted: None,
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

/// Parks until any watched partition has news, or `timeout`.
async fn wait_any(news: Vec<oneshot::Receiver<()>>, timeout: Duration) {
    let timer = glommio::timer::sleep(timeout);
    if news.is_empty() {
        timer.await;
        return;
    }
    let any = futures::future::select_all(news);
    futures::pin_mut!(timer);
    let _ = futures::future::select(any, timer).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want(replica: bool, known_high_watermark: i64) -> Want {
        Want {
            key: "t".into(),
            topic: "t".into(),
            topic_id: uuid::Uuid::nil(),
            partition: 0,
            offset: Offset(10),
            max_bytes: 1 << 20,
            owner: Some(0),
            no_owner: ErrorCode::UnknownTopicOrPartition,
            replica: replica.then_some(ReplicaFetch {
                replica: NodeId(2),
                leader_epoch: LeaderEpoch(1),
                fetch_offset: Offset(10),
                log_start: Offset(0),
            }),
            known_high_watermark,
            committed: false,
        }
    }

    fn got(high_watermark: i64, error: Option<ErrorCode>) -> Got {
        let mut g = Got {
            error,
            ..Got::default()
        };
        g.marks.high_watermark = Offset(high_watermark);
        g
    }

    /// KIP-1166: only a follower that said which high watermark it knows,
    /// and knows an older one, is answered without parking.
    #[test]
    fn a_follower_behind_on_the_high_watermark_is_news() {
        let news = |w: Want, g: Got| news_of_high_watermark(&[w], &[g]);
        assert!(news(want(true, 5), got(7, None)));
        assert!(news(want(true, -1), got(0, None)), "knows none");
        assert!(!news(want(true, 7), got(7, None)), "up to date");
        assert!(!news(want(true, i64::MAX), got(7, None)), "before v18");
        assert!(!news(want(false, 5), got(7, None)), "a consumer");
        let failed = got(7, Some(ErrorCode::NotLeaderOrFollower));
        assert!(!news(want(true, 5), failed), "an error is news already");
    }
}
