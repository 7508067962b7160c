//! Unit tests of the Template Pay flows through the testkit: scripted answers, no host, no sockets.
//!
//! Each test runs the flow through the same `extern "C"` entry points the host calls, so what is
//! checked here is exactly what crosses the ABI.

use gatehouse_plugin_api::testkit::{self, json_body};
use gatehouse_plugin_api::{
    AccountConfig, Details, ErrorKind, HttpResponse, Invocation, Method, OutcomeStatus, Plugin,
};
use serde_json::json;

use crate::{PROVIDER, TemplatePlugin};

const BASE: &str = "http://provider.test";
/// A distinctive value, so a test can tell it apart in any text it ends up in.
const API_KEY: &str = "sk_test_51Hc0nf1dent1al";

fn account() -> AccountConfig {
    testkit::account(BASE, &[], &[("api_key", API_KEY)])
}

fn balance() -> Invocation {
    testkit::invocation(json!({"operation": "balance"}), account())
}

fn charge() -> Invocation {
    testkit::invocation(
        json!({"operation": "charge", "amount": {"minor_units": 1995, "currency": "USD"},
               "description": "order 42", "customer": {"email": "ada@example.com"}}),
        account(),
    )
}

fn ok(body: serde_json::Value) -> HttpResponse {
    HttpResponse::new(200, body.to_string()).with_header("content-type", "application/json")
}

fn charged(status: &str) -> HttpResponse {
    ok(json!({"id": "ch_1", "status": status, "amount": "19.95", "currency": "USD"}))
}

fn provider_error(status: u16, code: &str, message: &str) -> HttpResponse {
    HttpResponse::new(
        status,
        json!({"error": {"code": code, "message": message}}).to_string(),
    )
}

#[test]
fn manifest_is_valid_and_marks_the_key_secret() {
    let manifest = TemplatePlugin::manifest();
    assert_eq!(manifest.validate(), Ok(()));
    assert_eq!(manifest.provider, PROVIDER);
    assert_eq!(manifest.plugin_version, env!("CARGO_PKG_VERSION"));
    let secrets: Vec<&str> = manifest
        .config_keys
        .iter()
        .filter(|key| key.secret)
        .map(|key| key.name.as_str())
        .collect();
    assert_eq!(secrets, vec!["api_key"]);
}

#[test]
fn balance_sends_an_authorized_get_and_reads_exact_amounts() {
    let run = testkit::run::<TemplatePlugin>(
        &balance(),
        b"",
        [ok(json!({"balances": [
            {"wallet": "main", "amount": "125.50", "currency": "USD"},
            {"wallet": "yen", "amount": "1500", "currency": "JPY"},
            {"wallet": "dinar", "amount": "0.125", "currency": "KWD"}
        ]}))],
    );
    let request = run.single_request();
    assert_eq!(request.method, Method::Get);
    assert_eq!(request.url, "http://provider.test/v1/balance");
    assert!(request.retry_safe, "a read is safe to resend");
    assert!(
        request
            .headers
            .contains(&("Authorization".into(), format!("Bearer {API_KEY}")))
    );
    assert!(
        request
            .sensitive_headers
            .contains(&"authorization".to_string()),
        "the key is never logged"
    );
    assert!(!request.url.contains(API_KEY));

    let Details::Balance { balances } = &run.outcome().details else {
        panic!("no balance in {:?}", run.outcome())
    };
    let amounts: Vec<(&str, i64, &str)> = balances
        .iter()
        .map(|entry| {
            (
                entry.name.as_str(),
                entry.amount.minor_units,
                entry.amount.currency.code(),
            )
        })
        .collect();
    assert_eq!(
        amounts,
        vec![
            ("main", 12550, "USD"),
            ("yen", 1500, "JPY"),
            ("dinar", 125, "KWD")
        ]
    );
}

#[test]
fn merchant_id_is_sent_when_configured() {
    let account = testkit::account(BASE, &[("merchant_id", "m_7")], &[("api_key", API_KEY)]);
    let invocation = testkit::invocation(json!({"operation": "balance"}), account);
    let run = testkit::run::<TemplatePlugin>(&invocation, b"", [ok(json!({"balances": []}))]);
    assert!(
        run.single_request()
            .headers
            .contains(&("Merchant-Id".into(), "m_7".into()))
    );
}

#[test]
fn balance_errors_map_to_their_kinds() {
    for (response, kind, code) in [
        (
            provider_error(401, "invalid_key", "The API key is not valid"),
            ErrorKind::Authentication,
            Some("invalid_key"),
        ),
        (
            provider_error(403, "forbidden", "No access"),
            ErrorKind::Authentication,
            Some("forbidden"),
        ),
        (
            provider_error(429, "rate_limited", "Slow down"),
            ErrorKind::RateLimited,
            Some("rate_limited"),
        ),
        (
            provider_error(404, "not_found", "No such merchant"),
            ErrorKind::NotFound,
            Some("not_found"),
        ),
        (
            HttpResponse::new(500, "Internal Server Error"),
            ErrorKind::ProviderUnavailable,
            None,
        ),
        (
            HttpResponse::new(503, "<html>maintenance</html>"),
            ErrorKind::ProviderUnavailable,
            None,
        ),
    ] {
        let run = testkit::run::<TemplatePlugin>(&balance(), b"", [response.clone()]);
        let error = run.error();
        assert_eq!(error.kind, kind, "{response:?}");
        assert_eq!(error.provider_code.as_deref(), code, "{response:?}");
        assert!(
            error.message.contains(&response.status.to_string()),
            "the message names the status"
        );
    }
}

