//! One load run against prepared topics: spawn consumers and pinned
//! generator threads, wait out warm-up and test (or build and drain a
//! backlog), stop, merge the per-thread recorders.

use super::consume::{self, AnyConsumer, ConsumerShared, MemberStatus};
use super::generator::{self, GeneratorPlan, Shared};
use super::pace::Pace;
use super::payload::Payloads;
use super::result::{BacklogResult, IntervalRow, Phase, PointHists};
use super::worker::Share;
use crate::client::admin::{self, ClusterMetadata};
use crate::client::conn::Connection;
use crate::client::consumer::Consumer;
use crate::client::endpoint::Endpoint;
use crate::client::error::ClientError;
use crate::client::group_consumer::GroupConsumer;
use crate::client::producer::Producer;
use crate::client::security::Security;
use crate::measure::clock::Clock;
use crate::measure::cpu::{self, CpuUse, Watched};
use crate::measure::hist::{decode, Hist};
use crate::measure::recorder::{Recorder, Totals, INTERVAL_NS};
use crate::workload::{ConsumerAssignment, Workload};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Time between the clock's origin and the first intended send, for threads
/// to start.
const START_DELAY_NS: u64 = 200_000_000;
/// The least time a worker must have left before its agreed start once its
/// consumers are ready: its generator threads must still start.
const WORKER_READY_MIN_NS: u64 = 100_000_000;
/// How long consumers get after producers stop to read what was
/// acknowledged; what is still unread then counts as never consumed.
const DRAIN_NS: u64 = 10_000_000_000;
/// Upper bound on building a backlog.
const BACKLOG_BUILD_MAX: Duration = Duration::from_secs(3_600);
/// Upper bound on consumer groups settling before a load. A healthy group
/// settles within the broker's initial rebalance delay (Kafka: 3 s) plus a
/// heartbeat interval or two; two minutes covers a slow coordinator
/// without hanging a run on a broken one.
const GROUP_SETTLE_MAX: Duration = Duration::from_secs(120);

/// Topics created for a point.
pub struct Prepared {
    pub bootstrap: Endpoint,
    /// Where the consumers bootstrap: `bootstrap`, unless the target has a
    /// listener per protocol and theirs differs from the producers'.
    pub consumer_bootstrap: Endpoint,
    /// How the run's own control connections (topic creation and
    /// deletion) are secured: as the producers' are.
    pub security: Security,
    pub topics: Vec<String>,
    pub md: ClusterMetadata,
}

pub fn prepare(
    bootstrap: impl Into<Endpoint>,
    w: &Workload,
    tag: &str,
) -> Result<Prepared, ClientError> {
    prepare_topics(bootstrap, w, tag, false)
}

/// [`prepare`], where with `shared` the topics may exist already: another
/// worker of the same run made them.
pub fn prepare_topics(
    bootstrap: impl Into<Endpoint>,
    w: &Workload,
    tag: &str,
    shared: bool,
) -> Result<Prepared, ClientError> {
    let bootstrap: Endpoint = bootstrap.into();
    let security = w.producer.security.clone();
    let mut conn = Connection::open(&bootstrap, &security, Duration::from_secs(10))?;
    let topics: Vec<String> = (0..w.topics).map(|i| format!("{tag}-{i}")).collect();
    admin::create_topics_if(
        &mut conn,
        &topics,
        w.partitions_per_topic,
        w.topic.replication_factor,
        &w.topic.configs,
        shared,
    )?;
    let md = admin::wait_for_leaders(&mut conn, &topics, Duration::from_secs(30))?;
    Ok(Prepared {
        consumer_bootstrap: bootstrap.clone(),
        bootstrap,
        security,
        topics,
        md,
    })
}

/// Deletes the point's topics; failures only cost disk.
pub fn cleanup(p: &Prepared) {
    if let Ok(mut c) = Connection::open(&p.bootstrap, &p.security, Duration::from_secs(5)) {
        let _ = admin::delete_topics(&mut c, &p.topics);
    }
}

