//! The `gatehouse` command line: `plugins` and `call`, run as the real executable.

use std::process::Command;

use gatehouse_e2e::{gatehouse_binary, install, library, plugin_file_name};
use gatehouse_ledger::{EntryState, Ledger, ListFilter, SqliteLedger};
use gatehouse_sim_paygateglobal::PayGateSimulator;
use serde_json::Value;

use crate::reliability::{Simulators, ccbill_payout};

const TOKEN: &str = "cli-test-token-5678";

fn gatehouse(config: &std::path::Path, args: &[&str]) -> (i32, Value, String) {
    let output = Command::new(gatehouse_binary())
        .arg("--config")
        .arg(config)
        .args(args)
        .env("CLI_TEST_TOKEN", TOKEN)
        .output()
        .expect("gatehouse runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let json = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (
        output.status.code().unwrap_or(-1),
        json,
        stdout + &String::from_utf8_lossy(&output.stderr),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_and_call() {
    let (_simulator, running) = PayGateSimulator::start(TOKEN).await.expect("simulator");
    let dir = tempfile::tempdir().expect("folder");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).expect("plugins");
    install(
        &library("gatehouse-plugin-paygateglobal"),
        &plugins,
        &plugin_file_name("paygateglobal"),
    );
    std::fs::write(plugins.join("libbroken.so"), b"not a library").expect("broken file");
    let config = dir.path().join("plugins.toml");
    std::fs::write(
        &config,
        format!(
            "[host]\nplugins_dir = \"plugins\"\n\n[providers.paygateglobal.accounts.main]\nbase_url = \"{}\"\nsecrets = {{ auth_token = \"${{CLI_TEST_TOKEN}}\" }}\n",
            running.base_url()
        ),
    )
    .expect("config");

    // `plugins --json`: the loaded plugin, its operations, and the file that failed.
    // A refused plugin file makes the listing exit 5: a script must see it.
    let (code, listing, text) = gatehouse(&config, &["plugins", "--json"]);
    assert_eq!(code, 5, "{text}");
    assert_eq!(listing["plugins"][0]["provider"], "paygateglobal");
    assert_eq!(listing["plugins"][0]["plugin_version"], "1.0.0");
    assert!(
        listing["plugins"][0]["operations"]
            .as_array()
            .expect("ops")
            .iter()
            .any(|op| op == "charge")
    );
    assert!(
        listing["load_errors"][0]["error"]
            .as_str()
            .expect("error")
            .contains("libbroken.so")
    );
    // The table form names the same things.
    let (code, _, text) = gatehouse(&config, &["plugins"]);
    assert_eq!(code, 5);
    assert!(
        text.contains("paygateglobal") && text.contains("load error"),
        "{text}"
    );

    // `call`: one command, the normalized outcome as JSON.
    let (code, outcome, text) = gatehouse(&config, &["call", "paygateglobal", "balance"]);
    assert_eq!(code, 0, "{text}");
    assert_eq!(outcome["status"], "succeeded");
    assert_eq!(
        outcome["details"]["balances"][0]["amount"]["minor_units"],
        150_000
    );
    let (code, outcome, text) = gatehouse(
        &config,
        &[
            "call",
            "paygateglobal",
            "charge",
            "--json",
            r#"{"amount":{"minor_units":500,"currency":"XOF"},"customer":{"phone":"90123456"},"payment_method":"TMONEY"}"#,
        ],
    );
    assert_eq!(code, 0, "{text}");
    assert_eq!(outcome["status"], "pending");
    assert!(
        outcome["reference"]
            .as_str()
            .expect("reference")
            .starts_with("gh_")
    );

    // Refusals: exit 5 with a JSON error; bad invocations: exit 2 with a message.
    let (code, error, _) = gatehouse(
        &config,
        &[
            "call",
            "paygateglobal",
            "refund",
            "--json",
            r#"{"transaction_id":"1"}"#,
        ],
    );
    assert_eq!(
        (code, error["error"]["code"].as_str()),
        (5, Some("not_supported"))
    );
    let (code, _, text) = gatehouse(
        &config,
        &["call", "paygateglobal", "charge", "--json", "{oops"],
    );
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("not JSON"), "{text}");
    let (code, _, text) = gatehouse(
        &config,
        &[
            "call",
            "paygateglobal",
            "charge",
            "--json",
            r#"{"amount":{"minor_units":1,"currency":"EURO"}}"#,
        ],
    );
    assert_eq!(code, 2);
    assert!(text.contains("currency"), "{text}");
    assert!(!text.contains(TOKEN));

    // A broken configuration names the file, the line and the key.
    std::fs::write(
        &config,
        "[host]\nplugins_dir = \"plugins\"\nbogus_key = 1\n",
    )
    .expect("config");
    let (code, _, text) = gatehouse(&config, &["plugins"]);
    assert_eq!(code, 2);
    assert!(
        text.contains("plugins.toml:3") && text.contains("bogus_key"),
        "{text}"
    );
}

