//! One replica's log as replication sees it: which leader epoch wrote
//! which offsets, where the log ends, and how far it is committed.
//!
//! Record bytes do not matter to replication; a record is named by its
//! offset and the epoch of the leader that appended it. Within one epoch
//! only one leader appends, and only forward, so `(epoch, offset)` names a
//! record uniquely across all replicas. That is what lets the leader-epoch
//! cache (Kafka's `leader-epoch-checkpoint`) stand in for the log:
//!
//! ```text
//!   epochs:  (epoch 1, start 0) (epoch 3, start 40) (epoch 4, start 55)
//!   offsets: 0 ............ 39 | 40 ........... 54 | 55 ....... log_end-1
//!                                          ^ high_watermark (committed below)
//! ```
//!
//! Every update checks `log_start <= high_watermark <= log_end` and that
//! epochs strictly increase with strictly increasing start offsets (an
//! epoch that got no records is replaced when the next one starts at the
//! same offset, as Kafka's `LeaderEpochFileCache.assign` does), in release
//! builds too: a broken cache silently picks the wrong truncation point.

use sluice_protocol::{LeaderEpoch, Offset};

/// The first offset written under a leader epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: LeaderEpoch,
    pub start_offset: Offset,
}

/// A contiguous run of records written under one epoch, as a Fetch
/// response carries them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    pub epoch: LeaderEpoch,
    pub base_offset: Offset,
    pub count: u32,
}

/// Most epoch entries a log may hold; every leader change adds at most
/// one, and retention would trim old ones.
pub const EPOCH_ENTRIES_MAX: usize = 1 << 16;

/// A replica's log reduced to its leader-epoch cache and offsets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicaLog {
    log_start: Offset,
    epochs: Vec<EpochEntry>,
    log_end: Offset,
    high_watermark: Offset,
}

impl ReplicaLog {
    /// An empty log starting at offset 0.
    pub fn new() -> ReplicaLog {
        ReplicaLog::default()
    }

    /// The model of a log as it is on disk: its start, leader-epoch cache
    /// entries (oldest first), end and high watermark.
    pub fn from_parts(
        log_start: Offset,
        epochs: &[(LeaderEpoch, Offset)],
        log_end: Offset,
        high_watermark: Offset,
    ) -> ReplicaLog {
        let mut epochs: Vec<EpochEntry> = epochs
            .iter()
            .filter(|(_, start)| *start <= log_end)
            .map(|&(epoch, start_offset)| EpochEntry {
                epoch,
                start_offset,
            })
            .collect();
        // Records below the first entry (a cache rebuilt or cut at the
        // start) belong to the oldest epoch known.
        match epochs.first_mut() {
            Some(first) if first.start_offset > log_start => first.start_offset = log_start,
            None if log_end > log_start => epochs.push(EpochEntry {
                epoch: LeaderEpoch(0),
                start_offset: log_start,
            }),
            _ => {}
        }
        let log = ReplicaLog {
            log_start,
            epochs,
            log_end,
            high_watermark: high_watermark.max(log_start).min(log_end),
        };
        log.check();
        log
    }

    pub fn log_start(&self) -> Offset {
        self.log_start
    }

    /// The offset the next record will get (Kafka's LEO).
    pub fn log_end(&self) -> Offset {
        self.log_end
    }

    /// Records below this offset are committed.
    pub fn high_watermark(&self) -> Offset {
        self.high_watermark
    }

    /// The leader-epoch cache, oldest first.
    pub fn epochs(&self) -> &[EpochEntry] {
        &self.epochs
    }

    /// The newest epoch in the cache, if any.
    pub fn latest_epoch(&self) -> Option<LeaderEpoch> {
        self.epochs.last().map(|e| e.epoch)
    }

    /// The epoch of the record at `offset`, if the log holds it.
    pub fn epoch_at(&self, offset: Offset) -> Option<LeaderEpoch> {
        if offset < self.log_start || offset >= self.log_end {
            return None;
        }
        let i = self.epochs.partition_point(|e| e.start_offset <= offset);
        // i > 0: the first entry starts at or below log_start (checked).
        self.epochs.get(i.checked_sub(1)?).map(|e| e.epoch)
    }

    /// Records that `epoch` starts at `start_offset` (Kafka's `assign`):
    /// entries for this or a later epoch, or starting at or after this
    /// offset, are dropped first, so an epoch with no records is replaced.
    pub fn assign_epoch(&mut self, epoch: LeaderEpoch, start_offset: Offset) {
        assert!(start_offset <= self.log_end, "epoch start above log end");
        // The newest epoch again, at or after its start: nothing new
        // (Kafka ignores it too).
        if self
            .epochs
            .last()
            .is_some_and(|last| last.epoch == epoch && last.start_offset <= start_offset)
        {
            return;
        }
        while let Some(e) = self.epochs.last() {
            if e.epoch >= epoch || e.start_offset >= start_offset {
                self.epochs.pop();
            } else {
                break;
            }
        }
        assert!(self.epochs.len() < EPOCH_ENTRIES_MAX, "epoch cache full");
        self.epochs.push(EpochEntry {
            epoch,
            start_offset,
        });
        self.check();
    }

