//! The merchant API routes and the `/_sim` control routes.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use base64::Engine;
use gatehouse_plugin_api::{Currency, Money};
use serde::{Deserialize, Serialize};
use serde_json::json;
use serde_json::value::RawValue;

use crate::wire::{
    AmountJson, Body, Problems, amount_at, amount_json, currency_at, date_part, iso_datetime,
    message, now_unix,
};
use crate::{TokenRecord, Transaction, XsollaSimulator};

/// The saved-account types the charge page documents.
const ACCOUNT_TYPES: &[&str] = &[
    "card",
    "amazon",
    "skrill",
    "paypal",
    "toss",
    "alipayplus_cn",
    "alipayplus_hk",
    "alipayplus_gcash",
    "alipayplus_dana",
    "alipayplus_rabbitlinepay",
    "alipayplus_tng",
    "alipayplus_boost",
    "alipayplus_truemoney",
    "alipayplus_maya",
    "alipayplus_kplus",
    "softbank_paypay",
    "softbank_docomo",
    "softbank_softbank2",
    "softbank_au",
    "softbank_ymobile",
    "paysafecard_eu",
    "paysafecard_us",
    "paidy",
    "klarna",
    "mercadopago",
    "nupay",
];

/// The statuses the search page documents.
const STATUSES: &[&str] = &[
    "created",
    "processing",
    "done",
    "canceled",
    "error",
    "review",
    "refunded",
    "awaitingRefund",
];

type Rejection = Box<Response>;

impl XsollaSimulator {
    /// HTTP Basic `merchant_id:api_key` [SEED]; anything else is 401.
    fn authenticate(&self, headers: &HeaderMap) -> Result<(), Rejection> {
        let expected = format!(
            "{}:{}",
            self.credentials.merchant_id, self.credentials.api_key
        );
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Basic "))
            .and_then(|encoded| {
                base64::engine::general_purpose::STANDARD
                    .decode(encoded.trim())
                    .ok()
            });
        if given.as_deref() == Some(expected.as_bytes()) {
            Ok(())
        } else {
            Err(Box::new(message(
                StatusCode::UNAUTHORIZED,
                "Unauthorized: wrong merchant_id or api_key.",
            )))
        }
    }

    fn check_merchant(&self, merchant_id: &str) -> Result<(), Rejection> {
        if merchant_id.parse::<u64>().ok() == Some(self.credentials.merchant_id) {
            Ok(())
        } else {
            Err(Box::new(message(
                StatusCode::FORBIDDEN,
                "Access denied: the API key is not valid for this merchant.",
            )))
        }
    }

    fn check_project(&self, project_id: &str) -> Result<(), Rejection> {
        if project_id.parse::<u64>().ok() == Some(self.credentials.project_id) {
            Ok(())
        } else {
            Err(Box::new(message(
                StatusCode::FORBIDDEN,
                "Access denied: the API key is not valid for this project.",
            )))
        }
    }

    fn merchant_call(&self, headers: &HeaderMap, merchant_id: &str) -> Result<(), Rejection> {
        self.authenticate(headers)?;
        self.check_merchant(merchant_id)
    }

    fn project_call(&self, headers: &HeaderMap, project_id: &str) -> Result<(), Rejection> {
        self.authenticate(headers)?;
        self.check_project(project_id)
    }
}

fn unwrap_rejection(result: Result<Response, Rejection>) -> Response {
    result.unwrap_or_else(|rejection| *rejection)
}

fn unreadable_body() -> Response {
    let mut problems = Problems::default();
    problems.add("body", "The request body must be a JSON object.");
    problems.into_response()
}

// ---------------------------------------------------------------------------------------------
// Token

pub async fn create_token(
    State(sim): State<XsollaSimulator>,
    Path(merchant_id): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    unwrap_rejection(create_token_inner(&sim, &merchant_id, &headers, &bytes))
}

