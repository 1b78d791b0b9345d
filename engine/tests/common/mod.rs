//! Helpers for tests that run the real `sluice` binary.
#![allow(dead_code)]

pub mod certs;
pub mod scrape;

use kafka_protocol::messages::{ApiKey, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a broker may take to become ready. Generous: CI machines are shared.
pub const READY_DEADLINE: Duration = Duration::from_secs(60);

/// A loopback port that was free a moment ago (see
/// `sluice_engine::cluster::local::free_ports`).
pub use sluice_engine::cluster::local::free_port;

/// The `sluice` binary the tests start: this build's, or the one
/// `SLUICE_TEST_BROKER` names (CI runs some tests against a build with
/// AddressSanitizer that way).
pub fn sluice_binary() -> PathBuf {
    std::env::var_os("SLUICE_TEST_BROKER")
        .map(PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_sluice").into())
}

/// A cluster of `brokers` brokers of [`sluice_binary`], their data under
/// `dir`, each broker and controller on a free loopback port.
pub fn cluster_spec(dir: &Path, brokers: usize) -> sluice_engine::cluster::local::LocalClusterSpec {
    let bin = sluice_binary();
    let mut spec =
        sluice_engine::cluster::local::LocalClusterSpec::new(bin, dir.to_path_buf(), brokers);
    spec.ports = (0..brokers).map(|_| free_port()).collect();
    spec.controller_ports = (0..brokers).map(|_| free_port()).collect();
    spec
}

/// A `sluice` process on a loopback port with its own data directory.
pub struct Broker {
    child: Option<Child>,
    pub port: u16,
    pub data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    args: Vec<String>,
    log_path: PathBuf,
    /// Environment variables set for the next starts.
    env: Vec<(String, String)>,
}

impl Broker {
    /// Starts a broker with `--cores cores` and the given `--override`s.
    pub fn start(cores: usize, overrides: &[&str]) -> Broker {
        Broker::start_at(None, cores, overrides)
    }

    /// The same with the data directory at `data_dir` (a temporary one when
    /// `None`).
    pub fn start_at(data_dir: Option<PathBuf>, cores: usize, overrides: &[&str]) -> Broker {
        let overrides: Vec<String> = overrides.iter().map(|o| o.to_string()).collect();
        Broker::start_on(free_port(), data_dir, cores, &overrides)
    }

    /// Starts a broker whose overrides name its own port (a
    /// `SASL_PLAINTEXT://` listener, say): `overrides(port)`.
    pub fn start_with(cores: usize, overrides: impl FnOnce(u16) -> Vec<String>) -> Broker {
        let port = free_port();
        Broker::start_on(port, None, cores, &overrides(port))
    }

    fn start_on(
        port: u16,
        data_dir: Option<PathBuf>,
        cores: usize,
        overrides: &[String],
    ) -> Broker {
        let tmp = tempfile::tempdir().unwrap();
        let data_dir = data_dir.unwrap_or_else(|| tmp.path().join("data"));
        let mut args = vec!["--cores".to_string(), cores.to_string()];
        for o in overrides {
            args.push("--override".into());
            args.push(o.to_string());
        }
        let log_path = tmp.path().join("broker.log");
        let mut b = Broker {
            child: None,
            port,
            data_dir,
            _tmp: Some(tmp),
            args,
            log_path,
            env: Vec::new(),
        };
        b.spawn();
        b
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn spawn(&mut self) {
        let readies_before = self.log().matches("broker ready").count();
        self.spawn_process();
        self.wait_ready(readies_before);
    }

    /// Sets an environment variable for the broker's next starts (none
    /// removes them all).
    pub fn set_env(&mut self, vars: &[(&str, &str)]) {
        self.env = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    }

    /// Starts the broker again and waits, up to `deadline`, for it to exit
    /// by itself (a test hook that stops it); returns how it exited.
    pub fn restart_until_exit(&mut self, deadline: Duration) -> std::process::ExitStatus {
        assert!(self.child.is_none(), "stop or kill first");
        self.spawn_process();
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(
                start.elapsed() < deadline,
                "sluice did not exit; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn spawn_process(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap();
        let child = Command::new(sluice_binary())
            .arg("--listen")
            .arg(self.bootstrap())
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.args)
            .env(
                "SLUICE_LOG",
                std::env::var("SLUICE_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start sluice");
        self.child = Some(child);
    }

    /// Waits for this process's "broker ready" line: a successful connect
    /// alone could reach a socket of the process before it.
    fn wait_ready(&mut self, readies_before: usize) {
        let start = Instant::now();
        loop {
            if self.log().matches("broker ready").count() > readies_before {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("sluice exited early ({status}); log:\n{}", self.log());
            }
            assert!(
                start.elapsed() < READY_DEADLINE,
                "sluice not ready; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The broker process's id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the broker runs").id()
    }

    /// Everything the broker logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Sends `signal` to the broker process.
    pub fn signal(&self, signal: i32) {
        let child = self.child.as_ref().expect("the broker runs");
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, signal) };
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let status = c.wait().unwrap();
            assert!(
                status.success(),
                "sluice exited with {status}; log:\n{}",
                self.log()
            );
        }
    }

    /// SIGKILL: no flush, no checkpoint, no marker.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// Starts the broker again on the same port and data directory.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop or kill first");
        self.spawn();
    }

    pub fn partition_dir(&self, topic: &str, partition: i32) -> PathBuf {
        self.data_dir.join(format!("{topic}-{partition}"))
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The `.log` files of a partition directory, sorted.
pub fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    v.sort();
    v
}

/// A raw Kafka connection for sending hand-made frames.
pub struct Raw {
    pub stream: TcpStream,
}

impl Raw {
    pub fn connect(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        Raw { stream }
    }

    pub fn send_bytes(&mut self, b: &[u8]) {
        self.stream.write_all(b).unwrap();
    }

    /// Sends a request: header v1 (or v2 when `flexible`) and body.
    pub fn send(
        &mut self,
        api_key: i16,
        version: i16,
        correlation_id: i32,
        flexible: bool,
        body: &[u8],
    ) {
        let mut payload = Vec::new();
        payload.extend_from_slice(&api_key.to_be_bytes());
        payload.extend_from_slice(&version.to_be_bytes());
        payload.extend_from_slice(&correlation_id.to_be_bytes());
        payload.extend_from_slice(&4i16.to_be_bytes());
        payload.extend_from_slice(b"test");
        if flexible {
            payload.push(0);
        }
        payload.extend_from_slice(body);
        let mut frame = (payload.len() as i32).to_be_bytes().to_vec();
        frame.extend_from_slice(&payload);
        self.send_bytes(&frame);
    }

    /// Reads one response frame; `None` when the broker closed the connection.
    pub fn recv(&mut self) -> Option<Vec<u8>> {
        let mut len = [0u8; 4];
        if self.stream.read_exact(&mut len).is_err() {
            return None;
        }
        let mut buf = vec![0u8; i32::from_be_bytes(len) as usize];
        self.stream.read_exact(&mut buf).ok()?;
        Some(buf)
    }

    /// Whether the broker closed the connection: only end of stream or a
    /// reset counts. A read that times out (the 30 s read timeout set by
    /// [`Raw::connect`]) means the broker kept the connection open without
    /// answering, which is not a close; bytes from the broker are not one
    /// either.
    pub fn closed_by_broker(&mut self) -> bool {
        use std::io::ErrorKind;
        let mut b = [0u8; 1];
        let read = loop {
            match self.stream.read(&mut b) {
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                read => break read,
            }
        };
        match read {
            Ok(0) => true,
            Ok(_) => {
                eprintln!("the broker answered instead of closing");
                false
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                ) =>
            {
                true
            }
            Err(e) => {
                eprintln!(
                    "the connection was not closed by the broker: {e} ({:?})",
                    e.kind()
                );
                false
            }
        }
    }
}

/// librdkafka reports connection churn (a bootstrap connection retired once
/// the broker's id is known, a restart) as errors from `poll`; they are
/// retried internally and are not data errors.
pub fn is_transient(e: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    matches!(
        e.rdkafka_error_code(),
        Some(C::AllBrokersDown | C::BrokerTransportFailure)
    )
}

/// The next message, skipping connection churn; any other error (a corrupt
/// batch, say) fails the test with `context`.
pub fn poll_message<'a>(
    consumer: &'a rdkafka::consumer::BaseConsumer,
    context: impl FnOnce() -> String,
) -> Option<rdkafka::message::BorrowedMessage<'a>> {
    match consumer.poll(Duration::from_millis(200))? {
        Ok(m) => Some(m),
        Err(e) if is_transient(&e) => None,
        Err(e) => panic!("consume error {e}; {}", context()),
    }
}

