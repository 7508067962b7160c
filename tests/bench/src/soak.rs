//! A run longer than reconciliation's period (issue 20 item 3): does a reconciliation pass stall
//! the foreground?
//!
//! Two `gatehouse serve` on SQLite, side by side against one PayGateGlobal simulator: one
//! reconciles every `interval`, the control's period is a day (no pass within the run). Both get
//! ledgered charges at one fixed rate, request by request interleaved, for longer than the
//! period. PayGateGlobal answers a charge `pending` (the customer confirms on their phone), so
//! every charge leaves an entry the reconciler asks the provider about: by the first pass there
//! is a backlog of `rate × interval` entries, of which a pass takes 500.
//!
//! Latency is counted from each request's scheduled time, not from when it was sent, so a stall
//! shows as latency instead of hiding as requests not sent (coordinated omission). Each
//! server's `/metrics` is read every second for `gatehouse_reconciliation_entries_total`, which
//! places every pass in the windows it ran in.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::host::API_KEY;
use crate::served::{LedgerChoice, ledgered_charge, spawn_gatehouse_with};
use crate::stats::{Latencies, human};

/// What one soak run does.
#[derive(Debug, Clone, Copy)]
pub struct SoakSettings {
    /// Ledgered charges per second, per server.
    pub rate_per_server: u32,
    pub duration: Duration,
    /// The reconciling server's `host.reconcile_interval_secs`.
    pub interval: Duration,
    /// The report's windows.
    pub window: Duration,
}

impl Default for SoakSettings {
    fn default() -> Self {
        Self {
            rate_per_server: 200,
            // Two passes of the default period, and a quiet stretch after each.
            duration: Duration::from_secs(130),
            interval: Duration::from_secs(60),
            window: Duration::from_secs(5),
        }
    }
}

/// The two servers of a soak run.
pub const SERVERS: [&str; 2] = ["reconciling", "control"];

/// One window of one server.
#[derive(Debug, Clone, Default)]
pub struct Window {
    pub answered: u64,
    pub failed: u64,
    pub latencies: Latencies,
    /// Entries reconciliation examined in the window (from `/metrics`).
    pub reconciled: u64,
}

/// What a soak run measured: `windows[server][window]`.
pub struct SoakRun {
    pub settings: SoakSettings,
    pub windows: [Vec<Window>; 2],
    pub first_error: Option<String>,
    /// Reconciliation passes each server ran (from `/metrics`).
    pub passes: [u64; 2],
    /// Seconds (of the once-a-second readings) in which the reconciling server examined
    /// entries, and the most it examined in one of them: how long its passes lasted.
    pub busy_seconds: u64,
    pub most_in_a_second: u64,
}

/// Runs the soak: two servers of `gatehouse`, the load, the per-second metrics.
pub async fn run(
    gatehouse: &Path,
    simulator_base_url: &str,
    settings: SoakSettings,
) -> anyhow::Result<SoakRun> {
    let interval_secs = settings.interval.as_secs().max(1);
    let servers = [
        spawn_gatehouse_with(
            gatehouse,
            simulator_base_url,
            &LedgerChoice::Sqlite,
            &format!("reconcile_interval_secs = {interval_secs}\n"),
        )
        .await?,
        spawn_gatehouse_with(
            gatehouse,
            simulator_base_url,
            &LedgerChoice::Sqlite,
            "reconcile_interval_secs = 86400\n",
        )
        .await?,
    ];
    let http = reqwest::Client::new();
    let windows_count = settings.duration.as_secs_f64() / settings.window.as_secs_f64();
    let windows_count = windows_count.ceil() as usize;
    let started = Instant::now();

    let scrapes = tokio::spawn(scrape_reconciliation(
        http.clone(),
        servers
            .iter()
            .map(|server| server.base_url.clone())
            .collect(),
        started,
        settings.duration,
    ));

    let (sender, mut receiver) =
        tokio::sync::mpsc::unbounded_channel::<(usize, Duration, Duration, Result<(), String>)>();
    let period = Duration::from_secs(1) / (settings.rate_per_server * 2).max(1);
    let bases: Vec<String> = servers
        .iter()
        .map(|server| server.base_url.clone())
        .collect();
    let mut sent: u32 = 0;
    loop {
        let due = started + period * sent;
        if due >= started + settings.duration {
            break;
        }
        tokio::time::sleep_until(due.into()).await;
        let server = (sent % 2) as usize;
        let http = http.clone();
        let base = bases[server].clone();
        let sender = sender.clone();
        let key = format!("soak-{sent:024x}");
        tokio::spawn(async move {
            let result = ledgered_charge(&http, &base, &key).await;
            let _ = sender.send((server, due - started, due.elapsed(), result));
        });
        sent += 1;
    }
    drop(sender);

    let mut windows: [Vec<Window>; 2] = [
        vec![Window::default(); windows_count],
        vec![Window::default(); windows_count],
    ];
    let mut first_error = None;
    while let Some((server, scheduled, latency, result)) = receiver.recv().await {
        let index = window_of(scheduled, settings.window, windows_count);
        let window = &mut windows[server][index];
        match result {
            Ok(()) => {
                window.answered += 1;
                window.latencies.push(latency);
            }
            Err(error) => {
                window.failed += 1;
                first_error.get_or_insert(error);
            }
        }
    }
    let samples = scrapes.await.context("the metrics reader")?;
    let mut passes = [0; 2];
    let (mut busy_seconds, mut most_in_a_second) = (0, 0);
    for (server, samples) in samples.iter().enumerate() {
        let mut previous = 0;
        for (at, entries, server_passes) in samples {
            let index = window_of(*at, settings.window, windows_count);
            let examined = entries.saturating_sub(previous);
            windows[server][index].reconciled += examined;
            if server == 0 && examined > 0 {
                busy_seconds += 1;
                most_in_a_second = most_in_a_second.max(examined);
            }
            previous = previous.max(*entries);
            passes[server] = passes[server].max(*server_passes);
        }
    }
    // A pass that ends after the load did is still counted: one last reading.
    for (server, process) in servers.iter().enumerate() {
        if let Ok((entries, server_passes)) = reconciliation_counts(&http, &process.base_url).await
        {
            let last = windows[server].len() - 1;
            let counted: u64 = windows[server].iter().map(|window| window.reconciled).sum();
            windows[server][last].reconciled += entries.saturating_sub(counted);
            passes[server] = passes[server].max(server_passes);
        }
    }
    drop(servers);
    Ok(SoakRun {
        settings,
        windows,
        first_error,
        passes,
        busy_seconds,
        most_in_a_second,
    })
}

