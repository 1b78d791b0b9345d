//! The harness consumer: a fetch loop over assigned partitions, assigned
//! statically or by a consumer group ([`super::group_consumer`]).
//!
//! As the Java client does, it keeps one Fetch in flight to every leader
//! of an assigned partition, all at once, so a leader holding its fetch for
//! `fetch.max.wait.ms` delays no other leader's records. Each asks for
//! records past the consumer's positions with `fetch.min.bytes`,
//! `fetch.max.wait.ms`, `fetch.max.bytes` and `max.partition.fetch.bytes`,
//! in an incremental fetch session (KIP-227) from Fetch v7: after the
//! first, full fetch, a request names only the partitions whose position
//! changed (and those no longer wanted), and the broker answers only those
//! with news. A session the broker no longer knows is reopened with the
//! next fetch. Returned batches are
//! CRC-checked, decompressed and walked, and each record's end-to-end
//! latency is taken from the send time the producer wrote into the first 8
//! bytes of its value (µs since the Unix epoch, big-endian), or from the
//! record's create timestamp (ms) when the value is shorter than 8 bytes.
//!
//! Control batches (transaction markers) are skipped. With
//! `isolation.level=read_committed` the Fetch asks for committed records
//! only: the broker answers up to the last stable offset and lists the
//! aborted transactions in the range, whose batches [`AbortedFilter`] drops
//! as the Java consumer does.

use super::admin::{self, topic_name, ClusterMetadata, EARLIEST, LATEST};
use super::compression::decompress;
use super::conn::Connection;
use super::endpoint::Endpoint;
use super::error::ClientError;
use crate::measure::clock::Clock;
use crate::measure::recorder::Recorder;
use crate::workload::props::ConsumerSettings;
use sluice_protocol::messages::messages::fetch_request::{
    FetchPartition, FetchTopic, ForgottenTopic,
};
use sluice_protocol::messages::messages::{
    ApiKey, BrokerId, FetchRequest, FetchResponse, TopicName,
};
use sluice_protocol::primitives::{DecodeError, Reader};
use sluice_protocol::record_batch::{
    validate_batch, BatchHeader, Compression, BATCH_HEADER_SIZE, LOG_OVERHEAD,
};
use sluice_protocol::ErrorCode;
use std::collections::BTreeMap;
use std::time::Duration;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest one fetch round waits for an answer before returning to its
/// caller (who may owe the group a heartbeat); fetches stay in flight.
const ROUND_WAIT: Duration = Duration::from_millis(100);
/// Fetch sessions (KIP-227) exist from this Fetch version.
const SESSION_VERSION_MIN: i16 = 7;

/// Fetch offsets by (topic, partition).
type Positions = BTreeMap<(String, i32), i64>;

/// The fetch pipeline to one leader: a non-blocking connection with at
/// most one Fetch in flight, and the fetch session open on it.
struct Fetcher {
    conn: Connection,
    version: i16,
    /// The Fetch in flight: its correlation id, and the positions the
    /// broker's session holds once it is answered.
    in_flight: Option<(i32, Positions)>,
    session: Option<Session>,
}

/// A fetch session: its id, the epoch of the next Fetch, and each
/// partition's offset as the broker last heard it.
struct Session {
    id: i32,
    epoch: i32,
    sent: Positions,
}

/// One assigned partition and the consumer's position in it.
#[derive(Clone, Debug)]
pub struct Assigned {
    pub topic: String,
    wire: TopicName,
    pub partition: i32,
    leader: i32,
    pub offset: i64,
}

pub struct Consumer {
    clock: Clock,
    s: ConsumerSettings,
    addrs: BTreeMap<i32, Endpoint>,
    /// Topic → leader per partition, from the last metadata.
    leaders: BTreeMap<String, Vec<i32>>,
    /// Blocking connections for offset lookups, by broker.
    conns: BTreeMap<i32, Connection>,
    fetchers: BTreeMap<i32, Fetcher>,
    pub assigned: Vec<Assigned>,
    bootstrap: Endpoint,
    pub client_errors: Vec<String>,
}

