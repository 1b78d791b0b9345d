//! What Produce does to a validated record set because of its topic's
//! settings, before it goes to the partition's owner:
//!
//! - `cleanup.policy` with `compact`: every record needs a key, since
//!   compaction keeps the latest record of each key and a keyless record
//!   has none. A set holding a keyless record is refused whole with
//!   INVALID_RECORD, each such record named, as Kafka does.
//! - `compression.type` other than `producer`: each batch whose codec
//!   differs is rewritten in the topic's codec (`uncompressed` stores the
//!   records plain), keeping every header field (producer id, epoch,
//!   sequence, timestamps, transactional bit); only the attributes' codec
//!   bits, the length and the CRC change.
//!
//! Both decode record sections, so they cost CPU on the connection's
//! shard; topics without these settings never reach this code, and
//! Produce's usual path keeps batches as they came.

use sluice_protocol::compression::{compress, decompress};
use sluice_protocol::record_batch::{
    compute_crc, decode_records, BatchError, BatchHeader, Compression, ATTRIBUTES_OFFSET,
    BATCH_HEADER_SIZE, BATCH_LENGTH_OFFSET, CRC_OFFSET, LOG_OVERHEAD,
};

/// Attribute bits holding the codec.
const CODEC_BITS: i16 = 0x07;

/// The batches of a validated record set, with their positions.
fn batches(set: &[u8]) -> impl Iterator<Item = (usize, BatchHeader, &[u8])> {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        let h = BatchHeader::parse(set.get(at..)?)?;
        let end = (at + h.total_size()).min(set.len());
        let item = (at, h, &set[at..end]);
        at = end;
        Some(item)
    })
}

/// A batch's records section, decompressed.
fn plain_records(position: usize, h: &BatchHeader, batch: &[u8]) -> Result<Vec<u8>, BatchError> {
    let section = batch.get(BATCH_HEADER_SIZE..).unwrap_or_default();
    let corrupt = |reason| BatchError::Corrupt { position, reason };
    match h.compression() {
        Some(codec) => decompress(codec, section).map_err(|_| corrupt("records do not decompress")),
        None => Err(corrupt("unknown compression codec")),
    }
}

/// The records of `set` that have no key, by index in the set (which is
/// the index in its batch from Produce v3 on, one batch per partition).
pub fn keyless_records(set: &[u8]) -> Result<Vec<i32>, BatchError> {
    let mut keyless = Vec::new();
    let mut first = 0i32;
    for (position, h, batch) in batches(set) {
        let count = h.records_count.max(0);
        let plain = plain_records(position, &h, batch)?;
        let records = decode_records(&plain, count as usize).map_err(|_| BatchError::Corrupt {
            position,
            reason: "records do not decode",
        })?;
        for (i, r) in records.iter().enumerate() {
            if r.key.is_none() {
                keyless.push(first.saturating_add(i as i32));
            }
        }
        first = first.saturating_add(count);
    }
    Ok(keyless)
}

/// Kafka's message for a keyless record on a compacted topic.
pub fn keyless_message(topic: &str, partition: i32) -> String {
    format!(
        "Compacted topic cannot accept message without key in topic partition {topic}-{partition}"
    )
}

/// Kafka's partition-level message for records refused one by one: how
/// many, and the first three.
pub fn record_errors_message(errors: &[(i32, String)]) -> String {
    let shown: Vec<String> = errors
        .iter()
        .take(3)
        .map(|(i, m)| format!("RecordError(batchIndex={i}, message='{m}')"))
        .collect();
    format!(
        "One or more records have been rejected due to {} record errors in total, and only \
         showing the first three errors at most: [{}]",
        errors.len(),
        shown.join(", ")
    )
}

