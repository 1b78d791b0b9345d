//! Fuzzing on the stable toolchain, time-bounded, run by CI: the request
//! header, every request decoder at every version the broker speaks,
//! record batches (validation, records, every codec), and a partition's
//! recovery from damaged segment and index files.
//!
//! No coverage feedback (that needs a nightly toolchain or AFL++'s
//! compiler wrappers): inputs are grown from valid seeds by mutations that
//! reach past the first check (lengths set to edge values, batches whose
//! CRC is fixed after mutating, so the decoder behind it is reached).
//! Each target runs for `SLUICE_FUZZ_SECONDS` (default 10) from a seed
//! (`SLUICE_FUZZ_SEED`, default the clock), printed first. A failing
//! input is written under `target/fuzz-failures/` and its seed printed;
//! committed into `engine/tests/fuzz_corpus/<target>/`, it is replayed on
//! every run before anything random, which is how a failure becomes a
//! regression test.
//!
//! "Failing" is a panic (a decoder must answer with an error, never
//! crash the shard) or, for recovery, a log that opens but then cannot
//! read what it claims to hold.

#[global_allocator]
static ALLOCATOR: sluice_engine::alloc::Allocator = sluice_engine::alloc::Allocator;

use kafka_protocol::messages::{ApiKey, RequestKind};
use sluice_engine::config::BrokerConfig;
use sluice_engine::storage::log::PartitionLog;
use sluice_protocol::record_batch::{
    compute_crc, decode_records, validate_batch, validate_record_set, BatchBuilder, Compression,
};
use sluice_protocol::Offset;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "common/splitmix.rs"]
mod splitmix;
use splitmix::Rng;

/// Values that sit on a decoder's edges, for lengths and counts.
const EDGES: [i32; 9] = [-2, -1, 0, 1, 127, 128, 65_535, i32::MAX, i32::MIN];

/// One to four random changes to `input`.
fn mutate(rng: &mut Rng, input: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(4) {
        let len = input.len();
        match rng.below(7) {
            0 if len > 0 => {
                let i = rng.below(len);
                input[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                input[i] = [0, 0xff, 0x7f, 0x80, 1][rng.below(5)];
            }
            2 if len >= 4 => {
                let i = rng.below(len - 3);
                let v = EDGES[rng.below(EDGES.len())].to_be_bytes();
                input[i..i + 4].copy_from_slice(&v);
            }
            3 if len > 0 => {
                input.truncate(rng.below(len));
            }
            4 => {
                let i = rng.below(len + 1);
                let n = 1 + rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                input.splice(i..i, bytes);
            }
            5 if len > 1 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(16));
                input.drain(i..i + n);
            }
            _ => {
                // An unsigned varint of an edge size (compact lengths).
                let i = rng.below(len + 1);
                let v = [0u8, 0x01, 0x7f, 0xff, 0xff, 0xff, 0xff, 0x0f];
                let n = 1 + rng.below(v.len());
                input.splice(i..i, v[v.len() - n..].iter().copied());
            }
        }
    }
}

fn seed() -> u64 {
    std::env::var("SLUICE_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
}

fn budget() -> Duration {
    let s = std::env::var("SLUICE_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    Duration::from_secs(s)
}

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz_corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    files.sort();
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

/// Replays `target`'s committed corpus, then runs mutations of `seeds`
/// (and of the corpus) through `check` until the budget is spent. Panics
/// with the seed and the saved input if `check` panics or fails.
fn fuzz(target: &str, seeds: Vec<Vec<u8>>, check: impl Fn(&[u8]) -> Result<(), String>) {
    let seed = seed();
    eprintln!("fuzz {target}: seed {seed} (SLUICE_FUZZ_SEED={seed} replays it)");
    let committed = corpus(target);
    let run = |input: &[u8]| -> Result<(), String> {
        match catch_unwind(AssertUnwindSafe(|| check(input))) {
            Ok(r) => r,
            Err(p) => Err(p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into())),
        }
    };
    let fail = |input: &[u8], why: String| -> ! {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/fuzz-failures");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{target}-{seed}.bin"));
        std::fs::write(&path, input).unwrap();
        panic!(
            "fuzz {target}, seed {seed}: {why}\ninput ({} bytes) saved to {}; commit it under \
             engine/tests/fuzz_corpus/{target}/ to keep it as a regression test",
            input.len(),
            path.display()
        );
    };
    for input in &committed {
        if let Err(why) = run(input) {
            fail(input, why);
        }
    }
    let pool: Vec<Vec<u8>> = seeds.into_iter().chain(committed).collect();
    assert!(!pool.is_empty());
    let mut rng = Rng(seed);
    let deadline = Instant::now() + budget();
    let mut runs = 0u64;
    while Instant::now() < deadline {
        let mut input = pool[rng.below(pool.len())].clone();
        mutate(&mut rng, &mut input);
        if let Err(why) = run(&input) {
            fail(&input, why);
        }
        runs += 1;
    }
    eprintln!("fuzz {target}: {runs} inputs, no failure");
}

