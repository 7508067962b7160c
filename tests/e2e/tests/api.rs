//! The HTTP API over real HTTP: routes, authentication, idempotency, the ledger, webhooks,
//! reconciliation, hostile input, and the OpenAPI document.

use std::sync::Arc;

use gatehouse_e2e::{API_KEY, ApiHost, Backend};
use gatehouse_sim_common::{Fault, RunningSimulator};
use gatehouse_sim_paygateglobal::{PAID, PayGateSimulator};
use reqwest::Method;
use serde_json::{Value, json};

const TOKEN: &str = "api-test-paygate-token-42";

async fn setup(backend: Backend) -> (ApiHost, PayGateSimulator, RunningSimulator) {
    let (simulator, running) = PayGateSimulator::start(TOKEN).await.expect("simulator");
    let api = ApiHost::start_on(
        backend,
        &["gatehouse-plugin-paygateglobal"],
        &format!(
            "[providers.paygateglobal.accounts.main]\nbase_url = \"{}\"\ntimeout_ms = 1500\nsecrets = {{ auth_token = \"{TOKEN}\" }}\n",
            running.base_url()
        ),
    )
    .await;
    (api, simulator, running)
}

fn charge_body() -> Value {
    json!({"amount": {"minor_units": 2500, "currency": "XOF"}, "customer": {"phone": "90123456"},
           "payment_method": "FLOOZ", "description": "order 1"})
}

const CHARGES: &str = "/v1/paygateglobal/main/charges";

async fn every_non_webhook_route_needs_an_api_key(backend: Backend) {
    let (api, _simulator, _running) = setup(backend).await;
    let client = reqwest::Client::new();
    let health = client
        .get(format!("{}/healthz", api.base_url))
        .send()
        .await
        .expect("health");
    assert_eq!(health.status(), 200);
    for (method, path) in [
        (Method::GET, "/v1/plugins"),
        (Method::POST, CHARGES),
        (Method::GET, "/metrics"),
        (Method::GET, "/v1/ledger"),
    ] {
        let none = client
            .request(method.clone(), format!("{}{path}", api.base_url))
            .send()
            .await
            .expect("send");
        assert_eq!(none.status(), 401, "{path} without a key");
        let wrong = client
            .request(method, format!("{}{path}", api.base_url))
            .bearer_auth("wrong-key")
            .send()
            .await
            .expect("send");
        assert_eq!(wrong.status(), 401, "{path} with a wrong key");
        let body: Value = wrong.json().await.expect("json error");
        assert_eq!(body["error"]["code"], "unauthorized");
    }
}

