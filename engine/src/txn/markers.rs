//! Writing transaction markers: a prepared transaction's COMMIT or ABORT
//! goes to every partition it touched as a WriteTxnMarkers request to
//! the partition's leader, over the inter-broker listener. This broker's
//! own partitions get the same request handed straight to the handler's
//! work (`write_txn_markers::write_markers`), which appends each marker
//! on the shard owning its partition.
//!
//! One sender task per shard drains a queue: each round it groups every
//! waiting transaction's remaining partitions by leader and sends one
//! request per leader carrying all of them, so many transactions
//! completing together cost one round trip per broker. A partition is
//! done when its leader answers NONE; a leader move, a lost connection
//! or a retriable error keeps it for the next round; a partition whose
//! topic was deleted is dropped. An epoch error means a newer
//! coordinator or producer epoch wrote there: the coordinator gives the
//! transaction up to its successor.

use crate::shard::broker_client::BrokerConn;
use crate::shard::Shard;
use futures::channel::oneshot;
use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::{
    ApiKey, ProducerId, TopicName, WriteTxnMarkersRequest, WriteTxnMarkersResponse,
};
use kafka_protocol::protocol::StrBytes;
use sluice_protocol::ErrorCode;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;
use std::time::Duration;

/// WriteTxnMarkers v1, the only version Kafka 4 speaks.
const WRITE_TXN_MARKERS_VERSION: i16 = 1;

/// Pause before a round that follows one with failures.
const BACKOFF: Duration = Duration::from_millis(100);

/// Most transactions in one request, so a request stays small.
const MARKERS_PER_REQUEST_MAX: usize = 1_000;

/// What to write: one transaction's outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Marker {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub commit: bool,
    pub coordinator_epoch: i32,
}

struct Job {
    /// The `__transaction_state` partition of the transaction: once this
    /// broker no longer leads it under the marker's coordinator epoch,
    /// the job is given up to the new coordinator.
    state_partition: i32,
    marker: Marker,
    remaining: BTreeSet<(String, i32)>,
    failed: Option<ErrorCode>,
    done: Option<oneshot::Sender<Result<(), ErrorCode>>>,
}

/// The per-shard marker queue and its sender.
#[derive(Default)]
pub struct MarkerSender {
    queue: RefCell<Vec<Job>>,
    running: Cell<bool>,
}

impl MarkerSender {
    /// Writes `marker` to every partition; returns once each has it (or
    /// its topic is gone), or with the error that made it give up.
    pub async fn write(
        &self,
        shard: &Rc<Shard>,
        state_partition: i32,
        marker: Marker,
        partitions: Vec<(String, i32)>,
    ) -> Result<(), ErrorCode> {
        if partitions.is_empty() {
            return Ok(());
        }
        let (tx, rx) = oneshot::channel();
        self.queue.borrow_mut().push(Job {
            state_partition,
            marker,
            remaining: partitions.into_iter().collect(),
            failed: None,
            done: Some(tx),
        });
        if !self.running.replace(true) {
            let shard = Rc::clone(shard);
            glommio::spawn_local(async move {
                if let Some(c) = super::coordinator() {
                    c.markers_run(&shard).await;
                }
            })
            .detach();
        }
        rx.await.unwrap_or(Err(ErrorCode::CoordinatorNotAvailable))
    }

    /// Sends rounds until the queue is empty.
    pub(super) async fn run(&self, shard: &Rc<Shard>) {
        let mut conns: HashMap<i32, BrokerConn> = HashMap::new();
        loop {
            let mut jobs: Vec<Job> = std::mem::take(&mut *self.queue.borrow_mut());
            if jobs.is_empty() || shard.broker.stopping() {
                for j in &mut jobs {
                    finish(j, Err(ErrorCode::CoordinatorNotAvailable));
                }
                self.running.set(false);
                return;
            }
            for j in &mut jobs {
                let epoch =
                    super::coordinator::TxnCoordinator::leader_epoch(shard, j.state_partition);
                if epoch != Some(j.marker.coordinator_epoch) {
                    j.failed = Some(ErrorCode::NotCoordinator);
                }
            }
            jobs.retain_mut(|j| match j.failed {
                Some(code) => {
                    finish(j, Err(code));
                    false
                }
                None => true,
            });
            let clean = round(shard, &mut jobs, &mut conns).await;
            for mut j in jobs {
                match (j.failed, j.remaining.is_empty()) {
                    (Some(code), _) => finish(&mut j, Err(code)),
                    (None, true) => finish(&mut j, Ok(())),
                    (None, false) => self.queue.borrow_mut().push(j),
                }
            }
            if !clean {
                glommio::timer::sleep(BACKOFF).await;
            }
        }
    }
}

impl super::coordinator::TxnCoordinator {
    pub(super) async fn markers_run(&self, shard: &Rc<Shard>) {
        self.marker_sender().run(shard).await;
    }
}

fn finish(j: &mut Job, result: Result<(), ErrorCode>) {
    if let Some(tx) = j.done.take() {
        let _ = tx.send(result);
    }
}

