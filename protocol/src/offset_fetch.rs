//! OffsetFetch v10 (KIP-848), which names each topic by its id instead
//! of its name. The `kafka-protocol` codec stops at v9, so this version is
//! read and written here. Both sides are flexible (request header v2,
//! response header v1).
//!
//! ```text
//! request v10:
//!   groups                         compact_array
//!     group_id                     compact_string
//!     member_id                    compact_nullable_string
//!     member_epoch                 i32
//!     topics                       compact_nullable_array (null: every topic)
//!       topic_id                   uuid (16 bytes)
//!       partition_indexes          compact_array of i32
//!       tagged fields
//!     tagged fields
//!   require_stable                 bool (i8)
//!   tagged fields
//!
//! response v10:
//!   throttle_time_ms               i32
//!   groups                         compact_array
//!     group_id                     compact_string
//!     topics                       compact_array
//!       topic_id                   uuid (16 bytes)
//!       partitions                 compact_array
//!         partition_index          i32
//!         committed_offset         i64
//!         committed_leader_epoch   i32
//!         metadata                 compact_nullable_string
//!         error_code               i16
//!         tagged fields
//!       tagged fields
//!     error_code                   i16
//!     tagged fields
//!   tagged fields
//! ```
//!
//! Unknown tagged fields are skipped, as Kafka's generated readers do;
//! none are written.

use crate::primitives::{
    put_array_len, put_compact_nullable_string, put_string, put_uvarint, DecodeError, Reader,
};
use uuid::Uuid;

/// The first OffsetFetch version that names topics by id.
pub const TOPIC_ID_VERSION: i16 = 10;

/// Smallest encodings, for refusing array counts the input cannot hold.
const GROUP_BYTES_MIN: usize = 1 + 1 + 4 + 1 + 1;
const TOPIC_BYTES_MIN: usize = 16 + 1 + 1;
const RESPONSE_GROUP_BYTES_MIN: usize = 1 + 1 + 2 + 1;
const RESPONSE_PARTITION_BYTES_MIN: usize = 4 + 8 + 4 + 1 + 2 + 1;

/// An OffsetFetch v10 request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OffsetFetchRequest {
    pub groups: Vec<FetchGroup>,
    pub require_stable: bool,
}

/// One group's question.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FetchGroup {
    pub group_id: String,
    /// The consumer-group member asking, if it is one (KIP-848).
    pub member_id: Option<String>,
    pub member_epoch: i32,
    /// (topic id, partition indexes); None asks for every topic.
    pub topics: Option<Vec<TopicPartitions>>,
}

/// A topic by id and the partitions asked for in it.
pub type TopicPartitions = (Uuid, Vec<i32>);

/// An OffsetFetch v10 response.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OffsetFetchResponse {
    pub throttle_time_ms: i32,
    pub groups: Vec<FetchedGroup>,
}

/// One group's answer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FetchedGroup {
    pub group_id: String,
    pub topics: Vec<FetchedTopic>,
    pub error_code: i16,
}

/// One topic's committed offsets.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FetchedTopic {
    pub topic_id: Uuid,
    pub partitions: Vec<FetchedPartition>,
}

/// One partition's committed offset, or why there is none.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FetchedPartition {
    pub partition_index: i32,
    pub committed_offset: i64,
    pub committed_leader_epoch: i32,
    pub metadata: Option<String>,
    pub error_code: i16,
}

fn read_topics(r: &mut Reader<'_>) -> Result<Option<Vec<TopicPartitions>>, DecodeError> {
    let Some(topic_count) = r.compact_array_len("topics", TOPIC_BYTES_MIN)? else {
        return Ok(None);
    };
    let mut topics = Vec::with_capacity(topic_count);
    for _ in 0..topic_count {
        let id = Uuid::from_bytes(r.uuid("topic_id")?);
        let n = r.compact_array_count("partition_indexes", 4)?;
        let mut indexes = Vec::with_capacity(n);
        for _ in 0..n {
            indexes.push(r.i32("partition_index")?);
        }
        r.skip_tagged_fields()?;
        topics.push((id, indexes));
    }
    Ok(Some(topics))
}

