//! Kafka record batch, magic v2: the unit Sluice validates, stores and
//! serves. Batches go to disk exactly as they came off the wire; only
//! `base_offset` and `partition_leader_epoch`, which the CRC does not cover,
//! are rewritten in place when the partition assigns offsets.
//!
//! ```text
//! offset  size  field
//!      0     8  base_offset              i64   rewritten by the broker
//!      8     4  batch_length             i32   bytes after this field
//!     12     4  partition_leader_epoch   i32   rewritten by the broker
//!     16     1  magic                    i8    always 2
//!     17     4  crc                      u32   CRC-32C of bytes 21..end
//!     21     2  attributes               i16   bits 0-2 compression, 3 timestamp type,
//!                                              4 transactional, 5 control,
//!                                              6 delete horizon
//!     23     4  last_offset_delta        i32
//!     27     8  base_timestamp           i64   the delete horizon when bit 6 is set
//!     35     8  max_timestamp            i64
//!     43     8  producer_id              i64
//!     51     2  producer_epoch           i16
//!     53     4  base_sequence            i32
//!     57     4  records_count            i32
//!     61     -  records (compressed as a whole when bits 0-2 are set)
//! ```
//!
//! A record inside (uncompressed form):
//! ```text
//! length varint | attributes i8 | timestamp_delta varlong | offset_delta varint |
//! key_length varint | key | value_length varint | value |
//! header_count varint | (key_length varint | key | value_length varint | value)*
//! ```
//!
//! **Delete horizon** (Kafka's KIP-534). A log cleaner that keeps a batch
//! holding tombstones, or a transaction marker whose transaction has no
//! data left, sets attribute bit 6 and writes into `base_timestamp` the
//! time after which those may go (`delete.retention.ms` after that pass).
//! Record timestamps are deltas from `base_timestamp`, so the deltas are
//! rewritten (they may turn negative) and every record keeps its
//! timestamp; `max_timestamp` is unchanged. Clients ignore the bit: they
//! compute a record's timestamp as base plus delta whatever it says.

use crate::primitives::{put_varint, put_varlong, DecodeError, Reader};
use crate::types::{LeaderEpoch, Offset};
use thiserror::Error;

pub const BASE_OFFSET_OFFSET: usize = 0;
pub const BATCH_LENGTH_OFFSET: usize = BASE_OFFSET_OFFSET + 8;
pub const LEADER_EPOCH_OFFSET: usize = BATCH_LENGTH_OFFSET + 4;
pub const MAGIC_OFFSET: usize = LEADER_EPOCH_OFFSET + 4;
pub const CRC_OFFSET: usize = MAGIC_OFFSET + 1;
pub const ATTRIBUTES_OFFSET: usize = CRC_OFFSET + 4;
pub const LAST_OFFSET_DELTA_OFFSET: usize = ATTRIBUTES_OFFSET + 2;
pub const BASE_TIMESTAMP_OFFSET: usize = LAST_OFFSET_DELTA_OFFSET + 4;
pub const MAX_TIMESTAMP_OFFSET: usize = BASE_TIMESTAMP_OFFSET + 8;
pub const PRODUCER_ID_OFFSET: usize = MAX_TIMESTAMP_OFFSET + 8;
pub const PRODUCER_EPOCH_OFFSET: usize = PRODUCER_ID_OFFSET + 8;
pub const BASE_SEQUENCE_OFFSET: usize = PRODUCER_EPOCH_OFFSET + 2;
pub const RECORDS_COUNT_OFFSET: usize = BASE_SEQUENCE_OFFSET + 4;
/// Size of the fixed batch header; the records follow it.
pub const BATCH_HEADER_SIZE: usize = RECORDS_COUNT_OFFSET + 4;
/// Bytes before `batch_length` counts: base_offset and batch_length itself.
pub const LOG_OVERHEAD: usize = BATCH_LENGTH_OFFSET + 4;
/// The only record format Sluice accepts.
pub const MAGIC_V2: i8 = 2;

const _: () = assert!(BATCH_HEADER_SIZE == 61);
const _: () = assert!(LOG_OVERHEAD == 12);

const ATTR_COMPRESSION_MASK: i16 = 0x07;
const ATTR_TIMESTAMP_TYPE: i16 = 0x08;
const ATTR_TRANSACTIONAL: i16 = 0x10;
const ATTR_CONTROL: i16 = 0x20;
const ATTR_DELETE_HORIZON: i16 = 0x40;

/// Compression codec from the attribute bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None = 0,
    Gzip = 1,
    Snappy = 2,
    Lz4 = 3,
    Zstd = 4,
}

impl Compression {
    pub fn from_attributes(attributes: i16) -> Option<Compression> {
        match attributes & ATTR_COMPRESSION_MASK {
            0 => Some(Compression::None),
            1 => Some(Compression::Gzip),
            2 => Some(Compression::Snappy),
            3 => Some(Compression::Lz4),
            4 => Some(Compression::Zstd),
            _ => None,
        }
    }
}

