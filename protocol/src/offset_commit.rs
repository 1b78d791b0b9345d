//! OffsetCommit v10 (KIP-848), which names each topic by its id instead
//! of its name. The `kafka-protocol` codec stops at v9, so this version is
//! read and written here. Both sides are flexible (request header v2,
//! response header v1).
//!
//! ```text
//! request v10:
//!   group_id                       compact_string
//!   generation_id_or_member_epoch  i32
//!   member_id                      compact_string
//!   group_instance_id              compact_nullable_string
//!   topics                         compact_array
//!     topic_id                     uuid (16 bytes)
//!     partitions                   compact_array
//!       partition_index            i32
//!       committed_offset           i64
//!       committed_leader_epoch     i32
//!       committed_metadata         compact_nullable_string
//!       tagged fields
//!     tagged fields
//!   tagged fields
//!
//! response v10:
//!   throttle_time_ms               i32
//!   topics                         compact_array
//!     topic_id                     uuid (16 bytes)
//!     partitions                   compact_array
//!       partition_index            i32
//!       error_code                 i16
//!       tagged fields
//!     tagged fields
//!   tagged fields
//! ```
//!
//! v9's `name` is gone from v10 rather than nullable, so a topic is known
//! by its id alone; an id the broker does not know is answered
//! UNKNOWN_TOPIC_ID. Unknown tagged fields are skipped, as Kafka's
//! generated readers do; none are written.

use crate::primitives::{
    put_array_len, put_compact_nullable_string, put_string, put_uvarint, DecodeError, Reader,
};
use uuid::Uuid;

/// The first OffsetCommit version that names topics by id.
pub const TOPIC_ID_VERSION: i16 = 10;

/// Smallest encodings, for refusing array counts the input cannot hold:
/// a topic is an id and two one-byte lengths (partitions, tags); a
/// partition 4 + 8 + 4 bytes, a one-byte metadata length and one tag byte.
const TOPIC_BYTES_MIN: usize = 16 + 1 + 1;
const PARTITION_BYTES_MIN: usize = 4 + 8 + 4 + 1 + 1;
const RESPONSE_PARTITION_BYTES_MIN: usize = 4 + 2 + 1;

/// An OffsetCommit v10 request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OffsetCommitRequest {
    pub group_id: String,
    /// The generation of a classic group, or the member epoch in a
    /// consumer group.
    pub generation_id_or_member_epoch: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub topics: Vec<CommitTopic>,
}

/// The offsets to commit in one topic.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CommitTopic {
    pub topic_id: Uuid,
    pub partitions: Vec<CommitPartition>,
}

/// One partition's offset to commit.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CommitPartition {
    pub partition_index: i32,
    pub committed_offset: i64,
    pub committed_leader_epoch: i32,
    pub committed_metadata: Option<String>,
}

/// An OffsetCommit v10 response.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OffsetCommitResponse {
    pub throttle_time_ms: i32,
    pub topics: Vec<CommittedTopic>,
}

/// One topic's answers: (partition index, error code) per partition.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CommittedTopic {
    pub topic_id: Uuid,
    pub partitions: Vec<(i32, i16)>,
}

