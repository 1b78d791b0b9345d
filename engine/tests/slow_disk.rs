//! A disk whose syncs stall: one broker, two shards, its data directory on
//! the lazy FUSE file system with the syncs of one partition's files held.
//! Produces that wait for that sync wait; nothing else does. Partitions
//! on the other shard and on the same shard go on taking produces, and
//! the stalled partition goes on serving fetches of what it holds, all
//! while the held sync is still pending.

mod common;
mod lazyfs;

use common::{call, Broker, Raw};
use kafka_protocol::messages::{
    ApiKey, BrokerId, FetchRequest, FetchResponse, MetadataRequest, MetadataResponse,
    ProduceRequest, ProduceResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use std::path::Path;
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(120);

/// Longer than any test runs: a held sync is released by the test.
const HOLD: Duration = Duration::from_secs(600);

/// Produces and fetches each other partition must complete while the
/// stalled sync is pending.
const ROUNDS: usize = 20;

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

/// Produces one record to `topic`-`partition` (v9, acks=1): the
/// partition's error code, or `None` if no answer came.
fn try_produce(raw: &mut Raw, topic: &str, partition: i32, value: &str) -> Option<i16> {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    let mut batch = sluice_protocol::record_batch::BatchBuilder::new(1_000);
    batch.push(1_000, None, Some(value.as_bytes()), &[]);
    let req = ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic_name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(bytes::Bytes::from(batch.finish())))])]);
    let resp: ProduceResponse = common::try_call(raw, ApiKey::Produce, 9, &req)?;
    Some(resp.responses[0].partition_responses[0].error_code)
}

fn produce(raw: &mut Raw, topic: &str, partition: i32, value: &str) -> i16 {
    try_produce(raw, topic, partition, value).expect("Produce answer")
}

/// Fetches `topic`-`partition` from offset 0 without waiting: (error
/// code, high watermark, record bytes).
fn fetch(raw: &mut Raw, topic: &str, partition: i32) -> (i16, i64, usize) {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    let req = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(topic_name(topic))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20)])]);
    let resp: FetchResponse = call(raw, ApiKey::Fetch, 12, &req).expect("Fetch answer");
    assert_eq!(resp.error_code, 0);
    let p = &resp.responses[0].partitions[0];
    let bytes = p.records.as_ref().map_or(0, |r| r.len());
    (p.error_code, p.high_watermark, bytes)
}

/// The shard owning each partition of `topic` on a broker of `shards`
/// shards, from the topic id in a Metadata answer.
fn owners(raw: &mut Raw, topic: &str, shards: usize) -> Vec<usize> {
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    let req = MetadataRequest::default().with_topics(Some(vec![
        MetadataRequestTopic::default().with_name(Some(topic_name(topic)))
    ]));
    let resp: MetadataResponse = call(raw, ApiKey::Metadata, 12, &req).expect("Metadata answer");
    let t = &resp.topics[0];
    assert_eq!(t.error_code, 0, "metadata of {topic}");
    let mut owners: Vec<(i32, usize)> = t
        .partitions
        .iter()
        .map(|p| {
            let owner = sluice_engine::metadata::owner_shard(t.topic_id, p.partition_index, shards);
            (p.partition_index, owner)
        })
        .collect();
    owners.sort();
    owners.into_iter().map(|(_, o)| o).collect()
}

/// Waits until `f` holds, failing the test after [`DEADLINE`].
fn wait_for(what: &str, broker: &Broker, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < DEADLINE,
            "{what}: not after {DEADLINE:?}; broker log:\n{}",
            broker.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Lets held syncs go when the test ends, passed or failed, so that the
/// broker and the file system can stop.
struct LiftOnDrop<'a>(&'a lazyfs::LazyMount);

impl Drop for LiftOnDrop<'_> {
    fn drop(&mut self) {
        self.0.stall_syncs_under(None, HOLD);
    }
}

