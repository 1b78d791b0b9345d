//! One voter of the controller quorum: raft-rs's `RawNode` driven on a
//! glommio task.
//!
//! raft-rs does no I/O of its own. This driver ticks it every
//! [`TICK`], steps in the messages other voters send, and handles each
//! `Ready` the way raft-rs asks: send messages, persist new entries and
//! the hard state (fdatasync, through [`RaftStore`]), then apply what is
//! committed. Applying a committed entry decodes its records into the
//! [`ClusterImage`], keeps them for brokers that fetch the log, and
//! answers the proposal that made it, if it was made here.
//!
//! Once the entries applied since the last snapshot hold
//! `metadata.log.max.record.bytes.between.snapshots` of records, the
//! image is written as a snapshot (the records that rebuild it) and the
//! entries it covers are dropped, here and on disk. A voter that fell
//! behind the snapshot gets it from the leader in place of the entries.
//!
//! Voters are fixed by `controller.quorum.voters`; membership changes are
//! not supported.

use super::raft_store::{LogStorage, RaftStore};
use super::records::{self, ClusterImage, Record};
use futures::channel::{mpsc, oneshot};
use futures::StreamExt;
use raft::eraftpb::{Entry, EntryType, Message, MessageType, Snapshot};
use raft::{RawNode, SnapshotStatus, StateRole, Storage};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// The Raft clock: elections after 20 ticks without a leader (2 s,
/// randomized up to 4 s), heartbeats every 3. Generous, so that a voter
/// starved of CPU for a moment on a busy machine does not start an
/// election.
pub const TICK: Duration = Duration::from_millis(100);
const ELECTION_TICKS: usize = 20;
const HEARTBEAT_TICKS: usize = 3;
/// The shortest election timeout.
const ELECTION_TIMEOUT: Duration =
    Duration::from_millis(TICK.as_millis() as u64 * ELECTION_TICKS as u64);

/// Why a proposal was not committed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    #[error("this voter is not the active controller")]
    NotLeader(Option<u64>),
    #[error("the proposal was lost to a leader change")]
    Dropped,
    #[error("the metadata log's disk has {free} bytes free, less than {PROPOSE_FREE_BYTES_MIN}")]
    NoSpace { free: u64 },
}

/// Free bytes the metadata log's file system must have for a proposal to
/// be taken. A voter stops the process when it cannot persist what Raft
/// accepted (an entry, the hard state), so a change is refused up front
/// on a disk the partitions filled: a few KiB are written per entry (the
/// entry, a 4 KiB block for the new hard state), 1 MiB leaves margin for
/// the proposals already in flight.
pub const PROPOSE_FREE_BYTES_MIN: u64 = 1 << 20;

/// What a voter's driver acts on.
pub enum Input {
    Message(Message),
    Wake,
}

type Waiter = oneshot::Sender<Result<u64, ProposeError>>;

/// What the leader knows of one replica of the metadata log, as Kafka's
/// DescribeQuorum reports it. Raft indexes count entries from 1, so the
/// index of a replica's last entry is its log end offset in Kafka's
/// terms (the offset after its last record), and the commit index is the
/// high watermark.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReplicaProgress {
    pub id: i32,
    /// Unknown (-1) for an observer the leader has not heard from.
    pub log_end_offset: i64,
    /// Wall-clock ms of the replica's last fetch (for a voter, its last
    /// answer to the leader's appends or heartbeats) in this term; -1
    /// for none.
    pub last_fetch_ms: i64,
    /// Wall-clock ms when the replica last had everything the leader
    /// had; -1 for never in this term.
    pub last_caught_up_ms: i64,
}

/// The quorum as its leader sees it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QuorumState {
    pub leader: i32,
    /// The Raft term: Kafka's leader epoch of the metadata log.
    pub term: u64,
    pub high_watermark: i64,
    pub voters: Vec<ReplicaProgress>,
}

/// Milliseconds since the Unix epoch: DescribeQuorum's timestamps are
/// the leader's wall clock.
pub fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// When the leader last heard from a peer voter, and when that peer last
/// had the whole log, both in the leader's `term`.
#[derive(Clone, Copy, Debug)]
struct Contact {
    term: u64,
    fetch_ms: i64,
    caught_up_ms: i64,
}

