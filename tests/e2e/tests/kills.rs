//! Crashes under load with the real `gatehouse serve`: SIGKILL at random points while callers send
//! Xsolla charges, Xsolla refunds and CCBill payouts; restart; callers retry what they never got an
//! answer for (same idempotency key); reconcile. Every command a caller saw accepted is in the
//! ledger, every provider-side effect has its ledger entry, nothing reached a simulator twice, and
//! charges and payouts hold their true outcome (CCBill's flagged `needs_operator`, since it has no
//! status operation).

use crate::reliability;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gatehouse_e2e::{API_KEY, free_port, gatehouse_binary, install, library, plugin_file_name};
use gatehouse_sim_common::Fault;
use reliability::{ALL_PLUGINS, Simulators, ccbill_payout, figure, xsolla_charge, xsolla_refund};
use serde_json::Value;

const ROUNDS: usize = 3;
const CLIENTS: usize = 6;

pub(crate) fn start_host(config: &Path) -> Child {
    Command::new(gatehouse_binary())
        .args(["--config", config.to_str().expect("utf-8 path"), "serve"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("gatehouse starts")
}

async fn wait_ready(base: &str) {
    for _ in 0..2400 {
        if let Ok(response) = reqwest::get(format!("{base}/readyz")).await
            && response.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the host did not become ready at {base}");
}

/// A small deterministic generator (xorshift), seeded and printed so a run can be replayed.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub(crate) fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Sent {
    pub(crate) path: String,
    pub(crate) body: Value,
    pub(crate) key: String,
    pub(crate) kind: &'static str,
    /// `Some((reference, status))` once a caller saw it accepted.
    pub(crate) accepted: Option<(String, String)>,
}

/// The command client `worker` sends `index`-th in `round`: an Xsolla charge, an Xsolla refund
/// of a settled charge (while any is left; `None` after), or a CCBill payout to an affiliate of
/// its own, in turn. Its key names the three numbers, so a retry sends the same.
pub(crate) fn next_command(
    round: usize,
    worker: usize,
    index: usize,
    card: u64,
    refundable: &Mutex<Vec<String>>,
) -> Option<Sent> {
    let key = format!("r{round}-w{worker}-{index}");
    Some(match (worker + index) % 3 {
        0 => Sent {
            path: "/v1/xsolla/main/charges".into(),
            body: xsolla_charge(card, 100 + index as i64),
            key,
            kind: "charge",
            accepted: None,
        },
        1 => {
            let transaction = refundable.lock().expect("lock").pop()?;
            Sent {
                path: "/v1/xsolla/main/refunds".into(),
                body: xsolla_refund(&transaction, None),
                key,
                kind: "refund",
                accepted: None,
            }
        }
        _ => Sent {
            path: "/v1/ccbill/main/affiliate-payouts".into(),
            body: ccbill_payout(
                &format!("9{round}{worker:02}{index:03}"),
                1000 + index as i64,
            ),
            key,
            kind: "payout",
            accepted: None,
        },
    })
}

pub(crate) async fn post(
    client: &reqwest::Client,
    base: &str,
    sent: &Sent,
) -> Option<(u16, Value)> {
    let response = client
        .post(format!("{base}{}", sent.path))
        .bearer_auth(API_KEY)
        .header("Idempotency-Key", &sent.key)
        .json(&sent.body)
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .ok()?;
    let status = response.status().as_u16();
    let body = response.json().await.ok()?;
    Some((status, body))
}

pub(crate) fn accepted(answer: &Option<(u16, Value)>) -> Option<(String, String)> {
    match answer {
        Some((200, body)) => Some((
            body["reference"].as_str()?.to_string(),
            body["status"].as_str().unwrap_or_default().to_string(),
        )),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_nothing_and_doubles_nothing() {
    let sims = Simulators::start().await;
    let dir = tempfile::tempdir().expect("folder");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).expect("plugins folder");
    for package in ALL_PLUGINS {
        let provider = package.trim_start_matches("gatehouse-plugin-");
        install(&library(package), &plugins, &plugin_file_name(provider));
    }
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let config = dir.path().join("plugins.toml");
    std::fs::write(
        &config,
        format!(
            "[host]\nplugins_dir = \"plugins\"\nlisten = \"127.0.0.1:{port}\"\nledger = \"ledger.sqlite\"\n\n\
             [api]\nkeys = [\"{API_KEY}\"]\n{}",
            sims.accounts_toml(5000)
        ),
    )
    .expect("config");
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |since| since.as_nanos() as u64)
        | 1;
    figure("kills.seed", seed);
    let mut rng = Rng(seed);
    let client = reqwest::Client::new();

    // Settled charges for the refunds to take back.
    let mut host = start_host(&config);
    wait_ready(&base).await;
    let mut refundable = Vec::new();
    let mut sent_all: Vec<Sent> = Vec::new();
    for index in 0..ROUNDS * CLIENTS * 2 {
        let sent = Sent {
            path: "/v1/xsolla/main/charges".into(),
            body: xsolla_charge(sims.card, 700),
            key: format!("setup-{index}"),
            kind: "charge",
            accepted: None,
        };
        let answer = post(&client, &base, &sent).await;
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

    let mut kills = 0;
    let mut died = 0;
    for round in 0..ROUNDS {
        if round > 0 {
            host = start_host(&config);
            wait_ready(&base).await;
        }
        // Some requests are held by the providers after they acted (a crash then falls between
        // the provider's action and the host's record of it).
        for _ in 0..3 {
            sims.xsolla_running
                .faults
                .push(Fault::DelayAfter(Duration::from_millis(400)));
            sims.ccbill_running
                .faults
                .push(Fault::DelayAfter(Duration::from_millis(400)));
        }
        let log: Arc<Mutex<Vec<Sent>>> = Arc::default();
        let mut tasks = Vec::new();
        for worker in 0..CLIENTS {
            let (client, base, log, refundable, card) = (
                client.clone(),
                base.clone(),
                log.clone(),
                refundable.clone(),
                sims.card,
            );
            tasks.push(tokio::spawn(async move {
                // Bounded: at most 40 commands per client per round.
                for index in 0..40 {
                    let Some(sent) = next_command(round, worker, index, card, &refundable) else {
                        continue;
                    };
                    let answer = post(&client, &base, &sent).await;
                    let died = answer.is_none();
                    log.lock().expect("lock").push(Sent {
                        accepted: accepted(&answer),
                        ..sent
                    });
                    if died {
                        // The host is gone: this caller retries after the restart.
                        return;
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(150 + rng.below(600))).await;
        host.kill().expect("SIGKILL");
        let _ = host.wait();
        kills += 1;
        for task in tasks {
            task.await.expect("client");
        }
        sims.xsolla_running.faults.clear();
        sims.ccbill_running.faults.clear();
        let round_log = std::mem::take(&mut *log.lock().expect("lock"));
        died += round_log
            .iter()
            .filter(|sent| sent.accepted.is_none())
            .count();
        sent_all.extend(round_log);
    }

    // Restart; every caller that got no answer retries with the same key.
    let mut host = start_host(&config);
    wait_ready(&base).await;
    for sent in sent_all.iter_mut().filter(|sent| sent.accepted.is_none()) {
        let answer = post(&client, &base, sent).await;
        assert!(
            matches!(answer, Some((200, _))),
            "{} retry: {answer:?}",
            sent.key
        );
        sent.accepted = accepted(&answer);
    }
    // Late handlers of held requests finish, then reconcile.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let reconcile = client
        .post(format!("{base}/v1/reconcile"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .expect("reconcile")
        .json::<Value>()
        .await
        .expect("json");
    figure("kills.reconcile", &reconcile);
    let listed: Value = client
        .get(format!("{base}/v1/ledger?limit=1000"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .expect("ledger")
        .json()
        .await
        .expect("json");
    let books = check_books(&sims, &sent_all, &listed);
    figure(
        "kills.books",
        format!("kills={kills} no_answer_then_retried={died} {books}"),
    );
    let _ = host.kill();
    let _ = host.wait();
}

/// The books of a crash test, checked against the simulators: every command a caller saw accepted
/// is in the ledger listing (`GET /v1/ledger`) once per key, nothing is left `sending` or
/// `unknown`, nothing reached Xsolla or CCBill twice, and every charge and payout holds its true
/// outcome. Returns the counts, for the test's figure line.
pub(crate) fn check_books(sims: &Simulators, sent_all: &[Sent], listed: &Value) -> String {
    let entries: BTreeMap<String, Value> = listed["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|entry| (entry["id"].as_str().expect("id").to_string(), entry.clone()))
        .collect();

    // Nothing lost: every accepted command is in the ledger, once per key.
    let mut references = BTreeSet::new();
    for sent in sent_all {
        let (reference, _) = sent
            .accepted
            .as_ref()
            .expect("every command was answered in the end");
        assert!(
            entries.contains_key(reference),
            "{}: accepted as {reference} but not in the ledger",
            sent.key
        );
        assert!(
            references.insert(reference.clone()),
            "{}: two keys answered with one entry",
            sent.key
        );
        assert_eq!(entries[reference]["idempotency_key"], sent.key.as_str());
    }
    assert_eq!(
        entries.len(),
        sent_all.len(),
        "the ledger holds exactly the commands sent"
    );
    let open: Vec<&Value> = entries
        .values()
        .filter(|entry| matches!(entry["state"].as_str(), Some("sending" | "unknown")))
        .collect();
    assert!(
        open.is_empty(),
        "entries left unsettled after reconciliation: {open:?}"
    );

    // Nothing twice, and the charges' and payouts' true outcome.
    let transactions = sims.xsolla.transactions();
    let mut by_reference: BTreeMap<String, usize> = BTreeMap::new();
    for transaction in &transactions {
        let reference = transaction
            .external_id
            .clone()
            .expect("every charge carries its reference");
        assert!(
            entries.contains_key(&reference),
            "a charge at Xsolla has no ledger entry: {reference}"
        );
        *by_reference.entry(reference).or_default() += 1;
    }
    assert!(
        by_reference.values().all(|count| *count == 1),
        "a charge reached Xsolla twice"
    );
    let payouts = sims.ccbill.payouts();
    let mut paid: BTreeMap<String, usize> = BTreeMap::new();
    for payout in &payouts {
        *paid.entry(payout.affiliate_id.clone()).or_default() += 1;
    }
    assert!(
        paid.values().all(|count| *count == 1),
        "an affiliate was paid twice"
    );
    let (mut charges, mut refunds, mut payouts_sent, mut flagged) = (0, 0, 0, 0);
    for sent in sent_all {
        let (reference, _) = sent.accepted.as_ref().expect("answered");
        let state = entries[reference]["state"].as_str().unwrap_or_default();
        match sent.kind {
            "charge" => {
                charges += 1;
                let at_provider = by_reference.contains_key(reference);
                let truth = if at_provider {
                    matches!(state, "pending" | "succeeded")
                } else {
                    state == "failed"
                };
                assert!(
                    truth,
                    "{}: Xsolla {} it, the ledger says {state}",
                    sent.key,
                    if at_provider { "has" } else { "never saw" }
                );
            }
            "refund" => {
                refunds += 1;
                // Reconciliation sends an unknown refund to an operator (the status operation
                // describes charges); at most one refund per transaction is checked below.
            }
            _ => {
                payouts_sent += 1;
                let affiliate = sent.body["affiliate_id"].as_str().expect("affiliate");
                let is_paid = paid.contains_key(affiliate);
                match state {
                    "needs_operator" => flagged += 1,
                    "succeeded" => assert!(is_paid, "{}: succeeded but never paid", sent.key),
                    "failed" => assert!(!is_paid, "{}: failed but paid", sent.key),
                    other => panic!("{}: payout left {other}", sent.key),
                }
            }
        }
    }
    format!(
        "commands={} (charges={charges} refunds={refunds} payouts={payouts_sent}) \
         ledger_entries={} xsolla_transactions={} ccbill_payouts={} \
         payouts_needs_operator={flagged} duplicates=0 lost=0",
        sent_all.len(),
        entries.len(),
        transactions.len(),
        payouts.len()
    )
}
