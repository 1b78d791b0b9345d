//! Request handlers, one module per API. Each decodes its request, does
//! the work (on this shard or the owner shards) and encodes the response.

mod acls;
mod admin;
mod api_versions;
mod authz;
mod client_quotas;
mod consumer_group;
mod delete_records;
mod describe_producers;
mod describe_topic_partitions;
mod fetch;
mod fetch_session;
mod group;
mod list_offsets;
mod metadata;
mod offset_for_leader_epoch;
mod produce;
mod produce_records;
mod produce_time;
mod scram_credentials;
mod txn;
pub mod write_txn_markers;

use crate::security::{Principal, SecurityProtocol};
use crate::shard::Shard;
use bytes::{Bytes, BytesMut};
use futures::future::LocalBoxFuture;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::{Decodable, Encodable};
use sluice_protocol::api_versions::{codec_version, is_supported};
use sluice_protocol::fetch_response::Part;
use sluice_protocol::header::{put_response_header, response_header_is_flexible, RequestHeader};
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::rc::Rc;

use crate::storage::segment::FileRegion;

/// What to send back.
#[derive(Debug)]
pub enum Reply {
    /// Nothing (Produce with acks=0).
    None,
    /// A whole encoded frame.
    Frame(Vec<u8>),
    /// Encoded bytes interleaved with file regions (Fetch).
    Parts(Vec<Part<FileRegion>>),
    /// An answer still being worked out (acks=all Produce waiting for the
    /// in-sync replicas); later requests are read and handled meanwhile,
    /// and their answers wait behind this one.
    Later(Later),
}

/// The rest of a request's handling, awaited by the connection's writer:
/// it yields the encoded answer.
pub struct Later(pub LocalBoxFuture<'static, Result<Vec<u8>, HandlerError>>);

impl std::fmt::Debug for Later {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Later(..)")
    }
}

/// A request that cannot be answered; the connection is closed.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error("unsupported version {version} of {api:?}")]
    UnsupportedVersion { api: ApiKey, version: i16 },
    #[error("API {0:?} is not implemented")]
    NotImplemented(ApiKey),
    #[error("malformed {api:?} v{version} request: {reason}")]
    Decode {
        api: ApiKey,
        version: i16,
        reason: String,
    },
    #[error("encoding {api:?} v{version} response: {reason}")]
    Encode {
        api: ApiKey,
        version: i16,
        reason: String,
    },
}

/// What a connection keeps between its requests.
pub struct Client {
    /// The client's address as `/IP`, as group descriptions show it.
    pub host: String,
    /// Its incremental fetch session, if it opened one; taken out while a
    /// Fetch is served.
    pub fetch_session: Cell<Option<fetch::FetchSession>>,
    /// The security protocol of the listener the client came in on.
    pub protocol: SecurityProtocol,
    /// The name of that listener: Metadata and FindCoordinator answer
    /// with brokers' addresses on it.
    pub listener: String,
    /// Who the client is: `User:ANONYMOUS` until TLS client
    /// authentication or SASL says otherwise.
    pub principal: RefCell<Principal>,
    /// Until when the connection reads no request: the client went over
    /// a quota (KIP-219).
    pub muted_until: Cell<Option<std::time::Instant>>,
}

impl Client {
    /// A client of a plaintext listener.
    pub fn new(host: String) -> Client {
        Client::on(host, SecurityProtocol::Plaintext)
    }

    /// A client of a listener speaking `protocol`, named after it.
    pub fn on(host: String, protocol: SecurityProtocol) -> Client {
        Client::on_listener(host, protocol, protocol.name())
    }

    /// A client of listener `listener`, speaking `protocol`.
    pub fn on_listener(host: String, protocol: SecurityProtocol, listener: &str) -> Client {
        Client {
            host,
            fetch_session: Cell::new(None),
            protocol,
            listener: listener.to_string(),
            principal: RefCell::new(Principal::anonymous()),
            muted_until: Cell::new(None),
        }
    }

    /// Mutes the connection for `throttle` from now (or longer, if it is
    /// muted longer already).
    pub fn throttle(&self, throttle: std::time::Duration) {
        if throttle.is_zero() {
            return;
        }
        let until = std::time::Instant::now() + throttle;
        let later = self.muted_until.get().map_or(until, |u| u.max(until));
        self.muted_until.set(Some(later));
    }

    /// Who the client is now.
    pub fn principal(&self) -> Principal {
        self.principal.borrow().clone()
    }
}

