//! Kolmisoft end to end: the real host, the real plugin cdylib, the simulator over HTTP.
//!
//! The simulator recomputes every request's hash with its own code, so each successful report
//! here also proves the plugin signed it as the document says.

#![allow(clippy::unwrap_used)]

use gatehouse_core::DispatchError;
use gatehouse_e2e::{TestHost, captured_logs};
use gatehouse_plugin_api::{
    Details, ErrorKind, Outcome, OutcomeStatus, ProviderError, ReportRecord,
};
use gatehouse_sim_common::{Fault, RunningSimulator};
use gatehouse_sim_kolmisoft::{KolmisoftSimulator, Payment, ReceivedRequest, expected_hash};
use serde_json::{Value, json};

const SECRET: &str = "e2e-Kolmisoft-API-Secret-91b7";
const API_USER: &str = "admin";
/// 2025-06-01T00:00:00Z: the day the filter tests look at, so that they do not depend on the clock.
const DAY: i64 = 1_748_736_000;
const DAY_END: i64 = DAY + 86_399;

async fn setup_with(
    secret: &str,
    api_user: &str,
) -> (TestHost, KolmisoftSimulator, RunningSimulator) {
    let (simulator, running) = KolmisoftSimulator::start(secret, api_user)
        .await
        .expect("simulator");
    let host = TestHost::start(
        &["gatehouse-plugin-kolmisoft"],
        &format!(
            r#"
[providers.kolmisoft.accounts.main]
base_url = "{base}/billing"
timeout_ms = 2000
settings = {{ username = "{api_user}" }}
secrets = {{ secret_key = "{secret}" }}

[providers.kolmisoft.accounts.get]
base_url = "{base}/billing"
settings = {{ username = "{api_user}", allow_get = "true" }}
secrets = {{ secret_key = "{secret}" }}

[providers.kolmisoft.accounts.offset]
base_url = "{base}/billing"
settings = {{ username = "{api_user}", utc_offset_seconds = "7200" }}
secrets = {{ secret_key = "{secret}" }}

[providers.kolmisoft.accounts.wrong_secret]
base_url = "{base}/billing"
settings = {{ username = "{api_user}" }}
secrets = {{ secret_key = "not-the-servers-key" }}

[providers.kolmisoft.accounts.unknown_user]
base_url = "{base}/billing"
settings = {{ username = "nobody" }}
secrets = {{ secret_key = "{secret}" }}
"#,
            base = running.base_url()
        ),
    )
    .await;
    (host, simulator, running)
}

async fn setup() -> (TestHost, KolmisoftSimulator, RunningSimulator) {
    let (host, simulator, running) = setup_with(SECRET, API_USER).await;
    simulator.add_payment(Payment {
        first_name: "John".into(),
        last_name: "Smith".into(),
        comment: "top-up & bonus".into(),
        balance_before: "5.0000".into(),
        balance_after: "15.0000".into(),
        ..Payment::new(123, "jsmith", DAY + 3600, "10.0000", "USD")
    });
    simulator.add_payment(Payment {
        first_name: "Ann".into(),
        last_name: "Lee".into(),
        ..Payment::new(7, "alee", DAY + 7200, "5.5", "EUR")
    });
    simulator.add_payment(Payment::new(8, "bob", DAY + 10_800, "99.1234", "USD"));
    // The day before: outside every period below.
    simulator.add_payment(Payment::new(123, "jsmith", DAY - 3600, "20", "USD"));
    (host, simulator, running)
}

fn report_on_day(filters: Value) -> Value {
    json!({"operation": "report", "report": "payments", "from": DAY, "till": DAY_END, "filters": filters})
}

fn records(outcome: &Outcome) -> Vec<ReportRecord> {
    assert_eq!(outcome.status, OutcomeStatus::Succeeded, "{outcome:?}");
    match &outcome.details {
        Details::Report { records, .. } => records.clone(),
        other => panic!("not a report: {other:?}"),
    }
}

fn parties(outcome: &Outcome) -> Vec<String> {
    records(outcome)
        .iter()
        .map(|record| record.party.clone().unwrap_or_default())
        .collect()
}

fn provider_error(result: Result<Outcome, DispatchError>) -> ProviderError {
    match result {
        Err(DispatchError::Provider(error)) => error,
        other => panic!("expected a provider error, got {other:?}"),
    }
}

fn parameter_names(request: &ReceivedRequest) -> Vec<&str> {
    request
        .parameters
        .iter()
        .map(|(name, _)| name.as_str())
        .collect()
}

