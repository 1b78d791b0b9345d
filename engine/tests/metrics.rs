//! The metrics listener: what a scrape shows after known traffic, the
//! health endpoints, and bad HTTP input.

mod common;

use common::scrape::{get, http, samples, scrape_until, sum_matching};
use common::{call, create_topic, free_port, poll_message, Broker, Raw};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    ProduceRequest, ProduceResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[test]
fn a_scrape_counts_traffic_per_topic_and_the_groups_lag() {
    let metrics_port = free_port();
    let broker = Broker::start(2, &[&format!("metrics.listener=127.0.0.1:{metrics_port}")]);
    create_topic(&broker, "counted", 3);

    let producer: ThreadedProducer<_> = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    for i in 0..600 {
        let v = format!("value-{i:04}");
        producer
            .send(
                BaseRecord::<(), _>::to("counted")
                    .partition(i % 3)
                    .payload(&v),
            )
            .unwrap();
    }
    producer.flush(Duration::from_secs(60)).unwrap();

    // Every byte appended is in the log, and every record is counted.
    let body = scrape_until(metrics_port, "600 records in", |s| {
        s.get("sluice_topic_messages_in_total{topic=\"counted\"}") == Some(&600.0)
    });
    let s = samples(&body);
    let bytes_in = s["sluice_topic_bytes_in_total{topic=\"counted\"}"];
    let log_bytes = sum_matching(&s, "sluice_log_size_bytes{", "topic=\"counted\"");
    assert!(bytes_in > 600.0 * 10.0, "{bytes_in}");
    assert_eq!(bytes_in, log_bytes, "bytes in and bytes in the logs");
    assert_eq!(
        sum_matching(&s, "sluice_log_end_offset{", "topic=\"counted\""),
        600.0
    );
    assert!(
        sum_matching(&s, "sluice_requests_total{", "api=\"Produce\"") >= 1.0,
        "produce requests counted"
    );

    // A group reads everything once and commits 150 of partition 0's 200.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", "lagging")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition_offset("counted", p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut read = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while read < 600 {
        assert!(Instant::now() < deadline, "read {read} of 600");
        if poll_message(&consumer, || "consuming".into()).is_some() {
            read += 1;
        }
    }
    let mut commit = TopicPartitionList::new();
    commit
        .add_partition_offset("counted", 0, Offset::Offset(150))
        .unwrap();
    consumer.commit(&commit, CommitMode::Sync).unwrap();

    let body = scrape_until(metrics_port, "the group's lag", |s| {
        s.get("sluice_consumer_group_lag{group=\"lagging\",topic=\"counted\",partition=\"0\"}")
            .is_some()
    });
    let s = samples(&body);
    assert_eq!(
        s["sluice_consumer_group_lag{group=\"lagging\",topic=\"counted\",partition=\"0\"}"],
        50.0
    );
    assert_eq!(
        s["sluice_consumer_group_committed_offset{group=\"lagging\",topic=\"counted\",partition=\"0\"}"],
        150.0
    );
    assert!(
        s["sluice_topic_bytes_out_total{topic=\"counted\"}"] >= bytes_in,
        "everything was read at least once"
    );
    let out = s["sluice_topic_messages_out_total{topic=\"counted\"}"];
    assert!(out >= 600.0, "every record was read at least once: {out}");
    // One more read of partition 0 from its start sends its 200 records.
    drop(consumer);
    let body = scrape_until(metrics_port, "the consumer's reads counted", |s| {
        s.get("sluice_topic_messages_out_total{topic=\"counted\"}") == Some(&out)
    });
    let before = samples(&body)["sluice_topic_bytes_out_total{topic=\"counted\"}"];
    let read = common::fetch_partition_0(&mut Raw::connect(broker.addr()), "counted", 0);
    let body = scrape_until(metrics_port, "200 more records out", |s| {
        s.get("sluice_topic_messages_out_total{topic=\"counted\"}") == Some(&(out + 200.0))
    });
    assert_eq!(
        samples(&body)["sluice_topic_bytes_out_total{topic=\"counted\"}"],
        before + read.len() as f64
    );
    assert!(s["process_resident_memory_bytes"] > 0.0);
    assert!(sum_matching(&s, "sluice_connections{", "") >= 1.0);

    // The whole scrape parses as OpenMetrics text.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scrape.txt");
    std::fs::write(&path, &body).unwrap();
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import sys\n\
             from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse\n\
             families = list(parse(open(sys.argv[1]).read()))\n\
             print(len(families))",
        )
        .arg(&path)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "the scrape does not parse: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let families: usize = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert!(families > 20, "{families} families");

    // Every metric the Grafana dashboard plots is one the broker exports.
    let dashboard = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/grafana-dashboard.json"
    ))
    .unwrap();
    let exported: std::collections::BTreeSet<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    let names = regex_names(&dashboard);
    assert!(names.len() > 10, "{names:?}");
    for name in names {
        let family = ["_total", "_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(&name);
        assert!(
            exported.contains(family),
            "the dashboard plots {name}, which no scrape has"
        );
    }
}