#[test]
fn malformed_and_truncated_balance_answers_are_malformed_response() {
    for body in [
        &b""[..],
        b"{}",
        b"{\"balances\": [{\"wallet\": \"main\", \"amo",
        b"<html>oops</html>",
        b"\xff\xfe\x00garbage",
        br#"{"balances": [{"wallet": "main", "amount": 125.5, "currency": "USD"}]}"#,
        br#"{"balances": [{"wallet": "main", "amount": "125.505", "currency": "USD"}]}"#,
        br#"{"balances": [{"wallet": "main", "amount": "1", "currency": "DOLLARS"}]}"#,
        br#"{"balances": {"main": "1"}}"#,
    ] {
        let run = testkit::run::<TemplatePlugin>(
            &balance(),
            b"",
            [HttpResponse::new(200, body.to_vec())],
        );
        assert_eq!(
            run.error().kind,
            ErrorKind::MalformedResponse,
            "{}",
            String::from_utf8_lossy(body)
        );
        assert!(!run.error().message.is_empty());
    }
}

#[test]
fn charge_sends_the_documented_request_with_the_reference_as_idempotency_key() {
    let run = testkit::run::<TemplatePlugin>(&charge(), b"", [charged("succeeded")]);
    let request = run.single_request();
    assert_eq!(request.method, Method::Post);
    assert_eq!(request.url, "http://provider.test/v1/charges");
    assert!(
        request.retry_safe,
        "the idempotency key makes resending safe"
    );
    assert!(
        request
            .headers
            .contains(&("Idempotency-Key".into(), "gh_test_reference".into()))
    );
    assert!(
        request
            .sensitive_headers
            .contains(&"authorization".to_string())
    );
    assert_eq!(
        json_body(request),
        json!({"amount": "19.95", "currency": "USD", "reference": "gh_test_reference",
               "description": "order 42", "customer_email": "ada@example.com"})
    );
    let outcome = run.outcome();
    assert_eq!(outcome.status, OutcomeStatus::Succeeded);
    assert_eq!(outcome.provider_reference.as_deref(), Some("ch_1"));
    assert_eq!(outcome.amount.map(|amount| amount.minor_units), Some(1995));
}

#[test]
fn charge_statuses_map_to_outcomes() {
    let run = testkit::run::<TemplatePlugin>(&charge(), b"", [charged("pending")]);
    assert_eq!(run.outcome().status, OutcomeStatus::Pending);

    let declined = ok(
        json!({"id": "ch_2", "status": "declined", "amount": "19.95", "currency": "USD",
                             "decline_code": "insufficient_funds", "decline_message": "Not enough money"}),
    );
    let run = testkit::run::<TemplatePlugin>(&charge(), b"", [declined]);
    let outcome = run.outcome();
    assert_eq!(outcome.status, OutcomeStatus::Failed);
    let error = outcome.error.as_ref().expect("a declined charge says why");
    assert_eq!(error.kind, ErrorKind::Declined);
    assert_eq!(error.provider_code.as_deref(), Some("insufficient_funds"));
    assert_eq!(error.provider_message.as_deref(), Some("Not enough money"));
}

#[test]
fn charge_refusals_are_failed() {
    for (response, kind) in [
        (
            provider_error(400, "invalid_amount", "Amount too small"),
            ErrorKind::InvalidRequest,
        ),
        (
            provider_error(422, "invalid_currency", "No such currency"),
            ErrorKind::InvalidRequest,
        ),
        (
            provider_error(401, "invalid_key", "The API key is not valid"),
            ErrorKind::Authentication,
        ),
        (
            provider_error(402, "card_declined", "Declined"),
            ErrorKind::Declined,
        ),
        (
            provider_error(429, "rate_limited", "Slow down"),
            ErrorKind::RateLimited,
        ),
    ] {
        let run = testkit::run::<TemplatePlugin>(&charge(), b"", [response.clone()]);
        let outcome = run.outcome();
        assert_eq!(outcome.status, OutcomeStatus::Failed, "{response:?}");
        assert_eq!(
            outcome.error.as_ref().map(|error| error.kind),
            Some(kind),
            "{response:?}"
        );
    }
}

