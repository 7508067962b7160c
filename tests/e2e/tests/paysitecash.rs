//! Paysite Cash statistics end to end: the real host, the real plugin cdylib, the simulator over
//! HTTP. Covers the six APIs, each documented error, and the host-side protection that keeps a
//! wrong password from walking the account into the provider's lockout.

use std::time::Duration;

use gatehouse_core::DispatchError;
use gatehouse_e2e::{TestHost, captured_logs};
use gatehouse_plugin_api::{Details, ErrorKind, Outcome, OutcomeStatus, ProviderError};
use gatehouse_sim_common::{Fault, RunningSimulator};
use gatehouse_sim_paysitecash::{PaysiteCashSimulator, md5_hex};
use serde_json::{Value, json};

const USER: &str = "webmaster42";
const PASSWORD: &str = "e2e-Paysite-Passw0rd";
const WRONG_PASSWORD: &str = "not-the-Passw0rd";

async fn setup() -> (TestHost, PaysiteCashSimulator, RunningSimulator) {
    let (simulator, running) = PaysiteCashSimulator::start(USER, PASSWORD)
        .await
        .expect("simulator");
    let host = TestHost::start(
        &["gatehouse-plugin-paysitecash"],
        &format!(
            r#"
[providers.paysitecash.accounts.main]
base_url = "{base}"
timeout_ms = 2000
settings = {{ user = "{USER}" }}
secrets = {{ password = "{PASSWORD}" }}

[providers.paysitecash.accounts.wrong]
base_url = "{base}"
timeout_ms = 2000
settings = {{ user = "{USER}", currency = "EUR" }}
secrets = {{ password = "{WRONG_PASSWORD}" }}
"#,
            base = PaysiteCashSimulator::stats_base_url(&running)
        ),
    )
    .await;
    (host, simulator, running)
}

fn report(name: &str, filters: Value) -> Value {
    json!({"operation": "report", "report": name, "filters": filters})
}

fn monthly(name: &str) -> Value {
    report(name, json!({"month": "02", "year": "2028"}))
}

fn provider_error(result: Result<Outcome, DispatchError>) -> ProviderError {
    match result {
        Err(DispatchError::Provider(error)) => error,
        other => panic!("expected a provider error, got {other:?}"),
    }
}

fn records(outcome: &Outcome) -> &[gatehouse_plugin_api::ReportRecord] {
    assert_eq!(outcome.status, OutcomeStatus::Succeeded);
    match &outcome.details {
        Details::Report { records, .. } => records,
        other => panic!("expected a report, got {other:?}"),
    }
}

#[tokio::test]
async fn all_six_apis_return_exact_statistics() {
    let (host, simulator, _running) = setup().await;

    let webmasters = host
        .call("paysitecash", "main", report("webmasters", json!({})))
        .await
        .expect("webmasters");
    let rows = records(&webmasters);
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0].date.as_deref(), Some("2026-01-07"));
    let amount = rows[0].amount.expect("amount in EUR");
    assert_eq!(
        (amount.minor_units, amount.currency.code()),
        (5 * 2995, "EUR")
    );
    assert_eq!(rows[0].raw["site"], "site-a.example");

    let quick = host
        .call("paysitecash", "main", report("webmasters_quick", json!({})))
        .await
        .expect("quick");
    assert_eq!(
        records(&quick)[0].amount.map(|m| m.minor_units),
        Some(3 * 2995)
    );

    let month = host
        .call("paysitecash", "main", monthly("webmasters_month"))
        .await
        .expect("month");
    let days = records(&month);
    assert_eq!(days.len(), 29, "February 2028 has 29 days");
    assert_eq!(days[28].date.as_deref(), Some("2028-02-29"));

    let affiliates = host
        .call("paysitecash", "main", report("affiliates", json!({})))
        .await
        .expect("affiliates");
    let rows = records(&affiliates);
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0].party.as_deref(), Some("aff-1"));
    assert_eq!(rows[0].amount.map(|m| m.minor_units), Some(4 * 900));

    let affiliates_quick = host
        .call("paysitecash", "main", report("affiliates_quick", json!({})))
        .await
        .expect("affiliates quick");
    assert_eq!(
        records(&affiliates_quick)[0].amount.map(|m| m.minor_units),
        Some(2 * 900)
    );

    let affiliates_month = host
        .call("paysitecash", "main", monthly("affiliates_month"))
        .await
        .expect("affiliates month");
    assert_eq!(records(&affiliates_month).len(), 29);

    let state = simulator.state();
    assert_eq!(state.total_calls, 6);
    for script in gatehouse_sim_paysitecash::SCRIPTS {
        assert_eq!(state.calls.get(script), Some(&1), "{script}");
    }
    assert_eq!(state.failed_logins_total, 0);
}

