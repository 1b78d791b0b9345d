//! Batch validation throughput: CRC-32C plus header checks over a 64 KiB
//! batch, the work every produced byte pays before it reaches disk.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluice_protocol::record_batch::{validate_record_set, BatchBuilder};

fn batch_of(bytes: usize) -> Vec<u8> {
    let value = vec![0xabu8; 1000];
    let mut b = BatchBuilder::new(0);
    while b.size_bytes() < bytes - 1100 {
        b.push(0, None, Some(&value), &[]);
    }
    b.finish()
}

fn bench(c: &mut Criterion) {
    let batch = batch_of(64 * 1024);
    let mut group = c.benchmark_group("validate");
    group.throughput(Throughput::Bytes(batch.len() as u64));
    group.bench_function("record_set_64KiB", |b| {
        b.iter(|| validate_record_set(std::hint::black_box(&batch), 1 << 20).unwrap())
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().without_plots();
    targets = bench
}
criterion_main!(benches);
