//! `sluice`: the broker binary.
//!
//! ```text
//! sluice [--config FILE] [--listen HOST:PORT] [--data-dir DIR] [--cores N] [--cpus LIST]
//!        [--override key=value]...
//! ```
//! With no arguments it serves 127.0.0.1:9092 with data in `./data`.
//! SIGTERM or SIGINT stops it cleanly; SIGHUP reloads TLS certificates.
//!
//! ```text
//! sluice groups list|describe GROUP|delete GROUP [--bootstrap HOST:PORT]
//! ```
//! is a client instead: consumer groups, their offsets and lag, from a
//! running cluster. So are
//!
//! ```text
//! sluice topics list|describe|create|delete|alter-config ... [--json]
//! sluice configs describe --topic NAME|--broker ID [--all] [--json]
//! ```
//!
//! ```text
//! sluice cluster [--brokers N] [--data-dir DIR] [--base-port PORT] ...
//! ```
//! runs N brokers on loopback as one cluster. Its modules (`admin_client`,
//! `groups_cli`, `topics_cli`, `cluster_cli`) belong to
//! this binary, not to the broker library.

mod admin_client;
mod cluster_cli;
mod groups_cli;
mod topics_cli;

use clap::{Parser, Subcommand};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use sluice_engine::broker::Broker;
use sluice_engine::config::{BrokerConfig, ConfigError};
use std::path::PathBuf;
use std::process::ExitCode;

/// Huge allocations only reserve address space (see `sluice_engine::alloc`).
#[global_allocator]
static ALLOCATOR: sluice_engine::alloc::Allocator = sluice_engine::alloc::Allocator;

#[derive(Parser, Debug)]
#[command(
    name = "sluice",
    version,
    about = "A Kafka-compatible, thread-per-core broker",
    args_conflicts_with_subcommands = true,
    disable_help_subcommand = true
)]
struct Args {
    /// TOML file with Kafka config keys (dotted keys or quoted names).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to listen on (sets `listeners`).
    #[arg(long, value_name = "HOST:PORT")]
    listen: Option<String>,
    /// Data directory (sets `log.dirs`).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Shards to run, one per core (default: all online CPUs).
    #[arg(long, value_name = "N")]
    cores: Option<usize>,
    /// CPUs to pin the shards to, shard i on the i-th (default: spread over
    /// all online CPUs). As `taskset -c` takes them: 0,2-3
    #[arg(long, value_name = "LIST")]
    cpus: Option<String>,
    /// Any config key, as Kafka's start script takes it: --override flush.messages=1
    #[arg(long = "override", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Without a command, `sluice` runs the broker.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Consumer groups of a running cluster: list, describe (offsets and
    /// lag), delete.
    #[command(subcommand)]
    Groups(groups_cli::GroupsCommand),
    /// Topics of a running cluster: list, describe, create, delete, alter
    /// their configs.
    #[command(subcommand)]
    Topics(topics_cli::TopicsCommand),
    /// Configs of a topic or broker of a running cluster.
    #[command(subcommand)]
    Configs(topics_cli::ConfigsCommand),
    /// Run several brokers on loopback as one cluster (development,
    /// benchmarks).
    Cluster(cluster_cli::ClusterArgs),
}

fn build_config(args: &Args) -> Result<BrokerConfig, ConfigError> {
    let mut config = BrokerConfig::default();
    if let Some(path) = &args.config {
        config.load_file(path)?;
    }
    if let Some(listen) = &args.listen {
        config.set_listen(listen)?;
    }
    if let Some(dir) = &args.data_dir {
        config.set("log.dirs", &dir.display().to_string())?;
    }
    if let Some(cores) = args.cores {
        if cores == 0 {
            return Err(ConfigError::InvalidValue {
                key: "--cores".into(),
                value: "0".into(),
                expected: "a positive number of shards".into(),
            });
        }
        config.cores = cores;
    }
    if let Some(cpus) = &args.cpus {
        config.cpus = Some(sluice_engine::config::parse_cpu_list("--cpus", cpus)?);
    }
    for o in &args.overrides {
        let (k, v) = o.split_once('=').ok_or_else(|| ConfigError::InvalidValue {
            key: "--override".into(),
            value: o.clone(),
            expected: "KEY=VALUE".into(),
        })?;
        config.set(k.trim(), v.trim())?;
    }
    // Topic defaults that are each valid but cannot hold together
    // (`log.cleaner.min.compaction.lag.ms` above the max) stop the start.
    config.topic_config(&Default::default())?;
    Ok(config)
}

