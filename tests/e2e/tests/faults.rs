//! Provider faults against every money-moving command (PayGateGlobal charge, Xsolla charge and
//! refund, CCBill payout) and a read, through the HTTP API and the ledger.
//!
//! Each fault is injected by the simulator (or, for "connection refused", by an account pointed at
//! a closed loopback port). For each: the outcome is `failed` only when nothing can have happened
//! at the provider and `unknown` otherwise; requests are resent only where the plugin marked them
//! retry-safe (counted at the simulator); after reconciliation every ledger entry holds the
//! provider's true state (checked against the simulator's own records), nothing is lost and
//! nothing is done twice.

use crate::reliability;

use std::time::Duration;

use gatehouse_e2e::{ApiHost, Backend};
use gatehouse_sim_common::Fault;
use reliability::{
    Simulators, ccbill_payout, figure, ledger, pgg_charge, xsolla_charge, xsolla_refund,
};
use reqwest::Method;
use serde_json::{Value, json};

/// The accounts' timeout; slow faults wait longer than this.
const TIMEOUT_MS: u64 = 600;

/// One injected fault and what must come of it.
struct Case {
    label: &'static str,
    faults: Vec<Fault>,
    /// `main`, or `down` (a closed port: connection refused).
    account: &'static str,
    /// The outcome status the caller must see.
    expect: &'static str,
    /// Requests that must reach the provider's endpoint (retries included).
    calls: usize,
}

fn case(label: &'static str, faults: Vec<Fault>, expect: &'static str, calls: usize) -> Case {
    Case {
        label,
        faults,
        account: "main",
        expect,
        calls,
    }
}

fn refused() -> Case {
    Case {
        label: "connection refused",
        faults: vec![],
        account: "down",
        expect: "failed",
        calls: 0,
    }
}

fn slow() -> Fault {
    Fault::Delay(Duration::from_millis(TIMEOUT_MS * 2))
}

fn status(code: u16) -> Fault {
    Fault::Status(code, format!("<html>{code} from a proxy</html>"))
}

fn times(fault: Fault, count: usize) -> Vec<Fault> {
    vec![fault; count]
}

/// What one case produced.
struct Ran {
    label: &'static str,
    reference: String,
    status: String,
}

async fn send(api: &ApiHost, path: &str, body: Value, key: &str) -> (u16, Value) {
    let (status, _, answer) = api
        .request(Method::POST, path, Some(body), &[("Idempotency-Key", key)])
        .await;
    (status, answer)
}

async fn reconcile(api: &ApiHost) -> Value {
    let (status, report) = api.post("/v1/reconcile", json!({})).await;
    assert_eq!(status, 200, "{report}");
    report
}

/// Runs each case as one money-moving command and checks the caller's answer and the calls the
/// simulator counted.
async fn run_cases(
    api: &ApiHost,
    provider: &str,
    operation_path: &str,
    cases: Vec<Case>,
    mut body: impl FnMut(usize) -> Value,
    mut calls: impl FnMut() -> usize,
    faults: &gatehouse_sim_common::Faults,
) -> Vec<Ran> {
    let mut ran = Vec::new();
    for (index, case) in cases.into_iter().enumerate() {
        faults.clear();
        for fault in case.faults {
            faults.push(fault);
        }
        let before = calls();
        let path = format!("/v1/{provider}/{}/{operation_path}", case.account);
        let key = format!("{provider}-{operation_path}-{index}");
        let (status, answer) = send(api, &path, body(index), &key).await;
        faults.clear();
        assert_eq!(status, 200, "{provider} {}: {answer}", case.label);
        let outcome = answer["status"].as_str().unwrap_or_default().to_string();
        assert_eq!(
            outcome, case.expect,
            "{provider} {operation_path} {}: {answer}",
            case.label
        );
        let made = calls() - before;
        assert_eq!(
            made, case.calls,
            "{provider} {operation_path} {}: requests at the provider",
            case.label
        );
        let reference = answer["reference"]
            .as_str()
            .expect("a reference")
            .to_string();
        // A rate-limit answer pauses the account (by design); lift it before the retry, which the
        // host refuses with 429 account_paused while the account is paused (the pause is checked
        // before the ledger lookup), and for the next case.
        api.post(
            &format!("/v1/{provider}/{}/resume", case.account),
            json!({}),
        )
        .await;
        // A retry with the same key is answered from the ledger and sends nothing.
        let before_retry = calls();
        let (status, replay) = send(api, &path, body(index), &key).await;
        assert_eq!(status, 200, "{} replay: {replay}", case.label);
        assert_eq!(replay["reference"], answer["reference"], "{}", case.label);
        assert_eq!(replay["replayed"], true);
        assert_eq!(
            calls(),
            before_retry,
            "{}: a retry with the same key sent a request",
            case.label
        );
        figure(
            &format!(
                "faults.{provider}.{operation_path}.{}",
                case.label.replace(' ', "_")
            ),
            format!("outcome={outcome} provider_requests={made}"),
        );
        ran.push(Ran {
            label: case.label,
            reference,
            status: outcome,
        });
    }
    ran
}

