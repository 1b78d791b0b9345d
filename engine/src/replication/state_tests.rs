//! Scenario tests of one partition's replicas, and a seeded simulation
//! of three brokers and a controller under produce, fetches, lost and
//! late messages, crashes, restarts and fencing, checking after every
//! step that nothing committed is lost or rewritten, that replicas agree
//! below their high watermarks, and that consumers see only committed
//! records.

use super::*;
use crate::replication::controller::AlterRefusal;
use crate::replication::log::EpochEntry;
use std::collections::BTreeMap;

const A: NodeId = NodeId(0);
const B: NodeId = NodeId(1);
const C: NodeId = NodeId(2);

fn cfg(min_isr: usize) -> ReplicationConfig {
    ReplicationConfig {
        replica_lag_time_max_ms: 10_000,
        min_insync_replicas: min_isr,
        fetch_records_max: 50,
        unclean_leader_election: false,
    }
}

/// Three replicas of a partition led by A, every state applied.
fn cluster(min_isr: usize) -> (PartitionState, Vec<PartitionReplica>) {
    let state = PartitionState::new(vec![A, B, C]);
    let mut nodes: Vec<_> = [A, B, C]
        .into_iter()
        .map(|n| PartitionReplica::new(n, cfg(min_isr), ReplicaLog::new()))
        .collect();
    for n in &mut nodes {
        n.apply_state(state.clone(), 0);
    }
    (state, nodes)
}

/// One round trip of follower `f`'s next request to the leader `l`.
fn round(nodes: &mut [PartitionReplica], f: usize, l: usize, now: i64) {
    match nodes[f].next_request().expect("a follower") {
        FollowerRequest::Epoch { request, .. } => {
            let resp = nodes[l].handle_epoch_request(request);
            nodes[f].handle_epoch_response(resp);
        }
        FollowerRequest::Fetch { request, .. } => {
            let resp = nodes[l].handle_fetch(request, now);
            nodes[f].handle_fetch_response(resp);
        }
    }
}

fn produced(events: &[Event]) -> Vec<(Ticket, Result<Offset, ErrorCode>)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Produced { ticket, result } => Some((*ticket, *result)),
            _ => None,
        })
        .collect()
}

#[test]
fn acks_all_completes_when_every_isr_member_has_fetched_past_it() {
    let (_, mut n) = cluster(2);
    let a = n[0].produce(Acks::All, 5, 1).expect("appended");
    assert_eq!(
        (a.base_offset, a.last_offset, a.parked),
        (Offset(0), Offset(4), true)
    );
    assert!(produced(&n[0].take_events()).is_empty());
    round(&mut n, 1, 0, 1); // B fetches the records
    assert_eq!(n[0].log().high_watermark(), Offset(0), "C has not fetched");
    round(&mut n, 2, 0, 1);
    assert_eq!(
        n[0].log().high_watermark(),
        Offset(0),
        "fetch offsets are 0 so far"
    );
    round(&mut n, 1, 0, 2);
    round(&mut n, 2, 0, 2);
    assert_eq!(n[0].log().high_watermark(), Offset(5));
    assert_eq!(produced(&n[0].take_events()), vec![(1, Ok(Offset(4)))]);
    round(&mut n, 1, 0, 3);
    assert_eq!(
        n[1].log().high_watermark(),
        Offset(5),
        "follower takes the HW"
    );
}

/// A producer's retry of a batch the leader already had was answered at
/// once, committed or not: a leader cut off from its followers (found by
/// engine/tests/partitions.rs) could acknowledge a retry of a batch only
/// it held, which the next leader's log did not have. The retry now waits
/// for the high watermark as its first attempt does, and a replica that
/// does not lead refuses it.
#[test]
fn a_retried_batch_under_acks_all_waits_for_the_high_watermark() {
    let (_, mut n) = cluster(2);
    n[0].produce(Acks::All, 5, 1).expect("appended");
    assert_eq!(n[0].produce_duplicate(Acks::All, Offset(4), 2), Ok(true));
    assert_eq!(
        n[0].produce_duplicate(Acks::Leader, Offset(4), 3),
        Ok(false),
        "acks=1 is answered at once"
    );
    assert!(produced(&n[0].take_events()).is_empty());
    for now in 1..=2 {
        round(&mut n, 1, 0, now);
        round(&mut n, 2, 0, now);
    }
    assert_eq!(n[0].log().high_watermark(), Offset(5));
    assert_eq!(
        produced(&n[0].take_events()),
        vec![(1, Ok(Offset(4))), (2, Ok(Offset(4)))]
    );
    assert_eq!(
        n[0].produce_duplicate(Acks::All, Offset(4), 4),
        Ok(false),
        "a committed batch's retry is answered at once"
    );
    assert_eq!(
        n[1].produce_duplicate(Acks::All, Offset(4), 5),
        Err(ErrorCode::NotLeaderOrFollower)
    );
}

