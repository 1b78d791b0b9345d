//! Request encoding and response decoding over `kafka-protocol`'s message
//! types, plus the API versions the harness speaks.
//!
//! ```text
//! request frame:  length i32 | RequestHeader (v1 or v2) | body
//! response frame: length i32 | correlation_id i32 | [tagged fields if flexible] | body
//! ```

use super::error::ClientError;
use bytes::{BufMut, Bytes, BytesMut};
use sluice_protocol::messages::messages::{ApiKey, RequestHeader, ResponseHeader};
use sluice_protocol::messages::protocol::{Decodable, Encodable, StrBytes};
use std::collections::HashMap;

pub const CLIENT_ID: &str = "sluice-bench";

/// The version range the harness can encode and decode for `api`.
/// Produce stops at v9 and Fetch at v12: later versions address topics by id.
pub fn ours(api: ApiKey) -> (i16, i16) {
    match api {
        ApiKey::ApiVersions => (0, 3),
        ApiKey::Metadata => (1, 12),
        ApiKey::Produce => (3, 9),
        ApiKey::Fetch => (4, 12),
        ApiKey::ListOffsets => (1, 7),
        ApiKey::CreateTopics => (2, 7),
        ApiKey::DeleteTopics => (1, 6),
        // The idempotent producer's id (no transactions).
        ApiKey::InitProducerId => (0, 4),
        // Consumer groups. JoinGroup v0 has no rebalance timeout; OffsetFetch
        // v8+ batches groups, which one member never needs.
        ApiKey::FindCoordinator => (0, 4),
        ApiKey::JoinGroup => (1, 7),
        ApiKey::SyncGroup => (0, 5),
        ApiKey::Heartbeat => (0, 4),
        ApiKey::LeaveGroup => (0, 4),
        ApiKey::OffsetCommit => (2, 8),
        ApiKey::OffsetFetch => (1, 7),
        _ => (0, -1),
    }
}

/// Versions a broker advertised with ApiVersions.
#[derive(Clone, Debug, Default)]
pub struct Versions {
    ranges: HashMap<i16, (i16, i16)>,
}

impl Versions {
    pub fn from_response(keys: impl IntoIterator<Item = (i16, i16, i16)>) -> Versions {
        Versions {
            ranges: keys.into_iter().map(|(k, lo, hi)| (k, (lo, hi))).collect(),
        }
    }

    /// The highest version both sides speak.
    pub fn pick(&self, api: ApiKey) -> Result<i16, ClientError> {
        let (ours_min, ours_max) = ours(api);
        let (broker_min, broker_max) = self.ranges.get(&(api as i16)).copied().unwrap_or((0, -1));
        let v = ours_max.min(broker_max);
        if v < ours_min.max(broker_min) {
            return Err(ClientError::Unsupported {
                api,
                broker_min,
                broker_max,
                ours_min,
                ours_max,
            });
        }
        Ok(v)
    }
}

/// Appends one whole request frame to `out`.
pub fn encode_request<R: Encodable>(
    out: &mut BytesMut,
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &R,
) -> Result<(), ClientError> {
    let enc = |reason: String| ClientError::Encode {
        api,
        version,
        reason,
    };
    let start = out.len();
    out.put_i32(0);
    let header = RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
    header
        .encode(out, api.request_header_version(version))
        .map_err(|e| enc(e.to_string()))?;
    body.encode(out, version).map_err(|e| enc(e.to_string()))?;
    let len = (out.len() - start - 4) as i32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// The correlation id at the front of a response payload.
pub fn correlation_id(payload: &[u8]) -> Option<i32> {
    payload
        .get(..4)
        .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Decodes a response payload (the frame without its length prefix).
pub fn decode_response<R: Decodable>(
    api: ApiKey,
    version: i16,
    mut payload: Bytes,
) -> Result<(i32, R), ClientError> {
    let dec = |reason: String| ClientError::Decode {
        api,
        version,
        reason,
    };
    let header = ResponseHeader::decode(&mut payload, api.response_header_version(version))
        .map_err(|e| dec(e.to_string()))?;
    let body = R::decode(&mut payload, version).map_err(|e| dec(e.to_string()))?;
    Ok((header.correlation_id, body))
}
