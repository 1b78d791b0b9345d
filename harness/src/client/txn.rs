//! A transactional producer's conversation with its transaction
//! coordinator (transaction version 1, as the Java client speaks it before
//! KIP-890's second part):
//!
//! ```text
//! FindCoordinator(key type 1) ─► InitProducerId(transactional id) ─► id, epoch
//!   per transaction: AddPartitionsToTxn (before a partition's first batch)
//!                    ... transactional batches to the leaders ...
//!                    EndTxn(commit | abort)
//! ```
//!
//! Every request blocks the producer's thread, as the rest of the harness
//! client's control requests do. Retriable answers are retried after a
//! backoff until `delivery.timeout.ms` passes: CONCURRENT_TRANSACTIONS (the
//! coordinator still writes the last transaction's markers), the
//! coordinator loading or not available, and NOT_COORDINATOR or a lost
//! connection, after which the coordinator is looked up again. A fencing
//! answer (another producer took the transactional id, or the id is not
//! ours to use) is final: [`TxnError::Fenced`].

use super::admin::topic_name;
use super::conn::Connection;
use super::endpoint::Endpoint;
use super::error::ClientError;
use super::security::Security;
use sluice_protocol::messages::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use sluice_protocol::messages::messages::{
    AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, ApiKey, EndTxnRequest, EndTxnResponse,
    FindCoordinatorRequest, FindCoordinatorResponse, InitProducerIdRequest, InitProducerIdResponse,
    ProducerId, TransactionalId,
};
use sluice_protocol::messages::protocol::StrBytes;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// FindCoordinator's key type for a transactional id.
const KEY_TYPE_TRANSACTION: i8 = 1;
/// Kafka's transaction error codes (the protocol guide's error table). The
/// harness reads them as numbers: they are answers it must tell apart, not
/// codes the broker library lists.
pub const INVALID_PRODUCER_EPOCH: i16 = 47;
pub const INVALID_TXN_STATE: i16 = 48;
pub const INVALID_PRODUCER_ID_MAPPING: i16 = 49;
pub const INVALID_TRANSACTION_TIMEOUT: i16 = 50;
pub const CONCURRENT_TRANSACTIONS: i16 = 51;
pub const TRANSACTION_COORDINATOR_FENCED: i16 = 52;
pub const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;
pub const PRODUCER_FENCED: i16 = 90;
const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
const COORDINATOR_NOT_AVAILABLE: i16 = 15;
const NOT_COORDINATOR: i16 = 16;
const OPERATION_NOT_ATTEMPTED: i16 = 55;
const REQUEST_TIMED_OUT: i16 = 7;
/// CONCURRENT_TRANSACTIONS (the coordinator still writes the previous
/// transaction's markers, a few ms) is retried after 1 ms, doubling up to
/// 20 ms (and at most `retry.backoff.ms`). The Java client waits a fixed
/// 20 ms on AddPartitionsToTxn; in a benchmark that would put a 20 ms floor
/// under every transaction after the first and hide how fast the broker
/// finishes its markers. `retry.backoff.ms` (100 ms) would cap a producer
/// at 10 transactions a second.
const CONCURRENT_BACKOFF_FIRST: Duration = Duration::from_millis(1);
const CONCURRENT_BACKOFF_MAX: Duration = Duration::from_millis(20);

/// Whether a code ends a transactional producer for good: another instance
/// took its transactional id (a newer epoch), or it may not use it.
pub fn is_fencing(code: i16) -> bool {
    matches!(
        code,
        PRODUCER_FENCED
            | INVALID_PRODUCER_EPOCH
            | TRANSACTION_COORDINATOR_FENCED
            | TRANSACTIONAL_ID_AUTHORIZATION_FAILED
            | INVALID_PRODUCER_ID_MAPPING
            | INVALID_TXN_STATE
            | INVALID_TRANSACTION_TIMEOUT
    )
}

/// Why a transaction request did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum TxnError {
    /// Final: the producer must stop.
    #[error("transactional producer `{transactional_id}` fenced: {api:?} answered error {code} ({})", code_name(*code))]
    Fenced {
        transactional_id: String,
        api: ApiKey,
        code: i16,
    },
    /// Retried until `delivery.timeout.ms` passed, or not retriable.
    #[error("transactional producer `{transactional_id}`: {api:?} failed: {reason}")]
    Failed {
        transactional_id: String,
        api: ApiKey,
        reason: String,
    },
}

