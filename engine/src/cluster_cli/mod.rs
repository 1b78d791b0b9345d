//! `sluice cluster`: several brokers on loopback in one command, for
//! development and local benchmarks.
//!
//! ```text
//! sluice cluster [--brokers 3] [--data-dir ./cluster] [--base-port 9092]
//!                [--controller-base-port 9192] [--metrics-base-port PORT] [--cores 1]
//!                [--secure [--internal-base-port 9292]] [--override key=value]...
//! ```
//! Broker `i` is node `i`, listens on `base-port + i - 1` and keeps its data
//! in `<data-dir>/broker-<i>` (log in `broker-<i>.log`); the first three
//! (or the only one, with fewer than three) are the controller quorum.
//! With `--secure` clients use SASL_SSL, brokers replicate and the
//! controller quorum runs on mutual TLS, with certificates and a user made
//! for the run ([`secure`]).
//! SIGTERM or SIGINT stops them all cleanly. A broker that exits on its
//! own (a crash, a kill) is started again after a pause that doubles with
//! each quick exit, from 1 s up to a minute, and the cluster says so.

mod secure;

use signal_hook::consts::{SIGINT, SIGTERM};
use sluice_engine::cluster::local::{LocalCluster, LocalClusterSpec};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct ClusterArgs {
    /// Number of brokers.
    #[arg(long, default_value_t = 3)]
    brokers: usize,
    /// Parent of every broker's data directory.
    #[arg(long, default_value = "./cluster")]
    data_dir: PathBuf,
    /// Client port of broker 1; the others follow.
    #[arg(long, default_value_t = 9092)]
    base_port: u16,
    /// Controller port of broker 1; the others follow.
    #[arg(long, default_value_t = 9192)]
    controller_base_port: u16,
    /// Shards per broker.
    #[arg(long, default_value_t = 1)]
    cores: usize,
    /// Metrics listener (`/metrics`, `/live`, `/ready`) of broker 1; the
    /// others follow. None unless given.
    #[arg(long, value_name = "PORT")]
    metrics_base_port: Option<u16>,
    /// Secure the cluster: clients over SASL_SSL (SCRAM-SHA-512 user
    /// `admin`), replication and the controller quorum over mutual TLS,
    /// with certificates and a password made for the run; prints the
    /// client settings.
    #[arg(long)]
    secure: bool,
    /// With --secure: broker 1's replication (INTERNAL) port; the others
    /// follow.
    #[arg(long, default_value_t = 9292)]
    internal_base_port: u16,
    /// A config key for every broker: --override min.insync.replicas=2
    #[arg(long = "override", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
}

