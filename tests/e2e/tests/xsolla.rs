//! Xsolla Pay Station end to end: the real host, the real plugin cdylib, the simulator over HTTP.

use gatehouse_core::DispatchError;
use gatehouse_e2e::TestHost;
use gatehouse_plugin_api::{Currency, Details, ErrorKind, Money, Outcome, OutcomeStatus};
use gatehouse_sim_common::{Fault, RunningSimulator};
use gatehouse_sim_xsolla::{Credentials, SignatureMode, XsollaSimulator};
use serde_json::{Value, json};

const USER: &str = "user-1";

async fn setup() -> (TestHost, XsollaSimulator, RunningSimulator) {
    let credentials = Credentials::default();
    let (simulator, running) = XsollaSimulator::start(credentials.clone())
        .await
        .expect("simulator");
    let api = XsollaSimulator::api_base_url(&running);
    let root = running.base_url();
    let account = |name: &str, sandbox: bool, api_key: &str| {
        format!(
            r#"
[providers.xsolla.accounts.{name}]
base_url = "{api}"
timeout_ms = 5000
settings = {{ merchant_id = "{merchant}", project_id = "{project}", sandbox = "{sandbox}", paystation_url = "{root}/paystation4/", sandbox_paystation_url = "{root}/sandbox/paystation4/" }}
secrets = {{ api_key = "{api_key}", project_secret_key = "{secret}" }}
"#,
            merchant = credentials.merchant_id,
            project = credentials.project_id,
            secret = credentials.project_secret_key,
        )
    };
    let accounts = [
        account("main", false, &credentials.api_key),
        account("sandbox", true, &credentials.api_key),
        account("wrong", false, "not-the-api-key"),
    ]
    .concat();
    let host = TestHost::start(&["gatehouse-plugin-xsolla"], &accounts).await;
    (host, simulator, running)
}

fn money(minor_units: i64, code: &str) -> Money {
    Money::new(minor_units, Currency::from_code(code).expect("currency"))
}

fn charge(account_id: u64, minor_units: i64, currency: &str) -> Value {
    json!({"operation": "charge", "amount": {"minor_units": minor_units, "currency": currency},
           "description": "gems", "customer": {"id": USER, "ip": "203.0.113.7"},
           "payment_method": "card", "saved_account_id": account_id.to_string()})
}

fn provider_error(result: &Result<Outcome, DispatchError>) -> Option<ErrorKind> {
    match result {
        Err(DispatchError::Provider(error)) => Some(error.kind),
        _ => None,
    }
}

fn transaction_id(outcome: &Outcome) -> String {
    outcome.provider_reference.clone().expect("transaction id")
}

#[tokio::test]
async fn payment_page_token_opens_the_pay_station() {
    let (host, simulator, running) = setup().await;
    let command = json!({"operation": "payment_page", "amount": {"minor_units": 999, "currency": "USD"},
                         "description": "100 gems", "customer": {"id": USER, "email": "ann@example.com"},
                         "return_url": "https://game.example/done", "extra": {"language": "en"}});
    let outcome = host
        .call("xsolla", "main", command.clone())
        .await
        .expect("payment page");
    assert_eq!(outcome.status, OutcomeStatus::Pending);
    let Details::PaymentPage { url, token } = outcome.details else {
        panic!("no page")
    };
    let token = token.expect("token");
    assert_eq!(
        url,
        format!("{}/paystation4/?token={token}", running.base_url())
    );
    let page = reqwest::get(&url).await.expect("page");
    assert_eq!(page.status(), 200);
    assert!(page.text().await.expect("html").contains("9.99 USD"));
    let record = simulator
        .token(&token)
        .expect("the simulator issued the token");
    assert_eq!(record.amount, money(999, "USD"));
    assert!(!record.sandbox);

    // Sandbox: the sandbox Pay Station and `mode: sandbox`; paying makes a test transaction.
    let outcome = host
        .call("xsolla", "sandbox", command)
        .await
        .expect("payment page");
    let Details::PaymentPage { url, token } = outcome.details else {
        panic!("no page")
    };
    let token = token.expect("token");
    assert!(url.starts_with(&format!(
        "{}/sandbox/paystation4/?token=",
        running.base_url()
    )));
    assert!(simulator.token(&token).expect("token").sandbox);
    let paid = simulator.pay_token(&token).await.expect("paid");
    let status = host
        .call(
            "xsolla",
            "sandbox",
            json!({"operation": "status", "transaction_id": paid.to_string()}),
        )
        .await;
    assert_eq!(status.expect("status").status, OutcomeStatus::Succeeded);

    // A wrong parameter is named by the simulator's 422.
    let bad = json!({"operation": "payment_page", "amount": {"minor_units": 1, "currency": "USD"},
                     "customer": {"id": USER, "email": "not-an-email"}});
    let result = host.call("xsolla", "main", bad).await;
    let Err(DispatchError::Provider(error)) = result else {
        panic!("{result:?}")
    };
    assert_eq!(error.kind, ErrorKind::InvalidRequest);
    assert_eq!(error.fields, vec!["user.email.value".to_string()]);
}