#[test]
fn a_lagging_follower_is_proposed_out_and_the_hw_moves_once_confirmed() {
    let (state, mut n) = cluster(2);
    n[0].produce(Acks::All, 3, 7).expect("appended");
    round(&mut n, 1, 0, 0);
    round(&mut n, 1, 0, 0);
    n[0].tick(10_001);
    let events = n[0].take_events();
    let Some(Event::ProposeIsr(p)) = events.first() else {
        panic!("expected a proposal, got {events:?}");
    };
    assert_eq!(p.isr, vec![A, B]);
    // Until the controller confirms, the HW still waits for C.
    assert_eq!(n[0].log().high_watermark(), Offset(0));
    let next = state.alter(p, &[A, B, C]).expect("accepted");
    n[0].apply_state(next, 10_002);
    assert_eq!(n[0].isr(), Some(&[A, B][..]));
    assert_eq!(n[0].log().high_watermark(), Offset(3));
    assert_eq!(produced(&n[0].take_events()), vec![(7, Ok(Offset(2)))]);
}

#[test]
fn acks_all_below_min_insync_is_refused_before_appending() {
    let (state, mut n) = cluster(2);
    let mut shrunk = state.on_broker_down(B, &[A, C], false).expect("changed");
    shrunk = shrunk.on_broker_down(C, &[A], false).expect("changed");
    n[0].apply_state(shrunk, 1);
    assert_eq!(
        n[0].produce(Acks::All, 1, 1),
        Err(ErrorCode::NotEnoughReplicas)
    );
    assert_eq!(n[0].log().log_end(), Offset(0));
    assert!(
        n[0].produce(Acks::Leader, 1, 2).is_ok(),
        "acks=1 still works"
    );
    assert_eq!(
        n[1].produce(Acks::Leader, 1, 3),
        Err(ErrorCode::NotLeaderOrFollower)
    );
}

#[test]
fn a_caught_up_follower_is_proposed_back_into_the_isr() {
    let (state, mut n) = cluster(1);
    let shrunk = state.on_broker_down(C, &[A, B], false).expect("changed");
    n[0].apply_state(shrunk, 0);
    n[0].produce(Acks::Leader, 4, 0).expect("appended");
    round(&mut n, 1, 0, 0);
    round(&mut n, 1, 0, 0);
    assert!(n[0].take_events().is_empty());
    round(&mut n, 2, 0, 0); // C fetches from 0: below the HW (4)
    assert!(n[0].take_events().is_empty());
    round(&mut n, 2, 0, 0); // C now at 4 = HW
    let events = n[0].take_events();
    assert!(
        matches!(&events[..], [Event::ProposeIsr(p)] if p.isr == vec![A, B, C]),
        "{events:?}"
    );
}

#[test]
fn a_reassignment_changes_whom_the_leader_waits_for() {
    let live = [A, B, C];
    let state = PartitionState::new(vec![A, B]);
    let mut n: Vec<_> = [A, B, C]
        .into_iter()
        .map(|node| PartitionReplica::new(node, cfg(1), ReplicaLog::new()))
        .collect();
    n[0].apply_state(state.clone(), 0);
    n[1].apply_state(state.clone(), 0);
    n[0].produce(Acks::All, 4, 1).expect("appended");
    round(&mut n, 1, 0, 0);
    round(&mut n, 1, 0, 0);
    assert_eq!(produced(&n[0].take_events()), vec![(1, Ok(Offset(3)))]);

    // Move B's replica to C. C is not in the ISR: acks=all still waits
    // for B alone, and the leader keeps its epoch.
    let moving = state.reassign(&[A, C], &live).unwrap();
    assert_eq!(moving.leader_epoch, state.leader_epoch);
    for r in &mut n {
        r.apply_state(moving.clone(), 1);
    }
    n[0].produce(Acks::All, 2, 2).expect("appended");
    round(&mut n, 1, 0, 1);
    round(&mut n, 1, 0, 1);
    assert_eq!(produced(&n[0].take_events()), vec![(2, Ok(Offset(5)))]);
    // C copies the log and is proposed into the ISR, which completes the
    // move: B leaves, fenced by a new leader epoch.
    round(&mut n, 2, 0, 1);
    round(&mut n, 2, 0, 1);
    let events = n[0].take_events();
    let [Event::ProposeIsr(p)] = &events[..] else {
        panic!("expected a proposal, got {events:?}");
    };
    assert_eq!(p.isr, vec![A, B, C]);
    let synced = moving.alter(p, &live).expect("accepted");
    let done = synced.complete_reassignment(&live).expect("complete");
    assert_eq!(done.replicas, vec![A, C]);
    assert_eq!(done.leader_epoch.0, state.leader_epoch.0 + 1);
    // A produce parked when the epoch changes stays parked: A leads on.
    n[0].produce(Acks::All, 1, 3).expect("appended");
    for r in &mut n {
        r.apply_state(done.clone(), 2);
    }
    assert!(produced(&n[0].take_events()).is_empty());
    // B, even one that missed the change, is refused.
    for epoch in [state.leader_epoch, done.leader_epoch] {
        let b = FetchRequest {
            replica: B,
            leader_epoch: epoch,
            fetch_offset: Offset(6),
            log_start: Offset(0),
        };
        assert!(n[0].handle_fetch(b, 2).result.is_err());
    }
    // acks=all waits for C, not B.
    for _ in 0..3 {
        round(&mut n, 2, 0, 3);
    }
    assert_eq!(produced(&n[0].take_events()), vec![(3, Ok(Offset(6)))]);
}

