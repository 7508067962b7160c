//! The ledger: the host's durable record of every command it was asked to run, so that nothing is
//! lost and nothing is done twice (`DESIGN.md`, "Nothing lost, nothing twice").
//!
//! A money-moving command is written here in state [`EntryState::Sending`] *before* its first
//! request leaves the host, under the host-made reference that doubles as the provider's
//! idempotency identifier. The dispatch's result, a refusal, verified webhook events and
//! reconciliation then move the entry on. A caller's `Idempotency-Key` maps to exactly one entry:
//! a retry finds it ([`Begin::Existing`]) and never reaches the provider a second time, and the
//! same key with a different body is refused ([`LedgerError::KeyReused`]).
//!
//! Architecture Invariant: a final state (`succeeded`, `failed`) is never moved back to
//! `pending` or `unknown`, and never silently flipped to the other final state: a contradiction is
//! kept in the entry's history and flagged for an operator, because only a person can tell which
//! side is right once money may have moved.
//!
//! [`Ledger`] is the interface; [`SqliteLedger`] is the embedded implementation (one file, WAL),
//! and `PostgresLedger` (feature `postgres`, on by default) the one several host instances share.
//! Both take their decisions (what an outcome or an event does to an entry) from `rules`, and
//! one test suite runs against both.
//!
//! Architecture Invariant: [`reserve`] is the only maker of a [`Reservation`], and it makes one
//! only for an entry [`Ledger::begin`] has just created, durably, in state `sending`. The core's
//! gateway sends a command the ledger records only with a reservation for that very command
//! (`gatehouse_core::prepared`), so no caller can send money the ledger does not know about.

pub mod coordination;
mod fleet;
#[cfg(feature = "postgres")]
mod postgres;
mod rules;
mod sqlite;

use std::fmt;
use std::time::Duration;

use gatehouse_plugin_api::{Command, Money, Operation, Outcome, OutcomeStatus, WebhookEvent};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use coordination::AccountCoordination;
pub use fleet::{FleetHost, Forwarding, ForwardingLease, HostRegistration, ServedPlugin};
#[cfg(feature = "postgres")]
pub use postgres::{PostgresLedger, PostgresOptions};
pub use sqlite::SqliteLedger;

/// The host's durable record of commands, their outcomes and the webhook events received.
///
/// Every method is one atomic step: an implementation never leaves half of a change behind.
pub trait Ledger: Send + Sync {
    /// Atomically: if `new.idempotency_key` is Some and an entry exists for (provider, account, key):
    /// same request_hash -> `Ok(Begin::Existing(entry))`; different hash -> `Err(LedgerError::KeyReused{..})`.
    /// Otherwise inserts a new entry in state `Sending` (written BEFORE the request is sent) with
    /// history event "created", and returns `Ok(Begin::Created(entry))`.
    fn begin(&self, new: NewEntry) -> Result<Begin, LedgerError>;

    /// Whether this backend's writes are best made by one thread of the caller's, several at a
    /// time through [`Ledger::write_together`], rather than each on a thread of its own: true
    /// for SQLite, whose one connection takes one write at a time anyway, so that a thread per
    /// write only adds hand-offs (a wake, a lock, a condition variable) around the same
    /// serial work. False (the default) where concurrent writers are the way to batch
    /// (PostgreSQL's group commit).
    fn batches_on_one_thread(&self) -> bool {
        false
    }

    /// Runs `writes`, which makes ledger calls on this thread, so that the writes it makes
    /// commit together: one transaction (and one fsync) for all of them, at its end, where the
    /// backend can hold a batch open for one thread; `writes` must never wait for another
    /// thread's ledger call. Returns once everything written is durable, or the commit's error:
    /// a write's own result is only true once this has returned `Ok`. The default runs `writes`
    /// as it is (each write commits by itself).
    fn write_together(&self, writes: &mut dyn FnMut()) -> Result<(), LedgerError> {
        writes();
        Ok(())
    }

