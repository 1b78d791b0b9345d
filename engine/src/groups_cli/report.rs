//! The tables `sluice groups` prints, built from what the admin client
//! fetched. Pure functions, so the arithmetic and layout are tested here.
//!
//! The describe table follows `kafka-consumer-groups.sh --describe`: one
//! row per partition that is assigned to a member or has a committed
//! offset, with `-` where there is nothing to show.

use crate::admin_client::{GroupDescription, GroupListing, LogEnd, TopicPartition};
use std::collections::{BTreeMap, BTreeSet};

/// Shown for an absent value, as Kafka's tool does.
const ABSENT: &str = "-";

/// Spaces between table columns.
const COLUMN_GAP: usize = 2;

/// One partition of a group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionRow {
    /// The partition.
    pub tp: TopicPartition,
    /// The group's committed offset, if it committed one.
    pub committed: Option<i64>,
    /// The partition's log-end offset, if the leader answered.
    pub log_end: Option<i64>,
    /// The member it is assigned to: (member id, host, client id).
    pub owner: Option<(String, String, String)>,
}

impl PartitionRow {
    /// How far the committed offset is behind the log end.
    pub fn lag(&self) -> Option<i64> {
        lag(self.committed, self.log_end)
    }
}

/// `log_end - committed` when both are known. Negative when a commit lies
/// beyond the log end (a truncated log): shown as is, as Kafka does,
/// because it points at a real problem.
pub fn lag(committed: Option<i64>, log_end: Option<i64>) -> Option<i64> {
    log_end?.checked_sub(committed?)
}

/// Every partition the group is assigned or has committed.
pub fn partitions_of(
    group: &GroupDescription,
    committed: &BTreeMap<TopicPartition, i64>,
) -> BTreeSet<TopicPartition> {
    let assigned = group.members.iter().flat_map(|m| m.assignment.iter());
    assigned.chain(committed.keys()).cloned().collect()
}

/// The rows of the describe table, sorted by topic and partition.
pub fn partition_rows(
    group: &GroupDescription,
    committed: &BTreeMap<TopicPartition, i64>,
    log_ends: &BTreeMap<TopicPartition, LogEnd>,
) -> Vec<PartitionRow> {
    let mut owners = BTreeMap::new();
    for m in &group.members {
        for tp in &m.assignment {
            let owner = (
                m.member_id.clone(),
                m.client_host.clone(),
                m.client_id.clone(),
            );
            owners.insert(tp.clone(), owner);
        }
    }
    partitions_of(group, committed)
        .into_iter()
        .map(|tp| PartitionRow {
            committed: committed.get(&tp).copied(),
            log_end: log_ends.get(&tp).and_then(|r| r.as_ref().ok()).copied(),
            owner: owners.get(&tp).cloned(),
            tp,
        })
        .collect()
}

/// `sluice groups list`.
pub fn render_list(groups: &[GroupListing]) -> String {
    let rows: Vec<Vec<String>> = groups
        .iter()
        .map(|g| {
            vec![
                g.group_id.clone(),
                g.state.clone().unwrap_or_else(|| ABSENT.to_string()),
                or_absent(&g.protocol_type),
            ]
        })
        .collect();
    render_table(&["GROUP", "STATE", "PROTOCOL-TYPE"], &rows)
}

/// `sluice groups describe`: a summary line, the members, the partitions.
pub fn render_describe(group: &GroupDescription, rows: &[PartitionRow]) -> String {
    let mut out = String::new();
    if group.members.is_empty() {
        out.push_str(&format!(
            "Consumer group '{}' has no active members (state {}).\n",
            group.group_id, group.state
        ));
    } else {
        out.push_str(&format!(
            "Consumer group '{}': state {}, protocol {}/{}, {} member{}\n\n",
            group.group_id,
            group.state,
            or_absent(&group.protocol_type),
            or_absent(&group.protocol),
            group.members.len(),
            if group.members.len() == 1 { "" } else { "s" }
        ));
        out.push_str(&render_members(group));
    }
    out.push('\n');
    if rows.is_empty() {
        out.push_str("No partitions assigned and no offsets committed.\n");
    } else {
        out.push_str(&render_partitions(&group.group_id, rows));
    }
    out
}

