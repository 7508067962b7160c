//! An Xsolla Pay Station simulator, following the Pay Station API document (`shared/seeds/001`)
//! and `shared/providers.md` section 2, over real HTTP on loopback.
//!
//! Documented behaviour: HTTP Basic `merchant_id:api_key` on every call (401 otherwise), 422 with
//! `extended_message` naming the wrong parameters, create token, saved accounts (list, delete,
//! charge), full and partial refunds with the documented refusal messages, the report calls, the
//! sandbox chargeback, and webhooks signed `Authorization: Signature sha1(body + secret)`.
//!
//! Assumed, because no source shows it (the plugin's README lists the same GUESSes): the answer
//! shapes of the token (`{"token"}`), the charge (`{"transaction_id"}`), the saved-account list,
//! transaction details (one search element), registry / simple search (search elements),
//! transfers, financial reports and the payouts breakdown; 403 when a path names another
//! merchant or project; charges complete at once (`done`) unless a test says otherwise; a full
//! refund moves the transaction to `refunded` at once (Xsolla support would take up to two days).
//!
//! Test control: Rust methods on [`XsollaSimulator`] and `/_sim/...` routes.

mod api;
mod webhooks;
pub mod wire;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::routing::{delete, get, post, put};
use gatehouse_plugin_api::Money;
use gatehouse_sim_common::{RunningSimulator, serve};
use serde::Serialize;

pub use webhooks::SignatureMode;

/// Where the merchant API lives under the simulator's address, as under `api.xsolla.com`.
pub const API_PREFIX: &str = "/merchant/v2";

/// The credentials and ids the simulator accepts.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub merchant_id: u64,
    pub project_id: u64,
    pub api_key: String,
    pub project_secret_key: String,
}