/// The request being handled, for decoding and encoding.
pub struct Ctx<'a> {
    pub shard: &'a Rc<Shard>,
    pub api: ApiKey,
    pub header: &'a RequestHeader,
    pub client: &'a Client,
    /// Set by a handler whose request no client quota counts: a
    /// follower's fetch (as Kafka exempts cluster actions).
    pub quota_exempt: Cell<bool>,
}

impl Ctx<'_> {
    pub fn version(&self) -> i16 {
        self.header.api_version
    }

    /// Runs `f` with this shard's quota accounting, the snapshot's quotas
    /// and who sent the request; None when no quota exists (nothing is
    /// looked up then).
    pub fn with_quotas<T>(
        &self,
        f: impl FnOnce(
            &crate::quota::QuotaManager,
            &crate::quota::entity::ClientQuotas,
            crate::quota::Requester<'_>,
        ) -> T,
    ) -> Option<T> {
        let snapshot = self.shard.metadata();
        if snapshot.quotas.is_empty() {
            return None;
        }
        let m = crate::quota::manager()?;
        let principal = self.client.principal.borrow();
        let who = crate::quota::Requester {
            user: &principal.name,
            client_id: self.header.client_id.as_deref().unwrap_or(""),
        };
        Some(f(&m, &snapshot.quotas, who))
    }

    /// Records `value` against the client's quota of type `key` and
    /// mutes the connection for the throttle that follows; the throttle,
    /// for the response's `throttle_time_ms`.
    pub fn record_quota(
        &self,
        key: crate::quota::entity::QuotaKey,
        value: f64,
    ) -> std::time::Duration {
        let throttle = self
            .with_quotas(|m, q, who| m.record(q, who, key, value))
            .unwrap_or_default();
        crate::metrics::throttled(key, throttle);
        self.client.throttle(throttle);
        throttle
    }

    /// Decodes the request body with the `kafka-protocol` codec, at the
    /// version laid out as this one (see `codec_version`).
    pub fn decode<T: Decodable>(&self, mut body: Bytes) -> Result<T, HandlerError> {
        T::decode(&mut body, codec_version(self.api, self.version())).map_err(|e| {
            HandlerError::Decode {
                api: self.api,
                version: self.version(),
                reason: e.to_string(),
            }
        })
    }

    /// The outcome of one of `sluice_protocol`'s own decoders (the
    /// versions the codec does not know).
    pub fn decoded<T>(
        &self,
        decoded: Result<T, sluice_protocol::primitives::DecodeError>,
    ) -> Result<T, HandlerError> {
        decoded.map_err(|e| HandlerError::Decode {
            api: self.api,
            version: self.version(),
            reason: e.to_string(),
        })
    }

    /// Frames a response: length, response header, body.
    pub fn respond<T: Encodable>(&self, body: &T) -> Result<Reply, HandlerError> {
        encode_frame(self.api, self.version(), self.header.correlation_id, body).map(Reply::Frame)
    }

    /// Frames a response body encoded by `sluice_protocol` itself.
    pub fn respond_encoded(&self, body: &[u8]) -> Reply {
        let flexible = response_header_is_flexible(self.api, self.version());
        let mut out = Vec::with_capacity(9 + body.len());
        out.extend_from_slice(&[0; 4]);
        put_response_header(&mut out, self.header.correlation_id, flexible);
        out.extend_from_slice(body);
        let len = (out.len() - 4) as i32;
        out[..4].copy_from_slice(&len.to_be_bytes());
        Reply::Frame(out)
    }
}

/// Encodes `[length][response header][body]`, the body at the codec
/// version laid out as `version`.
pub fn encode_frame<T: Encodable>(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &T,
) -> Result<Vec<u8>, HandlerError> {
    let layout = codec_version(api, version);
    let size = body
        .compute_size(layout)
        .map_err(|e| HandlerError::Encode {
            api,
            version,
            reason: e.to_string(),
        })?;
    let mut head = Vec::with_capacity(9);
    head.extend_from_slice(&[0; 4]);
    put_response_header(
        &mut head,
        correlation_id,
        response_header_is_flexible(api, version),
    );
    let mut out = BytesMut::with_capacity(head.len() + size);
    out.extend_from_slice(&head);
    body.encode(&mut out, layout)
        .map_err(|e| HandlerError::Encode {
            api,
            version,
            reason: e.to_string(),
        })?;
    let len = (out.len() - 4) as i32;
    out[..4].copy_from_slice(&len.to_be_bytes());
    Ok(out.to_vec())
}

