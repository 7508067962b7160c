//! Unit tests of the Xsolla flows through the testkit: scripted answers, no sockets. They go
//! through the same `extern "C"` entry points the host calls.

mod hostile;
mod payment_page;
mod refund;
mod reports;
mod status;
mod tokenization;
mod webhook;

use base64::Engine;
use gatehouse_plugin_api::testkit::{self, FlowRun};
use gatehouse_plugin_api::{AccountConfig, HttpRequest, HttpResponse, Invocation};
use serde_json::Value;

use crate::Xsolla;

pub const BASE: &str = "http://xsolla.test/merchant/v2";
pub const MERCHANT_ID: &str = "12345";
pub const PROJECT_ID: &str = "678";
pub const API_KEY: &str = "api-key-SECRET-7f3a90";
pub const PROJECT_SECRET: &str = "project-secret-KEY-91bc";

pub fn account() -> AccountConfig {
    testkit::account(
        BASE,
        &[("merchant_id", MERCHANT_ID), ("project_id", PROJECT_ID)],
        &[("api_key", API_KEY), ("project_secret_key", PROJECT_SECRET)],
    )
}

pub fn sandbox_account() -> AccountConfig {
    let mut account = account();
    account.settings.insert("sandbox".into(), "true".into());
    account
}

pub fn invocation(command: Value) -> Invocation {
    testkit::invocation(command, account())
}

pub fn run(command: Value, responses: impl IntoIterator<Item = HttpResponse>) -> FlowRun {
    testkit::run::<Xsolla>(&invocation(command), b"", responses)
}

pub fn run_with(
    invocation: &Invocation,
    responses: impl IntoIterator<Item = HttpResponse>,
) -> FlowRun {
    testkit::run::<Xsolla>(invocation, b"", responses)
}

/// A 200 answer with this exact JSON text (amounts stay as written).
pub fn ok(body: &str) -> HttpResponse {
    HttpResponse::new(200, body).with_header("content-type", "application/json")
}

pub fn answer(status: u16, body: &str) -> HttpResponse {
    HttpResponse::new(status, body)
}

pub fn body_text(request: &HttpRequest) -> String {
    String::from_utf8(request.body.clone()).expect("request body is UTF-8")
}

pub fn header<'a>(request: &'a HttpRequest, name: &str) -> Option<&'a str> {
    request
        .headers
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.as_str())
}

/// Every request carries HTTP Basic `merchant_id:api_key`, marked sensitive.
pub fn assert_basic_auth(request: &HttpRequest) {
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{MERCHANT_ID}:{API_KEY}"))
    );
    assert_eq!(header(request, "authorization"), Some(expected.as_str()));
    assert!(
        request
            .sensitive_headers
            .contains(&"authorization".to_string())
    );
    assert!(!request.url.contains(API_KEY));
}

/// The search element of providers.md (find-transactions sample), amounts as Xsolla writes them.
pub const SEARCH_ELEMENT: &str = r#"{
  "payment_details": {"payment": {"amount": 7.96, "amount_from_ps": 7.96, "currency": "RUB"},
                      "sales_tax": {"amount": 0, "percent": 0}},
  "payment_system": {"decline_reason": null},
  "purchase": {"pin_codes": {"amount": null, "content": null, "currency": null},
               "simple_checkout": {"amount": 7.96, "currency": "RUB"},
               "subscription": {"name": null},
               "virtual_currency": {"amount": 0, "name": null},
               "virtual_items": null},
  "transaction": {"create_date": "2021-10-20", "dry_run": 0, "external_id": "example-external-id",
                  "id": 123456789, "is_refund_allowed": 0,
                  "payment_method": {"id": 1, "name": "PayPal"},
                  "project": {"id": 123456, "name": "Example"},
                  "refund_reason": null, "status": "done", "transfer_date": "2021-10-20"},
  "user": {"country": "RU", "custom": null, "email": "email@example.com", "id": "example-id",
           "name": "Example", "phone": null}
}"#;

/// A transaction record with `status` and the given amount / currency.
pub fn transaction(
    id: u64,
    status: &str,
    amount: &str,
    currency: &str,
    external_id: &str,
) -> String {
    format!(
        r#"{{"transaction": {{"id": {id}, "status": "{status}", "external_id": "{external_id}",
              "create_date": "2026-01-01T10:00:00+00:00", "payment_method": {{"id": 1380, "name": "Credit/Debit Cards"}}}},
             "payment_details": {{"payment": {{"amount": {amount}, "currency": "{currency}"}}}},
             "payment_system": {{"decline_reason": null}},
             "user": {{"id": "user-1"}}}}"#
    )
}