/// Why a batch was refused. Each maps to the Kafka error its partition gets.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum BatchError {
    /// Framing or checksum is wrong: CORRUPT_MESSAGE.
    #[error("corrupt batch at byte {position}: {reason}")]
    Corrupt {
        position: usize,
        reason: &'static str,
    },
    /// Above `max.message.bytes`: MESSAGE_TOO_LARGE.
    #[error("batch of {size} bytes is above max.message.bytes {max}")]
    TooLarge { size: usize, max: usize },
    /// Well-formed but not acceptable: INVALID_RECORD.
    #[error("invalid batch at byte {position}: {reason}")]
    Invalid {
        position: usize,
        reason: &'static str,
    },
    /// Compression codec not allowed by the request version: UNSUPPORTED_COMPRESSION_TYPE.
    #[error("compression {0:?} needs a newer produce version")]
    UnsupportedCompression(Compression),
}

/// The fields of a batch header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: Offset,
    pub batch_length: i32,
    pub partition_leader_epoch: LeaderEpoch,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}

impl BatchHeader {
    /// Reads the header fields; `None` when fewer than 61 bytes are given.
    pub fn parse(b: &[u8]) -> Option<BatchHeader> {
        if b.len() < BATCH_HEADER_SIZE {
            return None;
        }
        Some(BatchHeader {
            base_offset: Offset(be_i64(b, BASE_OFFSET_OFFSET)),
            batch_length: be_i32(b, BATCH_LENGTH_OFFSET),
            partition_leader_epoch: LeaderEpoch(be_i32(b, LEADER_EPOCH_OFFSET)),
            magic: b[MAGIC_OFFSET] as i8,
            crc: be_i32(b, CRC_OFFSET) as u32,
            attributes: be_i16(b, ATTRIBUTES_OFFSET),
            last_offset_delta: be_i32(b, LAST_OFFSET_DELTA_OFFSET),
            base_timestamp: be_i64(b, BASE_TIMESTAMP_OFFSET),
            max_timestamp: be_i64(b, MAX_TIMESTAMP_OFFSET),
            producer_id: be_i64(b, PRODUCER_ID_OFFSET),
            producer_epoch: be_i16(b, PRODUCER_EPOCH_OFFSET),
            base_sequence: be_i32(b, BASE_SEQUENCE_OFFSET),
            records_count: be_i32(b, RECORDS_COUNT_OFFSET),
        })
    }

    /// Total bytes of the batch including the 12-byte log overhead.
    pub fn total_size(&self) -> usize {
        LOG_OVERHEAD + self.batch_length.max(0) as usize
    }

    pub fn last_offset(&self) -> Offset {
        self.base_offset.plus(i64::from(self.last_offset_delta))
    }

    pub fn next_offset(&self) -> Offset {
        self.last_offset().plus(1)
    }

    pub fn compression(&self) -> Option<Compression> {
        Compression::from_attributes(self.attributes)
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTR_TRANSACTIONAL != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }

    pub fn uses_log_append_time(&self) -> bool {
        self.attributes & ATTR_TIMESTAMP_TYPE != 0
    }

    /// When a log cleaner may remove the batch's tombstones or marker
    /// (Unix ms), if a cleaner set one; `base_timestamp` holds it.
    pub fn delete_horizon_ms(&self) -> Option<i64> {
        (self.attributes & ATTR_DELETE_HORIZON != 0).then_some(self.base_timestamp)
    }
}

/// CRC-32C over attributes..end, as the batch header's `crc` covers.
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[ATTRIBUTES_OFFSET..])
}

/// Checks one whole batch (exactly `batch.len()` bytes) as a produce
/// request or a recovery scan must: length, magic, CRC, counts.
pub fn validate_batch(batch: &[u8], position: usize) -> Result<BatchHeader, BatchError> {
    validate_batch_as(batch, position, false)
}

/// Checks one whole batch as it may lie in a log: as [`validate_batch`],
/// but a batch the log cleaner filtered holds fewer records than the
/// offsets it spans (`records_count <= last_offset_delta + 1`), or none
/// at all (an idempotent producer's last batch, kept empty so its
/// sequence survives).
pub fn validate_stored_batch(batch: &[u8], position: usize) -> Result<BatchHeader, BatchError> {
    validate_batch_as(batch, position, true)
}

fn validate_batch_as(
    batch: &[u8],
    position: usize,
    compacted: bool,
) -> Result<BatchHeader, BatchError> {
    let corrupt = |reason| BatchError::Corrupt { position, reason };
    let header = BatchHeader::parse(batch).ok_or(corrupt("shorter than a batch header"))?;
    if header.batch_length < (BATCH_HEADER_SIZE - LOG_OVERHEAD) as i32 {
        return Err(corrupt("batch_length below the header size"));
    }
    if header.total_size() != batch.len() {
        return Err(corrupt("batch_length does not match the bytes given"));
    }
    if header.magic != MAGIC_V2 {
        return Err(corrupt("magic is not 2"));
    }
    if compute_crc(batch) != header.crc {
        return Err(corrupt("CRC-32C mismatch"));
    }
    let invalid = |reason| BatchError::Invalid { position, reason };
    if header.compression().is_none() {
        return Err(invalid("unknown compression codec"));
    }
    if compacted {
        if header.records_count < 0 || header.last_offset_delta < 0 {
            return Err(invalid("negative record count or offset delta"));
        }
        if i64::from(header.records_count) > i64::from(header.last_offset_delta) + 1 {
            return Err(invalid("more records than offsets"));
        }
        return Ok(header);
    }
    if header.records_count <= 0 {
        return Err(invalid("batch has no records"));
    }
    if header.last_offset_delta != header.records_count - 1 {
        return Err(invalid("records_count does not match last_offset_delta"));
    }
    Ok(header)
}