async fn charge_status_balance_and_the_ledger(backend: Backend) {
    let (api, simulator, _running) = setup(backend).await;
    let (status, charge) = api.post(CHARGES, charge_body()).await;
    assert_eq!(status, 200, "{charge}");
    assert_eq!(charge["status"], "pending");
    let reference = charge["reference"].as_str().expect("reference").to_string();
    assert!(reference.starts_with("gh_"));

    let (status, entry) = api.get(&format!("/v1/ledger/{reference}")).await;
    assert_eq!(status, 200, "{entry}");
    assert_eq!(entry["entry"]["state"], "pending");
    assert_eq!(entry["entry"]["amount"]["minor_units"], 2500);
    assert!(
        entry["history"].as_array().expect("history").len() >= 2,
        "{entry}"
    );

    simulator.settle(&reference, PAID).await;
    let (status, by_reference) = api
        .post(
            "/v1/paygateglobal/main/status",
            json!({"reference": reference}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(by_reference["status"], "succeeded");

    let (status, balance) = api.get("/v1/paygateglobal/main/balance").await;
    assert_eq!(status, 200);
    assert_eq!(
        balance["details"]["balances"][0]["amount"]["minor_units"],
        150_000 + 2500
    );

    let (status, listed) = api.get("/v1/ledger?provider=paygateglobal&limit=10").await;
    assert_eq!(status, 200);
    assert_eq!(listed["entries"].as_array().expect("entries").len(), 1);
    let (status, _) = api.get("/v1/ledger?state=bogus").await;
    assert_eq!(status, 400);
    let (status, missing) = api.get("/v1/ledger/gh_nope").await;
    assert_eq!(
        (status, missing["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
}

async fn a_retry_with_the_same_key_never_reaches_the_provider_twice(backend: Backend) {
    let (api, _simulator, running) = setup(backend).await;
    let key = [("Idempotency-Key", "order-1-attempt")];
    let (status, headers, first) = api
        .request(Method::POST, CHARGES, Some(charge_body()), &key)
        .await;
    assert_eq!(status, 200);
    assert!(headers.get("idempotent-replayed").is_none());
    let (status, headers, second) = api
        .request(Method::POST, CHARGES, Some(charge_body()), &key)
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        headers.get("idempotent-replayed").map(|v| v.as_bytes()),
        Some(&b"true"[..])
    );
    assert_eq!(first["reference"], second["reference"]);
    assert_eq!(first["provider_reference"], second["provider_reference"]);
    assert_eq!(running.calls.count("/api/v1/pay"), 1);

    // The same key with another body is refused, and nothing is sent.
    let mut other = charge_body();
    other["amount"]["minor_units"] = json!(9999);
    let (status, _, refused) = api.request(Method::POST, CHARGES, Some(other), &key).await;
    assert_eq!(status, 422);
    assert_eq!(refused["error"]["code"], "idempotency_key_reused");
    assert_eq!(running.calls.count("/api/v1/pay"), 1);
}

async fn twenty_concurrent_requests_with_one_key_make_one_provider_call(backend: Backend) {
    let (api, simulator, running) = setup(backend).await;
    // Slow the provider down so all twenty arrive while the first is in flight.
    running
        .faults
        .push(Fault::DelayAfter(std::time::Duration::from_millis(300)));
    let api = Arc::new(api);
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let api = api.clone();
        tasks.push(tokio::spawn(async move {
            api.request(
                Method::POST,
                CHARGES,
                Some(charge_body()),
                &[("Idempotency-Key", "same-key-20")],
            )
            .await
        }));
    }
    let mut references = Vec::new();
    for task in tasks {
        let (status, _, body) = task.await.expect("task");
        assert_eq!(status, 200, "{body}");
        references.push(body["reference"].as_str().expect("reference").to_string());
    }
    assert_eq!(
        running.calls.count("/api/v1/pay"),
        1,
        "exactly one provider call"
    );
    assert_eq!(simulator.transactions().len(), 1);
    references.dedup();
    assert_eq!(references.len(), 1, "every answer names the same entry");
}

/// The idempotency race: 50 clients send one key at once, 20 rounds, each round a new key. The
/// first attempt's entry and key are claimed in this process before the ledger sees them, so no
/// client is told "interrupted" while the first attempt runs: every answer equals the first
/// attempt's outcome, and the provider sees one call per key.
async fn fifty_clients_with_one_key_all_get_the_first_attempts_answer(backend: Backend) {
    const CLIENTS: usize = 50;
    const ROUNDS: usize = 20;
    let (api, simulator, running) = setup(backend).await;
    let api = Arc::new(api);
    for round in 0..ROUNDS {
        let key = format!("race-{round}");
        let barrier = Arc::new(tokio::sync::Barrier::new(CLIENTS));
        let tasks: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let (api, key, barrier) = (api.clone(), key.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    api.request(
                        Method::POST,
                        CHARGES,
                        Some(charge_body()),
                        &[("Idempotency-Key", &key)],
                    )
                    .await
                })
            })
            .collect();
        let mut answers = Vec::new();
        for task in tasks {
            let (status, _, body) = task.await.expect("task");
            assert_eq!(status, 200, "round {round}: {body}");
            answers.push(body);
        }
        let first: Vec<&Value> = answers
            .iter()
            .filter(|answer| answer["replayed"] == false)
            .collect();
        assert_eq!(first.len(), 1, "round {round}: one first attempt");
        let first = first[0];
        for answer in &answers {
            for field in ["reference", "status", "provider_reference", "amount"] {
                assert_eq!(
                    answer[field], first[field],
                    "round {round}: `{field}` differs from the first attempt's: {answer}"
                );
            }
            assert!(
                !answer.to_string().contains("interrupted"),
                "round {round}: {answer}"
            );
        }
        assert_eq!(
            running.calls.count("/api/v1/pay"),
            round + 1,
            "round {round}: one provider call per key"
        );
    }
    assert_eq!(simulator.transactions().len(), ROUNDS);
}

