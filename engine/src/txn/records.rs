//! Records of the `__transaction_state` topic, in Kafka's own schema
//! (`TransactionLogKey`, `TransactionLogValue`), so tools that read
//! Kafka's transaction log read Sluice's too.
//!
//! A record's key and value each start with an i16 schema version; a
//! null value is a tombstone (the transactional id was removed).
//!
//! ```text
//! TransactionLogKey   v0: version=0 | transactional_id: string
//! TransactionLogValue v0: version=0 | producer_id: i64 | producer_epoch: i16
//!                         | timeout_ms: i32 | status: i8
//!                         | partitions: nullable array (i32 count, -1 null) of
//!                             topic: string | partition_ids: i32 count, i32 each
//!                         | last_update_ms: i64 | start_ms: i64
//! TransactionLogValue v1: the same fields, flexible: compact strings and
//!                         arrays (unsigned varint length + 1), a tagged-field
//!                         section per partition entry and at the end
//!                         (previous/next producer id, client transaction
//!                         version), which are skipped.
//! ```
//!
//! Version 0 is written: a TV1 coordinator has nothing for v1's tagged
//! fields, and every Kafka reads v0. Both are read.

use super::state::{TxnMeta, TxnState};
use sluice_protocol::primitives::{put_array_len, put_string, DecodeError, Reader};
use std::collections::BTreeSet;

const KEY_VERSION: i16 = 0;
const VALUE_VERSION: i16 = 0;
const VALUE_VERSION_FLEXIBLE: i16 = 1;

/// Bounds on what one value may hold, checked before allocating.
pub const PARTITIONS_MAX: usize = 1_000_000;
pub const TOPICS_MAX: usize = 100_000;

/// Encodes the key of `transactional_id`.
pub fn encode_key(transactional_id: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + transactional_id.len());
    out.extend_from_slice(&KEY_VERSION.to_be_bytes());
    put_string(&mut out, transactional_id, false);
    out
}

/// Decodes a key: its transactional id.
pub fn decode_key(key: &[u8]) -> Result<String, DecodeError> {
    let mut r = Reader::new(key);
    let version = r.i16("key version")?;
    if version != KEY_VERSION {
        return Err(DecodeError::Invalid {
            field: "transaction log key version",
            value: i64::from(version),
        });
    }
    string(&mut r, false, "transactional id")
}

/// Encodes the stored part of `m` as a v0 value.
pub fn encode_value(m: &TxnMeta) -> Vec<u8> {
    assert!(m.state != TxnState::PrepareEpochFence, "never stored");
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&VALUE_VERSION.to_be_bytes());
    out.extend_from_slice(&m.producer_id.to_be_bytes());
    out.extend_from_slice(&m.epoch.to_be_bytes());
    out.extend_from_slice(&m.timeout_ms.to_be_bytes());
    out.push(m.state.id() as u8);
    let mut by_topic: Vec<(&str, Vec<i32>)> = Vec::new();
    for (t, p) in &m.partitions {
        match by_topic.last_mut() {
            Some((last, ps)) if *last == t.as_str() => ps.push(*p),
            _ => by_topic.push((t.as_str(), vec![*p])),
        }
    }
    put_array_len(&mut out, by_topic.len(), false);
    for (t, ps) in by_topic {
        put_string(&mut out, t, false);
        put_array_len(&mut out, ps.len(), false);
        for p in ps {
            out.extend_from_slice(&p.to_be_bytes());
        }
    }
    out.extend_from_slice(&m.last_update_ms.to_be_bytes());
    out.extend_from_slice(&m.start_ms.to_be_bytes());
    out
}

/// Decodes a value (v0 or v1) of `transactional_id`.
pub fn decode_value(transactional_id: &str, value: &[u8]) -> Result<TxnMeta, DecodeError> {
    let mut r = Reader::new(value);
    let version = r.i16("value version")?;
    let flexible = match version {
        VALUE_VERSION => false,
        VALUE_VERSION_FLEXIBLE => true,
        v => {
            return Err(DecodeError::Invalid {
                field: "transaction log value version",
                value: i64::from(v),
            })
        }
    };
    let producer_id = r.i64("producer id")?;
    let epoch = r.i16("producer epoch")?;
    let timeout_ms = r.i32("timeout")?;
    let status = r.i8("status")?;
    let state = TxnState::from_id(status).ok_or(DecodeError::Invalid {
        field: "transaction status",
        value: i64::from(status),
    })?;
    let mut partitions = BTreeSet::new();
    if let Some(topics) = array_len(&mut r, flexible, TOPICS_MAX, "topics")? {
        for _ in 0..topics {
            let topic = string(&mut r, flexible, "topic")?;
            let count = array_len(&mut r, flexible, PARTITIONS_MAX, "partitions")?.unwrap_or(0);
            for _ in 0..count {
                partitions.insert((topic.clone(), r.i32("partition")?));
            }
            if flexible {
                r.skip_tagged_fields()?;
            }
        }
    }
    let last_update_ms = r.i64("last update")?;
    let start_ms = r.i64("start")?;
    if flexible {
        r.skip_tagged_fields()?;
    }
    Ok(TxnMeta {
        transactional_id: transactional_id.to_string(),
        producer_id,
        last_producer_id: -1,
        epoch,
        last_epoch: -1,
        timeout_ms,
        state,
        partitions,
        start_ms,
        last_update_ms,
        pending: None,
    })
}

