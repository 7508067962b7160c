//! A fleet of three `gatehouse serve` processes on one PostgreSQL database of the test cluster,
//! the way a platform runs them behind a load balancer:
//!
//! - the same idempotency key sent to all three hosts at once reaches the provider once, and the
//!   three answers are the same entry with the same outcome;
//! - SIGKILL of one host at random points under load (Xsolla charges, some sent to two hosts at
//!   once under one key, Xsolla refunds, CCBill payouts): callers whose host died retry the same
//!   key on another host, as a load balancer would send them; the killed host is restarted; one
//!   reconciliation pass on any host; then the books are checked against the simulators exactly
//!   as `kills.rs` checks a single host's: 0 lost, 0 duplicated.

use crate::kills::{Rng, Sent, accepted, check_books, next_command, post};
use crate::reliability::{ALL_PLUGINS, Simulators, figure, xsolla_charge};

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gatehouse_e2e::{
    API_KEY, KillOnDrop, free_port, install, library, plugin_file_name, postgres_ledger_toml,
    spawn_serve, wait_ready,
};
use gatehouse_sim_common::Fault;
use serde_json::Value;

/// Each host's lease: short, so a killed host's `sending` entries pass to the others within
/// seconds (the survivors' retries of those keys wait for it), long enough that a host starved
/// of CPU on a loaded 2-core machine is not taken for dead.
const LEASE_MS: u64 = 3_000;
const HOSTS: usize = 3;
const ROUNDS: usize = 3;
const CLIENTS: usize = 6;

/// One host of the fleet: its own folder, plugins and port; the shared database.
struct FleetHost {
    config: std::path::PathBuf,
    base: String,
    process: Option<KillOnDrop>,
}

impl FleetHost {
    fn new(dir: &Path, ledger_toml: &str, accounts_toml: &str) -> Self {
        let plugins = dir.join("plugins");
        std::fs::create_dir_all(&plugins).expect("plugins folder");
        for package in ALL_PLUGINS {
            let provider = package.trim_start_matches("gatehouse-plugin-");
            install(&library(package), &plugins, &plugin_file_name(provider));
        }
        let port = free_port();
        let config = dir.join("plugins.toml");
        std::fs::write(
            &config,
            format!(
                "[host]\nplugins_dir = \"plugins\"\nlisten = \"127.0.0.1:{port}\"\nledger = \"ledger.sqlite\"\n\n\
                 [api]\nkeys = [\"{API_KEY}\"]\n\n{ledger_toml}lease_ms = {LEASE_MS}\n\n{accounts_toml}"
            ),
        )
        .expect("config");
        Self {
            config,
            base: format!("http://127.0.0.1:{port}"),
            process: None,
        }
    }

    async fn start(&mut self) {
        self.process = Some(spawn_serve(&self.config));
        wait_ready(&self.base).await;
    }

    fn kill(&mut self) {
        // Dropping the guard sends SIGKILL and reaps the process.
        self.process = None;
    }
}

/// Three hosts on one fresh database, started.
async fn fleet(dir: &Path, sims: &Simulators) -> Vec<FleetHost> {
    let (ledger_toml, _database) = postgres_ledger_toml(dir);
    let accounts = sims.accounts_toml(20_000);
    let mut hosts: Vec<FleetHost> = (0..HOSTS)
        .map(|index| FleetHost::new(&dir.join(format!("host-{index}")), &ledger_toml, &accounts))
        .collect();
    // Started together, as a fleet comes up (their migrations meet under the database's lock).
    for host in &mut hosts {
        host.process = Some(spawn_serve(&host.config));
    }
    for host in &hosts {
        wait_ready(&host.base).await;
    }
    hosts
}

