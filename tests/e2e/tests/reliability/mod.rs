//! Shared support for the reliability and security tests (`faults.rs`, `storms.rs`, `kills.rs`,
//! `load.rs`, `security.rs`, `money_properties.rs`): the five simulators with known secrets, their
//! accounts, process figures (VmRSS, open descriptors), ledger checks, and a scripted driver that
//! runs a real plugin cdylib through the host's own loader without sockets.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use gatehouse_core::loader::{LoadedPlugin, load_plugin};
use gatehouse_e2e::{ApiHost, library};
use gatehouse_plugin_api::{HttpRequest, HttpResponse, Outcome, ProviderError};
use gatehouse_sim_ccbill::CcBillSimulator;
use gatehouse_sim_common::RunningSimulator;
use gatehouse_sim_kolmisoft::{KolmisoftSimulator, Payment};
use gatehouse_sim_paygateglobal::PayGateSimulator;
use gatehouse_sim_paysitecash::PaysiteCashSimulator;
use gatehouse_sim_xsolla::{Credentials, XsollaSimulator};
use serde_json::{Value, json};

// Known secret values: the security tests look for each of them (and their encodings) in every
// output the host produces.
pub const PGG_TOKEN: &str = "pgg-Known-Secret-Token-7f31c2";
pub const KOLMISOFT_SECRET: &str = "kolmi-Known-Secret-Key-55e0a9";
pub const KOLMISOFT_USER: &str = "admin";
pub const CCBILL_ACCNUM: &str = "912345";
pub const CCBILL_USER: &str = "rel-datalink-user";
pub const CCBILL_PASSWORD: &str = "CcB Known&Secret=Pass+42";
pub const PAYSITE_USER: &str = "rel-webmaster";
pub const PAYSITE_PASSWORD: &str = "Paysite-Known-Secret-Pw-8c4d";
pub const XSOLLA_USER: &str = "player-rel";

pub const ALL_PLUGINS: [&str; 5] = [
    "gatehouse-plugin-paygateglobal",
    "gatehouse-plugin-xsolla",
    "gatehouse-plugin-kolmisoft",
    "gatehouse-plugin-ccbill",
    "gatehouse-plugin-paysitecash",
];

/// Every secret value configured for the five providers, in the forms a leak could take.
pub fn known_secrets() -> Vec<String> {
    let xsolla = Credentials::default();
    let mut secrets = vec![
        PGG_TOKEN.to_string(),
        KOLMISOFT_SECRET.to_string(),
        CCBILL_PASSWORD.to_string(),
        form_encoded(CCBILL_PASSWORD),
        PAYSITE_PASSWORD.to_string(),
        gatehouse_sim_paysitecash::md5_hex(PAYSITE_PASSWORD),
        xsolla.api_key.clone(),
        xsolla.project_secret_key.clone(),
        base64(&format!("{}:{}", xsolla.merchant_id, xsolla.api_key)),
        gatehouse_e2e::API_KEY.to_string(),
    ];
    secrets.sort();
    secrets.dedup();
    secrets
}

pub fn form_encoded(text: &str) -> String {
    gatehouse_plugin_api::http::encode_form(&[("", text)])
        .trim_start_matches('=')
        .to_string()
}

