//! Hand-written FetchResponse encoder (v4 to v18) that leaves record bytes
//! out of the encoded buffer.
//!
//! The response is produced as a list of [`Part`]s: encoded bytes, and
//! *regions* standing for record bytes that the broker sends straight from a
//! segment file with `sendfile`. A region only has to know its length; the
//! encoder needs nothing else to frame it. The first part holds the frame's
//! length prefix, so the total size is known before a byte is sent.
//!
//! ```text
//! FetchResponse (v4..v18; compact/tagged forms from v12):
//!   throttle_time_ms i32
//!   error_code i16 | session_id i32                       (v7+)
//!   [topics]
//!     name string                                         (v4..v12)
//!     topic_id uuid (16 bytes)                            (v13+)
//!     [partitions]
//!       partition_index i32 | error_code i16 | high_watermark i64
//!       last_stable_offset i64
//!       log_start_offset i64                              (v5+)
//!       aborted_transactions nullable [producer_id i64 | first_offset i64]
//!       preferred_read_replica i32                        (v11+)
//!       records nullable bytes
//!       tagged fields                                     (v12+)
//!         tag 1: current_leader (leader_id i32 | leader_epoch i32 | tags)
//!     tagged fields                                       (v12+)
//!   tagged fields                                         (v12+)
//!     tag 0: node_endpoints [node_id i32 | host string | port i32 |
//!            rack nullable string | tags]                 (v16+)
//! ```
//!
//! `current_leader` and `node_endpoints` (KIP-951) are written only for
//! partitions answered NOT_LEADER_OR_FOLLOWER or FENCED_LEADER_EPOCH, so
//! the client can go to the new leader without a Metadata round trip.

use crate::error_code::ErrorCode;
use crate::header::put_response_header;
use crate::primitives::{put_array_len, put_string, put_uvarint};

/// Something whose bytes are sent later, of a known length.
pub trait Region {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A piece of the encoded response.
#[derive(Debug)]
pub enum Part<R> {
    Bytes(Vec<u8>),
    Region(R),
}

/// One partition's answer.
#[derive(Debug)]
pub struct PartitionData<R> {
    pub partition_index: i32,
    pub error_code: ErrorCode,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    /// Aborted transactions among the records, (producer id, first
    /// offset), for a read_committed fetch; `None` (null) otherwise.
    pub aborted_transactions: Option<Vec<(i64, i64)>>,
    /// The leader as this broker knows it, for a client that asked the
    /// wrong broker (written from v12).
    pub current_leader: Option<LeaderIdAndEpoch>,
    /// Whole batches, in offset order.
    pub records: Vec<R>,
}

/// A partition's leader and its epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaderIdAndEpoch {
    pub leader_id: i32,
    pub leader_epoch: i32,
}

/// Where a broker named in `current_leader` listens (written from v16).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeEndpoint {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
}

/// One topic's answer: by name up to v12, by topic id from v13.
#[derive(Debug)]
pub struct TopicData<R> {
    pub name: String,
    pub topic_id: [u8; 16],
    pub partitions: Vec<PartitionData<R>>,
}

/// The response body fields outside the topics.
#[derive(Clone, Copy, Debug)]
pub struct ResponseHead {
    pub version: i16,
    pub correlation_id: i32,
    pub throttle_time_ms: i32,
    pub error_code: ErrorCode,
    pub session_id: i32,
}

/// Lowest and highest version this encoder writes.
pub const VERSION_MIN: i16 = 4;
pub const VERSION_MAX: i16 = 18;

struct Encoder<R> {
    parts: Vec<Part<R>>,
    current: Vec<u8>,
    total: usize,
}

impl<R: Region> Encoder<R> {
    fn flush(&mut self) {
        if !self.current.is_empty() {
            self.total += self.current.len();
            let bytes = std::mem::take(&mut self.current);
            self.parts.push(Part::Bytes(bytes));
        }
    }

    fn region(&mut self, region: R) {
        self.flush();
        self.total += region.len();
        self.parts.push(Part::Region(region));
    }
}

