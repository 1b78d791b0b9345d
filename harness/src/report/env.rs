//! The environment a run was measured in, so two runs can be judged
//! comparable or not.

use serde::{Deserialize, Serialize};
use std::process::Command;

#[derive(Clone, Debug, Serialize, Deserialize, Default)]
pub struct Environment {
    pub git_commit: Option<String>,
    pub cpu_model: Option<String>,
    pub cores: usize,
    pub kernel: Option<String>,
    pub harness_version: String,
    /// `embedded` or the bootstrap address.
    pub target: String,
    /// The broker's software and version: `sluice <version>` for the
    /// embedded broker, else `--target-name` (Kafka's protocol has no
    /// field in which a broker names its software).
    pub broker_version: Option<String>,
    /// What the broker told of itself: its API version ranges and
    /// finalized features (ApiVersions), which tell releases apart.
    #[serde(default)]
    pub broker_protocol: Option<String>,
    /// How the harness's clients connect: protocol, SASL mechanism and
    /// user, never a secret.
    #[serde(default)]
    pub security: Vec<String>,
    /// Broker settings known to the harness (embedded mode).
    pub broker_config: Vec<(String, String)>,
}

impl Environment {
    pub fn capture(target: &str) -> Environment {
        Environment {
            git_commit: run("git", &["rev-parse", "HEAD"]),
            cpu_model: std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|c| {
                c.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            }),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            kernel: run("uname", &["-r"]),
            harness_version: env!("CARGO_PKG_VERSION").to_string(),
            target: target.to_string(),
            broker_version: None,
            broker_protocol: None,
            security: Vec::new(),
            broker_config: Vec::new(),
        }
    }
}

fn run(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}
