//! Threads at the lowest CPU priority for work a shard hands off and
//! awaits without holding its core: the log cleaner's passes and swaps
//! (`log.cleaner.threads` of them, [`crate::cleaner`]) and the encoding of
//! a metrics scrape (one thread, [`crate::metrics`]).
//!
//! With a cleaner pass on the shard's thread, in 1 ms slices, a busy
//! cleaner showed in produce's tail three to four times over: every slice
//! delays a request that arrives during it, and the slice cannot end while
//! a read, a 1 MiB write or a sync of the cleaned copy is in the kernel
//! (the stall detector, `reactor.stall.threshold.ms`, caught reads, writes
//! and syncs holding a shard for up to 17 ms). These threads run under
//! `SCHED_IDLE`: the kernel gives a shard's thread the core whenever it
//! wakes, and these threads the time the shards leave (Kafka cleans on
//! threads of its own too, at normal priority). On cores the shards keep
//! busy such work therefore slows to a trickle rather than slowing
//! requests.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};

type Job = Box<dyn FnOnce() + Send>;

/// A pool of idle-priority threads, shared by a broker's shards.
#[derive(Debug)]
pub struct Workers {
    jobs: mpsc::Sender<Job>,
}

/// Set when the shard stops waiting for a job (say a cleaner pass was
/// dropped as the broker stops); a long job checks it and gives up.
#[derive(Debug, Clone)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    pub fn cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Cancels its job when dropped, waited for or not.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl Workers {
    /// Starts `threads` threads named `<name>-<i>`; they end when the last
    /// handle to the pool is dropped.
    pub fn new(name: &str, threads: usize) -> std::io::Result<Workers> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..threads.max(1) {
            let queue = Arc::clone(&queue);
            std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || {
                    lower_priority();
                    loop {
                        let job = match queue.lock() {
                            Ok(q) => q.recv(),
                            Err(_) => return,
                        };
                        let Ok(job) = job else { return };
                        // A job that panics drops its answer (the waiter
                        // sees None) and the thread goes on.
                        let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
                    }
                })?;
        }
        Ok(Workers { jobs })
    }

    /// Drops `value` on one of the threads (files whose close or unmap may
    /// block); nothing waits for it.
    pub fn drop_later<T: Send + 'static>(&self, value: T) {
        let _ = self.jobs.send(Box::new(move || drop(value)));
    }

    /// Runs `job` on one of the threads and waits, without holding the
    /// shard, for its answer. None if the job panicked.
    pub async fn run<R: Send + 'static>(
        &self,
        job: impl FnOnce(&Cancel) -> R + Send + 'static,
    ) -> Option<R> {
        let (answer, answered) = futures::channel::oneshot::channel();
        let flag = Arc::new(AtomicBool::new(false));
        let _cancel_on_drop = CancelOnDrop(Arc::clone(&flag));
        let cancel = Cancel(flag);
        let job: Job = Box::new(move || {
            let _ = answer.send(job(&cancel));
        });
        self.jobs.send(job).ok()?;
        answered.await.ok()
    }
}

/// `SCHED_IDLE` for the calling thread alone: the kernel runs it only
/// when a core has nothing else to run (with a weight of 3 against a
/// normal thread's 1024 when they share one) and takes the core back at
/// once when a shard's thread wakes. Nice 19 alone was not enough: a
/// thread at nice 19 may finish its slice, about 1.5 ms on this 2-core
/// VM, before a woken shard runs, and produce's p99 at 10k msg/s showed
/// it (1.66x with nice 19). No privilege is needed to lower one's own
/// policy; should it fail, the thread falls back to nice 19.
fn lower_priority() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: plain system calls on this thread's own id.
    let r = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
    if r == 0 {
        return;
    }
    let error = std::io::Error::last_os_error();
    // SAFETY: as above.
    let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 19) };
    tracing::debug!(%error, niced = r == 0, "an idle-priority thread is not SCHED_IDLE");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_run_off_the_calling_thread_at_the_idle_policy() {
        let workers = Workers::new("test", 1).unwrap();
        let caller = std::thread::current().id();
        let (thread, policy) = glommio::LocalExecutorBuilder::default()
            .make()
            .unwrap()
            .run(workers.run(|_| {
                // SAFETY: reads this thread's policy.
                let policy = unsafe { libc::sched_getscheduler(0) };
                (std::thread::current().id(), policy)
            }))
            .unwrap();
        assert_ne!(thread, caller);
        assert_eq!(policy, libc::SCHED_IDLE);
    }

    #[test]
    fn a_job_that_panics_answers_none_and_the_thread_goes_on() {
        let workers = Workers::new("test", 1).unwrap();
        let ex = glommio::LocalExecutorBuilder::default().make().unwrap();
        ex.run(async {
            assert_eq!(
                workers.run(|_| -> u32 { panic!("a bad batch") }).await,
                None
            );
            assert_eq!(workers.run(|_| 7).await, Some(7));
        });
    }

    #[test]
    fn a_dropped_wait_cancels_its_job() {
        let workers = Workers::new("test", 1).unwrap();
        let (seen_tx, seen_rx) = mpsc::channel();
        glommio::LocalExecutorBuilder::default()
            .make()
            .unwrap()
            .run(async {
                let wait = workers.run(move |cancel| {
                    while !cancel.cancelled() {
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                    seen_tx.send(()).unwrap();
                });
                // Polled once (the job is queued), then dropped.
                let _ = futures::future::select(
                    Box::pin(wait),
                    Box::pin(glommio::timer::sleep(std::time::Duration::from_millis(5))),
                )
                .await;
            });
        seen_rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("the job saw its cancel");
    }
}