/// What a validated record set holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RecordSetSummary {
    pub batches: u32,
    /// Offsets the set takes: the sum of each batch's `last_offset_delta + 1`.
    pub records: i64,
    pub max_timestamp: i64,
    /// `base_timestamp` of the first batch.
    pub first_timestamp: i64,
}

/// Validates a produce request's record set: a sequence of whole batches,
/// each at most `max_batch_bytes`. Nothing is accepted unless all is.
pub fn validate_record_set(
    set: &[u8],
    max_batch_bytes: usize,
) -> Result<RecordSetSummary, BatchError> {
    validate_batches(set, max_batch_bytes, false)
}

/// Validates record batches a leader replicated: as
/// [`validate_record_set`], but control batches (transaction markers the
/// leader wrote) are part of the log, and so are batches its log cleaner
/// filtered (see [`validate_stored_batch`]).
pub fn validate_replicated_set(
    set: &[u8],
    max_batch_bytes: usize,
) -> Result<RecordSetSummary, BatchError> {
    validate_batches(set, max_batch_bytes, true)
}

fn validate_batches(
    set: &[u8],
    max_batch_bytes: usize,
    control_allowed: bool,
) -> Result<RecordSetSummary, BatchError> {
    let mut summary = RecordSetSummary {
        max_timestamp: -1,
        first_timestamp: -1,
        ..RecordSetSummary::default()
    };
    if set.is_empty() {
        return Err(BatchError::Invalid {
            position: 0,
            reason: "record set is empty",
        });
    }
    let mut position = 0;
    while position < set.len() {
        let rest = &set[position..];
        if rest.len() < LOG_OVERHEAD {
            return Err(BatchError::Corrupt {
                position,
                reason: "trailing partial batch",
            });
        }
        let batch_length = be_i32(rest, BATCH_LENGTH_OFFSET);
        if batch_length < 0 {
            return Err(BatchError::Corrupt {
                position,
                reason: "negative batch_length",
            });
        }
        let size = LOG_OVERHEAD + batch_length as usize;
        if size > max_batch_bytes {
            return Err(BatchError::TooLarge {
                size,
                max: max_batch_bytes,
            });
        }
        if size > rest.len() {
            return Err(BatchError::Corrupt {
                position,
                reason: "batch_length runs past the record set",
            });
        }
        // A leader's log may hold batches its cleaner filtered.
        let header = validate_batch_as(&rest[..size], position, control_allowed)?;
        if header.is_control() && !control_allowed {
            return Err(BatchError::Invalid {
                position,
                reason: "clients may not produce control batches",
            });
        }
        if summary.batches == 0 {
            summary.first_timestamp = header.base_timestamp;
        }
        summary.batches += 1;
        summary.records += i64::from(header.last_offset_delta) + 1;
        summary.max_timestamp = summary.max_timestamp.max(header.max_timestamp);
        position += size;
    }
    Ok(summary)
}

/// Rewrites `base_offset` and `partition_leader_epoch` of every batch in a
/// validated record set, starting at `base`. Returns the next offset. Both
/// fields lie outside the CRC, so the batches stay valid.
pub fn assign_offsets(set: &mut [u8], base: Offset, epoch: LeaderEpoch) -> Offset {
    let mut next = base;
    let mut position = 0;
    while position + BATCH_HEADER_SIZE <= set.len() {
        let b = &mut set[position..];
        let batch_length = be_i32(b, BATCH_LENGTH_OFFSET);
        let last_delta = be_i32(b, LAST_OFFSET_DELTA_OFFSET);
        assert!(batch_length >= 0, "assign_offsets on an unvalidated set");
        set_base_offset(b, next);
        set_leader_epoch(b, epoch);
        next = next.plus(i64::from(last_delta) + 1);
        position += LOG_OVERHEAD + batch_length as usize;
    }
    assert_eq!(position, set.len(), "assign_offsets on an unvalidated set");
    next
}

/// Writes `base_offset` into a batch header (outside the CRC).
pub fn set_base_offset(header: &mut [u8], offset: Offset) {
    header[BASE_OFFSET_OFFSET..BASE_OFFSET_OFFSET + 8].copy_from_slice(&offset.0.to_be_bytes());
}

/// Writes `partition_leader_epoch` into a batch header (outside the CRC).
pub fn set_leader_epoch(header: &mut [u8], epoch: LeaderEpoch) {
    header[LEADER_EPOCH_OFFSET..LEADER_EPOCH_OFFSET + 4].copy_from_slice(&epoch.0.to_be_bytes());
}

