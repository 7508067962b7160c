//! The ledger as the service reaches it: every call, reads included, off the async workers (on
//! tokio's blocking pool, or for the hot writes of a SQLite ledger on its writer thread).
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
    /// The writer thread of a ledger that batches on one thread (SQLite); `None` otherwise.
    writer: Option<Writer>,
}

/// A job for the writer thread: the ledger call, then what hands its result over once the
/// batch it is in is durable (given the commit's error, if any).
type WriteJob = Box<dyn FnOnce(&dyn Ledger) -> Delivery + Send>;
type Delivery = Box<dyn FnOnce(Result<(), String>) + Send>;

/// Most jobs one pass of the writer thread takes: bounds a batch's wait for its fsync.
const MAX_JOBS_PER_BATCH: usize = 64;

/// One thread that makes the service's hot writes (an entry begun, an outcome or a refusal
/// recorded) for a ledger that takes one write at a time: it takes every job queued, makes them
/// as one batch (`Ledger::write_together`: one transaction, one fsync) and hands each result
/// over after the commit. A write costs the caller a message and a wake, not a blocking-pool
/// thread that then queues on the ledger's lock and its commit's condition variable
/// (`gatehouse-bench server-cpu`: 11.4 voluntary context switches per charge before, 3.6 after,
/// the reference service 1.8). The thread ends when the last handle is dropped.
#[derive(Clone)]
struct Writer {
    jobs: std::sync::mpsc::Sender<WriteJob>,
}

impl Writer {
    fn start(ledger: Arc<dyn Ledger>) -> std::io::Result<Self> {
        let (sender, receiver) = std::sync::mpsc::channel::<WriteJob>();
        std::thread::Builder::new()
            .name("ledger-writer".into())
            .spawn(move || {
                while let Ok(first) = receiver.recv() {
                    let mut jobs = vec![first];
                    while jobs.len() < MAX_JOBS_PER_BATCH {
                        match receiver.try_recv() {
                            Ok(job) => jobs.push(job),
                            Err(_) => break,
                        }
                    }
                    let mut deliveries = Vec::with_capacity(jobs.len());
                    let committed = ledger.write_together(&mut || {
                        for job in jobs.drain(..) {
                            // A job that panics drops its sender: its caller gets an error,
                            // the others their results.
                            let run =
                                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                    job(ledger.as_ref())
                                }));
                            if let Ok(delivery) = run {
                                deliveries.push(delivery);
                            }
                        }
                    });
                    let committed = committed.map_err(|error| error.to_string());
                    for delivery in deliveries {
                        delivery(committed.clone());
                    }
                }
            })?;
        Ok(Self { jobs: sender })
    }

    /// Queues `job`; gives it back when the thread is gone.
    fn send(&self, job: WriteJob) -> Result<(), WriteJob> {
        self.jobs.send(job).map_err(|returned| returned.0)
    }
}

impl AsyncLedger {
    pub fn new(ledger: Arc<dyn Ledger>) -> Self {
        let writer = if ledger.batches_on_one_thread() {
            Writer::start(Arc::clone(&ledger))
                .inspect_err(|error| {
                    tracing::warn!(%error, "no ledger writer thread; writes go through the blocking pool")
                })
                .ok()
        } else {
            None
        };
        Self { ledger, writer }
    }

