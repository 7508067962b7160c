//! Operator actions: settling an entry by hand (API and CLI), reconciling one entry, and the
//! reason an entry needs an operator — each recorded in the entry's history with who acted.

use std::process::Command;

use gatehouse_e2e::{ApiHost, Backend, gatehouse_binary};
use gatehouse_sim_common::Fault;
use reqwest::Method;
use serde_json::{Value, json};

use crate::reliability::{ALL_PLUGINS, Simulators, ccbill_payout, pgg_charge};
use crate::scopes::{OPERATE_KEY, READ_KEY, keys_toml, with_key};

/// A CCBill payout whose answer was lost (`unknown`), then reconciled one entry at a time:
/// CCBill has no status operation, so the entry goes to an operator with the reason.
async fn needs_operator(api: &ApiHost, sims: &Simulators, affiliate: &str, key: &str) -> String {
    sims.ccbill_running.faults.push(Fault::ResetMidBody);
    let (_, _, payout) = api
        .request(
            Method::POST,
            "/v1/ccbill/main/affiliate-payouts",
            Some(ccbill_payout(affiliate, 700)),
            &[("Idempotency-Key", key)],
        )
        .await;
    assert_eq!(payout["status"], "unknown", "{payout}");
    let id = payout["reference"].as_str().expect("reference").to_string();
    let (status, reconciled) = with_key(
        api,
        OPERATE_KEY,
        Method::POST,
        &format!("/v1/ledger/{id}/reconcile"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{reconciled}");
    assert_eq!(
        reconciled["entry"]["state"], "needs_operator",
        "{reconciled}"
    );
    assert_eq!(
        reconciled["report"]["flagged_for_operator"], 1,
        "{reconciled}"
    );
    assert!(
        reconciled["needs_operator"]["reason"]
            .as_str()
            .is_some_and(|reason| reason.contains("no status operation")),
        "the answer says why: {reconciled}"
    );
    assert_eq!(reconciled["needs_operator"]["settleable"], true);
    id
}

async fn an_operator_settles_an_entry_and_its_history_says_who_when_and_why(backend: Backend) {
    let sims = Simulators::start().await;
    let api = ApiHost::start_on(
        backend,
        &ALL_PLUGINS,
        &format!("{}{}", keys_toml(), sims.accounts_toml(600)),
    )
    .await;
    let id = needs_operator(&api, &sims, "0001", "payout-1").await;
    let payouts_before = sims.ccbill.payouts().len();

    // A read-only key may look, not settle; nothing changes.
    let (_, before) = api.get(&format!("/v1/ledger/{id}")).await;
    let settle = json!({"state": "succeeded", "provider_reference": "PAYOUT-991",
                        "reason": "paid: seen in CCBill's admin portal"});
    let (status, refused) = with_key(
        &api,
        READ_KEY,
        Method::POST,
        &format!("/v1/ledger/{id}/settle"),
        Some(settle.clone()),
    )
    .await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (403, Some("forbidden_scope"))
    );
    assert_eq!(api.get(&format!("/v1/ledger/{id}")).await.1, before);

    // Bad settlements are refused with what is wrong.
    for (body, expected) in [
        (
            json!({"state": "pending", "reason": "later"}),
            "succeeded or failed",
        ),
        (json!({"state": "failed", "reason": ""}), "reason"),
        (json!({"state": "failed"}), "reason"),
        (
            json!({"state": "failed", "reason": "x", "amount": 5}),
            "unknown field",
        ),
    ] {
        let (status, answer) = with_key(
            &api,
            OPERATE_KEY,
            Method::POST,
            &format!("/v1/ledger/{id}/settle"),
            Some(body.clone()),
        )
        .await;
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (422, Some("invalid_request")),
            "{body}: {answer}"
        );
        assert!(
            answer["error"]["message"]
                .as_str()
                .is_some_and(|message| message.contains(expected)),
            "{body}: {answer}"
        );
    }

    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let (status, settled) = with_key(
        &api,
        OPERATE_KEY,
        Method::POST,
        &format!("/v1/ledger/{id}/settle"),
        Some(settle.clone()),
    )
    .await;
    assert_eq!(status, 200, "{settled}");
    assert_eq!(settled["entry"]["state"], "succeeded");
    assert_eq!(settled["entry"]["provider_reference"], "PAYOUT-991");
    assert_eq!(settled["entry"]["operator_flag"], Value::Null);
    assert_eq!(settled["needs_operator"], Value::Null);
    let last = settled["history"]
        .as_array()
        .and_then(|history| history.last())
        .expect("a history event");
    assert_eq!(last["actor"], "operator", "{last}");
    assert_eq!(last["state"], "succeeded");
    assert!(
        last["detail"].as_str().is_some_and(|detail| detail
            .contains("paid: seen in CCBill's admin portal")
            && detail.contains("was needs_operator")),
        "{last}"
    );
    assert!(
        last["at_unix"].as_i64().is_some_and(|at| at >= started),
        "{last}"
    );
    assert!(last["at"].is_string(), "an RFC 3339 time beside: {last}");
    // The earlier steps were the host's own.
    assert!(
        settled["history"].as_array().expect("history")[..2]
            .iter()
            .all(|event| event.get("actor").is_none()),
        "{settled}"
    );
    // A retry of the payout is answered with the operator's decision, and pays nobody again.
    let (_, _, replay) = api
        .request(
            Method::POST,
            "/v1/ccbill/main/affiliate-payouts",
            Some(ccbill_payout("0001", 700)),
            &[("Idempotency-Key", "payout-1")],
        )
        .await;
    assert_eq!(
        (&replay["status"], &replay["replayed"]),
        (&json!("succeeded"), &json!(true)),
        "{replay}"
    );
    assert_eq!(sims.ccbill.payouts().len(), payouts_before);

    // A final entry is refused, with a stable code, and stays as it is.
    let (status, again) = with_key(
        &api,
        OPERATE_KEY,
        Method::POST,
        &format!("/v1/ledger/{id}/settle"),
        Some(json!({"state": "failed", "reason": "changed my mind"})),
    )
    .await;
    assert_eq!(
        (status, again["error"]["code"].as_str()),
        (409, Some("entry_not_settleable")),
        "{again}"
    );
    let (status, again) = with_key(
        &api,
        OPERATE_KEY,
        Method::POST,
        &format!("/v1/ledger/{id}/reconcile"),
        None,
    )
    .await;
    assert_eq!(
        (status, again["error"]["code"].as_str()),
        (409, Some("entry_final")),
        "{again}"
    );
    let (_, now) = api.get(&format!("/v1/ledger/{id}")).await;
    assert_eq!(now["entry"]["state"], "succeeded");
    let (status, missing) = with_key(
        &api,
        OPERATE_KEY,
        Method::POST,
        "/v1/ledger/gh_nothing/settle",
        Some(settle),
    )
    .await;
    assert_eq!(
        (status, missing["error"]["code"].as_str()),
        (404, Some("not_found"))
    );

    // A `pending` PayGateGlobal charge (the customer never confirmed) can be settled too; it was
    // asked for by a key of the plain list, named by its place.
    let (_, charge) = api
        .post("/v1/paygateglobal/main/charges", pgg_charge(900))
        .await;
    assert_eq!(charge["status"], "pending", "{charge}");
    let charge_id = charge["reference"].as_str().expect("reference");
    let (status, failed) = with_key(
        &api,
        OPERATE_KEY,
        Method::POST,
        &format!("/v1/ledger/{charge_id}/settle"),
        Some(json!({"state": "failed", "reason": "not in the provider's records"})),
    )
    .await;
    assert_eq!(status, 200, "{failed}");
    assert_eq!(
        (&failed["entry"]["state"], &failed["entry"]["actor"]),
        (&json!("failed"), &json!("keys[0]"))
    );
    api.stop().await;
}