fn today_utc() -> (i64, i64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let start = now.div_euclid(86_400) * 86_400;
    (start, start + 86_399)
}

#[tokio::test]
async fn each_filter_alone_and_combined() {
    let (host, simulator, _running) = setup().await;
    for (filters, expected, wire_names) in [
        (json!({}), vec!["John Smith", "Ann Lee", "bob"], vec![]),
        (json!({"user_id": "7"}), vec!["Ann Lee"], vec!["user_id_s"]),
        (json!({"username": "bob"}), vec!["bob"], vec!["username_s"]),
        (
            json!({"first_name": "John"}),
            vec!["John Smith"],
            vec!["first_name_s"],
        ),
        (
            json!({"last_name": "Lee"}),
            vec!["Ann Lee"],
            vec!["last_name_s"],
        ),
        (
            json!({"amount_min": "10"}),
            vec!["John Smith", "bob"],
            vec!["amount_min_s"],
        ),
        (
            json!({"amount_max": "10"}),
            vec!["John Smith", "Ann Lee"],
            vec!["amount_max_s"],
        ),
        (
            json!({"currency": "EUR"}),
            vec!["Ann Lee"],
            vec!["currency_s"],
        ),
        (
            json!({"currency": "USD", "amount_min": "5.6", "amount_max": "99.1233"}),
            vec!["John Smith"],
            vec!["amount_min_s", "amount_max_s", "currency_s"],
        ),
        (
            json!({"currency": "USD", "last_name": "Smith", "first_name": "John", "username": "jsmith",
                   "amount_max": "10", "amount_min": "10", "user_id": "123"}),
            vec!["John Smith"],
            vec![
                "user_id_s",
                "username_s",
                "first_name_s",
                "last_name_s",
                "amount_min_s",
                "amount_max_s",
                "currency_s",
            ],
        ),
        (
            json!({"user_id": "123", "currency": "EUR"}),
            vec![],
            vec!["user_id_s", "currency_s"],
        ),
    ] {
        let outcome = host
            .call("kolmisoft", "main", report_on_day(filters.clone()))
            .await
            .expect("report");
        assert_eq!(parties(&outcome), expected, "{filters}");

        // What reached the server: u, the filters in the document's order around the period, hash.
        let received = simulator.received().pop().unwrap();
        assert_eq!(received.method, "POST");
        let mut expected_names = vec!["u"];
        if wire_names.first() == Some(&"user_id_s") {
            expected_names.push("user_id_s");
        }
        expected_names.extend(["from_s", "till_s"]);
        expected_names.extend(wire_names.iter().filter(|name| **name != "user_id_s"));
        expected_names.push("hash");
        assert_eq!(parameter_names(&received), expected_names, "{filters}");
        assert_eq!(received.parameter("from_s"), Some(DAY.to_string().as_str()));
        assert_eq!(
            received.parameter("till_s"),
            Some(DAY_END.to_string().as_str())
        );
        assert_eq!(received.parameter("u"), Some(API_USER));
    }
}

#[tokio::test]
async fn the_default_period_is_today() {
    let (host, simulator, _running) = setup().await;
    let (today_from, today_till) = today_utc();
    simulator.add_payment(Payment::new(9, "today_early", today_from, "1", "USD"));
    simulator.add_payment(Payment::new(9, "today_late", today_till, "2", "USD"));
    simulator.add_payment(Payment::new(9, "yesterday", today_from - 1, "3", "USD"));
    simulator.add_payment(Payment::new(9, "tomorrow", today_till + 1, "4", "USD"));

    let outcome = host
        .call(
            "kolmisoft",
            "main",
            json!({"operation": "report", "report": "payments"}),
        )
        .await
        .expect("report");
    if today_utc() != (today_from, today_till) {
        return; // The day changed during the call: nothing to compare against.
    }
    assert_eq!(parties(&outcome), vec!["today_early", "today_late"]);
    let received = simulator.received().pop().unwrap();
    assert_eq!(
        received.parameter("from_s"),
        Some(today_from.to_string().as_str())
    );
    assert_eq!(
        received.parameter("till_s"),
        Some(today_till.to_string().as_str())
    );

    // An account whose day is UTC+2: its today starts when the UTC+2 clock says 00:00.
    host.call(
        "kolmisoft",
        "offset",
        json!({"operation": "report", "report": "payments"}),
    )
    .await
    .expect("report");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let offset_from = (now + 7200).div_euclid(86_400) * 86_400 - 7200;
    let received = simulator.received().pop().unwrap();
    let sent_from: i64 = received.parameter("from_s").unwrap().parse().unwrap();
    let sent_till: i64 = received.parameter("till_s").unwrap().parse().unwrap();
    assert!(
        sent_from == offset_from || sent_from == offset_from - 86_400,
        "{sent_from} vs {offset_from}"
    );
    assert_eq!(sent_till, sent_from + 86_399);

    // One end given, the other defaulted.
    host.call(
        "kolmisoft",
        "main",
        json!({"operation": "report", "report": "payments", "from": today_from - 86_400}),
    )
    .await
    .expect("report");
    let received = simulator.received().pop().unwrap();
    assert_eq!(
        received.parameter("from_s"),
        Some((today_from - 86_400).to_string().as_str())
    );
    assert_eq!(
        received.parameter("till_s"),
        Some(today_till.to_string().as_str())
    );
}

