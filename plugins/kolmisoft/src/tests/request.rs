//! What the plugin sends: parameters, their order, the hash, the method, and what it refuses to send.

use gatehouse_plugin_api::testkit;
use gatehouse_plugin_api::{ErrorKind, HttpResponse, Method, Plugin};
use serde_json::json;

use super::*;
use crate::transformers::signing::payments_get_hash;

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

fn only_request(invocation: &Invocation) -> HttpRequest {
    let run = run(invocation, [HttpResponse::new(200, page_xml(&[]))]);
    run.single_request().clone()
}

#[test]
fn the_documents_test_vector() {
    // "We have s_user_id = 123, API Secret Key = 456789" → the hash in the document's request.
    assert_eq!(
        payments_get_hash(&[("u", "username"), ("user_id_s", "123")], "456789"),
        "f7c3bc1d808e04732adf679965ccc34ca7ae3441"
    );
    assert_eq!(
        expected_hash(&["123"], "456789"),
        "f7c3bc1d808e04732adf679965ccc34ca7ae3441"
    );
}

#[test]
fn the_plugin_signs_with_the_same_function_as_the_test_vector() {
    // With the document's user id and secret, the flow's hash is the vector's construction applied
    // to what it sends: the user id, then the (always sent) period.
    let account = testkit::account(
        BASE,
        &[("username", "username")],
        &[("secret_key", "456789")],
    );
    let invocation =
        testkit::invocation(report_command(None, None, &[("user_id", "123")]), account);
    let request = only_request(&invocation);
    let sent = sent_parameters(&request);
    let from = TODAY_FROM.to_string();
    let till = TODAY_TILL.to_string();
    let hash = expected_hash(&["123", &from, &till], "456789");
    assert_eq!(
        sent,
        pairs(&[
            ("u", "username"),
            ("user_id_s", "123"),
            ("from_s", &from),
            ("till_s", &till),
            ("hash", &hash),
        ])
    );
}

#[test]
fn default_report_posts_the_default_period_signed() {
    let request = only_request(&report(None, None, &[]));
    assert_eq!(request.method, Method::Post);
    assert_eq!(request.url, "http://192.0.2.10/billing/api/payments_get");
    assert!(request.retry_safe, "a report is a read");
    assert!(request.headers.iter().any(
        |(name, value)| name == "Content-Type" && value == "application/x-www-form-urlencoded"
    ));
    let from = TODAY_FROM.to_string();
    let till = TODAY_TILL.to_string();
    let hash = expected_hash(&[&from, &till], SECRET);
    assert_eq!(
        sent_parameters(&request),
        pairs(&[
            ("u", USERNAME),
            ("from_s", &from),
            ("till_s", &till),
            ("hash", &hash)
        ])
    );
    assert!(
        !request.url.contains('?'),
        "POST puts nothing in the query string"
    );
}

#[test]
fn each_filter_alone_is_sent_under_its_documented_name_and_hashed() {
    let from = TODAY_FROM.to_string();
    let till = TODAY_TILL.to_string();
    for (filter, value, wire_name) in [
        ("user_id", "42", "user_id_s"),
        ("username", "john", "username_s"),
        ("first_name", "John", "first_name_s"),
        ("last_name", "Smith-Jones", "last_name_s"),
        ("amount_min", "10.5", "amount_min_s"),
        ("amount_max", "99.9999", "amount_max_s"),
        ("currency", "EUR", "currency_s"),
    ] {
        let request = only_request(&report(None, None, &[(filter, value)]));
        // user_id_s comes before the period in the document's order; every other filter after.
        let (expected_values, expected_pairs) = if wire_name == "user_id_s" {
            (
                vec![value, from.as_str(), till.as_str()],
                vec![
                    ("u", USERNAME),
                    (wire_name, value),
                    ("from_s", &from),
                    ("till_s", &till),
                ],
            )
        } else {
            (
                vec![from.as_str(), till.as_str(), value],
                vec![
                    ("u", USERNAME),
                    ("from_s", &from),
                    ("till_s", &till),
                    (wire_name, value),
                ],
            )
        };
        let hash = expected_hash(&expected_values, SECRET);
        let mut expected = expected_pairs;
        expected.push(("hash", &hash));
        assert_eq!(
            sent_parameters(&request),
            pairs(&expected),
            "filter {filter}"
        );
    }
}

