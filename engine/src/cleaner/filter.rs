//! Filtering the records of one stored batch.
//!
//! A record is a varint length and that many bytes; its offset and
//! timestamp are deltas from the batch header's base offset and base
//! timestamp. The cleaner keeps both header fields, so a kept record's
//! bytes are copied unchanged and still mean the same offset, timestamp,
//! key, value and headers. The rebuilt header changes only
//! `batch_length`, `records_count`, `max_timestamp` (the largest kept
//! CreateTime) and the CRC-32C; `base_offset` and `last_offset_delta` stay,
//! so the batch spans the same offsets (gaps are normal in a compacted
//! log) and an idempotent producer's sequence range
//! (`base_sequence .. base_sequence + last_offset_delta`) is unchanged.
//! A compressed batch is decompressed, filtered and compressed again with
//! its codec.
//!
//! The one exception is the delete horizon (Kafka's KIP-534): a batch
//! that keeps a tombstone and carries no horizon yet gets one, written
//! into its base timestamp, and its kept records' timestamp deltas are
//! rewritten from the new base so their timestamps stay
//! (`record_batch::rebase_timestamps`). A later pass removes the
//! tombstones once the horizon has passed, whatever restarts came
//! between. A batch left with no record loses its horizon.

use sluice_protocol::compression::{self, CodecError};
use sluice_protocol::record_batch::{
    clear_delete_horizon, compute_crc, decode_records, rebase_timestamps, set_delete_horizon,
    with_delete_horizon, BatchHeader, Compression, ATTRIBUTES_OFFSET, BATCH_HEADER_SIZE,
    BATCH_LENGTH_OFFSET, CRC_OFFSET, MAX_TIMESTAMP_OFFSET, RECORDS_COUNT_OFFSET,
};
use sluice_protocol::Offset;

/// The codec bits of a batch's attributes.
const ATTR_COMPRESSION_MASK: i16 = 0x07;

/// A record as the keep decision sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordView<'a> {
    pub offset: Offset,
    pub key: Option<&'a [u8]>,
    /// A null value: a tombstone.
    pub tombstone: bool,
}

/// What filtering made of a batch.
#[derive(Debug, PartialEq, Eq)]
pub enum Filtered {
    /// Every record stays: the batch is copied as it is.
    Unchanged,
    /// Some records stay (or none, in a batch kept empty): the rebuilt batch.
    Rebuilt(Vec<u8>),
    /// No record stays and the batch need not: it goes.
    Dropped,
}

/// Why a stored batch could not be filtered.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("batch at offset {offset}: {reason}")]
    Corrupt { offset: i64, reason: String },
    #[error("batch at offset {offset}: {source}")]
    Codec {
        offset: i64,
        #[source]
        source: CodecError,
    },
}

/// The records section of `batch`, decompressed.
pub fn records_section(h: &BatchHeader, batch: &[u8]) -> Result<Vec<u8>, FilterError> {
    let section = &batch[BATCH_HEADER_SIZE..];
    match h.compression() {
        Some(Compression::None) => Ok(section.to_vec()),
        Some(codec) => {
            compression::decompress(codec, section).map_err(|source| FilterError::Codec {
                offset: h.base_offset.0,
                source,
            })
        }
        None => Err(FilterError::Corrupt {
            offset: h.base_offset.0,
            reason: "unknown compression codec".into(),
        }),
    }
}

/// Zigzag varint at the start of `b`: value and length.
fn varint(b: &[u8]) -> Option<(i64, usize)> {
    let mut raw: u64 = 0;
    for (i, byte) in b.iter().enumerate().take(5) {
        raw |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((((raw >> 1) as i64) ^ -((raw & 1) as i64), i + 1));
        }
    }
    None
}

