//! What operators see: request ids followed through the real `gatehouse serve`'s JSON logs,
//! `/metrics` parsed by a real OpenMetrics parser and opened by a scrape key, bounded metric
//! labels under a flood of random webhook paths, cursor paging through the ledger, and the
//! background reconciler at its configured period.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::Duration;

use gatehouse_e2e::plugin_file_name;
use gatehouse_e2e::{API_KEY, ApiHost, METRICS_KEY, free_port, gatehouse_binary, install, library};
use gatehouse_ledger::{NewEntry, request_hash};
use gatehouse_plugin_api::Command as PluginCommand;
use gatehouse_sim_common::{Fault, RunningSimulator};
use gatehouse_sim_paygateglobal::PayGateSimulator;
use openmetrics_parser::{MetricFamily, MetricsExposition, OpenMetricsType, OpenMetricsValue};
use serde_json::{Value, json};

use crate::reliability::figure;

const TOKEN: &str = "observability-paygate-token-77";
const CHARGES: &str = "/v1/paygateglobal/main/charges";

fn charge_body() -> Value {
    json!({"amount": {"minor_units": 2500, "currency": "XOF"}, "customer": {"phone": "90123456"},
           "payment_method": "FLOOZ", "description": "order 1"})
}

async fn setup() -> (ApiHost, PayGateSimulator, RunningSimulator) {
    let (simulator, running) = PayGateSimulator::start(TOKEN).await.expect("simulator");
    let api = ApiHost::start(
        &["gatehouse-plugin-paygateglobal"],
        &format!(
            "[providers.paygateglobal.accounts.main]\nbase_url = \"{}\"\ntimeout_ms = 1500\nsecrets = {{ auth_token = \"{TOKEN}\" }}\n",
            running.base_url()
        ),
    )
    .await;
    (api, simulator, running)
}

