//! Plugin versions side by side: `gatehouse plugin install` / `history` / `rollback` and their API
//! twins, against a running host (the real `gatehouse serve`, or an in-process host under load),
//! with real plugin libraries: PayGate Global 1.0.0 (`gatehouse-plugin-paygateglobal`) and 1.1.0
//! (`gatehouse-fixture-paygateglobal-next`), signed with keys made by `gatehouse plugin keygen`.
//! Also the walkthrough in PLUGIN_GUIDE.md, run command by command.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use gatehouse_e2e::{API_KEY, ApiHost, free_port, gatehouse_binary, library, plugin_file_name};
use gatehouse_plugin_api::OutcomeStatus;
use gatehouse_sim_common::Fault;
use gatehouse_sim_paygateglobal::PayGateSimulator;
use serde_json::{Value, json};

const TOKEN: &str = "token-for-deploy-tests";
const PROVIDER: &str = "paygateglobal";

fn gatehouse(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(gatehouse_binary())
        .args(args)
        .output()
        .expect("gatehouse runs")
}

fn text(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr)
}

/// Runs `gatehouse --config <config> plugin <args…>`; returns the exit code and the output.
fn plugin(config: &Path, args: &[&str]) -> (i32, String) {
    let mut all: Vec<&std::ffi::OsStr> =
        vec!["--config".as_ref(), config.as_os_str(), "plugin".as_ref()];
    all.extend(args.iter().map(|arg| std::ffi::OsStr::new(*arg)));
    let output = gatehouse(&all);
    (output.status.code().unwrap_or(-1), text(&output))
}

fn ok(config: &Path, args: &[&str]) -> String {
    let (code, output) = plugin(config, args);
    assert_eq!(code, 0, "{args:?}: {output}");
    output
}

fn history(config: &Path) -> Value {
    let (code, output) = plugin(config, &["history", PROVIDER, "--json"]);
    assert_eq!(code, 0, "{output}");
    let start = output.find('{').expect("JSON");
    let end = output.rfind('}').expect("JSON");
    serde_json::from_str(&output[start..=end]).expect("history JSON")
}

/// Makes a key pair with the CLI; returns (secret key file, public key line).
fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let base = dir.join(name);
    let output = gatehouse(&[
        "plugin".as_ref(),
        "keygen".as_ref(),
        "--out".as_ref(),
        base.as_os_str(),
    ]);
    assert!(output.status.success(), "{}", text(&output));
    let public = std::fs::read_to_string(dir.join(format!("{name}.pub"))).expect("public key");
    let line = public.lines().nth(1).expect("key line").trim().to_string();
    (dir.join(format!("{name}.key")), line)
}

/// `bytes` as `<dir>/libpaygateglobal.so`, signed with `key` when one is given.
fn staged(dir: &Path, bytes: &[u8], key: Option<&Path>) -> PathBuf {
    std::fs::create_dir_all(dir).expect("staging folder");
    let file = dir.join(plugin_file_name(PROVIDER));
    std::fs::write(&file, bytes).expect("stage");
    if let Some(key) = key {
        let output = gatehouse(&[
            "plugin".as_ref(),
            "sign".as_ref(),
            file.as_os_str(),
            "--key".as_ref(),
            key.as_os_str(),
        ]);
        assert!(output.status.success(), "{}", text(&output));
    }
    file
}

fn signature_of(library: &Path) -> Vec<u8> {
    std::fs::read(format!("{}.minisig", library.display())).expect("signature")
}

fn sha256(bytes: &[u8]) -> String {
    gatehouse_core::loader::sha256_hex(bytes)
}

fn entry(version: &str, bytes: &[u8]) -> String {
    gatehouse_core::versions::entry_name(version, &sha256(bytes))
}

/// The real `gatehouse serve` over a folder of its own.
struct Served {
    child: Option<Child>,
    base: String,
    client: reqwest::Client,
}

impl Served {
    fn write_config(dir: &Path, simulator_url: &str, extra: &str) -> (PathBuf, String) {
        let port = free_port();
        std::fs::create_dir_all(dir.join("plugins")).expect("plugins folder");
        let config = dir.join("plugins.toml");
        std::fs::write(
            &config,
            format!(
                "[host]\nplugins_dir = \"plugins\"\nledger = \"ledger.sqlite\"\nlisten = \"127.0.0.1:{port}\"\nreload_debounce_ms = 50\n\n\
                 [api]\nkeys = [\"{API_KEY}\"]\n\n{extra}\n\
                 [providers.paygateglobal.accounts.main]\nbase_url = \"{simulator_url}\"\nsecrets = {{ auth_token = \"{TOKEN}\" }}\n"
            ),
        )
        .expect("plugins.toml");
        (config, format!("http://127.0.0.1:{port}"))
    }

