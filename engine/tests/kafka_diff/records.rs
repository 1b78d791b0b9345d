//! Produce and fetch edge cases: unknown topics and partitions, records
//! above `max.message.bytes`, fetches out of range, ListOffsets by
//! timestamp (including -1 latest, -2 earliest, -3 max timestamp and a
//! time between records), DeleteRecords beyond the high watermark.
//!
//! Records carry fixed timestamps so both brokers store the same bytes;
//! the topics have `retention.ms=-1` so those old times are never expired.

use crate::admin::create_ok;
use crate::compare::Side;
use crate::topic_name;
use bytes::Bytes;
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use sluice_protocol::record_batch::BatchBuilder;
use uuid::Uuid;

/// A topic as requests name it: by name, or by id from the versions that
/// use ids (Produce v13+, Fetch v13+).
#[derive(Clone)]
pub struct Topic {
    pub name: String,
    pub id: Uuid,
}

/// A topic neither broker has.
fn unknown() -> Topic {
    Topic {
        name: "diff-no-such-topic".into(),
        id: Uuid::from_u128(0x5151_0000_0000_0000_0000_0000_0000_0002),
    }
}

pub fn create_topic(
    side: &mut Side,
    name: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> Topic {
    let mut all = vec![("retention.ms", "-1")];
    all.extend_from_slice(configs);
    let resp = create_ok(side, name, partitions, &all);
    Topic {
        name: name.into(),
        id: resp.topics[0].topic_id,
    }
}

fn now_ms() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.expect("a clock after 1970").as_millis() as i64
}

/// One uncompressed batch of `values` with the given timestamps.
pub fn batch(records: &[(i64, &[u8])]) -> Vec<u8> {
    let mut b = BatchBuilder::new(records[0].0);
    for (ts, value) in records {
        b.push(*ts, Some(b"k"), Some(value), &[]);
    }
    b.finish()
}

pub fn produce(
    side: &mut Side,
    step: &str,
    topic: &Topic,
    partition: i32,
    acks: i16,
    records: Vec<u8>,
) -> ProduceResponse {
    let req = ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic_name(&topic.name))
            .with_topic_id(topic.id)
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(Bytes::from(records)))])]);
    side.step(step, ApiKey::Produce, &req)
}

fn produce_ok(side: &mut Side, step: &str, topic: &Topic, records: Vec<u8>) {
    let resp = produce(side, step, topic, 0, -1, records);
    let code = resp.responses[0].partition_responses[0].error_code;
    assert_eq!(code, 0, "{}: {step}", side.name);
}

pub fn fetch(
    side: &mut Side,
    step: &str,
    topic: &Topic,
    partition: i32,
    offset: i64,
    max_bytes: i32,
) -> FetchResponse {
    let req = fetch_request(side, topic, partition, offset, max_bytes);
    side.step(step, ApiKey::Fetch, &req)
}

/// A sessionless Fetch that answers at once: `max_wait_ms` 0.
fn fetch_request(
    side: &Side,
    topic: &Topic,
    partition: i32,
    offset: i64,
    max_bytes: i32,
) -> FetchRequest {
    let version = side.v(ApiKey::Fetch);
    let mut t = FetchTopic::default().with_partitions(vec![FetchPartition::default()
        .with_partition(partition)
        .with_fetch_offset(offset)
        .with_partition_max_bytes(max_bytes)]);
    if version >= 13 {
        t = t.with_topic_id(topic.id);
    } else {
        t = t.with_topic(topic_name(&topic.name));
    }
    FetchRequest::default()
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(max_bytes)
        .with_topics(vec![t])
}

pub fn list_offsets(
    side: &mut Side,
    step: &str,
    topic: &Topic,
    queries: &[(i32, i64)],
) -> ListOffsetsResponse {
    let partitions = queries
        .iter()
        .map(|(p, ts)| {
            ListOffsetsPartition::default()
                .with_partition_index(*p)
                .with_timestamp(*ts)
        })
        .collect();
    let req = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_timeout_ms(30_000)
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(topic_name(&topic.name))
            .with_partitions(partitions)]);
    side.step(step, ApiKey::ListOffsets, &req)
}

