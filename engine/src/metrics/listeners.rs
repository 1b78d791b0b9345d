//! Connections per listener: accepted and closed, counted by the shard
//! that serves them.
//!
//! Each of a shard's accept loops takes its listener's [`ListenerCounters`]
//! once when it starts ([`listener`]); a connection then counts itself
//! through that handle (two `Cell` increments over its life), so the name
//! is looked up once per loop, never per connection. Open connections are
//! accepted minus closed, worked out at scrape time.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

/// One listener's connection counts on one shard.
#[derive(Debug, Default)]
pub struct ListenerCounters {
    accepted: Cell<u64>,
    closed: Cell<u64>,
    refused: Cell<u64>,
    idle_closed: Cell<u64>,
}

impl ListenerCounters {
    pub fn accepted(&self) {
        self.accepted.set(self.accepted.get() + 1);
    }

    pub fn closed(&self) {
        self.closed.set(self.closed.get() + 1);
        assert!(self.closed.get() <= self.accepted.get());
    }

    /// A connection closed at once: its address was at
    /// `max.connections.per.ip` (not counted as accepted).
    pub fn refused(&self) {
        self.refused.set(self.refused.get() + 1);
    }

    /// An accepted connection closed for `connections.max.idle.ms` (it
    /// counts as closed too, when its task ends).
    pub fn idle_closed(&self) {
        self.idle_closed.set(self.idle_closed.get() + 1);
    }
}

/// A listener's counts at scrape time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListenerSample {
    pub listener: String,
    pub accepted: u64,
    pub closed: u64,
    pub refused: u64,
    pub idle_closed: u64,
}

impl ListenerSample {
    /// Connections accepted and not yet closed.
    pub fn open(&self) -> u64 {
        self.accepted - self.closed
    }
}

thread_local! {
    /// This shard's listeners, in the order their loops started.
    static LISTENERS: RefCell<Vec<(String, Rc<ListenerCounters>)>> =
        const { RefCell::new(Vec::new()) };
}

/// The counters of listener `name` on this shard (the same ones if its
/// accept loop starts again).
pub fn listener(name: &str) -> Rc<ListenerCounters> {
    LISTENERS.with(|l| {
        let mut l = l.borrow_mut();
        if let Some((_, c)) = l.iter().find(|(n, _)| n == name) {
            return Rc::clone(c);
        }
        let c = Rc::new(ListenerCounters::default());
        l.push((name.to_string(), Rc::clone(&c)));
        c
    })
}

/// This shard's listeners' counts.
pub fn samples() -> Vec<ListenerSample> {
    LISTENERS.with(|l| {
        l.borrow()
            .iter()
            .map(|(name, c)| ListenerSample {
                listener: name.clone(),
                accepted: c.accepted.get(),
                closed: c.closed.get(),
                refused: c.refused.get(),
                idle_closed: c.idle_closed.get(),
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_keeps_its_counters_and_open_is_accepted_minus_closed() {
        let a = listener("PLAINTEXT");
        a.accepted();
        a.accepted();
        a.closed();
        let again = listener("PLAINTEXT");
        again.accepted();
        listener("SSL").accepted();
        let s = samples();
        assert_eq!(s.len(), 2);
        assert_eq!(
            (s[0].listener.as_str(), s[0].accepted, s[0].open()),
            ("PLAINTEXT", 3, 2)
        );
        assert_eq!((s[1].listener.as_str(), s[1].open()), ("SSL", 1));
    }
}
