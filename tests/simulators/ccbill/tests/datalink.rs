//! The simulator over real HTTP on loopback: it must follow the seed document and providers.md.

use std::time::Duration;

use gatehouse_sim_ccbill::{
    CcBillSimulator, ENDPOINT_PATH, SEED_ACCNUM, SEED_PASSWORD, SEED_SUB_PASSWORD,
    SEED_SUB_USERNAME, SEED_USERNAME, dollars_to_cents,
};
use serde_json::{Value, json};

fn main_login() -> Vec<(&'static str, &'static str)> {
    vec![
        ("clientAccnum", SEED_ACCNUM),
        ("username", SEED_USERNAME),
        ("password", SEED_PASSWORD),
    ]
}

fn sub_login() -> Vec<(&'static str, &'static str)> {
    vec![
        ("clientAccnum", SEED_ACCNUM),
        ("clientSubacc", "0001"),
        ("username", SEED_SUB_USERNAME),
        ("password", SEED_SUB_PASSWORD),
    ]
}

fn with<'a>(
    mut base: Vec<(&'a str, &'a str)>,
    more: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    base.extend_from_slice(more);
    base
}

async fn post(base: &str, form: &[(&str, &str)]) -> String {
    let response = reqwest::Client::new()
        .post(format!("{base}{ENDPOINT_PATH}"))
        .form(form)
        .send()
        .await
        .expect("simulator answers");
    assert_eq!(
        response.status(),
        200,
        "DataLink answers its errors with HTTP 200"
    );
    response.text().await.expect("text body")
}

async fn get(base: &str, query: &[(&str, &str)]) -> String {
    let response = reqwest::Client::new()
        .get(format!("{base}{ENDPOINT_PATH}"))
        .query(query)
        .send()
        .await
        .expect("simulator answers");
    assert_eq!(response.status(), 200);
    response.text().await.expect("text body")
}

fn csv(code: i64) -> String {
    format!("\"results\"\n\"{code}\"\n")
}

fn xml(code: i64) -> String {
    format!("<?xml version='1.0'?><results>{code}</results>")
}

const PAYOUT: [(&str, &str); 4] = [
    ("action", "addAffiliatePayout"),
    ("affiliateId", "123456"),
    ("originalSubId", "1234567891"),
    ("amount", "14.95"),
];

fn refund(trans_type: &'static str) -> [(&'static str, &'static str); 5] {
    [
        ("action", "addAffiliateRefund"),
        ("affiliateId", "123456"),
        ("subscriptionId", "1234567890"),
        ("originalSubId", "1234567891"),
        ("transType", trans_type),
    ]
}

#[tokio::test]
async fn payouts_are_recorded_from_post_forms_and_get_queries_in_both_formats() {
    let (sim, running) = CcBillSimulator::start().await.expect("start");
    let base = running.base_url();

    let form = with(with(main_login(), &[("usingSubacc", "0002")]), &PAYOUT);
    assert_eq!(post(&base, &form).await, csv(1));

    // The seed's own sample shape: GET, sub-account credentials, here with returnXML=1.
    let query = with(with(sub_login(), &[("returnXML", "1")]), &PAYOUT);
    assert_eq!(get(&base, &query).await, xml(1));

    let payouts = sim.payouts();
    assert_eq!(payouts.len(), 2);
    assert_eq!(payouts[0].subaccount, "0002");
    assert_eq!(payouts[0].login, "main");
    assert_eq!(payouts[0].amount_cents, 1495);
    assert_eq!(
        payouts[0].original_subscription_id.as_deref(),
        Some("1234567891")
    );
    assert_eq!(payouts[1].subaccount, "0001");
    assert_eq!(payouts[1].login, "sub");

    let requests = sim.requests();
    assert_eq!(requests[0].method, "POST");
    assert!(requests[0].query_parameters.is_empty());
    assert!(
        requests[0]
            .body_parameters
            .contains(&"password".to_string())
    );
    assert_eq!(requests[1].method, "GET");
    assert!(
        requests[1]
            .query_parameters
            .contains(&"password".to_string())
    );
    assert!(requests[1].xml);

    let listed: Value = reqwest::get(format!("{base}/_sim/payouts"))
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(listed[1]["amount"], "14.95");
}

#[tokio::test]
async fn refunds_take_the_three_transaction_types() {
    let (sim, running) = CcBillSimulator::start().await.expect("start");
    let base = running.base_url();
    for trans_type in ["ONETIME", "RECURRING", "REBILL"] {
        assert_eq!(
            post(&base, &with(main_login(), &refund(trans_type))).await,
            csv(1)
        );
        assert_eq!(
            post(
                &base,
                &with(
                    with(sub_login(), &[("returnXML", "1")]),
                    &refund(trans_type)
                )
            )
            .await,
            xml(1)
        );
    }
    assert_eq!(
        post(&base, &with(main_login(), &refund("ÚNICO"))).await,
        csv(-5)
    );
    assert_eq!(
        post(&base, &with(main_login(), &refund("one_time"))).await,
        csv(-5)
    );
    let refunds = sim.refunds();
    assert_eq!(refunds.len(), 6);
    assert_eq!(refunds[0].subaccount, None);
    assert_eq!(refunds[1].subaccount.as_deref(), Some("0001"));
    assert_eq!(refunds[5].trans_type, "REBILL");
}