/// Whether a JSON log line belongs to the request `id`: the id in its own fields, in its
/// current span, or in any enclosing span.
fn belongs_to(line: &Value, id: &str) -> bool {
    line["fields"]["request_id"] == id
        || line["span"]["request_id"] == id
        || line["spans"]
            .as_array()
            .is_some_and(|spans| spans.iter().any(|span| span["request_id"] == id))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_charge_is_followed_by_its_request_id_through_the_json_logs() {
    let (_simulator, running) = PayGateSimulator::start(TOKEN).await.expect("simulator");
    let logs = tempfile::tempdir().expect("folder");
    let log_path = logs.path().join("gatehouse.log");
    let serve = ServeProcess::start(&running, Some(&log_path)).await;
    let base = serve.base.clone();
    let client = reqwest::Client::new();
    let request_id = "charge-trace-0001";
    let charge = async {
        let response = client
            .post(format!("{base}{CHARGES}"))
            .bearer_auth(API_KEY)
            .header("x-request-id", request_id)
            .json(&charge_body())
            .send()
            .await
            .expect("charge");
        let echoed = response.headers().get("x-request-id").cloned();
        let body: Value = response.json().await.expect("JSON");
        // An error names its request id in the body too; an invalid id is replaced.
        let refused = client
            .post(format!("{base}/v1/nowhere/main/charges"))
            .bearer_auth(API_KEY)
            .header("x-request-id", "not a valid id")
            .json(&charge_body())
            .send()
            .await
            .expect("refused charge");
        let made_id = refused
            .headers()
            .get("x-request-id")
            .and_then(|value| value.to_str().ok())
            .map(str::to_string);
        let refusal: Value = refused.json().await.expect("JSON");
        // A provider exchange that went wrong (a 500 here) is logged at `info`; the charge's,
        // which went as expected, is not (`debug`).
        running.faults.push(Fault::Status(500, "{}".into()));
        let balance = client
            .get(format!("{base}/v1/paygateglobal/main/balance"))
            .bearer_auth(API_KEY)
            .header("x-request-id", "balance-trace-0001")
            .send()
            .await
            .expect("balance");
        assert!(!balance.status().is_success(), "the provider answered 500");
        (echoed, body, made_id, refusal)
    };
    let (echoed, body, made_id, refusal) = charge.await;
    // Give the last lines a moment to reach the file, then stop the host.
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(serve);

    assert_eq!(
        echoed.as_ref().and_then(|value| value.to_str().ok()),
        Some(request_id)
    );
    let status = body["status"]
        .as_str()
        .expect("an outcome status")
        .to_string();
    let made_id = made_id.expect("an id is made when the caller's is not valid");
    assert_ne!(made_id, "not a valid id");
    assert_eq!(
        refusal["error"]["request_id"],
        made_id.as_str(),
        "{refusal}"
    );
    assert_eq!(refusal["error"]["code"], "unknown_provider");

    let text = std::fs::read_to_string(&log_path).expect("log");
    assert!(!text.contains(TOKEN), "a secret reached the log");
    let lines: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    let mine: Vec<&Value> = lines
        .iter()
        .filter(|line| belongs_to(line, request_id))
        .collect();
    let message = |line: &Value| line["fields"]["message"].as_str().unwrap_or("").to_string();
    let access = mine
        .iter()
        .find(|line| line["target"] == "gatehouse::access")
        .unwrap_or_else(|| panic!("no access line for the request: {mine:#?}"));
    assert_eq!(access["fields"]["method"], "POST");
    assert_eq!(
        access["fields"]["route"],
        "/v1/{provider}/{account}/charges"
    );
    assert_eq!(access["fields"]["status"], 200);
    assert_eq!(access["fields"]["provider"], "paygateglobal");
    assert_eq!(access["fields"]["account"], "main");
    assert_eq!(access["fields"]["outcome"], status.as_str());
    assert!(access["fields"]["duration_ms"].as_f64().is_some());
    assert!(
        !mine.iter().any(|line| message(line) == "provider request"),
        "an exchange that went as expected is a debug line: {mine:#?}"
    );
    let provider_line = lines
        .iter()
        .filter(|line| belongs_to(line, "balance-trace-0001"))
        .find(|line| message(line) == "provider request")
        .unwrap_or_else(|| panic!("no provider request line for the failed exchange: {lines:#?}"));
    assert_eq!(provider_line["level"], "INFO", "{provider_line}");
    assert_eq!(provider_line["fields"]["status"], "500", "{provider_line}");
    assert!(
        provider_line["spans"].as_array().is_some_and(|spans| spans
            .iter()
            .any(|span| span["name"] == "flow" && span["operation"] == "balance")),
        "{provider_line}"
    );
    // The access line names the ledger entry; the ledger's own lines per charge are at `debug`,
    // not in the default `info` log (they cost a charge two of its four lines).
    assert_eq!(access["fields"]["reference"], body["reference"], "{access}");
    assert!(
        body["reference"]
            .as_str()
            .is_some_and(|id| id.starts_with("gh_")),
        "{body}"
    );
    for ledger_message in ["ledger entry reserved", "ledger outcome recorded"] {
        assert!(
            !lines.iter().any(|line| message(line) == ledger_message),
            "`{ledger_message}` is a debug line: {mine:#?}"
        );
    }
    // Lines of other requests do not carry this id.
    assert!(
        lines
            .iter()
            .filter(|line| belongs_to(line, &made_id))
            .all(|line| !belongs_to(line, request_id))
    );
}

type Exposition = MetricsExposition<OpenMetricsType, OpenMetricsValue>;

async fn scrape(api: &ApiHost, key: &str) -> (String, String) {
    let response = api
        .client
        .get(format!("{}/metrics", api.base_url))
        .bearer_auth(key)
        .send()
        .await
        .expect("scrape");
    assert_eq!(response.status(), 200);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
        .to_string();
    (content_type, response.text().await.expect("text"))
}

/// Parses an exposition with openmetrics-parser, family by family: its PEG grammar merges a
/// family without samples (which the OpenMetrics specification allows: "a MetricFamily MAY have
/// zero or more Metrics") into the next one, so each family is parsed as a document of its own,
/// and the whole must end with `# EOF`.
fn parse(text: &str) -> Exposition {
    assert!(text.ends_with("# EOF\n"), "no `# EOF` at the end");
    let body = text.strip_suffix("# EOF\n").unwrap_or(text);
    let mut chunks: Vec<String> = Vec::new();
    for line in body.lines() {
        if line.starts_with("# HELP ") || chunks.is_empty() {
            chunks.push(String::new());
        }
        if let Some(chunk) = chunks.last_mut() {
            chunk.push_str(line);
            chunk.push('\n');
        }
    }
    let mut exposition = Exposition::new();
    for chunk in chunks {
        let document = format!("{chunk}# EOF\n");
        let parsed = openmetrics_parser::openmetrics::parse_openmetrics(&document)
            .unwrap_or_else(|error| panic!("not valid OpenMetrics: {error:?}\n{document}"));
        for (name, family) in parsed.families {
            assert!(
                exposition.families.insert(name.clone(), family).is_none(),
                "family {name} twice"
            );
        }
    }
    exposition
}

/// The value of the sample of `family` whose labels include `labels`.
fn value(family: &MetricFamily<OpenMetricsType, OpenMetricsValue>, labels: &[(&str, &str)]) -> f64 {
    let sample = family
        .iter_samples()
        .find(|sample| {
            let set = sample.get_labelset().expect("labels");
            let pairs: BTreeMap<&String, &String> = set.iter().collect();
            labels.iter().all(|(name, wanted)| {
                pairs
                    .iter()
                    .any(|(key, value)| key.as_str() == *name && value.as_str() == *wanted)
            })
        })
        .unwrap_or_else(|| panic!("no sample {labels:?} in {}", family.family_name));
    match &sample.value {
        OpenMetricsValue::Counter(counter) => counter.value.as_f64(),
        OpenMetricsValue::Gauge(gauge) => gauge.as_f64(),
        OpenMetricsValue::Histogram(histogram) => histogram.count.unwrap_or(0) as f64,
        other => panic!("unexpected value {other:?}"),
    }
}

const FAMILIES: &[(&str, OpenMetricsType)] = &[
    ("gatehouse_build", OpenMetricsType::Info),
    ("gatehouse_requests", OpenMetricsType::Counter),
    ("gatehouse_outcomes", OpenMetricsType::Counter),
    ("gatehouse_errors", OpenMetricsType::Counter),
    ("gatehouse_provider_requests", OpenMetricsType::Counter),
    (
        "gatehouse_provider_latency_seconds",
        OpenMetricsType::Histogram,
    ),
    (
        "gatehouse_http_request_duration_seconds",
        OpenMetricsType::Histogram,
    ),
    (
        "gatehouse_plugin_calls_over_budget",
        OpenMetricsType::Counter,
    ),
    ("gatehouse_plugin_loads", OpenMetricsType::Counter),
    ("gatehouse_plugin_threads_abandoned", OpenMetricsType::Gauge),
    ("gatehouse_plugin_libraries_loaded", OpenMetricsType::Gauge),
    ("gatehouse_plugins_active", OpenMetricsType::Gauge),
    ("gatehouse_accounts_paused", OpenMetricsType::Gauge),
    ("gatehouse_fleet_live_hosts", OpenMetricsType::Gauge),
    ("gatehouse_config_reloads", OpenMetricsType::Counter),
    ("gatehouse_webhook_events", OpenMetricsType::Counter),
    ("gatehouse_webhook_forwarded", OpenMetricsType::Counter),
    (
        "gatehouse_webhook_forward_retries",
        OpenMetricsType::Counter,
    ),
    (
        "gatehouse_webhook_forward_lag_seconds",
        OpenMetricsType::Gauge,
    ),
    ("gatehouse_reconciliation_passes", OpenMetricsType::Counter),
    ("gatehouse_reconciliation_entries", OpenMetricsType::Counter),
    ("gatehouse_ledger_entries", OpenMetricsType::Gauge),
    ("process_resident_memory_bytes", OpenMetricsType::Gauge),
    ("process_open_fds", OpenMetricsType::Gauge),
    ("process_threads", OpenMetricsType::Gauge),
    ("process_start_time_seconds", OpenMetricsType::Gauge),
];

#[tokio::test]
async fn metrics_parse_as_openmetrics_and_open_with_a_scrape_key_alone() {
    let (api, _simulator, _running) = setup().await;

    // The scrape key opens /metrics and nothing else.
    for (method, path) in [
        (reqwest::Method::GET, "/v1/plugins"),
        (reqwest::Method::GET, "/v1/ledger"),
        (reqwest::Method::POST, CHARGES),
    ] {
        let response = api
            .client
            .request(method, format!("{}{path}", api.base_url))
            .bearer_auth(METRICS_KEY)
            .json(&charge_body())
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 401, "{path} with the scrape key");
    }
    let unauthenticated = reqwest::get(format!("{}/metrics", api.base_url))
        .await
        .expect("scrape");
    assert_eq!(unauthenticated.status(), 401);

    // Before any command: every family with HELP and TYPE, counters at zero.
    let (content_type, text) = scrape(&api, METRICS_KEY).await;
    assert_eq!(
        content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let first = parse(&text);
    for (name, kind) in FAMILIES {
        let family = first
            .families
            .get(*name)
            .unwrap_or_else(|| panic!("family {name} missing:\n{text}"));
        assert_eq!(family.family_type, *kind, "{name}");
        assert!(!family.help.is_empty(), "{name} has no HELP");
    }
    for line in text.lines().filter(|line| line.starts_with("# TYPE ")) {
        let name = line.split_whitespace().nth(2).expect("name");
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "{name} has no HELP"
        );
    }
    assert_eq!(
        value(
            &first.families["gatehouse_config_reloads"],
            &[("result", "applied")]
        ),
        0.0
    );
    assert_eq!(
        value(&first.families["gatehouse_reconciliation_passes"], &[]),
        0.0
    );
    assert!(value(&first.families["process_resident_memory_bytes"], &[]) > 1_000_000.0);
    assert!(value(&first.families["process_open_fds"], &[]) > 0.0);
    assert!(value(&first.families["process_threads"], &[]) > 1.0);
    assert!(value(&first.families["process_start_time_seconds"], &[]) > 1_600_000_000.0);
    assert_eq!(value(&first.families["gatehouse_plugins_active"], &[]), 1.0);

    // A charge, a refused charge and a reconciliation pass show in their families.
    let (status, answer) = api.post(CHARGES, charge_body()).await;
    assert_eq!(status, 200, "{answer}");
    let charge_status = answer["status"].as_str().expect("status").to_string();
    let (status, _) = api
        .post("/v1/paygateglobal/other/charges", charge_body())
        .await;
    assert_eq!(status, 404);
    let (status, _) = api.post("/v1/reconcile", json!({})).await;
    assert_eq!(status, 200);
    let (_, text) = scrape(&api, API_KEY).await;
    assert!(!text.contains(TOKEN));
    let after = parse(&text);
    let charge_labels = [
        ("provider", "paygateglobal"),
        ("account", "main"),
        ("operation", "charge"),
    ];
    assert_eq!(
        value(&after.families["gatehouse_requests"], &charge_labels),
        1.0
    );
    let mut outcome_labels = charge_labels.to_vec();
    outcome_labels.push(("status", &charge_status));
    assert_eq!(
        value(&after.families["gatehouse_outcomes"], &outcome_labels),
        1.0
    );
    // The unconfigured account is `unknown`, with the refusal's code.
    assert_eq!(
        value(
            &after.families["gatehouse_errors"],
            &[
                ("provider", "paygateglobal"),
                ("account", "unknown"),
                ("code", "unknown_account")
            ]
        ),
        1.0
    );
    let ledger_total: f64 = [
        "sending",
        "succeeded",
        "pending",
        "failed",
        "unknown",
        "needs_operator",
    ]
    .iter()
    .map(|state| {
        value(
            &after.families["gatehouse_ledger_entries"],
            &[("state", state)],
        )
    })
    .sum();
    assert_eq!(ledger_total, 1.0);
    assert_eq!(
        value(&after.families["gatehouse_reconciliation_passes"], &[]),
        1.0
    );
    assert_eq!(
        value(
            &after.families["gatehouse_http_request_duration_seconds"],
            &[
                ("method", "POST"),
                ("route", "/v1/{provider}/{account}/charges"),
                ("status", "200")
            ]
        ),
        1.0
    );
    assert!(
        value(
            &after.families["gatehouse_provider_latency_seconds"],
            &[("provider", "paygateglobal")]
        ) >= 1.0
    );
}

