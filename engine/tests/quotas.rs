//! Client quotas end to end: AlterClientQuotas and DescribeClientQuotas
//! over the wire (answers, Kafka's refusals, a restart, a second broker
//! of a cluster), and a librdkafka producer over its producer quota:
//! throttled (`throttle_time_ms` > 0, as librdkafka's statistics report
//! it), held to a generous bound of its quota over ten seconds and more,
//! while another client on the same broker is not throttled at all; a
//! consumer the same way; and a request-time quota on the anonymous user
//! that mutes the connection.

mod common;

use common::{call, create_topic, Broker, Raw, READY_DEADLINE};
use kafka_protocol::messages::alter_client_quotas_request::{EntityData, EntryData, OpData};
use kafka_protocol::messages::describe_client_quotas_request::ComponentData;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// An entry setting (`Some`) or removing (`None`) quotas of an entity:
/// (entity type, name; None for the default).
fn entry(entity: &[(&str, Option<&str>)], ops: &[(&str, Option<f64>)]) -> EntryData {
    EntryData::default()
        .with_entity(
            entity
                .iter()
                .map(|(t, n)| {
                    EntityData::default()
                        .with_entity_type(s(t))
                        .with_entity_name(n.map(s))
                })
                .collect(),
        )
        .with_ops(
            ops.iter()
                .map(|(k, v)| {
                    OpData::default()
                        .with_key(s(k))
                        .with_value(v.unwrap_or(0.0))
                        .with_remove(v.is_none())
                })
                .collect(),
        )
}

/// Each entry's (error code, message).
fn alter(addr: SocketAddr, entries: Vec<EntryData>, validate_only: bool) -> Vec<(i16, String)> {
    let mut raw = Raw::connect(addr);
    let req = AlterClientQuotasRequest::default()
        .with_entries(entries)
        .with_validate_only(validate_only);
    let resp: AlterClientQuotasResponse =
        call(&mut raw, ApiKey::AlterClientQuotas, 1, &req).expect("an answer");
    resp.entries
        .iter()
        .map(|e| {
            let m = e.error_message.as_deref().unwrap_or("").to_string();
            (e.error_code, m)
        })
        .collect()
}

/// Entities as "type=name,..." ("<default>" for a null name), each with
/// its quotas.
type Described = BTreeMap<String, BTreeMap<String, f64>>;

fn describe(
    addr: SocketAddr,
    components: &[(&str, i8, Option<&str>)],
    strict: bool,
) -> Result<Described, (i16, String)> {
    let mut raw = Raw::connect(addr);
    let req = DescribeClientQuotasRequest::default()
        .with_components(
            components
                .iter()
                .map(|(t, m, name)| {
                    ComponentData::default()
                        .with_entity_type(s(t))
                        .with_match_type(*m)
                        .with_match(name.map(s))
                })
                .collect(),
        )
        .with_strict(strict);
    let resp: DescribeClientQuotasResponse =
        call(&mut raw, ApiKey::DescribeClientQuotas, 1, &req).expect("an answer");
    if resp.error_code != 0 {
        return Err((
            resp.error_code,
            resp.error_message.as_deref().unwrap_or("").to_string(),
        ));
    }
    Ok(resp
        .entries
        .expect("entries")
        .iter()
        .map(|e| {
            let entity = e
                .entity
                .iter()
                .map(|d| {
                    format!(
                        "{}={}",
                        d.entity_type.as_str(),
                        d.entity_name.as_deref().unwrap_or("<default>")
                    )
                })
                .collect::<Vec<_>>()
                .join(",");
            let values = e
                .values
                .iter()
                .map(|v| (v.key.to_string(), v.value))
                .collect();
            (entity, values)
        })
        .collect())
}

fn quotas(entries: &[(&str, &[(&str, f64)])]) -> Described {
    entries
        .iter()
        .map(|(e, vs)| {
            (
                e.to_string(),
                vs.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            )
        })
        .collect()
}

const INVALID_REQUEST: i16 = 42;
const UNSUPPORTED_VERSION: i16 = 35;