/// Creates `topic` with `partitions` partitions through the admin API
/// (CreateTopics), failing the test on any error.
pub fn create_topic(broker: &Broker, topic: &str, partitions: i32) {
    create_topic_with(broker, topic, partitions, &[]);
}

/// [`create_topic`] with topic configs.
pub fn create_topic_with(broker: &Broker, topic: &str, partitions: i32, configs: &[(&str, &str)]) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .expect("admin client");
    let new = configs.iter().fold(
        NewTopic::new(topic, partitions, TopicReplication::Fixed(1)),
        |t, (k, v)| t.set(k, v),
    );
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    // A machine loaded by other tests can hold the creation past the
    // operation timeout: ask again (an earlier attempt may have created
    // it) until a generous deadline.
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    loop {
        let error = match futures::executor::block_on(admin.create_topics([&new], &options)) {
            Ok(results) => match results.into_iter().find_map(|r| r.err()) {
                None => return,
                Some((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => return,
                Some((name, code)) if is_retriable_admin(code) => format!("{name}: {code}"),
                Some((name, code)) => panic!("create topic {name}: {code}"),
            },
            Err(e)
                if is_transient(&e) || e.rdkafka_error_code().is_some_and(is_retriable_admin) =>
            {
                e.to_string()
            }
            Err(e) => panic!("create topic {topic}: {e}"),
        };
        assert!(
            std::time::Instant::now() < deadline,
            "create topic {topic}: still failing after 180 s: {error}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn is_retriable_admin(code: rdkafka::types::RDKafkaErrorCode) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    matches!(
        code,
        C::OperationTimedOut | C::RequestTimedOut | C::NotController | C::BrokerNotAvailable
    )
}

/// Sends `req` as `key` v`version` and decodes the response. Bodies are
/// written and read at the codec version laid out as `version`
/// (ListOffsets v11 is v10 on the wire).
pub fn call<Req: Encodable, Resp: Decodable>(
    raw: &mut Raw,
    key: ApiKey,
    version: i16,
    req: &Req,
) -> Option<Resp> {
    let layout = sluice_protocol::api_versions::codec_version(key, version);
    let mut body = bytes::BytesMut::new();
    req.encode(&mut body, layout).unwrap();
    let mut buf = bytes::Bytes::from(call_bytes(raw, key, version, &body)?);
    Some(Resp::decode(&mut buf, layout).unwrap())
}

/// Sends an encoded request body as `key` v`version`; answers the
/// response body, after its header.
pub fn call_bytes(raw: &mut Raw, key: ApiKey, version: i16, body: &[u8]) -> Option<Vec<u8>> {
    let flexible = key.request_header_version(version) >= 2;
    raw.send(key as i16, version, 42, flexible, body);
    let frame = raw.recv()?;
    let mut buf = bytes::Bytes::from(frame);
    let header = ResponseHeader::decode(&mut buf, key.response_header_version(version)).unwrap();
    assert_eq!(header.correlation_id, 42);
    Some(buf.to_vec())
}

/// The same as [`call`] for a peer that may not be ready: any failure to
/// send, read or decode is `None` instead of a panic.
pub fn try_call<Req: Encodable, Resp: Decodable>(
    raw: &mut Raw,
    key: ApiKey,
    version: i16,
    req: &Req,
) -> Option<Resp> {
    let mut body = bytes::BytesMut::new();
    req.encode(&mut body, version).ok()?;
    let mut payload = Vec::new();
    payload.extend_from_slice(&(key as i16).to_be_bytes());
    payload.extend_from_slice(&version.to_be_bytes());
    payload.extend_from_slice(&42i32.to_be_bytes());
    payload.extend_from_slice(&4i16.to_be_bytes());
    payload.extend_from_slice(b"test");
    if key.request_header_version(version) >= 2 {
        payload.push(0);
    }
    payload.extend_from_slice(&body);
    let mut frame = (payload.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&payload);
    raw.stream.write_all(&frame).ok()?;
    let frame = raw.recv()?;
    let mut buf = bytes::Bytes::from(frame);
    let header = ResponseHeader::decode(&mut buf, key.response_header_version(version)).ok()?;
    (header.correlation_id == 42).then_some(())?;
    Resp::decode(&mut buf, version).ok()
}

/// A new idempotent producer's id from the broker at `addr` (InitProducerId
/// v4, no transactional id), checking the answer has no error.
pub fn new_producer_id(addr: SocketAddr) -> i64 {
    use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
    let mut raw = Raw::connect(addr);
    let req = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    let resp: InitProducerIdResponse =
        call(&mut raw, ApiKey::InitProducerId, 4, &req).expect("InitProducerId answer");
    assert_eq!(resp.error_code, 0);
    assert_eq!(resp.producer_epoch, 0);
    resp.producer_id.0
}

/// Runs `timeout ARGS...` (a time limit, then a client program and its
/// arguments) and returns its standard output; fails the test with its
/// output and `context()` (a broker's log, say, read once it failed)
/// unless it succeeds.
pub fn run_client(what: &str, args: &[&str], context: impl FnOnce() -> String) -> String {
    run_client_with(what, args, &[], context)
}

/// [`run_client`] with extra environment variables.
pub fn run_client_with(
    what: &str,
    args: &[&str],
    env: &[(&str, &str)],
    context: impl FnOnce() -> String,
) -> String {
    let out = std::process::Command::new("timeout")
        .args(args)
        .env("KAFKAJS_NO_PARTITIONER_WARNING", "1")
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("{what} could not start: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        panic!(
            "{what} failed:\n{stdout}\n{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            context()
        );
    }
    stdout
}

/// Runs `engine/tests/node/roundtrip.js` (KafkaJS; node, and kafkajs from
/// `npm ci` in engine/tests/node) against `bootstrap`: COUNT messages
/// through a new topic of replication factor `rf`. Fails with the script's
/// output and `context()` when it fails.
pub fn kafkajs_round_trip(
    bootstrap: &str,
    topic: &str,
    count: usize,
    rf: usize,
    context: impl FnOnce() -> String,
) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/node/roundtrip.js");
    let (count, rf) = (count.to_string(), rf.to_string());
    run_client(
        "KafkaJS round trip",
        &["150", "node", script, bootstrap, topic, &count, &rf],
        context,
    );
}

