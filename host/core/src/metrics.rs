//! Counters and latency histograms, rendered in the Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the latency histogram buckets, in microseconds (rendered in seconds).
const LATENCY_BUCKETS: [u64; 12] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    5_000_000,
];

type Labels = Vec<(&'static str, String)>;

#[derive(Default)]
struct Histogram {
    buckets: [u64; LATENCY_BUCKETS.len()],
    count: u64,
    sum_micros: u64,
}

#[derive(Default)]
pub struct Metrics {
    counters: Mutex<BTreeMap<(&'static str, Labels), u64>>,
    histograms: Mutex<BTreeMap<(&'static str, Labels), Histogram>>,
}

impl Metrics {
    pub fn increment(&self, name: &'static str, labels: &[(&'static str, &str)]) {
        let key = (name, own(labels));
        *self
            .counters
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entry(key)
            .or_default() += 1;
    }

    pub fn observe(&self, name: &'static str, labels: &[(&'static str, &str)], elapsed: Duration) {
        let key = (name, own(labels));
        let mut histograms = self
            .histograms
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let histogram = histograms.entry(key).or_default();
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        for (index, bound) in LATENCY_BUCKETS.iter().enumerate() {
            if micros <= *bound {
                histogram.buckets[index] += 1;
            }
        }
        histogram.count += 1;
        histogram.sum_micros = histogram.sum_micros.saturating_add(micros);
    }

    /// The value of a counter, for tests and status pages.
    pub fn counter(&self, name: &'static str, labels: &[(&'static str, &str)]) -> u64 {
        self.counters
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&(name, own(labels)))
            .copied()
            .unwrap_or(0)
    }

    /// Everything, in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let counters = self
            .counters
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut last_name = "";
        for ((name, labels), value) in counters.iter() {
            if *name != last_name {
                let _ = writeln!(out, "# TYPE {name} counter");
                last_name = name;
            }
            let _ = writeln!(out, "{name}{} {value}", render_labels(labels, None));
        }
        drop(counters);
        let histograms = self
            .histograms
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        last_name = "";
        for ((name, labels), histogram) in histograms.iter() {
            if *name != last_name {
                let _ = writeln!(out, "# TYPE {name} histogram");
                last_name = name;
            }
            for (index, bound) in LATENCY_BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "{name}_bucket{} {}",
                    render_labels(labels, Some(&seconds_text(*bound))),
                    histogram.buckets[index]
                );
            }
            let _ = writeln!(
                out,
                "{name}_bucket{} {}",
                render_labels(labels, Some("+Inf")),
                histogram.count
            );
            let _ = writeln!(
                out,
                "{name}_sum{} {}.{:06}",
                render_labels(labels, None),
                histogram.sum_micros / 1_000_000,
                histogram.sum_micros % 1_000_000
            );
            let _ = writeln!(
                out,
                "{name}_count{} {}",
                render_labels(labels, None),
                histogram.count
            );
        }
        out
    }
}

/// Microseconds as a decimal number of seconds, without floating point.
fn seconds_text(micros: u64) -> String {
    let whole = micros / 1_000_000;
    let fraction = micros % 1_000_000;
    if fraction == 0 {
        whole.to_string()
    } else {
        format!("{whole}.{fraction:06}")
            .trim_end_matches('0')
            .to_string()
    }
}

fn own(labels: &[(&'static str, &str)]) -> Labels {
    labels
        .iter()
        .map(|(key, value)| (*key, value.to_string()))
        .collect()
}

fn render_labels(labels: &Labels, le: Option<&str>) -> String {
    let mut parts: Vec<String> = labels
        .iter()
        .map(|(key, value)| format!("{key}=\"{}\"", escape(value)))
        .collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