#[test]
fn quotas_are_altered_described_refused_as_kafka_and_survive_a_restart() {
    let mut broker = Broker::start(2, &[]);
    let addr = broker.addr();
    let ok = (0, String::new());
    // validate_only stores nothing.
    let checked = alter(
        addr,
        vec![entry(
            &[("user", Some("alice"))],
            &[("producer_byte_rate", Some(1024.0))],
        )],
        true,
    );
    assert_eq!(checked, vec![ok.clone()]);
    assert_eq!(describe(addr, &[], false).unwrap(), Described::new());
    let answers = alter(
        addr,
        vec![
            entry(
                &[("user", Some("alice"))],
                &[
                    ("producer_byte_rate", Some(1024.0)),
                    ("request_percentage", Some(50.5)),
                ],
            ),
            entry(
                &[("user", Some("alice")), ("client-id", None)],
                &[("consumer_byte_rate", Some(2048.0))],
            ),
            entry(
                &[("client-id", None)],
                &[("consumer_byte_rate", Some(4096.0))],
            ),
            entry(&[("user", None)], &[("bogus_rate", Some(1.0))]),
            entry(
                &[("user", Some("bob"))],
                &[("producer_byte_rate", Some(10.5))],
            ),
            entry(&[], &[("producer_byte_rate", Some(1.0))]),
            entry(&[("user", Some(""))], &[("producer_byte_rate", Some(1.0))]),
            entry(
                &[("user", Some("a")), ("user", Some("b"))],
                &[("producer_byte_rate", Some(1.0))],
            ),
            entry(
                &[("group", Some("g"))],
                &[("producer_byte_rate", Some(1.0))],
            ),
        ],
        false,
    );
    let invalid = |m: &str| (INVALID_REQUEST, m.to_string());
    assert_eq!(
        answers,
        vec![
            ok.clone(),
            ok.clone(),
            ok.clone(),
            invalid("Invalid configuration key bogus_rate"),
            invalid("Configuration producer_byte_rate must be a Long value"),
            invalid("Invalid empty client quota entity"),
            invalid("Empty user not supported"),
            invalid("Invalid empty client quota entity, duplicate entity entry user"),
            invalid("Unhandled client quota entity type: group"),
        ]
    );
    let all = quotas(&[
        ("client-id=<default>", &[("consumer_byte_rate", 4096.0)]),
        (
            "user=alice",
            &[("producer_byte_rate", 1024.0), ("request_percentage", 50.5)],
        ),
        (
            "user=alice,client-id=<default>",
            &[("consumer_byte_rate", 2048.0)],
        ),
    ]);
    assert_eq!(describe(addr, &[], false).unwrap(), all);
    // Kafka's filters: exact (0), default (1), specified (2); strict.
    let alice = describe(addr, &[("user", 0, Some("alice"))], false).unwrap();
    assert_eq!(alice.len(), 2, "{alice:?}");
    let alice_only = describe(addr, &[("user", 0, Some("alice"))], true).unwrap();
    assert_eq!(alice_only.keys().collect::<Vec<_>>(), ["user=alice"]);
    let default_clients = describe(addr, &[("client-id", 1, None)], false).unwrap();
    assert_eq!(default_clients.len(), 2, "{default_clients:?}");
    let any_client_strict = describe(addr, &[("client-id", 2, None)], true).unwrap();
    assert_eq!(
        any_client_strict.keys().collect::<Vec<_>>(),
        ["client-id=<default>"]
    );
    assert_eq!(
        describe(addr, &[("user", 0, None)], false).unwrap_err(),
        (
            INVALID_REQUEST,
            "Request specified MATCH_TYPE_EXACT, but set match string to null.".to_string()
        )
    );
    assert_eq!(
        describe(addr, &[("topic", 2, None)], false).unwrap_err().0,
        UNSUPPORTED_VERSION
    );
    // A removal, and the quotas survive a restart.
    let removed = alter(
        addr,
        vec![entry(
            &[("user", Some("alice"))],
            &[("request_percentage", None)],
        )],
        false,
    );
    assert_eq!(removed, vec![ok]);
    broker.stop();
    broker.restart();
    let after = describe(broker.addr(), &[], false).unwrap();
    let expected = quotas(&[
        ("client-id=<default>", &[("consumer_byte_rate", 4096.0)]),
        ("user=alice", &[("producer_byte_rate", 1024.0)]),
        (
            "user=alice,client-id=<default>",
            &[("consumer_byte_rate", 2048.0)],
        ),
    ]);
    assert_eq!(after, expected);
}

