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
