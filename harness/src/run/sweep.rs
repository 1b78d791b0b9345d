//! The `run` command: every point of the sweep, `repeat` times, against one
//! target, with a progress bar; Ctrl-C stops the current point cleanly and
//! what was measured is still written.

use super::maxrate::{self, Window};
use super::point::{self, LoadOutcome, LoadSpec, Prepared};
use super::result::{
    PointHists, PointResult, PointSecurity, Probe, ProbeKind, RateStep, Sustain, TransactionResult,
};
use super::sustain::judge;
use super::worker::{self, WorkerInfo, WorkerPoint, WorkerSpec};
use crate::client::admin;
use crate::client::conn::Connection;
use crate::client::endpoint::Endpoint;
use crate::client::security::{Security, SecurityProtocol};
use crate::measure::cpu::Watched;
use crate::measure::disk::{self, DiskSync};
use crate::measure::hist::{new_hist, Hist, Percentiles};
use crate::report::terminal::{self, Terminal};
use crate::report::{charts, env::Environment, files, html};
use crate::target::counters::{self, BrokerCounters};
use crate::target::{self, Target};
use crate::workload::security::SecurityFor;
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
    /// Where each point's line goes as it finishes, and in colour or not.
    pub terminal: Terminal,
    /// The broker's software and version as the user names it
    /// (`--target-name`): a broker does not tell it over the protocol.
    pub target_name: Option<String>,
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
            terminal: Terminal::quiet(),
            target_name: None,
        }
    }
}

/// The broker to run against: `--bootstrap`, else the embedded broker when
/// asked for (`--embedded`), else the `--driver` file's
/// `bootstrap.servers`, else the embedded broker. Returns the address and
/// a sentence saying which was chosen and why.
pub fn choose_target(
    bootstrap: Option<&str>,
    embedded: bool,
    f: &WorkloadFile,
) -> Result<(Option<Endpoint>, String), String> {
    if let Some(b) = bootstrap {
        let ep = Endpoint::parse(b).map_err(|e| format!("--bootstrap {e}"))?;
        return Ok((Some(ep), format!("target: {b} (--bootstrap)")));
    }
    match (&f.driver_bootstrap, embedded) {
        (Some(d), false) => {
            let ep = Endpoint::parse(&d.servers)
                .map_err(|e| format!("bootstrap.servers of {}: {e}", d.file.display()))?;
            Ok((
                Some(ep),
                format!(
                    "target: {} (bootstrap.servers of the driver file {}; --embedded runs the embedded broker instead)",
                    d.servers,
                    d.file.display()
                ),
            ))
        }
        (Some(d), true) => Ok((
            None,
            format!(
                "target: the embedded broker (--embedded; the driver file {} names {})",
                d.file.display(),
                d.servers
            ),
        )),
        (None, _) => Ok((None, "target: the embedded broker".to_string())),
    }
}

/// Each max-rate probe's warm-up, before its check window.
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
    if let (None, Some(name)) = (&o.bootstrap, &o.target_name) {
        return Err(format!(
            "--target-name {name}: the embedded broker names itself (sluice {}); \
             --target-name is for a broker given with --bootstrap or a driver file",
            env!("CARGO_PKG_VERSION")
        ));
    }
    for w in &f.warnings {
        eprintln!("warning: {w}");
    }
    check_security_for(f, o.bootstrap.is_none())?;
    // The TLS and SASL listeners only when a point uses them: a plaintext
    // run's broker is as it always was.
    let secured = f.points.iter().any(|p| {
        let w = &p.workload;
        w.producer.security.protocol != SecurityProtocol::Plaintext
            || w.consumer.security.protocol != SecurityProtocol::Plaintext
    });
    let target = match &o.bootstrap {
        Some(a) => Target::Remote(a.clone()),
        // One broker, or a cluster big enough for every point (three at
        // least, as clusters are).
        None => match f.max_replication_factor() as usize {
            0 | 1 => target::start_embedded_secured(1, 1, secured)?,
            rf => target::start_embedded_secured(rf.max(3), 1, secured)?,
        },
    };
    let result = run_on(f, o, &target, &interrupt);
    target.stop();
    result
}