fn create_token_inner(
    sim: &XsollaSimulator,
    merchant_id: &str,
    headers: &HeaderMap,
    bytes: &[u8],
) -> Result<Response, Rejection> {
    sim.merchant_call(headers, merchant_id)?;
    let Some(body) = Body::parse(bytes) else {
        return Ok(unreadable_body());
    };
    let mut problems = Problems::default();
    let user_id = body
        .string(&["user", "id", "value"])
        .filter(|id| !id.trim().is_empty());
    if user_id.is_none() {
        problems.add("user.id.value", "This value should not be blank.");
    }
    if let Some(email) = body.string(&["user", "email", "value"])
        && (email.chars().count() > 100 || !email.contains('@'))
    {
        problems.add(
            "user.email.value",
            "This value is not a valid email address.",
        );
    }
    if let Some(country) = body.string(&["user", "country", "value"])
        && !(country.len() == 2 && country.bytes().all(|byte| byte.is_ascii_uppercase()))
    {
        problems.add("user.country.value", "This value is not a valid country.");
    }
    match body.integer(&["settings", "project_id"]) {
        Some(project) if u64::try_from(project).ok() == Some(sim.credentials.project_id) => {}
        Some(_) => problems.add(
            "settings.project_id",
            "The project does not belong to this merchant.",
        ),
        None => problems.add("settings.project_id", "This value should be an integer."),
    }
    let currency = currency_at(&body, &["settings", "currency"], &mut problems);
    if let Some(language) = body.string(&["settings", "language"])
        && !(language.len() == 2 && language.bytes().all(|byte| byte.is_ascii_lowercase()))
    {
        problems.add("settings.language", "This value is not a valid language.");
    }
    let mode = body.string(&["settings", "mode"]);
    if mode.as_deref().is_some_and(|mode| mode != "sandbox") {
        problems.add("settings.mode", "The value should be \"sandbox\".");
    }
    if body.is_non_string(&["settings", "external_id"]) {
        problems.add(
            "settings.external_id",
            "This value should be of type string.",
        );
    }
    let checkout_currency =
        currency_at(&body, &["purchase", "checkout", "currency"], &mut problems);
    if checkout_currency.is_some() && currency.is_some() && checkout_currency != currency {
        problems.add(
            "purchase.checkout.currency",
            "The purchase currency must be the settings currency.",
        );
    }
    let amount = amount_at(
        &body,
        &["purchase", "checkout", "amount"],
        checkout_currency,
        &mut problems,
    );
    if body
        .raw(&["custom_parameters"])
        .is_some_and(|raw| !raw.get().trim_start().starts_with('{'))
    {
        problems.add("custom_parameters", "This value should be an object.");
    }
    let (Some(user_id), Some(amount), true) = (user_id, amount, problems.is_empty()) else {
        return Ok(problems.into_response());
    };
    let id = sim.next_id();
    let token = format!(
        "simtok{id}x{}",
        &crate::webhooks::signature(&id.to_string(), &sim.credentials.api_key)[..24]
    );
    sim.lock().tokens.insert(
        token.clone(),
        TokenRecord {
            token: token.clone(),
            user_id,
            amount,
            external_id: body.string(&["settings", "external_id"]),
            sandbox: mode.is_some(),
        },
    );
    Ok(Json(json!({ "token": token })).into_response())
}

#[derive(Deserialize)]
pub struct PageQuery {
    token: Option<String>,
}

/// The payment UI the token opens (`/paystation4/?token=...`).
pub async fn paystation_page(
    State(sim): State<XsollaSimulator>,
    Query(query): Query<PageQuery>,
) -> Response {
    match query.token.as_deref().and_then(|token| sim.token(token)) {
        Some(record) => Html(format!(
            "<html><body><h1>Xsolla Pay Station (simulator)</h1><p>Pay {} for user {}</p></body></html>",
            record.amount, record.user_id
        ))
        .into_response(),
        None => (StatusCode::NOT_FOUND, Html("<html><body>Token not found or expired.</body></html>")).into_response(),
    }
}

// ---------------------------------------------------------------------------------------------
// Saved accounts

#[derive(Serialize)]
struct SavedAccountJson<'a> {
    id: u64,
    name: &'a str,
    #[serde(rename = "type")]
    account_type: &'a str,
    payment_system: PaymentSystemJson,
}

#[derive(Serialize)]
struct PaymentSystemJson {
    id: u64,
    name: &'static str,
}

fn payment_system_of(account_type: &str) -> PaymentSystemJson {
    match account_type {
        "paypal" => PaymentSystemJson {
            id: 24,
            name: "PayPal",
        },
        _ => PaymentSystemJson {
            id: 1380,
            name: "Credit/Debit Cards",
        },
    }
}