#[test]
fn an_expansion_refused_as_stale_may_have_been_committed_so_the_hw_waits_for_it() {
    let (state, mut n) = cluster(1);
    let shrunk = state.on_broker_down(C, &[A, B], false).expect("changed");
    n[0].apply_state(shrunk.clone(), 0);
    n[0].produce(Acks::Leader, 4, 0).expect("appended");
    for f in [1, 1, 2, 2] {
        round(&mut n, f, 0, 0);
    }
    let events = n[0].take_events();
    let [Event::ProposeIsr(p)] = &events[..] else {
        panic!("expected a proposal, got {events:?}");
    };
    // The controller commits it, but its answer is lost; the resent
    // proposal is refused as built on an old partition epoch.
    let grown = shrunk.alter(p, &[A, B, C]).expect("accepted");
    n[0].proposal_refused(p.partition_epoch, false);
    // The controller may now elect C: acks=all must wait for C too.
    n[0].produce(Acks::All, 3, 1).expect("appended");
    round(&mut n, 1, 0, 1);
    round(&mut n, 1, 0, 1);
    assert_eq!(n[0].log().high_watermark(), Offset(4));
    assert!(produced(&n[0].take_events()).is_empty());
    n[0].apply_state(grown, 2);
    round(&mut n, 2, 0, 2);
    round(&mut n, 2, 0, 2);
    assert_eq!(n[0].log().high_watermark(), Offset(7));
    assert_eq!(produced(&n[0].take_events()), vec![(1, Ok(Offset(6)))]);
}

#[test]
fn the_low_watermark_waits_for_every_in_sync_followers_log_start() {
    let (state, mut n) = cluster(1);
    n[0].produce(Acks::Leader, 10, 0).expect("appended");
    // Two fetches copy the records, a third brings the HW.
    for f in [1, 2, 1, 2, 1, 2] {
        round(&mut n, f, 0, 0);
    }
    n[0].advance_log_start(Offset(6));
    assert_eq!(n[0].low_watermark(), Some(Offset(0)));
    n[1].advance_log_start(Offset(6));
    round(&mut n, 1, 0, 1);
    assert_eq!(n[0].low_watermark(), Some(Offset(0)), "C still starts at 0");
    n[2].advance_log_start(Offset(4));
    round(&mut n, 2, 0, 1);
    assert_eq!(n[0].low_watermark(), Some(Offset(4)));
    // Out of the ISR, C no longer holds it back.
    let shrunk = state.on_broker_down(C, &[A, B], false).expect("changed");
    n[0].apply_state(shrunk, 2);
    assert_eq!(n[0].low_watermark(), Some(Offset(6)));
    assert_eq!(n[1].low_watermark(), None, "a follower has none");
}

#[test]
fn a_new_leader_truncates_the_old_leaders_uncommitted_tail() {
    let (state, mut n) = cluster(1);
    n[0].produce(Acks::All, 3, 0).expect("appended");
    round(&mut n, 1, 0, 0);
    round(&mut n, 2, 0, 0);
    round(&mut n, 1, 0, 0);
    round(&mut n, 2, 0, 0);
    assert_eq!(n[0].log().high_watermark(), Offset(3));
    // A appends 2 more that nobody fetches, then dies.
    n[0].produce(Acks::Leader, 2, 1).expect("appended");
    let s1 = state.on_broker_down(A, &[B, C], false).expect("changed");
    assert_eq!(s1.leader, Some(B));
    n[1].apply_state(s1.clone(), 1);
    n[2].apply_state(s1.clone(), 1);
    n[1].produce(Acks::Leader, 4, 2).expect("appended");
    // A restarts and follows B: its offsets 3..5 (epoch 0) diverge.
    let log = n[0].log().clone();
    n[0] = PartitionReplica::new(A, cfg(1), log);
    let s2 = s1.on_broker_up(&[A, B, C], false);
    assert_eq!(s2, None, "B still leads");
    n[0].apply_state(s1, 2);
    round(&mut n, 0, 1, 2); // OffsetForLeaderEpoch(0) -> (0, 3)
    assert_eq!(n[0].log().log_end(), Offset(3));
    round(&mut n, 0, 1, 2);
    assert_eq!(n[0].log().log_end(), Offset(7));
    assert_eq!(n[0].log().epochs(), n[1].log().epochs());
}

