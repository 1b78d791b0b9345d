//! Running the broker as operators do: structured logs.

mod common;

use common::free_port;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Kills `pid` once `max` has passed unless the returned flag is set
/// first: a test reading a child's output until a line appears fails
/// instead of hanging when the line never comes.
fn kill_after(pid: u32, max: Duration) -> Arc<AtomicBool> {
    let done = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&done);
    std::thread::spawn(move || {
        let deadline = Instant::now() + max;
        while !flag.load(Ordering::Relaxed) {
            if Instant::now() > deadline {
                // SAFETY: kill(2) on the test's own child.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    done
}

#[test]
fn json_logs_are_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--cores", "1"])
        .arg("--data-dir")
        .arg(dir.path())
        .env("SLUICE_LOG_FORMAT", "json")
        .env("SLUICE_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sluice");
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let watchdog = kill_after(child.id(), Duration::from_secs(120));
    let mut lines = Vec::new();
    // Read until the broker says it serves.
    for line in stderr.lines() {
        let line = line.unwrap();
        let done = line.contains("broker ready");
        lines.push(line);
        if done {
            break;
        }
    }
    watchdog.store(true, Ordering::Relaxed);
    assert!(
        lines.iter().any(|l| l.contains("broker ready")),
        "the broker never said it was ready: {lines:?}"
    );
    let _ = child.kill();
    child.wait().unwrap();
    assert!(!lines.is_empty(), "no log lines");
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON object ({e}): {line}"));
        assert!(v["level"].is_string(), "{line}");
        assert!(v["timestamp"].is_string(), "{line}");
        assert!(v["fields"]["message"].is_string(), "{line}");
    }
}

#[test]
fn an_unknown_log_format_is_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["--listen", "127.0.0.1:1", "--cores", "1"])
        .env("SLUICE_LOG_FORMAT", "xml")
        .output()
        .expect("run sluice");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("SLUICE_LOG_FORMAT=xml"), "{stderr}");
}

/// The broker processes `sluice cluster` runs (its children).
fn children_of(pid: u32) -> Vec<u32> {
    let out = Command::new("pgrep")
        .args(["-P", &pid.to_string()])
        .output()
        .expect("run pgrep");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

#[test]
fn sluice_cluster_restarts_a_broker_that_was_killed() {
    let dir = tempfile::tempdir().unwrap();
    let (port, controller_port) = (free_port(), free_port());
    let mut cluster = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["cluster", "--brokers", "1"])
        .args(["--base-port", &port.to_string()])
        .args(["--controller-base-port", &controller_port.to_string()])
        .arg("--data-dir")
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sluice cluster");
    let mut stdout = BufReader::new(cluster.stdout.take().unwrap());
    let mut ready = String::new();
    stdout.read_line(&mut ready).unwrap();
    assert!(ready.contains("ready"), "{ready}");

    let brokers = children_of(cluster.id());
    assert_eq!(brokers.len(), 1, "{brokers:?}");
    // SAFETY: kill(2) on the broker process the cluster started.
    unsafe { libc::kill(brokers[0] as i32, libc::SIGKILL) };

    // Should the restart never be announced, end the cluster so that the
    // read below ends and the test fails instead of hanging.
    let watchdog = kill_after(cluster.id(), Duration::from_secs(180));
    let stderr = BufReader::new(cluster.stderr.take().unwrap());
    let mut said = Vec::new();
    for line in stderr.lines() {
        let line = line.unwrap();
        let restarted = line.contains("broker 1 restarted");
        said.push(line);
        if restarted {
            break;
        }
    }
    watchdog.store(true, Ordering::Relaxed);
    assert!(
        said.iter()
            .any(|l| l.contains("broker 1 exited") && l.contains("restarting it in")),
        "{said:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the restarted broker never listened"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // SAFETY: kill(2) on our child.
    unsafe { libc::kill(cluster.id() as i32, libc::SIGTERM) };
    assert!(cluster.wait().unwrap().success());
}

/// Under a systemd unit of `Type=notify`, the broker says READY=1 once it
/// serves and STOPPING=1 when it is asked to stop.
#[test]
fn systemd_is_told_when_the_broker_is_ready_and_when_it_stops() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--cores", "1"])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("NOTIFY_SOCKET", &socket_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sluice");
    let mut buf = [0u8; 64];
    let n = socket.recv(&mut buf).expect("READY=1 within the deadline");
    assert_eq!(&buf[..n], b"READY=1");
    std::net::TcpStream::connect(("127.0.0.1", port)).expect("ready means serving");
    // SAFETY: kill(2) on our child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let n = socket.recv(&mut buf).expect("STOPPING=1");
    assert_eq!(&buf[..n], b"STOPPING=1");
    assert!(child.wait().unwrap().success());
}

