//! A fake Kafka broker for measurement tests: answers ApiVersions, Metadata,
//! CreateTopics, DeleteTopics, InitProducerId, Produce, ListOffsets and
//! Fetch on 127.0.0.1, holding every Produce response back by a known
//! delay (and longer during an injected stall), optionally serving Produce
//! at a known capacity (a single server: each request waits for the ones
//! before it, then takes its messages' share of a second), and keeping what
//! it was sent so consumers can read it back, as slowly as asked. What the
//! harness reports can be checked against what the server did.

#![allow(dead_code)]

use bytes::{Bytes, BytesMut};
use sluice_protocol::messages::messages::api_versions_response::ApiVersion;
use sluice_protocol::messages::messages::create_topics_response::CreatableTopicResult;
use sluice_protocol::messages::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use sluice_protocol::messages::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use sluice_protocol::messages::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use sluice_protocol::messages::messages::produce_response::{
    PartitionProduceResponse, TopicProduceResponse,
};
use sluice_protocol::messages::messages::*;
use sluice_protocol::messages::protocol::{Decodable, Encodable, StrBytes};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How the fake broker behaves.
#[derive(Clone, Copy, Debug)]
pub struct Behaviour {
    /// Every Produce answer leaves this long after its request is served.
    pub delay: Duration,
    pub partitions: i32,
    /// Messages per second the single Produce server handles; `None` is
    /// unbounded.
    pub capacity: Option<f64>,
    /// Every Fetch answer waits this long, and carries at most
    /// `fetch_batches` batches per partition: a slow consumer's broker.
    pub fetch_delay: Duration,
    pub fetch_batches: usize,
}

impl Behaviour {
    pub fn new(delay: Duration, partitions: i32) -> Behaviour {
        Behaviour {
            delay,
            partitions,
            capacity: None,
            fetch_delay: Duration::ZERO,
            fetch_batches: usize::MAX,
        }
    }
}

/// One partition's log: (base offset, next offset, batch as stored).
type Log = Vec<(i64, i64, Bytes)>;

/// What every connection of one fake broker shares.
struct State {
    behaviour: Behaviour,
    produced: Arc<AtomicU64>,
    /// Produce responses due in [from, until) wait until `until`.
    stall: Arc<Mutex<Option<(Instant, Instant)>>>,
    /// When the Produce server is next free, and from when (if ever) it
    /// serves at another capacity.
    server: Mutex<(Instant, Option<(Instant, f64)>)>,
    logs: Mutex<BTreeMap<(String, i32), Log>>,
    /// The next this many partition answers of Produce carry this error
    /// code (and nothing is appended).
    refusals: Mutex<(i16, u64)>,
    metadata_requests: AtomicU64,
}

pub struct FakeBroker {
    pub addr: SocketAddr,
    pub produced: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    /// Produce responses due in [stall_from, stall_until) wait until stall_until.
    pub stall: Arc<Mutex<Option<(Instant, Instant)>>>,
    state: Arc<State>,
}

impl FakeBroker {
    pub fn start(delay: Duration, partitions: i32) -> FakeBroker {
        FakeBroker::with(Behaviour::new(delay, partitions))
    }

    pub fn with(behaviour: Behaviour) -> FakeBroker {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let produced = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let stall = Arc::new(Mutex::new(None));
        let state = Arc::new(State {
            behaviour,
            produced: produced.clone(),
            stall: stall.clone(),
            server: Mutex::new((Instant::now(), None)),
            logs: Mutex::new(BTreeMap::new()),
            refusals: Mutex::new((0, 0)),
            metadata_requests: AtomicU64::new(0),
        });
        let (s, st) = (stop.clone(), state.clone());
        listener.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            // Bounded: the test process ends the thread with itself.
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        stream.set_nonblocking(false).unwrap();
                        let st = st.clone();
                        std::thread::spawn(move || serve(stream, addr, &st));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FakeBroker {
            addr,
            produced,
            stop,
            stall,
            state,
        }
    }

    pub fn stall_between(&self, from: Instant, until: Instant) {
        *self.stall.lock().unwrap() = Some((from, until));
    }

