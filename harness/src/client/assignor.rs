//! Kafka's "range" partition assignor and the two consumer-protocol
//! structures a group's members exchange through the coordinator.
//!
//! ```text
//! ConsumerProtocolSubscription (JoinGroup protocol metadata, one per member):
//!   version i16 | topics [string] | user_data nullable bytes
//!   | v1+: owned_partitions [topic string, partitions [i32]]
//!   | v2+: generation_id i32 | v3+: rack_id nullable string
//! ConsumerProtocolAssignment (SyncGroup assignment, one per member):
//!   version i16 | assigned_partitions [topic string, partitions [i32]]
//!   | user_data nullable bytes
//! ```
//!
//! Both are non-flexible (no tagged fields) and versioned by their own
//! leading i16, not by the API version that carries them. Later versions
//! only append fields, so a version above the highest known one is read as
//! that one and the tail ignored, as the Java client does.
//!
//! Range, per topic: the members subscribed to it, sorted by member id,
//! each take a contiguous run of partitions; the first
//! `partitions % members` take one extra.

use super::admin::topic_name;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use sluice_protocol::messages::messages::consumer_protocol_assignment::TopicPartition as AssignedTopic;
use sluice_protocol::messages::messages::{
    ConsumerProtocolAssignment, ConsumerProtocolSubscription,
};
use sluice_protocol::messages::protocol::{Decodable, Encodable, StrBytes};
use std::collections::BTreeMap;

/// The protocol type of consumer groups and the assignor's name.
pub const PROTOCOL_TYPE: &str = "consumer";
pub const RANGE: &str = "range";

/// The versions written; v0 carries all a range assignor needs.
const SUBSCRIPTION_VERSION: i16 = 0;
const ASSIGNMENT_VERSION: i16 = 0;
/// The highest versions `kafka-protocol` decodes.
const SUBSCRIPTION_VERSION_MAX: i16 = 3;
const ASSIGNMENT_VERSION_MAX: i16 = 3;
/// Topics one member may subscribe to; a count above it is a corrupt or
/// hostile metadata blob, not a workload (workloads have at most 10,000).
pub const SUBSCRIBED_TOPICS_MAX: usize = 10_000;

/// A member's partitions: topic → partition indexes, ascending.
pub type Assignment = BTreeMap<String, Vec<i32>>;

/// Encodes the JoinGroup metadata of a member subscribing to `topics`.
pub fn encode_subscription(topics: &[String]) -> Bytes {
    let body = ConsumerProtocolSubscription::default().with_topics(
        topics
            .iter()
            .map(|t| StrBytes::from_string(t.clone()))
            .collect(),
    );
    encode_versioned(SUBSCRIPTION_VERSION, &body)
}

/// The topics in a member's JoinGroup metadata.
pub fn decode_subscription(mut b: Bytes) -> Result<Vec<String>, String> {
    let version = read_version(&mut b, "subscription")?;
    let s = ConsumerProtocolSubscription::decode(&mut b, version.min(SUBSCRIPTION_VERSION_MAX))
        .map_err(|e| format!("subscription v{version}: {e}"))?;
    if s.topics.len() > SUBSCRIBED_TOPICS_MAX {
        return Err(format!(
            "subscription lists {} topics, above {SUBSCRIBED_TOPICS_MAX}",
            s.topics.len()
        ));
    }
    Ok(s.topics.iter().map(|t| t.as_str().to_string()).collect())
}

/// Encodes one member's SyncGroup assignment.
pub fn encode_assignment(a: &Assignment) -> Bytes {
    let body = ConsumerProtocolAssignment::default().with_assigned_partitions(
        a.iter()
            .map(|(t, ps)| {
                AssignedTopic::default()
                    .with_topic(topic_name(t))
                    .with_partitions(ps.clone())
            })
            .collect(),
    );
    encode_versioned(ASSIGNMENT_VERSION, &body)
}

/// A member's assignment from SyncGroup. Empty bytes mean no partitions
/// (the coordinator sends them to a member the leader left out).
pub fn decode_assignment(mut b: Bytes) -> Result<Assignment, String> {
    if b.is_empty() {
        return Ok(Assignment::new());
    }
    let version = read_version(&mut b, "assignment")?;
    let a = ConsumerProtocolAssignment::decode(&mut b, version.min(ASSIGNMENT_VERSION_MAX))
        .map_err(|e| format!("assignment v{version}: {e}"))?;
    let mut out = Assignment::new();
    for t in a.assigned_partitions {
        let ps = out.entry(t.topic.0.as_str().to_string()).or_default();
        ps.extend(t.partitions);
        ps.sort_unstable();
        ps.dedup();
    }
    Ok(out)
}

fn encode_versioned<T: Encodable>(version: i16, body: &T) -> Bytes {
    let mut out = BytesMut::new();
    out.put_i16(version);
    // Encoding plain strings and arrays into a growable buffer only fails
    // for lengths past i32::MAX, which the topic limits rule out.
    body.encode(&mut out, version)
        .expect("consumer protocol structures encode at their own version");
    out.freeze()
}

fn read_version(b: &mut Bytes, what: &str) -> Result<i16, String> {
    if b.remaining() < 2 {
        return Err(format!("{what} shorter than its version"));
    }
    let v = b.get_i16();
    if v < 0 {
        return Err(format!("{what} has negative version {v}"));
    }
    Ok(v)
}