impl Consumer {
    /// A consumer of `partitions`, starting at each partition's earliest or
    /// latest offset as `auto.offset.reset` says.
    pub fn new(
        clock: Clock,
        settings: ConsumerSettings,
        partitions: &[(String, i32)],
        md: &ClusterMetadata,
        bootstrap: impl Into<Endpoint>,
    ) -> Result<Consumer, ClientError> {
        let mut assigned = Vec::with_capacity(partitions.len());
        for (t, p) in partitions {
            let (leader, _) = md.leader(t, *p)?;
            assigned.push(Assigned {
                topic: t.clone(),
                wire: topic_name(t),
                partition: *p,
                leader,
                offset: 0,
            });
        }
        let mut c = Consumer {
            clock,
            s: settings,
            addrs: md.brokers.clone(),
            leaders: md.topics.clone(),
            conns: BTreeMap::new(),
            fetchers: BTreeMap::new(),
            assigned,
            bootstrap: bootstrap.into(),
            client_errors: Vec::new(),
        };
        let at = if c.s.auto_offset_reset_earliest {
            EARLIEST
        } else {
            LATEST
        };
        c.reset_offsets(at)?;
        Ok(c)
    }

    fn conn(&mut self, leader: i32) -> Result<&mut Connection, ClientError> {
        if !self.conns.contains_key(&leader) {
            let conn =
                Connection::to_broker(&self.addrs, leader, &self.s.security, CONNECT_TIMEOUT)?;
            self.conns.insert(leader, conn);
        }
        Ok(self.conns.get_mut(&leader).expect("inserted above"))
    }

    /// Moves every position to the partition's `EARLIEST`/`LATEST` offset.
    pub fn reset_offsets(&mut self, at: i64) -> Result<(), ClientError> {
        self.reset_where(at, |_| true)
    }

    /// Replaces the assignment. Each partition starts at its `committed`
    /// offset when there is one, else at `reset_at` (`EARLIEST`/`LATEST`).
    pub fn reassign(
        &mut self,
        partitions: &[(String, i32)],
        committed: &BTreeMap<(String, i32), i64>,
        reset_at: i64,
    ) -> Result<(), ClientError> {
        let mut assigned = Vec::with_capacity(partitions.len());
        for (t, p) in partitions {
            let leader = self
                .leaders
                .get(t)
                .and_then(|ls| ls.get(*p as usize))
                .copied()
                .filter(|&l| l >= 0)
                .ok_or_else(|| ClientError::NoLeader {
                    topic: t.clone(),
                    partition: *p,
                })?;
            assigned.push(Assigned {
                topic: t.clone(),
                wire: topic_name(t),
                partition: *p,
                leader,
                offset: committed.get(&(t.clone(), *p)).copied().unwrap_or(-1),
            });
        }
        self.assigned = assigned;
        self.reset_where(reset_at, |a| a.offset < 0)
    }

    /// Leaders this consumer holds an incremental fetch session with.
    pub fn fetch_sessions(&self) -> usize {
        self.fetchers
            .values()
            .filter(|f| f.session.is_some())
            .count()
    }

    /// Every assigned partition and the next offset to read from it.
    pub fn positions(&self) -> Vec<(String, i32, i64)> {
        self.assigned
            .iter()
            .map(|a| (a.topic.clone(), a.partition, a.offset))
            .collect()
    }

    fn reset_where(
        &mut self,
        at: i64,
        pick: impl Fn(&Assigned) -> bool,
    ) -> Result<(), ClientError> {
        let mut by_leader: BTreeMap<(i32, String), Vec<i32>> = BTreeMap::new();
        for a in self.assigned.iter().filter(|a| pick(a)) {
            by_leader
                .entry((a.leader, a.topic.clone()))
                .or_default()
                .push(a.partition);
        }
        for ((leader, topic), parts) in by_leader {
            let isolation = self.s.isolation_level();
            let conn = self.conn(leader)?;
            let offsets = admin::list_offsets_isolated(conn, &topic, &parts, at, isolation)?;
            for a in &mut self.assigned {
                if a.topic == topic && pick(a) {
                    if let Some(o) = offsets.get(&a.partition) {
                        a.offset = *o;
                    }
                }
            }
        }
        Ok(())
    }

