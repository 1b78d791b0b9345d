//! Per-partition record batches, closed at `batch.size` bytes or when the
//! sender drains them after `linger.ms`, as the Java client's
//! `RecordAccumulator` does: a batch that is lingering keeps filling while
//! the in-flight limit holds the sender back, so batches grow under load.
//!
//! Each message's start time (its intended send time) travels with its batch
//! so the ack can be turned into one latency per message.

use super::compression::{compress, CodecError};
use bytes::Bytes;
use sluice_protocol::record_batch::{BatchBuilder, Compression, BATCH_HEADER_SIZE};
use std::collections::VecDeque;

/// Bytes a record adds beyond key and value at most: length, attributes,
/// timestamp and offset deltas, key/value lengths, header count (varints).
pub const RECORD_OVERHEAD_MAX: usize = 5 + 1 + 10 + 5 + 5 + 5 + 5;

/// A batch still taking records.
pub struct OpenBatch {
    builder: BatchBuilder,
    pub created_ns: u64,
    pub starts: Vec<u64>,
    pub payload_bytes: u64,
}

/// A finished batch, ready to send or in flight.
#[derive(Clone, Debug)]
pub struct ClosedBatch {
    pub wire: Bytes,
    pub starts: Vec<u64>,
    pub payload_bytes: u64,
    pub created_ns: u64,
    pub attempts: u32,
    pub retry_at_ns: u64,
}

impl ClosedBatch {
    /// Memory this batch holds against `buffer.memory`.
    pub fn footprint(&self) -> usize {
        self.wire.len() + self.starts.len() * 8
    }
}

/// One partition's batches.
pub struct PartitionQueue {
    pub open: Option<OpenBatch>,
    pub ready: VecDeque<ClosedBatch>,
}

impl PartitionQueue {
    pub fn new() -> PartitionQueue {
        PartitionQueue {
            open: None,
            ready: VecDeque::new(),
        }
    }

    /// Whether a record of `record_bytes` fits in the open batch under `limit`.
    pub fn fits(&self, record_bytes: usize, limit: usize) -> bool {
        match &self.open {
            None => true,
            Some(b) => b.builder.is_empty() || b.builder.size_bytes() + record_bytes <= limit,
        }
    }

    /// Appends a record, opening a batch when none is open. Returns the open
    /// batch's size in bytes afterwards.
    pub fn append(
        &mut self,
        now_ns: u64,
        timestamp_ms: i64,
        key: Option<&[u8]>,
        value: &[u8],
        start_ns: u64,
    ) -> usize {
        let b = self.open.get_or_insert_with(|| OpenBatch {
            builder: BatchBuilder::new(timestamp_ms),
            created_ns: now_ns,
            starts: Vec::new(),
            payload_bytes: 0,
        });
        b.builder.push(timestamp_ms, key, Some(value), &[]);
        b.starts.push(start_ns);
        b.payload_bytes += value.len() as u64;
        b.builder.size_bytes()
    }

    /// Closes the open batch (if any) into the ready queue.
    pub fn close(
        &mut self,
        codec: Compression,
        scratch: &mut Vec<u8>,
    ) -> Result<usize, CodecError> {
        let Some(b) = self.open.take() else {
            return Ok(0);
        };
        let batch = finish(&b.builder, codec, scratch)?;
        let closed = ClosedBatch {
            wire: Bytes::from(batch),
            starts: b.starts,
            payload_bytes: b.payload_bytes,
            created_ns: b.created_ns,
            attempts: 0,
            retry_at_ns: 0,
        };
        let delta = closed.footprint();
        self.ready.push_back(closed);
        Ok(delta)
    }

    /// Bytes the open batch holds (for buffer accounting before it closes).
    pub fn open_bytes(&self) -> usize {
        self.open
            .as_ref()
            .map_or(0, |b| b.builder.size_bytes() + b.starts.len() * 8)
    }

