//! What one sweep point measured: the summary that goes into `run.json` and
//! the histograms behind it.

use crate::measure::cpu::CpuUse;
use crate::measure::disk::DiskSync;
use crate::measure::hist::{Hist, Percentiles};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Which part of a load a second of it belongs to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Before the measured window: left out of every total.
    Warmup,
    /// The measured window (what runs written before phases were named
    /// read as).
    #[default]
    Measure,
    /// After the window: the last acknowledgements and the consumers'
    /// drain.
    Drain,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Warmup => "warm-up",
            Phase::Measure => "measure",
            Phase::Drain => "drain",
        }
    }
}

/// One second of a load, counted by when things completed: the second
/// that starts `second` s after the load's first intended send.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IntervalRow {
    pub second: u64,
    #[serde(default)]
    pub phase: Phase,
    /// Messages acknowledged in this second.
    pub publish_msgs: u64,
    pub publish_p99_us: u64,
    /// How far behind their schedule the producers were at worst in this
    /// second: the latest send's delay, or the oldest message owed while
    /// they could not send.
    #[serde(default)]
    pub producer_lag_max_us: u64,
    /// Messages consumed in this second, over every subscription.
    pub consume_msgs: u64,
    pub e2e_p99_us: u64,
    /// Acknowledged but not yet consumed at the second's end, over every
    /// subscription; absent without consumers.
    #[serde(default)]
    pub backlog_msgs: Option<u64>,
    pub errors: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BacklogResult {
    pub backlog_bytes: u64,
    pub backlog_messages: u64,
    pub drain_seconds: f64,
    pub drain_rate_msgs: f64,
    pub drain_rate_mb: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PointResult {
    pub index: usize,
    pub repeat: u32,
    pub label: String,
    pub settings: Vec<(String, String)>,
    /// Requested rate in msg/s (0: max-rate mode).
    pub target_rate: f64,
    /// In max-rate mode, the rate the measured window sustained at the
    /// end of the search and its confirmation (`max_rate_confirmed`);
    /// `None` when no window within the attempts did.
    pub max_rate_found: Option<f64>,
    /// In max-rate mode: `true` when the measured window sustained
    /// `max_rate_found`, `false` when none of the windows tried did (the
    /// point's figures are then the last one's). `None` outside max-rate
    /// mode and in backlog mode, whose window is not judged: the rate is
    /// then the probes' alone.
    #[serde(default)]
    pub max_rate_confirmed: Option<bool>,
    /// Every probe of the max-rate search and every measured window that
    /// confirmed or refuted its rate, in order.
    #[serde(default)]
    pub max_rate_search: Vec<Probe>,
    /// The rates asked for through the window when they changed (OMB's
    /// `producerIncrementRate` ramp), first the one it started at; then
    /// `target_rate` is their mean over the window. Empty for one rate.
    #[serde(default)]
    pub rate_steps: Vec<RateStep>,
    /// Seconds of warm-up before the window.
    #[serde(default)]
    pub warmup_s: f64,
    /// Length of the measured window, seconds.
    pub window_s: f64,
    /// Acknowledgements that arrived inside the window, per second of it.
    pub publish_rate_msgs: f64,
    pub publish_rate_mb: f64,
    /// Messages consumed inside the window, per second of it (over every
    /// subscription).
    pub consume_rate_msgs: f64,
    pub consume_rate_mb: f64,
    /// Publish latency of the messages meant to be sent in the window,
    /// acknowledged ones and, as lower bounds, `unsent` ones.
    pub publish_latency: Percentiles,
    pub publish_delay: Percentiles,
    /// End-to-end latency of messages consumed; `unconsumed` ones enter
    /// as lower bounds.
    pub end_to_end: Percentiles,
    /// Where end-to-end latency starts (see `E2eStart`).
    #[serde(default)]
    pub end_to_end_start: String,
    /// Messages handed to the client over the whole load (warm-up and
    /// drain included): each was acknowledged or failed.
    #[serde(default)]
    pub sent: u64,
    /// Messages of the window's schedule never sent.
    #[serde(default)]
    pub unsent: u64,
    /// Acknowledged messages (times subscriptions) never consumed.
    #[serde(default)]
    pub unconsumed: u64,
    /// The same per subscription (`topic/index`).
    #[serde(default)]
    pub unconsumed_by_subscription: BTreeMap<String, u64>,
    /// Failed messages: of the window for `errors`, of the whole load per
    /// cause.
    pub errors: u64,
    #[serde(default)]
    pub error_rate: f64,
    #[serde(default)]
    pub errors_by_cause: BTreeMap<String, u64>,
    pub error_samples: Vec<String>,
    /// Whether the load kept up through the window, and why not.
    #[serde(default)]
    pub sustain: Option<Sustain>,
    pub backlog: Option<BacklogResult>,
    /// Seconds from starting the consumers until every subscription's
    /// consumer group held all its partitions; producers start after it.
    /// `None` without subscriptions or with manual assignment.
    #[serde(default)]
    pub consumer_group_settle_s: Option<f64>,
    pub intervals: Vec<IntervalRow>,
    /// Cut short by Ctrl-C.
    pub interrupted: bool,
    /// What the load cost in CPU and memory, per process and phase.
    #[serde(default)]
    pub cpu: Option<CpuUse>,
    /// Transactions, when the producers ran them.
    #[serde(default)]
    pub transactions: Option<TransactionResult>,
    /// The data directory's bare `fdatasync` latency, measured right
    /// before and after the load, when the broker flushes per append (or
    /// `--sync-probe` asked for it).
    #[serde(default)]
    pub disk_sync: Option<DiskSync>,
    /// How the point's clients connected, e.g. `SASL_SSL (SCRAM-SHA-512 as
    /// sluice-bench)`.
    #[serde(default)]
    pub security: Option<PointSecurity>,
    /// The embedded brokers' own counters over the point (from its start
    /// to its end, max-rate probes included); absent for a remote broker.
    #[serde(default)]
    pub broker_counters: Option<crate::target::counters::BrokerCounters>,
}

/// How a point's producers and consumers secured their connections.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct PointSecurity {
    pub producer: String,
    pub consumer: String,
}

