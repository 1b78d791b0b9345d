//! Which voter a broker asks: the active controller as the broker last
//! heard of it, else the voters in turn.
//!
//! A pure piece of the broker's side of the cluster (no I/O, no clock),
//! so that the seeded cluster simulation routes heartbeats and ISR
//! proposals exactly as brokers do.

/// What came of one call to a voter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The voter answered as the active controller, or served a read.
    Answered,
    /// The voter is not the active controller; it names the one it
    /// knows of, if any.
    NotController(Option<u64>),
    /// No answer: refused, closed, or timed out.
    Unreachable,
}

/// A broker's idea of where the active controller is.
#[derive(Clone, Debug)]
pub struct Route {
    voters: Vec<u64>,
    /// The active controller last heard of.
    hint: Option<u64>,
    /// Next voter to try when there is no hint.
    next: usize,
    /// The voter whose last call went unanswered: tried last.
    failed: Option<u64>,
    /// A voter that said it is not the active controller: the broker's
    /// own voter may not have heard of a new leader yet.
    refuted: Option<u64>,
}

impl Route {
    pub fn new(voters: Vec<u64>) -> Route {
        assert!(!voters.is_empty(), "a cluster has a voter");
        Route {
            voters,
            hint: None,
            next: 0,
            failed: None,
            refuted: None,
        }
    }

    /// The active controller last heard of.
    pub fn hint(&self) -> Option<u64> {
        self.hint
    }

    /// The voter to send the next call to: `leader` (what this broker's
    /// own voter knows of the Raft leader, if it is a voter), else the
    /// one last heard of, else the voters in turn, one that just failed
    /// last. A voter that went silent (frozen, cut off) is so never asked
    /// twice in a row while another may answer.
    pub fn target(&mut self, leader: Option<u64>) -> u64 {
        let doubtful = |l: &u64| Some(*l) == self.failed || Some(*l) == self.refuted;
        if let Some(id) = leader.filter(|l| !doubtful(l)).or(self.hint) {
            return id;
        }
        for _ in 0..self.voters.len() {
            let id = self.voters[self.next % self.voters.len()];
            self.next += 1;
            if Some(id) != self.failed || self.voters.len() == 1 {
                return id;
            }
        }
        self.voters[0]
    }

    /// Learns from a call to `target`; `change` tells a change (which
    /// only the active controller answers) from a read any voter serves.
    pub fn learn(&mut self, target: u64, outcome: Outcome, change: bool) {
        match outcome {
            Outcome::NotController(leader) => {
                self.hint = leader.filter(|l| *l != target);
                self.failed = None;
                self.refuted = Some(target);
            }
            Outcome::Unreachable => {
                self.hint = None;
                self.failed = Some(target);
            }
            Outcome::Answered if change => {
                self.hint = Some(target);
                self.failed = None;
                self.refuted = None;
            }
            Outcome::Answered => self.failed = None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_silent_voter_is_not_asked_again_while_another_may_answer() {
        let mut r = Route::new(vec![1, 2, 3]);
        // The active controller (3) freezes.
        assert_eq!(r.target(None), 1);
        r.learn(1, Outcome::NotController(Some(3)), true);
        assert_eq!(r.target(None), 3);
        r.learn(3, Outcome::Unreachable, true);
        // Neither the hint nor this broker's own stale voter sends it
        // back to 3 at once.
        assert_ne!(r.target(Some(3)), 3);
        let t = r.target(None);
        assert_ne!(t, 3);
        r.learn(t, Outcome::NotController(Some(2)), true);
        assert_eq!(r.target(None), 2);
        r.learn(2, Outcome::Answered, true);
        assert_eq!(r.target(None), 2);
        // A voter's own Raft view wins over an older hint, unless that
        // voter said it does not lead.
        assert_eq!(r.target(Some(1)), 1);
        r.learn(1, Outcome::NotController(Some(2)), true);
        assert_eq!(r.target(Some(1)), 2);
    }
}
