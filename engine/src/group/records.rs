//! Records of the `__consumer_offsets` topic, in Kafka's own schema, so
//! tools that read Kafka's offsets topic read Sluice's too.
//!
//! Every record is a key and a value, both starting with an i16 schema
//! version; a null value is a tombstone (the key's entry is deleted).
//! Strings are i16-length-prefixed UTF-8, nullable strings use length -1,
//! bytes are i32-length-prefixed (the non-flexible encoding).
//!
//! ```text
//! OffsetCommitKey   v1: version=1 | group: string | topic: string | partition: i32
//! OffsetCommitValue v3: version=3 | offset: i64 | leader_epoch: i32
//!                       | metadata: string | commit_timestamp: i64
//! GroupMetadataKey  v2: version=2 | group: string
//! GroupMetadataValue v3: version=3 | protocol_type: string | generation: i32
//!                       | protocol: nullable string | leader: nullable string
//!                       | current_state_timestamp: i64
//!                       | members: i32 count, then per member:
//!                         member_id: string | group_instance_id: nullable string
//!                         | client_id: string | client_host: string
//!                         | rebalance_timeout: i32 | session_timeout: i32
//!                         | subscription: bytes | assignment: bytes
//! ConsumerGroupMetadataKey v3: version=3 | group: string
//! ConsumerGroupMetadataValue v0: version=0 | epoch: i32 | tagged fields (flexible:
//!                       an unsigned varint count, 0 when none)
//! ```
//!
//! A consumer-protocol group (KIP-848) stores its group epoch, so a
//! coordinator that takes the group over never hands out an epoch an
//! earlier member already holds, and each member's metadata (key v5) and
//! current assignment (key v8), laid out in `consumer/records.rs`, so
//! members keep their partitions and epochs across a coordinator move.
//! The target assignment (Kafka's keys v6/v7) is not stored: the new
//! coordinator recomputes it, sticky to what members own.
//!
//! Older value versions (offset v0–v2, group v0–v2) are read too: Kafka
//! wrote them, and their fields are a prefix-compatible subset.

use bytes::Bytes;
use sluice_protocol::primitives::DecodeError;
use sluice_protocol::primitives::Reader;

const OFFSET_KEY_VERSION: i16 = 1;
const GROUP_KEY_VERSION: i16 = 2;
const OFFSET_VALUE_VERSION: i16 = 3;
const GROUP_VALUE_VERSION: i16 = 3;
const CONSUMER_GROUP_KEY_VERSION: i16 = 3;
const CONSUMER_GROUP_VALUE_VERSION: i16 = 0;
const CONSUMER_MEMBER_KEY_VERSION: i16 = 5;
const CONSUMER_ASSIGNMENT_KEY_VERSION: i16 = 8;

/// Bound on members decoded from one group record.
pub const GROUP_MEMBERS_MAX: usize = 100_000;

/// What a record's key names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Key {
    Offset {
        group: String,
        topic: String,
        partition: i32,
    },
    Group {
        group: String,
    },
    /// A consumer-protocol group's epoch.
    ConsumerGroup {
        group: String,
    },
    /// A consumer-protocol member's metadata.
    ConsumerMember {
        group: String,
        member: String,
    },
    /// A consumer-protocol member's current assignment.
    ConsumerAssignment {
        group: String,
        member: String,
    },
}

impl Key {
    /// The group this record belongs to.
    pub fn group(&self) -> &str {
        match self {
            Key::Offset { group, .. }
            | Key::Group { group }
            | Key::ConsumerGroup { group }
            | Key::ConsumerMember { group, .. }
            | Key::ConsumerAssignment { group, .. } => group,
        }
    }
}

/// A committed offset as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffsetValue {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
}

/// One member in a stored group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberValue {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub subscription: Bytes,
    pub assignment: Bytes,
}

/// A group's membership as stored after each completed rebalance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupValue {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub state_timestamp_ms: i64,
    pub members: Vec<MemberValue>,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as i16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_nullable_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => put_str(out, s),
        None => out.extend_from_slice(&(-1i16).to_be_bytes()),
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as i32).to_be_bytes());
    out.extend_from_slice(b);
}