/// A leader elected against the rules (an unclean election, or a bug)
/// lacks records the old ISR committed. Followers keep them unless
/// unclean election is allowed; before, they cut them.
#[test]
fn a_follower_never_cuts_below_its_high_watermark_unless_unclean_is_allowed() {
    for unclean in [false, true] {
        let (state, mut n) = cluster(1);
        // A and B commit 3 records; C never fetches them.
        let mut s = state
            .on_broker_down(C, &[A, B], false)
            .expect("C leaves the ISR");
        n[0].apply_state(s.clone(), 0);
        n[0].produce(Acks::All, 3, 0).expect("appended");
        round(&mut n, 1, 0, 0);
        round(&mut n, 1, 0, 0);
        assert_eq!(n[1].log().high_watermark(), Offset(3));
        // C is made leader anyway, and B follows it.
        s.leader = Some(C);
        s.leader_epoch = LeaderEpoch(s.leader_epoch.0 + 1);
        s.isr = vec![C];
        n[1].set_unclean_leader_election(unclean);
        n[1].apply_state(s.clone(), 1);
        n[2].apply_state(s, 1);
        round(&mut n, 1, 2, 1);
        let refused = n[1]
            .take_events()
            .iter()
            .any(|e| matches!(e, Event::RefusedTruncation { .. }));
        if unclean {
            assert_eq!(n[1].log().log_end(), Offset(0), "unclean: B follows C");
            assert!(!refused);
        } else {
            assert_eq!(n[1].log().log_end(), Offset(3), "B keeps what it committed");
            assert!(refused);
        }
    }
}

#[test]
fn kip_279_two_rounds_when_the_leader_never_saw_the_followers_epoch() {
    // A wrote epochs 0 and 2 (2 uncommitted); B led epoch 1 and now
    // leads epoch 3 without ever hearing of epoch 2.
    let mut a = ReplicaLog::new();
    a.append(LeaderEpoch(0), 2);
    a.append(LeaderEpoch(2), 3);
    let mut b = ReplicaLog::new();
    b.append(LeaderEpoch(0), 2);
    b.append(LeaderEpoch(1), 2);
    let state = PartitionState {
        leader: Some(B),
        leader_epoch: LeaderEpoch(3),
        partition_epoch: 9,
        isr: vec![B],
        replicas: vec![A, B],
        adding: vec![],
        removing: vec![],
    };
    let mut n = vec![
        PartitionReplica::new(A, cfg(1), a),
        PartitionReplica::new(B, cfg(1), b),
    ];
    n[1].apply_state(state.clone(), 0);
    n[0].apply_state(state, 0);
    round(&mut n, 0, 1, 0); // asks 2: leader says (1, 4); A lacks 1: cut to 2
    assert_eq!(n[0].log().log_end(), Offset(2));
    assert!(matches!(
        n[0].next_request(),
        Some(FollowerRequest::Epoch { .. })
    ));
    round(&mut n, 0, 1, 0); // asks 0: leader says (0, 2); done
    assert!(matches!(
        n[0].next_request(),
        Some(FollowerRequest::Fetch { .. })
    ));
    round(&mut n, 0, 1, 0);
    assert_eq!(n[0].log().log_end(), Offset(4));
    // The leader's epoch 3 has no records yet, so only it is missing.
    assert_eq!(n[0].log().epochs(), n[1].log().epochs_below(Offset(4)));
}

#[test]
fn requests_from_another_epoch_are_fenced() {
    let (_, mut n) = cluster(1);
    let stale = FetchRequest {
        replica: B,
        leader_epoch: LeaderEpoch(-1),
        fetch_offset: Offset(0),
        log_start: Offset(0),
    };
    let r = n[0].handle_fetch(stale, 0);
    assert_eq!(r.result, Err(ErrorCode::FencedLeaderEpoch));
    let ahead = FetchRequest {
        leader_epoch: LeaderEpoch(4),
        ..stale
    };
    assert_eq!(
        n[0].handle_fetch(ahead, 0).result,
        Err(ErrorCode::UnknownLeaderEpoch)
    );
    let to_follower = n[1].handle_epoch_request(EpochRequest {
        leader_epoch: LeaderEpoch(0),
        requested_epoch: LeaderEpoch(0),
    });
    assert_eq!(to_follower.result, Err(ErrorCode::NotLeaderOrFollower));
}

#[test]
fn losing_leadership_answers_parked_produces() {
    let (state, mut n) = cluster(1);
    n[0].produce(Acks::All, 1, 42).expect("appended");
    let next = state.on_broker_down(A, &[B, C], false).expect("changed");
    n[0].apply_state(next, 1);
    assert_eq!(
        produced(&n[0].take_events()),
        vec![(42, Err(ErrorCode::NotLeaderOrFollower))]
    );
}

#[test]
fn consumers_read_only_below_the_high_watermark() {
    let (_, mut n) = cluster(1);
    n[0].produce(Acks::Leader, 5, 0).expect("appended");
    assert_eq!(n[0].read(Offset(0), 100), Ok(vec![]));
    round(&mut n, 1, 0, 0);
    round(&mut n, 2, 0, 0);
    round(&mut n, 1, 0, 0);
    assert_eq!(n[0].log().high_watermark(), Offset(0), "C is at 0");
    round(&mut n, 2, 0, 0);
    let runs = n[0].read(Offset(1), 100).expect("leader");
    assert_eq!(runs.iter().map(|r| r.count).sum::<u32>(), 4);
    assert_eq!(n[0].read(Offset(6), 100), Err(ErrorCode::OffsetOutOfRange));
}

