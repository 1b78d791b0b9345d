//! The Sluice broker: storage in Kafka's on-disk format, thread-per-core
//! shards on glommio, and the Kafka request handlers.
//!
//! Reading order for the produce path: `server::connection` (frames) →
//! `server::handlers::produce` (validation, forwarding) → `shard` (the
//! owner shard) → `shard::partition` → `storage::log` → `storage::segment`.

pub mod alloc;
pub mod broker;
pub mod cleaner;
pub mod cluster;
pub mod config;
pub mod embedded;
pub mod group;
pub mod idle;
pub mod metadata;
pub mod metrics;
pub mod quota;
pub mod replication;
pub mod security;
pub mod server;
pub mod shard;
#[cfg(test)]
mod sim_rng;
pub mod storage;
pub mod txn;