#[tokio::test]
async fn saved_accounts_are_listed_charged_and_deleted() {
    let (host, simulator, _running) = setup().await;
    let card = simulator.add_saved_account(USER, "card", "Visa **** 1111");
    simulator.add_saved_account(USER, "paypal", "PayPal");
    let outcome = host
        .call(
            "xsolla",
            "main",
            json!({"operation": "saved_accounts", "user_id": USER}),
        )
        .await
        .expect("list");
    let Details::SavedAccounts { accounts } = outcome.details else {
        panic!("no accounts")
    };
    assert_eq!(accounts.len(), 2);
    assert_eq!(accounts[0].id, card.to_string());
    assert_eq!(accounts[0].account_type.as_deref(), Some("card"));

    // Charges in currencies with 0, 2 and 3 decimals, exact both ways.
    for (minor_units, currency) in [(500, "JPY"), (1999, "USD"), (1234, "KWD")] {
        let dispatched = host
            .call_full("xsolla", "main", charge(card, minor_units, currency))
            .await
            .expect("charge");
        assert_eq!(
            dispatched.outcome.status,
            OutcomeStatus::Pending,
            "{:?}",
            dispatched.outcome
        );
        let id = transaction_id(&dispatched.outcome);
        let stored = simulator
            .transaction(id.parse().expect("numeric"))
            .expect("stored");
        assert_eq!(stored.amount, money(minor_units, currency));
        assert_eq!(
            stored.external_id, dispatched.reference,
            "the host reference is the external_id"
        );
        let status = host
            .call(
                "xsolla",
                "main",
                json!({"operation": "status", "transaction_id": id}),
            )
            .await
            .expect("status");
        assert_eq!(status.status, OutcomeStatus::Succeeded);
        assert_eq!(status.amount, Some(money(minor_units, currency)));
        let by_reference = host
            .call("xsolla", "main", json!({"operation": "status", "reference": dispatched.reference.clone().expect("reference")}))
            .await
            .expect("status by reference");
        assert_eq!(
            by_reference.provider_reference.as_deref(),
            Some(id.as_str())
        );
    }

    let delete = json!({"operation": "delete_saved_account", "user_id": USER, "account_type": "card", "account_id": card.to_string()});
    assert_eq!(
        host.call("xsolla", "main", delete.clone())
            .await
            .expect("delete")
            .status,
        OutcomeStatus::Succeeded
    );
    assert_eq!(
        provider_error(&host.call("xsolla", "main", delete).await),
        Some(ErrorKind::NotFound)
    );
    assert_eq!(simulator.saved_accounts(USER).len(), 1);
}

