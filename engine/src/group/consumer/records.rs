//! The records a consumer-protocol group's members leave in
//! `__consumer_offsets`, in Kafka's schema (flexible encoding: compact
//! strings and arrays, `uvarint(length + 1)`, 0 for null, and a tagged
//! field section after each struct, empty here and skipped on reading).
//!
//! ```text
//! ConsumerGroupMemberMetadataKey v5: version=5 | group: string | member: string
//! ConsumerGroupMemberMetadataValue v0: version=0
//!     | instance_id: compact nullable string | rack_id: compact nullable string
//!     | client_id: compact string | client_host: compact string
//!     | subscribed_topic_names: compact array of compact strings
//!     | subscribed_topic_regex: compact nullable string
//!     | rebalance_timeout_ms: i32 | server_assignor: compact nullable string
//!     | tagged fields: tag 0 = classic member metadata, present only for a
//!       member that speaks the classic protocol (JoinGroup/SyncGroup):
//!         session_timeout_ms: i32
//!         | supported_protocols: compact array of (name: compact string
//!             | metadata: compact bytes | tagged fields)
//!         | tagged fields
//! ConsumerGroupCurrentMemberAssignmentKey v8: version=8 | group: string | member: string
//! ConsumerGroupCurrentMemberAssignmentValue v0: version=0
//!     | member_epoch: i32 | previous_member_epoch: i32 | state: i8
//!     | assigned: compact array of (topic_id: uuid | partitions: compact array of i32
//!                                   | tagged fields)
//!     | pending_revocation: the same | tagged fields
//! ```

use super::{Assignment, PARTITIONS_MAX};
use sluice_protocol::primitives::{put_array_len, put_string, put_uvarint, DecodeError, Reader};
use std::collections::BTreeSet;
use uuid::Uuid;

const VALUE_VERSION: i16 = 0;
/// Most subscribed topic names decoded from one record.
const TOPIC_NAMES_MAX: usize = 100_000;
/// Most classic protocols (assignors) of one member decoded from a record:
/// clients offer one to three.
const CLASSIC_PROTOCOLS_MAX: usize = 64;
/// Largest classic protocol metadata decoded from a record (the
/// subscription with owned partitions; JoinGroup bounds it by the request
/// size, 100 MiB by default).
const CLASSIC_METADATA_MAX: usize = 100 << 20;
/// The tag of the classic member metadata in a member's metadata value.
const CLASSIC_TAG: u32 = 0;

/// What a member speaking the classic protocol adds to its metadata: its
/// session timeout and the protocols (assignor name, ConsumerProtocol
/// subscription) of its last JoinGroup.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClassicRecord {
    pub session_timeout_ms: i32,
    pub protocols: Vec<(String, Vec<u8>)>,
}

/// A member's metadata as stored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberRecord {
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub topic_names: Vec<String>,
    pub regex: Option<String>,
    pub rebalance_timeout_ms: i32,
    pub server_assignor: Option<String>,
    /// Set for a member that speaks the classic protocol.
    pub classic: Option<ClassicRecord>,
}

/// A member's current assignment as stored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AssignmentRecord {
    pub epoch: i32,
    pub previous_epoch: i32,
    pub state: i8,
    pub assigned: Assignment,
    pub revoking: Assignment,
}

fn put_nullable(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => put_string(out, s, true),
        None => put_uvarint(out, 0),
    }
}

fn put_assignment(out: &mut Vec<u8>, a: &Assignment) {
    put_array_len(out, a.len(), true);
    for (t, ps) in a {
        out.extend_from_slice(t.as_bytes());
        put_array_len(out, ps.len(), true);
        for p in ps {
            out.extend_from_slice(&p.to_be_bytes());
        }
        put_uvarint(out, 0);
    }
}

/// A compact length: `None` for null.
fn compact_len(
    r: &mut Reader<'_>,
    field: &'static str,
    max: usize,
) -> Result<Option<usize>, DecodeError> {
    let n = r.uvarint(field)? as usize;
    if n == 0 {
        return Ok(None);
    }
    if n - 1 > max {
        return Err(DecodeError::Invalid {
            field,
            value: n as i64,
        });
    }
    Ok(Some(n - 1))
}

