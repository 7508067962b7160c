//! Unit tests of the PayGateGlobal flows through the testkit: scripted answers, no sockets.

use gatehouse_plugin_api::testkit::{self, json_body, query_pairs};
use gatehouse_plugin_api::{Details, ErrorKind, HttpResponse, Method, OutcomeStatus};
use serde_json::json;

use crate::PayGateGlobal;

const BASE: &str = "http://paygate.test";
const TOKEN: &str = "15c15ac9-b802-48d8-9d26-d7e2338a18d2";

fn account() -> gatehouse_plugin_api::AccountConfig {
    testkit::account(BASE, &[], &[("auth_token", TOKEN)])
}

fn charge() -> gatehouse_plugin_api::Invocation {
    testkit::invocation(
        json!({"operation": "charge", "amount": {"minor_units": 500, "currency": "XOF"},
               "customer": {"phone": "+22890123456"}, "payment_method": "flooz",
               "description": "order 42"}),
        account(),
    )
}

fn ok(body: serde_json::Value) -> HttpResponse {
    HttpResponse::new(200, body.to_string())
}

#[test]
fn charge_builds_the_documented_pay_request_and_ends_pending() {
    let run = testkit::run::<PayGateGlobal>(
        &charge(),
        b"",
        [ok(json!({"tx_reference": "PG1", "status": 0}))],
    );
    let request = run.single_request();
    assert_eq!(request.method, Method::Post);
    assert_eq!(request.url, "http://paygate.test/api/v1/pay");
    assert!(
        request.retry_safe,
        "identifier deduplication makes resending safe"
    );
    assert_eq!(
        json_body(request),
        json!({"auth_token": TOKEN, "phone_number": "22890123456", "amount": 500,
               "identifier": "gh_test_reference", "network": "FLOOZ", "description": "order 42"})
    );
    let outcome = run.outcome();
    assert_eq!(outcome.status, OutcomeStatus::Pending);
    assert_eq!(outcome.provider_reference.as_deref(), Some("PG1"));
}

#[test]
fn charge_status_codes_map_to_outcomes() {
    let run = testkit::run::<PayGateGlobal>(&charge(), b"", [ok(json!({"status": 2}))]);
    assert_eq!(run.outcome().status, OutcomeStatus::Failed);
    assert_eq!(
        run.outcome().error.as_ref().map(|e| e.kind),
        Some(ErrorKind::Authentication)
    );

    let run = testkit::run::<PayGateGlobal>(&charge(), b"", [ok(json!({"status": 4}))]);
    assert_eq!(
        run.outcome().error.as_ref().map(|e| e.kind),
        Some(ErrorKind::InvalidRequest)
    );

    // 6: the identifier exists; the plugin asks v2/status what became of it.
    let run = testkit::run::<PayGateGlobal>(
        &charge(),
        b"",
        [
            ok(json!({"status": 6})),
            ok(json!({"tx_reference": "PG1", "status": 0, "payment_reference": "F1"})),
        ],
    );
    assert_eq!(run.requests[1].url, "http://paygate.test/api/v2/status");
    assert_eq!(
        json_body(&run.requests[1])["identifier"],
        "gh_test_reference"
    );
    assert_eq!(run.outcome().status, OutcomeStatus::Succeeded);
}

#[test]
fn charge_answers_that_may_hide_a_payment_are_unknown() {
    for response in [
        HttpResponse::new(502, "bad gateway"),
        HttpResponse::new(200, "{\"tx_ref"),
        HttpResponse::new(200, "<html>oops</html>"),
        ok(json!({"status": 99})),
        ok(json!({"status": 0})),
    ] {
        let run = testkit::run::<PayGateGlobal>(&charge(), b"", [response.clone()]);
        assert_eq!(run.outcome().status, OutcomeStatus::Unknown, "{response:?}");
    }
}

