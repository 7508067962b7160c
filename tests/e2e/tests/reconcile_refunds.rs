//! Regression test for bug B1 (RELIABILITY.md): reconciliation used to settle an Xsolla refund
//! entry through the provider's `status` operation, which describes the *charge* (by
//! `transaction_id`) or searches charges by `external_id` (by `reference`). A refund whose answer
//! was lost was then recorded `failed` although Xsolla made it (the caller could refund again),
//! and a refund Xsolla never made was recorded `succeeded` because its charge was `done`. Now an
//! unknown refund goes to an operator; this test checks no reconciled state contradicts Xsolla.

use crate::reliability;

use gatehouse_e2e::ApiHost;
use gatehouse_sim_common::Fault;
use reliability::{ALL_PLUGINS, Simulators, ledger, xsolla_charge, xsolla_refund};
use reqwest::Method;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciled_refunds_hold_the_providers_truth() {
    let sims = Simulators::start().await;
    let api = ApiHost::start(&ALL_PLUGINS, &sims.accounts_toml(600)).await;
    let mut wrong = Vec::new();
    for (index, (label, fault)) in [
        ("reset mid-body (Xsolla refunded)", Fault::ResetMidBody),
        (
            "HTML page (Xsolla never refunded)",
            Fault::Body("<html>maintenance</html>".into()),
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let (_, _, charge) = api
            .request(
                Method::POST,
                "/v1/xsolla/main/charges",
                Some(xsolla_charge(sims.card, 900)),
                &[("Idempotency-Key", &format!("c{index}"))],
            )
            .await;
        let transaction = charge["provider_reference"]
            .as_str()
            .expect("id")
            .to_string();
        sims.xsolla
            .set_status(transaction.parse().expect("numeric"), "done");
        sims.xsolla_running.faults.push(fault);
        let (_, _, refund) = api
            .request(
                Method::POST,
                "/v1/xsolla/main/refunds",
                Some(xsolla_refund(&transaction, None)),
                &[("Idempotency-Key", &format!("r{index}"))],
            )
            .await;
        assert_eq!(refund["status"], "unknown", "{label}: {refund}");
        let reference = refund["reference"].as_str().expect("reference").to_string();
        api.post("/v1/reconcile", json!({})).await;
        let entries = ledger(&api).await;
        let state = entries[&reference]["state"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let refunded = sims
            .xsolla
            .transaction(transaction.parse().expect("id"))
            .expect("tx")
            .status
            == "refunded";
        let honest = if refunded {
            state != "failed"
        } else {
            state != "succeeded"
        };
        if !honest {
            wrong.push(format!("{label}: the ledger says {state}"));
        }
        if state != "needs_operator" {
            wrong.push(format!(
                "{label}: an unknown refund must go to an operator, the ledger says {state}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
