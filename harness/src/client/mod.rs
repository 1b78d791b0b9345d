//! The harness's own Kafka client: connections, control requests, a producer
//! with Kafka's batching semantics and a fetch-loop consumer.

pub mod accumulator;
pub mod admin;
pub use sluice_protocol::compression;
pub mod conn;
pub mod consumer;
pub mod error;
pub mod partitioner;
pub mod producer;
pub mod wire;