pub struct LoadSpec {
    /// msg/s over all producers; 0 is unpaced.
    pub rate: f64,
    /// Changes of a paced rate: (time after the measured window's start,
    /// new msg/s over all producers), in order (a ramp).
    pub steps: Vec<(Duration, f64)>,
    pub warmup: Duration,
    pub test: Duration,
    pub consumers: bool,
    pub backlog_bytes: u64,
    pub threads: usize,
    pub pin: bool,
    pub seed: u64,
    /// Processes whose CPU the load's accounting reads (the harness first).
    pub watched: Vec<Watched>,
    /// The broker runs inside the harness process.
    pub in_process_broker: bool,
    /// This process is one worker of several (`run --worker`): it runs its
    /// share of the producers and consumers, and its clock starts at the
    /// agreed instant.
    pub share: Option<Share>,
}

pub struct LoadOutcome {
    pub produce: Totals,
    pub consume: Totals,
    /// Acknowledged messages (all phases) times subscriptions, less those
    /// consumed by the end of the drain.
    pub unconsumed: u64,
    /// The same per subscription (`topic/index`).
    pub unconsumed_by_subscription: BTreeMap<String, u64>,
    /// Messages handed to the client over the whole load.
    pub sent: u64,
    /// Seconds of warm-up before the measured window.
    pub warmup_s: f64,
    pub hists: PointHists,
    pub intervals: Vec<IntervalRow>,
    pub errors: Vec<String>,
    pub window_s: f64,
    pub backlog: Option<BacklogResult>,
    pub interrupted: bool,
    /// Seconds from starting the consumers until every group held all its
    /// partitions (group assignment only); not part of the measured window.
    pub group_settle_s: Option<f64>,
    pub cpu: CpuUse,
    /// Messages this process's producers got acknowledged, per topic (all
    /// phases).
    pub acknowledged_by_topic: BTreeMap<String, u64>,
    /// Messages this process's consumers read, per subscription
    /// (`topic/index`).
    pub consumed_by_subscription: BTreeMap<String, u64>,
    /// How long the consumers read after the producers were done, µs.
    pub drain_us: u64,
}

