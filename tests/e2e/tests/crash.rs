//! Crash safety with the real `gatehouse` executable: SIGKILL after a charge reached the provider
//! but before its outcome was recorded; after a restart, nothing is lost and nothing is doubled.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use gatehouse_e2e::{API_KEY, free_port, gatehouse_binary, install, library, plugin_file_name};
use gatehouse_sim_common::Fault;
use gatehouse_sim_paygateglobal::{PAID, PayGateSimulator};
use serde_json::{Value, json};

const TOKEN: &str = "crash-test-token-1234";

fn start_host(config: &Path) -> Child {
    Command::new(gatehouse_binary())
        .args(["--config", config.to_str().expect("utf-8 path"), "serve"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("gatehouse starts")
}

async fn wait_healthy(base: &str) {
    for _ in 0..1200 {
        if let Ok(response) = reqwest::get(format!("{base}/readyz")).await
            && response.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the host did not become ready at {base}");
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    body: Value,
    key: &str,
) -> reqwest::Result<(u16, Value)> {
    let response = client
        .post(url)
        .bearer_auth(API_KEY)
        .header("Idempotency-Key", key)
        .json(&body)
        .send()
        .await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await.unwrap_or(Value::Null)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_between_send_and_record_loses_nothing_and_doubles_nothing() {
    let (simulator, running) = PayGateSimulator::start(TOKEN).await.expect("simulator");
    let dir = tempfile::tempdir().expect("folder");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).expect("plugins folder");
    install(
        &library("gatehouse-plugin-paygateglobal"),
        &plugins,
        &plugin_file_name("paygateglobal"),
    );
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let config = dir.path().join("plugins.toml");
    std::fs::write(
        &config,
        format!(
            "[host]\nplugins_dir = \"plugins\"\nlisten = \"127.0.0.1:{port}\"\nledger = \"ledger.sqlite\"\n\n\
             [api]\nkeys = [\"{API_KEY}\"]\n\n\
             [providers.paygateglobal.accounts.main]\nbase_url = \"{}\"\ntimeout_ms = 20000\nsecrets = {{ auth_token = \"{TOKEN}\" }}\n",
            running.base_url()
        ),
    )
    .expect("config");

    let mut host = start_host(&config);
    wait_healthy(&base).await;
    // The provider registers the payment, then holds its answer: the host is waiting for it.
    running
        .faults
        .push(Fault::DelayAfter(Duration::from_secs(30)));
    let client = reqwest::Client::new();
    let charges = format!("{base}/v1/paygateglobal/main/charges");
    let body = json!({"amount": {"minor_units": 700, "currency": "XOF"},
                      "customer": {"phone": "90123456"}, "payment_method": "FLOOZ"});
    let first_attempt = tokio::spawn({
        let (client, charges, body) = (client.clone(), charges.clone(), body.clone());
        async move { post(&client, &charges, body, "crash-order-1").await }
    });
    for _ in 0..1200 {
        if simulator.transactions().len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        simulator.transactions().len(),
        1,
        "the provider received the charge"
    );
    host.kill().expect("SIGKILL");
    let _ = host.wait();
    assert!(
        first_attempt.await.expect("task").is_err(),
        "the caller saw the connection die"
    );

    // Reconcile from the command line while the host is down: the provider has the payment,
    // pending; the entry leaves `sending`.
    let output = Command::new(gatehouse_binary())
        .args([
            "--config",
            config.to_str().expect("utf-8"),
            "reconcile",
            "--sending-min-age-secs",
            "0",
        ])
        .output()
        .expect("reconcile runs");
    let report: Value = serde_json::from_slice(&output.stdout).expect("reconcile prints JSON");
    assert_eq!(report["examined"], 1, "{report}");

    let mut host = start_host(&config);
    wait_healthy(&base).await;
    // The caller retries with the same key: the recorded entry answers, the provider is not called.
    let (status, retry) = post(&client, &charges, body.clone(), "crash-order-1")
        .await
        .expect("retry");
    assert_eq!(status, 200, "{retry}");
    assert_eq!(retry["replayed"], true);
    assert_eq!(retry["status"], "pending", "{retry}");
    let reference = retry["reference"].as_str().expect("reference").to_string();
    assert_eq!(running.calls.count("/api/v1/pay"), 1, "never sent twice");

    // The customer pays; reconciliation records the provider's true state.
    let identifier = simulator.transactions()[0].identifier.clone();
    assert_eq!(
        identifier, reference,
        "the ledger reference is the provider's identifier"
    );
    simulator.settle(&identifier, PAID).await;
    let (status, report) = post(
        &client,
        &format!("{base}/v1/reconcile"),
        json!({}),
        "unused",
    )
    .await
    .expect("reconcile");
    assert_eq!(status, 200);
    assert_eq!(report["resolved"], 1, "{report}");
    let entry: Value = client
        .get(format!("{base}/v1/ledger/{reference}"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .expect("ledger")
        .json()
        .await
        .expect("json");
    assert_eq!(entry["entry"]["state"], "succeeded", "{entry}");
    assert_eq!(
        simulator.transactions().len(),
        1,
        "one charge at the provider"
    );

    // SIGTERM: graceful shutdown, exit code 0.
    #[cfg(unix)]
    {
        let pid = host.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        let status = host.wait().expect("exit");
        assert!(status.success(), "graceful shutdown exits 0: {status:?}");
    }
    #[cfg(not(unix))]
    {
        let _ = host.kill();
    }
}
