//! Scoped API keys: every route of the route table, asked with a key of each scope, answers 403
//! exactly when the key lacks the scope the route declares (or does not reach its account), and
//! a refused command reaches neither the provider nor the ledger.

use gatehouse_e2e::{API_KEY, ApiHost};
use gatehouse_service::api::{Access, ROUTES};
use gatehouse_sim_paygateglobal::PayGateSimulator;
use reqwest::Method;
use serde_json::{Value, json};

const TOKEN: &str = "scopes-test-token-1234";
pub const READ_KEY: &str = "scope-read-key-000111";
pub const MONEY_KEY: &str = "scope-money-key-000222";
pub const OPERATE_KEY: &str = "scope-operate-key-000333";
/// Every scope, but only on `paygateglobal/other`.
const ELSEWHERE_KEY: &str = "scope-elsewhere-key-000444";

/// The named keys, as an operator writes them.
pub fn keys_toml() -> String {
    format!(
        "[[api.key]]\nname = \"reader\"\nsecret = \"{READ_KEY}\"\nscopes = [\"read\"]\n\n\
         [[api.key]]\nname = \"merchant\"\nsecret = \"{MONEY_KEY}\"\nscopes = [\"move_money\"]\n\n\
         [[api.key]]\nname = \"operator\"\nsecret = \"{OPERATE_KEY}\"\nscopes = [\"operate\"]\n\n\
         [[api.key]]\nname = \"elsewhere\"\nsecret = \"{ELSEWHERE_KEY}\"\nscopes = [\"read\", \"move_money\", \"operate\"]\n\
         accounts = [\"paygateglobal/other\"]\n\n"
    )
}

