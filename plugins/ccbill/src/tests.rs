//! Unit tests of the CCBill DataLink flows through the testkit: scripted answers, no sockets.

use gatehouse_plugin_api::testkit::{self, FlowRun, decode_form};
use gatehouse_plugin_api::{
    AccountConfig, Details, ErrorKind, HttpResponse, Invocation, Method, OutcomeStatus, Plugin,
};
use serde_json::json;

use crate::CcBill;
use crate::transformers::documented_codes;

const BASE: &str = "http://datalink.test";
const ENDPOINT: &str = "http://datalink.test/utils/subscriptionManagement.cgi";
/// Credentials with characters that form encoding changes, so redaction is tested on both forms.
const USERNAME: &str = "dl_user_7781";
const PASSWORD: &str = "S3cr&t p@ss=w0rd";

fn main_account(format: &str, using_subacc: Option<&str>) -> AccountConfig {
    let mut settings = vec![
        ("client_accnum", "999999"),
        ("username", USERNAME),
        ("response_format", format),
    ];
    if let Some(subacc) = using_subacc {
        settings.push(("using_subacc", subacc));
    }
    testkit::account(BASE, &settings, &[("password", PASSWORD)])
}

fn sub_account(format: &str) -> AccountConfig {
    testkit::account(
        BASE,
        &[
            ("client_accnum", "999999"),
            ("client_subacc", "0001"),
            ("username", USERNAME),
            ("response_format", format),
        ],
        &[("password", PASSWORD)],
    )
}

fn payout_command() -> serde_json::Value {
    json!({"operation": "affiliate_payout", "affiliate_id": "123456",
           "amount": {"minor_units": 1495, "currency": "USD"},
           "original_subscription_id": "1234567891"})
}

fn refund_command(transaction_type: &str) -> serde_json::Value {
    json!({"operation": "affiliate_refund", "affiliate_id": "123456",
           "subscription_id": "1234567890", "original_subscription_id": "1234567891",
           "transaction_type": transaction_type})
}

fn payout(account: AccountConfig) -> Invocation {
    testkit::invocation(payout_command(), account)
}

fn refund(account: AccountConfig, transaction_type: &str) -> Invocation {
    testkit::invocation(refund_command(transaction_type), account)
}

fn csv(code: &str) -> HttpResponse {
    HttpResponse::new(200, format!("\"results\"\n\"{code}\"\n"))
}

fn xml(code: &str) -> HttpResponse {
    HttpResponse::new(
        200,
        format!("<?xml version='1.0'?><results>{code}</results>"),
    )
}

fn run(invocation: &Invocation, response: HttpResponse) -> FlowRun {
    testkit::run::<CcBill>(invocation, b"", [response])
}

fn form_of(run: &FlowRun) -> Vec<(String, String)> {
    let request = run.single_request();
    decode_form(std::str::from_utf8(&request.body).expect("form bodies are text"))
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
}

fn error_kind(run: &FlowRun) -> Option<ErrorKind> {
    run.outcome().error.as_ref().map(|error| error.kind)
}

#[test]
fn manifest_is_valid_and_marks_the_password_secret() {
    let manifest = CcBill::manifest();
    assert_eq!(manifest.validate(), Ok(()));
    assert_eq!(manifest.provider, "ccbill");
    assert_eq!(manifest.plugin_version, "1.0.0");
    assert_eq!(
        manifest.default_base_url.as_deref(),
        Some("https://datalink.ccbill.com")
    );
    let secrets: Vec<&str> = manifest
        .config_keys
        .iter()
        .filter(|key| key.secret)
        .map(|key| key.name.as_str())
        .collect();
    assert_eq!(secrets, vec!["password"]);
    let required: Vec<&str> = manifest
        .config_keys
        .iter()
        .filter(|key| key.required)
        .map(|key| key.name.as_str())
        .collect();
    assert_eq!(required, vec!["client_accnum", "username", "password"]);
}

