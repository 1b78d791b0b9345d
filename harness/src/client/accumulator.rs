//! Per-partition record batches, closed at `batch.size` bytes or when the
//! sender drains them after `linger.ms`, as the Java client's
//! `RecordAccumulator` does: a batch that is lingering keeps filling while
//! the in-flight limit holds the sender back, so batches grow under load.
//!
//! Each message's start time (its intended send time) travels with its batch
//! so the ack can be turned into one latency per message.
//!
//! For an idempotent producer a batch takes its partition's next sequence
//! numbers when it closes, and keeps them through retries, which go back
//! into the queue in sequence order.

use super::batch::{BatchWriter, ProducerFields, ValueParts};
use super::compression::CodecError;
use bytes::Bytes;
use sluice_protocol::record_batch::{set_producer, Compression, BATCH_HEADER_SIZE};
use std::collections::VecDeque;

pub use super::batch::RECORD_OVERHEAD_MAX;

/// The most an open batch reserves up front; larger batches grow.
const BATCH_RESERVE_MAX: usize = 1 << 20;

/// A batch still taking records.
pub struct OpenBatch {
    builder: BatchWriter,
    pub created_ns: u64,
    pub starts: Vec<u64>,
    pub payload_bytes: u64,
}

/// A finished batch, ready to send or in flight.
#[derive(Clone, Debug)]
pub struct ClosedBatch {
    pub wire: Bytes,
    /// The first record's sequence number; -1 when not idempotent.
    pub base_sequence: i32,
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

    /// The sequence number after this batch's last record.
    pub fn next_sequence(&self) -> i32 {
        add_sequence(self.base_sequence, self.starts.len() as i32)
    }
}

/// An idempotent producer's identity in one partition: who writes, and the
/// sequence numbers handed out and acknowledged there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sequencer {
    pub producer_id: i64,
    pub epoch: i16,
    /// The sequence the next closed batch starts at.
    pub next: i32,
    /// The sequence the broker expects next: every batch before it is
    /// acknowledged.
    pub acked: i32,
}

impl Sequencer {
    pub fn new(producer_id: i64, epoch: i16) -> Sequencer {
        Sequencer {
            producer_id,
            epoch,
            next: 0,
            acked: 0,
        }
    }

    /// How far `seq` lies past the acknowledged sequence.
    fn distance(&self, seq: i32) -> u32 {
        if seq >= self.acked {
            (seq - self.acked) as u32
        } else {
            (i32::MAX - self.acked) as u32 + seq as u32 + 1
        }
    }
}

/// `seq + n`, wrapping from `i32::MAX` to 0 as Kafka's sequence numbers do.
pub fn add_sequence(seq: i32, n: i32) -> i32 {
    if seq > i32::MAX - n {
        n - (i32::MAX - seq) - 1
    } else {
        seq + n
    }
}

/// One partition's batches.
pub struct PartitionQueue {
    pub open: Option<OpenBatch>,
    pub ready: VecDeque<ClosedBatch>,
    /// Set when the producer is idempotent.
    pub sequencer: Option<Sequencer>,
    /// Batches carry the transactional bit (the producer runs transactions).
    pub transactional: bool,
}

