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
    /// Every assigned replica, in preference order.
    pub replicas: Vec<NodeId>,
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
        }
    }

    /// Elects a leader among live ISR members, in preference order, or
    /// with `unclean` among any live replica, which then forms the ISR
    /// alone. Bumps both epochs. `None` when nobody is eligible; the
    /// state is then left for the caller to mark offline.
    pub fn elect(&self, live: &[NodeId], unclean: bool) -> Option<PartitionState> {
        let in_isr = |n: &&NodeId| self.isr.contains(n) && live.contains(n);
        let clean = self.replicas.iter().find(in_isr).copied();
        let leader = match clean {
            Some(n) => n,
            None if unclean => *self.replicas.iter().find(|n| live.contains(n))?,
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
            replicas: self.replicas.clone(),
        })
    }

    /// What the controller commits when `node` is declared down: a new
    /// leader if it led, or the ISR without it. The last ISR member stays
    /// in the ISR so a clean election can wait for it to come back.
    pub fn on_broker_down(&self, node: NodeId, live: &[NodeId], unclean: bool) -> Option<Self> {
        if self.leader == Some(node) {
            return Some(self.elect(live, unclean).unwrap_or_else(|| self.offline()));
        }
        if !self.isr.contains(&node) || self.isr.len() == 1 {
            return None;
        }
        let mut next = self.clone();
        next.isr.retain(|n| *n != node);
        next.partition_epoch += 1;
        Some(next)
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
            isr: self.isr.clone(),
            replicas: self.replicas.clone(),
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
