//! The Kafka listener: each shard accepts on its own `SO_REUSEPORT`
//! socket, so the kernel spreads connections over shards, and serves every
//! connection it accepts for the connection's whole life.

pub mod connection;
pub mod frame_reader;
pub mod handlers;
pub mod log_limit;
pub mod sasl_gate;
pub mod sendfile;
pub mod tls;

use crate::security::listeners::Served;
use crate::shard::Shard;
use glommio::net::TcpListener;
use std::rc::Rc;
use std::sync::Arc;

/// Accepts connections on one of the broker's listeners until the task
/// is dropped.
pub async fn accept_loop(shard: Rc<Shard>, listener: TcpListener, served: Arc<Served>) {
    let counters = crate::metrics::listeners::listener(&served.config.name);
    loop {
        match listener.accept().await {
            Ok(stream) => {
                let id = shard.stats.connections.get();
                shard.stats.connections.set(id + 1);
                counters.accepted();
                let open = Open {
                    shard: Rc::clone(&shard),
                    id,
                    counters: Rc::clone(&counters),
                };
                let served = Arc::clone(&served);
                let task = glommio::spawn_local(async move {
                    connection::serve(Rc::clone(&open.shard), stream, &served).await;
                    drop(open);
                })
                .detach();
                shard.open_connections.borrow_mut().insert(id, task);
            }
            Err(e) => {
                tracing::warn!(shard = shard.id, error = %e, "accept failed");
                glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
}

/// A connection's entry in [`Shard::open_connections`], removed when its
/// task ends or is cancelled.
/// It also counts the connection closed on its listener.
struct Open {
    shard: Rc<Shard>,
    id: u64,
    counters: Rc<crate::metrics::listeners::ListenerCounters>,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.counters.closed();
        if let Ok(mut open) = self.shard.open_connections.try_borrow_mut() {
            open.remove(&self.id);
        }
    }
}

/// Closes every connection of this shard and waits (up to `max`) until
/// their tasks are gone, with whatever they were waiting for.
pub async fn close_connections(shard: &Shard, max: std::time::Duration) {
    let open = std::mem::take(&mut *shard.open_connections.borrow_mut());
    let count = open.len();
    for task in open.values() {
        task.cancel();
    }
    let deadline = std::time::Instant::now() + max;
    for task in open.into_values() {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if glommio::timer::timeout(left, async { Ok(task.await) })
            .await
            .is_err()
        {
            tracing::warn!(shard = shard.id, "a connection outlived shutdown");
            break;
        }
    }
    tracing::debug!(shard = shard.id, count, "connections closed");
}