pub struct Quorum {
    pub id: u64,
    raw: RefCell<RawNode<LogStorage>>,
    store: RefCell<RaftStore>,
    inbox: mpsc::UnboundedSender<Input>,
    /// Messages for other voters, by voter id.
    outboxes: HashMap<u64, mpsc::UnboundedSender<Message>>,
    /// Proposals made here, by log index: (term, who waits).
    pending: RefCell<BTreeMap<u64, (u64, Waiter)>>,
    /// Every committed entry's records since the last snapshot, for
    /// brokers replaying the log.
    committed: RefCell<Vec<(u64, Vec<Record>)>>,
    /// Index of the last snapshot: a broker that has applied less is
    /// sent the image instead of entries.
    log_start: Cell<u64>,
    /// Record bytes applied since the last snapshot, and how many make
    /// the next one.
    since_snapshot: Cell<u64>,
    snapshot_bytes: u64,
    image: RefCell<ClusterImage>,
    /// Woken whenever entries are applied.
    appliers: RefCell<Vec<oneshot::Sender<()>>>,
    leader: Cell<bool>,
    /// Index of the first entry of this voter's term as leader: its image
    /// is current once it has applied that far.
    term_start: Cell<u64>,
    /// When the driver last ran: a voter that did not run for an election
    /// timeout (frozen, starved) cannot vouch that it still leads.
    driven: Cell<Instant>,
    /// What this voter, as leader, last heard from each peer voter.
    contacts: RefCell<HashMap<u64, Contact>>,
    /// The data directory, whose free space proposals check.
    data_dir: std::path::PathBuf,
    /// Whether the last proposal found too little free space.
    short_of_space: Cell<bool>,
}

fn slog_discard() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}

impl Quorum {
    /// Opens the log in `data_dir` and makes the voter `id` of `voters`,
    /// snapshotting every `snapshot_bytes` of applied records.
    /// `outboxes` carry messages to the other voters; the returned
    /// receiver feeds [`Quorum::run`].
    pub fn open(
        id: u64,
        voters: Vec<u64>,
        data_dir: &Path,
        snapshot_bytes: u64,
        outboxes: HashMap<u64, mpsc::UnboundedSender<Message>>,
    ) -> crate::storage::Result<(Rc<Quorum>, mpsc::UnboundedReceiver<Input>)> {
        let (store, storage) = RaftStore::open(data_dir, voters.clone())?;
        let snapshot = storage
            .snapshot(0, id)
            .expect("the last snapshot is at hand");
        let image =
            image_of(&snapshot).map_err(|reason| crate::storage::StorageError::Corrupt {
                path: data_dir.join(super::raft_store::DIR),
                position: 0,
                reason,
            })?;
        let config = raft::Config {
            id,
            election_tick: ELECTION_TICKS,
            heartbeat_tick: HEARTBEAT_TICKS,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            check_quorum: true,
            pre_vote: true,
            ..Default::default()
        };
        let raw = RawNode::new(&config, storage, &slog_discard()).map_err(|e| {
            crate::storage::StorageError::Corrupt {
                path: data_dir.join(super::raft_store::DIR),
                position: 0,
                reason: format!("raft: {e}"),
            }
        })?;
        let (tx, rx) = mpsc::unbounded();
        let q = Rc::new(Quorum {
            id,
            raw: RefCell::new(raw),
            store: RefCell::new(store),
            inbox: tx,
            outboxes,
            pending: RefCell::new(BTreeMap::new()),
            committed: RefCell::new(Vec::new()),
            log_start: Cell::new(image.applied),
            since_snapshot: Cell::new(0),
            snapshot_bytes: snapshot_bytes.max(1),
            image: RefCell::new(image),
            appliers: RefCell::new(Vec::new()),
            leader: Cell::new(false),
            term_start: Cell::new(u64::MAX),
            driven: Cell::new(Instant::now()),
            contacts: RefCell::new(HashMap::new()),
            data_dir: data_dir.to_path_buf(),
            short_of_space: Cell::new(false),
        });
        // A lone voter need not wait out an election timeout.
        if voters == [id] {
            let _ = q.raw.borrow_mut().campaign();
        }
        Ok((q, rx))
    }

    /// Hands a message from another voter to the driver.
    pub fn deliver(&self, msg: Message) {
        let _ = self.inbox.unbounded_send(Input::Message(msg));
    }