#[test]
fn a_stalled_sync_delays_only_the_produces_that_wait_for_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (backing, mnt) = (tmp.path().join("disk"), tmp.path().join("mnt"));
    std::fs::create_dir(&backing).unwrap();
    std::fs::create_dir(&mnt).unwrap();
    let disk = lazyfs::LazyMount::mount(&backing, &mnt);
    // flush.messages=1 on `slow`: a produce is answered once its records
    // are synced, so a produce to the stalled partition waits for the
    // held sync. `fast` syncs as the default policy does, on a roll: a
    // sync of its own on the stalled partition's shard may wait for a
    // worker of the shard's io_uring while the held syncs occupy them
    // (see docs/ARCHITECTURE.md, "A stalled sync").
    let broker = Broker::start_at(Some(mnt.join("data")), 2, &[]);
    common::create_topic_with(&broker, "slow", 2, &[("flush.messages", "1")]);
    common::create_topic(&broker, "fast", 2);
    let mut raw = Raw::connect(broker.addr());
    let slow_owners = owners(&mut raw, "slow", 2);
    let fast_owners = owners(&mut raw, "fast", 2);
    // Two partitions of a topic land on different shards (round-robin).
    let stalled = 0;
    let shard = slow_owners[stalled as usize];
    let same = fast_owners.iter().position(|&o| o == shard).unwrap() as i32;
    let other = fast_owners.iter().position(|&o| o != shard).unwrap() as i32;
    for p in 0..2 {
        assert_eq!(produce(&mut raw, "slow", p, "before"), 0);
        assert_eq!(produce(&mut raw, "fast", p, "before"), 0);
    }
    let (_, hw_before, bytes_before) = fetch(&mut raw, "slow", stalled);
    assert_eq!(hw_before, 1);

    disk.stall_syncs_under(Some(Path::new(&format!("data/slow-{stalled}"))), HOLD);
    let _lift = LiftOnDrop(&disk);
    let addr = broker.addr();
    let waiting = std::thread::spawn(move || {
        let mut raw = Raw::connect(addr);
        produce(&mut raw, "slow", stalled, "held")
    });
    wait_for("a sync of the stalled partition held", &broker, || {
        disk.stalled_syncs().0 > 0
    });
    // A second produce to the stalled partition arrives while its sync is
    // held: it waits for that sync and then a sync of its own. Before it
    // waited, its write blocked in the kernel, on the shard's thread,
    // behind the held sync (the file system holds the file's inode lock
    // through a sync), and the produces and fetches below went
    // unanswered. The pause gives it time to arrive; the test passes
    // whether or not it has.
    let waiting_too = std::thread::spawn(move || {
        let mut raw = Raw::connect(addr);
        produce(&mut raw, "slow", stalled, "held too")
    });
    std::thread::sleep(Duration::from_millis(500));

    let mut raw_other = Raw::connect(broker.addr());
    let mut raw_same = Raw::connect(broker.addr());
    let mut raw_fetch = Raw::connect(broker.addr());
    for round in 0..ROUNDS {
        let v = format!("during-{round}");
        let answered = |code: Option<i16>, what: &str| {
            code.unwrap_or_else(|| panic!("{what}: no answer; broker log:\n{}", broker.log()))
        };
        let code = answered(
            try_produce(&mut raw_other, "fast", other, &v),
            "other shard",
        );
        assert_eq!(code, 0, "other shard");
        let code = answered(try_produce(&mut raw_same, "fast", same, &v), "same shard");
        assert_eq!(code, 0, "same shard");
        let (code, hw, bytes) = fetch(&mut raw_fetch, "slow", stalled);
        assert_eq!(code, 0, "fetch from the stalled partition");
        assert!(
            hw >= hw_before && bytes >= bytes_before,
            "hw {hw}, {bytes} bytes"
        );
        assert!(
            disk.stalled_syncs().0 > 0 && !waiting.is_finished() && !waiting_too.is_finished(),
            "round {round}: the stalled produce was answered before its sync"
        );
    }

    disk.stall_syncs_under(None, HOLD);
    assert_eq!(waiting.join().unwrap(), 0, "the held produce, once synced");
    assert_eq!(waiting_too.join().unwrap(), 0, "the second held produce");
    let mut raw = Raw::connect(broker.addr());
    let (_, hw, _) = fetch(&mut raw, "slow", stalled);
    assert_eq!(hw, 3, "the held records are in the log");
    for p in [same, other] {
        let (_, hw, _) = fetch(&mut raw, "fast", p);
        assert_eq!(hw, 1 + ROUNDS as i64, "fast-{p}");
    }
}
