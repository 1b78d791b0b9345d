//! The log cleaner's CPU work over stored batches, without I/O: a pass's
//! two scans of a dirty section, first building the offset map (each
//! batch decompressed, each record's key decoded and hashed), then
//! filtering the same batches against it (each key's latest record kept,
//! changed batches rebuilt and compressed again with their codec).
//! Throughput is the section's bytes stored uncompressed per second, for
//! both scans together, so the zstd figure is for the same records
//! (docs/ARCHITECTURE.md, "Log compaction"; the target is 300 MB/s per
//! core uncompressed).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sluice_engine::cleaner::filter::{filter_batch, for_each_record, records_section, Filtered};
use sluice_engine::cleaner::offset_map::OffsetMap;
use sluice_protocol::compression;
use sluice_protocol::record_batch::{set_base_offset, BatchBuilder, BatchHeader, Compression};
use sluice_protocol::Offset;

/// Distinct keys in the section: each is written about 16 times.
const KEYS: usize = 10_000;
const RECORDS_PER_BATCH: usize = 100;
const VALUE_BYTES: usize = 100;
const BATCHES: usize = KEYS * 16 / RECORDS_PER_BATCH;

/// The section's batches as stored: keys spread over the batches (a
/// stride through the key space), offsets consecutive.
fn section(codec: Compression) -> Vec<Vec<u8>> {
    let value = vec![0x5au8; VALUE_BYTES];
    let mut n = 0usize;
    (0..BATCHES)
        .map(|i| {
            let mut b = BatchBuilder::new(1_000);
            for _ in 0..RECORDS_PER_BATCH {
                let key = format!("key-{:08}", n * 7_919 % KEYS);
                b.push(1_000, Some(key.as_bytes()), Some(&value), &[]);
                n += 1;
            }
            let mut bytes = match codec {
                Compression::None => b.finish(),
                codec => {
                    let mut payload = Vec::new();
                    compression::compress(codec, b.records(), &mut payload).unwrap();
                    b.finish_with(codec, &payload)
                }
            };
            set_base_offset(&mut bytes, Offset((i * RECORDS_PER_BATCH) as i64));
            bytes
        })
        .collect()
}

/// Both scans of a pass over `batches`; the bytes the cleaned copy holds.
fn clean(batches: &[Vec<u8>], map: &mut OffsetMap) -> usize {
    map.clear();
    for batch in batches {
        let h = BatchHeader::parse(batch).unwrap();
        let records = records_section(&h, batch).unwrap();
        for_each_record(&h, &records, |view, _, _| {
            assert!(
                map.put(view.key.unwrap(), view.offset),
                "the map holds every key"
            );
        })
        .unwrap();
    }
    let mut kept = 0;
    for batch in batches {
        let h = BatchHeader::parse(batch).unwrap();
        // No record is a tombstone, so no batch gets a delete horizon.
        let filtered = filter_batch(&h, batch, false, i64::MAX, |view| {
            map.get(view.key.unwrap()) == Some(view.offset)
        })
        .unwrap();
        kept += match filtered {
            Filtered::Unchanged => batch.len(),
            Filtered::Rebuilt(b) => b.len(),
            Filtered::Dropped => 0,
        };
    }
    kept
}

fn cleaning(c: &mut Criterion) {
    let mut group = c.benchmark_group("cleaner");
    group.sample_size(10);
    let bytes: usize = section(Compression::None).iter().map(Vec::len).sum();
    for (name, codec) in [
        ("uncompressed", Compression::None),
        ("zstd", Compression::Zstd),
    ] {
        let batches = section(codec);
        let stored: usize = batches.iter().map(Vec::len).sum();
        let mut map = OffsetMap::with_memory(64 << 20);
        assert!(
            clean(&batches, &mut map) < stored,
            "the pass removes records"
        );
        group.throughput(Throughput::Bytes(bytes as u64));
        group.bench_with_input(BenchmarkId::new("pass", name), &batches, |b, batches| {
            b.iter(|| clean(batches, &mut map))
        });
    }
    group.finish();
}

criterion_group!(benches, cleaning);
criterion_main!(benches);
