//! The CreateTime check of Produce: a record whose timestamp is more than
//! `message.timestamp.after.max.ms` past the broker's clock is refused
//! with INVALID_TIMESTAMP, the whole record set with it, and the answer
//! names each such record, as Kafka 4 does (its default is one hour).
//!
//! Batch headers carry each batch's largest timestamp, so a set with no
//! late record is judged from its headers alone; only a batch holding a
//! late record is decoded (and decompressed, if it is compressed) to name
//! the records, which happens on the error path only.

use sluice_protocol::compression::decompress;
use sluice_protocol::record_batch::{decode_records, BatchHeader, Compression, BATCH_HEADER_SIZE};

/// A refused record: its index in the record set and its timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LateRecord {
    pub index: i32,
    pub timestamp: i64,
}

/// The records of `set` (validated whole batches) timestamped after
/// `now_ms + after_max_ms`.
pub fn late_records(set: &[u8], now_ms: i64, after_max_ms: i64) -> Vec<LateRecord> {
    let limit = now_ms.saturating_add(after_max_ms);
    let mut late = Vec::new();
    let (mut at, mut index) = (0usize, 0i32);
    while at < set.len() {
        let Some(h) = BatchHeader::parse(&set[at..]) else {
            break;
        };
        let end = (at + h.total_size()).min(set.len());
        if h.max_timestamp > limit {
            late.extend(late_in_batch(&h, &set[at..end], index, limit));
        }
        index = index.saturating_add(h.records_count.max(0));
        at = end;
    }
    late
}

/// The late records of one batch; the whole batch's first record when
/// its records cannot be read (its header says one is late).
fn late_in_batch(h: &BatchHeader, batch: &[u8], first: i32, limit: i64) -> Vec<LateRecord> {
    let whole = vec![LateRecord {
        index: first,
        timestamp: h.max_timestamp,
    }];
    let Some(section) = batch.get(BATCH_HEADER_SIZE..) else {
        return whole;
    };
    let plain;
    let section = match h.compression() {
        Some(Compression::None) => section,
        Some(codec) => match decompress(codec, section) {
            Ok(bytes) => {
                plain = bytes;
                &plain[..]
            }
            Err(_) => return whole,
        },
        None => return whole,
    };
    let Ok(records) = decode_records(section, h.records_count.max(0) as usize) else {
        return whole;
    };
    records
        .iter()
        .enumerate()
        .map(|(i, r)| LateRecord {
            index: first.saturating_add(i as i32),
            timestamp: h.base_timestamp.saturating_add(r.timestamp_delta),
        })
        .filter(|r| r.timestamp > limit)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_protocol::record_batch::BatchBuilder;

    fn batch(times: &[i64]) -> Vec<u8> {
        let mut b = BatchBuilder::new(times[0]);
        for t in times {
            b.push(*t, None, Some(b"v"), &[]);
        }
        b.finish()
    }

    #[test]
    fn names_each_late_record_across_batches() {
        let mut set = batch(&[100, 5_000, 200]);
        set.extend(batch(&[300, 9_000]));
        let late = late_records(&set, 1_000, 1_000);
        let want = vec![
            LateRecord {
                index: 1,
                timestamp: 5_000,
            },
            LateRecord {
                index: 4,
                timestamp: 9_000,
            },
        ];
        assert_eq!(late, want);
        assert!(late_records(&set, 8_000, 1_000).is_empty());
    }

    #[test]
    fn a_limit_at_the_end_of_time_refuses_nothing() {
        let set = batch(&[i64::MAX - 1]);
        assert!(late_records(&set, 1_000, i64::MAX).is_empty());
    }
}