fn nullable(r: &mut Reader<'_>, field: &'static str) -> Result<Option<String>, DecodeError> {
    match compact_len(r, field, u16::MAX as usize)? {
        None => Ok(None),
        Some(n) => {
            let b = r.take(n, field)?;
            String::from_utf8(b.to_vec())
                .map(Some)
                .map_err(|_| DecodeError::Invalid { field, value: -1 })
        }
    }
}

fn string(r: &mut Reader<'_>, field: &'static str) -> Result<String, DecodeError> {
    nullable(r, field)?.ok_or(DecodeError::Invalid { field, value: -1 })
}

fn assignment(r: &mut Reader<'_>, field: &'static str) -> Result<Assignment, DecodeError> {
    let topics = compact_len(r, field, PARTITIONS_MAX)?.unwrap_or(0);
    let mut out = Assignment::new();
    let mut total = 0usize;
    for _ in 0..topics {
        let id = Uuid::from_slice(r.take(16, "topic id")?).expect("16 bytes");
        let n = compact_len(r, "partitions", PARTITIONS_MAX)?.unwrap_or(0);
        total += n;
        if total > PARTITIONS_MAX {
            return Err(DecodeError::Invalid {
                field,
                value: total as i64,
            });
        }
        let mut ps = BTreeSet::new();
        for _ in 0..n {
            ps.insert(r.i32("partition")?);
        }
        r.skip_tagged_fields()?;
        out.insert(id, ps);
    }
    Ok(super::normalized(out))
}

fn version(r: &mut Reader<'_>) -> Result<(), DecodeError> {
    let v = r.i16("value version")?;
    if v != VALUE_VERSION {
        return Err(DecodeError::Invalid {
            field: "value version",
            value: i64::from(v),
        });
    }
    Ok(())
}

impl MemberRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(&VALUE_VERSION.to_be_bytes());
        put_nullable(&mut out, self.instance_id.as_deref());
        put_nullable(&mut out, self.rack_id.as_deref());
        put_string(&mut out, &self.client_id, true);
        put_string(&mut out, &self.client_host, true);
        put_array_len(&mut out, self.topic_names.len(), true);
        for t in &self.topic_names {
            put_string(&mut out, t, true);
        }
        put_nullable(&mut out, self.regex.as_deref());
        out.extend_from_slice(&self.rebalance_timeout_ms.to_be_bytes());
        put_nullable(&mut out, self.server_assignor.as_deref());
        match &self.classic {
            None => put_uvarint(&mut out, 0),
            Some(c) => {
                let field = c.encode();
                put_uvarint(&mut out, 1);
                put_uvarint(&mut out, CLASSIC_TAG);
                put_uvarint(&mut out, field.len() as u32);
                out.extend_from_slice(&field);
            }
        }
        out
    }

    pub fn decode(b: &[u8]) -> Result<MemberRecord, DecodeError> {
        let mut r = Reader::new(b);
        version(&mut r)?;
        let instance_id = nullable(&mut r, "instance id")?;
        let rack_id = nullable(&mut r, "rack id")?;
        let client_id = string(&mut r, "client id")?;
        let client_host = string(&mut r, "client host")?;
        let n = compact_len(&mut r, "subscribed topics", TOPIC_NAMES_MAX)?.unwrap_or(0);
        let topic_names = (0..n)
            .map(|_| string(&mut r, "topic name"))
            .collect::<Result<Vec<_>, _>>()?;
        let regex = nullable(&mut r, "regex")?;
        let rebalance_timeout_ms = r.i32("rebalance timeout")?;
        let server_assignor = nullable(&mut r, "server assignor")?;
        let mut classic = None;
        let tagged = r.uvarint("tagged fields")?;
        for _ in 0..tagged {
            let tag = r.uvarint("tag")?;
            let size = r.uvarint("tagged field size")? as usize;
            let field = r.take(size, "tagged field")?;
            if tag == CLASSIC_TAG {
                classic = Some(ClassicRecord::decode(field)?);
            }
        }
        Ok(MemberRecord {
            instance_id,
            rack_id,
            client_id,
            client_host,
            topic_names,
            regex,
            rebalance_timeout_ms,
            server_assignor,
            classic,
        })
    }
}