#[tokio::test]
async fn the_documents_test_vector() {
    // The document's example: API Secret Key 456789, user id 123.
    assert_eq!(
        expected_hash(&[("user_id_s".into(), "123".into())], "456789"),
        "f7c3bc1d808e04732adf679965ccc34ca7ae3441"
    );
    let (host, simulator, running) = setup_with("456789", "username").await;
    simulator.add_payment(Payment::new(123, "user123", DAY + 60, "1", "USD"));

    // The document's request, verbatim, is accepted by the simulator ...
    let answer = reqwest::Client::new()
        .post(format!(
            "{}/billing/api/payments_get?u=username&user_id_s=123&hash=f7c3bc1d808e04732adf679965ccc34ca7ae3441",
            running.base_url()
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        answer.contains("<pagename> Payments_list </pagename>"),
        "{answer}"
    );

    // ... and so is the plugin's, through the host, built by the same construction.
    let outcome = host
        .call(
            "kolmisoft",
            "main",
            json!({"operation": "report", "report": "payments", "from": DAY, "till": DAY_END,
                   "filters": {"user_id": "123"}}),
        )
        .await
        .expect("report");
    assert_eq!(parties(&outcome), vec!["user123"]);
    let received = simulator.received().pop().unwrap();
    // The hash the document's construction gives for what was sent: the user id, then the period
    // (which the plugin always sends), then the key. The assertion at the top shows this function
    // reproduces the document's own example.
    let document_order = [
        ("user_id_s".to_string(), "123".to_string()),
        ("from_s".to_string(), DAY.to_string()),
        ("till_s".to_string(), DAY_END.to_string()),
    ];
    assert_eq!(
        received.parameter("hash"),
        Some(expected_hash(&document_order, "456789").as_str())
    );
}

#[tokio::test]
async fn a_wrong_secret_is_an_authentication_error_and_pauses_the_account() {
    let (host, simulator, running) = setup().await;
    let error = provider_error(
        host.call("kolmisoft", "wrong_secret", report_on_day(json!({})))
            .await,
    );
    assert_eq!(error.kind, ErrorKind::Authentication);
    assert_eq!(error.provider_message.as_deref(), Some("Incorrect hash"));
    assert!(
        error.message.contains("secret_key") && error.message.contains("order"),
        "{}",
        error.message
    );
    assert!(!error.message.contains(SECRET));

    // The host pauses the account: nothing more is sent with credentials the server refuses.
    let calls_before = running.calls.count("/billing/api/payments_get");
    let paused = host
        .call("kolmisoft", "wrong_secret", report_on_day(json!({})))
        .await;
    assert!(
        matches!(paused, Err(DispatchError::AccountPaused { .. })),
        "{paused:?}"
    );
    assert_eq!(
        running.calls.count("/billing/api/payments_get"),
        calls_before
    );
    assert!(host.gateway.resume_account("kolmisoft", "wrong_secret"));
    // Other accounts are not affected.
    assert_eq!(
        parties(
            &host
                .call("kolmisoft", "main", report_on_day(json!({"user_id": "7"})))
                .await
                .unwrap()
        ),
        vec!["Ann Lee"]
    );

    // The same server with the right key, set as the account's: accepted.
    simulator.set_secret_key("not-the-servers-key");
    let outcome = host
        .call("kolmisoft", "wrong_secret", report_on_day(json!({})))
        .await
        .expect("report");
    assert_eq!(records(&outcome).len(), 3);
}

#[tokio::test]
async fn an_unknown_user_is_an_authentication_error() {
    let (host, _simulator, _running) = setup().await;
    let error = provider_error(
        host.call("kolmisoft", "unknown_user", report_on_day(json!({})))
            .await,
    );
    assert_eq!(error.kind, ErrorKind::Authentication);
    assert_eq!(error.provider_message.as_deref(), Some("Bad login"));
    assert!(error.message.contains("username"), "{}", error.message);
    let paused = host
        .call("kolmisoft", "unknown_user", report_on_day(json!({})))
        .await;
    assert!(
        matches!(paused, Err(DispatchError::AccountPaused { .. })),
        "{paused:?}"
    );
}

#[tokio::test]
async fn an_empty_result_is_an_empty_report() {
    let (host, _simulator, _running) = setup().await;
    let outcome = host
        .call(
            "kolmisoft",
            "main",
            json!({"operation": "report", "report": "payments", "from": 0, "till": 86_399}),
        )
        .await
        .expect("report");
    assert!(records(&outcome).is_empty());
    let outcome = host
        .call(
            "kolmisoft",
            "main",
            report_on_day(json!({"username": "nobody-has-this-name"})),
        )
        .await
        .expect("report");
    assert!(records(&outcome).is_empty());
}

#[tokio::test]
async fn amounts_with_many_decimals_stay_exact() {
    let (host, _simulator, _running) = setup().await;
    let outcome = host
        .call(
            "kolmisoft",
            "main",
            report_on_day(json!({"currency": "USD"})),
        )
        .await
        .expect("report");
    let records = records(&outcome);
    assert_eq!(records.len(), 2, "no record is dropped");

    let john = &records[0];
    assert_eq!(
        john.amount
            .map(|amount| (amount.minor_units, amount.currency.code())),
        Some((1000, "USD"))
    );
    assert_eq!(john.amounts["user_balance_before_payment"].minor_units, 500);
    assert_eq!(john.amounts["user_balance_after_payment"].minor_units, 1500);
    assert_eq!(john.description.as_deref(), Some("top-up & bonus"));
    assert_eq!(john.date.as_deref(), Some("2025-06-01 01:00:00"));
    assert_eq!(john.raw["amount"], "10.0000");

    let bob = &records[1];
    assert_eq!(
        bob.amount, None,
        "99.1234 USD is not a whole number of cents and is never rounded"
    );
    assert_eq!(bob.raw["amount"], "99.1234");
    let notes = bob.raw["_gatehouse_notes"].as_array().unwrap();
    assert!(
        notes
            .iter()
            .any(|note| note.as_str().unwrap().contains("99.1234")),
        "{notes:?}"
    );
}

#[tokio::test]
async fn older_servers_without_balances() {
    let (host, simulator, _running) = setup().await;
    simulator.set_include_balances(false);
    let outcome = host
        .call(
            "kolmisoft",
            "main",
            report_on_day(json!({"user_id": "123"})),
        )
        .await
        .expect("report");
    let record = &records(&outcome)[0];
    assert_eq!(record.amount.unwrap().minor_units, 1000);
    assert_eq!(
        record.amounts.keys().collect::<Vec<_>>(),
        vec!["amount_with_tax"]
    );
    assert!(record.raw.get("user_balance_before_payment").is_none());
}

#[tokio::test]
async fn get_only_when_the_account_and_the_server_allow_it() {
    let (host, simulator, _running) = setup().await;
    host.call("kolmisoft", "main", report_on_day(json!({})))
        .await
        .expect("report");
    assert_eq!(simulator.received().pop().unwrap().method, "POST");

    // The account sends GET, the server has GET off.
    let error = provider_error(
        host.call("kolmisoft", "get", report_on_day(json!({"user_id": "7"})))
            .await,
    );
    assert_eq!(error.kind, ErrorKind::ProviderError);
    assert_eq!(
        error.provider_message.as_deref(),
        Some("GET Requests are disabled")
    );

    // Not an authentication failure, so not paused: once the server allows GET, it works.
    simulator.set_allow_get(true);
    let outcome = host
        .call("kolmisoft", "get", report_on_day(json!({"user_id": "7"})))
        .await
        .expect("report");
    assert_eq!(parties(&outcome), vec!["Ann Lee"]);
    let received = simulator.received().pop().unwrap();
    assert_eq!(received.method, "GET");
    // The hash travelled in the URL: the host must not have logged it, nor the secret.
    let hash = received.parameter("hash").unwrap().to_string();
    let logs = captured_logs();
    assert!(!logs.contains(&hash), "the hash reached the logs");
    assert!(!logs.contains(SECRET), "the secret reached the logs");
}

#[tokio::test]
async fn hostile_and_broken_answers_are_errors_never_panics() {
    let (host, simulator, running) = setup().await;
    let billion_laughs = r#"<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol9 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<page><pagename>Payments_list</pagename><payments><payment><comment>&lol9;</comment></payment></payments></page>"#;
    let mut invalid_utf8 = b"<page><payments><payment><user>Jos".to_vec();
    invalid_utf8.extend_from_slice(&[0xe9, 0xff]);
    invalid_utf8.extend_from_slice(b"</user></payment></payments></page>");
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        (
            "unclosed tags",
            b"<page><pagename> Payments_list </pagename><payments><payment><amount>1</amount>"
                .to_vec(),
        ),
        (
            "mismatched tags",
            b"<page><payments></payment></payments></page>".to_vec(),
        ),
        ("billion laughs", billion_laughs.as_bytes().to_vec()),
        (
            "undeclared entity",
            b"<page><payments><payment><comment>&xxe;</comment></payment></payments></page>"
                .to_vec(),
        ),
        (
            "huge text",
            format!(
                "<page><payments><payment><comment>{}</comment></payment></payments></page>",
                "A".repeat(1024 * 1024)
            )
            .into_bytes(),
        ),
        (
            "wrong root",
            b"<response><status>ok</status></response>".to_vec(),
        ),
        ("invalid UTF-8", invalid_utf8),
        (
            "HTML",
            b"<!DOCTYPE html><html><body>502 Bad Gateway</body></html>".to_vec(),
        ),
        ("JSON", b"{\"payments\": []}".to_vec()),
        ("empty", Vec::new()),
        (
            "deep nesting",
            format!("{}{}", "<page>".repeat(50_000), "</page>".repeat(50_000)).into_bytes(),
        ),
    ];
    for (name, body) in bodies {
        simulator.answer_next_with(body);
        let error = provider_error(
            host.call("kolmisoft", "main", report_on_day(json!({})))
                .await,
        );
        assert_eq!(
            error.kind,
            ErrorKind::MalformedResponse,
            "{name}: {error:?}"
        );
    }

    // Transport-level breakage: a cut body, one too large for the host, a server error.
    running.faults.push(Fault::TruncateBody);
    let error = provider_error(
        host.call("kolmisoft", "main", report_on_day(json!({})))
            .await,
    );
    assert_eq!(error.kind, ErrorKind::MalformedResponse, "{error:?}");
    running.faults.push(Fault::EnormousBody(6 * 1024 * 1024));
    let error = provider_error(
        host.call("kolmisoft", "main", report_on_day(json!({})))
            .await,
    );
    assert_eq!(error.kind, ErrorKind::MalformedResponse, "{error:?}");
    running.faults.push(Fault::Status(
        500,
        "<html>Internal Server Error</html>".into(),
    ));
    let error = provider_error(
        host.call("kolmisoft", "main", report_on_day(json!({})))
            .await,
    );
    assert_eq!(error.kind, ErrorKind::ProviderUnavailable, "{error:?}");

    // None of that paused the account or broke the plugin.
    let outcome = host
        .call("kolmisoft", "main", report_on_day(json!({})))
        .await
        .expect("report");
    assert_eq!(records(&outcome).len(), 3);
}

