//! What the plugin makes of the server's answers: records, exact amounts, refusals.

use gatehouse_plugin_api::{
    Currency, Details, ErrorKind, HttpResponse, Money, OutcomeStatus, ReportRecord,
};
use serde_json::json;

use super::*;

fn records(run: &FlowRun) -> Vec<ReportRecord> {
    assert_eq!(run.outcome().status, OutcomeStatus::Succeeded);
    match &run.outcome().details {
        Details::Report { records, raw_text } => {
            assert!(raw_text.is_none());
            records.clone()
        }
        other => panic!("expected a report, got {other:?}"),
    }
}

fn money(text: &str, code: &str) -> Money {
    Money::parse_decimal(text, Currency::from_code(code).unwrap()).unwrap()
}

fn notes(record: &ReportRecord) -> Vec<String> {
    record.raw["_gatehouse_notes"]
        .as_array()
        .map(|notes| {
            notes
                .iter()
                .map(|note| note.as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn the_documents_answer_becomes_normalized_records() {
    let run = answered(page_xml(&[
        payment_xml(&[
            ("user", "John Smith"),
            ("date", "2026-01-01 10:15:00"),
            ("amount", "10.0000"),
            ("amount_with_tax", "12.1000"),
            ("comment", "Paypal &amp; more"),
            ("currency", "USD"),
            ("user_balance_before_payment", "5.5"),
            ("user_balance_after_payment", "15.5"),
        ]),
        full_payment("Ann", "3", "EUR"),
    ]));
    let records = records(&run);
    assert_eq!(records.len(), 2);
    let first = &records[0];
    assert_eq!(
        first.party.as_deref(),
        Some("John Smith"),
        "text is trimmed"
    );
    assert_eq!(first.date.as_deref(), Some("2026-01-01 10:15:00"));
    assert_eq!(first.description.as_deref(), Some("Paypal & more"));
    assert_eq!(first.amount, Some(money("10", "USD")));
    assert_eq!(
        first.amounts.get("amount_with_tax"),
        Some(&money("12.10", "USD"))
    );
    assert_eq!(
        first.amounts.get("user_balance_before_payment"),
        Some(&money("5.50", "USD"))
    );
    assert_eq!(
        first.amounts.get("user_balance_after_payment"),
        Some(&money("15.50", "USD"))
    );
    assert_eq!(
        first.raw,
        json!({
            "user": "John Smith", "date": "2026-01-01 10:15:00", "amount": "10.0000",
            "amount_with_tax": "12.1000", "comment": "Paypal & more", "currency": "USD",
            "user_balance_before_payment": "5.5", "user_balance_after_payment": "15.5",
        }),
        "every field, trimmed, exact, and no notes when nothing needed explaining"
    );
    assert_eq!(records[1].amount, Some(money("3", "EUR")));
    assert_eq!(records[1].party.as_deref(), Some("Ann"));
}

#[test]
fn balances_are_optional_for_older_servers() {
    let run = answered(page_xml(&[payment_xml(&[
        ("user", "old"),
        ("date", "2013-05-01 00:00:00"),
        ("amount", "1"),
        ("amount_with_tax", "1.21"),
        ("comment", ""),
        ("currency", "EUR"),
    ])]));
    let record = &records(&run)[0];
    assert_eq!(record.amount, Some(money("1", "EUR")));
    assert_eq!(
        record.amounts.keys().collect::<Vec<_>>(),
        vec!["amount_with_tax"]
    );
    assert_eq!(
        record.description, None,
        "an empty comment is no description"
    );
    assert!(notes(record).is_empty());
}

#[test]
fn an_empty_result_is_an_empty_report() {
    for body in [
        page_xml(&[]),
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<page>\n <pagename> Payments_list </pagename>\n <payments/>\n</page>".to_string(),
        // No <pagename>: tolerated, the list is what matters.
        "<page><payments></payments></page>".to_string(),
    ] {
        assert!(records(&answered(body.clone())).is_empty(), "{body}");
    }
}

#[test]
fn amounts_with_many_decimals_stay_exact() {
    let run = answered(page_xml(&[
        // Trailing zeros beyond the currency's exponent are exact cents.
        payment_xml(&[
            ("amount", "12.3400"),
            ("currency", "USD"),
            ("amount_with_tax", "14.931400"),
        ]),
        // Real sub-cent digits cannot be Money in USD: kept exact in raw, with a note.
        payment_xml(&[
            ("amount", "12.3456"),
            ("currency", "USD"),
            ("amount_with_tax", "14.9382"),
            ("user_balance_after_payment", "100.123456789"),
        ]),
        // JPY has no minor unit: 100.5 yen is not a whole number of yen.
        payment_xml(&[("amount", "100.5"), ("currency", "JPY")]),
        // KWD has three.
        payment_xml(&[("amount", "1.2340"), ("currency", "KWD")]),
    ]));
    let records = records(&run);
    assert_eq!(records.len(), 4, "no record is dropped");

    assert_eq!(records[0].amount, Some(money("12.34", "USD")));
    assert_eq!(records[0].amounts.get("amount_with_tax"), None);
    assert_eq!(records[0].raw["amount_with_tax"], "14.931400");
    assert_eq!(notes(&records[0]).len(), 1);
    assert!(notes(&records[0])[0].contains("amount_with_tax"));

    assert_eq!(records[1].amount, None);
    assert_eq!(
        records[1].raw["amount"], "12.3456",
        "exact text, not rounded"
    );
    assert_eq!(
        records[1].raw["user_balance_after_payment"],
        "100.123456789"
    );
    let record_notes = notes(&records[1]);
    assert_eq!(record_notes.len(), 3, "{record_notes:?}");
    assert!(
        record_notes[0].contains("12.3456") && record_notes[0].contains("more decimals than USD")
    );

    assert_eq!(records[2].amount, None);
    assert!(notes(&records[2])[0].contains("JPY"));
    assert_eq!(records[3].amount, Some(money("1.234", "KWD")));
}

#[test]
fn currencies_outside_iso_4217_keep_amounts_in_raw_and_say_why() {
    let run = answered(page_xml(&[
        payment_xml(&[
            ("user", "a"),
            ("amount", "10"),
            ("currency", "BTC"),
            ("amount_with_tax", "11"),
        ]),
        payment_xml(&[("user", "b"), ("amount", "10")]),
        payment_xml(&[("user", "c"), ("amount", "10"), ("currency", "usd")]),
        payment_xml(&[("user", "d"), ("amount", "1,50"), ("currency", "EUR")]),
    ]));
    let records = records(&run);
    assert_eq!(records.len(), 4);

    assert_eq!(records[0].amount, None);
    assert!(records[0].amounts.is_empty());
    assert_eq!(records[0].raw["amount"], "10");
    assert_eq!(records[0].raw["currency"], "BTC");
    assert_eq!(
        notes(&records[0]),
        vec![
            "amounts are kept only in raw: currency `BTC` is not an ISO 4217 currency with minor units"
        ]
    );

    assert_eq!(records[1].amount, None);
    assert!(notes(&records[1])[0].contains("names no currency"));

    assert_eq!(
        records[2].amount,
        Some(money("10", "USD")),
        "a lower-case ISO code is still ISO"
    );

    assert_eq!(records[3].amount, None);
    assert_eq!(records[3].raw["amount"], "1,50");
    assert!(notes(&records[3])[0].contains("not a plain decimal"));
}

#[test]
fn unknown_payment_fields_are_kept_in_raw() {
    let run = answered(page_xml(&[payment_xml(&[
        ("amount", "1"),
        ("currency", "USD"),
        ("payment_id", "991"),
        ("paymenttype", "manual"),
    ])]));
    let record = &records(&run)[0];
    assert_eq!(record.raw["payment_id"], "991");
    assert_eq!(record.raw["paymenttype"], "manual");
}

#[test]
fn bad_login_is_an_authentication_error() {
    for body in [
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<page>\n <error>Bad login</error>\n</page>\n",
        "<error>Bad login</error>",
        "<page><status><error> Bad login </error></status></page>",
    ] {
        let run = answered(body);
        let error = run.error();
        assert_eq!(error.kind, ErrorKind::Authentication, "{body}");
        assert_eq!(error.provider_message.as_deref(), Some("Bad login"));
        assert!(error.message.contains("username"), "{}", error.message);
    }
}

#[test]
fn incorrect_hash_is_an_authentication_error_naming_the_secret_and_the_order() {
    let run = answered(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<page>\n <error>Incorrect hash</error>\n</page>\n",
    );
    let error = run.error();
    assert_eq!(error.kind, ErrorKind::Authentication);
    assert_eq!(error.provider_message.as_deref(), Some("Incorrect hash"));
    assert!(error.message.contains("secret_key"), "{}", error.message);
    assert!(error.message.contains("order"), "{}", error.message);
    assert!(!error.message.contains(SECRET));
}

#[test]
fn other_errors_are_provider_errors_with_their_text() {
    for (body, text) in [
        (
            "<page><error>API Requests are disabled</error></page>",
            "API Requests are disabled",
        ),
        (
            "<status><error>Access Denied</error></status>",
            "Access Denied",
        ),
        // The wiki's form for a disabled GET API: a bare <status> text.
        (
            "<status>GET Requests are disabled</status>",
            "GET Requests are disabled",
        ),
    ] {
        let run = answered(body);
        let error = run.error();
        assert_eq!(error.kind, ErrorKind::ProviderError, "{body}");
        assert_eq!(error.provider_message.as_deref(), Some(text));
        assert!(error.message.contains(text));
    }
    let run = answered("<page><error></error></page>");
    assert_eq!(run.error().kind, ErrorKind::ProviderError);
}

#[test]
fn http_failures_map_by_status_unless_the_body_says_more() {
    let respond = |response: HttpResponse| run(&report(None, None, &[]), [response]);
    let error = respond(HttpResponse::new(
        500,
        "<html><body>Internal Server Error</body></html>",
    ))
    .error()
    .clone();
    assert_eq!(error.kind, ErrorKind::ProviderUnavailable);
    assert_eq!(error.provider_code.as_deref(), Some("500"));
    assert_eq!(
        respond(HttpResponse::new(502, "")).error().kind,
        ErrorKind::ProviderUnavailable
    );
    assert_eq!(
        respond(HttpResponse::new(404, "Not Found")).error().kind,
        ErrorKind::NotFound
    );
    assert!(
        respond(HttpResponse::new(404, "Not Found"))
            .error()
            .message
            .contains("/billing")
    );
    assert_eq!(
        respond(HttpResponse::new(403, "Forbidden")).error().kind,
        ErrorKind::Authentication
    );
    assert_eq!(
        respond(HttpResponse::new(429, "")).error().kind,
        ErrorKind::RateLimited
    );
    assert_eq!(
        respond(HttpResponse::new(405, "")).error().kind,
        ErrorKind::InvalidRequest
    );
    // A refusal in the body of an error status is the refusal.
    let error = respond(HttpResponse::new(
        403,
        "<page><error>Incorrect hash</error></page>",
    ))
    .error()
    .clone();
    assert_eq!(error.provider_message.as_deref(), Some("Incorrect hash"));
    // A success document with an error status is not trusted as a report.
    assert_eq!(
        respond(HttpResponse::new(500, page_xml(&[]))).error().kind,
        ErrorKind::ProviderUnavailable
    );
}

#[test]
fn xml_of_another_shape_is_a_malformed_response() {
    for (body, mentions) in [
        (
            "<response><status>ok</status></response>",
            "root <response>",
        ),
        ("<HTML><page><payments/></page></HTML>", "XML API Extension"),
        (
            "<page><pagename> Users_list </pagename><payments/></page>",
            "Users_list",
        ),
        (
            "<page><pagename> Payments_list </pagename></page>",
            "exactly one <payments>",
        ),
        (
            "<page><payments/><payments/></page>",
            "exactly one <payments>",
        ),
        (
            "<page><payments><user>x</user></payments></page>",
            "expected only <payment>",
        ),
        (
            "<page><payments><payment><amount><value>1</value></amount></payment></payments></page>",
            "holds elements",
        ),
        (
            "<page><payments><payment><amount>1</amount><amount>2</amount></payment></payments></page>",
            "twice",
        ),
    ] {
        let run = answered(body);
        let error = run.error();
        assert_eq!(error.kind, ErrorKind::MalformedResponse, "{body}");
        assert!(
            error.message.contains(mentions),
            "{body}: {}",
            error.message
        );
    }
}