/// Sets up logging to stderr: `SLUICE_LOG` filters (`info` by default,
/// `sluice_engine=debug`, ...), `SLUICE_LOG_FORMAT=json` writes one JSON
/// object per line for log collectors, `text` (the default) for people.
fn init_logging() -> Result<(), String> {
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG").unwrap_or_else(|_| "info".into())
    };
    let format = std::env::var("SLUICE_LOG_FORMAT").unwrap_or_default();
    match format.as_str() {
        "json" => tracing_subscriber::fmt()
            .json()
            .with_current_span(false)
            .with_env_filter(filter())
            .with_writer(std::io::stderr)
            .init(),
        "" | "text" => tracing_subscriber::fmt()
            .with_env_filter(filter())
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .init(),
        other => return Err(format!("SLUICE_LOG_FORMAT={other}: expected json or text")),
    }
    Ok(())
}

/// Tells systemd (a `Type=notify` unit) how the broker is doing, when it
/// runs under one: `NOTIFY_SOCKET` names a datagram socket, a leading `@`
/// meaning Linux's abstract namespace.
fn notify_systemd(state: &str) {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let path = path.to_string_lossy().into_owned();
    let addr = match path.strip_prefix('@') {
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes()),
        None => SocketAddr::from_pathname(&path),
    };
    let sent = addr.and_then(|addr| {
        let socket = UnixDatagram::unbound()?;
        socket.send_to_addr(state.as_bytes(), &addr)
    });
    if let Err(e) = sent {
        tracing::warn!(socket = %path, error = %e, "telling systemd {state} failed");
    }
}

/// Raises the soft limit on open files to the hard one, as the JVM does
/// for Kafka: every connection, segment and index is a descriptor, and a
/// shell's usual soft limit (1,024) is reached by a few hundred clients.
fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 || limit.rlim_cur >= limit.rlim_max
        {
            return;
        }
        let before = limit.rlim_cur;
        limit.rlim_cur = limit.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
            tracing::info!(
                from = before,
                to = limit.rlim_max,
                "raised the open files limit"
            );
        }
    }
}

fn main() -> ExitCode {
    if let Err(e) = init_logging() {
        eprintln!("sluice: {e}");
        return ExitCode::from(2);
    }
    let args = Args::parse();
    match &args.command {
        Some(Command::Groups(command)) => return groups_cli::run(command),
        Some(Command::Topics(command)) => return topics_cli::run_topics(command),
        Some(Command::Configs(command)) => return topics_cli::run_configs(command),
        Some(Command::Cluster(cluster)) => return cluster_cli::run(cluster),
        None => {}
    }
    let config = match build_config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sluice: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    raise_open_files_limit();
    let mut signals = match signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sluice: installing signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut broker = match Broker::start(config) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("sluice: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("sluice listening on {}", broker.listen_addr());
    notify_systemd("READY=1");
    for sig in signals.forever() {
        if sig == SIGHUP {
            tracing::info!("SIGHUP: reloading TLS certificates");
            broker.shared().reload_tls();
            continue;
        }
        tracing::info!(signal = sig, "stopping");
        break;
    }
    notify_systemd("STOPPING=1");
    broker.stop();
    match broker.join() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice: stopping: {e}");
            ExitCode::FAILURE
        }
    }
}
