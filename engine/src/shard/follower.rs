//! A follower's fetcher: one task per leader broker on each shard, for
//! every partition of that shard that follows it, as Kafka's replica
//! fetcher does. Each round it asks every partition's model what to send:
//! those that must first find a divergent tail go together in one
//! OffsetForLeaderEpoch, the others in one Fetch from their log ends,
//! both over the Kafka protocol with this broker's id as `replica_id`;
//! the answers go back partition by partition. It ends when no partition
//! of its shard follows that leader any more.
//!
//! Fetches run in an incremental fetch session (KIP-227): after the first,
//! full one, a Fetch names only the partitions whose position changed, and
//! the leader answers only those with news, so quiet partitions cost
//! neither side anything per round trip. A refused session is dropped and
//! the next Fetch opens a new one.

use super::partition::{now_ms, Partition};
use super::Shard;
use crate::replication::state::{EpochResponse, FollowerRequest};
use crate::replication::NodeId;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ForgottenTopic};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::{
    ApiKey, BrokerId, FetchRequest, FetchResponse, OffsetForLeaderEpochRequest,
    OffsetForLeaderEpochResponse, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use sluice_protocol::{ErrorCode, LeaderEpoch, Offset};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

const FETCH_VERSION: i16 = 12;
const EPOCH_VERSION: i16 = 4;
/// How long the leader may hold a follower's Fetch waiting for data.
const FETCH_WAIT_MS: i32 = 500;
/// `replica.fetch.max.bytes`'s default.
const FETCH_PARTITION_MAX_BYTES: i32 = 1 << 20;
const FETCH_MAX_BYTES: i32 = 10 << 20;
/// Pause after an error before trying again.
const BACKOFF: Duration = Duration::from_millis(100);

/// One Kafka connection to a leader.
struct Conn {
    link: super::broker_client::BrokerConn,
    session: Option<Session>,
}

/// The fetch session open on a connection: its id, the epoch of the next
/// Fetch, and each partition's (leader epoch, offset, log start) as last
/// sent.
struct Session {
    id: i32,
    epoch: i32,
    sent: HashMap<(String, i32), (LeaderEpoch, Offset, Offset)>,
}

impl Session {
    /// The asks to send (new or moved) and the partitions to forget.
    fn changes<'a>(&self, asks: &'a [FetchAsk]) -> (Vec<&'a FetchAsk>, Vec<(String, i32)>) {
        let send = asks
            .iter()
            .filter(|a| self.sent.get(&a.key()) != Some(&a.position()))
            .collect();
        let forget = self
            .sent
            .keys()
            .filter(|k| {
                !asks
                    .iter()
                    .any(|a| a.partition.topic == k.0 && a.partition.index == k.1)
            })
            .cloned()
            .collect();
        (send, forget)
    }
}

impl Conn {
    async fn call<Req: Encodable, Resp: Decodable>(
        &mut self,
        key: ApiKey,
        version: i16,
        req: &Req,
    ) -> std::io::Result<Resp> {
        self.link.call(key, version, req).await
    }
}

/// Starts the fetcher for `leader` on this shard unless one runs.
pub fn ensure_fetcher(shard: &Rc<Shard>, leader: NodeId) {
    if shard.fetchers.borrow_mut().insert(leader.0) {
        glommio::spawn_local(follow(Rc::clone(shard), leader)).detach();
    }
}

/// Fetches for every partition of this shard that follows `leader`.
async fn follow(shard: Rc<Shard>, leader: NodeId) {
    let me = shard.broker.config.node_id;
    let mut conn: Option<Conn> = None;
    tracing::info!(leader = leader.0, "replica fetcher started");
    while !shard.broker.stopping() {
        let (epochs, fetches) = requests(&shard, leader);
        if epochs.is_empty() && fetches.is_empty() {
            break;
        }
        if conn.is_none() {
            conn = connect(&shard, leader).await;
            if conn.is_none() {
                glommio::timer::sleep(BACKOFF).await;
                continue;
            }
        }
        let c = conn.as_mut().expect("connected");
        let outcome = if !epochs.is_empty() {
            truncate(me, c, &epochs).await
        } else {
            fetch(me, c, &fetches).await
        };
        match outcome {
            Ok(false) => {}
            // The leader refused something: wait for the metadata to say more.
            Ok(true) => glommio::timer::sleep(BACKOFF).await,
            Err(e) => {
                tracing::debug!(leader = leader.0, error = %e, "fetch from leader failed");
                conn = None;
                glommio::timer::sleep(BACKOFF).await;
            }
        }
    }
    shard.fetchers.borrow_mut().remove(&leader.0);
    tracing::info!(leader = leader.0, "replica fetcher stopped");
}

