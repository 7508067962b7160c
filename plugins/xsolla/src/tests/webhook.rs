use gatehouse_plugin_api::testkit;
use gatehouse_plugin_api::{Details, ErrorKind, OutcomeStatus, WebhookResult};
use serde_json::json;

use super::*;
use crate::transformers::webhook::signature_of;

/// The payment message of the SDK's unit test (providers.md).
const PAYMENT: &str = r#"{"notification_type":"payment",
 "purchase":{"virtual_currency":{"name":"Coins","quantity":10,"currency":"USD","amount":100},
             "checkout":{"currency":"USD","amount":50},
             "total":{"currency":"USD","amount":200}},
 "user":{"ip":"127.0.0.1","phone":"18777976552","email":"support@xsolla.com","id":"1234567","name":"Xsolla User","country":"US"},
 "transaction":{"id":1,"external_id":1,"payment_date":"2014-09-24T20:38:16+04:00","payment_method":1,"dry_run":1,"agreement":1},
 "payment_details":{"payment":{"currency":"USD","amount":230},"vat":{"currency":"USD","amount":0},
                    "payout_currency_rate":1,"payout":{"currency":"USD","amount":200},
                    "xsolla_fee":{"currency":"USD","amount":10},"payment_method_fee":{"currency":"USD","amount":20}},
 "custom_parameters":{"parameter1":"value1"}}"#;

/// Shaped like xsolla-sdk-php's partial-refund message test
/// (`tests/Unit/Webhook/Message/PartialRefundMessageTest.php`), with values of our own: a
/// purchase whose checkout is 80.00 EUR, and `refund_details` holding only a code and a reason.
/// Nothing in it says how much was refunded.
const PARTIAL_REFUND_LIKE_THE_SDK: &str = r#"{"notification_type":"partial_refund",
 "purchase":{"virtual_currency":{"name":"Gems","quantity":40,"currency":"EUR","amount":80},
             "subscription":{"plan_id":3,"subscription_id":"77","date_create":"2025-03-02T10:00:00+01:00","currency":"EUR","amount":4.99},
             "checkout":{"currency":"EUR","amount":80},
             "virtual_items":{"items":[{"sku":"gem_pack","amount":1}],"currency":"EUR","amount":80},
             "total":{"currency":"EUR","amount":160}},
 "user":{"ip":"192.0.2.10","email":"player@example.org","id":"p-42","name":"A Player","country":"FR"},
 "transaction":{"id":90210,"external_id":"gh_0123456789abcdef0123456789abcdef","dry_run":0,"agreement":1},
 "refund_details":{"code":3,"reason":"Partial refund requested by the game"},
 "payment_details":{"xsolla_fee":{"currency":"EUR","amount":"4"},"payout":{"currency":"EUR","amount":"72"},
                    "payment_method_fee":{"currency":"EUR","amount":"4"},"payment":{"currency":"EUR","amount":"80"}},
 "custom_parameters":{"order":"o-1"}}"#;

#[test]
fn a_partial_refund_reports_no_amount_xsolla_did_not_state() {
    let outcome = deliver(
        PARTIAL_REFUND_LIKE_THE_SDK,
        signed(PARTIAL_REFUND_LIKE_THE_SDK),
    );
    assert_eq!(outcome.status, OutcomeStatus::Succeeded);
    let result = result(&outcome);
    assert_eq!(result.reply.status, 204);
    let event = result.event.as_ref().expect("an event");
    assert!(event.verified);
    assert_eq!(event.event_type, "partial_refund");
    assert_eq!(event.provider_reference.as_deref(), Some("90210"));
    assert_eq!(
        event.reference.as_deref(),
        Some("gh_0123456789abcdef0123456789abcdef")
    );
    // Not the checkout (80.00), not the total (160.00), not the payment: nothing.
    assert_eq!(event.amount, None, "{event:?}");
    assert_eq!(outcome.amount, None);
    assert_eq!(
        event.raw["refund_details"]["reason"],
        "Partial refund requested by the game"
    );
    // A full refund of the same purchase does report the purchase amount.
    let full = PARTIAL_REFUND_LIKE_THE_SDK.replace("\"partial_refund\"", "\"refund\"");
    let full_event = result_event(&deliver(&full, signed(&full)));
    assert_eq!(
        full_event.amount.map(|amount| amount.minor_units),
        Some(8000)
    );
}

fn result_event(outcome: &gatehouse_plugin_api::Outcome) -> gatehouse_plugin_api::WebhookEvent {
    result(outcome).event.clone().expect("an event")
}

