//! The server-side assignors: `uniform` and `range`, as Kafka names them.
//!
//! Both are pure functions from the members' subscriptions (topic ids)
//! and the subscribed topics' partition counts to each member's target.
//!
//! - **uniform** spreads partitions so that members with the same
//!   subscription own counts differing by at most one, and is sticky: a
//!   member keeps what its previous target gave it wherever that stays
//!   balanced, so a join or leave moves few partitions (each moved
//!   partition is a revoke, a commit and a re-fetch on the client).
//! - **range** gives each member, per topic, a contiguous range of
//!   partitions in member-id order (the first `n % m` members one more),
//!   so topics with the same partition count are co-partitioned: every
//!   member gets the same partition numbers of each.

use super::{Assignment, PARTITIONS_MAX};
use std::collections::{BTreeMap, BTreeSet};
use uuid::Uuid;

/// An assignor the coordinator can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AssignorKind {
    Uniform,
    Range,
}

impl AssignorKind {
    /// The name clients ask for in `group.remote.assignor`.
    pub fn name(self) -> &'static str {
        match self {
            AssignorKind::Uniform => "uniform",
            AssignorKind::Range => "range",
        }
    }

    /// Parses a `group.consumer.assignors` entry: the short name or
    /// Kafka's class name of the same assignor.
    pub fn parse(s: &str) -> Option<AssignorKind> {
        match s.trim() {
            "uniform" | "org.apache.kafka.coordinator.group.assignor.UniformAssignor" => {
                Some(AssignorKind::Uniform)
            }
            "range" | "org.apache.kafka.coordinator.group.assignor.RangeAssignor" => {
                Some(AssignorKind::Range)
            }
            _ => None,
        }
    }

    /// Each member's target.
    pub fn assign(self, members: &[AssignorMember], topics: &BTreeMap<Uuid, i32>) -> Targets {
        match self {
            AssignorKind::Uniform => uniform(members, topics),
            AssignorKind::Range => range(members, topics),
        }
    }
}

/// Parses a comma-separated `group.consumer.assignors` value.
pub fn parse_list(value: &str) -> Option<Vec<AssignorKind>> {
    let kinds: Option<Vec<AssignorKind>> = value.split(',').map(AssignorKind::parse).collect();
    kinds.filter(|k| !k.is_empty())
}

/// What an assignor knows of a member.
#[derive(Clone, Debug)]
pub struct AssignorMember {
    pub id: String,
    /// Subscribed topics that exist.
    pub topics: BTreeSet<Uuid>,
    /// The member's previous target, for stickiness.
    pub previous: Assignment,
}

/// Target assignment by member id.
pub type Targets = BTreeMap<String, Assignment>;

fn range(members: &[AssignorMember], topics: &BTreeMap<Uuid, i32>) -> Targets {
    let mut out: Targets = members
        .iter()
        .map(|m| (m.id.clone(), Assignment::new()))
        .collect();
    for (&topic, &partitions) in topics {
        let mut subscribers: Vec<&str> = members
            .iter()
            .filter(|m| m.topics.contains(&topic))
            .map(|m| m.id.as_str())
            .collect();
        if subscribers.is_empty() {
            continue;
        }
        subscribers.sort_unstable();
        let n = partitions.max(0) as usize;
        let (per, extra) = (n / subscribers.len(), n % subscribers.len());
        let mut next = 0usize;
        for (i, id) in subscribers.iter().enumerate() {
            let take = per + usize::from(i < extra);
            let ps: BTreeSet<i32> = (next..next + take).map(|p| p as i32).collect();
            next += take;
            if !ps.is_empty() {
                out.get_mut(*id).expect("listed").insert(topic, ps);
            }
        }
        assert_eq!(next, n, "range covers every partition");
    }
    out
}

fn uniform(members: &[AssignorMember], topics: &BTreeMap<Uuid, i32>) -> Targets {
    let mut owner: BTreeMap<(Uuid, i32), usize> = BTreeMap::new();
    let mut load = vec![0usize; members.len()];
    // Keep what each member had, where it still subscribes and the
    // partition still exists.
    for (i, m) in members.iter().enumerate() {
        for (t, ps) in &m.previous {
            let Some(&n) = topics.get(t).filter(|_| m.topics.contains(t)) else {
                continue;
            };
            for &p in ps.iter().filter(|&&p| p < n) {
                if let std::collections::btree_map::Entry::Vacant(e) = owner.entry((*t, p)) {
                    e.insert(i);
                    load[i] += 1;
                }
            }
        }
    }
    // Every other partition goes to its least loaded subscriber.
    for (&t, &n) in topics {
        for p in 0..n {
            if owner.contains_key(&(t, p)) {
                continue;
            }
            let least = (0..members.len())
                .filter(|&i| members[i].topics.contains(&t))
                .min_by_key(|&i| (load[i], &members[i].id));
            if let Some(i) = least {
                owner.insert((t, p), i);
                load[i] += 1;
            }
        }
    }
    balance(members, &mut owner, &mut load);
    let mut out: Targets = members
        .iter()
        .map(|m| (m.id.clone(), Assignment::new()))
        .collect();
    for ((t, p), i) in owner {
        out.get_mut(&members[i].id)
            .expect("listed")
            .entry(t)
            .or_default()
            .insert(p);
    }
    out
}

