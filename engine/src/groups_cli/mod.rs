//! `sluice groups`: consumer groups as `kafka-consumer-groups.sh` shows
//! them.
//!
//! ```text
//! sluice groups list              [--bootstrap HOST:PORT] [--timeout-ms MS]
//! sluice groups describe GROUP    [--bootstrap HOST:PORT] [--timeout-ms MS]
//! sluice groups delete GROUP      [--bootstrap HOST:PORT] [--timeout-ms MS]
//! ```
//!
//! Tables go to stdout; errors go to stderr, one line, and the exit status
//! is 1.

pub(crate) mod report;

use crate::admin_client::{AdminClient, AdminError, ErrorName};
use kafka_protocol::error::ResponseError;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

/// What `sluice groups` can do.
#[derive(clap::Subcommand, Debug)]
pub enum GroupsCommand {
    /// List consumer groups: id, state and protocol type.
    List {
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Show a group's state and members, and per partition its committed
    /// offset, log-end offset and lag.
    Describe {
        /// The group id.
        group: String,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Delete a group that has no active members, with its committed
    /// offsets.
    Delete {
        /// The group id.
        group: String,
        #[command(flatten)]
        conn: ConnArgs,
    },
}

/// Where the cluster is and how long to wait for it.
#[derive(clap::Args, Debug)]
pub struct ConnArgs {
    /// Any broker of the cluster.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// Bound on each connect, read and write, and on retrying while the
    /// group coordinator loads.
    #[arg(long, value_name = "MS", default_value_t = 30_000)]
    timeout_ms: u64,
}

impl ConnArgs {
    pub(crate) fn client(&self) -> Result<AdminClient, AdminError> {
        AdminClient::connect(&self.bootstrap, Duration::from_millis(self.timeout_ms))
    }
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("{0}")]
    Admin(#[from] AdminError),
    #[error("cannot delete consumer group '{0}': it has active members ({name})", name = ErrorName(ResponseError::NonEmptyGroup))]
    NotEmpty(String),
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
}

/// Runs the command, printing its table or its error.
pub fn run(command: &GroupsCommand) -> ExitCode {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match execute(command, &mut out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = out.flush();
            eprintln!("sluice groups: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn execute(command: &GroupsCommand, out: &mut impl Write) -> Result<(), CliError> {
    match command {
        GroupsCommand::List { conn } => {
            let groups = conn.client()?.list_groups()?;
            out.write_all(report::render_list(&groups).as_bytes())?;
        }
        GroupsCommand::Describe { group, conn } => describe(group, conn, out)?,
        GroupsCommand::Delete { group, conn } => {
            match conn.client()?.delete_group(group) {
                Err(AdminError::Broker {
                    error: ResponseError::NonEmptyGroup,
                    ..
                }) => return Err(CliError::NotEmpty(group.clone())),
                other => other?,
            }
            writeln!(out, "Deleted consumer group '{group}'.")?;
        }
    }
    out.flush()?;
    Ok(())
}

fn describe(group: &str, conn: &ConnArgs, out: &mut impl Write) -> Result<(), CliError> {
    let mut client = conn.client()?;
    let description = client.describe_group(group)?;
    let committed = client.committed_offsets(group)?;
    let partitions = report::partitions_of(&description, &committed);
    let log_ends = client.log_end_offsets(&partitions)?;
    for (tp, end) in &log_ends {
        if let Err(e) = end {
            eprintln!(
                "sluice groups: warning: log-end offset of {}-{} unknown: {}",
                tp.topic,
                tp.partition,
                ErrorName(*e)
            );
        }
    }
    let rows = report::partition_rows(&description, &committed, &log_ends);
    out.write_all(report::render_describe(&description, &rows).as_bytes())?;
    Ok(())
}