async fn hostile_requests_are_refused_with_clear_errors(backend: Backend) {
    let (api, _simulator, running) = setup(backend).await;
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        (
            CHARGES,
            json!({"amount": {"minor_units": "lots", "currency": "XOF"}}),
            422,
            "invalid_request",
        ),
        (
            CHARGES,
            json!({"customer": {"phone": "90123456"}}),
            422,
            "invalid_request",
        ),
        (
            CHARGES,
            json!({"amount": {"minor_units": -5, "currency": "XOF"}}),
            422,
            "invalid_request",
        ),
        (
            CHARGES,
            json!({"amount": {"minor_units": 5, "currency": "ZZZ"}}),
            422,
            "invalid_request",
        ),
        (
            CHARGES,
            json!({"amount": {"minor_units": 9223372036854775807i64, "currency": "XOF"}, "customer": {"phone": "90123456"}, "payment_method": "FLOOZ"}),
            200,
            "",
        ),
        (
            CHARGES,
            json!({"amount": {"minor_units": 5, "currency": "XOF"}, "unexpected": true}),
            422,
            "invalid_request",
        ),
        (
            CHARGES,
            json!({"operation": "refund"}),
            422,
            "invalid_request",
        ),
        (CHARGES, json!([1, 2, 3]), 400, "bad_request"),
        (
            "/v1/nosuch/main/charges",
            charge_body(),
            404,
            "unknown_provider",
        ),
        (
            "/v1/paygateglobal/nobody/charges",
            charge_body(),
            404,
            "unknown_account",
        ),
        (
            "/v1/paygateglobal/main/refunds",
            json!({"transaction_id": "1"}),
            422,
            "not_supported",
        ),
        (
            "/v1/paygateglobal/main/reports",
            json!({"report": "x"}),
            422,
            "not_supported",
        ),
    ];
    for (path, body, expected_status, expected_code) in cases {
        let (status, answer) = api.post(path, body.clone()).await;
        assert_eq!(status, expected_status, "{path} {body} -> {answer}");
        if !expected_code.is_empty() {
            assert_eq!(answer["error"]["code"], expected_code, "{body} -> {answer}");
            assert!(!answer["error"]["message"].as_str().unwrap_or("").is_empty());
        }
    }
    // Not JSON at all, and an oversized body.
    let response = api
        .client
        .post(format!("{}{CHARGES}", api.base_url))
        .bearer_auth(API_KEY)
        .body("{not json")
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 400);
    let response = api
        .client
        .post(format!("{}{CHARGES}", api.base_url))
        .bearer_auth(API_KEY)
        .body(vec![b' '; 2 * 1024 * 1024])
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 413);
    // Only the one valid (huge but whole-XOF) charge reached the provider.
    assert!(running.calls.count("/api/v1/pay") <= 1);
}

async fn forged_and_replayed_callbacks_do_not_change_the_ledger(backend: Backend) {
    let (api, simulator, _running) = setup(backend).await;
    let (_, charge) = api.post(CHARGES, charge_body()).await;
    let reference = charge["reference"].as_str().expect("reference").to_string();
    let webhook = format!("{}/webhooks/paygateglobal/main", api.base_url);

    // Forged: the payment is still pending at the provider.
    let transaction = simulator.transaction(&reference).expect("transaction");
    let mut claimed = gatehouse_sim_paygateglobal::callback_body(&transaction);
    let response = api
        .client
        .post(&webhook)
        .json(&claimed)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    let (_, entry) = api.get(&format!("/v1/ledger/{reference}")).await;
    assert_eq!(
        entry["entry"]["state"], "pending",
        "a callback the provider does not confirm changes nothing"
    );

    // Genuine: the provider confirms it; the entry settles.
    simulator.settle(&reference, PAID).await;
    let response = api
        .client
        .post(&webhook)
        .json(&claimed)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    let (_, entry) = api.get(&format!("/v1/ledger/{reference}")).await;
    assert_eq!(entry["entry"]["state"], "succeeded", "{entry}");
    // Two verified facts were stored: the payment pending (premature callback), then paid.
    let (_, events) = api.get("/v1/events").await;
    let stored = events["events"].as_array().expect("events").len();
    assert_eq!(stored, 2, "{events}");

    // Replayed: accepted, not stored twice, nothing changes.
    let response = api
        .client
        .post(&webhook)
        .json(&claimed)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    let (_, events) = api.get("/v1/events").await;
    assert_eq!(events["events"].as_array().expect("events").len(), stored);

    // Forged: an identifier the provider never saw. Nothing is stored.
    let forged = json!({"tx_reference": "999999", "identifier": "gh_forged", "amount": 1000000,
                        "payment_reference": "X", "datetime": "2026-01-01 00:00:00",
                        "payment_method": "FLOOZ", "phone_number": "22890000000"});
    api.client
        .post(&webhook)
        .json(&forged)
        .send()
        .await
        .expect("send");
    let (_, events) = api.get("/v1/events").await;
    assert_eq!(events["events"].as_array().expect("events").len(), stored);

    // Garbage: refused, nothing stored.
    claimed["tx_reference"] = json!([1]);
    let response = api
        .client
        .post(&webhook)
        .body("not json")
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 400);
}