pub fn run_load(
    p: &Prepared,
    w: &Workload,
    spec: &LoadSpec,
    interrupt: &AtomicBool,
    on_tick: &mut dyn FnMut(f64),
) -> Result<LoadOutcome, ClientError> {
    let clock = Clock::start();
    let backlog = spec.backlog_bytes > 0 && spec.consumers;
    let cshared = Arc::new(ConsumerShared::default());
    cshared.go.store(!backlog, Ordering::Relaxed);
    let Consumers {
        handles: consumers,
        groups,
        counters,
    } = if spec.consumers {
        spawn_consumers(p, w, clock, &cshared, spec.share)?
    } else {
        Consumers::default()
    };
    // Producers start only once every subscription's group holds all its
    // partitions, so the rebalance is neither measured as latency nor
    // costs messages read by nobody.
    let group_settle_s = if groups.is_empty() {
        None
    } else {
        match await_groups(&groups, w.partitions_per_topic, interrupt, spec.share) {
            Ok(s) => Some(s),
            Err(e) => {
                cshared.stop.store(true, Ordering::Relaxed);
                for c in consumers {
                    let _ = c.join();
                }
                return Err(e);
            }
        }
    };
    let start = match spec.share {
        None => clock.now_ns() + START_DELAY_NS,
        Some(share) => match worker_start(clock, share) {
            Ok(start) => start,
            Err(e) => {
                cshared.stop.store(true, Ordering::Relaxed);
                for c in consumers {
                    let _ = c.join();
                }
                return Err(e);
            }
        },
    };
    let warmup_end = start + spec.warmup.as_nanos() as u64;
    let end = if backlog {
        warmup_end + BACKLOG_BUILD_MAX.as_nanos() as u64
    } else {
        warmup_end + spec.test.as_nanos() as u64
    };
    let measure_end = if backlog { u64::MAX } else { end };
    // Set once, here, before any producer exists.
    let _ = cshared.window.set((start, warmup_end, measure_end));
    let gshared = Arc::new(Shared::default());
    let cpu_start = cpu::snapshot(&spec.watched);
    let mut cpu_warm = None;
    let generators = spawn_generators(
        p,
        w,
        spec,
        clock,
        (start, end),
        (warmup_end, measure_end),
        &gshared,
    )?;

    let mut interrupted = false;
    let mut backlog_result = None;
    let mut drain: Option<(u64, u64)> = None; // (start ns, messages)
    let mut test_end = end;
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let now = clock.now_ns();
        if cpu_warm.is_none() && now >= warmup_end {
            cpu_warm = Some(cpu::snapshot(&spec.watched));
        }
        on_tick((now.saturating_sub(start)) as f64 / 1e9);
        if interrupt.load(Ordering::Relaxed) {
            interrupted = true;
            break;
        }
        if backlog {
            let sent_bytes = gshared.sent_bytes.load(Ordering::Relaxed);
            if drain.is_none() && sent_bytes >= spec.backlog_bytes {
                drain = Some((now, gshared.sent_messages.load(Ordering::Relaxed)));
                cshared.go.store(true, Ordering::Relaxed);
                test_end = now + spec.test.as_nanos() as u64;
            }
            if let Some((t0, msgs)) = drain {
                let subs = u64::from(w.subscriptions_per_topic.max(1));
                let consumed = cshared.consumed.load(Ordering::Relaxed);
                let sent_now = gshared.sent_messages.load(Ordering::Relaxed);
                let drained = match w.acceptable_backlog {
                    Some(limit) => drained_within(sent_now, consumed, subs, limit),
                    None => {
                        let target = drained_target(msgs, w.backlog_drain_ratio);
                        (consumed >= target * subs).then_some(target)
                    }
                };
                if let Some(drained) = drained.filter(|_| backlog_result.is_none()) {
                    let secs = (now - t0) as f64 / 1e9;
                    let share = drained as f64 / msgs.max(1) as f64;
                    backlog_result = Some(BacklogResult {
                        backlog_bytes: spec.backlog_bytes,
                        backlog_messages: msgs,
                        drain_seconds: secs,
                        drain_rate_msgs: drained as f64 / secs.max(1e-9),
                        drain_rate_mb: spec.backlog_bytes as f64 * share / 1e6 / secs.max(1e-9),
                    });
                }
                if backlog_result.is_some() && now >= test_end {
                    break;
                }
            }
        } else if now >= end {
            break;
        }
    }
    let stop_ns = clock.now_ns();
    let cpu_end = cpu::snapshot(&spec.watched);
    let cpu_warm = cpu_warm.unwrap_or_else(|| cpu_end.clone());
    // A paced load's generators stop at its end on their own, after sending
    // what they owe; a backlog or an interrupted load stops them now.
    if backlog || interrupted {
        gshared.stop.store(true, Ordering::Relaxed);
    }
    let mut produce_recs = Vec::new();
    let mut errors = Vec::new();
    let mut sent = 0;
    let mut acked_by_topic: BTreeMap<String, u64> = BTreeMap::new();
    for g in generators {
        if let Ok(mut r) = g.join() {
            sent += r.sent;
            for (t, n) in r.acknowledged.drain(..) {
                *acked_by_topic.entry(t).or_default() += n;
            }
            errors.append(&mut r.errors);
            produce_recs.push(r.recorder);
        }
    }
    let producers_done = clock.now_ns();
    // Every acknowledged message is due to every subscription of its
    // topic: the consumers read until they have it all, or the drain bound
    // passes.
    let behind = || -> BTreeMap<String, u64> {
        counters
            .iter()
            .map(|(t, sub, n)| {
                let owed = acked_by_topic.get(t).copied().unwrap_or(0);
                (
                    format!("{t}/{sub}"),
                    owed.saturating_sub(n.load(Ordering::Relaxed)),
                )
            })
            .collect()
    };
    let drain_end = producers_done + DRAIN_NS;
    // A worker's consumers also read what the other workers produced, which
    // it cannot count: it reads for the whole drain.
    while spec.consumers
        && !interrupt.load(Ordering::Relaxed)
        && (spec.share.is_some() || behind().values().any(|n| *n > 0))
        && clock.now_ns() < drain_end
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let unconsumed_by_subscription = behind();
    let consumed_by_subscription: BTreeMap<String, u64> = counters
        .iter()
        .map(|(t, sub, n)| (format!("{t}/{sub}"), n.load(Ordering::Relaxed)))
        .collect();
    cshared.stop.store(true, Ordering::Relaxed);
    let consumers_stopped = clock.now_ns();
    let mut consume_recs = Vec::new();
    for c in consumers {
        if let Ok(mut r) = c.join() {
            errors.append(&mut r.errors);
            consume_recs.push(r.recorder);
        }
    }
    let window_end = if backlog || interrupted { stop_ns } else { end };
    let window_s = (window_end.saturating_sub(warmup_end)) as f64 / 1e9;
    let timeline = Timeline {
        start,
        warmup_end,
        measure_end,
        // A worker's own backlog is not known: its consumers read what
        // every worker produced (merged, it is).
        subscriptions: if spec.consumers && spec.share.is_none() {
            u64::from(w.subscriptions_per_topic)
        } else {
            0
        },
    };
    let mut out = merge(
        produce_recs,
        consume_recs,
        errors,
        window_s.max(0.0),
        &timeline,
        backlog_result,
        interrupted,
    );
    out.drain_us = (consumers_stopped - producers_done) / 1_000;
    out.consumed_by_subscription = consumed_by_subscription;
    out.acknowledged_by_topic = acked_by_topic;
    // A worker's unconsumed messages are known once the workers' counts are
    // merged (`report/merge.rs`).
    if spec.consumers && spec.share.is_none() {
        out.unconsumed = unconsumed_by_subscription.values().sum();
        out.unconsumed_by_subscription = unconsumed_by_subscription;
        // Each was acknowledged by the time the producers were done and
        // still unread when the consumers stopped: its end-to-end latency
        // was at least the drain's length.
        let bound_us = (consumers_stopped - producers_done) / 1_000;
        out.consume.missing += out.unconsumed;
        let _ = out.consume.latency.record_n(
            bound_us.clamp(1, crate::measure::hist::HIGHEST_US),
            out.unconsumed,
        );
        out.hists.e2e = out.consume.latency.clone();
    }
    let cpu_drained = cpu::snapshot(&spec.watched);
    out.cpu = cpu::account(
        &spec.watched,
        [&cpu_start, &cpu_warm, &cpu_end, &cpu_drained],
        out.produce.done_bytes_in_window,
        out.produce.done_in_window,
        spec.in_process_broker,
    );
    out.warmup_s = (warmup_end - start) as f64 / 1e9;
    out.sent = sent;
    out.hists.start_unix_us = clock.unix_us(start);
    out.group_settle_s = group_settle_s;
    Ok(out)
}

