//! The Sluice broker: storage in Kafka's on-disk format, thread-per-core
//! shards on glommio, and the Kafka request handlers.

pub mod config;
pub mod storage;
