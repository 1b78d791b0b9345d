//! Transactions in a cleaning pass, by Kafka's rules.
//!
//! Everything a pass reads lies below the last stable offset, so every
//! transactional batch it meets belongs to a transaction already decided;
//! a transaction still open starts at or past that offset and is never
//! read, let alone removed. A decided transaction was aborted exactly
//! when an aborted-transaction index entry (`storage/txn_index.rs`) of
//! its producer spans the batch: the pass collects the entries that
//! overlap its range, including those whose ABORT marker lies beyond it.
//!
//! - The records of an aborted transaction go, and never enter the
//!   offset map: they must not displace an earlier committed value.
//! - The records of a committed transaction are compacted like any other.
//! - A marker (COMMIT or ABORT) stays while a batch of its transaction
//!   is still in the cleaned log: without it, a restart that rebuilds
//!   producer state from the log would take the transaction for open and
//!   hold the last stable offset there for ever. Once its transaction's
//!   data is gone the marker is kept `delete.retention.ms` more (a
//!   consumer part-way through the log still finds the transaction's
//!   end), then removed: the first pass to find it so writes that
//!   deadline into the marker's batch as its delete horizon (Kafka's
//!   KIP-534), and a pass after the horizon removes it.
//! - An ABORT marker's index entry is written to the cleaned segment only
//!   while its transaction still has data there: a read_committed fetch
//!   needs the entry to drop that data, and an entry without data would
//!   only make a consumer skip the producer's later batches until an
//!   ABORT marker that may be gone.
//! - Each producer's last data batch and last marker stay (emptied if
//!   need be, a marker as it is), so its epoch and sequence survive.
//! - A marker at or past the oldest producer snapshot stays: recovery
//!   may replay from that snapshot, and one taken while the transaction
//!   was open would otherwise never see it end.

use crate::storage::txn_index::AbortedTxn;
use sluice_protocol::record_batch::{parse_marker, BatchHeader};
use sluice_protocol::Offset;
use std::collections::{HashMap, HashSet};

/// The aborted transactions a pass may meet, by producer.
#[derive(Debug, Default)]
pub struct Aborted {
    /// Per producer, in first-offset order (a producer has one
    /// transaction open at a time, so its ranges do not overlap).
    by_producer: HashMap<i64, Vec<AbortedTxn>>,
}

impl Aborted {
    pub fn new(entries: Vec<AbortedTxn>) -> Aborted {
        let mut by_producer: HashMap<i64, Vec<AbortedTxn>> = HashMap::new();
        for e in entries {
            by_producer.entry(e.producer_id).or_default().push(e);
        }
        for list in by_producer.values_mut() {
            list.sort_by_key(|e| e.first_offset);
        }
        Aborted { by_producer }
    }

    /// The aborted transaction of `producer_id` spanning `offset`.
    fn spanning(&self, producer_id: i64, offset: Offset) -> Option<&AbortedTxn> {
        let list = self.by_producer.get(&producer_id)?;
        let i = list.partition_point(|e| e.first_offset <= offset);
        let e = list.get(i.checked_sub(1)?)?;
        (offset <= e.last_offset).then_some(e)
    }

    /// Whether a data batch belongs to an aborted transaction.
    pub fn holds(&self, h: &BatchHeader) -> bool {
        h.is_transactional()
            && !h.is_control()
            && self.spanning(h.producer_id, h.base_offset).is_some()
    }

    /// The index entry of the ABORT marker at `marker`.
    fn entry(&self, producer_id: i64, marker: Offset) -> Option<AbortedTxn> {
        self.spanning(producer_id, marker)
            .filter(|e| e.last_offset == marker)
            .copied()
    }
}

/// The last data batch and the last marker of each producer in a pass's
/// segments, by base offset.
#[derive(Debug, Default)]
pub struct LastBatches {
    data: HashMap<i64, Offset>,
    markers: HashMap<i64, Offset>,
}

impl LastBatches {
    /// Notes a batch read in offset order.
    pub fn read(&mut self, h: &BatchHeader) {
        if h.producer_id < 0 {
            return;
        }
        let last = match h.is_control() {
            true => &mut self.markers,
            false => &mut self.data,
        };
        last.insert(h.producer_id, h.base_offset);
    }

    /// Whether `h` is its producer's last data batch or last marker.
    pub fn is_last(&self, h: &BatchHeader) -> bool {
        let last = match h.is_control() {
            true => &self.markers,
            false => &self.data,
        };
        h.producer_id >= 0 && last.get(&h.producer_id) == Some(&h.base_offset)
    }
}

