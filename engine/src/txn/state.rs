//! One transactional id's transaction as a pure state machine: what each
//! request may do in each state, the metadata to store for it, and the
//! error Kafka answers otherwise. No I/O: the coordinator shell stores
//! the metadata a step returns, then makes it current with
//! [`TxnMeta::stored`].
//!
//! ```text
//!            InitProducerId        AddPartitionsToTxn
//!   (none) ───────────────▶ Empty ─────────────────▶ Ongoing
//!                             ▲                      │ EndTxn / timeout
//!                             │ InitProducerId       ▼
//!                 CompleteCommit / CompleteAbort ◀── PrepareCommit / PrepareAbort
//!                         (markers written)             (stored, then markers)
//! ```
//!
//! `PrepareEpochFence` is the step an InitProducerId of a new instance or
//! the timeout timer takes on an Ongoing transaction: the epoch is bumped
//! (fencing the old instance) and the transaction aborted. It is never
//! stored: what is written is PrepareAbort under the new epoch. `Dead`
//! marks an id being removed after `transactional.id.expiration.ms`.
//!
//! While a step is being stored (or its markers written) the transaction
//! has a pending state; any other request then gets
//! CONCURRENT_TRANSACTIONS, which clients retry.

use sluice_protocol::ErrorCode;
use std::collections::BTreeSet;

/// A transaction's state, numbered as Kafka stores it in
/// `__transaction_state` (`TransactionState` ids).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TxnState {
    Empty = 0,
    Ongoing = 1,
    PrepareCommit = 2,
    PrepareAbort = 3,
    CompleteCommit = 4,
    CompleteAbort = 5,
    Dead = 6,
    PrepareEpochFence = 7,
}

/// Every state, for parsing and listing.
pub const STATES: [TxnState; 8] = [
    TxnState::Empty,
    TxnState::Ongoing,
    TxnState::PrepareCommit,
    TxnState::PrepareAbort,
    TxnState::CompleteCommit,
    TxnState::CompleteAbort,
    TxnState::Dead,
    TxnState::PrepareEpochFence,
];

impl TxnState {
    /// The stored status byte.
    pub fn id(self) -> i8 {
        self as i8
    }

    pub fn from_id(id: i8) -> Option<TxnState> {
        STATES.iter().copied().find(|s| s.id() == id)
    }

    /// The name DescribeTransactions and ListTransactions use.
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
            TxnState::Dead => "Dead",
            TxnState::PrepareEpochFence => "PrepareEpochFence",
        }
    }

    pub fn from_name(name: &str) -> Option<TxnState> {
        STATES.iter().copied().find(|s| s.name() == name)
    }

    /// Whether markers are (to be) written: the transaction's outcome is
    /// decided and stored.
    pub fn is_prepared(self) -> bool {
        matches!(self, TxnState::PrepareCommit | TxnState::PrepareAbort)
    }

    /// Whether no transaction is open: a new one may start.
    fn is_idle(self) -> bool {
        matches!(
            self,
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
        )
    }
}

/// The highest epoch handed out; at it, a bump takes a new producer id
/// instead (Kafka keeps `Short.MaxValue` itself free).
pub const EPOCH_MAX: i16 = i16::MAX - 1;

/// A partition: topic and index.
pub type TopicPartition = (String, i32);

/// What the coordinator keeps of one transactional id, and stores.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnMeta {
    pub transactional_id: String,
    pub producer_id: i64,
    /// The producer id before the last one was replaced (epoch
    /// exhaustion), so a retried InitProducerId is recognised; -1 if
    /// none.
    pub last_producer_id: i64,
    pub epoch: i16,
    /// The epoch before the last bump, -1 if none (a KIP-360 retry).
    pub last_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    pub partitions: BTreeSet<TopicPartition>,
    /// When the open transaction started, -1 if none.
    pub start_ms: i64,
    pub last_update_ms: i64,
    /// A step being stored or completed; not stored itself.
    pub pending: Option<TxnState>,
}

/// The producer id and epoch a request names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerRef {
    pub producer_id: i64,
    pub epoch: i16,
}

