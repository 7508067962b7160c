//! The PostgreSQL ledger through the real host: two `gatehouse serve` processes on one database
//! of the test cluster share their ledger (a key sent to one is answered by the other); a
//! database migrated by a newer Gatehouse is refused at start; and several services on one
//! database send a key concurrently sent to all of them exactly once, leaving a live peer's
//! `sending` entry alone until its lease expires; an operator on one host settles an entry
//! another began.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use gatehouse_e2e::{
    API_KEY, free_port, gatehouse_binary, install, library, open_postgres_ledger,
    paygateglobal_charge_command, plugin_file_name, postgres_ledger_toml,
};
use gatehouse_ledger::EntryState;
use gatehouse_plugin_api::OutcomeStatus;
use gatehouse_service::Service;
use gatehouse_sim_common::Fault;
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
             [providers.paygateglobal.accounts.main]\nbase_url = \"{provider_url}\"\ntimeout_ms = 20000\nsecrets = {{ auth_token = \"{TOKEN}\" }}\n"
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

/// `count` services (each its own folder, gateway and ledger handle, as separate hosts would
/// have) on one PostgreSQL database.
async fn services_on_one_database(
    dir: &Path,
    ledger_toml: &str,
    provider_url: &str,
    count: usize,
) -> Vec<Service> {
    let mut services = Vec::new();
    for index in 0..count {
        let (config, _) = host_folder(
            &dir.join(format!("host-{index}")),
            ledger_toml,
            provider_url,
        );
        let config = gatehouse_core::Config::load(&config).expect("valid configuration");
        services.push(Service::open(config).await.expect("the service opens"));
    }
    services
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_key_sent_to_three_hosts_at_once_reaches_the_provider_once() {
    let (simulator, running) = PayGateSimulator::start(TOKEN).await.expect("simulator");
    let dir = tempfile::tempdir().expect("folder");
    let (ledger_toml, _database) = postgres_ledger_toml(dir.path());
    let services = services_on_one_database(dir.path(), &ledger_toml, &running.base_url(), 3).await;
    for round in 0..3 {
        // The provider takes its time answering: the other hosts find the entry `sending`
        // while its sender (alive, on another host) waits for the answer.
        running
            .faults
            .push(Fault::DelayAfter(Duration::from_millis(700)));
        let key = format!("fleet-order-{round}");
        let calls: Vec<_> = services
            .iter()
            .map(|service| {
                let (service, key) = (service.clone(), key.clone());
                tokio::spawn(async move {
                    service
                        .execute(
                            "paygateglobal",
                            "main",
                            paygateglobal_charge_command(),
                            Some(key),
                        )
                        .await
                })
            })
            .collect();
        let mut answers = Vec::new();
        for call in calls {
            answers.push(call.await.expect("task").expect("every host answers"));
        }
        running.faults.clear();
        assert_eq!(
            simulator.transactions().len(),
            round + 1,
            "round {round}: one key, one provider call, whichever host got it"
        );
        let sent: Vec<_> = answers.iter().filter(|answer| !answer.replayed).collect();
        assert_eq!(sent.len(), 1, "round {round}: exactly one host sent it");
        for answer in &answers {
            assert_eq!(answer.reference, sent[0].reference, "round {round}");
            assert_eq!(
                answer.outcome.status, sent[0].outcome.status,
                "round {round}"
            );
            assert_ne!(
                answer.outcome.status,
                OutcomeStatus::Unknown,
                "round {round}: a live sender's entry is never answered as interrupted: {:?}",
                answer.outcome
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peers_sending_entry_is_reconciled_only_after_its_lease_expires() {
    let (simulator, running) = PayGateSimulator::start(TOKEN).await.expect("simulator");
    let dir = tempfile::tempdir().expect("folder");
    let (ledger_toml, database) = postgres_ledger_toml(dir.path());
    let services = services_on_one_database(dir.path(), &ledger_toml, &running.base_url(), 2).await;
    let (sender, other) = (services[0].clone(), services[1].clone());
    // The provider registers the charge and holds its answer: host A is mid-dispatch.
    running
        .faults
        .push(Fault::DelayAfter(Duration::from_secs(10)));
    let dispatch = tokio::spawn(async move {
        sender
            .execute(
                "paygateglobal",
                "main",
                paygateglobal_charge_command(),
                Some("lease-order".into()),
            )
            .await
    });
    for _ in 0..200 {
        if simulator.transactions().len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        simulator.transactions().len(),
        1,
        "the charge reached the provider"
    );
    let sending = other
        .ledger()
        .find_by_key("paygateglobal", "main", "lease-order")
        .await
        .expect("read")
        .expect("the entry exists");
    assert_eq!(sending.state, EntryState::Sending);

    // Host B's reconciliation leaves a live peer's entry alone.
    let report = other.reconcile(10).await;
    assert_eq!(report.examined, 0, "{report:?}");
    assert_eq!(report.still_open, 1, "{report:?}");
    assert_eq!(
        other
            .ledger()
            .get(&sending.id)
            .await
            .expect("read")
            .map(|entry| entry.state),
        Some(EntryState::Sending)
    );

    // Host A's lease expires (a host that died stops renewing it): now B reconciles it.
    tokio::task::spawn_blocking(move || {
        database
            .connect()
            .execute(
                "UPDATE host_leases SET expires_at = clock_timestamp() - interval '1 second'",
                &[],
            )
            .expect("expire the leases");
    })
    .await
    .expect("expire");
    // Host A's heartbeat renews its lease every 5 s; B reconciles before that.
    let report = other.reconcile(10).await;
    assert_eq!(report.examined, 1, "{report:?}");
    let settled = other
        .ledger()
        .get(&sending.id)
        .await
        .expect("read")
        .expect("exists");
    assert_ne!(settled.state, EntryState::Sending, "{settled:?}");
    assert_eq!(
        simulator.transactions().len(),
        1,
        "reconciliation sent no second charge"
    );
    dispatch.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_on_one_host_settles_an_entry_another_host_began() {
    let (_simulator, running) = PayGateSimulator::start(TOKEN).await.expect("simulator");
    let dir = tempfile::tempdir().expect("folder");
    let (ledger_toml, _database) = postgres_ledger_toml(dir.path());
    let services = services_on_one_database(dir.path(), &ledger_toml, &running.base_url(), 2).await;
    let shop = services[0].acting_as("shop");
    let operator = services[1].acting_as("ops-desk");
    // A PayGateGlobal charge stays `pending` until the customer confirms: settleable.
    let answer = shop
        .execute(
            "paygateglobal",
            "main",
            paygateglobal_charge_command(),
            Some("settle-order".into()),
        )
        .await
        .expect("charged");
    assert_eq!(answer.outcome.status, OutcomeStatus::Pending, "{answer:?}");
    let id = answer
        .reference
        .clone()
        .expect("a recorded charge has a reference");

    let settled = operator
        .settle(
            &id,
            EntryState::Failed,
            None,
            "the customer never confirmed; closed in the back office",
        )
        .await
        .expect("settled on the other host");
    assert_eq!(settled.state, EntryState::Failed);

    // The host that began it reads the decision, who asked for the charge, and who settled it.
    let (entry, history) = shop
        .ledger()
        .entry_with_history(&id)
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(entry.state, EntryState::Failed);
    assert_eq!(entry.actor.as_deref(), Some("shop"));
    let last = history.last().expect("history");
    assert_eq!(
        (last.state, last.actor.as_deref()),
        (EntryState::Failed, Some("ops-desk"))
    );
    assert!(last.detail.contains("never confirmed"), "{last:?}");
    // A retry of the key on the first host is answered with the operator's decision.
    let retry = shop
        .execute(
            "paygateglobal",
            "main",
            paygateglobal_charge_command(),
            Some("settle-order".into()),
        )
        .await
        .expect("replayed");
    assert!(retry.replayed, "{retry:?}");
    assert_eq!(retry.outcome.status, OutcomeStatus::Failed);
    // Settling it again, from either host, is refused: it is final now.
    assert!(
        shop.settle(&id, EntryState::Succeeded, None, "sure")
            .await
            .is_err()
    );
}
