//! Storage hot paths: appending batches to a segment (page cache) and
//! mapping an offset to a file position.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sluice_engine::storage::segment::Segment;
use sluice_protocol::record_batch::BatchBuilder;
use sluice_protocol::{LeaderEpoch, Offset};

fn batch_of(bytes: usize) -> Vec<u8> {
    let value = vec![0x5au8; 1000];
    let mut b = BatchBuilder::new(0);
    while b.size_bytes() + 1100 < bytes {
        b.push(0, None, Some(&value), &[]);
    }
    b.finish()
}

fn append(c: &mut Criterion) {
    let batch = batch_of(64 * 1024);
    let records = sluice_protocol::record_batch::BatchHeader::parse(&batch)
        .unwrap()
        .records_count;
    let mut group = c.benchmark_group("append");
    group.throughput(Throughput::Bytes(batch.len() as u64));
    group.bench_function("segment_64KiB_batch", |b| {
        let dir = tempfile::tempdir().unwrap();
        let mut base = 0i64;
        let mut segment = Segment::create(dir.path(), Offset(0)).unwrap();
        b.iter(|| {
            // Start a new segment before 1 GiB so the file stays bounded.
            if segment.size() > 1 << 30 {
                base += 1 << 40;
                segment = Segment::create(dir.path(), Offset(base)).unwrap();
            }
            let next = segment.next_offset();
            segment
                .append(&batch, next, LeaderEpoch(0), 4096, 0, None)
                .unwrap();
        });
    });
    group.finish();
    let _ = records;
}

fn lookup(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut segment = Segment::create(dir.path(), Offset(0)).unwrap();
    let batch = batch_of(16 * 1024);
    let mut next = Offset(0);
    while segment.size() < 256 << 20 {
        next = segment
            .append(&batch, next, LeaderEpoch(0), 4096, 0, None)
            .unwrap();
    }
    let last = next.0;
    let mut group = c.benchmark_group("lookup");
    for (name, sealed) in [("active", false), ("sealed", true)] {
        if sealed {
            segment.seal().unwrap();
        }
        let mut x: u64 = 88172645463325252;
        group.bench_function(
            BenchmarkId::new("offset_to_position_256MiB_segment", name),
            |b| {
                b.iter(|| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let target = Offset((x % last as u64) as i64);
                    segment.find_batch(target).unwrap().unwrap()
                })
            },
        );
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().without_plots();
    targets = append, lookup
}
criterion_main!(benches);