impl Key {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        match self {
            Key::Offset {
                group,
                topic,
                partition,
            } => {
                out.extend_from_slice(&OFFSET_KEY_VERSION.to_be_bytes());
                put_str(&mut out, group);
                put_str(&mut out, topic);
                out.extend_from_slice(&partition.to_be_bytes());
            }
            Key::Group { group } => {
                out.extend_from_slice(&GROUP_KEY_VERSION.to_be_bytes());
                put_str(&mut out, group);
            }
            Key::ConsumerGroup { group } => {
                out.extend_from_slice(&CONSUMER_GROUP_KEY_VERSION.to_be_bytes());
                put_str(&mut out, group);
            }
            Key::ConsumerMember { group, member } => {
                out.extend_from_slice(&CONSUMER_MEMBER_KEY_VERSION.to_be_bytes());
                put_str(&mut out, group);
                put_str(&mut out, member);
            }
            Key::ConsumerAssignment { group, member } => {
                out.extend_from_slice(&CONSUMER_ASSIGNMENT_KEY_VERSION.to_be_bytes());
                put_str(&mut out, group);
                put_str(&mut out, member);
            }
        }
        out
    }

    pub fn decode(b: &[u8]) -> Result<Key, DecodeError> {
        let mut r = Reader::new(b);
        let version = r.i16("key version")?;
        match version {
            0 | 1 => Ok(Key::Offset {
                group: string(&mut r, "group")?,
                topic: string(&mut r, "topic")?,
                partition: r.i32("partition")?,
            }),
            2 => Ok(Key::Group {
                group: string(&mut r, "group")?,
            }),
            CONSUMER_GROUP_KEY_VERSION => Ok(Key::ConsumerGroup {
                group: string(&mut r, "group")?,
            }),
            CONSUMER_MEMBER_KEY_VERSION => Ok(Key::ConsumerMember {
                group: string(&mut r, "group")?,
                member: string(&mut r, "member")?,
            }),
            CONSUMER_ASSIGNMENT_KEY_VERSION => Ok(Key::ConsumerAssignment {
                group: string(&mut r, "group")?,
                member: string(&mut r, "member")?,
            }),
            _ => Err(DecodeError::Invalid {
                field: "key version",
                value: i64::from(version),
            }),
        }
    }
}

/// Encodes a consumer group's epoch record value.
pub fn encode_consumer_group_epoch(epoch: i32) -> Vec<u8> {
    let mut out = Vec::with_capacity(7);
    out.extend_from_slice(&CONSUMER_GROUP_VALUE_VERSION.to_be_bytes());
    out.extend_from_slice(&epoch.to_be_bytes());
    out.push(0); // no tagged fields
    out
}

/// Decodes a consumer group's epoch record value; tagged fields a later
/// writer added are skipped.
pub fn decode_consumer_group_epoch(b: &[u8]) -> Result<i32, DecodeError> {
    let mut r = Reader::new(b);
    let version = r.i16("consumer group value version")?;
    if version != CONSUMER_GROUP_VALUE_VERSION {
        return Err(DecodeError::Invalid {
            field: "consumer group value version",
            value: i64::from(version),
        });
    }
    r.i32("epoch")
}

impl OffsetValue {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + self.metadata.len());
        out.extend_from_slice(&OFFSET_VALUE_VERSION.to_be_bytes());
        out.extend_from_slice(&self.offset.to_be_bytes());
        out.extend_from_slice(&self.leader_epoch.to_be_bytes());
        put_str(&mut out, &self.metadata);
        out.extend_from_slice(&self.commit_timestamp_ms.to_be_bytes());
        out
    }

    pub fn decode(b: &[u8]) -> Result<OffsetValue, DecodeError> {
        let mut r = Reader::new(b);
        let version = r.i16("offset value version")?;
        if !(0..=3).contains(&version) {
            return Err(DecodeError::Invalid {
                field: "offset value version",
                value: i64::from(version),
            });
        }
        let offset = r.i64("offset")?;
        let leader_epoch = if version >= 3 {
            r.i32("leader_epoch")?
        } else {
            -1
        };
        let metadata = string(&mut r, "metadata")?;
        let commit_timestamp_ms = r.i64("commit_timestamp")?;
        Ok(OffsetValue {
            offset,
            leader_epoch,
            metadata,
            commit_timestamp_ms,
        })
    }
}

impl GroupValue {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(&GROUP_VALUE_VERSION.to_be_bytes());
        put_str(&mut out, &self.protocol_type);
        out.extend_from_slice(&self.generation.to_be_bytes());
        put_nullable_str(&mut out, self.protocol.as_deref());
        put_nullable_str(&mut out, self.leader.as_deref());
        out.extend_from_slice(&self.state_timestamp_ms.to_be_bytes());
        out.extend_from_slice(&(self.members.len() as i32).to_be_bytes());
        for m in &self.members {
            put_str(&mut out, &m.member_id);
            put_nullable_str(&mut out, m.instance_id.as_deref());
            put_str(&mut out, &m.client_id);
            put_str(&mut out, &m.client_host);
            out.extend_from_slice(&m.rebalance_timeout_ms.to_be_bytes());
            out.extend_from_slice(&m.session_timeout_ms.to_be_bytes());
            put_bytes(&mut out, &m.subscription);
            put_bytes(&mut out, &m.assignment);
        }
        out
    }

    pub fn decode(b: &[u8]) -> Result<GroupValue, DecodeError> {
        let mut r = Reader::new(b);
        let version = r.i16("group value version")?;
        if !(0..=3).contains(&version) {
            return Err(DecodeError::Invalid {
                field: "group value version",
                value: i64::from(version),
            });
        }
        let protocol_type = string(&mut r, "protocol_type")?;
        let generation = r.i32("generation")?;
        let protocol = nullable(&mut r, "protocol")?;
        let leader = nullable(&mut r, "leader")?;
        let state_timestamp_ms = if version >= 2 {
            r.i64("current_state_timestamp")?
        } else {
            -1
        };
        let count = r.i32("members")?;
        if count < 0 || count as usize > GROUP_MEMBERS_MAX {
            return Err(DecodeError::Invalid {
                field: "members",
                value: i64::from(count),
            });
        }
        let mut members = Vec::with_capacity(count as usize);
        for _ in 0..count {
            members.push(member(&mut r, version)?);
        }
        Ok(GroupValue {
            protocol_type,
            generation,
            protocol,
            leader,
            state_timestamp_ms,
            members,
        })
    }
}

