//! The `run` command: every point of the sweep, `repeat` times, against one
//! target, with a progress bar; Ctrl-C stops the current point cleanly and
//! what was measured is still written.

use super::point::{self, LoadOutcome, LoadSpec, Prepared};
use super::result::{PointHists, PointResult, Probe, TransactionResult};
use super::sustain::judge;
use super::worker::{self, WorkerInfo, WorkerPoint, WorkerSpec};
use crate::client::admin;
use crate::client::conn::Connection;
use crate::client::endpoint::Endpoint;
use crate::client::security::Security;
use crate::measure::cpu::Watched;
use crate::measure::disk::{self, DiskSync};
use crate::measure::hist::{new_hist, Hist, Percentiles};
use crate::report::{charts, env::Environment, files, html};
use crate::target::{self, Target};
use crate::workload::{Point, Workload, WorkloadFile};
use indicatif::{ProgressBar, ProgressStyle};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub struct RunOptions {
    /// A broker to run against (`--bootstrap`); `None` starts embedded ones.
    pub bootstrap: Option<Endpoint>,
    /// Overrides every point's test duration; warm-up is capped at a fifth.
    pub duration: Option<Duration>,
    pub out: PathBuf,
    pub threads: usize,
    pub pin: bool,
    pub progress: bool,
    /// Broker processes on this host whose CPU each run accounts for
    /// (`--broker-pid`); embedded brokers are found on their own.
    pub broker_pids: Vec<u32>,
    /// A directory on the broker's disk whose bare `fdatasync` latency
    /// every point measures (`--sync-probe`); the embedded broker's data
    /// directory is probed on its own when the topic flushes per append.
    pub sync_probe: Option<PathBuf>,
    /// Run one worker's share of the workload from an agreed instant
    /// (`--worker I/N --start-at T`).
    pub worker: Option<WorkerSpec>,
}

impl RunOptions {
    /// One unpinned generator thread and no progress bar, writing under
    /// `out`: the setting for tests and scripted runs.
    pub fn quiet(out: PathBuf, bootstrap: Option<SocketAddr>) -> RunOptions {
        RunOptions {
            bootstrap: bootstrap.map(Endpoint::from),
            duration: None,
            out,
            threads: 1,
            pin: false,
            progress: false,
            broker_pids: Vec::new(),
            sync_probe: None,
            worker: None,
        }
    }
}

/// Max-rate search: an unpaced probe gives an upper bound; paced probes,
/// consumers running as in the workload, then bracket the highest rate
/// the system sustains (`sustain.rs`) and bisect until the bracket is
/// within `SEARCH_PRECISION` of its top, in at most `SEARCH_PROBES`.
const SEARCH_PROBES: usize = 12;
const SEARCH_PRECISION: f64 = 0.05;
/// Each paced probe's warm-up, before its check window.
const PROBE_WARMUP: Duration = Duration::from_secs(1);

pub fn run_workload(f: &WorkloadFile, o: &RunOptions) -> Result<PathBuf, String> {
    let interrupt = Arc::new(AtomicBool::new(false));
    {
        let i = interrupt.clone();
        // A second handler cannot be installed (tests, repeated calls); the
        // first one keeps working.
        let _ = ctrlc::set_handler(move || i.store(true, Ordering::Relaxed));
    }
    if let Some(w) = &o.worker {
        if o.bootstrap.is_none() {
            return Err(format!(
                "--worker {}/{}: workers load one broker together; give its --bootstrap \
                 (each worker would start an embedded broker of its own)",
                w.index, w.count
            ));
        }
        worker::check_splittable(f)?;
    }
    let target = match &o.bootstrap {
        Some(a) => Target::Remote(a.clone()),
        // One broker, or a cluster big enough for every point (three at
        // least, as clusters are).
        None => match f.max_replication_factor() as usize {
            0 | 1 => target::start_embedded(1, 1)?,
            rf => target::start_embedded(rf.max(3), 1)?,
        },
    };
    let result = run_on(f, o, &target, &interrupt);
    target.stop();
    result
}

fn broker_count(bootstrap: &Endpoint, security: &Security) -> Result<usize, String> {
    let mut c = Connection::open(bootstrap, security, Duration::from_secs(10))
        .map_err(|e| e.to_string())?;
    Ok(admin::metadata(&mut c, Some(&[]))
        .map_err(|e| e.to_string())?
        .brokers
        .len())
}