#[test]
fn payout_with_main_account_credentials_posts_the_seed_parameters_as_csv() {
    let run = run(&payout(main_account("csv", Some("0002"))), csv("1"));
    let request = run.single_request();
    assert_eq!(request.method, Method::Post);
    assert_eq!(
        request.url, ENDPOINT,
        "no query string: the password travels in the body"
    );
    assert!(
        !request.retry_safe,
        "CCBill has no idempotency key for payouts"
    );
    assert!(request.headers.contains(&(
        "Content-Type".into(),
        "application/x-www-form-urlencoded".into()
    )));
    assert_eq!(
        form_of(&run),
        pairs(&[
            ("clientAccnum", "999999"),
            ("usingSubacc", "0002"),
            ("username", USERNAME),
            ("password", PASSWORD),
            ("action", "addAffiliatePayout"),
            ("affiliateId", "123456"),
            ("originalSubId", "1234567891"),
            ("amount", "14.95"),
        ])
    );
    let outcome = run.outcome();
    assert_eq!(outcome.status, OutcomeStatus::Succeeded);
    assert_eq!(outcome.amount.map(|amount| amount.minor_units), Some(1495));
    let Details::Transaction(info) = &outcome.details else {
        panic!("no transaction details")
    };
    assert_eq!(info.reference.as_deref(), Some("gh_test_reference"));
    assert_eq!(info.provider_status.as_deref(), Some("1"));
}

#[test]
fn payout_with_sub_account_credentials_asks_for_xml() {
    let run = run(&payout(sub_account("xml")), xml("1"));
    assert_eq!(
        form_of(&run),
        pairs(&[
            ("clientAccnum", "999999"),
            ("clientSubacc", "0001"),
            ("username", USERNAME),
            ("password", PASSWORD),
            ("action", "addAffiliatePayout"),
            ("returnXML", "1"),
            ("affiliateId", "123456"),
            ("originalSubId", "1234567891"),
            ("amount", "14.95"),
        ])
    );
    assert_eq!(run.outcome().status, OutcomeStatus::Succeeded);
}

#[test]
fn payout_without_an_original_subscription_leaves_the_parameter_out() {
    let mut command = payout_command();
    command
        .as_object_mut()
        .expect("object")
        .remove("original_subscription_id");
    command["amount"] = json!({"minor_units": 100000, "currency": "USD"});
    let run = run(&testkit::invocation(command, sub_account("csv")), csv("1"));
    let form = form_of(&run);
    assert!(
        !form.iter().any(|(key, _)| key == "originalSubId"),
        "{form:?}"
    );
    assert!(
        form.contains(&("amount".into(), "1000.00".into())),
        "{form:?}"
    );
}

#[test]
fn refunds_in_both_formats_for_main_and_sub_account_credentials() {
    let accounts = [
        ("main", main_account("csv", None)),
        ("main acting on 0002", main_account("csv", Some("0002"))),
        ("sub", sub_account("csv")),
        ("main xml", main_account("xml", None)),
        ("main acting on 0002 xml", main_account("xml", Some("0002"))),
        ("sub xml", sub_account("xml")),
    ];
    for (label, account) in accounts {
        let xml_account = account.setting("response_format") == Some("xml");
        let answer = if xml_account { xml("1") } else { csv("1") };
        let run = run(&refund(account.clone(), "one_time"), answer);
        let form = form_of(&run);
        let request = run.single_request();
        assert_eq!(request.url, ENDPOINT, "{label}");
        assert!(!request.retry_safe, "{label}");
        let mut expected = vec![("clientAccnum", "999999")];
        if let Some(subacc) = account.setting("client_subacc") {
            expected.push(("clientSubacc", subacc));
        }
        if let Some(subacc) = account.setting("using_subacc") {
            expected.push(("usingSubacc", subacc));
        }
        expected.extend([
            ("username", USERNAME),
            ("password", PASSWORD),
            ("action", "addAffiliateRefund"),
        ]);
        if xml_account {
            expected.push(("returnXML", "1"));
        }
        expected.extend([
            ("affiliateId", "123456"),
            ("subscriptionId", "1234567890"),
            ("originalSubId", "1234567891"),
            ("transType", "ONETIME"),
        ]);
        assert_eq!(form, pairs(&expected), "{label}");
        let outcome = run.outcome();
        assert_eq!(outcome.status, OutcomeStatus::Succeeded, "{label}");
        assert_eq!(outcome.amount, None, "{label}: a refund names no amount");
    }
}

#[test]
fn transaction_types_are_normalized_to_the_wire_tokens() {
    for (given, wire) in [
        ("one_time", "ONETIME"),
        ("One-Time", "ONETIME"),
        ("ONETIME", "ONETIME"),
        ("recurring", "RECURRING"),
        (" Recurring ", "RECURRING"),
        ("rebill", "REBILL"),
        ("REBILL", "REBILL"),
    ] {
        let run = run(&refund(sub_account("csv"), given), csv("1"));
        assert!(
            form_of(&run).contains(&("transType".into(), wire.into())),
            "{given}"
        );
    }
}

