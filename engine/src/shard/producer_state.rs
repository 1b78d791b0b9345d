//! Producer state of one partition: for each producer id, its epoch and
//! the sequence ranges of its last few batches, so a retried batch is
//! answered with its original offset instead of being appended twice, and
//! a gap in sequence numbers is refused; and, for a transactional
//! producer, where its ongoing transaction started and the coordinator
//! epoch of the last marker that ended one.
//!
//! The state lives in memory. It is rebuilt at start (`Partition::new`)
//! and after a follower cuts a divergent tail, from the newest producer
//! snapshot at or below the point replay starts (see `snapshot_file.rs`)
//! and the batches after it. A producer not seen there has its first
//! batch accepted whatever its sequence, as Kafka does for a producer
//! whose state has expired.
//!
//! Ongoing transactions are kept in offset order as well (`ongoing`), so
//! the last stable offset, the first offset of the earliest one, is one
//! lookup.

use sluice_protocol::record_batch::{BatchHeader, Marker};
use sluice_protocol::{ErrorCode, Offset};
use std::collections::{BTreeMap, HashMap, VecDeque};

/// Batches remembered per producer: Kafka's limit on in-flight requests
/// for an idempotent producer.
pub const BATCHES_REMEMBERED: usize = 5;

/// Bound on producers tracked per partition; the least recently written
/// one without an ongoing transaction is forgotten first.
pub const PRODUCERS_MAX: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Written {
    pub(crate) first_seq: i32,
    pub(crate) last_seq: i32,
    pub(crate) base_offset: Offset,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Producer {
    pub(crate) epoch: i16,
    pub(crate) batches: VecDeque<Written>,
    pub(crate) last_write: u64,
    /// Coordinator epoch of the last marker written for it (-1: none).
    pub(crate) coordinator_epoch: i32,
    /// First offset of its ongoing transaction.
    pub(crate) txn_first: Option<Offset>,
    /// Largest timestamp of its last batch.
    pub(crate) last_timestamp: i64,
}

/// What to do with a batch.
#[derive(Debug, PartialEq, Eq)]
pub enum Check {
    /// Not from an idempotent producer, or next in sequence: append it.
    Append,
    /// Already appended at this offset: answer success, append nothing.
    Duplicate(Offset),
    /// Refuse with this error.
    Reject(ErrorCode),
}

/// A transaction a marker ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompletedTxn {
    pub producer_id: i64,
    /// Its first batch's offset (the marker's own when it had none here).
    pub first_offset: Offset,
    /// The marker's offset.
    pub last_offset: Offset,
    pub aborted: bool,
}

/// One producer as DescribeProducers shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerView {
    pub producer_id: i64,
    pub epoch: i16,
    /// Last sequence number written (-1: none, after a marker only).
    pub last_sequence: i32,
    pub last_timestamp: i64,
    pub coordinator_epoch: i32,
    /// First offset of its ongoing transaction (-1: none).
    pub txn_start_offset: i64,
}

/// Producer states of one partition.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ProducerStates {
    pub(crate) producers: HashMap<i64, Producer>,
    clock: u64,
    /// First offset of every ongoing transaction, to its producer.
    ongoing: BTreeMap<Offset, i64>,
}

fn next_seq(seq: i32) -> i32 {
    if seq == i32::MAX {
        0
    } else {
        seq + 1
    }
}

impl ProducerStates {
    /// Forgets every producer (the log was cut below what they wrote).
    pub fn clear(&mut self) {
        self.producers.clear();
        self.ongoing.clear();
    }

    /// Builds the state from producers read back from a snapshot.
    pub(crate) fn from_producers(producers: HashMap<i64, Producer>) -> ProducerStates {
        let ongoing = producers
            .iter()
            .filter_map(|(id, p)| p.txn_first.map(|f| (f, *id)))
            .collect();
        ProducerStates {
            producers,
            clock: 0,
            ongoing,
        }
    }