pub async fn list_saved_accounts(
    State(sim): State<XsollaSimulator>,
    Path((project_id, user_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(rejection) = sim.project_call(&headers, &project_id) {
        return *rejection;
    }
    let accounts = sim.saved_accounts(&user_id);
    let listed: Vec<SavedAccountJson<'_>> = accounts
        .iter()
        .map(|account| SavedAccountJson {
            id: account.id,
            name: &account.name,
            account_type: &account.account_type,
            payment_system: payment_system_of(&account.account_type),
        })
        .collect();
    Json(listed).into_response()
}

fn check_account_path(account_type: &str, account_id: &str) -> Result<u64, Rejection> {
    let mut problems = Problems::default();
    if !ACCOUNT_TYPES.contains(&account_type) {
        problems.add("type", "The value you selected is not a valid choice.");
    }
    let id = account_id.parse::<u64>().ok();
    if id.is_none() {
        problems.add("account_id", "This value should be an integer.");
    }
    match id {
        Some(id) if problems.is_empty() => Ok(id),
        _ => Err(Box::new(problems.into_response())),
    }
}

pub async fn delete_saved_account(
    State(sim): State<XsollaSimulator>,
    Path((project_id, user_id, account_type, account_id)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Response {
    unwrap_rejection((|| {
        sim.project_call(&headers, &project_id)?;
        let id = check_account_path(&account_type, &account_id)?;
        let mut inner = sim.lock();
        let accounts = inner.saved_accounts.entry(user_id).or_default();
        let before = accounts.len();
        accounts.retain(|account| !(account.id == id && account.account_type == account_type));
        if accounts.len() == before {
            return Ok(message(StatusCode::NOT_FOUND, "Payment account not found."));
        }
        Ok(StatusCode::NO_CONTENT.into_response())
    })())
}

pub async fn charge_saved_account(
    State(sim): State<XsollaSimulator>,
    Path((project_id, user_id, account_type, account_id)): Path<(String, String, String, String)>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    let result = charge_inner(
        &sim,
        &project_id,
        &user_id,
        &account_type,
        &account_id,
        &headers,
        &bytes,
    );
    match result {
        Ok((response, Some(transaction))) => {
            let notifier = sim.clone();
            // Sent after answering, as Xsolla does: the webhook does not hold up the charge.
            tokio::spawn(async move { notifier.notify_payment(&transaction).await });
            response
        }
        Ok((response, None)) => response,
        Err(rejection) => *rejection,
    }
}

fn charge_inner(
    sim: &XsollaSimulator,
    project_id: &str,
    user_id: &str,
    account_type: &str,
    account_id: &str,
    headers: &HeaderMap,
    bytes: &[u8],
) -> Result<(Response, Option<Transaction>), Rejection> {
    sim.project_call(headers, project_id)?;
    let id = check_account_path(account_type, account_id)?;
    let saved = sim
        .saved_accounts(user_id)
        .into_iter()
        .any(|account| account.id == id && account.account_type == account_type);
    if !saved {
        return Ok((
            message(StatusCode::NOT_FOUND, "Payment account not found."),
            None,
        ));
    }
    let Some(body) = Body::parse(bytes) else {
        return Ok((unreadable_body(), None));
    };
    let mut problems = Problems::default();
    if body
        .string(&["user", "ip"])
        .is_none_or(|ip| ip.trim().is_empty())
    {
        problems.add("user.ip", "This value should not be blank.");
    }
    let currency = currency_at(&body, &["settings", "currency"], &mut problems);
    let checkout_currency =
        currency_at(&body, &["purchase", "checkout", "currency"], &mut problems);
    if checkout_currency.is_some() && currency.is_some() && checkout_currency != currency {
        problems.add(
            "purchase.checkout.currency",
            "The purchase currency must be the settings currency.",
        );
    }
    let amount = amount_at(
        &body,
        &["purchase", "checkout", "amount"],
        checkout_currency,
        &mut problems,
    );
    if body.is_non_string(&["settings", "external_id"]) {
        problems.add(
            "settings.external_id",
            "This value should be of type string.",
        );
    }
    let mode = body.string(&["settings", "mode"]);
    if mode.as_deref().is_some_and(|mode| mode != "sandbox") {
        problems.add("settings.mode", "The value should be \"sandbox\".");
    }
    if body.raw(&["settings", "mock_code"]).is_some() {
        if body.integer(&["settings", "mock_code"]).is_none() {
            problems.add("settings.mock_code", "This value should be an integer.");
        } else if mode.is_none() {
            problems.add(
                "settings.mock_code",
                "Mock codes work in sandbox mode only.",
            );
        }
    }
    let (Some(amount), true) = (amount, problems.is_empty()) else {
        return Ok((problems.into_response(), None));
    };
    let transaction_id = sim.next_id();
    let status = sim
        .lock()
        .next_charge_status
        .take()
        .unwrap_or_else(|| "done".into());
    let transaction = Transaction {
        id: transaction_id,
        external_id: body.string(&["settings", "external_id"]),
        user_id: user_id.to_string(),
        project_id: sim.credentials.project_id,
        amount,
        status: status.clone(),
        dry_run: mode.is_some(),
        payment_method: account_type.to_string(),
        partially_refunded_minor_units: 0,
        refund_reason: None,
        create_date: iso_datetime(now_unix()),
    };
    sim.record_transaction(transaction.clone());
    let response = Json(json!({ "transaction_id": transaction_id })).into_response();
    Ok((response, (status == "done").then_some(transaction)))
}

// ---------------------------------------------------------------------------------------------
// Reports

#[derive(Serialize)]
struct TransactionRecordJson<'a> {
    payment_details: PaymentDetailsJson,
    payment_system: DeclineJson,
    purchase: RecordPurchaseJson,
    transaction: RecordTransactionJson<'a>,
    user: RecordUserJson<'a>,
}

#[derive(Serialize)]
struct PaymentDetailsJson {
    payment: PaymentJson,
    sales_tax: SalesTaxJson,
}

#[derive(Serialize)]
struct PaymentJson {
    amount: Box<RawValue>,
    amount_from_ps: Box<RawValue>,
    currency: &'static str,
}

#[derive(Serialize)]
struct SalesTaxJson {
    amount: Box<RawValue>,
    percent: u8,
}

#[derive(Serialize)]
struct DeclineJson {
    decline_reason: Option<&'static str>,
}

#[derive(Serialize)]
struct RecordPurchaseJson {
    checkout: AmountJson,
    simple_checkout: AmountJson,
}

#[derive(Serialize)]
struct RecordTransactionJson<'a> {
    create_date: &'a str,
    dry_run: u8,
    external_id: Option<&'a str>,
    id: u64,
    is_refund_allowed: u8,
    payment_method: PaymentSystemJson,
    project: ProjectJson,
    refund_reason: Option<&'a str>,
    status: &'a str,
    transfer_date: &'a str,
    /// Not in the documented sample: what has been partially refunded so far (simulator only).
    refunded_amount: Box<RawValue>,
}

#[derive(Serialize)]
struct ProjectJson {
    id: u64,
    name: &'static str,
}

#[derive(Serialize)]
struct RecordUserJson<'a> {
    id: &'a str,
    country: Option<&'a str>,
    email: Option<&'a str>,
    name: Option<&'a str>,
    phone: Option<&'a str>,
}

fn record_json(transaction: &Transaction) -> TransactionRecordJson<'_> {
    let zero = Money::new(0, transaction.amount.currency);
    let refunded = Money::new(
        transaction.partially_refunded_minor_units,
        transaction.amount.currency,
    );
    TransactionRecordJson {
        payment_details: PaymentDetailsJson {
            payment: PaymentJson {
                amount: amount_json(&transaction.amount),
                amount_from_ps: amount_json(&transaction.amount),
                currency: transaction.amount.currency.code(),
            },
            sales_tax: SalesTaxJson {
                amount: amount_json(&zero),
                percent: 0,
            },
        },
        payment_system: DeclineJson {
            decline_reason: (transaction.status == "error")
                .then_some("Payment declined by the payment system"),
        },
        purchase: RecordPurchaseJson {
            checkout: AmountJson::of(&transaction.amount),
            simple_checkout: AmountJson::of(&transaction.amount),
        },
        transaction: RecordTransactionJson {
            create_date: &transaction.create_date,
            dry_run: u8::from(transaction.dry_run),
            external_id: transaction.external_id.as_deref(),
            id: transaction.id,
            is_refund_allowed: u8::from(transaction.status == "done"),
            payment_method: payment_system_of(&transaction.payment_method),
            project: ProjectJson {
                id: transaction.project_id,
                name: "Simulated project",
            },
            refund_reason: transaction.refund_reason.as_deref(),
            status: &transaction.status,
            transfer_date: &transaction.create_date,
            refunded_amount: amount_json(&refunded),
        },
        user: RecordUserJson {
            id: &transaction.user_id,
            country: None,
            email: None,
            name: None,
            phone: None,
        },
    }
}