fn with_duration(w: &Workload, d: Option<Duration>) -> Workload {
    let mut w = w.clone();
    if let Some(d) = d {
        w.test_duration = d;
        w.warmup_duration = w.warmup_duration.min(d / 5);
    }
    w
}

fn run_on(
    f: &WorkloadFile,
    o: &RunOptions,
    t: &Target,
    interrupt: &Arc<AtomicBool>,
) -> Result<PathBuf, String> {
    let first = &f.points[0].workload.producer.security;
    let brokers = broker_count(&t.endpoint_for(first)?, first)?;
    f.check_brokers(brokers, "the target cluster")
        .map_err(|e| e.to_string())?;
    let started = SystemTime::now();
    let dir = match &o.worker {
        Some(w) => w.run_dir(&o.out, &f.name),
        None => files::run_dir(&o.out, &f.name, started),
    };
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let Some(spec) = &o.worker else {
        return run_points(f, o, t, interrupt, &dir, None).map(|()| dir);
    };
    // Written first, rewritten at the end: a worker that dies still left
    // its index behind for `merge` to report.
    let mut info = WorkerInfo::starting(spec, worker::workload_identity(f, o.duration));
    info.write(&dir)?;
    if o.progress {
        println!(
            "worker {} of {}: first point starts at {}; results in {}",
            spec.index,
            spec.count,
            info.start_at_utc,
            dir.display()
        );
    }
    let result = run_points(f, o, t, interrupt, &dir, Some(&info));
    info.finished = result.is_ok();
    info.error = result.as_ref().err().cloned();
    info.write(&dir)?;
    result.map(|()| dir)
}

/// Every point of the run, into `dir`; `worker` when this process is one
/// worker of several.
fn run_points(
    f: &WorkloadFile,
    o: &RunOptions,
    t: &Target,
    interrupt: &Arc<AtomicBool>,
    dir: &Path,
    worker: Option<&WorkerInfo>,
) -> Result<(), String> {
    let started = SystemTime::now();
    let mut env = Environment::capture(&t.describe());
    env.broker_config = t.config();
    let runs: Vec<(&Point, u32)> = f
        .points
        .iter()
        .flat_map(|p| (0..f.repeat).map(move |r| (p, r)))
        .collect();
    let total_s: f64 = runs
        .iter()
        .map(|(p, _)| {
            let w = with_duration(&p.workload, o.duration);
            (w.test_duration + w.warmup_duration).as_secs_f64()
        })
        .sum();
    let bar = progress_bar(o.progress, total_s);
    let mut results = Vec::new();
    let mut hists = Vec::new();
    let mut done_s = 0.0;
    // A worker's point k starts at the agreed instant plus the points
    // before it, each with `worker::POINT_GAP` after it.
    let mut point_start_us = o.worker.map(|w| w.start_unix_us);
    for (i, (p, repeat)) in runs.iter().enumerate() {
        if interrupt.load(Ordering::Relaxed) {
            break;
        }
        let w = with_duration(&p.workload, o.duration);
        bar.set_message(format!("point {}/{}: {}", i + 1, runs.len(), p.label()));
        let tag = match &o.worker {
            Some(spec) => spec.topic_tag(&f.name, p.index, *repeat),
            None => format!(
                "sluice-bench-{}-{}-{}-{}",
                files::slug(&f.name),
                std::process::id(),
                p.index,
                repeat
            ),
        };
        let prepared = t
            .endpoint_for(&w.producer.security)
            .and_then(|bootstrap| {
                point::prepare_topics(bootstrap, &w, &tag, o.worker.is_some())
                    .map_err(|e| e.to_string())
            })
            .map_err(|e| format!("point `{}`: {e}", p.label()))?;
        let base = done_s;
        let mut tick = |s: f64| bar.set_position((base + s).min(total_s) as u64);
        let share = o
            .worker
            .zip(point_start_us)
            .map(|(spec, at)| spec.share(at));
        let measured = measure_point(&prepared, &w, o, t, interrupt, share, &mut tick);
        // Other workers may still read a worker's topics: they stay.
        if o.worker.is_none() {
            point::cleanup(&prepared);
        }
        let measured = measured.map_err(|e| format!("point `{}`: {e}", p.label()))?;
        done_s += (w.test_duration + w.warmup_duration).as_secs_f64();
        if let Some(at) = point_start_us.as_mut() {
            *at += (w.warmup_duration + w.test_duration + worker::POINT_GAP).as_micros() as i64;
        }
        let point_hists = measured.hists.clone();
        let worker_point = o
            .worker
            .is_some()
            .then(|| WorkerPoint::of(&measured.out, w.subscriptions_per_topic));
        let target_rate = share.map_or(w.producer_rate, |s| worker::rate_share(&w, s));
        let r = summarize(p, *repeat, &w, target_rate, measured);
        files::write_point(dir, &r, &point_hists)
            .map_err(|e| format!("writing point files: {e}"))?;
        if let Some(wp) = worker_point {
            wp.write(dir, &files::point_stem(&r))?;
        }
        if o.progress {
            bar.suspend(|| println!("{}", terminal_line(&r)));
        }
        results.push(r);
        hists.push(point_hists);
    }
    bar.finish_and_clear();
    let run = files::RunJson {
        workload_name: f.name.clone(),
        workload_file: f.path.display().to_string(),
        started_utc: files::utc_stamp(started),
        environment: env,
        workload_yaml: f.text.clone(),
        repeat: f.repeat,
        interrupted: interrupt.load(Ordering::Relaxed),
        points: results,
        worker: worker.map(|i| WorkerInfo {
            finished: true,
            ..i.clone()
        }),
        merged_from: None,
    };
    write_report(dir, &run, &hists)
}

