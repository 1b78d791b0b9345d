//! A load-generator thread: open-loop sends at a fixed rate over the
//! producers it owns.
//!
//! Message k of a generator is meant to be sent at `t0 + k / rate` (a
//! ramp's rate changes in steps, each spacing its own messages so:
//! `pace.rs`). The generator sends every message whose time has come, then
//! polls its producers and sleeps on their sockets until the next send
//! time. When the broker stalls, the in-flight limit and then
//! `buffer.memory` fill up and sends fall behind their intended times;
//! latency is still counted from the intended time, so the stall shows up
//! in the percentiles instead of being hidden by coordinated omission. How far sends fell behind is recorded as
//! the publish delay. In max-rate mode (rate 0) each message's intended time
//! is the moment it is sent.

use super::pace::Pace;
use super::payload::Payloads;
use crate::client::producer::{wait, Producer, SendRefused};
use crate::measure::clock::Clock;
use crate::measure::recorder::{Recorder, INTERVAL_NS};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// Messages sent before the generator polls its producers again, so a
/// generator that has fallen behind still reads responses.
const SEND_BURST: u64 = 4_096;
/// How long the final flush may take before unacknowledged messages count
/// as errors.
const FLUSH_NS: u64 = 10_000_000_000;
/// How long past the end a generator that fell behind keeps sending the
/// messages meant for before the end.
const CATCH_UP_NS: u64 = 5_000_000_000;
/// Messages appended between two reads of the clock. A read costs 100-200
/// ns on this project's 2-core VMs (`Instant::now` through the vDSO), more
/// than appending a 100-byte message, so a burst reads it once per group:
/// an unpaced message's intended time is its group's start, never after its
/// real send, so its latency is never understated and overstated by at most
/// the time to append 31 messages (a few µs); a paced message's publish
/// delay is low by at most as much.
const CLOCK_GROUP: u64 = 32;
/// The least time between two wake-ups of a paced generator: a fifth of
/// `linger.ms`, at most 1 ms. A message meant for between two wake-ups is
/// sent at the second (its delay counts in publish and end-to-end latency,
/// measured from the intended time) but joins the lingering batch it would
/// have joined on time. Waking for every message instead cost about 20,000
/// wake-ups a second at 200,000 msg/s, each a `ppoll`, a `recv` that found
/// nothing and several clock reads (docs/HARNESS.md, "What the load
/// generator costs").
const PACE_QUANTUM_PER_LINGER: u64 = 5;
const PACE_QUANTUM_MAX_NS: u64 = 1_000_000;

pub struct GeneratorPlan {
    pub producers: Vec<(Producer, usize)>,
    pub payloads: Payloads,
    /// When each message is meant to be sent: this generator's share of
    /// the load's rate, or unpaced (max rate).
    pub pace: Pace,
    pub end_ns: u64,
    pub core: Option<core_affinity::CoreId>,
}

/// Shared, written once a burst: progress and the backlog size.
#[derive(Default)]
pub struct Shared {
    pub stop: AtomicBool,
    pub sent_messages: AtomicU64,
    pub sent_bytes: AtomicU64,
}

pub struct GeneratorResult {
    pub recorder: Recorder,
    pub errors: Vec<String>,
    pub sent: u64,
    /// Messages whose intended time came before the generator stopped but
    /// that were never sent (a paced load the client or broker could not
    /// keep up with).
    pub unsent: u64,
    /// Messages acknowledged, per topic.
    pub acknowledged: Vec<(String, u64)>,
}

pub fn run(
    clock: Clock,
    mut plan: GeneratorPlan,
    mut rec: Recorder,
    shared: Arc<Shared>,
) -> GeneratorResult {
    if let Some(core) = plan.core {
        core_affinity::set_for_current(core);
    }
    let paced = !plan.pace.unpaced();
    let mut k: u64 = 0;
    let mut fds = Vec::new();
    let n = plan.producers.len();
    let quantum_ns = plan
        .producers
        .iter()
        .map(|(p, _)| p.linger_ns() / PACE_QUANTUM_PER_LINGER)
        .min()
        .unwrap_or(0)
        .min(PACE_QUANTUM_MAX_NS);
    let mut wait_until = plan.pace.start_ns();
    let stopped_ns = loop {
        wait(&clock, &mut fds, wait_until);
        let now = clock.now_ns();
        // Owed: meant for before the end (`send_due`'s bound) and due.
        let owed = if paced { plan.pace.at(k) } else { 0 };
        let behind = paced && owed < plan.end_ns && owed <= now;
        if behind {
            rec.on_lag(now - owed);
        }
        // Past the end, messages meant for before it are still sent, for
        // up to `CATCH_UP_NS`: a stall just before the end makes them late,
        // not unsendable. Only what is left after that counts as unsent.
        if shared.stop.load(Ordering::Relaxed)
            || (now >= plan.end_ns && (!behind || now >= plan.end_ns + CATCH_UP_NS))
        {
            break now;
        }
        // A fenced transactional producer takes no more messages: the run
        // ends with its error rather than stalling on it.
        if plan.producers.iter().any(|(p, _)| p.fenced().is_some()) {
            break now;
        }
        let (sent, bytes, blocked) = send_due(&clock, &mut plan, &mut rec, &mut k, n);
        if sent > 0 {
            shared.sent_messages.fetch_add(sent, Ordering::Relaxed);
            shared.sent_bytes.fetch_add(bytes, Ordering::Relaxed);
        }
        for (p, _) in &mut plan.producers {
            p.poll(&mut rec);
        }
        let now = clock.now_ns();
        rec.tick(now);
        let next_send = if paced { plan.pace.at(k) } else { now };
        let mut until = (now / INTERVAL_NS + 1) * INTERVAL_NS;
        if now < plan.end_ns {
            until = until.min(plan.end_ns);
        }
        if !blocked {
            until = until.min(if next_send <= now {
                now
            } else {
                next_send.max(now + quantum_ns)
            });
        }
        for (p, _) in &plan.producers {
            if let Some(d) = p.next_deadline_ns() {
                until = until.min(d.max(now + 1_000));
            }
        }
        fds.clear();
        for (p, _) in &plan.producers {
            p.pollfds(&mut fds);
        }
        wait_until = until;
    };
    let unsent = count_unsent(&plan, &mut rec, k, stopped_ns.min(plan.end_ns), stopped_ns);
    flush(&clock, &mut plan, &mut rec);
    let mut errors = Vec::new();
    let mut acknowledged = Vec::new();
    for (p, _) in &mut plan.producers {
        errors.append(&mut p.client_errors);
        acknowledged.extend(p.acknowledged().map(|(t, n)| (t.to_string(), n)));
    }
    rec.finish(clock.now_ns());
    crate::measure::cpu::thread_ending();
    GeneratorResult {
        recorder: rec,
        errors,
        sent: k,
        unsent,
        acknowledged,
    }
}