#[tokio::test]
async fn the_main_and_sub_account_rules_are_enforced() {
    let (sim, running) = CcBillSimulator::start().await.expect("start");
    let base = running.base_url();
    // Sub-account credentials without clientSubacc, or with another one: a failed login.
    let sub_without_subacc: Vec<_> = sub_login()
        .into_iter()
        .filter(|(key, _)| *key != "clientSubacc")
        .collect();
    assert_eq!(
        post(&base, &with(sub_without_subacc, &refund("REBILL"))).await,
        csv(-1)
    );
    // Main-account credentials acting on a sub-account the account does not have.
    assert_eq!(
        post(
            &base,
            &with(
                with(main_login(), &[("usingSubacc", "0009")]),
                &refund("REBILL")
            )
        )
        .await,
        csv(-5)
    );
    // A sub-account user acting on another sub-account.
    assert_eq!(
        post(
            &base,
            &with(
                with(sub_login(), &[("usingSubacc", "0002")]),
                &refund("REBILL")
            )
        )
        .await,
        csv(-9)
    );
    // A payout with main-account credentials must name the sub-account.
    assert_eq!(post(&base, &with(main_login(), &PAYOUT)).await, csv(-5));
    // Unknown or missing action.
    assert_eq!(
        post(
            &base,
            &with(with(main_login(), &[("action", "cancelSubscription")]), &[])
        )
        .await,
        csv(-6)
    );
    assert_eq!(post(&base, &main_login()).await, csv(-6));
    // Bad amounts and ids.
    for amount in ["14.951", "abc", "0", "-1.00", "1e3", "14."] {
        let form = with(with(sub_login(), &[("amount", amount)]), &PAYOUT[..3]);
        assert_eq!(post(&base, &form).await, csv(-5), "{amount}");
    }
    let form = with(
        sub_login(),
        &[
            ("action", "addAffiliatePayout"),
            ("affiliateId", "12a"),
            ("amount", "1"),
        ],
    );
    assert_eq!(post(&base, &form).await, csv(-5));
    assert!(sim.payouts().is_empty());
    assert!(sim.refunds().is_empty());
    // Deactivated accounts.
    sim.set_deactivated(SEED_ACCNUM, true);
    assert_eq!(
        post(&base, &with(main_login(), &refund("REBILL"))).await,
        csv(-9)
    );
}

#[tokio::test]
async fn three_failed_logins_in_an_hour_lock_the_account() {
    let (sim, running) = CcBillSimulator::start().await.expect("start");
    let base = running.base_url();
    let wrong = vec![
        ("clientAccnum", SEED_ACCNUM),
        ("username", SEED_USERNAME),
        ("password", "wrong"),
    ];
    for attempt in 1..=3 {
        assert_eq!(
            post(&base, &with(wrong.clone(), &refund("REBILL"))).await,
            csv(-1),
            "attempt {attempt}"
        );
    }
    assert!(sim.is_locked(SEED_ACCNUM));
    // Now even the right password is refused, in either format.
    assert_eq!(
        post(&base, &with(main_login(), &refund("REBILL"))).await,
        csv(-12)
    );
    assert_eq!(
        post(
            &base,
            &with(with(main_login(), &[("returnXML", "1")]), &refund("REBILL"))
        )
        .await,
        xml(-12)
    );
    let logins: Value = reqwest::get(format!("{base}/_sim/accounts/{SEED_ACCNUM}/logins"))
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(logins, json!({"failed_logins": 3, "locked": true}));
    // An hour later the failures have aged out.
    reqwest::Client::new()
        .post(format!("{base}/_sim/clock/advance"))
        .json(&json!({"seconds": 3601}))
        .send()
        .await
        .expect("advance");
    assert!(!sim.is_locked(SEED_ACCNUM));
    assert_eq!(
        post(&base, &with(main_login(), &refund("REBILL"))).await,
        csv(1)
    );
    sim.advance_clock(Duration::ZERO);
    assert_eq!(sim.datalink_calls(), 6);
}