#[tokio::test]
async fn bad_commands_are_refused_before_any_request() {
    let (host, simulator, _running) = setup().await;
    for (command, field) in [
        (
            report("webmasters_month", json!({"month": "13", "year": "2026"})),
            "month",
        ),
        (
            report("affiliates_month", json!({"month": "03", "year": "26"})),
            "year",
        ),
        (report("webmasters", json!({"month": "03"})), "month"),
        (report("affiliates", json!({"site": "x"})), "site"),
    ] {
        let error = provider_error(host.call("paysitecash", "main", command).await);
        assert_eq!(error.kind, ErrorKind::InvalidRequest);
        assert_eq!(error.fields, vec![field.to_string()]);
    }
    // An unknown report name is refused by the host from the manifest.
    let result = host
        .call("paysitecash", "main", report("sales", json!({})))
        .await;
    assert!(result.is_err(), "{result:?}");
    assert_eq!(simulator.call_count(), 0);
}

#[tokio::test]
async fn auth_error_pauses_the_account() {
    let (host, simulator, _running) = setup().await;
    let error = provider_error(
        host.call("paysitecash", "wrong", report("webmasters", json!({})))
            .await,
    );
    assert_eq!(error.kind, ErrorKind::Authentication);
    assert_eq!(error.provider_code.as_deref(), Some("auth error"));
    assert_eq!(error.provider_message.as_deref(), Some("auth error"));
    let paused = host
        .call("paysitecash", "wrong", report("webmasters", json!({})))
        .await;
    assert!(
        matches!(paused, Err(DispatchError::AccountPaused { .. })),
        "{paused:?}"
    );
    assert_eq!(simulator.failed_logins(), 1);
    assert_eq!(simulator.call_count(), 1, "a paused account sends nothing");
}

#[tokio::test]
async fn too_many_login_attemps_is_rate_limited_and_pauses_the_account() {
    let (host, simulator, running) = setup().await;
    // Another client (not this host) failed four times: the provider has locked the account.
    let base = PaysiteCashSimulator::stats_base_url(&running);
    for _ in 0..4 {
        reqwest::get(format!("{base}/webmasters.php?user={USER}&pass=0"))
            .await
            .expect("direct call");
    }
    assert!(simulator.is_locked());
    let error = provider_error(
        host.call("paysitecash", "main", report("affiliates", json!({})))
            .await,
    );
    assert_eq!(error.kind, ErrorKind::RateLimited);
    assert_eq!(
        error.provider_code.as_deref(),
        Some("too many login attemps")
    );
    let paused = host
        .call("paysitecash", "main", report("affiliates", json!({})))
        .await;
    assert!(
        matches!(paused, Err(DispatchError::AccountPaused { .. })),
        "{paused:?}"
    );

    // Once the provider's window has passed and an operator resumes the account, it works again.
    simulator.advance(Duration::from_secs(301));
    assert!(host.gateway.resume_account("paysitecash", "main"));
    let outcome = host
        .call("paysitecash", "main", report("affiliates", json!({})))
        .await
        .expect("unlocked");
    assert_eq!(records(&outcome).len(), 3);
}

