//! Client quotas (KIP-13, KIP-124, KIP-219): produce and fetch byte
//! rates and request-time percentages per user and client id, stored in
//! the metadata log (AlterClientQuotas) and enforced on every shard.
//!
//! A request that takes a client over its quota is still answered, with
//! `throttle_time_ms` set to the delay that brings the client's rate back
//! to its quota; then the connection reads nothing more from the client
//! for that long (the connection's reader sleeps on a glommio timer: only
//! that connection waits, and what it holds is what it held already).
//! Clients since KIP-219 also hold back on their own for that time.
//!
//! Rates are counted per shard, each shard holding a client to its whole
//! quota (docs/ARCHITECTURE.md, "Client quotas", says why). A shard keeps
//! one [`rate::SampledRate`] per quota type and counted entity (Kafka's
//! sensors), dropped once idle for longer than the window spans: by then
//! all of its samples are obsolete, so dropping it changes no answer and
//! the memory follows the clients active in the last 11 s.

pub mod entity;
pub mod rate;

use entity::{ClientQuotas, QuotaKey, SensorKey};
use rate::SampledRate;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// A request-time throttle is at most one sample window (Kafka's
/// ClientRequestQuotaManager bounds it so): the request rate is measured
/// over handling time the broker already spent, and a longer mute would
/// not give it back.
pub const REQUEST_THROTTLE_MAX_MS: u64 = rate::SAMPLE_MS;

/// Rates recorded between sweeps for idle ones.
const SWEEP_EVERY: u32 = 1024;

/// Who sent a request, as quotas see it: the principal's name (Kafka's
/// user entity, `ANONYMOUS` without authentication) and the client id.
#[derive(Clone, Copy, Debug)]
pub struct Requester<'a> {
    pub user: &'a str,
    pub client_id: &'a str,
}

/// One shard's quota accounting.
pub struct QuotaManager {
    start: Instant,
    rates: RefCell<HashMap<(QuotaKey, SensorKey), SampledRate>>,
    since_sweep: Cell<u32>,
}

thread_local! {
    static QUOTAS: RefCell<Option<Rc<QuotaManager>>> = const { RefCell::new(None) };
}

/// Installs this shard's quota manager; call once per shard at start.
pub fn install(q: Rc<QuotaManager>) {
    QUOTAS.with(|slot| *slot.borrow_mut() = Some(q));
}

/// This shard's quota manager; None before [`install`].
pub fn manager() -> Option<Rc<QuotaManager>> {
    QUOTAS.with(|slot| slot.borrow().clone())
}

impl Default for QuotaManager {
    fn default() -> QuotaManager {
        QuotaManager::new()
    }
}