#[tokio::test]
async fn any_result_code_can_be_forced_for_the_next_request() {
    let (sim, running) = CcBillSimulator::start().await.expect("start");
    let base = running.base_url();
    sim.answer_next(-7);
    assert_eq!(
        post(
            &base,
            &with(with(sub_login(), &[("returnXML", "1")]), &PAYOUT)
        )
        .await,
        xml(-7)
    );
    reqwest::Client::new()
        .post(format!("{base}/_sim/next-result"))
        .json(&json!({"code": -24}))
        .send()
        .await
        .expect("force");
    assert_eq!(post(&base, &with(sub_login(), &PAYOUT)).await, csv(-24));
    // Forced answers change nothing; the next request is handled normally.
    assert!(sim.payouts().is_empty());
    assert_eq!(post(&base, &with(sub_login(), &PAYOUT)).await, csv(1));
    assert_eq!(sim.payouts().len(), 1);
    reqwest::Client::new()
        .post(format!("{base}/_sim/reset"))
        .send()
        .await
        .expect("reset");
    assert!(sim.payouts().is_empty());
    assert_eq!(running.calls.count(ENDPOINT_PATH), 3);
}

#[test]
fn dollar_amounts_convert_exactly() {
    assert_eq!(dollars_to_cents("14.95"), Some(1495));
    assert_eq!(dollars_to_cents("14.9"), Some(1490));
    assert_eq!(dollars_to_cents("1000"), Some(100_000));
    for bad in [
        "",
        ".5",
        "14.",
        "14.951",
        "0",
        "0.00",
        "-1",
        "1,00",
        "9999999999999",
    ] {
        assert_eq!(dollars_to_cents(bad), None, "{bad}");
    }
}

/// Posts a control request and checks the simulator took it.
async fn control(base: &str, path: &str, body: Value) {
    let response = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .json(&body)
        .send()
        .await
        .expect("control route answers");
    assert_eq!(response.status(), 204, "{path} {body}");
}

#[tokio::test]
async fn wrong_logins_can_be_answered_minus_seven_or_as_error_texts() {
    let (sim, running) = CcBillSimulator::start().await.expect("start");
    let base = running.base_url();
    let wrong = vec![
        ("clientAccnum", SEED_ACCNUM),
        ("username", SEED_USERNAME),
        ("password", "wrong"),
    ];
    // -7 for a wrong login (CCBill's "-7 Error Explained"), counted toward the lockout.
    control(
        &base,
        "/_sim/login-refusals",
        json!({"refusals": "minus_seven"}),
    )
    .await;
    for attempt in 1..=3 {
        assert_eq!(
            post(&base, &with(wrong.clone(), &refund("REBILL"))).await,
            csv(-7),
            "attempt {attempt}"
        );
    }
    assert!(sim.is_locked(SEED_ACCNUM));
    assert_eq!(
        post(&base, &with(main_login(), &refund("REBILL"))).await,
        csv(-12)
    );
    // The same walk as text answers: Error: 02, then Error: 01 once locked, even for XML.
    sim.reset();
    sim.set_login_refusals(gatehouse_sim_ccbill::LoginRefusals::ErrorTexts);
    for _ in 0..3 {
        assert_eq!(
            post(&base, &with(wrong.clone(), &[("returnXML", "1")])).await,
            "Error: 02"
        );
    }
    assert_eq!(
        post(&base, &with(main_login(), &refund("REBILL"))).await,
        "Error: 01"
    );
    let requests = sim.requests();
    assert_eq!(
        requests
            .iter()
            .map(|request| (request.error_text, request.result))
            .collect::<Vec<_>>(),
        vec![(Some(2), -1), (Some(2), -1), (Some(2), -1), (Some(1), -12)]
    );
    assert!(sim.payouts().is_empty() && sim.refunds().is_empty());
}

#[tokio::test]
async fn the_ip_check_and_forced_error_texts() {
    let (sim, running) = CcBillSimulator::start().await.expect("start");
    let base = running.base_url();
    control(&base, "/_sim/ip-check", json!({"failing": true})).await;
    // Refused before the credentials are read, right or wrong, and not counted as a failed login.
    assert_eq!(
        post(&base, &with(main_login(), &refund("ONETIME"))).await,
        "Error: 04"
    );
    assert_eq!(sim.failed_logins(SEED_ACCNUM), 0);
    assert!(sim.refunds().is_empty());
    control(&base, "/_sim/ip-check", json!({"failing": false})).await;
    for number in [1, 2, 3, 4] {
        control(&base, "/_sim/next-result", json!({"error_text": number})).await;
        assert_eq!(
            post(&base, &with(main_login(), &refund("ONETIME"))).await,
            format!("Error: 0{number}")
        );
    }
    assert!(sim.refunds().is_empty(), "a forced answer changes nothing");
    // A code and a text at once, or neither, is refused.
    for body in [json!({"code": -7, "error_text": 2}), json!({})] {
        let response = reqwest::Client::new()
            .post(format!("{base}/_sim/next-result"))
            .json(&body)
            .send()
            .await
            .expect("answers");
        assert_eq!(response.status(), 422, "{body}");
    }
    assert_eq!(
        post(&base, &with(main_login(), &refund("ONETIME"))).await,
        csv(1)
    );
}