/// Marks a batch as LogAppendTime with `time` as its max timestamp, as a
/// broker does for `message.timestamp.type=LogAppendTime` topics, and
/// recomputes the CRC over the patched `header` and the untouched `records`.
pub fn set_log_append_time(header: &mut [u8; BATCH_HEADER_SIZE], records: &[u8], time: i64) {
    let attributes = be_i16(header, ATTRIBUTES_OFFSET) | ATTR_TIMESTAMP_TYPE;
    header[ATTRIBUTES_OFFSET..ATTRIBUTES_OFFSET + 2].copy_from_slice(&attributes.to_be_bytes());
    header[MAX_TIMESTAMP_OFFSET..MAX_TIMESTAMP_OFFSET + 8].copy_from_slice(&time.to_be_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&header[ATTRIBUTES_OFFSET..]), records);
    header[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Stamps a whole batch with an idempotent producer's id, epoch and base
/// sequence and recomputes its CRC (all three lie inside it), as a producer
/// does when it must resend batches under a new producer id.
pub fn set_producer(batch: &mut [u8], id: i64, epoch: i16, base_sequence: i32) {
    batch[PRODUCER_ID_OFFSET..PRODUCER_ID_OFFSET + 8].copy_from_slice(&id.to_be_bytes());
    batch[PRODUCER_EPOCH_OFFSET..PRODUCER_EPOCH_OFFSET + 2].copy_from_slice(&epoch.to_be_bytes());
    batch[BASE_SEQUENCE_OFFSET..BASE_SEQUENCE_OFFSET + 4]
        .copy_from_slice(&base_sequence.to_be_bytes());
    let crc = compute_crc(batch);
    batch[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Rewrites each record's timestamp delta of an uncompressed records
/// section so that, from base `to` instead of `from`, every record keeps
/// its timestamp. The rest of each record is copied as it is; its length
/// prefix follows the delta's new varint size.
pub fn rebase_timestamps(
    section: &[u8],
    count: usize,
    from: i64,
    to: i64,
) -> Result<Vec<u8>, DecodeError> {
    let mut r = Reader::new(section);
    // A delta's varlong grows by at most 9 bytes (1 to 10).
    let mut out = Vec::with_capacity(section.len() + count.min(section.len()) * 9);
    for _ in 0..count {
        let body = record_body(&mut r)?;
        let mut rr = Reader::new(body);
        let attributes = rr.i8("record attributes")?;
        let delta = rr.varlong("timestamp delta")?;
        let rest = &body[rr.position()..];
        let timestamp = from.wrapping_add(delta);
        let mut head = vec![attributes as u8];
        put_varlong(&mut head, timestamp.wrapping_sub(to));
        let new_len = head.len() + rest.len();
        let new_len = i32::try_from(new_len).map_err(|_| DecodeError::Invalid {
            field: "record length",
            value: new_len as i64,
        })?;
        put_varint(&mut out, new_len);
        out.extend_from_slice(&head);
        out.extend_from_slice(rest);
    }
    if r.remaining() != 0 {
        return Err(DecodeError::Invalid {
            field: "bytes after the last record",
            value: r.remaining() as i64,
        });
    }
    Ok(out)
}

/// Sets the delete-horizon bit and writes `horizon_ms` as the base
/// timestamp of a batch header. The CRC is left to the caller, who must
/// also have rebased the records' timestamps ([`rebase_timestamps`]).
pub fn set_delete_horizon(header: &mut [u8], horizon_ms: i64) {
    let attributes = be_i16(header, ATTRIBUTES_OFFSET) | ATTR_DELETE_HORIZON;
    header[ATTRIBUTES_OFFSET..ATTRIBUTES_OFFSET + 2].copy_from_slice(&attributes.to_be_bytes());
    header[BASE_TIMESTAMP_OFFSET..BASE_TIMESTAMP_OFFSET + 8]
        .copy_from_slice(&horizon_ms.to_be_bytes());
}

/// Clears the delete-horizon bit of a batch header that holds no records
/// any more, writing `max_timestamp` as its base timestamp (as Kafka
/// writes an empty batch). The CRC is left to the caller.
pub fn clear_delete_horizon(header: &mut [u8]) {
    let attributes = be_i16(header, ATTRIBUTES_OFFSET) & !ATTR_DELETE_HORIZON;
    header[ATTRIBUTES_OFFSET..ATTRIBUTES_OFFSET + 2].copy_from_slice(&attributes.to_be_bytes());
    header.copy_within(
        MAX_TIMESTAMP_OFFSET..MAX_TIMESTAMP_OFFSET + 8,
        BASE_TIMESTAMP_OFFSET,
    );
}

/// A whole, checked batch rebuilt with delete horizon `horizon_ms`: its
/// records decompressed, rebased ([`rebase_timestamps`]) and compressed
/// again with the batch's codec, the header marked
/// ([`set_delete_horizon`]) and the CRC recomputed. Records keep their
/// timestamps, and the batch its `max_timestamp`.
pub fn with_delete_horizon(batch: &[u8], horizon_ms: i64) -> Result<Vec<u8>, BatchError> {
    let corrupt = |reason| BatchError::Corrupt {
        position: 0,
        reason,
    };
    let h = BatchHeader::parse(batch).ok_or(corrupt("shorter than a batch header"))?;
    let codec = h.compression().ok_or(BatchError::Invalid {
        position: 0,
        reason: "unknown compression codec",
    })?;
    let section = batch
        .get(BATCH_HEADER_SIZE..h.total_size())
        .ok_or(corrupt("batch_length runs past the bytes given"))?;
    let plain;
    let records = match codec {
        Compression::None => section,
        _ => {
            plain = crate::compression::decompress(codec, section)
                .map_err(|_| corrupt("records do not decompress"))?;
            &plain[..]
        }
    };
    let count = h.records_count.max(0) as usize;
    let rebased = rebase_timestamps(records, count, h.base_timestamp, horizon_ms)
        .map_err(|_| corrupt("records do not decode"))?;
    let mut out = batch[..BATCH_HEADER_SIZE].to_vec();
    match codec {
        Compression::None => out.extend_from_slice(&rebased),
        _ => crate::compression::compress(codec, &rebased, &mut out)
            .map_err(|_| corrupt("records do not compress"))?,
    }
    set_delete_horizon(&mut out, horizon_ms);
    let batch_length = (out.len() - LOG_OVERHEAD) as i32;
    out[BATCH_LENGTH_OFFSET..BATCH_LENGTH_OFFSET + 4].copy_from_slice(&batch_length.to_be_bytes());
    let crc = compute_crc(&out);
    out[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(out)
}

/// Size of a control record's key: version i16, type i16.
pub const CONTROL_KEY_SIZE: usize = 4;
/// Size of a transaction marker's value: version i16, coordinator epoch
/// i32.
pub const MARKER_VALUE_SIZE: usize = 6;

/// What a transaction marker (a control batch's record) says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Marker {
    /// COMMIT (type 1) or ABORT (type 0).
    pub commit: bool,
    pub coordinator_epoch: i32,
}

/// The marker a control batch holds; `None` when `batch` is not a
/// control batch or its record is not a COMMIT/ABORT marker (Kafka's
/// other control types, such as the leader-change record, end no
/// transaction).
pub fn parse_marker(batch: &[u8]) -> Option<Marker> {
    let h = BatchHeader::parse(batch)?;
    if !h.is_control() || h.compression() != Some(Compression::None) {
        return None;
    }
    let section = batch.get(BATCH_HEADER_SIZE..h.total_size())?;
    let records = decode_records(section, 1).ok()?;
    let record = records.first()?;
    let key = record.key?;
    let value = record.value?;
    if key.len() < CONTROL_KEY_SIZE || value.len() < MARKER_VALUE_SIZE {
        return None;
    }
    let commit = match be_i16(key, 2) {
        0 => false,
        1 => true,
        _ => return None,
    };
    Some(Marker {
        commit,
        coordinator_epoch: be_i32(value, 2),
    })
}

/// A record decoded from an uncompressed records section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub timestamp_delta: i64,
    pub offset_delta: i32,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: Vec<(&'a [u8], Option<&'a [u8]>)>,
}

/// Bound on headers per record, so a corrupt count allocates nothing large.
pub const RECORD_HEADERS_MAX: usize = 65_536;

fn read_varbytes<'a>(
    r: &mut Reader<'a>,
    field: &'static str,
) -> Result<Option<&'a [u8]>, DecodeError> {
    let len = r.varint(field)?;
    if len < 0 {
        return Ok(None);
    }
    Ok(Some(r.take(len as usize, field)?))
}