#[tokio::test]
async fn refused_charges_fail_and_lost_ones_are_unknown_then_reconciled() {
    let (host, simulator, running) = setup().await;
    let card = simulator.add_saved_account(USER, "card", "Visa");

    // Checked by the plugin before any request.
    let calls = running.calls.all().len();
    let mut no_ip = charge(card, 100, "USD");
    no_ip["customer"] = json!({"id": USER});
    let outcome = host.call("xsolla", "main", no_ip).await.expect("outcome");
    assert_eq!(outcome.status, OutcomeStatus::Failed);
    assert_eq!(
        outcome.error.expect("error").fields,
        vec!["customer.ip".to_string()]
    );
    assert_eq!(running.calls.all().len(), calls);

    // 422 naming the parameter; 404 for an unknown saved account.
    let mut mock = charge(card, 100, "USD");
    mock["extra"] = json!({"mock_code": 1057});
    let outcome = host.call("xsolla", "main", mock).await.expect("outcome");
    assert_eq!(outcome.status, OutcomeStatus::Failed);
    let error = outcome.error.expect("error");
    assert_eq!(error.kind, ErrorKind::InvalidRequest);
    assert_eq!(error.fields, vec!["settings.mock_code".to_string()]);
    let outcome = host
        .call("xsolla", "main", charge(424_242, 100, "USD"))
        .await
        .expect("outcome");
    assert_eq!(outcome.error.expect("error").kind, ErrorKind::NotFound);

    // A server error after sending: unknown, nothing is resent.
    running
        .faults
        .push(Fault::Status(503, "maintenance".into()));
    let before = running.calls.count("/merchant/v2/projects");
    let outcome = host
        .call("xsolla", "main", charge(card, 100, "USD"))
        .await
        .expect("outcome");
    assert_eq!(outcome.status, OutcomeStatus::Unknown);
    assert_eq!(
        running.calls.count("/merchant/v2/projects"),
        before + 1,
        "a charge is never resent"
    );

    // A truncated answer to a charge the simulator did take: unknown, then reconciled by the
    // host-made reference (search by external_id) to the transaction that exists.
    for fault in [
        Fault::TruncateBody,
        Fault::WrongContentType("text/html"),
        Fault::ResetMidBody,
    ] {
        running.faults.push(fault.clone());
        let dispatched = host
            .call_full("xsolla", "main", charge(card, 250, "USD"))
            .await
            .expect("outcome");
        if matches!(fault, Fault::WrongContentType(_)) {
            // The body is still the JSON answer: the charge is read normally.
            assert_eq!(dispatched.outcome.status, OutcomeStatus::Pending);
            continue;
        }
        assert_eq!(
            dispatched.outcome.status,
            OutcomeStatus::Unknown,
            "{fault:?}"
        );
        let reference = dispatched.reference.expect("reference");
        let reconciled = host
            .call(
                "xsolla",
                "main",
                json!({"operation": "status", "reference": reference}),
            )
            .await
            .expect("reconciled");
        assert_eq!(reconciled.status, OutcomeStatus::Succeeded);
    }
    let missing = host
        .call(
            "xsolla",
            "main",
            json!({"operation": "status", "reference": "never-sent"}),
        )
        .await;
    assert_eq!(provider_error(&missing), Some(ErrorKind::NotFound));

    // Wrong credentials: 401, an authentication failure, and the host pauses the account.
    let outcome = host
        .call("xsolla", "wrong", charge(card, 100, "USD"))
        .await
        .expect("outcome");
    assert_eq!(outcome.status, OutcomeStatus::Failed);
    assert_eq!(
        outcome.error.expect("error").kind,
        ErrorKind::Authentication
    );
    let paused = host
        .call(
            "xsolla",
            "wrong",
            json!({"operation": "saved_accounts", "user_id": USER}),
        )
        .await;
    assert!(
        matches!(paused, Err(DispatchError::AccountPaused { .. })),
        "{paused:?}"
    );
}