/// Metric names (`sluice_...`, `process_...`) in a dashboard's queries.
fn regex_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    for start in ["sluice_", "process_"] {
        let mut rest = text;
        while let Some(i) = rest.find(start) {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            names.insert(tail[..end].to_string());
            rest = &tail[end..];
        }
    }
    names
}

#[test]
fn health_endpoints_answer_and_bad_http_is_refused() {
    let metrics_port = free_port();
    let _broker = Broker::start(1, &[&format!("metrics.listener=127.0.0.1:{metrics_port}")]);
    assert_eq!(get(metrics_port, "/live"), (200, "live\n".to_string()));
    let deadline = Instant::now() + Duration::from_secs(60);
    while get(metrics_port, "/ready").0 != 200 {
        assert!(Instant::now() < deadline, "never ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(get(metrics_port, "/nothing-here").0, 404);
    assert_eq!(
        http(metrics_port, b"POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n").0,
        405
    );
    assert_eq!(http(metrics_port, b"GARBAGE\r\n\r\n").0, 400);
    let huge = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n", "a".repeat(20_000));
    assert_eq!(http(metrics_port, huge.as_bytes()).0, 431);
    let (status, body) = http(metrics_port, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!((status, body.as_str()), (200, ""));
    // The broker still serves scrapes after all that.
    assert_eq!(get(metrics_port, "/metrics").0, 200);
}

#[test]
fn a_metrics_listener_that_cannot_bind_stops_the_start_naming_the_key() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args([
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--cores",
            "1",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--override", &format!("metrics.listener=127.0.0.1:{port}")])
        .output()
        .expect("run sluice");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("metrics.listener"), "{stderr}");
}

/// One sample as Python's `prometheus_client` reads it.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses a scrape with Python's `prometheus_client` OpenMetrics parser
/// (failing the test if it does not parse) and returns every sample.
fn parse_with_prometheus_client(body: &str) -> Vec<Sample> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scrape.txt");
    std::fs::write(&path, body).unwrap();
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import sys, json\n\
             from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse\n\
             print(json.dumps([[s.name, s.labels, s.value] for f in parse(open(sys.argv[1]).read()) for s in f.samples]))",
        )
        .arg(&path)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "the scrape does not parse: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<(String, BTreeMap<String, String>, f64)> =
        serde_json::from_slice(&out.stdout).expect("the parser's samples as JSON");
    rows.into_iter()
        .map(|(name, labels, value)| Sample {
            name,
            labels,
            value,
        })
        .collect()
}

/// The value of the sample `name` whose labels include `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

fn wait_ready(metrics_port: u16) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while get(metrics_port, "/ready").0 != 200 {
        assert!(Instant::now() < deadline, "never ready");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Produce v`version` of one small batch to partition 0 of `topic`; the
/// partition's error code.
fn produce(raw: &mut Raw, topic: &str, version: i16, acks: i16) -> i16 {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    let mut batch = sluice_protocol::record_batch::BatchBuilder::new(1_000);
    batch.push(1_000, Some(b"k"), Some(b"timed value"), &[]);
    let req = ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(bytes::Bytes::from(batch.finish())))])]);
    let resp: ProduceResponse = call(raw, ApiKey::Produce, version, &req).expect("an answer");
    resp.responses[0].partition_responses[0].error_code
}

/// Histogram `name` for `api` is sane: `count` observations, buckets
/// that never decrease up to +Inf holding them all, and a sum that is a
/// time.
fn assert_histogram(samples: &[Sample], name: &str, api: &str, count: f64) {
    let api_label = [("api", api)];
    assert_eq!(
        value(samples, &format!("{name}_count"), &api_label),
        Some(count),
        "{name} of {api}"
    );
    let sum = value(samples, &format!("{name}_sum"), &api_label).expect("a sum");
    assert!(sum.is_finite() && sum >= 0.0, "{name} sum {sum}");
    let buckets: Vec<f64> = samples
        .iter()
        .filter(|s| s.name == format!("{name}_bucket") && s.labels["api"] == api)
        .map(|s| s.value)
        .collect();
    assert!(buckets.len() > 10, "{name}: {buckets:?}");
    assert!(
        buckets.windows(2).all(|w| w[0] <= w[1]),
        "{name}: {buckets:?}"
    );
    assert_eq!(
        value(
            samples,
            &format!("{name}_bucket"),
            &[("api", api), ("le", "+Inf")]
        ),
        Some(count)
    );
}

