//! `sluice-bench`: run, validate and compare benchmark workloads.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "sluice-bench",
    version,
    about = "Replays YAML workloads against Kafka-compatible brokers and reports latency"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Parse a workload, expand its sweep and print the points; run nothing.
    Validate {
        workload: PathBuf,
        /// An OpenMessaging Benchmark Kafka driver file.
        #[arg(long)]
        driver: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { workload, driver } => {
            match sluice_harness::workload::load(&workload, driver.as_deref()) {
                Ok(f) => {
                    print!("{}", sluice_harness::workload::describe(&f));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
            }
        }
    }
}
