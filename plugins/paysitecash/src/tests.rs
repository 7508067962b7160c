//! Unit tests of the Paysite Cash flows through the testkit: scripted answers, no sockets.

use gatehouse_plugin_api::ffi::HostStep;
use gatehouse_plugin_api::testkit::{self, FlowRun, query_pairs};
use gatehouse_plugin_api::{
    AccountConfig, Details, ErrorKind, HttpResponse, Invocation, Method, OutcomeStatus, Plugin,
    ReportRecord,
};
use serde_json::json;

use crate::transformers::statistics::{MAX_BODY_BYTES, MAX_RAW_TEXT_CHARS, MAX_RECORDS};
use crate::{PaysiteCash, md5_hex};

const BASE: &str = "http://paysite.test/stats";
const USER: &str = "webmaster42";
const PASSWORD: &str = "s3cret-Passw0rd";
/// md5("s3cret-Passw0rd"), lower-case hex.
const PASSWORD_MD5: &str = "9e1f5e2980bd3ae5ac8c595611aefc6a";

fn account_with(settings: &[(&str, &str)]) -> AccountConfig {
    let mut all = vec![("user", USER)];
    all.extend_from_slice(settings);
    testkit::account(BASE, &all, &[("password", PASSWORD)])
}

fn account() -> AccountConfig {
    account_with(&[])
}

fn report(name: &str, filters: serde_json::Value) -> Invocation {
    report_on(name, filters, account())
}

fn report_on(name: &str, filters: serde_json::Value, account: AccountConfig) -> Invocation {
    testkit::invocation(
        json!({"operation": "report", "report": name, "filters": filters}),
        account,
    )
}

fn monthly(name: &str) -> Invocation {
    report(name, json!({"month": "03", "year": "2026"}))
}

fn text(body: impl Into<Vec<u8>>) -> HttpResponse {
    HttpResponse::new(200, body).with_header("content-type", "text/plain")
}

fn run(invocation: &Invocation, response: HttpResponse) -> FlowRun {
    testkit::run::<PaysiteCash>(invocation, b"", [response])
}

fn records(run: &FlowRun) -> &[ReportRecord] {
    assert_eq!(run.outcome().status, OutcomeStatus::Succeeded);
    match &run.outcome().details {
        Details::Report { records, .. } => records,
        other => panic!("expected report details, got {other:?}"),
    }
}

fn raw_text(run: &FlowRun) -> Option<&str> {
    match &run.outcome().details {
        Details::Report { raw_text, .. } => raw_text.as_deref(),
        other => panic!("expected report details, got {other:?}"),
    }
}

const MERCHANT_STATS: &str = "date;site;hits;sales;montant;devise\n\
2026-03-01;site-a.example;120;3;149,85;EUR\n\
2026-03-02;site-b.example;80;1;49.95;EUR\n";

#[test]
fn md5_of_a_known_password_is_lower_case_hex() {
    assert_eq!(md5_hex("password"), "5f4dcc3b5aa765d61d8327deb882cf99");
    assert_eq!(md5_hex(""), "d41d8cd98f00b204e9800998ecf8427e");
    assert_eq!(md5_hex(PASSWORD), PASSWORD_MD5);
}

#[test]
fn manifest_lists_the_six_reports_and_the_config_keys() {
    let manifest = PaysiteCash::manifest();
    assert_eq!(manifest.validate(), Ok(()));
    assert_eq!(manifest.provider, "paysitecash");
    assert_eq!(
        manifest.reports,
        vec![
            "webmasters",
            "webmasters_quick",
            "webmasters_month",
            "affiliates",
            "affiliates_quick",
            "affiliates_month"
        ]
    );
    let key = |name: &str| manifest.config_key(name).cloned().expect(name);
    assert!(key("user").required && !key("user").secret);
    assert!(key("password").required && key("password").secret);
    assert!(!key("delimiter").required && !key("delimiter").secret);
    assert!(!key("currency").required && !key("currency").secret);
    assert_eq!(
        manifest.default_base_url.as_deref(),
        Some("https://billing.paysite-cash.biz/stats")
    );
}

