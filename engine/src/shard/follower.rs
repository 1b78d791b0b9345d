//! A follower's fetcher: one task per partition this broker follows, on
//! the shard that owns it. It asks the partition's model what to send
//! (OffsetForLeaderEpoch to find a divergent tail, then Fetch from its
//! log end), sends it to the leader over the Kafka protocol with this
//! broker's id as `replica_id`, and hands the answer back. It ends when
//! the partition stops following (it leads, goes offline or is deleted).

use super::partition::{now_ms, Partition};
use super::Shard;
use crate::replication::state::{EpochResponse, FollowerRequest};
use crate::replication::NodeId;
use bytes::{Bytes, BytesMut};
use futures::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::{
    ApiKey, BrokerId, FetchRequest, FetchResponse, OffsetForLeaderEpochRequest,
    OffsetForLeaderEpochResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use sluice_protocol::{ErrorCode, LeaderEpoch, Offset};
use std::net::ToSocketAddrs;
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
/// A leader that does not answer within this is given up on.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// One Kafka connection to a leader.
struct Conn {
    leader: NodeId,
    stream: TcpStream,
    correlation_id: i32,
}

impl Conn {
    async fn call<Req: Encodable, Resp: Decodable>(
        &mut self,
        key: ApiKey,
        version: i16,
        req: &Req,
    ) -> std::io::Result<Resp> {
        let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("sluice-replica-fetcher")));
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[0; 4]);
        header
            .encode(&mut buf, key.request_header_version(version))
            .map_err(|e| invalid(e.to_string()))?;
        req.encode(&mut buf, version)
            .map_err(|e| invalid(e.to_string()))?;
        let len = (buf.len() - 4) as u32;
        buf[..4].copy_from_slice(&len.to_be_bytes());
        let exchange = async {
            self.stream.write_all(&buf).await?;
            let mut len = [0u8; 4];
            self.stream.read_exact(&mut len).await?;
            let mut frame = vec![0u8; u32::from_be_bytes(len) as usize];
            self.stream.read_exact(&mut frame).await?;
            Ok::<_, std::io::Error>(frame)
        };
        let frame = glommio::timer::timeout(CALL_TIMEOUT, async { Ok(exchange.await?) })
            .await
            .map_err(std::io::Error::from)?;
        let mut body = Bytes::from(frame);
        let h = ResponseHeader::decode(&mut body, key.response_header_version(version))
            .map_err(|e| invalid(e.to_string()))?;
        if h.correlation_id != self.correlation_id {
            return Err(invalid("answer to another request".into()));
        }
        Resp::decode(&mut body, version).map_err(|e| invalid(e.to_string()))
    }
}

/// Follows the leader of `p` until it no longer follows one.
pub async fn follow(shard: Rc<Shard>, p: Rc<Partition>) {
    let me = shard.broker.config.node_id;
    let mut conn: Option<Conn> = None;
    tracing::info!(topic = %p.topic, partition = p.index, leader = ?p.following(), "following");
    loop {
        if shard.broker.stopping() || !is_current(&shard, &p) {
            break;
        }
        let Some(req) = p.follower_request() else {
            break;
        };
        let leader = match req {
            FollowerRequest::Epoch { leader, .. } | FollowerRequest::Fetch { leader, .. } => leader,
        };
        if conn.as_ref().is_none_or(|c| c.leader != leader) {
            conn = connect(&shard, leader).await;
            if conn.is_none() {
                glommio::timer::sleep(BACKOFF).await;
                continue;
            }
        }
        let c = conn.as_mut().expect("connected");
        let outcome = match req {
            FollowerRequest::Epoch { request, .. } => {
                let body = epoch_request(me, &p, request.leader_epoch, request.requested_epoch);
                match c
                    .call::<_, OffsetForLeaderEpochResponse>(
                        ApiKey::OffsetForLeaderEpoch,
                        EPOCH_VERSION,
                        &body,
                    )
                    .await
                {
                    Ok(resp) => {
                        let answer =
                            epoch_answer(&resp, request.leader_epoch, request.requested_epoch);
                        let retry = answer.result.is_err();
                        if let Err(e) = p.on_epoch_response(answer) {
                            tracing::error!(topic = %p.topic, partition = p.index, error = %e, "truncating to the leader failed");
                        }
                        Ok(retry)
                    }
                    Err(e) => Err(e),
                }
            }
            FollowerRequest::Fetch { request, .. } => {
                let body = fetch_request(me, &p, request.leader_epoch, request.fetch_offset);
                match c
                    .call::<_, FetchResponse>(ApiKey::Fetch, FETCH_VERSION, &body)
                    .await
                {
                    Ok(resp) => {
                        handle_fetch(&p, &resp, request.leader_epoch, request.fetch_offset).await
                    }
                    Err(e) => Err(e),
                }
            }
        };
        match outcome {
            Ok(false) => {}
            // The leader refused: wait for the metadata to say more.
            Ok(true) => glommio::timer::sleep(BACKOFF).await,
            Err(e) => {
                tracing::debug!(topic = %p.topic, partition = p.index, error = %e, "fetch from leader failed");
                conn = None;
                glommio::timer::sleep(BACKOFF).await;
            }
        }
    }
    p.fetching.set(false);
    tracing::info!(topic = %p.topic, partition = p.index, "stopped following");
}

