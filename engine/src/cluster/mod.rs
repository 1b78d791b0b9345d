//! The cluster: brokers, the controller quorum and the metadata log.
//!
//! Cluster metadata (brokers, topics with ids, partition replicas,
//! leaders, leader epochs and ISRs) is a log replicated by Raft among
//! the voters named in `controller.quorum.voters` (raft-rs's core, driven
//! by [`quorum`]). The quorum leader is the *active controller*
//! ([`controller`]): it alone decides changes, each a proposal to the
//! log. Every broker, voter or not, replays the committed log into the
//! read-only snapshot its shards use ([`node`]).
//!
//! With `controller.quorum.voters` empty (the default) a broker is a
//! cluster of one: its own single voter, no controller listener, and the
//! same log and code path as a large cluster.

pub mod controller;
pub mod local;
pub mod node;
pub mod quorum;
pub mod raft_store;
pub mod records;
pub mod route;
pub mod rpc;
pub mod sessions;
#[cfg(test)]
mod sim_tests;

use crate::config::{BrokerConfig, ConfigError};
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

/// Milliseconds on a monotonic clock since this process first asked: the
/// clock of broker sessions and leases (a frozen process's clock runs on,
/// so it sees on waking how long it was away).
pub fn monotonic_ms() -> i64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let start = START.get_or_init(std::time::Instant::now);
    i64::try_from(start.elapsed().as_millis()).unwrap_or(i64::MAX)
}

/// What the cluster code reads from the broker config.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    pub node_id: i32,
    /// The voters and their controller listeners, in id order.
    pub voters: Vec<(u64, SocketAddr)>,
    /// Each voter's host as `controller.quorum.voters` writes it: the
    /// name its certificate must carry on a TLS controller listener.
    pub voter_hosts: Vec<(u64, String)>,
    /// `broker.session.timeout.ms`.
    pub session_timeout: Duration,
    /// `broker.heartbeat.interval.ms`.
    pub heartbeat_interval: Duration,
    /// `unclean.leader.election.enable`.
    pub unclean_default: bool,
    /// `metadata.log.max.record.bytes.between.snapshots`.
    pub snapshot_bytes: u64,
    /// How often the controller moves leadership back to preferred
    /// replicas (`leader.imbalance.check.interval.seconds`), unless
    /// `auto.leader.rebalance.enable` is off.
    pub rebalance_interval: Option<Duration>,
    /// `leader.imbalance.per.broker.percentage`.
    pub imbalance_percentage: u64,
    /// Attempts at a controlled shutdown and the pause between them
    /// (`controlled.shutdown.max.retries`, `...retry.backoff.ms`); none
    /// when `controlled.shutdown.enable` is off.
    pub controlled_shutdown: Option<(u32, Duration)>,
}

impl ClusterConfig {
    pub fn from_broker(config: &BrokerConfig) -> Result<ClusterConfig, ConfigError> {
        let text = config.get("controller.quorum.voters").unwrap_or("");
        let named = parse_voters_named(text)?;
        let voter_hosts = named.iter().map(|(id, _, h)| (*id, h.clone())).collect();
        let mut voters: Vec<(u64, SocketAddr)> = named.iter().map(|(id, a, _)| (*id, *a)).collect();
        if voters.is_empty() {
            // A cluster of one; the address is never bound.
            voters.push((config.node_id as u64, SocketAddr::from(([127, 0, 0, 1], 0))));
        }
        let ms = |k: &str| {
            Duration::from_millis(config.get(k).and_then(|v| v.parse().ok()).unwrap_or(0))
        };
        Ok(ClusterConfig {
            node_id: config.node_id,
            voters,
            voter_hosts,
            session_timeout: ms("broker.session.timeout.ms"),
            heartbeat_interval: ms("broker.heartbeat.interval.ms"),
            unclean_default: config.get("unclean.leader.election.enable") == Some("true"),
            controlled_shutdown: (config.get("controlled.shutdown.enable") != Some("false")).then(
                || {
                    let retries = config
                        .get("controlled.shutdown.max.retries")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(3);
                    (retries, ms("controlled.shutdown.retry.backoff.ms"))
                },
            ),
            rebalance_interval: (config.get("auto.leader.rebalance.enable") != Some("false"))
                .then(|| ms("leader.imbalance.check.interval.seconds") * 1000),
            imbalance_percentage: config
                .get("leader.imbalance.per.broker.percentage")
                .and_then(|v| v.parse().ok())
                .unwrap_or(10),
            snapshot_bytes: config
                .get("metadata.log.max.record.bytes.between.snapshots")
                .and_then(|v| v.parse().ok())
                .unwrap_or(20 << 20),
        })
    }

    /// The controller listener of voter `id`.
    pub fn voter_addr(&self, id: i32) -> Option<SocketAddr> {
        self.voters
            .iter()
            .find(|(v, _)| *v == id as u64)
            .map(|(_, a)| *a)
    }

    /// The host of voter `id`, as `controller.quorum.voters` names it.
    pub fn voter_host(&self, id: u64) -> Option<&str> {
        self.voter_hosts
            .iter()
            .find(|(v, _)| *v == id)
            .map(|(_, h)| h.as_str())
    }
}

/// Parses Kafka's `id@host:port,...` voter list.
pub fn parse_voters(text: &str) -> Result<Vec<(u64, SocketAddr)>, ConfigError> {
    Ok(parse_voters_named(text)?
        .into_iter()
        .map(|(id, addr, _)| (id, addr))
        .collect())
}

/// The same, keeping each voter's host as written (`[` `]` taken off an
/// IPv6 address).
pub fn parse_voters_named(text: &str) -> Result<Vec<(u64, SocketAddr, String)>, ConfigError> {
    let bad = |why: &str| ConfigError::InvalidValue {
        key: "controller.quorum.voters".into(),
        value: text.into(),
        expected: format!("a list like 1@127.0.0.1:9093,2@127.0.0.1:9095 ({why})"),
    };
    let mut voters = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, hostport) = part.split_once('@').ok_or_else(|| bad("missing '@'"))?;
        let id: u64 = id.parse().map_err(|_| bad("the id is not a number"))?;
        let addr = hostport
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| bad("the address does not resolve"))?;
        let host = hostport.rsplit_once(':').map_or(hostport, |(h, _)| h);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if voters.iter().any(|(v, _, _)| *v == id) {
            return Err(bad("an id appears twice"));
        }
        voters.push((id, addr, host.to_string()));
    }
    voters.sort();
    Ok(voters)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voters_parse_and_errors_name_the_key() {
        let v = parse_voters("2@127.0.0.1:9095, 1@127.0.0.1:9093").unwrap();
        let named = parse_voters_named("2@localhost:9095, 1@[::1]:9093").unwrap();
        assert_eq!(named[0].2, "::1");
        assert_eq!(named[1].2, "localhost");
        assert_eq!(v[0].0, 1);
        assert_eq!(v[1].1.port(), 9095);
        assert!(parse_voters("").unwrap().is_empty());
        let e = parse_voters("1@127.0.0.1:9093,1@127.0.0.1:9094").unwrap_err();
        assert!(e.to_string().contains("controller.quorum.voters"), "{e}");
        assert!(parse_voters("x@127.0.0.1:1").is_err());
        assert!(parse_voters("1-127.0.0.1:1").is_err());
    }
}
