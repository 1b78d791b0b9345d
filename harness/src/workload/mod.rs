//! Workloads: what to run, read from a YAML file that is a superset of
//! OpenMessaging Benchmark's workload format.
//!
//! Loading goes file → [`raw::RawWorkload`] (types and unknown fields checked
//! by serde, with the line) → sweep expansion ([`sweep`]) → one resolved,
//! validated [`Workload`] per point. Every error names the file, the line and
//! the field, and all of it happens before anything runs.

pub mod dist;
pub mod error;
pub mod locate;
pub mod props;
pub mod raw;
pub mod security;
pub mod sweep;

use crate::client::security::SecurityProtocol;
use error::{FieldError, WorkloadError};
use props::{
    consumer_accepts, producer_accepts, ConsumerSettings, ProducerSettings, TopicSettings,
};
use raw::{
    parse_properties, scalar_to_string, KeyDistributionSpec, RawDriver, RawWorkload,
    SizeDistributionSpec,
};
use security::SecurityFor;
use serde::Serialize;
use serde_yaml::{Mapping, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Bounds that keep a typo from asking for absurd resources.
pub const TOPICS_MAX: u32 = 10_000;
pub const PARTITIONS_MAX: u32 = 100_000;
pub const CLIENTS_PER_TOPIC_MAX: u32 = 1_000;
pub const MESSAGE_SIZE_MAX: u32 = 16 * 1024 * 1024;
pub const REPEAT_MAX: u32 = 100;
pub const PAYLOAD_POOL_MAX: u32 = 100_000;
/// OMB's default warm-up (`warmupDurationMinutes` = 1).
pub const WARMUP_DEFAULT: Duration = Duration::from_secs(60);
/// OMB's `producerStartRate` and `producerIncrementSeconds` defaults.
pub const RAMP_START_RATE_DEFAULT: f64 = 10_000.0;
pub const RAMP_PERIOD_DEFAULT_S: u64 = 60;

/// A fully resolved, validated workload: one sweep point.
#[derive(Clone, Debug, Serialize)]
pub struct Workload {
    pub name: String,
    pub topics: u32,
    pub partitions_per_topic: u32,
    pub subscriptions_per_topic: u32,
    pub producers_per_topic: u32,
    pub consumers_per_subscription: u32,
    pub consumer_assignment: ConsumerAssignment,
    /// Messages per second over all producers; 0 means find the maximum.
    pub producer_rate: f64,
    pub keys: KeyDistributionSpec,
    pub sizes: SizeDistributionSpec,
    pub payload: PayloadSpec,
    /// Build this many bytes of backlog before consumers start (0: none).
    pub backlog_bytes: u64,
    pub backlog_drain_ratio: f64,
    pub test_duration: Duration,
    pub warmup_duration: Duration,
    pub producer: ProducerSettings,
    pub consumer: ConsumerSettings,
    pub topic: TopicSettings,
    /// OMB's `producerIncrementRate` ramp: the rate rises in steps through
    /// the measured window instead of holding `producer_rate`.
    pub ramp: Option<Ramp>,
    /// OMB's `acceptableBacklog`: a backlog counts as drained once at most
    /// this many messages (over every subscription) are left unread.
    pub acceptable_backlog: Option<u64>,
}

/// A rate rising in steps, as OMB's `producerIncrementRate` makes it:
/// warm-up and the window's start at `start_rate`, then every `period`
/// `increment` more, for as long as the rate stays at most `final_rate`
/// (`producerRate`); the last step holds to the end.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Ramp {
    pub start_rate: f64,
    pub increment: f64,
    pub period: Duration,
    pub final_rate: f64,
}

impl Ramp {
    /// The rate changes of a window of length `test`: (time after the
    /// window's start, new rate).
    pub fn changes(&self, test: Duration) -> Vec<(Duration, f64)> {
        let mut out = Vec::new();
        for i in 1..crate::run::pace::STEPS_MAX as u32 {
            let rate = self.start_rate + self.increment * f64::from(i);
            let at = match self.period.checked_mul(i) {
                Some(at) if at < test && rate <= self.final_rate => at,
                _ => break,
            };
            out.push((at, rate));
        }
        out
    }

