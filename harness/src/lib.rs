//! sluice-bench: replays declarative YAML workloads against Kafka-compatible
//! brokers and reports latency the way a user experiences it.
//!
//! ```text
//! workload/   YAML → validated sweep points
//! client/     the harness's own Kafka client (producer, consumer, metadata)
//! measure/    clocks and HdrHistogram recorders owned per thread
//! run/        open-loop load generation, max-rate search, backlog mode
//! report/     run.json, .hgrm, interval logs, charts, report.html, compare
//! target/     the broker under test: --bootstrap or an embedded Sluice
//! ```

pub mod client;
pub mod measure;
pub mod report;
pub mod run;
pub mod target;
pub mod workload;