pub fn run(args: &ClusterArgs) -> ExitCode {
    if args.brokers == 0 || args.cores == 0 {
        eprintln!("sluice cluster: --brokers and --cores must be at least 1");
        return ExitCode::from(2);
    }
    let ports_from = |base: u16| -> Option<Vec<u16>> {
        (0..args.brokers)
            .map(|i| base.checked_add(u16::try_from(i).ok()?))
            .collect()
    };
    let (Some(ports), Some(controller_ports)) = (
        ports_from(args.base_port),
        ports_from(args.controller_base_port),
    ) else {
        eprintln!("sluice cluster: ports run past 65535");
        return ExitCode::from(2);
    };
    let binary = match std::env::current_exe() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("sluice cluster: finding the sluice binary: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut spec = LocalClusterSpec::new(binary, args.data_dir.clone(), args.brokers);
    spec.ports = ports;
    spec.controller_ports = controller_ports;
    spec.cores = args.cores;
    spec.overrides = args.overrides.clone();
    let mut secured = None;
    if args.secure {
        let Some(internal) = ports_from(args.internal_base_port) else {
            eprintln!("sluice cluster: internal ports run past 65535");
            return ExitCode::from(2);
        };
        match secure::prepare(&args.data_dir, &spec.ports, &internal) {
            Ok(s) => {
                // The operator's own overrides come last, so they win.
                spec.overrides = s
                    .common
                    .iter()
                    .cloned()
                    .chain(args.overrides.clone())
                    .collect();
                spec.broker_overrides = s.per_broker.clone();
                secured = Some(s);
            }
            Err(e) => {
                eprintln!("sluice cluster: --secure: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    if let Some(base) = args.metrics_base_port {
        let Some(metrics) = ports_from(base) else {
            eprintln!("sluice cluster: metrics ports run past 65535");
            return ExitCode::from(2);
        };
        spec.metrics_ports = metrics;
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [SIGTERM, SIGINT] {
        if let Err(e) = signal_hook::flag::register(sig, Arc::clone(&stop)) {
            eprintln!("sluice cluster: installing signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    }
    let mut cluster = match LocalCluster::start(spec, Duration::from_secs(60)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "sluice cluster: {e} (see the broker logs in {})",
                args.data_dir.display()
            );
            return ExitCode::FAILURE;
        }
    };
    println!(
        "sluice cluster of {} brokers ready: bootstrap.servers={}",
        args.brokers,
        cluster.bootstrap()
    );
    if let Some(s) = &secured {
        println!(
            "client settings (librdkafka names; Java's in {}):\n{}",
            s.client_properties.display(),
            s.client_settings
        );
    }
    let mut restarts = Restarts::new(args.brokers);
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(200));
        let now = Instant::now();
        while let Some((node, status)) = cluster.exited() {
            let pause = restarts.exited(node, now);
            eprintln!(
                "sluice cluster: broker {node} exited with {status}; restarting it in {:.1} s",
                pause.as_secs_f64()
            );
        }
        for node in restarts.due(now) {
            match cluster.respawn(node) {
                Ok(()) => eprintln!("sluice cluster: broker {node} restarted"),
                Err(e) => {
                    let pause = restarts.exited(node, now);
                    eprintln!(
                        "sluice cluster: restarting broker {node} failed: {e}; again in {:.1} s",
                        pause.as_secs_f64()
                    );
                }
            }
        }
    }
    cluster.stop_all();
    ExitCode::SUCCESS
}

/// First pause before restarting a broker that exited.
const RESTART_PAUSE_FIRST: Duration = Duration::from_secs(1);
/// Longest pause: a broker that keeps crashing is retried once a minute.
const RESTART_PAUSE_MAX: Duration = Duration::from_secs(60);
/// A broker that ran this long before exiting starts again from the
/// first pause.
const RESTART_STABLE_AFTER: Duration = Duration::from_secs(60);

/// When each exited broker is due to start again, with a pause that
/// doubles while it keeps exiting soon after each start.
struct Restarts {
    /// Per broker: last (re)start, current pause, and when it is due.
    brokers: Vec<(Instant, Duration, Option<Instant>)>,
}

impl Restarts {
    fn new(brokers: usize) -> Restarts {
        let now = Instant::now();
        Restarts {
            brokers: vec![(now, Duration::ZERO, None); brokers],
        }
    }

    /// Broker `node` exited at `now`: the pause before its restart.
    fn exited(&mut self, node: usize, now: Instant) -> Duration {
        let (started, pause, due) = &mut self.brokers[node - 1];
        *pause = if pause.is_zero() || now.duration_since(*started) >= RESTART_STABLE_AFTER {
            RESTART_PAUSE_FIRST
        } else {
            (*pause * 2).min(RESTART_PAUSE_MAX)
        };
        *due = Some(now + *pause);
        *pause
    }

    /// Brokers due to start now; each is marked started.
    fn due(&mut self, now: Instant) -> Vec<usize> {
        let mut nodes = Vec::new();
        for (i, (started, _, due)) in self.brokers.iter_mut().enumerate() {
            if due.is_some_and(|at| at <= now) {
                *due = None;
                *started = now;
                nodes.push(i + 1);
            }
        }
        nodes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_back_off_while_a_broker_keeps_exiting_and_reset_once_it_runs() {
        let t0 = Instant::now();
        let mut r = Restarts::new(2);
        assert_eq!(r.exited(2, t0), Duration::from_secs(1));
        assert!(r.due(t0).is_empty());
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(r.due(t1), vec![2]);
        // Exits again at once: the pause doubles, up to a minute.
        assert_eq!(r.exited(2, t1), Duration::from_secs(2));
        let mut t = t1;
        for _ in 0..10 {
            t += Duration::from_secs(61);
            r.due(t);
            t += Duration::from_millis(10);
            r.exited(2, t);
        }
        assert_eq!(r.brokers[1].1, RESTART_PAUSE_MAX);
        // Ran for more than a minute: back to the first pause.
        t += RESTART_PAUSE_MAX;
        assert_eq!(r.due(t), vec![2]);
        t += RESTART_STABLE_AFTER;
        assert_eq!(r.exited(2, t), RESTART_PAUSE_FIRST);
        assert!(r.brokers[0].2.is_none());
    }
}