async fn unknown_outcomes_are_reconciled_with_the_provider(backend: Backend) {
    let (api, simulator, running) = setup(backend).await;
    // Every attempt answers 503 before the provider handles it: the charge is unknown...
    for _ in 0..3 {
        running.faults.push(Fault::Status(503, "down".into()));
    }
    let (status, lost) = api.post(CHARGES, charge_body()).await;
    assert_eq!(status, 200);
    assert_eq!(lost["status"], "unknown");
    let lost_reference = lost["reference"].as_str().expect("reference").to_string();
    // ...and one that went through but is still pending.
    let (_, pending) = api.post(CHARGES, charge_body()).await;
    let pending_reference = pending["reference"]
        .as_str()
        .expect("reference")
        .to_string();
    simulator.settle(&pending_reference, PAID).await;

    let (status, report) = api.post("/v1/reconcile", json!({})).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["resolved"], 2, "{report}");
    let (_, entry) = api.get(&format!("/v1/ledger/{lost_reference}")).await;
    assert_eq!(
        entry["entry"]["state"], "failed",
        "the provider never saw it: {entry}"
    );
    let (_, entry) = api.get(&format!("/v1/ledger/{pending_reference}")).await;
    assert_eq!(entry["entry"]["state"], "succeeded", "{entry}");
}

