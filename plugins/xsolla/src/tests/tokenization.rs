use gatehouse_plugin_api::testkit::{self, json_body};
use gatehouse_plugin_api::{Details, ErrorKind, Method, OutcomeStatus};
use serde_json::json;

use super::*;

fn charge_command(minor_units: i64, currency: &str) -> serde_json::Value {
    json!({"operation": "charge", "amount": {"minor_units": minor_units, "currency": currency},
           "description": "monthly gems", "customer": {"id": "user-1", "ip": "203.0.113.7", "name": "Ann"},
           "payment_method": "card", "saved_account_id": "9001"})
}

#[test]
fn saved_accounts_are_listed() {
    let command = json!({"operation": "saved_accounts", "user_id": "user 1/x"});
    let run = run(
        command,
        [ok(
            r#"[{"id": 9001, "name": "Visa **** 1111", "type": "card",
                                    "payment_system": {"id": 1380, "name": "Credit/Debit Cards"}},
                                   {"id": "77", "type": "paypal", "payment_system": {"name": "PayPal"}}]"#,
        )],
    );
    let request = run.single_request();
    assert_eq!(request.method, Method::Get);
    assert_eq!(
        request.url,
        "http://xsolla.test/merchant/v2/projects/678/users/user%201%2Fx/payment_accounts"
    );
    assert!(request.retry_safe);
    assert_basic_auth(request);
    let Details::SavedAccounts { accounts } = &run.outcome().details else {
        panic!("no accounts")
    };
    assert_eq!(accounts.len(), 2);
    assert_eq!(accounts[0].id, "9001");
    assert_eq!(accounts[0].account_type.as_deref(), Some("card"));
    assert_eq!(accounts[0].name.as_deref(), Some("Visa **** 1111"));
    assert_eq!(accounts[1].name.as_deref(), Some("PayPal"));
    assert_eq!(accounts[1].raw["payment_system"]["name"], "PayPal");

    let run = super::run(
        json!({"operation": "saved_accounts", "user_id": "u"}),
        [ok("[]")],
    );
    assert_eq!(
        run.outcome().details,
        Details::SavedAccounts { accounts: vec![] }
    );
    for (response, kind) in [
        (
            answer(404, r#"{"message":"User not found"}"#),
            ErrorKind::NotFound,
        ),
        (answer(401, ""), ErrorKind::Authentication),
        (ok(r#"{"id": 1}"#), ErrorKind::MalformedResponse),
        (ok(r#"[{"name": "no id"}]"#), ErrorKind::MalformedResponse),
        (ok(r#"[1, 2]"#), ErrorKind::MalformedResponse),
    ] {
        let run = super::run(
            json!({"operation": "saved_accounts", "user_id": "u"}),
            [response],
        );
        assert_eq!(run.error().kind, kind);
    }
    let run = super::run(json!({"operation": "saved_accounts", "user_id": " "}), []);
    assert_eq!(run.error().fields, vec!["user_id"]);
}

#[test]
fn a_saved_account_is_deleted() {
    let command = json!({"operation": "delete_saved_account", "user_id": "user-1", "account_type": "card", "account_id": "9001"});
    let run = run(command.clone(), [answer(204, "")]);
    let request = run.single_request();
    assert_eq!(request.method, Method::Delete);
    assert_eq!(
        request.url,
        "http://xsolla.test/merchant/v2/projects/678/users/user-1/payment_accounts/card/9001"
    );
    assert_basic_auth(request);
    assert_eq!(run.outcome().status, OutcomeStatus::Succeeded);
    let run = super::run(command, [answer(404, r#"{"message":"Account not found"}"#)]);
    assert_eq!(run.error().kind, ErrorKind::NotFound);
    for (command, field) in [
        (
            json!({"operation": "delete_saved_account", "user_id": "u", "account_type": "card", "account_id": "12a"}),
            "account_id",
        ),
        (
            json!({"operation": "delete_saved_account", "user_id": "u", "account_type": "../x", "account_id": "1"}),
            "account_type",
        ),
    ] {
        let run = super::run(command, []);
        assert!(run.requests.is_empty());
        assert_eq!(run.error().fields, vec![field.to_string()]);
    }
}

#[test]
fn a_charge_sends_the_reference_as_external_id_with_a_two_minute_timeout() {
    let run = run(
        charge_command(1999, "USD"),
        [ok(r#"{"transaction_id": 555001}"#)],
    );
    let request = run.single_request();
    assert_eq!(request.method, Method::Post);
    assert_eq!(
        request.url,
        "http://xsolla.test/merchant/v2/projects/678/users/user-1/payments/card/9001"
    );
    assert_eq!(request.timeout_ms, Some(120_000));
    assert!(!request.retry_safe, "a charge is never resent blindly");
    assert_basic_auth(request);
    assert!(body_text(request).contains(r#""amount":19.99"#));
    assert_eq!(
        json_body(request),
        json!({"user": {"ip": "203.0.113.7", "name": "Ann"},
               "settings": {"currency": "USD", "external_id": "gh_test_reference"},
               "purchase": {"checkout": {"currency": "USD", "amount": 19.99}, "description": {"value": "monthly gems"}}})
    );
    let outcome = run.outcome();
    assert_eq!(outcome.status, OutcomeStatus::Pending);
    assert_eq!(outcome.provider_reference.as_deref(), Some("555001"));
    assert_eq!(outcome.amount.map(|amount| amount.minor_units), Some(1999));
}

#[test]
fn a_sandbox_charge_carries_mode_mock_code_and_extras() {
    let mut command = charge_command(500, "JPY");
    command["extra"] = json!({"mock_code": 1057, "custom_parameters": {"a": true}, "user_legal": {"name": "ACME"}});
    let invocation = testkit::invocation(command, sandbox_account());
    let run = run_with(&invocation, [ok(r#"{"transaction_id": "42"}"#)]);
    let body = json_body(run.single_request());
    assert_eq!(body["settings"]["mode"], "sandbox");
    assert_eq!(body["settings"]["mock_code"], 1057);
    assert_eq!(body["custom_parameters"]["a"], true);
    assert_eq!(body["user"]["legal"]["name"], "ACME");
    assert!(body_text(run.single_request()).contains(r#""amount":500"#));
    assert_eq!(run.outcome().provider_reference.as_deref(), Some("42"));

    let run = super::run(
        charge_command(1234, "KWD"),
        [ok(r#"{"transaction_id": 1}"#)],
    );
    assert!(body_text(run.single_request()).contains(r#""amount":1.234"#));
}

#[test]
fn charge_input_is_checked_before_any_request() {
    let mut missing_ip = charge_command(100, "USD");
    missing_ip["customer"] = json!({"id": "u"});
    let mut missing_account = charge_command(100, "USD");
    missing_account
        .as_object_mut()
        .map(|object| object.remove("saved_account_id"));
    let mut missing_type = charge_command(100, "USD");
    missing_type
        .as_object_mut()
        .map(|object| object.remove("payment_method"));
    let mut missing_user = charge_command(100, "USD");
    missing_user["customer"] = json!({"ip": "1.2.3.4"});
    let mut bad_mock = charge_command(100, "USD");
    bad_mock["extra"] = json!({"mock_code": "soon"});
    for (command, field) in [
        (missing_ip, "customer.ip"),
        (missing_account, "saved_account_id"),
        (missing_type, "payment_method"),
        (missing_user, "customer.id"),
        (bad_mock, "extra.mock_code"),
        (charge_command(-5, "USD"), "amount.minor_units"),
    ] {
        let run = run(command, []);
        assert!(run.requests.is_empty(), "{field}");
        assert_eq!(run.error().kind, ErrorKind::InvalidRequest);
        assert_eq!(run.error().fields, vec![field.to_string()]);
    }
    let mut no_reference = invocation(charge_command(100, "USD"));
    no_reference.reference = None;
    let run = run_with(&no_reference, []);
    assert_eq!(run.error().fields, vec!["reference"]);
}

#[test]
fn refused_charges_fail_and_lost_ones_are_unknown() {
    let failed = [
        (
            answer(
                422,
                r#"{"http_status_code":422,"message":"Unprocessable","extended_message":{"property_errors":{"user.ip":["required"]}}}"#,
            ),
            ErrorKind::InvalidRequest,
        ),
        (
            answer(401, r#"{"message":"Unauthorized"}"#),
            ErrorKind::Authentication,
        ),
        (
            answer(403, r#"{"message":"Forbidden"}"#),
            ErrorKind::Authentication,
        ),
        (
            answer(404, r#"{"message":"Payment account not found"}"#),
            ErrorKind::NotFound,
        ),
        (answer(429, ""), ErrorKind::RateLimited),
    ];
    for (response, kind) in failed {
        let run = run(charge_command(100, "USD"), [response.clone()]);
        let outcome = run.outcome();
        assert_eq!(outcome.status, OutcomeStatus::Failed, "{response:?}");
        assert_eq!(outcome.error.as_ref().map(|error| error.kind), Some(kind));
    }
    let run = run(charge_command(100, "USD"), [failed_with_fields()]);
    assert_eq!(
        run.outcome()
            .error
            .as_ref()
            .map(|error| error.fields.clone()),
        Some(vec!["user.ip".to_string()])
    );

    for response in [
        answer(500, "oops"),
        answer(502, "<html>bad gateway</html>"),
        answer(503, ""),
        answer(504, ""),
        answer(408, ""),
        ok(""),
        ok("<html>hello</html>"),
        ok(r#"{"transaction_id": 55"#),
        ok(r#"{"status": "ok"}"#),
        ok("null"),
        HttpResponse::new(200, vec![0xff, 0xfe, 0x00]),
    ] {
        let run = super::run(charge_command(100, "USD"), [response.clone()]);
        let outcome = run.outcome();
        assert_eq!(outcome.status, OutcomeStatus::Unknown, "{response:?}");
        assert!(outcome.error.is_some());
    }
}

fn failed_with_fields() -> gatehouse_plugin_api::HttpResponse {
    answer(
        422,
        r#"{"extended_message":{"property_errors":{"user.ip":["required"]}}}"#,
    )
}