#[test]
fn all_six_apis_are_a_get_with_user_and_md5() {
    for (name, script, monthly_api) in [
        ("webmasters", "webmasters.php", false),
        ("webmasters_quick", "webmasters_quick.php", false),
        ("webmasters_month", "webmasters_month.php", true),
        ("affiliates", "affiliates.php", false),
        ("affiliates_quick", "affiliates_quick.php", false),
        ("affiliates_month", "affiliates_month.php", true),
    ] {
        let invocation = if monthly_api {
            monthly(name)
        } else {
            report(name, json!({}))
        };
        let run = run(&invocation, text(MERCHANT_STATS));
        let request = run.single_request();
        assert_eq!(request.method, Method::Get, "{name}");
        assert!(
            request.url.starts_with(&format!("{BASE}/{script}?")),
            "{}",
            request.url
        );
        assert!(request.body.is_empty());
        assert!(request.retry_safe, "reading statistics is safe to resend");
        assert!(
            request.sensitive_headers.contains(&"pass".to_string()),
            "the md5 is marked sensitive"
        );
        let mut expected = vec![
            ("user".to_string(), USER.to_string()),
            ("pass".to_string(), PASSWORD_MD5.to_string()),
        ];
        if monthly_api {
            expected.push(("month".into(), "03".into()));
            expected.push(("year".into(), "2026".into()));
        }
        assert_eq!(query_pairs(request), expected, "{name}");
        assert!(
            !request.url.contains(PASSWORD),
            "the clear password never leaves"
        );
        assert_eq!(records(&run).len(), 2, "{name}");
    }
}

#[test]
fn the_default_base_url_is_the_documented_one() {
    let mut account = account();
    account.base_url = String::new();
    let run = run(&report_on("affiliates", json!({}), account), text(""));
    assert!(
        run.single_request()
            .url
            .starts_with("https://billing.paysite-cash.biz/stats/affiliates.php?user=")
    );
}

#[test]
fn statistics_become_records_with_every_column_in_raw() {
    let run = run(&report("webmasters", json!({})), text(MERCHANT_STATS));
    let records = records(&run);
    assert_eq!(raw_text(&run), None);
    let first = &records[0];
    assert_eq!(first.date.as_deref(), Some("2026-03-01"));
    let amount = first.amount.expect("amount with a currency column");
    assert_eq!((amount.minor_units, amount.currency.code()), (14985, "EUR"));
    assert_eq!(first.amounts.get("montant"), Some(&amount));
    assert_eq!(
        first.raw,
        json!({"date": "2026-03-01", "site": "site-a.example", "hits": "120", "sales": "3",
               "montant": "149,85", "devise": "EUR"})
    );
    assert_eq!(records[1].amount.map(|money| money.minor_units), Some(4995));
}

#[test]
fn amounts_without_any_currency_stay_in_raw_only() {
    let body = "date;affiliate;commission\n2026-03-01;aff-7;12,50\n";
    let run = run(&report("affiliates", json!({})), text(body));
    let record = &records(&run)[0];
    assert_eq!(record.amount, None);
    assert!(record.amounts.is_empty());
    assert_eq!(record.party.as_deref(), Some("aff-7"));
    assert_eq!(record.raw["commission"], "12,50");
    assert!(
        record.raw.get("_notes").is_none(),
        "a missing currency is the documented case, not an anomaly"
    );

    // The account's `currency` setting supplies it.
    let with_currency = report_on(
        "affiliates",
        json!({}),
        account_with(&[("currency", "eur")]),
    );
    let run = run_with(&with_currency, body);
    let money = records(&run)[0].amount.expect("amount");
    assert_eq!((money.minor_units, money.currency.code()), (1250, "EUR"));

    // So does a currency in the column name or in the cell.
    let run = run_with(
        &report("affiliates", json!({})),
        "date;Montant (€);total\n2026-03-01;1 234,50;7 USD\n",
    );
    let record = &records(&run)[0];
    assert_eq!(
        record.amount.map(|m| (m.minor_units, m.currency.code())),
        Some((123450, "EUR"))
    );
    assert_eq!(record.amounts["total"].minor_units, 700);
    assert_eq!(record.amounts["total"].currency.code(), "USD");
}

fn run_with(invocation: &Invocation, body: &str) -> FlowRun {
    run(invocation, text(body.to_string()))
}

