//! Per-API request counts and latencies, kept in fixed slots.
//!
//! Every request passes here twice: once when its handler returns (count,
//! queue and handle time) and once when its answer has been written (send
//! time). Both index a boxed array by API key, and the count by version,
//! so recording a request is a few array increments on its shard's own
//! cells: no map, no string, no lock. A scrape copies only the APIs that
//! were seen.
//!
//! The three times split a request's life as Kafka's
//! `RequestQueueTimeMs`, `LocalTimeMs` and `ResponseSendTimeMs` do:
//!
//! ```text
//! last byte read ──queue──▶ handler starts ──handle──▶ answer ready ──send──▶ last byte written
//! ```
//!
//! Queue time is what a request spends behind the earlier requests of
//! its connection (a connection handles its requests in order, at most
//! 16 with answers unwritten). Send time includes the wait behind earlier
//! answers of the connection and the socket's back-pressure; an acks=all
//! Produce's answer is ready once the in-sync replicas have its batches
//! (that wait is `sluice_produce_acks_all_wait_seconds`).

use super::Histogram;
use std::time::Duration;

/// API keys counted: Kafka 4.1's run to 92.
pub const API_KEY_SLOTS: usize = 128;

/// Version slots per API; the last counts versions outside
/// `0..VERSION_OTHER` (a client asking for one no broker has).
/// The highest version Sluice answers is Fetch v18.
pub const VERSION_SLOTS: usize = 32;

/// The slot of versions that have none of their own.
pub const VERSION_OTHER: usize = VERSION_SLOTS - 1;

/// One API's counts on one shard.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ApiCounters {
    /// Requests handled, by version slot.
    pub requests: [u64; VERSION_SLOTS],
    /// Requests that could not be answered and closed their connection.
    pub errors: u64,
    /// Last byte read to handler start.
    pub queue: Histogram,
    /// Handler start to answer ready.
    pub handle: Histogram,
    /// Answer ready to its last byte written.
    pub send: Histogram,
}

impl ApiCounters {
    /// Whether anything was counted.
    pub fn seen(&self) -> bool {
        self.requests.iter().any(|n| *n > 0) || self.send.count() > 0
    }

    pub fn add(&mut self, other: &ApiCounters) {
        for (a, b) in self.requests.iter_mut().zip(other.requests) {
            *a += b;
        }
        self.errors += other.errors;
        self.queue.add(&other.queue);
        self.handle.add(&other.handle);
        self.send.add(&other.send);
    }
}

/// The version slot of `version`.
pub fn version_slot(version: i16) -> usize {
    match usize::try_from(version) {
        Ok(v) if v < VERSION_OTHER => v,
        _ => VERSION_OTHER,
    }
}

/// A version slot's label: the version, or `other`.
pub fn version_label(slot: usize) -> String {
    assert!(slot < VERSION_SLOTS);
    if slot == VERSION_OTHER {
        "other".to_string()
    } else {
        slot.to_string()
    }
}

/// One shard's request counters, by API key.
#[derive(Clone, Debug, PartialEq)]
pub struct RequestCounters {
    apis: Box<[ApiCounters]>,
}

impl Default for RequestCounters {
    fn default() -> RequestCounters {
        RequestCounters {
            apis: vec![ApiCounters::default(); API_KEY_SLOTS].into_boxed_slice(),
        }
    }
}

impl RequestCounters {
    /// The slot of `api`, a key the request header parser accepted (all
    /// fit: see the test below); any other is not counted.
    fn slot(&mut self, api: i16) -> Option<&mut ApiCounters> {
        let i = usize::try_from(api).ok()?;
        debug_assert!(i < API_KEY_SLOTS, "API key {api} has no slot");
        self.apis.get_mut(i)
    }

    /// Counts a handled request (`ok`: answered, not a closed connection).
    pub fn handled(&mut self, api: i16, version: i16, queue: Duration, handle: Duration, ok: bool) {
        if let Some(c) = self.slot(api) {
            c.requests[version_slot(version)] += 1;
            c.errors += u64::from(!ok);
            c.queue.observe(queue);
            c.handle.observe(handle);
        }
    }

    /// Counts an answer written.
    pub fn sent(&mut self, api: i16, send: Duration) {
        if let Some(c) = self.slot(api) {
            c.send.observe(send);
        }
    }

    /// The APIs with anything counted, by key.
    pub fn seen(&self) -> Vec<(i16, ApiCounters)> {
        self.apis
            .iter()
            .enumerate()
            .filter(|(_, c)| c.seen())
            .map(|(key, c)| (key as i16, c.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::ApiKey;

    #[test]
    fn every_api_key_and_answered_version_has_a_slot() {
        for key in ApiKey::iter() {
            assert!(
                (key as i16) >= 0 && (key as usize) < API_KEY_SLOTS,
                "{key:?}"
            );
        }
        for r in sluice_protocol::api_versions::SUPPORTED {
            assert!((r.max as usize) < VERSION_OTHER, "{r:?}");
        }
    }

    #[test]
    fn requests_land_in_their_api_and_version_slots() {
        let mut c = RequestCounters::default();
        let ms = Duration::from_millis;
        c.handled(0, 9, ms(1), ms(2), true);
        c.handled(0, 9, ms(1), ms(2), false);
        c.handled(0, 400, ms(1), ms(2), true);
        c.handled(0, -1, ms(1), ms(2), true);
        c.sent(0, ms(3));
        c.handled(1, 12, ms(0), ms(70), true);
        let seen = c.seen();
        assert_eq!(seen.len(), 2);
        let (key, produce) = &seen[0];
        assert_eq!(*key, 0);
        assert_eq!(produce.requests[9], 2);
        assert_eq!(produce.requests[VERSION_OTHER], 2, "400 and -1");
        assert_eq!(produce.errors, 1);
        assert_eq!(produce.queue.count(), 4);
        assert_eq!(produce.handle.count(), 4);
        assert_eq!(produce.send.count(), 1);
        assert_eq!(seen[1].0, 1);
        assert_eq!(seen[1].1.handle.sum_nanos, 70_000_000);
        assert_eq!(version_label(9), "9");
        assert_eq!(version_label(VERSION_OTHER), "other");
    }
}