/// What the copy decided for a marker.
#[derive(Debug, PartialEq, Eq)]
pub enum MarkerFate {
    /// Its transaction still has data: kept, with this index entry for
    /// the cleaned segment if it is an ABORT.
    Needed(Option<AbortedTxn>),
    /// Its transaction's data is gone: kept until its delete horizon
    /// (`delete.retention.ms` after a pass first found it so).
    Retained,
    /// Removed.
    Removed,
}

/// The transactions a pass's copy has met data of and not yet the end.
#[derive(Debug, Default)]
pub struct Open {
    with_data: HashSet<i64>,
}

impl Open {
    /// A batch of `producer_id`'s transaction is in the cleaned output.
    pub fn data_kept(&mut self, producer_id: i64) {
        self.with_data.insert(producer_id);
    }

    /// Decides a control batch's fate. `expired` says whether the delete
    /// horizon of a marker whose transaction's data is gone has passed;
    /// `last` that it stays whatever its age (its producer's last marker,
    /// its segment's last batch, or one recovery may need).
    pub fn marker(
        &mut self,
        h: &BatchHeader,
        batch: &[u8],
        aborted: &Aborted,
        last: bool,
        expired: impl FnOnce() -> bool,
    ) -> MarkerFate {
        let Some(marker) = parse_marker(batch) else {
            // Another control record (a leader change, a snapshot): it
            // ends no transaction and stays.
            return MarkerFate::Needed(None);
        };
        if self.with_data.remove(&h.producer_id) {
            let entry = match marker.commit {
                true => None,
                false => aborted.entry(h.producer_id, h.base_offset),
            };
            return MarkerFate::Needed(entry);
        }
        if expired() && !last {
            MarkerFate::Removed
        } else {
            MarkerFate::Retained
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_protocol::record_batch::{set_base_offset, BatchBuilder, Marker};

    fn entry(pid: i64, first: i64, last: i64) -> AbortedTxn {
        AbortedTxn {
            producer_id: pid,
            first_offset: Offset(first),
            last_offset: Offset(last),
            last_stable_offset: Offset(first),
        }
    }

    fn data(pid: i64, base: i64) -> BatchHeader {
        let mut b = BatchBuilder::new(0).producer(pid, 0, 0).transactional();
        b.push(0, Some(b"k"), Some(b"v"), &[]);
        let mut bytes = b.finish();
        set_base_offset(&mut bytes, Offset(base));
        BatchHeader::parse(&bytes).unwrap()
    }

    fn marker(pid: i64, base: i64, commit: bool) -> (BatchHeader, Vec<u8>) {
        let m = Marker {
            commit,
            coordinator_epoch: 0,
        };
        let mut bytes = BatchBuilder::marker(0, pid, 0, m).finish();
        set_base_offset(&mut bytes, Offset(base));
        (BatchHeader::parse(&bytes).unwrap(), bytes)
    }

    #[test]
    fn a_batch_is_aborted_when_its_producers_entry_spans_it() {
        let a = Aborted::new(vec![entry(1, 20, 30), entry(1, 0, 5), entry(2, 8, 12)]);
        assert!(a.holds(&data(1, 0)) && a.holds(&data(1, 25)) && a.holds(&data(2, 10)));
        assert!(!a.holds(&data(1, 10)), "between its aborted transactions");
        assert!(!a.holds(&data(2, 20)) && !a.holds(&data(3, 0)));
        assert_eq!(a.entry(1, Offset(30)), Some(entry(1, 20, 30)));
        assert_eq!(a.entry(1, Offset(29)), None);
    }

    #[test]
    fn a_marker_stays_while_its_data_does_then_for_the_retention() {
        let a = Aborted::new(vec![entry(1, 0, 5)]);
        let mut open = Open::default();
        open.data_kept(1);
        let (h, b) = marker(1, 5, false);
        assert_eq!(
            open.marker(&h, &b, &a, false, || true),
            MarkerFate::Needed(Some(entry(1, 0, 5)))
        );
        // The next transaction left no data: its marker waits, then goes
        // unless it is the producer's last.
        let (h, b) = marker(1, 9, true);
        assert_eq!(
            open.marker(&h, &b, &a, false, || false),
            MarkerFate::Retained
        );
        assert_eq!(open.marker(&h, &b, &a, false, || true), MarkerFate::Removed);
        assert_eq!(open.marker(&h, &b, &a, true, || true), MarkerFate::Retained);
    }

    #[test]
    fn each_producers_last_data_batch_and_marker_are_known() {
        let mut last = LastBatches::default();
        let (m, _) = marker(1, 3, true);
        for h in [data(1, 0), data(1, 1), m, data(2, 4)] {
            last.read(&h);
        }
        assert!(last.is_last(&data(1, 1)) && last.is_last(&m) && last.is_last(&data(2, 4)));
        assert!(!last.is_last(&data(1, 0)));
    }
}
