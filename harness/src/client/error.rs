//! Errors of the harness's Kafka client. Each says what was being done and to
//! which broker; broker error codes keep Kafka's numeric meaning.

use sluice_protocol::frame::FrameError;
use sluice_protocol::messages::messages::ApiKey;
use sluice_protocol::ErrorCode;
use std::net::SocketAddr;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("{op} {addr}: {source}")]
    Io {
        op: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("bad frame from {addr}: {source}")]
    Frame {
        addr: SocketAddr,
        #[source]
        source: FrameError,
    },
    #[error("connection to {addr} was closed by the broker")]
    Closed { addr: SocketAddr },
    #[error("encoding {api:?} v{version}: {reason}")]
    Encode {
        api: ApiKey,
        version: i16,
        reason: String,
    },
    #[error("decoding {api:?} v{version} response: {reason}")]
    Decode {
        api: ApiKey,
        version: i16,
        reason: String,
    },
    #[error("response from {addr} has correlation id {got}, expected {expected}")]
    Correlation {
        addr: SocketAddr,
        expected: i32,
        got: i32,
    },
    #[error("{api:?}: the broker supports v{broker_min}..=v{broker_max}, the harness speaks v{ours_min}..=v{ours_max}")]
    Unsupported {
        api: ApiKey,
        broker_min: i16,
        broker_max: i16,
        ours_min: i16,
        ours_max: i16,
    },
    /// One worker of a multi-machine run (`run --worker`) was not ready by
    /// a point's agreed start.
    #[error("worker {worker} of {count} was ready {late_s:.1} s after the agreed start of this point: the others began without it; give --start-at more time ahead")]
    WorkerLate {
        worker: u32,
        count: u32,
        late_s: f64,
    },
    #[error("{what}: broker answered {code:?} ({})", code.code())]
    Broker { what: String, code: ErrorCode },
    #[error("consumer group `{group}`: {op} answered {} ({code})", code_name(*code))]
    Group {
        group: String,
        op: &'static str,
        /// The raw wire code, kept even when Sluice's enum does not know it.
        code: i16,
    },
    #[error("consumer group `{group}`: {reason}")]
    GroupProtocol { group: String, reason: String },
    #[error("TLS with {addr}: {source}")]
    Tls {
        addr: SocketAddr,
        #[source]
        source: rustls::Error,
    },
    #[error("TLS with {addr}: {reason}")]
    TlsSetup { addr: SocketAddr, reason: String },
    #[error("SASL {mechanism} authentication with {addr} failed: {reason}")]
    Auth {
        addr: SocketAddr,
        mechanism: &'static str,
        reason: String,
    },
    #[error("timed out after {ms} ms waiting for {what}")]
    Timeout { what: &'static str, ms: u64 },
    #[error("cannot resolve broker address {host}:{port}")]
    Resolve { host: String, port: i32 },
    #[error("no broker in the metadata leads {topic}-{partition}")]
    NoLeader { topic: String, partition: i32 },
    #[error("corrupt record batch from {topic}-{partition}: {reason}")]
    CorruptBatch {
        topic: String,
        partition: i32,
        reason: String,
    },
    #[error(transparent)]
    Transaction(#[from] super::txn::TxnError),
}

/// Kafka's name for a wire error code, or `unknown error code` for one
/// Sluice's enum does not list (rather than calling it UnknownServerError).
pub fn code_name(code: i16) -> String {
    let e = ErrorCode::from_code(code);
    if e.code() == code {
        format!("{e:?}")
    } else {
        "an unknown error code".to_string()
    }
}

impl ClientError {
    pub fn io(op: &'static str, addr: SocketAddr) -> impl FnOnce(std::io::Error) -> ClientError {
        move |source| ClientError::Io { op, addr, source }
    }
}
