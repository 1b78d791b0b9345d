//! The channel mesh between shards: one bounded single-producer,
//! single-consumer channel from every shard to every other one.
//!
//! glommio's own `channel_mesh::MeshBuilder` is not used: its clones, one
//! per shard thread, share a plain `Rc`, so the shards cloning and
//! dropping them at the same moment race on its count. One start in a few
//! then freed memory twice and a shard aborted at exit. Here the main
//! thread makes every channel end, each end is owned by one value that
//! moves to its shard whole, and the only state the shards share is a
//! mutex.

use super::ShardId;
use glommio::channels::shared_channel::{
    self, ConnectedReceiver, ConnectedSender, SharedReceiver, SharedSender,
};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The channel ends every shard takes when it starts, made on the main
/// thread.
pub struct MeshPlan<T: Send + 'static> {
    inner: Arc<Mutex<Plan<T>>>,
}

impl<T: Send + 'static> Clone for MeshPlan<T> {
    fn clone(&self) -> Self {
        MeshPlan {
            inner: Arc::clone(&self.inner),
        }
    }
}

struct Plan<T: Send + 'static> {
    shards: usize,
    /// Executor ids of the shards that have started.
    joined: Vec<usize>,
    /// `ends[i]`: shard `i`'s senders to every shard and receivers from
    /// every shard (`None` for itself), until it takes them.
    ends: Vec<Option<Ends<T>>>,
}

struct Ends<T: Send + 'static> {
    to: Vec<Option<SharedSender<T>>>,
    from: Vec<Option<SharedReceiver<T>>>,
}

/// A shard's sending side of the mesh.
pub struct Senders<T: Send + 'static> {
    id: ShardId,
    to: Vec<Option<ConnectedSender<T>>>,
}

/// A shard's receiving side of the mesh: the channel from each other
/// shard, with that shard's id.
pub type Receivers<T> = Vec<(ShardId, ConnectedReceiver<T>)>;

impl<T: Send + 'static> MeshPlan<T> {
    /// The channels of a mesh of `shards` shards, each holding up to
    /// `capacity` items.
    pub fn new(shards: usize, capacity: usize) -> MeshPlan<T> {
        let mut to: Vec<Vec<Option<SharedSender<T>>>> = (0..shards)
            .map(|_| (0..shards).map(|_| None).collect())
            .collect();
        let mut from: Vec<Vec<Option<SharedReceiver<T>>>> = (0..shards)
            .map(|_| (0..shards).map(|_| None).collect())
            .collect();
        for a in 0..shards {
            for b in (0..shards).filter(|&b| b != a) {
                let (tx, rx) = shared_channel::new_bounded(capacity);
                to[a][b] = Some(tx);
                from[b][a] = Some(rx);
            }
        }
        let ends = to
            .into_iter()
            .zip(from)
            .map(|(to, from)| Some(Ends { to, from }))
            .collect();
        MeshPlan {
            inner: Arc::new(Mutex::new(Plan {
                shards,
                joined: Vec::new(),
                ends,
            })),
        }
    }

    /// Joins the mesh from the calling shard's executor: waits until every
    /// shard has started, so that shard ids follow the executors' ids (the
    /// order the pool started them in, that of `--cpus`), then connects
    /// this shard's ends. `None` if `stopped()` says so first.
    pub async fn join(&self, stopped: impl Fn() -> bool) -> Option<(Senders<T>, Receivers<T>)> {
        let me = glommio::executor().id();
        self.lock().joined.push(me);
        let id = loop {
            {
                let plan = self.lock();
                if plan.joined.len() == plan.shards {
                    let mut ids = plan.joined.clone();
                    ids.sort_unstable();
                    break ids.binary_search(&me).expect("pushed above");
                }
            }
            if stopped() {
                return None;
            }
            glommio::timer::sleep(Duration::from_millis(1)).await;
        };
        let ends = self.lock().ends[id].take().expect("each shard joins once");
        // All ends at once: a sender's connect waits for its receiver's.
        let senders = futures::future::join_all(
            ends.to
                .into_iter()
                .map(|tx| async move { Some(tx?.connect().await) }),
        );
        let receivers = futures::future::join_all(
            ends.from
                .into_iter()
                .map(|rx| async move { Some(rx?.connect().await) }),
        );
        let connect = Box::pin(futures::future::join(senders, receivers));
        let stop = Box::pin(async {
            while !stopped() {
                glommio::timer::sleep(Duration::from_millis(100)).await;
            }
        });
        let (to, from) = match futures::future::select(connect, stop).await {
            futures::future::Either::Left((ends, _)) => ends,
            futures::future::Either::Right(_) => return None,
        };
        let receivers = from
            .into_iter()
            .enumerate()
            .filter_map(|(peer, rx)| Some((peer, rx?)))
            .collect();
        Some((Senders { id, to }, receivers))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Plan<T>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<T: Send + 'static> Senders<T> {
    /// This shard's id.
    pub fn id(&self) -> ShardId {
        self.id
    }

    /// How many shards the mesh joins.
    pub fn shards(&self) -> usize {
        self.to.len()
    }

    /// Sends `item` to shard `target`, waiting while its channel is full.
    /// False if that shard is gone, or is this one.
    pub async fn send_to(&self, target: ShardId, item: T) -> bool {
        match self.to.get(target) {
            Some(Some(tx)) => tx.send(item).await.is_ok(),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use glommio::{LocalExecutorPoolBuilder, PoolPlacement};

    /// Three shards join; each sends its id to every other shard and gets
    /// every other shard's id from that shard's channel. The ids are 0, 1
    /// and 2, once each.
    #[test]
    fn every_shard_reaches_every_other() {
        const SHARDS: usize = 3;
        let plan = MeshPlan::<usize>::new(SHARDS, 4);
        let ids = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&ids);
        LocalExecutorPoolBuilder::new(PoolPlacement::Unbound(SHARDS))
            .on_all_shards(move || async move {
                // A shard that never connects fails the test, not hangs it.
                let started = std::time::Instant::now();
                let (senders, receivers) = plan
                    .join(move || started.elapsed() > Duration::from_secs(60))
                    .await
                    .expect("every shard joined within 60 s");
                let me = senders.id();
                seen.lock().unwrap().push(me);
                assert_eq!(senders.shards(), SHARDS);
                assert!(!senders.send_to(me, me).await);
                for peer in (0..SHARDS).filter(|&p| p != me) {
                    assert!(senders.send_to(peer, me).await);
                }
                assert_eq!(receivers.len(), SHARDS - 1);
                for (peer, rx) in receivers {
                    assert_eq!(rx.recv().await, Some(peer));
                }
            })
            .unwrap()
            .join_all()
            .into_iter()
            .for_each(|shard| assert!(shard.is_ok(), "a shard failed: {shard:?}"));
        let mut ids = ids.lock().unwrap().clone();
        ids.sort_unstable();
        assert_eq!(ids, (0..SHARDS).collect::<Vec<_>>());
    }

    /// A shard whose peers never start gives up when told to stop.
    #[test]
    fn a_lone_shard_stops_waiting_when_the_broker_stops() {
        let plan = MeshPlan::<usize>::new(2, 4);
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                let started = std::time::Instant::now();
                let stopped = move || started.elapsed() > Duration::from_millis(50);
                assert!(plan.join(stopped).await.is_none());
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
