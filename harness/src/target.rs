//! The broker under test: an address given with `--bootstrap`, or an
//! embedded Sluice cluster (one broker, or three when a point replicates)
//! on free loopback ports with a temporary data directory, stopped after
//! the run.

use sluice_engine::config::BrokerConfig;
use sluice_engine::embedded::EmbeddedBroker;
use std::net::{SocketAddr, TcpListener};

pub enum Target {
    Remote(SocketAddr),
    Embedded {
        brokers: Vec<EmbeddedBroker>,
        /// Kept so the data directory lives as long as the broker.
        _dir: tempfile::TempDir,
        config: Vec<(String, String)>,
    },
}

impl Target {
    pub fn bootstrap(&self) -> SocketAddr {
        match self {
            Target::Remote(a) => *a,
            Target::Embedded { brokers, .. } => brokers[0].bootstrap(),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Target::Remote(a) => a.to_string(),
            Target::Embedded { brokers, .. } if brokers.len() == 1 => {
                format!("embedded sluice at {}", brokers[0].bootstrap())
            }
            Target::Embedded { brokers, .. } => format!(
                "embedded sluice cluster of {} brokers at {}",
                brokers.len(),
                brokers
                    .iter()
                    .map(|b| b.bootstrap().to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        }
    }

    pub fn config(&self) -> Vec<(String, String)> {
        match self {
            Target::Remote(_) => Vec::new(),
            Target::Embedded { config, .. } => config.clone(),
        }
    }

    pub fn stop(self) {
        if let Target::Embedded { brokers, .. } = self {
            for b in brokers {
                b.stop();
            }
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

/// Starts an embedded cluster of `brokers` brokers with `cores` shards
/// each: node ids 1.., the first three (or the only one) the controller
/// quorum. The brokers start together, since each waits for the quorum.
pub fn start_embedded(brokers: usize, cores: usize) -> Result<Target, String> {
    let dir = tempfile::Builder::new()
        .prefix("sluice-bench-")
        .tempdir()
        .map_err(|e| format!("creating a temporary data directory: {e}"))?;
    let brokers = brokers.max(1);
    let port = || free_port().map_err(|e| format!("finding a free loopback port: {e}"));
    let ports = (0..brokers)
        .map(|_| port())
        .collect::<Result<Vec<u16>, _>>()?;
    let voters = if brokers == 1 {
        String::new()
    } else {
        let n = if brokers >= 3 { 3 } else { 1 };
        (0..n)
            .map(|i| Ok(format!("{}@127.0.0.1:{}", i + 1, port()?)))
            .collect::<Result<Vec<String>, String>>()?
            .join(",")
    };
    let mut settings = vec![(
        "group.initial.rebalance.delay.ms".to_string(),
        INITIAL_REBALANCE_DELAY_MS.to_string(),
    )];
    if !voters.is_empty() {
        settings.push(("controller.quorum.voters".to_string(), voters));
    }
    let mut configs = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let mut cfg = BrokerConfig::default();
        let bad = |e: sluice_engine::config::ConfigError| format!("embedded broker config: {e}");
        cfg.set_listen(&format!("127.0.0.1:{port}")).map_err(bad)?;
        cfg.data_dir = if brokers == 1 {
            dir.path().to_path_buf()
        } else {
            dir.path().join(format!("broker-{}", i + 1))
        };
        cfg.cores = cores.max(1);
        cfg.cpus = Some(sluice_engine::config::cpus_for_broker(i, cfg.cores));
        cfg.set("node.id", &(i + 1).to_string()).map_err(bad)?;
        for (k, v) in &settings {
            cfg.set(k, v).map_err(bad)?;
        }
        configs.push(cfg);
    }
    let mut config = vec![
        (
            "listeners".to_string(),
            ports
                .iter()
                .map(|p| format!("PLAINTEXT://127.0.0.1:{p}"))
                .collect::<Vec<_>>()
                .join(","),
        ),
        ("log.dirs".to_string(), dir.path().display().to_string()),
        ("cores".to_string(), cores.max(1).to_string()),
        ("brokers".to_string(), brokers.to_string()),
    ];
    config.extend(settings);
    let starts: Vec<_> = configs
        .into_iter()
        .map(|cfg| std::thread::spawn(move || EmbeddedBroker::start(cfg)))
        .collect();
    let mut running = Vec::new();
    let mut failed = None;
    for s in starts {
        match s.join() {
            Ok(Ok(b)) => running.push(b),
            Ok(Err(e)) => failed = Some(format!("starting the embedded broker: {e}")),
            Err(_) => failed = Some("starting the embedded broker panicked".to_string()),
        }
    }
    if let Some(e) = failed {
        for b in running {
            b.stop();
        }
        return Err(e);
    }
    Ok(Target::Embedded {
        brokers: running,
        _dir: dir,
        config,
    })
}
