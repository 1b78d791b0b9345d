//! Connection limits and many connections: `max.connections.per.ip`,
//! `max.connections`, `connections.max.idle.ms`, ten thousand idle
//! connections beside a thousand active clients, and an accept flood
//! beside an established client.

mod common;

use common::{call, Broker, Raw};
use kafka_protocol::messages::*;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Generous: a loaded two-core machine can take seconds to answer.
const DEADLINE: Duration = Duration::from_secs(60);

fn api_versions(raw: &mut Raw) -> Option<ApiVersionsResponse> {
    call(raw, ApiKey::ApiVersions, 3, &ApiVersionsRequest::default())
}

fn answered(broker: &Broker) -> Raw {
    let mut raw = Raw::connect(broker.addr());
    let resp = api_versions(&mut raw).expect("an answer");
    assert_eq!(resp.error_code, 0);
    raw
}

/// Connects until a connection is answered (a closed one's place is given
/// back when the broker notices the close).
fn answered_eventually(broker: &Broker) -> Raw {
    let start = Instant::now();
    loop {
        let mut raw = Raw::connect(broker.addr());
        if api_versions(&mut raw).is_some() {
            return raw;
        }
        assert!(start.elapsed() < DEADLINE, "no connection answered");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_address_at_max_connections_per_ip_has_more_closed_and_others_are_served() {
    let broker = Broker::start(2, &["max.connections.per.ip=3"]);
    let mut held: Vec<Raw> = (0..3).map(|_| answered(&broker)).collect();
    // The fourth from 127.0.0.1 is closed without an answer.
    let mut fourth = Raw::connect(broker.addr());
    assert!(fourth.closed_by_broker());
    assert!(broker
        .log()
        .contains("address at max.connections.per.ip; closing the new connection"));
    // The held ones still work.
    for raw in &mut held {
        assert!(api_versions(raw).is_some());
    }
    // Once one closes, a new one is served.
    drop(held.pop());
    let mut again = answered_eventually(&broker);
    assert!(api_versions(&mut again).is_some());
}

#[test]
fn an_override_that_does_not_parse_stops_the_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let out = std::process::Command::new("timeout")
        .args(["120", env!("CARGO_BIN_EXE_sluice")])
        .args(["--listen", &format!("127.0.0.1:{port}"), "--cores", "1"])
        .args(["--override", "max.connections.per.ip.overrides=127.0.0.1"])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .expect("run sluice");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("max.connections.per.ip.overrides") && stderr.contains("host:count"),
        "{stderr}"
    );
}

#[test]
fn at_max_connections_a_new_connection_waits_until_one_closes() {
    let broker = Broker::start(2, &["max.connections=2"]);
    let first = answered_eventually(&broker);
    let _second = answered_eventually(&broker);
    // The kernel completes the third's handshake, but the broker does not
    // serve it while two are open.
    let mut third = Raw::connect(broker.addr());
    third
        .stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let body = {
        use kafka_protocol::protocol::Encodable;
        let mut b = bytes::BytesMut::new();
        ApiVersionsRequest::default().encode(&mut b, 3).unwrap();
        b
    };
    third.send(ApiKey::ApiVersions as i16, 3, 42, true, &body);
    let mut byte = [0u8; 1];
    let early = std::io::Read::read(&mut third.stream, &mut byte);
    assert!(
        matches!(&early, Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)),
        "the third connection was answered (or closed) while two were open: {early:?}"
    );
    // One closes: the third's request is answered.
    drop(first);
    third.stream.set_read_timeout(Some(DEADLINE)).unwrap();
    assert!(
        third.recv().is_some(),
        "the held connection was never served"
    );
}

#[test]
fn an_idle_connection_is_closed_and_a_busy_one_kept() {
    let broker = Broker::start(2, &["connections.max.idle.ms=5000"]);
    let mut idle = answered(&broker);
    let stop = Arc::new(AtomicBool::new(false));
    let busy = {
        let (addr, stop) = (broker.addr(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut raw = Raw::connect(addr);
            let mut answers = 0u64;
            while !stop.load(Ordering::Relaxed) {
                assert!(
                    api_versions(&mut raw).is_some(),
                    "the busy connection was closed"
                );
                answers += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            answers
        })
    };
    // Blocks until the broker closes it (the read timeout is 30 s, past the
    // 5 s idle time and its tenth checked every 0.5 s).
    assert!(idle.closed_by_broker());
    stop.store(true, Ordering::Relaxed);
    let answers = busy.join().expect("the busy connection kept its answers");
    assert!(answers > 0);
}

/// Resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Raises this process's open files limit (and so the broker's, which
/// inherits it) to `want`, or as far as it may (only root raises the hard
/// limit); returns the limit in force.
fn raise_open_files(want: u64) -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct given.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        let raised = libc::rlimit {
            rlim_cur: want.max(limit.rlim_cur),
            rlim_max: want.max(limit.rlim_max),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
            return raised.rlim_cur;
        }
        limit.rlim_cur = limit.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
    limit.rlim_max
}

