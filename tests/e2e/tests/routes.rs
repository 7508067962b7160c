//! Every route of the HTTP API, success and error, over real HTTP, with all five providers'
//! real plugins against their simulators.

use gatehouse_e2e::ApiHost;
use gatehouse_sim_xsolla::{Credentials, SignatureMode, XsollaSimulator};
use reqwest::Method;
use serde_json::{Value, json};

struct Providers {
    api: ApiHost,
    xsolla: XsollaSimulator,
    saved_card: u64,
    _running: Vec<gatehouse_sim_common::RunningSimulator>,
}

async fn all_providers() -> Providers {
    let (_paygate, paygate_running) =
        gatehouse_sim_paygateglobal::PayGateSimulator::start("routes-paygate-token")
            .await
            .expect("paygate");
    let credentials = Credentials::default();
    let (xsolla, xsolla_running) = XsollaSimulator::start(credentials.clone())
        .await
        .expect("xsolla");
    let saved_card = xsolla.add_saved_account("player-1", "card", "Visa **** 4242");
    let (kolmisoft, kolmisoft_running) =
        gatehouse_sim_kolmisoft::KolmisoftSimulator::start("routes-kolmisoft-secret", "admin")
            .await
            .expect("kolmisoft");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    kolmisoft.add_payment(gatehouse_sim_kolmisoft::Payment::new(
        2,
        "alice",
        now - 30,
        "12.50",
        "EUR",
    ));
    let (_ccbill, ccbill_running) = gatehouse_sim_ccbill::CcBillSimulator::start()
        .await
        .expect("ccbill");
    let (_paysite, paysite_running) =
        gatehouse_sim_paysitecash::PaysiteCashSimulator::start("webmaster", "routes-paysite-pw")
            .await
            .expect("paysite");
    let accounts = format!(
        r#"
[providers.paygateglobal.accounts.main]
base_url = "{paygate}"
secrets = {{ auth_token = "routes-paygate-token" }}

[providers.xsolla.accounts.main]
base_url = "{xsolla_api}"
settings = {{ merchant_id = "{merchant}", project_id = "{project}", sandbox = "true", sandbox_paystation_url = "{xsolla_root}/sandbox/paystation4/" }}
secrets = {{ api_key = "{api_key}", project_secret_key = "{project_secret}" }}

[providers.kolmisoft.accounts.main]
base_url = "{kolmisoft}/billing"
settings = {{ username = "admin" }}
secrets = {{ secret_key = "routes-kolmisoft-secret" }}

[providers.ccbill.accounts.main]
base_url = "{ccbill}"
settings = {{ client_accnum = "{accnum}", username = "{ccbill_user}", using_subacc = "0000" }}
secrets = {{ password = "{ccbill_password}" }}

[providers.paysitecash.accounts.main]
base_url = "{paysite}"
settings = {{ user = "webmaster" }}
secrets = {{ password = "routes-paysite-pw" }}
"#,
        paygate = paygate_running.base_url(),
        xsolla_api = XsollaSimulator::api_base_url(&xsolla_running),
        xsolla_root = xsolla_running.base_url(),
        merchant = credentials.merchant_id,
        project = credentials.project_id,
        api_key = credentials.api_key,
        project_secret = credentials.project_secret_key,
        kolmisoft = kolmisoft_running.base_url(),
        ccbill = ccbill_running.base_url(),
        accnum = gatehouse_sim_ccbill::SEED_ACCNUM,
        ccbill_user = gatehouse_sim_ccbill::SEED_USERNAME,
        ccbill_password = gatehouse_sim_ccbill::SEED_PASSWORD,
        paysite = gatehouse_sim_paysitecash::PaysiteCashSimulator::stats_base_url(&paysite_running),
    );
    let api = ApiHost::start(
        &[
            "gatehouse-plugin-paygateglobal",
            "gatehouse-plugin-xsolla",
            "gatehouse-plugin-kolmisoft",
            "gatehouse-plugin-ccbill",
            "gatehouse-plugin-paysitecash",
        ],
        &accounts,
    )
    .await;
    Providers {
        api,
        xsolla,
        saved_card,
        _running: vec![
            paygate_running,
            xsolla_running,
            kolmisoft_running,
            ccbill_running,
            paysite_running,
        ],
    }
}

