//! Cross-check: the requests the CCBill plugin builds, sent over real HTTP, are accepted by the
//! simulator, and the simulator's answers read back as the outcomes the plugin documents.

use gatehouse_plugin_api::testkit;
use gatehouse_plugin_api::{ErrorKind, HttpRequest, HttpResponse, Invocation, OutcomeStatus};
use gatehouse_plugin_ccbill::CcBill;
use gatehouse_sim_ccbill::{
    CcBillSimulator, SEED_ACCNUM, SEED_PASSWORD, SEED_SUB_PASSWORD, SEED_SUB_USERNAME,
    SEED_USERNAME,
};
use serde_json::json;

async fn send(request: &HttpRequest) -> HttpResponse {
    let mut builder = reqwest::Client::new()
        .post(&request.url)
        .body(request.body.clone());
    for (name, value) in &request.headers {
        builder = builder.header(name, value);
    }
    let response = builder.send().await.expect("simulator answers");
    let status = response.status().as_u16();
    HttpResponse::new(status, response.bytes().await.expect("body").to_vec())
}

/// Runs one flow against the simulator: capture the request, send it, feed the answer back.
async fn run_against(invocation: &Invocation) -> testkit::FlowRun {
    let captured = testkit::run::<CcBill>(invocation, b"", [HttpResponse::new(200, "")]);
    let answer = send(captured.single_request()).await;
    testkit::run::<CcBill>(invocation, b"", [answer])
}

fn account(base_url: &str, format: &str, sub_account: bool) -> gatehouse_plugin_api::AccountConfig {
    if sub_account {
        testkit::account(
            base_url,
            &[
                ("client_accnum", SEED_ACCNUM),
                ("client_subacc", "0001"),
                ("username", SEED_SUB_USERNAME),
                ("response_format", format),
            ],
            &[("password", SEED_SUB_PASSWORD)],
        )
    } else {
        testkit::account(
            base_url,
            &[
                ("client_accnum", SEED_ACCNUM),
                ("using_subacc", "0002"),
                ("username", SEED_USERNAME),
                ("response_format", format),
            ],
            &[("password", SEED_PASSWORD)],
        )
    }
}

#[tokio::test]
async fn plugin_payouts_and_refunds_succeed_in_both_formats_for_both_logins() {
    let (sim, running) = CcBillSimulator::start().await.expect("start");
    let base = running.base_url();
    for format in ["csv", "xml"] {
        for sub_account in [false, true] {
            let payout = testkit::invocation(
                json!({"operation": "affiliate_payout", "affiliate_id": "123456",
                       "amount": {"minor_units": 1495, "currency": "USD"}, "original_subscription_id": "1234567891"}),
                account(&base, format, sub_account),
            );
            assert_eq!(
                run_against(&payout).await.outcome().status,
                OutcomeStatus::Succeeded,
                "{format} {sub_account}"
            );
            let refund = testkit::invocation(
                json!({"operation": "affiliate_refund", "affiliate_id": "123456", "subscription_id": "1234567890",
                       "original_subscription_id": "1234567891", "transaction_type": "recurring"}),
                account(&base, format, sub_account),
            );
            assert_eq!(
                run_against(&refund).await.outcome().status,
                OutcomeStatus::Succeeded,
                "{format} {sub_account}"
            );
        }
    }
    assert_eq!(sim.payouts().len(), 4);
    assert!(sim.payouts().iter().all(|payout| payout.amount == "14.95"));
    assert_eq!(sim.refunds().len(), 4);
    assert!(
        sim.refunds()
            .iter()
            .all(|refund| refund.trans_type == "RECURRING")
    );
    assert!(
        sim.requests()
            .iter()
            .all(|request| request.method == "POST" && request.query_parameters.is_empty())
    );
}

#[tokio::test]
async fn plugin_reads_the_simulators_refusals() {
    let (sim, running) = CcBillSimulator::start().await.expect("start");
    let base = running.base_url();
    let mut wrong = account(&base, "xml", false);
    wrong.secrets.insert(
        "password".into(),
        gatehouse_plugin_api::Secret::new("not-the-password"),
    );
    let refund = |account| {
        testkit::invocation(
            json!({"operation": "affiliate_refund", "affiliate_id": "1", "subscription_id": "2",
                   "original_subscription_id": "3", "transaction_type": "rebill"}),
            account,
        )
    };
    let run = run_against(&refund(wrong.clone())).await;
    assert_eq!(run.outcome().status, OutcomeStatus::Failed);
    assert_eq!(
        run.outcome().error.as_ref().map(|error| error.kind),
        Some(ErrorKind::Authentication)
    );
    run_against(&refund(wrong.clone())).await;
    run_against(&refund(wrong)).await;
    let locked = run_against(&refund(account(&base, "csv", false))).await;
    assert_eq!(
        locked.outcome().error.as_ref().map(|error| error.kind),
        Some(ErrorKind::RateLimited)
    );
    sim.reset();
    sim.answer_next(-7);
    let indeterminate = run_against(&refund(account(&base, "csv", true))).await;
    assert_eq!(indeterminate.outcome().status, OutcomeStatus::Unknown);
}

/// The lockout walk in each of the ways CCBill answers it: every refusal the plugin reads from
/// the simulator has a kind the host pauses on, and the money-moving outcome of `-7` stays
/// unknown (the action may have run).
#[tokio::test]
async fn plugin_reads_every_style_of_login_refusal_as_a_pausing_kind() {
    use gatehouse_sim_ccbill::LoginRefusals;
    let (sim, running) = CcBillSimulator::start().await.expect("start");
    let base = running.base_url();
    let mut wrong = account(&base, "csv", true);
    wrong.secrets.insert(
        "password".into(),
        gatehouse_plugin_api::Secret::new("not-the-password"),
    );
    let payout = |account| {
        testkit::invocation(
            json!({"operation": "affiliate_payout", "affiliate_id": "123456",
                   "amount": {"minor_units": 500, "currency": "USD"}}),
            account,
        )
    };
    for (refusals, wrong_login, locked) in [
        (
            LoginRefusals::MinusSeven,
            (OutcomeStatus::Unknown, ErrorKind::Authentication),
            ErrorKind::RateLimited,
        ),
        (
            LoginRefusals::ErrorTexts,
            (OutcomeStatus::Failed, ErrorKind::Authentication),
            ErrorKind::RateLimited,
        ),
    ] {
        sim.reset();
        sim.set_login_refusals(refusals);
        for attempt in 1..=3 {
            let run = run_against(&payout(wrong.clone())).await;
            let error = run.outcome().error.clone().expect("an error");
            assert_eq!(
                (run.outcome().status, error.kind),
                wrong_login,
                "{refusals:?} attempt {attempt}"
            );
        }
        let run = run_against(&payout(account(&base, "csv", true))).await;
        assert_eq!(run.outcome().status, OutcomeStatus::Failed, "{refusals:?}");
        assert_eq!(
            run.outcome().error.as_ref().map(|error| error.kind),
            Some(locked),
            "{refusals:?}"
        );
    }
    sim.reset();
    sim.set_ip_check_failing(true);
    let run = run_against(&payout(account(&base, "xml", true))).await;
    let error = run.outcome().error.clone().expect("an error");
    assert_eq!(run.outcome().status, OutcomeStatus::Failed);
    assert_eq!(error.kind, ErrorKind::Authentication);
    assert!(
        error.message.contains("IP check failed"),
        "{}",
        error.message
    );
    assert!(sim.payouts().is_empty());
}
