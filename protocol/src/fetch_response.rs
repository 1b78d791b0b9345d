//! Hand-written FetchResponse encoder (v4 to v12) that leaves record bytes
//! out of the encoded buffer.
//!
//! The response is produced as a list of [`Part`]s: encoded bytes, and
//! *regions* standing for record bytes that the broker sends straight from a
//! segment file with `sendfile`. A region only has to know its length; the
//! encoder needs nothing else to frame it. The first part holds the frame's
//! length prefix, so the total size is known before a byte is sent.
//!
//! ```text
//! FetchResponse (v4..v12; compact/tagged forms from v12):
//!   throttle_time_ms i32
//!   error_code i16 | session_id i32                       (v7+)
//!   [topics]
//!     name string
//!     [partitions]
//!       partition_index i32 | error_code i16 | high_watermark i64
//!       last_stable_offset i64
//!       log_start_offset i64                              (v5+)
//!       aborted_transactions nullable [producer_id i64 | first_offset i64]
//!       preferred_read_replica i32                        (v11+)
//!       records nullable bytes
//!       tagged fields                                     (v12+)
//!     tagged fields                                       (v12+)
//!   tagged fields                                         (v12+)
//! ```

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
    /// Whole batches, in offset order.
    pub records: Vec<R>,
}

/// One topic's answer.
#[derive(Debug)]
pub struct TopicData<R> {
    pub name: String,
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
pub const VERSION_MAX: i16 = 12;

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
pub fn encode<R: Region>(head: ResponseHead, topics: Vec<TopicData<R>>) -> (Vec<Part<R>>, usize) {
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
        put_string(&mut e.current, &topic.name, flexible);
        put_array_len(&mut e.current, topic.partitions.len(), flexible);
        for p in topic.partitions {
            encode_partition(&mut e, v, p);
        }
        if flexible {
            e.current.push(0);
        }
    }
    if flexible {
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
    // aborted_transactions: null (no transactions are aborted in Sluice)
    if flexible {
        put_uvarint(c, 0);
    } else {
        c.extend_from_slice(&(-1i32).to_be_bytes());
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
    if flexible {
        e.current.push(0);
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
            let topics = vec![TopicData {
                name: "t".into(),
                partitions: vec![PartitionData {
                    partition_index: 1,
                    error_code: ErrorCode::None,
                    high_watermark: 10,
                    last_stable_offset: 10,
                    log_start_offset: 0,
                    records: vec![batch.clone(), batch.clone()],
                }],
            }];
            let (parts, total) = encode(head, topics);
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
            let p = &resp.responses[0].partitions[0];
            assert_eq!(p.high_watermark, 10);
            assert_eq!(p.records.as_ref().unwrap().len(), batch.len() * 2);
            assert!(buf.is_empty(), "v{v}: trailing bytes");
        }
    }
}