#[test]
fn every_documented_result_code_maps_in_both_formats() {
    use ErrorKind::*;
    let expectations: &[(i64, OutcomeStatus, Option<ErrorKind>)] = &[
        (1, OutcomeStatus::Succeeded, None),
        (0, OutcomeStatus::Failed, Some(ProviderError)),
        (-1, OutcomeStatus::Failed, Some(Authentication)),
        (-2, OutcomeStatus::Failed, Some(InvalidRequest)),
        (-3, OutcomeStatus::Failed, Some(NotFound)),
        (-4, OutcomeStatus::Failed, Some(NotFound)),
        (-5, OutcomeStatus::Failed, Some(InvalidRequest)),
        (-6, OutcomeStatus::Failed, Some(InvalidRequest)),
        (-7, OutcomeStatus::Unknown, Some(Authentication)),
        (-8, OutcomeStatus::Failed, Some(Authentication)),
        (-9, OutcomeStatus::Failed, Some(Authentication)),
        (-10, OutcomeStatus::Failed, Some(Authentication)),
        (-11, OutcomeStatus::Failed, Some(Declined)),
        (-12, OutcomeStatus::Failed, Some(RateLimited)),
        (-15, OutcomeStatus::Failed, Some(Declined)),
        (-16, OutcomeStatus::Failed, Some(Declined)),
        (-23, OutcomeStatus::Failed, Some(Declined)),
        (-24, OutcomeStatus::Failed, Some(Declined)),
    ];
    let listed: Vec<i64> = expectations.iter().map(|(code, _, _)| *code).collect();
    assert_eq!(
        listed,
        documented_codes().collect::<Vec<_>>(),
        "the table and the tests agree"
    );
    for (code, status, kind) in expectations {
        for (label, invocation, answer) in [
            (
                "payout csv",
                payout(main_account("csv", Some("0002"))),
                csv(&code.to_string()),
            ),
            (
                "payout xml",
                payout(sub_account("xml")),
                xml(&code.to_string()),
            ),
            (
                "refund csv",
                refund(sub_account("csv"), "rebill"),
                csv(&code.to_string()),
            ),
            (
                "refund xml",
                refund(main_account("xml", None), "recurring"),
                xml(&code.to_string()),
            ),
        ] {
            let run = run(&invocation, answer);
            let outcome = run.outcome();
            assert_eq!(outcome.status, *status, "{label} {code}");
            assert_eq!(error_kind(&run), *kind, "{label} {code}");
            if let Some(error) = &outcome.error {
                assert_eq!(
                    error.provider_code.as_deref(),
                    Some(code.to_string().as_str()),
                    "{label} {code}"
                );
                assert!(
                    error
                        .provider_message
                        .as_ref()
                        .is_some_and(|text| !text.is_empty()),
                    "{label} {code}: CCBill's own text"
                );
            }
        }
    }
}

#[test]
fn result_codes_carry_ccbill_text_and_the_fields_they_name() {
    let lockout = run(&refund(sub_account("csv"), "rebill"), csv("-12"));
    let error = lockout.outcome().error.clone().expect("error");
    assert!(
        error
            .provider_message
            .as_deref()
            .is_some_and(|text| text.contains("3 or more times in the last hour"))
    );
    let invalid = run(&refund(sub_account("csv"), "rebill"), csv("-2"));
    let error = invalid.outcome().error.clone().expect("error");
    assert_eq!(
        error.fields,
        vec![
            "subscription_id".to_string(),
            "original_subscription_id".to_string()
        ]
    );
    let internal = run(&payout(sub_account("csv")), csv("-7"));
    let error = internal.outcome().error.clone().expect("error");
    assert!(
        error.message.contains("may or may not have run"),
        "{}",
        error.message
    );
}

#[test]
fn undocumented_result_codes_are_unknown_with_the_code_kept() {
    for code in ["-13", "-14", "-17", "-22", "2", "-99", "+3", "1234567890"] {
        for (invocation, answer) in [
            (payout(sub_account("csv")), csv(code)),
            (refund(main_account("xml", None), "one_time"), xml(code)),
        ] {
            let run = run(&invocation, answer);
            let outcome = run.outcome();
            assert_eq!(outcome.status, OutcomeStatus::Unknown, "{code}");
            let error = outcome.error.as_ref().expect("error");
            assert_eq!(error.kind, ErrorKind::ProviderError, "{code}");
            let kept = code.trim_start_matches('+');
            assert_eq!(error.provider_code.as_deref(), Some(kept), "{code}");
        }
    }
}