/// One round: every job's remaining partitions to their leaders. True if
/// nothing failed (no backoff needed).
async fn round(shard: &Rc<Shard>, jobs: &mut [Job], conns: &mut HashMap<i32, BrokerConn>) -> bool {
    let snapshot = shard.metadata();
    let mut clean = true;
    // leader -> job index -> topic -> partitions
    let mut by_leader: BTreeMap<i32, BTreeMap<usize, BTreeMap<String, Vec<i32>>>> = BTreeMap::new();
    for (i, j) in jobs.iter_mut().enumerate() {
        j.remaining.retain(|(t, p)| {
            let exists = snapshot
                .topic(t)
                .is_some_and(|m| *p >= 0 && *p < m.partitions);
            if !exists {
                tracing::warn!(topic = %t, partition = p, "dropping a deleted partition from a transaction");
            }
            exists
        });
        for (t, p) in &j.remaining {
            let leader = snapshot
                .topic(t)
                .and_then(|m| m.partition(*p))
                .and_then(|s| s.leader);
            match leader {
                Some(l) => by_leader
                    .entry(l.0)
                    .or_default()
                    .entry(i)
                    .or_default()
                    .entry(t.clone())
                    .or_default()
                    .push(*p),
                None => clean = false,
            }
        }
    }
    let mut sends = Vec::new();
    for (leader, work) in by_leader {
        let conn = conns.remove(&leader);
        let work: Vec<_> = work.into_iter().take(MARKERS_PER_REQUEST_MAX).collect();
        let markers: Vec<Marker> = work.iter().map(|(i, _)| jobs[*i].marker).collect();
        sends.push(async move {
            let result = send(shard, leader, conn, &markers, &work).await;
            (leader, work, result)
        });
    }
    for (leader, work, result) in futures::future::join_all(sends).await {
        let (conn, answers) = match result {
            Ok(ok) => ok,
            Err(e) => {
                tracing::debug!(leader, error = %e, "sending transaction markers failed");
                clean = false;
                continue;
            }
        };
        if let Some(conn) = conn {
            conns.insert(leader, conn);
        }
        for ((i, _), answer) in work.iter().zip(answers) {
            let j = &mut jobs[*i];
            for (topic, partition, code) in answer {
                match code {
                    ErrorCode::None => {
                        j.remaining.remove(&(topic, partition));
                    }
                    ErrorCode::InvalidProducerEpoch | ErrorCode::TransactionCoordinatorFenced => {
                        j.failed = Some(code);
                    }
                    code => {
                        if !code.is_retriable() {
                            tracing::warn!(%topic, partition, ?code, "a leader refused a transaction marker; retrying");
                        }
                        clean = false;
                    }
                }
            }
        }
    }
    clean
}

type Answers = Vec<Vec<(String, i32, ErrorCode)>>;

/// Sends one WriteTxnMarkers to `leader`; each job's partition codes in
/// request order.
/// Markers for this broker's own partitions are appended directly, as
/// its WriteTxnMarkers handler would, without a connection to itself.
async fn send(
    shard: &Rc<Shard>,
    leader: i32,
    conn: Option<BrokerConn>,
    markers: &[Marker],
    work: &[(usize, BTreeMap<String, Vec<i32>>)],
) -> std::io::Result<(Option<BrokerConn>, Answers)> {
    let request = WriteTxnMarkersRequest::default().with_markers(
        markers
            .iter()
            .zip(work)
            .map(|(m, (_, topics))| {
                WritableTxnMarker::default()
                    .with_producer_id(ProducerId(m.producer_id))
                    .with_producer_epoch(m.producer_epoch)
                    .with_transaction_result(m.commit)
                    .with_coordinator_epoch(m.coordinator_epoch)
                    .with_topics(
                        topics
                            .iter()
                            .map(|(t, ps)| {
                                WritableTxnMarkerTopic::default()
                                    .with_name(TopicName(StrBytes::from_string(t.clone())))
                                    .with_partition_indexes(ps.clone())
                            })
                            .collect(),
                    )
            })
            .collect(),
    );
    let (conn, resp) = if leader == shard.metadata().node_id {
        let resp = crate::server::handlers::write_txn_markers::write_markers(shard, &request, true);
        (conn, resp.await)
    } else {
        let refused =
            || std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "no connection");
        let mut conn = match conn {
            Some(c) => c,
            None => BrokerConn::connect(shard, leader, "sluice-txn-coordinator")
                .await
                .ok_or_else(refused)?,
        };
        let resp: WriteTxnMarkersResponse = conn
            .call(ApiKey::WriteTxnMarkers, WRITE_TXN_MARKERS_VERSION, &request)
            .await?;
        (Some(conn), resp)
    };
    // Answers are matched by producer id; anything the leader left out
    // stays for the next round.
    let mut answers = Vec::new();
    for (m, (_, topics)) in markers.iter().zip(work) {
        let found = resp
            .markers
            .iter()
            .find(|r| r.producer_id.0 == m.producer_id);
        let mut codes = Vec::new();
        for (t, ps) in topics {
            for p in ps {
                let code = found
                    .and_then(|r| r.topics.iter().find(|rt| rt.name.0.as_str() == t))
                    .and_then(|rt| rt.partitions.iter().find(|rp| rp.partition_index == *p))
                    .map_or(ErrorCode::RequestTimedOut, |rp| {
                        ErrorCode::from_code(rp.error_code)
                    });
                codes.push((t.clone(), *p, code));
            }
        }
        answers.push(codes);
    }
    Ok((conn, answers))
}