/// SaslHandshake or SaslAuthenticate where no exchange is expected: on a
/// listener without SASL (a SASL listener's gate takes them before any
/// handler). As Kafka: ILLEGAL_SASL_STATE.
fn sasl_not_expected(ctx: &Ctx<'_>, body: Bytes) -> Result<Reply, HandlerError> {
    use kafka_protocol::messages::{
        SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
        SaslHandshakeResponse,
    };
    let code = sluice_protocol::ErrorCode::IllegalSaslState.code();
    if ctx.api == ApiKey::SaslHandshake {
        let _: SaslHandshakeRequest = ctx.decode(body)?;
        ctx.respond(&SaslHandshakeResponse::default().with_error_code(code))
    } else {
        let _: SaslAuthenticateRequest = ctx.decode(body)?;
        ctx.respond(&SaslAuthenticateResponse::default().with_error_code(code))
    }
}

/// Dispatches one request (the connection counts and times it).
pub async fn handle(
    shard: &Rc<Shard>,
    header: &RequestHeader,
    body: Bytes,
    client: &Client,
) -> Result<Reply, HandlerError> {
    let api =
        sluice_protocol::header::api_key(header.api_key).expect("header parsing checked the key");
    let ctx = Ctx {
        shard,
        api,
        header,
        client,
        quota_exempt: Cell::new(false),
    };
    if shard.metadata().quotas.is_empty() {
        return dispatch(&ctx, api, body).await;
    }
    // The request quota counts the time this shard spent in the handler:
    // its polls, not its waits (a fetch parked for data, a change waiting
    // on the controller), as Kafka counts request-handler thread time and
    // not purgatory.
    let handling = dispatch(&ctx, api, body);
    futures::pin_mut!(handling);
    let mut busy = std::time::Duration::ZERO;
    let reply = futures::future::poll_fn(|cx| {
        let started = std::time::Instant::now();
        let polled = handling.as_mut().poll(cx);
        busy += started.elapsed();
        polled
    })
    .await;
    if ctx.quota_exempt.get() {
        return reply;
    }
    // Percent of one shard's time: 100 per second busy.
    let throttle = ctx.record_quota(
        crate::quota::entity::QuotaKey::RequestPercentage,
        busy.as_secs_f64() * 100.0,
    );
    reply.map(|r| report_throttle(r, api, header.api_version, throttle))
}

/// Writes a request-time throttle into the encoded answer's
/// `throttle_time_ms` (as Kafka, the larger of it and a byte-rate
/// throttle already there), so the client holds back as well as being
/// muted; answers whose throttle has no fixed place keep theirs.
fn report_throttle(
    reply: Reply,
    api: ApiKey,
    version: i16,
    throttle: std::time::Duration,
) -> Reply {
    let Some(at) = sluice_protocol::throttle::throttle_time_at(api, version) else {
        return reply;
    };
    if throttle.is_zero() {
        return reply;
    }
    let header = if response_header_is_flexible(api, version) {
        5
    } else {
        4
    };
    let at = 4 + header + at;
    let ms = i32::try_from(throttle.as_millis()).unwrap_or(i32::MAX);
    let raise = move |frame: &mut [u8]| {
        if let Some(field) = frame.get_mut(at..at + 4) {
            let was = i32::from_be_bytes(field.try_into().expect("4 bytes"));
            field.copy_from_slice(&was.max(ms).to_be_bytes());
        }
    };
    match reply {
        Reply::Frame(mut frame) => {
            raise(&mut frame);
            Reply::Frame(frame)
        }
        Reply::Parts(mut parts) => {
            if let Some(Part::Bytes(b)) = parts.first_mut() {
                raise(b);
            }
            Reply::Parts(parts)
        }
        Reply::Later(Later(rest)) => Reply::Later(Later(Box::pin(async move {
            let mut frame = rest.await?;
            raise(&mut frame);
            Ok(frame)
        }))),
        Reply::None => Reply::None,
    }
}

