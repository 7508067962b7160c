//! The measurements `gatehouse-bench` makes, one function per section of its report.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use abi_stable::std_types::{RSlice, RStr};
use anyhow::{Context, bail};
use gatehouse_core::loader::{EntryPoints, LoadedPlugin};
use gatehouse_core::plugin_pool::PluginPool;
use gatehouse_plugin_api::ffi::{EncodedInvocation, FfiHttpResponse, HostStep, encode_account};
use gatehouse_plugin_api::plugin::{ffi_resume, ffi_start};
use gatehouse_plugin_api::{AccountConfig, HttpResponse, Invocation, Plugin, Secret, Step};
use gatehouse_plugin_paygateglobal::PayGateGlobal;

use crate::artifacts::{PAYGATEGLOBAL_NEXT, plugin_file_name, release_library};
use crate::host::{ACCOUNT, BenchHost, PROVIDER, prepare_folder, work_dir};
use crate::measure::{LoadRun, closed_loop, time_per_iteration};
use crate::process::Process;
use crate::simulator::AUTH_TOKEN;
use crate::targets::{Call, Path, Targets, charge_command};

/// Runs `rounds` rounds of closed-loop load, each round visiting every variant in turn, so that
/// slow and fast moments of a shared machine fall on every variant alike.
pub async fn interleaved_throughput(
    targets: &Arc<Targets>,
    simulator: Process,
    variants: &[(&'static str, Variant)],
    concurrency: usize,
    window: Duration,
    rounds: usize,
) -> Vec<(&'static str, LoadRun)> {
    let mut totals: Vec<(&'static str, LoadRun)> = variants
        .iter()
        .map(|(label, _)| (*label, LoadRun::default()))
        .collect();
    for _ in 0..rounds {
        for (index, (_, variant)) in variants.iter().enumerate() {
            let run = run_variant(targets, simulator, *variant, concurrency, window).await;
            totals[index].1.add(&run);
        }
    }
    totals
}

/// One kind of call for the closed-loop drivers.
#[derive(Debug, Clone, Copy)]
pub enum Variant {
    Plain(Path, Call),
    /// A charge through `Service::execute` with a fresh idempotency key (ledger on).
    LedgeredCharge,
}

pub async fn run_variant(
    targets: &Arc<Targets>,
    simulator: Process,
    variant: Variant,
    concurrency: usize,
    window: Duration,
) -> LoadRun {
    let targets = targets.clone();
    match variant {
        Variant::Plain(path, call) => {
            closed_loop(concurrency, window, simulator, move || {
                let targets = targets.clone();
                async move { targets.call(path, call).await.map(|_| ()) }
            })
            .await
        }
        Variant::LedgeredCharge => {
            closed_loop(concurrency, window, simulator, move || {
                let targets = targets.clone();
                async move { targets.ledgered_charge().await }
            })
            .await
        }
    }
}

/// The cost of one charge flow (start: build the request; resume: parse the answer) by each way
/// of calling the same plugin code.
#[derive(Debug, Clone)]
pub struct PluginCallCost {
    /// Through the loaded cdylib as dispatch drives it (`LoadedPlugin::start_flow`/`resume_flow`):
    /// the account's text encoded once (as the host does once per resolution of the account),
    /// the charge typed and the outcome typed (`start_v3`/`resume_v3`).
    pub abi: Duration,
    /// The same through `start_v2`/`resume_v2`: the command encoded as JSON per dispatch and
    /// parsed by the plugin, the outcome as JSON.
    pub abi_pieces: Duration,
    /// Before `start_v2`/`resume_v2`: the first release's entry points (`LoadedPlugin::start`/
    /// `resume`), the whole invocation serialized to JSON per dispatch and parsed by each call.
    pub abi_whole_json: Duration,
    /// The host's half alone: the account's text encoded once and spliced into the one JSON
    /// text `start`/`resume` take (what a plugin built before `start_v2` gets), parsed by each call.
    pub abi_whole_json_account_kept: Duration,
    /// The same `extern "C"` entry points linked statically: JSON in and out, no dynamic call.
    pub static_json: Duration,
    /// Direct trait calls on the statically linked plugin: typed values, no JSON.
    pub static_typed: Duration,
    /// `abi`, with each call run on the host's plugin pool as dispatch does (thread hop there and
    /// back included), flows back to back (the pool's threads never get to sleep).
    pub abi_via_pool: Duration,
    /// The same, one flow every 5 ms, as at a moderate request rate: the pool thread and the
    /// awaiting worker are asleep when each call arrives (median of the flows).
    pub abi_via_pool_paced: Duration,
}

/// The invocation of a benchmark charge, as the host would build it.
pub fn charge_invocation(simulator_base_url: &str) -> Invocation {
    Invocation {
        command: charge_command(),
        account: AccountConfig {
            account: ACCOUNT.to_string(),
            base_url: simulator_base_url.to_string(),
            settings: BTreeMap::new(),
            secrets: BTreeMap::from([("auth_token".to_string(), Secret::new(AUTH_TOKEN))]),
        },
        reference: Some("gh_0123456789abcdef0123456789abcdef".to_string()),
        now_unix: 1_767_225_600,
    }
}

/// The simulator's answer to a registered payment, with the headers it sends.
pub fn pay_answer() -> HttpResponse {
    HttpResponse {
        status: 200,
        headers: vec![
            ("content-type".to_string(), "application/json".to_string()),
            ("content-length".to_string(), "38".to_string()),
            (
                "date".to_string(),
                "Fri, 09 Jan 2026 12:30:00 GMT".to_string(),
            ),
        ],
        body: br#"{"tx_reference":"1000001","status":0}"#.to_vec(),
    }
}

/// What the host keeps per resolution of the account: its text for the boundary.
pub fn account_json(invocation: &Invocation) -> Arc<str> {
    encode_account(&invocation.account).unwrap_or_else(|_| Arc::from(""))
}

/// The invocation as dispatch encodes it: the command per dispatch, the account's kept text.
pub fn encoded(invocation: &Invocation, account_json: &Arc<str>) -> EncodedInvocation {
    EncodedInvocation::new(
        &invocation.command,
        account_json.clone(),
        invocation.reference.clone(),
        invocation.now_unix,
    )
    .unwrap_or_else(|error| panic!("the command encodes: {error}"))
}

/// One charge flow through the loaded library, as `Flow::drive` makes it (without the pool): the
/// invocation in pieces when the plugin takes them.
pub fn abi_flow(
    plugin: &LoadedPlugin,
    entry_points: EntryPoints,
    invocation: &Invocation,
    account_json: &Arc<str>,
    answer: &FfiHttpResponse,
) {
    let invocation = encoded(invocation, account_json);
    let HostStep::Send { state, .. } = plugin.start_flow_through(entry_points, &invocation, b"")
    else {
        panic!("the charge flow did not ask to send its request");
    };
    let done = plugin.resume_flow_through(entry_points, &invocation, &state, answer);
    assert!(
        matches!(done, HostStep::Done(_)),
        "the charge flow did not finish: {done:?}"
    );
}

/// The same flow through the first release's entry points, the account's text kept by the host
/// and spliced into the one JSON text they take.
pub fn abi_whole_json_account_kept_flow(
    plugin: &LoadedPlugin,
    invocation: &Invocation,
    account_json: &Arc<str>,
    answer: &FfiHttpResponse,
) {
    let invocation = encoded(invocation, account_json);
    let HostStep::Send { state, .. } = plugin.start(invocation.whole_json(), b"") else {
        panic!("the charge flow did not ask to send its request");
    };
    let done = plugin.resume(invocation.whole_json(), &state, answer);
    assert!(
        matches!(done, HostStep::Done(_)),
        "the charge flow did not finish: {done:?}"
    );
}

/// The same flow as dispatch made it before `start_v2`/`resume_v2`: the whole invocation
/// serialized per dispatch, the first release's entry points.
pub fn abi_whole_json_flow(
    plugin: &LoadedPlugin,
    invocation: &Invocation,
    answer: &FfiHttpResponse,
) {
    let invocation_json = serde_json::to_string(invocation).unwrap_or_default();
    let HostStep::Send { state, .. } = plugin.start(&invocation_json, b"") else {
        panic!("the charge flow did not ask to send its request");
    };
    let done = plugin.resume(&invocation_json, &state, answer);
    assert!(
        matches!(done, HostStep::Done(_)),
        "the charge flow did not finish: {done:?}"
    );
}

/// The same flow through the statically linked `extern "C"` entry points.
pub fn static_json_flow(invocation: &Invocation, answer: &FfiHttpResponse) {
    let invocation_json = serde_json::to_string(invocation).unwrap_or_default();
    let step =
        ffi_start::<PayGateGlobal>(RStr::from_str(&invocation_json), RSlice::from_slice(b""))
            .into_host_step();
    let HostStep::Send { state, .. } = step else {
        panic!("the charge flow did not ask to send its request");
    };
    let done = ffi_resume::<PayGateGlobal>(
        RStr::from_str(&invocation_json),
        RStr::from_str(&state),
        answer,
    )
    .into_host_step();
    assert!(
        matches!(done, HostStep::Done(_)),
        "the charge flow did not finish: {done:?}"
    );
}

/// The same flow by direct trait calls on the statically linked plugin.
pub fn static_typed_flow(invocation: &Invocation, answer: &HttpResponse) {
    let Step::Send { state, .. } = PayGateGlobal::start(invocation, b"") else {
        panic!("the charge flow did not ask to send its request");
    };
    let done = PayGateGlobal::resume(invocation, state, answer);
    assert!(
        matches!(done, Step::Done(_)),
        "the charge flow did not finish: {done:?}"
    );
}

/// Measures [`PluginCallCost`], the variants interleaved over `rounds` rounds.
pub async fn plugin_call_cost(
    host: &BenchHost,
    simulator_base_url: &str,
    window: Duration,
    rounds: u32,
) -> anyhow::Result<PluginCallCost> {
    let plugin = host
        .gateway
        .registry()
        .get(PROVIDER)
        .context("paygateglobal is not loaded")?;
    plugin_call_cost_of(&plugin, simulator_base_url, window, rounds).await
}

/// [`plugin_call_cost`] of a plugin loaded by the caller.
pub async fn plugin_call_cost_of(
    plugin: &Arc<LoadedPlugin>,
    simulator_base_url: &str,
    window: Duration,
    rounds: u32,
) -> anyhow::Result<PluginCallCost> {
    if plugin.entry_points() != EntryPoints::Typed {
        bail!("the loaded paygateglobal has no start_v3/resume_v3");
    }
    let plugin = plugin.clone();
    let invocation = Arc::new(charge_invocation(simulator_base_url));
    let account = account_json(&invocation);
    let answer = pay_answer();
    let ffi_answer = Arc::new(FfiHttpResponse::from(answer.clone()));
    // Warm every variant once (page faults of the library's code, allocator).
    abi_flow(
        &plugin,
        EntryPoints::Typed,
        &invocation,
        &account,
        &ffi_answer,
    );
    abi_flow(
        &plugin,
        EntryPoints::Pieces,
        &invocation,
        &account,
        &ffi_answer,
    );
    abi_whole_json_flow(&plugin, &invocation, &ffi_answer);
    abi_whole_json_account_kept_flow(&plugin, &invocation, &account, &ffi_answer);
    static_json_flow(&invocation, &ffi_answer);
    static_typed_flow(&invocation, &answer);
    let (mut abi, mut abi_pieces, mut abi_whole_json, mut abi_whole_json_account_kept) = (
        Duration::ZERO,
        Duration::ZERO,
        Duration::ZERO,
        Duration::ZERO,
    );
    let (mut static_json, mut static_typed) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..rounds {
        abi += time_per_iteration(window, || {
            abi_flow(
                &plugin,
                EntryPoints::Typed,
                &invocation,
                &account,
                &ffi_answer,
            )
        });
        abi_pieces += time_per_iteration(window, || {
            abi_flow(
                &plugin,
                EntryPoints::Pieces,
                &invocation,
                &account,
                &ffi_answer,
            )
        });
        abi_whole_json += time_per_iteration(window, || {
            abi_whole_json_flow(&plugin, &invocation, &ffi_answer)
        });
        abi_whole_json_account_kept += time_per_iteration(window, || {
            abi_whole_json_account_kept_flow(&plugin, &invocation, &account, &ffi_answer)
        });
        static_json += time_per_iteration(window, || static_json_flow(&invocation, &ffi_answer));
        static_typed += time_per_iteration(window, || static_typed_flow(&invocation, &answer));
    }
    // The host runs each step on its plugin pool and awaits it: measure that too, sequentially.
    let pool = PluginPool::new(2);
    let started = Instant::now();
    let mut flows = 0_u32;
    while started.elapsed() < window * rounds {
        pool_flow(&pool, &plugin, &invocation, &account, &ffi_answer).await?;
        flows += 1;
    }
    let abi_via_pool = started.elapsed() / flows.max(1);
    let mut paced_flows = crate::stats::Latencies::default();
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let started = Instant::now();
        pool_flow(&pool, &plugin, &invocation, &account, &ffi_answer).await?;
        paced_flows.push(started.elapsed());
    }
    Ok(PluginCallCost {
        abi: abi / rounds,
        abi_pieces: abi_pieces / rounds,
        abi_whole_json: abi_whole_json / rounds,
        abi_whole_json_account_kept: abi_whole_json_account_kept / rounds,
        static_json: static_json / rounds,
        static_typed: static_typed / rounds,
        abi_via_pool,
        abi_via_pool_paced: paced_flows.quantile(0.5),
    })
}

/// One charge flow with each plugin call on `pool`, as `Flow::drive` runs it.
async fn pool_flow(
    pool: &PluginPool,
    plugin: &Arc<LoadedPlugin>,
    invocation: &Invocation,
    account_json: &Arc<str>,
    ffi_answer: &Arc<FfiHttpResponse>,
) -> anyhow::Result<()> {
    let budget = Duration::from_secs(2);
    let invocation = Arc::new(encoded(invocation, account_json));
    let (for_start, for_resume) = (plugin.clone(), plugin.clone());
    let for_start_invocation = invocation.clone();
    let step = pool
        .run(budget, move || {
            for_start.start_flow(&for_start_invocation, b"")
        })
        .await
        .map_err(|failure| anyhow::anyhow!("plugin pool: {failure:?}"))?;
    let HostStep::Send { state, .. } = step else {
        bail!("the charge flow did not ask to send its request");
    };
    let ffi_answer = ffi_answer.clone();
    let done = pool
        .run(budget, move || {
            for_resume.resume_flow(&invocation, &state, &ffi_answer)
        })
        .await
        .map_err(|failure| anyhow::anyhow!("plugin pool: {failure:?}"))?;
    if !matches!(done, HostStep::Done(_)) {
        bail!("the charge flow did not finish: {done:?}");
    }
    Ok(())
}

/// What the hot-reload section found.
#[derive(Debug, Clone, Default)]
pub struct ReloadRun {
    /// For each swap: from the rename into the plugins folder to the first answer served by the
    /// new version.
    pub rename_to_first_served: Vec<Duration>,
    /// Swaps whose new version was not seen serving within the timeout.
    pub swaps_not_seen: usize,
    pub requests_served: u64,
    pub requests_failed: u64,
    pub first_error: Option<String>,
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    pub libraries_before: usize,
    pub libraries_after: usize,
    /// `Gateway::reload_plugins` called right after a rename (no watcher delay): the scan that
    /// finds the changed file and loads it. One sample per repetition.
    pub scan_with_change: Vec<Duration>,
    /// The same scan when nothing changed (what every watcher event costs at least).
    pub scan_without_change: Vec<Duration>,
}

#[derive(Default)]
struct SwapWatch {
    expected_version: String,
    renamed_at: Option<Instant>,
    first_served: Option<Duration>,
    served: u64,
    failed: u64,
    first_error: Option<String>,
}

/// Swaps PayGateGlobal between 1.0.0 and 1.1.0 `swaps` times, the documented way (copy to a
/// hidden temporary name in the plugins folder, rename over the live file), while library
/// dispatches run at `rate` per second; measures each swap and the memory the swaps cost.
pub async fn hot_reload(
    host: &BenchHost,
    targets: &Arc<Targets>,
    swaps: usize,
    rate: u32,
) -> anyhow::Result<ReloadRun> {
    let current = release_library("gatehouse-plugin-paygateglobal")?;
    let next = release_library(PAYGATEGLOBAL_NEXT)?;
    let plugins_dir = host.plugins_dir();
    let live_name = plugin_file_name(PROVIDER);
    let temporary = plugins_dir.join(format!(".{live_name}.tmp"));
    let mut run = ReloadRun {
        rss_before_kib: quiet_rss().await,
        libraries_before: host.gateway.registry().libraries_loaded(),
        ..ReloadRun::default()
    };

    let watch = Arc::new(Mutex::new(SwapWatch {
        expected_version: "1.0.0".into(),
        ..SwapWatch::default()
    }));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (watch, stop, targets) = (watch.clone(), stop.clone(), targets.clone());
        let handle = tokio::runtime::Handle::current();
        std::thread::spawn(move || {
            let period = Duration::from_secs(1) / rate.max(1);
            let started = Instant::now();
            let mut in_flight = Vec::new();
            let mut sent: u32 = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let due = started + period * sent;
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                let (watch, targets) = (watch.clone(), targets.clone());
                in_flight.push(handle.spawn(async move {
                    let result = targets.call(Path::Library, Call::Balance).await;
                    let finished = Instant::now();
                    let mut watch = watch
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner());
                    match result {
                        Ok(version) => {
                            watch.served += 1;
                            if version == watch.expected_version
                                && watch.first_served.is_none()
                                && let Some(renamed_at) = watch.renamed_at
                            {
                                watch.first_served =
                                    Some(finished.saturating_duration_since(renamed_at));
                            }
                        }
                        Err(error) => {
                            watch.failed += 1;
                            watch.first_error.get_or_insert(error);
                        }
                    }
                }));
                in_flight.retain(|task: &tokio::task::JoinHandle<()>| !task.is_finished());
                sent += 1;
            }
            in_flight
        })
    };

    tokio::time::sleep(Duration::from_millis(300)).await;
    for swap in 0..swaps {
        let (library, version) = if swap % 2 == 0 {
            (&next, "1.1.0")
        } else {
            (&current, "1.0.0")
        };
        std::fs::copy(library, &temporary).context("staging the new plugin version")?;
        {
            let mut watch = watch
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            watch.expected_version = version.to_string();
            watch.first_served = None;
            watch.renamed_at = Some(Instant::now());
        }
        std::fs::rename(&temporary, plugins_dir.join(&live_name))
            .context("renaming the new version into place")?;
        let deadline = Instant::now() + Duration::from_secs(5);
        let seen = loop {
            let first = watch
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .first_served;
            if let Some(first) = first {
                break Some(first);
            }
            if Instant::now() > deadline {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        match seen {
            Some(elapsed) => run.rename_to_first_served.push(elapsed),
            None => run.swaps_not_seen += 1,
        }
        // Let the watcher settle so each swap is measured on its own.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let in_flight = load
        .join()
        .map_err(|_| anyhow::anyhow!("the load thread panicked"))?;
    for task in in_flight {
        let _ = task.await;
    }
    let watch = Arc::try_unwrap(watch)
        .map_err(|_| anyhow::anyhow!("load tasks still hold the swap watch"))?
        .into_inner()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    run.requests_served = watch.served;
    run.requests_failed = watch.failed;
    run.first_error = watch.first_error;
    run.rss_after_kib = quiet_rss().await;
    run.libraries_after = host.gateway.registry().libraries_loaded();

    // The scan itself, without the watcher's debounce: rename, then scan at once.
    for repetition in 0..4 {
        let library = if (swaps + repetition) % 2 == 0 {
            &next
        } else {
            &current
        };
        std::fs::copy(library, &temporary).context("staging the new plugin version")?;
        std::fs::rename(&temporary, plugins_dir.join(&live_name))
            .context("renaming the new version into place")?;
        let gateway = host.gateway.clone();
        let (elapsed, events) = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let events = gateway.reload_plugins();
            (started.elapsed(), events)
        })
        .await
        .context("timed scan")?;
        // The watcher may have scanned first (then this scan found nothing new): keep only
        // scans that loaded the file.
        if events
            .iter()
            .any(|event| matches!(event, gatehouse_core::registry::ScanEvent::Loaded { .. }))
        {
            run.scan_with_change.push(elapsed);
        }
        // Let the watcher's own scan of this change pass.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let gateway = host.gateway.clone();
        let elapsed = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            gateway.reload_plugins();
            started.elapsed()
        })
        .await
        .context("timed scan")?;
        run.scan_without_change.push(elapsed);
    }
    Ok(run)
}