async fn plugins_metrics_and_the_openapi_document(backend: Backend) {
    let (api, _simulator, _running) = setup(backend).await;
    let (status, plugins) = api.get("/v1/plugins").await;
    assert_eq!(status, 200);
    assert_eq!(plugins["plugins"][0]["provider"], "paygateglobal");
    api.get("/v1/paygateglobal/main/balance").await;
    let (status, metrics) = api.get("/metrics").await;
    assert_eq!(status, 200);
    let metrics = metrics.as_str().expect("text");
    assert!(
        metrics
            .contains("gatehouse_requests_total{provider=\"paygateglobal\",account=\"main\",operation=\"balance\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("gatehouse_provider_latency_seconds_bucket"),
        "{metrics}"
    );
    assert!(!metrics.contains(TOKEN));
    let served = reqwest::get(format!("{}/openapi.json", api.base_url))
        .await
        .expect("openapi")
        .text()
        .await
        .expect("text");
    assert_eq!(served, gatehouse_service::api::OPENAPI_JSON);
}

#[test]
fn the_openapi_document_and_the_router_do_not_drift() {
    let document: Value =
        serde_json::from_str(gatehouse_service::api::OPENAPI_JSON).expect("valid JSON");
    let paths = document["paths"].as_object().expect("paths");
    let table = gatehouse_service::api::route_table();
    let mut documented = std::collections::BTreeSet::new();
    for (path, methods) in paths {
        for method in methods.as_object().expect("methods").keys() {
            documented.insert((path.clone(), method.clone()));
        }
    }
    let mut served = std::collections::BTreeSet::new();
    for (path, methods) in table {
        for method in methods {
            served.insert((path.clone(), method));
        }
    }
    let only_documented: Vec<_> = documented.difference(&served).collect();
    let only_served: Vec<_> = served.difference(&documented).collect();
    assert!(
        only_documented.is_empty() && only_served.is_empty(),
        "documented but not served: {only_documented:?}; served but not documented: {only_served:?}"
    );
}

/// The document's currency list is exactly what the host accepts: every three-letter code is
/// tried against `Currency::from_code`.
#[test]
fn the_openapi_currency_list_is_what_the_host_accepts() {
    let document: Value =
        serde_json::from_str(gatehouse_service::api::OPENAPI_JSON).expect("valid JSON");
    let documented: std::collections::BTreeSet<String> =
        document["components"]["schemas"]["Currency"]["enum"]
            .as_array()
            .expect("Currency enum")
            .iter()
            .map(|code| code.as_str().expect("a code").to_string())
            .collect();
    let mut accepted = std::collections::BTreeSet::new();
    for a in b'A'..=b'Z' {
        for b in b'A'..=b'Z' {
            for c in b'A'..=b'Z' {
                let code = String::from_utf8(vec![a, b, c]).expect("ASCII");
                if gatehouse_plugin_api::Currency::from_code(&code).is_ok() {
                    accepted.insert(code);
                }
            }
        }
    }
    assert_eq!(
        documented
            .symmetric_difference(&accepted)
            .collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "documented vs accepted currencies differ"
    );
}

#[tokio::test]
async fn the_embedding_example_compiles_and_runs() {
    let (simulator, running) = PayGateSimulator::start(TOKEN).await.expect("simulator");
    drop(simulator);
    let dir = tempfile::tempdir().expect("folder");
    gatehouse_e2e::install(
        &gatehouse_e2e::library("gatehouse-plugin-paygateglobal"),
        dir.path(),
        &gatehouse_e2e::plugin_file_name("paygateglobal"),
    );
    let ledger_file = dir.path().join("platform-ledger.sqlite");
    let output = tokio::process::Command::new(env!("CARGO"))
        .args([
            "run",
            "--quiet",
            "-p",
            "gatehouse-service",
            "--example",
            "embed",
            "--",
        ])
        .arg(dir.path())
        .arg(running.base_url())
        .arg(TOKEN)
        .arg(&ledger_file)
        .output()
        .await
        .expect("cargo run");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("\"status\":\"succeeded\""), "{stdout}");
    assert!(stdout.contains("mounted API health: ok"), "{stdout}");
    assert!(
        stdout.contains("\"provider\":\"paygateglobal\""),
        "{stdout}"
    );
    // The example's charge went through the one door: it is in the ledger it named, and its
    // retry was answered from there (one transaction at the provider).
    let charge_line = stdout
        .lines()
        .find_map(|line| line.strip_prefix("charge: "))
        .expect("the example prints its charge");
    let charge: Value = serde_json::from_str(charge_line).expect("charge JSON");
    let reference = charge["reference"].as_str().expect("a reference");
    let retry_line = stdout
        .lines()
        .find_map(|line| line.strip_prefix("retry: "))
        .expect("the example prints its retry");
    let retry: Value = serde_json::from_str(retry_line).expect("retry JSON");
    assert_eq!(retry["replayed"], true, "{retry}");
    assert_eq!(retry["reference"], reference);
    let ledger = gatehouse_ledger::SqliteLedger::open(&ledger_file).expect("the example's ledger");
    let entry = gatehouse_ledger::Ledger::get(&ledger, reference)
        .expect("read")
        .expect("the example's charge is in its ledger");
    assert_eq!(entry.idempotency_key.as_deref(), Some("order-1001"));
    assert_eq!(entry.state, gatehouse_ledger::EntryState::Pending);
    assert_eq!(running.calls.count("/api/v1/pay"), 1, "one provider call");
}

