//! The host's metrics, kept and encoded by `prometheus-client` (the OpenMetrics text format).
//!
//! Every family is registered, with its help text, when the host starts, and families without
//! labels (or with a small fixed set) have their series from the start too, so a dashboard sees
//! zeros rather than gaps. Label values are bounded: a `provider` label is one of the configured
//! providers, an `account` label one of that provider's configured accounts, anything else is
//! `unknown` ([`LabelBounds`]); the other labels take values from the host's own fixed sets
//! (operations, statuses, error codes, route templates). So a stranger posting to
//! `/webhooks/<random>/main` cannot grow the scrape, and no caller-chosen text reaches it.
//! Values are escaped per the exposition format anyway ([`LabelValue`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::config::Config;

/// The content type of [`Metrics::render`]'s text, with the format's version.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds of the latency histogram buckets, in seconds.
const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// The label value for anything outside the configured sets.
pub const UNKNOWN: &str = "unknown";

/// The `method` label of a request whose method is none of HTTP's standard nine. Any token is
/// a valid method, so the caller's own would make a new series per made-up method: memory an
/// unauthenticated caller could grow without bound.
pub const OTHER_METHOD: &str = "OTHER";

/// The methods that are their own `method` label value.
const STANDARD_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// Label sets whose series exist from the start (an empty set: the family's one series).
type PresentFromStart = &'static [&'static [(&'static str, &'static str)]];

/// A registered family: (sample name, help, series present from the start).
type FamilySpec = (&'static str, &'static str, PresentFromStart);

/// A histogram family with the host's latency buckets.
type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

/// Counters: (sample name, help, label sets present from the start).
const COUNTERS: &[FamilySpec] = &[
    (
        "gatehouse_requests_total",
        "Commands dispatched to a plugin, by provider, account and operation",
        &[],
    ),
    (
        "gatehouse_outcomes_total",
        "Outcomes of dispatched commands, by provider, account, operation and status",
        &[],
    ),
    (
        "gatehouse_errors_total",
        "Commands that ended in an error or a failed or unknown outcome, by provider, account, operation and error code",
        &[],
    ),
    (
        "gatehouse_provider_requests_total",
        "HTTP requests sent to providers, by provider and answer (HTTP status or failure class)",
        &[],
    ),
    (
        "gatehouse_plugin_calls_over_budget_total",
        "Plugin calls that overran their time budget, by provider",
        &[],
    ),
    (
        "gatehouse_plugin_loads_total",
        "Plugin files loaded, refused and retired by the folder scans",
        &[
            &[("result", "loaded")],
            &[("result", "refused")],
            &[("result", "retired")],
        ],
    ),
    (
        "gatehouse_config_reloads_total",
        "Configuration reloads, applied or refused",
        &[&[("result", "applied")], &[("result", "refused")]],
    ),
    (
        "gatehouse_webhook_events_total",
        "Inbound webhooks, by provider and result (stored, replay, refused)",
        &[],
    ),
    (
        "gatehouse_webhook_forwarded_total",
        "Stored webhook events forwarded to the platform, by provider",
        &[],
    ),
    (
        "gatehouse_webhook_forward_retries_total",
        "Failed attempts to forward a webhook event (each is retried)",
        &[&[]],
    ),
    (
        "gatehouse_reconciliation_passes_total",
        "Reconciliation passes run",
        &[&[]],
    ),
    (
        "gatehouse_reconciliation_entries_total",
        "Ledger entries examined by reconciliation, by result",
        &[
            &[("result", "resolved")],
            &[("result", "still_open")],
            &[("result", "flagged_for_operator")],
            &[("result", "error")],
        ],
    ),
];

/// Histograms of durations: (sample name, help).
const HISTOGRAMS: &[(&str, &str)] = &[
    (
        "gatehouse_provider_latency_seconds",
        "Time from sending a request to a provider to its answer, by provider",
    ),
    (
        "gatehouse_http_request_duration_seconds",
        "Time to answer an API request, by method, route template and HTTP status",
    ),
];

