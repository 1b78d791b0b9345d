//! DescribeLogDirs v5 (Kafka 4.4, KIP-1066), which says of each log
//! directory whether it is cordoned: closed to new partitions. The
//! `kafka-protocol` codec stops at v4, so this version is read and
//! written here. Both sides are flexible (request header v2, response
//! header v1).
//!
//! ```text
//! request v5 (v4's bytes):
//!   topics                         compact_nullable_array (null: all)
//!     topic                        compact_string
//!     partitions                   compact_array of i32
//!     tagged fields
//!   tagged fields
//!
//! response v5:
//!   throttle_time_ms               i32
//!   error_code                     i16
//!   results                        compact_array
//!     error_code                   i16
//!     log_dir                      compact_string
//!     topics                       compact_array
//!       name                       compact_string
//!       partitions                 compact_array
//!         partition_index          i32
//!         partition_size           i64
//!         offset_lag               i64
//!         is_future_key            bool
//!         tagged fields
//!       tagged fields
//!     total_bytes                  i64
//!     usable_bytes                 i64
//!     is_cordoned                  bool   (new in v5)
//!     tagged fields
//!   tagged fields
//! ```
//!
//! Unknown tagged fields are skipped, as Kafka's generated readers do;
//! none are written.

use crate::primitives::{put_array_len, put_string, put_uvarint, DecodeError, Reader};

/// The first DescribeLogDirs version that reports cordoned directories.
pub const CORDONED_VERSION: i16 = 5;

/// Smallest encodings, for refusing array counts the input cannot hold:
/// a topic is a one-byte name, a one-byte partition count and a tag
/// byte; a partition index 4 bytes. In a response a directory is at
/// least 2 + 1 + 1 + 8 + 8 + 1 + 1 bytes, a topic 3, a partition
/// 4 + 8 + 8 + 1 + 1.
const TOPIC_BYTES_MIN: usize = 1 + 1 + 1;
const INDEX_BYTES: usize = 4;
const RESULT_BYTES_MIN: usize = 2 + 1 + 1 + 8 + 8 + 1 + 1;
const RESULT_TOPIC_BYTES_MIN: usize = 1 + 1 + 1;
const PARTITION_BYTES_MIN: usize = 4 + 8 + 8 + 1 + 1;

/// A DescribeLogDirs v5 request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DescribeLogDirsRequest {
    /// (topic, partitions) to describe; None: every replica held.
    pub topics: Option<Vec<(String, Vec<i32>)>>,
}

/// One partition's replica in a directory.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogDirPartition {
    pub partition_index: i32,
    pub partition_size: i64,
    pub offset_lag: i64,
    pub is_future_key: bool,
}

/// One topic's replicas in a directory.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogDirTopic {
    pub name: String,
    pub partitions: Vec<LogDirPartition>,
}

/// One log directory.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogDirResult {
    pub error_code: i16,
    pub log_dir: String,
    pub topics: Vec<LogDirTopic>,
    /// The volume's size and free space, -1 when unknown.
    pub total_bytes: i64,
    pub usable_bytes: i64,
    pub is_cordoned: bool,
}

/// A DescribeLogDirs v5 response.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DescribeLogDirsResponse {
    pub throttle_time_ms: i32,
    pub error_code: i16,
    pub results: Vec<LogDirResult>,
}

impl DescribeLogDirsRequest {
    /// Reads a v5 request body.
    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let topics = match r.compact_array_len("topics", TOPIC_BYTES_MIN)? {
            None => None,
            Some(n) => {
                let mut topics = Vec::with_capacity(n);
                for _ in 0..n {
                    let topic = r.compact_string("topic")?.to_string();
                    let m = r.compact_array_count("partitions", INDEX_BYTES)?;
                    let mut partitions = Vec::with_capacity(m);
                    for _ in 0..m {
                        partitions.push(r.i32("partitions")?);
                    }
                    r.skip_tagged_fields()?;
                    topics.push((topic, partitions));
                }
                Some(topics)
            }
        };
        r.skip_tagged_fields()?;
        Ok(DescribeLogDirsRequest { topics })
    }

    /// Writes the v5 request body (clients and tests).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match &self.topics {
            None => put_uvarint(&mut out, 0),
            Some(topics) => {
                put_array_len(&mut out, topics.len(), true);
                for (topic, partitions) in topics {
                    put_string(&mut out, topic, true);
                    put_array_len(&mut out, partitions.len(), true);
                    for p in partitions {
                        out.extend_from_slice(&p.to_be_bytes());
                    }
                    put_uvarint(&mut out, 0);
                }
            }
        }
        put_uvarint(&mut out, 0);
        out
    }
}

