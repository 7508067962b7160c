//! Refunds whose answer was lost settle themselves where the provider can tell, and go to an
//! operator where it cannot.
//!
//! Regression test for bug B1 (RELIABILITY.md): reconciliation used to settle an Xsolla refund
//! entry through the *charge's* status, so a refund whose answer was lost was recorded `failed`
//! although Xsolla made it, and a refund Xsolla never made `succeeded`. The contract now asks a
//! plugin about a refund itself (`status` with `of: refund`, for plugins whose manifest lists it in
//! `status_of`): Xsolla's transaction details tell a refunded transaction from one that is not.
//! CCBill has no status operation: its unknown payouts go to an operator.

use crate::reliability;

use gatehouse_e2e::{ApiHost, Backend};
use gatehouse_sim_common::Fault;
use reliability::{ALL_PLUGINS, Simulators, ledger, xsolla_charge, xsolla_refund};
use reqwest::Method;
use serde_json::json;

async fn reconciled_refunds_hold_the_providers_truth(backend: Backend) {
    let sims = Simulators::start().await;
    let api = ApiHost::start_on(backend, &ALL_PLUGINS, &sims.accounts_toml(600)).await;
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
        let truth = if refunded { "succeeded" } else { "failed" };
        if state != truth {
            wrong.push(format!(
                "{label}: Xsolla can tell, so the refund must settle {truth}; the ledger says {state}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    // CCBill cannot be asked: an unknown payout goes to an operator, with the reason.
    sims.ccbill_running.faults.push(Fault::ResetMidBody);
    let (_, _, payout) = api
        .request(
            Method::POST,
            "/v1/ccbill/main/affiliate-payouts",
            Some(reliability::ccbill_payout("0001", 700)),
            &[("Idempotency-Key", "p0")],
        )
        .await;
    assert_eq!(payout["status"], "unknown", "{payout}");
    let reference = payout["reference"].as_str().expect("reference").to_string();
    api.post("/v1/reconcile", json!({})).await;
    let (_, entry) = api.get(&format!("/v1/ledger/{reference}")).await;
    assert_eq!(entry["entry"]["state"], "needs_operator", "{entry}");
    assert!(
        entry["entry"]["operator_flag"]
            .as_str()
            .is_some_and(|reason| reason.contains("status")),
        "{entry}"
    );
}

on_both_backends!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    reconciled_refunds_hold_the_providers_truth,
);
