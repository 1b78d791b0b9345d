//! The controller's wire: one TCP listener per voter carries Raft
//! messages between voters and requests from brokers to the controller.
//!
//! A frame is a 4-byte big-endian length, a kind byte and a body. Raft
//! messages are raft-rs's protobuf encoding and get no answer; requests
//! and responses are JSON and alternate on a connection, one request at a
//! time, so a caller that wants two at once opens two connections.
//!
//! The frames travel in plaintext, or in TLS when the controller listener
//! (`controller.listener.names`) maps to SSL: every caller then checks the
//! voter's certificate against that listener's truststore, with the
//! voter's host in `controller.quorum.voters` as the name it must carry,
//! and shows that listener's keystore as its client certificate ([`Dial`]).

use super::quorum::{QuorumState, ReplicaProgress};
use super::records::Record;
use crate::quota::entity::{QuotaEntity, QuotaKey, QuotaValue};
use crate::security::acl::AclBinding;
use crate::security::link::Link;
use crate::security::sasl::scram::{ScramCredential, ScramMechanism};
use crate::security::tls::TlsAcceptor;
use glommio::net::TcpStream;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub const KIND_RAFT: u8 = 0;
pub const KIND_REQUEST: u8 = 1;
pub const KIND_RESPONSE: u8 = 2;

/// Largest frame accepted: a metadata fetch of many records.
pub const FRAME_MAX: usize = 64 << 20;

/// What a broker asks of the controller.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Request {
    Register {
        node: i32,
        host: String,
        port: u16,
        incarnation: u64,
        /// The cluster the broker's data belongs to (`meta.properties`);
        /// none for a new data directory, which joins whatever cluster
        /// this is.
        #[serde(default)]
        cluster_id: Option<String>,
        /// Every listener's advertised endpoint, by name.
        #[serde(default)]
        listeners: crate::cluster::records::Endpoints,
    },
    Heartbeat {
        node: i32,
        incarnation: u64,
    },
    /// A broker that is stopping asks for its partitions to move to other
    /// in-sync replicas first (KRaft's controlled shutdown): it is fenced
    /// at once instead of a session later.
    ControlledShutdown {
        node: i32,
        incarnation: u64,
    },
    CreateTopic {
        name: String,
        id: String,
        partitions: i32,
        replication_factor: i16,
        config: BTreeMap<String, String>,
        /// The replicas of each partition, in partition order, when the
        /// request names them (CreateTopics' manual assignment); then
        /// `partitions` and `replication_factor` follow from it.
        #[serde(default)]
        assignments: Option<Vec<Vec<i32>>>,
    },
    DeleteTopic {
        name: String,
    },
    /// Leader elections for `partitions` (topic, index): the preferred
    /// replica, or with `unclean` any live replica of an offline one.
    ElectLeaders {
        unclean: bool,
        partitions: Vec<(String, i32)>,
    },
    /// Changes a topic's config overrides: `ops` in order, starting from
    /// none when `replace` (AlterConfigs) or from the current ones
    /// (IncrementalAlterConfigs).
    AlterTopicConfig {
        name: String,
        ops: Vec<ConfigOp>,
        replace: bool,
        validate_only: bool,
    },
    /// Grows a topic to `count` partitions (Kafka's CreatePartitions),
    /// placed by the controller unless `assignments` names the replicas
    /// of each new one.
    CreatePartitions {
        name: String,
        count: i32,
        assignments: Option<Vec<Vec<i32>>>,
        validate_only: bool,
    },
    /// Moves each partition (topic, index) to the target replicas, or
    /// with none cancels its running reassignment
    /// (AlterPartitionReassignments).
    Reassign {
        partitions: Vec<(String, i32, Option<Vec<i32>>)>,
    },
    /// A leader's ISR change (Kafka's AlterPartition).
    AlterPartition {
        node: i32,
        topic_id: String,
        index: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        isr: Vec<i32>,
    },
    /// Broker `node`'s replica of partition `index` of topic `topic_id`
    /// failed (a write or fdatasync with EIO, or a log that would not
    /// open): it is taken out of the ISR and out of leadership, as Kafka
    /// treats a replica on a failed log directory (KIP-112), so that the
    /// broker can rebuild it from the new leader.
    ReplicaFailed {
        node: i32,
        incarnation: u64,
        topic_id: String,
        index: i32,
    },
    /// A block of producer ids for broker `node` (Kafka's
    /// AllocateProducerIds).
    AllocateProducerIds {
        node: i32,
        incarnation: u64,
    },
    /// SCRAM credentials to set and to remove
    /// (AlterUserScramCredentials). With `if_absent`, an upsertion for a
    /// user and mechanism that already has a credential is left out (the
    /// users created at start-up).
    AlterScramCredentials {
        upsertions: Vec<(String, ScramMechanism, ScramCredential)>,
        deletions: Vec<(String, ScramMechanism)>,
        #[serde(default)]
        if_absent: bool,
    },
    /// Committed entries after `after`, waiting up to `wait_ms` for one.
    Fetch {
        after: u64,
        wait_ms: u64,
        /// The broker fetching, for the leader's account of observers
        /// (DescribeQuorum); none from a broker that does not say.
        #[serde(default)]
        node: Option<i32>,
    },
    /// The quorum as the active controller sees it (Kafka's
    /// DescribeQuorum).
    DescribeQuorum,
    /// Adds ACLs (CreateAcls), each checked by the broker that asked.
    CreateAcls {
        bindings: Vec<AclBinding>,
    },
    /// Removes the ACLs a broker's DeleteAcls filters matched; those
    /// already gone are skipped.
    DeleteAcls {
        bindings: Vec<AclBinding>,
    },
    /// Client quotas to set (a value) or remove (none), each checked by
    /// the broker that asked (AlterClientQuotas).
    AlterClientQuotas {
        changes: Vec<(QuotaEntity, QuotaKey, Option<QuotaValue>)>,
    },
}

