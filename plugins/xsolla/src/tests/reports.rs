use gatehouse_plugin_api::testkit::query_pairs;
use gatehouse_plugin_api::{Currency, Details, ErrorKind, Method, Money, ReportRecord};
use serde_json::json;

use super::*;

fn report(name: &str, filters: serde_json::Value) -> serde_json::Value {
    json!({"operation": "report", "report": name, "from": 1_767_225_600, "till": 1_769_903_999, "filters": filters})
}

fn money(minor_units: i64, code: &str) -> Money {
    Money::new(minor_units, Currency::from_code(code).expect("currency"))
}

fn records(run: &gatehouse_plugin_api::testkit::FlowRun) -> &[ReportRecord] {
    let Details::Report { records, .. } = &run.outcome().details else {
        panic!("no report: {:?}", run.result)
    };
    records
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
}

#[test]
fn search_reads_the_documented_sample_exactly() {
    let run = run(
        report("search", json!({"user_id": "example-id"})),
        [ok(&format!("[{SEARCH_ELEMENT}]"))],
    );
    let request = run.single_request();
    assert_eq!(request.method, Method::Get);
    assert!(request.retry_safe);
    assert!(request.url.starts_with(
        "http://xsolla.test/merchant/v2/merchants/12345/reports/transactions/search.json?"
    ));
    assert_basic_auth(request);
    assert_eq!(
        query_pairs(request),
        pairs(&[
            ("datetime_from", "2026-01-01T00:00:00Z"),
            ("datetime_to", "2026-01-31T23:59:59Z"),
            ("limit", "100"),
            ("offset", "0"),
            ("type", "all"),
            ("user_id", "example-id")
        ])
    );
    let record = &records(&run)[0];
    assert_eq!(record.id.as_deref(), Some("123456789"));
    assert_eq!(record.status.as_deref(), Some("done"));
    assert_eq!(record.date.as_deref(), Some("2021-10-20"));
    assert_eq!(record.party.as_deref(), Some("example-id"));
    assert_eq!(record.amount, Some(money(796, "RUB")));
    assert_eq!(
        record.amounts.get("simple_checkout"),
        Some(&money(796, "RUB"))
    );
    assert_eq!(
        record.amounts.get("payment_from_ps"),
        Some(&money(796, "RUB"))
    );
    assert_eq!(record.amounts.get("sales_tax"), Some(&money(0, "RUB")));
    assert_eq!(
        record.raw["transaction"]["payment_method"]["name"],
        "PayPal"
    );
}

#[test]
fn search_can_be_asked_for_csv() {
    let csv = "transaction_id,external_id,status,amount,currency,user_id,create_date\r\n\
               555001,ref-1,done,19.99,USD,user-1,2026-01-02\r\n555002,\"ref,2\",refunded,1.234,KWD,user-2,2026-01-03\r\n";
    let run = run(
        report("search", json!({"format": "csv"})),
        [answer(200, csv)],
    );
    let request = run.single_request();
    assert!(
        request.url.contains("/reports/transactions/search.csv?"),
        "{}",
        request.url
    );
    assert!(!query_pairs(request).iter().any(|(key, _)| key == "format"));
    assert_eq!(header(request, "accept"), Some("text/csv"));
    let Details::Report { records, raw_text } = &run.outcome().details else {
        panic!("no report")
    };
    assert_eq!(raw_text.as_deref(), Some(csv));
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].id.as_deref(), Some("555001"));
    assert_eq!(records[0].amount, Some(money(1999, "USD")));
    assert_eq!(records[1].amount, Some(money(1234, "KWD")));
    assert_eq!(records[1].raw["external_id"], "ref,2");

    // The format may come as an extra too.
    let mut command = report("registry", json!({}));
    command["extra"] = json!({"format": "CSV"});
    let run = super::run(command, [answer(200, "")]);
    assert!(run.single_request().url.contains("/registry.csv?"));
}

#[test]
fn registry_sends_dates_and_its_required_parameters() {
    let body = format!(
        "[{}, {}]",
        transaction(1, "done", "500", "JPY", "a"),
        transaction(2, "canceled", "1.234", "KWD", "b")
    );
    let run = run(
        report("registry", json!({"status": "done", "show_total": "true"})),
        [ok(&body)],
    );
    let request = run.single_request();
    assert!(request.url.starts_with(
        "http://xsolla.test/merchant/v2/merchants/12345/reports/transactions/registry.json?"
    ));
    assert_eq!(
        query_pairs(request),
        pairs(&[
            ("datetime_from", "2026-01-01"),
            ("datetime_to", "2026-01-31"),
            ("in_transfer_currency", "0"),
            ("show_total", "true"),
            ("status", "done")
        ])
    );
    let records = records(&run);
    assert_eq!(records[0].amount, Some(money(500, "JPY")));
    assert_eq!(records[1].amount, Some(money(1234, "KWD")));
    assert_eq!(records[1].status.as_deref(), Some("canceled"));
}