#[test]
fn charge_answers_that_may_hide_a_charge_are_unknown() {
    for response in [
        HttpResponse::new(500, "Internal Server Error"),
        HttpResponse::new(502, "<html>bad gateway</html>"),
        HttpResponse::new(503, ""),
        provider_error(408, "timeout", "Request timeout"),
        provider_error(
            409,
            "idempotency_conflict",
            "This key was used with another body",
        ),
        HttpResponse::new(200, ""),
        HttpResponse::new(200, "{}"),
        HttpResponse::new(200, "{\"id\": \"ch_1\", \"sta"),
        HttpResponse::new(201, "\u{0}\u{1}garbage"),
        charged("processing_maybe"),
        ok(json!({"id": "ch_1", "status": "succeeded", "amount": "19.9", "currency": "USD"})),
        ok(json!({"id": "ch_1", "status": "succeeded", "amount": "19.95", "currency": "EUR"})),
        ok(json!({"id": "ch_1", "status": "succeeded", "amount": 19.95, "currency": "USD"})),
    ] {
        let run = testkit::run::<TemplatePlugin>(&charge(), b"", [response.clone()]);
        let outcome = run.outcome();
        assert_eq!(outcome.status, OutcomeStatus::Unknown, "{response:?}");
        let error = outcome.error.as_ref().expect("an unknown outcome says why");
        assert!(!error.message.is_empty());
    }
}

#[test]
fn charge_input_is_checked_before_any_request() {
    for (command, field) in [
        (
            json!({"operation": "charge", "amount": {"minor_units": 0, "currency": "USD"}}),
            "amount.minor_units",
        ),
        (
            json!({"operation": "charge", "amount": {"minor_units": -5, "currency": "USD"}}),
            "amount.minor_units",
        ),
    ] {
        let run = testkit::run::<TemplatePlugin>(&testkit::invocation(command, account()), b"", []);
        assert!(run.requests.is_empty());
        assert_eq!(run.error().kind, ErrorKind::InvalidRequest);
        assert_eq!(run.error().fields, vec![field.to_string()]);
    }

    let saved = testkit::invocation(
        json!({"operation": "charge", "amount": {"minor_units": 100, "currency": "USD"}, "saved_account_id": "sa_1"}),
        account(),
    );
    let run = testkit::run::<TemplatePlugin>(&saved, b"", []);
    assert!(run.requests.is_empty());
    assert_eq!(run.error().kind, ErrorKind::NotSupported);

    let mut without_reference = charge();
    without_reference.reference = None;
    let run = testkit::run::<TemplatePlugin>(&without_reference, b"", []);
    assert!(run.requests.is_empty());
    assert_eq!(run.error().kind, ErrorKind::InvalidRequest);
}

#[test]
fn a_missing_key_is_named_not_guessed() {
    let invocation = testkit::invocation(
        json!({"operation": "balance"}),
        testkit::account(BASE, &[], &[]),
    );
    let run = testkit::run::<TemplatePlugin>(&invocation, b"", []);
    assert!(run.requests.is_empty());
    assert_eq!(run.error().kind, ErrorKind::InvalidRequest);
    assert_eq!(run.error().fields, vec!["api_key".to_string()]);
}

#[test]
fn the_key_never_reaches_an_error_or_an_outcome() {
    // Providers and proxies sometimes echo what they were sent.
    let echoing = [
        provider_error(401, "invalid_key", &format!("The key {API_KEY} is revoked")),
        provider_error(400, API_KEY, "bad request"),
        HttpResponse::new(500, format!("upstream failed for Bearer {API_KEY}")),
        HttpResponse::new(200, format!("{{\"balances\": \"{API_KEY}\"}}")),
        HttpResponse::new(
            200,
            format!(
                "{{\"id\": \"ch_1\", \"status\": \"{API_KEY}\", \"amount\": \"19.95\", \"currency\": \"USD\"}}"
            ),
        ),
    ];
    for invocation in [balance(), charge()] {
        for response in &echoing {
            let run = testkit::run::<TemplatePlugin>(&invocation, b"", [response.clone()]);
            let text = match &run.result {
                Ok(outcome) => serde_json::to_string(outcome).expect("outcome serializes"),
                Err(error) => serde_json::to_string(error).expect("error serializes"),
            };
            assert!(
                !text.contains(API_KEY),
                "{} echoed the key: {text}",
                invocation.command.operation()
            );
        }
    }
    // The provider's words are kept, with the key replaced.
    let run = testkit::run::<TemplatePlugin>(&balance(), b"", [echoing[0].clone()]);
    assert_eq!(
        run.error().provider_message.as_deref(),
        Some("The key *** is revoked")
    );
    // Long provider text is cut to length after the key is removed, so the cut cannot leave a
    // piece of the key behind.
    let long = format!("{}{API_KEY} and more", "x".repeat(500));
    let run = testkit::run::<TemplatePlugin>(&balance(), b"", [HttpResponse::new(500, long)]);
    let kept = run.error().provider_message.clone().unwrap_or_default();
    assert!(
        kept.contains("***") && !kept.contains(&API_KEY[..6]),
        "{kept}"
    );
    // Debug output of everything the plugin handles hides the key as well.
    assert!(!format!("{:?}", charge()).contains(API_KEY));
}

#[test]
fn unsupported_operations_are_refused() {
    let invocation = testkit::invocation(
        json!({"operation": "refund", "transaction_id": "ch_1"}),
        account(),
    );
    let run = testkit::run::<TemplatePlugin>(&invocation, b"", []);
    assert!(run.requests.is_empty());
    assert_eq!(run.error().kind, ErrorKind::NotSupported);
}
