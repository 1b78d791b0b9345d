//! DeleteGroups v3 (Kafka 4.4), which gives each group's result an error
//! message. The `kafka-protocol` codec stops at v2, so this version is
//! read and written here. Both sides are flexible (request header v2,
//! response header v1).
//!
//! ```text
//! request v3 (v2's bytes):
//!   groups_names                   compact_array of compact_string
//!   tagged fields
//!
//! response v3:
//!   throttle_time_ms               i32
//!   results                        compact_array
//!     group_id                     compact_string
//!     error_code                   i16
//!     error_message                compact_nullable_string   (new in v3)
//!     tagged fields
//!   tagged fields
//! ```
//!
//! v3 also lets a broker answer GROUP_DELETION_FAILED (a streams group's
//! topology could not be cleaned up), which v2 and older see as
//! UNKNOWN_SERVER_ERROR; Sluice has no streams groups, so it never
//! arises. Unknown tagged fields are skipped, as Kafka's generated
//! readers do; none are written.

use crate::primitives::{
    put_array_len, put_compact_nullable_string, put_string, put_uvarint, DecodeError, Reader,
};

/// The first DeleteGroups version with error messages.
pub const ERROR_MESSAGE_VERSION: i16 = 3;

/// Smallest encodings, for refusing array counts the input cannot hold:
/// a group name is at least its one-byte length; a result a one-byte
/// group id, an error code, a one-byte null message and a tag byte.
const NAME_BYTES_MIN: usize = 1;
const RESULT_BYTES_MIN: usize = 1 + 2 + 1 + 1;

/// A DeleteGroups v3 request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeleteGroupsRequest {
    pub groups_names: Vec<String>,
}

/// One group's answer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeletableGroupResult {
    pub group_id: String,
    pub error_code: i16,
    /// Why, beyond the code; None when the code says it all.
    pub error_message: Option<String>,
}

/// A DeleteGroups v3 response.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeleteGroupsResponse {
    pub throttle_time_ms: i32,
    pub results: Vec<DeletableGroupResult>,
}

impl DeleteGroupsRequest {
    /// Reads a v3 request body.
    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let n = r.compact_array_count("groups_names", NAME_BYTES_MIN)?;
        let mut groups_names = Vec::with_capacity(n);
        for _ in 0..n {
            groups_names.push(r.compact_string("groups_names")?.to_string());
        }
        r.skip_tagged_fields()?;
        Ok(DeleteGroupsRequest { groups_names })
    }

    /// Writes the v3 request body (clients and tests).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        put_array_len(&mut out, self.groups_names.len(), true);
        for g in &self.groups_names {
            put_string(&mut out, g, true);
        }
        put_uvarint(&mut out, 0);
        out
    }
}

impl DeleteGroupsResponse {
    /// Writes the v3 response body.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&self.throttle_time_ms.to_be_bytes());
        put_array_len(&mut out, self.results.len(), true);
        for g in &self.results {
            put_string(&mut out, &g.group_id, true);
            out.extend_from_slice(&g.error_code.to_be_bytes());
            put_compact_nullable_string(&mut out, g.error_message.as_deref());
            put_uvarint(&mut out, 0);
        }
        put_uvarint(&mut out, 0);
        out
    }

    /// Reads a v3 response body (clients and tests).
    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let throttle_time_ms = r.i32("throttle_time_ms")?;
        let n = r.compact_array_count("results", RESULT_BYTES_MIN)?;
        let mut results = Vec::with_capacity(n);
        for _ in 0..n {
            results.push(DeletableGroupResult {
                group_id: r.compact_string("group_id")?.to_string(),
                error_code: r.i16("error_code")?,
                error_message: r
                    .compact_nullable_string("error_message")?
                    .map(str::to_string),
            });
            r.skip_tagged_fields()?;
        }
        r.skip_tagged_fields()?;
        Ok(DeleteGroupsResponse {
            throttle_time_ms,
            results,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A v3 request written out from the message spec: groups "g1" and
    /// "grp", and a request-level tagged field (tag 3, 1 byte) that a
    /// reader must skip.
    fn spec_request() -> Vec<u8> {
        let mut b = vec![3]; // 2 names
        b.extend_from_slice(&[3, b'g', b'1']);
        b.extend_from_slice(&[4, b'g', b'r', b'p']);
        b.extend_from_slice(&[1, 3, 1, 0x7f]); // one tagged field
        b
    }

    #[test]
    fn reads_a_request_built_from_the_spec() {
        let req = DeleteGroupsRequest::decode(&spec_request()).unwrap();
        assert_eq!(req.groups_names, vec!["g1".to_string(), "grp".to_string()]);
        let spec = spec_request();
        let untagged = [&spec[..8], &[0]].concat();
        assert_eq!(req.encode(), untagged);
    }

    /// The response as the spec lays it out: one group deleted (null
    /// message), one refused with NON_EMPTY_GROUP (68) and a message.
    #[test]
    fn writes_a_response_as_the_spec_lays_it_out() {
        let resp = DeleteGroupsResponse {
            throttle_time_ms: 5,
            results: vec![
                DeletableGroupResult {
                    group_id: "a".into(),
                    error_code: 0,
                    error_message: None,
                },
                DeletableGroupResult {
                    group_id: "b".into(),
                    error_code: 68,
                    error_message: Some("busy".into()),
                },
            ],
        };
        let mut b = Vec::new();
        b.extend_from_slice(&5i32.to_be_bytes());
        b.push(3); // 2 results
        b.extend_from_slice(&[2, b'a', 0, 0, 0, 0]); // id, code, null, tags
        b.extend_from_slice(&[2, b'b', 0, 68, 5, b'b', b'u', b's', b'y', 0]);
        b.push(0);
        assert_eq!(resp.encode(), b);
        assert_eq!(DeleteGroupsResponse::decode(&b).unwrap(), resp);
    }

    #[test]
    fn a_null_name_array_a_null_name_or_a_short_body_is_refused() {
        assert!(DeleteGroupsRequest::decode(&[0, 0]).is_err());
        assert!(DeleteGroupsRequest::decode(&[2, 0, 0]).is_err());
        let spec = spec_request();
        for cut in 0..spec.len() {
            assert!(DeleteGroupsRequest::decode(&spec[..cut]).is_err(), "{cut}");
        }
    }

    proptest! {
        #[test]
        fn requests_and_responses_round_trip(
            names in proptest::collection::vec(".{0,12}", 0..5),
            results in proptest::collection::vec(
                (".{0,12}", any::<i16>(), proptest::option::of(".{0,12}")), 0..5),
            throttle in any::<i32>(),
        ) {
            let req = DeleteGroupsRequest { groups_names: names };
            prop_assert_eq!(DeleteGroupsRequest::decode(&req.encode()).unwrap(), req);
            let resp = DeleteGroupsResponse {
                throttle_time_ms: throttle,
                results: results.into_iter().map(|(g, e, m)| DeletableGroupResult {
                    group_id: g,
                    error_code: e,
                    error_message: m,
                }).collect(),
            };
            prop_assert_eq!(DeleteGroupsResponse::decode(&resp.encode()).unwrap(), resp);
        }

        #[test]
        fn decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = DeleteGroupsRequest::decode(&bytes);
            let _ = DeleteGroupsResponse::decode(&bytes);
        }
    }
}
