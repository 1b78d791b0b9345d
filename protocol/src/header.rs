//! Request and response headers.
//!
//! ```text
//! request header v1:  api_key i16 | api_version i16 | correlation_id i32 | client_id nullable_string(i16)
//! request header v2:  v1 fields, then tagged fields (uvarint count, ...)
//! response header v0: correlation_id i32
//! response header v1: correlation_id i32 | tagged fields (0x00 when empty)
//! ```
//!
//! Which header version a request uses depends on its API and version
//! (flexible versions use v2). ApiVersions responses always use header v0 so
//! a client that does not yet know the broker can read them (KIP-511).

use crate::primitives::{DecodeError, Reader};
use kafka_protocol::messages::ApiKey;

/// The parsed request header and where the body starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHeader {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
    pub client_id: Option<String>,
    /// Byte position of the request body in the frame payload.
    pub body_start: usize,
}

/// Why a header could not be read. `correlation_id` is set when it was read,
/// so the caller can still log which request failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeaderError {
    #[error("unknown API key {api_key} (correlation id {correlation_id})")]
    UnknownApiKey { api_key: i16, correlation_id: i32 },
    #[error("malformed request header: {0}")]
    Malformed(#[from] DecodeError),
}

/// The API key, if Kafka knows it.
pub fn api_key(key: i16) -> Option<ApiKey> {
    ApiKey::try_from(key).ok()
}

/// Parses the request header at the start of a frame payload.
pub fn parse_request_header(payload: &[u8]) -> Result<RequestHeader, HeaderError> {
    let mut r = Reader::new(payload);
    let api_key_raw = r.i16("api_key")?;
    let api_version = r.i16("api_version")?;
    let correlation_id = r.i32("correlation_id")?;
    let key = api_key(api_key_raw).ok_or(HeaderError::UnknownApiKey {
        api_key: api_key_raw,
        correlation_id,
    })?;
    let header_version = key.request_header_version(api_version);
    let client_id = r
        .nullable_string("client_id")?
        .map(|b| String::from_utf8_lossy(b).into_owned());
    if header_version >= 2 {
        r.skip_tagged_fields()?;
    }
    Ok(RequestHeader {
        api_key: api_key_raw,
        api_version,
        correlation_id,
        client_id,
        body_start: r.position(),
    })
}

/// Whether the response to (`key`, `version`) carries the flexible header.
pub fn response_header_is_flexible(key: ApiKey, version: i16) -> bool {
    key.response_header_version(version) >= 1
}

/// Encodes a response header into `out`.
pub fn put_response_header(out: &mut Vec<u8>, correlation_id: i32, flexible: bool) {
    out.extend_from_slice(&correlation_id.to_be_bytes());
    if flexible {
        out.push(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_bytes(key: i16, version: i16, flexible: bool) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&key.to_be_bytes());
        b.extend_from_slice(&version.to_be_bytes());
        b.extend_from_slice(&7i32.to_be_bytes());
        b.extend_from_slice(&3i16.to_be_bytes());
        b.extend_from_slice(b"abc");
        if flexible {
            b.push(0);
        }
        b
    }

    #[test]
    fn parses_v1_and_v2_headers() {
        let h = parse_request_header(&header_bytes(3, 1, false)).unwrap();
        assert_eq!(h.correlation_id, 7);
        assert_eq!(h.client_id.as_deref(), Some("abc"));
        assert_eq!(h.body_start, 13);
        // Metadata v9 is flexible: header v2 with tagged fields.
        let h = parse_request_header(&header_bytes(3, 9, true)).unwrap();
        assert_eq!(h.body_start, 14);
    }

    #[test]
    fn unknown_key_keeps_correlation_id() {
        let err = parse_request_header(&header_bytes(999, 0, false)).unwrap_err();
        assert_eq!(
            err,
            HeaderError::UnknownApiKey {
                api_key: 999,
                correlation_id: 7
            }
        );
    }

    #[test]
    fn truncated_header_is_malformed() {
        assert!(matches!(
            parse_request_header(&[0, 3, 0]),
            Err(HeaderError::Malformed(_))
        ));
    }
}
