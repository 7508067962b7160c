//! Load drivers: closed-loop (N clients, each sending its next request when the last one is
//! answered: maximum throughput) and open-loop at a fixed rate (requests leave on a schedule
//! whatever the answers do: latency without coordinated omission). Every run is bounded in time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::process::Process;
use crate::stats::Latencies;
use crate::targets::{Call, Path, Targets};

/// What a closed-loop run did.
#[derive(Debug, Clone, Default)]
pub struct LoadRun {
    pub completed: u64,
    pub failed: u64,
    pub elapsed: Duration,
    /// CPU time this process (clients and host) used during the run.
    pub bench_cpu: Duration,
    /// CPU time the simulator used during the run.
    pub simulator_cpu: Duration,
    /// Resident memory of this process sampled while the load was on, KiB.
    pub rss_under_load_kib: u64,
    pub first_error: Option<String>,
}

impl LoadRun {
    pub fn add(&mut self, other: &LoadRun) {
        self.completed += other.completed;
        self.failed += other.failed;
        self.elapsed += other.elapsed;
        self.bench_cpu += other.bench_cpu;
        self.simulator_cpu += other.simulator_cpu;
        self.rss_under_load_kib = self.rss_under_load_kib.max(other.rss_under_load_kib);
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
    }

    /// Completed calls per second.
    pub fn per_second(&self) -> f64 {
        if self.elapsed.is_zero() {
            0.0
        } else {
            self.completed as f64 / self.elapsed.as_secs_f64()
        }
    }

    /// CPU used per completed call, in microseconds.
    pub fn cpu_micros_per_call(&self, cpu: Duration) -> f64 {
        if self.completed == 0 {
            0.0
        } else {
            cpu.as_secs_f64() * 1e6 / self.completed as f64
        }
    }
}

/// Runs `concurrency` clients, each calling `operation` in a loop, for `duration`.
pub async fn closed_loop<F, Fut>(
    concurrency: usize,
    duration: Duration,
    simulator: Process,
    operation: F,
) -> LoadRun
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    let operation = Arc::new(operation);
    let completed = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let bench_cpu_before = Process::This.cpu_time();
    let simulator_cpu_before = simulator.cpu_time();
    let started = Instant::now();
    let deadline = started + duration;
    let mut clients = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let operation = operation.clone();
        let completed = completed.clone();
        let failed = failed.clone();
        let first_error = first_error.clone();
        clients.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                match operation().await {
                    Ok(()) => {
                        completed.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(error) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        let mut first = first_error
                            .lock()
                            .unwrap_or_else(|poisoned| poisoned.into_inner());
                        if first.is_none() {
                            *first = Some(error);
                        }
                    }
                }
            }
        }));
    }
    tokio::time::sleep(duration.mul_f64(0.8)).await;
    let rss_under_load_kib = Process::This.rss_kib().unwrap_or(0);
    for client in clients {
        let _ = client.await;
    }
    let elapsed = started.elapsed();
    let first_error = first_error
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone();
    LoadRun {
        completed: completed.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        elapsed,
        bench_cpu: Process::This.cpu_time().saturating_sub(bench_cpu_before),
        simulator_cpu: simulator.cpu_time().saturating_sub(simulator_cpu_before),
        rss_under_load_kib,
        first_error,
    }
}

/// Latencies of each path measured open-loop, the paths interleaved request by request.
#[derive(Debug, Default)]
pub struct PacedRun {
    pub latencies: Vec<(Path, Latencies)>,
    pub failed: u64,
    pub first_error: Option<String>,
}

impl PacedRun {
    pub fn latencies_of(&mut self, path: Path) -> &mut Latencies {
        if let Some(index) = self.latencies.iter().position(|(known, _)| *known == path) {
            &mut self.latencies[index].1
        } else {
            self.latencies.push((path, Latencies::default()));
            let last = self.latencies.len() - 1;
            &mut self.latencies[last].1
        }
    }
}

/// Sends `call` by each of `paths` in turn (direct, library, API, direct, ...) at `rate_per_path`
/// requests per second per path, for `duration`. A request is sent at its scheduled time whether
/// or not earlier ones have been answered. Each latency is measured from the moment its request
/// task starts to the moment its answer is read and checked.
///
/// Interleaving request by request means every path sees the same machine at the same moments:
/// a hiccup (another engineer's build, a page-cache flush) lands on all of them alike, so their
/// distributions can be compared quantile by quantile.
pub async fn paced(
    targets: Arc<Targets>,
    paths: &[Path],
    call: Call,
    rate_per_path: u32,
    duration: Duration,
) -> PacedRun {
    let handle = tokio::runtime::Handle::current();
    let (sender, mut receiver) =
        tokio::sync::mpsc::unbounded_channel::<(Path, Duration, Result<String, String>)>();
    let paths = paths.to_vec();
    let period = Duration::from_secs(1) / (rate_per_path * paths.len() as u32).max(1);
    // The schedule is kept by a plain thread that sleeps with the OS's precision; tokio's timer
    // wheel has a 1 ms granularity, which would send requests in bursts.
    let pacer = std::thread::spawn(move || {
        let started = Instant::now();
        let mut sent = 0_u64;
        loop {
            let due = started + period * u32::try_from(sent).unwrap_or(u32::MAX);
            if due >= started + duration {
                break;
            }
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            let path = paths[usize::try_from(sent).unwrap_or(0) % paths.len()];
            let targets = targets.clone();
            let sender = sender.clone();
            handle.spawn(async move {
                let started = Instant::now();
                let result = targets.call(path, call).await;
                let _ = sender.send((path, started.elapsed(), result));
            });
            sent += 1;
        }
        sent
    });
    let mut run = PacedRun::default();
    // The channel closes when the pacer and every request task have dropped their senders.
    while let Some((path, latency, result)) = receiver.recv().await {
        match result {
            Ok(_) => run.latencies_of(path).push(latency),
            Err(error) => {
                run.failed += 1;
                run.first_error.get_or_insert(error);
            }
        }
    }
    let _ = pacer.join();
    run
}

/// Calls `step` in a loop for about `duration` and returns the mean time per call.
pub fn time_per_iteration(duration: Duration, mut step: impl FnMut()) -> Duration {
    // Batches keep the clock reads out of the measurement.
    const BATCH: u32 = 64;
    let started = Instant::now();
    let mut iterations: u64 = 0;
    while started.elapsed() < duration {
        for _ in 0..BATCH {
            step();
        }
        iterations += u64::from(BATCH);
    }
    let elapsed = started.elapsed();
    Duration::from_nanos(
        u64::try_from(elapsed.as_nanos() / u128::from(iterations.max(1))).unwrap_or(u64::MAX),
    )
}
