//! `--cores 2`: partitions spread over both shards, one produce request
//! spanning both shards is answered right, and connections land on both;
//! what a fetch over many partitions costs: trips between shards while it
//! parks, packets in its answer.

mod common;

use common::scrape::{samples, scrape_until, sum_matching};
use common::{Broker, Raw};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const PARTITIONS: i32 = 8;

/// Reads `key=value` from the broker's "shard stopped" line for `shard`.
fn shard_stat(log: &str, shard: usize, key: &str) -> u64 {
    let line = log
        .lines()
        .find(|l| l.contains("shard stopped") && l.contains(&format!("shard={shard} ")))
        .unwrap_or_else(|| panic!("no stop line for shard {shard} in:\n{log}"));
    let field = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .expect(key);
    field.parse().unwrap()
}

#[test]
fn two_shards_share_partitions_and_connections() {
    let mut broker = Broker::start(2, &[&format!("num.partitions={PARTITIONS}")]);
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("linger.ms", "50")
        .create()
        .unwrap();
    // linger.ms lets one request carry batches for every partition.
    for i in 0..4000 {
        let v = format!("m{i}");
        let p = i % PARTITIONS;
        producer
            .send(BaseRecord::<(), _>::to("spread").partition(p).payload(&v))
            .unwrap();
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(60)).unwrap();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", "unused")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset("spread", p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut seen = BTreeSet::new();
    let start = Instant::now();
    while seen.len() < 4000 {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "consumed {}",
            seen.len()
        );
        if let Some(m) = common::poll_message(&consumer, String::new) {
            let v = String::from_utf8(m.payload().unwrap().to_vec()).unwrap();
            let i: i32 = v[1..].parse().unwrap();
            assert_eq!(
                i % PARTITIONS,
                m.partition(),
                "message {i} in its partition"
            );
            assert!(seen.insert(i), "message {i} twice");
        }
    }
    // Many connections: the kernel's SO_REUSEPORT hash sends some to each shard.
    let mut conns: Vec<Raw> = (0..32).map(|_| Raw::connect(broker.addr())).collect();
    for (i, c) in conns.iter_mut().enumerate() {
        c.send(18, 0, i as i32, false, &[]);
        assert!(c.recv().is_some());
    }
    drop(conns);
    drop(consumer);
    drop(producer);
    broker.stop();
    let log = broker.log();
    for shard in 0..2 {
        assert!(
            shard_stat(&log, shard, "partitions") > 0,
            "shard {shard} owns partitions"
        );
        assert!(
            shard_stat(&log, shard, "connections") > 0,
            "shard {shard} served connections"
        );
    }
    let forwarded =
        shard_stat(&log, 0, "cross_shard_jobs") + shard_stat(&log, 1, "cross_shard_jobs");
    assert!(forwarded > 0, "requests were forwarded between shards");
}

/// The sum of `sluice_cross_shard_jobs_total` over the shards, scraped
/// from the metrics listener on `port`.
fn cross_shard_jobs(port: u16) -> f64 {
    const NAME: &str = "sluice_cross_shard_jobs_total";
    let body = scrape_until(port, "cross-shard jobs", |s| {
        s.keys().any(|k| k.starts_with(NAME))
    });
    sum_matching(&samples(&body), NAME, "")
}

/// Writes one record to each of the topic's partitions.
fn one_record_each(broker: &Broker, topic: &str) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .unwrap();
    for p in 0..PARTITIONS {
        producer
            .send(BaseRecord::to(topic).partition(p).payload("some").key("k"))
            .unwrap();
    }
    producer.flush(Duration::from_secs(60)).unwrap();
}

/// Fetches every partition of `topic` from offset 0.
fn fetch_all(
    raw: &mut Raw,
    topic: &str,
    min_bytes: i32,
    max_wait_ms: i32,
) -> kafka_protocol::messages::FetchResponse {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::{ApiKey, BrokerId, FetchRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;
    let partitions = (0..PARTITIONS)
        .map(|p| {
            FetchPartition::default()
                .with_partition(p)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20)
        })
        .collect();
    let req = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(min_bytes)
        .with_max_bytes(1 << 20)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(partitions)]);
    let resp: kafka_protocol::messages::FetchResponse =
        common::call(raw, ApiKey::Fetch, 12, &req).expect("Fetch answer");
    let answered = resp.responses[0]
        .partitions
        .iter()
        .filter(|p| p.records.as_ref().is_some_and(|r| !r.is_empty()))
        .count();
    assert_eq!(answered, PARTITIONS as usize, "{resp:?}");
    resp
}

/// A fetch parked on `min_bytes` while part of it is there waits for
/// news: it does not read its partitions on the other shard again and
/// again until `max_wait_ms` ends. One trip per owner reads and watches,
/// one more reads at the end: a handful of jobs, where reading in a loop
/// made thousands in the same second.
#[test]
fn a_fetch_short_of_min_bytes_waits_without_reading_in_a_loop() {
    let metrics = common::free_port();
    let broker = Broker::start(
        2,
        &[
            &format!("num.partitions={PARTITIONS}"),
            &format!("metrics.listener=127.0.0.1:{metrics}"),
        ],
    );
    one_record_each(&broker, "spin");
    let mut raw = Raw::connect(broker.addr());
    let before = cross_shard_jobs(metrics);
    fetch_all(&mut raw, "spin", 1 << 20, 1000);
    let after = cross_shard_jobs(metrics);
    // The scrapes make a job each too.
    assert!(
        after - before < 50.0,
        "{} cross-shard jobs during one parked fetch",
        after - before
    );
}

/// TCP segments `socket` has received (`tcpi_segs_in` of TCP_INFO).
fn segments_in(socket: &std::net::TcpStream) -> u32 {
    use std::os::unix::io::AsRawFd;
    // struct tcp_info up to tcpi_segs_in, which starts at byte 140.
    const SEGS_IN: usize = 140;
    let mut info = [0u8; 256];
    let mut len = info.len() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `info`.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "TCP_INFO: {}", std::io::Error::last_os_error());
    assert!(len as usize >= SEGS_IN + 4, "TCP_INFO of {len} bytes");
    u32::from_ne_bytes(info[SEGS_IN..SEGS_IN + 4].try_into().unwrap())
}

/// A fetch answer is a header, then per partition its header and its
/// records sent from the segment file: with TCP_NODELAY each part would
/// leave as a packet of its own (17 here), each one costing the client a
/// wake-up. The broker corks the socket for the answer, so it leaves in
/// as few packets as its size allows: one, here, and an ACK at most.
#[test]
fn a_fetch_answer_of_many_parts_leaves_in_few_packets() {
    let broker = Broker::start(1, &[&format!("num.partitions={PARTITIONS}")]);
    one_record_each(&broker, "packets");
    let mut raw = Raw::connect(broker.addr());
    fetch_all(&mut raw, "packets", 1, 0);
    let before = segments_in(&raw.stream);
    fetch_all(&mut raw, "packets", 1, 0);
    let got = segments_in(&raw.stream) - before;
    assert!(got <= 3, "one fetch answer came in {got} segments");
}
