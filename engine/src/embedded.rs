//! A broker inside another process (the benchmark harness, tests).

use crate::broker::{Broker, StartError};
use crate::config::BrokerConfig;
use std::net::SocketAddr;

/// A running in-process broker; stopped cleanly on `stop` or drop.
pub struct EmbeddedBroker {
    broker: Broker,
}

impl EmbeddedBroker {
    /// Starts the broker and returns once it is listening.
    pub fn start(config: BrokerConfig) -> Result<EmbeddedBroker, StartError> {
        Ok(EmbeddedBroker {
            broker: Broker::start(config)?,
        })
    }

    /// The address clients connect to.
    pub fn bootstrap(&self) -> SocketAddr {
        self.broker.listen_addr()
    }

    /// Bytes sent with sendfile and bytes copied, so far as shards reported.
    pub fn stop(mut self) {
        self.broker.stop();
        if let Err(e) = self.broker.join() {
            tracing::error!(error = %e, "stopping embedded broker");
        }
    }
}
