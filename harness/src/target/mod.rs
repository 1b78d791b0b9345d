//! The broker under test: an address given with `--bootstrap`, or an
//! embedded Sluice cluster (one broker, or three when a point replicates)
//! on free loopback ports with a temporary data directory, stopped after
//! the run.
//!
//! The embedded brokers listen on PLAINTEXT and, when a point asks for
//! another protocol, on SSL, SASL_PLAINTEXT and SASL_SSL too, with the
//! certificates and the SASL user of `client::security::local`; each point's
//! clients connect to the listener of their `security.protocol`. Every
//! embedded broker also serves its metrics on a loopback port, so a run
//! records what the broker's own counters saw over each point
//! ([`counters`]).
//!
//! Each embedded broker runs in a process of its own (`sluice-bench broker`,
//! a hidden subcommand), as deployed brokers do. In one process, every
//! executor that goes to sleep issues a process-wide memory barrier
//! (`membarrier`, glommio's cross-executor wake protocol) that interrupts
//! every CPU running any of the process's threads: the other brokers and
//! the load generator itself. Where no `sluice-bench` executable is known
//! (the library used from elsewhere) the brokers run in-process.

pub mod counters;

use crate::client::endpoint::Endpoint;
use crate::client::security::{local, Security, SecurityProtocol};
use crate::measure::cpu::Watched;
use sluice_engine::cluster::local::free_ports;
use sluice_engine::config::BrokerConfig;
use sluice_engine::embedded::EmbeddedBroker;
use std::io::{BufRead, Read, Write};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

/// How long an embedded broker may take to listen.
const START_DEADLINE: Duration = Duration::from_secs(60);
/// How long a stopping broker process may take before it is killed.
const STOP_DEADLINE: Duration = Duration::from_secs(30);

static BROKER_PROGRAM: OnceLock<PathBuf> = OnceLock::new();

/// The `sluice-bench` executable that runs embedded brokers (`broker`
/// subcommand); by default this process's own executable when it is
/// `sluice-bench`. Tests of the library point it at the built binary.
pub fn set_broker_program(path: &Path) {
    let _ = BROKER_PROGRAM.set(path.to_path_buf());
}

fn broker_program() -> Option<PathBuf> {
    if let Some(p) = BROKER_PROGRAM.get() {
        return Some(p.clone());
    }
    let exe = std::env::current_exe().ok()?;
    let name = exe.file_name()?.to_str()?;
    name.starts_with("sluice-bench").then_some(exe)
}

pub enum Target {
    /// A broker given with `--bootstrap`: the workload's security settings
    /// must match its listener.
    Remote(Endpoint),
    Embedded {
        brokers: Vec<Node>,
        /// Each broker's ports, as `brokers`.
        ports: Vec<BrokerPorts>,
        /// Kept so the data directory lives as long as the broker.
        dir: tempfile::TempDir,
        /// The broker key store, while the brokers listen on TLS.
        _keystore_dir: Option<tempfile::TempDir>,
        config: Vec<(String, String)>,
    },
}

/// One embedded broker's loopback ports.
#[derive(Clone, Debug)]
pub struct BrokerPorts {
    pub plaintext: u16,
    /// SSL, SASL_PLAINTEXT and SASL_SSL, when the run asked for them.
    pub secured: Option<SecuredPorts>,
    /// Its metrics listener (`GET /metrics`).
    pub metrics: u16,
}

#[derive(Clone, Copy, Debug)]
pub struct SecuredPorts {
    pub ssl: u16,
    pub sasl_plaintext: u16,
    pub sasl_ssl: u16,
}

impl BrokerPorts {
    /// The port of `protocol`'s listener, if the broker has one.
    pub fn port(&self, protocol: SecurityProtocol) -> Option<u16> {
        match (protocol, &self.secured) {
            (SecurityProtocol::Plaintext, _) => Some(self.plaintext),
            (_, None) => None,
            (SecurityProtocol::Ssl, Some(s)) => Some(s.ssl),
            (SecurityProtocol::SaslPlaintext, Some(s)) => Some(s.sasl_plaintext),
            (SecurityProtocol::SaslSsl, Some(s)) => Some(s.sasl_ssl),
        }
    }

