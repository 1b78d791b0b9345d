//! One load run against prepared topics: spawn consumers and pinned
//! generator threads, wait out warm-up and test (or build and drain a
//! backlog), stop, merge the per-thread recorders.

use super::consume::{self, AnyConsumer, ConsumerShared, MemberStatus};
use super::generator::{self, GeneratorPlan, Shared};
use super::payload::Payloads;
use super::result::{BacklogResult, IntervalRow, PointHists};
use crate::client::admin::{self, ClusterMetadata};
use crate::client::conn::Connection;
use crate::client::consumer::Consumer;
use crate::client::error::ClientError;
use crate::client::group_consumer::GroupConsumer;
use crate::client::producer::Producer;
use crate::measure::clock::Clock;
use crate::measure::hist::{decode, Hist};
use crate::measure::recorder::{IntervalSample, Recorder, Totals, INTERVAL_NS};
use crate::workload::{ConsumerAssignment, Workload};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Time between the clock's origin and the first intended send, for threads
/// to start.
const START_DELAY_NS: u64 = 200_000_000;
/// How long consumers get after producers stop to read the tail.
const TAIL_NS: u64 = 5_000_000_000;
/// Upper bound on building a backlog.
const BACKLOG_BUILD_MAX: Duration = Duration::from_secs(3_600);
/// Upper bound on consumer groups settling before a load. A healthy group
/// settles within the broker's initial rebalance delay (Kafka: 3 s) plus a
/// heartbeat interval or two; two minutes covers a slow coordinator
/// without hanging a run on a broken one.
const GROUP_SETTLE_MAX: Duration = Duration::from_secs(120);

/// Topics created for a point.
pub struct Prepared {
    pub bootstrap: SocketAddr,
    pub topics: Vec<String>,
    pub md: ClusterMetadata,
}

pub fn prepare(bootstrap: SocketAddr, w: &Workload, tag: &str) -> Result<Prepared, ClientError> {
    let mut conn = Connection::connect(bootstrap, Duration::from_secs(10))?;
    let topics: Vec<String> = (0..w.topics).map(|i| format!("{tag}-{i}")).collect();
    admin::create_topics(
        &mut conn,
        &topics,
        w.partitions_per_topic,
        w.topic.replication_factor,
        &w.topic.configs,
    )?;
    let md = admin::wait_for_leaders(&mut conn, &topics, Duration::from_secs(30))?;
    Ok(Prepared {
        bootstrap,
        topics,
        md,
    })
}

/// Deletes the point's topics; failures only cost disk.
pub fn cleanup(p: &Prepared) {
    if let Ok(mut c) = Connection::connect(p.bootstrap, Duration::from_secs(5)) {
        let _ = admin::delete_topics(&mut c, &p.topics);
    }
}

pub struct LoadSpec {
    /// msg/s over all producers; 0 is unpaced.
    pub rate: f64,
    pub warmup: Duration,
    pub test: Duration,
    pub consumers: bool,
    pub backlog_bytes: u64,
    pub threads: usize,
    pub pin: bool,
    pub seed: u64,
}