    /// Whether this voter leads, as far as it can tell: raft-rs says so,
    /// and its driver has run within an election timeout. A leader that
    /// was frozen longer may have been replaced; it hears of the new term
    /// only when it processes what waited, and steps down at its next
    /// turn (see [`Quorum::run`]).
    pub fn is_leader(&self) -> bool {
        self.leader.get() && self.driven.get().elapsed() < ELECTION_TIMEOUT
    }

    /// Whether this voter leads with an image that holds everything
    /// committed before its term (raft-rs commits the term's first entry
    /// only after all earlier ones): only then may it decide anything.
    pub fn is_current(&self) -> bool {
        self.is_leader() && self.image.borrow().applied >= self.term_start.get()
    }

    /// The current Raft term.
    pub fn term(&self) -> u64 {
        self.raw.borrow().raft.term
    }

    /// The leader this voter knows of, if any.
    pub fn leader_id(&self) -> Option<u64> {
        let id = self.raw.borrow().raft.leader_id;
        (id != raft::INVALID_ID).then_some(id)
    }

    /// The image as of the last applied entry.
    pub fn image(&self) -> std::cell::Ref<'_, ClusterImage> {
        self.image.borrow()
    }

    /// Index of the last committed entry.
    pub fn committed_index(&self) -> u64 {
        self.raw.borrow().raft.raft_log.committed
    }

    /// The metadata log kept since its last snapshot: entries, and bytes
    /// of the entries file on disk.
    pub fn log_size(&self) -> (u64, u64) {
        let entries = self.raw.borrow().store().entries_after_snapshot().len() as u64;
        (entries, self.store.borrow().entries_len())
    }

    /// The voters' progress, if this voter leads: Raft's matched index of
    /// each (this voter's own last index for itself) and when each last
    /// answered and was last caught up in this term (the leader: now).
    /// Hands leadership to the most caught-up other voter (Raft's
    /// leadership transfer), so that a leader about to stop costs the
    /// quorum a round trip instead of an election timeout. False when
    /// this voter does not lead or has nobody to hand it to.
    pub fn transfer_leadership(&self) -> bool {
        if !self.is_leader() {
            return false;
        }
        let target = {
            let raw = self.raw.borrow();
            raw.raft
                .prs()
                .iter()
                .filter(|(id, _)| **id != self.id)
                .max_by_key(|(_, p)| p.matched)
                .map(|(id, _)| *id)
        };
        let Some(target) = target else {
            return false;
        };
        tracing::info!(to = target, "handing metadata quorum leadership over");
        self.raw.borrow_mut().transfer_leader(target);
        self.on_ready();
        true
    }

    pub fn describe(&self) -> Option<QuorumState> {
        if !self.is_leader() {
            return None;
        }
        let raw = self.raw.borrow();
        let term = raw.raft.term;
        let last = raw.raft.raft_log.last_index();
        let now = wall_ms();
        let contacts = self.contacts.borrow();
        let mut voters: Vec<ReplicaProgress> = raw
            .raft
            .prs()
            .iter()
            .map(|(id, progress)| {
                let (matched, fetch_ms, caught_up_ms) = if *id == self.id {
                    (last, now, now)
                } else {
                    let c = contacts.get(id).filter(|c| c.term == term);
                    (
                        progress.matched,
                        c.map_or(-1, |c| c.fetch_ms),
                        c.map_or(-1, |c| c.caught_up_ms),
                    )
                };
                ReplicaProgress {
                    id: *id as i32,
                    log_end_offset: matched as i64,
                    last_fetch_ms: fetch_ms,
                    last_caught_up_ms: caught_up_ms,
                }
            })
            .collect();
        voters.sort_by_key(|v| v.id);
        Some(QuorumState {
            leader: self.id as i32,
            term,
            high_watermark: raw.raft.raft_log.committed as i64,
            voters,
        })
    }

    /// Notes, as leader, a peer's answer to an append or heartbeat: it
    /// fetched now, and it is caught up if it matches the whole log.
    fn note_contact(&self, from: u64) {
        let raw = self.raw.borrow();
        if raw.raft.state != StateRole::Leader {
            return;
        }
        let Some(progress) = raw.raft.prs().get(from) else {
            return;
        };
        let term = raw.raft.term;
        let now = wall_ms();
        let mut contacts = self.contacts.borrow_mut();
        let c = contacts.entry(from).or_insert(Contact {
            term,
            fetch_ms: -1,
            caught_up_ms: -1,
        });
        if c.term != term {
            *c = Contact {
                term,
                fetch_ms: -1,
                caught_up_ms: -1,
            };
        }
        c.fetch_ms = now;
        if progress.matched >= raw.raft.raft_log.last_index() {
            c.caught_up_ms = now;
        }
    }

    /// Proposes one entry of records; resolves with its index once it is
    /// committed and applied here.
    pub async fn propose(&self, records: Vec<Record>) -> Result<u64, ProposeError> {
        self.check_space()?;
        let rx = {
            let mut raw = self.raw.borrow_mut();
            if raw.raft.state != StateRole::Leader {
                let leader = raw.raft.leader_id;
                return Err(ProposeError::NotLeader(
                    (leader != raft::INVALID_ID).then_some(leader),
                ));
            }
            let before = raw.raft.raft_log.last_index();
            if raw.propose(vec![], records::encode(&records)).is_err() {
                return Err(ProposeError::Dropped);
            }
            let index = raw.raft.raft_log.last_index();
            if index == before {
                return Err(ProposeError::Dropped);
            }
            let (tx, rx) = oneshot::channel();
            self.pending.borrow_mut().insert(index, (raw.raft.term, tx));
            rx
        };
        let _ = self.inbox.unbounded_send(Input::Wake);
        rx.await.unwrap_or(Err(ProposeError::Dropped))
    }

    /// Refuses a proposal while the data directory's file system has less
    /// than [`PROPOSE_FREE_BYTES_MIN`] free; says so once per such run.
    fn check_space(&self) -> Result<(), ProposeError> {
        let free = match crate::storage::reserve::free_bytes(&self.data_dir) {
            Ok(free) => free,
            // Not knowing is no reason to refuse: the write will tell.
            Err(_) => return Ok(()),
        };
        let short = free < PROPOSE_FREE_BYTES_MIN;
        if short != self.short_of_space.replace(short) {
            if short {
                tracing::error!(dir = %self.data_dir.display(), free_bytes = free,
                    "the disk is full: metadata changes (topic creation, ...) are refused until space is freed");
            } else {
                tracing::info!(dir = %self.data_dir.display(), free_bytes = free, "metadata changes are taken again");
            }
        }
        match short {
            true => Err(ProposeError::NoSpace { free }),
            false => Ok(()),
        }
    }

    /// Index of the last snapshot: entries up to it are gone.
    pub fn log_start(&self) -> u64 {
        self.log_start.get()
    }

    /// Committed entries after `after`, at most `max`; only those after
    /// [`Quorum::log_start`] are still here.
    pub fn entries_after(&self, after: u64, max: usize) -> Vec<(u64, Vec<Record>)> {
        let committed = self.committed.borrow();
        let start = committed.partition_point(|(i, _)| *i <= after);
        committed[start..].iter().take(max).cloned().collect()
    }

    /// Waits until an entry after `after` is applied, or `wait` passes.
    pub async fn wait_applied_after(&self, after: u64, wait: Duration) {
        if self.image.borrow().applied > after {
            return;
        }
        let (tx, rx) = oneshot::channel();
        self.appliers.borrow_mut().push(tx);
        let _ = glommio::timer::timeout(wait, async {
            let _ = rx.await;
            Ok(())
        })
        .await;
    }

    /// Drives the node until `stop` says so.
    pub async fn run(
        self: Rc<Self>,
        mut inbox: mpsc::UnboundedReceiver<Input>,
        stop: impl Fn() -> bool,
    ) {
        let mut next_tick = Instant::now() + TICK;
        self.on_ready();
        while !stop() {
            let away = self.driven.replace(Instant::now()).elapsed();
            if away >= ELECTION_TIMEOUT && self.leader.get() {
                // Frozen past an election timeout: another voter may lead
                // in a newer term. Step down rather than act on an old
                // view; pre-vote elects this voter again if nobody else.
                tracing::warn!(
                    node = self.id,
                    away_ms = away.as_millis() as u64,
                    "controller was not running for an election timeout; stepping down"
                );
                let term = self.raw.borrow().raft.term;
                self.raw
                    .borrow_mut()
                    .raft
                    .become_follower(term, raft::INVALID_ID);
                // At once, before any other task asks whether it leads.
                self.on_ready();
            }
            let wait = next_tick.saturating_duration_since(Instant::now());
            let input = glommio::timer::timeout(wait, async { Ok(inbox.next().await) }).await;
            match input {
                Ok(Some(Input::Message(m))) => {
                    let from = m.from;
                    let answer = !m.reject
                        && matches!(
                            m.get_msg_type(),
                            MessageType::MsgAppendResponse | MessageType::MsgHeartbeatResponse
                        );
                    // Stepped apart from the `if`: a temporary borrow in
                    // its condition would last into the branches.
                    let stepped = self.raw.borrow_mut().step(m);
                    match stepped {
                        Err(e) => tracing::debug!(error = %e, "raft message refused"),
                        Ok(()) if answer => self.note_contact(from),
                        Ok(()) => {}
                    }
                }
                Ok(Some(Input::Wake)) => {}
                Ok(None) => return,
                Err(_) => {}
            }
            if Instant::now() >= next_tick {
                self.raw.borrow_mut().tick();
                next_tick += TICK;
                if next_tick < Instant::now() {
                    next_tick = Instant::now() + TICK;
                }
            }
            self.on_ready();
        }
    }

    /// Hands messages to the voters they are for; returns who was sent
    /// a snapshot.
    fn send(&self, msgs: Vec<Message>) -> Vec<u64> {
        let mut snapshots = Vec::new();
        for m in msgs {
            if m.get_msg_type() == MessageType::MsgSnapshot {
                snapshots.push(m.to);
            }
            if let Some(out) = self.outboxes.get(&m.to) {
                let _ = out.unbounded_send(m);
            }
        }
        snapshots
    }

    fn on_ready(&self) {
        let mut raw = self.raw.borrow_mut();
        if raw.has_ready() {
            let mut ready = raw.ready();
            let mut snapshots = self.send(ready.take_messages());
            if !ready.snapshot().is_empty() {
                self.install_snapshot(&mut raw, ready.snapshot().clone());
            }
            self.apply(ready.take_committed_entries());
            if !ready.entries().is_empty() {
                if let Err(e) = self.store.borrow_mut().append(ready.entries()) {
                    // Raft must not count entries it cannot keep.
                    tracing::error!(error = %e, "persisting the metadata log failed; stopping");
                    std::process::abort();
                }
                raw.mut_store().append(ready.entries());
            }
            if let Some(hs) = ready.hs() {
                self.persist_hardstate(hs);
                raw.mut_store().set_hard_state(hs.clone());
            }
            snapshots.extend(self.send(ready.take_persisted_messages()));
            let mut light = raw.advance(ready);
            if let Some(commit) = light.commit_index() {
                let mut hs = raw.store().hard_state().clone();
                hs.commit = commit;
                self.persist_hardstate(&hs);
                raw.mut_store().set_hard_state(hs);
            }
            snapshots.extend(self.send(light.take_messages()));
            self.apply(light.take_committed_entries());
            raw.advance_apply();
            self.maybe_snapshot(&mut raw);
            // Sent is as good as delivered: should it be lost, the voter
            // refuses the next append and the leader sends it again.
            for to in snapshots {
                raw.report_snapshot(to, SnapshotStatus::Finish);
            }
        }
        let leader = raw.raft.state == StateRole::Leader;
        if leader && !self.leader.get() {
            // The term's first entry, appended when it won the election.
            self.term_start.set(raw.raft.raft_log.last_index());
        }
        if leader != self.leader.get() {
            tracing::info!(
                node = self.id,
                term = raw.raft.term,
                leader,
                "controller role changed"
            );
            self.leader.set(leader);
        }
        if !leader {
            for (_, (_, w)) in std::mem::take(&mut *self.pending.borrow_mut()) {
                let leader = raw.raft.leader_id;
                let _ = w.send(Err(ProposeError::NotLeader(
                    (leader != raft::INVALID_ID).then_some(leader),
                )));
            }
        }
    }

    /// Snapshots the image once enough has been applied since the last
    /// snapshot, dropping the entries it covers.
    fn maybe_snapshot(&self, raw: &mut RawNode<LogStorage>) {
        if self.since_snapshot.get() < self.snapshot_bytes {
            return;
        }
        let image = self.image.borrow();
        let index = image.applied;
        let store = raw.mut_store();
        let Ok(term) = store.term(index) else {
            return;
        };
        if index <= store.snapshot_index() {
            return;
        }
        let mut snapshot = Snapshot::default();
        let meta = snapshot.mut_metadata();
        meta.index = index;
        meta.term = term;
        meta.set_conf_state(store.initial_state().expect("in memory").conf_state);
        snapshot.data = records::encode(&image.to_records()).into();
        store.install(snapshot.clone());
        // A snapshot that is not written leaves the full log on disk,
        // which reads back to the same image.
        if let Err(e) = self
            .store
            .borrow_mut()
            .save_snapshot(&snapshot, store.entries_after_snapshot())
        {
            tracing::warn!(error = %e, index, "writing a metadata snapshot failed");
        }
        self.since_snapshot.set(0);
        self.forget_through(index);
        tracing::debug!(node = self.id, index, "metadata snapshot taken");
    }

    /// Takes the snapshot the leader sent in place of entries this voter
    /// was missing: it replaces the log and the image.
    fn install_snapshot(&self, raw: &mut RawNode<LogStorage>, snapshot: Snapshot) {
        let image = match image_of(&snapshot) {
            Ok(image) => image,
            Err(reason) => {
                tracing::error!(%reason, "undecodable metadata snapshot from the leader; stopping");
                std::process::abort();
            }
        };
        let store = raw.mut_store();
        store.install(snapshot.clone());
        if let Err(e) = self
            .store
            .borrow_mut()
            .save_snapshot(&snapshot, store.entries_after_snapshot())
        {
            // Raft counts it as kept.
            tracing::error!(error = %e, "persisting a metadata snapshot failed; stopping");
            std::process::abort();
        }
        tracing::info!(
            node = self.id,
            index = image.applied,
            "metadata snapshot installed"
        );
        *self.image.borrow_mut() = image;
        self.since_snapshot.set(0);
        self.forget_through(snapshot.get_metadata().index);
        for w in std::mem::take(&mut *self.appliers.borrow_mut()) {
            let _ = w.send(());
        }
    }

    /// Drops the kept records of entries a snapshot now covers.
    fn forget_through(&self, index: u64) {
        self.committed.borrow_mut().retain(|(i, _)| *i > index);
        self.log_start.set(index);
    }

    fn persist_hardstate(&self, hs: &raft::eraftpb::HardState) {
        if let Err(e) = self.store.borrow().set_hardstate(hs) {
            tracing::error!(error = %e, "persisting the raft hard state failed; stopping");
            std::process::abort();
        }
    }

    fn apply(&self, entries: Vec<Entry>) {
        if entries.is_empty() {
            return;
        }
        for e in entries {
            let records = if e.get_entry_type() == EntryType::EntryNormal && !e.data.is_empty() {
                match records::decode(&e.data) {
                    Ok(r) => r,
                    Err(err) => {
                        tracing::error!(index = e.index, error = %err, "undecodable metadata entry skipped");
                        Vec::new()
                    }
                }
            } else {
                Vec::new()
            };
            self.image.borrow_mut().apply(e.index, &records);
            self.since_snapshot
                .set(self.since_snapshot.get() + e.data.len() as u64);
            if !records.is_empty() {
                self.committed.borrow_mut().push((e.index, records));
            }
            let mut pending = self.pending.borrow_mut();
            while let Some(entry) = pending.first_entry() {
                if *entry.key() > e.index {
                    break;
                }
                let (index, (term, w)) = entry.remove_entry();
                let result = if index == e.index && term == e.term {
                    Ok(index)
                } else {
                    Err(ProposeError::Dropped)
                };
                let _ = w.send(result);
            }
        }
        for w in std::mem::take(&mut *self.appliers.borrow_mut()) {
            let _ = w.send(());
        }
    }
}

/// The image a snapshot holds (empty for none).
fn image_of(snapshot: &Snapshot) -> Result<ClusterImage, String> {
    let mut image = ClusterImage::default();
    let index = snapshot.get_metadata().index;
    if index > 0 {
        image.apply(index, &records::decode(&snapshot.data)?);
    }
    Ok(image)
}
