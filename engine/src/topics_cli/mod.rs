//! `sluice topics` and `sluice configs`: topics and their configs as
//! `kafka-topics.sh` and `kafka-configs.sh` show them, through the admin
//! APIs of any running cluster (Sluice or Kafka).
//!
//! ```text
//! sluice topics list                        [--json]
//! sluice topics describe [TOPIC]...         [--json]
//! sluice topics create TOPIC [--partitions N] [--replication-factor N] [--config KEY=VALUE]...
//! sluice topics delete TOPIC...
//! sluice topics alter-config TOPIC [--set KEY=VALUE]... [--delete KEY]...
//! sluice configs describe (--topic NAME | --broker ID) [--all] [--json]
//! ```
//! Every command takes `--bootstrap HOST:PORT` and `--timeout-ms MS`.
//! Tables (or JSON with `--json`) go to stdout; errors go to stderr, one
//! line, and the exit status is 1.

mod report;

use crate::admin_client::{AdminClient, AdminError, ConfigResource, NewTopic};
use crate::groups_cli::ConnArgs;
use std::io::Write;
use std::process::ExitCode;

/// What `sluice topics` can do.
#[derive(clap::Subcommand, Debug)]
pub enum TopicsCommand {
    /// List topic names with their partition count and replication factor.
    List {
        #[command(flatten)]
        conn: ConnArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Each partition's leader, replicas and in-sync replicas (all topics
    /// when none is named).
    Describe {
        topics: Vec<String>,
        #[command(flatten)]
        conn: ConnArgs,
        #[arg(long)]
        json: bool,
    },
    /// Create a topic.
    Create {
        topic: String,
        /// Partitions (default: the broker's `num.partitions`).
        #[arg(long, value_name = "N")]
        partitions: Option<i32>,
        /// Replicas per partition (default: the broker's
        /// `default.replication.factor`).
        #[arg(long, value_name = "N")]
        replication_factor: Option<i16>,
        /// A topic config override; repeat for several.
        #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_key_value)]
        configs: Vec<(String, String)>,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Delete topics and their data.
    Delete {
        #[arg(required = true)]
        topics: Vec<String>,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Set or remove a topic's config overrides.
    AlterConfig {
        topic: String,
        /// Set KEY to VALUE; repeat for several.
        #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_key_value)]
        set: Vec<(String, String)>,
        /// Remove an override, so the broker default applies again.
        #[arg(long = "delete", value_name = "KEY")]
        delete: Vec<String>,
        #[command(flatten)]
        conn: ConnArgs,
    },
}

/// What `sluice configs` can do.
#[derive(clap::Subcommand, Debug)]
pub enum ConfigsCommand {
    /// A topic's or a broker's configs: name, value and where the value
    /// comes from.
    Describe {
        #[arg(
            long,
            value_name = "NAME",
            conflicts_with = "broker",
            required_unless_present = "broker"
        )]
        topic: Option<String>,
        #[arg(long, value_name = "ID")]
        broker: Option<i32>,
        /// Show defaults too, not only values set explicitly.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        conn: ConnArgs,
        #[arg(long)]
        json: bool,
    },
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(format!("'{s}' is not KEY=VALUE")),
    }
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("{0}")]
    Admin(#[from] AdminError),
    #[error("nothing to change: give --set KEY=VALUE or --delete KEY")]
    NothingToAlter,
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
}

/// Runs a `sluice topics` command.
pub fn run_topics(command: &TopicsCommand) -> ExitCode {
    finish("topics", |out| topics(command, out))
}

/// Runs a `sluice configs` command.
pub fn run_configs(command: &ConfigsCommand) -> ExitCode {
    finish("configs", |out| configs(command, out))
}

fn finish(
    name: &str,
    body: impl FnOnce(&mut std::io::StdoutLock<'static>) -> Result<(), CliError>,
) -> ExitCode {
    let mut out = std::io::stdout().lock();
    let result = body(&mut out).and_then(|()| Ok(out.flush()?));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = out.flush();
            eprintln!("sluice {name}: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn client(conn: &ConnArgs) -> Result<AdminClient, CliError> {
    Ok(conn.client()?)
}

fn topics(command: &TopicsCommand, out: &mut impl Write) -> Result<(), CliError> {
    match command {
        TopicsCommand::List { conn, json } => {
            let topics = client(conn)?.describe_topics(&[])?;
            if *json {
                let list: Vec<_> = topics.iter().map(report::ListEntry::of).collect();
                writeln!(out, "{}", to_json(&list))?;
            } else {
                out.write_all(report::render_list(&topics).as_bytes())?;
            }
        }
        TopicsCommand::Describe { topics, conn, json } => {
            let described = client(conn)?.describe_topics(topics)?;
            if *json {
                writeln!(out, "{}", to_json(&described))?;
            } else {
                out.write_all(report::render_describe(&described).as_bytes())?;
            }
        }
        TopicsCommand::Create {
            topic,
            partitions,
            replication_factor,
            configs,
            conn,
        } => {
            client(conn)?.create_topic(&NewTopic {
                name: topic.clone(),
                partitions: partitions.unwrap_or(-1),
                replication_factor: replication_factor.unwrap_or(-1),
                configs: configs.clone(),
            })?;
            writeln!(out, "Created topic {topic}.")?;
        }
        TopicsCommand::Delete { topics, conn } => {
            client(conn)?.delete_topics(topics)?;
            for t in topics {
                writeln!(out, "Deleted topic {t}.")?;
            }
        }
        TopicsCommand::AlterConfig {
            topic,
            set,
            delete,
            conn,
        } => {
            if set.is_empty() && delete.is_empty() {
                return Err(CliError::NothingToAlter);
            }
            client(conn)?.alter_configs(&ConfigResource::Topic(topic.clone()), set, delete)?;
            writeln!(out, "Altered the configs of topic {topic}.")?;
        }
    }
    Ok(())
}

fn configs(command: &ConfigsCommand, out: &mut impl Write) -> Result<(), CliError> {
    let ConfigsCommand::Describe {
        topic,
        broker,
        all,
        conn,
        json,
    } = command;
    let resource = match (topic, broker) {
        (Some(t), _) => ConfigResource::Topic(t.clone()),
        (None, Some(id)) => ConfigResource::Broker(*id),
        (None, None) => unreachable!("clap requires --topic or --broker"),
    };
    let entries = client(conn)?.describe_configs(&resource, *all)?;
    if *json {
        writeln!(out, "{}", to_json(&entries))?;
    } else {
        out.write_all(report::render_configs(&entries).as_bytes())?;
    }
    Ok(())
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).expect("plain data serializes")
}