    /// Records a dispatch's result: state from `outcome.status`, the outcome, the provider's
    /// reference; appends a history event. Returns the updated entry.
    ///
    /// A final entry keeps its state (a webhook may have finished it while the flow was still
    /// running); an outcome contradicting it is kept in history and flagged for an operator.
    fn record_outcome(&self, id: &str, outcome: &Outcome) -> Result<Entry, LedgerError>;

    /// [`Ledger::record_outcome`] for the dispatch a [`Reservation`] authorized, given `begun`:
    /// the entry as [`Ledger::begin`] wrote it. The result is the same; a backend may save it
    /// with a compare-and-set against `begun` instead of reading and parsing the entry first (one
    /// statement less per charge), and when anything wrote the entry in between (a webhook, a
    /// reconciler on another host) it does what `record_outcome` does.
    fn record_outcome_of_begun(
        &self,
        begun: Entry,
        outcome: &Outcome,
    ) -> Result<Entry, LedgerError> {
        self.record_outcome(&begun.id, outcome)
    }

    /// Records that the host refused or could not run the command before anything was sent
    /// (state `Failed`, with the error code and message); appends a history event.
    ///
    /// Only an entry still `Sending` can be refused: calling an entry `failed` once it may have
    /// reached the provider would invite the caller to pay twice, so any other state is
    /// [`LedgerError::NotSending`].
    fn record_refusal(&self, id: &str, code: &str, message: &str) -> Result<Entry, LedgerError>;

    /// Records a refusal that said "not now" (the account's rate limit, a pause met after the
    /// entry was begun) like [`Ledger::record_refusal`], and in the same transaction releases the
    /// entry's idempotency key: a caller told 429 retries with the same key, as every client
    /// library does, and that retry must run afresh rather than replay the 429 for ever. The
    /// entry stays, `failed` and keyless, its history naming the key it released.
    fn record_transient_refusal(
        &self,
        id: &str,
        code: &str,
        message: &str,
    ) -> Result<Entry, LedgerError>;

    /// Marks an entry as needing an operator (the provider has no status operation, or
    /// reconciliation gave up). An unresolved entry moves to `NeedsOperator`; a final one keeps its
    /// state and only gains [`Entry::operator_flag`].
    fn flag_for_operator(&self, id: &str, reason: &str) -> Result<Entry, LedgerError>;

    /// An operator's decision: moves an entry a person was asked to look at (or one whose fate
    /// the host cannot tell) to a final state by hand.
    ///
    /// Only an entry in a state [`EntryState::is_settleable`] accepts it (`needs_operator`,
    /// `unknown`, `pending`); any other is [`LedgerError::NotSettleable`]: a final state is the
    /// provider's word and is not overwritten, and a `sending` entry may be in flight right now
    /// (reconcile it first). The entry takes `settlement.state`, the provider's reference when
    /// one is given, loses its operator flag, and gains a history event carrying the reason and
    /// `settlement.actor`, stamped now. The outcome kept for idempotent retries takes the new
    /// status, so a retry is answered with the operator's decision.
    fn settle(&self, id: &str, settlement: &Settlement) -> Result<Entry, LedgerError>;

    fn get(&self, id: &str) -> Result<Option<Entry>, LedgerError>;

    fn find_by_key(
        &self,
        provider: &str,
        account: &str,
        idempotency_key: &str,
    ) -> Result<Option<Entry>, LedgerError>;

    /// Newest first (in insertion order, so a page boundary never moves: entries inserted
    /// meanwhile come before the first page, never inside a later one); filters optional. The state filter `NeedsOperator` matches every entry an
    /// operator must look at: those in that state and final entries carrying an operator flag.
    fn list(&self, filter: &ListFilter) -> Result<Vec<Entry>, LedgerError>;

    /// How many entries are in each state (states without entries are absent).
    fn count_by_state(&self) -> Result<Vec<(EntryState, u64)>, LedgerError>;

