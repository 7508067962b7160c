//! The operator's console in a real browser: headless Chromium (Debian's `chromium`, driven
//! through `chromium-driver` by WebDriver) against `gatehouse sandbox`, the real executable.
//!
//! Sign in, see the five plugins, find a charge made through the API in the ledger page, settle
//! a `needs_operator` entry and see its history change, resume a paused account, and check that
//! a read-only key sees no settle button and gets 403 if it tries anyway.
//!
//! Screenshots of each page go to a temporary folder, or to `GATEHOUSE_CONSOLE_SCREENSHOTS` when
//! set (the README's are made so: `GATEHOUSE_CONSOLE_SCREENSHOTS=$PWD/docs/console cargo test -p
//! gatehouse-e2e -- console::`).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use gatehouse_e2e::webdriver::Browser;
use gatehouse_e2e::{free_port, gatehouse_binary};
use serde_json::{Value, json};

const KEY: &str = "sandbox-key";
const READONLY_KEY: &str = "sandbox-readonly-key";

struct Sandbox {
    child: Child,
    base: String,
    folder: tempfile::TempDir,
    client: reqwest::Client,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sandbox {
    async fn start() -> Self {
        let folder = tempfile::tempdir().expect("folder");
        let port = free_port();
        let child = Command::new(gatehouse_binary())
            .args(["sandbox", "--folder"])
            .arg(folder.path())
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the sandbox starts");
        let sandbox = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            folder,
            client: reqwest::Client::new(),
        };
        // Five debug-built plugins load slowly on a busy machine: up to a minute.
        for _ in 0..600 {
            if let Ok(response) = sandbox
                .client
                .get(format!("{}/v1/plugins", sandbox.base))
                .bearer_auth(KEY)
                .send()
                .await
                && response.status() == 200
            {
                let plugins: Value = response.json().await.expect("json");
                if plugins["plugins"].as_array().map(Vec::len) == Some(5) {
                    return sandbox;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the sandbox did not serve its five plugins within a minute");
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> (u16, Value) {
        let response = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(KEY)
            .json(&body)
            .send()
            .await
            .expect("the sandbox answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Adds accounts to the sandbox's own `plugins.toml` (written atomically, as an operator
    /// would): CCBill's `blackhole`, whose answers are lost, and PayGateGlobal's `locked`, whose
    /// token the provider refuses.
    fn add_accounts(&self, blackhole: &str) {
        let path = self.folder.path().join("plugins.toml");
        let text = std::fs::read_to_string(&path).expect("the sandbox's configuration");
        let config: toml::Value = toml::from_str(&text).expect("TOML");
        let account = |provider: &str| config["providers"][provider]["accounts"]["main"].clone();
        let inline = |table: &toml::Value| {
            let pairs: Vec<String> = table
                .as_table()
                .map(|table| {
                    table
                        .iter()
                        .map(|(key, value)| format!("{key} = {value}"))
                        .collect()
                })
                .unwrap_or_default();
            format!("{{ {} }}", pairs.join(", "))
        };
        let ccbill = account("ccbill");
        let paygate = account("paygateglobal");
        let added = format!(
            "\n[providers.ccbill.accounts.blackhole]\nbase_url = \"{blackhole}\"\ntimeout_ms = 2000\nsettings = {}\nsecrets = {}\n\n\
             [providers.paygateglobal.accounts.locked]\nbase_url = {}\nsecrets = {{ auth_token = \"not-the-token\" }}\n",
            inline(&ccbill["settings"]),
            inline(&ccbill["secrets"]),
            paygate["base_url"],
        );
        let temporary = self.folder.path().join(".plugins.toml.console");
        std::fs::write(&temporary, text + &added).expect("write");
        std::fs::rename(&temporary, &path).expect("rename");
    }
}

/// A provider that reads each request and hangs up without answering: a money-moving command
/// sent there ends `unknown`.
async fn black_hole() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut buffer = vec![0u8; 65536];
                let _ = tokio::time::timeout(Duration::from_millis(300), stream.read(&mut buffer))
                    .await;
                drop(stream);
            });
        }
    });
    format!("http://{address}")
}

