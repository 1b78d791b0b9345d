//! The harness producer: Kafka's producer semantics on one thread.
//!
//! `send` partitions a record (murmur2 for keys, sticky for null keys) and
//! appends it to its partition's batch; `poll` reads responses, retries
//! retriable failures after `retry.backoff.ms`, and once a broker has a
//! partition whose batch is full or has lingered, drains every partition it
//! leads into one Produce request, lingered or not, as the Java client does
//! (one batch per partition per request, at most
//! `max.in.flight.requests.per.connection` requests per broker), and writes
//! what the sockets take. The owner thread waits on the
//! sockets with `ppoll` until `next_deadline_ns`, so no thread sleeps past a
//! response and no lock is taken per message.
//!
//! With `enable.idempotence` the producer takes a producer id with
//! InitProducerId and numbers each partition's records, so a batch resent
//! after a lost response is answered from the broker's record of it rather
//! than appended twice. A batch refused as out of order behind an earlier
//! unacknowledged batch is retried after it. A batch that fails for good
//! leaves a gap the broker would refuse every later batch for: then, once
//! nothing is in flight, the producer takes a new producer id and numbers
//! its waiting batches again from 0 (as the Java client bumps its epoch).
//!
//! With `transactional.id` (and `transaction.messages`) the producer runs
//! transactions of `transaction.messages` messages each (`super::txn`):
//! before a partition's first batch of a transaction it adds the partition
//! with AddPartitionsToTxn (every partition holding data at that moment in
//! one request), its batches carry the transactional bit, and once the
//! transaction is full it closes its batches, refuses sends until every
//! batch is acknowledged and commits with EndTxn. Its messages count as
//! acknowledged only then, so publish latency runs to the commit. A batch
//! that fails for good aborts its transaction (and the producer takes a new
//! epoch before the next); a fencing answer ends the producer.

use super::accumulator::{ClosedBatch, PartitionQueue, Sequencer, RECORD_OVERHEAD_MAX};
use super::admin::{self, topic_name, ClusterMetadata};
use super::batch::ValueParts;
use super::conn::Connection;
use super::endpoint::Endpoint;
use super::error::ClientError;
use super::partitioner::{partition_for_key, Sticky};
use super::txn::{self, AddWait, Transaction, TxnCoordinator, TxnError};
use super::wire::{produce_request_pieces, ProducePart};
use crate::measure::clock::Clock;
use crate::measure::recorder::Recorder;
use crate::workload::dist::Rng;
use crate::workload::props::{Acks, ProducerSettings};
use bytes::Bytes;
use sluice_protocol::messages::messages::{ApiKey, ProduceResponse, TopicName};
use sluice_protocol::ErrorCode;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// Bytes a Produce request adds around its batches, generously.
const REQUEST_OVERHEAD: usize = 1_024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Least time between two metadata refreshes.
const METADATA_BACKOFF_NS: u64 = 100_000_000;

struct Topic {
    name: String,
    wire: TopicName,
    leaders: Vec<i32>,
    queues: Vec<PartitionQueue>,
    /// Messages acknowledged (or, for acks=0, written) so far.
    acknowledged: u64,
}

/// The batches of one request: (topic, partition, batch).
type RequestBatches = Vec<(usize, i32, ClosedBatch)>;

struct InFlight {
    correlation: i32,
    version: i16,
    sent_ns: u64,
    batches: RequestBatches,
}

struct Broker {
    conn: Connection,
    produce_version: i16,
    in_flight: VecDeque<InFlight>,
    /// acks=0 requests not yet wholly written to the socket: the byte
    /// count (`Connection::written`) that completes each, and its batches.
    unwritten: VecDeque<(u64, RequestBatches)>,
    /// Rotates the partition a drain starts at, for fairness.
    drain_start: usize,
}

/// Why `send` did not take a record.
#[derive(Debug, PartialEq, Eq)]
pub enum SendRefused {
    /// `buffer.memory` is used up: poll, then try again.
    BufferFull,
    /// The transaction is ending: poll, then try again.
    TransactionEnding,
    /// The transactional producer was fenced: it takes nothing more.
    Fenced,
}

pub struct Producer {
    clock: Clock,
    s: ProducerSettings,
    linger_ns: u64,
    batch_limit: usize,
    topics: Vec<Topic>,
    addrs: BTreeMap<i32, Endpoint>,
    brokers: BTreeMap<i32, Broker>,
    /// (topic, partition) pairs led by each broker.
    led: BTreeMap<i32, Vec<(usize, i32)>>,
    bootstrap: Endpoint,
    meta_conn: Option<Connection>,
    needs_metadata: bool,
    next_metadata_ns: u64,
    /// An idempotent producer's sequence has a gap: take a new producer id
    /// once nothing is in flight, and send nothing until then.
    needs_producer_id: bool,
    sticky: Sticky,
    rng: Rng,
    buffered: usize,
    scratch: Vec<u8>,
    responses: Vec<Bytes>,
    /// A transactional producer's transaction; `None` for others.
    txn: Option<Transaction>,
    /// Connection and protocol errors seen, for the run's error list.
    pub client_errors: Vec<String>,
}

