//! The service: the one door every surface (HTTP API, CLI, a platform's own code) sends commands
//! through. It puts the ledger in front of the gateway (record before sending, idempotency keys,
//! reconciliation) and turns inbound webhooks into stored, deduplicated events.
//!
//! Architecture Invariant: a money-moving command (and a payment page) is in the ledger, in
//! state `sending`, before its first request leaves the host; a retry with the same idempotency
//! key never reaches the provider again. The gateway enforces the first half with types (it
//! sends such a command only with a ledger `Reservation`); this module is where the reservation
//! is made and the retries are answered.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use gatehouse_core::prepared::records;
use gatehouse_core::{
    Config, DirectCommand, DispatchError, Door, ErrorCode, Gateway, RecordedCommand, new_reference,
};
use gatehouse_ledger::{
    Entry, EntryState, Ledger, LedgerError, Reservation, Reserved, request_hash, reserve,
};
use gatehouse_plugin_api::{
    Command, Details, ErrorKind, Operation, Outcome, OutcomeStatus, ProviderError, WebhookReply,
};
use serde::Serialize;
use sha2::Digest;

use crate::error::ServiceError;
use crate::in_flight::{Claim, InFlight};
use crate::ledger_access::AsyncLedger;
use crate::pacing::{Budget, ReconcilePacer};

/// Removes a callback's shared confirmation from the map when a caller leaves it (done or
/// cancelled), if it is still the one in the map.
struct LeaveFlight<'a> {
    confirmations: &'a std::sync::Mutex<HashMap<CallbackKey, Arc<SharedConfirmation>>>,
    key: CallbackKey,
    shared: Arc<SharedConfirmation>,
}

impl Drop for LeaveFlight<'_> {
    fn drop(&mut self) {
        let mut confirmations = self
            .confirmations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Left in place while another caller still waits on an unfinished confirmation (this
        // one was cancelled), so a callback arriving meanwhile joins it.
        let finished_or_alone = self.shared.initialized() || Arc::strong_count(&self.shared) <= 2;
        if finished_or_alone
            && confirmations
                .get(&self.key)
                .is_some_and(|current| Arc::ptr_eq(current, &self.shared))
        {
            confirmations.remove(&self.key);
        }
    }
}

/// How long a retry waits for the first attempt with its key, running in this process.
const RETRY_WAIT: Duration = Duration::from_secs(300);

/// How often a retry polls the shared ledger for the outcome of an entry another host sends.
const PEER_POLL: Duration = Duration::from_millis(50);

/// How many entries a pass claims at a time on a shared ledger: small batches spread a backlog
/// over the hosts reconciling it, and each claim is held only a little longer than its batch
/// takes.
const RECONCILE_BATCH: usize = 16;

/// How long a claim on an entry lasts (a shared ledger): longer than a batch takes at the
/// slowest pace, and as long as the background passes' interval, so an entry one host asked
/// about is not asked about again by another host's pass in the same minute. A claimer that
/// died leaves its claims to expire.
pub const RECONCILE_CLAIM: Duration = Duration::from_secs(60);

/// The answer to a command, as the API returns it.
#[derive(Debug, Clone, Serialize)]
pub struct CommandAnswer {
    /// The host-made reference (the ledger entry id for recorded commands).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    #[serde(flatten)]
    pub outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugin_version: Option<String>,
    /// True when the answer was recorded earlier and is returned for a retry.
    pub replayed: bool,
    /// Requests this answer cost the provider (0 for a replay).
    #[serde(skip)]
    pub provider_requests: u32,
}

/// The result of handling an inbound webhook.
#[derive(Debug, Clone)]
pub struct WebhookHandling {
    pub reply: WebhookReply,
    /// Whether a new verified event was stored (false for replays, unverified and refused ones).
    pub stored: bool,
}

/// The service: a gateway with the ledger in front of it. Cheap to clone: every clone shares
/// one gateway, one ledger and one in-flight registry, behind one reference count.
// The HTTP router clones its state for every request (axum's per-request service clone, each
// middleware's copy): a dozen clones per request. With each part behind its own `Arc`, a clone
// was ten atomic increments (and its drop ten decrements) on counters every core touches; with
// the parts behind one `Arc`, it is two.
#[derive(Clone)]
pub struct Service {
    shared: Arc<Shared>,
    /// Who is asking through this handle: recorded with every ledger entry it creates and every
    /// operator action it takes ([`Service::acting_as`]).
    actor: Arc<str>,
}

/// What every handle of one service shares.
struct Shared {
    gateway: Gateway,
    ledger: AsyncLedger,
    /// Shared with the claims it hands out, which leave it when dropped.
    in_flight: Arc<InFlight>,
    /// Unsigned callbacks being confirmed, by (provider, account, SHA-256 of the body):
    /// identical callbacks in flight share one confirmation.
    confirmations: std::sync::Mutex<HashMap<CallbackKey, Arc<SharedConfirmation>>>,
    /// The last ledger write probe and when it ran (see [`Service::readiness`]).
    ledger_probe: tokio::sync::Mutex<Option<LedgerProbe>>,
    /// Reconciliation's budget of status calls per account.
    pacer: ReconcilePacer,
    /// Held by the pass running on this host: passes here run one at a time (a pass may take
    /// again the claims this host's previous pass left, never those of one still running).
    reconciling: tokio::sync::Mutex<()>,
    /// This process as the fleet knows it.
    instance: Instance,
}