fn screenshots() -> (PathBuf, Option<tempfile::TempDir>) {
    match std::env::var_os("GATEHOUSE_CONSOLE_SCREENSHOTS") {
        Some(folder) => {
            let folder = PathBuf::from(folder);
            std::fs::create_dir_all(&folder).expect("the screenshots folder");
            (folder, None)
        }
        None => {
            let temporary = tempfile::tempdir().expect("folder");
            (temporary.path().to_path_buf(), Some(temporary))
        }
    }
}

/// A CCBill payout to the black hole, then reconciled: CCBill cannot be asked, so the entry
/// needs an operator.
async fn needs_operator(sandbox: &Sandbox, affiliate: &str) -> String {
    let (status, payout) = sandbox
        .call(
            reqwest::Method::POST,
            "/v1/ccbill/blackhole/affiliate-payouts",
            json!({"affiliate_id": affiliate, "amount": {"minor_units": 2500, "currency": "USD"},
                   "original_subscription_id": "1234567891"}),
        )
        .await;
    assert_eq!(
        (status, &payout["status"]),
        (200, &json!("unknown")),
        "{payout}"
    );
    let id = payout["reference"].as_str().expect("reference").to_string();
    let (status, reconciled) = sandbox
        .call(
            reqwest::Method::POST,
            &format!("/v1/ledger/{id}/reconcile"),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{reconciled}");
    assert_eq!(
        reconciled["entry"]["state"], "needs_operator",
        "{reconciled}"
    );
    id
}

async fn sign_in(browser: &Browser, base: &str, key: &str) {
    browser.goto(&format!("{base}/console")).await;
    let field = browser.wait_for("#key").await;
    browser.type_into(&field, key).await;
    browser
        .click(&browser.wait_for("#sign-in-button").await)
        .await;
    browser.wait_for("#who-name").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_works_the_console_in_a_real_browser() {
    let sandbox = Sandbox::start().await;
    let (shots, _keep) = screenshots();

    // The console's own answers: strict policy, no sniffing.
    let page = sandbox
        .client
        .get(format!("{}/console", sandbox.base))
        .send()
        .await
        .expect("console");
    assert_eq!(page.status(), 200);
    assert_eq!(
        page.headers()["content-security-policy"],
        gatehouse_service::console::CONTENT_SECURITY_POLICY
    );
    assert_eq!(page.headers()["x-content-type-options"], "nosniff");

    // What the operator will look at: a charge through the API, an account the provider locked
    // out, two payouts whose answers were lost.
    sandbox.add_accounts(&black_hole().await);
    let (status, charge) = sandbox
        .call(
            reqwest::Method::POST,
            "/v1/paygateglobal/main/charges",
            json!({"amount": {"minor_units": 1500, "currency": "XOF"},
                   "customer": {"phone": "90123456"}, "payment_method": "FLOOZ",
                   "description": "order <b>1042</b>"}),
        )
        .await;
    assert_eq!(status, 200, "{charge}");
    let charge_id = charge["reference"].as_str().expect("reference").to_string();
    let mut locked = Value::Null;
    for _ in 0..300 {
        // Until the reloaded configuration knows the account; then its refused token pauses it.
        let (status, answer) = sandbox
            .call(
                reqwest::Method::POST,
                "/v1/paygateglobal/locked/charges",
                json!({"amount": {"minor_units": 700, "currency": "XOF"},
                       "customer": {"phone": "90123456"}, "payment_method": "FLOOZ"}),
            )
            .await;
        if status != 404 {
            locked = answer;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(locked["status"], "failed", "{locked}");
    let to_settle = needs_operator(&sandbox, "0001").await;
    let to_leave = needs_operator(&sandbox, "0002").await;

    let browser = Browser::start().await;
    sign_in(&browser, &sandbox.base, KEY).await;
    let who = browser
        .wait_for_text("#who-name", |text| !text.is_empty())
        .await;
    assert_eq!(who, "sandbox");
    // The key is nowhere in the address.
    let href = browser.execute("return location.href;", json!([])).await;
    assert!(!href.as_str().unwrap_or_default().contains(KEY), "{href}");

    // Plugins: the five providers, their versions and contract.
    browser.wait_for("#plugins-table").await;
    let mut providers = Vec::new();
    for cell in browser
        .find_all("#plugins-table tr.plugin td.provider")
        .await
    {
        providers.push(browser.text(&cell).await);
    }
    providers.sort();
    assert_eq!(
        providers,
        [
            "ccbill",
            "kolmisoft",
            "paygateglobal",
            "paysitecash",
            "xsolla"
        ]
    );
    browser.wait_for("#no-load-errors").await;
    browser.screenshot(&shots, "plugins.png").await;

    // Accounts: the locked one, paused with the reason, and a resume button that lifts it.
    browser
        .click(&browser.wait_for("#nav-accounts").await)
        .await;
    let row = browser
        .wait_for_text("#paused-table tr.paused", |text| {
            text.contains("paygateglobal/locked")
        })
        .await;
    assert!(
        row.contains("refused the credentials"),
        "the reason is shown: {row}"
    );
    browser.screenshot(&shots, "accounts.png").await;
    browser
        .click(
            &browser
                .wait_for("button.resume[data-account='paygateglobal/locked']")
                .await,
        )
        .await;
    browser.wait_for("#no-paused").await;
    let (_, plugins) = sandbox
        .call(reqwest::Method::GET, "/v1/plugins", Value::Null)
        .await;
    assert_eq!(plugins["paused_accounts"], json!([]), "{plugins}");

    // Ledger: the charge made through the API is there; filtered to what needs an operator,
    // the two payouts are and the charge is not.
    browser.click(&browser.wait_for("#nav-ledger").await).await;
    browser
        .wait_for(&format!("#ledger-table tr.entry[data-id='{charge_id}']"))
        .await;
    browser.screenshot(&shots, "ledger.png").await;
    browser
        .execute(
            "document.getElementById('filter-state').value = 'needs_operator'; return true;",
            json!([]),
        )
        .await;
    browser
        .click(&browser.wait_for("#apply-filters").await)
        .await;
    browser
        .wait_for(&format!("#ledger-table tr.entry[data-id='{to_leave}']"))
        .await;
    assert!(
        browser
            .find(&format!("tr.entry[data-id='{charge_id}']"))
            .await
            .is_none(),
        "the filter keeps the charge out"
    );

    // The entry: why it needs an operator, then settled by hand, and its history shows it.
    browser
        .click(
            &browser
                .wait_for(&format!(
                    "tr.entry[data-id='{to_settle}'] button.open-entry"
                ))
                .await,
        )
        .await;
    let reason = browser
        .wait_for_text("#operator-reason", |text| !text.is_empty())
        .await;
    assert!(reason.contains("no status operation"), "{reason}");
    let rows_before = browser
        .find_all("#history-table tr.history-event")
        .await
        .len();
    browser.screenshot(&shots, "entry.png").await;
    browser
        .type_into(&browser.wait_for("#settle-reference").await, "PAYOUT-77")
        .await;
    browser
        .type_into(
            &browser.wait_for("#settle-reason").await,
            "paid: seen in CCBill's admin portal",
        )
        .await;
    browser.click(&browser.wait_for("#settle").await).await;
    browser
        .wait_for_text("#entry-state", |text| text == "succeeded")
        .await;
    let history = browser.find_all("#history-table tr.history-event").await;
    assert_eq!(history.len(), rows_before + 1);
    let last = browser.text(history.last().expect("a row")).await;
    assert!(
        last.contains("paid: seen in CCBill's admin portal") && last.contains("sandbox"),
        "{last}"
    );
    assert!(
        browser.find("#settle").await.is_none(),
        "a final entry offers no settling"
    );
    browser.screenshot(&shots, "entry-settled.png").await;
    let (_, settled) = sandbox
        .call(
            reqwest::Method::GET,
            &format!("/v1/ledger/{to_settle}"),
            Value::Null,
        )
        .await;
    assert_eq!(settled["entry"]["provider_reference"], "PAYOUT-77");

    // Events, and where the forwarder stands.
    browser.click(&browser.wait_for("#nav-events").await).await;
    let forwarder = browser
        .wait_for_text("#forwarder", |text| !text.is_empty())
        .await;
    assert!(forwarder.contains("not configured"), "{forwarder}");
    browser.screenshot(&shots, "events.png").await;

    // The fleet: on a SQLite ledger, this host alone, live, with the plugins it serves.
    browser.click(&browser.wait_for("#nav-fleet").await).await;
    let shared = browser
        .wait_for_text("#fleet-shared", |text| !text.is_empty())
        .await;
    assert!(shared.contains("this host alone"), "{shared}");
    let host = browser
        .wait_for_text("#fleet-table .fleet-host", |text| !text.is_empty())
        .await;
    assert!(
        host.contains("(this host)") && host.contains("live"),
        "{host}"
    );
    assert!(host.contains("paygateglobal"), "{host}");
    browser.screenshot(&shots, "fleet.png").await;

    // A read-only key: the entry that needs an operator, but no settle button; and trying
    // anyway, with the key the page holds, is refused.
    browser.click(&browser.wait_for("#sign-out").await).await;
    sign_in(&browser, &sandbox.base, READONLY_KEY).await;
    browser
        .wait_for_text("#who-name", |text| text == "sandbox-readonly")
        .await;
    browser
        .execute(
            "location.hash = 'entry/' + encodeURIComponent(arguments[0]); return true;",
            json!([to_leave]),
        )
        .await;
    browser.wait_for("#operator-reason").await;
    browser
        .wait_for_text("#entry-id", |text| text == to_leave)
        .await;
    assert!(browser.find("#settle").await.is_none(), "no settle button");
    assert!(
        browser.find("#settle-form").await.is_none(),
        "no settle form"
    );
    browser.screenshot(&shots, "entry-readonly.png").await;
    let tried = browser
        .execute_async(
            "const done = arguments[arguments.length - 1];
             fetch('/v1/ledger/' + arguments[0] + '/settle', {method: 'POST',
               headers: {'Authorization': 'Bearer ' + sessionStorage.getItem('gatehouse.console.key'),
                         'Content-Type': 'application/json'},
               body: JSON.stringify({state: 'succeeded', reason: 'trying'})})
             .then(r => r.json().then(b => done([r.status, b.error.code])))
             .catch(e => done(String(e)));",
            json!([to_leave]),
        )
        .await;
    assert_eq!(tried, json!([403, "forbidden_scope"]));
    let (_, left) = sandbox
        .call(
            reqwest::Method::GET,
            &format!("/v1/ledger/{to_leave}"),
            Value::Null,
        )
        .await;
    assert_eq!(left["entry"]["state"], "needs_operator");

    // Text from outside (here the charge's description, markup included) is shown as text.
    browser
        .execute(
            "location.hash = 'entry/' + encodeURIComponent(arguments[0]); return true;",
            json!([charge_id]),
        )
        .await;
    browser
        .wait_for_text("#entry-description", |text| text == "order <b>1042</b>")
        .await;
    let bold = browser
        .execute(
            "return document.querySelectorAll('#page b').length;",
            json!([]),
        )
        .await;
    assert_eq!(bold, json!(0), "no markup from data");
    drop(browser);
}