#[test]
fn request_headers() {
    let mut seeds = Vec::new();
    for (key, version) in [(18i16, 3i16), (0, 9), (1, 12), (3, 12), (19, 7)] {
        let mut h = Vec::new();
        h.extend_from_slice(&key.to_be_bytes());
        h.extend_from_slice(&version.to_be_bytes());
        h.extend_from_slice(&7i32.to_be_bytes());
        h.extend_from_slice(&6i16.to_be_bytes());
        h.extend_from_slice(b"client");
        h.push(0);
        seeds.push(h);
    }
    fuzz("request_header", seeds, |input| {
        let _ = sluice_protocol::header::parse_request_header(input);
        Ok(())
    });
}

/// Every API and version the broker answers, from its ApiVersions table.
fn spoken() -> Vec<(ApiKey, i16)> {
    sluice_protocol::api_versions::SUPPORTED
        .iter()
        .flat_map(|r| (r.min..=r.max).map(move |v| (r.key, v)))
        .collect()
}

#[test]
fn request_bodies_at_every_version() {
    let spoken = spoken();
    assert!(spoken.len() > 100, "{} versions", spoken.len());
    // A seed per version: a zeroed body (empty arrays and strings, no
    // tagged fields) grown by mutation; the first two bytes of every
    // input pick the API and version.
    let seeds: Vec<Vec<u8>> = (0..spoken.len())
        .map(|i| {
            let mut s = (i as u16).to_be_bytes().to_vec();
            s.extend(std::iter::repeat_n(0u8, 1 + i % 48));
            s
        })
        .collect();
    fuzz("request_body", seeds, |input| {
        if input.len() < 2 {
            return Ok(());
        }
        let (key, version) =
            spoken[u16::from_be_bytes([input[0], input[1]]) as usize % spoken.len()];
        // The versions past the codec are read by the broker's own
        // decoders, or by the codec at the version laid out the same.
        match (key, version) {
            (ApiKey::OffsetCommit, sluice_protocol::offset_commit::TOPIC_ID_VERSION) => {
                let _ = sluice_protocol::offset_commit::OffsetCommitRequest::decode(&input[2..]);
            }
            (ApiKey::OffsetFetch, sluice_protocol::offset_fetch::TOPIC_ID_VERSION) => {
                let _ = sluice_protocol::offset_fetch::OffsetFetchRequest::decode(&input[2..]);
            }
            (ApiKey::DeleteGroups, sluice_protocol::delete_groups::ERROR_MESSAGE_VERSION) => {
                let _ = sluice_protocol::delete_groups::DeleteGroupsRequest::decode(&input[2..]);
            }
            (ApiKey::DescribeLogDirs, sluice_protocol::describe_log_dirs::CORDONED_VERSION) => {
                let _ =
                    sluice_protocol::describe_log_dirs::DescribeLogDirsRequest::decode(&input[2..]);
            }
            (ApiKey::ApiVersions, sluice_protocol::api_versions_request::TARGET_VERSION) => {
                let _ =
                    sluice_protocol::api_versions_request::ApiVersionsRequest::decode(&input[2..]);
            }
            _ => {
                let mut body = bytes::Bytes::copy_from_slice(&input[2..]);
                let layout = sluice_protocol::api_versions::codec_version(key, version);
                let _ = RequestKind::decode(key, &mut body, layout);
            }
        }
        Ok(())
    });
}

/// Batches of every codec, with keys, values, nulls and headers.
fn batches() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for codec in [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let mut b = BatchBuilder::new(1_000);
        for i in 0..5u8 {
            let value = vec![i; 10 * i as usize];
            b.push(
                1_000 + i as i64,
                (i % 2 == 0).then_some(&[i][..]),
                (i != 3).then_some(&value[..]),
                &[(&b"h"[..], Some(&b"v"[..]))],
            );
        }
        let mut payload = Vec::new();
        sluice_protocol::compression::compress(codec, b.records(), &mut payload).unwrap();
        out.push(b.finish_with(codec, &payload));
    }
    out
}

/// After mutating, half the inputs get their CRC (and batch length) put
/// right, so what lies behind those checks is reached.
fn fix_up(input: &mut [u8]) {
    if input.len() >= 61 {
        let len = (input.len() - 12) as i32;
        input[8..12].copy_from_slice(&len.to_be_bytes());
        let crc = compute_crc(input);
        input[17..21].copy_from_slice(&crc.to_be_bytes());
    }
}

fn check_batch(input: &[u8]) -> Result<(), String> {
    let _ = validate_record_set(input, 1 << 20);
    if let Ok(header) = validate_batch(input, 0) {
        let records = &input[61.min(input.len())..];
        let section = match header.compression() {
            Some(Compression::None) | None => records.to_vec(),
            Some(codec) => match sluice_protocol::compression::decompress(codec, records) {
                Ok(s) => s,
                Err(_) => return Ok(()),
            },
        };
        let count = header.records_count.clamp(0, 10_000) as usize;
        let _ = decode_records(&section, count);
        let _ = sluice_protocol::record_batch::parse_marker(input);
    }
    Ok(())
}

