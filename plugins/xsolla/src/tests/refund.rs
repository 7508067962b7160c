use gatehouse_plugin_api::testkit::json_body;
use gatehouse_plugin_api::{ErrorKind, Method, OutcomeStatus};
use serde_json::json;

use super::*;

fn full_refund() -> serde_json::Value {
    json!({"operation": "refund", "transaction_id": "555001", "reason": "customer asked", "email": "ann@example.com"})
}

fn partial_refund(minor_units: i64, currency: &str) -> serde_json::Value {
    json!({"operation": "refund", "transaction_id": "555001", "reason": "one item missing",
           "amount": {"minor_units": minor_units, "currency": currency}})
}

#[test]
fn a_full_refund_puts_description_and_email() {
    let accepted = r#"{"message": "The request for a refund has been accepted. Xsolla CS will manually complete the refund. It may take up to two business days."}"#;
    let run = run(full_refund(), [ok(accepted)]);
    let request = run.single_request();
    assert_eq!(request.method, Method::Put);
    assert_eq!(
        request.url,
        "http://xsolla.test/merchant/v2/merchants/12345/reports/transactions/555001/refund"
    );
    assert!(!request.retry_safe);
    assert_basic_auth(request);
    assert_eq!(
        json_body(request),
        json!({"description": "customer asked", "email": "ann@example.com"})
    );
    let outcome = run.outcome();
    assert_eq!(outcome.status, OutcomeStatus::Pending);
    assert_eq!(outcome.provider_reference.as_deref(), Some("555001"));
    assert_eq!(outcome.amount, None);

    let run = super::run(
        json!({"operation": "refund", "transaction_id": "1", "reason": "r"}),
        [answer(204, "")],
    );
    assert_eq!(json_body(run.single_request()), json!({"description": "r"}));
    assert_eq!(run.outcome().status, OutcomeStatus::Pending);
}

#[test]
fn a_partial_refund_sends_the_exact_amount() {
    for (minor_units, currency, text) in [
        (150, "USD", r#""refund_amount":1.50"#),
        (300, "JPY", r#""refund_amount":300"#),
        (1005, "KWD", r#""refund_amount":1.005"#),
    ] {
        let run = run(partial_refund(minor_units, currency), [answer(204, "")]);
        let request = run.single_request();
        assert_eq!(request.method, Method::Put);
        assert_eq!(
            request.url,
            "http://xsolla.test/merchant/v2/merchants/12345/reports/transactions/555001/partial_refund"
        );
        assert!(body_text(request).contains(text), "{}", body_text(request));
        assert_eq!(json_body(request)["description"], "one item missing");
        let outcome = run.outcome();
        assert_eq!(outcome.status, OutcomeStatus::Pending);
        assert_eq!(
            outcome.amount.map(|amount| amount.minor_units),
            Some(minor_units)
        );
    }
}

#[test]
fn refund_input_is_checked_before_any_request() {
    for (command, field) in [
        (
            json!({"operation": "refund", "transaction_id": "555001"}),
            "reason",
        ),
        (
            json!({"operation": "refund", "transaction_id": "abc", "reason": "r"}),
            "transaction_id",
        ),
        (
            json!({"operation": "refund", "transaction_id": "1", "reason": "r", "email": "a@b.c",
                "amount": {"minor_units": 100, "currency": "USD"}}),
            "email",
        ),
        (
            json!({"operation": "refund", "transaction_id": "1", "reason": "r",
                "amount": {"minor_units": 0, "currency": "USD"}}),
            "amount.minor_units",
        ),
        (
            json!({"operation": "refund", "transaction_id": "1", "reason": "x".repeat(4001)}),
            "reason",
        ),
    ] {
        let run = run(command, []);
        assert!(run.requests.is_empty(), "{field}");
        assert_eq!(run.error().kind, ErrorKind::InvalidRequest);
        assert_eq!(run.error().fields, vec![field.to_string()]);
    }
}

#[test]
fn documented_refusals_fail_with_the_providers_words() {
    for (command, response, kind, text) in [
        (
            full_refund(),
            answer(
                422,
                r#"{"message":"Full refund is unavailable because there are successful partial refunds for this transaction."}"#,
            ),
            ErrorKind::Declined,
            "Full refund is unavailable",
        ),
        (
            full_refund(),
            answer(
                404,
                r#"{"message":"Transaction ID not valid. Please check payment credentials."}"#,
            ),
            ErrorKind::NotFound,
            "Transaction ID not valid",
        ),
        (
            partial_refund(100, "USD"),
            answer(
                422,
                r#"{"message":"Requested partial refund amount exceeds payment amount."}"#,
            ),
            ErrorKind::Declined,
            "exceeds payment amount",
        ),
        (
            partial_refund(100, "USD"),
            answer(
                404,
                r#"{"message":"Transaction with specified ID does not exist."}"#,
            ),
            ErrorKind::NotFound,
            "does not exist",
        ),
        (
            partial_refund(100, "USD"),
            answer(403, r#"{"message":"Access denied"}"#),
            ErrorKind::Authentication,
            "Access denied",
        ),
        (
            full_refund(),
            answer(401, r#"{"message":"Unauthorized"}"#),
            ErrorKind::Authentication,
            "Unauthorized",
        ),
        (
            full_refund(),
            answer(
                422,
                r#"{"message":"bad","extended_message":{"property_errors":{"email":["too long"]}}}"#,
            ),
            ErrorKind::InvalidRequest,
            "too long",
        ),
    ] {
        let run = run(command, [response]);
        let outcome = run.outcome();
        assert_eq!(outcome.status, OutcomeStatus::Failed);
        let error = outcome.error.as_ref().expect("error");
        assert_eq!(error.kind, kind);
        assert!(
            error
                .provider_message
                .as_deref()
                .is_some_and(|message| message.contains(text)),
            "{error:?}"
        );
    }
}

#[test]
fn refunds_whose_answer_is_lost_are_unknown() {
    for response in [
        answer(500, ""),
        answer(502, "<html></html>"),
        ok("<html>proxy</html>"),
        ok(r#"{"message": "The req"#),
        HttpResponse::new(200, vec![0xc3, 0x28]),
    ] {
        for command in [full_refund(), partial_refund(100, "USD")] {
            let run = run(command, [response.clone()]);
            assert_eq!(run.outcome().status, OutcomeStatus::Unknown, "{response:?}");
        }
    }
}
