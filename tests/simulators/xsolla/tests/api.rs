//! The simulator hit with reqwest over loopback: it follows the documented wire format.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use gatehouse_sim_xsolla::{Credentials, SignatureMode, XsollaSimulator};
use reqwest::Client;
use serde_json::{Value, json};
use sha1::{Digest, Sha1};

struct Harness {
    sim: XsollaSimulator,
    running: gatehouse_sim_common::RunningSimulator,
    client: Client,
    api: String,
}

impl Harness {
    async fn start() -> Self {
        let (sim, running) = XsollaSimulator::start(Credentials::default())
            .await
            .expect("simulator starts");
        let api = XsollaSimulator::api_base_url(&running);
        Self {
            sim,
            running,
            client: Client::new(),
            api,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.api)
    }

    fn auth(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let credentials = self.sim.credentials();
        request.basic_auth(credentials.merchant_id, Some(&credentials.api_key))
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<&str>) -> (u16, String) {
        let mut request = self.auth(self.client.request(method, self.url(path)));
        if let Some(body) = body {
            request = request
                .header("Content-Type", "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.expect("request is answered");
        let status = response.status().as_u16();
        (status, response.text().await.expect("body"))
    }
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|error| panic!("not JSON ({error}): {text}"))
}

fn property_errors(text: &str) -> Vec<String> {
    let value = json_of(text);
    value["extended_message"]["property_errors"]
        .as_object()
        .map(|errors| errors.keys().cloned().collect())
        .unwrap_or_default()
}

const TOKEN_BODY: &str = r#"{"user":{"id":{"value":"user-1"},"email":{"value":"ann@example.com"}},
    "settings":{"project_id":678,"currency":"USD","mode":"sandbox","external_id":"order-1"},
    "purchase":{"checkout":{"currency":"USD","amount":9.99}}}"#;

