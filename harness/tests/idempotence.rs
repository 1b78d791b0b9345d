//! The harness producer's `enable.idempotence` against a real broker whose
//! Produce answers are lost: a proxy between them closes the connection in
//! place of passing some Produce responses on. The producer resends those
//! batches, which the broker had already appended. An idempotent producer's
//! resends are recognised by their sequence numbers and every record is in
//! the log once; without idempotence the same run writes duplicates.

use sluice_engine::config::BrokerConfig;
use sluice_engine::embedded::EmbeddedBroker;
use sluice_harness::client::admin;
use sluice_harness::client::conn::Connection;
use sluice_harness::client::producer::Producer;
use sluice_harness::measure::clock::Clock;
use sluice_harness::measure::recorder::Recorder;
use sluice_harness::workload::props::ProducerSettings;
use sluice_protocol::messages::messages::fetch_request::{FetchPartition, FetchTopic};
use sluice_protocol::messages::messages::{ApiKey, FetchRequest, FetchResponse};
use sluice_protocol::record_batch::{
    decode_records, validate_batch, BatchHeader, BATCH_HEADER_SIZE, LOG_OVERHEAD,
};
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TOPIC: &str = "lossy";
const PARTITIONS: u32 = 2;
const RECORDS: u32 = 5_000;
/// Produce responses (counted from 1 over all connections) the proxy drops.
const DROPPED: [u32; 3] = [3, 20, 40];
const DEADLINE: Duration = Duration::from_secs(60);

#[test]
fn resent_batches_are_written_once_only_with_idempotence() {
    let idempotent = run(true);
    assert_eq!(idempotent.duplicates, 0, "{idempotent:?}");
    assert_eq!(idempotent.distinct, RECORDS, "{idempotent:?}");
    assert!(idempotent.producer_ids.iter().all(|&id| id >= 0));
    assert!(idempotent.sequences_contiguous, "{idempotent:?}");
    // The same losses without idempotence: the resent batches are appended
    // again, so the test above is not passing by luck.
    let plain = run(false);
    assert_eq!(plain.distinct, RECORDS, "{plain:?}");
    assert!(plain.duplicates > 0, "{plain:?}");
    assert!(plain.producer_ids.iter().all(|&id| id == -1));
}

#[derive(Debug)]
struct Outcome {
    distinct: u32,
    duplicates: u32,
    producer_ids: Vec<i64>,
    /// Every partition's batches continue each other's sequence numbers.
    sequences_contiguous: bool,
}

fn run(idempotent: bool) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let proxy = TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy_addr = proxy.local_addr().unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cfg = BrokerConfig::default();
    cfg.set_listen(&format!("127.0.0.1:{port}")).unwrap();
    // Clients are told the proxy's address, so every connection passes it.
    cfg.set(
        "advertised.listeners",
        &format!("PLAINTEXT://127.0.0.1:{}", proxy_addr.port()),
    )
    .unwrap();
    cfg.data_dir = dir.path().to_path_buf();
    cfg.cores = 1;
    let broker = EmbeddedBroker::start(cfg).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let dropped = Arc::new(AtomicU32::new(0));
    spawn_proxy(proxy, broker.bootstrap(), stop.clone(), dropped.clone());

    let mut conn = Connection::connect(proxy_addr, Duration::from_secs(10)).unwrap();
    admin::create_topics(
        &mut conn,
        &[TOPIC.to_string()],
        PARTITIONS,
        1,
        &BTreeMap::new(),
    )
    .unwrap();
    let md =
        admin::wait_for_leaders(&mut conn, &[TOPIC.to_string()], Duration::from_secs(30)).unwrap();

    let settings = ProducerSettings {
        batch_size: 1_024,
        enable_idempotence: idempotent,
        idempotence_set: true,
        retry_backoff_ms: 10,
        ..ProducerSettings::default()
    };
    let clock = Clock::start();
    let mut producer =
        Producer::new(clock, settings, &[TOPIC.to_string()], &md, proxy_addr, 7).unwrap();
    let mut rec = Recorder::new(0, 0, u64::MAX);
    let deadline = Instant::now() + DEADLINE;
    let mut i = 0;
    while i < RECORDS {
        let now = clock.now_ns();
        let value = format!("record-{i:06}");
        match producer.send(0, None, value.as_bytes(), now, now, &mut rec) {
            Ok(()) => i += 1,
            Err(_) => producer.poll(&mut rec),
        }
        if i % 50 == 0 {
            producer.poll(&mut rec);
        }
        assert!(Instant::now() < deadline, "sending did not finish");
    }
    producer.close_all(&mut rec);
    while producer.pending() {
        producer.poll(&mut rec);
        std::thread::sleep(Duration::from_millis(1));
        assert!(Instant::now() < deadline, "acknowledgements did not come");
    }
    assert_eq!(rec.totals.errors, 0, "{:?}", producer.client_errors);
    assert_eq!(rec.totals.messages, u64::from(RECORDS));
    assert_eq!(
        dropped.load(Ordering::Relaxed) as usize,
        DROPPED.len(),
        "the proxy lost fewer answers than planned"
    );

    let outcome = read_back(broker.bootstrap());
    stop.store(true, Ordering::Relaxed);
    broker.stop();
    outcome
}