/// KIP-207: a leader elected with a high watermark below its epoch's
/// start cannot say where the committed log ends until its followers
/// fetch in the new epoch.
#[test]
fn a_new_leaders_high_watermark_lags_its_epoch_start_until_followers_fetch() {
    let (state, mut n) = cluster(1);
    n[0].produce(Acks::Leader, 5, 0).expect("appended");
    round(&mut n, 1, 0, 0);
    assert_eq!(n[1].log().log_end(), Offset(5));
    assert_eq!(n[1].log().high_watermark(), Offset(0), "C had not fetched");
    assert!(!n[0].hw_behind_epoch_start(), "A's epoch started at 0");
    assert!(!n[1].hw_behind_epoch_start(), "a follower");
    let next = state.on_broker_down(A, &[B, C], false).expect("changed");
    assert_eq!(next.leader, Some(B));
    n[1].apply_state(next.clone(), 1);
    n[2].apply_state(next, 1);
    assert!(n[1].hw_behind_epoch_start(), "HW 0, epoch from 5");
    for _ in 0..3 {
        round(&mut n, 2, 1, 1);
    }
    assert_eq!(n[1].log().high_watermark(), Offset(5));
    assert!(!n[1].hw_behind_epoch_start());
}

// ---------------------------------------------------------------------
// Seeded simulation.

use crate::sim_rng::Rng;

const NODES: [NodeId; 3] = [A, B, C];

/// A message in flight, to a broker or to the controller.
#[derive(Clone, Debug)]
enum Msg {
    State(NodeId, PartitionState),
    Propose(IsrProposal),
    /// A refused proposal's leader, partition epoch, and whether it was
    /// refused as ineligible.
    Refused(NodeId, i32, bool),
    Epoch(NodeId, NodeId, EpochRequest),
    EpochAnswer(NodeId, EpochResponse),
    Fetch(NodeId, NodeId, FetchRequest),
    FetchAnswer(NodeId, FetchResponse),
}

impl Msg {
    /// The broker it goes to; `None` for the controller.
    fn to(&self) -> Option<NodeId> {
        match self {
            Msg::State(n, _) | Msg::Refused(n, _, _) => Some(*n),
            Msg::Epoch(_, n, _) | Msg::Fetch(_, n, _) => Some(*n),
            Msg::EpochAnswer(n, _) | Msg::FetchAnswer(n, _) => Some(*n),
            Msg::Propose(_) => None,
        }
    }

    /// The follower whose request or answer this is, if any.
    fn follower(&self) -> Option<NodeId> {
        match self {
            Msg::Epoch(n, _, _) | Msg::Fetch(n, _, _) => Some(*n),
            Msg::EpochAnswer(n, _) | Msg::FetchAnswer(n, _) => Some(*n),
            _ => None,
        }
    }
}

struct Broker {
    replica: PartitionReplica,
    alive: bool,
    /// Alive, but the controller thinks it is down (missed heartbeats).
    fenced: bool,
}

/// The committed log so far: the longest prefix any replica has had
/// below its high watermark. Every replica must agree with it below its
/// own HW, and every leader must hold all of it.
#[derive(Default)]
struct Committed {
    epochs: Vec<EpochEntry>,
    end: Offset,
}

impl Committed {
    fn below(&self, upto: Offset) -> Vec<EpochEntry> {
        self.epochs
            .iter()
            .copied()
            .filter(|e| e.start_offset < upto)
            .collect()
    }

    fn epoch_at(&self, offset: Offset) -> Option<LeaderEpoch> {
        if offset >= self.end {
            return None;
        }
        self.epochs
            .iter()
            .rev()
            .find(|e| e.start_offset <= offset)
            .map(|e| e.epoch)
    }

    /// Checks `log` against the committed prefix below its HW, and
    /// extends the prefix if that HW is further.
    fn observe(&mut self, node: NodeId, log: &ReplicaLog) {
        let hw = log.high_watermark();
        let common = hw.min(self.end);
        assert_eq!(
            log.epochs_below(common),
            self.below(common),
            "replica {node} diverges below its high watermark {hw}"
        );
        if hw > self.end {
            self.epochs = log.epochs_below(hw);
            self.end = hw;
        }
    }
}

/// A produced batch: its epoch, first and last offset.
type Batch = (LeaderEpoch, Offset, Offset);