impl DescribeLogDirsResponse {
    /// Writes the v5 response body.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&self.throttle_time_ms.to_be_bytes());
        out.extend_from_slice(&self.error_code.to_be_bytes());
        put_array_len(&mut out, self.results.len(), true);
        for d in &self.results {
            out.extend_from_slice(&d.error_code.to_be_bytes());
            put_string(&mut out, &d.log_dir, true);
            put_array_len(&mut out, d.topics.len(), true);
            for t in &d.topics {
                put_string(&mut out, &t.name, true);
                put_array_len(&mut out, t.partitions.len(), true);
                for p in &t.partitions {
                    out.extend_from_slice(&p.partition_index.to_be_bytes());
                    out.extend_from_slice(&p.partition_size.to_be_bytes());
                    out.extend_from_slice(&p.offset_lag.to_be_bytes());
                    out.push(u8::from(p.is_future_key));
                    put_uvarint(&mut out, 0);
                }
                put_uvarint(&mut out, 0);
            }
            out.extend_from_slice(&d.total_bytes.to_be_bytes());
            out.extend_from_slice(&d.usable_bytes.to_be_bytes());
            out.push(u8::from(d.is_cordoned));
            put_uvarint(&mut out, 0);
        }
        put_uvarint(&mut out, 0);
        out
    }

    /// Reads a v5 response body (clients and tests).
    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let throttle_time_ms = r.i32("throttle_time_ms")?;
        let error_code = r.i16("error_code")?;
        let n = r.compact_array_count("results", RESULT_BYTES_MIN)?;
        let mut results = Vec::with_capacity(n);
        for _ in 0..n {
            let error_code = r.i16("error_code")?;
            let log_dir = r.compact_string("log_dir")?.to_string();
            let topic_count = r.compact_array_count("topics", RESULT_TOPIC_BYTES_MIN)?;
            let mut topics = Vec::with_capacity(topic_count);
            for _ in 0..topic_count {
                let name = r.compact_string("name")?.to_string();
                let m = r.compact_array_count("partitions", PARTITION_BYTES_MIN)?;
                let mut partitions = Vec::with_capacity(m);
                for _ in 0..m {
                    partitions.push(LogDirPartition {
                        partition_index: r.i32("partition_index")?,
                        partition_size: r.i64("partition_size")?,
                        offset_lag: r.i64("offset_lag")?,
                        is_future_key: r.bool("is_future_key")?,
                    });
                    r.skip_tagged_fields()?;
                }
                r.skip_tagged_fields()?;
                topics.push(LogDirTopic { name, partitions });
            }
            let total_bytes = r.i64("total_bytes")?;
            let usable_bytes = r.i64("usable_bytes")?;
            let is_cordoned = r.bool("is_cordoned")?;
            r.skip_tagged_fields()?;
            results.push(LogDirResult {
                error_code,
                log_dir,
                topics,
                total_bytes,
                usable_bytes,
                is_cordoned,
            });
        }
        r.skip_tagged_fields()?;
        Ok(DescribeLogDirsResponse {
            throttle_time_ms,
            error_code,
            results,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A v5 request from the message spec: partitions 0 and 2 of "t",
    /// with a topic-level tagged field (tag 0, 2 bytes) to skip.
    fn spec_request() -> Vec<u8> {
        let mut b = vec![2, 2, b't', 3];
        b.extend_from_slice(&0i32.to_be_bytes());
        b.extend_from_slice(&2i32.to_be_bytes());
        b.extend_from_slice(&[1, 0, 2, 0xab, 0xcd]);
        b.push(0);
        b
    }

    #[test]
    fn reads_a_request_built_from_the_spec() {
        let req = DescribeLogDirsRequest::decode(&spec_request()).unwrap();
        assert_eq!(req.topics, Some(vec![("t".to_string(), vec![0, 2])]));
        let spec = spec_request();
        let at = spec.len() - 6;
        let untagged = [&spec[..at], &[0, 0]].concat();
        assert_eq!(req.encode(), untagged);
        // A null topic array asks for everything.
        let all = DescribeLogDirsRequest::decode(&[0, 0]).unwrap();
        assert_eq!(all.topics, None);
        assert_eq!(all.encode(), vec![0, 0]);
    }

    /// One directory holding partition 1 of "t", cordoned, as the spec
    /// lays it out.
    #[test]
    fn writes_a_response_as_the_spec_lays_it_out() {
        let resp = DescribeLogDirsResponse {
            throttle_time_ms: 0,
            error_code: 0,
            results: vec![LogDirResult {
                error_code: 0,
                log_dir: "/d".into(),
                topics: vec![LogDirTopic {
                    name: "t".into(),
                    partitions: vec![LogDirPartition {
                        partition_index: 1,
                        partition_size: 300,
                        offset_lag: 0,
                        is_future_key: false,
                    }],
                }],
                total_bytes: 1 << 40,
                usable_bytes: 1 << 30,
                is_cordoned: true,
            }],
        };
        let mut b = vec![0, 0, 0, 0, 0, 0, 2, 0, 0, 3, b'/', b'd', 2, 2, b't', 2];
        b.extend_from_slice(&1i32.to_be_bytes());
        b.extend_from_slice(&300i64.to_be_bytes());
        b.extend_from_slice(&0i64.to_be_bytes());
        b.extend_from_slice(&[0, 0, 0]); // is_future_key, partition and topic tags
        b.extend_from_slice(&(1i64 << 40).to_be_bytes());
        b.extend_from_slice(&(1i64 << 30).to_be_bytes());
        b.extend_from_slice(&[1, 0, 0]); // is_cordoned, result and response tags
        assert_eq!(resp.encode(), b);
        assert_eq!(DescribeLogDirsResponse::decode(&b).unwrap(), resp);
    }

    #[test]
    fn a_short_body_or_a_null_partition_array_is_refused() {
        let spec = spec_request();
        for cut in 0..spec.len() {
            assert!(
                DescribeLogDirsRequest::decode(&spec[..cut]).is_err(),
                "{cut}"
            );
        }
        assert!(DescribeLogDirsRequest::decode(&[2, 2, b't', 0, 0, 0]).is_err());
    }

    proptest! {
        #[test]
        fn requests_and_responses_round_trip(
            topics in proptest::option::of(proptest::collection::vec(
                (".{0,8}", proptest::collection::vec(any::<i32>(), 0..4)), 0..4)),
            dirs in proptest::collection::vec(
                (any::<i16>(), ".{0,8}", any::<i64>(), any::<i64>(), any::<bool>(),
                 proptest::collection::vec((".{0,8}", proptest::collection::vec(
                     (any::<i32>(), any::<i64>(), any::<i64>(), any::<bool>()), 0..3)), 0..3)),
                0..3),
        ) {
            let req = DescribeLogDirsRequest { topics };
            prop_assert_eq!(DescribeLogDirsRequest::decode(&req.encode()).unwrap(), req);
            let resp = DescribeLogDirsResponse {
                throttle_time_ms: 1,
                error_code: 0,
                results: dirs.into_iter().map(|(e, dir, total, usable, cordoned, ts)| LogDirResult {
                    error_code: e,
                    log_dir: dir,
                    topics: ts.into_iter().map(|(name, ps)| LogDirTopic {
                        name,
                        partitions: ps.into_iter().map(|(i, size, lag, future)| LogDirPartition {
                            partition_index: i,
                            partition_size: size,
                            offset_lag: lag,
                            is_future_key: future,
                        }).collect(),
                    }).collect(),
                    total_bytes: total,
                    usable_bytes: usable,
                    is_cordoned: cordoned,
                }).collect(),
            };
            prop_assert_eq!(DescribeLogDirsResponse::decode(&resp.encode()).unwrap(), resp);
        }

        #[test]
        fn decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..96)) {
            let _ = DescribeLogDirsRequest::decode(&bytes);
            let _ = DescribeLogDirsResponse::decode(&bytes);
        }
    }
}
