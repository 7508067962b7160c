//! Xsolla's error answers, mapped to normalized errors in one place.
//!
//! Documented: HTTP 422 with a JSON body whose `extended_message` names the parameters that were
//! wrong (create-token page), refund / partial refund / chargeback errors as `{"message": ...}`,
//! 401, 403, 404. Not confirmed by any source (providers.md, GUESS): the exact shape of
//! `extended_message` and the `http_status_code` / `request_id` keys. The reader below is
//! therefore tolerant: `extended_message` may be a string, an object of
//! `{"property_errors": {field: [texts]}, "global_errors": [...]}`, a plain object keyed by field,
//! or an array of field names or `{"property": ...}` objects.

use gatehouse_plugin_api::error::truncate;
use gatehouse_plugin_api::{ErrorKind, HttpResponse, ProviderError};
use serde_json::Value;

/// The API call an error answered, so the same HTTP status can mean what that call documents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    CreateToken,
    SavedAccounts,
    DeleteSavedAccount,
    Charge,
    Refund,
    PartialRefund,
    Report,
    TransactionDetails,
    SearchByExternalId,
    Chargeback,
}

impl Call {
    pub fn describe(self) -> &'static str {
        match self {
            Self::CreateToken => "create-token",
            Self::SavedAccounts => "saved-accounts",
            Self::DeleteSavedAccount => "delete-saved-account",
            Self::Charge => "charge-with-saved-account",
            Self::Refund => "refund",
            Self::PartialRefund => "partial-refund",
            Self::Report => "report",
            Self::TransactionDetails => "transaction-details",
            Self::SearchByExternalId => "search-by-external-id",
            Self::Chargeback => "chargeback",
        }
    }

    /// Calls whose 422 without named parameters is a business refusal (the refund and chargeback
    /// pages list only "status does not allow", "amount exceeds", ... for 422).
    fn refusal_on_422(self) -> bool {
        matches!(self, Self::Refund | Self::PartialRefund | Self::Chargeback)
    }
}

/// What an error body said, as far as it could be read.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ErrorBody {
    pub code: Option<String>,
    pub message: Option<String>,
    /// Parameters `extended_message` names.
    pub fields: Vec<String>,
    /// The texts `extended_message` gives for them, flattened.
    pub details: Vec<String>,
}

/// Maps a non-2xx answer of `call`. The message names the call and the status only: the
/// provider's text goes to `provider_message`, bounded, and no request data is echoed.
pub fn http_error(call: Call, response: &HttpResponse) -> ProviderError {
    let body = read_error_body(&response.body);
    let status = response.status;
    // The refund and chargeback pages document 422 for business refusals; every other status
    // reads the common way.
    let kind = match status {
        422 if body.fields.is_empty() && call.refusal_on_422() => ErrorKind::Declined,
        other => ErrorKind::for_http_status(other),
    };
    let mut message = format!(
        "Xsolla answered the {} request with HTTP {status}",
        call.describe()
    );
    if !body.fields.is_empty() {
        message.push_str(&format!("; wrong parameters: {}", body.fields.join(", ")));
    }
    let mut error = ProviderError::new(kind, truncate(&message))
        .with_provider_code(body.code.clone().unwrap_or_else(|| status.to_string()));
    let mut provider_text = body.message.clone().unwrap_or_default();
    if !body.details.is_empty() {
        if !provider_text.is_empty() {
            provider_text.push_str(" — ");
        }
        provider_text.push_str(&body.details.join("; "));
    }
    if provider_text.is_empty() {
        provider_text = String::from_utf8_lossy(&response.body).trim().to_string();
    }
    if !provider_text.is_empty() {
        error = error.with_provider_message(provider_text);
    }
    for field in body.fields {
        error = error.with_field(field);
    }
    error
}

/// Reads whatever error document Xsolla sent; anything unreadable gives an empty result.
pub fn read_error_body(body: &[u8]) -> ErrorBody {
    let Ok(Value::Object(document)) = serde_json::from_slice::<Value>(body) else {
        return ErrorBody::default();
    };
    let mut result = ErrorBody::default();
    // `{"error": {"code", "message"}}` is the webhook error shape; accepted here too.
    let nested = document.get("error").and_then(Value::as_object);
    result.code = nested
        .and_then(|error| error.get("code"))
        .or_else(|| document.get("code"))
        .and_then(text_of);
    result.message = nested
        .and_then(|error| error.get("message"))
        .or_else(|| document.get("message"))
        .and_then(text_of);
    if let Some(extended) = document.get("extended_message") {
        read_extended_message(extended, &mut result);
    }
    result.fields.truncate(32);
    result
        .fields
        .iter_mut()
        .for_each(|field| *field = truncate_field(field));
    result.details.truncate(32);
    result
}

