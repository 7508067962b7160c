//! PayGateGlobal end to end: the real host, the real plugin cdylib, the simulator over HTTP.

use std::time::Duration;

use gatehouse_core::DispatchError;
use gatehouse_e2e::TestHost;
use gatehouse_plugin_api::{Details, ErrorKind, OutcomeStatus};
use gatehouse_sim_common::{Fault, RunningSimulator};
use gatehouse_sim_paygateglobal::{CANCELLED, EXPIRED, PAID, PayGateSimulator};
use serde_json::json;

const TOKEN: &str = "15c15ac9-b802-48d8-9d26-d7e2338a18d2";

async fn setup() -> (TestHost, PayGateSimulator, RunningSimulator) {
    let (simulator, running) = PayGateSimulator::start(TOKEN).await.expect("simulator");
    let host = TestHost::start(
        &["gatehouse-plugin-paygateglobal"],
        &format!(
            r#"
[providers.paygateglobal.accounts.main]
base_url = "{base}"
timeout_ms = 2000
secrets = {{ auth_token = "{TOKEN}" }}

[providers.paygateglobal.accounts.wrong]
base_url = "{base}"
secrets = {{ auth_token = "not-the-token" }}
"#,
            base = running.base_url()
        ),
    )
    .await;
    (host, simulator, running)
}

fn charge(phone: &str) -> serde_json::Value {
    json!({"operation": "charge", "amount": {"minor_units": 1500, "currency": "XOF"},
           "customer": {"phone": phone}, "payment_method": "TMONEY", "description": "order 7"})
}

#[tokio::test]
async fn charge_then_status_through_every_payment_state() {
    let (host, simulator, _running) = setup().await;
    for (final_status, expected) in [
        (PAID, OutcomeStatus::Succeeded),
        (EXPIRED, OutcomeStatus::Failed),
        (CANCELLED, OutcomeStatus::Failed),
    ] {
        let dispatched = host
            .call_full("paygateglobal", "main", charge("90123456"))
            .await
            .expect("charge");
        assert_eq!(dispatched.outcome.status, OutcomeStatus::Pending);
        let tx_reference = dispatched
            .outcome
            .provider_reference
            .clone()
            .expect("tx_reference");
        let identifier = dispatched.reference.clone().expect("host-made reference");
        let stored = simulator
            .transaction(&identifier)
            .expect("the simulator registered the identifier");
        assert_eq!(stored.amount, 1500);
        assert_eq!(stored.network, "TMONEY");

        let pending = host
            .call(
                "paygateglobal",
                "main",
                json!({"operation": "status", "transaction_id": tx_reference}),
            )
            .await
            .expect("status v1");
        assert_eq!(pending.status, OutcomeStatus::Pending);

        assert!(simulator.settle(&identifier, final_status).await);
        let by_v1 = host
            .call(
                "paygateglobal",
                "main",
                json!({"operation": "status", "transaction_id": tx_reference}),
            )
            .await
            .expect("status v1");
        let by_v2 = host
            .call(
                "paygateglobal",
                "main",
                json!({"operation": "status", "reference": identifier}),
            )
            .await
            .expect("status v2");
        assert_eq!(by_v1.status, expected);
        assert_eq!(by_v2.status, expected);
        assert_eq!(
            by_v2.provider_reference.as_deref(),
            Some(tx_reference.as_str())
        );
    }
}

#[tokio::test]
async fn documented_error_statuses() {
    let (host, _simulator, running) = setup().await;

    // 2: invalid auth token — a failed charge, and the account is paused so the host stops
    // sending with credentials the provider refuses.
    let outcome = host
        .call("paygateglobal", "wrong", charge("90123456"))
        .await
        .expect("outcome");
    assert_eq!(outcome.status, OutcomeStatus::Failed);
    let error = outcome.error.expect("error");
    assert_eq!(error.kind, ErrorKind::Authentication);
    assert_eq!(error.provider_code.as_deref(), Some("2"));
    let calls_before = running.calls.count("/api/v1/pay");
    let paused = host
        .call("paygateglobal", "wrong", charge("90123456"))
        .await;
    assert!(
        matches!(paused, Err(DispatchError::AccountPaused { .. })),
        "{paused:?}"
    );
    assert_eq!(
        running.calls.count("/api/v1/pay"),
        calls_before,
        "a paused account sends nothing"
    );
    assert!(host.gateway.resume_account("paygateglobal", "wrong"));

    // 4: invalid parameters, as the provider answers them.
    running
        .faults
        .push(Fault::Body(json!({"status": 4}).to_string()));
    let outcome = host
        .call("paygateglobal", "main", charge("90123456"))
        .await
        .expect("outcome");
    assert_eq!(outcome.status, OutcomeStatus::Failed);
    assert_eq!(
        outcome.error.expect("error").kind,
        ErrorKind::InvalidRequest
    );

    // Bad parameters the plugin can see are refused before any request.
    let calls_before = running.calls.all().len();
    let outcome = host
        .call("paygateglobal", "main", charge("12"))
        .await
        .expect("outcome");
    assert_eq!(
        outcome.error.expect("error").fields,
        vec!["customer.phone".to_string()]
    );
    assert_eq!(running.calls.all().len(), calls_before);

    // Unknown transactions and a wrong token on the status API.
    let missing = host
        .call(
            "paygateglobal",
            "main",
            json!({"operation": "status", "transaction_id": "999"}),
        )
        .await;
    assert!(
        matches!(&missing, Err(DispatchError::Provider(error)) if error.kind == ErrorKind::NotFound),
        "{missing:?}"
    );
}

