//! `merge`: the results of `run --worker I/N` processes (`run/worker.rs`)
//! added into one run, written as any run is (`run.json`, `.hgrm`, `.hlog`,
//! charts, `report.html`).
//!
//! HdrHistograms add exactly, so the merged percentiles are those of every
//! message of every worker, not an average of percentiles: each worker
//! writes its histograms losslessly beside its points. Counts and rates
//! add. Unconsumed messages are counted only here, from every worker's
//! acknowledgements per topic and every worker's consumption per
//! subscription. Client CPU adds over the workers; a broker's CPU, which
//! every worker on its host reads alike, is taken from the lowest-numbered
//! worker that watched one. A worker that is missing, failed, or never
//! finished is listed in the merged run and its report, never dropped
//! silently.

use super::files::{self, RunJson};
use crate::measure::cpu::{Cpu, CpuUse, ProcessCpu};
use crate::measure::hist::{new_hist, Hist, Percentiles, HIGHEST_US};
use crate::run::result::{IntervalRow, PointHists, PointResult, TransactionResult};
use crate::run::sustain::judge;
use crate::run::sweep::write_report;
use crate::run::worker::{unb64, MergedFrom, WorkerInfo, WorkerOutcome, WorkerPoint};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Error samples kept in a merged point, as in a worker's.
const ERROR_SAMPLES_MAX: usize = 20;

/// Merges the workers' folders `dirs` into `out`; returns what became of
/// each worker. Refuses folders of different runs and duplicate workers.
pub fn merge(dirs: &[PathBuf], out: &Path) -> Result<MergedFrom, String> {
    let found: Vec<(PathBuf, WorkerInfo)> = dirs
        .iter()
        .map(|d| WorkerInfo::read(d).map(|i| (d.clone(), i)))
        .collect::<Result<_, _>>()?;
    check_one_run(&found)?;
    let first = &found[0].1;
    let count = first.count;
    let mut outcomes = Vec::new();
    let mut runs: Vec<(u32, PathBuf, RunJson)> = Vec::new();
    for index in 1..=count {
        let Some((dir, info)) = found.iter().find(|(_, i)| i.index == index) else {
            outcomes.push(outcome(
                index,
                None,
                None,
                "missing",
                Some("no folder given"),
            ));
            continue;
        };
        let (status, detail) = match (&info.error, info.finished) {
            (Some(e), _) => ("failed", Some(e.clone())),
            (None, false) => (
                "unfinished",
                Some("no results: the worker was killed or is still running".to_string()),
            ),
            (None, true) => match files::read_run_json(dir) {
                Ok(run) => {
                    let status = if run.interrupted {
                        "interrupted"
                    } else {
                        "merged"
                    };
                    runs.push((index, dir.clone(), run));
                    (status, None)
                }
                Err(e) => ("failed", Some(format!("unreadable results: {e}"))),
            },
        };
        outcomes.push(outcome(
            index,
            Some(dir),
            info.host.clone(),
            status,
            detail.as_deref(),
        ));
    }
    let merged_from = MergedFrom {
        count,
        start_at_utc: first.start_at_utc.clone(),
        workload_sha256: first.workload_sha256.clone(),
        complete: outcomes.iter().all(|o| o.status == "merged"),
        workers: outcomes,
    };
    if runs.is_empty() {
        return Err(format!(
            "no worker's results to merge: {}",
            describe(&merged_from.workers)
        ));
    }
    let (run, hists) = merge_runs(&runs, merged_from.clone())?;
    std::fs::create_dir_all(out).map_err(|e| format!("creating {}: {e}", out.display()))?;
    for (p, h) in run.points.iter().zip(&hists) {
        files::write_point(out, p, h).map_err(|e| format!("writing point files: {e}"))?;
    }
    write_report(out, &run, &hists)?;
    mark_report(out, &merged_from)?;
    Ok(merged_from)
}

fn outcome(
    index: u32,
    dir: Option<&PathBuf>,
    host: Option<String>,
    status: &str,
    detail: Option<&str>,
) -> WorkerOutcome {
    WorkerOutcome {
        index,
        folder: dir.map(|d| d.display().to_string()),
        host,
        status: status.to_string(),
        detail: detail.map(str::to_string),
    }
}

fn outcome_text(o: &WorkerOutcome) -> String {
    format!(
        "worker {} {}{}",
        o.index,
        o.status,
        o.detail
            .as_deref()
            .map_or(String::new(), |d| format!(" ({d})"))
    )
}

