//! Sustained concurrent traffic across all five providers through the HTTP API, for a bounded
//! time: no errors but the injected ones, every money-moving command in the ledger once, and
//! this process's memory (VmRSS) and open file descriptors before and after within stated bounds.

use crate::reliability;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use gatehouse_e2e::ApiHost;
use gatehouse_sim_common::Fault;
use reliability::{
    ALL_PLUGINS, Simulators, ccbill_payout, figure, open_fds, pgg_charge, vm_rss_kib, xsolla_charge,
};
use reqwest::Method;
use serde_json::{Value, json};

/// How long the measured phase lasts (CI: well under 20 s).
const DURATION: Duration = Duration::from_secs(6);
const CLIENTS: usize = 8;
/// Bounds on growth across the measured phase, after a warm-up: memory and descriptors.
const MAX_RSS_GROWTH_KIB: u64 = 64 * 1024;
const MAX_FD_GROWTH: usize = 32;

#[derive(Default)]
struct Tally {
    /// (provider/operation, outcome) -> count
    counts: BTreeMap<(String, String), usize>,
    money_references: Vec<String>,
    unexpected: Vec<String>,
    /// Answers carrying an injected fault.
    injected: usize,
}

async fn one(
    api: &ApiHost,
    sims: &Simulators,
    client: usize,
    index: usize,
    tally: &std::sync::Mutex<Tally>,
) {
    let key = format!("load-{client}-{index}");
    let (label, method, path, body, money): (&str, Method, String, Option<Value>, bool) =
        match (client + index) % 8 {
            0 => (
                "paygateglobal/charge",
                Method::POST,
                "/v1/paygateglobal/main/charges".into(),
                Some(pgg_charge(100 + index as i64)),
                true,
            ),
            1 => (
                "paygateglobal/balance",
                Method::GET,
                "/v1/paygateglobal/main/balance".into(),
                None,
                false,
            ),
            2 => (
                "xsolla/charge",
                Method::POST,
                "/v1/xsolla/main/charges".into(),
                Some(xsolla_charge(sims.card, 199)),
                true,
            ),
            3 => (
                "xsolla/saved_accounts",
                Method::GET,
                format!(
                    "/v1/xsolla/main/saved-accounts/{}",
                    reliability::XSOLLA_USER
                ),
                None,
                false,
            ),
            4 => (
                "kolmisoft/report",
                Method::POST,
                "/v1/kolmisoft/main/reports".into(),
                Some(json!({"report": "payments"})),
                false,
            ),
            5 => (
                "ccbill/payout",
                Method::POST,
                "/v1/ccbill/main/affiliate-payouts".into(),
                Some(ccbill_payout(&format!("{client}{index:06}"), 1495)),
                true,
            ),
            6 => (
                "paysitecash/report",
                Method::POST,
                "/v1/paysitecash/main/reports".into(),
                Some(json!({"report": "webmasters_quick"})),
                false,
            ),
            _ => (
                "paygateglobal/status",
                Method::POST,
                "/v1/paygateglobal/main/status".into(),
                Some(json!({"reference": "gh_unknown_to_the_provider"})),
                false,
            ),
        };
    let headers: Vec<(&str, &str)> = if money {
        vec![("Idempotency-Key", key.as_str())]
    } else {
        vec![]
    };
    let (status, _, answer) = api.request(method, &path, body, &headers).await;
    let outcome = match (status, answer["status"].as_str()) {
        (200, Some(outcome)) => outcome.to_string(),
        (404, _) if label == "paygateglobal/status" => "not_found".to_string(),
        _ => format!(
            "http_{status}_{}",
            answer["error"]["code"].as_str().unwrap_or("?")
        ),
    };
    let mut tally = tally.lock().expect("tally");
    if answer.to_string().contains("injected") {
        // One of the 500s injected into Xsolla: an unknown charge or a failed read.
        *tally
            .counts
            .entry((label.to_string(), format!("injected_{outcome}")))
            .or_default() += 1;
        tally.injected += 1;
        if money && status == 200 {
            tally
                .money_references
                .push(answer["reference"].as_str().unwrap_or_default().to_string());
        }
        return;
    }
    let expected = match label {
        "paygateglobal/charge" | "xsolla/charge" => outcome == "pending",
        "paygateglobal/status" => outcome == "not_found",
        _ => outcome == "succeeded",
    };
    if !expected {
        tally.unexpected.push(format!("{label}: {status} {answer}"));
    }
    if money && status == 200 {
        tally
            .money_references
            .push(answer["reference"].as_str().unwrap_or_default().to_string());
    }
    *tally
        .counts
        .entry((label.to_string(), outcome))
        .or_default() += 1;
}

