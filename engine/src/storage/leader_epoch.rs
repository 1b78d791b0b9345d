//! The leader-epoch cache: which leader epoch wrote which offsets of a
//! partition, kept in the partition directory as Kafka's
//! `leader-epoch-checkpoint`.
//!
//! ```text
//! leader-epoch-checkpoint (text, '\n' after every line):
//!   0                          version
//!   <n>                        entry count, n <= LEADER_EPOCH_ENTRIES_MAX
//!   <epoch> <start offset>     n lines, one space between the numbers
//! ```
//!
//! An entry `(epoch, start)` says that the first record written under
//! `epoch` has offset `start`; the epoch holds every offset up to the next
//! entry's start (or the log end). Epochs and start offsets both rise
//! strictly, and neither is negative: [`EpochHistory`] asserts that on
//! every update, and a file breaking it is corrupt.
//!
//! Followers use the cache to find where their log diverges from a new
//! leader's (KIP-101, KIP-279): they ask the leader, with
//! OffsetForLeaderEpoch, where their own newest epoch ends in its log,
//! and truncate there. Consumers ask the same question to detect that
//! their position was truncated away (KIP-320).
//!
//! The file is replaced atomically (temp file, fsync, rename, fsync dir)
//! whenever the entries change, which is once per leader change, not per
//! append. A change is written before the log data it describes (a new
//! epoch) or after it (a truncation), so after a crash the file may say
//! too much but never too little; opening the log reconciles it with the
//! log's offsets, and a missing or unreadable file is rebuilt from the
//! batch headers (see `log.rs`).
//!
//! Taking over as leader records the new epoch at the log end, before
//! any record of it exists. That change may stay in memory for a while
//! ([`LeaderEpochCache::assign_unwritten`]): a restarted broker takes
//! over every partition it leads at once, 10,000 files to write and sync,
//! and the shard writes them in the background through its io_uring
//! (`shard/file_sync.rs`) instead of stalling on each. The rule above
//! still holds, because the first append under the new epoch waits for
//! the file ([`LeaderEpochCache::write_unwritten`] when nothing wrote it
//! sooner): the file always names every epoch the log holds records of.
//! An epoch lost unwritten in a crash has no records, so no replica can
//! ask about it, and the restarted broker leads in a newer one anyway.

use super::checkpoint::LEADER_EPOCH_FILE;
use super::{write_atomically, Result, StorageError};
use sluice_protocol::{LeaderEpoch, Offset};
use std::path::{Path, PathBuf};

/// Bound on entries, checked before anything is allocated for a file and
/// on every assign. Every leader change adds at most one entry, and
/// retention drops old ones, so 65,536 leader changes of one partition
/// within its retention is far beyond any real cluster.
pub const LEADER_EPOCH_ENTRIES_MAX: usize = 1 << 16;

/// Bound on the checkpoint file's size: the version and count lines plus
/// the longest possible entry line (an i32, a space, an i64, a newline)
/// for every entry.
const CHECKPOINT_BYTES_MAX: u64 = 32 + LEADER_EPOCH_ENTRIES_MAX as u64 * (11 + 1 + 20 + 1);

/// The only checkpoint format version Kafka has written.
const CHECKPOINT_VERSION: &str = "0";

/// The first offset written under a leader epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: LeaderEpoch,
    pub start_offset: Offset,
}

/// The answer to "where does this epoch end?" (OffsetForLeaderEpoch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochEnd {
    pub epoch: LeaderEpoch,
    pub end_offset: Offset,
}

impl EpochEnd {
    /// Kafka's UNDEFINED_EPOCH / UNDEFINED_EPOCH_OFFSET: nothing is known.
    pub const UNDEFINED: EpochEnd = EpochEnd {
        epoch: LeaderEpoch(-1),
        end_offset: Offset(-1),
    };
}

/// The cache's entries, oldest first, and the rules that change them.
/// Pure: no I/O, so every rule is tested on its own.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EpochHistory {
    entries: Vec<EpochEntry>,
}

impl EpochHistory {
    /// An empty history.
    pub fn new() -> EpochHistory {
        EpochHistory::default()
    }

