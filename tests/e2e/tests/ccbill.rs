//! CCBill DataLink affiliate options end to end: the real host, the real plugin cdylib, the
//! simulator over HTTP.

use std::time::Duration;

use gatehouse_core::DispatchError;
use gatehouse_e2e::TestHost;
use gatehouse_plugin_api::{ErrorKind, Outcome, OutcomeStatus};
use gatehouse_sim_ccbill::CcBillSimulator;
use gatehouse_sim_common::{Fault, RunningSimulator};
use serde_json::{Value, json};

const ACCNUM: &str = "912345";
const MAIN_USER: &str = "gh-main-datalink";
/// Credentials with characters form encoding changes, so leak checks cover both forms.
const MAIN_PASSWORD: &str = "Main P@ss&w0rd=secret";
const SUB_USER: &str = "gh-sub-datalink";
const SUB_PASSWORD: &str = "Sub S3cret+pass/0001";
const WRONG_PASSWORD: &str = "Wrong P@ss&guess=7";

fn form_encoded(text: &str) -> String {
    gatehouse_plugin_api::http::encode_form(&[("", text)])
        .trim_start_matches('=')
        .to_string()
}

async fn setup() -> (TestHost, CcBillSimulator, RunningSimulator) {
    let simulator = CcBillSimulator::new();
    simulator.add_account(ACCNUM, &["0000", "0001", "0002"]);
    simulator.add_main_user(ACCNUM, MAIN_USER, MAIN_PASSWORD);
    simulator.add_sub_account_user(ACCNUM, "0001", SUB_USER, SUB_PASSWORD);
    let (simulator, running) = simulator.serve().await.expect("simulator");
    let account = |name: &str, settings: &str, password: &str| {
        format!(
            r#"
[providers.ccbill.accounts.{name}]
base_url = "{base}"
timeout_ms = 1000
settings = {{ client_accnum = "{ACCNUM}", {settings} }}
secrets = {{ password = "{password}" }}
"#,
            base = running.base_url()
        )
    };
    let main = format!(r#"username = "{MAIN_USER}", using_subacc = "0002""#);
    let sub = format!(r#"username = "{SUB_USER}", client_subacc = "0001""#);
    let accounts = [
        account("main_csv", &main, MAIN_PASSWORD),
        account(
            "main_xml",
            &format!(r#"{main}, response_format = "xml""#),
            MAIN_PASSWORD,
        ),
        account("sub_csv", &sub, SUB_PASSWORD),
        account(
            "sub_xml",
            &format!(r#"{sub}, response_format = "xml""#),
            SUB_PASSWORD,
        ),
        account(
            "main_bare",
            &format!(r#"username = "{MAIN_USER}""#),
            MAIN_PASSWORD,
        ),
        account(
            "conflicting",
            &format!(r#"{main}, client_subacc = "0001""#),
            MAIN_PASSWORD,
        ),
        account("wrong", &main, WRONG_PASSWORD),
    ]
    .concat();
    let host = TestHost::start(&["gatehouse-plugin-ccbill"], &accounts).await;
    (host, simulator, running)
}

fn payout(cents: i64) -> Value {
    json!({"operation": "affiliate_payout", "affiliate_id": "123456",
           "amount": {"minor_units": cents, "currency": "USD"},
           "original_subscription_id": "1234567891"})
}

fn refund(transaction_type: &str) -> Value {
    json!({"operation": "affiliate_refund", "affiliate_id": "123456",
           "subscription_id": "1234567890", "original_subscription_id": "1234567891",
           "transaction_type": transaction_type})
}

fn error_kind(outcome: &Outcome) -> Option<ErrorKind> {
    outcome.error.as_ref().map(|error| error.kind)
}

#[tokio::test]
async fn both_actions_in_both_formats_for_main_and_sub_account_credentials() {
    let (host, simulator, _running) = setup().await;
    let accounts = [
        ("main_csv", "0002", "main"),
        ("main_xml", "0002", "main"),
        ("sub_csv", "0001", "sub"),
        ("sub_xml", "0001", "sub"),
    ];
    for (index, (account, subaccount, login)) in accounts.into_iter().enumerate() {
        let dispatched = host
            .call_full("ccbill", account, payout(1495))
            .await
            .expect("payout");
        assert_eq!(
            dispatched.outcome.status,
            OutcomeStatus::Succeeded,
            "{account}: {:?}",
            dispatched.outcome
        );
        assert_eq!(
            dispatched.outcome.amount.map(|amount| amount.minor_units),
            Some(1495)
        );
        assert_eq!(dispatched.provider_requests, 1);
        let recorded = simulator
            .payouts()
            .get(index)
            .cloned()
            .expect("the simulator recorded the payout");
        assert_eq!(
            (
                recorded.client_accnum.as_str(),
                recorded.subaccount.as_str()
            ),
            (ACCNUM, subaccount)
        );
        assert_eq!(recorded.login, login);
        assert_eq!(recorded.amount, "14.95");
        assert_eq!(
            recorded.original_subscription_id.as_deref(),
            Some("1234567891")
        );

        let transaction_type = ["one_time", "recurring", "rebill", "recurring"][index];
        let outcome = host
            .call("ccbill", account, refund(transaction_type))
            .await
            .expect("refund");
        assert_eq!(
            outcome.status,
            OutcomeStatus::Succeeded,
            "{account}: {outcome:?}"
        );
        let recorded = simulator
            .refunds()
            .get(index)
            .cloned()
            .expect("the simulator recorded the refund");
        assert_eq!(recorded.subaccount.as_deref(), Some(subaccount));
        assert_eq!(
            recorded.trans_type,
            ["ONETIME", "RECURRING", "REBILL", "RECURRING"][index]
        );
        assert_eq!(
            (
                recorded.subscription_id.as_str(),
                recorded.original_subscription_id.as_str()
            ),
            ("1234567890", "1234567891")
        );
    }
    // A bare main-account login may refund (the seed requires a sub-account only for payouts).
    let outcome = host
        .call("ccbill", "main_bare", refund("rebill"))
        .await
        .expect("refund");
    assert_eq!(outcome.status, OutcomeStatus::Succeeded, "{outcome:?}");
    assert_eq!(
        simulator
            .refunds()
            .last()
            .and_then(|refund| refund.subaccount.clone()),
        None
    );
    // Every request was a POST form: the password never travelled in a URL.
    let requests = simulator.requests();
    assert_eq!(requests.len(), 9);
    for request in &requests {
        assert_eq!(request.method, "POST");
        assert!(request.query_parameters.is_empty(), "{request:?}");
        assert!(request.body_parameters.contains(&"password".to_string()));
    }
    assert_eq!(requests.iter().filter(|request| request.xml).count(), 4);
}

#[tokio::test]
async fn every_listed_result_code_through_the_host() {
    let (host, simulator, _running) = setup().await;
    let cases: &[(i64, OutcomeStatus, Option<ErrorKind>)] = &[
        (1, OutcomeStatus::Succeeded, None),
        (0, OutcomeStatus::Failed, Some(ErrorKind::ProviderError)),
        (-1, OutcomeStatus::Failed, Some(ErrorKind::Authentication)),
        (-2, OutcomeStatus::Failed, Some(ErrorKind::InvalidRequest)),
        (-3, OutcomeStatus::Failed, Some(ErrorKind::NotFound)),
        (-4, OutcomeStatus::Failed, Some(ErrorKind::NotFound)),
        (-5, OutcomeStatus::Failed, Some(ErrorKind::InvalidRequest)),
        (-6, OutcomeStatus::Failed, Some(ErrorKind::InvalidRequest)),
        // -7 may be a wrong password (CCBill's "API -7 Error Explained"): the payout may have
        // run, so `unknown`, but the account is protected like after any refused login.
        (-7, OutcomeStatus::Unknown, Some(ErrorKind::Authentication)),
        (-8, OutcomeStatus::Failed, Some(ErrorKind::Authentication)),
        (-9, OutcomeStatus::Failed, Some(ErrorKind::Authentication)),
        (-10, OutcomeStatus::Failed, Some(ErrorKind::Authentication)),
        (-11, OutcomeStatus::Failed, Some(ErrorKind::Declined)),
        (-12, OutcomeStatus::Failed, Some(ErrorKind::RateLimited)),
        (-15, OutcomeStatus::Failed, Some(ErrorKind::Declined)),
        (-16, OutcomeStatus::Failed, Some(ErrorKind::Declined)),
        (-23, OutcomeStatus::Failed, Some(ErrorKind::Declined)),
        (-24, OutcomeStatus::Failed, Some(ErrorKind::Declined)),
        // Undocumented codes: nothing says whether the action ran.
        (-13, OutcomeStatus::Unknown, Some(ErrorKind::ProviderError)),
        (2, OutcomeStatus::Unknown, Some(ErrorKind::ProviderError)),
    ];
    for (index, (code, status, kind)) in cases.iter().enumerate() {
        let (account, command) = match index % 4 {
            0 => ("main_csv", payout(500)),
            1 => ("sub_xml", payout(500)),
            2 => ("sub_csv", refund("one_time")),
            _ => ("main_xml", refund("rebill")),
        };
        simulator.answer_next(*code);
        let dispatched = host
            .call_full("ccbill", account, command)
            .await
            .expect("an outcome");
        let outcome = &dispatched.outcome;
        assert_eq!(outcome.status, *status, "{code} via {account}: {outcome:?}");
        assert_eq!(error_kind(outcome), *kind, "{code} via {account}");
        assert_eq!(
            dispatched.provider_requests, 1,
            "{code}: money-moving requests are never resent"
        );
        if let Some(error) = &outcome.error {
            assert_eq!(
                error.provider_code.as_deref(),
                Some(code.to_string().as_str())
            );
        }
        // Login refusals and the lockout pause the account: the host sends nothing more.
        if matches!(
            kind,
            Some(ErrorKind::Authentication | ErrorKind::RateLimited)
        ) {
            let calls = simulator.datalink_calls();
            let paused = host.call("ccbill", account, refund("rebill")).await;
            assert!(
                matches!(paused, Err(DispatchError::AccountPaused { .. })),
                "{code}: {paused:?}"
            );
            assert_eq!(
                simulator.datalink_calls(),
                calls,
                "{code}: a paused account sends nothing"
            );
            assert!(host.gateway.resume_account("ccbill", account));
        }
    }
    // Forced answers record nothing; the one `1` did not either (it was forced too).
    assert!(simulator.payouts().is_empty() && simulator.refunds().is_empty());
    assert_eq!(simulator.datalink_calls(), cases.len());
}

#[tokio::test]
async fn an_authentication_failure_stops_the_host_before_ccbill_locks_the_account() {
    let (host, simulator, _running) = setup().await;
    let first = host
        .call("ccbill", "wrong", refund("rebill"))
        .await
        .expect("an outcome");
    assert_eq!(first.status, OutcomeStatus::Failed);
    let error = first.error.expect("error");
    assert_eq!(
        (error.kind, error.provider_code.as_deref()),
        (ErrorKind::Authentication, Some("-1"))
    );
    assert_eq!(simulator.datalink_calls(), 1);
    // Four more attempts: every one refused by the host, none reaches CCBill.
    for attempt in 0..4 {
        let paused = host.call("ccbill", "wrong", payout(100)).await;
        assert!(
            matches!(&paused, Err(DispatchError::AccountPaused { reason, .. }) if reason.contains("credentials")),
            "attempt {attempt}: {paused:?}"
        );
    }
    assert_eq!(
        simulator.datalink_calls(),
        1,
        "the host stopped sending after the first refusal"
    );
    assert_eq!(simulator.failed_logins(ACCNUM), 1);
    assert!(
        !simulator.is_locked(ACCNUM),
        "CCBill's lockout was never reached"
    );
    assert!(
        host.gateway
            .paused_accounts()
            .iter()
            .any(|(provider, account, _)| provider == "ccbill" && account == "wrong")
    );
    // The correctly configured accounts of the same CCBill account keep working.
    let outcome = host
        .call("ccbill", "sub_csv", payout(100))
        .await
        .expect("payout");
    assert_eq!(outcome.status, OutcomeStatus::Succeeded);

    // Without the host's protection (an operator resuming blindly), CCBill locks the account
    // after the third failure and even the right credentials get -12, which pauses too.
    for _ in 0..2 {
        assert!(host.gateway.resume_account("ccbill", "wrong"));
        let outcome = host
            .call("ccbill", "wrong", refund("rebill"))
            .await
            .expect("an outcome");
        assert_eq!(error_kind(&outcome), Some(ErrorKind::Authentication));
    }
    assert!(simulator.is_locked(ACCNUM));
    let locked = host
        .call("ccbill", "main_xml", refund("rebill"))
        .await
        .expect("an outcome");
    assert_eq!(locked.status, OutcomeStatus::Failed);
    assert_eq!(error_kind(&locked), Some(ErrorKind::RateLimited));
    let calls = simulator.datalink_calls();
    let paused = host.call("ccbill", "main_xml", refund("rebill")).await;
    assert!(
        matches!(paused, Err(DispatchError::AccountPaused { .. })),
        "{paused:?}"
    );
    assert_eq!(simulator.datalink_calls(), calls);
}

/// A wrong password, however CCBill words it (`-1`, `-7`, `Error: 02`), and 20 concurrent payouts:
/// the host sends one login, pauses the account with the reason, and CCBill's lockout is never
/// reached. A `-7` payout stays `unknown` (the action may have run) but protects the account all
/// the same. An IP-check failure (`Error: 04`) says so plainly and pauses too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_wording_of_a_wrong_password_costs_one_login() {
    use gatehouse_sim_ccbill::LoginRefusals;
    for (refusals, expected_status, expected_code) in [
        (LoginRefusals::ResultCodes, OutcomeStatus::Failed, "-1"),
        (LoginRefusals::MinusSeven, OutcomeStatus::Unknown, "-7"),
        (
            LoginRefusals::ErrorTexts,
            OutcomeStatus::Failed,
            "Error: 02",
        ),
    ] {
        let (host, simulator, _running) = setup().await;
        simulator.set_login_refusals(refusals);
        let host = std::sync::Arc::new(host);
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let host = host.clone();
                tokio::spawn(async move { host.call("ccbill", "wrong", payout(100)).await })
            })
            .collect();
        let mut sent = Vec::new();
        let mut paused = 0;
        for task in tasks {
            match task.await.expect("task") {
                Ok(outcome) => sent.push(outcome),
                Err(DispatchError::AccountPaused { reason, .. }) => {
                    assert!(reason.contains("credentials"), "{reason}");
                    paused += 1;
                }
                Err(other) => panic!("{refusals:?}: {other:?}"),
            }
        }
        assert_eq!(sent.len(), 1, "{refusals:?}: one payout reached CCBill");
        assert_eq!(paused, 19, "{refusals:?}");
        let outcome = &sent[0];
        assert_eq!(outcome.status, expected_status, "{refusals:?}: {outcome:?}");
        let error = outcome.error.as_ref().expect("error");
        assert_eq!(error.kind, ErrorKind::Authentication, "{refusals:?}");
        assert_eq!(error.provider_code.as_deref(), Some(expected_code));
        assert_eq!(simulator.datalink_calls(), 1, "{refusals:?}: one login");
        assert_eq!(simulator.failed_logins(ACCNUM), 1, "{refusals:?}");
        assert!(!simulator.is_locked(ACCNUM), "{refusals:?}");
    }

    // The IP check: the message says what to fix; the account pauses before anything else goes.
    let (host, simulator, _running) = setup().await;
    simulator.set_ip_check_failing(true);
    let outcome = host
        .call("ccbill", "sub_csv", payout(100))
        .await
        .expect("an outcome");
    assert_eq!(outcome.status, OutcomeStatus::Failed);
    let error = outcome.error.expect("error");
    assert_eq!(error.provider_code.as_deref(), Some("Error: 04"));
    assert!(
        error.message.to_ascii_lowercase().contains("ip"),
        "{}",
        error.message
    );
    let again = host.call("ccbill", "sub_csv", payout(100)).await;
    assert!(
        matches!(again, Err(DispatchError::AccountPaused { .. })),
        "{again:?}"
    );
    assert_eq!(simulator.datalink_calls(), 1);
}

#[tokio::test]
async fn configuration_and_commands_are_checked_before_any_request() {
    let (host, simulator, running) = setup().await;
    let cases: Vec<(&str, Value, Vec<&str>)> = vec![
        ("main_bare", payout(100), vec!["using_subacc"]),
        (
            "conflicting",
            refund("rebill"),
            vec!["client_subacc", "using_subacc"],
        ),
        (
            "main_csv",
            json!({"operation": "affiliate_payout", "affiliate_id": "1",
                            "amount": {"minor_units": 100, "currency": "EUR"}}),
            vec!["amount.currency"],
        ),
        ("sub_csv", refund("chargeback"), vec!["transaction_type"]),
        (
            "sub_xml",
            json!({"operation": "affiliate_refund", "affiliate_id": " ", "subscription_id": "1",
                           "original_subscription_id": "1", "transaction_type": "rebill"}),
            vec!["affiliate_id"],
        ),
    ];
    // An amount that is not positive is refused by the host itself, for every provider, before
    // the ledger or the plugin sees it.
    let zero = host.call("ccbill", "main_csv", payout(0)).await;
    assert!(
        matches!(&zero, Err(gatehouse_core::DispatchError::InvalidCommand { message }) if message.contains("amount.minor_units")),
        "{zero:?}"
    );
    for (account, command, fields) in cases {
        let outcome = host
            .call("ccbill", account, command.clone())
            .await
            .expect("an outcome");
        assert_eq!(outcome.status, OutcomeStatus::Failed, "{account} {command}");
        let error = outcome.error.expect("error");
        assert_eq!(error.kind, ErrorKind::InvalidRequest, "{account} {command}");
        assert_eq!(
            error.fields, fields,
            "{account} {command}: {}",
            error.message
        );
    }
    let unsupported = host
        .call(
            "ccbill",
            "main_csv",
            json!({"operation": "refund", "transaction_id": "1"}),
        )
        .await;
    assert!(
        matches!(unsupported, Err(DispatchError::NotSupported { .. })),
        "{unsupported:?}"
    );
    assert_eq!(simulator.datalink_calls(), 0);
    assert!(running.calls.all().is_empty());
    assert!(
        host.gateway.paused_accounts().is_empty(),
        "refusals before I/O pause nothing"
    );
}

#[tokio::test]
async fn malformed_answers_and_transport_faults_are_unknown_never_panics() {
    let (host, simulator, running) = setup().await;
    let faults: Vec<(&str, Fault)> = vec![
        ("empty", Fault::Body(String::new())),
        (
            "html",
            Fault::Body("<html><body><h1>502 Bad Gateway</h1></body></html>".into()),
        ),
        (
            "truncated xml",
            Fault::Body("<?xml version='1.0'?><results>1</res".into()),
        ),
        ("csv without header", Fault::Body("\"1\"\n".into())),
        ("garbage", Fault::Body("\u{0}\u{1}garbage\u{2}".into())),
        ("huge", Fault::EnormousBody(200 * 1024)),
        (
            "larger than the host takes",
            Fault::EnormousBody(6 * 1024 * 1024),
        ),
        ("truncated body", Fault::TruncateBody),
        ("500", Fault::Status(500, "Internal Server Error".into())),
        ("503", Fault::Status(503, "maintenance".into())),
        ("dropped connection", Fault::DropConnection),
        ("reset mid-body", Fault::ResetMidBody),
    ];
    for (index, (label, fault)) in faults.into_iter().enumerate() {
        let account = ["main_csv", "main_xml", "sub_csv", "sub_xml"][index % 4];
        running.faults.push(fault);
        let dispatched = host
            .call_full("ccbill", account, payout(700))
            .await
            .expect("an outcome");
        assert_eq!(
            dispatched.outcome.status,
            OutcomeStatus::Unknown,
            "{label}: {:?}",
            dispatched.outcome
        );
        assert_eq!(
            dispatched.provider_requests, 1,
            "{label}: a payout is never resent"
        );
        // The host keeps serving.
        let outcome = host
            .call("ccbill", account, refund("rebill"))
            .await
            .expect("refund");
        assert_eq!(outcome.status, OutcomeStatus::Succeeded, "after {label}");
    }
    // Past the timeout the payout ran at CCBill but the answer never came: unknown, and not
    // resent, so the affiliate is paid once.
    let before = simulator.payouts().len();
    running
        .faults
        .push(Fault::Delay(Duration::from_millis(1500)));
    let dispatched = host
        .call_full("ccbill", "sub_csv", payout(900))
        .await
        .expect("an outcome");
    assert_eq!(
        dispatched.outcome.status,
        OutcomeStatus::Unknown,
        "{:?}",
        dispatched.outcome
    );
    assert_eq!(dispatched.provider_requests, 1);
    tokio::time::sleep(Duration::from_millis(700)).await;
    // Whether the simulator finished the request after the host gave up depends on the server
    // noticing the closed connection; either way the affiliate is never paid twice.
    assert!(simulator.payouts().len() <= before + 1);

    // A plain-text login refusal is an authentication failure, and pauses the account.
    running.faults.push(Fault::Body("Access denied".into()));
    let outcome = host
        .call("ccbill", "main_csv", payout(100))
        .await
        .expect("an outcome");
    assert_eq!(
        (outcome.status, error_kind(&outcome)),
        (OutcomeStatus::Failed, Some(ErrorKind::Authentication))
    );
    assert!(matches!(
        host.call("ccbill", "main_csv", payout(100)).await,
        Err(DispatchError::AccountPaused { .. })
    ));
}

#[tokio::test]
async fn credentials_never_reach_outcomes_errors_or_logs() {
    let (host, simulator, running) = setup().await;
    let mut transcript = String::new();
    let accounts = [
        ("main_csv", MAIN_USER, MAIN_PASSWORD),
        ("main_xml", MAIN_USER, MAIN_PASSWORD),
        ("sub_csv", SUB_USER, SUB_PASSWORD),
        ("sub_xml", SUB_USER, SUB_PASSWORD),
        ("main_bare", MAIN_USER, MAIN_PASSWORD),
        ("conflicting", MAIN_USER, MAIN_PASSWORD),
        ("wrong", MAIN_USER, WRONG_PASSWORD),
    ];
    for (account, user, password) in accounts {
        // A broken server or proxy that echoes the request it received, in both encodings.
        let echo = format!(
            "<html>echo: clientAccnum={ACCNUM}&username={user}&password={}&action=x (decoded: {user} / {password})</html>",
            form_encoded(password)
        );
        for command in [payout(1495), refund("one_time")] {
            transcript.push_str(&format!(
                "{:?}\n",
                host.call_full("ccbill", account, command.clone()).await
            ));
            host.gateway.resume_account("ccbill", account);
            let answers = [
                Fault::Body(echo.clone()),
                Fault::Status(500, echo.clone()),
                Fault::Status(403, echo.clone()),
                Fault::Body(format!("\"results\"\n\"{password}\"\n")),
                Fault::Body(format!("Authentication failed for {user}:{password}")),
            ];
            for fault in answers {
                running.faults.push(fault);
                let result = host.call("ccbill", account, command.clone()).await;
                if let Ok(outcome) = &result {
                    transcript
                        .push_str(&serde_json::to_string(outcome).expect("outcome serializes"));
                }
                transcript.push_str(&format!("{result:?}\n"));
                host.gateway.resume_account("ccbill", account);
                running.faults.clear();
            }
            for code in [-1, -5, -7, -12, -13] {
                simulator.answer_next(code);
                transcript.push_str(&format!(
                    "{:?}\n",
                    host.call("ccbill", account, command.clone()).await
                ));
                host.gateway.resume_account("ccbill", account);
                simulator.reset();
            }
        }
    }
    assert!(
        transcript.contains("Authentication"),
        "the transcript holds the errors"
    );
    assert!(
        transcript.contains("echo: clientAccnum"),
        "the transcript quotes provider text"
    );
    transcript.push_str(&gatehouse_e2e::captured_logs());
    for credential in [
        MAIN_PASSWORD.to_string(),
        form_encoded(MAIN_PASSWORD),
        SUB_PASSWORD.to_string(),
        form_encoded(SUB_PASSWORD),
        WRONG_PASSWORD.to_string(),
        form_encoded(WRONG_PASSWORD),
        MAIN_USER.to_string(),
        SUB_USER.to_string(),
    ] {
        assert!(!transcript.contains(&credential), "`{credential}` leaked");
    }
}
