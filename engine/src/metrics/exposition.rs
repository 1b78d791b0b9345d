//! The text a scrape answers: the shards' snapshots added up and encoded
//! in the OpenMetrics text format (which Prometheus reads) by
//! `prometheus-client`. Names follow Prometheus' conventions: a `sluice_`
//! prefix, base units in the name (`_bytes`, `_seconds`), `_total` on
//! counters (added by the encoder). `docs/OPERATIONS.md` lists them all.

use super::listeners::ListenerSample;
use super::requests::{version_label, ApiCounters};
use super::{
    group_lags, ClusterSample, Histogram, ProcessSample, ShardSnapshot, LATENCY_BUCKET_NANOS,
};
use kafka_protocol::messages::ApiKey;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;

/// Everything one scrape reports.
#[derive(Debug)]
pub struct Scrape {
    pub shards: Vec<ShardSnapshot>,
    pub cluster: ClusterSample,
    pub process: ProcessSample,
    /// Per-partition byte and message counters too
    /// (`metrics.partition.level=true`), not only per topic.
    pub per_partition: bool,
}

/// Encodes a scrape as OpenMetrics text.
pub fn encode(scrape: Scrape) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(scrape));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)
        .expect("writing to a String cannot fail");
    out
}

/// The content type of [`encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels<'a> = Vec<(&'static str, std::borrow::Cow<'a, str>)>;

/// A metric's name and help, and how to read its value from `T`.
type Column<T, V> = (&'static str, &'static str, fn(&T) -> V);

fn api_name(key: i16) -> String {
    ApiKey::try_from(key).map_or_else(|_| key.to_string(), |k| format!("{k:?}"))
}

/// One metric family: a descriptor and its labelled values.
struct Family<'e> {
    encoder: prometheus_client::encoding::MetricEncoder<'e>,
}

impl Family<'_> {
    fn counter(&mut self, labels: &Labels<'_>, v: f64) -> std::fmt::Result {
        if labels.is_empty() {
            return self.encoder.encode_counter::<NoLabelSet, _, u64>(&v, None);
        }
        self.encoder
            .encode_family(labels)?
            .encode_counter::<NoLabelSet, _, u64>(&v, None)
    }

    fn gauge(&mut self, labels: &Labels<'_>, v: f64) -> std::fmt::Result {
        if labels.is_empty() {
            return self.encoder.encode_gauge(&v);
        }
        self.encoder.encode_family(labels)?.encode_gauge(&v)
    }

    fn histogram(&mut self, labels: &Labels<'_>, h: &Histogram) -> std::fmt::Result {
        let buckets: Vec<(f64, u64)> = LATENCY_BUCKET_NANOS
            .iter()
            .map(|n| *n as f64 / 1e9)
            .chain(std::iter::once(f64::MAX))
            .zip(h.counts)
            .collect();
        if labels.is_empty() {
            return self.encoder.encode_histogram::<NoLabelSet>(
                h.sum_seconds(),
                h.count(),
                &buckets,
                None,
            );
        }
        self.encoder
            .encode_family(labels)?
            .encode_histogram::<NoLabelSet>(h.sum_seconds(), h.count(), &buckets, None)
    }
}

fn family<'e>(
    encoder: &'e mut DescriptorEncoder,
    name: &'e str,
    help: &str,
    kind: MetricType,
) -> Result<Family<'e>, std::fmt::Error> {
    Ok(Family {
        encoder: encoder.encode_descriptor(name, help, None, kind)?,
    })
}

fn no_labels() -> Labels<'static> {
    Vec::new()
}

