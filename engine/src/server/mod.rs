//! The Kafka listener: each shard accepts on its own `SO_REUSEPORT`
//! socket, so the kernel spreads connections over shards, and serves every
//! connection it accepts for the connection's whole life.

pub mod admission;
pub mod connection;
pub mod frame_reader;
pub mod handlers;
pub mod log_limit;
pub mod sasl_gate;
pub mod sendfile;
pub mod socket;
pub mod tls;

use crate::metrics::listeners::ListenerCounters;
use crate::security::listeners::Served;
use crate::shard::Shard;
use admission::{Refused, Ticket};
use glommio::net::{TcpListener, TcpStream};
use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Accepts connections on one of the broker's listeners until the task
/// is dropped.
pub async fn accept_loop(shard: Rc<Shard>, listener: TcpListener, served: Arc<Served>) {
    let counters = crate::metrics::listeners::listener(&served.config.name);
    // As in Kafka, the inter-broker listener is protected only beside
    // another listener: alone it is every client's listener too.
    let protected = served.config.name == shard.broker.inter_broker_listener
        && shard.broker.listeners.len() > 1;
    loop {
        match listener.accept().await {
            Ok(stream) => {
                // While this waits for room under `max.connections`, the
                // next connections wait in the kernel's accept queue.
                let Some(ticket) = admit(&shard, &stream, protected, &counters).await else {
                    continue;
                };
                let id = shard.stats.connections.get();
                shard.stats.connections.set(id + 1);
                counters.accepted();
                let last_active = Rc::new(Cell::new(Instant::now()));
                let open = Open {
                    shard: Rc::clone(&shard),
                    id,
                    counters: Rc::clone(&counters),
                    _ticket: ticket,
                };
                let served = Arc::clone(&served);
                let active = Rc::clone(&last_active);
                let task = glommio::spawn_local(async move {
                    connection::serve(Rc::clone(&open.shard), stream, &served, &active).await;
                    drop(open);
                })
                .detach();
                shard
                    .open_connections
                    .borrow_mut()
                    .insert(id, (task, last_active, Rc::clone(&counters)));
            }
            Err(e) => {
                tracing::warn!(shard = shard.id, error = %e, "accept failed");
                glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
}

/// Counts a new connection in under the broker's connection limits,
/// waiting for room under `max.connections`. `None`: it is closed (its
/// address is at its limit, it is already gone, or the broker stops).
async fn admit(
    shard: &Shard,
    stream: &TcpStream,
    protected: bool,
    counters: &ListenerCounters,
) -> Option<Ticket> {
    let peer = stream.peer_addr().ok()?;
    let mut waited = false;
    loop {
        match shard.broker.admission.admit(peer.ip(), protected) {
            Ok(ticket) => return Some(ticket),
            Err(Refused::Full) => {
                if !waited {
                    waited = true;
                    tracing::debug!(%peer, shard = shard.id, "at max.connections; holding the new connection");
                }
                if shard.broker.stopping() {
                    return None;
                }
                glommio::timer::sleep(admission::ROOM_POLL).await;
            }
            Err(Refused::TooManyFromAddress { limit }) => {
                counters.refused();
                if let log_limit::Decision::Log { left_out } = log_limit::decide(peer.ip()) {
                    tracing::warn!(
                        %peer, shard = shard.id, limit, left_out,
                        "address at max.connections.per.ip; closing the new connection"
                    );
                }
                return None;
            }
        }
    }
}

/// Closes this shard's connections that have been idle (no request read,
/// no answer written) for `connections.max.idle.ms`, checking a tenth as
/// often, so a connection lives at most 10% past its idle time.
pub async fn close_idle_connections(shard: Rc<Shard>) {
    let idle_max = shard.broker.config.connections_max_idle();
    let period = (idle_max / 10).clamp(Duration::from_millis(100), Duration::from_secs(30));
    while !shard.broker.stopping() {
        glommio::timer::sleep(period).await;
        let now = Instant::now();
        let idle: Vec<u64> = shard
            .open_connections
            .borrow()
            .iter()
            .filter(|(_, (_, active, _))| now.saturating_duration_since(active.get()) >= idle_max)
            .map(|(id, _)| *id)
            .collect();
        for id in idle {
            // Out of the map first: the task's end removes its entry.
            let Some((task, _, counters)) = shard.open_connections.borrow_mut().remove(&id) else {
                continue;
            };
            tracing::debug!(
                shard = shard.id,
                connection = id,
                ?idle_max,
                "closing idle connection"
            );
            counters.idle_closed();
            task.cancel();
        }
    }
}

/// A connection's entry in [`Shard::open_connections`], removed when its
/// task ends or is cancelled.
/// It also counts the connection closed on its listener, and gives back
/// its place under the connection limits.
struct Open {
    shard: Rc<Shard>,
    id: u64,
    counters: Rc<ListenerCounters>,
    _ticket: Ticket,
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
    for (task, _, _) in open.values() {
        task.cancel();
    }
    let deadline = std::time::Instant::now() + max;
    for (task, _, _) in open.into_values() {
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