    /// `listeners` as the broker takes it.
    fn listeners(&self) -> String {
        let mut l = format!("PLAINTEXT://127.0.0.1:{}", self.plaintext);
        if let Some(s) = &self.secured {
            l.push_str(&format!(
                ",SSL://127.0.0.1:{},SASL_PLAINTEXT://127.0.0.1:{},SASL_SSL://127.0.0.1:{}",
                s.ssl, s.sasl_plaintext, s.sasl_ssl
            ));
        }
        l
    }
}

/// One embedded broker.
pub enum Node {
    Process { child: Child, addr: SocketAddr },
    InProcess(EmbeddedBroker),
}

impl Node {
    fn bootstrap(&self) -> SocketAddr {
        match self {
            Node::Process { addr, .. } => *addr,
            Node::InProcess(b) => b.bootstrap(),
        }
    }

    /// Stops the broker cleanly: a process when its standard input closes.
    fn stop(self) {
        match self {
            Node::InProcess(b) => b.stop(),
            Node::Process { mut child, addr } => {
                drop(child.stdin.take());
                let deadline = Instant::now() + STOP_DEADLINE;
                loop {
                    match child.try_wait() {
                        Ok(Some(_)) => return,
                        Ok(None) if Instant::now() < deadline => {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        _ => {
                            eprintln!("embedded broker at {addr} did not stop; killing it");
                            let _ = child.kill();
                            let _ = child.wait();
                            return;
                        }
                    }
                }
            }
        }
    }
}

impl Target {
    /// The first broker's address (the embedded brokers' PLAINTEXT
    /// listener).
    pub fn bootstrap(&self) -> SocketAddr {
        match self {
            Target::Remote(a) => a.addr,
            Target::Embedded { brokers, .. } => brokers[0].bootstrap(),
        }
    }

    /// Where a client secured with `security` connects: the remote broker
    /// as given, or the first embedded broker's listener of that security
    /// protocol (its metadata then names the other brokers' listeners of
    /// the same name).
    pub fn endpoint_for(&self, security: &Security) -> Result<Endpoint, String> {
        match self {
            Target::Remote(a) => Ok(a.clone()),
            Target::Embedded { ports, .. } => match ports[0].port(security.protocol) {
                Some(port) => Ok(Endpoint::from(SocketAddr::from(([127, 0, 0, 1], port)))),
                None => Err(format!(
                    "security.protocol={}: this embedded broker was started with PLAINTEXT \
                     only (start_embedded_secured starts the other listeners)",
                    security.protocol.name()
                )),
            },
        }
    }