fn progress_bar(show: bool, total_s: f64) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total_s.ceil() as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} s  ETA {eta}  {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// A point's measured load, its histograms, and in max-rate mode the rate
/// found and every probe of the search.
struct Measured {
    out: LoadOutcome,
    hists: PointHists,
    max_rate: Option<f64>,
    probes: Vec<Probe>,
    disk: Option<DiskSync>,
}

fn measure_point(
    p: &Prepared,
    w: &Workload,
    o: &RunOptions,
    target: &Target,
    interrupt: &AtomicBool,
    share: Option<worker::Share>,
    tick: &mut dyn FnMut(f64),
) -> Result<Measured, String> {
    let (mut watched, in_process_broker) = target.watched();
    watched.extend(o.broker_pids.iter().map(|&pid| Watched {
        name: format!("broker pid {pid}"),
        pid,
        broker: true,
    }));
    watched.insert(
        0,
        Watched {
            name: "sluice-bench".into(),
            pid: std::process::id(),
            broker: false,
        },
    );
    let spec = |rate: f64, warmup: Duration, test: Duration| LoadSpec {
        rate,
        warmup,
        test,
        consumers: w.subscriptions_per_topic > 0,
        backlog_bytes: w.backlog_bytes,
        threads: o.threads,
        pin: o.pin,
        seed: 0x5EED,
        watched: watched.clone(),
        in_process_broker,
        share,
    };
    let mut rate = w.producer_rate;
    let mut found = None;
    let mut probes = Vec::new();
    if rate == 0.0 {
        let window = (w.test_duration / 4).clamp(Duration::from_secs(3), Duration::from_secs(10));
        let probe = |rate: f64| -> Result<Probe, String> {
            let mut s = spec(rate, PROBE_WARMUP, window);
            s.backlog_bytes = 0;
            let out =
                point::run_load(p, w, &s, interrupt, &mut |_| {}).map_err(|e| e.to_string())?;
            let achieved = out.produce.done_in_window as f64 / out.window_s.max(1e-9);
            let rates = (rate > 0.0).then_some((rate, achieved));
            let verdict = judge(
                &out.intervals,
                out.produce.missing,
                out.produce.errors,
                rates,
            );
            Ok(Probe {
                rate,
                achieved,
                sustained: rate > 0.0 && verdict.sustained,
                why_not: verdict.why_not,
            })
        };
        let unpaced = probe(0.0)?;
        let max = unpaced.achieved;
        probes.push(unpaced);
        if max <= 0.0 && !interrupt.load(Ordering::Relaxed) {
            // Running on would measure an unpaced load again and report it
            // as a paced one.
            return Err(format!(
                "the max-rate probe got no message acknowledged in {:.1} s",
                window.as_secs_f64()
            ));
        }
        rate = search(
            max,
            |r| {
                let pr = probe(r)?;
                let sustained = pr.sustained;
                probes.push(pr);
                Ok(sustained)
            },
            || interrupt.load(Ordering::Relaxed),
        )?;
        found = Some(rate);
    }
    // The disk is probed right before and after the measured load, not
    // during it: a concurrent probe would compete with the broker's syncs.
    let probe_dir = o.sync_probe.as_deref().or_else(|| {
        disk::flushes_per_append(&w.topic.configs)
            .then(|| target.data_dir())
            .flatten()
    });
    let mut sync_hist = new_hist();
    let probe_disk = |h: &mut Hist| -> Result<(), String> {
        match probe_dir {
            Some(dir) => disk::probe(dir, disk::PROBE_TIME, disk::PROBE_SYNCS, h)
                .map_err(|e| format!("probing fdatasync in {}: {e}", dir.display())),
            None => Ok(()),
        }
    };
    probe_disk(&mut sync_hist)?;
    let out = point::run_load(
        p,
        w,
        &spec(rate, w.warmup_duration, w.test_duration),
        interrupt,
        tick,
    )
    .map_err(|e| e.to_string())?;
    probe_disk(&mut sync_hist)?;
    let hists = out.hists.clone();
    Ok(Measured {
        out,
        hists,
        max_rate: found,
        probes,
        disk: probe_dir.map(|d| DiskSync::of(d, &sync_hist)),
    })
}

/// The highest rate `sustains` accepts, below the unpaced bound `max`:
/// halving until one is sustained, then bisecting. With none sustained
/// after `SEARCH_PROBES`, the lowest tried (the measured run then says it
/// was not sustained).
fn search(
    max: f64,
    mut sustains: impl FnMut(f64) -> Result<bool, String>,
    interrupted: impl Fn() -> bool,
) -> Result<f64, String> {
    let (mut lo, mut hi) = (None::<f64>, None::<f64>);
    let mut candidate = max;
    for _ in 0..SEARCH_PROBES {
        if interrupted() {
            break;
        }
        if sustains(candidate)? {
            lo = Some(candidate);
        } else {
            hi = Some(candidate);
        }
        candidate = match (lo, hi) {
            // Sustained at the unpaced bound: nothing above to look for.
            (Some(l), None) => return Ok(l),
            (None, Some(h)) => h / 2.0,
            (Some(l), Some(h)) if (h - l) / h <= SEARCH_PRECISION => return Ok(l),
            (Some(l), Some(h)) => (l + h) / 2.0,
            (None, None) => unreachable!("every probe sets a bound"),
        };
    }
    Ok(lo.unwrap_or(candidate * 2.0))
}

/// A point's summary; `target_rate` is the rate this process was asked
/// for (a worker's share of the workload's).
fn summarize(p: &Point, repeat: u32, w: &Workload, target_rate: f64, m: Measured) -> PointResult {
    let out = m.out;
    let win = out.window_s.max(1e-9);
    let mut samples = out.errors.clone();
    samples.dedup();
    samples.truncate(20);
    let errors = out.produce.errors + out.consume.errors;
    let attempted = out.produce.messages + out.produce.errors + out.produce.missing;
    let asked = m.max_rate.unwrap_or(target_rate);
    let rates = Some((asked, out.produce.done_in_window as f64 / win));
    let sustain =
        (out.backlog.is_none()).then(|| judge(&out.intervals, out.produce.missing, errors, rates));
    let mut by_cause = out.produce.errors_by_cause.clone();
    for (cause, n) in &out.consume.errors_by_cause {
        *by_cause.entry(cause.clone()).or_default() += n;
    }
    PointResult {
        index: p.index,
        repeat,
        label: p.label(),
        settings: p.settings.clone(),
        target_rate,
        max_rate_found: m.max_rate,
        max_rate_search: m.probes,
        warmup_s: out.warmup_s,
        window_s: out.window_s,
        publish_rate_msgs: out.produce.done_in_window as f64 / win,
        publish_rate_mb: out.produce.done_bytes_in_window as f64 / 1e6 / win,
        consume_rate_msgs: out.consume.done_in_window as f64 / win,
        consume_rate_mb: out.consume.done_bytes_in_window as f64 / 1e6 / win,
        publish_latency: Percentiles::of(&out.produce.latency),
        publish_delay: Percentiles::of(&out.produce.delay),
        end_to_end: Percentiles::of(&out.consume.latency),
        end_to_end_start: e2e_start(out.consume.timestamp_starts, out.consume.messages),
        sent: out.sent,
        unsent: out.produce.missing,
        unconsumed: out.unconsumed,
        unconsumed_by_subscription: out.unconsumed_by_subscription,
        errors,
        error_rate: out.produce.errors as f64 / attempted.max(1) as f64,
        errors_by_cause: by_cause,
        error_samples: samples,
        sustain,
        backlog: out.backlog,
        consumer_group_settle_s: out.group_settle_s,
        intervals: out.intervals,
        interrupted: out.interrupted,
        cpu: Some(out.cpu),
        transactions: w.producer.transactional().then(|| TransactionResult {
            messages_per_transaction: w.producer.transaction_messages,
            committed: out.produce.transactions,
            aborted: out.produce.transactions_aborted,
            rate_per_s: out.produce.transactions_done_in_window as f64 / win,
            commit_latency: Percentiles::of(&out.produce.commit),
            begin_to_commit: Percentiles::of(&out.produce.transaction),
        }),
        disk_sync: m.disk,
    }
}

/// Where end-to-end latency starts for a point: the intended send time the
/// producer wrote into the first 8 bytes of each value, or, for values
/// shorter than that, the record's timestamp.
fn e2e_start(from_timestamp: u64, consumed: u64) -> String {
    let value = "the intended send time in the value's first 8 bytes (µs)";
    match from_timestamp {
        0 => value.to_string(),
        n => format!(
            "{value}; for {n} of {consumed} messages (values under 8 bytes) the record timestamp: \
             ms resolution (up to 1 ms high), and the broker's clock under LogAppendTime"
        ),
    }
}

/// `run.json`, charts and `report.html` of a run whose point files are
/// written.
pub fn write_report(dir: &Path, run: &files::RunJson, hists: &[PointHists]) -> Result<(), String> {
    files::write_run_json(dir, run).map_err(|e| format!("writing run.json: {e}"))?;
    let publish: Vec<_> = hists.iter().map(|h| h.publish.clone()).collect();
    let chart_set = charts::standard(&run.points, &publish);
    let note = charts::write_all(dir, &chart_set).err();
    let page = html::render(run, &chart_set, note.as_deref());
    std::fs::write(dir.join("report.html"), page).map_err(|e| format!("writing report.html: {e}"))
}

/// One point's figures for the terminal: rates, latency, failures and
/// whether the load was sustained.
pub fn terminal_line(r: &PointResult) -> String {
    let mut line = format!(
        "point {} `{}`: publish {:.0} msg/s ({:.1} MB/s), p50 {:.2} ms p99 {:.2} ms; consume {:.0} msg/s",
        r.index,
        r.label,
        r.publish_rate_msgs,
        r.publish_rate_mb,
        r.publish_latency.p50_us as f64 / 1e3,
        r.publish_latency.p99_us as f64 / 1e3,
        r.consume_rate_msgs,
    );
    if let Some(found) = r.max_rate_found {
        line.push_str(&format!("; max rate found {found:.0} msg/s"));
    }
    if let Some(t) = &r.transactions {
        line.push_str(&format!(
            "; transactional, {} messages per transaction: {:.1} commits/s, commit p50 {:.2} ms p99 {:.2} ms, {} aborted",
            t.messages_per_transaction,
            t.rate_per_s,
            t.commit_latency.p50_us as f64 / 1e3,
            t.commit_latency.p99_us as f64 / 1e3,
            t.aborted
        ));
    }
    if r.errors > 0 || r.unsent > 0 || r.unconsumed > 0 {
        line.push_str(&format!(
            "; failed {} ({:.3}%), unsent {}, unconsumed {}",
            r.errors,
            r.error_rate * 100.0,
            r.unsent,
            r.unconsumed
        ));
    }
    if let Some(cpu) = &r.cpu {
        let per_gb = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.2}"));
        line.push_str(&format!(
            "; CPU s/GB client {} broker {}",
            per_gb(cpu.client_cpu_s_per_gb),
            per_gb(cpu.broker_cpu_s_per_gb)
        ));
    }
    if let Some(d) = &r.disk_sync {
        line.push_str(&format!(
            "; bare fdatasync p50 {:.2} ms p99 {:.2} ms (publish p99 {:.1}x)",
            d.latency.p50_us as f64 / 1e3,
            d.latency.p99_us as f64 / 1e3,
            r.publish_latency.p99_us as f64 / d.latency.p99_us.max(1) as f64
        ));
    }
    if let Some(s) = r.sustain.as_ref().filter(|s| !s.sustained) {
        line.push_str(&format!("\n  UNSUSTAINED: {}", s.why_not.join("; ")));
    }
    line
}