    /// One fetch round: a Fetch is sent to every leader that has none in
    /// flight, then whatever answers arrive within [`ROUND_WAIT`] are
    /// taken. Returns records consumed.
    pub fn fetch_once(&mut self, rec: &mut Recorder) -> Result<u64, ClientError> {
        let mut leaders: Vec<i32> = self.assigned.iter().map(|a| a.leader).collect();
        leaders.sort_unstable();
        leaders.dedup();
        for leader in leaders {
            if let Err(e) = self.start_fetch(leader) {
                self.fetch_failed(leader, e);
            }
        }
        let mut fds: Vec<libc::pollfd> = self
            .fetchers
            .values()
            .filter(|f| f.in_flight.is_some())
            .map(|f| libc::pollfd {
                fd: f.conn.raw_fd(),
                events: libc::POLLIN
                    | if f.conn.wants_write() {
                        libc::POLLOUT
                    } else {
                        0
                    },
                revents: 0,
            })
            .collect();
        let until = self.clock.now_ns() + ROUND_WAIT.as_nanos() as u64;
        if fds.is_empty() {
            // Nothing assigned, or every leader failed: wait, do not spin.
            std::thread::sleep(ROUND_WAIT);
            return Ok(0);
        }
        super::producer::wait(&self.clock, &mut fds, until);
        let waiting: Vec<i32> = self
            .fetchers
            .iter()
            .filter(|(_, f)| f.in_flight.is_some())
            .map(|(l, _)| *l)
            .collect();
        let mut total = 0;
        for leader in waiting {
            match self.collect(leader, rec) {
                Ok(n) => total += n,
                Err(e) => self.fetch_failed(leader, e),
            }
        }
        Ok(total)
    }

    /// Sends `leader` its next Fetch unless one is in flight.
    fn start_fetch(&mut self, leader: i32) -> Result<(), ClientError> {
        if self
            .fetchers
            .get(&leader)
            .is_some_and(|f| f.in_flight.is_some())
        {
            return Ok(());
        }
        if !self.fetchers.contains_key(&leader) {
            let mut conn =
                Connection::to_broker(&self.addrs, leader, &self.s.security, CONNECT_TIMEOUT)?;
            let version = conn.version(ApiKey::Fetch)?;
            conn.set_nonblocking()?;
            self.fetchers.insert(
                leader,
                Fetcher {
                    conn,
                    version,
                    in_flight: None,
                    session: None,
                },
            );
        }
        let want: Positions = self
            .assigned
            .iter()
            .filter(|a| a.leader == leader)
            .map(|a| ((a.topic.clone(), a.partition), a.offset))
            .collect();
        let f = self.fetchers.get_mut(&leader).expect("inserted above");
        if f.conn.reauth_due() {
            // No Fetch is in flight here: the session is renewed between
            // two of them (KIP-368).
            f.conn.reauthenticate()?;
        }
        let req = fetch_request(
            &self.s,
            &want,
            f.session.as_ref(),
            f.version >= SESSION_VERSION_MIN,
        );
        let corr = f.conn.queue(ApiKey::Fetch, f.version, &req)?;
        f.conn.flush_some()?;
        f.in_flight = Some((corr, want));
        Ok(())
    }