fn produce_request(topic: &str, partition: i32) -> ProduceRequest {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::protocol::StrBytes;
    let mut b = sluice_protocol::record_batch::BatchBuilder::new(1_000);
    b.push(1_000, Some(b"k"), Some(b"v"), &[]);
    ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(bytes::Bytes::from(b.finish())))])])
}

fn send<Req: kafka_protocol::protocol::Encodable>(
    raw: &mut Raw,
    key: ApiKey,
    version: i16,
    req: &Req,
) {
    let mut body = bytes::BytesMut::new();
    req.encode(&mut body, version).unwrap();
    raw.send(
        key as i16,
        version,
        42,
        key.request_header_version(version) >= 2,
        &body,
    );
}

fn decode<Resp: kafka_protocol::protocol::Decodable>(
    raw: &mut Raw,
    key: ApiKey,
    version: i16,
) -> Resp {
    use kafka_protocol::protocol::Decodable;
    let frame = raw.recv().expect("an answer");
    let mut buf = bytes::Bytes::from(frame);
    ResponseHeader::decode(&mut buf, key.response_header_version(version)).unwrap();
    Resp::decode(&mut buf, version).unwrap()
}

fn latest_offset(raw: &mut Raw, topic: &str, partition: i32) -> i64 {
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    use kafka_protocol::protocol::StrBytes;
    let req = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(partition)
                .with_timestamp(-1)])]);
    let resp: ListOffsetsResponse = call(raw, ApiKey::ListOffsets, 7, &req).unwrap();
    let p = &resp.topics[0].partitions[0];
    assert_eq!(p.error_code, 0);
    p.offset
}

#[test]
fn ten_thousand_idle_connections_beside_a_thousand_active_clients() {
    const IDLE: usize = 10_000;
    const ACTIVE: usize = 1_000;
    // The broker and this process each hold one descriptor a connection.
    let limit = raise_open_files(65_536);
    assert!(
        limit as usize > IDLE + ACTIVE + 1_000,
        "the open files limit ({limit}) is too low for {} connections",
        IDLE + ACTIVE
    );
    let broker = Broker::start(2, &[]);
    common::create_topic(&broker, "busy", 8);
    let before_kib = rss_kib(broker.pid());
    // Each connection is answered once, so the broker has read from it.
    // Requests go out on all of a batch of connections before any answer
    // is read, so the connections' round trips overlap.
    let mut idle: Vec<Raw> = Vec::with_capacity(IDLE);
    for chunk in 0..IDLE / 500 {
        let mut batch: Vec<Raw> = (0..500).map(|_| Raw::connect(broker.addr())).collect();
        for raw in &mut batch {
            send(raw, ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
        }
        for (i, raw) in batch.iter_mut().enumerate() {
            if raw.stream.peek(&mut [0u8; 1]).map_or(true, |n| n == 0) {
                let log = broker.log();
                panic!(
                    "connection {} got no answer; broker log:\n{}",
                    chunk * 500 + i,
                    &log[log.len().saturating_sub(5000)..]
                );
            }
            let resp: ApiVersionsResponse = decode(raw, ApiKey::ApiVersions, 3);
            assert_eq!(resp.error_code, 0, "connection batch {chunk}");
        }
        idle.extend(batch);
    }
    let idle_kib = rss_kib(broker.pid());
    let per_connection = (idle_kib.saturating_sub(before_kib)) as f64 * 1024.0 / IDLE as f64;
    eprintln!(
        "broker RSS {before_kib} KiB before, {idle_kib} KiB with {IDLE} idle connections: \
         {per_connection:.0} bytes per idle connection"
    );
    // Bounded: an idle connection keeps no request buffer to speak of.
    assert!(
        per_connection < 64.0 * 1024.0,
        "{per_connection:.0} bytes per idle connection"
    );
    // A thousand more clients each produce, all at once, while the ten
    // thousand stay open.
    let mut active: Vec<Raw> = (0..ACTIVE).map(|_| Raw::connect(broker.addr())).collect();
    for (i, raw) in active.iter_mut().enumerate() {
        send(
            raw,
            ApiKey::Produce,
            9,
            &produce_request("busy", (i % 8) as i32),
        );
    }
    for (i, raw) in active.iter_mut().enumerate() {
        if raw.stream.peek(&mut [0u8; 1]).map_or(true, |n| n == 0) {
            panic!(
                "active client {i} got no answer; broker log:\n{}",
                broker.log()
            );
        }
        let resp: ProduceResponse = decode(raw, ApiKey::Produce, 9);
        assert_eq!(resp.responses[0].partition_responses[0].error_code, 0);
    }
    let mut raw = Raw::connect(broker.addr());
    let mut total = 0;
    for p in 0..8 {
        total += latest_offset(&mut raw, "busy", p);
    }
    assert_eq!(total, ACTIVE as i64);
    // The idle ones are still served.
    for raw in idle.iter_mut().step_by(997) {
        assert!(api_versions(raw).is_some());
    }
    eprintln!(
        "broker RSS {} KiB with {} connections after the active clients' produce",
        rss_kib(broker.pid()),
        IDLE + ACTIVE + 1
    );
}

#[test]
fn an_accept_flood_does_not_stop_an_established_client() {
    let broker = Broker::start(1, &[]);
    let mut client = answered(&broker);
    let stop = Arc::new(AtomicBool::new(false));
    let opened = Arc::new(AtomicU64::new(0));
    let floods: Vec<_> = (0..4)
        .map(|_| {
            let (addr, stop, opened) = (broker.addr(), Arc::clone(&stop), Arc::clone(&opened));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if TcpStream::connect(addr).is_ok() {
                        opened.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    // The established client keeps getting answers while connections pour
    // in and close: 200 round trips, each within the 30 s read timeout.
    let mut slowest = Duration::ZERO;
    for _ in 0..200 {
        let start = Instant::now();
        assert!(
            api_versions(&mut client).is_some(),
            "the established client lost its answers"
        );
        slowest = slowest.max(start.elapsed());
    }
    stop.store(true, Ordering::Relaxed);
    for f in floods {
        f.join().unwrap();
    }
    eprintln!(
        "{} connections opened and closed during 200 round trips; slowest round trip {slowest:?}",
        opened.load(Ordering::Relaxed)
    );
    assert!(opened.load(Ordering::Relaxed) > 0);
}

fn fetch_request(topic: &str, max_bytes: i32) -> FetchRequest {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::protocol::StrBytes;
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_max_bytes(max_bytes)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(max_bytes)])])
}

