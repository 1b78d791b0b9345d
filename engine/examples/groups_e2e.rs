//! Consumer-group coordinator benchmark against a `sluice` process.
//!
//! Starts the release-built `sluice` binary (one shard, a free loopback
//! port, a fresh temporary data directory) once per broker setting, or
//! measures the broker at `--bootstrap` as it is configured, and prints
//! one JSON line per measurement:
//!
//! - `rebalance`: three librdkafka consumers subscribe to a 100-partition
//!   topic at once. `stable_s` is the time from the subscribe calls until
//!   DescribeGroups reports the group Stable with three members whose
//!   assignments cover every partition exactly once; `assigned_s` until
//!   the three consumers themselves hold such an assignment;
//!   `assignments` how many the consumers received (3: one generation).
//!   Measured with `group.initial.rebalance.delay.ms` at 3000 (the
//!   default) and at 0; the target is 2 × delay + 100 ms.
//! - `commit`: synchronous OffsetCommits of one group, one partition per
//!   request, with the default flush policy (answered once in the page
//!   cache) and with `flush.messages=1` (answered after an fdatasync,
//!   which concurrent commits share). Clients: librdkafka members using
//!   `CommitMode::Sync`, and a raw client that waits for each answer
//!   (`raw-sync`) or keeps several requests in flight on one connection
//!   (`raw-pipelined`). A librdkafka sync commit crosses several of its
//!   threads, so its latency, not the broker, bounds one member; the raw
//!   client shows what the broker does. A raw-sync ApiVersions run gives
//!   the cost of a bare request round trip on the same machine. Target:
//!   20,000 commits/s. Each line has the broker's and the clients' CPU
//!   per request and the hypervisor's steal over the counted seconds.
//!
//! ```text
//! cargo build --release -p sluice-engine --bin sluice --example groups_e2e
//! target/release/examples/groups_e2e [--bootstrap HOST:PORT] [--sluice PATH]
//!     [--only rebalance|commit] [--repeats N] [--seconds S] [--cores N]
//! ```

use bytes::{Buf, Bytes, BytesMut};
use clap::{Parser, ValueEnum};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, ConsumerProtocolAssignment,
    DescribeGroupsRequest, DescribeGroupsResponse, FindCoordinatorRequest, FindCoordinatorResponse,
    GroupId, OffsetCommitRequest, OffsetCommitResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, DefaultConsumerContext, Rebalance,
};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::collections::VecDeque;
use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// Partitions of the rebalanced topic, as the issue's target states it.
const REBALANCE_PARTITIONS: usize = 100;
/// Consumers in the rebalanced group.
const REBALANCE_MEMBERS: usize = 3;
/// A rebalance taking longer than this is a failure, not a measurement:
/// the slowest expected one is 2 × 3 s plus a 3 s heartbeat.
const REBALANCE_WAIT_MAX: Duration = Duration::from_secs(30);
/// Partitions of the committed topic: enough for every committer to own one.
const COMMIT_PARTITIONS: usize = 16;
/// Commits before this much of a run has passed are not counted: the
/// first ones pay for connection setup and cold caches.
const WARMUP: Duration = Duration::from_millis(500);
/// Latency samples kept per committer thread (about 4 MB at most).
const LATENCY_SAMPLES_MAX: usize = 1_000_000;
/// The largest response this client accepts; DescribeGroups of three
/// members with 100 partitions is a few KiB.
const RESPONSE_BYTES_MAX: usize = 16 * 1024 * 1024;
/// How long the broker gets to start listening.
const BROKER_START_MAX: Duration = Duration::from_secs(15);
const TARGET_COMMITS_PER_S: f64 = 20_000.0;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Part {
    Rebalance,
    Commit,
}

#[derive(Parser)]
#[command(about = "Rebalance time and OffsetCommit throughput of sluice's group coordinator")]
struct Args {
    /// Measure this running broker as configured instead of starting one
    /// per setting.
    #[arg(long, value_name = "HOST:PORT")]
    bootstrap: Option<String>,
    /// The broker binary (default: `sluice` in the directory above this
    /// example's).
    #[arg(long)]
    sluice: Option<PathBuf>,
    /// Run only one part.
    #[arg(long, value_enum)]
    only: Option<Part>,
    /// Rebalances measured per setting.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Seconds each commit measurement counts, after a 0.5 s warm-up.
    #[arg(long, default_value_t = 3)]
    seconds: u64,
    /// Shards of the started broker.
    #[arg(long, default_value_t = 1)]
    cores: usize,
}