#[tokio::test]
async fn every_call_needs_basic_auth_for_this_merchant() {
    let harness = Harness::start().await;
    let response = harness
        .client
        .post(harness.url("/merchants/12345/token"))
        .body(TOKEN_BODY)
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status().as_u16(), 401);
    let response = harness
        .client
        .get(harness.url("/merchants/12345/reports/transactions/search.json"))
        .basic_auth("12345", Some("wrong-key"))
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status().as_u16(), 401);
    let (status, _) = harness
        .call(
            reqwest::Method::POST,
            "/merchants/999/token",
            Some(TOKEN_BODY),
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = harness
        .call(
            reqwest::Method::GET,
            "/projects/1/users/u/payment_accounts",
            None,
        )
        .await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn tokens_are_issued_or_refused_with_extended_message() {
    let harness = Harness::start().await;
    let (status, body) = harness
        .call(
            reqwest::Method::POST,
            "/merchants/12345/token",
            Some(TOKEN_BODY),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let token = json_of(&body)["token"].as_str().expect("token").to_string();
    let record = harness.sim.token(&token).expect("kept");
    assert_eq!(record.amount.minor_units, 999);
    assert!(record.sandbox);
    let page = harness
        .client
        .get(format!(
            "{}/sandbox/paystation4/?token={token}",
            harness.running.base_url()
        ))
        .send()
        .await
        .expect("page");
    assert_eq!(page.status().as_u16(), 200);

    let bad = r#"{"user":{"id":{"value":""}},"settings":{"project_id":1,"currency":"XYZ"},
                  "purchase":{"checkout":{"currency":"JPY","amount":1.5}}}"#;
    let (status, body) = harness
        .call(reqwest::Method::POST, "/merchants/12345/token", Some(bad))
        .await;
    assert_eq!(status, 422);
    assert_eq!(json_of(&body)["http_status_code"], 422);
    assert_eq!(
        property_errors(&body),
        vec![
            "purchase.checkout.amount",
            "settings.currency",
            "settings.project_id",
            "user.id.value"
        ]
    );
    let (status, body) = harness
        .call(
            reqwest::Method::POST,
            "/merchants/12345/token",
            Some("{not json"),
        )
        .await;
    assert_eq!(status, 422);
    assert_eq!(property_errors(&body), vec!["body"]);
}

#[tokio::test]
async fn saved_accounts_charge_and_show_up_in_reports() {
    let harness = Harness::start().await;
    let account = harness
        .sim
        .add_saved_account("user-1", "card", "Visa **** 1111");
    let (status, body) = harness
        .call(
            reqwest::Method::GET,
            "/projects/678/users/user-1/payment_accounts",
            None,
        )
        .await;
    assert_eq!(status, 200);
    let listed = json_of(&body);
    assert_eq!(listed[0]["id"], account);
    assert_eq!(listed[0]["type"], "card");

    let charge = r#"{"user":{"ip":"203.0.113.7"},"settings":{"currency":"KWD","external_id":"gh-ref-1"},
                     "purchase":{"checkout":{"currency":"KWD","amount":1.234}}}"#;
    let path = format!("/projects/678/users/user-1/payments/card/{account}");
    let (status, body) = harness
        .call(reqwest::Method::POST, &path, Some(charge))
        .await;
    assert_eq!(status, 200, "{body}");
    let transaction_id = json_of(&body)["transaction_id"].as_u64().expect("id");

    // The charge is found by external_id, with the exact amount text.
    let (status, body) = harness
        .call(reqwest::Method::GET, "/merchants/12345/reports/transactions/search.json?external_id=gh-ref-1&limit=10&offset=0&type=all", None)
        .await;
    assert_eq!(status, 200);
    assert!(body.contains(r#""amount":1.234"#), "{body}");
    assert_eq!(json_of(&body)[0]["transaction"]["id"], transaction_id);
    assert_eq!(json_of(&body)[0]["transaction"]["status"], "done");
    let (status, body) = harness
        .call(
            reqwest::Method::GET,
            &format!("/merchants/12345/reports/transactions/{transaction_id}/details"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(json_of(&body)["transaction"]["external_id"], "gh-ref-1");
    let (status, body) = harness
        .call(
            reqwest::Method::GET,
            "/merchants/12345/reports/transactions/search.csv?external_id=gh-ref-1",
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert!(body.starts_with("transaction_id,external_id,status,amount,currency"));
    assert!(body.contains(",gh-ref-1,done,1.234,KWD,"));
    let (status, body) = harness
        .call(
            reqwest::Method::GET,
            "/merchants/12345/reports/transactions/registry.json",
            None,
        )
        .await;
    assert_eq!(status, 422);
    assert_eq!(
        property_errors(&body),
        vec!["in_transfer_currency", "show_total"]
    );
    let (status, body) = harness
        .call(reqwest::Method::GET, "/merchants/12345/reports/transactions/registry.json?in_transfer_currency=0&show_total=false", None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(json_of(&body).as_array().map(Vec::len), Some(1));
    let (status, body) = harness
        .call(
            reqwest::Method::GET,
            "/merchants/12345/reports/transactions/summary/transfer",
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert!(
        body.contains(r#""currency":"KWD","amount":1.234,"transactions_count":1"#),
        "{body}"
    );
    let (status, _) = harness
        .call(
            reqwest::Method::GET,
            "/merchants/12345/reports/transfers",
            None,
        )
        .await;
    assert_eq!(status, 422);
    let (status, body) = harness
        .call(
            reqwest::Method::GET,
            "/merchants/12345/reports/transfers?datetime_from=2026-01-01&datetime_to=2026-01-31",
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert!(body.contains(r#""amount":1520.50"#), "{body}");

    // Bad charges: a missing IP is named, an unknown account is 404.
    let (status, body) = harness
        .call(reqwest::Method::POST, &path, Some(r#"{"settings":{"currency":"USD"},"purchase":{"checkout":{"currency":"USD","amount":1}}}"#))
        .await;
    assert_eq!(status, 422);
    assert_eq!(property_errors(&body), vec!["user.ip"]);
    let (status, _) = harness
        .call(
            reqwest::Method::POST,
            "/projects/678/users/user-1/payments/card/1",
            Some(charge),
        )
        .await;
    assert_eq!(status, 404);

    // Deleting the account: 204, then 404.
    let delete = format!("/projects/678/users/user-1/payment_accounts/card/{account}");
    assert_eq!(
        harness.call(reqwest::Method::DELETE, &delete, None).await.0,
        204
    );
    assert_eq!(
        harness.call(reqwest::Method::DELETE, &delete, None).await.0,
        404
    );
    assert_eq!(
        harness
            .call(
                reqwest::Method::DELETE,
                "/projects/678/users/user-1/payment_accounts/bank/1",
                None
            )
            .await
            .0,
        422
    );
}

async fn charge(harness: &Harness, amount: &str, currency: &str, sandbox: bool) -> u64 {
    let account = harness.sim.add_saved_account("user-2", "paypal", "PayPal");
    let mode = if sandbox { r#","mode":"sandbox""# } else { "" };
    let body = format!(
        r#"{{"user":{{"ip":"1.2.3.4"}},"settings":{{"currency":"{currency}"{mode}}},"purchase":{{"checkout":{{"currency":"{currency}","amount":{amount}}}}}}}"#
    );
    let (status, answer) = harness
        .call(
            reqwest::Method::POST,
            &format!("/projects/678/users/user-2/payments/paypal/{account}"),
            Some(&body),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    json_of(&answer)["transaction_id"].as_u64().expect("id")
}

#[tokio::test]
async fn refund_rules_are_enforced() {
    let harness = Harness::start().await;
    let id = charge(&harness, "1.000", "KWD", false).await;
    let partial = |amount: &str| format!(r#"{{"refund_amount":{amount},"description":"part"}}"#);
    let path = format!("/merchants/12345/reports/transactions/{id}");
    let (status, body) = harness
        .call(
            reqwest::Method::PUT,
            &format!("{path}/partial_refund"),
            Some(&partial("0.250")),
        )
        .await;
    assert_eq!(status, 204, "{body}");
    let (status, body) = harness
        .call(
            reqwest::Method::PUT,
            &format!("{path}/partial_refund"),
            Some(&partial("0.751")),
        )
        .await;
    assert_eq!(status, 422);
    assert_eq!(
        json_of(&body)["message"],
        "Requested partial refund amount exceeds payment amount."
    );
    let (status, body) = harness
        .call(
            reqwest::Method::PUT,
            &format!("{path}/partial_refund"),
            Some(&partial("0.0001")),
        )
        .await;
    assert_eq!(status, 422);
    assert_eq!(property_errors(&body), vec!["refund_amount"]);
    let (status, body) = harness
        .call(
            reqwest::Method::PUT,
            &format!("{path}/refund"),
            Some(r#"{"description":"all"}"#),
        )
        .await;
    assert_eq!(status, 422);
    assert!(
        json_of(&body)["message"]
            .as_str()
            .is_some_and(|text| text.starts_with("Full refund is unavailable"))
    );
    let (status, _) = harness
        .call(
            reqwest::Method::PUT,
            &format!("{path}/partial_refund"),
            Some(&partial("0.750")),
        )
        .await;
    assert_eq!(status, 204);
    assert_eq!(
        harness.sim.transaction(id).expect("kept").status,
        "refunded"
    );

    let id = charge(&harness, "500", "JPY", false).await;
    let path = format!("/merchants/12345/reports/transactions/{id}/refund");
    let (status, body) = harness
        .call(reqwest::Method::PUT, &path, Some(r#"{"email":"a@b.c"}"#))
        .await;
    assert_eq!(status, 422);
    assert_eq!(property_errors(&body), vec!["description"]);
    let (status, body) = harness
        .call(
            reqwest::Method::PUT,
            &path,
            Some(r#"{"description":"asked","email":"a@b.c"}"#),
        )
        .await;
    assert_eq!(status, 200);
    assert!(
        json_of(&body)["message"]
            .as_str()
            .is_some_and(|text| text.contains("accepted"))
    );
    assert_eq!(
        harness.sim.transaction(id).expect("kept").status,
        "refunded"
    );
    let (status, _) = harness
        .call(
            reqwest::Method::PUT,
            &path,
            Some(r#"{"description":"again"}"#),
        )
        .await;
    assert_eq!(status, 422);
    let (status, body) = harness
        .call(
            reqwest::Method::PUT,
            "/merchants/12345/reports/transactions/1/partial_refund",
            Some(&partial("1")),
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(
        json_of(&body)["message"],
        "Transaction with specified ID does not exist."
    );
}

#[tokio::test]
async fn chargebacks_need_a_completed_sandbox_payment() {
    let harness = Harness::start().await;
    let live = charge(&harness, "9.99", "USD", false).await;
    let sandbox = charge(&harness, "9.99", "USD", true).await;
    let path = |id: u64| format!("/merchants/12345/projects/678/payments/{id}/chargeback");
    let (status, body) = harness
        .call(reqwest::Method::POST, &path(live), Some("{}"))
        .await;
    assert_eq!(status, 422);
    assert!(
        json_of(&body)["message"]
            .as_str()
            .is_some_and(|text| text.starts_with("Not test payment"))
    );
    assert_eq!(
        harness
            .call(reqwest::Method::POST, &path(sandbox), Some("{}"))
            .await
            .0,
        204
    );
    assert_eq!(
        harness.sim.transaction(sandbox).expect("kept").status,
        "refunded"
    );
    let (status, body) = harness
        .call(reqwest::Method::POST, &path(sandbox), Some("{}"))
        .await;
    assert_eq!(status, 422);
    assert!(
        json_of(&body)["message"]
            .as_str()
            .is_some_and(|text| text.starts_with("Incorrect payment status"))
    );
    assert_eq!(
        harness
            .call(reqwest::Method::POST, &path(1), Some("{}"))
            .await
            .0,
        404
    );
}

/// A webhook as received: its `Authorization` header, if any, and its body.
type ReceivedWebhook = (Option<String>, String);

#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<ReceivedWebhook>>>);

async fn receive(State(received): State<Received>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let signature = headers
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .map(str::to_string);
    received
        .0
        .lock()
        .expect("lock")
        .push((signature, String::from_utf8_lossy(&body).into_owned()));
    StatusCode::NO_CONTENT
}

#[tokio::test]
async fn webhooks_are_signed_with_sha1_of_body_and_secret() {
    let harness = Harness::start().await;
    let received = Received::default();
    let receiver = gatehouse_sim_common::serve(
        Router::new()
            .route("/hook", post(receive))
            .with_state(received.clone()),
    )
    .await
    .expect("receiver");
    harness
        .sim
        .set_webhook_url(Some(format!("{}/hook", receiver.base_url())));
    let id = charge(&harness, "12.50", "USD", false).await;
    for _ in 0..100 {
        if !received.0.lock().expect("lock").is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (signature, body) = received
        .0
        .lock()
        .expect("lock")
        .first()
        .cloned()
        .expect("payment webhook");
    let expected = {
        let mut hasher = Sha1::new();
        hasher.update(body.as_bytes());
        hasher.update(harness.sim.credentials().project_secret_key.as_bytes());
        format!("Signature {}", hex::encode(hasher.finalize()))
    };
    assert_eq!(signature.as_deref(), Some(expected.as_str()));
    let payment = json_of(&body);
    assert_eq!(payment["notification_type"], "payment");
    assert_eq!(payment["transaction"]["id"], id);
    assert!(
        body.contains(r#""checkout":{"amount":12.50,"currency":"USD"}"#),
        "{body}"
    );

    assert_eq!(
        harness
            .sim
            .send_webhook("{}", SignatureMode::Missing)
            .await
            .map(|(status, _)| status),
        Some(204)
    );
    assert_eq!(
        harness
            .sim
            .send_webhook("{}", SignatureMode::Wrong)
            .await
            .map(|(status, _)| status),
        Some(204)
    );
    let log = received.0.lock().expect("lock").clone();
    assert_eq!(log[1].0, None);
    assert!(
        log[2]
            .0
            .as_deref()
            .is_some_and(|value| value.starts_with("Signature ") && value != expected)
    );

    // The same through the HTTP control route.
    let answer = harness
        .client
        .post(format!("{}/_sim/webhooks/send", harness.running.base_url()))
        .json(&json!({"body": "{\"notification_type\":\"user_validation\"}", "signature": "valid"}))
        .send()
        .await
        .expect("answer");
    assert_eq!(answer.status().as_u16(), 200);
    assert_eq!(answer.json::<Value>().await.expect("json")["status"], 204);
}