/// Every error answer of the API is the documented JSON envelope with a stable code, axum's own
/// rejections included: a bad query, a bad path segment, a body over the limit or not JSON, an
/// unknown route, a method the route does not take, two idempotency keys.
async fn every_error_answer_is_the_json_envelope(backend: Backend) {
    let (api, _simulator, running) = setup(backend).await;
    let raw = |method: reqwest::Method, path: &str| {
        api.client
            .request(method, format!("{}{path}", api.base_url))
            .bearer_auth(API_KEY)
    };
    let cases: Vec<(&str, reqwest::RequestBuilder, u16, &str)> = vec![
        (
            "bad query",
            raw(reqwest::Method::GET, "/v1/ledger?limit=abc"),
            400,
            "bad_request",
        ),
        (
            "bad state",
            raw(reqwest::Method::GET, "/v1/ledger?state=lost"),
            400,
            "bad_request",
        ),
        (
            "bad events query",
            raw(reqwest::Method::GET, "/v1/events?after=x"),
            400,
            "bad_request",
        ),
        (
            "no such route",
            raw(reqwest::Method::GET, "/v1/nothing/here"),
            404,
            "not_found",
        ),
        (
            "no such entry",
            raw(reqwest::Method::GET, "/v1/ledger/gh_nothing"),
            404,
            "not_found",
        ),
        (
            "method",
            raw(reqwest::Method::DELETE, "/v1/plugins"),
            405,
            "method_not_allowed",
        ),
        (
            "method on a command route",
            raw(reqwest::Method::GET, CHARGES),
            405,
            "method_not_allowed",
        ),
        (
            "bad path bytes",
            raw(reqwest::Method::GET, "/v1/%FF%FE/main/balance"),
            400,
            "bad_request",
        ),
        (
            "not JSON",
            raw(reqwest::Method::POST, CHARGES).body("{not json"),
            400,
            "bad_request",
        ),
        (
            "too large",
            raw(reqwest::Method::POST, CHARGES).body(vec![b' '; 2 * 1024 * 1024]),
            413,
            "payload_too_large",
        ),
        (
            "over the command limit",
            raw(reqwest::Method::POST, CHARGES).body(vec![b' '; 300 * 1024]),
            413,
            "payload_too_large",
        ),
        (
            "two idempotency keys",
            raw(reqwest::Method::POST, CHARGES)
                .header("idempotency-key", "dup-a")
                .header("idempotency-key", "dup-b")
                .json(&charge_body()),
            400,
            "bad_request",
        ),
        (
            "a key with a space",
            raw(reqwest::Method::POST, CHARGES)
                .header("idempotency-key", "two words")
                .json(&charge_body()),
            400,
            "bad_request",
        ),
        (
            "no key",
            api.client.get(format!("{}/v1/plugins", api.base_url)),
            401,
            "unauthorized",
        ),
        (
            "a negative amount",
            raw(reqwest::Method::POST, CHARGES).json(&json!({
                "amount": {"minor_units": -5, "currency": "XOF"},
                "customer": {"phone": "90123456"}, "payment_method": "FLOOZ"})),
            422,
            "invalid_request",
        ),
    ];
    for (label, request, expected_status, expected_code) in cases {
        let response = request.send().await.expect("send");
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
            .to_string();
        let text = response.text().await.expect("body");
        assert_eq!(status, expected_status, "{label}: {text}");
        assert!(
            content_type.starts_with("application/json"),
            "{label}: content type {content_type:?}, body {text}"
        );
        let body: Value = serde_json::from_str(&text)
            .unwrap_or_else(|error| panic!("{label}: not JSON ({error}): {text}"));
        assert_eq!(body["error"]["code"], expected_code, "{label}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|message| !message.is_empty()),
            "{label}: {body}"
        );
    }
    assert_eq!(
        running.calls.count("/api/v1/pay"),
        0,
        "no refused request reached the provider"
    );
    let (_, listed) = api.get("/v1/ledger").await;
    assert_eq!(
        listed["entries"].as_array().map(Vec::len),
        Some(0),
        "no refused request was recorded: {listed}"
    );
}