impl OffsetCommitRequest {
    /// Reads a v10 request body.
    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let group_id = r.compact_string("group_id")?.to_string();
        let generation_id_or_member_epoch = r.i32("generation_id_or_member_epoch")?;
        let member_id = r.compact_string("member_id")?.to_string();
        let group_instance_id = r
            .compact_nullable_string("group_instance_id")?
            .map(str::to_string);
        let topic_count = r.compact_array_count("topics", TOPIC_BYTES_MIN)?;
        let mut topics = Vec::with_capacity(topic_count);
        for _ in 0..topic_count {
            let topic_id = Uuid::from_bytes(r.uuid("topic_id")?);
            let partition_count = r.compact_array_count("partitions", PARTITION_BYTES_MIN)?;
            let mut partitions = Vec::with_capacity(partition_count);
            for _ in 0..partition_count {
                partitions.push(CommitPartition {
                    partition_index: r.i32("partition_index")?,
                    committed_offset: r.i64("committed_offset")?,
                    committed_leader_epoch: r.i32("committed_leader_epoch")?,
                    committed_metadata: r
                        .compact_nullable_string("committed_metadata")?
                        .map(str::to_string),
                });
                r.skip_tagged_fields()?;
            }
            r.skip_tagged_fields()?;
            topics.push(CommitTopic {
                topic_id,
                partitions,
            });
        }
        r.skip_tagged_fields()?;
        Ok(OffsetCommitRequest {
            group_id,
            generation_id_or_member_epoch,
            member_id,
            group_instance_id,
            topics,
        })
    }

    /// Writes the v10 request body (clients and tests).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        put_string(&mut out, &self.group_id, true);
        out.extend_from_slice(&self.generation_id_or_member_epoch.to_be_bytes());
        put_string(&mut out, &self.member_id, true);
        put_compact_nullable_string(&mut out, self.group_instance_id.as_deref());
        put_array_len(&mut out, self.topics.len(), true);
        for t in &self.topics {
            out.extend_from_slice(t.topic_id.as_bytes());
            put_array_len(&mut out, t.partitions.len(), true);
            for p in &t.partitions {
                out.extend_from_slice(&p.partition_index.to_be_bytes());
                out.extend_from_slice(&p.committed_offset.to_be_bytes());
                out.extend_from_slice(&p.committed_leader_epoch.to_be_bytes());
                put_compact_nullable_string(&mut out, p.committed_metadata.as_deref());
                put_uvarint(&mut out, 0);
            }
            put_uvarint(&mut out, 0);
        }
        put_uvarint(&mut out, 0);
        out
    }
}