    /// The entry's history, oldest first.
    fn history(&self, id: &str) -> Result<Vec<HistoryEvent>, LedgerError>;

    /// Entries whose state is `Sending` (left by a crash, or in flight right now), `Unknown` or
    /// `Pending`: what reconciliation looks at. Least recently updated first, so entries that
    /// reconciliation touched move to the back of the queue.
    fn unresolved(&self, limit: usize) -> Result<Vec<Entry>, LedgerError>;

    /// Like [`Ledger::unresolved`], but only entries not updated since `updated_before_unix`:
    /// reconciliation uses it to leave alone the `Sending` entries whose flow is still running.
    fn unresolved_before(
        &self,
        updated_before_unix: i64,
        limit: usize,
    ) -> Result<Vec<Entry>, LedgerError>;

    /// Stores a webhook event once: returns `Ok(false)` if (provider, event_id) was stored already
    /// (a replay).
    fn record_event(
        &self,
        provider: &str,
        account: &str,
        event: &WebhookEvent,
    ) -> Result<bool, LedgerError>;

    /// Applies a verified event to the entry whose reference (id) or provider_reference matches,
    /// if any: updates the state (never moves a final Succeeded/Failed entry back to
    /// Pending/Unknown; an event that contradicts a final state is recorded in history only and
    /// flagged for an operator), appends history. Returns the entry changed, if one was.
    ///
    /// Unverified events change nothing and return `None`. An event whose type names another
    /// kind of transaction than the entry's (a `refund` event carrying the reference of the
    /// charge it refunds) is noted in that entry's history without changing its state.
    fn apply_event(
        &self,
        provider: &str,
        event: &WebhookEvent,
    ) -> Result<Option<Entry>, LedgerError>;

    /// Stored events, oldest first, with a sequence number greater than `after` (for an events
    /// feed: pass the last sequence seen).
    fn events(&self, after: i64, limit: usize) -> Result<Vec<StoredEvent>, LedgerError>;

    /// Proves the ledger can take a write now: a small durable write that changes no entry,
    /// committed like any other (for `/readyz`: a full disk or a read-only file must make the
    /// host unready before a charge finds out).
    fn probe_write(&self) -> Result<(), LedgerError>;

    /// Whether entry `id` is being sent right now by another host instance that is alive (its
    /// lease in the ledger is fresh). A ledger one process owns (SQLite) answers `false`: what
    /// runs in this process the service knows itself, and nothing runs anywhere else. A shared
    /// ledger records which instance began each entry and keeps a lease per instance.
    ///
    /// A retry that finds such an entry waits for the sender's outcome instead of calling the
    /// first attempt interrupted, and reconciliation leaves the entry to its sender until the
    /// sender's lease expires.
    fn sent_by_a_live_peer(&self, id: &str) -> Result<bool, LedgerError> {
        let _ = id;
        Ok(false)
    }

    /// Reconciliation's next batch for the pass named `pass`: up to `limit` unresolved entries
    /// (as [`Ledger::unresolved`] orders them), each claimed by this instance for `hold`, so
    /// that no other host's pass asks the provider about them meanwhile. A shared ledger skips
    /// entries another host holds a fresh claim on (or is writing right now), and those this
    /// same pass claimed already; a dead claimer's claim simply expires. The entries a pass
    /// examined keep their claim until it expires, so another host's pass that starts later
    /// does not ask about them again; this host's own next pass (another `pass`) may.
    ///
    /// A ledger one process owns claims nothing: one host reconciles it.
    fn claim_for_reconciliation(
        &self,
        pass: &str,
        limit: usize,
        hold: Duration,
    ) -> Result<Vec<Entry>, LedgerError> {
        let _ = (pass, hold);
        self.unresolved(limit)
    }

    /// Gives up this instance's claims on `ids` (entries a pass claimed and then left alone:
    /// in flight here, or sent by a live peer), so the next pass, on any host, may look again.
    fn release_reconciliation_claims(&self, ids: &[String]) -> Result<(), LedgerError> {
        let _ = ids;
        Ok(())
    }