#[test]
fn inexact_or_unreadable_amounts_are_noted_not_rounded() {
    let body =
        "date;montant;devise\n2026-03-01;12,345;EUR\n2026-03-02;12.5.3;EUR\n2026-03-03;5;ZZZ\n";
    let run = run_with(&report("webmasters", json!({})), body);
    let records = records(&run);
    for record in records {
        assert_eq!(record.amount, None, "{record:?}");
        assert!(
            record.raw["_notes"]
                .as_array()
                .is_some_and(|notes| !notes.is_empty()),
            "{record:?}"
        );
    }
}

#[test]
fn validation_happens_before_any_request_and_names_the_field() {
    for (invocation, field) in [
        (
            report("webmasters_month", json!({"month": "13", "year": "2026"})),
            "month",
        ),
        (
            report("webmasters_month", json!({"month": "00", "year": "2026"})),
            "month",
        ),
        (
            report("webmasters_month", json!({"month": "3", "year": "2026"})),
            "month",
        ),
        (
            report("affiliates_month", json!({"month": "ab", "year": "2026"})),
            "month",
        ),
        (
            report("affiliates_month", json!({"month": "03", "year": "26"})),
            "year",
        ),
        (
            report(
                "affiliates_month",
                json!({"month": "03", "year": "２０２６"}),
            ),
            "year",
        ),
        (report("webmasters_month", json!({"year": "2026"})), "month"),
        (report("webmasters_month", json!({"month": "03"})), "year"),
        (report("webmasters", json!({"month": "03"})), "month"),
        (report("affiliates_quick", json!({"year": "2026"})), "year"),
        (
            report(
                "webmasters_month",
                json!({"month": "03", "year": "2026", "site": "x"}),
            ),
            "site",
        ),
        (report("webmasters", json!({"site": "x"})), "site"),
        (report("sales", json!({})), "report"),
        (
            testkit::invocation(
                json!({"operation": "report", "report": "webmasters", "from": 1}),
                account(),
            ),
            "from",
        ),
        (
            testkit::invocation(
                json!({"operation": "report", "report": "webmasters", "till": 1}),
                account(),
            ),
            "till",
        ),
        (
            testkit::invocation(
                json!({"operation": "report", "report": "webmasters", "extra": {"x": 1}}),
                account(),
            ),
            "extra.x",
        ),
        (
            report_on(
                "webmasters",
                json!({}),
                account_with(&[("delimiter", ";;")]),
            ),
            "delimiter",
        ),
        (
            report_on(
                "webmasters",
                json!({}),
                account_with(&[("delimiter", "\"")]),
            ),
            "delimiter",
        ),
        (
            report_on(
                "webmasters",
                json!({}),
                account_with(&[("currency", "euro")]),
            ),
            "currency",
        ),
        (
            report_on(
                "webmasters",
                json!({}),
                testkit::account(BASE, &[], &[("password", PASSWORD)]),
            ),
            "user",
        ),
        (
            report_on(
                "webmasters",
                json!({}),
                testkit::account(BASE, &[("user", USER)], &[]),
            ),
            "password",
        ),
        (
            report_on(
                "webmasters",
                json!({}),
                testkit::account(BASE, &[("user", USER)], &[("password", "")]),
            ),
            "password",
        ),
    ] {
        let run = testkit::run::<PaysiteCash>(&invocation, b"", []);
        assert!(run.requests.is_empty(), "{field}: nothing may be sent");
        assert_eq!(run.error().kind, ErrorKind::InvalidRequest, "{field}");
        assert_eq!(
            run.error().fields,
            vec![field.to_string()],
            "{:?}",
            run.error()
        );
    }
}

#[test]
fn other_operations_are_not_supported() {
    let invocation = testkit::invocation(json!({"operation": "balance"}), account());
    let run = testkit::run::<PaysiteCash>(&invocation, b"", []);
    assert!(run.requests.is_empty());
    assert_eq!(run.error().kind, ErrorKind::NotSupported);
}