/// Names of the codes this module tells apart, for error messages.
pub fn code_name(code: i16) -> &'static str {
    match code {
        INVALID_PRODUCER_EPOCH => "INVALID_PRODUCER_EPOCH",
        INVALID_TXN_STATE => "INVALID_TXN_STATE",
        INVALID_PRODUCER_ID_MAPPING => "INVALID_PRODUCER_ID_MAPPING",
        INVALID_TRANSACTION_TIMEOUT => "INVALID_TRANSACTION_TIMEOUT",
        CONCURRENT_TRANSACTIONS => "CONCURRENT_TRANSACTIONS",
        TRANSACTION_COORDINATOR_FENCED => "TRANSACTION_COORDINATOR_FENCED",
        TRANSACTIONAL_ID_AUTHORIZATION_FAILED => "TRANSACTIONAL_ID_AUTHORIZATION_FAILED",
        PRODUCER_FENCED => "PRODUCER_FENCED",
        COORDINATOR_LOAD_IN_PROGRESS => "COORDINATOR_LOAD_IN_PROGRESS",
        COORDINATOR_NOT_AVAILABLE => "COORDINATOR_NOT_AVAILABLE",
        NOT_COORDINATOR => "NOT_COORDINATOR",
        _ => "see Kafka's error table",
    }
}

/// What to do after an answer's error code.
enum Next {
    Done,
    /// Wait, then ask the same coordinator again.
    Retry(Duration),
    /// Look the coordinator up again, then ask.
    Rediscover,
    Fenced,
    Fail,
}

/// What to do after `code`, the `retries`-th retriable answer in a row.
fn next_after(code: i16, backoff: Duration, retries: u32) -> Next {
    match code {
        0 => Next::Done,
        CONCURRENT_TRANSACTIONS => {
            let d = CONCURRENT_BACKOFF_FIRST * 2u32.saturating_pow(retries.min(16));
            Next::Retry(d.min(CONCURRENT_BACKOFF_MAX).min(backoff))
        }
        COORDINATOR_LOAD_IN_PROGRESS | REQUEST_TIMED_OUT => Next::Retry(backoff),
        NOT_COORDINATOR | COORDINATOR_NOT_AVAILABLE => Next::Rediscover,
        c if is_fencing(c) => Next::Fenced,
        _ => Next::Fail,
    }
}

/// An AddPartitionsToTxn under way.
struct Adding {
    req: AddPartitionsToTxnRequest,
    /// (correlation id, version) once sent; None while it waits to be sent
    /// (again) at `send_at`.
    sent: Option<(i32, i16)>,
    send_at: Instant,
    /// Retries stop here (the coordinator's patience from the first send).
    deadline: Instant,
    retries: u32,
}

/// What an AddPartitionsToTxn under way waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddWait {
    /// Its answer, on this descriptor.
    Answer(std::os::fd::RawFd),
    /// To be sent again after this long.
    Resend(Duration),
}

/// The first error any partition answered: OPERATION_NOT_ATTEMPTED only
/// says another partition failed, so a partition's own error comes first.
fn first_error(r: &AddPartitionsToTxnResponse) -> i16 {
    let codes = r
        .results_by_topic_v3_and_below
        .iter()
        .flat_map(|t| t.results_by_partition.iter())
        .map(|p| p.partition_error_code);
    codes
        .clone()
        .find(|&c| c != 0 && c != OPERATION_NOT_ATTEMPTED)
        .or_else(|| codes.clone().find(|&c| c != 0))
        .unwrap_or(0)
}

/// One transactional producer's coordinator client.
pub struct TxnCoordinator {
    pub transactional_id: String,
    bootstrap: Endpoint,
    security: Security,
    conn: Option<Connection>,
    /// The AddPartitionsToTxn under way, if any.
    adding: Option<Adding>,
    pub producer_id: i64,
    pub epoch: i16,
    transaction_timeout_ms: i32,
    backoff: Duration,
    /// How long one request may be retried.
    patience: Duration,
}

impl TxnCoordinator {
    pub fn new(
        transactional_id: String,
        bootstrap: Endpoint,
        security: Security,
        transaction_timeout_ms: i32,
        backoff: Duration,
        patience: Duration,
    ) -> TxnCoordinator {
        TxnCoordinator {
            transactional_id,
            bootstrap,
            security,
            conn: None,
            adding: None,
            producer_id: -1,
            epoch: -1,
            transaction_timeout_ms,
            backoff,
            patience,
        }
    }

    fn failed(&self, api: ApiKey, reason: String) -> TxnError {
        TxnError::Failed {
            transactional_id: self.transactional_id.clone(),
            api,
            reason,
        }
    }