    /// Messages per second asked for on average over a window of `test`.
    pub fn mean_rate(&self, test: Duration) -> f64 {
        let test_s = test.as_secs_f64().max(1e-9);
        let mut from = 0.0;
        let mut rate = self.start_rate;
        let mut total = 0.0;
        for (at, next) in self.changes(test) {
            total += (at.as_secs_f64() - from) * rate;
            from = at.as_secs_f64();
            rate = next;
        }
        (total + (test_s - from) * rate) / test_s
    }
}

/// How a subscription's consumers get their partitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsumerAssignment {
    /// Each subscription is a consumer group whose consumers subscribe to
    /// the topic, as OMB's Kafka driver does.
    Group,
    /// Consumer c of n reads partitions p with p % n == c; for brokers
    /// without consumer groups.
    Manual,
}

/// Where message values come from.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct PayloadSpec {
    /// OMB's `payloadFile`, resolved against the workload's folder.
    pub file: Option<PathBuf>,
    /// Fraction of each pooled payload that is random; the rest is zeros,
    /// so compression ratios can be chosen.
    pub random_bytes_ratio: f64,
    pub pool_size: u32,
}

/// One run of the sweep: its settings (as written under `sweep:`) and the
/// resolved workload.
#[derive(Clone, Debug, Serialize)]
pub struct Point {
    pub index: usize,
    pub settings: Vec<(String, String)>,
    pub workload: Workload,
}

impl Point {
    /// `linger.ms=5 acks=all`, or `base` for a file without a sweep.
    pub fn label(&self) -> String {
        if self.settings.is_empty() {
            return "base".to_string();
        }
        self.settings
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// A loaded workload file: every point of its sweep, resolved.
#[derive(Clone, Debug, Serialize)]
pub struct WorkloadFile {
    pub path: PathBuf,
    pub name: String,
    pub repeat: u32,
    pub points: Vec<Point>,
    /// The file as written, kept for `run.json`.
    pub text: String,
    /// OMB fields this run reads but does not act on as OMB would, each as
    /// `file:line: field: why`; printed before the run starts.
    pub warnings: Vec<String>,
    /// `bootstrap.servers` of the `--driver` file, the target when no
    /// `--bootstrap` is given and the embedded broker is not asked for.
    pub driver_bootstrap: Option<DriverTarget>,
    /// The broker the points' security was resolved for.
    pub security_for: SecurityFor,
}

/// Where an OMB driver file says the broker is.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct DriverTarget {
    pub file: PathBuf,
    /// The first address of its `bootstrap.servers`, scheme removed.
    pub servers: String,
}

impl WorkloadFile {
    /// The highest replication factor any point asks for.
    pub fn max_replication_factor(&self) -> u32 {
        self.points
            .iter()
            .map(|p| p.workload.topic.replication_factor)
            .max()
            .unwrap_or(1)
    }

    /// Refuses points whose replication factor is above the broker count.
    pub fn check_brokers(&self, brokers: usize, why: &str) -> Result<(), WorkloadError> {
        for p in &self.points {
            let rf = p.workload.topic.replication_factor;
            if rf as usize > brokers {
                return Err(self.error(
                    FieldError::new(
                        "topic.replication.factor",
                        format!(
                            "point `{}` asks for replication factor {rf} but {why} has {brokers} broker(s)",
                            p.label()
                        ),
                    ),
                    true,
                ));
            }
        }
        Ok(())
    }