/// Encodes a whole framed response. Returns the parts and the frame's
/// total size in bytes (prefix included).
pub fn encode<R: Region>(
    head: ResponseHead,
    topics: Vec<TopicData<R>>,
    endpoints: &[NodeEndpoint],
) -> (Vec<Part<R>>, usize) {
    assert!((VERSION_MIN..=VERSION_MAX).contains(&head.version));
    let v = head.version;
    let flexible = v >= 12;
    let mut e = Encoder {
        parts: Vec::new(),
        current: Vec::with_capacity(256),
        total: 0,
    };
    e.current.extend_from_slice(&[0; 4]); // frame length, patched below
    put_response_header(&mut e.current, head.correlation_id, flexible);
    e.current
        .extend_from_slice(&head.throttle_time_ms.to_be_bytes());
    if v >= 7 {
        e.current
            .extend_from_slice(&head.error_code.code().to_be_bytes());
        e.current.extend_from_slice(&head.session_id.to_be_bytes());
    }
    put_array_len(&mut e.current, topics.len(), flexible);
    for topic in topics {
        if v >= 13 {
            e.current.extend_from_slice(&topic.topic_id);
        } else {
            put_string(&mut e.current, &topic.name, flexible);
        }
        put_array_len(&mut e.current, topic.partitions.len(), flexible);
        for p in topic.partitions {
            encode_partition(&mut e, v, p);
        }
        if flexible {
            e.current.push(0);
        }
    }
    if v >= 16 && !endpoints.is_empty() {
        let mut field = Vec::new();
        put_array_len(&mut field, endpoints.len(), true);
        for n in endpoints {
            field.extend_from_slice(&n.node_id.to_be_bytes());
            put_string(&mut field, &n.host, true);
            field.extend_from_slice(&n.port.to_be_bytes());
            match &n.rack {
                Some(rack) => put_string(&mut field, rack, true),
                None => put_uvarint(&mut field, 0),
            }
            field.push(0);
        }
        put_tagged(&mut e.current, &[(0, &field)]);
    } else if flexible {
        e.current.push(0);
    }
    e.flush();
    let total = e.total;
    let length = (total - 4) as i32;
    if let Some(Part::Bytes(first)) = e.parts.first_mut() {
        first[..4].copy_from_slice(&length.to_be_bytes());
    }
    (e.parts, total)
}

fn encode_partition<R: Region>(e: &mut Encoder<R>, v: i16, p: PartitionData<R>) {
    let flexible = v >= 12;
    let c = &mut e.current;
    c.extend_from_slice(&p.partition_index.to_be_bytes());
    c.extend_from_slice(&p.error_code.code().to_be_bytes());
    c.extend_from_slice(&p.high_watermark.to_be_bytes());
    c.extend_from_slice(&p.last_stable_offset.to_be_bytes());
    if v >= 5 {
        c.extend_from_slice(&p.log_start_offset.to_be_bytes());
    }
    match &p.aborted_transactions {
        None if flexible => put_uvarint(c, 0),
        None => c.extend_from_slice(&(-1i32).to_be_bytes()),
        Some(list) => {
            if flexible {
                put_uvarint(c, list.len() as u32 + 1);
            } else {
                c.extend_from_slice(&(list.len() as i32).to_be_bytes());
            }
            for (producer_id, first_offset) in list {
                c.extend_from_slice(&producer_id.to_be_bytes());
                c.extend_from_slice(&first_offset.to_be_bytes());
                if flexible {
                    c.push(0);
                }
            }
        }
    }
    if v >= 11 {
        c.extend_from_slice(&(-1i32).to_be_bytes());
    }
    let records_len: usize = p.records.iter().map(Region::len).sum();
    if flexible {
        put_uvarint(c, records_len as u32 + 1);
    } else {
        c.extend_from_slice(&(records_len as i32).to_be_bytes());
    }
    for r in p.records {
        e.region(r);
    }
    match p.current_leader {
        Some(l) if flexible => {
            let mut field = Vec::with_capacity(9);
            field.extend_from_slice(&l.leader_id.to_be_bytes());
            field.extend_from_slice(&l.leader_epoch.to_be_bytes());
            field.push(0);
            put_tagged(&mut e.current, &[(1, &field)]);
        }
        _ if flexible => e.current.push(0),
        _ => {}
    }
}