impl Producer {
    /// A producer for `topics`, whose leaders `md` knows. An idempotent one
    /// first takes its producer id from `bootstrap`.
    pub fn new(
        clock: Clock,
        settings: ProducerSettings,
        topics: &[String],
        md: &ClusterMetadata,
        bootstrap: impl Into<Endpoint>,
        seed: u64,
    ) -> Result<Producer, ClientError> {
        let bootstrap: Endpoint = bootstrap.into();
        let mut rng = Rng::new(seed);
        let mut ts = Vec::with_capacity(topics.len());
        for t in topics {
            let leaders = md
                .topics
                .get(t)
                .cloned()
                .ok_or_else(|| ClientError::NoLeader {
                    topic: t.clone(),
                    partition: 0,
                })?;
            ts.push(Topic {
                name: t.clone(),
                wire: topic_name(t),
                queues: (0..leaders.len()).map(|_| PartitionQueue::new()).collect(),
                acknowledged: 0,
                leaders,
            });
        }
        let mut txn = None;
        if settings.transactional() {
            let id = settings
                .transactional_id
                .clone()
                .expect("transactional() checked it");
            let mut coord = TxnCoordinator::new(
                id,
                bootstrap.clone(),
                settings.security.clone(),
                settings.transaction_timeout_ms.min(i32::MAX as u64) as i32,
                Duration::from_millis(settings.retry_backoff_ms),
                Duration::from_millis(settings.delivery_timeout_ms),
            );
            let (id, epoch) = coord.init()?;
            for q in ts.iter_mut().flat_map(|t| t.queues.iter_mut()) {
                q.sequencer = Some(Sequencer::new(id, epoch));
                q.transactional = true;
            }
            txn = Some(Transaction::new(coord, settings.transaction_messages));
        } else if settings.enable_idempotence {
            let mut conn = Connection::open(&bootstrap, &settings.security, CONNECT_TIMEOUT)?;
            let (id, epoch) = admin::init_producer_id(&mut conn, CONNECT_TIMEOUT)?;
            for q in ts.iter_mut().flat_map(|t| t.queues.iter_mut()) {
                q.sequencer = Some(Sequencer::new(id, epoch));
            }
        }
        let counts: Vec<u32> = ts.iter().map(|t| t.leaders.len() as u32).collect();
        let batch_limit = settings
            .batch_size
            .min(settings.max_request_size.saturating_sub(REQUEST_OVERHEAD))
            .max(1);
        let mut p = Producer {
            clock,
            linger_ns: settings.linger_ms * 1_000_000,
            batch_limit,
            s: settings,
            topics: ts,
            addrs: md.brokers.clone(),
            brokers: BTreeMap::new(),
            led: BTreeMap::new(),
            bootstrap,
            meta_conn: None,
            needs_metadata: false,
            next_metadata_ns: 0,
            needs_producer_id: false,
            sticky: Sticky::new(&counts, &mut rng),
            rng,
            buffered: 0,
            scratch: Vec::new(),
            responses: Vec::new(),
            txn,
            client_errors: Vec::new(),
        };
        p.rebuild_led();
        Ok(p)
    }

    fn rebuild_led(&mut self) {
        self.led.clear();
        for (ti, t) in self.topics.iter().enumerate() {
            for (p, &l) in t.leaders.iter().enumerate() {
                self.led.entry(l).or_default().push((ti, p as i32));
            }
        }
    }

    /// `linger.ms` in ns.
    pub fn linger_ns(&self) -> u64 {
        self.linger_ns
    }

    /// The name of topic `topic` (an index into the producer's topics).
    pub fn topic_name(&self, topic: usize) -> &str {
        &self.topics[topic].name
    }

    pub fn partitions(&self, topic: usize) -> u32 {
        self.topics[topic].leaders.len() as u32
    }

    /// Bytes held in batches (open, ready and in flight).
    pub fn buffered_bytes(&self) -> usize {
        self.buffered
    }

    /// Messages accepted but not yet acknowledged or failed (for a
    /// transactional producer: not yet committed or aborted).
    pub fn pending(&self) -> bool {
        self.buffered > 0
            || self
                .txn
                .as_ref()
                .is_some_and(|t| t.fenced.is_none() && t.messages > 0)
    }

    /// Why a transactional producer was fenced, once it was.
    pub fn fenced(&self) -> Option<&str> {
        self.txn.as_ref().and_then(|t| t.fenced.as_deref())
    }

    /// The producer's transactional id, if it is transactional.
    pub fn transactional_id(&self) -> Option<&str> {
        self.txn.as_ref().map(|t| t.coord.transactional_id.as_str())
    }

    /// Appends one record. `start_ns` is its intended send time; the
    /// record's create timestamp is that time too (ms since the epoch).
    pub fn send(
        &mut self,
        topic: usize,
        key: Option<&[u8]>,
        value: &[u8],
        start_ns: u64,
        now_ns: u64,
        rec: &mut Recorder,
    ) -> Result<(), SendRefused> {
        self.send_parts(topic, key, [value, &[]], start_ns, now_ns, rec)
    }