    fn error(&self, e: FieldError, in_sweep: bool) -> WorkloadError {
        locate_error(&self.path, &self.text, e, in_sweep)
    }
}

fn locate_error(file: &Path, text: &str, e: FieldError, prefer_sweep: bool) -> WorkloadError {
    let segments: Vec<&str> = split_field(&e.field);
    let mut line = locate::locate(text, &segments);
    if prefer_sweep || line.is_none() {
        // A value written by the sweep: point at the sweep entry.
        let key = e.field.split_once('.').map(|(_, k)| k).unwrap_or(&e.field);
        if let Some(l) = locate::locate(text, &["sweep", key]) {
            line = Some(l);
        }
    }
    WorkloadError::Invalid {
        file: file.to_path_buf(),
        line,
        field: e.field,
        message: e.message,
    }
}

/// `producer.linger.ms` → [`producer`, `linger.ms`]: the first segment is a
/// YAML key, the rest one Kafka property name.
fn split_field(field: &str) -> Vec<&str> {
    match field.split_once('.') {
        Some((head, rest)) => vec![head, rest],
        None => vec![field],
    }
}

/// Reads, expands and validates a workload file; `driver` is an optional OMB
/// driver file whose settings the workload's own settings override. The
/// points' security is resolved for the broker a run without `--bootstrap`
/// or `--embedded` would use: the driver file's, else the embedded one.
pub fn load(path: &Path, driver: Option<&Path>) -> Result<WorkloadFile, WorkloadError> {
    load_for(path, driver, false, false)
}

/// [`load`] for a run given `--bootstrap` (`bootstrap`) or `--embedded`
/// (`embedded`): the points' security is resolved for the broker
/// `run::sweep::choose_target` picks with those flags.
pub fn load_for(
    path: &Path,
    driver: Option<&Path>,
    bootstrap: bool,
    embedded: bool,
) -> Result<WorkloadFile, WorkloadError> {
    let text = std::fs::read_to_string(path).map_err(|source| WorkloadError::Read {
        file: path.to_path_buf(),
        source,
    })?;
    let driver = match driver {
        Some(d) => Some(load_driver(d)?),
        None => None,
    };
    let driver_target = match &driver {
        Some((file, text, _)) => driver_bootstrap(file, text)?,
        None => None,
    };
    let security_for = if !bootstrap && (embedded || driver_target.is_none()) {
        SecurityFor::Embedded
    } else {
        SecurityFor::Given
    };
    let mut f = parse_for(path, &text, driver.as_ref(), security_for)?;
    f.driver_bootstrap = driver_target;
    Ok(f)
}

/// The first address of a driver file's `bootstrap.servers` (from
/// `commonConfig`, else `producerConfig`), as `host:port`.
fn driver_bootstrap(file: &Path, text: &str) -> Result<Option<DriverTarget>, WorkloadError> {
    let raw: RawDriver = typed_from_str(file, text)?;
    for (field, block) in [
        ("commonConfig", &raw.commonConfig),
        ("producerConfig", &raw.producerConfig),
    ] {
        let Some(block) = block else { continue };
        let props = parse_properties(block)
            .map_err(|m| locate_error(file, text, FieldError::new(field, m), false))?;
        let servers = props
            .iter()
            .rev()
            .find(|(k, _)| k == "bootstrap.servers")
            .and_then(|(_, v)| v.split(',').map(str::trim).find(|s| !s.is_empty()));
        if let Some(first) = servers {
            let addr = first.split_once("://").map_or(first, |(_, a)| a);
            return Ok(Some(DriverTarget {
                file: file.to_path_buf(),
                servers: addr.to_string(),
            }));
        }
    }
    Ok(None)
}

fn load_driver(path: &Path) -> Result<(PathBuf, String, Mapping), WorkloadError> {
    let text = std::fs::read_to_string(path).map_err(|source| WorkloadError::Read {
        file: path.to_path_buf(),
        source,
    })?;
    let _: RawDriver = typed_from_str(path, &text)?;
    let mapping: Mapping = serde_yaml::from_str(&text).map_err(|e| yaml_error(path, &e, ""))?;
    Ok((path.to_path_buf(), text, mapping))
}

fn yaml_error(file: &Path, e: &serde_yaml::Error, field: &str) -> WorkloadError {
    WorkloadError::Invalid {
        file: file.to_path_buf(),
        line: e.location().map(|l| l.line()),
        field: if field.is_empty() {
            "(document)".to_string()
        } else {
            field.to_string()
        },
        message: e.to_string(),
    }
}

/// Deserializes with the path of a failing field kept.
fn typed_from_str<T: serde::de::DeserializeOwned>(
    path: &Path,
    text: &str,
) -> Result<T, WorkloadError> {
    let de = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        yaml_error(path, e.inner(), if field == "." { "" } else { &field })
    })
}

/// Parses workload text (see [`load`]), its security resolved as given
/// (for a broker given with `--bootstrap`; [`parse_for`] resolves it for
/// the embedded broker).
pub fn parse(
    path: &Path,
    text: &str,
    driver: Option<&(PathBuf, String, Mapping)>,
) -> Result<WorkloadFile, WorkloadError> {
    parse_for(path, text, driver, SecurityFor::Given)
}

