//! A fake Kafka broker for measurement tests: answers ApiVersions, Metadata,
//! CreateTopics, DeleteTopics, InitProducerId and Produce on 127.0.0.1,
//! holding every Produce response back by a known delay (and longer during
//! an injected stall), so what the harness reports can be checked against
//! what the server did.

#![allow(dead_code)]

use bytes::{Bytes, BytesMut};
use sluice_protocol::messages::messages::api_versions_response::ApiVersion;
use sluice_protocol::messages::messages::create_topics_response::CreatableTopicResult;
use sluice_protocol::messages::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use sluice_protocol::messages::messages::produce_response::{
    PartitionProduceResponse, TopicProduceResponse,
};
use sluice_protocol::messages::messages::*;
use sluice_protocol::messages::protocol::{Decodable, Encodable, StrBytes};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct FakeBroker {
    pub addr: SocketAddr,
    pub produced: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    /// Produce responses due in [stall_from, stall_until) wait until stall_until.
    pub stall: Arc<Mutex<Option<(Instant, Instant)>>>,
}

impl FakeBroker {
    pub fn start(delay: Duration, partitions: i32) -> FakeBroker {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let produced = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let stall = Arc::new(Mutex::new(None));
        let (p, s, st) = (produced.clone(), stop.clone(), stall.clone());
        listener.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            // Bounded: the test process ends the thread with itself.
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        stream.set_nonblocking(false).unwrap();
                        let (p, st) = (p.clone(), st.clone());
                        std::thread::spawn(move || serve(stream, addr, delay, partitions, p, st));
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
        }
    }

    pub fn stall_between(&self, from: Instant, until: Instant) {
        *self.stall.lock().unwrap() = Some((from, until));
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

fn serve(
    mut stream: TcpStream,
    addr: SocketAddr,
    delay: Duration,
    partitions: i32,
    produced: Arc<AtomicU64>,
    stall: Arc<Mutex<Option<(Instant, Instant)>>>,
) {
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
                for t in &req.topic_data {
                    let mut parts = Vec::new();
                    for p in &t.partition_data {
                        let records = p.records.as_ref().unwrap();
                        let h = sluice_protocol::record_batch::validate_batch(records, 0).unwrap();
                        produced.fetch_add(h.records_count as u64, Ordering::Relaxed);
                        parts.push(PartitionProduceResponse::default().with_index(p.index));
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
                let mut due = now + delay;
                if let Some((from, until)) = *stall.lock().unwrap() {
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
            other => panic!("fake broker got an unexpected {other:?}"),
        };
        let _ = tx.send((now, frame));
    }
}