    /// The batch the sender should send now, if any: the first ready batch
    /// past its retry backoff, else the open batch once it has lingered.
    pub fn drain(
        &mut self,
        now_ns: u64,
        linger_ns: u64,
        codec: Compression,
        scratch: &mut Vec<u8>,
    ) -> Result<Option<ClosedBatch>, CodecError> {
        if let Some(front) = self.ready.front() {
            if front.retry_at_ns <= now_ns {
                return Ok(self.ready.pop_front());
            }
            return Ok(None);
        }
        let lingered = self
            .open
            .as_ref()
            .is_some_and(|b| now_ns >= b.created_ns + linger_ns);
        if lingered {
            self.close(codec, scratch)?;
            return Ok(self.ready.pop_front());
        }
        Ok(None)
    }

    /// When this queue next has something to send without outside events.
    pub fn deadline_ns(&self, linger_ns: u64) -> Option<u64> {
        if let Some(front) = self.ready.front() {
            return Some(front.retry_at_ns);
        }
        self.open.as_ref().map(|b| b.created_ns + linger_ns)
    }
}

impl Default for PartitionQueue {
    fn default() -> Self {
        PartitionQueue::new()
    }
}

/// Encodes a batch, compressing its records section with `codec`.
pub fn finish(
    b: &BatchBuilder,
    codec: Compression,
    scratch: &mut Vec<u8>,
) -> Result<Vec<u8>, CodecError> {
    if codec == Compression::None {
        return Ok(b.finish());
    }
    scratch.clear();
    compress(codec, b.records(), scratch)?;
    Ok(b.finish_with(codec, scratch))
}

/// Size of a batch header, for sizing the first record of a batch.
pub const fn header_size() -> usize {
    BATCH_HEADER_SIZE
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_protocol::record_batch::{decode_records, validate_batch, BatchHeader};

    #[test]
    fn lingering_batch_drains_only_after_linger() {
        let mut q = PartitionQueue::new();
        let mut s = Vec::new();
        q.append(1_000, 1, None, b"abc", 900);
        assert!(q
            .drain(1_500, 1_000, Compression::None, &mut s)
            .unwrap()
            .is_none());
        let b = q
            .drain(2_000, 1_000, Compression::None, &mut s)
            .unwrap()
            .unwrap();
        assert_eq!(b.starts, vec![900]);
        validate_batch(&b.wire, 0).unwrap();
    }

    #[test]
    fn compressed_batches_decode() {
        let mut q = PartitionQueue::new();
        let mut s = Vec::new();
        for i in 0..100 {
            q.append(0, 5, Some(b"k"), format!("value-{i}").as_bytes(), 0);
        }
        q.close(Compression::Zstd, &mut s).unwrap();
        let b = q.ready.pop_front().unwrap();
        let h = validate_batch(&b.wire, 0).unwrap();
        assert_eq!(h.compression(), Some(Compression::Zstd));
        let section =
            super::super::compression::decompress(Compression::Zstd, &b.wire[BATCH_HEADER_SIZE..])
                .unwrap();
        let recs = decode_records(&section, 100).unwrap();
        assert_eq!(recs[99].value, Some(&b"value-99"[..]));
        assert_eq!(BatchHeader::parse(&b.wire).unwrap().records_count, 100);
    }

    #[test]
    fn retry_backoff_holds_a_ready_batch() {
        let mut q = PartitionQueue::new();
        let mut s = Vec::new();
        q.append(0, 1, None, b"x", 0);
        q.close(Compression::None, &mut s).unwrap();
        q.ready[0].retry_at_ns = 5_000;
        assert!(q
            .drain(4_000, 0, Compression::None, &mut s)
            .unwrap()
            .is_none());
        assert!(q
            .drain(5_000, 0, Compression::None, &mut s)
            .unwrap()
            .is_some());
        assert_eq!(q.deadline_ns(0), None);
    }
}