fn delete_records(side: &mut Side, step: &str, topic: &Topic, partition: i32, offset: i64) {
    let req = DeleteRecordsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(vec![DeleteRecordsTopic::default()
            .with_name(topic_name(&topic.name))
            .with_partitions(vec![DeleteRecordsPartition::default()
                .with_partition_index(partition)
                .with_offset(offset)])]);
    let _: DeleteRecordsResponse = side.step(step, ApiKey::DeleteRecords, &req);
}

/// Five records in two batches: times 1000, 2000, 3000, then 5000, 4000
/// (the largest time is not the last record's).
fn five_records(side: &mut Side, topic: &Topic) {
    produce_ok(
        side,
        "first batch",
        topic,
        batch(&[(1000, b"a"), (2000, b"b"), (3000, b"c")]),
    );
    produce_ok(
        side,
        "second batch",
        topic,
        batch(&[(5000, b"d"), (4000, b"e")]),
    );
}

pub fn produce_cases(side: &mut Side) {
    let t = create_topic(side, "diff-produce", 1, &[("max.message.bytes", "2000")]);
    produce(
        side,
        "unknown topic",
        &unknown(),
        0,
        -1,
        batch(&[(1000, b"a")]),
    );
    produce(side, "unknown partition", &t, 7, -1, batch(&[(1000, b"a")]));
    produce(
        side,
        "negative partition",
        &t,
        -1,
        -1,
        batch(&[(1000, b"a")]),
    );
    let big = vec![b'x'; 3000];
    produce(
        side,
        "above max.message.bytes",
        &t,
        0,
        -1,
        batch(&[(1000, &big)]),
    );
    produce(side, "acks 2", &t, 0, 2, batch(&[(1000, b"a")]));
    // Kafka 4 refuses times more than message.timestamp.after.max.ms (one
    // hour) ahead of its clock.
    let ahead = now_ms() + 2 * 24 * 3600 * 1000;
    produce(
        side,
        "a time two days ahead",
        &t,
        0,
        -1,
        batch(&[(1000, b"a"), (ahead, b"b")]),
    );
    let mut corrupt = batch(&[(1000, b"a")]);
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    produce(side, "bad CRC", &t, 0, -1, corrupt);
    produce(
        side,
        "acks all",
        &t,
        0,
        -1,
        batch(&[(1000, b"a"), (2000, b"b")]),
    );
    produce(side, "acks 1", &t, 0, 1, batch(&[(3000, b"c")]));
    list_offsets(side, "end after produce", &t, &[(0, -1)]);
}

pub fn fetch_cases(side: &mut Side) {
    let t = create_topic(side, "diff-fetch", 1, &[]);
    five_records(side, &t);
    fetch(side, "from 0", &t, 0, 0, 1 << 20);
    fetch(side, "from the middle of a batch", &t, 0, 4, 1 << 20);
    fetch(side, "at the high watermark", &t, 0, 5, 1 << 20);
    fetch(side, "beyond the high watermark", &t, 0, 6, 1 << 20);
    fetch(side, "negative offset", &t, 0, -1, 1 << 20);
    fetch(side, "max_bytes below one batch", &t, 0, 0, 10);
    let committed = fetch_request(side, &t, 0, 0, 1 << 20).with_isolation_level(1);
    let _: FetchResponse = side.step("read committed", ApiKey::Fetch, &committed);
    fetch(side, "unknown partition", &t, 3, 0, 1 << 20);
    fetch(side, "unknown topic", &unknown(), 0, 0, 1 << 20);
}