/// Marks that `client` passed a test of each of `features`, for the
/// compatibility matrix in README.md (`scripts/compat-matrix.py` turns
/// the marks into it). Called at the end of a test, once every check of
/// it has passed.
pub fn passed(client: &str, features: &[&str]) {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("compat");
    std::fs::create_dir_all(&dir).expect("creating the compatibility marks' folder");
    for feature in features {
        std::fs::write(dir.join(format!("{client}={feature}")), b"")
            .expect("writing a compatibility mark");
    }
}

/// Builds the Java checks (Apache Kafka's client, from Maven; `.ci/run`
/// fetches it) and returns their class path.
pub fn java_classpath() -> String {
    let pom = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/java/pom.xml");
    let build = Command::new("mvn")
        .args(["-q", "-B", "-f", pom, "package"])
        .output()
        .expect("maven is installed (apt-get install maven)");
    assert!(
        build.status.success(),
        "building the Java client check failed:\n{}{}",
        String::from_utf8_lossy(&build.stdout),
        String::from_utf8_lossy(&build.stderr)
    );
    let target = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/java/target");
    format!("{target}/classes:{target}/lib/*")
}

/// The record bytes a sessionless Fetch v12 returns for partition 0 of
/// `name` from `offset`, checking the answer's error codes.
pub fn fetch_partition_0(raw: &mut Raw, name: &str, offset: i64) -> bytes::Bytes {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse, TopicName};
    use kafka_protocol::protocol::StrBytes;
    let req = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(name.to_string())))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1 << 20)])]);
    let resp: FetchResponse = call(raw, ApiKey::Fetch, 12, &req).expect("Fetch answer");
    assert_eq!(resp.error_code, 0);
    let p = &resp.responses[0].partitions[0];
    assert_eq!(p.error_code, 0, "fetch {name}-0");
    p.records.clone().expect("records")
}
