//! The harness's own Kafka client: connections, control requests, a producer
//! with Kafka's batching semantics, a fetch-loop consumer, and consumer-group
//! membership for it.

pub mod accumulator;
pub mod admin;
pub mod assignor;
pub mod batch;
pub use sluice_protocol::compression;
pub mod conn;
pub mod consumer;
pub mod endpoint;
pub mod error;
pub mod group;
pub mod group_consumer;
pub mod partitioner;
pub mod producer;
pub mod security;
pub mod txn;
pub mod wire;