    /// The embedded brokers' metrics listeners; none for a remote broker.
    pub fn metrics(&self) -> Vec<SocketAddr> {
        match self {
            Target::Remote(_) => Vec::new(),
            Target::Embedded { ports, .. } => ports
                .iter()
                .map(|p| SocketAddr::from(([127, 0, 0, 1], p.metrics)))
                .collect(),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Target::Remote(a) => a.to_string(),
            Target::Embedded { brokers, .. } if brokers.len() == 1 => {
                format!("embedded sluice at {}", brokers[0].bootstrap())
            }
            Target::Embedded { brokers, .. } => format!(
                "embedded sluice cluster of {} brokers at {}",
                brokers.len(),
                brokers
                    .iter()
                    .map(|b| b.bootstrap().to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        }
    }

    /// Where the embedded brokers keep their data; unknown for a remote
    /// broker.
    pub fn data_dir(&self) -> Option<&std::path::Path> {
        match self {
            Target::Remote(_) => None,
            Target::Embedded { dir, .. } => Some(dir.path()),
        }
    }

    pub fn config(&self) -> Vec<(String, String)> {
        match self {
            Target::Remote(_) => Vec::new(),
            Target::Embedded { config, .. } => config.clone(),
        }
    }

    /// The broker processes on this host to account CPU for, and whether
    /// the brokers run inside this process instead.
    pub fn watched(&self) -> (Vec<Watched>, bool) {
        let Target::Embedded { brokers, .. } = self else {
            return (Vec::new(), false);
        };
        let mut out = Vec::new();
        let mut in_process = false;
        for (i, b) in brokers.iter().enumerate() {
            match b {
                Node::Process { child, .. } => out.push(Watched {
                    name: format!("broker {}", i + 1),
                    pid: child.id(),
                    broker: true,
                }),
                Node::InProcess(_) => in_process = true,
            }
        }
        (out, in_process)
    }

    /// Stops the embedded brokers, then removes their data (as dropping does).
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for Target {
    /// The brokers stop before their data directory goes.
    fn drop(&mut self) {
        if let Target::Embedded { brokers, .. } = self {
            stop_all(std::mem::take(brokers));
        }
    }
}

/// The embedded broker's `group.initial.rebalance.delay.ms` (Kafka: 3000).
/// A subscription's consumers start together, so a short delay still lets
/// them land in one generation, rather than one rebalance per late joiner
/// (each costing up to a heartbeat interval), without 3 s per load.
const INITIAL_REBALANCE_DELAY_MS: u32 = 200;

/// The embedded broker's `log.retention.check.interval.ms` (Kafka: 5
/// minutes). A max-rate run writes gigabytes a minute; workloads bound
/// their disk with `retention.bytes`, which holds only as often as it is
/// checked.
const RETENTION_CHECK_MS: u32 = 30_000;

/// Starts an embedded cluster of `brokers` brokers with `cores` shards
/// each: node ids 1.., the first three (or the only one) the controller
/// quorum. The brokers start together, since each waits for the quorum.
/// They listen on PLAINTEXT only.
pub fn start_embedded(brokers: usize, cores: usize) -> Result<Target, String> {
    start_embedded_secured(brokers, cores, false)
}

/// [`start_embedded`], with `secured` the SSL, SASL_PLAINTEXT and SASL_SSL
/// listeners too: the broker certificate and SASL user of
/// [`local::credentials`], every SASL mechanism the harness speaks (PLAIN,
/// SCRAM-SHA-256, SCRAM-SHA-512) enabled on both SASL listeners.
pub fn start_embedded_secured(
    brokers: usize,
    cores: usize,
    secured: bool,
) -> Result<Target, String> {
    let dir = tempfile::Builder::new()
        .prefix("sluice-bench-")
        .tempdir()
        .map_err(|e| format!("creating a temporary data directory: {e}"))?;
    let brokers = brokers.max(1);
    let voters = match brokers {
        1 => 0,
        2 => 1,
        _ => 3,
    };
    let per_broker = if secured { 5 } else { 2 };
    let free = free_ports(brokers * per_broker + voters)
        .map_err(|e| format!("finding free loopback ports: {e}"))?;
    let mut free = free.into_iter();
    let mut port = || free.next().expect("as many ports as counted");
    let ports: Vec<BrokerPorts> = (0..brokers)
        .map(|_| BrokerPorts {
            plaintext: port(),
            secured: secured.then(|| SecuredPorts {
                ssl: port(),
                sasl_plaintext: port(),
                sasl_ssl: port(),
            }),
            metrics: port(),
        })
        .collect();
    let voters = (0..voters)
        .map(|i| format!("{}@127.0.0.1:{}", i + 1, port()))
        .collect::<Vec<String>>()
        .join(",");
    let mut settings = vec![
        (
            "group.initial.rebalance.delay.ms".to_string(),
            INITIAL_REBALANCE_DELAY_MS.to_string(),
        ),
        (
            "log.retention.check.interval.ms".to_string(),
            RETENTION_CHECK_MS.to_string(),
        ),
    ];
    if !voters.is_empty() {
        settings.push(("controller.quorum.voters".to_string(), voters));
    }
    let (security_dir, secrets, shown) = match secured {
        false => (None, Vec::new(), Vec::new()),
        true => {
            let (d, secrets, shown) = security_settings()?;
            (Some(d), secrets, shown)
        }
    };
    settings.extend(shown.iter().cloned());
    let mut brokers_args = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let cores = cores.max(1);
        let mut overrides = vec![format!("node.id={}", i + 1)];
        overrides.extend(settings.iter().map(|(k, v)| format!("{k}={v}")));
        overrides.extend(secrets.iter().map(|(k, v)| format!("{k}={v}")));
        overrides.push(format!("listeners={}", p.listeners()));
        overrides.push(format!("metrics.listener=127.0.0.1:{}", p.metrics));
        let args = BrokerArgs {
            listen: format!("127.0.0.1:{}", p.plaintext),
            data_dir: if brokers == 1 {
                dir.path().to_path_buf()
            } else {
                dir.path().join(format!("broker-{}", i + 1))
            },
            cores,
            cpus: Some(
                sluice_engine::config::cpus_for_broker(i, cores)
                    .iter()
                    .map(|c| c.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            overrides,
        };
        // Checked here, so a bad setting is reported before anything starts.
        args.config()?;
        brokers_args.push(args);
    }
    let mut config = vec![
        (
            "listeners".to_string(),
            ports
                .iter()
                .map(BrokerPorts::listeners)
                .collect::<Vec<_>>()
                .join(","),
        ),
        ("log.dirs".to_string(), dir.path().display().to_string()),
        ("cores".to_string(), cores.max(1).to_string()),
        ("brokers".to_string(), brokers.to_string()),
    ];
    config.extend(settings);
    if secured {
        config.push((
            "sasl users".to_string(),
            format!(
                "{} (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512; its password is made for the run \
                 and not recorded)",
                local::USER
            ),
        ));
    }
    let running = match broker_program() {
        Some(program) => start_processes(&program, &brokers_args)?,
        None => start_in_process(&brokers_args)?,
    };
    Ok(Target::Embedded {
        brokers: running,
        ports,
        dir,
        _keystore_dir: security_dir,
        config,
    })
}

/// The embedded brokers' TLS and SASL settings: the key store written to a
/// new directory (returned, to live as long as the brokers), the settings
/// that hold the password, and those that may be shown in a report.
type SecuritySettings = (
    tempfile::TempDir,
    Vec<(String, String)>,
    Vec<(String, String)>,
);

fn security_settings() -> Result<SecuritySettings, String> {
    let creds = local::credentials()?;
    let dir = tempfile::Builder::new()
        .prefix("sluice-bench-security-")
        .tempdir()
        .map_err(|e| format!("creating a directory for the broker's key store: {e}"))?;
    let keystore = dir.path().join("broker.pem");
    std::fs::write(&keystore, &creds.keystore_pem)
        .map_err(|e| format!("writing {}: {e}", keystore.display()))?;
    let (user, pw) = (creds.user, &creds.password);
    let secrets = vec![
        (
            "sasl.jaas.config".to_string(),
            format!(
                "org.apache.kafka.common.security.plain.PlainLoginModule required \
                 user_{user}=\"{pw}\";"
            ),
        ),
        (
            "sluice.scram.users".to_string(),
            format!(
                "SCRAM-SHA-256=[name={user},password={pw}];\
                 SCRAM-SHA-512=[name={user},password={pw}]"
            ),
        ),
    ];
    let shown = vec![
        (
            "ssl.keystore.location".to_string(),
            keystore.display().to_string(),
        ),
        (
            "sasl.enabled.mechanisms".to_string(),
            "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512".to_string(),
        ),
    ];
    Ok((dir, secrets, shown))
}

/// The command-line form of an embedded broker's config.
pub struct BrokerArgs {
    pub listen: String,
    pub data_dir: PathBuf,
    pub cores: usize,
    pub cpus: Option<String>,
    pub overrides: Vec<String>,
}

impl BrokerArgs {
    fn config(&self) -> Result<BrokerConfig, String> {
        let bad = |e: sluice_engine::config::ConfigError| format!("embedded broker config: {e}");
        let mut cfg = BrokerConfig::default();
        cfg.set_listen(&self.listen).map_err(bad)?;
        cfg.data_dir = self.data_dir.clone();
        cfg.cores = self.cores.max(1);
        if let Some(cpus) = &self.cpus {
            cfg.cpus = Some(sluice_engine::config::parse_cpu_list("--cpus", cpus).map_err(bad)?);
        }
        for o in &self.overrides {
            let (k, v) = o
                .split_once('=')
                .ok_or_else(|| format!("--override {o}: expected KEY=VALUE"))?;
            cfg.set(k, v).map_err(bad)?;
        }
        Ok(cfg)
    }
}

/// The line an embedded broker process writes to its standard output once
/// it listens on every port it was given.
const READY_LINE: &str = "ready";

/// Runs one embedded broker until standard input closes (the harness that
/// started it stopped, or died). [`READY_LINE`] on standard output tells
/// the harness it has started.
pub fn serve_broker(args: &BrokerArgs) -> Result<(), String> {
    let broker = EmbeddedBroker::start(args.config()?)
        .map_err(|e| format!("starting the embedded broker: {e}"))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{READY_LINE}")
        .and_then(|()| out.flush())
        .map_err(|e| format!("telling the harness the broker started: {e}"))?;
    let mut rest = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut rest);
    broker.stop();
    Ok(())
}

/// Starts each broker as `program broker ...`; returns once each has
/// said it listens on all its ports ([`READY_LINE`]).
fn start_processes(program: &Path, brokers: &[BrokerArgs]) -> Result<Vec<Node>, String> {
    let addrs = brokers
        .iter()
        .map(|a| a.config().map(|c| c.listen))
        .collect::<Result<Vec<_>, _>>()?;
    let mut running = Vec::new();
    let mut ready = Vec::new();
    for (a, addr) in brokers.iter().zip(addrs) {
        let mut c = Command::new(program);
        c.arg("broker")
            .arg("--listen")
            .arg(&a.listen)
            .arg("--data-dir")
            .arg(&a.data_dir)
            .arg("--cores")
            .arg(a.cores.to_string());
        if let Some(cpus) = &a.cpus {
            c.arg("--cpus").arg(cpus);
        }
        for o in &a.overrides {
            c.arg("--override").arg(o);
        }
        // A process group of its own: Ctrl-C at the terminal stops the
        // harness's point, not the broker under it.
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0);
        match c.spawn() {
            Ok(mut child) => {
                let stdout = child.stdout.take().expect("piped");
                ready.push(watch_ready(stdout));
                running.push(Node::Process { child, addr });
            }
            Err(e) => {
                stop_all(running);
                return Err(format!(
                    "starting an embedded broker ({}): {e}",
                    program.display()
                ));
            }
        }
    }
    // The brokers start together: each waits for the controller quorum.
    let deadline = Instant::now() + START_DEADLINE;
    for (node, ready) in running.iter_mut().zip(&ready) {
        if let Err(e) = wait_ready(node, ready, deadline) {
            stop_all(running);
            return Err(e);
        }
    }
    Ok(running)
}

/// Reads a broker process's standard output on a thread of its own until
/// the process ends; sends whether [`READY_LINE`] came before the end.
/// (Probing its ports instead could be answered by another process that
/// took one of them, while the broker itself exits for want of it.)
fn watch_ready(stdout: std::process::ChildStdout) -> mpsc::Receiver<bool> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut said = false;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if !said && line == READY_LINE {
                said = true;
                let _ = tx.send(true);
            }
        }
        if !said {
            let _ = tx.send(false);
        }
    });
    rx
}

