//! Security: known secrets of all five providers never appear in logs (captured at trace level),
//! API answers and errors, metrics, the ledger, the events feed, `/v1/plugins` or `Debug` output,
//! even when providers echo them back; every non-webhook route needs an API key; webhook replays
//! are not stored twice and forged signatures are refused; a plugins folder writable by others
//! is refused.

use crate::reliability;

use gatehouse_e2e::{API_KEY, ApiHost, captured_logs, install, library, plugin_file_name};
use gatehouse_service::api::ROUTES;
use gatehouse_sim_common::Fault;
use gatehouse_sim_xsolla::{Credentials, SignatureMode};
use reliability::{
    ALL_PLUGINS, CCBILL_PASSWORD, KOLMISOFT_SECRET, PAYSITE_PASSWORD, PGG_TOKEN, Simulators,
    ccbill_payout, figure, form_encoded, known_secrets, pgg_charge, xsolla_charge, xsolla_refund,
};
use reqwest::Method;
use serde_json::{Value, json};

/// A body a broken provider or proxy might send back, quoting the credentials of the request it
/// received (each provider's own: an account's secrets are the ones its host side knows).
fn echo(provider: &str) -> String {
    let xsolla = Credentials::default();
    // Xsolla's echo quotes its Authorization header too: the Base64 `merchant_id:api_key` is as
    // good as the key (scrubbed as a sensitive header value, bug B2 in RELIABILITY.md).
    let quoted = match provider {
        "paygateglobal" => format!("auth_token={PGG_TOKEN}"),
        "xsolla" => format!(
            "<html>api_key={} secret={} Authorization: Basic {}</html>",
            xsolla.api_key,
            xsolla.project_secret_key,
            reliability::base64(&format!("{}:{}", xsolla.merchant_id, xsolla.api_key))
        ),
        "kolmisoft" => format!("secret_key={KOLMISOFT_SECRET}"),
        "ccbill" => format!(
            "password={}&raw={CCBILL_PASSWORD}",
            form_encoded(CCBILL_PASSWORD)
        ),
        _ => format!(
            "pass={} password={PAYSITE_PASSWORD}",
            gatehouse_sim_paysitecash::md5_hex(PAYSITE_PASSWORD)
        ),
    };
    format!("echo of the request: {quoted}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_secrets_appear_in_no_output_at_any_level() {
    let sims = Simulators::start().await;
    let api = ApiHost::start(&ALL_PLUGINS, &sims.accounts_toml(1500)).await;
    let mut transcript = String::new();
    let commands: Vec<(&str, Method, String, Option<Value>)> = vec![
        (
            "paygateglobal",
            Method::POST,
            "charges".into(),
            Some(pgg_charge(1500)),
        ),
        ("paygateglobal", Method::GET, "balance".into(), None),
        (
            "xsolla",
            Method::POST,
            "charges".into(),
            Some(xsolla_charge(sims.card, 999)),
        ),
        (
            "xsolla",
            Method::POST,
            "refunds".into(),
            Some(xsolla_refund("100001", Some(100))),
        ),
        (
            "xsolla",
            Method::GET,
            format!("saved-accounts/{}", reliability::XSOLLA_USER),
            None,
        ),
        (
            "kolmisoft",
            Method::POST,
            "reports".into(),
            Some(json!({"report": "payments"})),
        ),
        (
            "ccbill",
            Method::POST,
            "affiliate-payouts".into(),
            Some(ccbill_payout("424242", 1495)),
        ),
        (
            "paysitecash",
            Method::POST,
            "reports".into(),
            Some(json!({"report": "webmasters_quick"})),
        ),
    ];
    let simulators = [
        ("paygateglobal", &sims.pgg_running),
        ("xsolla", &sims.xsolla_running),
        ("kolmisoft", &sims.kolmisoft_running),
        ("ccbill", &sims.ccbill_running),
        ("paysitecash", &sims.paysite_running),
    ];
    let mut sent = 0;
    for (round, account) in ["main", "main", "main", "main", "down"]
        .into_iter()
        .enumerate()
    {
        for (index, (provider, method, path, body)) in commands.iter().enumerate() {
            let running = simulators
                .iter()
                .find(|(name, _)| name == provider)
                .expect("simulator")
                .1;
            // Round 0 answers normally; rounds 1-3 echo the credentials in a 200 body, a 500 and a
            // 401; round 4 cannot connect.
            let echo = echo(provider);
            match round {
                1 => running.faults.push(Fault::Body(echo)),
                2 => running.faults.push(Fault::Status(500, echo)),
                3 => running.faults.push(Fault::Status(401, echo)),
                _ => {}
            }
            let key = format!("secret-{round}-{index}");
            let (status, headers, answer) = api
                .request(
                    method.clone(),
                    &format!("/v1/{provider}/{account}/{path}"),
                    body.clone(),
                    &[("Idempotency-Key", &key)],
                )
                .await;
            running.faults.clear();
            transcript.push_str(&format!("{status} {headers:?} {answer}\n"));
            api.post(&format!("/v1/{provider}/{account}/resume"), json!({}))
                .await;
            sent += 1;
        }
    }
    // Signed and forged webhooks.
    let xsolla = &sims.xsolla;
    let transaction = xsolla
        .transactions()
        .first()
        .map(|t| t.id)
        .expect("a charge went through");
    let body = xsolla.payment_webhook_body(transaction).expect("body");
    for mode in [
        SignatureMode::Valid,
        SignatureMode::Wrong,
        SignatureMode::Missing,
    ] {
        let mut request = api
            .client
            .post(format!("{}/webhooks/xsolla/main", api.base_url))
            .body(body.clone());
        if let Some(signature) = xsolla.webhook_authorization(&body, mode) {
            request = request.header("authorization", signature);
        }
        let response = request.send().await.expect("webhook");
        transcript.push_str(&format!(
            "{} {}\n",
            response.status(),
            response.text().await.expect("text")
        ));
    }
    // Everything the host shows: the ledger with each entry's history, events, plugins, metrics.
    for path in [
        "/v1/ledger?limit=1000",
        "/v1/events",
        "/v1/plugins",
        "/metrics",
        "/openapi.json",
    ] {
        let (_, answer) = api.get(path).await;
        transcript.push_str(&answer.to_string());
    }
    let (_, listed) = api.get("/v1/ledger?limit=1000").await;
    for entry in listed["entries"].as_array().expect("entries") {
        let (_, full) = api
            .get(&format!("/v1/ledger/{}", entry["id"].as_str().expect("id")))
            .await;
        transcript.push_str(&full.to_string());
    }
    // Debug output of what holds the secrets.
    let config = api.host.gateway.config();
    transcript.push_str(&format!("{config:?}"));
    for (provider, account, section) in config.accounts() {
        transcript.push_str(&format!("{provider} {account} {section:?}"));
    }
    transcript.push_str(&format!("{:?}", api.host.gateway.registry().statuses()));
    transcript.push_str(&captured_logs());

    assert!(
        transcript.contains("echo"),
        "the transcript quotes the providers' echoes"
    );
    let mut leaked = Vec::new();
    for secret in known_secrets() {
        if transcript.contains(&secret) {
            let at = transcript.find(&secret).unwrap_or(0);
            let start = transcript.floor_char_boundary(at.saturating_sub(120));
            leaked.push(format!(
                "`{secret}` in: …{}…",
                &transcript[start..transcript.ceil_char_boundary(at + secret.len() + 40)]
            ));
        }
    }
    figure(
        "security.secrets",
        format!(
            "commands={sent} secrets_checked={} transcript_bytes={} leaks={}",
            known_secrets().len(),
            transcript.len(),
            leaked.len()
        ),
    );
    assert!(leaked.is_empty(), "secrets leaked:\n{}", leaked.join("\n"));
}

#[tokio::test]
async fn every_non_webhook_route_needs_an_api_key() {
    let sims = Simulators::start().await;
    let api = ApiHost::start(
        &["gatehouse-plugin-paygateglobal"],
        &sims.accounts_toml(1500),
    )
    .await;
    let client = reqwest::Client::new();
    let mut checked = 0;
    for route in ROUTES {
        let path = route
            .path
            .replace("{provider}", "paygateglobal")
            .replace("{account}", "main")
            .replace("{user_id}", "u1")
            .replace("{account_type}", "card")
            .replace("{account_id}", "1")
            .replace("{id}", "gh_x");
        let method = Method::from_bytes(route.method.as_bytes()).expect("method");
        let url = format!("{}{path}", api.base_url);
        let body = json!({"amount": {"minor_units": 1, "currency": "XOF"}}).to_string();
        let attempts: Vec<(&str, Option<String>)> = vec![
            ("no key", None),
            ("wrong key", Some(format!("Bearer {API_KEY}x"))),
            (
                "key prefix",
                Some(format!("Bearer {}", &API_KEY[..API_KEY.len() - 1])),
            ),
            ("empty bearer", Some("Bearer ".into())),
            ("another scheme", Some(format!("Basic {API_KEY}"))),
            ("lower-case scheme", Some(format!("bearer {API_KEY}"))),
            ("key alone", Some(API_KEY.to_string())),
        ];
        for (label, authorization) in attempts {
            let mut request = client.request(method.clone(), &url).body(body.clone());
            if let Some(value) = &authorization {
                request = request.header("authorization", value);
            }
            let status = request.send().await.expect("send").status().as_u16();
            if route.authenticated() {
                assert_eq!(status, 401, "{} {path} with {label}", route.method);
            } else {
                assert_ne!(
                    status, 401,
                    "{} {path} needs no key ({label})",
                    route.method
                );
            }
            checked += 1;
        }
    }
    // Nothing refused reached a provider or the ledger.
    for running in [
        &sims.pgg_running,
        &sims.xsolla_running,
        &sims.ccbill_running,
    ] {
        assert!(running.calls.all().is_empty(), "{:?}", running.calls.all());
    }
    assert!(reliability::ledger(&api).await.is_empty());
    figure(
        "security.api_keys",
        format!(
            "routes={} requests_refused_or_checked={checked}",
            ROUTES.len()
        ),
    );
}

#[tokio::test]
async fn webhook_replays_are_stored_once_and_forgeries_refused() {
    let sims = Simulators::start().await;
    let api = ApiHost::start(&["gatehouse-plugin-xsolla"], &sims.accounts_toml(1500)).await;
    let (status, charge) = api
        .post("/v1/xsolla/main/charges", xsolla_charge(sims.card, 500))
        .await;
    assert_eq!(status, 200, "{charge}");
    let transaction: u64 = charge["provider_reference"]
        .as_str()
        .expect("id")
        .parse()
        .expect("numeric");
    sims.xsolla.set_status(transaction, "done");
    let body = sims.xsolla.payment_webhook_body(transaction).expect("body");
    let deliver = |body: String, authorization: Option<String>| {
        let mut request = api
            .client
            .post(format!("{}/webhooks/xsolla/main", api.base_url))
            .body(body);
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        request.send()
    };
    let events = || async {
        api.get("/v1/events").await.1["events"]
            .as_array()
            .map_or(0, Vec::len)
    };
    // Forged: wrong secret, no signature, a valid signature over another body.
    let valid = sims
        .xsolla
        .webhook_authorization(&body, SignatureMode::Valid);
    for (label, forged_body, authorization) in [
        (
            "wrong secret",
            body.clone(),
            sims.xsolla
                .webhook_authorization(&body, SignatureMode::Wrong),
        ),
        ("no signature", body.clone(), None),
        (
            "tampered body",
            body.replace("\"amount\"", "\"amount\" ")
                .replacen('5', "9", 1),
            valid.clone(),
        ),
        (
            "signature in upper case of another body",
            body.clone(),
            Some("Signature 0000000000000000000000000000000000000000".into()),
        ),
    ] {
        let response = deliver(forged_body, authorization).await.expect("webhook");
        assert_eq!(response.status(), 401, "{label}");
        assert_eq!(events().await, 0, "{label}: nothing stored");
    }
    // Genuine, then replayed five times: acknowledged every time, stored once.
    for attempt in 0..6 {
        let response = deliver(body.clone(), valid.clone()).await.expect("webhook");
        assert_eq!(response.status(), 204, "delivery {attempt}");
        assert_eq!(events().await, 1, "delivery {attempt}");
    }
    let (_, metrics) = api.get("/metrics").await;
    let metrics = metrics.as_str().unwrap_or_default().to_string();
    assert!(
        metrics.contains("gatehouse_webhook_events_total{provider=\"xsolla\",result=\"replay\"} 5"),
        "{metrics}"
    );
    figure(
        "security.webhooks",
        "forged=4 refused=4 genuine=1 replays=5 stored=1",
    );
}

#[cfg(unix)]
#[tokio::test]
async fn a_plugins_folder_writable_by_others_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let sims = Simulators::start().await;
    let api = ApiHost::start(
        &["gatehouse-plugin-paygateglobal"],
        &sims.accounts_toml(1500),
    )
    .await;
    let gateway = &api.host.gateway;
    let folder = api.host.plugins_dir();
    for (label, mode) in [
        ("world-writable", 0o777),
        ("group-writable", 0o770),
        ("sticky world-writable", 0o1777),
    ] {
        std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(mode)).expect("chmod");
        // A new plugin dropped into such a folder is not loaded.
        install(
            &library("gatehouse-plugin-xsolla"),
            &folder,
            &plugin_file_name("xsolla"),
        );
        // A replaced one is not either: the loaded version keeps serving.
        install(
            &library("gatehouse-fixture-paygateglobal-next"),
            &folder,
            &plugin_file_name("paygateglobal"),
        );
        gateway.reload_plugins();
        assert!(
            gateway.registry().get("xsolla").is_none(),
            "{label}: loaded from an unsafe folder"
        );
        assert_eq!(
            gateway
                .registry()
                .get("paygateglobal")
                .map(|p| p.manifest.plugin_version.clone())
                .as_deref(),
            Some("1.0.0"),
            "{label}"
        );
        let failures = gateway.registry().failures();
        assert!(
            failures
                .iter()
                .any(|f| f.error.contains("its folder is writable by other users")),
            "{label}: {failures:?}"
        );
        // Back to the original content for the next case.
        std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        install(
            &library("gatehouse-plugin-paygateglobal"),
            &folder,
            &plugin_file_name("paygateglobal"),
        );
        std::fs::remove_file(folder.join(plugin_file_name("xsolla"))).expect("remove");
        gateway.reload_plugins();
    }
    // Safe again: the dropped-in plugin loads.
    install(
        &library("gatehouse-plugin-xsolla"),
        &folder,
        &plugin_file_name("xsolla"),
    );
    gateway.reload_plugins();
    assert!(gateway.registry().get("xsolla").is_some());
    figure("security.plugin_folder", "modes=777,770,1777 refused=3");
}
