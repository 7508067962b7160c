//! The threads plugin code runs on.
//!
//! Plugin calls are short, synchronous and CPU-bound, so they run on a small pool of plain threads
//! rather than on the async workers. A call that overruns its budget fails its own request; its
//! thread is abandoned (it may never return) and a fresh one takes its place, so a hung plugin
//! costs one parked thread, never the host's responsiveness or its shutdown (the pool's threads
//! are detached: nothing waits for them).
//!
//! Abandoned threads are counted per provider while they are stuck: the gateway refuses a
//! provider whose count reached `host.max_abandoned_plugin_threads`, so a plugin that hangs on
//! every call costs a bounded number of threads, not one per request. An abandoned call that
//! returns at last ends its thread (the pool already replaced it) and leaves the count.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

/// A job and the ticket its caller and its thread settle its fate with.
struct Job {
    call: Box<dyn FnOnce() + Send + 'static>,
    ticket: Arc<Ticket>,
}

/// The job's fate: queued, then running, then done — or, when its budget ran out first,
/// cancelled (never started: no thread lost) or abandoned (its thread is stuck in it).
struct Ticket {
    state: AtomicU8,
    /// The stuck-thread count of the job's provider.
    abandoned: Arc<AtomicU64>,
}

const QUEUED: u8 = 0;
const RUNNING: u8 = 1;
const DONE: u8 = 2;
const ABANDONED: u8 = 3;
const CANCELLED: u8 = 4;

pub struct PluginPool {
    jobs: Sender<Job>,
    receiver: Receiver<Job>,
    /// Threads abandoned since the pool started, returned or not.
    abandoned_total: AtomicU64,
    /// Threads abandoned and still stuck in a plugin call, per provider.
    stuck: Mutex<BTreeMap<String, Arc<AtomicU64>>>,
}

/// Why a plugin call produced no result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallFailure {
    /// The call overran its budget; its thread was abandoned.
    OverBudget,
    /// The call ended without a result (its thread died).
    Lost,
    /// The provider's plugin has this many threads stuck in it, at the cap: not run.
    Unavailable { stuck: u64 },
}

impl PluginPool {
    pub fn new(threads: usize) -> Self {
        let (jobs, receiver) = crossbeam_channel::unbounded::<Job>();
        let pool = Self {
            jobs,
            receiver,
            abandoned_total: AtomicU64::new(0),
            stuck: Mutex::new(BTreeMap::new()),
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
                    let started = job.ticket.state.compare_exchange(
                        QUEUED,
                        RUNNING,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    );
                    if started.is_err() {
                        // Its caller gave up before a thread was free: nothing to run.
                        continue;
                    }
                    (job.call)();
                    let settled = job.ticket.state.compare_exchange(
                        RUNNING,
                        DONE,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    );
                    if settled.is_err() {
                        // Abandoned, and already replaced: this thread is one too many.
                        job.ticket.abandoned.fetch_sub(1, Ordering::AcqRel);
                        return;
                    }
                }
            });
    }

    /// Threads abandoned to calls that overran their budget since the pool started.
    pub fn abandoned_threads(&self) -> u64 {
        self.abandoned_total.load(Ordering::Relaxed)
    }

    /// Threads abandoned and still stuck in a call, per provider (providers with none left out).
    pub fn stuck_threads(&self) -> BTreeMap<String, u64> {
        self.lock_stuck()
            .iter()
            .map(|(provider, count)| (provider.clone(), count.load(Ordering::Acquire)))
            .filter(|(_, count)| *count > 0)
            .collect()
    }

    /// Threads abandoned and still stuck in a call of `provider`'s plugin.
    pub fn stuck_threads_of(&self, provider: &str) -> u64 {
        self.lock_stuck()
            .get(provider)
            .map_or(0, |count| count.load(Ordering::Acquire))
    }

    /// Runs `call` on a pool thread and waits for it at most `budget` (counted under no provider).
    pub async fn run<T: Send + 'static>(
        &self,
        budget: Duration,
        call: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, CallFailure> {
        self.run_for("", u64::MAX, budget, call).await
    }

    /// Runs `call` of `provider`'s plugin on a pool thread and waits for it at most `budget`;
    /// refuses it while `max_stuck` threads are stuck in that provider's plugin.
    pub async fn run_for<T: Send + 'static>(
        &self,
        provider: &str,
        max_stuck: u64,
        budget: Duration,
        call: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, CallFailure> {
        let abandoned = self.counter(provider);
        let stuck = abandoned.load(Ordering::Acquire);
        if stuck >= max_stuck {
            return Err(CallFailure::Unavailable { stuck });
        }
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let ticket = Arc::new(Ticket {
            state: AtomicU8::new(QUEUED),
            abandoned,
        });
        let job = Job {
            call: Box::new(move || {
                let _ = sender.send(call());
            }),
            ticket: ticket.clone(),
        };
        if self.jobs.send(job).is_err() {
            return Err(CallFailure::Lost);
        }
        match tokio::time::timeout(budget, receiver).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(_)) => Err(CallFailure::Lost),
            Err(_) => {
                // Never started (every thread busy): cancelled, and no thread is lost.
                if ticket
                    .state
                    .compare_exchange(QUEUED, CANCELLED, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    return Err(CallFailure::OverBudget);
                }
                // Count before the thread can see the abandonment, so its decrement never
                // precedes this increment.
                ticket.abandoned.fetch_add(1, Ordering::AcqRel);
                let abandoned = ticket.state.compare_exchange(
                    RUNNING,
                    ABANDONED,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                );
                if abandoned.is_ok() {
                    self.abandoned_total.fetch_add(1, Ordering::Relaxed);
                    self.spawn_worker();
                } else {
                    // The call finished just as its budget ran out: its thread goes on serving.
                    ticket.abandoned.fetch_sub(1, Ordering::AcqRel);
                }
                Err(CallFailure::OverBudget)
            }
        }
    }

    fn counter(&self, provider: &str) -> Arc<AtomicU64> {
        let mut stuck = self.lock_stuck();
        match stuck.get(provider) {
            Some(count) => count.clone(),
            None => {
                let count = Arc::new(AtomicU64::new(0));
                stuck.insert(provider.to_string(), count.clone());
                count
            }
        }
    }

    fn lock_stuck(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<AtomicU64>>> {
        // Counters hold no invariant a panic could break.
        self.stuck
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn abandoned_threads_are_counted_while_stuck_and_leave_when_they_return() {
        let pool = PluginPool::new(1);
        let (release, released) = crossbeam_channel::bounded::<()>(0);
        let result = pool
            .run_for("slow", 8, Duration::from_millis(20), move || {
                let _ = released.recv();
            })
            .await;
        assert_eq!(result, Err(CallFailure::OverBudget));
        assert_eq!(pool.stuck_threads_of("slow"), 1);
        assert_eq!(pool.abandoned_threads(), 1);
        // The replacement thread serves.
        assert_eq!(
            pool.run_for("fast", 8, Duration::from_secs(5), || 7).await,
            Ok(7)
        );
        release.send(()).expect("the stuck call is waiting");
        for _ in 0..200 {
            if pool.stuck_threads_of("slow") == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(pool.stuck_threads_of("slow"), 0);
        assert!(pool.stuck_threads().is_empty());
        assert_eq!(pool.abandoned_threads(), 1);
    }
}