/// Appends a tagged-field section: the count, then each field's tag, size
/// and bytes, tags ascending.
fn put_tagged(out: &mut Vec<u8>, fields: &[(u32, &[u8])]) {
    assert!(fields.windows(2).all(|w| w[0].0 < w[1].0));
    put_uvarint(out, fields.len() as u32);
    for (tag, bytes) in fields {
        put_uvarint(out, *tag);
        put_uvarint(out, bytes.len() as u32);
        out.extend_from_slice(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record_batch::BatchBuilder;
    use bytes::Bytes;
    use kafka_protocol::messages::{FetchResponse, ResponseHeader};
    use kafka_protocol::protocol::Decodable;

    impl Region for Vec<u8> {
        fn len(&self) -> usize {
            Vec::len(self)
        }
    }

    fn flatten(parts: Vec<Part<Vec<u8>>>) -> Vec<u8> {
        parts
            .into_iter()
            .flat_map(|p| match p {
                Part::Bytes(b) => b,
                Part::Region(r) => r,
            })
            .collect()
    }

    #[test]
    fn every_version_decodes_with_the_reference_codec() {
        let mut b = BatchBuilder::new(5);
        b.push(5, Some(b"k"), Some(b"v"), &[]);
        let batch = b.finish();
        for v in VERSION_MIN..=VERSION_MAX {
            let head = ResponseHead {
                version: v,
                correlation_id: 9,
                throttle_time_ms: 0,
                error_code: ErrorCode::None,
                session_id: 0,
            };
            let id = [7u8; 16];
            let topics = vec![TopicData {
                name: "t".into(),
                topic_id: id,
                partitions: vec![
                    PartitionData {
                        partition_index: 1,
                        error_code: ErrorCode::None,
                        high_watermark: 10,
                        last_stable_offset: 8,
                        log_start_offset: 0,
                        aborted_transactions: Some(vec![(42, 3), (43, 5)]),
                        current_leader: None,
                        records: vec![batch.clone(), batch.clone()],
                    },
                    PartitionData {
                        partition_index: 2,
                        error_code: ErrorCode::NotLeaderOrFollower,
                        high_watermark: -1,
                        last_stable_offset: -1,
                        log_start_offset: -1,
                        aborted_transactions: None,
                        current_leader: Some(LeaderIdAndEpoch {
                            leader_id: 3,
                            leader_epoch: 4,
                        }),
                        records: Vec::new(),
                    },
                ],
            }];
            let endpoints = [NodeEndpoint {
                node_id: 3,
                host: "h3".into(),
                port: 9093,
                rack: None,
            }];
            let (parts, total) = encode(head, topics, &endpoints);
            let bytes = flatten(parts);
            assert_eq!(bytes.len(), total);
            assert_eq!(
                i32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize,
                total - 4
            );
            let mut buf = Bytes::from(bytes[4..].to_vec());
            let header = ResponseHeader::decode(&mut buf, if v >= 12 { 1 } else { 0 }).unwrap();
            assert_eq!(header.correlation_id, 9);
            let resp = FetchResponse::decode(&mut buf, v).unwrap();
            let t = &resp.responses[0];
            match v >= 13 {
                true => assert_eq!(t.topic_id.into_bytes(), id),
                false => assert_eq!(t.topic.0.as_str(), "t"),
            }
            let p = &t.partitions[0];
            assert_eq!(p.high_watermark, 10);
            assert_eq!(p.last_stable_offset, 8);
            let aborted: Vec<(i64, i64)> = p
                .aborted_transactions
                .iter()
                .flatten()
                .map(|a| (a.producer_id.0, a.first_offset))
                .collect();
            assert_eq!(aborted, vec![(42, 3), (43, 5)], "v{v}");
            assert!(t.partitions[1].aborted_transactions.is_none(), "v{v}");
            assert_eq!(p.records.as_ref().unwrap().len(), batch.len() * 2);
            assert_eq!(p.current_leader.leader_id.0, -1);
            let moved = &t.partitions[1].current_leader;
            let leader = if v >= 12 { (3, 4) } else { (-1, -1) };
            assert_eq!((moved.leader_id.0, moved.leader_epoch), leader, "v{v}");
            let hosts: Vec<_> = resp
                .node_endpoints
                .iter()
                .map(|n| n.host.as_str())
                .collect();
            assert_eq!(hosts, if v >= 16 { vec!["h3"] } else { vec![] }, "v{v}");
            assert!(buf.is_empty(), "v{v}: trailing bytes");
        }
    }
}