#[test]
fn a_quota_reaches_every_broker_of_a_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let c = sluice_engine::cluster::local::LocalCluster::start(
        common::cluster_spec(dir.path(), 2),
        READY_DEADLINE,
    )
    .expect("cluster starts");
    let at = |node: usize| SocketAddr::from(([127, 0, 0, 1], c.spec.ports[node - 1]));
    let answers = alter(
        at(1),
        vec![entry(
            &[("client-id", Some("app"))],
            &[("producer_byte_rate", Some(5000.0))],
        )],
        false,
    );
    assert_eq!(answers, vec![(0, String::new())]);
    let expected = quotas(&[("client-id=app", &[("producer_byte_rate", 5000.0)])]);
    let deadline = Instant::now() + READY_DEADLINE;
    loop {
        let seen = describe(at(2), &[], false).unwrap();
        if seen == expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "broker 2 never saw the quota: {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The largest throttle librdkafka saw in any broker's responses.
#[derive(Default)]
struct Throttles(Arc<AtomicI64>);

impl rdkafka::ClientContext for Throttles {
    fn stats(&self, statistics: rdkafka::Statistics) {
        for b in statistics.brokers.values() {
            if let Some(w) = &b.throttle {
                self.0.fetch_max(w.max, Ordering::Relaxed);
            }
        }
    }
}

impl rdkafka::producer::ProducerContext for Throttles {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: ()) {}
}

fn producer(bootstrap: &str, client_id: &str) -> (ThreadedProducer<Throttles>, Arc<AtomicI64>) {
    let seen = Arc::new(AtomicI64::new(0));
    let p = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("client.id", client_id)
        .set("linger.ms", "5")
        .set("statistics.interval.ms", "500")
        .create_with_context(Throttles(Arc::clone(&seen)))
        .expect("producer");
    (p, seen)
}