/// Parses workload text, its security resolved for `security_for`.
pub fn parse_for(
    path: &Path,
    text: &str,
    driver: Option<&(PathBuf, String, Mapping)>,
    security_for: SecurityFor,
) -> Result<WorkloadFile, WorkloadError> {
    let raw: RawWorkload = typed_from_str(path, text)?;
    let mut base: Mapping = serde_yaml::from_str(text).map_err(|e| yaml_error(path, &e, ""))?;
    let sweep = base.remove("sweep").and_then(|v| match v {
        Value::Mapping(m) => Some(m),
        _ => None,
    });
    base.remove("repeat");
    if let Some((_, _, d)) = driver {
        for (k, v) in d {
            if k.as_str() != Some("name") && !base.contains_key(k) {
                base.insert(k.clone(), v.clone());
            }
        }
    }
    let err = |e: FieldError, in_sweep: bool| locate_error(path, text, e, in_sweep);
    let repeat = raw.repeat.unwrap_or(1);
    if repeat == 0 || repeat > REPEAT_MAX {
        return Err(err(
            FieldError::new("repeat", format!("must be between 1 and {REPEAT_MAX}")),
            false,
        ));
    }
    let expanded = sweep::expand(&base, sweep.as_ref()).map_err(|e| err(e, false))?;
    let default_name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "workload".to_string());
    let base_dir = path.parent().unwrap_or(Path::new("."));
    let mut points = Vec::with_capacity(expanded.len());
    let mut warnings = Vec::new();
    for (index, e) in expanded.into_iter().enumerate() {
        let in_sweep = !e.settings.is_empty();
        let raw: RawWorkload = serde_path_to_error::deserialize(Value::Mapping(e.mapping))
            .map_err(|de| {
                let field = de.path().to_string();
                err(FieldError::new(field, de.inner().to_string()), in_sweep)
            })?;
        let workload = resolve_for(&raw, &default_name, base_dir, security_for)
            .map_err(|fe| err(fe, in_sweep))?;
        for (field, why) in omb_warnings(&raw, &workload) {
            let at =
                locate::locate(text, &[field]).map_or(String::new(), |line| format!(":{line}"));
            let w = format!("{}{at}: {field}: {why}", path.display());
            if !warnings.contains(&w) {
                warnings.push(w);
            }
        }
        points.push(Point {
            index,
            settings: e.settings,
            workload,
        });
    }
    let name = points[0].workload.name.clone();
    Ok(WorkloadFile {
        path: path.to_path_buf(),
        name,
        repeat,
        points,
        text: text.to_string(),
        warnings,
        driver_bootstrap: None,
        security_for,
    })
}

/// OMB fields given whose OMB meaning this run does not carry out, and
/// why. Fields OMB itself ignores in the same setting (a start rate with a
/// fixed rate, say) are left alone.
fn omb_warnings(raw: &RawWorkload, w: &Workload) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let search = w.producer_rate == 0.0 && w.ramp.is_none();
    if raw
        .messageRateReceivedForSubscription
        .is_some_and(|p| p != 100)
    {
        out.push((
            "messageRateReceivedForSubscription",
            "ignored: subscriptions here have no filters, every one receives every message, \
             and backlogs are counted so"
                .to_string(),
        ));
    }
    if raw.producerStartRate.is_some() && search {
        out.push((
            "producerStartRate",
            "ignored: the max-rate search starts from an unpaced probe and bisects \
             (docs/HARNESS.md), not from a start rate"
                .to_string(),
        ));
    }
    if raw.acceptableBacklog.is_some() && w.backlog_bytes == 0 && search {
        out.push((
            "acceptableBacklog",
            "ignored: OMB uses it in its max-rate search, which this harness replaces with \
             its own; it counts only with consumerBacklogSizeGB"
                .to_string(),
        ));
    }
    for (field, v) in [
        ("producerPauseBeforeDrain", raw.producerPauseBeforeDrain),
        ("producerPauseDuringDrain", raw.producerPauseDuringDrain),
    ] {
        if v.is_some_and(|s| s > 0) {
            out.push((
                field,
                "ignored: producers never pause here; the backlog drains while they go on \
                 at the workload's rate"
                    .to_string(),
            ));
        }
    }
    if let Some(r) = w
        .ramp
        .as_ref()
        .filter(|r| r.start_rate + r.increment > r.final_rate)
    {
        out.push((
            "producerIncrementRate",
            format!(
                "the rate stays at producerStartRate ({}) throughout: as in OMB, the ramp \
                 stops before passing producerRate ({})",
                r.start_rate, r.final_rate
            ),
        ));
    }
    out
}

