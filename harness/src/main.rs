//! `sluice-bench`: run, validate and compare benchmark workloads.

use clap::{Parser, Subcommand};
use sluice_harness::client::security::SecurityProtocol;
use sluice_harness::report::{compare, compare_html, files, merge, terminal};
use sluice_harness::run::handshake;
use sluice_harness::run::sweep::{choose_target, run_workload, RunOptions};
use sluice_harness::run::worker::{self, WorkerSpec};
use sluice_harness::workload;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Huge allocations only reserve address space (see `sluice_engine::alloc`).
#[global_allocator]
static ALLOCATOR: sluice_engine::alloc::Allocator = sluice_engine::alloc::Allocator;

#[derive(Parser)]
#[command(
    name = "sluice-bench",
    version,
    about = "Replays YAML workloads against Kafka-compatible brokers and reports latency"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a workload (every sweep point) and write results and a report.
    Run {
        workload: PathBuf,
        /// A Kafka-compatible broker; without it an embedded Sluice broker runs.
        #[arg(long)]
        bootstrap: Option<String>,
        /// Test duration in seconds for every point (overrides the workload).
        #[arg(long)]
        duration: Option<f64>,
        /// Results folder.
        #[arg(long, default_value = "results")]
        out: PathBuf,
        /// An OpenMessaging Benchmark Kafka driver file.
        #[arg(long)]
        driver: Option<PathBuf>,
        /// Load-generator threads (default: one per core).
        #[arg(long)]
        threads: Option<usize>,
        /// Do not pin load generators to cores.
        #[arg(long)]
        no_pin: bool,
        /// Broker processes on this host whose CPU and memory each point
        /// reports (an external broker; embedded ones are found on their own).
        #[arg(long, value_name = "PID[,PID...]", value_delimiter = ',')]
        broker_pid: Vec<u32>,
        /// A directory on the broker's disk (an external broker's log dir
        /// on this host): every point also measures its bare fdatasync
        /// latency, the floor of a durable broker's publish latency.
        #[arg(long, value_name = "DIR")]
        sync_probe: Option<PathBuf>,
        /// Print the run summary as JSON on stdout (progress and point
        /// lines go to stderr).
        #[arg(long)]
        json: bool,
        /// No progress bar, point lines or table.
        #[arg(long)]
        quiet: bool,
        /// The broker's software and version, for run.json and the report
        /// (e.g. "kafka 4.1.0"); a broker does not tell it.
        #[arg(long, value_name = "NAME")]
        target_name: Option<String>,
        /// Run against the embedded broker even when the --driver file
        /// names bootstrap.servers.
        #[arg(long, conflicts_with = "bootstrap")]
        embedded: bool,
        /// Run worker I's share (1-based) of N workers' producers and
        /// consumers; `merge` adds the workers' results (docs/HARNESS.md).
        #[arg(long, value_name = "I/N", requires = "start_at")]
        worker: Option<String>,
        /// The UTC instant every worker starts its load at, e.g.
        /// 2026-05-01T12:30:00Z.
        #[arg(long, value_name = "UTC", requires = "worker")]
        start_at: Option<String>,
    },
    /// Add the results of `run --worker` processes into one run.
    Merge {
        /// Each worker's results folder.
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
        /// The merged run's folder.
        #[arg(long)]
        out: PathBuf,
    },
    /// Parse a workload, expand its sweep and print the points; run nothing.
    Validate {
        workload: PathBuf,
        #[arg(long)]
        driver: Option<PathBuf>,
    },
    /// Print two or more runs side by side with deltas against the first,
    /// and write them as an HTML page with overlaid percentile curves.
    Compare {
        /// Results folders (or their run.json): A, B, C, ...; `DIR1,DIR2`
        /// pools runs of one configuration as repeats.
        #[arg(required = true, num_args = 2..)]
        runs: Vec<PathBuf>,
        /// Where the HTML page is written.
        #[arg(long, value_name = "FILE", default_value = "compare.html")]
        html: PathBuf,
    },
    /// Time new connections to the embedded broker, per security protocol:
    /// TCP connect, TLS handshake, ApiVersions and the SASL exchange.
    Handshake {
        /// Security protocols, measured in interleaved rounds.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "PLAINTEXT,SSL,SASL_PLAINTEXT,SASL_SSL"
        )]
        protocols: Vec<String>,
        /// sasl.mechanism for the SASL protocols.
        #[arg(long, default_value = "SCRAM-SHA-512")]
        mechanism: String,
        /// Connections per protocol per round, opened one after another.
        #[arg(long, default_value_t = 200)]
        connections: usize,
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
    /// One broker of `run`'s embedded cluster, in its own process; it
    /// stops when its standard input closes.
    #[command(hide = true)]
    Broker {
        #[arg(long)]
        listen: String,
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        cores: usize,
        #[arg(long)]
        cpus: Option<String>,
        #[arg(long = "override", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
    },
}

