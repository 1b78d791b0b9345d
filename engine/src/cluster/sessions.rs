//! Broker sessions as the active controller keeps them: who heartbeated
//! when, and who has been silent for a whole `broker.session.timeout.ms`.
//!
//! A controller that has just taken over knows nothing of the heartbeats
//! its predecessor saw, so every registered broker gets a full session
//! counted from the moment this controller *can act*: the moment its
//! image holds every entry committed before its term (see
//! [`Quorum::is_current`](super::quorum::Quorum::is_current)). A broker
//! whose heartbeats were going to the old, frozen controller then has a
//! whole session to find the new one (its heartbeat calls time out well
//! within it; see [`super::route`]). Only a broker silent to *this*
//! controller for a whole session is fenced.
//!
//! Time comes in as milliseconds on a monotonic clock, so the seeded
//! cluster simulation drives the same code as the broker.

use super::records::ClusterImage;
use std::collections::BTreeMap;

/// Heartbeats seen by the active controller in its current term.
#[derive(Clone, Debug)]
pub struct Sessions {
    timeout_ms: i64,
    /// Last heartbeat per broker in this term.
    last_ms: BTreeMap<i32, i64>,
    /// When this controller began acting in its term; `None` while it
    /// does not (not the leader, or its image not yet current).
    since_ms: Option<i64>,
}

impl Sessions {
    pub fn new(timeout_ms: i64) -> Sessions {
        assert!(timeout_ms > 0, "broker.session.timeout.ms must be positive");
        Sessions {
            timeout_ms,
            last_ms: BTreeMap::new(),
            since_ms: None,
        }
    }

    /// Whether this controller is acting (see [`Sessions::start`]).
    pub fn acting(&self) -> bool {
        self.since_ms.is_some()
    }

    /// This voter leads with a current image from `now_ms` on: every
    /// broker's session starts afresh. Heartbeats noted while it was not
    /// acting are forgotten, since a broker may have gone silent since.
    pub fn start(&mut self, now_ms: i64) {
        self.last_ms.clear();
        self.since_ms = Some(now_ms);
    }

    /// This voter no longer leads.
    pub fn stop(&mut self) {
        self.last_ms.clear();
        self.since_ms = None;
    }

    /// A heartbeat from `node` of its registered incarnation.
    pub fn heartbeat(&mut self, node: i32, now_ms: i64) {
        let last = self.last_ms.entry(node).or_insert(now_ms);
        *last = (*last).max(now_ms);
    }

    /// Unfenced brokers of `image` silent for longer than a session, in
    /// id order; none unless acting.
    pub fn expired(&self, image: &ClusterImage, now_ms: i64) -> Vec<i32> {
        let Some(since) = self.since_ms else {
            return Vec::new();
        };
        image
            .brokers
            .iter()
            .filter(|(_, b)| !b.fenced)
            .filter(|(id, _)| {
                let last = self.last_ms.get(id).copied().unwrap_or(since);
                now_ms - last > self.timeout_ms
            })
            .map(|(id, _)| *id)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::records::registrations;

    fn image(nodes: &[i32]) -> ClusterImage {
        let mut image = ClusterImage::default();
        image.apply(1, &registrations(nodes));
        image
    }

    #[test]
    fn a_new_controller_gives_every_broker_a_full_session() {
        let image = image(&[1, 2, 3]);
        let mut s = Sessions::new(9_000);
        assert!(s.expired(&image, 100_000).is_empty(), "not acting");
        // Heartbeats seen before it acted do not count.
        s.heartbeat(1, 0);
        s.start(50_000);
        assert!(s.expired(&image, 59_000).is_empty());
        s.heartbeat(2, 58_000);
        assert_eq!(s.expired(&image, 59_001), vec![1, 3]);
        s.stop();
        assert!(s.expired(&image, 90_000).is_empty());
    }
}