/// Resident memory of process `pid`, from `/proc/<pid>/status`.
fn resident_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                line.strip_prefix("VmRSS:").and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
            })
        })
        .map_or(0, |kib| kib * 1024)
}

/// `/metrics` of the host at `base`, opened with the scrape key.
async fn scrape_with_key(client: &reqwest::Client, base: &str) -> String {
    let response = client
        .get(format!("{base}/metrics"))
        .bearer_auth(METRICS_KEY)
        .send()
        .await
        .expect("scrape");
    assert_eq!(response.status(), 200);
    response.text().await.expect("text")
}

/// Issue 21's attack: 20 000 `POST /webhooks/<random>/main` (no key needed) against the real
/// `gatehouse serve`, a process of its own, so its memory is the host's alone. Labels come only
/// from the configuration, so `/metrics` stays within a few KiB of where it was, and the host's
/// resident memory within a stated bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_webhook_paths_leave_metrics_and_memory_bounded() {
    const PATHS: usize = 20_000;
    const METRICS_GROWTH_BOUND: usize = 4 * 1024;
    const RSS_GROWTH_BOUND: u64 = 12 * 1024 * 1024;
    let (_simulator, running) = PayGateSimulator::start(TOKEN).await.expect("simulator");
    let serve = ServeProcess::start(&running, None).await;
    let base = serve.base.clone();
    let client = reqwest::Client::new();
    let send = |name: String| {
        let client = client.clone();
        let url = format!("{base}/webhooks/{name}/main");
        async move {
            client
                .post(url)
                .body("{}")
                .send()
                .await
                .map(|response| response.status().as_u16())
        }
    };
    // One batch first, so the connections, the series the flood may add and the allocator's
    // working set exist before the baseline.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let batch_of_names = |seed: &mut u64| -> Vec<String> {
        (0..100)
            .map(|_| {
                *seed ^= *seed << 13;
                *seed ^= *seed >> 7;
                *seed ^= *seed << 17;
                // Random names, some with characters a label would have to escape.
                match *seed % 4 {
                    0 => format!("paygate%0D%0AX-Evil%3A{:x}", *seed),
                    1 => format!("p%22{:x}%5C%00", *seed),
                    _ => format!("{:x}", *seed),
                }
            })
            .collect()
    };
    for name in batch_of_names(&mut seed) {
        let _ = send(name).await;
    }
    let before = scrape_with_key(&client, &base).await;
    let rss_before = resident_bytes(serve.child.id());
    let mut statuses = BTreeSet::new();
    for batch in 0..(PATHS / 100) {
        let requests: Vec<_> = batch_of_names(&mut seed).into_iter().map(&send).collect();
        for status in futures_join(requests).await {
            statuses.insert(status.unwrap_or_else(|error| panic!("batch {batch}: {error}")));
        }
    }
    let after = scrape_with_key(&client, &base).await;
    let rss_after = resident_bytes(serve.child.id());
    parse(&after);
    assert!(
        !after.contains("X-Evil"),
        "a caller's text reached the metrics"
    );
    assert!(!after.contains('\r') && !after.contains('\0'));
    let growth = after.len().saturating_sub(before.len());
    let rss_growth = rss_after.saturating_sub(rss_before);
    figure(
        "observability.random_webhook_paths",
        format!(
            "{PATHS} random webhook paths: /metrics {} -> {} bytes (+{growth}, bound {METRICS_GROWTH_BOUND}); host RSS {} -> {} KiB (+{} KiB, bound {} KiB)",
            before.len(),
            after.len(),
            rss_before / 1024,
            rss_after / 1024,
            rss_growth / 1024,
            RSS_GROWTH_BOUND / 1024
        ),
    );
    assert!(statuses.iter().all(|status| *status == 404), "{statuses:?}");
    assert!(
        growth <= METRICS_GROWTH_BOUND,
        "/metrics grew by {growth} bytes ({} -> {})",
        before.len(),
        after.len()
    );
    assert!(
        rss_growth <= RSS_GROWTH_BOUND,
        "RSS grew by {rss_growth} bytes"
    );
}

