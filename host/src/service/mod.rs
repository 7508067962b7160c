//! The service: what `gatehouse serve` offers, independent of HTTP. It puts the ledger in front of
//! the gateway (record before sending, idempotency keys, reconciliation) and turns inbound
//! webhooks into stored, deduplicated events.
//!
//! Architecture Invariant: a money-moving command is in the ledger, in state `sending`, before
//! its first request leaves the host; a retry with the same idempotency key never reaches the
//! provider again.

pub mod api;
pub mod forward;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gatehouse_plugin_api::{
    Command, Details, ErrorKind, Operation, Outcome, OutcomeStatus, WebhookReply,
};
use serde::Serialize;
use tokio::sync::watch;

use crate::error::DispatchError;
use crate::gateway::{DispatchRequest, Gateway, new_reference};
use crate::ledger::{Begin, Entry, EntryState, Ledger, LedgerError, NewEntry, request_hash};

/// The answer to a command, as the API returns it.
#[derive(Debug, Clone, Serialize)]
pub struct CommandAnswer {
    /// The host-made reference (the ledger entry id for money-moving commands).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    #[serde(flatten)]
    pub outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugin_version: Option<String>,
    /// True when the answer was recorded earlier and is returned for a retry.
    pub replayed: bool,
}

/// Why the service refused or could not run a command.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Dispatch(#[from] DispatchError),
    #[error("idempotency key `{key}` was used with a different request")]
    KeyReused { key: String },
    #[error("invalid Idempotency-Key: {0}")]
    InvalidKey(String),
    #[error("ledger: {0}")]
    Ledger(String),
    #[error("the command with this idempotency key is still running; retry later")]
    InProgress,
    /// The first request with this idempotency key was refused before anything was sent; a retry
    /// gets the same answer.
    #[error("{message}")]
    RecordedRefusal { code: String, message: String },
}

impl From<LedgerError> for ServiceError {
    fn from(error: LedgerError) -> Self {
        match error {
            LedgerError::KeyReused { key } => Self::KeyReused { key },
            other => Self::Ledger(other.to_string()),
        }
    }
}

impl ServiceError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Dispatch(error) => error.code(),
            Self::KeyReused { .. } => "idempotency_key_reused",
            Self::InvalidKey(_) => "invalid_request",
            Self::Ledger(_) => "ledger_error",
            Self::InProgress => "in_progress",
            Self::RecordedRefusal { .. } => "recorded_refusal",
        }
    }

    pub fn http_status(&self) -> u16 {
        match self {
            Self::Dispatch(error) => error.http_status(),
            Self::KeyReused { .. } => 422,
            Self::InvalidKey(_) => 400,
            Self::Ledger(_) => 500,
            Self::InProgress => 409,
            Self::RecordedRefusal { code, .. } => match code.as_str() {
                "unknown_provider" | "unknown_account" => 404,
                "not_supported" => 501,
                "invalid_request" => 422,
                "account_paused" | "rate_limited" => 429,
                "shutting_down" => 503,
                _ => 409,
            },
        }
    }
}

/// The result of handling an inbound webhook.
pub struct WebhookHandling {
    pub reply: WebhookReply,
    /// Whether a new verified event was stored (false for replays, unverified and refused ones).
    pub stored: bool,
}

#[derive(Clone)]
pub struct Service {
    pub gateway: Gateway,
    pub ledger: Arc<dyn Ledger>,
    /// Entries whose dispatch is running in this process, with a channel that closes when done.
    in_flight: Arc<Mutex<HashMap<String, watch::Receiver<bool>>>>,
}

/// A report of one reconciliation pass.
#[derive(Debug, Default, Clone, Serialize)]
pub struct ReconcileReport {
    pub examined: usize,
    pub resolved: usize,
    pub still_open: usize,
    pub flagged_for_operator: usize,
    pub errors: Vec<String>,
}

