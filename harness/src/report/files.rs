//! The results folder: `results/<workload>/<UTC timestamp>/`.
//!
//! ```text
//! run.json                       environment, workload, every point's summary
//! point-<i>-r<k>.publish.hgrm    publish latency percentile distribution (ms)
//! point-<i>-r<k>.e2e.hgrm        end-to-end latency percentile distribution (ms)
//! point-<i>-r<k>.commit.hgrm     EndTxn round trips (transactional points only)
//! point-<i>-r<k>.hlog            interval log: one publish and one e2e histogram per second
//! *.svg, *.png                   charts
//! report.html                    table and charts on one offline page
//! ```

use super::env::Environment;
use super::hgrm::percentile_distribution;
use crate::measure::hist::{Hist, HIGHEST_US, SIGNIFICANT_DIGITS};
use crate::run::result::{PointHists, PointResult};
use crate::run::worker::{MergedFrom, WorkerInfo};
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::V2DeflateSerializer;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunJson {
    pub workload_name: String,
    pub workload_file: String,
    pub started_utc: String,
    pub environment: Environment,
    /// The workload file as written.
    pub workload_yaml: String,
    pub repeat: u32,
    pub interrupted: bool,
    /// Workload fields read but not acted on as OMB would, with why.
    #[serde(default)]
    pub warnings: Vec<String>,
    pub points: Vec<PointResult>,
    /// This run is one worker's share of a workload (`run --worker I/N`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<WorkerInfo>,
    /// This run adds up workers' runs (`merge`), and which of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged_from: Option<MergedFrom>,
}

/// `2024-05-01T12-30-05Z`: UTC, and safe in a path.
pub fn utc_stamp(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}-{:02}-{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

pub fn slug(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let s = s.trim_matches('-').to_string();
    if s.is_empty() {
        "workload".into()
    } else {
        s
    }
}

pub fn run_dir(out: &Path, workload: &str, started: SystemTime) -> PathBuf {
    out.join(slug(workload)).join(utc_stamp(started))
}

pub fn point_stem(p: &PointResult) -> String {
    format!("point-{}-r{}", p.index, p.repeat)
}

pub fn write_point(dir: &Path, p: &PointResult, h: &PointHists) -> std::io::Result<()> {
    let stem = point_stem(p);
    std::fs::write(
        dir.join(format!("{stem}.publish.hgrm")),
        percentile_distribution(&h.publish),
    )?;
    std::fs::write(
        dir.join(format!("{stem}.publish-delay.hgrm")),
        percentile_distribution(&h.delay),
    )?;
    std::fs::write(
        dir.join(format!("{stem}.e2e.hgrm")),
        percentile_distribution(&h.e2e),
    )?;
    if p.transactions.is_some() {
        std::fs::write(
            dir.join(format!("{stem}.commit.hgrm")),
            percentile_distribution(&h.commit),
        )?;
    }
    std::fs::write(dir.join(format!("{stem}.hlog")), interval_log(p, h)?)
}

/// The interval log of a point, as HdrHistogram's `HistogramLogProcessor`
/// reads it: `StartTime` is the load's first intended send, each interval
/// starts that many seconds after it, and values are in nanoseconds (the
/// processor's default unit; the harness records µs).
pub fn interval_log(p: &PointResult, h: &PointHists) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    let mut ser = V2DeflateSerializer::new();
    let start = UNIX_EPOCH + Duration::from_micros(h.start_unix_us.max(0) as u64);
    let mut w = IntervalLogWriterBuilder::new()
        .add_comment(&format!(
            "sluice-bench point {} `{}`, values in ns, second 0 at StartTime",
            p.index, p.label
        ))
        .with_start_time(start)
        .begin_log_with(&mut buf, &mut ser)?;
    for (sec, publish, e2e) in &h.intervals {
        let offset = Duration::from_secs(*sec);
        for (tag, hist) in [("publish", publish), ("e2e", e2e)] {
            if let Some(hist) = hist {
                w.write_histogram(&in_ns(hist), offset, Duration::from_secs(1), Tag::new(tag))
                    .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
            }
        }
    }
    drop(w);
    Ok(buf)
}

/// A µs histogram's values in ns, at the same precision.
fn in_ns(h: &Hist) -> Hist {
    let mut out = Hist::new_with_bounds(1_000, HIGHEST_US * 1_000, SIGNIFICANT_DIGITS)
        .expect("constant histogram bounds are valid");
    for v in h.iter_recorded() {
        let _ = out.record_n(v.value_iterated_to() * 1_000, v.count_at_value());
    }
    out
}

pub fn write_run_json(dir: &Path, run: &RunJson) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(run).map_err(std::io::Error::other)?;
    std::fs::write(dir.join("run.json"), text)
}

pub fn read_run_json(path: &Path) -> Result<RunJson, String> {
    let file = if path.is_dir() {
        path.join("run.json")
    } else {
        path.to_path_buf()
    };
    let text = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", file.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_stamps_are_right() {
        assert_eq!(utc_stamp(UNIX_EPOCH), "1970-01-01T00-00-00Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_709_210_096); // 2024-02-29 12:34:56
        assert_eq!(utc_stamp(t), "2024-02-29T12-34-56Z");
        assert_eq!(slug("1 topic / 16 partitions"), "1-topic---16-partitions");
    }
}
