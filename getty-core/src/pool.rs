//! A bounded pool of handler threads, as getty's task pool.
//!
//! With a pool, `on_message` and `on_cron` run on pool threads, so a slow handler stalls only
//! its own thread and never the reads of other sessions. The queue is bounded: when every
//! thread is busy and the queue is full, the session that wants to dispatch waits (back-pressure)
//! instead of buffering without limit. Ordering: packages of one session may then be handled
//! out of order and concurrently; without a pool they are handled one by one, in order.

use std::sync::{Arc, Mutex};
use std::thread;

use tokio::sync::mpsc;

pub(crate) type Job = Box<dyn FnOnce() + Send + 'static>;

/// A handle to the pool; clones share it. Threads exit when the last handle is dropped.
#[derive(Clone)]
pub struct TaskPool {
    tx: mpsc::Sender<Job>,
    workers: usize,
}

impl TaskPool {
    /// `workers` threads and a queue of `queue_len` waiting jobs. Threads enter the current
    /// tokio runtime (if any), so handlers may `tokio::spawn`.
    /// Fails only if the OS refuses a thread.
    pub fn new(workers: usize, queue_len: usize) -> std::io::Result<TaskPool> {
        let workers = workers.max(1);
        let (tx, rx) = mpsc::channel::<Job>(queue_len.max(1));
        let rx = Arc::new(Mutex::new(rx));
        let rt = tokio::runtime::Handle::try_current().ok();
        for i in 0..workers {
            let rx = rx.clone();
            let rt = rt.clone();
            let work = move || {
                let _guard = rt.as_ref().map(|h| h.enter());
                loop {
                    // One thread waits on the queue at a time; the others wait on the lock.
                    let job = rx.lock().unwrap_or_else(|e| e.into_inner()).blocking_recv();
                    let Some(job) = job else { return };
                    if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)) {
                        let panic = crate::session::callbacks::panic_message(&*p);
                        tracing::error!(%panic, "task pool job panicked");
                    }
                }
            };
            thread::Builder::new()
                .name(format!("getty-pool-{i}"))
                .spawn(work)?;
        }
        Ok(TaskPool { tx, workers })
    }

    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Queues a job, waiting while the queue is full.
    pub(crate) async fn submit(&self, job: Job) {
        // The receiver lives as long as any thread does, which is as long as `self`.
        let _ = self.tx.send(job).await;
    }
}
