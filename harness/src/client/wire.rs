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
        // The idempotent and the transactional producer's id. Transactions
        // are spoken at transaction version 1: AddPartitionsToTxn v4+ is
        // the brokers' batched form, EndTxn v5 the KIP-890 epoch bump.
        ApiKey::InitProducerId => (0, 4),
        ApiKey::AddPartitionsToTxn => (0, 3),
        ApiKey::EndTxn => (0, 4),
        // Consumer groups. JoinGroup v0 has no rebalance timeout; OffsetFetch
        // v8+ batches groups, which one member never needs.
        ApiKey::FindCoordinator => (0, 4),
        ApiKey::JoinGroup => (1, 7),
        ApiKey::SyncGroup => (0, 5),
        ApiKey::Heartbeat => (0, 4),
        ApiKey::LeaveGroup => (0, 4),
        ApiKey::OffsetCommit => (2, 8),
        ApiKey::OffsetFetch => (1, 7),
        // SASL: v1 handshakes frame the tokens as SaslAuthenticate
        // requests; v1+ of those carry the session lifetime (KIP-368).
        ApiKey::SaslHandshake => (1, 1),
        ApiKey::SaslAuthenticate => (0, 2),
        _ => (0, -1),
    }
}

/// Versions a broker advertised with ApiVersions.
#[derive(Clone, Debug, Default)]
pub struct Versions {
    ranges: HashMap<i16, (i16, i16)>,
    /// Finalized features (ApiVersions v3+), name to level.
    finalized: Vec<(String, i16)>,
}

impl Versions {
    pub fn from_response(keys: impl IntoIterator<Item = (i16, i16, i16)>) -> Versions {
        Versions {
            ranges: keys.into_iter().map(|(k, lo, hi)| (k, (lo, hi))).collect(),
            finalized: Vec::new(),
        }
    }

    pub fn with_finalized(mut self, features: impl IntoIterator<Item = (String, i16)>) -> Versions {
        self.finalized = features.into_iter().collect();
        self.finalized.sort();
        self
    }

