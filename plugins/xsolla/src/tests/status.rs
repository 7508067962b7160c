use gatehouse_plugin_api::testkit::query_pairs;
use gatehouse_plugin_api::{Details, ErrorKind, Method, OutcomeStatus};
use serde_json::json;

use super::*;

#[test]
fn status_by_transaction_id_reads_the_details() {
    let command = json!({"operation": "status", "transaction_id": "555001"});
    let run = run(
        command,
        [ok(&transaction(555_001, "done", "19.99", "USD", "gh_ref"))],
    );
    let request = run.single_request();
    assert_eq!(request.method, Method::Get);
    assert_eq!(
        request.url,
        "http://xsolla.test/merchant/v2/merchants/12345/reports/transactions/555001/details"
    );
    assert!(request.retry_safe);
    assert_basic_auth(request);
    let outcome = run.outcome();
    assert_eq!(outcome.status, OutcomeStatus::Succeeded);
    assert_eq!(outcome.provider_reference.as_deref(), Some("555001"));
    assert_eq!(outcome.amount.map(|amount| amount.minor_units), Some(1999));
    let Details::Transaction(info) = &outcome.details else {
        panic!("no transaction")
    };
    assert_eq!(info.reference.as_deref(), Some("gh_ref"));
    assert_eq!(info.provider_status.as_deref(), Some("done"));
    assert_eq!(info.payment_method.as_deref(), Some("Credit/Debit Cards"));
}

#[test]
fn xsolla_statuses_map_to_outcomes() {
    for (status, expected) in [
        ("done", OutcomeStatus::Succeeded),
        ("refunded", OutcomeStatus::Succeeded),
        ("awaitingRefund", OutcomeStatus::Succeeded),
        ("created", OutcomeStatus::Pending),
        ("processing", OutcomeStatus::Pending),
        ("review", OutcomeStatus::Pending),
        ("canceled", OutcomeStatus::Failed),
        ("error", OutcomeStatus::Failed),
        ("teleported", OutcomeStatus::Unknown),
    ] {
        let run = run(
            json!({"operation": "status", "transaction_id": "1"}),
            [ok(&transaction(1, status, "1", "USD", "r"))],
        );
        let outcome = run.outcome();
        assert_eq!(outcome.status, expected, "{status}");
        let Details::Transaction(info) = &outcome.details else {
            panic!("no transaction")
        };
        assert_eq!(info.provider_status.as_deref(), Some(status));
        if expected == OutcomeStatus::Failed {
            let error = outcome.error.as_ref().expect("failed transactions say why");
            assert_eq!(error.kind, ErrorKind::Declined);
            assert_eq!(error.provider_code.as_deref(), Some(status));
        }
    }
    let declined = r#"{"transaction": {"id": 3, "status": "error"}, "payment_system": {"decline_reason": "Insufficient funds"}}"#;
    let run = run(
        json!({"operation": "status", "transaction_id": "3"}),
        [ok(declined)],
    );
    assert_eq!(
        run.outcome()
            .error
            .as_ref()
            .and_then(|error| error.provider_message.as_deref()),
        Some("Insufficient funds")
    );
}

#[test]
fn status_by_reference_searches_by_external_id() {
    let command = json!({"operation": "status", "reference": "gh_ref"});
    let body = format!(
        "[{}, {}]",
        transaction(10, "canceled", "19.99", "USD", "gh_ref"),
        transaction(11, "done", "19.99", "USD", "gh_ref")
    );
    let run = run(command.clone(), [ok(&body)]);
    let request = run.single_request();
    assert!(request.url.starts_with(
        "http://xsolla.test/merchant/v2/merchants/12345/reports/transactions/search.json?"
    ));
    assert_eq!(
        query_pairs(request),
        [
            ("external_id", "gh_ref"),
            ("datetime_from", "2025-10-01T00:00:00Z"),
            ("datetime_to", "2026-01-02T00:00:00Z"),
            ("type", "all"),
            ("offset", "0"),
            ("limit", "100")
        ]
        .iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect::<Vec<_>>()
    );
    // The most conclusive of several transactions wins: the done one.
    let outcome = run.outcome();
    assert_eq!(outcome.status, OutcomeStatus::Succeeded);
    assert_eq!(outcome.provider_reference.as_deref(), Some("11"));

    let run = super::run(command.clone(), [ok("[]")]);
    assert_eq!(run.error().kind, ErrorKind::NotFound);
    let run = super::run(
        command,
        [ok(&format!(
            "[{}]",
            transaction(12, "processing", "5", "USD", "gh_ref")
        ))],
    );
    assert_eq!(run.outcome().status, OutcomeStatus::Pending);
}