fn label<'a>(
    name: &'static str,
    v: impl Into<std::borrow::Cow<'a, str>>,
) -> (&'static str, std::borrow::Cow<'a, str>) {
    (name, v.into())
}

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use MetricType::{Counter, Gauge, Histogram as Hist};
        let shards = &self.shards;

        // Traffic per topic (and per partition behind the switch).
        let mut topics: BTreeMap<&str, (u64, u64, u64, u64)> = BTreeMap::new();
        for p in shards.iter().flat_map(|s| &s.partitions) {
            let t = topics.entry(p.topic.as_str()).or_default();
            t.0 += p.bytes_in;
            t.1 += p.messages_in;
            t.2 += p.bytes_out;
            t.3 += p.messages_out;
        }
        let counters: [Column<(u64, u64, u64, u64), u64>; 4] = [
            (
                "sluice_topic_bytes_in",
                "Record batch bytes appended by producers.",
                |t| t.0,
            ),
            (
                "sluice_topic_messages_in",
                "Records appended by producers.",
                |t| t.1,
            ),
            (
                "sluice_topic_bytes_out",
                "Record bytes sent to consumers.",
                |t| t.2,
            ),
            (
                "sluice_topic_messages_out",
                "Records sent to consumers (the offsets the batches sent span).",
                |t| t.3,
            ),
        ];
        for (name, help, pick) in counters {
            let mut f = family(&mut e, name, help, Counter)?;
            for (topic, t) in &topics {
                f.counter(&vec![label("topic", *topic)], pick(t) as f64)?;
            }
        }
        if self.per_partition {
            let rows: [Column<super::PartitionSample, u64>; 4] = [
                (
                    "sluice_partition_bytes_in",
                    "Record batch bytes appended by producers.",
                    |p| p.bytes_in,
                ),
                (
                    "sluice_partition_messages_in",
                    "Records appended by producers.",
                    |p| p.messages_in,
                ),
                (
                    "sluice_partition_bytes_out",
                    "Record bytes sent to consumers.",
                    |p| p.bytes_out,
                ),
                (
                    "sluice_partition_messages_out",
                    "Records sent to consumers (the offsets the batches sent span).",
                    |p| p.messages_out,
                ),
            ];
            for (name, help, pick) in rows {
                let mut f = family(&mut e, name, help, Counter)?;
                for p in shards.iter().flat_map(|s| &s.partitions) {
                    let labels = vec![
                        label("topic", p.topic.as_str()),
                        label("partition", p.partition.to_string()),
                    ];
                    f.counter(&labels, pick(p) as f64)?;
                }
            }
        }

        // Requests.
        let mut apis: BTreeMap<i16, ApiCounters> = BTreeMap::new();
        let (mut acks_wait, mut fsync) = (Histogram::default(), Histogram::default());
        let (mut shrinks, mut expands, mut elections) = (0, 0, 0);
        let (mut wait_consumer, mut wait_replica) = (Histogram::default(), Histogram::default());
        let (mut throttled, mut throttle_ms) = ([0u64; 3], [0u64; 3]);
        for s in shards {
            for i in 0..3 {
                throttled[i] += s.counters.quota_throttled[i];
                throttle_ms[i] += s.counters.quota_throttle_ms[i];
            }
            for (key, c) in &s.apis {
                apis.entry(*key).or_default().add(c);
            }
            acks_wait.add(&s.counters.acks_all_wait);
            fsync.add(&s.counters.fsync);
            shrinks += s.counters.isr_shrinks;
            expands += s.counters.isr_expands;
            elections += s.counters.leader_elections;
            wait_consumer.add(&s.counters.fetch_wait_consumer);
            wait_replica.add(&s.counters.fetch_wait_replica);
        }
        encode_requests(&mut e, &apis)?;
        family(
            &mut e,
            "sluice_produce_acks_all_wait_seconds",
            "How long acks=all produces waited for the in-sync replicas.",
            Hist,
        )?
        .histogram(&no_labels(), &acks_wait)?;
        let mut f = family(
            &mut e,
            "sluice_fetch_wait_seconds",
            "How long fetches stayed parked waiting for data (Fetch's handle time includes it).",
            Hist,
        )?;
        f.histogram(&vec![label("from", "consumer")], &wait_consumer)?;
        f.histogram(&vec![label("from", "replica")], &wait_replica)?;
        family(
            &mut e,
            "sluice_log_fsync_seconds",
            "fdatasync of partition logs (flush policy and durable appends).",
            Hist,
        )?
        .histogram(&no_labels(), &fsync)?;

        let mut f = family(
            &mut e,
            "sluice_quota_throttle_seconds",
            "Time clients were throttled for going over a client quota, by quota type.",
            Counter,
        )?;
        for (name, ms) in super::QUOTA_NAMES.iter().zip(throttle_ms) {
            f.counter(&vec![label("quota", *name)], ms as f64 / 1000.0)?;
        }
        let mut f = family(
            &mut e,
            "sluice_quota_throttled_responses",
            "Responses that throttled a client for going over a client quota, by quota type.",
            Counter,
        )?;
        for (name, n) in super::QUOTA_NAMES.iter().zip(throttled) {
            f.counter(&vec![label("quota", *name)], n as f64)?;
        }

        // Replication.
        let c = &self.cluster;
        let gauges: [(&str, &str, f64); 4] = [
            ("sluice_under_replicated_partitions", "Partitions this broker leads whose ISR lacks a replica.", c.under_replicated as f64),
            ("sluice_under_min_isr_partitions", "Partitions this broker leads with fewer in-sync replicas than min.insync.replicas.", c.under_min_isr as f64),
            ("sluice_offline_partitions", "Partitions without a leader, in this broker's metadata.", c.offline as f64),
            ("sluice_leader_partitions", "Partitions this broker leads.", c.leaders as f64),
        ];
        for (name, help, v) in gauges {
            family(&mut e, name, help, Gauge)?.gauge(&no_labels(), v)?;
        }
        family(
            &mut e,
            "sluice_isr_shrinks",
            "ISR shrinks this broker proposed as leader.",
            Counter,
        )?
        .counter(&no_labels(), shrinks as f64)?;
        family(
            &mut e,
            "sluice_leader_elections",
            "Times this broker became a partition's leader on a new epoch.",
            Counter,
        )?
        .counter(&no_labels(), elections as f64)?;
        family(
            &mut e,
            "sluice_isr_expands",
            "ISR expansions this broker proposed as leader.",
            Counter,
        )?
        .counter(&no_labels(), expands as f64)?;
        family(
            &mut e,
            "sluice_controller_active",
            "1 on the active controller, else 0.",
            Gauge,
        )?
        .gauge(&no_labels(), if c.controller_active { 1.0 } else { 0.0 })?;
        if let Some((term, committed)) = c.controller {
            family(
                &mut e,
                "sluice_metadata_term",
                "The metadata quorum's Raft term, on voters.",
                Gauge,
            )?
            .gauge(&no_labels(), term as f64)?;
            family(
                &mut e,
                "sluice_metadata_committed_index",
                "Entries committed to the metadata log, on voters.",
                Gauge,
            )?
            .gauge(&no_labels(), committed as f64)?;
        }
        if let Some((entries, bytes)) = c.metadata_log {
            family(
                &mut e,
                "sluice_metadata_log_entries",
                "Entries of the metadata log kept since its last snapshot, on voters.",
                Gauge,
            )?
            .gauge(&no_labels(), entries as f64)?;
            family(
                &mut e,
                "sluice_metadata_log_bytes",
                "Bytes of the metadata log kept since its last snapshot, on voters.",
                Gauge,
            )?
            .gauge(&no_labels(), bytes as f64)?;
        }

        // Logs.
        let logs: [Column<super::PartitionSample, f64>; 6] = [
            (
                "sluice_log_size_bytes",
                "Bytes in the partition's segments.",
                |p| p.size_bytes as f64,
            ),
            ("sluice_log_segments", "Segments of the partition.", |p| {
                p.segments as f64
            }),
            (
                "sluice_log_start_offset",
                "The partition's log start offset.",
                |p| p.log_start as f64,
            ),
            (
                "sluice_log_end_offset",
                "The partition's log end offset.",
                |p| p.log_end as f64,
            ),
            (
                "sluice_log_high_watermark",
                "The partition's high watermark.",
                |p| p.high_watermark as f64,
            ),
            (
                "sluice_log_no_space",
                "1 while the partition's appends fail for lack of disk space (ENOSPC, EDQUOT), until one succeeds.",
                |p| f64::from(u8::from(p.no_space)),
            ),
        ];
        for (name, help, pick) in logs {
            let mut f = family(&mut e, name, help, Gauge)?;
            for p in shards.iter().flat_map(|s| &s.partitions) {
                let labels = vec![
                    label("topic", p.topic.as_str()),
                    label("partition", p.partition.to_string()),
                ];
                f.gauge(&labels, pick(p))?;
            }
        }

        family(
            &mut e,
            "sluice_storage_offline_partitions",
            "Partitions this broker holds offline for a storage failure: a log that failed to open (corrupt, an I/O error) or to sync.",
            Gauge,
        )?
        .gauge(
            &no_labels(),
            shards.iter().map(|s| s.storage_offline).sum::<usize>() as f64,
        )?;
        let mut f = family(
            &mut e,
            "sluice_log_append_failures",
            "Appends the partition's log refused with a storage error (answered KAFKA_STORAGE_ERROR).",
            Counter,
        )?;
        for p in shards.iter().flat_map(|s| &s.partitions) {
            let labels = vec![
                label("topic", p.topic.as_str()),
                label("partition", p.partition.to_string()),
            ];
            f.counter(&labels, p.append_failures as f64)?;
        }

        // Consumer groups.
        let mut f = family(
            &mut e,
            "sluice_consumer_group_members",
            "Members of each consumer group this broker coordinates, by state.",
            Gauge,
        )?;
        for g in shards.iter().flat_map(|s| &s.groups) {
            let labels = vec![
                label("group", g.group.as_str()),
                label("state", g.state.as_str()),
            ];
            f.gauge(&labels, g.members as f64)?;
        }
        let mut f = family(
            &mut e,
            "sluice_consumer_group_committed_offset",
            "Committed offset per group and partition.",
            Gauge,
        )?;
        for g in shards.iter().flat_map(|s| &s.groups) {
            for (topic, partition, offset) in &g.committed {
                let labels = vec![
                    label("group", g.group.as_str()),
                    label("topic", topic.as_str()),
                    label("partition", partition.to_string()),
                ];
                f.gauge(&labels, *offset as f64)?;
            }
        }
        let mut f = family(
            &mut e,
            "sluice_consumer_group_lag",
            "High watermark minus committed offset, where this broker leads the partition.",
            Gauge,
        )?;
        for (group, topic, partition, lag) in group_lags(shards) {
            let labels = vec![
                label("group", group),
                label("topic", topic),
                label("partition", partition.to_string()),
            ];
            f.gauge(&labels, lag as f64)?;
        }

        // Shards and connections.
        #[allow(clippy::type_complexity)]
        let per_shard: [(&str, &str, MetricType, fn(&ShardSnapshot) -> f64); 6] = [
            (
                "sluice_connections",
                "Open client connections.",
                Gauge,
                |s| s.connections as f64,
            ),
            (
                "sluice_shard_busy_seconds",
                "Time the shard's executor spent running tasks; its rate is the busy ratio.",
                Counter,
                |s| s.busy.as_secs_f64(),
            ),
            (
                "sluice_cross_shard_jobs",
                "Jobs this shard sent to other shards.",
                Counter,
                |s| s.cross_shard_jobs as f64,
            ),
            (
                "sluice_fetch_sendfile_bytes",
                "Fetch bytes sent with sendfile, from the page cache.",
                Counter,
                |s| s.sendfile_bytes as f64,
            ),
            (
                "sluice_fetch_copied_bytes",
                "Fetch bytes copied through user space.",
                Counter,
                |s| s.copied_bytes as f64,
            ),
            (
                "sluice_fetch_tls_bytes",
                "Fetch bytes read from the page cache and encrypted for TLS listeners.",
                Counter,
                |s| s.tls_bytes as f64,
            ),
        ];
        for (name, help, kind, pick) in per_shard {
            let mut f = family(&mut e, name, help, kind)?;
            for s in shards {
                let labels = vec![label("shard", s.shard.to_string())];
                if matches!(kind, Counter) {
                    f.counter(&labels, pick(s))?;
                } else {
                    f.gauge(&labels, pick(s))?;
                }
            }
        }

        encode_listeners(&mut e, shards)?;

        // The process.
        let p = &self.process;
        family(
            &mut e,
            "process_cpu_seconds",
            "User and system CPU time of the broker process.",
            Counter,
        )?
        .counter(&no_labels(), p.cpu_seconds)?;
        family(
            &mut e,
            "process_resident_memory_bytes",
            "Resident memory of the broker process.",
            Gauge,
        )?
        .gauge(&no_labels(), p.resident_bytes as f64)?;
        family(&mut e, "process_open_fds", "Open file descriptors.", Gauge)?
            .gauge(&no_labels(), p.open_fds as f64)?;
        family(
            &mut e,
            "process_start_time_seconds",
            "When the process started, in Unix seconds.",
            Gauge,
        )?
        .gauge(&no_labels(), p.start_time_seconds)?;
        Ok(())
    }
}