/// `key: value` pairs of a property block, as strings.
fn block_props(block: &str, m: Option<&Mapping>) -> Result<Vec<(String, String)>, FieldError> {
    let mut out = Vec::new();
    for (k, v) in m.into_iter().flatten() {
        let key = scalar_to_string(k)
            .ok_or_else(|| FieldError::new(block, "property names must be strings"))?;
        let value = scalar_to_string(v).ok_or_else(|| {
            FieldError::new(
                format!("{block}.{key}"),
                "property values must be scalars (number, string, bool)",
            )
        })?;
        out.push((key, value));
    }
    Ok(out)
}

fn props_string(field: &str, s: Option<&String>) -> Result<Vec<(String, String)>, FieldError> {
    match s {
        None => Ok(Vec::new()),
        Some(s) => parse_properties(s).map_err(|m| FieldError::new(field, m)),
    }
}

/// Turns one point's raw fields into a validated [`Workload`], its
/// security resolved as given.
pub fn resolve(raw: &RawWorkload, default_name: &str, dir: &Path) -> Result<Workload, FieldError> {
    resolve_for(raw, default_name, dir, SecurityFor::Given)
}

/// [`resolve`], the security resolved for `security_for`.
pub fn resolve_for(
    raw: &RawWorkload,
    default_name: &str,
    dir: &Path,
    security_for: SecurityFor,
) -> Result<Workload, FieldError> {
    let (producer, consumer, topic) = resolve_clients(raw, security_for)?;
    let (test_duration, warmup_duration) = resolve_durations(raw)?;
    let w = Workload {
        name: raw.name.clone().unwrap_or_else(|| default_name.to_string()),
        topics: raw.topics.unwrap_or(1),
        partitions_per_topic: raw.partitionsPerTopic.unwrap_or(1),
        subscriptions_per_topic: raw.subscriptionsPerTopic.unwrap_or(1),
        producers_per_topic: raw.producersPerTopic.unwrap_or(1),
        consumers_per_subscription: raw.consumerPerSubscription.unwrap_or(1),
        consumer_assignment: resolve_assignment(raw)?,
        producer_rate: raw.producerRate.unwrap_or(0.0),
        keys: resolve_keys(raw)?,
        sizes: resolve_sizes(raw)?,
        payload: PayloadSpec {
            file: raw.payloadFile.as_ref().map(|f| resolve_path(dir, f)),
            random_bytes_ratio: if raw.useRandomizedPayloads.unwrap_or(false) {
                raw.randomBytesRatio.unwrap_or(1.0)
            } else {
                1.0
            },
            pool_size: if raw.useRandomizedPayloads.unwrap_or(false) {
                raw.randomizedPayloadPoolSize.unwrap_or(1)
            } else {
                1
            },
        },
        backlog_bytes: (raw.consumerBacklogSizeGB.unwrap_or(0.0) * 1e9) as u64,
        backlog_drain_ratio: raw.backlogDrainRatio.unwrap_or(1.0),
        test_duration,
        warmup_duration,
        producer,
        consumer,
        topic,
        ramp: resolve_ramp(raw)?,
        acceptable_backlog: raw.acceptableBacklog,
    };
    check(&w, raw)?;
    Ok(w)
}