    /// Takes, or renews, the fleet's one forwarding lease for this instance for `hold`, and
    /// says where forwarding stands. A ledger one process owns answers
    /// [`ForwardingLease::NotShared`].
    fn take_forwarding_lease(&self, hold: Duration) -> Result<ForwardingLease, LedgerError> {
        let _ = hold;
        Ok(ForwardingLease::NotShared)
    }

    /// Records that every event up to `sequence` was delivered, and renews the lease for
    /// `hold`, only if this instance still holds a fresh forwarding lease; `Ok(false)` means it
    /// lost it (it must stop forwarding and ask for the lease again).
    fn record_forwarded(&self, sequence: i64, hold: Duration) -> Result<bool, LedgerError> {
        let _ = (sequence, hold);
        Ok(false)
    }

    /// Where the fleet's forwarder stands; `None` for a ledger one process owns.
    fn forwarding(&self) -> Result<Option<Forwarding>, LedgerError> {
        Ok(None)
    }

    /// Writes what this host serves into the fleet table (its row beside its lease). A ledger
    /// one process owns keeps no fleet table.
    fn register_host(&self, registration: &HostRegistration) -> Result<(), LedgerError> {
        let _ = registration;
        Ok(())
    }

    /// The hosts that registered, live or gone, oldest start first; `None` for a ledger one
    /// process owns (the fleet is then just the host asking).
    fn fleet(&self) -> Result<Option<Vec<FleetHost>>, LedgerError> {
        Ok(None)
    }

    /// This instance's name in a shared ledger's lease table; `None` for a ledger one process
    /// owns.
    fn instance_id(&self) -> Option<String> {
        None
    }
}

/// What [`Ledger::begin`] found.
#[derive(Clone, Debug, PartialEq)]
pub enum Begin {
    /// A new entry, in state `Sending`: the caller may now send the command.
    Created(Entry),
    /// The entry an earlier request with the same idempotency key and body made: the caller must
    /// answer from it and must not send anything.
    Existing(Entry),
}

impl Begin {
    pub fn entry(&self) -> &Entry {
        match self {
            Self::Created(entry) | Self::Existing(entry) => entry,
        }
    }

    pub fn into_entry(self) -> Entry {
        match self {
            Self::Created(entry) | Self::Existing(entry) => entry,
        }
    }
}

/// Proof that a command's entry is durable in the ledger in state `sending`: the ticket the
/// gateway asks for before it sends a money-moving command. Only [`reserve`] makes one; it is
/// neither `Clone` nor constructible elsewhere, and dispatching consumes it, so one entry
/// authorizes one dispatch.
#[derive(Debug, PartialEq, Eq)]
pub struct Reservation {
    id: String,
    provider: String,
    account: String,
    request_hash: String,
}

impl Reservation {
    /// The entry's id: the host-made reference the provider sees.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn provider(&self) -> &str {
        &self.provider
    }

    pub fn account(&self) -> &str {
        &self.account
    }

    /// The [`request_hash`] of the command the entry records.
    pub fn request_hash(&self) -> &str {
        &self.request_hash
    }

    pub fn into_id(self) -> String {
        self.id
    }
}

/// What [`reserve`] found.
// Made once per command and matched at once: boxing the entry would cost an allocation per
// retry and buy nothing (the same reasoning as `Begin`).
#[allow(clippy::large_enum_variant)]
#[derive(Debug, PartialEq)]
pub enum Reserved {
    /// A new entry, durable in state `sending`: the command may now be sent, once. The entry
    /// as written comes with it, for [`Ledger::record_outcome_of_begun`].
    New(Reservation, Entry),
    /// The entry an earlier request with the same idempotency key and body made: answer from it,
    /// send nothing.
    Existing(Entry),
}

