//! The threads plugin code runs on.
//!
//! Plugin calls are short, synchronous and CPU-bound, so they run on a small pool of plain threads
//! rather than on the async workers. A call that overruns its budget fails its own request; its
//! thread is abandoned (it may never return) and a fresh one takes its place, so a hung plugin
//! costs one parked thread, never the host's responsiveness or its shutdown (the pool's threads
//! are detached: nothing waits for them).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

type Job = Box<dyn FnOnce() + Send + 'static>;

pub struct PluginPool {
    jobs: Sender<Job>,
    receiver: Receiver<Job>,
    abandoned: AtomicU64,
}

/// Why a plugin call produced no result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallFailure {
    /// The call overran its budget; its thread was abandoned.
    OverBudget,
    /// The call ended without a result (its thread died).
    Lost,
}

impl PluginPool {
    pub fn new(threads: usize) -> Self {
        let (jobs, receiver) = crossbeam_channel::unbounded::<Job>();
        let pool = Self {
            jobs,
            receiver,
            abandoned: AtomicU64::new(0),
        };
        for _ in 0..threads.max(1) {
            pool.spawn_worker();
        }
        pool
    }

    fn spawn_worker(&self) {
        let receiver = self.receiver.clone();
        let _ = std::thread::Builder::new()
            .name("gatehouse-plugin".into())
            .spawn(move || {
                while let Ok(job) = receiver.recv() {
                    job();
                }
            });
    }

    /// How many threads were abandoned to calls that overran their budget.
    pub fn abandoned_threads(&self) -> u64 {
        self.abandoned.load(Ordering::Relaxed)
    }

    /// Runs `call` on a pool thread and waits for it at most `budget`.
    pub async fn run<T: Send + 'static>(
        &self,
        budget: Duration,
        call: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, CallFailure> {
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = sender.send(call());
        });
        if self.jobs.send(job).is_err() {
            return Err(CallFailure::Lost);
        }
        match tokio::time::timeout(budget, receiver).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(_)) => Err(CallFailure::Lost),
            Err(_) => {
                self.abandoned.fetch_add(1, Ordering::Relaxed);
                self.spawn_worker();
                Err(CallFailure::OverBudget)
            }
        }
    }
}