/// A retry after a lost answer, under the caller's idempotency key, is answered from the ledger:
/// the provider never sees the identifier twice (the plugin's handling of PayGateGlobal's code 6,
/// "duplicate identifier", for a resend from elsewhere is covered by its unit tests).
#[tokio::test]
async fn a_retry_with_the_same_key_is_answered_from_the_ledger() {
    let (host, simulator, _running) = setup().await;
    let first = host
        .call_keyed(
            "paygateglobal",
            "main",
            charge("90123456"),
            Some("order-77"),
        )
        .await
        .expect("charge");
    let identifier = first.reference.clone().expect("reference");
    simulator.settle(&identifier, PAID).await;
    let retry = host
        .call_keyed(
            "paygateglobal",
            "main",
            charge("90123456"),
            Some("order-77"),
        )
        .await
        .expect("retry");
    assert!(retry.replayed, "{retry:?}");
    assert_eq!(retry.reference.as_deref(), Some(identifier.as_str()));
    assert_eq!(retry.provider_requests, 0);
    assert_eq!(
        retry.outcome.provider_reference,
        first.outcome.provider_reference
    );
    assert_eq!(simulator.transactions().len(), 1, "no second transaction");
}

#[tokio::test]
async fn payment_page_url_is_served_by_the_provider() {
    let (host, simulator, _running) = setup().await;
    let outcome = host
        .call(
            "paygateglobal",
            "main",
            json!({"operation": "payment_page", "amount": {"minor_units": 300, "currency": "XOF"},
                   "description": "test", "return_url": "https://shop.example/done"}),
        )
        .await
        .expect("payment page");
    let Details::PaymentPage { url, .. } = outcome.details else {
        panic!("no url")
    };
    let page = reqwest::get(&url).await.expect("page reachable");
    assert_eq!(page.status(), 200);
    assert!(page.text().await.expect("html").contains("300 FCFA"));
    assert_eq!(simulator.transactions().len(), 1);
}

#[tokio::test]
async fn balance_is_read_exactly() {
    let (host, _simulator, _running) = setup().await;
    let outcome = host
        .call("paygateglobal", "main", json!({"operation": "balance"}))
        .await
        .expect("balance");
    let Details::Balance { balances } = outcome.details else {
        panic!("no balances")
    };
    assert_eq!(balances.len(), 2);
    assert_eq!(
        (balances[0].name.as_str(), balances[0].amount.minor_units),
        ("flooz", 150_000)
    );
    assert_eq!(
        (balances[1].name.as_str(), balances[1].amount.minor_units),
        ("tmoney", 42_500)
    );
    let wrong = host
        .call("paygateglobal", "wrong", json!({"operation": "balance"}))
        .await;
    assert!(
        matches!(&wrong, Err(DispatchError::Provider(error)) if error.kind == ErrorKind::Authentication),
        "{wrong:?}"
    );
}

