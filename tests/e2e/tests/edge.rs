//! The public edge, hardened (issue 21): each test replays one attack or fault against the real
//! host — over HTTP on loopback, or the real `gatehouse` executable — and checks the fixed
//! result. RELIABILITY.md quotes the figures these tests print.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gatehouse_core::{Config, DispatchError, ErrorCode};
use gatehouse_e2e::{
    API_KEY, ApiHost, execute, free_port, gatehouse_binary, in_own_process, install, library,
    plugin_file_name,
};
use gatehouse_ledger::{Ledger, ListFilter, SqliteLedger};
use gatehouse_service::Service;
use gatehouse_sim_paygateglobal::PayGateSimulator;
use serde_json::{Value, json};

const TOKEN: &str = "15c15ac9-b802-48d8-9d26-d7e2338a18d2";

fn paygate_account(base_url: &str, extra: &str) -> String {
    format!(
        "[providers.paygateglobal.accounts.main]\nbase_url = \"{base_url}\"\ntimeout_ms = 5000\n{extra}\nsecrets = {{ auth_token = \"{TOKEN}\" }}\n"
    )
}

fn charge_body(minor_units: i64) -> Value {
    json!({"amount": {"minor_units": minor_units, "currency": "XOF"},
           "customer": {"phone": "90123456"}, "payment_method": "FLOOZ"})
}

/// Writes `text` to `path` the documented way: a temporary file in the same folder, renamed.
fn write_atomically(path: &Path, text: &str) {
    let temporary = path.with_extension("toml.tmp");
    std::fs::write(&temporary, text).expect("write the temporary file");
    std::fs::rename(&temporary, path).expect("rename into place");
}

async fn wait_for(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    condition()
}

// --- 2. A reload that would close the gateway -------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_configuration_is_refused_and_the_api_keeps_answering() {
    let (_simulator, running) = PayGateSimulator::start(TOKEN).await.expect("simulator");
    let mut api = ApiHost::start(
        &["gatehouse-plugin-paygateglobal"],
        &paygate_account(&running.base_url(), ""),
    )
    .await;
    api.host.watch();
    let config_path = api.host.config_path();
    let original = std::fs::read_to_string(&config_path).expect("configuration");

    // `: > plugins.toml`: the file is empty, as a truncating write leaves it half-way.
    std::fs::File::create(&config_path).expect("truncate");
    let gateway = api.host.gateway.clone();
    assert!(
        wait_for(Duration::from_secs(10), || gateway.config_error().is_some()).await,
        "the empty file was not noticed"
    );
    let (status, listing) = api.get("/v1/plugins").await;
    assert_eq!(status, 200, "{listing}");
    let error = listing["config_error"].as_str().expect("config_error");
    assert!(error.contains("no API key"), "{error}");
    let (status, balance) = api.get("/v1/paygateglobal/main/balance").await;
    assert_eq!(
        status, 200,
        "the old keys and accounts still serve: {balance}"
    );
    let (status, ready) = api.get("/readyz").await;
    assert_eq!(status, 200, "{ready}");
    assert!(ready["config_error"].as_str().is_some(), "{ready}");

    // Keys kept, every account dropped: refused too.
    let without_accounts = original
        .split("[providers.")
        .next()
        .expect("the host and api tables")
        .to_string();
    write_atomically(&config_path, &without_accounts);
    assert!(
        wait_for(Duration::from_secs(10), || gateway
            .config_error()
            .is_some_and(|error| error.contains("no provider account")))
        .await,
        "{:?}",
        gateway.config_error()
    );
    let (status, _) = api.get("/v1/paygateglobal/main/balance").await;
    assert_eq!(status, 200);

    // The whole file, written atomically, is applied and clears the error.
    write_atomically(&config_path, &format!("{original}\n# edited\n"));
    assert!(
        wait_for(Duration::from_secs(10), || gateway.config_error().is_none()).await,
        "{:?}",
        gateway.config_error()
    );
    api.stop().await;
}