#[test]
fn clients_that_stop_reading_or_trickle_a_frame_cost_bounded_memory() {
    let broker = Broker::start(1, &[]);
    common::create_topic(&broker, "big", 1);
    // 8 MiB in the partition, 64 KiB a batch.
    let mut producer = answered(&broker);
    let value = vec![b'x'; 64 * 1024];
    for _ in 0..128 {
        let mut b = sluice_protocol::record_batch::BatchBuilder::new(1_000);
        b.push(1_000, None, Some(&value), &[]);
        let mut req = produce_request("big", 0);
        req.topic_data[0].partition_data[0].records = Some(bytes::Bytes::from(b.finish()));
        send(&mut producer, ApiKey::Produce, 9, &req);
        let resp: ProduceResponse = decode(&mut producer, ApiKey::Produce, 9);
        assert_eq!(resp.responses[0].partition_responses[0].error_code, 0);
    }
    let before_kib = rss_kib(broker.pid());
    // A consumer asks for the whole partition 1,000 times and never reads:
    // 8 GB of answers, were they all queued.
    let mut stuck = Raw::connect(broker.addr());
    stuck.stream.set_nonblocking(true).unwrap();
    let fetch = fetch_request("big", 8 * 1024 * 1024);
    let mut body = bytes::BytesMut::new();
    kafka_protocol::protocol::Encodable::encode(&fetch, &mut body, 12).unwrap();
    let mut frames = Vec::new();
    for _ in 0..1_000 {
        let mut payload = Vec::new();
        payload.extend_from_slice(&(ApiKey::Fetch as i16).to_be_bytes());
        payload.extend_from_slice(&12i16.to_be_bytes());
        payload.extend_from_slice(&7i32.to_be_bytes());
        payload.extend_from_slice(&4i16.to_be_bytes());
        payload.extend_from_slice(b"test");
        payload.push(0);
        payload.extend_from_slice(&body);
        frames.extend_from_slice(&(payload.len() as i32).to_be_bytes());
        frames.extend_from_slice(&payload);
    }
    // The broker stops reading once its answers back up, so the requests
    // are written as far as the socket takes them.
    let mut written = 0;
    let start = Instant::now();
    while written < frames.len() && start.elapsed() < Duration::from_secs(5) {
        match std::io::Write::write(&mut stuck.stream, &frames[written..]) {
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => panic!("writing fetches: {e}"),
        }
    }
    // A producer trickles a frame that claims 50 MB, a byte at a time.
    let mut trickle = Raw::connect(broker.addr());
    trickle.send_bytes(&(50_000_000i32).to_be_bytes());
    for _ in 0..20 {
        trickle.send_bytes(&[0]);
        // Meanwhile another client is served as usual.
        assert!(api_versions(&mut producer).is_some());
        std::thread::sleep(Duration::from_millis(50));
    }
    let after_kib = rss_kib(broker.pid());
    eprintln!(
        "broker RSS {before_kib} KiB before, {after_kib} KiB with a consumer that stopped \
         reading ({written} of {} request bytes taken) and a trickling producer",
        frames.len()
    );
    // Bounded by the connection's 16 answers in progress (each a list of
    // file regions, not copies) and by what the trickle sent, far below
    // the 8 GB asked for and the 50 MB claimed.
    assert!(
        after_kib < before_kib + 32 * 1024,
        "RSS grew from {before_kib} KiB to {after_kib} KiB"
    );
}