    /// A history from entries that must already obey the ordering rules.
    pub fn from_entries(entries: Vec<EpochEntry>) -> std::result::Result<EpochHistory, String> {
        if entries.len() > LEADER_EPOCH_ENTRIES_MAX {
            return Err(format!("{} entries", entries.len()));
        }
        for e in &entries {
            if e.epoch.0 < 0 || e.start_offset.0 < 0 {
                return Err(format!("negative entry {} {}", e.epoch.0, e.start_offset));
            }
        }
        for pair in entries.windows(2) {
            if pair[0].epoch >= pair[1].epoch || pair[0].start_offset >= pair[1].start_offset {
                return Err(format!(
                    "entries do not rise: {} {} then {} {}",
                    pair[0].epoch.0, pair[0].start_offset, pair[1].epoch.0, pair[1].start_offset
                ));
            }
        }
        Ok(EpochHistory { entries })
    }

    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    /// The newest entry, if any.
    pub fn latest(&self) -> Option<EpochEntry> {
        self.entries.last().copied()
    }

    /// The newest epoch, if any.
    pub fn latest_epoch(&self) -> Option<LeaderEpoch> {
        self.entries.last().map(|e| e.epoch)
    }

    /// The epoch holding `offset`: the newest entry starting at or below
    /// it. `None` below the first entry. (Whether the log holds `offset`
    /// is the caller's question.)
    pub fn epoch_at(&self, offset: Offset) -> Option<LeaderEpoch> {
        let above = self.entries.partition_point(|e| e.start_offset <= offset);
        above.checked_sub(1).map(|i| self.entries[i].epoch)
    }

    /// Whether [`EpochHistory::assign`] would change anything: a
    /// different epoch than the newest, or the newest epoch starting
    /// earlier than recorded. The common case, an append in the current
    /// epoch, answers false without touching anything else.
    pub fn needs_assign(&self, epoch: LeaderEpoch, start_offset: Offset) -> bool {
        match self.latest() {
            Some(last) => epoch != last.epoch || start_offset < last.start_offset,
            None => true,
        }
    }

    /// Records that `epoch` starts at `start_offset`, by Kafka's rules:
    /// nothing changes when `epoch` is the newest epoch and starts no
    /// earlier than recorded; otherwise entries for `epoch` or a later
    /// one, and entries starting at or after `start_offset`, are dropped
    /// first, so the entries keep rising. Dropping one entry that starts
    /// at `start_offset` is an epoch that got no records being replaced;
    /// dropping more means the log held records of epochs newer than the
    /// one now assigned, which only a truncation should have removed, and
    /// is logged. Returns whether anything changed.
    pub fn assign(&mut self, epoch: LeaderEpoch, start_offset: Offset) -> bool {
        assert!(epoch.0 >= 0, "assign of negative epoch {}", epoch.0);
        assert!(
            start_offset.0 >= 0,
            "assign at negative offset {start_offset}"
        );
        if !self.needs_assign(epoch, start_offset) {
            return false;
        }
        let keep = self
            .entries
            .iter()
            .rposition(|e| e.epoch < epoch && e.start_offset < start_offset)
            .map_or(0, |i| i + 1);
        let dropped = self.entries.split_off(keep);
        let trivial = match dropped.as_slice() {
            [] => true,
            [only] => only.start_offset == start_offset,
            _ => false,
        };
        if !trivial {
            tracing::warn!(
                epoch = epoch.0,
                start = start_offset.0,
                ?dropped,
                "new leader epoch entry replaced conflicting entries"
            );
        }
        if self.entries.len() == LEADER_EPOCH_ENTRIES_MAX {
            let oldest = self.entries.remove(0);
            tracing::warn!(
                ?oldest,
                "leader epoch cache full; dropping its oldest entry"
            );
        }
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
        self.check();
        true
    }

    /// Drops the entries starting at or after `end_offset`: the log was
    /// truncated there. Returns whether anything changed.
    pub fn truncate_from_end(&mut self, end_offset: Offset) -> bool {
        let keep = self
            .entries
            .partition_point(|e| e.start_offset < end_offset);
        if keep == self.entries.len() {
            return false;
        }
        self.entries.truncate(keep);
        self.check();
        true
    }