#[test]
fn either_format_is_read_whatever_the_account_asked_for() {
    assert_eq!(
        run(&payout(sub_account("csv")), xml("1")).outcome().status,
        OutcomeStatus::Succeeded
    );
    assert_eq!(
        run(&payout(sub_account("xml")), csv("1")).outcome().status,
        OutcomeStatus::Succeeded
    );
    // The seed prints the CSV answer flattened on one line.
    let flattened = HttpResponse::new(200, "\"results\" \"1\"");
    assert_eq!(
        run(&payout(sub_account("csv")), flattened).outcome().status,
        OutcomeStatus::Succeeded
    );
}

#[test]
fn plain_text_login_refusals_are_authentication_failures() {
    for body in [
        "authentication failed",
        "Access Denied",
        "Invalid username or password\n",
    ] {
        for invocation in [
            payout(sub_account("csv")),
            refund(main_account("xml", None), "rebill"),
        ] {
            let run = run(&invocation, HttpResponse::new(200, body));
            assert_eq!(run.outcome().status, OutcomeStatus::Failed, "{body}");
            assert_eq!(error_kind(&run), Some(ErrorKind::Authentication), "{body}");
        }
    }
}

/// Bodies that are not a result document: the request was sent, so the action may have run.
fn malformed_bodies() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("empty", Vec::new()),
        ("blank", b" \r\n\t ".to_vec()),
        (
            "html",
            b"<html><head><title>502</title></head><body>Bad Gateway</body></html>".to_vec(),
        ),
        (
            "truncated xml",
            b"<?xml version='1.0'?><results>1</res".to_vec(),
        ),
        ("unclosed xml", b"<?xml version='1.0'?><results>1".to_vec()),
        (
            "xml with children",
            b"<?xml version='1.0'?><results><r>1</r></results>".to_vec(),
        ),
        (
            "xml other root",
            b"<?xml version='1.0'?><result>1</result>".to_vec(),
        ),
        (
            "xml doctype",
            b"<!DOCTYPE results [<!ENTITY x SYSTEM 'file:///etc/passwd'>]><results>&x;</results>"
                .to_vec(),
        ),
        ("csv without header", b"\"1\"\n".to_vec()),
        ("bare code", b"1".to_vec()),
        ("csv header only", b"\"results\"\n".to_vec()),
        ("csv truncated quote", b"\"results\"\n\"1".to_vec()),
        ("csv extra rows", b"\"results\"\n\"1\"\n\"1\"\n".to_vec()),
        ("csv text value", b"\"results\"\n\"OK\"\n".to_vec()),
        ("json", br#"{"results": 1}"#.to_vec()),
        ("garbage", b"\x00\x01garbage\x02".to_vec()),
        ("invalid utf-8", vec![0xff, 0xfe, 0xfd, b'1']),
        ("huge", vec![b'1'; 2 * 1024 * 1024]),
        (
            "huge csv",
            format!("\"results\"\n\"{}\"\n", "1".repeat(100_000)).into_bytes(),
        ),
        (
            "code overflow",
            b"\"results\"\n\"99999999999999999999999\"\n".to_vec(),
        ),
    ]
}

#[test]
fn malformed_answers_are_unknown_never_panics() {
    for (label, body) in malformed_bodies() {
        for invocation in [
            payout(main_account("csv", Some("0002"))),
            payout(sub_account("xml")),
            refund(main_account("csv", None), "one_time"),
            refund(sub_account("xml"), "recurring"),
        ] {
            let run = run(&invocation, HttpResponse::new(200, body.clone()));
            let outcome = run.outcome();
            assert_eq!(outcome.status, OutcomeStatus::Unknown, "{label}");
            let error = outcome.error.as_ref().expect("error");
            assert_eq!(error.kind, ErrorKind::MalformedResponse, "{label}");
            assert!(
                error
                    .provider_message
                    .as_ref()
                    .is_none_or(|text| text.chars().count() <= 513),
                "{label}"
            );
        }
    }
}