/// Records `new` before it is sent ([`Ledger::begin`]) and, when the entry is new, returns the
/// reservation that lets the gateway send it. Blocking: call it off the async workers.
pub fn reserve(ledger: &dyn Ledger, new: NewEntry) -> Result<Reserved, LedgerError> {
    Ok(match ledger.begin(new)? {
        Begin::Created(entry) => Reserved::New(
            Reservation {
                id: entry.id.clone(),
                provider: entry.provider.clone(),
                account: entry.account.clone(),
                request_hash: entry.request_hash.clone(),
            },
            entry,
        ),
        Begin::Existing(entry) => Reserved::Existing(entry),
    })
}

/// A command about to be sent.
#[derive(Clone, Debug, PartialEq)]
pub struct NewEntry {
    /// The host-made reference, e.g. `gh_<32 hex>`; unique across providers.
    pub id: String,
    pub provider: String,
    pub account: String,
    pub operation: Operation,
    pub idempotency_key: Option<String>,
    /// [`request_hash`] of the command.
    pub request_hash: String,
    pub command: Command,
    /// Who asked for the command: the API key's name (never the key), `cli`, or the name an
    /// embedding platform chose (`Service::acting_as`). `None`: not said.
    pub actor: Option<String>,
}

impl NewEntry {
    /// The entry [`Ledger::begin`] writes for this one at `at`: `sending`, nothing recorded yet.
    /// A backend answers with it instead of reading back what it just wrote.
    pub(crate) fn into_sending_entry(self, at: i64) -> Entry {
        let amount = self.command.amount();
        Entry {
            id: self.id,
            provider: self.provider,
            account: self.account,
            operation: self.operation,
            idempotency_key: self.idempotency_key,
            request_hash: self.request_hash,
            command: self.command,
            state: EntryState::Sending,
            amount,
            provider_reference: None,
            outcome: None,
            refusal: None,
            operator_flag: None,
            actor: self.actor,
            created_at_unix: at,
            updated_at_unix: at,
        }
    }
}

impl Entry {
    /// Whether this is an entry as [`Ledger::begin`] makes it: `sending`, nothing recorded. Only
    /// then may [`Ledger::record_outcome_of_begun`] compare the stored entry against it.
    pub(crate) fn is_as_begun(&self) -> bool {
        self.state == EntryState::Sending
            && self.provider_reference.is_none()
            && self.outcome.is_none()
            && self.refusal.is_none()
            && self.operator_flag.is_none()
    }
}

/// What an operator decided about an entry ([`Ledger::settle`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settlement {
    /// `Succeeded` or `Failed`; any other is [`LedgerError::InvalidSettlement`].
    pub state: EntryState,
    /// The provider's reference for the transaction, when the operator found it.
    pub provider_reference: Option<String>,
    /// Why: what the operator saw (in the provider's back office, on a bank statement...).
    pub reason: String,
    /// Who decided: the API key's name, `cli`, or an embedder's name.
    pub actor: String,
}

impl Settlement {
    /// Refuses a settlement that cannot apply to any entry: a state that is not final, an empty
    /// reason or actor. Every backend calls it before touching the entry.
    pub fn check(&self, id: &str) -> Result<(), LedgerError> {
        let problem = if !self.state.is_final() {
            Some(format!(
                "the state must be succeeded or failed, not {}",
                self.state
            ))
        } else if self.reason.trim().is_empty() {
            Some("a reason is required: say what the operator saw".to_string())
        } else if self.actor.trim().is_empty() {
            Some("the settlement names no actor".to_string())
        } else if self
            .provider_reference
            .as_ref()
            .is_some_and(|reference| reference.trim().is_empty())
        {
            Some("provider_reference, when given, must not be empty".to_string())
        } else {
            None
        };
        match problem {
            Some(problem) => Err(LedgerError::InvalidSettlement {
                id: id.to_string(),
                problem,
            }),
            None => Ok(()),
        }
    }

