//! `sluice cluster`: several brokers on loopback in one command, for
//! development and local benchmarks.
//!
//! ```text
//! sluice cluster [--brokers 3] [--data-dir ./cluster] [--base-port 9092]
//!                [--controller-base-port 9192] [--cores 1] [--override key=value]...
//! ```
//! Broker `i` is node `i`, listens on `base-port + i - 1` and keeps its data
//! in `<data-dir>/broker-<i>` (log in `broker-<i>.log`); the first three
//! (or the only one, with fewer than three) are the controller quorum.
//! SIGTERM or SIGINT stops them all cleanly.

use signal_hook::consts::{SIGINT, SIGTERM};
use sluice_engine::cluster::local::{LocalCluster, LocalClusterSpec};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

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
    /// A config key for every broker: --override min.insync.replicas=2
    #[arg(long = "override", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
}

pub fn run(args: &ClusterArgs) -> ExitCode {
    if args.brokers == 0 || args.cores == 0 {
        eprintln!("sluice cluster: --brokers and --cores must be at least 1");
        return ExitCode::from(2);
    }
    let ports = |base: u16| -> Option<Vec<u16>> {
        (0..args.brokers)
            .map(|i| base.checked_add(u16::try_from(i).ok()?))
            .collect()
    };
    let (Some(ports), Some(controller_ports)) =
        (ports(args.base_port), ports(args.controller_base_port))
    else {
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
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(200));
        if let Some((node, status)) = cluster.exited() {
            eprintln!("sluice cluster: broker {node} exited with {status}");
        }
    }
    cluster.stop_all();
    ExitCode::SUCCESS
}
