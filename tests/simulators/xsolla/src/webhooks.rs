//! Signed webhooks the simulator sends: `Authorization: Signature sha1(body + project secret)`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use gatehouse_plugin_api::Money;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha1::{Digest, Sha1};

use crate::wire::{AmountJson, amount_json};
use crate::{Transaction, XsollaSimulator};

/// How a test wants a webhook signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignatureMode {
    Valid,
    /// Signed with another secret.
    Wrong,
    /// No `Authorization` header at all.
    Missing,
}

/// `sha1(body + secret)` in lower-case hex.
pub fn signature(body: &str, secret: &str) -> String {
    let mut hasher = Sha1::new();
    hasher.update(body.as_bytes());
    hasher.update(secret.as_bytes());
    hex::encode(hasher.finalize())
}

pub async fn post_signed(
    url: &str,
    body: &str,
    secret: &str,
    mode: SignatureMode,
) -> Option<(u16, String)> {
    let mut request = reqwest::Client::new()
        .post(url)
        .header("Content-Type", "application/json")
        .body(body.to_string());
    match mode {
        SignatureMode::Valid => {
            request = request.header(
                "Authorization",
                format!("Signature {}", signature(body, secret)),
            );
        }
        SignatureMode::Wrong => {
            request = request.header(
                "Authorization",
                format!("Signature {}", signature(body, "not-the-secret")),
            );
        }
        SignatureMode::Missing => {}
    }
    let response = request.send().await.ok()?;
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    Some((status, text))
}

#[derive(Serialize)]
struct NotificationJson<'a> {
    notification_type: &'static str,
    purchase: PurchaseJson,
    user: UserJson<'a>,
    transaction: TransactionJson<'a>,
    payment_details: PaymentDetailsJson,
    #[serde(skip_serializing_if = "Option::is_none")]
    refund_details: Option<RefundDetailsJson<'a>>,
}

#[derive(Serialize)]
struct PurchaseJson {
    checkout: AmountJson,
    total: AmountJson,
}

#[derive(Serialize)]
struct UserJson<'a> {
    id: &'a str,
}

#[derive(Serialize)]
struct TransactionJson<'a> {
    id: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    external_id: Option<&'a str>,
    payment_date: &'a str,
    payment_method: u64,
    dry_run: u8,
}

#[derive(Serialize)]
struct PaymentDetailsJson {
    payment: AmountJson,
}

/// `code` and `reason` per the refund webhook page; `amount` / `currency` on partial refunds are
/// a GUESS (no captured sample shows where the refunded amount of a partial refund is).
#[derive(Serialize)]
struct RefundDetailsJson<'a> {
    code: u8,
    reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    amount: Option<Box<serde_json::value::RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    currency: Option<&'static str>,
}

fn body_for(
    notification_type: &'static str,
    transaction: &Transaction,
    refund: Option<RefundDetailsJson<'_>>,
) -> String {
    let body = NotificationJson {
        notification_type,
        purchase: PurchaseJson {
            checkout: AmountJson::of(&transaction.amount),
            total: AmountJson::of(&transaction.amount),
        },
        user: UserJson {
            id: &transaction.user_id,
        },
        transaction: TransactionJson {
            id: transaction.id,
            external_id: transaction.external_id.as_deref(),
            payment_date: &transaction.create_date,
            payment_method: 1380,
            dry_run: u8::from(transaction.dry_run),
        },
        payment_details: PaymentDetailsJson {
            payment: AmountJson::of(&transaction.amount),
        },
        refund_details: refund,
    };
    serde_json::to_string(&body).unwrap_or_default()
}

/// The `payment` notification for a completed transaction.
pub fn payment_body(transaction: &Transaction) -> String {
    body_for("payment", transaction, None)
}

/// The `refund` notification (code 1: cancellation by the user or game request; 2: chargeback).
pub fn refund_body(transaction: &Transaction, code: u8, reason: &str) -> String {
    body_for(
        "refund",
        transaction,
        Some(RefundDetailsJson {
            code,
            reason,
            amount: None,
            currency: None,
        }),
    )
}

/// The `partial_refund` notification for `refunded` of the transaction's amount.
pub fn partial_refund_body(transaction: &Transaction, refunded: &Money, reason: &str) -> String {
    body_for(
        "partial_refund",
        transaction,
        Some(RefundDetailsJson {
            code: 1,
            reason,
            amount: Some(amount_json(refunded)),
            currency: Some(refunded.currency.code()),
        }),
    )
}

impl XsollaSimulator {
    pub(crate) async fn notify_payment(&self, transaction: &Transaction) {
        self.notify(payment_body(transaction)).await;
    }

    pub(crate) async fn notify_refund(&self, transaction: &Transaction, code: u8, reason: &str) {
        self.notify(refund_body(transaction, code, reason)).await;
    }

    pub(crate) async fn notify_partial_refund(
        &self,
        transaction: &Transaction,
        refunded: &Money,
        reason: &str,
    ) {
        self.notify(partial_refund_body(transaction, refunded, reason))
            .await;
    }
}

#[derive(Deserialize)]
pub struct WebhookUrl {
    url: Option<String>,
}

pub async fn set_webhook_url_route(
    State(sim): State<XsollaSimulator>,
    Json(body): Json<WebhookUrl>,
) -> StatusCode {
    sim.set_webhook_url(body.url);
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
pub struct SendWebhook {
    /// The exact body to send (a string, so its bytes are what gets signed).
    body: String,
    signature: SignatureMode,
}

/// `POST /_sim/webhooks/send {"body": "...", "signature": "valid" | "wrong" | "missing"}` →
/// `{"status": <receiver's status>, "body": <receiver's body>}`.
pub async fn send_route(
    State(sim): State<XsollaSimulator>,
    Json(request): Json<SendWebhook>,
) -> Response {
    match sim.send_webhook(&request.body, request.signature).await {
        Some((status, body)) => Json(json!({"status": status, "body": body})).into_response(),
        None => (
            StatusCode::BAD_GATEWAY,
            Json(json!({"message": "no webhook URL set, or the receiver is unreachable"})),
        )
            .into_response(),
    }
}