impl Service {
    pub fn new(gateway: Gateway, ledger: Arc<dyn Ledger>) -> Self {
        Self {
            gateway,
            ledger,
            in_flight: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Runs a command. Money-moving commands go through the ledger; the others straight to the
    /// gateway.
    pub async fn execute(
        &self,
        provider: &str,
        account: &str,
        command: Command,
        idempotency_key: Option<String>,
    ) -> Result<CommandAnswer, ServiceError> {
        let operation = command.operation();
        if !operation.moves_money() {
            let dispatched = self
                .gateway
                .dispatch_request(DispatchRequest::new(provider, account, command))
                .await?;
            return Ok(CommandAnswer {
                reference: dispatched.reference,
                outcome: dispatched.outcome,
                plugin_version: Some(dispatched.plugin_version),
                replayed: false,
            });
        }
        if let Some(key) = &idempotency_key {
            validate_key(key)?;
        }
        let hash = request_hash(provider, account, &command);
        // Refuse what can be refused before anything is recorded or sent, so that a refusal that
        // may pass later (a paused account) does not bind the idempotency key. A retry of a
        // command already recorded is answered from the ledger even then: its outcome does not
        // depend on the account's state now.
        if let Err(refusal) = self.gateway.check_account(provider, account, &command) {
            if let Some(key) = &idempotency_key
                && let Some(entry) = self.ledger.find_by_key(provider, account, key)?
            {
                if entry.request_hash != hash {
                    return Err(LedgerError::KeyReused { key: key.clone() }.into());
                }
                return self.replay(entry).await;
            }
            return Err(refusal.into());
        }
        let new_entry = NewEntry {
            id: new_reference(),
            provider: provider.to_string(),
            account: account.to_string(),
            operation,
            idempotency_key: idempotency_key.clone(),
            request_hash: hash,
            command: command.clone(),
        };
        let begin = self
            .ledger_call(move |ledger| ledger.begin(new_entry))
            .await?;
        let entry = match begin {
            Begin::Existing(entry) => return self.replay(entry).await,
            Begin::Created(entry) => entry,
        };
        let (done, receiver) = watch::channel(false);
        self.lock_in_flight().insert(entry.id.clone(), receiver);
        let mut request = DispatchRequest::new(provider, account, command);
        request.reference = Some(entry.id.clone());
        let result = self.gateway.dispatch_request(request).await;
        let answer = match result {
            Ok(dispatched) => {
                let (id, outcome) = (entry.id.clone(), dispatched.outcome.clone());
                let recorded = self
                    .ledger_call(move |ledger| ledger.record_outcome(&id, &outcome))
                    .await;
                if let Err(error) = &recorded {
                    // The provider acted but the ledger could not say so: the entry stays
                    // `sending` and reconciliation will settle it. Tell the caller the truth.
                    tracing::error!(id = %entry.id, %error, "outcome not recorded; left for reconciliation");
                }
                Ok(CommandAnswer {
                    reference: Some(entry.id.clone()),
                    outcome: dispatched.outcome,
                    plugin_version: Some(dispatched.plugin_version),
                    replayed: false,
                })
            }
            Err(error) => {
                // Nothing reached the provider (the gateway turns every post-send failure of a
                // money-moving command into an outcome), so the entry is a definitive refusal.
                let (id, code, message) = (entry.id.clone(), error.code(), error.to_string());
                let _ = self
                    .ledger_call(move |ledger| ledger.record_refusal(&id, code, &message))
                    .await;
                Err(ServiceError::Dispatch(error))
            }
        };
        self.lock_in_flight().remove(&entry.id);
        let _ = done.send(true);
        answer
    }

    /// Runs a ledger write on the blocking pool: a write waits for its commit's fsync (see
    /// `SqliteLedger`'s group commit), which must not hold an async worker meanwhile.
    async fn ledger_call<T: Send + 'static>(
        &self,
        call: impl FnOnce(&dyn Ledger) -> Result<T, LedgerError> + Send + 'static,
    ) -> Result<T, LedgerError> {
        let ledger = Arc::clone(&self.ledger);
        tokio::task::spawn_blocking(move || call(ledger.as_ref()))
            .await
            .unwrap_or_else(|error| {
                Err(LedgerError::Storage(format!(
                    "the ledger call ended abnormally: {error}"
                )))
            })
    }

    /// Answers a retry from what the ledger holds, waiting for a dispatch still running here.
    async fn replay(&self, entry: Entry) -> Result<CommandAnswer, ServiceError> {
        let mut entry = entry;
        if entry.state == EntryState::Sending {
            let waiter = self.lock_in_flight().get(&entry.id).cloned();
            if let Some(mut receiver) = waiter {
                let _ =
                    tokio::time::timeout(Duration::from_secs(300), receiver.wait_for(|done| *done))
                        .await;
            }
            entry = self
                .ledger
                .get(&entry.id)?
                .ok_or_else(|| ServiceError::Ledger(format!("entry {} vanished", entry.id)))?;
        }
        if let (None, Some(refusal)) = (&entry.outcome, &entry.refusal) {
            return Err(ServiceError::RecordedRefusal {
                code: refusal.code.clone(),
                message: refusal.message.clone(),
            });
        }
        let outcome = match (&entry.outcome, entry.state) {
            (Some(outcome), _) => outcome.clone(),
            // Left `sending` by a crash: it may have reached the provider. Reconciliation settles it.
            (None, EntryState::Sending) => {
                Outcome::unknown(gatehouse_plugin_api::ProviderError::new(
                    ErrorKind::ProviderUnavailable,
                    "the first attempt was interrupted; the entry is being reconciled with the provider",
                ))
            }
            (None, EntryState::NeedsOperator) => {
                Outcome::unknown(gatehouse_plugin_api::ProviderError::new(
                    ErrorKind::ProviderError,
                    "the entry needs an operator's decision",
                ))
            }
            (None, _) => Outcome::new(state_to_status(entry.state)),
        };
        Ok(CommandAnswer {
            reference: Some(entry.id.clone()),
            outcome,
            plugin_version: None,
            replayed: true,
        })
    }

    fn lock_in_flight(&self) -> std::sync::MutexGuard<'_, HashMap<String, watch::Receiver<bool>>> {
        self.in_flight
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Settles `unknown`, `pending` and crash-interrupted entries through the provider's status
    /// operation, or flags them for an operator when the provider has none.
    pub async fn reconcile(&self, limit: usize) -> ReconcileReport {
        self.reconcile_with(limit, Duration::ZERO).await
    }

    /// Like [`Service::reconcile`], but leaves alone entries still `sending` that are younger
    /// than `sending_min_age`: run from another process than the server, this process cannot
    /// see which dispatches the server still has in flight.
    pub async fn reconcile_with(&self, limit: usize, sending_min_age: Duration) -> ReconcileReport {
        let mut report = ReconcileReport::default();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs() as i64);
        let entries = match self.ledger.unresolved(limit) {
            Ok(entries) => entries,
            Err(error) => {
                report.errors.push(error.to_string());
                return report;
            }
        };
        for entry in entries {
            if self.lock_in_flight().contains_key(&entry.id) {
                continue;
            }
            if entry.state == EntryState::Sending
                && now.saturating_sub(entry.created_at_unix) < sending_min_age.as_secs() as i64
            {
                report.still_open += 1;
                continue;
            }
            report.examined += 1;
            let supports_status = self
                .gateway
                .registry()
                .get(&entry.provider)
                .map(|plugin| plugin.manifest.supports(Operation::Status));
            // The normalized status operation describes a *charge* (by transaction id or by our
            // reference). A refund or payout asked about that way would borrow the charge's
            // state: a lost refund of a `done` charge would read as failed, a refund never made
            // as succeeded. Those go to an operator instead.
            let why_operator = match supports_status {
                None => {
                    report.still_open += 1;
                    continue;
                }
                Some(false) => Some(
                    "the provider has no status operation: check the transaction in its back office"
                        .to_string(),
                ),
                Some(true) if !status_describes(entry.operation) => Some(format!(
                    "the provider's status operation describes charges, not a {}: check it in the provider's back office",
                    entry.operation
                )),
                Some(true) => None,
            };
            if let Some(why) = why_operator {
                if entry.state == EntryState::Pending {
                    // The provider accepted it and will say more (webhook): nothing is unknown.
                    report.still_open += 1;
                } else if self.ledger.flag_for_operator(&entry.id, &why).is_ok() {
                    report.flagged_for_operator += 1;
                }
                continue;
            }
            let command = Command::Status {
                transaction_id: entry.provider_reference.clone(),
                reference: Some(entry.id.clone()),
                extra: Default::default(),
            };
            let result = self
                .gateway
                .dispatch_request(DispatchRequest::new(
                    &entry.provider,
                    &entry.account,
                    command,
                ))
                .await;
            match result {
                Ok(dispatched) => {
                    let mut outcome = dispatched.outcome;
                    if outcome.amount.is_none() {
                        outcome.amount = entry.amount;
                    }
                    if outcome.provider_reference.is_none() {
                        outcome.provider_reference = entry.provider_reference.clone();
                    }
                    let final_now = outcome.status.is_final();
                    match self.ledger.record_outcome(&entry.id, &outcome) {
                        Ok(_) if final_now => report.resolved += 1,
                        Ok(_) => report.still_open += 1,
                        Err(error) => report.errors.push(format!("{}: {error}", entry.id)),
                    }
                }
                Err(DispatchError::Provider(error)) if error.kind == ErrorKind::NotFound => {
                    // The provider has no record of our reference: the request never reached it.
                    let outcome = Outcome::failed(error);
                    match self.ledger.record_outcome(&entry.id, &outcome) {
                        Ok(_) => report.resolved += 1,
                        Err(error) => report.errors.push(format!("{}: {error}", entry.id)),
                    }
                }
                Err(error) => {
                    report.still_open += 1;
                    report.errors.push(format!("{}: {error}", entry.id));
                }
            }
        }
        report
    }