/// Sends `sent` to the host `first` of `bases`, and on no answer (that host is down or died
/// mid-request) to the next, as a load balancer would, until one answers.
async fn post_to_fleet(
    client: &reqwest::Client,
    bases: &[String],
    first: usize,
    sent: &Sent,
) -> (Option<(u16, Value)>, bool) {
    let mut failed_over = false;
    for attempt in 0..bases.len() * 4 {
        let base = &bases[(first + attempt) % bases.len()];
        if let Some(answer) = post(client, base, sent).await {
            return (Some(answer), failed_over);
        }
        failed_over = true;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (None, failed_over)
}

/// Ten keys, each sent to the three hosts at once: ten charges at Xsolla, and for each key three
/// equal answers carrying the charge's outcome (not an interruption).
async fn one_key_sent_to_three_hosts_at_once_reaches_the_provider_once(
    sims: &Simulators,
    bases: &[String],
    client: &reqwest::Client,
) -> Vec<Sent> {
    let mut sent_all = Vec::new();
    // The provider holds each charge a moment, so the three requests overlap.
    for _ in 0..10 {
        sims.xsolla_running
            .faults
            .push(Fault::Delay(Duration::from_millis(200)));
    }
    for key_index in 0..10 {
        let sent = Sent {
            path: "/v1/xsolla/main/charges".into(),
            body: xsolla_charge(sims.card, 500 + key_index),
            key: format!("fleet-same-key-{key_index}"),
            kind: "charge",
            accepted: None,
        };
        let answers = futures_join_all(
            bases
                .iter()
                .map(|base| {
                    let (client, base, sent) = (client.clone(), base.clone(), sent.clone());
                    tokio::spawn(async move { post(&client, &base, &sent).await })
                })
                .collect(),
        )
        .await;
        let answers: Vec<(u16, Value)> = answers
            .into_iter()
            .map(|answer| answer.expect("every host answers"))
            .collect();
        for (status, body) in &answers {
            assert_eq!(*status, 200, "{}: {body}", sent.key);
        }
        let first = &answers[0].1;
        for (_, body) in &answers[1..] {
            for field in ["reference", "status", "provider_reference"] {
                assert_eq!(
                    body[field], first[field],
                    "{}: the hosts answered differently: {first} / {body}",
                    sent.key
                );
            }
        }
        assert!(
            matches!(first["status"].as_str(), Some("succeeded" | "pending")),
            "{}: the charge's outcome, not an interruption: {first}",
            sent.key
        );
        sent_all.push(Sent {
            accepted: accepted(&Some(answers[0].clone())),
            ..sent
        });
    }
    let transactions = sims.xsolla.transactions();
    assert_eq!(
        transactions.len(),
        10,
        "ten keys, each sent to three hosts: ten charges at Xsolla"
    );
    figure(
        "fleet_kills.same_key",
        format!(
            "hosts=3 keys=10 requests=30 xsolla_charges={}",
            transactions.len()
        ),
    );
    sent_all
}

async fn futures_join_all<T>(handles: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        out.push(handle.await.expect("task"));
    }
    out
}