/// This process's place in a fleet.
#[derive(Debug)]
pub struct Instance {
    /// Its name in a shared ledger's lease table; a fresh UUID for a ledger it owns alone.
    pub id: String,
    /// Whether the ledger is shared with other hosts (PostgreSQL).
    pub shared: bool,
    pub started_at_unix: i64,
    /// Where its HTTP API listens, once it serves (`fleet::spawn_registration` sets it).
    pub listen_address: std::sync::OnceLock<String>,
}

/// The actor a [`Service`] records until [`Service::acting_as`] names another.
pub const DEFAULT_ACTOR: &str = "embedded";

/// What the host needs to serve, as [`Service::readiness`] found it.
#[derive(Debug, Clone, Serialize)]
pub struct Readiness {
    /// Why the host cannot serve; empty when it can.
    pub problems: Vec<String>,
    pub plugins_loaded: usize,
    /// `None` when the probe write succeeded.
    pub ledger_error: Option<String>,
    /// Why the newest `plugins.toml` was refused (the previous one stays in force): reported,
    /// but not a reason to be unready, since the configuration in force still serves and a bad
    /// file deployed to a whole fleet must not take every host out of its load balancer.
    pub config_error: Option<String>,
}

/// When the ledger was last probed, and what the probe write answered.
type LedgerProbe = (std::time::Instant, Result<(), String>);
type CallbackKey = (String, String, [u8; 32]);
type SharedConfirmation = tokio::sync::OnceCell<Result<WebhookHandling, (ErrorCode, String)>>;

/// How long a ledger probe's result is reused: a load balancer polling `/readyz` many times a
/// second costs one small write a second.
const LEDGER_PROBE_TTL: Duration = Duration::from_secs(1);

/// A report of one reconciliation pass.
#[derive(Debug, Default, Clone, Serialize)]
pub struct ReconcileReport {
    pub examined: usize,
    pub resolved: usize,
    pub still_open: usize,
    pub flagged_for_operator: usize,
    pub errors: Vec<String>,
}

impl ReconcileReport {
    fn absorb(&mut self, other: ReconcileReport) {
        self.examined += other.examined;
        self.resolved += other.resolved;
        self.still_open += other.still_open;
        self.flagged_for_operator += other.flagged_for_operator;
        self.errors.extend(other.errors);
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_secs()).unwrap_or(i64::MAX)
        })
}

impl Service {
    pub fn new(gateway: Gateway, ledger: Arc<dyn Ledger>) -> Self {
        Self {
            shared: Arc::new(Shared {
                gateway,
                ledger: AsyncLedger::new(ledger.clone()),
                in_flight: Arc::default(),
                ledger_probe: tokio::sync::Mutex::new(None),
                confirmations: std::sync::Mutex::default(),
                pacer: ReconcilePacer::default(),
                reconciling: tokio::sync::Mutex::default(),
                instance: Instance {
                    shared: ledger.instance_id().is_some(),
                    id: ledger
                        .instance_id()
                        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
                    started_at_unix: unix_now(),
                    listen_address: std::sync::OnceLock::new(),
                },
            }),
            actor: Arc::from(DEFAULT_ACTOR),
        }
    }

    /// This process as the fleet knows it.
    pub fn instance(&self) -> &Instance {
        &self.shared.instance
    }

    /// The same service (one gateway, one ledger, one in-flight registry) recording `actor` as
    /// who asks: the HTTP API passes the API key's name, the CLI `cli`, a platform whatever
    /// names its caller. Never a secret: it is stored in the ledger as written.
    pub fn acting_as(&self, actor: &str) -> Self {
        Self {
            actor: Arc::from(actor),
            ..self.clone()
        }
    }

    /// Who this handle records as asking.
    pub fn actor(&self) -> &str {
        &self.actor
    }

    /// Whether the host can serve: at least one plugin loaded, and the ledger takes a write (a
    /// probe write, its result reused for a second; a full disk or a read-only ledger fails it).
    pub async fn readiness(&self) -> Readiness {
        let ledger_error = {
            let mut probe = self.shared.ledger_probe.lock().await;
            match probe.as_ref() {
                Some((at, result)) if at.elapsed() < LEDGER_PROBE_TTL => result.clone().err(),
                _ => {
                    let result = self
                        .shared
                        .ledger
                        .call(|ledger| ledger.probe_write())
                        .await
                        .map_err(|error| error.to_string());
                    *probe = Some((std::time::Instant::now(), result.clone()));
                    result.err()
                }
            }
        };
        let plugins_loaded = self.shared.gateway.registry().active().len();
        let mut problems = Vec::new();
        if plugins_loaded == 0 {
            problems.push("no plugin is loaded".to_string());
        }
        if let Some(error) = &ledger_error {
            problems.push(format!("the ledger cannot take a write: {error}"));
        }
        Readiness {
            problems,
            plugins_loaded,
            ledger_error,
            config_error: self.shared.gateway.config_error(),
        }
    }