    /// Checks the first batch of a record set.
    pub fn check(&self, h: &BatchHeader) -> Check {
        if h.producer_id < 0 || h.base_sequence < 0 {
            return Check::Append;
        }
        let Some(p) = self.producers.get(&h.producer_id) else {
            return Check::Append;
        };
        if h.producer_epoch < p.epoch {
            return Check::Reject(ErrorCode::InvalidProducerEpoch);
        }
        // A producer inside a transaction writes only transactional
        // batches until its marker (Kafka's "expected transactional
        // write").
        if p.txn_first.is_some() && !h.is_transactional() && h.producer_epoch == p.epoch {
            return Check::Reject(ErrorCode::InvalidTxnState);
        }
        if h.producer_epoch > p.epoch {
            // A new epoch starts its sequence again at 0, as in Kafka: a
            // batch of a newer epoch from the middle of a sequence lost
            // the ones before it.
            if h.base_sequence != 0 {
                return Check::Reject(ErrorCode::OutOfOrderSequenceNumber);
            }
            return Check::Append;
        }
        if let Some(w) = p.batches.iter().find(|w| w.first_seq == h.base_sequence) {
            return Check::Duplicate(w.base_offset);
        }
        match p.batches.back() {
            Some(last) if h.base_sequence != next_seq(last.last_seq) => {
                Check::Reject(ErrorCode::OutOfOrderSequenceNumber)
            }
            _ => Check::Append,
        }
    }

    /// Checks a marker before it is written, as Kafka's
    /// `appendEndTxnMarker`: its producer epoch may not be older than the
    /// producer's (INVALID_PRODUCER_EPOCH), nor its coordinator epoch
    /// older than the last marker's (TRANSACTION_COORDINATOR_FENCED: a
    /// coordinator that lost its partition is still sending).
    pub fn check_marker(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        coordinator_epoch: i32,
    ) -> Result<(), ErrorCode> {
        let Some(p) = self.producers.get(&producer_id) else {
            return Ok(());
        };
        if producer_epoch < p.epoch {
            return Err(ErrorCode::InvalidProducerEpoch);
        }
        if coordinator_epoch < p.coordinator_epoch {
            return Err(ErrorCode::TransactionCoordinatorFenced);
        }
        Ok(())
    }

    /// Whether `producer_id` has a transaction open.
    pub fn in_transaction(&self, producer_id: i64) -> bool {
        self.producers
            .get(&producer_id)
            .is_some_and(|p| p.txn_first.is_some())
    }

    /// First offset of the earliest ongoing transaction.
    pub fn first_unstable_offset(&self) -> Option<Offset> {
        self.ongoing.keys().next().copied()
    }

    /// Records a written batch at `base_offset`; `marker` is what a
    /// control batch says. Returns the transaction a marker ended.
    pub fn record(
        &mut self,
        h: &BatchHeader,
        base_offset: Offset,
        marker: Option<Marker>,
    ) -> Option<CompletedTxn> {
        if h.producer_id < 0 {
            return None;
        }
        let marker = marker.filter(|_| h.is_control());
        // A batch without a sequence counts only if it is transactional:
        // a transaction's offsets written by a group coordinator
        // (TxnOffsetCommit) carry the producer but no sequence, as in
        // Kafka.
        let untracked = h.base_sequence < 0 && !h.is_transactional();
        if marker.is_none() && (untracked || h.is_control()) {
            return None;
        }
        self.clock += 1;
        self.make_room_for(h.producer_id);
        let p = self.producers.entry(h.producer_id).or_insert(Producer {
            epoch: h.producer_epoch,
            batches: VecDeque::new(),
            last_write: 0,
            coordinator_epoch: -1,
            txn_first: None,
            last_timestamp: -1,
        });
        if h.producer_epoch > p.epoch {
            p.epoch = h.producer_epoch;
            p.batches.clear();
        }
        p.last_write = self.clock;
        p.last_timestamp = h.max_timestamp;
        let Some(marker) = marker else {
            if h.base_sequence >= 0 {
                let last_seq = h.base_sequence.wrapping_add(h.last_offset_delta) & i32::MAX;
                p.batches.push_back(Written {
                    first_seq: h.base_sequence,
                    last_seq,
                    base_offset,
                });
            }
            while p.batches.len() > BATCHES_REMEMBERED {
                p.batches.pop_front();
            }
            if h.is_transactional() && p.txn_first.is_none() {
                p.txn_first = Some(base_offset);
                self.ongoing.insert(base_offset, h.producer_id);
            }
            return None;
        };
        p.coordinator_epoch = marker.coordinator_epoch;
        let first = p.txn_first.take();
        if let Some(f) = first {
            self.ongoing.remove(&f);
        }
        Some(CompletedTxn {
            producer_id: h.producer_id,
            first_offset: first.unwrap_or(base_offset),
            last_offset: base_offset,
            aborted: !marker.commit,
        })
    }