#[test]
fn http_failures_are_unknown_when_the_action_may_have_run() {
    for (status, expected, kind) in [
        (500, OutcomeStatus::Unknown, ErrorKind::ProviderUnavailable),
        (502, OutcomeStatus::Unknown, ErrorKind::ProviderUnavailable),
        (503, OutcomeStatus::Unknown, ErrorKind::ProviderUnavailable),
        (504, OutcomeStatus::Unknown, ErrorKind::ProviderUnavailable),
        (408, OutcomeStatus::Unknown, ErrorKind::ProviderUnavailable),
        (401, OutcomeStatus::Failed, ErrorKind::Authentication),
        (403, OutcomeStatus::Failed, ErrorKind::Authentication),
        (404, OutcomeStatus::Failed, ErrorKind::ProviderUnavailable),
        (400, OutcomeStatus::Failed, ErrorKind::InvalidRequest),
        (429, OutcomeStatus::Failed, ErrorKind::RateLimited),
        (302, OutcomeStatus::Failed, ErrorKind::ProviderUnavailable),
    ] {
        let run = run(
            &payout(sub_account("csv")),
            HttpResponse::new(status, "<html>error</html>"),
        );
        assert_eq!(run.outcome().status, expected, "{status}");
        assert_eq!(error_kind(&run), Some(kind), "{status}");
        assert_eq!(
            run.outcome()
                .error
                .as_ref()
                .and_then(|error| error.provider_code.clone()),
            Some(status.to_string())
        );
    }
}

#[test]
fn the_account_configuration_is_checked_before_any_request() {
    let base = [("client_accnum", "999999"), ("username", USERNAME)];
    let with = |extra: &[(&str, &str)], without: &[&str], secrets: &[(&str, &str)]| {
        let mut settings: Vec<(&str, &str)> = base
            .iter()
            .copied()
            .filter(|(key, _)| !without.contains(key))
            .collect();
        settings.extend_from_slice(extra);
        testkit::account(BASE, &settings, secrets)
    };
    let password: &[(&str, &str)] = &[("password", PASSWORD)];
    let cases: Vec<(&str, AccountConfig, Vec<&str>)> = vec![
        (
            "no accnum",
            with(&[], &["client_accnum"], password),
            vec!["client_accnum"],
        ),
        (
            "5-digit accnum",
            with(&[("client_accnum", "99999")], &["client_accnum"], password),
            vec!["client_accnum"],
        ),
        (
            "letters in accnum",
            with(&[("client_accnum", "99999a")], &["client_accnum"], password),
            vec!["client_accnum"],
        ),
        (
            "no username",
            with(&[], &["username"], password),
            vec!["username"],
        ),
        (
            "blank username",
            with(&[("username", "  ")], &["username"], password),
            vec!["username"],
        ),
        ("no password", with(&[], &[], &[]), vec!["password"]),
        (
            "empty password",
            with(&[], &[], &[("password", "")]),
            vec!["password"],
        ),
        (
            "both sub-account parameters",
            with(
                &[("client_subacc", "0001"), ("using_subacc", "0002")],
                &[],
                password,
            ),
            vec!["client_subacc", "using_subacc"],
        ),
        (
            "3-digit client_subacc",
            with(&[("client_subacc", "001")], &[], password),
            vec!["client_subacc"],
        ),
        (
            "5-digit using_subacc",
            with(&[("using_subacc", "00002")], &[], password),
            vec!["using_subacc"],
        ),
        (
            "unknown format",
            with(&[("response_format", "json")], &[], password),
            vec!["response_format"],
        ),
    ];
    for (label, account, fields) in cases {
        for invocation in [payout(account.clone()), refund(account.clone(), "rebill")] {
            let run = testkit::run::<CcBill>(&invocation, b"", []);
            assert!(run.requests.is_empty(), "{label}");
            assert_eq!(run.error().kind, ErrorKind::InvalidRequest, "{label}");
            assert_eq!(
                run.error().fields,
                fields,
                "{label}: {}",
                run.error().message
            );
        }
    }
    // An empty sub-account setting counts as unset.
    let run = run(
        &refund(with(&[("using_subacc", "")], &[], password), "rebill"),
        csv("1"),
    );
    assert!(!form_of(&run).iter().any(|(key, _)| key == "usingSubacc"));
}

