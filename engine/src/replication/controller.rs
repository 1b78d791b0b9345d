//! The controller's side of one partition: who leads, in which epoch,
//! and the committed ISR. In Sluice these decisions are records in the
//! replicated metadata log; here they are pure functions from the old
//! [`PartitionState`] to the new one, so the rules can be tested and a
//! simulation can play controller.
//!
//! Two counters version the state. The *leader epoch* changes with the
//! leader and fences the old one's requests. The *partition epoch*
//! changes with every update, and an AlterPartition proposal must name
//! the one it was built on, so a leader cannot overwrite an ISR the
//! controller changed behind its back (Kafka's KIP-497).

use super::NodeId;
use sluice_protocol::LeaderEpoch;

/// The partition's replication state as the controller commits it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionState {
    /// `None` while no eligible replica is alive (the partition is offline).
    pub leader: Option<NodeId>,
    pub leader_epoch: LeaderEpoch,
    pub partition_epoch: i32,
    /// Committed in-sync replicas, in `replicas` order.
    pub isr: Vec<NodeId>,
    /// Every assigned replica, in preference order. While a reassignment
    /// runs: its target replicas, then those it removes.
    pub replicas: Vec<NodeId>,
    /// Replicas a running reassignment adds (KIP-455).
    pub adding: Vec<NodeId>,
    /// Replicas a running reassignment removes once every added one is
    /// in sync.
    pub removing: Vec<NodeId>,
}

/// A leader's request to change the ISR (Kafka's AlterPartition).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IsrProposal {
    pub leader: NodeId,
    pub leader_epoch: LeaderEpoch,
    /// The partition epoch the proposal was built on.
    pub partition_epoch: i32,
    pub isr: Vec<NodeId>,
}

/// Why a requested leader election was not held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElectionRefusal {
    /// The partition already has the leader the election would give it.
    NotNeeded,
    /// No replica the election may choose is live (and in sync).
    NotAvailable,
}

/// Why a reassignment cannot start or be cancelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReassignRefusal {
    /// A cancellation, with no reassignment running.
    NoReassignment,
    /// No replica that is in sync would be left in the assignment.
    NoInSyncReplica,
}

/// Why the controller refused an ISR proposal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlterRefusal {
    /// Proposed by a leader that has been replaced.
    FencedLeaderEpoch,
    /// Built on an ISR that has changed since (INVALID_UPDATE_VERSION).
    StalePartitionEpoch,
    /// Adds a replica the controller thinks is down, or drops the leader
    /// (INELIGIBLE_REPLICA / INVALID_REQUEST).
    IneligibleReplica,
}

impl PartitionState {
    /// A new partition led by its first replica, all replicas in sync.
    pub fn new(replicas: Vec<NodeId>) -> PartitionState {
        assert!(!replicas.is_empty(), "a partition needs a replica");
        PartitionState {
            leader: replicas.first().copied(),
            leader_epoch: LeaderEpoch(0),
            partition_epoch: 0,
            isr: replicas.clone(),
            replicas,
            adding: Vec::new(),
            removing: Vec::new(),
        }
    }

    /// Elects a leader among live ISR members, in preference order, or
    /// with `unclean` among any live replica, which then forms the ISR
    /// alone. Bumps both epochs. `None` when nobody is eligible; the
    /// state is then left for the caller to mark offline.
    pub fn elect(&self, live: &[NodeId], unclean: bool) -> Option<PartitionState> {
        let in_isr = |n: &&NodeId| self.isr.contains(n) && live.contains(n);
        let clean = self.replicas.iter().find(in_isr).copied();
        // Unclean: a live replica that held the log before a running
        // reassignment first, an added one (maybe still empty) last.
        let mut added_last = self
            .original()
            .into_iter()
            .chain(self.adding.iter().copied());
        let leader = match clean {
            Some(n) => n,
            None if unclean => added_last.find(|n| live.contains(n))?,
            None => return None,
        };
        let isr = if clean.is_some() {
            self.isr
                .iter()
                .copied()
                .filter(|n| live.contains(n))
                .collect()
        } else {
            vec![leader]
        };
        Some(PartitionState {
            leader: Some(leader),
            leader_epoch: LeaderEpoch(self.leader_epoch.0 + 1),
            partition_epoch: self.partition_epoch + 1,
            isr,
            ..self.clone()
        })
    }