/// Calls `f(offset, key, value)` for each keyed record of a stored data
/// batch, decompressing it first; control batches, keyless records and a
/// batch that does not decode are passed over (the internal topics'
/// coordinators replay their partitions with it, where every record is
/// keyed and a damaged batch holds nothing they can use).
pub fn for_each_keyed_record(
    h: &BatchHeader,
    batch: &[u8],
    mut f: impl FnMut(i64, &[u8], Option<&[u8]>),
) {
    if h.is_control() || batch.len() < BATCH_HEADER_SIZE {
        return;
    }
    let section = &batch[BATCH_HEADER_SIZE..];
    let decompressed;
    let records = match h.compression() {
        Some(Compression::None) => section,
        Some(codec) => match crate::compression::decompress(codec, section) {
            Ok(d) => {
                decompressed = d;
                &decompressed[..]
            }
            Err(_) => return,
        },
        None => return,
    };
    let Ok(records) = decode_records(records, h.records_count.max(0) as usize) else {
        return;
    };
    for r in records {
        if let Some(key) = r.key {
            f(h.base_offset.0 + i64::from(r.offset_delta), key, r.value);
        }
    }
}

/// The next record of a records section: its length prefix read, its
/// bytes after it.
fn record_body<'a>(r: &mut Reader<'a>) -> Result<&'a [u8], DecodeError> {
    let len = r.varint("record length")?;
    if len < 0 {
        return Err(DecodeError::Invalid {
            field: "record length",
            value: i64::from(len),
        });
    }
    r.take(len as usize, "record")
}