fn member(r: &mut Reader<'_>, version: i16) -> Result<MemberValue, DecodeError> {
    let member_id = string(r, "member_id")?;
    let instance_id = if version >= 3 {
        nullable(r, "group_instance_id")?
    } else {
        None
    };
    let client_id = string(r, "client_id")?;
    let client_host = string(r, "client_host")?;
    let rebalance_timeout_ms = if version >= 1 {
        r.i32("rebalance_timeout")?
    } else {
        -1
    };
    let session_timeout_ms = r.i32("session_timeout")?;
    let subscription = bytes(r, "subscription")?;
    let assignment = bytes(r, "assignment")?;
    Ok(MemberValue {
        member_id,
        instance_id,
        client_id,
        client_host,
        rebalance_timeout_ms: if rebalance_timeout_ms < 0 {
            session_timeout_ms
        } else {
            rebalance_timeout_ms
        },
        session_timeout_ms,
        subscription,
        assignment,
    })
}

/// Not UTF-8: the value reported is -1, there being no number to show.
fn invalid(field: &'static str) -> DecodeError {
    DecodeError::Invalid { field, value: -1 }
}

fn nullable(r: &mut Reader<'_>, field: &'static str) -> Result<Option<String>, DecodeError> {
    let len = r.i16(field)?;
    if len < 0 {
        return Ok(None);
    }
    let b = r.take(len as usize, field)?;
    std::str::from_utf8(b)
        .map(|s| Some(s.to_string()))
        .map_err(|_| invalid(field))
}

fn string(r: &mut Reader<'_>, field: &'static str) -> Result<String, DecodeError> {
    nullable(r, field)?.ok_or(invalid(field))
}

fn bytes(r: &mut Reader<'_>, field: &'static str) -> Result<Bytes, DecodeError> {
    let len = r.i32(field)?;
    if len < 0 {
        return Ok(Bytes::new());
    }
    Ok(Bytes::copy_from_slice(r.take(len as usize, field)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_records_round_trip() {
        let key = Key::Offset {
            group: "g".into(),
            topic: "orders".into(),
            partition: 7,
        };
        assert_eq!(Key::decode(&key.encode()).unwrap(), key);
        let value = OffsetValue {
            offset: 42,
            leader_epoch: 3,
            metadata: "m".into(),
            commit_timestamp_ms: 1_700_000_000_000,
        };
        assert_eq!(OffsetValue::decode(&value.encode()).unwrap(), value);
    }

    #[test]
    fn consumer_group_records_match_kafkas_layout() {
        let key = Key::ConsumerGroup { group: "g".into() };
        // Key version 3, then the group id as an i16-prefixed string.
        assert_eq!(key.encode(), [0, 3, 0, 1, b'g']);
        assert_eq!(Key::decode(&key.encode()).unwrap(), key);
        // Value version 0, the epoch, no tagged fields.
        assert_eq!(encode_consumer_group_epoch(7), [0, 0, 0, 0, 0, 7, 0]);
        assert_eq!(
            decode_consumer_group_epoch(&encode_consumer_group_epoch(7)),
            Ok(7)
        );
        assert!(decode_consumer_group_epoch(&[0, 1, 0, 0, 0, 7, 0]).is_err());
    }

    #[test]
    fn group_records_round_trip() {
        let key = Key::Group { group: "g".into() };
        assert_eq!(Key::decode(&key.encode()).unwrap(), key);
        let value = GroupValue {
            protocol_type: "consumer".into(),
            generation: 5,
            protocol: Some("range".into()),
            leader: Some("m-1".into()),
            state_timestamp_ms: 9,
            members: vec![MemberValue {
                member_id: "m-1".into(),
                instance_id: Some("i".into()),
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                rebalance_timeout_ms: 300_000,
                session_timeout_ms: 45_000,
                subscription: Bytes::from_static(b"sub"),
                assignment: Bytes::from_static(b"asg"),
            }],
        };
        assert_eq!(GroupValue::decode(&value.encode()).unwrap(), value);
    }

    #[test]
    fn truncated_and_unknown_records_are_errors() {
        assert!(Key::decode(&[0, 9, 0, 1, b'g']).is_err());
        assert!(Key::decode(&[0, 1, 0, 5, b'g']).is_err());
        let mut v = OffsetValue {
            offset: 1,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp_ms: 0,
        }
        .encode();
        v.truncate(v.len() - 1);
        assert!(OffsetValue::decode(&v).is_err());
    }
}