#[test]
fn a_payout_with_main_account_credentials_must_name_the_sub_account() {
    let refused = testkit::run::<CcBill>(&payout(main_account("csv", None)), b"", []);
    assert!(refused.requests.is_empty());
    assert_eq!(refused.error().kind, ErrorKind::InvalidRequest);
    assert_eq!(refused.error().fields, vec!["using_subacc".to_string()]);
    // A refund with the same account is allowed: the seed only requires it for payouts.
    let allowed = run(&refund(main_account("csv", None), "rebill"), csv("1"));
    assert_eq!(allowed.outcome().status, OutcomeStatus::Succeeded);
}

#[test]
fn commands_are_checked_before_any_request() {
    let cases = vec![
        (
            json!({"operation": "affiliate_payout", "affiliate_id": "1",
                "amount": {"minor_units": 1495, "currency": "EUR"}}),
            "amount.currency",
        ),
        (
            json!({"operation": "affiliate_payout", "affiliate_id": "1",
                "amount": {"minor_units": 0, "currency": "USD"}}),
            "amount.minor_units",
        ),
        (
            json!({"operation": "affiliate_payout", "affiliate_id": "1",
                "amount": {"minor_units": -5, "currency": "USD"}}),
            "amount.minor_units",
        ),
        (
            json!({"operation": "affiliate_payout", "affiliate_id": " ",
                "amount": {"minor_units": 5, "currency": "USD"}}),
            "affiliate_id",
        ),
        (
            json!({"operation": "affiliate_payout", "affiliate_id": "1",
                "amount": {"minor_units": 5, "currency": "USD"}, "original_subscription_id": ""}),
            "original_subscription_id",
        ),
        (
            json!({"operation": "affiliate_payout", "affiliate_id": "1\n2",
                "amount": {"minor_units": 5, "currency": "USD"}}),
            "affiliate_id",
        ),
        (
            json!({"operation": "affiliate_payout", "affiliate_id": "9".repeat(65),
                "amount": {"minor_units": 5, "currency": "USD"}}),
            "affiliate_id",
        ),
        (refund_command("chargeback"), "transaction_type"),
        (refund_command(""), "transaction_type"),
        (
            json!({"operation": "affiliate_refund", "affiliate_id": "", "subscription_id": "1",
                "original_subscription_id": "1", "transaction_type": "rebill"}),
            "affiliate_id",
        ),
        (
            json!({"operation": "affiliate_refund", "affiliate_id": "1", "subscription_id": "",
                "original_subscription_id": "1", "transaction_type": "rebill"}),
            "subscription_id",
        ),
        (
            json!({"operation": "affiliate_refund", "affiliate_id": "1", "subscription_id": "1",
                "original_subscription_id": " ", "transaction_type": "rebill"}),
            "original_subscription_id",
        ),
    ];
    for (command, field) in cases {
        let label = command.to_string();
        let run =
            testkit::run::<CcBill>(&testkit::invocation(command, sub_account("csv")), b"", []);
        assert!(run.requests.is_empty(), "{label}");
        assert_eq!(run.error().kind, ErrorKind::InvalidRequest, "{label}");
        assert_eq!(run.error().fields, vec![field.to_string()], "{label}");
    }
}

#[test]
fn other_operations_are_not_supported() {
    for command in [
        json!({"operation": "refund", "transaction_id": "1"}),
        json!({"operation": "status", "transaction_id": "1"}),
        json!({"operation": "charge", "amount": {"minor_units": 5, "currency": "USD"}}),
    ] {
        let run =
            testkit::run::<CcBill>(&testkit::invocation(command, sub_account("csv")), b"", []);
        assert!(run.requests.is_empty());
        assert_eq!(run.error().kind, ErrorKind::NotSupported);
    }
}

#[test]
fn an_account_without_a_base_url_uses_ccbill_production() {
    let mut account = sub_account("csv");
    account.base_url = String::new();
    let run = run(&payout(account), csv("1"));
    assert_eq!(
        run.single_request().url,
        "https://datalink.ccbill.com/utils/subscriptionManagement.cgi"
    );
}