#[test]
fn simple_search_transfers_reports_and_breakdown() {
    let run = run(
        report("simple_search", json!({"external_id": "ref-1"})),
        [ok(&format!(
            "[{}]",
            transaction(9, "done", "9.99", "USD", "ref-1")
        ))],
    );
    let request = run.single_request();
    assert!(request.url.starts_with(
        "http://xsolla.test/merchant/v2/merchants/12345/reports/transactions/simple_search?"
    ));
    assert!(query_pairs(request).contains(&("external_id".into(), "ref-1".into())));
    assert_eq!(records(&run)[0].amount, Some(money(999, "USD")));

    let transfers = r#"[{"transfer_id": 71, "date": "2026-01-15", "amount": 1520.5, "currency": "USD", "status": "paid"},
                        {"payout": {"id": 72, "date": "2026-01-20", "amount": "300", "currency": "JPY"}, "canceled": false}]"#;
    let run = super::run(report("transfers", json!({})), [ok(transfers)]);
    let request = run.single_request();
    assert_eq!(
        request.url,
        "http://xsolla.test/merchant/v2/merchants/12345/reports/transfers?datetime_from=2026-01-01&datetime_to=2026-01-31"
    );
    let records = records(&run);
    assert_eq!(records[0].id.as_deref(), Some("71"));
    assert_eq!(records[0].amount, Some(money(152_050, "USD")));
    assert_eq!(records[1].id.as_deref(), Some("72"));
    assert_eq!(records[1].date.as_deref(), Some("2026-01-20"));
    assert_eq!(records[1].amount, Some(money(300, "JPY")));

    let reports = r#"[{"report_id": 5, "year": 2026, "month": 1, "currency": "KWD", "amount": 12.345, "agreement_document_id": "AG-1"}]"#;
    let run = super::run(report("reports", json!({})), [ok(reports)]);
    assert_eq!(
        run.single_request().url,
        "http://xsolla.test/merchant/v2/merchants/12345/reports?datetime_from=2026-01-01&datetime_to=2026-01-31"
    );
    let record = &super::reports::records(&run)[0];
    assert_eq!(record.id.as_deref(), Some("5"));
    assert_eq!(record.date.as_deref(), Some("2026-01"));
    assert_eq!(record.amount, Some(money(12_345, "KWD")));

    let breakdown = r#"[{"currency": "USD", "amount": 19.99, "transactions_count": 2}, {"IsoCurrency": "JPY", "amount": 500}]"#;
    let run = super::run(
        report("payouts_breakdown", json!({"project_id": "678"})),
        [ok(breakdown)],
    );
    assert!(run.single_request().url.starts_with(
        "http://xsolla.test/merchant/v2/merchants/12345/reports/transactions/summary/transfer?"
    ));
    let records = super::reports::records(&run);
    assert_eq!(records[0].id.as_deref(), Some("USD"));
    assert_eq!(records[0].amount, Some(money(1999, "USD")));
    assert_eq!(records[0].description.as_deref(), Some("2 transactions"));
    assert_eq!(records[1].amount, Some(money(500, "JPY")));
}

#[test]
fn transaction_details_reads_one_transaction() {
    let command = json!({"operation": "report", "report": "transaction_details", "filters": {"transaction_id": "555001"}});
    let run = run(
        command,
        [ok(&transaction(555_001, "done", "19.99", "USD", "gh_ref"))],
    );
    assert_eq!(
        run.single_request().url,
        "http://xsolla.test/merchant/v2/merchants/12345/reports/transactions/555001/details"
    );
    let records = records(&run);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].id.as_deref(), Some("555001"));
    assert_eq!(records[0].amount, Some(money(1999, "USD")));
    let run = super::run(
        json!({"operation": "report", "report": "transaction_details"}),
        [],
    );
    assert_eq!(run.error().fields, vec!["filters.transaction_id"]);
}

#[test]
fn report_commands_are_checked_before_any_request() {
    for (command, field) in [
        (report("everything", json!({})), "report"),
        (report("search", json!({"colour": "red"})), "filters.colour"),
        (
            report("simple_search", json!({"format": "csv"})),
            "filters.format",
        ),
        (
            report("transfers", json!({"format": "json"})),
            "filters.format",
        ),
        (report("search", json!({"format": "xml"})), "format"),
        (
            json!({"operation": "report", "report": "registry", "from": -5}),
            "from",
        ),
        (
            json!({"operation": "report", "report": "registry", "till": i64::MAX}),
            "till",
        ),
    ] {
        let run = run(command, []);
        assert!(run.requests.is_empty(), "{field}");
        assert_eq!(run.error().kind, ErrorKind::InvalidRequest);
        assert_eq!(
            run.error().fields,
            vec![field.to_string()],
            "{:?}",
            run.error()
        );
    }
}

#[test]
fn report_errors_and_unusable_answers_fail() {
    for (response, kind) in [
        (
            answer(401, r#"{"message":"Unauthorized"}"#),
            ErrorKind::Authentication,
        ),
        (answer(403, ""), ErrorKind::Authentication),
        (answer(404, ""), ErrorKind::NotFound),
        (
            answer(
                422,
                r#"{"message":"Period too long","extended_message":{"property_errors":{"datetime_to":["max 92 days"]}}}"#,
            ),
            ErrorKind::InvalidRequest,
        ),
        (answer(429, ""), ErrorKind::RateLimited),
        (answer(500, ""), ErrorKind::ProviderUnavailable),
        (
            ok("[{\"transaction\": {\"id\": 1}"),
            ErrorKind::MalformedResponse,
        ),
        (ok("42"), ErrorKind::MalformedResponse),
        (ok("[1]"), ErrorKind::MalformedResponse),
        (
            ok(r#"[{"payment_details": {"payment": {"amount": 7.961, "currency": "USD"}}}]"#),
            ErrorKind::MalformedResponse,
        ),
        (
            ok(r#"[{"payment_details": {"payment": {"amount": 1e3, "currency": "USD"}}}]"#),
            ErrorKind::MalformedResponse,
        ),
    ] {
        let run = run(report("search", json!({})), [response.clone()]);
        assert_eq!(run.error().kind, kind, "{response:?}");
    }
    let run = run(
        report("search", json!({})),
        [answer(
            422,
            r#"{"extended_message":{"property_errors":{"datetime_to":["x"]}}}"#,
        )],
    );
    assert_eq!(run.error().fields, vec!["datetime_to"]);
}