struct Sim {
    rng: Rng,
    now: i64,
    config: ReplicationConfig,
    brokers: Vec<Broker>,
    controller: PartitionState,
    net: Vec<(i64, Msg)>,
    committed: Committed,
    next_ticket: Ticket,
    /// Parked acks=all batches by ticket: epoch, first and last offset.
    parked: BTreeMap<Ticket, Batch>,
    /// Acknowledged acks=all batches.
    acked: Vec<Batch>,
    /// The HW each broker last had as leader, with the epoch.
    leader_hw: Vec<Option<(LeaderEpoch, Offset)>>,
    /// Whether messages may be lost, nodes crash or get fenced.
    chaos: bool,
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let mut rng = Rng::new(seed);
        let config = ReplicationConfig {
            replica_lag_time_max_ms: 2_000 + rng.below(3) as i64 * 2_000,
            min_insync_replicas: 1 + rng.below(2) as usize,
            fetch_records_max: 1 + rng.below(20) as u32,
            unclean_leader_election: false,
        };
        let controller = PartitionState::new(NODES.to_vec());
        let brokers = NODES
            .iter()
            .map(|n| Broker {
                replica: PartitionReplica::new(*n, config, ReplicaLog::new()),
                alive: true,
                fenced: false,
            })
            .collect();
        let mut sim = Sim {
            rng,
            now: 0,
            config,
            brokers,
            controller,
            net: Vec::new(),
            committed: Committed::default(),
            next_ticket: 0,
            parked: BTreeMap::new(),
            acked: Vec::new(),
            leader_hw: vec![None; NODES.len()],
            chaos: true,
        };
        sim.publish();
        sim
    }

    /// Brokers the controller counts as up.
    fn live(&self) -> Vec<NodeId> {
        NODES
            .iter()
            .copied()
            .filter(|n| self.broker(*n).alive && !self.broker(*n).fenced)
            .collect()
    }

    fn broker(&self, n: NodeId) -> &Broker {
        &self.brokers[n.0 as usize]
    }

    fn replica(&mut self, n: NodeId) -> &mut PartitionReplica {
        &mut self.brokers[n.0 as usize].replica
    }

    fn send(&mut self, msg: Msg) {
        if self.chaos && self.rng.one_in(25) {
            return;
        }
        let due = self.now + self.rng.below(200) as i64;
        self.net.push((due, msg));
    }

    /// The controller sends its state to every broker it counts as up
    /// (metadata propagation; repeated, so a lost one is made good).
    fn publish(&mut self) {
        for n in self.live() {
            let state = self.controller.clone();
            self.send(Msg::State(n, state));
        }
    }

    fn commit(&mut self, next: Option<PartitionState>) {
        if let Some(next) = next {
            self.controller = next;
            self.publish();
        }
    }

    fn step(&mut self) {
        match self.rng.below(20) {
            0..=3 => self.produce(),
            4..=8 => self.follower_sends(),
            9..=13 => self.deliver(),
            14 => self.consume(),
            15 => self.publish(),
            16 | 17 => self.advance_time(),
            _ => self.chaos_step(),
        }
        let acks = self.drain_events();
        self.check();
        for ack in acks {
            self.check_ack(ack);
        }
    }

    fn produce(&mut self) {
        let Some(leader) = self.controller.leader else {
            return;
        };
        if !self.broker(leader).alive {
            return;
        }
        let acks = if self.rng.one_in(2) {
            Acks::All
        } else {
            Acks::Leader
        };
        let count = 1 + self.rng.below(5) as u32;
        self.next_ticket += 1;
        let ticket = self.next_ticket;
        match self.replica(leader).produce(acks, count, ticket) {
            Ok(a) if a.parked => {
                self.parked
                    .insert(ticket, (a.epoch, a.base_offset, a.last_offset));
            }
            Ok(_) => {}
            Err(e) => assert!(
                matches!(
                    e,
                    ErrorCode::NotEnoughReplicas | ErrorCode::NotLeaderOrFollower
                ),
                "produce failed with {e:?}"
            ),
        }
    }

    fn follower_sends(&mut self) {
        let n = NODES[self.rng.below(3) as usize];
        // A follower keeps one request in flight, and sends another once
        // that is answered or lost.
        if !self.broker(n).alive || self.net.iter().any(|(_, m)| m.follower() == Some(n)) {
            return;
        }
        match self.replica(n).next_request() {
            Some(FollowerRequest::Epoch { leader, request }) => {
                self.send(Msg::Epoch(n, leader, request))
            }
            Some(FollowerRequest::Fetch { leader, request }) => {
                self.send(Msg::Fetch(n, leader, request))
            }
            None => {}
        }
    }

    /// Delivers a random message that is due (so messages reorder).
    fn deliver(&mut self) {
        let due: Vec<usize> = (0..self.net.len())
            .filter(|i| self.net[*i].0 <= self.now)
            .collect();
        if due.is_empty() {
            self.now += 10;
            return;
        }
        let pick = due[self.rng.below(due.len() as u64) as usize];
        let (_, msg) = self.net.swap_remove(pick);
        self.receive(msg);
    }

    fn receive(&mut self, msg: Msg) {
        let now = self.now;
        match msg {
            Msg::State(n, s) if !s.replicas.contains(&n) => self.remove_replica(n, s),
            Msg::State(n, s) => self.replica(n).apply_state(s, now),
            Msg::Propose(p) => {
                let live = self.live();
                match self.controller.alter(&p, &live) {
                    Ok(next) => {
                        let next = next.complete_reassignment(&live).unwrap_or(next);
                        self.commit(Some(next))
                    }
                    Err(e) => {
                        let ineligible = e == AlterRefusal::IneligibleReplica;
                        self.send(Msg::Refused(p.leader, p.partition_epoch, ineligible))
                    }
                }
            }
            Msg::Refused(n, pe, ineligible) => self.replica(n).proposal_refused(pe, ineligible),
            Msg::Epoch(from, to, req) => {
                let resp = self.replica(to).handle_epoch_request(req);
                self.send(Msg::EpochAnswer(from, resp));
            }
            Msg::EpochAnswer(n, resp) => self.replica(n).handle_epoch_response(resp),
            Msg::Fetch(from, to, req) => {
                let resp = self.replica(to).handle_fetch(req, now);
                self.send(Msg::FetchAnswer(from, resp));
            }
            Msg::FetchAnswer(n, resp) => self.replica(n).handle_fetch_response(resp),
        }
    }

    /// A consumer reads from the leader: only committed records, each
    /// where the committed log has it.
    fn consume(&mut self) {
        let Some(leader) = self.controller.leader else {
            return;
        };
        if !self.broker(leader).alive {
            return;
        }
        let hw = self.replica(leader).log().high_watermark();
        let from = Offset(self.rng.below(hw.0 as u64 + 1) as i64);
        let Ok(runs) = self.replica(leader).read(from, 100) else {
            return;
        };
        let log = self.brokers[leader.0 as usize].replica.log();
        self.committed.observe(leader, log);
        for run in runs {
            let last = Offset(run.base_offset.0 + i64::from(run.count) - 1);
            assert!(last < hw, "consumer saw offset {last} above the HW {hw}");
            assert_eq!(self.committed.epoch_at(run.base_offset), Some(run.epoch));
            assert_eq!(self.committed.epoch_at(last), Some(run.epoch));
        }
    }

    fn advance_time(&mut self) {
        self.now += self.rng.below(3_000) as i64;
        let now = self.now;
        for b in self.brokers.iter_mut().filter(|b| b.alive) {
            b.replica.tick(now);
        }
    }
}