/// Gauges, set when they change or at scrape time: (name, help, label sets present from start).
const GAUGES: &[FamilySpec] = &[
    (
        "gatehouse_ledger_entries",
        "Ledger entries by state, counted at scrape time",
        &[
            &[("state", "sending")],
            &[("state", "succeeded")],
            &[("state", "pending")],
            &[("state", "failed")],
            &[("state", "unknown")],
            &[("state", "needs_operator")],
        ],
    ),
    (
        "gatehouse_plugin_libraries_loaded",
        "Plugin libraries mapped into the process (never unloaded)",
        &[&[]],
    ),
    (
        "gatehouse_plugins_active",
        "Providers with a plugin serving",
        &[&[]],
    ),
    (
        "gatehouse_plugin_threads_abandoned",
        "Plugin threads abandoned to calls that overran their budget (they may never return)",
        &[&[]],
    ),
    (
        "gatehouse_accounts_paused",
        "Accounts paused after an authentication or rate-limit answer",
        &[&[]],
    ),
    (
        "gatehouse_fleet_live_hosts",
        "Hosts sharing the ledger whose lease is fresh, this one included (1 on SQLite): each host's share of an account's rate limit and concurrency is the account's figure divided by it",
        &[&[]],
    ),
    (
        "gatehouse_webhook_forward_lag_seconds",
        "Age of the oldest stored webhook event not yet forwarded to the platform (0 when none waits)",
        &[&[]],
    ),
    (
        "process_resident_memory_bytes",
        "Resident memory size in bytes",
        &[&[]],
    ),
    (
        "process_open_fds",
        "Number of open file descriptors",
        &[&[]],
    ),
    ("process_threads", "Number of OS threads.", &[&[]]),
    (
        "process_start_time_seconds",
        "Start time of the process since the Unix epoch, in seconds",
        &[&[]],
    ),
];

/// A label value, escaped per the exposition format when encoded (backslash, double quote and
/// line feed escaped; other control characters, which no format allows raw, replaced by `?`).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct LabelValue(String);

impl EncodeLabelValue for LabelValue {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        for character in self.0.chars() {
            match character {
                '\\' => encoder.write_str("\\\\")?,
                '"' => encoder.write_str("\\\"")?,
                '\n' => encoder.write_str("\\n")?,
                other if other.is_control() => encoder.write_char('?')?,
                other => encoder.write_char(other)?,
            }
        }
        Ok(())
    }
}

type Labels = Vec<(&'static str, LabelValue)>;

/// Which provider and account names may appear as label values: the configured ones.
#[derive(Debug, Default, Clone)]
pub struct LabelBounds {
    accounts: BTreeMap<String, BTreeSet<String>>,
}

impl LabelBounds {
    pub fn from_config(config: &Config) -> Self {
        Self {
            accounts: config
                .providers
                .iter()
                .map(|(provider, section)| {
                    (provider.clone(), section.accounts.keys().cloned().collect())
                })
                .collect(),
        }
    }

    /// `labels` with every `provider` and `account` value outside the configured sets replaced
    /// by [`UNKNOWN`], and a `method` outside HTTP's standard ones by [`OTHER_METHOD`].
    fn bound(&self, labels: &[(&'static str, &str)]) -> Labels {
        labels
            .iter()
            .map(|&(key, value)| {
                (
                    key,
                    LabelValue(self.bound_value(labels, key, value).to_string()),
                )
            })
            .collect()
    }

    /// The same, borrowed and on the stack: `None` past [`MOST_LABELS`] labels.
    fn bound_refs<'a>(&self, labels: &[(&'static str, &'a str)]) -> Option<BoundLabels<'a>> {
        if labels.len() > MOST_LABELS {
            return None;
        }
        let mut bound = BoundLabels {
            len: labels.len(),
            pairs: [("", ""); MOST_LABELS],
        };
        for (slot, &(key, value)) in bound.pairs.iter_mut().zip(labels) {
            *slot = (key, self.bound_value(labels, key, value));
        }
        Some(bound)
    }

    fn bound_value<'a>(
        &self,
        labels: &[(&'static str, &'a str)],
        key: &str,
        value: &'a str,
    ) -> &'a str {
        match key {
            "provider" if !self.accounts.contains_key(value) => UNKNOWN,
            "account" => {
                let provider = labels
                    .iter()
                    .find(|(key, _)| *key == "provider")
                    .map(|(_, value)| *value);
                let known = provider
                    .and_then(|provider| self.accounts.get(provider))
                    .is_some_and(|accounts| accounts.contains(value));
                if known { value } else { UNKNOWN }
            }
            "method" if !STANDARD_METHODS.contains(&value) => OTHER_METHOD,
            _ => value,
        }
    }
}

/// Most labels a family of this host has (the tables above have at most four).
const MOST_LABELS: usize = 6;

/// Bounded label values, borrowed from the caller's or constants.
struct BoundLabels<'a> {
    len: usize,
    pairs: [(&'static str, &'a str); MOST_LABELS],
}

