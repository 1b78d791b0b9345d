//! What can go wrong talking to a broker, and Kafka error codes by name.
//!
//! Every variant says which broker address and which API it concerns, so a
//! message like "cannot connect to 127.0.0.1:9092: Connection refused" or
//! "DeleteGroups failed: NON_EMPTY_GROUP (68)" is enough to act on.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::ApiKey;
use sluice_protocol::frame::FrameError;
use std::fmt;
use std::io;

/// An error of the admin client.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The address did not resolve to anything.
    #[error("cannot resolve {addr}: {source}")]
    Resolve { addr: String, source: io::Error },
    /// No TCP connection could be made.
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: String, source: io::Error },
    /// Reading or writing an established connection failed.
    #[error("{api:?} to {addr}: {source}")]
    Io {
        addr: String,
        api: ApiKey,
        source: io::Error,
    },
    /// The broker closed the connection instead of answering; Kafka brokers
    /// do that for requests they cannot parse.
    #[error("{addr} closed the connection on {api:?} v{version} instead of answering")]
    Closed {
        addr: String,
        api: ApiKey,
        version: i16,
    },
    /// The response's length prefix is out of bounds.
    #[error("{api:?} response from {addr}: {source}")]
    Frame {
        addr: String,
        api: ApiKey,
        source: FrameError,
    },
    /// The request could not be encoded at the negotiated version.
    #[error("encoding {api:?} v{version}: {reason}")]
    Encode {
        api: ApiKey,
        version: i16,
        reason: String,
    },
    /// The response did not decode, or answered something else.
    #[error("malformed {api:?} v{version} response from {addr}: {reason}")]
    Malformed {
        addr: String,
        api: ApiKey,
        version: i16,
        reason: String,
    },
    /// The response has no entry for the group asked about.
    #[error("{api:?} response from {addr} has no entry for group '{group}'")]
    NoEntry {
        addr: String,
        api: ApiKey,
        group: String,
    },
    /// No version of `api` is known to both sides.
    #[error("the broker at {addr} does not support {api:?} in a version this client speaks (client {client_min}..={client_max}, broker {broker})")]
    Unsupported {
        addr: String,
        api: ApiKey,
        client_min: i16,
        client_max: i16,
        broker: BrokerRange,
    },
    /// The broker answered with an error code.
    #[error("{api:?} failed: {}{}", ErrorName(*error), message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Broker {
        api: ApiKey,
        error: ResponseError,
        message: Option<String>,
    },
    /// The group does not exist on its coordinator.
    #[error("consumer group '{0}' does not exist")]
    UnknownGroup(String),
    /// A member's assignment is not in the consumer protocol's format.
    #[error("member {member} of group {group}: assignment does not decode: {reason}")]
    BadAssignment {
        group: String,
        member: String,
        reason: String,
    },
}

impl AdminError {
    /// Whether the same request may succeed if sent again shortly (the
    /// coordinator is loading, moved, or not yet elected).
    pub fn is_retriable(&self) -> bool {
        match self {
            AdminError::Broker { error, .. } => error.is_retriable(),
            _ => false,
        }
    }

    /// The error for a non-zero `code` in a response to `api`.
    pub fn broker(api: ApiKey, code: i16, message: Option<String>) -> AdminError {
        AdminError::Broker {
            api,
            error: ResponseError::try_from_code(code).unwrap_or(ResponseError::Unknown(code)),
            message,
        }
    }
}

/// The version range a broker advertised for an API, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BrokerRange(pub Option<(i16, i16)>);

impl fmt::Display for BrokerRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some((min, max)) => write!(f, "{min}..={max}"),
            None => f.write_str("not advertised"),
        }
    }
}

/// Displays an error code as Kafka's tools do: `NON_EMPTY_GROUP (68)`.
#[derive(Debug, Clone, Copy)]
pub struct ErrorName(pub ResponseError);

impl fmt::Display for ErrorName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let ResponseError::Unknown(code) = self.0 {
            return write!(f, "UNKNOWN_ERROR_CODE ({code})");
        }
        // The enum's Display is the variant name, e.g. `NonEmptyGroup`;
        // Kafka's own name is the same words in upper snake case.
        let camel = self.0.to_string();
        let mut name = String::with_capacity(camel.len() + 8);
        for (i, c) in camel.chars().enumerate() {
            if c.is_ascii_uppercase() && i > 0 {
                name.push('_');
            }
            name.push(c.to_ascii_uppercase());
        }
        write!(f, "{name} ({})", self.0.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_names_are_kafkas() {
        let name = |code| ErrorName(ResponseError::try_from_code(code).unwrap()).to_string();
        assert_eq!(name(68), "NON_EMPTY_GROUP (68)");
        assert_eq!(name(69), "GROUP_ID_NOT_FOUND (69)");
        assert_eq!(name(15), "COORDINATOR_NOT_AVAILABLE (15)");
        assert_eq!(name(-1), "UNKNOWN_SERVER_ERROR (-1)");
        assert_eq!(name(30_000), "UNKNOWN_ERROR_CODE (30000)");
    }

    #[test]
    fn broker_errors_read_well() {
        let e = AdminError::broker(ApiKey::DeleteGroups, 68, None);
        assert_eq!(e.to_string(), "DeleteGroups failed: NON_EMPTY_GROUP (68)");
        assert!(!e.is_retriable());
        let e = AdminError::broker(ApiKey::FindCoordinator, 15, Some("loading".into()));
        assert_eq!(
            e.to_string(),
            "FindCoordinator failed: COORDINATOR_NOT_AVAILABLE (15): loading"
        );
        assert!(e.is_retriable());
    }
}