fn main() {
    let args = Args::parse();
    assert!(args.repeats > 0, "--repeats must be positive");
    assert!(args.seconds > 0, "--seconds must be positive");
    let run = |part| args.only.is_none() || args.only == Some(part);
    if let Some(bootstrap) = &args.bootstrap {
        if run(Part::Rebalance) {
            rebalance_bench(bootstrap, None, args.repeats);
        }
        if run(Part::Commit) {
            commit_bench(bootstrap, None, "broker's", args.seconds);
        }
        return;
    }
    let binary = args.sluice.clone().unwrap_or_else(default_binary);
    assert!(
        binary.is_file(),
        "no broker binary at {}: cargo build --release -p sluice-engine --bin sluice",
        binary.display()
    );
    if run(Part::Rebalance) {
        for delay_ms in [3000u32, 0] {
            let delay = delay_ms.to_string();
            let overrides = [("group.initial.rebalance.delay.ms", delay.as_str())];
            let broker = Broker::start(&binary, args.cores, &overrides);
            rebalance_bench(&broker.bootstrap, Some(delay_ms), args.repeats);
        }
    }
    if run(Part::Commit) {
        disk_probe();
        for flush in [None, Some("1")] {
            // No initial delay: the librdkafka committers' group forms at
            // once, which changes nothing about commits.
            let mut overrides = vec![("group.initial.rebalance.delay.ms", "0")];
            overrides.extend(flush.map(|f| ("flush.messages", f)));
            let broker = Broker::start(&binary, args.cores, &overrides);
            let policy = flush.map_or("default", |_| "flush.messages=1");
            commit_bench(&broker.bootstrap, Some(&broker), policy, args.seconds);
        }
    }
}

/// `sluice` beside the `examples` directory this binary was built into.
fn default_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("own path");
    let release = exe.parent().and_then(Path::parent).expect("examples dir");
    release.join("sluice")
}

// ---------------------------------------------------------------------
// The broker process

/// A `sluice` child process listening on a free loopback port with its own
/// data directory; stopped with SIGTERM (a clean shutdown) when dropped.
struct Broker {
    child: Child,
    bootstrap: String,
    _dir: tempfile::TempDir,
}

impl Broker {
    fn start(binary: &Path, cores: usize, overrides: &[(&str, &str)]) -> Broker {
        let dir = tempfile::tempdir().expect("temp dir");
        // The broker advertises the port it is given, so it needs a
        // concrete one rather than 0.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let bootstrap = format!("127.0.0.1:{port}");
        let mut command = Command::new(binary);
        // The broker's own output goes to stderr, keeping stdout to JSON.
        command
            .stdout(std::io::stderr())
            .env("SLUICE_LOG", "warn")
            .args(["--cores", &cores.to_string(), "--listen", &bootstrap])
            .arg("--data-dir")
            .arg(dir.path().join("data"));
        for (k, v) in overrides {
            command.arg("--override").arg(format!("{k}={v}"));
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
        let mut broker = Broker {
            child,
            bootstrap,
            _dir: dir,
        };
        broker.wait_listening();
        broker
    }

    fn wait_listening(&mut self) {
        let start = Instant::now();
        while TcpStream::connect(&self.bootstrap).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("sluice exited during start: {status}");
            }
            assert!(
                start.elapsed() < BROKER_START_MAX,
                "sluice not listening on {} after {BROKER_START_MAX:?}",
                self.bootstrap
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// CPU seconds the broker has used.
    fn cpu_s(&self) -> f64 {
        process_cpu_s(self.child.id())
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid");
        // SAFETY: signals our own child, which has not been reaped yet.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("sluice ignored SIGTERM for 10 s; killing it");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU seconds (user + system) a process has used, from /proc.
fn process_cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/stat: {e}"));
    // Fields after the parenthesised command name, from field 3 on:
    // utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')').expect("stat format") + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    // SAFETY: sysconf has no preconditions.
    let per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    assert!(per_s > 0, "clock ticks per second");
    ticks as f64 / per_s as f64
}

/// Steal and total CPU ticks of the machine, from the first line of
/// /proc/stat: user nice system idle iowait irq softirq steal ...
fn machine_steal_and_total_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").expect("/proc/stat");
    let line = stat.lines().next().expect("cpu line");
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|t| t.parse().expect("tick count"))
        .collect();
    assert_eq!(ticks.len(), 8, "/proc/stat cpu line: {line}");
    (ticks[7], ticks.iter().sum())
}

fn create_topic(bootstrap: &str, name: &str, partitions: usize) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client");
    let count = i32::try_from(partitions).expect("partition count");
    let topic = NewTopic::new(name, count, TopicReplication::Fixed(1));
    let results = futures::executor::block_on(admin.create_topics([&topic], &AdminOptions::new()))
        .expect("CreateTopics");
    for r in results {
        match r {
            Ok(_) => {}
            // Already there: a broker given with --bootstrap, measured twice.
            Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, code)) => panic!("creating topic {t}: {code}"),
        }
    }
}