/// A worker's first intended send on its clock: the agreed instant, which
/// must still be ahead once its consumers are ready.
fn worker_start(clock: Clock, share: Share) -> Result<u64, ClientError> {
    let now = clock.now_ns();
    let start = clock.ns_of_unix_us(share.start_unix_us);
    if start < now + WORKER_READY_MIN_NS {
        let late_s = (clock.unix_us(now) - share.start_unix_us) as f64 / 1e6;
        return Err(ClientError::WorkerLate {
            worker: share.index + 1,
            count: share.count,
            late_s,
        });
    }
    Ok(start)
}

/// Messages of a backlog of `msgs` (per subscription) that must be read for
/// it to count as drained: all but `(1 - ratio)` of it.
pub fn drained_target(msgs: u64, ratio: f64) -> u64 {
    let left = ((1.0 - ratio.clamp(0.0, 1.0)) * msgs as f64) as u64;
    msgs - left.min(msgs)
}

/// OMB's `acceptableBacklog`: drained once what `subs` subscriptions have
/// still to read of the `sent` messages so far is at most `limit`; a limit
/// of 0 ends the drain at once ("drain with no target"). Returns the
/// messages read per subscription.
pub fn drained_within(sent: u64, consumed: u64, subs: u64, limit: u64) -> Option<u64> {
    let left = (sent * subs).saturating_sub(consumed);
    (left <= limit || limit == 0).then_some(consumed / subs.max(1))
}

