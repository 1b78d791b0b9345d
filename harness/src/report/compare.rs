//! `sluice-bench compare RUN_A RUN_B`: the two runs side by side per sweep
//! point (matched by settings label), with deltas. A delta is marked `*`
//! when the difference of the means is larger than the run-to-run spread
//! (max - min over `repeat` runs) on either side; with a single run per
//! point there is no spread to judge by and the mark is `?`.

use super::files::RunJson;
use crate::measure::cpu::CpuUse;
use crate::run::result::PointResult;
use std::collections::BTreeMap;
use std::fmt::Write;

struct Metric {
    name: &'static str,
    get: fn(&PointResult) -> f64,
    /// Higher is better (rates) or lower is better (latencies).
    higher_better: bool,
}

const METRICS: &[Metric] = &[
    Metric {
        name: "publish msg/s",
        get: |p| p.publish_rate_msgs,
        higher_better: true,
    },
    Metric {
        name: "consume msg/s",
        get: |p| p.consume_rate_msgs,
        higher_better: true,
    },
    Metric {
        name: "publish p50 ms",
        get: |p| p.publish_latency.p50_us as f64 / 1e3,
        higher_better: false,
    },
    Metric {
        name: "publish p99 ms",
        get: |p| p.publish_latency.p99_us as f64 / 1e3,
        higher_better: false,
    },
    Metric {
        name: "publish p99.9 ms",
        get: |p| p.publish_latency.p99_9_us as f64 / 1e3,
        higher_better: false,
    },
    Metric {
        name: "e2e p99 ms",
        get: |p| p.end_to_end.p99_us as f64 / 1e3,
        higher_better: false,
    },
    Metric {
        name: "bare fdatasync p99 ms",
        get: |p| {
            p.disk_sync
                .as_ref()
                .map_or(f64::NAN, |d| d.latency.p99_us as f64 / 1e3)
        },
        higher_better: false,
    },
    Metric {
        name: "errors",
        get: |p| p.errors as f64,
        higher_better: false,
    },
    Metric {
        name: "error rate %",
        get: |p| p.error_rate * 100.0,
        higher_better: false,
    },
    Metric {
        name: "client CPU s/GB",
        get: |p| cpu_figure(p, |c| c.client_cpu_s_per_gb),
        higher_better: false,
    },
    Metric {
        name: "broker CPU s/GB",
        get: |p| cpu_figure(p, |c| c.broker_cpu_s_per_gb),
        higher_better: false,
    },
    Metric {
        name: "client CPU s/M msgs",
        get: |p| cpu_figure(p, |c| c.client_cpu_s_per_million_msgs),
        higher_better: false,
    },
    Metric {
        name: "broker CPU s/M msgs",
        get: |p| cpu_figure(p, |c| c.broker_cpu_s_per_million_msgs),
        higher_better: false,
    },
    Metric {
        name: "broker peak RSS MiB",
        get: |p| {
            p.cpu.as_ref().map_or(f64::NAN, |c| {
                c.processes
                    .iter()
                    .filter(|p| p.broker)
                    .filter_map(|p| p.peak_rss_mib)
                    .fold(f64::NAN, f64::max)
            })
        },
        higher_better: false,
    },
];

/// A CPU figure of a point; NaN (shown as n/a) when it was not measured.
fn cpu_figure(p: &PointResult, get: fn(&CpuUse) -> Option<f64>) -> f64 {
    p.cpu.as_ref().and_then(get).unwrap_or(f64::NAN)
}

fn group(run: &RunJson) -> BTreeMap<String, Vec<&PointResult>> {
    let mut m: BTreeMap<String, Vec<&PointResult>> = BTreeMap::new();
    for p in &run.points {
        m.entry(p.label.clone()).or_default().push(p);
    }
    m
}

/// (mean, spread) of a metric over a point's repeats; spread is None for one run.
fn stats(ps: &[&PointResult], get: fn(&PointResult) -> f64) -> (f64, Option<f64>) {
    let v: Vec<f64> = ps.iter().map(|p| get(p)).collect();
    let mean = v.iter().sum::<f64>() / v.len().max(1) as f64;
    if v.len() < 2 {
        return (mean, None);
    }
    let max = v.iter().cloned().fold(f64::MIN, f64::max);
    let min = v.iter().cloned().fold(f64::MAX, f64::min);
    (mean, Some(max - min))
}

/// Whether a change is beyond noise: `Some(true)` yes, `Some(false)` no,
/// `None` when neither side has repeats.
pub fn significant(
    a_mean: f64,
    a_spread: Option<f64>,
    b_mean: f64,
    b_spread: Option<f64>,
) -> Option<bool> {
    let spread = match (a_spread, b_spread) {
        (None, None) => return None,
        (a, b) => a.unwrap_or(0.0).max(b.unwrap_or(0.0)),
    };
    Some((b_mean - a_mean).abs() > spread)
}

pub fn compare(a: &RunJson, b: &RunJson) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "A: {} {} ({})",
        a.workload_name, a.started_utc, a.environment.target
    );
    let _ = writeln!(
        out,
        "B: {} {} ({})",
        b.workload_name, b.started_utc, b.environment.target
    );
    let _ = writeln!(out, "`*` change beyond the run-to-run spread, `?` no repeats to judge spread, `+`/`-` better/worse\n");
    let ga = group(a);
    let gb = group(b);
    for (label, pa) in &ga {
        let Some(pb) = gb.get(label) else {
            let _ = writeln!(out, "[{label}] only in A");
            continue;
        };
        let _ = writeln!(
            out,
            "[{label}]  (A: {} run(s), B: {} run(s))",
            pa.len(),
            pb.len()
        );
        let _ = writeln!(
            out,
            "  {:<20} {:>14} {:>14} {:>10}",
            "metric", "A", "B", "delta"
        );
        for m in METRICS {
            let (am, asp) = stats(pa, m.get);
            let (bm, bsp) = stats(pb, m.get);
            if am.is_nan() && bm.is_nan() {
                continue;
            }
            let pct = if am.abs() > f64::EPSILON {
                (bm - am) / am * 100.0
            } else {
                0.0
            };
            let mark = match significant(am, asp, bm, bsp) {
                None => "?",
                Some(true) => "*",
                Some(false) => "",
            };
            let better = if (bm > am) == m.higher_better && bm != am {
                "+"
            } else if bm != am {
                "-"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "  {:<20} {:>14.3} {:>14.3} {:>+9.1}% {mark}{better}",
                m.name, am, bm, pct
            );
        }
    }
    for label in gb.keys().filter(|l| !ga.contains_key(*l)) {
        let _ = writeln!(out, "[{label}] only in B");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_decides_significance() {
        assert_eq!(significant(10.0, Some(2.0), 11.0, Some(1.0)), Some(false));
        assert_eq!(significant(10.0, Some(2.0), 13.0, Some(1.0)), Some(true));
        assert_eq!(significant(10.0, None, 13.0, None), None);
    }
}