fn refund_body(kind: &str, amount: &str) -> String {
    format!(
        r#"{{"notification_type":"{kind}","transaction":{{"id":555001,"external_id":"gh_ref","dry_run":0}},
            "purchase":{{"checkout":{{"currency":"KWD","amount":{amount}}}}},
            "payment_details":{{"payment":{{"currency":"KWD","amount":"12.345"}}}},
            "refund_details":{{"code":1,"reason":"Cancellation by the user request"}}}}"#
    )
}

fn deliver(body: &str, headers: Vec<(&str, String)>) -> gatehouse_plugin_api::Outcome {
    let headers: Vec<(String, String)> = headers
        .into_iter()
        .map(|(name, value)| (name.to_string(), value))
        .collect();
    let invocation = testkit::invocation(
        json!({"operation": "webhook", "headers": headers}),
        account(),
    );
    let run = testkit::run::<crate::Xsolla>(&invocation, body.as_bytes(), []);
    assert!(
        run.requests.is_empty(),
        "webhooks are answered without calling Xsolla"
    );
    run.outcome().clone()
}

fn signed(body: &str) -> Vec<(&'static str, String)> {
    vec![
        ("content-type", "application/json".into()),
        (
            "authorization",
            format!(
                "Signature {}",
                signature_of(body.as_bytes(), PROJECT_SECRET)
            ),
        ),
    ]
}

fn result(outcome: &gatehouse_plugin_api::Outcome) -> &WebhookResult {
    let Details::Webhook(result) = &outcome.details else {
        panic!("no webhook result: {outcome:?}")
    };
    result
}

#[test]
fn a_signed_payment_is_verified_and_answered_204() {
    let outcome = deliver(PAYMENT, signed(PAYMENT));
    assert_eq!(outcome.status, OutcomeStatus::Succeeded);
    let result = result(&outcome);
    assert_eq!(result.reply.status, 204);
    assert!(result.reply.body.is_empty());
    let event = result.event.as_ref().expect("event");
    assert!(event.verified);
    assert_eq!(event.event_type, "payment");
    assert_eq!(event.event_id, "xsolla:payment:1");
    assert_eq!(event.status, OutcomeStatus::Succeeded);
    assert_eq!(event.provider_reference.as_deref(), Some("1"));
    assert_eq!(event.reference.as_deref(), Some("1"));
    assert_eq!(
        event
            .amount
            .map(|amount| (amount.minor_units, amount.currency.code())),
        Some((5000, "USD"))
    );
    assert_eq!(event.raw["custom_parameters"]["parameter1"], "value1");
    assert_eq!(event.raw["gatehouse_test_payment"], true);
}

#[test]
fn refunds_with_string_amounts_and_partial_refunds_are_parsed() {
    let body = refund_body("refund", "\"12.345\"");
    let outcome = deliver(&body, signed(&body));
    let event = result(&outcome).event.clone().expect("event");
    assert_eq!(event.event_type, "refund");
    assert_eq!(event.event_id, "xsolla:refund:555001");
    assert_eq!(event.reference.as_deref(), Some("gh_ref"));
    assert_eq!(event.amount.map(|amount| amount.minor_units), Some(12_345));
    assert_eq!(event.raw["gatehouse_test_payment"], false);

    let first = refund_body("partial_refund", "1.5");
    let second = refund_body("partial_refund", "2");
    let first_event = result(&deliver(&first, signed(&first)))
        .event
        .clone()
        .expect("event");
    let replay = result(&deliver(&first, signed(&first)))
        .event
        .clone()
        .expect("event");
    let second_event = result(&deliver(&second, signed(&second)))
        .event
        .clone()
        .expect("event");
    assert_eq!(first_event.event_type, "partial_refund");
    assert!(
        first_event
            .event_id
            .starts_with("xsolla:partial_refund:555001:")
    );
    assert_eq!(
        first_event.event_id, replay.event_id,
        "a replay deduplicates"
    );
    assert_ne!(
        first_event.event_id, second_event.event_id,
        "two partial refunds are two events"
    );
    // The partial refund's purchase amount is the purchase's, not what went back: not reported.
    assert_eq!(first_event.amount, None);

    // Zero-decimal currencies, numbers and strings alike.
    let body = r#"{"notification_type":"payment","transaction":{"id":7},"purchase":{"checkout":{"currency":"JPY","amount":"500"}}}"#;
    let event = result(&deliver(body, signed(body)))
        .event
        .clone()
        .expect("event");
    assert_eq!(event.amount.map(|amount| amount.minor_units), Some(500));
}