type QueryMap = BTreeMap<String, String>;

fn require_period(query: &QueryMap, problems: &mut Problems) {
    for key in ["datetime_from", "datetime_to"] {
        if query.get(key).is_none_or(|value| value.trim().is_empty()) {
            problems.add(key, "This value should not be blank.");
        }
    }
}

fn in_period(date: &str, query: &QueryMap) -> bool {
    let date = date_part(date);
    query
        .get("datetime_from")
        .is_none_or(|from| date >= date_part(from))
        && query
            .get("datetime_to")
            .is_none_or(|to| date <= date_part(to))
}

pub async fn financial_reports(
    State(sim): State<XsollaSimulator>,
    Path(merchant_id): Path<String>,
    Query(query): Query<QueryMap>,
    headers: HeaderMap,
) -> Response {
    if let Err(rejection) = sim.merchant_call(&headers, &merchant_id) {
        return *rejection;
    }
    let mut problems = Problems::default();
    require_period(&query, &mut problems);
    if !problems.is_empty() {
        return problems.into_response();
    }
    #[derive(Serialize)]
    struct ReportJson<'a> {
        report_id: u64,
        datetime_from: &'a str,
        datetime_to: &'a str,
        amount: Box<RawValue>,
        currency: &'static str,
        status: &'a str,
    }
    let reports = sim.lock().reports.clone();
    let listed: Vec<ReportJson<'_>> = reports
        .iter()
        .map(|report| ReportJson {
            report_id: report.report_id,
            datetime_from: &report.datetime_from,
            datetime_to: &report.datetime_to,
            amount: amount_json(&report.amount),
            currency: report.amount.currency.code(),
            status: &report.status,
        })
        .collect();
    Json(listed).into_response()
}