#[test]
fn charge_input_is_checked_before_any_request() {
    for (command, field) in [
        (
            json!({"operation": "charge", "amount": {"minor_units": 500, "currency": "USD"},
                "customer": {"phone": "90123456"}, "payment_method": "FLOOZ"}),
            "amount.currency",
        ),
        (
            json!({"operation": "charge", "amount": {"minor_units": 0, "currency": "XOF"},
                "customer": {"phone": "90123456"}, "payment_method": "FLOOZ"}),
            "amount.minor_units",
        ),
        (
            json!({"operation": "charge", "amount": {"minor_units": 5, "currency": "XOF"},
                "customer": {"phone": "12ab"}, "payment_method": "FLOOZ"}),
            "customer.phone",
        ),
        (
            json!({"operation": "charge", "amount": {"minor_units": 5, "currency": "XOF"},
                "customer": {"phone": "90123456"}, "payment_method": "MPESA"}),
            "payment_method",
        ),
        (
            json!({"operation": "charge", "amount": {"minor_units": 5, "currency": "XOF"},
                "payment_method": "TMONEY"}),
            "customer.phone",
        ),
    ] {
        let run = testkit::run::<PayGateGlobal>(&testkit::invocation(command, account()), b"", []);
        assert!(run.requests.is_empty());
        assert_eq!(run.error().kind, ErrorKind::InvalidRequest);
        assert_eq!(run.error().fields, vec![field.to_string()]);
    }
}

#[test]
fn payment_page_url_follows_method_two() {
    let invocation = testkit::invocation(
        json!({"operation": "payment_page", "amount": {"minor_units": 300, "currency": "XOF"},
               "description": "test", "return_url": "https://shop.example/done?x=1"}),
        account(),
    );
    let run = testkit::run::<PayGateGlobal>(&invocation, b"", []);
    let Details::PaymentPage { url, .. } = &run.outcome().details else {
        panic!("no page")
    };
    assert!(url.starts_with("http://paygate.test/v1/page?"), "{url}");
    let request = gatehouse_plugin_api::HttpRequest::get(url.clone());
    assert_eq!(
        query_pairs(&request),
        vec![
            ("token".to_string(), TOKEN.to_string()),
            ("amount".into(), "300".into()),
            ("description".into(), "test".into()),
            ("identifier".into(), "gh_test_reference".into()),
            ("url".into(), "https://shop.example/done?x=1".into()),
        ]
    );
}

#[test]
fn status_v1_and_v2_map_the_payment_table() {
    let by_tx = testkit::invocation(
        json!({"operation": "status", "transaction_id": "PG1"}),
        account(),
    );
    let by_identifier = testkit::invocation(
        json!({"operation": "status", "reference": "order-1"}),
        account(),
    );
    for (code, expected) in [
        (0, OutcomeStatus::Succeeded),
        (2, OutcomeStatus::Pending),
        (4, OutcomeStatus::Failed),
        (6, OutcomeStatus::Failed),
    ] {
        let run = testkit::run::<PayGateGlobal>(
            &by_tx,
            b"",
            [ok(json!({"tx_reference": "PG1", "status": code}))],
        );
        assert_eq!(
            run.single_request().url,
            "http://paygate.test/api/v1/status"
        );
        assert_eq!(json_body(run.single_request())["tx_reference"], "PG1");
        assert_eq!(run.outcome().status, expected);
        let run = testkit::run::<PayGateGlobal>(
            &by_identifier,
            b"",
            [ok(json!({"tx_reference": "PG1", "status": code}))],
        );
        assert_eq!(
            run.single_request().url,
            "http://paygate.test/api/v2/status"
        );
        assert_eq!(run.outcome().status, expected);
    }
    let run = testkit::run::<PayGateGlobal>(&by_tx, b"", [ok(json!({"status": "x"}))]);
    assert_eq!(run.error().kind, ErrorKind::MalformedResponse);
}

