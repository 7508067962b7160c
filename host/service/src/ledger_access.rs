//! The ledger as the service reaches it: every call, reads included, on tokio's blocking pool.
//!
//! A ledger write waits for its commit's fsync (the SQLite ledger's group commit), and a read can
//! commit an open write batch, so any call may block for milliseconds. [`AsyncLedger`] is the
//! only handle the service holds, so no service code can call the blocking ledger on an async
//! worker by mistake.

use std::sync::Arc;
use std::time::Duration;

use gatehouse_core::config::Config;
use gatehouse_ledger::{
    AccountCoordination, Entry, EntryState, HistoryEvent, Ledger, LedgerError, ListFilter,
    PostgresLedger, PostgresOptions, SqliteLedger, StoredEvent,
};

/// Opens the ledger `config` names: the PostgreSQL database of `[ledger] url` when there is one
/// (several hosts may share it), the SQLite file `host.ledger` otherwise. Blocking: call it off
/// the async workers.
pub fn open_ledger(config: &Config) -> Result<Arc<dyn Ledger>, LedgerError> {
    open_ledger_and_coordination(config).map(|(ledger, _)| ledger)
}

/// A ledger, and on a shared ledger the coordination its hosts share account protection and
/// limits through (`None` for SQLite: one process owns the file).
pub type LedgerAndCoordination = (Arc<dyn Ledger>, Option<Arc<dyn AccountCoordination>>);

/// [`open_ledger`], with the coordination of a shared ledger.
pub fn open_ledger_and_coordination(config: &Config) -> Result<LedgerAndCoordination, LedgerError> {
    let settings = &config.ledger;
    let Some(url) = &settings.url else {
        return Ok((Arc::new(SqliteLedger::open(&config.host.ledger)?), None));
    };
    let mut options = PostgresOptions::new(url.clone());
    options.password = settings
        .password
        .as_ref()
        .map(|password| password.resolve())
        .transpose()
        .map_err(|message| LedgerError::Storage(format!("ledger.password: {message}")))?
        .map(|resolved| resolved.value);
    options.max_connections = settings.max_connections;
    options.connect_timeout = Duration::from_millis(settings.connect_timeout_ms);
    options.lease = Duration::from_millis(settings.lease_ms);
    options.ca_file = settings.ca_file.clone();
    // This process's name in the ledger's lease table: a fresh one per start.
    options.instance_id = uuid::Uuid::new_v4().to_string();
    let ledger = Arc::new(PostgresLedger::connect(&options)?);
    Ok((ledger.clone(), Some(ledger)))
}

/// Where the ledger `config` names lives, for messages (never a password: the URL holds none).
pub fn ledger_location(config: &Config) -> String {
    match &config.ledger.url {
        Some(url) => url.clone(),
        None => config.host.ledger.display().to_string(),
    }
}

/// A ledger whose every call runs off the async workers.
#[derive(Clone)]
pub struct AsyncLedger {
    ledger: Arc<dyn Ledger>,
}

impl AsyncLedger {
    pub fn new(ledger: Arc<dyn Ledger>) -> Self {
        Self { ledger }
    }

    /// Runs `call` with the ledger on the blocking pool and waits for it without holding a
    /// worker. A call that panics is a storage failure of that one call.
    pub async fn call<T: Send + 'static>(
        &self,
        call: impl FnOnce(&dyn Ledger) -> Result<T, LedgerError> + Send + 'static,
    ) -> Result<T, LedgerError> {
        let ledger = Arc::clone(&self.ledger);
        // The blocking call's log lines stay in the caller's span (an API request's id).
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || span.in_scope(|| call(ledger.as_ref())))
            .await
            .unwrap_or_else(|error| {
                Err(LedgerError::Storage(format!(
                    "the ledger call ended abnormally: {error}"
                )))
            })
    }

    pub async fn get(&self, id: &str) -> Result<Option<Entry>, LedgerError> {
        let id = id.to_string();
        self.call(move |ledger| ledger.get(&id)).await
    }

    /// An entry and its history, read in one blocking call.
    pub async fn entry_with_history(
        &self,
        id: &str,
    ) -> Result<Option<(Entry, Vec<HistoryEvent>)>, LedgerError> {
        let id = id.to_string();
        self.call(move |ledger| {
            let Some(entry) = ledger.get(&id)? else {
                return Ok(None);
            };
            Ok(Some((entry, ledger.history(&id)?)))
        })
        .await
    }

    pub async fn find_by_key(
        &self,
        provider: &str,
        account: &str,
        idempotency_key: &str,
    ) -> Result<Option<Entry>, LedgerError> {
        let (provider, account, key) = (
            provider.to_string(),
            account.to_string(),
            idempotency_key.to_string(),
        );
        self.call(move |ledger| ledger.find_by_key(&provider, &account, &key))
            .await
    }

    pub async fn list(&self, filter: ListFilter) -> Result<Vec<Entry>, LedgerError> {
        self.call(move |ledger| ledger.list(&filter)).await
    }

    pub async fn count_by_state(&self) -> Result<Vec<(EntryState, u64)>, LedgerError> {
        self.call(|ledger| ledger.count_by_state()).await
    }

    pub async fn events(&self, after: i64, limit: usize) -> Result<Vec<StoredEvent>, LedgerError> {
        self.call(move |ledger| ledger.events(after, limit)).await
    }
}