/// Decodes `count` records from an uncompressed records section.
pub fn decode_records(section: &[u8], count: usize) -> Result<Vec<Record<'_>>, DecodeError> {
    let mut r = Reader::new(section);
    let mut out = Vec::with_capacity(count.min(section.len() / 7 + 1));
    for _ in 0..count {
        let body = record_body(&mut r)?;
        let mut rr = Reader::new(body);
        let _attributes = rr.i8("record attributes")?;
        let timestamp_delta = rr.varlong("timestamp delta")?;
        let offset_delta = rr.varint("offset delta")?;
        let key = read_varbytes(&mut rr, "key")?;
        let value = read_varbytes(&mut rr, "value")?;
        let header_count = rr.varint("header count")?;
        if header_count < 0 || header_count as usize > RECORD_HEADERS_MAX {
            return Err(DecodeError::Invalid {
                field: "header count",
                value: i64::from(header_count),
            });
        }
        let mut headers = Vec::with_capacity((header_count as usize).min(rr.remaining()));
        for _ in 0..header_count {
            let k = read_varbytes(&mut rr, "header key")?.unwrap_or_default();
            let v = read_varbytes(&mut rr, "header value")?;
            headers.push((k, v));
        }
        out.push(Record {
            timestamp_delta,
            offset_delta,
            key,
            value,
            headers,
        });
    }
    Ok(out)
}

/// Builds an uncompressed batch, or a compressed one from records the
/// caller compressed. Used by tests, benches and the harness's client.
#[derive(Debug, Default)]
pub struct BatchBuilder {
    records: Vec<u8>,
    count: i32,
    base_timestamp: i64,
    max_timestamp: i64,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    /// Attribute bits besides the compression codec (transactional,
    /// control).
    flags: i16,
}

impl BatchBuilder {
    pub fn new(base_timestamp: i64) -> BatchBuilder {
        BatchBuilder {
            base_timestamp,
            max_timestamp: base_timestamp,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            ..BatchBuilder::default()
        }
    }

    /// Sets the idempotent producer fields.
    pub fn producer(mut self, id: i64, epoch: i16, base_sequence: i32) -> BatchBuilder {
        self.producer_id = id;
        self.producer_epoch = epoch;
        self.base_sequence = base_sequence;
        self
    }

    /// Marks the batch as part of a transaction (attribute bit 4).
    pub fn transactional(mut self) -> BatchBuilder {
        self.flags |= ATTR_TRANSACTIONAL;
        self
    }

    /// Builds a transaction marker: a control batch (attribute bits 4
    /// and 5) holding one control record, key `version i16 = 0 | type i16`
    /// (0 abort, 1 commit), value `version i16 = 0 | coordinator_epoch
    /// i32`, with base sequence -1 as Kafka writes it.
    pub fn marker(
        timestamp: i64,
        producer_id: i64,
        producer_epoch: i16,
        marker: Marker,
    ) -> BatchBuilder {
        let mut b = BatchBuilder::new(timestamp).producer(producer_id, producer_epoch, -1);
        b.flags = ATTR_TRANSACTIONAL | ATTR_CONTROL;
        let kind: i16 = if marker.commit { 1 } else { 0 };
        let mut key = [0u8; CONTROL_KEY_SIZE];
        key[2..4].copy_from_slice(&kind.to_be_bytes());
        let mut value = [0u8; MARKER_VALUE_SIZE];
        value[2..6].copy_from_slice(&marker.coordinator_epoch.to_be_bytes());
        b.push(timestamp, Some(&key), Some(&value), &[]);
        b
    }

    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Encoded size so far: header plus records.
    pub fn size_bytes(&self) -> usize {
        BATCH_HEADER_SIZE + self.records.len()
    }