#[test]
fn balance_is_exact() {
    let invocation = testkit::invocation(json!({"operation": "balance"}), account());
    let run = testkit::run::<PayGateGlobal>(
        &invocation,
        b"",
        [ok(json!({"flooz": 15000, "tmoney": "2500"}))],
    );
    let Details::Balance { balances } = &run.outcome().details else {
        panic!("no balance")
    };
    assert_eq!(balances[0].amount.minor_units, 15000);
    assert_eq!(balances[1].amount.minor_units, 2500);
    let run =
        testkit::run::<PayGateGlobal>(&invocation, b"", [ok(json!({"flooz": 1.5, "tmoney": 0}))]);
    assert_eq!(run.error().kind, ErrorKind::MalformedResponse);
}

#[test]
fn callbacks_are_confirmed_with_the_status_api() {
    let invocation = testkit::invocation(json!({"operation": "webhook", "headers": []}), account());
    let body = json!({"tx_reference": "PG1", "identifier": "order-1", "payment_reference": "F1",
                      "amount": 500, "datetime": "2026-01-09 12:30:00", "payment_method": "FLOOZ",
                      "phone_number": "22890123456"})
    .to_string();
    let run = testkit::run::<PayGateGlobal>(
        &invocation,
        body.as_bytes(),
        [ok(json!({"tx_reference": "PG1", "status": 0}))],
    );
    assert_eq!(json_body(run.single_request())["identifier"], "order-1");
    let Details::Webhook(result) = &run.outcome().details else {
        panic!("no webhook")
    };
    let event = result.event.as_ref().expect("event");
    assert!(event.verified);
    assert_eq!(event.status, OutcomeStatus::Succeeded);

    // A forged callback: the provider knows another transaction under that identifier.
    let run = testkit::run::<PayGateGlobal>(
        &invocation,
        body.as_bytes(),
        [ok(json!({"tx_reference": "OTHER", "status": 0}))],
    );
    let Details::Webhook(result) = &run.outcome().details else {
        panic!("no webhook")
    };
    assert!(!result.event.as_ref().expect("event").verified);

    // Garbage is answered 400 without any request.
    for garbage in [&b"not json"[..], b"", b"{\"tx_reference\": []}", b"[1,2]"] {
        let run = testkit::run::<PayGateGlobal>(&invocation, garbage, []);
        assert!(run.requests.is_empty());
        let Details::Webhook(result) = &run.outcome().details else {
            panic!("no webhook")
        };
        assert_eq!(result.reply.status, 400);
    }
}

#[test]
fn unsupported_operations_are_refused() {
    let invocation = testkit::invocation(
        json!({"operation": "refund", "transaction_id": "1"}),
        account(),
    );
    let run = testkit::run::<PayGateGlobal>(&invocation, b"", []);
    assert_eq!(run.error().kind, ErrorKind::NotSupported);
}

#[test]
fn the_auth_token_never_appears_in_errors() {
    for response in [
        HttpResponse::new(500, "x"),
        ok(json!({"status": 2})),
        HttpResponse::new(200, "garbage"),
    ] {
        let run = testkit::run::<PayGateGlobal>(&charge(), b"", [response]);
        let text = format!("{:?}", run.result);
        assert!(!text.contains(TOKEN), "{text}");
    }
}

/// A real `/api/v2/status` answer as a PayGateGlobal client library published it (numeric
/// `tx_reference`, ISO `datetime`, `identifier`, `amount` and `phone_number`), with our own values.
fn real_shaped_status(
    tx_reference: u64,
    identifier: &str,
    amount: i64,
    status: i64,
) -> HttpResponse {
    ok(
        json!({"tx_reference": tx_reference, "identifier": identifier, "amount": amount,
              "payment_reference": "24081755031", "payment_method": "T-Money",
              "datetime": "2026-02-11T08:15:42.000Z", "phone_number": "22891234567",
              "status": status}),
    )
}

fn callback(tx_reference: &str, identifier: &str, amount: &str) -> Vec<u8> {
    format!(
        r#"{{"tx_reference": {tx_reference}, "identifier": "{identifier}", "payment_reference": "24081755031",
            "amount": {amount}, "datetime": "2026-02-11T08:15:42.000Z", "payment_method": "T-Money",
            "phone_number": "22891234567"}}"#
    )
    .into_bytes()
}