#[tokio::test]
async fn invalid_commands_are_refused_before_any_request() {
    let (host, _simulator, running) = setup().await;
    for command in [
        report_on_day(json!({"status": "paid"})),
        report_on_day(json!({"amount_min": "1e5"})),
        report_on_day(json!({"amount_min": "20", "amount_max": "10"})),
        report_on_day(json!({"user_id": "abc"})),
        json!({"operation": "report", "report": "payments", "from": DAY_END, "till": DAY}),
        json!({"operation": "report", "report": "calls"}),
    ] {
        let result = host.call("kolmisoft", "main", command.clone()).await;
        match result {
            Err(DispatchError::Provider(error)) => {
                assert_eq!(
                    error.kind,
                    ErrorKind::InvalidRequest,
                    "{command}: {error:?}"
                );
                assert!(!error.fields.is_empty(), "{command}: names its field");
            }
            Err(DispatchError::InvalidCommand { .. }) => {}
            other => panic!("{command}: {other:?}"),
        }
    }
    let unknown = provider_error(
        host.call(
            "kolmisoft",
            "main",
            report_on_day(json!({"status": "x", "page": "2"})),
        )
        .await,
    );
    assert_eq!(unknown.fields, vec!["filters.page", "filters.status"]);
    let refund = host
        .call(
            "kolmisoft",
            "main",
            json!({"operation": "refund", "transaction_id": "1"}),
        )
        .await;
    assert!(
        matches!(refund, Err(DispatchError::NotSupported { .. })),
        "{refund:?}"
    );
    assert!(
        running.calls.all().is_empty(),
        "nothing was sent: {:?}",
        running.calls.all()
    );
}