fn render_members(group: &GroupDescription) -> String {
    let rows: Vec<Vec<String>> = group
        .members
        .iter()
        .map(|m| {
            vec![
                m.member_id.clone(),
                m.instance_id.clone().unwrap_or_else(|| ABSENT.to_string()),
                or_absent(&m.client_id),
                or_absent(&m.client_host),
                format_assignment(&m.assignment),
            ]
        })
        .collect();
    render_table(
        &[
            "MEMBER-ID",
            "INSTANCE-ID",
            "CLIENT-ID",
            "HOST",
            "PARTITIONS",
        ],
        &rows,
    )
}

fn render_partitions(group_id: &str, rows: &[PartitionRow]) -> String {
    let number = |n: Option<i64>| n.map_or_else(|| ABSENT.to_string(), |n| n.to_string());
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let (member, host, client) = match &r.owner {
                Some((m, h, c)) => (m.clone(), or_absent(h), or_absent(c)),
                None => (ABSENT.into(), ABSENT.into(), ABSENT.into()),
            };
            vec![
                group_id.to_string(),
                r.tp.topic.clone(),
                r.tp.partition.to_string(),
                number(r.committed),
                number(r.log_end),
                number(r.lag()),
                member,
                host,
                client,
            ]
        })
        .collect();
    render_table(
        &[
            "GROUP",
            "TOPIC",
            "PARTITION",
            "CURRENT-OFFSET",
            "LOG-END-OFFSET",
            "LAG",
            "CONSUMER-ID",
            "HOST",
            "CLIENT-ID",
        ],
        &cells,
    )
}

/// `orders(0,1),payments(3)`; `-` for none. Expects sorted input.
pub fn format_assignment(assignment: &[TopicPartition]) -> String {
    if assignment.is_empty() {
        return ABSENT.to_string();
    }
    let mut by_topic: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for tp in assignment {
        by_topic
            .entry(&tp.topic)
            .or_default()
            .push(tp.partition.to_string());
    }
    by_topic
        .into_iter()
        .map(|(t, ps)| format!("{t}({})", ps.join(",")))
        .collect::<Vec<_>>()
        .join(",")
}

