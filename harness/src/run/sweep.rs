//! The `run` command: every point of the sweep, `repeat` times, against one
//! target, with a progress bar; Ctrl-C stops the current point cleanly and
//! what was measured is still written.

use super::point::{self, LoadOutcome, LoadSpec, Prepared};
use super::result::{PointHists, PointResult};
use crate::client::admin;
use crate::client::conn::Connection;
use crate::measure::hist::Percentiles;
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
    pub bootstrap: Option<SocketAddr>,
    /// Overrides every point's test duration; warm-up is capped at a fifth.
    pub duration: Option<Duration>,
    pub out: PathBuf,
    pub threads: usize,
    pub pin: bool,
    pub progress: bool,
}

impl RunOptions {
    /// One unpinned generator thread and no progress bar, writing under
    /// `out`: the setting for tests and scripted runs.
    pub fn quiet(out: PathBuf, bootstrap: Option<SocketAddr>) -> RunOptions {
        RunOptions {
            bootstrap,
            duration: None,
            out,
            threads: 1,
            pin: false,
            progress: false,
        }
    }
}

/// Max-rate search: an unpaced probe, then open-loop checks stepping down
/// 10% at a time until the rate is sustained (≥ 95% acknowledged, no errors).
const SEARCH_STEPS: u32 = 4;
const SUSTAINED: f64 = 0.95;