    /// The coordinator's connection, looked up and opened when missing.
    fn conn(&mut self) -> Result<&mut Connection, ClientError> {
        if self.conn.is_none() {
            let ep = self.find()?;
            self.conn = Some(Connection::open(&ep, &self.security, CONNECT_TIMEOUT)?);
        }
        Ok(self.conn.as_mut().expect("opened above"))
    }

    /// FindCoordinator for the transactional id, asked of the bootstrap
    /// broker. A coordinator not available yet (its `__transaction_state`
    /// partition is being created) is an error the caller retries.
    fn find(&self) -> Result<Endpoint, ClientError> {
        let mut conn = Connection::open(&self.bootstrap, &self.security, CONNECT_TIMEOUT)?;
        let version = conn.version(ApiKey::FindCoordinator)?;
        if version < 1 {
            return Err(ClientError::Unsupported {
                api: ApiKey::FindCoordinator,
                broker_min: 0,
                broker_max: version,
                ours_min: 1,
                ours_max: 4,
            });
        }
        let id = StrBytes::from_string(self.transactional_id.clone());
        let mut req = FindCoordinatorRequest::default().with_key_type(KEY_TYPE_TRANSACTION);
        if version >= 4 {
            req.coordinator_keys = vec![id];
        } else {
            req.key = id;
        }
        let resp: FindCoordinatorResponse =
            conn.roundtrip_at(ApiKey::FindCoordinator, version, &req)?;
        let (code, host, port) = match resp.coordinators.first() {
            Some(c) if version >= 4 => (c.error_code, c.host.to_string(), c.port),
            None if version >= 4 => (COORDINATOR_NOT_AVAILABLE, String::new(), 0),
            _ => (resp.error_code, resp.host.to_string(), resp.port),
        };
        if code != 0 {
            return Err(ClientError::Broker {
                what: format!("FindCoordinator for `{}`", self.transactional_id),
                code: sluice_protocol::ErrorCode::from_code(code),
            });
        }
        Endpoint::resolve(&host, port)
    }

    /// Sends `send` until it is answered without a retriable error or the
    /// patience runs out. `send` returns the answer's error code.
    fn call<T>(
        &mut self,
        api: ApiKey,
        mut send: impl FnMut(&mut Connection) -> Result<(i16, T), ClientError>,
    ) -> Result<T, TxnError> {
        assert!(
            self.adding.is_none(),
            "{api:?} while an AddPartitionsToTxn is under way would read its answer"
        );
        let deadline = Instant::now() + self.patience;
        let mut retries = 0;
        loop {
            let (wait, last) = match self.conn().and_then(&mut send) {
                Ok((code, out)) => match next_after(code, self.backoff, retries) {
                    Next::Done => return Ok(out),
                    Next::Retry(d) => (d, format!("error {code} ({})", code_name(code))),
                    Next::Rediscover => {
                        self.conn = None;
                        (self.backoff, format!("error {code} ({})", code_name(code)))
                    }
                    Next::Fenced => {
                        return Err(TxnError::Fenced {
                            transactional_id: self.transactional_id.clone(),
                            api,
                            code,
                        })
                    }
                    Next::Fail => {
                        return Err(self.failed(api, format!("error {code} ({})", code_name(code))))
                    }
                },
                // Unsupported versions do not get better by asking again.
                Err(e @ ClientError::Unsupported { .. }) => {
                    return Err(self.failed(api, e.to_string()))
                }
                Err(e) => {
                    self.conn = None;
                    (self.backoff, e.to_string())
                }
            };
            if Instant::now() + wait > deadline {
                return Err(self.failed(
                    api,
                    format!("still failing after {:?}: {last}", self.patience),
                ));
            }
            std::thread::sleep(wait);
            retries += 1;
        }
    }

    /// InitProducerId with the transactional id: this instance's producer
    /// id and a new epoch, which fences every earlier instance and ends
    /// (aborts) any transaction one of them left open.
    pub fn init(&mut self) -> Result<(i64, i16), TxnError> {
        let req = InitProducerIdRequest::default()
            .with_transactional_id(Some(TransactionalId(StrBytes::from_string(
                self.transactional_id.clone(),
            ))))
            .with_transaction_timeout_ms(self.transaction_timeout_ms)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
        let (id, epoch) = self.call(ApiKey::InitProducerId, |conn| {
            let r: InitProducerIdResponse = conn.roundtrip(ApiKey::InitProducerId, &req)?;
            Ok((r.error_code, (r.producer_id.0, r.producer_epoch)))
        })?;
        assert!(
            id >= 0 && epoch >= 0,
            "a coordinator answered id {id} epoch {epoch}"
        );
        self.producer_id = id;
        self.epoch = epoch;
        Ok((id, epoch))
    }