#[test]
fn each_documented_error_has_its_kind_code_and_text() {
    for (body, kind, code, field) in [
        (
            "too many login attemps",
            ErrorKind::RateLimited,
            "too many login attemps",
            None,
        ),
        ("auth error", ErrorKind::Authentication, "auth error", None),
        (
            "systeme error",
            ErrorKind::ProviderUnavailable,
            "systeme error",
            None,
        ),
        (
            "wrong year value",
            ErrorKind::InvalidRequest,
            "wrong year value",
            Some("year"),
        ),
        (
            "wrong month value",
            ErrorKind::InvalidRequest,
            "wrong month value",
            Some("month"),
        ),
    ] {
        for variant in [
            body.to_string(),
            format!("  {}\r\n", body.to_uppercase()),
            format!("<html><body>{body}</body></html>"),
        ] {
            for invocation in [
                monthly("webmasters_month"),
                report("affiliates_quick", json!({})),
            ] {
                let run = run(&invocation, text(variant.clone()));
                let error = run.error();
                assert_eq!(error.kind, kind, "{variant:?}");
                assert_eq!(error.provider_code.as_deref(), Some(code));
                assert_eq!(error.provider_message.as_deref(), Some(variant.trim()));
                assert_eq!(
                    error.fields,
                    field.into_iter().map(String::from).collect::<Vec<_>>()
                );
            }
        }
        // The documented strings win over the HTTP status they come with.
        let run = run(&monthly("affiliates_month"), HttpResponse::new(500, body));
        assert_eq!(run.error().kind, kind);
    }
}

#[test]
fn near_misses_of_the_error_strings_are_not_errors() {
    // The correctly spelled phrase is not what the provider sends: it is text, not an error.
    let run = run_with(&report("webmasters", json!({})), "too many login attempts");
    assert_eq!(raw_text(&run), Some("too many login attempts"));
    assert!(records(&run).is_empty());
}

#[test]
fn http_failures_map_to_kinds() {
    for (status, kind) in [
        (500, ErrorKind::ProviderUnavailable),
        (503, ErrorKind::ProviderUnavailable),
        (429, ErrorKind::RateLimited),
        (401, ErrorKind::Authentication),
        (403, ErrorKind::Authentication),
        (404, ErrorKind::NotFound),
        (400, ErrorKind::InvalidRequest),
        (302, ErrorKind::MalformedResponse),
    ] {
        let run = run(
            &report("webmasters", json!({})),
            HttpResponse::new(status, "<h1>oops</h1>"),
        );
        assert_eq!(run.error().kind, kind, "{status}");
        assert_eq!(
            run.error().provider_code.as_deref(),
            Some(status.to_string().as_str())
        );
    }
    let huge_error = HttpResponse::new(502, vec![b'e'; 5_000_000]);
    let run = run(&report("webmasters", json!({})), huge_error);
    assert!(
        run.error()
            .provider_message
            .as_ref()
            .is_some_and(|text| text.chars().count() <= 513)
    );
}

#[test]
fn an_empty_body_is_zero_records() {
    for body in ["", "\n\r\n  \n", "\u{feff}"] {
        let run = run_with(&report("webmasters_quick", json!({})), body);
        assert!(records(&run).is_empty());
        assert_eq!(raw_text(&run), None);
    }
    // A header alone is zero records too.
    let run = run_with(&report("webmasters_quick", json!({})), "date;montant\n");
    assert!(records(&run).is_empty());
}

#[test]
fn html_and_free_text_come_back_as_bounded_raw_text() {
    for body in [
        "<html><head><title>Stats</title></head><body><table><tr><td>12&nbsp;€</td></tr></table></body></html>",
        "<!DOCTYPE html><p>Maintenance en cours; revenez plus tard</p>",
        "Aucune statistique pour cette période",
    ] {
        let run = run_with(&report("webmasters", json!({})), body);
        assert!(records(&run).is_empty(), "{body}");
        assert_eq!(raw_text(&run), Some(body));
    }
    // One megabyte without a delimiter: kept, but cut.
    let run = run(
        &report("webmasters", json!({})),
        text(vec![b'x'; 1_000_000]),
    );
    let kept = raw_text(&run).expect("raw text");
    assert!(
        kept.chars().count() < MAX_RAW_TEXT_CHARS + 100,
        "{}",
        kept.len()
    );
    assert!(kept.ends_with("(cut: the answer has 1000000 bytes)"));
}