#[tokio::test]
async fn refunds_follow_the_documented_rules() {
    let (host, simulator, _running) = setup().await;
    let card = simulator.add_saved_account(USER, "card", "Visa");
    let first = transaction_id(
        &host
            .call("xsolla", "main", charge(card, 1000, "KWD"))
            .await
            .expect("charge"),
    );
    let partial = |minor_units: i64| {
        json!({"operation": "refund", "transaction_id": first, "reason": "one item",
               "amount": {"minor_units": minor_units, "currency": "KWD"}})
    };
    let outcome = host
        .call("xsolla", "main", partial(250))
        .await
        .expect("partial refund");
    assert_eq!(outcome.status, OutcomeStatus::Pending);
    assert_eq!(outcome.amount, Some(money(250, "KWD")));
    let stored = simulator
        .transaction(first.parse().expect("id"))
        .expect("stored");
    assert_eq!(stored.partially_refunded_minor_units, 250);

    let outcome = host
        .call("xsolla", "main", partial(751))
        .await
        .expect("outcome");
    assert_eq!(outcome.status, OutcomeStatus::Failed);
    let error = outcome.error.expect("error");
    assert_eq!(error.kind, ErrorKind::Declined);
    assert_eq!(
        error.provider_message.as_deref(),
        Some("Requested partial refund amount exceeds payment amount.")
    );

    let full = |id: &str| json!({"operation": "refund", "transaction_id": id, "reason": "asked", "email": "ann@example.com"});
    let outcome = host
        .call("xsolla", "main", full(&first))
        .await
        .expect("outcome");
    assert_eq!(outcome.status, OutcomeStatus::Failed);
    assert!(
        outcome
            .error
            .expect("error")
            .provider_message
            .expect("text")
            .starts_with("Full refund is unavailable")
    );

    let second = transaction_id(
        &host
            .call("xsolla", "main", charge(card, 500, "JPY"))
            .await
            .expect("charge"),
    );
    let outcome = host
        .call("xsolla", "main", full(&second))
        .await
        .expect("refund");
    assert_eq!(outcome.status, OutcomeStatus::Pending);
    let status = host
        .call(
            "xsolla",
            "main",
            json!({"operation": "status", "transaction_id": second}),
        )
        .await
        .expect("status");
    assert_eq!(status.status, OutcomeStatus::Succeeded);
    let Details::Transaction(info) = status.details else {
        panic!("no transaction")
    };
    assert_eq!(info.provider_status.as_deref(), Some("refunded"));

    let outcome = host
        .call("xsolla", "main", full("999999"))
        .await
        .expect("outcome");
    assert_eq!(outcome.error.expect("error").kind, ErrorKind::NotFound);
    let outcome = host
        .call(
            "xsolla",
            "main",
            json!({"operation": "refund", "transaction_id": second}),
        )
        .await
        .expect("outcome");
    assert_eq!(
        outcome.error.expect("error").fields,
        vec!["reason".to_string()]
    );
}