#[tokio::test]
async fn systeme_error_is_provider_unavailable() {
    let (host, simulator, _running) = setup().await;
    simulator.fail_with_system_error(1);
    let error = provider_error(
        host.call("paysitecash", "main", report("webmasters_quick", json!({})))
            .await,
    );
    assert_eq!(error.kind, ErrorKind::ProviderUnavailable);
    assert_eq!(error.provider_code.as_deref(), Some("systeme error"));
    // Not an account problem: the next call goes through.
    let outcome = host
        .call("paysitecash", "main", report("webmasters_quick", json!({})))
        .await
        .expect("next");
    assert_eq!(records(&outcome).len(), 1);
}

#[tokio::test]
async fn wrong_year_and_month_values_name_the_field() {
    let (host, simulator, _running) = setup().await;
    // The plugin refuses what it knows the provider refuses, so the provider's own answers are
    // reached only when it disagrees with a value the plugin accepted.
    for (script, body, report_name, field) in [
        (
            "webmasters_month.php",
            "wrong year value",
            "webmasters_month",
            "year",
        ),
        (
            "affiliates_month.php",
            "wrong month value",
            "affiliates_month",
            "month",
        ),
    ] {
        simulator.set_statistics(script, body);
        let error = provider_error(host.call("paysitecash", "main", monthly(report_name)).await);
        assert_eq!(error.kind, ErrorKind::InvalidRequest);
        assert_eq!(error.provider_code.as_deref(), Some(body));
        assert_eq!(error.fields, vec![field.to_string()]);
        simulator.clear_statistics(script);
    }
}

#[tokio::test]
async fn the_flood_answer_pauses_the_account() {
    let (host, simulator, _running) = setup().await;
    simulator.set_min_interval(Some(Duration::from_secs(60)));
    host.call("paysitecash", "main", report("webmasters", json!({})))
        .await
        .expect("first call");
    let error = provider_error(
        host.call("paysitecash", "main", report("webmasters", json!({})))
            .await,
    );
    assert_eq!(error.kind, ErrorKind::RateLimited);
    let paused = host
        .call("paysitecash", "main", report("webmasters", json!({})))
        .await;
    assert!(
        matches!(paused, Err(DispatchError::AccountPaused { .. })),
        "{paused:?}"
    );
    assert_eq!(simulator.state().flood_refusals, 1);
    assert_eq!(simulator.call_count(), 2);
}

#[tokio::test]
async fn a_wrong_password_never_reaches_the_providers_lockout() {
    let (host, simulator, _running) = setup().await;
    let mut authentication_errors = 0;
    let mut paused = 0;
    for call in 0..20 {
        let name = ["webmasters", "affiliates_quick", "affiliates"][call % 3];
        match host
            .call("paysitecash", "wrong", report(name, json!({})))
            .await
        {
            Err(DispatchError::Provider(error)) if error.kind == ErrorKind::Authentication => {
                authentication_errors += 1
            }
            Err(DispatchError::AccountPaused { .. }) => paused += 1,
            other => panic!("unexpected answer: {other:?}"),
        }
    }
    assert_eq!((authentication_errors, paused), (1, 19));
    let state = simulator.state();
    assert!(state.failed_logins < 3, "{state:?}");
    assert!(!state.locked);
    assert_eq!(state.lockout_refusals, 0);
    // The right account is untouched by the other one's pause.
    let outcome = host
        .call("paysitecash", "main", report("webmasters", json!({})))
        .await
        .expect("main");
    assert_eq!(records(&outcome).len(), 3);
}