#[test]
fn status_input_and_errors() {
    let run = run(json!({"operation": "status"}), []);
    assert_eq!(run.error().kind, ErrorKind::InvalidRequest);
    assert!(run.requests.is_empty());
    let run = super::run(
        json!({"operation": "status", "transaction_id": "12/../x"}),
        [],
    );
    assert_eq!(run.error().fields, vec!["transaction_id"]);
    for (response, kind) in [
        (
            answer(404, r#"{"message":"Transaction not found"}"#),
            ErrorKind::NotFound,
        ),
        (answer(401, ""), ErrorKind::Authentication),
        (answer(429, ""), ErrorKind::RateLimited),
        (answer(502, ""), ErrorKind::ProviderUnavailable),
        (
            ok(r#"{"transaction": {"id": 1}}"#),
            ErrorKind::MalformedResponse,
        ),
        (ok("[]"), ErrorKind::MalformedResponse),
        (ok("\"done\""), ErrorKind::MalformedResponse),
    ] {
        let run = super::run(
            json!({"operation": "status", "transaction_id": "1"}),
            [response.clone()],
        );
        assert_eq!(run.error().kind, kind, "{response:?}");
    }
    let run = super::run(
        json!({"operation": "status", "reference": "r"}),
        [ok(r#"{"items": []}"#)],
    );
    assert_eq!(run.error().kind, ErrorKind::MalformedResponse);
}

#[test]
fn sandbox_chargeback_is_requested() {
    let command = json!({"operation": "sandbox_chargeback", "transaction_id": "555001"});
    let run = run(command.clone(), [answer(204, "")]);
    let request = run.single_request();
    assert_eq!(request.method, Method::Post);
    assert_eq!(
        request.url,
        "http://xsolla.test/merchant/v2/merchants/12345/projects/678/payments/555001/chargeback"
    );
    assert_eq!(body_text(request), "{}");
    assert!(!request.retry_safe);
    assert_basic_auth(request);
    assert_eq!(run.outcome().status, OutcomeStatus::Succeeded);
    assert_eq!(run.outcome().provider_reference.as_deref(), Some("555001"));
    for (response, kind, text) in [
        (
            answer(
                422,
                r#"{"message":"Not test payment. Chargeback is possible only for payments made in sandbox mode."}"#,
            ),
            ErrorKind::Declined,
            "Not test payment",
        ),
        (
            answer(
                422,
                r#"{"message":"Incorrect payment status. Chargeback is possible only for payments with “Completed” status."}"#,
            ),
            ErrorKind::Declined,
            "Incorrect payment status",
        ),
        (
            answer(404, r#"{"message":"Payment not found. Check payment ID."}"#),
            ErrorKind::NotFound,
            "Payment not found",
        ),
        (
            answer(403, r#"{"message":"Forbidden"}"#),
            ErrorKind::Authentication,
            "Forbidden",
        ),
    ] {
        let run = super::run(command.clone(), [response]);
        assert_eq!(run.error().kind, kind);
        assert!(
            run.error()
                .provider_message
                .as_deref()
                .is_some_and(|message| message.contains(text))
        );
    }
    let run = super::run(
        json!({"operation": "sandbox_chargeback", "transaction_id": "x"}),
        [],
    );
    assert_eq!(run.error().fields, vec!["transaction_id"]);
}

#[test]
fn operations_xsolla_lacks_are_refused() {
    let run = run(json!({"operation": "balance"}), []);
    assert_eq!(run.error().kind, ErrorKind::NotSupported);
    let run = super::run(
        json!({"operation": "affiliate_payout", "affiliate_id": "a", "amount": {"minor_units": 1, "currency": "USD"}}),
        [],
    );
    assert_eq!(run.error().kind, ErrorKind::NotSupported);
}

fn refund_status(amount: Option<(i64, &str)>) -> Value {
    let mut command = json!({"operation": "status", "transaction_id": "555001", "of": "refund"});
    if let Some((minor_units, currency)) = amount {
        command["amount"] = json!({"minor_units": minor_units, "currency": currency});
    }
    command
}

#[test]
fn the_manifest_says_status_describes_refunds() {
    let manifest = <crate::Xsolla as gatehouse_plugin_api::Plugin>::manifest();
    assert!(manifest.status_describes(gatehouse_plugin_api::Operation::Refund));
    assert!(!manifest.status_describes(gatehouse_plugin_api::Operation::AffiliatePayout));
    assert_eq!(manifest.validate(), Ok(()));
}

#[test]
fn a_refund_status_reads_the_refunded_transactions_details() {
    let run = run(
        refund_status(None),
        [ok(&transaction(
            555_001, "refunded", "19.99", "USD", "gh_ref",
        ))],
    );
    let request = run.single_request();
    assert_eq!(request.method, Method::Get);
    assert_eq!(
        request.url,
        "http://xsolla.test/merchant/v2/merchants/12345/reports/transactions/555001/details"
    );
    assert!(request.retry_safe);
    let outcome = run.outcome();
    assert_eq!(outcome.status, OutcomeStatus::Succeeded);
    assert_eq!(outcome.provider_reference.as_deref(), Some("555001"));
    // A full refund gave back the whole transaction.
    assert_eq!(outcome.amount.map(|amount| amount.minor_units), Some(1999));
    assert!(outcome.error.is_none());
}

#[test]
fn refund_statuses_map_for_full_and_partial_refunds() {
    use OutcomeStatus::{Failed, Pending, Succeeded, Unknown};
    for (status, full, partial) in [
        ("refunded", Succeeded, Succeeded),
        ("awaitingRefund", Pending, Pending),
        ("done", Failed, Unknown),
        ("error", Failed, Unknown),
        ("created", Failed, Failed),
        ("processing", Failed, Failed),
        ("review", Failed, Failed),
        ("canceled", Unknown, Unknown),
        ("teleported", Unknown, Unknown),
    ] {
        for (amount, expected) in [(None, full), (Some((500, "USD")), partial)] {
            let run = run(
                refund_status(amount),
                [ok(&transaction(555_001, status, "19.99", "USD", "r"))],
            );
            let outcome = run.outcome();
            assert_eq!(outcome.status, expected, "{status} {amount:?}");
            match expected {
                Failed => {
                    let error = outcome.error.as_ref().expect("says why");
                    assert_eq!(error.kind, ErrorKind::NotFound, "{status}");
                    assert!(error.message.contains("never made"), "{}", error.message);
                }
                Unknown => {
                    let error = outcome.error.as_ref().expect("says why");
                    assert_eq!(error.kind, ErrorKind::ProviderError, "{status}");
                }
                Succeeded | Pending => assert!(outcome.error.is_none(), "{status}"),
            }
            if let Some((minor_units, _)) = amount
                && matches!(expected, Succeeded | Pending)
            {
                assert_eq!(
                    outcome.amount.map(|amount| amount.minor_units),
                    Some(minor_units)
                );
            }
        }
    }
}

#[test]
fn a_refund_status_needs_the_numeric_transaction_id_and_only_refunds_are_described() {
    for command in [
        json!({"operation": "status", "reference": "gh_x", "of": "refund"}),
        json!({"operation": "status", "transaction_id": "12a", "of": "refund"}),
    ] {
        let run = run(command.clone(), []);
        assert!(run.requests.is_empty(), "{command}");
        assert_eq!(run.error().kind, ErrorKind::InvalidRequest, "{command}");
        assert_eq!(run.error().fields, vec!["transaction_id".to_string()]);
    }
    let payout = run(
        json!({"operation": "status", "transaction_id": "1", "of": "affiliate_payout"}),
        [],
    );
    assert!(payout.requests.is_empty());
    assert_eq!(payout.error().kind, ErrorKind::NotSupported);
    // `of: charge` is the status as before.
    let charge = run(
        json!({"operation": "status", "transaction_id": "1", "of": "charge"}),
        [ok(&transaction(1, "refunded", "1", "USD", "r"))],
    );
    assert_eq!(charge.outcome().status, OutcomeStatus::Succeeded);
}

#[test]
fn refund_status_answers_that_are_not_details_are_errors_never_a_settled_refund() {
    for response in [
        answer(500, "oops"),
        answer(404, r#"{"message":"not found"}"#),
        ok(""),
        ok("[]"),
        ok("{\"transaction\": {\"id\": 1}}"),
        ok("{\"transaction\": {\"status\": "),
        ok("\u{0}\u{1}garbage"),
    ] {
        let run = run(refund_status(None), [response.clone()]);
        assert!(
            run.result.is_err(),
            "{:?} gave {:?}",
            response.text(),
            run.result
        );
    }
}