/// What an InitProducerId asks for besides its transactional id.
#[derive(Clone, Copy, Debug)]
pub struct InitRequest {
    pub timeout_ms: i32,
    /// KIP-360: the id and epoch the producer has (-1, -1 if none).
    pub current: ProducerRef,
}

/// What to do for an InitProducerId.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InitStep {
    /// A new producer id is needed first: call [`init_with_new_id`].
    NewProducerId,
    /// Store this (Empty under the next epoch), then answer with its id
    /// and epoch.
    Store(TxnMeta),
    /// The old instance's transaction is open: store this (PrepareAbort
    /// under a bumped epoch), write its markers, complete it, and answer
    /// CONCURRENT_TRANSACTIONS meanwhile; the client retries.
    FenceAndAbort(TxnMeta),
    /// Answer with this id and epoch, storing nothing (a retry that
    /// already got them).
    Answer(ProducerRef),
}

/// What to do for an EndTxn.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndStep {
    /// Store this (PrepareCommit/PrepareAbort), answer, then write the
    /// markers and complete.
    Prepare(TxnMeta),
    /// Already done (a retry): answer NONE.
    Done,
}

/// Checks a transaction timeout against `transaction.max.timeout.ms`.
pub fn check_timeout(timeout_ms: i32, max_timeout_ms: i64) -> Result<(), ErrorCode> {
    if timeout_ms <= 0 || i64::from(timeout_ms) > max_timeout_ms {
        return Err(ErrorCode::InvalidTransactionTimeout);
    }
    Ok(())
}

/// A new transactional id, or one whose epochs ran out, under producer
/// id `producer_id`.
pub fn init_with_new_id(
    id: &str,
    old: Option<&TxnMeta>,
    producer_id: i64,
    timeout_ms: i32,
    now: i64,
) -> TxnMeta {
    TxnMeta {
        transactional_id: id.to_string(),
        producer_id,
        last_producer_id: old.map_or(-1, |m| m.producer_id),
        epoch: 0,
        last_epoch: -1,
        timeout_ms,
        state: TxnState::Empty,
        partitions: BTreeSet::new(),
        start_ms: -1,
        last_update_ms: now,
        pending: None,
    }
}

impl TxnMeta {
    /// The metadata after `step` has been stored: it becomes current.
    pub fn stored(mut step: TxnMeta) -> TxnMeta {
        step.pending = None;
        step
    }

    fn next(&self, state: TxnState, now: i64) -> TxnMeta {
        let mut m = self.clone();
        m.state = state;
        m.last_update_ms = now;
        m.pending = None;
        m
    }

    /// Checks the producer id and epoch a request names, then that no
    /// step is under way.
    fn check_producer(&self, p: ProducerRef) -> Result<(), ErrorCode> {
        if p.producer_id != self.producer_id {
            return Err(ErrorCode::InvalidProducerIdMapping);
        }
        if p.epoch != self.epoch {
            return Err(ErrorCode::ProducerFenced);
        }
        if self.pending.is_some() {
            return Err(ErrorCode::ConcurrentTransactions);
        }
        Ok(())
    }