// --- 4. Callbacks that cannot spend the merchant's budget --------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_callbacks_cost_a_handful_of_status_calls_and_never_delay_a_charge() {
    let (simulator, running) = PayGateSimulator::start(TOKEN).await.expect("simulator");
    let api = ApiHost::start(
        &["gatehouse-plugin-paygateglobal"],
        &paygate_account(&running.base_url(), ""),
    )
    .await;
    let (status, charged) = api
        .post("/v1/paygateglobal/main/charges", charge_body(1500))
        .await;
    assert_eq!(status, 200, "{charged}");
    let reference = charged["reference"]
        .as_str()
        .expect("reference")
        .to_string();
    let transaction = simulator.transaction(&reference).expect("transaction");
    // A forger who learned a real identifier sends its callback again and again.
    let replayed = gatehouse_sim_paygateglobal::callback_body(&transaction).to_string();
    let status_calls_before = running.calls.count("/api/v2/status");

    let webhook_url = format!("{}/webhooks/paygateglobal/main", api.base_url);
    let client = reqwest::Client::new();
    let flood_started = Instant::now();
    let mut flood = tokio::task::JoinSet::new();
    // 50 connections, 20 callbacks each: 900 naming identifiers the ledger never made, 100
    // replaying the real one.
    for worker in 0..50 {
        let (client, url, replayed) = (client.clone(), webhook_url.clone(), replayed.clone());
        flood.spawn(async move {
            let mut statuses = Vec::new();
            for round in 0..20 {
                let body = if (worker * 20 + round) % 10 == 0 {
                    replayed.clone()
                } else {
                    json!({"tx_reference": format!("{worker}{round}"),
                           "identifier": format!("gh_forged_{worker}_{round}"),
                           "amount": 1_000_000, "payment_reference": "X",
                           "datetime": "2026-01-01 00:00:00", "payment_method": "FLOOZ",
                           "phone_number": "22890000000"})
                    .to_string()
                };
                let answer = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .expect("the host answers");
                statuses.push(answer.status().as_u16());
            }
            statuses
        });
    }
    // A real charge in the middle of the flood.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let charge_started = Instant::now();
    let (status, concurrent) = api
        .post("/v1/paygateglobal/main/charges", charge_body(2500))
        .await;
    let charge_latency = charge_started.elapsed();
    assert_eq!(status, 200, "{concurrent}");
    assert_eq!(concurrent["status"], "pending");

    let mut statuses = Vec::new();
    while let Some(done) = flood.join_next().await {
        statuses.extend(done.expect("flood task"));
    }
    let flood_time = flood_started.elapsed();
    let status_calls = running.calls.count("/api/v2/status") - status_calls_before;
    let acknowledged = statuses.iter().filter(|status| **status == 200).count();
    let deferred = statuses.iter().filter(|status| **status == 503).count();
    println!(
        "1000 forged callbacks in {flood_time:?}: {status_calls} status calls, {acknowledged} answered 200, {deferred} answered 503; concurrent charge {charge_latency:?}"
    );
    assert_eq!(statuses.len(), 1000);
    // Every forged identifier is acknowledged without a call; the replays share confirmations
    // and a budget of 2 at once, 1 a second after the first 2.
    assert_eq!(acknowledged + deferred, 1000, "{statuses:?}");
    assert!(acknowledged >= 900, "{acknowledged}");
    let bound = 2 + flood_time.as_secs() as usize + 1;
    assert!(
        status_calls <= bound,
        "{status_calls} status calls for 1000 forged callbacks (bound {bound})"
    );
    assert!(
        charge_latency < Duration::from_secs(1),
        "a real charge waited {charge_latency:?} behind forged callbacks"
    );
    api.stop().await;
}

// --- 5. Bounded plugin threads -----------------------------------------------------------------

fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |tasks| tasks.count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_plugin_costs_a_bounded_number_of_threads_then_is_refused() {
    if !in_own_process("edge::a_hanging_plugin_costs_a_bounded_number_of_threads_then_is_refused") {
        return;
    }
    let dir = tempfile::tempdir().expect("folder");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).expect("plugins");
    install(
        &library("gatehouse-fixture-misbehaving-plugin"),
        &plugins,
        &plugin_file_name("misbehaving"),
    );
    let config_path = dir.path().join("plugins.toml");
    std::fs::write(
        &config_path,
        format!(
            "[host]\nplugins_dir = \"plugins\"\nledger = \"ledger.sqlite\"\nplugin_call_budget_ms = 200\nmax_abandoned_plugin_threads = 16\n\n[api]\nkeys = [\"{API_KEY}\"]\n\n[providers.misbehaving.accounts.main]\nsecrets = {{ api_key = \"fixture-key\" }}\n"
        ),
    )
    .expect("configuration");
    let service = Service::open(Config::load(&config_path).expect("valid"))
        .await
        .expect("service");
    let threads_before = thread_count();
    let started = Instant::now();
    let mut faults = 0;
    let mut refused = 0;
    // 300 calls that hang, 30 at a time.
    for _ in 0..10 {
        let mut batch = tokio::task::JoinSet::new();
        for _ in 0..30 {
            let service = service.clone();
            batch.spawn(async move {
                execute(
                    &service,
                    "misbehaving",
                    "main",
                    json!({"operation": "report", "report": "forever"}),
                    None,
                )
                .await
            });
        }
        while let Some(result) = batch.join_next().await {
            match result.expect("task") {
                Err(DispatchError::Provider(error))
                    if error.kind == gatehouse_plugin_api::ErrorKind::PluginFault =>
                {
                    faults += 1
                }
                Err(error @ DispatchError::PluginUnavailable { .. }) => {
                    assert_eq!(error.code(), ErrorCode::PluginUnavailable);
                    refused += 1
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    let threads_after = thread_count();
    let report = service.gateway().plugin_threads();
    println!(
        "300 hung calls in {:?}: {faults} plugin_fault, {refused} plugin_unavailable; threads {threads_before} -> {threads_after}; {report:?}",
        started.elapsed()
    );
    assert_eq!(faults + refused, 300);
    assert!(refused >= 250, "{refused} refused");
    let stuck = report.stuck.get("misbehaving").copied().unwrap_or(0);
    assert!((16..=20).contains(&stuck), "{stuck} stuck threads");
    // Each stuck thread was replaced once; nothing else grows.
    assert!(
        threads_after <= threads_before + 20 + 4,
        "threads {threads_before} -> {threads_after}"
    );
    assert_eq!(report.unavailable, ["misbehaving"]);

    // Reported in /v1/plugins, and the refusal has its own code and status over HTTP.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(gatehouse_service::server::serve(
        service.clone(),
        listener,
        std::future::pending::<()>(),
    ));
    let client = reqwest::Client::new();
    let listing: Value = client
        .get(format!("{base}/v1/plugins"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .expect("listing")
        .json()
        .await
        .expect("json");
    assert_eq!(
        listing["plugin_threads"]["unavailable"],
        json!(["misbehaving"]),
        "{listing}"
    );
    let refusal = client
        .post(format!("{base}/v1/misbehaving/main/refunds"))
        .bearer_auth(API_KEY)
        .json(&json!({"transaction_id": "t1"}))
        .send()
        .await
        .expect("refund");
    assert_eq!(refusal.status(), 503);
    let refusal: Value = refusal.json().await.expect("json");
    assert_eq!(refusal["error"]["code"], "plugin_unavailable", "{refusal}");
}

// --- 6. A per-account maximum amount, text lengths from the manifest ---------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_amount_over_the_account_limit_or_a_long_text_is_refused_before_the_ledger() {
    let (_simulator, running) = PayGateSimulator::start(TOKEN).await.expect("simulator");
    let api = ApiHost::start(
        &["gatehouse-plugin-paygateglobal"],
        &paygate_account(&running.base_url(), "max_amount_minor_units = 5000000"),
    )
    .await;
    let (status, refusal) = api
        .post(
            "/v1/paygateglobal/main/charges",
            charge_body(9_223_372_036_854_775_807),
        )
        .await;
    assert_eq!(status, 422, "{refusal}");
    assert_eq!(refusal["error"]["code"], "invalid_request");
    let message = refusal["error"]["message"].as_str().expect("message");
    assert!(
        message.contains("max_amount_minor_units = 5000000"),
        "{message}"
    );
    let mut long_description = charge_body(1500);
    long_description["description"] = json!("x".repeat(256));
    let (status, refusal) = api
        .post("/v1/paygateglobal/main/charges", long_description)
        .await;
    assert_eq!(status, 422, "{refusal}");
    assert!(
        refusal["error"]["message"]
            .as_str()
            .is_some_and(|message| message.contains("description") && message.contains("255")),
        "{refusal}"
    );
    assert!(running.calls.all().is_empty(), "{:?}", running.calls.all());
    let entries = api.ledger.list(&ListFilter::default()).expect("list");
    assert!(entries.is_empty(), "{entries:?}");
    // At the limit, it goes through.
    let (status, charged) = api
        .post("/v1/paygateglobal/main/charges", charge_body(5_000_000))
        .await;
    assert_eq!(status, 200, "{charged}");
    api.stop().await;
}

// --- 7, 9. The real executable: private copies, literal secrets --------------------------------

/// A folder with the PayGateGlobal plugin and a configuration for `base_url`, whose token is
/// written inline (to be warned about) or referenced.
fn cli_setup(base_url: &str, listen: &str, inline_token: bool) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("folder");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).expect("plugins");
    install(
        &library("gatehouse-plugin-paygateglobal"),
        &plugins,
        &plugin_file_name("paygateglobal"),
    );
    let token = if inline_token {
        format!("\"{TOKEN}\"")
    } else {
        "\"${EDGE_TEST_TOKEN}\"".to_string()
    };
    let config = dir.path().join("plugins.toml");
    std::fs::write(
        &config,
        format!(
            "[host]\nplugins_dir = \"plugins\"\nledger = \"ledger.sqlite\"\nlisten = \"{listen}\"\n\n[api]\nkeys = [\"${{EDGE_TEST_API_KEY}}\"]\n\n[providers.paygateglobal.accounts.main]\nbase_url = \"{base_url}\"\nsecrets = {{ auth_token = {token} }}\n"
        ),
    )
    .expect("configuration");
    (dir, config)
}