fn string(r: &mut Reader<'_>, compact: bool, field: &'static str) -> Result<String, DecodeError> {
    let len = match compact {
        true => (r.uvarint(field)? as usize).checked_sub(1),
        false => usize::try_from(r.i16(field)?).ok(),
    }
    .ok_or(DecodeError::Invalid { field, value: -1 })?;
    let bytes = r.take(len, field)?;
    String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::Invalid { field, value: 0 })
}

/// An array length, None for a null array; at most `max`.
fn array_len(
    r: &mut Reader<'_>,
    compact: bool,
    max: usize,
    field: &'static str,
) -> Result<Option<usize>, DecodeError> {
    let len: i64 = match compact {
        true => i64::from(r.uvarint(field)?) - 1,
        false => i64::from(r.i32(field)?),
    };
    if len < 0 {
        return Ok(None);
    }
    if len as usize > max || len as usize > r.remaining() {
        return Err(DecodeError::Invalid { field, value: len });
    }
    Ok(Some(len as usize))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_protocol::primitives::put_uvarint;

    fn sample() -> TxnMeta {
        let mut m = super::super::state::init_with_new_id("app-1", None, 4001, 60_000, 17);
        m.epoch = 5;
        m.state = TxnState::Ongoing;
        m.start_ms = 12;
        m.partitions.insert(("b".to_string(), 1));
        m.partitions.insert(("a".to_string(), 0));
        m.partitions.insert(("a".to_string(), 2));
        m
    }

    #[test]
    fn key_round_trips_and_is_kafkas_layout() {
        let k = encode_key("tx");
        assert_eq!(k, vec![0, 0, 0, 2, b't', b'x']);
        assert_eq!(decode_key(&k).unwrap(), "tx");
        assert!(decode_key(&[0, 1, 0, 0]).is_err(), "another key version");
    }

    #[test]
    fn value_round_trips() {
        let m = sample();
        let v = encode_value(&m);
        assert_eq!(decode_value("app-1", &v).unwrap(), m);
        // version, producer id, epoch, timeout, status, then 2 topics.
        assert_eq!(&v[..2], &[0, 0]);
        assert_eq!(v[16], 1, "Ongoing is status 1");
        assert_eq!(&v[17..21], &2i32.to_be_bytes());
    }

    #[test]
    fn flexible_v1_values_are_read() {
        let mut v = Vec::new();
        v.extend_from_slice(&1i16.to_be_bytes());
        v.extend_from_slice(&9i64.to_be_bytes());
        v.extend_from_slice(&2i16.to_be_bytes());
        v.extend_from_slice(&1000i32.to_be_bytes());
        v.push(TxnState::PrepareCommit.id() as u8);
        put_uvarint(&mut v, 2); // one topic
        put_string(&mut v, "t", true);
        put_uvarint(&mut v, 2); // one partition
        v.extend_from_slice(&3i32.to_be_bytes());
        put_uvarint(&mut v, 0);
        v.extend_from_slice(&5i64.to_be_bytes());
        v.extend_from_slice(&4i64.to_be_bytes());
        put_uvarint(&mut v, 1); // a tagged field: previous producer id
        put_uvarint(&mut v, 0);
        put_uvarint(&mut v, 8);
        v.extend_from_slice(&8i64.to_be_bytes());
        let m = decode_value("x", &v).unwrap();
        assert_eq!(
            (m.producer_id, m.epoch, m.state),
            (9, 2, TxnState::PrepareCommit)
        );
        assert!(m.partitions.contains(&("t".to_string(), 3)));
        assert_eq!((m.last_update_ms, m.start_ms), (5, 4));
    }

    #[test]
    fn bad_values_are_errors_not_panics() {
        let v = encode_value(&sample());
        for cut in 0..v.len() {
            assert!(decode_value("x", &v[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad_status = v.clone();
        bad_status[16] = 9;
        assert!(decode_value("x", &bad_status).is_err());
        let mut huge = v;
        huge[17..21].copy_from_slice(&i32::MAX.to_be_bytes());
        assert!(decode_value("x", &huge).is_err());
    }
}