    /// Appends `count` records written under `epoch`, which must not be
    /// older than the newest epoch in the log.
    pub fn append(&mut self, epoch: LeaderEpoch, count: u32) {
        assert!(count > 0, "empty append");
        match self.latest_epoch() {
            Some(latest) if latest == epoch => {}
            Some(latest) => {
                assert!(epoch > latest, "append of epoch {epoch:?} after {latest:?}");
                self.assign_epoch(epoch, self.log_end);
            }
            None => self.assign_epoch(epoch, self.log_end),
        }
        self.log_end = self.log_end.plus(i64::from(count));
        self.check();
    }

    /// Drops every record at or above `offset`, and every epoch entry
    /// starting there (including an epoch that got no records).
    pub fn truncate_to(&mut self, offset: Offset) {
        assert!(offset >= self.log_start, "truncation below log start");
        let offset = offset.min(self.log_end);
        while self.epochs.last().is_some_and(|e| e.start_offset >= offset) {
            self.epochs.pop();
        }
        self.log_end = offset;
        self.high_watermark = self.high_watermark.min(offset);
        self.check();
    }

    /// Moves the high watermark, which must stay within the log.
    pub fn set_high_watermark(&mut self, high_watermark: Offset) {
        self.high_watermark = high_watermark;
        self.check();
    }

    /// OffsetForLeaderEpoch: the largest epoch `<= requested` and the
    /// offset where it ends (the start of the next epoch, or the log end
    /// for the newest). `None` is Kafka's UNDEFINED: nothing at or after
    /// `requested` is known. A request below every epoch gets `requested`
    /// and the first epoch's start, as Kafka answers it.
    pub fn end_offset_for_epoch(&self, requested: LeaderEpoch) -> Option<(LeaderEpoch, Offset)> {
        let latest = self.epochs.last()?;
        if latest.epoch <= requested {
            return Some((latest.epoch, self.log_end));
        }
        let higher = self.epochs.partition_point(|e| e.epoch <= requested);
        let end = self.epochs[higher].start_offset;
        match higher.checked_sub(1) {
            Some(floor) => Some((self.epochs[floor].epoch, end)),
            None => Some((requested, end)),
        }
    }

    /// Up to `max_records` records from `from`, stopping below `upto`,
    /// as runs of one epoch each.
    pub fn read(&self, from: Offset, upto: Offset, max_records: u32) -> Vec<Run> {
        let upto = upto
            .min(self.log_end)
            .min(from.plus(i64::from(max_records)));
        let mut runs = Vec::new();
        let mut at = from.max(self.log_start);
        while at < upto {
            let i = (self.epochs.partition_point(|e| e.start_offset <= at))
                .checked_sub(1)
                .expect("records at or above log_start have an epoch (checked)");
            let end = self
                .epochs
                .get(i + 1)
                .map_or(upto, |n| n.start_offset.min(upto));
            let count = u32::try_from(end.0 - at.0).expect("bounded by max_records");
            runs.push(Run {
                epoch: self.epochs[i].epoch,
                base_offset: at,
                count,
            });
            at = end;
        }
        runs
    }

    /// The epoch entries covering offsets below `upto` (`upto <= log_end`):
    /// two logs hold the same records below `upto` exactly when these are
    /// equal, because every entry listed holds at least one record there.
    pub fn epochs_below(&self, upto: Offset) -> Vec<EpochEntry> {
        assert!(upto <= self.log_end, "asked past the log end");
        self.epochs
            .iter()
            .copied()
            .filter(|e| e.start_offset < upto)
            .collect()
    }

    /// The ordering every update must keep.
    /// Records below `offset` are gone (retention, DeleteRecords, or a
    /// follower following its leader's log start): the log starts there.
    /// Epoch entries wholly below it go; the one covering it starts there.
    pub fn advance_start(&mut self, offset: Offset) {
        if offset <= self.log_start {
            return;
        }
        assert!(
            offset <= self.high_watermark,
            "log start past the high watermark"
        );
        let covering = self.epochs.partition_point(|e| e.start_offset <= offset);
        self.epochs.drain(..covering.saturating_sub(1));
        if let Some(first) = self.epochs.first_mut() {
            first.start_offset = first.start_offset.max(offset);
        }
        self.log_start = offset;
        self.check();
    }