fn read_extended_message(extended: &Value, result: &mut ErrorBody) {
    match extended {
        Value::String(text) => result.details.push(text.clone()),
        Value::Object(members) => {
            if let Some(Value::Object(property_errors)) = members.get("property_errors") {
                collect_keyed(property_errors, result);
            } else {
                let keyed: serde_json::Map<String, Value> = members
                    .iter()
                    .filter(|(key, _)| key.as_str() != "global_errors")
                    .map(|(key, value)| (key.clone(), value.clone()))
                    .collect();
                collect_keyed(&keyed, result);
            }
            if let Some(Value::Array(global)) = members.get("global_errors") {
                result.details.extend(global.iter().filter_map(text_of));
            }
        }
        Value::Array(items) => {
            for item in items {
                match item {
                    Value::String(name) => result.fields.push(name.clone()),
                    Value::Object(entry) => {
                        let name = ["property", "field", "parameter", "name"]
                            .iter()
                            .find_map(|key| entry.get(*key).and_then(text_of));
                        if let Some(name) = name {
                            result.fields.push(name);
                        }
                        if let Some(text) = entry.get("message").and_then(text_of) {
                            result.details.push(text);
                        }
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
}

fn collect_keyed(members: &serde_json::Map<String, Value>, result: &mut ErrorBody) {
    for (field, texts) in members {
        result.fields.push(field.clone());
        match texts {
            Value::Array(items) => result.details.extend(
                items
                    .iter()
                    .filter_map(text_of)
                    .map(|text| format!("{field}: {text}")),
            ),
            other => {
                if let Some(text) = text_of(other) {
                    result.details.push(format!("{field}: {text}"));
                }
            }
        }
    }
}

fn text_of(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

fn truncate_field(field: &str) -> String {
    field.chars().take(128).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_property_errors_and_plain_keyed_objects() {
        let body = br#"{"http_status_code":422,"message":"Unprocessable Entity",
            "extended_message":{"global_errors":["bad"],"property_errors":{"user.id.value":["must not be blank"],"settings.currency":["unknown"]}},
            "request_id":"r1"}"#;
        let read = read_error_body(body);
        assert_eq!(read.fields, vec!["settings.currency", "user.id.value"]);
        assert_eq!(read.message.as_deref(), Some("Unprocessable Entity"));
        assert!(read.details.contains(&"bad".to_string()));

        let read = read_error_body(br#"{"extended_message":{"user.email.value":"too long"}}"#);
        assert_eq!(read.fields, vec!["user.email.value"]);
        let read = read_error_body(
            br#"{"extended_message":["user.ip",{"property":"settings.currency","message":"x"}]}"#,
        );
        assert_eq!(read.fields, vec!["user.ip", "settings.currency"]);
        assert_eq!(read_error_body(b"<html>"), ErrorBody::default());
    }

    #[test]
    fn kinds_follow_the_status_and_the_call() {
        let with_fields = HttpResponse::new(
            422,
            r#"{"message":"x","extended_message":{"property_errors":{"a":["b"]}}}"#,
        );
        let refusal = HttpResponse::new(
            422,
            r#"{"message":"Requested partial refund amount exceeds payment amount."}"#,
        );
        assert_eq!(
            http_error(Call::CreateToken, &with_fields).kind,
            ErrorKind::InvalidRequest
        );
        assert_eq!(
            http_error(Call::CreateToken, &with_fields).fields,
            vec!["a"]
        );
        assert_eq!(
            http_error(Call::PartialRefund, &refusal).kind,
            ErrorKind::Declined
        );
        assert_eq!(
            http_error(Call::CreateToken, &refusal).kind,
            ErrorKind::InvalidRequest
        );
        for (status, kind) in [
            (401, ErrorKind::Authentication),
            (403, ErrorKind::Authentication),
            (404, ErrorKind::NotFound),
            (429, ErrorKind::RateLimited),
            (500, ErrorKind::ProviderUnavailable),
            (503, ErrorKind::ProviderUnavailable),
            (302, ErrorKind::MalformedResponse),
        ] {
            assert_eq!(
                http_error(Call::Report, &HttpResponse::new(status, "")).kind,
                kind,
                "{status}"
            );
        }
    }
}