impl OffsetFetchRequest {
    /// Reads a v10 request body.
    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let group_count = r.compact_array_count("groups", GROUP_BYTES_MIN)?;
        let mut groups = Vec::with_capacity(group_count);
        for _ in 0..group_count {
            let group_id = r.compact_string("group_id")?.to_string();
            let member_id = r.compact_nullable_string("member_id")?.map(str::to_string);
            let member_epoch = r.i32("member_epoch")?;
            let topics = read_topics(&mut r)?;
            r.skip_tagged_fields()?;
            groups.push(FetchGroup {
                group_id,
                member_id,
                member_epoch,
                topics,
            });
        }
        let require_stable = r.bool("require_stable")?;
        r.skip_tagged_fields()?;
        Ok(OffsetFetchRequest {
            groups,
            require_stable,
        })
    }

    /// Writes the v10 request body (clients and tests).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        put_array_len(&mut out, self.groups.len(), true);
        for g in &self.groups {
            put_string(&mut out, &g.group_id, true);
            put_compact_nullable_string(&mut out, g.member_id.as_deref());
            out.extend_from_slice(&g.member_epoch.to_be_bytes());
            match &g.topics {
                None => put_uvarint(&mut out, 0),
                Some(topics) => {
                    put_array_len(&mut out, topics.len(), true);
                    for (id, indexes) in topics {
                        out.extend_from_slice(id.as_bytes());
                        put_array_len(&mut out, indexes.len(), true);
                        for i in indexes {
                            out.extend_from_slice(&i.to_be_bytes());
                        }
                        put_uvarint(&mut out, 0);
                    }
                }
            }
            put_uvarint(&mut out, 0);
        }
        out.push(u8::from(self.require_stable));
        put_uvarint(&mut out, 0);
        out
    }
}