    /// What the broker's answer tells of its release: how many APIs it
    /// speaks, the version ranges of the three every release moves, and its
    /// finalized features (`metadata.version` names a Kafka release).
    pub fn describe(&self) -> String {
        let range = |api: ApiKey| {
            self.ranges
                .get(&(api as i16))
                .map_or("-".to_string(), |(lo, hi)| format!("v{lo}-{hi}"))
        };
        let mut out = format!(
            "{} APIs (Produce {}, Fetch {}, Metadata {})",
            self.ranges.len(),
            range(ApiKey::Produce),
            range(ApiKey::Fetch),
            range(ApiKey::Metadata)
        );
        if !self.finalized.is_empty() {
            let f: Vec<String> = self
                .finalized
                .iter()
                .map(|(name, level)| format!("{name}={level}"))
                .collect();
            out.push_str(&format!("; finalized features {}", f.join(", ")));
        }
        out
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

/// One partition's records in a Produce request.
pub struct ProducePart<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub records: &'a Bytes,
}

/// A Produce request (v3..=9) as the pieces of one
/// frame: small encoded parts between the record batches, which are the
/// producer's own buffers, not copies. Written with `writev`, the batches
/// go from the buffer they were built in to the socket; encoding through
/// `kafka-protocol` copied every batch into the write buffer first.
/// `parts` with the same topic must be adjacent.
///
/// ```text
/// v3..=8: header v1 | transactional_id string (null: i16 -1) | acks i16 | timeout_ms i32 |
///         [topic: name string | [partition: index i32 | records bytes (i32 length)]]
/// v9:     header v2 | the same, compact (uvarint length + 1), a tag
///         section (uvarint 0) after each partition, topic and the body
/// ```
pub fn produce_request_pieces(
    version: i16,
    correlation_id: i32,
    transactional_id: Option<&str>,
    acks: i16,
    timeout_ms: i32,
    parts: &[ProducePart<'_>],
) -> Vec<Bytes> {
    assert!((3..=9).contains(&version), "Produce v{version}");
    let flexible = version >= 9;
    let mut pieces = Vec::with_capacity(2 * parts.len() + 1);
    let mut small = BytesMut::with_capacity(64);
    small.put_i32(0); // frame length, set below
    small.put_i16(ApiKey::Produce as i16);
    small.put_i16(version);
    small.put_i32(correlation_id);
    small.put_i16(CLIENT_ID.len() as i16);
    small.put_slice(CLIENT_ID.as_bytes());
    if flexible {
        put_uvarint(&mut small, 0); // header tags
    }
    // A transactional producer's batches are refused without its id.
    match (transactional_id, flexible) {
        (None, true) => put_uvarint(&mut small, 0),
        (None, false) => small.put_i16(-1),
        (Some(id), true) => {
            put_uvarint(&mut small, id.len() as u32 + 1);
            small.put_slice(id.as_bytes());
        }
        (Some(id), false) => {
            small.put_i16(i16::try_from(id.len()).expect("transactional.id under 32 KiB"));
            small.put_slice(id.as_bytes());
        }
    }
    small.put_i16(acks);
    small.put_i32(timeout_ms);
    let mut topics: Vec<(&str, usize)> = Vec::new();
    for p in parts {
        match topics.last_mut() {
            Some((t, n)) if *t == p.topic => *n += 1,
            _ => topics.push((p.topic, 1)),
        }
    }
    put_count(&mut small, topics.len(), flexible);
    let mut at = 0;
    for (name, n) in topics {
        if flexible {
            put_uvarint(&mut small, name.len() as u32 + 1);
        } else {
            small.put_i16(name.len() as i16);
        }
        small.put_slice(name.as_bytes());
        put_count(&mut small, n, flexible);
        for (i, p) in parts[at..at + n].iter().enumerate() {
            debug_assert_eq!(p.topic, name, "parts of a topic must be adjacent");
            small.put_i32(p.partition);
            put_count(&mut small, p.records.len(), flexible);
            pieces.push(small.split().freeze());
            pieces.push(p.records.clone());
            if flexible {
                put_uvarint(&mut small, 0); // partition tags
                if i + 1 == n {
                    put_uvarint(&mut small, 0); // topic tags
                }
            }
        }
        at += n;
    }
    if flexible {
        put_uvarint(&mut small, 0); // body tags
    }
    if !small.is_empty() {
        pieces.push(small.freeze());
    }
    let total: usize = pieces.iter().map(Bytes::len).sum();
    let mut first = BytesMut::from(&pieces[0][..]);
    first[..4].copy_from_slice(&((total - 4) as i32).to_be_bytes());
    pieces[0] = first.freeze();
    pieces
}

/// An array count or a bytes length: i32 before v9, uvarint + 1 from v9.
fn put_count(out: &mut BytesMut, n: usize, flexible: bool) {
    if flexible {
        put_uvarint(out, n as u32 + 1);
    } else {
        out.put_i32(n as i32);
    }
}

fn put_uvarint(out: &mut BytesMut, mut v: u32) {
    while v >= 0x80 {
        out.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_protocol::messages::messages::produce_request::{
        PartitionProduceData, TopicProduceData,
    };
    use sluice_protocol::messages::messages::ProduceRequest;

    /// The pieces, joined, are byte for byte what `kafka-protocol` encodes
    /// for the same request, at every version the producer speaks.
    #[test]
    fn produce_pieces_equal_the_codec_encoding() {
        let batches: Vec<Bytes> = (0..3u8)
            .map(|i| Bytes::from(vec![i; 200 + 100 * i as usize]))
            .collect();
        let parts = [
            ProducePart {
                topic: "alpha",
                partition: 0,
                records: &batches[0],
            },
            ProducePart {
                topic: "alpha",
                partition: 7,
                records: &batches[1],
            },
            ProducePart {
                topic: "b",
                partition: 2,
                records: &batches[2],
            },
        ];
        for (version, id) in (3..=9).flat_map(|v| [(v, None), (v, Some("tx-7"))]) {
            let mut topics: Vec<TopicProduceData> = Vec::new();
            for p in &parts {
                let pd = PartitionProduceData::default()
                    .with_index(p.partition)
                    .with_records(Some(p.records.clone()));
                let name = super::super::admin::topic_name(p.topic);
                match topics.iter_mut().find(|t| t.name == name) {
                    Some(t) => t.partition_data.push(pd),
                    None => topics.push(
                        TopicProduceData::default()
                            .with_name(name)
                            .with_partition_data(vec![pd]),
                    ),
                }
            }
            let req = ProduceRequest::default()
                .with_transactional_id(id.map(|i| {
                    sluice_protocol::messages::messages::TransactionalId(
                        sluice_protocol::messages::protocol::StrBytes::from_static_str(i),
                    )
                }))
                .with_acks(-1)
                .with_timeout_ms(30_000)
                .with_topic_data(topics);
            let mut expected = BytesMut::new();
            encode_request(&mut expected, ApiKey::Produce, version, 42, &req).unwrap();
            let pieces = produce_request_pieces(version, 42, id, -1, 30_000, &parts);
            let joined: Vec<u8> = pieces.iter().flat_map(|p| p.iter().copied()).collect();
            assert_eq!(joined, expected.to_vec(), "Produce v{version}");
            // The batches are the producer's buffers, not copies.
            assert!(pieces.iter().any(|p| p.as_ptr() == batches[1].as_ptr()));
        }
    }
}
