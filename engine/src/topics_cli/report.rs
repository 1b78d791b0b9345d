//! The tables `sluice topics` and `sluice configs` print. Pure functions,
//! tested here.

use crate::admin_client::{ConfigEntry, TopicDescription};
use crate::groups_cli::report::render_table;
use serde::Serialize;

/// One line of `topics list --json`.
#[derive(Serialize)]
pub struct ListEntry<'a> {
    pub name: &'a str,
    pub partitions: usize,
    pub replication_factor: usize,
    pub internal: bool,
}

impl ListEntry<'_> {
    pub fn of(t: &TopicDescription) -> ListEntry<'_> {
        ListEntry {
            name: &t.name,
            partitions: t.partitions.len(),
            replication_factor: replication_factor(t),
            internal: t.internal,
        }
    }
}

/// The most replicas any partition has (they all have the same unless a
/// reassignment is under way).
fn replication_factor(t: &TopicDescription) -> usize {
    t.partitions
        .iter()
        .map(|p| p.replicas.len())
        .max()
        .unwrap_or(0)
}

pub fn render_list(topics: &[TopicDescription]) -> String {
    let rows: Vec<Vec<String>> = topics
        .iter()
        .map(|t| {
            vec![
                t.name.clone(),
                t.partitions.len().to_string(),
                replication_factor(t).to_string(),
            ]
        })
        .collect();
    render_table(&["TOPIC", "PARTITIONS", "REPLICATION-FACTOR"], &rows)
}

/// One row per partition, as `kafka-topics.sh --describe` shows them.
pub fn render_describe(topics: &[TopicDescription]) -> String {
    let rows: Vec<Vec<String>> = topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(move |p| {
                vec![
                    t.name.clone(),
                    p.partition.to_string(),
                    if p.leader < 0 {
                        "none".to_string()
                    } else {
                        p.leader.to_string()
                    },
                    p.leader_epoch.to_string(),
                    ids(&p.replicas),
                    ids(&p.isr),
                    if p.offline.is_empty() {
                        "-".to_string()
                    } else {
                        ids(&p.offline)
                    },
                    p.error.clone().unwrap_or_else(|| "-".to_string()),
                ]
            })
        })
        .collect();
    render_table(
        &[
            "TOPIC",
            "PARTITION",
            "LEADER",
            "EPOCH",
            "REPLICAS",
            "ISR",
            "OFFLINE",
            "ERROR",
        ],
        &rows,
    )
}

pub fn render_configs(entries: &[ConfigEntry]) -> String {
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            let value = match (&e.value, e.sensitive) {
                (_, true) => "(sensitive)".to_string(),
                (Some(v), false) => v.clone(),
                (None, false) => "null".to_string(),
            };
            vec![
                e.name.clone(),
                value,
                e.source.clone(),
                if e.read_only { "yes" } else { "no" }.to_string(),
            ]
        })
        .collect();
    render_table(&["NAME", "VALUE", "SOURCE", "READ-ONLY"], &rows)
}

fn ids(ids: &[i32]) -> String {
    ids.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin_client::PartitionDescription;

    fn topic() -> TopicDescription {
        TopicDescription {
            name: "orders".into(),
            id: None,
            internal: false,
            partitions: vec![
                PartitionDescription {
                    partition: 0,
                    leader: 1,
                    leader_epoch: 3,
                    replicas: vec![1, 2, 3],
                    isr: vec![1, 2],
                    offline: vec![],
                    error: None,
                },
                PartitionDescription {
                    partition: 1,
                    leader: -1,
                    leader_epoch: 4,
                    replicas: vec![2, 3, 1],
                    isr: vec![],
                    offline: vec![2, 3, 1],
                    error: Some("LEADER_NOT_AVAILABLE (5)".into()),
                },
            ],
        }
    }

    #[test]
    fn list_shows_partitions_and_replication_factor() {
        let table = render_list(&[topic()]);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("TOPIC"));
        let cells: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(cells, ["orders", "2", "3"]);
    }

    #[test]
    fn describe_shows_a_leaderless_partition_and_its_error() {
        let table = render_describe(&[topic()]);
        let rows: Vec<Vec<&str>> = table
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(rows[0], ["orders", "0", "1", "3", "1,2,3", "1,2", "-", "-"]);
        assert_eq!(rows[1][2], "none");
        assert_eq!(rows[1][6], "2,3,1");
        assert_eq!(rows[1][7], "LEADER_NOT_AVAILABLE");
    }

    #[test]
    fn sensitive_values_are_never_printed() {
        let table = render_configs(&[ConfigEntry {
            name: "sasl.jaas.config".into(),
            value: Some("secret".into()),
            source: "STATIC_BROKER_CONFIG".into(),
            read_only: true,
            sensitive: true,
        }]);
        assert!(!table.contains("secret"));
        assert!(table.contains("(sensitive)"));
    }
}