fn resolve_ramp(raw: &RawWorkload) -> Result<Option<Ramp>, FieldError> {
    let increment = raw.producerIncrementRate.unwrap_or(0.0);
    if !increment.is_finite() || increment < 0.0 {
        return Err(FieldError::new(
            "producerIncrementRate",
            "must be 0 (no ramp) or above",
        ));
    }
    if increment == 0.0 {
        return Ok(None);
    }
    let start_rate = raw.producerStartRate.unwrap_or(RAMP_START_RATE_DEFAULT);
    if !start_rate.is_finite() || start_rate <= 0.0 {
        return Err(FieldError::new(
            "producerStartRate",
            "a ramp (producerIncrementRate) needs a start rate above 0",
        ));
    }
    let period_s = raw
        .producerIncrementSeconds
        .unwrap_or(RAMP_PERIOD_DEFAULT_S);
    if period_s == 0 {
        return Err(FieldError::new(
            "producerIncrementSeconds",
            "must be at least 1",
        ));
    }
    if raw.consumerBacklogSizeGB.is_some_and(|g| g > 0.0) {
        return Err(FieldError::new(
            "producerIncrementRate",
            "a ramp and a consumer backlog (consumerBacklogSizeGB) are not run together",
        ));
    }
    Ok(Some(Ramp {
        start_rate,
        increment,
        period: Duration::from_secs(period_s),
        final_rate: raw.producerRate.unwrap_or(0.0),
    }))
}

fn resolve_assignment(raw: &RawWorkload) -> Result<ConsumerAssignment, FieldError> {
    match raw.consumerAssignment.as_deref().map(str::trim) {
        None | Some("group") => Ok(ConsumerAssignment::Group),
        Some("manual") => Ok(ConsumerAssignment::Manual),
        Some(other) => Err(FieldError::new(
            "consumerAssignment",
            format!("`{other}` is not group or manual"),
        )),
    }
}

fn resolve_path(dir: &Path, f: &str) -> PathBuf {
    let p = PathBuf::from(f);
    if p.is_absolute() || p.exists() {
        p
    } else {
        dir.join(p)
    }
}

fn resolve_clients(
    raw: &RawWorkload,
    security_for: SecurityFor,
) -> Result<(ProducerSettings, ConsumerSettings, TopicSettings), FieldError> {
    let mut producer = ProducerSettings::default();
    let mut consumer = ConsumerSettings::default();
    let mut topic = TopicSettings::default();
    for (k, v) in props_string("commonConfig", raw.commonConfig.as_ref())? {
        let pair = [(k.clone(), v)];
        match (producer_accepts(&k), consumer_accepts(&k)) {
            (false, false) => {
                return Err(FieldError::new(
                    format!("commonConfig.{k}"),
                    "unknown Kafka client property",
                ))
            }
            (p, c) => {
                if p {
                    producer.apply("commonConfig", &pair)?;
                }
                if c {
                    consumer.apply("commonConfig", &pair)?;
                }
            }
        }
    }
    producer.apply(
        "producerConfig",
        &props_string("producerConfig", raw.producerConfig.as_ref())?,
    )?;
    producer.apply("producer", &block_props("producer", raw.producer.as_ref())?)?;
    consumer.apply(
        "consumerConfig",
        &props_string("consumerConfig", raw.consumerConfig.as_ref())?,
    )?;
    consumer.apply("consumer", &block_props("consumer", raw.consumer.as_ref())?)?;
    if let Some(rf) = raw.replicationFactor {
        topic.replication_factor = rf;
    }
    topic.apply(
        "topicConfig",
        &props_string("topicConfig", raw.topicConfig.as_ref())?,
    )?;
    topic.apply("topic", &block_props("topic", raw.topic.as_ref())?)?;
    producer.settle();
    producer.check("producer")?;
    producer.security = producer
        .security_props
        .resolve_for("producer", security_for)?;
    consumer.security = consumer
        .security_props
        .resolve_for("consumer", security_for)?;
    topic.check("topic")?;
    Ok((producer, consumer, topic))
}

fn resolve_durations(raw: &RawWorkload) -> Result<(Duration, Duration), FieldError> {
    let secs = |field: &str, v: f64| -> Result<Duration, FieldError> {
        if !v.is_finite() || !(0.0..=7.0 * 86_400.0).contains(&v) {
            return Err(FieldError::new(field, "must be between 0 and a week"));
        }
        Ok(Duration::from_secs_f64(v))
    };
    let test = match (raw.testDurationSeconds, raw.testDurationMinutes) {
        (Some(s), _) => secs("testDurationSeconds", s)?,
        (None, Some(m)) => secs("testDurationMinutes", m * 60.0)?,
        (None, None) => Duration::from_secs(60),
    };
    if test.is_zero() {
        return Err(FieldError::new(
            if raw.testDurationSeconds.is_some() {
                "testDurationSeconds"
            } else {
                "testDurationMinutes"
            },
            "the test duration must be above 0",
        ));
    }
    let warmup = match (raw.warmupDurationSeconds, raw.warmupDurationMinutes) {
        (Some(s), _) => secs("warmupDurationSeconds", s)?,
        (None, Some(m)) => secs("warmupDurationMinutes", m * 60.0)?,
        (None, None) => WARMUP_DEFAULT.min(test / 5),
    };
    Ok((test, warmup))
}

