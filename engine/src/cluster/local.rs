//! A cluster of `sluice` processes on loopback, for development, tests
//! and benchmarks: broker `i` (1-based) listens on `ports[i-1]`, keeps its
//! data in `<data_dir>/broker-<i>`, and the first `voters` brokers form
//! the controller quorum on their `controller_ports`. Brokers listen on
//! loopback unless `hosts` names an address for each, and run in the
//! caller's network namespace unless `namespaces` names one for each (the
//! partition tests give every broker a namespace and an address of its own).

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How to lay out a local cluster.
#[derive(Clone, Debug)]
pub struct LocalClusterSpec {
    /// The `sluice` binary.
    pub binary: PathBuf,
    pub data_dir: PathBuf,
    pub ports: Vec<u16>,
    pub controller_ports: Vec<u16>,
    /// How many brokers (the first ones) are controller voters.
    pub voters: usize,
    /// Shards per broker.
    pub cores: usize,
    /// Extra `key=value` settings for every broker.
    pub overrides: Vec<String>,
    /// Where broker output goes: inherited, or `<data_dir>/broker-<i>.log`.
    pub log_to_files: bool,
    /// `SLUICE_LOG` for the brokers (a tracing filter); inherited if None.
    pub log_filter: Option<String>,
    /// Each broker's `metrics.listener` port; none when empty.
    pub metrics_ports: Vec<u16>,
    /// Extra `key=value` settings for one broker (by node - 1), after
    /// `overrides`: per-broker listeners, say.
    pub broker_overrides: Vec<Vec<String>>,
    /// The address broker `i` listens on and its controller binds, by
    /// node - 1; 127.0.0.1 when empty.
    pub hosts: Vec<String>,
    /// The network namespace broker `i` runs in (`ip netns exec`), by
    /// node - 1; the caller's when empty.
    pub namespaces: Vec<String>,
}

/// Running brokers; killed on drop.
pub struct LocalCluster {
    pub spec: LocalClusterSpec,
    children: Vec<Option<Child>>,
}

/// Where [`free_ports`] looks: below Linux's default ephemeral range
/// (32768-60999), from which the kernel picks the port of every client
/// socket and of every bind to port 0. A port found free there stays free
/// only until the broker binds it, seconds later once the controller
/// quorum has formed, and meanwhile any process may be handed it: one of
/// the cluster's own other listeners, another cluster's, a client's. The
/// broker that binds it second then refuses to start.
const PORTS_LOW: u32 = 12_000;
const PORTS_SPAN: u32 = 20_000;

/// How many ports this process has tried (see [`candidate`]).
static TRIED: AtomicU32 = AtomicU32::new(0);

/// The port tried `tried`th. Each process starts at its own place, so
/// that processes started together (runs, test binaries) try different
/// ports.
fn candidate(tried: u32) -> u16 {
    let start = (std::process::id() % 400) * 50;
    (PORTS_LOW + start.wrapping_add(tried) % PORTS_SPAN) as u16
}

/// `n` loopback ports that were free a moment ago, none handed out before
/// by this process (until it has gone once through the whole span).
pub fn free_ports(n: usize) -> std::io::Result<Vec<u16>> {
    let mut ports = Vec::with_capacity(n);
    let mut taken = 0;
    while ports.len() < n {
        let port = candidate(TRIED.fetch_add(1, Ordering::Relaxed));
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            ports.push(port);
            continue;
        }
        taken += 1;
        if taken >= PORTS_SPAN {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("no free port in {PORTS_LOW}..{}", PORTS_LOW + PORTS_SPAN),
            ));
        }
    }
    Ok(ports)
}

/// One port as [`free_ports`] finds them; panics if none is free.
pub fn free_port() -> u16 {
    free_ports(1).expect("a free loopback port")[0]
}

