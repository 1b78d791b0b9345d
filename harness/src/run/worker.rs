//! Load from many machines: `run --worker I/N --start-at T` runs worker
//! I's share of a workload, and `merge` (`report/merge.rs`) adds the
//! workers' results into one run.
//!
//! ```text
//! producers  p = 0, 1, ... over (topic, producer)          worker I owns p % N == I - 1
//! consumers  c = 0, 1, ... over (topic, subscription, consumer)  worker I owns c % N == I - 1
//! rate       every producer sends rate / producers, so the workers' rates add up to it
//! clock      point k's first intended send is at T + Σ_{j<k} (warm-up_j + test_j + POINT_GAP)
//! topics     sluice-bench-<workload>-<T in s>-<point>-<repeat>, created by whoever comes
//!            first and left in place: no worker knows when the others are done with them
//! ```
//!
//! Indexes count from 1, as a human numbers machines; a Kubernetes Indexed
//! Job's completion index (from 0) is I - 1. Nothing is coordinated at run
//! time: the workers agree on the workload, N and T, and each derives its
//! share from them. What a worker cannot know alone (how much of what the
//! others produced its consumers read) it writes beside its points
//! (`point-<i>-r<k>.worker.json`, with its histograms in HdrHistogram's
//! lossless V2 form) for `merge` to add.

use super::point::LoadOutcome;
use crate::measure::hist::{decode, encode, Hist};
use crate::report::files::utc_stamp;
use crate::workload::{Workload, WorkloadFile};
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Bound on N: a typo (`--worker 1/1000000`) is refused, not run.
pub const WORKERS_MAX: u32 = 1_000;
/// Bound on how far ahead `--start-at` may be: a day, so a wrong date is
/// refused instead of waited for.
pub const START_AHEAD_MAX: Duration = Duration::from_secs(86_400);
/// Time between one point's window and the next point's start: the
/// generators' catch-up (5 s) and flush (10 s), the consumers' drain
/// (10 s), and the next point's topics and consumers, with room to spare.
/// A worker not ready by a point's start fails the run rather than measure
/// a load the others did not share.
pub const POINT_GAP: Duration = Duration::from_secs(60);
/// The file a worker writes into its folder before anything runs, and
/// rewrites when it ends: a folder whose worker died still says who it was.
pub const WORKER_FILE: &str = "worker.json";

/// Which share of the workload this process runs, and when its clock
/// starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkerSpec {
    /// 1-based.
    pub index: u32,
    pub count: u32,
    /// The agreed instant: the first point's first intended send, µs
    /// since the Unix epoch.
    pub start_unix_us: i64,
}

/// `I/N`, 1-based.
pub fn parse_worker(s: &str) -> Result<(u32, u32), String> {
    let bad = |why: &str| format!("--worker {s}: {why}");
    let (i, n) = s
        .split_once('/')
        .ok_or_else(|| bad("expected I/N, e.g. 1/4 for the first of four workers"))?;
    let i: u32 = i.trim().parse().map_err(|_| bad("I is not a number"))?;
    let n: u32 = n.trim().parse().map_err(|_| bad("N is not a number"))?;
    if n == 0 || n > WORKERS_MAX {
        return Err(bad(&format!("N must be between 1 and {WORKERS_MAX}")));
    }
    if i == 0 {
        return Err(bad(
            "worker indexes count from 1 (a Kubernetes completion index is I - 1)",
        ));
    }
    if i > n {
        return Err(bad(&format!("there is no worker {i} of {n}")));
    }
    Ok((i, n))
}

/// An RFC 3339 UTC instant (`2026-05-01T12:30:00Z`, fractions of a second
/// allowed, `+00:00` for `Z`), as µs since the Unix epoch.
pub fn parse_utc(s: &str) -> Result<i64, String> {
    let bad = || format!("--start-at {s}: expected a UTC time like 2026-05-01T12:30:00Z");
    let t = s.trim();
    let t = t
        .strip_suffix('Z')
        .or_else(|| t.strip_suffix("+00:00"))
        .ok_or_else(bad)?;
    let (date, time) = t.split_once(['T', ' ']).ok_or_else(bad)?;
    let num = |v: &str| v.parse::<i64>().map_err(|_| bad());
    let d: Vec<&str> = date.split('-').collect();
    let c: Vec<&str> = time.split(':').collect();
    if d.len() != 3 || c.len() != 3 {
        return Err(bad());
    }
    let (y, m, day) = (num(d[0])?, num(d[1])?, num(d[2])?);
    let (hh, mm) = (num(c[0])?, num(c[1])?);
    let (ss, frac) = c[2].split_once('.').unwrap_or((c[2], ""));
    let ss = num(ss)?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 60 {
        return Err(bad());
    }
    if !frac.chars().all(|ch| ch.is_ascii_digit()) || frac.len() > 9 {
        return Err(bad());
    }
    let frac_us = format!("{frac:0<6}")[..6]
        .parse::<i64>()
        .map_err(|_| bad())?;
    let secs = days_from_civil(y, m as u32, day as u32) * 86_400 + hh * 3_600 + mm * 60 + ss;
    Ok(secs * 1_000_000 + frac_us)
}