fn describe(workers: &[WorkerOutcome]) -> String {
    workers
        .iter()
        .map(outcome_text)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Every folder is a worker of the same run (workload, N, start) and no
/// worker comes twice.
fn check_one_run(found: &[(PathBuf, WorkerInfo)]) -> Result<(), String> {
    let Some((d0, w0)) = found.first() else {
        return Err("merge needs at least one worker's folder".to_string());
    };
    for (d, w) in &found[1..] {
        let (a, b) = (d0.display(), d.display());
        if w.workload_sha256 != w0.workload_sha256 {
            return Err(format!(
                "{a} and {b} ran different workloads (identity {} and {}): merge only the workers of one run",
                &w0.workload_sha256[..12.min(w0.workload_sha256.len())],
                &w.workload_sha256[..12.min(w.workload_sha256.len())]
            ));
        }
        if w.count != w0.count {
            return Err(format!(
                "{a} is worker {} of {} but {b} is worker {} of {}: workers of one run agree on N",
                w0.index, w0.count, w.index, w.count
            ));
        }
        if w.start_at_unix_us != w0.start_at_unix_us {
            return Err(format!(
                "{a} started at {} but {b} at {}: workers of one run share --start-at",
                w0.start_at_utc, w.start_at_utc
            ));
        }
    }
    for (i, (d, w)) in found.iter().enumerate() {
        if let Some((e, _)) = found[..i].iter().find(|(_, v)| v.index == w.index) {
            return Err(format!(
                "{} and {} are both worker {} of {}: each worker's share may be counted once",
                e.display(),
                d.display(),
                w.index,
                w.count
            ));
        }
    }
    Ok(())
}

/// One worker's part of a point.
struct Part<'a> {
    worker: u32,
    point: &'a PointResult,
    extra: WorkerPoint,
}

fn merge_runs(
    runs: &[(u32, PathBuf, RunJson)],
    merged_from: MergedFrom,
) -> Result<(RunJson, Vec<PointHists>), String> {
    // Points in the order the first worker to hold them ran them.
    let mut order: Vec<(usize, u32)> = Vec::new();
    for (_, _, run) in runs {
        for p in &run.points {
            if !order.contains(&(p.index, p.repeat)) {
                order.push((p.index, p.repeat));
            }
        }
    }
    let mut points = Vec::new();
    let mut hists = Vec::new();
    for key in order {
        let mut parts = Vec::new();
        for (worker, dir, run) in runs {
            let Some(p) = run.points.iter().find(|p| (p.index, p.repeat) == key) else {
                continue;
            };
            let extra = WorkerPoint::read(dir, &files::point_stem(p))?;
            parts.push(Part {
                worker: *worker,
                point: p,
                extra,
            });
        }
        let (p, h) = merge_point(&parts)?;
        points.push(p);
        hists.push(h);
    }
    let first = &runs[0].2;
    let run = RunJson {
        workload_name: first.workload_name.clone(),
        workload_file: first.workload_file.clone(),
        started_utc: first.started_utc.clone(),
        environment: first.environment.clone(),
        workload_yaml: first.workload_yaml.clone(),
        repeat: first.repeat,
        interrupted: runs.iter().any(|(_, _, r)| r.interrupted),
        points,
        warnings: first.warnings.clone(),
        worker: None,
        merged_from: Some(merged_from),
    };
    Ok((run, hists))
}

/// The workers' histograms of one point, added.
struct Added {
    publish: Hist,
    delay: Hist,
    e2e: Hist,
    commit: Hist,
    transaction: Hist,
    /// second → (publish, end-to-end)
    intervals: BTreeMap<u64, (Option<Hist>, Option<Hist>)>,
}

fn add_into(acc: &mut Hist, encoded: &str, worker: u32) -> Result<(), String> {
    let h = unb64(encoded).map_err(|e| format!("worker {worker}: {e}"))?;
    acc.add(&h)
        .map_err(|e| format!("worker {worker}: adding a histogram: {e:?}"))
}

fn add_slot(slot: &mut Option<Hist>, encoded: Option<&String>, worker: u32) -> Result<(), String> {
    if let Some(e) = encoded {
        add_into(slot.get_or_insert_with(new_hist), e, worker)?;
    }
    Ok(())
}

