//! A PayGateGlobal simulator, following the integration guide (`shared/seeds/004`).
//!
//! Documented behaviour: `auth_token` checked on every API (status 2 when wrong on `pay`), bad
//! parameters refused with status 4, a duplicate `identifier` with status 6, payments registered
//! pending until the test (or `/_sim/...`) settles them as paid, expired or cancelled, both status
//! endpoints, the balance, and the confirmation POSTed to the merchant's callback URL.
//!
//! `/api/v2/status` answers in the shape a real answer published in a PayGateGlobal client library
//! has: `tx_reference` a JSON number, an ISO 8601 `datetime` with milliseconds and `Z`, and the
//! `identifier`, `amount` and `phone_number` beside the documented fields, e.g.
//! `{"tx_reference":4671135,"identifier":"…","amount":10,"payment_reference":"13171916025",
//! "payment_method":"T-Money","datetime":"2025-09-09T13:03:31.000Z","phone_number":"22892104312",
//! "status":0}`. `/api/v1/status` keeps the guide's documented fields (string reference).
//!
//! Not documented, and assumed here (the plugin's README says so too): a wrong token on the
//! status and balance APIs answers HTTP 401, and an unknown transaction HTTP 404, each with a
//! JSON `{"message": ...}`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use gatehouse_sim_common::{RunningSimulator, parse_form_or_json, serve};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Payment states, as the guide's status table numbers them.
pub const PAID: u8 = 0;
pub const PENDING: u8 = 2;
pub const EXPIRED: u8 = 4;
pub const CANCELLED: u8 = 6;

/// When every simulated payment happened, written as the real v2 answer writes dates.
pub const SIMULATED_DATETIME: &str = "2026-01-09T12:30:00.000Z";

#[derive(Clone, Debug, Serialize)]
pub struct Transaction {
    pub tx_reference: String,
    pub identifier: String,
    pub amount: i64,
    pub network: String,
    pub phone_number: String,
    pub status: u8,
    pub payment_reference: String,
    pub datetime: String,
}

#[derive(Default)]
struct Inner {
    transactions: HashMap<String, Transaction>,
    /// `tx_reference` → `identifier`: the v1 status lookup is a map read, not a scan (a
    /// reconciliation backlog of thousands would otherwise be quadratic in the simulator).
    by_tx_reference: HashMap<String, String>,
    /// Status questions asked, by `identifier` (both status APIs): tests count how often
    /// reconciliation asked about each payment.
    status_asked: HashMap<String, usize>,
    next_reference: u64,
    callback_url: Option<String>,
    flooz_balance: i64,
    tmoney_balance: i64,
}

/// The simulator's state, shared by its routes and by the tests that drive it.
#[derive(Clone)]
pub struct PayGateSimulator {
    auth_token: Arc<String>,
    inner: Arc<Mutex<Inner>>,
}

impl PayGateSimulator {
    pub fn new(auth_token: &str) -> Self {
        Self {
            auth_token: Arc::new(auth_token.to_string()),
            inner: Arc::new(Mutex::new(Inner {
                flooz_balance: 150_000,
                tmoney_balance: 42_500,
                ..Inner::default()
            })),
        }
    }

    /// Serves the simulator on an ephemeral loopback port.
    pub async fn start(auth_token: &str) -> std::io::Result<(Self, RunningSimulator)> {
        let simulator = Self::new(auth_token);
        let running = serve(simulator.router()).await?;
        Ok((simulator, running))
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/api/v1/pay", post(pay))
            .route("/v1/page", get(page))
            .route("/api/v1/status", post(status_by_reference))
            .route("/api/v2/status", post(status_by_identifier))
            .route("/api/v1/check-balance", post(check_balance))
            .route("/_sim/callback-url", post(set_callback_url_route))
            .route("/_sim/transactions", get(list_transactions))
            .route("/_sim/transactions/{identifier}/settle", post(settle_route))
            .with_state(self.clone())
    }

    /// Where confirmations are POSTed (the merchant's return URL in the PayGateGlobal dashboard).
    pub fn set_callback_url(&self, url: Option<String>) {
        self.lock().callback_url = url;
    }

    pub fn transaction(&self, identifier: &str) -> Option<Transaction> {
        self.lock().transactions.get(identifier).cloned()
    }

    pub fn transactions(&self) -> Vec<Transaction> {
        self.lock().transactions.values().cloned().collect()
    }

    /// How many status questions (v1 or v2) named each payment, by `identifier`.
    pub fn status_asked(&self) -> HashMap<String, usize> {
        self.lock().status_asked.clone()
    }