    /// The history line of this settlement of an entry that was `before`.
    pub fn describe(&self, before: EntryState) -> String {
        let mut detail = format!(
            "settled {} by an operator ({}; was {before}): {}",
            self.state, self.actor, self.reason
        );
        if let Some(reference) = &self.provider_reference {
            detail.push_str(&format!("; provider reference {reference}"));
        }
        detail
    }

    /// What the settlement does to an entry (the backends then store it): the state, the
    /// provider's reference, no operator flag, and the stored outcome's status (a retry with the
    /// entry's idempotency key is answered from that outcome).
    pub fn apply(&self, entry: &mut Entry) {
        let status = match self.state {
            EntryState::Succeeded => OutcomeStatus::Succeeded,
            _ => OutcomeStatus::Failed,
        };
        entry.state = self.state;
        entry.operator_flag = None;
        if let Some(reference) = &self.provider_reference {
            entry.provider_reference = Some(reference.clone());
        }
        let outcome = entry.outcome.get_or_insert_with(|| Outcome::new(status));
        outcome.status = status;
        if status == OutcomeStatus::Succeeded {
            outcome.error = None;
        }
        if self.provider_reference.is_some() {
            outcome
                .provider_reference
                .clone_from(&entry.provider_reference);
        }
        if outcome.amount.is_none() {
            outcome.amount = entry.amount;
        }
    }
}

/// Where an entry stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryState {
    /// Written before sending; no result recorded yet. Left in this state by a crash.
    Sending,
    Succeeded,
    Pending,
    Failed,
    /// The provider may or may not have acted: reconciliation must find out.
    Unknown,
    /// Reconciliation could not settle it: a person must.
    NeedsOperator,
}

impl EntryState {
    pub const ALL: [EntryState; 6] = [
        Self::Sending,
        Self::Succeeded,
        Self::Pending,
        Self::Failed,
        Self::Unknown,
        Self::NeedsOperator,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sending => "sending",
            Self::Succeeded => "succeeded",
            Self::Pending => "pending",
            Self::Failed => "failed",
            Self::Unknown => "unknown",
            Self::NeedsOperator => "needs_operator",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == text)
    }

    /// Whether the provider's answer is settled: such a state never changes again on its own.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed)
    }

    /// Whether reconciliation should look at the entry.
    pub fn is_unresolved(self) -> bool {
        matches!(self, Self::Sending | Self::Pending | Self::Unknown)
    }

    /// Whether an operator may settle the entry by hand ([`Ledger::settle`]): not a final state
    /// (the provider's word), and not `sending` (perhaps in flight right now).
    pub fn is_settleable(self) -> bool {
        matches!(self, Self::NeedsOperator | Self::Unknown | Self::Pending)
    }
}

impl From<OutcomeStatus> for EntryState {
    fn from(status: OutcomeStatus) -> Self {
        match status {
            OutcomeStatus::Succeeded => Self::Succeeded,
            OutcomeStatus::Pending => Self::Pending,
            OutcomeStatus::Failed => Self::Failed,
            OutcomeStatus::Unknown => Self::Unknown,
        }
    }
}

impl fmt::Display for EntryState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One command as the ledger knows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The host-made reference.
    pub id: String,
    pub provider: String,
    pub account: String,
    pub operation: Operation,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    pub request_hash: String,
    pub command: Command,
    pub state: EntryState,
    /// The amount the command names (`command.amount()`), kept beside it for queries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<Money>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_reference: Option<String>,
    /// The dispatch's outcome, once one was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// Why the host refused the command before sending it, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<Refusal>,
    /// Why an operator must look at this entry, when one must. Set with state `NeedsOperator`,
    /// or on a final entry that a later outcome or event contradicted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator_flag: Option<String>,
    /// Who asked for the command ([`NewEntry::actor`]); absent for entries written before the
    /// ledger recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    pub created_at_unix: i64,
    pub updated_at_unix: i64,
}

/// The host's reason for not sending a command, in the terms of its API errors.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// The stable machine code (`account_paused`, `invalid_request`, ...).
    pub code: String,
    pub message: String,
}

