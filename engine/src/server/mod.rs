//! The Kafka listener: each shard accepts on its own `SO_REUSEPORT`
//! socket, so the kernel spreads connections over shards, and serves every
//! connection it accepts for the connection's whole life.

pub mod connection;
pub mod frame_reader;
pub mod handlers;
pub mod sendfile;

use crate::shard::Shard;
use glommio::net::TcpListener;
use std::rc::Rc;

/// Accepts connections until the task is dropped.
pub async fn accept_loop(shard: Rc<Shard>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                shard
                    .stats
                    .connections
                    .set(shard.stats.connections.get() + 1);
                glommio::spawn_local(connection::serve(Rc::clone(&shard), stream)).detach();
            }
            Err(e) => {
                tracing::warn!(shard = shard.id, error = %e, "accept failed");
                glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
}
