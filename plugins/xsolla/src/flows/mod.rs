//! The flows: one module per group of calls in the Pay Station document. Each `start` checks the
//! command and builds the request (or refuses before any I/O); each `finish` reads the answer.

pub mod chargeback;
pub mod payment_page;
pub mod refund;
pub mod reports;
pub mod status;
pub mod tokenization;
pub mod webhook;

use gatehouse_plugin_api::{Extra, HttpRequest, HttpResponse, Outcome, ProviderError};
use serde_json::Value;

use crate::transformers::errors::{Call, http_error};

/// What a flow's `start` gives back: the one request to send, and what its `finish` will need to
/// read the answer (the integration in `lib.rs` keeps it in its flow state).
pub type Started<T> = Result<(HttpRequest, T), ProviderError>;

/// A provider-specific field that must be a JSON object when present.
pub fn extra_object<'a>(extra: &'a Extra, name: &str) -> Result<Option<&'a Value>, ProviderError> {
    match extra.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(value @ Value::Object(_)) => Ok(Some(value)),
        Some(_) => Err(ProviderError::invalid_request(format!(
            "extra `{name}` must be a JSON object"
        ))
        .with_field(format!("extra.{name}"))),
    }
}

/// A provider-specific field that must be a string when present.
pub fn extra_string<'a>(extra: &'a Extra, name: &str) -> Result<Option<&'a str>, ProviderError> {
    match extra.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.as_str())),
        Some(_) => Err(
            ProviderError::invalid_request(format!("extra `{name}` must be a string"))
                .with_field(format!("extra.{name}")),
        ),
    }
}

/// A provider-specific field that must be an integer (a JSON integer or a string of digits).
pub fn extra_integer(extra: &Extra, name: &str) -> Result<Option<i64>, ProviderError> {
    let refuse = || {
        ProviderError::invalid_request(format!("extra `{name}` must be an integer"))
            .with_field(format!("extra.{name}"))
    };
    match extra.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(number)) => number.as_i64().map(Some).ok_or_else(refuse),
        Some(Value::String(text)) => text.trim().parse().map(Some).map_err(|_| refuse()),
        Some(_) => Err(refuse()),
    }
}

/// A command field that must be present and non-empty.
pub fn required<'a>(
    value: Option<&'a str>,
    field: &str,
    why: &str,
) -> Result<&'a str, ProviderError> {
    value
        .map(str::trim)
        .filter(|value| !value.is_empty())
        .ok_or_else(|| ProviderError::invalid_request(why.to_string()).with_field(field))
}

/// The outcome of a money-moving request that got a non-2xx answer: a server error (or a
/// timeout the server reported) may hide a completed operation, so it is `unknown`; a 4xx means
/// Xsolla refused it and nothing happened, so it is `failed`.
pub fn money_outcome_for_http_error(call: Call, response: &HttpResponse) -> Outcome {
    let error = http_error(call, response);
    if response.status >= 500 || response.status == 408 || response.status < 400 {
        Outcome::unknown(error)
    } else {
        Outcome::failed(error)
    }
}
