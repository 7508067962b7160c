use gatehouse_plugin_api::testkit::{self, json_body};
use gatehouse_plugin_api::{Details, ErrorKind, Method, OutcomeStatus};
use serde_json::json;

use super::*;

fn page_command(minor_units: i64, currency: &str) -> serde_json::Value {
    json!({"operation": "payment_page", "amount": {"minor_units": minor_units, "currency": currency},
           "description": "100 gems", "customer": {"id": "user-1", "name": "Ann", "email": "ann@example.com", "country": "US"},
           "return_url": "https://game.example/done", "extra": {"language": "en", "custom_parameters": {"level": 3}}})
}

#[test]
fn create_token_sends_the_documented_body_and_returns_the_paystation_url() {
    let run = run(
        page_command(999, "USD"),
        [ok(r#"{"token": "tok_AbC-123"}"#)],
    );
    let request = run.single_request();
    assert_eq!(request.method, Method::Post);
    assert_eq!(
        request.url,
        "http://xsolla.test/merchant/v2/merchants/12345/token"
    );
    assert!(request.retry_safe);
    assert_basic_auth(request);
    assert_eq!(header(request, "content-type"), Some("application/json"));
    assert!(
        body_text(request).contains(r#""amount":9.99"#),
        "{}",
        body_text(request)
    );
    assert_eq!(
        json_body(request),
        json!({
            "user": {"id": {"value": "user-1"}, "name": {"value": "Ann"}, "email": {"value": "ann@example.com"},
                     "country": {"value": "US"}},
            "settings": {"project_id": 678, "currency": "USD", "language": "en",
                         "return_url": "https://game.example/done", "external_id": "gh_test_reference"},
            "purchase": {"checkout": {"currency": "USD", "amount": 9.99}, "description": {"value": "100 gems"}},
            "custom_parameters": {"level": 3}
        })
    );
    let outcome = run.outcome();
    assert_eq!(outcome.status, OutcomeStatus::Pending);
    assert_eq!(outcome.amount.map(|amount| amount.minor_units), Some(999));
    assert_eq!(
        outcome.details,
        Details::PaymentPage {
            url: "https://secure.xsolla.com/paystation4/?token=tok_AbC-123".into(),
            token: Some("tok_AbC-123".into()),
        }
    );
}

#[test]
fn sandbox_mode_uses_the_sandbox_url_and_mode() {
    let invocation = testkit::invocation(page_command(500, "JPY"), sandbox_account());
    let run = run_with(&invocation, [ok(r#"{"token": "t+1/="}"#)]);
    let body = json_body(run.single_request());
    assert_eq!(body["settings"]["mode"], "sandbox");
    let Details::PaymentPage { url, .. } = &run.outcome().details else {
        panic!("no page")
    };
    assert_eq!(
        url,
        "https://sandbox-secure.xsolla.com/paystation4/?token=t%2B1%2F%3D"
    );
}

#[test]
fn paystation_url_bases_are_configurable() {
    let mut account = account();
    account.settings.insert(
        "paystation_url".into(),
        "http://127.0.0.1:9/paystation4/".into(),
    );
    let run = run_with(
        &testkit::invocation(page_command(100, "USD"), account.clone()),
        [ok(r#"{"token":"x"}"#)],
    );
    let Details::PaymentPage { url, .. } = &run.outcome().details else {
        panic!("no page")
    };
    assert_eq!(url, "http://127.0.0.1:9/paystation4/?token=x");
    account.settings.insert("sandbox".into(), "1".into());
    account.settings.insert(
        "sandbox_paystation_url".into(),
        "http://127.0.0.1:9/sandbox/?a=b".into(),
    );
    let run = run_with(
        &testkit::invocation(page_command(100, "USD"), account),
        [ok(r#"{"token":"x"}"#)],
    );
    let Details::PaymentPage { url, .. } = &run.outcome().details else {
        panic!("no page")
    };
    assert_eq!(url, "http://127.0.0.1:9/sandbox/?a=b&token=x");
}

#[test]
fn amounts_follow_the_currency_exponent() {
    for (minor_units, currency, text) in [
        (500, "JPY", r#""amount":500"#),
        (999, "USD", r#""amount":9.99"#),
        (1234, "KWD", r#""amount":1.234"#),
        (5, "KWD", r#""amount":0.005"#),
    ] {
        let run = run(
            page_command(minor_units, currency),
            [ok(r#"{"token":"x"}"#)],
        );
        let body = body_text(run.single_request());
        assert!(body.contains(text), "{currency}: {body}");
        assert!(body.contains(&format!(r#""currency":"{currency}""#)));
    }
}

#[test]
fn the_command_is_checked_before_any_request() {
    let cases = [
        (
            json!({"operation": "payment_page", "amount": {"minor_units": 100, "currency": "USD"}}),
            "customer.id",
        ),
        (
            json!({"operation": "payment_page", "amount": {"minor_units": 0, "currency": "USD"}, "customer": {"id": "u"}}),
            "amount.minor_units",
        ),
        (
            json!({"operation": "payment_page", "amount": {"minor_units": 1, "currency": "USD"}, "customer": {"id": "u"},
                "payment_method": "card"}),
            "payment_method",
        ),
        (
            json!({"operation": "payment_page", "amount": {"minor_units": 1, "currency": "USD"}, "customer": {"id": "u", "country": "usa"}}),
            "customer.country",
        ),
        (
            json!({"operation": "payment_page", "amount": {"minor_units": 1, "currency": "USD"}, "customer": {"id": "u"},
                "return_url": "javascript:alert(1)"}),
            "return_url",
        ),
        (
            json!({"operation": "payment_page", "amount": {"minor_units": 1, "currency": "USD"}, "customer": {"id": "u"},
                "extra": {"language": "english"}}),
            "extra.language",
        ),
        (
            json!({"operation": "payment_page", "amount": {"minor_units": 1, "currency": "USD"}, "customer": {"id": "u"},
                "extra": {"custom_parameters": [1]}}),
            "extra.custom_parameters",
        ),
    ];
    for (command, field) in cases {
        let run = run(command, []);
        assert!(run.requests.is_empty());
        assert_eq!(run.error().kind, ErrorKind::InvalidRequest, "{field}");
        assert_eq!(run.error().fields, vec![field.to_string()]);
    }
}

#[test]
fn account_configuration_is_checked_before_any_request() {
    for (settings, secrets, field) in [
        (
            vec![("project_id", PROJECT_ID)],
            vec![("api_key", API_KEY)],
            "merchant_id",
        ),
        (
            vec![("merchant_id", "abc"), ("project_id", PROJECT_ID)],
            vec![("api_key", API_KEY)],
            "merchant_id",
        ),
        (
            vec![("merchant_id", MERCHANT_ID)],
            vec![("api_key", API_KEY)],
            "project_id",
        ),
        (
            vec![("merchant_id", MERCHANT_ID), ("project_id", PROJECT_ID)],
            vec![],
            "api_key",
        ),
    ] {
        let account = testkit::account(BASE, &settings, &secrets);
        let run = run_with(&testkit::invocation(page_command(1, "USD"), account), []);
        assert!(run.requests.is_empty());
        assert_eq!(run.error().kind, ErrorKind::InvalidRequest);
        assert_eq!(run.error().fields, vec![field.to_string()]);
    }
}

#[test]
fn documented_errors_map_to_their_kinds() {
    let unprocessable = answer(
        422,
        r#"{"http_status_code":422,"message":"Unprocessable Entity",
        "extended_message":{"global_errors":[],"property_errors":{"settings.currency":["Unknown currency"],"user.email.value":["Invalid"]}},
        "request_id":"6445b85"}"#,
    );
    let run = run(page_command(100, "USD"), [unprocessable]);
    let error = run.error();
    assert_eq!(error.kind, ErrorKind::InvalidRequest);
    assert_eq!(error.fields, vec!["settings.currency", "user.email.value"]);
    assert_eq!(error.provider_code.as_deref(), Some("422"));
    assert!(
        error
            .provider_message
            .as_deref()
            .is_some_and(|text| text.contains("Unknown currency"))
    );
    for (status, kind) in [
        (401, ErrorKind::Authentication),
        (403, ErrorKind::Authentication),
        (404, ErrorKind::NotFound),
        (429, ErrorKind::RateLimited),
        (500, ErrorKind::ProviderUnavailable),
        (503, ErrorKind::ProviderUnavailable),
    ] {
        let run = super::run(
            page_command(100, "USD"),
            [answer(status, r#"{"message":"nope"}"#)],
        );
        assert_eq!(run.error().kind, kind, "{status}");
        assert_eq!(run.error().provider_message.as_deref(), Some("nope"));
    }
}

#[test]
fn unreadable_token_answers_are_malformed() {
    for body in [
        "",
        "<html>502</html>",
        r#"{"token""#,
        r#"{"tok": "x"}"#,
        r#"["x"]"#,
        r#"{"token": {"a":1}}"#,
    ] {
        let run = run(page_command(100, "USD"), [ok(body)]);
        assert_eq!(run.error().kind, ErrorKind::MalformedResponse, "{body}");
    }
}