fn gatehouse(config: &std::path::Path, args: &[&str]) -> (i32, Value, String) {
    let output = Command::new(gatehouse_binary())
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .expect("gatehouse runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    (
        output.status.code().unwrap_or(-1),
        serde_json::from_str(&stdout).unwrap_or(Value::Null),
        stdout + &String::from_utf8_lossy(&output.stderr),
    )
}

async fn the_cli_settles_and_reconciles_beside_a_running_server(backend: Backend) {
    let sims = Simulators::start().await;
    let api = ApiHost::start_on(
        backend,
        &ALL_PLUGINS,
        &format!("{}{}", keys_toml(), sims.accounts_toml(600)),
    )
    .await;
    let id = needs_operator(&api, &sims, "0002", "payout-cli").await;
    let config = api.host.config_path();

    let (code, shown, text) = gatehouse(&config, &["ledger", "show", &id]);
    assert_eq!(code, 0, "{text}");
    assert_eq!(shown["entry"]["state"], "needs_operator", "{text}");
    assert!(
        shown["needs_operator"]["reason"]
            .as_str()
            .is_some_and(|reason| reason.contains("no status operation")),
        "{text}"
    );
    // Reconciling again asks again: still an operator's (CCBill cannot tell).
    let (code, reconciled, text) = gatehouse(
        &config,
        &["ledger", "reconcile", &id, "--sending-min-age-secs", "0"],
    );
    assert_eq!(code, 0, "{text}");
    assert_eq!(reconciled["entry"]["state"], "needs_operator", "{text}");

    let (code, settled, text) = gatehouse(
        &config,
        &[
            "ledger",
            "settle",
            &id,
            "--state",
            "failed",
            "--reason",
            "CCBill support: the payout was never made",
        ],
    );
    assert_eq!(code, 0, "{text}");
    assert_eq!(settled["entry"]["state"], "failed", "{text}");
    // The server sees the CLI's decision at once (one ledger file), with who made it.
    let (_, entry) = api.get(&format!("/v1/ledger/{id}")).await;
    assert_eq!(entry["entry"]["state"], "failed", "{entry}");
    let last = entry["history"]
        .as_array()
        .and_then(|history| history.last())
        .expect("history");
    assert_eq!(last["actor"], "cli", "{last}");
    assert!(
        last["detail"]
            .as_str()
            .is_some_and(|detail| detail.contains("never made")),
        "{last}"
    );
    // A final entry: refused, exit code 5 (refused), the stable code printed.
    let (code, refused, text) = gatehouse(
        &config,
        &[
            "ledger",
            "settle",
            &id,
            "--state",
            "succeeded",
            "--reason",
            "x",
        ],
    );
    assert_eq!(code, 5, "{text}");
    assert_eq!(refused["error"]["code"], "entry_not_settleable", "{text}");
    let (code, _, text) = gatehouse(
        &config,
        &["ledger", "settle", &id, "--state", "maybe", "--reason", "x"],
    );
    assert_ne!(code, 0, "{text}");
    assert!(text.contains("succeeded or failed"), "{text}");

    // `gatehouse call` records its actor too.
    let (code, charged, text) = gatehouse(
        &config,
        &[
            "call",
            "paygateglobal",
            "charge",
            "--json",
            &pgg_charge(300).to_string(),
        ],
    );
    assert_eq!(code, 0, "{text}");
    let charge_id = charged["reference"].as_str().expect("reference");
    let (_, entry) = api.get(&format!("/v1/ledger/{charge_id}")).await;
    assert_eq!(entry["entry"]["actor"], "cli", "{entry}");
    api.stop().await;
}

on_both_backends!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    an_operator_settles_an_entry_and_its_history_says_who_when_and_why,
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    the_cli_settles_and_reconciles_beside_a_running_server,
);