#[test]
fn clearly_not_statistics_is_a_malformed_response() {
    for body in [
        vec![
            0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 0x0d,
        ],
        b"d\0a\0t\0e\0;\0".to_vec(),
        vec![b'a'; MAX_BODY_BYTES + 1],
    ] {
        let run = run(&report("webmasters", json!({})), text(body));
        assert_eq!(run.error().kind, ErrorKind::MalformedResponse);
    }
    let mut many = String::from("date;montant\n");
    for _ in 0..=MAX_RECORDS {
        many.push_str("1;2\n");
    }
    let run = run_with(&report("webmasters", json!({})), &many);
    assert_eq!(run.error().kind, ErrorKind::MalformedResponse);
}

#[test]
fn a_large_report_within_the_limits_is_read_in_full() {
    let mut body = String::from("date;sales;montant;devise\n");
    for day in 0..50_000 {
        body.push_str(&format!("2026-03-{:02};{day};{day},99;EUR\n", day % 28 + 1));
    }
    let run = run_with(&report("webmasters", json!({})), &body);
    let records = records(&run);
    assert_eq!(records.len(), 50_000);
    assert_eq!(
        records[49_999].amount.map(|m| m.minor_units),
        Some(4_999_999)
    );
}

#[test]
fn extra_short_and_long_rows_are_kept_with_notes() {
    let body = "date;montant;devise;nouvelle_colonne\n\
                2026-03-01;10;EUR;x\n\
                2026-03-02;20\n\
                2026-03-03;30;EUR;y;surplus;more\n";
    let run = run_with(&report("webmasters", json!({})), body);
    let records = records(&run);
    assert_eq!(records.len(), 3);
    assert_eq!(records[0].raw["nouvelle_colonne"], "x");
    assert!(records[0].raw.get("_notes").is_none());

    assert_eq!(records[1].raw["montant"], "20");
    assert!(records[1].raw.get("devise").is_none());
    assert_eq!(
        records[1].raw["_notes"][0],
        "line 3 has 2 fields, the header has 4"
    );

    assert_eq!(records[2].raw["_extra"], json!(["surplus", "more"]));
    assert_eq!(
        records[2].raw["_notes"][0],
        "line 4 has 6 fields, the header has 4"
    );
    assert_eq!(records[2].amount.map(|m| m.minor_units), Some(3000));
}

#[test]
fn headers_are_made_unique_and_reserved_names_are_avoided() {
    let body = "date;;date;_notes\n1;2;3;4\n";
    let run = run_with(&report("webmasters", json!({})), body);
    assert_eq!(
        records(&run)[0].raw,
        json!({"date": "1", "column_2": "2", "date_2": "3", "_notes_2": "4"})
    );
}

#[test]
fn quotes_crlf_and_trailing_delimiters_are_understood() {
    let body = "\u{feff}\"date\";\"libellé\";\"montant\";\"devise\";\r\n\"2026-03-01\";\"Abonnement \"\"or\"\"; 30 jours\";\"19,95\";\"EUR\";\r\n";
    let run = run_with(&report("webmasters", json!({})), body);
    let record = &records(&run)[0];
    assert_eq!(
        record.description.as_deref(),
        Some("Abonnement \"or\"; 30 jours")
    );
    assert_eq!(record.amount.map(|m| m.minor_units), Some(1995));
    assert!(record.raw.get("_notes").is_none(), "{:?}", record.raw);
}

#[test]
fn the_delimiter_is_a_setting() {
    let body = "date,montant,devise\n2026-03-01,\"1,50\",EUR\n";
    let comma = report_on("webmasters", json!({}), account_with(&[("delimiter", ",")]));
    let run = run_with(&comma, body);
    assert_eq!(records(&run)[0].amount.map(|m| m.minor_units), Some(150));

    let tab = report_on(
        "webmasters",
        json!({}),
        account_with(&[("delimiter", "tab")]),
    );
    let run = run_with(&tab, "date\tmontant\tdevise\n2026-03-01\t2\tEUR\n");
    assert_eq!(records(&run)[0].amount.map(|m| m.minor_units), Some(200));

    // With the default `;`, a comma file is not split: it comes back as text.
    let run = run_with(&report("webmasters", json!({})), body);
    assert!(raw_text(&run).is_some());
}

#[test]
fn text_that_is_not_utf8_is_read_as_windows_1252() {
    let body = b"date;libell\xe9;montant\n2026-03-01;Caf\xe9 cr\xe8me;12,50 \x80\n\xff\xfe;\x81\n"
        .to_vec();
    let run = run(&report("webmasters", json!({})), text(body));
    let records = records(&run);
    assert_eq!(records[0].description.as_deref(), Some("Café crème"));
    assert_eq!(
        records[0]
            .amount
            .map(|m| (m.minor_units, m.currency.code())),
        Some((1250, "EUR"))
    );
    assert_eq!(records[1].raw["libellé"], "\u{81}");
}

