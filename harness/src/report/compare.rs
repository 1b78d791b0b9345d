//! `sluice-bench compare RUN_A RUN_B [RUN_C ...]`: runs side by side per
//! sweep point, with deltas against run A, as text here and as an HTML
//! page (`compare_html.rs`).
//!
//! Points are matched by their sweep settings (keys in their canonical
//! form, so `acks` and `producer.acks` are one setting; a file without a
//! sweep has the one point `base`). Every run must share at least one point
//! with run A, or the comparison is refused with the settings that differ.
//! A side may pool several folders of one configuration (`DIR1,DIR2`):
//! their points are repeats of each other.
//!
//! A delta is marked `*` when the difference of the means is larger than
//! the run-to-run spread (max - min over `repeat` runs) on either side;
//! with a single run per point on both sides there is no spread to judge
//! by and the mark is `?`.

use super::files::{self, RunJson};
use crate::measure::cpu::CpuUse;
use crate::run::result::PointResult;
use crate::workload::raw::scalar_to_string;
use crate::workload::sweep::{classify, Target};
use serde_yaml::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// One side of the comparison: a results folder, or several folders of
/// one configuration pooled as repeats (`DIR1,DIR2` on the command line).
pub struct Run {
    /// Each folder and its `run.json`, in the order given; never empty.
    pub parts: Vec<Part>,
}

/// One results folder.
pub struct Part {
    /// The folder holding `run.json` and the `.hgrm` files.
    pub dir: PathBuf,
    pub json: RunJson,
}

/// A point of a side, with the folder its files are in.
#[derive(Clone, Copy)]
pub struct Pt<'a> {
    pub dir: &'a Path,
    pub p: &'a PointResult,
}

impl Run {
    /// The first folder's run: its workload and environment are those of
    /// every folder of the side.
    pub fn json(&self) -> &RunJson {
        &self.parts[0].json
    }

    /// The folders, comma-separated.
    pub fn dirs(&self) -> String {
        self.parts
            .iter()
            .map(|p| p.dir.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn points(&self) -> impl Iterator<Item = Pt<'_>> {
        self.parts.iter().flat_map(|part| {
            part.json
                .points
                .iter()
                .map(move |p| Pt { dir: &part.dir, p })
        })
    }
}

/// Reads a side: a results folder or its `run.json`, or several of them
/// separated by commas, which must be runs of one configuration (the same
/// workload settings, target, broker and commit).
pub fn load(arg: &Path) -> Result<Run, String> {
    let text = arg.to_string_lossy();
    let paths: Vec<PathBuf> = if arg.exists() || !text.contains(',') {
        vec![arg.to_path_buf()]
    } else {
        text.split(',').map(PathBuf::from).collect()
    };
    let mut parts = Vec::with_capacity(paths.len());
    for path in &paths {
        let json = files::read_run_json(path)?;
        let dir = if path.is_dir() {
            path.clone()
        } else {
            path.parent().map(Path::to_path_buf).unwrap_or_default()
        };
        parts.push(Part { dir, json });
    }
    for part in &parts[1..] {
        let differ = configuration_differences(&parts[0].json, &part.json);
        if !differ.is_empty() {
            return Err(format!(
                "{} and {} are pooled as repeats but are not runs of one configuration: they differ in {}",
                parts[0].dir.display(),
                part.dir.display(),
                differ.join(", ")
            ));
        }
    }
    Ok(Run { parts })
}

/// What makes two runs different configurations: workload settings, the
/// target, the broker's version and the commit. An embedded broker's
/// addresses and data directory are picked afresh for every run, so its
/// target counts without them and its settings are not compared.
fn configuration_differences(a: &RunJson, b: &RunJson) -> Vec<String> {
    let mut out: Vec<String> = differing_settings(&[a, b])
        .into_iter()
        .map(|(k, v)| format!("{k} ({} against {})", v[0], v[1]))
        .collect();
    let (ea, eb) = (&a.environment, &b.environment);
    let target = |t: &str| -> String {
        match t.split_once(" at ") {
            Some((kind, _)) if t.starts_with("embedded") => kind.to_string(),
            _ => t.to_string(),
        }
    };
    if target(&ea.target) != target(&eb.target) {
        out.push(format!("target ({} against {})", ea.target, eb.target));
    }
    if ea.broker_version != eb.broker_version {
        out.push("broker version".into());
    }
    if ea.git_commit != eb.git_commit {
        out.push("git commit".into());
    }
    out
}

/// A, B, C, ... for the runs in command-line order.
pub fn letter(i: usize) -> String {
    match u8::try_from(i) {
        Ok(n) if n < 26 => char::from(b'A' + n).to_string(),
        _ => format!("R{}", i + 1),
    }
}

/// A point's identity: its sweep settings, canonical keys, sorted.
pub type Key = Vec<(String, String)>;

/// `acks` → `producer.acks`; top-level fields stay as they are.
fn canonical(key: &str) -> String {
    match classify(key) {
        Ok(Target::Top(name)) => name,
        Ok(Target::Block(block, prop)) => format!("{block}.{prop}"),
        Ok(Target::Clients(prop)) => prop,
        Err(_) => key.to_string(),
    }
}

pub fn key_of(p: &PointResult) -> Key {
    let mut k: Key = p
        .settings
        .iter()
        .map(|(k, v)| (canonical(k), v.clone()))
        .collect();
    k.sort();
    k
}

/// One point and its results on every side (index = side), repeats in
/// order.
pub struct Matched<'a> {
    pub label: String,
    pub key: Key,
    pub runs: Vec<Vec<Pt<'a>>>,
}

