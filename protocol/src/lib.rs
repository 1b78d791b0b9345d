//! Sluice's Kafka wire codec, free of I/O.
//!
//! The hot path is hand-written here: the record batch v2 header
//! ([`record_batch`]), the length-prefixed frame ([`frame`]), the request
//! header ([`header`]) and the fetch response encoder ([`fetch_response`]),
//! which interleaves encoded bytes with file regions so the broker can send
//! record bytes with `sendfile`. So are the versions Kafka 4 serves past
//! what the codec below knows: OffsetCommit and OffsetFetch v10
//! ([`offset_commit`], [`offset_fetch`]), DeleteGroups v3
//! ([`delete_groups`]), DescribeLogDirs v5 ([`describe_log_dirs`]) and
//! the ApiVersions v5 request ([`api_versions_request`]). Control-plane
//! messages (Metadata, CreateTopics, ...) use the `kafka-protocol` crate,
//! re-exported as
//! [`messages`]; see `docs/ARCHITECTURE.md` for why the line sits there.

pub mod api_versions;
pub mod api_versions_request;
pub mod compression;
pub mod delete_groups;
pub mod describe_log_dirs;
pub mod error_code;
pub mod fetch_response;
pub mod frame;
pub mod header;
pub mod offset_commit;
pub mod offset_fetch;
pub mod primitives;
pub mod record_batch;
pub mod throttle;
pub mod types;

pub use error_code::ErrorCode;
pub use kafka_protocol as messages;
pub use types::{LeaderEpoch, Offset};