    /// Moves a pending payment to `status` (PAID, EXPIRED or CANCELLED), as the customer's phone
    /// would, and POSTs the confirmation to the callback URL when it is paid. Returns false if
    /// there is no pending payment with that identifier.
    pub async fn settle(&self, identifier: &str, status: u8) -> bool {
        let (transaction, callback_url) = {
            let mut inner = self.lock();
            let Some(transaction) = inner.transactions.get_mut(identifier) else {
                return false;
            };
            if transaction.status != PENDING {
                return false;
            }
            transaction.status = status;
            let transaction = transaction.clone();
            if status == PAID {
                if transaction.network == "FLOOZ" {
                    inner.flooz_balance += transaction.amount;
                } else {
                    inner.tmoney_balance += transaction.amount;
                }
            }
            (transaction, inner.callback_url.clone())
        };
        if status == PAID
            && let Some(url) = callback_url
        {
            let body = callback_body(&transaction);
            let _ = reqwest::Client::new().post(url).json(&body).send().await;
        }
        true
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("simulator state lock")
    }

    fn token_ok(&self, fields: &HashMap<String, String>, name: &str) -> bool {
        fields
            .get(name)
            .is_some_and(|token| token == self.auth_token.as_str())
    }
}

/// The `/api/v2/status` answer for a transaction, in the real shape (see the crate docs): the
/// reference as a number, the amount in FCFA, the payer's phone number.
pub fn v2_status_body(transaction: &Transaction) -> Value {
    let tx_reference = transaction
        .tx_reference
        .parse::<u64>()
        .map_or_else(|_| json!(transaction.tx_reference), |number| json!(number));
    json!({
        "tx_reference": tx_reference,
        "identifier": transaction.identifier,
        "amount": transaction.amount,
        "payment_reference": transaction.payment_reference,
        "payment_method": if transaction.network == "FLOOZ" { "FLOOZ" } else { "T-Money" },
        "datetime": transaction.datetime,
        "phone_number": transaction.phone_number,
        "status": transaction.status,
    })
}

/// The documented confirmation message.
pub fn callback_body(transaction: &Transaction) -> Value {
    json!({
        "tx_reference": transaction.tx_reference,
        "identifier": transaction.identifier,
        "payment_reference": transaction.payment_reference,
        "amount": transaction.amount,
        "datetime": transaction.datetime,
        "payment_method": if transaction.network == "FLOOZ" { "FLOOZ" } else { "T-Money" },
        "phone_number": transaction.phone_number,
    })
}

fn fields_of(headers: &HeaderMap, body: &[u8]) -> Option<HashMap<String, String>> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok());
    parse_form_or_json(content_type, body).map(|pairs| pairs.into_iter().collect())
}

async fn pay(State(sim): State<PayGateSimulator>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(fields) = fields_of(&headers, &body) else {
        return Json(json!({"status": 4})).into_response();
    };
    if !sim.token_ok(&fields, "auth_token") {
        return Json(json!({"status": 2})).into_response();
    }
    let phone = fields.get("phone_number").cloned().unwrap_or_default();
    let amount = fields
        .get("amount")
        .and_then(|amount| amount.parse::<i64>().ok());
    let identifier = fields.get("identifier").cloned().unwrap_or_default();
    let network = fields.get("network").cloned().unwrap_or_default();
    let phone_ok = (8..=15).contains(&phone.len()) && phone.bytes().all(|b| b.is_ascii_digit());
    let (Some(amount), true, false, true) = (
        amount.filter(|amount| *amount > 0),
        phone_ok,
        identifier.is_empty(),
        matches!(network.as_str(), "FLOOZ" | "TMONEY"),
    ) else {
        return Json(json!({"status": 4})).into_response();
    };
    let mut inner = sim.lock();
    if inner.transactions.contains_key(&identifier) {
        return Json(json!({"status": 6})).into_response();
    }
    inner.next_reference += 1;
    let tx_reference = format!("{}", 1_000_000 + inner.next_reference);
    let transaction = Transaction {
        tx_reference: tx_reference.clone(),
        identifier: identifier.clone(),
        amount,
        payment_reference: format!("{network}-{}", inner.next_reference),
        network,
        phone_number: phone,
        status: PENDING,
        datetime: SIMULATED_DATETIME.into(),
    };
    inner
        .by_tx_reference
        .insert(tx_reference.clone(), identifier.clone());
    inner.transactions.insert(identifier, transaction);
    Json(json!({"tx_reference": tx_reference, "status": 0})).into_response()
}

#[derive(Deserialize)]
struct PageQuery {
    token: Option<String>,
    amount: Option<String>,
    identifier: Option<String>,
}