    /// The embedding entry point: opens the ledger `config` names (the SQLite file, or the
    /// PostgreSQL database of `[ledger] url`), starts a gateway on it and scans its plugins
    /// folder once.
    pub async fn open(config: Config) -> Result<Self, ServiceError> {
        let opening = config.clone();
        let (ledger, coordination) = tokio::task::spawn_blocking(move || {
            crate::ledger_access::open_ledger_and_coordination(&opening)
        })
        .await
        .map_err(|error| ServiceError::Internal(format!("opening the ledger: {error}")))??;
        let gateway = Gateway::start(config).await;
        if let Some(coordination) = coordination {
            gateway.coordinate_accounts(coordination).await;
        }
        Ok(Self::new(gateway, ledger))
    }

    pub fn gateway(&self) -> &Gateway {
        &self.shared.gateway
    }

    /// The ledger, every call off the async workers.
    pub fn ledger(&self) -> &AsyncLedger {
        &self.shared.ledger
    }

    /// Runs a command. Money-moving commands and payment pages are recorded in the ledger
    /// before they are sent, and a retry with the same `idempotency_key` is answered from it;
    /// the others go straight to the gateway.
    pub async fn execute(
        &self,
        provider: &str,
        account: &str,
        command: Command,
        idempotency_key: Option<String>,
    ) -> Result<CommandAnswer, ServiceError> {
        if let Some(key) = &idempotency_key {
            validate_key(key)?;
        }
        let operation = command.operation();
        // Kept only for a keyed recorded command, whose retry may need answering when the checks
        // refuse it (below).
        let retry_copy = (idempotency_key.is_some() && records(operation)).then(|| command.clone());
        let prepared = match self.shared.gateway.prepare(provider, account, command) {
            Ok(prepared) => prepared,
            Err(refusal) => {
                // Refused before anything is recorded or sent, so that a refusal that may pass
                // later (a paused account) does not bind the key. A retry of a command already
                // recorded is answered from the ledger even then: its outcome does not depend on
                // the account's state now.
                if let (Some(key), Some(command)) = (&idempotency_key, retry_copy)
                    && let Some(entry) = self
                        .shared
                        .ledger
                        .find_by_key(provider, account, key)
                        .await?
                {
                    if entry.request_hash != request_hash(provider, account, &command) {
                        return Err(LedgerError::KeyReused { key: key.clone() }.into());
                    }
                    return self.replay(entry).await;
                }
                return Err(refusal.into());
            }
        };
        match prepared.into_door() {
            Door::Direct(command) => self.execute_direct(command).await,
            Door::Recorded(command) => self.execute_recorded(command, idempotency_key).await,
        }
    }

    async fn execute_direct(&self, command: DirectCommand) -> Result<CommandAnswer, ServiceError> {
        let dispatched = self.shared.gateway.dispatch(command).await?;
        Ok(CommandAnswer {
            reference: dispatched.reference,
            outcome: dispatched.outcome,
            plugin_version: Some(dispatched.plugin_version),
            replayed: false,
            provider_requests: dispatched.provider_requests,
        })
    }

