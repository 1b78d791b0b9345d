//! Moving one member from what it owns to its target, as Kafka does:
//! revoke first, then assign.
//!
//! ```text
//!            target changed, something to give up
//!   Stable ───────────────────────────────────────▶ UnrevokedPartitions
//!     ▲  ▲                                                │ member reports it no
//!     │  │ all released                                   │ longer owns them
//!     │  └──── UnreleasedPartitions ◀── some still owned ─┤
//!     └───────────────────────────────────── none owned ──┘
//! ```
//!
//! While a member revokes it keeps its epoch: its commits still count,
//! and it gets nothing new. Once it has let go it takes the target's
//! epoch and every partition of its target that no other member owns
//! (owns = assigned or still being revoked); the rest come on a later
//! heartbeat, once their owners have let go. So a partition never has
//! two owners.
//!
//! Each partition a member owns remembers the epoch it was given at
//! (KIP-1251's assignment epoch), so a commit sent at an epoch the
//! member has since left still counts for the partitions it owned then.

use super::{difference, intersection, is_subset, union, Assignment};
use std::collections::BTreeMap;
use uuid::Uuid;

/// Where a member stands relative to its target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberState {
    /// At the target epoch, owning its whole target.
    Stable,
    /// Asked to give partitions up; waits for the member to report it.
    UnrevokedPartitions,
    /// At the target epoch, waiting for partitions others still own.
    UnreleasedPartitions,
}

impl MemberState {
    /// Kafka's numeric code, as stored.
    pub fn code(self) -> i8 {
        match self {
            MemberState::Stable => 0,
            MemberState::UnrevokedPartitions => 1,
            MemberState::UnreleasedPartitions => 2,
        }
    }
}

/// A member's assignment as the coordinator tracks it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberAssignment {
    pub epoch: i32,
    pub previous_epoch: i32,
    pub state: MemberState,
    /// What the member was told it owns.
    pub assigned: Assignment,
    /// What it was told to give up and has not yet reported gone.
    pub revoking: Assignment,
    /// The epoch each owned partition was given at; one missing (as
    /// after a coordinator move, which does not store them) counts as
    /// given at `epoch`.
    pub given_at: BTreeMap<(Uuid, i32), i32>,
}

impl MemberAssignment {
    /// A member that has just joined: owns nothing, epoch 0.
    pub fn joining() -> MemberAssignment {
        MemberAssignment {
            epoch: 0,
            previous_epoch: 0,
            state: MemberState::Stable,
            assigned: Assignment::new(),
            revoking: Assignment::new(),
            given_at: BTreeMap::new(),
        }
    }

    /// Whether a commit at `epoch` (older than the member's) may name
    /// partition `p` of topic `t`: the member owns it and has since
    /// `epoch` or before, so no other member can have owned it between.
    pub fn owned_since(&self, t: Uuid, p: i32, epoch: i32) -> bool {
        let owns = |a: &Assignment| a.get(&t).is_some_and(|ps| ps.contains(&p));
        if !owns(&self.assigned) && !owns(&self.revoking) {
            return false;
        }
        self.given_at.get(&(t, p)).copied().unwrap_or(self.epoch) <= epoch
    }

    /// What the member may still hold: assigned or being revoked.
    pub fn owned(&self) -> Assignment {
        union(&self.assigned, &self.revoking)
    }

    /// Moves towards `target` at `target_epoch`. `reported` is what the
    /// member says it owns (`None`: unchanged since its last heartbeat);
    /// `taken(t, p)` says whether another member still owns a partition.
    pub fn reconcile(
        &mut self,
        target_epoch: i32,
        target: &Assignment,
        reported: Option<&Assignment>,
        taken: impl Fn(Uuid, i32) -> bool,
    ) {
        if self.state == MemberState::UnrevokedPartitions {
            let released = reported.is_some_and(|r| intersection(r, &self.revoking).is_empty());
            if !released {
                return;
            }
            self.revoking.clear();
            self.state = MemberState::Stable;
        }
        if self.epoch == target_epoch && self.state == MemberState::Stable {
            return;
        }
        let keep = intersection(&self.assigned, target);
        let revoke = difference(&self.assigned, target);
        if !revoke.is_empty() {
            self.assigned = keep;
            self.revoking = revoke;
            self.state = MemberState::UnrevokedPartitions;
            return;
        }
        let wanted = difference(target, &self.assigned);
        let mut free = Assignment::new();
        let mut unreleased = false;
        for (t, ps) in &wanted {
            for &p in ps {
                if taken(*t, p) {
                    unreleased = true;
                } else {
                    free.entry(*t).or_default().insert(p);
                }
            }
        }
        self.assigned = union(&keep, &free);
        if self.epoch != target_epoch {
            self.previous_epoch = self.epoch;
            self.epoch = target_epoch;
        }
        let owned = self.owned();
        self.given_at
            .retain(|(t, p), _| owned.get(t).is_some_and(|ps| ps.contains(p)));
        for (t, ps) in &free {
            for &p in ps {
                self.given_at.insert((*t, p), self.epoch);
            }
        }
        self.state = match unreleased {
            true => MemberState::UnreleasedPartitions,
            false => MemberState::Stable,
        };
        assert!(is_subset(&self.assigned, target));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn t() -> Uuid {
        Uuid::from_bytes([1; 16])
    }

    fn a(ps: &[i32]) -> Assignment {
        super::super::normalized(Assignment::from([(
            t(),
            ps.iter().copied().collect::<BTreeSet<_>>(),
        )]))
    }

    #[test]
    fn revokes_before_it_assigns_and_keeps_its_epoch_meanwhile() {
        let mut m = MemberAssignment::joining();
        m.reconcile(1, &a(&[0, 1, 2]), Some(&a(&[])), |_, _| false);
        assert_eq!((m.epoch, m.state), (1, MemberState::Stable));
        assert_eq!(m.assigned, a(&[0, 1, 2]));
        m.reconcile(2, &a(&[0, 3]), None, |_, _| false);
        assert_eq!((m.epoch, m.state), (1, MemberState::UnrevokedPartitions));
        assert_eq!(
            (m.assigned.clone(), m.revoking.clone()),
            (a(&[0]), a(&[1, 2]))
        );
        // Still reporting 1: nothing moves.
        m.reconcile(2, &a(&[0, 3]), Some(&a(&[0, 1])), |_, _| false);
        assert_eq!(m.state, MemberState::UnrevokedPartitions);
        m.reconcile(2, &a(&[0, 3]), Some(&a(&[0])), |_, _| false);
        assert_eq!(
            (m.epoch, m.previous_epoch, m.state),
            (2, 1, MemberState::Stable)
        );
        assert_eq!(m.assigned, a(&[0, 3]));
    }

    #[test]
    fn waits_for_partitions_another_member_owns() {
        let mut m = MemberAssignment::joining();
        m.reconcile(3, &a(&[0, 1]), Some(&a(&[])), |_, p| p == 1);
        assert_eq!((m.epoch, m.state), (3, MemberState::UnreleasedPartitions));
        assert_eq!(m.assigned, a(&[0]));
        m.reconcile(3, &a(&[0, 1]), None, |_, _| false);
        assert_eq!((m.epoch, m.state), (3, MemberState::Stable));
        assert_eq!(m.assigned, a(&[0, 1]));
    }
}