impl Request {
    /// The broker that sent the request, where the request says.
    pub fn node(&self) -> Option<i32> {
        match self {
            Request::Register { node, .. }
            | Request::Heartbeat { node, .. }
            | Request::ControlledShutdown { node, .. }
            | Request::ReplicaFailed { node, .. } => Some(*node),
            Request::Fetch { node, .. } => *node,
            _ => None,
        }
    }
}

/// One config change, as IncrementalAlterConfigs has it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigOp {
    pub name: String,
    pub op: OpKind,
    pub value: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpKind {
    Set,
    Delete,
    /// Adds to a list value (`cleanup.policy`).
    Append,
    /// Removes from a list value.
    Subtract,
}

/// The controller's answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Response {
    /// Done; the change is in the log at `index` (0: nothing to change).
    Ok { index: u64 },
    /// Refused with a Kafka error code.
    Error { code: i16, message: String },
    /// Ask the active controller instead (if known).
    NotController { leader: Option<i32> },
    /// Committed entries, (index, records), and the index they bring
    /// the caller to (entries without records are not sent).
    Entries {
        entries: Vec<(u64, Vec<Record>)>,
        upto: u64,
    },
    /// The whole image as of `index`, as records that build it from
    /// nothing: the answer to a fetch from before the last snapshot.
    Image { index: u64, records: Vec<Record> },
    /// The answer to DescribeQuorum: the voters' progress and the
    /// brokers that are not voters (observers).
    Quorum {
        state: QuorumState,
        observers: Vec<ReplicaProgress>,
    },
}

/// Writes one frame.
pub async fn write_frame(stream: &mut Link, kind: u8, body: &[u8]) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(5 + body.len());
    buf.extend_from_slice(&(body.len() as u32 + 1).to_be_bytes());
    buf.push(kind);
    buf.extend_from_slice(body);
    stream.write_all(&buf).await
}

/// Reads one frame: its kind and body. `None` at a clean end of stream.
pub async fn read_frame(stream: &mut Link) -> std::io::Result<Option<(u8, Vec<u8>)>> {
    let mut len = [0u8; 4];
    match stream.read_exact(&mut len).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len == 0 || len > FRAME_MAX {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("controller frame of {len} bytes"),
        ));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await?;
    let kind = body.remove(0);
    Ok(Some((kind, body)))
}

/// How long a voter's TLS handshake may take before the connection is
/// given up (as a client listener's `HANDSHAKE_MAX`).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How to reach one voter's controller listener: its address, and with
/// TLS the listener's live certificates and the host the voter's
/// certificate must name (as written in `controller.quorum.voters`).
#[derive(Clone, Debug)]
pub struct Dial {
    pub addr: SocketAddr,
    pub tls: Option<(Arc<TlsAcceptor>, String)>,
}

impl Dial {
    /// Opens a connection, with the handshake done when it is TLS. A
    /// failed handshake is logged (at most a few times per window per
    /// voter address, since callers retry): a voter whose certificate
    /// this node does not trust, or that refused this node's.
    pub async fn connect(&self) -> std::io::Result<Link> {
        let stream = TcpStream::connect(self.addr).await?;
        stream.set_nodelay(true)?;
        let Some((tls, host)) = &self.tls else {
            return Ok(Link::Plain(stream));
        };
        let config = tls.client_config().ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the controller listener has no truststore",
            )
        })?;
        let shaken = glommio::timer::timeout(HANDSHAKE_TIMEOUT, async {
            Ok(Link::tls(stream, config, host).await)
        })
        .await;
        let error = match shaken {
            Ok(Ok(link)) => return Ok(link),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("not done within {HANDSHAKE_TIMEOUT:?}"),
        };
        if let crate::server::log_limit::Decision::Log { left_out } =
            crate::server::log_limit::decide(self.addr.ip())
        {
            tracing::warn!(voter = %self.addr, %host, %error, left_out,
                "TLS handshake with a voter's controller listener failed");
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            format!("TLS handshake with {}: {error}", self.addr),
        ))
    }
}

/// One connection to a voter for requests, reopened after errors.
pub struct Client {
    dial: Dial,
    stream: Option<Link>,
}

/// How long a request may take before the connection is given up
/// (heartbeats have a shorter limit: see `node::heartbeat_timeout`).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

impl Client {
    pub fn new(dial: Dial) -> Client {
        Client { dial, stream: None }
    }

    pub fn addr(&self) -> SocketAddr {
        self.dial.addr
    }

    /// Sends a request and reads its answer, giving up after `limit`.
    pub async fn call(&mut self, req: &Request, limit: Duration) -> std::io::Result<Response> {
        let body = serde_json::to_vec(req).expect("request serializes");
        let result = glommio::timer::timeout(limit, async { Ok(self.exchange(&body).await?) })
            .await
            .map_err(std::io::Error::from);
        if result.is_err() {
            self.stream = None;
        }
        result
    }

    async fn exchange(&mut self, body: &[u8]) -> std::io::Result<Response> {
        if self.stream.is_none() {
            self.stream = Some(self.dial.connect().await?);
        }
        let s = self.stream.as_mut().expect("connected");
        write_frame(s, KIND_REQUEST, body).await?;
        match read_frame(s).await? {
            Some((KIND_RESPONSE, b)) => serde_json::from_slice(&b)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())),
            _ => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "controller closed the connection or answered out of turn",
            )),
        }
    }
}