#[test]
fn record_batches_of_every_codec() {
    let seeds = batches();
    // The fix-up choice rides on the input: its last byte's low bit.
    fuzz("record_set", seeds, |input| {
        check_batch(input)?;
        let mut fixed = input.to_vec();
        fix_up(&mut fixed);
        check_batch(&fixed)
    });
}

fn topic_config() -> Arc<sluice_engine::config::TopicConfig> {
    let mut c = BrokerConfig::default();
    c.set("segment.bytes", "4096").unwrap();
    c.set("index.interval.bytes", "256").unwrap();
    Arc::new(c.topic_config(&Default::default()).unwrap())
}

/// A partition of three segments, written cleanly; its files' bytes, by
/// name.
fn partition_files() -> Vec<(String, Vec<u8>)> {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("t-0");
    let mut log = PartitionLog::create(&dir, topic_config(), uuid::Uuid::nil()).unwrap();
    for i in 0..40 {
        let mut b = BatchBuilder::new(1_000 + i);
        for j in 0..3 {
            b.push(1_000 + i + j, Some(b"key"), Some(&[i as u8; 100]), &[]);
        }
        let set = b.finish();
        let summary = validate_record_set(&set, 1 << 20).unwrap();
        log.append(&set, &summary, 0).unwrap();
    }
    log.flush_now(0).unwrap();
    drop(log);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

/// Every batch in `bytes` (whole batches, as a read returns) is valid.
fn stored_batches_valid(bytes: &[u8]) -> Result<(), String> {
    let mut pos = 0;
    while pos < bytes.len() {
        let rest = &bytes[pos..];
        if rest.len() < 12 {
            return Err(format!("{} stray bytes at {pos}", rest.len()));
        }
        let len = 12 + i32::from_be_bytes(rest[8..12].try_into().unwrap()) as usize;
        let batch = rest
            .get(..len)
            .ok_or_else(|| format!("batch at {pos} cut short"))?;
        sluice_protocol::record_batch::validate_stored_batch(batch, pos)
            .map_err(|e| e.to_string())?;
        pos += len;
    }
    Ok(())
}

#[test]
fn recovery_from_damaged_segments_and_indexes() {
    let files = partition_files();
    let damageable: Vec<usize> = files
        .iter()
        .enumerate()
        .filter(|(_, (n, _))| {
            n.ends_with(".log") || n.ends_with(".index") || n.ends_with(".timeindex")
        })
        .map(|(i, _)| i)
        .collect();
    assert!(damageable.len() >= 9, "{files:?}");
    // An input: which file to damage (first byte), then the damaged bytes.
    let seeds: Vec<Vec<u8>> = damageable
        .iter()
        .map(|&i| {
            let mut s = vec![i as u8];
            s.extend_from_slice(&files[i].1);
            s
        })
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let round = std::cell::Cell::new(0u64);
    fuzz("segment", seeds, |input| {
        let Some((&which, damaged)) = input.split_first() else {
            return Ok(());
        };
        round.set(round.get() + 1);
        let dir = tmp.path().join(format!("t-{}", round.get()));
        std::fs::create_dir_all(&dir).unwrap();
        let target = damageable[which as usize % damageable.len()];
        for (i, (name, bytes)) in files.iter().enumerate() {
            let bytes = if i == target { damaged } else { bytes };
            std::fs::write(dir.join(name), bytes).unwrap();
        }
        // An unclean stop with nothing known durable: everything is checked.
        let result = PartitionLog::open(&dir, topic_config(), false, Offset(0), Offset(0));
        let outcome = match result {
            // Corruption before the last segment keeps the partition
            // offline: an error, not a crash.
            Err(_) => Ok(()),
            Ok(log) => {
                // What it opened must read back: every batch from the log
                // start to its end, whole and valid.
                let mut at = Offset(0);
                let end = log.log_end();
                let mut steps = 0;
                let mut found = Ok(());
                while at < end && steps < 1_000 {
                    steps += 1;
                    match log.read(at, 1 << 20, end) {
                        Ok(r) if r.regions.is_empty() => break,
                        Ok(r) => {
                            let mut bytes = Vec::new();
                            for region in &r.regions {
                                let mut buf = vec![0u8; region.len];
                                std::os::unix::fs::FileExt::read_exact_at(
                                    &*region.file,
                                    &mut buf,
                                    region.position,
                                )
                                .unwrap();
                                bytes.extend(buf);
                            }
                            if let Err(e) = stored_batches_valid(&bytes) {
                                found = Err(format!(
                                    "recovered log reads an invalid batch at offset {at:?}: {e}"
                                ));
                                break;
                            }
                            at = Offset(at.0 + r.offsets as i64);
                        }
                        Err(e) => {
                            found = Err(format!("recovered log cannot read offset {at:?} below its end {end:?}: {e}"));
                            break;
                        }
                    }
                }
                found
            }
        };
        std::fs::remove_dir_all(&dir).unwrap();
        outcome
    });
}
