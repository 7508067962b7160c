//! Loading, refusing and hot-reloading plugin libraries, and surviving plugins that misbehave.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use gatehouse_core::DispatchError;
use gatehouse_core::loader::EntryPoints;
use gatehouse_core::registry::ScanEvent;
use gatehouse_e2e::{
    TestHost, install, library, plugin_file_name, standalone_binary, standalone_library,
};
use gatehouse_plugin_api::{ErrorKind, OutcomeStatus};
use gatehouse_sim_common::{Fault, RunningSimulator};
use gatehouse_sim_paygateglobal::PayGateSimulator;
use serde_json::json;

const TOKEN: &str = "token-for-loading-tests";

async fn paygate_host() -> (TestHost, PayGateSimulator, RunningSimulator) {
    let (simulator, running) = PayGateSimulator::start(TOKEN).await.expect("simulator");
    let host = TestHost::start(
        &["gatehouse-plugin-paygateglobal"],
        &format!(
            "[providers.paygateglobal.accounts.main]\nbase_url = \"{}\"\nrate_limit_per_minute = 100000\nsecrets = {{ auth_token = \"{TOKEN}\" }}\n\n[providers.misbehaving.accounts.main]\nbase_url = \"{}\"\nsecrets = {{ api_key = \"super-secret-key-123\" }}\n",
            running.base_url(),
            running.base_url()
        ),
    )
    .await;
    (host, simulator, running)
}

/// Puts `library` in place as the PayGateGlobal plugin, reloads, and returns the plugin now
/// serving, checked to be that very file (by SHA-256); `what` names it in a failure.
fn install_paygateglobal_and_reload(
    host: &TestHost,
    library: &std::path::Path,
    what: &str,
) -> std::sync::Arc<gatehouse_core::loader::LoadedPlugin> {
    install(
        library,
        &host.plugins_dir(),
        &plugin_file_name("paygateglobal"),
    );
    let events = host.gateway.reload_plugins();
    assert!(
        events
            .iter()
            .any(|event| matches!(event, ScanEvent::Loaded { provider, .. } if provider == "paygateglobal")),
        "{what}: the plugin was not loaded: {events:?}"
    );
    let serving = host
        .gateway
        .registry()
        .get("paygateglobal")
        .expect("loaded");
    let bytes = std::fs::read(library).expect("fixture bytes");
    assert_eq!(
        serving.sha256,
        gatehouse_core::loader::sha256_hex(&bytes),
        "{what}"
    );
    serving
}