/// A load's consumer threads, the groups to watch settle, and what each
/// subscription (topic, index) has consumed.
#[derive(Default)]
struct Consumers {
    handles: Vec<std::thread::JoinHandle<consume::ConsumerResult>>,
    groups: Vec<GroupWatch>,
    counters: Vec<(String, u32, Arc<AtomicU64>)>,
}

fn spawn_consumers(
    p: &Prepared,
    w: &Workload,
    clock: Clock,
    shared: &Arc<ConsumerShared>,
    share: Option<Share>,
) -> Result<Consumers, ClientError> {
    let mut handles = Vec::new();
    let mut groups = Vec::new();
    let mut counters = Vec::new();
    // Consumer k of the whole workload, over (topic, subscription, member).
    let mut k = 0;
    for t in &p.topics {
        for sub in 0..w.subscriptions_per_topic {
            let n = w.consumers_per_subscription as usize;
            let mine: Vec<u32> = (0..n)
                .filter(|c| share.is_none_or(|s| s.owns(k + c)))
                .map(|c| c as u32)
                .collect();
            k += n;
            if mine.is_empty() {
                continue;
            }
            let consumers = match w.consumer_assignment {
                ConsumerAssignment::Manual => manual_consumers(p, w, clock, t, &mine)?,
                ConsumerAssignment::Group => {
                    let (consumers, watch) =
                        group_consumers(p, w, clock, t, sub, mine.len(), share.is_some())?;
                    groups.push(watch);
                    consumers
                }
            };
            let counter = Arc::new(AtomicU64::new(0));
            counters.push((t.clone(), sub, counter.clone()));
            for c in consumers {
                let (shared, mine) = (shared.clone(), counter.clone());
                handles.push(
                    std::thread::Builder::new()
                        .name(format!("consumer-{}", handles.len()))
                        .spawn(move || consume::run(clock, c, shared, mine))
                        .expect("spawning a consumer thread"),
                );
            }
        }
    }
    Ok(Consumers {
        handles,
        groups,
        counters,
    })
}

/// Consumer c of n reads the partitions p with p % n == c; `mine` are the
/// consumers this process runs.
fn manual_consumers(
    p: &Prepared,
    w: &Workload,
    clock: Clock,
    topic: &str,
    mine: &[u32],
) -> Result<Vec<AnyConsumer>, ClientError> {
    let n = w.consumers_per_subscription;
    let mut out = Vec::new();
    for &c in mine {
        let parts: Vec<(String, i32)> = (0..w.partitions_per_topic)
            .filter(|pp| pp % n == c)
            .map(|pp| (topic.to_string(), pp as i32))
            .collect();
        if parts.is_empty() {
            continue;
        }
        let mut consumer = Consumer::new(
            clock,
            w.consumer.clone(),
            &parts,
            &p.md,
            p.consumer_bootstrap.clone(),
        )?;
        // The max-rate search runs several loads on the same topics:
        // each run reads only what it produces.
        consumer.reset_offsets(admin::LATEST)?;
        out.push(AnyConsumer::Manual(Box::new(consumer)));
    }
    Ok(out)
}