/// Whether `p` is still the partition this shard holds under its name.
fn is_current(shard: &Shard, p: &Rc<Partition>) -> bool {
    shard
        .partition(&p.topic, p.index)
        .is_some_and(|q| Rc::ptr_eq(&q, p))
}

async fn connect(shard: &Shard, leader: NodeId) -> Option<Conn> {
    let snapshot = shard.metadata();
    let b = snapshot.brokers.get(&leader.0)?;
    let addr = (b.host.as_str(), b.port).to_socket_addrs().ok()?.next()?;
    let stream = TcpStream::connect(addr).await.ok()?;
    let _ = stream.set_nodelay(true);
    Some(Conn {
        leader,
        stream,
        correlation_id: 0,
    })
}

fn topic_name(p: &Partition) -> TopicName {
    TopicName(StrBytes::from_string(p.topic.clone()))
}

fn epoch_request(
    me: i32,
    p: &Partition,
    current: LeaderEpoch,
    requested: LeaderEpoch,
) -> OffsetForLeaderEpochRequest {
    let part = OffsetForLeaderPartition::default()
        .with_partition(p.index)
        .with_current_leader_epoch(current.0)
        .with_leader_epoch(requested.0);
    OffsetForLeaderEpochRequest::default()
        .with_replica_id(BrokerId(me))
        .with_topics(vec![OffsetForLeaderTopic::default()
            .with_topic(topic_name(p))
            .with_partitions(vec![part])])
}

fn epoch_answer(
    resp: &OffsetForLeaderEpochResponse,
    current: LeaderEpoch,
    requested: LeaderEpoch,
) -> EpochResponse {
    let part = resp.topics.first().and_then(|t| t.partitions.first());
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

fn fetch_request(me: i32, p: &Partition, epoch: LeaderEpoch, offset: Offset) -> FetchRequest {
    let part = FetchPartition::default()
        .with_partition(p.index)
        .with_current_leader_epoch(epoch.0)
        .with_fetch_offset(offset.0)
        .with_log_start_offset(-1)
        .with_partition_max_bytes(FETCH_PARTITION_MAX_BYTES);
    FetchRequest::default()
        .with_replica_id(BrokerId(me))
        .with_max_wait_ms(FETCH_WAIT_MS)
        .with_min_bytes(1)
        .with_max_bytes(FETCH_MAX_BYTES)
        .with_topics(vec![FetchTopic::default()
            .with_topic(topic_name(p))
            .with_partitions(vec![part])])
}

/// Appends what the leader sent; `Ok(true)` when it refused.
async fn handle_fetch(
    p: &Partition,
    resp: &FetchResponse,
    epoch: LeaderEpoch,
    offset: Offset,
) -> std::io::Result<bool> {
    let part = resp.responses.first().and_then(|t| t.partitions.first());
    let Some(part) = part else {
        return Ok(true);
    };
    if part.error_code != 0 {
        tracing::debug!(topic = %p.topic, partition = p.index, code = part.error_code, "leader refused a fetch");
        return Ok(true);
    }
    let records = part.records.clone().unwrap_or_default();
    p.on_fetch_response(
        epoch,
        offset,
        &records,
        Offset(part.high_watermark),
        now_ms(),
    )
    .await
    .map_err(std::io::Error::other)?;
    Ok(false)
}