    /// The log now starts at `start_offset` (old segments deleted): the
    /// entries starting at or below it are dropped and the newest of them
    /// is put back starting at `start_offset`, since its epoch still holds
    /// the records from there on. Entries above it are kept. Returns
    /// whether anything changed.
    pub fn truncate_from_start(&mut self, start_offset: Offset) -> bool {
        let covered = self
            .entries
            .partition_point(|e| e.start_offset <= start_offset);
        let Some(newest_covered) = covered.checked_sub(1) else {
            return false;
        };
        if newest_covered == 0 && self.entries[0].start_offset == start_offset {
            return false;
        }
        let epoch = self.entries[newest_covered].epoch;
        self.entries.drain(..covered);
        self.entries.insert(
            0,
            EpochEntry {
                epoch,
                start_offset,
            },
        );
        self.check();
        true
    }

    /// Where `requested` ends in a log ending at `log_end`, as Kafka's
    /// `LeaderEpochFileCache.endOffsetFor` answers:
    ///
    /// - `requested` is the newest epoch: `(requested, log_end)`;
    /// - `requested` is older than some entry: the newest epoch at or
    ///   below it and the start of the first epoch above it, which is
    ///   where the log stopped holding records of `requested` or older;
    ///   when no entry is at or below it (its entries were deleted with
    ///   old segments, or it was never seen), `requested` itself and the
    ///   first entry's start;
    /// - otherwise (newer than every entry, -1, or an empty cache):
    ///   [`EpochEnd::UNDEFINED`].
    pub fn end_offset_for(&self, requested: LeaderEpoch, log_end: Offset) -> EpochEnd {
        if requested.0 < 0 {
            return EpochEnd::UNDEFINED;
        }
        match self.latest() {
            None => return EpochEnd::UNDEFINED,
            Some(last) if last.epoch == requested => {
                return EpochEnd {
                    epoch: requested,
                    end_offset: log_end,
                }
            }
            Some(_) => {}
        }
        let higher = self.entries.partition_point(|e| e.epoch <= requested);
        let Some(next) = self.entries.get(higher) else {
            return EpochEnd::UNDEFINED;
        };
        let epoch = match higher.checked_sub(1) {
            Some(floor) => self.entries[floor].epoch,
            None => requested,
        };
        EpochEnd {
            epoch,
            end_offset: next.start_offset,
        }
    }

    /// The ordering every update keeps, checked in release builds too: a
    /// broken cache silently picks a wrong truncation point.
    fn check(&self) {
        assert!(self.entries.len() <= LEADER_EPOCH_ENTRIES_MAX);
        if let Some(first) = self.entries.first() {
            assert!(first.epoch.0 >= 0 && first.start_offset.0 >= 0, "{first:?}");
        }
        for pair in self.entries.windows(2) {
            assert!(pair[0].epoch < pair[1].epoch, "epochs not rising: {pair:?}");
            assert!(
                pair[0].start_offset < pair[1].start_offset,
                "epoch starts not rising: {pair:?}"
            );
        }
    }
}

/// Encodes entries in the checkpoint format.
pub fn encode(history: &EpochHistory) -> String {
    let mut text = format!("{CHECKPOINT_VERSION}\n{}\n", history.entries.len());
    for e in &history.entries {
        text.push_str(&format!("{} {}\n", e.epoch.0, e.start_offset.0));
    }
    text
}

/// Decodes the checkpoint format; `path` only names the file in errors,
/// whose `position` is the 1-based line number.
pub fn decode(text: &str, path: &Path) -> Result<EpochHistory> {
    let corrupt = |line: usize, reason: String| StorageError::Corrupt {
        path: path.to_path_buf(),
        position: line as u64,
        reason,
    };
    let mut lines = text.lines();
    if lines.next().map(str::trim) != Some(CHECKPOINT_VERSION) {
        return Err(corrupt(1, "unknown version".into()));
    }
    let count: usize = lines
        .next()
        .and_then(|l| l.trim().parse().ok())
        .filter(|n| *n <= LEADER_EPOCH_ENTRIES_MAX)
        .ok_or_else(|| corrupt(2, "bad entry count".into()))?;
    let mut entries = Vec::with_capacity(count);
    for i in 0..count {
        let line_no = i + 3;
        let line = lines
            .next()
            .ok_or_else(|| corrupt(line_no, format!("expected {count} entries, found {i}")))?;
        let mut parts = line.split_whitespace();
        let (Some(epoch), Some(start), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(corrupt(line_no, "expected: epoch start_offset".into()));
        };
        let epoch: i32 = epoch
            .parse()
            .map_err(|_| corrupt(line_no, format!("bad epoch {epoch:?}")))?;
        let start: i64 = start
            .parse()
            .map_err(|_| corrupt(line_no, format!("bad start offset {start:?}")))?;
        entries.push(EpochEntry {
            epoch: LeaderEpoch(epoch),
            start_offset: Offset(start),
        });
    }
    if let Some(extra) = lines.position(|l| !l.trim().is_empty()) {
        return Err(corrupt(
            count + 3 + extra,
            "more entries than counted".into(),
        ));
    }
    EpochHistory::from_entries(entries).map_err(|reason| corrupt(0, reason))
}

