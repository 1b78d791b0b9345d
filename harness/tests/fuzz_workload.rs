//! Fuzzing the workload parser on the stable toolchain, time-bounded, run
//! by CI: every workload under `workloads/`, mutated line by line (values
//! swapped for edge values, lines dropped, doubled or moved, indentation
//! broken) and byte by byte. A file must load or be refused with its file
//! named, never panic (see `engine/tests/fuzz.rs` for the conventions:
//! `SLUICE_FUZZ_SECONDS`, `SLUICE_FUZZ_SEED`, failing inputs saved under
//! `target/fuzz-failures/`, regressions committed under
//! `harness/tests/fuzz_corpus/`).

use sluice_harness::workload::error::WorkloadError;
use sluice_harness::workload::{describe, parse};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[path = "../../engine/tests/common/splitmix.rs"]
mod splitmix;
use splitmix::Rng;

const VALUES: [&str; 16] = [
    "-1",
    "0",
    "1",
    "-0",
    "1e309",
    "18446744073709551616",
    "0.0000001",
    "\"\"",
    "[]",
    "{}",
    "null",
    "true",
    "abc",
    "[1, [2]]",
    "{a: {b: c}}",
    "9223372036854775807",
];

fn mutate(rng: &mut Rng, text: &str) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    for _ in 0..1 + rng.below(3) {
        let n = lines.len();
        if n == 0 {
            lines.push(VALUES[rng.below(VALUES.len())].to_string());
            continue;
        }
        let i = rng.below(n);
        match rng.below(6) {
            0 => {
                // A value replaced by an edge value.
                if let Some(colon) = lines[i].find(':') {
                    let key = lines[i][..=colon].to_string();
                    lines[i] = format!("{key} {}", VALUES[rng.below(VALUES.len())]);
                }
            }
            1 => {
                lines.remove(i);
            }
            2 => {
                let l = lines[i].clone();
                lines.insert(rng.below(n + 1), l);
            }
            3 => {
                let l = lines.remove(i);
                lines.insert(rng.below(n), l);
            }
            4 => {
                let indent = " ".repeat(rng.below(6));
                lines[i] = format!("{indent}{}", lines[i].trim_start());
            }
            _ => {
                let mut bytes = lines[i].clone().into_bytes();
                if !bytes.is_empty() {
                    let j = rng.below(bytes.len());
                    bytes[j] = b"-:[]{}#&*!|>'\"%@`,?0 \t"[rng.below(22)];
                }
                lines[i] = String::from_utf8_lossy(&bytes).into_owned();
            }
        }
    }
    lines.join("\n")
}

fn workloads() -> Vec<(PathBuf, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files: Vec<PathBuf> = ["workloads", "harness/tests/fuzz_corpus/workload"]
        .iter()
        .flat_map(|d| std::fs::read_dir(root.join(d)).into_iter().flatten())
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p, text)
        })
        .collect()
}

fn check(path: &Path, text: &str) -> Result<(), String> {
    match catch_unwind(AssertUnwindSafe(|| parse(path, text, None))) {
        Err(p) => Err(p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic".into())),
        Ok(Ok(f)) => catch_unwind(AssertUnwindSafe(|| describe(&f)))
            .map(|_| ())
            .map_err(|_| "describing a loaded file panicked".into()),
        Ok(Err(e)) => {
            let shown = e.to_string();
            match &e {
                WorkloadError::Invalid { file, .. } if file == path => Ok(()),
                WorkloadError::Read { .. } => Ok(()),
                _ => Err(format!("the error does not name the file: {shown}")),
            }
        }
    }
}

#[test]
fn the_workload_parser_refuses_or_loads_every_mutated_file() {
    let seed = std::env::var("SLUICE_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    let seconds = std::env::var("SLUICE_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    eprintln!("fuzz workload: seed {seed} (SLUICE_FUZZ_SEED={seed} replays it)");
    let files = workloads();
    assert!(files.len() >= 10, "{} workloads", files.len());
    // Every committed file, as it is, first.
    for (path, text) in &files {
        if let Err(why) = check(path, text) {
            panic!("{}: {why}", path.display());
        }
    }
    let mut rng = Rng(seed);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut runs = 0u64;
    while Instant::now() < deadline {
        let (path, text) = &files[rng.below(files.len())];
        let mutated = mutate(&mut rng, text);
        if let Err(why) = check(path, &mutated) {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/fuzz-failures");
            std::fs::create_dir_all(&dir).unwrap();
            let saved = dir.join(format!("workload-{seed}.yaml"));
            std::fs::write(&saved, &mutated).unwrap();
            panic!(
                "fuzz workload, seed {seed}: {why}\nmutated {} saved to {}; commit it under \
                 harness/tests/fuzz_corpus/workload/ to keep it as a regression test",
                path.display(),
                saved.display()
            );
        }
        runs += 1;
    }
    eprintln!("fuzz workload: {runs} files, no failure");
}