impl Sim {
    fn chaos_step(&mut self) {
        if !self.chaos {
            return;
        }
        if self.rng.one_in(4) {
            self.reassign();
            return;
        }
        let n = NODES[self.rng.below(3) as usize];
        let down = self.brokers.iter().filter(|b| !b.alive).count();
        let b = self.broker(n);
        match (b.alive, b.fenced, self.rng.below(3)) {
            (true, false, 0) if down < 2 => self.crash(n),
            (true, false, 1) => self.fence(n),
            (true, true, _) => self.unfence(n),
            (false, _, _) if self.rng.one_in(2) => self.restart(n),
            _ => {}
        }
    }

    /// An operator moves the partition to some of the brokers, in some
    /// order, or cancels the running move.
    fn reassign(&mut self) {
        let live = self.live();
        let next = if self.controller.reassigning() && self.rng.one_in(3) {
            self.controller.cancel_reassignment(&live)
        } else {
            let mut target: Vec<NodeId> = NODES
                .iter()
                .copied()
                .filter(|_| self.rng.one_in(2))
                .collect();
            if target.is_empty() {
                target.push(NODES[self.rng.below(3) as usize]);
            }
            if self.rng.one_in(2) {
                target.reverse();
            }
            self.controller.reassign(&target, &live)
        };
        if let Some(next) = next.ok().filter(|n| *n != self.controller) {
            self.commit(Some(next));
        }
    }

    /// `n` learns that it no longer holds a replica and deletes it. The
    /// fresh replica in its place takes that state, so that older ones
    /// arriving late are ignored, as a broker's ordered metadata would.
    fn remove_replica(&mut self, n: NodeId, state: PartitionState) {
        let version = |s: &PartitionState| (s.leader_epoch, s.partition_epoch);
        if let Some(cur) = &self.broker(n).replica.state {
            if version(cur) >= version(&state) {
                return;
            }
        }
        *self.replica(n) = PartitionReplica::new(n, self.config, ReplicaLog::new());
        self.leader_hw[n.0 as usize] = None;
        let now = self.now;
        self.replica(n).apply_state(state, now);
    }

    /// The process dies: its log survives, messages to it are lost.
    fn crash(&mut self, n: NodeId) {
        self.brokers[n.0 as usize].alive = false;
        self.net.retain(|(_, m)| m.to() != Some(n));
        let live = self.live();
        let next = self.controller.on_broker_down(n, &live, false);
        self.commit(next);
    }

    /// A new process over the old log, whose HW comes back from a
    /// checkpoint that may lag.
    fn restart(&mut self, n: NodeId) {
        let mut log = self.broker(n).replica.log().clone();
        let (start, hw) = (log.log_start().0, log.high_watermark().0);
        log.set_high_watermark(Offset(
            start + self.rng.below((hw - start) as u64 + 1) as i64,
        ));
        let b = &mut self.brokers[n.0 as usize];
        b.replica = PartitionReplica::new(n, self.config, log);
        b.alive = true;
        self.leader_hw[n.0 as usize] = None;
        let live = self.live();
        let next = self.controller.on_broker_up(&live, false);
        self.commit(next);
        self.publish();
    }

    /// The controller stops hearing from `n`, which keeps running on
    /// what it last knew: a deposed leader that does not know it yet.
    fn fence(&mut self, n: NodeId) {
        self.brokers[n.0 as usize].fenced = true;
        let live = self.live();
        let next = self.controller.on_broker_down(n, &live, false);
        self.commit(next);
    }

