//! Apache Kafka itself as a test's peer: one combined KRaft node from the
//! jars `scripts/kafka.sh fetch` brings (`scripts/kafka/pom.xml`), on
//! loopback, in a data directory of its own. The JVM gets SIGKILL when the
//! test process dies (`PR_SET_PDEATHSIG`), so an interrupted run leaves
//! no broker behind. The engine's differential tests and the harness's
//! tests against Kafka both start it through this file.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Kafka's start-up (JIT, metadata quorum of one, log recovery) takes
/// 5–15 s on an idle machine; a 2-core machine shared with compilers can
/// be many times slower.
const READY_DEADLINE: Duration = Duration::from_secs(240);

/// Fetching the jars from Maven Central the first time (about 100 MB).
const FETCH_DEADLINE_S: &str = "900";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The folder of Kafka's jars, fetched by `scripts/kafka.sh` when missing.
pub fn lib_dir() -> PathBuf {
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
    let stdout = String::from_utf8(out.stdout).expect("a UTF-8 path");
    let lib = PathBuf::from(stdout.trim().lines().last().expect("the jars' folder"));
    assert!(
        lib.join(".complete").exists(),
        "no jars in {}",
        lib.display()
    );
    lib
}

/// The server properties every node shares, after its own `listeners`
/// lines: node 1 as broker and controller, the internal topics with one
/// replica, `__consumer_offsets` with one partition (the default 50 take
/// long to create on a loaded machine), and no rebalance delay.
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
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
",
        data = data.display()
    )
}

fn java(lib: &Path, heap: &str) -> Command {
    let mut cmd = Command::new(std::env::var("JAVA").unwrap_or_else(|_| "java".into()));
    cmd.arg(format!("-Xmx{heap}"))
        .args(["-XX:+UseG1GC", "-Djava.awt.headless=true"])
        .arg("-cp")
        .arg(format!("{}/*", lib.display()));
    cmd
}

/// A running Kafka node, killed when dropped (its data directory is thrown
/// away, so a clean shutdown would only cost time).
pub struct KafkaNode {
    child: Child,
    pub dir: tempfile::TempDir,
}

impl KafkaNode {
    /// Formats the storage of `props` in `dir` (with `format_args` added
    /// to Kafka's StorageTool, e.g. `--add-scram`), starts the broker and
    /// waits until `ready` says it serves (Kafka accepts connections before
    /// it has registered with its controller, so `ready` should look for
    /// it in Metadata). `Err` holds the end of its logs when it exits
    /// first.
    pub fn start(
        lib: &Path,
        dir: tempfile::TempDir,
        props: &str,
        cluster_id: &str,
        format_args: &[String],
        mut ready: impl FnMut() -> bool,
    ) -> Result<KafkaNode, String> {
        let props_path = dir.path().join("server.properties");
        std::fs::write(&props_path, props).unwrap();
        let tools_log = repo_root().join("scripts/kafka/log4j2-tools.properties");
        let format = java(lib, "256m")
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
        let mut cmd = java(lib, "512m");
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
        let start = Instant::now();
        loop {
            if let Some(status) = node.child.try_wait().unwrap() {
                return Err(format!("({status})\n{}", node.log_tail()));
            }
            if ready() {
                return Ok(node);
            }
            assert!(
                start.elapsed() < READY_DEADLINE,
                "Kafka not ready after {READY_DEADLINE:?}:\n{}",
                node.log_tail()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The end of Kafka's server log and standard output, for failures.
    pub fn log_tail(&self) -> String {
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