/// `gatehouse call` goes through the one door: a charge and a CCBill payout are in the configured
/// ledger before they are sent, and a retry with the same `--idempotency-key` is answered from
/// it without reaching the provider. Exit codes tell pending, failed and unknown apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_records_money_in_the_ledger_and_answers_retries_from_it() {
    let sims = Simulators::start().await;
    let dir = tempfile::tempdir().expect("folder");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).expect("plugins");
    for provider in ["paygateglobal", "ccbill"] {
        install(
            &library(&format!("gatehouse-plugin-{provider}")),
            &plugins,
            &plugin_file_name(provider),
        );
    }
    let config = dir.path().join("plugins.toml");
    std::fs::write(
        &config,
        format!(
            "[host]\nplugins_dir = \"plugins\"\nledger = \"ledger.sqlite\"\n\n{}",
            sims.accounts_toml(3000)
        ),
    )
    .expect("config");
    let charge = r#"{"amount":{"minor_units":700,"currency":"XOF"},"customer":{"phone":"90123456"},"payment_method":"FLOOZ"}"#;
    let call_charge = || {
        gatehouse(
            &config,
            &[
                "call",
                "paygateglobal",
                "charge",
                "--json",
                charge,
                "--idempotency-key",
                "cli-order-1",
            ],
        )
    };

    let (code, first, text) = call_charge();
    assert_eq!(code, 0, "{text}");
    assert_eq!(first["status"], "pending", "{text}");
    assert_eq!(first["replayed"], false);
    let reference = first["reference"].as_str().expect("reference").to_string();
    assert_eq!(sims.pgg.transactions().len(), 1);

    let (code, retry, text) = call_charge();
    assert_eq!(code, 0, "{text}");
    assert_eq!(retry["replayed"], true, "{text}");
    assert_eq!(retry["reference"], reference.as_str());
    assert_eq!(retry["provider_reference"], first["provider_reference"]);
    assert_eq!(
        sims.pgg.transactions().len(),
        1,
        "the retry reached the provider"
    );

    // The same key with another body is refused, naming the key.
    let (code, reused, text) = gatehouse(
        &config,
        &[
            "call",
            "paygateglobal",
            "charge",
            "--json",
            r#"{"amount":{"minor_units":900,"currency":"XOF"},"customer":{"phone":"90123456"},"payment_method":"FLOOZ"}"#,
            "--idempotency-key",
            "cli-order-1",
        ],
    );
    assert_eq!(
        (code, reused["error"]["code"].as_str()),
        (5, Some("idempotency_key_reused")),
        "{text}"
    );

    let payout = ccbill_payout("0001", 1250).to_string();
    let (code, paid, text) = gatehouse(
        &config,
        &["call", "ccbill", "affiliate_payout", "--json", &payout],
    );
    assert_eq!(code, 0, "{text}");
    let payout_reference = paid["reference"].as_str().expect("reference").to_string();
    assert_eq!(sims.ccbill.payouts().len(), 1);

    let ledger = SqliteLedger::open(&dir.path().join("ledger.sqlite")).expect("ledger");
    let entries = ledger
        .list(&ListFilter {
            limit: 100,
            ..Default::default()
        })
        .expect("entries");
    assert_eq!(entries.len(), 2, "{entries:#?}");
    let charge_entry = ledger.get(&reference).expect("read").expect("the charge");
    assert_eq!(charge_entry.state, EntryState::Pending);
    assert_eq!(charge_entry.idempotency_key.as_deref(), Some("cli-order-1"));
    let payout_entry = ledger
        .get(&payout_reference)
        .expect("read")
        .expect("the payout");
    assert_eq!(payout_entry.provider, "ccbill");
    assert_eq!(payout_entry.state, EntryState::Succeeded);

    // A payout CCBill refuses (-3, no such affiliate) fails: exit 3.
    sims.ccbill.answer_next(-3);
    let (code, failed, text) = gatehouse(
        &config,
        &[
            "call",
            "ccbill",
            "affiliate_payout",
            "--json",
            &ccbill_payout("0002", 100).to_string(),
        ],
    );
    assert_eq!(
        (code, failed["status"].as_str()),
        (3, Some("failed")),
        "{text}"
    );
    // The provider is down after a request may have left: unknown, exit 4.
    let (code, unknown, text) = gatehouse(
        &config,
        &[
            "call",
            "paygateglobal",
            "charge",
            "--account",
            "down",
            "--json",
            charge,
        ],
    );
    assert!(
        (code == 4 && unknown["status"] == "unknown")
            || (code == 3 && unknown["status"] == "failed"),
        "a provider that cannot be reached: {text}"
    );
}

