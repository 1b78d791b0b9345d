//! A long soak of a three-broker Sluice cluster (`scripts/soak.sh`).
//!
//! librdkafka produces to a replicated topic (acks=all, idempotence) at
//! half the rate a probe finds sustainable, while a consumer group reads
//! everything, a second member joins and leaves every few minutes, one
//! broker of three restarts every ten minutes, and retention deletes
//! segments. Every 10 s it samples each broker's RSS, file descriptors and
//! open segment files, and the producer's acknowledgement latency. At the
//! end it checks that every acknowledged record was consumed, that each
//! partition's records came in producing order with none twice, that the
//! brokers' resources stayed flat and that p99 stayed within 2x of the
//! first ten minutes, and writes `soak.csv`, `soak.html` and `summary.txt`
//! to the output directory.

use hdrhistogram::Histogram;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, ClientContext, Message};
use sluice_engine::cluster::local::{LocalCluster, LocalClusterSpec};
use sluice_harness::report::plot::{self, Line, Plot, XAxis};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const TOPIC: &str = "soak";
const PARTITIONS: i32 = 6;
const GROUP: &str = "soak-readers";
/// Records carry their sequence number and send time in the first 16
/// bytes; the rest is filler.
const MESSAGE_BYTES: usize = 100;
const SAMPLE: Duration = Duration::from_secs(10);
const RESTART_EVERY: Duration = Duration::from_secs(600);
const REBALANCE_EVERY: Duration = Duration::from_secs(180);
/// Per partition replica: 6 partitions x 3 replicas x 256 MiB bound the
/// disk to under 5 GB while deleting a segment every few seconds.
const RETENTION_BYTES: u64 = 256 << 20;
const SEGMENT_BYTES: u64 = 32 << 20;
const DEADLINE: Duration = Duration::from_secs(120);

struct Args {
    minutes: u64,
    rate: Option<u64>,
    out: PathBuf,
    binary: PathBuf,
}

fn args() -> Args {
    let mut a = Args {
        minutes: 60,
        rate: None,
        out: PathBuf::from("results/soak/latest"),
        binary: PathBuf::from("target/release/sluice"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .unwrap_or_else(|| fail(&format!("{flag} needs a value")));
        match flag.as_str() {
            "--minutes" => a.minutes = value.parse().unwrap_or_else(|_| fail("--minutes N")),
            "--rate" => a.rate = Some(value.parse().unwrap_or_else(|_| fail("--rate MSG_PER_S"))),
            "--out" => a.out = value.into(),
            "--sluice" => a.binary = value.into(),
            _ => fail(&format!(
                "unknown flag {flag}; flags: --minutes N, --rate MSG_PER_S, --out DIR, --sluice PATH"
            )),
        }
    }
    a
}

fn fail(msg: &str) -> ! {
    eprintln!("soak: {msg}");
    std::process::exit(2)
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_micros() as u64
}

/// A set of sequence numbers, one bit each.
struct Bits {
    words: Vec<AtomicU64>,
}

impl Bits {
    fn new(capacity: u64) -> Bits {
        Bits {
            words: (0..capacity.div_ceil(64))
                .map(|_| AtomicU64::new(0))
                .collect(),
        }
    }

    /// Sets bit `i`; whether it was set before.
    fn set(&self, i: u64) -> bool {
        let bit = 1u64 << (i % 64);
        self.words[(i / 64) as usize].fetch_or(bit, Ordering::Relaxed) & bit != 0
    }

    fn get(&self, i: u64) -> bool {
        self.words[(i / 64) as usize].load(Ordering::Relaxed) & (1u64 << (i % 64)) != 0
    }
}

/// What the producer's delivery callbacks record.
struct Acks {
    acked: Bits,
    count: AtomicU64,
    failed: AtomicU64,
    /// Acknowledgement latency (µs) since the last sample.
    window: Mutex<Histogram<u64>>,
}

impl Acks {
    fn new(capacity: u64) -> Acks {
        Acks {
            acked: Bits::new(capacity),
            count: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            window: Mutex::new(latency_histogram()),
        }
    }
}

fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds")
}