pub async fn transfers(
    State(sim): State<XsollaSimulator>,
    Path(merchant_id): Path<String>,
    Query(query): Query<QueryMap>,
    headers: HeaderMap,
) -> Response {
    if let Err(rejection) = sim.merchant_call(&headers, &merchant_id) {
        return *rejection;
    }
    let mut problems = Problems::default();
    require_period(&query, &mut problems);
    if !problems.is_empty() {
        return problems.into_response();
    }
    #[derive(Serialize)]
    struct TransferJson<'a> {
        transfer_id: u64,
        date: &'a str,
        amount: Box<RawValue>,
        currency: &'static str,
        status: &'a str,
    }
    let transfers = sim.lock().transfers.clone();
    let listed: Vec<TransferJson<'_>> = transfers
        .iter()
        .filter(|transfer| in_period(&transfer.date, &query))
        .map(|transfer| TransferJson {
            transfer_id: transfer.transfer_id,
            date: &transfer.date,
            amount: amount_json(&transfer.amount),
            currency: transfer.amount.currency.code(),
            status: &transfer.status,
        })
        .collect();
    Json(listed).into_response()
}

pub async fn payouts_breakdown(
    State(sim): State<XsollaSimulator>,
    Path(merchant_id): Path<String>,
    Query(query): Query<QueryMap>,
    headers: HeaderMap,
) -> Response {
    if let Err(rejection) = sim.merchant_call(&headers, &merchant_id) {
        return *rejection;
    }
    let mut totals: BTreeMap<&'static str, (Currency, i64, u64)> = BTreeMap::new();
    for transaction in sim.transactions() {
        if transaction.status != "done" || !in_period(&transaction.create_date, &query) {
            continue;
        }
        let net = transaction.amount.minor_units - transaction.partially_refunded_minor_units;
        let entry = totals.entry(transaction.amount.currency.code()).or_insert((
            transaction.amount.currency,
            0,
            0,
        ));
        entry.1 += net;
        entry.2 += 1;
    }
    #[derive(Serialize)]
    struct BreakdownJson {
        currency: &'static str,
        amount: Box<RawValue>,
        transactions_count: u64,
    }
    let listed: Vec<BreakdownJson> = totals
        .into_iter()
        .map(|(code, (currency, minor_units, count))| BreakdownJson {
            currency: code,
            amount: amount_json(&Money::new(minor_units, currency)),
            transactions_count: count,
        })
        .collect();
    Json(listed).into_response()
}