#[test]
fn all_filters_combined_follow_the_documents_order() {
    let request = only_request(&report(
        Some(1_700_000_000),
        Some(1_700_086_399),
        // Given in an order unlike the document's: the plugin reorders.
        &[
            ("currency", "USD"),
            ("amount_max", "100"),
            ("last_name", "Smith"),
            ("username", "jsmith"),
            ("amount_min", "0.01"),
            ("first_name", "John"),
            ("user_id", "7"),
        ],
    ));
    let values = [
        "7",
        "1700000000",
        "1700086399",
        "jsmith",
        "John",
        "Smith",
        "0.01",
        "100",
        "USD",
    ];
    let hash = expected_hash(&values, SECRET);
    assert_eq!(
        sent_parameters(&request),
        pairs(&[
            ("u", USERNAME),
            ("user_id_s", "7"),
            ("from_s", "1700000000"),
            ("till_s", "1700086399"),
            ("username_s", "jsmith"),
            ("first_name_s", "John"),
            ("last_name_s", "Smith"),
            ("amount_min_s", "0.01"),
            ("amount_max_s", "100"),
            ("currency_s", "USD"),
            ("hash", &hash),
        ])
    );
}

#[test]
fn filter_values_are_trimmed_and_sent_exactly_as_hashed() {
    let request = only_request(&report(
        None,
        None,
        &[("first_name", "  Zoë & Åsa "), ("amount_min", " 10.5000 ")],
    ));
    let sent = sent_parameters(&request);
    assert!(sent.contains(&("first_name_s".into(), "Zoë & Åsa".into())));
    assert!(
        sent.contains(&("amount_min_s".into(), "10.5000".into())),
        "no reformatting: {sent:?}"
    );
    let from = TODAY_FROM.to_string();
    let till = TODAY_TILL.to_string();
    let hash = expected_hash(&[&from, &till, "Zoë & Åsa", "10.5000"], SECRET);
    assert_eq!(sent.last(), Some(&("hash".to_string(), hash)));
}

#[test]
fn the_period_is_sent_as_given_or_defaulted_per_end() {
    let parameters = |invocation: &Invocation| {
        let sent = sent_parameters(&only_request(invocation));
        let get = |name: &str| {
            sent.iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.parse::<i64>().unwrap())
        };
        (get("from_s"), get("till_s"))
    };
    assert_eq!(
        parameters(&report(Some(100), Some(200), &[])),
        (Some(100), Some(200))
    );
    assert_eq!(
        parameters(&report(Some(TODAY_FROM + 60), None, &[])),
        (Some(TODAY_FROM + 60), Some(TODAY_TILL))
    );
    assert_eq!(
        parameters(&report(None, Some(TODAY_TILL + 5), &[])),
        (Some(TODAY_FROM), Some(TODAY_TILL + 5))
    );
    // The same instant both ends: a one-second period is a period.
    assert_eq!(
        parameters(&report(Some(500), Some(500), &[])),
        (Some(500), Some(500))
    );
}