/// Sends `value`s for `run` as fast as the producer's queue takes them,
/// then waits for them all: the bytes of record values acknowledged and
/// the time it took.
fn send_for(
    p: &ThreadedProducer<Throttles>,
    topic: &str,
    value: &[u8],
    run: Duration,
) -> (usize, Duration) {
    let started = Instant::now();
    let mut sent = 0;
    while started.elapsed() < run {
        match p.send(BaseRecord::<(), [u8]>::to(topic).payload(value)) {
            Ok(()) => sent += value.len(),
            Err((_, _)) => std::thread::sleep(Duration::from_millis(5)),
        }
        // Keeps the queue short, so the count is what the broker took.
        while p.in_flight_count() > 64 && started.elapsed() < run {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    p.flush(Duration::from_secs(120))
        .expect("everything acknowledged");
    (sent, started.elapsed())
}

/// The metrics listener's text.
fn scrape(port: u16) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("metrics listener");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn a_producer_over_its_quota_is_throttled_and_another_is_not() {
    let metrics_port = common::free_port();
    let broker = Broker::start(2, &[&format!("metrics.listener=127.0.0.1:{metrics_port}")]);
    create_topic(&broker, "metered", 1);
    const QUOTA: f64 = 200_000.0;
    let answers = alter(
        broker.addr(),
        vec![entry(
            &[("client-id", Some("greedy"))],
            &[("producer_byte_rate", Some(QUOTA))],
        )],
        false,
    );
    assert_eq!(answers, vec![(0, String::new())]);
    let value = vec![7u8; 10_000];
    let (greedy, greedy_throttle) = producer(&broker.bootstrap(), "greedy");
    // 12 s: longer than the 11 one-second samples a rate spans.
    let (bytes, took) = send_for(&greedy, "metered", &value, Duration::from_secs(12));
    let rate = bytes as f64 / took.as_secs_f64();
    eprintln!("greedy: {bytes} bytes in {took:?}: {rate:.0} B/s against a quota of {QUOTA} B/s");
    assert!(rate <= 2.0 * QUOTA, "{rate:.0} B/s is over twice the quota");
    // librdkafka reports the broker's throttle_time_ms in its statistics.
    let deadline = Instant::now() + Duration::from_secs(30);
    while greedy_throttle.load(Ordering::Relaxed) == 0 {
        assert!(
            Instant::now() < deadline,
            "the producer never saw a throttle"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Another client sends more than the quota allows, unthrottled.
    let (other, other_throttle) = producer(&broker.bootstrap(), "other");
    let (other_bytes, _) = send_for(&other, "metered", &value, Duration::from_secs(3));
    assert!(other_bytes as f64 > 0.0);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        other_throttle.load(Ordering::Relaxed),
        0,
        "an unthrottled client was throttled"
    );
    let body = scrape(metrics_port);
    let produce_line = body
        .lines()
        .find(|l| l.starts_with("sluice_quota_throttled_responses_total{quota=\"produce\"}"))
        .unwrap_or_else(|| panic!("no produce throttle counter:\n{body}"));
    let throttled: f64 = produce_line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(throttled > 0.0, "{produce_line}");
}

/// The consumer's side of [`Throttles`].
impl rdkafka::consumer::ConsumerContext for Throttles {}

#[test]
fn a_consumer_over_its_quota_is_throttled_and_reads_on() {
    let broker = Broker::start(2, &[]);
    create_topic(&broker, "backlog", 1);
    let value = vec![3u8; 10_000];
    let (filler, _) = producer(&broker.bootstrap(), "filler");
    // 6 MB: more than the consumer may read in the 12 s it reads.
    for _ in 0..600 {
        while filler
            .send(BaseRecord::<(), [u8]>::to("backlog").payload(&value[..]))
            .is_err()
        {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    filler
        .flush(Duration::from_secs(120))
        .expect("backlog written");
    const QUOTA: f64 = 200_000.0;
    let answers = alter(
        broker.addr(),
        vec![entry(
            &[("client-id", Some("slow"))],
            &[("consumer_byte_rate", Some(QUOTA))],
        )],
        false,
    );
    assert_eq!(answers, vec![(0, String::new())]);
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let seen = Arc::new(AtomicI64::new(0));
    let consumer: BaseConsumer<Throttles> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("client.id", "slow")
        .set("group.id", "slow-readers")
        .set("statistics.interval.ms", "500")
        .create_with_context(Throttles(Arc::clone(&seen)))
        .expect("consumer");
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset("backlog", 0, rdkafka::Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let started = Instant::now();
    let mut bytes = 0usize;
    let mut next = 0i64;
    while started.elapsed() < Duration::from_secs(12) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            use rdkafka::Message;
            assert_eq!(m.offset(), next, "records in order, none skipped");
            next += 1;
            bytes += m.payload().map_or(0, |p| p.len());
        }
    }
    let rate = bytes as f64 / started.elapsed().as_secs_f64();
    eprintln!(
        "slow: {bytes} bytes in {:?}: {rate:.0} B/s against a quota of {QUOTA} B/s",
        started.elapsed()
    );
    assert!(bytes > 0, "the consumer read nothing");
    assert!(rate <= 2.0 * QUOTA, "{rate:.0} B/s is over twice the quota");
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.load(Ordering::Relaxed) == 0 {
        assert!(
            Instant::now() < deadline,
            "the consumer never saw a throttle"
        );
        let _ = consumer.poll(Duration::from_millis(100));
    }
}

/// A request-time quota on the anonymous user (what a client of a
/// listener without authentication is): a client that keeps asking is
/// throttled for the shard time its requests take, and still answered.
#[test]
fn a_request_percentage_quota_on_the_anonymous_user_throttles_its_requests() {
    let metrics_port = common::free_port();
    let broker = Broker::start(1, &[&format!("metrics.listener=127.0.0.1:{metrics_port}")]);
    // 0.0001% of a shard: 10 µs of handling per 10 s, less than a few
    // Metadata requests take.
    let answers = alter(
        broker.addr(),
        vec![entry(
            &[("user", Some("ANONYMOUS"))],
            &[("request_percentage", Some(0.0001))],
        )],
        false,
    );
    assert_eq!(answers, vec![(0, String::new())]);
    let mut raw = Raw::connect(broker.addr());
    let started = Instant::now();
    let mut throttles = Vec::new();
    for _ in 0..20 {
        let m: MetadataResponse = call(&mut raw, ApiKey::Metadata, 12, &MetadataRequest::default())
            .expect("a throttled client is still answered");
        assert!(!m.brokers.is_empty());
        throttles.push(m.throttle_time_ms);
    }
    // The answers say so too (Kafka's throttle_time_ms), up to the
    // longest request-time throttle.
    assert!(
        throttles.iter().any(|&t| t > 0) && throttles.iter().all(|&t| (0..=1_000).contains(&t)),
        "throttle_time_ms of the answers: {throttles:?}"
    );
    // Each request past the first few mutes the connection for the
    // longest request-time throttle, 1 s: a lower bound, not a speed.
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(5),
        "20 requests in {took:?}: the connection was not muted"
    );
    let body = scrape(metrics_port);
    let line = body
        .lines()
        .find(|l| l.starts_with("sluice_quota_throttled_responses_total{quota=\"request\"}"))
        .unwrap_or_else(|| panic!("no request throttle counter:\n{body}"));
    let throttled: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(throttled > 0.0, "{line}");
}