/// Refuses points whose security was resolved for another broker than the
/// one this run targets: trust and credentials for a `--bootstrap` broker
/// do not open the embedded one's listeners, nor the other way round.
fn check_security_for(f: &WorkloadFile, embedded: bool) -> Result<(), String> {
    let wanted = match embedded {
        true => SecurityFor::Embedded,
        false => SecurityFor::Given,
    };
    if f.security_for == wanted {
        return Ok(());
    }
    let secured = f.points.iter().find(|p| {
        let w = &p.workload;
        w.producer.security.protocol != SecurityProtocol::Plaintext
            || w.consumer.security.protocol != SecurityProtocol::Plaintext
    });
    match secured {
        None => Ok(()),
        Some(p) => Err(format!(
            "{}: point `{}` was resolved for {}, but the run targets {} \
             (load the workload with workload::load_for naming the target)",
            f.path.display(),
            p.label(),
            target_words(f.security_for),
            target_words(wanted)
        )),
    }
}

fn target_words(s: SecurityFor) -> &'static str {
    match s {
        SecurityFor::Given => "a broker given with --bootstrap",
        SecurityFor::Embedded => "the embedded broker",
    }
}

/// The cluster's broker count, and what the broker's ApiVersions answer
/// says of its release.
fn broker_count(bootstrap: &Endpoint, security: &Security) -> Result<(usize, String), String> {
    let mut c = Connection::open(bootstrap, security, Duration::from_secs(10))
        .map_err(|e| e.to_string())?;
    let protocol = c.versions().describe();
    let brokers = admin::metadata(&mut c, Some(&[]))
        .map_err(|e| e.to_string())?
        .brokers
        .len();
    Ok((brokers, protocol))
}

/// How the points' clients connect, each way once, without secrets.
fn security_of(f: &WorkloadFile) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for p in &f.points {
        let w = &p.workload;
        for s in [
            format!("producer {}", w.producer.security.describe()),
            format!("consumer {}", w.consumer.security.describe()),
        ] {
            if !out.contains(&s) {
                out.push(s);
            }
        }
    }
    out
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
    let (brokers, protocol) = broker_count(&t.endpoint_for(first)?, first)?;
    f.check_brokers(brokers, "the target cluster")
        .map_err(|e| e.to_string())?;
    let started = SystemTime::now();
    let dir = match &o.worker {
        Some(w) => w.run_dir(&o.out, &f.name),
        None => files::run_dir(&o.out, &f.name, started),
    };
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let Some(spec) = &o.worker else {
        return run_points(f, o, t, interrupt, &dir, protocol, None).map(|()| dir);
    };
    // Written first, rewritten at the end: a worker that dies still left
    // its index behind for `merge` to report.
    let mut info = WorkerInfo::starting(spec, worker::workload_identity(f, o.duration));
    info.write(&dir)?;
    o.terminal.emit(&format!(
        "worker {} of {}: first point starts at {}; results in {}",
        spec.index,
        spec.count,
        info.start_at_utc,
        dir.display()
    ));
    let result = run_points(f, o, t, interrupt, &dir, protocol, Some(&info));
    info.finished = result.is_ok();
    info.error = result.as_ref().err().cloned();
    info.write(&dir)?;
    result.map(|()| dir)
}

/// Every point of the run, into `dir`; `protocol` is what the broker's
/// ApiVersions said, `worker` set when this process is one worker of
/// several.
fn run_points(
    f: &WorkloadFile,
    o: &RunOptions,
    t: &Target,
    interrupt: &Arc<AtomicBool>,
    dir: &Path,
    protocol: String,
    worker: Option<&WorkerInfo>,
) -> Result<(), String> {
    let started = SystemTime::now();
    let mut env = Environment::capture(&t.describe());
    env.broker_config = t.config();
    env.broker_protocol = Some(protocol);
    env.security = security_of(f);
    env.broker_version = match t {
        Target::Remote(_) => o.target_name.clone(),
        Target::Embedded { .. } => Some(format!("sluice {}", env!("CARGO_PKG_VERSION"))),
    };
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
                let consumers = t.endpoint_for(&w.consumer.security)?;
                point::prepare_topics(bootstrap, &w, &tag, o.worker.is_some())
                    .map(|p| point::Prepared {
                        consumer_bootstrap: consumers,
                        ..p
                    })
                    .map_err(|e| e.to_string())
            })
            .map_err(|e| format!("point `{}`: {e}", p.label()))?;
        let metrics = t.metrics();
        let counters_before =
            counters::scrape_all(&metrics).map_err(|e| format!("point `{}`: {e}", p.label()))?;
        let base = done_s;
        let mut tick = |s: f64| bar.set_position((base + s).min(total_s) as u64);
        let share = o
            .worker
            .zip(point_start_us)
            .map(|(spec, at)| spec.share(at));
        let measured = measure_point(&prepared, &w, o, t, interrupt, share, &mut tick);
        let broker_counters = point_counters(&metrics, &counters_before);
        // Other workers may still read a worker's topics: they stay.
        if o.worker.is_none() {
            point::cleanup(&prepared);
        }
        let measured = measured.map_err(|e| format!("point `{}`: {e}", p.label()))?;
        let broker_counters = broker_counters.map_err(|e| format!("point `{}`: {e}", p.label()))?;
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
        let mut r = summarize(p, *repeat, &w, target_rate, measured);
        r.broker_counters = broker_counters;
        files::write_point(dir, &r, &point_hists)
            .map_err(|e| format!("writing point files: {e}"))?;
        if let Some(wp) = worker_point {
            wp.write(dir, &files::point_stem(&r))?;
        }
        bar.suspend(|| o.terminal.emit(&terminal::point_line(&r, o.terminal.color)));
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
        warnings: f.warnings.clone(),
        points: results,
        worker: worker.map(|i| WorkerInfo {
            finished: true,
            ..i.clone()
        }),
        merged_from: None,
    };
    write_report(dir, &run, &hists)
}

