//! Idempotent producer state of one partition: for each producer id, its
//! epoch and the sequence ranges of its last few batches, so a retried
//! batch is answered with its original offset instead of being appended
//! twice, and a gap in sequence numbers is refused.
//!
//! The state lives in memory and is rebuilt from the batch headers in the
//! tail of the log at start (`Partition::new`) and after a follower cuts a
//! divergent tail. A producer not seen there has
//! its first batch accepted whatever its sequence, as Kafka does for a
//! producer whose state has expired.

use sluice_protocol::record_batch::BatchHeader;
use sluice_protocol::{ErrorCode, Offset};
use std::collections::{HashMap, VecDeque};

/// Batches remembered per producer: Kafka's limit on in-flight requests
/// for an idempotent producer.
pub const BATCHES_REMEMBERED: usize = 5;

/// Bound on producers tracked per partition; the least recently written is
/// forgotten first.
pub const PRODUCERS_MAX: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Written {
    first_seq: i32,
    last_seq: i32,
    base_offset: Offset,
}

#[derive(Debug)]
struct Producer {
    epoch: i16,
    batches: VecDeque<Written>,
    last_write: u64,
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

/// Producer states of one partition.
#[derive(Debug, Default)]
pub struct ProducerStates {
    producers: HashMap<i64, Producer>,
    clock: u64,
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

    /// Records an appended batch.
    pub fn record(&mut self, h: &BatchHeader, base_offset: Offset) {
        if h.producer_id < 0 || h.base_sequence < 0 {
            return;
        }
        self.clock += 1;
        if self.producers.len() >= PRODUCERS_MAX && !self.producers.contains_key(&h.producer_id) {
            if let Some(oldest) = self
                .producers
                .iter()
                .min_by_key(|(_, p)| p.last_write)
                .map(|(id, _)| *id)
            {
                self.producers.remove(&oldest);
            }
        }
        let p = self.producers.entry(h.producer_id).or_insert(Producer {
            epoch: h.producer_epoch,
            batches: VecDeque::new(),
            last_write: 0,
        });
        if h.producer_epoch > p.epoch {
            p.epoch = h.producer_epoch;
            p.batches.clear();
        }
        p.last_write = self.clock;
        let last_seq = h.base_sequence.wrapping_add(h.last_offset_delta) & i32::MAX;
        p.batches.push_back(Written {
            first_seq: h.base_sequence,
            last_seq,
            base_offset,
        });
        while p.batches.len() > BATCHES_REMEMBERED {
            p.batches.pop_front();
        }
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
        s.record(&a, Offset(10));
        assert_eq!(s.check(&a), Check::Duplicate(Offset(10)));
        let b = header(7, 0, 3, 2);
        assert_eq!(s.check(&b), Check::Append);
        s.record(&b, Offset(13));
        assert_eq!(
            s.check(&header(7, 0, 9, 1)),
            Check::Reject(ErrorCode::OutOfOrderSequenceNumber)
        );
        assert_eq!(s.check(&header(7, 1, 0, 1)), Check::Append);
        s.record(&header(7, 1, 0, 1), Offset(20));
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
        s.record(&a, Offset(0));
        assert_eq!(
            s.check(&header(7, 1, 4, 1)),
            Check::Reject(ErrorCode::OutOfOrderSequenceNumber)
        );
        assert_eq!(s.check(&header(7, 1, 0, 1)), Check::Append);
        // A producer with no state yet may start anywhere, as in Kafka.
        assert_eq!(s.check(&header(8, 3, 9, 1)), Check::Append);
    }
}