/// Points of all runs matched by settings: A's in its order, then points
/// A lacks. Refused when a run has no point in common with A.
pub fn match_points(runs: &[Run]) -> Result<Vec<Matched<'_>>, String> {
    assert!(runs.len() >= 2, "compare needs two runs");
    let mut out: Vec<Matched> = Vec::new();
    let mut index: HashMap<Key, usize> = HashMap::new();
    for (r, run) in runs.iter().enumerate() {
        for pt in run.points() {
            let p = pt.p;
            let key = key_of(p);
            let i = *index.entry(key.clone()).or_insert_with(|| {
                out.push(Matched {
                    label: p.label.clone(),
                    key,
                    runs: vec![Vec::new(); runs.len()],
                });
                out.len() - 1
            });
            out[i].runs[r].push(pt);
        }
    }
    for r in 1..runs.len() {
        if !out
            .iter()
            .any(|m| !m.runs[0].is_empty() && !m.runs[r].is_empty())
        {
            return Err(no_common(runs, r));
        }
    }
    Ok(out)
}

/// Why run `r` cannot be compared with run A: both point lists and the
/// settings whose values differ.
fn no_common(runs: &[Run], r: usize) -> String {
    let labels = |run: &Run| {
        let mut seen = BTreeSet::new();
        run.points()
            .filter(|pt| seen.insert(pt.p.label.clone()))
            .map(|pt| format!("`{}`", pt.p.label))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let b = letter(r);
    let differ = differing_settings(&[runs[0].json(), runs[r].json()]);
    let differ = if differ.is_empty() {
        "none found in the workload files".to_string()
    } else {
        differ
            .iter()
            .map(|(k, vals)| format!("{k} (A: {}; {b}: {})", vals[0], vals[1]))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "no point in common between run A ({}) and run {b} ({}): points are matched by their sweep settings, \
and A has {} while {b} has {}; the settings that differ: {differ}",
        runs[0].dirs(),
        runs[r].dirs(),
        labels(&runs[0]),
        labels(&runs[r]),
    )
}

/// Every setting of a run's points: the workload file's fields flattened
/// (`producer.linger.ms`), with swept settings replaced by the values the
/// sweep took. `name` and `sweep` themselves are left out.
pub fn effective_settings(run: &RunJson) -> BTreeMap<String, BTreeSet<String>> {
    let mut out = BTreeMap::new();
    if let Ok(Value::Mapping(m)) = serde_yaml::from_str::<Value>(&run.workload_yaml) {
        for (k, v) in &m {
            let Some(k) = scalar_to_string(k) else {
                continue;
            };
            if k != "sweep" && k != "name" {
                flatten(&k, v, &mut out);
            }
        }
    }
    let mut swept: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for p in &run.points {
        for (k, v) in key_of(p) {
            swept.entry(k).or_default().insert(v);
        }
    }
    out.extend(swept);
    out
}

fn flatten(key: &str, v: &Value, out: &mut BTreeMap<String, BTreeSet<String>>) {
    match v {
        Value::Mapping(m) => {
            for (k, v) in m {
                if let Some(k) = scalar_to_string(k) {
                    flatten(&format!("{key}.{k}"), v, out);
                }
            }
        }
        Value::Tagged(t) => flatten(key, &t.value, out),
        other => {
            let text = scalar_to_string(other)
                .or_else(|| serde_json::to_string(other).ok())
                .unwrap_or_default();
            out.insert(key.to_string(), BTreeSet::from([text]));
        }
    }
}

/// Settings whose values are not the same in every run: (setting, the
/// values per run as text, `not set` where a run lacks it).
pub fn differing_settings(runs: &[&RunJson]) -> Vec<(String, Vec<String>)> {
    let maps: Vec<_> = runs.iter().map(|r| effective_settings(r)).collect();
    let keys: BTreeSet<&String> = maps.iter().flat_map(|m| m.keys()).collect();
    keys.into_iter()
        .filter(|k| maps.iter().any(|m| m.get(*k) != maps[0].get(*k)))
        .map(|k| {
            let vals = maps
                .iter()
                .map(|m| {
                    m.get(k).map_or("not set".to_string(), |v| {
                        v.iter().cloned().collect::<Vec<_>>().join(", ")
                    })
                })
                .collect();
            (k.clone(), vals)
        })
        .collect()
}

pub struct Metric {
    pub name: &'static str,
    pub get: fn(&PointResult) -> f64,
    /// Higher is better (rates) or lower is better (latencies).
    pub higher_better: bool,
}

pub const METRICS: &[Metric] = &[
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

/// (mean, spread) of a metric over a point's repeats; spread is None for
/// one run. None when the run lacks the point.
pub fn stats(ps: &[Pt], get: fn(&PointResult) -> f64) -> Option<(f64, Option<f64>)> {
    if ps.is_empty() {
        return None;
    }
    let v: Vec<f64> = ps.iter().map(|pt| get(pt.p)).collect();
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    if v.len() < 2 {
        return Some((mean, None));
    }
    let max = v.iter().cloned().fold(f64::MIN, f64::max);
    let min = v.iter().cloned().fold(f64::MAX, f64::min);
    Some((mean, Some(max - min)))
}

/// A run's change against run A in one metric.
pub struct Delta {
    /// Percent of A's mean (0 when A's mean is 0).
    pub pct: f64,
    /// Beyond the spread (`Some(true)`), within it, or no repeats (`None`).
    pub significant: Option<bool>,
    /// Better (`Some(true)`), worse, or unchanged (`None`).
    pub better: Option<bool>,
}

impl Delta {
    pub fn of(m: &Metric, a: (f64, Option<f64>), b: (f64, Option<f64>)) -> Delta {
        let ((am, asp), (bm, bsp)) = (a, b);
        let pct = if am.abs() > f64::EPSILON {
            (bm - am) / am * 100.0
        } else {
            0.0
        };
        let changed = bm != am && !(am.is_nan() && bm.is_nan());
        Delta {
            pct,
            significant: significant(am, asp, bm, bsp),
            better: changed.then_some((bm > am) == m.higher_better),
        }
    }

    /// `*`/`?` and `+`/`-`, as the text report marks it.
    pub fn marks(&self) -> String {
        let mut s = String::new();
        s.push_str(match self.significant {
            None => "?",
            Some(true) => "*",
            Some(false) => "",
        });
        s.push_str(match self.better {
            Some(true) => "+",
            Some(false) => "-",
            None => "",
        });
        s
    }
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

/// The text report: each run's header, then per point every metric with
/// each run's mean and its delta against A.
pub fn compare(runs: &[Run], matched: &[Matched]) -> String {
    let mut out = String::new();
    for (i, r) in runs.iter().enumerate() {
        let started: Vec<&str> = r
            .parts
            .iter()
            .map(|p| p.json.started_utc.as_str())
            .collect();
        let _ = writeln!(
            out,
            "{}: {} {} ({}) {}",
            letter(i),
            r.json().workload_name,
            started.join(", "),
            r.json().environment.target,
            r.dirs()
        );
    }
    let _ = writeln!(out, "deltas against A; `*` change beyond the run-to-run spread, `?` no repeats to judge spread, `+`/`-` better/worse\n");
    for m in matched {
        let present: Vec<String> = (0..runs.len())
            .filter(|&r| !m.runs[r].is_empty())
            .map(|r| format!("{} {} run(s)", letter(r), m.runs[r].len()))
            .collect();
        let _ = writeln!(out, "[{}]  ({})", m.label, present.join(", "));
        let mut head = format!("  {:<22} {:>14}", "metric", "A");
        for r in 1..runs.len() {
            let _ = write!(head, " {:>14} {:>11}", letter(r), format!("Δ{}", letter(r)));
        }
        let _ = writeln!(out, "{head}");
        for metric in METRICS {
            let cells: Vec<_> = m.runs.iter().map(|ps| stats(ps, metric.get)).collect();
            if cells.iter().flatten().all(|(mean, _)| mean.is_nan()) {
                continue;
            }
            let value = |c: &Option<(f64, Option<f64>)>| {
                c.map_or("-".to_string(), |(mean, _)| format!("{mean:.3}"))
            };
            let mut line = format!("  {:<22} {:>14}", metric.name, value(&cells[0]));
            for c in &cells[1..] {
                let delta = match (cells[0], *c) {
                    (Some(a), Some(b)) => {
                        let d = Delta::of(metric, a, b);
                        format!("{:>+9.1}% {:<2}", d.pct, d.marks())
                    }
                    _ => "n/a".to_string(),
                };
                let _ = write!(line, " {:>14} {:>11}", value(c), delta);
            }
            let _ = writeln!(out, "{}", line.trim_end());
        }
    }
    let differ = differing_settings(&runs.iter().map(Run::json).collect::<Vec<_>>());
    if !differ.is_empty() {
        let _ = writeln!(out, "\nworkload settings that differ:");
        for (k, vals) in differ {
            let per_run: Vec<String> = vals
                .iter()
                .enumerate()
                .map(|(i, v)| format!("{}: {v}", letter(i)))
                .collect();
            let _ = writeln!(out, "  {k}  ({})", per_run.join("; "));
        }
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

    fn run(yaml: &str) -> RunJson {
        RunJson {
            workload_name: "w".into(),
            workload_file: "w.yaml".into(),
            started_utc: "2026-01-01T00-00-00Z".into(),
            environment: Default::default(),
            workload_yaml: yaml.into(),
            repeat: 1,
            interrupted: false,
            points: Vec::new(),
            warnings: Vec::new(),
            worker: None,
            merged_from: None,
        }
    }

    #[test]
    fn differing_settings_are_named_with_each_runs_value() {
        let a = run("name: a\nmessageSize: 100\nproducer:\n  acks: all\n  linger.ms: 1\n");
        let b = run("name: b\nmessageSize: 1024\nproducer:\n  acks: all\n");
        let d = differing_settings(&[&a, &b]);
        assert_eq!(
            d,
            vec![
                (
                    "messageSize".to_string(),
                    vec!["100".to_string(), "1024".to_string()]
                ),
                (
                    "producer.linger.ms".to_string(),
                    vec!["1".to_string(), "not set".to_string()]
                ),
            ]
        );
        assert!(differing_settings(&[&a, &a]).is_empty());
    }

    #[test]
    fn sweep_keys_match_in_canonical_form() {
        assert_eq!(canonical("acks"), "producer.acks");
        assert_eq!(canonical("producer.acks"), "producer.acks");
        assert_eq!(canonical("messageSize"), "messageSize");
        assert_eq!(letter(0), "A");
        assert_eq!(letter(2), "C");
        assert_eq!(letter(26), "R27");
    }
}