    /// [`Self::send`] for a value given in parts (the generator's stamp and
    /// pooled payload), which are copied once, into the batch.
    #[inline]
    pub fn send_parts(
        &mut self,
        topic: usize,
        key: Option<&[u8]>,
        value: ValueParts<'_>,
        start_ns: u64,
        now_ns: u64,
        rec: &mut Recorder,
    ) -> Result<(), SendRefused> {
        if let Some(t) = &mut self.txn {
            if t.fenced.is_some() {
                return Err(SendRefused::Fenced);
            }
            if t.ending {
                t.refused = true;
                return Err(SendRefused::TransactionEnding);
            }
        }
        let value_len = value[0].len() + value[1].len();
        let record_bytes = value_len + key.map_or(0, <[u8]>::len) + RECORD_OVERHEAD_MAX;
        if self.buffered + record_bytes > self.s.buffer_memory {
            return Err(SendRefused::BufferFull);
        }
        let mut partition = self.pick(topic, key);
        if !self.topics[topic].queues[partition as usize].fits(record_bytes, self.batch_limit) {
            self.close(topic, partition, rec);
            if key.is_none() {
                partition = self.sticky.partition(topic);
            }
        }
        let timestamp_ms = self.clock.unix_us(start_ns) / 1_000;
        let q = &mut self.topics[topic].queues[partition as usize];
        let before = q.open_bytes();
        let size = q.append_parts(now_ns, timestamp_ms, key, value, start_ns, self.batch_limit);
        self.buffered += q.open_bytes() - before;
        rec.on_send(now_ns, start_ns);
        if size >= self.batch_limit {
            self.close(topic, partition, rec);
        }
        if self.txn.as_mut().is_some_and(|t| t.on_append(now_ns)) {
            self.close_all(rec);
        }
        Ok(())
    }

    fn pick(&self, topic: usize, key: Option<&[u8]>) -> u32 {
        match key {
            Some(k) => partition_for_key(k, self.partitions(topic)),
            None => self.sticky.partition(topic),
        }
    }

    fn close(&mut self, topic: usize, partition: u32, rec: &mut Recorder) {
        let q = &mut self.topics[topic].queues[partition as usize];
        let open = q.open_bytes();
        let starts_first = q.open.as_ref().and_then(|b| b.starts.first().copied());
        let count = q.open.as_ref().map_or(0, |b| b.starts.len() as u64);
        match q.close(self.s.compression, &mut self.scratch) {
            Ok(added) => self.buffered = self.buffered - open + added,
            Err(e) => {
                self.buffered -= open;
                rec.on_error(starts_first.unwrap_or(0), count, "encoding a batch");
                self.client_errors.push(e.to_string());
            }
        }
        self.sticky.on_batch_closed(topic, partition, &mut self.rng);
    }

    /// Closes every open batch: the end of a run, before the final flush,
    /// or of a transaction, which then commits once they are acknowledged.
    pub fn close_all(&mut self, rec: &mut Recorder) {
        for t in 0..self.topics.len() {
            for p in 0..self.topics[t].queues.len() {
                if self.topics[t].queues[p].open.is_some() {
                    self.close(t, p as u32, rec);
                }
            }
        }
        if let Some(t) = &mut self.txn {
            if t.messages > 0 {
                t.ending = true;
            }
        }
    }

    /// Gives up on every message not yet acknowledged, each counted as an
    /// error with `cause`: the end of a run's flush. The connections close,
    /// so no late answer can count a message twice.
    pub fn abandon(&mut self, cause: &str, rec: &mut Recorder) {
        self.close_all(rec);
        let mut left = Vec::new();
        for t in &mut self.topics {
            for q in &mut t.queues {
                left.extend(q.ready.drain(..));
            }
        }
        for (_, broker) in std::mem::take(&mut self.brokers) {
            for f in broker.in_flight {
                left.extend(f.batches.into_iter().map(|(_, _, b)| b));
            }
            for (_, batches) in broker.unwritten {
                left.extend(batches.into_iter().map(|(_, _, b)| b));
            }
        }
        for b in &left {
            self.fail(b, cause, rec);
        }
        if let Some(t) = &mut self.txn {
            for &(_, start, _) in &t.acked {
                rec.on_error(start, 1, cause);
            }
            t.coord.drop_add();
            t.adding.clear();
            t.reset();
        }
    }

    /// Reads responses, handles timeouts and retries, sends what is ready.
    pub fn poll(&mut self, rec: &mut Recorder) {
        let now = self.clock.now_ns();
        if self.needs_metadata && now >= self.next_metadata_ns {
            self.refresh_metadata(now);
        }
        let ids: Vec<i32> = self.brokers.keys().copied().collect();
        for id in &ids {
            if let Err(e) = self.read_responses(*id, rec) {
                self.fail_broker(*id, &e, rec);
            }
        }
        let now = self.clock.now_ns();
        self.expire(now, rec);
        if self.txn.is_some() {
            self.transaction_step(rec);
            self.drop_fenced(rec);
        }
        let now = self.clock.now_ns();
        if self.needs_producer_id && self.in_flight() == 0 && now >= self.next_metadata_ns {
            self.renew_producer_id(now);
        }
        let leaders: Vec<i32> = self.led.keys().copied().collect();
        for id in leaders {
            if let Err(e) = self.drain_to(id, now, rec) {
                self.fail_broker(id, &e, rec);
            }
        }
    }

    /// The control connection to the bootstrap broker, opened on first use
    /// (and again after a failure dropped it).
    fn bootstrap_conn(&mut self) -> Result<&mut Connection, ClientError> {
        if self.meta_conn.is_none() {
            self.meta_conn = Some(Connection::open(
                &self.bootstrap,
                &self.s.security,
                CONNECT_TIMEOUT,
            )?);
        }
        Ok(self.meta_conn.as_mut().expect("just connected"))
    }