#[test]
fn a_wrong_or_missing_signature_is_refused_with_invalid_signature() {
    let wrong = vec![(
        "authorization",
        format!(
            "Signature {}",
            signature_of(PAYMENT.as_bytes(), "not-the-secret")
        ),
    )];
    let tampered_body = PAYMENT.replace("\"amount\":50", "\"amount\":5");
    for (body, headers) in [
        (PAYMENT.to_string(), wrong),
        (tampered_body, signed(PAYMENT)),
        (PAYMENT.to_string(), vec![]),
        (
            PAYMENT.to_string(),
            vec![("authorization", "Basic abc".to_string())],
        ),
        (
            PAYMENT.to_string(),
            vec![("authorization", "Signature 1234".to_string())],
        ),
        (PAYMENT.to_string(), vec![("authorization", String::new())]),
    ] {
        let outcome = deliver(&body, headers.clone());
        assert_eq!(outcome.status, OutcomeStatus::Failed, "{headers:?}");
        let error = outcome.error.as_ref().expect("error");
        assert_eq!(
            error.kind,
            ErrorKind::InvalidRequest,
            "never authentication: that would pause the account"
        );
        assert_eq!(error.provider_code.as_deref(), Some("INVALID_SIGNATURE"));
        let result = result(&outcome);
        assert!(result.event.is_none(), "no event from an unverified body");
        assert_eq!(result.reply.status, 401);
        let reply: serde_json::Value =
            serde_json::from_str(&result.reply.body).expect("json reply");
        assert_eq!(reply["error"]["code"], "INVALID_SIGNATURE");
        assert!(reply["error"]["message"].is_string());
    }
}

#[test]
fn signed_but_unusable_bodies_get_422() {
    for (body, code) in [
        ("not json", "INVALID_PARAMETER"),
        ("", "INVALID_PARAMETER"),
        ("[1,2]", "INVALID_PARAMETER"),
        (r#"{"transaction":{"id":1}}"#, "INVALID_PARAMETER"),
        (
            r#"{"notification_type":"payment","transaction":{}}"#,
            "INVALID_PARAMETER",
        ),
        (
            r#"{"notification_type":"payment","transaction":{"id":1},"purchase":{"checkout":{"currency":"USD","amount":1.001}}}"#,
            "INCORRECT_AMOUNT",
        ),
        (
            r#"{"notification_type":"refund","transaction":{"id":1},"purchase":{"checkout":{"currency":"USD","amount":"ten"}}}"#,
            "INCORRECT_AMOUNT",
        ),
    ] {
        let outcome = deliver(body, signed(body));
        assert_eq!(outcome.status, OutcomeStatus::Failed, "{body}");
        assert_eq!(
            outcome
                .error
                .as_ref()
                .and_then(|error| error.provider_code.as_deref()),
            Some(code)
        );
        let result = result(&outcome);
        assert_eq!(result.reply.status, 422);
        assert!(result.event.is_none());
        let reply: serde_json::Value =
            serde_json::from_str(&result.reply.body).expect("json reply");
        assert_eq!(reply["error"]["code"], code);
    }
    let invalid_utf8: &[u8] = &[0x7b, 0xff, 0x7d];
    let signature = format!("Signature {}", signature_of(invalid_utf8, PROJECT_SECRET));
    let invocation = testkit::invocation(
        json!({"operation": "webhook", "headers": [["authorization", signature]]}),
        account(),
    );
    let run = testkit::run::<crate::Xsolla>(&invocation, invalid_utf8, []);
    assert_eq!(result(run.outcome()).reply.status, 422);
}

#[test]
fn user_validation_and_other_notifications_are_acknowledged() {
    for body in [
        r#"{"notification_type":"user_validation","settings":{"project_id":678},"user":{"id":"user-1"}}"#,
        r#"{"notification_type":"create_subscription","subscription":{"id":1}}"#,
    ] {
        let outcome = deliver(body, signed(body));
        assert_eq!(outcome.status, OutcomeStatus::Succeeded);
        let result = result(&outcome);
        assert_eq!(result.reply.status, 204);
        assert!(result.event.is_none());
    }
}

#[test]
fn a_missing_project_secret_key_answers_500_so_xsolla_retries() {
    let mut account = account();
    account.secrets.remove("project_secret_key");
    let invocation = testkit::invocation(json!({"operation": "webhook", "headers": []}), account);
    let run = testkit::run::<crate::Xsolla>(&invocation, PAYMENT.as_bytes(), []);
    let result = result(run.outcome());
    assert_eq!(result.reply.status, 500);
    assert!(result.event.is_none());
}
