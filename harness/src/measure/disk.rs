//! The disk's own flush latency, the yardstick for a durable broker: a
//! broker that fsyncs before it acknowledges cannot answer faster than the
//! disk syncs, and one that groups concurrent appends into one sync should
//! answer within a small multiple of it. The probe appends one page to a
//! file in the broker's data directory and `fdatasync`s it, as a log
//! append followed by a flush does, and records how long the sync took.

use crate::measure::hist::{new_hist, record_us, Hist, Percentiles};
use serde::{Deserialize, Serialize};
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Bytes appended before each sync: one page, the least a log append
/// dirties.
pub const WRITE_BYTES: usize = 4096;

/// How long one probe runs, and at most how many syncs it times.
pub const PROBE_TIME: Duration = Duration::from_secs(2);
pub const PROBE_SYNCS: usize = 2_000;

/// What the probes around a point measured.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct DiskSync {
    /// The directory whose file system was probed.
    pub dir: String,
    /// Bytes appended before each sync.
    pub write_bytes: usize,
    /// Latency of `fdatasync` alone, over the probes before and after
    /// the point's load.
    pub latency: Percentiles,
}

/// Times `fdatasync` after appending [`WRITE_BYTES`] to a fresh file in
/// `dir`, until `time` has passed or `syncs` were timed; the file is
/// removed afterwards. Latencies go into `into` (µs).
pub fn probe(dir: &Path, time: Duration, syncs: usize, into: &mut Hist) -> std::io::Result<()> {
    let path: PathBuf = dir.join(format!(".sluice-bench-sync-probe-{}", std::process::id()));
    let result = (|| {
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)?;
        let page = vec![0x5Au8; WRITE_BYTES];
        let start = Instant::now();
        for _ in 0..syncs {
            if start.elapsed() >= time {
                break;
            }
            file.write_all(&page)?;
            let t = Instant::now();
            file.sync_data()?;
            record_us(into, t.elapsed().as_micros() as u64);
        }
        Ok(())
    })();
    let _ = std::fs::remove_file(&path);
    result
}

/// Runs [`probe`] with the standard budget into a new histogram.
pub fn probe_once(dir: &Path) -> std::io::Result<Hist> {
    let mut h = new_hist();
    probe(dir, PROBE_TIME, PROBE_SYNCS, &mut h)?;
    Ok(h)
}

impl DiskSync {
    pub fn of(dir: &Path, h: &Hist) -> DiskSync {
        DiskSync {
            dir: dir.display().to_string(),
            write_bytes: WRITE_BYTES,
            latency: Percentiles::of(h),
        }
    }
}

/// Whether a topic's configs make the broker flush before it acknowledges,
/// so that the disk's sync latency bounds publish latency from below.
pub fn flushes_per_append(configs: &std::collections::BTreeMap<String, String>) -> bool {
    configs
        .get("flush.messages")
        .and_then(|v| v.trim().parse::<i64>().ok())
        .is_some_and(|n| (1..i64::MAX).contains(&n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_times_syncs_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = new_hist();
        probe(dir.path(), Duration::from_secs(60), 5, &mut h).unwrap();
        assert_eq!(h.len(), 5);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_missing_directory_is_an_error_not_a_figure() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = new_hist();
        assert!(probe(&dir.path().join("absent"), PROBE_TIME, 5, &mut h).is_err());
        assert!(h.is_empty());
    }

    #[test]
    fn only_a_finite_message_count_flushes_per_append() {
        let with = |v: &str| {
            let mut m = std::collections::BTreeMap::new();
            m.insert("flush.messages".to_string(), v.to_string());
            m
        };
        assert!(flushes_per_append(&with("1")));
        assert!(flushes_per_append(&with("100")));
        assert!(!flushes_per_append(&with("0")));
        assert!(!flushes_per_append(&with(&i64::MAX.to_string())));
        assert!(!flushes_per_append(&Default::default()));
    }
}