pub struct LoadOutcome {
    pub produce: Totals,
    pub consume: Totals,
    pub hists: PointHists,
    pub intervals: Vec<IntervalRow>,
    pub errors: Vec<String>,
    pub window_s: f64,
    pub backlog: Option<BacklogResult>,
    pub interrupted: bool,
    /// Seconds from starting the consumers until every group held all its
    /// partitions (group assignment only); not part of the measured window.
    pub group_settle_s: Option<f64>,
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
    let (consumers, groups) = if spec.consumers {
        spawn_consumers(p, w, clock, &cshared)?
    } else {
        (Vec::new(), Vec::new())
    };
    // Producers start only once every subscription's group holds all its
    // partitions, so the rebalance is neither measured as latency nor
    // costs messages read by nobody.
    let group_settle_s = if groups.is_empty() {
        None
    } else {
        match await_groups(&groups, w.partitions_per_topic, interrupt) {
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
    let start = clock.now_ns() + START_DELAY_NS;
    let warmup_end = start + spec.warmup.as_nanos() as u64;
    let end = if backlog {
        warmup_end + BACKLOG_BUILD_MAX.as_nanos() as u64
    } else {
        warmup_end + spec.test.as_nanos() as u64
    };
    let measure_end = if backlog { u64::MAX } else { end };
    // Set once, here, before any producer exists.
    let _ = cshared.window.set((warmup_end, measure_end));
    let gshared = Arc::new(Shared::default());
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
                // As in OMB, the backlog counts as drained once at most
                // (1 - backlogDrainRatio) of it is left, in every subscription.
                let subs = u64::from(w.subscriptions_per_topic.max(1));
                let drained = drained_target(msgs, w.backlog_drain_ratio);
                if backlog_result.is_none()
                    && cshared.consumed.load(Ordering::Relaxed) >= drained * subs
                {
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
    gshared.stop.store(true, Ordering::Relaxed);
    let mut produce_recs = Vec::new();
    let mut errors = Vec::new();
    let mut sent_total = 0;
    for g in generators {
        if let Ok(mut r) = g.join() {
            sent_total += r.sent;
            errors.append(&mut r.errors);
            produce_recs.push(r.recorder);
        }
    }
    // Let consumers read the tail, then stop them.
    let tail_end = clock.now_ns() + TAIL_NS;
    while spec.consumers
        && !interrupt.load(Ordering::Relaxed)
        && cshared.consumed.load(Ordering::Relaxed)
            < sent_total * u64::from(w.subscriptions_per_topic.max(1))
        && clock.now_ns() < tail_end
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    cshared.stop.store(true, Ordering::Relaxed);
    let mut consume_recs = Vec::new();
    for c in consumers {
        if let Ok(mut r) = c.join() {
            errors.append(&mut r.errors);
            consume_recs.push(r.recorder);
        }
    }
    let window_end = if backlog || interrupted { stop_ns } else { end };
    let window_s = (window_end.saturating_sub(warmup_end)) as f64 / 1e9;
    let mut out = merge(
        produce_recs,
        consume_recs,
        errors,
        window_s.max(0.0),
        start,
        backlog_result,
        interrupted,
    );
    out.group_settle_s = group_settle_s;
    Ok(out)
}

/// Messages of a backlog of `msgs` (per subscription) that must be read for
/// it to count as drained: all but `(1 - ratio)` of it.
pub fn drained_target(msgs: u64, ratio: f64) -> u64 {
    let left = ((1.0 - ratio.clamp(0.0, 1.0)) * msgs as f64) as u64;
    msgs - left.min(msgs)
}

type ConsumerHandles = Vec<std::thread::JoinHandle<consume::ConsumerResult>>;

fn spawn_consumers(
    p: &Prepared,
    w: &Workload,
    clock: Clock,
    shared: &Arc<ConsumerShared>,
) -> Result<(ConsumerHandles, Vec<GroupWatch>), ClientError> {
    let mut handles = Vec::new();
    let mut groups = Vec::new();
    for t in &p.topics {
        for sub in 0..w.subscriptions_per_topic {
            let consumers = match w.consumer_assignment {
                ConsumerAssignment::Manual => manual_consumers(p, w, clock, t)?,
                ConsumerAssignment::Group => {
                    let (consumers, watch) = group_consumers(p, w, clock, t, sub)?;
                    groups.push(watch);
                    consumers
                }
            };
            for c in consumers {
                let shared = shared.clone();
                handles.push(
                    std::thread::Builder::new()
                        .name(format!("consumer-{}", handles.len()))
                        .spawn(move || consume::run(clock, c, shared))
                        .expect("spawning a consumer thread"),
                );
            }
        }
    }
    Ok((handles, groups))
}

/// Consumer c of n reads the partitions p with p % n == c.
fn manual_consumers(
    p: &Prepared,
    w: &Workload,
    clock: Clock,
    topic: &str,
) -> Result<Vec<AnyConsumer>, ClientError> {
    let n = w.consumers_per_subscription;
    let mut out = Vec::new();
    for c in 0..n {
        let parts: Vec<(String, i32)> = (0..w.partitions_per_topic)
            .filter(|pp| pp % n == c)
            .map(|pp| (topic.to_string(), pp as i32))
            .collect();
        if parts.is_empty() {
            continue;
        }
        let mut consumer = Consumer::new(clock, w.consumer.clone(), &parts, &p.md, p.bootstrap)?;
        // The max-rate search runs several loads on the same topics:
        // each run reads only what it produces.
        consumer.reset_offsets(admin::LATEST)?;
        out.push(AnyConsumer::Manual(Box::new(consumer)));
    }
    Ok(out)
}

/// One group per subscription, as OMB's Kafka driver makes them. The id
/// carries the load's start time, so no load (a max-rate probe, a rerun)
/// resumes another's committed offsets.
fn group_consumers(
    p: &Prepared,
    w: &Workload,
    clock: Clock,
    topic: &str,
    sub: u32,
) -> Result<(Vec<AnyConsumer>, GroupWatch), ClientError> {
    let prefix = w
        .consumer
        .group_id
        .as_deref()
        .map_or(String::new(), |g| format!("{g}-"));
    let group = format!("{prefix}{topic}-sub{sub}-{:x}", clock.origin_unix_us());
    let mut out = Vec::new();
    let mut members = Vec::new();
    for _ in 0..w.consumers_per_subscription {
        // Partitions without a committed offset start at the log end, as
        // manual consumers do: each load reads only what it produces.
        let c = GroupConsumer::new(
            clock,
            w.consumer.clone(),
            group.clone(),
            vec![topic.to_string()],
            &p.md,
            p.bootstrap,
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
    /// together they hold each of the topic's `partitions` exactly once.
    fn settled(&self, partitions: u32) -> bool {
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
) -> Result<f64, ClientError> {
    let t0 = std::time::Instant::now();
    loop {
        let pending = groups.iter().find(|g| !g.settled(partitions));
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
    let total = (p.topics.len() as u32 * w.producers_per_topic) as usize;
    let threads = spec.threads.clamp(1, total.max(1));
    let mut plans: Vec<Vec<(Producer, usize)>> = (0..threads).map(|_| Vec::new()).collect();
    let mut i = 0;
    for t in &p.topics {
        for _ in 0..w.producers_per_topic {
            let prod = Producer::new(
                clock,
                w.producer.clone(),
                std::slice::from_ref(t),
                &p.md,
                p.bootstrap,
                spec.seed ^ (i as u64).wrapping_mul(0x9E37_79B9),
            )?;
            plans[i % threads].push((prod, 0));
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
    for (g, producers) in plans.into_iter().enumerate() {
        let share = producers.len() as f64 / total as f64;
        let payloads = Payloads::new(w, spec.seed.wrapping_add(g as u64 + 1)).map_err(|e| {
            ClientError::Io {
                op: "reading the payload file for",
                addr: p.bootstrap,
                source: e,
            }
        })?;
        let plan = GeneratorPlan {
            producers,
            payloads,
            rate: spec.rate * share,
            start_ns: start,
            end_ns: end,
            core: cores.get(g % cores.len().max(1)).copied(),
        };
        let rec = Recorder::new(warmup_end, measure_end);
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

fn merge_intervals(recs: &[Recorder]) -> BTreeMap<u64, (u64, u64, Option<Hist>)> {
    let mut out: BTreeMap<u64, (u64, u64, Option<Hist>)> = BTreeMap::new();
    for r in recs {
        for s in &r.intervals {
            let e = out.entry(s.index).or_insert((0, 0, None));
            e.0 += s.messages;
            e.1 += s.errors;
            add_encoded(&mut e.2, s);
        }
    }
    out
}

fn add_encoded(slot: &mut Option<Hist>, s: &IntervalSample) {
    if s.latency.is_empty() {
        return;
    }
    if let Some(h) = decode(&s.latency) {
        match slot {
            Some(acc) => {
                let _ = acc.add(&h);
            }
            None => *slot = Some(h),
        }
    }
}

fn merge(
    produce: Vec<Recorder>,
    consume: Vec<Recorder>,
    errors: Vec<String>,
    window_s: f64,
    start_ns: u64,
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
    let first = start_ns / INTERVAL_NS;
    let last = pi.keys().chain(ci.keys()).copied().max().unwrap_or(first);
    let mut rows = Vec::new();
    let mut hist_rows = Vec::new();
    for s in first..=last {
        let p = pi.get(&s);
        let c = ci.get(&s);
        let p99 = |h: Option<&Hist>| h.map_or(0, |h| h.value_at_quantile(0.99));
        rows.push(IntervalRow {
            second: s - first,
            publish_msgs: p.map_or(0, |v| v.0),
            publish_p99_us: p99(p.and_then(|v| v.2.as_ref())),
            consume_msgs: c.map_or(0, |v| v.0),
            e2e_p99_us: p99(c.and_then(|v| v.2.as_ref())),
            errors: p.map_or(0, |v| v.1) + c.map_or(0, |v| v.1),
        });
        hist_rows.push((
            s - first,
            p.and_then(|v| v.2.clone()),
            c.and_then(|v| v.2.clone()),
        ));
    }
    LoadOutcome {
        hists: PointHists {
            publish: pt.latency.clone(),
            delay: pt.delay.clone(),
            e2e: ct.latency.clone(),
            intervals: hist_rows,
        },
        produce: pt,
        consume: ct,
        intervals: rows,
        errors,
        window_s,
        backlog,
        interrupted,
        group_settle_s: None,
    }
}

#[cfg(test)]
mod tests {
    use super::drained_target;

    #[test]
    fn the_drain_ratio_leaves_part_of_the_backlog() {
        assert_eq!(drained_target(1_000, 1.0), 1_000);
        assert_eq!(drained_target(1_000, 0.99), 990);
        assert_eq!(drained_target(1_000, 0.5), 500);
        assert_eq!(drained_target(0, 0.5), 0);
    }
}