    /// A write on the hot path (an entry begun, an outcome or a refusal recorded): on the writer
    /// thread of a ledger that batches on one thread, else as [`AsyncLedger::call`]. The result
    /// comes once the write is durable; `call` must not wait for another ledger call.
    pub async fn write<T: Send + 'static>(
        &self,
        call: impl FnOnce(&dyn Ledger) -> Result<T, LedgerError> + Send + 'static,
    ) -> Result<T, LedgerError> {
        let Some(writer) = &self.writer else {
            return self.call(call).await;
        };
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let span = tracing::Span::current();
        let job: WriteJob = Box::new(move |ledger| {
            let result = span.in_scope(|| call(ledger));
            Box::new(move |committed| {
                let result = match committed {
                    Ok(()) => result,
                    // The write's own error says more; a write that succeeded is not durable.
                    Err(error) => result.and(Err(LedgerError::Storage(error))),
                };
                let _ = sender.send(result);
            })
        });
        if let Err(job) = writer.send(job) {
            // The thread is gone (it cannot end while a handle lives, short of a bug): the
            // write still happens, on the blocking pool, committing as any other write does.
            tracing::error!("the ledger writer thread has stopped; writing on the blocking pool");
            let ledger = Arc::clone(&self.ledger);
            drop(tokio::task::spawn_blocking(move || {
                let delivery = job(ledger.as_ref());
                delivery(Ok(()));
            }));
        }
        receiver.await.unwrap_or_else(|_| {
            Err(LedgerError::Storage(
                "the ledger call ended abnormally (it panicked)".into(),
            ))
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_ledger::{Begin, NewEntry, request_hash};
    use gatehouse_plugin_api::Command;

    fn new_entry(id: &str) -> NewEntry {
        let command: Command = serde_json::from_value(serde_json::json!({
            "operation": "charge",
            "amount": {"minor_units": 1500, "currency": "XOF"},
            "payment_method": "FLOOZ"
        }))
        .expect("a charge");
        NewEntry {
            id: id.into(),
            provider: "paygateglobal".into(),
            account: "main".into(),
            operation: command.operation(),
            idempotency_key: Some(format!("key-{id}")),
            request_hash: request_hash("paygateglobal", "main", &command),
            command,
            actor: Some("test".into()),
        }
    }

    fn thread_names() -> Vec<String> {
        std::fs::read_dir("/proc/self/task")
            .map(|tasks| {
                tasks
                    .flatten()
                    .filter_map(|task| std::fs::read_to_string(task.path().join("comm")).ok())
                    .map(|name| name.trim().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_on_a_sqlite_ledger_go_through_its_writer_and_are_durable_when_answered()
     {
        let folder = tempfile::tempdir().expect("temporary folder");
        let path = folder.path().join("ledger.sqlite");
        let ledger = AsyncLedger::new(Arc::new(SqliteLedger::open(&path).expect("ledger")));
        assert!(ledger.writer.is_some(), "SQLite batches on one thread");
        assert!(
            thread_names().iter().any(|name| name == "ledger-writer"),
            "{:?}",
            thread_names()
        );
        // A second connection to the file sees only what is committed.
        let observer = Arc::new(SqliteLedger::open(&path).expect("a second connection"));
        let mut writes = Vec::new();
        for index in 0..40 {
            let (ledger, observer) = (ledger.clone(), Arc::clone(&observer));
            writes.push(tokio::spawn(async move {
                let id = format!("gh_writer_{index:02}");
                let begun = ledger
                    .write(move |ledger| ledger.begin(new_entry(&id)))
                    .await
                    .expect("begun");
                let Begin::Created(entry) = begun else {
                    panic!("a new key makes a new entry");
                };
                let seen = tokio::task::spawn_blocking(move || observer.get(&entry.id))
                    .await
                    .expect("no panic")
                    .expect("read");
                assert!(
                    seen.is_some(),
                    "an entry was answered before it was committed"
                );
            }));
        }
        for write in writes {
            write.await.expect("no panic");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_that_panics_is_an_error_for_its_caller_and_the_writer_goes_on() {
        let ledger = AsyncLedger::new(Arc::new(SqliteLedger::open_in_memory().expect("ledger")));
        let panicked = ledger
            .write(|_| -> Result<(), LedgerError> { panic!("a bug in a write") })
            .await;
        assert!(
            matches!(&panicked, Err(LedgerError::Storage(message)) if message.contains("abnormally")),
            "{panicked:?}"
        );
        let begun = ledger
            .write(|ledger| ledger.begin(new_entry("gh_after_the_panic")))
            .await
            .expect("the writer still writes");
        assert!(matches!(begun, Begin::Created(_)));
        assert!(
            ledger
                .get("gh_after_the_panic")
                .await
                .expect("get")
                .is_some()
        );
    }
}