    /// Takes `leader`'s answer if it has arrived. Returns records consumed.
    fn collect(&mut self, leader: i32, rec: &mut Recorder) -> Result<u64, ClientError> {
        let f = self.fetchers.get_mut(&leader).expect("in flight");
        f.conn.flush_some()?;
        let mut frames = Vec::new();
        f.conn.read_available(&mut frames)?;
        if frames.len() > 1 {
            return Err(ClientError::Decode {
                api: ApiKey::Fetch,
                version: f.version,
                reason: format!(
                    "{} answered more than the one Fetch in flight",
                    f.conn.addr()
                ),
            });
        }
        let Some(payload) = frames.pop() else {
            return Ok(0);
        };
        let (expected, sent) = f.in_flight.take().expect("in flight");
        let (got, resp): (i32, FetchResponse) =
            super::wire::decode_response(ApiKey::Fetch, f.version, payload)?;
        if got != expected {
            return Err(ClientError::Correlation {
                addr: f.conn.addr(),
                expected,
                got,
            });
        }
        match ErrorCode::from_code(resp.error_code) {
            ErrorCode::None => {}
            // The broker let the session go: the next Fetch opens another.
            ErrorCode::FetchSessionIdNotFound | ErrorCode::InvalidFetchSessionEpoch => {
                f.session = None;
                return Ok(0);
            }
            code => {
                return Err(ClientError::Broker {
                    what: "Fetch".into(),
                    code,
                })
            }
        }
        match &mut f.session {
            Some(s) => {
                s.epoch = if s.epoch == i32::MAX { 1 } else { s.epoch + 1 };
                s.sent = sent;
            }
            None if resp.session_id != 0 => {
                f.session = Some(Session {
                    id: resp.session_id,
                    epoch: 1,
                    sent,
                });
            }
            None => {}
        }
        self.take_records(&resp, rec)
    }

    /// A leader's fetch failed: its connection and session are dropped,
    /// the error kept, and the metadata asked again.
    fn fetch_failed(&mut self, leader: i32, e: ClientError) {
        self.fetchers.remove(&leader);
        self.client_errors.push(e.to_string());
        self.refresh_metadata();
        std::thread::sleep(Duration::from_millis(100));
    }

    fn refresh_metadata(&mut self) {
        let topics: Vec<String> = {
            let mut t: Vec<String> = self.assigned.iter().map(|a| a.topic.clone()).collect();
            t.dedup();
            t
        };
        let md = Connection::open(&self.bootstrap, &self.s.security, CONNECT_TIMEOUT)
            .and_then(|mut c| admin::metadata(&mut c, Some(&topics)));
        match md {
            Ok(md) => {
                self.addrs = md.brokers.clone();
                self.leaders.extend(md.topics.clone());
                for a in &mut self.assigned {
                    if let Ok((l, _)) = md.leader(&a.topic, a.partition) {
                        a.leader = l;
                    }
                }
            }
            Err(e) => self.client_errors.push(format!("metadata refresh: {e}")),
        }
    }

    /// Consumes the records of a Fetch answer. Returns records consumed.
    fn take_records(
        &mut self,
        resp: &FetchResponse,
        rec: &mut Recorder,
    ) -> Result<u64, ClientError> {
        let mut n = 0;
        let mut reset = false;
        for t in &resp.responses {
            for p in &t.partitions {
                let Some(i) = self
                    .assigned
                    .iter()
                    .position(|a| a.wire == t.topic && a.partition == p.partition_index)
                else {
                    continue;
                };
                match ErrorCode::from_code(p.error_code) {
                    ErrorCode::None => {}
                    ErrorCode::OffsetOutOfRange => {
                        reset = true;
                        continue;
                    }
                    c => {
                        self.client_errors.push(format!(
                            "fetch {}-{}: {c:?}",
                            self.assigned[i].topic, p.partition_index
                        ));
                        continue;
                    }
                }
                let Some(records) = &p.records else { continue };
                let a = &mut self.assigned[i];
                let clock = self.clock;
                let aborted: Vec<(i64, i64)> = p
                    .aborted_transactions
                    .iter()
                    .flatten()
                    .map(|t| (t.producer_id.0, t.first_offset))
                    .collect();
                let mut filter = AbortedFilter::new(aborted);
                let (count, next) = consume_records(
                    records,
                    a.offset,
                    &mut filter,
                    &clock,
                    &mut || clock.now_ns(),
                    rec,
                )
                .map_err(|reason| ClientError::CorruptBatch {
                    topic: a.topic.clone(),
                    partition: a.partition,
                    reason,
                })?;
                a.offset = next;
                n += count;
            }
        }
        if reset {
            self.reset_offsets(EARLIEST)?;
        }
        Ok(n)
    }
}

