//! Group coordinator benchmark against an in-process broker on one shard
//! (one broker per setting, each on a fresh data directory):
//!
//! - rebalance: three consumers subscribe to a 100-partition topic at
//!   once (librdkafka consumers); time from the subscribe calls until all three hold partitions
//!   covering all 100 exactly once. Once with
//!   `group.initial.rebalance.delay.ms` 3000 (Kafka's default) and once
//!   with 0. Kafka's bound to compare with: 2 × delay + 100 ms.
//! - commits: OffsetCommits of one group for a few seconds from
//!   `COMMITTERS` connections, each waiting for its answer before the next
//!   (as a synchronous commit does), with the default flush policy and
//!   with `flush.messages=1` (fsync per commit).
//!
//! cargo run --release -p sluice-engine --example groups [-- --commits-only]

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use sluice_engine::config::BrokerConfig;
use sluice_engine::embedded::EmbeddedBroker;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PARTITIONS: i32 = 100;
const MEMBERS: usize = 3;
const REPEATS: usize = 3;
const COMMITTERS: usize = 32;
const COMMIT_SECONDS: u64 = 5;

fn broker(overrides: &[(&str, &str)]) -> (EmbeddedBroker, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = BrokerConfig::default();
    // A concrete port: the broker advertises the one it is given.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    config
        .set_listen(&format!("127.0.0.1:{port}"))
        .expect("listen");
    config.data_dir = dir.path().to_path_buf();
    config.cores = 1;
    for (k, v) in overrides {
        config.set(k, v).expect("override");
    }
    (EmbeddedBroker::start(config).expect("broker"), dir)
}

fn create_topic(bootstrap: &str, name: &str, partitions: i32) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin");
    let new = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let results = futures::executor::block_on(admin.create_topics([&new], &AdminOptions::new()))
        .expect("create topic");
    assert!(results.iter().all(Result::is_ok), "create topic {name}");
}

fn consumer(bootstrap: &str, group: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "10000")
        .create()
        .expect("consumer")
}

/// Seconds from subscribing until the group's assignment covers every
/// partition exactly once with every member holding some.
fn rebalance_once(bootstrap: &str, topic: &str, group: &str) -> f64 {
    let members: Vec<BaseConsumer> = (0..MEMBERS).map(|_| consumer(bootstrap, group)).collect();
    let start = Instant::now();
    for m in &members {
        m.subscribe(&[topic]).expect("subscribe");
    }
    loop {
        for m in &members {
            let _ = m.poll(Duration::from_millis(1));
        }
        let counts: Vec<usize> = members
            .iter()
            .map(|m| m.assignment().map_or(0, |a| a.count()))
            .collect();
        if counts.iter().all(|&c| c > 0) && counts.iter().sum::<usize>() == PARTITIONS as usize {
            return start.elapsed().as_secs_f64();
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no stable group"
        );
    }
}

fn rebalance(delay_ms: &str) {
    let (b, _dir) = broker(&[("group.initial.rebalance.delay.ms", delay_ms)]);
    let bootstrap = b.bootstrap().to_string();
    create_topic(&bootstrap, "rebalance", PARTITIONS);
    let mut times: Vec<f64> = (0..REPEATS)
        .map(|i| rebalance_once(&bootstrap, "rebalance", &format!("g{i}")))
        .collect();
    times.sort_by(f64::total_cmp);
    let bound = 2.0 * delay_ms.parse::<f64>().expect("ms") / 1000.0 + 0.1;
    println!(
        "{{\"bench\":\"rebalance\",\"members\":{MEMBERS},\"partitions\":{PARTITIONS},\"initial_delay_ms\":{delay_ms},\"min_s\":{:.3},\"median_s\":{:.3},\"bound_s\":{bound:.3}}}",
        times[0],
        times[times.len() / 2]
    );
    b.stop();
}

/// Sends `req` on a blocking connection and returns the response body.
fn call<R: Encodable, A: Decodable>(
    stream: &mut TcpStream,
    key: ApiKey,
    version: i16,
    req: &R,
) -> A {
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_static_str("bench")));
    let mut body = BytesMut::new();
    header
        .encode(&mut body, key.request_header_version(version))
        .expect("header");
    req.encode(&mut body, version).expect("request");
    stream
        .write_all(&(body.len() as u32).to_be_bytes())
        .and_then(|()| stream.write_all(&body))
        .expect("send");
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).expect("response length");
    let mut frame = vec![0u8; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut frame).expect("response");
    let mut buf = Bytes::from(frame);
    ResponseHeader::decode(&mut buf, key.response_header_version(version)).expect("header");
    A::decode(&mut buf, version).expect("body")
}

/// OffsetCommit v8 for one partition of one group, as consumers send it.
fn commit_request(partition: i32, offset: i64) -> OffsetCommitRequest {
    OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("committer")))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(StrBytes::from_static_str("committed")))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(partition)
                .with_committed_offset(offset)])])
}

/// Each committer is one connection sending a commit and waiting for its
/// answer, as a consumer's synchronous commit does, without a client
/// library's thread hand-offs in the way (librdkafka's sync commit costs
/// more CPU in the client than in the broker on a shared 2-core machine).
fn committer(bootstrap: String, partition: i32, deadline: Instant, done: Arc<AtomicU64>) {
    let mut stream = TcpStream::connect(&bootstrap).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let find = FindCoordinatorRequest::default().with_key(StrBytes::from_static_str("committer"));
    let _: FindCoordinatorResponse = call(&mut stream, ApiKey::FindCoordinator, 3, &find);
    let warmup_end = deadline - Duration::from_secs(COMMIT_SECONDS);
    let mut offset = 0;
    while Instant::now() < deadline {
        offset += 1;
        let resp: OffsetCommitResponse = call(
            &mut stream,
            ApiKey::OffsetCommit,
            8,
            &commit_request(partition, offset),
        );
        let code = resp.topics[0].partitions[0].error_code;
        if code == 0 && Instant::now() >= warmup_end {
            done.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn commits(flush_messages: Option<&str>) {
    let overrides: Vec<(&str, &str)> = flush_messages
        .map(|f| vec![("flush.messages", f)])
        .unwrap_or_default();
    let (b, _dir) = broker(&overrides);
    let bootstrap = b.bootstrap().to_string();
    create_topic(&bootstrap, "committed", COMMITTERS as i32);
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(COMMIT_SECONDS + 2);
    let threads: Vec<_> = (0..COMMITTERS)
        .map(|i| {
            let (bootstrap, done) = (bootstrap.clone(), Arc::clone(&done));
            std::thread::spawn(move || committer(bootstrap, i as i32, deadline, done))
        })
        .collect();
    for t in threads {
        t.join().expect("committer");
    }
    let rate = done.load(Ordering::Relaxed) as f64 / COMMIT_SECONDS as f64;
    println!(
        "{{\"bench\":\"commits\",\"committers\":{COMMITTERS},\"flush_messages\":\"{}\",\"commits_per_s\":{rate:.0}}}",
        flush_messages.unwrap_or("default")
    );
    b.stop();
}

fn main() {
    if std::env::args().any(|a| a == "--commits-only") {
        return commits(None);
    }
    rebalance("0");
    rebalance("3000");
    commits(None);
    commits(Some("1"));
}