impl ClassicRecord {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(&self.session_timeout_ms.to_be_bytes());
        put_array_len(&mut out, self.protocols.len(), true);
        for (name, metadata) in &self.protocols {
            put_string(&mut out, name, true);
            put_uvarint(&mut out, metadata.len() as u32 + 1);
            out.extend_from_slice(metadata);
            put_uvarint(&mut out, 0);
        }
        put_uvarint(&mut out, 0);
        out
    }

    fn decode(b: &[u8]) -> Result<ClassicRecord, DecodeError> {
        let mut r = Reader::new(b);
        let session_timeout_ms = r.i32("classic session timeout")?;
        let n = compact_len(&mut r, "classic protocols", CLASSIC_PROTOCOLS_MAX)?.unwrap_or(0);
        let mut protocols = Vec::with_capacity(n);
        for _ in 0..n {
            let name = string(&mut r, "classic protocol name")?;
            let len = compact_len(&mut r, "classic protocol metadata", CLASSIC_METADATA_MAX)?
                .unwrap_or(0);
            let metadata = r.take(len, "classic protocol metadata")?.to_vec();
            r.skip_tagged_fields()?;
            protocols.push((name, metadata));
        }
        r.skip_tagged_fields()?;
        Ok(ClassicRecord {
            session_timeout_ms,
            protocols,
        })
    }
}

impl AssignmentRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(&VALUE_VERSION.to_be_bytes());
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.extend_from_slice(&self.previous_epoch.to_be_bytes());
        out.push(self.state as u8);
        put_assignment(&mut out, &self.assigned);
        put_assignment(&mut out, &self.revoking);
        put_uvarint(&mut out, 0);
        out
    }

    pub fn decode(b: &[u8]) -> Result<AssignmentRecord, DecodeError> {
        let mut r = Reader::new(b);
        version(&mut r)?;
        let epoch = r.i32("member epoch")?;
        let previous_epoch = r.i32("previous member epoch")?;
        let state = r.i8("member state")?;
        let assigned = assignment(&mut r, "assigned partitions")?;
        let revoking = assignment(&mut r, "partitions pending revocation")?;
        r.skip_tagged_fields()?;
        Ok(AssignmentRecord {
            epoch,
            previous_epoch,
            state,
            assigned,
            revoking,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_records_round_trip() {
        let m = MemberRecord {
            instance_id: Some("i".into()),
            rack_id: None,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            topic_names: vec!["a".into(), "b".into()],
            regex: None,
            rebalance_timeout_ms: 30_000,
            server_assignor: Some("range".into()),
            classic: None,
        };
        assert_eq!(MemberRecord::decode(&m.encode()).unwrap(), m);
        let classic = MemberRecord {
            classic: Some(ClassicRecord {
                session_timeout_ms: 10_000,
                protocols: vec![
                    ("range".into(), vec![0, 1, 2]),
                    ("roundrobin".into(), vec![]),
                ],
            }),
            ..m.clone()
        };
        let bytes = classic.encode();
        assert_eq!(MemberRecord::decode(&bytes).unwrap(), classic);
        // One tagged field, tag 0, then its size and the session timeout.
        let plain = m.encode();
        let tail = &bytes[plain.len() - 1..];
        assert_eq!(&tail[..2], &[1, 0]);
        assert_eq!(&tail[3..7], &10_000i32.to_be_bytes());
        for cut in 0..bytes.len() {
            assert!(MemberRecord::decode(&bytes[..cut]).is_err());
        }
        let a = AssignmentRecord {
            epoch: 4,
            previous_epoch: 3,
            state: 1,
            assigned: Assignment::from([(Uuid::from_u128(1), BTreeSet::from([0, 2]))]),
            revoking: Assignment::from([(Uuid::from_u128(2), BTreeSet::from([1]))]),
        };
        let bytes = a.encode();
        assert_eq!(AssignmentRecord::decode(&bytes).unwrap(), a);
        // version, epoch, previous epoch, state, then one topic (count 2).
        assert_eq!(&bytes[..12], &[0, 0, 0, 0, 0, 4, 0, 0, 0, 3, 1, 2]);
        for cut in 0..bytes.len() {
            assert!(AssignmentRecord::decode(&bytes[..cut]).is_err());
        }
    }
}
