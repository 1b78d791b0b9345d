//! A record batch written in place: the producer's hot path.
//!
//! The batch's bytes live in one buffer from the first record to the wire.
//! The buffer starts with room for the 61-byte header (layout in
//! `sluice_protocol::record_batch`); each record is encoded straight after
//! the previous one, its value copied once from the payload pool; closing
//! an uncompressed batch fills the header in and computes the CRC over the
//! same buffer, which then becomes the request's `Bytes` without a copy.
//!
//! What this replaced, per 1 KiB record: the value copied into a staging
//! buffer, a `Vec` allocated per record body, the body copied into the
//! records section, and the section copied again behind a freshly encoded
//! header at close: four copies of every payload byte and one allocation
//! per message (see docs/HARNESS.md, "What the load generator costs").
//!
//! ```text
//! record: length varint | attributes i8 = 0 | timestamp_delta varlong |
//!         offset_delta varint | key_length varint | key |
//!         value_length varint | value | header_count varint = 0
//! ```

use sluice_protocol::compression::{compress, CodecError};
use sluice_protocol::record_batch::{
    compute_crc, Compression, ATTRIBUTES_OFFSET, BASE_SEQUENCE_OFFSET, BASE_TIMESTAMP_OFFSET,
    BATCH_HEADER_SIZE, BATCH_LENGTH_OFFSET, CRC_OFFSET, LAST_OFFSET_DELTA_OFFSET, LOG_OVERHEAD,
    MAGIC_OFFSET, MAGIC_V2, MAX_TIMESTAMP_OFFSET, PRODUCER_EPOCH_OFFSET, PRODUCER_ID_OFFSET,
    RECORDS_COUNT_OFFSET,
};

/// Bytes a record adds beyond key and value at most: length, attributes,
/// timestamp and offset deltas, key/value lengths, header count (varints).
pub const RECORD_OVERHEAD_MAX: usize = 5 + 1 + 10 + 5 + 5 + 5 + 5;

/// A record's value as the producer hands it over: `parts` concatenated.
/// The generator passes the send-time stamp and the rest of a pooled
/// payload as two parts, so neither is staged in a buffer of its own.
pub type ValueParts<'a> = [&'a [u8]; 2];

/// Attribute bit 4: the batch belongs to a transaction.
const ATTR_TRANSACTIONAL: i16 = 0x10;

/// Idempotent producer fields of a batch header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerFields {
    pub id: i64,
    pub epoch: i16,
    pub base_sequence: i32,
    /// The batch belongs to a transaction (attribute bit 4).
    pub transactional: bool,
}

impl ProducerFields {
    /// A producer that is not idempotent.
    pub const NONE: ProducerFields = ProducerFields {
        id: -1,
        epoch: -1,
        base_sequence: -1,
        transactional: false,
    };
}

/// An open batch's bytes: header room, then the records written so far.
#[derive(Debug)]
pub struct BatchWriter {
    buf: Vec<u8>,
    count: i32,
    base_timestamp: i64,
    max_timestamp: i64,
}

impl BatchWriter {
    /// An empty batch whose records' timestamps are deltas from
    /// `base_timestamp`; `capacity` is the size it is expected to reach.
    pub fn new(base_timestamp: i64, capacity: usize) -> BatchWriter {
        let mut buf = Vec::with_capacity(capacity.max(BATCH_HEADER_SIZE));
        buf.resize(BATCH_HEADER_SIZE, 0);
        BatchWriter {
            buf,
            count: 0,
            base_timestamp,
            max_timestamp: base_timestamp,
        }
    }

    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Encoded size so far: header plus records.
    pub fn size_bytes(&self) -> usize {
        self.buf.len()
    }

    /// The uncompressed records section.
    pub fn records(&self) -> &[u8] {
        &self.buf[BATCH_HEADER_SIZE..]
    }

    /// Appends a record with no headers.
    #[inline]
    pub fn push(&mut self, timestamp: i64, key: Option<&[u8]>, value: ValueParts<'_>) {
        let ts_delta = timestamp - self.base_timestamp;
        let value_len = value[0].len() + value[1].len();
        let key_len = key.map_or(-1, |k| k.len() as i32);
        let body_len = 1
            + varlong_len(ts_delta)
            + varint_len(self.count)
            + varint_len(key_len)
            + key.map_or(0, <[u8]>::len)
            + varint_len(value_len as i32)
            + value_len
            + 1;
        self.buf.reserve(body_len + 5);
        put_varint(&mut self.buf, body_len as i32);
        let body_start = self.buf.len();
        self.buf.push(0);
        put_varlong(&mut self.buf, ts_delta);
        put_varint(&mut self.buf, self.count);
        put_varint(&mut self.buf, key_len);
        if let Some(k) = key {
            self.buf.extend_from_slice(k);
        }
        put_varint(&mut self.buf, value_len as i32);
        self.buf.extend_from_slice(value[0]);
        self.buf.extend_from_slice(value[1]);
        self.buf.push(0);
        debug_assert_eq!(self.buf.len() - body_start, body_len);
        self.max_timestamp = self.max_timestamp.max(timestamp);
        self.count += 1;
    }

    /// The finished batch: uncompressed in this very buffer, or, with a
    /// codec, the records compressed (through `scratch`) behind a header.
    pub fn finish(
        mut self,
        codec: Compression,
        producer: ProducerFields,
        scratch: &mut Vec<u8>,
    ) -> Result<Vec<u8>, CodecError> {
        assert!(self.count > 0, "a batch holds at least one record");
        if codec == Compression::None {
            self.write_header(codec, producer);
            return Ok(self.buf);
        }
        scratch.clear();
        compress(codec, self.records(), scratch)?;
        self.buf.truncate(BATCH_HEADER_SIZE);
        self.buf.extend_from_slice(scratch);
        self.write_header(codec, producer);
        Ok(self.buf)
    }