/// The broker creates `__consumer_offsets` (50 partitions by default) on
/// the first group request; that happens here rather than inside a
/// measurement.
fn create_offsets_topic(bootstrap: &str) {
    coordinator(bootstrap, "warm-up");
}

/// fdatasyncs per second of small appends to a file beside the broker's
/// data, which bounds what `flush.messages=1` can do for one connection.
fn disk_probe() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut file = std::fs::File::create(dir.path().join("probe")).expect("probe file");
    let record = [0x61u8; 200];
    let start = Instant::now();
    let mut syncs = 0u32;
    while start.elapsed() < Duration::from_secs(1) {
        file.write_all(&record).expect("probe write");
        file.sync_data().expect("probe fdatasync");
        syncs += 1;
    }
    let per_s = f64::from(syncs) / start.elapsed().as_secs_f64();
    println!("{{\"bench\":\"disk\",\"fdatasync_of_200_byte_appends_per_s\":{per_s:.0}}}");
}

// ---------------------------------------------------------------------
// A raw Kafka client

/// A blocking connection that may have several requests in flight; the
/// broker answers a connection's requests in order, so responses are
/// matched to the oldest request sent.
struct Conn {
    reader: BufReader<TcpStream>,
    correlation: i32,
    in_flight: VecDeque<(i32, ApiKey, i16)>,
}

impl Conn {
    fn connect(addr: &str) -> Conn {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream.set_nodelay(true).expect("TCP_NODELAY");
        Conn {
            reader: BufReader::with_capacity(64 * 1024, stream),
            correlation: 0,
            in_flight: VecDeque::new(),
        }
    }

    fn send<R: Encodable>(&mut self, key: ApiKey, version: i16, request: &R) {
        self.correlation = self.correlation.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str("groups-bench")));
        let mut frame = BytesMut::with_capacity(256);
        frame.extend_from_slice(&[0; 4]);
        header
            .encode(&mut frame, key.request_header_version(version))
            .expect("encode header");
        request.encode(&mut frame, version).expect("encode request");
        let len = u32::try_from(frame.len() - 4).expect("frame length");
        frame[..4].copy_from_slice(&len.to_be_bytes());
        self.reader.get_mut().write_all(&frame).expect("send");
        self.in_flight.push_back((self.correlation, key, version));
    }

    fn recv<A: Decodable>(&mut self) -> A {
        let (correlation, key, version) = self.in_flight.pop_front().expect("a request in flight");
        let mut prefix = [0u8; 4];
        self.reader
            .read_exact(&mut prefix)
            .expect("response length");
        let len = u32::from_be_bytes(prefix) as usize;
        assert!(len <= RESPONSE_BYTES_MAX, "response of {len} bytes");
        let mut frame = vec![0u8; len];
        self.reader.read_exact(&mut frame).expect("response");
        let mut body = Bytes::from(frame);
        let header = ResponseHeader::decode(&mut body, key.response_header_version(version))
            .expect("response header");
        assert_eq!(header.correlation_id, correlation, "responses out of order");
        A::decode(&mut body, version).expect("response body")
    }

    fn call<R: Encodable, A: Decodable>(&mut self, key: ApiKey, version: i16, request: &R) -> A {
        self.send(key, version, request);
        self.recv()
    }
}