    /// The next `count` partition answers of Produce carry error `code`.
    pub fn refuse_produce(&self, code: i16, count: u64) {
        *self.state.refusals.lock().unwrap() = (code, count);
    }

    /// Metadata requests answered so far.
    pub fn metadata_requests(&self) -> u64 {
        self.state.metadata_requests.load(Ordering::Relaxed)
    }

    /// From `at` on, the Produce server handles `capacity` msg/s.
    pub fn slow_down_at(&self, at: Instant, capacity: f64) {
        self.state.server.lock().unwrap().1 = Some((at, capacity));
    }
}

impl State {
    /// When a Produce request of `count` messages arriving `now` has been
    /// served: after every request before it, at the capacity of then.
    fn serve_produce(&self, now: Instant, count: u64) -> Instant {
        let mut server = self.server.lock().unwrap();
        let start = server.0.max(now);
        let capacity = match server.1 {
            Some((at, c)) if start >= at => Some(c),
            _ => self.behaviour.capacity,
        };
        let done = match capacity {
            Some(c) => start + Duration::from_secs_f64(count as f64 / c),
            None => start,
        };
        server.0 = done;
        done
    }

    /// Appends a batch; returns its base offset. The stored copy carries
    /// that offset (the CRC does not cover it).
    fn append(&self, topic: &str, partition: i32, batch: &[u8], count: u64) -> i64 {
        let mut logs = self.logs.lock().unwrap();
        let log = logs.entry((topic.to_string(), partition)).or_default();
        let base = log.last().map_or(0, |b| b.1);
        let mut stored = batch.to_vec();
        stored[..8].copy_from_slice(&base.to_be_bytes());
        log.push((base, base + count as i64, Bytes::from(stored)));
        base
    }

    fn log_end(&self, topic: &str, partition: i32) -> i64 {
        let logs = self.logs.lock().unwrap();
        logs.get(&(topic.to_string(), partition))
            .and_then(|l| l.last())
            .map_or(0, |b| b.1)
    }

    /// Batches from `offset` on, at most `fetch_batches` and about
    /// `max_bytes` (always one when there is one), and the log end.
    fn read(&self, topic: &str, partition: i32, offset: i64, max_bytes: usize) -> (Bytes, i64) {
        let logs = self.logs.lock().unwrap();
        let Some(log) = logs.get(&(topic.to_string(), partition)) else {
            return (Bytes::new(), 0);
        };
        let mut out = BytesMut::new();
        let newer = log.iter().filter(|b| b.1 > offset);
        for (_, _, batch) in newer.take(self.behaviour.fetch_batches) {
            out.extend_from_slice(batch);
            if out.len() >= max_bytes {
                break;
            }
        }
        (out.freeze(), log.last().map_or(0, |b| b.1))
    }
}

impl Drop for FakeBroker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn read_frame(s: &mut TcpStream) -> Option<Bytes> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let n = i32::from_be_bytes(len) as usize;
    assert!(n < 64 << 20);
    let mut buf = vec![0u8; n];
    s.read_exact(&mut buf).ok()?;
    Some(Bytes::from(buf))
}

fn respond<R: Encodable>(api: ApiKey, version: i16, corr: i32, body: &R) -> Vec<u8> {
    let mut out = BytesMut::new();
    let header = ResponseHeader::default().with_correlation_id(corr);
    header
        .encode(&mut out, api.response_header_version(version))
        .unwrap();
    body.encode(&mut out, version).unwrap();
    let mut frame = (out.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&out);
    frame
}

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