#[tokio::test]
async fn unexpected_bodies_become_raw_text_or_errors() {
    let (host, simulator, running) = setup().await;
    simulator.set_statistics(
        "webmasters.php",
        "<html><body><table><tr><td>12</td></tr></table></body></html>",
    );
    let outcome = host
        .call("paysitecash", "main", report("webmasters", json!({})))
        .await
        .expect("html");
    assert!(records(&outcome).is_empty());
    assert!(
        matches!(&outcome.details, Details::Report { raw_text: Some(text), .. } if text.contains("<table>"))
    );

    simulator.set_statistics("webmasters.php", "");
    let outcome = host
        .call("paysitecash", "main", report("webmasters", json!({})))
        .await
        .expect("empty");
    assert!(records(&outcome).is_empty());

    simulator.set_statistics(
        "webmasters.php",
        b"date;libell\xe9;montant;devise\n2026-01-09;caf\xe9;1,50;EUR\n".to_vec(),
    );
    let outcome = host
        .call("paysitecash", "main", report("webmasters", json!({})))
        .await
        .expect("latin-1");
    assert_eq!(records(&outcome)[0].description.as_deref(), Some("café"));
    assert_eq!(
        records(&outcome)[0].amount.map(|m| m.minor_units),
        Some(150)
    );
    simulator.clear_statistics("webmasters.php");

    running.faults.push(Fault::EnormousBody(6 * 1024 * 1024));
    let error = provider_error(
        host.call("paysitecash", "main", report("webmasters", json!({})))
            .await,
    );
    assert_eq!(error.kind, ErrorKind::MalformedResponse);

    running
        .faults
        .push(Fault::Status(503, "<h1>Service Unavailable</h1>".into()));
    running
        .faults
        .push(Fault::Status(503, "<h1>Service Unavailable</h1>".into()));
    running
        .faults
        .push(Fault::Status(503, "<h1>Service Unavailable</h1>".into()));
    let error = provider_error(
        host.call("paysitecash", "main", report("webmasters", json!({})))
            .await,
    );
    assert_eq!(error.kind, ErrorKind::ProviderUnavailable);
}

#[tokio::test]
async fn the_password_and_its_md5_appear_in_no_answer_and_no_log() {
    let (host, _simulator, _running) = setup().await;
    let md5 = md5_hex(PASSWORD);
    let wrong_md5 = md5_hex(WRONG_PASSWORD);
    let mut answers = Vec::new();
    answers.push(format!(
        "{:?}",
        host.call("paysitecash", "main", report("webmasters", json!({})))
            .await
    ));
    answers.push(format!(
        "{:?}",
        host.call("paysitecash", "wrong", report("webmasters", json!({})))
            .await
    ));
    answers.push(format!(
        "{:?}",
        host.call("paysitecash", "wrong", report("webmasters", json!({})))
            .await
    ));
    let logs = captured_logs();
    for secret in [PASSWORD, WRONG_PASSWORD, md5.as_str(), wrong_md5.as_str()] {
        for answer in &answers {
            assert!(!answer.contains(secret), "{secret} in {answer}");
        }
        assert!(!logs.contains(secret), "{secret} in the host's logs");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_with_a_wrong_password_never_reach_the_lockout() {
    let (host, simulator, _running) = setup().await;
    let host = std::sync::Arc::new(host);
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let host = host.clone();
        tasks.push(tokio::spawn(async move {
            host.call("paysitecash", "wrong", report("webmasters", json!({})))
                .await
        }));
    }
    let mut authentication_errors = 0;
    for task in tasks {
        match task.await.expect("task") {
            Err(DispatchError::Provider(error)) if error.kind == ErrorKind::Authentication => {
                authentication_errors += 1
            }
            Err(DispatchError::AccountPaused { .. }) => {}
            other => panic!("unexpected answer: {other:?}"),
        }
    }
    // Until the credentials have been accepted once, requests go one at a time: the first
    // refusal pauses the account before any other request is sent.
    assert_eq!(authentication_errors, 1);
    let state = simulator.state();
    assert!(state.failed_logins < 3, "{state:?}");
    assert!(!state.locked, "{state:?}");
    assert_eq!(simulator.call_count(), 1);
}
