//! Unit tests of the Kolmisoft flows through the testkit: scripted answers, no sockets.

mod answers;
mod hostile;
mod request;

use gatehouse_plugin_api::testkit::{self, FlowRun, decode_form, query_pairs};
use gatehouse_plugin_api::{AccountConfig, HttpRequest, HttpResponse, Invocation, Method};
use serde_json::json;
use sha1::{Digest, Sha1};

use crate::Kolmisoft;

pub const BASE: &str = "http://192.0.2.10/billing";
pub const USERNAME: &str = "api_admin";
/// Distinctive, so that a test can look for it in everything the plugin returns.
pub const SECRET: &str = "Kolmisoft-Secret-7f3a9c";
/// The testkit's clock is 2026-01-01T00:00:00Z: "today" in UTC is that whole day.
pub const TODAY_FROM: i64 = 1_767_225_600;
pub const TODAY_TILL: i64 = 1_767_311_999;

pub fn account_with(settings: &[(&str, &str)]) -> AccountConfig {
    let mut all_settings = vec![("username", USERNAME)];
    all_settings.extend_from_slice(settings);
    testkit::account(BASE, &all_settings, &[("secret_key", SECRET)])
}

pub fn report_command(
    from: Option<i64>,
    till: Option<i64>,
    filters: &[(&str, &str)],
) -> serde_json::Value {
    let mut command = json!({"operation": "report", "report": "payments"});
    if let Some(from) = from {
        command["from"] = json!(from);
    }
    if let Some(till) = till {
        command["till"] = json!(till);
    }
    if !filters.is_empty() {
        command["filters"] = filters
            .iter()
            .map(|(name, value)| (name.to_string(), json!(value)))
            .collect::<serde_json::Map<_, _>>()
            .into();
    }
    command
}

pub fn report(from: Option<i64>, till: Option<i64>, filters: &[(&str, &str)]) -> Invocation {
    testkit::invocation(report_command(from, till, filters), account_with(&[]))
}

pub fn run(invocation: &Invocation, responses: impl IntoIterator<Item = HttpResponse>) -> FlowRun {
    testkit::run::<Kolmisoft>(invocation, b"", responses)
}

/// Runs a default report (no filters, today) answered with `body`.
pub fn answered(body: impl Into<Vec<u8>>) -> FlowRun {
    run(
        &report(None, None, &[]),
        [HttpResponse::new(200, body).with_header("content-type", "text/xml")],
    )
}

/// The parameters a request sent, wherever it sent them (form body for POST, query for GET).
pub fn sent_parameters(request: &HttpRequest) -> Vec<(String, String)> {
    match request.method {
        Method::Get => query_pairs(request),
        _ => decode_form(&String::from_utf8_lossy(&request.body)),
    }
}

/// The hash computed independently of the plugin: SHA1 of the values, then the secret.
pub fn expected_hash(values: &[&str], secret: &str) -> String {
    let mut hasher = Sha1::new();
    for value in values {
        hasher.update(value.as_bytes());
    }
    hasher.update(secret.as_bytes());
    hex::encode(hasher.finalize())
}

/// One `<payment>` in the document's layout, values padded with spaces as the document pads them.
pub fn payment_xml(fields: &[(&str, &str)]) -> String {
    let mut xml = String::from("  <payment>\n");
    for (name, value) in fields {
        xml.push_str(&format!("   <{name}>  {value}   </{name}>\n"));
    }
    xml.push_str("  </payment>\n");
    xml
}

/// The document's success answer around `payments`.
pub fn page_xml(payments: &[String]) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<page>\n <pagename> Payments_list </pagename>\n <payments>\n{} </payments>\n</page>\n",
        payments.concat()
    )
}

pub fn full_payment(user: &str, amount: &str, currency: &str) -> String {
    payment_xml(&[
        ("user", user),
        ("date", "2026-01-01 10:15:00"),
        ("amount", amount),
        ("amount_with_tax", amount),
        ("comment", "manual top-up"),
        ("currency", currency),
        ("user_balance_before_payment", "5.0000"),
        ("user_balance_after_payment", "15.0000"),
    ])
}

#[test]
fn the_manifest_claims_m4_only() {
    use gatehouse_plugin_api::Plugin;
    let manifest = crate::Kolmisoft::manifest();
    assert_eq!(manifest.display_name, "Kolmisoft M4 billing");
    assert!(!manifest.display_name.contains("MOR"));
    assert!(manifest.status_of.is_empty());
}
