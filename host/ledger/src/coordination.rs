//! What several hosts sharing one database agree on about each account, besides the ledger: the
//! pause after an authentication failure or a lockout answer, whether the current credentials
//! have been proven, who holds the credentials probe, and how many hosts are alive (which sets
//! each host's share of an account's rate limit and concurrency).
//!
//! Only a shared backend implements [`AccountCoordination`] (PostgreSQL). A host on the SQLite
//! ledger is alone by construction (one process owns the file), so its gateway keeps all of this
//! in process memory and has no coordination at all: nothing here sits on its request path.
//!
//! Every account row is keyed by provider, account *and* credentials fingerprint: a credential
//! change is a new row, which lifts the pause and makes the new credentials unproven everywhere
//! at once, without any host having to clear anything.

use crate::LedgerError;

/// One account under one set of credentials.
#[derive(Debug, Clone, Copy)]
pub struct AccountKey<'a> {
    pub provider: &'a str,
    pub account: &'a str,
    /// The gateway's fingerprint of the account's policy and credentials (a SHA-256).
    pub fingerprint: &'a str,
}

/// A pause in force, as the database tells it (its clock, so hosts with skewed clocks agree).
#[derive(Debug, Clone, PartialEq)]
pub struct SharedPause {
    pub reason: String,
    pub until_unix: u64,
    /// How long it still lasts, measured on the database's clock.
    pub remaining_ms: u64,
}

/// The answer to [`AccountCoordination::claim_probe`].
#[derive(Debug, Clone, PartialEq)]
pub enum ProbeClaim {
    /// These credentials were proven (by any host): flows need no probe.
    Proven,
    /// The account is paused for these credentials: send nothing.
    Paused(SharedPause),
    /// This host holds the probe, and no pause is in force (read under the same row lock).
    Claimed,
    /// A live host holds the probe: wait and ask again.
    HeldElsewhere,
}

/// What a host reports about an account after a flow (see [`AccountCoordination::report`]).
#[derive(Debug, Clone, Default)]
pub struct AccountReport {
    /// Pause the account for this long with this reason.
    pub pause: Option<(String, std::time::Duration)>,
    /// The provider accepted the credentials.
    pub proven: bool,
    /// Give the probe up if this host holds it.
    pub release_probe: bool,
}

/// An account's shared state, for a host refreshing its own copy.
#[derive(Debug, Clone, PartialEq)]
pub struct SharedAccountState {
    pub provider: String,
    pub account: String,
    pub fingerprint: String,
    pub pause: Option<SharedPause>,
    pub proven: bool,
}

/// Everything a host refreshes from the database in one read.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetSnapshot {
    /// Hosts whose lease is fresh (this one included).
    pub live_hosts: u32,
    /// Accounts that are paused now or whose credentials were proven.
    pub accounts: Vec<SharedAccountState>,
}

/// Account protection shared by every host on one database. Blocking calls: the gateway makes
/// them on tokio's blocking pool.
pub trait AccountCoordination: Send + Sync {
    /// Claims the credentials probe of `key` for this host, unless the credentials are proven
    /// or the account is paused: the pause is read after the claim's row lock is taken, so a
    /// pause the previous holder set is always seen before this host sends.
    fn claim_probe(&self, key: &AccountKey<'_>) -> Result<ProbeClaim, LedgerError>;

    /// Records what a flow learnt, in one transaction: a pause, the proof, the probe given up.
    /// A pause is durable before the probe is free, so the next holder sees it.
    fn report(&self, key: &AccountKey<'_>, report: &AccountReport) -> Result<(), LedgerError>;

    /// Lifts the account's pause (an operator's decision), whatever its credentials. Returns
    /// whether a pause was in force.
    fn lift_pause(&self, provider: &str, account: &str) -> Result<bool, LedgerError>;

    /// The live hosts and every account paused or proven.
    fn snapshot(&self) -> Result<FleetSnapshot, LedgerError>;
}