fn window_of(offset: Duration, window: Duration, count: usize) -> usize {
    ((offset.as_secs_f64() / window.as_secs_f64()) as usize).min(count - 1)
}

/// Every second until `duration` is over: (offset, entries examined, passes) of each server.
async fn scrape_reconciliation(
    http: reqwest::Client,
    base_urls: Vec<String>,
    started: Instant,
    duration: Duration,
) -> Vec<Vec<(Duration, u64, u64)>> {
    let mut samples = vec![Vec::new(); base_urls.len()];
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    while started.elapsed() < duration {
        ticker.tick().await;
        for (server, base_url) in base_urls.iter().enumerate() {
            if let Ok((entries, passes)) = reconciliation_counts(&http, base_url).await {
                samples[server].push((started.elapsed(), entries, passes));
            }
        }
    }
    samples
}

/// `gatehouse_reconciliation_entries_total` (summed over its labels) and
/// `gatehouse_reconciliation_passes_total` from a server's `/metrics`.
async fn reconciliation_counts(
    http: &reqwest::Client,
    base_url: &str,
) -> anyhow::Result<(u64, u64)> {
    let text = http
        .get(format!("{base_url}/metrics"))
        .bearer_auth(API_KEY)
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    Ok((
        metric_sum(&text, "gatehouse_reconciliation_entries_total"),
        metric_sum(&text, "gatehouse_reconciliation_passes_total"),
    ))
}

/// The sum of a counter's samples in Prometheus text (every label set).
fn metric_sum(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|value| value as u64)
        .sum()
}

/// The soak's verdict, as the report's closing rows.
pub struct Verdict {
    /// Windows of the reconciling server in which a pass ran.
    pub windows_with_a_pass: usize,
    pub entries_reconciled: u64,
    /// The worst p99 of those windows, against the control's in the same windows.
    pub worst_pass_p99: Duration,
    pub control_p99_meanwhile: Duration,
    /// Both servers over the whole run.
    pub p99: [Duration; 2],
    pub max: [Duration; 2],
    pub failed: u64,
    /// Answered ÷ offered, the lowest window of the reconciling server.
    pub lowest_window_share: f64,
}