/// The same with the request method, the one label a caller writes directly: HTTP allows any
/// token as a method, and each new one would be a new series of
/// `gatehouse_http_request_duration_seconds` (memory an unauthenticated caller could grow without
/// bound). Methods outside the standard nine are counted as `OTHER`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_request_methods_leave_metrics_bounded() {
    const METHODS: usize = 2_000;
    const METRICS_GROWTH_BOUND: usize = 4 * 1024;
    let (_simulator, running) = PayGateSimulator::start(TOKEN).await.expect("simulator");
    let serve = ServeProcess::start(&running, None).await;
    let base = serve.base.clone();
    let client = reqwest::Client::new();
    let send = |method: String| {
        let client = client.clone();
        let url = format!("{base}/healthz");
        async move {
            let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a token");
            client
                .request(method, url)
                .send()
                .await
                .map(|response| response.status().as_u16())
        }
    };
    let names = |from: usize, count: usize| -> Vec<String> {
        (from..from + count)
            .map(|index| format!("EVIL{index:X}"))
            .collect()
    };
    // One request of an odd method first, so the `OTHER` series exists before the baseline.
    for method in names(0, 1) {
        let _ = send(method).await;
    }
    let before = scrape_with_key(&client, &base).await;
    let mut statuses = BTreeSet::new();
    for batch in 0..(METHODS / 100) {
        let requests: Vec<_> = names(1 + batch * 100, 100).into_iter().map(&send).collect();
        for status in futures_join(requests).await {
            statuses.insert(status.unwrap_or_else(|error| panic!("batch {batch}: {error}")));
        }
    }
    let after = scrape_with_key(&client, &base).await;
    parse(&after);
    let growth = after.len().saturating_sub(before.len());
    figure(
        "observability.random_request_methods",
        format!(
            "{METHODS} requests with as many made-up methods: /metrics {} -> {} bytes (+{growth}, bound {METRICS_GROWTH_BOUND}); answers {statuses:?}",
            before.len(),
            after.len()
        ),
    );
    assert!(
        !after.contains("EVIL"),
        "a caller's method became a label value"
    );
    assert!(
        after.contains("method=\"OTHER\""),
        "the made-up methods are counted together"
    );
    assert!(
        growth <= METRICS_GROWTH_BOUND,
        "/metrics grew by {growth} bytes ({} -> {})",
        before.len(),
        after.len()
    );
    assert!(
        statuses
            .iter()
            .all(|status| *status == 405 || *status == 404),
        "{statuses:?}"
    );
}