/// Moves partitions from a member to another subscriber owning at least
/// two fewer until none can move. Each move lowers the sum of squared
/// loads, so this ends; with equal subscriptions it ends with loads
/// differing by at most one.
fn balance(
    members: &[AssignorMember],
    owner: &mut BTreeMap<(Uuid, i32), usize>,
    load: &mut [usize],
) {
    let mut moves = 0usize;
    loop {
        let mut moved = false;
        let keys: Vec<(Uuid, i32)> = owner.keys().copied().collect();
        for key in keys {
            let from = owner[&key];
            let to = (0..members.len())
                .filter(|&i| members[i].topics.contains(&key.0) && load[i] + 1 < load[from])
                .min_by_key(|&i| (load[i], &members[i].id));
            if let Some(to) = to {
                owner.insert(key, to);
                load[from] -= 1;
                load[to] += 1;
                moved = true;
                moves += 1;
            }
        }
        assert!(moves <= PARTITIONS_MAX * PARTITIONS_MAX.ilog2() as usize);
        if !moved {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::consumer::count;

    fn topic(i: u8) -> Uuid {
        Uuid::from_bytes([i; 16])
    }

    fn member(id: &str, topics: &[u8]) -> AssignorMember {
        AssignorMember {
            id: id.to_string(),
            topics: topics.iter().map(|&t| topic(t)).collect(),
            previous: Assignment::new(),
        }
    }

    /// Every partition of a subscribed topic is assigned exactly once,
    /// to a subscriber.
    fn check_complete(members: &[AssignorMember], topics: &BTreeMap<Uuid, i32>, out: &Targets) {
        let mut seen = BTreeSet::new();
        for m in members {
            for (t, ps) in &out[&m.id] {
                assert!(m.topics.contains(t), "{} got an unsubscribed topic", m.id);
                for &p in ps {
                    assert!(p >= 0 && p < topics[t]);
                    assert!(seen.insert((*t, p)), "partition {p} assigned twice");
                }
            }
        }
        for (t, &n) in topics {
            if members.iter().any(|m| m.topics.contains(t)) {
                assert_eq!(seen.iter().filter(|(u, _)| u == t).count(), n as usize);
            }
        }
    }

    #[test]
    fn range_gives_contiguous_co_partitioned_ranges() {
        let members = vec![member("a", &[1, 2]), member("b", &[1, 2])];
        let topics = BTreeMap::from([(topic(1), 5), (topic(2), 5)]);
        let out = AssignorKind::Range.assign(&members, &topics);
        check_complete(&members, &topics, &out);
        assert_eq!(out["a"][&topic(1)], BTreeSet::from([0, 1, 2]));
        assert_eq!(out["b"][&topic(1)], BTreeSet::from([3, 4]));
        assert_eq!(out["a"][&topic(1)], out["a"][&topic(2)]);
    }

    #[test]
    fn uniform_is_balanced_and_sticky_on_a_join() {
        let mut members = vec![member("a", &[1]), member("b", &[1])];
        let topics = BTreeMap::from([(topic(1), 6)]);
        let first = AssignorKind::Uniform.assign(&members, &topics);
        check_complete(&members, &topics, &first);
        for m in &mut members {
            m.previous = first[&m.id].clone();
        }
        members.push(member("c", &[1]));
        let second = AssignorKind::Uniform.assign(&members, &topics);
        check_complete(&members, &topics, &second);
        for m in ["a", "b", "c"] {
            assert_eq!(count(&second[m]), 2);
        }
        for m in ["a", "b"] {
            let kept = first[m][&topic(1)]
                .intersection(&second[m][&topic(1)])
                .count();
            assert_eq!(kept, 2, "{m} keeps two of its three partitions");
        }
    }

    #[test]
    fn names_parse() {
        assert_eq!(parse_list("uniform,range").unwrap().len(), 2);
        assert_eq!(
            parse_list("org.apache.kafka.coordinator.group.assignor.RangeAssignor"),
            Some(vec![AssignorKind::Range])
        );
        assert_eq!(parse_list("sticky"), None);
        assert_eq!(parse_list(""), None);
    }

    /// Random subscriptions, partition counts and previous targets: both
    /// assignors assign everything once; uniform balances equal
    /// subscriptions to within one.
    #[test]
    fn random_groups_are_assigned_completely() {
        let mut rng = crate::sim_rng::Rng::new(7);
        for _ in 0..500 {
            let n_topics = 1 + rng.below(4) as u8;
            let topics: BTreeMap<Uuid, i32> = (0..n_topics)
                .map(|t| (topic(t), rng.below(12) as i32))
                .collect();
            let homogeneous = rng.below(2) == 0;
            let members: Vec<AssignorMember> = (0..1 + rng.below(6))
                .map(|i| {
                    let subs: Vec<u8> = (0..n_topics)
                        .filter(|_| homogeneous || rng.below(2) == 0)
                        .collect();
                    let mut m = member(&format!("m{i}"), &subs);
                    for t in 0..n_topics {
                        let ps: BTreeSet<i32> = (0..rng.below(4)).map(|p| p as i32).collect();
                        m.previous.insert(topic(t), ps);
                    }
                    m
                })
                .collect();
            for kind in [AssignorKind::Uniform, AssignorKind::Range] {
                let out = kind.assign(&members, &topics);
                check_complete(&members, &topics, &out);
                if kind == AssignorKind::Uniform && homogeneous {
                    let loads: Vec<usize> = out.values().map(count).collect();
                    let (lo, hi) = (loads.iter().min(), loads.iter().max());
                    assert!(hi.unwrap() - lo.unwrap() <= 1, "{loads:?}");
                }
            }
        }
    }
}
