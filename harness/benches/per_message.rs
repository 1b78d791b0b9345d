//! Per-message overhead of the load generator: build the value and key,
//! append to the partition's batch (closing it at 16 KiB, as a producer
//! does), and record the send delay and the latency. Target ≤ 500 ns/msg.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluice_harness::client::accumulator::PartitionQueue;
use sluice_harness::client::partitioner::partition_for_key;
use sluice_harness::measure::recorder::Recorder;
use sluice_harness::run::payload::Payloads;
use sluice_harness::workload::parse;
use sluice_protocol::record_batch::Compression;
use std::path::Path;

const BATCH: usize = 16_384;

fn per_message(c: &mut Criterion) {
    let text = "name: b\nmessageSize: 100\nkeyDistributor: KEY_ROUND_ROBIN\n";
    let w = parse(Path::new("b.yaml"), text, None).unwrap().points[0]
        .workload
        .clone();
    let mut payloads = Payloads::new(&w, 1).unwrap();
    let mut queues: Vec<PartitionQueue> = (0..16).map(|_| PartitionQueue::new()).collect();
    let mut rec = Recorder::new(0, 0, u64::MAX);
    let mut scratch = Vec::new();
    let mut t: u64 = 1_000_000;
    let mut g = c.benchmark_group("per_message");
    g.throughput(Throughput::Elements(1));
    g.bench_function("build_batch_record_100B", |b| {
        b.iter(|| {
            t += 1_000;
            let (key, value) = payloads.next(t as i64 / 1_000);
            let p = key.map_or(0, |k| partition_for_key(k, 16)) as usize;
            let q = &mut queues[p];
            let size = q.append(t, (t / 1_000_000) as i64, key, value, t);
            rec.on_send(t + 500, t);
            if size >= BATCH {
                q.close(Compression::None, &mut scratch).unwrap();
                // The ack: one latency per message of the batch.
                let b = q.ready.pop_front().unwrap();
                for &s in &b.starts {
                    rec.on_done(t + 2_000_000, s, 100);
                }
            }
            rec.tick(t);
        })
    });
    g.finish();
}

// Plots off: the harness builds plotters with runtime-registered fonts,
// which criterion's own plots do not register.
criterion_group! {
    name = benches;
    config = Criterion::default().without_plots();
    targets = per_message
}
criterion_main!(benches);
