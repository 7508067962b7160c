//! Reload storms and plugin faults not covered by `loading.rs`: 100 rewrites of a plugin file
//! while requests run, the `host.max_loaded_libraries` bound, a file removed while its requests
//! are in flight, a file overwritten in place (not the documented rename), and a plugin that
//! answers nonsense (an unparsable URL, a header with a line break, an endless flow, impossible
//! amounts).

use crate::reliability;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use gatehouse_core::loader::sha256_hex;
use gatehouse_core::registry::ScanEvent;
use gatehouse_core::{Config, DispatchError, Gateway};
use gatehouse_e2e::{execute, init_logging, install, library, plugin_file_name};
use gatehouse_plugin_api::{Details, ErrorKind, OutcomeStatus};
use gatehouse_service::{CommandAnswer, Service};
use gatehouse_sim_common::{Fault, RunningSimulator};
use gatehouse_sim_paygateglobal::PayGateSimulator;
use reliability::{PGG_TOKEN, figure, vm_rss_kib};
use serde_json::json;
use tempfile::TempDir;

const PGG: &str = "gatehouse-plugin-paygateglobal";
const PGG_NEXT: &str = "gatehouse-fixture-paygateglobal-next";
const NONSENSE: &str = "gatehouse-fixture-nonsense-plugin";

/// The memory figures are for this whole process: the tests of this file run one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The nonsense fixture is not in the harness's package list: build it here.
fn nonsense_library() -> std::path::PathBuf {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let status = std::process::Command::new(env!("CARGO"))
            .current_dir(root)
            .args(["build", "--quiet", "-p", NONSENSE])
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building {NONSENSE} failed");
    });
    library(NONSENSE)
}

struct Host {
    gateway: Gateway,
    service: Service,
    dir: TempDir,
    _simulator: PayGateSimulator,
    running: RunningSimulator,
}

impl Host {
    fn plugins(&self) -> std::path::PathBuf {
        self.dir.path().join("plugins")
    }

    async fn reload(&self) -> Vec<ScanEvent> {
        let gateway = self.gateway.clone();
        tokio::task::spawn_blocking(move || gateway.reload_plugins())
            .await
            .expect("scan")
    }

    async fn balance(&self, provider: &str) -> Result<CommandAnswer, DispatchError> {
        execute(
            &self.service,
            provider,
            "main",
            json!({"operation": "balance"}),
            None,
        )
        .await
    }

    async fn wait_for(&self, timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            if condition() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        condition()
    }

    fn version(&self) -> Option<String> {
        self.gateway
            .registry()
            .get("paygateglobal")
            .map(|plugin| plugin.manifest.plugin_version.clone())
    }
}

/// A gateway over its own folder and configuration (so `max_loaded_libraries` can be set), with
/// `first` installed as the PayGateGlobal plugin.
async fn host(first: &str, max_loaded_libraries: usize) -> Host {
    init_logging();
    let (simulator, running) = PayGateSimulator::start(PGG_TOKEN).await.expect("simulator");
    let dir = tempfile::tempdir().expect("folder");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).expect("plugins folder");
    install(
        &library(first),
        &plugins,
        &plugin_file_name("paygateglobal"),
    );
    let config = dir.path().join("plugins.toml");
    std::fs::write(
        &config,
        format!(
            "[host]\nplugins_dir = \"plugins\"\nledger = \"ledger.sqlite\"\nreload_debounce_ms = 20\n\
             plugin_call_budget_ms = 2000\nmax_loaded_libraries = {max_loaded_libraries}\n\n\
             [providers.paygateglobal.accounts.main]\nbase_url = \"{base}\"\ntimeout_ms = 3000\n\
             rate_limit_per_minute = 1000000\nsecrets = {{ auth_token = \"{PGG_TOKEN}\" }}\n\n\
             [providers.nonsense.accounts.main]\nbase_url = \"{base}\"\ntimeout_ms = 1000\n\
             secrets = {{ api_key = \"nonsense-key-1234\" }}\n",
            base = running.base_url()
        ),
    )
    .expect("config");
    let service = Service::open(Config::load(&config).expect("config is valid"))
        .await
        .expect("the service opens");
    Host {
        gateway: service.gateway().clone(),
        service,
        dir,
        _simulator: simulator,
        running,
    }
}

