//! The broker under test: an address given with `--bootstrap`, or an
//! embedded Sluice broker on a free loopback port with a temporary data
//! directory, stopped after the run.

use sluice_engine::config::BrokerConfig;
use sluice_engine::embedded::EmbeddedBroker;
use std::net::{SocketAddr, TcpListener};

pub enum Target {
    Remote(SocketAddr),
    Embedded {
        broker: EmbeddedBroker,
        /// Kept so the data directory lives as long as the broker.
        _dir: tempfile::TempDir,
        config: Vec<(String, String)>,
    },
}

impl Target {
    pub fn bootstrap(&self) -> SocketAddr {
        match self {
            Target::Remote(a) => *a,
            Target::Embedded { broker, .. } => broker.bootstrap(),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Target::Remote(a) => a.to_string(),
            Target::Embedded { broker, .. } => format!("embedded sluice at {}", broker.bootstrap()),
        }
    }

    pub fn config(&self) -> Vec<(String, String)> {
        match self {
            Target::Remote(_) => Vec::new(),
            Target::Embedded { config, .. } => config.clone(),
        }
    }

    /// Brokers the cluster has. The embedded cluster is one broker until
    /// replication exists.
    pub fn broker_count(&self) -> usize {
        1
    }

    pub fn stop(self) {
        if let Target::Embedded { broker, .. } = self {
            broker.stop();
        }
    }
}

/// The embedded broker's `group.initial.rebalance.delay.ms` (Kafka: 3000).
/// A subscription's consumers start together, so a short delay still lets
/// them land in one generation, rather than one rebalance per late joiner
/// (each costing up to a heartbeat interval), without 3 s per load.
const INITIAL_REBALANCE_DELAY_MS: u32 = 200;

/// A loopback port that was free a moment ago (the embedded broker does not
/// take port 0).
fn free_port() -> std::io::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Starts an embedded broker with `cores` shards.
pub fn start_embedded(cores: usize) -> Result<Target, String> {
    let dir = tempfile::Builder::new()
        .prefix("sluice-bench-")
        .tempdir()
        .map_err(|e| format!("creating a temporary data directory: {e}"))?;
    let port = free_port().map_err(|e| format!("finding a free loopback port: {e}"))?;
    let mut cfg = BrokerConfig::default();
    let listen = format!("127.0.0.1:{port}");
    cfg.set_listen(&listen)
        .map_err(|e| format!("embedded broker config: {e}"))?;
    cfg.data_dir = dir.path().to_path_buf();
    cfg.cores = cores.max(1);
    cfg.set(
        "group.initial.rebalance.delay.ms",
        &INITIAL_REBALANCE_DELAY_MS.to_string(),
    )
    .map_err(|e| format!("embedded broker config: {e}"))?;
    let config = vec![
        ("listeners".to_string(), format!("PLAINTEXT://{listen}")),
        ("log.dirs".to_string(), dir.path().display().to_string()),
        ("cores".to_string(), cfg.cores.to_string()),
        (
            "group.initial.rebalance.delay.ms".to_string(),
            INITIAL_REBALANCE_DELAY_MS.to_string(),
        ),
    ];
    let broker =
        EmbeddedBroker::start(cfg).map_err(|e| format!("starting the embedded broker: {e}"))?;
    Ok(Target::Embedded {
        broker,
        _dir: dir,
        config,
    })
}