/// One step in an entry's life.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEvent {
    pub at_unix: i64,
    /// The entry's state after this step.
    pub state: EntryState,
    pub detail: String,
    /// Who took this step when a person did (an operator's settlement: the API key's name,
    /// `cli`...); absent for the host's own steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
}

/// What [`Ledger::list`] returns; `None` filters match everything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListFilter {
    pub provider: Option<String>,
    pub account: Option<String>,
    pub state: Option<EntryState>,
    /// Only entries created at or after this time (Unix seconds).
    pub created_after_unix: Option<i64>,
    /// Only entries created before this time (Unix seconds).
    pub created_before_unix: Option<i64>,
    pub limit: usize,
    /// A cursor: only entries inserted before the entry with this id (the last of the previous
    /// page). An id the ledger does not hold is [`LedgerError::NotFound`].
    pub starting_after: Option<String>,
}

impl Default for ListFilter {
    /// Everything, newest first, one page of 100.
    fn default() -> Self {
        Self {
            provider: None,
            account: None,
            state: None,
            created_after_unix: None,
            created_before_unix: None,
            limit: 100,
            starting_after: None,
        }
    }
}

/// A webhook event as stored, with its place in the events feed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent {
    /// Increases with every stored event and is never reused.
    pub sequence: i64,
    pub provider: String,
    pub account: String,
    pub event: WebhookEvent,
    pub received_at_unix: i64,
}

/// Why a ledger operation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error("idempotency key `{key}` was already used with a different request")]
    KeyReused { key: String },
    #[error("no ledger entry has the reference `{id}`")]
    NotFound { id: String },
    /// A reference collided with an existing entry's: the host makes references from 128 random
    /// bits, so this is a bug, never a retry.
    #[error("a ledger entry with the reference `{id}` exists already")]
    DuplicateId { id: String },
    /// A new entry that contradicts itself (its operation is not its command's).
    #[error("ledger entry `{id}` cannot be written: {problem}")]
    InvalidEntry { id: String, problem: String },
    #[error("ledger entry `{id}` is `{state}`: {action} applies only to an entry still `sending`")]
    NotSending {
        id: String,
        state: EntryState,
        action: &'static str,
    },
    /// An operator's settlement of an entry whose state does not accept one
    /// ([`EntryState::is_settleable`]).
    #[error(
        "ledger entry `{id}` is `{state}`: only a needs_operator, unknown or pending entry can be settled by hand{}",
        if state.is_final() { " (a final state is the provider's word)" } else { " (it may be in flight: reconcile it first)" }
    )]
    NotSettleable { id: String, state: EntryState },
    /// A settlement that cannot be applied (a state that is not final, an empty reason).
    #[error("settlement of `{id}` refused: {problem}")]
    InvalidSettlement { id: String, problem: String },
    /// The store failed; the message says what was being done, where, and the store's words.
    #[error("ledger storage failed: {0}")]
    Storage(String),
    /// A stored row cannot be read back. `id` names the entry (or `event #<sequence>`).
    #[error("ledger record `{id}` is corrupt: {problem}")]
    Corrupt { id: String, problem: String },
}