    /// Sends AddPartitionsToTxn for `partitions` (topic, partitions), v3 or
    /// lower (the client form of the request), without waiting: the
    /// producer goes on filling its batches meanwhile, as the Java client
    /// does, and [`Self::poll_add`] tells when the coordinator has answered.
    /// At most one is under way.
    pub fn start_add(&mut self, partitions: &[(String, Vec<i32>)]) -> Result<(), TxnError> {
        assert!(
            self.producer_id >= 0,
            "AddPartitionsToTxn before InitProducerId"
        );
        assert!(self.adding.is_none(), "one AddPartitionsToTxn at a time");
        let topics: Vec<AddPartitionsToTxnTopic> = partitions
            .iter()
            .map(|(t, ps)| {
                AddPartitionsToTxnTopic::default()
                    .with_name(topic_name(t))
                    .with_partitions(ps.clone())
            })
            .collect();
        let req = AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(TransactionalId(StrBytes::from_string(
                self.transactional_id.clone(),
            )))
            .with_v3_and_below_producer_id(ProducerId(self.producer_id))
            .with_v3_and_below_producer_epoch(self.epoch)
            .with_v3_and_below_topics(topics);
        let now = Instant::now();
        self.adding = Some(Adding {
            req,
            sent: None,
            send_at: now,
            deadline: now + self.patience,
            retries: 0,
        });
        match self.poll_add() {
            Some(Err(e)) => Err(e),
            _ => Ok(()),
        }
    }

    /// The AddPartitionsToTxn under way: None while it waits for its
    /// answer (or to be sent again after a retriable one), then its
    /// outcome, once. Retries as [`Self::call`] does, within the patience.
    pub fn poll_add(&mut self) -> Option<Result<(), TxnError>> {
        const API: ApiKey = ApiKey::AddPartitionsToTxn;
        let mut a = self.adding.take()?;
        let (wait, last) = match a.sent {
            None if Instant::now() < a.send_at => {
                self.adding = Some(a);
                return None;
            }
            None => match self.conn().and_then(|c| c.ask(API, &a.req)) {
                Ok(sent) => {
                    a.sent = Some(sent);
                    self.adding = Some(a);
                    return None;
                }
                Err(e @ ClientError::Unsupported { .. }) => {
                    return Some(Err(self.failed(API, e.to_string())))
                }
                Err(e) => {
                    self.conn = None;
                    (self.backoff, e.to_string())
                }
            },
            Some((corr, version)) => {
                let conn = self.conn.as_mut().expect("a request was sent on it");
                if !conn.answer_ready() {
                    self.adding = Some(a);
                    return None;
                }
                match conn.answer::<AddPartitionsToTxnResponse>(API, version, corr) {
                    Ok(r) => {
                        let code = first_error(&r);
                        match next_after(code, self.backoff, a.retries) {
                            Next::Done => return Some(Ok(())),
                            Next::Retry(d) => (d, format!("error {code} ({})", code_name(code))),
                            Next::Rediscover => {
                                self.conn = None;
                                (self.backoff, format!("error {code} ({})", code_name(code)))
                            }
                            Next::Fenced => {
                                return Some(Err(TxnError::Fenced {
                                    transactional_id: self.transactional_id.clone(),
                                    api: API,
                                    code,
                                }))
                            }
                            Next::Fail => {
                                return Some(Err(
                                    self.failed(API, format!("error {code} ({})", code_name(code)))
                                ))
                            }
                        }
                    }
                    Err(e) => {
                        self.conn = None;
                        (self.backoff, e.to_string())
                    }
                }
            }
        };
        let now = Instant::now();
        if now + wait > a.deadline {
            return Some(Err(self.failed(
                API,
                format!("still failing after {:?}: {last}", self.patience),
            )));
        }
        a.sent = None;
        a.send_at = now + wait;
        a.retries += 1;
        self.adding = Some(a);
        None
    }

    /// Gives up on the AddPartitionsToTxn under way (the run ends): its
    /// connection closes, so no late answer is read as another's.
    pub fn drop_add(&mut self) {
        if self.adding.take().is_some() {
            self.conn = None;
        }
    }

    /// What the producer waits on for the AddPartitionsToTxn under way:
    /// its connection's descriptor while the answer is due, or how long
    /// until it is sent again.
    pub fn add_wait(&self) -> Option<AddWait> {
        let a = self.adding.as_ref()?;
        Some(match (a.sent, &self.conn) {
            (Some(_), Some(c)) => AddWait::Answer(c.raw_fd()),
            _ => AddWait::Resend(a.send_at.saturating_duration_since(Instant::now())),
        })
    }