/// Runs `workers` clients sending balance reads until `stop`; returns (sent, failed).
fn clients(
    host: &Arc<Host>,
    workers: usize,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<(usize, usize)>> {
    (0..workers)
        .map(|_| {
            let (host, stop) = (host.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut sent, mut failed) = (0usize, 0usize);
                // Bounded in count as well as by `stop`.
                while !stop.load(Ordering::SeqCst) && sent < 20_000 {
                    match host.balance("paygateglobal").await {
                        Ok(done) if done.outcome.status == OutcomeStatus::Succeeded => {}
                        other => {
                            eprintln!("failed during the storm: {other:?}");
                            failed += 1;
                        }
                    }
                    sent += 1;
                    // Paced, so the storm's own loads are not starved of the two cores.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                (sent, failed)
            })
        })
        .collect()
}

async fn join(workers: Vec<tokio::task::JoinHandle<(usize, usize)>>) -> (usize, usize) {
    let mut totals = (0, 0);
    for worker in workers {
        let (sent, failed) = worker.await.expect("worker");
        totals = (totals.0 + sent, totals.1 + failed);
    }
    totals
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_rewrites_under_load_fail_no_request() {
    let _serial = SERIAL.lock().await;
    const REWRITES: usize = 100;
    const SERIES: usize = 10;
    let host = Arc::new(host(PGG_NEXT, 256).await);
    let watch = gatehouse_core::watcher::watch(&host.gateway).expect("watch");
    assert_eq!(host.version().as_deref(), Some("1.1.0"));
    let target = host.plugins().join(plugin_file_name("paygateglobal"));
    let stop = Arc::new(AtomicBool::new(false));
    let workers = clients(&host, 6, &stop);
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The storm: 100 rewrites (documented install: temporary file + rename), 10 ms apart,
    // alternating the two builds; the last (even) installs 1.1.0. The watcher reloads as the
    // debouncer lets it.
    let rss_before = vm_rss_kib();
    let loaded_before = host.gateway.registry().libraries_loaded();
    for rewrite in 1..=REWRITES {
        let package = if rewrite % 2 == 1 { PGG } else { PGG_NEXT };
        install(
            &library(package),
            &host.plugins(),
            &plugin_file_name("paygateglobal"),
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let final_sha = sha256_hex(&std::fs::read(&target).expect("file"));
    let settled = host
        .wait_for(Duration::from_secs(30), || {
            host.gateway
                .registry()
                .get("paygateglobal")
                .is_some_and(|plugin| plugin.sha256 == final_sha)
        })
        .await;
    assert!(settled, "the final version was not loaded");
    // Stop the watcher and let a trailing debounced scan finish (the count is stable).
    drop(watch);
    let mut stable = host.gateway.registry().libraries_loaded();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let now = host.gateway.registry().libraries_loaded();
        if now == stable {
            break;
        }
        stable = now;
    }
    let storm_loads = stable - loaded_before;
    let rss_storm = vm_rss_kib();

    // A series in which every rewrite is loaded (an explicit scan after each), for the memory
    // figure per load.
    let series_started = std::time::Instant::now();
    let mut series_events = Vec::new();
    for rewrite in 1..=SERIES {
        let (package, version) = if rewrite % 2 == 1 {
            (PGG, "1.0.0")
        } else {
            (PGG_NEXT, "1.1.0")
        };
        install(
            &library(package),
            &host.plugins(),
            &plugin_file_name("paygateglobal"),
        );
        let events = host.reload().await;
        // The watcher's notify thread may outlive `drop(watch)` by a moment and load a rewrite
        // before the explicit scan does; either way the file just installed is what serves.
        let served = host
            .gateway
            .registry()
            .get("paygateglobal")
            .expect("served");
        assert_eq!(
            (
                served.sha256.as_str(),
                served.manifest.plugin_version.as_str()
            ),
            (
                sha256_hex(&std::fs::read(&target).expect("file")).as_str(),
                version
            ),
            "rewrite {rewrite} is not what serves: {events:?}"
        );
        series_events.push(format!("{rewrite}: {events:?}"));
    }
    let series_ms = series_started.elapsed().as_millis() / SERIES as u128;
    let rss_series = vm_rss_kib();
    let loads = host.gateway.registry().libraries_loaded() - stable;
    // Each rewrite served (checked above); none was loaded twice. (Twice in CI the count read
    // SERIES - 1 with the first rewrite loaded by a scan other than the explicit one: see
    // RELIABILITY.md, "Open questions".)
    assert!(
        loads <= SERIES,
        "{loads} loads for {SERIES} rewrites:\n{}",
        series_events.join("\n")
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::SeqCst);
    let (requests, failed) = join(workers).await;
    assert_eq!(
        failed, 0,
        "requests failed during the storm ({requests} sent)"
    );
    assert!(requests > 100, "the load was real ({requests} requests)");
    let served = host
        .gateway
        .registry()
        .get("paygateglobal")
        .expect("served");
    assert_eq!(
        served.manifest.plugin_version, "1.1.0",
        "the final version serves"
    );
    assert_eq!(
        served.sha256,
        sha256_hex(&std::fs::read(&target).expect("file"))
    );
    assert_eq!(
        host.balance("paygateglobal")
            .await
            .expect("serves")
            .plugin_version
            .as_deref(),
        Some("1.1.0")
    );
    let storm_growth = rss_storm.saturating_sub(rss_before);
    let series_growth = rss_series.saturating_sub(rss_storm);
    figure(
        "storm.reload",
        format!(
            "rewrites={REWRITES} loads_by_watcher={storm_loads} requests={requests} failed=0 \
             rss_growth_storm_kib={storm_growth} per_load_kib={}",
            storm_growth / storm_loads.max(1) as u64
        ),
    );
    figure(
        "storm.series",
        format!(
            "loads={SERIES} rss_growth_kib={series_growth} per_load_kib={} ms_per_load={series_ms}",
            series_growth / SERIES as u64
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_past_max_loaded_libraries_is_refused_and_the_old_version_serves() {
    let _serial = SERIAL.lock().await;
    let host = host(PGG, 3).await;
    for package in [PGG_NEXT, PGG] {
        install(
            &library(package),
            &host.plugins(),
            &plugin_file_name("paygateglobal"),
        );
        host.reload().await;
    }
    assert_eq!(host.gateway.registry().libraries_loaded(), 3);
    assert_eq!(host.version().as_deref(), Some("1.0.0"));
    install(
        &library(PGG_NEXT),
        &host.plugins(),
        &plugin_file_name("paygateglobal"),
    );
    let events = host.reload().await;
    let refusal = events
        .iter()
        .find_map(|event| match event {
            ScanEvent::Failed {
                error,
                still_serving,
                ..
            } => Some((error.to_string(), still_serving.clone())),
            _ => None,
        })
        .unwrap_or_else(|| panic!("a load past the bound was not refused: {events:?}"));
    assert!(
        refusal.0.contains("host.max_loaded_libraries"),
        "{}",
        refusal.0
    );
    assert!(refusal.0.contains("restart the host"), "{}", refusal.0);
    assert_eq!(refusal.1.as_deref(), Some("paygateglobal"));
    assert_eq!(host.version().as_deref(), Some("1.0.0"));
    let after = host
        .balance("paygateglobal")
        .await
        .expect("the old version keeps serving");
    assert_eq!(
        (
            after.outcome.status,
            after.plugin_version.as_deref().unwrap_or_default()
        ),
        (OutcomeStatus::Succeeded, "1.0.0")
    );
    assert_eq!(
        host.gateway.registry().libraries_loaded(),
        3,
        "nothing mapped past the bound"
    );
    assert!(
        host.gateway
            .registry()
            .failures()
            .iter()
            .any(|f| f.error.contains("max_loaded_libraries"))
    );
    figure(
        "storm.bound",
        "max_loaded_libraries=3 loads=3 refused_past_bound=1 still_serving=1.0.0",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_removed_while_in_use_lets_its_requests_finish() {
    let _serial = SERIAL.lock().await;
    let host = Arc::new(host(PGG, 16).await);
    // Two requests in flight when the file goes: the simulator holds their answers.
    host.running
        .faults
        .push(Fault::Delay(Duration::from_millis(700)));
    host.running
        .faults
        .push(Fault::DelayAfter(Duration::from_millis(700)));
    let balance = tokio::spawn({
        let host = host.clone();
        async move { host.balance("paygateglobal").await }
    });
    let charge = tokio::spawn({
        let host = host.clone();
        async move {
            let command = json!({"operation": "charge",
                "amount": {"minor_units": 500, "currency": "XOF"}, "customer": {"phone": "90123456"},
                "payment_method": "FLOOZ"});
            execute(&host.service, "paygateglobal", "main", command, None).await
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    std::fs::remove_file(host.plugins().join(plugin_file_name("paygateglobal"))).expect("remove");
    let events = host.reload().await;
    assert!(events.iter().any(|event| matches!(event, ScanEvent::Retired { provider, .. } if provider == "paygateglobal")), "{events:?}");
    // New requests are refused before any I/O; the two in flight finish on the retired version.
    assert!(matches!(
        host.balance("paygateglobal").await,
        Err(DispatchError::UnknownProvider { .. })
    ));
    let balance = balance
        .await
        .expect("task")
        .expect("the in-flight read finished");
    assert_eq!(
        (
            balance.outcome.status,
            balance.plugin_version.as_deref().unwrap_or_default()
        ),
        (OutcomeStatus::Succeeded, "1.0.0")
    );
    let charge = charge
        .await
        .expect("task")
        .expect("the in-flight charge finished");
    assert_eq!(
        charge.outcome.status,
        OutcomeStatus::Pending,
        "{:?}",
        charge.outcome
    );
    // Put back, it serves again without a restart.
    install(
        &library(PGG),
        &host.plugins(),
        &plugin_file_name("paygateglobal"),
    );
    host.reload().await;
    assert_eq!(
        host.balance("paygateglobal")
            .await
            .expect("serves again")
            .outcome
            .status,
        OutcomeStatus::Succeeded
    );
    figure(
        "plugin_fault.removed_in_use",
        "in_flight=2 finished=2 new_requests=unknown_provider",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_overwritten_in_place_is_never_half_loaded() {
    let _serial = SERIAL.lock().await;
    let host = host(PGG, 16).await;
    let target = host.plugins().join(plugin_file_name("paygateglobal"));
    let next = std::fs::read(library(PGG_NEXT)).expect("bytes");
    // Against the documented rename: the file is rewritten in place and scanned half-written.
    std::fs::write(&target, &next[..next.len() / 2]).expect("half");
    let events = host.reload().await;
    assert!(
        events.iter().any(|event| matches!(event, ScanEvent::Failed { error, .. } if error.to_string().contains("not a loadable library"))),
        "{events:?}"
    );
    assert_eq!(
        host.version().as_deref(),
        Some("1.0.0"),
        "the previous version keeps serving"
    );
    assert_eq!(
        host.balance("paygateglobal")
            .await
            .expect("serves")
            .plugin_version
            .as_deref(),
        Some("1.0.0")
    );
    std::fs::write(&target, &next).expect("whole");
    host.reload().await;
    assert_eq!(host.version().as_deref(), Some("1.1.0"));
    assert!(host.gateway.registry().failures().is_empty());
    figure(
        "plugin_fault.in_place_overwrite",
        "half_written_scans_refused=1 served_through=1.0.0 then 1.1.0",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_answering_nonsense_fails_only_its_own_requests() {
    let _serial = SERIAL.lock().await;
    let host = host(PGG, 16).await;
    install(
        &nonsense_library(),
        &host.plugins(),
        &plugin_file_name("nonsense"),
    );
    host.reload().await;
    assert!(host.gateway.registry().get("nonsense").is_some());
    let dispatch =
        |command: serde_json::Value| execute(&host.service, "nonsense", "main", command, None);
    let calls = || host.running.calls.all().len();

    // An unparsable URL: never sent; a charge that cannot have happened is `failed`.
    let before = calls();
    let charge =
        dispatch(json!({"operation": "charge", "amount": {"minor_units": 100, "currency": "XOF"}}))
            .await
            .expect("an outcome");
    assert_eq!(
        charge.outcome.status,
        OutcomeStatus::Failed,
        "{:?}",
        charge.outcome
    );
    assert_eq!((calls(), charge.provider_requests), (before, 0));

    // A header value with a line break (request splitting): refused by the HTTP client before
    // anything is sent.
    let payout = dispatch(json!({"operation": "affiliate_payout", "affiliate_id": "1",
                                 "amount": {"minor_units": 100, "currency": "USD"}}))
    .await
    .expect("an outcome");
    assert_eq!(
        payout.outcome.status,
        OutcomeStatus::Failed,
        "{:?}",
        payout.outcome
    );
    assert_eq!(calls(), before, "nothing reached the provider");

    // A flow that never ends: stopped at the host's step limit (16), `unknown` for a
    // money-moving command since its requests did go out.
    let endless = dispatch(
        json!({"operation": "affiliate_refund", "affiliate_id": "1", "subscription_id": "2",
                                  "original_subscription_id": "3", "transaction_type": "one_time"}),
    )
    .await;
    let requests_sent = calls() - before;
    match &endless {
        Ok(done) => assert_ne!(
            done.outcome.status,
            OutcomeStatus::Succeeded,
            "{:?}",
            done.outcome
        ),
        Err(DispatchError::Provider(error)) => assert_eq!(error.kind, ErrorKind::PluginFault),
        Err(other) => panic!("unexpected {other:?}"),
    }
    assert!(
        requests_sent <= gatehouse_plugin_api::flow::MAX_FLOW_STEPS,
        "{requests_sent} requests"
    );

    // An impossible amount in the outcome of a money-moving command (negative, or in another
    // currency than asked) is a plugin fault, never passed on for a caller to book. Nothing was
    // sent here, so it is refused outright.
    let refund = dispatch(json!({"operation": "refund", "transaction_id": "1",
                                 "amount": {"minor_units": 100, "currency": "XOF"}}))
    .await;
    let refused = match &refund {
        Err(DispatchError::Provider(error)) if error.kind == ErrorKind::PluginFault => {
            error.message.clone()
        }
        other => panic!("an impossible refund amount was not refused: {other:?}"),
    };
    assert!(refused.contains("negative amount"), "{refused}");
    figure(
        "plugin_fault.nonsense",
        format!(
            "bad_url=failed/0_sent header_injection=failed/0_sent endless_flow_requests={requests_sent} \
             refund_with_impossible_amount=plugin_fault endless={:?}",
            endless.as_ref().map(|done| done.outcome.status)
        ),
    );
    let balance = host.balance("nonsense").await.expect("an outcome");
    let Details::Balance { balances } = balance.outcome.details else {
        panic!("no balance")
    };
    assert_eq!(balances[0].amount.minor_units, i64::MIN);

    // The other provider is served throughout.
    assert_eq!(
        host.balance("paygateglobal")
            .await
            .expect("serves")
            .outcome
            .status,
        OutcomeStatus::Succeeded
    );
}
