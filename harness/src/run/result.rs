//! What one sweep point measured: the summary that goes into `run.json` and
//! the histograms behind it.

use crate::measure::hist::{Hist, Percentiles};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IntervalRow {
    /// Seconds since the point's load started.
    pub second: u64,
    pub publish_msgs: u64,
    pub publish_p99_us: u64,
    pub consume_msgs: u64,
    pub e2e_p99_us: u64,
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
    /// In max-rate mode, the sustainable rate the search found.
    pub max_rate_found: Option<f64>,
    /// Length of the measured window, seconds.
    pub window_s: f64,
    pub publish_rate_msgs: f64,
    pub publish_rate_mb: f64,
    pub consume_rate_msgs: f64,
    pub consume_rate_mb: f64,
    pub publish_latency: Percentiles,
    pub publish_delay: Percentiles,
    pub end_to_end: Percentiles,
    pub errors: u64,
    pub error_samples: Vec<String>,
    pub backlog: Option<BacklogResult>,
    /// Seconds from starting the consumers until every subscription's
    /// consumer group held all its partitions; producers start after it.
    /// `None` without subscriptions or with manual assignment.
    #[serde(default)]
    pub consumer_group_settle_s: Option<f64>,
    pub intervals: Vec<IntervalRow>,
    /// Cut short by Ctrl-C.
    pub interrupted: bool,
}

/// Histograms of a point, for `.hgrm` files, interval logs and charts.
#[derive(Clone, Debug)]
pub struct PointHists {
    pub publish: Hist,
    pub delay: Hist,
    pub e2e: Hist,
    /// Per second: (second, publish latency, end-to-end latency).
    pub intervals: Vec<(u64, Option<Hist>, Option<Hist>)>,
}