    /// Appends a record.
    pub fn push(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&[u8], Option<&[u8]>)],
    ) {
        let mut body =
            Vec::with_capacity(16 + key.map_or(0, <[u8]>::len) + value.map_or(0, <[u8]>::len));
        body.push(0);
        put_varlong(&mut body, timestamp - self.base_timestamp);
        put_varint(&mut body, self.count);
        put_varbytes(&mut body, key);
        put_varbytes(&mut body, value);
        put_varint(&mut body, headers.len() as i32);
        for (k, v) in headers {
            put_varbytes(&mut body, Some(k));
            put_varbytes(&mut body, *v);
        }
        put_varint(&mut self.records, body.len() as i32);
        self.records.extend_from_slice(&body);
        self.max_timestamp = self.max_timestamp.max(timestamp);
        self.count += 1;
    }

    /// The uncompressed records section, for the caller to compress.
    pub fn records(&self) -> &[u8] {
        &self.records
    }

    /// Finishes an uncompressed batch.
    pub fn finish(&self) -> Vec<u8> {
        self.finish_with(Compression::None, &self.records)
    }

    /// Finishes a batch whose records section is `payload`, compressed with
    /// `compression` by the caller.
    pub fn finish_with(&self, compression: Compression, payload: &[u8]) -> Vec<u8> {
        let mut b = Vec::with_capacity(BATCH_HEADER_SIZE + payload.len());
        let batch_length = (BATCH_HEADER_SIZE - LOG_OVERHEAD + payload.len()) as i32;
        b.extend_from_slice(&0i64.to_be_bytes());
        b.extend_from_slice(&batch_length.to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes());
        b.push(MAGIC_V2 as u8);
        b.extend_from_slice(&0u32.to_be_bytes());
        b.extend_from_slice(&((compression as i16) | self.flags).to_be_bytes());
        b.extend_from_slice(&(self.count - 1).to_be_bytes());
        b.extend_from_slice(&self.base_timestamp.to_be_bytes());
        b.extend_from_slice(&self.max_timestamp.to_be_bytes());
        b.extend_from_slice(&self.producer_id.to_be_bytes());
        b.extend_from_slice(&self.producer_epoch.to_be_bytes());
        b.extend_from_slice(&self.base_sequence.to_be_bytes());
        b.extend_from_slice(&self.count.to_be_bytes());
        b.extend_from_slice(payload);
        let crc = compute_crc(&b);
        b[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
        b
    }
}

