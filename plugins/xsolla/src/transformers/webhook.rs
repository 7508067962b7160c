//! Xsolla webhooks: the signature check and the notifications the host acts on.
//!
//! [SRC: xsolla-sdk-php `WebhookAuthenticator`, `WebhookResponse`, message tests, via
//! providers.md] `Authorization: Signature <40 lowercase hex>` where the hex is
//! `sha1(raw body bytes + project secret key)`. Success is HTTP 204 with no body; errors are
//! `{"error": {"code": ..., "message": ...}}` with `INVALID_SIGNATURE` 401, `INVALID_PARAMETER`
//! 422, `SERVER_ERROR` 500 and others.

use gatehouse_plugin_api::verify::constant_time_eq;
use gatehouse_plugin_api::{Money, OutcomeStatus, ProviderError, WebhookEvent, WebhookReply};
use serde_json::json;
use serde_json::value::RawValue;
use sha1::{Digest, Sha1};

use crate::transformers::json::{MoneyPath, first_text, get_path, money_at, object, to_value};

/// What the signature header said about a body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignatureCheck {
    Valid,
    Missing,
    /// Present but not `Signature <40 hex>`.
    Malformed,
    Wrong,
}

/// `sha1(body + secret)` in lower-case hex: what Xsolla puts after `Signature `.
pub fn signature_of(body: &[u8], project_secret_key: &str) -> String {
    let mut hasher = Sha1::new();
    hasher.update(body);
    hasher.update(project_secret_key.as_bytes());
    hex::encode(hasher.finalize())
}

/// Checks the `authorization` header (names arrive lower-cased) against the raw body, in
/// constant time.
pub fn check_signature(
    headers: &[(String, String)],
    body: &[u8],
    project_secret_key: &str,
) -> SignatureCheck {
    let Some((_, value)) = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("authorization"))
    else {
        return SignatureCheck::Missing;
    };
    let Some(claimed) = value.trim().strip_prefix("Signature ").map(str::trim) else {
        return SignatureCheck::Malformed;
    };
    if claimed.len() != 40 || !claimed.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        return SignatureCheck::Malformed;
    }
    // The SDK's pattern is lower-case hex; an upper-case rendering of the same digest is the
    // same signature, so compare in lower case.
    let claimed = claimed.to_ascii_lowercase();
    let expected = signature_of(body, project_secret_key);
    if constant_time_eq(claimed.as_bytes(), expected.as_bytes()) {
        SignatureCheck::Valid
    } else {
        SignatureCheck::Wrong
    }
}

/// Xsolla's webhook error answer.
pub fn error_reply(status: u16, code: &str, message: &str) -> WebhookReply {
    WebhookReply::json(
        status,
        &json!({"error": {"code": code, "message": message}}),
    )
}

/// A genuine notification, understood.
#[derive(Debug)]
pub enum Notification {
    /// `payment`, `refund`, `partial_refund`: an event for the ledger.
    Transaction(WebhookEvent),
    /// `user_validation`: the host keeps no user directory, so every user is accepted (204).
    UserValidation,
    /// A documented type the host does not act on (subscriptions, catalog, ...): acknowledged.
    Other(String),
}

/// Why a signed body could not be used: answered `INVALID_PARAMETER` / `INCORRECT_AMOUNT` 422.
#[derive(Debug)]
pub struct Unreadable {
    pub code: &'static str,
    pub error: ProviderError,
}

impl Unreadable {
    fn parameter(message: impl Into<String>) -> Self {
        Self {
            code: "INVALID_PARAMETER",
            error: ProviderError::invalid_request(message),
        }
    }
}

/// Where a notification's amount is read, first match wins: what was bought (what we charged),
/// then the purchase total, then what the user paid.
const AMOUNT_PATHS: &[MoneyPath<'static>] = &[
    MoneyPath {
        amount: &["purchase", "checkout", "amount"],
        currency: &["purchase", "checkout", "currency"],
    },
    MoneyPath {
        amount: &["purchase", "total", "amount"],
        currency: &["purchase", "total", "currency"],
    },
    MoneyPath {
        amount: &["payment_details", "payment", "amount"],
        currency: &["payment_details", "payment", "currency"],
    },
];