/// Nothing lost: every reference the callers got is in the ledger once, and the ledger holds
/// nothing else for this provider.
fn check_nothing_lost(
    entries: &std::collections::BTreeMap<String, Value>,
    provider: &str,
    ran: &[Ran],
) {
    let listed: Vec<&String> = entries
        .iter()
        .filter(|(_, entry)| entry["provider"] == provider)
        .map(|(id, _)| id)
        .collect();
    assert_eq!(
        listed.len(),
        ran.len(),
        "{provider}: one ledger entry per command"
    );
    for run in ran {
        assert!(
            entries.contains_key(&run.reference),
            "{provider} {}: entry lost",
            run.label
        );
    }
}

async fn paygateglobal_charges_survive_every_provider_fault(backend: Backend) {
    let sims = Simulators::start().await;
    let api = ApiHost::start_on(
        backend,
        &["gatehouse-plugin-paygateglobal"],
        &sims.accounts_toml(TIMEOUT_MS),
    )
    .await;
    // The pay request is retry-safe (PayGateGlobal refuses a second transaction with the same
    // identifier), so transport failures and 502-504 are resent (max_retries = 2).
    let cases = vec![
        case("no fault", vec![], "pending", 1),
        case("slow past the timeout", vec![slow()], "pending", 2),
        refused(),
        case("reset mid-body", vec![Fault::ResetMidBody], "pending", 2),
        case(
            "dropped connection",
            vec![Fault::DropConnection],
            "pending",
            2,
        ),
        case("500", vec![status(500)], "unknown", 1),
        case("502 then answered", vec![status(502)], "pending", 2),
        case("502", times(status(502), 3), "unknown", 3),
        case("503", times(status(503), 3), "unknown", 3),
        case("429", vec![status(429)], "failed", 1),
        case("truncated body", vec![Fault::TruncateBody], "unknown", 1),
        case(
            "wrong content type",
            vec![Fault::WrongContentType("text/html")],
            "pending",
            1,
        ),
        case(
            "wrong-shape JSON",
            vec![Fault::Body(r#"{"unexpected": [1, 2]}"#.into())],
            "unknown",
            1,
        ),
        case(
            "JSON array",
            vec![Fault::Body("[1,2,3]".into())],
            "unknown",
            1,
        ),
        case(
            "undocumented status",
            vec![Fault::Body(r#"{"status": 99}"#.into())],
            "unknown",
            1,
        ),
        case(
            "enormous body",
            vec![Fault::EnormousBody(6 * 1024 * 1024)],
            "unknown",
            1,
        ),
    ];
    let pgg = sims.pgg.clone();
    let running = &sims.pgg_running;
    let ran = run_cases(
        &api,
        "paygateglobal",
        "charges",
        cases,
        |index| pgg_charge(1000 + index as i64),
        || running.calls.count("/api/v1/pay"),
        &running.faults,
    )
    .await;
    // Late handlers of timed-out attempts finish before the books are checked.
    tokio::time::sleep(Duration::from_millis(TIMEOUT_MS * 2)).await;
    let report = reconcile(&api).await;
    figure("faults.paygateglobal.reconcile", &report);

    let entries = ledger(&api).await;
    check_nothing_lost(&entries, "paygateglobal", &ran);
    let transactions = pgg.transactions();
    for run in &ran {
        let at_provider = transactions
            .iter()
            .filter(|t| t.identifier == run.reference)
            .count();
        assert!(
            at_provider <= 1,
            "{}: {at_provider} transactions for one command",
            run.label
        );
        let state = entries[&run.reference]["state"]
            .as_str()
            .unwrap_or_default();
        let truth = if at_provider == 1 {
            "pending"
        } else {
            "failed"
        };
        assert_eq!(
            state, truth,
            "{}: the ledger says {state}, the provider says {truth}",
            run.label
        );
        if run.status == "failed" {
            assert_eq!(
                at_provider, 0,
                "{}: answered failed but the provider has it",
                run.label
            );
        }
    }
    figure(
        "faults.paygateglobal.books",
        format!(
            "commands={} ledger_entries={} provider_transactions={} duplicates=0 lost=0",
            ran.len(),
            entries.len(),
            transactions.len()
        ),
    );
}

async fn xsolla_charges_survive_every_provider_fault(backend: Backend) {
    let sims = Simulators::start().await;
    let api = ApiHost::start_on(
        backend,
        &["gatehouse-plugin-xsolla"],
        &sims.accounts_toml(TIMEOUT_MS),
    )
    .await;
    // A saved-account charge is not retry-safe: nothing is ever resent. The plugin asks the host
    // for a 120 s timeout (the document asks for 2 minutes), which overrides the account's
    // timeout_ms, so "slow" here is slower than the account timeout but within 120 s: the host
    // waits and the charge goes through.
    let cases = vec![
        case("no fault", vec![], "pending", 1),
        case(
            "slower than the account timeout",
            vec![slow()],
            "pending",
            1,
        ),
        refused(),
        case("reset mid-body", vec![Fault::ResetMidBody], "unknown", 1),
        case(
            "dropped connection",
            vec![Fault::DropConnection],
            "unknown",
            1,
        ),
        case("500", vec![status(500)], "unknown", 1),
        case("502", vec![status(502)], "unknown", 1),
        case("503", vec![status(503)], "unknown", 1),
        case("429", vec![status(429)], "failed", 1),
        case("truncated body", vec![Fault::TruncateBody], "unknown", 1),
        case(
            "wrong content type",
            vec![Fault::WrongContentType("text/html")],
            "pending",
            1,
        ),
        case(
            "wrong-shape JSON",
            vec![Fault::Body(r#"{"unexpected": [1, 2]}"#.into())],
            "unknown",
            1,
        ),
        case(
            "HTML page",
            vec![Fault::Body("<html>maintenance</html>".into())],
            "unknown",
            1,
        ),
        case(
            "enormous body",
            vec![Fault::EnormousBody(6 * 1024 * 1024)],
            "unknown",
            1,
        ),
    ];
    let card = sims.card;
    let running = &sims.xsolla_running;
    let ran = run_cases(
        &api,
        "xsolla",
        "charges",
        cases,
        |index| xsolla_charge(card, 500 + index as i64),
        || running.calls.count("/merchant/v2/projects"),
        &running.faults,
    )
    .await;
    let report = reconcile(&api).await;
    figure("faults.xsolla.charges.reconcile", &report);

    let entries = ledger(&api).await;
    check_nothing_lost(&entries, "xsolla", &ran);
    let transactions = sims.xsolla.transactions();
    for run in &ran {
        let at_provider = transactions
            .iter()
            .filter(|t| t.external_id.as_deref() == Some(run.reference.as_str()))
            .count();
        assert!(
            at_provider <= 1,
            "{}: {at_provider} transactions for one command",
            run.label
        );
        let state = entries[&run.reference]["state"]
            .as_str()
            .unwrap_or_default();
        if at_provider == 1 {
            assert!(
                matches!(state, "pending" | "succeeded"),
                "{}: the provider has it, the ledger says {state}",
                run.label
            );
        } else {
            assert_eq!(
                state, "failed",
                "{}: the provider never saw it, the ledger says {state}",
                run.label
            );
        }
    }
    figure(
        "faults.xsolla.charges.books",
        format!(
            "commands={} ledger_entries={} provider_transactions={} duplicates=0 lost=0",
            ran.len(),
            entries.len(),
            transactions.len()
        ),
    );
}

async fn xsolla_refunds_survive_every_provider_fault(backend: Backend) {
    let sims = Simulators::start().await;
    let api = ApiHost::start_on(
        backend,
        &["gatehouse-plugin-xsolla"],
        &sims.accounts_toml(TIMEOUT_MS),
    )
    .await;
    // Full refunds (Xsolla answers 200 with a text body); the last two cases are partial refunds
    // (answered 204 without a body, so a reset mid-body cannot be injected into them).
    let cases = vec![
        case("no fault", vec![], "pending", 1),
        case("slow past the timeout", vec![slow()], "unknown", 1),
        refused(),
        case("reset mid-body", vec![Fault::ResetMidBody], "unknown", 1),
        case(
            "dropped connection",
            vec![Fault::DropConnection],
            "unknown",
            1,
        ),
        case("500", vec![status(500)], "unknown", 1),
        case("502", vec![status(502)], "unknown", 1),
        case("503", vec![status(503)], "unknown", 1),
        case("429", vec![status(429)], "failed", 1),
        case("truncated body", vec![Fault::TruncateBody], "unknown", 1),
        case(
            "wrong content type",
            vec![Fault::WrongContentType("text/html")],
            "pending",
            1,
        ),
        case(
            "HTML page",
            vec![Fault::Body("<html>maintenance</html>".into())],
            "unknown",
            1,
        ),
        case(
            "enormous body",
            vec![Fault::EnormousBody(6 * 1024 * 1024)],
            "unknown",
            1,
        ),
        case("partial, no fault", vec![], "pending", 1),
        case("partial, 503", vec![status(503)], "unknown", 1),
    ];
    let partial_from = cases.len() - 2;
    // One settled charge to refund per case, charged without faults.
    let mut transactions = Vec::new();
    for index in 0..cases.len() {
        let (status, charge) = send(
            &api,
            "/v1/xsolla/main/charges",
            xsolla_charge(sims.card, 900),
            &format!("refund-charge-{index}"),
        )
        .await;
        assert_eq!(
            (status, charge["status"].as_str()),
            (200, Some("pending")),
            "{charge}"
        );
        let id = charge["provider_reference"]
            .as_str()
            .expect("transaction id")
            .to_string();
        sims.xsolla
            .set_status(id.parse().expect("numeric id"), "done");
        transactions.push(id);
    }
    let charges = transactions.len();
    let running = &sims.xsolla_running;
    let refund_calls = || {
        running
            .calls
            .all()
            .iter()
            .filter(|line| line.contains("/refund") || line.contains("/partial_refund"))
            .count()
    };
    let ids = transactions.clone();
    let ran = run_cases(
        &api,
        "xsolla",
        "refunds",
        cases,
        |index| xsolla_refund(&ids[index], (index >= partial_from).then_some(300)),
        refund_calls,
        &running.faults,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(TIMEOUT_MS * 2)).await;
    // Whether Xsolla refunded case `index`'s transaction, and how much partially.
    let refunded_at_xsolla = |index: usize| {
        let transaction = sims
            .xsolla
            .transaction(transactions[index].parse().expect("id"))
            .expect("transaction");
        (
            transaction.status == "refunded" || transaction.partially_refunded_minor_units > 0,
            transaction.partially_refunded_minor_units,
        )
    };
    // Before reconciliation the ledger holds exactly what each caller was told.
    let entries = ledger(&api).await;
    let refunds: Vec<&Value> = entries
        .values()
        .filter(|entry| entry["operation"] == "refund")
        .collect();
    assert_eq!(
        refunds.len(),
        ran.len(),
        "one ledger entry per refund command"
    );
    assert_eq!(entries.len(), charges + ran.len());
    for (index, run) in ran.iter().enumerate() {
        let state = entries[&run.reference]["state"]
            .as_str()
            .unwrap_or_default();
        assert_eq!(
            state, run.status,
            "{}: the ledger and the caller disagree",
            run.label
        );
        let (refunded, partially_refunded) = refunded_at_xsolla(index);
        if run.status == "failed" {
            assert!(
                !refunded,
                "{}: answered failed but Xsolla refunded",
                run.label
            );
        }
        if partially_refunded > 0 {
            assert_eq!(partially_refunded, 300, "{}: refunded twice", run.label);
        }
    }
    // Reconciliation asks Xsolla about each refund left unknown (`status` with `of: refund`,
    // which Xsolla's manifest declares): a full refund settles to what Xsolla did; a partial one
    // Xsolla's records cannot tell from none goes to an operator. No reconciled state
    // contradicts Xsolla.
    let report = reconcile(&api).await;
    figure("faults.xsolla.refunds.reconcile", &report);
    let reconciled = ledger(&api).await;
    assert_eq!(
        reconciled.len(),
        entries.len(),
        "reconciliation adds or loses no entry"
    );
    for (index, run) in ran.iter().enumerate() {
        let state = reconciled[&run.reference]["state"]
            .as_str()
            .unwrap_or_default();
        if run.status == "unknown" {
            let settled = ["succeeded", "failed"].contains(&state);
            assert!(
                settled || (index >= partial_from && state == "needs_operator"),
                "{}: an unknown refund must settle (or, partial, go to an operator): {state}",
                run.label
            );
        }
        let (refunded, _) = refunded_at_xsolla(index);
        assert!(
            if refunded {
                state != "failed"
            } else {
                state != "succeeded"
            },
            "{}: reconciled to {state}, Xsolla refunded: {refunded}",
            run.label
        );
    }
    figure(
        "faults.xsolla.refunds.books",
        format!(
            "refund_commands={} ledger_entries={} duplicates=0 lost=0",
            ran.len(),
            entries.len()
        ),
    );
}

async fn ccbill_payouts_survive_every_provider_fault(backend: Backend) {
    let sims = Simulators::start().await;
    let api = ApiHost::start_on(
        backend,
        &["gatehouse-plugin-ccbill"],
        &sims.accounts_toml(TIMEOUT_MS),
    )
    .await;
    // Payouts are not retry-safe (CCBill has no idempotency key): never resent; every answer that
    // is not a documented result code is unknown.
    let cases = vec![
        case("no fault", vec![], "succeeded", 1),
        case("slow past the timeout", vec![slow()], "unknown", 1),
        refused(),
        case("reset mid-body", vec![Fault::ResetMidBody], "unknown", 1),
        case(
            "dropped connection",
            vec![Fault::DropConnection],
            "unknown",
            1,
        ),
        case("500", vec![status(500)], "unknown", 1),
        case("502", vec![status(502)], "unknown", 1),
        case("503", vec![status(503)], "unknown", 1),
        case("429", vec![status(429)], "failed", 1),
        case("truncated body", vec![Fault::TruncateBody], "unknown", 1),
        case(
            "wrong content type",
            vec![Fault::WrongContentType("text/html")],
            "succeeded",
            1,
        ),
        case(
            "wrong-shape XML",
            vec![Fault::Body(
                "<?xml version='1.0'?><answer>1</answer>".into(),
            )],
            "unknown",
            1,
        ),
        case(
            "enormous body",
            vec![Fault::EnormousBody(6 * 1024 * 1024)],
            "unknown",
            1,
        ),
    ];
    let running = &sims.ccbill_running;
    let ran = run_cases(
        &api,
        "ccbill",
        "affiliate-payouts",
        cases,
        |index| ccbill_payout(&format!("7{index:05}"), 1495),
        || running.calls.count(gatehouse_sim_ccbill::ENDPOINT_PATH),
        &running.faults,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(TIMEOUT_MS * 2)).await;
    let report = reconcile(&api).await;
    figure("faults.ccbill.reconcile", &report);

    let entries = ledger(&api).await;
    check_nothing_lost(&entries, "ccbill", &ran);
    let payouts = sims.ccbill.payouts();
    for (index, run) in ran.iter().enumerate() {
        let affiliate = format!("7{index:05}");
        let paid = payouts
            .iter()
            .filter(|payout| payout.affiliate_id == affiliate)
            .count();
        assert!(
            paid <= 1,
            "{}: the affiliate was paid {paid} times",
            run.label
        );
        let state = entries[&run.reference]["state"]
            .as_str()
            .unwrap_or_default();
        match run.status.as_str() {
            // CCBill has no status operation: every unknown payout goes to an operator.
            "unknown" => assert_eq!(state, "needs_operator", "{}", run.label),
            "succeeded" => assert_eq!((state, paid), ("succeeded", 1), "{}", run.label),
            _ => assert_eq!((state, paid), ("failed", 0), "{}", run.label),
        }
    }
    let (status, flagged) = api
        .get("/v1/ledger?state=needs_operator&provider=ccbill")
        .await;
    assert_eq!(status, 200);
    let unknown = ran.iter().filter(|run| run.status == "unknown").count();
    assert_eq!(flagged["entries"].as_array().map(Vec::len), Some(unknown));
    figure(
        "faults.ccbill.books",
        format!(
            "commands={} ledger_entries={} payouts_at_provider={} needs_operator={unknown} duplicates=0 lost=0",
            ran.len(),
            entries.len(),
            payouts.len()
        ),
    );
}

async fn reads_are_retried_only_when_safe_and_never_reach_the_ledger(backend: Backend) {
    let sims = Simulators::start().await;
    let api = ApiHost::start_on(
        backend,
        &["gatehouse-plugin-paygateglobal"],
        &sims.accounts_toml(TIMEOUT_MS),
    )
    .await;
    let running = &sims.pgg_running;
    // Balance is retry-safe: transport failures and 502-504 are resent.
    let cases: Vec<(&str, Vec<Fault>, &str, u16, usize)> = vec![
        ("no fault", vec![], "main", 200, 1),
        ("slow past the timeout", vec![slow()], "main", 200, 2),
        ("connection refused", vec![], "down", 503, 0),
        ("reset mid-body", vec![Fault::ResetMidBody], "main", 200, 2),
        (
            "dropped connection",
            vec![Fault::DropConnection],
            "main",
            200,
            2,
        ),
        ("500", vec![status(500)], "main", 503, 1),
        ("502 then answered", vec![status(502)], "main", 200, 2),
        ("503", times(status(503), 3), "main", 503, 3),
        ("429", vec![status(429)], "main", 429, 1),
        ("truncated body", vec![Fault::TruncateBody], "main", 502, 1),
        (
            "wrong content type",
            vec![Fault::WrongContentType("text/html")],
            "main",
            200,
            1,
        ),
        (
            "wrong-shape JSON",
            vec![Fault::Body(r#"{"flooz": "x"}"#.into())],
            "main",
            502,
            1,
        ),
        (
            "enormous body",
            vec![Fault::EnormousBody(6 * 1024 * 1024)],
            "main",
            502,
            1,
        ),
    ];
    for (label, faults, account, expected, calls) in cases {
        running.faults.clear();
        for fault in faults {
            running.faults.push(fault);
        }
        let before = running.calls.count("/api/v1/check-balance");
        let (status, answer) = api
            .get(&format!("/v1/paygateglobal/{account}/balance"))
            .await;
        running.faults.clear();
        assert_eq!(status, expected, "{label}: {answer}");
        let made = running.calls.count("/api/v1/check-balance") - before;
        assert_eq!(made, calls, "{label}: requests at the provider");
        if status == 200 {
            assert_eq!(
                answer["details"]["balances"][0]["amount"]["minor_units"], 150_000,
                "{label}"
            );
        } else {
            assert!(answer["error"]["code"].is_string(), "{label}: {answer}");
        }
        figure(
            &format!("faults.read.balance.{}", label.replace(' ', "_")),
            format!("http={status} provider_requests={made}"),
        );
        api.post(&format!("/v1/paygateglobal/{account}/resume"), json!({}))
            .await;
    }
    assert!(
        ledger(&api).await.is_empty(),
        "reads are not recorded in the ledger"
    );
}

on_both_backends!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    paygateglobal_charges_survive_every_provider_fault,
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    xsolla_charges_survive_every_provider_fault,
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    xsolla_refunds_survive_every_provider_fault,
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    ccbill_payouts_survive_every_provider_fault,
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    reads_are_retried_only_when_safe_and_never_reach_the_ledger,
);