fn add_hists(parts: &[Part]) -> Result<Added, String> {
    let mut a = Added {
        publish: new_hist(),
        delay: new_hist(),
        e2e: new_hist(),
        commit: new_hist(),
        transaction: new_hist(),
        intervals: BTreeMap::new(),
    };
    for part in parts {
        let (x, w) = (&part.extra, part.worker);
        add_into(&mut a.publish, &x.publish, w)?;
        add_into(&mut a.delay, &x.delay, w)?;
        add_into(&mut a.e2e, &x.e2e, w)?;
        add_into(&mut a.commit, &x.commit, w)?;
        add_into(&mut a.transaction, &x.transaction, w)?;
        for (s, publish, e2e) in &x.intervals {
            let slot = a.intervals.entry(*s).or_default();
            add_slot(&mut slot.0, publish.as_ref(), w)?;
            add_slot(&mut slot.1, e2e.as_ref(), w)?;
        }
    }
    Ok(a)
}

/// Messages acknowledged per topic over every worker, less those read,
/// per subscription (`topic/index`) of every topic.
fn unconsumed(parts: &[Part]) -> BTreeMap<String, u64> {
    let mut acked: BTreeMap<String, u64> = BTreeMap::new();
    let mut consumed: BTreeMap<String, u64> = BTreeMap::new();
    let mut subscriptions = 0;
    for part in parts {
        subscriptions = subscriptions.max(part.extra.subscriptions);
        for (t, n) in &part.extra.acknowledged_by_topic {
            *acked.entry(t.clone()).or_default() += n;
        }
        for (s, n) in &part.extra.consumed_by_subscription {
            *consumed.entry(s.clone()).or_default() += n;
        }
    }
    let mut out = BTreeMap::new();
    for (topic, n) in &acked {
        for sub in 0..subscriptions {
            let key = format!("{topic}/{sub}");
            let read = consumed.get(&key).copied().unwrap_or(0);
            out.insert(key, n.saturating_sub(read));
        }
    }
    out
}

fn merge_point(parts: &[Part]) -> Result<(PointResult, PointHists), String> {
    let first = parts[0].point;
    let mut added = add_hists(parts)?;
    let unconsumed_by_subscription = unconsumed(parts);
    let unconsumed: u64 = unconsumed_by_subscription.values().sum();
    // As in one process: an unconsumed message's end-to-end latency was at
    // least the drain's length.
    let drain_us = parts.iter().map(|p| p.extra.drain_us).max().unwrap_or(0);
    let _ = added
        .e2e
        .record_n(drain_us.clamp(1, HIGHEST_US), unconsumed);
    let sum = |f: fn(&PointResult) -> f64| parts.iter().map(|p| f(p.point)).sum::<f64>();
    let count = |f: fn(&PointResult) -> u64| parts.iter().map(|p| f(p.point)).sum::<u64>();
    let window_s = parts.iter().map(|p| p.point.window_s).fold(0.0, f64::max);
    let rows = merge_rows(parts, &added);
    let target_rate = sum(|p| p.target_rate);
    let publish_rate_msgs = sum(|p| p.publish_rate_msgs);
    let unsent = count(|p| p.unsent);
    let errors = count(|p| p.errors);
    let attempted: u64 = parts.iter().map(|p| p.extra.produce_attempted).sum();
    let produce_errors: u64 = parts.iter().map(|p| p.extra.produce_errors).sum();
    let mut errors_by_cause: BTreeMap<String, u64> = BTreeMap::new();
    let mut error_samples = Vec::new();
    for part in parts {
        for (c, n) in &part.point.errors_by_cause {
            *errors_by_cause.entry(c.clone()).or_default() += n;
        }
        for s in &part.point.error_samples {
            error_samples.push(format!("worker {}: {s}", part.worker));
        }
    }
    error_samples.truncate(ERROR_SAMPLES_MAX);
    let sustain = Some(judge(
        &rows,
        unsent,
        errors,
        Some((target_rate, publish_rate_msgs)),
    ));
    let merged = PointResult {
        index: first.index,
        repeat: first.repeat,
        label: first.label.clone(),
        settings: first.settings.clone(),
        target_rate,
        max_rate_found: None,
        max_rate_confirmed: None,
        max_rate_search: Vec::new(),
        rate_steps: Vec::new(),
        warmup_s: first.warmup_s,
        window_s,
        publish_rate_msgs,
        publish_rate_mb: sum(|p| p.publish_rate_mb),
        consume_rate_msgs: sum(|p| p.consume_rate_msgs),
        consume_rate_mb: sum(|p| p.consume_rate_mb),
        publish_latency: Percentiles::of(&added.publish),
        publish_delay: Percentiles::of(&added.delay),
        end_to_end: Percentiles::of(&added.e2e),
        end_to_end_start: first.end_to_end_start.clone(),
        sent: count(|p| p.sent),
        unsent,
        unconsumed,
        unconsumed_by_subscription,
        errors,
        error_rate: produce_errors as f64 / attempted.max(1) as f64,
        errors_by_cause,
        error_samples,
        sustain,
        backlog: None,
        consumer_group_settle_s: parts
            .iter()
            .filter_map(|p| p.point.consumer_group_settle_s)
            .reduce(f64::max),
        intervals: rows,
        interrupted: parts.iter().any(|p| p.point.interrupted),
        cpu: merge_cpu(parts),
        transactions: merge_transactions(parts, &added),
        disk_sync: parts.iter().find_map(|p| p.point.disk_sync.clone()),
        security: first.security.clone(),
        // Workers load a remote broker, whose counters are not read.
        broker_counters: None,
    };
    let hists = PointHists {
        publish: added.publish,
        delay: added.delay,
        e2e: added.e2e,
        commit: added.commit,
        intervals: added
            .intervals
            .into_iter()
            .map(|(s, (p, e))| (s, p, e))
            .collect(),
        start_unix_us: parts[0].extra.start_unix_us,
    };
    Ok((merged, hists))
}