#[test]
fn requests_are_timed_per_api_and_connections_counted_per_listener() {
    let metrics_port = free_port();
    let broker = Broker::start(2, &[&format!("metrics.listener=127.0.0.1:{metrics_port}")]);
    wait_ready(metrics_port);
    let mut raw = Raw::connect(broker.addr());
    let req = CreateTopicsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_static_str("timed")))
            .with_num_partitions(1)
            .with_replication_factor(1)]);
    let resp: CreateTopicsResponse = call(&mut raw, ApiKey::CreateTopics, 7, &req).unwrap();
    assert_eq!(resp.topics[0].error_code, 0);

    // Known Produce traffic from this client alone: v9 with acks=1 and
    // acks=all (whose answer waits for the in-sync replicas), and v7.
    let mut sent = BTreeMap::from([(7, 0.0), (9, 0.0)]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while produce(&mut raw, "timed", 9, 1) != 0 {
        // The new partition may not be led yet: those count too.
        *sent.get_mut(&9).unwrap() += 1.0;
        assert!(Instant::now() < deadline, "the topic never took a produce");
        std::thread::sleep(Duration::from_millis(100));
    }
    *sent.get_mut(&9).unwrap() += 1.0;
    for i in 0..29 {
        let acks = if i % 3 == 0 { -1 } else { 1 };
        assert_eq!(produce(&mut raw, "timed", 9, acks), 0);
        *sent.get_mut(&9).unwrap() += 1.0;
    }
    for _ in 0..5 {
        assert_eq!(produce(&mut raw, "timed", 7, 1), 0);
        *sent.get_mut(&7).unwrap() += 1.0;
    }
    let total: f64 = sent.values().sum();
    let body = scrape_until(metrics_port, "every Produce answer sent", |s| {
        s.get("sluice_request_send_seconds_count{api=\"Produce\"}") == Some(&total)
    });
    let s = parse_with_prometheus_client(&body);
    for (version, n) in &sent {
        let version = version.to_string();
        let labels = [("api", "Produce"), ("version", version.as_str())];
        assert_eq!(
            value(&s, "sluice_requests_total", &labels),
            Some(*n),
            "{labels:?}"
        );
    }
    for name in [
        "sluice_request_queue_seconds",
        "sluice_request_handle_seconds",
        "sluice_request_send_seconds",
    ] {
        assert_histogram(&s, name, "Produce", total);
    }
    assert!(
        value(
            &s,
            "sluice_request_handle_seconds_sum",
            &[("api", "Produce")]
        )
        .unwrap()
            > 0.0
    );
    assert_histogram(&s, "sluice_request_handle_seconds", "CreateTopics", 1.0);
    assert_eq!(
        value(&s, "sluice_request_errors_total", &[("api", "Produce")]),
        None
    );
    // A single broker is its own controller: a voter with a metadata log.
    assert!(value(&s, "sluice_metadata_log_entries", &[]).is_some());
    assert!(value(&s, "sluice_metadata_log_bytes", &[]).is_some());

    // Connections: this client's, then five more, then those closed.
    let plaintext = [("listener", "PLAINTEXT")];
    let open = |s: &[Sample]| value(s, "sluice_listener_connections", &plaintext).unwrap();
    let base = open(&s);
    assert!(base >= 1.0, "this client's connection is open");
    let accepted = value(&s, "sluice_listener_connections_accepted_total", &plaintext).unwrap();
    let closed = value(&s, "sluice_listener_connections_closed_total", &plaintext).unwrap();
    assert_eq!(accepted - closed, base);
    let more: Vec<Raw> = (0..5)
        .map(|_| {
            let mut r = Raw::connect(broker.addr());
            let _: ApiVersionsResponse = call(
                &mut r,
                ApiKey::ApiVersions,
                3,
                &ApiVersionsRequest::default(),
            )
            .unwrap();
            r
        })
        .collect();
    let gauge = "sluice_listener_connections{listener=\"PLAINTEXT\"}";
    let body = scrape_until(metrics_port, "five more connections", |s| {
        s.get(gauge) == Some(&(base + 5.0))
    });
    let s = parse_with_prometheus_client(&body);
    assert!(
        value(&s, "sluice_listener_connections_accepted_total", &plaintext).unwrap()
            >= accepted + 5.0
    );
    assert!(value(&s, "sluice_requests_total", &[("api", "ApiVersions")]).unwrap() >= 5.0);
    drop(more);
    let body = scrape_until(metrics_port, "the five closed", |s| {
        s.get(gauge) == Some(&base)
    });
    let s = parse_with_prometheus_client(&body);
    assert!(
        value(&s, "sluice_listener_connections_closed_total", &plaintext).unwrap() >= closed + 5.0
    );
    drop(raw);
    scrape_until(metrics_port, "this client's connection closed", |s| {
        s.get(gauge) == Some(&(base - 1.0))
    });
}