fn serve(mut stream: TcpStream, addr: SocketAddr, state: &State) {
    let Behaviour {
        delay, partitions, ..
    } = state.behaviour;
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    let mut writer = stream.try_clone().unwrap();
    // Responses leave in order, each at its due time.
    std::thread::spawn(move || {
        for (due, frame) in rx {
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if writer.write_all(&frame).is_err() {
                return;
            }
        }
    });
    while let Some(mut payload) = read_frame(&mut stream) {
        let api = ApiKey::try_from(i16::from_be_bytes([payload[0], payload[1]])).unwrap();
        let version = i16::from_be_bytes([payload[2], payload[3]]);
        let header =
            RequestHeader::decode(&mut payload, api.request_header_version(version)).unwrap();
        let corr = header.correlation_id;
        let now = Instant::now();
        let frame = match api {
            ApiKey::ApiVersions => {
                let keys = [
                    (0, 3, 9),
                    (3, 1, 12),
                    (19, 2, 7),
                    (20, 1, 6),
                    (18, 0, 3),
                    (22, 0, 4),
                    (1, 4, 12),
                    (2, 1, 7),
                ]
                .iter()
                .map(|&(k, lo, hi)| {
                    ApiVersion::default()
                        .with_api_key(k)
                        .with_min_version(lo)
                        .with_max_version(hi)
                })
                .collect();
                respond(
                    api,
                    version,
                    corr,
                    &ApiVersionsResponse::default().with_api_keys(keys),
                )
            }
            ApiKey::Metadata => {
                state.metadata_requests.fetch_add(1, Ordering::Relaxed);
                let req = MetadataRequest::decode(&mut payload, version).unwrap();
                let topics = req
                    .topics
                    .unwrap_or_default()
                    .into_iter()
                    .map(|t| {
                        MetadataResponseTopic::default()
                            .with_name(t.name)
                            .with_partitions(
                                (0..partitions)
                                    .map(|p| {
                                        MetadataResponsePartition::default()
                                            .with_partition_index(p)
                                            .with_leader_id(BrokerId(1))
                                            .with_replica_nodes(vec![BrokerId(1)])
                                            .with_isr_nodes(vec![BrokerId(1)])
                                    })
                                    .collect(),
                            )
                    })
                    .collect();
                let broker = MetadataResponseBroker::default()
                    .with_node_id(BrokerId(1))
                    .with_host(StrBytes::from_string(addr.ip().to_string()))
                    .with_port(addr.port() as i32);
                respond(
                    api,
                    version,
                    corr,
                    &MetadataResponse::default()
                        .with_brokers(vec![broker])
                        .with_topics(topics),
                )
            }
            ApiKey::CreateTopics => {
                let req = CreateTopicsRequest::decode(&mut payload, version).unwrap();
                let topics = req
                    .topics
                    .iter()
                    .map(|t| CreatableTopicResult::default().with_name(t.name.clone()))
                    .collect();
                respond(
                    api,
                    version,
                    corr,
                    &CreateTopicsResponse::default().with_topics(topics),
                )
            }
            ApiKey::DeleteTopics => respond(api, version, corr, &DeleteTopicsResponse::default()),
            ApiKey::InitProducerId => respond(
                api,
                version,
                corr,
                &InitProducerIdResponse::default().with_producer_id(ProducerId(1)),
            ),
            ApiKey::Produce => {
                let req = ProduceRequest::decode(&mut payload, version).unwrap();
                let mut responses = Vec::new();
                let mut served = now;
                for t in &req.topic_data {
                    let mut parts = Vec::new();
                    for p in &t.partition_data {
                        let records = p.records.as_ref().unwrap();
                        let h = sluice_protocol::record_batch::validate_batch(records, 0).unwrap();
                        let count = h.records_count as u64;
                        {
                            let mut refusals = state.refusals.lock().unwrap();
                            if refusals.1 > 0 {
                                refusals.1 -= 1;
                                parts.push(
                                    PartitionProduceResponse::default()
                                        .with_index(p.index)
                                        .with_error_code(refusals.0),
                                );
                                continue;
                            }
                        }
                        state.produced.fetch_add(count, Ordering::Relaxed);
                        served = served.max(state.serve_produce(now, count));
                        let base = state.append(t.name.0.as_str(), p.index, records, count);
                        parts.push(
                            PartitionProduceResponse::default()
                                .with_index(p.index)
                                .with_base_offset(base),
                        );
                    }
                    responses.push(
                        TopicProduceResponse::default()
                            .with_name(name(t.name.0.as_str()))
                            .with_partition_responses(parts),
                    );
                }
                if req.acks == 0 {
                    continue;
                }
                let mut due = served + delay;
                if let Some((from, until)) = *state.stall.lock().unwrap() {
                    if due >= from && due < until {
                        due = until;
                    }
                }
                let frame = respond(
                    api,
                    version,
                    corr,
                    &ProduceResponse::default().with_responses(responses),
                );
                let _ = tx.send((due, frame));
                continue;
            }
            ApiKey::ListOffsets => {
                let req = ListOffsetsRequest::decode(&mut payload, version).unwrap();
                let topics = req
                    .topics
                    .iter()
                    .map(|t| {
                        let parts = t
                            .partitions
                            .iter()
                            .map(|p| {
                                // -2 is the earliest offset; every other
                                // query gets the end.
                                let offset = match p.timestamp {
                                    -2 => 0,
                                    _ => state.log_end(t.name.0.as_str(), p.partition_index),
                                };
                                ListOffsetsPartitionResponse::default()
                                    .with_partition_index(p.partition_index)
                                    .with_offset(offset)
                            })
                            .collect();
                        ListOffsetsTopicResponse::default()
                            .with_name(t.name.clone())
                            .with_partitions(parts)
                    })
                    .collect();
                respond(
                    api,
                    version,
                    corr,
                    &ListOffsetsResponse::default().with_topics(topics),
                )
            }
            ApiKey::Fetch => {
                let req = FetchRequest::decode(&mut payload, version).unwrap();
                let mut any = false;
                let topics = req
                    .topics
                    .iter()
                    .map(|t| {
                        let parts = t
                            .partitions
                            .iter()
                            .map(|p| {
                                let (records, end) = state.read(
                                    t.topic.0.as_str(),
                                    p.partition,
                                    p.fetch_offset,
                                    p.partition_max_bytes.max(1) as usize,
                                );
                                any |= !records.is_empty();
                                PartitionData::default()
                                    .with_partition_index(p.partition)
                                    .with_high_watermark(end)
                                    .with_last_stable_offset(end)
                                    .with_records(Some(records))
                            })
                            .collect();
                        FetchableTopicResponse::default()
                            .with_topic(t.topic.clone())
                            .with_partitions(parts)
                    })
                    .collect();
                let frame = respond(
                    api,
                    version,
                    corr,
                    &FetchResponse::default().with_responses(topics),
                );
                // An empty answer waits a little, as a broker's long poll.
                let wait = if any {
                    state.behaviour.fetch_delay
                } else {
                    state
                        .behaviour
                        .fetch_delay
                        .max(Duration::from_millis(req.max_wait_ms.clamp(0, 20) as u64))
                };
                let _ = tx.send((now + wait, frame));
                continue;
            }
            other => panic!("fake broker got an unexpected {other:?}"),
        };
        let _ = tx.send((now, frame));
    }
}