impl OffsetFetchResponse {
    /// Writes the v10 response body.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&self.throttle_time_ms.to_be_bytes());
        put_array_len(&mut out, self.groups.len(), true);
        for g in &self.groups {
            put_string(&mut out, &g.group_id, true);
            put_array_len(&mut out, g.topics.len(), true);
            for t in &g.topics {
                out.extend_from_slice(t.topic_id.as_bytes());
                put_array_len(&mut out, t.partitions.len(), true);
                for p in &t.partitions {
                    out.extend_from_slice(&p.partition_index.to_be_bytes());
                    out.extend_from_slice(&p.committed_offset.to_be_bytes());
                    out.extend_from_slice(&p.committed_leader_epoch.to_be_bytes());
                    put_compact_nullable_string(&mut out, p.metadata.as_deref());
                    out.extend_from_slice(&p.error_code.to_be_bytes());
                    put_uvarint(&mut out, 0);
                }
                put_uvarint(&mut out, 0);
            }
            out.extend_from_slice(&g.error_code.to_be_bytes());
            put_uvarint(&mut out, 0);
        }
        put_uvarint(&mut out, 0);
        out
    }

    /// Reads a v10 response body (clients and tests).
    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let throttle_time_ms = r.i32("throttle_time_ms")?;
        let group_count = r.compact_array_count("groups", RESPONSE_GROUP_BYTES_MIN)?;
        let mut groups = Vec::with_capacity(group_count);
        for _ in 0..group_count {
            let group_id = r.compact_string("group_id")?.to_string();
            let topic_count = r.compact_array_count("topics", TOPIC_BYTES_MIN)?;
            let mut topics = Vec::with_capacity(topic_count);
            for _ in 0..topic_count {
                let topic_id = Uuid::from_bytes(r.uuid("topic_id")?);
                let n = r.compact_array_count("partitions", RESPONSE_PARTITION_BYTES_MIN)?;
                let mut partitions = Vec::with_capacity(n);
                for _ in 0..n {
                    partitions.push(FetchedPartition {
                        partition_index: r.i32("partition_index")?,
                        committed_offset: r.i64("committed_offset")?,
                        committed_leader_epoch: r.i32("committed_leader_epoch")?,
                        metadata: r.compact_nullable_string("metadata")?.map(str::to_string),
                        error_code: r.i16("error_code")?,
                    });
                    r.skip_tagged_fields()?;
                }
                r.skip_tagged_fields()?;
                topics.push(FetchedTopic {
                    topic_id,
                    partitions,
                });
            }
            let error_code = r.i16("error_code")?;
            r.skip_tagged_fields()?;
            groups.push(FetchedGroup {
                group_id,
                topics,
                error_code,
            });
        }
        r.skip_tagged_fields()?;
        Ok(OffsetFetchResponse {
            throttle_time_ms,
            groups,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ID: [u8; 16] = [
        0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x2b, 0x2c, 0x2d, 0x2e,
        0x2f,
    ];

    /// Two groups written out field by field from the message spec: the
    /// first asks for partitions 0 and 2 of one topic as member "m" at
    /// epoch 4, the second for every topic (null array); require_stable
    /// is set, and the request carries a tagged field (tag 0, 1 byte)
    /// that a reader must skip.
    fn spec_request() -> Vec<u8> {
        let mut b = vec![3]; // 2 groups
        b.extend_from_slice(&[3, b'g', b'1', 2, b'm']);
        b.extend_from_slice(&4i32.to_be_bytes());
        b.push(2); // 1 topic
        b.extend_from_slice(&ID);
        b.push(3); // 2 partition indexes
        b.extend_from_slice(&0i32.to_be_bytes());
        b.extend_from_slice(&2i32.to_be_bytes());
        b.push(0); // topic tags
        b.push(0); // group tags
        b.extend_from_slice(&[3, b'g', b'2', 0]); // "g2", member null
        b.extend_from_slice(&(-1i32).to_be_bytes());
        b.push(0); // topics null
        b.push(0); // group tags
        b.push(1); // require_stable
        b.extend_from_slice(&[1, 0, 1, 0x55]); // one tagged field
        b
    }

    fn expected_request() -> OffsetFetchRequest {
        OffsetFetchRequest {
            groups: vec![
                FetchGroup {
                    group_id: "g1".into(),
                    member_id: Some("m".into()),
                    member_epoch: 4,
                    topics: Some(vec![(Uuid::from_bytes(ID), vec![0, 2])]),
                },
                FetchGroup {
                    group_id: "g2".into(),
                    member_id: None,
                    member_epoch: -1,
                    topics: None,
                },
            ],
            require_stable: true,
        }
    }

    #[test]
    fn reads_a_request_built_from_the_spec() {
        assert_eq!(
            OffsetFetchRequest::decode(&spec_request()).unwrap(),
            expected_request()
        );
    }

    #[test]
    fn writes_the_spec_bytes_without_tagged_fields() {
        let mut spec = spec_request();
        spec.truncate(spec.len() - 4);
        spec.push(0);
        assert_eq!(expected_request().encode(), spec);
    }

    #[test]
    fn writes_a_response_as_the_spec_lays_it_out() {
        let resp = OffsetFetchResponse {
            throttle_time_ms: 0,
            groups: vec![FetchedGroup {
                group_id: "g1".into(),
                topics: vec![FetchedTopic {
                    topic_id: Uuid::from_bytes(ID),
                    partitions: vec![FetchedPartition {
                        partition_index: 2,
                        committed_offset: 7,
                        committed_leader_epoch: 1,
                        metadata: Some(String::new()),
                        error_code: 0,
                    }],
                }],
                error_code: 0,
            }],
        };
        let mut b = Vec::new();
        b.extend_from_slice(&0i32.to_be_bytes());
        b.push(2);
        b.extend_from_slice(&[3, b'g', b'1']);
        b.push(2);
        b.extend_from_slice(&ID);
        b.push(2);
        b.extend_from_slice(&2i32.to_be_bytes());
        b.extend_from_slice(&7i64.to_be_bytes());
        b.extend_from_slice(&1i32.to_be_bytes());
        b.push(1); // metadata ""
        b.extend_from_slice(&0i16.to_be_bytes());
        b.push(0); // partition tags
        b.push(0); // topic tags
        b.extend_from_slice(&0i16.to_be_bytes()); // group error
        b.push(0); // group tags
        b.push(0); // response tags
        assert_eq!(resp.encode(), b);
        assert_eq!(OffsetFetchResponse::decode(&b).unwrap(), resp);
    }

    #[test]
    fn every_truncation_is_refused() {
        let spec = spec_request();
        for cut in 0..spec.len() {
            assert!(OffsetFetchRequest::decode(&spec[..cut]).is_err(), "{cut}");
        }
    }

    proptest! {
        #[test]
        fn requests_round_trip(
            groups in proptest::collection::vec(
                (".{0,8}", proptest::option::of(".{0,8}"), any::<i32>(),
                 proptest::option::of(proptest::collection::vec(
                    (any::<u128>(), proptest::collection::vec(any::<i32>(), 0..4)), 0..3))),
                0..3),
            stable in any::<bool>(),
        ) {
            let req = OffsetFetchRequest {
                groups: groups.into_iter().map(|(g, m, e, ts)| FetchGroup {
                    group_id: g,
                    member_id: m,
                    member_epoch: e,
                    topics: ts.map(|ts| ts.into_iter()
                        .map(|(id, ps)| (Uuid::from_u128(id), ps)).collect()),
                }).collect(),
                require_stable: stable,
            };
            prop_assert_eq!(OffsetFetchRequest::decode(&req.encode()).unwrap(), req);
        }

        #[test]
        fn decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..96)) {
            let _ = OffsetFetchRequest::decode(&bytes);
            let _ = OffsetFetchResponse::decode(&bytes);
        }
    }
}