fn wait_ready(
    node: &mut Node,
    ready: &mpsc::Receiver<bool>,
    deadline: Instant,
) -> Result<(), String> {
    let Node::Process { child, addr } = node else {
        return Ok(());
    };
    let wait = deadline.saturating_duration_since(Instant::now());
    match ready.recv_timeout(wait) {
        Ok(true) => Ok(()),
        Ok(false) | Err(mpsc::RecvTimeoutError::Disconnected) => {
            let status = child
                .wait()
                .map(|s| s.to_string())
                .unwrap_or_else(|e| format!("an unknown status ({e})"));
            Err(format!(
                "the embedded broker at {addr} exited with {status} before it listened \
                 (its error is above, on standard error)"
            ))
        }
        Err(mpsc::RecvTimeoutError::Timeout) => Err(format!(
            "the embedded broker at {addr} did not listen within {} s",
            START_DEADLINE.as_secs()
        )),
    }
}

fn stop_all(nodes: Vec<Node>) {
    for n in nodes {
        n.stop();
    }
}

fn start_in_process(brokers: &[BrokerArgs]) -> Result<Vec<Node>, String> {
    let configs = brokers
        .iter()
        .map(BrokerArgs::config)
        .collect::<Result<Vec<_>, _>>()?;
    let starts: Vec<_> = configs
        .into_iter()
        .map(|cfg| std::thread::spawn(move || EmbeddedBroker::start(cfg)))
        .collect();
    let mut running = Vec::new();
    let mut failed = None;
    for s in starts {
        match s.join() {
            Ok(Ok(b)) => running.push(Node::InProcess(b)),
            Ok(Err(e)) => failed = Some(format!("starting the embedded broker: {e}")),
            Err(_) => failed = Some("starting the embedded broker panicked".to_string()),
        }
    }
    if let Some(e) = failed {
        stop_all(running);
        return Err(e);
    }
    Ok(running)
}