fn resolve_keys(raw: &RawWorkload) -> Result<KeyDistributionSpec, FieldError> {
    if let Some(spec) = &raw.keyDistribution {
        if raw.keyDistributor.is_some() {
            return Err(FieldError::new(
                "keyDistribution",
                "give either keyDistributor (OMB) or keyDistribution, not both",
            ));
        }
        let keys = match spec {
            KeyDistributionSpec::None => 1,
            KeyDistributionSpec::RoundRobin { keys }
            | KeyDistributionSpec::Uniform { keys }
            | KeyDistributionSpec::Zipf { keys, .. } => *keys,
        };
        if keys == 0 || keys > dist::KEYS_MAX {
            return Err(FieldError::new(
                "keyDistribution.keys",
                format!("must be between 1 and {}", dist::KEYS_MAX),
            ));
        }
        if let KeyDistributionSpec::Zipf { exponent, .. } = spec {
            if !exponent.is_finite() || *exponent <= 0.0 || *exponent > 10.0 {
                return Err(FieldError::new(
                    "keyDistribution.exponent",
                    "must be above 0 and at most 10",
                ));
            }
        }
        return Ok(spec.clone());
    }
    // OMB's distributors. RANDOM_NANO draws a fresh key per message; its
    // key space is bounded here at KEYS_MAX uniform keys.
    match raw.keyDistributor.as_deref() {
        None | Some("NO_KEY") => Ok(KeyDistributionSpec::None),
        Some("KEY_ROUND_ROBIN") => Ok(KeyDistributionSpec::RoundRobin { keys: 10_000 }),
        Some("RANDOM_NANO") => Ok(KeyDistributionSpec::Uniform {
            keys: dist::KEYS_MAX,
        }),
        Some(other) => Err(FieldError::new(
            "keyDistributor",
            format!("`{other}` is not NO_KEY, KEY_ROUND_ROBIN or RANDOM_NANO"),
        )),
    }
}

fn resolve_sizes(raw: &RawWorkload) -> Result<SizeDistributionSpec, FieldError> {
    let spec = match (&raw.messageSizeDistribution, raw.messageSize) {
        (Some(d), _) => d.clone(),
        (None, Some(size)) => SizeDistributionSpec::Fixed { size },
        (None, None) => {
            return Err(FieldError::new(
                "messageSize",
                "missing: give messageSize or messageSizeDistribution",
            ))
        }
    };
    let field = if raw.messageSizeDistribution.is_some() {
        "messageSizeDistribution"
    } else {
        "messageSize"
    };
    let in_range = |s: u32| (1..=MESSAGE_SIZE_MAX).contains(&s);
    let ok = match &spec {
        SizeDistributionSpec::Fixed { size } => in_range(*size),
        SizeDistributionSpec::Uniform { min, max } => {
            in_range(*min) && in_range(*max) && min <= max
        }
        SizeDistributionSpec::Weighted { sizes } => {
            !sizes.is_empty()
                && sizes.iter().all(|s| in_range(s.size) && s.weight >= 0.0)
                && sizes.iter().any(|s| s.weight > 0.0)
        }
    };
    if !ok {
        return Err(FieldError::new(
            field,
            format!(
                "sizes must be between 1 and {MESSAGE_SIZE_MAX} bytes (min <= max, weights >= 0)"
            ),
        ));
    }
    Ok(spec)
}