/// `set` with every batch not in `codec` rewritten in it; `None` when
/// every batch already is (or is a control batch, which stays as
/// written).
pub fn recompressed(set: &[u8], codec: Compression) -> Result<Option<Vec<u8>>, BatchError> {
    let differs = |h: &BatchHeader| !h.is_control() && h.compression() != Some(codec);
    if !batches(set).any(|(_, h, _)| differs(&h)) {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(set.len());
    for (position, h, batch) in batches(set) {
        if !differs(&h) {
            out.extend_from_slice(batch);
            continue;
        }
        let plain = plain_records(position, &h, batch)?;
        let start = out.len();
        out.extend_from_slice(&batch[..BATCH_HEADER_SIZE]);
        compress(codec, &plain, &mut out).map_err(|_| BatchError::Invalid {
            position,
            reason: "records could not be compressed in the topic's compression.type",
        })?;
        let length =
            i32::try_from(out.len() - start - LOG_OVERHEAD).map_err(|_| BatchError::Invalid {
                position,
                reason: "recompressed batch is too large",
            })?;
        let b = &mut out[start..];
        b[BATCH_LENGTH_OFFSET..BATCH_LENGTH_OFFSET + 4].copy_from_slice(&length.to_be_bytes());
        let attributes = (h.attributes & !CODEC_BITS) | codec as i16;
        b[ATTRIBUTES_OFFSET..ATTRIBUTES_OFFSET + 2].copy_from_slice(&attributes.to_be_bytes());
        let crc = compute_crc(b);
        b[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_protocol::record_batch::{validate_record_set, BatchBuilder};

    fn batch(keys: &[Option<&[u8]>]) -> BatchBuilder {
        let mut b = BatchBuilder::new(1_000).producer(7, 2, 40);
        for (i, k) in keys.iter().enumerate() {
            b.push(1_000 + i as i64, *k, Some(b"value value value value"), &[]);
        }
        b
    }

    #[test]
    fn names_keyless_records_across_batches_and_codecs() {
        let mut set = batch(&[Some(b"a"), None, Some(b"b")]).finish();
        let b = batch(&[None, Some(b"c")]);
        let mut zstd = Vec::new();
        compress(Compression::Zstd, b.records(), &mut zstd).unwrap();
        set.extend(b.finish_with(Compression::Zstd, &zstd));
        assert_eq!(keyless_records(&set).unwrap(), vec![1, 3]);
        let keyed = batch(&[Some(b"a")]).finish();
        assert!(keyless_records(&keyed).unwrap().is_empty());
    }

    #[test]
    fn recompression_keeps_records_and_producer_fields() {
        let b = batch(&[Some(b"a"), None, Some(b"b")]);
        let plain = b.finish();
        let zstd = recompressed(&plain, Compression::Zstd).unwrap().unwrap();
        validate_record_set(&zstd, usize::MAX).unwrap();
        let h = BatchHeader::parse(&zstd).unwrap();
        let before = BatchHeader::parse(&plain).unwrap();
        assert_eq!(h.compression(), Some(Compression::Zstd));
        assert_eq!(
            (h.producer_id, h.producer_epoch, h.base_sequence),
            (7, 2, 40)
        );
        assert_eq!(
            (h.records_count, h.max_timestamp, h.last_offset_delta),
            (
                before.records_count,
                before.max_timestamp,
                before.last_offset_delta
            )
        );
        // Already in the codec: nothing to do.
        assert!(recompressed(&zstd, Compression::Zstd).unwrap().is_none());
        // And back: `uncompressed` gives the producer's bytes again.
        let back = recompressed(&zstd, Compression::None).unwrap().unwrap();
        assert_eq!(back, plain);
        for codec in [Compression::Gzip, Compression::Snappy, Compression::Lz4] {
            let c = recompressed(&plain, codec).unwrap().unwrap();
            validate_record_set(&c, usize::MAX).unwrap();
            let back = recompressed(&c, Compression::None).unwrap().unwrap();
            assert_eq!(back, plain, "{codec:?}");
        }
    }

    #[test]
    fn kafka_shaped_messages() {
        assert_eq!(
            keyless_message("t", 3),
            "Compacted topic cannot accept message without key in topic partition t-3"
        );
        let m = record_errors_message(&[(0, "x".into())]);
        assert!(m.contains("due to 1 record errors"), "{m}");
        assert!(m.contains("RecordError(batchIndex=0, message='x')"), "{m}");
    }
}