/// `gatehouse plugin new` outside the workspace writes a crate of its own (concrete edition and
/// license, `plugin-api` by path to this checkout, an empty `[workspace]`) that builds and passes
/// its tests where it is made, offline; its README describes the new plugin, not the template.
#[test]
fn a_plugin_made_outside_the_workspace_builds_and_passes_its_tests_there() {
    let outside = tempfile::tempdir().expect("folder outside the workspace");
    let output = Command::new(gatehouse_binary())
        .args(["plugin", "new", "acmepay", "--destination"])
        .arg(outside.path())
        .output()
        .expect("gatehouse runs");
    assert!(output.status.success(), "{output:?}");
    let crate_dir = outside.path().join("acmepay");
    let manifest = std::fs::read_to_string(crate_dir.join("Cargo.toml")).expect("manifest");
    assert!(!manifest.contains(".workspace = true"), "{manifest}");
    assert!(manifest.contains("edition = \"2024\""), "{manifest}");
    assert!(manifest.contains("\n[workspace]\n"), "{manifest}");
    let readme = std::fs::read_to_string(crate_dir.join("README.md")).expect("README");
    assert!(!readme.contains("It is the template"), "{readme}");
    assert!(readme.contains("gatehouse plugin new acmepay"), "{readme}");
    // A target folder of its own inside this workspace's, kept between runs: the crate's lock
    // file resolves apart from the workspace's, so sharing `target/debug` would rebuild both.
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = workspace.join("target").join("scaffold-standalone");
    let tested = Command::new(env!("CARGO"))
        .current_dir(&crate_dir)
        .args(["test", "--offline", "--quiet"])
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .expect("cargo runs");
    assert!(
        tested.status.success(),
        "cargo test in the new crate failed:\n{}\n{}",
        String::from_utf8_lossy(&tested.stdout),
        String::from_utf8_lossy(&tested.stderr)
    );
    let stdout = String::from_utf8_lossy(&tested.stdout);
    assert!(stdout.contains("test result: ok"), "{stdout}");
}

/// A short-lived command piped into `head` ends quietly when the reader goes away: the pipe is
/// closed before the command writes, so every write fails with EPIPE. It must not panic (exit 101
/// with a Rust backtrace message); it ends by SIGPIPE, as `ls | head` does.
#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let library = library("gatehouse-plugin-paygateglobal");
    let dir = tempfile::tempdir().expect("folder");
    std::fs::create_dir(dir.path().join("plugins")).expect("plugins");
    let config = dir.path().join("plugins.toml");
    std::fs::write(&config, "[host]\nplugins_dir = \"plugins\"\n").expect("config");
    let library = library.to_str().expect("utf-8 path").to_string();
    let config = config.to_str().expect("utf-8 path").to_string();
    for args in [
        vec!["plugin", "check", "--json", library.as_str()],
        vec!["plugin", "check", library.as_str()],
        vec!["--config", config.as_str(), "plugins", "--json"],
    ] {
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let output = Command::new(gatehouse_binary())
            .args(&args)
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .expect("gatehouse runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(
            output.status.signal(),
            Some(libc_sigpipe()),
            "{args:?} should end by SIGPIPE: {:?} {stderr}",
            output.status
        );
    }
}