/// A latency histogram family: name, help, and the part it shows.
type LatencyPart = (&'static str, &'static str, fn(&ApiCounters) -> &Histogram);

/// A listener family: name, help, kind, and its value.
type ListenerColumn = (
    &'static str,
    &'static str,
    MetricType,
    fn(&ListenerSample) -> u64,
);

/// Requests per API (and version), their errors, and the three parts of
/// their latency.
fn encode_requests(
    e: &mut DescriptorEncoder,
    apis: &BTreeMap<i16, ApiCounters>,
) -> std::fmt::Result {
    use MetricType::{Counter, Histogram as Hist};
    let mut f = family(
        e,
        "sluice_requests",
        "Requests handled, by API and version.",
        Counter,
    )?;
    for (api, c) in apis {
        for (slot, n) in c.requests.iter().enumerate().filter(|(_, n)| **n > 0) {
            let labels = vec![
                label("api", api_name(*api)),
                label("version", version_label(slot)),
            ];
            f.counter(&labels, *n as f64)?;
        }
    }
    let mut f = family(
        e,
        "sluice_request_errors",
        "Requests that could not be answered and closed their connection.",
        Counter,
    )?;
    for (api, c) in apis.iter().filter(|(_, c)| c.errors > 0) {
        f.counter(&vec![label("api", api_name(*api))], c.errors as f64)?;
    }
    let parts: [LatencyPart; 3] = [
        (
            "sluice_request_queue_seconds",
            "Time from a request's last byte read to its handler starting (behind earlier requests of its connection).",
            |c| &c.queue,
        ),
        (
            "sluice_request_handle_seconds",
            "Time from a request's handler starting to its answer being ready (an acks=all produce's wait for replicas excluded).",
            |c| &c.handle,
        ),
        (
            "sluice_request_send_seconds",
            "Time from an answer being ready to its last byte written (behind earlier answers of its connection).",
            |c| &c.send,
        ),
    ];
    for (name, help, pick) in parts {
        let mut f = family(e, name, help, Hist)?;
        for (api, c) in apis {
            let h = pick(c);
            if h.count() > 0 {
                f.histogram(&vec![label("api", api_name(*api))], h)?;
            }
        }
    }
    Ok(())
}