/// One group per subscription, as OMB's Kafka driver makes them. The id
/// carries the load's start time, so no load (a max-rate probe, a rerun)
/// resumes another's committed offsets; a worker's carries only the topic,
/// which names the run, so every worker's members join one group.
fn group_consumers(
    p: &Prepared,
    w: &Workload,
    clock: Clock,
    topic: &str,
    sub: u32,
    members_here: usize,
    worker: bool,
) -> Result<(Vec<AnyConsumer>, GroupWatch), ClientError> {
    let prefix = w
        .consumer
        .group_id
        .as_deref()
        .map_or(String::new(), |g| format!("{g}-"));
    let group = if worker {
        format!("{prefix}{topic}-sub{sub}")
    } else {
        format!("{prefix}{topic}-sub{sub}-{:x}", clock.origin_unix_us())
    };
    let mut out = Vec::new();
    let mut members = Vec::new();
    for _ in 0..members_here {
        // Partitions without a committed offset start at the log end, as
        // manual consumers do: each load reads only what it produces.
        let c = GroupConsumer::new(
            clock,
            w.consumer.clone(),
            group.clone(),
            vec![topic.to_string()],
            &p.md,
            p.consumer_bootstrap.clone(),
            admin::LATEST,
        )?;
        let status = Arc::new(MemberStatus::default());
        members.push(status.clone());
        out.push(AnyConsumer::Group(Box::new(c), status));
    }
    Ok((
        out,
        GroupWatch {
            group,
            topic: topic.to_string(),
            members,
        },
    ))
}

/// The consumers of one group, watched until they settle.
struct GroupWatch {
    group: String,
    topic: String,
    members: Vec<Arc<MemberStatus>>,
}

impl GroupWatch {
    /// Whether every member holds an assignment of one generation and
    /// together they hold each of the topic's `partitions` exactly once;
    /// for one worker's members, whose group other workers' members join
    /// too, whether they hold assignments of one generation.
    fn settled(&self, partitions: u32, worker: bool) -> bool {
        let mut generation = None;
        let mut held: Vec<i32> = Vec::new();
        for m in &self.members {
            let guard = m.held.lock().unwrap_or_else(|e| e.into_inner());
            let Some((g, parts)) = guard.as_ref() else {
                return false;
            };
            if *generation.get_or_insert(*g) != *g {
                return false;
            }
            held.extend(
                parts
                    .iter()
                    .filter(|(t, _)| *t == self.topic)
                    .map(|(_, p)| *p),
            );
        }
        if worker {
            return true;
        }
        held.sort_unstable();
        held == (0..partitions as i32).collect::<Vec<_>>()
    }

    fn describe(&self) -> String {
        let states: Vec<String> = self
            .members
            .iter()
            .map(|m| {
                let held = m.held.lock().unwrap_or_else(|e| e.into_inner());
                let err = m.last_error.lock().unwrap_or_else(|e| e.into_inner());
                let state = match held.as_ref() {
                    Some((g, parts)) => format!("generation {g}, {} partition(s)", parts.len()),
                    None => "not joined".to_string(),
                };
                match err.as_ref() {
                    Some(e) => format!("{state}, last error: {e}"),
                    None => state,
                }
            })
            .collect();
        states.join("; ")
    }
}