    /// The ISR without `node`, unless it is not in it or is its last
    /// member (kept so a clean election can wait for it).
    fn without_in_sync(&self, node: NodeId) -> Option<Self> {
        if !self.isr.contains(&node) || self.isr.len() == 1 {
            return None;
        }
        let mut next = self.clone();
        next.isr.retain(|n| *n != node);
        next.partition_epoch += 1;
        Some(next)
    }

    /// What the controller commits when `node` is declared down: a new
    /// leader if it led, or the ISR without it. The last ISR member stays
    /// in the ISR so a clean election can wait for it to come back.
    pub fn on_broker_down(&self, node: NodeId, live: &[NodeId], unclean: bool) -> Option<Self> {
        if self.leader == Some(node) {
            return Some(self.elect(live, unclean).unwrap_or_else(|| self.offline()));
        }
        self.without_in_sync(node)
    }

    /// What the controller commits when `node` reports that its replica
    /// failed (a write or sync with EIO, or a log that would not open),
    /// as Kafka treats a replica on a failed log directory: a new leader
    /// from the rest of the ISR if it led, else the ISR without it. Unlike
    /// a broker going down, a failed leader with nobody eligible to take
    /// over keeps leading (its partition answers KAFKA_STORAGE_ERROR) and
    /// stays in the ISR: the records acknowledged on it are there alone,
    /// and it must not be rebuilt from a replica that lacks them.
    pub fn on_replica_failed(&self, node: NodeId, live: &[NodeId], unclean: bool) -> Option<Self> {
        let others: Vec<NodeId> = live.iter().copied().filter(|n| *n != node).collect();
        if self.leader == Some(node) {
            return self.elect(&others, unclean);
        }
        self.without_in_sync(node)
    }

    /// What the controller commits when `node` comes back: a leader for
    /// an offline partition, if one is now eligible.
    pub fn on_broker_up(&self, live: &[NodeId], unclean: bool) -> Option<PartitionState> {
        if self.leader.is_some() {
            return None;
        }
        self.elect(live, unclean)
    }

    /// A preferred-leader election: the first replica leads again, if it
    /// is live and in sync. Bumps both epochs.
    pub fn elect_preferred(&self, live: &[NodeId]) -> Result<PartitionState, ElectionRefusal> {
        let preferred = self.replicas[0];
        if self.leader == Some(preferred) {
            return Err(ElectionRefusal::NotNeeded);
        }
        if !live.contains(&preferred) || !self.isr.contains(&preferred) {
            return Err(ElectionRefusal::NotAvailable);
        }
        Ok(PartitionState {
            leader: Some(preferred),
            leader_epoch: LeaderEpoch(self.leader_epoch.0 + 1),
            partition_epoch: self.partition_epoch + 1,
            ..self.clone()
        })
    }

    /// An unclean election, asked for by an operator: an offline
    /// partition gets any live replica as leader.
    pub fn elect_unclean(&self, live: &[NodeId]) -> Result<PartitionState, ElectionRefusal> {
        if self.leader.is_some() {
            return Err(ElectionRefusal::NotNeeded);
        }
        self.elect(live, true).ok_or(ElectionRefusal::NotAvailable)
    }