pub fn base64(text: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let input = text.as_bytes();
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let bytes = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let triple = (u32::from(bytes[0]) << 16) | (u32::from(bytes[1]) << 8) | u32::from(bytes[2]);
        for index in 0..4 {
            if index <= chunk.len() {
                out.push(char::from(
                    ALPHABET[((triple >> (18 - 6 * index)) & 63) as usize],
                ));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The five simulators, running on loopback.
pub struct Simulators {
    pub pgg: PayGateSimulator,
    pub pgg_running: RunningSimulator,
    pub xsolla: XsollaSimulator,
    pub xsolla_running: RunningSimulator,
    pub kolmisoft: KolmisoftSimulator,
    pub kolmisoft_running: RunningSimulator,
    pub ccbill: CcBillSimulator,
    pub ccbill_running: RunningSimulator,
    pub paysite: PaysiteCashSimulator,
    pub paysite_running: RunningSimulator,
    /// A saved card of [`XSOLLA_USER`] at the Xsolla simulator.
    pub card: u64,
}

/// A loopback port nothing listens on: connecting to it is refused.
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    drop(listener);
    port
}

impl Simulators {
    pub async fn start() -> Self {
        let (pgg, pgg_running) = PayGateSimulator::start(PGG_TOKEN)
            .await
            .expect("paygateglobal simulator");
        let (xsolla, xsolla_running) = XsollaSimulator::start(Credentials::default())
            .await
            .expect("xsolla simulator");
        let card = xsolla.add_saved_account(XSOLLA_USER, "card", "Visa");
        let (kolmisoft, kolmisoft_running) =
            KolmisoftSimulator::start(KOLMISOFT_SECRET, KOLMISOFT_USER)
                .await
                .expect("kolmisoft simulator");
        kolmisoft.add_payment(Payment::new(7, "alee", 1_748_739_600, "99.1234", "USD"));
        let ccbill = CcBillSimulator::new();
        ccbill.add_account(CCBILL_ACCNUM, &["0000", "0001", "0002"]);
        ccbill.add_main_user(CCBILL_ACCNUM, CCBILL_USER, CCBILL_PASSWORD);
        let (ccbill, ccbill_running) = ccbill.serve().await.expect("ccbill simulator");
        let (paysite, paysite_running) =
            PaysiteCashSimulator::start(PAYSITE_USER, PAYSITE_PASSWORD)
                .await
                .expect("paysitecash simulator");
        Self {
            pgg,
            pgg_running,
            xsolla,
            xsolla_running,
            kolmisoft,
            kolmisoft_running,
            ccbill,
            ccbill_running,
            paysite,
            paysite_running,
            card,
        }
    }

    /// `[providers.*]` tables: account `main` for every provider (generous rate limits, two
    /// retries), and account `down` for every provider pointed at a closed loopback port.
    pub fn accounts_toml(&self, timeout_ms: u64) -> String {
        let down = format!("http://127.0.0.1:{}", closed_port());
        let xsolla = Credentials::default();
        let mut toml = String::new();
        for (name, pgg, xsolla_api, xsolla_root, kolmisoft, ccbill, paysite) in [
            (
                "main",
                self.pgg_running.base_url(),
                XsollaSimulator::api_base_url(&self.xsolla_running),
                self.xsolla_running.base_url(),
                format!("{}/billing", self.kolmisoft_running.base_url()),
                self.ccbill_running.base_url(),
                PaysiteCashSimulator::stats_base_url(&self.paysite_running),
            ),
            (
                "down",
                down.clone(),
                down.clone(),
                down.clone(),
                down.clone(),
                down.clone(),
                down.clone(),
            ),
        ] {
            let policy = format!(
                "timeout_ms = {timeout_ms}\nrate_limit_per_minute = 1000000\nmax_concurrency = 64\nmax_retries = 2\n"
            );
            toml.push_str(&format!(
                r#"
[providers.paygateglobal.accounts.{name}]
base_url = "{pgg}"
{policy}secrets = {{ auth_token = "{PGG_TOKEN}" }}

[providers.xsolla.accounts.{name}]
base_url = "{xsolla_api}"
{policy}settings = {{ merchant_id = "{merchant}", project_id = "{project}", paystation_url = "{xsolla_root}/paystation4/", sandbox_paystation_url = "{xsolla_root}/sandbox/paystation4/" }}
secrets = {{ api_key = "{api_key}", project_secret_key = "{project_secret}" }}

[providers.kolmisoft.accounts.{name}]
base_url = "{kolmisoft}"
{policy}settings = {{ username = "{KOLMISOFT_USER}" }}
secrets = {{ secret_key = "{KOLMISOFT_SECRET}" }}

[providers.ccbill.accounts.{name}]
base_url = "{ccbill}"
{policy}settings = {{ client_accnum = "{CCBILL_ACCNUM}", username = "{CCBILL_USER}", using_subacc = "0002" }}
secrets = {{ password = "{ccbill_password}" }}

[providers.paysitecash.accounts.{name}]
base_url = "{paysite}"
{policy}settings = {{ user = "{PAYSITE_USER}" }}
secrets = {{ password = "{PAYSITE_PASSWORD}" }}
"#,
                merchant = xsolla.merchant_id,
                project = xsolla.project_id,
                api_key = xsolla.api_key,
                project_secret = xsolla.project_secret_key,
                ccbill_password = CCBILL_PASSWORD.replace('\\', "\\\\").replace('"', "\\\""),
            ));
        }
        toml
    }
}

// Commands, as the HTTP API takes them (the operation comes from the route).

pub fn pgg_charge(minor_units: i64) -> Value {
    json!({"amount": {"minor_units": minor_units, "currency": "XOF"}, "customer": {"phone": "90123456"},
           "payment_method": "FLOOZ", "description": "reliability"})
}

pub fn xsolla_charge(card: u64, minor_units: i64) -> Value {
    json!({"amount": {"minor_units": minor_units, "currency": "USD"}, "description": "gems",
           "customer": {"id": XSOLLA_USER, "ip": "203.0.113.7"}, "payment_method": "card",
           "saved_account_id": card.to_string()})
}

pub fn xsolla_refund(transaction_id: &str, minor_units: Option<i64>) -> Value {
    let mut body = json!({"transaction_id": transaction_id, "reason": "returned"});
    if let Some(minor_units) = minor_units {
        body["amount"] = json!({"minor_units": minor_units, "currency": "USD"});
    }
    body
}

pub fn ccbill_payout(affiliate_id: &str, cents: i64) -> Value {
    json!({"affiliate_id": affiliate_id, "amount": {"minor_units": cents, "currency": "USD"},
           "original_subscription_id": "1234567891"})
}

/// Every ledger entry the API lists (up to 1000), by reference.
pub async fn ledger(api: &ApiHost) -> BTreeMap<String, Value> {
    let (status, listed) = api.get("/v1/ledger?limit=1000").await;
    assert_eq!(status, 200, "{listed}");
    let mut entries = BTreeMap::new();
    for entry in listed["entries"].as_array().expect("entries") {
        let id = entry["id"].as_str().expect("id").to_string();
        assert!(
            entries.insert(id.clone(), entry.clone()).is_none(),
            "entry {id} listed twice"
        );
    }
    entries
}

/// The resident set size of this process, in KiB (Linux `/proc/self/status`).
pub fn vm_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0)
}