/// Per second of the load (every worker's second 0 is the agreed start):
/// counts add, p99s are of the added histograms, the backlog is every
/// worker's acknowledgements times subscriptions less every worker's reads.
fn merge_rows(parts: &[Part], added: &Added) -> Vec<IntervalRow> {
    let mut by_second: BTreeMap<u64, IntervalRow> = BTreeMap::new();
    for part in parts {
        for r in &part.point.intervals {
            let m = by_second.entry(r.second).or_insert_with(|| IntervalRow {
                second: r.second,
                phase: r.phase,
                publish_msgs: 0,
                publish_p99_us: 0,
                producer_lag_max_us: 0,
                consume_msgs: 0,
                e2e_p99_us: 0,
                backlog_msgs: None,
                errors: 0,
            });
            m.publish_msgs += r.publish_msgs;
            m.consume_msgs += r.consume_msgs;
            m.errors += r.errors;
            m.producer_lag_max_us = m.producer_lag_max_us.max(r.producer_lag_max_us);
        }
    }
    let subscriptions = u64::from(
        parts
            .iter()
            .map(|p| p.extra.subscriptions)
            .max()
            .unwrap_or(0),
    );
    let consumers = subscriptions > 0;
    let (mut acked, mut consumed) = (0u64, 0u64);
    let p99 = |h: Option<&Hist>| h.map_or(0, |h| h.value_at_quantile(0.99));
    by_second
        .into_values()
        .map(|mut r| {
            acked += r.publish_msgs;
            consumed += r.consume_msgs;
            let slot = added.intervals.get(&r.second);
            r.publish_p99_us = p99(slot.and_then(|s| s.0.as_ref()));
            r.e2e_p99_us = p99(slot.and_then(|s| s.1.as_ref()));
            r.backlog_msgs = consumers.then(|| (acked * subscriptions).saturating_sub(consumed));
            r
        })
        .collect()
}

fn add_cpu(a: Cpu, b: Cpu) -> Cpu {
    Cpu {
        user_s: a.user_s + b.user_s,
        system_s: a.system_s + b.system_s,
    }
}