    /// InitProducerId on an existing id.
    pub fn init(&self, req: InitRequest, now: i64) -> Result<InitStep, ErrorCode> {
        if self.pending.is_some() {
            return Err(ErrorCode::ConcurrentTransactions);
        }
        if self.state == TxnState::Dead {
            return Ok(InitStep::NewProducerId);
        }
        if req.current.producer_id >= 0 {
            let retried = (req.current.producer_id == self.producer_id
                && self.epoch > 0
                && req.current.epoch == self.last_epoch)
                || (req.current.producer_id == self.last_producer_id && self.epoch == 0);
            let is_current =
                req.current.producer_id == self.producer_id && req.current.epoch == self.epoch;
            if retried && self.state.is_idle() {
                // The bump went through but its answer was lost.
                return Ok(InitStep::Answer(ProducerRef {
                    producer_id: self.producer_id,
                    epoch: self.epoch,
                }));
            }
            if !is_current && !retried {
                return Err(ErrorCode::ProducerFenced);
            }
        }
        match self.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort | TxnState::PrepareEpochFence => {
                Err(ErrorCode::ConcurrentTransactions)
            }
            TxnState::Ongoing => Ok(InitStep::FenceAndAbort(self.fence(now))),
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
                if self.epoch >= EPOCH_MAX {
                    return Ok(InitStep::NewProducerId);
                }
                let mut m = self.next(TxnState::Empty, now);
                m.last_epoch = self.epoch;
                m.epoch = self.epoch + 1;
                m.last_producer_id = -1;
                m.timeout_ms = req.timeout_ms;
                m.partitions.clear();
                m.start_ms = -1;
                Ok(InitStep::Store(m))
            }
            TxnState::Dead => Ok(InitStep::NewProducerId),
        }
    }

    /// The open transaction aborted under a bumped epoch, so the instance
    /// that opened it is fenced (a new instance, or a timeout). At the
    /// last epoch it is not bumped: the next InitProducerId takes a new
    /// producer id.
    pub fn fence(&self, now: i64) -> TxnMeta {
        assert_eq!(self.state, TxnState::Ongoing);
        let mut m = self.next(TxnState::PrepareAbort, now);
        if self.epoch < EPOCH_MAX {
            m.last_epoch = self.epoch;
            m.epoch = self.epoch + 1;
        }
        m
    }

    /// AddPartitionsToTxn (and AddOffsetsToTxn's one partition): the
    /// metadata to store, or None if every partition is already in.
    pub fn add_partitions(
        &self,
        p: ProducerRef,
        partitions: &[TopicPartition],
        now: i64,
    ) -> Result<Option<TxnMeta>, ErrorCode> {
        self.check_producer(p)?;
        match self.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort => {
                Err(ErrorCode::ConcurrentTransactions)
            }
            TxnState::Dead | TxnState::PrepareEpochFence => Err(ErrorCode::InvalidTxnState),
            TxnState::Ongoing if partitions.iter().all(|tp| self.partitions.contains(tp)) => {
                Ok(None)
            }
            TxnState::Ongoing
            | TxnState::Empty
            | TxnState::CompleteCommit
            | TxnState::CompleteAbort => {
                let mut m = self.next(TxnState::Ongoing, now);
                if self.state != TxnState::Ongoing {
                    m.partitions.clear();
                    m.start_ms = now;
                }
                m.partitions.extend(partitions.iter().cloned());
                Ok(Some(m))
            }
        }
    }

    /// AddPartitionsToTxn v4's verify-only form (KIP-890 part 1): for
    /// each partition, NONE when it is part of the ongoing transaction of
    /// this producer id and epoch, else TRANSACTION_ABORTABLE (the handler
    /// answers INVALID_TXN_STATE to versions that predate it). Nothing is
    /// added. The partitions of a transaction being prepared are about to
    /// get their markers: CONCURRENT_TRANSACTIONS for all, retried.
    pub fn verify_partitions(
        &self,
        p: ProducerRef,
        partitions: &[TopicPartition],
    ) -> Result<Vec<(TopicPartition, ErrorCode)>, ErrorCode> {
        if p.producer_id != self.producer_id {
            return Err(ErrorCode::InvalidProducerIdMapping);
        }
        if p.epoch != self.epoch {
            return Err(ErrorCode::ProducerFenced);
        }
        if self.state.is_prepared() {
            return Err(ErrorCode::ConcurrentTransactions);
        }
        let open = self.state == TxnState::Ongoing;
        Ok(partitions
            .iter()
            .map(|tp| match open && self.partitions.contains(tp) {
                true => (tp.clone(), ErrorCode::None),
                false => (tp.clone(), ErrorCode::TransactionAbortable),
            })
            .collect())
    }

    /// EndTxn.
    pub fn end(&self, p: ProducerRef, commit: bool, now: i64) -> Result<EndStep, ErrorCode> {
        self.check_producer(p)?;
        use TxnState::*;
        match (self.state, commit) {
            (Ongoing, true) => Ok(EndStep::Prepare(self.next(PrepareCommit, now))),
            (Ongoing, false) => Ok(EndStep::Prepare(self.next(PrepareAbort, now))),
            (CompleteCommit, true) | (CompleteAbort, false) => Ok(EndStep::Done),
            (PrepareCommit, true) | (PrepareAbort, false) => Err(ErrorCode::ConcurrentTransactions),
            _ => Err(ErrorCode::InvalidTxnState),
        }
    }

    /// The transaction once its markers are written everywhere.
    pub fn complete(&self, now: i64) -> TxnMeta {
        assert!(self.state.is_prepared(), "{:?}", self.state);
        let state = match self.state {
            TxnState::PrepareCommit => TxnState::CompleteCommit,
            _ => TxnState::CompleteAbort,
        };
        let mut m = self.next(state, now);
        m.partitions.clear();
        m
    }

    /// Whether the open transaction has outlived its timeout.
    pub fn timed_out(&self, now: i64) -> bool {
        self.state == TxnState::Ongoing
            && self.pending.is_none()
            && now > self.start_ms + i64::from(self.timeout_ms)
    }

    /// Whether the id has been idle longer than `expiration_ms` and may
    /// be removed.
    pub fn expired(&self, now: i64, expiration_ms: i64) -> bool {
        self.state.is_idle() && self.pending.is_none() && now > self.last_update_ms + expiration_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_000_000;

    fn meta(state: TxnState) -> TxnMeta {
        let mut m = init_with_new_id("t", None, 7, 60_000, NOW);
        m.state = state;
        m.epoch = 3;
        m.last_epoch = 2;
        if state == TxnState::Ongoing || state.is_prepared() {
            m.partitions.insert(("a".to_string(), 0));
            m.start_ms = NOW;
        }
        m
    }

    fn me() -> ProducerRef {
        ProducerRef {
            producer_id: 7,
            epoch: 3,
        }
    }

    fn init(m: &TxnMeta, current: ProducerRef) -> Result<InitStep, ErrorCode> {
        m.init(
            InitRequest {
                timeout_ms: 30_000,
                current,
            },
            NOW + 1,
        )
    }

    const NONE: ProducerRef = ProducerRef {
        producer_id: -1,
        epoch: -1,
    };

    #[test]
    fn states_round_trip_their_ids_and_names() {
        for s in STATES {
            assert_eq!(TxnState::from_id(s.id()), Some(s));
            assert_eq!(TxnState::from_name(s.name()), Some(s));
        }
        assert_eq!(TxnState::from_id(8), None);
    }

    #[test]
    fn a_timeout_above_the_maximum_is_refused() {
        assert_eq!(check_timeout(60_000, 900_000), Ok(()));
        assert_eq!(
            check_timeout(900_001, 900_000),
            Err(ErrorCode::InvalidTransactionTimeout)
        );
        assert_eq!(
            check_timeout(0, 900_000),
            Err(ErrorCode::InvalidTransactionTimeout)
        );
    }

    #[test]
    fn init_on_an_idle_id_bumps_the_epoch() {
        for s in [
            TxnState::Empty,
            TxnState::CompleteCommit,
            TxnState::CompleteAbort,
        ] {
            let Ok(InitStep::Store(m)) = init(&meta(s), NONE) else {
                panic!("{s:?}")
            };
            assert_eq!((m.producer_id, m.epoch, m.state), (7, 4, TxnState::Empty));
            assert_eq!(m.timeout_ms, 30_000);
            assert!(m.partitions.is_empty());
        }
    }

    #[test]
    fn init_on_an_open_transaction_fences_and_aborts_it() {
        let Ok(InitStep::FenceAndAbort(m)) = init(&meta(TxnState::Ongoing), NONE) else {
            panic!()
        };
        assert_eq!((m.epoch, m.state), (4, TxnState::PrepareAbort));
        assert_eq!(m.partitions.len(), 1, "markers go to its partitions");
    }

    #[test]
    fn init_while_completing_is_concurrent() {
        for s in [TxnState::PrepareCommit, TxnState::PrepareAbort] {
            assert_eq!(init(&meta(s), NONE), Err(ErrorCode::ConcurrentTransactions));
        }
        let mut m = meta(TxnState::Empty);
        m.pending = Some(TxnState::Empty);
        assert_eq!(init(&m, NONE), Err(ErrorCode::ConcurrentTransactions));
    }

    #[test]
    fn epoch_exhaustion_asks_for_a_new_producer_id() {
        let mut m = meta(TxnState::CompleteCommit);
        m.epoch = EPOCH_MAX;
        assert_eq!(init(&m, NONE), Ok(InitStep::NewProducerId));
        let fresh = init_with_new_id("t", Some(&m), 8, 1000, NOW);
        assert_eq!((fresh.producer_id, fresh.epoch), (8, 0));
        assert_eq!(fresh.last_producer_id, 7);
        let retry = ProducerRef {
            producer_id: 7,
            epoch: EPOCH_MAX,
        };
        assert_eq!(
            init(&fresh, retry),
            Ok(InitStep::Answer(ProducerRef {
                producer_id: 8,
                epoch: 0
            }))
        );
    }

    #[test]
    fn kip_360_current_epoch_bumps_a_retry_answers_and_a_stale_one_is_fenced() {
        let m = meta(TxnState::CompleteAbort);
        assert!(matches!(init(&m, me()), Ok(InitStep::Store(_))));
        let retried = ProducerRef {
            producer_id: 7,
            epoch: 2,
        };
        assert_eq!(init(&m, retried), Ok(InitStep::Answer(me())));
        let stale = ProducerRef {
            producer_id: 7,
            epoch: 1,
        };
        assert_eq!(init(&m, stale), Err(ErrorCode::ProducerFenced));
        let other = ProducerRef {
            producer_id: 99,
            epoch: 3,
        };
        assert_eq!(init(&m, other), Err(ErrorCode::ProducerFenced));
    }

    #[test]
    fn verify_only_answers_each_partition_and_adds_nothing() {
        let (a0, b1) = (("a".to_string(), 0), ("b".to_string(), 1));
        let m = meta(TxnState::Ongoing);
        let answers = m.verify_partitions(me(), &[a0.clone(), b1.clone()]);
        assert_eq!(
            answers,
            Ok(vec![
                (a0.clone(), ErrorCode::None),
                (b1.clone(), ErrorCode::TransactionAbortable)
            ])
        );
        assert_eq!(m.partitions.len(), 1);
        // A transaction that ended holds nothing.
        let done =
            meta(TxnState::CompleteCommit).verify_partitions(me(), std::slice::from_ref(&a0));
        assert_eq!(
            done,
            Ok(vec![(a0.clone(), ErrorCode::TransactionAbortable)])
        );
        let other = ProducerRef {
            producer_id: 8,
            epoch: 3,
        };
        assert_eq!(
            m.verify_partitions(other, std::slice::from_ref(&a0)),
            Err(ErrorCode::InvalidProducerIdMapping)
        );
        let older = ProducerRef {
            producer_id: 7,
            epoch: 2,
        };
        assert_eq!(
            m.verify_partitions(older, std::slice::from_ref(&a0)),
            Err(ErrorCode::ProducerFenced)
        );
        assert_eq!(
            meta(TxnState::PrepareCommit).verify_partitions(me(), &[a0]),
            Err(ErrorCode::ConcurrentTransactions)
        );
    }

    #[test]
    fn add_partitions_opens_and_extends_a_transaction() {
        let p = vec![("a".to_string(), 0), ("b".to_string(), 2)];
        let m = meta(TxnState::CompleteCommit)
            .add_partitions(me(), &p, NOW + 5)
            .unwrap()
            .unwrap();
        assert_eq!(
            (m.state, m.start_ms, m.partitions.len()),
            (TxnState::Ongoing, NOW + 5, 2)
        );
        assert_eq!(m.add_partitions(me(), &p[..1], NOW + 9), Ok(None));
        let more = m
            .add_partitions(me(), &[("c".to_string(), 1)], NOW + 9)
            .unwrap()
            .unwrap();
        assert_eq!((more.start_ms, more.partitions.len()), (NOW + 5, 3));
    }

    #[test]
    fn add_partitions_checks_producer_and_state() {
        let p = vec![("a".to_string(), 0)];
        let m = meta(TxnState::Ongoing);
        let wrong_id = ProducerRef {
            producer_id: 8,
            epoch: 3,
        };
        assert_eq!(
            m.add_partitions(wrong_id, &p, NOW),
            Err(ErrorCode::InvalidProducerIdMapping)
        );
        let old_epoch = ProducerRef {
            producer_id: 7,
            epoch: 2,
        };
        assert_eq!(
            m.add_partitions(old_epoch, &p, NOW),
            Err(ErrorCode::ProducerFenced)
        );
        assert_eq!(
            meta(TxnState::PrepareCommit).add_partitions(me(), &p, NOW),
            Err(ErrorCode::ConcurrentTransactions)
        );
        assert_eq!(
            meta(TxnState::Dead).add_partitions(me(), &p, NOW),
            Err(ErrorCode::InvalidTxnState)
        );
    }

    #[test]
    fn end_txn_prepares_from_ongoing() {
        let m = meta(TxnState::Ongoing);
        let Ok(EndStep::Prepare(c)) = m.end(me(), true, NOW) else {
            panic!()
        };
        assert_eq!(c.state, TxnState::PrepareCommit);
        let done = c.complete(NOW + 1);
        assert_eq!(done.state, TxnState::CompleteCommit);
        assert!(done.partitions.is_empty());
        let Ok(EndStep::Prepare(a)) = m.end(me(), false, NOW) else {
            panic!()
        };
        assert_eq!(a.complete(NOW).state, TxnState::CompleteAbort);
    }

    #[test]
    fn end_txn_in_the_wrong_state_is_kafkas_error() {
        use TxnState::*;
        let cases = [
            (Empty, true, Err(ErrorCode::InvalidTxnState)),
            (Empty, false, Err(ErrorCode::InvalidTxnState)),
            (CompleteCommit, true, Ok(EndStep::Done)),
            (CompleteCommit, false, Err(ErrorCode::InvalidTxnState)),
            (CompleteAbort, false, Ok(EndStep::Done)),
            (CompleteAbort, true, Err(ErrorCode::InvalidTxnState)),
            (PrepareCommit, true, Err(ErrorCode::ConcurrentTransactions)),
            (PrepareCommit, false, Err(ErrorCode::InvalidTxnState)),
            (PrepareAbort, false, Err(ErrorCode::ConcurrentTransactions)),
            (PrepareAbort, true, Err(ErrorCode::InvalidTxnState)),
            (Dead, true, Err(ErrorCode::InvalidTxnState)),
        ];
        for (state, commit, want) in cases {
            assert_eq!(
                meta(state).end(me(), commit, NOW),
                want,
                "{state:?} {commit}"
            );
        }
    }

    #[test]
    fn end_txn_with_a_stale_epoch_is_fenced() {
        let stale = ProducerRef {
            producer_id: 7,
            epoch: 2,
        };
        assert_eq!(
            meta(TxnState::Ongoing).end(stale, true, NOW),
            Err(ErrorCode::ProducerFenced)
        );
    }

    #[test]
    fn timeouts_and_expiry() {
        let m = meta(TxnState::Ongoing);
        assert!(!m.timed_out(NOW + 60_000));
        assert!(m.timed_out(NOW + 60_001));
        let f = m.fence(NOW + 60_001);
        assert_eq!((f.state, f.epoch), (TxnState::PrepareAbort, 4));
        assert!(
            !m.expired(NOW + 10, 5),
            "an open transaction does not expire"
        );
        assert!(meta(TxnState::CompleteAbort).expired(NOW + 10, 5));
        assert!(!meta(TxnState::CompleteAbort).expired(NOW + 5, 5));
    }

    #[test]
    fn the_last_epoch_is_not_bumped_by_a_fence() {
        let mut m = meta(TxnState::Ongoing);
        m.epoch = EPOCH_MAX;
        assert_eq!(m.fence(NOW).epoch, EPOCH_MAX);
    }
}