    fn refresh_metadata(&mut self, now: u64) {
        self.next_metadata_ns = now + METADATA_BACKOFF_NS;
        let names: Vec<String> = self.topics.iter().map(|t| t.name.clone()).collect();
        let result = self
            .bootstrap_conn()
            .and_then(|conn| admin::metadata(conn, Some(&names)));
        match result {
            Ok(md) => {
                self.addrs = md.brokers.clone();
                for t in &mut self.topics {
                    if let Some(l) = md.topics.get(&t.name) {
                        if l.len() == t.leaders.len() {
                            t.leaders = l.clone();
                        }
                    }
                }
                self.rebuild_led();
                self.needs_metadata = false;
            }
            Err(e) => {
                self.meta_conn = None;
                self.client_errors.push(format!("metadata refresh: {e}"));
            }
        }
    }

    /// Takes a new producer id and numbers every waiting batch again; on
    /// failure it is tried again after the metadata backoff.
    fn renew_producer_id(&mut self, now: u64) {
        self.next_metadata_ns = now + METADATA_BACKOFF_NS;
        let result = match &mut self.txn {
            Some(t) => match t.coord.init() {
                Err(e @ TxnError::Fenced { .. }) => {
                    self.fence(e.to_string());
                    return;
                }
                r => r.map_err(ClientError::from),
            },
            None => self
                .bootstrap_conn()
                .and_then(|conn| admin::init_producer_id(conn, CONNECT_TIMEOUT)),
        };
        match result {
            Ok((id, epoch)) => {
                for q in self.topics.iter_mut().flat_map(|t| t.queues.iter_mut()) {
                    q.restart_sequences(id, epoch);
                }
                self.needs_producer_id = false;
            }
            Err(e) => {
                self.meta_conn = None;
                self.client_errors.push(format!("new producer id: {e}"));
            }
        }
    }

    /// Fails a batch for good. An idempotent producer's later batches in
    /// that partition would meet a sequence gap: it needs a new producer id.
    /// A transactional producer's transaction aborts instead, and the new
    /// producer id (epoch) is taken after the abort.
    fn fail(&mut self, b: &ClosedBatch, cause: &str, rec: &mut Recorder) {
        self.buffered -= b.footprint();
        rec.on_error(b.starts[0], b.starts.len() as u64, cause);
        match &mut self.txn {
            Some(t) => t.doom(cause),
            None if b.base_sequence >= 0 => self.needs_producer_id = true,
            None => {}
        }
    }

    /// A transactional producer's work between reading answers and sending:
    /// fail what a doomed transaction still queues, add the partitions that
    /// hold data to the transaction, and end a transaction that is full (or
    /// doomed) once nothing of it is in flight.
    fn transaction_step(&mut self, rec: &mut Recorder) {
        let Some(t) = &self.txn else { return };
        if t.fenced.is_some() {
            return;
        }
        self.poll_add();
        let Some(t) = &self.txn else { return };
        if let Some(cause) = t.doomed.clone() {
            self.fail_queued(&format!("transaction aborted: {cause}"), rec);
        } else {
            self.add_partitions();
        }
        let Some(t) = &self.txn else { return };
        if t.ending
            && t.fenced.is_none()
            && t.adding.is_empty()
            && self.buffered == 0
            && self.in_flight() == 0
        {
            self.end_transaction(rec);
        }
    }

    /// Fails every batch not yet sent (open or ready).
    fn fail_queued(&mut self, cause: &str, rec: &mut Recorder) {
        let mut left = Vec::new();
        for ti in 0..self.topics.len() {
            for p in 0..self.topics[ti].queues.len() {
                if self.topics[ti].queues[p].open.is_some() {
                    self.close(ti, p as u32, rec);
                }
                left.extend(self.topics[ti].queues[p].ready.drain(..));
            }
        }
        for b in &left {
            self.fail(b, cause, rec);
        }
    }

    /// Takes the answer of the AddPartitionsToTxn under way, if it has
    /// come: its partitions' batches may go.
    fn poll_add(&mut self) {
        let Some(txn) = &mut self.txn else { return };
        if txn.adding.is_empty() {
            return;
        }
        match txn.coord.poll_add() {
            None => {}
            Some(Ok(())) => {
                let keys = std::mem::take(&mut txn.adding);
                txn.added.extend(keys);
            }
            Some(Err(e @ TxnError::Fenced { .. })) => {
                txn.adding.clear();
                self.fence(e.to_string());
            }
            Some(Err(e)) => {
                txn.adding.clear();
                self.client_errors.push(e.to_string());
                txn.doom("AddPartitionsToTxn failed");
            }
        }
    }