/// `registry.{json,csv}`, `search.{json,csv}` and `simple_search`.
pub async fn transaction_listing(
    State(sim): State<XsollaSimulator>,
    Path((merchant_id, listing)): Path<(String, String)>,
    Query(query): Query<QueryMap>,
    headers: HeaderMap,
) -> Response {
    if let Err(rejection) = sim.merchant_call(&headers, &merchant_id) {
        return *rejection;
    }
    let (registry, csv) = match listing.as_str() {
        "search.json" | "simple_search" => (false, false),
        "search.csv" => (false, true),
        "registry.json" => (true, false),
        "registry.csv" => (true, true),
        _ => return message(StatusCode::NOT_FOUND, "Not found."),
    };
    let mut problems = Problems::default();
    let number = |key: &str, problems: &mut Problems| -> Option<usize> {
        let value = query.get(key)?;
        let parsed = value.parse::<usize>().ok();
        if parsed.is_none() {
            problems.add(key, "This value should be a non-negative integer.");
        }
        parsed
    };
    let limit = number("limit", &mut problems).unwrap_or(100);
    let offset = number("offset", &mut problems).unwrap_or(0);
    if let Some(kind) = query.get("type")
        && !["all", "transferred", "canceled", "test"].contains(&kind.as_str())
    {
        problems.add("type", "The value you selected is not a valid choice.");
    }
    if let Some(status) = query.get("status")
        && !STATUSES.contains(&status.as_str())
    {
        problems.add("status", "The value you selected is not a valid choice.");
    }
    if registry {
        // Documented as required for the registry.
        for key in ["in_transfer_currency", "show_total"] {
            if !query.contains_key(key) {
                problems.add(key, "This value should not be blank.");
            }
        }
    }
    if !problems.is_empty() {
        return problems.into_response();
    }
    let matches = |transaction: &Transaction| {
        let equal = |key: &str, actual: Option<&str>| {
            query
                .get(key)
                .is_none_or(|wanted| Some(wanted.as_str()) == actual)
        };
        equal("external_id", transaction.external_id.as_deref())
            && equal("transaction_id", Some(&transaction.id.to_string()))
            && equal("user_id", Some(&transaction.user_id))
            && equal("status", Some(&transaction.status))
            && equal("project_id", Some(&transaction.project_id.to_string()))
            && in_period(&transaction.create_date, &query)
            && match query.get("type").map(String::as_str) {
                Some("transferred") => transaction.status == "done",
                Some("canceled") => matches!(transaction.status.as_str(), "canceled" | "refunded"),
                Some("test") => transaction.dry_run,
                _ => true,
            }
            // The registry lists successful and cancelled transactions only.
            && (!registry || matches!(transaction.status.as_str(), "done" | "refunded" | "canceled"))
    };
    // A search by external_id (reconciliation's) reads the index instead of every transaction.
    let candidates = match query.get("external_id") {
        Some(external_id) => sim.transactions_with_external_id(external_id),
        None => sim.transactions(),
    };
    let selected: Vec<Transaction> = candidates
        .into_iter()
        .filter(matches)
        .skip(offset)
        .take(limit)
        .collect();
    if csv {
        let mut text = String::from(
            "transaction_id,external_id,status,amount,currency,user_id,create_date\r\n",
        );
        for transaction in &selected {
            text.push_str(&format!(
                "{},{},{},{},{},{},{}\r\n",
                transaction.id,
                csv_cell(transaction.external_id.as_deref().unwrap_or("")),
                transaction.status,
                transaction.amount.to_decimal_string(),
                transaction.amount.currency.code(),
                csv_cell(&transaction.user_id),
                transaction.create_date
            ));
        }
        return ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], text).into_response();
    }
    let records: Vec<TransactionRecordJson<'_>> = selected.iter().map(record_json).collect();
    Json(records).into_response()
}