    async fn start(config: &Path, base: &str) -> Self {
        let child = Command::new(gatehouse_binary())
            .args(["--config", config.to_str().expect("utf-8 path"), "serve"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("gatehouse serve starts");
        let served = Self {
            child: Some(child),
            base: base.to_string(),
            client: reqwest::Client::new(),
        };
        // Generous: the e2e tests share two cores, and this host is started while others run.
        for _ in 0..1200 {
            if let Ok(response) = reqwest::get(format!("{base}/healthz")).await
                && response.status() == 200
            {
                return served;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("gatehouse serve did not answer at {base}");
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    async fn plugins(&self) -> Value {
        self.client
            .get(format!("{}/v1/plugins", self.base))
            .bearer_auth(API_KEY)
            .send()
            .await
            .expect("/v1/plugins")
            .json()
            .await
            .expect("JSON")
    }

    /// This provider's entry of `/v1/plugins`, once it serves `version` (waits for the watcher).
    async fn serving(&self, version: &str, sha: &str) -> Value {
        for _ in 0..600 {
            let plugins = self.plugins().await;
            if let Some(entry) = plugins["plugins"]
                .as_array()
                .and_then(|all| all.iter().find(|entry| entry["provider"] == PROVIDER))
                && entry["plugin_version"] == version
                && entry["sha256"] == sha
            {
                return entry.clone();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "{PROVIDER} {version} ({sha}) never served: {}",
            self.plugins().await
        );
    }

    async fn post(
        &self,
        path: &str,
        body: Vec<u8>,
        headers: &[(&str, String)],
        key: bool,
    ) -> (u16, Value) {
        let mut request = self.client.post(format!("{}{path}", self.base)).body(body);
        if key {
            request = request.bearer_auth(API_KEY);
        }
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let response = request.send().await.expect("API reachable");
        let status = response.status().as_u16();
        let body = response.text().await.expect("body");
        (
            status,
            serde_json::from_str(&body).unwrap_or(Value::String(body)),
        )
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Builds {
    v1: Vec<u8>,
    v2: Vec<u8>,
    /// 1.0.0 rebuilt: the same code with bytes appended (another SHA-256, the same version).
    v1b: Vec<u8>,
    broken: Vec<u8>,
}

fn builds() -> Builds {
    let v1 = std::fs::read(library("gatehouse-plugin-paygateglobal")).expect("v1");
    let mut v1b = v1.clone();
    v1b.extend_from_slice(b"\0a rebuild of 1.0.0\0");
    Builds {
        v2: std::fs::read(library("gatehouse-fixture-paygateglobal-next")).expect("v2"),
        broken: std::fs::read(library("gatehouse-fixture-broken-panicking")).expect("broken"),
        v1,
        v1b,
    }
}

/// The CLI against a running `gatehouse serve`: every refusal before anything is stored, then
/// install → upgrade → rollback → rollback --to, the retention bound, and a restart that serves
/// the active version even though a newer file was copied over the slot while the host was down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_upgrade_rollback_retention_and_restart_through_the_cli() {
    let (_simulator, running) = PayGateSimulator::start(TOKEN).await.expect("simulator");
    let dir = tempfile::tempdir().expect("folder");
    let (release, release_public) = keygen(dir.path(), "release");
    let (stranger, _) = keygen(dir.path(), "stranger");
    let (config, base) = Served::write_config(
        dir.path(),
        &running.base_url(),
        &format!(
            "[signatures]\nrequire_signatures = true\ntrusted_keys = [\"{release_public}\"]\n\n[plugins]\nkeep_versions = 2\n"
        ),
    );
    let mut host = Served::start(&config, &base).await;
    let builds = builds();
    let stage = dir.path().join("stage");
    let v1 = staged(&stage.join("v1"), &builds.v1, Some(&release));
    let v2 = staged(&stage.join("v2"), &builds.v2, Some(&release));
    let v1b = staged(&stage.join("v1b"), &builds.v1b, Some(&release));

    // Refused, each naming the file and the reason; nothing stored, nothing in the slot.
    let unsigned = staged(&stage.join("unsigned"), &builds.v2, None);
    let by_stranger = staged(&stage.join("stranger"), &builds.v2, Some(&stranger));
    let tampered = staged(&stage.join("tampered"), &builds.v2, Some(&release));
    let mut flipped = builds.v2.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x01;
    std::fs::write(&tampered, &flipped).expect("tamper");
    let broken = staged(&stage.join("broken"), &builds.broken, Some(&release));
    for (label, file, reason) in [
        (
            "unsigned",
            &unsigned,
            "unsigned, and signatures are required",
        ),
        (
            "another key",
            &by_stranger,
            "which plugins.toml does not trust",
        ),
        (
            "a tampered byte",
            &tampered,
            "does not match the file's bytes",
        ),
        (
            "a conformance failure",
            &broken,
            "the conformance check failed",
        ),
    ] {
        let (code, output) = plugin(&config, &["install", file.to_str().expect("path")]);
        assert_eq!(code, 5, "{label}: refused with exit 5: {output}");
        assert!(
            output.contains(&file.display().to_string()),
            "{label}: names the file: {output}"
        );
        assert!(
            output.contains(reason),
            "{label}: names the reason: {output}"
        );
    }
    let slot = dir.path().join("plugins").join(plugin_file_name(PROVIDER));
    assert!(
        !slot.exists(),
        "a refused install puts nothing in the plugins folder"
    );
    let (code, output) = plugin(&config, &["history", PROVIDER]);
    assert_eq!(code, 5, "nothing installed yet: {output}");

    // Install → active, with the key that signed it.
    let output = ok(&config, &["install", v1.to_str().expect("path")]);
    assert!(output.contains(&entry("1.0.0", &builds.v1)), "{output}");
    let serving = host.serving("1.0.0", &sha256(&builds.v1)).await;
    assert_eq!(serving["active_version"], entry("1.0.0", &builds.v1));
    assert_eq!(
        serving["kept_versions"],
        json!([entry("1.0.0", &builds.v1)])
    );
    let key_id = serving["signed_by"]
        .as_str()
        .expect("signed_by")
        .to_string();
    assert_eq!(key_id.len(), 16, "{serving}");
    assert!(
        dir.path()
            .join("plugins/.versions")
            .join(PROVIDER)
            .join(entry("1.0.0", &builds.v1))
            .join(plugin_file_name(PROVIDER))
            .is_file(),
        "stored under .versions/<provider>/<version>-<sha>/"
    );

    // Upgrade → history shows both, the new one active.
    ok(&config, &["install", v2.to_str().expect("path")]);
    host.serving("1.1.0", &sha256(&builds.v2)).await;
    let record = history(&config);
    assert_eq!(
        record["versions"].as_array().map(Vec::len),
        Some(2),
        "{record}"
    );
    let activations = record["activations"].as_array().expect("activations");
    assert_eq!(activations.len(), 2, "{record}");
    assert_eq!(activations[1]["entry"], entry("1.1.0", &builds.v2));
    assert_eq!(activations[1]["by"], "install");
    assert_eq!(activations[1]["via"], "cli");
    assert_eq!(activations[1]["key_id"], key_id.as_str());
    assert!(
        activations[1]["at_unix"]
            .as_u64()
            .is_some_and(|at| at > 1_700_000_000)
    );
    let table = ok(&config, &["history", PROVIDER]);
    assert!(
        table.contains(&format!("* {}", entry("1.1.0", &builds.v2))),
        "{table}"
    );

    // Rollback → the previous version serves; nothing earlier than the oldest.
    let output = ok(&config, &["rollback", PROVIDER]);
    assert!(output.contains("1.0.0"), "{output}");
    host.serving("1.0.0", &sha256(&builds.v1)).await;
    let record = history(&config);
    assert_eq!(record["activations"][2]["by"], "rollback");
    let (code, output) = plugin(&config, &["rollback", PROVIDER]);
    assert_eq!(code, 5, "{output}");
    assert!(output.contains("no version kept from before"), "{output}");

    // Rollback --to a named version, and to one that is not kept.
    ok(&config, &["rollback", PROVIDER, "--to", "1.1.0"]);
    host.serving("1.1.0", &sha256(&builds.v2)).await;
    let (code, output) = plugin(&config, &["rollback", PROVIDER, "--to", "9.9.9"]);
    assert_eq!(code, 5, "{output}");
    assert!(output.contains("has no version `9.9.9` kept"), "{output}");
    let serving = host.serving("1.1.0", &sha256(&builds.v2)).await;
    assert!(
        serving["last_refusal"]["reason"]
            .as_str()
            .is_some_and(|reason| reason.contains("9.9.9")),
        "/v1/plugins shows the last refusal: {serving}"
    );

    // Retention (keep_versions = 2): a third version drops the oldest, never the active one.
    let output = ok(&config, &["install", v1b.to_str().expect("path")]);
    assert!(
        output.contains(&format!("dropped {}", entry("1.0.0", &builds.v1))),
        "{output}"
    );
    let serving = host.serving("1.0.0", &sha256(&builds.v1b)).await;
    assert_eq!(
        serving["kept_versions"],
        json!([entry("1.1.0", &builds.v2), entry("1.0.0", &builds.v1b)])
    );
    assert!(
        !dir.path()
            .join("plugins/.versions")
            .join(PROVIDER)
            .join(entry("1.0.0", &builds.v1))
            .exists(),
        "the dropped version's folder is removed"
    );
    // A dropped version is gone: it cannot be rolled back to.
    let (code, output) = plugin(
        &config,
        &["rollback", PROVIDER, "--to", &entry("1.0.0", &builds.v1)],
    );
    assert_eq!(
        code, 5,
        "a dropped version cannot be rolled back to: {output}"
    );

    // Restart: the newest file copied over the slot while the host is down does not serve; the
    // active version is put back (and the stray file kept aside).
    host.stop();
    std::fs::write(&slot, &builds.v2).expect("a stray newer file");
    std::fs::copy(
        format!("{}.minisig", v2.display()),
        format!("{}.minisig", slot.display()),
    )
    .expect("with its signature");
    let host = Served::start(&config, &base).await;
    let serving = host.serving("1.0.0", &sha256(&builds.v1b)).await;
    assert_eq!(serving["active_version"], entry("1.0.0", &builds.v1b));
    assert_eq!(std::fs::read(&slot).expect("slot"), builds.v1b);
    assert!(
        dir.path()
            .join("plugins/.versions")
            .join(PROVIDER)
            .join(format!("displaced-{}", plugin_file_name(PROVIDER)))
            .is_file()
    );
    let plugins = host.plugins().await;
    assert_eq!(plugins["versions"][0]["provider"], PROVIDER, "{plugins}");
    drop(host);
}

/// The API twins against the real `gatehouse serve` (which installs the conformance check):
/// refusals (unsigned, another key, a signature for other bytes, not base64, a body too large,
/// a conformance failure), install, upgrade, rollback, rollback to an unknown version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_and_rollback_through_the_api() {
    let (_simulator, running) = PayGateSimulator::start(TOKEN).await.expect("simulator");
    let dir = tempfile::tempdir().expect("folder");
    let (release, release_public) = keygen(dir.path(), "release");
    let (stranger, _) = keygen(dir.path(), "stranger");
    let builds = builds();
    let limit = builds
        .v1
        .len()
        .max(builds.v2.len())
        .max(builds.broken.len())
        + 1024;
    let (config, base) = Served::write_config(
        dir.path(),
        &running.base_url(),
        &format!(
            "[signatures]\nrequire_signatures = true\ntrusted_keys = [\"{release_public}\"]\n\n[plugins]\nmax_install_bytes = {limit}\n"
        ),
    );
    let host = Served::start(&config, &base).await;
    let stage = dir.path().join("stage");
    let encode = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let v1_signature = encode(&signature_of(&staged(
        &stage.join("v1"),
        &builds.v1,
        Some(&release),
    )));
    let v2_signature = encode(&signature_of(&staged(
        &stage.join("v2"),
        &builds.v2,
        Some(&release),
    )));
    let stranger_signature = encode(&signature_of(&staged(
        &stage.join("stranger"),
        &builds.v2,
        Some(&stranger),
    )));
    let broken_signature = encode(&signature_of(&staged(
        &stage.join("broken"),
        &builds.broken,
        Some(&release),
    )));
    let install = format!("/v1/plugins/{PROVIDER}/install");
    let rollback = format!("/v1/plugins/{PROVIDER}/rollback");
    let header = |value: &str| vec![("x-gatehouse-signature", value.to_string())];

    // Without a key the answer comes before the body is read: sent empty, so the client is not
    // still writing (a broken pipe) when it comes.
    let (status, _) = host
        .post(&install, Vec::new(), &header(&v1_signature), false)
        .await;
    assert_eq!(status, 401, "the API key is required");
    for (label, body, headers, expected_status, reason) in [
        (
            "unsigned",
            builds.v2.clone(),
            vec![],
            422,
            "unsigned, and signatures are required",
        ),
        (
            "another key",
            builds.v2.clone(),
            header(&stranger_signature),
            422,
            "does not trust",
        ),
        (
            "a signature for other bytes",
            builds.v2.clone(),
            header(&v1_signature),
            422,
            "does not match the file's bytes",
        ),
        (
            "not base64",
            builds.v2.clone(),
            header("not base64 at all!"),
            400,
            "not base64",
        ),
        (
            "a body too large",
            vec![0u8; limit + 1],
            header(&v2_signature),
            413,
            "plugins.max_install_bytes",
        ),
        (
            "a conformance failure",
            builds.broken.clone(),
            header(&broken_signature),
            422,
            "the conformance check failed",
        ),
    ] {
        let (status, answer) = host.post(&install, body, &headers, true).await;
        assert_eq!(status, expected_status, "{label}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(reason), "{label}: {answer}");
        if expected_status == 422 {
            assert_eq!(answer["error"]["code"], "plugin_refused", "{label}");
            assert!(
                message.contains("uploaded for `paygateglobal`"),
                "{label}: names what: {answer}"
            );
        }
    }
    assert!(
        host.plugins().await["plugins"]
            .as_array()
            .is_some_and(Vec::is_empty)
    );

    // Install, then upgrade: each answer comes once the host serves it.
    let (status, answer) = host
        .post(&install, builds.v1.clone(), &header(&v1_signature), true)
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["activation"]["by"], "install");
    assert_eq!(answer["activation"]["via"], "api");
    assert_eq!(answer["activation"]["entry"], entry("1.0.0", &builds.v1));
    host.serving("1.0.0", &sha256(&builds.v1)).await;
    let (status, answer) = host
        .post(&install, builds.v2.clone(), &header(&v2_signature), true)
        .await;
    assert_eq!(status, 200, "{answer}");
    let serving = host.serving("1.1.0", &sha256(&builds.v2)).await;
    assert_eq!(serving["kept_versions"].as_array().map(Vec::len), Some(2));

    // A refusal once the provider is installed is its last refusal in /v1/plugins.
    let (status, _) = host.post(&install, builds.v1.clone(), &[], true).await;
    assert_eq!(status, 422);
    let serving = host.serving("1.1.0", &sha256(&builds.v2)).await;
    assert_eq!(serving["last_refusal"]["via"], "api", "{serving}");
    assert!(
        serving["last_refusal"]["reason"]
            .as_str()
            .is_some_and(|reason| reason.contains("unsigned")),
        "{serving}"
    );

    // Rollback, rollback --to, and the refusals.
    let (status, answer) = host.post(&rollback, Vec::new(), &[], true).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["activation"]["by"], "rollback");
    host.serving("1.0.0", &sha256(&builds.v1)).await;
    let (status, answer) = host
        .post(&rollback, br#"{"to": "9.9.9"}"#.to_vec(), &[], true)
        .await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["error"]["code"], "plugin_refused");
    let (status, answer) = host
        .post(&rollback, br#"{"to": "1.1.0"}"#.to_vec(), &[], true)
        .await;
    assert_eq!(status, 200, "{answer}");
    host.serving("1.1.0", &sha256(&builds.v2)).await;
    let (status, answer) = host.post(&rollback, b"{not json".to_vec(), &[], true).await;
    assert_eq!(status, 400, "{answer}");
    let (status, answer) = host
        .post("/v1/plugins/nothing-here/rollback", Vec::new(), &[], true)
        .await;
    assert_eq!(status, 422, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("no version of `nothing-here`")),
        "{answer}"
    );
}

/// Rollback under load: callers run commands through the service the whole time while the CLI
/// rolls back and the API rolls forward again; no request fails, a request in flight across the
/// swap finishes on the version it started with, and later ones get the version rolled to.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rollback_under_load_fails_no_request() {
    let (_simulator, running) = PayGateSimulator::start(TOKEN).await.expect("simulator");
    let mut api = ApiHost::start(
        &[],
        &format!(
            "[providers.paygateglobal.accounts.main]\nbase_url = \"{}\"\nrate_limit_per_minute = 100000\nsecrets = {{ auth_token = \"{TOKEN}\" }}\n",
            running.base_url()
        ),
    )
    .await;
    api.host.watch();
    let config = api.host.config_path();
    let builds = builds();
    let stage = api.host.dir.path().join("stage");
    let v1 = staged(&stage.join("v1"), &builds.v1, None);
    let v2 = staged(&stage.join("v2"), &builds.v2, None);
    ok(&config, &["install", v1.to_str().expect("path")]);
    ok(&config, &["install", v2.to_str().expect("path")]);
    let version = |api: &ApiHost| {
        api.host
            .gateway
            .registry()
            .get(PROVIDER)
            .map(|plugin| plugin.manifest.plugin_version.clone())
    };
    assert!(
        api.host
            .wait_until(Duration::from_secs(30), |gateway| gateway
                .registry()
                .get(PROVIDER)
                .is_some_and(|plugin| plugin.manifest.plugin_version == "1.1.0"))
            .await
    );
    let api = Arc::new(api);

    // In flight across the rollback: the simulator holds its answer.
    running
        .faults
        .push(Fault::Delay(Duration::from_millis(800)));
    let slow = {
        let api = api.clone();
        tokio::spawn(async move {
            api.host
                .call_full(PROVIDER, "main", json!({"operation": "balance"}))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;

    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let by_version = Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::<
        String,
        usize,
    >::new()));
    let mut workers = Vec::new();
    for _ in 0..8 {
        let (api, stop, failures, by_version) = (
            api.clone(),
            stop.clone(),
            failures.clone(),
            by_version.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut sent = 0usize;
            while !stop.load(Ordering::SeqCst) {
                match api
                    .host
                    .call_full(PROVIDER, "main", json!({"operation": "balance"}))
                    .await
                {
                    Ok(answer) if answer.outcome.status == OutcomeStatus::Succeeded => {
                        *by_version
                            .lock()
                            .expect("counts")
                            .entry(answer.plugin_version.unwrap_or_default())
                            .or_default() += 1;
                    }
                    other => {
                        eprintln!("failed during rollback: {other:?}");
                        failures.fetch_add(1, Ordering::SeqCst);
                    }
                }
                sent += 1;
            }
            sent
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The CLI rolls back; the running host's watcher loads the previous version.
    let rolled = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || plugin(&config, &["rollback", PROVIDER]))
            .await
            .expect("rollback ran")
    };
    assert_eq!(rolled.0, 0, "{}", rolled.1);
    assert!(
        api.host
            .wait_until(Duration::from_secs(30), |gateway| gateway
                .registry()
                .get(PROVIDER)
                .is_some_and(|plugin| plugin.manifest.plugin_version == "1.0.0"))
            .await,
        "the rollback was not loaded"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let served_by_v1_mid = by_version
        .lock()
        .expect("counts")
        .get("1.0.0")
        .copied()
        .unwrap_or(0);

    // The API rolls forward again, under the same load.
    let (status, _, answer) = api
        .request(
            reqwest::Method::POST,
            &format!("/v1/plugins/{PROVIDER}/rollback"),
            Some(json!({"to": "1.1.0"})),
            &[],
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        version(&api).as_deref(),
        Some("1.1.0"),
        "the API answers once it serves"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::SeqCst);
    let mut total = 0;
    for worker in workers {
        total += worker.await.expect("worker");
    }
    let slow = slow
        .await
        .expect("task")
        .expect("the in-flight request finished");
    assert_eq!(
        slow.plugin_version.as_deref(),
        Some("1.1.0"),
        "a request finishes on the version it started with"
    );
    assert_eq!(
        failures.load(Ordering::SeqCst),
        0,
        "requests failed across the rollbacks ({total} sent)"
    );
    let counts = by_version.lock().expect("counts").clone();
    assert!(
        served_by_v1_mid > 0,
        "requests after the rollback got 1.0.0: {counts:?}"
    );
    assert!(
        counts.get("1.1.0").copied().unwrap_or(0) > served_by_v1_mid.min(1),
        "{counts:?}"
    );
    assert!(total > 16, "the load was real ({total} requests)");

    // A file copied into the slot by hand while the host runs is recorded as the active version,
    // so a restart serves it too.
    gatehouse_e2e::install(
        &staged(&stage.join("hand"), &builds.v1b, None),
        &api.host.plugins_dir(),
        &plugin_file_name(PROVIDER),
    );
    let history_file = api
        .host
        .plugins_dir()
        .join(".versions")
        .join(PROVIDER)
        .join("history.json");
    let adopted = api
        .host
        .wait_until(Duration::from_secs(30), |_| {
            std::fs::read(history_file.as_path())
                .ok()
                .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
                .unwrap_or_default()["activations"]
                .as_array()
                .and_then(|all| all.last().cloned())
                .is_some_and(|last| {
                    last["by"] == "adopted" && last["sha256"] == sha256(&builds.v1b)
                })
        })
        .await;
    assert!(adopted, "{}", history(&config));
}

/// PLUGIN_GUIDE.md's walkthrough (the block between `deploy-walkthrough` markers), run line by
/// line with `sh` against a running host, with `$V1` and `$V2` two releases of a plugin: what
/// the guide tells an author and an operator to type is what this test runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guide_walkthrough_runs_as_written() {
    let guide = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../PLUGIN_GUIDE.md"),
    )
    .expect("PLUGIN_GUIDE.md");
    let start = guide
        .find("<!-- deploy-walkthrough:begin -->")
        .expect("the walkthrough's begin marker");
    let end = guide
        .find("<!-- deploy-walkthrough:end -->")
        .expect("the walkthrough's end marker");
    let block = &guide[start..end];
    let script: Vec<&str> = block
        .lines()
        .skip_while(|line| !line.starts_with("```sh"))
        .skip(1)
        .take_while(|line| !line.starts_with("```"))
        .filter(|line| !line.trim().is_empty() && !line.trim_start().starts_with('#'))
        .collect();
    assert!(
        script.len() >= 8,
        "the walkthrough has its commands: {script:?}"
    );
    for needed in [
        "plugin keygen",
        "plugin sign",
        "plugin install",
        "plugin history",
        "plugin rollback",
    ] {
        assert!(
            script.iter().any(|line| line.contains(needed)),
            "the walkthrough runs `{needed}`"
        );
    }

    let (_simulator, running) = PayGateSimulator::start(TOKEN).await.expect("simulator");
    let mut api = ApiHost::start(
        &[],
        &format!(
            "[providers.paygateglobal.accounts.main]\nbase_url = \"{}\"\nsecrets = {{ auth_token = \"{TOKEN}\" }}\n",
            running.base_url()
        ),
    )
    .await;
    api.host.watch();
    let work = api.host.dir.path().to_path_buf();
    let builds = builds();
    let v1 = staged(&work.join("v1"), &builds.v1, None);
    let v2 = staged(&work.join("v2"), &builds.v2, None);
    let bin_dir = gatehouse_binary()
        .parent()
        .expect("bin folder")
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for line in &script {
        let output = Command::new("sh")
            .args(["-c", line])
            .current_dir(&work)
            .env("PATH", &path)
            .env("V1", &v1)
            .env("V2", &v2)
            .output()
            .expect("sh runs");
        assert!(
            output.status.success(),
            "`{line}` failed: {}",
            text(&output)
        );
    }

    // Where the walkthrough ends: signed, both kept, rolled back to the first release.
    let config = api.host.config_path();
    let record = history(&config);
    assert_eq!(
        record["versions"].as_array().map(Vec::len),
        Some(2),
        "{record}"
    );
    let by: Vec<&str> = record["activations"]
        .as_array()
        .expect("activations")
        .iter()
        .filter_map(|activation| activation["by"].as_str())
        .collect();
    assert_eq!(by, ["install", "install", "rollback"], "{record}");
    assert!(
        record["versions"][0]["signed_by"].is_string(),
        "signed: {record}"
    );
    assert!(
        api.host
            .wait_until(Duration::from_secs(30), |gateway| gateway
                .registry()
                .get(PROVIDER)
                .is_some_and(
                    |plugin| plugin.sha256 == sha256(&builds.v1) && plugin.signed_by.is_some()
                ))
            .await,
        "the host serves the first release, signed"
    );
    let (status, plugins) = api.get("/v1/plugins").await;
    assert_eq!(status, 200);
    assert_eq!(
        plugins["plugins"][0]["active_version"],
        entry("1.0.0", &builds.v1)
    );
}