#[test]
fn credentials_never_appear_in_errors_or_outcomes() {
    let encoded_password = gatehouse_plugin_api::http::encode_form(&[("p", PASSWORD)]);
    let encoded_password = encoded_password.trim_start_matches("p=").to_string();
    let echo_of_request = format!(
        "<html><body>Bad request: clientAccnum=999999&username={USERNAME}&password={encoded_password}&action=x \
         (decoded: {PASSWORD})</body></html>"
    );
    let mut answers: Vec<HttpResponse> = vec![
        HttpResponse::new(500, echo_of_request.clone()),
        HttpResponse::new(403, echo_of_request.clone()),
        HttpResponse::new(400, echo_of_request.clone()),
        HttpResponse::new(200, echo_of_request.clone()),
        HttpResponse::new(200, format!("Access denied for {USERNAME} / {PASSWORD}")),
        HttpResponse::new(200, format!("\"results\"\n\"{PASSWORD}\"\n")),
        HttpResponse::new(200, format!("<results>{encoded_password}</results>")),
        HttpResponse::new(
            200,
            format!("Error: 02 failed login for {USERNAME}:{PASSWORD}"),
        ),
        HttpResponse::new(200, format!("Error: 04 {encoded_password}")),
    ];
    answers.extend(documented_codes().map(|code| csv(&code.to_string())));
    answers.extend(["-13", "7"].map(csv));
    answers.extend(
        malformed_bodies()
            .into_iter()
            .map(|(_, body)| HttpResponse::new(200, body)),
    );
    let invocations = [
        payout(main_account("csv", Some("0002"))),
        payout(sub_account("xml")),
        refund(main_account("csv", None), "one_time"),
        refund(sub_account("xml"), "rebill"),
    ];
    let mut checked = 0;
    for invocation in &invocations {
        // The request must carry the password, in the body only.
        let sent = run(invocation, csv("1"));
        assert!(!sent.single_request().url.contains(&encoded_password));
        assert!(String::from_utf8_lossy(&sent.single_request().body).contains(&encoded_password));
        for answer in &answers {
            let run = run(invocation, answer.clone());
            assert_no_credentials(&run, &encoded_password);
            checked += 1;
        }
    }
    // Validation errors, too.
    for account in [
        testkit::account(
            BASE,
            &[("client_accnum", "1"), ("username", USERNAME)],
            &[("password", PASSWORD)],
        ),
        testkit::account(
            BASE,
            &[
                ("client_accnum", "999999"),
                ("username", USERNAME),
                ("client_subacc", "1"),
                ("using_subacc", "2"),
            ],
            &[("password", PASSWORD)],
        ),
        main_account("csv", None),
    ] {
        let run = testkit::run::<CcBill>(&payout(account), b"", []);
        assert_no_credentials(&run, &encoded_password);
        checked += 1;
    }
    assert!(checked > 100);
}

fn assert_no_credentials(run: &FlowRun, encoded_password: &str) {
    let debug_text = format!("{:?}", run.result);
    let json_text = match &run.result {
        Ok(outcome) => serde_json::to_string(outcome).expect("outcome serializes"),
        Err(error) => serde_json::to_string(error).expect("error serializes"),
    };
    for text in [debug_text, json_text] {
        for credential in [PASSWORD, encoded_password, USERNAME] {
            assert!(!text.contains(credential), "`{credential}` leaked: {text}");
        }
    }
}

/// CCBill's "-7 Error Explained" page lists wrong or too short credentials and missing arguments
/// among -7's causes, beside a temporary system error: the outcome stays unknown (the action may
/// have run) but the kind is authentication, so the host pauses the account.
#[test]
fn minus_seven_is_unknown_with_an_authentication_kind_in_both_formats() {
    for response in [csv("-7"), xml("-7"), csv("  -7 ")] {
        for invocation in [
            payout(sub_account("csv")),
            refund(main_account("xml", None), "recurring"),
        ] {
            let run = run(&invocation, response.clone());
            assert_eq!(run.outcome().status, OutcomeStatus::Unknown);
            let error = run.outcome().error.clone().expect("an error says why");
            assert_eq!(error.kind, ErrorKind::Authentication);
            assert_eq!(error.provider_code.as_deref(), Some("-7"));
            assert!(
                error.message.contains("username or password"),
                "{}",
                error.message
            );
            assert!(
                error.message.contains("may or may not have run"),
                "{}",
                error.message
            );
        }
    }
}