/// Unpaced for 30 s: the second half's acknowledged rate is what the
/// cluster sustains here; the soak runs at half of it. Returns that rate
/// and the next sequence number.
fn probe(bootstrap: &str, stop: &AtomicBool) -> (u64, u64) {
    let acks = Arc::new(Acks::new(60_000_000));
    let p = producer(bootstrap, &acks);
    let half = Duration::from_secs(15);
    let seq = produce(&p, 0, None, Instant::now() + half, stop);
    let before = acks.count.load(Ordering::Relaxed);
    let seq = produce(&p, seq, None, Instant::now() + half, stop);
    let sustained = (acks.count.load(Ordering::Relaxed) - before) / half.as_secs();
    let _ = p.flush(Duration::from_secs(60));
    println!("probe: {sustained} msg/s acknowledged; the soak runs at half");
    ((sustained / 2).max(1), seq)
}

struct AckContext(Arc<Acks>);

impl ClientContext for AckContext {}

impl ProducerContext for AckContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(m) => {
                let (seq, sent) = decode(m.payload().unwrap_or_default());
                self.0.acked.set(seq);
                self.0.count.fetch_add(1, Ordering::Relaxed);
                let latency = now_us().saturating_sub(sent).max(1);
                let _ = self.0.window.lock().unwrap().record(latency);
            }
            Err(_) => {
                self.0.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn encode(seq: u64) -> Vec<u8> {
    let mut v = vec![b'.'; MESSAGE_BYTES];
    v[..8].copy_from_slice(&seq.to_be_bytes());
    v[8..16].copy_from_slice(&now_us().to_be_bytes());
    v
}

fn decode(payload: &[u8]) -> (u64, u64) {
    let word = |i: usize| u64::from_be_bytes(payload[i..i + 8].try_into().expect("16 bytes"));
    (word(0), word(8))
}

/// What the consumers saw.
struct Reads {
    consumed: Bits,
    count: AtomicU64,
    /// Per partition: the last offset read and its record's sequence.
    last: Mutex<HashMap<i32, (i64, u64)>>,
    anomalies: Mutex<Vec<String>>,
}

impl Reads {
    fn record(&self, partition: i32, offset: i64, seq: u64) {
        self.consumed.set(seq);
        self.count.fetch_add(1, Ordering::Relaxed);
        let mut last = self.last.lock().unwrap();
        match last.get(&partition) {
            // The next record of the partition: it must come after the one
            // before it in producing order (one producer, idempotent).
            Some(&(o, s)) if offset == o + 1 && seq <= s => {
                self.anomalies.lock().unwrap().push(format!(
                    "partition {partition}: offset {offset} holds sequence {seq}, not after {s} at offset {o}"
                ));
            }
            Some(&(o, _)) if offset > o + 1 => {
                self.anomalies.lock().unwrap().push(format!(
                    "partition {partition}: offsets {} to {} were skipped",
                    o + 1,
                    offset - 1
                ));
            }
            // A re-read after a rebalance starts earlier: nothing to check.
            _ => {}
        }
        last.insert(partition, (offset, seq));
    }
}

/// A consumer of the group, polling until `stop`.
fn reader(bootstrap: String, reads: Arc<Reads>, stop: Arc<AtomicBool>) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", GROUP)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("session.timeout.ms", "10000")
        .create()
        .expect("consumer");
    consumer.subscribe(&[TOPIC]).expect("subscribe");
    while !stop.load(Ordering::Relaxed) {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let (seq, _) = decode(m.payload().unwrap_or_default());
                reads.record(m.partition(), m.offset(), seq);
            }
            Some(Err(e)) => eprintln!("soak: consumer: {e}"),
            None => {}
        }
    }
    consumer.unsubscribe();
}

fn producer(bootstrap: &str, acks: &Arc<Acks>) -> ThreadedProducer<AckContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .create_with_context(AckContext(Arc::clone(acks)))
        .expect("producer")
}