    /// Checks and applies a leader's ISR proposal.
    pub fn alter(&self, p: &IsrProposal, live: &[NodeId]) -> Result<PartitionState, AlterRefusal> {
        if self.leader != Some(p.leader) || self.leader_epoch != p.leader_epoch {
            return Err(AlterRefusal::FencedLeaderEpoch);
        }
        if self.partition_epoch != p.partition_epoch {
            return Err(AlterRefusal::StalePartitionEpoch);
        }
        let added_down = p
            .isr
            .iter()
            .any(|n| !self.isr.contains(n) && !live.contains(n));
        let unknown = p.isr.iter().any(|n| !self.replicas.contains(n));
        if added_down || unknown || !p.isr.contains(&p.leader) {
            return Err(AlterRefusal::IneligibleReplica);
        }
        let mut next = self.clone();
        next.isr = self
            .replicas
            .iter()
            .copied()
            .filter(|n| p.isr.contains(n))
            .collect();
        next.partition_epoch += 1;
        Ok(next)
    }

    /// Whether a reassignment is running.
    pub fn reassigning(&self) -> bool {
        !self.adding.is_empty() || !self.removing.is_empty()
    }

    /// The replicas from before the running reassignment (all of them
    /// when none runs).
    pub fn original(&self) -> Vec<NodeId> {
        self.replicas_except(&self.adding)
    }

    /// The replicas the running reassignment ends with (all of them when
    /// none runs).
    pub fn target(&self) -> Vec<NodeId> {
        self.replicas_except(&self.removing)
    }

    fn replicas_except(&self, left_out: &[NodeId]) -> Vec<NodeId> {
        self.replicas
            .iter()
            .filter(|n| !left_out.contains(n))
            .copied()
            .collect()
    }

    /// Starts moving the partition to `target` (distinct brokers, checked
    /// by the caller), as Kafka's KIP-455: the replicas become `target`
    /// followed by the original ones it leaves out. New replicas follow
    /// the leader, and once every target replica is in the ISR the ones
    /// left out are removed ([`Self::complete_reassignment`]), at once
    /// when they already are. A running reassignment is replaced; the
    /// replicas it was adding that `target` leaves out go at once. A
    /// target equal to the original replicas cancels it; one equal to the
    /// running target changes nothing.
    pub fn reassign(
        &self,
        target: &[NodeId],
        live: &[NodeId],
    ) -> Result<PartitionState, ReassignRefusal> {
        let current = if self.reassigning() {
            self.target()
        } else {
            self.replicas.clone()
        };
        if target == current {
            return Ok(self.clone());
        }
        let original = self.original();
        let mut next = self.clone();
        next.adding = target
            .iter()
            .filter(|n| !original.contains(n))
            .copied()
            .collect();
        next.removing = original
            .iter()
            .filter(|n| !target.contains(n))
            .copied()
            .collect();
        next.replicas = target.iter().chain(&next.removing).copied().collect();
        next.isr = next
            .replicas
            .iter()
            .filter(|n| self.isr.contains(n))
            .copied()
            .collect();
        if next.isr.is_empty() {
            return Err(ReassignRefusal::NoInSyncReplica);
        }
        next.partition_epoch += 1;
        let next = match next.finish_reassignment(live) {
            Some(done) => done,
            // It led as an added replica of the replaced reassignment.
            None if next.leader.is_some_and(|l| !next.replicas.contains(&l)) => {
                next.elect(live, false).unwrap_or_else(|| next.offline())
            }
            None => next,
        };
        Ok(next.fencing_dropped(self))
    }

    /// Stops the running reassignment: back to the original replicas.
    pub fn cancel_reassignment(&self, live: &[NodeId]) -> Result<PartitionState, ReassignRefusal> {
        if !self.reassigning() {
            return Err(ReassignRefusal::NoReassignment);
        }
        self.reassign(&self.original(), live)
    }

    /// Ends a running reassignment once every target replica is in the
    /// ISR (as Kafka does, so the move never leaves fewer in-sync copies
    /// than it found): the removed replicas leave the assignment and the
    /// ISR, and if the leader was one of them the new ISR elects another.
    /// `None` while it must wait.
    pub fn complete_reassignment(&self, live: &[NodeId]) -> Option<PartitionState> {
        self.finish_reassignment(live)
            .map(|next| next.fencing_dropped(self))
    }