/// (year, month, day) to days since 1970-01-01, proleptic Gregorian
/// (Howard Hinnant's algorithm; `files::utc_stamp` goes the other way).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

pub fn now_unix_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// `2026-05-01T12:30:00.000000Z`.
pub fn format_utc(us: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_micros(us.max(0) as u64);
    let stamp = utc_stamp(t); // 2026-05-01T12-30-00Z
    let (date, time) = stamp.split_at(10);
    format!(
        "{date}{}.{:06}Z",
        time.trim_end_matches('Z').replace('-', ":"),
        us.rem_euclid(1_000_000)
    )
}

impl WorkerSpec {
    /// Checks `--worker` and `--start-at` together against the clock now.
    pub fn new(worker: &str, start_at: &str, now_us: i64) -> Result<WorkerSpec, String> {
        let (index, count) = parse_worker(worker)?;
        let start_unix_us = parse_utc(start_at)?;
        if start_unix_us <= now_us {
            return Err(format!(
                "--start-at {start_at} is {:.1} s in the past (now {}): agree on an instant every worker can still reach",
                (now_us - start_unix_us) as f64 / 1e6,
                format_utc(now_us)
            ));
        }
        if start_unix_us - now_us > START_AHEAD_MAX.as_micros() as i64 {
            return Err(format!(
                "--start-at {start_at} is more than {} h ahead: a wrong date?",
                START_AHEAD_MAX.as_secs() / 3_600
            ));
        }
        Ok(WorkerSpec {
            index,
            count,
            start_unix_us,
        })
    }

    /// The share as a point's load uses it.
    pub fn share(&self, start_unix_us: i64) -> Share {
        Share {
            index: self.index - 1,
            count: self.count,
            start_unix_us,
        }
    }

    /// The folder of this worker's results: predictable, so whatever
    /// started the workers can collect them.
    pub fn run_dir(&self, out: &Path, workload: &str) -> PathBuf {
        let at = UNIX_EPOCH + Duration::from_micros(self.start_unix_us.max(0) as u64);
        out.join(crate::report::files::slug(workload)).join(format!(
            "{}-worker-{}-of-{}",
            utc_stamp(at),
            self.index,
            self.count
        ))
    }

    /// The topic name prefix every worker derives alike for a point.
    pub fn topic_tag(&self, workload: &str, point: usize, repeat: u32) -> String {
        format!(
            "sluice-bench-{}-{}-{point}-{repeat}",
            crate::report::files::slug(workload),
            self.start_unix_us / 1_000_000
        )
    }
}

/// A point's load as one worker of several runs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Share {
    /// 0-based.
    pub index: u32,
    pub count: u32,
    /// This point's agreed first intended send, µs since the epoch.
    pub start_unix_us: i64,
}

impl Share {
    pub fn owns(&self, k: usize) -> bool {
        k % self.count as usize == self.index as usize
    }
}

/// The msg/s a worker's producers send: each of the workload's producers
/// sends an equal part of its rate.
pub fn rate_share(w: &Workload, share: Share) -> f64 {
    let total = (w.topics * w.producers_per_topic) as usize;
    let here = (0..total).filter(|&i| share.owns(i)).count();
    w.producer_rate * here as f64 / total.max(1) as f64
}

/// Refuses what cannot be split across workers.
pub fn check_splittable(f: &WorkloadFile) -> Result<(), String> {
    for p in &f.points {
        if p.workload.producer_rate == 0.0 {
            return Err(format!(
                "point `{}`: producerRate 0 asks for a max-rate search, which workers cannot split: \
                 each would search alone and their rates would not add up to a rate the broker \
                 sustains. Give producerRate (the total over all workers), or search with one worker",
                p.label()
            ));
        }
        if p.workload.ramp.is_some() {
            return Err(format!(
                "point `{}`: producerIncrementRate ramps the rate from one process's clock; \
                 run ramps with one worker",
                p.label()
            ));
        }
        if p.workload.backlog_bytes > 0 {
            return Err(format!(
                "point `{}`: consumerBacklogSizeGB needs one process to see the whole backlog built \
                 and drained; run backlog workloads with one worker",
                p.label()
            ));
        }
    }
    Ok(())
}

