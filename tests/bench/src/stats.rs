//! Latency samples and their percentiles. Durations are timing statistics, never money.

use std::time::Duration;

/// The percentiles every latency figure reports.
pub const REPORTED_PERCENTILES: [(&str, f64); 4] =
    [("p50", 0.50), ("p90", 0.90), ("p99", 0.99), ("max", 1.0)];

/// A set of latencies, kept sorted once finished.
#[derive(Debug, Clone, Default)]
pub struct Latencies {
    nanos: Vec<u64>,
    sorted: bool,
}

impl Latencies {
    pub fn push(&mut self, latency: Duration) {
        self.nanos
            .push(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX));
        self.sorted = false;
    }

    pub fn extend(&mut self, other: Latencies) {
        self.nanos.extend(other.nanos);
        self.sorted = false;
    }

    pub fn len(&self) -> usize {
        self.nanos.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nanos.is_empty()
    }

    fn sort(&mut self) {
        if !self.sorted {
            self.nanos.sort_unstable();
            self.sorted = true;
        }
    }

    /// The nearest-rank percentile (`quantile` in 0..=1): the smallest sample with at least that
    /// share of samples at or below it. `1.0` is the maximum.
    pub fn quantile(&mut self, quantile: f64) -> Duration {
        self.sort();
        if self.nanos.is_empty() {
            return Duration::ZERO;
        }
        let count = self.nanos.len();
        let rank = ((quantile * count as f64).ceil() as usize).clamp(1, count);
        Duration::from_nanos(self.nanos[rank - 1])
    }

    pub fn mean(&self) -> Duration {
        if self.nanos.is_empty() {
            return Duration::ZERO;
        }
        let total: u128 = self.nanos.iter().map(|nanos| u128::from(*nanos)).sum();
        Duration::from_nanos(u64::try_from(total / self.nanos.len() as u128).unwrap_or(u64::MAX))
    }
}

/// `later - earlier` in signed microseconds, for "what the host adds" (which noise can make
/// slightly negative at low percentiles).
pub fn added_micros(host: Duration, direct: Duration) -> f64 {
    (host.as_nanos() as f64 - direct.as_nanos() as f64) / 1_000.0
}

/// A duration in the unit that reads best: ns, µs or ms.
pub fn human(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    if nanos < 10_000 {
        format!("{nanos} ns")
    } else if nanos < 10_000_000 {
        format!("{:.1} µs", nanos as f64 / 1_000.0)
    } else {
        format!("{:.2} ms", nanos as f64 / 1_000_000.0)
    }
}

/// Signed microseconds, as a table cell.
pub fn human_micros(micros: f64) -> String {
    if micros.abs() >= 10_000.0 {
        format!("{:.2} ms", micros / 1_000.0)
    } else {
        format!("{micros:.1} µs")
    }
}