impl Default for Credentials {
    fn default() -> Self {
        Self {
            merchant_id: 12345,
            project_id: 678,
            api_key: "sim-api-key-0c9f".into(),
            project_secret_key: "sim-project-secret-5e1d".into(),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct SavedAccount {
    pub id: u64,
    pub account_type: String,
    pub name: String,
}

/// What a create-token request asked for, kept until the page is "paid".
#[derive(Clone, Debug, Serialize)]
pub struct TokenRecord {
    pub token: String,
    pub user_id: String,
    pub amount: Money,
    pub external_id: Option<String>,
    pub sandbox: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct Transaction {
    pub id: u64,
    pub external_id: Option<String>,
    pub user_id: String,
    pub project_id: u64,
    pub amount: Money,
    /// `created, processing, done, canceled, error, review, refunded, awaitingRefund`.
    pub status: String,
    pub dry_run: bool,
    pub payment_method: String,
    /// Sum of the accepted partial refunds, in minor units of `amount`'s currency.
    pub partially_refunded_minor_units: i64,
    pub refund_reason: Option<String>,
    pub create_date: String,
}

#[derive(Clone, Debug)]
pub struct Transfer {
    pub transfer_id: u64,
    pub date: String,
    pub amount: Money,
    pub status: String,
}

#[derive(Clone, Debug)]
pub struct FinancialReport {
    pub report_id: u64,
    pub datetime_from: String,
    pub datetime_to: String,
    pub amount: Money,
    pub status: String,
}

#[derive(Default)]
struct Inner {
    tokens: BTreeMap<String, TokenRecord>,
    saved_accounts: BTreeMap<String, Vec<SavedAccount>>,
    transactions: BTreeMap<u64, Transaction>,
    /// `external_id` → transaction id: reconciliation's search by external_id is a map read,
    /// not a scan of every transaction.
    by_external_id: BTreeMap<String, Vec<u64>>,
    transfers: Vec<Transfer>,
    reports: Vec<FinancialReport>,
    next_id: u64,
    next_charge_status: Option<String>,
    webhook_url: Option<String>,
    /// Every webhook sent: (body, reply status or 0 when unreachable).
    webhook_log: Vec<(String, u16)>,
}

/// The simulator's state, shared by its routes and by the tests that drive it.
#[derive(Clone)]
pub struct XsollaSimulator {
    credentials: Arc<Credentials>,
    inner: Arc<Mutex<Inner>>,
}

impl XsollaSimulator {
    pub fn new(credentials: Credentials) -> Self {
        let simulator = Self {
            credentials: Arc::new(credentials),
            inner: Arc::new(Mutex::new(Inner {
                next_id: 100_000,
                ..Inner::default()
            })),
        };
        simulator.seed_reports();
        simulator
    }

    /// Serves the simulator on an ephemeral loopback port.
    pub async fn start(credentials: Credentials) -> std::io::Result<(Self, RunningSimulator)> {
        let simulator = Self::new(credentials);
        let running = serve(simulator.router()).await?;
        Ok((simulator, running))
    }

    /// The base URL a plugin account uses: `http://127.0.0.1:PORT/merchant/v2`.
    pub fn api_base_url(running: &RunningSimulator) -> String {
        format!("{}{API_PREFIX}", running.base_url())
    }

    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    pub fn router(&self) -> Router {
        let api = Router::new()
            .route("/merchants/{merchant_id}/token", post(api::create_token))
            .route("/projects/{project_id}/users/{user_id}/payment_accounts", get(api::list_saved_accounts))
            .route(
                "/projects/{project_id}/users/{user_id}/payment_accounts/{account_type}/{account_id}",
                delete(api::delete_saved_account),
            )
            .route(
                "/projects/{project_id}/users/{user_id}/payments/{account_type}/{account_id}",
                post(api::charge_saved_account),
            )
            .route("/merchants/{merchant_id}/reports", get(api::financial_reports))
            .route("/merchants/{merchant_id}/reports/transfers", get(api::transfers))
            .route("/merchants/{merchant_id}/reports/transactions/summary/transfer", get(api::payouts_breakdown))
            .route("/merchants/{merchant_id}/reports/transactions/{listing}", get(api::transaction_listing))
            .route("/merchants/{merchant_id}/reports/transactions/{transaction_id}/details", get(api::transaction_details))
            .route("/merchants/{merchant_id}/reports/transactions/{transaction_id}/refund", put(api::refund))
            .route("/merchants/{merchant_id}/reports/transactions/{transaction_id}/partial_refund", put(api::partial_refund))
            .route(
                "/merchants/{merchant_id}/projects/{project_id}/payments/{transaction_id}/chargeback",
                post(api::chargeback),
            );
        Router::new()
            .nest(API_PREFIX, api)
            .route("/paystation4/", get(api::paystation_page))
            .route("/sandbox/paystation4/", get(api::paystation_page))
            .route("/_sim/webhook-url", post(webhooks::set_webhook_url_route))
            .route("/_sim/webhooks/send", post(webhooks::send_route))
            .route("/_sim/saved-accounts", post(api::add_saved_account_route))
            .route("/_sim/tokens/{token}/pay", post(api::pay_token_route))
            .route("/_sim/transactions", get(api::list_transactions_route))
            .route(
                "/_sim/transactions/{transaction_id}/status",
                post(api::set_status_route),
            )
            .with_state(self.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn next_id(&self) -> u64 {
        let mut inner = self.lock();
        inner.next_id += 1;
        inner.next_id
    }

    fn seed_reports(&self) {
        let usd = gatehouse_plugin_api::Currency::from_code("USD").expect("USD");
        let mut inner = self.lock();
        inner.transfers.push(Transfer {
            transfer_id: 7001,
            date: "2026-01-15".into(),
            amount: Money::new(152_050, usd),
            status: "paid".into(),
        });
        inner.reports.push(FinancialReport {
            report_id: 501,
            datetime_from: "2026-01-01".into(),
            datetime_to: "2026-01-31".into(),
            amount: Money::new(152_050, usd),
            status: "paid".into(),
        });
    }

    /// Saves a payment account for a user (as the payment UI would with "save this card").
    pub fn add_saved_account(&self, user_id: &str, account_type: &str, name: &str) -> u64 {
        let id = self.next_id();
        self.lock()
            .saved_accounts
            .entry(user_id.to_string())
            .or_default()
            .push(SavedAccount {
                id,
                account_type: account_type.to_string(),
                name: name.to_string(),
            });
        id
    }

    pub fn saved_accounts(&self, user_id: &str) -> Vec<SavedAccount> {
        self.lock()
            .saved_accounts
            .get(user_id)
            .cloned()
            .unwrap_or_default()
    }

    pub fn transaction(&self, id: u64) -> Option<Transaction> {
        self.lock().transactions.get(&id).cloned()
    }

    pub fn transactions(&self) -> Vec<Transaction> {
        self.lock().transactions.values().cloned().collect()
    }

    /// The transactions a search naming `external_id` can match, found by map, oldest first.
    pub(crate) fn transactions_with_external_id(&self, external_id: &str) -> Vec<Transaction> {
        let inner = self.lock();
        inner
            .by_external_id
            .get(external_id)
            .into_iter()
            .flatten()
            .filter_map(|id| inner.transactions.get(id).cloned())
            .collect()
    }

    /// Stores a new transaction and indexes its external_id.
    pub(crate) fn record_transaction(&self, transaction: Transaction) {
        let mut inner = self.lock();
        if let Some(external_id) = &transaction.external_id {
            inner
                .by_external_id
                .entry(external_id.clone())
                .or_default()
                .push(transaction.id);
        }
        inner.transactions.insert(transaction.id, transaction);
    }

    pub fn token(&self, token: &str) -> Option<TokenRecord> {
        self.lock().tokens.get(token).cloned()
    }

    /// Makes the next charge land in `status` (`processing`, `error`, ...) instead of `done`.
    pub fn set_next_charge_status(&self, status: &str) {
        self.lock().next_charge_status = Some(status.to_string());
    }

    /// Moves a transaction to `status`, as Xsolla's back office would.
    pub fn set_status(&self, id: u64, status: &str) -> bool {
        match self.lock().transactions.get_mut(&id) {
            Some(transaction) => {
                transaction.status = status.to_string();
                true
            }
            None => false,
        }
    }

    pub fn add_transfer(&self, transfer: Transfer) {
        self.lock().transfers.push(transfer);
    }

    /// Where webhooks are POSTed (the project's webhook URL in the Publisher Account).
    pub fn set_webhook_url(&self, url: Option<String>) {
        self.lock().webhook_url = url;
    }

    /// Every webhook sent so far, with the status the receiver answered (0: unreachable).
    pub fn webhook_log(&self) -> Vec<(String, u16)> {
        self.lock().webhook_log.clone()
    }

    /// Completes the payment a token was created for, as a user paying in the payment UI would:
    /// records a `done` transaction and sends the `payment` webhook. Returns its id.
    pub async fn pay_token(&self, token: &str) -> Option<u64> {
        let record = self.token(token)?;
        let id = self.next_id();
        let transaction = Transaction {
            id,
            external_id: record.external_id.clone(),
            user_id: record.user_id.clone(),
            project_id: self.credentials.project_id,
            amount: record.amount,
            status: "done".into(),
            dry_run: record.sandbox,
            payment_method: "card".into(),
            partially_refunded_minor_units: 0,
            refund_reason: None,
            create_date: wire::iso_datetime(wire::now_unix()),
        };
        self.record_transaction(transaction.clone());
        self.notify(webhooks::payment_body(&transaction)).await;
        Some(id)
    }

    /// Sends a notification signed with the project secret key, if a webhook URL is set.
    async fn notify(&self, body: String) {
        let url = self.lock().webhook_url.clone();
        if let Some(url) = url {
            let status = self
                .send_webhook_to(&url, &body, SignatureMode::Valid)
                .await
                .map_or(0, |(status, _)| status);
            self.lock().webhook_log.push((body, status));
        }
    }

    /// Sends `body` to the webhook URL with a valid, wrong or missing signature, and returns the
    /// receiver's status and body. `None` when no URL is set or the receiver is unreachable.
    pub async fn send_webhook(
        &self,
        body: &str,
        signature: SignatureMode,
    ) -> Option<(u16, String)> {
        let url = self.lock().webhook_url.clone()?;
        self.send_webhook_to(&url, body, signature).await
    }

    /// The `Authorization` header value Xsolla would send with `body`, per `mode` (`None` for
    /// `Missing`): for delivering webhooks to a host without HTTP.
    pub fn webhook_authorization(&self, body: &str, mode: SignatureMode) -> Option<String> {
        match mode {
            SignatureMode::Valid => Some(format!(
                "Signature {}",
                webhooks::signature(body, &self.credentials.project_secret_key)
            )),
            SignatureMode::Wrong => Some(format!(
                "Signature {}",
                webhooks::signature(body, "not-the-secret")
            )),
            SignatureMode::Missing => None,
        }
    }

    /// The `payment` notification body for a transaction.
    pub fn payment_webhook_body(&self, transaction_id: u64) -> Option<String> {
        self.transaction(transaction_id)
            .map(|transaction| webhooks::payment_body(&transaction))
    }

    /// The `refund` notification body for a transaction.
    pub fn refund_webhook_body(&self, transaction_id: u64) -> Option<String> {
        self.transaction(transaction_id).map(|transaction| {
            webhooks::refund_body(&transaction, 1, "Cancellation by the user request")
        })
    }

    /// The `partial_refund` notification body for `refunded` of a transaction.
    pub fn partial_refund_webhook_body(
        &self,
        transaction_id: u64,
        refunded: &Money,
    ) -> Option<String> {
        self.transaction(transaction_id).map(|transaction| {
            webhooks::partial_refund_body(&transaction, refunded, "Partial refund")
        })
    }

    async fn send_webhook_to(
        &self,
        url: &str,
        body: &str,
        signature: SignatureMode,
    ) -> Option<(u16, String)> {
        webhooks::post_signed(url, body, &self.credentials.project_secret_key, signature).await
    }
}