impl OffsetCommitResponse {
    /// Writes the v10 response body.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&self.throttle_time_ms.to_be_bytes());
        put_array_len(&mut out, self.topics.len(), true);
        for t in &self.topics {
            out.extend_from_slice(t.topic_id.as_bytes());
            put_array_len(&mut out, t.partitions.len(), true);
            for (partition, error_code) in &t.partitions {
                out.extend_from_slice(&partition.to_be_bytes());
                out.extend_from_slice(&error_code.to_be_bytes());
                put_uvarint(&mut out, 0);
            }
            put_uvarint(&mut out, 0);
        }
        put_uvarint(&mut out, 0);
        out
    }

    /// Reads a v10 response body (clients and tests).
    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let throttle_time_ms = r.i32("throttle_time_ms")?;
        let topic_count = r.compact_array_count("topics", TOPIC_BYTES_MIN)?;
        let mut topics = Vec::with_capacity(topic_count);
        for _ in 0..topic_count {
            let topic_id = Uuid::from_bytes(r.uuid("topic_id")?);
            let partition_count =
                r.compact_array_count("partitions", RESPONSE_PARTITION_BYTES_MIN)?;
            let mut partitions = Vec::with_capacity(partition_count);
            for _ in 0..partition_count {
                partitions.push((r.i32("partition_index")?, r.i16("error_code")?));
                r.skip_tagged_fields()?;
            }
            r.skip_tagged_fields()?;
            topics.push(CommittedTopic {
                topic_id,
                partitions,
            });
        }
        r.skip_tagged_fields()?;
        Ok(OffsetCommitResponse {
            throttle_time_ms,
            topics,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ID: [u8; 16] = [
        0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e,
        0x1f,
    ];

    /// A v10 request written out field by field from the message spec,
    /// with one tagged field (tag 7, 2 bytes) on the partition that a
    /// reader must skip.
    fn spec_request() -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&[3, b'g', b'1']); // group_id "g1"
        b.extend_from_slice(&5i32.to_be_bytes()); // member epoch
        b.extend_from_slice(&[2, b'm']); // member_id "m"
        b.push(0); // group_instance_id null
        b.push(2); // 1 topic
        b.extend_from_slice(&ID);
        b.push(2); // 1 partition
        b.extend_from_slice(&3i32.to_be_bytes());
        b.extend_from_slice(&42i64.to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes());
        b.extend_from_slice(&[3, b'm', b'd']); // metadata "md"
        b.extend_from_slice(&[1, 7, 2, 0xaa, 0xbb]); // one tagged field
        b.push(0); // topic tags
        b.push(0); // request tags
        b
    }

    fn expected_request() -> OffsetCommitRequest {
        OffsetCommitRequest {
            group_id: "g1".into(),
            generation_id_or_member_epoch: 5,
            member_id: "m".into(),
            group_instance_id: None,
            topics: vec![CommitTopic {
                topic_id: Uuid::from_bytes(ID),
                partitions: vec![CommitPartition {
                    partition_index: 3,
                    committed_offset: 42,
                    committed_leader_epoch: -1,
                    committed_metadata: Some("md".into()),
                }],
            }],
        }
    }

    #[test]
    fn reads_a_request_built_from_the_spec() {
        assert_eq!(
            OffsetCommitRequest::decode(&spec_request()).unwrap(),
            expected_request()
        );
    }

    #[test]
    fn writes_the_spec_bytes_without_tagged_fields() {
        let spec = spec_request();
        // The same bytes with the partition's tagged field left out.
        let at = spec
            .windows(5)
            .position(|w| w == [1, 7, 2, 0xaa, 0xbb])
            .unwrap();
        let untagged = [&spec[..at], &[0], &spec[at + 5..]].concat();
        assert_eq!(expected_request().encode(), untagged);
    }

    #[test]
    fn writes_a_response_as_the_spec_lays_it_out() {
        let resp = OffsetCommitResponse {
            throttle_time_ms: 0,
            topics: vec![CommittedTopic {
                topic_id: Uuid::from_bytes(ID),
                partitions: vec![(3, 0), (4, 100)],
            }],
        };
        let mut b = Vec::new();
        b.extend_from_slice(&0i32.to_be_bytes());
        b.push(2);
        b.extend_from_slice(&ID);
        b.push(3);
        b.extend_from_slice(&[0, 0, 0, 3, 0, 0, 0]);
        b.extend_from_slice(&[0, 0, 0, 4, 0, 100, 0]);
        b.push(0);
        b.push(0);
        assert_eq!(resp.encode(), b);
        assert_eq!(OffsetCommitResponse::decode(&b).unwrap(), resp);
    }

    #[test]
    fn a_null_topic_array_or_short_body_is_refused() {
        let mut b = spec_request();
        let topics_at = 3 + 4 + 2 + 1;
        b.truncate(topics_at);
        b.push(0); // null topics
        b.push(0);
        assert!(OffsetCommitRequest::decode(&b).is_err());
        let spec = spec_request();
        for cut in 0..spec.len() {
            assert!(OffsetCommitRequest::decode(&spec[..cut]).is_err(), "{cut}");
        }
    }

    proptest! {
        #[test]
        fn requests_round_trip(
            group in ".{0,12}",
            epoch in any::<i32>(),
            instance in proptest::option::of(".{0,8}"),
            topics in proptest::collection::vec(
                (any::<u128>(), proptest::collection::vec(
                    (any::<i32>(), any::<i64>(), any::<i32>(), proptest::option::of(".{0,8}")),
                    0..4)),
                0..4),
        ) {
            let req = OffsetCommitRequest {
                group_id: group,
                generation_id_or_member_epoch: epoch,
                member_id: "member".into(),
                group_instance_id: instance,
                topics: topics.into_iter().map(|(id, ps)| CommitTopic {
                    topic_id: Uuid::from_u128(id),
                    partitions: ps.into_iter().map(|(i, o, e, m)| CommitPartition {
                        partition_index: i,
                        committed_offset: o,
                        committed_leader_epoch: e,
                        committed_metadata: m,
                    }).collect(),
                }).collect(),
            };
            prop_assert_eq!(OffsetCommitRequest::decode(&req.encode()).unwrap(), req);
        }

        #[test]
        fn decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..96)) {
            let _ = OffsetCommitRequest::decode(&bytes);
            let _ = OffsetCommitResponse::decode(&bytes);
        }
    }
}