fn put_varbytes(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => put_varint(out, -1),
        Some(b) => {
            put_varint(out, b.len() as i32);
            out.extend_from_slice(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn batch(n: usize) -> Vec<u8> {
        let mut b = BatchBuilder::new(1_000);
        for i in 0..n {
            let v = format!("value-{i}");
            b.push(
                1_000 + i as i64,
                Some(b"k"),
                Some(v.as_bytes()),
                &[(b"h", Some(b"x"))],
            );
        }
        b.finish()
    }

    #[test]
    fn built_batch_validates_and_decodes() {
        let b = batch(3);
        let h = validate_batch(&b, 0).unwrap();
        assert_eq!(h.records_count, 3);
        assert_eq!(h.max_timestamp, 1_002);
        let recs = decode_records(&b[BATCH_HEADER_SIZE..], 3).unwrap();
        assert_eq!(recs[2].value, Some(&b"value-2"[..]));
        assert_eq!(recs[1].headers, vec![(&b"h"[..], Some(&b"x"[..]))]);
    }

    #[test]
    fn flipped_payload_bit_fails_crc() {
        let mut b = batch(2);
        let last = b.len() - 1;
        b[last] ^= 1;
        assert!(matches!(
            validate_batch(&b, 0),
            Err(BatchError::Corrupt {
                reason: "CRC-32C mismatch",
                ..
            })
        ));
    }

    #[test]
    fn assign_offsets_keeps_crc_valid() {
        let mut set = batch(2);
        set.extend_from_slice(&batch(5));
        let next = assign_offsets(&mut set, Offset(40), LeaderEpoch(3));
        assert_eq!(next, Offset(47));
        let summary = validate_record_set(&set, 1 << 20).unwrap();
        assert_eq!(summary.records, 7);
        let first = BatchHeader::parse(&set).unwrap();
        let second = BatchHeader::parse(&set[first.total_size()..]).unwrap();
        assert_eq!(second.base_offset, Offset(42));
        assert_eq!(second.partition_leader_epoch, LeaderEpoch(3));
    }

    #[test]
    fn oversized_and_partial_sets_are_refused() {
        let b = batch(10);
        assert!(matches!(
            validate_record_set(&b, 20),
            Err(BatchError::TooLarge { .. })
        ));
        assert!(matches!(
            validate_record_set(&b[..b.len() - 1], 1 << 20),
            Err(BatchError::Corrupt { .. })
        ));
        assert!(matches!(
            validate_record_set(&[], 1 << 20),
            Err(BatchError::Invalid { .. })
        ));
    }

    #[test]
    fn log_append_time_keeps_the_batch_valid() {
        let b = batch(3);
        let mut header: [u8; BATCH_HEADER_SIZE] = b[..BATCH_HEADER_SIZE].try_into().unwrap();
        set_log_append_time(&mut header, &b[BATCH_HEADER_SIZE..], 99_000);
        let mut patched = header.to_vec();
        patched.extend_from_slice(&b[BATCH_HEADER_SIZE..]);
        let h = validate_batch(&patched, 0).unwrap();
        assert!(h.uses_log_append_time());
        assert_eq!(h.max_timestamp, 99_000);
    }

    #[test]
    fn a_producer_stamp_keeps_the_batch_valid() {
        let mut b = batch(3);
        set_producer(&mut b, 4_000, 2, 17);
        let h = validate_batch(&b, 0).unwrap();
        assert_eq!(
            (h.producer_id, h.producer_epoch, h.base_sequence),
            (4_000, 2, 17)
        );
        let built = BatchBuilder::new(1_000).producer(4_000, 2, 17);
        assert_eq!(
            BatchHeader::parse(&built.finish()).unwrap().producer_id,
            4_000
        );
    }

    proptest! {
        #[test]
        fn validation_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = validate_record_set(&bytes, 1 << 20);
            let _ = decode_records(&bytes, 4);
        }

        #[test]
        fn any_single_bit_flip_after_the_crc_is_caught(pos in 21usize..200, bit in 0u8..8) {
            let mut b = batch(4);
            let pos = pos % b.len();
            prop_assume!(pos >= ATTRIBUTES_OFFSET);
            b[pos] ^= 1 << bit;
            prop_assert!(validate_batch(&b, 0).is_err());
        }
    }

    /// A marker batch is a valid control batch that a client may not
    /// produce but a follower takes, and reads back as it was written.
    #[test]
    fn markers_round_trip_and_only_replication_takes_them() {
        let marker = Marker {
            commit: false,
            coordinator_epoch: 7,
        };
        let b = BatchBuilder::marker(1_000, 42, 3, marker).finish();
        let h = validate_batch(&b, 0).unwrap();
        assert!(h.is_control() && h.is_transactional());
        assert_eq!(
            (h.producer_id, h.producer_epoch, h.base_sequence),
            (42, 3, -1)
        );
        assert_eq!(parse_marker(&b), Some(marker));
        assert!(validate_record_set(&b, 1 << 20).is_err());
        assert_eq!(validate_replicated_set(&b, 1 << 20).unwrap().records, 1);
        let mut t = BatchBuilder::new(0).producer(1, 0, 0).transactional();
        t.push(0, None, Some(b"v"), &[]);
        let t = t.finish();
        let h = validate_batch(&t, 0).unwrap();
        assert!(h.is_transactional() && !h.is_control());
        assert_eq!(parse_marker(&t), None);
    }

    /// (timestamp, key, value, headers) of each record of a checked batch.
    type Decoded = Vec<(i64, Option<Vec<u8>>, Option<Vec<u8>>, usize)>;

    fn decoded(b: &[u8]) -> Decoded {
        let h = validate_batch(b, 0).unwrap();
        let section = &b[BATCH_HEADER_SIZE..];
        let plain = crate::compression::decompress(h.compression().unwrap(), section).unwrap();
        decode_records(&plain, h.records_count as usize)
            .unwrap()
            .iter()
            .map(|r| {
                (
                    h.base_timestamp + r.timestamp_delta,
                    r.key.map(<[u8]>::to_vec),
                    r.value.map(<[u8]>::to_vec),
                    r.headers.len(),
                )
            })
            .collect()
    }

    /// A batch rebuilt with a delete horizon (KIP-534) carries it in its
    /// base timestamp and attribute bit 6, keeps every record's timestamp
    /// (deltas turn negative: the horizon lies after them), key, value and
    /// headers, its codec and max timestamp, and has a valid CRC. Deltas
    /// of 1 and 2 bytes grow to 5 and the lengths follow.
    #[test]
    fn a_delete_horizon_keeps_record_timestamps_and_a_valid_crc() {
        for codec in [Compression::None, Compression::Zstd, Compression::Gzip] {
            let mut b = BatchBuilder::new(1_700_000_000_000).producer(9, 2, 5);
            b.push(1_700_000_000_000, Some(b"k0"), Some(b"v0"), &[]);
            b.push(1_700_000_000_090, Some(b"k1"), None, &[(&b"h"[..], None)]);
            b.push(1_699_999_999_000, Some(b"k2"), Some(b"v2"), &[]);
            let mut payload = Vec::new();
            crate::compression::compress(codec, b.records(), &mut payload).unwrap();
            let before = b.finish_with(codec, &payload);
            let h = validate_batch(&before, 0).unwrap();
            assert_eq!(h.delete_horizon_ms(), None);
            let horizon = 1_700_086_400_000;
            let after = with_delete_horizon(&before, horizon).unwrap();
            let nh = validate_batch(&after, 0).expect("CRC and lengths valid");
            assert_eq!(nh.delete_horizon_ms(), Some(horizon), "{codec:?}");
            assert_eq!(nh.compression(), Some(codec));
            assert_eq!(nh.max_timestamp, h.max_timestamp);
            assert_eq!(
                (nh.producer_id, nh.producer_epoch, nh.base_sequence),
                (9, 2, 5)
            );
            assert_eq!(decoded(&after), decoded(&before), "{codec:?}");
            assert_eq!(decoded(&after)[1].0, 1_700_000_000_090);
            // Flipping a byte of the rebuilt records is caught.
            let mut bad = after.clone();
            let last = bad.len() - 1;
            bad[last] ^= 1;
            assert!(validate_batch(&bad, 0).is_err());
        }
    }

    #[test]
    fn a_horizon_cleared_from_an_emptied_header_leaves_the_max_timestamp() {
        let mut b = BatchBuilder::new(1_000);
        b.push(1_500, Some(b"k"), None, &[]);
        let mut out = with_delete_horizon(&b.finish(), 9_000).unwrap();
        clear_delete_horizon(&mut out);
        let h = BatchHeader::parse(&out).unwrap();
        assert_eq!(h.delete_horizon_ms(), None);
        assert_eq!((h.base_timestamp, h.max_timestamp), (1_500, 1_500));
    }
}