impl QuotaManager {
    pub fn new() -> QuotaManager {
        QuotaManager {
            start: Instant::now(),
            rates: RefCell::new(HashMap::new()),
            since_sweep: Cell::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Records `value` (bytes, or percent-seconds of handling time)
    /// against the quota of type `key` that applies to `who`, and returns
    /// how long the client is to be throttled for (zero without a quota
    /// or under it), as Kafka's `recordAndGetThrottleTimeMs`.
    pub fn record(
        &self,
        quotas: &ClientQuotas,
        who: Requester<'_>,
        key: QuotaKey,
        value: f64,
    ) -> Duration {
        let Some((bound, sensor)) = quotas.lookup(who.user, who.client_id, key) else {
            return Duration::ZERO;
        };
        let now = self.now_ms();
        self.sweep(now);
        let mut rates = self.rates.borrow_mut();
        let r = rates
            .entry((key, sensor))
            .or_insert_with(|| SampledRate::new(now));
        r.record(now, value);
        let measured = r.measure(now);
        let mut ms = rate::throttle_ms(measured, bound, r.window_ms(now));
        if key == QuotaKey::RequestPercentage {
            ms = ms.min(REQUEST_THROTTLE_MAX_MS);
        }
        Duration::from_millis(ms)
    }

    /// Takes back a value [`record`](Self::record) counted: a throttled
    /// fetch is answered empty, so its bytes were never sent.
    pub fn unrecord(&self, quotas: &ClientQuotas, who: Requester<'_>, key: QuotaKey, value: f64) {
        let Some((_, sensor)) = quotas.lookup(who.user, who.client_id, key) else {
            return;
        };
        let now = self.now_ms();
        if let Some(r) = self.rates.borrow_mut().get_mut(&(key, sensor)) {
            r.record(now, -value);
        }
    }

    /// The largest fetch response worth sending to `who`: what its
    /// consumer quota lets through in the windows a rate spans less one
    /// (Kafka's `getMaxValueInQuotaWindow`), so that one response does
    /// not overshoot the quota for minutes. None without a quota.
    pub fn fetch_bytes_max(&self, quotas: &ClientQuotas, who: Requester<'_>) -> Option<usize> {
        let (bound, _) = quotas.lookup(who.user, who.client_id, QuotaKey::ConsumerByteRate)?;
        let window_s = ((rate::SAMPLES - 1) as u64 * rate::SAMPLE_MS) as f64 / 1000.0;
        Some((bound * window_s).clamp(1.0, usize::MAX as f64) as usize)
    }

    /// Rates counted now (for tests and the memory bound).
    pub fn rates(&self) -> usize {
        self.rates.borrow().len()
    }

    /// Every [`SWEEP_EVERY`] records, drops the rates idle for longer than
    /// the window spans.
    fn sweep(&self, now: u64) {
        let n = self.since_sweep.get() + 1;
        if n < SWEEP_EVERY {
            self.since_sweep.set(n);
            return;
        }
        self.since_sweep.set(0);
        self.rates
            .borrow_mut()
            .retain(|_, r| now.saturating_sub(r.last_ms()) < rate::EXPIRY_MS);
    }
}

#[cfg(test)]
mod tests {
    use super::entity::{Name, QuotaEntity, QuotaMap, QuotaValue};
    use super::*;

    fn producer_quota(client_id: &str, bound: f64) -> ClientQuotas {
        let mut map = QuotaMap::new();
        let entity = QuotaEntity {
            user: None,
            client_id: Some(Name::Named(client_id.into())),
        };
        map.entry(entity)
            .or_default()
            .insert(QuotaKey::ProducerByteRate, QuotaValue(bound));
        ClientQuotas::new(map)
    }

    #[test]
    fn over_the_quota_is_throttled_and_others_are_not() {
        let q = producer_quota("greedy", 1000.0);
        let m = QuotaManager::new();
        let greedy = Requester {
            user: "ANONYMOUS",
            client_id: "greedy",
        };
        let other = Requester {
            user: "ANONYMOUS",
            client_id: "other",
        };
        // 10,000 bytes are the quota's 10 s: not over.
        assert_eq!(
            m.record(&q, greedy, QuotaKey::ProducerByteRate, 10_000.0),
            Duration::ZERO
        );
        // 30,000 more: 4,000/s measured over 10 s, 30 s to come back.
        let t = m.record(&q, greedy, QuotaKey::ProducerByteRate, 30_000.0);
        assert!((29_000..=30_000).contains(&(t.as_millis() as u64)), "{t:?}");
        assert_eq!(
            m.record(&q, other, QuotaKey::ProducerByteRate, 1e9),
            Duration::ZERO
        );
        // Without a quota nothing is counted.
        assert_eq!(m.rates(), 1);
    }

    #[test]
    fn a_fetch_is_capped_to_the_quotas_window() {
        let m = QuotaManager::new();
        let mut map = QuotaMap::new();
        map.entry(QuotaEntity {
            user: Some(Name::Default),
            client_id: None,
        })
        .or_default()
        .insert(QuotaKey::ConsumerByteRate, QuotaValue(1000.0));
        let q = ClientQuotas::new(map);
        let who = Requester {
            user: "bob",
            client_id: "",
        };
        assert_eq!(m.fetch_bytes_max(&q, who), Some(10_000));
        assert_eq!(m.fetch_bytes_max(&ClientQuotas::default(), who), None);
    }
}