    /// Verifies, stores and applies an inbound webhook; returns the answer for the provider.
    pub async fn webhook(
        &self,
        provider: &str,
        account: &str,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    ) -> Result<WebhookHandling, ServiceError> {
        let mut request = DispatchRequest::new(provider, account, Command::Webhook { headers });
        request.inbound_body = body;
        let outcome = match self.gateway.dispatch_request(request).await {
            Ok(dispatched) => dispatched.outcome,
            Err(DispatchError::Provider(error)) if error.kind != ErrorKind::PluginFault => {
                Outcome::failed(error)
            }
            Err(other) => return Err(other.into()),
        };
        let Details::Webhook(result) = outcome.details else {
            return Err(ServiceError::Dispatch(DispatchError::Provider(
                gatehouse_plugin_api::ProviderError::plugin_fault(
                    "the plugin answered a webhook without a webhook result",
                ),
            )));
        };
        let mut stored = false;
        if let Some(event) = result.event.as_ref().filter(|event| event.verified) {
            stored = self.ledger.record_event(provider, account, event)?;
            if stored {
                match self.ledger.apply_event(provider, event) {
                    Ok(Some(entry)) => {
                        tracing::info!(id = %entry.id, state = entry.state.as_str(), "webhook applied")
                    }
                    Ok(None) => {}
                    Err(error) => tracing::error!(%error, "webhook event stored but not applied"),
                }
                self.gateway.metrics().increment(
                    "gatehouse_webhook_events_total",
                    &[("provider", provider), ("result", "stored")],
                );
            } else {
                self.gateway.metrics().increment(
                    "gatehouse_webhook_events_total",
                    &[("provider", provider), ("result", "replay")],
                );
            }
        } else {
            self.gateway.metrics().increment(
                "gatehouse_webhook_events_total",
                &[("provider", provider), ("result", "refused")],
            );
        }
        Ok(WebhookHandling {
            reply: result.reply,
            stored,
        })
    }