async fn dispatch(ctx: &Ctx<'_>, api: ApiKey, body: Bytes) -> Result<Reply, HandlerError> {
    let header = ctx.header;
    if api == ApiKey::ApiVersions {
        return api_versions::handle(ctx, body);
    }
    if !is_supported(api, header.api_version) {
        return Err(match sluice_protocol::api_versions::supported_range(api) {
            Some(_) => HandlerError::UnsupportedVersion {
                api,
                version: header.api_version,
            },
            None => HandlerError::NotImplemented(api),
        });
    }
    match api {
        ApiKey::Produce => produce::handle(ctx, body).await,
        ApiKey::Fetch => fetch::handle(ctx, body).await,
        ApiKey::ListOffsets => list_offsets::handle(ctx, body).await,
        ApiKey::DeleteRecords => delete_records::handle(ctx, body).await,
        ApiKey::Metadata => metadata::handle(ctx, body).await,
        ApiKey::CreateTopics => admin::create_topics(ctx, body).await,
        ApiKey::DeleteTopics => admin::delete_topics(ctx, body).await,
        ApiKey::CreatePartitions => admin::create_partitions(ctx, body).await,
        ApiKey::ElectLeaders => admin::elect_leaders(ctx, body).await,
        ApiKey::AlterPartitionReassignments => {
            admin::alter_partition_reassignments(ctx, body).await
        }
        ApiKey::ListPartitionReassignments => admin::list_partition_reassignments(ctx, body),
        ApiKey::DescribeLogDirs => admin::describe_log_dirs(ctx, body).await,
        ApiKey::DescribeConfigs => admin::describe_configs(ctx, body),
        ApiKey::AlterConfigs => admin::alter_configs(ctx, body).await,
        ApiKey::IncrementalAlterConfigs => admin::incremental_alter_configs(ctx, body).await,
        ApiKey::DescribeCluster => admin::describe_cluster(ctx, body),
        ApiKey::DescribeTopicPartitions => describe_topic_partitions::handle(ctx, body),
        ApiKey::DescribeQuorum => admin::describe_quorum(ctx, body).await,
        ApiKey::InitProducerId => admin::init_producer_id(ctx, body).await,
        ApiKey::OffsetForLeaderEpoch => offset_for_leader_epoch::handle(ctx, body).await,
        ApiKey::WriteTxnMarkers => write_txn_markers::handle(ctx, body).await,
        ApiKey::DescribeProducers => describe_producers::handle(ctx, body).await,
        ApiKey::FindCoordinator => group::find_coordinator(ctx, body).await,
        ApiKey::JoinGroup => group::join_group(ctx, body).await,
        ApiKey::SyncGroup => group::sync_group(ctx, body).await,
        ApiKey::Heartbeat => group::heartbeat(ctx, body).await,
        ApiKey::LeaveGroup => group::leave_group(ctx, body).await,
        ApiKey::OffsetCommit => group::offset_commit(ctx, body).await,
        ApiKey::OffsetFetch => group::offset_fetch(ctx, body).await,
        ApiKey::TxnOffsetCommit => group::txn_offset_commit(ctx, body).await,
        ApiKey::ListGroups => group::list_groups(ctx, body).await,
        ApiKey::DescribeGroups => group::describe_groups(ctx, body).await,
        ApiKey::DeleteGroups => group::delete_groups(ctx, body).await,
        ApiKey::OffsetDelete => group::offset_delete(ctx, body).await,
        ApiKey::ConsumerGroupHeartbeat => consumer_group::heartbeat(ctx, body).await,
        ApiKey::ConsumerGroupDescribe => consumer_group::describe(ctx, body).await,
        ApiKey::AlterUserScramCredentials => scram_credentials::alter(ctx, body).await,
        ApiKey::DescribeUserScramCredentials => scram_credentials::describe(ctx, body),
        ApiKey::SaslHandshake | ApiKey::SaslAuthenticate => sasl_not_expected(ctx, body),
        ApiKey::DescribeClientQuotas => client_quotas::describe(ctx, body),
        ApiKey::AlterClientQuotas => client_quotas::alter(ctx, body).await,
        ApiKey::CreateAcls => acls::create_acls(ctx, body).await,
        ApiKey::DescribeAcls => acls::describe_acls(ctx, body),
        ApiKey::DeleteAcls => acls::delete_acls(ctx, body).await,
        ApiKey::AddPartitionsToTxn => txn::add_partitions_to_txn(ctx, body).await,
        ApiKey::AddOffsetsToTxn => txn::add_offsets_to_txn(ctx, body).await,
        ApiKey::EndTxn => txn::end_txn(ctx, body).await,
        ApiKey::DescribeTransactions => txn::describe_transactions(ctx, body).await,
        ApiKey::ListTransactions => txn::list_transactions(ctx, body).await,
        other => Err(HandlerError::NotImplemented(other)),
    }
}