/// Reads both partitions from the broker itself and counts what is there.
fn read_back(addr: SocketAddr) -> Outcome {
    let mut conn = Connection::connect(addr, Duration::from_secs(10)).unwrap();
    let mut seen: HashMap<String, u32> = HashMap::new();
    let mut producer_ids = Vec::new();
    let mut sequences_contiguous = true;
    for partition in 0..PARTITIONS as i32 {
        let mut offset = 0i64;
        let mut next_sequence: Option<i32> = None;
        loop {
            let req = FetchRequest::default()
                .with_replica_id(sluice_protocol::messages::messages::BrokerId(-1))
                .with_max_wait_ms(0)
                .with_max_bytes(1 << 20)
                .with_topics(vec![FetchTopic::default()
                    .with_topic(admin::topic_name(TOPIC))
                    .with_partitions(vec![FetchPartition::default()
                        .with_partition(partition)
                        .with_fetch_offset(offset)
                        .with_partition_max_bytes(1 << 20)])]);
            let resp: FetchResponse = conn.roundtrip(ApiKey::Fetch, &req).unwrap();
            let p = &resp.responses[0].partitions[0];
            assert_eq!(p.error_code, 0);
            let set = p.records.clone().unwrap_or_default();
            if set.is_empty() {
                break;
            }
            let mut pos = 0;
            while pos + LOG_OVERHEAD <= set.len() {
                let h = BatchHeader::parse(&set[pos..]).unwrap();
                if pos + h.total_size() > set.len() {
                    break;
                }
                let batch = &set[pos..pos + h.total_size()];
                validate_batch(batch, pos).unwrap();
                producer_ids.push(h.producer_id);
                if h.producer_id >= 0 {
                    if next_sequence.is_some_and(|s| s != h.base_sequence) {
                        sequences_contiguous = false;
                    }
                    next_sequence = Some(h.base_sequence + h.records_count);
                }
                let records =
                    decode_records(&batch[BATCH_HEADER_SIZE..], h.records_count as usize).unwrap();
                for r in records {
                    let v = String::from_utf8(r.value.unwrap().to_vec()).unwrap();
                    *seen.entry(v).or_default() += 1;
                }
                offset = h.next_offset().0;
                pos += h.total_size();
            }
        }
    }
    Outcome {
        distinct: seen.len() as u32,
        duplicates: seen.values().map(|n| n - 1).sum(),
        producer_ids,
        sequences_contiguous,
    }
}

/// Passes frames both ways between clients and the broker, except that in
/// place of the Produce responses numbered in `DROPPED` it closes the
/// client's connection.
fn spawn_proxy(
    listener: TcpListener,
    broker: SocketAddr,
    stop: Arc<AtomicBool>,
    dropped: Arc<AtomicU32>,
) {
    let produce_answers = Arc::new(AtomicU32::new(0));
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let Ok((client, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            client.set_nonblocking(false).unwrap();
            let upstream = TcpStream::connect(broker).unwrap();
            // Correlation id → API key of the requests on this connection.
            let apis: Arc<Mutex<HashMap<i32, i16>>> = Arc::default();
            let (c_in, u_out, a) = (
                client.try_clone().unwrap(),
                upstream.try_clone().unwrap(),
                apis.clone(),
            );
            std::thread::spawn(move || forward_requests(c_in, u_out, a));
            let (counter, dropped) = (produce_answers.clone(), dropped.clone());
            std::thread::spawn(move || {
                forward_responses(upstream, client, &apis, &counter, &dropped)
            });
        }
    });
}

fn read_frame(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let mut frame = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut frame).ok()?;
    let mut out = len.to_vec();
    out.extend_from_slice(&frame);
    Some(out)
}

fn forward_requests(mut from: TcpStream, mut to: TcpStream, apis: Arc<Mutex<HashMap<i32, i16>>>) {
    while let Some(frame) = read_frame(&mut from) {
        let api = i16::from_be_bytes([frame[4], frame[5]]);
        let correlation = i32::from_be_bytes(frame[8..12].try_into().unwrap());
        apis.lock().unwrap().insert(correlation, api);
        if to.write_all(&frame).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
}

fn forward_responses(
    mut from: TcpStream,
    mut to: TcpStream,
    apis: &Mutex<HashMap<i32, i16>>,
    produce_answers: &AtomicU32,
    dropped: &AtomicU32,
) {
    while let Some(frame) = read_frame(&mut from) {
        let correlation = i32::from_be_bytes(frame[4..8].try_into().unwrap());
        let api = apis.lock().unwrap().remove(&correlation);
        if api == Some(ApiKey::Produce as i16) {
            let n = produce_answers.fetch_add(1, Ordering::Relaxed) + 1;
            if DROPPED.contains(&n) {
                dropped.fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
        if to.write_all(&frame).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}