fn main() -> ExitCode {
    // The embedded brokers log through `tracing`: their warnings (a
    // replica leaving the ISR, a failed append) belong next to the figures
    // they may explain. `SLUICE_LOG=info` shows more, as for `sluice`.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn real_main() -> Result<(), String> {
    match Cli::parse().command {
        Command::Validate { workload, driver } => {
            let f = workload::load(&workload, driver.as_deref()).map_err(|e| e.to_string())?;
            print!("{}", workload::describe(&f));
            Ok(())
        }
        Command::Run {
            workload,
            bootstrap,
            duration,
            out,
            driver,
            threads,
            no_pin,
            broker_pid,
            sync_probe,
            worker,
            start_at,
            json,
            quiet,
            target_name,
            embedded,
        } => {
            let worker = match (worker, start_at) {
                (Some(w), Some(at)) => Some(WorkerSpec::new(&w, &at, worker::now_unix_us())?),
                _ => None,
            };
            let f = workload::load_for(&workload, driver.as_deref(), bootstrap.is_some(), embedded)
                .map_err(|e| e.to_string())?;
            let duration = match duration {
                Some(d) if d.is_finite() && d > 0.0 => Some(Duration::from_secs_f64(d)),
                Some(d) => return Err(format!("--duration {d}: must be above 0")),
                None => None,
            };
            if let Some(dir) = sync_probe.as_ref().filter(|d| !d.is_dir()) {
                return Err(format!("--sync-probe {}: not a directory", dir.display()));
            }
            if let Some(pid) = broker_pid
                .iter()
                .find(|p| !std::path::Path::new(&format!("/proc/{p}")).exists())
            {
                return Err(format!("--broker-pid {pid}: no such process on this host"));
            }
            let (bootstrap, choice) = choose_target(bootstrap.as_deref(), embedded, &f)?;
            if !quiet {
                eprintln!("{choice}");
            }
            let term = terminal::Terminal::detect(json, quiet);
            let opts = RunOptions {
                bootstrap,
                duration,
                out,
                threads: threads
                    .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
                pin: !no_pin,
                progress: !quiet,
                broker_pids: broker_pid,
                sync_probe,
                worker,
                terminal: term,
                target_name,
            };
            let dir = run_workload(&f, &opts)?;
            let run = files::read_run_json(&dir)?;
            if json {
                let summary = terminal::summary(&run, &dir);
                let text = serde_json::to_string_pretty(&summary).map_err(|e| e.to_string())?;
                println!("{text}");
            } else if quiet {
                println!("{}", dir.join("report.html").display());
            } else {
                print!("{}", terminal::finish(&run, &dir, term.color));
            }
            Ok(())
        }
        Command::Broker {
            listen,
            data_dir,
            cores,
            cpus,
            overrides,
        } => sluice_harness::target::serve_broker(&sluice_harness::target::BrokerArgs {
            listen,
            data_dir,
            cores,
            cpus,
            overrides,
        }),
        Command::Handshake {
            protocols,
            mechanism,
            connections,
            rounds,
        } => {
            let protocols = protocols
                .iter()
                .map(|p| {
                    SecurityProtocol::parse(p).ok_or_else(|| {
                        format!("--protocols {p}: not PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL")
                    })
                })
                .collect::<Result<Vec<_>, String>>()?;
            let o = handshake::HandshakeOptions {
                protocols,
                mechanism,
                connections,
                rounds,
            };
            let costs = handshake::run(&o)?;
            print!("{}", handshake::table(&costs, &o));
            Ok(())
        }
        Command::Merge { dirs, out } => {
            let merged = merge::merge(&dirs, &out)?;
            for w in merged.workers.iter().filter(|w| w.status != "merged") {
                eprintln!(
                    "warning: worker {} of {}: {}{}",
                    w.index,
                    merged.count,
                    w.status,
                    w.detail
                        .as_deref()
                        .map_or(String::new(), |d| format!(": {d}"))
                );
            }
            println!("results: {}", out.display());
            println!("report:  {}", out.join("report.html").display());
            Ok(())
        }
        Command::Compare { runs, html } => {
            let runs = runs
                .iter()
                .map(|p| compare::load(p))
                .collect::<Result<Vec<_>, _>>()?;
            let matched = compare::match_points(&runs)?;
            print!("{}", compare::compare(&runs, &matched));
            std::fs::write(&html, compare_html::render(&runs, &matched))
                .map_err(|e| format!("writing {}: {e}", html.display()))?;
            println!("report: {}", html.display());
            Ok(())
        }
    }
}
