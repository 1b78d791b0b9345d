//! DescribeTopicPartitions (KIP-966): topics with every partition's
//! leader, leader epoch, replicas, in-sync replicas and offline replicas,
//! a page at a time. The Java admin client describes topics with it.
//!
//! Topics are answered in name order: the ones asked for, or every topic
//! when none is named. A page holds at most `response_partition_limit`
//! partitions (at least 1, at most [`PARTITIONS_PER_PAGE_MAX`]); when it
//! stops early, `next_cursor` names the topic and partition the next page
//! starts at, and the client sends the same request with that cursor.
//! A named topic that does not exist is answered UNKNOWN_TOPIC_OR_PARTITION
//! (INVALID_TOPIC_EXCEPTION for a name no topic may have) and takes no
//! room in the page. A cursor whose topic is not among those named, or
//! whose partition is negative, is INVALID_REQUEST.
//!
//! Sluice elects leaders from the in-sync replicas only, so the
//! eligible-leader-replica lists of KIP-966's part 1 are always empty.

use super::{Ctx, HandlerError, Reply};
use crate::metadata::{Snapshot, TopicMeta};
use crate::security::acl::{Operation, ResourceType};
use bytes::Bytes;
use kafka_protocol::messages::describe_topic_partitions_response::{
    Cursor, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use sluice_protocol::ErrorCode;
use std::collections::HashSet;

/// The most partitions one answer carries, whatever the client asks
/// (Kafka's `max.request.partition.size.limit` default).
pub const PARTITIONS_PER_PAGE_MAX: usize = 2000;

/// One topic of a page.
#[derive(Debug, PartialEq, Eq)]
enum Entry {
    /// Partitions `from..to` of a topic that exists.
    Known { name: String, from: i32, to: i32 },
    /// A named topic that does not exist.
    Missing { name: String },
}

/// One answer's worth of topics, and where the next page starts.
#[derive(Debug, PartialEq, Eq)]
struct Page {
    entries: Vec<Entry>,
    next: Option<(String, i32)>,
}

/// Lays out a page. `named`: the topics asked for, or `None` for all of
/// `existing` (name, partition count). `limit`: partitions per page.
fn page(
    named: Option<Vec<String>>,
    existing: &dyn Fn(&str) -> Option<i32>,
    all: Vec<String>,
    cursor: Option<(String, i32)>,
    limit: usize,
) -> Result<Page, String> {
    let start = cursor.as_ref().map_or("", |(t, _)| t.as_str());
    let listing_all = named.is_none();
    let mut names: Vec<String> = named
        .unwrap_or(all)
        .into_iter()
        .filter(|n| n.as_str() >= start)
        .collect();
    names.sort();
    names.dedup();
    if let Some((topic, partition)) = &cursor {
        if !listing_all && !names.contains(topic) {
            return Err(format!(
                "the cursor's topic {topic} is not among those named"
            ));
        }
        if *partition < 0 {
            return Err(format!("the cursor's partition {partition} is negative"));
        }
    }
    let mut remaining = limit;
    let mut entries = Vec::new();
    for name in names {
        if remaining == 0 {
            return Ok(Page {
                entries,
                next: Some((name, 0)),
            });
        }
        let Some(count) = existing(&name) else {
            if !listing_all {
                entries.push(Entry::Missing { name });
            }
            continue;
        };
        let from = match &cursor {
            Some((t, p)) if *t == name => *p,
            _ => 0,
        };
        let to = count.min(from.saturating_add(remaining as i32));
        let stopped = to < count;
        if to > from {
            remaining -= (to - from) as usize;
        }
        entries.push(Entry::Known {
            name: name.clone(),
            from,
            to: to.max(from),
        });
        if stopped {
            return Ok(Page {
                entries,
                next: Some((name, to)),
            });
        }
    }
    Ok(Page {
        entries,
        next: None,
    })
}

pub fn handle(ctx: &Ctx<'_>, body: Bytes) -> Result<Reply, HandlerError> {
    let req: DescribeTopicPartitionsRequest = ctx.decode(body)?;
    let snapshot = ctx.shard.metadata();
    let named: Option<Vec<String>> =
        (!req.topics.is_empty()).then(|| req.topics.iter().map(|t| t.name.0.to_string()).collect());
    let cursor = req
        .cursor
        .as_ref()
        .map(|c| (c.topic_name.0.to_string(), c.partition_index));
    let limit = usize::try_from(req.response_partition_limit)
        .unwrap_or(0)
        .clamp(1, PARTITIONS_PER_PAGE_MAX);
    // Topics the client may not DESCRIBE: left out of an all-topics
    // answer, TOPIC_AUTHORIZATION_FAILED when named.
    let may_describe = |name: &str| ctx.allowed(Operation::Describe, ResourceType::Topic, name);
    let denied: HashSet<String> = named
        .iter()
        .flatten()
        .filter(|n| !may_describe(n))
        .cloned()
        .collect();
    let topic = ResourceType::Topic;
    let existing = |name: &str| {
        snapshot
            .topic(name)
            .filter(|_| !denied.contains(name))
            .map(|t| t.partitions)
    };
    let all = match named {
        Some(_) => Vec::new(),
        None => snapshot
            .topics
            .keys()
            .filter(|n| may_describe(n))
            .cloned()
            .collect(),
    };
    let page = match page(named, &existing, all, cursor, limit) {
        Ok(page) => page,
        Err(message) => {
            tracing::debug!(%message, "DescribeTopicPartitions refused");
            let topics = req
                .topics
                .iter()
                .map(|t| {
                    DescribeTopicPartitionsResponseTopic::default()
                        .with_name(Some(t.name.clone()))
                        .with_error_code(ErrorCode::InvalidRequest.code())
                })
                .collect();
            return ctx.respond(&DescribeTopicPartitionsResponse::default().with_topics(topics));
        }
    };
    let topics = page
        .entries
        .into_iter()
        .map(|e| match e {
            Entry::Known { name, from, to } => {
                let meta = snapshot
                    .topic(&name)
                    .expect("page() saw it in this snapshot");
                known(&snapshot, meta, from, to)
                    .with_topic_authorized_operations(ctx.authorized_operations(topic, &name))
            }
            Entry::Missing { name } => {
                let code = match crate::metadata::validate_topic_name(&name) {
                    _ if denied.contains(&name) => ErrorCode::TopicAuthorizationFailed,
                    Ok(()) => ErrorCode::UnknownTopicOrPartition,
                    Err(_) => ErrorCode::InvalidTopicException,
                };
                DescribeTopicPartitionsResponseTopic::default()
                    .with_error_code(code.code())
                    .with_name(Some(TopicName(StrBytes::from_string(name.clone()))))
                    .with_is_internal(crate::metadata::is_internal(&name))
                    .with_topic_authorized_operations(ctx.authorized_operations(topic, &name))
            }
        })
        .collect();
    let next_cursor = page.next.map(|(topic, partition)| {
        Cursor::default()
            .with_topic_name(TopicName(StrBytes::from_string(topic)))
            .with_partition_index(partition)
    });
    ctx.respond(
        &DescribeTopicPartitionsResponse::default()
            .with_topics(topics)
            .with_next_cursor(next_cursor),
    )
}

/// Partitions `from..to` of `t`.
fn known(
    snapshot: &Snapshot,
    t: &TopicMeta,
    from: i32,
    to: i32,
) -> DescribeTopicPartitionsResponseTopic {
    let ids = |nodes: &[crate::replication::NodeId]| nodes.iter().map(|n| BrokerId(n.0)).collect();
    let live =
        |n: &crate::replication::NodeId| snapshot.brokers.get(&n.0).is_some_and(|b| !b.fenced);
    let partitions = (from..to)
        .filter_map(|index| Some((index, t.partition(index)?)))
        .map(|(index, state)| {
            let offline = state
                .replicas
                .iter()
                .filter(|n| !live(n))
                .map(|n| BrokerId(n.0))
                .collect();
            let leader = state.leader.filter(live).map_or(-1, |n| n.0);
            DescribeTopicPartitionsResponsePartition::default()
                .with_partition_index(index)
                .with_leader_id(BrokerId(leader))
                .with_leader_epoch(state.leader_epoch.0)
                .with_replica_nodes(ids(&state.replicas))
                .with_isr_nodes(ids(&state.isr))
                .with_eligible_leader_replicas(Some(Vec::new()))
                .with_last_known_elr(Some(Vec::new()))
                .with_offline_replicas(offline)
        })
        .collect();
    DescribeTopicPartitionsResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(t.name.clone()))))
        .with_topic_id(t.id)
        .with_is_internal(crate::metadata::is_internal(&t.name))
        .with_partitions(partitions)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics() -> Vec<(String, i32)> {
        vec![("a".into(), 3), ("b".into(), 1), ("c".into(), 4)]
    }

    fn run(
        named: Option<&[&str]>,
        cursor: Option<(&str, i32)>,
        limit: usize,
    ) -> Result<Page, String> {
        let t = topics();
        let existing = |n: &str| t.iter().find(|(name, _)| name == n).map(|(_, c)| *c);
        let all = t.iter().map(|(n, _)| n.clone()).collect();
        let named = named.map(|ns| ns.iter().map(|n| n.to_string()).collect());
        page(
            named,
            &existing,
            all,
            cursor.map(|(t, p)| (t.to_string(), p)),
            limit,
        )
    }

    fn known(name: &str, from: i32, to: i32) -> Entry {
        Entry::Known {
            name: name.into(),
            from,
            to,
        }
    }

    #[test]
    fn pages_walk_every_partition_once_in_name_order() {
        let mut cursor: Option<(String, i32)> = None;
        let mut seen = Vec::new();
        for _ in 0..10 {
            let c = cursor.as_ref().map(|(t, p)| (t.as_str(), *p));
            let p = run(None, c, 3).unwrap();
            let size: i32 = p
                .entries
                .iter()
                .map(|e| match e {
                    Entry::Known { from, to, .. } => to - from,
                    Entry::Missing { .. } => 0,
                })
                .sum();
            assert!(size <= 3, "{p:?}");
            for e in &p.entries {
                if let Entry::Known { name, from, to } = e {
                    seen.extend((*from..*to).map(|i| (name.clone(), i)));
                }
            }
            cursor = p.next;
            if cursor.is_none() {
                break;
            }
        }
        let want: Vec<(String, i32)> = topics()
            .into_iter()
            .flat_map(|(n, c)| (0..c).map(move |i| (n.clone(), i)))
            .collect();
        assert_eq!(seen, want);
    }

    #[test]
    fn a_page_stops_inside_a_topic_or_before_the_next() {
        let p = run(None, None, 3).unwrap();
        assert_eq!(p.entries, vec![known("a", 0, 3)]);
        assert_eq!(p.next, Some(("b".into(), 0)), "full: the next topic starts");
        let p = run(None, None, 2).unwrap();
        assert_eq!(p.entries, vec![known("a", 0, 2)]);
        assert_eq!(p.next, Some(("a".into(), 2)));
        let p = run(None, Some(("c", 2)), 100).unwrap();
        assert_eq!(p.entries, vec![known("c", 2, 4)]);
        assert_eq!(p.next, None);
    }

    #[test]
    fn named_topics_are_sorted_and_missing_ones_take_no_room() {
        let p = run(Some(&["c", "zz", "a"]), None, 8).unwrap();
        assert_eq!(
            p.entries,
            vec![
                known("a", 0, 3),
                known("c", 0, 4),
                Entry::Missing { name: "zz".into() }
            ]
        );
        assert_eq!(p.next, None);
    }

    #[test]
    fn bad_cursors_are_refused() {
        assert!(run(Some(&["a"]), Some(("b", 0)), 10).is_err());
        assert!(run(None, Some(("a", -1)), 10).is_err());
        // A cursor past the last topic is an empty page.
        assert_eq!(run(None, Some(("zz", 0)), 10).unwrap().entries, vec![]);
    }
}