fn version_of(host: &TestHost, provider: &str) -> Option<String> {
    host.gateway
        .registry()
        .get(provider)
        .map(|plugin| plugin.manifest.plugin_version.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hot_reload_under_load_fails_no_request() {
    let (mut host, _simulator, running) = paygate_host().await;
    host.watch();
    assert_eq!(version_of(&host, "paygateglobal").as_deref(), Some("1.0.0"));
    let host = Arc::new(host);

    // A request that is in flight across the swap: the simulator holds its answer.
    running
        .faults
        .push(Fault::Delay(Duration::from_millis(600)));
    let slow_host = host.clone();
    let in_flight = tokio::spawn(async move {
        slow_host
            .call_full("paygateglobal", "main", json!({"operation": "balance"}))
            .await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;

    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let served_by_new = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..8 {
        let (host, stop, failures, served_by_new) = (
            host.clone(),
            stop.clone(),
            failures.clone(),
            served_by_new.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut requests = 0usize;
            while !stop.load(Ordering::SeqCst) {
                match host
                    .call_full("paygateglobal", "main", json!({"operation": "balance"}))
                    .await
                {
                    Ok(dispatched) if dispatched.outcome.status == OutcomeStatus::Succeeded => {
                        if dispatched.plugin_version.as_deref() == Some("1.1.0") {
                            served_by_new.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    other => {
                        eprintln!("failed during reload: {other:?}");
                        failures.fetch_add(1, Ordering::SeqCst);
                    }
                }
                requests += 1;
            }
            requests
        }));
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    // Deploy the new version the documented way: temporary file, then rename over the old one.
    install(
        &library("gatehouse-fixture-paygateglobal-next"),
        &host.plugins_dir(),
        &plugin_file_name("paygateglobal"),
    );
    let swapped = host
        .wait_until(Duration::from_secs(10), |gateway| {
            gateway
                .registry()
                .get("paygateglobal")
                .is_some_and(|plugin| plugin.manifest.plugin_version == "1.1.0")
        })
        .await;
    assert!(swapped, "the new version was not loaded");
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::SeqCst);
    let mut total = 0;
    for worker in workers {
        total += worker.await.expect("worker");
    }
    let slow = in_flight
        .await
        .expect("task")
        .expect("the in-flight request finished");
    assert_eq!(
        slow.plugin_version.as_deref(),
        Some("1.0.0"),
        "a request finishes on the version it started with"
    );
    assert_eq!(
        failures.load(Ordering::SeqCst),
        0,
        "requests failed across the swap ({total} sent)"
    );
    assert!(
        served_by_new.load(Ordering::SeqCst) > 0,
        "new requests see the new version"
    );
    let after = host
        .call_full("paygateglobal", "main", json!({"operation": "balance"}))
        .await
        .expect("after the swap");
    assert_eq!(after.plugin_version.as_deref(), Some("1.1.0"));
    assert!(total > 16, "the load was real ({total} requests)");
}

#[tokio::test]
async fn bad_libraries_are_refused_and_the_old_version_keeps_serving() {
    let (host, _simulator, _running) = paygate_host().await;
    let target = plugin_file_name("paygateglobal");
    let real = library("gatehouse-plugin-paygateglobal");
    let truncated = host.dir.path().join("truncated.so");
    let bytes = std::fs::read(&real).expect("plugin bytes");
    std::fs::write(&truncated, &bytes[..bytes.len() / 3]).expect("write truncated");
    let text_file = host.dir.path().join("text.so");
    std::fs::write(&text_file, "this is not a library\n").expect("write text");

    let cases = [
        (
            library("gatehouse-fixture-not-a-plugin"),
            "not a Gatehouse plugin",
        ),
        (truncated, "not a loadable library"),
        (text_file, "not a loadable library"),
        (
            library("gatehouse-fixture-contract-old-version"),
            "built against gatehouse-plugin-api 0.0.9",
        ),
        (
            library("gatehouse-fixture-contract-other-layout"),
            "types differ from this host's",
        ),
        (
            standalone_library("old-abi-stable", "gatehouse-fixture-old-abi-stable"),
            "its abi_stable ABI is 0.10, this host's is 0.11",
        ),
    ];
    for (bad, expected) in cases {
        install(&bad, &host.plugins_dir(), &target);
        let events = host.gateway.reload_plugins();
        let failure = events
            .iter()
            .find_map(|event| match event {
                ScanEvent::Failed {
                    error,
                    still_serving,
                    ..
                } => Some((error.to_string(), still_serving.clone())),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{} was not refused: {events:?}", bad.display()));
        assert!(
            failure.0.contains(expected),
            "{expected:?} not in {:?}",
            failure.0
        );
        assert!(
            failure.0.contains(&target),
            "the error names the file: {}",
            failure.0
        );
        assert_eq!(failure.1.as_deref(), Some("paygateglobal"));
        assert_eq!(version_of(&host, "paygateglobal").as_deref(), Some("1.0.0"));
        let outcome = host
            .call("paygateglobal", "main", json!({"operation": "balance"}))
            .await
            .expect("the old version keeps serving");
        assert_eq!(outcome.status, OutcomeStatus::Succeeded);
        assert!(
            host.gateway
                .registry()
                .failures()
                .iter()
                .any(|f| f.error.contains(expected))
        );
    }
    // Putting the good file back clears the error.
    install(&real, &host.plugins_dir(), &target);
    host.gateway.reload_plugins();
    assert!(host.gateway.registry().failures().is_empty());
}

#[tokio::test]
async fn a_new_file_is_loaded_without_restart_and_a_removed_one_retires() {
    let (mut host, _simulator, _running) = paygate_host().await;
    host.watch();
    assert!(host.gateway.registry().get("misbehaving").is_none());
    install(
        &library("gatehouse-fixture-misbehaving-plugin"),
        &host.plugins_dir(),
        &plugin_file_name("misbehaving"),
    );
    assert!(
        host.wait_until(Duration::from_secs(10), |g| g
            .registry()
            .get("misbehaving")
            .is_some())
            .await,
        "a dropped-in plugin is loaded by the watcher"
    );
    std::fs::remove_file(host.plugins_dir().join(plugin_file_name("misbehaving"))).expect("remove");
    assert!(
        host.wait_until(Duration::from_secs(10), |g| g
            .registry()
            .get("misbehaving")
            .is_none())
            .await,
        "a removed plugin is retired"
    );
    assert!(host.gateway.registry().get("paygateglobal").is_some());
}

#[tokio::test]
async fn misbehaving_plugins_fail_their_own_request_only() {
    let (host, _simulator, running) = paygate_host().await;
    misbehaving_plugin_fails_only_its_own_requests(&host, &running, true).await;
}

/// With `host.plugin_calls = "inline"` (no plugin threads), a panic still fails only its own
/// request and everything else is served. (A plugin that never returns is what inline mode gives
/// up protection from: it would hold a runtime worker, so that case is run in pool mode only.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_plugin_calls_keep_faults_to_their_own_request() {
    let (host, _simulator, running) = paygate_host().await;
    let mut config = (*host.gateway.config()).clone();
    config.host.plugin_calls = gatehouse_core::config::PluginCalls::Inline;
    host.gateway.set_config(config);
    misbehaving_plugin_fails_only_its_own_requests(&host, &running, false).await;
    let charge = host
        .call(
            "paygateglobal",
            "main",
            json!({"operation": "charge", "amount": {"minor_units": 1500, "currency": "XOF"},
                   "customer": {"phone": "90123456"}, "payment_method": "FLOOZ"}),
        )
        .await
        .expect("charge");
    assert_eq!(charge.status, OutcomeStatus::Pending);
}

async fn misbehaving_plugin_fails_only_its_own_requests(
    host: &TestHost,
    running: &RunningSimulator,
    with_hung_call: bool,
) {
    install(
        &library("gatehouse-fixture-misbehaving-plugin"),
        &host.plugins_dir(),
        &plugin_file_name("misbehaving"),
    );
    host.gateway.reload_plugins();

    // A panic inside an operation.
    let panicked = host
        .call("misbehaving", "main", json!({"operation": "balance"}))
        .await;
    match &panicked {
        Err(DispatchError::Provider(error)) => {
            assert_eq!(error.kind, ErrorKind::PluginFault);
            assert!(
                error.message.contains("deliberate panic"),
                "{}",
                error.message
            );
        }
        other => panic!("expected a plugin fault, got {other:?}"),
    }
    if with_hung_call {
        // A plugin call that never returns fails within the budget; the host stays responsive.
        let started = std::time::Instant::now();
        let hung = host
            .call(
                "misbehaving",
                "main",
                json!({"operation": "report", "report": "forever"}),
            )
            .await;
        assert!(
            matches!(&hung, Err(DispatchError::Provider(error)) if error.kind == ErrorKind::PluginFault),
            "{hung:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }
    // A request outside the account's base URL is never sent.
    let calls = running.calls.all().len();
    let exfiltration = host
        .call(
            "misbehaving",
            "main",
            json!({"operation": "status", "transaction_id": "1"}),
        )
        .await;
    assert!(exfiltration.is_err(), "{exfiltration:?}");
    assert_eq!(running.calls.all().len(), calls);
    // A secret echoed by a plugin is scrubbed before it leaves the host.
    let leaked = host
        .call(
            "misbehaving",
            "main",
            json!({"operation": "payment_page", "amount": {"minor_units": 1, "currency": "USD"}}),
        )
        .await;
    let text = format!("{leaked:?}");
    assert!(!text.contains("super-secret-key-123"), "{text}");
    assert!(text.contains("***"), "{text}");
    // A panic after a money-moving request was sent: the provider may have acted, so the
    // outcome is unknown (to be reconciled), never a failure.
    let charge = host
        .call(
            "misbehaving",
            "main",
            json!({"operation": "charge", "amount": {"minor_units": 100, "currency": "USD"}}),
        )
        .await
        .expect("an outcome, not an error");
    assert_eq!(charge.status, OutcomeStatus::Unknown);
    assert_eq!(
        charge.error.map(|error| error.kind),
        Some(ErrorKind::PluginFault)
    );
    // Other requests, to this plugin and others, are served.
    let refund = host
        .call(
            "misbehaving",
            "main",
            json!({"operation": "refund", "transaction_id": "1"}),
        )
        .await
        .expect("refund still served");
    assert_eq!(refund.status, OutcomeStatus::Succeeded);
    let balance = host
        .call("paygateglobal", "main", json!({"operation": "balance"}))
        .await
        .expect("balance");
    assert_eq!(balance.status, OutcomeStatus::Succeeded);
}

#[tokio::test]
async fn configuration_changes_apply_without_restart() {
    let (mut host, _simulator, running) = paygate_host().await;
    host.watch();
    let missing = host
        .call("paygateglobal", "second", json!({"operation": "balance"}))
        .await;
    assert!(matches!(missing, Err(DispatchError::UnknownAccount { .. })));
    let original = std::fs::read_to_string(host.config_path()).expect("config");
    let extended = format!(
        "{original}\n[providers.paygateglobal.accounts.second]\nbase_url = \"{}\"\nsecrets = {{ auth_token = \"{TOKEN}\" }}\n",
        running.base_url()
    );
    let temporary = host.dir.path().join("plugins.toml.new");
    std::fs::write(&temporary, &extended).expect("write");
    std::fs::rename(&temporary, host.config_path()).expect("rename");
    assert!(
        host.wait_until(Duration::from_secs(10), |g| g
            .config()
            .account("paygateglobal", "second")
            .is_some())
            .await,
        "the new account was picked up"
    );
    host.call("paygateglobal", "second", json!({"operation": "balance"}))
        .await
        .expect("new account serves");

    // A broken file is refused; the previous configuration stays in force.
    std::fs::write(&temporary, format!("{extended}\n[host]\nbogus = 1\n")).expect("write");
    std::fs::rename(&temporary, host.config_path()).expect("rename");
    assert!(
        host.wait_until(Duration::from_secs(10), |gateway| gateway
            .config_error()
            .is_some())
            .await,
        "the broken file was noticed"
    );
    host.call("paygateglobal", "second", json!({"operation": "balance"}))
        .await
        .expect("previous configuration still in force");
}

#[cfg(unix)]
#[tokio::test]
async fn plugins_writable_by_others_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let (host, _simulator, _running) = paygate_host().await;
    let file = host.plugins_dir().join(plugin_file_name("misbehaving"));
    install(
        &library("gatehouse-fixture-misbehaving-plugin"),
        &host.plugins_dir(),
        &plugin_file_name("misbehaving"),
    );
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let mapped = host.gateway.registry().libraries_loaded();
    host.gateway.reload_plugins();
    assert!(host.gateway.registry().get("misbehaving").is_none());
    assert!(
        host.gateway
            .registry()
            .failures()
            .iter()
            .any(|f| f.error.contains("writable by other users"))
    );
    assert_eq!(
        host.gateway.registry().libraries_loaded(),
        mapped,
        "a file refused before mapping spends none of max_loaded_libraries"
    );
    // Once the operator fixes the mode, the same file (same content) loads.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    host.gateway.reload_plugins();
    assert!(host.gateway.registry().get("misbehaving").is_some());
    assert_eq!(host.gateway.registry().libraries_loaded(), mapped + 1);
}

/// A secret file rotated in place (as orchestrators do) is used within about a second, without a
/// change to `plugins.toml`; a wrong credential is refused by the provider, the right one again
/// lifts the pause that refusal set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_file_rotated_in_place_is_used_without_a_reload() {
    let (_simulator, running) = PayGateSimulator::start(TOKEN).await.expect("simulator");
    let secrets = tempfile::tempdir().expect("secrets folder");
    let token_file = secrets.path().join("paygateglobal-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("write the token");
    let host = TestHost::start(
        &["gatehouse-plugin-paygateglobal"],
        &format!(
            "[providers.paygateglobal.accounts.main]\nbase_url = \"{}\"\nsecrets = {{ auth_token = {{ file = \"{}\" }} }}\n",
            running.base_url(),
            token_file.display()
        ),
    )
    .await;
    let balance = || host.call("paygateglobal", "main", json!({"operation": "balance"}));
    assert_eq!(
        balance().await.expect("balance").status,
        OutcomeStatus::Succeeded
    );
    std::fs::write(&token_file, "a-revoked-token\n").expect("rotate");
    tokio::time::sleep(Duration::from_millis(1300)).await;
    match balance().await {
        Err(DispatchError::Provider(error)) => assert_eq!(error.kind, ErrorKind::Authentication),
        other => panic!("the rotated (wrong) token was not used: {other:?}"),
    }
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("rotate back");
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(
        balance().await.expect("served again").status,
        OutcomeStatus::Succeeded
    );
}

/// A change the watcher never heard of (here: made before it started) is picked up by its
/// periodic rescan (`host.plugins_rescan_secs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_without_an_event_is_found_by_the_periodic_rescan() {
    let (mut host, _simulator, _running) = paygate_host().await;
    let mut config = (*host.gateway.config()).clone();
    config.host.plugins_rescan_secs = 1;
    host.gateway.set_config(config);
    install(
        &library("gatehouse-fixture-paygateglobal-next"),
        &host.plugins_dir(),
        &plugin_file_name("paygateglobal"),
    );
    assert_eq!(version_of(&host, "paygateglobal").as_deref(), Some("1.0.0"));
    host.watch();
    let served = host
        .wait_until(Duration::from_secs(5), |gateway| {
            gateway
                .registry()
                .get("paygateglobal")
                .is_some_and(|plugin| plugin.manifest.plugin_version == "1.1.0")
        })
        .await;
    assert!(served, "the periodic rescan did not load the new version");
}

/// A plugin built before `start_v2`/`resume_v2` were appended (`tests/standalone/previous-contract`:
/// the PayGateGlobal sources against the root module without them) loads in today's host, reads
/// them as absent and is driven through `start`/`resume`, the invocation as one JSON text; today's
/// build of the same sources takes the invocation in pieces. Both serve the same flow.
#[tokio::test]
async fn a_plugin_built_before_start_v2_is_driven_through_start_and_resume() {
    let previous_plugin = standalone_library(
        "previous-contract",
        "gatehouse-fixture-previous-contract-plugin",
    );
    let (host, _simulator, running) = paygate_host().await;
    let today = host
        .gateway
        .registry()
        .get("paygateglobal")
        .expect("loaded");
    assert!(
        today.takes_invocation_in_pieces(),
        "today's plugin has start_v2/resume_v2"
    );
    let today_outcome = host
        .call("paygateglobal", "main", json!({"operation": "balance"}))
        .await
        .expect("today's plugin serves");

    let serving = install_paygateglobal_and_reload(
        &host,
        &previous_plugin,
        "the host serves the previous-contract build",
    );
    assert!(serving.module().start_v2().is_none() && serving.module().resume_v2().is_none());
    assert!(serving.module().start_v3().is_none() && serving.module().resume_v3().is_none());
    assert_eq!(serving.entry_points(), EntryPoints::Whole);
    assert!(!serving.takes_invocation_in_pieces());
    let before = running.calls.all().len();
    let outcome = host
        .call("paygateglobal", "main", json!({"operation": "balance"}))
        .await
        .expect("the older plugin serves through start/resume");
    assert!(running.calls.all().len() > before, "it sent its request");
    assert_eq!(outcome.status, OutcomeStatus::Succeeded);
    assert_eq!(outcome.details, today_outcome.details);
}

/// Today's plugin library is driven through its newest entry points (`start_v3`/`resume_v3`:
/// a charge and a plain outcome typed), and the same library driven through each older
/// generation asks for the same requests and ends with the same outcome, for a charge (typed),
/// a charge whose `extra` crosses as JSON inside it, a balance (a command as JSON, an outcome
/// with details as JSON) and a failed charge (an outcome with an error).
#[tokio::test]
async fn every_generation_of_entry_points_drives_the_same_flow_of_one_library() {
    use gatehouse_plugin_api::ffi::{EncodedInvocation, FfiHttpResponse, HostStep};
    use gatehouse_plugin_api::{AccountConfig, Command, HttpResponse, Invocation, Secret};
    let (host, _simulator, _running) = paygate_host().await;
    let plugin = host
        .gateway
        .registry()
        .get("paygateglobal")
        .expect("loaded");
    assert_eq!(plugin.entry_points(), EntryPoints::Typed);
    let account = AccountConfig {
        account: "main".into(),
        base_url: "http://provider.test".into(),
        settings: Default::default(),
        secrets: [("auth_token".to_string(), Secret::new(TOKEN))].into(),
    };
    let command =
        |value: serde_json::Value| -> Command { serde_json::from_value(value).expect("a command") };
    let charge = json!({"operation": "charge", "amount": {"minor_units": 1500, "currency": "XOF"},
        "customer": {"phone": "90123456"}, "payment_method": "FLOOZ", "description": "order 7"});
    let mut with_extra = charge.clone();
    with_extra["extra"] = json!({"note": {"b": [1, 2], "a": "\u{e9}"}});
    let answer = |body: &str| {
        FfiHttpResponse::from(HttpResponse {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.as_bytes().to_vec(),
        })
    };
    let cases = [
        (
            command(charge.clone()),
            answer(r#"{"tx_reference":"1000001","status":0}"#),
        ),
        (
            command(with_extra),
            answer(r#"{"tx_reference":"1000002","status":0}"#),
        ),
        (
            command(json!({"operation": "balance"})),
            answer(r#"{"flooz":15000,"tmoney":"2500"}"#),
        ),
        (command(charge), answer(r#"{"status":4}"#)),
    ];
    for (command, answer) in cases {
        let invocation = EncodedInvocation::from_invocation(&Invocation {
            command: command.clone(),
            account: account.clone(),
            reference: Some("gh_generations".into()),
            now_unix: 1_767_225_600,
        })
        .expect("encodes");
        let mut flows = Vec::new();
        for generation in [EntryPoints::Whole, EntryPoints::Pieces, EntryPoints::Typed] {
            let HostStep::Send { request, state } =
                plugin.start_flow_through(generation, &invocation, b"")
            else {
                panic!("{generation:?}: {command:?} asks to send");
            };
            let end = plugin.resume_flow_through(generation, &invocation, &state, &answer);
            let end = match end {
                HostStep::Done(outcome) => Ok(outcome),
                HostStep::Failed(error) => Err(error),
                HostStep::Send { .. } => panic!("{generation:?}: one exchange ends the flow"),
            };
            flows.push((generation, request, end));
        }
        let (_, first_request, first_end) = &flows[0];
        for (generation, request, end) in &flows[1..] {
            assert_eq!(
                (
                    &request.method,
                    &request.url,
                    &request.headers,
                    &request.body
                ),
                (
                    &first_request.method,
                    &first_request.url,
                    &first_request.headers,
                    &first_request.body
                ),
                "{generation:?}: {command:?}"
            );
            assert_eq!(end, first_end, "{generation:?}: {command:?}");
        }
    }
}

/// The contract evolves append-only, proved both ways with real libraries: the PayGateGlobal
/// plugin built against the next minor contract (`tests/standalone/next-contract`: one root-module
/// function appended after `resume`, one manifest field this host does not know) loads and serves
/// in today's host; and today's plugin loads in a host built against that next contract, which
/// reads the appended function as absent (and finds it, 42, in the plugin that has it) — both
/// in one process.
#[tokio::test]
async fn the_contract_evolves_append_only_both_ways() {
    let next_plugin = standalone_library("next-contract", "gatehouse-fixture-next-contract-plugin");
    let next_host = standalone_binary("next-contract", "next-contract-host");
    let today_plugin = library("gatehouse-plugin-paygateglobal");

    // A newer plugin in today's host: loaded (its extra manifest field ignored) and serving.
    let (host, _simulator, running) = paygate_host().await;
    install_paygateglobal_and_reload(
        &host,
        &next_plugin,
        "today's host serves the next-contract build",
    );
    let before = running.calls.all().len();
    let outcome = host
        .call("paygateglobal", "main", json!({"operation": "balance"}))
        .await
        .expect("the newer plugin serves");
    assert_eq!(outcome.status, OutcomeStatus::Succeeded);
    assert!(running.calls.all().len() > before);

    // Today's plugin (and the newer one) in a host of the next contract, one process.
    let output = std::process::Command::new(&next_host)
        .arg(&today_plugin)
        .arg(&next_plugin)
        .output()
        .expect("the next-contract host runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "loaded paygateglobal 1.0.0; next_contract_probe: absent",
            "loaded paygateglobal 1.0.0; next_contract_probe: 42",
        ],
        "{stdout}"
    );

    // A different layout is still refused both ways round.
    let output = std::process::Command::new(&next_host)
        .arg(library("gatehouse-fixture-contract-other-layout"))
        .output()
        .expect("the next-contract host runs");
    assert_eq!(output.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("types differ"),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
}