#[test]
fn the_default_period_follows_utc_offset_seconds() {
    let with_offset = |offset: &str| {
        let invocation = testkit::invocation(
            report_command(None, None, &[]),
            account_with(&[("utc_offset_seconds", offset)]),
        );
        let sent = sent_parameters(&only_request(&invocation));
        (
            sent[1].1.parse::<i64>().unwrap(),
            sent[2].1.parse::<i64>().unwrap(),
        )
    };
    // 2026-01-01T00:00Z is 02:00 on January 1st at UTC+2: that day began at 22:00Z the day before.
    assert_eq!(
        with_offset("7200"),
        (TODAY_FROM - 7200, TODAY_FROM - 7200 + 86_399)
    );
    // ... and 23:00 on December 31st at UTC-1: that day began at 01:00Z on December 31st.
    assert_eq!(
        with_offset("-3600"),
        (TODAY_FROM - 86_400 + 3600, TODAY_FROM + 3600 - 1)
    );
    assert_eq!(with_offset("0"), (TODAY_FROM, TODAY_TILL));
}

#[test]
fn get_only_when_the_account_allows_it() {
    let invocation = testkit::invocation(
        report_command(None, None, &[("user_id", "5")]),
        account_with(&[("allow_get", "true")]),
    );
    let request = only_request(&invocation);
    assert_eq!(request.method, Method::Get);
    assert!(
        request.url.starts_with(
            "http://192.0.2.10/billing/api/payments_get?u=api_admin&user_id_s=5&from_s="
        )
    );
    assert!(request.body.is_empty());
    assert!(request.retry_safe);
    assert!(
        request.sensitive_headers.contains(&"hash".to_string()),
        "the host must not log the hash"
    );
    let post_request = only_request(&report(None, None, &[("user_id", "5")]));
    assert_eq!(
        sent_parameters(&request),
        sent_parameters(&post_request),
        "same parameters either way"
    );

    for off in ["false", "0", "no"] {
        let invocation = testkit::invocation(
            report_command(None, None, &[]),
            account_with(&[("allow_get", off)]),
        );
        assert_eq!(only_request(&invocation).method, Method::Post, "{off}");
    }
}

/// Each of these is refused before any request, as an invalid request naming its field.
#[test]
fn invalid_commands_are_refused_before_any_request() {
    let cases: Vec<(Invocation, Vec<&str>)> = vec![
        (
            report(None, None, &[("amount_min", "1e5")]),
            vec!["filters.amount_min"],
        ),
        (
            report(None, None, &[("amount_max", "1,000")]),
            vec!["filters.amount_max"],
        ),
        (
            report(None, None, &[("amount_max", "ten")]),
            vec!["filters.amount_max"],
        ),
        (
            report(None, None, &[("amount_min", "")]),
            vec!["filters.amount_min"],
        ),
        (
            report(
                None,
                None,
                &[("amount_min", "99999999999999999999999999999999999")],
            ),
            vec!["filters.amount_min"],
        ),
        (
            report(None, None, &[("amount_min", "10"), ("amount_max", "9.99")]),
            vec!["filters.amount_min", "filters.amount_max"],
        ),
        (
            report(None, None, &[("user_id", "12a")]),
            vec!["filters.user_id"],
        ),
        (
            report(None, None, &[("user_id", " ")]),
            vec!["filters.user_id"],
        ),
        (
            report(None, None, &[("username", "bad\u{0}name")]),
            vec!["filters.username"],
        ),
        (
            report(None, None, &[("last_name", &"x".repeat(300))]),
            vec!["filters.last_name"],
        ),
        (
            report(None, None, &[("currency", "U$D")]),
            vec!["filters.currency"],
        ),
        (report(Some(200), Some(100), &[]), vec!["from", "till"]),
        (
            report(Some(TODAY_TILL + 1), None, &[]),
            vec!["from", "till"],
        ),
        (report(Some(-1), None, &[]), vec!["from"]),
        (report(None, Some(-5), &[]), vec!["till"]),
        (
            testkit::invocation(
                json!({"operation": "report", "report": "calls"}),
                account_with(&[]),
            ),
            vec!["report"],
        ),
        (
            testkit::invocation(
                json!({"operation": "report", "report": "payments", "extra": {"page": 2}}),
                account_with(&[]),
            ),
            vec!["extra.page"],
        ),
        (
            testkit::invocation(
                report_command(None, None, &[]),
                testkit::account(BASE, &[], &[("secret_key", SECRET)]),
            ),
            vec!["username"],
        ),
        (
            testkit::invocation(
                report_command(None, None, &[]),
                testkit::account(BASE, &[("username", "u")], &[]),
            ),
            vec!["secret_key"],
        ),
        (
            testkit::invocation(
                report_command(None, None, &[]),
                testkit::account(BASE, &[("username", "u")], &[("secret_key", "")]),
            ),
            vec!["secret_key"],
        ),
        (
            testkit::invocation(
                report_command(None, None, &[]),
                account_with(&[("allow_get", "maybe")]),
            ),
            vec!["allow_get"],
        ),
        (
            testkit::invocation(
                report_command(None, None, &[]),
                account_with(&[("utc_offset_seconds", "+2h")]),
            ),
            vec!["utc_offset_seconds"],
        ),
        (
            testkit::invocation(
                report_command(None, None, &[]),
                account_with(&[("utc_offset_seconds", "90000")]),
            ),
            vec!["utc_offset_seconds"],
        ),
        (
            testkit::invocation(
                report_command(None, None, &[]),
                testkit::account(
                    "192.0.2.10/billing",
                    &[("username", "u")],
                    &[("secret_key", SECRET)],
                ),
            ),
            vec!["base_url"],
        ),
    ];
    for (invocation, fields) in cases {
        let run = run(&invocation, []);
        assert!(
            run.requests.is_empty(),
            "{:?} sent a request",
            invocation.command
        );
        let error = run.error();
        assert_eq!(
            error.kind,
            ErrorKind::InvalidRequest,
            "{:?}: {error:?}",
            invocation.command
        );
        assert_eq!(
            error.fields, fields,
            "{:?}: {}",
            invocation.command, error.message
        );
    }
}