/// A partition's leader-epoch cache, backed by its checkpoint file. Every
/// change is written before it is applied in memory, so a failed write
/// leaves both as they were and the change can be retried.
#[derive(Debug)]
pub struct LeaderEpochCache {
    path: PathBuf,
    history: EpochHistory,
    /// Counts changes to `history`; the file holds version `written`.
    /// `written <= version` always; they differ only after
    /// [`LeaderEpochCache::assign_unwritten`].
    version: u64,
    written: u64,
    /// Counts the synchronous writes of the file, so that a background
    /// write, whose rename may land after one of them, can tell.
    sync_writes: u64,
}

/// A version of the cache's file to write: its contents, and the
/// version to report to [`LeaderEpochCache::mark_written`].
#[derive(Debug)]
pub struct UnwrittenEpochs {
    pub path: PathBuf,
    pub contents: Vec<u8>,
    pub version: u64,
}

impl LeaderEpochCache {
    /// Writes `history` as the cache of the partition in `dir`.
    pub fn create(dir: &Path, history: EpochHistory) -> Result<LeaderEpochCache> {
        let path = dir.join(LEADER_EPOCH_FILE);
        write_atomically(&path, encode(&history).as_bytes())?;
        Ok(LeaderEpochCache::written(path, history))
    }

    fn written(path: PathBuf, history: EpochHistory) -> LeaderEpochCache {
        LeaderEpochCache {
            path,
            history,
            version: 0,
            written: 0,
            sync_writes: 0,
        }
    }

    /// Writes `history` as the cache of the new partition in `dir`,
    /// without syncing: the partition's creation is made durable as a
    /// whole (see `PartitionLog::create`).
    pub fn create_unsynced(dir: &Path, history: EpochHistory) -> Result<LeaderEpochCache> {
        let path = dir.join(LEADER_EPOCH_FILE);
        super::write_unsynced(&path, encode(&history).as_bytes())?;
        Ok(LeaderEpochCache::written(path, history))
    }

    /// Reads the checkpoint of the partition in `dir`. A missing file is
    /// an `Io` error of kind `NotFound`; the caller rebuilds either way.
    pub fn read(dir: &Path) -> Result<LeaderEpochCache> {
        let path = dir.join(LEADER_EPOCH_FILE);
        let size = std::fs::metadata(&path)
            .map_err(StorageError::io("stat leader epoch checkpoint", &path))?
            .len();
        if size > CHECKPOINT_BYTES_MAX {
            return Err(StorageError::Corrupt {
                path,
                position: 0,
                reason: format!("{size} bytes, above {CHECKPOINT_BYTES_MAX}"),
            });
        }
        let raw = std::fs::read(&path)
            .map_err(StorageError::io("read leader epoch checkpoint", &path))?;
        let text = String::from_utf8(raw).map_err(|e| StorageError::Corrupt {
            path: path.clone(),
            position: e.utf8_error().valid_up_to() as u64,
            reason: "not UTF-8 text".into(),
        })?;
        let history = decode(&text, &path)?;
        Ok(LeaderEpochCache::written(path, history))
    }

    pub fn history(&self) -> &EpochHistory {
        &self.history
    }

