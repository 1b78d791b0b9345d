//! End-to-end throughput with librdkafka: produce `--bytes` of 1 KiB
//! messages (batch.size 1 MiB, linger.ms 5, acks=1, no compression), then
//! consume them all, and print MB/s for each phase as JSON.
//!
//! cargo run --release -p sluice-engine --example throughput -- BOOTSTRAP TOPIC BYTES [KEY=VALUE...]
//!
//! Any KEY=VALUE after BYTES is set on the consumer (librdkafka's names).
//! With `BROKER_PID` set, each phase also reports the cores (CPU seconds
//! per second) the broker process and this client used: on a small machine
//! the two share the CPUs, and the split shows which side bounds the run.

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use std::time::{Duration, Instant};

const MESSAGE_BYTES: usize = 1024;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (bootstrap, topic) = (&args[1], &args[2]);
    let total: u64 = args[3].parse().expect("BYTES");
    let count = total / MESSAGE_BYTES as u64;
    let payload = vec![0x61u8; MESSAGE_BYTES];

    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("batch.size", "1048576")
        .set("linger.ms", "5")
        .set("acks", "1")
        .set("compression.type", "none")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("message.max.bytes", "2000000")
        .create()
        .expect("producer");
    warm_group_coordinator(bootstrap, topic);
    let broker = std::env::var("BROKER_PID").ok();
    let produce_cpu = CpuClock::start(broker.as_deref());
    let start = Instant::now();
    for _ in 0..count {
        let mut record = BaseRecord::<(), _>::to(topic).payload(&payload[..]);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(600)).expect("flush");
    let produce_s = start.elapsed().as_secs_f64();
    let produce_cores = produce_cpu.cores(produce_s);
    drop(producer);

    let mut consumer = ClientConfig::new();
    consumer
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "throughput")
        .set("enable.auto.commit", "false")
        .set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", "10485760")
        .set("queued.max.messages.kbytes", "1048576");
    for setting in &args[4..] {
        let (key, value) = setting.split_once('=').expect("consumer setting KEY=VALUE");
        consumer.set(key, value);
    }
    let consumer: BaseConsumer = consumer.create().expect("consumer");
    // Without the partition's leader in its metadata cache, an assignment
    // waits for librdkafka's 500 ms offset-query retry before fetching:
    // client start-up, not the broker's throughput.
    consumer
        .fetch_metadata(Some(topic), Duration::from_secs(30))
        .expect("metadata");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let consume_cpu = CpuClock::start(broker.as_deref());
    let start = Instant::now();
    let mut got = 0u64;
    let mut bytes = 0u64;
    while got < count {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            got += 1;
            bytes += m.payload().map_or(0, |p| p.len() as u64);
        }
    }
    let consume_s = start.elapsed().as_secs_f64();
    let consume_cores = consume_cpu.cores(consume_s);
    let mb = bytes as f64 / 1e6;
    println!(
        "{{\"messages\": {count}, \"megabytes\": {mb:.1}, \"produce_mb_s\": {:.1}, \"consume_mb_s\": {:.1}, \"produce_cores\": {produce_cores}, \"consume_cores\": {consume_cores}}}",
        mb / produce_s,
        mb / consume_s
    );
}

/// CPU seconds used by this process and, when known, the broker's, from
/// the start of a phase.
struct CpuClock {
    broker: Option<String>,
    client: f64,
    broker_start: Option<f64>,
}

impl CpuClock {
    fn start(broker: Option<&str>) -> CpuClock {
        CpuClock {
            broker: broker.map(str::to_owned),
            client: cpu_seconds("self").unwrap_or(0.0),
            broker_start: broker.and_then(cpu_seconds),
        }
    }

    /// `{"client": C, "broker": B}` in cores over `wall_s` seconds
    /// (`null` where unknown).
    fn cores(&self, wall_s: f64) -> String {
        let per_s = |used: Option<f64>| match used {
            Some(s) => format!("{:.2}", s / wall_s),
            None => "null".to_owned(),
        };
        let client = cpu_seconds("self").map(|now| now - self.client);
        let broker = match (&self.broker, self.broker_start) {
            (Some(pid), Some(start)) => cpu_seconds(pid).map(|now| now - start),
            _ => None,
        };
        format!(
            "{{\"client\": {}, \"broker\": {}}}",
            per_s(client),
            per_s(broker)
        )
    }
}

/// User plus system CPU seconds of process `pid` ("self" for this one).
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let (utime, stime): (f64, f64) = (fields.get(11)?.parse().ok()?, fields.get(12)?.parse().ok()?);
    // SAFETY: sysconf reads a constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some((utime + stime) / ticks)
}

/// The first FindCoordinator on a fresh broker creates `__consumer_offsets`
/// (50 partitions, each made durable), a once-per-cluster cost that would
/// otherwise land inside the consume phase, so it is paid before timing.
fn warm_group_coordinator(bootstrap: &str, topic: &str) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "throughput")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, 0);
    consumer
        .committed_offsets(tpl, Duration::from_secs(60))
        .expect("committed offsets");
}