    /// Forgets the least recently written producer without an ongoing
    /// transaction when a new one would pass [`PRODUCERS_MAX`].
    fn make_room_for(&mut self, producer_id: i64) {
        if self.producers.len() < PRODUCERS_MAX || self.producers.contains_key(&producer_id) {
            return;
        }
        if let Some(oldest) = self
            .producers
            .iter()
            .filter(|(_, p)| p.txn_first.is_none())
            .min_by_key(|(_, p)| p.last_write)
            .map(|(id, _)| *id)
        {
            self.producers.remove(&oldest);
        }
    }

    /// Every producer, by id (DescribeProducers).
    pub fn describe(&self) -> Vec<ProducerView> {
        let mut out: Vec<ProducerView> = self
            .producers
            .iter()
            .map(|(id, p)| ProducerView {
                producer_id: *id,
                epoch: p.epoch,
                last_sequence: p.batches.back().map_or(-1, |w| w.last_seq),
                last_timestamp: p.last_timestamp,
                coordinator_epoch: p.coordinator_epoch,
                txn_start_offset: p.txn_first.map_or(-1, |o| o.0),
            })
            .collect();
        out.sort_by_key(|v| v.producer_id);
        out
    }
}

/// Producer snapshot layout (`<offset>.snapshot`, big-endian):
///
/// ```text
///   0  2  version            i16 = 1
///   2  4  crc                u32  CRC-32C of every byte after it
///   6  4  producer_count     i32
///  10     producers:
///           producer_id i64 | epoch i16 | coordinator_epoch i32 |
///           txn_first_offset i64 (-1: none) | last_timestamp i64 |
///           batch_count i8 (<= 5) |
///           batches: first_seq i32 | last_seq i32 | base_offset i64
/// ```
///
/// Unlike Kafka's, which keeps one batch per producer, the last five
/// batches are kept, so a producer retrying any of its in-flight batches
/// across a restart is still answered with the original offsets.
const SNAPSHOT_VERSION: i16 = 1;
const SNAPSHOT_HEADER_SIZE: usize = 10;
const PRODUCER_FIXED_SIZE: usize = 8 + 2 + 4 + 8 + 8 + 1;
const WRITTEN_SIZE: usize = 4 + 4 + 8;

impl ProducerStates {
    /// The state as a snapshot file's bytes.
    pub fn encode_snapshot(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(
            SNAPSHOT_HEADER_SIZE
                + self.producers.len() * (PRODUCER_FIXED_SIZE + BATCHES_REMEMBERED * WRITTEN_SIZE),
        );
        b.extend_from_slice(&SNAPSHOT_VERSION.to_be_bytes());
        b.extend_from_slice(&0u32.to_be_bytes());
        b.extend_from_slice(&(self.producers.len() as i32).to_be_bytes());
        let mut ids: Vec<&i64> = self.producers.keys().collect();
        ids.sort();
        for id in ids {
            let p = &self.producers[id];
            b.extend_from_slice(&id.to_be_bytes());
            b.extend_from_slice(&p.epoch.to_be_bytes());
            b.extend_from_slice(&p.coordinator_epoch.to_be_bytes());
            b.extend_from_slice(&p.txn_first.map_or(-1, |o| o.0).to_be_bytes());
            b.extend_from_slice(&p.last_timestamp.to_be_bytes());
            assert!(p.batches.len() <= BATCHES_REMEMBERED);
            b.push(p.batches.len() as u8);
            for w in &p.batches {
                b.extend_from_slice(&w.first_seq.to_be_bytes());
                b.extend_from_slice(&w.last_seq.to_be_bytes());
                b.extend_from_slice(&w.base_offset.0.to_be_bytes());
            }
        }
        let crc = crc32c::crc32c(&b[6..]);
        b[2..6].copy_from_slice(&crc.to_be_bytes());
        b
    }

    /// Reads a snapshot back; `None` when it is not one this broker wrote
    /// whole (wrong version, checksum, or counts past their bounds).
    pub fn decode_snapshot(b: &[u8]) -> Option<ProducerStates> {
        let mut r = SnapshotReader { b, at: 0 };
        if r.i16()? != SNAPSHOT_VERSION {
            return None;
        }
        let crc = r.i32()? as u32;
        if crc32c::crc32c(b.get(6..)?) != crc {
            return None;
        }
        let count = usize::try_from(r.i32()?).ok()?;
        if count > PRODUCERS_MAX || count > b.len() / PRODUCER_FIXED_SIZE {
            return None;
        }
        let mut producers = HashMap::with_capacity(count);
        for _ in 0..count {
            let id = r.i64()?;
            let epoch = r.i16()?;
            let coordinator_epoch = r.i32()?;
            let txn_first = Some(r.i64()?).filter(|o| *o >= 0).map(Offset);
            let last_timestamp = r.i64()?;
            let n = usize::from(*b.get(r.at)?);
            r.at += 1;
            if n > BATCHES_REMEMBERED {
                return None;
            }
            let mut batches = VecDeque::with_capacity(n);
            for _ in 0..n {
                batches.push_back(Written {
                    first_seq: r.i32()?,
                    last_seq: r.i32()?,
                    base_offset: Offset(r.i64()?),
                });
            }
            let p = Producer {
                epoch,
                batches,
                last_write: 0,
                coordinator_epoch,
                txn_first,
                last_timestamp,
            };
            producers.insert(id, p);
        }
        (r.at == b.len()).then(|| ProducerStates::from_producers(producers))
    }
}