    /// Sends AddPartitionsToTxn for every partition that holds a batch and
    /// is not in the transaction yet, in one request, unless one is under
    /// way: the partitions that gain data meanwhile go in the next.
    fn add_partitions(&mut self) {
        let Some(txn) = &mut self.txn else { return };
        if !txn.adding.is_empty() {
            return;
        }
        let mut want: Vec<(String, Vec<i32>)> = Vec::new();
        let mut keys = Vec::new();
        for (ti, t) in self.topics.iter().enumerate() {
            let mut ps = Vec::new();
            for (p, q) in t.queues.iter().enumerate() {
                let has_data = q.open.is_some() || !q.ready.is_empty();
                if has_data && !txn.added.contains(&(ti, p as i32)) {
                    ps.push(p as i32);
                    keys.push((ti, p as i32));
                }
            }
            if !ps.is_empty() {
                want.push((t.name.clone(), ps));
            }
        }
        if want.is_empty() {
            return;
        }
        match txn.coord.start_add(&want) {
            Ok(()) => txn.adding = keys,
            Err(e @ TxnError::Fenced { .. }) => self.fence(e.to_string()),
            Err(e) => {
                self.client_errors.push(e.to_string());
                txn.doom("AddPartitionsToTxn failed");
            }
        }
    }

    /// EndTxn: commit, or abort a doomed transaction. A committed one's
    /// messages are done now; an aborted one's fail, and the producer takes
    /// a new epoch before the next, as its sequences may have a gap.
    fn end_transaction(&mut self, rec: &mut Recorder) {
        let Some(txn) = &mut self.txn else { return };
        if txn.messages == 0 {
            txn.reset();
            return;
        }
        let commit = txn.doomed.is_none();
        let sent_ns = self.clock.now_ns();
        // A transaction no partition joined is unknown to the coordinator
        // (EndTxn would answer INVALID_TXN_STATE): it ends here.
        let result = if txn.added.is_empty() {
            Ok(())
        } else {
            txn.coord.end(commit)
        };
        let now = self.clock.now_ns();
        match result {
            Ok(()) if commit => {
                rec.on_commit(txn.begun_ns.min(sent_ns), sent_ns, now);
                for &(t, start, bytes) in &txn.acked {
                    self.topics[t].acknowledged += 1;
                    rec.on_done(now, start, bytes);
                }
                txn.reset();
            }
            Err(e @ TxnError::Fenced { .. }) => self.fence(e.to_string()),
            other => {
                let cause = match (&other, &txn.doomed) {
                    (Err(e), _) => {
                        self.client_errors.push(e.to_string());
                        "EndTxn failed".to_string()
                    }
                    (Ok(()), Some(c)) => format!("transaction aborted: {c}"),
                    (Ok(()), None) => unreachable!("a commit is handled above"),
                };
                rec.on_abort();
                for &(_, start, _) in &txn.acked {
                    rec.on_error(start, 1, &cause);
                }
                txn.reset();
                self.needs_producer_id = true;
            }
        }
    }

    /// The producer is fenced: it fails everything it holds and sends
    /// nothing more.
    fn fence(&mut self, why: String) {
        let Some(txn) = &mut self.txn else { return };
        if txn.fenced.is_some() {
            return;
        }
        self.client_errors.push(why.clone());
        txn.fenced = Some(why);
    }

    /// After fencing, fails what the producer still holds: it will never
    /// be committed.
    fn drop_fenced(&mut self, rec: &mut Recorder) {
        if self.fenced().is_some() && self.pending_anything() {
            self.abandon("producer fenced", rec);
        }
    }

    fn pending_anything(&self) -> bool {
        self.buffered > 0 || self.txn.as_ref().is_some_and(|t| !t.acked.is_empty())
    }