#[tokio::test]
async fn callbacks_are_believed_only_after_the_status_api_confirms_them() {
    let (host, simulator, _running) = setup().await;
    let dispatched = host
        .call_full("paygateglobal", "main", charge("90123456"))
        .await
        .expect("charge");
    let identifier = dispatched.reference.expect("reference");
    simulator.settle(&identifier, PAID).await;
    let transaction = simulator.transaction(&identifier).expect("transaction");
    let genuine = gatehouse_sim_paygateglobal::callback_body(&transaction).to_string();
    let outcome = host
        .webhook("paygateglobal", "main", vec![], genuine.as_bytes())
        .await
        .expect("webhook");
    let Details::Webhook(result) = outcome.details else {
        panic!("no webhook result")
    };
    let event = result.event.expect("event");
    assert!(event.verified);
    assert_eq!(event.status, OutcomeStatus::Succeeded);
    assert_eq!(result.reply.status, 200);

    // Forged: claims a payment for an identifier the provider never saw.
    let forged = json!({"tx_reference": "666", "identifier": "order-forged", "amount": 1000000,
                        "payment_reference": "X", "datetime": "2026-01-01 00:00:00",
                        "payment_method": "FLOOZ", "phone_number": "22890000000"});
    let outcome = host
        .webhook(
            "paygateglobal",
            "main",
            vec![],
            forged.to_string().as_bytes(),
        )
        .await
        .expect("webhook");
    let Details::Webhook(result) = outcome.details else {
        panic!("no webhook result")
    };
    assert!(!result.event.expect("event").verified);

    // Forged amount for a real identifier.
    let mut tampered = gatehouse_sim_paygateglobal::callback_body(&transaction);
    tampered["amount"] = json!(999_999);
    let outcome = host
        .webhook(
            "paygateglobal",
            "main",
            vec![],
            tampered.to_string().as_bytes(),
        )
        .await
        .expect("webhook");
    let Details::Webhook(result) = outcome.details else {
        panic!("no webhook result")
    };
    let event = result.event.expect("event");
    assert_ne!(
        event.amount.map(|amount| amount.minor_units),
        Some(999_999),
        "an unconfirmed amount is never reported"
    );
}

#[tokio::test]
async fn transport_faults_end_in_the_right_outcome() {
    let (host, simulator, running) = setup().await;
    // 503 on every attempt after sending a charge (the pay request is retry-safe, so the host
    // resends up to max_retries times): it may have been registered, so unknown.
    for _ in 0..3 {
        running
            .faults
            .push(Fault::Status(503, "maintenance".into()));
    }
    let outcome = host
        .call("paygateglobal", "main", charge("90123456"))
        .await
        .expect("outcome");
    assert_eq!(outcome.status, OutcomeStatus::Unknown);

    // Slow past the timeout: the pay request is retry-safe (identifier deduplication), so the
    // host resends; the first attempt registered the payment, the resend gets status 6 and the
    // plugin reports the existing transaction. One transaction, never two.
    running
        .faults
        .push(Fault::Delay(Duration::from_millis(2500)));
    let before = simulator.transactions().len();
    let outcome = host
        .call("paygateglobal", "main", charge("90123457"))
        .await
        .expect("outcome");
    assert!(
        matches!(outcome.status, OutcomeStatus::Pending),
        "{outcome:?}"
    );
    assert_eq!(simulator.transactions().len(), before + 1);

    // Truncated and wrong-shape bodies on a read: errors, never panics.
    running.faults.push(Fault::TruncateBody);
    let result = host
        .call("paygateglobal", "main", json!({"operation": "balance"}))
        .await;
    assert!(
        matches!(&result, Err(DispatchError::Provider(error)) if error.kind == ErrorKind::MalformedResponse),
        "{result:?}"
    );
    running.faults.push(Fault::Body("[1,2,3]".into()));
    let result = host
        .call("paygateglobal", "main", json!({"operation": "balance"}))
        .await;
    assert!(
        matches!(&result, Err(DispatchError::Provider(error)) if error.kind == ErrorKind::MalformedResponse),
        "{result:?}"
    );
    // An enormous body is refused by size before it is parsed.
    running.faults.push(Fault::EnormousBody(6 * 1024 * 1024));
    let result = host
        .call("paygateglobal", "main", json!({"operation": "balance"}))
        .await;
    assert!(
        matches!(&result, Err(DispatchError::Provider(error)) if error.kind == ErrorKind::MalformedResponse),
        "{result:?}"
    );
}

#[tokio::test]
async fn unsupported_operations_are_refused_before_any_io() {
    let (host, _simulator, running) = setup().await;
    let result = host
        .call(
            "paygateglobal",
            "main",
            json!({"operation": "refund", "transaction_id": "1"}),
        )
        .await;
    assert!(
        matches!(result, Err(DispatchError::NotSupported { .. })),
        "{result:?}"
    );
    let result = host
        .call("paygateglobal", "nobody", json!({"operation": "balance"}))
        .await;
    assert!(
        matches!(result, Err(DispatchError::UnknownAccount { .. })),
        "{result:?}"
    );
    let result = host
        .call("nosuchprovider", "main", json!({"operation": "balance"}))
        .await;
    assert!(
        matches!(result, Err(DispatchError::UnknownProvider { .. })),
        "{result:?}"
    );
    let result = host
        .call(
            "paygateglobal",
            "main",
            json!({"operation": "balance", "extra": {"nope": 1}}),
        )
        .await;
    assert!(
        matches!(result, Err(DispatchError::InvalidCommand { .. })),
        "{result:?}"
    );
    assert!(running.calls.all().is_empty());
}