fn gatehouse_command(config: &Path, tmpdir: &Path) -> Command {
    let mut command = Command::new(gatehouse_binary());
    command
        .arg("--config")
        .arg(config)
        .env("TMPDIR", tmpdir)
        .env("EDGE_TEST_TOKEN", TOKEN)
        .env("EDGE_TEST_API_KEY", API_KEY);
    command
}

async fn wait_for_readyz(base: &str, child: &mut Child) -> (u16, Value) {
    for _ in 0..400 {
        if let Ok(response) = reqwest::get(format!("{base}/readyz")).await {
            let status = response.status().as_u16();
            return (status, response.json().await.unwrap_or(Value::Null));
        }
        if let Ok(Some(exit)) = child.try_wait() {
            panic!("gatehouse serve exited: {exit}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("gatehouse serve did not answer at {base}");
}

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    for _ in 0..400 {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn leftovers(folder: &Path) -> Vec<String> {
    std::fs::read_dir(folder)
        .expect("temporary folder")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_private_copy_folder_is_left_behind_by_serve_call_or_plugins() {
    let (_simulator, running) = PayGateSimulator::start(TOKEN).await.expect("simulator");
    let port = free_port();
    let (dir, config) = cli_setup(&running.base_url(), &format!("127.0.0.1:{port}"), false);
    let tmpdir = tempfile::tempdir().expect("TMPDIR");

    let listing = gatehouse_command(&config, tmpdir.path())
        .args(["plugins", "--json"])
        .output()
        .expect("plugins runs");
    assert!(listing.status.success(), "{listing:?}");
    assert!(String::from_utf8_lossy(&listing.stdout).contains("paygateglobal"));
    assert_eq!(
        leftovers(tmpdir.path()),
        Vec::<String>::new(),
        "after plugins"
    );

    let call = gatehouse_command(&config, tmpdir.path())
        .args(["call", "paygateglobal", "balance"])
        .output()
        .expect("call runs");
    assert!(call.status.success(), "{call:?}");
    assert_eq!(leftovers(tmpdir.path()), Vec::<String>::new(), "after call");

    let mut serve = gatehouse_command(&config, tmpdir.path())
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("serve starts");
    let (status, ready) = wait_for_readyz(&format!("http://127.0.0.1:{port}"), &mut serve).await;
    assert_eq!(status, 200, "{ready}");
    // Loaded, and no private folder even while serving: each load removes its own.
    assert_eq!(
        leftovers(tmpdir.path()),
        Vec::<String>::new(),
        "while serving"
    );
    stop(serve);
    assert_eq!(
        leftovers(tmpdir.path()),
        Vec::<String>::new(),
        "after serve"
    );
    drop(dir);
}

#[test]
fn literal_secrets_are_warned_about_by_name_only() {
    let (dir, config) = cli_setup("http://127.0.0.1:9", "127.0.0.1:0", true);
    let listing = gatehouse_command(&config, dir.path())
        .args(["plugins", "--json"])
        .output()
        .expect("plugins runs");
    let logs = String::from_utf8_lossy(&listing.stderr);
    let warnings: Vec<&str> = logs
        .lines()
        .filter(|line| line.contains("a secret is written inline"))
        .collect();
    assert_eq!(warnings.len(), 1, "{logs}");
    assert!(
        warnings[0].contains("providers.paygateglobal.accounts.main.secrets.auth_token"),
        "{logs}"
    );
    assert!(
        !logs.contains(TOKEN),
        "the value itself is never printed: {logs}"
    );

    // Referenced secrets: no warning.
    let (dir, config) = cli_setup("http://127.0.0.1:9", "127.0.0.1:0", false);
    let listing = gatehouse_command(&config, dir.path())
        .args(["plugins", "--json"])
        .output()
        .expect("plugins runs");
    assert!(
        !String::from_utf8_lossy(&listing.stderr).contains("written inline"),
        "{listing:?}"
    );
}

// --- 8. /readyz reflects whether the ledger takes a write ---------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_fails_when_the_ledger_cannot_take_a_write() {
    let port = free_port();
    let (dir, config) = cli_setup("http://127.0.0.1:9", &format!("127.0.0.1:{port}"), false);
    let base = format!("http://127.0.0.1:{port}");
    // The test holds the ledger open, so its write-ahead log and shared-memory index stay in
    // place between the two runs below (SQLite removes them when the last user closes).
    let ledger = Arc::new(SqliteLedger::open(&dir.path().join("ledger.sqlite")).expect("ledger"));
    ledger.probe_write().expect("the test can write");

    // Unlimited: ready, ledger writable.
    let mut serve = gatehouse_command(&config, dir.path())
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("serve starts");
    let (status, ready) = wait_for_readyz(&base, &mut serve).await;
    stop(serve);
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["ledger"], "writable", "{ready}");

    // RLIMIT_FSIZE of one block: every write past it fails with EFBIG, for root too (SIGXFSZ
    // ignored, so the write fails instead of killing the process): the disk is "full".
    let mut serve = Command::new("/bin/sh")
        .arg("-c")
        .arg("trap '' XFSZ; ulimit -f 1 && exec \"$0\" \"$@\"")
        .arg(gatehouse_binary())
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .env("TMPDIR", dir.path())
        .env("EDGE_TEST_TOKEN", TOKEN)
        .env("EDGE_TEST_API_KEY", API_KEY)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("serve starts");
    let (status, unready) = wait_for_readyz(&base, &mut serve).await;
    stop(serve);
    println!("/readyz with a full disk: {status} {unready}");
    assert_eq!(status, 503, "{unready}");
    assert_eq!(unready["error"]["code"], "not_ready", "{unready}");
    assert_eq!(unready["readiness"]["ledger"], "failing", "{unready}");
    let reasons = unready["error"]["reasons"].to_string();
    assert!(
        reasons.contains("the ledger cannot take a write"),
        "{reasons}"
    );
    drop(ledger);
}