impl PartitionQueue {
    pub fn new() -> PartitionQueue {
        PartitionQueue {
            open: None,
            ready: VecDeque::new(),
            sequencer: None,
            transactional: false,
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
        self.append_parts(now_ns, timestamp_ms, key, [value, &[]], start_ns, 0)
    }

    /// [`Self::append`] for a value given in parts; a batch opened here
    /// reserves `batch_bytes` (up to 1 MiB) so it rarely grows by copying.
    #[inline]
    pub fn append_parts(
        &mut self,
        now_ns: u64,
        timestamp_ms: i64,
        key: Option<&[u8]>,
        value: ValueParts<'_>,
        start_ns: u64,
        batch_bytes: usize,
    ) -> usize {
        let b = self.open.get_or_insert_with(|| OpenBatch {
            builder: BatchWriter::new(timestamp_ms, batch_bytes.min(BATCH_RESERVE_MAX)),
            created_ns: now_ns,
            starts: Vec::new(),
            payload_bytes: 0,
        });
        b.builder.push(timestamp_ms, key, value);
        b.starts.push(start_ns);
        b.payload_bytes += (value[0].len() + value[1].len()) as u64;
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
        let mut producer = ProducerFields::NONE;
        if let Some(s) = &self.sequencer {
            producer = ProducerFields {
                id: s.producer_id,
                epoch: s.epoch,
                base_sequence: s.next,
                transactional: self.transactional,
            };
        }
        let base_sequence = producer.base_sequence;
        let batch = b.builder.finish(codec, producer, scratch)?;
        if let Some(s) = &mut self.sequencer {
            s.next = add_sequence(s.next, b.starts.len() as i32);
        }
        let closed = ClosedBatch {
            wire: Bytes::from(batch),
            base_sequence,
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

    /// Puts a batch to retry back: in sequence order for an idempotent
    /// producer, so the broker sees no gap; else first in line.
    pub fn requeue(&mut self, batch: ClosedBatch) {
        let Some(s) = &self.sequencer else {
            self.ready.push_front(batch);
            return;
        };
        let d = s.distance(batch.base_sequence);
        let at = self
            .ready
            .iter()
            .position(|b| s.distance(b.base_sequence) > d)
            .unwrap_or(self.ready.len());
        self.ready.insert(at, batch);
    }

    /// Records an acknowledged batch: the broker appends a producer's
    /// batches in sequence order, so everything before it is in too.
    pub fn acknowledged(&mut self, batch: &ClosedBatch) {
        if let Some(s) = &mut self.sequencer {
            let end = batch.next_sequence();
            if s.distance(end) <= s.distance(s.next) {
                s.acked = end;
            }
        }
    }

    /// Whether a batch refused as out of order waits on an earlier batch
    /// that is still unacknowledged, so that it can be retried after it.
    pub fn behind_a_gap(&self, batch: &ClosedBatch) -> bool {
        self.sequencer
            .as_ref()
            .is_some_and(|s| batch.base_sequence != s.acked)
    }

    /// Starts the partition over under a new producer id: sequences from 0,
    /// ready batches stamped again in order (their CRC recomputed).
    pub fn restart_sequences(&mut self, producer_id: i64, epoch: i16) {
        let mut s = Sequencer::new(producer_id, epoch);
        for b in &mut self.ready {
            let mut wire = b.wire.to_vec();
            set_producer(&mut wire, producer_id, epoch, s.next);
            b.wire = Bytes::from(wire);
            b.base_sequence = s.next;
            s.next = b.next_sequence();
        }
        self.sequencer = Some(s);
    }

    /// Bytes the open batch holds (for buffer accounting before it closes).
    pub fn open_bytes(&self) -> usize {
        self.open
            .as_ref()
            .map_or(0, |b| b.builder.size_bytes() + b.starts.len() * 8)
    }

    /// The batch the sender should send now, if any: the first ready batch
    /// past its retry backoff, else the open batch. The sender drains a
    /// broker once any of its partitions is due (`deadline_ns`), so a batch
    /// that has not lingered yet goes with the others, as in the Java client.
    pub fn drain(
        &mut self,
        now_ns: u64,
        codec: Compression,
        scratch: &mut Vec<u8>,
    ) -> Result<Option<ClosedBatch>, CodecError> {
        if let Some(front) = self.ready.front() {
            if front.retry_at_ns <= now_ns {
                return Ok(self.ready.pop_front());
            }
            return Ok(None);
        }
        if self.open.is_none() {
            return Ok(None);
        }
        self.close(codec, scratch)?;
        Ok(self.ready.pop_front())
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

/// Size of a batch header, for sizing the first record of a batch.
pub const fn header_size() -> usize {
    BATCH_HEADER_SIZE
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_protocol::record_batch::{decode_records, validate_batch, BatchHeader};

    #[test]
    fn lingering_batch_is_due_after_linger() {
        let mut q = PartitionQueue::new();
        let mut s = Vec::new();
        assert_eq!(q.deadline_ns(1_000), None);
        q.append(1_000, 1, None, b"abc", 900);
        assert_eq!(q.deadline_ns(1_000), Some(2_000));
        let b = q.drain(2_000, Compression::None, &mut s).unwrap().unwrap();
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

    fn closed(q: &mut PartitionQueue, records: usize) -> ClosedBatch {
        for _ in 0..records {
            q.append(0, 1, None, b"v", 0);
        }
        q.close(Compression::None, &mut Vec::new()).unwrap();
        q.ready.pop_back().unwrap()
    }

    #[test]
    fn idempotent_batches_take_sequences_and_retry_in_order() {
        let mut q = PartitionQueue::new();
        q.sequencer = Some(Sequencer::new(42, 3));
        let (a, b, c) = (closed(&mut q, 2), closed(&mut q, 3), closed(&mut q, 1));
        assert_eq!(
            (a.base_sequence, b.base_sequence, c.base_sequence),
            (0, 2, 5)
        );
        let h = validate_batch(&b.wire, 0).unwrap();
        assert_eq!(
            (h.producer_id, h.producer_epoch, h.base_sequence),
            (42, 3, 2)
        );
        // c waits to be sent; a and b come back from a failed connection in
        // any order and go before it, a first.
        q.ready.push_back(c);
        q.requeue(b.clone());
        q.requeue(a.clone());
        let order: Vec<i32> = q.ready.iter().map(|x| x.base_sequence).collect();
        assert_eq!(order, vec![0, 2, 5]);
        // b refused as out of order while a is unacknowledged: retry it.
        assert!(q.behind_a_gap(&b));
        assert!(!q.behind_a_gap(&a));
        q.acknowledged(&a);
        assert!(!q.behind_a_gap(&b));
        // A stale answer does not move the acknowledged sequence back.
        q.acknowledged(&b);
        q.acknowledged(&a);
        assert_eq!(q.sequencer.unwrap().acked, 5);
    }

    #[test]
    fn a_new_producer_id_numbers_waiting_batches_from_zero() {
        let mut q = PartitionQueue::new();
        q.sequencer = Some(Sequencer::new(42, 0));
        let _lost = closed(&mut q, 4);
        for n in [2, 3] {
            let b = closed(&mut q, n);
            q.ready.push_back(b);
        }
        q.restart_sequences(77, 0);
        let stamps: Vec<(i64, i32)> = q
            .ready
            .iter()
            .map(|b| {
                let h = validate_batch(&b.wire, 0).unwrap();
                assert_eq!(h.base_sequence, b.base_sequence);
                (h.producer_id, h.base_sequence)
            })
            .collect();
        assert_eq!(stamps, vec![(77, 0), (77, 2)]);
        assert_eq!(closed(&mut q, 1).base_sequence, 5);
    }

    #[test]
    fn sequences_wrap_to_zero() {
        assert_eq!(add_sequence(i32::MAX, 1), 0);
        assert_eq!(add_sequence(i32::MAX - 1, 3), 1);
        assert_eq!(add_sequence(7, 3), 10);
        let mut s = Sequencer::new(1, 0);
        s.acked = i32::MAX - 1;
        assert!(s.distance(1) > s.distance(i32::MAX));
    }

    #[test]
    fn retry_backoff_holds_a_ready_batch() {
        let mut q = PartitionQueue::new();
        let mut s = Vec::new();
        q.append(0, 1, None, b"x", 0);
        q.close(Compression::None, &mut s).unwrap();
        q.ready[0].retry_at_ns = 5_000;
        assert!(q.drain(4_000, Compression::None, &mut s).unwrap().is_none());
        assert!(q.drain(5_000, Compression::None, &mut s).unwrap().is_some());
        assert_eq!(q.deadline_ns(0), None);
    }
}