/// A partition's next OffsetForLeaderEpoch: (partition, current epoch, asked epoch).
type EpochAsk = (Rc<Partition>, LeaderEpoch, LeaderEpoch);
/// A partition's next Fetch.
struct FetchAsk {
    partition: Rc<Partition>,
    /// The leader epoch it follows.
    epoch: LeaderEpoch,
    offset: Offset,
    /// Its log start, which the leader's low watermark waits for.
    log_start: Offset,
}

impl FetchAsk {
    fn key(&self) -> (String, i32) {
        (self.partition.topic.clone(), self.partition.index)
    }

    fn position(&self) -> (LeaderEpoch, Offset, Offset) {
        (self.epoch, self.offset, self.log_start)
    }
}

/// What every partition of this shard following `leader` sends next.
fn requests(shard: &Shard, leader: NodeId) -> (Vec<EpochAsk>, Vec<FetchAsk>) {
    let (mut epochs, mut fetches) = (Vec::new(), Vec::new());
    let mut partitions = shard.partitions();
    partitions.sort_by(|a, b| (&a.topic, a.index).cmp(&(&b.topic, b.index)));
    for p in partitions {
        match p.follower_request() {
            Some(FollowerRequest::Epoch { leader: l, request }) if l == leader => {
                epochs.push((p, request.leader_epoch, request.requested_epoch));
            }
            Some(FollowerRequest::Fetch { leader: l, request }) if l == leader => {
                fetches.push(FetchAsk {
                    partition: p,
                    epoch: request.leader_epoch,
                    offset: request.fetch_offset,
                    log_start: request.log_start,
                });
            }
            _ => {}
        }
    }
    (epochs, fetches)
}

/// Asks where each partition's newest epoch ends and truncates there;
/// `Ok(true)` when the leader refused any.
async fn truncate(me: i32, c: &mut Conn, asks: &[EpochAsk]) -> std::io::Result<bool> {
    let body = epoch_request(me, asks);
    let resp: OffsetForLeaderEpochResponse = c
        .call(ApiKey::OffsetForLeaderEpoch, EPOCH_VERSION, &body)
        .await?;
    let mut refused = false;
    for (p, current, requested) in asks {
        let answer = epoch_answer(&resp, p, *current, *requested);
        refused |= answer.result.is_err();
        if let Err(e) = p.on_epoch_response(answer) {
            tracing::error!(topic = %p.topic, partition = p.index, error = %e, "truncating to the leader failed");
        }
    }
    Ok(refused)
}

/// One Fetch for every partition; appends what came. `Ok(true)` when the
/// leader refused any.
async fn fetch(me: i32, c: &mut Conn, asks: &[FetchAsk]) -> std::io::Result<bool> {
    let body = match &c.session {
        Some(s) => {
            let (send, forget) = s.changes(asks);
            fetch_request(me, send.into_iter(), &forget)
                .with_session_id(s.id)
                .with_session_epoch(s.epoch)
        }
        // Epoch 0 asks the leader to open a session.
        None => fetch_request(me, asks.iter(), &[]).with_session_epoch(0),
    };
    let resp: FetchResponse = c.call(ApiKey::Fetch, FETCH_VERSION, &body).await?;
    if resp.error_code != 0 {
        // The leader lost or refused the session: start a new one at once.
        tracing::debug!(code = resp.error_code, "fetch session refused");
        c.session = None;
        return Ok(false);
    }
    let incremental = c.session.is_some();
    match &mut c.session {
        Some(s) => s.epoch = if s.epoch == i32::MAX { 1 } else { s.epoch + 1 },
        None if resp.session_id != 0 => {
            c.session = Some(Session {
                id: resp.session_id,
                epoch: 1,
                sent: HashMap::new(),
            });
        }
        None => {}
    }
    // The leader's session now holds exactly these positions.
    if let Some(s) = &mut c.session {
        s.sent = asks.iter().map(|a| (a.key(), a.position())).collect();
    }
    let mut refused = false;
    for FetchAsk {
        partition: p,
        epoch,
        offset,
        ..
    } in asks
    {
        let part = resp
            .responses
            .iter()
            .filter(|t| t.topic.0.as_str() == p.topic)
            .flat_map(|t| t.partitions.iter())
            .find(|r| r.partition_index == p.index);
        let Some(part) = part else {
            // An incremental answer leaves out partitions with no news.
            refused |= !incremental;
            continue;
        };
        if part.error_code == ErrorCode::OffsetOutOfRange.code() && part.log_start_offset > offset.0
        {
            // The leader deleted everything from here on (retention or
            // DeleteRecords): start again where its log starts.
            p.restart_at(Offset(part.log_start_offset))
                .map_err(std::io::Error::other)?;
            continue;
        }
        if part.error_code != 0 {
            tracing::debug!(topic = %p.topic, partition = p.index, code = part.error_code, "leader refused a fetch");
            refused = true;
            continue;
        }
        let records = part.records.clone().unwrap_or_default();
        p.on_fetch_response(
            *epoch,
            *offset,
            &records,
            Offset(part.high_watermark),
            Offset(part.log_start_offset),
            now_ms(),
        )
        .await
        .map_err(std::io::Error::other)?;
    }
    Ok(refused)
}

