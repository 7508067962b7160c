//! The PostgreSQL ledger through the real `gatehouse serve`: two host processes on one database
//! of the test cluster share their ledger (a key sent to one is answered by the other), and a
//! database migrated by a newer Gatehouse is refused at start with a clear message.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use gatehouse_e2e::{
    API_KEY, free_port, gatehouse_binary, install, library, open_postgres_ledger, plugin_file_name,
    postgres_ledger_toml,
};
use gatehouse_sim_paygateglobal::PayGateSimulator;
use serde_json::{Value, json};

const TOKEN: &str = "pg-ledger-token-1234";

/// A host folder (plugins, plugins.toml) listening on a free port, its ledger the `[ledger]`
/// table given. Returns the config path and the base URL.
fn host_folder(dir: &Path, ledger_toml: &str, provider_url: &str) -> (std::path::PathBuf, String) {
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).expect("plugins folder");
    install(
        &library("gatehouse-plugin-paygateglobal"),
        &plugins,
        &plugin_file_name("paygateglobal"),
    );
    let port = free_port();
    let config = dir.join("plugins.toml");
    std::fs::write(
        &config,
        format!(
            "[host]\nplugins_dir = \"plugins\"\nlisten = \"127.0.0.1:{port}\"\nledger = \"ledger.sqlite\"\n\n\
             [api]\nkeys = [\"{API_KEY}\"]\n\n{ledger_toml}\n\
             [providers.paygateglobal.accounts.main]\nbase_url = \"{provider_url}\"\nsecrets = {{ auth_token = \"{TOKEN}\" }}\n"
        ),
    )
    .expect("config");
    (config, format!("http://127.0.0.1:{port}"))
}

fn start_host(config: &Path) -> Child {
    Command::new(gatehouse_binary())
        .args(["--config", config.to_str().expect("utf-8 path"), "serve"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("gatehouse starts")
}

async fn wait_ready(base: &str, host: &mut Child) {
    for _ in 0..300 {
        if let Ok(response) = reqwest::get(format!("{base}/readyz")).await
            && response.status() == 200
        {
            return;
        }
        if let Ok(Some(status)) = host.try_wait() {
            panic!("the host at {base} exited ({status}) before it was ready");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the host did not become ready at {base}");
}

async fn charge(client: &reqwest::Client, base: &str, key: &str) -> (u16, Value, bool) {
    let response = client
        .post(format!("{base}/v1/paygateglobal/main/charges"))
        .bearer_auth(API_KEY)
        .header("Idempotency-Key", key)
        .json(&json!({"amount": {"minor_units": 1500, "currency": "XOF"},
                      "customer": {"phone": "90123456"}, "payment_method": "FLOOZ"}))
        .send()
        .await
        .expect("the host answers");
    let status = response.status().as_u16();
    let replayed = response.headers().contains_key("idempotent-replayed");
    (
        status,
        response.json().await.unwrap_or(Value::Null),
        replayed,
    )
}

struct Hosts(Vec<Child>);

impl Drop for Hosts {
    fn drop(&mut self) {
        for host in &mut self.0 {
            let _ = host.kill();
            let _ = host.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_on_one_postgres_ledger_answer_each_others_keys() {
    let (simulator, running) = PayGateSimulator::start(TOKEN).await.expect("simulator");
    let dir = tempfile::tempdir().expect("folder");
    let (ledger_toml, database) = postgres_ledger_toml(dir.path());
    let (config_a, base_a) = host_folder(&dir.path().join("a"), &ledger_toml, &running.base_url());
    let (config_b, base_b) = host_folder(&dir.path().join("b"), &ledger_toml, &running.base_url());
    let mut hosts = Hosts(vec![start_host(&config_a), start_host(&config_b)]);
    wait_ready(&base_a, &mut hosts.0[0]).await;
    wait_ready(&base_b, &mut hosts.0[1]).await;
    let client = reqwest::Client::new();

    let (status, first, replayed) = charge(&client, &base_a, "pg-order-1").await;
    assert_eq!(status, 200, "{first}");
    assert!(!replayed);
    let reference = first["reference"]
        .as_str()
        .expect("a reference")
        .to_string();
    assert_eq!(simulator.transactions().len(), 1);

    // The retry lands on the other host: answered from the shared ledger, not sent again.
    let (status, retry, replayed) = charge(&client, &base_b, "pg-order-1").await;
    assert_eq!(status, 200, "{retry}");
    assert!(replayed, "host B must answer from the ledger: {retry}");
    assert_eq!(retry["reference"], first["reference"]);
    assert_eq!(retry["status"], first["status"]);
    assert!(first["status"].is_string(), "{first}");
    assert_eq!(
        simulator.transactions().len(),
        1,
        "one key, one provider call"
    );

    // A new key on host B is a new entry, which host A lists.
    let (status, other, _) = charge(&client, &base_b, "pg-order-2").await;
    assert_eq!(status, 200, "{other}");
    assert_eq!(simulator.transactions().len(), 2);
    let listed: Value = client
        .get(format!("{base_a}/v1/ledger"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("JSON");
    let ids: Vec<&str> = listed["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|entry| entry["id"].as_str())
        .collect();
    assert_eq!(ids, [other["reference"].as_str().expect("ref"), &reference]);

    // The rows are in PostgreSQL, in the state the host answered with.
    let entry = tokio::task::spawn_blocking(move || {
        open_postgres_ledger(&database)
            .get(&reference)
            .expect("read")
            .expect("the entry is in PostgreSQL")
    })
    .await
    .expect("read task");
    assert_eq!(
        entry.state.as_str(),
        first["status"].as_str().expect("status")
    );
    assert_eq!(entry.idempotency_key.as_deref(), Some("pg-order-1"));
    assert!(
        !dir.path().join("a").join("ledger.sqlite").exists(),
        "no SQLite ledger may be made beside a PostgreSQL one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_refuses_a_database_migrated_by_a_newer_gatehouse() {
    let dir = tempfile::tempdir().expect("folder");
    let (ledger_toml, database) = postgres_ledger_toml(dir.path());
    let password = database.password.clone();
    tokio::task::spawn_blocking(move || {
        drop(open_postgres_ledger(&database));
        database
            .connect()
            .execute(
                "INSERT INTO schema_version (version, applied_at_unix) VALUES (42, 0)",
                &[],
            )
            .expect("pretend a newer host migrated it");
    })
    .await
    .expect("setup");
    let (config, _) = host_folder(dir.path(), &ledger_toml, "http://127.0.0.1:9");
    let output = Command::new(gatehouse_binary())
        .args(["--config", config.to_str().expect("utf-8"), "serve"])
        .output()
        .expect("gatehouse runs");
    assert!(!output.status.success(), "the host must not start");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("schema is version 42") && stderr.contains("newer"),
        "{stderr}"
    );
    assert!(!stderr.contains(&password), "the password leaked: {stderr}");
}