/// Parses a body whose signature was verified.
pub fn parse_notification(body: &[u8]) -> Result<Notification, Unreadable> {
    let text = std::str::from_utf8(body)
        .map_err(|_| Unreadable::parameter("the webhook body is not UTF-8 JSON"))?;
    let root: &RawValue = serde_json::from_str(text)
        .map_err(|error| Unreadable::parameter(format!("the webhook body is not JSON: {error}")))?;
    if object(root).is_none() {
        return Err(Unreadable::parameter(
            "the webhook body is not a JSON object",
        ));
    }
    let notification_type = first_text(root, &[&["notification_type"]])
        .ok_or_else(|| Unreadable::parameter("the webhook has no `notification_type`"))?;
    match notification_type.as_str() {
        "payment" | "refund" | "partial_refund" => {
            transaction_event(root, body, &notification_type).map(Notification::Transaction)
        }
        "user_validation" => Ok(Notification::UserValidation),
        _ => Ok(Notification::Other(notification_type)),
    }
}

fn transaction_event(
    root: &RawValue,
    body: &[u8],
    notification_type: &str,
) -> Result<WebhookEvent, Unreadable> {
    let transaction_id = first_text(root, &[&["transaction", "id"]]).ok_or_else(|| {
        Unreadable::parameter(format!(
            "the {notification_type} webhook has no `transaction.id`"
        ))
    })?;
    let incorrect_amount = |error: ProviderError| Unreadable {
        code: "INCORRECT_AMOUNT",
        error,
    };
    let mut amount: Option<Money> = None;
    // Xsolla documents no refunded-amount field in `partial_refund` (xsolla-sdk-php's message
    // test carries only `refund_details: {code, reason}`), and its purchase amounts are the whole
    // purchase's: reporting one would claim the full purchase went back. An amount the provider
    // did not state is left out; the host knows the amount its own refund asked for.
    if notification_type != "partial_refund" {
        for path in AMOUNT_PATHS {
            if amount.is_none() {
                amount = money_at(root, *path, None).map_err(incorrect_amount)?;
            }
        }
    }
    // One payment and one refund per transaction: type and id identify them. A transaction may
    // have several partial refunds, so those also carry a digest of the body (Xsolla resends the
    // same body when it retries, so a replay still gets the same id).
    let event_id = if notification_type == "partial_refund" {
        let digest = signature_of(body, "");
        format!(
            "xsolla:partial_refund:{transaction_id}:{}",
            digest.get(..16).unwrap_or(&digest)
        )
    } else {
        format!("xsolla:{notification_type}:{transaction_id}")
    };
    let test_payment = get_path(root, &["transaction", "dry_run"])
        .map(|raw| !matches!(raw.get().trim(), "0" | "false" | "\"0\"" | "\"\""))
        .unwrap_or(false);
    let mut raw = to_value(root);
    if let Some(members) = raw.as_object_mut() {
        // Made explicit for the host; the body itself is kept as sent.
        members.insert(
            "gatehouse_test_payment".into(),
            serde_json::Value::Bool(test_payment),
        );
    }
    Ok(WebhookEvent {
        event_id,
        event_type: notification_type.to_string(),
        status: OutcomeStatus::Succeeded,
        provider_reference: Some(transaction_id),
        reference: first_text(root, &[&["transaction", "external_id"]]),
        amount,
        verified: true,
        raw,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> Vec<(String, String)> {
        vec![("authorization".into(), value.into())]
    }

    #[test]
    fn signature_is_sha1_of_body_then_secret() {
        // sha1("{}" + "secret") computed independently.
        let expected = {
            let mut hasher = Sha1::new();
            hasher.update(b"{}secret");
            hex::encode(hasher.finalize())
        };
        assert_eq!(signature_of(b"{}", "secret"), expected);
        let good = format!("Signature {expected}");
        assert_eq!(
            check_signature(&headers(&good), b"{}", "secret"),
            SignatureCheck::Valid
        );
        assert_eq!(
            check_signature(
                &headers(&good.to_uppercase().replace("SIGNATURE", "Signature")),
                b"{}",
                "secret"
            ),
            SignatureCheck::Valid
        );
        assert_eq!(
            check_signature(&headers(&good), b"{} ", "secret"),
            SignatureCheck::Wrong
        );
        assert_eq!(
            check_signature(&headers(&good), b"{}", "other"),
            SignatureCheck::Wrong
        );
        assert_eq!(
            check_signature(&[], b"{}", "secret"),
            SignatureCheck::Missing
        );
        assert_eq!(
            check_signature(&headers("Basic abc"), b"{}", "secret"),
            SignatureCheck::Malformed
        );
        assert_eq!(
            check_signature(&headers("Signature xyz"), b"{}", "secret"),
            SignatureCheck::Malformed
        );
    }
}