    async fn execute_recorded(
        &self,
        command: RecordedCommand,
        idempotency_key: Option<String>,
    ) -> Result<CommandAnswer, ServiceError> {
        let id = new_reference();
        let key_of = idempotency_key.as_ref().map(|key| {
            let prepared = command.prepared();
            (
                prepared.provider().to_string(),
                prepared.account().to_string(),
                key.clone(),
            )
        });
        // Claim the entry and its key in this process before the ledger sees them: a concurrent
        // retry then waits for this attempt instead of finding its entry `sending` with nobody
        // (it seems) running it, and reconciliation leaves the entry alone.
        let guard = loop {
            match self.shared.in_flight.claim(&id, key_of.clone()) {
                Claim::Mine(guard) => break guard,
                Claim::Busy(mut running) => {
                    let waited =
                        tokio::time::timeout(RETRY_WAIT, running.wait_for(|done| *done)).await;
                    if waited.is_err() {
                        return Err(ServiceError::InProgress);
                    }
                }
            }
        };
        let mut new_entry = command.new_entry(id, idempotency_key);
        new_entry.actor = Some(self.actor.to_string());
        let (reservation, begun) = match self
            .shared
            .ledger
            .write(move |ledger| reserve(ledger, new_entry))
            .await?
        {
            Reserved::New(reservation, begun) => {
                tracing::debug!(
                    entry = reservation.id(),
                    state = "sending",
                    "ledger entry reserved"
                );
                (reservation, begun)
            }
            Reserved::Existing(entry) => {
                drop(guard);
                return self.replay(entry).await;
            }
        };
        // The dispatch runs to its end even if the caller goes away (an HTTP client that hangs
        // up drops its request's future): an entry must not stay `sending` for that.
        let service = self.clone();
        // The task keeps the caller's span (an API request's id) for its log lines.
        let span = tracing::Span::current();
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                // Boxed: the dispatch's future is large (the flow, the HTTP exchange, the
                // ledger calls), and tokio moves a task's whole future on every state change
                // of the task (spawn, poll, output taken, handle dropped); a box makes those
                // moves a pointer's (callgrind: memcpy 187 k → 64 k instructions per charge).
                let answer = Box::pin(service.send_reserved(command, reservation, begun)).await;
                drop(guard);
                answer
            },
            span,
        ))
        .await
        .unwrap_or_else(|error| {
            Err(ServiceError::Internal(format!(
                "the dispatch ended abnormally: {error}; the entry is left for reconciliation"
            )))
        })
    }

    async fn send_reserved(
        &self,
        command: RecordedCommand,
        reservation: Reservation,
        begun: Entry,
    ) -> Result<CommandAnswer, ServiceError> {
        let id = reservation.id().to_string();
        match self
            .shared
            .gateway
            .dispatch_recorded(command, reservation)
            .await
        {
            Ok(dispatched) => {
                let outcome = dispatched.outcome.clone();
                let recorded = self
                    .shared
                    .ledger
                    .write(move |ledger| ledger.record_outcome_of_begun(begun, &outcome))
                    .await;
                match &recorded {
                    Ok(entry) => tracing::debug!(
                        entry = %id,
                        state = entry.state.as_str(),
                        "ledger outcome recorded"
                    ),
                    // The provider acted but the ledger could not say so: the entry stays
                    // `sending` and reconciliation will settle it. Tell the caller the truth.
                    Err(error) => {
                        tracing::error!(%id, %error, "outcome not recorded; left for reconciliation")
                    }
                }
                Ok(CommandAnswer {
                    reference: Some(id),
                    outcome: dispatched.outcome,
                    plugin_version: Some(dispatched.plugin_version),
                    replayed: false,
                    provider_requests: dispatched.provider_requests,
                })
            }
            Err(error) => {
                // Nothing reached the provider (the gateway turns every post-send failure of a
                // money-moving command into an outcome), so the entry is a definitive refusal.
                // A "not now" (the rate limit, a pause, a plugin or host briefly unavailable)
                // releases the key as well: the caller's retry with it must run, not replay.
                let (entry_id, code, message) = (id, error.code(), error.to_string());
                let transient = refusal_is_transient(code);
                if let Err(ledger_error) = self
                    .shared
                    .ledger
                    .write(move |ledger| {
                        if transient {
                            ledger.record_transient_refusal(&entry_id, code.as_str(), &message)
                        } else {
                            ledger.record_refusal(&entry_id, code.as_str(), &message)
                        }
                    })
                    .await
                {
                    tracing::error!(%ledger_error, "refusal not recorded; left for reconciliation");
                }
                Err(ServiceError::Dispatch(error))
            }
        }
    }

    /// Answers a retry from what the ledger holds, waiting for a dispatch still running here.
    async fn replay(&self, entry: Entry) -> Result<CommandAnswer, ServiceError> {
        let mut entry = entry;
        if entry.state == EntryState::Sending
            && let Some(mut running) = self.shared.in_flight.waiter(&entry.id)
        {
            let _ = tokio::time::timeout(RETRY_WAIT, running.wait_for(|done| *done)).await;
            entry =
                self.shared.ledger.get(&entry.id).await?.ok_or_else(|| {
                    ServiceError::Internal(format!("entry {} vanished", entry.id))
                })?;
        } else if entry.state == EntryState::Sending {
            entry = self.wait_for_peer(entry).await?;
        }
        if let (None, Some(refusal)) = (&entry.outcome, &entry.refusal) {
            return Err(ServiceError::RecordedRefusal {
                code: ErrorCode::parse(&refusal.code).unwrap_or(ErrorCode::InternalError),
                message: refusal.message.clone(),
            });
        }
        let outcome = match (&entry.outcome, entry.state) {
            (Some(outcome), _) => outcome.clone(),
            // Left `sending` by a crash or by another process: it may have reached the
            // provider. Reconciliation settles it.
            (None, EntryState::Sending) => Outcome::unknown(ProviderError::new(
                ErrorKind::ProviderUnavailable,
                "the first attempt was interrupted; the entry is being reconciled with the provider",
            )),
            (None, EntryState::NeedsOperator) => Outcome::unknown(ProviderError::new(
                ErrorKind::ProviderError,
                "the entry needs an operator's decision",
            )),
            (None, _) => Outcome::new(state_to_status(entry.state)),
        };
        Ok(CommandAnswer {
            reference: Some(entry.id.clone()),
            outcome,
            plugin_version: None,
            replayed: true,
            provider_requests: 0,
        })
    }

    /// An entry `sending` that no dispatch of this process runs: on a shared ledger, another live
    /// host may be sending it right now. Its outcome lands in the ledger; polled for here (every
    /// [`PEER_POLL`], for at most [`RETRY_WAIT`]) rather than calling the first attempt
    /// interrupted. Returns at once when no live peer sends it (a crash's leftover).
    async fn wait_for_peer(&self, entry: Entry) -> Result<Entry, ServiceError> {
        let deadline = tokio::time::Instant::now() + RETRY_WAIT;
        let id = entry.id;
        loop {
            let asked = id.clone();
            let peer_sends = self
                .shared
                .ledger
                .call(move |ledger| ledger.sent_by_a_live_peer(&asked))
                .await?;
            if peer_sends && tokio::time::Instant::now() >= deadline {
                return Err(ServiceError::InProgress);
            }
            if peer_sends {
                tokio::time::sleep(PEER_POLL).await;
            }
            // Read after asking: "no live peer sends it" is also what the answer is once the
            // peer has just recorded its outcome, which the entry read before did not hold.
            let entry = self
                .shared
                .ledger
                .get(&id)
                .await?
                .ok_or_else(|| ServiceError::Internal(format!("entry {id} vanished")))?;
            if !peer_sends || entry.state != EntryState::Sending {
                return Ok(entry);
            }
        }
    }

    /// Settles `unknown`, `pending` and crash-interrupted entries through the provider's status
    /// operation, or flags them for an operator when the provider cannot tell.
    pub async fn reconcile(&self, limit: usize) -> ReconcileReport {
        self.reconcile_with(limit, Duration::ZERO).await
    }

    /// Like [`Service::reconcile`], but leaves alone entries still `sending` that are younger
    /// than `sending_min_age`: run from another process than the server, this process cannot
    /// see which dispatches the server still has in flight.
    pub async fn reconcile_with(&self, limit: usize, sending_min_age: Duration) -> ReconcileReport {
        let report = self.reconcile_pass(limit, sending_min_age).await;
        let metrics = self.shared.gateway.metrics();
        metrics.increment("gatehouse_reconciliation_passes_total", &[]);
        let count = |value: usize| u64::try_from(value).unwrap_or(u64::MAX);
        for (result, value) in [
            ("resolved", report.resolved),
            ("still_open", report.still_open),
            ("flagged_for_operator", report.flagged_for_operator),
            ("error", report.errors.len()),
        ] {
            metrics.increment_by(
                "gatehouse_reconciliation_entries_total",
                &[("result", result)],
                count(value),
            );
        }
        report
    }

    /// One pass: claims entries (in batches on a shared ledger, so the hosts reconciling one
    /// backlog split it and none asks about an entry another is asking about), leaves alone
    /// those in flight, and reconciles the rest, each account's entries one at a time at
    /// reconciliation's pace (`pacing.rs`), different accounts side by side.
    async fn reconcile_pass(&self, limit: usize, sending_min_age: Duration) -> ReconcileReport {
        let _one_pass_at_a_time = self.shared.reconciling.lock().await;
        let pass = uuid::Uuid::new_v4().to_string();
        let mut report = ReconcileReport::default();
        let now = unix_now();
        // Claimed, then left alone: released at the end of the pass (not at once, or the next
        // batch would claim them again).
        let mut left_alone: Vec<String> = Vec::new();
        let mut claimed = 0;
        while claimed < limit {
            let batch_size = if self.shared.instance.shared {
                RECONCILE_BATCH.min(limit - claimed)
            } else {
                limit
            };
            let this_pass = pass.clone();
            let batch = match self
                .shared
                .ledger
                .call(move |ledger| {
                    ledger.claim_for_reconciliation(&this_pass, batch_size, RECONCILE_CLAIM)
                })
                .await
            {
                Ok(batch) => batch,
                Err(error) => {
                    report.errors.push(error.to_string());
                    break;
                }
            };
            if batch.is_empty() {
                break;
            }
            claimed += batch.len();
            let mut by_account: Vec<((String, String), Vec<Entry>)> = Vec::new();
            for entry in batch {
                if self
                    .leave_alone(&entry, now, sending_min_age, &mut report)
                    .await
                {
                    left_alone.push(entry.id);
                    continue;
                }
                let account = (entry.provider.clone(), entry.account.clone());
                match by_account.iter_mut().find(|(key, _)| *key == account) {
                    Some((_, entries)) => entries.push(entry),
                    None => by_account.push((account, vec![entry])),
                }
            }
            let mut accounts = tokio::task::JoinSet::new();
            for (_, entries) in by_account {
                let service = self.clone();
                accounts.spawn(async move {
                    let mut report = ReconcileReport::default();
                    for entry in entries {
                        report.examined += 1;
                        service.reconcile_entry(entry, &mut report).await;
                    }
                    report
                });
            }
            while let Some(done) = accounts.join_next().await {
                match done {
                    Ok(account_report) => report.absorb(account_report),
                    Err(error) => report
                        .errors
                        .push(format!("a reconciliation task ended abnormally: {error}")),
                }
            }
            if !self.shared.instance.shared {
                break;
            }
        }
        if !left_alone.is_empty() {
            let released = self
                .shared
                .ledger
                .call(move |ledger| ledger.release_reconciliation_claims(&left_alone))
                .await;
            if let Err(error) = released {
                // They expire on their own: the next passes merely wait for that.
                report.errors.push(error.to_string());
            }
        }
        report
    }

    /// Whether a pass must leave `entry` alone for now: this process is sending it, it is
    /// `sending` and younger than `sending_min_age`, or a live peer sends it (a shared ledger:
    /// its sender records the outcome; the entry is reconciled once that host's lease expired).
    async fn leave_alone(
        &self,
        entry: &Entry,
        now: i64,
        sending_min_age: Duration,
        report: &mut ReconcileReport,
    ) -> bool {
        if self.shared.in_flight.contains(&entry.id) {
            return true;
        }
        if entry.state != EntryState::Sending {
            return false;
        }
        if now.saturating_sub(entry.created_at_unix) < sending_min_age.as_secs() as i64 {
            report.still_open += 1;
            return true;
        }
        let id = entry.id.clone();
        match self
            .shared
            .ledger
            .call(move |ledger| ledger.sent_by_a_live_peer(&id))
            .await
        {
            Ok(false) => false,
            Ok(true) => {
                report.still_open += 1;
                true
            }
            Err(error) => {
                report.errors.push(error.to_string());
                true
            }
        }
    }

    /// Waits for reconciliation's budget on the entry's account before a status call.
    async fn pace(&self, entry: &Entry) {
        let Some(rate_limit) = self
            .shared
            .gateway
            .config()
            .account(&entry.provider, &entry.account)
            .map(|account| account.rate_limit_per_minute)
        else {
            return;
        };
        let wait = self.shared.pacer.reserve(
            &entry.provider,
            &entry.account,
            Budget::for_rate_limit(rate_limit),
            std::time::Instant::now(),
        );
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    async fn reconcile_entry(&self, entry: Entry, report: &mut ReconcileReport) {
        let Some(plugin) = self.shared.gateway.registry().get(&entry.provider) else {
            report.still_open += 1;
            return;
        };
        // The status operation describes charges (and the payment pages that become charges);
        // other money movements only where the plugin's manifest says it can tell (`status_of`).
        // Asked about a refund it cannot describe, it would answer with the charge's state: a
        // lost refund of a `done` charge would read as succeeded. Those go to an operator.
        let asked_as = match entry.operation {
            Operation::PaymentPage => Operation::Charge,
            other => other,
        };
        let why_operator = if !plugin.manifest.supports(Operation::Status) {
            Some(
                "the provider has no status operation: check the transaction in its back office"
                    .to_string(),
            )
        } else if !plugin.manifest.status_describes(asked_as) {
            Some(format!(
                "the provider's status operation cannot describe a {}: check it in the provider's back office",
                entry.operation
            ))
        } else {
            None
        };
        if let Some(why) = why_operator {
            if entry.state == EntryState::Pending {
                // The provider accepted it and will say more (webhook): nothing is unknown.
                report.still_open += 1;
            } else {
                let id = entry.id.clone();
                match self
                    .shared
                    .ledger
                    .call(move |ledger| ledger.flag_for_operator(&id, &why))
                    .await
                {
                    Ok(_) => report.flagged_for_operator += 1,
                    Err(error) => report.errors.push(format!("{}: {error}", entry.id)),
                }
            }
            return;
        }
        let command = status_command(&entry, asked_as);
        self.pace(&entry).await;
        let result = match self
            .shared
            .gateway
            .prepare(&entry.provider, &entry.account, command)
            .map(|prepared| prepared.into_door())
        {
            Ok(Door::Direct(command)) => self.shared.gateway.dispatch(command).await,
            Ok(Door::Recorded(_)) => unreachable!("a status command is never recorded"),
            Err(refusal) => Err(refusal),
        };
        let outcome = match result {
            Ok(dispatched) => {
                let mut outcome = dispatched.outcome;
                if outcome.amount.is_none() {
                    outcome.amount = entry.amount;
                }
                if outcome.provider_reference.is_none() {
                    outcome.provider_reference = entry.provider_reference.clone();
                }
                outcome
            }
            // A page the customer has not paid yet is unknown to the provider: not a failure.
            Err(DispatchError::Provider(error))
                if error.kind == ErrorKind::NotFound
                    && entry.operation == Operation::PaymentPage =>
            {
                report.still_open += 1;
                return;
            }
            Err(DispatchError::Provider(error)) if error.kind == ErrorKind::NotFound => {
                // The provider has no record of our reference: the request never reached it.
                Outcome::failed(error)
            }
            Err(error) => {
                report.still_open += 1;
                report.errors.push(format!("{}: {error}", entry.id));
                return;
            }
        };
        if asked_as != Operation::Charge && outcome.status == OutcomeStatus::Unknown {
            // The provider was asked about this very refund or payout and its records cannot
            // tell (Xsolla cannot tell a partial refund of a `done` transaction from none):
            // asking again will not tell either. A person must look.
            let why = format!(
                "the provider's records cannot tell whether this {} was made: check it in the provider's back office",
                entry.operation
            );
            let id = entry.id.clone();
            match self
                .shared
                .ledger
                .call(move |ledger| ledger.flag_for_operator(&id, &why))
                .await
            {
                Ok(_) => report.flagged_for_operator += 1,
                Err(error) => report.errors.push(format!("{}: {error}", entry.id)),
            }
            return;
        }
        let final_now = outcome.status.is_final();
        let id = entry.id.clone();
        match self
            .shared
            .ledger
            .call(move |ledger| ledger.record_outcome(&id, &outcome))
            .await
        {
            Ok(_) if final_now => report.resolved += 1,
            Ok(_) => report.still_open += 1,
            Err(error) => report.errors.push(format!("{}: {error}", entry.id)),
        }
    }

    /// An operator's decision on one entry ([`Ledger::settle`]): recorded in its history with
    /// this handle's actor and the time. Refused for an entry that is final or `sending`.
    pub async fn settle(
        &self,
        id: &str,
        state: EntryState,
        provider_reference: Option<String>,
        reason: &str,
    ) -> Result<Entry, ServiceError> {
        let settlement = gatehouse_ledger::Settlement {
            state,
            provider_reference,
            reason: reason.to_string(),
            actor: self.actor.to_string(),
        };
        let id_owned = id.to_string();
        let entry = self
            .shared
            .ledger
            .call(move |ledger| ledger.settle(&id_owned, &settlement))
            .await?;
        tracing::info!(
            entry = id,
            state = entry.state.as_str(),
            actor = %self.actor,
            "ledger entry settled by an operator"
        );
        Ok(entry)
    }

    /// Reconciles one entry now, as a pass would (the provider's status operation, or a flag for
    /// an operator when the provider cannot tell), and returns it with what happened. An entry
    /// `needs_operator` is asked about again (the provider may know by now); a final one is
    /// [`ServiceError::EntryFinal`]; one this process is sending, or a `sending` one younger than
    /// `sending_min_age` (another process may be sending it), is [`ServiceError::EntryInFlight`].
    pub async fn reconcile_one(
        &self,
        id: &str,
        sending_min_age: Duration,
    ) -> Result<(Entry, ReconcileReport), ServiceError> {
        let entry = self
            .shared
            .ledger
            .get(id)
            .await?
            .ok_or_else(|| LedgerError::NotFound { id: id.to_string() })?;
        if entry.state.is_final() {
            return Err(ServiceError::EntryFinal {
                id: entry.id,
                state: entry.state,
            });
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs() as i64);
        if self.shared.in_flight.contains(&entry.id)
            || (entry.state == EntryState::Sending
                && now.saturating_sub(entry.created_at_unix) < sending_min_age.as_secs() as i64)
        {
            return Err(ServiceError::EntryInFlight { id: entry.id });
        }
        tracing::info!(entry = id, actor = %self.actor, "reconciliation of one entry asked");
        let mut report = ReconcileReport {
            examined: 1,
            ..ReconcileReport::default()
        };
        self.reconcile_entry(entry, &mut report).await;
        let entry = self
            .shared
            .ledger
            .get(id)
            .await?
            .ok_or_else(|| LedgerError::NotFound { id: id.to_string() })?;
        Ok((entry, report))
    }

    /// Verifies, stores and applies an inbound webhook; returns the answer for the provider.
    ///
    /// For a plugin whose manifest declares `unsigned_callbacks` (callbacks anyone could forge,
    /// which the plugin confirms with the provider), the host first reads the reference the
    /// callback names: one naming no entry of this account, or an entry already final (an event
    /// can no longer change it), is acknowledged without calling the provider; identical
    /// callbacks in flight share one confirmation; and confirmations spend a budget of their own
    /// (`webhook_confirmations_*`), never the commands'.
    pub async fn webhook(
        &self,
        provider: &str,
        account: &str,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    ) -> Result<WebhookHandling, ServiceError> {
        let prepared =
            self.shared
                .gateway
                .prepare(provider, account, Command::Webhook { headers })?;
        let Some(unsigned) = prepared.manifest().unsigned_callbacks.clone() else {
            return self.verify_webhook(prepared, provider, account, body).await;
        };
        let reference = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|json| match json.pointer(&unsigned.reference_pointer) {
                Some(serde_json::Value::String(text)) => Some(text.clone()),
                Some(serde_json::Value::Number(number)) => Some(number.to_string()),
                _ => None,
            });
        // An unreadable callback costs the plugin a parse and no request: let it answer.
        let Some(reference) = reference else {
            return self.verify_webhook(prepared, provider, account, body).await;
        };
        let entry = self.shared.ledger.get(&reference).await?;
        let worth_confirming = entry.is_some_and(|entry| {
            entry.provider == provider && entry.account == account && !entry.state.is_final()
        });
        if !worth_confirming {
            self.shared.gateway.metrics().increment(
                "gatehouse_webhook_events_total",
                &[
                    ("provider", provider),
                    ("result", "acknowledged_unconfirmed"),
                ],
            );
            return Ok(WebhookHandling {
                reply: unsigned.acknowledgement,
                stored: false,
            });
        }
        let key: CallbackKey = (
            provider.to_string(),
            account.to_string(),
            sha2::Sha256::digest(&body).into(),
        );
        let shared = self
            .lock_confirmations()
            .entry(key.clone())
            .or_default()
            .clone();
        // Whoever leaves last-or-first removes the flight, cancelled or not, so the map holds
        // only callbacks being confirmed now.
        let _leave = LeaveFlight {
            confirmations: &self.shared.confirmations,
            key,
            shared: shared.clone(),
        };
        let answer = shared
            .get_or_init(|| async {
                self.verify_webhook(prepared, provider, account, body)
                    .await
                    .map_err(|error| (error.code(), error.to_string()))
            })
            .await;
        answer
            .clone()
            .map_err(|(code, message)| ServiceError::Shared { code, message })
    }

    fn lock_confirmations(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<CallbackKey, Arc<SharedConfirmation>>> {
        // The map holds no invariant a panic could break.
        self.shared
            .confirmations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs the plugin's verification of a webhook, stores and applies its verified event.
    async fn verify_webhook(
        &self,
        prepared: gatehouse_core::Prepared,
        provider: &str,
        account: &str,
        body: Vec<u8>,
    ) -> Result<WebhookHandling, ServiceError> {
        let dispatched = match prepared.into_door() {
            Door::Direct(command) => {
                self.shared
                    .gateway
                    .dispatch(command.with_inbound_body(body))
                    .await
            }
            Door::Recorded(_) => unreachable!("a webhook is never recorded"),
        };
        let outcome = match dispatched {
            Ok(dispatched) => dispatched.outcome,
            // The confirmation could not be asked (its budget spent, the provider down): the
            // provider resends a callback answered 503; reconciliation settles the entry anyway.
            Err(DispatchError::Provider(error)) if error.kind == ErrorKind::ProviderUnavailable => {
                return Err(DispatchError::Provider(error).into());
            }
            Err(DispatchError::Provider(error)) if error.kind != ErrorKind::PluginFault => {
                Outcome::failed(error)
            }
            Err(other) => return Err(other.into()),
        };
        let Details::Webhook(result) = outcome.details else {
            return Err(ServiceError::Dispatch(DispatchError::Provider(
                ProviderError::plugin_fault(
                    "the plugin answered a webhook without a webhook result",
                ),
            )));
        };
        let mut stored = false;
        if let Some(event) = result.event.as_ref().filter(|event| event.verified) {
            let (stored_provider, stored_account, stored_event) =
                (provider.to_string(), account.to_string(), event.clone());
            stored = self
                .shared
                .ledger
                .call(move |ledger| {
                    ledger.record_event(&stored_provider, &stored_account, &stored_event)
                })
                .await?;
            if stored {
                let (applied_provider, applied_event) = (provider.to_string(), event.clone());
                let applied = self
                    .shared
                    .ledger
                    .call(move |ledger| ledger.apply_event(&applied_provider, &applied_event))
                    .await;
                match applied {
                    Ok(Some(entry)) => {
                        tracing::info!(id = %entry.id, state = entry.state.as_str(), "webhook applied")
                    }
                    Ok(None) => {}
                    Err(error) => tracing::error!(%error, "webhook event stored but not applied"),
                }
                self.shared.gateway.metrics().increment(
                    "gatehouse_webhook_events_total",
                    &[("provider", provider), ("result", "stored")],
                );
            } else {
                self.shared.gateway.metrics().increment(
                    "gatehouse_webhook_events_total",
                    &[("provider", provider), ("result", "replay")],
                );
            }
        } else {
            self.shared.gateway.metrics().increment(
                "gatehouse_webhook_events_total",
                &[("provider", provider), ("result", "refused")],
            );
        }
        Ok(WebhookHandling {
            reply: result.reply,
            stored,
        })
    }

    /// Runs reconciliation every `interval` until the task is aborted.
    pub fn spawn_reconciler(&self, interval: Duration) -> tokio::task::JoinHandle<()> {
        let service = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            // A paced pass over a backlog may outlast the interval: the next starts after it.
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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

/// The status question reconciliation asks about `entry`, as a transaction of `asked_as`.
fn status_command(entry: &Entry, asked_as: Operation) -> Command {
    let (transaction_id, of, amount) = match (&entry.command, asked_as) {
        (_, Operation::Charge) => (entry.provider_reference.clone(), None, None),
        // A refund is looked up under the charge it refunds; the amount tells a partial refund
        // from a full one.
        (
            Command::Refund {
                transaction_id,
                amount,
                ..
            },
            _,
        ) => (Some(transaction_id.clone()), Some(asked_as), *amount),
        (_, other) => (entry.provider_reference.clone(), Some(other), entry.amount),
    };
    Command::Status {
        transaction_id,
        reference: Some(entry.id.clone()),
        of,
        amount,
        extra: Default::default(),
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

/// Refusals that say "not now" rather than "not this": the same command, retried later with its
/// key, may well run, so recording them must not bind the key. The others (an invalid request, a
/// misconfigured account) would be refused again and are answered from the ledger.
fn refusal_is_transient(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::RateLimited
            | ErrorCode::AccountPaused
            | ErrorCode::ShuttingDown
            | ErrorCode::PluginUnavailable
            | ErrorCode::LedgerError
    )
}
