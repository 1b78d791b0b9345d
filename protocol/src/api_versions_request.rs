//! The ApiVersions v5 request (Kafka 4.4, KIP-1242), in which a client
//! names the cluster and the node it means to reach, so a broker can tell
//! it that it reached another (a stale address after a restart moved
//! brokers about). The `kafka-protocol` codec stops at v4, so this
//! request is read and written here; the v5 response is v4's bytes and
//! the codec writes it. The request is flexible (header v2); ApiVersions
//! responses always use header v0.
//!
//! ```text
//! request v5:
//!   client_software_name           compact_string
//!   client_software_version        compact_string
//!   cluster_id                     compact_nullable_string   (new in v5)
//!   node_id                        i32                       (new in v5)
//!   tagged fields
//! ```
//!
//! A client that knows neither sends null and -1; one that knows them
//! sends both. Unknown tagged fields are skipped, as Kafka's generated
//! readers do; none are written.

use crate::primitives::{
    put_compact_nullable_string, put_string, put_uvarint, DecodeError, Reader,
};

/// The first ApiVersions version naming the cluster and node meant.
pub const TARGET_VERSION: i16 = 5;

/// `node_id` when the client does not name a node.
pub const NO_NODE: i32 = -1;

/// An ApiVersions v5 request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiVersionsRequest {
    pub client_software_name: String,
    pub client_software_version: String,
    /// The cluster the client means to reach, if it knows it.
    pub cluster_id: Option<String>,
    /// The node the client means to reach, or [`NO_NODE`].
    pub node_id: i32,
}

impl Default for ApiVersionsRequest {
    fn default() -> Self {
        ApiVersionsRequest {
            client_software_name: String::new(),
            client_software_version: String::new(),
            cluster_id: None,
            node_id: NO_NODE,
        }
    }
}

/// What a broker makes of the cluster and node a v5 request names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Neither is named: any broker will do.
    Unnamed,
    /// Both are named and are this broker's.
    Here,
    /// Both are named and one is not this broker's: the client should
    /// look up the cluster again (REBOOTSTRAP_REQUIRED).
    Elsewhere,
    /// Only one of the two is named, which the protocol does not allow
    /// (INVALID_REQUEST).
    HalfNamed,
}

impl ApiVersionsRequest {
    /// Reads a v5 request body.
    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let client_software_name = r.compact_string("client_software_name")?.to_string();
        let client_software_version = r.compact_string("client_software_version")?.to_string();
        let cluster_id = r.compact_nullable_string("cluster_id")?.map(str::to_string);
        let node_id = r.i32("node_id")?;
        r.skip_tagged_fields()?;
        Ok(ApiVersionsRequest {
            client_software_name,
            client_software_version,
            cluster_id,
            node_id,
        })
    }

    /// Writes the v5 request body (clients and tests).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        put_string(&mut out, &self.client_software_name, true);
        put_string(&mut out, &self.client_software_version, true);
        put_compact_nullable_string(&mut out, self.cluster_id.as_deref());
        out.extend_from_slice(&self.node_id.to_be_bytes());
        put_uvarint(&mut out, 0);
        out
    }

    /// Whether the request is meant for the broker of node `node_id` in
    /// cluster `cluster_id`, as Kafka 4.4 judges it: both fields or
    /// neither, and when both, both must be this broker's. A broker that
    /// does not know its cluster's id yet (`None`) judges by the node
    /// alone rather than send every client away.
    pub fn target(&self, cluster_id: Option<&str>, node_id: i32) -> Target {
        match (self.cluster_id.as_deref(), self.node_id) {
            (None, NO_NODE) => Target::Unnamed,
            (None, _) | (Some(_), NO_NODE) => Target::HalfNamed,
            (Some(c), n) if cluster_id.is_none_or(|own| own == c) && n == node_id => Target::Here,
            (Some(_), _) => Target::Elsewhere,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A v5 request from the message spec: client "c" version "1",
    /// cluster "k", node 2, with a tagged field (tag 1, 1 byte) to skip.
    fn spec_request() -> Vec<u8> {
        let mut b = vec![2, b'c', 2, b'1', 2, b'k'];
        b.extend_from_slice(&2i32.to_be_bytes());
        b.extend_from_slice(&[1, 1, 1, 0x55]);
        b
    }

    #[test]
    fn reads_a_request_built_from_the_spec() {
        let req = ApiVersionsRequest::decode(&spec_request()).unwrap();
        let expected = ApiVersionsRequest {
            client_software_name: "c".into(),
            client_software_version: "1".into(),
            cluster_id: Some("k".into()),
            node_id: 2,
        };
        assert_eq!(req, expected);
        let spec = spec_request();
        let untagged = [&spec[..10], &[0]].concat();
        assert_eq!(req.encode(), untagged);
        // Neither named: a null cluster id and node -1.
        let anon = ApiVersionsRequest::default();
        let mut b = vec![1, 1, 0];
        b.extend_from_slice(&(-1i32).to_be_bytes());
        b.push(0);
        assert_eq!(anon.encode(), b);
        assert_eq!(ApiVersionsRequest::decode(&b).unwrap(), anon);
    }

    #[test]
    fn a_short_body_is_refused() {
        let spec = spec_request();
        for cut in 0..spec.len() {
            assert!(ApiVersionsRequest::decode(&spec[..cut]).is_err(), "{cut}");
        }
    }

    #[test]
    fn the_target_is_this_broker_only_when_both_fields_are_its_own() {
        let named = |cluster: Option<&str>, node| ApiVersionsRequest {
            cluster_id: cluster.map(str::to_string),
            node_id: node,
            ..Default::default()
        };
        let k = Some("k");
        assert_eq!(named(None, -1).target(k, 2), Target::Unnamed);
        assert_eq!(named(Some("k"), 2).target(k, 2), Target::Here);
        assert_eq!(named(Some("k"), 3).target(k, 2), Target::Elsewhere);
        assert_eq!(named(Some("other"), 2).target(k, 2), Target::Elsewhere);
        assert_eq!(named(None, 2).target(k, 2), Target::HalfNamed);
        assert_eq!(named(Some("k"), -1).target(k, 2), Target::HalfNamed);
        // Not knowing its own cluster yet, a broker judges by the node.
        assert_eq!(named(Some("other"), 2).target(None, 2), Target::Here);
        assert_eq!(named(Some("other"), 3).target(None, 2), Target::Elsewhere);
    }

    proptest! {
        #[test]
        fn requests_round_trip(
            name in ".{0,12}",
            version in ".{0,12}",
            cluster in proptest::option::of(".{0,22}"),
            node in any::<i32>(),
        ) {
            let req = ApiVersionsRequest {
                client_software_name: name,
                client_software_version: version,
                cluster_id: cluster,
                node_id: node,
            };
            prop_assert_eq!(ApiVersionsRequest::decode(&req.encode()).unwrap(), req);
        }

        #[test]
        fn decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..48)) {
            let _ = ApiVersionsRequest::decode(&bytes);
        }
    }
}