/// Canonical hash of a request for idempotency comparison: sha256 hex over the provider, the
/// account and the command's canonical JSON.
///
/// The JSON is canonical in the strong sense: object keys are sorted at every depth (not merely
/// left in struct order), so the hash does not depend on field order in the Rust types, nor on
/// whether some crate in the build turned on serde_json's `preserve_order`, which would keep the
/// caller's key order inside `extra` values. Provider and account are length-prefixed into the
/// hash so that no two distinct triples can produce the same bytes.
pub fn request_hash(provider: &str, account: &str, command: &Command) -> String {
    let mut hasher = Sha256::new();
    for part in [provider, account] {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    let written = serde_json::to_value(command)
        .map_err(std::io::Error::other)
        .and_then(|value| write_canonical_json(&value, &mut HashWriter(&mut hasher)));
    if written.is_err() {
        // A `Command` is plain data with string keys and cannot fail to serialize; should it
        // ever, its Debug form still tells different commands apart (more strictly than needed,
        // which errs on the side of refusing a reused key).
        hasher.update(format!("{command:?}").as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// Writes `value` as compact JSON with every object's keys in sorted order: the bytes a stored
/// hash was made of, whatever order `serde_json`'s maps keep (a dependency enabling its
/// `preserve_order` feature would change it). Written straight into the hasher: no sorted copy
/// of the tree and no string of it (they were most of a charge's hashing).
fn write_canonical_json(
    value: &serde_json::Value,
    out: &mut impl std::io::Write,
) -> std::io::Result<()> {
    match value {
        serde_json::Value::Object(members) => {
            let mut sorted: Vec<(&String, &serde_json::Value)> = members.iter().collect();
            sorted.sort_by(|left, right| left.0.cmp(right.0));
            out.write_all(b"{")?;
            for (index, (key, member)) in sorted.into_iter().enumerate() {
                if index > 0 {
                    out.write_all(b",")?;
                }
                serde_json::to_writer(&mut *out, key)?;
                out.write_all(b":")?;
                write_canonical_json(member, out)?;
            }
            out.write_all(b"}")
        }
        serde_json::Value::Array(items) => {
            out.write_all(b"[")?;
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.write_all(b",")?;
                }
                write_canonical_json(item, out)?;
            }
            out.write_all(b"]")
        }
        leaf => Ok(serde_json::to_writer(out, leaf)?),
    }
}

/// Feeds what is written to a hasher.
struct HashWriter<'a>(&'a mut Sha256);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.update(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What a newly reported status does to an entry in `current` state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transition {
    Move(EntryState),
    /// Nothing new: the entry keeps its state; the report goes to history.
    Stay,
    /// The report says the other final state: history, and an operator flag.
    Contradiction,
}

fn transition(current: EntryState, reported: OutcomeStatus) -> Transition {
    let reported_state = EntryState::from(reported);
    match current {
        // A provider that accepted the command (pending) does not forget it because a later
        // status read failed (unknown): pending is the better knowledge.
        EntryState::Pending if reported == OutcomeStatus::Unknown => Transition::Stay,
        EntryState::Sending | EntryState::Pending | EntryState::Unknown => {
            Transition::Move(reported_state)
        }
        // A person was asked to look; a final answer settles it, anything else changes nothing.
        EntryState::NeedsOperator if reported.is_final() => Transition::Move(reported_state),
        EntryState::NeedsOperator => Transition::Stay,
        EntryState::Succeeded | EntryState::Failed => {
            if reported.is_final() && reported_state != current {
                Transition::Contradiction
            } else {
                Transition::Stay
            }
        }
    }
}

/// Whether an event of `event_type` reports on a transaction of `operation`'s kind. Types the
/// host does not know (providers' own) are taken to concern whatever entry they name.
fn event_concerns(event_type: &str, operation: Operation) -> bool {
    match event_type {
        "payment" => matches!(operation, Operation::Charge | Operation::PaymentPage),
        "refund" | "partial_refund" => operation == Operation::Refund,
        _ => true,
    }
}

/// A one-line description of an outcome for history.
fn describe_outcome(outcome: &Outcome) -> String {
    let mut detail = format!("outcome {}", outcome.status.as_str());
    if let Some(reference) = &outcome.provider_reference {
        detail.push_str(&format!(", provider reference {reference}"));
    }
    if let Some(error) = &outcome.error {
        detail.push_str(&format!(", {error}"));
    }
    detail
}

fn describe_event(event: &WebhookEvent) -> String {
    let mut detail = format!(
        "{} event {} reports {}",
        event.event_type,
        event.event_id,
        event.status.as_str()
    );
    if let Some(amount) = &event.amount {
        detail.push_str(&format!(" for {amount}"));
    }
    detail
}

#[cfg(test)]
mod tests;