/// `sluice cluster --secure`: three brokers with clients on SASL_SSL and
/// replication and the controller quorum on mutual TLS; the settings it
/// prints let librdkafka create a topic of three replicas, produce and
/// read back, and a plaintext request to a controller gets no answer.
#[test]
fn a_secured_local_cluster_serves_the_settings_it_prints() {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
    let dir = tempfile::tempdir().unwrap();
    let (ports, controllers, internal) = (
        consecutive_ports(3).to_string(),
        consecutive_ports(3).to_string(),
        consecutive_ports(3).to_string(),
    );
    let mut cluster = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["cluster", "--brokers", "3", "--secure"])
        .args(["--base-port", &ports])
        .args(["--controller-base-port", &controllers])
        .args(["--internal-base-port", &internal])
        .arg("--data-dir")
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sluice cluster");
    let watchdog = kill_after(cluster.id(), Duration::from_secs(240));
    let stdout = BufReader::new(cluster.stdout.take().unwrap());
    let mut lines = stdout.lines();
    let ready = lines.next().unwrap().unwrap();
    assert!(ready.contains("ready"), "{ready}");
    let bootstrap = ready
        .split("bootstrap.servers=")
        .nth(1)
        .unwrap()
        .to_string();
    let mut settings = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once('=') {
            settings.push((k.to_string(), v.to_string()));
        }
    }
    assert!(
        settings
            .iter()
            .any(|(k, v)| k == "security.protocol" && v == "SASL_SSL"),
        "{settings:?}"
    );
    let mut config = rdkafka::ClientConfig::new();
    config
        .set("bootstrap.servers", &bootstrap)
        .set("message.timeout.ms", "60000");
    for (k, v) in &settings {
        config.set(k, v);
    }
    let admin: AdminClient<_> = config.create().expect("admin client");
    let created = futures::executor::block_on(admin.create_topics(
        &[NewTopic::new("secured", 1, TopicReplication::Fixed(3))],
        &AdminOptions::new().operation_timeout(Some(Duration::from_secs(60))),
    ))
    .expect("CreateTopics answered");
    assert!(created.iter().all(Result::is_ok), "{created:?}");
    let producer: ThreadedProducer<_> = config.create().expect("producer");
    for i in 0..100 {
        let v = format!("v{i}");
        producer
            .send(BaseRecord::<(), _>::to("secured").payload(&v))
            .unwrap();
    }
    producer.flush(Duration::from_secs(60)).unwrap();
    let consumer: BaseConsumer = config
        .clone()
        .set("group.id", "secured-readers")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&["secured"]).unwrap();
    let (mut read, deadline) = (0, Instant::now() + Duration::from_secs(120));
    while read < 100 {
        assert!(Instant::now() < deadline, "read {read} of 100");
        if let Some(Ok(_)) = consumer.poll(Duration::from_millis(200)) {
            read += 1;
        }
    }
    // The controllers speak TLS: a plaintext DescribeQuorum frame (length,
    // kind 1, JSON) is not answered, at most with a TLS alert (0x15).
    let log = std::fs::read_to_string(dir.path().join("broker-1.log")).unwrap();
    assert!(log.contains("the controller quorum speaks TLS"), "{log}");
    let mut plain =
        std::net::TcpStream::connect(("127.0.0.1", controllers.parse::<u16>().unwrap())).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let body = br#"{"type":"DescribeQuorum"}"#;
    let mut frame = (body.len() as u32 + 1).to_be_bytes().to_vec();
    frame.push(1);
    frame.extend_from_slice(body);
    plain.write_all(&frame).unwrap();
    let mut answer = [0u8; 64];
    match plain.read(&mut answer) {
        Ok(n) => assert!(n == 0 || answer[0] == 0x15, "{:?}", &answer[..n]),
        Err(e) => assert!(
            !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "neither answered nor closed: {e}"
        ),
    }
    watchdog.store(true, Ordering::Relaxed);
    // SAFETY: kill(2) on our child.
    unsafe { libc::kill(cluster.id() as i32, libc::SIGTERM) };
    assert!(cluster.wait().unwrap().success());
}

/// The first of `n` consecutive free ports (`sluice cluster` takes a base
/// port and the ones after it); this process hands none of them out again.
fn consecutive_ports(n: u16) -> u16 {
    loop {
        let first = free_port();
        if (1..n).all(|i| free_port() == first + i) {
            return first;
        }
    }
}

/// A second broker on a port another process holds exits, naming the
/// port, instead of sharing it through SO_REUSEPORT.
#[test]
fn a_broker_on_a_port_already_bound_exits_naming_the_port() {
    let first = common::Broker::start(1, &[]);
    let dir = tempfile::tempdir().unwrap();
    // Bounded: a broker that wrongly shared the port would serve forever.
    let out = Command::new("timeout")
        .args(["120", env!("CARGO_BIN_EXE_sluice")])
        .args(["--listen", &first.bootstrap(), "--cores", "1"])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .expect("run sluice");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("port {}", first.port)) && stderr.contains("already in use"),
        "{stderr}"
    );
    // The first broker still serves.
    std::net::TcpStream::connect(first.addr()).expect("the first broker serves");
}