    /// EndTxn: commits (or aborts) the open transaction.
    pub fn end(&mut self, commit: bool) -> Result<(), TxnError> {
        assert!(self.producer_id >= 0, "EndTxn before InitProducerId");
        let req = EndTxnRequest::default()
            .with_transactional_id(TransactionalId(StrBytes::from_string(
                self.transactional_id.clone(),
            )))
            .with_producer_id(ProducerId(self.producer_id))
            .with_producer_epoch(self.epoch)
            .with_committed(commit);
        self.call(ApiKey::EndTxn, |conn| {
            let r: EndTxnResponse = conn.roundtrip(ApiKey::EndTxn, &req)?;
            Ok((r.error_code, ()))
        })
    }
}

/// The open transaction of a transactional producer, and the producer's
/// standing with its coordinator.
pub struct Transaction {
    pub coord: TxnCoordinator,
    /// `transaction.messages`: the transaction commits once it holds them.
    pub messages_max: u64,
    /// Messages appended to the open transaction.
    pub messages: u64,
    /// When its first message was appended (run time, ns).
    pub begun_ns: u64,
    /// (topic, partition) pairs AddPartitionsToTxn has added to it.
    pub added: BTreeSet<(usize, i32)>,
    /// The pairs of the AddPartitionsToTxn under way.
    pub adding: Vec<(usize, i32)>,
    /// Sends are refused until the transaction ends: it is full (or the
    /// run ends), or a batch of it failed and it must abort.
    pub ending: bool,
    /// Why the transaction must abort: a batch of it failed.
    pub doomed: Option<String>,
    /// Acknowledged messages, done once the commit is: (topic, start, bytes).
    pub acked: Vec<(usize, u64, u64)>,
    /// Set for good once the producer is fenced; it sends nothing more.
    pub fenced: Option<String>,
    /// A send was refused while the transaction ended: the owner should
    /// poll again at once when it has.
    pub refused: bool,
}

impl Transaction {
    pub fn new(coord: TxnCoordinator, messages_max: u64) -> Transaction {
        assert!(messages_max > 0, "a transaction holds at least one message");
        Transaction {
            coord,
            messages_max,
            messages: 0,
            begun_ns: 0,
            added: BTreeSet::new(),
            adding: Vec::new(),
            ending: false,
            doomed: None,
            acked: Vec::new(),
            fenced: None,
            refused: false,
        }
    }

    /// Counts a message appended at `now_ns`; true once the transaction
    /// is full.
    pub fn on_append(&mut self, now_ns: u64) -> bool {
        if self.messages == 0 {
            self.begun_ns = now_ns;
        }
        self.messages += 1;
        self.refused = false;
        self.messages >= self.messages_max
    }

    /// A batch of the transaction failed: it aborts, and takes no more
    /// messages until then.
    pub fn doom(&mut self, cause: &str) {
        if self.doomed.is_none() {
            self.doomed = Some(cause.to_string());
        }
        self.ending = true;
    }

    /// The transaction ended (committed or aborted): the next begins empty.
    pub fn reset(&mut self) {
        self.messages = 0;
        self.added.clear();
        self.ending = false;
        self.doomed = None;
        self.acked.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_sort_into_retry_rediscover_fence_and_fail() {
        let b = Duration::from_millis(100);
        assert!(matches!(next_after(0, b, 0), Next::Done));
        let concurrent = |retries| match next_after(CONCURRENT_TRANSACTIONS, b, retries) {
            Next::Retry(d) => d.as_millis(),
            _ => panic!("CONCURRENT_TRANSACTIONS is retried"),
        };
        let waits: Vec<u128> = (0..7).map(concurrent).collect();
        assert_eq!(waits, vec![1, 2, 4, 8, 16, 20, 20]);
        assert_eq!(concurrent(u32::MAX), 20);
        assert!(matches!(
            next_after(COORDINATOR_LOAD_IN_PROGRESS, b, 3),
            Next::Retry(d) if d == b
        ));
        assert!(matches!(
            next_after(NOT_COORDINATOR, b, 0),
            Next::Rediscover
        ));
        assert!(matches!(next_after(PRODUCER_FENCED, b, 0), Next::Fenced));
        assert!(matches!(
            next_after(INVALID_PRODUCER_EPOCH, b, 0),
            Next::Fenced
        ));
        assert!(matches!(next_after(42, b, 0), Next::Fail));
    }
}