/// The embedded brokers' counters since `before`; none for a remote
/// broker (no metrics listeners known).
fn point_counters(
    metrics: &[SocketAddr],
    before: &BrokerCounters,
) -> Result<Option<BrokerCounters>, String> {
    if metrics.is_empty() {
        return Ok(None);
    }
    Ok(Some(counters::scrape_all(metrics)?.since(before)))
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
/// found and every probe and window of the search.
struct Measured {
    out: LoadOutcome,
    hists: PointHists,
    max_rate: Option<f64>,
    max_rate_confirmed: Option<bool>,
    /// In max-rate mode, the rate the measured window asked for.
    window_rate: Option<f64>,
    probes: Vec<Probe>,
    disk: Option<DiskSync>,
}

/// Messages acknowledged in a load's window, per second of it.
fn achieved(out: &LoadOutcome) -> f64 {
    out.produce.done_in_window as f64 / out.window_s.max(1e-9)
}

/// Whether a load kept up with `asked` msg/s: the one verdict of a
/// measured window, for max-rate confirmation and the point's summary.
fn judge_window(out: &LoadOutcome, asked: f64) -> Sustain {
    let failed = out.produce.errors + out.consume.errors;
    judge(
        &out.intervals,
        out.produce.missing,
        failed,
        Some((asked, achieved(out))),
    )
}

/// A max-rate probe: the short load `s` (rate 0: unpaced), judged on its
/// producers alone.
fn probe_at(
    p: &Prepared,
    w: &Workload,
    s: &LoadSpec,
    interrupt: &AtomicBool,
) -> Result<Probe, String> {
    let out = point::run_load(p, w, s, interrupt, &mut |_| {}).map_err(|e| e.to_string())?;
    let rates = (s.rate > 0.0).then_some((s.rate, achieved(&out)));
    let verdict = judge(
        &out.intervals,
        out.produce.missing,
        out.produce.errors,
        rates,
    );
    Ok(Probe {
        kind: ProbeKind::Search,
        rate: s.rate,
        window_s: out.window_s,
        achieved: achieved(&out),
        sustained: s.rate > 0.0 && verdict.sustained,
        why_not: verdict.why_not,
    })
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
        steps: Vec::new(),
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
    // A ramp runs instead of the search, as in OMB.
    let steps = match &w.ramp {
        Some(ramp) => {
            rate = ramp.start_rate;
            ramp.changes(w.test_duration)
        }
        None => Vec::new(),
    };
    // The disk is probed right before and after the measured loads, not
    // during them: a concurrent probe would compete with the broker's syncs.
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
    // The point's measured load at `rate`; in max-rate mode each window
    // tried continues the progress bar where the last one ended.
    let mut elapsed_s = 0.0;
    let mut window = |rate: f64| -> Result<LoadOutcome, String> {
        let mut measured = spec(rate, w.warmup_duration, w.test_duration);
        measured.steps = steps.clone();
        let base = elapsed_s;
        let out = point::run_load(p, w, &measured, interrupt, &mut |s| tick(base + s))
            .map_err(|e| e.to_string())?;
        elapsed_s += (w.warmup_duration + w.test_duration).as_secs_f64();
        Ok(out)
    };
    if rate != 0.0 {
        probe_disk(&mut sync_hist)?;
        let out = window(rate)?;
        probe_disk(&mut sync_hist)?;
        let hists = out.hists.clone();
        return Ok(Measured {
            out,
            hists,
            max_rate: None,
            max_rate_confirmed: None,
            window_rate: None,
            probes: Vec::new(),
            disk: probe_dir.map(|d| DiskSync::of(d, &sync_hist)),
        });
    }
    let probe_s = (w.test_duration / 4).clamp(Duration::from_secs(3), Duration::from_secs(10));
    let probe = |rate: f64| {
        let mut s = spec(rate, PROBE_WARMUP, probe_s);
        s.backlog_bytes = 0;
        probe_at(p, w, &s, interrupt)
    };
    // Backlog mode's window builds a backlog by design and is not judged.
    let judged = w.backlog_bytes == 0;
    let mut disk_probed = false;
    let found = maxrate::find(
        probe,
        |rate| {
            if !disk_probed {
                probe_disk(&mut sync_hist)?;
                disk_probed = true;
            }
            let out = window(rate)?;
            let verdict = judged.then(|| {
                let v = judge_window(&out, rate);
                Probe {
                    kind: ProbeKind::Window,
                    rate,
                    window_s: out.window_s,
                    achieved: achieved(&out),
                    sustained: v.sustained,
                    why_not: v.why_not,
                }
            });
            Ok(Window { verdict, out })
        },
        || interrupt.load(Ordering::Relaxed),
    )?;
    probe_disk(&mut sync_hist)?;
    let hists = found.out.hists.clone();
    Ok(Measured {
        out: found.out,
        hists,
        max_rate: found.rate,
        max_rate_confirmed: found.confirmed,
        window_rate: Some(found.window_rate),
        probes: found.probes,
        disk: probe_dir.map(|d| DiskSync::of(d, &sync_hist)),
    })
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
    // A ramp asks for its mean rate over the window (workers refuse
    // ramps, so this process runs all of it).
    let target_rate = match &w.ramp {
        Some(ramp) => ramp.mean_rate(w.test_duration),
        None => target_rate,
    };
    let rate_steps = match &w.ramp {
        Some(ramp) => std::iter::once(RateStep {
            from_s: 0.0,
            rate: ramp.start_rate,
        })
        .chain(
            ramp.changes(w.test_duration)
                .into_iter()
                .map(|(at, rate)| RateStep {
                    from_s: at.as_secs_f64(),
                    rate,
                }),
        )
        .collect(),
        None => Vec::new(),
    };
    let asked = m.window_rate.unwrap_or(target_rate);
    let sustain = out.backlog.is_none().then(|| judge_window(&out, asked));
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
        max_rate_confirmed: m.max_rate_confirmed,
        max_rate_search: m.probes,
        rate_steps,
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
        security: Some(PointSecurity {
            producer: w.producer.security.describe(),
            consumer: w.consumer.security.describe(),
        }),
        broker_counters: None,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::{parse, DriverTarget};

    #[test]
    fn the_target_is_bootstrap_then_the_driver_file_unless_embedded_is_asked_for() {
        let mut f = parse(Path::new("w.yaml"), "messageSize: 100\n", None).unwrap();
        let (ep, why) = choose_target(None, false, &f).unwrap();
        assert!(ep.is_none() && why.contains("embedded"), "{why}");
        f.driver_bootstrap = Some(DriverTarget {
            file: PathBuf::from("kafka.yaml"),
            servers: "127.0.0.1:9092".to_string(),
        });
        let (ep, why) = choose_target(None, false, &f).unwrap();
        assert_eq!(ep.unwrap().to_string(), "127.0.0.1:9092");
        assert!(
            why.contains("bootstrap.servers of the driver file kafka.yaml"),
            "{why}"
        );
        let (ep, why) = choose_target(None, true, &f).unwrap();
        assert!(ep.is_none() && why.contains("--embedded"), "{why}");
        let (ep, why) = choose_target(Some("127.0.0.1:9093"), false, &f).unwrap();
        assert_eq!(ep.unwrap().to_string(), "127.0.0.1:9093");
        assert!(why.contains("--bootstrap"), "{why}");
    }

    #[test]
    fn the_embedded_broker_refuses_a_target_name() {
        let f = parse(Path::new("w.yaml"), "messageSize: 100\n", None).unwrap();
        let out = tempfile::tempdir().unwrap();
        let mut o = RunOptions::quiet(out.path().to_path_buf(), None);
        o.target_name = Some("kafka 4.1.0".to_string());
        let e = run_workload(&f, &o).unwrap_err();
        assert!(e.contains("--target-name kafka 4.1.0"), "{e}");
        // Refused before anything ran or was written.
        assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
    }
}
