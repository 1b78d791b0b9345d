//! What the load generator's own work costs, without a broker or sockets:
//!
//! - `producer/append_*`: per message, what the generator does between
//!   the payload pool and the socket: take the next value and stamp it,
//!   partition, append to the partition's batch, record the send delay;
//!   every full batch is closed (header, CRC) and, as its acknowledgement
//!   would, records one publish latency per message.
//! - `producer/close_1MiB`: per batch, closing a full 1 MiB batch.
//! - `consumer/walk_*`: per message, what the consumer does with a fetched
//!   record set: check each batch's CRC, walk its records and record one
//!   end-to-end latency per message.
//!
//! The end-to-end figures (with the kernel's socket copies and a broker on
//! the same cores) are in docs/HARNESS.md, "What the load generator costs".

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use sluice_harness::client::accumulator::PartitionQueue;
use sluice_harness::client::batch::{BatchWriter, ProducerFields};
use sluice_harness::client::consumer::consume_records;
use sluice_harness::client::partitioner::partition_for_key;
use sluice_harness::measure::clock::Clock;
use sluice_harness::measure::recorder::Recorder;
use sluice_harness::run::payload::Payloads;
use sluice_harness::workload::parse;
use sluice_protocol::record_batch::Compression;
use std::path::Path;
use std::time::Duration;

const PARTITIONS: u32 = 16;

fn payloads(size: usize, keyed: bool) -> Payloads {
    let keys = if keyed { "KEY_ROUND_ROBIN" } else { "NO_KEY" };
    let text = format!(
        "name: b\nmessageSize: {size}\nkeyDistributor: {keys}\nuseRandomizedPayloads: true\n\
         randomBytesRatio: 0.5\nrandomizedPayloadPoolSize: 1000\n"
    );
    let w = parse(Path::new("b.yaml"), &text, None).unwrap().points[0]
        .workload
        .clone();
    Payloads::new(&w, 1).unwrap()
}

/// One message through the producer's per-message path; `batch` is
/// `batch.size`.
fn append(c: &mut Criterion, name: &str, size: usize, keyed: bool, batch: usize) {
    let mut payloads = payloads(size, keyed);
    let mut queues: Vec<PartitionQueue> = (0..PARTITIONS).map(|_| PartitionQueue::new()).collect();
    let mut rec = Recorder::new(0, 0, u64::MAX);
    let mut scratch = Vec::new();
    let mut t: u64 = 1_000_000;
    let mut g = c.benchmark_group("producer");
    g.throughput(Throughput::Elements(1));
    g.bench_function(name, |b| {
        b.iter(|| {
            t += 1_000;
            let (key, value) = payloads.next(t as i64 / 1_000);
            let p = key.map_or(0, |k| partition_for_key(k, PARTITIONS)) as usize;
            let q = &mut queues[p];
            let size = q.append_parts(t, (t / 1_000_000) as i64, key, value, t, batch);
            rec.on_send(t + 500, t);
            if size >= batch {
                q.close(Compression::None, &mut scratch).unwrap();
                // The ack: one latency per message of the batch.
                let b = q.ready.pop_front().unwrap();
                let per_message = b.payload_bytes / b.starts.len() as u64;
                for &s in &b.starts {
                    rec.on_done(t + 2_000_000, s, per_message);
                }
            }
            rec.tick(t);
        })
    });
    g.finish();
}

fn producer(c: &mut Criterion) {
    append(c, "append_100B_keyed_16KiB", 100, true, 16_384);
    append(c, "append_100B_1MiB", 100, false, 1 << 20);
    append(c, "append_1KiB_1MiB", 1024, false, 1 << 20);
    let mut payloads = payloads(1024, false);
    let mut g = c.benchmark_group("producer");
    g.throughput(Throughput::Bytes(1 << 20));
    g.bench_function("close_1MiB", |b| {
        b.iter_batched(
            || {
                let mut w = BatchWriter::new(0, 1 << 20);
                while w.size_bytes() < 1 << 20 {
                    w.push(1, None, payloads.next(1_000).1);
                }
                w
            },
            |w| {
                w.finish(Compression::None, ProducerFields::NONE, &mut Vec::new())
                    .unwrap()
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

/// A fetched record set of `batches` batches of `per_batch` messages.
fn record_set(size: usize, batches: usize, per_batch: usize, clock: &Clock) -> Vec<u8> {
    let mut payloads = payloads(size, false);
    let mut set = Vec::new();
    let mut offset = 0i64;
    for _ in 0..batches {
        let mut q = PartitionQueue::new();
        for _ in 0..per_batch {
            let (key, value) = payloads.next(clock.unix_us(1_000_000));
            q.append_parts(0, 1, key, value, 0, 1 << 20);
        }
        q.close(Compression::None, &mut Vec::new()).unwrap();
        let mut wire = q.ready.pop_front().unwrap().wire.to_vec();
        wire[..8].copy_from_slice(&offset.to_be_bytes());
        offset += per_batch as i64;
        set.extend_from_slice(&wire);
    }
    set
}

fn consumer(c: &mut Criterion) {
    let clock = Clock::start();
    let mut g = c.benchmark_group("consumer");
    for (name, size, per_batch) in [("walk_100B", 100, 8_000), ("walk_1KiB", 1024, 1_000)] {
        let set = record_set(size, 16, per_batch, &clock);
        let mut rec = Recorder::new(0, 0, u64::MAX);
        g.throughput(Throughput::Elements((16 * per_batch) as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                let (n, _) = consume_records(
                    &set,
                    0,
                    &mut Default::default(),
                    &clock,
                    &mut || 3_000_000,
                    &mut rec,
                )
                .unwrap();
                assert_eq!(n, (16 * per_batch) as u64);
                rec.tick(3_000_000);
            })
        });
    }
    g.finish();
}

// Plots off: the harness builds plotters with runtime-registered fonts,
// which criterion's own plots do not register. Short runs: the machines
// this runs on are shared.
criterion_group! {
    name = benches;
    config = Criterion::default()
        .without_plots()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = producer, consumer
}
criterion_main!(benches);