impl LocalClusterSpec {
    /// `brokers` brokers on free ports, three voters (or one for fewer
    /// than three brokers).
    pub fn new(binary: PathBuf, data_dir: PathBuf, brokers: usize) -> LocalClusterSpec {
        LocalClusterSpec {
            binary,
            data_dir,
            ports: (0..brokers).map(|_| free_port()).collect(),
            controller_ports: (0..brokers).map(|_| free_port()).collect(),
            voters: if brokers >= 3 { 3 } else { 1 },
            cores: 1,
            overrides: Vec::new(),
            log_to_files: true,
            log_filter: None,
            metrics_ports: Vec::new(),
            broker_overrides: Vec::new(),
            hosts: Vec::new(),
            namespaces: Vec::new(),
        }
    }

    pub fn brokers(&self) -> usize {
        self.ports.len()
    }

    /// The address broker `node` (1-based) listens on.
    pub fn host(&self, node: usize) -> &str {
        self.hosts.get(node - 1).map_or("127.0.0.1", String::as_str)
    }

    /// `controller.quorum.voters` for this layout.
    pub fn voters_setting(&self) -> String {
        (0..self.voters)
            .map(|i| {
                format!(
                    "{}@{}:{}",
                    i + 1,
                    self.host(i + 1),
                    self.controller_ports[i]
                )
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The command line of broker `node` (1-based).
    pub fn command(&self, node: usize) -> Command {
        let mut c = match self.namespaces.get(node - 1) {
            // `ip netns exec` execs the binary in place, so the child's
            // pid is the broker's and signals reach it.
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&self.binary);
                c
            }
            None => Command::new(&self.binary),
        };
        c.arg("--listen")
            .arg(format!("{}:{}", self.host(node), self.ports[node - 1]))
            .arg("--data-dir")
            .arg(self.data_dir.join(format!("broker-{node}")))
            .arg("--cores")
            .arg(self.cores.to_string())
            .arg("--cpus")
            .arg(
                crate::config::cpus_for_broker(node - 1, self.cores)
                    .iter()
                    .map(|c| c.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
            )
            .arg("--override")
            .arg(format!("node.id={node}"))
            .arg("--override")
            .arg(format!(
                "controller.quorum.voters={}",
                self.voters_setting()
            ));
        if let Some(port) = self.metrics_ports.get(node - 1) {
            c.arg("--override")
                .arg(format!("metrics.listener=127.0.0.1:{port}"));
        }
        for o in self
            .overrides
            .iter()
            .chain(self.broker_overrides.get(node - 1).into_iter().flatten())
        {
            c.arg("--override").arg(o);
        }
        if let Some(filter) = &self.log_filter {
            c.env("SLUICE_LOG", filter);
        }
        c
    }

    /// `host:port,...` for clients.
    pub fn bootstrap(&self) -> String {
        self.ports
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{}:{p}", self.host(i + 1)))
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl LocalCluster {
    /// Starts every broker; returns once all accept connections.
    pub fn start(spec: LocalClusterSpec, deadline: Duration) -> std::io::Result<LocalCluster> {
        std::fs::create_dir_all(&spec.data_dir)?;
        let mut cluster = LocalCluster {
            children: (0..spec.brokers()).map(|_| None).collect(),
            spec,
        };
        for node in 1..=cluster.spec.brokers() {
            cluster.spawn(node)?;
        }
        for node in 1..=cluster.spec.brokers() {
            cluster.wait_listening(node, deadline)?;
        }
        Ok(cluster)
    }

    fn spawn(&mut self, node: usize) -> std::io::Result<()> {
        let mut cmd = self.spec.command(node);
        cmd.stdin(Stdio::null());
        if self.spec.log_to_files {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.spec.data_dir.join(format!("broker-{node}.log")))?;
            cmd.stdout(log.try_clone()?).stderr(log);
        }
        self.children[node - 1] = Some(cmd.spawn()?);
        Ok(())
    }

    /// Waits until broker `node` accepts connections.
    pub fn wait_listening(&mut self, node: usize, deadline: Duration) -> std::io::Result<()> {
        let host: std::net::IpAddr = self.spec.host(node).parse().map_err(|e| {
            std::io::Error::other(format!("broker {node}'s host is not an address: {e}"))
        })?;
        let addr = SocketAddr::new(host, self.spec.ports[node - 1]);
        let until = Instant::now() + deadline;
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if let Some(child) = self.children[node - 1].as_mut() {
                if let Some(status) = child.try_wait()? {
                    return Err(std::io::Error::other(format!(
                        "broker {node} exited with {status} before listening"
                    )));
                }
            }
            if Instant::now() >= until {
                return Err(std::io::Error::other(format!(
                    "broker {node} did not listen on {addr} within {deadline:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn bootstrap(&self) -> String {
        self.spec.bootstrap()
    }

    /// The process id of broker `node`, if it runs.
    pub fn pid(&self, node: usize) -> Option<u32> {
        self.children[node - 1].as_ref().map(Child::id)
    }

    /// Sends `signal` to broker `node`.
    pub fn signal(&self, node: usize, signal: i32) {
        if let Some(pid) = self.pid(node) {
            // SAFETY: kill(2) on a child this struct spawned.
            unsafe {
                libc::kill(pid as i32, signal);
            }
        }
    }

    /// kill -9 broker `node` and reap it.
    pub fn kill(&mut self, node: usize) {
        if let Some(mut c) = self.children[node - 1].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM broker `node` and wait for it to stop.
    pub fn stop(&mut self, node: usize) -> Option<std::process::ExitStatus> {
        let mut c = self.children[node - 1].take()?;
        // SAFETY: kill(2) on our child.
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        c.wait().ok()
    }

    /// Starts broker `node` again and waits for it to listen.
    pub fn restart(&mut self, node: usize, deadline: Duration) -> std::io::Result<()> {
        if self.children[node - 1].is_some() {
            self.kill(node);
        }
        self.spawn(node)?;
        self.wait_listening(node, deadline)
    }

    /// Starts broker `node` again after it exited, without waiting for it
    /// to listen.
    pub fn respawn(&mut self, node: usize) -> std::io::Result<()> {
        if self.children[node - 1].is_some() {
            return Ok(());
        }
        self.spawn(node)
    }

    /// Stops every broker with SIGTERM.
    pub fn stop_all(&mut self) {
        for node in 1..=self.spec.brokers() {
            self.stop(node);
        }
    }

    /// A broker that has exited since the last call, if any.
    pub fn exited(&mut self) -> Option<(usize, std::process::ExitStatus)> {
        for (i, slot) in self.children.iter_mut().enumerate() {
            if let Some(c) = slot.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    *slot = None;
                    return Some((i + 1, status));
                }
            }
        }
        None
    }
}

impl Drop for LocalCluster {
    /// Kills every broker. When a test is failing, the tail of each
    /// broker's log goes to stderr first, so the failure can be read.
    fn drop(&mut self) {
        for node in 1..=self.spec.brokers() {
            self.kill(node);
        }
        if std::thread::panicking() && self.spec.log_to_files {
            for node in 1..=self.spec.brokers() {
                let path = self.spec.data_dir.join(format!("broker-{node}.log"));
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = &lines[lines.len().saturating_sub(60)..];
                eprintln!("--- {} (last {} lines)", path.display(), tail.len());
                for l in tail {
                    eprintln!("{l}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_handed_out_once_and_outside_the_ephemeral_range() {
        // Bound and closed one at a time, 1000 ports drawn from the ~14,000
        // a bind to port 0 picks from (Linux's default ephemeral range,
        // odd ports first) would all differ with probability e^-35.
        let first = free_ports(500).unwrap();
        let second = free_ports(500).unwrap();
        let all: std::collections::BTreeSet<u16> = first.iter().chain(&second).copied().collect();
        assert_eq!(all.len(), 1000, "a port handed out twice");
        assert!(all
            .iter()
            .all(|p| u32::from(*p) >= PORTS_LOW && *p < 32_768));
        // A port something listens on is passed over.
        let next = candidate(TRIED.load(Ordering::Relaxed));
        // (Bound here, or already by another process.)
        let _held = std::net::TcpListener::bind(("127.0.0.1", next));
        assert_ne!(free_ports(1).unwrap(), [next]);
    }
}