#[test]
fn documented_error_texts_are_login_refusals_with_pausing_kinds() {
    let cases: &[(&str, ErrorKind, &str, &str)] = &[
        (
            "Error: 01",
            ErrorKind::RateLimited,
            "Error: 01",
            "too many failed logins",
        ),
        (
            "Error: 02",
            ErrorKind::Authentication,
            "Error: 02",
            "failed login",
        ),
        (
            "Error: 03\r\n",
            ErrorKind::Authentication,
            "Error: 03",
            "inactive",
        ),
        (
            "Error: 04",
            ErrorKind::Authentication,
            "Error: 04",
            "IP check failed",
        ),
        (
            "error:4 IP check failed",
            ErrorKind::Authentication,
            "Error: 04",
            "IP check failed",
        ),
    ];
    for (body, kind, code, words) in cases {
        for invocation in [
            payout(sub_account("xml")),
            refund(main_account("csv", None), "one_time"),
        ] {
            let run = run(&invocation, HttpResponse::new(200, *body));
            // A refused login did nothing: safe to try again once the account is fixed.
            assert_eq!(run.outcome().status, OutcomeStatus::Failed, "{body:?}");
            let error = run.outcome().error.clone().expect("an error says why");
            assert_eq!(error.kind, *kind, "{body:?}");
            assert_eq!(error.provider_code.as_deref(), Some(*code), "{body:?}");
            assert!(error.message.contains(words), "{body:?}: {}", error.message);
        }
    }
    // The IP-check failure says so plainly, with what to do.
    let ip = run(
        &payout(sub_account("csv")),
        HttpResponse::new(200, "Error: 04"),
    );
    let message = &ip.outcome().error.as_ref().expect("error").message;
    assert!(message.contains("IP address"), "{message}");
}

#[test]
fn undocumented_error_texts_are_unknown() {
    for body in ["Error: 05", "Error: 00", "Error: 999 something"] {
        let run = run(&payout(sub_account("csv")), HttpResponse::new(200, body));
        assert_eq!(run.outcome().status, OutcomeStatus::Unknown, "{body:?}");
        let error = run.outcome().error.clone().expect("error");
        assert_eq!(error.kind, ErrorKind::ProviderError, "{body:?}");
        assert!(
            error
                .provider_code
                .as_deref()
                .is_some_and(|code| code.starts_with("Error: "))
        );
    }
}

/// The walk toward CCBill's lockout, as the provider answers it: a wrong password (as -1, -7 or
/// `Error: 02`), then the lockout (-12 or `Error: 01`). Every step has a kind the host pauses
/// on, so the host stops after the first; none of them is a plain failure the host would retry.
#[test]
fn lockout_walk_every_answer_pauses_the_account() {
    let walks: [&[HttpResponse]; 3] = [
        &[csv("-1"), csv("-1"), csv("-1"), csv("-12")],
        &[xml("-7"), xml("-7"), xml("-7"), xml("-12")],
        &[
            HttpResponse::new(200, "Error: 02"),
            HttpResponse::new(200, "Error: 02"),
            HttpResponse::new(200, "Error: 02"),
            HttpResponse::new(200, "Error: 01"),
        ],
    ];
    for walk in walks {
        for (step, answer) in walk.iter().enumerate() {
            let run = run(&payout(sub_account("csv")), answer.clone());
            let kind = error_kind(&run);
            assert!(
                matches!(
                    kind,
                    Some(ErrorKind::Authentication | ErrorKind::RateLimited)
                ),
                "step {step} of {:?}: {kind:?}",
                answer.text()
            );
            assert_ne!(run.outcome().status, OutcomeStatus::Succeeded);
        }
    }
}

#[test]
fn http_statuses_read_datalink_exceptions_then_the_common_way() {
    for (status, outcome, kind) in [
        (402, OutcomeStatus::Failed, ErrorKind::Declined),
        (409, OutcomeStatus::Unknown, ErrorKind::Duplicate),
        (429, OutcomeStatus::Failed, ErrorKind::RateLimited),
        (401, OutcomeStatus::Failed, ErrorKind::Authentication),
        (405, OutcomeStatus::Failed, ErrorKind::ProviderUnavailable),
        (301, OutcomeStatus::Failed, ErrorKind::ProviderUnavailable),
        (422, OutcomeStatus::Failed, ErrorKind::InvalidRequest),
    ] {
        let run = run(&payout(sub_account("csv")), HttpResponse::new(status, "x"));
        assert_eq!(run.outcome().status, outcome, "HTTP {status}");
        assert_eq!(error_kind(&run), Some(kind), "HTTP {status}");
    }
}

#[test]
fn a_flow_started_for_another_command_is_a_plugin_fault() {
    let invocation = testkit::invocation(json!({"operation": "balance"}), sub_account("csv"));
    let run = testkit::run::<CcBill>(&invocation, b"", []);
    assert_eq!(run.error().kind, ErrorKind::NotSupported);
    assert!(run.requests.is_empty());
}