/// Calls `f(view, record_bytes, timestamp)` for each record of a
/// decompressed section, `record_bytes` with its length prefix.
pub fn for_each_record(
    h: &BatchHeader,
    section: &[u8],
    mut f: impl FnMut(RecordView<'_>, &[u8], i64),
) -> Result<(), FilterError> {
    let corrupt = |reason: &str| FilterError::Corrupt {
        offset: h.base_offset.0,
        reason: reason.to_string(),
    };
    let mut at = 0;
    for _ in 0..h.records_count.max(0) {
        let (len, n) = varint(&section[at..]).ok_or_else(|| corrupt("bad record length"))?;
        if len < 0 || at + n + len as usize > section.len() {
            return Err(corrupt("record length runs past the batch"));
        }
        let raw = &section[at..at + n + len as usize];
        let record = decode_records(raw, 1)
            .map_err(|e| corrupt(&e.to_string()))?
            .pop()
            .ok_or_else(|| corrupt("no record"))?;
        let view = RecordView {
            offset: h.base_offset.plus(i64::from(record.offset_delta)),
            key: record.key,
            tombstone: record.value.is_none(),
        };
        f(view, raw, h.base_timestamp + record.timestamp_delta);
        at += raw.len();
    }
    if at != section.len() {
        return Err(corrupt("bytes after the last record"));
    }
    Ok(())
}

/// Keeps the records `keep` says yes to. A batch left without records is
/// kept empty when `keep_empty` (an idempotent producer's last batch). A
/// batch that keeps a tombstone and has no delete horizon gets
/// `horizon_ms` as its horizon.
pub fn filter_batch(
    h: &BatchHeader,
    batch: &[u8],
    keep_empty: bool,
    horizon_ms: i64,
    mut keep: impl FnMut(RecordView<'_>) -> bool,
) -> Result<Filtered, FilterError> {
    let section = records_section(h, batch)?;
    let mut kept = Vec::with_capacity(section.len());
    let (mut count, mut total) = (0i32, 0i32);
    let mut max_ts = i64::MIN;
    let mut kept_tombstone = false;
    for_each_record(h, &section, |view, raw, ts| {
        total += 1;
        if keep(view) {
            kept.extend_from_slice(raw);
            count += 1;
            max_ts = max_ts.max(ts);
            kept_tombstone |= view.tombstone;
        }
    })?;
    // An empty batch (kept by an earlier pass) goes once nothing needs it.
    if count == 0 && !keep_empty {
        return Ok(Filtered::Dropped);
    }
    let stamp = kept_tombstone && h.delete_horizon_ms().is_none();
    if count == total && !stamp {
        return Ok(Filtered::Unchanged);
    }
    if stamp {
        kept = rebase_timestamps(&kept, count as usize, h.base_timestamp, horizon_ms).map_err(
            |e| FilterError::Corrupt {
                offset: h.base_offset.0,
                reason: e.to_string(),
            },
        )?;
    }
    let mut payload = Vec::new();
    let codec = h.compression().expect("checked by records_section");
    let mut attributes = h.attributes;
    if count == 0 {
        // An empty batch is written uncompressed with no payload, as
        // Kafka writes one: clients do not expect an empty compressed
        // stream (librdkafka asserts on one).
        attributes &= !ATTR_COMPRESSION_MASK;
    } else {
        compression::compress(codec, &kept, &mut payload).map_err(|source| FilterError::Codec {
            offset: h.base_offset.0,
            source,
        })?;
    }
    let mut out = Vec::with_capacity(BATCH_HEADER_SIZE + payload.len());
    out.extend_from_slice(&batch[..BATCH_HEADER_SIZE]);
    out.extend_from_slice(&payload);
    out[ATTRIBUTES_OFFSET..ATTRIBUTES_OFFSET + 2].copy_from_slice(&attributes.to_be_bytes());
    let batch_length = (out.len() - BATCH_LENGTH_OFFSET - 4) as i32;
    out[BATCH_LENGTH_OFFSET..BATCH_LENGTH_OFFSET + 4].copy_from_slice(&batch_length.to_be_bytes());
    out[RECORDS_COUNT_OFFSET..RECORDS_COUNT_OFFSET + 4].copy_from_slice(&count.to_be_bytes());
    // LogAppendTime batches carry the broker's time there, not a record's.
    if count > 0 && !h.uses_log_append_time() {
        out[MAX_TIMESTAMP_OFFSET..MAX_TIMESTAMP_OFFSET + 8].copy_from_slice(&max_ts.to_be_bytes());
    }
    if stamp {
        set_delete_horizon(&mut out, horizon_ms);
    } else if count == 0 && h.delete_horizon_ms().is_some() {
        // No tombstone left for the horizon to time.
        clear_delete_horizon(&mut out);
    }
    let crc = compute_crc(&out);
    out[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(Filtered::Rebuilt(out))
}

/// A transaction marker (or any batch) rebuilt with delete horizon
/// `horizon_ms`, its records' timestamps unchanged.
pub fn stamp_horizon(
    h: &BatchHeader,
    batch: &[u8],
    horizon_ms: i64,
) -> Result<Vec<u8>, FilterError> {
    with_delete_horizon(batch, horizon_ms).map_err(|e| FilterError::Corrupt {
        offset: h.base_offset.0,
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_protocol::record_batch::{set_base_offset, validate_stored_batch, BatchBuilder};

    /// The delete horizon a pass would give a batch keeping a tombstone.
    const HORIZON: i64 = 86_401_000;

    /// Records k0=v0, k1=v1, k0=v2, k1=null at offsets 100..103, times
    /// 1000..1003, with a header, compressed with `codec`.
    fn batch(codec: Compression) -> Vec<u8> {
        let mut b = BatchBuilder::new(1_000).producer(7, 1, 40);
        let recs: [(&[u8], Option<&[u8]>); 4] = [
            (b"k0", Some(b"v0")),
            (b"k1", Some(b"v1")),
            (b"k0", Some(b"v2")),
            (b"k1", None),
        ];
        for (i, (k, v)) in recs.into_iter().enumerate() {
            b.push(1_000 + i as i64, Some(k), v, &[(b"h", Some(b"x"))]);
        }
        let mut payload = Vec::new();
        compression::compress(codec, b.records(), &mut payload).unwrap();
        let mut bytes = b.finish_with(codec, &payload);
        set_base_offset(&mut bytes, Offset(100));
        bytes
    }

    fn values(out: &[u8]) -> Vec<(i64, Option<Vec<u8>>, i64)> {
        let h = validate_stored_batch(out, 0).unwrap();
        let section = records_section(&h, out).unwrap();
        let recs = decode_records(&section, h.records_count as usize).unwrap();
        recs.iter()
            .map(|r| {
                assert_eq!(r.headers, vec![(&b"h"[..], Some(&b"x"[..]))]);
                (
                    h.base_offset.0 + i64::from(r.offset_delta),
                    r.value.map(<[u8]>::to_vec),
                    h.base_timestamp + r.timestamp_delta,
                )
            })
            .collect()
    }

    #[test]
    fn kept_records_keep_offsets_timestamps_headers_and_the_codec() {
        for codec in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let b = batch(codec);
            let h = BatchHeader::parse(&b).unwrap();
            let out = filter_batch(&h, &b, false, HORIZON, |r| r.offset.0 >= 102).unwrap();
            let Filtered::Rebuilt(out) = out else {
                panic!("{codec:?}: {out:?}")
            };
            let nh = validate_stored_batch(&out, 0).unwrap();
            assert_eq!(nh.compression(), Some(codec));
            assert_eq!(nh.base_offset, Offset(100));
            assert_eq!(nh.last_offset_delta, 3, "the batch spans the same offsets");
            assert_eq!(nh.records_count, 2);
            assert_eq!(
                (nh.producer_id, nh.producer_epoch, nh.base_sequence),
                (7, 1, 40)
            );
            assert_eq!(nh.max_timestamp, 1_003);
            assert_eq!(
                nh.delete_horizon_ms(),
                Some(HORIZON),
                "it keeps a tombstone"
            );
            assert_eq!(
                values(&out),
                vec![(102, Some(b"v2".to_vec()), 1_002), (103, None, 1_003)]
            );
        }
    }

    /// KIP-534: the first pass that keeps a tombstone writes the delete
    /// horizon into the batch (even when it keeps every record); later
    /// passes keep that horizon, however they filter; a batch keeping no
    /// tombstone gets none; an emptied batch drops it.
    #[test]
    fn a_kept_tombstone_stamps_a_delete_horizon_once() {
        let b = batch(Compression::Lz4);
        let h = BatchHeader::parse(&b).unwrap();
        let Filtered::Rebuilt(stamped) = filter_batch(&h, &b, false, HORIZON, |_| true).unwrap()
        else {
            panic!("a tombstone without a horizon is stamped")
        };
        let sh = validate_stored_batch(&stamped, 0).unwrap();
        assert_eq!(sh.delete_horizon_ms(), Some(HORIZON));
        assert_eq!(values(&stamped), values(&b), "timestamps unchanged");
        assert_eq!(sh.max_timestamp, h.max_timestamp);
        assert_eq!(
            filter_batch(&sh, &stamped, false, HORIZON + 5, |_| true).unwrap(),
            Filtered::Unchanged
        );
        let Filtered::Rebuilt(later) =
            filter_batch(&sh, &stamped, false, HORIZON + 5, |r| r.offset.0 != 100).unwrap()
        else {
            panic!("one record fewer")
        };
        let lh = validate_stored_batch(&later, 0).unwrap();
        assert_eq!(
            lh.delete_horizon_ms(),
            Some(HORIZON),
            "the first horizon stays"
        );
        assert_eq!(values(&later), values(&b)[1..].to_vec());
        let Filtered::Rebuilt(plain) =
            filter_batch(&h, &b, false, HORIZON, |r| !r.tombstone).unwrap()
        else {
            panic!("the tombstone goes")
        };
        let ph = validate_stored_batch(&plain, 0).unwrap();
        assert_eq!(ph.delete_horizon_ms(), None, "no tombstone kept");
        let Filtered::Rebuilt(empty) =
            filter_batch(&sh, &stamped, true, HORIZON, |_| false).unwrap()
        else {
            panic!("kept empty")
        };
        let eh = validate_stored_batch(&empty, 0).unwrap();
        assert_eq!(eh.delete_horizon_ms(), None);
        assert_eq!(eh.base_timestamp, eh.max_timestamp);
    }

    #[test]
    fn all_kept_is_unchanged_none_kept_is_dropped_or_empty() {
        let b = batch(Compression::Zstd);
        let h = BatchHeader::parse(&b).unwrap();
        // Stamped once (its tombstone), it is then copied as it is.
        let Filtered::Rebuilt(b) = filter_batch(&h, &b, false, HORIZON, |_| true).unwrap() else {
            panic!("the tombstone's batch is stamped")
        };
        let h = validate_stored_batch(&b, 0).unwrap();
        assert_eq!(
            filter_batch(&h, &b, false, HORIZON, |_| true).unwrap(),
            Filtered::Unchanged
        );
        assert_eq!(
            filter_batch(&h, &b, false, HORIZON, |_| false).unwrap(),
            Filtered::Dropped
        );
        let Filtered::Rebuilt(empty) = filter_batch(&h, &b, true, HORIZON, |_| false).unwrap()
        else {
            panic!("kept empty")
        };
        let nh = validate_stored_batch(&empty, 0).unwrap();
        assert_eq!((nh.records_count, nh.last_offset_delta), (0, 3));
        assert_eq!(
            nh.compression(),
            Some(Compression::None),
            "as Kafka writes one"
        );
        assert_eq!(empty.len(), BATCH_HEADER_SIZE);
        assert_eq!(nh.base_sequence, 40);
        assert!(values(&empty).is_empty());
        // Later passes keep it only while something needs it.
        assert_eq!(
            filter_batch(&nh, &empty, true, HORIZON, |_| true).unwrap(),
            Filtered::Unchanged
        );
        assert_eq!(
            filter_batch(&nh, &empty, false, HORIZON, |_| true).unwrap(),
            Filtered::Dropped
        );
    }

    #[test]
    fn the_keep_decision_sees_keys_offsets_and_tombstones() {
        let b = batch(Compression::None);
        let h = BatchHeader::parse(&b).unwrap();
        let mut seen = Vec::new();
        filter_batch(&h, &b, false, HORIZON, |r| {
            seen.push((r.offset.0, r.key.unwrap().to_vec(), r.tombstone));
            true
        })
        .unwrap();
        assert_eq!(
            seen,
            vec![
                (100, b"k0".to_vec(), false),
                (101, b"k1".to_vec(), false),
                (102, b"k0".to_vec(), false),
                (103, b"k1".to_vec(), true)
            ]
        );
    }
}