/// Waits until every group has settled; returns how long that took.
fn await_groups(
    groups: &[GroupWatch],
    partitions: u32,
    interrupt: &AtomicBool,
    share: Option<Share>,
) -> Result<f64, ClientError> {
    let t0 = std::time::Instant::now();
    loop {
        let pending = groups
            .iter()
            .find(|g| !g.settled(partitions, share.is_some()));
        let Some(g) = pending else {
            return Ok(t0.elapsed().as_secs_f64());
        };
        if interrupt.load(Ordering::Relaxed) {
            return Ok(t0.elapsed().as_secs_f64());
        }
        if t0.elapsed() > GROUP_SETTLE_MAX {
            return Err(ClientError::GroupProtocol {
                group: g.group.clone(),
                reason: format!(
                    "its consumers did not hold all {partitions} partitions of {} within {} s: {}",
                    g.topic,
                    GROUP_SETTLE_MAX.as_secs(),
                    g.describe()
                ),
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn spawn_generators(
    p: &Prepared,
    w: &Workload,
    spec: &LoadSpec,
    clock: Clock,
    (start, end): (u64, u64),
    (warmup_end, measure_end): (u64, u64),
    shared: &Arc<Shared>,
) -> Result<Vec<std::thread::JoinHandle<generator::GeneratorResult>>, ClientError> {
    // Every producer sends rate / total, so a worker running some of them
    // sends its share of the rate.
    let total = (p.topics.len() as u32 * w.producers_per_topic) as usize;
    let here = (0..total)
        .filter(|&i| spec.share.is_none_or(|s| s.owns(i)))
        .count();
    if here == 0 {
        return Ok(Vec::new());
    }
    let threads = spec.threads.clamp(1, here);
    let mut plans: Vec<Vec<(Producer, usize)>> = (0..threads).map(|_| Vec::new()).collect();
    let mut i = 0;
    let mut placed = 0;
    for t in &p.topics {
        for _ in 0..w.producers_per_topic {
            if spec.share.is_some_and(|s| !s.owns(i)) {
                i += 1;
                continue;
            }
            // Each producer is its own transactional instance.
            let mut settings = w.producer.clone();
            if let Some(prefix) = &w.producer.transactional_id {
                settings.transactional_id = Some(format!("{prefix}-{i}"));
            }
            let prod = Producer::new(
                clock,
                settings,
                std::slice::from_ref(t),
                &p.md,
                p.bootstrap.clone(),
                spec.seed ^ (i as u64).wrapping_mul(0x9E37_79B9),
            )?;
            plans[placed % threads].push((prod, 0));
            placed += 1;
            i += 1;
        }
    }
    // From the last CPU down: embedded brokers take CPUs from the first up.
    let cores = if spec.pin {
        let mut ids = core_affinity::get_core_ids().unwrap_or_default();
        ids.reverse();
        ids
    } else {
        Vec::new()
    };
    let mut handles = Vec::new();
    let pace = if spec.steps.is_empty() {
        Pace::constant(start, spec.rate)
    } else {
        let changes: Vec<(u64, f64)> = spec
            .steps
            .iter()
            .map(|(after, rate)| (warmup_end + after.as_nanos() as u64, *rate))
            .collect();
        Pace::stepped(start, spec.rate, &changes)
    };
    for (g, producers) in plans.into_iter().enumerate() {
        let share = producers.len() as f64 / total as f64;
        let payloads = Payloads::new(w, spec.seed.wrapping_add(g as u64 + 1)).map_err(|e| {
            ClientError::Io {
                op: "reading the payload file for",
                addr: p.bootstrap.addr,
                source: e,
            }
        })?;
        let plan = GeneratorPlan {
            producers,
            payloads,
            pace: pace.scaled(share),
            end_ns: end,
            core: cores.get(g % cores.len().max(1)).copied(),
        };
        let rec = Recorder::new(start, warmup_end, measure_end);
        let shared = shared.clone();
        handles.push(
            std::thread::Builder::new()
                .name(format!("load-gen-{g}"))
                .spawn(move || generator::run(clock, plan, rec, shared))
                .expect("spawning a load generator thread"),
        );
    }
    Ok(handles)
}

/// Per second of the load: (messages, errors, latency, delay, most lag).
type Merged = BTreeMap<u64, (u64, u64, Option<Hist>, Option<Hist>, u64)>;

fn merge_intervals(recs: &[Recorder]) -> Merged {
    let mut out: Merged = BTreeMap::new();
    for r in recs {
        for s in &r.intervals {
            let e = out.entry(s.index).or_insert((0, 0, None, None, 0));
            e.0 += s.messages;
            e.1 += s.errors;
            add_encoded(&mut e.2, &s.latency);
            add_encoded(&mut e.3, &s.delay);
            e.4 = e.4.max(s.lag_max_us);
        }
    }
    out
}

fn add_encoded(slot: &mut Option<Hist>, encoded: &[u8]) {
    if encoded.is_empty() {
        return;
    }
    if let Some(h) = decode(encoded) {
        match slot {
            Some(acc) => {
                let _ = acc.add(&h);
            }
            None => *slot = Some(h),
        }
    }
}

/// Where a load's phases fall, in clock ns, and how many subscriptions
/// read it.
struct Timeline {
    start: u64,
    warmup_end: u64,
    measure_end: u64,
    subscriptions: u64,
}

impl Timeline {
    /// The phase of the second that starts `second` s into the load.
    fn phase(&self, second: u64) -> Phase {
        let at = self.start + second * INTERVAL_NS;
        if at < self.warmup_end {
            Phase::Warmup
        } else if at < self.measure_end {
            Phase::Measure
        } else {
            Phase::Drain
        }
    }
}

fn merge(
    produce: Vec<Recorder>,
    consume: Vec<Recorder>,
    errors: Vec<String>,
    window_s: f64,
    timeline: &Timeline,
    backlog: Option<BacklogResult>,
    interrupted: bool,
) -> LoadOutcome {
    let mut pt = Totals::new();
    for r in &produce {
        pt.add(&r.totals);
    }
    let mut ct = Totals::new();
    for r in &consume {
        ct.add(&r.totals);
    }
    let pi = merge_intervals(&produce);
    let ci = merge_intervals(&consume);
    let last = pi.keys().chain(ci.keys()).copied().max().unwrap_or(0);
    let mut rows = Vec::new();
    let mut hist_rows = Vec::new();
    let (mut acked, mut consumed) = (0u64, 0u64);
    for s in 0..=last {
        let p = pi.get(&s);
        let c = ci.get(&s);
        let q = |h: Option<&Hist>, q: f64| h.map_or(0, |h| h.value_at_quantile(q));
        acked += p.map_or(0, |v| v.0);
        consumed += c.map_or(0, |v| v.0);
        let backlog_msgs = (timeline.subscriptions > 0)
            .then(|| (acked * timeline.subscriptions).saturating_sub(consumed));
        rows.push(IntervalRow {
            second: s,
            phase: timeline.phase(s),
            publish_msgs: p.map_or(0, |v| v.0),
            publish_p99_us: q(p.and_then(|v| v.2.as_ref()), 0.99),
            producer_lag_max_us: q(p.and_then(|v| v.3.as_ref()), 1.0).max(p.map_or(0, |v| v.4)),
            consume_msgs: c.map_or(0, |v| v.0),
            e2e_p99_us: q(c.and_then(|v| v.2.as_ref()), 0.99),
            backlog_msgs,
            errors: p.map_or(0, |v| v.1) + c.map_or(0, |v| v.1),
        });
        hist_rows.push((s, p.and_then(|v| v.2.clone()), c.and_then(|v| v.2.clone())));
    }
    LoadOutcome {
        hists: PointHists {
            publish: pt.latency.clone(),
            delay: pt.delay.clone(),
            e2e: ct.latency.clone(),
            commit: pt.commit.clone(),
            intervals: hist_rows,
            start_unix_us: 0,
        },
        produce: pt,
        consume: ct,
        unconsumed: 0,
        unconsumed_by_subscription: BTreeMap::new(),
        sent: 0,
        warmup_s: 0.0,
        intervals: rows,
        errors,
        window_s,
        backlog,
        interrupted,
        group_settle_s: None,
        cpu: CpuUse::default(),
        acknowledged_by_topic: BTreeMap::new(),
        consumed_by_subscription: BTreeMap::new(),
        drain_us: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::{drained_target, drained_within};

    #[test]
    fn the_drain_ratio_leaves_part_of_the_backlog() {
        assert_eq!(drained_target(1_000, 1.0), 1_000);
        assert_eq!(drained_target(1_000, 0.99), 990);
        assert_eq!(drained_target(1_000, 0.5), 500);
        assert_eq!(drained_target(0, 0.5), 0);
    }

    #[test]
    fn an_acceptable_backlog_counts_over_every_subscription() {
        // 1,000 sent to 2 subscriptions: 2,000 owed.
        assert_eq!(drained_within(1_000, 1_500, 2, 600), Some(750));
        assert_eq!(drained_within(1_000, 1_300, 2, 600), None);
        // OMB's "drain with no target".
        assert_eq!(drained_within(1_000, 0, 2, 0), Some(0));
    }
}