async fn connect(shard: &Shard, leader: NodeId) -> Option<Conn> {
    let link = super::broker_client::BrokerConn::connect(shard, leader.0, "sluice-replica-fetcher")
        .await?;
    Some(Conn {
        link,
        session: None,
    })
}

fn topic_name(p: &Partition) -> TopicName {
    TopicName(StrBytes::from_string(p.topic.clone()))
}

fn epoch_request(me: i32, asks: &[EpochAsk]) -> OffsetForLeaderEpochRequest {
    let mut topics: Vec<OffsetForLeaderTopic> = Vec::new();
    for (p, current, requested) in asks {
        let part = OffsetForLeaderPartition::default()
            .with_partition(p.index)
            .with_current_leader_epoch(current.0)
            .with_leader_epoch(requested.0);
        match topics.last_mut() {
            Some(t) if t.topic.0.as_str() == p.topic => t.partitions.push(part),
            _ => topics.push(
                OffsetForLeaderTopic::default()
                    .with_topic(topic_name(p))
                    .with_partitions(vec![part]),
            ),
        }
    }
    OffsetForLeaderEpochRequest::default()
        .with_replica_id(BrokerId(me))
        .with_topics(topics)
}

fn epoch_answer(
    resp: &OffsetForLeaderEpochResponse,
    p: &Partition,
    current: LeaderEpoch,
    requested: LeaderEpoch,
) -> EpochResponse {
    let part = resp
        .topics
        .iter()
        .filter(|t| t.topic.0.as_str() == p.topic)
        .flat_map(|t| t.partitions.iter())
        .find(|r| r.partition == p.index);
    let result = match part {
        None => Err(ErrorCode::UnknownServerError),
        Some(r) if r.error_code != 0 => Err(ErrorCode::from_code(r.error_code)),
        Some(r) if r.end_offset < 0 => Ok(None),
        Some(r) => Ok(Some((LeaderEpoch(r.leader_epoch), Offset(r.end_offset)))),
    };
    EpochResponse {
        leader_epoch: current,
        requested_epoch: requested,
        result,
    }
}

/// A Fetch of `asks` that drops `forget` from the session.
fn fetch_request<'a>(
    me: i32,
    asks: impl Iterator<Item = &'a FetchAsk>,
    forget: &[(String, i32)],
) -> FetchRequest {
    let mut topics: Vec<FetchTopic> = Vec::new();
    for a in asks {
        let p = &a.partition;
        let part = FetchPartition::default()
            .with_partition(p.index)
            .with_current_leader_epoch(a.epoch.0)
            .with_fetch_offset(a.offset.0)
            .with_log_start_offset(a.log_start.0)
            .with_partition_max_bytes(FETCH_PARTITION_MAX_BYTES);
        match topics.last_mut() {
            Some(t) if t.topic.0.as_str() == p.topic => t.partitions.push(part),
            _ => topics.push(
                FetchTopic::default()
                    .with_topic(topic_name(p))
                    .with_partitions(vec![part]),
            ),
        }
    }
    FetchRequest::default()
        .with_replica_id(BrokerId(me))
        .with_max_wait_ms(FETCH_WAIT_MS)
        .with_min_bytes(1)
        .with_max_bytes(FETCH_MAX_BYTES)
        .with_topics(topics)
        .with_forgotten_topics_data(forgotten_topics(forget))
}

fn forgotten_topics(forget: &[(String, i32)]) -> Vec<ForgottenTopic> {
    let mut topics: Vec<ForgottenTopic> = Vec::new();
    for (topic, index) in forget {
        match topics.iter_mut().find(|t| t.topic.0.as_str() == topic) {
            Some(t) => t.partitions.push(*index),
            None => topics.push(
                ForgottenTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(topic.clone())))
                    .with_partitions(vec![*index]),
            ),
        }
    }
    topics
}