impl BoundLabels<'_> {
    fn pairs(&self) -> &[(&'static str, &str)] {
        &self.pairs[..self.len]
    }

    fn to_labels(&self) -> Labels {
        self.pairs()
            .iter()
            .map(|&(key, value)| (key, LabelValue(value.to_string())))
            .collect()
    }
}

/// Each thread's handles to the series it has used, so that a request's metrics neither build
/// a label set (an allocation per label) nor hash it with SipHash under the family's lock: a
/// charge updates four to six series. Keyed by the [`Metrics`] instance, the family's name and
/// the *bounded* label values, so it holds at most the series that exist, whatever callers send;
/// and it is never stale: a family never drops a series, and every call bounds its labels anew.
/// A counter's or histogram's clone shares its state with the family's own.
mod series_cache {
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::hash::{BuildHasherDefault, Hash, Hasher};

    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::histogram::Histogram;
    use rustc_hash::FxHasher;

    /// Past this many series, a thread starts again (a safety net: the bounded labels keep the
    /// real count far below it).
    const MOST_SERIES: usize = 4_096;

    #[derive(Clone)]
    pub enum Handle {
        Counter(Counter),
        Histogram(Histogram),
    }

    struct Cached {
        instance: u64,
        name: &'static str,
        labels: Box<[(&'static str, Box<str>)]>,
        handle: Handle,
    }

    /// Series by the hash of their key; a bucket holds more than one only on a collision.
    type Cache = HashMap<u64, Vec<Cached>, BuildHasherDefault<FxHasher>>;

    thread_local! {
        static CACHE: RefCell<Cache> = RefCell::default();
    }

    /// The handle of `name`'s series with `labels` in `instance`, from this thread's cache or
    /// from `find` (then kept).
    pub fn handle(
        instance: u64,
        name: &'static str,
        labels: &[(&'static str, &str)],
        find: impl FnOnce() -> Option<Handle>,
    ) -> Option<Handle> {
        let mut hasher = FxHasher::default();
        instance.hash(&mut hasher);
        name.hash(&mut hasher);
        labels.hash(&mut hasher);
        let key = hasher.finish();
        let cached = CACHE.with(|cache| {
            cache.borrow().get(&key).and_then(|bucket| {
                bucket
                    .iter()
                    .find(|cached| {
                        cached.instance == instance
                            && cached.name == name
                            && cached.labels.len() == labels.len()
                            && cached.labels.iter().zip(labels).all(
                                |((key, value), (other_key, other_value))| {
                                    key == other_key && **value == **other_value
                                },
                            )
                    })
                    .map(|cached| cached.handle.clone())
            })
        });
        if cached.is_some() {
            return cached;
        }
        let handle = find()?;
        CACHE.with(|cache| {
            let mut cache = cache.borrow_mut();
            if cache.len() >= MOST_SERIES {
                cache.clear();
            }
            cache.entry(key).or_default().push(Cached {
                instance,
                name,
                labels: labels
                    .iter()
                    .map(|&(key, value)| (key, Box::from(value)))
                    .collect(),
                handle: handle.clone(),
            });
        });
        Some(handle)
    }
}

/// The host's metric families, registered once.
pub struct Metrics {
    registry: Registry,
    counters: HashMap<&'static str, Family<Labels, Counter>>,
    histograms: HashMap<&'static str, HistogramFamily>,
    gauges: HashMap<&'static str, Family<Labels, Gauge>>,
    bounds: ArcSwap<LabelBounds>,
    /// This instance among the process's, for [`series_cache`].
    instance: u64,
}

/// The next [`Metrics::instance`].
static NEXT_INSTANCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        registry.register(
            "gatehouse_build",
            "The running build: version of the gatehouse host",
            Info::new(vec![(
                "version",
                LabelValue(env!("CARGO_PKG_VERSION").to_string()),
            )]),
        );
        let mut counters = HashMap::new();
        for (name, help, present) in COUNTERS {
            let family = Family::<Labels, Counter>::default();
            for labels in *present {
                drop(family.get_or_create(&LabelBounds::default().bound(labels)));
            }
            // prometheus-client appends the `_total` suffix itself.
            let base = name.strip_suffix("_total").unwrap_or(name);
            registry.register(base, *help, family.clone());
            counters.insert(*name, family);
        }
        let mut histograms = HashMap::new();
        for (name, help) in HISTOGRAMS {
            let family = Family::<Labels, Histogram>::new_with_constructor(
                (|| Histogram::new(LATENCY_BUCKETS)) as fn() -> Histogram,
            );
            registry.register(*name, *help, family.clone());
            histograms.insert(*name, family);
        }
        let mut gauges = HashMap::new();
        for (name, help, present) in GAUGES {
            let family = Family::<Labels, Gauge>::default();
            for labels in *present {
                drop(family.get_or_create(&LabelBounds::default().bound(labels)));
            }
            registry.register(*name, *help, family.clone());
            gauges.insert(*name, family);
        }
        if let (Some(start), Some(family)) = (
            process::start_time_seconds(),
            gauges.get("process_start_time_seconds"),
        ) {
            family.get_or_create(&Vec::new()).set(start);
        }
        Self {
            registry,
            counters,
            histograms,
            gauges,
            bounds: ArcSwap::from_pointee(LabelBounds::default()),
            instance: NEXT_INSTANCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// Sets which provider and account names may appear in labels (the gateway calls this for
    /// every configuration it puts in force), and gives each configured provider its per-provider
    /// series at zero, so a dashboard sees them before the first event.
    pub fn set_bounds(&self, bounds: LabelBounds) {
        let providers: Vec<String> = bounds.accounts.keys().cloned().collect();
        self.bounds.store(Arc::new(bounds));
        for provider in &providers {
            for result in ["stored", "replay", "refused"] {
                self.increment_by(
                    "gatehouse_webhook_events_total",
                    &[("provider", provider), ("result", result)],
                    0,
                );
            }
            for name in [
                "gatehouse_plugin_calls_over_budget_total",
                "gatehouse_webhook_forwarded_total",
            ] {
                self.increment_by(name, &[("provider", provider)], 0);
            }
        }
    }

    /// Adds one to the counter `name` (a sample name from the table above, `_total` included).
    pub fn increment(&self, name: &'static str, labels: &[(&'static str, &str)]) {
        self.increment_by(name, labels, 1);
    }

    pub fn increment_by(&self, name: &'static str, labels: &[(&'static str, &str)], by: u64) {
        let counter = self.series(name, labels, |labels| {
            let family = self.counters.get(name)?;
            Some(series_cache::Handle::Counter(
                family.get_or_create(labels).clone(),
            ))
        });
        match counter {
            Some(series_cache::Handle::Counter(counter)) => {
                counter.inc_by(by);
            }
            _ => debug_assert!(false, "counter `{name}` is not registered"),
        }
    }