/// The next Fetch for `want`: in `session`, only the partitions whose
/// offset the broker has not heard, and those to forget; else every
/// partition, asking for a new session when `sessions` (Fetch v7+).
fn fetch_request(
    s: &ConsumerSettings,
    want: &Positions,
    session: Option<&Session>,
    sessions: bool,
) -> FetchRequest {
    let send: Positions = match session {
        Some(session) => want
            .iter()
            .filter(|(k, o)| session.sent.get(*k) != Some(*o))
            .map(|(k, o)| (k.clone(), *o))
            .collect(),
        None => want.clone(),
    };
    let forget: Vec<&(String, i32)> = session.map_or_else(Vec::new, |session| {
        session
            .sent
            .keys()
            .filter(|k| !want.contains_key(*k))
            .collect()
    });
    let mut topics: Vec<FetchTopic> = Vec::new();
    for ((topic, partition), offset) in &send {
        let fp = FetchPartition::default()
            .with_partition(*partition)
            .with_fetch_offset(*offset)
            .with_partition_max_bytes(s.max_partition_fetch_bytes);
        let wire = topic_name(topic);
        match topics.iter_mut().find(|t| t.topic == wire) {
            Some(t) => t.partitions.push(fp),
            None => topics.push(
                FetchTopic::default()
                    .with_topic(wire)
                    .with_partitions(vec![fp]),
            ),
        }
    }
    let mut forgotten: Vec<ForgottenTopic> = Vec::new();
    for (topic, partition) in forget {
        let wire = topic_name(topic);
        match forgotten.iter_mut().find(|t| t.topic == wire) {
            Some(t) => t.partitions.push(*partition),
            None => forgotten.push(
                ForgottenTopic::default()
                    .with_topic(wire)
                    .with_partitions(vec![*partition]),
            ),
        }
    }
    let (id, epoch) = match session {
        Some(session) => (session.id, session.epoch),
        None if sessions => (0, 0),
        None => (0, -1),
    };
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(s.fetch_max_wait_ms)
        .with_min_bytes(s.fetch_min_bytes)
        .with_max_bytes(s.fetch_max_bytes)
        .with_isolation_level(s.isolation_level())
        .with_session_id(id)
        .with_session_epoch(epoch)
        .with_topics(topics)
        .with_forgotten_topics_data(forgotten)
}

/// Calls `each(offset_delta, timestamp_delta, value)` for the `count`
/// records of an uncompressed records section, checking every length
/// against the section. It reads only what latency needs: a record's key
/// and headers are skipped over by its length, and nothing is allocated
/// (decoding into a `Vec` of records with their header lists cost an
/// allocation per batch and twice the instructions per record).
pub fn walk_records(
    section: &[u8],
    count: i32,
    mut each: impl FnMut(i32, i64, &[u8]),
) -> Result<(), DecodeError> {
    let mut r = Reader::new(section);
    for _ in 0..count {
        let len = r.varint("record length")?;
        if len < 0 {
            return Err(DecodeError::Invalid {
                field: "record length",
                value: i64::from(len),
            });
        }
        let mut rr = Reader::new(r.take(len as usize, "record")?);
        rr.take(1, "record attributes")?;
        let timestamp_delta = rr.varlong("timestamp delta")?;
        let offset_delta = rr.varint("offset delta")?;
        let key_len = rr.varint("key length")?;
        if key_len > 0 {
            rr.take(key_len as usize, "key")?;
        }
        let value_len = rr.varint("value length")?;
        let value = if value_len > 0 {
            rr.take(value_len as usize, "value")?
        } else {
            &[]
        };
        each(offset_delta, timestamp_delta, value);
    }
    Ok(())
}