/// The coordinator's address for `group`, retried while the broker is
/// still creating the offsets topic.
fn coordinator(bootstrap: &str, group: &str) -> String {
    let mut conn = Conn::connect(bootstrap);
    let request = FindCoordinatorRequest::default().with_key(StrBytes::from_string(group.into()));
    let start = Instant::now();
    loop {
        let r: FindCoordinatorResponse = conn.call(ApiKey::FindCoordinator, 3, &request);
        if r.error_code == 0 {
            return format!("{}:{}", r.host, r.port);
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "FindCoordinator({group}): error {}",
            r.error_code
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One member's partitions, as (topic, partition).
type Assignment = Vec<(String, i32)>;

/// The group's state and each member's decoded assignment.
fn describe(conn: &mut Conn, group: &str) -> (String, Vec<Assignment>) {
    let request = DescribeGroupsRequest::default()
        .with_groups(vec![GroupId(StrBytes::from_string(group.into()))]);
    let r: DescribeGroupsResponse = conn.call(ApiKey::DescribeGroups, 5, &request);
    let g = r.groups.into_iter().next().expect("one group described");
    assert_eq!(g.error_code, 0, "DescribeGroups({group})");
    let members = g
        .members
        .into_iter()
        .map(|m| decode_assignment(m.member_assignment))
        .collect();
    (g.group_state.to_string(), members)
}

/// A ConsumerProtocolAssignment: a 2-byte version, then the body.
fn decode_assignment(mut b: Bytes) -> Assignment {
    if b.len() < 2 {
        return Vec::new();
    }
    let version = b.get_i16().clamp(0, 3);
    let a = ConsumerProtocolAssignment::decode(&mut b, version).expect("member assignment");
    a.assigned_partitions
        .into_iter()
        .flat_map(|tp| {
            let topic = tp.topic.to_string();
            tp.partitions.into_iter().map(move |p| (topic.clone(), p))
        })
        .collect()
}

/// Whether there are [`REBALANCE_MEMBERS`] members, each holding some
/// partitions, and together they hold each partition of `topic` exactly
/// once. (A group of the first member alone, holding everything, is not
/// the group being measured.)
fn covers_exactly_once(members: &[Assignment], topic: &str) -> bool {
    if members.len() != REBALANCE_MEMBERS {
        return false;
    }
    let mut seen = [false; REBALANCE_PARTITIONS];
    for a in members {
        if a.is_empty() {
            return false;
        }
        for (t, p) in a {
            let Some(slot) = usize::try_from(*p).ok().and_then(|i| seen.get_mut(i)) else {
                return false;
            };
            if t != topic || *slot {
                return false;
            }
            *slot = true;
        }
    }
    seen.iter().all(|&s| s)
}

// ---------------------------------------------------------------------
// Rebalance time

/// Counts assignments a consumer receives: one per generation it joins.
#[derive(Clone, Default)]
struct AssignCounter(Arc<AtomicUsize>);

impl ClientContext for AssignCounter {}

impl ConsumerContext for AssignCounter {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(_) = rebalance {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A group member with librdkafka's defaults (heartbeat.interval.ms 3000,
/// session.timeout.ms 45000, range/roundrobin assignors).
fn member<C: ConsumerContext>(bootstrap: &str, group: &str, context: C) -> BaseConsumer<C> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create_with_context(context)
        .expect("consumer")
}

struct RebalanceSample {
    stable_s: f64,
    assigned_s: f64,
    /// Assignments handed to the three consumers: 3 when one generation
    /// formed the group, more when a second rebalance was needed.
    assignments: usize,
}

fn rebalance_once(bootstrap: &str, topic: &str, group: &str) -> RebalanceSample {
    let counter = AssignCounter::default();
    let members: Vec<BaseConsumer<AssignCounter>> = (0..REBALANCE_MEMBERS)
        .map(|_| member(bootstrap, group, counter.clone()))
        .collect();
    let mut admin = Conn::connect(&coordinator(bootstrap, group));
    let start = Instant::now();
    for m in &members {
        m.subscribe(&[topic]).expect("subscribe");
    }
    let (mut stable, mut assigned) = (None, None);
    while stable.is_none() || assigned.is_none() {
        assert!(
            start.elapsed() < REBALANCE_WAIT_MAX,
            "group {group} not Stable with every partition assigned once after {REBALANCE_WAIT_MAX:?}"
        );
        for m in &members {
            // The topic is empty: polling serves rebalances, nothing else.
            while m.poll(Duration::ZERO).is_some() {}
        }
        if assigned.is_none() {
            let held: Vec<Assignment> = members.iter().map(client_assignment).collect();
            if covers_exactly_once(&held, topic) {
                assigned = Some(start.elapsed());
            }
        }
        if stable.is_none() {
            let (state, held) = describe(&mut admin, group);
            if state == "Stable" && covers_exactly_once(&held, topic) {
                stable = Some(start.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    RebalanceSample {
        stable_s: stable.expect("loop ended").as_secs_f64(),
        assigned_s: assigned.expect("loop ended").as_secs_f64(),
        assignments: counter.0.load(Ordering::Relaxed),
    }
}

fn client_assignment<C: ConsumerContext>(c: &BaseConsumer<C>) -> Assignment {
    c.assignment()
        .expect("assignment")
        .elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect()
}

/// Rebalances of fresh groups; `delay_ms` is the broker's
/// `group.initial.rebalance.delay.ms` when this program set it.
fn rebalance_bench(bootstrap: &str, delay_ms: Option<u32>, repeats: usize) {
    let topic = "rebalance";
    create_topic(bootstrap, topic, REBALANCE_PARTITIONS);
    create_offsets_topic(bootstrap);
    let run_id = std::process::id();
    let samples: Vec<RebalanceSample> = (0..repeats)
        .map(|i| rebalance_once(bootstrap, topic, &format!("rebalance-{run_id}-{i}")))
        .collect();
    let stable = Summary::of(samples.iter().map(|s| s.stable_s).collect());
    let assigned = Summary::of(samples.iter().map(|s| s.assigned_s).collect());
    let in_order: Vec<String> = samples
        .iter()
        .map(|s| {
            format!(
                "{{\"stable_s\":{:.3},\"assigned_s\":{:.3},\"assignments\":{}}}",
                s.stable_s, s.assigned_s, s.assignments
            )
        })
        .collect();
    let target_s = delay_ms.map(|d| 2.0 * f64::from(d) / 1000.0 + 0.1);
    let json_or_null = |v: Option<String>| v.unwrap_or_else(|| "null".into());
    println!(
        "{{\"bench\":\"rebalance\",\"members\":{REBALANCE_MEMBERS},\"partitions\":{REBALANCE_PARTITIONS},\
         \"initial_rebalance_delay_ms\":{},\"stable_s\":{},\"assigned_s\":{},\"samples\":[{}],\
         \"target_s\":{},\"median_meets_target\":{}}}",
        json_or_null(delay_ms.map(|d| d.to_string())),
        stable.json(),
        assigned.json(),
        in_order.join(","),
        json_or_null(target_s.map(|t| format!("{t:.3}"))),
        json_or_null(target_s.map(|t| (stable.median <= t).to_string())),
    );
}

/// Minimum and median (the upper one of an even count), in seconds.
struct Summary {
    min: f64,
    median: f64,
}

impl Summary {
    fn of(mut all: Vec<f64>) -> Summary {
        assert!(!all.is_empty());
        all.sort_by(f64::total_cmp);
        Summary {
            min: all[0],
            median: all[all.len() / 2],
        }
    }

    fn json(&self) -> String {
        format!("{{\"min\":{:.3},\"median\":{:.3}}}", self.min, self.median)
    }
}

// ---------------------------------------------------------------------
// OffsetCommit throughput

/// What one committer thread counted after the warm-up.
#[derive(Default)]
struct Counted {
    /// Requests answered without an error.
    ok: u64,
    errors: u64,
    latencies_us: Vec<u32>,
}

impl Counted {
    fn record(&mut self, ok: bool, latency: Duration) {
        if ok {
            self.ok += 1;
        } else {
            self.errors += 1;
        }
        if self.latencies_us.len() < LATENCY_SAMPLES_MAX {
            self.latencies_us
                .push(u32::try_from(latency.as_micros()).unwrap_or(u32::MAX));
        }
    }

    fn merge(mut all: Vec<Counted>) -> Counted {
        let mut total = all.pop().unwrap_or_default();
        for c in all {
            total.ok += c.ok;
            total.errors += c.errors;
            total.latencies_us.extend(c.latencies_us);
        }
        total.latencies_us.sort_unstable();
        total
    }

    fn percentile_us(&self, p: f64) -> u32 {
        let n = self.latencies_us.len();
        if n == 0 {
            return 0;
        }
        let i = ((n - 1) as f64 * p).round() as usize;
        self.latencies_us[i]
    }
}

/// When the committers of one measurement count: from the end of a
/// warm-up for `seconds`.
#[derive(Clone)]
struct Window {
    counting_from: Instant,
    until: Instant,
}

/// CPU seconds used inside a window by the broker (when this program
/// started it) and by this program (the clients, librdkafka's threads
/// included).
struct CpuUse {
    broker_s: Option<f64>,
    client_s: f64,
    /// Share of the machine's CPU time the hypervisor gave to others: on
    /// shared cores the figures move with it.
    steal_pct: f64,
}

impl Window {
    fn new(start: Instant, seconds: u64) -> Window {
        Window {
            counting_from: start + WARMUP,
            until: start + WARMUP + Duration::from_secs(seconds),
        }
    }

    /// Sleeps through the window, sampling CPU use at both ends.
    fn sample_cpu(&self, broker: Option<&Broker>) -> CpuUse {
        let own = std::process::id();
        std::thread::sleep(self.counting_from.saturating_duration_since(Instant::now()));
        let (broker_before, client_before) = (broker.map(Broker::cpu_s), process_cpu_s(own));
        let (steal_before, total_before) = machine_steal_and_total_ticks();
        std::thread::sleep(self.until.saturating_duration_since(Instant::now()));
        let (steal, total) = machine_steal_and_total_ticks();
        CpuUse {
            broker_s: broker
                .zip(broker_before)
                .map(|(b, before)| b.cpu_s() - before),
            client_s: process_cpu_s(own) - client_before,
            steal_pct: 100.0 * (steal - steal_before) as f64 / (total - total_before).max(1) as f64,
        }
    }
}

/// Waits, polling, until the `assigned` counts of all members are non-zero
/// and add up to every partition of the committed topic.
fn wait_group_formed<C: ConsumerContext>(
    c: &BaseConsumer<C>,
    assigned: &[AtomicUsize],
    index: usize,
) {
    let start = Instant::now();
    loop {
        while c.poll(Duration::from_millis(10)).is_some() {}
        let held = c.assignment().map_or(0, |a| a.count());
        assigned[index].store(held, Ordering::Relaxed);
        let counts: Vec<usize> = assigned.iter().map(|a| a.load(Ordering::Relaxed)).collect();
        if counts.iter().all(|&n| n > 0) && counts.iter().sum::<usize>() == COMMIT_PARTITIONS {
            return;
        }
        assert!(
            start.elapsed() < REBALANCE_WAIT_MAX,
            "committers' group never formed"
        );
    }
}

/// One librdkafka group member committing one of its partitions at a time
/// with `CommitMode::Sync`, once the whole group is assigned.
fn rdkafka_committer(
    c: &BaseConsumer,
    topic: &str,
    assigned: &[AtomicUsize],
    index: usize,
    ready: &Barrier,
    seconds: u64,
) -> Counted {
    c.subscribe(&[topic]).expect("subscribe");
    wait_group_formed(c, assigned, index);
    let mine: Vec<i32> = client_assignment(c).into_iter().map(|(_, p)| p).collect();
    ready.wait();
    // Every thread leaving the barrier computes the same window, give or
    // take microseconds.
    let window = Window::new(Instant::now(), seconds);
    let mut counted = Counted::default();
    let mut offset = 0i64;
    while Instant::now() < window.until {
        offset += 1;
        let partition = mine[offset as usize % mine.len()];
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(offset))
            .expect("offset list");
        let sent = Instant::now();
        let ok = c.commit(&tpl, CommitMode::Sync).is_ok();
        if sent >= window.counting_from {
            counted.record(ok, sent.elapsed());
        }
        if offset % 256 == 0 {
            // Serves anything librdkafka queued for the application.
            while c.poll(Duration::ZERO).is_some() {}
        }
    }
    counted
}

fn run_rdkafka(
    v: &Variant,
    bootstrap: &str,
    topic: &str,
    broker: Option<&Broker>,
    seconds: u64,
) -> (Counted, CpuUse) {
    let members = v.connections;
    let group = format!("commit-rdkafka-{}-{members}", std::process::id());
    let assigned: Arc<Vec<AtomicUsize>> =
        Arc::new((0..members).map(|_| AtomicUsize::new(0)).collect());
    let ready = Arc::new(Barrier::new(members + 1));
    let threads: Vec<_> = (0..members)
        .map(|i| {
            let c = member(bootstrap, &group, DefaultConsumerContext);
            let topic = topic.to_string();
            let (assigned, ready) = (Arc::clone(&assigned), Arc::clone(&ready));
            std::thread::spawn(move || rdkafka_committer(&c, &topic, &assigned, i, &ready, seconds))
        })
        .collect();
    ready.wait();
    let cpu = Window::new(Instant::now(), seconds).sample_cpu(broker);
    let counted = Counted::merge(
        threads
            .into_iter()
            .map(|t| t.join().expect("committer"))
            .collect(),
    );
    (counted, cpu)
}

/// OffsetCommit v8 of one partition, as a consumer without a group
/// membership (generation -1, no member id) sends it.
fn commit_request(group: &str, topic: &str, partition: i32, offset: i64) -> OffsetCommitRequest {
    OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.into())))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.into())))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(partition)
                .with_committed_offset(offset)])])
}