/// Left-aligned columns, each as wide as its widest cell, no trailing
/// spaces. Empty cells become `-` so every line splits into the same
/// number of words.
pub fn render_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        assert_eq!(row.len(), header.len(), "row and header widths differ");
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count().max(ABSENT.len()));
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (cell, w) in row.iter().zip(&widths) {
            let cell = if cell.is_empty() { ABSENT } else { cell };
            line.push_str(cell);
            line.extend(std::iter::repeat_n(
                ' ',
                w - cell.chars().count() + COLUMN_GAP,
            ));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn or_absent(s: &str) -> String {
    if s.is_empty() {
        ABSENT.to_string()
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin_client::MemberDescription;
    use kafka_protocol::error::ResponseError;

    fn tp(t: &str, p: i32) -> TopicPartition {
        TopicPartition::new(t, p)
    }

    fn group(members: Vec<MemberDescription>) -> GroupDescription {
        GroupDescription {
            group_id: "g".into(),
            state: if members.is_empty() {
                "Empty"
            } else {
                "Stable"
            }
            .into(),
            protocol_type: "consumer".into(),
            protocol: "range".into(),
            members,
        }
    }

    fn member(id: &str, assignment: Vec<TopicPartition>) -> MemberDescription {
        MemberDescription {
            member_id: id.into(),
            instance_id: None,
            client_id: format!("client-{id}"),
            client_host: "/127.0.0.1".into(),
            assignment,
        }
    }

    #[test]
    fn lag_is_log_end_minus_committed() {
        assert_eq!(lag(Some(4), Some(10)), Some(6));
        assert_eq!(lag(Some(10), Some(10)), Some(0));
        assert_eq!(lag(None, Some(10)), None);
        assert_eq!(lag(Some(3), None), None);
        assert_eq!(lag(Some(12), Some(10)), Some(-2));
        assert_eq!(lag(Some(i64::MAX), Some(-2)), None, "overflow is unknown");
    }

    #[test]
    fn rows_cover_assigned_and_committed_partitions() {
        let g = group(vec![
            member("m1", vec![tp("t", 0), tp("t", 1)]),
            member("m2", vec![tp("t", 2)]),
        ]);
        // t-3 is committed but unassigned; t-1 assigned but never committed.
        let committed = BTreeMap::from([(tp("t", 0), 4), (tp("t", 2), 30), (tp("t", 3), 1)]);
        let log_ends = BTreeMap::from([
            (tp("t", 0), Ok(10)),
            (tp("t", 1), Ok(20)),
            (tp("t", 2), Ok(30)),
            (tp("t", 3), Err(ResponseError::UnknownTopicOrPartition)),
        ]);
        let rows = partition_rows(&g, &committed, &log_ends);
        let summary: Vec<_> = rows
            .iter()
            .map(|r| {
                let owner = r.owner.as_ref().map(|o| o.0.as_str());
                (r.tp.partition, r.committed, r.log_end, r.lag(), owner)
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (0, Some(4), Some(10), Some(6), Some("m1")),
                (1, None, Some(20), None, Some("m1")),
                (2, Some(30), Some(30), Some(0), Some("m2")),
                (3, Some(1), None, None, None),
            ]
        );
    }

    #[test]
    fn describe_table_has_kafkas_columns() {
        let g = group(vec![member("m1", vec![tp("t", 0), tp("t", 1)])]);
        let committed = BTreeMap::from([(tp("t", 0), 4)]);
        let log_ends = BTreeMap::from([(tp("t", 0), Ok(10)), (tp("t", 1), Ok(20))]);
        let text = render_describe(&g, &partition_rows(&g, &committed, &log_ends));
        let expected = "\
Consumer group 'g': state Stable, protocol consumer/range, 1 member

MEMBER-ID  INSTANCE-ID  CLIENT-ID  HOST        PARTITIONS
m1         -            client-m1  /127.0.0.1  t(0,1)

GROUP  TOPIC  PARTITION  CURRENT-OFFSET  LOG-END-OFFSET  LAG  CONSUMER-ID  HOST        CLIENT-ID
g      t      0          4               10              6    m1           /127.0.0.1  client-m1
g      t      1          -               20              -    m1           /127.0.0.1  client-m1
";
        assert_eq!(text, expected);
    }

    #[test]
    fn empty_group_says_so() {
        let g = group(vec![]);
        let committed = BTreeMap::from([(tp("t", 0), 7)]);
        let log_ends = BTreeMap::from([(tp("t", 0), Ok(7))]);
        let text = render_describe(&g, &partition_rows(&g, &committed, &log_ends));
        let mut lines = text.lines();
        assert_eq!(
            lines.next(),
            Some("Consumer group 'g' has no active members (state Empty).")
        );
        let last: Vec<&str> = text.lines().last().unwrap().split_whitespace().collect();
        assert_eq!(last, ["g", "t", "0", "7", "7", "0", "-", "-", "-"]);
        let nothing = render_describe(&g, &[]);
        assert!(nothing.ends_with("No partitions assigned and no offsets committed.\n"));
    }

    #[test]
    fn list_table() {
        let groups = vec![
            GroupListing {
                group_id: "orders".into(),
                state: Some("Stable".into()),
                protocol_type: "consumer".into(),
            },
            GroupListing {
                group_id: "offsets-only".into(),
                state: None,
                protocol_type: String::new(),
            },
        ];
        assert_eq!(
            render_list(&groups),
            "\
GROUP         STATE   PROTOCOL-TYPE
orders        Stable  consumer
offsets-only  -       -
"
        );
    }

    #[test]
    fn assignments_group_by_topic() {
        assert_eq!(format_assignment(&[]), "-");
        assert_eq!(
            format_assignment(&[tp("a", 0), tp("a", 1), tp("b", 3)]),
            "a(0,1),b(3)"
        );
    }
}