fn libc_sigpipe() -> i32 {
    13
}

/// `gatehouse plugins` asks the running server that serves its configuration, and so shows what
/// it serves, paused accounts included; it says when it reads the disk instead: `--disk`, no
/// server, another configuration's server on the same port, a key the server refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_asks_the_running_server_and_says_when_it_reads_the_disk() {
    let (_simulator, running) = PayGateSimulator::start(TOKEN).await.expect("simulator");
    let dir = tempfile::tempdir().expect("folder");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).expect("plugins");
    install(
        &library("gatehouse-plugin-paygateglobal"),
        &plugins,
        &plugin_file_name("paygateglobal"),
    );
    let port = gatehouse_e2e::free_port();
    let config_text = |key: &str| {
        format!(
            "[host]\nplugins_dir = \"plugins\"\nlisten = \"127.0.0.1:{port}\"\nledger = \"ledger.sqlite\"\n\n\
             [api]\nkeys = [\"{key}\"]\n\n\
             [providers.paygateglobal.accounts.main]\nbase_url = \"{}\"\nauth_failure_pause_secs = 900\n\
             secrets = {{ auth_token = \"not-the-token\" }}\n",
            running.base_url()
        )
    };
    let config = dir.path().join("plugins.toml");
    std::fs::write(&config, config_text(gatehouse_e2e::API_KEY)).expect("config");

    // No server yet: the disk, and the reason.
    let (code, listing, text) = gatehouse(&config, &["plugins", "--json"]);
    assert_eq!(code, 0, "{text}");
    assert_eq!(listing["source"]["kind"], "disk", "{text}");
    assert!(
        listing["source"]["why"]
            .as_str()
            .expect("why")
            .contains("no server answers"),
        "{text}"
    );
    let (_, _, text) = gatehouse(&config, &["plugins"]);
    assert!(
        text.starts_with("read from the plugins folder, not from a server"),
        "{text}"
    );

    let server = gatehouse_e2e::KillOnDrop(
        std::process::Command::new(gatehouse_binary())
            .args(["--config", config.to_str().expect("utf-8"), "serve"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("gatehouse serve starts"),
    );
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    gatehouse_e2e::wait_ready(&base).await;
    // The wrong token: the provider refuses it and the server pauses the account (in memory).
    let answer = client
        .post(format!("{base}/v1/paygateglobal/main/charges"))
        .bearer_auth(gatehouse_e2e::API_KEY)
        .header("Idempotency-Key", "cli-plugins-pause")
        .json(&serde_json::json!({"amount":{"minor_units":500,"currency":"XOF"},"customer":{"phone":"90123456"},"payment_method":"FLOOZ"}))
        .send()
        .await
        .expect("charge");
    assert_eq!(answer.status(), 200);

    let (code, listing, text) = gatehouse(&config, &["plugins", "--json"]);
    assert_eq!(code, 0, "{text}");
    assert_eq!(listing["source"]["kind"], "server", "{text}");
    assert_eq!(listing["plugins"][0]["provider"], "paygateglobal");
    assert_eq!(listing["paused_accounts"][0]["account"], "main", "{text}");
    let (_, _, text) = gatehouse(&config, &["plugins"]);
    assert!(
        text.starts_with(&format!("served by the running server ({base}/v1/plugins)")),
        "{text}"
    );
    assert!(text.contains("paused: paygateglobal/main"), "{text}");

    // `gatehouse resume` lifts the pause on the server; a second resume says it was not paused.
    let (code, answer, text) = gatehouse(&config, &["resume", "paygateglobal", "main"]);
    assert_eq!(code, 0, "{text}");
    assert_eq!(answer["was_paused"], true, "{text}");
    let (_, listing, text) = gatehouse(&config, &["plugins", "--json"]);
    assert_eq!(listing["paused_accounts"], serde_json::json!([]), "{text}");
    let (code, answer, text) = gatehouse(&config, &["resume", "paygateglobal", "main"]);
    assert_eq!(
        (code, &answer["was_paused"]),
        (0, &Value::Bool(false)),
        "{text}"
    );
    let (code, _, text) = gatehouse(&config, &["resume", "paygateglobal", "nobody"]);
    assert_eq!(
        code, 5,
        "an unknown account is refused by the server: {text}"
    );

    // `--disk`: the folder, without the server's pauses.
    let (_, listing, text) = gatehouse(&config, &["plugins", "--json", "--disk"]);
    assert_eq!(listing["source"]["kind"], "disk", "{text}");
    assert_eq!(listing["paused_accounts"], serde_json::json!([]));

    // Another configuration file on the same port is not served by this server.
    let other = tempfile::tempdir().expect("other folder");
    std::fs::create_dir(other.path().join("plugins")).expect("plugins");
    let other_config = other.path().join("plugins.toml");
    std::fs::write(&other_config, config_text(gatehouse_e2e::API_KEY)).expect("config");
    let (_, listing, text) = gatehouse(&other_config, &["plugins", "--json"]);
    assert_eq!(listing["source"]["kind"], "disk", "{text}");
    assert!(
        listing["source"]["why"]
            .as_str()
            .expect("why")
            .contains("another configuration"),
        "{text}"
    );
    // A key the server does not accept: said so, and the disk is read.
    std::fs::write(&other_config, config_text("a-key-the-server-refuses")).expect("config");
    let (_, listing, text) = gatehouse(&other_config, &["plugins", "--json"]);
    assert!(
        listing["source"]["why"]
            .as_str()
            .expect("why")
            .contains("refused"),
        "{text}"
    );
    assert!(
        !text.contains("a-key-the-server-refuses"),
        "the key is never echoed: {text}"
    );
    // Resume needs the server that serves this configuration.
    let (code, _, text) = gatehouse(&other_config, &["resume", "paygateglobal", "main"]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("nothing was resumed: pauses live in the running server"),
        "{text}"
    );

    drop(server);
}

/// The first run with a plugins folder that does not exist explains it in plain words and
/// creates nothing (no ledger file, no data folder); exit 2.
#[test]
fn a_first_run_without_a_plugins_folder_is_explained_before_anything_is_created() {
    let dir = tempfile::tempdir().expect("folder");
    let config = dir.path().join("plugins.toml");
    std::fs::write(
        &config,
        "[host]\nplugins_dir = \"target/plugins\"\nledger = \"data/gatehouse.sqlite\"\n",
    )
    .expect("config");
    for args in [
        &["serve"][..],
        &["plugins"],
        &["call", "paygateglobal", "balance"],
    ] {
        let (code, _, text) = gatehouse(&config, args);
        assert_eq!(code, 2, "{args:?}: {text}");
        assert!(
            text.contains("does not exist") && text.contains("host.plugins_dir"),
            "{args:?}: {text}"
        );
        assert!(!text.contains("No path was found"), "{text}");
        assert!(
            !dir.path().join("data").exists(),
            "nothing created: {args:?}"
        );
    }
}

/// `serve` without an API key starts, and says in words that the API will answer 401.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serving_without_an_api_key_is_warned() {
    let dir = tempfile::tempdir().expect("folder");
    std::fs::create_dir(dir.path().join("plugins")).expect("plugins");
    // Ready needs a plugin loaded.
    install(
        &library("gatehouse-plugin-paygateglobal"),
        &dir.path().join("plugins"),
        &plugin_file_name("paygateglobal"),
    );
    let port = gatehouse_e2e::free_port();
    let config = dir.path().join("plugins.toml");
    std::fs::write(
        &config,
        format!("[host]\nplugins_dir = \"plugins\"\nlisten = \"127.0.0.1:{port}\"\nledger = \"ledger.sqlite\"\n"),
    )
    .expect("config");
    let mut server = std::process::Command::new(gatehouse_binary())
        .args(["--config", config.to_str().expect("utf-8"), "serve"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("gatehouse serve starts");
    gatehouse_e2e::wait_ready(&format!("http://127.0.0.1:{port}")).await;
    server.kill().expect("kill");
    let output = server.wait_with_output().expect("output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no API key is configured") && stderr.contains("401"),
        "{stderr}"
    );
}