/// The real `gatehouse serve` on a free loopback port over a temporary folder with the
/// PayGateGlobal plugin; killed when dropped.
struct ServeProcess {
    child: std::process::Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl ServeProcess {
    /// Starts the host and waits until it is ready; `log` receives its stderr, in JSON lines.
    async fn start(running: &RunningSimulator, log: Option<&std::path::Path>) -> Self {
        Self::start_with(running, log, "").await
    }

    /// [`ServeProcess::start`] with `host_settings` (TOML lines) in its `[host]` table.
    async fn start_with(
        running: &RunningSimulator,
        log: Option<&std::path::Path>,
        host_settings: &str,
    ) -> Self {
        let dir = tempfile::tempdir().expect("folder");
        let plugins = dir.path().join("plugins");
        std::fs::create_dir(&plugins).expect("plugins");
        install(
            &library("gatehouse-plugin-paygateglobal"),
            &plugins,
            &plugin_file_name("paygateglobal"),
        );
        let port = free_port();
        let config = dir.path().join("plugins.toml");
        std::fs::write(
            &config,
            format!(
                "[host]\nplugins_dir = \"plugins\"\nledger = \"ledger.sqlite\"\nlisten = \"127.0.0.1:{port}\"\n{host_settings}\n[api]\nkeys = [\"{API_KEY}\"]\nmetrics_keys = [\"{METRICS_KEY}\"]\n\n[providers.paygateglobal.accounts.main]\nbase_url = \"{}\"\nsecrets = {{ auth_token = \"{TOKEN}\" }}\n",
                running.base_url()
            ),
        )
        .expect("config");
        let stderr = match log {
            Some(path) => Stdio::from(std::fs::File::create(path).expect("log file")),
            None => Stdio::null(),
        };
        let child = Command::new(gatehouse_binary())
            .args(["--config", config.to_str().expect("utf-8 path"), "serve"])
            .env("GATEHOUSE_LOG_FORMAT", "json")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("gatehouse starts");
        let base = format!("http://127.0.0.1:{port}");
        let serve = Self {
            child,
            base,
            _dir: dir,
        };
        for _ in 0..2400 {
            if let Ok(response) = reqwest::get(format!("{}/readyz", serve.base)).await
                && response.status() == 200
            {
                return serve;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the host did not become ready at {}", serve.base);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_reconciles_in_the_background_every_configured_interval() {
    let (simulator, running) = PayGateSimulator::start(TOKEN).await.expect("simulator");
    let serve = ServeProcess::start_with(&running, None, "reconcile_interval_secs = 1\n").await;
    let client = reqwest::Client::new();
    let charge: Value = client
        .post(format!("{}{CHARGES}", serve.base))
        .bearer_auth(API_KEY)
        .json(&charge_body())
        .send()
        .await
        .expect("charge")
        .json()
        .await
        .expect("JSON");
    assert_eq!(charge["status"], "pending", "{charge}");
    let reference = charge["reference"].as_str().expect("reference").to_string();
    // The customer confirms on their phone; no webhook is configured, so only a status call by
    // the reconciler can learn it.
    assert!(
        simulator
            .settle(&reference, gatehouse_sim_paygateglobal::PAID)
            .await,
        "a pending payment"
    );
    let mut state = Value::Null;
    for _ in 0..100 {
        let entry: Value = client
            .get(format!("{}/v1/ledger/{reference}", serve.base))
            .bearer_auth(API_KEY)
            .send()
            .await
            .expect("entry")
            .json()
            .await
            .expect("JSON");
        state = entry["entry"]["state"].clone();
        if state == "succeeded" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        state, "succeeded",
        "settled by a background pass within 10 s of a 1 s period"
    );
    assert!(
        simulator
            .status_asked()
            .get(&reference)
            .is_some_and(|asked| *asked >= 1),
        "by asking the provider: {:?}",
        simulator.status_asked()
    );
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn futures_join<F>(futures: Vec<F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut outputs = Vec::with_capacity(handles.len());
    for handle in handles {
        outputs.push(handle.await.expect("task"));
    }
    outputs
}

/// Inserts `count` entries straight into the ledger file, from several threads so the group
/// commit shares the fsyncs; returns their ids.
fn insert_entries(
    ledger: &std::sync::Arc<dyn gatehouse_ledger::Ledger>,
    prefix: &str,
    count: usize,
) -> Vec<String> {
    let threads = 8;
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|thread| {
                let ledger = ledger.clone();
                scope.spawn(move || {
                    let mut ids = Vec::new();
                    for index in (thread..count).step_by(threads) {
                        let id = format!("gh_{prefix}_{index:05}");
                        let command = PluginCommand::Status {
                            transaction_id: Some(id.clone()),
                            reference: None,
                            of: None,
                            amount: None,
                            extra: Default::default(),
                        };
                        ledger
                            .begin(NewEntry {
                                id: id.clone(),
                                provider: "paging".into(),
                                account: "main".into(),
                                operation: command.operation(),
                                idempotency_key: None,
                                request_hash: request_hash("paging", "main", &command),
                                command,
                                actor: None,
                            })
                            .expect("insert");
                        ids.push(id);
                    }
                    ids
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|handle| handle.join().expect("inserter"))
            .collect()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursor_paging_finds_each_of_5000_entries_once_while_entries_are_inserted() {
    let (api, _simulator, _running) = setup().await;
    let ledger = api.ledger.clone();
    let originals = tokio::task::spawn_blocking(move || insert_entries(&ledger, "old", 5000))
        .await
        .expect("inserts");
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            None => "/v1/ledger?provider=paging&limit=250".to_string(),
            Some(last) => format!("/v1/ledger?provider=paging&limit=250&starting_after={last}"),
        };
        let (status, page) = api.get(&path).await;
        assert_eq!(status, 200, "{page}");
        let entries = page["entries"].as_array().expect("entries");
        for entry in entries {
            let id = entry["id"].as_str().expect("id").to_string();
            *seen.entry(id).or_default() += 1;
            assert!(
                entry["created_at"]
                    .as_str()
                    .is_some_and(|text| text.ends_with('Z')),
                "{entry}"
            );
        }
        pages += 1;
        // New entries arrive between pages; they belong before the first page.
        let ledger = api.ledger.clone();
        let prefix = format!("new{pages}");
        tokio::task::spawn_blocking(move || insert_entries(&ledger, &prefix, 16))
            .await
            .expect("inserts");
        if !page["has_more"].as_bool().expect("has_more") {
            break;
        }
        cursor = entries
            .last()
            .and_then(|entry| entry["id"].as_str())
            .map(str::to_string);
        assert!(pages < 100, "paging does not end");
    }
    assert_eq!(pages, 20);
    for id in &originals {
        assert_eq!(seen.get(id), Some(&1), "{id} seen {:?} times", seen.get(id));
    }
    assert!(seen.values().all(|times| *times == 1));
    // An unknown cursor names nothing (404, like an unknown entry); a limit out of range is
    // refused, not clamped.
    let (status, body) = api.get("/v1/ledger?starting_after=gh_nope").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "not_found", "{body}");
    let (status, body) = api.get("/v1/events?starting_after=-1").await;
    assert_eq!(status, 400, "{body}");
    for query in [
        "/v1/ledger?provider=",
        "/v1/ledger?account=",
        "/v1/ledger?starting_after=",
    ] {
        let (status, body) = api.get(query).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|message| message.ends_with("must not be empty")),
            "{query}: {body}"
        );
    }
    for query in [
        "/v1/ledger?limit=0",
        "/v1/ledger?limit=1001",
        "/v1/events?limit=1001",
    ] {
        let (status, body) = api.get(query).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|message| message.contains("limit must be 1 to 1000")),
            "{query}: {body}"
        );
    }
    let (status, events) = api.get("/v1/events?limit=10").await;
    assert_eq!(status, 200);
    assert_eq!(events["has_more"], false);
    figure(
        "observability.paging",
        format!(
            "5000 entries in {pages} pages of 250 with 16 inserts between pages: each seen once"
        ),
    );
}

/// A request and the status it must get: (method, concrete path, documented path, body, with
/// the API key, status).
type Case<'a> = (reqwest::Method, &'a str, &'a str, Option<String>, bool, u16);

/// The schema a `$ref` names in the document.
fn schema<'a>(document: &'a Value, reference: &str) -> &'a Value {
    let name = reference
        .strip_prefix("#/components/schemas/")
        .unwrap_or_else(|| panic!("not a schema reference: {reference}"));
    &document["components"]["schemas"][name]
}