    fn write_header(&mut self, codec: Compression, producer: ProducerFields) {
        let b = &mut self.buf;
        let batch_length = (b.len() - LOG_OVERHEAD) as i32;
        b[..BATCH_LENGTH_OFFSET].copy_from_slice(&0i64.to_be_bytes());
        put_at(b, BATCH_LENGTH_OFFSET, &batch_length.to_be_bytes());
        // partition_leader_epoch: -1, the broker sets it.
        put_at(b, BATCH_LENGTH_OFFSET + 4, &(-1i32).to_be_bytes());
        b[MAGIC_OFFSET] = MAGIC_V2 as u8;
        let attributes = codec as i16
            | if producer.transactional {
                ATTR_TRANSACTIONAL
            } else {
                0
            };
        put_at(b, ATTRIBUTES_OFFSET, &attributes.to_be_bytes());
        put_at(b, LAST_OFFSET_DELTA_OFFSET, &(self.count - 1).to_be_bytes());
        put_at(b, BASE_TIMESTAMP_OFFSET, &self.base_timestamp.to_be_bytes());
        put_at(b, MAX_TIMESTAMP_OFFSET, &self.max_timestamp.to_be_bytes());
        put_at(b, PRODUCER_ID_OFFSET, &producer.id.to_be_bytes());
        put_at(b, PRODUCER_EPOCH_OFFSET, &producer.epoch.to_be_bytes());
        put_at(
            b,
            BASE_SEQUENCE_OFFSET,
            &producer.base_sequence.to_be_bytes(),
        );
        put_at(b, RECORDS_COUNT_OFFSET, &self.count.to_be_bytes());
        let crc = compute_crc(b);
        put_at(b, CRC_OFFSET, &crc.to_be_bytes());
    }
}

fn put_at(b: &mut [u8], at: usize, bytes: &[u8]) {
    b[at..at + bytes.len()].copy_from_slice(bytes);
}

#[inline]
fn uvarint_len(v: u64) -> usize {
    // 7 bits per byte; 0 still takes one byte.
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

#[inline]
fn varint_len(v: i32) -> usize {
    uvarint_len(((v << 1) ^ (v >> 31)) as u32 as u64)
}

#[inline]
fn varlong_len(v: i64) -> usize {
    uvarint_len(((v << 1) ^ (v >> 63)) as u64)
}

#[inline]
fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[inline]
fn put_varint(out: &mut Vec<u8>, v: i32) {
    put_uvarint(out, ((v << 1) ^ (v >> 31)) as u32 as u64);
}

#[inline]
fn put_varlong(out: &mut Vec<u8>, v: i64) {
    put_uvarint(out, ((v << 1) ^ (v >> 63)) as u64);
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_protocol::record_batch::{decode_records, validate_batch, BatchBuilder};

    #[test]
    fn varint_lengths_match_the_encoding() {
        for v in [
            0i64,
            1,
            -1,
            63,
            64,
            -64,
            -65,
            8191,
            8192,
            i32::MAX as i64,
            i64::MIN,
        ] {
            let mut out = Vec::new();
            put_varlong(&mut out, v);
            assert_eq!(out.len(), varlong_len(v), "{v}");
            if let Ok(v32) = i32::try_from(v) {
                out.clear();
                put_varint(&mut out, v32);
                assert_eq!(out.len(), varint_len(v32), "{v32}");
            }
        }
    }

    /// The batch is byte for byte what the protocol crate's builder makes,
    /// so the broker's validation is the judge of both.
    #[test]
    fn uncompressed_batches_equal_the_protocol_builder() {
        let mut w = BatchWriter::new(1_000, 0);
        let mut b = BatchBuilder::new(1_000);
        let long = vec![7u8; 300];
        for i in 0..200i64 {
            let key = (i % 3 == 0).then_some(&b"key"[..]);
            let value: Vec<u8> = if i % 2 == 0 {
                long.clone()
            } else {
                format!("v{i}").into_bytes()
            };
            let (a, rest) = value.split_at(value.len().min(8));
            w.push(1_000 + i * 37, key, [a, rest]);
            b.push(1_000 + i * 37, key, Some(&value), &[]);
        }
        assert_eq!(w.size_bytes(), b.size_bytes());
        let ours = w
            .finish(Compression::None, ProducerFields::NONE, &mut Vec::new())
            .unwrap();
        assert_eq!(ours, b.finish());
        let h = validate_batch(&ours, 0).unwrap();
        let recs = decode_records(&ours[BATCH_HEADER_SIZE..], 200).unwrap();
        assert_eq!(recs[1].value, Some(&b"v1"[..]));
        assert_eq!(recs[0].value, Some(&long[..]));
        assert_eq!(h.records_count, 200);
    }

    #[test]
    fn producer_fields_and_compression_land_in_the_header() {
        let mut w = BatchWriter::new(5, 64);
        for i in 0..50 {
            w.push(5 + i, None, [b"12345678", b"tail"]);
        }
        let p = ProducerFields {
            id: 42,
            epoch: 3,
            base_sequence: 9,
            transactional: true,
        };
        let wire = w.finish(Compression::Lz4, p, &mut Vec::new()).unwrap();
        let h = validate_batch(&wire, 0).unwrap();
        assert_eq!(h.compression(), Some(Compression::Lz4));
        assert!(h.is_transactional() && !h.is_control());
        assert_eq!(
            (h.producer_id, h.producer_epoch, h.base_sequence),
            (42, 3, 9)
        );
        assert_eq!((h.records_count, h.max_timestamp), (50, 54));
    }
}