/// Kafka's range assignment. `members` maps member id → subscribed topics;
/// `partitions` maps topic → partition count (topics missing from it are
/// not assigned). Every member appears in the result, possibly empty.
pub fn range_assign(
    members: &BTreeMap<String, Vec<String>>,
    partitions: &BTreeMap<String, i32>,
) -> BTreeMap<String, Assignment> {
    let mut out: BTreeMap<String, Assignment> = members
        .keys()
        .map(|m| (m.clone(), Assignment::new()))
        .collect();
    let mut by_topic: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    // BTreeMap iteration is by member id, so each topic's list is sorted.
    for (member, topics) in members {
        for t in topics {
            by_topic
                .entry(t.as_str())
                .or_default()
                .push(member.as_str());
        }
    }
    for (topic, subscribers) in by_topic {
        let Some(&count) = partitions.get(topic) else {
            continue;
        };
        let mut subscribers = subscribers;
        subscribers.dedup();
        let n = subscribers.len() as i32;
        let per = count.max(0) / n;
        let extra = count.max(0) % n;
        for (i, member) in subscribers.iter().enumerate() {
            let i = i as i32;
            let start = per * i + i.min(extra);
            let len = per + i32::from(i < extra);
            if len == 0 {
                continue;
            }
            let slot = out.get_mut(*member).expect("every subscriber is a member");
            slot.insert(topic.to_string(), (start..start + len).collect());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(list: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        list.iter()
            .map(|(m, ts)| (m.to_string(), ts.iter().map(|t| t.to_string()).collect()))
            .collect()
    }

    fn counts(list: &[(&str, i32)]) -> BTreeMap<String, i32> {
        list.iter().map(|(t, n)| (t.to_string(), *n)).collect()
    }

    #[test]
    fn range_gives_the_first_members_the_remainder() {
        // Kafka's documented example: two consumers, two topics of three
        // partitions; C0 gets t0p0, t0p1, t1p0, t1p1 and C1 the rest.
        let got = range_assign(
            &members(&[("c0", &["t0", "t1"]), ("c1", &["t0", "t1"])]),
            &counts(&[("t0", 3), ("t1", 3)]),
        );
        assert_eq!(got["c0"]["t0"], vec![0, 1]);
        assert_eq!(got["c0"]["t1"], vec![0, 1]);
        assert_eq!(got["c1"]["t0"], vec![2]);
        assert_eq!(got["c1"]["t1"], vec![2]);
    }

    #[test]
    fn range_covers_every_partition_once() {
        for n_members in 1..=7 {
            for n_parts in 0..=20 {
                let names: Vec<String> = (0..n_members).map(|i| format!("m-{i:02}")).collect();
                let m: BTreeMap<String, Vec<String>> = names
                    .iter()
                    .map(|n| (n.clone(), vec!["t".to_string()]))
                    .collect();
                let got = range_assign(&m, &counts(&[("t", n_parts)]));
                assert_eq!(got.len(), n_members);
                let mut all: Vec<i32> = got
                    .values()
                    .flat_map(|a| a.get("t").cloned().unwrap_or_default())
                    .collect();
                all.sort_unstable();
                assert_eq!(all, (0..n_parts).collect::<Vec<_>>());
                let sizes: Vec<usize> = got
                    .values()
                    .map(|a| a.get("t").map_or(0, Vec::len))
                    .collect();
                let (lo, hi) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
                assert!(hi - lo <= 1, "{sizes:?}");
            }
        }
    }

    #[test]
    fn members_get_only_topics_they_subscribe_to() {
        let got = range_assign(
            &members(&[("a", &["x"]), ("b", &["x", "y"])]),
            &counts(&[("x", 4), ("y", 2), ("z", 9)]),
        );
        assert_eq!(got["a"].get("x"), Some(&vec![0, 1]));
        assert_eq!(got["a"].get("y"), None);
        assert_eq!(got["b"]["x"], vec![2, 3]);
        assert_eq!(got["b"]["y"], vec![0, 1]);
    }

    #[test]
    fn subscription_and_assignment_round_trip() {
        let topics = vec!["a".to_string(), "bb".to_string()];
        let bytes = encode_subscription(&topics);
        // version 0 | array of 2 | "a" | "bb" | null user data
        assert_eq!(&bytes[..6], &[0, 0, 0, 0, 0, 2]);
        assert_eq!(decode_subscription(bytes).unwrap(), topics);
        let mut a = Assignment::new();
        a.insert("a".into(), vec![0, 3]);
        assert_eq!(decode_assignment(encode_assignment(&a)).unwrap(), a);
        assert!(decode_assignment(Bytes::new()).unwrap().is_empty());
        assert!(decode_subscription(Bytes::from_static(&[0])).is_err());
    }

    #[test]
    fn a_later_version_is_read_as_the_highest_known() {
        // A v3 subscription from a newer client, with a field appended as a
        // hypothetical v4 would: the known part is read, the tail ignored.
        let body = ConsumerProtocolSubscription::default()
            .with_topics(vec![StrBytes::from_static_str("t")])
            .with_generation_id(7);
        let mut b = BytesMut::new();
        b.put_i16(4);
        body.encode(&mut b, 3).unwrap();
        b.put_i32(-1);
        assert_eq!(decode_subscription(b.freeze()).unwrap(), vec!["t"]);
    }
}