/// Every answer these requests get is documented for its route and method: the status, the
/// `X-Request-Id` header, and a JSON body holding the required fields of the documented schema
/// (the error envelope's `code`, `message` and `request_id` included).
#[tokio::test]
async fn every_answer_observed_is_documented_in_the_openapi_document() {
    let (api, _simulator, _running) = setup().await;
    let document: Value =
        serde_json::from_str(gatehouse_service::api::OPENAPI_JSON).expect("the document is JSON");
    let big = "x".repeat(2 * 1024 * 1024);
    let cases: Vec<Case> = vec![
        // (method, concrete path, documented path, body, with key, expected status)
        (
            reqwest::Method::GET,
            "/healthz",
            "/healthz",
            None,
            false,
            200,
        ),
        (reqwest::Method::GET, "/readyz", "/readyz", None, false, 200),
        (
            reqwest::Method::GET,
            "/v1/plugins",
            "/v1/plugins",
            None,
            true,
            200,
        ),
        (
            reqwest::Method::GET,
            "/v1/plugins",
            "/v1/plugins",
            None,
            false,
            401,
        ),
        (
            reqwest::Method::POST,
            "/v1/plugins",
            "/v1/plugins",
            None,
            true,
            405,
        ),
        (
            reqwest::Method::POST,
            CHARGES,
            "/v1/{provider}/{account}/charges",
            Some(charge_body().to_string()),
            true,
            200,
        ),
        (
            reqwest::Method::POST,
            CHARGES,
            "/v1/{provider}/{account}/charges",
            Some("{not json".into()),
            true,
            400,
        ),
        (
            reqwest::Method::POST,
            CHARGES,
            "/v1/{provider}/{account}/charges",
            Some("{\"amount\": 5}".into()),
            true,
            422,
        ),
        (
            reqwest::Method::POST,
            CHARGES,
            "/v1/{provider}/{account}/charges",
            Some(big),
            true,
            413,
        ),
        (
            reqwest::Method::POST,
            "/v1/plugins/paygateglobal/install",
            "/v1/plugins/{provider}/install",
            Some("not a library".into()),
            false,
            401,
        ),
        (
            reqwest::Method::POST,
            "/v1/plugins/paygateglobal/install",
            "/v1/plugins/{provider}/install",
            Some("not a library".into()),
            true,
            422,
        ),
        (
            reqwest::Method::POST,
            "/v1/plugins/paygateglobal/rollback",
            "/v1/plugins/{provider}/rollback",
            None,
            true,
            422,
        ),
        (
            reqwest::Method::POST,
            "/v1/plugins/paygateglobal/rollback",
            "/v1/plugins/{provider}/rollback",
            Some("{not json".into()),
            true,
            400,
        ),
        (
            reqwest::Method::POST,
            "/v1/nowhere/main/charges",
            "/v1/{provider}/{account}/charges",
            Some(charge_body().to_string()),
            true,
            404,
        ),
        (
            reqwest::Method::POST,
            "/v1/paygateglobal/main/affiliate-payouts",
            "/v1/{provider}/{account}/affiliate-payouts",
            Some(
                json!({"amount": {"minor_units": 100, "currency": "XOF"}, "affiliate_id": "a1"})
                    .to_string(),
            ),
            true,
            422,
        ),
        (
            reqwest::Method::GET,
            "/v1/ledger?limit=2",
            "/v1/ledger",
            None,
            true,
            200,
        ),
        (
            reqwest::Method::GET,
            "/v1/ledger?starting_after=gh_none",
            "/v1/ledger",
            None,
            true,
            404,
        ),
        (
            reqwest::Method::GET,
            "/v1/ledger/gh_none",
            "/v1/ledger/{id}",
            None,
            true,
            404,
        ),
        (
            reqwest::Method::GET,
            "/v1/events?limit=5",
            "/v1/events",
            None,
            true,
            200,
        ),
        (
            reqwest::Method::GET,
            "/v1/events?limit=abc",
            "/v1/events",
            None,
            true,
            400,
        ),
        (
            reqwest::Method::POST,
            "/v1/reconcile",
            "/v1/reconcile",
            None,
            true,
            200,
        ),
    ];
    for (method, path, documented, body, with_key, expected) in cases {
        let mut request = api
            .client
            .request(method.clone(), format!("{}{path}", api.base_url));
        if with_key {
            request = request.bearer_auth(API_KEY);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        let response = request.send().await.expect("answer");
        let status = response.status().as_u16();
        let request_id = response
            .headers()
            .get("x-request-id")
            .and_then(|value| value.to_str().ok())
            .map(str::to_string);
        let text = response.text().await.expect("body");
        assert_eq!(status, expected, "{method} {path}: {text}");
        if status == 405 {
            // A method a path does not take has no operation to list it under: the path is
            // documented, and the answer is the error envelope with the request id.
            assert!(document["paths"][documented].is_object(), "{documented}");
            let body: Value = serde_json::from_str(&text).expect("JSON");
            assert_eq!(body["error"]["code"], "method_not_allowed");
            assert_eq!(
                body["error"]["request_id"],
                request_id.as_deref().unwrap_or("")
            );
            continue;
        }
        let operation = &document["paths"][documented][method.as_str().to_ascii_lowercase()];
        assert!(
            operation.is_object(),
            "{method} {documented} is not documented"
        );
        let answer = &operation["responses"][status.to_string()];
        assert!(
            answer.is_object(),
            "{method} {documented} answered {status}, which the document does not list"
        );
        assert!(
            answer["headers"]["X-Request-Id"].is_object(),
            "{method} {documented} {status}: X-Request-Id not documented"
        );
        let request_id = request_id.expect("every answer has an X-Request-Id");
        if let Some(reference) = answer["content"]["application/json"]["schema"]["$ref"].as_str() {
            let body: Value = serde_json::from_str(&text)
                .unwrap_or_else(|_| panic!("{method} {path}: not JSON: {text}"));
            let schema = schema(&document, reference);
            let (object, schema) = if reference.ends_with("/Error") {
                assert_eq!(body["error"]["request_id"], request_id.as_str(), "{body}");
                (&body["error"], &schema["properties"]["error"])
            } else {
                (&body, schema)
            };
            for field in schema["required"].as_array().into_iter().flatten() {
                let field = field.as_str().expect("field name");
                assert!(
                    !object[field].is_null(),
                    "{method} {path} {status}: `{field}` required by {reference} is missing: {body}"
                );
            }
        }
    }
}