/// Records every record at or past `from` in a fetched record set; returns
/// the count and the next offset to fetch. A partial batch at the end (the
/// broker cuts at `max.partition.fetch.bytes`) is left for the next fetch.
pub fn consume_records(
    set: &[u8],
    from: i64,
    aborted: &mut AbortedFilter,
    clock: &Clock,
    now: &mut dyn FnMut() -> u64,
    rec: &mut Recorder,
) -> Result<(u64, i64), String> {
    let mut pos = 0;
    let mut next = from;
    let mut count = 0;
    while pos + LOG_OVERHEAD <= set.len() {
        let Some(h) = BatchHeader::parse(&set[pos..]) else {
            break;
        };
        let size = h.total_size();
        if size < BATCH_HEADER_SIZE {
            return Err(format!("batch_length {} at byte {pos}", h.batch_length));
        }
        if pos + size > set.len() {
            break;
        }
        let batch = &set[pos..pos + size];
        validate_batch(batch, pos).map_err(|e| e.to_string())?;
        pos += size;
        let dropped = aborted.drops(&h, batch);
        if h.next_offset().0 <= from || h.is_control() || dropped {
            next = next.max(h.next_offset().0);
            continue;
        }
        let codec = h.compression().ok_or("unknown compression codec")?;
        let section = if codec == Compression::None {
            std::borrow::Cow::Borrowed(&batch[BATCH_HEADER_SIZE..])
        } else {
            std::borrow::Cow::Owned(
                decompress(codec, &batch[BATCH_HEADER_SIZE..]).map_err(|e| e.to_string())?,
            )
        };
        // Consumed once walked: what an application sees.
        let now_ns = now();
        let base_offset = h.base_offset.0;
        let base_timestamp = h.base_timestamp;
        walk_records(
            &section,
            h.records_count,
            |offset_delta, timestamp_delta, value| {
                if base_offset + i64::from(offset_delta) < from {
                    return;
                }
                let start_ns = match value.get(..8) {
                    Some(b) => {
                        clock.ns_of_unix_us(i64::from_be_bytes(b.try_into().expect("8 bytes")))
                    }
                    None => {
                        rec.totals.timestamp_starts += 1;
                        clock.ns_of_unix_us((base_timestamp + timestamp_delta) * 1_000)
                    }
                };
                rec.on_done(now_ns, start_ns, value.len() as u64);
                count += 1;
            },
        )
        .map_err(|e| e.to_string())?;
        next = next.max(h.next_offset().0);
    }
    Ok((count, next))
}

/// Control record type of an abort marker (the key is version i16, type
/// i16; 1 is a commit).
const CONTROL_ABORT: i16 = 0;

/// Drops the batches of aborted transactions from a read_committed fetch.
///
/// The broker lists, per partition, each aborted transaction that overlaps
/// the fetched range as (producer id, first offset). Walking the batches in
/// offset order, a producer becomes aborted once a batch reaches its
/// transaction's first offset, and stays so until its abort marker: its
/// transactional batches in between are dropped. A producer's transactions
/// do not overlap, so its commits cannot fall inside that stretch.
#[derive(Debug, Default)]
pub struct AbortedFilter {
    /// (first offset, producer id), by first offset.
    pending: Vec<(i64, i64)>,
    next: usize,
    /// Producers inside an aborted transaction at the current batch.
    aborted: Vec<i64>,
}

impl AbortedFilter {
    /// From the fetch answer's (producer id, first offset) pairs; none for
    /// read_uncommitted.
    pub fn new(list: Vec<(i64, i64)>) -> AbortedFilter {
        let mut pending: Vec<(i64, i64)> = list.into_iter().map(|(p, o)| (o, p)).collect();
        pending.sort_unstable();
        AbortedFilter {
            pending,
            next: 0,
            aborted: Vec::new(),
        }
    }