/// One connection keeping `depth` requests in flight until the window
/// ends (commits of one partition, or ApiVersions), then collecting the
/// answers still owed.
fn raw_committer(
    addr: &str,
    (group, topic, partition): (&str, &str, i32),
    request: Request,
    depth: usize,
    window: &Window,
) -> Counted {
    let mut conn = Conn::connect(addr);
    let mut sent_at: VecDeque<Instant> = VecDeque::with_capacity(depth);
    let mut counted = Counted::default();
    let mut offset = 0i64;
    loop {
        if sent_at.len() < depth && Instant::now() < window.until {
            offset += 1;
            match request {
                Request::OffsetCommit => {
                    let commit = commit_request(group, topic, partition, offset);
                    conn.send(ApiKey::OffsetCommit, 8, &commit);
                }
                Request::ApiVersions => {
                    conn.send(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
                }
            }
            sent_at.push_back(Instant::now());
            continue;
        }
        let Some(sent) = sent_at.pop_front() else {
            return counted;
        };
        let ok = match request {
            Request::OffsetCommit => {
                let r: OffsetCommitResponse = conn.recv();
                r.topics
                    .iter()
                    .flat_map(|t| &t.partitions)
                    .all(|p| p.error_code == 0)
            }
            Request::ApiVersions => conn.recv::<ApiVersionsResponse>().error_code == 0,
        };
        if sent >= window.counting_from && sent < window.until {
            counted.record(ok, sent.elapsed());
        }
    }
}

fn run_raw(
    v: &Variant,
    request: Request,
    bootstrap: &str,
    topic: &str,
    broker: Option<&Broker>,
    seconds: u64,
) -> (Counted, CpuUse) {
    let (connections, depth) = (v.connections, v.depth);
    let group = format!("commit-raw-{}-{connections}x{depth}", std::process::id());
    let addr = coordinator(bootstrap, &group);
    let window = Window::new(Instant::now(), seconds);
    let threads: Vec<_> = (0..connections)
        .map(|i| {
            let (addr, group, topic) = (addr.clone(), group.clone(), topic.to_string());
            let window = window.clone();
            let partition = i32::try_from(i % COMMIT_PARTITIONS).expect("partition");
            std::thread::spawn(move || {
                let target = (group.as_str(), topic.as_str(), partition);
                raw_committer(&addr, target, request, depth, &window)
            })
        })
        .collect();
    let cpu = window.sample_cpu(broker);
    let counted = Counted::merge(
        threads
            .into_iter()
            .map(|t| t.join().expect("committer"))
            .collect(),
    );
    (counted, cpu)
}

#[derive(Clone, Copy)]
enum Client {
    /// librdkafka group members, `CommitMode::Sync`.
    Rdkafka,
    /// This file's client, without a group membership.
    Raw(Request),
}

#[derive(Clone, Copy)]
enum Request {
    OffsetCommit,
    /// The cheapest request there is: what a request round trip costs
    /// on this machine without the coordinator or the disk.
    ApiVersions,
}

impl Client {
    fn request(self) -> &'static str {
        match self {
            Client::Rdkafka | Client::Raw(Request::OffsetCommit) => "OffsetCommit",
            Client::Raw(Request::ApiVersions) => "ApiVersions",
        }
    }
}