fn webhook_event(run: &testkit::FlowRun) -> gatehouse_plugin_api::WebhookEvent {
    let Details::Webhook(result) = &run.outcome().details else {
        panic!("no webhook: {:?}", run.result)
    };
    result.event.clone().expect("an event")
}

#[test]
fn the_real_v2_status_shape_is_read() {
    let invocation = testkit::invocation(
        json!({"operation": "status", "reference": "order-9"}),
        account(),
    );
    let run = testkit::run::<PayGateGlobal>(
        &invocation,
        b"",
        [real_shaped_status(4_671_135, "order-9", 750, 0)],
    );
    let outcome = run.outcome();
    assert_eq!(outcome.status, OutcomeStatus::Succeeded);
    assert_eq!(outcome.provider_reference.as_deref(), Some("4671135"));
    assert_eq!(outcome.amount.map(|amount| amount.minor_units), Some(750));
    let Details::Transaction(info) = &outcome.details else {
        panic!("no transaction")
    };
    assert_eq!(info.reference.as_deref(), Some("order-9"));
    assert_eq!(info.date.as_deref(), Some("2026-02-11T08:15:42.000Z"));
    assert_eq!(info.payment_method.as_deref(), Some("T-Money"));
}

#[test]
fn a_callback_is_believed_only_when_the_status_api_states_the_same_amount() {
    let invocation = testkit::invocation(json!({"operation": "webhook", "headers": []}), account());
    // Numeric and string references alike, and the amount the status API states.
    for reference in ["4671135", "\"4671135\""] {
        let run = testkit::run::<PayGateGlobal>(
            &invocation,
            &callback(reference, "order-9", "750"),
            [real_shaped_status(4_671_135, "order-9", 750, 0)],
        );
        let event = webhook_event(&run);
        assert!(event.verified, "{reference}");
        assert_eq!(event.amount.map(|amount| amount.minor_units), Some(750));
        assert_eq!(run.outcome().status, OutcomeStatus::Succeeded);
    }
    // The same transaction, but the callback claims more than PayGateGlobal says was paid.
    for claimed in ["75000", "751", "749", "\"7500\""] {
        let run = testkit::run::<PayGateGlobal>(
            &invocation,
            &callback("4671135", "order-9", claimed),
            [real_shaped_status(4_671_135, "order-9", 750, 0)],
        );
        let event = webhook_event(&run);
        assert!(!event.verified, "claimed {claimed}");
        assert_eq!(event.amount, None, "an unconfirmed amount is not reported");
        assert_eq!(event.status, OutcomeStatus::Unknown);
        assert_eq!(run.outcome().status, OutcomeStatus::Failed);
        assert_eq!(
            run.outcome().error.as_ref().map(|error| error.kind),
            Some(ErrorKind::Authentication),
            "claimed {claimed}"
        );
        assert_eq!(event.raw["claimed_amount"], claimed.trim_matches('"'));
    }
}

#[test]
fn a_status_of_anything_but_a_payment_is_refused_before_any_request() {
    for of in ["refund", "affiliate_payout"] {
        let invocation = testkit::invocation(
            json!({"operation": "status", "reference": "order-9", "of": of}),
            account(),
        );
        let run = testkit::run::<PayGateGlobal>(&invocation, b"", []);
        assert!(run.requests.is_empty());
        assert_eq!(run.error().kind, ErrorKind::NotSupported, "{of}");
    }
}

#[test]
fn an_echoed_token_is_removed_from_error_texts() {
    let echo = format!("bad request: {{\"auth_token\": \"{TOKEN}\"}}");
    for response in [
        HttpResponse::new(400, echo.clone()),
        HttpResponse::new(503, echo),
    ] {
        let run = testkit::run::<PayGateGlobal>(&charge(), b"", [response]);
        let text = serde_json::to_string(run.outcome()).expect("serializes");
        assert!(!text.contains(TOKEN), "{text}");
        assert!(text.contains("***"), "{text}");
    }
}