    /// Runs reconciliation every `interval` until the service is dropped.
    pub fn spawn_reconciler(&self, interval: Duration) -> tokio::task::JoinHandle<()> {
        let service = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                let report = service.reconcile(500).await;
                if report.examined > 0 {
                    tracing::info!(?report, "reconciliation pass");
                }
            }
        })
    }
}

fn state_to_status(state: EntryState) -> OutcomeStatus {
    match state {
        EntryState::Succeeded => OutcomeStatus::Succeeded,
        EntryState::Pending => OutcomeStatus::Pending,
        EntryState::Failed => OutcomeStatus::Failed,
        EntryState::Sending | EntryState::Unknown | EntryState::NeedsOperator => {
            OutcomeStatus::Unknown
        }
    }
}

fn validate_key(key: &str) -> Result<(), ServiceError> {
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(ServiceError::InvalidKey(
            "an idempotency key is 1 to 255 printable ASCII characters without spaces".into(),
        ));
    }
    Ok(())
}

/// Whether the normalized `status` operation answers for an entry of this operation: it looks a
/// transaction up by its provider id or by our reference, which only charges (and the payment
/// pages that become charges) carry.
fn status_describes(operation: Operation) -> bool {
    matches!(operation, Operation::Charge | Operation::PaymentPage)
}