/// Messages `k`.. of a paced schedule whose intended time came before
/// `due_before` were never sent by `stopped_ns`. Those of the measured
/// window enter its latency as lower bounds (stop − intended): the slowest
/// messages of a run that fell behind must not vanish from its percentiles.
fn count_unsent(
    plan: &GeneratorPlan,
    rec: &mut Recorder,
    k: u64,
    due_before: u64,
    stopped_ns: u64,
) -> u64 {
    if plan.pace.unpaced() {
        return 0;
    }
    let mut unsent = 0;
    let mut j = k;
    loop {
        let intended = plan.pace.at(j);
        if intended >= due_before {
            return unsent;
        }
        if rec.in_window(intended) {
            rec.on_missing(1, stopped_ns - intended);
        }
        unsent += 1;
        j += 1;
    }
}

/// Sends every message due by now (at most a burst). Returns messages and
/// bytes sent, and whether `buffer.memory` stopped the burst.
fn send_due(
    clock: &Clock,
    plan: &mut GeneratorPlan,
    rec: &mut Recorder,
    k: &mut u64,
    n: usize,
) -> (u64, u64, bool) {
    let paced = !plan.pace.unpaced();
    let mut sent = 0;
    let mut bytes = 0;
    let now = clock.now_ns();
    let mut at = now;
    while sent < SEND_BURST {
        if sent % CLOCK_GROUP == 0 && sent > 0 {
            at = clock.now_ns();
        }
        // Unpaced, every message is due the moment it is sent. (Comparing
        // that moment with `now`, read before the loop, stopped every burst
        // before its first message: max-rate mode sent nothing.)
        let intended = if !paced {
            at
        } else {
            let t = plan.pace.at(*k);
            if t > now || t >= plan.end_ns {
                break;
            }
            t
        };
        let first = (*k % n as u64) as usize;
        let (key, value) = plan.payloads.next(clock.unix_us(intended));
        let len = (value[0].len() + value[1].len()) as u64;
        // A transactional producer takes nothing while its transaction
        // ends (acknowledgements awaited, then EndTxn): the message goes
        // to the next producer of its topic that takes it, so one
        // producer's commit does not hold the others up.
        let (producer, topic) = &mut plan.producers[first];
        let mut taken = match producer.send_parts(*topic, key, value, intended, at, rec) {
            Ok(()) => true,
            Err(SendRefused::TransactionEnding) => false,
            Err(_) => return (sent, bytes, true),
        };
        for j in 1..n {
            if taken {
                break;
            }
            let i = (first + j) % n;
            let same_topic = {
                let ((p, t), (q, u)) = (&plan.producers[first], &plan.producers[i]);
                p.topic_name(*t) == q.topic_name(*u)
            };
            if !same_topic {
                continue;
            }
            let (producer, topic) = &mut plan.producers[i];
            match producer.send_parts(*topic, key, value, intended, at, rec) {
                Ok(()) => taken = true,
                Err(SendRefused::TransactionEnding) => {}
                Err(_) => break,
            }
        }
        if !taken {
            return (sent, bytes, true);
        }
        *k += 1;
        sent += 1;
        bytes += len;
    }
    (sent, bytes, false)
}

/// Closes open batches and waits for outstanding acks, up to `FLUSH_NS`.
fn flush(clock: &Clock, plan: &mut GeneratorPlan, rec: &mut Recorder) {
    for (p, _) in &mut plan.producers {
        p.close_all(rec);
    }
    let deadline = clock.now_ns() + FLUSH_NS;
    let mut fds = Vec::new();
    loop {
        for (p, _) in &mut plan.producers {
            p.poll(rec);
        }
        let now = clock.now_ns();
        rec.tick(now);
        if plan.producers.iter().all(|(p, _)| !p.pending()) {
            break;
        }
        if now > deadline {
            for (p, _) in &mut plan.producers {
                p.abandon("unacknowledged at the end-of-run flush deadline", rec);
            }
            break;
        }
        fds.clear();
        for (p, _) in &plan.producers {
            p.pollfds(&mut fds);
        }
        wait(clock, &mut fds, now + 10_000_000);
    }
}