    pub fn latest_epoch(&self) -> Option<LeaderEpoch> {
        self.history.latest_epoch()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// See [`EpochHistory::assign`]. Free when nothing changes and the
    /// file is up to date; an append calls this before writing records,
    /// so a file left behind by [`LeaderEpochCache::assign_unwritten`] is
    /// written first.
    pub fn assign(&mut self, epoch: LeaderEpoch, start_offset: Offset) -> Result<()> {
        if !self.history.needs_assign(epoch, start_offset) {
            return self.write_unwritten();
        }
        self.update(|h| h.assign(epoch, start_offset))
    }

    /// See [`EpochHistory::truncate_from_end`].
    pub fn truncate_from_end(&mut self, end_offset: Offset) -> Result<()> {
        self.update(|h| h.truncate_from_end(end_offset))
    }

    /// See [`EpochHistory::truncate_from_start`].
    pub fn truncate_from_start(&mut self, start_offset: Offset) -> Result<()> {
        self.update(|h| h.truncate_from_start(start_offset))
    }

    /// See [`EpochHistory::end_offset_for`].
    pub fn end_offset_for(&self, requested: LeaderEpoch, log_end: Offset) -> EpochEnd {
        self.history.end_offset_for(requested, log_end)
    }

    /// Applies `change` to a copy; if it changed anything, writes the copy
    /// and only then keeps it. Several rules may be applied in one write.
    /// The file is written even when `change` changes nothing but an
    /// earlier [`LeaderEpochCache::assign_unwritten`] left it behind.
    pub fn update(&mut self, change: impl FnOnce(&mut EpochHistory) -> bool) -> Result<()> {
        let mut next = self.history.clone();
        if !change(&mut next) {
            return self.write_unwritten();
        }
        write_atomically(&self.path, encode(&next).as_bytes())?;
        self.sync_writes += 1;
        self.history = next;
        self.version += 1;
        self.written = self.version;
        Ok(())
    }

    /// [`EpochHistory::assign`] in memory only: the file lags until
    /// [`LeaderEpochCache::write_unwritten`] or a write of
    /// [`LeaderEpochCache::unwritten`] catches it up. For taking over as
    /// leader, where the epoch starts at the log end and has no records
    /// yet; an append must not follow before the file is written (see
    /// the module doc). Returns whether the file now lags.
    pub fn assign_unwritten(&mut self, epoch: LeaderEpoch, start_offset: Offset) -> bool {
        if self.history.needs_assign(epoch, start_offset) {
            assert!(self.history.assign(epoch, start_offset));
            self.version += 1;
        }
        self.is_unwritten()
    }

    /// Whether the file lags the entries in memory.
    pub fn is_unwritten(&self) -> bool {
        debug_assert!(self.written <= self.version);
        self.written != self.version
    }

    /// What to write to catch the file up, if it lags.
    pub fn unwritten(&self) -> Option<UnwrittenEpochs> {
        self.is_unwritten().then(|| UnwrittenEpochs {
            path: self.path.clone(),
            contents: encode(&self.history).into_bytes(),
            version: self.version,
        })
    }

    /// Whether `version` is still the newest: a write of it may replace
    /// the file.
    pub fn is_current(&self, version: u64) -> bool {
        version == self.version
    }

    /// The file now durably holds `version` (renamed into place and its
    /// directory synced).
    pub fn mark_written(&mut self, version: u64) {
        assert!(
            version <= self.version,
            "wrote version {version} of {}",
            self.version
        );
        self.written = self.written.max(version);
    }

    /// Writes the file now if it lags the entries in memory.
    pub fn write_unwritten(&mut self) -> Result<()> {
        if !self.is_unwritten() {
            return Ok(());
        }
        write_atomically(&self.path, encode(&self.history).as_bytes())?;
        self.sync_writes += 1;
        self.written = self.version;
        Ok(())
    }

    /// How many synchronous writes the file has had.
    pub fn sync_writes(&self) -> u64 {
        self.sync_writes
    }

    /// A background write's rename may have replaced a newer file that a
    /// synchronous write put in place meanwhile: the entries are written
    /// again. (Until then the file may lack the newest epoch; opening the
    /// log rebuilds a file that does not know the last batch's epoch.)
    pub fn rewrite(&mut self) {
        self.version += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(epoch: i32) -> LeaderEpoch {
        LeaderEpoch(epoch)
    }

    fn o(offset: i64) -> Offset {
        Offset(offset)
    }

    fn history(pairs: &[(i32, i64)]) -> EpochHistory {
        EpochHistory::from_entries(
            pairs
                .iter()
                .map(|&(epoch, start)| EpochEntry {
                    epoch: e(epoch),
                    start_offset: o(start),
                })
                .collect(),
        )
        .unwrap()
    }

    fn pairs(h: &EpochHistory) -> Vec<(i32, i64)> {
        h.entries()
            .iter()
            .map(|x| (x.epoch.0, x.start_offset.0))
            .collect()
    }

    #[test]
    fn assign_adds_a_newer_epoch_and_ignores_the_current_one() {
        let mut h = EpochHistory::new();
        assert!(h.assign(e(0), o(0)));
        assert!(!h.assign(e(0), o(0)), "same entry again");
        assert!(!h.assign(e(0), o(7)), "later append in the same epoch");
        assert!(h.assign(e(2), o(10)));
        assert!(!h.assign(e(2), o(15)));
        assert_eq!(pairs(&h), vec![(0, 0), (2, 10)]);
    }

    #[test]
    fn assign_replaces_an_epoch_that_got_no_records() {
        // Epoch 3 was assigned at the log end when its leader took over,
        // then epoch 4 took over before any record was written.
        let mut h = history(&[(1, 0), (3, 20)]);
        assert!(h.assign(e(4), o(20)));
        assert_eq!(pairs(&h), vec![(1, 0), (4, 20)]);
    }

    #[test]
    fn assign_of_the_current_epoch_at_an_earlier_offset_moves_it_down() {
        let mut h = history(&[(1, 0), (2, 20)]);
        assert!(h.assign(e(2), o(15)));
        assert_eq!(pairs(&h), vec![(1, 0), (2, 15)]);
    }

    #[test]
    fn assign_of_an_older_epoch_drops_the_conflicting_newer_entries() {
        let mut h = history(&[(1, 0), (3, 10), (5, 20)]);
        assert!(h.assign(e(4), o(30)));
        assert_eq!(pairs(&h), vec![(1, 0), (3, 10), (4, 30)]);
        assert!(h.assign(e(2), o(5)));
        assert_eq!(pairs(&h), vec![(1, 0), (2, 5)]);
    }

    #[test]
    fn end_offset_for_the_latest_epoch_is_the_log_end() {
        let h = history(&[(1, 0), (3, 10)]);
        assert_eq!(
            h.end_offset_for(e(3), o(42)),
            EpochEnd {
                epoch: e(3),
                end_offset: o(42)
            }
        );
    }

    #[test]
    fn end_offset_for_an_older_epoch_is_the_next_epochs_start() {
        let h = history(&[(1, 0), (3, 10), (4, 25)]);
        let end = |epoch| h.end_offset_for(e(epoch), o(40));
        assert_eq!(
            end(1),
            EpochEnd {
                epoch: e(1),
                end_offset: o(10)
            }
        );
        // Epoch 2 never wrote here: the floor is epoch 1, ending where 3 starts.
        assert_eq!(
            end(2),
            EpochEnd {
                epoch: e(1),
                end_offset: o(10)
            }
        );
        assert_eq!(
            end(3),
            EpochEnd {
                epoch: e(3),
                end_offset: o(25)
            }
        );
    }

    #[test]
    fn end_offset_below_the_first_entry_is_the_first_start() {
        let h = history(&[(3, 100), (4, 150)]);
        assert_eq!(
            h.end_offset_for(e(1), o(200)),
            EpochEnd {
                epoch: e(1),
                end_offset: o(100)
            }
        );
    }

    #[test]
    fn end_offset_is_undefined_above_the_latest_for_minus_one_and_when_empty() {
        let h = history(&[(1, 0), (3, 10)]);
        assert_eq!(h.end_offset_for(e(4), o(40)), EpochEnd::UNDEFINED);
        assert_eq!(h.end_offset_for(e(-1), o(40)), EpochEnd::UNDEFINED);
        assert_eq!(
            EpochHistory::new().end_offset_for(e(0), o(0)),
            EpochEnd::UNDEFINED
        );
    }

    #[test]
    fn epoch_at_is_the_newest_entry_at_or_below() {
        let h = history(&[(1, 5), (3, 10)]);
        assert_eq!(h.epoch_at(o(4)), None);
        assert_eq!(h.epoch_at(o(5)), Some(e(1)));
        assert_eq!(h.epoch_at(o(9)), Some(e(1)));
        assert_eq!(h.epoch_at(o(10)), Some(e(3)));
        assert_eq!(h.epoch_at(o(1000)), Some(e(3)));
    }

    #[test]
    fn truncate_from_end_drops_entries_at_or_after_the_offset() {
        let mut h = history(&[(1, 0), (3, 10), (4, 25)]);
        assert!(!h.truncate_from_end(o(26)));
        assert!(h.truncate_from_end(o(25)));
        assert_eq!(pairs(&h), vec![(1, 0), (3, 10)]);
        assert!(h.truncate_from_end(o(5)));
        assert_eq!(pairs(&h), vec![(1, 0)]);
        assert!(h.truncate_from_end(o(0)));
        assert!(h.entries().is_empty());
        assert!(!h.truncate_from_end(o(0)));
    }

    #[test]
    fn truncate_from_start_moves_the_covering_entry_up() {
        let mut h = history(&[(1, 0), (3, 10), (4, 25)]);
        assert!(h.truncate_from_start(o(12)));
        assert_eq!(pairs(&h), vec![(3, 12), (4, 25)]);
        assert!(!h.truncate_from_start(o(12)), "already there");
        assert!(!h.truncate_from_start(o(5)), "below the first entry");
        assert!(h.truncate_from_start(o(25)));
        assert_eq!(pairs(&h), vec![(4, 25)]);
        assert!(h.truncate_from_start(o(90)));
        assert_eq!(pairs(&h), vec![(4, 90)]);
    }

    #[test]
    fn file_format_round_trips_and_matches_kafkas() {
        let h = history(&[(0, 0), (5, 1234)]);
        let text = encode(&h);
        assert_eq!(text, "0\n2\n0 0\n5 1234\n");
        assert_eq!(decode(&text, Path::new("x")).unwrap(), h);
        assert_eq!(
            decode("0\n0\n", Path::new("x")).unwrap(),
            EpochHistory::new()
        );
    }

    #[test]
    fn bad_files_are_corrupt() {
        for text in [
            "",
            "1\n0\n",
            "0\n2\n0 0\n",
            "0\n1\n0 0\n1 5\n",
            "0\n1\nx 0\n",
            "0\n1\n0\n",
            "0\n2\n3 0\n2 5\n",
            "0\n2\n0 5\n1 5\n",
            "0\n1\n-1 0\n",
            "0\n99999999\n",
        ] {
            let err = decode(text, Path::new("x")).unwrap_err();
            assert!(
                matches!(err, StorageError::Corrupt { .. }),
                "{text:?}: {err}"
            );
        }
    }

    #[test]
    fn cache_writes_each_change_and_reads_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = LeaderEpochCache::create(dir.path(), EpochHistory::new()).unwrap();
        c.assign(e(0), o(0)).unwrap();
        c.assign(e(2), o(30)).unwrap();
        c.truncate_from_start(o(10)).unwrap();
        let text = std::fs::read_to_string(dir.path().join(LEADER_EPOCH_FILE)).unwrap();
        assert_eq!(text, "0\n2\n0 10\n2 30\n");
        let read = LeaderEpochCache::read(dir.path()).unwrap();
        assert_eq!(read.history(), c.history());
        c.truncate_from_end(o(30)).unwrap();
        assert_eq!(
            LeaderEpochCache::read(dir.path()).unwrap().latest_epoch(),
            Some(e(0))
        );
    }

    /// A restart takes over every partition again; an assign that
    /// changes nothing must leave the file alone (same inode, same
    /// modification time), not rewrite and sync it.
    #[test]
    fn an_assign_that_changes_nothing_leaves_the_file_alone() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let mut c = LeaderEpochCache::create(dir.path(), history(&[(0, 0), (2, 10)])).unwrap();
        let file = dir.path().join(LEADER_EPOCH_FILE);
        let stamp = |m: std::fs::Metadata| (m.ino(), m.mtime(), m.mtime_nsec());
        let before = stamp(std::fs::metadata(&file).unwrap());
        c.assign(e(2), o(10)).unwrap();
        c.assign(e(2), o(25)).unwrap();
        assert!(!c.assign_unwritten(e(2), o(30)));
        c.write_unwritten().unwrap();
        c.update(|h| h.truncate_from_end(o(40))).unwrap();
        assert_eq!(stamp(std::fs::metadata(&file).unwrap()), before);
        // A change does replace it.
        assert!(c.assign_unwritten(e(3), o(30)));
        c.write_unwritten().unwrap();
        assert_ne!(stamp(std::fs::metadata(&file).unwrap()), before);
        assert!(!c.is_unwritten());
    }