    fn unfence(&mut self, n: NodeId) {
        self.brokers[n.0 as usize].fenced = false;
        let live = self.live();
        let next = self.controller.on_broker_up(&live, false);
        self.commit(next);
        self.publish();
    }

    /// Sends proposals on; returns the acks=all batches acknowledged.
    fn drain_events(&mut self) -> Vec<Batch> {
        let mut acks = Vec::new();
        for i in 0..self.brokers.len() {
            let alive = self.brokers[i].alive;
            for e in self.brokers[i].replica.take_events() {
                match e {
                    Event::ProposeIsr(p) if alive => self.send(Msg::Propose(p)),
                    Event::ProposeIsr(_) => {}
                    Event::RefusedTruncation { .. } => {
                        panic!("replica {i} was asked to cut committed records: {e:?}")
                    }
                    Event::Produced { ticket, result } => {
                        let batch = self.parked.remove(&ticket).expect("a parked ticket");
                        if let Ok(last) = result {
                            assert_eq!(last, batch.2, "acknowledged the wrong offset");
                            acks.push(batch);
                        }
                    }
                }
            }
        }
        acks
    }

    /// The invariants, after every step.
    fn check(&mut self) {
        for b in &self.brokers {
            self.committed.observe(b.replica.node(), b.replica.log());
        }
        for (i, b) in self.brokers.iter().enumerate() {
            let Some(epoch) = b.replica.leader_epoch() else {
                continue;
            };
            if !b.alive || !b.replica.is_leader_in(epoch) {
                continue;
            }
            let hw = b.replica.log().high_watermark();
            if let Some((e, before)) = self.leader_hw[i] {
                assert!(e != epoch || hw >= before, "leader HW went back");
            }
            self.leader_hw[i] = Some((epoch, hw));
        }
        if let Some(l) = self.controller.leader {
            let r = &self.broker(l).replica;
            if self.broker(l).alive && r.is_leader_in(self.controller.leader_epoch) {
                let end = self.committed.end;
                assert!(
                    r.log().log_end() >= end,
                    "leader {l} lacks committed records"
                );
                assert_eq!(
                    r.log().epochs_below(end),
                    self.committed.epochs,
                    "leader {l} rewrote committed records"
                );
            }
        }
    }

    /// An acknowledged acks=all batch is committed, where it was written.
    fn check_ack(&mut self, (epoch, first, last): Batch) {
        assert_eq!(
            self.committed.epoch_at(first),
            Some(epoch),
            "ack of uncommitted {first}"
        );
        assert_eq!(
            self.committed.epoch_at(last),
            Some(epoch),
            "ack of uncommitted {last}"
        );
        self.acked.push((epoch, first, last));
    }

    /// With chaos over, every broker back and no message lost, the
    /// replicas converge: one log, fully committed, full ISR.
    fn settle(&mut self) {
        self.chaos = false;
        for n in NODES {
            if !self.broker(n).alive {
                self.restart(n);
            }
            if self.broker(n).fenced {
                self.unfence(n);
            }
        }
        if self.controller.reassigning() || self.controller.replicas.len() < NODES.len() {
            let live = self.live();
            let back = self.controller.reassign(&NODES, &live);
            self.commit(Some(back.expect("a replica is in sync")));
        }
        // A replica a reassignment added copies the whole log, as little
        // as one record per fetch.
        for _ in 0..100_000 {
            match self.rng.below(10) {
                0..=3 => self.follower_sends(),
                4..=7 => self.deliver(),
                8 => self.publish(),
                _ => {
                    self.now += 50;
                    let now = self.now;
                    self.brokers.iter_mut().for_each(|b| b.replica.tick(now));
                }
            }
            let acks = self.drain_events();
            self.check();
            acks.into_iter().for_each(|a| self.check_ack(a));
            if self.converged() {
                for &(epoch, first, last) in &self.acked {
                    assert_eq!(self.committed.epoch_at(first), Some(epoch));
                    assert_eq!(self.committed.epoch_at(last), Some(epoch));
                }
                return;
            }
        }
        panic!(
            "replicas never converged: controller {:?}, logs {:?}",
            self.controller,
            self.brokers.iter().map(|b| &b.replica).collect::<Vec<_>>()
        );
    }

    fn converged(&self) -> bool {
        let Some(l) = self.controller.leader else {
            return false;
        };
        let leader = &self.broker(l).replica;
        let log = leader.log();
        leader.is_leader_in(self.controller.leader_epoch)
            && self.controller.isr.len() == NODES.len()
            && self.brokers.iter().all(|b| {
                let other = b.replica.log();
                other.log_end() == log.log_end()
                    && other.high_watermark() == log.log_end()
                    && other.epochs_below(log.log_end()) == log.epochs_below(log.log_end())
            })
    }
}

#[test]
fn seeded_simulation_never_loses_committed_records_and_converges() {
    for seed in 0..crate::sim_rng::env_or("REPLICATION_SIM_SEEDS", 2_000) {
        let run = std::panic::catch_unwind(|| {
            let mut sim = Sim::new(seed);
            for _ in 0..400 {
                sim.step();
            }
            sim.settle();
        });
        if run.is_err() {
            panic!("replication simulation failed with seed {seed}");
        }
    }
}