/// A workload's identity: SHA-256 of every point as resolved (sweep,
/// driver and `--duration` applied), the repeat count and the name.
/// Workers that ran different workloads cannot be merged.
pub fn workload_identity(f: &WorkloadFile, duration: Option<Duration>) -> String {
    let points: Vec<serde_json::Value> = f
        .points
        .iter()
        .map(|p| {
            let mut w = p.workload.clone();
            if let Some(d) = duration {
                w.test_duration = d;
                w.warmup_duration = w.warmup_duration.min(d / 5);
            }
            serde_json::json!({ "settings": p.settings, "workload": w })
        })
        .collect();
    let doc = serde_json::json!({ "name": f.name, "repeat": f.repeat, "points": points });
    let digest = ring::digest::digest(&ring::digest::SHA256, doc.to_string().as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Who a worker was and how its run ended: `worker.json`, and `worker` in
/// its `run.json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct WorkerInfo {
    /// 1-based.
    pub index: u32,
    pub count: u32,
    pub start_at_utc: String,
    pub start_at_unix_us: i64,
    /// [`workload_identity`].
    pub workload_sha256: String,
    pub host: Option<String>,
    /// The run ended and wrote its `run.json`.
    pub finished: bool,
    /// Why the run ended without results.
    pub error: Option<String>,
}

impl WorkerInfo {
    pub fn starting(w: &WorkerSpec, workload_sha256: String) -> WorkerInfo {
        WorkerInfo {
            index: w.index,
            count: w.count,
            start_at_utc: format_utc(w.start_unix_us),
            start_at_unix_us: w.start_unix_us,
            workload_sha256,
            host: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string()),
            finished: false,
            error: None,
        }
    }

    pub fn write(&self, dir: &Path) -> Result<(), String> {
        let text = serde_json::to_string_pretty(self).map_err(|e| e.to_string())?;
        std::fs::write(dir.join(WORKER_FILE), text)
            .map_err(|e| format!("writing {}: {e}", dir.join(WORKER_FILE).display()))
    }

    pub fn read(dir: &Path) -> Result<WorkerInfo, String> {
        let file = dir.join(WORKER_FILE);
        let text = std::fs::read_to_string(&file).map_err(|e| {
            format!(
                "{}: {e} (not the results folder of a `run --worker I/N`)",
                file.display()
            )
        })?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", file.display()))
    }
}

/// What `merge` found of each worker, in the merged `run.json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MergedFrom {
    pub count: u32,
    pub start_at_utc: String,
    pub workload_sha256: String,
    /// Every worker 1..=N, merged or not.
    pub workers: Vec<WorkerOutcome>,
    /// Every worker's results were merged.
    pub complete: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct WorkerOutcome {
    pub index: u32,
    pub folder: Option<String>,
    pub host: Option<String>,
    /// `merged`, `interrupted` (merged, cut short by Ctrl-C), `failed`
    /// (its run ended in an error), `unfinished` (no `run.json`: killed or
    /// still running) or `missing` (no folder given).
    pub status: String,
    pub detail: Option<String>,
}

/// What one worker measured of a point beyond its `run.json` summary, for
/// `merge`: histograms in HdrHistogram's V2-deflate form (base64), and the
/// counts other workers' consumers and producers make whole.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkerPoint {
    pub publish: String,
    pub delay: String,
    /// Consumed messages only: the workers' unconsumed ones are known once
    /// merged.
    pub e2e: String,
    pub commit: String,
    pub transaction: String,
    /// (second, publish, end-to-end) per second of the load.
    pub intervals: Vec<(u64, Option<String>, Option<String>)>,
    pub start_unix_us: i64,
    pub subscriptions: u32,
    /// Messages this worker's producers got acknowledged, per topic, over
    /// the whole load.
    pub acknowledged_by_topic: BTreeMap<String, u64>,
    /// Messages this worker's consumers read, per subscription
    /// (`topic/index`), whoever produced them.
    pub consumed_by_subscription: BTreeMap<String, u64>,
    /// The window's failed and attempted sends (for the error rate).
    pub produce_errors: u64,
    pub produce_attempted: u64,
    /// How long the consumers read after the producers were done, µs: the
    /// lower bound of an unconsumed message's end-to-end latency.
    pub drain_us: u64,
}