    fn finish_reassignment(&self, live: &[NodeId]) -> Option<PartitionState> {
        let target = self.target();
        if !self.reassigning() || !target.iter().all(|n| self.isr.contains(n)) {
            return None;
        }
        let removed = |n: &NodeId| self.removing.contains(n);
        let mut next = self.clone();
        next.replicas = target;
        next.isr.retain(|n| !removed(n));
        next.adding.clear();
        next.removing.clear();
        next.partition_epoch += 1;
        if next.leader.is_some_and(|l| removed(&l)) {
            return Some(next.elect(live, false).unwrap_or_else(|| next.offline()));
        }
        Some(next)
    }

    /// A state that drops replicas `before` had bumps the leader epoch,
    /// unless an election already did, as Kafka does: a dropped replica
    /// whose metadata lags is fenced, so it can neither fetch nor count
    /// as in sync on the old epoch, and its data never runs ahead of a
    /// removal it has not yet seen.
    fn fencing_dropped(mut self, before: &PartitionState) -> PartitionState {
        let dropped = before.replicas.iter().any(|r| !self.replicas.contains(r));
        if dropped && self.leader_epoch == before.leader_epoch {
            self.leader_epoch = LeaderEpoch(self.leader_epoch.0 + 1);
        }
        self
    }

    fn offline(&self) -> PartitionState {
        let mut next = self.clone();
        next.leader = None;
        next.leader_epoch = LeaderEpoch(self.leader_epoch.0 + 1);
        next.partition_epoch += 1;
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: NodeId = NodeId(0);
    const B: NodeId = NodeId(1);
    const C: NodeId = NodeId(2);

    #[test]
    fn a_failed_replica_loses_leadership_and_its_isr_place_unless_it_is_the_last() {
        let s = PartitionState::new(vec![A, B, C]);
        let next = s.on_replica_failed(A, &[A, B, C], false).expect("changed");
        assert_eq!(next.leader, Some(B), "the next in-sync replica leads");
        assert_eq!(next.leader_epoch, LeaderEpoch(1));
        assert_eq!(next.isr, vec![B, C]);
        let next = next
            .on_replica_failed(C, &[A, B, C], false)
            .expect("changed");
        assert_eq!(
            next.leader,
            Some(B),
            "a follower's failure keeps the leader"
        );
        assert_eq!(next.leader_epoch, LeaderEpoch(1));
        assert_eq!(next.isr, vec![B]);
        assert_eq!(
            next.on_replica_failed(A, &[A, B, C], false),
            None,
            "not in the ISR"
        );
        // The last in-sync replica holds records nobody else has: it keeps
        // leading, offline, rather than hand over to a lagging replica.
        assert_eq!(next.on_replica_failed(B, &[A, B, C], false), None);
        let unclean = next
            .on_replica_failed(B, &[A, B, C], true)
            .expect("unclean");
        assert_eq!(unclean.leader, Some(A));
        assert_eq!(unclean.isr, vec![A]);
        // A leader whose in-sync peers are down stays too.
        let s = PartitionState::new(vec![A, B]);
        assert_eq!(s.on_replica_failed(A, &[A], false), None);
    }

    #[test]
    fn leader_down_elects_the_first_live_isr_member() {
        let s = PartitionState::new(vec![A, B, C]);
        let next = s.on_broker_down(A, &[B, C], false).expect("changed");
        assert_eq!(next.leader, Some(B));
        assert_eq!(next.leader_epoch, LeaderEpoch(1));
        assert_eq!(next.isr, vec![B, C]);
    }

    #[test]
    fn no_clean_candidate_leaves_the_partition_offline_until_one_returns() {
        let mut s = PartitionState::new(vec![A, B, C]);
        s.isr = vec![A];
        let off = s.on_broker_down(A, &[B, C], false).expect("changed");
        assert_eq!((off.leader, off.isr.clone()), (None, vec![A]));
        assert_eq!(off.on_broker_up(&[B, C], false), None);
        let back = off.on_broker_up(&[A, B, C], false).expect("elected");
        assert_eq!(back.leader, Some(A));
        let unclean = off.on_broker_up(&[C], true).expect("elected");
        assert_eq!((unclean.leader, unclean.isr), (Some(C), vec![C]));
    }

    #[test]
    fn proposals_on_an_old_partition_epoch_are_refused() {
        let s = PartitionState::new(vec![A, B, C]);
        let shrunk = s.on_broker_down(C, &[A, B], false).expect("changed");
        let p = IsrProposal {
            leader: A,
            leader_epoch: s.leader_epoch,
            partition_epoch: s.partition_epoch,
            isr: vec![A, C],
        };
        assert_eq!(
            shrunk.alter(&p, &[A, B]),
            Err(AlterRefusal::StalePartitionEpoch)
        );
        let p = IsrProposal {
            partition_epoch: shrunk.partition_epoch,
            ..p
        };
        assert_eq!(
            shrunk.alter(&p, &[A, B]),
            Err(AlterRefusal::IneligibleReplica)
        );
        let ok = shrunk.alter(&p, &[A, B, C]).expect("accepted");
        assert_eq!(ok.isr, vec![A, C]);
    }

    #[test]
    fn a_preferred_election_needs_the_first_replica_live_and_in_sync() {
        let mut p = PartitionState::new(vec![A, B]);
        assert_eq!(p.elect_preferred(&[A, B]), Err(ElectionRefusal::NotNeeded));
        p = p.on_broker_down(A, &[B], false).unwrap();
        assert_eq!(p.leader, Some(B));
        // A is back but not yet in sync.
        p.isr = vec![B];
        assert_eq!(
            p.elect_preferred(&[A, B]),
            Err(ElectionRefusal::NotAvailable)
        );
        p.isr = vec![A, B];
        assert_eq!(p.elect_preferred(&[B]), Err(ElectionRefusal::NotAvailable));
        let next = p.elect_preferred(&[A, B]).unwrap();
        assert_eq!(next.leader, Some(A));
        assert_eq!(next.leader_epoch.0, p.leader_epoch.0 + 1);
        assert_eq!(next.partition_epoch, p.partition_epoch + 1);
        assert_eq!(next.isr, vec![A, B]);
    }

    const D: NodeId = NodeId(3);

    /// The leader's proposal adding `node` to the ISR.
    fn isr_with(p: &PartitionState, node: NodeId, live: &[NodeId]) -> PartitionState {
        let mut isr = p.isr.clone();
        isr.push(node);
        let proposal = IsrProposal {
            leader: p.leader.unwrap(),
            leader_epoch: p.leader_epoch,
            partition_epoch: p.partition_epoch,
            isr,
        };
        p.alter(&proposal, live).unwrap()
    }

    #[test]
    fn a_reassignment_adds_first_and_removes_once_the_new_replicas_are_in_sync() {
        let live = [A, B, C, D];
        let p = PartitionState::new(vec![A, B, C]);
        let moving = p.reassign(&[B, C, D], &live).unwrap();
        assert_eq!(moving.replicas, vec![B, C, D, A]);
        assert_eq!(
            (moving.adding.clone(), moving.removing.clone()),
            (vec![D], vec![A])
        );
        assert_eq!(
            (moving.original(), moving.target()),
            (vec![B, C, A], vec![B, C, D])
        );
        assert_eq!(moving.isr, vec![B, C, A]);
        assert_eq!(
            (moving.leader, moving.leader_epoch),
            (Some(A), p.leader_epoch)
        );
        assert_eq!(
            moving.complete_reassignment(&live),
            None,
            "D is not in sync"
        );

        // D catches up; the leader, A, is removed and the new ISR elects B.
        let synced = isr_with(&moving, D, &live);
        let done = synced.complete_reassignment(&live).unwrap();
        assert_eq!(done.replicas, vec![B, C, D]);
        assert_eq!(done.isr, vec![B, C, D]);
        assert!(!done.reassigning());
        assert_eq!(done.leader, Some(B));
        assert!(done.leader_epoch > p.leader_epoch);
        assert!(done.partition_epoch > synced.partition_epoch);
    }

    #[test]
    fn removing_in_sync_replicas_completes_at_once_and_fences_the_removed() {
        let live = [A, B, C];
        let p = PartitionState::new(vec![A, B, C]);
        let done = p.reassign(&[A, B], &live).unwrap();
        assert_eq!(
            (done.replicas.clone(), done.isr.clone()),
            (vec![A, B], vec![A, B])
        );
        assert!(!done.reassigning());
        // A leads on, in a new epoch that C's fetches no longer match.
        assert_eq!(done.leader, Some(A));
        assert_eq!(done.leader_epoch.0, p.leader_epoch.0 + 1);
        // Keeping only a replica out of sync waits for it.
        let mut lagging = p.clone();
        lagging.isr = vec![A, B];
        let waiting = lagging.reassign(&[C], &live).unwrap();
        assert_eq!(
            (waiting.replicas.clone(), waiting.removing.clone()),
            (vec![C, A, B], vec![A, B])
        );
        assert_eq!(waiting.complete_reassignment(&live), None);
        let done = isr_with(&waiting, C, &live)
            .complete_reassignment(&live)
            .unwrap();
        assert_eq!(
            (done.replicas, done.isr, done.leader),
            (vec![C], vec![C], Some(C))
        );
    }

    #[test]
    fn a_reassignment_is_cancelled_or_replaced() {
        let live = [A, B, C, D];
        let p = PartitionState::new(vec![A, B]);
        assert_eq!(
            p.cancel_reassignment(&live),
            Err(ReassignRefusal::NoReassignment)
        );
        assert_eq!(p.reassign(&[A, B], &live), Ok(p.clone()), "nothing to do");
        let reordered = p.reassign(&[B, A], &live).unwrap();
        assert_eq!(
            (reordered.replicas.clone(), reordered.reassigning()),
            (vec![B, A], false)
        );

        // C is in sync, but the controller has not completed the move yet.
        let moving = isr_with(&p.reassign(&[A, C], &live).unwrap(), C, &live);
        assert_eq!(moving.isr, vec![A, C, B]);
        let back = moving.cancel_reassignment(&live).unwrap();
        assert_eq!(
            (back.replicas.clone(), back.isr.clone()),
            (vec![A, B], vec![A, B])
        );
        assert!(!back.reassigning());

        // A new target replaces the running one: C, which it was adding,
        // goes at once.
        let replaced = moving.reassign(&[A, D], &live).unwrap();
        assert_eq!(replaced.replicas, vec![A, D, B]);
        assert_eq!(
            (replaced.adding.clone(), replaced.removing.clone()),
            (vec![D], vec![B])
        );
        assert_eq!(replaced.isr, vec![A, B]);
    }

    #[test]
    fn an_unclean_election_during_a_move_prefers_an_original_replica() {
        let p = PartitionState::new(vec![A, B]);
        let mut moving = p.reassign(&[C, B], &[A, B, C]).unwrap();
        assert_eq!(moving.replicas, vec![C, B, A]);
        // A, the only in-sync replica, is gone; C was just added.
        moving.isr = vec![A];
        let next = moving.on_broker_down(A, &[B, C], true).unwrap();
        assert_eq!((next.leader, next.isr), (Some(B), vec![B]));
    }

    #[test]
    fn an_unclean_election_is_only_for_an_offline_partition() {
        let p = PartitionState::new(vec![A, B]);
        assert_eq!(p.elect_unclean(&[A, B]), Err(ElectionRefusal::NotNeeded));
        let mut offline = p.on_broker_down(A, &[], false).unwrap();
        offline.isr = vec![A];
        assert_eq!(offline.leader, None);
        assert_eq!(
            offline.elect_unclean(&[]),
            Err(ElectionRefusal::NotAvailable)
        );
        let next = offline.elect_unclean(&[B]).unwrap();
        assert_eq!((next.leader, next.isr), (Some(B), vec![B]));
    }
}