async fn run_phase(
    api: &Arc<ApiHost>,
    sims: &Arc<Simulators>,
    duration: Duration,
    phase: &str,
    tally: &Arc<std::sync::Mutex<Tally>>,
) -> usize {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let (api, sims, stop, tally) = (api.clone(), sims.clone(), stop.clone(), tally.clone());
        let phase = phase.to_string();
        tasks.push(tokio::spawn(async move {
            let mut index = 0;
            // Bounded in count as well as in time.
            while !stop.load(Ordering::SeqCst) && index < 5_000 {
                one(
                    &api,
                    &sims,
                    client,
                    index + if phase == "warmup" { 0 } else { 100_000 },
                    &tally,
                )
                .await;
                index += 1;
            }
            index
        }));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::SeqCst);
    let mut sent = 0;
    for task in tasks {
        sent += task.await.expect("client");
    }
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sustained_traffic_across_all_five_providers() {
    // It bounds this process's memory and descriptors: alone in a process of its own.
    if !gatehouse_e2e::in_own_process("load::sustained_traffic_across_all_five_providers") {
        return;
    }
    let sims = Arc::new(Simulators::start().await);
    let api = Arc::new(ApiHost::start(&ALL_PLUGINS, &sims.accounts_toml(3000)).await);
    let tally = Arc::new(std::sync::Mutex::new(Tally::default()));

    let warm = run_phase(&api, &sims, Duration::from_secs(2), "warmup", &tally).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (rss_before, fds_before) = (vm_rss_kib(), open_fds());

    // Injected during the measured phase: five 500 answers to Xsolla charges (each ends unknown,
    // never resent), counted apart from the rest.
    let injector = {
        let sims = sims.clone();
        tokio::spawn(async move {
            for _ in 0..5 {
                tokio::time::sleep(DURATION / 6).await;
                sims.xsolla_running
                    .faults
                    .push(Fault::Status(500, "injected".into()));
            }
        })
    };
    let started = Instant::now();
    let sent = run_phase(&api, &sims, DURATION, "measured", &tally).await;
    let elapsed = started.elapsed();
    injector.await.expect("injector");
    sims.xsolla_running.faults.clear();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (rss_after, fds_after) = (vm_rss_kib(), open_fds());

    let tally = std::mem::take(&mut *tally.lock().expect("tally"));
    assert!(
        tally.unexpected.is_empty(),
        "errors other than the injected ones: {:#?}",
        &tally.unexpected[..tally.unexpected.len().min(10)]
    );
    let injected = tally.injected;
    assert!(
        injected <= 5,
        "{injected} answers carry the 5 injected faults"
    );
    // Every money-moving command is in the ledger, once.
    // (More than the API's page of 1000: read the ledger directly.)
    let entries: BTreeMap<String, gatehouse_ledger::Entry> = api
        .ledger
        .list(&gatehouse_ledger::ListFilter {
            limit: 1_000_000,
            ..Default::default()
        })
        .expect("ledger")
        .into_iter()
        .map(|entry| (entry.id.clone(), entry))
        .collect();
    let mut references = tally.money_references.clone();
    references.sort();
    references.dedup();
    assert_eq!(
        references.len(),
        tally.money_references.len(),
        "two commands answered with one entry"
    );
    assert_eq!(
        entries.len(),
        references.len(),
        "one ledger entry per money-moving command"
    );
    assert!(
        references
            .iter()
            .all(|reference| entries.contains_key(reference))
    );
    let transactions = sims.pgg.transactions().len()
        + sims.xsolla.transactions().len()
        + sims.ccbill.payouts().len();
    assert!(
        transactions <= references.len(),
        "the providers saw more money movements than the ledger holds"
    );

    let rss_growth = rss_after.saturating_sub(rss_before);
    let fd_growth = fds_after.saturating_sub(fds_before);
    figure(
        "load.traffic",
        format!(
            "clients={CLIENTS} seconds={:.1} requests={sent} (warm-up {warm}) rate_per_s={:.0} injected=5 answers_carrying_them={injected} other_errors=0 ledger_entries={}",
            elapsed.as_secs_f64(),
            sent as f64 / elapsed.as_secs_f64(),
            entries.len()
        ),
    );
    figure(
        "load.resources",
        format!(
            "rss_before_kib={rss_before} rss_after_kib={rss_after} growth_kib={rss_growth} fds_before={fds_before} fds_after={fds_after}"
        ),
    );
    for ((label, outcome), count) in &tally.counts {
        figure("load.outcomes", format!("{label} {outcome} {count}"));
    }
    assert!(
        rss_growth <= MAX_RSS_GROWTH_KIB,
        "memory grew by {rss_growth} KiB (bound {MAX_RSS_GROWTH_KIB})"
    );
    assert!(
        fd_growth <= MAX_FD_GROWTH,
        "descriptors grew by {fd_growth} (bound {MAX_FD_GROWTH})"
    );
}