struct SnapshotReader<'a> {
    b: &'a [u8],
    at: usize,
}

impl SnapshotReader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let v = self.b.get(self.at..self.at + N)?.try_into().ok()?;
        self.at += N;
        Some(v)
    }
    fn i16(&mut self) -> Option<i16> {
        self.take().map(i16::from_be_bytes)
    }
    fn i32(&mut self) -> Option<i32> {
        self.take().map(i32::from_be_bytes)
    }
    fn i64(&mut self) -> Option<i64> {
        self.take().map(i64::from_be_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_protocol::record_batch::BatchBuilder;

    fn header(pid: i64, epoch: i16, seq: i32, n: usize) -> BatchHeader {
        let mut b = BatchBuilder::new(0).producer(pid, epoch, seq);
        for _ in 0..n {
            b.push(0, None, Some(b"v"), &[]);
        }
        BatchHeader::parse(&b.finish()).unwrap()
    }

    #[test]
    fn retries_are_deduplicated_and_gaps_refused() {
        let mut s = ProducerStates::default();
        let a = header(7, 0, 0, 3);
        assert_eq!(s.check(&a), Check::Append);
        s.record(&a, Offset(10), None);
        assert_eq!(s.check(&a), Check::Duplicate(Offset(10)));
        let b = header(7, 0, 3, 2);
        assert_eq!(s.check(&b), Check::Append);
        s.record(&b, Offset(13), None);
        assert_eq!(
            s.check(&header(7, 0, 9, 1)),
            Check::Reject(ErrorCode::OutOfOrderSequenceNumber)
        );
        assert_eq!(s.check(&header(7, 1, 0, 1)), Check::Append);
        s.record(&header(7, 1, 0, 1), Offset(20), None);
        assert_eq!(
            s.check(&header(7, 0, 5, 1)),
            Check::Reject(ErrorCode::InvalidProducerEpoch)
        );
        assert_eq!(s.check(&header(-1, -1, -1, 1)), Check::Append);
    }

    /// A batch of a newer epoch that did not start at sequence 0 was
    /// appended: the batches before it in that epoch were lost without
    /// the producer being told (Kafka refuses it).
    #[test]
    fn a_new_epoch_starts_at_sequence_zero() {
        let mut s = ProducerStates::default();
        let a = header(7, 0, 0, 3);
        s.record(&a, Offset(0), None);
        assert_eq!(
            s.check(&header(7, 1, 4, 1)),
            Check::Reject(ErrorCode::OutOfOrderSequenceNumber)
        );
        assert_eq!(s.check(&header(7, 1, 0, 1)), Check::Append);
        // A producer with no state yet may start anywhere, as in Kafka.
        assert_eq!(s.check(&header(8, 3, 9, 1)), Check::Append);
    }

    fn txn_header(pid: i64, epoch: i16, seq: i32) -> BatchHeader {
        let mut b = BatchBuilder::new(0)
            .producer(pid, epoch, seq)
            .transactional();
        b.push(0, None, Some(b"v"), &[]);
        BatchHeader::parse(&b.finish()).unwrap()
    }

    fn marker(pid: i64, epoch: i16, commit: bool, coordinator_epoch: i32) -> (BatchHeader, Marker) {
        let m = Marker {
            commit,
            coordinator_epoch,
        };
        let b = BatchBuilder::marker(0, pid, epoch, m).finish();
        (BatchHeader::parse(&b).unwrap(), m)
    }

    /// The first transactional batch opens a transaction at its offset;
    /// the marker closes it and names the range it covered; the earliest
    /// open one is the first unstable offset.
    #[test]
    fn transactions_open_at_their_first_batch_and_close_at_the_marker() {
        let mut s = ProducerStates::default();
        assert_eq!(s.record(&txn_header(1, 0, 0), Offset(10), None), None);
        assert_eq!(s.record(&txn_header(2, 0, 0), Offset(11), None), None);
        assert_eq!(s.record(&txn_header(1, 0, 1), Offset(12), None), None);
        assert_eq!(s.first_unstable_offset(), Some(Offset(10)));
        assert!(s.in_transaction(1));
        // Inside its transaction a producer may not write outside it.
        assert_eq!(
            s.check(&header(1, 0, 2, 1)),
            Check::Reject(ErrorCode::InvalidTxnState)
        );
        let (h, m) = marker(1, 0, false, 5);
        let done = s.record(&h, Offset(13), Some(m)).unwrap();
        assert_eq!(
            done,
            CompletedTxn {
                producer_id: 1,
                first_offset: Offset(10),
                last_offset: Offset(13),
                aborted: true
            }
        );
        assert_eq!(s.first_unstable_offset(), Some(Offset(11)));
        let (h, m) = marker(2, 0, true, 5);
        assert!(!s.record(&h, Offset(14), Some(m)).unwrap().aborted);
        assert_eq!(s.first_unstable_offset(), None);
        let view = s.describe();
        assert_eq!(view.len(), 2);
        assert_eq!(
            (view[0].coordinator_epoch, view[0].txn_start_offset),
            (5, -1)
        );
        assert_eq!(view[0].last_sequence, 1);
    }

    /// Kafka's marker checks: an older producer epoch is
    /// INVALID_PRODUCER_EPOCH, an older coordinator epoch is
    /// TRANSACTION_COORDINATOR_FENCED; a newer epoch is taken.
    #[test]
    fn stale_markers_are_refused() {
        let mut s = ProducerStates::default();
        s.record(&txn_header(1, 3, 0), Offset(0), None);
        let (h, m) = marker(1, 3, true, 7);
        s.record(&h, Offset(1), Some(m));
        assert_eq!(
            s.check_marker(1, 2, 7),
            Err(ErrorCode::InvalidProducerEpoch)
        );
        assert_eq!(
            s.check_marker(1, 3, 6),
            Err(ErrorCode::TransactionCoordinatorFenced)
        );
        assert_eq!(s.check_marker(1, 4, 7), Ok(()));
        assert_eq!(s.check_marker(99, 0, 0), Ok(()));
    }

    #[test]
    fn snapshots_round_trip_and_damage_is_refused() {
        let mut s = ProducerStates::default();
        s.record(&header(7, 0, 0, 3), Offset(0), None);
        s.record(&txn_header(8, 2, 0), Offset(3), None);
        let (h, m) = marker(9, 1, false, 4);
        s.record(&h, Offset(4), Some(m));
        let bytes = s.encode_snapshot();
        let back = ProducerStates::decode_snapshot(&bytes).unwrap();
        assert_eq!(back.describe(), s.describe());
        assert_eq!(back.first_unstable_offset(), Some(Offset(3)));
        assert_eq!(back.check(&header(7, 0, 0, 3)), Check::Duplicate(Offset(0)));
        for i in [0, 3, 12, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[i] ^= 1;
            assert!(ProducerStates::decode_snapshot(&bad).is_none(), "byte {i}");
        }
        assert!(ProducerStates::decode_snapshot(&bytes[..bytes.len() - 1]).is_none());
    }

    /// Transactional offsets a group coordinator writes carry the
    /// producer but no sequence: they still open the transaction, and
    /// leave the sequence state alone.
    #[test]
    fn a_transactional_batch_without_a_sequence_opens_its_transaction() {
        let mut s = ProducerStates::default();
        s.record(&txn_header(1, 0, 0), Offset(0), None);
        let (h, m) = marker(1, 0, true, 0);
        s.record(&h, Offset(1), Some(m));
        let mut b = BatchBuilder::new(0).producer(1, 0, -1).transactional();
        b.push(0, None, Some(b"offsets"), &[]);
        let offsets = BatchHeader::parse(&b.finish()).unwrap();
        s.record(&offsets, Offset(2), None);
        assert_eq!(s.first_unstable_offset(), Some(Offset(2)));
        assert_eq!(s.describe()[0].last_sequence, 0);
        let mut b = BatchBuilder::new(0).producer(2, 0, -1);
        b.push(0, None, Some(b"plain"), &[]);
        let plain = BatchHeader::parse(&b.finish()).unwrap();
        s.record(&plain, Offset(3), None);
        assert_eq!(
            s.describe().len(),
            1,
            "an untransactional batch without a sequence is not tracked"
        );
    }
}