async fn call(api: &ApiHost, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let (status, _, value) = api.request(method, path, body, &[]).await;
    (status, value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_succeeds_and_fails_as_documented() {
    let providers = all_providers().await;
    let api = &providers.api;

    // Charges (PayGateGlobal mobile money; Xsolla saved card).
    let (status, paygate_charge) = call(api, Method::POST, "/v1/paygateglobal/main/charges", Some(json!({"amount": {"minor_units": 500, "currency": "XOF"}, "customer": {"phone": "90123456"}, "payment_method": "FLOOZ"}))).await;
    assert_eq!(
        (status, paygate_charge["status"].as_str()),
        (200, Some("pending")),
        "{paygate_charge}"
    );
    let (status, xsolla_charge) = call(api, Method::POST, "/v1/xsolla/main/charges", Some(json!({"amount": {"minor_units": 1999, "currency": "USD"}, "customer": {"id": "player-1", "ip": "203.0.113.9"}, "payment_method": "card", "saved_account_id": providers.saved_card.to_string()}))).await;
    assert_eq!(status, 200, "{xsolla_charge}");
    let transaction = xsolla_charge["provider_reference"]
        .as_str()
        .expect("xsolla transaction")
        .to_string();
    let (status, error) = call(api, Method::POST, "/v1/xsolla/main/charges", Some(json!({"amount": {"minor_units": 1999, "currency": "USD"}, "customer": {"id": "player-1", "ip": "203.0.113.9"}, "payment_method": "card", "saved_account_id": "424242"}))).await;
    assert_eq!(
        (status, error["status"].as_str()),
        (200, Some("failed")),
        "an unknown saved account: {error}"
    );

    // Refunds: partial, then a refund above the amount refused by the provider.
    let (status, refund) = call(api, Method::POST, "/v1/xsolla/main/refunds", Some(json!({"transaction_id": transaction, "amount": {"minor_units": 500, "currency": "USD"}, "reason": "partial"}))).await;
    assert_eq!(status, 200, "{refund}");
    assert_ne!(refund["status"], "failed", "{refund}");
    let (status, refused) = call(api, Method::POST, "/v1/xsolla/main/refunds", Some(json!({"transaction_id": transaction, "amount": {"minor_units": 999_999, "currency": "USD"}, "reason": "too much"}))).await;
    assert_eq!(
        (status, refused["status"].as_str()),
        (200, Some("failed")),
        "{refused}"
    );

    // Affiliate payouts and refunds (CCBill).
    let (status, payout) = call(api, Method::POST, "/v1/ccbill/main/affiliate-payouts", Some(json!({"affiliate_id": "123456", "amount": {"minor_units": 1495, "currency": "USD"}, "original_subscription_id": "1234567891"}))).await;
    assert_eq!(
        (status, payout["status"].as_str()),
        (200, Some("succeeded")),
        "{payout}"
    );
    let (status, error) = call(
        api,
        Method::POST,
        "/v1/ccbill/main/affiliate-payouts",
        Some(json!({"affiliate_id": "123456", "amount": {"minor_units": 1495, "currency": "EUR"}})),
    )
    .await;
    assert_eq!(
        (status, error["status"].as_str()),
        (200, Some("failed")),
        "{error}"
    );
    let (status, affiliate_refund) = call(api, Method::POST, "/v1/ccbill/main/affiliate-refunds", Some(json!({"affiliate_id": "123456", "subscription_id": "1234567890", "original_subscription_id": "1234567891", "transaction_type": "one_time"}))).await;
    assert_eq!(
        (status, affiliate_refund["status"].as_str()),
        (200, Some("succeeded")),
        "{affiliate_refund}"
    );
    let (status, error) = call(
        api,
        Method::POST,
        "/v1/ccbill/main/affiliate-refunds",
        Some(json!({"affiliate_id": "123456"})),
    )
    .await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (422, Some("invalid_request")),
        "{error}"
    );

    // Reports (Kolmisoft, Paysite Cash, Xsolla).
    let (status, report) = call(
        api,
        Method::POST,
        "/v1/kolmisoft/main/reports",
        Some(json!({"report": "payments"})),
    )
    .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        report["details"]["records"][0]["amount"]["minor_units"],
        1250
    );
    let (status, report) = call(
        api,
        Method::POST,
        "/v1/paysitecash/main/reports",
        Some(json!({"report": "webmasters_month", "filters": {"month": "01", "year": "2026"}})),
    )
    .await;
    assert_eq!(
        (status, report["status"].as_str()),
        (200, Some("succeeded")),
        "{report}"
    );
    let (status, report) = call(
        api,
        Method::POST,
        "/v1/xsolla/main/reports",
        Some(json!({"report": "search"})),
    )
    .await;
    assert_eq!(status, 200, "{report}");
    let (status, error) = call(
        api,
        Method::POST,
        "/v1/paysitecash/main/reports",
        Some(json!({"report": "webmasters_month", "filters": {"month": "13", "year": "2026"}})),
    )
    .await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (422, Some("invalid_request")),
        "{error}"
    );
    let (status, error) = call(
        api,
        Method::POST,
        "/v1/kolmisoft/main/reports",
        Some(json!({"report": "nope"})),
    )
    .await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (422, Some("invalid_request")),
        "{error}"
    );

    // Status (PayGateGlobal by reference, Xsolla by transaction id) and errors.
    let (status, by_reference) = call(
        api,
        Method::POST,
        "/v1/paygateglobal/main/status",
        Some(json!({"reference": paygate_charge["reference"]})),
    )
    .await;
    assert_eq!(
        (status, by_reference["status"].as_str()),
        (200, Some("pending")),
        "{by_reference}"
    );
    let (status, details) = call(
        api,
        Method::POST,
        "/v1/xsolla/main/status",
        Some(json!({"transaction_id": transaction})),
    )
    .await;
    assert_eq!(status, 200, "{details}");
    let (status, error) = call(
        api,
        Method::POST,
        "/v1/paygateglobal/main/status",
        Some(json!({})),
    )
    .await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (422, Some("invalid_request")),
        "{error}"
    );

    // Balance.
    let (status, balance) = call(api, Method::GET, "/v1/paygateglobal/main/balance", None).await;
    assert_eq!(
        (status, balance["status"].as_str()),
        (200, Some("succeeded"))
    );
    let (status, error) = call(api, Method::GET, "/v1/kolmisoft/main/balance", None).await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (422, Some("not_supported"))
    );

    // Payment pages.
    let (status, page) = call(api, Method::POST, "/v1/xsolla/main/payment-pages", Some(json!({"amount": {"minor_units": 500, "currency": "USD"}, "customer": {"id": "player-1"}}))).await;
    assert_eq!(status, 200, "{page}");
    assert!(
        page["details"]["url"]
            .as_str()
            .expect("url")
            .contains("token="),
        "{page}"
    );
    let (status, page) = call(
        api,
        Method::POST,
        "/v1/paygateglobal/main/payment-pages",
        Some(json!({"amount": {"minor_units": 300, "currency": "XOF"}})),
    )
    .await;
    assert_eq!(status, 200, "{page}");
    let (status, error) = call(
        api,
        Method::POST,
        "/v1/paygateglobal/main/payment-pages",
        Some(json!({"amount": {"minor_units": 300, "currency": "USD"}})),
    )
    .await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (422, Some("invalid_request")),
        "{error}"
    );

    // Saved accounts: list, delete, delete again (gone).
    let (status, saved) = call(
        api,
        Method::GET,
        "/v1/xsolla/main/saved-accounts/player-1",
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        saved["details"]["accounts"][0]["id"],
        providers.saved_card.to_string()
    );
    let delete = format!(
        "/v1/xsolla/main/saved-accounts/player-1/card/{}",
        providers.saved_card
    );
    let (status, deleted) = call(api, Method::DELETE, &delete, None).await;
    assert_eq!(
        (status, deleted["status"].as_str()),
        (200, Some("succeeded")),
        "{deleted}"
    );
    let (status, error) = call(api, Method::DELETE, &delete, None).await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{error}"
    );
    let (status, error) = call(
        api,
        Method::GET,
        "/v1/paygateglobal/main/saved-accounts/player-1",
        None,
    )
    .await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (422, Some("not_supported"))
    );

    // Sandbox chargeback (the sandbox-mode charge above), then an unknown transaction.
    let (status, chargeback) = call(
        api,
        Method::POST,
        "/v1/xsolla/main/sandbox/chargebacks",
        Some(json!({"transaction_id": transaction})),
    )
    .await;
    assert_eq!(status, 200, "{chargeback}");
    let (status, error) = call(
        api,
        Method::POST,
        "/v1/xsolla/main/sandbox/chargebacks",
        Some(json!({"transaction_id": "777"})),
    )
    .await;
    assert!(status >= 400, "{status} {error}");

    // Resume: an account that is not paused; an unknown one still answers.
    let (status, resumed) = call(api, Method::POST, "/v1/ccbill/main/resume", None).await;
    assert_eq!(
        (status, resumed["was_paused"].as_bool()),
        (200, Some(false))
    );

    // Webhooks: Xsolla signed, valid and wrong.
    let body =
        json!({"notification_type": "user_validation", "user": {"id": "player-1"}}).to_string();
    let webhook = format!("{}/webhooks/xsolla/main", api.base_url);
    let good = providers
        .xsolla
        .webhook_authorization(&body, SignatureMode::Valid)
        .expect("signature");
    let response = api
        .client
        .post(&webhook)
        .header("authorization", good)
        .body(body.clone())
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 204);
    let wrong = providers
        .xsolla
        .webhook_authorization(&body, SignatureMode::Wrong)
        .expect("signature");
    let response = api
        .client
        .post(&webhook)
        .header("authorization", wrong)
        .body(body)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 401);
    let answer: Value = response.json().await.expect("xsolla error body");
    assert_eq!(answer["error"]["code"], "INVALID_SIGNATURE");

    // Ledger, events, reconcile, plugins.
    let (status, ledger) = call(api, Method::GET, "/v1/ledger?limit=50", None).await;
    assert_eq!(status, 200);
    assert!(
        ledger["entries"].as_array().expect("entries").len() >= 6,
        "{ledger}"
    );
    let (status, _) = call(api, Method::GET, "/v1/events?after=0", None).await;
    assert_eq!(status, 200);
    let (status, report) = call(api, Method::POST, "/v1/reconcile", None).await;
    assert_eq!(status, 200, "{report}");
    let (status, plugins) = call(api, Method::GET, "/v1/plugins", None).await;
    assert_eq!(status, 200);
    assert_eq!(plugins["plugins"].as_array().expect("plugins").len(), 5);
    let (status, error) = call(api, Method::GET, "/v1/nothing-here", None).await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
}