    /// Fails batches past `delivery.timeout.ms` and requests past
    /// `request.timeout.ms` (whose connection is then dropped).
    fn expire(&mut self, now: u64, rec: &mut Recorder) {
        let delivery_ns = self.s.delivery_timeout_ms * 1_000_000;
        let mut expired = Vec::new();
        for t in &mut self.topics {
            for q in &mut t.queues {
                while q
                    .ready
                    .front()
                    .is_some_and(|b| now > b.created_ns + delivery_ns)
                {
                    expired.push(q.ready.pop_front().expect("front exists"));
                }
            }
        }
        for b in &expired {
            self.fail(b, "delivery.timeout.ms passed before sending", rec);
        }
        let request_ns = self.s.request_timeout_ms * 1_000_000;
        let timed_out: Vec<i32> = self
            .brokers
            .iter()
            .filter(|(_, b)| {
                b.in_flight
                    .front()
                    .is_some_and(|f| now > f.sent_ns + request_ns)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in timed_out {
            let e = ClientError::Timeout {
                what: "a Produce response",
                ms: self.s.request_timeout_ms,
            };
            self.fail_broker(id, &e, rec);
        }
    }

    /// Drops a broker's connection; its in-flight batches are retried.
    fn fail_broker(&mut self, id: i32, e: &ClientError, rec: &mut Recorder) {
        self.client_errors.push(e.to_string());
        self.needs_metadata = true;
        if let Some(b) = self.brokers.remove(&id) {
            let now = self.clock.now_ns();
            let unwritten = b.unwritten.into_iter().map(|(_, batches)| batches);
            for batches in b.in_flight.into_iter().map(|f| f.batches).chain(unwritten) {
                for (t, p, batch) in batches {
                    self.retry_or_fail(t, p, batch, now, &cause_of(e), rec);
                }
            }
        }
    }

    fn retry_or_fail(
        &mut self,
        t: usize,
        p: i32,
        mut batch: ClosedBatch,
        now: u64,
        cause: &str,
        rec: &mut Recorder,
    ) {
        batch.attempts += 1;
        let delivery_ns = self.s.delivery_timeout_ms * 1_000_000;
        // A batch of a transaction that must abort is not worth resending.
        let doomed = self.txn.as_ref().is_some_and(|t| t.doomed.is_some());
        if doomed || batch.attempts > self.s.retries || now > batch.created_ns + delivery_ns {
            self.fail(&batch, cause, rec);
            return;
        }
        batch.retry_at_ns = now + self.s.retry_backoff_ms * 1_000_000;
        self.topics[t].queues[p as usize].requeue(batch);
    }

    fn broker(&mut self, id: i32) -> Result<&mut Broker, ClientError> {
        if !self.brokers.contains_key(&id) {
            let mut conn =
                Connection::to_broker(&self.addrs, id, &self.s.security, CONNECT_TIMEOUT)?;
            let produce_version = conn.version(ApiKey::Produce)?;
            conn.set_nonblocking()?;
            self.brokers.insert(
                id,
                Broker {
                    conn,
                    produce_version,
                    in_flight: VecDeque::new(),
                    unwritten: VecDeque::new(),
                    drain_start: 0,
                },
            );
        }
        Ok(self.brokers.get_mut(&id).expect("inserted above"))
    }

    fn drain_to(&mut self, id: i32, now: u64, rec: &mut Recorder) -> Result<(), ClientError> {
        while !self.needs_producer_id && self.fenced().is_none() {
            if let Some(b) = self.brokers.get_mut(&id) {
                if b.conn.reauth_due() {
                    // Re-authentication waits for the answers in flight
                    // (KIP-368): nothing more is sent until they are in.
                    if !b.in_flight.is_empty() {
                        break;
                    }
                    b.conn.reauthenticate()?;
                }
                if b.in_flight.len() >= self.s.max_in_flight {
                    break;
                }
            }
            let batches = self.collect(id, now)?;
            if batches.is_empty() {
                break;
            }
            self.send_request(id, batches, now, rec)?;
        }
        if let Some(b) = self.brokers.get_mut(&id) {
            b.conn.flush_some()?;
        }
        Ok(())
    }

    /// Up to one sendable batch per partition led by `id`, within
    /// `max.request.size`.
    fn collect(
        &mut self,
        id: i32,
        now: u64,
    ) -> Result<Vec<(usize, i32, ClosedBatch)>, ClientError> {
        let Some(parts) = self.led.get(&id) else {
            return Ok(Vec::new());
        };
        // A partition's batches wait until AddPartitionsToTxn added it.
        let sendable =
            |t: usize, p: i32| self.txn.as_ref().is_none_or(|x| x.added.contains(&(t, p)));
        // Nothing goes until one partition is due (a full batch, a batch
        // that lingered, a retry whose backoff ended); then every partition
        // of the broker sends what it holds in the same request, lingered
        // or not, as the Java client drains a ready node: one request
        // instead of one per partition as each one's linger ends.
        let due = parts.iter().any(|&(t, p)| {
            sendable(t, p)
                && self.topics[t].queues[p as usize]
                    .deadline_ns(self.linger_ns)
                    .is_some_and(|d| d <= now)
        });
        if !due {
            return Ok(Vec::new());
        }
        let n = parts.len();
        let start = self.brokers.get(&id).map_or(0, |b| b.drain_start) % n.max(1);
        let mut out = Vec::new();
        let mut size = REQUEST_OVERHEAD;
        for i in 0..n {
            let (t, p) = parts[(start + i) % n];
            if !sendable(t, p) {
                continue;
            }
            let q = &mut self.topics[t].queues[p as usize];
            let open_before = q.open_bytes();
            // A ready batch is already counted at its closed size; only a
            // batch closed here (the open one, after linger) changes the count.
            let from_open = q.ready.is_empty();
            let drained = q
                .drain(now, self.s.compression, &mut self.scratch)
                .map_err(|e| ClientError::Encode {
                    api: ApiKey::Produce,
                    version: 0,
                    reason: e.to_string(),
                })?;
            let Some(batch) = drained else { continue };
            if from_open {
                self.buffered = self.buffered - open_before + batch.footprint();
                // A batch closed by its linger closes too: the next keyless
                // record goes elsewhere, or a slow producer would write one
                // partition for ever.
                self.sticky.on_batch_closed(t, p as u32, &mut self.rng);
            }
            if size + batch.wire.len() > self.s.max_request_size && !out.is_empty() {
                q.ready.push_front(batch);
                break;
            }
            size += batch.wire.len();
            out.push((t, p, batch));
        }
        if !out.is_empty() {
            let b = self.broker(id)?;
            b.drain_start = b.drain_start.wrapping_add(1);
        }
        Ok(out)
    }

    fn send_request(
        &mut self,
        id: i32,
        batches: Vec<(usize, i32, ClosedBatch)>,
        now: u64,
        rec: &mut Recorder,
    ) -> Result<(), ClientError> {
        // Grouped by topic, as the request lists each topic once.
        let mut order: Vec<usize> = (0..batches.len()).collect();
        order.sort_by_key(|&i| batches[i].0);
        let parts: Vec<ProducePart<'_>> = order
            .iter()
            .map(|&i| ProducePart {
                topic: &self.topics[batches[i].0].name,
                partition: batches[i].1,
                records: &batches[i].2.wire,
            })
            .collect();
        let acks = self.s.acks;
        let timeout_ms = self.s.request_timeout_ms.min(i32::MAX as u64) as i32;
        let b = self
            .brokers
            .get_mut(&id)
            .expect("collect connected to the broker");
        let version = b.produce_version;
        let correlation = b.conn.next_correlation();
        let txn_id = self.txn.as_ref().map(|t| t.coord.transactional_id.as_str());
        let pieces = produce_request_pieces(
            version,
            correlation,
            txn_id,
            acks.wire(),
            timeout_ms,
            &parts,
        );
        drop(parts);
        let broker = self.brokers.get_mut(&id).expect("present above");
        broker.conn.queue_pieces(pieces);
        if acks == Acks::None {
            // No response comes for acks=0: a batch is done once its whole
            // request has been written to the socket.
            let end = broker.conn.written() + broker.conn.queued_bytes() as u64;
            broker.unwritten.push_back((end, batches));
            broker.conn.flush_some()?;
            self.complete_written(id, rec);
            return Ok(());
        }
        broker.in_flight.push_back(InFlight {
            correlation,
            version,
            sent_ns: now,
            batches,
        });
        Ok(())
    }

    /// Messages acknowledged so far, per topic name.
    pub fn acknowledged(&self) -> impl Iterator<Item = (&str, u64)> {
        self.topics
            .iter()
            .map(|t| (t.name.as_str(), t.acknowledged))
    }

    fn complete(&mut self, t: usize, b: &ClosedBatch, now: u64, rec: &mut Recorder) {
        self.buffered -= b.footprint();
        let per_message = b.payload_bytes / b.starts.len().max(1) as u64;
        if let Some(txn) = &mut self.txn {
            // Done once the transaction commits.
            txn.acked
                .extend(b.starts.iter().map(|&s| (t, s, per_message)));
            return;
        }
        self.topics[t].acknowledged += b.starts.len() as u64;
        for &s in &b.starts {
            rec.on_done(now, s, per_message);
        }
    }

    /// Completes the acks=0 requests to `id` the socket has wholly taken.
    fn complete_written(&mut self, id: i32, rec: &mut Recorder) {
        let now = self.clock.now_ns();
        let Some(broker) = self.brokers.get_mut(&id) else {
            return;
        };
        let written = broker.conn.written();
        let mut done = Vec::new();
        while broker
            .unwritten
            .front()
            .is_some_and(|(end, _)| *end <= written)
        {
            let (_, batches) = broker.unwritten.pop_front().expect("front exists");
            done.extend(batches);
        }
        for (t, _, b) in done {
            self.complete(t, &b, now, rec);
        }
    }

    fn read_responses(&mut self, id: i32, rec: &mut Recorder) -> Result<(), ClientError> {
        let mut payloads = std::mem::take(&mut self.responses);
        payloads.clear();
        let broker = self
            .brokers
            .get_mut(&id)
            .expect("caller iterates existing brokers");
        broker.conn.flush_some()?;
        self.complete_written(id, rec);
        let broker = self.brokers.get_mut(&id).expect("still present");
        if broker.in_flight.is_empty() {
            self.responses = payloads;
            return Ok(());
        }
        broker.conn.read_available(&mut payloads)?;
        let now = self.clock.now_ns();
        for payload in payloads.drain(..) {
            let broker = self.brokers.get_mut(&id).expect("still present");
            let addr = broker.conn.addr();
            let f = broker
                .in_flight
                .pop_front()
                .ok_or(ClientError::Correlation {
                    addr,
                    expected: -1,
                    got: super::wire::correlation_id(&payload).unwrap_or(-1),
                })?;
            let (got, resp): (i32, ProduceResponse) =
                super::wire::decode_response(ApiKey::Produce, f.version, payload)?;
            if got != f.correlation {
                return Err(ClientError::Correlation {
                    addr,
                    expected: f.correlation,
                    got,
                });
            }
            self.handle(resp, f.batches, now, rec);
        }
        self.responses = payloads;
        Ok(())
    }

    fn handle(
        &mut self,
        resp: ProduceResponse,
        batches: Vec<(usize, i32, ClosedBatch)>,
        now: u64,
        rec: &mut Recorder,
    ) {
        for (t, p, b) in batches {
            let name = &self.topics[t].wire;
            let raw = resp
                .responses
                .iter()
                .filter(|r| &r.name == name)
                .flat_map(|r| r.partition_responses.iter())
                .find(|pr| pr.index == p)
                .map_or(ErrorCode::UnknownServerError.code(), |pr| pr.error_code);
            let code = ErrorCode::from_code(raw);
            if self.txn.is_some() && txn::is_fencing(raw) {
                self.fence(format!(
                    "transactional producer `{}` fenced: Produce to {}-{p} answered error {raw} ({})",
                    self.transactional_id().unwrap_or_default(),
                    self.topics[t].name,
                    txn::code_name(raw)
                ));
                self.fail(&b, &format!("broker error {}", txn::code_name(raw)), rec);
                continue;
            }
            let q = &mut self.topics[t].queues[p as usize];
            match code {
                // A duplicate was appended before: its first answer was lost.
                ErrorCode::None | ErrorCode::DuplicateSequenceNumber => {
                    q.acknowledged(&b);
                    self.complete(t, &b, now, rec);
                }
                ErrorCode::OutOfOrderSequenceNumber if q.behind_a_gap(&b) => {
                    self.retry_or_fail(t, p, b, now, &cause_of_code(code), rec);
                }
                // The broker no longer knows this producer (or its epoch).
                ErrorCode::UnknownProducerId | ErrorCode::InvalidProducerEpoch
                    if b.base_sequence >= 0 =>
                {
                    // A transaction aborts first; its abort renews the id.
                    match &mut self.txn {
                        Some(txn) => txn.doom(&cause_of_code(code)),
                        None => self.needs_producer_id = true,
                    }
                    self.retry_or_fail(t, p, b, now, &cause_of_code(code), rec);
                }
                c if c.is_retriable() => {
                    // Retrying these without fresh metadata asks the same
                    // wrong broker (or names a recreated topic's old id),
                    // as the Java client knows: leadership moved, the
                    // leader's epoch is ahead or behind ours, or its log
                    // directory failed.
                    if matches!(
                        c,
                        ErrorCode::NotLeaderOrFollower
                            | ErrorCode::UnknownTopicOrPartition
                            | ErrorCode::LeaderNotAvailable
                            | ErrorCode::InconsistentTopicId
                            | ErrorCode::FencedLeaderEpoch
                            | ErrorCode::UnknownLeaderEpoch
                            | ErrorCode::KafkaStorageError
                            | ErrorCode::UnknownTopicId
                    ) {
                        self.needs_metadata = true;
                    }
                    self.retry_or_fail(t, p, b, now, &cause_of_code(c), rec);
                }
                c => {
                    self.client_errors.push(format!(
                        "produce to {}-{p}: {c:?} ({})",
                        self.topics[t].name,
                        c.code()
                    ));
                    self.fail(&b, &cause_of_code(c), rec);
                }
            }
        }
    }

    /// When the producer next has work that no socket event will announce:
    /// a batch whose linger or retry backoff ends, or a metadata refresh.
    pub fn next_deadline_ns(&self) -> Option<u64> {
        let mut d: Option<u64> = None;
        let mut take = |v: u64| d = Some(d.map_or(v, |x| x.min(v)));
        for (ti, t) in self.topics.iter().enumerate() {
            for (p, q) in t.queues.iter().enumerate() {
                // A partition not yet in the transaction waits for its
                // AddPartitionsToTxn answer (a socket event), whatever its
                // linger says.
                if self
                    .txn
                    .as_ref()
                    .is_some_and(|txn| !txn.added.contains(&(ti, p as i32)))
                {
                    continue;
                }
                if let Some(v) = q.deadline_ns(self.linger_ns) {
                    take(v);
                }
            }
        }
        if self.needs_metadata || (self.needs_producer_id && self.in_flight() == 0) {
            take(self.next_metadata_ns);
        }
        // A refused send can go again now the transaction has ended.
        if self.txn.as_ref().is_some_and(|t| t.refused && !t.ending) {
            take(0);
        }
        for b in self.brokers.values() {
            if let Some(f) = b.in_flight.front() {
                take(f.sent_ns + self.s.request_timeout_ms * 1_000_000);
            }
        }
        if let Some(AddWait::Resend(after)) = self.txn.as_ref().and_then(|t| t.coord.add_wait()) {
            take(self.clock.now_ns() + after.as_nanos() as u64);
        }
        d
    }

    /// Poll descriptors for the sockets this producer waits on.
    pub fn pollfds(&self, out: &mut Vec<libc::pollfd>) {
        if let Some(AddWait::Answer(fd)) = self.txn.as_ref().and_then(|t| t.coord.add_wait()) {
            out.push(libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            });
        }
        for b in self.brokers.values() {
            let mut events = 0;
            if !b.in_flight.is_empty() {
                events |= libc::POLLIN;
            }
            if b.conn.wants_write() {
                events |= libc::POLLOUT;
            }
            if events != 0 {
                out.push(libc::pollfd {
                    fd: b.conn.raw_fd(),
                    events,
                    revents: 0,
                });
            }
        }
    }

    /// Whether every in-flight slot of every connection is taken.
    pub fn in_flight(&self) -> usize {
        self.brokers.values().map(|b| b.in_flight.len()).sum()
    }
}

/// Waits until a socket in `fds` is ready or `until_ns` (run time) passes.
pub fn wait(clock: &Clock, fds: &mut [libc::pollfd], until_ns: u64) {
    let now = clock.now_ns();
    if until_ns <= now {
        return;
    }
    let wait_ns = (until_ns - now).min(100_000_000);
    let ts = libc::timespec {
        tv_sec: (wait_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (wait_ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: `fds` is a valid, exclusively borrowed slice of pollfd for the
    // duration of the call; the timespec lives on this stack frame.
    unsafe {
        libc::ppoll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            &ts,
            std::ptr::null(),
        );
    }
}

/// A failed message's cause as reports group it: the broker's error code.
fn cause_of_code(c: ErrorCode) -> String {
    format!("broker error {c:?} ({})", c.code())
}

/// A failed request's cause, without the addresses that would split one
/// cause into many.
fn cause_of(e: &ClientError) -> String {
    match e {
        ClientError::Timeout { what, .. } => format!("no answer in time ({what})"),
        ClientError::Closed { .. } => "connection closed by the broker".into(),
        ClientError::Io { op, .. } => format!("connection error {op} the broker"),
        other => {
            let text = other.to_string();
            text.split(':').next().unwrap_or("client error").to_string()
        }
    }
}
