//! The transaction coordinator (Kafka's exactly-once protocol, TV1).
//!
//! A transactional id belongs to the `__transaction_state` partition its
//! id hashes to (Java's `String.hashCode`, as Kafka does), and is
//! coordinated by that partition's leader, on the shard that owns the
//! partition, so no lock guards it; requests reaching another shard are
//! forwarded there. Every state change is appended to the partition
//! (acks=all) in Kafka's record schema ([`records`]) before it is
//! answered, and the partition is replayed when this broker starts
//! leading it, so the log is the only copy on disk.
//!
//! [`state`] is the transaction state machine, pure; [`coordinator`] is
//! the per-shard shell that stores, loads, times out and completes
//! transactions; [`markers`] writes the COMMIT/ABORT markers to the
//! partitions of a transaction with WriteTxnMarkers requests to their
//! leaders. The service is installed per shard by `broker.rs` and reached
//! through [`coordinator`] (the function), not through `Shard`.

pub mod coordinator;
pub mod markers;
pub mod records;
pub mod state;
pub mod verify;

use std::cell::RefCell;
use std::rc::Rc;

/// The internal topic holding transactions' state.
pub const TXN_TOPIC: &str = "__transaction_state";

/// The coordinator's settings, from the broker config.
#[derive(Clone, Debug)]
pub struct TxnConfig {
    /// `transaction.state.log.num.partitions`.
    pub log_partitions: i32,
    /// `transaction.state.log.replication.factor`; the default (3) is
    /// capped by the live brokers, a value set is not.
    pub log_replication_factor: i16,
    pub log_replication_factor_is_default: bool,
    /// `transaction.state.log.min.isr`; the default (2) is capped by the
    /// replication factor, a value set is not.
    pub log_min_isr: i16,
    pub log_min_isr_is_default: bool,
    /// `transaction.state.log.segment.bytes`.
    pub log_segment_bytes: i64,
    /// `transaction.max.timeout.ms`: longer client timeouts are refused.
    pub max_timeout_ms: i64,
    /// `transaction.abort.timed.out.transaction.cleanup.interval.ms`.
    pub abort_check_ms: i64,
    /// `transactional.id.expiration.ms`.
    pub id_expiration_ms: i64,
    /// `transaction.remove.expired.transaction.cleanup.interval.ms`.
    pub expiry_check_ms: i64,
}

thread_local! {
    /// This shard's coordinator, installed at start.
    static COORDINATOR: RefCell<Option<Rc<coordinator::TxnCoordinator>>> =
        const { RefCell::new(None) };
}

/// Installs this shard's coordinator; call once per shard at start.
pub fn install(c: Rc<coordinator::TxnCoordinator>) {
    COORDINATOR.with(|slot| *slot.borrow_mut() = Some(c));
}

/// This shard's coordinator; None before [`install`] (the shard is not
/// serving yet) or on a thread that is no shard.
pub fn coordinator() -> Option<Rc<coordinator::TxnCoordinator>> {
    COORDINATOR.with(|slot| slot.borrow().clone())
}