    pub fn observe(&self, name: &'static str, labels: &[(&'static str, &str)], elapsed: Duration) {
        let histogram = self.series(name, labels, |labels| {
            let family = self.histograms.get(name)?;
            Some(series_cache::Handle::Histogram(
                family.get_or_create(labels).clone(),
            ))
        });
        match histogram {
            Some(series_cache::Handle::Histogram(histogram)) => {
                histogram.observe(elapsed.as_secs_f64());
            }
            _ => debug_assert!(false, "histogram `{name}` is not registered"),
        }
    }

    /// The handle of `name`'s series for `labels` once bounded: from this thread's cache, else
    /// made by `create` from the bounded label set (and kept). More labels than any family of
    /// ours has: not one of ours, made without the cache.
    fn series(
        &self,
        name: &'static str,
        labels: &[(&'static str, &str)],
        create: impl FnOnce(&Labels) -> Option<series_cache::Handle>,
    ) -> Option<series_cache::Handle> {
        let bounds = self.bounds.load();
        match bounds.bound_refs(labels) {
            Some(bound) => series_cache::handle(self.instance, name, bound.pairs(), || {
                create(&bound.to_labels())
            }),
            None => create(&bounds.bound(labels)),
        }
    }

    pub fn set_gauge(&self, name: &'static str, labels: &[(&'static str, &str)], value: i64) {
        match self.gauges.get(name) {
            Some(family) => {
                family
                    .get_or_create(&self.bounds.load().bound(labels))
                    .set(value);
            }
            None => debug_assert!(false, "gauge `{name}` is not registered"),
        }
    }

    /// The value of a counter, for tests and status pages.
    pub fn counter(&self, name: &'static str, labels: &[(&'static str, &str)]) -> u64 {
        self.counters
            .get(name)
            .and_then(|family| {
                family
                    .get(&self.bounds.load().bound(labels))
                    .map(|counter| counter.get())
            })
            .unwrap_or(0)
    }

    /// Everything, in the OpenMetrics text format ([`CONTENT_TYPE`]), with the process figures
    /// read from `/proc` now.
    pub fn render(&self) -> String {
        for (name, value) in process::figures() {
            self.set_gauge(name, &[], value);
        }
        let mut text = String::new();
        // Writing to a String cannot fail; an encoder error would be a bug in a metric type.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// The process's own figures, from `/proc/self` (Linux; elsewhere the gauges stay at zero).
mod process {
    /// (gauge name, value) for resident memory, open descriptors and threads.
    pub fn figures() -> Vec<(&'static str, i64)> {
        let mut figures = Vec::new();
        if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
            for line in status.lines() {
                let mut words = line.split_whitespace();
                match (
                    words.next(),
                    words.next().and_then(|v| v.parse::<i64>().ok()),
                ) {
                    (Some("VmRSS:"), Some(kib)) => {
                        figures.push(("process_resident_memory_bytes", kib * 1024))
                    }
                    (Some("Threads:"), Some(threads)) => figures.push(("process_threads", threads)),
                    _ => {}
                }
            }
        }
        if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
            // The listing itself holds one descriptor while it runs.
            let open = entries.count().saturating_sub(1);
            figures.push(("process_open_fds", i64::try_from(open).unwrap_or(i64::MAX)));
        }
        figures
    }

    /// When the process started, in Unix seconds: boot time (`/proc/stat`) plus the start tick
    /// of `/proc/self/stat`, at the kernel's usual 100 ticks a second.
    pub fn start_time_seconds() -> Option<i64> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The command name (field 2) may hold spaces and parentheses: count from the last `)`.
        let after_name = &stat[stat.rfind(')')? + 1..];
        let start_ticks: i64 = after_name.split_whitespace().nth(19)?.parse().ok()?;
        let boot = std::fs::read_to_string("/proc/stat").ok()?;
        let boot_time: i64 = boot
            .lines()
            .find_map(|line| line.strip_prefix("btime "))?
            .trim()
            .parse()
            .ok()?;
        Some(boot_time + start_ticks / 100)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_and_account_labels_outside_the_configuration_are_unknown() {
        let mut accounts = BTreeMap::new();
        accounts.insert("paygate".to_string(), BTreeSet::from(["main".to_string()]));
        let bounds = LabelBounds { accounts };
        let bounded = bounds.bound(&[("provider", "paygate"), ("account", "other")]);
        assert_eq!(bounded[0].1, LabelValue("paygate".into()));
        assert_eq!(bounded[1].1, LabelValue(UNKNOWN.into()));
        let bounded = bounds.bound(&[("provider", "paygate\r\nX-Evil: 1"), ("account", "main")]);
        assert_eq!(bounded[0].1, LabelValue(UNKNOWN.into()));
        assert_eq!(bounded[1].1, LabelValue(UNKNOWN.into()));
    }

    #[test]
    fn series_found_through_the_thread_cache_are_the_families_own() {
        let first = Metrics::new();
        let second = Metrics::new();
        let mut accounts = BTreeMap::new();
        accounts.insert("paygate".to_string(), BTreeSet::from(["main".to_string()]));
        let labels = [("provider", "paygate"), ("result", "stored")];
        // Before the provider is configured its events count as `unknown`.
        first.increment("gatehouse_webhook_events_total", &labels);
        let unknown = [("provider", "unknown"), ("result", "stored")];
        assert_eq!(first.counter("gatehouse_webhook_events_total", &unknown), 1);
        first.set_bounds(LabelBounds { accounts });
        for _ in 0..3 {
            first.increment("gatehouse_webhook_events_total", &labels);
        }
        // From another thread: its own cache, the same series.
        std::thread::scope(|scope| {
            scope.spawn(|| first.increment_by("gatehouse_webhook_events_total", &labels, 2));
        });
        assert_eq!(first.counter("gatehouse_webhook_events_total", &labels), 5);
        assert_eq!(
            first.counter("gatehouse_webhook_events_total", &unknown),
            1,
            "once configured, paygate's events are its own"
        );
        assert!(
            first.render().contains(
                "gatehouse_webhook_events_total{provider=\"paygate\",result=\"stored\"} 5"
            ),
            "{}",
            first.render()
        );
        // Another instance's series are its own, whatever this thread's cache holds.
        second.increment("gatehouse_webhook_events_total", &labels);
        assert_eq!(
            second.counter(
                "gatehouse_webhook_events_total",
                &[("provider", "unknown"), ("result", "stored")]
            ),
            1
        );
        assert_eq!(first.counter("gatehouse_webhook_events_total", &labels), 5);
        // Histograms too.
        let route = [("method", "GET"), ("route", "/healthz"), ("status", "200")];
        for _ in 0..4 {
            first.observe(
                "gatehouse_http_request_duration_seconds",
                &route,
                Duration::from_millis(3),
            );
        }
        assert!(
            first.render().contains(
                "gatehouse_http_request_duration_seconds_count{method=\"GET\",route=\"/healthz\",status=\"200\"} 4"
            ),
            "{}",
            first.render()
        );
    }

    #[test]
    fn a_method_outside_the_standard_nine_is_other() {
        let bounds = LabelBounds::default();
        for method in STANDARD_METHODS {
            assert_eq!(
                bounds.bound(&[("method", method)])[0].1,
                LabelValue(method.into())
            );
        }
        for made_up in ["EVIL1", "get", "PROPFIND", ""] {
            assert_eq!(
                bounds.bound(&[("method", made_up)])[0].1,
                LabelValue(OTHER_METHOD.into()),
                "{made_up}"
            );
        }
    }

    #[test]
    fn label_values_are_escaped_and_every_family_has_help_and_type() {
        let metrics = Metrics::new();
        metrics.observe(
            "gatehouse_http_request_duration_seconds",
            &[
                ("method", "GET"),
                ("route", "a\"b\\c\nd\re"),
                ("status", "200"),
            ],
            Duration::from_millis(3),
        );
        let text = metrics.render();
        assert!(text.contains(r#"route="a\"b\\c\nd?e""#), "{text}");
        for (name, _, _) in COUNTERS {
            let base = name.strip_suffix("_total").unwrap_or(name);
            assert!(text.contains(&format!("# HELP {base} ")), "{base}");
            assert!(text.contains(&format!("# TYPE {base} counter")), "{base}");
        }
        assert!(text.contains("gatehouse_build_info{version="), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