// One fleet for both checks: three `gatehouse serve` processes take most of this test's time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_serve_processes_send_each_key_once_and_lose_nothing_when_one_is_killed() {
    let sims = Simulators::start().await;
    let dir = tempfile::tempdir().expect("folder");
    let mut hosts = fleet(dir.path(), &sims).await;
    let bases: Arc<Vec<String>> = Arc::new(hosts.iter().map(|host| host.base.clone()).collect());
    let client = reqwest::Client::new();
    let mut sent_all =
        one_key_sent_to_three_hosts_at_once_reaches_the_provider_once(&sims, &bases, &client).await;
    sims.xsolla_running.faults.clear();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |since| since.as_nanos() as u64)
        | 1;
    figure("fleet_kills.seed", seed);
    let mut rng = Rng(seed);

    // Settled charges for the refunds to take back, spread over the hosts.
    let mut refundable = Vec::new();
    for index in 0..ROUNDS * CLIENTS * 2 {
        let sent = Sent {
            path: "/v1/xsolla/main/charges".into(),
            body: xsolla_charge(sims.card, 700),
            key: format!("setup-{index}"),
            kind: "charge",
            accepted: None,
        };
        let answer = post(&client, &bases[index % HOSTS], &sent).await;
        let (_, body) = answer.clone().expect("setup charge answered");
        let id = body["provider_reference"]
            .as_str()
            .expect("transaction")
            .to_string();
        sims.xsolla.set_status(id.parse().expect("numeric"), "done");
        refundable.push(id);
        sent_all.push(Sent {
            accepted: accepted(&answer),
            ..sent
        });
    }
    let refundable = Arc::new(Mutex::new(refundable));

    let (mut failed_over, mut same_key_pairs) = (0, 0);
    for round in 0..ROUNDS {
        // Some requests are held by the providers after they acted: a kill then falls between
        // the provider's action and the host's record of it.
        for _ in 0..3 {
            sims.xsolla_running
                .faults
                .push(Fault::DelayAfter(Duration::from_millis(400)));
            sims.ccbill_running
                .faults
                .push(Fault::DelayAfter(Duration::from_millis(400)));
        }
        let log: Arc<Mutex<Vec<(Sent, bool)>>> = Arc::default();
        let pairs: Arc<Mutex<Vec<(String, Value, Value)>>> = Arc::default();
        let mut tasks = Vec::new();
        for worker in 0..CLIENTS {
            let (client, bases, log, pairs, refundable, card) = (
                client.clone(),
                bases.clone(),
                log.clone(),
                pairs.clone(),
                refundable.clone(),
                sims.card,
            );
            tasks.push(tokio::spawn(async move {
                for index in 0..12 {
                    let first = (worker + index) % HOSTS;
                    let Some(sent) = next_command(round, worker, index, card, &refundable) else {
                        continue;
                    };
                    // Every fourth charge goes to two hosts at once under its one key (a
                    // client's retry racing its first attempt through the load balancer).
                    let (answer, moved) = if sent.kind == "charge" && index % 4 == 0 {
                        let twin = {
                            let (client, bases, sent) =
                                (client.clone(), bases.clone(), sent.clone());
                            tokio::spawn(async move {
                                post_to_fleet(&client, &bases, first + 1, &sent).await
                            })
                        };
                        let (answer, moved) = post_to_fleet(&client, &bases, first, &sent).await;
                        let (twin_answer, twin_moved) = twin.await.expect("twin");
                        if let (Some((200, one)), Some((200, other))) = (&answer, &twin_answer) {
                            pairs.lock().expect("lock").push((
                                sent.key.clone(),
                                one.clone(),
                                other.clone(),
                            ));
                        }
                        (answer, moved || twin_moved)
                    } else {
                        post_to_fleet(&client, &bases, first, &sent).await
                    };
                    log.lock().expect("lock").push((
                        Sent {
                            accepted: accepted(&answer),
                            ..sent
                        },
                        moved,
                    ));
                }
            }));
        }
        // The kill lands after a random number of answered commands, so it falls under load
        // whatever the machine's speed (and now and then while a held request is in flight).
        let victim = rng.below(HOSTS as u64) as usize;
        let kill_after = 5 + rng.below(40) as usize;
        let started = tokio::time::Instant::now();
        while log.lock().expect("lock").len() < kill_after
            && started.elapsed() < Duration::from_secs(30)
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        hosts[victim].kill();
        for task in tasks {
            task.await.expect("client");
        }
        sims.xsolla_running.faults.clear();
        sims.ccbill_running.faults.clear();
        // One key, two hosts: one entry, whatever each host saw of it.
        for (key, one, other) in std::mem::take(&mut *pairs.lock().expect("lock")) {
            assert_eq!(
                one["reference"], other["reference"],
                "{key}: two entries for one key: {one} / {other}"
            );
            same_key_pairs += 1;
        }
        for (sent, moved) in std::mem::take(&mut *log.lock().expect("lock")) {
            failed_over += usize::from(moved);
            sent_all.push(sent);
        }
        hosts[victim].start().await;
    }

    // Every caller was answered by some host (the survivors answer a dead host's key once its
    // lease lapsed); the dead hosts' leases have lapsed; one pass on any host settles the rest.
    for sent in &sent_all {
        assert!(
            sent.accepted.is_some(),
            "{}: no host of the fleet answered",
            sent.key
        );
    }
    tokio::time::sleep(Duration::from_millis(LEASE_MS + 500)).await;
    let reconcile = client
        .post(format!(
            "{}/v1/reconcile",
            bases[rng.below(HOSTS as u64) as usize]
        ))
        .bearer_auth(API_KEY)
        .send()
        .await
        .expect("reconcile")
        .json::<Value>()
        .await
        .expect("json");
    figure("fleet_kills.reconcile", &reconcile);
    let listed: Value = client
        .get(format!("{}/v1/ledger?limit=1000", bases[0]))
        .bearer_auth(API_KEY)
        .send()
        .await
        .expect("ledger")
        .json()
        .await
        .expect("json");
    let books = check_books(&sims, &sent_all, &listed);
    figure(
        "fleet_kills.books",
        format!(
            "hosts={HOSTS} kills={ROUNDS} failed_over={failed_over} same_key_pairs={same_key_pairs} {books}"
        ),
    );
}