async fn verified_events_are_forwarded_with_retries(backend: Backend) {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    // The platform's receiver: refuses the first two deliveries, then accepts.
    let attempts = Arc::new(AtomicUsize::new(0));
    let received: Arc<Mutex<Vec<Value>>> = Arc::new(Mutex::new(Vec::new()));
    let receiver = axum::Router::new().route(
        "/events",
        axum::routing::post({
            let (attempts, received) = (attempts.clone(), received.clone());
            move |headers: axum::http::HeaderMap, axum::Json(body): axum::Json<Value>| {
                let (attempts, received) = (attempts.clone(), received.clone());
                async move {
                    assert_eq!(
                        headers.get("authorization").and_then(|v| v.to_str().ok()),
                        Some("Bearer forward-key-77")
                    );
                    if attempts.fetch_add(1, Ordering::SeqCst) < 2 {
                        return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                    }
                    received.lock().expect("lock").push(body);
                    axum::http::StatusCode::NO_CONTENT
                }
            }
        }),
    );
    let platform = gatehouse_sim_common::serve(receiver)
        .await
        .expect("receiver");

    let (simulator, running) = PayGateSimulator::start(TOKEN).await.expect("simulator");
    let api = ApiHost::start_on(
        backend,
        &["gatehouse-plugin-paygateglobal"],
        &format!(
            "[webhooks]\nforward_url = \"{}/events\"\nforward_key = \"forward-key-77\"\n\n[providers.paygateglobal.accounts.main]\nbase_url = \"{}\"\nsecrets = {{ auth_token = \"{TOKEN}\" }}\n",
            platform.base_url(),
            running.base_url()
        ),
    )
    .await;
    let (_, charge) = api.post(CHARGES, charge_body()).await;
    let reference = charge["reference"].as_str().expect("reference").to_string();
    simulator.settle(&reference, PAID).await;
    let transaction = simulator.transaction(&reference).expect("transaction");
    let callback = gatehouse_sim_paygateglobal::callback_body(&transaction);
    let webhook = format!("{}/webhooks/paygateglobal/main", api.base_url);
    api.client
        .post(&webhook)
        .json(&callback)
        .send()
        .await
        .expect("callback");
    api.client
        .post(&webhook)
        .json(&callback)
        .send()
        .await
        .expect("replayed callback");

    let mut delivered = Vec::new();
    for _ in 0..100 {
        delivered = received.lock().expect("lock").clone();
        if !delivered.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let delivered_after = received.lock().expect("lock").clone();
    assert_eq!(
        delivered_after.len(),
        1,
        "one event, delivered once: {delivered_after:?}"
    );
    assert_eq!(delivered[0]["event"]["reference"], reference.as_str());
    assert_eq!(delivered[0]["event"]["status"], "succeeded");
    assert!(
        attempts.load(Ordering::SeqCst) >= 3,
        "delivered after two refusals"
    );
}

async fn a_refusal_before_sending_does_not_bind_the_idempotency_key(backend: Backend) {
    let (simulator, running) = PayGateSimulator::start(TOKEN).await.expect("simulator");
    drop(simulator);
    let api = ApiHost::start_on(
        backend,
        &["gatehouse-plugin-paygateglobal"],
        &format!(
            "[providers.paygateglobal.accounts.main]\nbase_url = \"{}\"\nsecrets = {{ auth_token = \"wrong-token\" }}\n",
            running.base_url()
        ),
    )
    .await;
    let key = [("Idempotency-Key", "order-pause-1")];
    // The first charge meets a refused token: failed, and the account is paused.
    let (status, _, first) = api
        .request(
            Method::POST,
            CHARGES,
            Some(charge_body()),
            &[("Idempotency-Key", "order-pause-0")],
        )
        .await;
    assert_eq!(
        (status, first["status"].as_str()),
        (200, Some("failed")),
        "{first}"
    );
    // While paused, a new key is refused before anything is recorded...
    let (status, _, paused) = api
        .request(Method::POST, CHARGES, Some(charge_body()), &key)
        .await;
    assert_eq!(
        (status, paused["error"]["code"].as_str()),
        (429, Some("account_paused")),
        "{paused}"
    );
    // ...while a retry of the recorded charge is answered from the ledger, pause or not...
    let (status, _, replayed) = api
        .request(
            Method::POST,
            CHARGES,
            Some(charge_body()),
            &[("Idempotency-Key", "order-pause-0")],
        )
        .await;
    assert_eq!(
        (status, replayed["status"].as_str(), &replayed["replayed"]),
        (200, Some("failed"), &json!(true)),
        "{replayed}"
    );
    let (_, ledger) = api.get("/v1/ledger").await;
    assert_eq!(
        ledger["entries"].as_array().expect("entries").len(),
        1,
        "only the first charge: {ledger}"
    );
    // ...so once the account is resumed, the same key is free to run.
    let (status, _) = api.post("/v1/paygateglobal/main/resume", json!({})).await;
    assert_eq!(status, 200);
    let (status, _, retried) = api
        .request(Method::POST, CHARGES, Some(charge_body()), &key)
        .await;
    assert_eq!(status, 200, "{retried}");
    assert_eq!(retried["replayed"], false);
    assert_eq!(running.calls.count("/api/v1/pay"), 2);
}

/// A charge refused `rate_limited` leaves its key free: the caller's retry with the same key,
/// once the limit allows, runs and reaches the provider (it is not the 429 replayed for ever).
async fn a_rate_limited_charge_retried_with_its_key_runs_once_the_limit_allows(backend: Backend) {
    let (simulator, running) = PayGateSimulator::start(TOKEN).await.expect("simulator");
    let account = |per_minute: u32| {
        format!(
            "[providers.paygateglobal.accounts.main]\nbase_url = \"{}\"\ntimeout_ms = 1500\nrate_limit_per_minute = {per_minute}\nsecrets = {{ auth_token = \"{TOKEN}\" }}\n",
            running.base_url()
        )
    };
    let api = ApiHost::start_on(backend, &["gatehouse-plugin-paygateglobal"], &account(1)).await;
    let (status, _, first) = api
        .request(
            Method::POST,
            CHARGES,
            Some(charge_body()),
            &[("Idempotency-Key", "order-limit-0")],
        )
        .await;
    assert_eq!(status, 200, "{first}");
    let key = [("Idempotency-Key", "order-limit-1")];
    let (status, _, limited) = api
        .request(Method::POST, CHARGES, Some(charge_body()), &key)
        .await;
    assert_eq!(
        (status, limited["error"]["code"].as_str()),
        (429, Some("rate_limited")),
        "{limited}"
    );
    // The operator raises the limit (a new policy is a fresh limiter); the caller retries.
    let config_path = api.host.config_path();
    let text = std::fs::read_to_string(&config_path)
        .expect("config")
        .replace(
            "rate_limit_per_minute = 1\n",
            "rate_limit_per_minute = 600\n",
        );
    std::fs::write(&config_path, text).expect("write config");
    gatehouse_core::watcher::reload_config(&api.host.gateway, &config_path);
    let (status, _, retried) = api
        .request(Method::POST, CHARGES, Some(charge_body()), &key)
        .await;
    assert_eq!(
        (status, retried["status"].as_str(), &retried["replayed"]),
        (200, Some("pending"), &json!(false)),
        "the retry ran afresh: {retried}"
    );
    assert_eq!(
        simulator.transactions().len(),
        2,
        "two charges reached the provider"
    );
    // The refusal stays in the ledger, keyless, its history naming the key it released.
    let (_, ledger) = api.get("/v1/ledger?state=failed").await;
    let refused = ledger["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .find(|entry| entry["refusal"]["code"] == "rate_limited")
        .unwrap_or_else(|| panic!("the refusal is recorded: {ledger}"));
    assert_eq!(refused["idempotency_key"], Value::Null, "{refused}");
}

on_both_backends!(
    #[tokio::test]
    every_non_webhook_route_needs_an_api_key,
    #[tokio::test]
    charge_status_balance_and_the_ledger,
    #[tokio::test]
    a_retry_with_the_same_key_never_reaches_the_provider_twice,
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    twenty_concurrent_requests_with_one_key_make_one_provider_call,
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    fifty_clients_with_one_key_all_get_the_first_attempts_answer,
    #[tokio::test]
    hostile_requests_are_refused_with_clear_errors,
    #[tokio::test]
    forged_and_replayed_callbacks_do_not_change_the_ledger,
    #[tokio::test]
    unknown_outcomes_are_reconciled_with_the_provider,
    #[tokio::test]
    plugins_metrics_and_the_openapi_document,
    #[tokio::test]
    every_error_answer_is_the_json_envelope,
    #[tokio::test]
    verified_events_are_forwarded_with_retries,
    #[tokio::test]
    a_refusal_before_sending_does_not_bind_the_idempotency_key,
    #[tokio::test]
    a_rate_limited_charge_retried_with_its_key_runs_once_the_limit_allows,
);