    fn check(&self) {
        assert!(self.log_start <= self.high_watermark, "hw below log start");
        assert!(self.high_watermark <= self.log_end, "hw above log end");
        for pair in self.epochs.windows(2) {
            assert!(pair[0].epoch < pair[1].epoch, "epochs not increasing");
            assert!(
                pair[0].start_offset < pair[1].start_offset,
                "epoch starts not increasing"
            );
        }
        if let Some(last) = self.epochs.last() {
            assert!(
                last.start_offset <= self.log_end,
                "epoch starts past log end"
            );
        }
        if self.log_end > self.log_start {
            let first = self.epochs.first().expect("a non-empty log has an epoch");
            assert!(
                first.start_offset <= self.log_start,
                "records with no epoch"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(n: i32) -> LeaderEpoch {
        LeaderEpoch(n)
    }

    fn log_of(runs: &[(i32, u32)]) -> ReplicaLog {
        let mut log = ReplicaLog::new();
        for &(epoch, count) in runs {
            log.append(e(epoch), count);
        }
        log
    }

    #[test]
    fn append_opens_an_epoch_entry_per_new_epoch() {
        let log = log_of(&[(1, 10), (1, 5), (3, 7)]);
        assert_eq!(log.log_end(), Offset(22));
        assert_eq!(log.epochs().len(), 2);
        assert_eq!(log.epoch_at(Offset(14)), Some(e(1)));
        assert_eq!(log.epoch_at(Offset(15)), Some(e(3)));
        assert_eq!(log.epoch_at(Offset(22)), None);
    }

    #[test]
    fn a_log_start_moves_up_to_the_high_watermark_and_trims_epochs() {
        let mut log = log_of(&[(1, 10), (3, 5), (4, 5)]);
        log.set_high_watermark(Offset(18));
        log.advance_start(Offset(12));
        assert_eq!(log.log_start(), Offset(12));
        let starts: Vec<_> = log
            .epochs()
            .iter()
            .map(|x| (x.epoch, x.start_offset))
            .collect();
        assert_eq!(starts, [(e(3), Offset(12)), (e(4), Offset(15))]);
        assert_eq!(log.epoch_at(Offset(11)), None);
        assert_eq!(log.epoch_at(Offset(12)), Some(e(3)));
        log.advance_start(Offset(5));
        assert_eq!(log.log_start(), Offset(12), "never backwards");
        log.advance_start(Offset(18));
        assert_eq!(
            log.epochs()[0],
            EpochEntry {
                epoch: e(4),
                start_offset: Offset(18)
            }
        );
    }

    #[test]
    fn end_offset_for_epoch_follows_kafka() {
        let log = log_of(&[(1, 10), (3, 5), (4, 5)]);
        assert_eq!(log.end_offset_for_epoch(e(4)), Some((e(4), Offset(20))));
        assert_eq!(log.end_offset_for_epoch(e(7)), Some((e(4), Offset(20))));
        assert_eq!(log.end_offset_for_epoch(e(3)), Some((e(3), Offset(15))));
        // Epoch 2 never wrote here: epoch 1 is the floor, ending where 3 starts.
        assert_eq!(log.end_offset_for_epoch(e(2)), Some((e(1), Offset(10))));
        assert_eq!(log.end_offset_for_epoch(e(0)), Some((e(0), Offset(0))));
        assert_eq!(ReplicaLog::new().end_offset_for_epoch(e(1)), None);
    }

    #[test]
    fn an_epoch_without_records_is_replaced_by_the_next() {
        let mut log = log_of(&[(1, 10)]);
        log.assign_epoch(e(2), Offset(10));
        log.assign_epoch(e(5), Offset(10));
        assert_eq!(log.latest_epoch(), Some(e(5)));
        assert_eq!(log.epochs().len(), 2);
        log.append(e(5), 1);
        assert_eq!(log.epoch_at(Offset(10)), Some(e(5)));
    }

    #[test]
    fn truncation_drops_records_epochs_and_caps_the_high_watermark() {
        let mut log = log_of(&[(1, 10), (2, 10)]);
        log.set_high_watermark(Offset(15));
        log.truncate_to(Offset(10));
        assert_eq!(log.log_end(), Offset(10));
        assert_eq!(log.high_watermark(), Offset(10));
        assert_eq!(log.latest_epoch(), Some(e(1)));
        log.truncate_to(Offset(40));
        assert_eq!(
            log.log_end(),
            Offset(10),
            "truncating past the end is a no-op"
        );
    }

    #[test]
    fn read_splits_at_epoch_boundaries_and_stops_at_the_limit() {
        let log = log_of(&[(1, 3), (2, 4)]);
        let runs = log.read(Offset(1), Offset(6), 100);
        assert_eq!(
            runs,
            vec![
                Run {
                    epoch: e(1),
                    base_offset: Offset(1),
                    count: 2
                },
                Run {
                    epoch: e(2),
                    base_offset: Offset(3),
                    count: 3
                },
            ]
        );
        assert_eq!(log.read(Offset(0), Offset(7), 2).len(), 1);
        assert!(log.read(Offset(7), Offset(7), 5).is_empty());
    }

    #[test]
    #[should_panic(expected = "hw above log end")]
    fn high_watermark_above_log_end_is_refused() {
        log_of(&[(1, 3)]).set_high_watermark(Offset(4));
    }

    #[test]
    #[should_panic(expected = "append of epoch")]
    fn appending_an_older_epoch_is_refused() {
        log_of(&[(2, 3), (1, 1)]);
    }
}