/// The resident set size of another process, in KiB.
pub fn vm_rss_kib_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0)
}

/// How many file descriptors this process has open.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |entries| entries.count())
}

/// Prints a figure line the way RELIABILITY.md quotes them: `FIGURE <name>: <values>`.
pub fn figure(name: &str, values: impl std::fmt::Display) {
    println!("FIGURE {name}: {values}");
    eprintln!("FIGURE {name}: {values}");
}

/// A plugin cdylib loaded once per test binary through the host's own loader (copy, `dlopen`,
/// contract and layout checks), to drive its flows with scripted answers and no sockets.
pub fn loaded_plugin(package: &str) -> Arc<LoadedPlugin> {
    static LOADED: OnceLock<std::sync::Mutex<BTreeMap<String, Arc<LoadedPlugin>>>> =
        OnceLock::new();
    let loaded = LOADED.get_or_init(Default::default);
    let mut loaded = loaded
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(plugin) = loaded.get(package) {
        return plugin.clone();
    }
    let file = library(package);
    let bytes = std::fs::read(&file).expect("plugin bytes");
    let plugin =
        Arc::new(load_plugin(&file, &bytes, &std::env::temp_dir()).expect("the plugin loads"));
    loaded.insert(package.to_string(), plugin.clone());
    plugin
}

/// What a scripted flow did.
#[derive(Debug)]
pub struct Driven {
    pub requests: Vec<HttpRequest>,
    pub result: Result<Outcome, ProviderError>,
}

/// Runs `invocation` (JSON of `Invocation`) through `plugin`, answering each request with the next
/// scripted response, under the contract's step limit (`plugin_api::flow`, the host's too).
pub fn drive(
    plugin: &LoadedPlugin,
    invocation: &Value,
    inbound: &[u8],
    responses: Vec<HttpResponse>,
) -> Driven {
    let invocation = invocation.to_string();
    let mut script = responses.into_iter();
    let driven = gatehouse_plugin_api::flow::drive::<std::convert::Infallible>(
        || Ok(plugin.start(&invocation, inbound)),
        |state, response| Ok(plugin.resume(&invocation, &state, &response)),
        |_| script.next(),
    );
    Driven {
        requests: driven.requests,
        result: driven.end.into_result(),
    }
}

/// An `Invocation` as JSON: `command` (with its `operation`), an account with `settings` and
/// `secrets`, the reference `gh_prop_reference`, a fixed clock.
pub fn invocation(
    command: Value,
    base_url: &str,
    settings: &[(&str, &str)],
    secrets: &[(&str, &str)],
) -> Value {
    let settings: serde_json::Map<String, Value> = settings
        .iter()
        .map(|(key, value)| (key.to_string(), json!(value)))
        .collect();
    let secrets: serde_json::Map<String, Value> = secrets
        .iter()
        .map(|(key, value)| (key.to_string(), json!(value)))
        .collect();
    json!({
        "command": command,
        "account": {"account": "prop", "base_url": base_url, "settings": settings, "secrets": secrets},
        "reference": "gh_prop_reference",
        "now_unix": 1_767_225_600i64,
    })
}

/// A folder under the system temporary folder, removed on drop.
pub fn scratch_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temporary folder")
}

pub fn path_str(path: &Path) -> String {
    path.to_str().expect("utf-8 path").to_string()
}

pub fn target_file(package: &str) -> PathBuf {
    library(package)
}