/// Method 2: the hosted page. It registers the payment as pending, as the real page does once
/// the customer starts paying.
async fn page(State(sim): State<PayGateSimulator>, Query(query): Query<PageQuery>) -> Response {
    if query.token.as_deref() != Some(sim.auth_token.as_str()) {
        return (StatusCode::UNAUTHORIZED, Html("<p>Jeton invalide</p>")).into_response();
    }
    let (Some(amount), Some(identifier)) = (
        query
            .amount
            .and_then(|amount| amount.parse::<i64>().ok())
            .filter(|a| *a > 0),
        query.identifier.filter(|identifier| !identifier.is_empty()),
    ) else {
        return (StatusCode::BAD_REQUEST, Html("<p>Paramètres invalides</p>")).into_response();
    };
    let mut inner = sim.lock();
    if !inner.transactions.contains_key(&identifier) {
        inner.next_reference += 1;
        let tx_reference = format!("{}", 1_000_000 + inner.next_reference);
        let payment_reference = format!("PAGE-{}", inner.next_reference);
        inner
            .by_tx_reference
            .insert(tx_reference.clone(), identifier.clone());
        inner.transactions.insert(
            identifier.clone(),
            Transaction {
                tx_reference,
                identifier: identifier.clone(),
                amount,
                network: "FLOOZ".into(),
                phone_number: "22890000000".into(),
                status: PENDING,
                payment_reference,
                datetime: SIMULATED_DATETIME.into(),
            },
        );
    }
    Html(format!("<html><body><h1>PayGateGlobal</h1><p>Paiement {identifier}: {amount} FCFA</p></body></html>")).into_response()
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({"message": "invalid auth_token"})),
    )
        .into_response()
}

fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"message": "transaction not found"})),
    )
        .into_response()
}

async fn status_by_reference(
    State(sim): State<PayGateSimulator>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(fields) = fields_of(&headers, &body) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"message": "bad request"})),
        )
            .into_response();
    };
    if !sim.token_ok(&fields, "auth_token") {
        return unauthorized();
    }
    let Some(tx_reference) = fields.get("tx_reference") else {
        return not_found();
    };
    let mut inner = sim.lock();
    let Some(identifier) = inner.by_tx_reference.get(tx_reference).cloned() else {
        return not_found();
    };
    *inner.status_asked.entry(identifier.clone()).or_default() += 1;
    match inner.transactions.get(&identifier) {
        Some(tx) => Json(json!({
            "tx_reference": tx.tx_reference, "identifier": tx.identifier,
            "payment_reference": tx.payment_reference, "status": tx.status,
            "datetime": tx.datetime, "payment_method": if tx.network == "FLOOZ" { "FLOOZ" } else { "T-Money" },
        }))
        .into_response(),
        None => not_found(),
    }
}

async fn status_by_identifier(
    State(sim): State<PayGateSimulator>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(fields) = fields_of(&headers, &body) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"message": "bad request"})),
        )
            .into_response();
    };
    if !sim.token_ok(&fields, "auth_token") {
        return unauthorized();
    }
    let Some(identifier) = fields.get("identifier") else {
        return not_found();
    };
    let mut inner = sim.lock();
    *inner.status_asked.entry(identifier.clone()).or_default() += 1;
    match inner.transactions.get(identifier) {
        Some(tx) => Json(v2_status_body(tx)).into_response(),
        None => not_found(),
    }
}

async fn check_balance(
    State(sim): State<PayGateSimulator>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(fields) = fields_of(&headers, &body) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"message": "bad request"})),
        )
            .into_response();
    };
    if !sim.token_ok(&fields, "auth_token") {
        return unauthorized();
    }
    let inner = sim.lock();
    Json(json!({"flooz": inner.flooz_balance, "tmoney": inner.tmoney_balance})).into_response()
}

#[derive(Deserialize)]
struct CallbackUrl {
    url: Option<String>,
}

async fn set_callback_url_route(
    State(sim): State<PayGateSimulator>,
    Json(body): Json<CallbackUrl>,
) -> StatusCode {
    sim.set_callback_url(body.url);
    StatusCode::NO_CONTENT
}

async fn list_transactions(State(sim): State<PayGateSimulator>) -> Json<Vec<Transaction>> {
    Json(sim.transactions())
}

#[derive(Deserialize)]
struct Settle {
    status: u8,
}

async fn settle_route(
    State(sim): State<PayGateSimulator>,
    Path(identifier): Path<String>,
    Json(body): Json<Settle>,
) -> StatusCode {
    if ![PAID, EXPIRED, CANCELLED].contains(&body.status) {
        return StatusCode::UNPROCESSABLE_ENTITY;
    }
    if sim.settle(&identifier, body.status).await {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_FOUND
    }
}
