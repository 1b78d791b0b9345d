//! Apache Kafka itself, for the harness's tests against it: one combined
//! KRaft node from the jars `scripts/kafka.sh fetch` brings, on loopback,
//! killed with the test process.

use sluice_harness::client::admin;
use sluice_harness::client::conn::Connection;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Kafka's start-up takes 5–15 s on an idle machine, many times that on a
/// 2-core machine shared with compilers.
const READY_DEADLINE: Duration = Duration::from_secs(240);
/// Fetching the jars the first time (about 100 MB from Maven Central).
const FETCH_DEADLINE_S: &str = "900";

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn lib_dir() -> PathBuf {
    let out = Command::new("timeout")
        .arg(FETCH_DEADLINE_S)
        .arg(repo_root().join("scripts/kafka.sh"))
        .arg("fetch")
        .stderr(Stdio::inherit())
        .output()
        .expect("run scripts/kafka.sh fetch");
    assert!(
        out.status.success(),
        "scripts/kafka.sh fetch failed ({}); it needs Maven and Java 17+",
        out.status
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    PathBuf::from(stdout.trim().lines().last().expect("the jars' folder"))
}

fn java(lib: &Path, heap: &str) -> Command {
    let mut cmd = Command::new(std::env::var("JAVA").unwrap_or_else(|_| "java".into()));
    cmd.arg(format!("-Xmx{heap}"))
        .args(["-XX:+UseG1GC", "-Djava.awt.headless=true"])
        .arg("-cp")
        .arg(format!("{}/*", lib.display()));
    cmd
}

/// The server properties every test's node shares, after its own
/// `listeners` lines: node 1 as broker and controller, the internal
/// topics with one replica and one partition (the default 50 take long to
/// create on a loaded machine), and no rebalance delay.
pub fn common_properties(controller: u16, data: &Path) -> String {
    format!(
        "process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs={data}
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
",
        data = data.display()
    )
}

/// A running Kafka node.
pub struct KafkaNode {
    child: Child,
    pub dir: tempfile::TempDir,
}

impl KafkaNode {
    /// Formats the storage of `props` in `dir` (with `format_args` added
    /// to Kafka's StorageTool, e.g. `--add-scram`), starts the broker and
    /// waits until Metadata on `ready_at` names it.
    pub fn start(
        dir: tempfile::TempDir,
        props: &str,
        cluster_id: &str,
        format_args: &[String],
        ready_at: SocketAddr,
    ) -> KafkaNode {
        let lib = lib_dir();
        let props_path = dir.path().join("server.properties");
        std::fs::write(&props_path, props).unwrap();
        let tools_log = repo_root().join("scripts/kafka/log4j2-tools.properties");
        let format = java(&lib, "256m")
            .arg(format!(
                "-Dlog4j2.configurationFile={}",
                tools_log.display()
            ))
            .args(["kafka.tools.StorageTool", "format", "-t", cluster_id, "-c"])
            .arg(&props_path)
            .args(format_args)
            .output()
            .expect("run Kafka's StorageTool");
        assert!(
            format.status.success(),
            "formatting Kafka's storage failed:\n{}{}",
            String::from_utf8_lossy(&format.stdout),
            String::from_utf8_lossy(&format.stderr)
        );
        let logs = dir.path().join("logs");
        std::fs::create_dir_all(&logs).unwrap();
        let stdout = std::fs::File::create(dir.path().join("stdout.log")).unwrap();
        let broker_log = repo_root().join("scripts/kafka/log4j2-broker.properties");
        let mut cmd = java(&lib, "512m");
        cmd.arg(format!("-Dkafka.logs.dir={}", logs.display()))
            .arg(format!(
                "-Dlog4j2.configurationFile={}",
                broker_log.display()
            ))
            .arg("kafka.Kafka")
            .arg(&props_path)
            .stdin(Stdio::null())
            .stdout(stdout.try_clone().unwrap())
            .stderr(stdout);
        // SAFETY: prctl is async-signal-safe; nothing else runs between
        // fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("start Kafka");
        let mut node = KafkaNode { child, dir };
        node.wait_ready(ready_at);
        node
    }

    fn wait_ready(&mut self, addr: SocketAddr) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("Kafka exited ({status}):\n{}", self.log_tail());
            }
            let listed = Connection::connect(addr, Duration::from_secs(5))
                .and_then(|mut c| admin::metadata(&mut c, Some(&[])))
                .map_or(0, |md| md.brokers.len());
            if listed >= 1 {
                return;
            }
            assert!(
                start.elapsed() < READY_DEADLINE,
                "Kafka not ready after {READY_DEADLINE:?}:\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The last lines of the broker's logs, for a failure's message.
    fn log_tail(&self) -> String {
        let mut out = String::new();
        for name in ["logs/server.log", "stdout.log"] {
            let text = std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(40);
            out.push_str(&format!("--- {name}\n{}\n", lines[from..].join("\n")));
        }
        out
    }
}

impl Drop for KafkaNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