/// Client CPU adds over the workers; broker CPU is the lowest-numbered
/// watching worker's (each worker on the broker's host reads the same
/// processes).
fn merge_cpu(parts: &[Part]) -> Option<CpuUse> {
    let cpus: Vec<(u32, &CpuUse)> = parts
        .iter()
        .filter_map(|p| p.point.cpu.as_ref().map(|c| (p.worker, c)))
        .collect();
    if cpus.is_empty() {
        return None;
    }
    let mut processes: Vec<ProcessCpu> = Vec::new();
    let mut harness_threads: BTreeMap<String, Cpu> = BTreeMap::new();
    for (worker, c) in &cpus {
        for p in c.processes.iter().filter(|p| !p.broker) {
            processes.push(ProcessCpu {
                name: format!("worker {worker}: {}", p.name),
                ..p.clone()
            });
        }
        for (k, v) in &c.harness_threads {
            let e = harness_threads.entry(k.clone()).or_default();
            *e = add_cpu(*e, *v);
        }
    }
    let broker = cpus.iter().find(|(_, c)| c.broker_cpu_s.is_some());
    if let Some((worker, c)) = broker {
        for p in c.processes.iter().filter(|p| p.broker) {
            processes.push(ProcessCpu {
                name: format!("{} (read by worker {worker})", p.name),
                ..p.clone()
            });
        }
    }
    let client_cpu_s: f64 = cpus.iter().map(|(_, c)| c.client_cpu_s).sum();
    let broker_cpu_s = broker.and_then(|(_, c)| c.broker_cpu_s);
    let bytes: f64 = parts
        .iter()
        .map(|p| p.point.publish_rate_mb * 1e6 * p.point.window_s)
        .sum();
    let msgs: f64 = parts
        .iter()
        .map(|p| p.point.publish_rate_msgs * p.point.window_s)
        .sum();
    let per = |cpu: f64, amount: f64, unit: f64| (amount >= 1.0).then(|| cpu / (amount / unit));
    Some(CpuUse {
        processes,
        harness_threads,
        client_cpu_s,
        broker_cpu_s,
        client_cpu_s_per_gb: per(client_cpu_s, bytes, 1e9),
        client_cpu_s_per_million_msgs: per(client_cpu_s, msgs, 1e6),
        broker_cpu_s_per_gb: broker_cpu_s.and_then(|c| per(c, bytes, 1e9)),
        broker_cpu_s_per_million_msgs: broker_cpu_s.and_then(|c| per(c, msgs, 1e6)),
    })
}

fn merge_transactions(parts: &[Part], added: &Added) -> Option<TransactionResult> {
    let txs: Vec<&TransactionResult> = parts
        .iter()
        .filter_map(|p| p.point.transactions.as_ref())
        .collect();
    let first = txs.first()?;
    Some(TransactionResult {
        messages_per_transaction: first.messages_per_transaction,
        committed: txs.iter().map(|t| t.committed).sum(),
        aborted: txs.iter().map(|t| t.aborted).sum(),
        rate_per_s: txs.iter().map(|t| t.rate_per_s).sum(),
        commit_latency: Percentiles::of(&added.commit),
        begin_to_commit: Percentiles::of(&added.transaction),
    })
}

/// Puts which workers the run adds up, and which it lacks, at the top of
/// its report.
fn mark_report(out: &Path, m: &MergedFrom) -> Result<(), String> {
    let file = out.join("report.html");
    let page =
        std::fs::read_to_string(&file).map_err(|e| format!("reading {}: {e}", file.display()))?;
    let mut rows = String::new();
    for w in &m.workers {
        let esc = |s: &str| {
            s.replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
        };
        rows.push_str(&format!(
            "<tr><td>{}</td><td class=l>{}</td><td class=l>{}</td><td class=l>{}</td><td class=l>{}</td></tr>",
            w.index,
            if w.status == "merged" {
                w.status.clone()
            } else {
                format!("<b>{}</b>", esc(&w.status))
            },
            esc(w.host.as_deref().unwrap_or("")),
            esc(w.folder.as_deref().unwrap_or("")),
            esc(w.detail.as_deref().unwrap_or(""))
        ));
    }
    let verdict = if m.complete {
        format!("all {} workers' results added", m.count)
    } else {
        let lacking: Vec<String> = m
            .workers
            .iter()
            .filter(|w| w.status != "merged")
            .map(|w| format!("worker {} {}", w.index, w.status))
            .collect();
        format!(
            "<b>INCOMPLETE: {}</b>; the figures below lack their share",
            lacking.join(", ")
        )
    };
    let section = format!(
        "<h2>Workers</h2><p>Merged from {} workers started at {}: {verdict}.</p>\
<table><tr><th>worker</th><th>status</th><th>host</th><th>folder</th><th>detail</th></tr>{rows}</table>",
        m.count, m.start_at_utc
    );
    let page = match page.find("<body>") {
        Some(at) => {
            let at = at + "<body>".len();
            format!("{}{section}{}", &page[..at], &page[at..])
        }
        None => format!("{section}{page}"),
    };
    std::fs::write(&file, page).map_err(|e| format!("writing {}: {e}", file.display()))
}