#[test]
fn unknown_filters_are_refused_by_name_before_any_request() {
    let run = run(
        &report(
            None,
            None,
            &[("user_id", "1"), ("status", "paid"), ("user_id_s", "1")],
        ),
        [],
    );
    assert!(run.requests.is_empty());
    let error = run.error();
    assert_eq!(error.kind, ErrorKind::InvalidRequest);
    assert_eq!(error.fields, vec!["filters.status", "filters.user_id_s"]);
    assert!(
        error.message.contains("`status`") && error.message.contains("`user_id_s`"),
        "{}",
        error.message
    );
    assert!(
        error.message.contains("user_id, username, first_name"),
        "names the accepted filters: {}",
        error.message
    );
}

#[test]
fn other_operations_are_not_supported() {
    for command in [
        json!({"operation": "charge", "amount": {"minor_units": 100, "currency": "USD"}}),
        json!({"operation": "balance"}),
        json!({"operation": "status", "transaction_id": "1"}),
    ] {
        let run = run(&testkit::invocation(command.clone(), account_with(&[])), []);
        assert!(run.requests.is_empty());
        assert_eq!(run.error().kind, ErrorKind::NotSupported, "{command}");
    }
}

#[test]
fn the_manifest_declares_what_the_plugin_does() {
    let manifest = Kolmisoft::manifest();
    assert_eq!(manifest.validate(), Ok(()));
    assert_eq!(manifest.provider, "kolmisoft");
    assert_eq!(manifest.plugin_version, "1.0.0");
    assert_eq!(
        manifest.operations,
        vec![gatehouse_plugin_api::Operation::Report]
    );
    assert_eq!(manifest.reports, vec!["payments".to_string()]);
    let key = |name: &str| manifest.config_key(name).unwrap().clone();
    assert!(key("username").required && !key("username").secret);
    assert!(key("secret_key").required && key("secret_key").secret);
    assert!(!key("allow_get").required && !key("allow_get").secret);
    assert!(!key("utc_offset_seconds").required && !key("utc_offset_seconds").secret);
}