fn b64(h: &Hist) -> String {
    base64::engine::general_purpose::STANDARD.encode(encode(h))
}

pub fn unb64(s: &str) -> Result<Hist, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| format!("a histogram is not base64: {e}"))?;
    decode(&bytes).ok_or_else(|| "a histogram does not decode".to_string())
}

impl WorkerPoint {
    pub fn of(out: &LoadOutcome, subscriptions: u32) -> WorkerPoint {
        let p = &out.produce;
        WorkerPoint {
            publish: b64(&p.latency),
            delay: b64(&p.delay),
            e2e: b64(&out.consume.latency),
            commit: b64(&p.commit),
            transaction: b64(&p.transaction),
            intervals: out
                .hists
                .intervals
                .iter()
                .map(|(s, a, b)| (*s, a.as_ref().map(b64), b.as_ref().map(b64)))
                .collect(),
            start_unix_us: out.hists.start_unix_us,
            subscriptions,
            acknowledged_by_topic: out.acknowledged_by_topic.clone(),
            consumed_by_subscription: out.consumed_by_subscription.clone(),
            produce_errors: p.errors,
            produce_attempted: p.messages + p.errors + p.missing,
            drain_us: out.drain_us,
        }
    }

    pub fn path(dir: &Path, stem: &str) -> PathBuf {
        dir.join(format!("{stem}.worker.json"))
    }

    pub fn write(&self, dir: &Path, stem: &str) -> Result<(), String> {
        let file = WorkerPoint::path(dir, stem);
        let text = serde_json::to_string(self).map_err(|e| e.to_string())?;
        std::fs::write(&file, text).map_err(|e| format!("writing {}: {e}", file.display()))
    }

    pub fn read(dir: &Path, stem: &str) -> Result<WorkerPoint, String> {
        let file = WorkerPoint::path(dir, stem);
        let text =
            std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", file.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_indexes_count_from_one() {
        assert_eq!(parse_worker("1/2"), Ok((1, 2)));
        assert_eq!(parse_worker("2/2"), Ok((2, 2)));
        assert!(parse_worker("3/2")
            .unwrap_err()
            .contains("no worker 3 of 2"));
        assert!(parse_worker("0/2").unwrap_err().contains("count from 1"));
        assert!(parse_worker("1/0").is_err());
        assert!(parse_worker("1-2").is_err());
        assert!(parse_worker("1/1001").is_err());
    }

    #[test]
    fn utc_instants_round_trip() {
        assert_eq!(parse_utc("1970-01-01T00:00:00Z"), Ok(0));
        let t = parse_utc("2024-02-29T12:34:56.25Z").unwrap();
        assert_eq!(t, 1_709_210_096_250_000);
        assert_eq!(
            parse_utc("2024-02-29T12:34:56+00:00"),
            Ok(1_709_210_096_000_000)
        );
        assert_eq!(format_utc(t), "2024-02-29T12:34:56.250000Z");
        assert_eq!(parse_utc(&format_utc(t)), Ok(t));
        assert!(parse_utc("2024-02-29T12:34:56").is_err(), "UTC only");
        assert!(parse_utc("2024-13-01T00:00:00Z").is_err());
        assert!(parse_utc("yesterday").is_err());
    }

    #[test]
    fn a_start_in_the_past_is_refused() {
        let now = parse_utc("2026-01-01T00:00:00Z").unwrap();
        let e = WorkerSpec::new("1/2", "2025-12-31T23:59:00Z", now).unwrap_err();
        assert!(e.contains("60.0 s in the past"), "{e}");
        assert!(WorkerSpec::new("1/2", "2026-01-03T00:00:00Z", now).is_err());
        let w = WorkerSpec::new("2/2", "2026-01-01T00:01:00Z", now).unwrap();
        assert_eq!(w.start_unix_us, now + 60_000_000);
    }

    /// Every producer or consumer index belongs to exactly one worker.
    #[test]
    fn shares_partition_the_workload() {
        for n in 1..6u32 {
            let shares: Vec<Share> = (1..=n)
                .map(|i| {
                    WorkerSpec {
                        index: i,
                        count: n,
                        start_unix_us: 0,
                    }
                    .share(0)
                })
                .collect();
            for k in 0..20 {
                assert_eq!(shares.iter().filter(|s| s.owns(k)).count(), 1);
            }
        }
    }
}