/// One request with `key`: status and JSON body.
pub async fn with_key(
    api: &ApiHost,
    key: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = api
        .client
        .request(method, format!("{}{path}", api.base_url))
        .bearer_auth(key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("API reachable");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn charge_body() -> Value {
    json!({"amount": {"minor_units": 500, "currency": "XOF"},
           "customer": {"phone": "90123456"}, "payment_method": "FLOOZ"})
}

async fn host() -> (ApiHost, gatehouse_sim_common::RunningSimulator) {
    let (simulator, running) = PayGateSimulator::start(TOKEN).await.expect("simulator");
    drop(simulator);
    let api = ApiHost::start(
        &["gatehouse-plugin-paygateglobal"],
        &format!(
            "{}[providers.paygateglobal.accounts.main]\nbase_url = \"{}\"\nsecrets = {{ auth_token = \"{TOKEN}\" }}\n\n\
             [providers.paygateglobal.accounts.other]\nbase_url = \"{}\"\nsecrets = {{ auth_token = \"{TOKEN}\" }}\n",
            keys_toml(),
            running.base_url(),
            running.base_url()
        ),
    )
    .await;
    (api, running)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_403_exactly_when_the_key_lacks_its_scope_or_account() {
    let (api, _running) = host().await;
    let (status, charged) = api
        .post("/v1/paygateglobal/main/charges", charge_body())
        .await;
    assert_eq!(status, 200, "{charged}");
    let id = charged["reference"]
        .as_str()
        .expect("a reference")
        .to_string();
    let document: Value =
        serde_json::from_str(gatehouse_service::api::OPENAPI_JSON).expect("the document");
    let keys = [
        ("read", READ_KEY),
        ("move_money", MONEY_KEY),
        ("operate", OPERATE_KEY),
    ];
    let mut wrong = Vec::new();
    for spec in ROUTES {
        // Every route's scope is in the document, as the table declares it.
        let documented =
            &document["paths"][spec.path][spec.method.to_ascii_lowercase()]["x-gatehouse-scope"];
        let declared = spec.access.scope().map(|scope| scope.as_str());
        if documented.as_str() != declared {
            wrong.push(format!(
                "{} {}: the table needs {declared:?}, the document says {documented}",
                spec.method, spec.path
            ));
        }
        let path = spec
            .path
            .replace("{provider}", "paygateglobal")
            .replace("{account}", "main")
            .replace("{id}", &id)
            .replace("{user_id}", "user-1")
            .replace("{account_type}", "card")
            .replace("{account_id}", "1");
        let method = Method::from_bytes(spec.method.as_bytes()).expect("method");
        for (scope, key) in keys {
            let (status, body) = with_key(&api, key, method.clone(), &path, Some(json!({}))).await;
            let lacks = declared.is_some_and(|needed| needed != scope);
            let refused = status == 403;
            if lacks != refused || (refused && body["error"]["code"] != "forbidden_scope") {
                wrong.push(format!(
                    "{} {path} with a {scope} key: {status} {body}",
                    spec.method
                ));
            }
            if status == 401 {
                wrong.push(format!("{} {path}: a valid key got 401", spec.method));
            }
        }
        // A key with every scope but only on another account: refused wherever the route names
        // this account, or spans every account; let in where the handler keeps to its accounts.
        let (status, body) =
            with_key(&api, ELSEWHERE_KEY, method.clone(), &path, Some(json!({}))).await;
        let expected = match spec.access {
            Access::Public | Access::AnyKey => None,
            Access::Key(_) | Access::Scrape => Some("forbidden_account"),
            // The ledger list narrows to the key's account; the entry is main's.
            Access::KeyFiltered(_) if spec.path == "/v1/ledger" => None,
            Access::KeyFiltered(_) if spec.path.contains("{id}") => Some("forbidden_account"),
            Access::KeyFiltered(_) => None,
        };
        let found = (status == 403).then(|| body["error"]["code"].as_str().unwrap_or_default());
        if found != expected {
            wrong.push(format!(
                "{} {path} with a key on another account: {status} {body}, expected {expected:?}",
                spec.method
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // The limited key lists its own account's entries only (none), and `whoami` says so.
    let (status, listed) = with_key(&api, ELSEWHERE_KEY, Method::GET, "/v1/ledger", None).await;
    assert_eq!((status, &listed["entries"]), (200, &json!([])), "{listed}");
    let (status, listed) = with_key(
        &api,
        ELSEWHERE_KEY,
        Method::GET,
        "/v1/ledger?account=main",
        None,
    )
    .await;
    assert_eq!(
        (status, listed["error"]["code"].as_str()),
        (403, Some("forbidden_account")),
        "{listed}"
    );
    let (_, who) = with_key(&api, ELSEWHERE_KEY, Method::GET, "/v1/whoami", None).await;
    assert_eq!(
        who,
        json!({"name": "elsewhere", "scopes": ["read", "move_money", "operate"],
               "providers": [], "accounts": ["paygateglobal/other"], "unlimited": false})
    );
    let (_, who) = with_key(&api, API_KEY, Method::GET, "/v1/whoami", None).await;
    assert_eq!(
        who["name"], "keys[0]",
        "the plain list's keys are named by place"
    );
    assert_eq!(who["scopes"], json!(["read", "move_money", "operate"]));
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_outside_its_scope_reaches_neither_the_provider_nor_the_ledger() {
    let (api, running) = host().await;
    for (key, path, code) in [
        (
            READ_KEY,
            "/v1/paygateglobal/main/charges",
            "forbidden_scope",
        ),
        (
            OPERATE_KEY,
            "/v1/paygateglobal/main/charges",
            "forbidden_scope",
        ),
        (
            ELSEWHERE_KEY,
            "/v1/paygateglobal/main/charges",
            "forbidden_account",
        ),
        (
            READ_KEY,
            "/v1/paygateglobal/main/payment-pages",
            "forbidden_scope",
        ),
    ] {
        let (status, body) = with_key(&api, key, Method::POST, path, Some(charge_body())).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (403, Some(code)),
            "{path}: {body}"
        );
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|message| !message.contains(key)),
            "the message names the key, never its secret: {body}"
        );
    }
    assert_eq!(running.calls.all(), Vec::<String>::new(), "nothing sent");
    let entries = api
        .ledger
        .list(&gatehouse_ledger::ListFilter::default())
        .expect("ledger");
    assert_eq!(entries, [], "nothing recorded");

    // The key that may charge does, and the ledger records its name (never the key).
    let (status, charged) = with_key(
        &api,
        MONEY_KEY,
        Method::POST,
        "/v1/paygateglobal/main/charges",
        Some(charge_body()),
    )
    .await;
    assert_eq!(status, 200, "{charged}");
    let id = charged["reference"].as_str().expect("reference");
    let (_, entry) = api.get(&format!("/v1/ledger/{id}")).await;
    assert_eq!(entry["entry"]["actor"], "merchant", "{entry}");
    let file = std::fs::read(api.host.dir.path().join("ledger.sqlite")).expect("ledger file");
    assert!(
        !String::from_utf8_lossy(&file).contains(MONEY_KEY),
        "the key's secret is nowhere in the ledger file"
    );
    // A read key may look at what the charge did; the same key may not settle it.
    let (status, _) = with_key(
        &api,
        READ_KEY,
        Method::GET,
        &format!("/v1/ledger/{id}"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, refused) = with_key(
        &api,
        READ_KEY,
        Method::POST,
        &format!("/v1/ledger/{id}/settle"),
        Some(json!({"state": "failed", "reason": "no"})),
    )
    .await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (403, Some("forbidden_scope"))
    );
    api.stop().await;
}