fn csv_cell(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

pub async fn transaction_details(
    State(sim): State<XsollaSimulator>,
    Path((merchant_id, transaction_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(rejection) = sim.merchant_call(&headers, &merchant_id) {
        return *rejection;
    }
    match transaction_id
        .parse::<u64>()
        .ok()
        .and_then(|id| sim.transaction(id))
    {
        Some(transaction) => Json(record_json(&transaction)).into_response(),
        None => message(StatusCode::NOT_FOUND, "Transaction not found."),
    }
}

// ---------------------------------------------------------------------------------------------
// Refunds and chargeback

fn plain_message(status: StatusCode, text: &str) -> Response {
    (status, Json(json!({ "message": text }))).into_response()
}

pub async fn refund(
    State(sim): State<XsollaSimulator>,
    Path((merchant_id, transaction_id)): Path<(String, String)>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    if let Err(rejection) = sim.merchant_call(&headers, &merchant_id) {
        return *rejection;
    }
    let Some(id) = transaction_id
        .parse::<u64>()
        .ok()
        .filter(|id| sim.transaction(*id).is_some())
    else {
        return plain_message(
            StatusCode::NOT_FOUND,
            "Transaction ID not valid. Please check payment credentials. Otherwise, contact Xsolla support at support@xsolla.com.",
        );
    };
    let Some(body) = Body::parse(&bytes) else {
        return unreadable_body();
    };
    let mut problems = Problems::default();
    let description = body
        .string(&["description"])
        .filter(|text| !text.trim().is_empty());
    match &description {
        None => problems.add("description", "This value should not be blank."),
        Some(text) if text.chars().count() > 4000 => {
            problems.add("description", "This value is too long.")
        }
        Some(_) => {}
    }
    if body
        .string(&["email"])
        .is_some_and(|email| email.chars().count() > 100 || !email.contains('@'))
    {
        problems.add("email", "This value is not a valid email address.");
    }
    let Some(description) = description.filter(|_| problems.is_empty()) else {
        return problems.into_response();
    };
    let refunded = {
        let mut inner = sim.lock();
        let Some(transaction) = inner.transactions.get_mut(&id) else {
            return plain_message(StatusCode::NOT_FOUND, "Transaction ID not valid.");
        };
        if transaction.partially_refunded_minor_units > 0 {
            return plain_message(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Full refund is unavailable because there are successful partial refunds for this transaction.",
            );
        }
        if matches!(transaction.status.as_str(), "refunded" | "awaitingRefund") {
            return plain_message(
                StatusCode::UNPROCESSABLE_ENTITY,
                "We are processing the refund request. This may take up to two business days.",
            );
        }
        if !matches!(transaction.status.as_str(), "done" | "error") {
            return plain_message(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Incorrect payment status. Refund is possible only for payments with \"completed\" or \"error\" status.",
            );
        }
        transaction.status = "refunded".into();
        transaction.refund_reason = Some(description.clone());
        transaction.clone()
    };
    let notifier = sim.clone();
    tokio::spawn(async move { notifier.notify_refund(&refunded, 1, &description).await });
    plain_message(
        StatusCode::OK,
        "The request for a refund has been accepted. Xsolla CS will manually complete the refund. It may take up to two business days.",
    )
}

pub async fn partial_refund(
    State(sim): State<XsollaSimulator>,
    Path((merchant_id, transaction_id)): Path<(String, String)>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    if let Err(rejection) = sim.merchant_call(&headers, &merchant_id) {
        return *rejection;
    }
    let Some(existing) = transaction_id
        .parse::<u64>()
        .ok()
        .and_then(|id| sim.transaction(id))
    else {
        return plain_message(
            StatusCode::NOT_FOUND,
            "Transaction with specified ID does not exist.",
        );
    };
    let Some(body) = Body::parse(&bytes) else {
        return unreadable_body();
    };
    let mut problems = Problems::default();
    let description = body
        .string(&["description"])
        .filter(|text| !text.trim().is_empty());
    if description.is_none() {
        problems.add("description", "This value should not be blank.");
    }
    let amount = amount_at(
        &body,
        &["refund_amount"],
        Some(existing.amount.currency),
        &mut problems,
    );
    let (Some(description), Some(amount), true) = (description, amount, problems.is_empty()) else {
        return problems.into_response();
    };
    let (updated, refunded) = {
        let mut inner = sim.lock();
        let Some(transaction) = inner.transactions.get_mut(&existing.id) else {
            return plain_message(
                StatusCode::NOT_FOUND,
                "Transaction with specified ID does not exist.",
            );
        };
        if transaction.status != "done" {
            return plain_message(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Current transaction status does not allow refunds.",
            );
        }
        let total = transaction
            .partially_refunded_minor_units
            .saturating_add(amount.minor_units);
        if total > transaction.amount.minor_units {
            return plain_message(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Requested partial refund amount exceeds payment amount.",
            );
        }
        transaction.partially_refunded_minor_units = total;
        if total == transaction.amount.minor_units {
            transaction.status = "refunded".into();
            transaction.refund_reason = Some(description.clone());
        }
        (transaction.clone(), amount)
    };
    let notifier = sim.clone();
    tokio::spawn(async move {
        notifier
            .notify_partial_refund(&updated, &refunded, &description)
            .await
    });
    StatusCode::NO_CONTENT.into_response()
}

pub async fn chargeback(
    State(sim): State<XsollaSimulator>,
    Path((merchant_id, project_id, transaction_id)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(rejection) = sim
        .merchant_call(&headers, &merchant_id)
        .and_then(|()| sim.check_project(&project_id))
    {
        return *rejection;
    }
    let charged_back = {
        let mut inner = sim.lock();
        let Some(transaction) = transaction_id
            .parse::<u64>()
            .ok()
            .and_then(|id| inner.transactions.get_mut(&id))
        else {
            return plain_message(
                StatusCode::NOT_FOUND,
                "Payment not found. Check payment ID.",
            );
        };
        if transaction.project_id.to_string() != project_id {
            return plain_message(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Payment does not belong to this project.",
            );
        }
        if !transaction.dry_run {
            return plain_message(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Not test payment. Chargeback is possible only for payments made in sandbox mode.",
            );
        }
        if transaction.status != "done" {
            return plain_message(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Incorrect payment status. Chargeback is possible only for payments with “Completed” status.",
            );
        }
        transaction.status = "refunded".into();
        transaction.refund_reason = Some("Chargeback".into());
        transaction.clone()
    };
    let notifier = sim.clone();
    tokio::spawn(async move { notifier.notify_refund(&charged_back, 2, "Chargeback").await });
    StatusCode::NO_CONTENT.into_response()
}

// ---------------------------------------------------------------------------------------------
// Test control

#[derive(Deserialize)]
pub struct NewSavedAccount {
    user_id: String,
    #[serde(rename = "type")]
    account_type: String,
    name: String,
}

pub async fn add_saved_account_route(
    State(sim): State<XsollaSimulator>,
    Json(body): Json<NewSavedAccount>,
) -> Response {
    let id = sim.add_saved_account(&body.user_id, &body.account_type, &body.name);
    Json(json!({ "id": id })).into_response()
}

pub async fn pay_token_route(
    State(sim): State<XsollaSimulator>,
    Path(token): Path<String>,
) -> Response {
    match sim.pay_token(&token).await {
        Some(id) => Json(json!({ "transaction_id": id })).into_response(),
        None => plain_message(StatusCode::NOT_FOUND, "unknown token"),
    }
}

pub async fn list_transactions_route(State(sim): State<XsollaSimulator>) -> Response {
    Json(sim.transactions()).into_response()
}

#[derive(Deserialize)]
pub struct NewStatus {
    status: String,
}

pub async fn set_status_route(
    State(sim): State<XsollaSimulator>,
    Path(transaction_id): Path<u64>,
    Json(body): Json<NewStatus>,
) -> StatusCode {
    if !STATUSES.contains(&body.status.as_str()) {
        return StatusCode::UNPROCESSABLE_ENTITY;
    }
    if sim.set_status(transaction_id, &body.status) {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_FOUND
    }
}