pub fn list_offsets_cases(side: &mut Side) {
    let t = create_topic(side, "diff-list-offsets", 1, &[]);
    list_offsets(side, "empty, latest", &t, &[(0, -1)]);
    list_offsets(side, "empty, earliest", &t, &[(0, -2)]);
    list_offsets(side, "empty, max timestamp", &t, &[(0, -3)]);
    list_offsets(side, "empty, a time", &t, &[(0, 1000)]);
    five_records(side, &t);
    list_offsets(side, "latest", &t, &[(0, -1)]);
    list_offsets(side, "earliest", &t, &[(0, -2)]);
    list_offsets(side, "max timestamp", &t, &[(0, -3)]);
    list_offsets(side, "between records", &t, &[(0, 1500)]);
    list_offsets(side, "between batches", &t, &[(0, 3500)]);
    list_offsets(side, "in the second batch, out of order", &t, &[(0, 4500)]);
    list_offsets(side, "exact", &t, &[(0, 2000)]);
    list_offsets(side, "before every record", &t, &[(0, 0)]);
    list_offsets(side, "after every record", &t, &[(0, 6000)]);
    // Earliest local (-4, v8+) and latest tiered (-5, v9+): without
    // tiered storage, the log start and -1.
    if side.v(ApiKey::ListOffsets) >= 8 {
        list_offsets(side, "earliest local", &t, &[(0, -4)]);
    }
    if side.v(ApiKey::ListOffsets) >= 9 {
        list_offsets(side, "latest tiered", &t, &[(0, -5)]);
    }
    // Earliest pending upload (-6, v11+, KIP-1023): none without tiered
    // storage.
    if side.v(ApiKey::ListOffsets) >= 11 {
        list_offsets(side, "earliest pending upload", &t, &[(0, -6)]);
    }
    list_offsets(side, "the same partition twice", &t, &[(0, -1), (0, -2)]);
    list_offsets(side, "unknown partition", &t, &[(5, -1)]);
    list_offsets(side, "negative partition", &t, &[(-1, -1)]);
    list_offsets(side, "unknown topic", &unknown(), &[(0, -1)]);
}

pub fn delete_records_cases(side: &mut Side) {
    let t = create_topic(side, "diff-delete-records", 1, &[]);
    five_records(side, &t);
    delete_records(side, "to 2", &t, 0, 2);
    list_offsets(side, "earliest after delete", &t, &[(0, -2)]);
    fetch(side, "below the log start", &t, 0, 1, 1 << 20);
    delete_records(side, "below the log start", &t, 0, 1);
    delete_records(side, "beyond the high watermark", &t, 0, 6);
    delete_records(side, "-1 (the high watermark)", &t, 0, -1);
    delete_records(side, "-2", &t, 0, -2);
    list_offsets(side, "earliest after delete to the end", &t, &[(0, -2)]);
    list_offsets(side, "latest after delete to the end", &t, &[(0, -1)]);
    delete_records(side, "unknown partition", &t, 4, 0);
    delete_records(side, "unknown topic", &unknown(), 0, 0);
    produce_ok(side, "after delete to the end", &t, batch(&[(6000, b"f")]));
    fetch(side, "after delete to the end", &t, 0, 5, 1 << 20);
}

