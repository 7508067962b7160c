//! The `gatehouse` command line: `plugins` and `call`, run as the real executable.

use std::process::Command;

use gatehouse_e2e::{gatehouse_binary, install, library, plugin_file_name};
use gatehouse_sim_paygateglobal::PayGateSimulator;
use serde_json::Value;

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
    let (code, listing, text) = gatehouse(&config, &["plugins", "--json"]);
    assert_eq!(code, 0, "{text}");
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
    assert_eq!(code, 0);
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

    // Refusals: exit 1 with a JSON error; bad invocations: exit 2 with a message.
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
        (1, Some("not_supported"))
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