/// One commit measurement: which client, how many connections (members,
/// for librdkafka) and how many requests each keeps in flight.
struct Variant {
    name: &'static str,
    client: Client,
    connections: usize,
    depth: usize,
}

const fn variant(name: &'static str, client: Client, connections: usize, depth: usize) -> Variant {
    Variant {
        name,
        client,
        connections,
        depth,
    }
}

/// One member first, as the target states it; then several at once,
/// since concurrent commits are what share an fdatasync under
/// `flush.messages=1`.
const VARIANTS: [Variant; 7] = [
    variant("raw-sync", Client::Raw(Request::ApiVersions), 1, 1),
    variant("rdkafka-sync", Client::Rdkafka, 1, 1),
    variant("rdkafka-sync", Client::Rdkafka, 4, 1),
    variant("raw-sync", Client::Raw(Request::OffsetCommit), 1, 1),
    variant("raw-pipelined", Client::Raw(Request::OffsetCommit), 1, 32),
    variant("raw-sync", Client::Raw(Request::OffsetCommit), 8, 1),
    variant("raw-sync", Client::Raw(Request::OffsetCommit), 32, 1),
];

fn commit_bench(bootstrap: &str, broker: Option<&Broker>, flush: &str, seconds: u64) {
    let topic = "committed";
    create_topic(bootstrap, topic, COMMIT_PARTITIONS);
    create_offsets_topic(bootstrap);
    for v in &VARIANTS {
        let (counted, cpu) = match v.client {
            Client::Rdkafka => run_rdkafka(v, bootstrap, topic, broker, seconds),
            Client::Raw(request) => run_raw(v, request, bootstrap, topic, broker, seconds),
        };
        print_requests(v, flush, seconds, &counted, &cpu);
    }
}