/// A harness producer on `broker` for the one-point workload `yaml`, with
/// its topics created, its clock and a recorder that measures everything.
pub fn producer_on(
    broker: &FakeBroker,
    yaml: &str,
) -> (
    sluice_harness::client::producer::Producer,
    sluice_harness::measure::clock::Clock,
    sluice_harness::measure::recorder::Recorder,
) {
    let f =
        sluice_harness::workload::parse(std::path::Path::new("producer.yaml"), yaml, None).unwrap();
    let w = f.points[0].workload.clone();
    let prepared = sluice_harness::run::point::prepare(broker.addr, &w, &f.name).unwrap();
    let clock = sluice_harness::measure::clock::Clock::start();
    let p = sluice_harness::client::producer::Producer::new(
        clock,
        w.producer.clone(),
        &prepared.topics,
        &prepared.md,
        broker.addr,
        7,
    )
    .unwrap();
    (
        p,
        clock,
        sluice_harness::measure::recorder::Recorder::new(0, 0, u64::MAX),
    )
}

/// Closes the producer's batches and polls until nothing is pending, up
/// to 30 s: a liveness bound, not a speed check.
pub fn flush_producer(
    p: &mut sluice_harness::client::producer::Producer,
    clock: &sluice_harness::measure::clock::Clock,
    rec: &mut sluice_harness::measure::recorder::Recorder,
) {
    p.close_all(rec);
    let deadline = clock.now_ns() + 30_000_000_000;
    let mut fds = Vec::new();
    while p.pending() && clock.now_ns() < deadline {
        p.poll(rec);
        fds.clear();
        p.pollfds(&mut fds);
        sluice_harness::client::producer::wait(clock, &mut fds, clock.now_ns() + 10_000_000);
    }
}