/// InitProducerId, asked again while Kafka's producer id manager has no
/// block of ids from its controller yet (COORDINATOR_LOAD_IN_PROGRESS
/// for a moment after start). Generous, for loaded machines.
fn init_producer_id(side: &mut Side, req: &InitProducerIdRequest) -> InitProducerIdResponse {
    const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
    let deadline = std::time::Duration::from_secs(120);
    let start = std::time::Instant::now();
    loop {
        let resp: InitProducerIdResponse = side.ask(ApiKey::InitProducerId, req);
        if resp.error_code != COORDINATOR_LOAD_IN_PROGRESS || start.elapsed() > deadline {
            side.record("init producer id", &resp);
            return resp;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// One idempotent batch of `n` records from `producer`.
fn idempotent_batch(producer: (i64, i16), sequence: i32, n: usize) -> Vec<u8> {
    let mut b = BatchBuilder::new(1000).producer(producer.0, producer.1, sequence);
    for i in 0..n {
        b.push(1000 + i as i64, Some(b"k"), Some(b"v"), &[]);
    }
    b.finish()
}

pub fn idempotent_cases(side: &mut Side) {
    let t = create_topic(side, "diff-idempotent", 1, &[]);
    let req = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(60_000);
    let resp = init_producer_id(side, &req);
    let (id, epoch) = (resp.producer_id.0, resp.producer_epoch);
    produce(
        side,
        "sequence 0",
        &t,
        0,
        -1,
        idempotent_batch((id, epoch), 0, 3),
    );
    produce(
        side,
        "the same batch again",
        &t,
        0,
        -1,
        idempotent_batch((id, epoch), 0, 3),
    );
    produce(
        side,
        "a gap in the sequence",
        &t,
        0,
        -1,
        idempotent_batch((id, epoch), 7, 1),
    );
    produce(
        side,
        "an older sequence",
        &t,
        0,
        -1,
        idempotent_batch((id, epoch), 1, 1),
    );
    produce(
        side,
        "the next sequence",
        &t,
        0,
        -1,
        idempotent_batch((id, epoch), 3, 2),
    );
    produce(
        side,
        "an older epoch",
        &t,
        0,
        -1,
        idempotent_batch((id, epoch - 1), 5, 1),
    );
    produce(
        side,
        "a new epoch from 0",
        &t,
        0,
        -1,
        idempotent_batch((id, epoch + 1), 0, 1),
    );
    produce(
        side,
        "a new epoch not from 0",
        &t,
        0,
        -1,
        idempotent_batch((id, epoch + 2), 4, 1),
    );
    produce(
        side,
        "an unknown producer from 0",
        &t,
        0,
        -1,
        idempotent_batch((id + 1000, 0), 0, 1),
    );
    produce(
        side,
        "an unknown producer not from 0",
        &t,
        0,
        -1,
        idempotent_batch((id + 2000, 0), 9, 1),
    );
    list_offsets(side, "end", &t, &[(0, -1)]);
    if side.v(ApiKey::InitProducerId) >= 3 {
        let bumped = InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(epoch);
        let _: InitProducerIdResponse =
            side.step("bump the epoch", ApiKey::InitProducerId, &bumped);
    }
}

fn end_for_epoch(
    side: &mut Side,
    step: &str,
    topic: &Topic,
    partition: i32,
    current: i32,
    epoch: i32,
) {
    use kafka_protocol::messages::offset_for_leader_epoch_request::{
        OffsetForLeaderPartition, OffsetForLeaderTopic,
    };
    let req = OffsetForLeaderEpochRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![OffsetForLeaderTopic::default()
            .with_topic(topic_name(&topic.name))
            .with_partitions(vec![OffsetForLeaderPartition::default()
                .with_partition(partition)
                .with_current_leader_epoch(current)
                .with_leader_epoch(epoch)])]);
    let _: OffsetForLeaderEpochResponse = side.step(step, ApiKey::OffsetForLeaderEpoch, &req);
}

fn elect(side: &mut Side, step: &str, election_type: i8, partitions: Option<(&Topic, &[i32])>) {
    use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
    let req = ElectLeadersRequest::default()
        .with_election_type(election_type)
        .with_timeout_ms(30_000)
        .with_topic_partitions(partitions.map(|(t, ps)| {
            vec![TopicPartitions::default()
                .with_topic(topic_name(&t.name))
                .with_partitions(ps.to_vec())]
        }));
    let _: ElectLeadersResponse = side.step(step, ApiKey::ElectLeaders, &req);
}

/// OffsetForLeaderEpoch as a consumer asks it after a leader change, and
/// ElectLeaders where no election is needed (one broker).
pub fn leader_epoch_cases(side: &mut Side) {
    let t = create_topic(side, "diff-epochs", 2, &[]);
    five_records(side, &t);
    end_for_epoch(side, "epoch 0", &t, 0, -1, 0);
    end_for_epoch(side, "epoch 0, current epoch 0", &t, 0, 0, 0);
    end_for_epoch(side, "a later epoch", &t, 0, -1, 3);
    end_for_epoch(side, "an empty partition", &t, 1, -1, 0);
    end_for_epoch(side, "a current epoch ahead of the leader's", &t, 0, 5, 0);
    end_for_epoch(side, "unknown partition", &t, 7, -1, 0);
    end_for_epoch(side, "unknown topic", &unknown(), 0, -1, 0);
    let preferred = 0;
    let unclean = 1;
    if side.v(ApiKey::ElectLeaders) >= 1 {
        elect(
            side,
            "preferred, already leader",
            preferred,
            Some((&t, &[0, 1])),
        );
        elect(
            side,
            "unclean, a leader is there",
            unclean,
            Some((&t, &[0])),
        );
        elect(
            side,
            "preferred, unknown partition",
            preferred,
            Some((&t, &[9])),
        );
        elect(
            side,
            "preferred, unknown topic",
            preferred,
            Some((&unknown(), &[0])),
        );
    }
}

/// DescribeCluster as clients and `kafka-cluster.sh` ask it, with and
/// without authorized operations, and for broker and controller
/// endpoints (v1's endpoint type; Sluice, like Kafka in combined mode
/// reached through a broker listener, answers what it can).
pub fn describe_cluster_cases(side: &mut Side) {
    let version = side.v(ApiKey::DescribeCluster);
    let req = DescribeClusterRequest::default();
    let mut resp: DescribeClusterResponse = side.ask(ApiKey::DescribeCluster, &req);
    assert_eq!(resp.brokers.len(), 1, "{}: one broker", side.name);
    resp.brokers.clear();
    side.record("brokers", &resp);
    let req = DescribeClusterRequest::default().with_include_cluster_authorized_operations(true);
    let mut resp: DescribeClusterResponse = side.ask(ApiKey::DescribeCluster, &req);
    resp.brokers.clear();
    side.record("with authorized operations", &resp);
    if version >= 1 {
        let req = DescribeClusterRequest::default().with_endpoint_type(3);
        let resp: DescribeClusterResponse = side.ask(ApiKey::DescribeCluster, &req);
        side.record("an endpoint type that does not exist", &resp);
    }
}

/// DescribeLogDirs for a topic with known contents: each partition's size
/// is the bytes of the batches appended, on either broker, since both
/// store batches as they came. The directory's path and the disk's free
/// and total bytes are each machine's own.
pub fn describe_log_dirs_cases(side: &mut Side) {
    use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
    let t = create_topic(side, "diff-logdirs", 2, &[]);
    crate::admin::wait_leaders(side, &t.name, 2);
    let now = now_ms();
    produce_ok(side, "a batch", &t, batch(&[(now, b"one"), (now, b"two")]));
    produce_ok(side, "another batch", &t, batch(&[(now, b"three")]));
    let ask = |topics: Option<Vec<DescribableLogDirTopic>>| {
        DescribeLogDirsRequest::default().with_topics(topics)
    };
    let one_topic = |name: &str, partitions: Vec<i32>| {
        Some(vec![DescribableLogDirTopic::default()
            .with_topic(topic_name(name))
            .with_partitions(partitions)])
    };
    let mut resp: DescribeLogDirsResponse = side.ask(
        ApiKey::DescribeLogDirs,
        &ask(one_topic(&t.name, vec![0, 1, 7])),
    );
    for r in &mut resp.results {
        r.log_dir = crate::text("_");
        r.total_bytes = 0;
        r.usable_bytes = 0;
    }
    side.record("a topic's partitions, one that does not exist", &resp);
    let mut resp: DescribeLogDirsResponse = side.ask(
        ApiKey::DescribeLogDirs,
        &ask(one_topic("diff-logdirs-unknown", vec![0])),
    );
    for r in &mut resp.results {
        r.log_dir = crate::text("_");
        r.total_bytes = 0;
        r.usable_bytes = 0;
    }
    side.record("a topic that does not exist", &resp);
    if side.versions.both_speak(ApiKey::DescribeLogDirs, 5) {
        use sluice_protocol::describe_log_dirs as v5;
        let req = v5::DescribeLogDirsRequest {
            topics: Some(vec![(t.name.to_string(), vec![0, 1, 7])]),
        };
        let body = side.ask_bytes(ApiKey::DescribeLogDirs, 5, &req.encode());
        let mut resp =
            v5::DescribeLogDirsResponse::decode(&body).expect("a v5 DescribeLogDirs answer");
        for r in &mut resp.results {
            r.log_dir = "_".into();
            r.total_bytes = 0;
            r.usable_bytes = 0;
        }
        side.record(
            "v5: a topic's partitions, and whether the directory is cordoned",
            &resp,
        );
    }
}