/// Resident memory after a quiet second (timers and freed buffers settled).
pub async fn quiet_rss() -> u64 {
    tokio::time::sleep(Duration::from_secs(1)).await;
    Process::This.rss_kib().unwrap_or(0)
}

/// Resident memory of the real `gatehouse serve` executable, idle with the five plugins loaded.
pub async fn gatehouse_serve_idle_rss(
    executable: &std::path::Path,
    simulator_base_url: &str,
) -> anyhow::Result<u64> {
    let dir = work_dir()?;
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
        probe.local_addr().context("probe address")?.port()
    };
    let listen = format!("127.0.0.1:{port}");
    let config_path = prepare_folder(dir.path(), simulator_base_url, &listen)?;
    let mut child = std::process::Command::new(executable)
        .current_dir(dir.path())
        .arg("--config")
        .arg(&config_path)
        .arg("serve")
        .env("GATEHOUSE_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("starting gatehouse serve")?;
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let ready = loop {
        let answer = client.get(format!("http://{listen}/readyz")).send().await;
        if answer.is_ok_and(|answer| answer.status().is_success()) {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss = Process::Other(child.id()).rss_kib();
    let _ = child.kill();
    let _ = child.wait();
    if !ready {
        bail!("gatehouse serve did not become ready within 20 s");
    }
    rss.context("reading the gatehouse process's VmRSS")
}
