//! A single-node KRaft Apache Kafka for the differential tests: the jars of
//! `scripts/kafka/pom.xml` (fetched by `scripts/kafka.sh fetch`), a
//! generated `server.properties`, a fresh data directory in a temporary
//! directory, two free loopback ports (clients and controller) and a small
//! heap. The JVM gets SIGKILL when the test process dies
//! (`PR_SET_PDEATHSIG`), so an interrupted run leaves no broker behind.

use crate::common::{free_port, Raw};
use kafka_protocol::messages::{ApiKey, MetadataRequest, MetadataResponse};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Kafka's start-up (JIT, metadata quorum of one, log recovery) takes
/// 5–15 s on an idle machine; a 2-core machine shared with compilers can
/// be many times slower.
const KAFKA_READY_DEADLINE: Duration = Duration::from_secs(240);

/// Fetching the jars from Maven Central the first time (about 100 MB).
const FETCH_DEADLINE_S: &str = "900";

/// The cluster id Kafka's storage is formatted with: 16 bytes in unpadded
/// base64url, as `kafka-storage random-uuid` prints. Any fixed value will
/// do, the data directory is new every run.
const CLUSTER_ID: &str = "c2x1aWNlLWRpZmYtdGVzdA";

pub struct Kafka {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The folder of Kafka's jars, fetched by `scripts/kafka.sh` when missing.
fn lib_dir() -> PathBuf {
    let script = repo_root().join("scripts/kafka.sh");
    let out = Command::new("timeout")
        .arg(FETCH_DEADLINE_S)
        .arg(&script)
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

/// Kafka's defaults, except what one node needs and two settings also
/// given to Sluice (see `docs/DIFFERENTIAL.md`).
fn properties(dir: &Path, port: u16, controller_port: u16) -> String {
    format!(
        "process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller_port}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={data}
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
",
        data = dir.join("data").display()
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

impl Kafka {
    /// Starts Kafka on free ports. A port found free can be taken by
    /// another process before Kafka binds it: a start that fails on a
    /// port in use is tried again on others, up to three times.
    pub fn start() -> Kafka {
        let lib = lib_dir();
        let mut attempt = 1;
        loop {
            match Kafka::try_start(&lib) {
                Ok(kafka) => return kafka,
                Err(log) if attempt < 3 && log.contains("Address already in use") => {
                    eprintln!("Kafka found a port taken (attempt {attempt}); trying others");
                    attempt += 1;
                }
                Err(log) => panic!("Kafka exited early:\n{log}"),
            }
        }
    }

    /// One start; `Err` with the end of Kafka's logs when it exits before
    /// it is ready.
    fn try_start(lib: &Path) -> Result<Kafka, String> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (port, controller_port) = (free_port(), free_port());
        let props = dir.path().join("server.properties");
        std::fs::write(&props, properties(dir.path(), port, controller_port)).unwrap();
        let tools_log = repo_root().join("scripts/kafka/log4j2-tools.properties");
        let format = java(lib, "256m")
            .arg(format!(
                "-Dlog4j2.configurationFile={}",
                tools_log.display()
            ))
            .args(["kafka.tools.StorageTool", "format", "-t", CLUSTER_ID, "-c"])
            .arg(&props)
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
            .arg(&props)
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
        let mut kafka = Kafka { child, port, dir };
        kafka.wait_ready()?;
        Ok(kafka)
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
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

    /// Until Metadata names this broker: Kafka accepts connections before
    /// it has registered with its controller.
    fn wait_ready(&mut self) -> Result<(), String> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Err(format!("({status})\n{}", self.log_tail()));
            }
            if self.brokers_listed() >= 1 {
                return Ok(());
            }
            assert!(
                start.elapsed() < KAFKA_READY_DEADLINE,
                "Kafka not ready after {KAFKA_READY_DEADLINE:?}:\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn brokers_listed(&self) -> usize {
        let Ok(stream) = std::net::TcpStream::connect(self.addr()) else {
            return 0;
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut raw = Raw { stream };
        let req = MetadataRequest::default().with_topics(Some(vec![]));
        let resp: Option<MetadataResponse> =
            crate::common::try_call(&mut raw, ApiKey::Metadata, 1, &req);
        resp.map_or(0, |r| r.brokers.len())
    }
}

impl Drop for Kafka {
    /// SIGKILL: the data directory is thrown away, so a clean shutdown
    /// would only cost time.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