#[test]
fn truncated_and_hostile_bodies_never_panic() {
    let full = MERCHANT_STATS.as_bytes();
    for cut in 0..full.len() {
        let run = run(&report("webmasters", json!({})), text(full[..cut].to_vec()));
        assert!(run.result.is_ok(), "cut at {cut}: {:?}", run.result);
    }
    let hostile: Vec<Vec<u8>> = vec![
        b";;;;;;;;\n;;;;;;;;;;;;;;;;\n".to_vec(),
        b"\"\n\"\"\"\n;\"".to_vec(),
        b"date;montant\n\xf0\x9f\x98;\xe2\x82\n".to_vec(),
        b"date;montant;devise\n1;99999999999999999999999999;EUR\n1;-;EUR\n1;,;EUR\n1;\xe2\x82\xac;EUR\n".to_vec(),
        "date;montant\n".repeat(10_000).into_bytes(),
        format!("date;{}\n1;2\n", "h;".repeat(100_000)).into_bytes(),
        b"{\"error\": \"auth\"}".to_vec(),
        b"\r\r\r".to_vec(),
    ];
    for body in hostile {
        let run = run(&report("webmasters", json!({})), text(body.clone()));
        if let Err(error) = &run.result {
            assert_ne!(error.kind, ErrorKind::PluginFault, "{error:?}");
        }
    }
}

#[test]
fn the_password_and_its_md5_never_appear_in_errors_or_outcomes() {
    let echo = format!("<p>Bad request: /stats/webmasters.php?user={USER}&pass={PASSWORD_MD5}</p>");
    let echo_upper = format!(
        "<p>pass={} password={PASSWORD}</p>",
        PASSWORD_MD5.to_uppercase()
    );
    let data_echo = format!("date;pass\n2026-03-01;{PASSWORD_MD5}\n");
    let responses = vec![
        text("auth error"),
        text("too many login attemps"),
        text("systeme error"),
        text("wrong month value"),
        HttpResponse::new(500, echo.clone()),
        HttpResponse::new(400, echo_upper.clone()),
        text(echo),
        text(echo_upper),
        text(data_echo),
        text(vec![0u8; 10]),
    ];
    for response in responses {
        for invocation in [monthly("webmasters_month"), report("affiliates", json!({}))] {
            let run = run(&invocation, response.clone());
            let shown = format!("{:?}", run.result);
            let serialized = match &run.result {
                Ok(outcome) => serde_json::to_string(outcome).expect("outcome serializes"),
                Err(error) => serde_json::to_string(error).expect("error serializes"),
            };
            for secret in [PASSWORD, PASSWORD_MD5] {
                for rendering in [&shown, &serialized] {
                    assert!(
                        !rendering.to_lowercase().contains(&secret.to_lowercase()),
                        "{secret} in {rendering}"
                    );
                }
            }
        }
    }
    // Validation errors do not carry it either.
    let run =
        testkit::run::<PaysiteCash>(&report("webmasters", json!({"month": PASSWORD})), b"", []);
    assert!(!format!("{:?}", run.result).contains(PASSWORD));
}

#[test]
fn the_flow_state_the_host_keeps_holds_no_credential() {
    let invocation = monthly("affiliates_month");
    let json = serde_json::to_string(&invocation).expect("invocation serializes");
    let step = gatehouse_plugin_api::plugin::ffi_start::<PaysiteCash>(
        abi_stable_str(&json),
        abi_stable::std_types::RSlice::from_slice(b""),
    )
    .into_host_step();
    let HostStep::Send { state, .. } = step else {
        panic!("expected a request")
    };
    assert!(
        !state.contains(PASSWORD) && !state.contains(PASSWORD_MD5),
        "{state}"
    );
    assert_eq!(state, r#"{"Statistics":{"api":"affiliates_month"}}"#);
}

fn abi_stable_str(text: &str) -> abi_stable::std_types::RStr<'_> {
    abi_stable::std_types::RStr::from_str(text)
}