    /// Whether `batch` (with header `h`) belongs to an aborted transaction.
    /// Batches must be shown in offset order.
    pub fn drops(&mut self, h: &BatchHeader, batch: &[u8]) -> bool {
        if self.pending.is_empty() || h.producer_id < 0 {
            return false;
        }
        let last = h.last_offset().0;
        while let Some(&(first, pid)) = self.pending.get(self.next) {
            if first > last {
                break;
            }
            if !self.aborted.contains(&pid) {
                self.aborted.push(pid);
            }
            self.next += 1;
        }
        if h.is_control() {
            if control_type(batch) == Some(CONTROL_ABORT) {
                self.aborted.retain(|&p| p != h.producer_id);
            }
            return false;
        }
        h.is_transactional() && self.aborted.contains(&h.producer_id)
    }
}

/// The type in a control batch's first record key, if it parses. Control
/// batches are never compressed.
fn control_type(batch: &[u8]) -> Option<i16> {
    let mut r = Reader::new(batch.get(BATCH_HEADER_SIZE..)?);
    let len = r.varint("record length").ok()?;
    let mut rr = Reader::new(r.take(usize::try_from(len).ok()?, "record").ok()?);
    rr.take(1, "record attributes").ok()?;
    rr.varlong("timestamp delta").ok()?;
    rr.varint("offset delta").ok()?;
    let key_len = rr.varint("key length").ok()?;
    let key = rr.take(usize::try_from(key_len).ok()?, "key").ok()?;
    let mut kr = Reader::new(key);
    kr.i16("control version").ok()?;
    kr.i16("control type").ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::accumulator::PartitionQueue;

    #[test]
    fn fetches_name_only_what_the_session_has_not_heard() {
        let s = ConsumerSettings::default();
        let want: Positions = [(("t".to_string(), 0), 5), (("t".to_string(), 1), 7)]
            .into_iter()
            .collect();
        let names = |r: &FetchRequest| -> Vec<(i32, i64)> {
            r.topics
                .iter()
                .flat_map(|t| t.partitions.iter().map(|p| (p.partition, p.fetch_offset)))
                .collect()
        };
        // Before Fetch v7: every partition, no session.
        let r = fetch_request(&s, &want, None, false);
        assert_eq!((r.session_id, r.session_epoch), (0, -1));
        assert_eq!(names(&r), vec![(0, 5), (1, 7)]);
        // v7+: every partition, asking for a session.
        let r = fetch_request(&s, &want, None, true);
        assert_eq!((r.session_id, r.session_epoch), (0, 0));
        assert_eq!(names(&r), vec![(0, 5), (1, 7)]);
        // In a session: partition 0 moved, 1 did not, 2 is no longer wanted.
        let session = Session {
            id: 9,
            epoch: 3,
            sent: [
                (("t".to_string(), 0), 2),
                (("t".to_string(), 1), 7),
                (("t".to_string(), 2), 4),
            ]
            .into_iter()
            .collect(),
        };
        let r = fetch_request(&s, &want, Some(&session), true);
        assert_eq!((r.session_id, r.session_epoch), (9, 3));
        assert_eq!(names(&r), vec![(0, 5)]);
        assert_eq!(r.forgotten_topics_data.len(), 1);
        assert_eq!(r.forgotten_topics_data[0].partitions, vec![2]);
        // Nothing changed: an empty incremental fetch.
        let session = Session {
            sent: want.clone(),
            ..session
        };
        let r = fetch_request(&s, &want, Some(&session), true);
        assert!(r.topics.is_empty() && r.forgotten_topics_data.is_empty());
    }

    #[test]
    fn consumes_from_the_position_and_keeps_partial_batches() {
        let clock = Clock::start();
        let mut q = PartitionQueue::new();
        let mut scratch = Vec::new();
        let sent_us = clock.unix_us(1_000_000);
        for i in 0..4u8 {
            let mut v = sent_us.to_be_bytes().to_vec();
            v.push(i);
            q.append(0, sent_us / 1000, None, &v, 0);
        }
        q.close(Compression::Lz4, &mut scratch).unwrap();
        let mut set = q.ready.pop_front().unwrap().wire.to_vec();
        let first_len = set.len();
        set.extend_from_slice(&set.clone()[..20]); // a partial second batch
        let mut rec = Recorder::new(0, 0, u64::MAX);
        let (n, next) = consume_records(
            &set,
            1,
            &mut AbortedFilter::default(),
            &clock,
            &mut || 3_000_000,
            &mut rec,
        )
        .unwrap();
        assert_eq!((n, next), (3, 4));
        rec.finish(3_000_000);
        // Sent at 1 ms, consumed at 3 ms: 2 ms end to end.
        let p50 = rec.totals.latency.value_at_quantile(0.5);
        assert!((1_990..=2_010).contains(&p50), "{p50}");
        assert!(
            consume_records(
                &set[..first_len],
                4,
                &mut AbortedFilter::default(),
                &clock,
                &mut || 0,
                &mut rec
            )
            .unwrap()
            .0 == 0
        );
    }

    /// A transactional batch of `n` records by producer `pid` at
    /// `base_offset`; with `control`, a marker of that type instead.
    fn txn_batch(pid: i64, base_offset: i64, n: usize, control: Option<i16>) -> Vec<u8> {
        use crate::client::batch::{BatchWriter, ProducerFields};
        use sluice_protocol::record_batch::{compute_crc, ATTRIBUTES_OFFSET, CRC_OFFSET};
        let mut w = BatchWriter::new(1, 64);
        for _ in 0..n {
            match control {
                Some(t) => {
                    let key = [0, 0, (t >> 8) as u8, t as u8];
                    w.push(1, Some(&key[..]), [&[0, 0, 0, 0, 0, 0][..], &[]]);
                }
                None => w.push(1, None, [&7_000_000i64.to_be_bytes()[..], &[]]),
            }
        }
        let p = ProducerFields {
            id: pid,
            epoch: 0,
            base_sequence: 0,
            transactional: true,
        };
        let mut b = w.finish(Compression::None, p, &mut Vec::new()).unwrap();
        b[..8].copy_from_slice(&base_offset.to_be_bytes());
        if control.is_some() {
            // The control bit, 0x20 of the attributes' low byte.
            b[ATTRIBUTES_OFFSET + 1] |= 0x20;
            let crc = compute_crc(&b);
            b[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
        }
        b
    }

    /// read_committed: producer 7's first transaction (offsets 0-1) was
    /// aborted, its second (4-5) committed; producer 8 committed both of
    /// its own, one of them written between 7's aborted records and its
    /// abort marker. Only 7's aborted records are dropped, and markers are
    /// never counted.
    #[test]
    fn aborted_transactions_are_dropped_and_markers_skipped() {
        let clock = Clock::start();
        let mut set = Vec::new();
        for b in [
            txn_batch(7, 0, 2, None),
            txn_batch(8, 2, 1, None),
            txn_batch(7, 3, 1, Some(CONTROL_ABORT)),
            txn_batch(7, 4, 2, None),
            txn_batch(7, 6, 1, Some(1)),
            txn_batch(8, 7, 1, None),
            txn_batch(8, 8, 1, Some(1)),
        ] {
            let h = BatchHeader::parse(&b).unwrap();
            assert!(h.is_transactional());
            validate_batch(&b, 0).unwrap();
            set.extend_from_slice(&b);
        }
        let mut rec = Recorder::new(0, 0, u64::MAX);
        let mut committed = AbortedFilter::new(vec![(7, 0)]);
        let got = consume_records(&set, 0, &mut committed, &clock, &mut || 1, &mut rec);
        assert_eq!(got.unwrap(), (4, 9));
        // read_uncommitted sees every data record.
        let mut all = AbortedFilter::default();
        let got = consume_records(&set, 0, &mut all, &clock, &mut || 1, &mut rec);
        assert_eq!(got.unwrap(), (6, 9));
        // An aborted transaction listed past a fetch's start leaves the
        // earlier batches of the same producer alone.
        let mut later = AbortedFilter::new(vec![(7, 4)]);
        let got = consume_records(&set, 0, &mut later, &clock, &mut || 1, &mut rec);
        assert_eq!(got.unwrap(), (4, 9));
    }
}