/// Connections per listener, added up over the shards.
fn encode_listeners(e: &mut DescriptorEncoder, shards: &[ShardSnapshot]) -> std::fmt::Result {
    use MetricType::{Counter, Gauge};
    let mut listeners: BTreeMap<&str, ListenerSample> = BTreeMap::new();
    for l in shards.iter().flat_map(|s| &s.listeners) {
        let sum = listeners.entry(l.listener.as_str()).or_default();
        sum.accepted += l.accepted;
        sum.closed += l.closed;
        sum.refused += l.refused;
        sum.idle_closed += l.idle_closed;
    }
    let columns: [ListenerColumn; 5] = [
        (
            "sluice_listener_connections",
            "Open client connections, by listener.",
            Gauge,
            ListenerSample::open,
        ),
        (
            "sluice_listener_connections_accepted",
            "Client connections accepted, by listener.",
            Counter,
            |l| l.accepted,
        ),
        (
            "sluice_listener_connections_closed",
            "Client connections closed, by listener (by either side).",
            Counter,
            |l| l.closed,
        ),
        (
            "sluice_listener_connections_refused",
            "Connections closed at once because their address was at max.connections.per.ip.",
            Counter,
            |l| l.refused,
        ),
        (
            "sluice_listener_connections_idle_closed",
            "Connections closed after connections.max.idle.ms without a request or an answer.",
            Counter,
            |l| l.idle_closed,
        ),
    ];
    for (name, help, kind, pick) in columns {
        let mut f = family(e, name, help, kind)?;
        for (listener, l) in &listeners {
            let labels = vec![label("listener", *listener)];
            if matches!(kind, Counter) {
                f.counter(&labels, pick(l) as f64)?;
            } else {
                f.gauge(&labels, pick(l) as f64)?;
            }
        }
    }
    Ok(())
}