fn check(w: &Workload, raw: &RawWorkload) -> Result<(), FieldError> {
    let range = |field: &str, v: u32, min: u32, max: u32| {
        if v < min || v > max {
            Err(FieldError::new(
                field,
                format!("{v} is outside {min}..={max}"),
            ))
        } else {
            Ok(())
        }
    };
    range("topics", w.topics, 1, TOPICS_MAX)?;
    range(
        "partitionsPerTopic",
        w.partitions_per_topic,
        1,
        PARTITIONS_MAX,
    )?;
    range(
        "producersPerTopic",
        w.producers_per_topic,
        1,
        CLIENTS_PER_TOPIC_MAX,
    )?;
    range(
        "subscriptionsPerTopic",
        w.subscriptions_per_topic,
        0,
        CLIENTS_PER_TOPIC_MAX,
    )?;
    range(
        "consumerPerSubscription",
        w.consumers_per_subscription,
        1,
        CLIENTS_PER_TOPIC_MAX,
    )?;
    range(
        "randomizedPayloadPoolSize",
        w.payload.pool_size,
        1,
        PAYLOAD_POOL_MAX,
    )?;
    if !w.producer_rate.is_finite() || w.producer_rate < 0.0 {
        return Err(FieldError::new(
            "producerRate",
            "must be 0 (max rate) or above",
        ));
    }
    if !(0.0..=1.0).contains(&w.payload.random_bytes_ratio) {
        return Err(FieldError::new(
            "randomBytesRatio",
            "must be between 0 and 1",
        ));
    }
    if w.backlog_bytes > 0 && w.subscriptions_per_topic == 0 {
        return Err(FieldError::new(
            "consumerBacklogSizeGB",
            "a backlog needs at least one subscription to drain it",
        ));
    }
    if raw
        .backlogDrainRatio
        .is_some_and(|r| !(r > 0.0 && r <= 1.0))
    {
        return Err(FieldError::new("backlogDrainRatio", "must be in (0, 1]"));
    }
    if raw.backlogDrainRatio.is_some() && raw.acceptableBacklog.is_some() {
        return Err(FieldError::new(
            "acceptableBacklog",
            "give either backlogDrainRatio or acceptableBacklog (both say when a backlog is drained)",
        ));
    }
    let max_size = dist::SizeSampler::from_spec(&w.sizes).max() as usize;
    if max_size + 128 > w.producer.max_request_size {
        return Err(FieldError::new(
            "producer.max.request.size",
            format!("a {max_size}-byte message does not fit in max.request.size"),
        ));
    }
    if let Some(file) = &w.payload.file {
        if !file.is_file() {
            return Err(FieldError::new(
                "payloadFile",
                format!("{} is not a readable file", file.display()),
            ));
        }
    }
    Ok(())
}

/// A human summary of a loaded file, as `sluice-bench validate` prints it.
pub fn describe(f: &WorkloadFile) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let runs = f.points.len() * f.repeat as usize;
    let per_run: Duration = f
        .points
        .iter()
        .map(|p| p.workload.test_duration + p.workload.warmup_duration)
        .sum();
    let _ = writeln!(
        out,
        "{}: workload `{}`, {} point(s) x {} repeat(s) = {} run(s), about {} s of load",
        f.path.display(),
        f.name,
        f.points.len(),
        f.repeat,
        runs,
        per_run.as_secs() * u64::from(f.repeat)
    );
    for p in &f.points {
        let w = &p.workload;
        let rate = match (&w.ramp, w.producer_rate) {
            (Some(r), _) => format!(
                "{} rising {} every {} s up to {}",
                r.start_rate,
                r.increment,
                r.period.as_secs(),
                r.final_rate
            ),
            (None, 0.0) => "max".to_string(),
            (None, rate) => format!("{rate}"),
        };
        let _ = writeln!(
            out,
            "  [{}] {}: {} topic(s) x {} partition(s), rf {}, rate {} msg/s, {} s + {} s warm-up, acks {:?}, linger.ms {}, batch.size {}, compression {}",
            p.index,
            p.label(),
            w.topics,
            w.partitions_per_topic,
            w.topic.replication_factor,
            rate,
            w.test_duration.as_secs_f64(),
            w.warmup_duration.as_secs_f64(),
            w.producer.acks,
            w.producer.linger_ms,
            w.producer.batch_size,
            props::compression_name(w.producer.compression),
        );
        let (ps, cs) = (&w.producer.security, &w.consumer.security);
        if ps.protocol != SecurityProtocol::Plaintext || cs.protocol != SecurityProtocol::Plaintext
        {
            let _ = writeln!(
                out,
                "      security: producer {}, consumer {}",
                ps.describe(),
                cs.describe()
            );
        }
    }
    for w in &f.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    out
}

#[cfg(test)]
mod tests;
