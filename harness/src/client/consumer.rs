//! The harness consumer: a fetch loop over assigned partitions, assigned
//! statically or by a consumer group ([`super::group_consumer`]).
//!
//! Each fetch asks every assigned partition's leader for records past the
//! consumer's position with `fetch.min.bytes`, `fetch.max.wait.ms`,
//! `fetch.max.bytes` and `max.partition.fetch.bytes`. Returned batches are
//! CRC-checked, decompressed and decoded, and each record's end-to-end
//! latency is taken from the send time the producer wrote into the first 8
//! bytes of its value (µs since the Unix epoch, big-endian), or from the
//! record's create timestamp (ms) when the value is shorter than 8 bytes.

use super::admin::{self, topic_name, ClusterMetadata, EARLIEST, LATEST};
use super::compression::decompress;
use super::conn::Connection;
use super::error::ClientError;
use crate::measure::clock::Clock;
use crate::measure::recorder::Recorder;
use crate::workload::props::ConsumerSettings;
use sluice_protocol::messages::messages::fetch_request::{FetchPartition, FetchTopic};
use sluice_protocol::messages::messages::{
    ApiKey, BrokerId, FetchRequest, FetchResponse, TopicName,
};
use sluice_protocol::record_batch::{
    decode_records, validate_batch, BatchHeader, Compression, BATCH_HEADER_SIZE, LOG_OVERHEAD,
};
use sluice_protocol::ErrorCode;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

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
    addrs: BTreeMap<i32, SocketAddr>,
    /// Topic → leader per partition, from the last metadata.
    leaders: BTreeMap<String, Vec<i32>>,
    conns: BTreeMap<i32, (Connection, i16)>,
    pub assigned: Vec<Assigned>,
    bootstrap: SocketAddr,
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
        bootstrap: SocketAddr,
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
            assigned,
            bootstrap,
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

    fn conn(&mut self, leader: i32) -> Result<&mut (Connection, i16), ClientError> {
        if !self.conns.contains_key(&leader) {
            let addr = *self.addrs.get(&leader).ok_or(ClientError::NoLeader {
                topic: "(any)".into(),
                partition: -1,
            })?;
            let conn = Connection::connect(addr, CONNECT_TIMEOUT)?;
            let v = conn.version(ApiKey::Fetch)?;
            self.conns.insert(leader, (conn, v));
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
            let (conn, _) = self.conn(leader)?;
            let offsets = admin::list_offsets(conn, &topic, &parts, at)?;
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

    /// One fetch round over every leader. Returns records consumed.
    pub fn fetch_once(&mut self, rec: &mut Recorder) -> Result<u64, ClientError> {
        let leaders: Vec<i32> = {
            let mut l: Vec<i32> = self.assigned.iter().map(|a| a.leader).collect();
            l.sort_unstable();
            l.dedup();
            l
        };
        let mut total = 0;
        for leader in leaders {
            match self.fetch_from(leader, rec) {
                Ok(n) => total += n,
                Err(e) => {
                    self.conns.remove(&leader);
                    self.client_errors.push(e.to_string());
                    self.refresh_metadata();
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        Ok(total)
    }

    fn refresh_metadata(&mut self) {
        let topics: Vec<String> = {
            let mut t: Vec<String> = self.assigned.iter().map(|a| a.topic.clone()).collect();
            t.dedup();
            t
        };
        let md = Connection::connect(self.bootstrap, CONNECT_TIMEOUT)
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

    fn request_for(&self, leader: i32) -> FetchRequest {
        let mut topics: Vec<FetchTopic> = Vec::new();
        for a in self.assigned.iter().filter(|a| a.leader == leader) {
            let fp = FetchPartition::default()
                .with_partition(a.partition)
                .with_fetch_offset(a.offset)
                .with_partition_max_bytes(self.s.max_partition_fetch_bytes);
            match topics.iter_mut().find(|t| t.topic == a.wire) {
                Some(t) => t.partitions.push(fp),
                None => topics.push(
                    FetchTopic::default()
                        .with_topic(a.wire.clone())
                        .with_partitions(vec![fp]),
                ),
            }
        }
        FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(self.s.fetch_max_wait_ms)
            .with_min_bytes(self.s.fetch_min_bytes)
            .with_max_bytes(self.s.fetch_max_bytes)
            .with_session_id(0)
            .with_session_epoch(-1)
            .with_topics(topics)
    }

    fn fetch_from(&mut self, leader: i32, rec: &mut Recorder) -> Result<u64, ClientError> {
        let req = self.request_for(leader);
        let (conn, version) = self.conn(leader)?;
        let version = *version;
        let resp: FetchResponse = conn.roundtrip_at(ApiKey::Fetch, version, &req)?;
        let now = self.clock.now_ns();
        if resp.error_code != 0 {
            return Err(ClientError::Broker {
                what: "Fetch".into(),
                code: ErrorCode::from_code(resp.error_code),
            });
        }
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
                let (count, next) = consume_records(records, a.offset, &self.clock, now, rec)
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

/// Records every record at or past `from` in a fetched record set; returns
/// the count and the next offset to fetch. A partial batch at the end (the
/// broker cuts at `max.partition.fetch.bytes`) is left for the next fetch.
pub fn consume_records(
    set: &[u8],
    from: i64,
    clock: &Clock,
    now_ns: u64,
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
        if h.next_offset().0 <= from || h.is_control() {
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
        let records =
            decode_records(&section, h.records_count as usize).map_err(|e| e.to_string())?;
        for r in &records {
            let offset = h.base_offset.0 + i64::from(r.offset_delta);
            if offset < from {
                continue;
            }
            let value = r.value.unwrap_or_default();
            let start_ns = match value.get(..8) {
                Some(b) => clock.ns_of_unix_us(i64::from_be_bytes(b.try_into().expect("8 bytes"))),
                None => clock.ns_of_unix_us((h.base_timestamp + r.timestamp_delta) * 1_000),
            };
            rec.on_done(now_ns, start_ns, value.len() as u64);
            count += 1;
        }
        next = next.max(h.next_offset().0);
    }
    Ok((count, next))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::accumulator::PartitionQueue;

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
        let mut rec = Recorder::new(0, u64::MAX);
        let (n, next) = consume_records(&set, 1, &clock, 3_000_000, &mut rec).unwrap();
        assert_eq!((n, next), (3, 4));
        // Sent at 1 ms, consumed at 3 ms: 2 ms end to end.
        let p50 = rec.totals.latency.value_at_quantile(0.5);
        assert!((1_990..=2_010).contains(&p50), "{p50}");
        assert!(
            consume_records(&set[..first_len], 4, &clock, 0, &mut rec)
                .unwrap()
                .0
                == 0
        );
    }
}