pub fn run_workload(f: &WorkloadFile, o: &RunOptions) -> Result<PathBuf, String> {
    let interrupt = Arc::new(AtomicBool::new(false));
    {
        let i = interrupt.clone();
        // A second handler cannot be installed (tests, repeated calls); the
        // first one keeps working.
        let _ = ctrlc::set_handler(move || i.store(true, Ordering::Relaxed));
    }
    let target = match o.bootstrap {
        Some(a) => Target::Remote(a),
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

fn broker_count(bootstrap: SocketAddr) -> Result<usize, String> {
    let mut c =
        Connection::connect(bootstrap, Duration::from_secs(10)).map_err(|e| e.to_string())?;
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
    let bootstrap = t.bootstrap();
    let brokers = broker_count(bootstrap)?;
    f.check_brokers(brokers, "the target cluster")
        .map_err(|e| e.to_string())?;
    let started = SystemTime::now();
    let dir = files::run_dir(&o.out, &f.name, started);
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
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
    for (i, (p, repeat)) in runs.iter().enumerate() {
        if interrupt.load(Ordering::Relaxed) {
            break;
        }
        let w = with_duration(&p.workload, o.duration);
        bar.set_message(format!("point {}/{}: {}", i + 1, runs.len(), p.label()));
        let tag = format!(
            "sluice-bench-{}-{}-{}-{}",
            files::slug(&f.name),
            std::process::id(),
            p.index,
            repeat
        );
        let prepared = point::prepare(bootstrap, &w, &tag)
            .map_err(|e| format!("point `{}`: {e}", p.label()))?;
        let base = done_s;
        let mut tick = |s: f64| bar.set_position((base + s).min(total_s) as u64);
        let measured = measure_point(&prepared, &w, o, interrupt, &mut tick);
        point::cleanup(&prepared);
        let (out, max_rate) = measured.map_err(|e| format!("point `{}`: {e}", p.label()))?;
        done_s += (w.test_duration + w.warmup_duration).as_secs_f64();
        let r = summarize(p, *repeat, &w, out.0, max_rate);
        files::write_point(&dir, &r, &out.1).map_err(|e| format!("writing point files: {e}"))?;
        results.push(r);
        hists.push(out.1);
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
    };
    write_report(&dir, &run, &hists)?;
    Ok(dir)
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

type Measured = ((LoadOutcome, PointHists), Option<f64>);

fn measure_point(
    p: &Prepared,
    w: &Workload,
    o: &RunOptions,
    interrupt: &AtomicBool,
    tick: &mut dyn FnMut(f64),
) -> Result<Measured, String> {
    let spec = |rate: f64, warmup: Duration, test: Duration| LoadSpec {
        rate,
        warmup,
        test,
        consumers: w.subscriptions_per_topic > 0,
        backlog_bytes: w.backlog_bytes,
        threads: o.threads,
        pin: o.pin,
        seed: 0x5EED,
    };
    let mut rate = w.producer_rate;
    let mut found = None;
    if rate == 0.0 {
        let probe = (w.test_duration / 4).clamp(Duration::from_secs(2), Duration::from_secs(10));
        let mut s = spec(0.0, Duration::ZERO, probe);
        s.backlog_bytes = 0;
        let out = point::run_load(p, w, &s, interrupt, &mut |_| {}).map_err(|e| e.to_string())?;
        let max = out.produce.messages as f64 / out.window_s.max(1e-9);
        if max <= 0.0 && !interrupt.load(Ordering::Relaxed) {
            // Running on would measure an unpaced load again and report it
            // as a paced one.
            let why = out
                .errors
                .first()
                .map_or(String::new(), |e| format!(": {e}"));
            return Err(format!(
                "the max-rate probe got no message acknowledged in {:.1} s{why}",
                out.window_s
            ));
        }
        rate = max;
        for step in 0..SEARCH_STEPS {
            let candidate = max * (1.0 - 0.1 * f64::from(step));
            let mut s = spec(candidate, Duration::ZERO, probe);
            s.backlog_bytes = 0;
            let out =
                point::run_load(p, w, &s, interrupt, &mut |_| {}).map_err(|e| e.to_string())?;
            rate = candidate;
            let achieved = out.produce.messages as f64 / out.window_s.max(1e-9);
            if achieved >= SUSTAINED * candidate && out.produce.errors == 0 {
                break;
            }
        }
        found = Some(rate);
    }
    let out = point::run_load(
        p,
        w,
        &spec(rate, w.warmup_duration, w.test_duration),
        interrupt,
        tick,
    )
    .map_err(|e| e.to_string())?;
    let hists = out.hists.clone();
    Ok(((out, hists), found))
}

fn summarize(
    p: &Point,
    repeat: u32,
    w: &Workload,
    out: LoadOutcome,
    max_rate: Option<f64>,
) -> PointResult {
    let win = out.window_s.max(1e-9);
    let mut samples = out.errors.clone();
    samples.dedup();
    samples.truncate(20);
    PointResult {
        index: p.index,
        repeat,
        label: p.label(),
        settings: p.settings.clone(),
        target_rate: w.producer_rate,
        max_rate_found: max_rate,
        window_s: out.window_s,
        publish_rate_msgs: out.produce.messages as f64 / win,
        publish_rate_mb: out.produce.bytes as f64 / 1e6 / win,
        consume_rate_msgs: out.consume.messages as f64 / win,
        consume_rate_mb: out.consume.bytes as f64 / 1e6 / win,
        publish_latency: Percentiles::of(&out.produce.latency),
        publish_delay: Percentiles::of(&out.produce.delay),
        end_to_end: Percentiles::of(&out.consume.latency),
        errors: out.produce.errors + out.consume.errors,
        error_samples: samples,
        backlog: out.backlog,
        consumer_group_settle_s: out.group_settle_s,
        intervals: out.intervals,
        interrupted: out.interrupted,
    }
}

fn write_report(dir: &Path, run: &files::RunJson, hists: &[PointHists]) -> Result<(), String> {
    files::write_run_json(dir, run).map_err(|e| format!("writing run.json: {e}"))?;
    let publish: Vec<_> = hists.iter().map(|h| h.publish.clone()).collect();
    let chart_set = charts::standard(&run.points, &publish);
    let (svgs, note) = match charts::write_all(dir, &chart_set) {
        Ok(s) => (s, None),
        Err(e) => (Vec::new(), Some(e)),
    };
    let page = html::render(run, &svgs, note.as_deref());
    std::fs::write(dir.join("report.html"), page).map_err(|e| format!("writing report.html: {e}"))
}