impl SoakRun {
    pub fn verdict(&mut self) -> Verdict {
        let offered_per_window =
            f64::from(self.settings.rate_per_server) * self.settings.window.as_secs_f64();
        let mut worst_pass_p99 = Duration::ZERO;
        let mut control_p99_meanwhile = Duration::ZERO;
        let mut windows_with_a_pass = 0;
        let count = self.windows[0].len();
        for index in 0..count {
            if self.windows[0][index].reconciled == 0 {
                continue;
            }
            windows_with_a_pass += 1;
            let p99 = self.windows[0][index].latencies.quantile(0.99);
            if p99 > worst_pass_p99 {
                worst_pass_p99 = p99;
                control_p99_meanwhile = self.windows[1][index].latencies.quantile(0.99);
            }
        }
        // The last window is cut short by the run's end: not a fair share.
        let lowest_window_share = self.windows[0][..count.saturating_sub(1).max(1)]
            .iter()
            .map(|window| window.answered as f64 / offered_per_window)
            .fold(f64::INFINITY, f64::min);
        let mut whole = [Latencies::default(), Latencies::default()];
        for (server, windows) in self.windows.iter().enumerate() {
            for window in windows {
                whole[server].extend(window.latencies.clone());
            }
        }
        Verdict {
            windows_with_a_pass,
            entries_reconciled: self.windows[0].iter().map(|window| window.reconciled).sum(),
            worst_pass_p99,
            control_p99_meanwhile,
            p99: [whole[0].quantile(0.99), whole[1].quantile(0.99)],
            max: [whole[0].quantile(1.0), whole[1].quantile(1.0)],
            failed: self
                .windows
                .iter()
                .flatten()
                .map(|window| window.failed)
                .sum(),
            lowest_window_share,
        }
    }

    /// The per-window table and the verdict, as Markdown.
    pub fn render(&mut self, out: &mut String) {
        let settings = self.settings;
        let _ = writeln!(
            out,
            "{} ledgered charges/s to each of two `gatehouse serve` on SQLite for {} s, interleaved; \
             the reconciling one every {} s, the control not within the run. Latency from each \
             request's scheduled time.",
            settings.rate_per_server,
            settings.duration.as_secs(),
            settings.interval.as_secs()
        );
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "| window | reconciled | answered | failed | p50 | p99 | max | control p50 | control p99 | control max |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        let window_secs = settings.window.as_secs_f64();
        let [reconciling, control] = &mut self.windows;
        for (index, (ours, theirs)) in reconciling.iter_mut().zip(control.iter_mut()).enumerate() {
            let from = index as f64 * window_secs;
            let _ = writeln!(
                out,
                "| {from:.0}–{:.0} s | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                from + window_secs,
                ours.reconciled,
                ours.answered,
                ours.failed + theirs.failed,
                human(ours.latencies.quantile(0.5)),
                human(ours.latencies.quantile(0.99)),
                human(ours.latencies.quantile(1.0)),
                human(theirs.latencies.quantile(0.5)),
                human(theirs.latencies.quantile(0.99)),
                human(theirs.latencies.quantile(1.0)),
            );
        }
        let verdict = self.verdict();
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "- passes: {} (reconciling), {} (control); entries examined: {} in {} windows",
            self.passes[0], self.passes[1], verdict.entries_reconciled, verdict.windows_with_a_pass
        );
        let _ = writeln!(
            out,
            "- the reconciling server examined entries in {} of the once-a-second readings, at most {} between two",
            self.busy_seconds, self.most_in_a_second
        );
        let _ = writeln!(
            out,
            "- worst p99 of a window with a pass: {} (the control in that window: {})",
            human(verdict.worst_pass_p99),
            human(verdict.control_p99_meanwhile)
        );
        let _ = writeln!(
            out,
            "- whole run: p99 {} against {} (control), max {} against {}; failed {}",
            human(verdict.p99[0]),
            human(verdict.p99[1]),
            human(verdict.max[0]),
            human(verdict.max[1]),
            verdict.failed
        );
        let _ = writeln!(
            out,
            "- lowest window of the reconciling server: {:.1} % of the offered rate answered",
            verdict.lowest_window_share * 100.0
        );
        if let Some(error) = &self.first_error {
            let _ = writeln!(out, "- first error: {error}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counter_is_summed_over_its_labels_and_not_confused_with_a_longer_name() {
        let text = "# TYPE gatehouse_reconciliation_entries_total counter\n\
                    gatehouse_reconciliation_entries_total{result=\"settled\"} 3\n\
                    gatehouse_reconciliation_entries_total{result=\"still_open\"} 497\n\
                    gatehouse_reconciliation_entries_total_extra 9\n\
                    gatehouse_reconciliation_passes_total 2\n";
        assert_eq!(
            metric_sum(text, "gatehouse_reconciliation_entries_total"),
            500
        );
        assert_eq!(metric_sum(text, "gatehouse_reconciliation_passes_total"), 2);
        assert_eq!(metric_sum(text, "absent"), 0);
    }

    #[test]
    fn an_offset_past_the_last_window_lands_in_it() {
        let window = Duration::from_secs(5);
        assert_eq!(window_of(Duration::from_millis(4_999), window, 3), 0);
        assert_eq!(window_of(Duration::from_secs(5), window, 3), 1);
        assert_eq!(window_of(Duration::from_secs(99), window, 3), 2);
    }
}