/// What a transactional point's producers did with their transactions.
/// Publish and end-to-end latency then run to the commit: a message counts
/// as acknowledged once its transaction committed, and a read_committed
/// consumer sees it only then.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct TransactionResult {
    /// `transaction.messages`.
    pub messages_per_transaction: u64,
    /// Transactions begun in the window and committed.
    pub committed: u64,
    /// Transactions aborted over the whole load.
    pub aborted: u64,
    /// Commits inside the window, per second of it.
    pub rate_per_s: f64,
    /// The EndTxn round trip of the window's transactions.
    pub commit_latency: Percentiles,
    /// From a transaction's first message to its commit's answer.
    pub begin_to_commit: Percentiles,
}

/// A rate asked for from `from_s` seconds into the measured window on.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RateStep {
    pub from_s: f64,
    pub rate: f64,
}

/// What a max-rate attempt was.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeKind {
    /// The first, unpaced probe: an upper bound.
    Unpaced,
    /// A short paced probe of the search (runs written before kinds were
    /// named read as these, the unpaced one with rate 0).
    #[default]
    Search,
    /// The point's full measured window, which confirms the rate or steps
    /// it down.
    Window,
}

/// One rate the max-rate search tried.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Probe {
    #[serde(default)]
    pub kind: ProbeKind,
    /// msg/s asked for; 0 for the unpaced first probe.
    pub rate: f64,
    /// Seconds of its check window (0 in runs written before it was kept).
    #[serde(default)]
    pub window_s: f64,
    /// msg/s acknowledged in the probe's window.
    pub achieved: f64,
    pub sustained: bool,
    pub why_not: Vec<String>,
}

/// Whether a load kept up: over the measured window the producers' lag
/// behind their schedule, publish p99 and the consumers' backlog did not
/// grow, and nothing scheduled went unsent (`sustain.rs`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Sustain {
    pub sustained: bool,
    /// Growth per second of the window, first third to last third.
    pub lag_growth_ms_per_s: f64,
    pub p99_growth_ms_per_s: f64,
    pub backlog_growth_msgs_per_s: Option<f64>,
    /// Each reason the load was not sustained, with its figure.
    pub why_not: Vec<String>,
}

/// Histograms of a point, for `.hgrm` files, interval logs and charts.
#[derive(Clone, Debug)]
pub struct PointHists {
    pub publish: Hist,
    pub delay: Hist,
    pub e2e: Hist,
    /// EndTxn round trips (empty unless transactional).
    pub commit: Hist,
    /// Per second of the load: (second, publish latency, end-to-end
    /// latency).
    pub intervals: Vec<(u64, Option<Hist>, Option<Hist>)>,
    /// Wall-clock time of the load's start (second 0), µs since the epoch.
    pub start_unix_us: i64,
}