    #[test]
    fn a_failed_write_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let pdir = dir.path().join("gone");
        std::fs::create_dir(&pdir).unwrap();
        let mut c = LeaderEpochCache::create(&pdir, history(&[(0, 0)])).unwrap();
        std::fs::remove_dir_all(&pdir).unwrap();
        assert!(c.assign(e(1), o(5)).is_err());
        assert_eq!(c.latest_epoch(), Some(e(0)));
    }

    /// What the log does to its cache, as the partition drives it.
    #[derive(Clone, Debug)]
    enum Op {
        /// `count` records in the current epoch raised by `bump`.
        Append { bump: i32, count: i64 },
        /// Truncate to a point chosen by `at` within the log.
        TruncateTo { at: u8 },
        /// Delete records below a point chosen by `at`, keeping one.
        DeleteBefore { at: u8 },
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            4 => (0..3i32, 1..6i64).prop_map(|(bump, count)| Op::Append { bump, count }),
            1 => any::<u8>().prop_map(|at| Op::TruncateTo { at }),
            1 => any::<u8>().prop_map(|at| Op::DeleteBefore { at }),
        ]
    }

    /// The entries a log holding `records` (the epoch of each offset from
    /// `log_start`) must have: each epoch and its first offset.
    fn expected(records: &[i32], log_start: i64) -> Vec<(i32, i64)> {
        let mut out: Vec<(i32, i64)> = Vec::new();
        for (i, &epoch) in records.iter().enumerate() {
            if out.last().map(|l| l.0) != Some(epoch) {
                out.push((epoch, log_start + i as i64));
            }
        }
        out
    }

    proptest::proptest! {
        /// Random appends, truncations and deletions against a model log
        /// that remembers every record's epoch: after each step the cache
        /// names exactly the epochs the log holds, where each starts, and
        /// survives its file format.
        #[test]
        fn cache_follows_a_model_log(ops in proptest::collection::vec(op(), 1..60)) {
            let mut h = EpochHistory::new();
            let mut records: Vec<i32> = Vec::new();
            let (mut log_start, mut current) = (0i64, 0i32);
            for op in ops {
                let log_end = log_start + records.len() as i64;
                match op {
                    Op::Append { bump, count } => {
                        current += bump;
                        h.assign(e(current), o(log_end));
                        records.extend(std::iter::repeat_n(current, count as usize));
                    }
                    Op::TruncateTo { at } => {
                        let keep = usize::from(at) % (records.len() + 1);
                        records.truncate(keep);
                        h.truncate_from_end(o(log_start + keep as i64));
                    }
                    Op::DeleteBefore { at } => {
                        if records.is_empty() {
                            continue;
                        }
                        let drop = usize::from(at) % records.len();
                        records.drain(..drop);
                        log_start += drop as i64;
                        h.truncate_from_start(o(log_start));
                    }
                }
                proptest::prop_assert_eq!(pairs(&h), expected(&records, log_start));
                let text = encode(&h);
                proptest::prop_assert_eq!(&decode(&text, Path::new("x")).unwrap(), &h);
            }
        }

        /// Any text, checkpoint-like or not, decodes or is corrupt; it
        /// never panics, and what decodes obeys the ordering rules.
        #[test]
        fn decode_never_panics(
            lines in proptest::collection::vec("(-?[0-9]{1,12}( -?[0-9]{1,20})?|[ -~]{0,12})", 0..8)
        ) {
            let text = lines.join("\n");
            match decode(&text, Path::new("x")) {
                Ok(h) => {
                    let again = decode(&encode(&h), Path::new("x")).unwrap();
                    proptest::prop_assert_eq!(again, h);
                }
                Err(e) => {
                    let corrupt = matches!(e, StorageError::Corrupt { .. });
                    proptest::prop_assert!(corrupt, "{}", e);
                }
            }
        }
    }

    #[test]
    fn missing_file_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        match LeaderEpochCache::read(dir.path()).unwrap_err() {
            StorageError::Io { source, .. } => {
                assert_eq!(source.kind(), std::io::ErrorKind::NotFound)
            }
            other => panic!("{other}"),
        }
    }
}