/// One JSON line: each OffsetCommit carries one partition, so requests
/// are commits; the target applies to those only.
fn print_requests(v: &Variant, flush: &str, seconds: u64, counted: &Counted, cpu: &CpuUse) {
    let rate = counted.ok as f64 / seconds as f64;
    let per_request_us = |s: f64| format!("{:.1}", s * 1e6 / counted.ok.max(1) as f64);
    let is_commit = v.client.request() == "OffsetCommit";
    let target = if is_commit {
        format!("{TARGET_COMMITS_PER_S:.0}")
    } else {
        "null".into()
    };
    let meets = if is_commit {
        (rate >= TARGET_COMMITS_PER_S).to_string()
    } else {
        "null".into()
    };
    println!(
        "{{\"bench\":\"commit\",\"flush\":\"{flush}\",\"client\":\"{}\",\"request\":\"{}\",\
         \"connections\":{},\"in_flight_per_connection\":{},\"seconds\":{seconds},\
         \"answered\":{},\"errors\":{},\"requests_per_s\":{rate:.0},\
         \"latency_us\":{{\"p50\":{},\"p99\":{}}},\
         \"cpu_us_per_request\":{{\"broker\":{},\"client\":{}}},\"host_steal_pct\":{:.0},\
         \"target_commits_per_s\":{target},\"meets_target\":{meets}}}",
        v.name,
        v.client.request(),
        v.connections,
        v.depth,
        counted.ok,
        counted.errors,
        counted.percentile_us(0.5),
        counted.percentile_us(0.99),
        cpu.broker_s.map_or("null".into(), per_request_us),
        per_request_us(cpu.client_s),
        cpu.steal_pct,
    );
}