/// Sends records `seq..` at `rate` per second (unpaced when `None`) until
/// `until`; returns the next sequence number.
fn produce(
    p: &ThreadedProducer<AckContext>,
    mut seq: u64,
    rate: Option<u64>,
    until: Instant,
    stop: &AtomicBool,
) -> u64 {
    let start = Instant::now();
    let first = seq;
    while Instant::now() < until && !stop.load(Ordering::Relaxed) {
        let due = match rate {
            Some(r) => first + (start.elapsed().as_secs_f64() * r as f64) as u64,
            None => seq + 1000,
        };
        while seq < due {
            let payload = encode(seq);
            let key = seq.to_be_bytes();
            match p.send(BaseRecord::to(TOPIC).payload(&payload).key(&key)) {
                Ok(()) => seq += 1,
                Err((e, _)) => {
                    if !matches!(
                        e.rdkafka_error_code(),
                        Some(rdkafka::types::RDKafkaErrorCode::QueueFull)
                    ) {
                        eprintln!("soak: send: {e}");
                    }
                    std::thread::sleep(Duration::from_millis(1));
                    break;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    seq
}

/// One sample of one broker's process.
#[derive(Clone, Copy, Default)]
struct Usage {
    rss_kib: u64,
    fds: u64,
    segments: u64,
}

fn usage(pid: u32) -> Usage {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let (mut fds, mut segments) = (0, 0);
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for e in dir.flatten() {
            fds += 1;
            if std::fs::read_link(e.path())
                .map(|t| t.extension().is_some_and(|x| x == "log"))
                .unwrap_or(false)
            {
                segments += 1;
            }
        }
    }
    Usage {
        rss_kib,
        fds,
        segments,
    }
}

struct Row {
    t_s: f64,
    usage: Vec<Usage>,
    p50_ms: f64,
    p99_ms: f64,
    acked: u64,
    consumed: u64,
    event: String,
}

fn main() {
    if let [flag, dir] = &std::env::args().skip(1).collect::<Vec<_>>()[..] {
        if flag == "--check" {
            return check(Path::new(dir));
        }
    }
    let a = args();
    std::fs::create_dir_all(&a.out).unwrap_or_else(|e| fail(&format!("{}: {e}", a.out.display())));
    let data = tempfile_dir();
    let mut spec = LocalClusterSpec::new(a.binary.clone(), data.clone(), 3);
    spec.overrides = vec![
        "group.initial.rebalance.delay.ms=0".into(),
        format!("log.segment.bytes={SEGMENT_BYTES}"),
        format!("log.retention.bytes={RETENTION_BYTES}"),
        "log.retention.check.interval.ms=5000".into(),
        "offsets.topic.replication.factor=3".into(),
    ];
    let mut cluster = LocalCluster::start(spec, DEADLINE)
        .unwrap_or_else(|e| fail(&format!("starting the cluster: {e}")));
    let bootstrap = cluster.bootstrap();
    create_topic(&bootstrap);

    let total = Duration::from_secs(a.minutes * 60);
    let stop = Arc::new(AtomicBool::new(false));
    let (rate, probe_end) = match a.rate {
        Some(r) => (r, 0),
        None => probe(&bootstrap, &stop),
    };
    // One bit per sequence number the run can send, with 10% to spare.
    let capacity = probe_end + (rate as f64 * (total.as_secs() + 120) as f64 * 1.1) as u64;
    let acks = Arc::new(Acks::new(capacity));
    let p = producer(&bootstrap, &acks);
    let seq = probe_end;

    let reads = Arc::new(Reads {
        consumed: Bits::new(capacity),
        count: AtomicU64::new(0),
        last: Mutex::new(HashMap::new()),
        anomalies: Mutex::new(Vec::new()),
    });
    let main_reader = {
        let (b, r, s) = (bootstrap.clone(), Arc::clone(&reads), Arc::clone(&stop));
        std::thread::spawn(move || reader(b, r, s))
    };
    let sender = {
        let stop = Arc::clone(&stop);
        let until = Instant::now() + total;
        std::thread::spawn(move || {
            let next = produce(&p, seq, Some(rate), until, &stop);
            let _ = p.flush(Duration::from_secs(120));
            next
        })
    };

    println!(
        "soaking {} min at {rate} msg/s of {MESSAGE_BYTES} B; data in {}",
        a.minutes,
        data.display()
    );
    let start = Instant::now();
    let mut rows = Vec::new();
    let mut restarts = 0;
    let mut second: Option<(Arc<AtomicBool>, std::thread::JoinHandle<()>)> = None;
    let mut next_restart = RESTART_EVERY;
    let mut next_rebalance = REBALANCE_EVERY;
    while start.elapsed() < total {
        std::thread::sleep(
            SAMPLE.saturating_sub(start.elapsed().saturating_sub(SAMPLE * rows.len() as u32)),
        );
        let mut event = String::new();
        if start.elapsed() >= next_rebalance {
            next_rebalance += REBALANCE_EVERY;
            event = match second.take() {
                Some((s, h)) => {
                    s.store(true, Ordering::Relaxed);
                    let _ = h.join();
                    "second reader left".into()
                }
                None => {
                    let s = Arc::new(AtomicBool::new(false));
                    let (b, r, s2) = (bootstrap.clone(), Arc::clone(&reads), Arc::clone(&s));
                    second = Some((s, std::thread::spawn(move || reader(b, r, s2))));
                    "second reader joined".into()
                }
            };
        }
        if start.elapsed() >= next_restart {
            next_restart += RESTART_EVERY;
            let node = restarts % 3 + 1;
            restarts += 1;
            cluster.stop(node);
            cluster
                .restart(node, DEADLINE)
                .unwrap_or_else(|e| fail(&format!("restarting broker {node}: {e}")));
            event = format!("broker {node} restarted");
        }
        let window = std::mem::replace(&mut *acks.window.lock().unwrap(), latency_histogram());
        let row = Row {
            t_s: start.elapsed().as_secs_f64(),
            usage: (1..=3)
                .map(|n| cluster.pid(n).map(usage).unwrap_or_default())
                .collect(),
            p50_ms: window.value_at_quantile(0.5) as f64 / 1000.0,
            p99_ms: window.value_at_quantile(0.99) as f64 / 1000.0,
            acked: acks.count.load(Ordering::Relaxed),
            consumed: reads.count.load(Ordering::Relaxed),
            event,
        };
        println!(
            "{:>6.0}s rss MiB {:?} fds {:?} segments {:?} p99 {:.1} ms acked {} consumed {} {}",
            row.t_s,
            row.usage
                .iter()
                .map(|u| u.rss_kib / 1024)
                .collect::<Vec<_>>(),
            row.usage.iter().map(|u| u.fds).collect::<Vec<_>>(),
            row.usage.iter().map(|u| u.segments).collect::<Vec<_>>(),
            row.p99_ms,
            row.acked,
            row.consumed,
            row.event
        );
        rows.push(row);
    }
    let sent = sender.join().expect("producer thread");
    // Let the readers catch up with everything acknowledged.
    let caught_up = Instant::now();
    while (0..sent).any(|s| acks.acked.get(s) && !reads.consumed.get(s))
        && caught_up.elapsed() < DEADLINE
    {
        std::thread::sleep(Duration::from_secs(2));
    }
    stop.store(true, Ordering::Relaxed);
    if let Some((s, h)) = second.take() {
        s.store(true, Ordering::Relaxed);
        let _ = h.join();
    }
    let _ = main_reader.join();
    cluster.stop_all();

    let lost: Vec<u64> = (probe_end..sent)
        .filter(|&s| acks.acked.get(s) && !reads.consumed.get(s))
        .collect();
    let verdict = verdict(
        &rows,
        &lost,
        &reads,
        &acks,
        sent - probe_end,
        rate,
        restarts,
    );
    print!("{verdict}");
    write_outputs(&a.out, &rows, &verdict);
    if verdict.contains("FAIL") {
        eprintln!("soak: broker logs kept in {}", data.display());
        std::process::exit(1);
    }
    let _ = std::fs::remove_dir_all(&data);
}

fn tempfile_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sluice-soak-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn create_topic(bootstrap: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client");
    let topic = NewTopic::new(TOPIC, PARTITIONS, TopicReplication::Fixed(3))
        .set("min.insync.replicas", "2");
    let rt = futures::executor::block_on(admin.create_topics([&topic], &AdminOptions::new()))
        .unwrap_or_else(|e| fail(&format!("creating {TOPIC}: {e}")));
    for r in rt {
        if let Err((t, e)) = r {
            fail(&format!("creating {t}: {e}"));
        }
    }
}

/// The checks, as text: each line PASS or FAIL with its figures.
fn verdict(
    rows: &[Row],
    lost: &[u64],
    reads: &Reads,
    acks: &Acks,
    sent: u64,
    rate: u64,
    restarts: usize,
) -> String {
    let mut s = String::new();
    let pass = |ok: bool| if ok { "PASS" } else { "FAIL" };
    let acked = acks.count.load(Ordering::Relaxed);
    let _ = writeln!(
        s,
        "rate {rate} msg/s of {MESSAGE_BYTES} B; sent {sent}, acknowledged {acked}, failed {}, \
         consumed {} (with the probe's and re-reads); {restarts} broker restarts",
        acks.failed.load(Ordering::Relaxed),
        reads.count.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        s,
        "{} no acknowledged record lost: {} missing{}",
        pass(lost.is_empty()),
        lost.len(),
        lost.first()
            .map(|f| format!(" (first: sequence {f})"))
            .unwrap_or_default()
    );
    let anomalies = reads.anomalies.lock().unwrap();
    let _ = writeln!(
        s,
        "{} order and uniqueness per partition: {} anomalies",
        pass(anomalies.is_empty()),
        anomalies.len()
    );
    for a in anomalies.iter().take(20) {
        let _ = writeln!(s, "    {a}");
    }
    s.push_str(&trends(rows));
    s
}

/// Resource and latency trends, as PASS or FAIL lines: each broker's RSS,
/// file descriptors and open segments in the last ten minutes against
/// minutes 10 to 20 (the log fills up to its retention in the first ones:
/// about 5 minutes at 30,000 msg/s), and p99 (the median of its 10 s
/// windows over each ten minutes) against the first ten minutes.
fn trends(rows: &[Row]) -> String {
    let mut s = String::new();
    let pass = |ok: bool| if ok { "PASS" } else { "FAIL" };
    let block = (600 / SAMPLE.as_secs()) as usize;
    if rows.len() < 3 * block {
        let _ = writeln!(
            s,
            "(under 30 minutes: the trends need three ten-minute blocks)"
        );
        return s;
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let settled = &rows[block..2 * block];
    let last = &rows[rows.len() - block..];
    for (name, get) in [
        (
            "RSS MiB",
            (|u: &Usage| u.rss_kib as f64 / 1024.0) as fn(&Usage) -> f64,
        ),
        ("file descriptors", |u: &Usage| u.fds as f64),
        ("open segments", |u: &Usage| u.segments as f64),
    ] {
        for b in 0..3 {
            let f = median(&mut settled.iter().map(|r| get(&r.usage[b])).collect());
            let l = median(&mut last.iter().map(|r| get(&r.usage[b])).collect());
            // Flat within 25%, with a little absolute room for counts.
            let _ = writeln!(
                s,
                "{} broker {} {name}: minutes 10-20 {f:.0}, last ten minutes {l:.0}",
                pass(l <= f * 1.25 + 8.0),
                b + 1
            );
        }
    }
    // The first minute is left out: clients connect, caches fill.
    let first = median(&mut rows[6..block].iter().map(|r| r.p99_ms).collect());
    let worst = rows[block..]
        .chunks(block)
        .map(|c| median(&mut c.iter().map(|r| r.p99_ms).collect()))
        .fold(0.0, f64::max);
    let _ = writeln!(
        s,
        "{} p99 (median of 10 s windows per ten minutes): first ten minutes {first:.1} ms, \
         worst later {worst:.1} ms (bound 2x)",
        pass(worst <= 2.0 * first)
    );
    s
}

/// `--check DIR`: the trends of a finished run again, from its soak.csv.
fn check(dir: &Path) {
    let path = dir.join("soak.csv");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| fail(&format!("{}: {e}", path.display())));
    let rows: Vec<Row> = text
        .lines()
        .skip(1)
        .enumerate()
        .map(|(i, line)| {
            let f: Vec<&str> = line.split(',').collect();
            let num = |k: usize| -> f64 {
                f.get(k).and_then(|v| v.parse().ok()).unwrap_or_else(|| {
                    fail(&format!(
                        "{} line {}: field {} is not a number",
                        path.display(),
                        i + 2,
                        k + 1
                    ))
                })
            };
            Row {
                t_s: num(0),
                p50_ms: num(1),
                p99_ms: num(2),
                acked: num(3) as u64,
                consumed: num(4) as u64,
                usage: (0..3)
                    .map(|b| Usage {
                        rss_kib: num(5 + 3 * b) as u64,
                        fds: num(6 + 3 * b) as u64,
                        segments: num(7 + 3 * b) as u64,
                    })
                    .collect(),
                event: f.get(14).unwrap_or(&"").to_string(),
            }
        })
        .collect();
    print!("{}", trends(&rows));
}

fn write_outputs(out: &Path, rows: &[Row], verdict: &str) {
    let mut csv = String::from("t_s,p50_ms,p99_ms,acked,consumed");
    for b in 1..=3 {
        let _ = write!(csv, ",rss_kib_{b},fds_{b},segments_{b}");
    }
    csv.push_str(",event\n");
    for r in rows {
        let _ = write!(
            csv,
            "{:.1},{:.2},{:.2},{},{}",
            r.t_s, r.p50_ms, r.p99_ms, r.acked, r.consumed
        );
        for u in &r.usage {
            let _ = write!(csv, ",{},{},{}", u.rss_kib, u.fds, u.segments);
        }
        let _ = writeln!(csv, ",{}", r.event);
    }
    let minutes = |r: &Row| r.t_s / 60.0;
    let per_broker = |id: &str, title: &str, unit: &str, get: fn(&Usage) -> f64| Plot {
        id: id.into(),
        title: title.into(),
        x_label: "minutes".into(),
        y_label: unit.into(),
        x_axis: XAxis::Linear("min"),
        y_unit: unit.into(),
        markers: false,
        series: (0..3)
            .map(|b| Line {
                name: format!("broker {}", b + 1),
                colour: b,
                dash: 0,
                points: rows
                    .iter()
                    .map(|r| (minutes(r), get(&r.usage[b])))
                    .collect(),
            })
            .collect(),
    };
    let plots = [
        per_broker("rss", "Resident memory", "MiB", |u| {
            u.rss_kib as f64 / 1024.0
        }),
        per_broker("fds", "Open file descriptors", "fds", |u| u.fds as f64),
        per_broker("segments", "Open segment files", "files", |u| {
            u.segments as f64
        }),
        Plot {
            id: "latency".into(),
            title: "Acknowledgement latency per 10 s".into(),
            x_label: "minutes".into(),
            y_label: "ms".into(),
            x_axis: XAxis::Linear("min"),
            y_unit: "ms".into(),
            markers: false,
            series: vec![
                Line {
                    name: "p50".into(),
                    colour: 0,
                    dash: 0,
                    points: rows.iter().map(|r| (minutes(r), r.p50_ms)).collect(),
                },
                Line {
                    name: "p99".into(),
                    colour: 1,
                    dash: 0,
                    points: rows.iter().map(|r| (minutes(r), r.p99_ms)).collect(),
                },
            ],
        },
    ];
    let events: String = rows
        .iter()
        .filter(|r| !r.event.is_empty())
        .map(|r| format!("<li>{:.1} min: {}</li>", minutes(r), r.event))
        .collect();
    let html = format!(
        "<!doctype html><meta charset=utf-8><title>Sluice soak</title><style>body{{font-family:sans-serif;max-width:900px;margin:auto}}{}</style>\
         <h1>Sluice soak</h1><pre>{}</pre>{}<h2>Events</h2><ul>{events}</ul><script>{}</script>",
        plot::STYLE,
        sluice_harness::report::html::esc(verdict),
        plots.iter().map(plot::render).collect::<String>(),
        plot::SCRIPT
    );
    for (name, text) in [
        ("soak.csv", csv),
        ("soak.html", html),
        ("summary.txt", verdict.to_string()),
    ] {
        std::fs::write(out.join(name), text)
            .unwrap_or_else(|e| fail(&format!("writing {}: {e}", out.join(name).display())));
    }
    println!("wrote {}", out.display());
}