#[tokio::test]
async fn reports_are_normalized_with_exact_amounts() {
    let (host, simulator, running) = setup().await;
    let card = simulator.add_saved_account(USER, "card", "Visa");
    let dispatched = host
        .call_full("xsolla", "main", charge(card, 1234, "KWD"))
        .await
        .expect("charge");
    let id = transaction_id(&dispatched.outcome);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let report = |name: &str, filters: Value| json!({"operation": "report", "report": name, "from": now - 86_400, "till": now + 86_400, "filters": filters});
    let split = |outcome: Outcome| {
        let Details::Report { records, raw_text } = outcome.details else {
            panic!("no report")
        };
        (records, raw_text)
    };

    for (name, filters) in [
        ("search", json!({"user_id": USER})),
        ("registry", json!({"project_id": "678"})),
        ("simple_search", json!({"user_id": USER})),
    ] {
        let outcome = host
            .call("xsolla", "main", report(name, filters))
            .await
            .expect(name);
        let (records, _) = split(outcome);
        assert_eq!(records.len(), 1, "{name}");
        assert_eq!(records[0].id.as_deref(), Some(id.as_str()));
        assert_eq!(records[0].amount, Some(money(1234, "KWD")));
        assert_eq!(records[0].status.as_deref(), Some("done"));
    }
    let outcome = host
        .call("xsolla", "main", report("search", json!({"format": "csv"})))
        .await
        .expect("csv");
    let (records, raw_text) = split(outcome);
    assert!(raw_text.expect("csv text").contains(",done,1.234,KWD,"));
    assert_eq!(records[0].amount, Some(money(1234, "KWD")));

    let details = json!({"operation": "report", "report": "transaction_details", "filters": {"transaction_id": id}});
    let (records, _) = split(host.call("xsolla", "main", details).await.expect("details"));
    assert_eq!(
        records[0].raw["transaction"]["external_id"],
        json!(dispatched.reference)
    );

    let (records, _) = split(
        host.call("xsolla", "main", report("payouts_breakdown", json!({})))
            .await
            .expect("breakdown"),
    );
    assert_eq!(records[0].amount, Some(money(1234, "KWD")));
    let transfers = json!({"operation": "report", "report": "transfers", "from": 1_767_225_600, "till": 1_769_903_999});
    let (records, _) = split(
        host.call("xsolla", "main", transfers)
            .await
            .expect("transfers"),
    );
    assert_eq!(records[0].amount, Some(money(152_050, "USD")));
    let reports = json!({"operation": "report", "report": "reports", "from": 1_767_225_600, "till": 1_769_903_999});
    let (records, _) = split(host.call("xsolla", "main", reports).await.expect("reports"));
    assert_eq!(records[0].id.as_deref(), Some("501"));
    assert_eq!(records[0].amount, Some(money(152_050, "USD")));

    // The simulator's 422 for a missing period names it; unknown report names never leave the host.
    let result = host
        .call(
            "xsolla",
            "main",
            json!({"operation": "report", "report": "transfers"}),
        )
        .await;
    let Err(DispatchError::Provider(error)) = &result else {
        panic!("{result:?}")
    };
    assert_eq!(
        error.fields,
        vec!["datetime_from".to_string(), "datetime_to".to_string()]
    );
    let calls = running.calls.all().len();
    let result = host
        .call("xsolla", "main", report("everything", json!({})))
        .await;
    assert!(
        matches!(
            result,
            Err(DispatchError::Provider(_) | DispatchError::InvalidCommand { .. })
        ),
        "{result:?}"
    );
    assert_eq!(running.calls.all().len(), calls);

    // Malformed and truncated answers are malformed-response errors, never panics.
    for fault in [
        Fault::TruncateBody,
        Fault::Body("<html>maintenance</html>".into()),
        Fault::Body(r#"[{"transaction": {"id": 1, "status": "done"}, "payment_details": {"payment": {"amount": 1.0001, "currency": "USD"}}}]"#.into()),
        Fault::Body("42".into()),
    ] {
        running.faults.push(fault.clone());
        let result = host.call("xsolla", "main", report("search", json!({}))).await;
        assert_eq!(provider_error(&result), Some(ErrorKind::MalformedResponse), "{fault:?}: {result:?}");
    }
    running.faults.push(Fault::Status(500, "oops".into()));
    running.faults.push(Fault::Status(500, "oops".into()));
    running.faults.push(Fault::Status(500, "oops".into()));
    let result = host
        .call(
            "xsolla",
            "main",
            json!({"operation": "status", "transaction_id": id}),
        )
        .await;
    assert_eq!(
        provider_error(&result),
        Some(ErrorKind::ProviderUnavailable)
    );
    running.faults.clear();
}

#[tokio::test]
async fn sandbox_chargeback_needs_a_sandbox_payment() {
    let (host, simulator, _running) = setup().await;
    let card = simulator.add_saved_account(USER, "card", "Visa");
    let live = transaction_id(
        &host
            .call("xsolla", "main", charge(card, 999, "USD"))
            .await
            .expect("charge"),
    );
    let test = transaction_id(
        &host
            .call("xsolla", "sandbox", charge(card, 999, "USD"))
            .await
            .expect("charge"),
    );
    let chargeback = |id: &str| json!({"operation": "sandbox_chargeback", "transaction_id": id});
    let result = host.call("xsolla", "main", chargeback(&live)).await;
    let Err(DispatchError::Provider(error)) = &result else {
        panic!("{result:?}")
    };
    assert_eq!(error.kind, ErrorKind::Declined);
    assert!(
        error
            .provider_message
            .as_deref()
            .is_some_and(|text| text.starts_with("Not test payment"))
    );
    let outcome = host
        .call("xsolla", "sandbox", chargeback(&test))
        .await
        .expect("chargeback");
    assert_eq!(outcome.status, OutcomeStatus::Succeeded);
    assert_eq!(
        simulator
            .transaction(test.parse().expect("id"))
            .expect("stored")
            .status,
        "refunded"
    );
    assert_eq!(
        provider_error(&host.call("xsolla", "sandbox", chargeback("1")).await),
        Some(ErrorKind::NotFound)
    );
}

#[tokio::test]
async fn webhooks_are_verified_on_the_raw_body() {
    let (host, simulator, _running) = setup().await;
    let card = simulator.add_saved_account(USER, "card", "Visa");
    let dispatched = host
        .call_full("xsolla", "main", charge(card, 1234, "KWD"))
        .await
        .expect("charge");
    let id: u64 = transaction_id(&dispatched.outcome).parse().expect("id");
    let deliver = |body: String, mode: SignatureMode| {
        let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
        if let Some(value) = simulator.webhook_authorization(&body, mode) {
            headers.push(("authorization".to_string(), value));
        }
        (headers, body)
    };

    let (headers, body) = deliver(
        simulator.payment_webhook_body(id).expect("body"),
        SignatureMode::Valid,
    );
    let outcome = host
        .webhook("xsolla", "main", headers, body.as_bytes())
        .await
        .expect("webhook");
    let Details::Webhook(result) = outcome.details else {
        panic!("no webhook result")
    };
    assert_eq!(result.reply.status, 204);
    let event = result.event.expect("event");
    assert!(event.verified);
    assert_eq!(event.event_type, "payment");
    assert_eq!(event.event_id, format!("xsolla:payment:{id}"));
    assert_eq!(event.reference, dispatched.reference);
    assert_eq!(event.amount, Some(money(1234, "KWD")));

    for mode in [SignatureMode::Wrong, SignatureMode::Missing] {
        let (headers, body) = deliver(simulator.payment_webhook_body(id).expect("body"), mode);
        let outcome = host
            .webhook("xsolla", "main", headers, body.as_bytes())
            .await
            .expect("webhook");
        let Details::Webhook(result) = outcome.details else {
            panic!("no webhook result")
        };
        assert_eq!(result.reply.status, 401, "{mode:?}");
        assert!(result.event.is_none());
        let reply: Value = serde_json::from_str(&result.reply.body).expect("json");
        assert_eq!(reply["error"]["code"], "INVALID_SIGNATURE");
    }
    // A signed body altered on the way: the signature no longer matches.
    let (headers, body) = deliver(
        simulator.payment_webhook_body(id).expect("body"),
        SignatureMode::Valid,
    );
    let tampered = body.replace("1.234", "9.999");
    let outcome = host
        .webhook("xsolla", "main", headers, tampered.as_bytes())
        .await
        .expect("webhook");
    let Details::Webhook(result) = outcome.details else {
        panic!("no webhook result")
    };
    assert_eq!(result.reply.status, 401);

    // Refund and partial refund notifications (amounts as numbers; the partial one's own amount).
    let (headers, body) = deliver(
        simulator.refund_webhook_body(id).expect("body"),
        SignatureMode::Valid,
    );
    let outcome = host
        .webhook("xsolla", "main", headers, body.as_bytes())
        .await
        .expect("webhook");
    let Details::Webhook(result) = outcome.details else {
        panic!("no webhook result")
    };
    assert_eq!(result.event.expect("event").event_type, "refund");
    let (headers, body) = deliver(
        simulator
            .partial_refund_webhook_body(id, &money(5, "KWD"))
            .expect("body"),
        SignatureMode::Valid,
    );
    let outcome = host
        .webhook("xsolla", "main", headers, body.as_bytes())
        .await
        .expect("webhook");
    let Details::Webhook(result) = outcome.details else {
        panic!("no webhook result")
    };
    let event = result.event.expect("event");
    assert_eq!(event.event_type, "partial_refund");
    // Xsolla documents no refunded-amount field in this event: the plugin reports none rather
    // than the purchase's total (the ledger holds the refund's own amount).
    assert_eq!(event.amount, None);

    // Signed but unreadable: 422 INVALID_PARAMETER; user validation: 204.
    let (headers, body) = deliver("{\"notification_type\":".to_string(), SignatureMode::Valid);
    let outcome = host
        .webhook("xsolla", "main", headers, body.as_bytes())
        .await
        .expect("webhook");
    let Details::Webhook(result) = outcome.details else {
        panic!("no webhook result")
    };
    assert_eq!(result.reply.status, 422);
    let (headers, body) = deliver(
        r#"{"notification_type":"user_validation","user":{"id":"user-1"}}"#.to_string(),
        SignatureMode::Valid,
    );
    let outcome = host
        .webhook("xsolla", "main", headers, body.as_bytes())
        .await
        .expect("webhook");
    let Details::Webhook(result) = outcome.details else {
        panic!("no webhook result")
    };
    assert_eq!(result.reply.status, 204);
}

#[tokio::test]
async fn secrets_never_reach_outcomes_errors_or_logs() {
    let (host, simulator, running) = setup().await;
    let credentials = simulator.credentials().clone();
    let card = simulator.add_saved_account(USER, "card", "Visa");
    let mut transcript = String::new();
    running.faults.push(Fault::Status(500, "oops".into()));
    for account in ["main", "wrong"] {
        for command in [
            charge(card, 100, "USD"),
            json!({"operation": "saved_accounts", "user_id": USER}),
            json!({"operation": "report", "report": "search"}),
        ] {
            transcript.push_str(&format!(
                "{:?}",
                host.call("xsolla", account, command).await
            ));
        }
    }
    transcript.push_str(&gatehouse_e2e::captured_logs());
    let basic_pair = basic_auth_pair(&credentials);
    assert_eq!(
        basic_auth_pair(&Credentials::default()),
        "MTIzNDU6c2ltLWFwaS1rZXktMGM5Zg=="
    );
    for secret in [
        credentials.api_key.as_str(),
        credentials.project_secret_key.as_str(),
        basic_pair.as_str(),
    ] {
        assert!(!transcript.contains(secret), "a secret leaked");
    }
}

/// The Base64 `merchant_id:api_key` of the Authorization header: a secret as much as the key.
fn basic_auth_pair(credentials: &Credentials) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let input = format!("{}:{}", credentials.merchant_id, credentials.api_key).into_bytes();
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let bytes = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let triple = (u32::from(bytes[0]) << 16) | (u32::from(bytes[1]) << 8) | u32::from(bytes[2]);
        for index in 0..4 {
            if index <= chunk.len() {
                out.push(char::from(
                    ALPHABET[((triple >> (18 - 6 * index)) & 63) as usize],
                ));
            } else {
                out.push('=');
            }
        }
    }
    out
}
